//! Fan-out: which sockets follow which rooms, and delivery to them in commit order.
//!
//! The [`Hub`] is this instance's registry of connected sockets. A [`Bus`](crate::bus::Bus)
//! carries [`BusMessage`]s from whoever caused them to the hubs of every instance, and hands each
//! to its hub through [`Deliver`]. Handlers only ever publish to the bus.
//!
//! **Ordering.** Each room followed here has a *line*: the last sequence number released to its
//! sockets and a small buffer of events that arrived early. Committed events are published by the
//! tasks that made them, so two commits of one room can reach the hub in either order; the line
//! holds the later one until its predecessor arrives and then releases both, so sockets only ever
//! see a room's events in `seq` order without gaps. A predecessor that does not come within the
//! reorder window (a publisher that died after its commit, a bus that dropped a message) is read
//! from the store **once for the room** and released to every socket; a gap wider than
//! [`HubConfig::fill_max`] (a batch import publishes only its last event) is filled at once.
//! Only events the store no longer has are released as a gap (each socket then reads what it
//! misses itself).
//!
//! **One encode.** An event is serialised once into a [`LiveEvent`] shared by every socket (and
//! compressed at most once, on first demand; see `event.rs`); queuing it costs a reference count.
//!
//! **Memory.** The encoded events a hub keeps — each line's recent events and its shared
//! catch-up pages — count against one budget for the whole hub ([`HubConfig::memory_budget`],
//! the `hub_cached_bytes` gauge). Past it the hub evicts down to seven eighths of it: catch-up
//! pages first, least recently used across every line, then the oldest recent events of the
//! least recently active lines. Nothing a socket needs is lost: a socket that finds a page or a
//! recent event gone reads the store, as it does for anything older. Pages also expire on time
//! ([`Hub::sweep`], run every second), whether or not their room is read again. How many rooms
//! a socket, and a user over all their sockets here, may follow is capped
//! ([`HubConfig::max_rooms_per_socket`], [`HubConfig::max_rooms_per_user`]).
//!
//! **Presence** changes are collected per room and sent as one `presence_diff` frame per room
//! per [`HubConfig::presence_interval`], so a crowd reconnecting at once costs each socket a few
//! frames instead of one per member. Rooms with more members than the configured presence limit
//! get no presence frames at all (their clients ask for presence on demand).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use roam_proto::{Presence, RoomEvent, ServerFrame};

use crate::bus::{BusMessage, Deliver};
use crate::conn::{Conn, ConnId, Outbound};
use crate::event::{encode, LiveEvent};
use crate::follow::Followers;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, StoreResult};
use crate::wsframe::WireFrame;

/// Events read from the store per page of a fill.
const FILL_PAGE: u32 = 500;

/// Events per shared catch-up page: page `k` of a room holds its stored events with seqs
/// `k * CATCH_UP_PAGE + 1 ..= (k + 1) * CATCH_UP_PAGE`.
pub const CATCH_UP_PAGE: u64 = 512;

/// A room's stored events of one catch-up page, encoded once.
type Page = Arc<[Arc<LiveEvent>]>;

/// A shared catch-up page: read by the first socket that needs it, awaited by the others.
struct PageSlot {
    index: u64,
    made: Instant,
    /// Last handed to a socket (eviction takes the least recently used page first).
    used: Instant,
    /// What the page counts against the hub's memory budget (0 until it is read).
    charged: usize,
    cell: Arc<tokio::sync::OnceCell<Page>>,
}

/// What an event kept in memory counts against the hub's budget besides its frame: the
/// [`LiveEvent`] itself, its reference counts and the slot that points to it.
const EVENT_OVERHEAD: usize = size_of::<LiveEvent>() + 3 * size_of::<usize>();

/// The bytes an event kept in memory counts against the hub's budget.
fn cost(ev: &LiveEvent) -> usize {
    ev.frame.len() + EVENT_OVERHEAD
}

/// A subscription the follow caps refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowRefused {
    #[error(
        "this socket follows {follows} rooms and may follow at most {max}: unsubscribe from some first"
    )]
    Socket { follows: usize, max: usize },
    #[error(
        "your sockets on this server follow {follows} rooms and may follow at most {max}: \
         unsubscribe from some first"
    )]
    User { follows: usize, max: usize },
}

impl FollowRefused {
    /// The metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            FollowRefused::Socket { .. } => "socket",
            FollowRefused::User { .. } => "user",
        }
    }
}

/// The rooms one user's sockets follow here.
#[derive(Default)]
struct UserFollows {
    /// Every room followed by at least one of the user's sockets, with how many follow it.
    rooms: HashMap<Arc<str>, u32>,
    /// The rooms of each socket.
    conns: Vec<(ConnId, HashSet<Arc<str>>)>,
}

impl UserFollows {
    fn of(&self, conn: ConnId) -> Option<&HashSet<Arc<str>>> {
        self.conns.iter().find(|(c, _)| *c == conn).map(|(_, r)| r)
    }

    /// Refuses when following `rooms` (some maybe followed already) would take the socket or
    /// the user past their caps.
    fn check<'a>(
        &self,
        conn: ConnId,
        rooms: impl Iterator<Item = &'a str>,
        config: &HubConfig,
    ) -> Result<(), FollowRefused> {
        let mine = self.of(conn);
        let mut new_here: HashSet<&str> = HashSet::new();
        let mut new_for_user = 0usize;
        for room in rooms {
            if mine.is_some_and(|m| m.contains(room)) || !new_here.insert(room) {
                continue;
            }
            if !self.rooms.contains_key(room) {
                new_for_user += 1;
            }
        }
        let follows = mine.map_or(0, HashSet::len);
        if follows + new_here.len() > config.max_rooms_per_socket {
            return Err(FollowRefused::Socket {
                follows,
                max: config.max_rooms_per_socket,
            });
        }
        let follows = self.rooms.len();
        if follows + new_for_user > config.max_rooms_per_user {
            return Err(FollowRefused::User {
                follows,
                max: config.max_rooms_per_user,
            });
        }
        Ok(())
    }

    /// Records that the socket follows the room.
    fn add(&mut self, conn: ConnId, room: &Arc<str>) {
        let at = match self.conns.iter().position(|(c, _)| *c == conn) {
            Some(at) => at,
            None => {
                self.conns.push((conn, HashSet::new()));
                self.conns.len() - 1
            }
        };
        if self.conns[at].1.insert(Arc::clone(room)) {
            *self.rooms.entry(Arc::clone(room)).or_insert(0) += 1;
        }
    }

    /// Forgets that the socket follows the room.
    fn remove(&mut self, conn: ConnId, room: &str) {
        let Some(at) = self.conns.iter().position(|(c, _)| *c == conn) else {
            return;
        };
        if self.conns[at].1.remove(room) {
            self.unref(room);
        }
        if self.conns[at].1.is_empty() {
            self.conns.swap_remove(at);
        }
    }

    /// Forgets every room of the socket.
    fn remove_conn(&mut self, conn: ConnId) {
        let Some(at) = self.conns.iter().position(|(c, _)| *c == conn) else {
            return;
        };
        let (_, rooms) = self.conns.swap_remove(at);
        for room in &rooms {
            self.unref(room);
        }
    }

    fn unref(&mut self, room: &str) {
        if let Some(n) = self.rooms.get_mut(room) {
            *n -= 1;
            if *n == 0 {
                self.rooms.remove(room);
            }
        }
    }
}

/// A page of stored events for one socket's catch-up (see [`Hub::stored_after`]).
#[derive(Debug)]
pub struct StoredPage {
    /// The events after the cursor asked for, in seq order.
    pub events: Vec<Arc<LiveEvent>>,
    /// The page covers every stored event up to this seq: a socket with nothing left to send
    /// from it may move its cursor here (the store has nothing in between).
    pub covered: u64,
}

/// Tuning of the hub.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    /// How long a room's line waits for a missing event before reading it from the store.
    pub reorder_window: Duration,
    /// A gap wider than this is filled from the store at once, without waiting out the window.
    pub fill_max: u64,
    /// Most early events a line holds while it waits; past that it fills at once.
    pub pending_max: usize,
    /// Presence changes of a room are sent together at most this often.
    pub presence_interval: Duration,
    /// Most recently released events a room keeps in memory, already encoded, for sockets that
    /// catch up (after lagging, or subscribing from a recent cursor) without reading the store.
    pub recent_events: usize,
    /// ... and at most this many bytes of them per room.
    pub recent_bytes: usize,
    /// Shared catch-up pages (of [`CATCH_UP_PAGE`] stored events) a room keeps for sockets
    /// further behind than its recent events, at most this many ...
    pub catch_up_pages: usize,
    /// ... for at most this long after they were read (stored events are redacted by
    /// retention; a deleted message drops them at once).
    pub catch_up_page_ttl: Duration,
    /// Bytes of encoded events (recent events and catch-up pages) the hub keeps over every
    /// room; past it, it evicts (see the module documentation).
    pub memory_budget: usize,
    /// Most rooms one socket may follow.
    pub max_rooms_per_socket: usize,
    /// Most rooms one user's sockets here may follow together (a room followed by several of
    /// them counts once).
    pub max_rooms_per_user: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            reorder_window: Duration::from_millis(50),
            fill_max: 256,
            pending_max: 1024,
            presence_interval: Duration::from_millis(250),
            recent_events: 1024,
            recent_bytes: 1 << 20,
            catch_up_pages: 8,
            catch_up_page_ttl: Duration::from_secs(10),
            memory_budget: 256 << 20,
            max_rooms_per_socket: 1_000,
            max_rooms_per_user: 2_000,
        }
    }
}

/// A room followed by at least one local socket.
struct Line {
    name: Arc<str>,
    /// When the line last released an event or served a catch-up (ms since the hub started):
    /// eviction trims the least recently active lines first.
    active: AtomicU64,
    state: Mutex<LineState>,
}

struct LineState {
    subs: Vec<Arc<Conn>>,
    /// The last seq released to the sockets.
    released: u64,
    /// Events that arrived before their predecessors, by seq.
    early: BTreeMap<u64, Arc<LiveEvent>>,
    /// The most recently released events, in seq order (with holes where a gap was released
    /// unfilled), and what they count against the budget ([`cost`]).
    recent: VecDeque<Arc<LiveEvent>>,
    recent_bytes: usize,
    /// The line was removed from the registry (its last follower left): it keeps nothing.
    closed: bool,
    /// Shared catch-up pages, least recently used first.
    pages: VecDeque<PageSlot>,
    /// A fill task is scheduled.
    filling: bool,
    /// Presence changes not sent yet, by user.
    presence: HashMap<String, Presence>,
    /// A presence flush is scheduled.
    presence_flush: bool,
    /// The room is too large for presence frames: its members ask for presence on demand.
    presence_off: bool,
    /// Followers who are not active members (a public room read without joining): they get no
    /// presence, as REST shows presence only to users who share a room.
    blind: Vec<ConnId>,
}

#[derive(Default)]
struct Registry {
    rooms: HashMap<Arc<str>, Arc<Line>>,
    users: HashMap<Arc<str>, Vec<Arc<Conn>>>,
    /// Per connected user, the order of the newest unread count delivered.
    unread_order: HashMap<Arc<str>, u64>,
    sockets: usize,
}

/// This instance's socket registry and per-room delivery lines.
pub struct Hub {
    reg: RwLock<Registry>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    config: HubConfig,
    /// Bytes of encoded events kept over every line (recent events and pages).
    held: AtomicUsize,
    /// An eviction pass is running.
    evicting: AtomicBool,
    /// The origin of [`Line::active`].
    started: Instant,
    /// The rooms each connected user's sockets follow (for the follow caps).
    follows: Mutex<HashMap<Arc<str>, UserFollows>>,
    /// Followers of collaborative documents, fed by the same bus.
    collab: Arc<Followers>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.reg.read();
        f.debug_struct("Hub")
            .field("rooms", &r.rooms.len())
            .field("users", &r.users.len())
            .field("sockets", &r.sockets)
            .finish()
    }
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>, store: Arc<dyn Store>, config: HubConfig) -> Self {
        metrics
            .hub_cache_budget_bytes
            .set(config.memory_budget as i64);
        Hub {
            reg: RwLock::new(Registry::default()),
            next_id: AtomicU64::new(1),
            config,
            held: AtomicUsize::new(0),
            evicting: AtomicBool::new(false),
            started: Instant::now(),
            follows: Mutex::new(HashMap::new()),
            collab: Arc::new(Followers::new(
                Arc::clone(&store),
                Arc::clone(&metrics),
                config.reorder_window,
            )),
            metrics,
            store,
        }
    }

    /// The followers of collaborative documents here.
    pub fn collab(&self) -> &Arc<Followers> {
        &self.collab
    }

    /// Bytes of encoded events kept in memory over every room.
    pub fn cached_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn charge(&self, n: usize) {
        if n > 0 {
            let now = self.held.fetch_add(n, Ordering::Relaxed) + n;
            self.metrics.hub_cached_bytes.set(now as i64);
        }
    }

    fn uncharge(&self, n: usize) {
        if n > 0 {
            let now = self.held.fetch_sub(n, Ordering::Relaxed).saturating_sub(n);
            self.metrics.hub_cached_bytes.set(now as i64);
        }
    }

    /// Now, on the clock of [`Line::active`].
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Drops a line's recent events and pages (a deleted message, or the line going away).
    fn drop_cached(&self, st: &mut LineState) {
        let pages: usize = st.pages.drain(..).map(|p| p.charged).sum();
        st.recent.clear();
        self.uncharge(st.recent_bytes + pages);
        st.recent_bytes = 0;
    }

    /// Whether `conn` may follow every room of `rooms` (those it follows already cost nothing)
    /// without going past the socket's or its user's cap. Checked for a whole `subscribe`
    /// before anything is read; [`Hub::follow`] checks each room again.
    pub fn admit(&self, conn: &Conn, rooms: &[&str]) -> Result<(), FollowRefused> {
        let follows = self.follows.lock();
        match follows.get(&conn.user) {
            Some(f) => f.check(conn.id, rooms.iter().copied(), &self.config),
            None => UserFollows::default().check(conn.id, rooms.iter().copied(), &self.config),
        }
    }

    /// Sweeps expired catch-up pages out of every line, then evicts if the hub is over its
    /// memory budget. Run every second.
    pub fn sweep(&self) {
        let lines: Vec<Arc<Line>> = self.reg.read().rooms.values().cloned().collect();
        let ttl = self.config.catch_up_page_ttl;
        let mut expired = 0u64;
        for line in lines {
            let mut st = line.state.lock();
            expired += self.expire_pages(&mut st, ttl);
        }
        if expired > 0 {
            self.metrics.hub_evicted("expired_page", expired);
        }
        self.enforce_budget();
    }

    /// Drops the line's pages older than `ttl`; returns how many.
    fn expire_pages(&self, st: &mut LineState, ttl: Duration) -> u64 {
        let mut freed = 0usize;
        let mut n = 0u64;
        st.pages.retain(|p| {
            let keep = p.made.elapsed() < ttl;
            if !keep {
                freed += p.charged;
                n += 1;
            }
            keep
        });
        self.uncharge(freed);
        n
    }

    /// Evicts when the hub holds more than its budget. Called with no line locked.
    pub fn enforce_budget(&self) {
        if self.cached_bytes() <= self.config.memory_budget {
            return;
        }
        if self.evicting.swap(true, Ordering::AcqRel) {
            // Another thread is at it.
            return;
        }
        self.evict(self.config.memory_budget / 8 * 7);
        self.evicting.store(false, Ordering::Release);
    }

    /// Evicts down to `target` bytes: catch-up pages first, least recently used across every
    /// line, then the oldest recent events of the least recently active lines. What goes is
    /// read from the store again by whoever needs it.
    fn evict(&self, target: usize) {
        let started = Instant::now();
        let lines: Vec<Arc<Line>> = self.reg.read().rooms.values().cloned().collect();
        let mut pages: Vec<(Instant, usize, u64)> = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let st = line.state.lock();
            // A page still being read holds nothing yet.
            pages.extend(
                st.pages
                    .iter()
                    .filter(|p| p.charged > 0)
                    .map(|p| (p.used, i, p.index)),
            );
        }
        pages.sort_unstable_by_key(|p| p.0);
        let mut pages_out = 0u64;
        for (_, i, index) in pages {
            if self.cached_bytes() <= target {
                break;
            }
            let mut st = lines[i].state.lock();
            if let Some(at) = st.pages.iter().position(|p| p.index == index) {
                if let Some(slot) = st.pages.remove(at) {
                    self.uncharge(slot.charged);
                    pages_out += 1;
                }
            }
        }
        let mut events_out = 0u64;
        if self.cached_bytes() > target {
            let mut order: Vec<(u64, usize)> = lines
                .iter()
                .enumerate()
                .map(|(i, l)| (l.active.load(Ordering::Relaxed), i))
                .collect();
            order.sort_unstable();
            for (_, i) in order {
                if self.cached_bytes() <= target {
                    break;
                }
                let mut st = lines[i].state.lock();
                while self.cached_bytes() > target {
                    let Some(old) = st.recent.pop_front() else {
                        break;
                    };
                    let c = cost(&old);
                    st.recent_bytes -= c;
                    self.uncharge(c);
                    events_out += 1;
                }
            }
        }
        self.metrics.hub_evicted("page", pages_out);
        self.metrics.hub_evicted("event", events_out);
        tracing::debug!(
            pages = pages_out,
            events = events_out,
            held = self.cached_bytes(),
            took_us = started.elapsed().as_micros() as u64,
            "hub: evicted to stay within its memory budget"
        );
    }

    pub fn next_conn_id(&self) -> ConnId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a socket; returns how many sockets the user now has.
    pub fn connect(&self, conn: &Arc<Conn>) -> usize {
        let mut r = self.reg.write();
        r.sockets += 1;
        let mine = r.users.entry(conn.user.clone()).or_default();
        mine.push(Arc::clone(conn));
        mine.len()
    }

    /// Sockets of `user` here, and sockets in total.
    pub fn socket_counts(&self, user: &str) -> (usize, usize) {
        let r = self.reg.read();
        (r.users.get(user).map_or(0, Vec::len), r.sockets)
    }

    /// Forgets a socket everywhere (`rooms`: the rooms it followed); returns how many sockets
    /// the user still has.
    pub fn disconnect(&self, conn: &Conn, rooms: &[Arc<str>]) -> usize {
        for room in rooms {
            self.unfollow(room, conn);
        }
        {
            let mut follows = self.follows.lock();
            if let Some(f) = follows.get_mut(&conn.user) {
                f.remove_conn(conn.id);
                if f.conns.is_empty() {
                    follows.remove(&conn.user);
                }
            }
        }
        let mut r = self.reg.write();
        r.sockets = r.sockets.saturating_sub(1);
        let left = match r.users.get_mut(&conn.user) {
            Some(mine) => {
                mine.retain(|c| c.id != conn.id);
                mine.len()
            }
            None => 0,
        };
        if left == 0 {
            r.users.remove(&conn.user);
            r.unread_order.remove(&conn.user);
        }
        left
    }

    /// Adds the socket to the room's followers, unless that takes the socket or its user past
    /// their caps. `head` is the room's newest seq as the caller read it from the store before
    /// following: a line made now starts there. `presence`: the room is small enough for
    /// presence frames (as of this subscription); `member`: the socket's user is an active
    /// member, who may see the members' presence.
    pub fn follow(
        &self,
        room: &str,
        conn: &Arc<Conn>,
        head: u64,
        presence: bool,
        member: bool,
    ) -> Result<Arc<str>, FollowRefused> {
        {
            let mut follows = self.follows.lock();
            let mine = follows.entry(Arc::clone(&conn.user)).or_default();
            mine.check(conn.id, std::iter::once(room), &self.config)?;
            mine.add(conn.id, &Arc::from(room));
        }
        loop {
            let line = {
                let existing = self.reg.read().rooms.get(room).cloned();
                match existing {
                    Some(l) => l,
                    None => {
                        let mut r = self.reg.write();
                        let line = r
                            .rooms
                            .entry(Arc::from(room))
                            .or_insert_with_key(|name| {
                                Arc::new(Line {
                                    name: Arc::clone(name),
                                    active: AtomicU64::new(self.now_ms()),
                                    state: Mutex::new(LineState {
                                        subs: Vec::new(),
                                        released: head,
                                        early: BTreeMap::new(),
                                        recent: VecDeque::new(),
                                        recent_bytes: 0,
                                        closed: false,
                                        pages: VecDeque::new(),
                                        filling: false,
                                        presence: HashMap::new(),
                                        presence_flush: false,
                                        presence_off: !presence,
                                        blind: Vec::new(),
                                    }),
                                })
                            })
                            .clone();
                        self.metrics.rooms_active.set(r.rooms.len() as i64);
                        line
                    }
                }
            };
            let mut st = line.state.lock();
            if st.closed {
                // Its last follower left between the lookup and the lock: it is out of the
                // registry, so look again (a new line is made).
                continue;
            }
            st.presence_off = !presence;
            if !st.subs.iter().any(|c| c.id == conn.id) {
                st.subs.push(Arc::clone(conn));
            }
            st.blind.retain(|id| *id != conn.id);
            if !member {
                st.blind.push(conn.id);
            }
            return Ok(Arc::clone(&line.name));
        }
    }

    /// Removes the socket from the room's followers; the line goes with its last follower, and
    /// what it kept in memory with it.
    pub fn unfollow(&self, room: &str, conn: &Conn) {
        {
            let mut follows = self.follows.lock();
            if let Some(f) = follows.get_mut(&conn.user) {
                f.remove(conn.id, room);
            }
        }
        let id = conn.id;
        let Some(line) = self.reg.read().rooms.get(room).cloned() else {
            return;
        };
        let empty = {
            let mut st = line.state.lock();
            st.subs.retain(|c| c.id != id);
            st.blind.retain(|b| *b != id);
            st.subs.is_empty()
        };
        if empty {
            let mut r = self.reg.write();
            // Re-checked under the registry lock: a follower may have come in between.
            let gone = r.rooms.get(room).is_some_and(|l| {
                let mut st = l.state.lock();
                if st.subs.is_empty() {
                    st.closed = true;
                    self.drop_cached(&mut st);
                    true
                } else {
                    false
                }
            });
            if gone {
                r.rooms.remove(room);
            }
            self.metrics.rooms_active.set(r.rooms.len() as i64);
        }
    }

    /// Brings every room followed here up to the store's head, after the bus may have lost
    /// events: each room is read once, from the seq it last released, for all its sockets.
    /// Returns the events read.
    pub async fn resync(self: &Arc<Self>) -> u64 {
        let lines: Vec<Arc<Line>> = self.reg.read().rooms.values().cloned().collect();
        let mut read = 0u64;
        for line in lines {
            loop {
                let after = line.state.lock().released;
                let page = match self.store.events_after(&line.name, after, FILL_PAGE).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, room = %line.name, "hub: resync read failed");
                        break;
                    }
                };
                if page.is_empty() {
                    break;
                }
                read += page.len() as u64;
                self.metrics.hub_gap_fills.inc();
                self.metrics.events_filled.inc_by(page.len() as u64);
                let released = {
                    let mut st = line.state.lock();
                    for e in &page {
                        let live = Arc::new(LiveEvent::new(Arc::clone(&line.name), e));
                        self.sequence(&line, &mut st, live);
                    }
                    st.released
                };
                self.enforce_budget();
                if released == after {
                    // The store's next event is not the one after `after` (compacted away):
                    // the line's own fill deals with that gap.
                    break;
                }
            }
        }
        read
    }

    /// Gives back the registry's room for sockets, users and rooms that are gone; returns the
    /// users connected here.
    pub fn shrink(&self) -> HashSet<Arc<str>> {
        let mut r = self.reg.write();
        r.users.shrink_to_fit();
        r.unread_order.shrink_to_fit();
        r.rooms.shrink_to_fit();
        self.follows.lock().shrink_to_fit();
        r.users.keys().cloned().collect()
    }

    /// Sockets connected right now.
    pub fn connection_count(&self) -> usize {
        self.reg.read().sockets
    }

    /// Every socket (for shutdown).
    /// Closes every socket of `user` here with `code`; answers how many.
    pub fn close_user(&self, user: &str, code: u16) -> usize {
        let r = self.reg.read();
        let mine = r.users.get(user).map_or(&[][..], |m| m.as_slice());
        for c in mine {
            c.close_with(code);
        }
        mine.len()
    }

    pub fn all(&self) -> Vec<Arc<Conn>> {
        self.reg
            .read()
            .users
            .values()
            .flat_map(|m| m.iter().cloned())
            .collect()
    }

    /// The newest seq released to the sockets of `room` here, if anyone follows it.
    #[cfg(test)]
    fn released(&self, room: &str) -> Option<u64> {
        let line = self.reg.read().rooms.get(room).cloned()?;
        let released = line.state.lock().released;
        Some(released)
    }

    /// The events of `room` after `after` (at most `max`) from its recent events, when this hub
    /// holds every one of them: `Some` (empty once `after` reaches what the room released; newer
    /// events reach its followers through their queues), or `None` when the store must be read.
    pub fn recent_after(&self, room: &str, after: u64, max: usize) -> Option<Vec<Arc<LiveEvent>>> {
        let line = self.line(room)?;
        let st = line.state.lock();
        if after >= st.released {
            return Some(Vec::new());
        }
        line.active.store(self.now_ms(), Ordering::Relaxed);
        if st.recent.front()?.seq > after + 1 {
            return None;
        }
        let start = st.recent.partition_point(|e| e.seq <= after);
        let mut out = Vec::with_capacity((st.released - after).min(max as u64) as usize);
        for (ev, want) in st.recent.range(start..).zip(after + 1..) {
            if ev.seq != want {
                // A gap released unfilled: those are only in the store.
                return None;
            }
            out.push(Arc::clone(ev));
            if out.len() >= max {
                break;
            }
        }
        Some(out)
    }

    /// The room's stored events after `after`, for a socket further behind than the room's
    /// recent events. A page whose events were all released here is read from the store and
    /// encoded once for every socket of the room that needs it (so sockets that fall behind
    /// together cost one read, not one each); others (a room nobody follows here, the page
    /// at the head) are read for this socket alone.
    pub async fn stored_after(&self, room: &Arc<str>, after: u64) -> StoreResult<StoredPage> {
        let index = after / CATCH_UP_PAGE;
        let first = index * CATCH_UP_PAGE;
        let last = first + CATCH_UP_PAGE;
        let line = self.line(room);
        let cell = line.as_ref().and_then(|line| {
            let mut st = line.state.lock();
            if last > st.released || st.closed {
                return None;
            }
            line.active.store(self.now_ms(), Ordering::Relaxed);
            let expired = self.expire_pages(&mut st, self.config.catch_up_page_ttl);
            if expired > 0 {
                self.metrics.hub_evicted("expired_page", expired);
            }
            let cell = match st.pages.iter().position(|p| p.index == index) {
                Some(at) => {
                    let mut slot = st.pages.remove(at)?;
                    slot.used = Instant::now();
                    let cell = Arc::clone(&slot.cell);
                    st.pages.push_back(slot);
                    cell
                }
                None => {
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    let now = Instant::now();
                    st.pages.push_back(PageSlot {
                        index,
                        made: now,
                        used: now,
                        charged: 0,
                        cell: Arc::clone(&cell),
                    });
                    let mut freed = 0usize;
                    while st.pages.len() > self.config.catch_up_pages.max(1) {
                        freed += st.pages.pop_front().map_or(0, |p| p.charged);
                    }
                    self.uncharge(freed);
                    cell
                }
            };
            Some(cell)
        });
        let Some(cell) = cell else {
            let list = self
                .store
                .events_after(room, after, CATCH_UP_PAGE as u32)
                .await?;
            let covered = list.last().map_or(after, |e| e.seq);
            return Ok(StoredPage {
                events: list
                    .iter()
                    .map(|e| Arc::new(LiveEvent::new(Arc::clone(room), e)))
                    .collect(),
                covered,
            });
        };
        let mut made = false;
        let page = cell
            .get_or_try_init(|| async {
                made = true;
                self.metrics.catch_up_pages_read.inc();
                let list = self
                    .store
                    .events_after(room, first, CATCH_UP_PAGE as u32)
                    .await?;
                Ok::<Page, StoreError>(
                    list.iter()
                        .filter(|e| e.seq <= last)
                        .map(|e| Arc::new(LiveEvent::new(Arc::clone(room), e)))
                        .collect(),
                )
            })
            .await?;
        if made {
            self.charge_page(line.as_deref(), &cell, page);
        }
        let start = page.partition_point(|e| e.seq <= after);
        Ok(StoredPage {
            events: page[start..].to_vec(),
            covered: last,
        })
    }

    /// Counts a page just read against the budget, if its line still keeps it.
    fn charge_page(
        &self,
        line: Option<&Line>,
        cell: &Arc<tokio::sync::OnceCell<Page>>,
        page: &Page,
    ) {
        let Some(line) = line else {
            return;
        };
        let bytes: usize = page.iter().map(|e| cost(e)).sum::<usize>() + size_of::<PageSlot>();
        {
            let mut st = line.state.lock();
            if st.closed {
                return;
            }
            let Some(slot) = st
                .pages
                .iter_mut()
                .find(|p| Arc::ptr_eq(&p.cell, cell) && p.charged == 0)
            else {
                // Dropped (evicted, expired or redacted) while it was read.
                return;
            };
            slot.charged = bytes;
            self.charge(bytes);
        }
        self.enforce_budget();
    }

    fn line(&self, room: &str) -> Option<Arc<Line>> {
        self.reg.read().rooms.get(room).cloned()
    }

    /// Delivers a bus message to the local sockets it concerns.
    pub fn dispatch(self: &Arc<Self>, msg: BusMessage) {
        match msg {
            BusMessage::Event(ev) => self.dispatch_event(&ev),
            BusMessage::Typing {
                room,
                user,
                typing,
                origin,
            } => {
                let Some(line) = self.line(&room) else {
                    return;
                };
                let frame = encode(&ServerFrame::Typing {
                    room: room.clone(),
                    user,
                    typing,
                });
                let st = line.state.lock();
                for c in st.subs.iter().filter(|c| Some(c.id) != origin) {
                    c.push(Outbound::Frame(frame.clone()), &self.metrics);
                }
            }
            BusMessage::Presence { presence, rooms } => {
                for room in &rooms {
                    if let Some(line) = self.line(room) {
                        self.queue_presence(&line, presence.clone());
                    }
                }
            }
            BusMessage::Notification { user, notification } => {
                let frame = encode(&ServerFrame::Notification(*notification));
                self.to_user(&user, &frame);
            }
            BusMessage::Unread { user, count, order } => {
                {
                    let mut r = self.reg.write();
                    // Only users connected here are tracked, so the map stays bounded.
                    let Some(key) = r.users.get_key_value(user.as_str()).map(|(k, _)| k.clone())
                    else {
                        return;
                    };
                    let last = r.unread_order.entry(key).or_insert(0);
                    if order <= *last {
                        return;
                    }
                    *last = order;
                }
                let frame = encode(&ServerFrame::Unread { count });
                self.to_user(&user, &frame);
            }
            BusMessage::ReadMarker { user, marker } => {
                self.to_user(&user, &encode(&ServerFrame::ReadMarker(marker)));
            }
            BusMessage::Membership { user, change } => {
                self.to_user(&user, &encode(&ServerFrame::Membership(*change)));
            }
            BusMessage::CollabUpdate(p) => self.collab.dispatch_update(&p),
            BusMessage::Awareness { update, origin } => {
                self.collab.dispatch_awareness(&update, origin)
            }
            BusMessage::Invalidate { .. } | BusMessage::UserChanged { .. } => {}
        }
    }

    fn to_user(&self, user: &str, frame: &WireFrame) {
        let r = self.reg.read();
        if let Some(mine) = r.users.get(user) {
            for c in mine {
                c.push(Outbound::Frame(frame.clone()), &self.metrics);
            }
        }
    }

    fn dispatch_event(self: &Arc<Self>, ev: &RoomEvent) {
        self.collab.room_event(ev);
        let Some(line) = self.line(&ev.room) else {
            return;
        };
        let live = Arc::new(LiveEvent::new(Arc::clone(&line.name), ev));
        line.active.store(self.now_ms(), Ordering::Relaxed);
        {
            let mut st = line.state.lock();
            self.sequence(&line, &mut st, live);
        }
        self.enforce_budget();
    }

    /// Puts one event on its room's line: released at once if it is the next one, held if it
    /// came early, dropped if it was released before.
    fn sequence(self: &Arc<Self>, line: &Arc<Line>, st: &mut LineState, ev: Arc<LiveEvent>) {
        if ev.seq <= st.released {
            self.metrics.events_duplicate.inc();
            return;
        }
        if ev.seq == st.released + 1 {
            self.release(st, &ev);
            self.release_ready(st);
            return;
        }
        st.early.insert(ev.seq, ev);
        if !st.filling {
            st.filling = true;
            // A wide gap (a batch import publishes only its last event) or a full buffer is
            // not worth waiting for.
            let wait = if st.early.len() > self.config.pending_max
                || st
                    .early
                    .first_key_value()
                    .is_some_and(|(&first, _)| first - st.released > self.config.fill_max)
            {
                Duration::ZERO
            } else {
                self.config.reorder_window
            };
            let hub = Arc::clone(self);
            let line = Arc::clone(line);
            tokio::spawn(async move { hub.fill(line, wait).await });
        }
    }

    /// Releases held events while they follow on.
    fn release_ready(&self, st: &mut LineState) {
        while let Some(entry) = st.early.first_entry() {
            if *entry.key() > st.released + 1 {
                break;
            }
            let ev = entry.remove();
            if ev.seq == st.released + 1 {
                self.release(st, &ev);
            }
        }
    }

    /// Releases every held event in order, gaps and all.
    fn release_all(&self, st: &mut LineState) {
        while let Some((_, ev)) = st.early.pop_first() {
            if ev.seq > st.released {
                self.release(st, &ev);
            }
        }
    }

    /// Queues the event on every follower and keeps it among the room's recent events.
    fn release(&self, st: &mut LineState, ev: &Arc<LiveEvent>) {
        let started = Instant::now();
        st.released = ev.seq;
        if ev.redacts {
            // The recent events and shared pages may hold the deleted message's text: sockets
            // that need anything older read the redacted form from the store.
            self.drop_cached(st);
        }
        if !st.closed {
            let c = cost(ev);
            st.recent.push_back(Arc::clone(ev));
            st.recent_bytes += c;
            let mut freed = 0usize;
            while st.recent.len() > self.config.recent_events
                || (st.recent_bytes > self.config.recent_bytes && st.recent.len() > 1)
            {
                if let Some(old) = st.recent.pop_front() {
                    let oc = cost(&old);
                    st.recent_bytes -= oc;
                    freed += oc;
                }
            }
            if c >= freed {
                self.charge(c - freed);
            } else {
                self.uncharge(freed - c);
            }
        }
        let mut delivered = 0u64;
        let mut skipped = 0u64;
        for c in &st.subs {
            if c.offer_event(ev) {
                delivered += 1;
            } else {
                skipped += 1;
            }
        }
        self.metrics.events_delivered.inc_by(delivered);
        if skipped > 0 {
            self.metrics.events_skipped_lagging.inc_by(skipped);
        }
        self.metrics
            .bytes_out
            .inc_by(delivered * ev.frame.len() as u64);
        self.metrics
            .fanout_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// Waits out the reorder window, then reads what is still missing from the store, once for
    /// every socket of the room, page by page.
    async fn fill(self: Arc<Self>, line: Arc<Line>, wait: Duration) {
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        loop {
            let (after, upto) = {
                let mut st = line.state.lock();
                self.release_ready(&mut st);
                match st.early.first_key_value() {
                    Some((&first, _)) if first > st.released + 1 => (st.released, first - 1),
                    _ => {
                        st.filling = false;
                        return;
                    }
                }
            };
            self.metrics.hub_gap_fills.inc();
            let limit = u32::try_from(upto - after)
                .unwrap_or(u32::MAX)
                .min(FILL_PAGE);
            let read = self.store.events_after(&line.name, after, limit).await;
            let events: Vec<Arc<LiveEvent>> = match read {
                Ok(list) => list
                    .iter()
                    .filter(|e| e.seq <= upto)
                    .map(|e| Arc::new(LiveEvent::new(Arc::clone(&line.name), e)))
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, room = %line.name, "hub: could not fill a gap");
                    Vec::new()
                }
            };
            let more = {
                let mut st = line.state.lock();
                self.take_filled(&mut st, after, events)
            };
            self.enforce_budget();
            if !more {
                return;
            }
        }
    }

    /// Releases the events a fill read from the store after `after`; false when the fill is
    /// over (the line then released every held event, gap and all).
    ///
    /// The line may have moved on while the store was read: live events can have filled the
    /// gap, and a new gap opened behind events that came early since. That is progress, not a
    /// sign the store lacks the events: only a read that leaves the line where it was, still
    /// waiting, is.
    fn take_filled(&self, st: &mut LineState, after: u64, events: Vec<Arc<LiveEvent>>) -> bool {
        self.metrics.events_filled.inc_by(events.len() as u64);
        for ev in events {
            if ev.seq == st.released + 1 {
                self.release(st, &ev);
            }
        }
        self.release_ready(st);
        let waiting = st
            .early
            .first_key_value()
            .is_some_and(|(&first, _)| first > st.released + 1);
        if !waiting {
            st.filling = false;
            return false;
        }
        if st.released > after {
            return true;
        }
        // The store does not have them (removed by retention, or a read failed): go on
        // without them; a socket that needs them reads the store itself.
        self.metrics.hub_gaps_skipped.inc();
        self.release_all(st);
        st.filling = false;
        false
    }

    fn queue_presence(self: &Arc<Self>, line: &Arc<Line>, presence: Presence) {
        let mut st = line.state.lock();
        if st.presence_off {
            return;
        }
        st.presence.insert(presence.user.clone(), presence);
        if !st.presence_flush {
            st.presence_flush = true;
            let hub = Arc::clone(self);
            let line = Arc::clone(line);
            tokio::spawn(async move {
                tokio::time::sleep(hub.config.presence_interval).await;
                hub.flush_presence(&line);
            });
        }
    }

    /// Sends a room's collected presence changes as one frame to each follower.
    fn flush_presence(&self, line: &Line) {
        let mut st = line.state.lock();
        st.presence_flush = false;
        if st.presence.is_empty() {
            return;
        }
        let mut presences: Vec<Presence> = st.presence.drain().map(|(_, p)| p).collect();
        presences.sort_by(|a, b| a.user.cmp(&b.user));
        let frame = encode(&ServerFrame::PresenceDiff {
            room: line.name.to_string(),
            presences,
        });
        let mut sent = 0u64;
        for c in st.subs.iter().filter(|c| !st.blind.contains(&c.id)) {
            c.push(Outbound::Frame(frame.clone()), &self.metrics);
            sent += 1;
        }
        self.metrics.presence_frames.inc_by(sent);
    }
}

impl Deliver for Hub {
    fn deliver(self: Arc<Self>, msg: BusMessage) {
        self.dispatch(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use std::collections::VecDeque;

    fn event(room: &str, seq: u64) -> RoomEvent {
        RoomEvent {
            room: room.into(),
            seq,
            at: 0,
            actor: "a".into(),
            body: roam_proto::EventBody::MemberLeft { user: "x".into() },
        }
    }

    async fn hub(window_ms: u64) -> (Arc<Hub>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("t.db"), 1)
            .await
            .expect("store");
        let config = HubConfig {
            reorder_window: Duration::from_millis(window_ms),
            ..HubConfig::default()
        };
        (
            Arc::new(Hub::new(Arc::new(Metrics::new()), Arc::new(store), config)),
            dir,
        )
    }

    fn seqs(conn: &Conn) -> Vec<u64> {
        let mut q = VecDeque::new();
        conn.take(&mut q);
        q.into_iter()
            .filter_map(|o| match o {
                Outbound::Event(e) => Some(e.seq),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn events_leave_in_seq_order_whatever_order_they_arrive_in() {
        let (hub, _dir) = hub(60_000).await;
        let c = Conn::new(1, Arc::from("u"), 64, 0);
        hub.follow("r", &c, 10, true, true).expect("follow");
        for s in [13, 12, 11, 10, 14] {
            hub.dispatch(BusMessage::Event(Arc::new(event("r", s))));
        }
        assert_eq!(seqs(&c), vec![11, 12, 13, 14]);
        assert_eq!(hub.released("r"), Some(14));
        assert_eq!(hub.metrics.events_duplicate.get(), 1, "10 was already out");
    }

    #[tokio::test]
    async fn a_fill_overtaken_by_live_events_keeps_waiting_for_the_next_gap() {
        let (hub, _dir) = hub(60_000).await;
        let c = Conn::new(1, Arc::from("u"), 64, 0);
        hub.follow("r", &c, 0, true, true).expect("follow");
        let line = hub.line("r").expect("line");
        let live = |s: u64| Arc::new(LiveEvent::new(Arc::from("r"), &event("r", s)));
        // A fill read the store after seq 0 and found 1; meanwhile 1 and 2 arrived live and
        // 4 came early (3 is on its way).
        hub.dispatch(BusMessage::Event(Arc::new(event("r", 1))));
        hub.dispatch(BusMessage::Event(Arc::new(event("r", 2))));
        hub.dispatch(BusMessage::Event(Arc::new(event("r", 4))));
        let mut st = line.state.lock();
        assert!(
            hub.take_filled(&mut st, 0, vec![live(1)]),
            "the line moved on: read again from where it is"
        );
        assert_eq!(st.released, 2, "4 still waits for 3");
        assert_eq!(hub.metrics.hub_gaps_skipped.get(), 0);
        // A read that finds nothing new while the line has not moved: the store lacks 3.
        assert!(!hub.take_filled(&mut st, 2, Vec::new()));
        assert_eq!(st.released, 4);
        assert_eq!(hub.metrics.hub_gaps_skipped.get(), 1);
        drop(st);
        assert_eq!(seqs(&c), vec![1, 2, 4]);
    }

    #[tokio::test]
    async fn a_missing_event_is_read_from_the_store_once_for_the_room() {
        let (hub, _dir) = hub(10).await;
        let a = Conn::new(1, Arc::from("u"), 64, 0);
        let b = Conn::new(2, Arc::from("v"), 64, 0);
        hub.follow("r", &a, 0, true, true).expect("follow");
        hub.follow("r", &b, 0, true, true).expect("follow");
        // seq 1 never comes and the store does not have it either: after the window the hub
        // tries the store once, then goes on.
        hub.dispatch(BusMessage::Event(Arc::new(event("r", 2))));
        assert!(seqs(&a).is_empty(), "held while 1 is missing");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(seqs(&a), vec![2]);
        assert_eq!(seqs(&b), vec![2]);
        assert_eq!(
            hub.metrics.hub_gap_fills.get(),
            1,
            "one store read for both sockets"
        );
    }

    #[tokio::test]
    async fn a_gap_wider_than_the_fill_limit_is_filled_without_waiting() {
        let (hub, _dir) = hub(60_000).await;
        let a = Conn::new(1, Arc::from("u"), 64, 0);
        hub.follow("r", &a, 0, true, true).expect("follow");
        hub.dispatch(BusMessage::Event(Arc::new(event("r", 1_000))));
        // The window is a minute; the store (empty here) is asked at once, then the gap goes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(seqs(&a), vec![1_000]);
        assert_eq!(hub.metrics.hub_gap_fills.get(), 1);
    }

    #[tokio::test]
    async fn recent_events_serve_catch_up_until_they_no_longer_cover_it() {
        let (hub, _dir) = hub(60_000).await;
        let c = Conn::new(1, Arc::from("u"), 4096, 0);
        hub.follow("r", &c, 0, true, true).expect("follow");
        for s in 1..=1_100 {
            hub.dispatch(BusMessage::Event(Arc::new(event("r", s))));
        }
        let got = hub.recent_after("r", 1_000, 50).expect("covered");
        assert_eq!(
            got.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1_001..=1_050).collect::<Vec<_>>()
        );
        assert_eq!(hub.recent_after("r", 1_100, 50).map(|v| v.len()), Some(0));
        assert!(
            hub.recent_after("r", 10, 50).is_none(),
            "only the newest 1,024 are kept"
        );
        // A gap released unfilled is a hole the store must fill.
        hub.dispatch(BusMessage::Event(Arc::new(event("r", 2_000))));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(hub.recent_after("r", 1_090, 50).is_none());
        assert_eq!(hub.recent_after("r", 2_000, 50).map(|v| v.len()), Some(0));
    }

    /// A message event whose frame is about `len` bytes.
    fn message(room: &str, seq: u64, len: usize) -> RoomEvent {
        RoomEvent {
            room: room.into(),
            seq,
            at: 0,
            actor: "a".into(),
            body: roam_proto::EventBody::MessageCreated(roam_proto::Message {
                id: format!("m{seq}"),
                room: room.into(),
                seq,
                sender: "a".into(),
                body: "x".repeat(len),
                reply_to: None,
                created_at: 0,
                edited_at: None,
                deleted: false,
                attachment: None,
            }),
        }
    }

    async fn hub_with(config: HubConfig) -> (Arc<Hub>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("t.db"), 1)
            .await
            .expect("store");
        (
            Arc::new(Hub::new(Arc::new(Metrics::new()), Arc::new(store), config)),
            dir,
        )
    }

    /// What the lines really hold, summed: the gauge must match it.
    fn held_by_lines(hub: &Hub) -> usize {
        let lines: Vec<Arc<Line>> = hub.reg.read().rooms.values().cloned().collect();
        lines
            .iter()
            .map(|l| {
                let st = l.state.lock();
                st.recent.iter().map(|e| cost(e)).sum::<usize>()
                    + st.pages.iter().map(|p| p.charged).sum::<usize>()
            })
            .sum()
    }

    #[tokio::test]
    async fn many_followed_rooms_stay_within_the_memory_budget() {
        let budget = 512 * 1024;
        let (hub, _dir) = hub_with(HubConfig {
            reorder_window: Duration::from_secs(60),
            memory_budget: budget,
            ..HubConfig::default()
        })
        .await;
        let c = Conn::new(1, Arc::from("u"), 64, 0);
        // 150 rooms, each well under its own 1 MiB of recent events: 150 × 20 × 4 KiB, about
        // 12 MiB without a global budget.
        for r in 0..150 {
            hub.follow(&format!("r{r}"), &c, 0, true, true)
                .expect("follow");
        }
        for seq in 1..=20 {
            for r in 0..150 {
                hub.dispatch(BusMessage::Event(Arc::new(message(
                    &format!("r{r}"),
                    seq,
                    4096,
                ))));
            }
            let mut q = VecDeque::new();
            c.take(&mut q);
        }
        let held = hub.cached_bytes();
        assert!(held <= budget, "the hub holds {held} bytes, over {budget}");
        assert_eq!(
            held,
            held_by_lines(&hub),
            "the gauge counts what the lines hold"
        );
        assert_eq!(hub.metrics.hub_cached_bytes.get(), held as i64);
        let evicted = hub
            .metrics
            .hub_evictions
            .get_or_create(&crate::metrics::KindLabel {
                kind: "event".into(),
            })
            .get();
        assert!(evicted > 0);
        // The most recently active room kept its newest events; the least recently active
        // ones gave theirs up (a socket catching up there reads the store).
        assert!(hub
            .recent_after("r149", 19, 10)
            .is_some_and(|v| v.len() == 1));
        assert!(hub.recent_after("r0", 10, 10).is_none());
        // A room nobody follows any more gives its memory back.
        for r in 0..150 {
            hub.unfollow(&format!("r{r}"), &c);
        }
        assert_eq!(hub.cached_bytes(), 0);
    }

    #[tokio::test]
    async fn catch_up_pages_expire_without_their_room_being_read_again() {
        let (hub, _dir) = hub_with(HubConfig {
            reorder_window: Duration::from_secs(60),
            catch_up_page_ttl: Duration::from_millis(50),
            ..HubConfig::default()
        })
        .await;
        let c = Conn::new(1, Arc::from("u"), 64, 0);
        let room = hub
            .follow("r", &c, 2 * CATCH_UP_PAGE, true, true)
            .expect("follow");
        hub.stored_after(&room, 0).await.expect("page");
        assert_eq!(hub.line("r").expect("line").state.lock().pages.len(), 1);
        assert!(hub.cached_bytes() > 0, "the page counts");
        tokio::time::sleep(Duration::from_millis(100)).await;
        hub.sweep();
        assert!(hub.line("r").expect("line").state.lock().pages.is_empty());
        assert_eq!(hub.cached_bytes(), 0);
        let expired = hub
            .metrics
            .hub_evictions
            .get_or_create(&crate::metrics::KindLabel {
                kind: "expired_page".into(),
            })
            .get();
        assert_eq!(expired, 1);
    }

    #[tokio::test]
    async fn pages_go_first_least_recently_used_across_rooms() {
        let (hub, _dir) = hub_with(HubConfig {
            reorder_window: Duration::from_secs(60),
            ..HubConfig::default()
        })
        .await;
        let c = Conn::new(1, Arc::from("u"), 64, 0);
        let a = hub
            .follow("a", &c, 2 * CATCH_UP_PAGE, true, true)
            .expect("follow");
        let b = hub
            .follow("b", &c, 2 * CATCH_UP_PAGE, true, true)
            .expect("follow");
        hub.stored_after(&a, 0).await.expect("page");
        hub.stored_after(&b, 0).await.expect("page");
        hub.dispatch(BusMessage::Event(Arc::new(message(
            "a",
            2 * CATCH_UP_PAGE + 1,
            100,
        ))));
        let before = hub.cached_bytes();
        // Just under what is held: one page (the older, a's) must go, and nothing else.
        hub.evict(before - 1);
        assert!(hub.line("a").expect("a").state.lock().pages.is_empty());
        assert_eq!(hub.line("b").expect("b").state.lock().pages.len(), 1);
        assert_eq!(hub.line("a").expect("a").state.lock().recent.len(), 1);
        assert_eq!(hub.cached_bytes(), held_by_lines(&hub));
    }

    #[tokio::test]
    async fn follows_are_capped_per_socket_and_per_user() {
        let (hub, _dir) = hub_with(HubConfig {
            max_rooms_per_socket: 3,
            max_rooms_per_user: 4,
            ..HubConfig::default()
        })
        .await;
        let a = Conn::new(1, Arc::from("u"), 64, 0);
        let b = Conn::new(2, Arc::from("u"), 64, 0);
        let other = Conn::new(3, Arc::from("v"), 64, 0);
        for r in ["r1", "r2", "r3"] {
            hub.follow(r, &a, 0, true, true).expect("under the cap");
        }
        hub.follow("r1", &a, 0, true, true)
            .expect("following a room again costs nothing");
        assert!(matches!(
            hub.follow("r4", &a, 0, true, true),
            Err(FollowRefused::Socket { follows: 3, max: 3 })
        ));
        assert!(matches!(
            hub.admit(&a, &["r1", "r4"]),
            Err(FollowRefused::Socket { .. })
        ));
        assert!(hub.admit(&a, &["r1", "r2"]).is_ok());
        // The user's other socket: rooms the first one follows count once.
        for r in ["r1", "r2", "r4"] {
            hub.follow(r, &b, 0, true, true)
                .expect("four distinct rooms");
        }
        hub.unfollow("r1", &b);
        assert!(
            matches!(
                hub.follow("r5", &b, 0, true, true),
                Err(FollowRefused::User { follows: 4, max: 4 })
            ),
            "r1 is still followed by the first socket"
        );
        hub.follow("r5", &other, 0, true, true)
            .expect("another user has caps of their own");
        hub.disconnect(&a, &[]);
        hub.follow("r5", &b, 0, true, true)
            .expect("the closed socket's rooms no longer count");
        assert!(!hub.line("r5").expect("r5").state.lock().subs.is_empty());
    }

    #[tokio::test]
    async fn unread_counts_of_users_not_connected_here_are_not_kept() {
        let (hub, _dir) = hub(10).await;
        for i in 0..100 {
            hub.dispatch(BusMessage::Unread {
                user: format!("u{i}"),
                count: 1,
                order: 1,
            });
        }
        assert!(hub.reg.read().unread_order.is_empty());
    }

    #[tokio::test]
    async fn presence_changes_are_coalesced_per_room() {
        let (hub, _dir) = hub(10).await;
        let c = Conn::new(1, Arc::from("watcher"), 64, 0);
        hub.follow("r", &c, 0, true, true).expect("follow");
        for i in 0..50 {
            hub.dispatch(BusMessage::Presence {
                presence: Presence {
                    user: format!("u{i}"),
                    status: roam_proto::PresenceStatus::Online,
                    last_seen: None,
                    devices: 1,
                },
                rooms: vec!["r".into()],
            });
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut q = VecDeque::new();
        c.take(&mut q);
        assert_eq!(q.len(), 1, "one frame for fifty changes");
        let Some(Outbound::Frame(f)) = q.pop_front() else {
            panic!("a frame")
        };
        let v: serde_json::Value = serde_json::from_slice(f.payload()).expect("json");
        assert_eq!(v["type"], "presence_diff");
        assert_eq!(v["presences"].as_array().map(Vec::len), Some(50));
    }
}
