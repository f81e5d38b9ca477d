//! Attachments: content-addressed blobs and the resumable uploads that make them
//! (`docs/protocol.md` §10).
//!
//! Everything here lives in a [`BlobStore`]: files under `<data dir>/blobs` ([`fs`]) or an
//! S3-compatible bucket ([`s3`]). Nothing is kept in the SQL store or in a node's memory that
//! a request needs (a node remembers only the [`running`] hashes of the uploads it is
//! receiving, which spare `finish` a read and are never required), so every node that shares a
//! blob store serves every upload and download: an upload started on one node can be
//! continued, finished and downloaded on another.
//!
//! **Keys.** A store holds objects under `/`-separated keys:
//!
//! | key | what |
//! |---|---|
//! | `blobs/<sha256>` | a finished blob, named by the lowercase hex SHA-256 of its bytes |
//! | `owners/<sha256>/<hex of user id>` | an empty marker: this user uploaded the blob (or proved to hold it, by hash and size) |
//! | `uploads/<id>/meta.json` | an upload: owner, declared size, SHA-256, MIME type, creation time, finished flag |
//! | `uploads/<id>/parts/<offset>` | bytes of the upload from `<offset>` (20 digits), one object per stored part |
//! | `uploads/<id>/staging/<nonce>` | the parts joined while [`Uploads::finish`] checks their hash |
//! | `uploads/<id>/data` | in place: the upload's bytes, one object written at each part's offset |
//! | `uploads/<id>/parts/<start>-<end>` | in place: an empty marker, bytes `start..end` of `data` are durable |
//! | `uploads/<id>/sealed` | in place: `data` once [`Uploads::finish`] sealed it, while its hash is checked |
//!
//! **No compare-and-swap.** An upload's offset is never stored: it is computed from the parts,
//! as the end of the chain that starts at offset 0 (a part at 0, then one at its end, and so on).
//! Every write is one whole object put, which both backends make atomic, so two nodes that write
//! the same upload at once can at worst both write a part at the same offset, and whichever
//! landed last is the one the chain follows; the other node's client is told the real offset by
//! its next request. This needs nothing from S3 beyond put, get, list and delete.
//!
//! **In place.** A store that can write into an object ([`BlobStore::writes_in_place`]: the
//! file store) keeps an upload's bytes in one `data` object, made empty at creation: a part is
//! written into it at its offset ([`BlobStore::write_at`], durable when it returns), then its
//! span marker is put, so the chain counts only bytes that are on disk. `finish` seals `data`
//! ([`BlobStore::seal`]: after every write under way, and so that none lands later), checks
//! its hash and moves it to the blob's key: the bytes are stored once, never copied. The hash
//! is the one this node carried along while the bytes arrived in order ([`running`]), or, when
//! it has none (the upload was resumed after a restart, or two requests wrote at once), the
//! sealed object read back through SHA-256.
//! A crash at any point leaves `data`, `sealed` or the blob, and `finish` again goes on from
//! whichever is there. Two requests of the same client racing for one offset may both write
//! into `data`; what ends there is checked by the hash at `finish` like any upload (a mismatch
//! deletes it), and no write lands after the seal, so a blob's bytes are always the hashed
//! ones. Each upload has one kind ([`UploadMeta::in_place`]).
//!
//! **Memory.** A `PATCH` body is cut into parts of at most [`UploadLimits::part_bytes`], each
//! stored before the next is read, so a request holds one part in memory at most. Finishing
//! an upload of parts streams them through a SHA-256 into the staging object, and moves it to
//! its content-addressed key only when the hash matches; on a mismatch everything of the upload
//! is deleted. A blob is never held whole in memory, neither going in nor coming out.
//!
//! **Access.** Uploads are their owner's alone. Who may read a finished blob is decided by a
//! [`BlobAccess`]. [`UploaderAccess`] allows the users recorded in the blob's owner markers;
//! the rule the server wires in ([`crate::default_blobs`]) is [`MessageAccess`]: the uploaders,
//! and whoever may read a message that carries the blob as its attachment. Another rule goes in
//! with [`Blobs::with_access`] and [`Server::start_with_blobs`](crate::Server::start_with_blobs).
//! [`Blobs`] is handed to the attachment routes, and to the service (which checks every
//! attachment a message names), rather than kept in [`AppState`](crate::AppState), whose copy
//! every open WebSocket holds.
//!
//! **Expiry.** [`start`] spawns a task that calls [`Uploads::sweep`] every
//! [`SWEEP_INTERVAL`]: an upload whose newest object is older than `--upload-expiry-hours` is
//! deleted with everything in it. Every node sweeps; deleting twice is harmless.

pub mod fs;
pub mod running;
pub mod s3;
pub mod sniff;
pub mod upload;

use std::fmt::Debug;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{BlobStoreKind, Config};
use crate::metrics::Metrics;
use crate::store::Store;

pub use upload::{Accounts, UploadError, UploadLimits, UploadMeta, Uploads};

/// How often [`start`]'s task looks for expired uploads.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// A failure of a blob store, or of a stream of bytes handed to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// Nothing is stored under this key.
    #[error("no object at {0}")]
    NotFound(String),
    /// A key that the store does not accept (never one this module builds).
    #[error("invalid blob key {0:?}")]
    InvalidKey(String),
    /// The stream being stored failed: the client's request body broke off, or stalled.
    #[error("the incoming bytes stopped: {0}")]
    Source(String),
    /// The disk or the object store failed; the detail is for the log.
    #[error("blob store: {0}")]
    Backend(String),
}

/// A stream of bytes going into or coming out of a [`BlobStore`].
pub type ByteStream = BoxStream<'static, Result<Bytes, BlobError>>;

/// What a store knows of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// Where blobs, their owner markers and unfinished uploads are kept.
///
/// Keys are `/`-separated segments of ASCII letters, digits, `_`, `-` and `.` (a segment never
/// starts with `.`); [`check_key`] is the rule. Every method is safe to call from several nodes
/// at once on the same store.
#[async_trait]
pub trait BlobStore: Send + Sync + Debug {
    /// Stores `body` under `key`, replacing what was there. The object appears whole or not at
    /// all, and is durable when this returns. On an error from `body` nothing is stored and that
    /// error is returned. Returns the number of bytes stored.
    async fn put(&self, key: &str, body: ByteStream) -> Result<u64, BlobError>;

    /// The bytes of `key`, or of `range` of them (clamped to the object's size), as a stream.
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, BlobError>;

    /// The object's size and time of last change, or `None` when there is none.
    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>, BlobError>;

    /// Removes `key`; removing what is not there succeeds.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;

    /// Every object whose key starts with `prefix/` (a key prefix of whole segments), in no
    /// particular order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, BlobError>;

    /// The names of the segments right under `prefix/` that have objects below them (the
    /// "directories" of `prefix`).
    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, BlobError>;

    /// Moves `from` to `to` (replacing `to`), durably. [`BlobError::NotFound`] when `from` is
    /// absent.
    async fn rename(&self, from: &str, to: &str) -> Result<(), BlobError>;

    /// Whether this store can write into an object in place ([`BlobStore::write_at`] and
    /// [`BlobStore::seal`]). Such a store keeps an upload's bytes in one object, so finishing it
    /// moves that object instead of copying every byte into a new one. It must be this
    /// process's alone (as the file store is one server's): [`running`] hashes what this
    /// process writes into an upload's object as the bytes of that object.
    fn writes_in_place(&self) -> bool {
        false
    }

    /// Writes `body` into the existing object `key` from byte `offset` on, leaving its other
    /// bytes as they were; the bytes are durable when this returns. [`BlobError::NotFound`]
    /// when `key` is absent, or was sealed or deleted before the write could start: a write
    /// never lands in an object after [`BlobStore::seal`] moved it. On an error from `body`
    /// what was written may stay. Returns the number of bytes written. Only on stores whose
    /// [`BlobStore::writes_in_place`] is true.
    async fn write_at(&self, key: &str, offset: u64, body: ByteStream) -> Result<u64, BlobError> {
        let _ = (offset, body);
        Err(BlobError::Backend(format!(
            "the {} blob store cannot write into {key} in place",
            self.kind()
        )))
    }

    /// Moves `from` to `to` like [`BlobStore::rename`], after every [`BlobStore::write_at`] to
    /// `from` under way has finished, and so that none begun before lands in `to`.
    /// [`BlobError::NotFound`] when `from` is absent. Only on stores whose
    /// [`BlobStore::writes_in_place`] is true.
    async fn seal(&self, from: &str, to: &str) -> Result<(), BlobError> {
        let _ = to;
        Err(BlobError::Backend(format!(
            "the {} blob store cannot seal {from}",
            self.kind()
        )))
    }

    /// Removes what interrupted writes left behind that is older than `older_than` (temporary
    /// files; nothing on stores that have none). Returns how many went.
    async fn sweep_scratch(&self, older_than: SystemTime) -> Result<u64, BlobError> {
        let _ = older_than;
        Ok(0)
    }

    /// A short name of the backend for logs (`fs`, `s3`).
    fn kind(&self) -> &'static str;
}

/// Checks a key against the rule of [`BlobStore`].
pub fn check_key(key: &str) -> Result<(), BlobError> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && !seg.starts_with('.')
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(BlobError::InvalidKey(key.to_owned()))
    }
}

/// The keys this module writes.
pub mod keys {
    /// A finished blob.
    pub fn blob(sha: &str) -> String {
        format!("blobs/{sha}")
    }

    /// Where the owner markers of a blob are.
    pub fn owners(sha: &str) -> String {
        format!("owners/{sha}")
    }

    /// The marker saying that `user` may read the blob `sha` as its uploader.
    pub fn owner(sha: &str, user: &str) -> String {
        format!("owners/{sha}/{}", super::hex(user.as_bytes()))
    }

    /// Everything of all uploads.
    pub const UPLOADS: &str = "uploads";

    /// Everything of one upload.
    pub fn upload(id: &str) -> String {
        format!("uploads/{id}")
    }

    /// An upload's description.
    pub fn meta(id: &str) -> String {
        format!("uploads/{id}/meta.json")
    }

    /// Where an upload's parts are.
    pub fn parts(id: &str) -> String {
        format!("uploads/{id}/parts")
    }

    /// The part of an upload that starts at `offset`.
    pub fn part(id: &str, offset: u64) -> String {
        format!("uploads/{id}/parts/{offset:020}")
    }

    /// The bytes of an upload written in place (on a store that
    /// [writes in place](super::BlobStore::writes_in_place)), made empty when it is created.
    pub fn data(id: &str) -> String {
        format!("uploads/{id}/data")
    }

    /// An in-place upload's bytes once `finish` sealed them, while their hash is checked.
    pub fn sealed(id: &str) -> String {
        format!("uploads/{id}/sealed")
    }

    /// The marker of the bytes `start..end` of an in-place upload's data: empty, its name
    /// says which bytes are durable (the chain of parts reads both kinds).
    pub fn span(id: &str, start: u64, end: u64) -> String {
        format!("uploads/{id}/parts/{start:020}-{end:020}")
    }

    /// The joined parts while their hash is checked (`nonce`: one finish's own, so that two
    /// nodes finishing the same upload at once do not write the same object).
    pub fn staging(id: &str, nonce: &str) -> String {
        format!("uploads/{id}/staging/{nonce}")
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// A SHA-256 given by a client, checked (64 hex digits) and lowercased: a blob's id.
pub fn parse_sha256(s: &str) -> Option<String> {
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

/// A stream of one buffer.
pub fn once(bytes: Bytes) -> ByteStream {
    Box::pin(futures_util::stream::iter([Ok(bytes)]))
}

/// Decides who may download a blob.
///
/// The router asks it before every download; a `false` answers 403. The service asks it before
/// a message names the blob as its attachment. [`UploaderAccess`] allows the blob's uploaders;
/// [`MessageAccess`], the server's default, also the readers of the messages that carry it.
#[async_trait]
pub trait BlobAccess: Send + Sync + Debug {
    /// Whether `user` may read the blob whose SHA-256 is `blob` (lowercase hex). A blob that
    /// does not exist may be answered either way: the router answers 404 after a `true`.
    async fn may_read(&self, user: &str, blob: &str) -> Result<bool, BlobError>;
}

/// Allows a blob's uploaders: the users with an owner marker (`owners/<sha>/<user>`), written
/// when their upload finished or when they created an upload of a blob already held.
#[derive(Debug, Clone)]
pub struct UploaderAccess {
    store: Arc<dyn BlobStore>,
}

impl UploaderAccess {
    pub fn new(store: Arc<dyn BlobStore>) -> Self {
        UploaderAccess { store }
    }
}

#[async_trait]
impl BlobAccess for UploaderAccess {
    async fn may_read(&self, user: &str, blob: &str) -> Result<bool, BlobError> {
        Ok(self.store.stat(&keys::owner(blob, user)).await?.is_some())
    }
}

/// Allows a blob's uploaders ([`UploaderAccess`]) and whoever may read a message that carries
/// the blob as its attachment: an active member of the message's live room, or anyone not
/// banned from it when the room is public ([`Store::blob_shared_with`]). A deleted message, or
/// a deleted room, shares nothing. The default of [`crate::default_blobs`].
#[derive(Debug, Clone)]
pub struct MessageAccess {
    uploaders: UploaderAccess,
    store: Arc<dyn Store>,
}

impl MessageAccess {
    /// `blobs` holds the owner markers; `store` the messages and their rooms.
    pub fn new(blobs: Arc<dyn BlobStore>, store: Arc<dyn Store>) -> Self {
        MessageAccess {
            uploaders: UploaderAccess::new(blobs),
            store,
        }
    }
}

#[async_trait]
impl BlobAccess for MessageAccess {
    /// The store first: a blob is downloaded by a room's members far more often than by its
    /// one uploader, and the store is nearer than a bucket.
    async fn may_read(&self, user: &str, blob: &str) -> Result<bool, BlobError> {
        match self.store.blob_shared_with(user, blob).await {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(e) => return Err(BlobError::Backend(format!("message store: {e}"))),
        }
        self.uploaders.may_read(user, blob).await
    }
}

/// A store that cannot be used: every call fails with the reason it could not be set up (only
/// when [`Blobs::from_config`] is reached with settings that [`Config::validate`] would refuse).
#[derive(Debug)]
struct Unavailable(String);

impl Unavailable {
    fn fail<T>(&self) -> Result<T, BlobError> {
        Err(BlobError::Backend(format!(
            "the blob store is not configured: {}",
            self.0
        )))
    }
}

#[async_trait]
impl BlobStore for Unavailable {
    async fn put(&self, _: &str, _: ByteStream) -> Result<u64, BlobError> {
        self.fail()
    }
    async fn get(&self, _: &str, _: Option<Range<u64>>) -> Result<ByteStream, BlobError> {
        self.fail()
    }
    async fn stat(&self, _: &str) -> Result<Option<ObjectMeta>, BlobError> {
        self.fail()
    }
    async fn delete(&self, _: &str) -> Result<(), BlobError> {
        self.fail()
    }
    async fn list(&self, _: &str) -> Result<Vec<ObjectMeta>, BlobError> {
        self.fail()
    }
    async fn list_dirs(&self, _: &str) -> Result<Vec<String>, BlobError> {
        self.fail()
    }
    async fn rename(&self, _: &str, _: &str) -> Result<(), BlobError> {
        self.fail()
    }
    fn kind(&self) -> &'static str {
        "unavailable"
    }
}

/// The blob side of the server: the store, the uploads on it, who may download, and the limits.
#[derive(Debug)]
pub struct Blobs {
    pub store: Arc<dyn BlobStore>,
    /// Each user's upload bytes per second ([`UploadRate`]).
    pub rate: UploadRate,
    pub uploads: Uploads,
    pub access: Arc<dyn BlobAccess>,
    pub metrics: Arc<Metrics>,
    /// An upload untouched this long is deleted.
    pub expiry: Duration,
}

impl Blobs {
    /// Blobs on `store` that only their uploaders may read ([`UploaderAccess`]); see
    /// [`crate::default_blobs`] for the server's rule.
    pub fn new(
        store: Arc<dyn BlobStore>,
        limits: UploadLimits,
        expiry: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Blobs {
            rate: UploadRate::new(64, limits.max_chunk_bytes),
            uploads: Uploads::new(Arc::clone(&store), limits),
            access: Arc::new(UploaderAccess::new(Arc::clone(&store))),
            store,
            metrics,
            expiry,
        }
    }

    /// The store and limits the configuration names (`--blob-store`, `--max-upload-mb`, …).
    /// A store that cannot be built (settings [`Config::validate`] refuses) is logged, and
    /// every blob request then answers 503.
    pub fn from_config(config: &Config, metrics: Arc<Metrics>) -> Self {
        let store: Arc<dyn BlobStore> = match store_from_config(config) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "the blob store could not be set up");
                Arc::new(Unavailable(e.to_string()))
            }
        };
        if store.kind() == "fs" && config.bus.trim() != "local" {
            tracing::warn!(
                "--blob-store fs with a bus: every node keeps its own blobs, so an upload \
                 or download reaching another node fails; use --blob-store s3"
            );
        }
        let limits = UploadLimits::from_config(config);
        let chunk = limits.max_chunk_bytes;
        let mut blobs = Self::new(store, limits, config.upload_expiry(), metrics);
        blobs.rate = UploadRate::new(config.rate_upload_mb_per_sec, chunk);
        blobs
    }

    /// The same blobs with another access rule.
    pub fn with_access(mut self, access: Arc<dyn BlobAccess>) -> Self {
        self.access = access;
        self
    }

    /// The same blobs with uploads charged to their owners within `quota` bytes each (0: no
    /// limit) and blobs touched in `store` when they are found, made or named by a send (see
    /// [`upload`]'s accounts, and [`Blobs::collect`]).
    pub fn with_accounts(mut self, store: Arc<dyn Store>, quota: u64) -> Self {
        self.uploads = self.uploads.with_accounts(Accounts { store, quota });
        self
    }

    /// Stamps the blob as named by a message being sent, so that retention leaves it for the
    /// upload expiry; `false` when retention is deleting it right now (the send must not name
    /// it). Called before the send checks that the blob exists.
    pub async fn hold(&self, sha256: &str) -> Result<bool, BlobError> {
        self.uploads.touch(sha256).await
    }
}

/// Upload bandwidth per user: a token bucket of 64 KiB cells refilled at `--rate-upload-mb-per-sec`
/// and holding one largest request (`--max-upload-chunk-mb`). A `PATCH` pays for its declared
/// length (or for a whole largest request when it declares none) before its body is read; one
/// that finds the bucket short is answered `rate_limited` with the wait, and nothing is stored.
pub struct UploadRate {
    limiter: governor::DefaultKeyedRateLimiter<String>,
    burst_cells: u32,
}

impl Debug for UploadRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadRate")
            .field("burst_cells", &self.burst_cells)
            .finish_non_exhaustive()
    }
}

/// One cell of [`UploadRate`]'s bucket.
const RATE_CELL: u64 = 64 * 1024;

impl UploadRate {
    pub fn new(mib_per_sec: u32, max_chunk_bytes: u64) -> Self {
        use std::num::NonZeroU32;
        let per_sec =
            NonZeroU32::new(mib_per_sec.max(1).saturating_mul(16)).unwrap_or(NonZeroU32::MIN);
        let burst_cells = u32::try_from(max_chunk_bytes.div_ceil(RATE_CELL))
            .unwrap_or(u32::MAX)
            .max(per_sec.get());
        let burst = NonZeroU32::new(burst_cells).unwrap_or(NonZeroU32::MIN);
        UploadRate {
            limiter: governor::RateLimiter::keyed(
                governor::Quota::per_second(per_sec).allow_burst(burst),
            ),
            burst_cells,
        }
    }

    /// Takes what a request of `bytes` (`None`: undeclared) costs `user`; `Err(wait)` when the
    /// bucket is short.
    pub fn take(&self, user: &str, bytes: Option<u64>) -> Result<(), Duration> {
        use governor::clock::{Clock, DefaultClock};
        let cells = match bytes {
            Some(b) => u32::try_from(b.div_ceil(RATE_CELL)).unwrap_or(u32::MAX),
            None => self.burst_cells,
        }
        .clamp(1, self.burst_cells);
        let n = std::num::NonZeroU32::new(cells).unwrap_or(std::num::NonZeroU32::MIN);
        match self.limiter.check_key_n(&user.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(DefaultClock::default().now())),
            Err(_) => Err(Duration::from_secs(1)),
        }
    }
}

/// The store `--blob-store` names.
pub fn store_from_config(config: &Config) -> Result<Arc<dyn BlobStore>, BlobError> {
    Ok(match config.blob_store {
        BlobStoreKind::Fs => Arc::new(fs::FsBlobStore::new(config.data_dir.join("blobs"))),
        BlobStoreKind::S3 => Arc::new(s3::S3BlobStore::new(&s3::S3Settings::from_config(config)?)?),
    })
}

impl Blobs {
    /// Deletes at most `max` blobs last written before `before` that no message carries any more
    /// (`Store::blob_in_use`), with their owner markers; returns how many went. Younger blobs
    /// stay: one may have just been uploaded for a message still being sent.
    ///
    /// A send names a blob in two steps (it checks the blob exists, then commits the message),
    /// and so does this (it checks no message carries the blob, then deletes it). To keep the
    /// two from crossing, each blob is first doomed in `store` ([`Store::doom_blob`]): that
    /// succeeds only when no live message carries it and no send or upload touched it since
    /// `before` ([`Blobs::hold`] touches it before the send's existence check). A send that
    /// touches after the doom is refused the blob; a doom after the touch fails. The blob's
    /// quota charges and stamps are forgotten once it is deleted.
    pub async fn collect(
        &self,
        store: &dyn Store,
        before: SystemTime,
        max: usize,
    ) -> Result<u64, BlobError> {
        let mut deleted = 0u64;
        let untouched_since = before
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let listed = self.store.list("blobs/").await?;
        let mut stored: u64 = listed.iter().map(|m| m.size).sum();
        for meta in listed {
            if deleted as usize >= max {
                break;
            }
            if meta.modified >= before {
                continue;
            }
            let Some(sha) = meta.key.strip_prefix("blobs/").and_then(parse_sha256) else {
                continue;
            };
            let failed = |e: crate::store::StoreError| BlobError::Backend(e.to_string());
            if store.blob_in_use(&sha).await.map_err(failed)? {
                continue;
            }
            let doomed = store
                .doom_blob(&sha, crate::clock::now_ms(), untouched_since)
                .await
                .map_err(failed)?;
            if !doomed {
                self.metrics.blob_gc_skipped_touched.inc();
                continue;
            }
            self.store.delete(&keys::blob(&sha)).await?;
            for owner in self.store.list(&format!("{}/", keys::owners(&sha))).await? {
                self.store.delete(&owner.key).await?;
            }
            store.forget_blob(&sha).await.map_err(failed)?;
            deleted += 1;
            stored = stored.saturating_sub(meta.size);
        }
        self.metrics
            .blob_stored_bytes
            .set(i64::try_from(stored).unwrap_or(i64::MAX));
        Ok(deleted)
    }
}

/// Spawns the task that deletes expired uploads every [`SWEEP_INTERVAL`] (the first pass right
/// away), until `stop` is cancelled.
pub fn start(blobs: Arc<Blobs>, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            match blobs.uploads.sweep(SystemTime::now(), blobs.expiry).await {
                Ok(n) if n > 0 => tracing::info!(uploads = n, "expired uploads deleted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sweeping expired uploads failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_rate_passes_a_burst_then_makes_the_user_wait() {
        // 1 MiB/s, 1 MiB requests: one passes at once, the next waits about a second.
        let rate = UploadRate::new(1, 1 << 20);
        assert_eq!(rate.take("alice", Some(1 << 20)), Ok(()));
        let wait = rate
            .take("alice", Some(1 << 20))
            .expect_err("the bucket is empty");
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another user has a bucket of their own; an undeclared length pays for a whole request.
        assert_eq!(rate.take("bob", None), Ok(()));
        assert!(rate.take("bob", Some(1)).is_err());
    }

    #[test]
    fn keys_follow_the_rule() {
        let sha = "ab".repeat(32);
        for k in [
            keys::blob(&sha),
            keys::owner(&sha, "alice@example.com/x y"),
            keys::meta("0123"),
            keys::part("0123", 42),
            keys::staging("0123", "n1"),
        ] {
            assert_eq!(check_key(&k), Ok(()), "{k}");
        }
        assert_eq!(keys::part("u", 42), "uploads/u/parts/00000000000000000042");
        for bad in [
            "", "/a", "a/", "a//b", "../a", "a/../b", ".tmp/x", "a b", "a\\b",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sha256_ids_are_64_hex_digits_lowercased() {
        let upper = "AB".repeat(32);
        assert_eq!(parse_sha256(&upper), Some("ab".repeat(32)));
        assert_eq!(parse_sha256(&"ab".repeat(31)), None);
        assert_eq!(parse_sha256(&format!("{}zz", "ab".repeat(31))), None);
        assert_eq!(hex(&[0, 15, 16, 255]), "000f10ff");
    }
}
