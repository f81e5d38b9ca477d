//! `handle_push` with the app holding the store, on loopback: how long a notification
//! extension's process takes to answer, and how much memory it takes on top of the process.
//! Run on demand: `cargo bench -p roam-tests --bench push`.
//!
//! The app (this process) holds alice's store open and keeps writing to it (a message queued
//! every 2 ms) while each push is answered by a separate process, `roam-e2e-push`, as an iOS
//! notification service extension or an Android messaging service would be. Two cases, in the
//! same run:
//!
//! - **fetch**: a message the store does not hold yet (the app is in the background), fetched
//!   over REST within the deadline: the case the target is about (answer < 1 s);
//! - **local**: a message the store holds: the baseline (no network), so the ratio shows what
//!   the fetch costs.
//!
//! Each case runs [`ROUNDS`] processes of one push each (the time is measured inside the
//! process, from the payload to the answer: the process start is the platform's); memory is the
//! extension process's peak resident set (`VmHWM`) minus its resident set just before it opened
//! the handler (its runtime already started), the largest over the rounds. Goal: ≤ 12 MiB.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use roam_core::{RoomKind, SendState};
use roam_tests::{fast_config, open_client, wait_until, Backend};
use serde_json::{json, Value};

/// Processes per case.
const ROUNDS: usize = 30;

/// The deadline given to `handle_push` (the target).
const DEADLINE_MS: u64 = 1_000;

fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "NOT MET"
    }
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// One extension process answering one push: (answer line, memory line).
fn extension(backend: &Backend, db: &std::path::Path, payload: &str) -> (Value, Value) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roam-e2e-push"))
        .arg(db)
        .arg(backend.url())
        .arg("alice")
        .arg(backend.token("alice"))
        .arg(DEADLINE_MS.to_string())
        .arg(payload)
        .output()
        .expect("run roam-e2e-push");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    (lines[0].clone(), lines[1].clone())
}

fn push(seq: u64, id: &str) -> String {
    json!({"aps": {"alert": {"title": "New message"}, "mutable-content": 1},
        "roam": {"v": 1, "kind": "message", "room": "team", "seq": seq, "message": id,
                 "unread": 1}})
    .to_string()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let backend = Backend::up().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("alice.db");
    let app = open_client(
        fast_config(&db, &backend.url(), "alice"),
        backend.token("alice"),
    );
    app.start().await.expect("start");
    app.create_room("team".into(), RoomKind::Public, "Team".into(), None)
        .expect("create");
    wait_until("the room is confirmed", || {
        app.room("team".into())
            .ok()
            .flatten()
            .is_some_and(|r| r.send_state == SendState::Sent)
    })
    .await;
    let bob = backend.api("bob");
    bob.join("team").await;

    // Messages the store will hold (the baseline), then the app goes to the background.
    let mut local = Vec::new();
    for i in 0..ROUNDS {
        let (s, m) = bob
            .post(
                "/v1/rooms/team/messages",
                json!({"body": format!("local {i}")}),
            )
            .await;
        assert_eq!(s, 200, "{m}");
        local.push((
            m["seq"].as_u64().expect("seq"),
            m["id"].as_str().expect("id").to_owned(),
        ));
    }
    let last = local.last().map(|(_, id)| id.clone()).expect("one");
    wait_until("the app holds them", || {
        app.message(last.clone()).ok().flatten().is_some()
    })
    .await;
    app.set_online(false);
    let mut remote = Vec::new();
    for i in 0..ROUNDS {
        let (s, m) = bob
            .post(
                "/v1/rooms/team/messages",
                json!({"body": format!("remote {i}")}),
            )
            .await;
        assert_eq!(s, 200, "{m}");
        remote.push((
            m["seq"].as_u64().expect("seq"),
            m["id"].as_str().expect("id").to_owned(),
        ));
    }

    // The app keeps writing while the extensions run.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (app, stop) = (app.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                app.send_message("team".into(), format!("draft {n}"))
                    .expect("the app writes");
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            n
        })
    };

    let report = |name: &str, cases: &[(u64, String)], want_body: &str| -> (u64, u64) {
        let mut times = Vec::new();
        let mut extra = Vec::new();
        let mut generic = 0;
        for (seq, id) in cases {
            let (answer, memory) = extension(&backend, &db, &push(*seq, id));
            let body = answer["body"].as_str().unwrap_or_default();
            if !body.starts_with(want_body) {
                generic += 1;
            }
            times.push(answer["elapsed_us"].as_u64().expect("elapsed"));
            let before = memory["rss_before_kib"].as_u64().expect("rss");
            extra.push(
                memory["peak_kib"]
                    .as_u64()
                    .expect("peak")
                    .saturating_sub(before),
            );
        }
        let (p50, p95, max) = (
            pct(&mut times, 0.5),
            pct(&mut times, 0.95),
            pct(&mut times, 1.0),
        );
        let mem = pct(&mut extra, 1.0);
        println!(
            "handle_push {name}: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms over {} processes \
             ({generic} generic answers); peak memory on top of the process {:.1} MiB (max)",
            p50 as f64 / 1e3,
            p95 as f64 / 1e3,
            max as f64 / 1e3,
            cases.len(),
            mem as f64 / 1024.0
        );
        (p95, mem)
    };
    let (local_p95, local_mem) = report("local (baseline)", &local, "local");
    let (fetch_p95, fetch_mem) = report("fetch", &remote, "remote");
    stop.store(true, Ordering::SeqCst);
    let drafts = writer.join().expect("writer");
    println!(
        "fetch / local p95 ratio {:.1}; the app queued {drafts} messages meanwhile, none failed",
        fetch_p95 as f64 / local_p95.max(1) as f64
    );
    println!(
        "target: answer within 1 s with the app holding the store: p95 {:.1} ms {}",
        fetch_p95 as f64 / 1e3,
        verdict(fetch_p95 < DEADLINE_MS * 1000)
    );
    let mem = local_mem.max(fetch_mem);
    println!(
        "goal: <= 12 MiB on top of the process: {:.1} MiB {}",
        mem as f64 / 1024.0,
        verdict(mem <= 12 * 1024)
    );
    app.shutdown().await;
}
