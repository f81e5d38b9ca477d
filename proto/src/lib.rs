//! Roam protocol v1: the types that travel between the client core and the server.
//!
//! `docs/protocol.md` is the human-readable contract; this crate is the same contract in code,
//! used by both sides so that they cannot drift apart. It has no I/O.
//!
//! ```
//! use roam_proto::{ClientFrame, Envelope, Mutation};
//!
//! let frame = Envelope::new(ClientFrame::Mutate {
//!     id: "r1".into(),
//!     key: "0190d1c4-7a00-7000-8000-000000000001".into(),
//!     after: None,
//!     mutation: Mutation::SendMessage { room: "general".into(), body: "hi".into(), reply_to: None, id: None, attachment: None },
//! });
//! let json = serde_json::to_string(&frame).unwrap();
//! assert!(json.contains(r#""op":"message.send""#));
//! ```

pub mod collab;
pub mod error;
pub mod event;
pub mod frame;
pub mod mention;
pub mod model;
pub mod mutation;
pub mod push;
pub mod validate;

pub use collab::{AwarenessUpdate, CollabSync, CollabUpdate, CollabUpdated};
pub use error::{ErrorBody, ErrorCode, ErrorResponse};
pub use event::{EventBody, RoomEvent};
pub use frame::{
    close, ClientFrame, Envelope, PresenceUpdate, RoomCursor, RoomSubscription, ServerFrame,
    SubscribeResult, SubscriptionStatus, PROTOCOL_VERSION,
};
pub use mention::{mentions, mentions_user};
pub use model::{
    ActivityBucket, Attachment, Document, Invitation, InvitationStatus, Member, MemberStatus,
    MembershipChange, MembershipChangeKind, Message, Notification, Page, Presence, PresenceStatus,
    ReadMarker, Role, Room, RoomKind, User,
};
pub use mutation::Mutation;
pub use push::{
    PushDevice, PushKind, PushMode, PushPayload, PushPlatform, PushPreview, PushSettings,
    PUSH_PAYLOAD_VERSION,
};
