//! Collaborative documents (protocol §12): sockets converge, a resync receives only what it
//! lacks, room roles apply, bad updates change nothing, replays are answered once, compaction
//! and restarts keep the content, awareness comes and goes, and followers who lose the room
//! stop receiving it. Two nodes are in `cluster.rs`; hostile input in `fuzz.rs`.

use roam_proto::collab::{decode_base64, encode_base64, MAX_COLLAB_UPDATE_BYTES};
use serde_json::{json, Value};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use crate::fixtures::{TestServer, Ws};

/// A client's copy of a document.
pub struct Replica {
    pub doc: Doc,
}

impl Replica {
    pub fn new(client: u64) -> Replica {
        Replica {
            doc: Doc::with_client_id(client),
        }
    }

    /// Types `text` at `at` and returns the update (base64).
    pub fn insert(&self, at: u32, text: &str) -> String {
        let t = self.doc.get_or_insert_text("body");
        let mut txn = self.doc.transact_mut();
        t.insert(&mut txn, at, text);
        encode_base64(&txn.encode_update_v1())
    }

    pub fn apply(&self, b64: &str) {
        let bytes = decode_base64("update", b64, usize::MAX / 2).expect("base64");
        let u = Update::decode_v1(&bytes).expect("decodes");
        self.doc.transact_mut().apply_update(u).expect("applies");
    }

    pub fn text(&self) -> String {
        let t = self.doc.get_or_insert_text("body");
        t.get_string(&self.doc.transact())
    }

    pub fn len(&self) -> u32 {
        self.text().chars().count() as u32
    }

    pub fn state_vector(&self) -> String {
        encode_base64(&self.doc.transact().state_vector().encode_v1())
    }
}

pub async fn sync(ws: &mut Ws, room: &str, doc: &str, sv: &str) -> Value {
    ws.call(json!({"type": "collab_sync", "room": room, "doc": doc, "state_vector": sv}))
        .await
}

pub async fn update(ws: &mut Ws, room: &str, doc: &str, update: &str) -> Value {
    ws.mutate(
        "collab.update",
        json!({"room": room, "doc": doc, "update": update}),
    )
    .await
}

/// The next `collab_update` frame of the document.
pub async fn next_update(ws: &mut Ws, doc: &str) -> Value {
    ws.until(|f| f["type"] == "collab_update" && f["doc"] == doc)
        .await
}

/// A fresh replica synced from the server: its text and the answer's seq.
async fn fetched(ws: &mut Ws, room: &str, doc: &str) -> (String, u64) {
    let r = Replica::new(999);
    let a = sync(ws, room, doc, "").await;
    assert_eq!(a["type"], "ack", "{a}");
    r.apply(a["result"]["update"].as_str().expect("update"));
    (r.text(), a["result"]["seq"].as_u64().expect("seq"))
}

async fn room_with_member(t: &TestServer, room: &str, kind: &str) {
    let o = t.as_user("alice");
    o.create_room(room, kind).await;
    t.as_user("bob").join_invited(&o, room, "member").await;
}

/// A private room "notes" of alice with bob as a member, and a socket of each following its
/// document "plan".
async fn two_followers(t: &TestServer) -> (Ws, Ws) {
    room_with_member(t, "notes", "private").await;
    let mut a = t.ws("alice").await;
    let mut b = t.ws("bob").await;
    sync(&mut a, "notes", "plan", "").await;
    sync(&mut b, "notes", "plan", "").await;
    (a, b)
}

/// Waits until at most `n` sockets follow a document (access is re-checked off the sockets'
/// tasks, so a ban or a deletion takes effect a moment later).
async fn followers_fall_to(t: &TestServer, n: f64, what: &str) {
    let deadline = tokio::time::Instant::now() + crate::fixtures::WAIT;
    while t.metric("roam_collab_followers", None).await > n {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_sockets_converge_and_each_sees_every_update_in_seq_order() {
    let t = TestServer::start().await;
    room_with_member(&t, "notes", "private").await;
    let (mut a, mut b) = (t.ws("alice").await, t.ws("bob").await);
    let (ra, rb) = (Replica::new(1), Replica::new(2));
    for (ws, r) in [(&mut a, &ra), (&mut b, &rb)] {
        let s = sync(ws, "notes", "plan", "").await;
        assert_eq!(s["result"]["seq"], 0, "{s}");
        r.apply(s["result"]["update"].as_str().expect("update"));
    }
    let ua = ra.insert(0, "hello ");
    let ub = rb.insert(0, "world");
    let done = update(&mut a, "notes", "plan", &ua).await;
    assert_eq!(done["result"]["seq"], 1, "{done}");
    assert!(done["result"]["size"].as_u64().expect("size") > 0);
    let done = update(&mut b, "notes", "plan", &ub).await;
    assert_eq!(done["result"]["seq"], 2, "{done}");
    for (ws, r) in [(&mut a, &ra), (&mut b, &rb)] {
        for want in 1..=2u64 {
            let f = next_update(ws, "plan").await;
            assert_eq!(f["seq"], want, "{f}");
            r.apply(f["update"].as_str().expect("update"));
        }
    }
    assert_eq!(ra.text(), rb.text());
    assert_eq!(ra.len(), 11);
    let (text, seq) = fetched(&mut a, "notes", "plan").await;
    assert_eq!((text, seq), (ra.text(), 2));
}

#[tokio::test]
async fn a_resync_with_a_state_vector_receives_only_what_it_lacks() {
    let t = TestServer::start().await;
    room_with_member(&t, "notes", "private").await;
    let mut a = t.ws("alice").await;
    let ra = Replica::new(1);
    sync(&mut a, "notes", "plan", "").await;
    let big = ra.insert(0, &"lorem ipsum ".repeat(2_000));
    update(&mut a, "notes", "plan", &big).await;
    // Bob had everything up to here, then went offline.
    let rb = Replica::new(2);
    rb.apply(&big);
    let small = ra.insert(5, "!");
    update(&mut a, "notes", "plan", &small).await;
    let mut b = t.ws("bob").await;
    let s = sync(&mut b, "notes", "plan", &rb.state_vector()).await;
    assert_eq!(s["result"]["seq"], 2, "{s}");
    let diff = decode_base64(
        "u",
        s["result"]["update"].as_str().expect("u"),
        usize::MAX / 2,
    )
    .expect("base64");
    assert!(
        diff.len() < 100,
        "the answer holds only the missing edit: {} bytes",
        diff.len()
    );
    rb.apply(s["result"]["update"].as_str().expect("u"));
    assert_eq!(rb.text(), ra.text());
    // The server's state vector lets the client send what the server lacks.
    let sv = decode_base64(
        "sv",
        s["result"]["state_vector"].as_str().expect("sv"),
        1 << 20,
    )
    .expect("base64");
    let sv = StateVector::decode_v1(&sv).expect("state vector");
    assert_eq!(sv, rb.doc.transact().state_vector());
}

#[tokio::test]
async fn guests_read_but_cannot_edit_and_a_private_rooms_outsiders_see_nothing() {
    let t = TestServer::start().await;
    let o = t.as_user("alice");
    o.create_room("notes", "private").await;
    t.as_user("gus").join_invited(&o, "notes", "guest").await;
    let mut a = t.ws("alice").await;
    let ra = Replica::new(1);
    sync(&mut a, "notes", "plan", "").await;
    update(&mut a, "notes", "plan", &ra.insert(0, "secret")).await;

    let mut g = t.ws("gus").await;
    let (text, _) = fetched(&mut g, "notes", "plan").await;
    assert_eq!(text, "secret", "a guest reads");
    let rg = Replica::new(3);
    let refused = update(&mut g, "notes", "plan", &rg.insert(0, "x")).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");

    let mut x = t.ws("xavier").await;
    let s = sync(&mut x, "notes", "plan", "").await;
    assert_eq!(s["code"], "not_found", "{s}");
    let refused = update(&mut x, "notes", "plan", &rg.insert(0, "y")).await;
    assert_eq!(refused["code"], "not_found", "{refused}");
    let (text, seq) = fetched(&mut a, "notes", "plan").await;
    assert_eq!((text.as_str(), seq), ("secret", 1));
}

#[tokio::test]
async fn malformed_oversize_pending_and_overfull_updates_are_refused_and_change_nothing() {
    let t = TestServer::start().await;
    room_with_member(&t, "notes", "private").await;
    let mut a = t.ws("alice").await;
    let ra = Replica::new(1);
    sync(&mut a, "notes", "plan", "").await;
    update(&mut a, "notes", "plan", &ra.insert(0, "base")).await;

    let garbage = encode_base64(&[0x05, 0xff, 0xff, 0x01, 0x02, 0x03]);
    let r = update(&mut a, "notes", "plan", &garbage).await;
    assert_eq!(r["code"], "invalid_input", "{r}");

    let oversize = encode_base64(&vec![0u8; MAX_COLLAB_UPDATE_BYTES + 1]);
    let r = update(&mut a, "notes", "plan", &oversize).await;
    assert_eq!(r["code"], "invalid_input", "{r}");

    // An edit whose predecessor the server never saw.
    let other = Replica::new(7);
    other.insert(0, "first");
    let sv = other.doc.transact().state_vector();
    other.insert(5, " second");
    let pending = encode_base64(&other.doc.transact().encode_diff_v1(&sv));
    let r = update(&mut a, "notes", "plan", &pending).await;
    assert_eq!(r["code"], "invalid_input", "{r}");
    assert!(
        r["message"]
            .as_str()
            .expect("message")
            .contains("sync first"),
        "{r}"
    );

    // Growing past the document limit: two large edits fit, the third does not.
    let chunk = "z".repeat(250_000);
    for _ in 0..2 {
        let u = ra.insert(0, &chunk);
        let r = update(&mut a, "notes", "plan", &u).await;
        assert_eq!(r["type"], "ack", "{r}");
    }
    let before = fetched(&mut a, "notes", "plan").await;
    let probe = Replica::new(8);
    probe.apply(&encode_base64(
        &ra.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default()),
    ));
    let u = probe.insert(0, &chunk);
    let r = update(&mut a, "notes", "plan", &u).await;
    assert_eq!(r["code"], "payload_too_large", "{r}");

    let after = fetched(&mut a, "notes", "plan").await;
    assert_eq!(after, before, "nothing changed");
    assert_eq!(after.1, 3);
    assert!(
        t.metric("roam_collab_updates_refused_total", Some("pending"))
            .await
            >= 1.0
    );
    assert!(
        t.metric("roam_collab_updates_refused_total", Some("too_large"))
            .await
            >= 1.0
    );
    // And the document still takes good updates.
    let r = update(&mut a, "notes", "plan", &ra.insert(0, "ok")).await;
    assert_eq!(r["result"]["seq"], 4, "{r}");
}

#[tokio::test]
async fn a_replayed_key_is_applied_once_and_answered_the_same() {
    let t = TestServer::start().await;
    let (mut a, mut b) = two_followers(&t).await;
    let ra = Replica::new(1);
    let u = ra.insert(0, "once");
    let args = json!({"room": "notes", "doc": "plan", "update": u});
    let first = a
        .mutate_with_key("k-1", "collab.update", args.clone())
        .await;
    let again = a.mutate_with_key("k-1", "collab.update", args).await;
    assert_eq!(first["result"], again["result"]);
    let u2 = ra.insert(4, "!");
    update(&mut a, "notes", "plan", &u2).await;
    let f = next_update(&mut b, "plan").await;
    assert_eq!(f["seq"], 1);
    let f = next_update(&mut b, "plan").await;
    assert_eq!(f["seq"], 2, "the replay took no seq: {f}");
    let (text, seq) = fetched(&mut b, "notes", "plan").await;
    assert_eq!((text.as_str(), seq), ("once!", 2));
}

#[tokio::test]
async fn compaction_keeps_the_content_and_later_syncs_are_right() {
    let t = TestServer::start_with(|c| c.collab_compact_updates = 5).await;
    room_with_member(&t, "notes", "private").await;
    let mut a = t.ws("alice").await;
    sync(&mut a, "notes", "plan", "").await;
    let ra = Replica::new(1);
    let mut mid_sv = String::new();
    let mid = Replica::new(2);
    for i in 0..12u32 {
        let u = ra.insert(ra.len(), &format!("{i},"));
        if i < 7 {
            mid.apply(&u);
            mid_sv = mid.state_vector();
        }
        let r = update(&mut a, "notes", "plan", &u).await;
        assert_eq!(r["result"]["seq"], u64::from(i) + 1, "{r}");
    }
    assert!(t.metric("roam_collab_compactions_total", None).await >= 2.0);
    let (text, seq) = fetched(&mut a, "notes", "plan").await;
    assert_eq!((text, seq), (ra.text(), 12));
    let mut b = t.ws("bob").await;
    let s = sync(&mut b, "notes", "plan", &mid_sv).await;
    mid.apply(s["result"]["update"].as_str().expect("update"));
    assert_eq!(mid.text(), ra.text());
    // A restart reloads the snapshot and the log after it.
    let t = t.restart().await;
    let mut a = t.ws("alice").await;
    let (text, seq) = fetched(&mut a, "notes", "plan").await;
    assert_eq!((text, seq), (ra.text(), 12));
    let r = update(&mut a, "notes", "plan", &ra.insert(0, ">")).await;
    assert_eq!(r["result"]["seq"], 13, "{r}");
}

#[tokio::test]
async fn a_restarted_server_keeps_the_document() {
    let t = TestServer::start().await;
    room_with_member(&t, "notes", "private").await;
    let mut a = t.ws("alice").await;
    sync(&mut a, "notes", "plan", "").await;
    let ra = Replica::new(1);
    for w in ["kept ", "across ", "restarts"] {
        update(&mut a, "notes", "plan", &ra.insert(ra.len(), w)).await;
    }
    drop(a);
    let t = t.restart().await;
    let mut b = t.ws("bob").await;
    let (text, seq) = fetched(&mut b, "notes", "plan").await;
    assert_eq!((text.as_str(), seq), ("kept across restarts", 3));
}

#[tokio::test]
async fn awareness_reaches_the_other_followers_and_goes_when_the_socket_closes() {
    let t = TestServer::start().await;
    let (mut a, mut b) = two_followers(&t).await;
    let session = a.hello["session"].clone();
    a.send(
        json!({"v": 1, "type": "awareness", "room": "notes", "doc": "plan",
        "state": {"cursor": 3}}),
    )
    .await;
    let f = b.until(|f| f["type"] == "awareness").await;
    assert_eq!(f["user"], "alice");
    assert_eq!(f["session"], session);
    assert_eq!(f["state"]["cursor"], 3);
    // The sender does not get its own back.
    assert!(a.drain().await.iter().all(|f| f["type"] != "awareness"));
    drop(a);
    let f = b.until(|f| f["type"] == "awareness").await;
    assert_eq!(f["session"], session);
    assert!(f.get("state").is_none(), "gone: {f}");
}

#[tokio::test]
async fn awareness_of_a_socket_that_does_not_follow_is_refused() {
    let t = TestServer::start().await;
    room_with_member(&t, "notes", "private").await;
    let mut a = t.ws("alice").await;
    a.send(
        json!({"v": 1, "type": "awareness", "room": "notes", "doc": "plan",
        "state": {"cursor": 1}}),
    )
    .await;
    let f = a.until(|f| f["type"] == "error").await;
    assert_eq!(f["code"], "invalid_input", "{f}");
}

#[tokio::test]
async fn a_banned_follower_stops_receiving_and_a_deleted_rooms_followers_go() {
    let t = TestServer::start().await;
    let (mut a, mut b) = two_followers(&t).await;
    let ra = Replica::new(1);
    update(&mut a, "notes", "plan", &ra.insert(0, "before")).await;
    assert_eq!(next_update(&mut b, "plan").await["seq"], 1);
    let ban = a
        .mutate("member.ban", json!({"room": "notes", "user": "bob"}))
        .await;
    assert_eq!(ban["type"], "ack", "{ban}");
    // The ban is checked off the socket's task: wait until bob is no longer a follower.
    followers_fall_to(&t, 1.0, "bob still follows").await;
    update(&mut a, "notes", "plan", &ra.insert(0, "after")).await;
    next_update(&mut a, "plan").await;
    next_update(&mut a, "plan").await;
    assert!(
        b.drain().await.iter().all(|f| f["type"] != "collab_update"),
        "a banned user receives nothing more"
    );
    let del = a.mutate("room.delete", json!({"room": "notes"})).await;
    assert_eq!(del["type"], "ack", "{del}");
    followers_fall_to(&t, 0.0, "alice still follows").await;
    let s = sync(&mut a, "notes", "plan", "").await;
    assert_eq!(s["code"], "not_found", "{s}");
}

#[tokio::test]
async fn leaving_stops_the_updates_and_the_follow_cap_holds() {
    let t = TestServer::start().await;
    let (mut a, mut b) = two_followers(&t).await;
    let left = b
        .call(json!({"type": "collab_leave", "room": "notes", "doc": "plan"}))
        .await;
    assert_eq!(left["result"], json!({}), "{left}");
    let ra = Replica::new(1);
    update(&mut a, "notes", "plan", &ra.insert(0, "x")).await;
    next_update(&mut a, "plan").await;
    assert!(b.drain().await.iter().all(|f| f["type"] != "collab_update"));
    let max = roam_proto::collab::MAX_FOLLOWED_DOCS;
    for i in 0..max {
        // Paced under the control-frame allowance.
        if i % 15 == 14 {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
        let s = sync(&mut b, "notes", &format!("d{i}"), "").await;
        assert_eq!(s["type"], "ack", "{s}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let s = sync(&mut b, "notes", "one-too-many", "").await;
    assert_eq!(s["code"], "conflict", "{s}");
}
