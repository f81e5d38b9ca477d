//! What one chat message's commit costs on the embedded SQLite store, and how much of it is the
//! sync that makes it durable: the same writes with `synchronous=FULL` (the default: every commit
//! is synced before it is answered) and `synchronous=NORMAL` (synced at checkpoints only),
//! alternating, in one run.
//!
//! `cargo run --release -p roam-server --example commit_cost [commits] [rounds] [--push-jobs]`
//!
//! Each round opens a fresh store per mode, creates 100 rooms, commits 500 messages to warm it,
//! then commits `commits` messages (default 3,000) one after another — each awaited before the
//! next, as in the race's chat workload, where a message rarely finds another one to share its
//! commit — from 1,000 users (members of their rooms) round-robin over the rooms, each with an
//! idempotency key and the membership guard the service gives every message (the store checks
//! it in the transaction). It prints commits per second, the WAL pages the writer thread appended
//! per commit (its bytes written over one 4 KiB frame), and CPU microseconds per commit: of the
//! whole process, and of the store's writer and checkpointer threads alone. A third mode,
//! `NORMAL` without the guard, shows what the check costs. Default 3 rounds. Nothing is asserted;
//! compare the modes within one run.
//!
//! The store is set as a server without push gateways sets it: a message records no push job.
//! `--push-jobs` measures a deployment with a gateway, where each message also writes its job
//! row (`PushStore::set_push_jobs`).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use roam_proto::{Role, RoomKind};
use roam_server::rules::Guard;
use roam_server::store::sqlite::{SqliteStore, Synchronous};
use roam_server::store::{Change, IdemRecord, PushStore, Store, Write};

#[path = "common/cpu.rs"]
mod cpu;

const ROOMS: usize = 100;
const USERS: usize = 1_000;
const WARM_UP: usize = 500;
/// The store's threads: `roam-sqlite-writer` and `roam-sqlite-checkpoint`, as the kernel keeps
/// their names (15 bytes).
const STORE_THREADS: &str = "roam-sqlite-";
/// The writer thread alone: every WAL frame of a commit is written by it (the checkpointer
/// writes the database file).
const WRITER_THREAD: &str = "roam-sqlite-wri";
/// One WAL frame: a 4 KiB page and its 24-byte header.
const WAL_FRAME: f64 = 4096.0 + 24.0;

struct Figures {
    per_sec: f64,
    /// WAL frames the writer thread appended per commit.
    wal_pages: f64,
    process_us: f64,
    store_threads_us: f64,
}

fn room_of(n: usize) -> String {
    format!("room-{:03}", n % USERS / (USERS / ROOMS))
}

fn message(n: usize, guarded: bool) -> Write {
    let user = format!("user-{:04}", n % USERS);
    Write {
        actor: user.clone(),
        now: 1_764_400_000_000 + n as i64,
        guard: guarded.then(|| Guard {
            room: room_of(n),
            min: Role::Guest,
        }),
        after: None,
        idem: Some(IdemRecord {
            user,
            key: format!("send.{n}"),
            op: "message.send".into(),
            fingerprint: format!("{:064x}", n),
        }),
        change: Change::InsertMessage {
            id: uuid::Uuid::now_v7().to_string(),
            room: room_of(n),
            body: "x".repeat(64),
            reply_to: None,
            attachment: None,
        },
        notify: Vec::new(),
    }
}

async fn measure(
    dir: &Path,
    sync: Synchronous,
    guarded: bool,
    push_jobs: bool,
    commits: usize,
) -> Figures {
    let store = Arc::new(
        SqliteStore::open_with(&dir.join("roam.db"), 1, sync)
            .await
            .expect("open the store"),
    );
    store.set_push_jobs(push_jobs);
    for r in 0..ROOMS {
        let name = format!("room-{r:03}");
        let create = Change::CreateRoom {
            name: name.clone(),
            kind: RoomKind::Public,
            title: name,
            metadata: serde_json::json!({}),
            owner: "owner".into(),
        };
        store
            .commit(Write {
                actor: "owner".into(),
                now: 1_764_400_000_000,
                guard: None,
                after: None,
                idem: None,
                change: create,
                notify: Vec::new(),
            })
            .await
            .expect("create a room");
    }
    for n in 0..USERS {
        let user = format!("user-{n:04}");
        let join = Change::AddMember {
            room: room_of(n),
            user: user.clone(),
            role: Role::Member,
            invitation: None,
        };
        store
            .commit(Write {
                actor: user,
                now: 1_764_400_000_000,
                guard: None,
                after: None,
                idem: None,
                change: join,
                notify: Vec::new(),
            })
            .await
            .expect("join a room");
    }
    for n in 0..WARM_UP {
        store.commit(message(n, guarded)).await.expect("commit");
    }
    let (process0, threads0, written0, t0) = (
        cpu::own_cpu(),
        cpu::threads_cpu(STORE_THREADS),
        cpu::threads_written(WRITER_THREAD),
        Instant::now(),
    );
    for n in WARM_UP..WARM_UP + commits {
        store.commit(message(n, guarded)).await.expect("commit");
    }
    let secs = t0.elapsed().as_secs_f64();
    let per = |cpu: f64| cpu / commits as f64 * 1e6;
    Figures {
        per_sec: commits as f64 / secs,
        wal_pages: (cpu::threads_written(WRITER_THREAD) - written0) as f64
            / WAL_FRAME
            / commits as f64,
        process_us: per(cpu::own_cpu() - process0),
        store_threads_us: per(cpu::threads_cpu(STORE_THREADS) - threads0),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (flags, numbers): (Vec<String>, Vec<String>) =
        std::env::args().skip(1).partition(|a| a.starts_with("--"));
    let push_jobs = match flags.as_slice() {
        [] => false,
        [f] if f == "--push-jobs" => true,
        other => return Err(format!("unknown flags {other:?} (only --push-jobs)").into()),
    };
    let mut args = numbers.into_iter();
    let commits: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3_000);
    let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    if commits == 0 || rounds == 0 {
        return Err("commits and rounds must be at least 1".into());
    }
    if let Some(extra) = args.next() {
        return Err(format!("unexpected argument {extra:?}").into());
    }

    println!("{commits} commits per round, each awaited before the next; CPU µs per commit");
    println!(
        "push jobs {}",
        if push_jobs {
            "on (a deployment with a push gateway: each message writes its job row)"
        } else {
            "off (a deployment without push gateways)"
        }
    );
    println!("| round | synchronous | commits/s | WAL pages | CPU, process | CPU, store threads |");
    println!("|---|---|---|---|---|---|");
    let mut full = Vec::new();
    let mut normal = Vec::new();
    let mut unguarded = Vec::new();
    let modes = [
        ("FULL", Synchronous::Full, true),
        ("NORMAL", Synchronous::Normal, true),
        ("NORMAL, no guard", Synchronous::Normal, false),
    ];
    for round in 1..=rounds {
        for (name, sync, guarded) in modes {
            let dir = tempfile::tempdir()?;
            let f = measure(dir.path(), sync, guarded, push_jobs, commits).await;
            println!(
                "| {round} | {name} | {:.0} | {:.1} | {:.0} | {:.0} |",
                f.per_sec, f.wal_pages, f.process_us, f.store_threads_us
            );
            match (sync, guarded) {
                (Synchronous::Full, _) => full.push(f),
                (_, true) => normal.push(f),
                (_, false) => unguarded.push(f),
            }
        }
    }
    let process = |v: &[Figures]| median(v.iter().map(|f| f.process_us).collect());
    let threads = |v: &[Figures]| median(v.iter().map(|f| f.store_threads_us).collect());
    println!(
        "\nmedian CPU µs per commit: FULL {:.0} (store threads {:.0}), NORMAL {:.0} (store threads {:.0}); the sync: {:.0} µs, {:.0} % of a durable commit",
        process(&full),
        threads(&full),
        process(&normal),
        threads(&normal),
        process(&full) - process(&normal),
        (process(&full) - process(&normal)) / process(&full) * 100.0
    );
    println!(
        "median WAL pages per commit: FULL {:.1}, NORMAL {:.1}",
        median(full.iter().map(|f| f.wal_pages).collect()),
        median(normal.iter().map(|f| f.wal_pages).collect())
    );
    println!(
        "the membership guard: NORMAL {:.0} µs with it, {:.0} µs without (store threads {:.0} / {:.0})",
        process(&normal),
        process(&unguarded),
        threads(&normal),
        threads(&unguarded)
    );
    Ok(())
}
