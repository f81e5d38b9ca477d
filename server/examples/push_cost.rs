//! What push notifications cost and how fast they arrive, against the fake APNs of
//! `roam_testkit::push` on loopback (HTTP/2, token auth checked).
//!
//! `cargo run --release -p roam-server --example push_cost [members]`
//!
//! A real server (embedded SQLite, `synchronous=NORMAL`) with its push worker, in this process;
//! the fake gateway on a runtime of its own (threads `fakegw`), whose CPU is subtracted from
//! the process's. Measures, in one run:
//!
//! 1. one message to a room of `members` (default 10,000) offline members with one device
//!    each: time until the gateway accepted every push, pushes per second, server CPU µs per
//!    push, and the process's peak resident memory before and after (`VmHWM`);
//! 2. the latency from sending a message (REST, acknowledged after its commit) to the gateway
//!    receiving its push, for an offline user, over 200 messages one at a time: p50, p95, max;
//! 3. 1,000 messages while the user is active on a socket: pushes received (must be 0);
//! 4. read → clear: from `POST /v1/rooms/{room}/read` to the gateway receiving the `read` push,
//!    over 50 reads: p50, p95;
//! 5. a silent disconnect: a user's socket goes through a loopback relay that stops forwarding
//!    in both directions and closes nothing (a phone that lost its network); a message sent at
//!    once finds the user still active, and is pushed when the server gives up on the socket.
//!    From the send to the gateway receiving its push, less the idle timeout (a second server
//!    with `--idle-timeout-secs 5`, the client pinging every second until the relay froze),
//!    over 5 runs: each, and the largest. The target: within the timeout + 2 s.
//!
//! Nothing is asserted but each member being pushed exactly once and the active user getting
//! nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use roam_server::config::{Config, DbSynchronous};
use roam_server::metrics::PushMetrics;
use roam_server::store::{Change, Store, Write};
use roam_server::Server;
use roam_testkit::push as fakes;
use roam_testkit::relay::FreezableRelay;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[path = "common/cpu.rs"]
mod cpu;

fn write(actor: &str, change: Change) -> Write {
    Write {
        actor: actor.into(),
        now: roam_server::service::now_ms(),
        idem: None,
        guard: None,
        after: None,
        change,
        notify: Vec::new(),
    }
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let r = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", uuid::Uuid::now_v7().to_string())
            .json(&body)
            .send()
            .await
            .expect("request");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.expect("json")
    }
}

fn main() {
    let members: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    // The fake gateway on threads of its own, so its CPU can be told apart.
    let fake_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fakegw")
        .enable_all()
        .build()
        .expect("fake runtime");
    let apns = fake_rt.block_on(fakes::fake_apns());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(members, &apns));
    drop(apns);
    drop(fake_rt);
}

/// A server on a fresh data directory whose APNs gateway is the fake, with `tune` applied to its
/// settings; and a maker of REST clients for it.
async fn start(
    dir: &std::path::Path,
    apns: &fakes::Fake,
    tune: impl FnOnce(&mut Config),
) -> (Server, impl Fn(&str) -> Client) {
    let mut config = Config::for_data_dir(dir);
    let c = &mut config;
    c.jwt_secret = Some("push-cost-secret-push-cost-secret-0123".into());
    c.db_synchronous = DbSynchronous::Normal;
    c.push.push_apns_key = Some(fakes::apns_key_path());
    c.push.push_apns_key_id = Some(fakes::APNS_KEY_ID.into());
    c.push.push_apns_team_id = Some(fakes::APNS_TEAM_ID.into());
    c.push.push_apns_url = apns.url();
    c.push.push_apns_sandbox_url = apns.url();
    tune(c);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = Server::start(config, listener).await.expect("server");
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::new();
    let keys = Arc::clone(&server.state().keys);
    let client = move |user: &str| Client {
        http: http.clone(),
        base: base.clone(),
        token: keys.mint(user, 86_400).expect("token"),
    };
    (server, client)
}

async fn run(members: usize, apns: &fakes::Fake) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, client) = start(dir.path(), apns, |c| {
        c.rate_mutations_per_sec = 1_000_000;
        c.rate_mutations_burst = 1_000_000;
        c.push.push_device_per_min = 100_000;
    })
    .await;
    let alice = client("alice");
    let store: Arc<dyn Store> = Arc::clone(&server.state().service.store);

    // --- 1. one message to a room of `members` offline members ---
    alice
        .call(
            reqwest::Method::POST,
            "/v1/rooms",
            json!({"room": "huge", "kind": "public"}),
        )
        .await;
    let mut changes = Vec::new();
    for i in 0..members {
        let u = format!("u{i:05}");
        changes.push(write(
            &u,
            Change::AddMember {
                room: "huge".into(),
                user: u.clone(),
                role: roam_proto::Role::Member,
                invitation: None,
            },
        ));
    }
    for i in 0..members {
        let u = format!("u{i:05}");
        changes.push(write(
            &u,
            Change::RegisterPush {
                device: "phone".into(),
                platform: roam_proto::PushPlatform::Apns,
                token: format!("t{i:05}"),
                app_id: fakes::APNS_TOPIC.into(),
                locale: None,
                sandbox: false,
            },
        ));
    }
    let commits: Vec<_> = changes.into_iter().map(|w| store.commit(w)).collect();
    for c in futures_util::future::join_all(commits).await {
        c.expect("setup write");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hwm_before = vm_hwm_kib();
    let cpu0 = cpu::own_cpu() - cpu::threads_cpu("fakegw");
    let t0 = Instant::now();
    alice
        .call(
            reqwest::Method::POST,
            "/v1/rooms/huge/messages",
            json!({"body": "hello, everyone"}),
        )
        .await;
    let got = apns.wait_received(members, Duration::from_secs(600)).await;
    let took = t0.elapsed();
    let cpu = cpu::own_cpu() - cpu::threads_cpu("fakegw") - cpu0;
    let received = apns.received();
    let distinct: std::collections::HashSet<&str> =
        received.iter().map(|r| r.token.as_str()).collect();
    assert_eq!(got, members, "every member pushed");
    assert_eq!(distinct.len(), members, "each once");
    println!("fan-out: {members} offline members, one message");
    println!(
        "  all pushed in {:.2} s: {:.0} pushes/s, server CPU {:.1} µs per push",
        took.as_secs_f64(),
        members as f64 / took.as_secs_f64(),
        cpu * 1e6 / members as f64
    );
    println!(
        "  peak RSS (VmHWM) {:.1} MiB before the message, {:.1} MiB after",
        hwm_before as f64 / 1024.0,
        vm_hwm_kib() as f64 / 1024.0
    );

    // --- 2. latency for one offline user ---
    alice
        .call(
            reqwest::Method::POST,
            "/v1/rooms",
            json!({"room": "pair", "kind": "public"}),
        )
        .await;
    let bob = client("bob");
    bob.call(reqwest::Method::POST, "/v1/rooms/pair/join", json!({}))
        .await;
    bob.call(
        reqwest::Method::PUT,
        "/v1/push/devices/phone",
        json!({"platform": "apns", "token": "bob-token", "app_id": fakes::APNS_TOPIC}),
    )
    .await;
    let mut lat = Vec::new();
    let mut last_seq = 0;
    for i in 0..200 {
        let before = apns.received_for("bob-token").len();
        let t = Instant::now();
        let m = alice
            .call(
                reqwest::Method::POST,
                "/v1/rooms/pair/messages",
                json!({"body": format!("m{i}")}),
            )
            .await;
        last_seq = m["seq"].as_u64().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = apns.received_for("bob-token");
            if r.len() > before {
                lat.push(r[before].at.duration_since(t));
                break;
            }
            assert!(Instant::now() < deadline, "no push for message {i}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    println!(
        "offline user, send → gateway: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms (200 messages)",
        pct(&mut lat, 0.5).as_secs_f64() * 1e3,
        pct(&mut lat, 0.95).as_secs_f64() * 1e3,
        pct(&mut lat, 1.0).as_secs_f64() * 1e3
    );

    // --- 4. read → clear ---
    let mut clear = Vec::new();
    for i in 0..50 {
        // Counted before the send: the push may reach the gateway before the send's answer.
        let want = apns.received_for("bob-token").len() + 1;
        let m = alice
            .call(
                reqwest::Method::POST,
                "/v1/rooms/pair/messages",
                json!({"body": format!("r{i}")}),
            )
            .await;
        let seq = m["seq"].as_u64().unwrap_or(last_seq);
        // Its message push first.
        let deadline = Instant::now() + Duration::from_secs(10);
        while apns.received_for("bob-token").len() < want {
            assert!(Instant::now() < deadline, "no message push");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let t = Instant::now();
        bob.call(
            reqwest::Method::POST,
            "/v1/rooms/pair/read",
            json!({"seq": seq}),
        )
        .await;
        loop {
            let r = apns.received_for("bob-token");
            if r.len() > want {
                assert_eq!(r[want].roam()["kind"], "read");
                clear.push(r[want].at.duration_since(t));
                break;
            }
            assert!(Instant::now() < deadline, "no read push");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    println!(
        "read → clear push at the gateway: p50 {:.1} ms, p95 {:.1} ms (50 reads)",
        pct(&mut clear, 0.5).as_secs_f64() * 1e3,
        pct(&mut clear, 0.95).as_secs_f64() * 1e3
    );

    // --- 3. 1,000 messages while the user is active ---
    let ws_url = format!("ws://{}/v1/ws", server.local_addr());
    let mut req = ws_url.into_client_request().expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", bob.token).parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("socket");
    let _hello = ws.next().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = apns.received_for("bob-token").len();
    for i in 0..1_000 {
        alice
            .call(
                reqwest::Method::POST,
                "/v1/rooms/pair/messages",
                json!({"body": format!("a{i}")}),
            )
            .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = apns.received_for("bob-token").len() - before;
    println!("1,000 messages while the user is active: {during} pushes");
    assert_eq!(during, 0);
    drop(ws);
    server.shutdown().await;

    silent_disconnect(apns).await;
}

/// The idle timeout of the silent-disconnect measurement, and the client's ping interval.
const SILENT_IDLE_SECS: u64 = 5;
const SILENT_PING: Duration = Duration::from_secs(1);
const SILENT_RUNS: usize = 5;

/// Part 5 (see the top): its own server, with a short idle timeout.
async fn silent_disconnect(apns: &fakes::Fake) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, client) = start(dir.path(), apns, |c| {
        c.idle_timeout_secs = SILENT_IDLE_SECS;
        c.heartbeat_ms = SILENT_PING.as_millis() as u64;
    })
    .await;
    let (alice, carol) = (client("alice"), client("carol"));
    alice
        .call(
            reqwest::Method::POST,
            "/v1/rooms",
            json!({"room": "quiet", "kind": "public"}),
        )
        .await;
    carol
        .call(reqwest::Method::POST, "/v1/rooms/quiet/join", json!({}))
        .await;
    carol
        .call(
            reqwest::Method::PUT,
            "/v1/push/devices/phone",
            json!({"platform": "apns", "token": "carol-token", "app_id": fakes::APNS_TOPIC}),
        )
        .await;
    let metrics = &server.state().service.metrics.push;
    let idle = Duration::from_secs(SILENT_IDLE_SECS);
    let mut over = Vec::new();
    for run in 0..SILENT_RUNS {
        let relay = FreezableRelay::start(server.local_addr().to_string()).await;
        let mut req = format!("ws://{}/v1/ws", relay.addr)
            .into_client_request()
            .expect("request");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", carol.token).parse().expect("header"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("socket");
        let (mut tx, mut rx) = ws.split();
        // The client's heartbeat, and a reader that drains what the server sends.
        let beat = tokio::spawn(async move {
            loop {
                let ping = Message::Ping(Vec::new().into());
                if tx.send(ping).await.is_err() {
                    return;
                }
                tokio::time::sleep(SILENT_PING).await;
            }
        });
        let drain = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
        let active = PushMetrics::count(&metrics.skipped, "active");
        // Connected a while, with pings heard; then, between two pings, the network goes.
        tokio::time::sleep(SILENT_PING * 2 + SILENT_PING / (SILENT_RUNS as u32 + 1) * run as u32)
            .await;
        relay.freeze();
        let before = apns.received_for("carol-token").len();
        let t = Instant::now();
        let m = alice
            .call(
                reqwest::Method::POST,
                "/v1/rooms/quiet/messages",
                json!({"body": format!("still there? {run}")}),
            )
            .await;
        let deadline = Instant::now() + idle + Duration::from_secs(30);
        let took = loop {
            let r = apns.received_for("carol-token");
            if let Some(p) = r.get(before) {
                assert_eq!(p.roam()["seq"], m["seq"], "the message's push");
                break p.at.duration_since(t);
            }
            assert!(
                Instant::now() < deadline,
                "no push after the silent disconnect"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        assert!(
            PushMetrics::count(&metrics.skipped, "active") > active,
            "the message found the user active"
        );
        over.push(took.as_secs_f64() - idle.as_secs_f64());
        beat.abort();
        drain.abort();
        drop(relay);
    }
    let shown: Vec<String> = over.iter().map(|o| format!("{o:+.2}")).collect();
    let worst = over.iter().copied().fold(f64::MIN, f64::max);
    println!(
        "silent disconnect (idle timeout {SILENT_IDLE_SECS} s, pings every {} s): send → push \
         less the timeout, {SILENT_RUNS} runs: {} s; largest {worst:+.2} s (target ≤ +2 s)",
        SILENT_PING.as_secs(),
        shown.join(", ")
    );
    server.shutdown().await;
}
