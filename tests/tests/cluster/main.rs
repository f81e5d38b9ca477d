//! Multi-node end to end: three `roam-server` processes on one PostgreSQL store and one Redis
//! bus, behind a round-robin TCP balancer, with real roam-core clients spread over them, all in
//! the same room. Three runs of 10,000 messages from publishers on every node: undisturbed,
//! with one node SIGKILLed mid-run (its clients reconnect through the balancer to another node),
//! and with Redis restarted mid-run. After each, every client holds every message once, in
//! `seq` order, and the server holds each once.
//!
//! Needs PostgreSQL (`ROAM_TEST_PG`, default `postgres://postgres@127.0.0.1:5432/test`; the test
//! works in a schema of its own) and `redis-server` on PATH (the test runs its own on a free
//! port so it can restart it); `scripts/services.sh` provides both. `ROAM_TEST_LOG` (a tracing
//! filter such as `roam_core=debug`) shows the clients' logs, `ROAM_TEST_NODE_LOG` the nodes'.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use roam_core::{Client, RoomKind};
use roam_server::config::Config;
use roam_testkit::{OwnRedis, PgSchema};
use roam_tests::{all_local, fast_config, free_addr, open_client, wait_until, Api, SECRET};
use tokio::net::{TcpListener, TcpStream};

/// Longest wait for a whole run to settle.
const SETTLE: Duration = Duration::from_secs(180);
const CLIENTS: usize = 6;

fn pg_base() -> String {
    std::env::var("ROAM_TEST_PG").unwrap_or_else(|_| roam_testkit::DEFAULT_POSTGRES.to_owned())
}

/// One `roam-e2e-node` process.
struct Node {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(name: &str, store: &str, bus: &str) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = free_addr();
        let mut child = Command::new(env!("CARGO_BIN_EXE_roam-e2e-node"))
            .args(["--listen", &addr.to_string()])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--store", store, "--bus", bus, "--node-id", name])
            .args(["--jwt-secret", SECRET, "--bus-heartbeat-ms", "200"])
            .args(["--rate-mutations-per-sec", "100000"])
            .args(["--rate-mutations-burst", "100000"])
            .args(["--rate-connects-per-min", "100000"])
            .args(["--rate-connects-burst", "100000"])
            .env(
                "RUST_LOG",
                std::env::var("ROAM_TEST_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn roam-e2e-node");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .expect("read the node's first line");
        assert!(
            line.starts_with("listening"),
            "{name} did not start: {line:?}"
        );
        Node {
            child,
            addr,
            _dir: dir,
        }
    }

    /// SIGKILL: no shutdown, no goodbye to the cluster.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A round-robin TCP balancer over the nodes: each new connection goes to the next node that
/// accepts it (a dead node refuses and is skipped).
struct Balancer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    async fn start(backends: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    return;
                };
                let backends = backends.clone();
                let next = Arc::clone(&next);
                tokio::spawn(async move {
                    let start = next.fetch_add(1, Ordering::Relaxed);
                    for k in 0..backends.len() {
                        let target = backends[(start + k) % backends.len()];
                        if let Ok(mut up) = TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                            return;
                        }
                    }
                });
            }
        });
        Balancer { addr, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn token(user: &str) -> String {
    let mut c = Config::for_data_dir(std::env::temp_dir());
    c.jwt_secret = Some(SECRET.to_owned());
    roam_server::auth::Keys::from_config(&c)
        .expect("keys")
        .mint(user, 86_400)
        .expect("token")
}

fn api(url: &str, user: &str) -> Api {
    Api {
        base: url.to_owned(),
        token: token(user),
        http: reqwest::Client::new(),
    }
}

/// What can go wrong in the middle of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trouble {
    None,
    KillNode(usize),
    RestartRedis,
}

struct Cluster {
    schema: Option<PgSchema>,
    redis: OwnRedis,
    nodes: Vec<Node>,
    lb: Balancer,
    clients: Vec<Client>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let schema = PgSchema::create(&pg_base(), "roam_test").await;
        let redis = OwnRedis::start().await;
        // The first node migrates the schema; the others find it done.
        let mut nodes = vec![Node::start("n0", &schema.url(), &redis.url())];
        for i in 1..3 {
            nodes.push(Node::start(&format!("n{i}"), &schema.url(), &redis.url()));
        }
        let lb = Balancer::start(nodes.iter().map(|n| n.addr).collect()).await;
        Cluster {
            schema: Some(schema),
            redis,
            nodes,
            lb,
            clients: Vec::new(),
            _dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// `CLIENTS` clients, started through the balancer, each joined to `room` (made by u0)
    /// through its own outbox, so each subscribes to it.
    async fn clients_in(&mut self, room: &str) {
        let url = self.lb.url();
        for c in self.clients.drain(..) {
            c.shutdown().await;
        }
        for k in 0..CLIENTS {
            let user = format!("u{k}");
            let db = self._dir.path().join(format!("{user}-{room}.db"));
            let c = open_client(fast_config(&db, &url, &user), token(&user));
            c.start().await.expect("start client");
            self.clients.push(c);
        }
        self.clients[0]
            .create_room(room.into(), RoomKind::Public, room.into(), None)
            .expect("create the room");
        wait_until("the room exists", || {
            self.clients[0].metrics().outbox_depth == 0
        })
        .await;
        for c in &self.clients[1..] {
            c.join_room(room.into()).expect("join");
        }
        for c in &self.clients {
            wait_until("every client joined", || c.metrics().outbox_depth == 0).await;
        }
    }

    /// Sends `messages` into `room` from every client while `trouble` strikes a third of the
    /// way in; then checks every client and the server hold each message once, in seq order.
    async fn run(&mut self, room: &str, trouble: Trouble, messages: usize) {
        self.clients_in(room).await;
        let mut expected: Vec<String> = Vec::with_capacity(messages);
        for i in 0..messages {
            let k = i % CLIENTS;
            let body = format!("{room}-u{k}-{i}");
            self.clients[k]
                .send_message(room.into(), body.clone())
                .expect("queue a message");
            expected.push(body);
            if i == messages / 3 {
                self.strike(trouble).await;
            }
        }
        let deadline = tokio::time::Instant::now() + SETTLE;
        for (k, c) in self.clients.iter().enumerate() {
            while c.metrics().outbox_depth > 0 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "u{k}'s outbox never emptied ({trouble:?}): {}",
                    stuck(c)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let want: HashSet<&str> = expected.iter().map(String::as_str).collect();
        for (k, c) in self.clients.iter().enumerate() {
            loop {
                let local = all_local(c, room);
                let seqs: Vec<u64> = local.iter().filter_map(|m| m.seq).collect();
                let bodies: HashSet<&str> = local.iter().map(|m| m.body.as_str()).collect();
                let ordered = seqs.len() == local.len() && seqs.windows(2).all(|w| w[0] < w[1]);
                if ordered && local.len() == messages && bodies == want {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "u{k} holds {} messages ({} distinct, ordered: {ordered}), expected {messages} \
                     ({trouble:?})",
                    local.len(),
                    bodies.len()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let on_server: Vec<String> = api(&self.lb.url(), "u0")
            .all_messages(room)
            .await
            .iter()
            .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            on_server.len(),
            messages,
            "the server holds each message once ({trouble:?})"
        );
        let distinct: HashSet<&str> = on_server.iter().map(String::as_str).collect();
        assert_eq!(distinct, want, "({trouble:?})");
        // Each device's messages hold the room's seqs in the order it wrote them, whatever
        // node died or bus restarted on the way.
        for k in 0..CLIENTS {
            let mark = format!("{room}-u{k}-");
            let sent: Vec<&String> = expected.iter().filter(|b| b.starts_with(&mark)).collect();
            let held: Vec<&String> = on_server.iter().filter(|b| b.starts_with(&mark)).collect();
            assert_eq!(held, sent, "u{k}'s messages in send order ({trouble:?})");
        }
    }

    async fn strike(&mut self, trouble: Trouble) {
        match trouble {
            Trouble::None => {}
            Trouble::KillNode(i) => {
                // Let traffic flow through every node first.
                tokio::time::sleep(Duration::from_millis(300)).await;
                self.nodes[i].kill();
            }
            Trouble::RestartRedis => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                self.redis.down().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.redis.up().await;
            }
        }
    }

    async fn stop(mut self) {
        for c in self.clients.drain(..) {
            c.shutdown().await;
        }
        for n in &mut self.nodes {
            n.kill();
        }
        if let Some(s) = self.schema.take() {
            s.drop_now().await;
        }
    }
}

/// What a client that did not settle is doing: its connection, sync status, metrics and the
/// first entries of its outbox.
fn stuck(c: &Client) -> String {
    let outbox = c.outbox().unwrap_or_default();
    let head: Vec<String> = outbox
        .iter()
        .take(3)
        .map(|e| format!("{} {:?} after {} attempts", e.op, e.state, e.attempts))
        .collect();
    format!(
        "connection {:?}, {:?}, {:?}; {} outbox entries, first: {head:?}",
        c.connection_state(),
        c.sync_status(),
        c.metrics(),
        outbox.len()
    )
}

async fn three_runs(messages: usize) {
    // The clients' own logs, when asked for (e.g. `ROAM_TEST_LOG=roam_core=debug`).
    if let Ok(filter) = std::env::var("ROAM_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let mut c = Cluster::start().await;
    c.run("calm", Trouble::None, messages).await;
    c.run("killed", Trouble::KillNode(1), messages).await;
    c.run("redis", Trouble::RestartRedis, messages).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_message_once_in_order_through_a_node_kill_and_a_redis_restart() {
    three_runs(10_000).await;
}
