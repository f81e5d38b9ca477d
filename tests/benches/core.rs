//! Benchmarks of the client core against the real server on loopback, each compared with its
//! target (BENCHMARKS.md lists them). Run on demand (not in CI): `cargo bench -p roam-tests --bench core`.
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
//! 5. App calls during catch-up: while the client applies 10,000 missed events (ten rounds),
//!    a separate thread standing in for the app's main thread calls `send_message` and
//!    `messages` one after the other; each call's duration is recorded. Target: p99
//!    ≤ 2 ms and max ≤ 8 ms during catch-up. The same calls made while synced and idle, in the
//!    same run, are the baseline.
//!
//! Scenarios 1–4 also run on an encrypted store (SQLCipher, `ClientConfig::store_key`) in the
//! same run, paired with the plain run, and the encrypted figure is reported as a ratio of the
//! plain one: target within 15 %. Pairs run in both orders, alternately (the second run of a
//! pair found the server holding the first one's messages and was slower for it: a fixed order
//! put a fixed bias into the ratio), and the median of the pairs' ratios is reported. The
//! encrypted cold start opens a copy of the plain store, encrypted by its first open with the
//! key, so both open the same 100,000 messages; it is also the open-to-first-query time with a
//! key (target ≤ 10 ms).
//!
//! Scenarios can be picked by name: `cargo bench -p roam-tests --bench core -- enqueue replay`
//! (names: `enqueue`, `replay`, `recovery`, `cold_start`, `app_calls`; none given: all of them).
//! The same list can come from `ROAM_BENCH` (comma or space separated).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roam_core::{Client, ClientConfig, ConnectionState, RoomKind, StoreKey};
use roam_tests::{fast_config, open_client, wait_until, Backend};

/// The key of the encrypted variants.
const KEY: [u8; 32] = [0x42; 32];

/// A plain store (`None`) or the encrypted one.
type Key = Option<StoreKey>;

/// [`fast_config`] with the store key of the variant.
fn config(db: &std::path::Path, url: &str, user: &str, key: &Key) -> ClientConfig {
    let mut c = fast_config(db, url, user);
    c.store_key = key.clone();
    c
}

/// "-enc" for the encrypted variant (file and room names), "" for the plain one.
fn tag(key: &Key) -> &'static str {
    if key.is_some() {
        "-enc"
    } else {
        ""
    }
}
use serde_json::json;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median of `v` (the mean of the middle two for an even count).
fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n.is_multiple_of(2) {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    }
}

/// Pairs of plain and encrypted runs of the scenarios 2 and 3 (half in each order).
const PAIRS: usize = 8;

/// The variants of pair `round` in the order they run: plain first in even rounds, encrypted
/// first in odd ones.
fn pair_order(round: usize) -> [Key; 2] {
    let (plain, encrypted) = (None, Some(StoreKey::new(KEY)));
    if round.is_multiple_of(2) {
        [plain, encrypted]
    } else {
        [encrypted, plain]
    }
}

/// Paired figures of one scenario: (plain, encrypted) per pair.
#[derive(Debug, Default)]
struct Pairs(Vec<(Duration, Duration)>);

impl Pairs {
    fn push(&mut self, key: &Key, took: Duration, round: usize) {
        if self.0.len() <= round {
            self.0.push((Duration::ZERO, Duration::ZERO));
        }
        let pair = &mut self.0[round];
        if key.is_some() {
            pair.1 = took;
        } else {
            pair.0 = took;
        }
    }

    /// The plain run of the first pair, on a server that holds nothing else yet (later pairs
    /// find the messages of the earlier ones there, and take longer for it), for the target of
    /// the scenario itself.
    fn first_plain(&self) -> Duration {
        self.0.first().map_or(Duration::ZERO, |p| p.0)
    }

    fn encrypted(&self) -> Duration {
        median(self.0.iter().map(|p| p.1).collect())
    }

    fn ratio(&self) -> f64 {
        median_f64(
            self.0
                .iter()
                .map(|p| p.1.as_secs_f64() / p.0.as_secs_f64())
                .collect(),
        )
    }

    /// "encrypted store: 812 ms; ratio 1.04 (target <= 1.15) MET (median of 4 pairs, both orders)".
    fn report(&self) -> String {
        let ratio = self.ratio();
        format!(
            "encrypted store: {:.0} ms; ratio {ratio:.2} (target <= 1.15) {} (median of {} pairs, both orders)",
            self.encrypted().as_secs_f64() * 1e3,
            verdict(ratio <= 1.15),
            self.0.len()
        )
    }
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
/// a single round of 5,000 writes is over in a fraction of a second). Even, for both orders.
const ENQUEUE_ROUNDS: usize = 6;

/// `send_message` calls per second on a fresh database.
fn enqueue_rate(backend: &Backend, dir: &std::path::Path, round: usize, key: &Key) -> f64 {
    const N: usize = 5_000;
    let client = open_client(
        config(
            &dir.join(format!("enqueue{round}{}.db", tag(key))),
            &backend.url(),
            "alice",
            key,
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
    N as f64 / started.elapsed().as_secs_f64()
}

/// One round: the raw insert loop, then the same number of `send_message` calls on a fresh
/// plain database and on a fresh encrypted one (in the order of [`pair_order`]). Returns
/// (enqueue rate, raw rate, encrypted enqueue rate).
fn enqueue_round(backend: &Backend, dir: &std::path::Path, round: usize) -> (f64, f64, f64) {
    const N: usize = 5_000;
    let raw = raw_insert_rate(&dir.join(format!("raw{round}.db")), N);
    let (mut rate, mut encrypted) = (0.0, 0.0);
    for key in pair_order(round) {
        let r = enqueue_rate(backend, dir, round, &key);
        if key.is_some() {
            encrypted = r;
        } else {
            rate = r;
        }
    }
    (rate, raw, encrypted)
}

/// Medians of the rounds: enqueue rate, raw rate, their ratio, encrypted enqueue rate, and the
/// ratio encrypted / plain.
async fn enqueue(backend: &Backend, dir: &std::path::Path) -> (f64, f64, f64, f64, f64) {
    let rounds: Vec<(f64, f64, f64)> = (0..ENQUEUE_ROUNDS)
        .map(|round| enqueue_round(backend, dir, round))
        .collect();
    (
        median_f64(rounds.iter().map(|r| r.0).collect()),
        median_f64(rounds.iter().map(|r| r.1).collect()),
        median_f64(rounds.iter().map(|r| r.0 / r.1).collect()),
        median_f64(rounds.iter().map(|r| r.2).collect()),
        median_f64(rounds.iter().map(|r| r.2 / r.0).collect()),
    )
}

async fn replay(backend: &mut Backend, dir: &std::path::Path, key: &Key, round: usize) -> Duration {
    const N: usize = 10_000;
    let room = format!("replay{round}{}", tag(key));
    // A user of its own per run: a fresh client of a user who has the rooms of the earlier runs
    // would catch up with them too, while it replays.
    let user = format!("sender-{room}");
    backend.api(&user).create_room(&room, "public").await;
    backend.stop().await;
    let client = open_client(
        config(&dir.join(format!("{room}.db")), &backend.url(), &user, key),
        backend.token(&user),
    );
    for i in 0..N {
        client
            .send_message(room.clone(), format!("r{i:05}"))
            .expect("queue");
    }
    backend.start().await;
    let started = Instant::now();
    client.start().await.expect("start");
    wait_until("the outbox is empty", || client.metrics().outbox_depth == 0).await;
    let took = started.elapsed();
    let stored = backend.api(&user).all_messages(&room).await;
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

async fn recovery(backend: &Backend, dir: &std::path::Path, key: &Key, round: usize) -> Duration {
    const N: u64 = 10_000;
    let api = backend.api("alice");
    let room = format!("outage{round}{}", tag(key));
    api.create_room(&room, "public").await;
    let db = dir.join(format!("bob{round}{}.db", tag(key)));
    // A reader of its own per run (see `replay`).
    let bob = format!("reader-{room}");
    let client = open_client(config(&db, &backend.url(), &bob, key), backend.token(&bob));
    client.start().await.expect("start");
    client.join_room(room.clone()).expect("join");
    wait_until("bob follows the room", || {
        client.metrics().outbox_depth == 0 && client.room(room.clone()).ok().flatten().is_some()
    })
    .await;
    client.shutdown().await;
    drop(client);
    import(backend, &room, N as usize).await;
    let bob = open_client(config(&db, &backend.url(), &bob, key), backend.token(&bob));
    let started = Instant::now();
    bob.start().await.expect("start");
    wait_until("bob recovered everything", || {
        bob.room(room.clone())
            .ok()
            .flatten()
            .is_some_and(|r| r.last_seq >= r.head_seq && r.head_seq >= N)
            && bob.metrics().events_recovered >= N
    })
    .await;
    let took = started.elapsed();
    let newest = bob.messages(room.clone(), None, 1).expect("read");
    assert_eq!(
        newest[0].body,
        format!("i{:06}", N - 1),
        "complete up to the last one"
    );
    bob.shutdown().await;
    took
}

/// Median cold start on the plain store and on an encrypted copy of it.
async fn cold_start(backend: &Backend, dir: &std::path::Path) -> (Duration, Duration) {
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
    // The encrypted copy: the closed plain store (no WAL left) copied, then encrypted by its
    // first open with the key.
    let encrypted_db = dir.join("carol-enc.db");
    std::fs::copy(&db, &encrypted_db).expect("copy");
    let key = Some(StoreKey::new(KEY));
    drop(open_client(
        config(&encrypted_db, &backend.url(), "carol", &key),
        backend.token("carol"),
    ));
    let open = |db: &std::path::Path, key: &Key| {
        let started = Instant::now();
        let c = open_client(
            config(db, &backend.url(), "carol", key),
            backend.token("carol"),
        );
        let rooms = c.rooms().expect("rooms");
        let page = c.messages("big".into(), None, 50).expect("page");
        let took = started.elapsed();
        assert!(!rooms.is_empty() && page.len() == 50);
        drop(c);
        took
    };
    let mut plain = Vec::new();
    let mut encrypted = Vec::new();
    for _ in 0..15 {
        plain.push(open(&db, &None));
        encrypted.push(open(&encrypted_db, &key));
    }
    (median(plain), median(encrypted))
}

/// The encrypted figure against the plain one: "ratio 1.04 (target <= 1.15) MET".
fn against_plain(plain: Duration, encrypted: Duration) -> String {
    let ratio = encrypted.as_secs_f64() / plain.as_secs_f64();
    format!(
        "ratio {ratio:.2} (target <= 1.15) {}",
        verdict(ratio <= 1.15)
    )
}

/// What the app thread of [`app_calls`] is doing.
const APP_IDLE: u8 = 0;
const APP_CALLING: u8 = 1;
const APP_STOP: u8 = 2;

/// One app call: which one (`true`: `send_message`), when it started, how long it took, and how
/// much of that the thread was ready to run but waiting for a CPU.
#[derive(Debug, Clone, Copy)]
struct Call {
    send: bool,
    at: Instant,
    took: Duration,
    no_cpu: Duration,
}

/// How long the calling thread has been ready to run but waiting for a CPU, in all (the second
/// field of Linux's `/proc/thread-self/schedstat`; zero where there is none).
fn waited_for_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// The app's thread: while told to, calls `send_message` and `messages` (the newest 50) in
/// turn, about once a millisecond, and records every call.
fn app_thread(
    client: Arc<Client>,
    room: String,
    mode: Arc<AtomicU8>,
    calls: Arc<Mutex<Vec<Call>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        loop {
            match mode.load(Ordering::SeqCst) {
                APP_STOP => return,
                APP_IDLE => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                _ => {}
            }
            n += 1;
            let send = n.is_multiple_of(2);
            let cpu_wait = waited_for_cpu();
            let at = Instant::now();
            if send {
                client
                    .send_message(room.clone(), format!("app {n}"))
                    .expect("send");
            } else {
                let page = client.messages(room.clone(), None, 50).expect("messages");
                assert!(!page.is_empty());
            }
            let took = at.elapsed();
            let no_cpu = waited_for_cpu().saturating_sub(cpu_wait);
            calls.lock().expect("calls").push(Call {
                send,
                at,
                took,
                no_cpu,
            });
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

/// p50, p99 and max of some durations, in milliseconds.
fn spread(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (ms(at(0.5)), ms(at(0.99)), ms(v[v.len() - 1]))
}

/// Figures of one group of app calls: p50, p99 and max of their durations, and p99 and max of
/// how long they waited for a CPU (in milliseconds).
#[derive(Debug, Clone, Copy)]
struct Spread {
    calls: usize,
    p50: f64,
    p99: f64,
    max: f64,
    no_cpu_p99: f64,
    no_cpu_max: f64,
}

/// Figures of [`app_calls`], per group.
type Figures = Vec<(&'static str, Spread)>;

/// A multi-threaded runtime of two workers, each of which runs `at_start` first.
fn runtime(name: &str, at_start: fn()) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .on_thread_start(at_start)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Makes the calling thread the lowest priority there is (nice 19).
#[allow(unsafe_code)]
fn lowest_priority() {
    // SAFETY: `setpriority` reads its arguments only; who = 0 is the calling thread on Linux.
    let done = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    assert_eq!(done, 0, "setpriority");
}

/// Rounds of 10,000 events missed offline in [`app_calls`].
const CATCH_UP_ROUNDS: usize = 10;

/// App calls during catch-ups, on the threads a phone would have:
/// - the client on a runtime of its own, made as the bindings make theirs: its workers run at
///   the library's background priority (`roam_core::priority`);
/// - the app's thread at the default priority;
/// - the server (in this process, on a runtime of its own) at the lowest priority: it stands in
///   for another machine, which takes no CPU from the phone.
async fn app_calls(dir: &std::path::Path) -> (Figures, Duration) {
    const N: u64 = 10_000;
    let room = "catchup";
    let server_rt = runtime("server", lowest_priority);
    let client_rt = runtime("roam", || {
        assert!(roam_core::priority::lower_current_thread());
    });
    let mut server = server_rt
        .spawn(async {
            let mut b = Backend::down_with(|c| c.max_recovery_events = 1_000_000);
            b.start().await;
            b
        })
        .await
        .expect("server");
    let backend = &server;
    backend.api("alice").create_room(room, "public").await;
    let client = Arc::new(open_client(
        fast_config(&dir.join("app.db"), &backend.url(), "dave"),
        backend.token("dave"),
    ));
    let starting = Arc::clone(&client);
    client_rt
        .spawn(async move { starting.start().await })
        .await
        .expect("client runtime")
        .expect("start");
    client.join_room(room.into()).expect("join");
    wait_until("dave follows the room", || {
        client.metrics().outbox_depth == 0 && client.room(room.into()).ok().flatten().is_some()
    })
    .await;
    client
        .send_message(room.into(), "first".into())
        .expect("send");

    let mode = Arc::new(AtomicU8::new(APP_IDLE));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let app = app_thread(
        Arc::clone(&client),
        room.to_owned(),
        Arc::clone(&mode),
        Arc::clone(&calls),
    );
    // (start, end) of each catch-up: from the last look that saw nothing applied yet to the
    // first that saw everything applied.
    let mut windows = Vec::new();
    let mut catch_up_time = Duration::ZERO;
    for _ in 0..CATCH_UP_ROUNDS {
        // Baseline: connected, caught up, nothing arriving.
        wait_until("the outbox is empty", || client.metrics().outbox_depth == 0).await;
        mode.store(APP_CALLING, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        mode.store(APP_IDLE, Ordering::SeqCst);
        wait_until("the outbox is empty", || client.metrics().outbox_depth == 0).await;

        client.set_online(false);
        wait_until("offline", || {
            client.connection_state() == ConnectionState::Offline
        })
        .await;
        import(backend, room, N as usize).await;
        let base = client.metrics().events_recovered;
        mode.store(APP_CALLING, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.set_online(true);
        let mut start = Instant::now();
        let end = loop {
            let looked = Instant::now();
            let applied = client.metrics().events_recovered - base;
            if applied == 0 {
                start = looked;
            } else if applied >= N {
                break looked;
            }
            assert!(looked - start < roam_tests::WAIT, "catch-up did not finish");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        mode.store(APP_IDLE, Ordering::SeqCst);
        catch_up_time += end - start;
        windows.push((start, end));
    }
    mode.store(APP_STOP, Ordering::SeqCst);
    app.join().expect("app thread");

    let calls = std::mem::take(&mut *calls.lock().expect("calls"));
    let during = |c: &Call| windows.iter().any(|(s, e)| c.at >= *s && c.at <= *e);
    let mut figures = Figures::new();
    for (label, caught_up, send) in [
        ("during catch-up, send_message", true, Some(true)),
        ("during catch-up, messages", true, Some(false)),
        ("during catch-up, all calls", true, None),
        ("baseline (synced, idle), send_message", false, Some(true)),
        ("baseline (synced, idle), messages", false, Some(false)),
        ("baseline (synced, idle), all calls", false, None),
    ] {
        let picked: Vec<&Call> = calls
            .iter()
            .filter(|c| during(c) == caught_up && send.is_none_or(|s| c.send == s))
            .collect();
        assert!(!picked.is_empty(), "no calls for {label}");
        let (p50, p99, max) = spread(picked.iter().map(|c| c.took).collect());
        let (_, no_cpu_p99, no_cpu_max) = spread(picked.iter().map(|c| c.no_cpu).collect());
        figures.push((
            label,
            Spread {
                calls: picked.len(),
                p50,
                p99,
                max,
                no_cpu_p99,
                no_cpu_max,
            },
        ));
    }
    let newest = client.messages(room.into(), None, 1).expect("read");
    assert!(!newest.is_empty());
    let closing = Arc::clone(&client);
    client_rt
        .spawn(async move { closing.shutdown().await })
        .await
        .expect("client runtime");
    server_rt
        .spawn(async move { server.stop().await })
        .await
        .expect("server runtime");
    // Dropping a runtime would block this async function: both are left to end on their own.
    client_rt.shutdown_background();
    server_rt.shutdown_background();
    (figures, catch_up_time / CATCH_UP_ROUNDS as u32)
}

const SCENARIOS: [&str; 5] = ["enqueue", "replay", "recovery", "cold_start", "app_calls"];

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
        let (rate, raw, ratio, encrypted, against) = enqueue(&backend, dir.path()).await;
        println!(
            "outbox enqueue: {rate:.0}/s; raw rusqlite insert: {raw:.0}/s; ratio {ratio:.2} (target >= 0.50) {} (medians of {ENQUEUE_ROUNDS} paired rounds)",
            verdict(ratio >= 0.5)
        );
        println!(
            "  encrypted store: {encrypted:.0}/s; encrypted / plain {against:.2} (target >= 0.87, within 15 %) {}",
            verdict(against >= 1.0 / 1.15)
        );
    }

    if wants("replay") {
        let mut pairs = Pairs::default();
        for round in 0..PAIRS {
            for key in pair_order(round) {
                let took = replay(&mut backend, dir.path(), &key, round).await;
                pairs.push(&key, took, round);
            }
        }
        let took = pairs.first_plain();
        println!(
            "replay of 10,000 queued mutations: {:.0} ms (target < 1000 ms; the first pair's) {}",
            took.as_secs_f64() * 1e3,
            verdict(took < Duration::from_secs(1))
        );
        println!("  {}", pairs.report());
    }

    if wants("recovery") {
        let mut pairs = Pairs::default();
        for round in 0..PAIRS {
            for key in pair_order(round) {
                let took = recovery(&backend, dir.path(), &key, round).await;
                pairs.push(&key, took, round);
            }
        }
        let took = pairs.first_plain();
        println!(
            "recovery of 10,000 missed events: {:.0} ms (target < 2000 ms; the first pair's) {}",
            took.as_secs_f64() * 1e3,
            verdict(took < Duration::from_secs(2))
        );
        println!("  {}", pairs.report());
    }

    if wants("cold_start") {
        let (took, encrypted) = cold_start(&backend, dir.path()).await;
        println!(
            "cold start with 100,000 messages (median of 15): {:.1} ms (target < 50 ms) {}",
            took.as_secs_f64() * 1e3,
            verdict(took < Duration::from_millis(50))
        );
        println!(
            "  encrypted store (open to first query with a key, target <= 10 ms {}): {:.1} ms; {}",
            verdict(encrypted <= Duration::from_millis(10)),
            encrypted.as_secs_f64() * 1e3,
            against_plain(took, encrypted)
        );
    }
    if wants("app_calls") {
        let (figures, took) = app_calls(dir.path()).await;
        println!(
            "app calls from another thread, {CATCH_UP_ROUNDS} catch-ups of 10,000 missed events (mean catch-up {:.0} ms):",
            took.as_secs_f64() * 1e3
        );
        for (label, f) in &figures {
            println!(
                "  {label}: {} calls, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (waiting for a CPU: p99 {:.2} ms, max {:.2} ms)",
                f.calls, f.p50, f.p99, f.max, f.no_cpu_p99, f.no_cpu_max
            );
        }
        let all = figures[2].1;
        println!(
            "  target during catch-up: p99 <= 2 ms and max <= 8 ms: {}",
            verdict(all.p99 <= 2.0 && all.max <= 8.0)
        );
    }
    backend.stop().await;
}
