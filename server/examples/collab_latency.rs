//! Latency of collaborative editing over real sockets.
//!
//! `cargo run --release -p roam-server --example collab_latency [clients] [seconds] [offline-edits]`
//! (defaults 100, 10 and 10,000) starts a server, connects `clients` sockets (tokio-tungstenite,
//! each with its own yrs document) that follow one document and type at a human pace (one
//! keystroke, one `collab.update`, every 200 ms each, applying what the others type), and
//! prints how long an edit takes to reach the other clients (p50, p99; target p99 ≤ 100 ms on
//! loopback). Then a client that was offline while another typed `offline-edits` keystrokes
//! catches up with one `collab_sync` (target ≤ 100 ms, applying the answer included).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use roam_proto::collab::{decode_base64, encode_base64};
use roam_server::config::Config;
use roam_server::Server;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, Text, Transact, Update};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const ROOM: &str = "pad";
const DOC: &str = "notes";
const KEYSTROKE_EVERY: Duration = Duration::from_millis(200);

fn arg(n: usize, default: u64) -> Result<u64, String> {
    std::env::args()
        .nth(n)
        .map_or(Ok(default), |a| a.parse())
        .map_err(|e| format!("argument {n}: {e}"))
}

async fn connect(server: &Server, user: &str) -> Result<Socket, String> {
    let token = server.token_for(user).map_err(|e| e.message)?;
    let url = format!("ws://{}/v1/ws?access_token={token}", server.local_addr());
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

async fn send(ws: &mut Socket, v: Value) -> Result<(), String> {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .map_err(|e| e.to_string())
}

/// Reads until the answer to `id`.
async fn answer(ws: &mut Socket, id: &str) -> Result<Value, String> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| format!("no answer to {id}"))?
            .ok_or("socket closed")?
            .map_err(|e| e.to_string())?;
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
        if v["id"] == json!(id) {
            if v["type"] == "error" {
                return Err(format!("{id}: {v}"));
            }
            return Ok(v);
        }
    }
}

fn apply(doc: &Doc, b64: &str) -> Result<(), String> {
    let bytes = decode_base64("update", b64, usize::MAX / 2).map_err(|e| e.0)?;
    let u = Update::decode_v1(&bytes).map_err(|e| e.to_string())?;
    doc.transact_mut()
        .apply_update(u)
        .map_err(|e| e.to_string())
}

fn keystroke(doc: &Doc, c: char) -> String {
    let t = doc.get_or_insert_text("body");
    let mut txn = doc.transact_mut();
    t.insert(&mut txn, 0, &c.to_string());
    encode_base64(&txn.encode_update_v1())
}

async fn sync(ws: &mut Socket, id: &str, sv: &str) -> Result<Value, String> {
    send(
        ws,
        json!({"v":1,"type":"collab_sync","id":id,"room":ROOM,"doc":DOC,"state_vector":sv}),
    )
    .await?;
    answer(ws, id).await
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let clients = arg(1, 100)? as usize;
    let seconds = arg(2, 10)?;
    let offline_edits = arg(3, 10_000)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let mut config = Config::for_data_dir(dir.path());
    config.rate_mutations_per_sec = 1_000_000;
    config.rate_mutations_burst = 1_000_000;
    config.rate_connects_per_min = 1_000_000;
    config.rate_connects_burst = 1_000_000;
    let server = Server::start(config, listener)
        .await
        .map_err(|e| e.to_string())?;
    let mut owner = connect(&server, "u0").await?;
    send(
        &mut owner,
        json!({"v":1,"type":"mutate","id":"c","key":"c","op":"room.create",
        "args":{"room":ROOM,"kind":"public"}}),
    )
    .await?;
    answer(&mut owner, "c").await?;
    let mut owner = Some(owner);

    // When each update (by its base64) was sent.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let stop_at = Instant::now() + Duration::from_secs(seconds) + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let user = format!("u{i}");
        let mut ws = if let Some(ws) = owner.take() {
            ws
        } else {
            let mut ws = connect(&server, &user).await?;
            send(
                &mut ws,
                json!({"v":1,"type":"mutate","id":"j","key":"j","op":"room.join",
                "args":{"room":ROOM}}),
            )
            .await?;
            answer(&mut ws, "j").await?;
            ws
        };
        let doc = Doc::with_client_id(i as u64 + 1);
        let s = sync(&mut ws, "s", "").await?;
        apply(&doc, s["result"]["update"].as_str().unwrap_or("AAA="))?;
        let (sent, latencies) = (Arc::clone(&sent), Arc::clone(&latencies));
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            // Spread the clients' keystrokes over the interval.
            let offset = KEYSTROKE_EVERY * i as u32 / clients as u32;
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + offset, KEYSTROKE_EVERY);
            let typing_until = Instant::now() + Duration::from_secs(seconds);
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = tick.tick(), if Instant::now() < typing_until => {
                        let u = keystroke(&doc, char::from(b'a' + (n % 26) as u8));
                        n += 1;
                        sent.lock().insert(u.clone(), Instant::now());
                        let frame = json!({"v":1,"type":"mutate","id":format!("k{n}"),
                            "key":format!("{i}-{n}"),"op":"collab.update",
                            "args":{"room":ROOM,"doc":DOC,"update":u}});
                        if sink.send(Message::Text(frame.to_string().into())).await.is_err() {
                            return Err("send failed".to_owned());
                        }
                    }
                    msg = stream.next() => {
                        let Some(Ok(Message::Text(t))) = msg else {
                            return Err("socket ended".to_owned());
                        };
                        let Ok(v) = serde_json::from_str::<Value>(&t) else { continue };
                        if v["type"] == "error" {
                            return Err(format!("client {i}: {v}"));
                        }
                        if v["type"] != "collab_update" {
                            continue;
                        }
                        let u = v["update"].as_str().unwrap_or_default();
                        if v["actor"] != json!(format!("u{i}")) {
                            if let Some(at) = sent.lock().get(u) {
                                latencies.lock().push(at.elapsed().as_secs_f64() * 1e3);
                            }
                            apply(&doc, u)?;
                        }
                    }
                    _ = tokio::time::sleep_until(stop_at.into()) => return Ok(()),
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let mut lat = std::mem::take(&mut *latencies.lock());
    lat.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));

    // Catch-up after `offline_edits` keystrokes made while offline.
    let mut writer = connect(&server, "u1").await?;
    let mut late = connect(&server, "u2").await?;
    let wdoc = Doc::with_client_id(10_001);
    let s = sync(&mut writer, "w", "").await?;
    apply(&wdoc, s["result"]["update"].as_str().unwrap_or("AAA="))?;
    let ldoc = Doc::with_client_id(10_002);
    let s = sync(&mut late, "l", "").await?;
    apply(&ldoc, s["result"]["update"].as_str().unwrap_or("AAA="))?;
    send(
        &mut late,
        json!({"v":1,"type":"collab_leave","id":"x","room":ROOM,"doc":DOC}),
    )
    .await?;
    answer(&mut late, "x").await?;
    let sv = encode_base64(&ldoc.transact().state_vector().encode_v1());
    let mut last = String::new();
    for n in 0..offline_edits {
        let u = keystroke(&wdoc, char::from(b'a' + (n % 26) as u8));
        last = format!("o{n}");
        send(
            &mut writer,
            json!({"v":1,"type":"mutate","id":last,"key":last,
            "op":"collab.update","args":{"room":ROOM,"doc":DOC,"update":u}}),
        )
        .await?;
    }
    answer(&mut writer, &last).await?;
    let t = Instant::now();
    let s = sync(&mut late, "back", &sv).await?;
    apply(&ldoc, s["result"]["update"].as_str().unwrap_or("AAA="))?;
    let catch_up_ms = t.elapsed().as_secs_f64() * 1e3;
    let caught = ldoc.transact().state_vector() == wdoc.transact().state_vector();
    server.shutdown().await;

    println!(
        "collab_latency: {clients} clients typing one keystroke each every {} ms for {seconds} s",
        KEYSTROKE_EVERY.as_millis()
    );
    println!("| | value | target |");
    println!("|---|---|---|");
    println!("| edits delivered to other clients | {} | |", lat.len());
    println!("| edit → arrival p50 | {p50:.1} ms | |");
    println!("| edit → arrival p99 | {p99:.1} ms | ≤ 100 ms |");
    println!(
        "| catch-up after {offline_edits} offline edits (one collab_sync, applied) | {catch_up_ms:.1} ms | ≤ 100 ms |"
    );
    let checks = [
        (
            "p99 edit → arrival ≤ 100 ms",
            p99 <= 100.0 && !lat.is_empty(),
        ),
        ("catch-up ≤ 100 ms", catch_up_ms <= 100.0),
        ("the late client has every edit", caught),
    ];
    for (what, ok) in checks {
        println!("{}: {what}", if ok { "PASS" } else { "FAIL" });
    }
    Ok(())
}
