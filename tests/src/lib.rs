//! Shared fixtures of the end-to-end tests and benchmarks: a real `roam-server` that can be
//! stopped and started again on the same loopback port, a faulty TCP proxy, REST helpers, and
//! `roam-core` clients with short timings.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use roam_core::{Client, ClientConfig, StaticToken};
use roam_server::config::Config;
use roam_server::Server;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The secret every test server signs with.
pub const SECRET: &str = "e2e-secret-e2e-secret-e2e-secret-0123";
/// Upper bound of any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(30);

/// A server on a fixed loopback port, which may be down.
#[allow(missing_debug_implementations)]
pub struct Backend {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    server: Option<Server>,
    tune: Box<dyn Fn(&mut Config) + Send + Sync>,
}

pub use roam_testkit::free_addr;

impl Backend {
    /// A backend that is not running yet.
    pub fn down() -> Self {
        Self::down_with(|_| {})
    }

    /// A backend that is not running yet, whose configuration `tune` adjusts at every start.
    pub fn down_with(tune: impl Fn(&mut Config) + Send + Sync + 'static) -> Self {
        Backend {
            dir: tempfile::tempdir().expect("tempdir"),
            addr: free_addr(),
            server: None,
            tune: Box::new(tune),
        }
    }

    /// A running backend.
    pub async fn up() -> Self {
        let mut b = Self::down();
        b.start().await;
        b
    }

    /// Starts the server on the backend's port (retrying while the port is still held).
    pub async fn start(&mut self) {
        assert!(self.server.is_none(), "already running");
        let mut c = Config::for_data_dir(self.dir.path());
        c.listen = self.addr;
        c.jwt_secret = Some(SECRET.into());
        c.typing_timeout_ms = 500;
        c.rate_mutations_per_sec = 100_000;
        c.rate_mutations_burst = 100_000;
        c.rate_connects_per_min = 100_000;
        c.rate_connects_burst = 100_000;
        c.shutdown_grace_secs = 2;
        (self.tune)(&mut c);
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot bind {}: {e}", self.addr),
            }
        };
        self.server = Some(Server::start(c, listener).await.expect("server start"));
    }

    /// Stops the server (sockets are closed with 1001).
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    pub fn is_up(&self) -> bool {
        self.server.is_some()
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A token for `user`, valid whether or not the server runs.
    pub fn token(&self, user: &str) -> String {
        roam_server::auth::Keys::new(SECRET.as_bytes())
            .mint(user, 86_400)
            .expect("mint")
    }

    /// A REST client acting as `user`.
    pub fn api(&self, user: &str) -> Api {
        Api {
            base: self.url(),
            token: self.token(user),
            http: reqwest::Client::new(),
        }
    }
}

/// A small REST client.
#[derive(Clone, Debug)]
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", uuid::Uuid::now_v7().to_string())
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Creates a room; panics unless it worked.
    pub async fn create_room(&self, room: &str, kind: &str) {
        let (s, b) = self
            .post("/v1/rooms", json!({"room": room, "kind": kind}))
            .await;
        assert_eq!(s, 200, "create {room}: {b}");
    }

    /// Joins a room; panics unless it worked.
    pub async fn join(&self, room: &str) {
        let (s, b) = self
            .post(&format!("/v1/rooms/{room}/join"), json!({}))
            .await;
        assert_eq!(s, 200, "join {room}: {b}");
    }

    /// Every message of a room, oldest first, read page by page.
    pub async fn all_messages(&self, room: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0u64;
        loop {
            let (s, page) = self
                .get(&format!(
                    "/v1/rooms/{room}/messages?after={after}&limit=200"
                ))
                .await;
            assert_eq!(s, 200, "messages: {page}");
            let items = page["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                return out;
            }
            after = items
                .last()
                .and_then(|m| m["seq"].as_u64())
                .unwrap_or(after);
            out.extend(items);
        }
    }
}

/// A client configuration with short timings for tests.
pub fn fast_config(db: &std::path::Path, url: &str, user: &str) -> ClientConfig {
    let mut c = ClientConfig::new(db, url, user);
    c.reconnect.initial_delay = Duration::from_millis(50);
    c.reconnect.max_delay = Duration::from_millis(250);
    c.heartbeat.interval = Duration::from_millis(500);
    c.heartbeat.timeout = Duration::from_millis(1000);
    c.outbox.initial_backoff = Duration::from_millis(50);
    c.outbox.max_backoff = Duration::from_millis(500);
    c.outbox.ack_timeout = Duration::from_secs(5);
    c.connect_timeout = Duration::from_secs(2);
    c.recovery_timeout = Duration::from_secs(10);
    c
}

/// Opens a client with a static token.
pub fn open_client(config: ClientConfig, token: String) -> Client {
    Client::open(config, Arc::new(StaticToken(token))).expect("open client")
}

/// Polls `f` every 20 ms until it holds; panics with `what` after [`WAIT`].
pub async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a [`Proxy`] does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Forward everything.
    Pass = 0,
    /// Close every connection, and new ones at once.
    Drop = 1,
    /// Keep connections open but forward nothing (a half-open link).
    Stall = 2,
}

/// A TCP proxy on loopback in front of a backend, that can drop or stall traffic.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards a fresh loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let mode = Arc::new(AtomicU8::new(Fault::Pass as u8));
        let (generation, _) = watch::channel(0u64);
        let gen_tx = generation.clone();
        let m = Arc::clone(&mode);
        let task = tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    return;
                };
                if m.load(Ordering::SeqCst) == Fault::Drop as u8 {
                    drop(down);
                    continue;
                }
                let m = Arc::clone(&m);
                let gen_rx = gen_tx.subscribe();
                tokio::spawn(pipe(down, target, m, gen_rx));
            }
        });
        Proxy {
            addr,
            mode,
            generation,
            task,
        }
    }

    /// `http://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes what the proxy does; `Drop` also closes every open connection.
    pub fn set(&self, fault: Fault) {
        self.mode.store(fault as u8, Ordering::SeqCst);
        if fault == Fault::Drop {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}

async fn pipe(
    down: TcpStream,
    target: SocketAddr,
    mode: Arc<AtomicU8>,
    mut generation: watch::Receiver<u64>,
) {
    let Ok(up) = TcpStream::connect(target).await else {
        return;
    };
    let (dr, dw) = down.into_split();
    let (ur, uw) = up.into_split();
    let a = tokio::spawn(copy(dr, uw, Arc::clone(&mode)));
    let b = tokio::spawn(copy(ur, dw, mode));
    let start = *generation.borrow_and_update();
    while generation.changed().await.is_ok() {
        if *generation.borrow() != start {
            break;
        }
    }
    a.abort();
    b.abort();
}

async fn copy(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<AtomicU8>,
) {
    let stalled = || mode.load(Ordering::SeqCst) == Fault::Stall as u8;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // While stalled, stop reading: the peer's writes back up and nothing arrives.
        while stalled() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while stalled() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Every message of a room in the client's store, oldest first (pages backwards by seq; pending
/// ones last).
pub fn all_local(client: &Client, room: &str) -> Vec<roam_core::Message> {
    let mut newest = client.messages(room.into(), None, 200).unwrap_or_default();
    let mut before = newest.iter().filter_map(|m| m.seq).min();
    while let Some(b) = before {
        let older = client
            .messages(room.into(), Some(b), 200)
            .unwrap_or_default();
        let older: Vec<_> = older
            .into_iter()
            .filter(|m| m.seq.is_some_and(|s| s < b))
            .collect();
        if older.is_empty() {
            break;
        }
        before = older.iter().filter_map(|m| m.seq).min();
        let mut merged = older;
        merged.extend(newest);
        newest = merged;
    }
    newest
}

/// The bodies of [`all_local`].
pub fn local_bodies(client: &Client, room: &str) -> Vec<String> {
    all_local(client, room)
        .into_iter()
        .map(|m| m.body)
        .collect()
}
