//! Opening connections and upgrading the schema.
//!
//! The schema version is `PRAGMA user_version`; migration `n` (1-based) is the n-th entry of
//! [`MIGRATIONS`], the embedded `server/migrations/NNNN_*.sql` files. Each runs in its own
//! `IMMEDIATE` transaction together with its `user_version` bump, re-reading the version inside
//! the transaction so two processes opening the same file cannot both apply a step. See
//! `server/migrations/NOTES.md` for the rules of writing one.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::store::{StoreError, StoreResult};

/// The migrations, in order. Never edit a shipped entry; append a new file.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/0001_init.sql"),
    include_str!("../../../migrations/0002_roles.sql"),
    include_str!("../../../migrations/0003_redaction.sql"),
    include_str!("../../../migrations/0004_inboxes.sql"),
    include_str!("../../../migrations/0005_read_markers.sql"),
    include_str!("../../../migrations/0006_lean_commit.sql"),
    include_str!("../../../migrations/0007_message_blobs.sql"),
    include_str!("../../../migrations/0008_blob_accounts.sql"),
    include_str!("../../../migrations/0009_suspensions.sql"),
    include_str!("../../../migrations/0010_push.sql"),
    include_str!("../../../migrations/0011_collab.sql"),
];

/// How long a connection waits for a lock before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection (the store has a few dozen distinct ones).
const STATEMENT_CACHE: usize = 128;

/// How the writer syncs a commit to disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Every commit is synced before it is acknowledged: an acknowledged write survives power
    /// loss. Group commit makes one sync cover every write of the group.
    #[default]
    Full,
    /// WAL commits are synced at checkpoints only: the database is never corrupted, but the
    /// last commits before a power loss (not a process crash) can be lost.
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }

    /// The mode of a `PRAGMA synchronous` value, if it is one of these.
    fn from_level(level: i64) -> Option<Self> {
        match level {
            2 => Some(Synchronous::Full),
            1 => Some(Synchronous::Normal),
            _ => None,
        }
    }
}

/// The read-write connection: WAL, `synchronous` as asked (FULL by default: durable at every
/// commit; NORMAL: durable at checkpoints, never corrupt), foreign keys on; the schema is
/// migrated before it is returned, with the mode SQLite reports.
pub(super) fn open_writer(
    path: &Path,
    sync: Synchronous,
) -> StoreResult<(Connection, Synchronous)> {
    // Through the VFS that writes a commit's WAL frames with one write (`roam_wal`).
    let mut conn = roam_wal::open(path, OpenFlags::default())?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "cannot switch {} to WAL (journal mode is {mode})",
            path.display()
        )));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
        sync.pragma()
    ))?;
    let level: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    let actual = Synchronous::from_level(level)
        .ok_or_else(|| StoreError::Backend(format!("SQLite reports synchronous level {level}")))?;
    migrate(&mut conn)?;
    Ok((conn, actual))
}

/// A read-only connection for the reader pool (open it after the writer: WAL must be set).
pub(super) fn open_reader(path: &Path) -> StoreResult<Connection> {
    let conn = roam_wal::open(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.execute_batch("PRAGMA query_only = ON; PRAGMA temp_store = MEMORY;")?;
    Ok(conn)
}

/// Applies the missing migrations; returns the resulting schema version.
pub(super) fn migrate(conn: &mut Connection) -> StoreResult<usize> {
    let target = MIGRATIONS.len();
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let current = usize::try_from(current)
            .ok()
            .filter(|v| *v <= target)
            .ok_or_else(|| {
                StoreError::Backend(format!(
                    "database schema version {current} is not one this server knows \
                     (it knows 0 to {target})"
                ))
            })?;
        let Some(sql) = MIGRATIONS.get(current) else {
            return Ok(current);
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (current + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = current + 1, "store: schema migrated");
    }
}
