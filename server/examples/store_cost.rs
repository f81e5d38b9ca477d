//! The cost of one committed message on the PostgreSQL store against the embedded SQLite store,
//! measured in the same run on the same machine.
//!
//! `cargo run --release -p roam-server --example store_cost [commits] [postgres-url]`
//!
//! For each store and for 1 and 16 concurrent writers (each a distinct user, each awaiting its
//! own commits one after another), commits `commits` messages (default 2,000) into one room and
//! prints commits per second and CPU seconds per 1,000 commits: of this process (where SQLite
//! does all its work, and where the Postgres client does its share) and, for Postgres, of the
//! `postgres` server processes on this machine (read from /proc; other users of that server
//! during the run are counted too). SQLite runs with `synchronous=FULL`, Postgres with its
//! defaults (`synchronous_commit=on`): both acknowledge a write only once it is durable. The
//! Postgres URL defaults to `postgres://postgres@127.0.0.1:5432/test`; the run uses a fresh
//! schema and drops it. Nothing is asserted.

use std::sync::Arc;
use std::time::Instant;

use roam_proto::RoomKind;
use roam_server::store::postgres::PostgresStore;
use roam_server::store::sqlite::SqliteStore;
use roam_server::store::{Change, Store, Write};

#[path = "common/cpu.rs"]
mod cpu;
use cpu::{cpu_of_stat, own_cpu};

fn write(actor: &str, change: Change) -> Write {
    Write {
        actor: actor.into(),
        now: 1_704_103_200_000,
        guard: None,
        after: None,
        idem: None,
        change,
        notify: Vec::new(),
    }
}

/// CPU seconds of every process named `postgres` (live ones; a backend that exited meanwhile
/// is lost, so the pool's long-lived connections are what this measures).
fn postgres_cpu() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|s| s.contains("(postgres)"))
        .filter_map(|s| cpu_of_stat(&s))
        .sum()
}

struct Figures {
    per_sec: f64,
    own_cpu_per_k: f64,
    pg_cpu_per_k: f64,
}

/// `commits` messages from `writers` concurrent writers into a fresh room.
async fn run(store: Arc<dyn Store>, room: &str, writers: usize, commits: usize) -> Figures {
    store
        .commit(write(
            "owner",
            Change::CreateRoom {
                name: room.into(),
                kind: RoomKind::Public,
                title: room.into(),
                metadata: serde_json::json!({}),
                owner: "owner".into(),
            },
        ))
        .await
        .expect("create room");
    let each = commits / writers;
    let (cpu0, pg0, t0) = (own_cpu(), postgres_cpu(), Instant::now());
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = Arc::clone(&store);
            let room = room.to_owned();
            tokio::spawn(async move {
                let actor = format!("writer-{w}");
                for i in 0..each {
                    store
                        .commit(write(
                            &actor,
                            Change::InsertMessage {
                                id: format!("{room}-{w}-{i}"),
                                room: room.clone(),
                                body: "a message of about the usual length for a chat".into(),
                                reply_to: None,
                                attachment: None,
                            },
                        ))
                        .await
                        .expect("commit");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    let secs = t0.elapsed().as_secs_f64();
    let done = (each * writers) as f64;
    Figures {
        per_sec: done / secs,
        own_cpu_per_k: (own_cpu() - cpu0) / done * 1000.0,
        pg_cpu_per_k: (postgres_cpu() - pg0) / done * 1000.0,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let commits: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2_000);
    let base = args
        .next()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());

    let schema = format!("roam_bench_{}", uuid::Uuid::now_v7().simple());
    let (admin, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await?;
    let sep = if base.contains('?') { '&' } else { '?' };
    let pg_url = format!("{base}{sep}options=-csearch_path%3D{schema}");

    let dir = tempfile::tempdir()?;
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("roam.db"), 4).await?);
    let postgres: Arc<dyn Store> = Arc::new(PostgresStore::connect(&pg_url, 4).await?);

    println!("{commits} commits per run; CPU s per 1k commits");
    println!("| writers | SQLite commits/s | Postgres commits/s | ratio | SQLite CPU (process) | Postgres CPU (process) | Postgres CPU (server) |");
    println!("|---|---|---|---|---|---|---|");
    for writers in [1usize, 16] {
        let s = run(
            Arc::clone(&sqlite),
            &format!("s{writers}"),
            writers,
            commits,
        )
        .await;
        let p = run(
            Arc::clone(&postgres),
            &format!("p{writers}"),
            writers,
            commits,
        )
        .await;
        println!(
            "| {writers} | {:.0} | {:.0} | {:.2} | {:.3} | {:.3} | {:.3} |",
            s.per_sec,
            p.per_sec,
            p.per_sec / s.per_sec,
            s.own_cpu_per_k,
            p.own_cpu_per_k,
            p.pg_cpu_per_k
        );
    }
    drop(postgres);
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await?;
    Ok(())
}
