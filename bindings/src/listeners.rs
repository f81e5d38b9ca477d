//! Listeners (foreign traits the app implements) and the handles that stop them.
//!
//! Each `subscribe_*` call of [`RoamClient`](crate::RoamClient) wraps the app's listener in a
//! [`Relay`] that converts the core's types and forwards them, and returns a
//! [`SubscriptionHandle`]. The core calls listeners from its own dispatcher thread, in commit
//! order, never while it holds a lock, so a listener may call back into the client. Closing the
//! handle (`cancel()`, Swift `close()`, Kotlin `close()`), or releasing its last reference,
//! stops the subscription: when that returns, no callback of it is running and none will start
//! (the core guarantees it; the relay's own flag also covers callbacks the core queued before).
//! Shutting the client down closes every handle it gave out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::types::{
    ConnectionState, DocumentUpdate, Presence, RoamNotification, RoomListDiff, RoomUpdate,
    SyncStatus, TimelineDiff, UploadProgress,
};

/// Connection state changes; the current state is delivered first.
#[uniffi::export(with_foreign)]
pub trait ConnectionListener: Send + Sync {
    fn on_connection_state(&self, state: ConnectionState);
}

/// Changes of rooms: messages added, edited, deleted, send states, room data, members, resets.
#[uniffi::export(with_foreign)]
pub trait RoomListener: Send + Sync {
    fn on_room_update(&self, update: RoomUpdate);
}

/// Who is typing in a room (the whole list each time; empty: nobody). Subscribed to one room,
/// its current list comes first.
#[uniffi::export(with_foreign)]
pub trait TypingListener: Send + Sync {
    fn on_typing(&self, room: String, users: Vec<String>);
}

/// Presence changes of other users.
#[uniffi::export(with_foreign)]
pub trait PresenceListener: Send + Sync {
    fn on_presence(&self, presence: Presence);
}

/// New document versions, send-state changes of local edits, and refused (stale) edits.
#[uniffi::export(with_foreign)]
pub trait DocumentListener: Send + Sync {
    fn on_document_update(&self, update: DocumentUpdate);
}

/// New notifications, and the unread count whenever it changes (the current count first).
#[uniffi::export(with_foreign)]
pub trait NotificationListener: Send + Sync {
    fn on_notification(&self, notification: RoamNotification);
    fn on_unread_count(&self, count: u64);
}

/// The sync status whenever it changes (the current status first).
#[uniffi::export(with_foreign)]
pub trait SyncStatusListener: Send + Sync {
    fn on_sync_status(&self, status: SyncStatus);
}

/// Progress of the attachment uploads of this device: bytes sent, then how each ended.
#[uniffi::export(with_foreign)]
pub trait UploadListener: Send + Sync {
    fn on_upload_progress(&self, progress: UploadProgress);
}

/// A timeline's diffs: first one `Reset` with the current messages, then changes.
#[uniffi::export(with_foreign)]
pub trait TimelineListener: Send + Sync {
    fn on_diffs(&self, diffs: Vec<TimelineDiff>);
}

/// Receives a room list's diffs: first one `Reset` with every room, then the changes.
#[uniffi::export(with_foreign)]
pub trait RoomListListener: Send + Sync {
    fn on_diffs(&self, diffs: Vec<RoomListDiff>);
}

/// Forwards the core's callbacks to a foreign listener while its handle is open.
pub(crate) struct Relay<L: ?Sized> {
    pub(crate) listener: Arc<L>,
    open: Arc<AtomicBool>,
}

impl<L: ?Sized> Relay<L> {
    pub(crate) fn new(listener: Arc<L>, open: &Arc<AtomicBool>) -> Arc<Self> {
        Arc::new(Relay {
            listener,
            open: Arc::clone(open),
        })
    }

    pub(crate) fn live(&self) -> bool {
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

impl roam_core::SyncStatusListener for Relay<dyn SyncStatusListener> {
    fn on_sync_status(&self, status: roam_core::SyncStatus) {
        if self.live() {
            self.listener.on_sync_status(status.into());
        }
    }
}

impl roam_core::UploadListener for Relay<dyn UploadListener> {
    fn on_upload_progress(&self, progress: roam_core::UploadProgress) {
        if self.live() {
            self.listener.on_upload_progress(progress.into());
        }
    }
}

impl roam_core::TimelineListener for Relay<dyn TimelineListener> {
    fn on_diffs(&self, diffs: Vec<roam_core::TimelineDiff>) {
        if self.live() {
            self.listener
                .on_diffs(diffs.into_iter().map(TimelineDiff::from).collect());
        }
    }
}

impl roam_core::RoomListListener for Relay<dyn RoomListListener> {
    fn on_diffs(&self, diffs: Vec<roam_core::RoomListDiff>) {
        if self.live() {
            self.listener
                .on_diffs(diffs.into_iter().map(RoomListDiff::from).collect());
        }
    }
}

/// A running subscription. `cancel()` (Swift also `close()`, Kotlin `close()`), or releasing
/// the handle, stops it: once that returns, no callback of it runs.
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

impl SubscriptionHandle {
    pub(crate) fn new(open: Arc<AtomicBool>, subscription: roam_core::Subscription) -> Arc<Self> {
        Arc::new(SubscriptionHandle {
            open,
            inner: Mutex::new(Some(subscription)),
        })
    }
}

#[uniffi::export]
impl SubscriptionHandle {
    /// Stops the subscription. Safe to call more than once, and from inside its own callback.
    pub fn cancel(&self) {
        self.open.store(false, Ordering::Release);
        // Take it out first: closing waits for a running callback, which may call cancel too.
        let subscription = self.inner.lock().take();
        if let Some(subscription) = subscription {
            subscription.close();
        }
    }

    /// True until cancelled (or until the client shuts down).
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for SubscriptionHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Something a client gave out that its shutdown must stop.
pub(crate) trait Handle: Send + Sync {
    fn cancel(&self);
    fn is_open(&self) -> bool;
}

impl Handle for SubscriptionHandle {
    fn cancel(&self) {
        SubscriptionHandle::cancel(self);
    }

    fn is_open(&self) -> bool {
        SubscriptionHandle::is_open(self)
    }
}

/// The handles a client gave out (weakly: the app owns them), to close them on shutdown.
#[derive(Default)]
pub(crate) struct Handles(Mutex<Vec<Weak<dyn Handle>>>);

impl Handles {
    pub(crate) fn add<H: Handle + 'static>(&self, handle: &Arc<H>) {
        let mut handles = self.0.lock();
        handles.retain(|h| h.upgrade().is_some_and(|h| h.is_open()));
        let weak: Weak<dyn Handle> = Arc::downgrade(handle) as Weak<dyn Handle>;
        handles.push(weak);
    }

    pub(crate) fn cancel_all(&self) {
        let handles: Vec<_> = self.0.lock().drain(..).collect();
        for handle in handles.iter().filter_map(Weak::upgrade) {
            handle.cancel();
        }
    }
}
