//! A notification extension's process: opens the account's store next to the app with a
//! `PushHandler`, answers one push and prints what to show, how long it took and how much memory
//! it took on top of the process.
//!
//! `roam-e2e-push <db> <server-url> <user> <token> <deadline-ms> <payload-json>…`
//!
//! Each payload is answered in turn (one handler, as an extension process that receives several
//! pushes keeps it). Prints one JSON line per payload:
//! `{"kind","room_title","sender","body","seq","badge","elapsed_us"}`, then
//! `{"rss_before_kib","peak_kib"}`: the resident set just before the handler was opened (the
//! process with its runtime started: what any extension pays) and the peak resident set of the
//! whole run (`VmHWM`, Linux). Exits 1 with the error on stderr when the handler fails.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roam_core::{PushContentKind, PushHandler, StaticToken};
use serde_json::json;

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`); 0 where there is none.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 7 {
        eprintln!("usage: roam-e2e-push <db> <url> <user> <token> <deadline-ms> <payload>…");
        return std::process::ExitCode::from(2);
    }
    let Ok(deadline) = args[5].parse::<u64>().map(Duration::from_millis) else {
        eprintln!("deadline-ms must be a number");
        return std::process::ExitCode::from(2);
    };
    // What an extension runs on: a small runtime of its own.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let rss_before = status_kib("VmRSS:");
    let config = roam_core::ClientConfig::new(&args[1], args[2].as_str(), args[3].as_str());
    let outcome = rt.block_on(async {
        let handler = PushHandler::open(&config, Arc::new(StaticToken(args[4].clone())))?;
        let mut lines = Vec::new();
        for payload in &args[6..] {
            let started = Instant::now();
            let c = handler.handle_push(payload, deadline).await?;
            lines.push(json!({
                "kind": if c.kind == PushContentKind::Show { "show" } else { "clear" },
                "room_title": c.room_title,
                "sender": c.sender,
                "body": c.body,
                "seq": c.seq,
                "badge": c.badge,
                "elapsed_us": started.elapsed().as_micros() as u64,
            }));
        }
        Ok::<_, roam_core::Error>(lines)
    });
    match outcome {
        Ok(lines) => {
            let mut out = std::io::stdout().lock();
            for l in lines {
                let _ = writeln!(out, "{l}");
            }
            let memory = json!({"rss_before_kib": rss_before, "peak_kib": status_kib("VmHWM:")});
            let _ = writeln!(out, "{memory}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
