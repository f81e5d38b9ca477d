//! `RoamClient`: the exported client object. It holds the core client in `inner` and forwards
//! every call, converting types at the boundary (`types.rs`) and errors in one place
//! (`error.rs`); no client logic lives here.
//!
//! Synchronous calls enter the library's tokio runtime (`runtime.rs`) and call the core at once:
//! reads come from the local store, writes land in the store and the outbox and return the
//! optimistic local object. Async calls (`start`, `shutdown`, `refresh_*`, `save_document`)
//! become Swift `async` and Kotlin `suspend` functions.
//!
//! After `shutdown` the client is released: every subscription handle it gave out is closed
//! (no callback after `shutdown` returns) and every later call fails with
//! [`RoamError::Closed`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::auth::{TokenProvider, Tokens};
use crate::error::RoamError;
use crate::listeners::{
    ConnectionListener, DocumentListener, Handles, NotificationListener, PresenceListener, Relay,
    RoomListListener, RoomListener, SubscriptionHandle, SyncStatusListener, TimelineListener,
    TypingListener, UploadListener,
};
use crate::room_list::RoamRoomList;
use crate::runtime::{run, runtime};
use crate::timeline::RoamTimeline;
use crate::types::{
    AttachmentDetails, ClientOptions, ConnectionState, Document, Member, Message, MetricsSnapshot,
    OutboxEntry, Presence, PresenceStatus, RoamNotification, Role, Room, RoomKind, RoomSummary,
    SyncStatus,
};

/// A Roam client for one account: works offline, syncs when it can.
#[derive(uniffi::Object)]
pub struct RoamClient {
    inner: roam_core::Client,
    closed: AtomicBool,
    handles: Handles,
}

impl std::fmt::Debug for RoamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoamClient")
            .field("user", &self.inner.user_id())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

fn convert<T, U: From<T>>(items: Vec<T>) -> Vec<U> {
    items.into_iter().map(U::from).collect()
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
    pub(crate) fn call<T>(
        &self,
        f: impl FnOnce(&roam_core::Client) -> roam_core::Result<T>,
    ) -> Result<T, RoamError> {
        self.check()?;
        let _guard = runtime()?.enter();
        f(&self.inner).map_err(RoamError::from)
    }

    /// Runs a core call that cannot fail inside the runtime.
    fn act(&self, f: impl FnOnce(&roam_core::Client)) -> Result<(), RoamError> {
        self.call(|c| {
            f(c);
            Ok(())
        })
    }

    /// A clone of the core client for an async call (after checking it is not closed).
    pub(crate) fn core(&self) -> Result<roam_core::Client, RoamError> {
        self.check()?;
        Ok(self.inner.clone())
    }

    /// Registers a relay with the core and hands out its handle.
    pub(crate) fn subscribe(
        &self,
        f: impl FnOnce(&roam_core::Client, &Arc<AtomicBool>) -> roam_core::Subscription,
    ) -> Result<Arc<SubscriptionHandle>, RoamError> {
        self.check()?;
        let _guard = runtime()?.enter();
        let open = Arc::new(AtomicBool::new(true));
        let handle = SubscriptionHandle::new(Arc::clone(&open), f(&self.inner, &open));
        self.handles.add(&handle);
        // A shutdown that ran between the check and `add` did not see this handle.
        if self.closed.load(Ordering::Acquire) {
            handle.cancel();
            return Err(RoamError::Closed);
        }
        Ok(handle)
    }
}

#[uniffi::export]
impl RoamClient {
    /// Opens (or creates) the account's database. Works with no network at all; call `start`
    /// to connect.
    #[uniffi::constructor]
    pub fn new(
        options: ClientOptions,
        tokens: Arc<dyn TokenProvider>,
    ) -> Result<Arc<Self>, RoamError> {
        let _guard = runtime()?.enter();
        let inner = roam_core::Client::open(options.to_core()?, Arc::new(Tokens(tokens)))?;
        Ok(Arc::new(RoamClient {
            inner,
            closed: AtomicBool::new(false),
            handles: Handles::default(),
        }))
    }

    /// The account's user id.
    pub fn user_id(&self) -> String {
        self.inner.user_id()
    }

    // -----------------------------------------------------------------------------------------
    // Lifecycle and connection

    /// Starts connecting (and reconnecting) in the background. Returns at once.
    pub async fn start(&self) -> Result<(), RoamError> {
        let core = self.core()?;
        run(async move { core.start().await }).await
    }

    /// Stops everything and releases the client: every subscription is closed, the connection
    /// is closed, and every later call fails with `Closed`. Queued changes stay in the database
    /// for the next `RoamClient` on it. Safe to call twice.
    pub async fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.handles.cancel_all();
        let core = self.inner.clone();
        // `sign_out(false)` = shut down and close the database, so that a new client may open
        // it at once even while the app still holds this object.
        if let Err(err) = run(async move { core.sign_out(false).await }).await {
            tracing::warn!(target: "roam_ffi", error = %err, "shutdown did not complete");
        }
    }

    /// Whether the app wants to be online; `false` closes the connection (writes keep queueing).
    pub fn set_online(&self, online: bool) -> Result<(), RoamError> {
        self.act(|c| c.set_online(online))
    }

    /// Call when the OS reports the network is back: the next attempt starts at once.
    pub fn network_available(&self) -> Result<(), RoamError> {
        self.act(|c| c.network_available())
    }

    pub fn connection_state(&self) -> ConnectionState {
        self.inner.connection_state().into()
    }

    /// The sync status now (phase, pending writes, oldest pending write).
    pub fn sync_status(&self) -> SyncStatus {
        self.inner.sync_status().into()
    }

    /// Returns when every pending write is answered; throws `WriteFailed` when one of them was
    /// refused for good, `NeedsSignIn` when the account cannot connect. Keeps waiting while
    /// offline; cancel the Swift `Task` / Kotlin coroutine to stop waiting.
    pub async fn wait_for_pending_writes(&self) -> Result<(), RoamError> {
        let core = self.core()?;
        // Awaited on the caller's executor (it needs no tokio I/O), so cancelling the caller
        // really stops the wait.
        core.wait_for_pending_writes()
            .await
            .map_err(RoamError::from)
    }

    /// One round of sync for a background task (BGTaskScheduler, WorkManager): connect, catch
    /// up every room, send the outbox, disconnect. Throws `Timeout` after `timeout_ms`.
    pub async fn sync_once(&self, timeout_ms: u64) -> Result<(), RoamError> {
        let core = self.core()?;
        run(async move {
            core.sync_once(std::time::Duration::from_millis(timeout_ms))
                .await
        })
        .await
    }

    /// Signs the account out of this device: closes the client (like `shutdown`) and, with
    /// `wipe`, deletes the account's database files. Later calls fail with `Closed`.
    pub async fn sign_out(&self, wipe: bool) -> Result<(), RoamError> {
        self.check()?;
        self.closed.store(true, Ordering::Release);
        self.handles.cancel_all();
        let core = self.inner.clone();
        run(async move { core.sign_out(wipe).await }).await
    }

    /// Changes the key of the encrypted store: `key` (32 bytes) re-encrypts it, nil/null
    /// decrypts it to a plain store. Open it with the new key from then on; store the new key
    /// before calling, and drop the old one after this returns. Copies the database into a new
    /// file that replaces the old one, so a crash leaves the old store or the new one whole;
    /// other calls wait meanwhile.
    pub async fn change_store_key(&self, key: Option<Vec<u8>>) -> Result<(), RoamError> {
        let core = self.core()?;
        let key = key
            .map(|k| roam_core::StoreKey::from_slice(&k))
            .transpose()?;
        run(async move {
            tokio::task::spawn_blocking(move || core.change_store_key(key))
                .await
                .map_err(|e| roam_core::Error::InvalidState {
                    reason: format!("the re-key task failed: {e}"),
                })?
        })
        .await
    }

    // -----------------------------------------------------------------------------------------
    // Reads (from the local store, never blocked on the network)

    pub fn rooms(&self) -> Result<Vec<Room>, RoamError> {
        self.call(|c| c.rooms()).map(convert)
    }

    pub fn room(&self, room: String) -> Result<Option<Room>, RoamError> {
        self.call(|c| c.room(room)).map(|r| r.map(Into::into))
    }

    /// One room as the room list shows it (nil/null unless the account is a member).
    pub fn room_summary(&self, room: String) -> Result<Option<RoomSummary>, RoamError> {
        self.call(|c| c.room_summary(room))
            .map(|s| s.map(Into::into))
    }

    pub fn members(&self, room: String) -> Result<Vec<Member>, RoamError> {
        self.call(|c| c.members(room)).map(convert)
    }

    /// The newest `limit` (1–200) messages before `before_seq` (nil/null: the newest), oldest
    /// first, local pending ones last.
    pub fn messages(
        &self,
        room: String,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Message>, RoamError> {
        self.call(|c| c.messages(room, before_seq, limit))
            .map(convert)
    }

    /// One message by its local or server id.
    pub fn message(&self, id: String) -> Result<Option<Message>, RoamError> {
        self.call(|c| c.message(id)).map(|m| m.map(Into::into))
    }

    pub fn document(&self, room: String, doc: String) -> Result<Option<Document>, RoamError> {
        self.call(|c| c.document(room, doc))
            .map(|d| d.map(Into::into))
    }

    pub fn documents(&self, room: String) -> Result<Vec<Document>, RoamError> {
        self.call(|c| c.documents(room)).map(convert)
    }

    /// Notifications after `after_seq` (nil/null: from the start), at most `limit` (1–200).
    pub fn notifications(
        &self,
        after_seq: Option<u64>,
        unread_only: bool,
        limit: u32,
    ) -> Result<Vec<RoamNotification>, RoamError> {
        self.call(|c| c.notifications(after_seq, unread_only, limit))
            .map(convert)
    }

    pub fn unread_count(&self) -> Result<u64, RoamError> {
        self.call(|c| c.unread_count())
    }

    /// A user's presence as last known locally.
    pub fn presence(&self, user: String) -> Result<Option<Presence>, RoamError> {
        self.call(|c| c.presence(user)).map(|p| p.map(Into::into))
    }

    /// This device's own presence.
    pub fn my_presence(&self) -> PresenceStatus {
        self.inner.my_presence().into()
    }

    /// Who is typing in a room right now.
    pub fn typing(&self, room: String) -> Vec<String> {
        self.inner.typing(room)
    }

    /// The queued changes, in order.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>, RoamError> {
        self.call(|c| c.outbox()).map(convert)
    }

    /// The client's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics().into()
    }

    // -----------------------------------------------------------------------------------------
    // Writes: stored and queued at once, visible as pending, delivered when connected

    /// Sends a message; it is returned (and listed) at once as pending.
    pub fn send_message(&self, room: String, body: String) -> Result<Message, RoamError> {
        self.call(|c| c.send_message(room, body)).map(Into::into)
    }

    /// Sends a message in reply to another (by its server id).
    pub fn send_reply(
        &self,
        room: String,
        body: String,
        reply_to: String,
    ) -> Result<Message, RoamError> {
        self.call(|c| c.send_reply(room, body, Some(reply_to)))
            .map(Into::into)
    }

    /// Sends a file (at `file`) with a caption (may be empty). Returns the message at once,
    /// pending, with its attachment (name, type, size, SHA-256, local file, upload progress).
    /// The file is linked (or copied) into the client's media directory and hashed first, so
    /// the app may delete its copy once this returns; it reads the whole file once, so call it
    /// off the main thread for large files. The upload goes first, resumable after a restart
    /// or a network change; then the message, in its room's order.
    pub fn send_attachment(
        &self,
        room: String,
        file: String,
        mime: String,
        caption: String,
        details: AttachmentDetails,
    ) -> Result<Message, RoamError> {
        self.call(|c| c.send_attachment(room, file, mime, caption, details.into()))
            .map(Into::into)
    }

    /// Stops the upload of a file sent from here (by the message's local id) and removes the
    /// message. Throws `Conflict` once the upload is done (delete the message instead).
    pub fn cancel_attachment(&self, message: String) -> Result<(), RoamError> {
        self.call(|c| c.cancel_attachment(message))
    }

    /// The local path of a message's file: from the media cache (offline too), or downloaded
    /// into it first (resuming a download that was cut off).
    pub async fn attachment_file(&self, message: String) -> Result<String, RoamError> {
        let core = self.core()?;
        run(async move { core.attachment_file(message).await }).await
    }

    /// The bytes the media cache holds now.
    pub fn media_cache_bytes(&self) -> Result<u64, RoamError> {
        self.call(|c| c.media_cache_bytes())
    }

    /// Edits one of this account's messages (by local or server id), even one still queued.
    pub fn edit_message(
        &self,
        room: String,
        message: String,
        body: String,
    ) -> Result<Message, RoamError> {
        self.call(|c| c.edit_message(room, message, body))
            .map(Into::into)
    }

    /// Deletes a message (by local or server id).
    pub fn delete_message(&self, room: String, message: String) -> Result<Message, RoamError> {
        self.call(|c| c.delete_message(room, message))
            .map(Into::into)
    }

    /// Creates a room owned by this account. `metadata_json`: a JSON object, or nil/null.
    #[uniffi::method(default(metadata_json = None))]
    pub fn create_room(
        &self,
        room: String,
        kind: RoomKind,
        title: String,
        metadata_json: Option<String>,
    ) -> Result<Room, RoamError> {
        self.call(|c| c.create_room(room, kind.into(), title, metadata_json))
            .map(Into::into)
    }

    /// Changes a room's title, kind or metadata (at least one).
    #[uniffi::method(default(title = None, kind = None, metadata_json = None))]
    pub fn update_room(
        &self,
        room: String,
        title: Option<String>,
        kind: Option<RoomKind>,
        metadata_json: Option<String>,
    ) -> Result<Room, RoamError> {
        self.call(|c| c.update_room(room, title, kind.map(Into::into), metadata_json))
            .map(Into::into)
    }

    /// Deletes a room (owner only). Returns the outbox entry id.
    pub fn delete_room(&self, room: String) -> Result<String, RoamError> {
        self.call(|c| c.delete_room(room))
    }

    /// Joins a room. Returns the outbox entry id.
    pub fn join_room(&self, room: String) -> Result<String, RoamError> {
        self.call(|c| c.join_room(room))
    }

    /// Leaves a room. Returns the outbox entry id.
    pub fn leave_room(&self, room: String) -> Result<String, RoamError> {
        self.call(|c| c.leave_room(room))
    }

    /// Hands the room to another member (owner only). Returns the outbox entry id.
    pub fn transfer_ownership(&self, room: String, user: String) -> Result<String, RoamError> {
        self.call(|c| c.transfer_ownership(room, user))
    }

    /// Invites a user (role: member by default; expiry: 7 days by default). Returns the outbox
    /// entry id.
    #[uniffi::method(default(role = None, ttl_secs = None))]
    pub fn invite(
        &self,
        room: String,
        user: String,
        role: Option<Role>,
        ttl_secs: Option<u64>,
    ) -> Result<String, RoamError> {
        self.call(|c| c.invite(room, user, role.map(Into::into), ttl_secs))
    }

    /// Accepts an invitation (its id is in the `invited` notification's data).
    pub fn accept_invitation(&self, invitation: String) -> Result<String, RoamError> {
        self.call(|c| c.accept_invitation(invitation))
    }

    pub fn reject_invitation(&self, invitation: String) -> Result<String, RoamError> {
        self.call(|c| c.reject_invitation(invitation))
    }

    /// Changes a member's role (not to owner: use `transfer_ownership`).
    pub fn set_role(&self, room: String, user: String, role: Role) -> Result<String, RoamError> {
        self.call(|c| c.set_role(room, user, role.into()))
    }

    pub fn ban(&self, room: String, user: String) -> Result<String, RoamError> {
        self.call(|c| c.ban(room, user))
    }

    pub fn unban(&self, room: String, user: String) -> Result<String, RoamError> {
        self.call(|c| c.unban(room, user))
    }

    /// Writes a document version on top of `base_version` (0 creates it) and returns the local
    /// copy (pending). A stale base is reported later, through the document listener and the
    /// document's `conflict`; `save_document` waits for the answer instead.
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

    /// Writes a document version like `put_document`, then waits until the server has
    /// answered: returns the confirmed document, or throws `VersionConflict` (with the server's
    /// current version and content) when `base_version` is stale, or the refusal's error.
    /// While offline it waits for the connection; cancelling the wait keeps the edit queued.
    pub async fn save_document(
        &self,
        room: String,
        doc: String,
        base_version: u64,
        content: String,
    ) -> Result<Document, RoamError> {
        let saving = self.call(|c| c.save_document(room, doc, base_version, content))?;
        saving.await.map(Into::into).map_err(RoamError::from)
    }

    /// Marks notifications read (at most 500 ids). Returns the outbox entry id.
    pub fn mark_read(&self, ids: Vec<String>) -> Result<String, RoamError> {
        self.call(|c| c.mark_read(ids))
    }

    /// Marks `room` read up to `seq` (nil/null: up to the newest message held), here at once
    /// and, through the server, on the account's other devices. The marker only moves forward.
    /// Returns the marker as it now is.
    pub fn mark_room_read(&self, room: String, seq: Option<u64>) -> Result<u64, RoamError> {
        self.call(|c| c.mark_room_read(room, seq))
    }

    /// Marks every notification read. Returns the outbox entry id.
    pub fn mark_all_read(&self) -> Result<String, RoamError> {
        self.call(|c| c.mark_all_read())
    }

    /// Puts a failed outbox entry back in its queue.
    pub fn retry(&self, entry_id: String) -> Result<(), RoamError> {
        self.call(|c| c.retry(entry_id))
    }

    /// Drops a pending (not yet on the wire) or failed entry and undoes its local change.
    pub fn discard(&self, entry_id: String) -> Result<(), RoamError> {
        self.call(|c| c.discard(entry_id))
    }

    // -----------------------------------------------------------------------------------------
    // Typing and presence

    /// The user typed in a room: call it on every keystroke (it is throttled).
    pub fn typing_started(&self, room: String) -> Result<(), RoamError> {
        self.act(|c| c.typing_started(room))
    }

    /// The user stopped typing (cleared the field, left the screen).
    pub fn typing_stopped(&self, room: String) -> Result<(), RoamError> {
        self.act(|c| c.typing_stopped(room))
    }

    /// The user did something: this device is online (again).
    pub fn user_activity(&self) -> Result<(), RoamError> {
        self.act(|c| c.user_activity())
    }

    /// The app went to the background (`true`: away now) or came back (`false`).
    pub fn set_idle(&self, idle: bool) -> Result<(), RoamError> {
        self.act(|c| c.set_idle(idle))
    }

    // -----------------------------------------------------------------------------------------
    // Network reads (REST into the store; cached, ETag-revalidated)

    /// Fetches the room directory (the rooms this account may see).
    pub async fn refresh_rooms(&self) -> Result<Vec<Room>, RoamError> {
        let core = self.core()?;
        run(async move { core.refresh_rooms().await })
            .await
            .map(convert)
    }

    /// Fetches a room's members.
    pub async fn refresh_members(&self, room: String) -> Result<Vec<Member>, RoamError> {
        let core = self.core()?;
        run(async move { core.refresh_members(room).await })
            .await
            .map(convert)
    }

    /// Fetches the presence of 1–500 users.
    pub async fn refresh_presence(&self, users: Vec<String>) -> Result<Vec<Presence>, RoamError> {
        let core = self.core()?;
        run(async move { core.refresh_presence(users).await })
            .await
            .map(convert)
    }

    /// Fetches the page of messages before the oldest one held locally (oldest first).
    pub async fn load_older_messages(
        &self,
        room: String,
        limit: u32,
    ) -> Result<Vec<Message>, RoamError> {
        let core = self.core()?;
        run(async move { core.load_older_messages(room, limit).await })
            .await
            .map(convert)
    }

    // -----------------------------------------------------------------------------------------
    // Listeners: each returns a handle; closing or releasing it stops the callbacks

    /// Connection states, the current one first.
    pub fn subscribe_connection_state(
        &self,
        listener: Arc<dyn ConnectionListener>,
    ) -> Result<Arc<SubscriptionHandle>, RoamError> {
        self.subscribe(|c, open| c.subscribe_connection_state(Relay::new(listener, open)))
    }

    /// A live timeline of a room: `listener` gets the newest `initial` (1–200) messages, plus the
    /// unconfirmed ones, as one `Reset`, then diffs as messages arrive, change, are confirmed or
    /// fail. `paginate_backwards` loads older ones.
    pub fn timeline(
        &self,
        room: String,
        initial: u32,
        listener: Arc<dyn TimelineListener>,
    ) -> Result<Arc<RoamTimeline>, RoamError> {
        self.check()?;
        let _guard = runtime()?.enter();
        let open = Arc::new(AtomicBool::new(true));
        let core = self
            .inner
            .timeline(room, initial, Relay::new(listener, &open))?;
        let timeline = RoamTimeline::new(open, core);
        self.handles.add(&timeline);
        if self.closed.load(Ordering::Acquire) {
            timeline.cancel();
            return Err(RoamError::Closed);
        }
        Ok(timeline)
    }

    /// A live list of the account's rooms with their last message, unread and mention counts,
    /// newest activity first: `listener` gets every room as one `Reset`, then diffs as messages
    /// arrive, rooms change and read markers move (on this device or another).
    pub fn room_list(
        &self,
        listener: Arc<dyn RoomListListener>,
    ) -> Result<Arc<RoamRoomList>, RoamError> {
        self.check()?;
        let _guard = runtime()?.enter();
        let open = Arc::new(AtomicBool::new(true));
        let core = self.inner.room_list(Relay::new(listener, &open));
        let list = RoamRoomList::new(open, core);
        self.handles.add(&list);
        if self.closed.load(Ordering::Acquire) {
            list.cancel();
            return Err(RoamError::Closed);
        }
        Ok(list)
    }

    /// Sync status changes; the current status first.
    pub fn subscribe_sync_status(
        &self,
        listener: Arc<dyn SyncStatusListener>,
    ) -> Result<Arc<SubscriptionHandle>, RoamError> {
        self.subscribe(|c, open| c.subscribe_sync_status(Relay::new(listener, open)))
    }

    /// Progress of this device's attachment uploads (bytes sent, then how each ended).
    pub fn subscribe_uploads(
        &self,
        listener: Arc<dyn UploadListener>,
    ) -> Result<Arc<SubscriptionHandle>, RoamError> {
        self.subscribe(|c, open| c.subscribe_uploads(Relay::new(listener, open)))
    }

    /// Updates of one room, or of every room with `room` = nil/null.
    pub fn subscribe_room_updates(
        &self,
        room: Option<String>,
        listener: Arc<dyn RoomListener>,
    ) -> Result<Arc<SubscriptionHandle>, RoamError> {
        self.subscribe(|c, open| c.subscribe_room_updates(room, Relay::new(listener, open)))
    }

    /// Typing lists of one room (its current list first) or of every room.
    pub fn subscribe_typing(
        &self,
        room: Option<String>,
        listener: Arc<dyn TypingListener>,
    ) -> Result<Arc<SubscriptionHandle>, RoamError> {
        self.subscribe(|c, open| c.subscribe_typing(room, Relay::new(listener, open)))
    }

    /// Presence changes of other users.
    pub fn subscribe_presence(
        &self,
        listener: Arc<dyn PresenceListener>,
    ) -> Result<Arc<SubscriptionHandle>, RoamError> {
        self.subscribe(|c, open| c.subscribe_presence(Relay::new(listener, open)))
    }

    /// Document updates and conflicts of one room, or of every room.
    pub fn subscribe_documents(
        &self,
        room: Option<String>,
        listener: Arc<dyn DocumentListener>,
    ) -> Result<Arc<SubscriptionHandle>, RoamError> {
        self.subscribe(|c, open| c.subscribe_documents(room, Relay::new(listener, open)))
    }

    /// New notifications and the unread count (the current count first).
    pub fn subscribe_notifications(
        &self,
        listener: Arc<dyn NotificationListener>,
    ) -> Result<Arc<SubscriptionHandle>, RoamError> {
        self.subscribe(|c, open| c.subscribe_notifications(Relay::new(listener, open)))
    }
}
