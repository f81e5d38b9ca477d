//! Collaborative documents: a room's CRDT documents (Yjs's format, through `yrs`) that several
//! people edit at once, offline too, and that always merge (protocol §12, `roam_proto::collab`).
//!
//! [`CollabDoc`] is the handle `Client::open_collab` returns: one live document per (room,
//! doc) per client (a second open returns the same one). Its values are named at the
//! document's root: texts (insert, delete, format), lists and maps of JSON values. Text
//! offsets and lengths are UTF-16 code units (`OffsetKind::Utf16`), as Swift's `NSString` and
//! Kotlin's `String` count them.
//!
//! ## Edits
//!
//! An edit is one yrs transaction with the local origin: it is applied in memory when the call
//! returns, and its update (what the transaction added, v1) is collected. A background thread
//! (`roam-collab`, one per client) then stores what was collected in *one* SQLite transaction
//! (group commit: while it writes, the next keystrokes collect, and the next round takes them
//! all): the updates are appended to the document's log and the local ones go to the outbox as
//! `collab.update` mutations. Keystrokes coalesce: the updates of a round are merged into one
//! (in a tree of small merges: one yrs merge of n updates costs about n²),
//! and that one is merged into the document's last queued entry as long as that entry has
//! never gone on the wire and the merge stays within `MAX_COLLAB_UPDATE_BYTES` — the scheduler
//! sends one update of a document at a time, so everything typed while one is in flight
//! becomes the next. [`CollabDoc::flush`] does a round on the caller's thread and returns once
//! it is committed.
//!
//! ## Storage
//!
//! The store keeps each document as a snapshot (the whole state, v2) plus the updates appended
//! since (v1, one row each). When the appended bytes outgrow the snapshot (and
//! [`COMPACT_FLOOR`]), the document is written again as one snapshot, with its deleted content
//! garbage-collected: the live document keeps what its undo steps may restore (the
//! `UndoManager` marks those items kept), but undo history is not stored, so the snapshot is
//! what a document without undo would hold. Opening reads the
//! snapshot and the tail and applies them in one transaction. Each open gets a fresh yrs client
//! id, as Yjs does per session.
//!
//! ## Following
//!
//! Whenever the connection is up, every open document is followed: `collab_sync` with the
//! local state vector, answered with what the server has and this client lacks, its `seq`
//! and its state vector; then `collab_update` frames with consecutive `seq`s. A gap in `seq`
//! syncs again. After a sync, whatever the server lacks (the local state against its state
//! vector) and that no queued entry of the document carries is queued, so an edit whose entry
//! was discarded or lost still reaches the server. (Deletions alone carry no clock in Yjs and
//! cannot be compared by state vector; they reach the server through the outbox only.)
//! Remote updates are applied with the remote origin, stored like local ones, and reported as
//! remote changes.
//!
//! ## Undo
//!
//! A yrs `UndoManager` tracks the local origin only, so undo and redo never touch other
//! people's edits; edits within [`CAPTURE_MILLIS`] of each other are one step (a word typed),
//! up to [`MAX_STEP_EDITS`] edits, and [`CollabDoc::stop_capturing`] ends a step at once. The
//! newest [`MAX_UNDO_STEPS`] steps can always be undone; older ones are dropped (in batches)
//! and the deleted content they kept for undo is collected, so a long session's memory and
//! edit cost do not grow with everything it ever deleted. Undo and redo are local edits like
//! any other: stored, queued and sent.
//!
//! ## Awareness
//!
//! The local state (the app's small JSON, and a selection in a text as two Yjs relative
//! positions, so it survives concurrent edits) is sent at most once per
//! [`AWARENESS_INTERVAL`], the latest winning, and again after every sync; `close` clears it.
//! Peers' states arrive as `awareness` frames; their selections are resolved against the local
//! document when delivered or read. Nothing of awareness is stored; peers are forgotten when
//! the connection ends.

mod convert;
mod history;

use history::History;
pub use history::{MAX_STEP_EDITS, MAX_UNDO_STEPS};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use roam_proto::collab::{
    decode_base64, encode_base64, MAX_COLLAB_DOC_BYTES, MAX_COLLAB_UPDATE_BYTES,
};
use roam_proto::{AwarenessUpdate, ClientFrame, CollabSync, CollabUpdate, ErrorBody, Mutation};
use serde_json::{json, Value};
use yrs::types::text::TextEvent;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{
    Array, ArrayRef, Assoc, Doc, GetString, IndexedSequence, Map, MapRef, Observable, OffsetKind,
    Options, Origin, ReadTxn, StateVector, StickyIndex, Text, TextRef, Transact, TransactionMut,
    Update,
};

use crate::context::{CollabRouter, Context, SessionCmd};
use crate::db::{reads, writes};
use crate::error::{Error, Result};
use crate::listeners::{AppEvent, AwarenessListener, CollabListener, Subscription, Target};
use crate::model::{
    CollabChange, CollabError, CollabPeer, CollabValueChange, TextDelta, TextSelection,
};
use crate::outbox;

/// Edits closer together than this are one undo step.
pub const CAPTURE_MILLIS: u64 = 500;

/// The least time between two awareness frames of one document.
pub const AWARENESS_INTERVAL: Duration = Duration::from_millis(100);

/// A document's appended updates are compacted into its snapshot once they exceed both this
/// and the snapshot's size.
pub const COMPACT_FLOOR: u64 = 64 * 1024;

/// The largest name of a root value, in bytes.
const MAX_NAME_BYTES: usize = 256;

/// Room kept in an update for its framing (headers, client ids, clocks) beyond its content.
const UPDATE_OVERHEAD: usize = 4 * 1024;

const LOCAL: &str = "roam-local";
const REMOTE: &str = "roam-remote";

// ---------------------------------------------------------------------------------------------
// The registry of open documents, and what the connection asks of it

/// The open documents of one client, and the background thread that stores their edits.
pub(crate) struct Registry {
    docs: Mutex<HashMap<(String, String), Weak<Shared>>>,
    worker: Arc<Worker>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("docs", &self.docs.lock().len())
            .finish()
    }
}

impl Registry {
    /// Starts the background thread.
    pub(crate) fn start() -> Result<Arc<Registry>> {
        let worker = Arc::new(Worker {
            state: Mutex::new(WorkerState::default()),
            wake: Condvar::new(),
        });
        let w = worker.clone();
        std::thread::Builder::new()
            .name("roam-collab".into())
            .spawn(move || w.run())
            .map_err(|e| Error::state(format!("cannot start the collab thread: {e}")))?;
        Ok(Arc::new(Registry {
            docs: Mutex::new(HashMap::new()),
            worker,
        }))
    }

    fn get(&self, room: &str, doc: &str) -> Option<Arc<Shared>> {
        self.docs
            .lock()
            .get(&(room.to_owned(), doc.to_owned()))
            .and_then(Weak::upgrade)
    }

    /// Opens a document (or returns the one open), loading it from the store.
    pub(crate) fn open(&self, ctx: &Arc<Context>, room: &str, doc: &str) -> Result<CollabDoc> {
        roam_proto::validate::room_name(room)?;
        roam_proto::validate::document_name(doc)?;
        ctx.db.check_open()?;
        let mut docs = self.docs.lock();
        docs.retain(|_, d| d.strong_count() > 0);
        let key = (room.to_owned(), doc.to_owned());
        if let Some(shared) = docs.get(&key).and_then(Weak::upgrade) {
            if !shared.closed.load(Ordering::SeqCst) {
                return Ok(CollabDoc { shared });
            }
        }
        let started = Instant::now();
        let stored = ctx.db.read(|c| reads::collab_doc(c, room, doc))?;
        let snapshot_len = stored.snapshot.len() as u64;
        let log_bytes: u64 = stored.log.iter().map(|u| u.len() as u64).sum();
        let inner = Inner::load(&stored.snapshot, &stored.log)
            .map_err(|e| Error::state(format!("the stored document {room}/{doc}: {e}")))?;
        let pending = inner.pending.clone();
        let shared = Arc::new(Shared {
            ctx: ctx.clone(),
            room: room.to_owned(),
            name: doc.to_owned(),
            inner: Mutex::new(inner),
            pending,
            commit: Mutex::new(Committed {
                last_entry: None,
                log_bytes,
                snapshot_len,
            }),
            worker: self.worker.clone(),
            queued: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            registry_key: key.clone(),
        });
        docs.insert(key, Arc::downgrade(&shared));
        drop(docs);
        tracing::debug!(%room, %doc, snapshot_len, log_bytes, elapsed_us = started.elapsed().as_micros() as u64, "collaborative document opened");
        ctx.send(SessionCmd::CollabSync {
            room: room.to_owned(),
            doc: doc.to_owned(),
        });
        Ok(CollabDoc { shared })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.worker.state.lock().stop = true;
        self.worker.wake.notify_all();
    }
}

impl CollabRouter for Registry {
    fn open_docs(&self) -> Vec<(String, String)> {
        self.docs
            .lock()
            .iter()
            .filter(|(_, d)| {
                d.upgrade()
                    .is_some_and(|d| !d.closed.load(Ordering::SeqCst))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn state_vector(&self, room: &str, doc: &str) -> Option<Vec<u8>> {
        let shared = self.get(room, doc)?;
        if shared.closed.load(Ordering::SeqCst) {
            return None;
        }
        let mut inner = shared.inner.lock();
        inner.follow = Follow::Awaiting;
        let sv = inner.doc.transact().state_vector().encode_v1();
        Some(sv)
    }

    fn on_synced(&self, answer: CollabSync) {
        let Some(shared) = self.get(&answer.room, &answer.doc) else {
            return;
        };
        shared.on_synced(answer);
    }

    fn on_sync_failed(&self, room: &str, doc: &str, error: &ErrorBody) {
        if let Some(shared) = self.get(room, doc) {
            shared.inner.lock().follow = Follow::Unsynced;
            shared.ctx.emit(AppEvent::CollabError(CollabError {
                room: room.to_owned(),
                doc: doc.to_owned(),
                entry: String::new(),
                code: error.code.as_str().to_owned(),
                message: error.message.clone(),
            }));
        }
    }

    fn on_update(&self, update: CollabUpdate) -> bool {
        let Some(shared) = self.get(&update.room, &update.doc) else {
            return false;
        };
        shared.on_update(update)
    }

    fn on_awareness(&self, update: AwarenessUpdate) {
        if let Some(shared) = self.get(&update.room, &update.doc) {
            shared.on_awareness(update);
        }
    }

    fn on_disconnected(&self) {
        let docs: Vec<Arc<Shared>> = self
            .docs
            .lock()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for d in docs {
            d.on_disconnected();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The background thread

#[derive(Default)]
struct WorkerState {
    /// Documents with edits to store.
    dirty: Vec<Weak<Shared>>,
    /// Documents whose awareness is due to be sent, and when.
    awareness: Vec<(Instant, Weak<Shared>)>,
    stop: bool,
}

struct Worker {
    state: Mutex<WorkerState>,
    wake: Condvar,
}

impl Worker {
    fn mark_dirty(&self, doc: Weak<Shared>) {
        self.state.lock().dirty.push(doc);
        self.wake.notify_one();
    }

    fn awareness_at(&self, at: Instant, doc: Weak<Shared>) {
        self.state.lock().awareness.push((at, doc));
        self.wake.notify_one();
    }

    fn run(&self) {
        let _ = crate::priority::lower_current_thread();
        loop {
            let (dirty, due) = {
                let mut st = self.state.lock();
                loop {
                    if st.stop {
                        return;
                    }
                    let now = Instant::now();
                    let any_due = st.awareness.iter().any(|(t, _)| *t <= now);
                    if !st.dirty.is_empty() || any_due {
                        break;
                    }
                    match st.awareness.iter().map(|(t, _)| *t).min() {
                        Some(next) => {
                            self.wake.wait_until(&mut st, next);
                        }
                        None => self.wake.wait(&mut st),
                    }
                }
                let now = Instant::now();
                let (due, later): (Vec<_>, Vec<_>) =
                    st.awareness.drain(..).partition(|(t, _)| *t <= now);
                st.awareness = later;
                (std::mem::take(&mut st.dirty), due)
            };
            for d in dirty.iter().filter_map(Weak::upgrade) {
                if let Err(err) = d.commit() {
                    tracing::warn!(room = %d.room, doc = %d.name, error = %err, "cannot store a collaborative document's edits");
                }
            }
            for (_, d) in due {
                if let Some(d) = d.upgrade() {
                    d.send_awareness_if_dirty();
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One open document

/// Where following the document on the current connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follow {
    /// Not followed (no connection, or refused).
    Unsynced,
    /// `collab_sync` sent, no answer yet.
    Awaiting,
    /// Followed; the last `seq` applied.
    Synced(u64),
}

/// What the edits left to store (filled by the yrs observers and the remote path).
#[derive(Default)]
struct Pending {
    /// Local updates (v1), one per transaction.
    local: Vec<Vec<u8>>,
    /// Remote updates (v1) as received.
    remote: Vec<Vec<u8>>,
    /// The server's state vector after a sync: queue what it lacks.
    reconcile: Option<Vec<u8>>,
}

/// Changes collected by the observers of one transaction.
#[derive(Default)]
struct Changes {
    /// Someone listens: compute deltas.
    wanted: bool,
    list: Vec<CollabValueChange>,
}

#[derive(Clone)]
enum Root {
    Text(TextRef),
    List(ArrayRef),
    Map(MapRef),
}

impl Root {
    fn kind(&self) -> &'static str {
        match self {
            Root::Text(_) => "text",
            Root::List(_) => "list",
            Root::Map(_) => "map",
        }
    }
}

#[derive(Default)]
struct LocalAwareness {
    state: Option<Value>,
    /// (text name, anchor, head).
    selection: Option<(String, StickyIndex, StickyIndex)>,
    last_sent: Option<Instant>,
    dirty: bool,
    /// Something was sent on this connection (so `close` clears it).
    sent: bool,
}

pub(crate) struct Inner {
    pub(crate) doc: Doc,
    history: History,
    roots: HashMap<String, Root>,
    changes: Arc<Mutex<Changes>>,
    pending: Arc<Mutex<Pending>>,
    follow: Follow,
    local_awareness: LocalAwareness,
    /// Peers by session: (user, state as sent).
    peers: BTreeMap<String, (String, Value)>,
}

impl Inner {
    fn load(snapshot: &[u8], log: &[Vec<u8>]) -> std::result::Result<Inner, String> {
        let doc = Doc::with_options(Options {
            offset_kind: OffsetKind::Utf16,
            ..Options::default()
        });
        {
            let mut txn = doc.transact_mut_with(REMOTE);
            if !snapshot.is_empty() {
                let u = Update::decode_v2(snapshot).map_err(|e| format!("snapshot: {e}"))?;
                txn.apply_update(u).map_err(|e| format!("snapshot: {e}"))?;
            }
            for (i, bytes) in log.iter().enumerate() {
                let u = Update::decode_v1(bytes).map_err(|e| format!("update {i}: {e}"))?;
                txn.apply_update(u)
                    .map_err(|e| format!("update {i}: {e}"))?;
            }
        }
        let pending = Arc::new(Mutex::new(Pending::default()));
        let p = pending.clone();
        doc.observe_update_v1(LOCAL, move |txn, e| {
            if !is_remote(txn) {
                p.lock().local.push(e.update.clone());
            }
        })
        .map_err(|e| format!("cannot observe the document: {e}"))?;
        Ok(Inner {
            doc,
            history: History::new(),
            roots: HashMap::new(),
            changes: Arc::new(Mutex::new(Changes::default())),
            pending,
            follow: Follow::Unsynced,
            local_awareness: LocalAwareness::default(),
            peers: BTreeMap::new(),
        })
    }

    /// The root value `name` of `kind`, observed and in the undo scope from its first use.
    fn root(&mut self, name: &str, kind: &'static str) -> Result<Root> {
        if let Some(r) = self.roots.get(name) {
            if r.kind() != kind {
                return Err(Error::invalid(format!(
                    "{name:?} is a {} of this document, not a {kind}",
                    r.kind()
                )));
            }
            return Ok(r.clone());
        }
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(Error::invalid(format!(
                "a value's name must be 1 to {MAX_NAME_BYTES} bytes"
            )));
        }
        let changes = self.changes.clone();
        let key = name.to_owned();
        let root = match kind {
            "text" => {
                let t = self.doc.get_or_insert_text(name);
                t.observe(LOCAL, move |txn, e: &TextEvent| {
                    let mut c = changes.lock();
                    if c.wanted {
                        c.list.push(CollabValueChange::Text {
                            name: key.clone(),
                            delta: convert::text_delta(txn, e),
                        });
                    }
                });
                let root = Root::Text(t);
                self.history.expand_scope(&self.doc, &root);
                root
            }
            "list" => {
                let l = self.doc.get_or_insert_array(name);
                l.observe(LOCAL, move |txn, e| {
                    let mut c = changes.lock();
                    if c.wanted {
                        c.list.push(CollabValueChange::List {
                            name: key.clone(),
                            delta: convert::list_delta(txn, e),
                        });
                    }
                });
                let root = Root::List(l);
                self.history.expand_scope(&self.doc, &root);
                root
            }
            _ => {
                let m = self.doc.get_or_insert_map(name);
                m.observe(LOCAL, move |txn, e| {
                    let mut c = changes.lock();
                    if c.wanted {
                        c.list.push(CollabValueChange::Map {
                            name: key.clone(),
                            keys: convert::map_keys(txn, e),
                        });
                    }
                });
                let root = Root::Map(m);
                self.history.expand_scope(&self.doc, &root);
                root
            }
        };
        self.roots.insert(name.to_owned(), root.clone());
        Ok(root)
    }

    fn text(&mut self, name: &str) -> Result<TextRef> {
        match self.root(name, "text")? {
            Root::Text(t) => Ok(t),
            _ => Err(Error::invalid(format!("{name:?} is not a text"))),
        }
    }

    fn list(&mut self, name: &str) -> Result<ArrayRef> {
        match self.root(name, "list")? {
            Root::List(l) => Ok(l),
            _ => Err(Error::invalid(format!("{name:?} is not a list"))),
        }
    }

    fn map(&mut self, name: &str) -> Result<MapRef> {
        match self.root(name, "map")? {
            Root::Map(m) => Ok(m),
            _ => Err(Error::invalid(format!("{name:?} is not a map"))),
        }
    }
}

fn is_remote(txn: &TransactionMut) -> bool {
    txn.origin().is_some_and(|o| *o == Origin::from(REMOTE))
}

/// What the store holds of the document's outbox and log.
struct Committed {
    /// The document's last queued entry: (id, position, its update). Merged into while it has
    /// never gone on the wire.
    last_entry: Option<(String, i64, Vec<u8>)>,
    log_bytes: u64,
    snapshot_len: u64,
}

pub(crate) struct Shared {
    ctx: Arc<Context>,
    room: String,
    name: String,
    pub(crate) inner: Mutex<Inner>,
    pending: Arc<Mutex<Pending>>,
    /// Held while storing (one round at a time, in order).
    commit: Mutex<Committed>,
    worker: Arc<Worker>,
    /// Waiting for the background thread.
    queued: AtomicBool,
    closed: AtomicBool,
    registry_key: (String, String),
}

impl Shared {
    fn self_weak(self: &Arc<Self>) -> Weak<Shared> {
        Arc::downgrade(self)
    }

    /// Asks the background thread to store what is pending.
    fn schedule(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::SeqCst) {
            self.worker.mark_dirty(self.self_weak());
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::state(format!(
                "the collaborative document {}/{} is closed",
                self.room, self.name
            )));
        }
        Ok(())
    }

    /// Runs one local edit (or undo/redo) and reports its changes.
    fn edit<T>(self: &Arc<Self>, f: impl FnOnce(&mut Inner) -> Result<T>) -> Result<T> {
        self.check_open()?;
        let mut inner = self.inner.lock();
        inner.changes.lock().wanted = self.ctx.dispatcher.listened();
        let out = f(&mut inner)?;
        let Inner { history, doc, .. } = &mut *inner;
        history.after_edit(doc);
        self.report(&inner, true);
        drop(inner);
        self.schedule();
        Ok(out)
    }

    /// Hands the collected changes to the listeners (under the document's lock, so in order).
    fn report(&self, inner: &Inner, local: bool) {
        let changes = std::mem::take(&mut inner.changes.lock().list);
        if !changes.is_empty() {
            self.ctx.emit(AppEvent::Collab(CollabChange {
                room: self.room.clone(),
                doc: self.name.clone(),
                local,
                changes,
            }));
        }
    }

    /// Applies an update from the server. False when it cannot be read.
    pub(crate) fn apply_remote(&self, inner: &mut Inner, bytes: Vec<u8>) -> bool {
        if bytes.is_empty() {
            return true;
        }
        inner.changes.lock().wanted = self.ctx.dispatcher.listened();
        let applied = Update::decode_v1(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|u| {
                let mut txn = inner.doc.transact_mut_with(REMOTE);
                txn.apply_update(u).map_err(|e| e.to_string())
            });
        match applied {
            Ok(()) => {
                self.report(inner, false);
                self.pending.lock().remote.push(bytes);
                true
            }
            Err(reason) => {
                inner.changes.lock().list.clear();
                tracing::warn!(room = %self.room, doc = %self.name, %reason, "an update from the server cannot be applied");
                self.ctx.emit(AppEvent::CollabError(CollabError {
                    room: self.room.clone(),
                    doc: self.name.clone(),
                    entry: String::new(),
                    code: "invalid_update".into(),
                    message: format!("an update from the server cannot be applied: {reason}"),
                }));
                false
            }
        }
    }

    fn on_synced(self: &Arc<Self>, answer: CollabSync) {
        let update = decode_base64("update", &answer.update, MAX_COLLAB_DOC_BYTES);
        let sv = decode_base64(
            "state_vector",
            &answer.state_vector,
            roam_proto::collab::MAX_STATE_VECTOR_BYTES,
        );
        let (update, sv) = match (update, sv) {
            (Ok(u), Ok(s)) => (u, s),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(room = %self.room, doc = %self.name, error = %e, "unreadable collab_sync answer");
                return;
            }
        };
        {
            let mut inner = self.inner.lock();
            self.apply_remote(&mut inner, update);
            inner.follow = Follow::Synced(answer.seq);
            self.pending.lock().reconcile = Some(sv);
            inner.local_awareness.dirty |=
                inner.local_awareness.state.is_some() || inner.local_awareness.selection.is_some();
        }
        tracing::debug!(room = %self.room, doc = %self.name, seq = answer.seq, "collaborative document synced");
        self.schedule();
        self.send_awareness_if_dirty();
    }

    /// True when a frame was missed.
    fn on_update(self: &Arc<Self>, update: CollabUpdate) -> bool {
        let bytes = match decode_base64("update", &update.update, MAX_COLLAB_DOC_BYTES) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(room = %self.room, doc = %self.name, error = %e, "unreadable collab_update");
                return true;
            }
        };
        let mut inner = self.inner.lock();
        let gap = match inner.follow {
            Follow::Synced(n) if update.seq <= n => return false,
            Follow::Synced(n) if update.seq == n + 1 => {
                inner.follow = Follow::Synced(update.seq);
                false
            }
            Follow::Synced(_) => {
                inner.follow = Follow::Awaiting;
                true
            }
            Follow::Awaiting | Follow::Unsynced => false,
        };
        // The author's own update comes back too: applying it changes nothing.
        self.apply_remote(&mut inner, bytes);
        drop(inner);
        self.schedule();
        gap
    }

    fn on_awareness(&self, update: AwarenessUpdate) {
        let mut inner = self.inner.lock();
        match update.state {
            Some(state) => {
                inner.peers.insert(update.session, (update.user, state));
            }
            None => {
                if inner.peers.remove(&update.session).is_none() {
                    return;
                }
            }
        }
        let peers = peers_of(&inner);
        self.ctx
            .emit(AppEvent::Peers(self.room.clone(), self.name.clone(), peers));
    }

    fn on_disconnected(&self) {
        let mut inner = self.inner.lock();
        inner.follow = Follow::Unsynced;
        inner.local_awareness.sent = false;
        if !inner.peers.is_empty() {
            inner.peers.clear();
            self.ctx.emit(AppEvent::Peers(
                self.room.clone(),
                self.name.clone(),
                Vec::new(),
            ));
        }
    }

    /// Sends the local awareness state if it changed and the interval allows; otherwise asks
    /// the background thread to send it when it does.
    fn send_awareness_if_dirty(self: &Arc<Self>) {
        let mut inner = self.inner.lock();
        let a = &mut inner.local_awareness;
        if !a.dirty || self.closed.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        if let Some(last) = a.last_sent {
            if now < last + AWARENESS_INTERVAL {
                self.worker
                    .awareness_at(last + AWARENESS_INTERVAL, self.self_weak());
                return;
            }
        }
        let state = awareness_json(a);
        if matches!(inner.follow, Follow::Unsynced) {
            // Sent after the next sync.
            return;
        }
        let a = &mut inner.local_awareness;
        a.dirty = false;
        a.last_sent = Some(now);
        a.sent |= state.is_some();
        self.ctx.send(SessionCmd::Frame(ClientFrame::Awareness {
            room: self.room.clone(),
            doc: self.name.clone(),
            state,
        }));
    }

    /// Stores what is pending: one transaction appending to the log and queueing (or merging
    /// into) the outbox entry; then compacts when the log has grown.
    fn commit(&self) -> Result<()> {
        let mut c = self.commit.lock();
        self.queued.store(false, Ordering::SeqCst);
        let (local, remote, reconcile) = {
            let mut p = self.pending.lock();
            (
                std::mem::take(&mut p.local),
                std::mem::take(&mut p.remote),
                p.reconcile.take(),
            )
        };
        if local.is_empty() && remote.is_empty() && reconcile.is_none() {
            return Ok(());
        }
        let groups = merge_groups(&local)?;
        let missing = match &reconcile {
            Some(sv) => self.missing_on_server(sv)?,
            None => None,
        };
        let room = self.room.as_str();
        let doc = self.name.as_str();
        let ctx = &self.ctx;
        let last = c.last_entry.clone();
        let result = ctx.write(|tx, fx| {
            let mut rows: Vec<&[u8]> = remote.iter().map(Vec::as_slice).collect();
            rows.extend(groups.iter().map(Vec::as_slice));
            let log_bytes = if rows.is_empty() {
                None
            } else {
                Some(writes::append_collab_updates(tx, room, doc, &rows)?)
            };
            let mut last = last;
            for g in &groups {
                last = Some(queue_update(ctx, tx, fx, room, doc, last, g)?);
            }
            if let Some((missing, inserted)) = missing {
                if !queued_covers(tx, room, doc, &groups, &inserted)? {
                    tracing::info!(%room, %doc, bytes = missing.len(), "the server lacks edits no queued entry carries; queueing them");
                    let m = Mutation::UpdateCollab {
                        room: room.to_owned(),
                        doc: doc.to_owned(),
                        update: encode_base64(&missing),
                    };
                    let (id, pos) = outbox::enqueue_in(ctx, tx, fx, m)?;
                    last = Some((id, pos, missing));
                }
            }
            Ok((log_bytes, last))
        });
        match result {
            Ok((log_bytes, last)) => {
                if let Some(b) = log_bytes {
                    c.log_bytes = b;
                }
                c.last_entry = last;
            }
            Err(err) => {
                // Kept for the next round, in order.
                let mut p = self.pending.lock();
                let mut l = local;
                l.append(&mut p.local);
                p.local = l;
                let mut r = remote;
                r.append(&mut p.remote);
                p.remote = r;
                if p.reconcile.is_none() {
                    p.reconcile = reconcile;
                }
                return Err(err);
            }
        }
        if c.log_bytes > COMPACT_FLOOR.max(c.snapshot_len) {
            self.compact_locked(&mut c)?;
        }
        Ok(())
    }

    /// Writes the document as one snapshot and drops the log rows it covers.
    fn compact_locked(&self, c: &mut Committed) -> Result<()> {
        let state = self
            .inner
            .lock()
            .doc
            .transact()
            .encode_state_as_update_v2(&StateVector::default());
        let snapshot = collected(&state)?;
        let (room, doc) = (self.room.as_str(), self.name.as_str());
        let left = self.ctx.write(|tx, _| {
            let upto = reads::collab_last_update(tx, room, doc)?;
            writes::compact_collab(tx, room, doc, &snapshot, upto)?;
            Ok(reads::collab_sizes(tx, room, doc)?.1)
        })?;
        tracing::debug!(%room, %doc, snapshot = snapshot.len(), before = c.log_bytes, "collaborative document compacted");
        c.snapshot_len = snapshot.len() as u64;
        c.log_bytes = left;
        Ok(())
    }

    /// What the server lacks against its state vector, with the ids it inserts, when it
    /// inserts anything.
    fn missing_on_server(&self, sv: &[u8]) -> Result<Option<(Vec<u8>, yrs::IdSet)>> {
        let sv = if sv.is_empty() {
            StateVector::default()
        } else {
            match StateVector::decode_v1(sv) {
                Ok(sv) => sv,
                Err(e) => {
                    tracing::warn!(room = %self.room, doc = %self.name, error = %e, "unreadable server state vector");
                    return Ok(None);
                }
            }
        };
        let missing = self
            .inner
            .lock()
            .doc
            .transact()
            .encode_state_as_update_v1(&sv);
        let inserted = match Update::decode_v1(&missing) {
            Ok(u) => u.insertions(true),
            Err(e) => return Err(Error::state(format!("cannot read the local state: {e}"))),
        };
        if inserted.is_empty() {
            return Ok(None);
        }
        Ok(Some((missing, inserted)))
    }

    fn close(self: &Arc<Self>) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let stored = self.commit();
        let sent = {
            let mut inner = self.inner.lock();
            inner.peers.clear();
            std::mem::take(&mut inner.local_awareness).sent
        };
        if sent {
            self.ctx.send(SessionCmd::Frame(ClientFrame::Awareness {
                room: self.room.clone(),
                doc: self.name.clone(),
                state: None,
            }));
        }
        self.ctx.send(SessionCmd::Frame(ClientFrame::CollabLeave {
            id: format!("l{}", uuid::Uuid::now_v7()),
            room: self.room.clone(),
            doc: self.name.clone(),
        }));
        stored
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::SeqCst) {
            if let Err(err) = self.commit() {
                tracing::warn!(room = %self.room, doc = %self.name, error = %err, "edits of a dropped collaborative document could not be stored");
            }
            self.ctx.send(SessionCmd::Frame(ClientFrame::CollabLeave {
                id: format!("l{}", uuid::Uuid::now_v7()),
                room: self.room.clone(),
                doc: self.name.clone(),
            }));
        }
        tracing::trace!(key = ?self.registry_key, "collaborative document released");
    }
}

/// The document `state` (v2) with its deleted content garbage-collected, as a snapshot (v2).
///
/// The live document keeps the content its undo steps may bring back (the `UndoManager` keeps
/// those items from collection); the stored snapshot does not need it: undo history lives in
/// memory only. Applying the state to a fresh document collects every deletion, as a document
/// that never had an undo manager would have.
fn collected(state: &[u8]) -> Result<Vec<u8>> {
    let fresh = Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    });
    let update = Update::decode_v2(state)
        .map_err(|e| Error::state(format!("cannot read the document's state: {e}")))?;
    let mut txn = fresh.transact_mut();
    txn.apply_update(update)
        .map_err(|e| Error::state(format!("cannot rebuild the document's state: {e}")))?;
    txn.gc(None);
    Ok(txn.encode_state_as_update_v2(&StateVector::default()))
}

/// Groups consecutive local updates so that each merged group stays within
/// `MAX_COLLAB_UPDATE_BYTES`, and merges each.
fn merge_groups(local: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
    let limit = MAX_COLLAB_UPDATE_BYTES - UPDATE_OVERHEAD;
    let mut groups = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (i, u) in local.iter().enumerate() {
        if i > start && size + u.len() > limit {
            groups.push(merge(&local[start..i])?);
            start = i;
            size = 0;
        }
        size += u.len();
    }
    if start < local.len() {
        groups.push(merge(&local[start..])?);
    }
    Ok(groups)
}

/// How many updates one yrs merge takes at once. yrs re-sorts all of a merge's inputs for every
/// block it writes, so one merge of n small updates costs about n² — many keystrokes are merged
/// in a tree of small merges instead (n log n).
const MERGE_FAN_IN: usize = 8;

pub(crate) fn merge(updates: &[Vec<u8>]) -> Result<Vec<u8>> {
    let merge_some = |some: &[Vec<u8>]| -> Result<Vec<u8>> {
        match some {
            [one] => Ok(one.clone()),
            many => yrs::merge_updates_v1(many)
                .map_err(|e| Error::state(format!("cannot merge updates: {e}"))),
        }
    };
    if updates.len() <= MERGE_FAN_IN {
        return merge_some(updates);
    }
    let mut level = updates
        .chunks(MERGE_FAN_IN)
        .map(merge_some)
        .collect::<Result<Vec<_>>>()?;
    while level.len() > 1 {
        level = level
            .chunks(MERGE_FAN_IN)
            .map(merge_some)
            .collect::<Result<Vec<_>>>()?;
    }
    level
        .pop()
        .ok_or_else(|| Error::state("no update to merge"))
}

/// Queues one update: merged into the document's last entry while that one has never gone on
/// the wire and the result fits, else as a new entry. Returns the entry as it now is.
fn queue_update(
    ctx: &Context,
    tx: &rusqlite::Transaction<'_>,
    fx: &mut crate::context::Effects,
    room: &str,
    doc: &str,
    last: Option<(String, i64, Vec<u8>)>,
    update: &[u8],
) -> Result<(String, i64, Vec<u8>)> {
    if let Some((id, pos, bytes)) = last {
        if bytes.len() + update.len() + UPDATE_OVERHEAD <= MAX_COLLAB_UPDATE_BYTES {
            let merged = merge(&[bytes, update.to_vec()])?;
            if merged.len() <= MAX_COLLAB_UPDATE_BYTES {
                let m = Mutation::UpdateCollab {
                    room: room.to_owned(),
                    doc: doc.to_owned(),
                    update: encode_base64(&merged),
                };
                if outbox::rewrite_unsent(ctx, tx, &id, pos, &m)? {
                    return Ok((id, pos, merged));
                }
            }
        }
    }
    let m = Mutation::UpdateCollab {
        room: room.to_owned(),
        doc: doc.to_owned(),
        update: encode_base64(update),
    };
    let (id, pos) = outbox::enqueue_in(ctx, tx, fx, m)?;
    Ok((id, pos, update.to_vec()))
}

/// Whether the queued entries of the document (pending or failed, plus `groups` being queued
/// now) insert everything in `inserted`.
fn queued_covers(
    tx: &rusqlite::Transaction<'_>,
    room: &str,
    doc: &str,
    groups: &[Vec<u8>],
    inserted: &yrs::IdSet,
) -> Result<bool> {
    let mut covered = yrs::IdSet::new();
    let mut add = |bytes: &[u8]| {
        if let Ok(u) = Update::decode_v1(bytes) {
            covered.merge_with(u.insertions(true));
        }
    };
    for m in reads::collab_queued(tx)? {
        if let Mutation::UpdateCollab {
            room: r,
            doc: d,
            update,
        } = &m
        {
            if r == room && d == doc {
                if let Ok(bytes) = decode_base64("update", update, MAX_COLLAB_UPDATE_BYTES) {
                    add(&bytes);
                }
            }
        }
    }
    for g in groups {
        add(g);
    }
    Ok(inserted.diff(&covered).is_empty())
}

/// The awareness JSON sent for the local state.
fn awareness_json(a: &LocalAwareness) -> Option<Value> {
    if a.state.is_none() && a.selection.is_none() {
        return None;
    }
    let selection = a.selection.as_ref().map(|(text, anchor, head)| {
        json!({
            "text": text,
            "anchor": encode_base64(&anchor.encode_v1()),
            "head": encode_base64(&head.encode_v1()),
        })
    });
    Some(json!({ "state": a.state, "selection": selection }))
}

/// The peers as the app sees them, their selections resolved against the local document.
fn peers_of(inner: &Inner) -> Vec<CollabPeer> {
    let txn = inner.doc.transact();
    inner
        .peers
        .iter()
        .map(|(session, (user, state))| {
            let app_state = state
                .get("state")
                .filter(|s| !s.is_null())
                .map(Value::to_string);
            let sel = state.get("selection").filter(|s| !s.is_null());
            let text = sel
                .and_then(|s| s.get("text"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let resolve = |field: &str| -> Option<u32> {
                let b64 = sel?.get(field)?.as_str()?;
                let bytes = decode_base64(field, b64, 1024).ok()?;
                let idx = StickyIndex::decode_v1(&bytes).ok()?;
                Some(idx.get_offset(&txn)?.index)
            };
            let selection = match (resolve("anchor"), resolve("head")) {
                (Some(anchor), Some(head)) => Some(TextSelection { anchor, head }),
                _ => None,
            };
            CollabPeer {
                user: user.clone(),
                session: session.clone(),
                state: app_state,
                text,
                selection,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The public handle

/// A live collaborative document of a room (see the module docs). Cheap to clone; every clone
/// is the same document. Edits return once applied in memory; [`CollabDoc::flush`] waits for
/// the store. Dropping the last handle stores what is pending and stops following the document.
#[derive(Clone)]
pub struct CollabDoc {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for CollabDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollabDoc")
            .field("room", &self.shared.room)
            .field("doc", &self.shared.name)
            .finish()
    }
}

fn check_len(what: &str, len: usize) -> Result<()> {
    if len + UPDATE_OVERHEAD > MAX_COLLAB_UPDATE_BYTES {
        return Err(Error::invalid(format!(
            "{what} is too large for one update ({len} bytes; at most {})",
            MAX_COLLAB_UPDATE_BYTES - UPDATE_OVERHEAD
        )));
    }
    Ok(())
}

fn check_range(what: &str, index: u32, len: u32, size: u32) -> Result<()> {
    match index.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::invalid(format!(
            "{what} {index}..{} is outside 0..{size}",
            u64::from(index) + u64::from(len)
        ))),
    }
}

/// A value as JSON text, checked for size.
fn value_of(value: Value) -> Result<yrs::Any> {
    let len = serde_json::to_string(&value)?.len();
    check_len("the value", len)?;
    convert::any_of(value)
}

impl CollabDoc {
    /// The room.
    pub fn room(&self) -> &str {
        &self.shared.room
    }

    /// The document's name.
    pub fn doc(&self) -> &str {
        &self.shared.name
    }

    // ----- text

    /// Inserts `text` at `index` (UTF-16 units) of the text `name`, formatted with
    /// `attributes` (a JSON object) when given.
    pub fn insert_text(
        &self,
        name: &str,
        index: u32,
        text: &str,
        attributes: Option<Value>,
    ) -> Result<()> {
        check_len("the text", text.len())?;
        let attrs = attributes.map(convert::attrs_of).transpose()?;
        self.shared.edit(|inner| {
            let t = inner.text(name)?;
            let mut txn = inner.doc.transact_mut_with(LOCAL);
            check_range("insert position", index, 0, t.len(&txn))?;
            match attrs {
                Some(a) => t.insert_with_attributes(&mut txn, index, text, a),
                None => t.insert(&mut txn, index, text),
            }
            Ok(())
        })
    }

    /// Deletes `len` UTF-16 units at `index` of the text `name`.
    pub fn delete_text(&self, name: &str, index: u32, len: u32) -> Result<()> {
        self.shared.edit(|inner| {
            let t = inner.text(name)?;
            let mut txn = inner.doc.transact_mut_with(LOCAL);
            check_range("text range", index, len, t.len(&txn))?;
            if len > 0 {
                t.remove_range(&mut txn, index, len);
            }
            Ok(())
        })
    }

    /// Formats `len` UTF-16 units at `index` of the text `name` with `attributes` (a JSON
    /// object; a `null` value removes that attribute).
    pub fn format_text(&self, name: &str, index: u32, len: u32, attributes: Value) -> Result<()> {
        let attrs = convert::attrs_of(attributes)?;
        self.shared.edit(|inner| {
            let t = inner.text(name)?;
            let mut txn = inner.doc.transact_mut_with(LOCAL);
            check_range("text range", index, len, t.len(&txn))?;
            if len > 0 {
                t.format(&mut txn, index, len, attrs);
            }
            Ok(())
        })
    }

    /// The text `name` as a plain string (empty when it does not exist yet).
    pub fn text(&self, name: &str) -> Result<String> {
        self.read(|inner| {
            let t = inner.text(name)?;
            let txn = inner.doc.transact();
            Ok(t.get_string(&txn))
        })
    }

    /// The length of the text `name` in UTF-16 units.
    pub fn text_len(&self, name: &str) -> Result<u32> {
        self.read(|inner| {
            let t = inner.text(name)?;
            let txn = inner.doc.transact();
            Ok(t.len(&txn))
        })
    }

    /// The text `name` with its formatting: one insert per run of equal attributes (the
    /// initial content for an editor that then applies the deltas).
    pub fn text_content(&self, name: &str) -> Result<Vec<TextDelta>> {
        self.read(|inner| {
            let t = inner.text(name)?;
            let txn = inner.doc.transact();
            Ok(convert::text_content(&txn, &t))
        })
    }

    // ----- lists

    /// Inserts `values` at `index` of the list `name`.
    pub fn list_insert(&self, name: &str, index: u32, values: Vec<Value>) -> Result<()> {
        let len = serde_json::to_string(&values)?.len();
        check_len("the values", len)?;
        let values = values
            .into_iter()
            .map(convert::any_of)
            .collect::<Result<Vec<_>>>()?;
        self.shared.edit(|inner| {
            let l = inner.list(name)?;
            let mut txn = inner.doc.transact_mut_with(LOCAL);
            check_range("insert position", index, 0, l.len(&txn))?;
            if !values.is_empty() {
                l.insert_range(&mut txn, index, values);
            }
            Ok(())
        })
    }

    /// Appends `value` to the list `name`.
    pub fn list_push(&self, name: &str, value: Value) -> Result<()> {
        let value = value_of(value)?;
        self.shared.edit(|inner| {
            let l = inner.list(name)?;
            let mut txn = inner.doc.transact_mut_with(LOCAL);
            l.push_back(&mut txn, value);
            Ok(())
        })
    }

    /// Deletes `len` items at `index` of the list `name`.
    pub fn list_delete(&self, name: &str, index: u32, len: u32) -> Result<()> {
        self.shared.edit(|inner| {
            let l = inner.list(name)?;
            let mut txn = inner.doc.transact_mut_with(LOCAL);
            check_range("list range", index, len, l.len(&txn))?;
            if len > 0 {
                l.remove_range(&mut txn, index, len);
            }
            Ok(())
        })
    }

    /// The items of the list `name`, each as JSON text.
    pub fn list(&self, name: &str) -> Result<Vec<String>> {
        self.read(|inner| {
            let l = inner.list(name)?;
            let txn = inner.doc.transact();
            Ok(l.iter(&txn).map(|v| convert::json_of(&txn, &v)).collect())
        })
    }

    // ----- maps

    /// Sets `key` of the map `name` to `value`.
    pub fn map_set(&self, name: &str, key: &str, value: Value) -> Result<()> {
        if key.len() > MAX_NAME_BYTES {
            return Err(Error::invalid(format!(
                "a key must be at most {MAX_NAME_BYTES} bytes"
            )));
        }
        let value = value_of(value)?;
        self.shared.edit(|inner| {
            let m = inner.map(name)?;
            let mut txn = inner.doc.transact_mut_with(LOCAL);
            m.insert(&mut txn, key, value);
            Ok(())
        })
    }

    /// Removes `key` from the map `name` (nothing when absent).
    pub fn map_delete(&self, name: &str, key: &str) -> Result<()> {
        self.shared.edit(|inner| {
            let m = inner.map(name)?;
            let mut txn = inner.doc.transact_mut_with(LOCAL);
            m.remove(&mut txn, key);
            Ok(())
        })
    }

    /// The value of `key` in the map `name`, as JSON text.
    pub fn map_get(&self, name: &str, key: &str) -> Result<Option<String>> {
        self.read(|inner| {
            let m = inner.map(name)?;
            let txn = inner.doc.transact();
            Ok(m.get(&txn, key).map(|v| convert::json_of(&txn, &v)))
        })
    }

    /// The entries of the map `name`, values as JSON text, by key.
    pub fn map(&self, name: &str) -> Result<BTreeMap<String, String>> {
        self.read(|inner| {
            let m = inner.map(name)?;
            let txn = inner.doc.transact();
            Ok(m.iter(&txn)
                .map(|(k, v)| (k.to_owned(), convert::json_of(&txn, &v)))
                .collect())
        })
    }

    // ----- undo

    /// Undoes this device's last step of edits (never other people's). False when there is
    /// none.
    pub fn undo(&self) -> Result<bool> {
        self.shared.edit(|inner| Ok(inner.history.undo()))
    }

    /// Redoes the last undone step. False when there is none.
    pub fn redo(&self) -> Result<bool> {
        self.shared.edit(|inner| Ok(inner.history.redo()))
    }

    pub fn can_undo(&self) -> bool {
        self.shared.inner.lock().history.can_undo()
    }

    pub fn can_redo(&self) -> bool {
        self.shared.inner.lock().history.can_redo()
    }

    /// Ends the current undo step: the next edit starts a new one however soon it comes.
    pub fn stop_capturing(&self) {
        self.shared.inner.lock().history.stop_capturing();
    }

    // ----- observing

    /// Delivers every change from now on (local and remote), as deltas, of the values this
    /// handle's document has used, and the server's refusals of its edits. A value is used from
    /// its first read or edit on this device (`text`, `list`, `map`, `map_get`, an edit): as in
    /// Yjs, a root value has no kind until it is asked for as a text, a list or a map, so read
    /// the values a view shows before subscribing (reading an absent one gives it its kind).
    pub fn subscribe(&self, listener: Arc<dyn CollabListener>) -> Subscription {
        self.shared.ctx.dispatcher.register(
            Target::Collab(self.shared.room.clone(), self.shared.name.clone(), listener),
            Vec::new(),
        )
    }

    /// Delivers the peers present in the document: the current list first, then each change.
    pub fn subscribe_peers(&self, listener: Arc<dyn AwarenessListener>) -> Subscription {
        let inner = self.shared.inner.lock();
        let current = peers_of(&inner);
        // Registered under the document's lock: no change is emitted in between.
        let sub = self.shared.ctx.dispatcher.register(
            Target::Awareness(self.shared.room.clone(), self.shared.name.clone(), listener),
            vec![AppEvent::Peers(
                self.shared.room.clone(),
                self.shared.name.clone(),
                current,
            )],
        );
        drop(inner);
        sub
    }

    /// The peers present now.
    pub fn peers(&self) -> Vec<CollabPeer> {
        peers_of(&self.shared.inner.lock())
    }

    // ----- awareness

    /// Sets the app's part of this device's awareness state (name, colour, …: at most
    /// `MAX_AWARENESS_BYTES` of JSON with the selection), or clears it with `None`.
    pub fn set_local_state(&self, state: Option<Value>) -> Result<()> {
        self.set_awareness(|a| {
            a.state = state;
            Ok(())
        })
    }

    /// Sets this device's selection in the text `name` (`anchor` = `head` for a caret), kept as
    /// relative positions so it stays on the same characters while others edit.
    pub fn set_selection(&self, name: &str, anchor: u32, head: u32) -> Result<()> {
        self.shared.check_open()?;
        let (a, h) = {
            let mut inner = self.shared.inner.lock();
            let t = inner.text(name)?;
            let txn = inner.doc.transact();
            let len = t.len(&txn);
            check_range("selection anchor", anchor, 0, len)?;
            check_range("selection head", head, 0, len)?;
            let at = |i: u32| {
                // At the very end nothing follows: stick to what precedes.
                t.sticky_index(&txn, i, Assoc::After)
                    .or_else(|| t.sticky_index(&txn, i, Assoc::Before))
                    .ok_or_else(|| Error::state("cannot anchor a selection in this text"))
            };
            (at(anchor)?, at(head)?)
        };
        let name = name.to_owned();
        self.set_awareness(move |l| {
            l.selection = Some((name, a, h));
            Ok(())
        })
    }

    /// Clears this device's selection.
    pub fn clear_selection(&self) -> Result<()> {
        self.set_awareness(|a| {
            a.selection = None;
            Ok(())
        })
    }

    fn set_awareness(&self, f: impl FnOnce(&mut LocalAwareness) -> Result<()>) -> Result<()> {
        self.shared.check_open()?;
        {
            let mut inner = self.shared.inner.lock();
            let mut next = LocalAwareness {
                state: inner.local_awareness.state.clone(),
                selection: inner.local_awareness.selection.clone(),
                ..LocalAwareness::default()
            };
            f(&mut next)?;
            roam_proto::collab::awareness(
                &self.shared.room,
                &self.shared.name,
                awareness_json(&next).as_ref(),
            )?;
            let a = &mut inner.local_awareness;
            a.state = next.state;
            a.selection = next.selection;
            a.dirty = true;
        }
        self.shared.send_awareness_if_dirty();
        Ok(())
    }

    // ----- storage

    /// Stores every edit made so far and returns once the store has committed them (they are
    /// queued for the server too).
    pub fn flush(&self) -> Result<()> {
        self.shared.commit()
    }

    /// Stores what is pending and writes the document as one snapshot now.
    pub fn compact(&self) -> Result<()> {
        self.shared.commit()?;
        let mut c = self.shared.commit.lock();
        self.shared.compact_locked(&mut c)
    }

    /// What the store holds of the document: (snapshot bytes, appended update bytes).
    pub fn stored_size(&self) -> Result<(u64, u64)> {
        let (room, doc) = (&self.shared.room, &self.shared.name);
        self.shared
            .ctx
            .db
            .read(|c| reads::collab_sizes(c, room, doc))
    }

    /// The whole document as one Yjs update (v1), e.g. to hand to another Yjs library.
    pub fn encode_state(&self) -> Vec<u8> {
        self.shared
            .inner
            .lock()
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    /// Stores what is pending, clears this device's awareness, stops following the document
    /// and closes every handle of it (their calls then fail). Opening it again loads it anew.
    pub fn close(&self) -> Result<()> {
        self.shared.close()
    }

    fn read<T>(&self, f: impl FnOnce(&mut Inner) -> Result<T>) -> Result<T> {
        self.shared.check_open()?;
        let mut inner = self.shared.inner.lock();
        f(&mut inner)
    }
}
