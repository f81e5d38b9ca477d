//! The Redis bus: several roam-server instances behind one address, sharing one store.
//!
//! [`RedisBus`] implements [`Bus`]. A message published on an instance is handed to its own hub
//! at once, then sent on one Redis pub/sub channel (`{prefix}:bus`) to every other instance,
//! which hands it to its hub. What it receives goes to this instance through [`Inbound`], given
//! to [`RedisBus::start`]; the bus knows nothing else of the instance. Redis pub/sub keeps no
//! history and may lose messages while a connection is down; nothing depends on it for
//! durability:
//!
//! - Room events carry their `seq`. A hub line releases them in order and fills any gap from
//!   the store once per room, so a lost or late event is repaired by the next one.
//! - An instance whose subscription dropped reads every room it follows from the store when it
//!   is back ([`Inbound::resync`]); an instance that could not publish tells the others to do the
//!   same once it can (`resync`).
//! - Unread counts are re-read from the store by the instance that delivers them; cache
//!   invalidations drop the receiving instance's cached room and membership reads.
//!
//! Presence is kept in Redis too: per user a hash `{prefix}:presence:{user}` of instance →
//! that instance's status and device count, and per instance a set of its users. Every instance
//! heartbeats into `{prefix}:nodes`; an instance that stops heartbeating for
//! [`RedisBusConfig::node_ttl`] is treated as gone, and the first instance to notice removes its
//! entries and announces those of its users who are connected nowhere else as offline.
//!
//! While Redis is unreachable an instance keeps serving its own sockets (its local deliveries
//! do not wait for Redis), counts what it could not send in `roam_bus_dropped_total`, reports
//! `/readyz` unready, and repairs as above when Redis returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use parking_lot::{Mutex, RwLock};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult};
use roam_proto::{MembershipChange, Notification, Presence, PresenceStatus, ReadMarker, RoomEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, BusMessage, Inbound};
use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::presence::Transition;

/// Messages waiting to be sent to Redis at most; past that they are dropped (and repaired).
const QUEUE: usize = 65_536;
/// Messages sent in one pipeline at most.
const BATCH: usize = 512;
/// Connect and command timeout on the Redis connections.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed connection, messages are dropped without trying again for this long.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Settings of the Redis bus.
#[derive(Debug, Clone)]
pub struct RedisBusConfig {
    /// `redis://[:password@]host:port/db`, or `rediss://…` for TLS.
    pub url: String,
    /// Prefix of every key and channel, so several deployments can share one Redis.
    pub prefix: String,
    /// This instance's id, unique in the cluster.
    pub node: String,
    /// How often this instance says it is alive.
    pub heartbeat: Duration,
    /// An instance silent for this long is gone: its presence entries expire.
    pub node_ttl: Duration,
    /// Seals every message on the channel ([`derive_bus_key`]); a message whose seal does
    /// not verify is dropped.
    pub key: [u8; 32],
}

type BusMac = hmac::Hmac<sha2::Sha256>;

/// Bytes of a message's seal, ahead of its JSON.
const SEAL: usize = 32;

/// The bus key of a cluster whose instances share the JWT `secret`.
pub fn derive_bus_key(secret: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    let mut mac = match BusMac::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return [0; 32],
    };
    mac.update(b"roam bus key v1");
    mac.finalize().into_bytes().into()
}

/// `json` with its seal in front: HMAC-SHA256 of the JSON under the cluster's key.
fn seal(key: &[u8; 32], json: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut out = Vec::with_capacity(SEAL + json.len());
    if let Ok(mut mac) = BusMac::new_from_slice(key) {
        mac.update(json);
        out.extend_from_slice(&mac.finalize().into_bytes());
    }
    out.extend_from_slice(json);
    out
}

/// The JSON of a sealed message, if its seal verifies (compared in constant time).
fn unseal<'a>(key: &[u8; 32], payload: &'a [u8]) -> Option<&'a [u8]> {
    use hmac::Mac;
    if payload.len() < SEAL {
        return None;
    }
    let (tag, json) = payload.split_at(SEAL);
    let mut mac = BusMac::new_from_slice(key).ok()?;
    mac.update(json);
    mac.verify_slice(tag).ok()?;
    Some(json)
}

/// The Redis bus could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("invalid Redis URL {url:?}: {source}")]
    Url {
        url: String,
        #[source]
        source: redis::RedisError,
    },
}

/// What travels on the channel.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    /// The sending instance (its own messages come back to it and are skipped).
    node: String,
    #[serde(flatten)]
    msg: WireMsg,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum WireMsg {
    Event {
        event: RoomEvent,
    },
    Typing {
        room: String,
        user: String,
        typing: bool,
    },
    Presence {
        presence: Presence,
        rooms: Vec<String>,
    },
    Notification {
        user: String,
        notification: Notification,
    },
    /// The user's unread count changed: the receiver reads it from the store.
    Unread {
        user: String,
    },
    Invalidate {
        room: String,
    },
    /// A user's read marker moved.
    ReadMarker {
        user: String,
        marker: ReadMarker,
    },
    /// A user's own membership changed.
    Membership {
        user: String,
        change: MembershipChange,
    },
    /// An operator changed a user: read their suspension again, close their sockets.
    UserChanged {
        user: String,
    },
    /// A collaborative-document update (its bytes in base64).
    CollabUpdate {
        room: String,
        doc: String,
        seq: u64,
        actor: String,
        update: String,
    },
    Awareness {
        update: roam_proto::collab::AwarenessUpdate,
    },
    /// The sender lost messages: every receiver brings its rooms up to the store.
    Resync,
}

fn wire_msg(m: BusMessage) -> WireMsg {
    match m {
        BusMessage::Event(ev) => WireMsg::Event {
            event: Arc::unwrap_or_clone(ev),
        },
        BusMessage::Typing {
            room, user, typing, ..
        } => WireMsg::Typing { room, user, typing },
        BusMessage::Presence { presence, rooms } => WireMsg::Presence { presence, rooms },
        BusMessage::Notification { user, notification } => WireMsg::Notification {
            user,
            notification: *notification,
        },
        BusMessage::Unread { user, .. } => WireMsg::Unread { user },
        BusMessage::Invalidate { room } => WireMsg::Invalidate { room },
        BusMessage::ReadMarker { user, marker } => WireMsg::ReadMarker { user, marker },
        BusMessage::Membership { user, change } => WireMsg::Membership {
            user,
            change: *change,
        },
        BusMessage::UserChanged { user } => WireMsg::UserChanged { user },
        BusMessage::CollabUpdate(p) => WireMsg::CollabUpdate {
            room: p.room.clone(),
            doc: p.doc.clone(),
            seq: p.seq,
            actor: p.actor.clone(),
            update: roam_proto::collab::encode_base64(&p.update),
        },
        BusMessage::Awareness { update, .. } => WireMsg::Awareness {
            update: Arc::unwrap_or_clone(update),
        },
    }
}

/// An instance's entry in a user's presence hash: `o:3` (online, 3 devices) or `a:1`.
fn presence_field(status: PresenceStatus, devices: u32) -> String {
    let s = if status == PresenceStatus::Away {
        'a'
    } else {
        'o'
    };
    format!("{s}:{devices}")
}

fn parse_field(v: &str) -> Option<(PresenceStatus, u32)> {
    let (s, d) = v.split_once(':')?;
    let devices = d.parse().ok()?;
    let status = match s {
        "o" => PresenceStatus::Online,
        "a" => PresenceStatus::Away,
        _ => return None,
    };
    Some((status, devices))
}

/// Combines per-instance views: online if any device is, away if every one is.
fn combine(views: impl IntoIterator<Item = (PresenceStatus, u32)>) -> (PresenceStatus, u32) {
    let mut devices = 0u32;
    let mut online = false;
    for (status, d) in views {
        if d == 0 || status == PresenceStatus::Offline {
            continue;
        }
        devices += d;
        online |= status == PresenceStatus::Online;
    }
    let status = match (devices, online) {
        (0, _) => PresenceStatus::Offline,
        (_, true) => PresenceStatus::Online,
        (_, false) => PresenceStatus::Away,
    };
    (status, devices)
}

/// The bus of an instance in a cluster; see the module docs.
pub struct RedisBus {
    client: redis::Client,
    cfg: RedisBusConfig,
    channel: String,
    conn: Mutex<Option<MultiplexedConnection>>,
    /// No new connection is tried before this after one failed.
    retry_at: Mutex<Option<Instant>>,
    tx: mpsc::Sender<BusMessage>,
    rx: Mutex<Option<mpsc::Receiver<BusMessage>>>,
    /// This instance, as [`RedisBus::start`] was given it.
    inbound: OnceLock<Arc<dyn Inbound>>,
    metrics: OnceLock<Arc<Metrics>>,
    subscribed: AtomicBool,
    publishing: AtomicBool,
    /// Messages were lost since the last successful send: the others must resync.
    lost: AtomicBool,
    /// This instance's presence entries in Redis may be stale: rewrite them.
    presence_dirty: AtomicBool,
    /// Last heartbeat of each instance, as read at this instance's last heartbeat.
    nodes: RwLock<HashMap<String, i64>>,
    /// Cancelled when the instance has drained: the publisher and heartbeat end.
    stop: CancellationToken,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("node", &self.cfg.node)
            .field("prefix", &self.cfg.prefix)
            .field("subscribed", &self.subscribed.load(Ordering::Relaxed))
            .finish()
    }
}

impl RedisBus {
    /// Checks the URL; nothing connects until [`RedisBus::start`].
    pub fn new(cfg: RedisBusConfig) -> Result<Arc<Self>, BusError> {
        // `rediss://` connects with rustls; its provider is ring (one already installed, by an
        // embedding application, is kept).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = redis::Client::open(cfg.url.as_str()).map_err(|source| BusError::Url {
            url: cfg.url.clone(),
            source,
        })?;
        let (tx, rx) = mpsc::channel(QUEUE);
        Ok(Arc::new(RedisBus {
            client,
            channel: format!("{}:bus", cfg.prefix),
            cfg,
            conn: Mutex::new(None),
            retry_at: Mutex::new(None),
            tx,
            rx: Mutex::new(Some(rx)),
            inbound: OnceLock::new(),
            metrics: OnceLock::new(),
            subscribed: AtomicBool::new(false),
            publishing: AtomicBool::new(true),
            lost: AtomicBool::new(false),
            presence_dirty: AtomicBool::new(false),
            nodes: RwLock::new(HashMap::new()),
            stop: CancellationToken::new(),
        }))
    }

    /// This instance's id.
    pub fn node(&self) -> &str {
        &self.cfg.node
    }

    /// Joins the instance to the cluster: subscribes, starts sending, heartbeats. Call once,
    /// with the instance built on this bus. When `shutdown` is cancelled the bus stops
    /// receiving, waits up to `grace` for the instance's sockets to close, then leaves the
    /// cluster.
    pub fn start(
        self: &Arc<Self>,
        inbound: Arc<dyn Inbound>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        grace: Duration,
    ) {
        let _ = self.inbound.set(inbound);
        let _ = self.metrics.set(metrics);
        self.set_up_gauge();
        let Some(rx) = self.rx.lock().take() else {
            tracing::warn!("redis bus: already started");
            return;
        };
        tokio::spawn(Arc::clone(self).publisher(rx));
        tokio::spawn(Arc::clone(self).subscriber(shutdown.clone()));
        tokio::spawn(Arc::clone(self).heartbeat(shutdown, grace));
    }

    fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.get()
    }

    fn set_up_gauge(&self) {
        if let Some(m) = self.metrics() {
            m.bus_up.set(i64::from(self.unavailable().is_none()));
        }
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.cfg.prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    fn conn_config() -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(IO_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT))
    }

    /// The shared command connection, made (again) when needed.
    async fn conn(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(c) = self.conn.lock().clone() {
            return Ok(c);
        }
        if self.retry_at.lock().is_some_and(|t| Instant::now() < t) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "Redis unreachable; retrying shortly",
            )));
        }
        match self
            .client
            .get_multiplexed_async_connection_with_config(&Self::conn_config())
            .await
        {
            Ok(c) => {
                *self.conn.lock() = Some(c.clone());
                *self.retry_at.lock() = None;
                Ok(c)
            }
            Err(e) => {
                *self.retry_at.lock() = Some(Instant::now() + RETRY_AFTER);
                Err(e)
            }
        }
    }

    /// Forgets a connection that failed.
    fn broken(&self) {
        *self.conn.lock() = None;
    }

    async fn query<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> RedisResult<T> {
        let mut c = self.conn().await?;
        let r = pipe.query_async(&mut c).await;
        if r.as_ref().is_err_and(|e| e.is_io_error() || e.is_timeout()) {
            self.broken();
        }
        r
    }

    /// Sends queued messages in pipelines, in the order they were published. After a failure
    /// it retries on its own (with a `resync` for the others) even when nothing new is queued.
    async fn publisher(self: Arc<Self>, mut rx: mpsc::Receiver<BusMessage>) {
        let mut batch: Vec<BusMessage> = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        return;
                    }
                }
                _ = tokio::time::sleep(RETRY_AFTER), if self.lost.load(Ordering::Acquire) => {}
                _ = self.stop.cancelled() => {
                    while batch.len() < QUEUE {
                        match rx.try_recv() {
                            Ok(m) => batch.push(m),
                            Err(_) => break,
                        }
                    }
                    self.send(&mut batch).await;
                    return;
                }
            }
            self.send(&mut batch).await;
        }
    }

    async fn send(&self, batch: &mut Vec<BusMessage>) {
        let resync = self.lost.load(Ordering::Acquire);
        if batch.is_empty() && !resync {
            return;
        }
        let mut pipe = redis::pipe();
        let mut count = 0u64;
        for m in batch.drain(..) {
            let msg = wire_msg(m);
            match serde_json::to_vec(&Wire {
                node: self.cfg.node.clone(),
                msg,
            }) {
                Ok(payload) => {
                    pipe.cmd("PUBLISH")
                        .arg(&self.channel)
                        .arg(seal(&self.cfg.key, &payload))
                        .ignore();
                    count += 1;
                }
                Err(e) => tracing::error!(error = %e, "redis bus: could not encode a message"),
            }
        }
        if resync {
            if let Ok(payload) = serde_json::to_vec(&Wire {
                node: self.cfg.node.clone(),
                msg: WireMsg::Resync,
            }) {
                pipe.cmd("PUBLISH")
                    .arg(&self.channel)
                    .arg(seal(&self.cfg.key, &payload))
                    .ignore();
            }
        }
        match self.query::<()>(&pipe).await {
            Ok(()) => {
                if resync {
                    self.lost.store(false, Ordering::Release);
                }
                if !self.publishing.swap(true, Ordering::AcqRel) {
                    tracing::info!("redis bus: publishing again; other instances resync");
                    self.set_up_gauge();
                }
                if let Some(m) = self.metrics() {
                    m.bus_published.inc_by(count);
                }
            }
            Err(e) => {
                self.lost.store(true, Ordering::Release);
                if self.publishing.swap(false, Ordering::AcqRel) {
                    tracing::warn!(
                        error = %e,
                        "redis bus: cannot publish; serving local sockets only, other \
                         instances will repair from the store"
                    );
                    self.set_up_gauge();
                }
                if let Some(m) = self.metrics() {
                    m.bus_dropped.inc_by(count);
                }
            }
        }
    }

    /// Receives the other instances' messages; resubscribes (and resyncs) after a loss.
    async fn subscriber(self: Arc<Self>, shutdown: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        let mut was_down = false;
        loop {
            let subscribed = async {
                let mut ps = self.client.get_async_pubsub().await?;
                ps.subscribe(&self.channel).await?;
                RedisResult::Ok(ps)
            };
            let ps = tokio::select! {
                r = tokio::time::timeout(IO_TIMEOUT, subscribed) => r,
                _ = shutdown.cancelled() => return,
            };
            match ps {
                Ok(Ok(ps)) => {
                    delay = Duration::from_millis(100);
                    self.subscribed.store(true, Ordering::Release);
                    self.set_up_gauge();
                    if was_down {
                        tracing::info!("redis bus: subscribed again; repairing rooms from store");
                        self.presence_dirty.store(true, Ordering::Release);
                        self.resync_here();
                        // Others may have missed what this instance sent meanwhile: the
                        // publisher tells them to resync.
                        self.lost.store(true, Ordering::Release);
                    } else {
                        tracing::info!(node = %self.cfg.node, channel = %self.channel, "redis bus: subscribed");
                    }
                    let mut stream = ps.into_on_message();
                    loop {
                        tokio::select! {
                            m = stream.next() => match m {
                                Some(m) => self.receive(m.get_payload_bytes()),
                                None => break,
                            },
                            _ = shutdown.cancelled() => return,
                        }
                    }
                    tracing::warn!(
                        "redis bus: subscription lost; serving local sockets only until Redis \
                         returns"
                    );
                }
                Ok(Err(e)) => {
                    if !was_down {
                        tracing::warn!(error = %e, "redis bus: cannot subscribe; retrying");
                    }
                }
                Err(_) => {
                    if !was_down {
                        tracing::warn!("redis bus: subscribing timed out; retrying");
                    }
                }
            }
            was_down = true;
            self.subscribed.store(false, Ordering::Release);
            self.set_up_gauge();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Brings every room followed here up to the store, in the background. Whatever the bus
    /// lost may include cache invalidations, so the whole read cache goes first: the events
    /// read back (a ban, a deletion) are then judged against the store, not stale entries.
    fn resync_here(&self) {
        let Some(inbound) = self.inbound.get() else {
            return;
        };
        if let Some(m) = self.metrics() {
            m.bus_resyncs.inc();
        }
        inbound.resync();
    }

    fn receive(&self, payload: &[u8]) {
        // Anyone who can publish on the Redis channel could otherwise inject events into any
        // room (and have the committed event with that seq dropped as a duplicate).
        let Some(payload) = unseal(&self.cfg.key, payload) else {
            if let Some(m) = self.metrics() {
                m.bus_rejected.inc();
            }
            tracing::warn!("redis bus: a message without a valid seal was dropped");
            return;
        };
        let wire: Wire = match serde_json::from_slice(payload) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "redis bus: undecodable message skipped");
                return;
            }
        };
        if wire.node == self.cfg.node {
            return;
        }
        let Some(inbound) = self.inbound.get() else {
            return;
        };
        if let Some(m) = self.metrics() {
            m.bus_received.inc();
        }
        let deliver = |msg| Arc::clone(inbound).deliver(msg);
        match wire.msg {
            WireMsg::Event { event } => deliver(BusMessage::Event(Arc::new(event))),
            WireMsg::Typing { room, user, typing } => deliver(BusMessage::Typing {
                room,
                user,
                typing,
                origin: None,
            }),
            WireMsg::Presence { presence, rooms } => {
                deliver(BusMessage::Presence { presence, rooms })
            }
            WireMsg::Notification { user, notification } => deliver(BusMessage::Notification {
                user,
                notification: Box::new(notification),
            }),
            WireMsg::Unread { user } => inbound.unread_changed(user),
            WireMsg::Invalidate { room } => inbound.invalidate(&room),
            WireMsg::ReadMarker { user, marker } => {
                deliver(BusMessage::ReadMarker { user, marker })
            }
            WireMsg::Membership { user, change } => deliver(BusMessage::Membership {
                user,
                change: Box::new(change),
            }),
            WireMsg::UserChanged { user } => inbound.user_changed(user),
            WireMsg::CollabUpdate {
                room,
                doc,
                seq,
                actor,
                update,
            } => {
                // Sealed by a node of the cluster; its bytes are what that node stored.
                match roam_proto::collab::decode_base64("update", &update, usize::MAX / 2) {
                    Ok(bytes) => deliver(BusMessage::CollabUpdate(Arc::new(
                        crate::collab::Published {
                            room,
                            doc,
                            seq,
                            actor,
                            update: Arc::from(bytes),
                        },
                    ))),
                    Err(e) => {
                        tracing::warn!(error = %e.0, "redis bus: undecodable collab update skipped")
                    }
                }
            }
            WireMsg::Awareness { update } => deliver(BusMessage::Awareness {
                update: Arc::new(update),
                origin: None,
            }),
            WireMsg::Resync => self.resync_here(),
        }
    }

    /// Whether an instance's entries count: it heartbeated within the TTL (or is not known
    /// yet: it started after this instance last looked).
    fn alive(&self, node: &str, now: i64) -> bool {
        node == self.cfg.node
            || self
                .nodes
                .read()
                .get(node)
                .is_none_or(|&hb| now - hb <= self.cfg.node_ttl.as_millis() as i64)
    }

    /// The other live instances' views in a user's presence hash.
    fn others(&self, fields: &HashMap<String, String>, now: i64) -> Vec<(PresenceStatus, u32)> {
        fields
            .iter()
            .filter(|(n, _)| **n != self.cfg.node && self.alive(n, now))
            .filter_map(|(_, v)| parse_field(v))
            .collect()
    }

    /// Says this instance is alive, reads the others' heartbeats, rewrites this instance's
    /// presence entries when they may be stale, and expires instances that went silent. On
    /// shutdown, waits for the sockets to close, then leaves the cluster.
    async fn heartbeat(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) {
        let Some(inbound) = self.inbound.get().cloned() else {
            return;
        };
        let mut tick = tokio::time::interval(self.cfg.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            if let Err(e) = self.beat(&*inbound).await {
                self.broken();
                self.presence_dirty.store(true, Ordering::Release);
                tracing::debug!(error = %e, "redis bus: heartbeat failed");
            }
        }
        // Draining: the sockets' own presence changes go out first.
        let deadline = Instant::now() + grace;
        while inbound.sockets() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut pipe = redis::pipe();
        pipe.hdel(self.key(&["nodes"]), &self.cfg.node).ignore();
        pipe.del(self.key(&["node", &self.cfg.node])).ignore();
        if let Err(e) = self.query::<()>(&pipe).await {
            tracing::warn!(error = %e, "redis bus: could not leave the cluster cleanly");
        }
        self.stop.cancel();
    }

    async fn beat(&self, inbound: &dyn Inbound) -> RedisResult<()> {
        let now = now_ms();
        let nodes_key = self.key(&["nodes"]);
        let mut pipe = redis::pipe();
        pipe.hset(&nodes_key, &self.cfg.node, now).ignore();
        pipe.hgetall(&nodes_key);
        let (nodes,): (HashMap<String, i64>,) = self.query(&pipe).await?;
        *self.nodes.write() = nodes.clone();
        if self.presence_dirty.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.rewrite_presence(inbound).await {
                self.presence_dirty.store(true, Ordering::Release);
                return Err(e);
            }
        }
        let ttl = self.cfg.node_ttl.as_millis() as i64;
        for (node, hb) in nodes {
            if node != self.cfg.node && now - hb > ttl {
                self.reap(inbound, &node, hb).await?;
            }
        }
        Ok(())
    }

    /// Writes every local user's entry again (after Redis lost them or missed updates).
    async fn rewrite_presence(&self, inbound: &dyn Inbound) -> RedisResult<()> {
        let node_key = self.key(&["node", &self.cfg.node]);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.del(&node_key).ignore();
        for (user, status, devices) in inbound.presence_here() {
            pipe.hset(
                self.key(&["presence", &user]),
                &self.cfg.node,
                presence_field(status, devices),
            )
            .ignore();
            pipe.sadd(&node_key, &user).ignore();
        }
        self.query(&pipe).await
    }

    /// Removes a silent instance's presence entries (one instance does it, under a lock) and
    /// announces its users who are connected nowhere else as offline, last seen at its last
    /// heartbeat.
    async fn reap(&self, inbound: &dyn Inbound, node: &str, last_beat: i64) -> RedisResult<()> {
        let lock = self.key(&["reap", node]);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&lock)
            .arg(&self.cfg.node)
            .arg("NX")
            .arg("PX")
            .arg(self.cfg.node_ttl.as_millis() as u64 * 6);
        let (got,): (Option<String>,) = self.query(&pipe).await?;
        if got.is_none() {
            return Ok(());
        }
        let node_key = self.key(&["node", node]);
        let mut pipe = redis::pipe();
        pipe.smembers(&node_key);
        let (users,): (Vec<String>,) = self.query(&pipe).await?;
        let now = now_ms();
        let mut offline = 0usize;
        for user in &users {
            let key = self.key(&["presence", user]);
            let mut pipe = redis::pipe();
            pipe.atomic();
            pipe.hdel(&key, node).ignore();
            pipe.hgetall(&key);
            let (fields,): (HashMap<String, String>,) = self.query(&pipe).await?;
            let mut views = self.others(&fields, now);
            views.push(inbound.presence_of(user));
            if combine(views).0 != PresenceStatus::Offline {
                continue;
            }
            offline += 1;
            inbound.went_offline(user, last_beat).await;
        }
        let mut pipe = redis::pipe();
        pipe.del(&node_key).ignore();
        pipe.hdel(self.key(&["nodes"]), node).ignore();
        self.query::<()>(&pipe).await?;
        self.nodes.write().remove(node);
        tracing::info!(
            node,
            users = users.len(),
            offline,
            "redis bus: instance stopped heartbeating; its presence entries expired"
        );
        Ok(())
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, msg: BusMessage) {
        if let Some(inbound) = self.inbound.get() {
            Arc::clone(inbound).deliver(msg.clone());
        }
        if self.tx.try_send(msg).is_err() {
            self.lost.store(true, Ordering::Release);
            if let Some(m) = self.metrics() {
                m.bus_dropped.inc();
            }
        }
    }

    fn unavailable(&self) -> Option<String> {
        if !self.subscribed.load(Ordering::Acquire) {
            Some("redis bus: not subscribed".to_owned())
        } else if !self.publishing.load(Ordering::Acquire) {
            Some("redis bus: cannot publish".to_owned())
        } else {
            None
        }
    }

    async fn share_presence(&self, change: Transition) -> Option<Presence> {
        let user = change.now.user.clone();
        let key = self.key(&["presence", &user]);
        let node_key = self.key(&["node", &self.cfg.node]);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.hgetall(&key);
        if change.now.devices == 0 {
            pipe.hdel(&key, &self.cfg.node).ignore();
            pipe.srem(&node_key, &user).ignore();
        } else {
            pipe.hset(
                &key,
                &self.cfg.node,
                presence_field(change.now.status, change.now.devices),
            )
            .ignore();
            pipe.sadd(&node_key, &user).ignore();
        }
        let fields: HashMap<String, String> = match self.query::<(HashMap<_, _>,)>(&pipe).await {
            Ok((f,)) => f,
            Err(e) => {
                tracing::debug!(error = %e, "redis bus: presence not shared");
                self.presence_dirty.store(true, Ordering::Release);
                return change.status_changed().then_some(change.now);
            }
        };
        let others = self.others(&fields, now_ms());
        let before = combine(others.iter().copied().chain([(change.before, 1)])).0;
        let (status, devices) = combine(
            others
                .iter()
                .copied()
                .chain([(change.now.status, change.now.devices)]),
        );
        (before != status).then_some(Presence {
            user,
            status,
            last_seen: change.now.last_seen,
            devices,
        })
    }

    async fn cluster_presence(&self, local: Vec<Presence>) -> Vec<Presence> {
        if local.is_empty() {
            return local;
        }
        let mut pipe = redis::pipe();
        for p in &local {
            pipe.hgetall(self.key(&["presence", &p.user]));
        }
        let all: Vec<HashMap<String, String>> = match self.query(&pipe).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "redis bus: cluster presence unavailable");
                return local;
            }
        };
        let now = now_ms();
        local
            .into_iter()
            .zip(all)
            .map(|(p, fields)| {
                let mut views = self.others(&fields, now);
                views.push((p.status, p.devices));
                let (status, devices) = combine(views);
                Presence {
                    status,
                    devices,
                    ..p
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_message_sealed_with_the_clusters_key_is_opened() {
        let key = derive_bus_key(b"the cluster's jwt secret, 32 bytes+");
        let other = derive_bus_key(b"another cluster's secret, 32 bytes+");
        assert_ne!(key, other);
        let json = br#"{"node":"n1","t":"resync"}"#;
        let sealed = seal(&key, json);
        assert_eq!(unseal(&key, &sealed), Some(&json[..]));
        assert_eq!(unseal(&other, &sealed), None, "another key");
        assert_eq!(unseal(&key, json), None, "no seal at all");
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert_eq!(unseal(&key, &tampered), None, "a changed byte");
        assert_eq!(unseal(&key, &sealed[..10]), None, "too short");
    }

    #[test]
    fn tls_and_password_urls_are_taken() {
        for url in [
            "rediss://redis.internal:6380/0",
            "redis://:s3cret@127.0.0.1:6379/0",
            "rediss://user:s3cret@redis.internal:6380/0",
        ] {
            let made = RedisBus::new(RedisBusConfig {
                url: url.into(),
                prefix: "t".into(),
                node: "n".into(),
                heartbeat: Duration::from_secs(1),
                node_ttl: Duration::from_secs(5),
                key: [7; 32],
            });
            assert!(made.is_ok(), "{url}: {:?}", made.err());
        }
    }

    #[test]
    fn presence_fields_round_trip() {
        for (s, d) in [(PresenceStatus::Online, 3), (PresenceStatus::Away, 1)] {
            assert_eq!(parse_field(&presence_field(s, d)), Some((s, d)));
        }
        assert_eq!(parse_field("x:1"), None);
        assert_eq!(parse_field("o:"), None);
        assert_eq!(parse_field("o"), None);
    }

    #[test]
    fn combined_presence_is_online_if_any_device_is() {
        use PresenceStatus::*;
        assert_eq!(combine([]), (Offline, 0));
        assert_eq!(combine([(Away, 1), (Online, 2)]), (Online, 3));
        assert_eq!(combine([(Away, 1), (Away, 2)]), (Away, 3));
        assert_eq!(combine([(Offline, 0), (Away, 1)]), (Away, 1));
        assert_eq!(combine([(Online, 0)]), (Offline, 0), "no devices: offline");
    }

    #[test]
    fn every_bus_message_has_a_wire_form() {
        let m = wire_msg(BusMessage::Unread {
            user: "a".into(),
            count: 3,
            order: 9,
        });
        let json = serde_json::to_string(&Wire {
            node: "n1".into(),
            msg: m,
        })
        .unwrap_or_default();
        assert_eq!(json, r#"{"node":"n1","t":"unread","user":"a"}"#);
        let back: Wire =
            serde_json::from_str(r#"{"node":"n2","t":"resync"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(back.msg, WireMsg::Resync));
        assert_eq!(back.node, "n2");
    }
}
