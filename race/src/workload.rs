//! The workloads: who connects where, who publishes how fast, what is measured, and the
//! end-of-run check that every receiver got every event once, in order.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;

use crate::client::{self, Client, Cmd, Flavor, Spec};
use crate::server::{Server, ServerError};
use crate::stats::Shared;

/// Publishing resolution.
const TICK: Duration = Duration::from_millis(1);
/// A saturation step that achieves less than this share of its offered load ends the steps.
const SATURATED: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    Chat,
    Broadcast,
    Saturation,
    Idle,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Chat => "chat",
            Workload::Broadcast => "broadcast",
            Workload::Saturation => "saturation",
            Workload::Idle => "idle",
        }
    }
}

/// Whether Roam receivers become room members or read the public room without joining.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Receivers {
    /// Every receiver joins its room (`room.join`) before subscribing.
    Members,
    /// Receivers subscribe to the public room without joining; only publishers join.
    Readers,
}

/// Sizes and durations of every workload.
#[derive(Debug, Clone, Serialize)]
pub struct Scale {
    pub chat_clients: usize,
    pub chat_rooms: usize,
    pub chat_rate: f64,
    pub broadcast_receivers: usize,
    pub broadcast_publishers: usize,
    pub broadcast_rate: f64,
    pub saturation_steps: Vec<u64>,
    pub idle_sockets: usize,
    pub idle_rooms: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub step_warmup: Duration,
    pub step_measure: Duration,
    pub drain: Duration,
    pub settle: Duration,
    pub body_bytes: usize,
    pub connect_concurrency: usize,
    pub roam_receivers: Receivers,
}

/// Idle-socket memory.
#[derive(Debug, Clone, Serialize)]
pub struct IdleFigures {
    pub sockets: usize,
    pub rss_before_kib: u64,
    pub rss_open_kib: u64,
    pub rss_after_kib: u64,
    pub kib_per_socket: f64,
}

/// The figures of one workload (or one saturation step) on one server.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub workload: Workload,
    pub server: &'static str,
    pub server_label: &'static str,
    pub version: String,
    pub clients: usize,
    pub offered_deliveries_per_sec: Option<f64>,
    pub window_secs: f64,
    pub messages_published: u64,
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub latency_samples: u64,
    pub cpu_percent: f64,
    pub cpu_secs_per_million: Option<f64>,
    /// CPU used by the load generator itself over the window: near the machine's capacity
    /// minus the server's, the generator (not the server) bounds the figures.
    pub generator_cpu_percent: Option<f64>,
    pub rss_kib: u64,
    /// The machine's 1-minute load average at the end of the window (other processes included).
    pub load_avg: Option<f64>,
    pub idle: Option<IdleFigures>,
    /// Sockets the server closed, by close code (0: ended without a close frame).
    pub closed_by_server: BTreeMap<u16, u64>,
    pub publish_errors: u64,
    /// Publish commands the load generator could not queue (its own overload, not the server's).
    pub generator_dropped: u64,
    /// Events never received by receivers still connected at the end.
    pub missing: u64,
    pub violations: u64,
    pub violation_samples: Vec<String>,
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("setup: {0}")]
    Setup(#[from] client::ClientError),
}

/// The clients of one workload.
struct Cast {
    /// Set-up clients (Roam room creation), kept open during the run.
    admin: Vec<Client>,
    publishers: Vec<mpsc::Sender<Cmd>>,
    receivers: Vec<mpsc::Sender<Cmd>>,
    all: Vec<Client>,
}

/// Runs `workload` on a started server and returns its figures (several for saturation).
pub async fn run(
    workload: Workload,
    server: &mut Server,
    scale: &Scale,
) -> Result<Vec<Figures>, RunError> {
    match workload {
        Workload::Chat => {
            let rooms: Vec<Arc<str>> = (0..scale.chat_rooms)
                .map(|r| Arc::from(format!("chat-{r}").as_str()))
                .collect();
            // Client i is in room i % rooms; all of them publish and receive.
            let mut specs = Vec::new();
            for i in 0..scale.chat_clients {
                let room = rooms[i % rooms.len()].clone();
                let watch = (0..scale.chat_clients)
                    .filter(|j| j % rooms.len() == i % rooms.len())
                    .map(|j| j as u32)
                    .collect();
                specs.push(Spec {
                    user: format!("chat-user-{i}"),
                    publisher: Some((i as u32, room.clone())),
                    join: Some(room.clone()),
                    subscribe: Some(room),
                    watch,
                    body_bytes: scale.body_bytes,
                    ..Spec::default()
                });
            }
            let room_size = scale.chat_clients as f64 / rooms.len() as f64;
            let offered = scale.chat_rate * room_size;
            steady(
                workload,
                server,
                scale,
                &rooms,
                specs,
                scale.chat_clients,
                vec![(offered, scale.chat_rate)],
                scale.warmup,
                scale.measure,
            )
            .await
        }
        Workload::Broadcast | Workload::Saturation => {
            let room: Arc<str> = Arc::from("broadcast");
            let n = scale.broadcast_receivers;
            let p = scale.broadcast_publishers;
            let mut specs = Vec::new();
            for i in 0..p {
                specs.push(Spec {
                    user: format!("publisher-{i}"),
                    publisher: Some((i as u32, room.clone())),
                    join: server.is_roam().then(|| room.clone()),
                    subscribe: None,
                    body_bytes: scale.body_bytes,
                    ..Spec::default()
                });
            }
            let join_receivers = !server.is_roam() || scale.roam_receivers == Receivers::Members;
            for i in 0..n {
                specs.push(Spec {
                    user: format!("receiver-{i}"),
                    publisher: None,
                    join: join_receivers.then(|| room.clone()),
                    subscribe: Some(room.clone()),
                    watch: (0..p as u32).collect(),
                    body_bytes: scale.body_bytes,
                    ..Spec::default()
                });
            }
            let steps: Vec<(f64, f64)> = if workload == Workload::Broadcast {
                vec![(scale.broadcast_rate * n as f64, scale.broadcast_rate)]
            } else {
                scale
                    .saturation_steps
                    .iter()
                    .map(|&d| (d as f64, d as f64 / n as f64))
                    .collect()
            };
            let (warmup, measure) = if workload == Workload::Broadcast {
                (scale.warmup, scale.measure)
            } else {
                (scale.step_warmup, scale.step_measure)
            };
            steady(
                workload,
                server,
                scale,
                std::slice::from_ref(&room),
                specs,
                p,
                steps,
                warmup,
                measure,
            )
            .await
        }
        Workload::Idle => idle(server, scale).await.map(|f| vec![f]),
    }
}

impl Server {
    pub fn is_roam(&self) -> bool {
        matches!(self.flavor, Flavor::Roam { .. })
    }
}

/// Connects the admin (Roam: creates `rooms`), then every spec, `concurrency` at a time.
async fn cast(
    server: &Server,
    scale: &Scale,
    rooms: &[Arc<str>],
    specs: Vec<Spec>,
    shared: &Arc<Shared>,
) -> Result<Cast, RunError> {
    let mut admin = Vec::new();
    if server.is_roam() {
        let spec = Spec {
            user: "race-admin".into(),
            create: rooms.to_vec(),
            body_bytes: scale.body_bytes,
            ..Spec::default()
        };
        admin.push(client::start(server.flavor.clone(), spec, shared.clone()).await?);
    }
    let all = connect_all(
        &server.flavor,
        specs.clone(),
        shared,
        scale.connect_concurrency,
    )
    .await?;
    let mut publishers = Vec::new();
    let mut receivers = Vec::new();
    for (spec, c) in specs.iter().zip(&all) {
        if spec.publisher.is_some() {
            publishers.push(c.tx.clone());
        }
        if !spec.watch.is_empty() {
            receivers.push(c.tx.clone());
        }
    }
    Ok(Cast {
        admin,
        publishers,
        receivers,
        all,
    })
}

async fn connect_all(
    flavor: &Flavor,
    specs: Vec<Spec>,
    shared: &Arc<Shared>,
    concurrency: usize,
) -> Result<Vec<Client>, RunError> {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    let n = specs.len();
    for (i, spec) in specs.into_iter().enumerate() {
        let gate = gate.clone();
        let flavor = flavor.clone();
        let shared = shared.clone();
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            (i, client::start(flavor, spec, shared).await)
        });
    }
    let mut out: Vec<Option<Client>> = (0..n).map(|_| None).collect();
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, Ok(c))) => out[i] = Some(c),
            Ok((_, Err(e))) => {
                first_error.get_or_insert(e);
            }
            Err(e) => tracing::warn!(error = %e, "a connect task failed"),
        }
    }
    if let Some(e) = first_error {
        for c in out.into_iter().flatten() {
            let _ = c.tx.send(Cmd::Close).await;
        }
        return Err(e.into());
    }
    Ok(out.into_iter().flatten().collect())
}

/// Publishes `rate` messages per second round-robin over `publishers` for `warmup + measure`,
/// measuring during `measure`. Returns (messages in the window, window, server CPU seconds,
/// dropped publishes, load-generator CPU seconds).
async fn publish(
    server: &Server,
    shared: &Shared,
    publishers: &[mpsc::Sender<Cmd>],
    rate: f64,
    warmup: Duration,
    measure: Duration,
) -> Result<(u64, Duration, f64, u64, Option<f64>), ServerError> {
    let start = Instant::now();
    let total = warmup + measure;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut done = 0u64;
    let mut next = 0usize;
    let mut dropped = 0u64;
    let mut window: Option<(Instant, f64, u64)> = None;
    let mut own0 = None;
    loop {
        tick.tick().await;
        let elapsed = start.elapsed();
        if window.is_none() && elapsed >= warmup {
            shared.start_window();
            own0 = crate::server::own_cpu_secs();
            window = Some((Instant::now(), server.cpu_secs()?, done));
        }
        if elapsed >= total {
            break;
        }
        let due = (elapsed.as_secs_f64() * rate) as u64;
        while done < due && !publishers.is_empty() {
            let tx = &publishers[next % publishers.len()];
            next += 1;
            if tx.try_send(Cmd::Publish).is_err() {
                dropped += 1;
            }
            done += 1;
        }
    }
    shared.end_window();
    let cpu1 = server.cpu_secs()?;
    let own = own0.zip(crate::server::own_cpu_secs()).map(|(a, b)| b - a);
    let (t0, cpu0, done0) = window.unwrap_or((start, cpu1, 0));
    Ok((done - done0, t0.elapsed(), cpu1 - cpu0, dropped, own))
}

/// Waits until every publisher's messages are written (Roam: acknowledged), then until every
/// receiver has them all or `limit` passes. Returns (missing events, receivers gone).
async fn drain(cast: &Cast, limit: Duration) -> (u64, usize) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut flushes = Vec::new();
    for tx in &cast.publishers {
        let (r, w) = oneshot::channel();
        if tx.send(Cmd::Flush(r)).await.is_ok() {
            flushes.push(w);
        }
    }
    for w in flushes {
        let _ = tokio::time::timeout_at(deadline, w).await;
    }
    loop {
        let (missing, gone) = check(&cast.receivers).await;
        if missing == 0 || tokio::time::Instant::now() >= deadline {
            return (missing, gone);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn check(receivers: &[mpsc::Sender<Cmd>]) -> (u64, usize) {
    let mut answers = Vec::new();
    let mut gone = 0;
    for tx in receivers {
        let (r, w) = oneshot::channel();
        if tx.send(Cmd::Check(r)).await.is_ok() {
            answers.push(w);
        } else {
            gone += 1;
        }
    }
    let mut missing = 0;
    for w in answers {
        match w.await {
            Ok(m) => missing += m,
            Err(_) => gone += 1,
        }
    }
    (missing, gone)
}

async fn close_all(cast: Cast) {
    for c in cast.all.iter().chain(&cast.admin) {
        let _ = c.tx.send(Cmd::Close).await;
    }
    for c in cast.all.into_iter().chain(cast.admin) {
        let _ = tokio::time::timeout(Duration::from_secs(10), c.task).await;
    }
}

/// The 1-minute load average from /proc/loadavg.
pub fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[allow(clippy::too_many_arguments)]
async fn steady(
    workload: Workload,
    server: &mut Server,
    scale: &Scale,
    rooms: &[Arc<str>],
    specs: Vec<Spec>,
    publishers: usize,
    steps: Vec<(f64, f64)>,
    warmup: Duration,
    measure: Duration,
) -> Result<Vec<Figures>, RunError> {
    let shared = Arc::new(Shared::new(publishers));
    let clients = specs.len();
    let cast = cast(server, scale, rooms, specs, &shared).await?;
    tokio::time::sleep(scale.settle).await;
    let mut out = Vec::new();
    let mut violations_before = shared.violations();
    let mut errors_before = 0;
    let mut closed_before = BTreeMap::new();
    for (i, &(offered, rate)) in steps.iter().enumerate() {
        let (published, window, cpu, dropped, own_cpu) =
            publish(server, &shared, &cast.publishers, rate, warmup, measure).await?;
        let rss = server.rss_kib()?;
        let deliveries = shared.deliveries();
        let secs = window.as_secs_f64();
        let (missing, gone) = drain(&cast, scale.drain).await;
        let mut f = Figures {
            workload,
            server: server.kind.name(),
            server_label: server.kind.label(),
            version: server.version.clone(),
            clients,
            offered_deliveries_per_sec: Some(offered),
            window_secs: secs,
            messages_published: published,
            deliveries,
            deliveries_per_sec: deliveries as f64 / secs,
            p50_ms: shared.latency_ms(0.5),
            p99_ms: shared.latency_ms(0.99),
            p999_ms: shared.latency_ms(0.999),
            latency_samples: shared.latency_samples(),
            cpu_percent: cpu / secs * 100.0,
            cpu_secs_per_million: (deliveries > 0).then(|| cpu / (deliveries as f64 / 1e6)),
            generator_cpu_percent: own_cpu.map(|c| c / secs * 100.0),
            rss_kib: rss,
            load_avg: load_avg(),
            idle: None,
            closed_by_server: BTreeMap::new(),
            publish_errors: 0,
            generator_dropped: dropped,
            missing,
            violations: 0,
            violation_samples: Vec::new(),
            notes: Vec::new(),
        };
        if gone > 0 {
            f.notes
                .push(format!("{gone} receivers were gone at the end of the step"));
        }
        if dropped > 0 {
            f.notes.push(format!(
                "the load generator could not queue {dropped} publishes (its own backlog)"
            ));
        }
        if !server.alive() {
            f.notes.push("the server process exited".into());
            shared.violation(format!(
                "{} exited during {}",
                server.kind.label(),
                workload.name()
            ));
        }
        let last = i + 1 == steps.len();
        let saturated = f.deliveries_per_sec < offered * SATURATED;
        let stuck = missing > 0;
        if !last && (saturated || stuck) {
            f.notes.push(if stuck {
                format!(
                    "its backlog did not drain within {:?}: higher steps skipped",
                    scale.drain
                )
            } else {
                "below half the offered load: higher steps skipped".into()
            });
        }
        if stuck {
            shared.violation(format!(
                "{}: {missing} events never reached receivers still connected, {:?} after the last publish",
                workload.name(),
                scale.drain
            ));
        }
        let closed = shared.closed();
        f.closed_by_server = closed
            .iter()
            .map(|(&code, &n)| (code, n - closed_before.get(&code).copied().unwrap_or(0)))
            .filter(|&(_, n)| n > 0)
            .collect();
        closed_before = closed;
        let errors = shared.publish_errors.load(Ordering::Relaxed);
        f.publish_errors = errors - errors_before;
        errors_before = errors;
        f.violations = shared.violations() - violations_before;
        violations_before = shared.violations();
        f.violation_samples = shared.violation_texts();
        out.push(f);
        if saturated || stuck {
            break;
        }
    }
    close_all(cast).await;
    Ok(out)
}

async fn idle(server: &mut Server, scale: &Scale) -> Result<Figures, RunError> {
    let shared = Arc::new(Shared::new(0));
    let rooms: Vec<Arc<str>> = (0..scale.idle_rooms.max(1))
        .map(|r| Arc::from(format!("idle-{r}").as_str()))
        .collect();
    let roam = server.is_roam();
    let specs: Vec<Spec> = (0..scale.idle_sockets)
        .map(|i| {
            let room = rooms[i % rooms.len()].clone();
            Spec {
                user: format!("idle-user-{i}"),
                publisher: None,
                // Roam: subscribed readers of a public room (authenticated, no membership);
                // Socket.IO: joined to the room.
                join: (!roam).then(|| room.clone()),
                subscribe: Some(room),
                body_bytes: scale.body_bytes,
                ..Spec::default()
            }
        })
        .collect();
    let empty = cast(server, scale, &rooms, Vec::new(), &shared).await?;
    tokio::time::sleep(scale.settle).await;
    let before = server.rss_kib()?;
    let all = connect_all(&server.flavor, specs, &shared, scale.connect_concurrency).await?;
    tokio::time::sleep(scale.settle).await;
    let open = server.rss_kib()?;
    let closed_while_open = shared.closed();
    let n = all.len();
    close_all(Cast {
        admin: Vec::new(),
        publishers: Vec::new(),
        receivers: Vec::new(),
        all,
    })
    .await;
    tokio::time::sleep(scale.settle * 3).await;
    let after = server.rss_kib()?;
    close_all(empty).await;
    let mut notes = Vec::new();
    if !server.alive() {
        notes.push("the server process exited".into());
        shared.violation(format!("{} exited during idle", server.kind.label()));
    }
    Ok(Figures {
        workload: Workload::Idle,
        server: server.kind.name(),
        server_label: server.kind.label(),
        version: server.version.clone(),
        clients: n,
        offered_deliveries_per_sec: None,
        window_secs: 0.0,
        messages_published: 0,
        deliveries: 0,
        deliveries_per_sec: 0.0,
        p50_ms: None,
        p99_ms: None,
        p999_ms: None,
        latency_samples: 0,
        cpu_percent: 0.0,
        cpu_secs_per_million: None,
        generator_cpu_percent: None,
        rss_kib: open,
        load_avg: load_avg(),
        idle: Some(IdleFigures {
            sockets: n,
            rss_before_kib: before,
            rss_open_kib: open,
            rss_after_kib: after,
            kib_per_socket: open.saturating_sub(before) as f64 / n.max(1) as f64,
        }),
        closed_by_server: closed_while_open,
        publish_errors: 0,
        generator_dropped: 0,
        missing: 0,
        violations: shared.violations(),
        violation_samples: shared.violation_texts(),
        notes,
    })
}
