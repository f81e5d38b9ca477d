//! The account's SQLite store: one file per account, WAL, one writer, pooled readers.
//!
//! Every read the app makes is answered from here, and every change (local or from the server)
//! lands here first; the rest of the core only moves data in and out of it.
//!
//! - **One writer.** A single read-write connection sits behind a mutex ([`Db::writer`]). Whoever
//!   holds it runs one transaction, and also hands the resulting events to the listener
//!   dispatcher and the outbox scheduler before letting go, so the order that listeners and the
//!   scheduler see is the commit order.
//! - **Readers.** Reads borrow a connection from a small pool ([`Db::read`]) opened with
//!   `query_only`; under WAL they never wait for the writer, and they see the last committed
//!   state.
//! - **Checkpoints** run off the commit path: the writer's automatic checkpoint is off, and a
//!   checkpointer thread with its own connection copies the WAL back into the database (a
//!   `PASSIVE` checkpoint, which never blocks the writer) after every [`CHECKPOINT_EVERY`]
//!   commits ([`Db::committed`]). Otherwise the commit that crosses SQLite's threshold would pay
//!   for copying and syncing thousands of pages while holding the writer, and that commit may
//!   be a message the app is sending.
//! - **WAL writes.** Every connection opens through the [`roam_wal`] VFS, which writes a
//!   transaction's WAL frames with one write when its commit frame is complete, instead of two
//!   `pwrite`s per page (a queued message commits about 23 % faster for it); the commit is in the
//!   file before SQLite publishes it, so nothing changes for readers or after a crash.
//! - **Shape of the code.** Functions that write take a `&Transaction` (in [`writes`]); functions
//!   that read take a `&Connection` (in [`reads`]), so they also run inside a write transaction
//!   (a `Transaction` derefs to its `Connection`).
//! - **One client per file.** `open` takes an exclusive SQLite lock on `<db>-lock` (held for
//!   the store's life), so a second client on the same database — in this process or another —
//!   fails at once with [`Error::AlreadyOpen`] instead of fighting over outbox keys. A second
//!   *process* that only needs to read next to the app (a notification extension) opens a
//!   [`shared::SharedDb`] instead: read-only, no lock, no migrations (see `shared.rs`).
//! - **Closing.** [`Db::close`] (sign-out, or the last `Client` handle dropped) makes every
//!   later read and write fail with [`Error::Shutdown`] and releases the lock; [`Db::files`]
//!   names what a wipe deletes.
//! - **Schema** is versioned by `PRAGMA user_version` and upgraded by the numbered files in
//!   `migrations/`, each in its own transaction. See `NOTES.md` next to this file.
//! - **Encryption.** With a key ([`Db::open_with`]) every connection (writer, readers,
//!   checkpointer) is opened through [`connect`], which keys it before its first statement and
//!   checks the key. A plain store found at open is encrypted once, and [`Db::change_key`]
//!   re-keys an open store; both copy the database into a new file and rename it into place
//!   (see [`cipher`]).

pub(crate) mod cipher;
#[cfg(test)]
mod cipher_tests;
pub(crate) mod crypto;
pub(crate) mod reads;
pub(crate) mod shared;
pub(crate) mod writes;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard, RwLock};
use rusqlite::{Connection, OpenFlags};

use self::cipher::{Cipher, Found};
use crate::config::StoreKey;
use crate::error::{Error, Result};

/// The numbered migrations, in order. Index `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_initial", include_str!("migrations/0001_initial.sql")),
    (
        "0002_fewer_index_writes",
        include_str!("migrations/0002_fewer_index_writes.sql"),
    ),
    (
        "0003_read_markers",
        include_str!("migrations/0003_read_markers.sql"),
    ),
    (
        "0004_outbox_target",
        include_str!("migrations/0004_outbox_target.sql"),
    ),
    (
        "0005_attachments",
        include_str!("migrations/0005_attachments.sql"),
    ),
    ("0006_collab", include_str!("migrations/0006_collab.sql")),
];

/// The schema version the migrations bring a store to (what a [`shared::SharedDb`] requires).
pub(crate) const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Most idle reader connections kept open.
const MAX_IDLE_READERS: usize = 4;

/// Commits between two background checkpoints (a catch-up slice writes a few dozen pages, a
/// queued message three, so the WAL stays within a few megabytes).
const CHECKPOINT_EVERY: u64 = 64;

/// Longest a caller keeps trying for a taken writer before it sleeps, and longest background
/// work lets such a caller go first (see [`Db::writer`]).
const WRITER_SPIN: Duration = Duration::from_millis(2);

/// The checkpointer thread: woken through `wake`, it ends when `wake` is dropped.
#[derive(Debug)]
struct Checkpointer {
    wake: mpsc::SyncSender<()>,
    thread: JoinHandle<()>,
}

/// The store of one account.
#[derive(Debug)]
pub(crate) struct Db {
    path: PathBuf,
    /// The keying of every connection (`None`: a plain store); replaced by [`Db::change_key`].
    cipher: Mutex<Option<Cipher>>,
    /// Whether a store this encrypts or re-keys keeps a plaintext header.
    plaintext_header: bool,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Held shared by every read for its whole length, and exclusively by [`Db::change_key`]
    /// while it replaces the file, so no reader uses a connection to the old one meanwhile.
    swap: RwLock<()>,
    /// The writer's page cap (see [`Db::set_max_bytes`]), applied again to a new writer.
    max_pages: Mutex<Option<i64>>,
    /// Callers trying for the writer now (see [`Db::writer`]).
    wanted: AtomicUsize,
    /// The next outbox position (see [`Db::next_pos`]).
    next_pos: AtomicI64,
    /// The lock file's connection, holding its exclusive lock while the store is open.
    lock: Mutex<Option<Connection>>,
    closed: AtomicBool,
    /// Commits so far (see [`Db::committed`]).
    commits: AtomicU64,
    checkpointer: Mutex<Option<Checkpointer>>,
}

impl Db {
    /// Opens (creating if needed) and migrates the plain database at `path`.
    #[cfg(test)]
    pub(crate) fn open(path: &Path) -> Result<Db> {
        Db::open_with(path, None, false)
    }

    /// Opens (creating if needed) and migrates the database at `path`, encrypted with `key`
    /// when one is given: a new store is created encrypted, a plain one is encrypted first
    /// (see [`cipher`]), and a wrong key fails with [`Error::InvalidKey`] having written
    /// nothing. `plaintext_header` applies to a store this creates or encrypts.
    pub(crate) fn open_with(
        path: &Path,
        key: Option<&StoreKey>,
        plaintext_header: bool,
    ) -> Result<Db> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::invalid(format!("cannot create {}: {e}", dir.display())))?;
            }
        }
        let lock = lock_file(path)?;
        // A copy left by an encryption or re-key that did not finish (see `cipher`).
        cipher::remove_files(&cipher::new_file(path))?;
        // An encrypted store is opened by trying its page HMACs (see `cipher`); that
        // connection becomes the writer.
        let (cipher, keyed) = match key {
            None => (None, None),
            Some(key) => {
                let wanted = Cipher::new(key, plaintext_header);
                match cipher::inspect(path)? {
                    Found::New => (Some(wanted), None),
                    Found::Plain => {
                        encrypt_plain(path, &wanted)?;
                        (Some(wanted), None)
                    }
                    Found::Encrypted { plaintext_header } => {
                        let (conn, found) =
                            cipher::open_keyed(path, OpenFlags::default(), key, plaintext_header)?;
                        (Some(found), Some(conn))
                    }
                }
            }
        };
        let mut writer = match keyed {
            Some(conn) => {
                configure(&conn)?;
                writer_mode(&conn)?;
                conn
            }
            None => open_writer(path, cipher.as_ref())?,
        };
        migrate(&mut writer)?;
        let next_pos = first_free_pos(&writer)?;
        let checkpointer = start_checkpointer(path, cipher.as_ref())?;
        Ok(Db {
            path: path.to_owned(),
            cipher: Mutex::new(cipher),
            plaintext_header,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            swap: RwLock::new(()),
            max_pages: Mutex::new(None),
            wanted: AtomicUsize::new(0),
            next_pos: AtomicI64::new(next_pos),
            lock: Mutex::new(Some(lock)),
            closed: AtomicBool::new(false),
            commits: AtomicU64::new(0),
            checkpointer: Mutex::new(Some(checkpointer)),
        })
    }

    /// Caps the database at `bytes` (rounded down to whole pages, at least its current size):
    /// a write that would grow it further fails with `SQLITE_FULL`, like on a full disk.
    pub(crate) fn set_max_bytes(&self, bytes: u64) -> Result<()> {
        let conn = self.writer();
        // On a keyed connection SQLCipher answers `page_size` itself, as text.
        let page: i64 = conn.pragma_query_value(None, "page_size", |r| {
            Ok(match r.get::<_, rusqlite::types::Value>(0)? {
                rusqlite::types::Value::Integer(n) => n,
                rusqlite::types::Value::Text(t) => t.parse().unwrap_or(4096),
                _ => 4096,
            })
        })?;
        let pages = (i64::try_from(bytes).unwrap_or(i64::MAX) / page.max(1)).max(1);
        conn.pragma_update(None, "max_page_count", pages)?;
        *self.max_pages.lock() = Some(pages);
        Ok(())
    }

    /// Re-encrypts the open store with `key` (`None`: decrypts it to a plain store; a plain
    /// store given a key is encrypted). Waits for the write and the reads under way, holds
    /// every other one off meanwhile, copies the database into a new file with the new key and
    /// renames it over the old one: a crash at any point leaves either the old store whole or
    /// the new one (see [`cipher`]). Takes about as long as copying the file.
    pub(crate) fn change_key(&self, key: Option<&StoreKey>) -> Result<()> {
        self.check_open()?;
        let new = key.map(|key| Cipher::new(key, self.plaintext_header));
        // The writer first, then the readers: a read never waits for the writer while
        // holding `swap`, but a writer may read.
        let mut writer = self.writer();
        let _swap = self.swap.write();
        self.check_open()?;
        self.readers.lock().clear();
        self.stop_checkpointer();
        let copy = cipher::new_file(&self.path);
        let exported = cipher::checkpoint_all(&writer)
            .and_then(|()| cipher::export(&writer, &copy, new.as_ref()));
        if let Err(err) = exported {
            if let Err(e) = cipher::remove_files(&copy) {
                tracing::warn!(error = %e, "cannot delete the unfinished copy");
            }
            self.restart_checkpointer();
            return Err(err);
        }
        // The writer is the last connection to the old file: close it, then swap the files.
        let old = std::mem::replace(&mut *writer, Connection::open_in_memory()?);
        if let Err((_, err)) = old.close() {
            tracing::warn!(error = %err, "closing the database before the re-key failed");
        }
        let swapped = cipher::swap_in(&copy, &self.path);
        let mut current = self.cipher.lock();
        if swapped.is_ok() {
            *current = new;
        }
        *writer = open_writer(&self.path, current.as_ref())?;
        if let Some(pages) = *self.max_pages.lock() {
            writer.pragma_update(None, "max_page_count", pages)?;
        }
        drop(current);
        self.restart_checkpointer();
        if swapped.is_ok() {
            tracing::info!(encrypted = key.is_some(), "store re-keyed");
        }
        swapped
    }

    /// Starts the checkpointer again after [`Db::change_key`] stopped it.
    fn restart_checkpointer(&self) {
        let cipher = self.cipher.lock().clone();
        match start_checkpointer(&self.path, cipher.as_ref()) {
            Ok(c) => *self.checkpointer.lock() = Some(c),
            Err(err) => tracing::warn!(error = %err, "cannot restart the checkpointer"),
        }
    }

    /// Counts a commit of the writer; every [`CHECKPOINT_EVERY`] commits wakes the checkpointer
    /// (a wake-up while it is still busy is merged into the one pending).
    pub(crate) fn committed(&self) {
        let n = self.commits.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(CHECKPOINT_EVERY) {
            if let Some(c) = self.checkpointer.lock().as_ref() {
                let _ = c.wake.try_send(());
            }
        }
    }

    /// Ends the checkpointer thread and closes its connection (waits for a checkpoint under
    /// way).
    fn stop_checkpointer(&self) {
        let Some(c) = self.checkpointer.lock().take() else {
            return;
        };
        drop(c.wake);
        if c.thread.join().is_err() {
            tracing::warn!("the checkpointer thread panicked");
        }
    }

    /// Refuses every later read and write, closes the idle readers and lets go of the lock, so
    /// a new client may open the file.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.readers.lock().clear();
        self.stop_checkpointer();
        // Close the file's writer connection now (SQLite checkpoints and removes the WAL), not
        // when the last handle goes: a late close would remove the WAL of a database opened at
        // the same path since (after a sign-out and a new sign-in).
        match Connection::open_in_memory() {
            Ok(placeholder) => {
                let old = std::mem::replace(&mut *self.writer.lock(), placeholder);
                if let Err((_, err)) = old.close() {
                    tracing::warn!(error = %err, "closing the database failed");
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot close the database writer"),
        }
        self.lock.lock().take();
    }

    /// Fails with [`Error::Shutdown`] once closed.
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Shutdown);
        }
        Ok(())
    }

    /// The files of this store: the database, its WAL and shared-memory files, the lock, and
    /// the copy an unfinished encryption or re-key left.
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        [
            "",
            "-wal",
            "-shm",
            "-journal",
            "-lock",
            "-lock-journal",
            "-new",
            "-new-journal",
        ]
        .iter()
        .map(|suffix| {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            PathBuf::from(name)
        })
        .collect()
    }

    /// A position for a new outbox entry: greater than any position taken before in this
    /// process, than every stored entry's and than every unconfirmed message's `local_order`
    /// (so queue order and the order of local messages only grow). Call it while holding the
    /// writer; a position taken by a transaction that rolls back is simply never used.
    pub(crate) fn next_pos(&self) -> i64 {
        self.next_pos.fetch_add(1, Ordering::Relaxed)
    }

    /// The writer connection. Hold it for one transaction, then drop it.
    ///
    /// A caller that finds it taken says so (background work then ends its transaction early and
    /// lets it go first: [`Db::writer_wanted`], [`Db::writer_in_turn`]) and keeps trying for up
    /// to [`WRITER_SPIN`], yielding its CPU between tries, before it sleeps. A thread that sleeps
    /// must be woken and then wait for a CPU, which on a busy phone takes longer than the
    /// transaction it waited for; yielding rather than spinning matters because the holder, a
    /// background-priority thread (see `crate::priority`), may be waiting for this very CPU.
    pub(crate) fn writer(&self) -> MutexGuard<'_, Connection> {
        if let Some(conn) = self.writer.try_lock() {
            return conn;
        }
        self.wanted.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let conn = loop {
            // Yield rather than spin: the holder may be waiting for this very CPU.
            std::thread::yield_now();
            if let Some(conn) = self.writer.try_lock() {
                break conn;
            }
            if started.elapsed() >= WRITER_SPIN {
                break self.writer.lock();
            }
        };
        self.wanted.fetch_sub(1, Ordering::SeqCst);
        conn
    }

    /// Whether a caller of [`Db::writer`] is waiting for the writer now: background work that
    /// holds it ends its transaction early.
    pub(crate) fn writer_wanted(&self) -> bool {
        self.wanted.load(Ordering::SeqCst) > 0
    }

    /// The writer connection for background work that takes it again and again (the slices of
    /// a catch-up): first lets any caller of [`Db::writer`] that is waiting for it take it (for
    /// up to [`WRITER_SPIN`]), so a long series of transactions cannot keep an app write out.
    pub(crate) fn writer_in_turn(&self) -> MutexGuard<'_, Connection> {
        let started = Instant::now();
        while self.wanted.load(Ordering::SeqCst) > 0 && started.elapsed() < WRITER_SPIN {
            std::thread::yield_now();
        }
        self.writer.lock()
    }

    /// Runs a read on a pooled connection.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.check_open()?;
        let _swap = self.swap.read();
        let conn = match self.readers.lock().pop() {
            Some(c) => c,
            None => self.open_reader()?,
        };
        let out = f(&conn);
        let mut pool = self.readers.lock();
        if pool.len() < MAX_IDLE_READERS && !self.closed.load(Ordering::SeqCst) {
            pool.push(conn);
        }
        out
    }

    fn open_reader(&self) -> Result<Connection> {
        let cipher = self.cipher.lock().clone();
        let conn = connect(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            cipher.as_ref(),
        )?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.stop_checkpointer();
    }
}

#[cfg(test)]
impl Db {
    /// Commits of the writer so far.
    pub(crate) fn commit_count(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `f` as if a caller of [`Db::writer`] were waiting for the writer all along.
    pub(crate) fn with_writer_wanted<T>(&self, f: impl FnOnce() -> T) -> T {
        self.wanted.fetch_add(1, Ordering::SeqCst);
        let out = f();
        self.wanted.fetch_sub(1, Ordering::SeqCst);
        out
    }
}

/// Opens a connection to the database file at `path` through the VFS that writes each
/// commit's WAL frames at once ([`roam_wal`]; the default VFS if it could not be registered).
pub(crate) fn open_file(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    roam_wal::open(path, flags)
}

/// Opens a connection to the store at `path`: keys it (see [`cipher::apply`]), checks that
/// the key reads the file ([`Error::InvalidKey`] otherwise) and configures it.
fn connect(path: &Path, flags: OpenFlags, cipher: Option<&Cipher>) -> Result<Connection> {
    let conn = open_file(path, flags)?;
    cipher::apply(&conn, cipher)?;
    cipher::verify(&conn, path, cipher)?;
    configure(&conn)?;
    Ok(conn)
}

/// Opens the writer connection of the store at `path`: WAL, and no automatic checkpoints (see
/// the module docs).
fn open_writer(path: &Path, cipher: Option<&Cipher>) -> Result<Connection> {
    let writer = connect(path, OpenFlags::default(), cipher)?;
    writer_mode(&writer)?;
    Ok(writer)
}

/// Makes `conn` the writer: WAL, and no automatic checkpoints.
fn writer_mode(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(())
}

/// Encrypts the plain store at `path` with `cipher` (the store's lock is held, no connection
/// is open): checkpoints its WAL, copies it into a new encrypted file and renames that over it
/// (see [`cipher`]).
fn encrypt_plain(path: &Path, cipher: &Cipher) -> Result<()> {
    let conn = connect(path, OpenFlags::default(), None)?;
    let copy = cipher::new_file(path);
    let exported =
        cipher::checkpoint_all(&conn).and_then(|()| cipher::export(&conn, &copy, Some(cipher)));
    if let Err(err) = exported {
        drop(conn);
        if let Err(e) = cipher::remove_files(&copy) {
            tracing::warn!(error = %e, "cannot delete the unfinished copy");
        }
        return Err(err);
    }
    conn.close().map_err(|(_, e)| Error::from(e))?;
    cipher::swap_in(&copy, path)?;
    tracing::info!("encrypted the plain store");
    Ok(())
}

/// Starts the checkpointer of the store at `path` (see the module docs).
fn start_checkpointer(path: &Path, cipher: Option<&Cipher>) -> Result<Checkpointer> {
    let conn = connect(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        cipher,
    )?;
    let (wake, woken) = mpsc::sync_channel::<()>(1);
    let thread = std::thread::Builder::new()
        .name("roam-checkpoint".into())
        .spawn(move || {
            crate::priority::lower_current_thread();
            while woken.recv().is_ok() {
                let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                });
                match done {
                    Ok((wal, copied)) => tracing::trace!(wal, copied, "checkpoint"),
                    Err(err) => tracing::warn!(error = %err, "checkpoint failed"),
                }
            }
        })
        .map_err(|e| Error::state(format!("cannot start the checkpointer thread: {e}")))?;
    Ok(Checkpointer { wake, thread })
}

/// The first outbox position above everything stored (the outbox's largest rowid, and a walk of
/// the partial index of unconfirmed messages, which holds only local ones).
fn first_free_pos(conn: &Connection) -> Result<i64> {
    let max: i64 = conn.query_row(
        "SELECT max(COALESCE((SELECT max(pos) FROM outbox), 0), \
         COALESCE((SELECT max(local_order) FROM messages WHERE seq IS NULL), 0))",
        [],
        |r| r.get(0),
    )?;
    Ok(max + 1)
}

/// Prepared statements kept per connection: every query is prepared through the cache, and the
/// write paths use a few dozen distinct ones (the default keeps 16).
const STATEMENT_CACHE: usize = 128;

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", false)?;
    Ok(())
}

/// Brings the schema to the newest version, one migration per transaction.
fn migrate(conn: &mut Connection) -> Result<()> {
    let current: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let newest = MIGRATIONS.len() as u32;
    if current > newest {
        return Err(Error::Migration {
            version: current,
            reason: format!(
                "the database is at schema version {current} but this build knows only up to \
                 {newest} (was the app downgraded?)"
            ),
        });
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as u32 + 1;
        let tx = conn.transaction()?;
        tx.execute_batch(sql).map_err(|e| Error::Migration {
            version,
            reason: format!("{name}: {e}"),
        })?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::debug!(version, name, "applied migration");
    }
    Ok(())
}

/// Takes the exclusive lock of the store at `path` (see the module docs): a connection to the
/// lock file that holds an exclusive transaction open. SQLite's locks work across processes and
/// between connections of one process, and are released when the connection closes or the
/// process dies, so a crash never leaves the account locked.
fn lock_file(path: &Path) -> Result<Connection> {
    let mut name = path.to_owned().into_os_string();
    name.push("-lock");
    let lock_path = PathBuf::from(name);
    let conn = Connection::open(&lock_path)?;
    conn.busy_timeout(Duration::ZERO)?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    match conn.execute_batch("BEGIN EXCLUSIVE") {
        Ok(()) => Ok(conn),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            Err(Error::AlreadyOpen {
                path: path.display().to_string(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_the_same_file_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        let first = Db::open(&path).expect("open");
        assert!(matches!(Db::open(&path), Err(Error::AlreadyOpen { .. })));
        drop(first);
        let again = Db::open(&path).expect("reopen after close");
        again.close();
        assert!(matches!(again.read(|_| Ok(())), Err(Error::Shutdown)));
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, (name, _)) in MIGRATIONS.iter().enumerate() {
            let number: usize = name[..4].parse().expect("NNNN_ prefix");
            assert_eq!(number, i + 1, "{name}");
        }
    }

    #[test]
    fn open_migrates_once_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested").join("a.db");
        {
            let db = Db::open(&path).expect("open");
            let v: u32 = db
                .writer()
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .expect("version");
            assert_eq!(v, MIGRATIONS.len() as u32);
            let mode: String = db
                .writer()
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .expect("mode");
            assert_eq!(mode, "wal");
        }
        let db = Db::open(&path).expect("reopen");
        let n: i64 = db
            .read(|c| Ok(c.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?))
            .expect("read");
        assert_eq!(n, 0);
    }

    #[test]
    fn a_newer_database_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        {
            let c = Connection::open(&path).expect("open");
            c.pragma_update(None, "user_version", 99).expect("set");
        }
        assert!(matches!(
            Db::open(&path),
            Err(Error::Migration { version: 99, .. })
        ));
    }

    /// A version-1 database with queued and confirmed data keeps all of it through the
    /// upgrade, and new outbox positions stay above the old ones.
    #[test]
    fn version_2_keeps_the_data_of_version_1() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        {
            let mut c = Connection::open(&path).expect("open");
            let tx = c.transaction().expect("tx");
            tx.execute_batch(MIGRATIONS[0].1).expect("v1");
            tx.pragma_update(None, "user_version", 1).expect("version");
            tx.execute_batch(
                "INSERT INTO outbox (id, queue, op, mutation, created_at) \
                   VALUES ('k1', 'r', 'message.send', '{}', 1), ('k2', 'r', 'message.send', '{}', 2), \
                          ('k3', 'r', 'message.send', '{}', 3); \
                 DELETE FROM outbox WHERE id = 'k3'; \
                 UPDATE outbox SET state = 'failed', error_code = 'forbidden' WHERE id = 'k2'; \
                 INSERT INTO messages (local_id, room, sender, body, created_at, send_state, local_order) \
                   VALUES ('k1', 'r', 'me', 'one', 1, 'pending', 1), ('k2', 'r', 'me', 'two', 2, 'failed', 2); \
                 INSERT INTO messages (local_id, server_id, room, seq, sender, body, created_at) \
                   VALUES ('s1', 's1', 'r', 1, 'you', 'hello', 0);",
            )
            .expect("data");
            tx.commit().expect("commit");
        }
        let db = Db::open(&path).expect("migrate");
        let (outbox, messages, pending): (i64, i64, Vec<String>) = db
            .read(|c| {
                let outbox = c.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?;
                let messages = c.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?;
                let pending = reads::messages(c, "r", None, 50)?
                    .into_iter()
                    .map(|m| m.body)
                    .collect();
                Ok((outbox, messages, pending))
            })
            .expect("read");
        assert_eq!((outbox, messages), (2, 3));
        assert_eq!(pending, ["hello", "one", "two"]);
        assert!(db.next_pos() > 2, "above every stored position");
        let by_server = db
            .read(|c| reads::message_by_server_id(c, "s1"))
            .expect("read")
            .expect("found");
        assert_eq!(by_server.seq, Some(1));
    }

    /// A version-4 database keeps its messages through the upgrade to attachments, and reads
    /// them back without one; the new tables start empty.
    #[test]
    fn version_5_keeps_the_messages_of_version_4() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        {
            let mut c = Connection::open(&path).expect("open");
            let tx = c.transaction().expect("tx");
            for (_, sql) in &MIGRATIONS[..4] {
                tx.execute_batch(sql).expect("migration");
            }
            tx.pragma_update(None, "user_version", 4).expect("version");
            tx.execute_batch(
                "INSERT INTO messages (local_id, server_id, room, seq, sender, body, created_at) \
                   VALUES ('s1', 's1', 'r', 1, 'you', 'hello', 0); \
                 INSERT INTO messages (local_id, room, sender, body, created_at, send_state, local_order) \
                   VALUES ('k1', 'r', 'me', 'queued', 1, 'pending', 1);",
            )
            .expect("data");
            tx.commit().expect("commit");
        }
        let db = Db::open(&path).expect("migrate");
        let (messages, uploads, media) = db
            .read(|c| {
                let messages = reads::messages(c, "r", None, 50)?;
                let uploads: i64 = c.query_row("SELECT count(*) FROM uploads", [], |r| r.get(0))?;
                let media: i64 = c.query_row("SELECT count(*) FROM media", [], |r| r.get(0))?;
                Ok((messages, uploads, media))
            })
            .expect("read");
        let bodies: Vec<_> = messages.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["hello", "queued"]);
        assert!(messages.iter().all(|m| m.attachment.is_none()));
        assert_eq!((uploads, media), (0, 0));
    }

    /// The queries that page messages and bind server ids use the partial indexes (a local
    /// message is in neither, so every lookup must name a non-NULL value).
    #[test]
    fn message_queries_use_the_partial_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("a.db")).expect("open");
        let plan = |sql: &str| -> String {
            let conn = db.writer();
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("plan");
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(3))
                .expect("rows")
                .collect::<rusqlite::Result<Vec<_>>>()
                .expect("collect");
            rows.join("; ")
        };
        for (sql, index) in [
            (
                "SELECT * FROM messages WHERE room = 'r' AND seq IS NOT NULL AND seq < 9 \
                 ORDER BY seq DESC LIMIT 50",
                "messages_room_seq",
            ),
            (
                "SELECT * FROM messages WHERE room = 'r' AND seq IS NULL ORDER BY local_order",
                "messages_room_unconfirmed",
            ),
            (
                "SELECT * FROM messages WHERE server_id = 'x'",
                "messages_server_id",
            ),
            (
                "DELETE FROM messages WHERE room = 'r' AND seq IS NOT NULL AND send_state = 'sent'",
                "messages_room_seq",
            ),
            (
                "DELETE FROM outbox WHERE state = 'failed' AND op = 'document.put' AND queue = 'r'",
                "outbox_failed_queue",
            ),
            (
                "SELECT count(*) FROM outbox WHERE state = 'failed'",
                "outbox_failed_queue",
            ),
            (
                "SELECT id FROM outbox WHERE target = 'm' ORDER BY pos DESC LIMIT 1",
                "outbox_target",
            ),
        ] {
            let p = plan(sql);
            assert!(p.contains(index), "{sql}: {p}");
        }
    }

    /// The writer never checkpoints by itself; the checkpointer copies the WAL into the
    /// database after enough commits, and closing leaves no WAL behind.
    #[test]
    fn checkpoints_run_off_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        let db = Db::open(&path).expect("open");
        let auto: i64 = db
            .writer()
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .expect("pragma");
        assert_eq!(auto, 0);
        let before = std::fs::metadata(&path).expect("db file").len();
        for i in 0..CHECKPOINT_EVERY {
            db.writer()
                .execute(
                    "INSERT INTO kv (key, value) VALUES (?1, ?2)",
                    rusqlite::params![format!("k{i}"), "x".repeat(4000)],
                )
                .expect("insert");
            db.committed();
        }
        // The checkpoint copies the new pages into the database file (bounded wait).
        let mut looks = 0;
        while std::fs::metadata(&path).expect("db file").len() <= before {
            looks += 1;
            assert!(looks < 10_000, "no checkpoint ran");
            std::thread::sleep(Duration::from_millis(1));
        }
        db.close();
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        assert!(!PathBuf::from(wal).exists(), "the WAL is gone after close");
    }

    #[test]
    fn readers_cannot_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("a.db")).expect("open");
        let res = db.read(|c| Ok(c.execute("DELETE FROM outbox", [])?));
        assert!(res.is_err());
    }
}
