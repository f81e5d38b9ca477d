//! What a backup of the live embedded store costs the writes going on meanwhile.
//!
//! `cargo run --release -p roam-server --example backup_cost [messages] [rate]`
//!
//! Fills a store with `messages` chat messages (default 300,000, about 120 MB), then sends
//! messages at `rate` per second (default 1,000) from one writer for two windows of the same
//! length: one with nothing else going on, and one during which `Store::backup` copies the
//! whole database (the window lasts as long as the backup). Each message is durable
//! (`synchronous=FULL`) and awaited. Prints the slowest write (p100) and the p99 of each window,
//! and how long the backup took and how big it is; the copy is checked with SQLite's integrity
//! check and must hold every message acknowledged before it began. Nothing is asserted but the
//! copy's contents.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roam_proto::RoomKind;
use roam_server::store::sqlite::{backup::check_copy, SqliteStore, Synchronous};
use roam_server::store::{Change, Committed, MessageCursor, Output, Store, Write};

const ROOMS: usize = 100;

fn write(actor: &str, change: Change) -> Write {
    Write {
        actor: actor.into(),
        now: 1_764_400_000_000,
        idem: None,
        guard: None,
        after: None,
        change,
        notify: Vec::new(),
    }
}

fn message(n: usize) -> Write {
    write(
        "writer",
        Change::InsertMessage {
            id: uuid::Uuid::now_v7().to_string(),
            room: format!("room-{:03}", n % ROOMS),
            body: format!("message {n}: {}", "x".repeat(300)),
            reply_to: None,
            attachment: None,
        },
    )
}

/// Sends at `rate` until `stop`; returns each write's latency and the seqs acknowledged.
async fn paced(
    store: Arc<SqliteStore>,
    rate: u64,
    start: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<Duration>, usize) {
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut latencies = Vec::new();
    let mut n = start;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let t = Instant::now();
        match store.commit(message(n)).await {
            Ok(Committed::Applied {
                output: Output::Message(_),
                ..
            }) => {}
            other => panic!("a write failed: {other:?}"),
        }
        latencies.push(t.elapsed());
        n += 1;
    }
    (latencies, n)
}

fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let fill: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(300_000);
    let rate: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1_000);
    if rate == 0 {
        return Err("the rate must be at least 1".into());
    }
    let dir = tempfile::tempdir()?;
    let store =
        Arc::new(SqliteStore::open_with(&dir.path().join("roam.db"), 2, Synchronous::Full).await?);
    for r in 0..ROOMS {
        let name = format!("room-{r:03}");
        store
            .commit(write(
                "writer",
                Change::CreateRoom {
                    name,
                    kind: RoomKind::Public,
                    title: String::new(),
                    metadata: serde_json::json!({}),
                    owner: "writer".into(),
                },
            ))
            .await?;
    }
    let fill_started = Instant::now();
    let mut pending = Vec::new();
    for n in 0..fill {
        // Many at once: the group commit fills the store quickly.
        pending.push(store.commit(message(n)));
        if pending.len() == 256 {
            for r in futures_util::future::join_all(pending.drain(..)).await {
                r?;
            }
        }
    }
    for r in futures_util::future::join_all(pending).await {
        r?;
    }
    println!(
        "filled with {fill} messages in {:.1} s; writing {rate}/s, each durable and awaited",
        fill_started.elapsed().as_secs_f64()
    );

    // The backup's length is not known in advance: measure it once, then use it for both
    // windows (the quiet one first).
    let probe = dir.path().join("probe.db");
    let t = Instant::now();
    store.backup(&probe).await?;
    let window = t.elapsed().max(Duration::from_secs(2));
    std::fs::remove_file(&probe)?;

    let stop = Arc::new(AtomicBool::new(false));
    let quiet = tokio::spawn(paced(Arc::clone(&store), rate, fill, Arc::clone(&stop)));
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let (mut before, next) = quiet.await?;

    let stop = Arc::new(AtomicBool::new(false));
    let busy = tokio::spawn(paced(Arc::clone(&store), rate, next, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let acked_before: usize = next; // every message below this index was acknowledged
    let copy = dir.path().join("backup.db");
    let t = Instant::now();
    let report = store.backup(&copy).await?;
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut during, _) = busy.await?;

    println!("| window | writes | p99 ms | p100 ms |");
    println!("|---|---|---|---|");
    for (name, v) in [("quiet", &mut before), ("during the backup", &mut during)] {
        let n = v.len();
        println!(
            "| {name} | {n} | {:.2} | {:.2} |",
            quantile(v, 0.99).as_secs_f64() * 1e3,
            quantile(v, 1.0).as_secs_f64() * 1e3
        );
    }
    println!(
        "backup: {:.0} ms, {:.1} MB; p100 during minus p100 quiet: {:.1} ms",
        took.as_secs_f64() * 1e3,
        report.bytes as f64 / 1e6,
        (quantile(&mut during, 1.0).as_secs_f64() - quantile(&mut before, 1.0).as_secs_f64()) * 1e3
    );

    // The copy is whole and holds what was acknowledged before it began.
    check_copy(&copy)?;
    let reopened = tempfile::tempdir()?;
    std::fs::copy(&copy, reopened.path().join("roam.db"))?;
    let copy_store = SqliteStore::open(&reopened.path().join("roam.db"), 1).await?;
    let mut held = 0;
    for r in 0..ROOMS {
        let room = format!("room-{r:03}");
        let mut after = 0;
        loop {
            let page = copy_store
                .messages(&room, MessageCursor::After(after), 1000)
                .await?;
            let Some(last) = page.items.last() else { break };
            after = last.seq;
            held += page.items.len();
        }
    }
    println!("the copy passes integrity_check and holds {held} messages (≥ {acked_before} acknowledged before it began)");
    if held < acked_before {
        return Err("the copy lost acknowledged messages".into());
    }
    Ok(())
}
