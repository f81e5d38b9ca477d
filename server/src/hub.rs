//! Fan-out: which sockets follow which rooms, and delivery to them.
//!
//! The [`Hub`] is this instance's registry of connected sockets. A [`Bus`] carries
//! [`BusMessage`]s from whoever caused them to the hubs of every instance; the in-process bus
//! ([`LocalBus`]) hands them straight to the local hub, a Redis bus would publish them and hand
//! what it receives to its hub. Handlers only ever publish to the bus.
//!
//! Each event is serialised once into a shared frame and queued on every subscribed socket with
//! `try_send`: a socket whose queue is full is a slow consumer and is closed (code 4008) instead
//! of buffering without bound. Ordering per room is finished by the socket's writer (see
//! `ws.rs`), which drops duplicates and fills any gap from the store.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use parking_lot::RwLock;
use roam_proto::{Envelope, Notification, Presence, RoomEvent, ServerFrame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// A socket's id, unique in this process.
pub type ConnId = u64;

/// What a socket's writer receives.
#[derive(Debug)]
pub enum Outbound {
    /// A ready frame.
    Frame(Utf8Bytes),
    /// A room event: the writer checks it against the room's cursor before sending.
    Event {
        room: Arc<str>,
        seq: u64,
        frame: Utf8Bytes,
        /// The event's kind and the user it concerns, for membership changes.
        effect: Option<Effect>,
    },
    /// Start delivering `room` from `since` (catch up from the store first).
    StartRoom { room: String, since: u64 },
    /// Stop delivering `room`.
    StopRoom { room: String },
}

/// An event that changes who may read a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The user left or was banned: their sockets stop following the room.
    Removed { user: String, reason: &'static str },
    /// The room was deleted: everyone stops.
    RoomDeleted,
    /// The room's settings changed (it may have turned protected or private): each socket
    /// checks that its user may still read it, and stops following it otherwise.
    Recheck,
}

/// A message between instances.
#[derive(Debug, Clone)]
pub enum BusMessage {
    /// A committed room event.
    Event(Arc<RoomEvent>),
    /// Typing, relayed to the room's sockets except `origin` (on `origin_instance`).
    Typing {
        room: String,
        user: String,
        typing: bool,
        origin: Option<ConnId>,
    },
    /// A presence change, for sockets following any of `rooms`.
    Presence {
        presence: Presence,
        rooms: Vec<String>,
    },
    /// A new notification for a user's sockets.
    Notification {
        user: String,
        notification: Box<Notification>,
    },
    /// A user's unread count.
    /// A user's unread count as of the write numbered `order` (see
    /// `Service::commit_order`); an older one arriving late is dropped.
    Unread {
        user: String,
        count: u64,
        order: u64,
    },
    /// Cached room metadata or membership changed: drop it from every instance's cache.
    Invalidate { room: String },
}

/// Carries [`BusMessage`]s to every instance's hub.
#[async_trait]
pub trait Bus: Send + Sync + fmt::Debug + 'static {
    async fn publish(&self, msg: BusMessage);
}

/// The in-process bus of a single instance.
#[derive(Debug)]
pub struct LocalBus {
    hub: Arc<Hub>,
}

impl LocalBus {
    pub fn new(hub: Arc<Hub>) -> Self {
        LocalBus { hub }
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(&self, msg: BusMessage) {
        self.hub.dispatch(msg);
    }
}

/// One connected socket as the hub sees it.
#[derive(Debug, Clone)]
pub struct Conn {
    pub id: ConnId,
    pub user: Arc<str>,
    pub tx: mpsc::Sender<Outbound>,
    /// Cancelled to close the socket (slow consumer, shutdown).
    pub close: CancellationToken,
    /// Set before cancelling: the close code the socket should send.
    pub close_code: Arc<AtomicU64>,
}

impl Conn {
    /// Queues without waiting; a full queue closes the socket as a slow consumer.
    fn offer(&self, item: Outbound, metrics: &Metrics) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.close.is_cancelled() {
                    tracing::warn!(conn = self.id, user = %self.user, "slow consumer: closing socket");
                    metrics.disconnects_slow_consumer.inc();
                    self.close_code.store(
                        u64::from(roam_proto::close::SLOW_CONSUMER),
                        Ordering::Relaxed,
                    );
                    self.close.cancel();
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    rooms: HashMap<String, HashMap<ConnId, Conn>>,
    users: HashMap<Arc<str>, HashMap<ConnId, Conn>>,
}

/// This instance's socket registry.
pub struct Hub {
    state: RwLock<State>,
    /// Per user, the order of the newest unread count delivered.
    unread_order: parking_lot::Mutex<HashMap<String, u64>>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.read();
        f.debug_struct("Hub")
            .field("rooms", &s.rooms.len())
            .field("users", &s.users.len())
            .finish()
    }
}

/// How an event changes who may read its room.
pub fn effect_of(ev: &RoomEvent) -> Option<Effect> {
    match &ev.body {
        roam_proto::EventBody::MemberLeft { user } => Some(Effect::Removed {
            user: user.clone(),
            reason: "left",
        }),
        roam_proto::EventBody::MemberBanned { user } => Some(Effect::Removed {
            user: user.clone(),
            reason: "banned",
        }),
        roam_proto::EventBody::RoomDeleted { .. } => Some(Effect::RoomDeleted),
        roam_proto::EventBody::RoomUpdated(_) => Some(Effect::Recheck),
        _ => None,
    }
}

/// Serialises a server frame once, for any number of sockets.
pub fn encode(frame: ServerFrame) -> Utf8Bytes {
    match serde_json::to_string(&Envelope::new(frame)) {
        Ok(s) => Utf8Bytes::from(s),
        Err(e) => {
            tracing::error!(error = %e, "failed to encode a frame");
            Utf8Bytes::from_static("{}")
        }
    }
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Hub {
            state: RwLock::new(State::default()),
            unread_order: parking_lot::Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            metrics,
        }
    }

    pub fn next_conn_id(&self) -> ConnId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a socket; returns how many sockets the user now has.
    pub fn connect(&self, conn: Conn) -> usize {
        let mut s = self.state.write();
        let mine = s.users.entry(conn.user.clone()).or_default();
        mine.insert(conn.id, conn);
        mine.len()
    }

    /// Forgets a socket everywhere; returns how many sockets the user still has.
    pub fn disconnect(&self, user: &str, id: ConnId) -> usize {
        let mut s = self.state.write();
        s.rooms.retain(|_, subs| {
            subs.remove(&id);
            !subs.is_empty()
        });
        let left = match s.users.get_mut(user) {
            Some(mine) => {
                mine.remove(&id);
                mine.len()
            }
            None => 0,
        };
        if left == 0 {
            s.users.remove(user);
            self.unread_order.lock().remove(user);
        }
        self.metrics.rooms_active.set(s.rooms.len() as i64);
        left
    }

    /// Adds the socket to the room's followers.
    pub fn follow(&self, room: &str, conn: &Conn) {
        let mut s = self.state.write();
        s.rooms
            .entry(room.to_owned())
            .or_default()
            .insert(conn.id, conn.clone());
        self.metrics.rooms_active.set(s.rooms.len() as i64);
    }

    /// Removes the socket from the room's followers.
    pub fn unfollow(&self, room: &str, id: ConnId) {
        let mut s = self.state.write();
        if let Some(subs) = s.rooms.get_mut(room) {
            subs.remove(&id);
            if subs.is_empty() {
                s.rooms.remove(room);
            }
        }
        self.metrics.rooms_active.set(s.rooms.len() as i64);
    }

    /// Sockets connected right now.
    pub fn connection_count(&self) -> usize {
        self.state.read().users.values().map(HashMap::len).sum()
    }

    /// Every socket (for shutdown).
    pub fn all(&self) -> Vec<Conn> {
        self.state
            .read()
            .users
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Delivers a bus message to the local sockets it concerns.
    pub fn dispatch(&self, msg: BusMessage) {
        match msg {
            BusMessage::Event(ev) => self.dispatch_event(&ev),
            BusMessage::Typing {
                room,
                user,
                typing,
                origin,
            } => {
                let frame = encode(ServerFrame::Typing {
                    room: room.clone(),
                    user,
                    typing,
                });
                let s = self.state.read();
                if let Some(subs) = s.rooms.get(&room) {
                    for c in subs.values().filter(|c| Some(c.id) != origin) {
                        c.offer(Outbound::Frame(frame.clone()), &self.metrics);
                    }
                }
            }
            BusMessage::Presence { presence, rooms } => {
                let frame = encode(ServerFrame::Presence(presence));
                let s = self.state.read();
                let mut seen = HashSet::new();
                for room in &rooms {
                    if let Some(subs) = s.rooms.get(room) {
                        for c in subs.values() {
                            if seen.insert(c.id) {
                                c.offer(Outbound::Frame(frame.clone()), &self.metrics);
                            }
                        }
                    }
                }
            }
            BusMessage::Notification { user, notification } => {
                let frame = encode(ServerFrame::Notification(*notification));
                self.to_user(&user, &frame);
            }
            BusMessage::Unread { user, count, order } => {
                {
                    let mut seen = self.unread_order.lock();
                    let last = seen.entry(user.clone()).or_insert(0);
                    if order <= *last {
                        return;
                    }
                    *last = order;
                }
                let frame = encode(ServerFrame::Unread { count });
                self.to_user(&user, &frame);
            }
            BusMessage::Invalidate { .. } => {}
        }
    }

    fn to_user(&self, user: &str, frame: &Utf8Bytes) {
        let s = self.state.read();
        if let Some(mine) = s.users.get(user) {
            for c in mine.values() {
                c.offer(Outbound::Frame(frame.clone()), &self.metrics);
            }
        }
    }

    fn dispatch_event(&self, ev: &RoomEvent) {
        let started = Instant::now();
        let effect = effect_of(ev);
        let s = self.state.read();
        let Some(subs) = s.rooms.get(&ev.room) else {
            return;
        };
        let frame = encode(ServerFrame::Event(ev.clone()));
        let room: Arc<str> = Arc::from(ev.room.as_str());
        let mut delivered = 0u64;
        for c in subs.values() {
            let item = Outbound::Event {
                room: room.clone(),
                seq: ev.seq,
                frame: frame.clone(),
                effect: effect.clone(),
            };
            if c.offer(item, &self.metrics) {
                delivered += 1;
            }
        }
        drop(s);
        self.metrics.events_delivered.inc_by(delivered);
        self.metrics
            .bytes_out
            .inc_by(delivered * frame.as_str().len() as u64);
        self.metrics
            .fanout_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}
