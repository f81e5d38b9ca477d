//! The upload state machine: create, append at an offset, ask the offset, finish, abort, expire.
//!
//! An upload is its description (`uploads/<id>/meta.json`, written at creation and rewritten
//! once, when it finishes) and its parts (`uploads/<id>/parts/<offset>`) — or, on a store that
//! writes in place, its one data object (`uploads/<id>/data`) and the span markers of the bytes
//! written into it (`uploads/<id>/parts/<start>-<end>`). Its offset is the end of the chain of
//! parts from 0 (see the module above): computed, never stored, so nodes need no lock or
//! compare-and-swap to share an upload. Every state change is one object put:
//!
//! ```text
//!  create ──► open (offset 0) ──append──► open (offset n) ──append──► … open (offset = size)
//!                │                                                         │ finish
//!                │ abort / expiry                       hash matches ◄─────┴────► hash differs
//!                ▼                                            │                     │
//!             deleted                         finished (blob stored)      deleted (422)
//! ```
//!
//! A blob already held makes `create` answer at once ([`Created::Held`]): nothing is uploaded.
//!
//! **Accounts.** With [`Accounts`] (the server always has them; unit tests of this module run
//! without), every upload is charged its declared size to its owner when it is created, and
//! refused ([`UploadError::QuotaExceeded`]) before anything is stored when that would pass the
//! quota; on finishing, the charge moves to the blob (`blob:<sha256>`, charged once per
//! uploader), and an abort, an expiry or a hash mismatch releases it. Finding or making a blob
//! also touches it ([`Store::touch_blob`]), so retention leaves it alone while the message that
//! names it is being sent; a blob retention is deleting right now is treated as absent
//! (`create`) or makes `finish` answer "retry" (503).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::running::{RunningHashes, Writing};
use super::{hex, keys, once, BlobError, BlobStore, ByteStream};
use crate::config::Config;
use crate::store::{blob_item, Charge, Store};

/// A doom older than this no longer keeps a touch out: the retention pass that set it stopped
/// before it finished deleting the blob ([`Store::touch_blob`]'s `doomed_after`).
pub const DOOM_STALE: Duration = Duration::from_secs(600);

/// Where uploads and blobs are accounted: the per-user quota and the stamps that keep
/// retention off blobs being named ([`Store::charge_blob_bytes`], [`Store::touch_blob`]).
#[derive(Debug, Clone)]
pub struct Accounts {
    pub store: Arc<dyn Store>,
    /// Bytes each user may hold (`--blob-quota-mb-per-user`); 0: no limit.
    pub quota: u64,
}

/// Largest `meta.json` read back (it is a few hundred bytes).
const META_MAX: usize = 64 * 1024;

/// The bounds of uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Largest blob (`--max-upload-mb`); a larger declared size is refused before anything is
    /// stored.
    pub max_upload_bytes: u64,
    /// Most bytes one `PATCH` may carry (`--max-upload-chunk-mb`).
    pub max_chunk_bytes: u64,
    /// Bytes of a request body gathered before they are stored as one part: the most a request
    /// holds in memory (a little more: the last chunk read).
    pub part_bytes: usize,
    /// Most part objects one upload may have.
    pub max_parts: usize,
    /// A request body that sends nothing for this long is cut (what came before it is kept).
    pub body_idle: Duration,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            max_upload_bytes: 100 << 20,
            max_chunk_bytes: 16 << 20,
            part_bytes: 4 << 20,
            max_parts: 10_000,
            body_idle: Duration::from_secs(30),
        }
    }
}

impl UploadLimits {
    /// The limits of `--max-upload-mb` and `--max-upload-chunk-mb`.
    pub fn from_config(c: &Config) -> Self {
        UploadLimits {
            max_upload_bytes: c.max_upload_mb.saturating_mul(1 << 20),
            max_chunk_bytes: c.max_upload_chunk_mb.saturating_mul(1 << 20),
            ..UploadLimits::default()
        }
    }
}

/// An upload's description, as stored in `meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadMeta {
    pub id: String,
    /// The user who created it; nobody else sees it.
    pub owner: String,
    /// The declared size in bytes.
    pub size: u64,
    /// The declared SHA-256 (lowercase hex): the blob's id once finished.
    pub sha256: String,
    /// The MIME type the client declared (kept for the client; never served).
    pub mime: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    #[serde(default)]
    pub finished: bool,
    /// Its bytes are written in place into one object (`uploads/<id>/data`, on a store that
    /// [writes in place](BlobStore::writes_in_place)) rather than one object per part.
    #[serde(default)]
    pub in_place: bool,
}

/// What [`Uploads::create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The blob is already held: nothing to upload (the caller was recorded as an uploader).
    Held { blob: String, size: u64 },
    /// A new upload, at offset 0.
    Started(UploadMeta),
}

/// What an append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The upload's offset after it.
    pub offset: u64,
    /// Bytes it stored.
    pub stored: u64,
}

/// A finished upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub blob: String,
    pub size: u64,
    /// The upload had been finished by an earlier call.
    pub replayed: bool,
    /// Its bytes were read back to check their hash: a store of parts (joined into the blob),
    /// or an in-place upload this node had no running hash of (resumed after a restart or on
    /// another node, or two requests wrote at once). False when the hash was carried along as
    /// the bytes arrived, and on a replay.
    pub read_back: bool,
}

/// Why an upload operation was refused or failed. Variants that carry `offset` tell the
/// upload's offset after the failure (what was stored stays).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// No such upload, or not the caller's.
    #[error("upload not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    /// The declared size is over `--max-upload-mb`.
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The body would go past the declared size.
    #[error("the body would go past the declared size of {size} bytes")]
    PastSize { offset: u64, size: u64 },
    /// The body is larger than one request may carry.
    #[error("one request may carry at most {limit} bytes")]
    ChunkTooLarge { offset: u64, limit: u64 },
    /// The upload has as many parts as it may have.
    #[error("the upload has too many parts; send larger requests")]
    TooManyParts { offset: u64 },
    /// The request named another offset than the upload's.
    #[error("the upload is at offset {current}, not {given}")]
    WrongOffset { given: u64, current: u64 },
    /// `finish` before every byte arrived.
    #[error("the upload has {offset} of its {size} bytes")]
    Incomplete { offset: u64, size: u64 },
    /// Bytes sent to an upload that is already finished.
    #[error("the upload is finished")]
    Finished { size: u64 },
    /// The bytes do not hash to the declared SHA-256 (the upload was deleted).
    #[error("the bytes' SHA-256 is {actual}, not the declared {expected}; the upload was deleted")]
    HashMismatch { expected: String, actual: String },
    /// The upload would take its owner past their storage quota; nothing was stored.
    #[error("this upload of {size} bytes would pass the storage quota: {used} of {limit} bytes are used")]
    QuotaExceeded { size: u64, used: u64, limit: u64 },
    /// A blob with the declared SHA-256 is held with another size.
    #[error("a blob with this SHA-256 is held with another size than {size}")]
    SizeMismatch { size: u64 },
    /// The request body broke off or stalled; what arrived before is stored.
    #[error("the request body stopped at offset {offset}: {reason}")]
    Interrupted { offset: u64, reason: String },
    #[error(transparent)]
    Store(#[from] BlobError),
}

/// Uploads on one store.
#[derive(Debug, Clone)]
pub struct Uploads {
    store: Arc<dyn BlobStore>,
    limits: UploadLimits,
    accounts: Option<Accounts>,
    /// The SHA-256s of in-place uploads carried along as their bytes arrive on this node.
    running: Arc<RunningHashes>,
}

fn accounts_failed(e: crate::store::StoreError) -> BlobError {
    BlobError::Backend(format!("attachment accounts: {e}"))
}

/// Checks a declared MIME type: 1–255 printable ASCII characters with a `/`.
pub fn check_mime(mime: &str) -> Result<(), UploadError> {
    let ok = (1..=255).contains(&mime.len())
        && mime.contains('/')
        && mime.bytes().all(|b| (0x20..0x7f).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(UploadError::Invalid(
            "mime must be 1 to 255 printable ASCII characters, like image/png".into(),
        ))
    }
}

/// An upload id: 32 lowercase hex digits (a random UUID).
fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Uploads {
    pub fn new(store: Arc<dyn BlobStore>, limits: UploadLimits) -> Self {
        Uploads {
            store,
            limits,
            accounts: None,
            running: Arc::new(RunningHashes::new()),
        }
    }

    /// The same uploads, charged to their owners and touching what they find or make.
    pub fn with_accounts(mut self, accounts: Accounts) -> Self {
        self.accounts = Some(accounts);
        self
    }

    pub fn limits(&self) -> &UploadLimits {
        &self.limits
    }

    pub fn accounts(&self) -> Option<&Accounts> {
        self.accounts.as_ref()
    }

    /// Charges `size` bytes to `owner` under `item`, within the quota (`checked`) or not.
    async fn charge(
        &self,
        owner: &str,
        item: &str,
        size: u64,
        checked: bool,
    ) -> Result<(), UploadError> {
        let Some(a) = &self.accounts else {
            return Ok(());
        };
        let limit = if checked { a.quota } else { 0 };
        match a
            .store
            .charge_blob_bytes(owner, item, size, limit)
            .await
            .map_err(accounts_failed)?
        {
            Charge::Charged => Ok(()),
            Charge::Refused { used } => Err(UploadError::QuotaExceeded {
                size,
                used,
                limit: a.quota,
            }),
        }
    }

    /// Releases the charge of upload `id` (logged, not failed: an expiry sweep releases it
    /// again).
    async fn release_upload(&self, id: &str) {
        if let Some(a) = &self.accounts {
            if let Err(e) = a.store.release_blob_bytes(&blob_item("upload", id)).await {
                tracing::warn!(error = %e, upload = id, "releasing an upload's quota charge failed");
            }
        }
    }

    /// Stamps the blob as just named (see [`Store::touch_blob`]); `false` while retention is
    /// deleting it. Always `true` without accounts.
    pub async fn touch(&self, sha256: &str) -> Result<bool, BlobError> {
        let Some(a) = &self.accounts else {
            return Ok(true);
        };
        let now = crate::clock::now_ms();
        let stale = i64::try_from(DOOM_STALE.as_millis()).unwrap_or(i64::MAX);
        a.store
            .touch_blob(sha256, now, now.saturating_sub(stale))
            .await
            .map_err(accounts_failed)
    }

    /// Starts an upload of `size` bytes hashing to `sha256` (lowercase hex), or, when that blob
    /// is held already (same size), records `owner` as one of its uploaders and says so.
    pub async fn create(
        &self,
        owner: &str,
        size: u64,
        sha256: &str,
        mime: &str,
    ) -> Result<Created, UploadError> {
        check_mime(mime)?;
        if size > self.limits.max_upload_bytes {
            return Err(UploadError::TooLarge {
                limit: self.limits.max_upload_bytes,
            });
        }
        if let Some(held) = self.store.stat(&keys::blob(sha256)).await? {
            if held.size != size {
                return Err(UploadError::SizeMismatch { size });
            }
            // A blob retention is deleting is not held: upload it again.
            if self.touch(sha256).await? {
                self.charge(owner, &blob_item("blob", sha256), size, true)
                    .await?;
                self.mark_owner(sha256, owner).await?;
                return Ok(Created::Held {
                    blob: sha256.to_owned(),
                    size,
                });
            }
        }
        let meta = UploadMeta {
            id: uuid::Uuid::new_v4().simple().to_string(),
            owner: owner.to_owned(),
            size,
            sha256: sha256.to_owned(),
            mime: mime.to_owned(),
            created_at: crate::clock::now_ms(),
            finished: false,
            in_place: self.store.writes_in_place(),
        };
        self.charge(owner, &blob_item("upload", &meta.id), size, true)
            .await?;
        if let Err(e) = self.write_new(&meta).await {
            self.release_upload(&meta.id).await;
            return Err(e.into());
        }
        Ok(Created::Started(meta))
    }

    /// The upload `id` if `owner` created it ([`UploadError::NotFound`] otherwise, so that ids
    /// of others' uploads cannot be told from ids that do not exist).
    pub async fn open(&self, owner: &str, id: &str) -> Result<UploadMeta, UploadError> {
        if !valid_id(id) {
            return Err(UploadError::NotFound);
        }
        let raw = match self.read_small(&keys::meta(id)).await {
            Ok(raw) => raw,
            Err(BlobError::NotFound(_)) => return Err(UploadError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let meta: UploadMeta = serde_json::from_slice(&raw).map_err(|e| {
            BlobError::Backend(format!("upload {id} has an unreadable description: {e}"))
        })?;
        if meta.owner != owner || meta.id != id {
            return Err(UploadError::NotFound);
        }
        Ok(meta)
    }

    /// The upload and its offset: the bytes stored from 0 without a gap (its size once
    /// finished).
    pub async fn status(&self, owner: &str, id: &str) -> Result<(UploadMeta, u64), UploadError> {
        let meta = self.open(owner, id).await?;
        if meta.finished {
            let size = meta.size;
            return Ok((meta, size));
        }
        let (offset, _) = self.chain(&meta).await?;
        Ok((meta, offset))
    }

    /// Stores `body` at offset `at` of the upload, one part of at most
    /// [`UploadLimits::part_bytes`] at a time. `declared_len` (the request's `Content-Length`)
    /// is checked against the limits before anything is read. When the body breaks off or
    /// stalls, what arrived is stored and [`UploadError::Interrupted`] tells the new offset; a
    /// body found to pass a limit stores nothing more from the part being gathered.
    pub async fn append(
        &self,
        owner: &str,
        id: &str,
        at: u64,
        mut body: ByteStream,
        declared_len: Option<u64>,
    ) -> Result<Appended, UploadError> {
        let meta = self.open(owner, id).await?;
        if meta.finished {
            return Err(UploadError::Finished { size: meta.size });
        }
        // Registered before the offset is checked, so that two appends overlapping anywhere
        // between their check and their last write are seen (`super::running`).
        let mut writing = meta.in_place.then(|| self.running.begin(id));
        let (offset, mut parts) = self.chain(&meta).await?;
        if at != offset {
            return Err(UploadError::WrongOffset {
                given: at,
                current: offset,
            });
        }
        if let Some(w) = writing.as_mut() {
            w.resume(offset);
        }
        let size = meta.size;
        let limit = self.limits.max_chunk_bytes;
        if let Some(len) = declared_len {
            if len > limit {
                return Err(UploadError::ChunkTooLarge { offset, limit });
            }
            if offset.saturating_add(len) > size {
                return Err(UploadError::PastSize { offset, size });
            }
        }
        let mut cur = offset;
        let mut received = 0u64;
        let mut held: Vec<Bytes> = Vec::new();
        let mut held_len = 0u64;
        loop {
            let next = match tokio::time::timeout(self.limits.body_idle, body.next()).await {
                Ok(next) => next,
                Err(_) => Some(Err(BlobError::Source(format!(
                    "nothing arrived for {} s",
                    self.limits.body_idle.as_secs()
                )))),
            };
            match next {
                None => break,
                Some(Ok(chunk)) => {
                    received += chunk.len() as u64;
                    if received > limit {
                        return Err(UploadError::ChunkTooLarge { offset: cur, limit });
                    }
                    if cur + held_len + chunk.len() as u64 > size {
                        return Err(UploadError::PastSize { offset: cur, size });
                    }
                    held_len += chunk.len() as u64;
                    held.push(chunk);
                    if held_len >= self.limits.part_bytes as u64 {
                        cur = self
                            .store_part(&meta, cur, &mut held, &mut parts, writing.as_mut())
                            .await?;
                        held_len = 0;
                    }
                }
                Some(Err(e)) => {
                    // Keep what arrived: the client resumes from the offset it asks for next.
                    cur = self
                        .store_part(&meta, cur, &mut held, &mut parts, writing.as_mut())
                        .await?;
                    let reason = match e {
                        BlobError::Source(r) => r,
                        other => other.to_string(),
                    };
                    return Err(UploadError::Interrupted {
                        offset: cur,
                        reason,
                    });
                }
            }
        }
        cur = self
            .store_part(&meta, cur, &mut held, &mut parts, writing.as_mut())
            .await?;
        Ok(Appended {
            offset: cur,
            stored: cur - offset,
        })
    }

    /// Checks the upload's bytes against its SHA-256 while joining them into the blob; the
    /// blob is stored (durably) before this answers. A mismatch deletes the whole upload.
    /// Finishing a finished upload answers the same again.
    pub async fn finish(&self, owner: &str, id: &str) -> Result<Finished, UploadError> {
        let meta = self.open(owner, id).await?;
        let blob_key = keys::blob(&meta.sha256);
        let mut done = Finished {
            blob: meta.sha256.clone(),
            size: meta.size,
            replayed: false,
            read_back: true,
        };
        if meta.finished {
            return match self.store.stat(&blob_key).await? {
                Some(_) => Ok(Finished {
                    replayed: true,
                    read_back: false,
                    ..done
                }),
                None => Err(UploadError::NotFound),
            };
        }
        let (offset, parts) = self.chain(&meta).await?;
        if offset != meta.size {
            return Err(UploadError::Incomplete {
                offset,
                size: meta.size,
            });
        }
        if meta.in_place {
            done.read_back = self.place_sealed(&meta).await?;
        } else {
            self.place_joined(&meta, &parts).await?;
        }
        self.mark_owner(&meta.sha256, owner).await?;
        // The upload's charge becomes the blob's (reserved at creation: not checked again).
        self.charge(owner, &blob_item("blob", &meta.sha256), meta.size, false)
            .await?;
        self.release_upload(id).await;
        self.write_meta(&UploadMeta {
            finished: true,
            ..meta
        })
        .await?;
        self.running.forget(id);
        for part in parts {
            if let Err(e) = self.store.delete(&part).await {
                tracing::warn!(error = %e, upload = id, "removing a finished upload's part failed");
            }
        }
        Ok(done)
    }

    /// Joins the parts of a finished upload into its blob, checking their hash on the way (a
    /// mismatch deletes the whole upload).
    async fn place_joined(&self, meta: &UploadMeta, parts: &[String]) -> Result<(), UploadError> {
        let (id, blob_key) = (&meta.id, keys::blob(&meta.sha256));
        let staging = keys::staging(&meta.id, &uuid::Uuid::new_v4().simple().to_string());
        let (stored, actual) = match self.join(parts, &staging).await {
            Ok(r) => r,
            Err(e) => {
                let _ = self.store.delete(&staging).await;
                return Err(e.into());
            }
        };
        if stored != meta.size || actual != meta.sha256 {
            let _ = self.store.delete(&staging).await;
            if stored != meta.size {
                // A part changed under this finish (another node wrote it): let the client
                // ask again rather than delete what may be right.
                return Err(UploadError::Store(BlobError::Backend(format!(
                    "upload {id}: joined {stored} bytes of {}",
                    meta.size
                ))));
            }
            self.remove_all(id).await?;
            return Err(UploadError::HashMismatch {
                expected: meta.sha256.clone(),
                actual,
            });
        }
        // Touched before it is looked for, so that retention cannot delete the blob between
        // here and the message that names it.
        if !self.touch(&meta.sha256).await? {
            let _ = self.store.delete(&staging).await;
            return Err(UploadError::Store(BlobError::Backend(format!(
                "blob {} is being deleted by retention; finish again shortly",
                meta.sha256
            ))));
        }
        if self.store.stat(&blob_key).await?.is_some() {
            self.store.delete(&staging).await?;
        } else {
            self.store.rename(&staging, &blob_key).await?;
        }
        Ok(())
    }

    /// Moves the data of a finished in-place upload to its blob once its hash is checked (a
    /// mismatch deletes the whole upload): no byte is copied. Sealing it first fences off any
    /// write still under way; the sealed object stays until it is moved, so a finish the server
    /// did not live through, or one that failed, is done again from it. The hash is the one
    /// carried along as the bytes arrived on this node when there is one (`super::running`);
    /// otherwise the sealed bytes are read back through SHA-256. Returns whether they were.
    async fn place_sealed(&self, meta: &UploadMeta) -> Result<bool, UploadError> {
        let (id, blob_key) = (&meta.id, keys::blob(&meta.sha256));
        let sealed = keys::sealed(id);
        match self.store.seal(&keys::data(id), &sealed).await {
            Ok(()) | Err(BlobError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        // Looked at only once sealed: no byte can land in the data after this.
        let running = self.running.digest(id, meta.size);
        let read_back = running.is_none();
        let hashed = match running {
            Some(digest) => match self.store.stat(&sealed).await {
                Ok(Some(m)) => Ok((m.size, digest)),
                Ok(None) => Err(BlobError::NotFound(sealed.clone())),
                Err(e) => Err(e),
            },
            None => self.hash_object(&sealed).await,
        };
        let (stored, actual) = match hashed {
            Ok(h) => h,
            // Moved to its blob by another finish, or by one that stopped after moving it.
            Err(BlobError::NotFound(_)) => return self.found_placed(meta).await.map(|()| false),
            Err(e) => return Err(e.into()),
        };
        if stored != meta.size {
            return Err(UploadError::Store(BlobError::Backend(format!(
                "upload {id}: its data has {stored} bytes of {}",
                meta.size
            ))));
        }
        if actual != meta.sha256 {
            self.remove_all(id).await?;
            return Err(UploadError::HashMismatch {
                expected: meta.sha256.clone(),
                actual,
            });
        }
        // Touched before it is looked for, as in `place_joined`.
        if !self.touch(&meta.sha256).await? {
            return Err(UploadError::Store(BlobError::Backend(format!(
                "blob {} is being deleted by retention; finish again shortly",
                meta.sha256
            ))));
        }
        if self.store.stat(&blob_key).await?.is_some() {
            self.store.delete(&sealed).await?;
            return Ok(read_back);
        }
        match self.store.rename(&sealed, &blob_key).await {
            Ok(()) => Ok(read_back),
            Err(BlobError::NotFound(_)) => self.found_placed(meta).await.map(|()| read_back),
            Err(e) => Err(e.into()),
        }
    }

    /// An in-place upload whose sealed data is gone: finished when its blob is there (touched,
    /// as a finish that made it would), gone otherwise.
    async fn found_placed(&self, meta: &UploadMeta) -> Result<(), UploadError> {
        match self.store.stat(&keys::blob(&meta.sha256)).await? {
            Some(b) if b.size == meta.size => {
                if self.touch(&meta.sha256).await? {
                    Ok(())
                } else {
                    Err(UploadError::Store(BlobError::Backend(format!(
                        "blob {} is being deleted by retention; upload it again",
                        meta.sha256
                    ))))
                }
            }
            _ => Err(UploadError::NotFound),
        }
    }

    /// The size and SHA-256 (lowercase hex) of the object `key`, read as a stream.
    async fn hash_object(&self, key: &str) -> Result<(u64, String), BlobError> {
        let mut s = self.store.get(key, None).await?;
        let mut h = Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = s.next().await {
            let chunk = chunk?;
            n += chunk.len() as u64;
            h.update(&chunk);
        }
        Ok((n, hex(&h.finalize())))
    }

    /// Deletes the upload `id` of `owner` with everything in it.
    pub async fn abort(&self, owner: &str, id: &str) -> Result<(), UploadError> {
        self.open(owner, id).await?;
        self.remove_all(id).await
    }

    /// Deletes every upload none of whose objects changed since `max_age` before `now`
    /// (finished ones too: their description is no longer needed), and what interrupted writes
    /// left behind. Returns how many uploads went. An upload that cannot be looked at is
    /// logged and left for the next sweep.
    pub async fn sweep(&self, now: SystemTime, max_age: Duration) -> Result<u64, UploadError> {
        let cut = now.checked_sub(max_age).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
        for id in self.store.list_dirs(keys::UPLOADS).await? {
            let objects = match self.store.list(&keys::upload(&id)).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(error = %e, upload = %id, "listing an upload failed");
                    continue;
                }
            };
            if objects.iter().any(|o| o.modified >= cut) {
                continue;
            }
            match self.remove_all(&id).await {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(error = %e, upload = %id, "removing an upload failed"),
            }
        }
        self.running.forget_idle(max_age);
        let scratch = self.store.sweep_scratch(cut).await?;
        if scratch > 0 {
            tracing::info!(files = scratch, "left-over temporary files removed");
        }
        Ok(removed)
    }

    /// The upload's offset and the keys of the parts that make it, in order: the chain of parts
    /// from offset 0, each starting where the one before ends. Parts off the chain (written by
    /// a request that lost a race for the same offset) are ignored. An upload written in place
    /// has span markers (`<start>-<end>`, empty) instead of parts holding bytes; each upload
    /// has one kind only, and the other kind is not read.
    async fn chain(&self, meta: &UploadMeta) -> Result<(u64, Vec<String>), BlobError> {
        let mut by_offset = BTreeMap::new();
        for m in self.store.list(&keys::parts(&meta.id)).await? {
            let Some(name) = m.key.rsplit('/').next() else {
                continue;
            };
            let span = match (meta.in_place, name.split_once('-')) {
                (true, Some((start, end))) => start.parse::<u64>().ok().zip(end.parse().ok()),
                (false, None) => name
                    .parse::<u64>()
                    .ok()
                    .map(|start| (start, start + m.size)),
                _ => None,
            };
            if let Some((start, end)) = span.filter(|(start, end)| end > start) {
                by_offset.insert(start, (m.key, end));
            }
        }
        let mut offset = 0u64;
        let mut keys = Vec::new();
        while let Some((key, end)) = by_offset.remove(&offset) {
            keys.push(key);
            offset = end;
        }
        Ok((offset, keys))
    }

    /// Stores the gathered chunks as the part at `at` (nothing when there are none) and returns
    /// the offset after it. In place, the bytes go into the upload's data object and then the
    /// span marker says they are there; meanwhile, when `writing` knows the hash of the bytes
    /// before `at`, another thread carries it over these, and it moves on once they are
    /// stored.
    async fn store_part(
        &self,
        meta: &UploadMeta,
        at: u64,
        held: &mut Vec<Bytes>,
        parts: &mut Vec<String>,
        writing: Option<&mut Writing>,
    ) -> Result<u64, UploadError> {
        if held.is_empty() {
            return Ok(at);
        }
        if parts.len() >= self.limits.max_parts {
            held.clear();
            return Err(UploadError::TooManyParts { offset: at });
        }
        let chunks: Vec<Bytes> = std::mem::take(held);
        let held_len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        let hashing = match (meta.in_place, writing.as_deref()) {
            (true, Some(w)) => w.hash_at(at).map(|mut h| {
                let chunks = chunks.clone();
                tokio::task::spawn_blocking(move || {
                    for c in &chunks {
                        h.update(c);
                    }
                    h
                })
            }),
            _ => None,
        };
        let body: ByteStream = Box::pin(futures_util::stream::iter(chunks.into_iter().map(Ok)));
        if !meta.in_place {
            let key = keys::part(&meta.id, at);
            let n = self.store.put(&key, body).await?;
            parts.push(key);
            return Ok(at + n);
        }
        let n = match self.store.write_at(&keys::data(&meta.id), at, body).await {
            Ok(n) => n,
            Err(BlobError::NotFound(_)) => {
                // `finish` sealed the data (every byte had arrived), or the upload went.
                let now = self.open(&meta.owner, &meta.id).await?;
                return Err(UploadError::Finished { size: now.size });
            }
            Err(e) => return Err(e.into()),
        };
        let key = keys::span(&meta.id, at, at + n);
        if n > 0 {
            self.store.put(&key, once(Bytes::new())).await?;
            parts.push(key);
            if let Some(w) = writing {
                match hashing {
                    Some(task) => match task.await {
                        Ok(h) if n == held_len => w.stored(h, at + n),
                        _ => w.lose(),
                    },
                    None => w.lose(),
                }
            }
        }
        Ok(at + n)
    }

    /// Streams `parts` in order through a SHA-256 into `staging`; returns the bytes stored and
    /// their hash.
    async fn join(&self, parts: &[String], staging: &str) -> Result<(u64, String), BlobError> {
        let hasher = Arc::new(parking_lot::Mutex::new(Sha256::new()));
        let fed = Arc::clone(&hasher);
        let store = Arc::clone(&self.store);
        let bytes = futures_util::stream::iter(parts.to_vec())
            .then(move |key| {
                let store = Arc::clone(&store);
                async move { store.get(&key, None).await }
            })
            .try_flatten()
            .inspect_ok(move |chunk| fed.lock().update(chunk));
        let stored = self.store.put(staging, Box::pin(bytes)).await?;
        let digest = std::mem::take(&mut *hasher.lock()).finalize();
        Ok((stored, hex(&digest)))
    }

    /// Writes a new upload: its data object first when it is written in place (so an upload
    /// that exists has somewhere for its bytes to go), then its description.
    async fn write_new(&self, meta: &UploadMeta) -> Result<(), BlobError> {
        if meta.in_place {
            self.store
                .put(&keys::data(&meta.id), once(Bytes::new()))
                .await?;
        }
        self.write_meta(meta).await
    }

    async fn mark_owner(&self, sha256: &str, owner: &str) -> Result<(), BlobError> {
        let key = keys::owner(sha256, owner);
        if self.store.stat(&key).await?.is_none() {
            self.store.put(&key, once(Bytes::new())).await?;
        }
        Ok(())
    }

    async fn write_meta(&self, meta: &UploadMeta) -> Result<(), BlobError> {
        let json = serde_json::to_vec(meta)
            .map_err(|e| BlobError::Backend(format!("encoding an upload: {e}")))?;
        self.store
            .put(&keys::meta(&meta.id), once(Bytes::from(json)))
            .await?;
        Ok(())
    }

    /// Deletes everything of upload `id`, its description first (so it is gone for clients at
    /// once, and a sweep finds what a failure here leaves).
    async fn remove_all(&self, id: &str) -> Result<(), UploadError> {
        self.running.forget(id);
        self.store.delete(&keys::meta(id)).await?;
        for o in self.store.list(&keys::upload(id)).await? {
            self.store.delete(&o.key).await?;
        }
        self.release_upload(id).await;
        Ok(())
    }

    /// A small object read whole (at most [`META_MAX`] bytes).
    async fn read_small(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        let mut s = self.store.get(key, Some(0..META_MAX as u64)).await?;
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::fs::FsBlobStore;

    fn sha(data: &[u8]) -> String {
        hex(&Sha256::digest(data))
    }

    fn small_limits() -> UploadLimits {
        UploadLimits {
            max_upload_bytes: 1_000,
            max_chunk_bytes: 100,
            part_bytes: 8,
            max_parts: 64,
            body_idle: Duration::from_secs(5),
        }
    }

    fn uploads(dir: &std::path::Path, limits: UploadLimits) -> (Uploads, Arc<dyn BlobStore>) {
        let store: Arc<dyn BlobStore> = Arc::new(FsBlobStore::new(dir));
        (Uploads::new(Arc::clone(&store), limits), store)
    }

    fn body(chunks: &[&[u8]]) -> ByteStream {
        let items: Vec<Result<Bytes, BlobError>> = chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures_util::stream::iter(items))
    }

    async fn start(u: &Uploads, owner: &str, data: &[u8]) -> UploadMeta {
        match u
            .create(owner, data.len() as u64, &sha(data), "text/plain")
            .await
            .expect("create")
        {
            Created::Started(m) => m,
            other => panic!("expected a new upload, got {other:?}"),
        }
    }

    async fn read_all(store: &Arc<dyn BlobStore>, key: &str) -> Vec<u8> {
        let chunks: Vec<Bytes> = store
            .get(key, None)
            .await
            .expect("get")
            .try_collect()
            .await
            .expect("read");
        chunks.concat()
    }

    #[tokio::test]
    async fn an_upload_in_several_requests_and_parts_becomes_its_blob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (u, store) = uploads(dir.path(), small_limits());
        let data: Vec<u8> = (0..50u8).collect();
        let m = start(&u, "alice", &data).await;
        assert_eq!(u.status("alice", &m.id).await.expect("status").1, 0);
        let a = u
            .append(
                "alice",
                &m.id,
                0,
                body(&[&data[..5], &data[5..10], &data[10..15], &data[15..20]]),
                Some(20),
            )
            .await
            .expect("append");
        assert_eq!(
            a,
            Appended {
                offset: 20,
                stored: 20
            }
        );
        let a = u
            .append("alice", &m.id, 20, body(&[&data[20..]]), None)
            .await
            .expect("append");
        assert_eq!(a.offset, 50);
        assert!(
            store.list(&keys::parts(&m.id)).await.expect("parts").len() > 2,
            "a body larger than part_bytes is stored in several parts"
        );
        let f = u.finish("alice", &m.id).await.expect("finish");
        assert_eq!(
            f,
            Finished {
                blob: sha(&data),
                size: 50,
                replayed: false,
                read_back: false,
            }
        );
        assert_eq!(read_all(&store, &keys::blob(&f.blob)).await, data);
        assert!(store
            .stat(&keys::owner(&f.blob, "alice"))
            .await
            .expect("stat")
            .is_some());
        assert_eq!(store.list(&keys::parts(&m.id)).await, Ok(vec![]));
        // Finishing again answers the same; more bytes are refused.
        assert_eq!(
            u.finish("alice", &m.id).await,
            Ok(Finished {
                replayed: true,
                ..f
            })
        );
        assert_eq!(
            u.append("alice", &m.id, 50, body(&[b"x"]), None).await,
            Err(UploadError::Finished { size: 50 })
        );
    }

    #[tokio::test]
    async fn offsets_are_checked_and_limits_hold_before_storing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (u, store) = uploads(dir.path(), small_limits());
        let data = [7u8; 300];
        let m = start(&u, "alice", &data).await;
        assert_eq!(
            u.append("alice", &m.id, 3, body(&[b"abc"]), None).await,
            Err(UploadError::WrongOffset {
                given: 3,
                current: 0
            })
        );
        assert_eq!(
            u.append("alice", &m.id, 0, body(&[&data[..101]]), Some(101))
                .await,
            Err(UploadError::ChunkTooLarge {
                offset: 0,
                limit: 100
            })
        );
        // Without a declared length the cap is found while reading.
        assert_eq!(
            u.append(
                "alice",
                &m.id,
                0,
                body(&[&data[..60], &data[60..120]]),
                None
            )
            .await,
            Err(UploadError::ChunkTooLarge {
                offset: 60,
                limit: 100
            })
        );
        let (_, offset) = u.status("alice", &m.id).await.expect("status");
        assert_eq!(offset, 60, "parts stored before the excess stay");
        u.append("alice", &m.id, 60, body(&[&data[60..160]]), None)
            .await
            .expect("append");
        u.append("alice", &m.id, 160, body(&[&data[160..260]]), None)
            .await
            .expect("append");
        assert_eq!(
            u.append("alice", &m.id, 260, body(&[&[0u8; 41][..]]), Some(41))
                .await,
            Err(UploadError::PastSize {
                offset: 260,
                size: 300
            })
        );
        assert_eq!(
            u.append(
                "alice",
                &m.id,
                260,
                body(&[&[0u8; 30][..], &[0u8; 11][..]]),
                None
            )
            .await,
            Err(UploadError::PastSize {
                offset: 290,
                size: 300
            })
        );
        assert_eq!(
            u.create("alice", 1_001, &sha(b"x"), "image/png").await,
            Err(UploadError::TooLarge { limit: 1_000 })
        );
        assert!(matches!(
            u.create("alice", 1, &sha(b"x"), "no type").await,
            Err(UploadError::Invalid(_))
        ));
        assert_eq!(
            u.finish("alice", &m.id).await,
            Err(UploadError::Incomplete {
                offset: 290,
                size: 300
            })
        );
        assert!(store
            .stat(&keys::blob(&m.sha256))
            .await
            .expect("stat")
            .is_none());
    }

    #[tokio::test]
    async fn a_broken_body_keeps_what_arrived() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (u, _) = uploads(dir.path(), small_limits());
        let data: Vec<u8> = (0..40u8).collect();
        let m = start(&u, "alice", &data).await;
        let items: Vec<Result<Bytes, BlobError>> = vec![
            Ok(Bytes::copy_from_slice(&data[..13])),
            Ok(Bytes::copy_from_slice(&data[13..17])),
            Err(BlobError::Source("connection reset".into())),
        ];
        assert_eq!(
            u.append(
                "alice",
                &m.id,
                0,
                Box::pin(futures_util::stream::iter(items)),
                Some(40)
            )
            .await,
            Err(UploadError::Interrupted {
                offset: 17,
                reason: "connection reset".into()
            })
        );
        u.append("alice", &m.id, 17, body(&[&data[17..]]), None)
            .await
            .expect("resume");
        assert_eq!(u.finish("alice", &m.id).await.expect("finish").size, 40);
    }

    #[tokio::test]
    async fn a_stalled_body_is_cut_and_keeps_what_arrived() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = UploadLimits {
            body_idle: Duration::from_millis(50),
            ..small_limits()
        };
        let (u, _) = uploads(dir.path(), limits);
        let m = start(&u, "alice", b"0123456789").await;
        let stalled = futures_util::stream::iter([Ok(Bytes::from_static(b"0123"))])
            .chain(futures_util::stream::pending());
        let r = u.append("alice", &m.id, 0, Box::pin(stalled), None).await;
        assert!(
            matches!(r, Err(UploadError::Interrupted { offset: 4, .. })),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn a_hash_mismatch_keeps_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (u, store) = uploads(dir.path(), small_limits());
        let m = start(&u, "alice", b"the declared bytes").await;
        u.append(
            "alice",
            &m.id,
            0,
            body(&[b"other bytes, same len"[..18].as_ref()]),
            None,
        )
        .await
        .expect("append");
        let r = u.finish("alice", &m.id).await;
        assert!(matches!(r, Err(UploadError::HashMismatch { .. })), "{r:?}");
        assert_eq!(store.list("").await.expect("list"), vec![], "nothing kept");
        assert_eq!(u.status("alice", &m.id).await, Err(UploadError::NotFound));
    }

    #[tokio::test]
    async fn a_held_blob_needs_no_bytes_and_uploads_are_their_owners_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (u, store) = uploads(dir.path(), small_limits());
        let data = b"shared picture";
        let m = start(&u, "alice", data).await;
        assert_eq!(u.status("bob", &m.id).await, Err(UploadError::NotFound));
        assert_eq!(
            u.append("bob", &m.id, 0, body(&[data]), None).await,
            Err(UploadError::NotFound)
        );
        assert_eq!(u.finish("bob", &m.id).await, Err(UploadError::NotFound));
        assert_eq!(u.abort("bob", &m.id).await, Err(UploadError::NotFound));
        assert_eq!(
            u.status("alice", "../../etc").await,
            Err(UploadError::NotFound)
        );
        u.append("alice", &m.id, 0, body(&[data]), None)
            .await
            .expect("append");
        u.finish("alice", &m.id).await.expect("finish");

        let held = u
            .create("bob", data.len() as u64, &sha(data), "image/png")
            .await
            .expect("create");
        assert_eq!(
            held,
            Created::Held {
                blob: sha(data),
                size: data.len() as u64
            }
        );
        assert!(store
            .stat(&keys::owner(&sha(data), "bob"))
            .await
            .expect("stat")
            .is_some());
        assert_eq!(
            u.create("carol", 3, &sha(data), "image/png").await,
            Err(UploadError::SizeMismatch { size: 3 })
        );
        assert!(store
            .stat(&keys::owner(&sha(data), "carol"))
            .await
            .expect("stat")
            .is_none());
    }

    #[tokio::test]
    async fn an_empty_blob_finishes_without_a_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (u, store) = uploads(dir.path(), small_limits());
        let m = start(&u, "alice", b"").await;
        let f = u.finish("alice", &m.id).await.expect("finish");
        assert_eq!(f.size, 0);
        assert_eq!(read_all(&store, &keys::blob(&f.blob)).await, b"");
    }

    /// The file store, but writing uploads one object per part as an object store does.
    #[derive(Debug)]
    struct PartsOnly(FsBlobStore);

    #[async_trait::async_trait]
    impl BlobStore for PartsOnly {
        async fn put(&self, key: &str, body: ByteStream) -> Result<u64, BlobError> {
            self.0.put(key, body).await
        }
        async fn get(
            &self,
            key: &str,
            range: Option<std::ops::Range<u64>>,
        ) -> Result<ByteStream, BlobError> {
            self.0.get(key, range).await
        }
        async fn stat(&self, key: &str) -> Result<Option<super::super::ObjectMeta>, BlobError> {
            self.0.stat(key).await
        }
        async fn delete(&self, key: &str) -> Result<(), BlobError> {
            self.0.delete(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<super::super::ObjectMeta>, BlobError> {
            self.0.list(prefix).await
        }
        async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
            self.0.list_dirs(prefix).await
        }
        async fn rename(&self, from: &str, to: &str) -> Result<(), BlobError> {
            self.0.rename(from, to).await
        }
        fn kind(&self) -> &'static str {
            "parts-only"
        }
    }

    fn parts_only(dir: &std::path::Path) -> (Uploads, Arc<dyn BlobStore>) {
        let store: Arc<dyn BlobStore> = Arc::new(PartsOnly(FsBlobStore::new(dir)));
        (Uploads::new(Arc::clone(&store), small_limits()), store)
    }

    #[tokio::test]
    async fn on_a_store_of_parts_an_upload_is_joined_into_its_blob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (u, store) = parts_only(dir.path());
        let data: Vec<u8> = (0..50u8).collect();
        let m = start(&u, "alice", &data).await;
        assert!(!m.in_place);
        let three = body(&[&data[..10], &data[10..20], &data[20..30]]);
        u.append("alice", &m.id, 0, three, None)
            .await
            .expect("append");
        assert_eq!(u.status("alice", &m.id).await.expect("status").1, 30);
        assert!(store
            .stat(&keys::data(&m.id))
            .await
            .expect("stat")
            .is_none());
        let parts = store.list(&keys::parts(&m.id)).await.expect("parts");
        assert_eq!(parts.len(), 3, "three chunks past the part size: {parts:?}");
        assert!(parts.iter().all(|p| p.size > 0));
        u.append("alice", &m.id, 30, body(&[&data[30..]]), None)
            .await
            .expect("append");
        let f = u.finish("alice", &m.id).await.expect("finish");
        assert_eq!(read_all(&store, &keys::blob(&f.blob)).await, data);
        assert_eq!(store.list(&keys::parts(&m.id)).await, Ok(vec![]));
    }

    #[tokio::test]
    async fn a_part_written_twice_at_one_offset_leaves_one_chain() {
        // Two requests raced for offset 0 (two nodes); the chain follows the part that stayed.
        let dir = tempfile::tempdir().expect("tempdir");
        let (u, store) = parts_only(dir.path());
        let data = b"abcdefgh";
        let m = start(&u, "alice", data).await;
        store
            .put(&keys::part(&m.id, 0), once(Bytes::from_static(b"abc")))
            .await
            .expect("put");
        store
            .put(&keys::part(&m.id, 5), once(Bytes::from_static(b"XYZ")))
            .await
            .expect("an orphan part");
        assert_eq!(u.status("alice", &m.id).await.expect("status").1, 3);
        u.append("alice", &m.id, 3, body(&[b"defgh"]), None)
            .await
            .expect("append");
        assert_eq!(
            u.finish("alice", &m.id).await.expect("finish").blob,
            sha(data)
        );
    }

    #[tokio::test]
    async fn in_place_the_chain_follows_span_markers_and_ignores_other_parts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (u, store) = uploads(dir.path(), small_limits());
        let data = b"abcdefgh";
        let m = start(&u, "alice", data).await;
        assert!(m.in_place);
        u.append("alice", &m.id, 0, body(&[b"abc"]), None)
            .await
            .expect("append");
        // A part holding bytes (the other kind) and a span off the chain count for nothing.
        store
            .put(&keys::part(&m.id, 3), once(Bytes::from_static(b"def")))
            .await
            .expect("put");
        store
            .put(&keys::span(&m.id, 5, 8), once(Bytes::new()))
            .await
            .expect("put");
        assert_eq!(u.status("alice", &m.id).await.expect("status").1, 3);
        assert_eq!(
            u.finish("alice", &m.id).await,
            Err(UploadError::Incomplete { offset: 3, size: 8 })
        );
        u.append("alice", &m.id, 3, body(&[b"defgh"]), None)
            .await
            .expect("append");
        assert_eq!(
            read_all(&store, &keys::data(&m.id)).await,
            data,
            "the bytes are in the one data object"
        );
        let f = u.finish("alice", &m.id).await.expect("finish");
        assert_eq!(read_all(&store, &keys::blob(&f.blob)).await, data);
        assert!(store
            .stat(&keys::data(&m.id))
            .await
            .expect("stat")
            .is_none());
        assert!(store
            .stat(&keys::sealed(&m.id))
            .await
            .expect("stat")
            .is_none());
    }

    #[tokio::test]
    async fn in_place_a_write_after_the_seal_lands_nowhere() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (u, store) = uploads(dir.path(), small_limits());
        let data = b"sealed bytes";
        let m = start(&u, "alice", data).await;
        u.append("alice", &m.id, 0, body(&[data]), None)
            .await
            .expect("append");
        let f = u.finish("alice", &m.id).await.expect("finish");
        // A request for offset 0 that passed its check before the finish writes only now.
        assert_eq!(
            store
                .write_at(&keys::data(&m.id), 0, once(Bytes::from_static(b"XXXX")))
                .await,
            Err(BlobError::NotFound(keys::data(&m.id)))
        );
        assert_eq!(read_all(&store, &keys::blob(&f.blob)).await, data);
        // Through the upload, the same write is told the upload is finished.
        let mut held = vec![Bytes::from_static(b"XXXX")];
        let mut parts = Vec::new();
        assert_eq!(
            u.store_part(&m, 0, &mut held, &mut parts, None).await,
            Err(UploadError::Finished { size: 12 })
        );
    }

    #[tokio::test]
    async fn in_place_a_finish_cut_short_is_done_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (u, store) = uploads(dir.path(), small_limits());
        let data = b"finish me twice";
        // Stopped after sealing: the sealed data is hashed and moved by the next finish.
        let m = start(&u, "alice", data).await;
        u.append("alice", &m.id, 0, body(&[data]), None)
            .await
            .expect("append");
        store
            .seal(&keys::data(&m.id), &keys::sealed(&m.id))
            .await
            .expect("seal");
        assert_eq!(u.status("alice", &m.id).await.expect("status").1, 15);
        let f = u.finish("alice", &m.id).await.expect("finish");
        assert_eq!(read_all(&store, &keys::blob(&f.blob)).await, data);

        // Stopped after moving the blob, before the upload was marked finished.
        let m = start(&u, "bob", b"another file").await;
        u.append("bob", &m.id, 0, body(&[b"another file"]), None)
            .await
            .expect("append");
        store
            .seal(&keys::data(&m.id), &keys::sealed(&m.id))
            .await
            .expect("seal");
        store
            .rename(&keys::sealed(&m.id), &keys::blob(&m.sha256))
            .await
            .expect("rename");
        let f = u.finish("bob", &m.id).await.expect("finish");
        assert_eq!(
            read_all(&store, &keys::blob(&f.blob)).await,
            b"another file"
        );
        assert!(store
            .stat(&keys::owner(&f.blob, "bob"))
            .await
            .expect("stat")
            .is_some());

        // The sealed data of a wrong hash: nothing kept.
        let m = start(&u, "carol", b"declared").await;
        u.append("carol", &m.id, 0, body(&[b"DECLARED"]), None)
            .await
            .expect("append");
        store
            .seal(&keys::data(&m.id), &keys::sealed(&m.id))
            .await
            .expect("seal");
        assert!(matches!(
            u.finish("carol", &m.id).await,
            Err(UploadError::HashMismatch { .. })
        ));
        assert_eq!(store.list(&keys::upload(&m.id)).await, Ok(vec![]));
    }

    #[tokio::test]
    async fn in_place_the_hash_arrives_with_the_bytes_and_finish_reads_nothing_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (u, store) = uploads(dir.path(), small_limits());
        let data: Vec<u8> = (0..90u8).collect();
        let m = start(&u, "alice", &data).await;
        // Several requests, each stored in several parts, one broken off half way.
        u.append("alice", &m.id, 0, body(&[&data[..30]]), None)
            .await
            .expect("append");
        let broken: Vec<Result<Bytes, BlobError>> = vec![
            Ok(Bytes::copy_from_slice(&data[30..41])),
            Err(BlobError::Source("connection reset".into())),
        ];
        let r = u
            .append(
                "alice",
                &m.id,
                30,
                Box::pin(futures_util::stream::iter(broken)),
                None,
            )
            .await;
        assert!(
            matches!(r, Err(UploadError::Interrupted { offset: 41, .. })),
            "{r:?}"
        );
        u.append("alice", &m.id, 41, body(&[&data[41..]]), None)
            .await
            .expect("append");
        assert_eq!(u.running.digest(&m.id, 90), Some(sha(&data)));
        let f = u.finish("alice", &m.id).await.expect("finish");
        assert!(!f.read_back, "the running hash was used");
        assert_eq!(read_all(&store, &keys::blob(&f.blob)).await, data);
        assert!(u.running.is_empty(), "forgotten once finished");
    }

    #[tokio::test]
    async fn in_place_a_wrong_running_hash_keeps_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (u, store) = uploads(dir.path(), small_limits());
        let m = start(&u, "alice", b"the declared bytes").await;
        u.append("alice", &m.id, 0, body(&[b"the declared", b" BYTES"]), None)
            .await
            .expect("append");
        assert!(u.running.digest(&m.id, 18).is_some());
        let r = u.finish("alice", &m.id).await;
        assert_eq!(
            r,
            Err(UploadError::HashMismatch {
                expected: sha(b"the declared bytes"),
                actual: sha(b"the declared BYTES"),
            })
        );
        assert_eq!(store.list("").await.expect("list"), vec![], "nothing kept");
        assert!(u.running.is_empty());
    }

    #[tokio::test]
    async fn in_place_an_upload_that_outlived_its_node_is_read_back() {
        // A node restarted (or another one) has no running hash: finish reads the bytes.
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, store) = uploads(dir.path(), small_limits());
        let data = b"resumed after a restart";
        let m = start(&first, "alice", data).await;
        first
            .append("alice", &m.id, 0, body(&[&data[..10]]), None)
            .await
            .expect("append");
        let (second, _) = uploads(dir.path(), small_limits());
        second
            .append("alice", &m.id, 10, body(&[&data[10..]]), None)
            .await
            .expect("append");
        assert!(second.running.is_empty(), "no hash from the middle");
        let f = second.finish("alice", &m.id).await.expect("finish");
        assert!(f.read_back);
        assert_eq!(read_all(&store, &keys::blob(&f.blob)).await, data);

        // Its bytes wrong: 422 and nothing kept, as ever.
        let declared = b"bob's file, resumed too";
        let m = start(&first, "bob", declared).await;
        first
            .append("bob", &m.id, 0, body(&[&declared[..10]]), None)
            .await
            .expect("append");
        second
            .append("bob", &m.id, 10, body(&[b"RESUMED TOO!!"]), None)
            .await
            .expect("append");
        // Finished on the first node, whose hash stops at 10.
        assert!(matches!(
            first.finish("bob", &m.id).await,
            Err(UploadError::HashMismatch { .. })
        ));
        assert_eq!(store.list(&keys::upload(&m.id)).await, Ok(vec![]));
        assert!(store
            .stat(&keys::blob(&sha(declared)))
            .await
            .expect("stat")
            .is_none());
        // Forgotten with it (alice's, finished on the other node, waits for the sweep).
        assert_eq!(first.running.digest(&m.id, 10), None);
        assert_eq!(first.running.len(), 1);
    }

    #[tokio::test]
    async fn in_place_two_requests_at_once_make_finish_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (u, store) = uploads(dir.path(), small_limits());
        let data: Vec<u8> = (0..40u8).collect();
        let m = start(&u, "alice", &data).await;
        // The first request stalls after its first part (a client that gave up on it); the
        // client asks the offset and sends the rest in a second one while the first is open.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, BlobError>>();
        tx.send(Ok(Bytes::copy_from_slice(&data[..8])))
            .expect("send");
        let slow = {
            let u = u.clone();
            let id = m.id.clone();
            tokio::spawn(async move {
                let s = tokio_stream_of(rx);
                u.append("alice", &id, 0, s, None).await
            })
        };
        // Wait until the first part of the slow one is stored.
        for _ in 0..200 {
            if u.status("alice", &m.id).await.expect("status").1 == 8 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(u.status("alice", &m.id).await.expect("status").1, 8);
        u.append("alice", &m.id, 8, body(&[&data[8..]]), None)
            .await
            .expect("the second request");
        drop(tx);
        let first = slow.await.expect("task").expect("the first request");
        assert_eq!(first.offset, 8);
        let f = u.finish("alice", &m.id).await.expect("finish");
        assert!(f.read_back, "two appends overlapped: no running hash");
        assert_eq!(read_all(&store, &keys::blob(&f.blob)).await, data);
    }

    /// A body fed by a channel.
    fn tokio_stream_of(
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Result<Bytes, BlobError>>,
    ) -> ByteStream {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }

    #[tokio::test]
    async fn abort_and_sweep_delete_uploads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (u, store) = uploads(dir.path(), small_limits());
        let a = start(&u, "alice", b"first").await;
        let b = start(&u, "alice", b"second").await;
        u.append("alice", &b.id, 0, body(&[b"sec"]), None)
            .await
            .expect("append");
        u.abort("alice", &a.id).await.expect("abort");
        assert_eq!(u.status("alice", &a.id).await, Err(UploadError::NotFound));

        let now = SystemTime::now();
        assert_eq!(u.sweep(now, Duration::from_secs(3600)).await, Ok(0));
        assert_eq!(u.status("alice", &b.id).await.expect("kept").1, 3);
        let later = now + Duration::from_secs(7200);
        assert_eq!(u.sweep(later, Duration::from_secs(3600)).await, Ok(1));
        assert_eq!(u.status("alice", &b.id).await, Err(UploadError::NotFound));
        assert_eq!(store.list(keys::UPLOADS).await, Ok(vec![]));
    }
}
