//! The store opened by a second process while the app may hold it: an iOS Notification Service
//! Extension or an Android `FirebaseMessagingService` ([`SharedDb`]).
//!
//! The app's [`Db`](super::Db) takes the account's lock file and is the only writer. A second
//! process must neither fail because of that lock nor get in the writer's way, so this mode
//! follows what SQLite's WAL allows between processes:
//!
//! - **No lock file, no writer.** The connection is opened `SQLITE_OPEN_READONLY` (and
//!   `query_only`): it can never take the WAL write lock, so the app's writer never waits for
//!   it, and it writes nothing — not a row, not a migration, not a checkpoint. A read-only
//!   connection that closes last does not checkpoint or delete the WAL either: the app finds the
//!   WAL as it left it.
//! - **Short snapshots.** Each [`SharedDb::read`] is one deferred read transaction, ended as soon
//!   as the closure returns. A reader pins the WAL frames of its snapshot, so a long one would
//!   keep the app's checkpointer from copying them back; a few queries do not.
//! - **Busy timeout.** The few moments a reader must wait (the app's checkpointer restarting the
//!   WAL, or recovering the WAL index after a crash) are covered by a busy timeout of
//!   [`BUSY_TIMEOUT`], well inside a notification's deadline.
//! - **Small memory.** An iOS notification service extension gets about 24 MB in all, so the page
//!   cache is [`CACHE_KIB`] KiB and memory-mapped I/O is off.
//! - **Same schema or nothing.** The schema version must be exactly the one this build migrates
//!   to: an older store (the app was updated but not opened yet) or a newer one (the extension is
//!   older than the app) is refused with [`Error::SchemaMismatch`], since this process may not
//!   migrate, and reading tables of another shape could show wrong data. So is a store that
//!   does not exist yet ([`Error::NotFound`]: nothing is created) and one not in WAL mode (a
//!   rollback-journal reader would block the writer).
//!
//! **Why the second process writes nothing.** The app's open client keeps state about the store
//! in memory — the next outbox position, the queued entries, live timelines and room lists fed
//! by its own commits — and a row written behind its back would reach none of them: a message
//! stored by the extension would sit in the table while the app's open timeline never shows it,
//! and an outbox row would collide with the app's positions. A write would also take the WAL
//! write lock out of the app's hands for its duration. A message the extension fetches is
//! therefore only shown, not stored; the app's own recovery stores it on its next connect, in
//! its own transaction and with its cursor, which is what keeps the app's view consistent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::cipher::{self, Found};
use crate::config::StoreKey;
use crate::error::{Error, Result};

/// Longest a read waits for a lock the app holds for a moment.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_millis(500);

/// Page cache of the shared reader, in KiB (SQLite's default is 2,000 KiB per connection).
pub(crate) const CACHE_KIB: i64 = 256;

/// The account's store as a second process sees it: one read-only connection.
#[derive(Debug)]
pub(crate) struct SharedDb {
    path: PathBuf,
    conn: Connection,
}

impl SharedDb {
    /// Opens the existing store at `path` read-only, next to the app's writer if it has it
    /// open (see the module docs for what is refused and why).
    /// `key`: the account's store key, when the app encrypts its store; it is used only if the
    /// file is encrypted (an app that has not yet opened the store with its key left it plain).
    pub(crate) fn open(path: &Path, key: Option<&StoreKey>) -> Result<SharedDb> {
        if !path.is_file() {
            return Err(Error::not_found(format!(
                "store {} (the app has not opened this account on this device)",
                path.display()
            )));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match (key, cipher::inspect(path)?) {
            (Some(key), Found::Encrypted { plaintext_header }) => {
                cipher::open_keyed(path, flags, key, plaintext_header)?.0
            }
            _ => {
                let conn = super::open_file(path, flags)?;
                cipher::verify(&conn, path, None)?;
                conn
            }
        };
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.set_prepared_statement_cache_capacity(16);
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        conn.pragma_update(None, "mmap_size", 0)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "query_only", true)?;
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::state(format!(
                "store {} is in {mode} journal mode, not WAL: open it in the app first",
                path.display()
            )));
        }
        let found: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let expected = super::SCHEMA_VERSION;
        if found != expected {
            return Err(Error::SchemaMismatch { found, expected });
        }
        Ok(SharedDb {
            path: path.to_owned(),
            conn,
        })
    }

    /// Runs `f` in one short read transaction (one snapshot of the store).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let tx = self.conn.unchecked_transaction()?;
        let out = f(&tx);
        // A read transaction has nothing to commit: ending it releases the snapshot.
        tx.finish()?;
        out
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::db::Db;

    fn kv_count(c: &Connection) -> Result<i64> {
        Ok(c.query_row("SELECT count(*) FROM kv", [], |r| r.get(0))?)
    }

    /// The app's store is open (lock taken, writer busy): a shared reader opens anyway, both
    /// keep working while the app writes, every read sees a committed state, and the app's
    /// writes never fail.
    #[test]
    fn a_second_process_reads_while_the_app_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        let app = Arc::new(Db::open(&path).expect("app open"));
        assert!(matches!(Db::open(&path), Err(Error::AlreadyOpen { .. })));
        let shared = SharedDb::open(&path, None).expect("shared open next to the app");

        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let writer = {
            let (app, stop, written) = (app.clone(), stop.clone(), written.clone());
            std::thread::spawn(move || -> Result<()> {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) && i < 20_000 {
                    let mut conn = app.writer();
                    let tx = conn.transaction()?;
                    // Two rows per commit: a reader must never see one without the other.
                    tx.execute(
                        "INSERT INTO kv (key, value) VALUES (?1, 'a')",
                        [format!("a{i}")],
                    )?;
                    tx.execute(
                        "INSERT INTO kv (key, value) VALUES (?1, 'b')",
                        [format!("b{i}")],
                    )?;
                    tx.commit()?;
                    drop(conn);
                    app.committed();
                    i += 1;
                    written.store(i, Ordering::SeqCst);
                }
                Ok(())
            })
        };
        let mut reads = 0;
        let mut last = 0;
        // Read while the app writes: at least 2,000 reads, and on until the writer has committed
        // a hundred times (a busy machine may start it late; it stops by itself at 20,000).
        while reads < 2_000 || (written.load(Ordering::SeqCst) < 100 && !writer.is_finished()) {
            let n = shared.read(kv_count).expect("shared read");
            assert_eq!(n % 2, 0, "a reader saw half a commit");
            assert!(n >= last, "the snapshot went back");
            last = n;
            reads += 1;
        }
        stop.store(true, Ordering::SeqCst);
        writer.join().expect("writer thread").expect("app writes");
        assert!(written.load(Ordering::SeqCst) > 0);
        // The app keeps working after the reader is gone, and sees its own data.
        drop(shared);
        let n = app.read(kv_count).expect("app read");
        assert_eq!(n as u64, 2 * written.load(Ordering::SeqCst));
        app.writer()
            .execute("INSERT INTO kv (key, value) VALUES ('after', 'x')", [])
            .expect("app write after");
    }

    /// The shared reader cannot write, and opening it changes nothing on disk when the app
    /// is not running (no lock file, no WAL checkpointed away).
    #[test]
    fn the_shared_reader_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        Db::open(&path).expect("create").close();
        let shared = SharedDb::open(&path, None).expect("open without the app");
        let res =
            shared.read(|c| Ok(c.execute("INSERT INTO kv (key, value) VALUES ('k', 'v')", [])?));
        assert!(res.is_err(), "a write went through");
        assert_eq!(shared.read(kv_count).expect("read"), 0);
        // The app's close removed its lock connection; the reader took no lock of its own, so
        // the app opens at once.
        let app = Db::open(&path).expect("the app opens next to the reader");
        drop(app);
        drop(shared);
    }

    /// A store that is missing, or of another schema version, is refused clearly.
    #[test]
    fn missing_and_other_schema_stores_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("none.db");
        assert!(matches!(
            SharedDb::open(&path, None),
            Err(Error::NotFound { .. })
        ));
        assert!(!path.exists(), "nothing was created");

        for version in [SCHEMA_VERSION_OLDER, super::super::SCHEMA_VERSION + 1] {
            let path = dir.path().join(format!("v{version}.db"));
            {
                let c = Connection::open(&path).expect("open");
                c.pragma_update(None, "journal_mode", "WAL").expect("wal");
                c.pragma_update(None, "user_version", version)
                    .expect("version");
            }
            match SharedDb::open(&path, None) {
                Err(Error::SchemaMismatch { found, expected }) => {
                    assert_eq!((found, expected), (version, super::super::SCHEMA_VERSION));
                }
                other => panic!("version {version}: {other:?}"),
            }
        }

        let path = dir.path().join("rollback.db");
        Connection::open(&path)
            .expect("open")
            .pragma_update(None, "user_version", super::super::SCHEMA_VERSION)
            .expect("version");
        assert!(matches!(
            SharedDb::open(&path, None),
            Err(Error::InvalidState { .. })
        ));
    }

    const SCHEMA_VERSION_OLDER: u32 = 1;

    /// The app checkpoints and restarts its WAL while a shared reader comes and goes: neither
    /// fails, and the reader's memory settings are in force.
    #[test]
    fn the_app_checkpoints_next_to_the_reader() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        let app = Db::open(&path).expect("app");
        let shared = SharedDb::open(&path, None).expect("shared");
        let cache: i64 = shared
            .read(|c| Ok(c.pragma_query_value(None, "cache_size", |r| r.get(0))?))
            .expect("pragma");
        assert_eq!(cache, -CACHE_KIB);
        for round in 0..5 {
            for i in 0..20 {
                app.writer()
                    .execute(
                        "INSERT INTO kv (key, value) VALUES (?1, ?2)",
                        rusqlite::params![format!("r{round}k{i}"), "x".repeat(2000)],
                    )
                    .expect("insert");
            }
            let (_, wal, copied): (i64, i64, i64) = app
                .writer()
                .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .expect("checkpoint");
            assert_eq!(wal, copied, "the idle reader held no frames back");
            assert_eq!(shared.read(kv_count).expect("read"), (round + 1) * 20);
        }
        assert_eq!(shared.path(), path);
    }

    /// An encrypted store (the app's, with its key) is read with the same key, whatever its
    /// header mode; without the key, or with another, the reader fails with `InvalidKey`.
    #[test]
    fn an_encrypted_store_is_read_with_the_apps_key() {
        for plaintext_header in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("a.db");
            let key = StoreKey::new([7; StoreKey::LEN]);
            let app = Db::open_with(&path, Some(&key), plaintext_header).expect("app");
            app.writer()
                .execute("INSERT INTO kv (key, value) VALUES ('k', 'v')", [])
                .expect("write");
            let shared = SharedDb::open(&path, Some(&key)).expect("reader with the key");
            assert_eq!(shared.read(kv_count).expect("read"), 1);
            for wrong in [None, Some(StoreKey::new([8; StoreKey::LEN]))] {
                assert!(matches!(
                    SharedDb::open(&path, wrong.as_ref()),
                    Err(Error::InvalidKey { .. })
                ));
            }
            drop(shared);
            app.close();
        }
    }
}
