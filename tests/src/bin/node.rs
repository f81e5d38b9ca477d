//! A roam-server instance as its own process, for the multi-node tests (which SIGKILL one).
//!
//! `roam-e2e-node [roam-server flags]`: the same flags and environment as `roam-server`. It
//! prints `listening <addr>` once it accepts connections and runs until SIGTERM or SIGKILL.

use std::io::Write;

use clap::Parser;
use roam_server::config::Cli;
use roam_server::Server;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let config = cli.config;
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", config.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    let server = match Server::start(config, listener).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening {}", server.local_addr());
        let _ = out.flush();
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot listen for SIGTERM: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    term.recv().await;
    server.shutdown().await;
    std::process::ExitCode::SUCCESS
}
