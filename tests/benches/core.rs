//! Benchmarks of the client core against the real server on loopback, each compared with its
//! SPEC §4 target. Run on demand (not in CI): `cargo bench -p roam-tests --bench core`.
//!
//! 1. Outbox enqueue (durable, one transaction each) against a raw rusqlite single-row insert
//!    loop with the same pragmas, measured in the same run: target ≥ 50 % of the raw rate
//!    (5 paired rounds of 5,000 each; the medians are reported).
//! 2. Replay of 10,000 queued mutations after reconnect, end to end: target < 1 s, each applied
//!    exactly once.
//! 3. Cold start (open, migrate, load the room list and the newest page) with 100,000 stored
//!    messages: target < 50 ms.
//! 4. Recovery of 10,000 events missed during an outage, in one room: target < 2 s, complete
//!    and in order.
//!
//! Scenarios can be picked by name: `cargo bench -p roam-tests --bench core -- enqueue replay`
//! (names: `enqueue`, `replay`, `recovery`, `cold_start`; none given: all of them). The same list
//! can come from `ROAM_BENCH` (comma or space separated).

use std::time::{Duration, Instant};

use roam_core::RoomKind;
use roam_tests::{fast_config, open_client, wait_until, Backend};
use serde_json::json;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "NOT MET"
    }
}

fn raw_insert_rate(path: &std::path::Path, n: usize) -> f64 {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("sync");
    conn.execute_batch(
        "CREATE TABLE t (id TEXT PRIMARY KEY, room TEXT NOT NULL, body TEXT NOT NULL, created_at INTEGER NOT NULL)",
    )
    .expect("table");
    let started = Instant::now();
    for i in 0..n {
        conn.execute(
            "INSERT INTO t (id, room, body, created_at) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                uuid::Uuid::now_v7().to_string(),
                "bench",
                format!("message {i}"),
                i as i64
            ],
        )
        .expect("insert");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Paired rounds of the enqueue comparison; the median is reported (the machine is shared, and
/// a single round of 5,000 writes is over in a fraction of a second).
const ENQUEUE_ROUNDS: usize = 5;

/// One round: the raw insert loop, then the same number of `send_message` calls, each on a
/// fresh database. Returns (enqueue rate, raw rate).
fn enqueue_round(backend: &Backend, dir: &std::path::Path, round: usize) -> (f64, f64) {
    const N: usize = 5_000;
    let raw = raw_insert_rate(&dir.join(format!("raw{round}.db")), N);
    let client = open_client(
        fast_config(
            &dir.join(format!("enqueue{round}.db")),
            &backend.url(),
            "alice",
        ),
        backend.token("alice"),
    );
    client
        .create_room("bench".into(), RoomKind::Public, String::new(), None)
        .expect("room");
    let started = Instant::now();
    for i in 0..N {
        client
            .send_message("bench".into(), format!("message {i}"))
            .expect("send");
    }
    let rate = N as f64 / started.elapsed().as_secs_f64();
    (rate, raw)
}

/// Median enqueue rate, median raw rate, and the median of the rounds' ratios.
async fn enqueue(backend: &Backend, dir: &std::path::Path) -> (f64, f64, f64) {
    let rounds: Vec<(f64, f64)> = (0..ENQUEUE_ROUNDS)
        .map(|round| enqueue_round(backend, dir, round))
        .collect();
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (
        med(rounds.iter().map(|r| r.0).collect()),
        med(rounds.iter().map(|r| r.1).collect()),
        med(rounds.iter().map(|r| r.0 / r.1).collect()),
    )
}

async fn replay(backend: &mut Backend, dir: &std::path::Path) -> Duration {
    const N: usize = 10_000;
    backend.api("alice").create_room("replay", "public").await;
    backend.stop().await;
    let client = open_client(
        fast_config(&dir.join("replay.db"), &backend.url(), "alice"),
        backend.token("alice"),
    );
    for i in 0..N {
        client
            .send_message("replay".into(), format!("r{i:05}"))
            .expect("queue");
    }
    backend.start().await;
    let started = Instant::now();
    client.start().await.expect("start");
    wait_until("the outbox is empty", || client.metrics().outbox_depth == 0).await;
    let took = started.elapsed();
    let stored = backend.api("alice").all_messages("replay").await;
    assert_eq!(stored.len(), N, "every mutation applied exactly once");
    for (i, m) in stored.iter().enumerate() {
        assert_eq!(m["body"], format!("r{i:05}"), "in order");
    }
    client.shutdown().await;
    took
}

async fn import(backend: &Backend, room: &str, n: usize) {
    let api = backend.api("alice");
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(5_000);
        let bodies: Vec<String> = (done..done + batch).map(|i| format!("i{i:06}")).collect();
        let (s, b) = api
            .post(
                &format!("/v1/rooms/{room}/messages/import"),
                json!({ "bodies": bodies }),
            )
            .await;
        assert_eq!(s, 200, "import: {b}");
        done += batch;
    }
}

async fn recovery(backend: &Backend, dir: &std::path::Path) -> Duration {
    const N: u64 = 10_000;
    let api = backend.api("alice");
    api.create_room("outage", "public").await;
    let db = dir.join("bob.db");
    let bob = open_client(
        fast_config(&db, &backend.url(), "bob"),
        backend.token("bob"),
    );
    bob.start().await.expect("start");
    bob.join_room("outage".into()).expect("join");
    wait_until("bob follows the room", || {
        bob.metrics().outbox_depth == 0 && bob.room("outage".into()).ok().flatten().is_some()
    })
    .await;
    bob.shutdown().await;
    drop(bob);
    import(backend, "outage", N as usize).await;
    let bob = open_client(
        fast_config(&db, &backend.url(), "bob"),
        backend.token("bob"),
    );
    let started = Instant::now();
    bob.start().await.expect("start");
    wait_until("bob recovered everything", || {
        bob.room("outage".into())
            .ok()
            .flatten()
            .is_some_and(|r| r.last_seq >= r.head_seq && r.head_seq >= N)
            && bob.metrics().events_recovered >= N
    })
    .await;
    let took = started.elapsed();
    let newest = bob.messages("outage".into(), None, 1).expect("read");
    assert_eq!(
        newest[0].body,
        format!("i{:06}", N - 1),
        "complete up to the last one"
    );
    bob.shutdown().await;
    took
}

async fn cold_start(backend: &Backend, dir: &std::path::Path) -> Duration {
    const N: u64 = 100_000;
    let api = backend.api("alice");
    api.create_room("big", "public").await;
    import(backend, "big", N as usize).await;
    let db = dir.join("carol.db");
    {
        let carol = open_client(
            fast_config(&db, &backend.url(), "carol"),
            backend.token("carol"),
        );
        carol.start().await.expect("start");
        carol.join_room("big".into()).expect("join");
        wait_until("carol holds 100,000 messages", || {
            carol.metrics().events_recovered >= N
        })
        .await;
        carol.shutdown().await;
    }
    let mut times = Vec::new();
    for _ in 0..15 {
        let started = Instant::now();
        let c = open_client(
            fast_config(&db, &backend.url(), "carol"),
            backend.token("carol"),
        );
        let rooms = c.rooms().expect("rooms");
        let page = c.messages("big".into(), None, 50).expect("page");
        times.push(started.elapsed());
        assert!(!rooms.is_empty() && page.len() == 50);
        drop(c);
    }
    median(times)
}

const SCENARIOS: [&str; 4] = ["enqueue", "replay", "recovery", "cold_start"];

/// The scenarios asked for on the command line (flags such as cargo's `--bench` are ignored)
/// or in `ROAM_BENCH`; all of them when none is named.
fn selected() -> Vec<String> {
    let mut names: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if names.is_empty() {
        if let Ok(env) = std::env::var("ROAM_BENCH") {
            names = env
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
    }
    for n in &names {
        assert!(
            SCENARIOS.contains(&n.as_str()),
            "unknown scenario {n}; known: {SCENARIOS:?}"
        );
    }
    if names.is_empty() {
        SCENARIOS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        names
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let run = selected();
    let wants = |name: &str| run.iter().any(|n| n == name);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut backend = Backend::down_with(|c| c.max_recovery_events = 1_000_000);
    backend.start().await;

    if wants("enqueue") {
        let (rate, raw, ratio) = enqueue(&backend, dir.path()).await;
        println!(
            "outbox enqueue: {rate:.0}/s; raw rusqlite insert: {raw:.0}/s; ratio {ratio:.2} (target >= 0.50) {} (medians of {ENQUEUE_ROUNDS} paired rounds)",
            verdict(ratio >= 0.5)
        );
    }

    if wants("replay") {
        let took = replay(&mut backend, dir.path()).await;
        println!(
            "replay of 10,000 queued mutations: {:.0} ms (target < 1000 ms) {}",
            took.as_secs_f64() * 1e3,
            verdict(took < Duration::from_secs(1))
        );
    }

    if wants("recovery") {
        let took = recovery(&backend, dir.path()).await;
        println!(
            "recovery of 10,000 missed events: {:.0} ms (target < 2000 ms) {}",
            took.as_secs_f64() * 1e3,
            verdict(took < Duration::from_secs(2))
        );
    }

    if wants("cold_start") {
        let took = cold_start(&backend, dir.path()).await;
        println!(
            "cold start with 100,000 messages (median of 15): {:.1} ms (target < 50 ms) {}",
            took.as_secs_f64() * 1e3,
            verdict(took < Duration::from_millis(50))
        );
    }
    backend.stop().await;
}
