//! Deleted means deleted: once a message is deleted, no read the server serves — the
//! event log over REST, socket recovery, an idempotent replay — carries its text; retention
//! removes old document content from the event log too.

use serde_json::{json, Value};

use crate::fixtures::{key, now_ms, TestServer};

const SECRET: &str = "my secret password";

/// True when `needle` appears anywhere in the JSON.
fn mentions(v: &Value, needle: &str) -> bool {
    v.to_string().contains(needle)
}

#[tokio::test]
async fn a_deleted_message_is_served_redacted_everywhere() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let mallory = t.as_user("mallory");
    alice.create_room("general", "public").await;
    let send_key = key();
    let sent = alice
        .post_with_key(
            "/v1/rooms/general/messages",
            &send_key,
            json!({"body": SECRET}),
        )
        .await;
    assert_eq!(sent.status, 200, "{:?}", sent.body);
    let id = sent.body["id"].as_str().expect("id").to_owned();
    let seq = sent.body["seq"].as_u64().expect("seq");
    let edit_key = key();
    let edited = alice
        .req(
            reqwest::Method::PATCH,
            &format!("/v1/rooms/general/messages/{id}"),
            Some(&edit_key),
            Some(json!({"body": format!("{SECRET}, edited")})),
        )
        .await;
    assert_eq!(edited.status, 200, "{:?}", edited.body);
    // Before the deletion the log holds the text (this is what the deletion must undo).
    assert!(mentions(
        &mallory.get("/v1/rooms/general/events?after=0").await.body,
        SECRET
    ));

    let r = alice
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/rooms/general/messages/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // REST recovery, by someone who was never a member.
    let events = mallory.all_events("general").await;
    assert!(
        !mentions(&Value::from(events.clone()), SECRET),
        "{events:?}"
    );
    let created = events
        .iter()
        .find(|e| e["seq"] == seq)
        .expect("the message_created event");
    assert_eq!(created["kind"], "message_created");
    assert_eq!(created["data"]["body"], "");
    assert_eq!(created["data"]["deleted"], true);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.ends_with(&["message_created", "message_edited", "message_deleted"]));
    // The messages listing.
    assert!(!mentions(
        &mallory.get("/v1/rooms/general/messages").await.body,
        SECRET
    ));

    // Idempotent replays of the send and the edit echo the redacted message.
    let replay = alice
        .post_with_key(
            "/v1/rooms/general/messages",
            &send_key,
            json!({"body": SECRET}),
        )
        .await;
    assert_eq!(replay.status, 200, "{:?}", replay.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body["body"], "");
    assert_eq!(replay.body["deleted"], true);
    let replay = alice
        .req(
            reqwest::Method::PATCH,
            &format!("/v1/rooms/general/messages/{id}"),
            Some(&edit_key),
            Some(json!({"body": format!("{SECRET}, edited")})),
        )
        .await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert!(!mentions(&replay.body, SECRET), "{:?}", replay.body);

    // Socket recovery from the start of the room.
    let mut ws = t.ws("mallory").await;
    let head = alice.get("/v1/rooms/general").await.body["head_seq"]
        .as_u64()
        .expect("head");
    ws.subscribe(&[("general", 0)]).await;
    let recovered = ws.events_until("general", head).await;
    assert!(!mentions(&Value::from(recovered), SECRET));

    // And after a restart (nothing is kept elsewhere).
    let t = t.restart().await;
    let events = t.as_user("mallory").all_events("general").await;
    assert!(!mentions(&Value::from(events), SECRET));
}

#[tokio::test]
async fn document_history_retention_blanks_old_content_in_the_event_log() {
    let t = TestServer::start_with(|c| c.event_retention_days = 0).await;
    let alice = t.as_user("alice");
    alice.create_room("docs", "public").await;
    for v in 0..3u64 {
        let r = alice
            .send(
                reqwest::Method::PUT,
                "/v1/rooms/docs/documents/plan",
                Some(json!({"base_version": v, "content": format!("draft {}", v + 1)})),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let state = t.server().state().clone();
    let purged = roam_server::retention::run_once(&state, now_ms() + 365 * 86_400_000)
        .await
        .expect("retention pass");
    assert_eq!(purged.document_versions, 2, "{purged:?}");
    assert_eq!(purged.events, 0, "the log is kept whole: {purged:?}");

    let events = alice.all_events("docs").await;
    let docs: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "document_updated")
        .collect();
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[0]["data"]["content"], "");
    assert_eq!(docs[1]["data"]["content"], "");
    assert_eq!(docs[2]["data"]["content"], "draft 3");
    assert_eq!(docs[2]["data"]["version"], 3);
}

#[tokio::test]
async fn a_socket_catching_up_from_memory_gets_the_redacted_form() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("live", "public").await;
    // A follower makes the room's events go through live delivery (and its memory).
    let mut watcher = t.ws("bob").await;
    watcher.subscribe(&[("live", 0)]).await;
    let sent = alice.say("live", SECRET).await;
    let id = sent["id"].as_str().expect("id").to_owned();
    let r = alice
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/rooms/live/messages/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let head = alice.get("/v1/rooms/live").await.body["head_seq"]
        .as_u64()
        .expect("head");
    watcher.events_until("live", head).await;
    // A second socket catches up from before the message.
    let mut late = t.ws("carol").await;
    late.subscribe(&[("live", 1)]).await;
    let recovered = late.events_until("live", head).await;
    assert!(
        !mentions(&Value::from(recovered.clone()), SECRET),
        "{recovered:?}"
    );
}
