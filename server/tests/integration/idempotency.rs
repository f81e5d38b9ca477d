//! Durable idempotency: a replayed key answers the stored result and applies nothing, over REST
//! and the socket, concurrently, after a restart and after the user lost the right (protocol §6).

use serde_json::json;

use crate::fixtures::{key, TestServer};

#[tokio::test]
async fn a_replayed_rest_key_returns_the_original_result_once_applied() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("chat", "public").await;
    let k = key();
    let first = alice
        .post_with_key("/v1/rooms/chat/messages", &k, json!({"body": "once"}))
        .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None);
    for _ in 0..3 {
        let again = alice
            .post_with_key("/v1/rooms/chat/messages", &k, json!({"body": "once"}))
            .await;
        assert_eq!(again.status, 200, "{:?}", again.body);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.body, first.body);
    }
    assert_eq!(alice.all_messages("chat").await.len(), 1);
    assert_eq!(alice.get("/v1/rooms/chat").await.body["head_seq"], 3);
    assert_eq!(
        t.metric("roam_outbox_replays_deduplicated_total", None)
            .await,
        3.0
    );
    assert_eq!(
        t.metric("roam_mutations_total", Some("op=\"message.send\""))
            .await,
        1.0
    );

    // The key with other arguments, or for another op, is refused and changes nothing.
    let r = alice
        .post_with_key("/v1/rooms/chat/messages", &k, json!({"body": "twice"}))
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.code(), "idempotency_mismatch");
    let r = alice
        .post_with_key(
            "/v1/rooms",
            &k,
            json!({"room": "new-room", "kind": "public"}),
        )
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.code(), "idempotency_mismatch");
    assert_eq!(alice.get("/v1/rooms/new-room").await.status, 404);
    assert_eq!(alice.all_messages("chat").await.len(), 1);

    // Keys belong to their user: bob's use of the same key is his own mutation.
    let bob = t.as_user("bob");
    bob.join("chat").await;
    let r = bob
        .post_with_key("/v1/rooms/chat/messages", &k, json!({"body": "once"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("idempotent-replayed"), None);
    assert_eq!(r.body["sender"], "bob");
    assert_ne!(r.body["id"], first.body["id"]);
    assert_eq!(alice.all_messages("chat").await.len(), 2);
}

#[tokio::test]
async fn a_failed_mutation_stores_nothing_and_can_be_retried_with_its_key() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let carol = t.as_user("carol");
    alice.create_room("club", "protected").await;
    let k = key();
    let r = carol
        .post_with_key("/v1/rooms/club/messages", &k, json!({"body": "let me"}))
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let inv = alice.invite("club", "carol", "member").await;
    carol.accept(&inv).await;
    let r = carol
        .post_with_key("/v1/rooms/club/messages", &k, json!({"body": "let me"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("idempotent-replayed"), None);
    assert_eq!(alice.all_messages("club").await.len(), 1);
}

#[tokio::test]
async fn a_replayed_socket_key_returns_the_original_ack() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("chat", "public").await;
    let mut ws = t.ws("alice").await;
    let k = key();
    let args = json!({"room": "chat", "body": "over the socket"});
    let first = ws.mutate_with_key(&k, "message.send", args.clone()).await;
    assert_eq!(first["type"], "ack", "{first}");
    let again = ws.mutate_with_key(&k, "message.send", args.clone()).await;
    assert_eq!(again["type"], "ack", "{again}");
    assert_eq!(again["result"], first["result"]);
    // Pipelined duplicates in one burst are applied once too.
    for i in 0..3 {
        ws.send(
            json!({"v": 1, "type": "mutate", "id": format!("dup{i}"), "key": k,
            "op": "message.send", "args": args}),
        )
        .await;
    }
    for _ in 0..3 {
        let f = ws.until(|f| f["type"] == "ack").await;
        assert_eq!(f["result"], first["result"]);
    }
    let err = ws
        .mutate_with_key(&k, "message.send", json!({"room": "chat", "body": "other"}))
        .await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "idempotency_mismatch");
    // The same key over REST with the same arguments is the same mutation.
    let r = alice
        .post_with_key(
            "/v1/rooms/chat/messages",
            &k,
            json!({"body": "over the socket"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    assert_eq!(r.body, first["result"]);
    // And the other way round.
    let k2 = key();
    let rest = alice
        .post_with_key(
            "/v1/rooms/chat/messages",
            &k2,
            json!({"body": "rest first"}),
        )
        .await;
    let ack = ws
        .mutate_with_key(
            &k2,
            "message.send",
            json!({"room": "chat", "body": "rest first"}),
        )
        .await;
    assert_eq!(ack["result"], rest.body);
    assert_eq!(alice.all_messages("chat").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_apply_once() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("chat", "public").await;
    let k = key();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let api = alice.clone();
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            api.post_with_key("/v1/rooms/chat/messages", &k, json!({"body": "race"}))
                .await
        }));
    }
    let mut bodies = Vec::new();
    let mut fresh = 0;
    for task in tasks {
        let r = task.await.expect("task");
        assert_eq!(r.status, 200, "{:?}", r.body);
        if r.header("idempotent-replayed").is_none() {
            fresh += 1;
        }
        bodies.push(r.body);
    }
    assert_eq!(fresh, 1, "exactly one request applied it");
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    assert_eq!(alice.all_messages("chat").await.len(), 1);
}

#[tokio::test]
async fn replays_after_a_restart_return_the_original_results() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let (k_room, k_msg, k_ws, k_doc) = (key(), key(), key(), key());
    let room = alice
        .post_with_key(
            "/v1/rooms",
            &k_room,
            json!({"room": "durable", "kind": "public"}),
        )
        .await;
    assert_eq!(room.status, 200);
    let msg = alice
        .post_with_key(
            "/v1/rooms/durable/messages",
            &k_msg,
            json!({"body": "kept"}),
        )
        .await;
    let mut ws = t.ws("alice").await;
    let ws_ack = ws
        .mutate_with_key(
            &k_ws,
            "message.send",
            json!({"room": "durable", "body": "ws kept"}),
        )
        .await;
    assert_eq!(ws_ack["type"], "ack");
    let doc = alice
        .req(
            reqwest::Method::PUT,
            "/v1/rooms/durable/documents/d",
            Some(&k_doc),
            Some(json!({"base_version": 0, "content": "v1"})),
        )
        .await;
    assert_eq!(doc.status, 200);
    drop(ws);

    let t = t.restart().await;
    let alice = t.as_user("alice");
    let head_before = alice.get("/v1/rooms/durable").await.body["head_seq"].clone();
    assert_eq!(head_before, 5);

    let r = alice
        .post_with_key(
            "/v1/rooms",
            &k_room,
            json!({"room": "durable", "kind": "public"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        r.body, room.body,
        "the room as it was created, not as it is"
    );
    let r = alice
        .post_with_key(
            "/v1/rooms/durable/messages",
            &k_msg,
            json!({"body": "kept"}),
        )
        .await;
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    assert_eq!(r.body, msg.body);
    let mut ws = t.ws("alice").await;
    let again = ws
        .mutate_with_key(
            &k_ws,
            "message.send",
            json!({"room": "durable", "body": "ws kept"}),
        )
        .await;
    assert_eq!(again["type"], "ack", "{again}");
    assert_eq!(again["result"], ws_ack["result"]);
    let r = alice
        .req(
            reqwest::Method::PUT,
            "/v1/rooms/durable/documents/d",
            Some(&k_doc),
            Some(json!({"base_version": 0, "content": "v1"})),
        )
        .await;
    assert_eq!(r.status, 200, "not a version conflict: {:?}", r.body);
    assert_eq!(r.body, doc.body);
    let r = alice
        .post_with_key(
            "/v1/rooms/durable/messages",
            &k_msg,
            json!({"body": "changed"}),
        )
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);

    // Nothing was applied again.
    assert_eq!(
        alice.get("/v1/rooms/durable").await.body["head_seq"],
        head_before
    );
    let bodies: Vec<String> = alice
        .all_messages("durable")
        .await
        .iter()
        .map(|m| m["body"].as_str().expect("body").to_owned())
        .collect();
    assert_eq!(bodies, ["kept", "ws kept"]);
    assert_eq!(
        alice.get("/v1/rooms/durable/documents/d").await.body["version"],
        1
    );
}

#[tokio::test]
async fn a_replay_after_a_ban_still_returns_the_original_result() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let bob = t.as_user("bob");
    alice.create_room("lobby", "public").await;
    bob.join("lobby").await;
    let k = key();
    let sent = bob
        .post_with_key(
            "/v1/rooms/lobby/messages",
            &k,
            json!({"body": "before the ban"}),
        )
        .await;
    assert_eq!(sent.status, 200);
    alice
        .post("/v1/rooms/lobby/bans", json!({"user": "bob"}))
        .await;

    let r = bob
        .post_with_key(
            "/v1/rooms/lobby/messages",
            &k,
            json!({"body": "before the ban"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    assert_eq!(r.body, sent.body);
    let mut ws = t.ws("bob").await;
    let ack = ws
        .mutate_with_key(
            &k,
            "message.send",
            json!({"room": "lobby", "body": "before the ban"}),
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["result"], sent.body);
    // A new key is judged on today's rights.
    let r = bob
        .post("/v1/rooms/lobby/messages", json!({"body": "after the ban"}))
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(alice.all_messages("lobby").await.len(), 1);
}
