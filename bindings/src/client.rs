//! `RoamClient`: the exported client object. It holds the core client in `inner` and forwards
//! every call, converting types at the boundary; no logic lives here.
//!
//! The core runs on tokio. Swift and Kotlin call in from their own threads, so this module owns
//! one process-wide tokio runtime: synchronous calls enter it, and async calls run their work on
//! it and await the task's handle (a runtime-agnostic future), so they can be awaited from a
//! Swift `Task` or a Kotlin coroutine, and cancelled there without harming the client.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::error::RoamError;
use crate::types::{
    ClientOptions, ConnectionState, Document, DocumentUpdate, Member, Message, Metrics,
    Notification, OutboxEntry, Presence, Room, RoomKind, RoomUpdate,
};

fn runtime() -> Result<&'static tokio::runtime::Runtime, RoamError> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("roam")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|reason| RoamError::Internal {
        reason: format!("cannot start the runtime: {reason}"),
    })
}

/// Gives the core a token when it connects. Swift: a protocol; Kotlin: an interface.
#[uniffi::export(with_foreign)]
pub trait TokenProvider: Send + Sync {
    /// A token to use now; `refresh` is true when the last one was refused or expired.
    fn token(&self, refresh: bool) -> Result<String, RoamError>;
}

struct Tokens(Arc<dyn TokenProvider>);

#[async_trait::async_trait]
impl roam_core::TokenProvider for Tokens {
    async fn token(&self, refresh: bool) -> roam_core::Result<String> {
        let provider = Arc::clone(&self.0);
        // The app's provider may block (keychain, network): keep it off the async workers.
        match tokio::task::spawn_blocking(move || provider.token(refresh)).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(roam_core::Error::Unauthorized(e.to_string())),
            Err(e) => Err(roam_core::Error::Unauthorized(format!(
                "token provider failed: {e}"
            ))),
        }
    }
}

/// Connection state changes; the current state is delivered first.
#[uniffi::export(with_foreign)]
pub trait ConnectionListener: Send + Sync {
    fn on_connection_state(&self, state: ConnectionState);
}

/// Messages and membership of rooms.
#[uniffi::export(with_foreign)]
pub trait RoomListener: Send + Sync {
    fn on_room_update(&self, update: RoomUpdate);
}

/// Who is typing in a room (the whole list each time).
#[uniffi::export(with_foreign)]
pub trait TypingListener: Send + Sync {
    fn on_typing(&self, room: String, users: Vec<String>);
}

/// Presence of users sharing a room with this account.
#[uniffi::export(with_foreign)]
pub trait PresenceListener: Send + Sync {
    fn on_presence(&self, presence: Presence);
}

/// Document versions and refused (stale) edits.
#[uniffi::export(with_foreign)]
pub trait DocumentListener: Send + Sync {
    fn on_document_update(&self, update: DocumentUpdate);
}

/// New notifications and the unread count (delivered first).
#[uniffi::export(with_foreign)]
pub trait NotificationListener: Send + Sync {
    fn on_notification(&self, notification: Notification);
    fn on_unread_count(&self, count: u64);
}

/// Forwards core callbacks to a foreign listener until its handle is closed.
struct Relay<L: ?Sized> {
    listener: Arc<L>,
    open: Arc<AtomicBool>,
}

impl<L: ?Sized> Relay<L> {
    fn new(listener: Arc<L>, open: &Arc<AtomicBool>) -> Arc<Self> {
        Arc::new(Relay {
            listener,
            open: Arc::clone(open),
        })
    }

    fn live(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }
}

impl roam_core::ConnectionStateListener for Relay<dyn ConnectionListener> {
    fn on_connection_state(&self, state: roam_core::ConnectionState) {
        if self.live() {
            self.listener.on_connection_state(state.into());
        }
    }
}

impl roam_core::RoomListener for Relay<dyn RoomListener> {
    fn on_room_update(&self, update: roam_core::RoomUpdate) {
        if self.live() {
            self.listener.on_room_update(update.into());
        }
    }
}

impl roam_core::TypingListener for Relay<dyn TypingListener> {
    fn on_typing(&self, room: String, users: Vec<String>) {
        if self.live() {
            self.listener.on_typing(room, users);
        }
    }
}

impl roam_core::PresenceListener for Relay<dyn PresenceListener> {
    fn on_presence(&self, presence: roam_core::PresenceInfo) {
        if self.live() {
            self.listener.on_presence(presence.into());
        }
    }
}

impl roam_core::DocumentListener for Relay<dyn DocumentListener> {
    fn on_document_update(&self, update: roam_core::DocumentUpdate) {
        if self.live() {
            self.listener.on_document_update(update.into());
        }
    }
}

impl roam_core::NotificationListener for Relay<dyn NotificationListener> {
    fn on_notification(&self, notification: roam_core::NotificationInfo) {
        if self.live() {
            self.listener.on_notification(notification.into());
        }
    }

    fn on_unread_count(&self, count: u64) {
        if self.live() {
            self.listener.on_unread_count(count);
        }
    }
}

/// A running subscription. `cancel()`, or releasing the handle (Kotlin `close()`, the end of a
/// Swift reference), stops it: no callback starts after that returns.
#[derive(uniffi::Object)]
pub struct SubscriptionHandle {
    open: Arc<AtomicBool>,
    inner: Mutex<Option<roam_core::Subscription>>,
}

impl std::fmt::Debug for SubscriptionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionHandle")
            .field("open", &self.is_open())
            .finish()
    }
}

#[uniffi::export]
impl SubscriptionHandle {
    /// Stops the subscription.
    pub fn cancel(&self) {
        self.open.store(false, Ordering::Release);
        if let Some(s) = self.inner.lock().take() {
            s.close();
        }
    }

    /// True until cancelled.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for SubscriptionHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// A Roam client for one account: works offline, syncs when it can.
#[derive(uniffi::Object)]
pub struct RoamClient {
    inner: roam_core::Client,
    closed: AtomicBool,
    /// The handles given out, to cancel them on `shutdown` (weak: the app owns them).
    subscriptions: Mutex<Vec<std::sync::Weak<SubscriptionHandle>>>,
}

impl std::fmt::Debug for RoamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoamClient")
            .field("user", &self.inner.user_id())
            .finish()
    }
}

impl RoamClient {
    fn check(&self) -> Result<(), RoamError> {
        if self.closed.load(Ordering::Acquire) {
            Err(RoamError::Closed)
        } else {
            Ok(())
        }
    }

    /// Runs a synchronous core call inside the runtime.
    fn call<T>(
        &self,
        f: impl FnOnce(&roam_core::Client) -> roam_core::Result<T>,
    ) -> Result<T, RoamError> {
        self.check()?;
        let _guard = runtime()?.enter();
        f(&self.inner).map_err(RoamError::from)
    }

    fn keep(&self, open: Arc<AtomicBool>, sub: roam_core::Subscription) -> Arc<SubscriptionHandle> {
        let handle = Arc::new(SubscriptionHandle {
            open,
            inner: Mutex::new(Some(sub)),
        });
        let mut subs = self.subscriptions.lock();
        subs.retain(|h| h.upgrade().is_some_and(|h| h.is_open()));
        subs.push(Arc::downgrade(&handle));
        handle
    }

    fn subscribe(
        &self,
        f: impl FnOnce(&roam_core::Client, &Arc<AtomicBool>) -> roam_core::Subscription,
    ) -> Result<Arc<SubscriptionHandle>, RoamError> {
        self.check()?;
        let _guard = runtime()?.enter();
        let open = Arc::new(AtomicBool::new(true));
        let sub = f(&self.inner, &open);
        Ok(self.keep(open, sub))
    }
}

#[uniffi::export]
impl RoamClient {
    /// Opens (or creates) the account's database. Works with no network at all.
    #[uniffi::constructor]
    pub fn new(
        options: ClientOptions,
        tokens: Arc<dyn TokenProvider>,
    ) -> Result<Arc<Self>, RoamError> {
        let _guard = runtime()?.enter();
        let inner = roam_core::Client::open(options.to_core(), Arc::new(Tokens(tokens)))?;
        Ok(Arc::new(RoamClient {
            inner,
            closed: AtomicBool::new(false),
            subscriptions: Mutex::new(Vec::new()),
        }))
    }

    /// The account's user id.
    pub fn user_id(&self) -> String {
        self.inner.user_id()
    }

    /// Starts connecting (and reconnecting) in the background.
    pub async fn start(&self) -> Result<(), RoamError> {
        self.check()?;
        let inner = self.inner.clone();
        runtime()?
            .spawn(async move { inner.start().await })
            .await
            .map_err(|e| RoamError::Internal {
                reason: e.to_string(),
            })?
            .map_err(RoamError::from)
    }

    /// Stops everything and releases the client: every subscription is cancelled, and every
    /// later call fails with `Closed`. Safe to call twice.
    pub async fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let handles: Vec<_> = self.subscriptions.lock().drain(..).collect();
        for h in handles.iter().filter_map(std::sync::Weak::upgrade) {
            h.cancel();
        }
        let inner = self.inner.clone();
        if let Ok(rt) = runtime() {
            let _ = rt.spawn(async move { inner.shutdown().await }).await;
        }
    }

    /// Whether the app wants to be online.
    pub fn set_online(&self, online: bool) -> Result<(), RoamError> {
        self.call(|c| {
            c.set_online(online);
            Ok(())
        })
    }

    /// Call when the OS reports that the network is back: retries at once.
    pub fn network_available(&self) -> Result<(), RoamError> {
        self.call(|c| {
            c.network_available();
            Ok(())
        })
    }

    pub fn connection_state(&self) -> ConnectionState {
        self.inner.connection_state().into()
    }

    pub fn rooms(&self) -> Result<Vec<Room>, RoamError> {
        self.call(|c| c.rooms())
            .map(|v| v.into_iter().map(Into::into).collect())
    }

    pub fn room(&self, room: String) -> Result<Option<Room>, RoamError> {
        self.call(|c| c.room(room)).map(|r| r.map(Into::into))
    }

    pub fn members(&self, room: String) -> Result<Vec<Member>, RoamError> {
        self.call(|c| c.members(room))
            .map(|v| v.into_iter().map(Into::into).collect())
    }

    /// The newest `limit` (1–200) messages before `before_seq` (all pending ones last).
    pub fn messages(
        &self,
        room: String,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Message>, RoamError> {
        self.call(|c| c.messages(room, before_seq, limit))
            .map(|v| v.into_iter().map(Into::into).collect())
    }

    /// One message by its local or server id.
    pub fn message(&self, id: String) -> Result<Option<Message>, RoamError> {
        self.call(|c| c.message(id)).map(|m| m.map(Into::into))
    }

    /// Queues a message; it is visible at once as pending.
    pub fn send_message(&self, room: String, body: String) -> Result<Message, RoamError> {
        self.call(|c| c.send_message(room, body)).map(Into::into)
    }

    /// Edits one of this account's messages (by local or server id).
    pub fn edit_message(
        &self,
        room: String,
        message: String,
        body: String,
    ) -> Result<Message, RoamError> {
        self.call(|c| c.edit_message(room, message, body))
            .map(Into::into)
    }

    pub fn delete_message(&self, room: String, message: String) -> Result<Message, RoamError> {
        self.call(|c| c.delete_message(room, message))
            .map(Into::into)
    }

    pub fn create_room(
        &self,
        room: String,
        kind: RoomKind,
        title: String,
    ) -> Result<Room, RoamError> {
        self.call(|c| c.create_room(room, kind.into(), title, None))
            .map(Into::into)
    }

    /// Returns the outbox entry id.
    pub fn join_room(&self, room: String) -> Result<String, RoamError> {
        self.call(|c| c.join_room(room))
    }

    pub fn leave_room(&self, room: String) -> Result<String, RoamError> {
        self.call(|c| c.leave_room(room))
    }

    pub fn ban(&self, room: String, user: String) -> Result<String, RoamError> {
        self.call(|c| c.ban(room, user))
    }

    /// Writes a document version on top of `base_version` (0 creates it).
    pub fn put_document(
        &self,
        room: String,
        doc: String,
        base_version: u64,
        content: String,
    ) -> Result<Document, RoamError> {
        self.call(|c| c.put_document(room, doc, base_version, content))
            .map(Into::into)
    }

    pub fn document(&self, room: String, doc: String) -> Result<Option<Document>, RoamError> {
        self.call(|c| c.document(room, doc))
            .map(|d| d.map(Into::into))
    }

    pub fn notifications(
        &self,
        unread_only: bool,
        limit: u32,
    ) -> Result<Vec<Notification>, RoamError> {
        self.call(|c| c.notifications(None, unread_only, limit))
            .map(|v| v.into_iter().map(Into::into).collect())
    }

    pub fn unread_count(&self) -> Result<u64, RoamError> {
        self.call(|c| c.unread_count())
    }

    pub fn mark_all_read(&self) -> Result<String, RoamError> {
        self.call(|c| c.mark_all_read())
    }

    /// The user typed in a room (throttled: call it on every keystroke).
    pub fn typing_started(&self, room: String) -> Result<(), RoamError> {
        self.call(|c| {
            c.typing_started(room);
            Ok(())
        })
    }

    pub fn typing_stopped(&self, room: String) -> Result<(), RoamError> {
        self.call(|c| {
            c.typing_stopped(room);
            Ok(())
        })
    }

    /// Who is typing in a room right now.
    pub fn typing(&self, room: String) -> Vec<String> {
        self.inner.typing(room)
    }

    pub fn presence(&self, user: String) -> Result<Option<Presence>, RoamError> {
        self.call(|c| c.presence(user)).map(|p| p.map(Into::into))
    }

    /// The app went idle (away) or came back.
    pub fn set_idle(&self, idle: bool) -> Result<(), RoamError> {
        self.call(|c| {
            c.set_idle(idle);
            Ok(())
        })
    }

    pub fn outbox(&self) -> Result<Vec<OutboxEntry>, RoamError> {
        self.call(|c| c.outbox())
            .map(|v| v.into_iter().map(Into::into).collect())
    }

    /// Puts a failed entry back in its queue.
    pub fn retry(&self, entry_id: String) -> Result<(), RoamError> {
        self.call(|c| c.retry(entry_id))
    }

    /// Drops a pending or failed entry and undoes its local change.
    pub fn discard(&self, entry_id: String) -> Result<(), RoamError> {
        self.call(|c| c.discard(entry_id))
    }

    pub fn metrics(&self) -> Metrics {
        self.inner.metrics().into()
    }

    /// Fetches the room directory from the server (cached, ETag-revalidated).
    pub async fn refresh_rooms(&self) -> Result<Vec<Room>, RoamError> {
        self.check()?;
        let inner = self.inner.clone();
        runtime()?
            .spawn(async move { inner.refresh_rooms().await })
            .await
            .map_err(|e| RoamError::Internal {
                reason: e.to_string(),
            })?
            .map(|v| v.into_iter().map(Into::into).collect())
            .map_err(RoamError::from)
    }

    pub fn subscribe_connection_state(
        &self,
        listener: Arc<dyn ConnectionListener>,
    ) -> Result<Arc<SubscriptionHandle>, RoamError> {
        self.subscribe(|c, open| c.subscribe_connection_state(Relay::new(listener, open)))
    }

    /// Updates of one room, or of every room with `room` = nil/null.
    pub fn subscribe_room_updates(
        &self,
        room: Option<String>,
        listener: Arc<dyn RoomListener>,
    ) -> Result<Arc<SubscriptionHandle>, RoamError> {
        self.subscribe(|c, open| c.subscribe_room_updates(room, Relay::new(listener, open)))
    }

    pub fn subscribe_typing(
        &self,
        room: Option<String>,
        listener: Arc<dyn TypingListener>,
    ) -> Result<Arc<SubscriptionHandle>, RoamError> {
        self.subscribe(|c, open| c.subscribe_typing(room, Relay::new(listener, open)))
    }

    pub fn subscribe_presence(
        &self,
        listener: Arc<dyn PresenceListener>,
    ) -> Result<Arc<SubscriptionHandle>, RoamError> {
        self.subscribe(|c, open| c.subscribe_presence(Relay::new(listener, open)))
    }

    pub fn subscribe_documents(
        &self,
        room: Option<String>,
        listener: Arc<dyn DocumentListener>,
    ) -> Result<Arc<SubscriptionHandle>, RoamError> {
        self.subscribe(|c, open| c.subscribe_documents(room, Relay::new(listener, open)))
    }

    pub fn subscribe_notifications(
        &self,
        listener: Arc<dyn NotificationListener>,
    ) -> Result<Arc<SubscriptionHandle>, RoamError> {
        self.subscribe(|c, open| c.subscribe_notifications(Relay::new(listener, open)))
    }
}
