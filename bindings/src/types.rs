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
    pub send_state: SendState,
}

impl From<roam_core::LocalMessage> for Message {
    fn from(m: roam_core::LocalMessage) -> Self {
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
    pub head_seq: u64,
    pub member_count: u64,
    /// True when this account is a member.
    pub joined: bool,
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
            head_seq: r.head_seq,
            member_count: r.member_count,
            joined: r.joined,
            send_state: r.send_state.into(),
        }
    }
}

/// A user's membership of a room.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Member {
    pub room: String,
    pub user: String,
    pub role: Role,
    pub banned: bool,
}

impl From<roam_core::Member> for Member {
    fn from(m: roam_core::Member) -> Self {
        Member {
            room: m.room,
            user: m.user,
            role: m.role.into(),
            banned: m.status == roam_core::MemberStatus::Banned,
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

/// A document version held by the server.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DocumentVersion {
    pub version: u64,
    pub content: String,
    pub updated_by: String,
}

/// A versioned document as held locally.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Document {
    pub room: String,
    pub doc: String,
    pub version: u64,
    pub content: String,
    pub updated_by: String,
    pub send_state: SendState,
    /// After a refused edit: the server's current version, to rebase on.
    pub conflict: Option<DocumentVersion>,
}

impl From<roam_core::LocalDocument> for Document {
    fn from(d: roam_core::LocalDocument) -> Self {
        Document {
            room: d.room,
            doc: d.doc,
            version: d.version,
            content: d.content,
            updated_by: d.updated_by,
            send_state: d.send_state.into(),
            conflict: d.conflict.map(|c| DocumentVersion {
                version: c.version,
                content: c.content,
                updated_by: c.updated_by,
            }),
        }
    }
}

/// A notification.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Notification {
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

impl From<roam_core::NotificationInfo> for Notification {
    fn from(n: roam_core::NotificationInfo) -> Self {
        Notification {
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
    pub op: String,
    pub state: SendState,
    pub attempts: u32,
    pub created_at: i64,
}

impl From<roam_core::OutboxEntry> for OutboxEntry {
    fn from(e: roam_core::OutboxEntry) -> Self {
        OutboxEntry {
            id: e.id,
            room: e.room,
            op: e.op,
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
                current: DocumentVersion {
                    version: current.version,
                    content: current.content,
                    updated_by: current.updated_by,
                },
            },
        }
    }
}

/// Counters of the client.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Metrics {
    pub outbox_depth: u64,
    pub outbox_failed: u64,
    pub outbox_oldest_age_ms: Option<u64>,
    pub retries: u64,
    pub reconnects: u64,
    pub events_recovered: u64,
    pub cache_hit_rate: f64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_acked: u64,
    pub messages_failed: u64,
}

impl From<roam_core::MetricsSnapshot> for Metrics {
    fn from(m: roam_core::MetricsSnapshot) -> Self {
        Metrics {
            outbox_depth: m.outbox_depth,
            outbox_failed: m.outbox_failed,
            outbox_oldest_age_ms: m.outbox_oldest_age_ms,
            retries: m.retries,
            reconnects: m.reconnects,
            events_recovered: m.events_recovered,
            cache_hit_rate: m.cache_hit_rate,
            bytes_sent: m.bytes_sent,
            bytes_received: m.bytes_received,
            messages_sent: m.messages_sent,
            messages_acked: m.messages_acked,
            messages_failed: m.messages_failed,
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
}

impl ClientOptions {
    pub(crate) fn to_core(&self) -> roam_core::ClientConfig {
        let mut c = roam_core::ClientConfig::new(&self.db_path, &self.server_url, &self.user_id);
        if self.reconnect_initial_ms > 0 {
            c.reconnect.initial_delay = Duration::from_millis(self.reconnect_initial_ms);
        }
        if self.reconnect_max_ms > 0 {
            c.reconnect.max_delay = Duration::from_millis(self.reconnect_max_ms);
        }
        if self.heartbeat_ms > 0 {
            c.heartbeat.interval = Duration::from_millis(self.heartbeat_ms);
        }
        if c.reconnect.max_delay < c.reconnect.initial_delay {
            c.reconnect.max_delay = c.reconnect.initial_delay;
        }
        c
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
        };
        let c = o.to_core();
        assert_eq!(c.reconnect.initial_delay, Duration::from_secs(1));
        assert_eq!(c.heartbeat.interval, Duration::from_secs(25));
    }
}
