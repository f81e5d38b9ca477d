//! Messages that carry an attachment (`docs/protocol.md` §6 and §10), over real HTTP and
//! WebSocket: a send names a blob the sender may read with its exact size, and the blob can
//! then be downloaded by whoever may read the message, until the message is deleted.

use serde_json::{json, Value};

use crate::blobs::{download, png, sha, upload};
use crate::fixtures::{Api, TestServer};

/// The attachment of a PNG file of `data`.
fn attachment(data: &[u8]) -> Value {
    json!({"blob": sha(data), "name": "cat.png", "mime": "image/png", "size": data.len(),
           "width": 64, "height": 48})
}

async fn send(api: &Api, room: &str, body: Value) -> crate::fixtures::Resp {
    api.post(&format!("/v1/rooms/{room}/messages"), body).await
}

/// The status of a download of `blob` by `api`.
async fn status(api: &Api, blob: &str) -> u16 {
    download(api, blob, &[]).await.0
}

#[tokio::test]
async fn a_message_shares_its_attachment_with_the_room_until_it_is_deleted() {
    let server = TestServer::start().await;
    let (alice, bob, carol) = (
        server.as_user("alice"),
        server.as_user("bob"),
        server.as_user("carol"),
    );
    let data = png(5_000);
    let blob = upload(&alice, &data, 2_000).await;
    alice.create_room("photos", "private").await;
    bob.join_invited(&alice, "photos", "member").await;
    assert_eq!(status(&bob, &blob).await, 403, "not shared yet");

    // A caption is optional.
    let r = send(&alice, "photos", json!({ "attachment": attachment(&data) })).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["body"], "");
    assert_eq!(r.body["attachment"], attachment(&data));
    let id = r.body["id"].as_str().expect("id").to_owned();
    let listed = bob.all_messages("photos").await;
    assert_eq!(
        listed.last().expect("a message")["attachment"],
        attachment(&data)
    );
    let plain = alice.say("photos", "no file").await;
    assert!(plain.get("attachment").is_none(), "{plain}");

    // A member downloads it, whole and in ranges; a non-member of the private room may not.
    let (code, _, bytes) = download(&bob, &blob, &[]).await;
    assert_eq!((code, bytes == data), (200, true));
    let (code, h, bytes) = download(&bob, &blob, &[("Range", "bytes=100-199")]).await;
    assert_eq!(code, 206);
    assert_eq!(bytes, data[100..200]);
    assert_eq!(
        h.get("content-range").and_then(|v| v.to_str().ok()),
        Some("bytes 100-199/5000")
    );
    assert_eq!(status(&carol, &blob).await, 403);

    // Deleted: the message no longer carries it, and only the uploader may still download it.
    let r = alice
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/rooms/photos/messages/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body.get("attachment").is_none(), "{:?}", r.body);
    let listed = bob.all_messages("photos").await;
    let gone = listed
        .iter()
        .find(|m| m["id"] == id.as_str())
        .expect("kept");
    assert!(gone.get("attachment").is_none(), "{gone}");
    let events = bob.all_events("photos").await;
    assert!(events
        .iter()
        .any(|e| e["kind"] == "message_created" && e["data"]["id"] == id.as_str()));
    for e in events {
        assert!(e["data"].get("attachment").is_none(), "{e}");
    }
    assert_eq!(status(&bob, &blob).await, 403);
    assert_eq!(status(&alice, &blob).await, 200);
}

#[tokio::test]
async fn a_send_names_a_blob_the_sender_may_read_with_its_size() {
    let server = TestServer::start().await;
    let (alice, bob, carol) = (
        server.as_user("alice"),
        server.as_user("bob"),
        server.as_user("carol"),
    );
    let data = png(3_000);
    let blob = upload(&alice, &data, 3_000).await;
    bob.create_room("bobs", "protected").await;
    alice.join_invited(&bob, "bobs", "member").await;

    // Another user's blob that nothing shares answers as a missing one.
    let r = send(&bob, "bobs", json!({ "attachment": attachment(&data) })).await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{:?}", r.body);
    assert_eq!(r.body["error"]["message"], "blob not found");
    let missing = png(10);
    let r = send(
        &alice,
        "bobs",
        json!({ "attachment": attachment(&missing) }),
    )
    .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{:?}", r.body);
    // The size must be the blob's.
    let mut wrong = attachment(&data);
    wrong["size"] = json!(2_999);
    let r = send(&alice, "bobs", json!({ "body": "x", "attachment": wrong })).await;
    assert_eq!((r.status, r.code()), (422, "hash_mismatch"), "{:?}", r.body);
    // Bad fields, and a send with neither body nor attachment.
    let mut bad = attachment(&data);
    bad["name"] = json!("../../etc/passwd");
    let r = send(&alice, "bobs", json!({ "attachment": bad })).await;
    assert_eq!((r.status, r.code()), (400, "invalid_input"), "{:?}", r.body);
    let mut bad = attachment(&data);
    bad["blob"] = json!(blob.to_uppercase());
    let r = send(&alice, "bobs", json!({ "attachment": bad })).await;
    assert_eq!((r.status, r.code()), (400, "invalid_input"), "{:?}", r.body);
    let r = send(&alice, "bobs", json!({})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_input"), "{:?}", r.body);
    assert!(
        bob.all_messages("bobs").await.is_empty(),
        "nothing was sent"
    );

    // Over the socket too.
    let mut ws = server.ws("alice").await;
    let ack = ws
        .mutate(
            "message.send",
            json!({"room": "bobs", "body": "a cat", "attachment": attachment(&data)}),
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["result"]["attachment"]["blob"], blob.as_str());
    let err = ws
        .mutate(
            "message.send",
            json!({"room": "bobs", "attachment": attachment(&missing)}),
        )
        .await;
    assert_eq!(
        (&err["type"], &err["code"]),
        (&json!("error"), &json!("not_found"))
    );

    // Once shared with bob, he may pass it on: carol, in his other room, can download it.
    assert_eq!(status(&bob, &blob).await, 200);
    bob.create_room("bobs-too", "private").await;
    let r = send(&bob, "bobs-too", json!({ "attachment": attachment(&data) })).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(status(&carol, &blob).await, 403);
    carol.join_invited(&bob, "bobs-too", "guest").await;
    assert_eq!(status(&carol, &blob).await, 200);
    // Leaving the room takes it away again.
    let r = carol.post("/v1/rooms/bobs-too/leave", json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(status(&carol, &blob).await, 403);
    // A deleted room shares nothing; bob still reads it through the protected room.
    carol.join_invited(&bob, "bobs-too", "guest").await;
    let r = bob
        .send(reqwest::Method::DELETE, "/v1/rooms/bobs-too", None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(status(&carol, &blob).await, 403);
    assert_eq!(status(&bob, &blob).await, 200);
}

/// Retention deletes an attachment once no message carries it (its message deleted, or never
/// sent) and an upload's expiry has passed since it was written; one still carried stays.
#[tokio::test]
async fn retention_collects_attachments_no_message_carries() {
    let server = TestServer::start().await;
    let alice = server.as_user("alice");
    alice.create_room("gc", "public").await;
    let (kept, dropped, fresh) = (png(3_000), png(3_001), png(3_002));
    for data in [&kept, &dropped, &fresh] {
        upload(&alice, data, 1_000).await;
    }
    for data in [&kept, &dropped] {
        let r = send(&alice, "gc", json!({ "attachment": attachment(data) })).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let last = alice.all_messages("gc").await;
    let id = last.last().expect("a message")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let r = alice
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/rooms/gc/messages/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let state = server.server().state().clone();
    // Today the unused one is younger than an upload's expiry: nothing goes.
    let now = crate::fixtures::now_ms();
    let purged = roam_server::retention::run_once(&state, now)
        .await
        .expect("pass");
    assert_eq!(purged.blobs, 0);
    // Two days on, every blob is older than the expiry (24 h): only the unused one goes, and
    // the one never sent (no message carries it either).
    let purged = roam_server::retention::run_once(&state, now + 2 * 86_400_000)
        .await
        .expect("pass");
    assert_eq!(purged.blobs, 2, "{purged:?}");
    assert_eq!(status(&alice, &sha(&kept)).await, 200);
    for gone in [&dropped, &fresh] {
        assert_eq!(status(&alice, &sha(gone)).await, 403);
    }
    assert_eq!(
        server
            .metric("roam_retention_deleted_total", Some("blobs"))
            .await,
        2.0
    );
    // What is left in the store is the one blob still carried.
    assert_eq!(
        server.metric("roam_blob_stored_bytes", None).await,
        kept.len() as f64
    );
}

/// A blob as a long-gone upload left it: stored three days ago with `user` as its uploader,
/// and never named by a send since. Returns its id.
async fn plant_old_blob(server: &TestServer, user: &str, data: &[u8]) -> String {
    use roam_server::blob::{keys, once};
    let blob = sha(data);
    let store = &server.server().blobs().store;
    store
        .put(
            &keys::blob(&blob),
            once(bytes::Bytes::copy_from_slice(data)),
        )
        .await
        .expect("put blob");
    store
        .put(&keys::owner(&blob, user), once(bytes::Bytes::new()))
        .await
        .expect("put owner");
    let path = server.dir.path().join("blobs").join(keys::blob(&blob));
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(old))
        .expect("age the blob");
    blob
}

/// The send/retention race: a send checks that its blob exists, then commits; retention
/// checks that no message carries a blob, then deletes it. A send touches the blob before its
/// check, and retention dooms a blob before deleting it, so whichever comes first wins and a
/// message never carries a deleted blob.
#[tokio::test]
async fn retention_and_a_send_naming_an_old_unused_blob_do_not_cross() {
    let server = TestServer::start().await;
    let alice = server.as_user("alice");
    alice.create_room("race", "public").await;
    let (sent, idle, lost) = (png(4_000), png(4_001), png(4_002));
    for data in [&sent, &idle, &lost] {
        plant_old_blob(&server, "alice", data).await;
    }
    let state = server.server().state().clone();
    let blobs = server.server().blobs().clone();
    let now = crate::fixtures::now_ms();

    // The send came first: it touched its blob (the first step of its check), then retention
    // ran before the message was committed. Retention leaves that blob and takes the other.
    assert_eq!(blobs.hold(&sha(&sent)).await, Ok(true));
    let purged = roam_server::retention::run_once(&state, now)
        .await
        .expect("pass");
    assert_eq!(purged.blobs, 2, "the untouched two go: {purged:?}");
    assert_eq!(
        server
            .metric("roam_blob_gc_skipped_touched_total", None)
            .await,
        1.0
    );
    let r = send(&alice, "race", json!({ "attachment": attachment(&sent) })).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(status(&alice, &sha(&sent)).await, 200);
    let purged = roam_server::retention::run_once(&state, now + 2 * 86_400_000)
        .await
        .expect("pass");
    assert_eq!(purged.blobs, 0, "carried by a message now");

    // Retention came first: it doomed the blob (its check passed) and is about to delete it.
    // A send naming it now is refused, and commits nothing.
    let blob = plant_old_blob(&server, "alice", &lost).await;
    let store = &state.service.store;
    assert!(store
        .doom_blob(&blob, now, now - 86_400_000)
        .await
        .expect("doom"));
    let before = alice.all_messages("race").await.len();
    let r = send(&alice, "race", json!({ "attachment": attachment(&lost) })).await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{:?}", r.body);
    assert_eq!(alice.all_messages("race").await.len(), before);
    // An upload of the same bytes is no "already held" either: it starts a new upload.
    let created = alice
        .post(
            "/v1/uploads",
            json!({"size": lost.len(), "sha256": blob, "mime": "image/png"}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    // Retention finishes; the bytes can then be uploaded and sent again.
    let purged = roam_server::retention::run_once(&state, now)
        .await
        .expect("pass");
    assert_eq!(purged.blobs, 1);
    assert_eq!(status(&alice, &blob).await, 403, "gone");
    upload(&alice, &lost, 1_000).await;
    let r = send(&alice, "race", json!({ "attachment": attachment(&lost) })).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(status(&alice, &blob).await, 200);
}

/// Many sends of old unused blobs while retention passes run: every message that was
/// committed carries a blob that is still there; every refused send committed nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_racing_retention_never_leave_a_message_without_its_blob() {
    let server = TestServer::start().await;
    let alice = server.as_user("alice");
    alice.create_room("busy", "public").await;
    let files: Vec<Vec<u8>> = (0..40).map(|i| png(3_000 + i)).collect();
    for data in &files {
        plant_old_blob(&server, "alice", data).await;
    }
    let state = server.server().state().clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let (state, stop) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            let mut passes = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && passes < 10_000 {
                let now = crate::fixtures::now_ms();
                roam_server::retention::run_once(&state, now)
                    .await
                    .expect("pass");
                passes += 1;
                tokio::task::yield_now().await;
            }
        })
    };
    let mut accepted = 0;
    for data in &files {
        let r = send(&alice, "busy", json!({ "attachment": attachment(data) })).await;
        match r.status {
            200 => accepted += 1,
            404 => {}
            other => panic!("send answered {other}: {:?}", r.body),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    gc.await.expect("gc task");
    let messages = alice.all_messages("busy").await;
    assert_eq!(messages.len(), accepted);
    for m in &messages {
        let blob = m["attachment"]["blob"].as_str().expect("blob");
        assert_eq!(
            status(&alice, blob).await,
            200,
            "message {} lost its blob",
            m["id"]
        );
    }
}
