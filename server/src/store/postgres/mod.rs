//! The PostgreSQL store: the same [`Store`] contract as the embedded SQLite store, on a database
//! that several roam-server processes share (scale-out mode, `--store postgres://…`).
//!
//! - **Driver:** `tokio-postgres` (async, no macros, no SQLite of its own), without TLS for now
//!   (`NoTls`: run Postgres on a private network or a loopback; see docs/architecture.md).
//! - **Writes** go through a few writer lanes (`writer.rs`), each a task owning one connection;
//!   a write is routed by its room (by its actor when it names none), so a room's writes keep
//!   their order, and a lane commits what is queued on it as one group; a room's seqs come from its row (`UPDATE … head_seq = head_seq + n
//!   RETURNING`), locked until commit, so they are gap-free and in commit order across servers.
//! - **Reads** use a small pool of connections (`conn.rs`), opened on demand.
//! - **Schema** (`schema.rs`): numbered migrations in `server/migrations/postgres/`, applied at
//!   start in one transaction under an advisory lock, so servers starting together migrate once.
//! - **Retention** (`purge`) runs under a session advisory lock: one server at a time does the
//!   pass; the others skip theirs (logged at debug).
//! - **Failures:** a lost or unreachable server is a [`StoreError::Backend`] (connecting is bounded
//!   by [`conn::CONNECT_TIMEOUT`]); a write is answered only after its `COMMIT` returned.
//! - **Time limits** ([`Timeouts`]): every connection but the migration's has
//!   `statement_timeout` and `lock_timeout`, and every round trip a deadline of our own, so a
//!   slow, locked or unreachable database answers `Backend` (503) within a bound instead of
//!   hanging; [`Store::ping`] fails when a writer lane has made no progress for too long.
//!
//! The connection string is a libpq-style URL; a schema other than `public` is chosen with
//! `options=-csearch_path%3Dname` (the schema must exist). Every SQL value is a bound
//! parameter, and each statement is prepared once per connection.
//!
//! ```no_run
//! # async fn demo() -> roam_server::store::StoreResult<()> {
//! use roam_server::store::{postgres::PostgresStore, Store};
//!
//! let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test", 4).await?;
//! store.ping().await?;
//! # Ok(()) }
//! ```

mod admin;
mod apply;
mod blobs;
mod collab;
mod conn;
mod push;
mod read;
mod rows;
mod schema;
mod writer;

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::BoxFuture;

use roam_proto::{
    ActivityBucket, Document, Invitation, Member, Message, Notification, Page, ReadMarker, Room,
    RoomEvent, User,
};

use self::conn::{backend, Pool};
use self::writer::Lanes;
use crate::store::write::{PurgeCursor, PurgeStep};
use crate::store::{
    Bounded, Committed, MessageCursor, NotificationQuery, Period, PoolStats, Purged,
    RetentionCutoffs, RoomQuery, Store, StoreError, StoreResult, StoredResult, UserQuery, Write,
};

pub use self::conn::{Timeouts, CONNECT_TIMEOUT};

/// The Postgres [`Store`]. Cheap to share behind an `Arc`.
pub struct PostgresStore {
    config: tokio_postgres::Config,
    timeouts: Timeouts,
    readers: Arc<Pool>,
    lanes: Lanes,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("pool", &self.pool_stats())
            .finish_non_exhaustive()
    }
}

/// Parses a `postgres://` (or `postgresql://`) URL, or a libpq key=value string.
pub fn parse_url(url: &str) -> StoreResult<tokio_postgres::Config> {
    tokio_postgres::Config::from_str(url)
        .map_err(|e| StoreError::Backend(format!("invalid PostgreSQL connection string: {e}")))
}

impl PostgresStore {
    /// Connects (bounded by [`CONNECT_TIMEOUT`]), migrates the schema, and starts `connections`
    /// reader connections at most plus as many writer lanes (each at least one), with the
    /// default [`Timeouts`].
    pub async fn connect(url: &str, connections: u32) -> StoreResult<PostgresStore> {
        Self::connect_with(url, connections, Timeouts::default()).await
    }

    /// [`PostgresStore::connect`] with the given statement and lock timeouts.
    pub async fn connect_with(
        url: &str,
        connections: u32,
        timeouts: Timeouts,
    ) -> StoreResult<PostgresStore> {
        let config = parse_url(url)?;
        let first = conn::connect(&config).await?;
        let version = schema::migrate(&first).await?;
        drop(first);
        let connections = connections.max(1);
        tracing::info!(
            hosts = ?config.get_hosts(),
            dbname = ?config.get_dbname(),
            version,
            readers = connections,
            writer_lanes = connections,
            statement_timeout_ms = timeouts.statement.as_millis() as u64,
            lock_timeout_ms = timeouts.lock.as_millis() as u64,
            "store: PostgreSQL opened"
        );
        Ok(PostgresStore {
            readers: Pool::new(config.clone(), connections, timeouts),
            lanes: Lanes::start(&config, connections, timeouts),
            config,
            timeouts,
        })
    }

    /// A pooled connection.
    async fn conn(&self) -> StoreResult<conn::Lease> {
        self.readers.get().await
    }

    /// One retention batch in its own transaction.
    async fn purge_step(
        c: &conn::Conn,
        cutoffs: &RetentionCutoffs,
        from: &PurgeCursor,
    ) -> StoreResult<PurgeStep> {
        c.begin().await?;
        match apply::purge_batch(c, cutoffs, from).await {
            Ok(step) => {
                c.commit().await?;
                Ok(step)
            }
            Err(e) => {
                c.rollback().await;
                Err(e)
            }
        }
    }
}

/// The retention lock, named after the schema so that separate deployments sharing one
/// database (or tests in their own schemas) do not exclude each other.
const TRY_RETENTION_LOCK: &str =
    "SELECT pg_try_advisory_lock(hashtext('roam.retention.' || current_schema()))";

#[async_trait]
impl Store for PostgresStore {
    fn commit(&self, write: Write) -> BoxFuture<'static, StoreResult<Committed>> {
        Box::pin(self.lanes.submit(write))
    }

    async fn idempotent_result(&self, user: &str, key: &str) -> StoreResult<Option<StoredResult>> {
        read::idempotent_result(&*self.conn().await?, user, key).await
    }

    async fn touch_user(&self, user: &str, now: i64) -> StoreResult<()> {
        self.conn()
            .await?
            .execute(apply::TOUCH_USER, &[&user, &now])
            .await
            .map(drop)
    }

    async fn room(&self, name: &str) -> StoreResult<Option<Room>> {
        read::room(&*self.conn().await?, name).await
    }

    async fn member(&self, room: &str, user: &str) -> StoreResult<Option<Member>> {
        read::member(&*self.conn().await?, room, user).await
    }

    async fn list_rooms(&self, viewer: &str, q: &RoomQuery) -> StoreResult<Bounded<Room>> {
        read::list_rooms(&*self.conn().await?, viewer, q).await
    }

    async fn list_members(
        &self,
        room: &str,
        after_user: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Member>> {
        read::list_members(&*self.conn().await?, room, after_user, limit).await
    }

    async fn rooms_of(&self, user: &str) -> StoreResult<Vec<String>> {
        read::rooms_of(&*self.conn().await?, user).await
    }

    async fn invitation(&self, id: &str, now: i64) -> StoreResult<Option<Invitation>> {
        read::invitation(&*self.conn().await?, id, now).await
    }

    async fn pending_invitation(
        &self,
        room: &str,
        user: &str,
        now: i64,
    ) -> StoreResult<Option<Invitation>> {
        read::pending_invitation(&*self.conn().await?, room, user, now).await
    }

    async fn invitations_for(
        &self,
        user: &str,
        now: i64,
        limit: u32,
    ) -> StoreResult<Vec<Invitation>> {
        read::invitations_for(&*self.conn().await?, user, now, limit).await
    }

    async fn room_invitations(
        &self,
        room: &str,
        now: i64,
        limit: u32,
    ) -> StoreResult<Vec<Invitation>> {
        read::room_invitations(&*self.conn().await?, room, now, limit).await
    }

    async fn message(&self, room: &str, id: &str) -> StoreResult<Option<Message>> {
        read::message(&*self.conn().await?, room, id).await
    }

    async fn messages(
        &self,
        room: &str,
        cursor: MessageCursor,
        limit: u32,
    ) -> StoreResult<Bounded<Message>> {
        read::messages(&*self.conn().await?, room, cursor, limit).await
    }

    async fn events_after(
        &self,
        room: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<RoomEvent>> {
        read::events_after(&*self.conn().await?, room, after, limit).await
    }

    async fn event_bounds(&self, room: &str) -> StoreResult<(u64, u64)> {
        read::event_bounds(&*self.conn().await?, room).await
    }

    async fn collab_doc(
        &self,
        room: &str,
        doc: &str,
    ) -> StoreResult<Option<crate::store::CollabStored>> {
        collab::stored(&*self.conn().await?, room, doc).await
    }

    async fn collab_updates(
        &self,
        room: &str,
        doc: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<crate::store::CollabLogEntry>> {
        collab::page(&*self.conn().await?, room, doc, after, limit).await
    }

    async fn document(&self, room: &str, doc: &str) -> StoreResult<Option<Document>> {
        read::document(&*self.conn().await?, room, doc).await
    }

    async fn documents(
        &self,
        room: &str,
        after_doc: Option<&str>,
        limit: u32,
    ) -> StoreResult<Bounded<Document>> {
        read::documents(&*self.conn().await?, room, after_doc, limit).await
    }

    async fn document_history(
        &self,
        room: &str,
        doc: &str,
        before: u64,
        limit: u32,
    ) -> StoreResult<Bounded<Document>> {
        read::document_history(&*self.conn().await?, room, doc, before, limit).await
    }

    async fn notifications(
        &self,
        user: &str,
        q: &NotificationQuery,
    ) -> StoreResult<Vec<Notification>> {
        read::notifications(&*self.conn().await?, user, q).await
    }

    async fn unread_count(&self, user: &str) -> StoreResult<u64> {
        read::unread_count(&*self.conn().await?, user).await
    }

    async fn read_markers(&self, user: &str) -> StoreResult<Vec<ReadMarker>> {
        read::read_markers(&*self.conn().await?, user).await
    }

    async fn save_last_seen(&self, user: &str, at: i64) -> StoreResult<()> {
        self.conn()
            .await?
            .execute(apply::SAVE_LAST_SEEN, &[&user, &at])
            .await
            .map(drop)
    }

    async fn last_seen(&self, users: &[String]) -> StoreResult<Vec<(String, i64)>> {
        read::last_seen(&*self.conn().await?, users).await
    }

    async fn blob_shared_with(&self, user: &str, blob: &str) -> StoreResult<bool> {
        read::blob_shared_with(&*self.conn().await?, user, blob).await
    }

    async fn blob_in_use(&self, blob: &str) -> StoreResult<bool> {
        read::blob_in_use(&*self.conn().await?, blob).await
    }

    async fn charge_blob_bytes(
        &self,
        owner: &str,
        item: &str,
        bytes: u64,
        limit: u64,
    ) -> StoreResult<crate::store::Charge> {
        blobs::charge(&*self.conn().await?, owner, item, bytes, limit).await
    }

    async fn release_blob_bytes(&self, item: &str) -> StoreResult<()> {
        blobs::release(&*self.conn().await?, item).await
    }

    async fn blob_bytes_used(&self, owner: &str) -> StoreResult<u64> {
        blobs::used(&*self.conn().await?, owner).await
    }

    async fn touch_blob(&self, blob: &str, now: i64, doomed_after: i64) -> StoreResult<bool> {
        blobs::touch(&*self.conn().await?, blob, now, doomed_after).await
    }

    async fn doom_blob(&self, blob: &str, now: i64, untouched_since: i64) -> StoreResult<bool> {
        blobs::doom(&*self.conn().await?, blob, now, untouched_since).await
    }

    async fn forget_blob(&self, blob: &str) -> StoreResult<()> {
        blobs::forget(&*self.conn().await?, blob).await
    }

    async fn co_members(&self, viewer: &str, users: &[String]) -> StoreResult<Vec<String>> {
        read::co_members(&*self.conn().await?, viewer, users).await
    }

    async fn search_users(&self, q: &UserQuery) -> StoreResult<Page<User>> {
        read::search_users(&*self.conn().await?, q).await
    }

    async fn room_activity(
        &self,
        room: &str,
        period: Period,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<ActivityBucket>> {
        read::room_activity(&*self.conn().await?, room, period, from, to).await
    }

    /// Runs on a connection of its own that holds the retention advisory lock for the whole
    /// pass (closing it releases the lock, even if the pass is abandoned half way). A server
    /// that does not get the lock skips the pass: another one is running it.
    async fn purge(&self, cutoffs: RetentionCutoffs) -> StoreResult<Purged> {
        let c = conn::connect_bounded(&self.config, &self.timeouts).await?;
        let got: bool = c
            .query_sql(TRY_RETENTION_LOCK, &[])
            .await?
            .first()
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|e| backend(&e))?
            .unwrap_or(false);
        if !got {
            tracing::debug!("store: retention pass skipped, another server is running one");
            return Ok(Purged::default());
        }
        let mut purged = Purged::default();
        let mut from = PurgeCursor::default();
        loop {
            let step = Self::purge_step(&c, &cutoffs, &from).await?;
            purged.add(&step.purged);
            match step.next {
                Some(next) => from = next,
                None => break,
            }
        }
        // Dropping the connection releases the lock too; unlocking first frees it at once.
        if let Err(e) = c.simple("SELECT pg_advisory_unlock_all()").await {
            tracing::debug!(error = %e, "store: releasing the retention lock failed");
        }
        tracing::info!(?purged, "store: retention pass");
        Ok(purged)
    }

    /// Fails when a writer lane has had writes queued and finished nothing for two round-trip
    /// deadlines (reads may still work while writes are stuck), else runs `SELECT 1` on a
    /// reader connection (within the deadline, like every call).
    async fn ping(&self) -> StoreResult<()> {
        let bound = 2 * self.timeouts.deadline();
        if let Some((lane, idle)) = self.lanes.stalled(bound) {
            return Err(StoreError::Backend(format!(
                "writer lane {lane} has writes queued and finished none for {} ms",
                idle.as_millis()
            )));
        }
        self.conn()
            .await?
            .query_sql("SELECT 1", &[])
            .await
            .map(drop)
    }

    /// Reader connections open (at most the configured size), in use and waited for; the
    /// write queue is the writes sent to the lanes and not finished.
    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            write_queue: self.lanes.queued(),
            ..self.readers.stats()
        }
    }

    async fn suspensions(&self) -> StoreResult<Vec<crate::store::Suspension>> {
        admin::suspensions(&*self.conn().await?).await
    }

    async fn set_suspension(&self, s: &crate::store::Suspension) -> StoreResult<()> {
        admin::set_suspension(&*self.conn().await?, s).await
    }

    async fn all_rooms(&self, after: &str, limit: u32) -> StoreResult<Vec<Room>> {
        admin::all_rooms(&*self.conn().await?, after, limit).await
    }

    async fn memberships(&self, user: &str) -> StoreResult<Vec<Member>> {
        admin::memberships(&*self.conn().await?, user).await
    }

    async fn messages_by(
        &self,
        user: &str,
        after: (&str, u64),
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        admin::messages_by(&*self.conn().await?, user, after, limit).await
    }

    /// On a connection of its own (a transaction never goes back to the pool half done).
    async fn forget_user(&self, user: &str) -> StoreResult<crate::store::Forgotten> {
        let c = conn::connect_bounded(&self.config, &self.timeouts).await?;
        admin::forget_user(&c, user).await
    }
}

#[cfg(test)]
mod tests;
