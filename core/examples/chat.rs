//! A terminal chat client on roam-core.
//!
//! ```text
//! cargo run -p roam-server -- serve --data-dir ./data            # terminal 1
//! TOKEN=$(cargo run -q -p roam-server -- token --data-dir ./data --user alice)
//! cargo run -p roam-core --example chat -- --user alice --token "$TOKEN" --room general --create
//! cargo run -p roam-core --example chat -- --user bob --token "$TOKEN_BOB" --room general
//! ```
//!
//! `--create` creates the (public) room, otherwise the client joins it. `--server` defaults to
//! `http://127.0.0.1:8080`, `--db` to `./<user>.roam.db`.
//!
//! Type a line to send it. Commands: `/typing` (say you are typing), `/offline`, `/online`,
//! `/history`, `/outbox`, `/metrics`, `/wait <ms>`, `/quit`. Kill the server, keep typing (the lines stay pending in the
//! outbox), start it again: they are delivered in order, and what others sent meanwhile shows up.
//! With stdin not a terminal (piped lines), the client sends every line, waits until the outbox
//! is empty (at most 30 s) and exits.

use std::io::{BufRead, IsTerminal};
use std::sync::Arc;
use std::time::Duration;

use roam_core::{
    Client, ClientConfig, ConnectionState, ConnectionStateListener, Presence, PresenceListener,
    RoomKind, RoomListener, RoomUpdate, SendState, StaticToken, TypingListener,
};

struct Printer;

impl RoomListener for Printer {
    fn on_room_update(&self, update: RoomUpdate) {
        match update {
            RoomUpdate::MessageAdded(m) => {
                let state = match m.send_state {
                    SendState::Pending => " (pending)",
                    _ => "",
                };
                println!("[{}] {}: {}{state}", m.room, m.sender, m.body);
            }
            RoomUpdate::MessageEdited(m) => {
                println!("[{}] {} edited: {}", m.room, m.sender, m.body)
            }
            RoomUpdate::MessageDeleted(m) => {
                println!("[{}] a message of {} was deleted", m.room, m.sender)
            }
            RoomUpdate::SendStateChanged {
                local_id, state, ..
            } => match state {
                SendState::Sent => {
                    println!("  ✓ sent {}", &local_id[local_id.len().saturating_sub(6)..])
                }
                SendState::Failed { code, message } => println!("  ✗ failed ({code}): {message}"),
                SendState::Pending => {}
            },
            RoomUpdate::Reset { room } => println!("[{room}] history reloaded"),
            RoomUpdate::MemberChanged(m) => {
                println!("[{}] {} is {:?} ({:?})", m.room, m.user, m.status, m.role)
            }
            _ => {}
        }
    }
}

impl TypingListener for Printer {
    fn on_typing(&self, room: String, users: Vec<String>) {
        if !users.is_empty() {
            println!("[{room}] {} typing…", users.join(", "));
        }
    }
}

impl PresenceListener for Printer {
    fn on_presence(&self, p: Presence) {
        println!("* {} is {:?} ({} devices)", p.user, p.status, p.devices);
    }
}

impl ConnectionStateListener for Printer {
    fn on_connection_state(&self, state: ConnectionState) {
        println!("* connection: {state:?}");
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let user = arg(&args, "--user").unwrap_or_else(|| "alice".into());
    let token = arg(&args, "--token").ok_or("--token <jwt> is required")?;
    let server = arg(&args, "--server").unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let room = arg(&args, "--room").unwrap_or_else(|| "general".into());
    let db = arg(&args, "--db").unwrap_or_else(|| format!("./{user}.roam.db"));

    let client = Client::open(
        ClientConfig::new(db, server, user.clone()),
        Arc::new(StaticToken(token)),
    )?;
    let printer = Arc::new(Printer);
    let _subs = (
        client.subscribe_connection_state(printer.clone()),
        client.subscribe_room_updates(Some(room.clone()), printer.clone()),
        client.subscribe_typing(Some(room.clone()), printer.clone()),
        client.subscribe_presence(printer.clone()),
    );
    for m in client.messages(room.clone(), None, 20)? {
        println!("[{}] {}: {}", m.room, m.sender, m.body);
    }
    let joined = client.room(room.clone())?.is_some_and(|r| r.joined);
    if !joined {
        if args.iter().any(|a| a == "--create") {
            client.create_room(room.clone(), RoomKind::Public, room.clone(), None)?;
        } else {
            client.join_room(room.clone())?;
        }
    }
    client.start().await?;

    let interactive = std::io::stdin().is_terminal();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        let line = line.trim().to_owned();
        match line.as_str() {
            "" => {}
            "/quit" => break,
            "/typing" => client.typing_started(room.clone()),
            "/offline" => client.set_online(false),
            "/online" => client.set_online(true),
            "/outbox" => {
                for e in client.outbox()? {
                    println!("  {} {} {:?} attempts={}", e.id, e.op, e.state, e.attempts);
                }
            }
            "/metrics" => println!("{:#?}", client.metrics()),
            cmd if cmd.starts_with("/wait ") => {
                let ms = cmd[6..].trim().parse().unwrap_or(1000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            "/history" => {
                for m in client.messages(room.clone(), None, 50)? {
                    println!(
                        "  {:>4} {}: {} {:?}",
                        m.seq.unwrap_or(0),
                        m.sender,
                        m.body,
                        m.send_state
                    );
                }
            }
            text => {
                if let Err(e) = client.send_message(room.clone(), text.to_owned()) {
                    println!("  ✗ {e}");
                }
            }
        }
    }
    if !interactive {
        // Piped input: wait for delivery before leaving.
        for _ in 0..300 {
            let pending = client
                .outbox()?
                .iter()
                .filter(|e| e.state == SendState::Pending)
                .count();
            if pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(failed) = client.outbox()?.iter().find(|e| e.state.is_failed()) {
            println!("  ✗ {} failed: {:?}", failed.op, failed.state);
        }
    }
    println!("{:?}", client.metrics());
    client.shutdown().await;
    Ok(())
}
