//! What the hub hands every socket: frames serialised once, whatever number of sockets they go
//! to.
//!
//! A committed room event becomes one [`LiveEvent`] (its `event` frame, framed for the wire once,
//! and compressed at most once, on first demand), shared by every socket that follows its room:
//! queuing it costs a reference count. Any other server frame is serialised once with [`encode`].

use std::sync::{Arc, OnceLock};

use roam_proto::{Envelope, RoomEvent, ServerFrame};

use crate::wsframe::WireFrame;

/// An event that changes who may read a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The user left or was banned: their sockets stop following the room.
    Removed { user: String, reason: &'static str },
    /// The room was deleted: everyone stops.
    RoomDeleted,
    /// The room's settings changed (it may have turned protected or private): each socket
    /// checks that its user may still read it, and stops following it otherwise.
    Recheck,
}

/// A committed room event ready to send, shared by every socket that follows its room.
#[derive(Debug)]
pub struct LiveEvent {
    pub room: Arc<str>,
    pub seq: u64,
    /// The `event` frame, framed for the wire once (JSON text).
    pub frame: WireFrame,
    pub effect: Option<Effect>,
    /// Releasing it redacts earlier events in the store (a deleted message): copies of them
    /// kept in memory are stale.
    pub redacts: bool,
    /// The frame compressed for sockets that asked for compression (a binary frame), made on
    /// first demand.
    pub deflated: OnceLock<WireFrame>,
}

impl LiveEvent {
    /// Encodes `ev` once.
    pub fn new(room: Arc<str>, ev: &RoomEvent) -> LiveEvent {
        LiveEvent {
            room,
            seq: ev.seq,
            frame: encode_event(ev),
            effect: effect_of(ev),
            redacts: matches!(ev.body, roam_proto::EventBody::MessageDeleted(_)),
            deflated: OnceLock::new(),
        }
    }
}

/// How an event changes who may read its room.
fn effect_of(ev: &RoomEvent) -> Option<Effect> {
    match &ev.body {
        roam_proto::EventBody::MemberLeft { user } => Some(Effect::Removed {
            user: user.clone(),
            reason: "left",
        }),
        roam_proto::EventBody::MemberBanned { user } => Some(Effect::Removed {
            user: user.clone(),
            reason: "banned",
        }),
        roam_proto::EventBody::RoomDeleted { .. } => Some(Effect::RoomDeleted),
        roam_proto::EventBody::RoomUpdated(_) => Some(Effect::Recheck),
        _ => None,
    }
}

/// Serialises a server frame once, for any number of sockets.
pub fn encode(frame: &ServerFrame) -> WireFrame {
    WireFrame::json(&Envelope::new(frame)).unwrap_or_else(|e| {
        tracing::error!(error = %e, "failed to encode a frame");
        WireFrame::text("{}")
    })
}

/// The `event` frame of a room event.
fn encode_event(ev: &RoomEvent) -> WireFrame {
    #[derive(serde::Serialize)]
    struct EventFrame<'a> {
        v: u32,
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        event: &'a RoomEvent,
    }
    let frame = EventFrame {
        v: roam_proto::PROTOCOL_VERSION,
        kind: "event",
        event: ev,
    };
    WireFrame::json(&frame).unwrap_or_else(|e| {
        tracing::error!(error = %e, "failed to encode an event");
        WireFrame::text("{}")
    })
}
