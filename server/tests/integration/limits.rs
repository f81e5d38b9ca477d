//! Protection: rate limits, slow consumers, validated query parameters, required idempotency
//! keys and body size limits (protocol §2.1, §7, §8).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::fixtures::{key, TestServer, Ws, WAIT};

#[tokio::test]
async fn a_burst_over_the_mutation_limit_is_refused_on_the_socket_and_over_rest() {
    let t = TestServer::start_with(|c| {
        c.rate_mutations_per_sec = 1;
        c.rate_mutations_burst = 5;
    })
    .await;
    t.as_user("alice").create_room("chat", "public").await;

    // Over the socket: a join and seven messages, back to back.
    let mut ws = t.ws("bob").await;
    let mut answers = vec![ws.mutate("room.join", json!({"room": "chat"})).await];
    for i in 1..8 {
        answers.push(
            ws.mutate(
                "message.send",
                json!({"room": "chat", "body": format!("b{i}")}),
            )
            .await,
        );
    }
    assert!(
        answers[..5].iter().all(|a| a["type"] == "ack"),
        "the burst passes: {answers:?}"
    );
    let limited: Vec<&Value> = answers
        .iter()
        .filter(|a| a["code"] == "rate_limited")
        .collect();
    assert!(!limited.is_empty(), "{answers:?}");
    for a in &limited {
        assert_eq!(a["type"], "error");
        let ms = a["retry_after_ms"].as_u64().expect("retry_after_ms");
        assert!((1..=1_000).contains(&ms), "{a}");
    }
    let ws_sent = answers[1..].iter().filter(|a| a["type"] == "ack").count();
    assert_eq!(ws_sent + limited.len(), 7);

    // Over REST: carol has her own bucket.
    let carol = t.as_user("carol");
    let mut statuses = vec![carol.post("/v1/rooms/chat/join", json!({})).await.status];
    let mut refused = None;
    for i in 1..8 {
        let r = carol
            .post("/v1/rooms/chat/messages", json!({"body": format!("c{i}")}))
            .await;
        statuses.push(r.status);
        if r.status == 429 && refused.is_none() {
            refused = Some(r);
        }
    }
    assert_eq!(&statuses[..5], [200, 200, 200, 200, 200], "{statuses:?}");
    let r = refused.expect("a 429");
    assert_eq!(r.code(), "rate_limited");
    let ms = r.body["error"]["retry_after_ms"]
        .as_u64()
        .expect("retry_after_ms");
    assert!((1..=1_000).contains(&ms), "{:?}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    let refused_count = statuses.iter().filter(|s| **s == 429).count();
    let rest_sent = statuses[1..].iter().filter(|s| **s == 200).count();
    assert_eq!(rest_sent + refused_count, 7);
    // Exactly what was accepted was stored.
    let stored = t.as_user("alice").all_messages("chat").await;
    assert_eq!(stored.len(), ws_sent + rest_sent);

    // The counter saw every refusal.
    assert_eq!(
        t.metric("roam_rate_limited_total", Some("kind=\"mutation\""))
            .await,
        (limited.len() + refused_count) as f64
    );

    // The limit is checked before anything is read, replays included: a replay over the limit
    // is refused like anything else, and answered from the store once the bucket refilled.
    let k = key();
    let dave = t.as_user("dave");
    let r = dave
        .post_with_key("/v1/rooms/chat/join", &k, json!({}))
        .await;
    assert_eq!(r.status, 200);
    for _ in 0..6 {
        dave.post("/v1/rooms/chat/messages", json!({"body": "spam"}))
            .await;
    }
    let r = dave
        .post_with_key("/v1/rooms/chat/join", &k, json!({}))
        .await;
    assert_eq!(r.status, 429, "{:?}", r.body);
    let wait = r.body["error"]["retry_after_ms"]
        .as_u64()
        .expect("retry_after_ms");
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    let r = dave
        .post_with_key("/v1/rooms/chat/join", &k, json!({}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
}

#[tokio::test]
async fn a_burst_of_connects_is_refused_at_the_handshake() {
    let t = TestServer::start_with(|c| {
        c.rate_connects_per_min = 1;
        c.rate_connects_burst = 2;
    })
    .await;
    let _a = t.ws("alice").await;
    let _b = t.ws("alice").await;
    let refused = Ws::try_connect(&t.ws_url(), Some(&t.token("alice")))
        .await
        .expect_err("third connect refused");
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.code(), "rate_limited");
    let retry: u64 = refused
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    // Per user: bob still connects.
    let mut bob = t.ws("bob").await;
    assert_eq!(bob.call(json!({"type": "ping"})).await["type"], "pong");
    assert_eq!(
        t.metric("roam_rate_limited_total", Some("kind=\"connect\""))
            .await,
        1.0
    );
    assert_eq!(t.metric("roam_connections", None).await, 3.0);
}

/// A socket that subscribes and then never reads again.
async fn connect_and_never_read(
    t: &TestServer,
    user: &str,
    room: &str,
    since: u64,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let tcp = sock
        .connect(t.server().local_addr())
        .await
        .expect("tcp connect");
    let mut req = t.ws_url().into_client_request().expect("request");
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", t.token(user))).expect("header"),
    );
    let (mut raw, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("handshake");
    let mut frames = 0;
    raw.send(Message::Text(
        json!({"v": 1, "type": "subscribe", "id": "s", "rooms": [{"room": room, "since": since}]})
            .to_string()
            .into(),
    ))
    .await
    .expect("subscribe");
    // hello, ack, caught_up
    while frames < 3 {
        let m = tokio::time::timeout(WAIT, raw.next())
            .await
            .expect("frame in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = m {
            let f: Value = serde_json::from_str(&t).expect("json");
            frames += 1;
            if frames == 3 {
                assert_eq!(f["type"], "caught_up", "{f}");
            }
        }
    }
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected_and_the_server_goes_on() {
    // A short grace: the flood below is bounded in messages, not in time, and must outlast the
    // grace however fast the server commits and writes.
    let t = TestServer::start_with(|c| {
        c.send_queue = 16;
        c.slow_consumer_grace_ms = 500;
    })
    .await;
    let alice = t.as_user("alice");
    alice.create_room("flood", "public").await;
    let mut stuck = connect_and_never_read(&t, "lurker", "flood", 2).await;
    let mut reader = t.ws("reader").await;
    reader.subscribe(&[("flood", 2)]).await;
    reader.until(|f| f["type"] == "caught_up").await;

    // alice floods the room with 32 KiB messages until the server gives up on the lurker.
    let mut writer = t.ws("alice").await;
    let body = "z".repeat(32 * 1024);
    let mut sent = 0u64;
    while t.metric("roam_slow_consumer_disconnects_total", None).await < 1.0 {
        assert!(sent < 600, "the lurker was never disconnected");
        for _ in 0..8 {
            writer
                .send(
                    json!({"v": 1, "type": "mutate", "id": format!("f{sent}"), "key": key(),
                    "op": "message.send", "args": {"room": "flood", "body": body}}),
                )
                .await;
            sent += 1;
        }
        for _ in 0..8 {
            let ack = writer
                .until(|f| f["type"] == "ack" || f["type"] == "error")
                .await;
            assert_eq!(ack["type"], "ack", "{}", ack["code"]);
        }
        // The reader keeps up and never trips the limit.
        reader.events_until("flood", 2 + sent).await;
    }
    assert_eq!(
        t.metric("roam_slow_consumer_disconnects_total", None).await,
        1.0,
        "only the lurker"
    );

    // The lurker's connection ends: whatever was already in flight, then a 4008 close.
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match stuck.next().await {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .expect("the lurker's socket ends");
    // The close frame follows what was pending; the server waits a bounded time (2 s) for
    // the client to read that far, which it does here at once.
    assert_eq!(end, Some(4008));
    // Its server side is gone: only alice and the reader remain.
    let deadline = tokio::time::Instant::now() + WAIT;
    while t.metric("roam_connections", None).await != 2.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lurker still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The server still serves everyone else.
    let r = t.anon().get("/healthz").await;
    assert_eq!(r.status, 200);
    alice.say("flood", "after the flood").await;
    let ev = reader
        .until(|f| f["type"] == "event" && f["data"]["body"] == "after the flood")
        .await;
    assert_eq!(ev["seq"], 3 + sent);
    // The lurker reconnects and recovers what it missed.
    let mut fresh = t.ws("lurker").await;
    let ack = fresh.subscribe(&[("flood", 2 + sent)]).await;
    assert_eq!(ack["result"]["rooms"][0]["status"], "ok");
    let evs = fresh.events_until("flood", 3 + sent).await;
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["data"]["body"], "after the flood");
}

#[tokio::test]
async fn query_parameters_are_validated() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("r", "public").await;
    alice
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/r/documents/d",
            Some(json!({"base_version": 0, "content": "x"})),
        )
        .await;
    for path in [
        "/v1/rooms?limit=0",
        "/v1/rooms?limit=201",
        "/v1/rooms?limit=-1",
        "/v1/rooms?limit=ten",
        "/v1/rooms?bogus=1",
        "/v1/rooms?kind=secret",
        "/v1/rooms?joined=maybe",
        "/v1/rooms?cursor=a%20b",
        "/v1/rooms/r/messages?limit=0",
        "/v1/rooms/r/messages?limit=201",
        "/v1/rooms/r/messages?sort=seq",
        "/v1/rooms/r/messages?before=abc",
        "/v1/rooms/r/members?limit=0",
        "/v1/rooms/r/members?order=desc",
        "/v1/rooms/r/events?limit=0",
        "/v1/rooms/r/events?limit=1001",
        "/v1/rooms/r/documents/d/history?limit=201",
        "/v1/rooms/r/activity?period=hour",
        "/v1/rooms/r/activity",
        "/v1/rooms/r/activity?period=day&from=10&to=5",
        "/v1/users?limit=0",
        "/v1/users?limit=201",
        "/v1/users?sort=password",
        "/v1/users?sort=id;DROP%20TABLE%20users",
        "/v1/users?sort=created_at&order=sideways",
        "/v1/users?cursor=zz",
        "/v1/users?cursor=nothex",
        "/v1/users?page=2",
        "/v1/notifications?limit=0",
        "/v1/notifications?unread=yes",
        "/v1/invitations?limit=999",
        "/v1/presence?users=a&extra=1",
    ] {
        let r = alice.get(path).await;
        assert_eq!(r.status, 400, "{path}: {:?}", r.body);
        assert_eq!(r.code(), "invalid_input", "{path}: {:?}", r.body);
    }
    for path in [
        "/v1/rooms?limit=1",
        "/v1/rooms?limit=200",
        "/v1/rooms/r/messages?limit=200",
        "/v1/rooms/r/events?limit=1000",
        "/v1/users?sort=last_seen&order=desc&limit=200",
        "/v1/notifications?unread=true&limit=1",
    ] {
        let r = alice.get(path).await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
    }
    let r = alice.get("/v1/rooms?limit=1").await;
    assert_eq!(r.body["items"].as_array().expect("items").len(), 1);
}

#[tokio::test]
async fn mutations_need_an_idempotency_key() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("r", "public").await;
    use reqwest::Method as M;
    for (method, path, body) in [
        (
            M::POST,
            "/v1/rooms",
            Some(json!({"room": "r2", "kind": "public"})),
        ),
        (M::POST, "/v1/rooms/r/messages", Some(json!({"body": "x"}))),
        (M::PATCH, "/v1/rooms/r", Some(json!({"title": "t"}))),
        (M::DELETE, "/v1/rooms/r", None),
        (
            M::PUT,
            "/v1/rooms/r/documents/d",
            Some(json!({"base_version": 0, "content": "c"})),
        ),
        (
            M::POST,
            "/v1/rooms/r/invitations",
            Some(json!({"user": "bob"})),
        ),
        (M::POST, "/v1/notifications/read-all", None),
    ] {
        let r = alice.req(method.clone(), path, None, body.clone()).await;
        assert_eq!(r.status, 400, "{method} {path}: {:?}", r.body);
        assert_eq!(r.code(), "invalid_input");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Idempotency-Key")),
            "{:?}",
            r.body
        );
        // An empty or oversized key is refused the same way.
        let long = "k".repeat(129);
        for k in ["", long.as_str()] {
            let r = alice.req(method.clone(), path, Some(k), body.clone()).await;
            assert_eq!(r.status, 400, "{method} {path} key {k:?}: {:?}", r.body);
        }
    }
    let room = alice.get("/v1/rooms/r").await;
    assert_eq!(room.status, 200, "the room was not deleted");
    assert_eq!(room.body["title"], "");
    assert_eq!(room.body["head_seq"], 2);
    assert_eq!(alice.get("/v1/rooms/r2").await.status, 404);
}

#[tokio::test]
async fn bodies_over_the_limit_and_malformed_bodies_are_refused() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("r", "public").await;
    // 1.5 MiB of JSON.
    let big = json!({"body": "x".repeat(1536 * 1024)});
    let r = alice.post("/v1/rooms/r/messages", big).await;
    assert_eq!(r.status, 413, "{:?}", r.body);
    assert_eq!(r.code(), "payload_too_large");
    let r = alice
        .post(
            "/v1/rooms",
            json!({"room": "r2", "kind": "public", "metadata": {"blob": "y".repeat(1100 * 1024)}}),
        )
        .await;
    assert_eq!(r.status, 413, "{:?}", r.body);
    // message.import takes up to 8 MiB.
    let bodies: Vec<String> = (0..40).map(|_| "i".repeat(50 * 1024)).collect();
    let r = alice
        .post("/v1/rooms/r/messages/import", json!({"bodies": bodies}))
        .await;
    assert_eq!(r.status, 200, "2 MiB import: {:?}", r.body["error"]);
    assert_eq!(r.body["imported"], 40);
    let bodies: Vec<String> = (0..140).map(|_| "i".repeat(60 * 1024)).collect();
    let r = alice
        .post("/v1/rooms/r/messages/import", json!({"bodies": bodies}))
        .await;
    assert_eq!(r.status, 413, "8.2 MiB import: {:?}", r.body["error"]);

    // Malformed JSON, a wrong type, an unknown field, no JSON content type.
    let raw = |body: &'static str, content_type: &'static str| {
        alice
            .builder(reqwest::Method::POST, "/v1/rooms/r/messages")
            .header("idempotency-key", key())
            .header("content-type", content_type)
            .body(body)
    };
    for (body, ct) in [
        ("{\"body\": ", "application/json"),
        ("{\"body\": 42}", "application/json"),
        ("{\"body\": \"x\", \"sender\": \"bob\"}", "application/json"),
        ("{\"body\": \"x\"}", "text/plain"),
        ("", "application/json"),
    ] {
        let r = crate::fixtures::Resp::read(raw(body, ct).send().await.expect("send")).await;
        assert_eq!(r.status, 400, "{body} ({ct}): {:?}", r.body);
        assert_eq!(r.code(), "invalid_input", "{body}: {:?}", r.body);
    }
    assert_eq!(alice.all_messages("r").await.len(), 40);
    // Unknown routes answer a JSON not_found.
    let r = alice.get("/v1/nothing/here").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "not_found");
}
