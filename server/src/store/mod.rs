//! The storage boundary of the server.
//!
//! Handlers and the service layer only ever see [`Store`]: an async trait whose signatures carry
//! protocol types and plain Rust values, never a backend's own types. Two backends implement
//! it: the embedded SQLite store ([`sqlite::SqliteStore`], the default) and PostgreSQL
//! ([`postgres::PostgresStore`]) for several nodes.
//!
//! Reads are plain queries. Every change goes through [`Store::commit`], which applies one
//! [`Write`] in one transaction: the idempotency record (if any), the state change, the room
//! events it causes (each with the room's next sequence number) and the notifications it
//! creates. A key that is already recorded makes `commit` answer [`Committed::Replayed`] with
//! the stored result and change nothing.
//!
//! What a write does is decided once, in `write.rs`, for both backends: each backend only
//! implements its `Rows` trait (its SQL for the facts a rule reads and the rows a decision
//! changes). The rules themselves are the functions of [`crate::rules`], which the service also
//! calls before queueing a write (from its cache); the store calls them again under the room's
//! lock, so a race between two requests never commits what the rules forbid. The behaviour
//! suite (`suite.rs`) runs unchanged against both backends.

mod collab;
pub mod postgres;
pub mod push;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod suite;
pub(crate) mod write;

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use roam_proto::{
    ActivityBucket, Attachment, Document, Invitation, Member, Message, Notification, Page,
    ReadMarker, Role, Room, RoomEvent, RoomKind, User,
};
use serde_json::Value;

pub use self::push::PushStore;

/// About how many bytes of stored text (event data, message bodies, document content, room
/// metadata) one page of a listing reads before it stops: every page, REST or socket catch-up,
/// is bounded in bytes as well as in items, and always holds at least one item.
pub const PAGE_BYTES: usize = 1024 * 1024;

/// One page of a listing read from the store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bounded<T> {
    pub items: Vec<T>,
    /// The page stopped at [`PAGE_BYTES`] before its item limit: more may follow.
    pub cut: bool,
}

impl<T> Bounded<T> {
    /// True when the listing may continue after this page: it was cut at the byte budget, or
    /// it holds `limit` items.
    pub fn more(&self, limit: u32) -> bool {
        self.cut || self.items.len() >= limit as usize
    }
}

/// Store errors. `Backend` carries the detail for the log; it is never sent to clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The named thing does not exist (`"room"`, `"message"`, `"invitation"`, `"member"`, …).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The change collides with current state (a room name taken, a member already active, an
    /// invitation no longer pending); the text says what.
    #[error("{0}")]
    Conflict(String),
    /// A document edit was based on a stale version; this is the document as it is now.
    #[error("document changed since base version")]
    VersionConflict(Box<Document>),
    /// The write names a predecessor (`Write::after`) that is not applied: nothing changed.
    #[error("the mutation {0:?} this one follows is not applied")]
    OutOfOrder(String),
    /// The actor may not do this, as the rows stand under the write's lock (a ban or a role
    /// change committed after the service checked it).
    #[error("refused: {0:?}")]
    Refused(crate::rules::Refusal),
    /// A collaborative document refused the update (malformed, pending, too large):
    /// nothing changed.
    #[error("{0}")]
    Collab(crate::collab::Refusal),
    /// The database failed (I/O, corruption, a closed pool).
    #[error("store backend: {0}")]
    Backend(String),
}

/// What [`Store::backup`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupReport {
    /// The size of the copy.
    pub bytes: u64,
    /// The copy's schema version (`PRAGMA user_version`).
    pub schema_version: u32,
}

/// An operator's stamp on a user (`roam-server admin users suspend`): while `suspended`, every
/// token of the user is refused; after `unsuspend`, tokens issued before `not_before` still are.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Suspension {
    pub user: String,
    pub suspended: bool,
    /// Tokens issued (`iat`) before this instant, in ms since the epoch, are refused.
    pub not_before: i64,
}

/// What [`Store::forget_user`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Forgotten {
    /// Events of the user's messages whose text was still kept (messages of deleted rooms),
    /// now blanked.
    pub events_redacted: u64,
    /// Rows of the user's own removed: directory entry, presence, inbox, notifications (theirs
    /// and those they caused), idempotency records, read markers, memberships and role caps,
    /// invitations to or from them.
    pub rows_deleted: u64,
    /// Updates of collaborative documents the user sent, now without their name (the content
    /// stays: it is shared).
    #[serde(default)]
    pub collab_updates_anonymised: u64,
}

/// `Result` with [`StoreError`].
pub type StoreResult<T, E = StoreError> = Result<T, E>;

/// Identifies a mutation for durable idempotency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemRecord {
    /// Keys are scoped per user.
    pub user: String,
    pub key: String,
    /// The mutation's op name (`message.send`, …).
    pub op: String,
    /// A hash of the mutation's canonical JSON: a reused key with other arguments is refused.
    pub fingerprint: String,
}

/// A recorded idempotent result.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResult {
    pub op: String,
    pub fingerprint: String,
    /// The JSON the first application answered with.
    pub result: Value,
    pub created_at: i64,
}

/// A state change, already validated and permission-checked by the service layer.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Creates the room with `owner` as its owner member. Conflict if the name is taken.
    /// Event: `room_created` (seq 1) then `member_joined` for the owner. Output: `Room`.
    CreateRoom {
        name: String,
        kind: RoomKind,
        title: String,
        metadata: Value,
        owner: String,
    },
    /// Event: `room_updated`. Output: `Room`.
    UpdateRoom {
        name: String,
        title: Option<String>,
        kind: Option<RoomKind>,
        metadata: Option<Value>,
    },
    /// Deletes the room and everything in it except its events (kept for recovery, which then
    /// ends with `room_deleted`), its messages' blob references included. Event:
    /// `room_deleted`. Output: `Empty`.
    DeleteRoom { name: String },
    /// Adds (or re-activates after leaving) an active member. With `invitation`, that
    /// invitation must be the user's, for this room, pending and unexpired at `Write::now`, and
    /// still grantable by its inviter; it becomes `accepted` in the same transaction and the
    /// member gets its role (`role` is ignored). Refused if already an active member or banned.
    /// Without an invitation, a user who left the room as a guest comes back as a guest at most
    /// (the store remembers the lower role when they leave). Event: `member_joined`.
    /// Output: `Member`.
    AddMember {
        room: String,
        user: String,
        role: Role,
        invitation: Option<String>,
    },
    /// Removes the member. Event: `member_left`. Output: `Empty`.
    RemoveMember { room: String, user: String },
    /// Event: `member_updated`. Output: `Member`.
    SetRole {
        room: String,
        user: String,
        role: Role,
    },
    /// `to` (an active member) becomes owner, `from` becomes admin, `rooms.owner` changes.
    /// Events: `member_updated` for `to`, then for `from`. Output: `Room`.
    TransferOwnership {
        room: String,
        from: String,
        to: String,
    },
    /// Marks the member banned (creating the row if the user was not a member) and withdraws
    /// their pending invitations to the room. Event: `member_banned`. Output: `Empty`.
    Ban { room: String, user: String },
    /// Removes the ban row. NotFound if not banned. Event: `member_unbanned`. Output: `Empty`.
    Unban { room: String, user: String },
    /// A pending invitation with this id. Conflict if the invitee already has a pending one for
    /// the room or is an active member. No event. Output: `Invitation`.
    CreateInvitation {
        id: String,
        room: String,
        invitee: String,
        role: Role,
        expires_at: i64,
    },
    /// The invitee refuses (Conflict unless pending and unexpired). Output: `Invitation`.
    RejectInvitation { id: String },
    /// The inviter or an admin withdraws it (Conflict unless pending and unexpired).
    /// No event. Output: `Invitation`.
    RevokeInvitation { id: String },
    /// A message with the given `id` (client-chosen or service-made UUIDv7; Conflict if that id
    /// is taken). Event: `message_created`; the message's
    /// `seq` is that event's. With an attachment, the message also references its blob (see
    /// [`Store::blob_shared_with`]); the service has checked that the blob exists with that
    /// size and that the sender may read it. Output: `Message`.
    InsertMessage {
        id: String,
        room: String,
        body: String,
        reply_to: Option<String>,
        attachment: Option<Attachment>,
    },
    /// NotFound if missing or deleted. Event: `message_edited`. Output: `Message`.
    EditMessage {
        room: String,
        id: String,
        body: String,
    },
    /// Empties the body, drops the attachment and its blob reference, and sets `deleted`.
    /// NotFound if missing or already deleted. Event: `message_deleted`. Output: `Message`.
    DeleteMessage { room: String, id: String },
    /// Many messages (`(id, body)`) from the actor, written in batches inside one transaction.
    /// One `message_created` event each. Output: `Imported`.
    ImportMessages {
        room: String,
        messages: Vec<(String, String)>,
    },
    /// Compare-and-swap on the document's version: `base_version` 0 creates it (Conflict if it
    /// exists: VersionConflict with the current one), otherwise it must equal the current
    /// version (else VersionConflict). The new version is kept in the history.
    /// Event: `document_updated`. Output: `Document`.
    PutDocument {
        room: String,
        doc: String,
        base_version: u64,
        content: String,
    },
    /// Merges one Yjs v1 update into the room's collaborative document `doc` (creating it),
    /// through the node's document cache `docs` (see `store/collab.rs`). The actor must still
    /// be a member or above (the write's guard). Refused with [`StoreError::Collab`] when
    /// malformed, pending or too large. No event. Output: `Collab`.
    UpdateCollab {
        room: String,
        doc: String,
        update: Vec<u8>,
        docs: crate::collab::Docs,
    },
    /// Marks the actor's notifications read (`None`: all of them). Output: `Unread`.
    MarkRead { ids: Option<Vec<String>> },
    /// Moves the actor's read marker of `room` to `seq` if that is further than it is (never
    /// back), and marks read the actor's unread `mentioned` notifications of that room whose
    /// message `seq` is at most the marker (the actor's unread count is announced when that
    /// changed it). NotFound if the room is gone. No event. Output: `ReadMarker` (the marker as
    /// it now is). A deleted room's markers go with it.
    MarkRoomRead { room: String, seq: u64 },
    /// Records the actor's push device (protocol §11): replaces the device's row, and takes the
    /// token from any other device or user that held it. No event. Output: `PushDevice`.
    RegisterPush {
        device: String,
        platform: roam_proto::PushPlatform,
        token: String,
        app_id: String,
        locale: Option<String>,
        sandbox: bool,
    },
    /// Removes the actor's push device, if registered. No event. Output: `Empty`.
    UnregisterPush { device: String },
    /// Sets the actor's account default mode (`room` None; never `Default`) or a room's
    /// override (`Default` removes it). No event. Output: `PushSettings`.
    SetPushMode {
        room: Option<String>,
        mode: roam_proto::PushMode,
    },
}

impl Change {
    /// The room the change is about, if it names one (an invitation by id and `MarkRead` do
    /// not).
    pub fn room(&self) -> Option<&str> {
        match self {
            Change::CreateRoom { name, .. }
            | Change::UpdateRoom { name, .. }
            | Change::DeleteRoom { name } => Some(name),
            Change::AddMember { room, .. }
            | Change::RemoveMember { room, .. }
            | Change::SetRole { room, .. }
            | Change::TransferOwnership { room, .. }
            | Change::Ban { room, .. }
            | Change::Unban { room, .. }
            | Change::CreateInvitation { room, .. }
            | Change::InsertMessage { room, .. }
            | Change::EditMessage { room, .. }
            | Change::DeleteMessage { room, .. }
            | Change::ImportMessages { room, .. }
            | Change::PutDocument { room, .. }
            | Change::UpdateCollab { room, .. }
            | Change::MarkRoomRead { room, .. } => Some(room),
            Change::SetPushMode { room, .. } => room.as_deref(),
            Change::RejectInvitation { .. }
            | Change::RevokeInvitation { .. }
            | Change::MarkRead { .. }
            | Change::RegisterPush { .. }
            | Change::UnregisterPush { .. } => None,
        }
    }
}

/// A notification to create in the same transaction as the change.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub user: String,
    pub id: String,
    pub kind: String,
    pub room: Option<String>,
    pub data: Value,
}

/// One atomic write: the unit of [`Store::commit`].
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// Who does it (becomes the events' `actor` and the notifications' `actor`).
    pub actor: String,
    /// The time stamped on everything written.
    pub now: i64,
    pub idem: Option<IdemRecord>,
    /// What the actor must still be when the change is applied; checked inside the write's
    /// transaction, after the room's lock, so nothing commits after its author lost the right.
    pub guard: Option<crate::rules::Guard>,
    /// The key of the actor's mutation this one must follow: applied only if that key is
    /// recorded (checked in the transaction, after the replay check), else
    /// [`StoreError::OutOfOrder`].
    pub after: Option<String>,
    pub change: Change,
    pub notify: Vec<NewNotification>,
}

/// What a change produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Room(Room),
    Member(Member),
    Invitation(Invitation),
    Message(Message),
    Document(Document),
    Imported {
        imported: u64,
        first_seq: u64,
        last_seq: u64,
    },
    Unread {
        unread: u64,
    },
    ReadMarker(ReadMarker),
    PushDevice(roam_proto::PushDevice),
    PushSettings(roam_proto::PushSettings),
    Collab(Arc<CollabOutput>),
    Empty,
}

/// What a `collab.update` produced: its result, and what the followers are sent.
#[derive(Debug)]
pub struct CollabOutput {
    pub result: roam_proto::collab::CollabUpdated,
    pub actor: String,
    pub update: Arc<[u8]>,
    /// The log was compacted into a new snapshot by this write.
    pub compacted: bool,
    /// The write's claim on the cached document: confirmed once committed
    /// ([`Committed::confirm`]).
    pub ticket: Option<crate::collab::Ticket>,
}

impl PartialEq for CollabOutput {
    fn eq(&self, other: &Self) -> bool {
        self.result == other.result && self.actor == other.actor && self.update == other.update
    }
}

/// A collaborative document's row, as a write finds it under its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CollabHead {
    /// The seq of its last update (0: none yet).
    pub seq: u64,
    /// The seq its snapshot holds everything up to (0: no snapshot).
    pub snapshot_seq: u64,
    /// Its size as last recorded (an upper bound, exact after a compaction).
    pub size: u64,
    /// Bytes of the updates logged since the snapshot.
    pub log_bytes: u64,
}

/// A collaborative document as stored, to load it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CollabStored {
    pub seq: u64,
    /// v2-encoded state up to `snapshot_seq`.
    pub snapshot: Option<Vec<u8>>,
    pub snapshot_seq: u64,
    /// The updates after `snapshot_seq`, in seq order.
    pub log: Vec<(u64, Vec<u8>)>,
}

/// One logged update of a collaborative document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollabLogEntry {
    pub seq: u64,
    /// Who sent it (empty once the user was erased).
    pub actor: String,
    /// The v1 update.
    pub update: Vec<u8>,
    pub at: i64,
}

impl Output {
    /// The JSON answered to the client and recorded for idempotent replays.
    pub fn to_json(&self) -> Value {
        let r = match self {
            Output::Room(r) => serde_json::to_value(r),
            Output::Member(m) => serde_json::to_value(m),
            Output::Invitation(i) => serde_json::to_value(i),
            Output::Message(m) => serde_json::to_value(m),
            Output::Document(d) => serde_json::to_value(d),
            Output::Imported {
                imported,
                first_seq,
                last_seq,
            } => Ok(serde_json::json!({
                "imported": imported, "first_seq": first_seq, "last_seq": last_seq
            })),
            Output::Unread { unread } => Ok(serde_json::json!({ "unread": unread })),
            Output::ReadMarker(m) => serde_json::to_value(m),
            Output::PushDevice(d) => serde_json::to_value(d),
            Output::PushSettings(s) => serde_json::to_value(s),
            Output::Collab(c) => serde_json::to_value(&c.result),
            Output::Empty => Ok(serde_json::json!({})),
        };
        // Serialising these plain structs cannot fail (no maps with non-string keys).
        r.unwrap_or(Value::Null)
    }
}

/// The result of [`Store::commit`].
// Answered once per write and consumed at once: a message's attachment inline is not worth a
// box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Committed {
    /// The change was applied.
    Applied {
        output: Output,
        /// The events appended, in sequence order.
        events: Vec<RoomEvent>,
        /// The notifications created (with their per-user seq).
        notifications: Vec<Notification>,
        /// Users whose unread count changed, with the new count.
        unread: Vec<(String, u64)>,
    },
    /// The idempotency key was already recorded: nothing changed.
    Replayed(StoredResult),
}

impl Committed {
    /// Called by a store once the write's transaction is committed: what the write changed in
    /// memory (a cached collaborative document) stands from now on.
    pub fn confirm(&self) {
        if let Committed::Applied {
            output: Output::Collab(c),
            ..
        } = self
        {
            if let Some(t) = &c.ticket {
                t.confirm();
            }
        }
    }
}

/// Which way a listing runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

/// `GET /v1/rooms`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomQuery {
    pub kind: Option<RoomKind>,
    /// Only rooms the viewer is an active member of.
    pub joined_only: bool,
    /// Exclusive: rooms whose name sorts after this.
    pub after_name: Option<String>,
    pub limit: u32,
}

/// `GET /v1/rooms/{room}/messages`: newest first before a seq, or oldest first after one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageCursor {
    /// The newest `limit` messages with seq < this (`u64::MAX` for the newest), newest first.
    Before(u64),
    /// The oldest `limit` messages with seq > this, oldest first.
    After(u64),
}

/// `GET /v1/notifications`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotificationQuery {
    /// Exclusive per-user seq.
    pub after_seq: u64,
    pub unread_only: bool,
    pub limit: u32,
}

/// The user directory's sort fields (a whitelist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserSort {
    #[default]
    Id,
    CreatedAt,
    LastSeen,
}

/// `GET /v1/users`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserQuery {
    /// Only the viewer and users who share an active membership of a room with them (`None`:
    /// every user, for the server's own use).
    pub viewer: Option<String>,
    /// Case-insensitive substring of the user id (empty: everyone).
    pub q: String,
    pub sort: UserSort,
    pub order: Order,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
    pub limit: u32,
}

/// Period of the room analytics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    /// Weeks start on Monday; the bucket is named by that Monday's date.
    Week,
    Month,
    Year,
}

/// What retention removes: everything older than each instant (ms since epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionCutoffs {
    /// Presence rows (last-seen) older than this.
    pub presence_before: i64,
    /// Document versions older than this, except each document's current version.
    pub document_history_before: i64,
    /// Notifications older than this.
    pub notifications_before: i64,
    /// Idempotency records older than this.
    pub idempotency_before: i64,
    /// Invitations that expired before this.
    pub invitations_before: i64,
    /// Event-log compaction horizon: each room's events older than this go, oldest first,
    /// except the room's newest (`None`: the log is kept whole). A client whose cursor is
    /// behind the oldest kept event gets `reset`.
    pub events_before: Option<i64>,
    /// Rows one batch removes at most; a pass runs as many batches as it needs, each committed
    /// on its own, so writes go in between.
    pub batch_rows: u32,
}

/// Rows removed by one retention pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    pub presence: u64,
    pub document_versions: u64,
    pub notifications: u64,
    pub idempotency_keys: u64,
    pub invitations: u64,
    /// Events removed by event-log compaction.
    pub events: u64,
    /// Attachments no message carries any more, deleted from the blob store (counted by the
    /// retention pass, outside the store).
    pub blobs: u64,
    /// Batches (writer transactions) the pass took; 0 when a store shared by several servers
    /// skipped the pass because another server is running one.
    pub batches: u64,
}

impl Purged {
    /// Adds another batch's counts to these.
    pub fn add(&mut self, other: &Purged) {
        self.presence += other.presence;
        self.document_versions += other.document_versions;
        self.notifications += other.notifications;
        self.idempotency_keys += other.idempotency_keys;
        self.invitations += other.invitations;
        self.events += other.events;
        self.batches += other.batches;
    }
}

/// Connection pool figures for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Reader connections in the pool (the writer is separate).
    pub size: u32,
    pub in_use: u32,
    /// Tasks waiting for a reader.
    pub waiting: u32,
    /// Writes waiting for the writer.
    pub write_queue: u32,
}

/// What [`Store::charge_blob_bytes`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// The bytes are charged (or the item was already).
    Charged,
    /// Refused: the owner has `used` bytes charged, and these would pass the limit.
    Refused { used: u64 },
}

/// The quota rule, the same on every store: `bytes` more fit when there is no limit (0) or
/// when `used + bytes` stays within it.
pub fn quota_allows(used: u64, bytes: u64, limit: u64) -> bool {
    limit == 0 || used.saturating_add(bytes) <= limit
}

/// The item under which [`Store::charge_blob_bytes`] charges an unfinished upload
/// (`kind` `"upload"`) or a finished blob (`"blob"`).
pub fn blob_item(kind: &str, id: &str) -> String {
    format!("{kind}:{id}")
}

/// The server's storage.
#[async_trait]
pub trait Store: PushStore + Send + Sync + std::fmt::Debug + 'static {
    /// Applies one write atomically; see the module docs.
    ///
    /// The write is queued when `commit` is CALLED, not when the returned future is first
    /// polled: writes to one room issued one after another are applied in that order, even if
    /// their futures are awaited later or together (a socket pipelines a client's mutations
    /// this way and keeps their order), and so are one actor's writes that name no room. The
    /// SQLite store applies every write in call order; the PostgreSQL store applies writes to
    /// different rooms concurrently.
    fn commit(&self, write: Write) -> BoxFuture<'static, StoreResult<Committed>>;

    /// The recorded result for `(user, key)`, if any.
    async fn idempotent_result(&self, user: &str, key: &str) -> StoreResult<Option<StoredResult>>;

    /// Records the user in the directory (first sight) and sets `last_seen`.
    async fn touch_user(&self, user: &str, now: i64) -> StoreResult<()>;

    async fn room(&self, name: &str) -> StoreResult<Option<Room>>;
    /// The member row, banned ones included.
    async fn member(&self, room: &str, user: &str) -> StoreResult<Option<Member>>;
    /// Rooms the viewer may see (public, protected, and private ones they are an active member
    /// of), by name; at most [`PAGE_BYTES`] of metadata.
    async fn list_rooms(&self, viewer: &str, q: &RoomQuery) -> StoreResult<Bounded<Room>>;
    /// Members by user id, banned ones included, after `after_user`.
    async fn list_members(
        &self,
        room: &str,
        after_user: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Member>>;
    /// Rooms the user is an active member of (names only), for subscribing and presence.
    async fn rooms_of(&self, user: &str) -> StoreResult<Vec<String>>;

    /// With `status` computed at `now` (a pending one past `expires_at` reads `expired`).
    async fn invitation(&self, id: &str, now: i64) -> StoreResult<Option<Invitation>>;
    /// The user's pending, unexpired invitation to the room, if any.
    async fn pending_invitation(
        &self,
        room: &str,
        user: &str,
        now: i64,
    ) -> StoreResult<Option<Invitation>>;
    /// Invitations addressed to the user, newest first.
    async fn invitations_for(
        &self,
        user: &str,
        now: i64,
        limit: u32,
    ) -> StoreResult<Vec<Invitation>>;
    /// Invitations of a room, newest first.
    async fn room_invitations(
        &self,
        room: &str,
        now: i64,
        limit: u32,
    ) -> StoreResult<Vec<Invitation>>;

    async fn message(&self, room: &str, id: &str) -> StoreResult<Option<Message>>;
    /// At most `limit` messages and [`PAGE_BYTES`] of bodies.
    async fn messages(
        &self,
        room: &str,
        cursor: MessageCursor,
        limit: u32,
    ) -> StoreResult<Bounded<Message>>;

    /// Whether `user` may read the blob `blob` (lowercase hex SHA-256) because a message
    /// references it: some message that is not deleted, in a live room that `user` may read
    /// (an active member of it, or a public room they are not banned from), carries it as its
    /// attachment.
    async fn blob_shared_with(&self, user: &str, blob: &str) -> StoreResult<bool>;
    /// Whether any message that is not deleted, in a live room, carries the blob: when none
    /// does, retention may delete it.
    async fn blob_in_use(&self, blob: &str) -> StoreResult<bool>;

    /// Charges `bytes` to `owner`'s attachment storage under `item` (`upload:<id>` or
    /// `blob:<sha256>`, see [`blob_item`]) unless [`quota_allows`] refuses it with `limit`
    /// (0: no limit); checked and written in one step, on every node at once. An item already
    /// charged to `owner` passes and changes nothing.
    async fn charge_blob_bytes(
        &self,
        owner: &str,
        item: &str,
        bytes: u64,
        limit: u64,
    ) -> StoreResult<Charge>;
    /// Removes every charge of `item` (whoever it is charged to); removing none succeeds.
    async fn release_blob_bytes(&self, item: &str) -> StoreResult<()>;
    /// The bytes charged to `owner`: their unfinished uploads and the blobs they uploaded.
    async fn blob_bytes_used(&self, owner: &str) -> StoreResult<u64>;
    /// Stamps the blob as named at `now` (by a send, or by an upload that found or made it),
    /// so that retention leaves it alone for its grace period. `false` when retention has
    /// doomed it (see [`Store::doom_blob`]) since `doomed_after`: the blob is being deleted.
    async fn touch_blob(&self, blob: &str, now: i64, doomed_after: i64) -> StoreResult<bool>;
    /// Marks the blob as being deleted at `now`, only if no message in a live room carries it
    /// and it was not touched since `untouched_since`; `true` when it is marked. One statement
    /// on the blob's row: a [`Store::touch_blob`] either lands before (and this refuses) or
    /// after (and that fails).
    async fn doom_blob(&self, blob: &str, now: i64, untouched_since: i64) -> StoreResult<bool>;
    /// Forgets a deleted blob: its stamps and every charge of it.
    async fn forget_blob(&self, blob: &str) -> StoreResult<()>;

    /// Events with seq > `after`, in order, at most `limit`, and stopping once about
    /// [`PAGE_BYTES`] of event data is read (always at least one event): a short page is not
    /// the end of the log; read on from its last seq until a page comes back empty.
    async fn events_after(&self, room: &str, after: u64, limit: u32)
        -> StoreResult<Vec<RoomEvent>>;
    /// `(oldest kept seq, head seq)` of a room's event log; `(0, 0)` when empty or unknown.
    async fn event_bounds(&self, room: &str) -> StoreResult<(u64, u64)>;

    async fn document(&self, room: &str, doc: &str) -> StoreResult<Option<Document>>;
    /// Current versions of the room's documents, by name, after `after_doc`: at most `limit`
    /// and [`PAGE_BYTES`] of content.
    async fn documents(
        &self,
        room: &str,
        after_doc: Option<&str>,
        limit: u32,
    ) -> StoreResult<Bounded<Document>>;
    /// Kept versions, newest first, with version < `before` (`u64::MAX` for the newest): at
    /// most `limit` and [`PAGE_BYTES`] of content.
    async fn document_history(
        &self,
        room: &str,
        doc: &str,
        before: u64,
        limit: u32,
    ) -> StoreResult<Bounded<Document>>;

    /// A collaborative document as stored (snapshot and the log after it), to load it.
    async fn collab_doc(&self, room: &str, doc: &str) -> StoreResult<Option<CollabStored>>;
    /// Logged updates of a collaborative document with seq > `after`, in order, at most
    /// `limit` (the log may start later: compacted into the snapshot).
    async fn collab_updates(
        &self,
        room: &str,
        doc: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<CollabLogEntry>>;

    async fn notifications(
        &self,
        user: &str,
        q: &NotificationQuery,
    ) -> StoreResult<Vec<Notification>>;
    async fn unread_count(&self, user: &str) -> StoreResult<u64>;
    /// The user's read markers of the rooms they are an active member of, by room name.
    async fn read_markers(&self, user: &str) -> StoreResult<Vec<ReadMarker>>;

    /// Stores the user's last-seen instant (presence persistence).
    async fn save_last_seen(&self, user: &str, at: i64) -> StoreResult<()>;
    /// Last-seen of each user that has one.
    async fn last_seen(&self, users: &[String]) -> StoreResult<Vec<(String, i64)>>;

    /// Those of `users` who are active members of a room `viewer` is an active member of
    /// (the viewer itself included).
    async fn co_members(&self, viewer: &str, users: &[String]) -> StoreResult<Vec<String>>;
    /// The directory search of `GET /v1/users`.
    async fn search_users(&self, q: &UserQuery) -> StoreResult<Page<User>>;
    /// Messages and distinct senders per period, with `from <= created_at < to`.
    async fn room_activity(
        &self,
        room: &str,
        period: Period,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<ActivityBucket>>;

    /// One retention pass, in batches of at most `cutoffs.batch_rows` rows, each its own
    /// transaction (writes queued meanwhile are committed between them). A store that several
    /// servers share runs one pass at a time across all of them: the others return at once with
    /// nothing purged and no batches.
    async fn purge(&self, cutoffs: RetentionCutoffs) -> StoreResult<Purged>;
    /// A cheap round trip, for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;
    /// Writes a consistent copy of the whole store to the file `to` (which must not exist) while
    /// writes go on. Only a store in a file can; PostgreSQL is backed up with its own tools.
    async fn backup(&self, to: &std::path::Path) -> StoreResult<BackupReport> {
        let _ = to;
        Err(StoreError::Backend(
            "this store is backed up with its database's own tools".into(),
        ))
    }
    fn pool_stats(&self) -> PoolStats;

    // ----- the operator's (`admin.rs`) -----

    /// Every user's suspension stamp.
    async fn suspensions(&self) -> StoreResult<Vec<Suspension>>;
    /// Sets (or replaces) a user's suspension stamp.
    async fn set_suspension(&self, s: &Suspension) -> StoreResult<()>;
    /// Live rooms of every kind, by name, after `after` (exclusive; `""` from the first).
    async fn all_rooms(&self, after: &str, limit: u32) -> StoreResult<Vec<Room>>;
    /// Every member row of the user (banned ones included), by room, live rooms only.
    async fn memberships(&self, user: &str) -> StoreResult<Vec<Member>>;
    /// The messages the user sent (deleted ones and those of deleted rooms included), as they
    /// stand now, by room then seq, after `(room, seq)` (exclusive; `("", 0)` from the first).
    async fn messages_by(
        &self,
        user: &str,
        after: (&str, u64),
        limit: u32,
    ) -> StoreResult<Vec<Message>>;
    /// Removes what is left of a user once their messages are deleted and their memberships
    /// ended through ordinary writes (see [`Forgotten`]); blanks the text of their messages
    /// that only the events of deleted rooms still held. Their suspension stamp stays.
    async fn forget_user(&self, user: &str) -> StoreResult<Forgotten>;
    /// Makes removed data unreadable in the store's files (after [`Store::forget_user`]):
    /// nothing to do by default.
    async fn scrub(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Gives back memory the store holds but does not need (page caches of idle connections),
    /// after many sockets closed. Nothing to do by default.
    async fn release_memory(&self) -> StoreResult<()> {
        Ok(())
    }
}
