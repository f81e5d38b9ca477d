//! Process death: a child process using the core is killed with SIGKILL while it queues and
//! sends 1,000 messages, several times at different points; a new process on the same database
//! finishes. The server then holds exactly 1,000 messages, none twice, in order per room.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use roam_tests::Backend;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const COUNT: usize = 1_000;
const ROOMS: [&str; 3] = ["r0", "r1", "r2"];

/// Where to kill: after this many `queued` lines, or this long after `flushing`.
enum KillAt {
    Queued(usize),
    FlushingAfter(Duration),
}

async fn run_child(backend: &Backend, db: &std::path::Path, kill: Option<KillAt>) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_roam-e2e-sender"))
        .arg(db)
        .arg(backend.url())
        .arg("alice")
        .arg(backend.token("alice"))
        .arg(COUNT.to_string())
        .arg(ROOMS.join(","))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sender");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let outcome = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(line)) = lines.next_line().await {
            match (&kill, line.as_str()) {
                (_, "done") => return true,
                (Some(KillAt::FlushingAfter(d)), "flushing") => {
                    tokio::time::sleep(d.to_owned()).await;
                    return false;
                }
                (Some(KillAt::Queued(n)), l) if l == format!("queued {n}") => return false,
                _ => {}
            }
        }
        true
    })
    .await
    .expect("sender took too long");
    if !outcome {
        child.start_kill().expect("SIGKILL");
    }
    let status = child.wait().await.expect("wait");
    if outcome {
        assert!(status.success(), "sender failed: {status:?}");
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_sender_delivers_everything_exactly_once() {
    let backend = Backend::up().await;
    let api = backend.api("alice");
    for room in ROOMS {
        api.create_room(room, "public").await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("alice.db");
    for kill in [
        KillAt::Queued(37),
        KillAt::Queued(400),
        KillAt::FlushingAfter(Duration::from_millis(5)),
        KillAt::Queued(777),
        KillAt::FlushingAfter(Duration::from_millis(60)),
        KillAt::FlushingAfter(Duration::from_millis(150)),
    ] {
        run_child(&backend, &db, Some(kill)).await;
    }
    assert!(
        run_child(&backend, &db, None).await,
        "the last run finishes"
    );

    let mut seen = HashSet::new();
    let mut total = 0;
    for (r, room) in ROOMS.iter().enumerate() {
        let msgs = api.all_messages(room).await;
        let numbers: Vec<usize> = msgs
            .iter()
            .map(|m| {
                let body = m["body"].as_str().unwrap_or_default();
                body.trim_start_matches('m')
                    .parse::<usize>()
                    .expect("numbered body")
            })
            .collect();
        let expected: Vec<usize> = (0..COUNT).filter(|i| i % ROOMS.len() == r).collect();
        assert_eq!(
            numbers, expected,
            "room {room}: every message once, in order"
        );
        for n in numbers {
            assert!(seen.insert(n), "message {n} stored twice");
            total += 1;
        }
    }
    assert_eq!(total, COUNT);
}
