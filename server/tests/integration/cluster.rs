//! Several instances sharing one store, joined by the Redis bus: room events, bans, presence
//! and typing cross instances; an outage of Redis is repaired from the store; a silent
//! instance's presence expires. Redis is the machine's (127.0.0.1:6379, or `ROAM_TEST_REDIS`)
//! with a fresh key prefix per test, except the outage test, which runs its own `redis-server`.

use std::sync::Arc;
use std::time::Duration;

use roam_server::auth::Keys;
use roam_server::store::postgres::PostgresStore;
use roam_server::store::sqlite::{SqliteStore, Synchronous};
use roam_server::store::Store;
use roam_server::{AppState, Server};
use serde_json::{json, Value};

use crate::fixtures::{config, postgres_url, PgSchema, TestServer, Ws, WAIT};
use roam_testkit::OwnRedis;

fn redis_url() -> String {
    std::env::var("ROAM_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

/// Instances on one store and one Redis.
struct Cluster {
    nodes: Vec<TestServer>,
    redis: String,
    prefix: String,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
    /// The store's schema when the tests run on Postgres (`ROAM_TEST_STORE`).
    _schema: Option<PgSchema>,
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        Self::start_on(n, redis_url()).await
    }

    async fn start_on(n: usize, redis: String) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, schema): (Arc<dyn Store>, _) = match postgres_url() {
            Some(base) => {
                let schema = PgSchema::create(&base, "roam_test").await;
                let store = PostgresStore::connect(&schema.url(), 4)
                    .await
                    .expect("store");
                (Arc::new(store), Some(schema))
            }
            None => (
                Arc::new(
                    SqliteStore::open_with(&dir.path().join("shared.db"), 4, Synchronous::Normal)
                        .await
                        .expect("store"),
                ),
                None,
            ),
        };
        let prefix = format!("roamtest-{}", uuid::Uuid::new_v4().simple());
        let mut c = Cluster {
            nodes: Vec::new(),
            redis,
            prefix,
            store,
            _dir: dir,
            _schema: schema,
        };
        for i in 0..n {
            let node = c.node(&format!("n{i}")).await;
            c.nodes.push(node);
        }
        for node in &c.nodes {
            ready(node).await;
        }
        c
    }

    /// One more instance on the cluster's store and bus.
    async fn node(&self, name: &str) -> TestServer {
        self.node_on(name, self.redis.clone()).await
    }

    /// One more instance on the cluster's store, reaching the bus at `bus` (a relay to the
    /// cluster's Redis, which the test can cut).
    async fn node_on(&self, name: &str, bus: String) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path());
        cfg.bus = bus;
        cfg.bus_prefix = self.prefix.clone();
        cfg.node_id = Some(name.to_owned());
        cfg.bus_heartbeat_ms = 100;
        cfg.admin_token = Some(crate::operators::ADMIN_TOKEN.parse().expect("token"));
        cfg.admin_listen = ([127, 0, 0, 1], 0).into();
        let keys = Keys::from_config(&cfg).expect("keys");
        let state = AppState::on_store(cfg, keys, Arc::clone(&self.store)).expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = Server::start_with(state, listener).expect("start");
        let base = format!("http://{}", server.local_addr());
        TestServer {
            server: Some(server),
            dir,
            base,
            http: reqwest::Client::new(),
            schema: None,
        }
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.as_str())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }

    async fn stop(mut self) {
        for n in &mut self.nodes {
            n.stop().await;
        }
    }
}

async fn readyz(node: &TestServer) -> u16 {
    node.http
        .get(format!("{}/readyz", node.base))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Waits until the instance reports ready (its bus subscribed).
async fn ready(node: &TestServer) {
    wait_for_readyz(node, 200).await;
}

async fn wait_for_readyz(node: &TestServer, status: u16) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while readyz(node).await != status {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never answered /readyz {status}",
            node.base
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn subscribed(node: &TestServer, user: &str, room: &str) -> Ws {
    let mut ws = node.ws(user).await;
    ws.subscribe(&[(room, 0)]).await;
    ws.until(|f| f["type"] == "caught_up").await;
    ws
}

fn seq(f: &Value) -> u64 {
    f["seq"].as_u64().expect("seq")
}

async fn head(node: &TestServer, user: &str, room: &str) -> u64 {
    node.as_user(user)
        .all_events(room)
        .await
        .last()
        .map_or(0, seq)
}

#[tokio::test]
async fn publishers_on_every_node_reach_every_receiver_once_in_order() {
    let c = Cluster::start(3).await;
    c.nodes[0]
        .as_user("owner")
        .create_room("hall", "public")
        .await;
    let mut receivers = Vec::new();
    for (i, node) in c.nodes.iter().enumerate() {
        for r in 0..2 {
            let user = format!("r{i}{r}");
            node.as_user(&user).join("hall").await;
            receivers.push(subscribed(node, &user, "hall").await);
        }
    }
    let start = head(&c.nodes[0], "owner", "hall").await;
    let per_node = 60;
    let mut sends = Vec::new();
    for (i, node) in c.nodes.iter().enumerate() {
        let api = node.as_user("owner");
        sends.push(tokio::spawn(async move {
            for k in 0..per_node {
                api.say("hall", &format!("n{i} #{k}")).await;
            }
        }));
    }
    for s in sends {
        s.await.expect("sender");
    }
    let last = start + 3 * per_node;
    assert_eq!(head(&c.nodes[1], "owner", "hall").await, last);
    for ws in &mut receivers {
        let evs = ws.events_until("hall", last).await;
        // (A receiver also saw the joins of those who subscribed after it.)
        let seqs: Vec<u64> = evs.iter().map(seq).filter(|&s| s > start).collect();
        assert_eq!(
            seqs,
            (start + 1..=last).collect::<Vec<_>>(),
            "every event once, in seq order"
        );
    }
    for node in &c.nodes {
        assert!(node.metric("roam_bus_received_total", None).await > 0.0);
        assert_eq!(node.metric("roam_bus_dropped_total", None).await, 0.0);
        assert_eq!(node.metric("roam_bus_up", None).await, 1.0);
    }
    c.stop().await;
}

#[tokio::test]
async fn a_ban_on_one_node_unsubscribes_the_user_on_another_within_a_second() {
    let c = Cluster::start(2).await;
    let owner = c.nodes[0].as_user("owner");
    owner.create_room("club", "public").await;
    c.nodes[1].as_user("bob").join("club").await;
    let mut bob = subscribed(&c.nodes[1], "bob", "club").await;
    // Warm node 1's cache of bob's membership, so a stale cache would let him read.
    let bob_api = c.nodes[1].as_user("bob");
    assert_eq!(bob_api.get("/v1/rooms/club/messages").await.status, 200);

    owner
        .post("/v1/rooms/club/bans", json!({"user": "bob"}))
        .await;
    let gone = tokio::time::timeout(
        Duration::from_secs(1),
        bob.until(|f| f["type"] == "unsubscribed"),
    )
    .await
    .expect("bob's socket on the other node is unsubscribed within a second");
    assert_eq!(gone["reason"], "banned");
    let r = bob_api.get("/v1/rooms/club/messages").await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    owner.say("club", "after the ban").await;
    assert!(bob.drain().await.iter().all(|f| f["type"] != "event"));
    c.stop().await;
}

/// A node whose Redis link drops misses the invalidations sent meanwhile. When it is back it
/// must not serve what it cached before: the ban reaches bob's socket there, a room deleted
/// meanwhile is gone for strangers, and bob cannot post there.
#[tokio::test]
async fn a_node_that_missed_invalidations_forgets_what_it_cached() {
    let redis_addr = c_redis_addr();
    let relay = crate::fixtures::Relay::start(redis_addr.clone(), None).await;
    let mut c = Cluster::start(1).await;
    let b = c.node_on("nb", format!("redis://{}/0", relay.addr)).await;
    ready(&b).await;
    c.nodes.push(b);
    let owner = c.nodes[0].as_user("owner");
    owner.create_room("club", "public").await;
    owner.create_room("doomed", "public").await;
    owner.say("doomed", "secret plans").await;
    c.nodes[0].as_user("bob").join("club").await;
    let mut bob = subscribed(&c.nodes[1], "bob", "club").await;
    // Node B caches bob's membership and the doomed room.
    let bob_b = c.nodes[1].as_user("bob");
    let carol_b = c.nodes[1].as_user("carol");
    assert_eq!(bob_b.get("/v1/rooms/club/messages").await.status, 200);
    assert_eq!(carol_b.get("/v1/rooms/doomed/messages").await.status, 200);

    relay.cut();
    wait_for_readyz(&c.nodes[1], 503).await;
    owner
        .post("/v1/rooms/club/bans", json!({"user": "bob"}))
        .await;
    let r = owner
        .send(reqwest::Method::DELETE, "/v1/rooms/doomed", None)
        .await;
    assert!(r.status < 300, "{:?}", r.body);
    let back = crate::fixtures::Relay::start(redis_addr, Some(relay.addr)).await;
    ready(&c.nodes[1]).await;

    let gone = bob.until(|f| f["type"] == "unsubscribed").await;
    assert_eq!(gone["reason"], "banned");
    let r = carol_b.get("/v1/rooms/doomed/messages").await;
    assert_eq!(
        r.status, 404,
        "a deleted room is not read from a stale cache: {:?}",
        r.body
    );
    let r = bob_b
        .post("/v1/rooms/club/messages", json!({"body": "still here?"}))
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    back.cut();
    c.stop().await;
}

/// `host:port` of the cluster tests' Redis.
fn c_redis_addr() -> String {
    let url = redis_url();
    let rest = url.trim_start_matches("redis://");
    rest.split('/').next().unwrap_or(rest).to_owned()
}

#[tokio::test]
async fn a_read_marker_reaches_the_readers_sockets_on_every_node() {
    let c = Cluster::start(2).await;
    let alice = c.nodes[0].as_user("alice");
    alice.create_room("desk", "public").await;
    let m = alice.say("desk", "read me").await;
    let mut phone = c.nodes[0].ws("alice").await;
    let mut tablet = c.nodes[1].ws("alice").await;
    let r = alice
        .post("/v1/rooms/desk/read", json!({"seq": m["seq"]}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    for ws in [&mut phone, &mut tablet] {
        let f = ws.until(|f| f["type"] == "read_marker").await;
        assert_eq!((&f["room"], &f["seq"]), (&json!("desk"), &m["seq"]));
    }
    c.stop().await;
}

async fn presence(node: &TestServer, viewer: &str, user: &str) -> Value {
    let r = node
        .as_user(viewer)
        .get(&format!("/v1/presence?users={user}"))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body[0].clone()
}

async fn presence_until(
    node: &TestServer,
    viewer: &str,
    user: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let p = presence(node, viewer, user).await;
        if pred(&p) {
            return p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence never matched: {p}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn presence_and_typing_span_nodes() {
    let c = Cluster::start(2).await;
    c.nodes[0]
        .as_user("carol")
        .create_room("team", "public")
        .await;
    c.nodes[0].as_user("bob").join("team").await;
    let mut carol = subscribed(&c.nodes[0], "carol", "team").await;

    // bob comes online on node 1: carol on node 0 hears of it.
    let mut phone = subscribed(&c.nodes[1], "bob", "team").await;
    let f = carol
        .until(|f| f["type"] == "presence" && f["user"] == "bob")
        .await;
    assert_eq!(f["status"], "online");
    let p = presence(&c.nodes[0], "carol", "bob").await;
    assert_eq!(
        (p["status"].as_str(), p["devices"].as_u64()),
        (Some("online"), Some(1))
    );

    // A second device on node 0: the count spans both nodes, nobody is told anything new.
    let laptop = c.nodes[0].ws("bob").await;
    let p = presence_until(&c.nodes[1], "carol", "bob", |p| p["devices"] == 2).await;
    assert_eq!(p["status"], "online");

    // Typing on node 1 reaches node 0.
    phone
        .send(json!({"v": 1, "type": "typing", "room": "team", "typing": true}))
        .await;
    let t = carol.until(|f| f["type"] == "typing").await;
    assert_eq!(
        (t["user"].as_str(), t["typing"].as_bool()),
        (Some("bob"), Some(true))
    );

    // The phone goes: still online through the laptop.
    phone.stream.close(None).await.expect("close");
    phone.closed().await;
    let p = presence_until(&c.nodes[0], "carol", "bob", |p| p["devices"] == 1).await;
    assert_eq!(p["status"], "online");
    assert!(carol
        .drain()
        .await
        .iter()
        .all(|f| !(f["type"] == "presence" && f["user"] == "bob" && f["status"] == "offline")));

    // The laptop goes: offline everywhere.
    let mut laptop = laptop;
    laptop.stream.close(None).await.expect("close");
    laptop.closed().await;
    let f = carol
        .until(|f| f["type"] == "presence" && f["user"] == "bob")
        .await;
    assert_eq!(f["status"], "offline");
    let p = presence(&c.nodes[1], "carol", "bob").await;
    assert_eq!(
        (p["status"].as_str(), p["devices"].as_u64()),
        (Some("offline"), Some(0))
    );
    c.stop().await;
}

#[tokio::test]
async fn a_silent_nodes_users_go_offline_after_its_ttl() {
    let c = Cluster::start(1).await;
    c.nodes[0]
        .as_user("carol")
        .create_room("den", "public")
        .await;
    c.nodes[0].as_user("dave").join("den").await;
    let mut carol = subscribed(&c.nodes[0], "carol", "den").await;

    // An instance "ghost" held dave's socket and then stopped heartbeating (as after SIGKILL).
    let mut r = c.redis().await;
    let pre = &c.prefix;
    let long_ago = crate::fixtures::now_ms() - 60_000;
    let _: () = redis::pipe()
        .hset(format!("{pre}:nodes"), "ghost", long_ago)
        .hset(format!("{pre}:presence:dave"), "ghost", "o:1")
        .sadd(format!("{pre}:node:ghost"), "dave")
        .query_async(&mut r)
        .await
        .expect("seed the ghost");

    let f = carol
        .until(|f| f["type"] == "presence" && f["user"] == "dave")
        .await;
    assert_eq!(f["status"], "offline");
    assert_eq!(
        f["last_seen"], long_ago,
        "last seen at the silent node's last heartbeat"
    );
    let p = presence(&c.nodes[0], "carol", "dave").await;
    assert_eq!(p["status"], "offline");
    let left: Vec<String> = redis::cmd("HKEYS")
        .arg(format!("{pre}:nodes"))
        .query_async(&mut r)
        .await
        .expect("nodes");
    assert_eq!(
        left,
        vec!["n0".to_owned()],
        "the ghost is gone from the cluster"
    );
    c.stop().await;
}

#[tokio::test]
async fn nodes_serve_their_own_sockets_while_redis_is_down_and_repair_when_it_returns() {
    let mut redis = OwnRedis::start().await;
    let c = Cluster::start_on(2, redis.url()).await;
    let alice = c.nodes[0].as_user("alice");
    alice.create_room("ops", "public").await;
    c.nodes[1].as_user("bob").join("ops").await;
    let mut mine = subscribed(&c.nodes[0], "alice", "ops").await;
    let mut bob = subscribed(&c.nodes[1], "bob", "ops").await;
    let start = head(&c.nodes[0], "alice", "ops").await;

    redis.down().await;
    wait_for_readyz(&c.nodes[0], 503).await;
    wait_for_readyz(&c.nodes[1], 503).await;
    for k in 0..5 {
        alice.say("ops", &format!("during the outage #{k}")).await;
    }
    // Node 0's own sockets are served meanwhile.
    let evs = mine.events_until("ops", start + 5).await;
    assert_eq!(
        evs.iter().map(seq).collect::<Vec<_>>(),
        (start + 1..=start + 5).collect::<Vec<_>>()
    );

    redis.up().await;
    ready(&c.nodes[0]).await;
    ready(&c.nodes[1]).await;
    // Node 1 repairs its room from the store once subscribed again, with no new event to
    // reveal the gap: everything, once, in order.
    let evs = bob.events_until("ops", start + 5).await;
    assert_eq!(
        evs.iter().map(seq).collect::<Vec<_>>(),
        (start + 1..=start + 5).collect::<Vec<_>>()
    );
    assert!(c.nodes[1].metric("roam_bus_resyncs_total", None).await >= 1.0);
    alice.say("ops", "after the outage").await;
    let evs = bob.events_until("ops", start + 6).await;
    assert_eq!(evs.iter().map(seq).collect::<Vec<_>>(), [start + 6]);
    c.stop().await;
    redis.down().await;
}

#[tokio::test]
async fn the_grafana_dashboard_names_only_metrics_the_server_exports() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/roam-dashboard.json"
    );
    let text = std::fs::read_to_string(path).expect("deploy/grafana/roam-dashboard.json");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut names: Vec<String> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(i) = rest.find("roam_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                names.push(name);
            }
        }
    }
    assert!(
        names.len() >= 10,
        "the dashboard charts the server: {names:?}"
    );
    let t = TestServer::start().await;
    // Per-op mutation counters appear with the first mutation.
    t.as_user("a").create_room("r", "public").await;
    let exported = t.metrics().await;
    for name in &names {
        // Every family is declared (`# TYPE`) even before it has samples.
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            exported.contains(&format!("# TYPE {family} ")),
            "the dashboard charts {name}, which /metrics does not export:\n{exported}"
        );
    }
}

#[tokio::test]
async fn a_redis_bus_on_the_sqlite_store_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.store = roam_server::config::StoreKind::Sqlite;
    cfg.bus = redis_url();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = Server::start(cfg, listener)
        .await
        .expect_err("a Redis bus needs a shared store");
    let text = err.to_string();
    assert!(text.contains("--store postgres"), "{text}");
    for bad in ["http://x:6379", "nats://127.0.0.1:4222", ""] {
        let mut cfg = config(dir.path());
        cfg.bus = bad.to_owned();
        assert!(cfg.validate().is_err(), "--bus {bad:?} is refused");
    }
}

/// A Redis that asks for a password: instances given it in `--bus` form a cluster; one without
/// it is not ready and hears nothing.
#[tokio::test]
async fn a_bus_with_a_password_carries_the_cluster() {
    let redis = OwnRedis::start_with(&["--requirepass", "bus-s3cret"]).await;
    let c = Cluster::start_on(2, redis.url_with_password("bus-s3cret")).await;
    let owner = c.nodes[0].as_user("owner");
    owner.create_room("club", "public").await;
    let mut bob = subscribed(&c.nodes[1], "bob", "club").await;
    let m = owner.say("club", "through an authenticated bus").await;
    let f = bob
        .until(|f| f["type"] == "event" && f["kind"] == "message_created")
        .await;
    assert_eq!(f["seq"], m["seq"]);

    let stranger = c.node_on("nopass", redis.url()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(readyz(&stranger).await, 503, "no password: not on the bus");
    c.stop().await;
}

/// Anyone who can publish on the Redis channel is not a node: a forged event (unsealed, or
/// sealed with another key) is dropped and counted, and the committed event with that seq is
/// what every socket gets.
#[tokio::test]
async fn a_forged_bus_message_is_dropped() {
    let c = Cluster::start(2).await;
    let owner = c.nodes[0].as_user("owner");
    owner.create_room("club", "public").await;
    let mut bob = subscribed(&c.nodes[1], "bob", "club").await;
    let next = head(&c.nodes[0], "owner", "club").await + 1;
    let forged = json!({
        "node": "intruder", "t": "event",
        "event": {"room": "club", "seq": next, "at": 1, "actor": "owner",
                  "kind": "message_created",
                  "data": {"id": "forged", "room": "club", "seq": next, "sender": "owner",
                           "body": "send your password to evil.example", "created_at": 1,
                           "deleted": false}},
    })
    .to_string();
    let mut redis = c.redis().await;
    let channel = format!("{}:bus", c.prefix);
    let mut wrong_seal = vec![0u8; 32];
    wrong_seal.extend_from_slice(forged.as_bytes());
    for payload in [forged.as_bytes().to_vec(), wrong_seal] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(payload)
            .query_async(&mut redis)
            .await
            .expect("publish");
    }
    let real = owner.say("club", "the real message").await;
    assert_eq!(real["seq"].as_u64(), Some(next));
    let f = bob
        .until(|f| f["type"] == "event" && f["kind"] == "message_created")
        .await;
    assert_eq!(f["data"]["body"], "the real message", "{f}");
    let rejected = c.nodes[1].metric("roam_bus_rejected_total", None).await;
    assert!(rejected >= 2.0, "both forgeries were counted: {rejected}");
    c.stop().await;
}

/// An operator's suspension on one instance closes the user's sockets on the other within
/// seconds, and the other refuses their tokens; `unsuspend` on one lets new tokens in on both.
#[tokio::test]
async fn a_suspension_reaches_every_instance() {
    use crate::operators::{admin, closed_within};
    let c = Cluster::start(2).await;
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    n0.as_user("alice").create_room("yard", "public").await;
    let old = n1.token("alice");
    let mut ws = subscribed(n1, "alice", "yard").await;
    let (status, body) = admin(
        n0,
        reqwest::Method::POST,
        "/admin/v1/users/alice/suspend",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        closed_within(&mut ws, 5).await,
        Some(roam_proto::close::TOKEN_EXPIRED)
    );
    let r = n1.as_user("alice").get("/v1/me").await;
    assert_eq!((r.status, r.code()), (401, "suspended"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _) = admin(
        n0,
        reqwest::Method::POST,
        "/admin/v1/users/alice/unsuspend",
        None,
    )
    .await;
    assert_eq!(status, 200);
    // The other instance hears of it on the bus (bounded wait).
    let deadline = tokio::time::Instant::now() + WAIT;
    while n1.as_user("alice").get("/v1/me").await.status != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "unsuspend never reached n1"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = n1
        .as_user("alice")
        .with_token(Some(old))
        .get("/v1/me")
        .await;
    assert_eq!(
        (r.status, r.code()),
        (401, "suspended"),
        "tokens from before stay refused"
    );
    c.stop().await;
}

/// An erase asked of one instance: the user's socket on the other closes, the other's
/// subscribers see their messages deleted, and nothing of them is listed there any more.
#[tokio::test]
async fn an_erase_on_one_instance_reaches_the_other() {
    use crate::operators::{admin, closed_within};
    let c = Cluster::start(2).await;
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    n0.as_user("bob").create_room("plaza", "public").await;
    n0.as_user("zoe").join("plaza").await;
    let said = n0.as_user("zoe").say("plaza", "wombat-5521 hello").await;
    let mut zoe = subscribed(n1, "zoe", "plaza").await;
    let mut bob = subscribed(n1, "bob", "plaza").await;
    let (status, body) = admin(
        n0,
        reqwest::Method::POST,
        "/admin/v1/users/zoe/erase",
        Some(json!({"rooms": "delete"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(closed_within(&mut zoe, 5).await.is_some());
    let deleted = bob
        .until(|f| f["type"] == "event" && f["kind"] == "message_deleted")
        .await;
    let id = said["id"].as_str().expect("id");
    assert!(deleted.to_string().contains(id), "{deleted}");
    let events = serde_json::to_string(&n1.as_user("bob").all_events("plaza").await).expect("json");
    assert!(!events.contains("wombat-5521"), "{events}");
    let r = n1.as_user("zoe").get("/v1/me").await;
    assert_eq!((r.status, r.code()), (401, "suspended"));
    c.stop().await;
}

#[tokio::test]
async fn collaborative_updates_and_awareness_cross_nodes_in_seq_order() {
    use crate::collab::{next_update, sync, update, Replica};
    let c = Cluster::start(2).await;
    let o = c.nodes[0].as_user("alice");
    o.create_room("shared", "private").await;
    c.nodes[1]
        .as_user("bob")
        .join_invited(&o, "shared", "member")
        .await;
    let mut a = c.nodes[0].ws("alice").await;
    let mut b = c.nodes[1].ws("bob").await;
    let (ra, rb) = (Replica::new(1), Replica::new(2));
    sync(&mut a, "shared", "plan", "").await;
    sync(&mut b, "shared", "plan", "").await;
    // Both nodes write: each update takes the document's next seq, whichever node applies it.
    for i in 0..5u32 {
        let (ws, r) = if i % 2 == 0 {
            (&mut a, &ra)
        } else {
            (&mut b, &rb)
        };
        let u = r.insert(0, &format!("{i}"));
        let done = update(ws, "shared", "plan", &u).await;
        assert_eq!(done["result"]["seq"], u64::from(i) + 1, "{done}");
    }
    for (ws, r) in [(&mut a, &ra), (&mut b, &rb)] {
        for want in 1..=5u64 {
            let f = next_update(ws, "plan").await;
            assert_eq!(f["seq"], want, "{f}");
            r.apply(f["update"].as_str().expect("update"));
        }
    }
    assert_eq!(ra.text(), rb.text());
    assert_eq!(ra.len(), 5);
    b.send(
        json!({"v": 1, "type": "awareness", "room": "shared", "doc": "plan",
        "state": {"cursor": 2}}),
    )
    .await;
    let f = a.until(|f| f["type"] == "awareness").await;
    assert_eq!(
        (f["user"].as_str(), f["state"]["cursor"].as_u64()),
        (Some("bob"), Some(2))
    );
    drop(b);
    let f = a.until(|f| f["type"] == "awareness").await;
    assert!(f.get("state").is_none(), "bob's session left: {f}");
    c.stop().await;
}
