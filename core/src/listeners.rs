//! Listener traits and the dispatcher that calls them.
//!
//! The app registers a listener with one of the `Client::subscribe_*` calls and gets back a
//! [`Subscription`]. Every callback is made from one dispatcher thread owned by the client, never
//! from the thread that caused the change, and never while the core holds a lock. So a listener
//! may call back into the client freely, and listeners see changes in exactly the order they
//! were committed: the core hands events to the dispatcher while it still holds the database
//! writer, so queue order is commit order.
//!
//! Registration goes through the same queue as the events. A subscription that delivers "the
//! current state first" (connection state, unread count) reads that state under the same lock
//! that orders its changes and queues it with the registration, so the listener sees the current
//! state, then every later change, and nothing stale.
//!
//! Stopping: [`Subscription::close`] (or dropping the handle) flips a flag that the dispatcher
//! checks under a per-subscription re-entrant lock held for the whole callback. When `close`
//! returns, no callback of that subscription is running on another thread and none will start.
//! A listener may close its own subscription from inside a callback (the lock is re-entrant).
//! A panicking listener is caught and logged; it does not stop the dispatcher.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use parking_lot::{Mutex, ReentrantMutex};

use crate::model::{
    CollabChange, CollabError, CollabPeer, ConnectionState, DocumentUpdate, NotificationInfo,
    PresenceInfo, RoomUpdate, SyncStatus, UploadProgress,
};

/// Receives connection state changes. The current state is delivered first.
pub trait ConnectionStateListener: Send + Sync {
    fn on_connection_state(&self, state: ConnectionState);
}

/// Receives changes of rooms: messages added, edited, deleted, send states, room data,
/// members, resets.
pub trait RoomListener: Send + Sync {
    fn on_room_update(&self, update: RoomUpdate);
}

/// Receives the list of users typing in a room whenever it changes (an empty list: nobody).
pub trait TypingListener: Send + Sync {
    fn on_typing(&self, room: String, users: Vec<String>);
}

/// Receives presence changes of other users.
pub trait PresenceListener: Send + Sync {
    fn on_presence(&self, presence: PresenceInfo);
}

/// Receives document updates and edit conflicts.
pub trait DocumentListener: Send + Sync {
    fn on_document_update(&self, update: DocumentUpdate);
}

/// Receives new notifications and the unread count (the current count is delivered first).
pub trait NotificationListener: Send + Sync {
    fn on_notification(&self, notification: NotificationInfo);
    fn on_unread_count(&self, count: u64);
}

/// Receives the sync status (the current one first) whenever it changes.
pub trait SyncStatusListener: Send + Sync {
    fn on_sync_status(&self, status: SyncStatus);
}

/// Receives the progress of attachment uploads from this device: bytes sent (after each
/// request), and the end of each (done, failed, cancelled).
pub trait UploadListener: Send + Sync {
    fn on_upload_progress(&self, progress: UploadProgress);
}

/// Receives the changes of one collaborative document (`CollabDoc::subscribe`), as deltas an
/// editor can apply, and the refusals of its edits by the server.
pub trait CollabListener: Send + Sync {
    fn on_change(&self, change: CollabChange);
    fn on_error(&self, error: CollabError);
}

/// Receives the other people present in one collaborative document (`CollabDoc::subscribe_peers`):
/// the whole list, the current one first, then whenever it changes (empty: nobody, or offline).
pub trait AwarenessListener: Send + Sync {
    fn on_peers(&self, peers: Vec<CollabPeer>);
}

/// What the dispatcher calls on a timeline (implemented in `timeline.rs`).
pub(crate) trait TimelineSink: Send + Sync {
    /// The room it shows.
    fn room(&self) -> &str;
    /// Reads the window again and delivers the diffs; `reset`: start a fresh window.
    fn refresh(&self, reset: bool);
}

/// What the dispatcher calls on a room list (implemented in `room_list.rs`).
pub(crate) trait RoomListSink: Send + Sync {
    /// Reads the named rooms again (`None`: every room, a fresh list) and delivers the diffs.
    fn refresh(&self, rooms: Option<&HashSet<String>>);
}

/// Something to deliver.
#[derive(Debug, Clone)]
pub(crate) enum AppEvent {
    Connection(ConnectionState),
    Room(RoomUpdate),
    Typing {
        room: String,
        users: Vec<String>,
    },
    Presence(PresenceInfo),
    Document(DocumentUpdate),
    Notification(NotificationInfo),
    Unread(u64),
    /// A timeline of this room changed its window bounds: read it again.
    TimelineRefresh(String),
    /// The account's read marker of this room moved.
    ReadMarker(String),
    Sync(SyncStatus),
    Upload(UploadProgress),
    Collab(CollabChange),
    CollabError(CollabError),
    /// The peers of a collaborative document: (room, doc, peers).
    Peers(String, String, Vec<CollabPeer>),
}

/// A registered listener with its filter.
pub(crate) enum Target {
    Connection(Arc<dyn ConnectionStateListener>),
    /// `None`: every room.
    Room(Option<String>, Arc<dyn RoomListener>),
    Typing(Option<String>, Arc<dyn TypingListener>),
    Presence(Arc<dyn PresenceListener>),
    Document(Option<String>, Arc<dyn DocumentListener>),
    Notification(Arc<dyn NotificationListener>),
    Timeline(Arc<dyn TimelineSink>),
    RoomList(Arc<dyn RoomListSink>),
    Sync(Arc<dyn SyncStatusListener>),
    Upload(Arc<dyn UploadListener>),
    /// One collaborative document: (room, doc).
    Collab(String, String, Arc<dyn CollabListener>),
    Awareness(String, String, Arc<dyn AwarenessListener>),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Target::Connection(_) => "Connection",
            Target::Room(..) => "Room",
            Target::Typing(..) => "Typing",
            Target::Presence(_) => "Presence",
            Target::Document(..) => "Document",
            Target::Notification(_) => "Notification",
            Target::Timeline(_) => "Timeline",
            Target::RoomList(_) => "RoomList",
            Target::Sync(_) => "Sync",
            Target::Upload(_) => "Upload",
            Target::Collab(..) => "Collab",
            Target::Awareness(..) => "Awareness",
        };
        f.write_str(name)
    }
}

enum Command {
    Register(Box<Registration>),
    Unregister(u64),
    Event(Box<AppEvent>),
    /// The events of one transaction, in order.
    Events(Vec<AppEvent>),
}

struct Registration {
    shared: Arc<Shared>,
    target: Target,
    initial: Vec<AppEvent>,
}

struct Shared {
    id: u64,
    active: ReentrantMutex<Cell<bool>>,
}

/// Handle of a listener registration: delivery stops when it is dropped or closed.
pub struct Subscription {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Command>>>,
    /// The dispatcher's count of open subscriptions.
    open: Arc<AtomicUsize>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.shared.id)
            .finish()
    }
}

impl Subscription {
    /// Stops delivery. When this returns, no callback of this subscription is running (unless
    /// `close` was called from inside that callback) and none will be made.
    pub fn close(&self) {
        {
            let guard = self.shared.active.lock();
            guard.set(false);
        }
        if let Some(tx) = self.tx.lock().take() {
            self.open.fetch_sub(1, Ordering::SeqCst);
            // The dispatcher may be gone already; then there is nothing to clean up.
            let _ = tx.send(Command::Unregister(self.shared.id));
        }
    }

    /// True until closed.
    pub fn is_active(&self) -> bool {
        self.shared.active.lock().get()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.close();
    }
}

/// The sending side of the dispatcher, shared by the whole core.
///
/// While no subscription is open, events are dropped instead of queued: nobody could receive
/// them (a subscription opened later only sees what is queued after its registration), and a
/// write then costs no allocation and no wake-up of the dispatcher thread.
#[derive(Debug, Clone)]
pub(crate) struct Dispatcher {
    tx: mpsc::Sender<Command>,
    next_id: Arc<AtomicU64>,
    /// Subscriptions registered and not closed.
    open: Arc<AtomicUsize>,
}

impl Dispatcher {
    /// Starts the dispatcher thread. It ends when every sender is gone.
    pub(crate) fn start() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("roam-listeners".into())
            .spawn(move || run(rx))?;
        Ok(Dispatcher {
            tx,
            next_id: Arc::new(AtomicU64::new(1)),
            open: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// True when some subscription could receive an event queued now.
    pub(crate) fn listened(&self) -> bool {
        self.open.load(Ordering::SeqCst) > 0
    }

    /// Queues an event for every matching listener.
    pub(crate) fn emit(&self, event: AppEvent) {
        if self.listened() {
            let _ = self.tx.send(Command::Event(Box::new(event)));
        }
    }

    /// Queues the events of one transaction, in order, as one message to the dispatcher thread.
    pub(crate) fn emit_all(&self, events: Vec<AppEvent>) {
        match events.len() {
            0 => {}
            1 => {
                if let Some(e) = events.into_iter().next() {
                    self.emit(e);
                }
            }
            _ => {
                if self.listened() {
                    let _ = self.tx.send(Command::Events(events));
                }
            }
        }
    }

    /// Registers a listener; `initial` events are delivered to it (and only it) first.
    pub(crate) fn register(&self, target: Target, initial: Vec<AppEvent>) -> Subscription {
        let shared = Arc::new(Shared {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            active: ReentrantMutex::new(Cell::new(true)),
        });
        // Counted before the registration is queued: an event queued after it is then never
        // dropped for want of listeners.
        self.open.fetch_add(1, Ordering::SeqCst);
        let _ = self.tx.send(Command::Register(Box::new(Registration {
            shared: shared.clone(),
            target,
            initial,
        })));
        Subscription {
            shared,
            tx: Mutex::new(Some(self.tx.clone())),
            open: self.open.clone(),
        }
    }
}

fn run(rx: mpsc::Receiver<Command>) {
    let mut subs: Vec<(Arc<Shared>, Target)> = Vec::new();
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Command::Register(reg) => {
                let Registration {
                    shared,
                    target,
                    initial,
                } = *reg;
                match &target {
                    Target::Timeline(t) => refresh_timeline(&shared, t.as_ref(), true),
                    Target::RoomList(l) => refresh_room_list(&shared, l.as_ref(), None),
                    _ => {}
                }
                for event in &initial {
                    deliver(&shared, &target, event);
                }
                subs.push((shared, target));
            }
            Command::Unregister(id) => subs.retain(|(s, _)| s.id != id),
            Command::Event(event) => {
                for (shared, target) in &subs {
                    deliver_all(shared, target, std::slice::from_ref(event.as_ref()));
                }
            }
            Command::Events(events) => {
                for (shared, target) in &subs {
                    deliver_all(shared, target, &events);
                }
            }
        }
    }
}

/// Delivers the events of one transaction to one subscription: each event to a listener, one
/// refresh to a timeline that any of them concerns, one refresh of the rooms they touch to a
/// room list.
fn deliver_all(shared: &Shared, target: &Target, events: &[AppEvent]) {
    if let Target::RoomList(l) = target {
        let touched: HashSet<String> = events
            .iter()
            .filter_map(|e| match e {
                AppEvent::Room(u) => Some(u.room().to_owned()),
                AppEvent::ReadMarker(room) => Some(room.clone()),
                _ => None,
            })
            .collect();
        if !touched.is_empty() {
            refresh_room_list(shared, l.as_ref(), Some(&touched));
        }
        return;
    }
    let Target::Timeline(t) = target else {
        for event in events {
            deliver(shared, target, event);
        }
        return;
    };
    let mut touched = false;
    let mut reset = false;
    for event in events {
        match event {
            AppEvent::Room(u) if u.room() == t.room() => {
                touched = true;
                reset |= matches!(u, RoomUpdate::Reset { .. } | RoomUpdate::RoomRemoved { .. });
            }
            AppEvent::TimelineRefresh(room) if room == t.room() => touched = true,
            _ => {}
        }
    }
    if touched {
        refresh_timeline(shared, t.as_ref(), reset);
    }
}

fn refresh_timeline(shared: &Shared, timeline: &dyn TimelineSink, reset: bool) {
    let guard = shared.active.lock();
    if !guard.get() {
        return;
    }
    if catch_unwind(AssertUnwindSafe(|| timeline.refresh(reset))).is_err() {
        tracing::error!(
            subscription = shared.id,
            "a timeline listener panicked; it stays registered"
        );
    }
    drop(guard);
}

fn refresh_room_list(shared: &Shared, list: &dyn RoomListSink, rooms: Option<&HashSet<String>>) {
    let guard = shared.active.lock();
    if !guard.get() {
        return;
    }
    if catch_unwind(AssertUnwindSafe(|| list.refresh(rooms))).is_err() {
        tracing::error!(
            subscription = shared.id,
            "a room list listener panicked; it stays registered"
        );
    }
    drop(guard);
}

fn deliver(shared: &Shared, target: &Target, event: &AppEvent) {
    let guard = shared.active.lock();
    if !guard.get() {
        return;
    }
    let call = || match (target, event) {
        (Target::Connection(l), AppEvent::Connection(s)) => l.on_connection_state(*s),
        (Target::Room(filter, l), AppEvent::Room(u))
            if filter.as_deref().is_none_or(|r| r == u.room()) =>
        {
            l.on_room_update(u.clone())
        }
        (Target::Typing(filter, l), AppEvent::Typing { room, users })
            if filter.as_deref().is_none_or(|r| r == room) =>
        {
            l.on_typing(room.clone(), users.clone())
        }
        (Target::Presence(l), AppEvent::Presence(p)) => l.on_presence(p.clone()),
        (Target::Document(filter, l), AppEvent::Document(d)) => {
            let room = match d {
                DocumentUpdate::Updated(doc) => &doc.room,
                DocumentUpdate::Conflict { local, .. } => &local.room,
            };
            if filter.as_deref().is_none_or(|r| r == room) {
                l.on_document_update(d.clone());
            }
        }
        (Target::Notification(l), AppEvent::Notification(n)) => l.on_notification(n.clone()),
        (Target::Notification(l), AppEvent::Unread(c)) => l.on_unread_count(*c),
        (Target::Sync(l), AppEvent::Sync(s)) => l.on_sync_status(s.clone()),
        (Target::Upload(l), AppEvent::Upload(p)) => l.on_upload_progress(p.clone()),
        (Target::Collab(room, doc, l), AppEvent::Collab(c)) if *room == c.room && *doc == c.doc => {
            l.on_change(c.clone())
        }
        (Target::Collab(room, doc, l), AppEvent::CollabError(e))
            if *room == e.room && *doc == e.doc =>
        {
            l.on_error(e.clone())
        }
        (Target::Awareness(room, doc, l), AppEvent::Peers(r, d, peers))
            if room == r && doc == d =>
        {
            l.on_peers(peers.clone())
        }
        _ => {}
    };
    if catch_unwind(AssertUnwindSafe(call)).is_err() {
        tracing::error!(
            subscription = shared.id,
            "a listener panicked; it stays registered"
        );
    }
    drop(guard);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Collect(Mutex<Vec<ConnectionState>>, mpsc::Sender<()>);
    impl ConnectionStateListener for Collect {
        fn on_connection_state(&self, state: ConnectionState) {
            self.0.lock().push(state);
            let _ = self.1.send(());
        }
    }

    #[test]
    fn initial_state_first_then_changes_and_nothing_after_close() {
        let d = Dispatcher::start().expect("thread");
        let (tx, rx) = mpsc::channel();
        let l = Arc::new(Collect(Mutex::new(Vec::new()), tx));
        let sub = d.register(
            Target::Connection(l.clone()),
            vec![AppEvent::Connection(ConnectionState::Offline)],
        );
        d.emit(AppEvent::Connection(ConnectionState::Connecting));
        for _ in 0..2 {
            rx.recv_timeout(Duration::from_secs(5)).expect("delivery");
        }
        sub.close();
        d.emit(AppEvent::Connection(ConnectionState::Connected));
        // A later subscription proves the dispatcher has processed the event above.
        let (tx2, rx2) = mpsc::channel();
        let l2 = Arc::new(Collect(Mutex::new(Vec::new()), tx2));
        let _sub2 = d.register(Target::Connection(l2), Vec::new());
        d.emit(AppEvent::Connection(ConnectionState::Offline));
        rx2.recv_timeout(Duration::from_secs(5))
            .expect("second listener");
        assert_eq!(
            *l.0.lock(),
            vec![ConnectionState::Offline, ConnectionState::Connecting]
        );
    }

    struct Panics;
    impl ConnectionStateListener for Panics {
        fn on_connection_state(&self, _state: ConnectionState) {
            panic!("listener bug");
        }
    }

    #[test]
    fn a_panicking_listener_does_not_stop_others() {
        let d = Dispatcher::start().expect("thread");
        let _bad = d.register(Target::Connection(Arc::new(Panics)), Vec::new());
        let (tx, rx) = mpsc::channel();
        let good = Arc::new(Collect(Mutex::new(Vec::new()), tx));
        let _sub = d.register(Target::Connection(good.clone()), Vec::new());
        d.emit(AppEvent::Connection(ConnectionState::Connecting));
        rx.recv_timeout(Duration::from_secs(5)).expect("delivery");
        assert_eq!(*good.0.lock(), vec![ConnectionState::Connecting]);
    }
}
