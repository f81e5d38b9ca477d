//! Sequenced room events: the log that live delivery and recovery both read.
//!
//! Every change to a room appends one event with the room's next sequence number, in the same
//! transaction as the change. The sequence is gap-free and increasing, so a client that has seen
//! everything up to `seq` N asks for "after N" and receives exactly what it missed.

use serde::{Deserialize, Serialize};

use crate::model::{Document, Member, Message, Room};

/// A room event as delivered in an `event` frame and returned by `GET /v1/rooms/{room}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomEvent {
    pub room: String,
    pub seq: u64,
    /// When the server committed it.
    pub at: i64,
    /// Who caused it.
    pub actor: String,
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened, tagged by `kind` with its `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum EventBody {
    /// The room was created (always seq 1).
    RoomCreated(Room),
    /// Title, metadata or kind changed.
    RoomUpdated(Room),
    /// The room is gone; its stream ends here.
    RoomDeleted {
        name: String,
    },
    /// A user became a member (joined, or accepted an invitation).
    MemberJoined(Member),
    /// A member left.
    MemberLeft {
        user: String,
    },
    /// A member's role changed (including an ownership transfer: two events).
    MemberUpdated(Member),
    /// A member was banned (and removed from the room's readers).
    MemberBanned {
        user: String,
    },
    /// A ban was lifted; the user may join again.
    MemberUnbanned {
        user: String,
    },
    MessageCreated(Message),
    /// The message with its new body and `edited_at`.
    MessageEdited(Message),
    /// The message, now with `deleted: true` and an empty body.
    MessageDeleted(Message),
    /// A document's new version.
    DocumentUpdated(Document),
}

impl EventBody {
    /// The wire name of the kind.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::RoomCreated(_) => "room_created",
            EventBody::RoomUpdated(_) => "room_updated",
            EventBody::RoomDeleted { .. } => "room_deleted",
            EventBody::MemberJoined(_) => "member_joined",
            EventBody::MemberLeft { .. } => "member_left",
            EventBody::MemberUpdated(_) => "member_updated",
            EventBody::MemberBanned { .. } => "member_banned",
            EventBody::MemberUnbanned { .. } => "member_unbanned",
            EventBody::MessageCreated(_) => "message_created",
            EventBody::MessageEdited(_) => "message_edited",
            EventBody::MessageDeleted(_) => "message_deleted",
            EventBody::DocumentUpdated(_) => "document_updated",
        }
    }
}
