//! The connection edge: the accept loop and the HTTP/1 connections under the router.
//!
//! `axum::serve` runs without timers: a client that sends its request head one byte a second,
//! or that opens a connection and says nothing, holds a descriptor and a task for as long as it
//! likes. Here every accepted connection goes through [`Edge::admit`] and is served by hyper
//! under a watchdog:
//!
//! - **Header timeout** (`--http-header-timeout-ms`): a request head must arrive in full within
//!   this long of the connection being accepted, or of its first byte after an idle keep-alive
//!   wait. Past it the connection is dropped.
//! - **Idle timeout** (`--http-idle-timeout-secs`): a keep-alive connection with no request in
//!   flight that receives nothing for this long is dropped.
//! - **Pending caps** (`--max-pending-connections`, `--max-pending-per-ip`): connections not
//!   upgraded to a WebSocket (REST keep-alive connections and handshakes in progress) are
//!   counted, in total and per client address. A connection over a cap is not served
//!   normally: it becomes a *spare* connection (below).
//! - **Descriptor budget** (`--max-connections`, by default the open-file limit less
//!   `--fd-reserve`): client sockets of any kind (HTTP and WebSocket) are counted; past the
//!   budget a new connection is a spare one, and a warning is logged once while the server
//!   stays near the limit.
//! - **Spare connections**: at most [`SPARE_CONNECTIONS`] at once, taken from the descriptor
//!   reserve, each allowed one request with a short header timeout: `/healthz` and `/readyz`
//!   are answered, anything else gets `503` and the connection is closed. So a probe still gets
//!   its answer while the server is full of slow clients. Past the spare slots a connection is
//!   closed at once.
//!
//! Upgraded WebSockets leave the pending count when their handshake completes, and the
//! descriptor count when their socket closes (the count lives in the socket's I/O wrapper).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::Config;
use crate::metrics::{KindLabel, Metrics};

/// Connections served beyond the caps, one health check each, at most.
pub const SPARE_CONNECTIONS: usize = 32;
/// The header timeout of a spare connection, at most.
const SPARE_HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest read buffer of an HTTP connection (hyper grows it as a request needs, up to this;
/// a request head larger than this is refused with 431).
const MAX_HTTP_BUFFER: usize = 64 * 1024;
/// Paths a spare connection may ask for.
const HEALTH_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// The edge's settings, from [`Config`].
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_pending: usize,
    /// 0: no per-address cap.
    pub max_pending_per_ip: usize,
    /// Most client sockets held at once (`None`: no budget).
    pub max_connections: Option<usize>,
    /// `TCP_NODELAY` on client connections.
    pub nodelay: bool,
}

impl EdgeConfig {
    /// The settings of `config`; the descriptor budget is `--max-connections`, or the current
    /// open-file limit less the descriptors already open and `--fd-reserve`.
    pub fn from_config(config: &Config) -> EdgeConfig {
        let max_connections = match config.max_connections {
            0 => fd_budget(config.fd_reserve),
            n => Some(n),
        };
        EdgeConfig {
            header_timeout: Duration::from_millis(config.http_header_timeout_ms.max(1)),
            idle_timeout: Duration::from_secs(config.http_idle_timeout_secs.max(1)),
            max_pending: config.max_pending_connections,
            max_pending_per_ip: config.max_pending_per_ip,
            max_connections,
            nodelay: config.tcp_nodelay,
        }
    }
}

/// The open-file limit less what is open now and `reserve` (`None` when unlimited or unknown).
fn fd_budget(reserve: usize) -> Option<usize> {
    let limit = open_file_limit()?;
    let open = open_descriptors().unwrap_or(0);
    let budget = limit.saturating_sub(open).saturating_sub(reserve as u64);
    Some(usize::try_from(budget).unwrap_or(usize::MAX).max(1))
}

/// The soft open-file limit (`None`: unlimited).
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Descriptors this process has open (Linux; `None` elsewhere).
fn open_descriptors() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64)
}

/// What raising the open-file limit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaisedLimit {
    pub before: Option<u64>,
    pub after: Option<u64>,
}

/// Could not raise the open-file limit.
#[derive(Debug, thiserror::Error)]
#[error("could not raise the open-file limit from {before:?} to {wanted:?}: {source}")]
pub struct RaiseError {
    before: Option<u64>,
    wanted: Option<u64>,
    source: io::Error,
}

/// Raises the soft open-file limit to the hard one (each socket is a descriptor; the usual
/// soft limit of 1,024 would cap the server far below what it can hold).
pub fn raise_open_file_limit() -> Result<RaisedLimit, RaiseError> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let now = getrlimit(Resource::Nofile);
    let before = now.current;
    if now.current == now.maximum {
        return Ok(RaisedLimit {
            before,
            after: before,
        });
    }
    let mut want = now;
    want.current = now.maximum;
    setrlimit(Resource::Nofile, want).map_err(|e| RaiseError {
        before,
        wanted: now.maximum,
        source: e.into(),
    })?;
    Ok(RaisedLimit {
        before,
        after: getrlimit(Resource::Nofile).current,
    })
}

/// Why a connection was not served normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Pending,
    PendingPerIp,
    Descriptors,
}

impl Over {
    fn label(self) -> &'static str {
        match self {
            Over::Pending => "pending",
            Over::PendingPerIp => "pending_per_ip",
            Over::Descriptors => "descriptors",
        }
    }
}

#[derive(Debug, Default)]
struct PendingCounts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The edge's shared state: what is counted, and the limits.
#[derive(Debug)]
pub struct Edge {
    config: EdgeConfig,
    metrics: Arc<Metrics>,
    /// Client sockets open (HTTP and upgraded).
    open: AtomicUsize,
    pending: Mutex<PendingCounts>,
    spare: AtomicUsize,
    /// Set while the server is over its descriptor budget (the warning is logged once per
    /// episode).
    near_limit: AtomicBool,
    epoch: Instant,
}

impl Edge {
    pub fn new(config: EdgeConfig, metrics: Arc<Metrics>) -> Arc<Edge> {
        if let Some(max) = config.max_connections {
            metrics.edge_connection_budget.set(max as i64);
            tracing::info!(
                budget = max,
                "client connections past this budget get health checks only"
            );
        }
        Arc::new(Edge {
            config,
            metrics,
            open: AtomicUsize::new(0),
            pending: Mutex::new(PendingCounts::default()),
            spare: AtomicUsize::new(0),
            near_limit: AtomicBool::new(false),
            epoch: Instant::now(),
        })
    }

    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    /// Client sockets open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Connections not upgraded now (normal ones; spare ones are not counted).
    pub fn pending_connections(&self) -> usize {
        self.pending.lock().total
    }

    fn now_ms(&self) -> u64 {
        // Never 0: 0 means "unset" in the tickets' timestamps.
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Admits a connection from `ip`: a ticket to serve it normally or as a spare, or `None`
    /// to close it at once.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Arc<Ticket>> {
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        self.metrics.edge_open.set(open as i64);
        let over = match self.config.max_connections {
            Some(max) if open > max => {
                if !self.near_limit.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        open,
                        budget = max,
                        "near the open-file limit: new connections get health checks only \
                         (raise `ulimit -n` or lower the load)"
                    );
                }
                Some(Over::Descriptors)
            }
            Some(max) => {
                // Below 90% of the budget again: the next episode is logged again.
                if open * 10 < max * 9 && self.near_limit.swap(false, Ordering::AcqRel) {
                    tracing::info!(open, budget = max, "back under the open-file budget");
                }
                None
            }
            None => None,
        };
        let over = over.or_else(|| self.take_pending(ip).err());
        let spare = match over {
            None => false,
            Some(why) => {
                let taken = self.spare.fetch_add(1, Ordering::AcqRel);
                if taken >= SPARE_CONNECTIONS {
                    self.spare.fetch_sub(1, Ordering::AcqRel);
                    self.refused(why, "closed");
                    self.closed_socket();
                    return None;
                }
                self.refused(why, "spare");
                true
            }
        };
        let now = self.now_ms();
        Some(Arc::new(Ticket {
            edge: Arc::clone(self),
            ip,
            spare,
            pending: AtomicBool::new(!spare),
            in_flight: AtomicU32::new(0),
            head_began_ms: AtomicU64::new(now),
            idle_since_ms: AtomicU64::new(now),
        }))
    }

    fn refused(&self, why: Over, what: &str) {
        self.metrics
            .edge_refused
            .get_or_create(&KindLabel {
                kind: format!("{}_{what}", why.label()),
            })
            .inc();
    }

    /// Takes a pending slot for `ip`, or says which cap is full.
    fn take_pending(&self, ip: IpAddr) -> Result<(), Over> {
        let mut p = self.pending.lock();
        if p.total >= self.config.max_pending {
            return Err(Over::Pending);
        }
        let mine = p.per_ip.get(&ip).copied().unwrap_or(0);
        if self.config.max_pending_per_ip != 0 && mine >= self.config.max_pending_per_ip {
            return Err(Over::PendingPerIp);
        }
        p.total += 1;
        p.per_ip.insert(ip, mine + 1);
        self.metrics.edge_pending.set(p.total as i64);
        Ok(())
    }

    fn release_pending(&self, ip: IpAddr) {
        let mut p = self.pending.lock();
        p.total = p.total.saturating_sub(1);
        if let Some(n) = p.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                p.per_ip.remove(&ip);
            }
        }
        self.metrics.edge_pending.set(p.total as i64);
    }

    fn closed_socket(&self) {
        let open = self.open.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        self.metrics.edge_open.set(open as i64);
    }
}

/// One admitted connection: its place in the counts and what its watchdog reads. Dropped with
/// the socket (the I/O wrapper holds it), which gives its counts back.
#[derive(Debug)]
pub struct Ticket {
    edge: Arc<Edge>,
    ip: IpAddr,
    /// Served beyond the caps: one health check.
    spare: bool,
    /// Still counted as a pending (not upgraded) connection.
    pending: AtomicBool,
    in_flight: AtomicU32,
    /// When the current request head began (the connection's accept, or the first byte after
    /// an idle wait); 0 while idle with nothing received.
    head_began_ms: AtomicU64,
    /// When the connection last became idle (no request in flight).
    idle_since_ms: AtomicU64,
}

/// Why the watchdog dropped a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    Header,
    Idle,
}

impl Ticket {
    /// The connection is no longer a pending HTTP connection (it closed, or became a
    /// WebSocket).
    fn leave_pending(&self) {
        if self.pending.swap(false, Ordering::AcqRel) {
            self.edge.release_pending(self.ip);
        }
    }

    fn bytes_read(&self) {
        if self.head_began_ms.load(Ordering::Relaxed) == 0 {
            let now = self.edge.now_ms();
            let _ =
                self.head_began_ms
                    .compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn request_began(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    fn request_ended(&self) {
        let now = self.edge.now_ms();
        self.idle_since_ms.store(now, Ordering::Release);
        self.head_began_ms.store(0, Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    fn header_timeout(&self) -> Duration {
        let t = self.edge.config.header_timeout;
        if self.spare {
            t.min(SPARE_HEADER_TIMEOUT)
        } else {
            t
        }
    }

    /// Completes when the connection has overstayed: its request head is late, or it has been
    /// idle too long.
    async fn expired(&self) -> Expired {
        let header = self.header_timeout().as_millis() as u64;
        let idle = self.edge.config.idle_timeout.as_millis() as u64;
        loop {
            let now = self.edge.now_ms();
            let (deadline, why) = if self.in_flight.load(Ordering::Acquire) > 0 {
                // A request is being answered: look again later (a request that began while
                // idle resets the timestamps when it ends).
                (now + idle.min(header).max(1), None)
            } else {
                let began = self.head_began_ms.load(Ordering::Acquire);
                if began != 0 {
                    (began + header, Some(Expired::Header))
                } else {
                    let since = self.idle_since_ms.load(Ordering::Acquire);
                    (since + idle, Some(Expired::Idle))
                }
            };
            if let Some(why) = why {
                if now >= deadline {
                    // Check nothing moved meanwhile: a request may have begun.
                    if self.in_flight.load(Ordering::Acquire) == 0 {
                        return why;
                    }
                    continue;
                }
            }
            tokio::time::sleep(Duration::from_millis(deadline.saturating_sub(now).max(1))).await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.leave_pending();
        if self.spare {
            self.edge.spare.fetch_sub(1, Ordering::AcqRel);
        }
        self.edge.closed_socket();
    }
}

/// A client's TCP stream with its [`Ticket`]: it notes bytes read for the watchdog, and gives
/// the connection's counts back when the socket is dropped (as an HTTP connection or, after an
/// upgrade, as a WebSocket).
#[derive(Debug)]
pub struct EdgeIo {
    inner: TcpStream,
    ticket: Arc<Ticket>,
}

impl AsyncRead for EdgeIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.ticket.bytes_read();
        }
        r
    }
}

impl AsyncWrite for EdgeIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// True for an accept error that means the process is out of descriptors.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == rustix::io::Errno::MFILE.raw_os_error()
            || code == rustix::io::Errno::NFILE.raw_os_error()
    )
}

/// Accepts and serves connections until `stop` is cancelled, then waits for the HTTP
/// connections to finish (upgraded sockets are the gateway's to close).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    edge: Arc<Edge>,
    stop: CancellationToken,
) {
    let conns = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if out_of_descriptors(&e) {
                    edge.metrics.edge_accept_errors.inc();
                    tracing::error!(error = %e, open = edge.open_connections(),
                        "out of file descriptors: cannot accept (raise `ulimit -n`)");
                    // The connection waits in the backlog; try again once some closed.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                } else {
                    tracing::debug!(error = %e, "accept failed");
                }
                continue;
            }
        };
        let Some(ticket) = edge.admit(peer.ip()) else {
            drop(stream);
            continue;
        };
        if edge.config.nodelay {
            let _ = stream.set_nodelay(true);
        }
        let io = EdgeIo {
            inner: stream,
            ticket: Arc::clone(&ticket),
        };
        conns.spawn(connection(io, peer, ticket, router.clone(), stop.clone()));
    }
    drop(listener);
    conns.close();
    conns.wait().await;
}

/// Ends `in_flight` when a request's future ends (answered or dropped).
struct InFlight(Arc<Ticket>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// The answer of a spare connection to anything but a health check.
fn at_capacity() -> Response {
    let mut res = (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({"error": {
            "code": "unavailable",
            "message": "the server is at its connection limit; retry later",
        }})),
    )
        .into_response();
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

async fn connection(
    io: EdgeIo,
    peer: SocketAddr,
    ticket: Arc<Ticket>,
    router: axum::Router,
    stop: CancellationToken,
) {
    let spare = ticket.spare;
    let svc_ticket = Arc::clone(&ticket);
    let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        let ticket = Arc::clone(&svc_ticket);
        ticket.request_began();
        let guard = InFlight(Arc::clone(&ticket));
        req.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        async move {
            let _guard = guard;
            if spare && !HEALTH_PATHS.contains(&req.uri().path()) {
                return Ok::<_, Infallible>(at_capacity());
            }
            router.oneshot(req).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .header_read_timeout(None)
        .max_buf_size(MAX_HTTP_BUFFER)
        .keep_alive(!spare);
    let conn = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, %peer, "HTTP connection ended with an error");
                }
                break;
            }
            why = ticket.expired() => {
                let kind = match why {
                    Expired::Header => "header",
                    Expired::Idle => "idle",
                };
                ticket.edge.metrics.edge_timeouts.get_or_create(&KindLabel {
                    kind: kind.to_owned(),
                }).inc();
                tracing::debug!(%peer, kind, "HTTP connection timed out");
                break;
            }
            _ = stop.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    ticket.leave_pending();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(max_pending: usize, per_ip: usize, max_connections: Option<usize>) -> Arc<Edge> {
        Edge::new(
            EdgeConfig {
                header_timeout: Duration::from_millis(50),
                idle_timeout: Duration::from_millis(80),
                max_pending,
                max_pending_per_ip: per_ip,
                max_connections,
                nodelay: false,
            },
            Arc::new(Metrics::new()),
        )
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn pending_caps_hold_per_address_and_in_total_and_spares_are_bounded() {
        let e = edge(3, 2, None);
        let a1 = e.admit(A).expect("a1");
        let a2 = e.admit(A).expect("a2");
        assert!(!a1.spare && !a2.spare);
        let a3 = e.admit(A).expect("a spare");
        assert!(a3.spare, "over the per-address cap");
        let b1 = e.admit(B).expect("b1");
        assert!(!b1.spare);
        let b2 = e.admit(B).expect("a spare");
        assert!(b2.spare, "over the total cap");
        assert_eq!(e.pending_connections(), 3);
        assert_eq!(e.open_connections(), 5);
        // An upgrade leaves the pending count but stays open.
        a1.leave_pending();
        assert_eq!(e.pending_connections(), 2);
        assert_eq!(e.open_connections(), 5);
        let a4 = e.admit(A).expect("a4");
        assert!(!a4.spare, "the upgraded one's slot is free again");
        // Spares are bounded; past them connections are closed at once.
        let spares: Vec<_> = (0..SPARE_CONNECTIONS * 2)
            .filter_map(|_| e.admit(A))
            .collect();
        assert_eq!(spares.len(), SPARE_CONNECTIONS - 2);
        drop(spares);
        drop((a1, a2, a3, a4, b1, b2));
        assert_eq!(e.pending_connections(), 0);
        assert_eq!(e.open_connections(), 0);
        assert_eq!(e.spare.load(Ordering::Acquire), 0);
    }

    #[test]
    fn past_the_descriptor_budget_connections_are_spares() {
        let e = edge(100, 0, Some(2));
        let held: Vec<_> = (0..2).filter_map(|_| e.admit(A)).collect();
        assert!(held.iter().all(|t| !t.spare));
        let third = e.admit(B).expect("spare");
        assert!(third.spare);
        assert!(e.near_limit.load(Ordering::Acquire));
        drop(third);
        drop(held);
        let again = e.admit(B).expect("normal");
        assert!(!again.spare);
        assert!(!e.near_limit.load(Ordering::Acquire), "the warning re-arms");
    }

    #[tokio::test]
    async fn the_watchdog_times_out_a_slow_head_and_an_idle_connection() {
        let e = edge(10, 0, None);
        // A fresh connection that sends nothing: its head is late after the header timeout.
        let t = e.admit(A).expect("admitted");
        assert_eq!(t.expired().await, Expired::Header);
        // After a request, an idle connection waits the idle timeout.
        t.request_began();
        t.request_ended();
        assert_eq!(t.expired().await, Expired::Idle);
        // A first byte after the idle wait starts the header clock.
        t.request_began();
        t.request_ended();
        t.bytes_read();
        assert_eq!(t.expired().await, Expired::Header);
        // Never while a request is in flight.
        t.request_began();
        let waited = tokio::time::timeout(Duration::from_millis(400), t.expired()).await;
        assert!(waited.is_err(), "no timeout while a request is answered");
    }
}
