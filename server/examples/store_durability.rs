//! What `synchronous=FULL` costs the store: commits per second of a group-committed write loop
//! with FULL and with NORMAL, measured in the same run on the same machine.
//!
//! `cargo run --release -p roam-server --example store_durability [writes] [writers]`
//!
//! `writers` tasks each commit `message.send`-like writes one after another (each awaits its
//! commit, as a client's request does), so the store's writer thread groups whatever is queued
//! into one transaction. Each mode runs three times alternately; the median is reported.

use std::sync::Arc;
use std::time::Instant;

use roam_proto::RoomKind;
use roam_server::store::sqlite::{SqliteStore, Synchronous};
use roam_server::store::{Change, Store, Write};

fn write(actor: &str, now: i64, change: Change) -> Write {
    Write {
        actor: actor.into(),
        now,
        guard: None,
        after: None,
        idem: None,
        change,
        notify: Vec::new(),
    }
}

async fn run(sync: Synchronous, writes: usize, writers: usize) -> Result<f64, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store = Arc::new(
        SqliteStore::open_with(&dir.path().join("roam.db"), 1, sync)
            .await
            .map_err(|e| e.to_string())?,
    );
    store
        .commit(write(
            "bench",
            1,
            Change::CreateRoom {
                name: "bench".into(),
                kind: RoomKind::Public,
                title: String::new(),
                metadata: serde_json::json!({}),
                owner: "bench".into(),
            },
        ))
        .await
        .map_err(|e| e.to_string())?;
    let per_writer = writes / writers;
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..per_writer {
                    let change = Change::InsertMessage {
                        id: format!("m-{w}-{i}"),
                        room: "bench".into(),
                        body: "a message of ordinary length for a chat".into(),
                        reply_to: None,
                        attachment: None,
                    };
                    store
                        .commit(write("bench", 2, change))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok((per_writer * writers) as f64 / started.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let writes: usize = args
        .next()
        .map_or(Ok(20_000), |a| a.parse())
        .map_err(|e| format!("{e}"))?;
    let writers: usize = args
        .next()
        .map_or(Ok(64), |a| a.parse())
        .map_err(|e| format!("{e}"))?;
    let (mut full, mut normal) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        full.push(run(Synchronous::Full, writes, writers).await?);
        normal.push(run(Synchronous::Normal, writes, writers).await?);
    }
    let (f, n) = (median(full), median(normal));
    println!("writes {writes}, concurrent writers {writers}, median of 3 runs each");
    println!("synchronous=FULL   {f:>10.0} commits/s");
    println!("synchronous=NORMAL {n:>10.0} commits/s");
    println!("FULL / NORMAL      {:>10.1} %", 100.0 * f / n);
    Ok(())
}
