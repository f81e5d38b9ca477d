//! Roam client core: the offline-first heart of the Roam mobile apps, written once in Rust and
//! wrapped for Swift and Kotlin by the `roam-ffi` crate.
//!
//! A [`Client`] is opened on one account's SQLite database and works fully without a server:
//! every read is answered from the store, every write lands in the store and in a durable outbox
//! in one transaction and shows up at once as pending. Once started, the client keeps a
//! WebSocket to the server (reconnecting with backoff), recovers every event it missed by
//! sequence number, replays the outbox in order per room, and reports everything to the app
//! through listeners.
//!
//! ```no_run
//! use std::sync::Arc;
//! use roam_core::{Client, ClientConfig, RoomKind, SendState, StaticToken};
//!
//! # async fn demo() -> roam_core::Result<()> {
//! let config = ClientConfig::new("/data/alice.db", "https://chat.example.com", "alice");
//! let client = Client::open(config, Arc::new(StaticToken("<jwt>".into())))?;
//!
//! // Works offline: queued, visible at once, pending.
//! client.create_room("general".into(), RoomKind::Public, "General".into(), None)?;
//! let msg = client.send_message("general".into(), "hello".into())?;
//! assert_eq!(msg.send_state, SendState::Pending);
//! assert_eq!(client.messages("general".into(), None, 50)?.len(), 1);
//!
//! // Connect; the outbox is delivered in the background after recovery.
//! client.start().await?;
//! // ... later, when the OS reports connectivity:
//! client.network_available();
//! println!("{:?}", client.metrics());
//! client.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Module map: [`client`] (the API), [`config`], [`error`], [`model`] (records), [`listeners`],
//! [`timeline`] (a room's live window of messages, as diffs), [`room_list`] (the account's
//! rooms with last message and unread counts, as diffs),
//! [`metrics`]; internally `db` (store and migrations), `outbox` (durable queue and scheduler),
//! `optimistic` (local effects of each mutation), `socket` (reconnecting connection),
//! `sync` (applying server events, recovery), `diff` (keyed list diffs), `typing`, `presence`,
//! `http` (REST transport),
//! `remote` (cached REST reads into the store), `backoff`; [`cache`] is the single-flight,
//! size-bounded cache behind the REST reads. Attachments: `files` (the media directory's files,
//! taken in and hashed), `media` (the media cache's index, eviction and resumable downloads),
//! `upload` (durable, resumable uploads ahead of their messages). Push: [`push`] (registration,
//! modes, and [`PushHandler`] for a notification extension next to the app, over the store
//! opened read-only by `db::shared`).

pub mod cache;

pub mod client;
pub mod config;
pub mod error;
pub mod listeners;
pub mod metrics;
pub mod model;
pub mod room_list;
pub mod timeline;

#[cfg(test)]
mod attachment_tests;
mod auth;
mod backoff;
pub mod collab;
#[cfg(test)]
mod collab_tests;
mod context;
mod db;
mod diff;
mod files;
mod http;
mod inflate;
mod media;
mod optimistic;
mod outbox;
mod presence;
pub mod priority;
pub mod push;
#[cfg(test)]
mod push_tests;
mod remote;
mod save;
mod scheduler;
mod socket;
mod sync;
#[cfg(test)]
mod test_alloc;
mod typing;
mod upload;

pub use auth::{StaticToken, TokenProvider};
pub use client::Client;
pub use collab::CollabDoc;
pub use config::{
    CacheConfig, ClientConfig, HeartbeatConfig, MediaConfig, OutboxConfig, PresenceConfig,
    ReconnectConfig, StoreKey, TypingConfig,
};
pub use error::{Error, Result};
pub use listeners::{
    AwarenessListener, CollabListener, ConnectionStateListener, DocumentListener,
    NotificationListener, PresenceListener, RoomListener, Subscription, SyncStatusListener,
    TypingListener, UploadListener,
};
pub use metrics::MetricsSnapshot;
pub use model::{
    Attachment, AttachmentDetails, CollabChange, CollabError, CollabPeer, CollabValueChange,
    ConnectionState, Document, DocumentUpdate, DocumentVersion, ListDelta, MapKeyChange, Message,
    NotificationInfo, OutboxEntry, PresenceInfo, RoomInfo, RoomUpdate, SendState, SyncPhase,
    SyncStatus, TextDelta, TextSelection, UploadProgress, UploadState,
};
pub use push::{parse_push_payload, PushContent, PushContentKind, PushHandler};
pub use roam_proto::{
    ErrorCode, Member, MemberStatus, Presence, PresenceStatus, PushKind, PushMode, PushPayload,
    PushPlatform, PushSettings, Role, RoomKind,
};
pub use room_list::{apply_room_list_diffs, RoomList, RoomListDiff, RoomListListener, RoomSummary};
pub use timeline::{apply_diffs, Timeline, TimelineDiff, TimelineListener};
