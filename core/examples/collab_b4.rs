//! B4: the `automerge-paper` editing trace (259,778 single-character edits) typed into a
//! [`CollabDoc`] one keystroke per call, as a user would, against bare yrs doing the same
//! per-keystroke transactions in the same run. Prints the total time of each and their ratio,
//! the finished document's stored snapshot size and its reopen time, and checks the final
//! text against the trace's `endContent`. On Linux it also prints the CPU time each took (all
//! threads of the process), which other processes on a busy machine do not inflate. Offline (no server): every keystroke is stored
//! (group commit) and coalesced into the outbox as it would be before being sent.
//!
//! ```text
//! cargo run --release -p roam-core --example collab_b4 -- [path/to/automerge-paper.json.gz]
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/data/editing-traces/automerge-paper.json.gz".into());
    let (end, patches) = load(&path)?;
    println!("trace: {} edits", patches.len());

    let (bare_secs, bare_cpu, bare_text) = bare(&patches);
    assert_eq!(bare_text, end, "bare yrs replay");

    let dir = tempfile::tempdir()?;
    let config = ClientConfig::new(dir.path().join("b4.db"), "http://127.0.0.1:9", "b4");
    let client = Client::open(config.clone(), Arc::new(StaticToken("t".into())))?;
    let doc = client.open_collab("bench", "paper")?;
    let started = Instant::now();
    let cpu = cpu_secs();
    for (pos, del, ins) in &patches {
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

    println!("bare yrs, one transaction per keystroke: {bare_secs:.3} s");
    println!(
        "CollabDoc, one call per keystroke: {typed_secs:.3} s typing, {core_secs:.3} s with everything stored"
    );
    println!(
        "ratio (stored / bare): {:.2}x (target <= 2x)",
        core_secs / bare_secs
    );
    if let (Some(b), Some(c)) = (bare_cpu, core_cpu) {
        println!(
            "CPU time (all threads): bare {b:.3} s, CollabDoc until stored {c:.3} s, ratio {:.2}x",
            c / b
        );
    }
    println!("outbox: {entries} collab.update entries (coalesced, none sent)");
    println!("store before the final compaction: snapshot {log_snapshot} B + log {log_bytes} B");
    println!(
        "snapshot: {snapshot} B ({:.1} KB; target <= 200 KB)",
        snapshot as f64 / 1000.0
    );
    println!("reopen: {reopen_ms:.2} ms (target <= 20 ms)");
    println!("final text equals endContent: yes ({} chars)", end.len());
    Ok(())
}
