//! Room lists against the real server: the diffs a listener receives, applied in order, give
//! exactly the summaries the store holds, newest activity first, through messages from both
//! sides, edits, deletes, mentions, joins and leaves; and two devices of one account show the
//! same unread and mention counts after `mark_room_read` on one of them, online or after an
//! outage.

use std::sync::{Arc, Mutex};

use roam_core::{
    apply_room_list_diffs, Client, RoomKind, RoomListDiff, RoomListListener, RoomSummary,
};
use roam_tests::{all_local, fast_config, open_client, wait_until, Api, Backend};
use serde_json::json;

/// Applies every diff it receives to its own list, as an app's view model would.
#[derive(Default)]
struct Replica {
    list: Mutex<Vec<RoomSummary>>,
    resets: Mutex<usize>,
}

impl Replica {
    fn list(&self) -> Vec<RoomSummary> {
        self.list.lock().expect("lock").clone()
    }

    fn names(&self) -> Vec<String> {
        self.list().into_iter().map(|s| s.room.name).collect()
    }
}

impl RoomListListener for Replica {
    fn on_diffs(&self, diffs: Vec<RoomListDiff>) {
        for d in &diffs {
            if matches!(d, RoomListDiff::Reset { .. }) {
                *self.resets.lock().expect("lock") += 1;
            }
        }
        apply_room_list_diffs(&mut self.list.lock().expect("lock"), diffs);
    }
}

fn drained(c: &Client) -> bool {
    c.metrics().outbox_depth == 0
}

/// The summaries of every room the client is a member of, as the list must show them.
fn expected(c: &Client) -> Vec<RoomSummary> {
    let mut out: Vec<RoomSummary> = c
        .rooms()
        .expect("rooms")
        .into_iter()
        .filter_map(|r| c.room_summary(r.name).expect("summary"))
        .collect();
    out.sort_by(|a, b| {
        b.latest_activity
            .cmp(&a.latest_activity)
            .then_with(|| a.room.name.cmp(&b.room.name))
    });
    out
}

async fn say(api: &Api, room: &str, body: &str) -> u64 {
    let (s, m) = api
        .post(
            &format!("/v1/rooms/{room}/messages"),
            json!({ "body": body }),
        )
        .await;
    assert_eq!(s, 200, "send: {m}");
    m["seq"].as_u64().expect("seq")
}

fn device(backend: &Backend, dir: &tempfile::TempDir, name: &str, user: &str) -> Client {
    open_client(
        fast_config(&dir.path().join(format!("{name}.db")), &backend.url(), user),
        backend.token(user),
    )
}

/// The counts of one room on one device.
fn counts(c: &Client, room: &str) -> (u64, u64, u64) {
    let s = c
        .room_summary(room.into())
        .expect("summary")
        .expect("a member");
    (s.unread_count, s.mention_count, s.read_seq)
}

/// Seqs of the confirmed messages a client holds for a room.
fn held(c: &Client, room: &str) -> usize {
    all_local(c, room)
        .iter()
        .filter(|m| m.seq.is_some())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diffs_reproduce_the_summaries_newest_activity_first() {
    let backend = Backend::up().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = device(&backend, &dir, "a", "alice");
    a.start().await.expect("start");
    for room in ["north", "south", "west"] {
        a.create_room(room.into(), RoomKind::Public, room.into(), None)
            .expect("create");
    }
    wait_until("the rooms exist", || drained(&a)).await;
    let bob = backend.api("bob");
    for room in ["north", "south", "west", "east"] {
        if room == "east" {
            bob.create_room(room, "public").await;
        } else {
            bob.join(room).await;
        }
    }
    // Bob's joins are events in alice's rooms; the list opens once they
    // have arrived, so its first snapshot is the settled one.
    wait_until("bob's joins arrived", || {
        ["north", "south", "west"].iter().all(|r| {
            a.room_summary((*r).into())
                .ok()
                .flatten()
                .is_some_and(|s| s.room.head_seq >= 3)
        })
    })
    .await;

    let replica = Arc::new(Replica::default());
    let list = a.room_list(replica.clone());
    wait_until("the first list", || {
        *replica.resets.lock().expect("lock") == 1
    })
    .await;
    assert_eq!(replica.list(), expected(&a));
    assert_eq!(replica.list().len(), 3, "east is not alice's");

    // Mixed traffic; each step changes which room is the newest.
    let mut sent = Vec::new();
    for i in 0..60usize {
        let room = ["north", "south", "west"][i % 3];
        match i % 5 {
            0 | 1 => {
                say(&bob, room, &format!("bob {i}")).await;
            }
            2 => {
                say(&bob, room, &format!("@alice look {i}")).await;
            }
            3 => {
                let m = a
                    .send_message(room.into(), format!("alice {i}"))
                    .expect("send");
                sent.push((room, m.local_id));
            }
            _ => {
                if let Some((r, id)) = sent.get(i % sent.len().max(1)).cloned() {
                    if i % 2 == 0 {
                        a.edit_message(r.into(), id, format!("edited {i}"))
                            .expect("edit");
                    } else {
                        a.delete_message(r.into(), id).expect("delete");
                    }
                }
            }
        }
    }
    // The newest message is bob's last one, in this room.
    say(&bob, "south", "last word").await;
    wait_until("everything sent", || drained(&a)).await;
    wait_until("the last word arrived", || {
        a.room_summary("south".into())
            .ok()
            .flatten()
            .and_then(|s| s.last_message)
            .is_some_and(|m| m.body == "last word")
    })
    .await;
    wait_until("the replica matches the store", || {
        replica.list() == expected(&a)
    })
    .await;
    let now = replica.list();
    assert_eq!(now[0].room.name, "south", "newest activity first");
    for s in &now {
        assert!(s.unread_count > 0 && s.mention_count > 0, "{s:?}");
        assert!(s.mention_count < s.unread_count);
    }
    assert_eq!(*replica.resets.lock().expect("lock"), 1, "then diffs only");

    // Reading a room clears its counts; leaving it takes it off the list.
    a.mark_room_read("south".into(), None).expect("mark");
    let (unread, mentions, _) = counts(&a, "south");
    assert_eq!((unread, mentions), (0, 0), "at once, locally");
    a.leave_room("west".into()).expect("leave");
    wait_until("west is gone and south is read", || {
        replica.names().len() == 2
            && replica
                .list()
                .iter()
                .any(|s| s.room.name == "south" && s.unread_count == 0)
    })
    .await;
    // The server's answers to the leave and the read marker may still be on their way: wait for
    // them to reach the replica rather than sample it.
    wait_until("the replica matches the store again", || {
        let now = replica.list();
        now == expected(&a) && list.items() == now
    })
    .await;
    list.close();
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_show_the_same_counts_after_mark_read_on_one() {
    let backend = Backend::up().await;
    let owner = backend.api("bob");
    owner.create_room("team", "public").await;
    backend.api("alice").join("team").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = device(&backend, &dir, "phone", "alice");
    let tablet = device(&backend, &dir, "tablet", "alice");
    phone.start().await.expect("start");
    tablet.start().await.expect("start");
    // Alice joined elsewhere (over REST): both devices learn it when they connect.
    wait_until("both know the room", || {
        drained(&phone)
            && drained(&tablet)
            && phone.room_summary("team".into()).ok().flatten().is_some()
            && tablet.room_summary("team".into()).ok().flatten().is_some()
    })
    .await;

    let mut seqs = Vec::new();
    for (i, body) in ["one", "@alice two", "three", "four @alice!", "five", "six"]
        .iter()
        .enumerate()
    {
        seqs.push(say(&owner, "team", &format!("{body} ({i})")).await);
    }
    let both_hold = |n: usize| held(&phone, "team") >= n && held(&tablet, "team") >= n;
    wait_until("both hold every message", || both_hold(6)).await;
    assert_eq!(counts(&phone, "team"), (6, 2, 0));
    assert_eq!(counts(&tablet, "team"), (6, 2, 0));

    // Online: the phone reads up to "four"; the tablet follows through the server.
    let marker = phone
        .mark_room_read("team".into(), Some(seqs[3]))
        .expect("mark");
    assert_eq!(marker, seqs[3]);
    assert_eq!(counts(&phone, "team"), (2, 0, seqs[3]));
    wait_until("the tablet has the marker", || {
        counts(&tablet, "team").2 == seqs[3]
    })
    .await;
    assert_eq!(counts(&tablet, "team"), counts(&phone, "team"));
    // Behind the marker: nothing moves, nothing is queued.
    let depth = tablet.metrics().outbox_depth;
    assert_eq!(
        tablet
            .mark_room_read("team".into(), Some(seqs[1]))
            .expect("mark behind"),
        seqs[3]
    );
    assert_eq!(tablet.metrics().outbox_depth, depth);
    wait_until("the mentions are read on both", || {
        drained(&phone)
            && phone.unread_count().ok() == Some(0)
            && tablet.unread_count().ok() == Some(0)
    })
    .await;

    // The tablet is away while the phone reads everything and a new message comes.
    tablet.set_online(false);
    wait_until("the tablet is offline", || {
        tablet.connection_state() == roam_core::ConnectionState::Offline
    })
    .await;
    let seven = say(&owner, "team", "@alice seven").await;
    wait_until("the phone has seven", || held(&phone, "team") >= 7).await;
    assert_eq!(counts(&phone, "team"), (3, 1, seqs[3]));
    phone.mark_room_read("team".into(), None).expect("mark all");
    wait_until("the phone's marker is stored", || drained(&phone)).await;
    assert_eq!(counts(&phone, "team"), (0, 0, seven));
    tablet.set_online(true);
    wait_until("the tablet caught up, marker included", || {
        held(&tablet, "team") >= 7 && counts(&tablet, "team").2 == seven
    })
    .await;
    assert_eq!(counts(&tablet, "team"), counts(&phone, "team"));
    wait_until("the notification counts agree", || {
        phone.unread_count().ok() == Some(0) && tablet.unread_count().ok() == Some(0)
    })
    .await;

    // Bad marks are refused locally and change nothing.
    assert!(phone
        .mark_room_read("team".into(), Some(seven + 100))
        .is_err());
    assert!(phone.mark_room_read("nowhere".into(), None).is_err());
    assert_eq!(counts(&phone, "team"), (0, 0, seven));
    phone.shutdown().await;
    tablet.shutdown().await;
}

/// The account is live on every device: a room joined on the phone is listed and followed on
/// the tablet at once (not at its next reconnect), a message in it reaches the tablet, and a
/// room left on the phone leaves the tablet's list; a private room the user is banned from
/// takes its local data with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_joined_or_left_on_one_device_shows_on_the_other_at_once() {
    let backend = Backend::up().await;
    let owner = backend.api("bob");
    owner.create_room("club", "public").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = device(&backend, &dir, "phone", "alice");
    let tablet = device(&backend, &dir, "tablet", "alice");
    let replica = Arc::new(Replica::default());
    let _list = tablet.room_list(replica.clone());
    phone.start().await.expect("start");
    tablet.start().await.expect("start");
    wait_until("both connected", || {
        phone.sync_status().phase == roam_core::SyncPhase::Synced
            && tablet.sync_status().phase == roam_core::SyncPhase::Synced
    })
    .await;

    phone.join_room("club".into()).expect("join");
    wait_until("the tablet lists the room joined on the phone", || {
        replica.names().contains(&"club".to_owned())
            && tablet
                .room("club".into())
                .ok()
                .flatten()
                .is_some_and(|r| r.joined && r.kind == RoomKind::Public)
    })
    .await;
    let seq = say(&owner, "club", "welcome").await;
    wait_until("the tablet follows it", || {
        all_local(&tablet, "club")
            .iter()
            .any(|m| m.seq == Some(seq))
    })
    .await;

    phone.leave_room("club".into()).expect("leave");
    wait_until("the tablet no longer lists it", || {
        !replica.names().contains(&"club".to_owned())
            && tablet
                .room("club".into())
                .ok()
                .flatten()
                .is_none_or(|r| !r.joined)
    })
    .await;

    // A private room: the ban (made while both devices are online) removes it everywhere.
    owner.create_room("vault", "private").await;
    let (s, inv) = owner
        .post(
            "/v1/rooms/vault/invitations",
            json!({"user": "alice", "role": "member"}),
        )
        .await;
    assert_eq!(s, 200, "{inv}");
    let id = inv["id"].as_str().expect("invitation id").to_owned();
    phone.accept_invitation(id).expect("accept");
    let secret = say(&owner, "vault", "the code is 1234").await;
    wait_until("the tablet holds the private room's message", || {
        all_local(&tablet, "vault")
            .iter()
            .any(|m| m.seq == Some(secret))
    })
    .await;
    let (s, b) = owner
        .post("/v1/rooms/vault/bans", json!({"user": "alice"}))
        .await;
    assert_eq!(s, 200, "{b}");
    wait_until(
        "the ban takes the room and its text from both devices",
        || {
            [&phone, &tablet].iter().all(|c| {
                c.room("vault".into()).ok().flatten().is_none() && all_local(c, "vault").is_empty()
            })
        },
    )
    .await;
    // The room list's listener hears it on the dispatcher's thread, a moment after the store.
    wait_until("the tablet's room list drops it", || {
        !replica.names().contains(&"vault".to_owned())
    })
    .await;
}
