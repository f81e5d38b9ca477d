//! Graceful shutdown (sockets closed with 1001, readiness while draining) and retention.

use serde_json::json;
use tower::ServiceExt;

use crate::fixtures::{now_ms, TestServer};

#[tokio::test]
async fn stop_closes_open_sockets_with_1001() {
    let mut t = TestServer::start().await;
    t.as_user("alice").create_room("r", "public").await;
    let mut idle = t.ws("alice").await;
    let mut subscribed = t.ws("bob").await;
    subscribed.subscribe(&[("r", 2)]).await;
    subscribed.until(|f| f["type"] == "caught_up").await;
    let base = t.base.clone();

    t.stop().await;
    assert_eq!(idle.closed().await, Some(1001));
    assert_eq!(subscribed.closed().await, Some(1001));
    // The listener is gone too.
    let r = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .send()
        .await;
    assert!(r.is_err(), "still answering after stop: {r:?}");
}

#[tokio::test]
async fn a_draining_server_is_not_ready_but_alive() {
    let mut t = TestServer::start().await;
    let state = t.server().state().clone();
    let app = roam_server::app(state.clone());
    let get = |path: &str| {
        http::Request::get(path)
            .body(axum::body::Body::empty())
            .expect("request")
    };
    let ready = app.clone().oneshot(get("/readyz")).await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);

    // Draining starts: readiness fails at once, liveness holds.
    state.shutdown.cancel();
    let ready = app.clone().oneshot(get("/readyz")).await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 503);
    let body = axum::body::to_bytes(ready.into_body(), 1024)
        .await
        .expect("body");
    assert_eq!(&body[..], b"draining");
    let live = app.clone().oneshot(get("/healthz")).await.expect("healthz");
    assert_eq!(live.status().as_u16(), 200);
    t.stop().await;
}

#[tokio::test]
async fn retention_purges_old_notifications_presence_and_history() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("r", "public").await;
    t.as_user("bob").join("r").await;
    alice.say("r", "@bob one").await;
    alice.say("r", "@bob two").await;
    for v in 0..3 {
        alice
            .send(
                reqwest::Method::PUT,
                "/v1/rooms/r/documents/d",
                Some(json!({"base_version": v, "content": format!("v{}", v + 1)})),
            )
            .await;
    }
    // bob comes and goes: his last-seen is stored.
    let ws = t.ws("bob").await;
    drop(ws);
    let bob = t.as_user("bob");
    let deadline = tokio::time::Instant::now() + crate::fixtures::WAIT;
    loop {
        let p = bob.get("/v1/presence?users=bob").await;
        if p.body[0]["status"] == "offline" && p.body[0]["last_seen"].is_i64() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:?}", p.body);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let state = t.server().state().clone();
    // Today nothing is old enough.
    let purged = roam_server::retention::run_once(&state, now_ms())
        .await
        .expect("retention pass");
    assert_eq!(
        purged,
        roam_server::store::Purged {
            batches: 1,
            ..Default::default()
        }
    );
    assert_eq!(
        bob.get("/v1/notifications").await.body["items"]
            .as_array()
            .expect("items")
            .len(),
        2
    );

    // A year from now, everything past its period goes; current document versions stay.
    let purged = roam_server::retention::run_once(&state, now_ms() + 365 * 86_400_000)
        .await
        .expect("retention pass");
    assert_eq!(purged.notifications, 2);
    assert_eq!(purged.presence, 1);
    assert_eq!(purged.document_versions, 2);
    // Every key: the room, the join and the three document writes, and on a store that keeps
    // a message's send key in its own table (PostgreSQL) the two sends; SQLite keeps those on
    // the messages, for as long as they exist.
    assert!(purged.idempotency_keys >= 5, "{purged:?}");
    assert_eq!(bob.get("/v1/notifications").await.body["items"], json!([]));
    assert_eq!(bob.get("/v1/me").await.body["unread"], 0);
    let p = bob.get("/v1/presence?users=bob").await;
    assert_eq!(
        p.body,
        json!([{"user": "bob", "status": "offline", "devices": 0}])
    );
    let h = alice.get("/v1/rooms/r/documents/d/history").await;
    assert_eq!(h.body["items"].as_array().expect("items").len(), 1);
    assert_eq!(h.body["items"][0]["version"], 3);
    assert_eq!(
        alice.get("/v1/rooms/r/documents/d").await.body["content"],
        "v3"
    );
    // Messages stay; the event log keeps each room's newest event only, so recovery from an
    // older cursor answers `gone` (a socket gets `reset`).
    assert_eq!(alice.all_messages("r").await.len(), 2);
    let head = alice.get("/v1/rooms/r").await.body["head_seq"]
        .as_u64()
        .expect("head_seq");
    assert_eq!(purged.events, head - 1, "{purged:?}");
    let r = alice.get("/v1/rooms/r/events?after=0").await;
    assert_eq!(r.status, 410, "{:?}", r.body);
    let r = alice
        .get(&format!("/v1/rooms/r/events?after={}", head - 1))
        .await;
    assert_eq!(r.body["items"][0]["seq"], head);
    assert_eq!(
        t.metric(
            "roam_retention_deleted_total",
            Some("kind=\"notifications\"")
        )
        .await,
        2.0
    );
    // New notifications keep counting from where they were.
    alice.say("r", "@bob three").await;
    assert_eq!(
        bob.get("/v1/notifications").await.body["items"][0]["seq"],
        3
    );
}
