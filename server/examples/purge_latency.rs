//! Write latency while retention purges a million expired rows: the purge runs in batches
//! (`ROAM_RETENTION_BATCH_ROWS`), each its own transaction, and writes queued meanwhile are
//! committed between them.
//!
//! `cargo run --release -p roam-server --example purge_latency [rows] [batch_rows]`
//!
//! Fills a fresh store with `rows` expired notifications (inserted directly, in one
//! transaction, before the store opens it), then starts a retention pass and,
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
        guard: None,
        after: None,
        idem: None,
        change,
        notify,
    }
}

/// `rows` notifications created at 1 (long expired), spread over 1,000 users.
fn fill(path: &std::path::Path, rows: usize) -> rusqlite::Result<()> {
    let mut conn = rusqlite::Connection::open(path)?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO notifications (user, seq, id, kind, room, actor, data, created_at, read) \
             VALUES (?1, ?2, ?3, 'mentioned', NULL, 'bench', '{}', 1, 0)",
        )?;
        for i in 0..rows {
            insert.execute(rusqlite::params![
                format!("user-{}", i % 1_000),
                (i / 1_000 + 1) as i64,
                format!("n-{i}")
            ])?;
        }
    }
    tx.commit()
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
    let path = dir.path().join("roam.db");
    let e = |e: roam_server::store::StoreError| e.to_string();
    // Create and migrate the database, then fill it directly: through the store, a million
    // notifications would take far longer than the purge that is measured.
    drop(SqliteStore::open(&path, 1).await.map_err(e)?);
    let filled = Instant::now();
    fill(&path, rows).map_err(|e| e.to_string())?;
    println!(
        "filled {rows} expired notifications in {:?}",
        filled.elapsed()
    );
    let store = Arc::new(SqliteStore::open(&path, 2).await.map_err(e)?);
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
                    attachment: None,
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
