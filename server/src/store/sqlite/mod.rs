//! The embedded SQLite store, the default [`Store`].
//!
//! One database file in WAL mode, with two kinds of connections:
//!
//! - **one writer**, owned by a dedicated OS thread (`writer.rs`). Every change is a job sent to
//!   it over a channel; it commits whatever is queued as one group (one `BEGIN IMMEDIATE` … one
//!   `COMMIT`), each job in its own savepoint so that a failing write changes nothing and does not
//!   disturb the others. Having exactly one writer is what makes room sequence numbers gap-free
//!   without any locking in Rust: a room's head is the largest seq of its events, read and
//!   extended inside the transaction.
//! - **a pool of read-only readers** (`pool.rs`), used from `spawn_blocking`. In WAL mode they
//!   read a consistent snapshot and never wait for the writer.
//!
//! The other files each hold one concern: `schema.rs` opens connections and migrates,
//! `read.rs` holds every query (`&Connection`), `apply.rs` the SQL of every change
//! (`&Transaction`, as the shared write engine asks for it), `rows.rs` the row mappers. Every
//! SQL value is a bound parameter.
//!
//! A message is stored as its events: its `message_created` row as sent (blanked once deleted)
//! and its newest `message_edited` row, if any, as it is now; the send's idempotency key is
//! kept on the creation's row (see `migrations/0006_lean_commit.sql`). A durable message
//! commit writes about five WAL pages, six where push gateways are configured (its push job).
//!
//! Deleted rooms keep their `rooms` row (with `deleted_at`, hidden from every read) and their
//! events, so recovery still delivers `room_deleted` and the name is never reused.
//!
//! ```no_run
//! # async fn demo() -> roam_server::store::StoreResult<()> {
//! use roam_server::store::{sqlite::SqliteStore, Store};
//!
//! let store = SqliteStore::open(std::path::Path::new("data/roam.db"), 4).await?;
//! store.ping().await?;
//! # Ok(()) }
//! ```

mod admin;
mod apply;
pub mod backup;
mod blobs;
mod collab;
mod pool;
mod push;
mod read;
mod rows;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::BoxFuture;

use roam_proto::{
    ActivityBucket, Document, Invitation, Member, Message, Notification, Page, ReadMarker, Room,
    RoomEvent, User,
};

use self::pool::ReaderPool;
use self::writer::{Job, Writer};
use crate::store::{
    Bounded, Committed, MessageCursor, NotificationQuery, Period, PoolStats, Purged,
    RetentionCutoffs, RoomQuery, Store, StoreError, StoreResult, StoredResult, UserQuery, Write,
};

/// The SQLite [`Store`]. Cheap to share behind an `Arc`; dropping it finishes the queued writes
/// and closes the database.
pub struct SqliteStore {
    path: PathBuf,
    /// A shared lock on [`lock_path`] for as long as the store is open: a restore takes it
    /// exclusively, so it never replaces a database a server has open.
    _in_use: std::fs::File,
    readers: Arc<ReaderPool>,
    writer: Writer,
    synchronous: Synchronous,
}

pub use self::schema::Synchronous;

/// A group commit that has not finished in this long makes the store not ready: the largest
/// group (imports included, see `--import-inflight-mb`) takes well under a second here.
const STUCK_WRITER: std::time::Duration = std::time::Duration::from_secs(10);

// Shared with the Postgres store, so both answer cursors, searches and event data alike.
pub(in crate::store) use self::read::{decode_cursor, encode_cursor, like_pattern};

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("pool", &self.pool_stats())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) and migrates the database at `path`,
    /// with `readers` read-only connections (at least one) and `synchronous=FULL`.
    pub async fn open(path: &Path, readers: u32) -> StoreResult<SqliteStore> {
        Self::open_with(path, readers, Synchronous::Full).await
    }

    /// [`SqliteStore::open`] with the writer's `synchronous` mode.
    pub async fn open_with(
        path: &Path,
        readers: u32,
        sync: Synchronous,
    ) -> StoreResult<SqliteStore> {
        let path = path.to_path_buf();
        let opened = path.clone();
        let ((writer_conn, synchronous), reader_conns, in_use) =
            tokio::task::spawn_blocking(move || {
                if let Some(dir) = opened.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Backend(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                let in_use = take_lock(&opened, false)?.ok_or_else(|| {
                    StoreError::Backend(format!(
                        "{} is being restored: try again when the restore is done",
                        opened.display()
                    ))
                })?;
                let writer = schema::open_writer(&opened, sync)?;
                let readers = (0..readers.max(1))
                    .map(|_| schema::open_reader(&opened))
                    .collect::<StoreResult<Vec<_>>>()?;
                Ok::<_, StoreError>((writer, readers, in_use))
            })
            .await
            .map_err(|e| StoreError::Backend(format!("opening the store failed: {e}")))??;
        tracing::info!(
            path = %path.display(),
            readers = reader_conns.len(),
            ?synchronous,
            "store: SQLite opened"
        );
        Ok(SqliteStore {
            path,
            _in_use: in_use,
            readers: ReaderPool::new(reader_conns),
            writer: Writer::start(writer_conn)?,
            synchronous,
        })
    }

    /// The writer's `synchronous` mode, as SQLite reported it after opening.
    pub fn synchronous(&self) -> Synchronous {
        self.synchronous
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs a change to the attachment accounts on the writer.
    async fn blob_write(&self, op: blobs::Op) -> StoreResult<blobs::Answer> {
        self.writer.submit(|reply| Job::Blob(op, reply)).await
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> StoreResult<T> + Send + 'static,
    {
        self.readers.read(f).await
    }
}

/// How long [`Store::scrub`] waits for the writer's group in progress and for readers.
const SCRUB_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The lock file beside a database: every open store holds it shared, a restore exclusively.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the lock of `db` (exclusive or shared) without waiting: `None` when another holder
/// keeps it from being taken.
pub fn take_lock(db: &Path, exclusive: bool) -> StoreResult<Option<std::fs::File>> {
    let path = lock_path(db);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
    let taken = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match taken {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::Backend(format!("{}: {e}", path.display())))
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn commit(&self, write: Write) -> BoxFuture<'static, StoreResult<Committed>> {
        Box::pin(
            self.writer
                .submit(|reply| Job::Commit(Box::new(write), reply)),
        )
    }

    async fn idempotent_result(&self, user: &str, key: &str) -> StoreResult<Option<StoredResult>> {
        // A primary-key probe made before every mutation: on the calling thread (see
        // `ReaderPool::read_point`).
        let (user, key) = (user.to_owned(), key.to_owned());
        self.readers
            .read_point(move |c| read::idempotent_result(c, &user, &key))
            .await
    }

    async fn touch_user(&self, user: &str, now: i64) -> StoreResult<()> {
        let user = user.to_owned();
        self.writer
            .submit(|reply| Job::TouchUser { user, now, reply })
            .await
    }

    async fn room(&self, name: &str) -> StoreResult<Option<Room>> {
        let name = name.to_owned();
        self.read(move |c| read::room(c, &name)).await
    }

    async fn member(&self, room: &str, user: &str) -> StoreResult<Option<Member>> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.read(move |c| read::member(c, &room, &user)).await
    }

    async fn list_rooms(&self, viewer: &str, q: &RoomQuery) -> StoreResult<Bounded<Room>> {
        let (viewer, q) = (viewer.to_owned(), q.clone());
        self.read(move |c| read::list_rooms(c, &viewer, &q)).await
    }

    async fn list_members(
        &self,
        room: &str,
        after_user: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Member>> {
        let (room, after) = (room.to_owned(), after_user.map(str::to_owned));
        self.read(move |c| read::list_members(c, &room, after.as_deref(), limit))
            .await
    }

    async fn rooms_of(&self, user: &str) -> StoreResult<Vec<String>> {
        let user = user.to_owned();
        self.read(move |c| read::rooms_of(c, &user)).await
    }

    async fn invitation(&self, id: &str, now: i64) -> StoreResult<Option<Invitation>> {
        let id = id.to_owned();
        self.read(move |c| read::invitation(c, &id, now)).await
    }

    async fn pending_invitation(
        &self,
        room: &str,
        user: &str,
        now: i64,
    ) -> StoreResult<Option<Invitation>> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.read(move |c| read::pending_invitation(c, &room, &user, now))
            .await
    }

    async fn invitations_for(
        &self,
        user: &str,
        now: i64,
        limit: u32,
    ) -> StoreResult<Vec<Invitation>> {
        let user = user.to_owned();
        self.read(move |c| read::invitations_for(c, &user, now, limit))
            .await
    }

    async fn room_invitations(
        &self,
        room: &str,
        now: i64,
        limit: u32,
    ) -> StoreResult<Vec<Invitation>> {
        let room = room.to_owned();
        self.read(move |c| read::room_invitations(c, &room, now, limit))
            .await
    }

    async fn message(&self, room: &str, id: &str) -> StoreResult<Option<Message>> {
        let (room, id) = (room.to_owned(), id.to_owned());
        self.read(move |c| read::message(c, &room, &id)).await
    }

    async fn messages(
        &self,
        room: &str,
        cursor: MessageCursor,
        limit: u32,
    ) -> StoreResult<Bounded<Message>> {
        let room = room.to_owned();
        self.read(move |c| read::messages(c, &room, cursor, limit))
            .await
    }

    async fn events_after(
        &self,
        room: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<RoomEvent>> {
        let room = room.to_owned();
        self.read(move |c| read::events_after(c, &room, after, limit))
            .await
    }

    async fn event_bounds(&self, room: &str) -> StoreResult<(u64, u64)> {
        let room = room.to_owned();
        self.read(move |c| read::event_bounds(c, &room)).await
    }

    async fn collab_doc(
        &self,
        room: &str,
        doc: &str,
    ) -> StoreResult<Option<crate::store::CollabStored>> {
        let (room, doc) = (room.to_owned(), doc.to_owned());
        self.read(move |c| {
            // One read transaction: the snapshot and the log after it agree.
            c.execute_batch("BEGIN")?;
            let r = collab::stored(c, &room, &doc);
            c.execute_batch("COMMIT")?;
            r
        })
        .await
    }

    async fn collab_updates(
        &self,
        room: &str,
        doc: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<crate::store::CollabLogEntry>> {
        let (room, doc) = (room.to_owned(), doc.to_owned());
        self.read(move |c| collab::page(c, &room, &doc, after, limit))
            .await
    }

    async fn document(&self, room: &str, doc: &str) -> StoreResult<Option<Document>> {
        let (room, doc) = (room.to_owned(), doc.to_owned());
        self.read(move |c| read::document(c, &room, &doc)).await
    }

    async fn documents(
        &self,
        room: &str,
        after_doc: Option<&str>,
        limit: u32,
    ) -> StoreResult<Bounded<Document>> {
        let (room, after) = (room.to_owned(), after_doc.map(str::to_owned));
        self.read(move |c| read::documents(c, &room, after.as_deref(), limit))
            .await
    }

    async fn document_history(
        &self,
        room: &str,
        doc: &str,
        before: u64,
        limit: u32,
    ) -> StoreResult<Bounded<Document>> {
        let (room, doc) = (room.to_owned(), doc.to_owned());
        self.read(move |c| read::document_history(c, &room, &doc, before, limit))
            .await
    }

    async fn notifications(
        &self,
        user: &str,
        q: &NotificationQuery,
    ) -> StoreResult<Vec<Notification>> {
        let (user, q) = (user.to_owned(), *q);
        self.read(move |c| read::notifications(c, &user, &q)).await
    }

    async fn unread_count(&self, user: &str) -> StoreResult<u64> {
        let user = user.to_owned();
        self.read(move |c| read::unread_count(c, &user)).await
    }

    async fn read_markers(&self, user: &str) -> StoreResult<Vec<ReadMarker>> {
        let user = user.to_owned();
        self.read(move |c| read::read_markers(c, &user)).await
    }

    async fn save_last_seen(&self, user: &str, at: i64) -> StoreResult<()> {
        let user = user.to_owned();
        self.writer
            .submit(|reply| Job::SaveLastSeen { user, at, reply })
            .await
    }

    async fn last_seen(&self, users: &[String]) -> StoreResult<Vec<(String, i64)>> {
        let users = users.to_vec();
        self.read(move |c| read::last_seen(c, &users)).await
    }

    async fn blob_shared_with(&self, user: &str, blob: &str) -> StoreResult<bool> {
        let (user, blob) = (user.to_owned(), blob.to_owned());
        self.read(move |c| read::blob_shared_with(c, &user, &blob))
            .await
    }

    async fn blob_in_use(&self, blob: &str) -> StoreResult<bool> {
        let blob = blob.to_owned();
        self.read(move |c| read::blob_in_use(c, &blob)).await
    }

    async fn charge_blob_bytes(
        &self,
        owner: &str,
        item: &str,
        bytes: u64,
        limit: u64,
    ) -> StoreResult<crate::store::Charge> {
        let op = blobs::Op::Charge {
            owner: owner.to_owned(),
            item: item.to_owned(),
            bytes,
            limit,
        };
        match self.blob_write(op).await? {
            blobs::Answer::Charge(c) => Ok(c),
            blobs::Answer::Changed(_) => {
                Err(StoreError::Backend("a charge answered a count".into()))
            }
        }
    }

    async fn release_blob_bytes(&self, item: &str) -> StoreResult<()> {
        let item = item.to_owned();
        self.blob_write(blobs::Op::Release { item }).await.map(drop)
    }

    async fn blob_bytes_used(&self, owner: &str) -> StoreResult<u64> {
        let owner = owner.to_owned();
        self.read(move |c| blobs::used(c, &owner)).await
    }

    async fn touch_blob(&self, blob: &str, now: i64, doomed_after: i64) -> StoreResult<bool> {
        let blob = blob.to_owned();
        let op = blobs::Op::Touch {
            blob,
            now,
            doomed_after,
        };
        Ok(self.blob_write(op).await? == blobs::Answer::Changed(true))
    }

    async fn doom_blob(&self, blob: &str, now: i64, untouched_since: i64) -> StoreResult<bool> {
        let blob = blob.to_owned();
        let op = blobs::Op::Doom {
            blob,
            now,
            untouched_since,
        };
        Ok(self.blob_write(op).await? == blobs::Answer::Changed(true))
    }

    async fn forget_blob(&self, blob: &str) -> StoreResult<()> {
        let blob = blob.to_owned();
        self.blob_write(blobs::Op::Forget { blob }).await.map(drop)
    }

    async fn co_members(&self, viewer: &str, users: &[String]) -> StoreResult<Vec<String>> {
        let (viewer, users) = (viewer.to_owned(), users.to_vec());
        self.read(move |c| read::co_members(c, &viewer, &users))
            .await
    }

    async fn search_users(&self, q: &UserQuery) -> StoreResult<Page<User>> {
        let q = q.clone();
        self.read(move |c| read::search_users(c, &q)).await
    }

    async fn room_activity(
        &self,
        room: &str,
        period: Period,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<ActivityBucket>> {
        let room = room.to_owned();
        self.read(move |c| read::room_activity(c, &room, period, from, to))
            .await
    }

    async fn purge(&self, cutoffs: RetentionCutoffs) -> StoreResult<Purged> {
        let mut purged = Purged::default();
        let mut from = crate::store::write::PurgeCursor::default();
        loop {
            // Each batch is a job of its own: writes queued while it ran go before the next.
            let step = self
                .writer
                .submit(|reply| Job::Purge(cutoffs, from, reply))
                .await?;
            purged.add(&step.purged);
            match step.next {
                Some(next) => from = next,
                None => break,
            }
        }
        tracing::info!(?purged, "store: retention pass");
        Ok(purged)
    }

    async fn backup(&self, to: &Path) -> StoreResult<crate::store::BackupReport> {
        let (db, to) = (self.path.clone(), to.to_path_buf());
        tokio::task::spawn_blocking(move || backup::vacuum_into(&db, &to))
            .await
            .map_err(|e| StoreError::Backend(format!("the backup task failed: {e}")))?
    }

    async fn ping(&self) -> StoreResult<()> {
        if !self.writer.is_alive() {
            return Err(StoreError::Backend("the store writer has stopped".into()));
        }
        // A writer stuck in one group (a disk that stopped answering) holds every write.
        if let Some(busy) = self.writer.busy_for().filter(|b| *b > STUCK_WRITER) {
            return Err(StoreError::Backend(format!(
                "the store writer has been committing one group for {} ms",
                busy.as_millis()
            )));
        }
        self.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .await
            .map(drop)
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            write_queue: self.writer.queued(),
            ..self.readers.stats()
        }
    }

    async fn suspensions(&self) -> StoreResult<Vec<crate::store::Suspension>> {
        self.read(admin::suspensions).await
    }

    async fn set_suspension(&self, s: &crate::store::Suspension) -> StoreResult<()> {
        let s = s.clone();
        let job = writer::AdminJob(Box::new(move |tx| admin::set_suspension(tx, &s)));
        self.writer
            .submit(|reply| Job::Admin(job, reply))
            .await
            .map(drop)
    }

    async fn all_rooms(&self, after: &str, limit: u32) -> StoreResult<Vec<Room>> {
        let after = after.to_owned();
        self.read(move |c| admin::all_rooms(c, &after, limit)).await
    }

    async fn memberships(&self, user: &str) -> StoreResult<Vec<Member>> {
        let user = user.to_owned();
        self.read(move |c| admin::memberships(c, &user)).await
    }

    async fn messages_by(
        &self,
        user: &str,
        after: (&str, u64),
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let (user, room, seq) = (user.to_owned(), after.0.to_owned(), after.1);
        self.read(move |c| admin::messages_by(c, &user, (&room, seq), limit))
            .await
    }

    async fn forget_user(&self, user: &str) -> StoreResult<crate::store::Forgotten> {
        let name = user.to_owned();
        let job = writer::AdminJob(Box::new(move |tx| admin::forget_user(tx, &name)));
        let (events_redacted, rows_deleted) =
            self.writer.submit(|reply| Job::Admin(job, reply)).await?;
        let name = user.to_owned();
        let job = writer::AdminJob(Box::new(move |tx| {
            Ok((tx.execute(collab::FORGET_ACTOR, [&name])? as u64, 0))
        }));
        let (collab_updates_anonymised, _) =
            self.writer.submit(|reply| Job::Admin(job, reply)).await?;
        Ok(crate::store::Forgotten {
            events_redacted,
            rows_deleted,
            collab_updates_anonymised,
        })
    }

    /// `VACUUM`, then the WAL checkpointed and truncated (see `admin.rs`).
    async fn scrub(&self) -> StoreResult<()> {
        let db = self.path.clone();
        tokio::task::spawn_blocking(move || admin::scrub(&db, SCRUB_WAIT))
            .await
            .map_err(|e| StoreError::Backend(format!("the scrub task failed: {e}")))?
    }

    /// Empties the page caches of the idle readers and of the writer (`PRAGMA shrink_memory`):
    /// SQLite keeps the pages it read until its cache is full.
    async fn release_memory(&self) -> StoreResult<()> {
        self.readers.release_memory();
        self.writer
            .submit(|reply| Job::ReleaseMemory { reply })
            .await
    }
}

#[cfg(test)]
mod tests;
