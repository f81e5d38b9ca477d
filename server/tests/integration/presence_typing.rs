//! Presence aggregated over a user's devices, and typing indicators with server-side expiry
//! (protocol §5).

use std::time::Duration;

use serde_json::{json, Value};

use crate::fixtures::{now_ms, Api, TestServer, Ws, WAIT};

async fn presence(api: &Api, users: &str) -> Value {
    let r = api.get(&format!("/v1/presence?users={users}")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

/// Polls `GET /v1/presence` until `pred` holds for the first user.
async fn presence_until(api: &Api, user: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let p = presence(api, user).await;
        if pred(&p[0]) {
            return p[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence of {user} never matched: {p}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn close(mut ws: Ws) {
    ws.stream.close(None).await.expect("close");
    ws.closed().await;
}

fn presence_frames_of<'a>(frames: &'a [Value], user: &str) -> Vec<&'a Value> {
    frames
        .iter()
        .filter(|f| f["type"] == "presence" && f["user"] == user)
        .collect()
}

#[tokio::test]
async fn presence_is_aggregated_over_a_users_devices() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let carol_api = t.as_user("carol");
    alice.create_room("team", "public").await;
    carol_api.join("team").await;
    let mut carol = t.ws("carol").await;
    carol.subscribe(&[("team", 3)]).await;
    carol.until(|f| f["type"] == "caught_up").await;

    // Never seen: offline, no last_seen.
    let p = presence(&carol_api, "alice").await;
    assert_eq!(
        p,
        json!([{"user": "alice", "status": "offline", "devices": 0}])
    );

    let before = now_ms();
    let phone = t.ws("alice").await;
    let f = carol.until(|f| f["type"] == "presence").await;
    assert_eq!(f["user"], "alice");
    assert_eq!(f["status"], "online");
    assert_eq!(f["devices"], 1);
    assert!(f["last_seen"].as_i64().is_some_and(|t| t >= before));
    let p = presence(&carol_api, "alice").await;
    assert_eq!(p[0]["status"], "online");
    assert_eq!(p[0]["devices"], 1);

    // A second device changes nothing anyone sees but the device count.
    let laptop = t.ws("alice").await;
    let p = presence(&carol_api, "alice").await;
    assert_eq!(p[0]["status"], "online");
    assert_eq!(p[0]["devices"], 2);
    assert_eq!(presence_frames_of(&carol.drain().await, "alice").len(), 0);

    // One device goes: still online.
    close(phone).await;
    let p = presence_until(&carol_api, "alice", |p| p["devices"] == 1).await;
    assert_eq!(p["status"], "online");
    assert_eq!(presence_frames_of(&carol.drain().await, "alice").len(), 0);

    // The last one goes: offline, with the time it was last seen.
    let gone = now_ms();
    close(laptop).await;
    let f = carol
        .until(|f| f["type"] == "presence" && f["user"] == "alice")
        .await;
    assert_eq!(f["status"], "offline");
    assert_eq!(f["devices"], 0);
    let seen = f["last_seen"].as_i64().expect("last_seen");
    assert!(seen >= gone, "{seen} >= {gone}");
    let p = presence(&carol_api, "alice,carol,nobody").await;
    assert_eq!(p[0]["user"], "alice");
    assert_eq!(p[0]["status"], "offline");
    assert_eq!(p[0]["devices"], 0);
    assert_eq!(p[0]["last_seen"], seen, "REST and the frame agree");
    assert_eq!(p[1]["user"], "carol");
    assert_eq!(p[1]["status"], "online");
    assert_eq!(p[1]["devices"], 1);
    assert_eq!(
        p[2],
        json!({"user": "nobody", "status": "offline", "devices": 0})
    );

    // Bad queries.
    for q in ["", "a%20b", &vec!["u"; 501].join(",")] {
        let r = carol_api.get(&format!("/v1/presence?users={q}")).await;
        assert_eq!(r.status, 400, "{q}: {:?}", r.body);
        assert_eq!(r.code(), "invalid_input");
    }
    let r = carol_api.get("/v1/presence").await;
    assert_eq!(r.status, 400, "{:?}", r.body);
}

#[tokio::test]
async fn away_only_when_every_device_says_so() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("team", "public").await;
    t.as_user("carol").join("team").await;
    let mut phone = t.ws("alice").await;
    let mut laptop = t.ws("alice").await;
    let mut carol = t.ws("carol").await;
    carol.subscribe(&[("team", 3)]).await;
    carol.until(|f| f["type"] == "caught_up").await;
    // Subscribing brings the presence of the room's connected members.
    let snapshot = carol
        .until(|f| f["type"] == "presence" && f["user"] == "alice")
        .await;
    assert_eq!(snapshot["status"], "online");
    assert_eq!(snapshot["devices"], 2);

    let ack = phone
        .mutate("presence.set", json!({"status": "away"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["result"]["user"], "alice");
    assert_eq!(
        ack["result"]["status"], "online",
        "the laptop is still active"
    );
    assert_eq!(ack["result"]["devices"], 2);
    assert_eq!(presence_frames_of(&carol.drain().await, "alice").len(), 0);

    let ack = laptop
        .mutate("presence.set", json!({"status": "away"}))
        .await;
    assert_eq!(ack["result"]["status"], "away");
    let f = carol
        .until(|f| f["type"] == "presence" && f["user"] == "alice")
        .await;
    assert_eq!(f["status"], "away");
    assert_eq!(f["devices"], 2);
    let p = presence(&t.as_user("carol"), "alice").await;
    assert_eq!(p[0]["status"], "away");

    let ack = phone
        .mutate("presence.set", json!({"status": "online"}))
        .await;
    assert_eq!(ack["result"]["status"], "online");
    let f = carol
        .until(|f| f["type"] == "presence" && f["user"] == "alice")
        .await;
    assert_eq!(f["status"], "online");

    // A device cannot declare itself offline, and REST has no presence.set.
    let err = phone
        .mutate("presence.set", json!({"status": "offline"}))
        .await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "invalid_input");
    let r = alice.post("/v1/presence", json!({"status": "away"})).await;
    assert!(r.status == 404 || r.status == 405, "{:?}", r);
}

#[tokio::test]
async fn typing_is_relayed_and_expires_on_the_server() {
    let t = TestServer::start().await;
    let alice_api = t.as_user("alice");
    alice_api.create_room("team", "public").await;
    t.as_user("bob").join("team").await;
    let mut alice = t.ws("alice").await;
    let mut bob = t.ws("bob").await;
    alice.subscribe(&[("team", 3)]).await;
    alice.until(|f| f["type"] == "caught_up").await;
    bob.subscribe(&[("team", 3)]).await;
    bob.until(|f| f["type"] == "caught_up").await;

    alice
        .send(json!({"v": 1, "type": "typing", "room": "team", "typing": true}))
        .await;
    let f = bob.until(|f| f["type"] == "typing").await;
    assert_eq!(
        f,
        json!({"v": 1, "type": "typing", "room": "team", "user": "alice", "typing": true})
    );
    // Nobody said stop: the server does, after the typing timeout (300 ms in tests).
    let f = bob.until(|f| f["type"] == "typing").await;
    assert_eq!(
        f,
        json!({"v": 1, "type": "typing", "room": "team", "user": "alice", "typing": false})
    );
    // The typist never hears her own indicator.
    let own: Vec<Value> = alice
        .drain()
        .await
        .into_iter()
        .filter(|f| f["type"] == "typing")
        .collect();
    assert_eq!(own, Vec::<Value>::new());

    // An explicit stop is relayed once, and no late expiry follows it.
    alice
        .send(json!({"v": 1, "type": "typing", "room": "team", "typing": true}))
        .await;
    alice
        .send(json!({"v": 1, "type": "typing", "room": "team", "typing": false}))
        .await;
    assert_eq!(bob.until(|f| f["type"] == "typing").await["typing"], true);
    assert_eq!(bob.until(|f| f["type"] == "typing").await["typing"], false);
    tokio::time::sleep(Duration::from_millis(450)).await;
    let late: Vec<Value> = bob
        .drain()
        .await
        .into_iter()
        .filter(|f| f["type"] == "typing")
        .collect();
    assert_eq!(late, Vec::<Value>::new());
    // A stop nobody saw start is not relayed.
    alice
        .send(json!({"v": 1, "type": "typing", "room": "team", "typing": false}))
        .await;
    alice.drain().await;
    let stray: Vec<Value> = bob
        .drain()
        .await
        .into_iter()
        .filter(|f| f["type"] == "typing")
        .collect();
    assert_eq!(stray, Vec::<Value>::new());
}

#[tokio::test]
async fn typing_ends_when_the_typist_disconnects() {
    let t = TestServer::start_with(|c| c.typing_timeout_ms = 60_000).await;
    t.as_user("alice").create_room("team", "public").await;
    t.as_user("bob").join("team").await;
    let mut bob = t.ws("bob").await;
    bob.subscribe(&[("team", 3)]).await;
    bob.until(|f| f["type"] == "caught_up").await;
    let mut alice = t.ws("alice").await;
    alice
        .send(json!({"v": 1, "type": "typing", "room": "team", "typing": true}))
        .await;
    assert_eq!(bob.until(|f| f["type"] == "typing").await["typing"], true);
    close(alice).await;
    let f = bob.until(|f| f["type"] == "typing").await;
    assert_eq!(f["user"], "alice");
    assert_eq!(f["typing"], false);
}

#[tokio::test]
async fn typing_is_refused_from_non_members_and_rate_limited() {
    let t = TestServer::start().await;
    t.as_user("alice").create_room("team", "public").await;
    t.as_user("alice").create_room("hidden", "private").await;
    t.as_user("bob").join("team").await;
    let mut bob = t.ws("bob").await;
    bob.subscribe(&[("team", 3)]).await;
    bob.until(|f| f["type"] == "caught_up").await;

    // Mallory can read the public room but is not a member: she cannot type there.
    let mut mallory = t.ws("mallory").await;
    for room in ["team", "hidden", "nope"] {
        mallory
            .send(json!({"v": 1, "type": "typing", "room": room, "typing": true}))
            .await;
        let f = mallory.next().await;
        assert_eq!(f["type"], "error", "{room}: {f}");
        assert_eq!(f["code"], "forbidden", "{room}: {f}");
        assert!(f.get("id").is_none());
    }
    mallory
        .send(json!({"v": 1, "type": "typing", "room": "not a room", "typing": true}))
        .await;
    assert_eq!(mallory.next().await["code"], "invalid_input");
    let relayed: Vec<Value> = bob
        .drain()
        .await
        .into_iter()
        .filter(|f| f["type"] == "typing")
        .collect();
    assert_eq!(relayed, Vec::<Value>::new());

    // Five typing frames a second per socket; the sixth is refused.
    let mut alice = t.ws("alice").await;
    for _ in 0..6 {
        alice
            .send(json!({"v": 1, "type": "typing", "room": "team", "typing": true}))
            .await;
    }
    let f = alice.until(|f| f["type"] == "error").await;
    assert_eq!(f["code"], "rate_limited");
    assert!(f["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{f}");
    let relayed = bob
        .drain()
        .await
        .into_iter()
        .filter(|f| f["type"] == "typing" && f["typing"] == true)
        .count();
    assert_eq!(relayed, 5);
}

#[tokio::test]
async fn last_seen_survives_a_restart() {
    let t = TestServer::start().await;
    // carol may see bob's presence: they share a room.
    t.as_user("carol").create_room("team", "public").await;
    t.as_user("bob").join("team").await;
    let connected = now_ms();
    let mut bob = t.ws("bob").await;
    assert_eq!(bob.call(json!({"type": "ping"})).await["type"], "pong");
    // The server goes down while bob is connected: his socket is closed and his last-seen kept.
    let t = t.restart().await;
    assert_eq!(bob.closed().await, Some(1001));
    let p = presence(&t.as_user("carol"), "bob").await;
    assert_eq!(p[0]["status"], "offline");
    assert_eq!(p[0]["devices"], 0);
    let seen = p[0]["last_seen"].as_i64().expect("last_seen kept");
    assert!(seen >= connected && seen <= now_ms(), "{seen}");
}
