//! A PostgreSQL store that goes away: requests answer `503 unavailable` (REST) or an
//! `unavailable` error frame (socket), `/readyz` turns 503, nothing is half applied, and the
//! server serves again once the database is back. Runs on the machine's PostgreSQL
//! (`ROAM_TEST_STORE`, or 127.0.0.1:5432) whichever store the rest of the suite uses.

use roam_server::config::StoreKind;
use serde_json::json;

use crate::fixtures::{key, postgres_url, PgSchema, Relay, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_answers_unavailable_changes_nothing_and_recovers() {
    let base =
        postgres_url().unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = PgSchema::create(&base, "roam_test").await;
    let relay = Relay::start(schema.server_addr(), None).await;
    let url = schema.url_via(relay.addr);
    let t = TestServer::start_with(|c| c.store = StoreKind::Postgres(url)).await;
    let alice = t.as_user("alice");
    alice.create_room("hall", "public").await;
    alice.say("hall", "before").await;
    let mut ws = t.ws("alice").await;
    let ready = t.anon().get("/readyz").await;
    assert_eq!(ready.status, 200);

    relay.cut();
    let k = key();
    let r = alice
        .post_with_key("/v1/rooms/hall/messages", &k, json!({"body": "during"}))
        .await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.code(), "unavailable");
    let frame = ws
        .mutate(
            "message.send",
            json!({"room": "hall", "body": "socket during"}),
        )
        .await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["code"], "unavailable", "{frame}");
    assert_eq!(t.anon().get("/readyz").await.status, 503);

    // Back: the same key applies once now (the failed attempt left nothing behind).
    let back = Relay::start(schema.server_addr(), Some(relay.addr)).await;
    let r = alice
        .post_with_key("/v1/rooms/hall/messages", &k, json!({"body": "during"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let again = alice
        .post_with_key("/v1/rooms/hall/messages", &k, json!({"body": "during"}))
        .await;
    assert_eq!(again.body, r.body, "the retry replays");
    let bodies: Vec<String> = alice
        .all_messages("hall")
        .await
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(bodies, ["before", "during"]);
    assert_eq!(t.anon().get("/readyz").await.status, 200);
    back.cut();
}
