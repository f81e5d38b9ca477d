//! `roam-race`: runs the same workloads against roam-server, a Socket.IO 4.8 server and a Bun
//! pub/sub server, one server process at a time, and prints one table.
//!
//! One load generator process holds every client, so the latency of an event is measured on one
//! clock: the publisher writes its send instant into the body and each receiver subtracts it
//! from its receive instant. Server CPU and memory come from /proc. Every receiver checks that it
//! got every event once and in order; any violation makes the exit status non-zero.

mod client;
mod report;
mod server;
mod stats;
mod wire;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::report::Race;
use crate::server::{Kind, Programs, Server};
use crate::workload::{Receivers, Scale, Workload};

#[derive(Debug, Parser)]
#[command(
    name = "roam-race",
    about = "The server race: Roam against Socket.IO and Bun"
)]
struct Cli {
    /// Servers to run, in this order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Kind::Roam, Kind::Socketio, Kind::Bun])]
    servers: Vec<Kind>,
    /// Workloads to run, in this order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Workload::Chat, Workload::Broadcast, Workload::Saturation, Workload::Idle])]
    workloads: Vec<Workload>,
    /// Tiny scale and short windows: a correctness check, not a measurement.
    #[arg(long)]
    smoke: bool,
    /// The roam-server binary.
    #[arg(long, default_value = "target/release/roam-server")]
    roam_server: PathBuf,
    /// The node binary (for the Socket.IO peer).
    #[arg(long, default_value = "node")]
    node: PathBuf,
    /// The bun binary (installed from npm into the peers directory).
    #[arg(long, default_value = "race/peers/node_modules/.bin/bun")]
    bun: PathBuf,
    /// Directory of the peers (socketio.js, bun.js, node_modules).
    #[arg(long, default_value = "race/peers")]
    peers_dir: PathBuf,
    /// Where report.md, race.json, the charts and the server logs go.
    #[arg(long, default_value = "target/race")]
    out_dir: PathBuf,
    /// The commit measured, named in the report.
    #[arg(long)]
    commit: Option<String>,
    /// Roam receivers: room members (join, then subscribe) or readers of the public room.
    #[arg(long, value_enum, default_value_t = Receivers::Members)]
    roam_receivers: Receivers,
    #[arg(long)]
    chat_clients: Option<usize>,
    #[arg(long)]
    chat_rooms: Option<usize>,
    /// Messages per second, all chat rooms together.
    #[arg(long)]
    chat_rate: Option<f64>,
    #[arg(long)]
    broadcast_receivers: Option<usize>,
    #[arg(long)]
    broadcast_publishers: Option<usize>,
    /// Messages per second into the broadcast room.
    #[arg(long)]
    broadcast_rate: Option<f64>,
    /// Offered deliveries per second of each saturation step (comma separated).
    #[arg(long, value_delimiter = ',')]
    saturation_steps: Option<Vec<u64>>,
    #[arg(long)]
    idle_sockets: Option<usize>,
    /// Warm-up before the measured window (chat, broadcast), seconds.
    #[arg(long)]
    warmup_secs: Option<f64>,
    /// Measured window (chat, broadcast), seconds.
    #[arg(long)]
    measure_secs: Option<f64>,
    /// Measured window of each saturation step, seconds.
    #[arg(long)]
    step_secs: Option<f64>,
    /// How long to wait for the last events after publishing stops, seconds.
    #[arg(long)]
    drain_secs: Option<f64>,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
    /// Sockets connecting at once during setup.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// roam-server instances to run side by side (more than one needs --roam-store postgres://…
    /// and --roam-bus redis://…); clients are spread over them, CPU and memory are summed.
    #[arg(long, default_value_t = 1)]
    roam_nodes: usize,
    /// roam-server's `--store` (default: its embedded SQLite file).
    #[arg(long)]
    roam_store: Option<String>,
    /// roam-server's `--bus` (default: in-process).
    #[arg(long)]
    roam_bus: Option<String>,
}

fn secs(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0))
}

impl Cli {
    fn scale(&self) -> Scale {
        let smoke = self.smoke;
        let pick = |full: f64, small: f64| if smoke { small } else { full };
        let picku = |full: usize, small: usize| if smoke { small } else { full };
        Scale {
            chat_clients: self.chat_clients.unwrap_or(picku(1000, 20)),
            chat_rooms: self.chat_rooms.unwrap_or(picku(100, 2)).max(1),
            chat_rate: self.chat_rate.unwrap_or(pick(1000.0, 40.0)),
            broadcast_receivers: self.broadcast_receivers.unwrap_or(picku(1000, 20)).max(1),
            broadcast_publishers: self.broadcast_publishers.unwrap_or(picku(10, 2)).max(1),
            broadcast_rate: self.broadcast_rate.unwrap_or(pick(50.0, 20.0)),
            saturation_steps: self.saturation_steps.clone().unwrap_or_else(|| {
                if smoke {
                    vec![1_000, 4_000]
                } else {
                    vec![100_000, 250_000, 500_000, 1_000_000, 2_000_000]
                }
            }),
            idle_sockets: self.idle_sockets.unwrap_or(picku(10_000, 50)),
            idle_rooms: picku(100, 2),
            warmup: secs(self.warmup_secs.unwrap_or(pick(2.0, 0.5))),
            measure: secs(self.measure_secs.unwrap_or(pick(10.0, 1.5))),
            step_warmup: secs(pick(1.0, 0.3)),
            step_measure: secs(self.step_secs.unwrap_or(pick(5.0, 1.0))),
            drain: secs(self.drain_secs.unwrap_or(pick(30.0, 10.0))),
            settle: secs(pick(2.0, 0.3)),
            body_bytes: self.body_bytes.max(32),
            connect_concurrency: self.connect_concurrency,
            roam_receivers: self.roam_receivers,
        }
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(String::new(), |kib| {
            format!(", {:.0} GiB", kib as f64 / 1024.0 / 1024.0)
        });
    format!("{cores} cores{mem}, loopback, one load-generator process on the same machine")
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("roam-race: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(race(cli))
}

async fn race(cli: Cli) -> ExitCode {
    let fds = server::raise_fd_limit();
    let scale = cli.scale();
    let needed = scale.idle_sockets.max(scale.chat_clients) as u64 + 1024;
    if cli.workloads.contains(&Workload::Idle) && fds < needed {
        eprintln!(
            "roam-race: the open-file limit is {fds}, below the {needed} the idle workload needs (raise it with `ulimit -n`)"
        );
        return ExitCode::FAILURE;
    }
    let programs = Programs {
        roam_server: cli.roam_server.clone(),
        node: cli.node.clone(),
        bun: cli.bun.clone(),
        peers_dir: cli.peers_dir.clone(),
        log_dir: cli.out_dir.join("logs"),
        roam_nodes: cli.roam_nodes.max(1),
        roam_store: cli.roam_store.clone(),
        roam_bus: cli.roam_bus.clone(),
    };
    let mut race = Race {
        commit: cli.commit.clone(),
        machine: machine(),
        smoke: cli.smoke,
        scale: scale.clone(),
        figures: Vec::new(),
        failures: Vec::new(),
    };
    for &w in &cli.workloads {
        for &kind in &cli.servers {
            tracing::info!(workload = w.name(), server = kind.label(), "starting");
            let mut srv = match Server::start(kind, &programs, w.name()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "could not start the server");
                    race.failures
                        .push((w.name().into(), kind.label().into(), e.to_string()));
                    continue;
                }
            };
            match workload::run(w, &mut srv, &scale).await {
                Ok(figs) => {
                    for f in &figs {
                        tracing::info!(
                            workload = w.name(),
                            server = kind.label(),
                            deliveries_per_sec = f.deliveries_per_sec as u64,
                            p99_ms = f.p99_ms.unwrap_or(0.0),
                            cpu_percent = f.cpu_percent as u64,
                            violations = f.violations + f.missing,
                            "done"
                        );
                    }
                    race.figures.extend(figs);
                }
                Err(e) => {
                    tracing::error!(error = %e, workload = w.name(), server = kind.label(), "the workload failed");
                    race.failures
                        .push((w.name().into(), kind.label().into(), e.to_string()));
                }
            }
            srv.stop();
        }
    }
    let md = report::markdown(&race);
    println!("{md}");
    if let Err(e) = write_outputs(&cli, &race, &md) {
        eprintln!("roam-race: could not write the outputs: {e}");
        return ExitCode::FAILURE;
    }
    let bad: u64 = race.figures.iter().map(|f| f.violations + f.missing).sum();
    if bad > 0 || !race.failures.is_empty() {
        eprintln!(
            "roam-race: {bad} violations, {} workloads that did not run",
            race.failures.len()
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn write_outputs(cli: &Cli, race: &Race, md: &str) -> std::io::Result<()> {
    let dir = &cli.out_dir;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.md"), md)?;
    let json = serde_json::to_string_pretty(race).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("race.json"), json)?;
    if let Some(svg) = report::saturation_svg(race) {
        std::fs::write(dir.join("saturation.svg"), svg)?;
    }
    if let Some(svg) = report::latency_svg(race) {
        std::fs::write(dir.join("latency.svg"), svg)?;
    }
    eprintln!(
        "roam-race: wrote {}/report.md, race.json, saturation.svg, latency.svg",
        dir.display()
    );
    Ok(())
}
