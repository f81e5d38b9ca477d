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
