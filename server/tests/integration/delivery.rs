//! The delivery engine: per-room ordering in the hub, lagging sockets caught up from the store,
//! big rooms reconnecting at once, sockets that cannot wedge, socket caps, control-frame limits
//! and negotiated compression.

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::fixtures::{key, mint, now_secs, TestServer, Ws, SECRET, WAIT};

type Raw = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A socket with a small receive buffer (so the server's writes back up quickly), optionally
/// asking for compression; its `hello` is read.
async fn raw(t: &TestServer, token: &str, recv_buffer: u32, query: &str) -> Raw {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(recv_buffer).expect("buffer");
    let tcp = sock
        .connect(t.server().local_addr())
        .await
        .expect("tcp connect");
    let mut req = format!("{}{query}", t.ws_url())
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    let (mut raw, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("handshake");
    let hello = next_json(&mut raw).await;
    assert_eq!(hello[0]["type"], "hello");
    raw
}

/// The frames of the next data message (a compressed binary message may hold several).
async fn next_json(raw: &mut Raw) -> Vec<Value> {
    loop {
        let m = tokio::time::timeout(WAIT, raw.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        match m {
            Message::Text(t) => return vec![serde_json::from_str(&t).expect("json")],
            Message::Binary(b) => {
                let mut text = String::new();
                flate2::read::DeflateDecoder::new(&b[..])
                    .read_to_string(&mut text)
                    .expect("inflate");
                return text
                    .split('\n')
                    .map(|f| serde_json::from_str(f).expect("json"))
                    .collect();
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn send(raw: &mut Raw, frame: Value) {
    raw.send(Message::Text(frame.to_string().into()))
        .await
        .expect("send");
}

/// Events of `room` until `last`, checked to be `from..=last` exactly once, in order.
fn check_sequence(events: &[u64], from: u64, last: u64) {
    let want: Vec<u64> = (from..=last).collect();
    assert_eq!(events, want.as_slice());
}

async fn fill_room(t: &TestServer, room: &str, members: usize) {
    let alice = t.as_user("alice");
    alice.create_room(room, "public").await;
    let mut joins = Vec::new();
    for i in 0..members {
        let api = t.as_user(&format!("m{i}"));
        let room = room.to_owned();
        joins.push(tokio::spawn(async move { api.join(&room).await }));
    }
    for j in joins {
        j.await.expect("join task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_reach_every_receiver_in_order_without_store_reads() {
    // A long reorder window: a publisher delayed by a loaded machine must not count as loss.
    let t = TestServer::start_with(|c| c.hub_reorder_window_ms = 5_000).await;
    const RECEIVERS: usize = 200;
    const PUBLISHERS: usize = 8;
    const EACH: u64 = 25;
    fill_room(&t, "fan", RECEIVERS).await;
    let head = 2 + RECEIVERS as u64; // room_created, alice joined, then the members
    let mut receivers = Vec::new();
    for i in 0..RECEIVERS {
        let mut ws = t.ws(&format!("m{i}")).await;
        ws.subscribe(&[("fan", head)]).await;
        ws.until(|f| f["type"] == "caught_up").await;
        receivers.push(ws);
    }
    let subscribe_reads = t
        .metric("roam_events_recovered_total", Some("reason=\"subscribe\""))
        .await;

    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let t_url = t.ws_url();
        let token = t.token(&format!("m{p}"));
        publishers.push(tokio::spawn(async move {
            let mut ws = Ws::connect(&t_url, &token).await;
            for n in 0..EACH {
                ws.send(
                    json!({"v": 1, "type": "mutate", "id": format!("p{p}-{n}"), "key": key(),
                    "op": "message.send", "args": {"room": "fan", "body": format!("{p}/{n}")}}),
                )
                .await;
            }
            for _ in 0..EACH {
                let a = ws
                    .until(|f| f["type"] == "ack" || f["type"] == "error")
                    .await;
                assert_eq!(a["type"], "ack", "{a}");
            }
        }));
    }
    for p in publishers {
        p.await.expect("publisher");
    }
    let last = head + PUBLISHERS as u64 * EACH;
    let mut readers = Vec::new();
    for mut ws in receivers {
        readers.push(tokio::spawn(async move {
            let evs = ws.events_until("fan", last).await;
            let seqs: Vec<u64> = evs.iter().filter_map(|e| e["seq"].as_u64()).collect();
            check_sequence(&seqs, head + 1, last);
        }));
    }
    for r in readers {
        r.await.expect("receiver saw every seq once, in order");
    }
    assert_eq!(
        t.metric("roam_events_recovered_total", Some("reason=\"subscribe\""))
            .await,
        subscribe_reads,
        "no live event went through a socket's own store read"
    );
    for reason in ["lagging", "gap"] {
        let label = format!("reason=\"{reason}\"");
        assert_eq!(
            t.metric("roam_events_recovered_total", Some(&label)).await,
            0.0,
            "{reason}"
        );
    }
    assert_eq!(t.metric("roam_hub_gap_fills_total", None).await, 0.0);
    assert_eq!(
        t.metric("roam_events_delivered_total", None).await,
        (RECEIVERS as u64 * PUBLISHERS as u64 * EACH) as f64,
        "each live event queued once on each receiver"
    );
}

/// `members` members of one room connect and subscribe at once; each must catch up and then
/// get one live message. Returns the most presence frames any socket got meanwhile.
async fn storm(t: &TestServer, room: &'static str, members: usize) -> usize {
    fill_room(t, room, members).await;
    let head = 2 + members as u64;
    // The owner watches from before the crowd arrives, so arrivals always meet a subscriber
    // (however the store's speed interleaves the crowd's connects and subscribes).
    let mut watcher = t.ws("alice").await;
    watcher.subscribe(&[(room, head)]).await;
    watcher.until(|f| f["type"] == "caught_up").await;
    // Everyone connects and subscribes at once, from a cursor a little behind.
    let mut tasks = Vec::new();
    for i in 0..members {
        let url = t.ws_url();
        let token = t.token(&format!("m{i}"));
        tasks.push(tokio::spawn(async move {
            let mut ws = Ws::connect(&url, &token).await;
            ws.raw_presence = true;
            ws.subscribe(&[(room, head - 10)]).await;
            let mut presence_frames = 0usize;
            let mut seqs = Vec::new();
            loop {
                let f = ws.next().await;
                match f["type"].as_str() {
                    Some("presence_state") | Some("presence_diff") => presence_frames += 1,
                    Some("event") => seqs.push(f["seq"].as_u64().expect("seq")),
                    Some("caught_up") => break,
                    _ => {}
                }
            }
            check_sequence(&seqs, head - 9, head);
            (ws, presence_frames)
        }));
    }
    let mut sockets = Vec::new();
    for task in tasks {
        sockets.push(task.await.expect("member caught up"));
    }
    assert_eq!(
        t.metric("roam_slow_consumer_disconnects_total", None).await,
        0.0
    );
    // One live message reaches all of them; count the presence frames each got meanwhile.
    let ack = t.as_user("alice").say(room, "hello crowd").await;
    let seq = ack["seq"].as_u64().expect("seq");
    let mut readers = Vec::new();
    for (mut ws, mut presence_frames) in sockets {
        readers.push(tokio::spawn(async move {
            loop {
                let f = ws.next().await;
                match f["type"].as_str() {
                    Some("presence_state") | Some("presence_diff") => presence_frames += 1,
                    Some("event") if f["seq"] == seq => return presence_frames,
                    _ => {}
                }
            }
        }));
    }
    let mut most = 0;
    for r in readers {
        most = most.max(r.await.expect("live event reached every member"));
    }
    assert_eq!(
        t.metric("roam_slow_consumer_disconnects_total", None).await,
        0.0
    );
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_members_connecting_at_once_all_catch_up_and_none_is_cut() {
    let t = TestServer::start().await;
    let most = storm(&t, "crowd", 1_000).await;
    // Above the presence limit (200 by default) presence is on demand: no frames at all.
    assert_eq!(most, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "flaky: in some runs no coalesced presence_diff is ever sent (2 of 5 runs fail at \
            d48efb9 too); run with --ignored while the cause is found"]
async fn presence_of_a_crowd_arriving_costs_each_socket_a_few_coalesced_frames() {
    let t = TestServer::start().await;
    let most = storm(&t, "circle", 150).await;
    // O(1) per interval, not O(room size): 150 arrivals cost each socket one presence_state and
    // at most one diff per 250 ms while the crowd arrives, not one frame per member.
    assert!(
        (1..40).contains(&most),
        "a socket got {most} presence frames"
    );
    // The crowd's arrivals reach the watcher as coalesced diffs, flushed one presence interval
    // after the first arrival: by then the storm may already be over.
    let mut diffs = 0.0;
    for _ in 0..100 {
        diffs = t.metric("roam_presence_frames_total", None).await;
        if diffs > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(diffs > 0.0, "no coalesced presence_diff frame was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_socket_is_caught_up_from_the_store_without_stalling_others() {
    let t = TestServer::start_with(|c| {
        c.send_queue = 16;
        c.slow_consumer_grace_ms = 60_000;
    })
    .await;
    t.as_user("alice").create_room("busy", "public").await;
    let mut slow = raw(&t, &t.token("slow"), 4096, "").await;
    send(
        &mut slow,
        json!({"v": 1, "type": "subscribe", "id": "s", "rooms": [{"room": "busy", "since": 2}]}),
    )
    .await;
    let mut fast = t.ws("fast").await;
    fast.subscribe(&[("busy", 2)]).await;
    fast.until(|f| f["type"] == "caught_up").await;

    // 300 messages of 16 KiB: far more than the slow socket's buffers and queue hold.
    let mut writer = t.ws("alice").await;
    let body = "q".repeat(16 * 1024);
    const N: u64 = 300;
    for chunk in 0..(N / 10) {
        for i in 0..10 {
            writer
                .send(
                    json!({"v": 1, "type": "mutate", "id": format!("w{chunk}-{i}"), "key": key(),
                    "op": "message.send", "args": {"room": "busy", "body": body}}),
                )
                .await;
        }
        for _ in 0..10 {
            let a = writer
                .until(|f| f["type"] == "ack" || f["type"] == "error")
                .await;
            assert_eq!(a["type"], "ack", "{}", a["code"]);
        }
    }
    // The fast reader has everything while the slow one has not read a byte.
    let evs = fast.events_until("busy", 2 + N).await;
    let seqs: Vec<u64> = evs.iter().filter_map(|e| e["seq"].as_u64()).collect();
    check_sequence(&seqs, 3, 2 + N);
    assert!(
        t.metric("roam_events_skipped_lagging_total", None).await > 0.0,
        "the slow socket's queue overflowed"
    );

    // Now it reads: every event once, in order, the skipped ones from the store.
    let mut seqs = Vec::new();
    while seqs.last() != Some(&(2 + N)) {
        for f in next_json(&mut slow).await {
            if f["type"] == "event" {
                seqs.push(f["seq"].as_u64().expect("seq"));
            }
        }
    }
    check_sequence(&seqs, 3, 2 + N);
    assert!(
        t.metric("roam_events_recovered_total", Some("reason=\"lagging\""))
            .await
            > 0.0,
        "the oldest skipped events come from the store"
    );
    assert!(
        t.metric("roam_events_replayed_memory_total", None).await > 0.0,
        "the newest come from the room's recent events in memory"
    );
    assert_eq!(
        t.metric("roam_slow_consumer_disconnects_total", None).await,
        0.0,
        "lagging is not a reason to cut a socket that reads"
    );
}

/// Pipelines `n` sends of 60 KiB messages into `room` and reads none of their acks (each
/// carries the message), until the server stops taking them.
async fn flood_without_reading(raw: &mut Raw, room: &str, n: usize) {
    let body = "f".repeat(60 * 1024);
    for i in 0..n {
        let frame = json!({"v": 1, "type": "mutate", "id": format!("m{i}"), "key": key(),
            "op": "message.send", "args": {"room": room, "body": body}});
        if raw
            .send(Message::Text(frame.to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }
}

/// Waits until the server counts `n` sockets.
async fn connections_become(t: &TestServer, n: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while t.metric("roam_connections", None).await != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections never became {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_and_never_reads_is_cut_even_without_room_traffic() {
    let t = TestServer::start_with(|c| {
        c.send_queue = 16;
        c.slow_consumer_grace_ms = 1_000;
    })
    .await;
    t.as_user("alice").create_room("quiet", "public").await;
    t.as_user("flooder").join("quiet").await;
    let mut flooder = raw(&t, &t.token("flooder"), 4096, "").await;
    connections_become(&t, 1.0).await;
    flood_without_reading(&mut flooder, "quiet", 200).await;
    connections_become(&t, 0.0).await;
    assert!(t.metric("roam_slow_consumer_disconnects_total", None).await >= 1.0);
    // The server goes on.
    let mut other = t.ws("bob").await;
    let pong = other.call(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_closes_a_socket_whatever_its_queue_does() {
    let t = TestServer::start_with(|c| {
        // Room for every unread ack, so only the token's expiry can end it.
        c.send_queue = 1024;
        c.slow_consumer_grace_ms = 60_000;
    })
    .await;
    t.as_user("alice").create_room("quiet", "public").await;
    t.as_user("flooder").join("quiet").await;
    let token = mint(SECRET, "flooder", now_secs() + 3);
    let mut flooder = raw(&t, &token, 4096, "").await;
    flood_without_reading(&mut flooder, "quiet", 100).await;
    // Wedged behind its own unread acks, it still ends when its token does.
    connections_become(&t, 0.0).await;
    assert_eq!(
        t.metric("roam_slow_consumer_disconnects_total", None).await,
        0.0
    );
}

#[tokio::test]
async fn sockets_are_capped_per_user_and_in_total() {
    let t = TestServer::start_with(|c| {
        c.max_sockets_per_user = 2;
        c.max_sockets = 3;
    })
    .await;
    let _a1 = t.ws("a").await;
    let _a2 = t.ws("a").await;
    let refused = Ws::try_connect(&t.ws_url(), Some(&t.token("a")))
        .await
        .expect_err("a third socket for a");
    assert_eq!(refused.status, 429);
    assert_eq!(refused.code(), "rate_limited");
    let _b = t.ws("b").await;
    let refused = Ws::try_connect(&t.ws_url(), Some(&t.token("c")))
        .await
        .expect_err("a fourth socket in total");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.code(), "unavailable");
    assert_eq!(
        t.metric("roam_sockets_refused_total", Some("kind=\"per_user\""))
            .await,
        1.0
    );
    assert_eq!(
        t.metric("roam_sockets_refused_total", Some("kind=\"total\""))
            .await,
        1.0
    );
}

#[tokio::test]
async fn control_frames_are_rate_limited_and_unsubscribe_lists_capped() {
    let t = TestServer::start().await;
    let mut ws = t.ws("alice").await;
    for i in 0..40 {
        ws.send(json!({"v": 1, "type": "ping", "id": format!("p{i}")}))
            .await;
    }
    let mut answers: HashMap<String, u32> = HashMap::new();
    for _ in 0..40 {
        let f = ws
            .until(|f| f["type"] == "pong" || f["type"] == "error")
            .await;
        let kind = if f["type"] == "pong" {
            "pong".to_owned()
        } else {
            f["code"].as_str().unwrap_or("").to_owned()
        };
        *answers.entry(kind).or_default() += 1;
    }
    assert!(answers.get("pong").copied().unwrap_or(0) >= 1);
    assert!(
        answers.get("rate_limited").copied().unwrap_or(0) >= 1,
        "{answers:?}"
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let rooms: Vec<String> = (0..501).map(|i| format!("r{i}")).collect();
    let err = ws
        .call(json!({"type": "unsubscribe", "rooms": rooms}))
        .await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "invalid_input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiated_compression_shrinks_a_catch_up_to_under_a_third() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("history", "public").await;
    let bodies: Vec<String> = (0..2_000)
        .map(|i| format!("message number {i} with a few words of text in it"))
        .collect();
    let r = alice
        .post(
            "/v1/rooms/history/messages/import",
            json!({"bodies": bodies}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let last = r.body["last_seq"].as_u64().expect("last_seq");

    let mut sizes = [0usize; 2];
    for (i, query) in ["", "?compress=deflate"].into_iter().enumerate() {
        let mut s = raw(&t, &t.token("bob"), 1 << 20, query).await;
        send(
            &mut s,
            json!({"v": 1, "type": "subscribe", "id": "s", "rooms": [{"room": "history", "since": 0}]}),
        )
        .await;
        let mut seqs = Vec::new();
        let mut wire = 0usize;
        'read: loop {
            let m = tokio::time::timeout(WAIT, s.next())
                .await
                .expect("in time")
                .expect("open")
                .expect("frame");
            let frames: Vec<Value> = match m {
                Message::Text(t) => {
                    wire += t.len();
                    vec![serde_json::from_str(&t).expect("json")]
                }
                Message::Binary(b) => {
                    wire += b.len();
                    let mut text = String::new();
                    flate2::read::DeflateDecoder::new(&b[..])
                        .read_to_string(&mut text)
                        .expect("inflate");
                    text.split('\n')
                        .map(|f| serde_json::from_str(f).expect("json"))
                        .collect()
                }
                _ => continue,
            };
            for f in frames {
                if f["type"] == "event" {
                    seqs.push(f["seq"].as_u64().expect("seq"));
                }
                if f["type"] == "caught_up" {
                    break 'read;
                }
            }
        }
        check_sequence(&seqs, 1, last);
        sizes[i] = wire;
    }
    assert!(
        sizes[1] * 3 <= sizes[0],
        "compressed {} vs plain {} bytes",
        sizes[1],
        sizes[0]
    );
}

/// Imports `n` short messages into `room`; returns the last seq.
async fn import(t: &TestServer, room: &str, n: usize) -> u64 {
    let bodies: Vec<String> = (0..n)
        .map(|i| format!("message number {i} with a few words of text in it"))
        .collect();
    let r = t
        .as_user("alice")
        .post(
            &format!("/v1/rooms/{room}/messages/import"),
            json!({"bodies": bodies}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["last_seq"].as_u64().expect("last_seq")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_catching_up_the_same_history_share_each_page_read() {
    let t = TestServer::start().await;
    t.as_user("alice").create_room("history", "public").await;
    let last = import(&t, "history", 2_000).await;
    // A follower at the head keeps the room's line (and its shared pages) on this server.
    let mut watcher = t.ws("watcher").await;
    watcher.subscribe(&[("history", last)]).await;
    watcher.until(|f| f["type"] == "caught_up").await;

    const SOCKETS: u64 = 6;
    for i in 0..SOCKETS {
        let mut s = t.ws(&format!("reader{i}")).await;
        s.subscribe(&[("history", 0)]).await;
        let evs = s.events_until("history", last).await;
        let seqs: Vec<u64> = evs.iter().filter_map(|e| e["seq"].as_u64()).collect();
        check_sequence(&seqs, 1, last);
    }
    assert_eq!(
        t.metric("roam_events_recovered_total", Some("reason=\"subscribe\""))
            .await,
        (SOCKETS * last) as f64,
        "every reader got the whole history from the store"
    );
    // Pages of 512: 0..=2 are complete and shared; the last, partial one (1,537..=2,000) is
    // read by each socket. Without sharing that would be 4 reads per socket.
    let shared = t.metric("roam_catch_up_pages_read_total", None).await;
    assert!(
        (3.0..=6.0).contains(&shared),
        "{shared} shared page reads for {SOCKETS} sockets (3 pages; a page older than its \
         time to live is read again)"
    );
}

/// The text of a message that gets deleted.
const GONE: &str = "words nobody may read again";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_message_is_not_replayed_from_memory() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("live", "public").await;
    let mut watcher = t.ws("bob").await;
    let ack = watcher.subscribe(&[("live", 0)]).await;
    let start = ack["result"]["rooms"][0]["head_seq"]
        .as_u64()
        .expect("head");
    watcher.until(|f| f["type"] == "caught_up").await;
    let sent = alice.say("live", GONE).await;
    let id = sent["id"].as_str().expect("id").to_owned();
    alice.say("live", "after it").await;
    let r = alice
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/rooms/live/messages/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let head = start + 3;
    watcher.events_until("live", head).await;
    // From the cursor just before the message: the room's recent events cover it exactly.
    let mut late = t.ws("carol").await;
    late.subscribe(&[("live", start)]).await;
    let recovered = late.events_until("live", head).await;
    let seqs: Vec<u64> = recovered.iter().filter_map(|e| e["seq"].as_u64()).collect();
    check_sequence(&seqs, start + 1, head);
    assert!(
        !Value::from(recovered.clone()).to_string().contains(GONE),
        "{recovered:?}"
    );
}
