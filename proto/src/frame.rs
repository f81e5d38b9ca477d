//! WebSocket frames of protocol v1.
//!
//! Every frame is one JSON text message carrying `"v": 1` and a `type`. Client frames that expect
//! an answer carry an `id` (1 to 128 bytes, chosen by the client); the server answers each with
//! an `ack` or an `error` holding the same `id`. Mutations also carry an idempotency `key`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::collab::{AwarenessUpdate, CollabUpdate};
use crate::error::ErrorBody;
use crate::event::RoomEvent;
use crate::model::{MembershipChange, Notification, Presence, PresenceStatus, ReadMarker};
use crate::mutation::Mutation;

/// The protocol version carried by every frame.
pub const PROTOCOL_VERSION: u32 = 1;

/// WebSocket close codes the server uses.
pub mod close {
    /// Normal closure (the client asked, or the server replaced a connection).
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down; reconnect with backoff.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame was not JSON text, or binary.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A frame was larger than 1 MiB.
    pub const TOO_BIG: u16 = 1009;
    /// The token expired while connected: get a new one, then reconnect.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The connection could not keep up with its events and was dropped; reconnect and recover.
    pub const SLOW_CONSUMER: u16 = 4008;
}

/// One room to follow, and the last sequence number the client holds for it (0 for none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomCursor {
    pub room: String,
    /// At most [`crate::validate::MAX_SEQ`]; a larger one does not parse.
    #[serde(default, deserialize_with = "seq")]
    pub since: u64,
}

/// A sequence cursor, refused past [`crate::validate::MAX_SEQ`] so no arithmetic on it can
/// overflow.
fn seq<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = u64::deserialize(d)?;
    crate::validate::cursor("since", n).map_err(serde::de::Error::custom)?;
    Ok(n)
}

fn opt_seq<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let n = Option::<u64>::deserialize(d)?;
    if let Some(n) = n {
        crate::validate::cursor("inbox_since", n).map_err(serde::de::Error::custom)?;
    }
    Ok(n)
}

/// Frames a client sends.
// A frame is parsed, acted on and dropped (never kept in bulk), so a `mutate` carrying a
// `message.send` with its attachment inline costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Follow rooms from a cursor, and optionally the caller's notifications after `inbox_since`.
    /// Answered by an `ack` whose result is [`SubscribeResult`], then by the missed events of
    /// each room in order, a `caught_up` per room, and live events after that.
    Subscribe {
        id: String,
        rooms: Vec<RoomCursor>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "opt_seq"
        )]
        inbox_since: Option<u64>,
    },
    /// Stop following rooms. Answered by an `ack` with `{}`.
    Unsubscribe { id: String, rooms: Vec<String> },
    /// Apply a mutation. Answered by an `ack` whose result depends on `op`, or an `error`.
    Mutate {
        id: String,
        key: String,
        /// The key of the mutation this one must follow: the server applies this one only if
        /// that one is applied (its key recorded), else answers `out_of_order` and changes
        /// nothing. A client pipelining a queue names each frame's predecessor still awaiting
        /// its answer, so a refused or lost frame can never be overtaken by a later one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        #[serde(flatten)]
        mutation: Mutation,
    },
    /// The user is typing in a room (or stopped). Not answered; rate limited; expires on the
    /// server after the typing timeout.
    Typing { room: String, typing: bool },
    /// Application-level ping; answered by a `pong` with the same id.
    Ping { id: String },
    /// Follow a collaborative document (§12): answered by an `ack` whose result is a
    /// [`crate::collab::CollabSync`] (what the client lacks, from its `state_vector`, base64 of
    /// a Yjs state vector, empty for none), then `collab_update` frames after its `seq`.
    CollabSync {
        id: String,
        room: String,
        doc: String,
        #[serde(default)]
        state_vector: String,
    },
    /// Stop following a collaborative document. Answered by an `ack` with `{}`.
    CollabLeave {
        id: String,
        room: String,
        doc: String,
    },
    /// The sender's cursor and selection in a followed document (`state` absent or null: gone).
    /// Not answered (errors only); rate limited; relayed to the document's other followers.
    Awareness {
        room: String,
        doc: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<Value>,
    },
}

/// The result of a `subscribe`, per room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeResult {
    pub rooms: Vec<RoomSubscription>,
}

/// How one room's subscription went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSubscription {
    pub room: String,
    pub status: SubscriptionStatus,
    /// The room's newest sequence number when the subscription was taken.
    pub head_seq: u64,
}

/// Outcome of subscribing to one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// Missed events follow, then `caught_up`, then live events.
    Ok,
    /// The cursor cannot be served (ahead of the room, or too far behind): drop what is held for
    /// the room, reload it over REST, and continue from `head_seq`. Live events follow.
    Reset,
    /// Not allowed to read the room.
    Forbidden,
    /// No such room.
    NotFound,
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame of every connection.
    Hello {
        /// This connection's id (for logs and support).
        session: String,
        user: String,
        server_time: i64,
        /// The client should ping at least this often.
        heartbeat_ms: u64,
        max_frame_bytes: u64,
        /// `"deflate"` when the client asked for compression (`compress=deflate` on the
        /// handshake): large frames then arrive as binary messages (see docs/protocol.md).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compression: Option<String>,
    },
    /// Success of the client frame with this id.
    Ack { id: String, result: Value },
    /// Failure of the client frame with this id (or of an unparseable frame: no id).
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(flatten)]
        error: ErrorBody,
    },
    /// A sequenced room event (recovered or live).
    Event(RoomEvent),
    /// Everything missed in `room` up to `seq` has been sent; live events follow.
    CaughtUp { room: String, seq: u64 },
    /// The room's stream was cut (room deleted, membership lost, ban): the client stops
    /// receiving it.
    Unsubscribed { room: String, reason: String },
    /// Someone is typing (or stopped) in a subscribed room.
    Typing {
        room: String,
        user: String,
        typing: bool,
    },
    /// Who is around in `room`, sent once after a `subscribe` acknowledges the room: every member
    /// connected to the server (online or away). Members not listed are offline.
    PresenceState {
        room: String,
        presences: Vec<Presence>,
    },
    /// Presence changes of `room`'s members since the room's previous presence frame, coalesced:
    /// at most one per room per socket per interval (about 250 ms), each user at most once, with
    /// their latest status.
    PresenceDiff {
        room: String,
        presences: Vec<Presence>,
    },
    /// A new notification for the client's user.
    Notification(Notification),
    /// The user's unread notification count changed.
    Unread { count: u64 },
    /// The user's read marker of a room moved (`room.mark_read` from any of their devices).
    ReadMarker(ReadMarker),
    /// The user's own membership of a room changed, on this device or another.
    Membership(MembershipChange),
    /// Answer to `ping`.
    Pong { id: String },
    /// An update applied to a followed collaborative document (§12).
    CollabUpdate(CollabUpdate),
    /// Someone's cursor and selection in a followed collaborative document, or their leaving it.
    Awareness(AwarenessUpdate),
}

/// A frame with its version, as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub v: u32,
    #[serde(flatten)]
    pub frame: T,
}

impl<T> Envelope<T> {
    /// Wraps a frame with the current protocol version.
    pub fn new(frame: T) -> Self {
        Envelope {
            v: PROTOCOL_VERSION,
            frame,
        }
    }
}

/// A presence change asked for by a client over REST (`PUT /v1/presence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceUpdate {
    pub status: PresenceStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutate_frame_is_flat() {
        let raw = r#"{"v":1,"type":"mutate","id":"r1","key":"k1","op":"message.send","args":{"room":"general","body":"hi"}}"#;
        let env: Envelope<ClientFrame> = serde_json::from_str(raw).expect("parse");
        assert_eq!(env.v, 1);
        match &env.frame {
            ClientFrame::Mutate {
                id, key, mutation, ..
            } => {
                assert_eq!(id, "r1");
                assert_eq!(key, "k1");
                assert_eq!(mutation.op(), "message.send");
            }
            other => panic!("unexpected frame {other:?}"),
        }
        let again: Envelope<ClientFrame> =
            serde_json::from_str(&serde_json::to_string(&env).expect("ser")).expect("parse");
        assert_eq!(again, env);
    }

    #[test]
    fn error_frame_is_flat() {
        let f = Envelope::new(ServerFrame::Error {
            id: Some("a".into()),
            error: ErrorBody::new(crate::ErrorCode::NotFound, "no such room"),
        });
        let v = serde_json::to_value(&f).expect("ser");
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "not_found");
        assert_eq!(v["v"], 1);
    }
}
