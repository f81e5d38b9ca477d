//! The WebSocket protocol itself: frame parsing and errors, limits and close codes, ping,
//! subscriptions, acks and event order (protocol §2).

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::fixtures::{RawSocket, TestServer, WAIT};

/// Sends raw text and returns the next frame.
async fn answer(ws: &mut crate::fixtures::Ws, text: &str) -> Value {
    ws.send_raw(text).await;
    ws.next().await
}

#[tokio::test]
async fn malformed_frames_get_an_error_and_the_socket_stays_usable() {
    let t = TestServer::start().await;
    t.as_user("alice").create_room("general", "public").await;
    let mut ws = t.ws("alice").await;

    let cases: &[(&str, &str, Option<&str>)] = &[
        ("{not json", "invalid_input", None),
        ("", "invalid_input", None),
        (r#"{"v":1}"#, "invalid_input", None),
        (
            r#"{"v":1,"type":"dance","id":"d1"}"#,
            "invalid_input",
            Some("d1"),
        ),
        (
            r#"{"v":1,"type":"hello","id":"h1"}"#,
            "invalid_input",
            Some("h1"),
        ),
        (
            r#"{"type":"ping","id":"p0"}"#,
            "unsupported_version",
            Some("p0"),
        ),
        (
            r#"{"v":2,"type":"ping","id":"p2"}"#,
            "unsupported_version",
            Some("p2"),
        ),
        (
            r#"{"v":"1","type":"ping","id":"p3"}"#,
            "unsupported_version",
            Some("p3"),
        ),
        (r#"{"v":1,"type":"ping"}"#, "invalid_input", None),
        (
            r#"{"v":1,"type":"mutate","id":"m1","op":"message.send","args":{"room":"general","body":"no key"}}"#,
            "invalid_input",
            Some("m1"),
        ),
        (
            r#"{"v":1,"type":"mutate","id":"m2","key":"k2","op":"room.explode","args":{}}"#,
            "invalid_input",
            Some("m2"),
        ),
        (
            r#"{"v":1,"type":"mutate","id":"m3","key":"k3","op":"message.send","args":{"room":"general"}}"#,
            "invalid_input",
            Some("m3"),
        ),
        (
            r#"{"v":1,"type":"mutate","id":"m4","key":"k4","op":"message.send","args":{"room":"general","body":""}}"#,
            "invalid_input",
            Some("m4"),
        ),
        (
            r#"{"v":1,"type":"mutate","id":"m5","key":"has space","op":"message.send","args":{"room":"general","body":"x"}}"#,
            "invalid_input",
            Some("m5"),
        ),
        (
            r#"{"v":1,"type":"subscribe","id":"s1","rooms":"general"}"#,
            "invalid_input",
            Some("s1"),
        ),
        (
            r#"{"v":1,"type":"typing","room":"general"}"#,
            "invalid_input",
            None,
        ),
    ];
    for (text, code, id) in cases {
        let f = answer(&mut ws, text).await;
        assert_eq!(f["type"], "error", "{text}: {f}");
        assert_eq!(f["code"], *code, "{text}: {f}");
        assert_eq!(f["v"], 1, "{text}: {f}");
        match id {
            Some(id) => assert_eq!(f["id"], *id, "{text}: {f}"),
            None => assert!(f.get("id").is_none(), "{text}: {f}"),
        }
        assert!(
            f["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{text}: {f}"
        );
    }
    // Still usable, and nothing was applied.
    let pong = ws.call(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(t.as_user("alice").all_messages("general").await.len(), 0);
    let ack = ws
        .mutate("message.send", json!({"room": "general", "body": "fine"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
}

#[tokio::test]
async fn ping_is_answered_with_its_id() {
    let t = TestServer::start().await;
    let mut ws = t.ws("alice").await;
    ws.send_raw(r#"{"v":1,"type":"ping","id":"abc-1"}"#).await;
    ws.send_raw(r#"{"v":1,"type":"ping","id":"abc-2"}"#).await;
    assert_eq!(
        ws.next().await,
        json!({"v": 1, "type": "pong", "id": "abc-1"})
    );
    assert_eq!(
        ws.next().await,
        json!({"v": 1, "type": "pong", "id": "abc-2"})
    );
    // WebSocket-level pings are answered by pongs too.
    ws.stream
        .send(Message::Ping(b"hb".to_vec().into()))
        .await
        .expect("ping");
    let got = tokio::time::timeout(WAIT, async {
        loop {
            match ws.stream.next().await {
                Some(Ok(Message::Pong(p))) => return p.to_vec(),
                Some(Ok(_)) => continue,
                other => panic!("socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("pong in time");
    assert_eq!(got, b"hb");
}

#[tokio::test]
async fn a_binary_frame_closes_the_socket_with_1003() {
    let t = TestServer::start().await;
    let mut ws = t.ws("alice").await;
    ws.stream
        .send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .expect("send binary");
    assert_eq!(ws.closed().await, Some(1003));
    // The server goes on.
    let mut again = t.ws("alice").await;
    assert_eq!(again.call(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn a_frame_over_one_mebibyte_closes_the_socket_and_others_go_on() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("general", "public").await;
    let mut other = t.ws("bob").await;
    other.subscribe(&[("general", 2)]).await;
    other.until(|f| f["type"] == "caught_up").await;

    let mut ws = t.ws("alice").await;
    let body = "x".repeat(2 * 1024 * 1024);
    let frame = json!({"v": 1, "type": "mutate", "id": "big", "key": "k-big",
        "op": "message.send", "args": {"room": "general", "body": body}})
    .to_string();
    // The write itself may fail once the server has closed the connection.
    let _ = ws.try_send_raw(&frame).await;
    let code = ws.closed().await;
    assert!(
        code.is_none() || code == Some(1009),
        "closed with 1009 or dropped, got {code:?}"
    );
    // Just under the limit is read (and refused as a too-long body, but the socket lives).
    let mut ws = t.ws("alice").await;
    let body = "y".repeat(1024 * 1024 - 200);
    let frame = json!({"v": 1, "type": "mutate", "id": "near", "key": "k-near",
        "op": "message.send", "args": {"room": "general", "body": body}})
    .to_string();
    assert!(frame.len() < 1024 * 1024);
    ws.send_raw(&frame).await;
    let f = ws.next().await;
    assert_eq!(f["type"], "error", "{:?}", f["code"]);
    assert_eq!(f["code"], "invalid_input");
    assert_eq!(f["id"], "near");

    // Others were not disturbed.
    alice.say("general", "still here").await;
    let ev = other.until(|f| f["type"] == "event").await;
    assert_eq!(ev["data"]["body"], "still here");
    assert_eq!(alice.all_messages("general").await.len(), 1);
}

#[tokio::test]
async fn unsubscribe_stops_events() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("a", "public").await;
    alice.create_room("b", "public").await;
    let mut ws = t.ws("bob").await;
    let ack = ws.subscribe(&[("a", 2), ("b", 2)]).await;
    assert_eq!(ack["type"], "ack");
    ws.until(|f| f["type"] == "caught_up" && f["room"] == "b")
        .await;
    alice.say("a", "one").await;
    let ev = ws.until(|f| f["type"] == "event").await;
    assert_eq!(ev["room"], "a");
    assert_eq!(ev["seq"], 3);

    let ack = ws
        .call(json!({"type": "unsubscribe", "rooms": ["a"]}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["result"], json!({}));
    alice.say("a", "two").await;
    alice.say("b", "in b").await;
    // Everything already queued for bob: only b's event.
    let queued = ws.drain().await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0]["room"], "b");
    assert_eq!(queued[0]["data"]["body"], "in b");
    // Unsubscribing from a room one does not follow is fine.
    let ack = ws
        .call(json!({"type": "unsubscribe", "rooms": ["nowhere"]}))
        .await;
    assert_eq!(ack["type"], "ack");
}

#[tokio::test]
async fn subscribing_to_rooms_one_may_not_read() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("priv", "private").await;
    alice.create_room("prot", "protected").await;
    alice.create_room("pub", "public").await;
    alice.say("priv", "secret").await;
    alice.say("prot", "members only").await;
    let mut ws = t.ws("mallory").await;
    let ack = ws
        .subscribe(&[("priv", 0), ("prot", 0), ("pub", 0), ("nope", 0)])
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(
        ack["result"]["rooms"],
        json!([
            {"room": "priv", "status": "not_found", "head_seq": 0},
            {"room": "prot", "status": "forbidden", "head_seq": 0},
            {"room": "pub", "status": "ok", "head_seq": 2},
            {"room": "nope", "status": "not_found", "head_seq": 0},
        ])
    );
    // Only the public room's events come, then its caught_up; nothing from the others, ever.
    let mut got = Vec::new();
    loop {
        let f = ws.next().await;
        let done = f["type"] == "caught_up";
        got.push(f);
        if done {
            break;
        }
    }
    assert!(got.iter().all(|f| f["room"] == "pub"), "{got:?}");
    assert_eq!(got.last().expect("caught_up")["seq"], 2);
    alice.say("priv", "more secret").await;
    alice.say("prot", "more members only").await;
    assert_eq!(ws.drain().await, Vec::<Value>::new());
    // Too many rooms in one frame.
    let rooms: Vec<(String, u64)> = (0..501).map(|i| (format!("r{i}"), 0)).collect();
    let rooms: Vec<(&str, u64)> = rooms.iter().map(|(r, s)| (r.as_str(), *s)).collect();
    let r = ws.subscribe(&rooms).await;
    assert_eq!(r["type"], "error");
    assert_eq!(r["code"], "invalid_input");
}

#[tokio::test]
async fn acks_and_events_of_pipelined_mutations_keep_the_order_sent() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("line", "public").await;
    let mut ws = t.ws("alice").await;
    ws.subscribe(&[("line", 2)]).await;
    ws.until(|f| f["type"] == "caught_up").await;
    // Ten mutations sent back to back, without waiting for any answer.
    for i in 0..10 {
        ws.send(json!({"v": 1, "type": "mutate", "id": format!("m{i}"),
            "key": format!("key-{i}"), "op": "message.send",
            "args": {"room": "line", "body": format!("n{i}")}}))
            .await;
    }
    let mut acks: Vec<(String, u64)> = Vec::new();
    let mut events: Vec<(u64, String)> = Vec::new();
    while acks.len() < 10 || events.len() < 10 {
        let f = ws.next().await;
        match f["type"].as_str() {
            Some("ack") => acks.push((
                f["id"].as_str().expect("id").to_owned(),
                f["result"]["seq"].as_u64().expect("seq"),
            )),
            Some("event") => events.push((
                f["seq"].as_u64().expect("seq"),
                f["data"]["body"].as_str().expect("body").to_owned(),
            )),
            _ => panic!("unexpected frame {f}"),
        }
    }
    // Applied in the order sent: m{i} got seq 3+i, and events came in seq order.
    acks.sort();
    let expected: Vec<(String, u64)> = (0..10).map(|i| (format!("m{i}"), 3 + i)).collect();
    assert_eq!(acks, expected);
    let expected: Vec<(u64, String)> = (0..10).map(|i| (3 + i, format!("n{i}"))).collect();
    assert_eq!(events, expected);
    assert_eq!(ws.drain().await, Vec::<Value>::new());
}

#[tokio::test]
async fn an_event_carries_the_protocol_fields() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("general", "public").await;
    let mut ws = t.ws("bob").await;
    ws.subscribe(&[("general", 0)]).await;
    let first = ws.next().await;
    assert_eq!(first["type"], "event");
    assert_eq!(first["v"], 1);
    assert_eq!(first["room"], "general");
    assert_eq!(first["seq"], 1);
    assert_eq!(first["kind"], "room_created");
    assert_eq!(first["actor"], "alice");
    assert!(first["at"]
        .as_i64()
        .is_some_and(|at| at > 1_700_000_000_000));
    assert_eq!(first["data"]["name"], "general");
    let second = ws.next().await;
    assert_eq!(second["seq"], 2);
    assert_eq!(second["kind"], "member_joined");
    assert_eq!(second["data"]["user"], "alice");
    assert_eq!(second["data"]["role"], "owner");
    assert_eq!(
        ws.next().await,
        json!({"v": 1, "type": "caught_up", "room": "general", "seq": 2})
    );
}

#[tokio::test]
async fn a_silent_socket_is_closed_after_the_idle_timeout() {
    let t = TestServer::start_with(|c| {
        c.idle_timeout_secs = 1;
        c.heartbeat_ms = 400;
    })
    .await;
    let mut silent = t.ws("alice").await;
    assert_eq!(silent.hello["heartbeat_ms"], 400);
    let mut chatty = t.ws("bob").await;
    // bob pings more often than the timeout and stays; alice says nothing and is closed.
    let started = tokio::time::Instant::now();
    let closed = tokio::spawn(async move { silent.closed().await });
    while started.elapsed() < std::time::Duration::from_millis(1_600) {
        assert_eq!(chatty.call(json!({"type": "ping"})).await["type"], "pong");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert_eq!(closed.await.expect("task"), Some(1000));
    assert_eq!(chatty.call(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn a_pipelined_edit_or_reply_may_name_a_message_sent_just_before() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("chat", "public").await;
    let mut ws = t.ws("alice").await;
    // As the client core does: the send names the message, and what refers to it goes out
    // right behind it, without waiting for the ack.
    let mut frames = vec![
        json!({"op": "message.send", "args": {"room": "chat", "body": "draft", "id": "msg-1"}}),
        json!({"op": "message.edit", "args": {"room": "chat", "message": "msg-1", "body": "final"}}),
        json!({"op": "message.send", "args": {"room": "chat", "body": "re", "reply_to": "msg-1", "id": "msg-2"}}),
        json!({"op": "message.delete", "args": {"room": "chat", "message": "msg-2"}}),
    ];
    for i in 3..8 {
        frames.push(json!({"op": "message.send",
            "args": {"room": "chat", "body": "x", "id": format!("msg-{i}")}}));
        frames.push(json!({"op": "message.edit",
            "args": {"room": "chat", "message": format!("msg-{i}"), "body": format!("edited {i}")}}));
    }
    for (i, f) in frames.iter().enumerate() {
        let mut f = f.clone();
        f["v"] = json!(1);
        f["type"] = json!("mutate");
        f["id"] = json!(format!("p{i}"));
        f["key"] = json!(format!("pipelined-key-{i}"));
        ws.send(f).await;
    }
    let mut answers = std::collections::HashMap::new();
    while answers.len() < frames.len() {
        let f = ws.next().await;
        if f["type"] == "ack" || f["type"] == "error" {
            answers.insert(f["id"].as_str().expect("id").to_owned(), f);
        }
    }
    for (id, a) in &answers {
        assert_eq!(a["type"], "ack", "{id}: {a}");
    }
    assert_eq!(answers["p1"]["result"]["body"], "final");
    assert_eq!(answers["p2"]["result"]["reply_to"], "msg-1");
    assert_eq!(answers["p3"]["result"]["deleted"], true);
    let stored = alice.all_messages("chat").await;
    assert_eq!(stored.len(), 7);
    assert_eq!(stored[0]["body"], "final");
    assert_eq!(stored[1]["deleted"], true);
    for (i, m) in stored[2..].iter().enumerate() {
        assert_eq!(m["body"], format!("edited {}", i + 3));
    }
}

#[tokio::test]
async fn a_hand_made_handshake_is_answered_and_fragments_are_joined() {
    let t = TestServer::start().await;
    let mut ws = RawSocket::open(&t, "alice").await;
    assert_eq!(ws.next_json().await["type"], "hello");
    // One `ping` frame in three fragments, with a WebSocket ping between two of them.
    let text = br#"{"v":1,"type":"ping","id":"in-pieces"}"#;
    let mut bytes = RawSocket::frame(false, 1, &text[..10], true);
    bytes.extend(RawSocket::frame(true, 9, b"hb", true));
    bytes.extend(RawSocket::frame(false, 0, &text[10..20], true));
    bytes.extend(RawSocket::frame(true, 0, &text[20..], true));
    ws.send(&bytes).await;
    assert_eq!(
        ws.next().await,
        (10, b"hb".to_vec()),
        "the ping's pong first"
    );
    assert_eq!(
        ws.next_json().await,
        json!({"v": 1, "type": "pong", "id": "in-pieces"})
    );
    // A close from the client is answered with a close.
    ws.send(&RawSocket::frame(true, 8, &1000u16.to_be_bytes(), true))
        .await;
    assert_eq!(ws.close_code().await, 1000);
}

#[tokio::test]
async fn frames_that_break_the_websocket_rules_close_the_socket_with_their_code() {
    let t = TestServer::start().await;
    // Text that is not UTF-8.
    let mut ws = RawSocket::open(&t, "alice").await;
    ws.next_json().await;
    ws.send(&RawSocket::frame(true, 1, &[b'{', 0xff, 0xfe, b'}'], true))
        .await;
    assert_eq!(ws.close_code().await, 1007);
    // An unmasked client frame.
    let mut ws = RawSocket::open(&t, "alice").await;
    ws.next_json().await;
    ws.send(&RawSocket::frame(
        true,
        1,
        br#"{"v":1,"type":"ping"}"#,
        false,
    ))
    .await;
    assert_eq!(ws.close_code().await, 1002);
    // A continuation with no message before it.
    let mut ws = RawSocket::open(&t, "alice").await;
    ws.next_json().await;
    ws.send(&RawSocket::frame(true, 0, b"x", true)).await;
    assert_eq!(ws.close_code().await, 1002);
    // The server goes on.
    let mut again = t.ws("alice").await;
    assert_eq!(again.call(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn a_request_that_is_not_a_websocket_upgrade_gets_a_clear_error() {
    let t = TestServer::start().await;
    let r = t.as_user("alice").get("/v1/ws").await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.code(), "invalid_input");
    let message = r.body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("WebSocket"), "{message}");
    // A wrong version is named.
    let r = t
        .as_user("alice")
        .builder(reqwest::Method::GET, "/v1/ws")
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "8")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("Sec-WebSocket-Version"),
        "{body}"
    );
}
