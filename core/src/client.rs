//! [`Client`]: the one object an app holds per account.
//!
//! It is a cheap, clonable handle over the client's shared state. Its methods come in four kinds:
//!
//! - **Lifecycle** (`open`, `start`, `set_online`, `network_available`, `shutdown`). `open` only
//!   opens the store and loads the outbox; the client is fully usable offline from then on.
//!   `start` (inside a Tokio runtime) starts the connection loop and the typing and presence
//!   timers.
//! - **Reads** are synchronous and answered from the local store (or, for typing, from memory);
//!   they never wait for the network.
//! - **Writes** are synchronous too: each validates its input (a bad one is refused with
//!   [`Error::InvalidInput`] before anything is written), then writes the optimistic change and
//!   its outbox entry in one transaction and returns the local object (or the entry id) with
//!   [`SendState::Pending`]. Delivery happens in the background (see
//!   the `outbox` module).
//! - **Network reads** (`refresh_*`, `load_older_messages`) are `async`: they fetch over REST
//!   with conditional requests, store the result, and return what the store now holds.
//!
//! Listeners are registered with the `subscribe_*` methods; see [`crate::listeners`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use roam_proto::{
    ClientFrame, Member, MemberStatus, Mutation, Presence, PresenceStatus, PushMode, PushPlatform,
    PushSettings, Role, RoomKind,
};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::auth::TokenProvider;
use crate::config::{ClientConfig, StoreKey};
use crate::context::{Context, SessionCmd, Want};
use crate::db::{reads, writes, Db};
use crate::error::{Error, Result};
use crate::http::{self, Http};
use crate::listeners::{
    AppEvent, ConnectionStateListener, Dispatcher, DocumentListener, NotificationListener,
    PresenceListener, RoomListener, Subscription, SyncStatusListener, Target, TypingListener,
    UploadListener,
};
use crate::metrics::MetricsSnapshot;
use crate::model::{
    now_ms, AttachmentDetails, ConnectionState, Document, Message, NotificationInfo, OutboxEntry,
    RoomInfo, SendState, SyncPhase, SyncStatus, UploadProgress, UploadState,
};
use crate::remote::{self, Remote};
use crate::room_list::{RoomList, RoomListListener, RoomSummary};
use crate::timeline::{Timeline, TimelineListener};
use crate::{files, media, model, optimistic, outbox, presence, scheduler, socket, typing, upload};

/// Background tasks of a started client.
#[derive(Debug)]
struct Tasks {
    socket: JoinHandle<()>,
    timers: Vec<JoinHandle<()>>,
}

/// Stops the background work when the last [`Client`] clone is dropped without `shutdown`.
struct DropGuard {
    ctx: Arc<Context>,
    tasks: Arc<Mutex<Option<Tasks>>>,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        // Nobody can call this client any more: let a new one open the database at once, even
        // while the connection task below is still winding down.
        self.ctx.db.close();
        if let Some(tasks) = self.tasks.lock().take() {
            self.ctx.want.send_replace(Want::Shutdown);
            for t in &tasks.timers {
                t.abort();
            }
            // The connection task sees `Shutdown`, closes its socket and ends by itself.
            drop(tasks.socket);
        }
    }
}

/// The client core of one account. Clone it freely; all clones share one client. Call
/// [`Client::shutdown`] to stop it; dropping the last clone stops it too (without waiting) and
/// closes the database (a [`Timeline`] kept after that stops receiving diffs). Only one client
/// may have an account's database open at a time ([`Error::AlreadyOpen`]).
#[derive(Clone)]
pub struct Client {
    ctx: Arc<Context>,
    /// Cache of REST reads (`remote.rs`).
    remote: Arc<Remote>,
    tasks: Arc<Mutex<Option<Tasks>>>,
    online: Arc<AtomicBool>,
    /// The open collaborative documents.
    collab: Arc<crate::collab::Registry>,
    _guard: Arc<DropGuard>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("user", &self.ctx.me)
            .field("state", &self.ctx.connection_state())
            .finish()
    }
}

impl Client {
    // -----------------------------------------------------------------------------------------
    // Lifecycle

    /// Opens (creating and migrating if needed) the account's store and loads its outbox. Needs
    /// no network and no runtime.
    #[tracing::instrument(skip_all, fields(user = %config.user_id))]
    pub fn open(config: ClientConfig, tokens: Arc<dyn TokenProvider>) -> Result<Client> {
        config.validate()?;
        let db = Db::open_with(
            &config.db_path,
            config.store_key.as_ref(),
            config.store_plaintext_header,
        )?;
        if let Some(bytes) = config.max_store_bytes {
            db.set_max_bytes(bytes)?;
        }
        let dispatcher = Dispatcher::start()
            .map_err(|e| Error::state(format!("cannot start the listener thread: {e}")))?;
        let http = Http::new(
            http::base_url(&config.server_url)?,
            tokens.clone(),
            config.http_timeout,
        )?;
        let remote = Arc::new(Remote::new(config.cache));
        let ctx = Arc::new(Context::new(config, db, dispatcher, tokens, http));
        let collab = crate::collab::Registry::start()?;
        let router: Arc<dyn crate::context::CollabRouter> = collab.clone();
        if ctx.collab.set(router).is_err() {
            return Err(Error::state(
                "the collaborative documents were set up twice",
            ));
        }
        media::open(&ctx)?;
        let pending = outbox::load(&ctx)?;
        tracing::debug!(pending, "client opened");
        let tasks = Arc::new(Mutex::new(None));
        Ok(Client {
            _guard: Arc::new(DropGuard {
                ctx: ctx.clone(),
                tasks: tasks.clone(),
            }),
            ctx,
            remote,
            tasks,
            online: Arc::new(AtomicBool::new(true)),
            collab,
        })
    }

    /// The shared state (for the core's own tests).
    #[cfg(test)]
    pub(crate) fn ctx(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Opens the collaborative document `doc` of `room` (see [`crate::collab`]): loaded from
    /// the store (empty if new), usable offline at once, followed on the server whenever the
    /// client is connected. A second open of the same document returns the same live document.
    pub fn open_collab(&self, room: &str, doc: &str) -> Result<crate::collab::CollabDoc> {
        self.collab.open(&self.ctx, room, doc)
    }

    /// The account's user id.
    pub fn user_id(&self) -> String {
        self.ctx.me.clone()
    }

    /// Starts the background work: the connection loop (online unless `set_online(false)` was
    /// called) and the typing and presence timers. Must be called inside a Tokio runtime.
    /// Calling it again while started does nothing.
    pub async fn start(&self) -> Result<()> {
        self.ctx.db.check_open()?;
        let handle = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let mut tasks = self.tasks.lock();
        if tasks.is_some() {
            return Ok(());
        }
        let want = if self.online.load(Ordering::SeqCst) {
            Want::Online
        } else {
            Want::Offline
        };
        self.ctx.want.send_replace(want);
        let socket = handle.spawn(socket::run(self.ctx.clone()));
        let send_ctx = self.ctx.clone();
        let emit_ctx = self.ctx.clone();
        let typing_task = handle.spawn(typing::run(
            self.ctx.typing.clone(),
            move |room, typing| {
                send_ctx.send(SessionCmd::Frame(ClientFrame::Typing { room, typing }));
            },
            move |room, users| emit_ctx.emit(AppEvent::Typing { room, users }),
        ));
        let presence_ctx = self.ctx.clone();
        let presence_task = handle.spawn(presence::run(self.ctx.presence.clone(), move |status| {
            send_presence(&presence_ctx, status);
        }));
        let uploads = handle.spawn(upload::run(self.ctx.clone()));
        *tasks = Some(Tasks {
            socket,
            timers: vec![typing_task, presence_task, uploads],
        });
        Ok(())
    }

    /// Whether the app wants the client connected. `false` closes the connection and stays
    /// offline (writes keep queueing); `true` connects again.
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::SeqCst);
        if self.tasks.lock().is_some() {
            self.ctx
                .want
                .send_replace(if online { Want::Online } else { Want::Offline });
        }
    }

    /// Tells the client the OS reports the network is back: a pending reconnect wait is cut
    /// short and the next attempt starts at once. In
    /// [`ConnectionState::NeedsSignIn`] it makes one new attempt (call it after the user
    /// signed in again).
    pub fn network_available(&self) {
        self.ctx.network_available.notify_waiters();
    }

    /// Stops the background work (closing the connection) and waits for it to end. The store
    /// stays readable and writable; `start` may be called again.
    pub async fn shutdown(&self) {
        let tasks = self.tasks.lock().take();
        let Some(tasks) = tasks else {
            return;
        };
        self.ctx.want.send_replace(Want::Shutdown);
        for t in &tasks.timers {
            t.abort();
        }
        let mut socket = tasks.socket;
        if tokio::time::timeout(Duration::from_secs(5), &mut socket)
            .await
            .is_err()
        {
            tracing::warn!("the connection did not close in time; aborting it");
            socket.abort();
        }
        self.ctx.set_session(None);
        self.ctx.set_connection_state(ConnectionState::Offline);
    }

    /// Changes the key of the account's store (see [`ClientConfig::store_key`]): `Some(key)`
    /// re-encrypts the store with `key` (or encrypts a plain one), `None` decrypts it to a plain
    /// store. Open the store with the new key from then on. The database is copied into a new
    /// file that is renamed over the old one, so a crash leaves either the old store (old key)
    /// or the new one whole; writes and reads wait meanwhile, which lasts about as long as
    /// copying the file. Blocks the calling thread: call it off the UI thread.
    pub fn change_store_key(&self, key: Option<StoreKey>) -> Result<()> {
        self.ctx.db.change_key(key.as_ref())
    }

    /// Signs the account out of this device: stops the client, and with `wipe` deletes the
    /// account's files (database, WAL, lock). Every later call on this client (and its clones)
    /// fails with [`Error::Shutdown`]; open a new client to sign in again.
    pub async fn sign_out(&self, wipe: bool) -> Result<()> {
        self.shutdown().await;
        self.ctx.db.close();
        if wipe {
            for file in self.ctx.db.files() {
                match std::fs::remove_file(&file) {
                    Ok(()) => tracing::debug!(file = %file.display(), "deleted"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Error::state(format!(
                            "cannot delete {}: {e}",
                            file.display()
                        )))
                    }
                }
            }
            let dir = self.ctx.media.dir();
            match std::fs::remove_dir_all(dir) {
                Ok(()) => tracing::debug!(dir = %dir.display(), "media deleted"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::file(dir, e)),
            }
        }
        tracing::info!(wipe, "signed out");
        Ok(())
    }

    /// The connection's current state.
    pub fn connection_state(&self) -> ConnectionState {
        self.ctx.connection_state()
    }

    /// The sync status now: phase, pending writes, oldest pending write.
    pub fn sync_status(&self) -> SyncStatus {
        self.ctx.sync.borrow().clone()
    }

    /// Waits until the outbox has nothing left to send. Returns `Ok` once every write that was
    /// pending is answered; fails with [`Error::WriteFailed`] when one of the writes pending
    /// during the wait was refused for good (the first such entry), and with
    /// [`Error::NeedsSignIn`] when the account cannot connect. While offline it keeps waiting
    /// (cancel the future to stop).
    pub async fn wait_for_pending_writes(&self) -> Result<()> {
        let mut rx = self.ctx.sync.subscribe();
        let mut watched = std::collections::HashSet::new();
        loop {
            let status = rx.borrow_and_update().clone();
            watched.extend(self.ctx.outbox.lock().ids());
            if let SyncPhase::NeedsSignIn { reason } = status.phase {
                return Err(Error::NeedsSignIn(reason));
            }
            if status.pending_writes == 0 {
                break;
            }
            if rx.changed().await.is_err() {
                return Err(Error::Shutdown);
            }
        }
        if watched.is_empty() {
            return Ok(());
        }
        let failed = self
            .ctx
            .db
            .read(reads::outbox)?
            .into_iter()
            .find_map(|e| match e.state {
                SendState::Failed { code, message } if watched.contains(&e.id) => {
                    Some(Error::WriteFailed {
                        entry: e.id,
                        code,
                        message,
                    })
                }
                _ => None,
            });
        failed.map_or(Ok(()), Err)
    }

    /// One round of synchronisation for a background task (BGTaskScheduler, WorkManager):
    /// connects (starting the client if needed), catches up every followed room, sends the
    /// outbox, then disconnects again (shuts down what it started; a client that was started but
    /// offline goes back offline). Fails with [`Error::Timeout`] when that takes longer than
    /// `timeout`, and like [`Client::wait_for_pending_writes`] otherwise.
    pub async fn sync_once(&self, timeout: Duration) -> Result<()> {
        let started_here = self.tasks.lock().is_none();
        let was_online = self.online.load(Ordering::SeqCst);
        if started_here {
            self.online.store(true, Ordering::SeqCst);
            self.start().await?;
        } else if !was_online {
            self.set_online(true);
        }
        let round = async {
            let mut rx = self.ctx.sync.subscribe();
            loop {
                let phase = rx.borrow_and_update().phase.clone();
                match phase {
                    SyncPhase::Synced => break,
                    SyncPhase::NeedsSignIn { reason } => return Err(Error::NeedsSignIn(reason)),
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    return Err(Error::Shutdown);
                }
            }
            self.wait_for_pending_writes().await
        };
        let outcome = tokio::time::timeout(timeout, round).await;
        if started_here {
            self.shutdown().await;
            self.online.store(was_online, Ordering::SeqCst);
        } else if !was_online {
            self.set_online(false);
        }
        match outcome {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(format!(
                "not synced within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Reads (local store)

    /// Every room known locally, by name.
    pub fn rooms(&self) -> Result<Vec<RoomInfo>> {
        self.ctx.db.read(reads::rooms)
    }

    /// One room.
    pub fn room(&self, room: String) -> Result<Option<RoomInfo>> {
        self.ctx.db.read(|c| reads::room(c, &room))
    }

    /// A room's members as known locally.
    pub fn members(&self, room: String) -> Result<Vec<Member>> {
        self.ctx.db.read(|c| reads::members(c, &room))
    }

    /// A page of messages, oldest first. `before_seq = None`: the newest page, followed by the
    /// local messages not yet confirmed (in the order they were written). `limit` is 1–200.
    pub fn messages(
        &self,
        room: String,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Message>> {
        check_limit(limit)?;
        self.ctx
            .db
            .read(|c| reads::messages(c, &room, before_seq, limit))
    }

    /// One message, by its local id or server id.
    pub fn message(&self, id: String) -> Result<Option<Message>> {
        self.ctx.db.read(|c| reads::message_by_any_id(c, &id))
    }

    /// One document.
    pub fn document(&self, room: String, doc: String) -> Result<Option<Document>> {
        self.ctx.db.read(|c| reads::document(c, &room, &doc))
    }

    /// A room's documents.
    pub fn documents(&self, room: String) -> Result<Vec<Document>> {
        self.ctx.db.read(|c| reads::documents(c, &room))
    }

    /// Notifications with `seq > after_seq` (all when `None`), oldest first.
    pub fn notifications(
        &self,
        after_seq: Option<u64>,
        unread_only: bool,
        limit: u32,
    ) -> Result<Vec<NotificationInfo>> {
        check_limit(limit)?;
        self.ctx
            .db
            .read(|c| reads::notifications(c, after_seq.unwrap_or(0), unread_only, limit))
    }

    /// The unread notification count (as last reported by the server, adjusted by local
    /// mark-read calls).
    pub fn unread_count(&self) -> Result<u64> {
        self.ctx.db.read(|c| reads::kv_u64(c, "unread"))
    }

    /// A user's last known presence.
    pub fn presence(&self, user: String) -> Result<Option<Presence>> {
        self.ctx.db.read(|c| reads::presence(c, &user))
    }

    /// This device's presence (`online` or `away`).
    pub fn my_presence(&self) -> PresenceStatus {
        self.ctx.presence.status()
    }

    /// Who is typing in a room right now (other users).
    pub fn typing(&self, room: String) -> Vec<String> {
        self.ctx.typing.users(&room)
    }

    /// Every outbox entry, in queue order, with its state.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>> {
        self.ctx.db.read(reads::outbox)
    }

    /// Counters and the outbox as it is now.
    pub fn metrics(&self) -> MetricsSnapshot {
        let figures = self
            .ctx
            .db
            .read(|c| reads::outbox_figures(c, now_ms()))
            .unwrap_or_else(|err| {
                tracing::warn!(error = %err, "cannot read the outbox figures");
                Default::default()
            });
        self.ctx.metrics.snapshot(figures, self.remote.stats())
    }

    // -----------------------------------------------------------------------------------------
    // Writes (store + outbox, one transaction each)

    /// Sends a message. Returns it as stored locally: pending, with a local id.
    pub fn send_message(&self, room: String, body: String) -> Result<Message> {
        self.send_reply(room, body, None)
    }

    /// Sends a message in reply to another (by its server id).
    pub fn send_reply(
        &self,
        room: String,
        body: String,
        reply_to: Option<String>,
    ) -> Result<Message> {
        // The message id is chosen here (protocol §6, `message.send` `id`) and doubles as the
        // idempotency key, so later edits can name the message before the server has answered.
        let id = outbox::new_key();
        let mutation = Mutation::SendMessage {
            room: room.clone(),
            body: body.clone(),
            reply_to: reply_to.clone(),
            id: Some(id.clone()),
            attachment: None,
        };
        let queue = scheduler::queue_of(&mutation);
        let (_, m) =
            outbox::enqueue_with_id(&self.ctx, id, queue, mutation, None, |tx, step, fx| {
                optimistic::send_message(tx, step, fx, &room, &body, reply_to.as_deref(), None)
            })?;
        self.typing_stopped(room);
        Ok(m)
    }

    /// Sends a file with an optional caption (`caption` may be empty). Returns the message at
    /// once, pending, carrying its attachment: name, MIME type, size, SHA-256, the local file
    /// and the upload's progress.
    ///
    /// The file is first taken into the client's media directory (hard-linked, or copied when
    /// linking fails) and hashed there, in chunks: the app may delete or change its own copy as
    /// soon as this returns. This reads the whole file once, so call it off the main thread for
    /// large files. Then, in one transaction, the message is stored and queued, and the upload
    /// of its file too: the upload goes first (durable and resumable, see `crate::upload`), and
    /// the message follows in its room's order. [`Client::subscribe_uploads`] reports the
    /// progress; [`Client::cancel_attachment`] stops it (the message goes too); a failed upload
    /// fails the message, and `retry` of its outbox entry uploads again.
    pub fn send_attachment(
        &self,
        room: String,
        file: String,
        mime: String,
        caption: String,
        details: AttachmentDetails,
    ) -> Result<Message> {
        roam_proto::validate::room_name(&room)?;
        let src = std::path::PathBuf::from(&file);
        let name = match details.name {
            Some(n) => n,
            None => src
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| Error::invalid(format!("{file} names no file")))?,
        };
        let thumbnail = details.thumbnail.as_deref().map(|t| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(t)
        });
        let mut wire = roam_proto::Attachment {
            // Checked before the file is read; the hash and size are set once it is.
            blob: "0".repeat(64),
            name,
            mime,
            size: 0,
            width: details.width,
            height: details.height,
            duration_ms: details.duration_ms,
            thumbnail,
        };
        roam_proto::validate::caption(&caption)?;
        roam_proto::validate::attachment(&wire)?;
        let held_before = |sha: &str| self.ctx.db.read(|c| reads::media_file(c, sha));
        let taken = files::take_in(&self.ctx.media, &src)?;
        wire.blob = taken.sha256.clone();
        wire.size = taken.size;
        let existed = held_before(&taken.sha256)?.is_some();
        let id = outbox::new_key();
        let mutation = Mutation::SendMessage {
            room: room.clone(),
            body: caption.clone(),
            reply_to: None,
            id: Some(id.clone()),
            attachment: Some(wire.clone()),
        };
        let queue = scheduler::queue_of(&mutation);
        let json = serde_json::to_string(&wire)?;
        let path = taken.path.display().to_string();
        let max = self.ctx.media.config.max_bytes;
        let upload = reads::StoredUpload {
            local_id: id.clone(),
            room: room.clone(),
            sha256: taken.sha256.clone(),
            size: taken.size,
            mime: wire.mime.clone(),
            upload: None,
            sent: 0,
            state: SendState::Pending,
        };
        let model = model::attachment_from_wire(
            wire,
            Some(path.clone()),
            Some(UploadProgress {
                local_id: id.clone(),
                room: room.clone(),
                sent_bytes: 0,
                total_bytes: taken.size,
                state: UploadState::Uploading,
            }),
        );
        let queued =
            outbox::enqueue_with_id(&self.ctx, id, queue, mutation, None, |tx, step, fx| {
                writes::put_media(tx, &taken.sha256, &path, taken.size, step.now)?;
                writes::insert_upload(tx, &upload, step.now)?;
                media::trim_in(tx, fx, max, &taken.sha256)?;
                optimistic::send_message(tx, step, fx, &room, &caption, None, Some((&json, model)))
            });
        match queued {
            Ok((_, m)) => {
                tracing::debug!(message = %m.local_id, size = taken.size, "attachment queued");
                self.typing_stopped(room);
                Ok(m)
            }
            Err(err) => {
                if !existed {
                    files::remove_file(&taken.path);
                }
                Err(err)
            }
        }
    }

    /// Stops the upload of an attachment sent from this device (by the message's local id) and
    /// removes the message: its send is discarded, its file leaves the media cache, and the
    /// server's partial upload is deleted. Refused with [`Error::InvalidState`] once the upload
    /// is done (delete the message instead).
    pub fn cancel_attachment(&self, message: String) -> Result<()> {
        let uploading = self.ctx.db.read(|c| reads::upload(c, &message))?.is_some();
        if !uploading {
            return Err(Error::state(
                "no upload of that message is under way; delete the message instead",
            ));
        }
        outbox::discard(&self.ctx, &message)
    }

    /// The local file of a message's attachment (by local or server id): from the media cache
    /// when held (offline too), otherwise downloaded into it first — resuming a download that
    /// was cut off, checking the file's hash, and evicting least recently used files past the
    /// cache's cap. Fails with [`Error::InvalidInput`] for a message without an attachment, a
    /// deleted one, or a file above the cache's per-file cap (`MediaConfig::max_file_bytes`).
    pub async fn attachment_file(&self, message: String) -> Result<String> {
        let m = self
            .ctx
            .db
            .read(|c| reads::message_by_any_id(c, &message))?
            .ok_or_else(|| Error::not_found(format!("message {message}")))?;
        let Some(a) = m.attachment else {
            return Err(Error::invalid(format!(
                "message {message} carries no attachment"
            )));
        };
        let path = media::fetch(&self.ctx, &a.sha256, a.size).await?;
        Ok(path.display().to_string())
    }

    /// The bytes the media cache holds now (files sent and downloaded).
    pub fn media_cache_bytes(&self) -> Result<u64> {
        self.ctx.db.read(reads::media_bytes)
    }

    fn own_message(&self, room: &str, id: &str) -> Result<Message> {
        let m = self
            .ctx
            .db
            .read(|c| reads::message_by_any_id(c, id))?
            .ok_or_else(|| Error::not_found(format!("message {id}")))?;
        if m.room != room {
            return Err(Error::invalid(format!(
                "message {id} is not in room {room}"
            )));
        }
        Ok(m)
    }

    /// Edits one of the account's messages (by local or server id). A message not sent yet
    /// (queued and not on the wire, or failed) takes the new text into its send: one outbox
    /// entry, the latest body, and `retry` sends that. Otherwise the edit is queued behind the
    /// send (which travels with its local id).
    pub fn edit_message(&self, room: String, message: String, body: String) -> Result<Message> {
        let before = self.own_message(&room, &message)?;
        if before.sender != self.ctx.me {
            return Err(Error::invalid("only the author can edit a message"));
        }
        if before.deleted {
            return Err(Error::invalid("the message is deleted"));
        }
        // Not sent yet: the edit becomes the send's text (one entry, the latest body).
        if before.id.is_none() {
            if let Some(m) = outbox::fold_edit_into_send(&self.ctx, &before.local_id, &body)? {
                return Ok(m);
            }
            if before.send_state.is_failed() {
                return Err(Error::state(
                    "the message was never sent: retry or discard its outbox entry first",
                ));
            }
        }
        let mutation = Mutation::EditMessage {
            room: room.clone(),
            message: before.id.clone().unwrap_or_else(|| before.local_id.clone()),
            body: body.clone(),
        };
        let (_, m) = outbox::enqueue(
            &self.ctx,
            mutation,
            Some(before.local_id.clone()),
            |tx, step, fx| optimistic::change_message(tx, step, fx, &before, Some(&body)),
        )?;
        Ok(m)
    }

    /// Deletes a message (by local or server id). A local message not sent yet (its send failed,
    /// or is still queued and not on the wire) is removed without a trace: its send is
    /// discarded and the server never sees it.
    pub fn delete_message(&self, room: String, message: String) -> Result<Message> {
        let before = self.own_message(&room, &message)?;
        if before.deleted {
            return Ok(before);
        }
        // Not sent yet (failed, or still waiting and not on the wire): the send is discarded
        // and the message removed without a trace; nothing reaches the server.
        let unsent = before.id.is_none()
            && (before.send_state.is_failed() || self.ctx.outbox.lock().unsent(&before.local_id));
        if unsent && outbox::discard(&self.ctx, &before.local_id).is_ok() {
            return Ok(Message {
                deleted: true,
                body: String::new(),
                outbox_entry_id: None,
                ..before
            });
        }
        let mutation = Mutation::DeleteMessage {
            room: room.clone(),
            message: before.id.clone().unwrap_or_else(|| before.local_id.clone()),
        };
        let (_, m) = outbox::enqueue(
            &self.ctx,
            mutation,
            Some(before.local_id.clone()),
            |tx, step, fx| optimistic::change_message(tx, step, fx, &before, None),
        )?;
        Ok(m)
    }

    /// Creates a room owned by the account. `metadata_json`: a JSON object, or `None` for `{}`.
    pub fn create_room(
        &self,
        room: String,
        kind: RoomKind,
        title: String,
        metadata_json: Option<String>,
    ) -> Result<RoomInfo> {
        let metadata =
            parse_metadata(metadata_json.as_deref())?.unwrap_or(Value::Object(Default::default()));
        let mutation = Mutation::CreateRoom {
            room: room.clone(),
            kind,
            title: title.clone(),
            metadata: metadata.clone(),
        };
        let (_, info) = outbox::enqueue(&self.ctx, mutation, None, |tx, step, fx| {
            optimistic::create_room(tx, step, fx, &room, kind, &title, &metadata)
        })?;
        Ok(info)
    }

    /// Changes a room's title, kind or metadata (at least one).
    pub fn update_room(
        &self,
        room: String,
        title: Option<String>,
        kind: Option<RoomKind>,
        metadata_json: Option<String>,
    ) -> Result<RoomInfo> {
        let mutation = Mutation::UpdateRoom {
            room,
            title,
            kind,
            metadata: parse_metadata(metadata_json.as_deref())?,
        };
        let m2 = mutation.clone();
        let (_, info) = outbox::enqueue(&self.ctx, mutation, None, |tx, step, fx| {
            optimistic::update_room(tx, step, fx, &m2)
        })?;
        Ok(info)
    }

    /// Deletes a room (owner only). Returns the outbox entry id.
    pub fn delete_room(&self, room: String) -> Result<String> {
        self.plain(Mutation::DeleteRoom { room })
    }

    /// Joins a room. Returns the outbox entry id.
    pub fn join_room(&self, room: String) -> Result<String> {
        let r = room.clone();
        let (id, ()) = outbox::enqueue(
            &self.ctx,
            Mutation::JoinRoom { room },
            None,
            |tx, step, fx| optimistic::membership(tx, step, fx, &r, true),
        )?;
        Ok(id)
    }

    /// Leaves a room. Returns the outbox entry id.
    pub fn leave_room(&self, room: String) -> Result<String> {
        let r = room.clone();
        let (id, ()) = outbox::enqueue(
            &self.ctx,
            Mutation::LeaveRoom { room },
            None,
            |tx, step, fx| optimistic::membership(tx, step, fx, &r, false),
        )?;
        Ok(id)
    }

    /// Hands the room to another active member (owner only). Returns the outbox entry id.
    pub fn transfer_ownership(&self, room: String, user: String) -> Result<String> {
        self.plain(Mutation::TransferOwnership { room, user })
    }

    /// Invites a user (role defaults to member; `ttl_secs` to 7 days). Returns the entry id.
    pub fn invite(
        &self,
        room: String,
        user: String,
        role: Option<Role>,
        ttl_secs: Option<u64>,
    ) -> Result<String> {
        self.plain(Mutation::Invite {
            room,
            user,
            role: role.unwrap_or(Role::Member),
            ttl_secs,
        })
    }

    /// Accepts an invitation; the room is followed once the server confirms. When the invitation
    /// is known locally (from its `invited` notification) the acceptance is queued with the
    /// room's mutations, so messages written to the room afterwards wait for it.
    pub fn accept_invitation(&self, invitation: String) -> Result<String> {
        let room = self
            .ctx
            .db
            .read(|c| reads::invitation_room(c, &invitation))?
            .filter(|r| roam_proto::validate::room_name(r).is_ok())
            .unwrap_or_default();
        let (id, ()) = outbox::enqueue_with_id(
            &self.ctx,
            outbox::new_key(),
            room,
            Mutation::AcceptInvitation { invitation },
            None,
            |_, _, _| Ok(((), None)),
        )?;
        Ok(id)
    }

    /// Rejects an invitation.
    pub fn reject_invitation(&self, invitation: String) -> Result<String> {
        self.plain(Mutation::RejectInvitation { invitation })
    }

    /// Changes a member's role (not to owner: use `transfer_ownership`).
    pub fn set_role(&self, room: String, user: String, role: Role) -> Result<String> {
        let (r, u) = (room.clone(), user.clone());
        let (id, ()) = outbox::enqueue(
            &self.ctx,
            Mutation::SetRole { room, user, role },
            None,
            |tx, _, fx| optimistic::member_change(tx, fx, &r, &u, Some(role), None, false),
        )?;
        Ok(id)
    }

    /// Bans a member.
    pub fn ban(&self, room: String, user: String) -> Result<String> {
        let (r, u) = (room.clone(), user.clone());
        let (id, ()) = outbox::enqueue(
            &self.ctx,
            Mutation::Ban { room, user },
            None,
            |tx, _, fx| {
                optimistic::member_change(tx, fx, &r, &u, None, Some(MemberStatus::Banned), false)
            },
        )?;
        Ok(id)
    }

    /// Lifts a ban.
    pub fn unban(&self, room: String, user: String) -> Result<String> {
        let (r, u) = (room.clone(), user.clone());
        let (id, ()) = outbox::enqueue(
            &self.ctx,
            Mutation::Unban { room, user },
            None,
            |tx, _, fx| optimistic::member_change(tx, fx, &r, &u, None, None, true),
        )?;
        Ok(id)
    }

    /// Writes a document on top of `base_version` (0 creates it). If the server holds a newer
    /// version the edit fails with `version_conflict`: the document listener gets
    /// [`DocumentUpdate::Conflict`](crate::DocumentUpdate::Conflict) with the server's version,
    /// and the local document carries it in `conflict`. Rebase and call this again with
    /// `base_version = conflict.version` (the failed edit is dropped then).
    pub fn put_document(
        &self,
        room: String,
        doc: String,
        base_version: u64,
        content: String,
    ) -> Result<Document> {
        let mutation = Mutation::PutDocument {
            room: room.clone(),
            doc: doc.clone(),
            base_version,
            content: content.clone(),
        };
        let (_, d) = outbox::enqueue(&self.ctx, mutation, None, |tx, step, fx| {
            optimistic::put_document(tx, step, fx, &room, &doc, base_version, &content)
        })?;
        Ok(d)
    }

    /// Writes a document version like [`Client::put_document`] and returns a future of the
    /// server's answer: the confirmed document, or [`Error::VersionConflict`] with the server's
    /// version when `base_version` is stale, or the refusal's [`Error::Server`]. The edit is
    /// queued before this returns; while offline the future waits for the connection, it ends
    /// with [`Error::Shutdown`] when the client shuts down, and dropping it keeps the edit
    /// queued.
    pub fn save_document(
        &self,
        room: String,
        doc: String,
        base_version: u64,
        content: String,
    ) -> Result<impl std::future::Future<Output = Result<Document>> + Send + 'static> {
        let (waiter, outcome) =
            crate::save::EditWaiter::new(&room, &doc, &self.ctx.me, base_version, &content);
        // Subscribed before queueing, so the outcome cannot be missed.
        let subscription = self.subscribe_documents(Some(room.clone()), Arc::new(waiter));
        self.put_document(room, doc, base_version, content)?;
        let mut want = self.ctx.want.subscribe();
        Ok(async move {
            let result = tokio::select! {
                r = outcome => r.unwrap_or(Err(Error::Shutdown)),
                _ = want.wait_for(|w| *w == Want::Shutdown) => Err(Error::Shutdown),
            };
            drop(subscription);
            result
        })
    }

    /// Marks notifications read (at most 500 ids).
    pub fn mark_read(&self, ids: Vec<String>) -> Result<String> {
        let ids2 = ids.clone();
        let (id, ()) =
            outbox::enqueue(&self.ctx, Mutation::MarkRead { ids }, None, |tx, _, fx| {
                optimistic::mark_read(tx, fx, Some(&ids2))
            })?;
        Ok(id)
    }

    /// Marks every notification read.
    pub fn mark_all_read(&self) -> Result<String> {
        let (id, ()) = outbox::enqueue(&self.ctx, Mutation::MarkAllRead {}, None, |tx, _, fx| {
            optimistic::mark_read(tx, fx, None)
        })?;
        Ok(id)
    }

    /// Marks `room` read up to `seq` (`None`: up to the newest event the store holds), on this
    /// device at once and, through the outbox, on the server, which shares the marker with the
    /// account's other devices. The marker only moves forward: a `seq` at or below it changes
    /// nothing and queues nothing. Mentions of the account's user up to the marker are marked
    /// read with it. Returns the marker as it now is. The room must be one the account is a
    /// member of, and `seq` at most the room's newest known seq.
    pub fn mark_room_read(&self, room: String, seq: Option<u64>) -> Result<u64> {
        roam_proto::validate::room_name(&room)?;
        let (info, current) = self.ctx.db.read(|c| {
            Ok((
                reads::room(c, &room)?.filter(|r| r.joined),
                reads::read_marker(c, &room)?,
            ))
        })?;
        let info = info.ok_or_else(|| Error::not_found(format!("room {room} (not a member)")))?;
        let newest = info.head_seq.max(info.last_seq);
        let up_to = seq.unwrap_or(info.last_seq);
        if up_to > newest {
            return Err(Error::invalid(format!(
                "seq {up_to} is past the newest event of {room} ({newest})"
            )));
        }
        if up_to <= current {
            return Ok(current);
        }
        let mutation = Mutation::MarkRoomRead {
            room: room.clone(),
            seq: up_to,
        };
        outbox::enqueue(&self.ctx, mutation, None, |tx, step, fx| {
            optimistic::mark_room_read(tx, step, fx, &room, up_to)
        })?;
        Ok(up_to)
    }

    // -----------------------------------------------------------------------------------------
    // Push notifications (see `crate::push`)

    /// This device's id for push: made once per store and kept, so registering again (a new
    /// token from the OS) replaces this device's token on the server.
    pub fn push_device_id(&self) -> Result<String> {
        crate::push::device_id(&self.ctx)
    }

    /// Registers this device for push with the token the OS gave (`push.register`), through
    /// the outbox: made offline, it is sent when the link returns. `app_id` is the APNs topic
    /// (bundle id) or the FCM app id; `sandbox` the APNs development environment; `locale` the
    /// BCP-47 language the generic notification text is localised for. Returns the outbox
    /// entry id.
    pub fn register_push(
        &self,
        platform: PushPlatform,
        token: String,
        app_id: String,
        sandbox: bool,
        locale: Option<String>,
    ) -> Result<String> {
        crate::push::register(&self.ctx, platform, token, app_id, sandbox, locale)
    }

    /// Removes this device's push registration (`push.unregister`; call it before signing out
    /// and wait for it with `wait_for_pending_writes`). Returns the outbox entry id.
    pub fn unregister_push(&self) -> Result<String> {
        crate::push::unregister(&self.ctx)
    }

    /// Sets the notification mode of `room`, or the account default without a room
    /// (`push.set_mode`; [`PushMode::Default`] removes a room's override and is refused for the
    /// account). Shows in [`Client::push_settings`] at once. Returns the outbox entry id.
    pub fn set_push_mode(&self, room: Option<String>, mode: PushMode) -> Result<String> {
        crate::push::set_mode(&self.ctx, room, mode)
    }

    /// The notification modes: as the server last confirmed them, with the changes still in the
    /// outbox applied. Local; see [`Client::refresh_push_settings`].
    pub fn push_settings(&self) -> Result<PushSettings> {
        crate::push::settings(&self.ctx)
    }

    /// Fetches the notification modes from the server (`GET /v1/push/settings`; they may have
    /// been changed on another device), stores them and answers like
    /// [`Client::push_settings`].
    pub async fn refresh_push_settings(&self) -> Result<PushSettings> {
        self.ctx.db.check_open()?;
        crate::push::refresh_settings(&self.ctx).await
    }

    /// Puts a failed outbox entry back in its queue (same idempotency key).
    pub fn retry(&self, entry_id: String) -> Result<()> {
        outbox::retry(&self.ctx, &entry_id)
    }

    /// Drops a pending (not on the wire) or failed outbox entry and undoes its local change
    /// (a discarded send removes the local message).
    pub fn discard(&self, entry_id: String) -> Result<()> {
        outbox::discard(&self.ctx, &entry_id)
    }

    fn plain(&self, mutation: Mutation) -> Result<String> {
        let (id, ()) = outbox::enqueue(&self.ctx, mutation, None, |_, _, _| Ok(((), None)))?;
        Ok(id)
    }

    // -----------------------------------------------------------------------------------------
    // Typing and presence

    /// The user typed in `room` (call on every keystroke; throttled).
    pub fn typing_started(&self, room: String) {
        if roam_proto::validate::room_name(&room).is_err() {
            return;
        }
        self.user_activity();
        if self.ctx.typing.started(&room, tokio::time::Instant::now()) {
            self.ctx.send(SessionCmd::Frame(ClientFrame::Typing {
                room,
                typing: true,
            }));
        }
    }

    /// The user stopped typing in `room` (cleared the field, left the screen).
    pub fn typing_stopped(&self, room: String) {
        if self.ctx.typing.stopped(&room) {
            self.ctx.send(SessionCmd::Frame(ClientFrame::Typing {
                room,
                typing: false,
            }));
        }
    }

    /// The user did something: the device is `online` (again).
    pub fn user_activity(&self) {
        if let Some(status) = self.ctx.presence.activity(tokio::time::Instant::now()) {
            send_presence(&self.ctx, status);
        }
    }

    /// The app went to the background (`true`: `away` now) or came back (`false`). Coming back
    /// checks the link at once (a ping answered within the heartbeat timeout, or the connection
    /// is dropped and made again) and cuts a reconnect wait short, instead of leaving a link that
    /// died in the background to the next heartbeat.
    pub fn set_idle(&self, idle: bool) {
        if !idle {
            self.ctx.send(SessionCmd::CheckLink);
            self.ctx.network_available.notify_waiters();
        }
        if let Some(status) = self
            .ctx
            .presence
            .set_idle(idle, tokio::time::Instant::now())
        {
            send_presence(&self.ctx, status);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Network reads (REST → store)

    /// Refreshes the room directory (rooms the account may see) into the store and returns the
    /// listed rooms as stored. Cached: see [`crate::config::CacheConfig`] for when a request is
    /// made.
    pub async fn refresh_rooms(&self) -> Result<Vec<RoomInfo>> {
        let names = remote::refresh_rooms(&self.ctx, &self.remote).await?;
        self.ctx.db.read(|c| {
            names
                .iter()
                .filter_map(|n| reads::room(c, n).transpose())
                .collect()
        })
    }

    /// Refreshes a room's members into the store and returns the server's listing. Cached.
    pub async fn refresh_members(&self, room: String) -> Result<Vec<Member>> {
        roam_proto::validate::room_name(&room)?;
        remote::refresh_members(&self.ctx, &self.remote, room).await
    }

    /// Refreshes the presence of 1–500 users into the store and returns the server's answer.
    /// Cached.
    pub async fn refresh_presence(&self, users: Vec<String>) -> Result<Vec<Presence>> {
        if users.is_empty() || users.len() > roam_proto::validate::MAX_IDS_PER_CALL {
            return Err(Error::invalid("between 1 and 500 users per call"));
        }
        for u in &users {
            roam_proto::validate::user_id(u)?;
        }
        remote::refresh_presence(&self.ctx, &self.remote, users).await
    }

    /// Fetches the page of messages before the oldest one held locally, stores it, and returns
    /// it (oldest first).
    pub async fn load_older_messages(&self, room: String, limit: u32) -> Result<Vec<Message>> {
        roam_proto::validate::room_name(&room)?;
        check_limit(limit)?;
        remote::load_older_messages(&self.ctx, room, limit).await
    }

    // -----------------------------------------------------------------------------------------
    // Listeners

    /// A live timeline of a room: its listener gets the newest `initial` messages (1–200, plus
    /// the unconfirmed ones) first, then diffs as messages arrive, change, are confirmed or fail;
    /// `paginate_backwards` extends it with older ones. See [`crate::timeline`].
    pub fn timeline(
        &self,
        room: String,
        initial: u32,
        listener: Arc<dyn TimelineListener>,
    ) -> Result<Timeline> {
        roam_proto::validate::room_name(&room)?;
        check_limit(initial)?;
        Ok(Timeline::open(&self.ctx, room, initial, listener))
    }

    /// A live list of the account's rooms with their last message, unread and mention counts,
    /// newest activity first: its listener gets the whole list first, then diffs as messages
    /// arrive, rooms change and read markers move. See [`crate::room_list`].
    pub fn room_list(&self, listener: Arc<dyn RoomListListener>) -> RoomList {
        RoomList::open(&self.ctx, listener)
    }

    /// One room's summary as the room list shows it (`None` unless the account is a member).
    pub fn room_summary(&self, room: String) -> Result<Option<RoomSummary>> {
        crate::room_list::read_summary(&self.ctx, &room)
    }

    /// Progress of the attachment uploads of this device: bytes sent after each request, and
    /// how each ended (done, failed, cancelled).
    pub fn subscribe_uploads(&self, listener: Arc<dyn UploadListener>) -> Subscription {
        self.ctx
            .dispatcher
            .register(Target::Upload(listener), Vec::new())
    }

    /// Sync status changes; the current status first.
    pub fn subscribe_sync_status(&self, listener: Arc<dyn SyncStatusListener>) -> Subscription {
        self.ctx.subscribe_sync(listener)
    }

    /// Connection state changes; the current state first.
    pub fn subscribe_connection_state(
        &self,
        listener: Arc<dyn ConnectionStateListener>,
    ) -> Subscription {
        self.ctx.subscribe_connection(listener)
    }

    /// Room updates of one room (`Some(name)`) or of every room (`None`).
    pub fn subscribe_room_updates(
        &self,
        room: Option<String>,
        listener: Arc<dyn RoomListener>,
    ) -> Subscription {
        self.ctx
            .dispatcher
            .register(Target::Room(room, listener), Vec::new())
    }

    /// Typing lists of one room or every room; for one room, its current list first.
    pub fn subscribe_typing(
        &self,
        room: Option<String>,
        listener: Arc<dyn TypingListener>,
    ) -> Subscription {
        let initial = match &room {
            Some(r) => vec![AppEvent::Typing {
                room: r.clone(),
                users: self.ctx.typing.users(r),
            }],
            None => Vec::new(),
        };
        self.ctx
            .dispatcher
            .register(Target::Typing(room, listener), initial)
    }

    /// Presence changes of other users.
    pub fn subscribe_presence(&self, listener: Arc<dyn PresenceListener>) -> Subscription {
        self.ctx
            .dispatcher
            .register(Target::Presence(listener), Vec::new())
    }

    /// Document updates and conflicts of one room or every room.
    pub fn subscribe_documents(
        &self,
        room: Option<String>,
        listener: Arc<dyn DocumentListener>,
    ) -> Subscription {
        self.ctx
            .dispatcher
            .register(Target::Document(room, listener), Vec::new())
    }

    /// New notifications and the unread count; the current count first.
    pub fn subscribe_notifications(&self, listener: Arc<dyn NotificationListener>) -> Subscription {
        // Read the count under the writer so no change slips between it and the registration.
        let conn = self.ctx.db.writer();
        let count = reads::kv_u64(&conn, "unread").unwrap_or(0);
        let sub = self.ctx.dispatcher.register(
            Target::Notification(listener),
            vec![AppEvent::Unread(count)],
        );
        drop(conn);
        sub
    }
}

fn send_presence(ctx: &Context, status: PresenceStatus) {
    ctx.send(SessionCmd::Frame(ClientFrame::Mutate {
        id: format!("p-{}", uuid::Uuid::now_v7()),
        key: uuid::Uuid::now_v7().to_string(),
        after: None,
        mutation: Mutation::SetPresence { status },
    }));
}

fn check_limit(limit: u32) -> Result<()> {
    if limit == 0 || limit > roam_proto::validate::MAX_PAGE_SIZE {
        return Err(Error::invalid(format!(
            "limit must be between 1 and {}",
            roam_proto::validate::MAX_PAGE_SIZE
        )));
    }
    Ok(())
}

fn parse_metadata(json: Option<&str>) -> Result<Option<Value>> {
    json.map(|text| {
        serde_json::from_str::<Value>(text)
            .map_err(|e| Error::invalid(format!("metadata is not JSON: {e}")))
    })
    .transpose()
}

/// The answers to a message's send and to its edit, in either order, against the store: the
/// message never shows its old text once edited, and it names the outbox entry of its latest
/// change until that is sent.
#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use roam_proto::{EventBody, Message as WireMessage, RoomEvent};

    use super::*;
    use crate::auth::StaticToken;
    use crate::sync::{self, Item};

    fn client(dir: &std::path::Path) -> Client {
        let config = ClientConfig::new(dir.join("a.db"), "http://127.0.0.1:9", "me");
        Client::open(config, Arc::new(StaticToken("token".into()))).expect("open")
    }

    /// Puts what the outbox would send now on the wire; returns (frame id, entry id) of each.
    fn on_wire(c: &Client) -> Vec<(String, String)> {
        c.ctx
            .outbox
            .lock()
            .fill(tokio::time::Instant::now())
            .into_iter()
            .map(|o| (o.frame_id, o.key))
            .collect()
    }

    fn server_copy(local_id: &str, body: &str, edited_at: Option<i64>) -> WireMessage {
        WireMessage {
            id: local_id.into(),
            room: "r".into(),
            seq: 1,
            sender: "me".into(),
            body: body.into(),
            reply_to: None,
            created_at: 5,
            edited_at,
            deleted: false,
            attachment: None,
        }
    }

    fn store(c: &Client, items: Vec<Item>) {
        sync::apply(&c.ctx, &items, &HashSet::new(), &HashSet::new()).expect("apply");
    }

    fn answer(c: &Client, frame: &str, copy: &WireMessage) {
        let entry = c.ctx.outbox.lock().on_ack(frame).expect("on the wire");
        let result = serde_json::to_value(copy).expect("json");
        store(c, vec![Item::Ack(entry, result)]);
    }

    fn event(c: &Client, seq: u64, body: EventBody) {
        store(
            c,
            vec![Item::Event(RoomEvent {
                room: "r".into(),
                seq,
                at: 0,
                actor: "me".into(),
                body,
            })],
        );
    }

    fn stored(c: &Client, local_id: &str) -> Message {
        c.message(local_id.into()).expect("read").expect("stored")
    }

    /// Sends "a", edits it to "b" while the send is on the wire, and returns (message, frame
    /// of the send, edit as returned).
    fn send_then_edit_on_the_wire(c: &Client) -> (Message, String, Message) {
        let sent = c.send_message("r".into(), "a".into()).expect("send");
        assert_eq!(
            sent.outbox_entry_id.as_deref(),
            Some(sent.local_id.as_str())
        );
        let wire = on_wire(c);
        assert_eq!(wire.len(), 1);
        let edited = c
            .edit_message("r".into(), sent.local_id.clone(), "b".into())
            .expect("edit");
        let edit_entry = edited.outbox_entry_id.clone().expect("the edit's entry");
        assert_ne!(
            edit_entry, sent.local_id,
            "an edit behind a send on the wire"
        );
        assert_eq!(stored(c, &sent.local_id).outbox_entry_id, Some(edit_entry));
        (sent, wire[0].0.clone(), edited)
    }

    #[test]
    fn the_send_confirmed_before_the_edit_keeps_the_edited_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = client(dir.path());
        let (sent, send_frame, edited) = send_then_edit_on_the_wire(&c);
        let id = sent.local_id.as_str();

        answer(&c, &send_frame, &server_copy(id, "a", None));
        let m = stored(&c, id);
        assert_eq!((m.body.as_str(), m.seq), ("b", Some(1)), "{m:?}");
        assert_eq!(
            m.send_state,
            SendState::Pending,
            "the edit is still pending"
        );
        assert_eq!(m.outbox_entry_id, edited.outbox_entry_id);

        event(&c, 1, EventBody::MessageCreated(server_copy(id, "a", None)));
        assert_eq!(stored(&c, id).body, "b", "the send's event");

        let wire = on_wire(&c);
        assert_eq!(wire.len(), 1);
        answer(&c, &wire[0].0, &server_copy(id, "b", Some(9)));
        let m = stored(&c, id);
        assert_eq!(
            (m.body.as_str(), &m.send_state, &m.outbox_entry_id),
            ("b", &SendState::Sent, &None)
        );
        event(
            &c,
            2,
            EventBody::MessageEdited(server_copy(id, "b", Some(9))),
        );
        assert_eq!(stored(&c, id), m);
    }

    #[test]
    fn answers_out_of_order_never_bring_the_old_text_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = client(dir.path());
        let (sent, send_frame, _) = send_then_edit_on_the_wire(&c);
        let id = sent.local_id.as_str();
        let wire = on_wire(&c);
        assert_eq!(wire.len(), 1, "the edit follows on the wire");

        answer(&c, &wire[0].0, &server_copy(id, "b", Some(9)));
        let after_edit = stored(&c, id);
        assert_eq!(
            (after_edit.body.as_str(), &after_edit.send_state),
            ("b", &SendState::Sent)
        );
        answer(&c, &send_frame, &server_copy(id, "a", None));
        assert_eq!(stored(&c, id), after_edit, "the send's late answer");
        event(&c, 1, EventBody::MessageCreated(server_copy(id, "a", None)));
        assert_eq!(stored(&c, id), after_edit, "the send's late event");
        event(
            &c,
            2,
            EventBody::MessageEdited(server_copy(id, "b", Some(9))),
        );
        assert_eq!(stored(&c, id), after_edit);
    }

    #[test]
    fn a_failed_send_names_the_entry_to_retry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = client(dir.path());
        let sent = c.send_message("r".into(), "a".into()).expect("send");
        let wire = on_wire(&c);
        let entry = c.ctx.outbox.lock().on_permanent(&wire[0].0).expect("entry");
        let refused = roam_proto::ErrorBody {
            code: roam_proto::ErrorCode::Forbidden,
            message: "no".into(),
            retry_after_ms: None,
            current: None,
        };
        outbox::fail(&c.ctx, &entry, &refused).expect("fail");
        let m = stored(&c, &sent.local_id);
        assert!(m.send_state.is_failed());
        let to_retry = m.outbox_entry_id.expect("the failed entry");
        c.retry(to_retry).expect("retry");
        assert_eq!(stored(&c, &sent.local_id).send_state, SendState::Pending);
    }
}
