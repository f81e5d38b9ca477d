//! Permissions that hold whatever the timing: a write authorized before its author's ban never
//! commits after it, and a socket shows no more than REST would show the same user.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fixtures::TestServer;

/// A phone pipelines a burst of messages; its owner bans it meanwhile. Every message is either
/// refused or committed before the ban, never after: the membership check belongs to the
/// write's transaction, ordered with the ban's commit.
#[tokio::test]
async fn no_message_commits_after_its_authors_ban() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("club", "public").await;
    t.as_user("bob").join("club").await;
    let mut bob = t.ws("bob").await;

    const SENT: usize = 400;
    let mut ids = Vec::with_capacity(SENT);
    for i in 0..SENT {
        let id = bob.id();
        let frame = json!({
            "v": 1, "type": "mutate", "id": id, "key": uuid::Uuid::now_v7().to_string(),
            "op": "message.send", "args": {"room": "club", "body": format!("m{i}")},
        });
        bob.send(frame).await;
        ids.push(id);
        if i == 20 {
            let r = alice
                .post("/v1/rooms/club/bans", json!({"user": "bob"}))
                .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
        }
    }
    // Every frame is answered: acks for what committed, `forbidden` for the rest.
    let mut answered = 0;
    let mut refused = 0;
    while answered < SENT {
        let f = bob.next().await;
        if f["type"] == "ack" || f["type"] == "error" {
            assert!(ids.contains(&f["id"].as_str().unwrap_or_default().to_owned()));
            answered += 1;
            if f["type"] == "error" {
                assert_eq!(f["code"], "forbidden", "{f}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "the ban refused the rest of the burst");

    let events = alice.all_events("club").await;
    let ban = events
        .iter()
        .find(|e| e["kind"] == "member_banned")
        .and_then(|e| e["seq"].as_u64())
        .expect("the ban's event");
    let late: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "message_created" && e["seq"].as_u64() > Some(ban))
        .collect();
    assert!(
        late.is_empty(),
        "{} messages of bob committed after his ban (seq {ban}): first {:?}",
        late.len(),
        late.first()
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["kind"] == "message_created")
            .count(),
        SENT - refused
    );
}

/// A user may read a public room without joining it, over REST and the socket alike. REST
/// shows presence only of users who share a room with the caller; so does the socket.
#[tokio::test]
async fn a_reader_who_is_not_a_member_gets_no_presence() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("lobby", "public").await;
    // mallory shares no room with alice: REST shows alice as unknown to her.
    let r = t.as_user("mallory").get("/v1/presence?users=alice").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body[0]["status"], "offline", "{:?}", r.body);
    assert_eq!(r.body[0]["last_seen"], Value::Null, "{:?}", r.body);

    let mut mallory = t.ws("mallory").await;
    mallory.subscribe(&[("lobby", 0)]).await;
    mallory.until(|f| f["type"] == "caught_up").await;
    // bob is a member and follows too: he is the control.
    t.as_user("bob").join("lobby").await;
    let mut bob = t.ws("bob").await;
    bob.subscribe(&[("lobby", 0)]).await;
    bob.until(|f| f["type"] == "caught_up").await;

    // alice comes online and goes away: bob hears it, mallory does not.
    let mut phone = t.ws("alice").await;
    let ack = phone
        .mutate("presence.set", json!({"status": "away"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let seen = bob
        .until(|f| f["type"] == "presence" && f["user"] == "alice" && f["status"] == "away")
        .await;
    assert_eq!(seen["room"], "lobby");
    // Whatever presence the server queued for mallory has reached her by her pong.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let frames = mallory.drain().await;
    assert!(
        frames.iter().all(|f| f["type"] != "presence"),
        "a non-member saw presence: {frames:?}"
    );
}

/// A mutation that names a predecessor (`after`) is applied only once that one is: otherwise
/// it is answered `out_of_order` and nothing changes, and the same frame passes once the
/// predecessor is applied. A replay of an applied mutation passes whatever it names.
#[tokio::test]
async fn a_mutation_waits_for_the_one_it_follows() {
    let t = TestServer::start().await;
    t.as_user("alice").create_room("line", "public").await;
    let mut ws = t.ws("alice").await;
    let send = |key: &str, after: Option<&str>, body: &str| {
        let mut f = json!({
            "type": "mutate", "key": key, "op": "message.send",
            "args": {"room": "line", "body": body},
        });
        if let Some(a) = after {
            f["after"] = json!(a);
        }
        f
    };
    let first = uuid::Uuid::now_v7().to_string();
    let second = uuid::Uuid::now_v7().to_string();

    let refused = ws.call(send(&second, Some(&first), "two")).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "out_of_order", "{refused}");
    assert!(t.as_user("alice").all_messages("line").await.is_empty());

    let ack = ws.call(send(&first, None, "one")).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let ack = ws.call(send(&second, Some(&first), "two")).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let bodies: Vec<Value> = t
        .as_user("alice")
        .all_messages("line")
        .await
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(bodies, [json!("one"), json!("two")]);

    // A malformed predecessor key is refused like a malformed key.
    let bad = ws
        .call(send(&uuid::Uuid::now_v7().to_string(), Some(""), "x"))
        .await;
    assert_eq!(bad["code"], "invalid_input", "{bad}");
}

/// `hello` is a socket's first frame even while its user's other devices keep the server busy
/// with frames for every socket of the user (read markers here; memberships, notifications).
#[tokio::test]
async fn hello_comes_first_while_frames_for_the_user_are_flowing() {
    let t = TestServer::start().await;
    let bob = t.as_user("bob");
    bob.create_room("desk", "public").await;
    let m = bob.say("desk", "hi").await;
    let seq = m["seq"].as_u64().expect("seq");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let bob = t.as_user("bob");
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 5_000 {
                // Re-marking the same seq answers the marker and tells every socket of bob.
                bob.post("/v1/rooms/desk/read", json!({"seq": seq})).await;
                n += 1;
            }
        })
    };
    for _ in 0..40 {
        // `ws` panics unless the first frame is `hello`.
        let ws = t.ws("bob").await;
        drop(ws);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.await.expect("marker task");
}
