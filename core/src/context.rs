//! The state every part of a running client shares, and the one way to write to the store.
//!
//! A [`Context`] is created by `Client::open` and shared (behind an `Arc`) by the public
//! `Client` handle and the background tasks (socket, typing, presence). It owns the store, the
//! listener dispatcher, the outbox scheduler, the counters and the control signals.
//!
//! [`Context::write`] is the only path to the writer connection. It runs a closure in one
//! transaction and collects the closure's [`Effects`] (listener events, outbox entries to
//! schedule, rooms to subscribe). After the commit, and while it still holds the writer, it hands
//! the events to the dispatcher and the entries to the scheduler, so that both see changes in
//! commit order; then it lets go (handing the writer to the next thread waiting for it, so a
//! series of transactions cannot starve the app's writes) and wakes whoever needs to know. Lock
//! order is always writer → scheduler → connection state, never the other way round.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use roam_proto::ClientFrame;
use rusqlite::{Transaction, TransactionBehavior};
use tokio::sync::{mpsc, watch, Notify};

use crate::auth::TokenProvider;
use crate::config::ClientConfig;
use crate::db::Db;
use crate::error::Result;
use crate::http::Http;
use crate::listeners::{AppEvent, Dispatcher};
use crate::metrics::Metrics;
use crate::model::{ConnectionState, RoomUpdate, SyncPhase, SyncStatus};
use crate::presence::PresenceTracker;
use crate::scheduler::{Queued, Scheduler};
use crate::typing::Typing;

/// What a write transaction causes besides the rows it changes.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub events: Vec<AppEvent>,
    pub enqueued: Vec<Queued>,
    /// Rooms the socket should start following.
    pub subscribe: Vec<String>,
    /// Outbox answers this transaction stores (see `Scheduler::answers_stored`).
    pub answers: usize,
    /// Sends whose upload is done: the scheduler may put them on the wire.
    pub released: Vec<String>,
    /// Files of the media directory to delete once committed (their rows are gone).
    pub remove_files: Vec<String>,
    /// The uploader has new work (an upload queued or retried).
    pub uploads: bool,
}

impl Effects {
    pub(crate) fn emit(&mut self, event: AppEvent) {
        self.events.push(event);
    }

    pub(crate) fn room(&mut self, update: RoomUpdate) {
        self.events.push(AppEvent::Room(update));
    }

    pub(crate) fn enqueue(&mut self, entry: Queued) {
        self.enqueued.push(entry);
    }
}

/// Whether the app wants the client connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Online,
    Offline,
    Shutdown,
}

/// Commands for the live connection.
// Commands pass through a channel one at a time; a frame with a message's attachment inline
// is not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum SessionCmd {
    /// Send this frame as it is.
    Frame(ClientFrame),
    /// Start following these rooms (from their cursors).
    Subscribe(Vec<String>),
    /// Ping now and drop the link if no answer comes within the heartbeat timeout.
    CheckLink,
    /// Follow (or catch up again) a collaborative document: send `collab_sync` with its local
    /// state vector.
    CollabSync { room: String, doc: String },
}

/// What the connection needs of the open collaborative documents (implemented by
/// `crate::collab`, which the connection does not otherwise know).
pub(crate) trait CollabRouter: Send + Sync {
    /// The documents open now, to follow after a (re)connect.
    fn open_docs(&self) -> Vec<(String, String)>;
    /// A document's state vector (v1), or `None` when it is not open.
    fn state_vector(&self, room: &str, doc: &str) -> Option<Vec<u8>>;
    /// The answer to a `collab_sync`.
    fn on_synced(&self, answer: roam_proto::CollabSync);
    /// A `collab_sync` refused. Returns true when trying again later may help.
    fn on_sync_failed(&self, room: &str, doc: &str, error: &roam_proto::ErrorBody);
    /// An update of a followed document. Returns true when a frame was missed (a gap in
    /// `seq`): the document must be synced again.
    fn on_update(&self, update: roam_proto::CollabUpdate) -> bool;
    /// Someone's awareness state in a followed document.
    fn on_awareness(&self, update: roam_proto::AwarenessUpdate);
    /// The connection ended: nothing is followed any more.
    fn on_disconnected(&self);
}

/// Shared state of one client.
pub(crate) struct Context {
    pub config: ClientConfig,
    /// The account's user id.
    pub me: String,
    pub db: Db,
    pub dispatcher: Dispatcher,
    pub outbox: Mutex<Scheduler>,
    /// Wakes the connection when there is something new to send.
    pub outbox_wakeup: Notify,
    /// Wakes the uploader when an upload is queued or retried.
    pub uploads_wakeup: Notify,
    /// The media directory and its cache.
    pub media: crate::files::Media,
    pub metrics: Metrics,
    pub typing: Arc<Typing>,
    pub presence: Arc<PresenceTracker>,
    pub tokens: Arc<dyn TokenProvider>,
    pub http: Http,
    connection: Mutex<ConnectionState>,
    session: Mutex<Option<mpsc::UnboundedSender<SessionCmd>>>,
    pub want: watch::Sender<Want>,
    /// The app says the network is back: skip the current wait.
    pub network_available: Notify,
    /// The sync status as last computed (see [`Context::refresh_sync`]).
    pub sync: watch::Sender<SyncStatus>,
    /// The live session has caught up every followed room.
    recovered: AtomicBool,
    /// Why the account needs a new sign-in (with [`ConnectionState::NeedsSignIn`]).
    sign_in: Mutex<Option<String>>,
    /// Reset rooms being reloaded now (see `sync::reload_room`).
    reloading: Mutex<HashSet<String>>,
    /// The open collaborative documents (set once by `Client::open`).
    pub collab: std::sync::OnceLock<Arc<dyn CollabRouter>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("me", &self.me)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub(crate) fn new(
        config: ClientConfig,
        db: Db,
        dispatcher: Dispatcher,
        tokens: Arc<dyn TokenProvider>,
        http: Http,
    ) -> Self {
        let (want, _) = watch::channel(Want::Offline);
        let media = crate::files::Media::new(config.media_dir(), config.media.clone());
        Context {
            me: config.user_id.clone(),
            outbox: Mutex::new(Scheduler::new(config.outbox)),
            typing: Arc::new(Typing::new(config.typing)),
            presence: Arc::new(PresenceTracker::new(config.presence)),
            config,
            db,
            dispatcher,
            outbox_wakeup: Notify::new(),
            uploads_wakeup: Notify::new(),
            media,
            metrics: Metrics::default(),
            tokens,
            http,
            connection: Mutex::new(ConnectionState::Offline),
            session: Mutex::new(None),
            want,
            network_available: Notify::new(),
            sync: watch::channel(SyncStatus {
                phase: SyncPhase::Offline,
                pending_writes: 0,
                oldest_pending_at: None,
            })
            .0,
            recovered: AtomicBool::new(false),
            sign_in: Mutex::new(None),
            reloading: Mutex::new(HashSet::new()),
            collab: std::sync::OnceLock::new(),
        }
    }

    /// The open collaborative documents, when the client has any way to open them.
    pub(crate) fn collab(&self) -> Option<&Arc<dyn CollabRouter>> {
        self.collab.get()
    }

    /// Claims the reload of a reset room: false when one is already running.
    pub(crate) fn start_reload(&self, room: &str) -> bool {
        self.reloading.lock().insert(room.to_owned())
    }

    /// The reload of a reset room is over (done or given up).
    pub(crate) fn end_reload(&self, room: &str) {
        self.reloading.lock().remove(room);
    }

    /// Runs `f` in one write transaction; see the module docs.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>, &mut Effects) -> Result<T>,
    ) -> Result<T> {
        self.db.check_open()?;
        self.write_on(self.db.writer(), f)
    }

    /// [`Context::write`] for background work that writes again and again (a catch-up): a
    /// write waiting for the writer goes first (see `Db::writer_in_turn`).
    pub(crate) fn write_in_turn<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>, &mut Effects) -> Result<T>,
    ) -> Result<T> {
        self.db.check_open()?;
        self.write_on(self.db.writer_in_turn(), f)
    }

    fn write_on<T>(
        &self,
        mut conn: parking_lot::MutexGuard<'_, rusqlite::Connection>,
        f: impl FnOnce(&Transaction<'_>, &mut Effects) -> Result<T>,
    ) -> Result<T> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut fx = Effects::default();
        let out = f(&tx, &mut fx)?;
        tx.commit()?;
        self.db.committed();
        self.dispatcher.emit_all(fx.events);
        let wake = !fx.enqueued.is_empty() || !fx.released.is_empty();
        if wake || fx.answers > 0 {
            let mut s = self.outbox.lock();
            s.answers_stored(fx.answers);
            for e in fx.enqueued {
                s.push(e);
            }
            for id in &fx.released {
                s.release(id);
            }
        }
        self.refresh_sync();
        // Hand the writer straight to a thread waiting for it, if any: a long series of
        // transactions (a catch-up) must not take it back before an app write gets its turn.
        parking_lot::MutexGuard::unlock_fair(conn);
        if wake {
            self.outbox_wakeup.notify_one();
        }
        if !fx.subscribe.is_empty() {
            self.send(SessionCmd::Subscribe(fx.subscribe));
        }
        if fx.uploads {
            self.uploads_wakeup.notify_one();
        }
        for file in fx.remove_files {
            crate::files::remove_file(std::path::Path::new(&file));
        }
        Ok(out)
    }

    /// The current connection state.
    pub(crate) fn connection_state(&self) -> ConnectionState {
        *self.connection.lock()
    }

    /// Changes the connection state and tells the listeners (only on a real change).
    pub(crate) fn set_connection_state(&self, state: ConnectionState) {
        {
            let mut current = self.connection.lock();
            if *current == state {
                return;
            }
            *current = state;
            tracing::debug!(?state, "connection state");
            self.dispatcher.emit(AppEvent::Connection(state));
        }
        self.refresh_sync();
    }

    /// The account needs a new sign-in: nothing is sent until the app asks to try again.
    pub(crate) fn set_needs_sign_in(&self, reason: String) {
        tracing::warn!(%reason, "the account needs a new sign-in");
        *self.sign_in.lock() = Some(reason);
        self.set_connection_state(ConnectionState::NeedsSignIn);
    }

    /// Whether the live session has caught up (false between sessions).
    pub(crate) fn set_recovered(&self, recovered: bool) {
        self.recovered.store(recovered, Ordering::SeqCst);
        self.refresh_sync();
    }

    /// Recomputes the sync status from the connection state, the session's recovery and the
    /// scheduler, and tells the listeners if it changed. The computation and the emission happen
    /// under the status's own lock, so listeners see statuses in the order they were computed.
    /// Lock order: (writer →) status → scheduler → connection.
    pub(crate) fn refresh_sync(&self) {
        self.sync.send_if_modified(|status| {
            let (pending, oldest) = self.outbox.lock().figures();
            let phase = match *self.connection.lock() {
                ConnectionState::Offline => SyncPhase::Offline,
                ConnectionState::Connecting | ConnectionState::Waiting { .. } => {
                    SyncPhase::Connecting
                }
                ConnectionState::Connected if self.recovered.load(Ordering::SeqCst) => {
                    SyncPhase::Synced
                }
                ConnectionState::Connected => SyncPhase::CatchingUp,
                ConnectionState::StorageFull { .. } => SyncPhase::StorageFull,
                ConnectionState::NeedsSignIn => SyncPhase::NeedsSignIn {
                    reason: self.sign_in.lock().clone().unwrap_or_default(),
                },
            };
            let next = SyncStatus {
                phase,
                pending_writes: pending,
                oldest_pending_at: oldest,
            };
            if *status == next {
                return false;
            }
            self.dispatcher.emit(AppEvent::Sync(next.clone()));
            *status = next;
            true
        });
    }

    /// Registers a sync status listener with the current status, atomically with its changes.
    pub(crate) fn subscribe_sync(
        &self,
        listener: Arc<dyn crate::listeners::SyncStatusListener>,
    ) -> crate::listeners::Subscription {
        let mut sub = None;
        // `send_if_modified` holds the status lock: no change can be emitted in between.
        self.sync.send_if_modified(|status| {
            sub = Some(self.dispatcher.register(
                crate::listeners::Target::Sync(listener.clone()),
                vec![AppEvent::Sync(status.clone())],
            ));
            false
        });
        match sub {
            Some(s) => s,
            None => self.dispatcher.register(
                crate::listeners::Target::Sync(listener),
                vec![AppEvent::Sync(self.sync.borrow().clone())],
            ),
        }
    }

    /// Registers a connection listener with the current state, atomically with state changes.
    pub(crate) fn subscribe_connection(
        &self,
        listener: Arc<dyn crate::listeners::ConnectionStateListener>,
    ) -> crate::listeners::Subscription {
        let current = self.connection.lock();
        self.dispatcher.register(
            crate::listeners::Target::Connection(listener),
            vec![AppEvent::Connection(*current)],
        )
    }

    /// Installs (or clears) the command channel of the live connection.
    pub(crate) fn set_session(&self, tx: Option<mpsc::UnboundedSender<SessionCmd>>) {
        *self.session.lock() = tx;
    }

    /// Sends a command to the live connection; dropped when there is none (typing and presence
    /// are not queued; subscriptions are sent after every connect anyway).
    pub(crate) fn send(&self, cmd: SessionCmd) -> bool {
        match self.session.lock().as_ref() {
            Some(tx) => tx.send(cmd).is_ok(),
            None => false,
        }
    }

    /// Emits an event outside a write (typing, connection).
    pub(crate) fn emit(&self, event: AppEvent) {
        self.dispatcher.emit(event);
    }
}
