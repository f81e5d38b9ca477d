//! The records and enums of the Swift and Kotlin API, converted from the core's types in one
//! place (the `From` impls below). They are plain data: Swift structs and enums, Kotlin data
//! classes and sealed classes.

use std::time::Duration;

/// Who may see and join a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum RoomKind {
    Public,
    Protected,
    Private,
}

impl From<RoomKind> for roam_core::RoomKind {
    fn from(k: RoomKind) -> Self {
        match k {
            RoomKind::Public => roam_core::RoomKind::Public,
            RoomKind::Protected => roam_core::RoomKind::Protected,
            RoomKind::Private => roam_core::RoomKind::Private,
        }
    }
}

impl From<roam_core::RoomKind> for RoomKind {
    fn from(k: roam_core::RoomKind) -> Self {
        match k {
            roam_core::RoomKind::Public => RoomKind::Public,
            roam_core::RoomKind::Protected => RoomKind::Protected,
            roam_core::RoomKind::Private => RoomKind::Private,
        }
    }
}

/// A member's role, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Role {
    Owner,
    Admin,
    Member,
    Guest,
}

impl From<roam_core::Role> for Role {
    fn from(r: roam_core::Role) -> Self {
        match r {
            roam_core::Role::Owner => Role::Owner,
            roam_core::Role::Admin => Role::Admin,
            roam_core::Role::Member => Role::Member,
            roam_core::Role::Guest => Role::Guest,
        }
    }
}

impl From<Role> for roam_core::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::Owner => roam_core::Role::Owner,
            Role::Admin => roam_core::Role::Admin,
            Role::Member => roam_core::Role::Member,
            Role::Guest => roam_core::Role::Guest,
        }
    }
}

/// Where a local change stands.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum SendState {
    /// Written locally, waiting in the outbox (or on the wire).
    Pending,
    /// Confirmed by the server (or received from it).
    Sent,
    /// Refused for good; `code` is the protocol error code (`forbidden`, …).
    Failed { code: String, message: String },
}

impl From<roam_core::SendState> for SendState {
    fn from(s: roam_core::SendState) -> Self {
        match s {
            roam_core::SendState::Pending => SendState::Pending,
            roam_core::SendState::Sent => SendState::Sent,
            roam_core::SendState::Failed { code, message } => SendState::Failed { code, message },
        }
    }
}

/// A message as the app shows it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Message {
    /// Stable id for the app (never changes, even when the server confirms the message).
    pub local_id: String,
    /// The server's id, once known.
    pub id: Option<String>,
    pub room: String,
    /// The message's place in the room, once confirmed.
    pub seq: Option<u64>,
    pub sender: String,
    pub body: String,
    pub reply_to: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub edited_at: Option<i64>,
    pub deleted: bool,
    /// The state of the latest local change to this message (send, edit or delete).
    pub send_state: SendState,
    /// The outbox entry holding that change while it is pending or failed: pass it to
    /// `retry` or `discard`. `None` once it is sent.
    pub outbox_entry_id: Option<String>,
    /// The file the message carries (`body` is then its caption, maybe empty); nil/null for a
    /// plain message and once deleted.
    pub attachment: Option<Attachment>,
}

/// A file carried by a message: what to show before it is downloaded, and where it stands on
/// this device.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Attachment {
    /// The lowercase hex SHA-256 of the file's bytes (the blob's name on the server).
    pub sha256: String,
    /// The file name to show and to offer when saving.
    pub name: String,
    /// The MIME type (`image/jpeg`).
    pub mime: String,
    /// Size in bytes.
    pub size: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub duration_ms: Option<u64>,
    /// A small inline preview (JPEG, PNG or WebP, at most 8 KiB).
    pub thumbnail: Option<Vec<u8>>,
    /// The file on this device, when the media cache holds it (files sent from here at once;
    /// received ones after `attachment_file`).
    pub local_path: Option<String>,
    /// While this device uploads it: how far the upload got.
    pub upload: Option<UploadProgress>,
}

impl From<roam_core::Attachment> for Attachment {
    fn from(a: roam_core::Attachment) -> Self {
        Attachment {
            sha256: a.sha256,
            name: a.name,
            mime: a.mime,
            size: a.size,
            width: a.width,
            height: a.height,
            duration_ms: a.duration_ms,
            thumbnail: a.thumbnail,
            local_path: a.local_path,
            upload: a.upload.map(Into::into),
        }
    }
}

/// What the app tells about a file it sends; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct AttachmentDetails {
    /// The name to show (nil/null: the file's own name).
    #[uniffi(default = None)]
    pub name: Option<String>,
    #[uniffi(default = None)]
    pub width: Option<u32>,
    #[uniffi(default = None)]
    pub height: Option<u32>,
    #[uniffi(default = None)]
    pub duration_ms: Option<u64>,
    /// A small preview: a JPEG, PNG or WebP image of at most 8 KiB.
    #[uniffi(default = None)]
    pub thumbnail: Option<Vec<u8>>,
}

impl From<AttachmentDetails> for roam_core::AttachmentDetails {
    fn from(d: AttachmentDetails) -> Self {
        roam_core::AttachmentDetails {
            name: d.name,
            width: d.width,
            height: d.height,
            duration_ms: d.duration_ms,
            thumbnail: d.thumbnail,
        }
    }
}

/// How far the upload of a file sent from this device got.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct UploadProgress {
    /// The message's local id (also its outbox entry id, for `retry` and `discard`).
    pub local_id: String,
    pub room: String,
    /// Bytes the server holds.
    pub sent_bytes: u64,
    pub total_bytes: u64,
    pub state: UploadState,
}

impl From<roam_core::UploadProgress> for UploadProgress {
    fn from(p: roam_core::UploadProgress) -> Self {
        UploadProgress {
            local_id: p.local_id,
            room: p.room,
            sent_bytes: p.sent_bytes,
            total_bytes: p.total_bytes,
            state: p.state.into(),
        }
    }
}

/// Where an upload stands.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum UploadState {
    /// Waiting for its turn or the network, or sending.
    Uploading,
    /// The server holds the file; the message follows.
    Done,
    /// Stopped for good; the message failed too: `retry` its outbox entry, or `discard` it.
    Failed { code: String, message: String },
    /// Cancelled by the app (the message is gone).
    Cancelled,
}

impl From<roam_core::UploadState> for UploadState {
    fn from(s: roam_core::UploadState) -> Self {
        match s {
            roam_core::UploadState::Uploading => UploadState::Uploading,
            roam_core::UploadState::Done => UploadState::Done,
            roam_core::UploadState::Failed { code, message } => {
                UploadState::Failed { code, message }
            }
            roam_core::UploadState::Cancelled => UploadState::Cancelled,
        }
    }
}

impl From<roam_core::Message> for Message {
    fn from(m: roam_core::Message) -> Self {
        Message {
            local_id: m.local_id,
            id: m.id,
            room: m.room,
            seq: m.seq,
            sender: m.sender,
            body: m.body,
            reply_to: m.reply_to,
            created_at: m.created_at,
            edited_at: m.edited_at,
            deleted: m.deleted,
            send_state: m.send_state.into(),
            outbox_entry_id: m.outbox_entry_id,
            attachment: m.attachment.map(Into::into),
        }
    }
}

/// A room as held locally.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Room {
    pub name: String,
    pub kind: RoomKind,
    pub title: String,
    /// Application metadata, a JSON object as text.
    pub metadata_json: String,
    pub owner: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
    /// The newest sequence number the server reported for the room.
    pub head_seq: u64,
    /// The highest sequence number held locally (everything up to it is in the store).
    pub last_seq: u64,
    pub member_count: u64,
    /// True while this account is a member (or has asked to be).
    pub joined: bool,
    /// The state of the latest local change to the room itself (create, update, join, leave).
    pub send_state: SendState,
}

impl From<roam_core::RoomInfo> for Room {
    fn from(r: roam_core::RoomInfo) -> Self {
        Room {
            name: r.name,
            kind: r.kind.into(),
            title: r.title,
            metadata_json: r.metadata_json,
            owner: r.owner,
            created_at: r.created_at,
            updated_at: r.updated_at,
            head_seq: r.head_seq,
            last_seq: r.last_seq,
            member_count: r.member_count,
            joined: r.joined,
            send_state: r.send_state.into(),
        }
    }
}

/// Whether a member is in the room or banned from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum MemberStatus {
    Active,
    Banned,
}

impl From<roam_core::MemberStatus> for MemberStatus {
    fn from(s: roam_core::MemberStatus) -> Self {
        match s {
            roam_core::MemberStatus::Active => MemberStatus::Active,
            roam_core::MemberStatus::Banned => MemberStatus::Banned,
        }
    }
}

/// A user's membership of a room.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Member {
    pub room: String,
    pub user: String,
    pub role: Role,
    pub status: MemberStatus,
    /// Milliseconds since the Unix epoch.
    pub joined_at: i64,
}

impl From<roam_core::Member> for Member {
    fn from(m: roam_core::Member) -> Self {
        Member {
            room: m.room,
            user: m.user,
            role: m.role.into(),
            status: m.status.into(),
            joined_at: m.joined_at,
        }
    }
}

/// Online, away or offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PresenceStatus {
    Online,
    Away,
    Offline,
}

impl From<roam_core::PresenceStatus> for PresenceStatus {
    fn from(s: roam_core::PresenceStatus) -> Self {
        match s {
            roam_core::PresenceStatus::Online => PresenceStatus::Online,
            roam_core::PresenceStatus::Away => PresenceStatus::Away,
            roam_core::PresenceStatus::Offline => PresenceStatus::Offline,
        }
    }
}

/// A user's presence over all of their devices.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Presence {
    pub user: String,
    pub status: PresenceStatus,
    pub last_seen: Option<i64>,
    pub devices: u32,
}

impl From<roam_core::Presence> for Presence {
    fn from(p: roam_core::Presence) -> Self {
        Presence {
            user: p.user,
            status: p.status.into(),
            last_seen: p.last_seen,
            devices: p.devices,
        }
    }
}

/// A document version as the server holds it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DocumentVersion {
    pub version: u64,
    pub content: String,
    pub updated_by: String,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
}

impl From<roam_core::DocumentVersion> for DocumentVersion {
    fn from(d: roam_core::DocumentVersion) -> Self {
        DocumentVersion {
            version: d.version,
            content: d.content,
            updated_by: d.updated_by,
            updated_at: d.updated_at,
        }
    }
}

/// A versioned document as held locally.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Document {
    pub room: String,
    pub doc: String,
    pub version: u64,
    pub content: String,
    pub updated_by: String,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
    pub send_state: SendState,
    /// After a refused (stale) edit: the server's current version, to rebase on.
    pub conflict: Option<DocumentVersion>,
}

impl From<roam_core::Document> for Document {
    fn from(d: roam_core::Document) -> Self {
        Document {
            room: d.room,
            doc: d.doc,
            version: d.version,
            content: d.content,
            updated_by: d.updated_by,
            updated_at: d.updated_at,
            send_state: d.send_state.into(),
            conflict: d.conflict.map(Into::into),
        }
    }
}

/// A notification of this account (named so it does not clash with Foundation's `Notification`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RoamNotification {
    pub seq: u64,
    pub id: String,
    /// `invited`, `mentioned`, `role_changed`, `ownership_transferred`, `banned`.
    pub kind: String,
    pub room: Option<String>,
    pub actor: Option<String>,
    pub data_json: String,
    pub created_at: i64,
    pub read: bool,
}

impl From<roam_core::NotificationInfo> for RoamNotification {
    fn from(n: roam_core::NotificationInfo) -> Self {
        RoamNotification {
            seq: n.seq,
            id: n.id,
            kind: n.kind,
            room: n.room,
            actor: n.actor,
            data_json: n.data_json,
            created_at: n.created_at,
            read: n.read,
        }
    }
}

/// An outbox entry.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct OutboxEntry {
    pub id: String,
    pub room: Option<String>,
    /// The protocol operation (`message.send`, `document.put`, …).
    pub op: String,
    /// The mutation as it will travel, `{"op": …, "args": {…}}`.
    pub mutation_json: String,
    pub state: SendState,
    /// Transient failures so far.
    pub attempts: u32,
    pub created_at: i64,
}

impl From<roam_core::OutboxEntry> for OutboxEntry {
    fn from(e: roam_core::OutboxEntry) -> Self {
        OutboxEntry {
            id: e.id,
            room: e.room,
            op: e.op,
            mutation_json: e.mutation_json,
            state: e.state.into(),
            attempts: e.attempts,
            created_at: e.created_at,
        }
    }
}

/// The connection to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ConnectionState {
    /// Not trying (not started, or the app went offline).
    Offline,
    Connecting,
    Connected,
    /// The next attempt is in `retry_in_ms`.
    Waiting {
        retry_in_ms: u64,
    },
    /// The account cannot connect until the user signs in again (the token provider failed,
    /// a fresh token was refused, or the token belongs to another user). Nothing is sent; call
    /// `network_available()` after a new sign-in to try again. The reason is in `SyncStatus`.
    NeedsSignIn,
    /// The device ran out of storage (or the database reached `max_store_bytes`) while storing
    /// what the server sent; the next attempt is in `retry_in_ms` (slow), or at once after
    /// `network_available()` (call it once space was freed).
    StorageFull {
        retry_in_ms: u64,
    },
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<roam_core::ConnectionState> for ConnectionState {
    fn from(s: roam_core::ConnectionState) -> Self {
        match s {
            roam_core::ConnectionState::Offline => ConnectionState::Offline,
            roam_core::ConnectionState::Connecting => ConnectionState::Connecting,
            roam_core::ConnectionState::Connected => ConnectionState::Connected,
            roam_core::ConnectionState::Waiting { retry_in } => ConnectionState::Waiting {
                retry_in_ms: millis(retry_in),
            },
            roam_core::ConnectionState::NeedsSignIn => ConnectionState::NeedsSignIn,
            roam_core::ConnectionState::StorageFull { retry_in } => ConnectionState::StorageFull {
                retry_in_ms: millis(retry_in),
            },
        }
    }
}

/// Where synchronisation stands.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum SyncPhase {
    /// Not started, or the app asked to be offline.
    Offline,
    /// Connecting, or waiting to try again.
    Connecting,
    /// Connected; missed events are still arriving.
    CatchingUp,
    /// Connected and caught up.
    Synced,
    /// The user must sign in again.
    NeedsSignIn { reason: String },
    /// The device is out of storage: see `ConnectionState::StorageFull`.
    StorageFull,
}

/// The sync status: phase and what the outbox still has to send.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncStatus {
    pub phase: SyncPhase,
    /// Writes waiting to be sent or answered (failed ones not counted).
    pub pending_writes: u64,
    /// When the oldest of them was written (milliseconds since the Unix epoch).
    pub oldest_pending_at: Option<i64>,
}

impl From<roam_core::SyncStatus> for SyncStatus {
    fn from(s: roam_core::SyncStatus) -> Self {
        SyncStatus {
            phase: match s.phase {
                roam_core::SyncPhase::Offline => SyncPhase::Offline,
                roam_core::SyncPhase::Connecting => SyncPhase::Connecting,
                roam_core::SyncPhase::CatchingUp => SyncPhase::CatchingUp,
                roam_core::SyncPhase::Synced => SyncPhase::Synced,
                roam_core::SyncPhase::NeedsSignIn { reason } => SyncPhase::NeedsSignIn { reason },
                roam_core::SyncPhase::StorageFull => SyncPhase::StorageFull,
            },
            pending_writes: s.pending_writes,
            oldest_pending_at: s.oldest_pending_at,
        }
    }
}

/// One change of a timeline. Apply the diffs of one callback in order; indices refer to the
/// list as it is at that point.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum TimelineDiff {
    /// Replace the whole list.
    Reset { messages: Vec<Message> },
    /// Insert at `index`.
    Insert { index: u32, message: Message },
    /// Replace the message at `index`.
    Set { index: u32, message: Message },
    /// Remove the message at `index`.
    Remove { index: u32 },
}

impl From<roam_core::TimelineDiff> for TimelineDiff {
    fn from(d: roam_core::TimelineDiff) -> Self {
        match d {
            roam_core::TimelineDiff::Reset { messages } => TimelineDiff::Reset {
                messages: messages.into_iter().map(Message::from).collect(),
            },
            roam_core::TimelineDiff::Insert { index, message } => TimelineDiff::Insert {
                index,
                message: message.into(),
            },
            roam_core::TimelineDiff::Set { index, message } => TimelineDiff::Set {
                index,
                message: message.into(),
            },
            roam_core::TimelineDiff::Remove { index } => TimelineDiff::Remove { index },
        }
    }
}

/// A room as the room list shows it (the core's `RoomSummary`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RoomSummary {
    pub room: Room,
    /// The newest message that is not deleted (an unsent one of this device first).
    pub last_message: Option<Message>,
    /// Messages after the read marker, not deleted, not sent by this account.
    pub unread_count: u64,
    /// Those of them that mention this account's user (`@user`).
    pub mention_count: u64,
    /// The read marker: every message with a seq up to this is read (0: none).
    pub read_seq: u64,
    /// What the list is sorted by, newest first: the last message's time, else the room's
    /// creation time (milliseconds since the Unix epoch).
    pub latest_activity: i64,
}

impl From<roam_core::RoomSummary> for RoomSummary {
    fn from(s: roam_core::RoomSummary) -> Self {
        RoomSummary {
            room: s.room.into(),
            last_message: s.last_message.map(Message::from),
            unread_count: s.unread_count,
            mention_count: s.mention_count,
            read_seq: s.read_seq,
            latest_activity: s.latest_activity,
        }
    }
}

/// One change of a room list. Apply the diffs of one callback in order; indices refer to the
/// list as it is at that point.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum RoomListDiff {
    /// Replace the whole list.
    Reset { rooms: Vec<RoomSummary> },
    /// Insert at `index`.
    Insert { index: u32, room: RoomSummary },
    /// Replace the room at `index`.
    Set { index: u32, room: RoomSummary },
    /// Remove the room at `index`.
    Remove { index: u32 },
}

impl From<roam_core::RoomListDiff> for RoomListDiff {
    fn from(d: roam_core::RoomListDiff) -> Self {
        match d {
            roam_core::RoomListDiff::Reset { rooms } => RoomListDiff::Reset {
                rooms: rooms.into_iter().map(RoomSummary::from).collect(),
            },
            roam_core::RoomListDiff::Insert { index, room } => RoomListDiff::Insert {
                index,
                room: room.into(),
            },
            roam_core::RoomListDiff::Set { index, room } => RoomListDiff::Set {
                index,
                room: room.into(),
            },
            roam_core::RoomListDiff::Remove { index } => RoomListDiff::Remove { index },
        }
    }
}

/// Something changed in a room.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum RoomUpdate {
    MessageAdded {
        message: Message,
    },
    MessageEdited {
        message: Message,
    },
    MessageDeleted {
        message: Message,
    },
    /// A local message disappeared (discarded).
    MessageRemoved {
        room: String,
        local_id: String,
    },
    SendStateChanged {
        room: String,
        local_id: String,
        state: SendState,
    },
    RoomChanged {
        room: Room,
    },
    RoomRemoved {
        room: String,
    },
    MemberChanged {
        member: Member,
    },
    MemberRemoved {
        room: String,
        user: String,
    },
    /// The room was reloaded from scratch: read it again.
    Reset {
        room: String,
    },
}

impl From<roam_core::RoomUpdate> for RoomUpdate {
    fn from(u: roam_core::RoomUpdate) -> Self {
        use roam_core::RoomUpdate as U;
        match u {
            U::MessageAdded(m) => RoomUpdate::MessageAdded { message: m.into() },
            U::MessageEdited(m) => RoomUpdate::MessageEdited { message: m.into() },
            U::MessageDeleted(m) => RoomUpdate::MessageDeleted { message: m.into() },
            U::MessageRemoved { room, local_id } => RoomUpdate::MessageRemoved { room, local_id },
            U::SendStateChanged {
                room,
                local_id,
                state,
            } => RoomUpdate::SendStateChanged {
                room,
                local_id,
                state: state.into(),
            },
            U::RoomChanged(r) => RoomUpdate::RoomChanged { room: r.into() },
            U::RoomRemoved { room } => RoomUpdate::RoomRemoved { room },
            U::MemberChanged(m) => RoomUpdate::MemberChanged { member: m.into() },
            U::MemberRemoved { room, user } => RoomUpdate::MemberRemoved { room, user },
            U::Reset { room } => RoomUpdate::Reset { room },
        }
    }
}

/// A document changed, or an edit was refused because it was stale.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum DocumentUpdate {
    Updated {
        document: Document,
    },
    Conflict {
        document: Document,
        current: DocumentVersion,
    },
}

impl From<roam_core::DocumentUpdate> for DocumentUpdate {
    fn from(u: roam_core::DocumentUpdate) -> Self {
        match u {
            roam_core::DocumentUpdate::Updated(d) => DocumentUpdate::Updated { document: d.into() },
            roam_core::DocumentUpdate::Conflict { local, current } => DocumentUpdate::Conflict {
                document: local.into(),
                current: current.into(),
            },
        }
    }
}

/// The client's counters at one moment (`RoamClient::metrics`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct MetricsSnapshot {
    /// Outbox entries waiting to be delivered (including those on the wire).
    pub outbox_depth: u64,
    /// Outbox entries that failed for good and wait for `retry` or `discard`.
    pub outbox_failed: u64,
    /// Age of the oldest waiting entry (nil/null when the outbox is empty).
    pub outbox_oldest_age_ms: Option<u64>,
    /// Mutations sent again after a transient failure.
    pub retries: u64,
    /// Connection attempts (successful or not).
    pub connect_attempts: u64,
    /// Connections that reached the server's `hello`.
    pub connections: u64,
    /// Connections after the first one.
    pub reconnects: u64,
    /// Missed events applied during recovery.
    pub events_recovered: u64,
    /// Live events applied.
    pub events_live: u64,
    /// Events dropped because they were already applied.
    pub duplicates_ignored: u64,
    /// Rooms reloaded from scratch.
    pub resets: u64,
    /// REST refreshes answered from the cache.
    pub cache_hits: u64,
    /// REST refreshes that waited for a request.
    pub cache_misses: u64,
    /// Requests answered `304 Not Modified`.
    pub cache_revalidations: u64,
    /// `cache_hits / (cache_hits + cache_misses)`, 0 when there were none.
    pub cache_hit_rate: f64,
    /// WebSocket payload bytes sent.
    pub bytes_sent: u64,
    /// WebSocket payload bytes received.
    pub bytes_received: u64,
    /// WebSocket frames sent.
    pub frames_sent: u64,
    /// WebSocket frames received.
    pub frames_received: u64,
    /// Mutations written to the outbox.
    pub mutations_queued: u64,
    /// Mutations confirmed by the server.
    pub mutations_acked: u64,
    /// Mutations refused for good.
    pub mutations_failed: u64,
    /// Messages written to the outbox.
    pub messages_queued: u64,
    /// Messages put on the wire (resends count as retries).
    pub messages_sent: u64,
    /// Messages confirmed by the server.
    pub messages_acked: u64,
    /// Messages refused for good.
    pub messages_failed: u64,
    /// Connections closed because the server sent more than the protocol allows (a message or
    /// frame over the size limit, compressed data that does not inflate).
    pub protocol_violations: u64,
    /// Attachment bytes sent by this process (a resumed upload counts only what it sent after
    /// resuming).
    pub upload_bytes: u64,
    /// Attachment uploads finished.
    pub uploads_completed: u64,
    /// Upload attempts cut off (network, server busy) and resumed from the server's offset.
    pub upload_retries: u64,
    /// Attachment bytes downloaded into the media cache.
    pub download_bytes: u64,
}

impl From<roam_core::MetricsSnapshot> for MetricsSnapshot {
    fn from(m: roam_core::MetricsSnapshot) -> Self {
        MetricsSnapshot {
            outbox_depth: m.outbox_depth,
            outbox_failed: m.outbox_failed,
            outbox_oldest_age_ms: m.outbox_oldest_age_ms,
            retries: m.retries,
            connect_attempts: m.connect_attempts,
            connections: m.connections,
            reconnects: m.reconnects,
            events_recovered: m.events_recovered,
            events_live: m.events_live,
            duplicates_ignored: m.duplicates_ignored,
            resets: m.resets,
            cache_hits: m.cache_hits,
            cache_misses: m.cache_misses,
            cache_revalidations: m.cache_revalidations,
            cache_hit_rate: m.cache_hit_rate,
            bytes_sent: m.bytes_sent,
            bytes_received: m.bytes_received,
            frames_sent: m.frames_sent,
            frames_received: m.frames_received,
            mutations_queued: m.mutations_queued,
            mutations_acked: m.mutations_acked,
            mutations_failed: m.mutations_failed,
            messages_queued: m.messages_queued,
            messages_sent: m.messages_sent,
            messages_acked: m.messages_acked,
            messages_failed: m.messages_failed,
            protocol_violations: m.protocol_violations,
            upload_bytes: m.upload_bytes,
            uploads_completed: m.uploads_completed,
            upload_retries: m.upload_retries,
            download_bytes: m.download_bytes,
        }
    }
}

/// How a client is set up. Timings are in milliseconds; zero keeps the default.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ClientOptions {
    /// The account's database file (created if missing).
    pub db_path: String,
    /// `http(s)://host:port` of the server.
    pub server_url: String,
    /// The account's user id (the token's `sub`).
    pub user_id: String,
    /// First reconnect delay (default 1,000).
    #[uniffi(default = 0)]
    pub reconnect_initial_ms: u64,
    /// Largest reconnect delay (default 5,000).
    #[uniffi(default = 0)]
    pub reconnect_max_ms: u64,
    /// Heartbeat ping interval (default 25,000).
    #[uniffi(default = 0)]
    pub heartbeat_ms: u64,
    /// Largest size of the database in bytes (default 0: no cap but the disk). A store that
    /// reaches it behaves like a full disk (`ConnectionState.StorageFull`).
    #[uniffi(default = 0)]
    pub max_store_bytes: u64,
    /// The media directory, where sent and downloaded files live (default nil/null:
    /// `<db_path>-media`).
    #[uniffi(default = None)]
    pub media_dir: Option<String>,
    /// Size cap of the media cache in bytes (default 0: 256 MiB).
    #[uniffi(default = 0)]
    pub media_cache_bytes: u64,
    /// The 32-byte key of the encrypted store (default nil/null: a plain store). Create it once
    /// from a secure random source and keep it in the Keychain / Android Keystore; a plain store
    /// is encrypted at the first open with a key. A wrong key fails with `InvalidKey`.
    #[uniffi(default = None)]
    pub store_key: Option<Vec<u8>>,
    /// Keep the first 32 bytes of an encrypted store plain, as iOS needs for a database in a
    /// shared app-group container (default nil/null: on for Apple platforms, off elsewhere).
    #[uniffi(default = None)]
    pub store_plaintext_header: Option<bool>,
}

impl ClientOptions {
    pub(crate) fn to_core(&self) -> Result<roam_core::ClientConfig, crate::error::RoamError> {
        let mut c = roam_core::ClientConfig::new(&self.db_path, &self.server_url, &self.user_id);
        if let Some(key) = &self.store_key {
            c.store_key = Some(roam_core::StoreKey::from_slice(key)?);
        }
        if let Some(plain) = self.store_plaintext_header {
            c.store_plaintext_header = plain;
        }
        if self.reconnect_initial_ms > 0 {
            c.reconnect.initial_delay = Duration::from_millis(self.reconnect_initial_ms);
        }
        if self.reconnect_max_ms > 0 {
            c.reconnect.max_delay = Duration::from_millis(self.reconnect_max_ms);
        }
        if self.heartbeat_ms > 0 {
            c.heartbeat.interval = Duration::from_millis(self.heartbeat_ms);
        }
        if self.max_store_bytes > 0 {
            c.max_store_bytes = Some(self.max_store_bytes);
        }
        if let Some(dir) = &self.media_dir {
            c.media.dir = Some(dir.into());
        }
        if self.media_cache_bytes > 0 {
            c.media.max_bytes = self.media_cache_bytes;
            c.media.max_file_bytes = c.media.max_file_bytes.min(self.media_cache_bytes);
        }
        if c.reconnect.max_delay < c.reconnect.initial_delay {
            c.reconnect.max_delay = c.reconnect.initial_delay;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_state_and_connection_convert() {
        let f = roam_core::SendState::Failed {
            code: "forbidden".into(),
            message: "banned".into(),
        };
        assert_eq!(
            SendState::from(f),
            SendState::Failed {
                code: "forbidden".into(),
                message: "banned".into()
            }
        );
        assert_eq!(
            ConnectionState::from(roam_core::ConnectionState::Waiting {
                retry_in: Duration::from_millis(1500)
            }),
            ConnectionState::Waiting { retry_in_ms: 1500 }
        );
        assert_eq!(
            ConnectionState::from(roam_core::ConnectionState::StorageFull {
                retry_in: Duration::from_secs(60)
            }),
            ConnectionState::StorageFull {
                retry_in_ms: 60_000
            }
        );
    }

    fn core_message(state: roam_core::SendState) -> roam_core::Message {
        roam_core::Message {
            local_id: "l1".into(),
            id: Some("m1".into()),
            room: "team".into(),
            seq: Some(7),
            sender: "alice".into(),
            body: "hi".into(),
            reply_to: None,
            created_at: 1,
            edited_at: None,
            deleted: false,
            send_state: state,
            outbox_entry_id: None,
            attachment: None,
        }
    }

    #[test]
    fn attachments_and_their_uploads_convert() {
        let a = roam_core::Attachment {
            sha256: "ab".repeat(32),
            name: "a.png".into(),
            mime: "image/png".into(),
            size: 10,
            width: Some(2),
            height: Some(1),
            duration_ms: None,
            thumbnail: Some(vec![1]),
            local_path: Some("/m/ab".into()),
            upload: Some(roam_core::UploadProgress {
                local_id: "l1".into(),
                room: "team".into(),
                sent_bytes: 4,
                total_bytes: 10,
                state: roam_core::UploadState::Failed {
                    code: "payload_too_large".into(),
                    message: "big".into(),
                },
            }),
        };
        let mut m = core_message(roam_core::SendState::Pending);
        m.attachment = Some(a);
        let a = Message::from(m).attachment.expect("attachment");
        assert_eq!(
            (a.size, a.width, a.local_path.as_deref()),
            (10, Some(2), Some("/m/ab"))
        );
        let u = a.upload.expect("upload");
        assert_eq!(u.sent_bytes, 4);
        assert!(
            matches!(u.state, UploadState::Failed { ref code, .. } if code == "payload_too_large")
        );
        let details = roam_core::AttachmentDetails::from(AttachmentDetails {
            name: Some("x".into()),
            ..Default::default()
        });
        assert_eq!(details.name.as_deref(), Some("x"));
    }

    #[test]
    fn room_updates_convert_field_by_field() {
        let u = RoomUpdate::from(roam_core::RoomUpdate::MessageAdded(core_message(
            roam_core::SendState::Sent,
        )));
        let RoomUpdate::MessageAdded { message } = u else {
            panic!("{u:?}")
        };
        assert_eq!(
            (
                message.local_id.as_str(),
                message.id.as_deref(),
                message.seq
            ),
            ("l1", Some("m1"), Some(7))
        );
        assert_eq!(message.send_state, SendState::Sent);
        assert_eq!(
            RoomUpdate::from(roam_core::RoomUpdate::SendStateChanged {
                room: "team".into(),
                local_id: "l1".into(),
                state: roam_core::SendState::Pending,
            }),
            RoomUpdate::SendStateChanged {
                room: "team".into(),
                local_id: "l1".into(),
                state: SendState::Pending
            }
        );
        let member = Member::from(roam_core::Member {
            room: "team".into(),
            user: "bob".into(),
            role: roam_core::Role::Admin,
            status: roam_core::MemberStatus::Banned,
            joined_at: 5,
        });
        assert_eq!(
            (member.role, member.status),
            (Role::Admin, MemberStatus::Banned)
        );
    }

    #[test]
    fn a_conflict_carries_the_servers_version() {
        let local = roam_core::Document {
            room: "team".into(),
            doc: "plan".into(),
            version: 1,
            content: "mine".into(),
            updated_by: "alice".into(),
            updated_at: 1,
            send_state: roam_core::SendState::Failed {
                code: "version_conflict".into(),
                message: "stale".into(),
            },
            conflict: None,
        };
        let current = roam_core::DocumentVersion {
            room: "team".into(),
            doc: "plan".into(),
            version: 4,
            content: "theirs".into(),
            updated_by: "bob".into(),
            updated_at: 2,
        };
        let u = DocumentUpdate::from(roam_core::DocumentUpdate::Conflict { local, current });
        let DocumentUpdate::Conflict { document, current } = u else {
            panic!("{u:?}")
        };
        assert_eq!(document.content, "mine");
        assert_eq!((current.version, current.content.as_str()), (4, "theirs"));
    }

    #[test]
    fn metrics_keep_every_counter() {
        let m = roam_core::MetricsSnapshot {
            outbox_depth: 3,
            outbox_failed: 0,
            outbox_oldest_age_ms: Some(40),
            retries: 0,
            connect_attempts: 0,
            connections: 0,
            reconnects: 0,
            events_recovered: 0,
            events_live: 0,
            duplicates_ignored: 0,
            resets: 0,
            cache_hits: 0,
            cache_misses: 0,
            cache_revalidations: 0,
            cache_hit_rate: 0.5,
            bytes_sent: 0,
            bytes_received: 0,
            frames_sent: 0,
            frames_received: 0,
            mutations_queued: 0,
            mutations_acked: 0,
            mutations_failed: 0,
            messages_queued: 0,
            messages_sent: 0,
            messages_acked: 9,
            messages_failed: 0,
            protocol_violations: 0,
            upload_bytes: 0,
            uploads_completed: 0,
            upload_retries: 0,
            download_bytes: 0,
        };
        let s = MetricsSnapshot::from(m);
        assert_eq!(
            (s.outbox_depth, s.outbox_oldest_age_ms, s.messages_acked),
            (3, Some(40), 9)
        );
        assert!((s.cache_hit_rate - 0.5).abs() < f64::EPSILON);
    }

    #[test]
    fn options_keep_defaults_for_zero() {
        let o = ClientOptions {
            db_path: "/tmp/x.db".into(),
            server_url: "http://127.0.0.1:1".into(),
            user_id: "alice".into(),
            reconnect_initial_ms: 0,
            reconnect_max_ms: 0,
            heartbeat_ms: 0,
            max_store_bytes: 0,
            media_dir: None,
            media_cache_bytes: 0,
            store_key: None,
            store_plaintext_header: None,
        };
        let c = o.to_core().expect("valid");
        assert_eq!(c.reconnect.initial_delay, Duration::from_secs(1));
        assert_eq!(c.heartbeat.interval, Duration::from_secs(25));
        assert_eq!(c.max_store_bytes, None);
        let capped = ClientOptions {
            max_store_bytes: 1 << 20,
            ..o
        };
        assert_eq!(
            capped.to_core().expect("valid").max_store_bytes,
            Some(1 << 20)
        );
        assert_eq!(c.store_key, None);
        let keyed = ClientOptions {
            store_key: Some(vec![7; 32]),
            store_plaintext_header: Some(true),
            ..capped.clone()
        };
        let k = keyed.to_core().expect("valid");
        assert_eq!(k.store_key.as_ref().map(|k| k.as_bytes()[0]), Some(7));
        assert!(k.store_plaintext_header);
        let short = ClientOptions {
            store_key: Some(vec![7; 16]),
            ..capped
        };
        assert!(matches!(
            short.to_core(),
            Err(crate::error::RoamError::InvalidInput { .. })
        ));
    }
}
