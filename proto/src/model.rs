//! The resources of protocol v1, as they travel in JSON.
//!
//! Every timestamp is a count of milliseconds since the Unix epoch (`*_at` fields), every
//! identifier is a string, and every sequence number is an unsigned 64-bit integer that starts
//! at 1 in each room. Field names are `snake_case` on the wire.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who may see and join a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    /// Listed for everyone; anyone may read and join.
    Public,
    /// Listed for everyone, but only members read it and joining needs an invitation.
    Protected,
    /// Seen only by its members; joining needs an invitation.
    Private,
}

impl RoomKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Public => "public",
            RoomKind::Protected => "protected",
            RoomKind::Private => "private",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "public" => Some(RoomKind::Public),
            "protected" => Some(RoomKind::Protected),
            "private" => Some(RoomKind::Private),
            _ => None,
        }
    }
}

/// A member's role in a room, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Exactly one per room: may do everything, must transfer ownership before leaving.
    Owner,
    /// Manages the room: members, roles below admin, bans, invitations, room settings.
    Admin,
    /// Reads and writes messages and documents, invites to public and protected rooms.
    Member,
    /// Reads and sends messages; cannot edit documents or invite.
    Guest,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Guest => "guest",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            "guest" => Some(Role::Guest),
            _ => None,
        }
    }

    /// Rank, higher is stronger (owner 3 … guest 0).
    pub fn rank(self) -> u8 {
        match self {
            Role::Owner => 3,
            Role::Admin => 2,
            Role::Member => 1,
            Role::Guest => 0,
        }
    }

    /// True when this role may change the role of, or ban, a member holding `other`.
    pub fn outranks(self, other: Role) -> bool {
        self.rank() > other.rank()
    }

    /// The one rule for handing out a role, whatever hands it out (`member.set_role`, an
    /// invitation when it is created and again when it is accepted, `room.transfer`): a holder
    /// of `self` may grant a role strictly below its own; the owner role only passes from the
    /// owner, by transfer.
    pub fn can_grant(self, role: Role) -> bool {
        match role {
            Role::Owner => self == Role::Owner,
            other => self.outranks(other),
        }
    }
}

/// A room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Room {
    /// The room's name: its identifier, see [`crate::validate::room_name`].
    pub name: String,
    pub kind: RoomKind,
    /// A free display title (may be empty).
    pub title: String,
    /// Application data, any JSON object (at most 16 KiB serialised).
    pub metadata: Value,
    /// The current owner.
    pub owner: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// The sequence number of the room's newest event (0 for none).
    pub head_seq: u64,
    /// Active (not banned) members.
    pub member_count: u64,
}

/// A member's standing in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    Active,
    Banned,
}

impl MemberStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Active => "active",
            MemberStatus::Banned => "banned",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(MemberStatus::Active),
            "banned" => Some(MemberStatus::Banned),
            _ => None,
        }
    }
}

/// A user's membership of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub room: String,
    pub user: String,
    pub role: Role,
    pub status: MemberStatus,
    pub joined_at: i64,
}

/// Where an invitation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Rejected,
    Expired,
    /// Withdrawn by its inviter or a room admin before it was answered.
    Revoked,
}

impl InvitationStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            InvitationStatus::Pending => "pending",
            InvitationStatus::Accepted => "accepted",
            InvitationStatus::Rejected => "rejected",
            InvitationStatus::Expired => "expired",
            InvitationStatus::Revoked => "revoked",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(InvitationStatus::Pending),
            "accepted" => Some(InvitationStatus::Accepted),
            "rejected" => Some(InvitationStatus::Rejected),
            "expired" => Some(InvitationStatus::Expired),
            "revoked" => Some(InvitationStatus::Revoked),
            _ => None,
        }
    }
}

/// An invitation of one user into one room, with the role they will get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub id: String,
    pub room: String,
    pub invited_by: String,
    pub invitee: String,
    pub role: Role,
    /// `pending` turns into `expired` when read after `expires_at`.
    pub status: InvitationStatus,
    pub expires_at: i64,
    pub created_at: i64,
}

/// A chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Server-made UUIDv7.
    pub id: String,
    pub room: String,
    /// The sequence number of the event that created it: its place in the room.
    pub seq: u64,
    pub sender: String,
    /// The text, at most 64 KiB; empty once deleted.
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<i64>,
    #[serde(default)]
    pub deleted: bool,
    /// The file the message carries, if any (then `body` is its caption and may be empty).
    /// Absent once deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
}

/// A file carried by a message: a blob uploaded beforehand (`docs/protocol.md` §10), named by
/// its SHA-256, with what a client needs to show it before downloading it.
/// [`crate::validate::attachment`] is the rule for every field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The blob: the lowercase hex SHA-256 of the file's bytes.
    pub blob: String,
    /// The file name shown and offered when saving: 1 to 255 bytes, no `/`, `\\` or control
    /// characters.
    pub name: String,
    /// The MIME type, `type/subtype` without parameters (`image/jpeg`).
    pub mime: String,
    /// The blob's size in bytes; the server checks it against the stored blob.
    pub size: u64,
    /// Pixel width of an image or video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Pixel height of an image or video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Length of an audio or video file, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// A small preview, inline: a JPEG, PNG or WebP image of at most 8 KiB, in standard base64
    /// with padding. Inline so that a timeline draws it as soon as the message arrives, offline
    /// too, with no second download and no second access check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<String>,
}

/// A versioned document of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub room: String,
    /// The document's name inside the room (same rules as a room name).
    pub doc: String,
    /// Starts at 1 and grows by one with each accepted edit.
    pub version: u64,
    pub content: String,
    pub updated_by: String,
    pub updated_at: i64,
}

/// How far one user has read one room: every message with `seq` up to `seq` is read. Kept per
/// member by the server (`room.mark_read`), shared by all of the user's devices, and only ever
/// moves forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadMarker {
    pub room: String,
    /// The seq of the last event read (0: nothing read yet).
    pub seq: u64,
    /// When the marker last moved.
    pub updated_at: i64,
}

/// How the user's own membership of a room changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipChangeKind {
    /// Joined (by `room.join` or an accepted invitation), or created the room.
    Joined,
    /// Still a member, with another role (`member.set_role`, `room.transfer`).
    Updated,
    /// No longer a member (`room.leave`).
    Left,
    /// Banned: no longer a member, and cannot read a room that needs membership.
    Banned,
    /// The ban was lifted (the user is not a member until they join again).
    Unbanned,
}

/// A change of the user's own membership, sent to every socket of the user on every node, so
/// that a room joined or left on one device shows on the others at once. `seq` is the room
/// event that made the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembershipChange {
    pub room: String,
    pub change: MembershipChangeKind,
    pub seq: u64,
    /// The membership as it now is (`joined`, `updated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<Member>,
    /// The room as it now is (`joined`), so a device can list it without asking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Room>,
}

/// A notification kept for one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Per-user, gap-free, increasing: the cursor for "notifications since".
    pub seq: u64,
    pub id: String,
    /// The user it is for.
    pub user: String,
    /// `invited`, `mentioned`, `role_changed`, `ownership_transferred`, `banned`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Kind-specific details (the invitation, the message id, the new role …).
    pub data: Value,
    pub created_at: i64,
    pub read: bool,
}

/// A user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Away,
    Offline,
}

impl PresenceStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceStatus::Online => "online",
            PresenceStatus::Away => "away",
            PresenceStatus::Offline => "offline",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "online" => Some(PresenceStatus::Online),
            "away" => Some(PresenceStatus::Away),
            "offline" => Some(PresenceStatus::Offline),
            _ => None,
        }
    }
}

/// A user's presence, aggregated over all of their connected devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub user: String,
    /// `online` while any device is connected and not away; `away` when every connected device
    /// said so; `offline` when none is connected.
    pub status: PresenceStatus,
    /// When the user was last connected (now, while online); `None` if never seen or forgotten
    /// by retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<i64>,
    /// Connected devices (sockets) right now.
    pub devices: u32,
}

/// A user of the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<i64>,
}

/// One row of room analytics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityBucket {
    /// The period's start, `YYYY-MM-DD` (day, week starting Monday), `YYYY-MM` or `YYYY`.
    pub period: String,
    pub messages: u64,
    pub senders: u64,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
