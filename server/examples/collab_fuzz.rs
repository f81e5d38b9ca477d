//! Hostile collaborative-document updates against the server's own path.
//!
//! `cargo run --release -p roam-server --example collab_fuzz [cases] [socket-cases] [seed]`
//! (defaults 1,000,000, 20,000 and 1) sends random and mutated Yjs updates (bit flips,
//! truncations, splices, inflated variable-length integers, random bytes, and valid updates
//! from a generator: `roam_testkit::collab::Mutator`) through `roam_server::collab::apply`, the
//! function a `collab.update` write runs, then a share of them over a real socket to a real
//! server. It prints how many panics yrs raised (caught: must be 0), the slowest single case
//! (a hang would show here: must stay under a second), and how much the resident memory grew.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use roam_server::collab::{self, Entry};
use roam_server::config::Config;
use roam_server::Server;
use roam_testkit::collab::Mutator;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut Socket, v: Value) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    ws.send(Message::Text(v.to_string().into())).await
}

/// A fresh document (and generator) every this many cases, so that valid updates keep
/// applying instead of every case measuring a document at its size limit.
const RESET_EVERY: u64 = 10_000;

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

#[tokio::main]
async fn main() -> Result<(), String> {
    let cases = arg(1, 1_000_000)?;
    let socket_cases = arg(2, 20_000)?;
    let seed = arg(3, 1)?;
    let panics = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&panics);
    std::panic::set_hook(Box::new(move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
    }));

    let rss_before = rss_kib();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let (mut applied, mut refused) = (0u64, 0u64);
    let mut entry = Entry::new(yrs::Doc::new(), 0, 2);
    let mut m = Mutator::new(seed);
    for case in 0..cases {
        if case % RESET_EVERY == 0 {
            entry = Entry::new(yrs::Doc::new(), 0, 2);
            m = Mutator::new(seed.wrapping_mul(1_000_003).wrapping_add(case));
        }
        let u = m.input();
        let t = Instant::now();
        let r = collab::apply(&mut entry, &u);
        slowest = slowest.max(t.elapsed());
        match r {
            Ok(_) => applied += 1,
            Err(_) => {
                refused += 1;
                // As the store does: a refused update may have touched the document.
                if !matches!(r, Err(collab::Refusal::Malformed(_))) {
                    entry = Entry::new(yrs::Doc::new(), 0, 2);
                }
            }
        }
    }
    let in_process = started.elapsed();
    let rss_after = rss_kib();

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
    send(
        &mut ws,
        json!({"v":1,"type":"mutate","id":"c","key":"room","op":"room.create",
        "args":{"room":"fz","kind":"private"}}),
    )
    .await
    .map_err(|e| e.to_string())?;
    send(
        &mut ws,
        json!({"v":1,"type":"collab_sync","id":"s","room":"fz","doc":"d","state_vector":""}),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut sm = Mutator::new(seed ^ 0x5eed);
    let sock_started = Instant::now();
    let mut answered = 0u64;
    let mut sock_slowest = Duration::ZERO;
    for case in 0..socket_cases {
        let u = roam_proto::collab::encode_base64(&sm.input());
        let id = format!("u{case}");
        let t = Instant::now();
        send(
            &mut ws,
            json!({"v":1,"type":"mutate","id":id,"key":id,"op":"collab.update",
            "args":{"room":"fz","doc":"d","update":u}}),
        )
        .await
        .map_err(|e| e.to_string())?;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .map_err(|_| format!("case {case}: no answer within 10 s"))?
                .ok_or("the socket closed")?
                .map_err(|e| e.to_string())?;
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if v["id"] == json!(id) {
                answered += 1;
                break;
            }
        }
        sock_slowest = sock_slowest.max(t.elapsed());
    }
    let sock_time = sock_started.elapsed();
    server.shutdown().await;

    let panicked = panics.load(Ordering::Relaxed);
    let growth_mib = rss_after.saturating_sub(rss_before) as f64 / 1024.0;
    println!("collab_fuzz seed {seed}");
    println!("| | cases | applied | refused | time | slowest case |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| in process (collab::apply) | {cases} | {applied} | {refused} | {:.1} s | {:.2} ms |",
        in_process.as_secs_f64(),
        slowest.as_secs_f64() * 1e3
    );
    println!(
        "| over a socket (collab.update) | {socket_cases} | answered {answered} | | {:.1} s | {:.2} ms |",
        sock_time.as_secs_f64(),
        sock_slowest.as_secs_f64() * 1e3
    );
    println!("panics caught: {panicked}");
    println!(
        "resident memory: {} MiB before, {} MiB after the in-process cases (+{growth_mib:.1} MiB)",
        rss_before / 1024,
        rss_after / 1024
    );
    let ok_panics = panicked == 0;
    let ok_hangs = slowest < Duration::from_secs(1) && sock_slowest < Duration::from_secs(1);
    let ok_answers = answered == socket_cases;
    let ok_memory = growth_mib < 64.0;
    for (what, ok) in [
        ("0 panics", ok_panics),
        ("slowest case under 1 s (no hang)", ok_hangs),
        ("every socket case answered", ok_answers),
        ("resident memory grew by less than 64 MiB", ok_memory),
    ] {
        println!("{}: {what}", if ok { "PASS" } else { "FAIL" });
    }
    Ok(())
}
