//! A process that sends numbered messages through roam-core, for the process-death test.
//!
//! `roam-e2e-sender <db> <server-url> <user> <token> <count> <room,room,…>`
//!
//! It opens the account database, finds the highest message number it already queued (a
//! previous run may have been killed at any point; queuing is one transaction, so a message is
//! either fully queued or not at all), queues the rest — message `i` goes to room `i % rooms` with
//! the body `m<i>` — then waits until the outbox is empty. It prints `queued <n>` as it goes,
//! `flushing` once everything is queued and `done` at the end, so the test knows where it is
//! when it kills it.

use std::io::Write;
use std::time::Duration;

use roam_tests::{fast_config, open_client};

fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 7 {
        eprintln!("usage: roam-e2e-sender <db> <url> <user> <token> <count> <rooms>");
        return std::process::ExitCode::from(2);
    }
    let (db, url, user, token) = (&args[1], &args[2], &args[3], args[4].clone());
    let Ok(count) = args[5].parse::<usize>() else {
        eprintln!("count must be a number");
        return std::process::ExitCode::from(2);
    };
    let rooms: Vec<String> = args[6].split(',').map(str::to_owned).collect();

    let client = open_client(fast_config(db.as_ref(), url, user), token);
    // The newest page of each room holds its latest message (pending ones sort last).
    let mut queued = 0usize;
    for room in &rooms {
        match client.messages(room.clone(), None, 200) {
            Ok(msgs) => {
                for m in msgs {
                    if let Ok(n) = m.body.trim_start_matches('m').parse::<usize>() {
                        queued = queued.max(n + 1);
                    }
                }
            }
            Err(e) => {
                eprintln!("read failed: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    out(&format!("resumed {queued}"));
    if let Err(e) = client.start().await {
        eprintln!("start failed: {e}");
        return std::process::ExitCode::FAILURE;
    }
    for i in queued..count {
        let room = rooms[i % rooms.len()].clone();
        if let Err(e) = client.send_message(room, format!("m{i:05}")) {
            eprintln!("send failed: {e}");
            return std::process::ExitCode::FAILURE;
        }
        out(&format!("queued {}", i + 1));
    }
    out("flushing");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let m = client.metrics();
        if m.outbox_depth == 0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            eprintln!("outbox did not drain: {m:?}");
            return std::process::ExitCode::FAILURE;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.shutdown().await;
    out("done");
    std::process::ExitCode::SUCCESS
}
