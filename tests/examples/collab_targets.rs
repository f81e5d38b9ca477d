//! The latency targets of collaborative documents (issue 22), measured with real roam-core
//! clients through a real server on loopback (the server runs in this process too):
//!
//! 1. `clients` clients (default 100) follow one document and type at a human pace — one
//!    keystroke every `interval` ms each (default 200, with a random start so they do not type
//!    in step) for `seconds` (default 10): how long an edit takes from `insert_text` to the
//!    change callback of each other client, p50 and p99 (target p99 ≤ 100 ms);
//! 2. a client offline while another types 10,000 keystrokes catches up: time from
//!    `set_online(true)` to holding the writer's text (target ≤ 100 ms).
//!
//! ```text
//! cargo run --release -p roam-tests --example collab_targets [-- clients interval-ms seconds]
//! ```
//!
//! Each keystroke inserts two private-use characters naming its client and its number, at a
//! random boundary between keystrokes, so every receiver can tell which edit reached it from the
//! delta alone. Every client has its own store and connection, as on separate phones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use roam_core::{
    Client, CollabChange, CollabDoc, CollabError, CollabListener, CollabValueChange, RoomKind,
    TextDelta,
};
use roam_tests::{fast_config, open_client, Backend};

const ROOM: &str = "pad";
const DOC: &str = "notes";
const TEXT: &str = "body";
/// First character of a keystroke: `CLIENT_BASE + client`.
const CLIENT_BASE: u32 = 0xE000;
/// Second character: `EDIT_BASE + keystroke number` (at most `MAX_EDITS` per client).
const EDIT_BASE: u32 = 0xF000;
const MAX_EDITS: u32 = 0x800;
const OFFLINE_EDITS: usize = 10_000;
const TARGET: Duration = Duration::from_millis(100);

type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

/// When each keystroke was made, and the delays at which the others saw it.
#[derive(Default)]
struct Book {
    sent: Mutex<HashMap<(u32, u32), Instant>>,
    delays: Mutex<Vec<Duration>>,
    /// Receiving is counted only while this is set (not during the warm-up and the wind-down).
    open: AtomicBool,
}

struct Receiver {
    me: u32,
    book: Arc<Book>,
}

impl CollabListener for Receiver {
    fn on_change(&self, change: CollabChange) {
        let now = Instant::now();
        if change.local || !self.book.open.load(Ordering::SeqCst) {
            return;
        }
        for c in change.changes {
            let CollabValueChange::Text { delta, .. } = c else {
                continue;
            };
            for d in delta {
                let TextDelta::Insert { text, .. } = d else {
                    continue;
                };
                let units: Vec<u32> = text.chars().map(u32::from).collect();
                let sent = self.book.sent.lock();
                let mut delays = self.book.delays.lock();
                for pair in units.chunks_exact(2) {
                    let (Some(who), Some(k)) = (
                        pair[0].checked_sub(CLIENT_BASE),
                        pair[1].checked_sub(EDIT_BASE),
                    ) else {
                        continue;
                    };
                    let key = (who, k);
                    if who == self.me {
                        continue;
                    }
                    if let Some(t) = sent.get(&key) {
                        delays.push(now.saturating_duration_since(*t));
                    }
                }
            }
        }
    }

    fn on_error(&self, error: CollabError) {
        eprintln!(
            "client {}: refused: {} {}",
            self.me, error.code, error.message
        );
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Fallible<()> {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting until {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// `n` clients in the room with the document open; the first created the room.
async fn join(
    backend: &Backend,
    dir: &std::path::Path,
    n: usize,
    prefix: &str,
) -> Fallible<Vec<(Client, CollabDoc)>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let user = format!("{prefix}{i}");
        let c = open_client(
            fast_config(&dir.join(format!("{user}.db")), &backend.url(), &user),
            backend.token(&user),
        );
        c.start().await?;
        if i == 0 && prefix == "u" {
            c.create_room(ROOM.into(), RoomKind::Public, "Pad".into(), None)?;
            wait_for("the room exists", Duration::from_secs(30), || {
                c.metrics().outbox_depth == 0
            })
            .await?;
        } else {
            backend.api(&user).join(ROOM).await;
        }
        let doc = c.open_collab(ROOM, DOC)?;
        out.push((c, doc));
    }
    Ok(out)
}

async fn typing(clients: usize, interval: Duration, seconds: u64) -> Fallible<bool> {
    let backend = Backend::up().await;
    let dir = tempfile::tempdir()?;
    let eds = join(&backend, dir.path(), clients, "u").await?;
    let book = Arc::new(Book::default());
    let mut subs = Vec::new();
    for (i, (_, d)) in eds.iter().enumerate() {
        subs.push(d.subscribe(Arc::new(Receiver {
            me: u32::try_from(i)?,
            book: Arc::clone(&book),
        })));
    }
    // A client reports changes of a root value from its first use of it (roam-core observes
    // roots lazily): each reads the text once before anyone types.
    for (_, d) in &eds {
        d.text_len(TEXT)?;
    }
    // Everyone follows the document: a marker from the last client reaches the first.
    eds[clients - 1]
        .1
        .map_set("m", "ready", serde_json::json!(true))?;
    wait_for(
        "every client follows the document",
        Duration::from_secs(60),
        || {
            eds.iter()
                .all(|(_, d)| d.map_get("m", "ready").ok().flatten().is_some())
        },
    )
    .await?;

    book.open.store(true, Ordering::SeqCst);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (i, (_, d)) in eds.iter().enumerate() {
        let d = d.clone();
        let book = Arc::clone(&book);
        let me = u32::try_from(i)?;
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(me));
            tokio::time::sleep(interval.mul_f64(rng.random::<f64>())).await;
            let mut k = 0u32;
            let mut made = 0u64;
            while Instant::now() < end && k < MAX_EDITS {
                let len = d.text_len(TEXT).unwrap_or(0);
                let at = 2 * rng.random_range(0..=len / 2);
                let s: String = [CLIENT_BASE + me, EDIT_BASE + k]
                    .iter()
                    .filter_map(|&u| char::from_u32(u))
                    .collect();
                book.sent.lock().insert((me, k), Instant::now());
                if d.insert_text(TEXT, at, &s, None).is_ok() {
                    made += 1;
                }
                k += 1;
                tokio::time::sleep(interval).await;
            }
            made
        }));
    }
    let mut made = 0;
    for t in tasks {
        made += t.await?;
    }
    // Let the last keystrokes arrive (callbacks run on each client's dispatcher), then stop
    // counting.
    let expected = made * (clients as u64 - 1);
    let settle = Instant::now();
    let _ = wait_for(
        "every client saw every keystroke",
        Duration::from_secs(60),
        || book.delays.lock().len() as u64 >= expected,
    )
    .await;
    book.open.store(false, Ordering::SeqCst);
    let mut delays = book.delays.lock().clone();
    delays.sort();
    let (p50, p99) = (percentile(&delays, 0.5), percentile(&delays, 0.99));
    let max = delays.last().copied().unwrap_or_default();
    let ok = p99 <= TARGET && delays.len() as u64 == expected;
    println!(
        "typing: {clients} clients, a keystroke every {} ms each for {seconds} s: {made} keystrokes, \
         {} of {expected} arrivals seen (settled in {} ms)",
        interval.as_millis(),
        delays.len(),
        settle.elapsed().as_millis()
    );
    println!(
        "  edit -> seen by another client: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 <= {} ms): {}",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        TARGET.as_millis(),
        verdict(ok)
    );
    drop(subs);
    for (c, _) in &eds {
        c.shutdown().await;
    }
    Ok(ok)
}

async fn catch_up() -> Fallible<bool> {
    let backend = Backend::up().await;
    let dir = tempfile::tempdir()?;
    let eds = join(&backend, dir.path(), 2, "u").await?;
    let (writer, wdoc) = &eds[0];
    let (reader, rdoc) = &eds[1];
    wdoc.insert_text(TEXT, 0, "start", None)?;
    wait_for("the reader has the start", Duration::from_secs(30), || {
        rdoc.text(TEXT).is_ok_and(|t| t == "start")
    })
    .await?;
    reader.set_online(false);
    // 10,000 keystrokes, typed like the editing traces: mostly appends, some deletes.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..OFFLINE_EDITS {
        let len = wdoc.text_len(TEXT)?;
        if len > 0 && rng.random_bool(0.2) {
            wdoc.delete_text(TEXT, len - 1, 1)?;
        } else {
            let at = if rng.random_bool(0.9) {
                len
            } else {
                rng.random_range(0..=len)
            };
            let c = char::from(b'a' + rng.random_range(0..26u8));
            wdoc.insert_text(TEXT, at, &c.to_string(), None)?;
        }
    }
    wdoc.flush()?;
    wait_for(
        "the writer's keystrokes are on the server",
        Duration::from_secs(120),
        || writer.metrics().outbox_depth == 0,
    )
    .await?;
    let want = wdoc.text(TEXT)?;
    let t = Instant::now();
    reader.set_online(true);
    wait_for("the reader caught up", Duration::from_secs(60), || {
        rdoc.text(TEXT).is_ok_and(|t| t == want)
    })
    .await?;
    let took = t.elapsed();
    let ok = took <= TARGET;
    println!(
        "catch-up: offline for {OFFLINE_EDITS} keystrokes ({} characters): set_online(true) -> \
         holding the server's text in {:.1} ms (target <= {} ms): {}",
        want.len(),
        took.as_secs_f64() * 1e3,
        TARGET.as_millis(),
        verdict(ok)
    );
    for (c, _) in &eds {
        c.shutdown().await;
    }
    Ok(ok)
}

fn arg(n: usize, default: u64) -> Fallible<u64> {
    Ok(match std::env::args().nth(n) {
        Some(a) => a.parse()?,
        None => default,
    })
}

async fn run() -> Fallible<bool> {
    let clients = usize::try_from(arg(1, 100)?)?;
    let interval = Duration::from_millis(arg(2, 200)?);
    let seconds = arg(3, 10)?;
    if !(2..=(MAX_EDITS as usize)).contains(&clients) {
        return Err(format!("clients must be 2..={MAX_EDITS}").into());
    }
    let a = typing(clients, interval, seconds).await?;
    let b = catch_up().await?;
    Ok(a && b)
}

fn main() -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("no runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("collab_targets: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
