//! `roam-server`: parses the configuration, sets up logging, and runs the server until Ctrl-C or
//! SIGTERM (or prints a token with `roam-server token --user <id>`, asks the running server for a
//! backup with `roam-server admin backup`, or restores one with `roam-server restore`).

use clap::Parser;
use roam_server::config::{Cli, Command, LogFormat};
use roam_server::Server;
use tracing_subscriber::EnvFilter;

/// mimalloc: per-socket buffers are many and small, and it hands freed pages back to the OS;
/// after a burst of connections closes, `roam_server::memory` makes every worker thread give
/// its freed pages back (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Raises the open-file limit to the hard limit: every socket is a descriptor.
fn raise_open_file_limit() {
    match roam_server::edge::raise_open_file_limit() {
        Ok(r) if r.before != r.after => {
            tracing::info!(before = ?r.before, after = ?r.after, "raised the open-file limit");
        }
        Ok(r) => tracing::info!(limit = ?r.after, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "the open-file limit stays as it is"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn main() -> std::process::ExitCode {
    roam_server::memory::use_mimalloc();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(roam_server::memory::on_worker_park)
        .thread_keep_alive(roam_server::memory::BLOCKING_KEEP_ALIVE)
        .build();
    match runtime {
        Ok(rt) => rt.block_on(serve()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.config.log_format);
    let config = cli.config;
    if cli.command.is_none() || matches!(cli.command, Some(Command::Serve)) {
        raise_open_file_limit();
    }
    if let Some(Command::Token { user, ttl_secs }) = cli.command {
        // The same checks as the server: a token the server would refuse is not printed.
        if let Err(e) = config.validate() {
            eprintln!("error: invalid configuration: {e}");
            return std::process::ExitCode::FAILURE;
        }
        let keys = match roam_server::auth::Keys::from_config(&config) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("error: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        return match keys.mint(&user, ttl_secs) {
            Ok(t) => {
                println!("{t}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}", e.message);
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Admin { action }) = cli.command {
        return match roam_server::admin::run(&config, action).await {
            Ok(b) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&b).unwrap_or_else(|_| format!("{b:?}"))
                );
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Restore { from }) = cli.command {
        return match roam_server::admin::restore(&config, &from) {
            Ok(r) => {
                match &r.previous {
                    Some(p) => println!("restored; the database before is kept as {}", p.display()),
                    None => println!("restored"),
                }
                println!(
                    "schema version {}, {} attachment files",
                    r.schema_version, r.blob_files
                );
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, listen = %config.listen, "cannot listen");
            return std::process::ExitCode::FAILURE;
        }
    };
    let server = match Server::start(config, listener).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return std::process::ExitCode::FAILURE;
        }
    };
    shutdown_signal().await;
    server.shutdown().await;
    std::process::ExitCode::SUCCESS
}
