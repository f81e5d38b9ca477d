//! The records the core hands to the app.
//!
//! They are plain data (strings, integers, enums, `Option`, `Vec`) so that the bindings can turn
//! them into Swift structs and Kotlin data classes one to one. Where the protocol type fits as it
//! is (`Member`, `Presence`, the small enums, the server's document as [`DocumentVersion`]) it is
//! re-used; where it holds free JSON (`Room::metadata`, `Notification::data`) the core record
//! carries that JSON as text instead.
//! Local-only state (send state, failure reason, local id, the sync cursor) lives here and
//! nowhere in the protocol.

use std::time::Duration;

use base64::Engine as _;

use roam_proto::{Member, Presence, RoomKind};

/// A document as the server holds it: one version of its content (the protocol record).
pub use roam_proto::Document as DocumentVersion;

/// Where a local change stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendState {
    /// Written locally, waiting in the outbox (or on the wire).
    Pending,
    /// Confirmed by the server (or received from it).
    Sent,
    /// Refused by the server for good; the outbox entry waits for `retry` or `discard`.
    Failed {
        /// The protocol error code (`forbidden`, `not_found`, …), or `client` when the core
        /// itself gave up (for example an edit of a message that was never sent).
        code: String,
        /// The reason, for display or logs.
        message: String,
    },
}

impl SendState {
    /// `pending`, `sent` or `failed`: the value stored in the database.
    pub fn as_str(&self) -> &'static str {
        match self {
            SendState::Pending => "pending",
            SendState::Sent => "sent",
            SendState::Failed { .. } => "failed",
        }
    }

    /// True for [`SendState::Failed`].
    pub fn is_failed(&self) -> bool {
        matches!(self, SendState::Failed { .. })
    }
}

/// A message as the app shows it: confirmed by the server, or local and optimistic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Stable identifier for the app: the transaction id (outbox key, UUIDv7) for messages sent
    /// from this device, the server id for everyone else's. It never changes, even when the
    /// server confirms a local message.
    pub local_id: String,
    /// The server's id, once known.
    pub id: Option<String>,
    pub room: String,
    /// The message's place in the room, once the server has confirmed it.
    pub seq: Option<u64>,
    pub sender: String,
    /// The text; empty once deleted.
    pub body: String,
    pub reply_to: Option<String>,
    /// Milliseconds since the Unix epoch (local clock until confirmed).
    pub created_at: i64,
    pub edited_at: Option<i64>,
    pub deleted: bool,
    /// The state of the latest local change to this message (send, edit or delete).
    pub send_state: SendState,
    /// The outbox entry holding that change while it is pending or failed (the id to pass to
    /// `retry` or `discard`); `None` once it is sent.
    pub outbox_entry_id: Option<String>,
    /// The file the message carries (`body` is then its caption, possibly empty); `None` for a
    /// plain message and once deleted.
    pub attachment: Option<Attachment>,
}

/// A file carried by a message (protocol §10): what the app needs to show it before it is
/// downloaded, and where it stands on this device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The blob: the lowercase hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// The file name to show and to offer when saving.
    pub name: String,
    /// The MIME type (`image/jpeg`).
    pub mime: String,
    /// The file's size in bytes.
    pub size: u64,
    /// Pixel width of an image or video.
    pub width: Option<u32>,
    /// Pixel height of an image or video.
    pub height: Option<u32>,
    /// Length of an audio or video file, in milliseconds.
    pub duration_ms: Option<u64>,
    /// A small inline preview (a JPEG, PNG or WebP image of at most 8 KiB).
    pub thumbnail: Option<Vec<u8>>,
    /// The file on this device, in the client's media cache: a file sent from here has one from
    /// the start; a received one once `attachment_file` fetched it (and until the cache
    /// evicts it).
    pub local_path: Option<String>,
    /// While this device uploads the file (before the message itself is sent): how far it
    /// got, or why it stopped.
    pub upload: Option<UploadProgress>,
}

/// What the app tells about a file it sends (`Client::send_attachment`); all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachmentDetails {
    /// The name to show (`None`: the file's own name).
    pub name: Option<String>,
    /// Pixel width of an image or video.
    pub width: Option<u32>,
    /// Pixel height of an image or video.
    pub height: Option<u32>,
    /// Length of an audio or video file, in milliseconds.
    pub duration_ms: Option<u64>,
    /// A small preview shown before the file is downloaded: a JPEG, PNG or WebP image of at
    /// most 8 KiB.
    pub thumbnail: Option<Vec<u8>>,
}

/// How far the upload of an attachment sent from this device got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadProgress {
    /// The message (its local id, also the send's outbox entry id).
    pub local_id: String,
    pub room: String,
    /// Bytes the server holds.
    pub sent_bytes: u64,
    /// The file's size.
    pub total_bytes: u64,
    pub state: UploadState,
}

/// Where an upload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadState {
    /// Waiting for its turn or the network, or sending bytes.
    Uploading,
    /// The server holds the file; the message itself follows through the outbox.
    Done,
    /// Stopped for good (the file is too large, it changed, the server refused it): the
    /// message is failed too. `retry` its outbox entry to upload again, or `discard` it.
    Failed {
        /// The protocol error code (`payload_too_large`, `hash_mismatch`, …) or `client`.
        code: String,
        /// The reason, for display or logs.
        message: String,
    },
    /// The app cancelled it (the message is gone too).
    Cancelled,
}

/// A room as held locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    pub name: String,
    pub kind: RoomKind,
    pub title: String,
    /// Application metadata, a JSON object as text.
    pub metadata_json: String,
    pub owner: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// The newest sequence number the server reported for the room.
    pub head_seq: u64,
    pub member_count: u64,
    /// True while the local user is an active member (or has asked to be).
    pub joined: bool,
    /// The highest sequence number applied locally: everything up to it is in the store.
    pub last_seq: u64,
    /// State of the latest local change to the room itself (create, update).
    pub send_state: SendState,
}

/// A document as held locally, possibly with a local edit on top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub room: String,
    pub doc: String,
    /// The server version this content is (or, while pending, is meant to become).
    pub version: u64,
    pub content: String,
    pub updated_by: String,
    pub updated_at: i64,
    pub send_state: SendState,
    /// When the last local edit was refused with `version_conflict`: the document as the server
    /// holds it. Rebase onto it and call `put_document` again with
    /// `base_version = conflict.version`.
    pub conflict: Option<DocumentVersion>,
}

/// A notification of the local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationInfo {
    pub seq: u64,
    pub id: String,
    /// `invited`, `mentioned`, `role_changed`, `ownership_transferred`, `banned`.
    pub kind: String,
    pub room: Option<String>,
    pub actor: Option<String>,
    /// Kind-specific details, a JSON value as text.
    pub data_json: String,
    pub created_at: i64,
    pub read: bool,
}

/// One queued mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The idempotency key (UUIDv7), also the entry's id for `retry` and `discard`.
    pub id: String,
    /// The room whose queue the entry is in (`None`: the account's own queue).
    pub room: Option<String>,
    /// The protocol op (`message.send`, …).
    pub op: String,
    /// The mutation as it will travel, `{"op": …, "args": {…}}`.
    pub mutation_json: String,
    /// `Pending` (waiting or on the wire) or `Failed` with the reason.
    pub state: SendState,
    /// Transient failures so far.
    pub attempts: u32,
    /// When it was queued, milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// The state of the real-time connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not started, or the app asked to be offline.
    Offline,
    /// A connection attempt is under way.
    Connecting,
    /// Connected and authenticated (recovery may still be running).
    Connected,
    /// The last attempt failed or the link dropped; the next attempt is in `retry_in`
    /// (or as soon as the app calls `network_available`).
    Waiting {
        /// The delay before the next attempt.
        retry_in: Duration,
    },
    /// The account cannot connect until the app signs in again: the token provider failed, the
    /// server refused a freshly asked token, or the server says the token belongs to another
    /// user. Nothing is sent and no attempt is made until the app calls `network_available`
    /// (after a new sign-in) or `set_online`. The reason is in [`SyncPhase::NeedsSignIn`].
    NeedsSignIn,
    /// The store ran out of space (the disk is full, or the database reached
    /// `max_store_bytes`) while storing what the server sent. The connection was closed; the
    /// next attempt is in `retry_in` (the slow `storage_full_delay`), or as soon as the app calls
    /// `network_available` (after freeing space). Reads and local writes that fit still work.
    StorageFull {
        /// The delay before the next attempt.
        retry_in: Duration,
    },
}

/// Where synchronisation stands, as an app shows it ("offline", "updating…", "up to date").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncPhase {
    /// Not started, or the app asked to be offline.
    Offline,
    /// Connecting, or waiting to try again after a failure.
    Connecting,
    /// Connected; missed events are still being fetched.
    CatchingUp,
    /// Connected and every followed room caught up; live events arrive as they happen.
    Synced,
    /// See [`ConnectionState::NeedsSignIn`].
    NeedsSignIn {
        /// Why, for logs and for choosing what to show.
        reason: String,
    },
    /// The device is out of storage: see [`ConnectionState::StorageFull`].
    StorageFull,
}

/// The sync status: the phase, and what the outbox still has to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    pub phase: SyncPhase,
    /// Outbox entries waiting to be sent or answered (failed ones not counted).
    pub pending_writes: u64,
    /// When the oldest of them was written, milliseconds since the Unix epoch (its age is
    /// "now" minus this).
    pub oldest_pending_at: Option<i64>,
}

/// Something changed in a room.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomUpdate {
    /// A message appeared (from the server, or sent locally).
    MessageAdded(Message),
    /// A message's body changed.
    MessageEdited(Message),
    /// A message was deleted (it stays, with `deleted: true` and an empty body).
    MessageDeleted(Message),
    /// A local message disappeared for good (its send was discarded) or was merged into the
    /// server's copy.
    MessageRemoved { room: String, local_id: String },
    /// The send state of a local change to a message moved (`pending → sent`, `→ failed`, …),
    /// or the server confirmed a message while a later edit or delete of it is still queued
    /// (it gets its `seq`; `state` is that change's, and the text stays the local one).
    SendStateChanged {
        room: String,
        local_id: String,
        state: SendState,
    },
    /// The room's own data or the local user's membership changed.
    RoomChanged(RoomInfo),
    /// The room was deleted, or the local user lost access; its local data is gone.
    RoomRemoved { room: String },
    /// A member joined or their role or status changed.
    MemberChanged(Member),
    /// A member left.
    MemberRemoved { room: String, user: String },
    /// The server could not replay what was missed: the room's confirmed messages were dropped,
    /// and its record, members, documents and newest messages are being reloaded (they arrive
    /// as the usual updates; read the room again).
    Reset { room: String },
}

impl RoomUpdate {
    /// The room the update belongs to.
    pub fn room(&self) -> &str {
        match self {
            RoomUpdate::MessageAdded(m)
            | RoomUpdate::MessageEdited(m)
            | RoomUpdate::MessageDeleted(m) => &m.room,
            RoomUpdate::MessageRemoved { room, .. }
            | RoomUpdate::SendStateChanged { room, .. }
            | RoomUpdate::RoomRemoved { room }
            | RoomUpdate::MemberRemoved { room, .. }
            | RoomUpdate::Reset { room } => room,
            RoomUpdate::RoomChanged(r) => &r.name,
            RoomUpdate::MemberChanged(m) => &m.room,
        }
    }
}

/// Something changed in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentUpdate {
    /// A new version (from the server or a local edit), or a send-state change.
    Updated(Document),
    /// A local edit was refused because its base version is stale; `current` is the server's
    /// document. The local edit stays in the store as failed until rebased or discarded.
    Conflict {
        local: Document,
        current: DocumentVersion,
    },
}

// ---------------------------------------------------------------------------------------------
// Collaborative documents (`crate::collab`). Offsets and lengths of text are UTF-16 code units
// (what Swift's `NSString`/`UITextView` and Kotlin's `String` count); values are JSON text.

/// One piece of a text change, as an editor applies it from the start of the text: keep `len`
/// units (reformatting them when `attributes` is set), insert `text`, or delete `len` units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextDelta {
    /// `text` inserted here; `attributes` (a JSON object) formats it, when set.
    Insert {
        text: String,
        attributes: Option<String>,
    },
    /// `len` units removed here.
    Delete { len: u32 },
    /// `len` units kept; `attributes` (a JSON object, `null` values removing an attribute)
    /// reformats them, when set.
    Retain {
        len: u32,
        attributes: Option<String>,
    },
}

/// One piece of a list change, applied from the start of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListDelta {
    /// These values (JSON text each) inserted here.
    Insert { values: Vec<String> },
    /// `len` items removed here.
    Delete { len: u32 },
    /// `len` items kept.
    Retain { len: u32 },
}

/// A key of a map that changed: its new value (JSON text), or `None` when it was removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapKeyChange {
    pub key: String,
    pub value: Option<String>,
}

/// What changed in one value at the document's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollabValueChange {
    Text {
        name: String,
        delta: Vec<TextDelta>,
    },
    List {
        name: String,
        delta: Vec<ListDelta>,
    },
    Map {
        name: String,
        keys: Vec<MapKeyChange>,
    },
}

impl CollabValueChange {
    /// The name of the root value.
    pub fn name(&self) -> &str {
        match self {
            CollabValueChange::Text { name, .. }
            | CollabValueChange::List { name, .. }
            | CollabValueChange::Map { name, .. } => name,
        }
    }
}

/// The changes of one transaction of a collaborative document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollabChange {
    pub room: String,
    pub doc: String,
    /// True for this device's own edits (and their undo/redo), false for other people's.
    pub local: bool,
    pub changes: Vec<CollabValueChange>,
}

/// Edits of a collaborative document that the server refused for good (`forbidden`,
/// `payload_too_large`, `invalid_input`, …). They stay in the local document; the outbox entry
/// `entry` is failed and waits for `retry` or `discard`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollabError {
    pub room: String,
    pub doc: String,
    /// The outbox entry, or empty when the document could not be followed (`collab_sync`
    /// refused) or a received update could not be read.
    pub entry: String,
    pub code: String,
    pub message: String,
}

/// A selection in a text of the document: `anchor` where it started, `head` where the cursor is
/// (equal for a caret), in UTF-16 units of the text as it is locally now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextSelection {
    pub anchor: u32,
    pub head: u32,
}

/// Someone else's presence in a document (one per session: a user on two devices has two).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollabPeer {
    pub user: String,
    pub session: String,
    /// The app's JSON state they set (name, colour, …), as JSON text.
    pub state: Option<String>,
    /// The text their selection is in, and where it is now.
    pub text: Option<String>,
    pub selection: Option<TextSelection>,
}

/// Presence as delivered to the app (the protocol record).
pub type PresenceInfo = Presence;

/// Milliseconds since the Unix epoch, by the local clock.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The app's view of a stored attachment.
pub(crate) fn attachment_from_wire(
    wire: roam_proto::Attachment,
    local_path: Option<String>,
    upload: Option<UploadProgress>,
) -> Attachment {
    let thumbnail = wire.thumbnail.as_deref().and_then(|t| {
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .map_err(|err| tracing::debug!(error = %err, "an attachment thumbnail is not base64"))
            .ok()
    });
    Attachment {
        sha256: wire.blob,
        name: wire.name,
        mime: wire.mime,
        size: wire.size,
        width: wire.width,
        height: wire.height,
        duration_ms: wire.duration_ms,
        thumbnail,
        local_path,
        upload,
    }
}
