//! The push side of the store (protocol §11): registered devices, notification modes, and the
//! durable push queue.
//!
//! Registrations and modes change through [`super::Store::commit`] like every mutation (their
//! `Change`s). A new message records a *job* for its room in its own transaction, and a moved
//! read marker a `read` entry for its reader, so a commit never loses its push. A deployment
//! that configured no gateway can send no push: the server turns jobs off
//! ([`PushStore::set_push_jobs`]) and its messages record none. The push
//! worker (`crate::push`) turns a job into per-user *entries* in batches ([`PushStore::push_fanout`],
//! each batch one transaction that also moves the job's cursor), and sends the entries that are
//! due. Jobs and entries are taken under a lease ([`PushStore::claim_push_job`],
//! [`PushStore::claim_pushes`]): on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so two nodes never
//! take the same rows, and a node that dies leaves its rows to the others when the lease ends.
//!
//! An entry is keyed by `(user, room, kind)`: a second message for the same user and room while
//! the first is queued coalesces into it (the newest seq and message win, `version` moves on),
//! so the worker only deletes an entry whose version it sent.

use std::collections::HashMap;

use async_trait::async_trait;
use roam_proto::{PushDevice, PushKind, PushMode, PushPlatform, PushSettings};

use super::{StoreError, StoreResult};

/// A stored value that is not one of its enum's names: the row was written by something else.
fn bad(what: &str, v: &str) -> StoreError {
    StoreError::Backend(format!("stored push {what} {v:?}"))
}

/// Reads a stored platform name (both backends store the wire names).
pub(crate) fn stored_platform(s: &str) -> StoreResult<PushPlatform> {
    PushPlatform::parse(s).ok_or_else(|| bad("platform", s))
}

/// Reads a stored mode name.
pub(crate) fn stored_mode(s: &str) -> StoreResult<PushMode> {
    PushMode::parse(s).ok_or_else(|| bad("mode", s))
}

/// Reads a stored kind name.
pub(crate) fn stored_kind(s: &str) -> StoreResult<PushKind> {
    PushKind::parse(s).ok_or_else(|| bad("kind", s))
}

/// A registered device with its token: what a gateway needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    pub user: String,
    pub device: String,
    pub platform: PushPlatform,
    pub token: String,
    pub app_id: String,
    pub locale: Option<String>,
    pub sandbox: bool,
}

/// A message waiting to be turned into entries: its room, seq, id and sender, and the last user
/// (by id) already considered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushJob {
    pub id: i64,
    pub room: String,
    pub seq: u64,
    pub message: String,
    pub sender: String,
    pub after_user: String,
    pub created_at: i64,
}

/// An active member of a room who has at least one registered device, with the mode that
/// applies to the room (its override, else the account default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushCandidate {
    pub user: String,
    pub mode: PushMode,
}

/// A `message` entry to queue (or coalesce into the user's queued one for the room).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPush {
    pub user: String,
    pub room: String,
    pub seq: u64,
    pub message: String,
}

/// A message a user may have missed ([`PushStore::push_missed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissedMessage {
    pub room: String,
    pub seq: u64,
    pub message: String,
}

/// The key of a queued entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PushKey {
    pub user: String,
    pub room: String,
    pub kind: PushKind,
}

/// A claimed entry, with the facts the worker checks again before it sends: read as they stand
/// when it was claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEntry {
    pub key: PushKey,
    /// `message`: the newest message's seq; `read`: the read marker.
    pub seq: u64,
    pub message: Option<String>,
    /// Moves on with every coalesced message: only the version sent is deleted.
    pub version: i64,
    pub attempts: u32,
    /// Messages coalesced into this entry beyond the first.
    pub coalesced: u64,
    pub created_at: i64,
    /// The user's read marker of the room (0: none).
    pub marker: u64,
    /// The user is an active member of the room.
    pub member: bool,
    /// The mode that applies to the room now.
    pub mode: PushMode,
}

/// What became of a claimed entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Sent, or dropped: delete it (unless a newer message coalesced into it meanwhile: then it
    /// is due again at once).
    Done,
    /// Try again at this instant (ms), counting an attempt.
    Retry { due_at: i64 },
}

/// The queue's size, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Entries queued, and jobs not yet turned into entries.
    pub entries: u64,
    pub jobs: u64,
    /// When the oldest entry or job was queued (ms).
    pub oldest_at: Option<i64>,
}

/// The push queue and the reads the push worker makes. Implemented by both stores.
#[async_trait]
pub trait PushStore: Send + Sync {
    /// Whether a new message records its push job, from now on (on until set). The server sets
    /// it at start from whether any gateway is configured: without one no push can be sent,
    /// and the job row would be written for nothing.
    fn set_push_jobs(&self, on: bool);
    /// Whether a new message records its push job (see [`PushStore::set_push_jobs`]).
    fn push_jobs(&self) -> bool;

    /// The user's registered devices, with their tokens, by device id.
    async fn push_targets(&self, user: &str) -> StoreResult<Vec<PushTarget>>;
    /// The user's registered devices as `GET /v1/push/devices` answers them.
    async fn push_devices(&self, user: &str) -> StoreResult<Vec<PushDevice>>;
    /// The user's modes (the default is `all` until set).
    async fn push_settings(&self, user: &str) -> StoreResult<PushSettings>;
    /// Removes every registration of the user (account erased or suspended): how many went.
    async fn delete_push_devices(&self, user: &str) -> StoreResult<u64>;
    /// Removes the registration holding this token (the gateway said it is no longer valid):
    /// whether one went.
    async fn drop_push_token(&self, platform: PushPlatform, token: &str) -> StoreResult<bool>;

    /// Leases the oldest job that no live lease holds to `owner` until `lease_until`.
    async fn claim_push_job(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> StoreResult<Option<PushJob>>;
    /// At most `limit` active members of `room` other than `sender`, with user id after
    /// `after_user`, who have a registered device, by user id.
    async fn push_candidates(
        &self,
        room: &str,
        sender: &str,
        after_user: &str,
        limit: u32,
    ) -> StoreResult<Vec<PushCandidate>>;
    /// Active members of the room (a direct room is a private room of two).
    async fn active_members(&self, room: &str) -> StoreResult<u64>;
    /// In one transaction, if `owner` still holds the job's lease: queues `entries` (coalescing
    /// into queued ones) and moves the job's cursor to `next`, or deletes the job when `next`
    /// is `None`. False (and nothing changed) when the lease was lost.
    async fn push_fanout(
        &self,
        job: i64,
        owner: &str,
        entries: &[NewPush],
        next: Option<&str>,
        now: i64,
    ) -> StoreResult<bool>;
    /// Queues `message` entries of any users and rooms (coalescing into queued ones), in one
    /// transaction.
    async fn push_enqueue(&self, entries: &[NewPush], now: i64) -> StoreResult<()>;
    /// The messages from others committed at `since` (ms) or later that the user has not read
    /// (after their read marker), in the rooms they are an active member of: room by room,
    /// newest first, at most `per_room` of a room.
    async fn push_missed(
        &self,
        user: &str,
        since: i64,
        per_room: u32,
    ) -> StoreResult<Vec<MissedMessage>>;
    /// Leases at most `limit` due entries (oldest due first) that no live lease holds to
    /// `owner` until `lease_until`, with the facts of [`PushEntry`].
    async fn claim_pushes(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> StoreResult<Vec<PushEntry>>;
    /// Settles a claimed entry (see [`Settle`]).
    async fn settle_push(&self, key: &PushKey, version: i64, how: Settle) -> StoreResult<()>;
    /// The badge: messages from others after the user's read markers over the rooms they are
    /// an active member of, counted up to [`MAX_BADGE`].
    async fn push_badge(&self, user: &str) -> StoreResult<u64>;
    /// The badges of several users at once (each as [`PushStore::push_badge`] counts it), for
    /// a batch of pushes: a room that several of them share is read once.
    async fn push_badges(&self, users: &[String]) -> StoreResult<HashMap<String, u64>>;
    /// Entries and jobs queued, and the oldest's age.
    async fn push_queue_stats(&self) -> StoreResult<QueueStats>;
}

/// The badge is counted up to this many messages.
pub const MAX_BADGE: u64 = 999;

/// The room column that holds a user's account default in the modes table (no room has an
/// empty name).
pub(crate) const DEFAULT_ROOM: &str = "";
