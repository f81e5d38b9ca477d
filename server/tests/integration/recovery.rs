//! Recovery: "subscribe from seq N" out of the store, `reset`, live events joining the
//! catch-up without gaps or duplicates, and losing the right to read (protocol §4).

use serde_json::{json, Value};

use crate::fixtures::{Api, TestServer, Ws};

fn seq(f: &Value) -> u64 {
    f["seq"].as_u64().expect("seq")
}

/// Imports `n` messages into `room` (one transaction).
async fn import(api: &Api, room: &str, n: usize) -> Value {
    let bodies: Vec<String> = (0..n).map(|i| format!("bulk {i}")).collect();
    let r = api
        .post(
            &format!("/v1/rooms/{room}/messages/import"),
            json!({"bodies": bodies}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

/// Reads frames until the room's `caught_up`; returns the room's events before it.
async fn catch_up(ws: &mut Ws, room: &str) -> (Vec<Value>, u64) {
    let mut events = Vec::new();
    loop {
        let f = ws.next().await;
        if f["room"] != room {
            continue;
        }
        match f["type"].as_str() {
            Some("event") => events.push(f),
            Some("caught_up") => return (events, seq(&f)),
            _ => panic!("unexpected frame {f}"),
        }
    }
}

#[tokio::test]
async fn subscribe_since_n_gets_exactly_the_events_after_n() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("log", "public").await;
    for i in 0..10 {
        alice.say("log", &format!("m{i}")).await; // seqs 3..=12
    }
    let mut ws = t.ws("bob").await;
    let ack = ws.subscribe(&[("log", 5)]).await;
    assert_eq!(
        ack["result"]["rooms"],
        json!([{"room": "log", "status": "ok", "head_seq": 12}])
    );
    let (events, upto) = catch_up(&mut ws, "log").await;
    assert_eq!(upto, 12);
    assert_eq!(
        events.iter().map(seq).collect::<Vec<_>>(),
        (6..=12).collect::<Vec<_>>()
    );
    assert_eq!(events[0]["data"]["body"], "m3");
    assert_eq!(events[6]["data"]["body"], "m9");
    // Live events follow.
    alice.say("log", "live").await;
    let ev = ws.until(|f| f["type"] == "event").await;
    assert_eq!(seq(&ev), 13);
    assert_eq!(ev["data"]["body"], "live");

    // Already up to date: ok and caught_up at once.
    let mut ws2 = t.ws("carol").await;
    let ack = ws2.subscribe(&[("log", 13)]).await;
    assert_eq!(ack["result"]["rooms"][0]["status"], "ok");
    assert_eq!(ack["result"]["rooms"][0]["head_seq"], 13);
    assert_eq!(
        ws2.next().await,
        json!({"v": 1, "type": "caught_up", "room": "log", "seq": 13})
    );
    // Several rooms in one subscribe, each with its own cursor.
    alice.create_room("other", "public").await;
    let mut ws3 = t.ws("dave").await;
    let ack = ws3.subscribe(&[("log", 11), ("other", 1)]).await;
    assert_eq!(
        ack["result"]["rooms"][1],
        json!({"room": "other", "status": "ok", "head_seq": 2})
    );
    let (log_events, _) = catch_up(&mut ws3, "log").await;
    assert_eq!(log_events.iter().map(seq).collect::<Vec<_>>(), [12, 13]);
    let (other_events, _) = catch_up(&mut ws3, "other").await;
    assert_eq!(other_events.iter().map(seq).collect::<Vec<_>>(), [2]);
}

#[tokio::test]
async fn after_a_restart_old_cursors_recover_from_the_store() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("history", "public").await;
    let r = import(&alice, "history", 298).await;
    assert_eq!(r["last_seq"], 300);

    let t = t.restart().await;
    let alice = t.as_user("alice");
    let mut ws = t.ws("bob").await;
    let ack = ws.subscribe(&[("history", 5)]).await;
    assert_eq!(
        ack["result"]["rooms"],
        json!([{"room": "history", "status": "ok", "head_seq": 300}])
    );
    let (events, upto) = catch_up(&mut ws, "history").await;
    assert_eq!(upto, 300);
    assert_eq!(
        events.iter().map(seq).collect::<Vec<_>>(),
        (6..=300).collect::<Vec<_>>()
    );
    assert!(events.iter().all(|e| e["kind"] == "message_created"));
    assert_eq!(events[0]["data"]["body"], "bulk 3");
    assert_eq!(events[294]["data"]["body"], "bulk 297");
    // Sequence numbers carry on after the restart.
    let m = alice.say("history", "after restart").await;
    assert_eq!(m["seq"], 301);
    let ev = ws.until(|f| f["type"] == "event").await;
    assert_eq!(seq(&ev), 301);
    // The REST event log agrees.
    let page = alice
        .get("/v1/rooms/history/events?after=295&limit=3")
        .await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(seq)
            .collect::<Vec<_>>(),
        [296, 297, 298]
    );
    assert_eq!(page.body["next_cursor"], "298");
    let r = alice.get("/v1/rooms/history/events?limit=1001").await;
    assert_eq!(r.status, 400, "{:?}", r.body);
}

#[tokio::test]
async fn a_cursor_ahead_of_the_room_is_reset() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("r", "public").await;
    alice.say("r", "one").await; // head 3
    let mut ws = t.ws("bob").await;
    let ack = ws.subscribe(&[("r", 50)]).await;
    assert_eq!(
        ack["result"]["rooms"],
        json!([{"room": "r", "status": "reset", "head_seq": 3}])
    );
    // No old events are replayed; live events follow from head_seq.
    alice.say("r", "two").await;
    let ev = ws.until(|f| f["type"] == "event").await;
    assert_eq!(seq(&ev), 4);
    assert_eq!(ev["data"]["body"], "two");
    assert_eq!(t.metric("roam_recovery_resets_total", None).await, 1.0);
}

#[tokio::test]
async fn a_gap_over_max_recovery_events_is_reset() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("big", "public").await;
    import(&alice, "big", 28).await; // head 30
    let t = t.restart_with(|c| c.max_recovery_events = 10).await;
    let mut ws = t.ws("bob").await;
    let ack = ws.subscribe(&[("big", 20)]).await;
    assert_eq!(
        ack["result"]["rooms"][0]["status"], "ok",
        "a gap of exactly 10"
    );
    let (events, _) = catch_up(&mut ws, "big").await;
    assert_eq!(
        events.iter().map(seq).collect::<Vec<_>>(),
        (21..=30).collect::<Vec<_>>()
    );

    let mut ws = t.ws("carol").await;
    let ack = ws.subscribe(&[("big", 19)]).await;
    assert_eq!(
        ack["result"]["rooms"],
        json!([{"room": "big", "status": "reset", "head_seq": 30}])
    );
    let mut ws = t.ws("dave").await;
    let ack = ws.subscribe(&[("big", 0)]).await;
    assert_eq!(ack["result"]["rooms"][0]["status"], "reset");
    // After a reset the client reloads the newest page over REST and goes on live.
    let page = t
        .as_user("dave")
        .get("/v1/rooms/big/messages?limit=5")
        .await;
    assert_eq!(page.body["items"][0]["seq"], 30);
    t.as_user("alice").say("big", "live").await;
    let ev = ws.until(|f| f["type"] == "event").await;
    assert_eq!(seq(&ev), 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_during_catch_up_arrive_after_it_without_gaps_or_duplicates() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("busy", "public").await;
    import(&alice, "busy", 1_198).await; // head 1200
    const LIVE: u64 = 60;
    let sender = {
        let alice = alice.clone();
        tokio::spawn(async move {
            for i in 0..LIVE {
                alice.say("busy", &format!("live {i}")).await;
            }
        })
    };
    let mut ws = t.ws("bob").await;
    let ack = ws.subscribe(&[("busy", 0)]).await;
    assert_eq!(ack["result"]["rooms"][0]["status"], "ok");
    let head = ack["result"]["rooms"][0]["head_seq"]
        .as_u64()
        .expect("head");
    assert!(head >= 1_200);
    let last = 1_200 + LIVE;
    let mut seqs = Vec::new();
    let mut caught_up_at = None;
    while seqs.last().copied().unwrap_or(0) < last {
        let f = ws.next().await;
        match f["type"].as_str() {
            Some("event") => seqs.push(seq(&f)),
            Some("caught_up") => {
                assert!(caught_up_at.is_none(), "one caught_up");
                caught_up_at = Some((seq(&f), seqs.len()));
            }
            _ => panic!("unexpected {f}"),
        }
    }
    sender.await.expect("sender");
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
    let (cu_seq, cu_pos) = caught_up_at.expect("a caught_up frame");
    assert!(cu_seq >= head, "caught up at {cu_seq}, head was {head}");
    assert_eq!(
        seqs[cu_pos - 1],
        cu_seq,
        "caught_up follows the event it names"
    );
    assert_eq!(ws.drain().await, Vec::<Value>::new());
}

#[tokio::test]
async fn a_banned_member_gets_member_banned_then_unsubscribed_then_nothing() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("lobby", "public").await;
    t.as_user("bob").join("lobby").await;
    t.as_user("carol").join("lobby").await;
    let mut bob = t.ws("bob").await;
    bob.subscribe(&[("lobby", 4)]).await;
    bob.until(|f| f["type"] == "caught_up").await;
    let mut carol = t.ws("carol").await;
    carol.subscribe(&[("lobby", 4)]).await;
    carol.until(|f| f["type"] == "caught_up").await;

    alice
        .post("/v1/rooms/lobby/bans", json!({"user": "bob"}))
        .await;
    let ev = bob.until(|f| f["type"] == "event").await;
    assert_eq!(ev["kind"], "member_banned");
    assert_eq!(ev["data"], json!({"user": "bob"}));
    assert_eq!(seq(&ev), 5);
    let next = bob.next().await;
    assert_eq!(
        next,
        json!({"v": 1, "type": "unsubscribed", "room": "lobby", "reason": "banned"})
    );
    alice.say("lobby", "after bob").await;
    let rest = bob.drain().await;
    assert!(
        rest.iter().all(|f| f["type"] != "event"),
        "no events after the ban: {rest:?}"
    );
    // Others go on.
    let evs = carol.events_until("lobby", 6).await;
    assert_eq!(evs.iter().map(seq).collect::<Vec<_>>(), [5, 6]);
    assert!(carol
        .drain()
        .await
        .iter()
        .all(|f| f["type"] != "unsubscribed"));
    // Subscribing again is refused.
    let ack = bob.subscribe(&[("lobby", 5)]).await;
    assert_eq!(ack["result"]["rooms"][0]["status"], "forbidden");
}

#[tokio::test]
async fn a_member_who_leaves_is_unsubscribed() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("club", "protected").await;
    let inv = alice.invite("club", "bob", "member").await;
    t.as_user("bob").accept(&inv).await;
    let mut bob = t.ws("bob").await;
    bob.subscribe(&[("club", 3)]).await;
    bob.until(|f| f["type"] == "caught_up").await;
    let ack = bob.mutate("room.leave", json!({"room": "club"})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let un = bob.until(|f| f["type"] == "unsubscribed").await;
    assert_eq!(un["reason"], "left");
    assert_eq!(un["room"], "club");
    alice.say("club", "after bob left").await;
    assert!(bob.drain().await.iter().all(|f| f["type"] != "event"));
}

#[tokio::test]
async fn a_room_turned_private_stops_reaching_outsiders() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("open", "public").await;
    t.as_user("bob").join("open").await;
    // mallory reads the public room without being a member.
    let mut mallory = t.ws("mallory").await;
    mallory.subscribe(&[("open", 3)]).await;
    mallory.until(|f| f["type"] == "caught_up").await;
    let mut bob = t.ws("bob").await;
    bob.subscribe(&[("open", 3)]).await;
    bob.until(|f| f["type"] == "caught_up").await;

    let r = alice
        .send(
            reqwest::Method::PATCH,
            "/v1/rooms/open",
            Some(json!({"kind": "private"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    alice.say("open", "members only now").await;
    // The member sees both events.
    let evs = bob.events_until("open", 5).await;
    assert_eq!(evs.iter().map(seq).collect::<Vec<_>>(), [4, 5]);
    // The outsider sees the change of kind, is unsubscribed, and never gets the message.
    let got: Vec<Value> = mallory
        .drain()
        .await
        .into_iter()
        .filter(|f| f["type"] != "presence")
        .collect();
    assert!(
        got.iter().all(|f| f["kind"] != "message_created"),
        "an outsider still receives a private room's messages: {got:?}"
    );
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["kind"], "room_updated");
    assert_eq!(got[0]["data"]["kind"], "private");
    assert_eq!(
        got[1],
        json!({"v": 1, "type": "unsubscribed", "room": "open", "reason": "forbidden"})
    );
    // The same when a room turns protected; members keep it.
    alice.create_room("semi", "public").await;
    let mut outsider = t.ws("oscar").await;
    outsider.subscribe(&[("semi", 2)]).await;
    outsider.until(|f| f["type"] == "caught_up").await;
    let r = alice
        .send(
            reqwest::Method::PATCH,
            "/v1/rooms/semi",
            Some(json!({"kind": "protected"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let un = outsider.until(|f| f["type"] == "unsubscribed").await;
    assert_eq!(un["reason"], "forbidden");
    assert_eq!(un["room"], "semi");
    // A title change keeps the outsiders of a public room.
    alice.create_room("plain", "public").await;
    let mut reader = t.ws("rita").await;
    reader.subscribe(&[("plain", 2)]).await;
    reader.until(|f| f["type"] == "caught_up").await;
    let r = alice
        .send(
            reqwest::Method::PATCH,
            "/v1/rooms/plain",
            Some(json!({"title": "Plain"})),
        )
        .await;
    assert_eq!(r.status, 200);
    alice.say("plain", "still public").await;
    let evs = reader.events_until("plain", 4).await;
    assert_eq!(evs[0]["kind"], "room_updated");
    assert_eq!(evs[1]["data"]["body"], "still public");
    assert!(reader
        .drain()
        .await
        .iter()
        .all(|f| f["type"] != "unsubscribed"));
    assert_eq!(
        t.as_user("mallory")
            .get("/v1/rooms/open/messages")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn a_client_reconnecting_after_a_restart_misses_nothing() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("live", "public").await;
    let mut bob = t.ws("bob").await;
    bob.subscribe(&[("live", 2)]).await;
    bob.until(|f| f["type"] == "caught_up").await;
    for i in 0..5 {
        alice.say("live", &format!("before {i}")).await;
    }
    // bob applies what he got; his cursor is the last seq he saw.
    let seen = bob.events_until("live", 7).await;
    let cursor = seq(seen.last().expect("events"));
    assert_eq!(cursor, 7);

    let t = t.restart().await;
    assert_eq!(bob.closed().await, Some(1001));
    let alice = t.as_user("alice");
    for i in 0..5 {
        alice.say("live", &format!("while away {i}")).await;
    }
    let mut bob = t.ws("bob").await;
    let ack = bob.subscribe(&[("live", cursor)]).await;
    assert_eq!(
        ack["result"]["rooms"],
        json!([{"room": "live", "status": "ok", "head_seq": 12}])
    );
    let (missed, upto) = catch_up(&mut bob, "live").await;
    assert_eq!(upto, 12);
    let bodies: Vec<&str> = missed
        .iter()
        .map(|e| e["data"]["body"].as_str().expect("body"))
        .collect();
    assert_eq!(
        bodies,
        [
            "while away 0",
            "while away 1",
            "while away 2",
            "while away 3",
            "while away 4"
        ]
    );
    assert_eq!(
        missed.iter().map(seq).collect::<Vec<_>>(),
        (8..=12).collect::<Vec<_>>()
    );
    alice.say("live", "after").await;
    let ev = bob.until(|f| f["type"] == "event").await;
    assert_eq!(seq(&ev), 13);
}

#[tokio::test]
async fn recovering_past_an_old_leave_or_ban_keeps_a_member_who_came_back() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let bob = t.as_user("bob");
    // bob leaves a protected room and is invited back.
    alice.create_room("club", "protected").await;
    let inv = alice.invite("club", "bob", "member").await;
    bob.accept(&inv).await; // 3
    let r = bob.post("/v1/rooms/club/leave", json!({})).await; // 4
    assert_eq!(r.status, 200);
    let inv = alice.invite("club", "bob", "member").await;
    bob.accept(&inv).await; // 5
                            // … and is banned from a public room, unbanned, and joins again.
    alice.create_room("square", "public").await;
    bob.join("square").await; // 3
    alice
        .post("/v1/rooms/square/bans", json!({"user": "bob"}))
        .await; // 4
    alice
        .send(reqwest::Method::DELETE, "/v1/rooms/square/bans/bob", None)
        .await; // 5
    bob.join("square").await; // 6

    // A device of bob's that was offline all along recovers from before all that.
    let mut ws = t.ws("bob").await;
    let ack = ws.subscribe(&[("club", 3), ("square", 3)]).await;
    assert_eq!(ack["result"]["rooms"][0]["status"], "ok");
    assert_eq!(ack["result"]["rooms"][1]["status"], "ok");
    let (club, upto) = catch_up(&mut ws, "club").await;
    assert_eq!(upto, 5);
    assert_eq!(
        club.iter()
            .map(|e| e["kind"].as_str().expect("kind"))
            .collect::<Vec<_>>(),
        ["member_left", "member_joined"]
    );
    let (square, upto) = catch_up(&mut ws, "square").await;
    assert_eq!(upto, 6);
    assert_eq!(
        square
            .iter()
            .map(|e| e["kind"].as_str().expect("kind"))
            .collect::<Vec<_>>(),
        ["member_banned", "member_unbanned", "member_joined"]
    );
    // Both rooms stay subscribed.
    alice.say("club", "welcome back").await;
    alice.say("square", "hello again").await;
    let got = ws.drain().await;
    assert!(got.iter().all(|f| f["type"] != "unsubscribed"), "{got:?}");
    let bodies: Vec<&str> = got
        .iter()
        .filter(|f| f["type"] == "event")
        .map(|f| f["data"]["body"].as_str().expect("body"))
        .collect();
    assert_eq!(bodies, ["welcome back", "hello again"]);
}
