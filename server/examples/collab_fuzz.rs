//! Hostile collaborative-document updates against the server's own path.
//!
//! `cargo run --release -p roam-server --example collab_fuzz [cases] [socket-cases] [seed]`
//! (defaults 1,000,000, 20,000 and 1) sends random and mutated Yjs updates (bit flips,
//! truncations, splices, inflated variable-length integers, random bytes, and valid updates
//! from a generator: `roam_testkit::collab::Mutator`) through `roam_server::collab::apply`, the
//! function a `collab.update` write runs, then a share of them over a real socket to a real
//! server.
//!
//! In process the document is kept the way the store keeps it (`store/collab.rs`): an applied
//! update takes the next `seq` and joins the log, compacted into a snapshot by the default
//! count and size; a refused update changes nothing stored, and when yrs touched the cached
//! copy the copy is dropped and the document loaded again from the snapshot and log
//! (`collab::load`). So the generator's valid updates, which build on each other, keep
//! applying among the hostile ones. After every refusal the document the server goes on with
//! (the cached copy, or the reloaded one) is compared with its last good state — state vector
//! and whole encoded state — which is the property a refusal must keep: it changes nothing.
//!
//! It prints, per kind of input, how many were applied and how many refused for which reason;
//! how many refusals touched the cached copy; how many left the document different from its
//! last good state (must be 0); how many panics yrs raised (caught: must be 0); the slowest
//! single case (a hang would show here: must stay under a second); and how much the resident
//! memory grew.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use roam_server::collab::{self, DocsConfig, Entry, Logged, Refusal};
use roam_server::config::Config;
use roam_server::Server;
use roam_testkit::collab::{Kind, Mutator};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use yrs::updates::decoder::Decode;
use yrs::{IdSet, ReadTxn, StateVector, Transact, Update};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends a frame and waits (at most 10 s) for the answer with its `id`, skipping other frames.
async fn call(ws: &mut Socket, v: Value) -> Result<Value, String> {
    let id = v["id"].clone();
    ws.send(Message::Text(v.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| format!("no answer to {id} within 10 s"))?
            .ok_or("the socket closed")?
            .map_err(|e| e.to_string())?;
        let Message::Text(text) = msg else { continue };
        let answer: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if answer["id"] == id {
            return Ok(answer);
        }
    }
}

/// A fresh document (and generator) every this many cases, so that valid updates keep
/// applying instead of every case measuring a document at its size limit.
const RESET_EVERY: u64 = 10_000;

/// The log is compacted into the snapshot every this many updates (the server's default is
/// 1,000): often, so that snapshots are made and loaded back many times, and a reload after a
/// refusal stays cheap.
const COMPACT_EVERY: u64 = 100;

/// The refusal reasons, in report order (`Refusal::reason`).
const REASONS: [&str; 3] = ["malformed", "pending", "too_large"];

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn arg(n: usize, default: u64) -> Result<u64, String> {
    std::env::args()
        .nth(n)
        .map_or(Ok(default), |a| a.parse())
        .map_err(|e| format!("argument {n}: {e}"))
}

/// What the store holds of one document: its snapshot, the log after it, its `seq`.
#[derive(Default)]
struct Stored {
    snapshot: Option<Vec<u8>>,
    snapshot_seq: u64,
    log: Vec<Logged>,
    log_bytes: u64,
    seq: u64,
}

impl Stored {
    /// Records an update applied to `entry` as the store does: the next `seq`, the log, and a
    /// compaction into the snapshot by count or size.
    fn append(
        &mut self,
        entry: &mut Entry,
        bytes: &[u8],
        config: &DocsConfig,
    ) -> Result<(), Refusal> {
        let seq = self.seq + 1;
        let log_bytes = self.log_bytes + bytes.len() as u64;
        entry.seq = seq;
        if seq - self.snapshot_seq >= config.compact_updates || log_bytes >= config.compact_bytes {
            let (snap, exact) = collab::snapshot(entry)?;
            entry.size = exact;
            self.snapshot = Some(snap);
            self.snapshot_seq = seq;
            self.log.clear();
            self.log_bytes = 0;
        } else {
            self.log.push((seq, bytes.to_vec()));
            self.log_bytes = log_bytes;
        }
        self.seq = seq;
        Ok(())
    }

    /// The document loaded back, as the store does after dropping a cached copy.
    fn load(&self) -> Result<Entry, Refusal> {
        collab::load(self.snapshot.as_deref(), &self.log, self.seq)
    }
}

/// What a document holds: its state vector and its whole state as one v1 update.
struct State {
    vector: StateVector,
    encoded: Vec<u8>,
}

fn state_of(entry: &Entry) -> State {
    let txn = entry.doc.transact();
    State {
        vector: txn.state_vector(),
        encoded: txn.encode_state_as_update_v1(&StateVector::default()),
    }
}

/// The ids of every block an encoded state holds (content, deleted content and gaps alike) and
/// its delete set.
fn ids(encoded: &[u8]) -> Option<(IdSet, IdSet)> {
    let whole = Update::decode_v1(encoded).ok()?;
    Some((whole.insertions(true), whole.delete_set().clone()))
}

/// Whether two documents built from the same updates hold the same state: the same state
/// vector, and the same encoded state — or, when yrs split or joined their blocks differently
/// (which changes the bytes, not the state), the same block ids and delete set.
fn same(a: &State, b: &State) -> bool {
    a.vector == b.vector
        && (a.encoded == b.encoded
            || matches!((ids(&a.encoded), ids(&b.encoded)), (Some(x), Some(y)) if x == y))
}

/// Whether yrs keeps anything of a refused update waiting in the document.
fn has_pending(entry: &Entry) -> bool {
    let txn = entry.doc.transact();
    let store = txn.store();
    store.pending_update().is_some() || store.pending_ds().is_some()
}

/// Per kind of input: how many applied, how many refused for each reason.
#[derive(Default, Clone, Copy)]
struct Tally {
    cases: u64,
    applied: u64,
    refused: [u64; REASONS.len()],
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.cases += other.cases;
        self.applied += other.applied;
        for (a, b) in self.refused.iter_mut().zip(other.refused) {
            *a += b;
        }
    }
}

/// The in-process run's findings.
#[derive(Default)]
struct InProcess {
    tally: BTreeMap<Kind, Tally>,
    slowest: Duration,
    /// Refusals after which the cached copy differed from its last good state (dropped and
    /// reloaded, as the store does).
    touched: u64,
    /// Cases after which the document the server goes on with is wrong: a refusal that left it
    /// different from its last good state, a reload or a compaction that failed. Must be 0.
    changed: u64,
    first_change: Option<String>,
    /// The first case that made yrs panic, with its input.
    first_panic: Option<String>,
}

fn in_process(cases: u64, seed: u64, panics: &AtomicU64) -> InProcess {
    let config = DocsConfig {
        compact_updates: COMPACT_EVERY,
        ..DocsConfig::default()
    };
    let mut out = InProcess::default();
    let fresh = || {
        let entry = Entry::new(yrs::Doc::new(), 0, 2);
        let good = state_of(&entry);
        (entry, Stored::default(), good)
    };
    let (mut entry, mut stored, mut good) = fresh();
    let mut m = Mutator::new(seed);
    for case in 0..cases {
        if case % RESET_EVERY == 0 {
            (entry, stored, good) = fresh();
            m = Mutator::new(seed.wrapping_mul(1_000_003).wrapping_add(case));
        }
        let (kind, u) = m.case();
        let tally = out.tally.entry(kind).or_default();
        tally.cases += 1;
        let t = Instant::now();
        let panics_before = panics.load(Ordering::Relaxed);
        let r = collab::apply(&mut entry, &u);
        out.slowest = out.slowest.max(t.elapsed());
        if panics.load(Ordering::Relaxed) != panics_before && out.first_panic.is_none() {
            let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
            out.first_panic = Some(format!(
                "case {case} ({}, {} bytes: {hex}; its document is the one of the cases from {})",
                kind.name(),
                u.len(),
                case - case % RESET_EVERY
            ));
        }
        let problem = match r {
            Ok(_) => match stored.append(&mut entry, &u, &config) {
                Ok(()) => {
                    tally.applied += 1;
                    good = state_of(&entry);
                    continue;
                }
                Err(r) => format!("compaction failed: {r}"),
            },
            Err(refused) => {
                let refusal = &refused.refusal;
                let reason = REASONS
                    .iter()
                    .position(|r| *r == refusal.reason())
                    .unwrap_or(0);
                tally.refused[reason] += 1;
                // A refusal changes nothing: the cached copy is as it was, or (yrs touched it)
                // it is dropped and the document loaded back from the store.
                if !has_pending(&entry) && same(&state_of(&entry), &good) {
                    continue;
                }
                if !refused.touched {
                    // The server keeps an untouched copy: it must be exactly as it was.
                    format!(
                        "refused as {} before yrs touched the document, yet it changed",
                        refusal.reason()
                    )
                } else {
                    out.touched += 1;
                    match stored.load() {
                        Ok(loaded) => {
                            let back = state_of(&loaded);
                            entry = loaded;
                            if same(&back, &good) {
                                continue;
                            }
                            format!("refused as {} but the document changed", refusal.reason())
                        }
                        Err(e) => format!("refused as {}; reloading failed: {e}", refusal.reason()),
                    }
                }
            }
        };
        out.changed += 1;
        out.first_change
            .get_or_insert_with(|| format!("case {case} ({}): {problem}", kind.name()));
        // Go on from what the store holds.
        if let Ok(loaded) = stored.load() {
            entry = loaded;
            good = state_of(&entry);
        }
    }
    out
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let cases = arg(1, 1_000_000)?;
    let socket_cases = arg(2, 20_000)?;
    let seed = arg(3, 1)?;
    let panics = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&panics);
    // The first panic's place and message, to report.
    let first_panic: Arc<Mutex<Option<String>>> = Arc::default();
    let noted = Arc::clone(&first_panic);
    std::panic::set_hook(Box::new(move |info| {
        counted.fetch_add(1, Ordering::Relaxed);
        let mut first = noted.lock();
        if first.is_none() {
            let place = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|m| (*m).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            *first = Some(format!("{place}: {message}"));
        }
    }));

    let rss_before = rss_kib();
    let started = Instant::now();
    let found = in_process(cases, seed, &panics);
    let in_process_time = started.elapsed();
    let rss_after = rss_kib();
    let panics_in_process = panics.load(Ordering::Relaxed);

    // A share over a real socket.
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let mut config = Config::for_data_dir(dir.path());
    config.rate_mutations_per_sec = 1_000_000;
    config.rate_mutations_burst = 1_000_000;
    let server = Server::start(config, listener)
        .await
        .map_err(|e| e.to_string())?;
    let token = server.token_for("fuzzer").map_err(|e| e.message)?;
    let url = format!("ws://{}/v1/ws?access_token={token}", server.local_addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    for setup in [
        json!({"v":1,"type":"mutate","id":"c","key":"room","op":"room.create",
        "args":{"room":"fz","kind":"private"}}),
        json!({"v":1,"type":"collab_sync","id":"s","room":"fz","doc":"d","state_vector":""}),
    ] {
        let answer = call(&mut ws, setup).await?;
        if answer["type"] != "ack" {
            return Err(format!("setting up the socket share: {answer}"));
        }
    }
    let mut sm = Mutator::new(seed ^ 0x5eed);
    let sock_started = Instant::now();
    // Answers by what they were: "ack" or the error's code.
    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    let mut sock_slowest = Duration::ZERO;
    for case in 0..socket_cases {
        let u = roam_proto::collab::encode_base64(&sm.input());
        let id = format!("u{case}");
        let t = Instant::now();
        let v = call(
            &mut ws,
            json!({"v":1,"type":"mutate","id":id,"key":id,"op":"collab.update",
            "args":{"room":"fz","doc":"d","update":u}}),
        )
        .await
        .map_err(|e| format!("case {case}: {e}"))?;
        let what = match v["type"].as_str() {
            Some("error") => v["code"].as_str().unwrap_or("error without a code"),
            Some(other) => other,
            None => "no type",
        };
        *answers.entry(what.to_owned()).or_default() += 1;
        sock_slowest = sock_slowest.max(t.elapsed());
    }
    let sock_time = sock_started.elapsed();
    server.shutdown().await;

    let panicked = panics.load(Ordering::Relaxed);
    let growth_mib = rss_after.saturating_sub(rss_before) as f64 / 1024.0;
    let mut total = Tally::default();
    for t in found.tally.values() {
        total.add(t);
    }
    let valid = found.tally.get(&Kind::Valid).copied().unwrap_or_default();
    println!("collab_fuzz seed {seed}, {cases} cases in process, {socket_cases} over a socket");
    println!();
    println!("In process (collab::apply, the document kept as the store keeps it):");
    println!("| input | cases | applied | refused: malformed | pending | too_large |");
    println!("|---|---|---|---|---|---|");
    let rows = Kind::ALL
        .iter()
        .map(|k| (k.name(), found.tally.get(k).copied().unwrap_or_default()))
        .chain([("all", total)]);
    for (name, t) in rows {
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            t.cases, t.applied, t.refused[0], t.refused[1], t.refused[2]
        );
    }
    let refused: u64 = total.refused.iter().sum();
    println!(
        "time {:.1} s; slowest case {:.2} ms; refusals that touched the cached copy (dropped and \
         reloaded from the snapshot and log): {} of {refused}; cases that left the document wrong \
         (a refusal that changed it, a failed reload or compaction): {}{}",
        in_process_time.as_secs_f64(),
        found.slowest.as_secs_f64() * 1e3,
        found.touched,
        found.changed,
        found
            .first_change
            .as_deref()
            .map(|c| format!(" (first: {c})"))
            .unwrap_or_default()
    );
    println!();
    let answered: u64 = answers.values().sum();
    let listed: Vec<String> = answers.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!(
        "Over a socket (collab.update): {answered} of {socket_cases} answered ({}) in {:.1} s; \
         slowest case {:.2} ms",
        listed.join(", "),
        sock_time.as_secs_f64(),
        sock_slowest.as_secs_f64() * 1e3
    );
    println!(
        "panics caught: {panicked} ({panics_in_process} in process, {} over the socket){}",
        panicked - panics_in_process,
        first_panic
            .lock()
            .as_deref()
            .map(|p| format!("; the first at {p}"))
            .unwrap_or_default()
    );
    if let Some(case) = &found.first_panic {
        println!("the first in process: {case}");
    }
    println!(
        "resident memory: {} MiB before, {} MiB after the in-process cases (+{growth_mib:.1} MiB)",
        rss_before / 1024,
        rss_after / 1024
    );
    println!();
    let expected_answers = ["ack", "invalid_input", "payload_too_large"];
    let checks = [
        ("0 panics", panicked == 0),
        (
            "slowest case under 1 s (no hang)",
            found.slowest < Duration::from_secs(1) && sock_slowest < Duration::from_secs(1),
        ),
        (
            "every valid update applied",
            valid.applied == valid.cases && (cases == 0 || valid.cases > 0),
        ),
        (
            "every refusal left the document at its last good state",
            found.changed == 0,
        ),
        (
            "every socket case answered with an ack or a clear error",
            answered == socket_cases
                && answers
                    .keys()
                    .all(|k| expected_answers.contains(&k.as_str())),
        ),
        (
            "resident memory grew by less than 64 MiB",
            growth_mib < 64.0,
        ),
    ];
    for (what, ok) in checks {
        println!("{}: {what}", if ok { "PASS" } else { "FAIL" });
    }
    Ok(())
}
