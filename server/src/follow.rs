//! Followers of collaborative documents (protocol §12): which local sockets follow which
//! document, and delivery of its updates to them in `seq` order.
//!
//! This is the hub's (`hub.rs`) document side, fed by the same bus: each followed document has
//! a *line* with the last `seq` it released and the updates that arrived before their
//! predecessors. Each follower has its own next `seq` (the one after its `collab_sync`
//! answer), so a socket that syncs while the line is still behind simply skips what its answer
//! already held. An update that arrives early waits [`Followers::new`]'s reorder window for its
//! predecessors, which are then read from the stored log **once for the document**; if the log
//! no longer holds them (compacted into the snapshot) the line releases the gap, and each
//! follower sees `seq` jump: the client's gap rule (send `collab_sync` again with its state
//! vector) repairs it. An update is encoded once for all its followers.
//!
//! **Awareness** is relayed to a document's followers other than its sender; a follower that
//! sent awareness and goes (leaves, closes, loses access) is announced gone to the others.
//!
//! **Access.** A follower whose user may no longer read the room (the room deleted, the user
//! banned or gone from a room that is not public, the room's kind changed) is dropped: it
//! receives nothing more of the room's documents. The check is asked of a [`Gate`] (the
//! service), given once when the server is built.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use roam_proto::collab::{AwarenessUpdate, CollabUpdate, MAX_FOLLOWED_DOCS};
use roam_proto::{EventBody, RoomEvent, ServerFrame};

use crate::collab::Published;
use crate::conn::{Conn, ConnId, Outbound};
use crate::event::encode;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::wsframe::WireFrame;

/// Updates read from the log per page of a fill.
const FILL_PAGE: u32 = 500;

/// What the followers ask of the rest of the server.
pub trait Gate: Send + Sync + 'static {
    /// Whether `user` may read `room` now (false on any refusal; true when unsure).
    fn may_read<'a>(&'a self, user: &'a str, room: &'a str) -> BoxFuture<'a, bool>;
    /// Tells every node's followers of the document that a session left it.
    fn left(&self, gone: AwarenessUpdate) -> BoxFuture<'_, ()>;
}

/// Why a socket may not follow a document now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowRefused {
    /// The line already released updates after the answer's seq: bring the answer up first.
    #[error("the document moved on to {0}")]
    Behind(u64),
    #[error(
        "this socket follows {MAX_FOLLOWED_DOCS} collaborative documents: collab_leave some first"
    )]
    TooMany,
}

type Key = (Arc<str>, Arc<str>);

struct Sub {
    conn: Arc<Conn>,
    /// The seq this follower gets next.
    next: u64,
    session: Arc<str>,
    /// An active member of the room (may send awareness).
    member: bool,
    /// Sent an awareness state: its leaving is announced.
    aware: bool,
}

struct LineState {
    released: u64,
    early: BTreeMap<u64, WireFrame>,
    subs: Vec<Sub>,
    filling: bool,
    closed: bool,
}

struct Line {
    room: Arc<str>,
    doc: Arc<str>,
    state: Mutex<LineState>,
}

/// This node's followers of collaborative documents.
pub struct Followers {
    lines: RwLock<HashMap<Key, Arc<Line>>>,
    /// The documents each socket follows.
    per_conn: Mutex<HashMap<ConnId, Vec<Key>>>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    window: Duration,
    gate: OnceLock<Weak<dyn Gate>>,
}

impl fmt::Debug for Followers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Followers")
            .field("docs", &self.lines.read().len())
            .finish()
    }
}

fn key(room: &str, doc: &str) -> Key {
    (Arc::from(room), Arc::from(doc))
}

/// The awareness frame saying a session left.
fn gone(room: &str, doc: &str, conn: &Conn, session: &str) -> AwarenessUpdate {
    AwarenessUpdate {
        room: room.to_owned(),
        doc: doc.to_owned(),
        user: conn.user.to_string(),
        session: session.to_owned(),
        state: None,
    }
}

impl Followers {
    /// `window`: how long an early update waits for its predecessors before they are read
    /// from the store.
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, window: Duration) -> Self {
        Followers {
            lines: RwLock::new(HashMap::new()),
            per_conn: Mutex::new(HashMap::new()),
            store,
            metrics,
            window,
            gate: OnceLock::new(),
        }
    }

    /// Sets the gate (once; later calls change nothing).
    pub fn set_gate(&self, gate: Weak<dyn Gate>) {
        let _ = self.gate.set(gate);
    }

    fn gate(&self) -> Option<Arc<dyn Gate>> {
        self.gate.get().and_then(Weak::upgrade)
    }

    fn line(&self, room: &str, doc: &str) -> Option<Arc<Line>> {
        self.lines.read().get(&key(room, doc)).cloned()
    }

    fn count_followers(&self) {
        let n: usize = self.per_conn.lock().values().map(Vec::len).sum();
        self.metrics.collab.followers.set(n as i64);
    }

    /// The last seq released to the document's followers here, if it has any.
    pub fn released(&self, room: &str, doc: &str) -> Option<u64> {
        self.line(room, doc).map(|l| l.state.lock().released)
    }

    /// Makes `conn` a follower of the document from `seq` on (its sync answer's): it gets
    /// `seq + 1` next. Refused when the line here released past `seq` already (the caller brings
    /// its answer up and tries again) or when the socket follows too many documents. Following
    /// again moves the follower to `seq`.
    pub fn follow(
        &self,
        room: &str,
        doc: &str,
        conn: &Arc<Conn>,
        session: &Arc<str>,
        member: bool,
        seq: u64,
    ) -> Result<(), FollowRefused> {
        let k = key(room, doc);
        {
            let per = self.per_conn.lock();
            let mine = per.get(&conn.id);
            let already = mine.is_some_and(|m| m.contains(&k));
            if !already && mine.map_or(0, Vec::len) >= MAX_FOLLOWED_DOCS {
                return Err(FollowRefused::TooMany);
            }
        }
        loop {
            let line = {
                let existing = self.lines.read().get(&k).cloned();
                match existing {
                    Some(l) => l,
                    None => self
                        .lines
                        .write()
                        .entry(k.clone())
                        .or_insert_with(|| {
                            Arc::new(Line {
                                room: Arc::clone(&k.0),
                                doc: Arc::clone(&k.1),
                                state: Mutex::new(LineState {
                                    released: seq,
                                    early: BTreeMap::new(),
                                    subs: Vec::new(),
                                    filling: false,
                                    closed: false,
                                }),
                            })
                        })
                        .clone(),
                }
            };
            let mut st = line.state.lock();
            if st.closed {
                continue;
            }
            if st.released > seq {
                return Err(FollowRefused::Behind(st.released));
            }
            match st.subs.iter_mut().find(|s| s.conn.id == conn.id) {
                Some(s) => {
                    s.next = seq + 1;
                    s.member = member;
                }
                None => st.subs.push(Sub {
                    conn: Arc::clone(conn),
                    next: seq + 1,
                    session: Arc::clone(session),
                    member,
                    aware: false,
                }),
            }
            drop(st);
            let mut per = self.per_conn.lock();
            let mine = per.entry(conn.id).or_default();
            if !mine.contains(&k) {
                mine.push(k);
            }
            drop(per);
            self.count_followers();
            return Ok(());
        }
    }

    /// Removes the follower from one line; returns its awareness removal when it had sent
    /// awareness. The line goes with its last follower.
    fn remove_sub(&self, k: &Key, conn: ConnId) -> Option<AwarenessUpdate> {
        let line = self.lines.read().get(k).cloned()?;
        let (removed, empty) = {
            let mut st = line.state.lock();
            let at = st.subs.iter().position(|s| s.conn.id == conn);
            let removed = at.map(|i| st.subs.swap_remove(i));
            (removed, st.subs.is_empty())
        };
        if empty {
            let mut lines = self.lines.write();
            let gone = lines.get(k).is_some_and(|l| {
                let mut st = l.state.lock();
                st.closed = st.subs.is_empty();
                st.closed
            });
            if gone {
                lines.remove(k);
            }
        }
        let s = removed?;
        s.aware.then(|| gone(&k.0, &k.1, &s.conn, &s.session))
    }

    /// The socket stops following the document; returns its awareness removal, if any.
    pub fn leave(&self, room: &str, doc: &str, conn: &Conn) -> Option<AwarenessUpdate> {
        let k = key(room, doc);
        if let Some(mine) = self.per_conn.lock().get_mut(&conn.id) {
            mine.retain(|x| *x != k);
        }
        let out = self.remove_sub(&k, conn.id);
        self.count_followers();
        out
    }

    /// The socket closed: it follows nothing any more. Returns its awareness removals.
    pub fn disconnect(&self, conn: &Conn) -> Vec<AwarenessUpdate> {
        let keys = self.per_conn.lock().remove(&conn.id).unwrap_or_default();
        let out = keys
            .iter()
            .filter_map(|k| self.remove_sub(k, conn.id))
            .collect();
        self.count_followers();
        out
    }

    /// How many documents the socket follows.
    pub fn following(&self, conn: ConnId) -> usize {
        self.per_conn.lock().get(&conn).map_or(0, Vec::len)
    }

    /// For an awareness frame of `conn`: its session when it follows the document as an
    /// active member (then marked as having sent awareness), else `None`.
    pub fn aware(&self, room: &str, doc: &str, conn: ConnId) -> Option<Arc<str>> {
        let line = self.line(room, doc)?;
        let mut st = line.state.lock();
        let s = st.subs.iter_mut().find(|s| s.conn.id == conn && s.member)?;
        s.aware = true;
        Some(Arc::clone(&s.session))
    }

    /// Whether `conn` follows the document (as a member or not).
    pub fn follows(&self, room: &str, doc: &str, conn: ConnId) -> bool {
        self.line(room, doc)
            .is_some_and(|l| l.state.lock().subs.iter().any(|s| s.conn.id == conn))
    }

    // ----- delivery -----

    /// An applied update from the bus.
    pub fn dispatch_update(self: &Arc<Self>, p: &Published) {
        let Some(line) = self.line(&p.room, &p.doc) else {
            return;
        };
        let frame = encode(&ServerFrame::CollabUpdate(CollabUpdate {
            room: p.room.clone(),
            doc: p.doc.clone(),
            seq: p.seq,
            actor: p.actor.clone(),
            update: roam_proto::collab::encode_base64(&p.update),
        }));
        let mut st = line.state.lock();
        self.sequence(&line, &mut st, p.seq, frame);
    }

    fn sequence(
        self: &Arc<Self>,
        line: &Arc<Line>,
        st: &mut LineState,
        seq: u64,
        frame: WireFrame,
    ) {
        if seq <= st.released {
            return;
        }
        if seq == st.released + 1 {
            self.release(st, seq, &frame);
            self.release_ready(st);
            return;
        }
        st.early.insert(seq, frame);
        if !st.filling {
            st.filling = true;
            tokio::spawn(Arc::clone(self).fill(Arc::clone(line)));
        }
    }

    /// Sends one update to every follower that has not had it (a follower behind it sees the
    /// gap and resyncs; see the module documentation).
    fn release(&self, st: &mut LineState, seq: u64, frame: &WireFrame) {
        st.released = seq;
        for s in &mut st.subs {
            if s.next <= seq {
                s.conn.push(Outbound::Frame(frame.clone()), &self.metrics);
                s.next = seq + 1;
            }
        }
    }

    fn release_ready(&self, st: &mut LineState) {
        while let Some(frame) = st.early.remove(&(st.released + 1)) {
            let seq = st.released + 1;
            self.release(st, seq, &frame);
        }
    }

    /// Waits the reorder window, then reads what the line misses from the stored log.
    async fn fill(self: Arc<Self>, line: Arc<Line>) {
        tokio::time::sleep(self.window).await;
        loop {
            let (after, upto) = {
                let mut st = line.state.lock();
                self.release_ready(&mut st);
                match st.early.keys().next() {
                    Some(&first) if !st.closed => (st.released, first - 1),
                    _ => {
                        st.filling = false;
                        return;
                    }
                }
            };
            let limit = (upto - after).min(u64::from(FILL_PAGE)) as u32;
            let page = match self
                .store
                .collab_updates(&line.room, &line.doc, after, limit)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, room = %line.room, doc = %line.doc, "collab: filling a gap failed");
                    Vec::new()
                }
            };
            let mut st = line.state.lock();
            let usable = page.first().is_some_and(|e| e.seq == st.released + 1);
            if usable {
                self.metrics.collab.gap_fills.inc_by(page.len() as u64);
                for e in page {
                    if e.seq != st.released + 1 {
                        break;
                    }
                    let frame = encode(&ServerFrame::CollabUpdate(CollabUpdate {
                        room: line.room.to_string(),
                        doc: line.doc.to_string(),
                        seq: e.seq,
                        actor: e.actor,
                        update: roam_proto::collab::encode_base64(&e.update),
                    }));
                    self.release(&mut st, e.seq, &frame);
                }
            } else if let Some((&first, _)) = st.early.iter().next() {
                // Not in the log any more (compacted) or not readable: released as a gap.
                self.metrics.hub_gaps_skipped.inc();
                if let Some(frame) = st.early.remove(&first) {
                    self.release(&mut st, first, &frame);
                }
            }
        }
    }

    /// An awareness change from the bus: to the document's followers other than its sender.
    pub fn dispatch_awareness(&self, a: &AwarenessUpdate, origin: Option<ConnId>) {
        let Some(line) = self.line(&a.room, &a.doc) else {
            return;
        };
        let frame = encode(&ServerFrame::Awareness(a.clone()));
        let st = line.state.lock();
        let mut n = 0u64;
        for s in st.subs.iter().filter(|s| Some(s.conn.id) != origin) {
            s.conn.push(Outbound::Frame(frame.clone()), &self.metrics);
            n += 1;
        }
        self.metrics.collab.awareness_relayed.inc_by(n);
    }

    // ----- access -----

    /// A room event: followers who may no longer read the room are dropped.
    pub fn room_event(self: &Arc<Self>, ev: &RoomEvent) {
        let only: Option<&str> = match &ev.body {
            EventBody::RoomDeleted { .. } => {
                self.drop_room(&ev.room, None);
                return;
            }
            EventBody::MemberLeft { user } | EventBody::MemberBanned { user } => Some(user),
            EventBody::RoomUpdated(_) => None,
            _ => return,
        };
        let lines: Vec<Arc<Line>> = self
            .lines
            .read()
            .values()
            .filter(|l| *l.room == *ev.room)
            .cloned()
            .collect();
        let mut users: Vec<Arc<str>> = Vec::new();
        for l in &lines {
            for s in &l.state.lock().subs {
                if only.is_none_or(|u| *s.conn.user == *u) && !users.contains(&s.conn.user) {
                    users.push(Arc::clone(&s.conn.user));
                }
            }
        }
        if users.is_empty() {
            return;
        }
        let me = Arc::clone(self);
        let room = ev.room.clone();
        tokio::spawn(async move {
            let Some(gate) = me.gate() else {
                return;
            };
            for user in users {
                if !gate.may_read(&user, &room).await {
                    for a in me.drop_room(&room, Some(&user)) {
                        gate.left(a).await;
                    }
                }
            }
        });
    }

    /// Drops the followers of the room's documents (only `user`'s, if given); returns the
    /// awareness removals to announce.
    fn drop_room(&self, room: &str, user: Option<&str>) -> Vec<AwarenessUpdate> {
        let keys: Vec<Key> = self
            .lines
            .read()
            .keys()
            .filter(|k| &*k.0 == room)
            .cloned()
            .collect();
        let mut out = Vec::new();
        for k in keys {
            let conns: Vec<ConnId> = match self.lines.read().get(&k) {
                Some(l) => l
                    .state
                    .lock()
                    .subs
                    .iter()
                    .filter(|s| user.is_none_or(|u| *s.conn.user == *u))
                    .map(|s| s.conn.id)
                    .collect(),
                None => continue,
            };
            for c in conns {
                if let Some(mine) = self.per_conn.lock().get_mut(&c) {
                    mine.retain(|x| *x != k);
                }
                if let Some(a) = self.remove_sub(&k, c) {
                    out.push(a);
                }
            }
        }
        self.count_followers();
        out
    }
}
