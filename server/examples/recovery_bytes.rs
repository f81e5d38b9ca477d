//! Bytes on the wire for a socket recovering a room's history, with and without the negotiated
//! compression (`/v1/ws?compress=deflate`).
//!
//! `cargo run --release -p roam-server --example recovery_bytes [events]`
//!
//! Starts a server on a fresh data directory (loopback), imports `events` messages (10,000 by
//! default; short chat lines, each different) into a public room, then subscribes a socket from
//! seq 0 twice — plain, then compressed — and counts the WebSocket payload bytes it receives
//! until `caught_up`. Every event is checked to arrive once, in order. Prints both totals and
//! their ratio; nothing is asserted.

use std::io::Read;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use roam_server::config::Config;
use roam_server::Server;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const ROOM: &str = "history";

/// What one recovery cost: payload bytes received, events, and how long it took.
struct Recovery {
    wire: usize,
    json: usize,
    events: u64,
    millis: u128,
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    body: Value,
) -> Result<Value, String> {
    let r = http
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .header("Idempotency-Key", uuid::Uuid::now_v7().to_string())
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    let status = r.status();
    let v: Value = r.json().await.map_err(|e| format!("{path}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{path}: {status} {v}"));
    }
    Ok(v)
}

async fn recover(server: &Server, token: &str, query: &str, last: u64) -> Result<Recovery, String> {
    let mut req = format!("ws://{}/v1/ws{query}", server.local_addr())
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
    req.headers_mut().insert("authorization", auth);
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let subscribe =
        json!({"v": 1, "type": "subscribe", "id": "s", "rooms": [{"room": ROOM, "since": 0}]});
    ws.send(Message::Text(subscribe.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    let (mut wire, mut json_bytes, mut next) = (0usize, 0usize, 1u64);
    loop {
        let m = match ws.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the socket closed before caught_up".into()),
        };
        let text = match m {
            Message::Text(t) => {
                wire += t.len();
                t.as_str().to_owned()
            }
            Message::Binary(b) => {
                wire += b.len();
                let mut text = String::new();
                flate2::read::DeflateDecoder::new(&b[..])
                    .read_to_string(&mut text)
                    .map_err(|e| format!("inflate: {e}"))?;
                text
            }
            _ => continue,
        };
        json_bytes += text.len();
        for frame in text.split('\n') {
            let f: Value = serde_json::from_str(frame).map_err(|e| format!("json: {e}"))?;
            match f["type"].as_str() {
                Some("event") => {
                    let seq = f["seq"].as_u64().unwrap_or(0);
                    if seq != next {
                        return Err(format!("expected seq {next}, got {seq}"));
                    }
                    next += 1;
                }
                Some("caught_up") => {
                    if next != last + 1 {
                        return Err(format!("caught up at {} of {last}", next - 1));
                    }
                    let _ = ws.close(None).await;
                    return Ok(Recovery {
                        wire,
                        json: json_bytes,
                        events: next - 1,
                        millis: started.elapsed().as_millis(),
                    });
                }
                _ => {}
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let events: usize = std::env::args()
        .nth(1)
        .map_or(Ok(10_000), |a| a.parse())
        .map_err(|e| format!("events: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let mut config = Config::for_data_dir(dir.path());
    config.max_recovery_events = config.max_recovery_events.max(events as u64 + 10);
    let server = Server::start(config, listener)
        .await
        .map_err(|e| e.to_string())?;
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::new();
    let alice = server.token_for("alice").map_err(|e| e.message)?;
    post(
        &http,
        &base,
        &alice,
        "/v1/rooms",
        json!({"room": ROOM, "kind": "public"}),
    )
    .await?;
    let mut last = 0u64;
    let batch = roam_proto::validate::MAX_IMPORT_BATCH;
    for start in (0..events).step_by(batch) {
        let bodies: Vec<String> = (start..(start + batch).min(events))
            .map(|i| {
                format!(
                    "message {i}: see you at the station around {} tonight",
                    i % 24
                )
            })
            .collect();
        let path = format!("/v1/rooms/{ROOM}/messages/import");
        let r = post(&http, &base, &alice, &path, json!({"bodies": bodies})).await?;
        last = r["last_seq"].as_u64().ok_or("no last_seq")?;
    }
    let bob = server.token_for("bob").map_err(|e| e.message)?;
    let plain = recover(&server, &bob, "", last).await?;
    let packed = recover(&server, &bob, "?compress=deflate", last).await?;
    println!(
        "recovery of {} events (seq 1..={last}) over one socket",
        plain.events
    );
    println!("| | bytes on the wire (WebSocket payloads) | JSON | time |");
    println!("|---|---|---|---|");
    for (name, r) in [("plain JSON", &plain), ("compress=deflate", &packed)] {
        println!("| {name} | {} | {} | {} ms |", r.wire, r.json, r.millis);
    }
    println!(
        "compressed / plain: {:.3} ({:.1}× smaller)",
        packed.wire as f64 / plain.wire.max(1) as f64,
        plain.wire as f64 / packed.wire.max(1) as f64
    );
    server.shutdown().await;
    Ok(())
}
