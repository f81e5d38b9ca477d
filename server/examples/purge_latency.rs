//! Write latency while retention purges a million expired rows: the purge runs in batches
//! (`ROAM_RETENTION_BATCH_ROWS`), each its own transaction, and writes queued meanwhile are
//! committed between them.
//!
//! `cargo run --release -p roam-server --example purge_latency [rows] [batch_rows]`
//!
//! Fills a fresh store with `rows` expired notifications, then starts a retention pass and,
//! until it ends, commits one message at a time, recording each commit's latency. Prints the
//! pass's duration and batches and the latency percentiles; nothing is asserted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use roam_proto::RoomKind;
use roam_server::store::sqlite::SqliteStore;
use roam_server::store::{Change, NewNotification, RetentionCutoffs, Store, Write};

fn write(now: i64, change: Change, notify: Vec<NewNotification>) -> Write {
    Write {
        actor: "bench".into(),
        now,
        idem: None,
        change,
        notify,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let rows: usize = args
        .next()
        .map_or(Ok(1_000_000), |a| a.parse())
        .map_err(|e| format!("{e}"))?;
    let batch: u32 = args
        .next()
        .map_or(Ok(1_000), |a| a.parse())
        .map_err(|e| format!("{e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("roam.db"), 2)
            .await
            .map_err(|e| e.to_string())?,
    );
    let e = |e: roam_server::store::StoreError| e.to_string();
    store
        .commit(write(
            1,
            Change::CreateRoom {
                name: "bench".into(),
                kind: RoomKind::Public,
                title: String::new(),
                metadata: serde_json::json!({}),
                owner: "bench".into(),
            },
            Vec::new(),
        ))
        .await
        .map_err(e)?;
    let filled = Instant::now();
    let per_write = 10_000;
    for chunk in 0..rows.div_ceil(per_write) {
        let notify = (0..per_write.min(rows - chunk * per_write))
            .map(|i| NewNotification {
                user: format!("user-{}", i % 1_000),
                id: format!("n-{chunk}-{i}"),
                kind: "mentioned".into(),
                room: None,
                data: serde_json::json!({}),
            })
            .collect();
        store
            .commit(write(1, Change::MarkRead { ids: Some(vec![]) }, notify))
            .await
            .map_err(e)?;
    }
    println!(
        "filled {rows} expired notifications in {:?}",
        filled.elapsed()
    );

    let cutoffs = RetentionCutoffs {
        presence_before: i64::MIN,
        document_history_before: i64::MIN,
        notifications_before: 2,
        idempotency_before: i64::MIN,
        invitations_before: i64::MIN,
        events_before: None,
        batch_rows: batch,
    };
    let started = Instant::now();
    let purge = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.purge(cutoffs).await }
    });
    let mut latencies = Vec::new();
    let mut n = 0u64;
    while !purge.is_finished() {
        n += 1;
        let t = Instant::now();
        store
            .commit(write(
                3,
                Change::InsertMessage {
                    id: format!("m{n}"),
                    room: "bench".into(),
                    body: "written during the purge".into(),
                    reply_to: None,
                },
                Vec::new(),
            ))
            .await
            .map_err(e)?;
        latencies.push(t.elapsed());
    }
    let purged = purge.await.map_err(|e| e.to_string())?.map_err(e)?;
    let took = started.elapsed();
    latencies.sort();
    println!(
        "purge: {} notifications in {} batches of at most {batch} rows, {took:?}",
        purged.notifications, purged.batches
    );
    println!(
        "{} writes during the purge: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    Ok(())
}
