//! B4: the `automerge-paper` editing trace (259,778 single-character edits) typed into a
//! [`CollabDoc`] one keystroke per call, as a user would, against bare yrs doing the same
//! per-keystroke transactions in the same run. The two alternate for a number of rounds
//! (default 3), so a busy moment of the machine slows one round rather than one side; each
//! round's times and ratio are printed, then the median ratio. Also prints the finished
//! document's stored snapshot size and its reopen time, and checks the final text against the
//! trace's `endContent`. On Linux it also prints the CPU time each took (all threads of the
//! process), which other processes on a busy machine inflate less than wall time. Offline (no
//! server): every keystroke is stored (group commit) and coalesced into the outbox as it would
//! be before being sent.
//!
//! ```text
//! cargo run --release -p roam-core --example collab_b4 -- [path/to/automerge-paper.json.gz [rounds]]
//! ```
//!
//! The trace is Joseph Gentle's editing-traces data set (CC BY 4.0), prepared by Martin
//! Kleppmann; see `../shared/data/editing-traces/README.md`.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use roam_core::{Client, ClientConfig, StaticToken};
use yrs::{GetString, OffsetKind, Options, Text, Transact};

type Patch = (u32, u32, String);

/// The CPU time of every live thread of the process so far, in seconds (Linux: the sum of
/// `/proc/self/task/*/schedstat`'s first field, nanoseconds on a CPU).
fn cpu_secs() -> Option<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 / 1e9)
}

/// The CPU seconds spent since `since` (None when unknown).
fn cpu_since(since: Option<f64>) -> Option<f64> {
    Some(cpu_secs()? - since?)
}

fn load(path: &str) -> Result<(String, Vec<Patch>), Box<dyn std::error::Error>> {
    let mut json = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path)?).read_to_string(&mut json)?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    let end = v["endContent"].as_str().ok_or("no endContent")?.to_owned();
    let mut patches = Vec::new();
    for txn in v["txns"].as_array().ok_or("no txns")? {
        for p in txn["patches"].as_array().ok_or("no patches")? {
            let pos = p[0].as_u64().ok_or("pos")? as u32;
            let del = p[1].as_u64().ok_or("del")? as u32;
            let ins = p[2].as_str().ok_or("ins")?.to_owned();
            patches.push((pos, del, ins));
        }
    }
    Ok((end, patches))
}

/// Bare yrs: one transaction per keystroke on a UTF-16 document.
fn bare(patches: &[Patch]) -> (f64, Option<f64>, String) {
    let doc = yrs::Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    });
    let text = doc.get_or_insert_text("body");
    let started = Instant::now();
    let cpu = cpu_secs();
    for (pos, del, ins) in patches {
        let mut txn = doc.transact_mut();
        if *del > 0 {
            text.remove_range(&mut txn, *pos, *del);
        }
        if !ins.is_empty() {
            text.insert(&mut txn, *pos, ins);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_since(cpu);
    let txn = doc.transact();
    (secs, cpu, text.get_string(&txn))
}

/// What one CollabDoc replay on a fresh store took and left.
struct Typed {
    typed_secs: f64,
    core_secs: f64,
    core_cpu: Option<f64>,
    entries: usize,
    log_snapshot: u64,
    log_bytes: u64,
    snapshot: u64,
    reopen_ms: f64,
}

fn typed(patches: &[Patch], end: &str) -> Result<Typed, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = ClientConfig::new(dir.path().join("b4.db"), "http://127.0.0.1:9", "b4");
    let client = Client::open(config.clone(), Arc::new(StaticToken("t".into())))?;
    let doc = client.open_collab("bench", "paper")?;
    let started = Instant::now();
    let cpu = cpu_secs();
    for (pos, del, ins) in patches {
        if *del > 0 {
            doc.delete_text("body", *pos, *del)?;
        }
        if !ins.is_empty() {
            doc.insert_text("body", *pos, ins, None)?;
        }
    }
    let typed_secs = started.elapsed().as_secs_f64();
    doc.flush()?;
    let core_secs = started.elapsed().as_secs_f64();
    let core_cpu = cpu_since(cpu);
    assert_eq!(doc.text("body")?, end, "CollabDoc replay");
    let entries = client
        .outbox()?
        .iter()
        .filter(|e| e.op == "collab.update")
        .count();
    let (log_snapshot, log_bytes) = doc.stored_size()?;
    doc.compact()?;
    let (snapshot, _) = doc.stored_size()?;
    drop(doc);
    drop(client);

    let client = Client::open(config, Arc::new(StaticToken("t".into())))?;
    let started = Instant::now();
    let doc = client.open_collab("bench", "paper")?;
    let reopen_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(doc.text("body")?, end, "reopened document");
    Ok(Typed {
        typed_secs,
        core_secs,
        core_cpu,
        entries,
        log_snapshot,
        log_bytes,
        snapshot,
        reopen_ms,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/data/editing-traces/automerge-paper.json.gz".into());
    let rounds: usize = match std::env::args().nth(2) {
        Some(r) => r
            .parse()
            .map_err(|_| format!("rounds: not a number: {r}"))?,
        None => 3,
    };
    if rounds == 0 {
        return Err("rounds must be at least 1".into());
    }
    let (end, patches) = load(&path)?;
    println!(
        "trace: {} edits, {rounds} rounds (bare yrs, then CollabDoc)",
        patches.len()
    );

    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    let mut last = None;
    for round in 1..=rounds {
        let (bare_secs, bare_cpu, bare_text) = bare(&patches);
        assert_eq!(bare_text, end, "bare yrs replay");
        let t = typed(&patches, &end)?;
        print!(
            "round {round}: bare {bare_secs:.3} s, CollabDoc {:.3} s typing / {:.3} s stored: {:.2}x",
            t.typed_secs,
            t.core_secs,
            t.core_secs / bare_secs
        );
        wall.push(t.core_secs / bare_secs);
        if let (Some(b), Some(c)) = (bare_cpu, t.core_cpu) {
            print!(
                "; CPU (all threads) bare {b:.3} s, CollabDoc {c:.3} s: {:.2}x",
                c / b
            );
            cpu.push(c / b);
        }
        println!();
        last = Some(t);
    }
    let Some(t) = last else {
        return Err("no round ran".into());
    };
    println!(
        "ratio (stored / bare), median of {rounds}: {:.2}x wall (target <= 2x)",
        median(wall)
    );
    if !cpu.is_empty() {
        println!("CPU ratio, median of {rounds}: {:.2}x", median(cpu));
    }
    println!(
        "outbox: {} collab.update entries (coalesced, none sent)",
        t.entries
    );
    println!(
        "store before the final compaction: snapshot {} B + log {} B",
        t.log_snapshot, t.log_bytes
    );
    println!(
        "snapshot: {} B ({:.1} KB; target <= 200 KB)",
        t.snapshot,
        t.snapshot as f64 / 1000.0
    );
    println!("reopen: {:.2} ms (target <= 20 ms)", t.reopen_ms);
    println!("final text equals endContent: yes ({} chars)", end.len());
    Ok(())
}
