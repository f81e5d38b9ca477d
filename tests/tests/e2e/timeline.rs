//! Timelines against the real server: the diffs a listener receives, applied in order, give
//! exactly the messages the store holds, through sends, edits, deletes, other users' messages,
//! confirmations and a reconnect; pagination reaches the start of the room.

use std::sync::{Arc, Mutex};

use roam_core::{apply_diffs, Client, Message, RoomKind, TimelineDiff, TimelineListener};
use roam_tests::{all_local, fast_config, open_client, wait_until, Backend};
use serde_json::json;

/// Applies every diff it receives to its own list, as an app's view model would.
#[derive(Default)]
struct Replica {
    list: Mutex<Vec<Message>>,
    resets: Mutex<usize>,
    diffs: Mutex<usize>,
}

impl Replica {
    fn list(&self) -> Vec<Message> {
        self.list.lock().expect("lock").clone()
    }
}

impl TimelineListener for Replica {
    fn on_diffs(&self, diffs: Vec<TimelineDiff>) {
        *self.diffs.lock().expect("lock") += diffs.len();
        for d in &diffs {
            if matches!(d, TimelineDiff::Reset { .. }) {
                *self.resets.lock().expect("lock") += 1;
            }
        }
        apply_diffs(&mut self.list.lock().expect("lock"), diffs);
    }
}

fn drained(c: &Client) -> bool {
    c.metrics().outbox_depth == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diffs_reproduce_the_store_after_500_mixed_changes_and_a_reconnect() {
    let backend = Backend::up().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open_client(
        fast_config(&dir.path().join("a.db"), &backend.url(), "alice"),
        backend.token("alice"),
    );
    a.start().await.expect("start");
    a.create_room("tl".into(), RoomKind::Public, "Timeline".into(), None)
        .expect("create");
    wait_until("the room exists", || drained(&a)).await;
    let bob = backend.api("bob");
    bob.join("tl").await;

    let replica = Arc::new(Replica::default());
    let timeline = a
        .timeline("tl".into(), 50, replica.clone())
        .expect("timeline");
    wait_until("the first window", || {
        *replica.resets.lock().expect("lock") == 1
    })
    .await;

    let mut mine: Vec<String> = Vec::new();
    let mut deleted: Vec<String> = Vec::new();
    let mut theirs = 0;
    for i in 0..500usize {
        match i % 6 {
            0..=2 => {
                let m = a
                    .send_message("tl".into(), format!("mine {i}"))
                    .expect("send");
                mine.push(m.local_id);
            }
            3 => {
                // Edit a message chosen by `i`, often one still pending.
                let live: Vec<&String> = mine.iter().filter(|id| !deleted.contains(id)).collect();
                if let Some(id) = live.get((i * 7) % live.len().max(1)) {
                    a.edit_message("tl".into(), (*id).clone(), format!("edited {i}"))
                        .expect("edit");
                }
            }
            4 => {
                let live: Vec<String> = mine
                    .iter()
                    .filter(|id| !deleted.contains(id))
                    .cloned()
                    .collect();
                if let Some(id) = live.get((i * 11) % live.len().max(1)) {
                    a.delete_message("tl".into(), id.clone()).expect("delete");
                    deleted.push(id.clone());
                }
            }
            _ => {
                let (s, body) = bob
                    .post(
                        "/v1/rooms/tl/messages",
                        json!({"body": format!("theirs {i}")}),
                    )
                    .await;
                assert_eq!(s, 200, "bob's message: {body}");
                theirs += 1;
            }
        }
        if i == 250 {
            // A reconnect in the middle: whatever was in flight is sent again.
            a.set_online(false);
            wait_until("offline", || {
                a.connection_state() == roam_core::ConnectionState::Offline
            })
            .await;
            a.set_online(true);
        }
    }
    wait_until("everything sent", || drained(&a)).await;
    // A delete of a message not sent yet removes it without a trace, so the server holds at
    // most every send; it holds every one of bob's.
    let server_total = bob.all_messages("tl").await.len();
    assert!(server_total <= mine.len() + theirs && server_total >= theirs);
    wait_until("every message is stored locally", || {
        all_local(&a, "tl")
            .iter()
            .filter(|m| m.seq.is_some())
            .count()
            == server_total
    })
    .await;
    wait_until("the replica matches the store", || {
        replica.list() == all_local(&a, "tl")
    })
    .await;
    let list = replica.list();
    assert_eq!(list.len(), server_total);
    assert!(list.iter().any(|m| m.deleted), "deletes are in the window");
    assert!(
        list.iter().any(|m| m.body.starts_with("edited")),
        "edits are in the window"
    );
    assert!(
        list.windows(2).all(|w| w[0].seq < w[1].seq),
        "confirmed messages are in seq order"
    );
    assert_eq!(
        *replica.resets.lock().expect("lock"),
        1,
        "one reset, then diffs only"
    );
    assert!(*replica.diffs.lock().expect("lock") > server_total);
    assert_eq!(timeline.items(), list);
    timeline.close();
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_goes_back_to_the_start_of_the_room() {
    // The room's history is longer than the server replays, so joining it resets the room: the
    // store then holds only the newest page (a full replay could land before the first read).
    let mut backend = Backend::down_with(|c| c.max_recovery_events = 40);
    backend.start().await;
    let owner = backend.api("alice");
    owner.create_room("old", "public").await;
    let bodies: Vec<String> = (0..130).map(|i| format!("m{i}")).collect();
    let (s, body) = owner
        .post("/v1/rooms/old/messages/import", json!({ "bodies": bodies }))
        .await;
    assert_eq!(s, 200, "import: {body}");

    let dir = tempfile::tempdir().expect("tempdir");
    let b = open_client(
        fast_config(&dir.path().join("b.db"), &backend.url(), "bob"),
        backend.token("bob"),
    );
    b.start().await.expect("start");
    b.join_room("old".into()).expect("join");
    wait_until(
        "joined, and the newest page reloaded after the reset",
        || drained(&b) && b.metrics().resets == 1 && !all_local(&b, "old").is_empty(),
    )
    .await;
    // One older page from the server: the store still lacks the oldest ones.
    let older = b
        .load_older_messages("old".into(), 30)
        .await
        .expect("an older page");
    assert!(!older.is_empty());

    let replica = Arc::new(Replica::default());
    let timeline = b
        .timeline("old".into(), 20, replica.clone())
        .expect("timeline");
    wait_until("the first window", || !replica.list().is_empty()).await;

    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages < 40, "pagination never reached the start");
        let before = replica.list().len();
        let reached = timeline.paginate_backwards(25).await.expect("paginate");
        if reached {
            break;
        }
        assert!(
            replica.list().len() > before,
            "a page that does not reach the start adds messages before it returns"
        );
    }
    wait_until("the whole room is in the window", || {
        replica
            .list()
            .iter()
            .filter(|m| m.body.starts_with('m'))
            .count()
            == 130
    })
    .await;
    let list = replica.list();
    assert_eq!(list.first().map(|m| m.body.as_str()), Some("m0"));
    assert_eq!(list, all_local(&b, "old"));
    assert!(
        timeline.paginate_backwards(25).await.expect("again"),
        "the start stays reached"
    );
    assert!(timeline.paginate_backwards(0).await.is_err());
    timeline.close();
    b.shutdown().await;
}
