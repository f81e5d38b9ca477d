//! The single writer: one connection, owned by one OS thread, fed by a channel.
//!
//! Callers send a [`Job`] with a oneshot sender for its answer. The channel is unbounded so that
//! queuing never waits: a write is queued when `Store::commit` is called, which keeps one
//! caller's writes in call order (the queue length is the `write_queue` gauge of `/metrics`).
//! The thread takes the first job that arrives plus whatever else is already queued (up to
//! [`MAX_BATCH`]) and commits them as one group:
//!
//! ```text
//! BEGIN IMMEDIATE
//!   SAVEPOINT job; <job 1>; RELEASE job          -- success
//!   SAVEPOINT job; <job 2>; ROLLBACK TO job; RELEASE job   -- this job failed: undone alone
//!   …
//! COMMIT                                          -- one WAL commit for the whole group
//! ```
//!
//! Answers are held back until `COMMIT` returns, so no caller ever sees a result that could
//! still be lost; if `COMMIT` fails, every job of the group gets that error. Under load, batching
//! turns many small transactions into a few larger ones, and with no load a lone job commits at
//! once (no waiting for company).
//!
//! **Checkpoints** are off the commit path: the writer connection does not checkpoint on its
//! own (`wal_autocheckpoint = 0`); every [`CHECKPOINT_EVERY_JOBS`] committed jobs it wakes a
//! checkpointer thread with a connection of its own, which copies the WAL back into the
//! database (`wal_checkpoint(PASSIVE)`: it never blocks the writer or a reader). A commit then
//! costs its WAL append and `fsync` only, never a checkpoint's page copies and database `fsync`.
//!
//! SQLite starts the WAL over from its beginning only when a write transaction begins with every
//! frame copied back; under a steady stream of writes the checkpointer never gets there (the
//! writer appends while it copies), so the WAL would grow without end — every commit extending
//! the file (a server under steady load would fill its disk). So every [`WAL_RESTART_JOBS`]
//! jobs, once the checkpointer's next pass is done, the writer copies back the few frames
//! committed during that pass itself, between two groups (a small `wal_checkpoint(PASSIVE)` of
//! its own: nothing else writes then), and its next transaction starts the WAL over. The WAL
//! stays about that many jobs long. The writer's pass holds the next group back for a WAL and a
//! database `fsync` (a few milliseconds), so it is not done after every checkpoint, and it waits
//! for a moment when no job is queued (up to twice that many jobs).
//! Commits are as durable as before: the WAL is synced at each one as `synchronous` says.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::{apply, blobs};
use crate::store::write::{PurgeCursor, PurgeStep};
use crate::store::{Committed, RetentionCutoffs, StoreError, StoreResult, Write};

/// Most jobs committed in one transaction.
pub(super) const MAX_BATCH: usize = 256;

/// Committed jobs between two checkpoints (at about ten WAL pages a message, a few thousand
/// pages: the WAL stays a few MiB).
pub(super) const CHECKPOINT_EVERY_JOBS: usize = 256;
/// Committed jobs between two starts of the WAL from its beginning (about 40 MiB of WAL at ten
/// pages a message).
pub(super) const WAL_RESTART_JOBS: usize = 4 * CHECKPOINT_EVERY_JOBS;

type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// One unit of work for the writer thread.
#[derive(Debug)]
pub(super) enum Job {
    Commit(Box<Write>, Reply<Committed>),
    TouchUser {
        user: String,
        now: i64,
        reply: Reply<()>,
    },
    SaveLastSeen {
        user: String,
        at: i64,
        reply: Reply<()>,
    },
    /// One batch of a retention pass.
    Purge(RetentionCutoffs, PurgeCursor, Reply<PurgeStep>),
    /// Empty the writer connection's page cache (after many sockets closed).
    ReleaseMemory {
        reply: Reply<()>,
    },
    /// A change to the attachment accounts (`blobs.rs`).
    Blob(blobs::Op, Reply<blobs::Answer>),
    /// An operator's change (`admin.rs` of this store), answering two counts of rows it changed.
    Admin(AdminJob, Reply<(u64, u64)>),
    /// A write of another part of the store (the push queue, `push.rs`): see [`Writer::task`].
    Task(Box<dyn Task>),
}

/// The body of a [`Job::Admin`].
pub(super) struct AdminJob(pub Box<AdminFn>);

/// What a [`Job::Admin`] runs in its savepoint.
pub(super) type AdminFn = dyn FnOnce(&Transaction<'_>) -> StoreResult<(u64, u64)> + Send;

impl std::fmt::Debug for AdminJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminJob(..)")
    }
}

/// A typed closure on the write transaction, with its reply.
pub(super) trait Task: Send {
    /// Runs in its savepoint.
    fn run(self: Box<Self>, tx: &Transaction<'_>) -> Ran;
    /// Answers `err` without running.
    fn fail(self: Box<Self>, err: &str);
}

impl std::fmt::Debug for dyn Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Task")
    }
}

struct TypedTask<T, F> {
    f: F,
    reply: Reply<T>,
}

impl<T, F> Task for TypedTask<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
{
    fn run(self: Box<Self>, tx: &Transaction<'_>) -> Ran {
        let TypedTask { f, reply } = *self;
        in_savepoint(tx, f, |r| Done::Task(Box::new(TaskDone { reply, r })))
    }

    fn fail(self: Box<Self>, err: &str) {
        drop(self.reply.send(Err(backend(err))));
    }
}

/// A task's outcome, kept until the group's `COMMIT`.
trait Answer: Send {
    fn is_ok(&self) -> bool;
    fn answer(self: Box<Self>);
    fn fail(self: Box<Self>, err: &str);
}

struct TaskDone<T> {
    reply: Reply<T>,
    r: StoreResult<T>,
}

impl<T: Send> Answer for TaskDone<T> {
    fn is_ok(&self) -> bool {
        self.r.is_ok()
    }

    fn answer(self: Box<Self>) {
        drop(self.reply.send(self.r));
    }

    fn fail(self: Box<Self>, err: &str) {
        drop(self.reply.send(Err(backend(err))));
    }
}

/// A job's outcome, kept until the group's `COMMIT` decides whether it stands.
// One per job of a group, for the group's life: a message's attachment inline is not worth a box.
#[allow(clippy::large_enum_variant)]
enum Done {
    Commit(Reply<Committed>, StoreResult<Committed>),
    Unit(Reply<()>, StoreResult<()>),
    Purge(Reply<PurgeStep>, StoreResult<PurgeStep>),
    Blob(Reply<blobs::Answer>, StoreResult<blobs::Answer>),
    Count(Reply<(u64, u64)>, StoreResult<(u64, u64)>),
    Task(Box<dyn Answer>),
}

impl Job {
    /// Runs the job inside its own savepoint (`push_jobs`: whether a new message records its
    /// push job).
    fn run(self, tx: &Transaction<'_>, push_jobs: bool) -> Ran {
        match self {
            Job::Commit(write, reply) => in_savepoint(
                tx,
                |tx| apply::commit(tx, &write, push_jobs),
                |r| Done::Commit(reply, r),
            ),
            Job::TouchUser { user, now, reply } => in_savepoint(
                tx,
                |tx| apply::touch_user(tx, &user, now),
                |r| Done::Unit(reply, r),
            ),
            Job::SaveLastSeen { user, at, reply } => in_savepoint(
                tx,
                |tx| apply::save_last_seen(tx, &user, at),
                |r| Done::Unit(reply, r),
            ),
            Job::Purge(cutoffs, from, reply) => in_savepoint(
                tx,
                |tx| apply::purge_batch(tx, &cutoffs, &from),
                |r| Done::Purge(reply, r),
            ),
            Job::ReleaseMemory { reply } => in_savepoint(
                tx,
                |tx| Ok(tx.execute_batch("PRAGMA shrink_memory")?),
                |r| Done::Unit(reply, r),
            ),
            Job::Blob(op, reply) => {
                in_savepoint(tx, |tx| blobs::apply(tx, &op), |r| Done::Blob(reply, r))
            }
            Job::Admin(job, reply) => in_savepoint(tx, job.0, |r| Done::Count(reply, r)),
            Job::Task(task) => task.run(tx),
        }
    }

    /// Answers without running (the group could not start).
    fn fail(self, err: &str) {
        match self {
            Job::Commit(_, reply) => drop(reply.send(Err(backend(err)))),
            Job::TouchUser { reply, .. }
            | Job::SaveLastSeen { reply, .. }
            | Job::ReleaseMemory { reply } => drop(reply.send(Err(backend(err)))),
            Job::Purge(_, _, reply) => drop(reply.send(Err(backend(err)))),
            Job::Blob(_, reply) => drop(reply.send(Err(backend(err)))),
            Job::Admin(_, reply) => drop(reply.send(Err(backend(err)))),
            Job::Task(task) => task.fail(err),
        }
    }
}

impl Done {
    fn is_ok(&self) -> bool {
        match self {
            Done::Commit(_, r) => r.is_ok(),
            Done::Unit(_, r) => r.is_ok(),
            Done::Purge(_, r) => r.is_ok(),
            Done::Blob(_, r) => r.is_ok(),
            Done::Count(_, r) => r.is_ok(),
            Done::Task(t) => t.is_ok(),
        }
    }

    /// Sends the outcome; a caller that stopped waiting is no error.
    fn answer(self) {
        match self {
            Done::Commit(reply, r) => {
                if let Ok(committed) = &r {
                    committed.confirm();
                }
                drop(reply.send(r))
            }
            Done::Unit(reply, r) => drop(reply.send(r)),
            Done::Purge(reply, r) => drop(reply.send(r)),
            Done::Blob(reply, r) => drop(reply.send(r)),
            Done::Count(reply, r) => drop(reply.send(r)),
            Done::Task(t) => t.answer(),
        }
    }

    /// Sends `err` instead of the outcome (the group did not commit).
    fn fail(self, err: &str) {
        match self {
            Done::Commit(reply, _) => drop(reply.send(Err(backend(err)))),
            Done::Unit(reply, _) => drop(reply.send(Err(backend(err)))),
            Done::Purge(reply, _) => drop(reply.send(Err(backend(err)))),
            Done::Blob(reply, _) => drop(reply.send(Err(backend(err)))),
            Done::Count(reply, _) => drop(reply.send(Err(backend(err)))),
            Done::Task(t) => t.fail(err),
        }
    }
}

fn backend(err: &str) -> StoreError {
    StoreError::Backend(err.to_owned())
}

/// A job's outcome, and the error that broke the whole group if its savepoint failed.
pub(super) struct Ran {
    done: Done,
    broke_group: Option<rusqlite::Error>,
}

/// `SAVEPOINT`, the job, then `RELEASE` on success or `ROLLBACK TO` + `RELEASE` on failure.
/// A panic in the job is caught and becomes that job's error. If the savepoint itself cannot
/// be opened or closed, the transaction is in an unknown state and the group must be abandoned.
fn in_savepoint<T>(
    tx: &Transaction<'_>,
    job: impl FnOnce(&Transaction<'_>) -> StoreResult<T>,
    done: impl FnOnce(StoreResult<T>) -> Done,
) -> Ran {
    if let Err(e) = run_cached(tx, "SAVEPOINT job") {
        return Ran {
            done: done(Err(StoreError::Backend(e.to_string()))),
            broke_group: Some(e),
        };
    }
    let result = catch_unwind(AssertUnwindSafe(|| job(tx))).unwrap_or_else(|_| {
        tracing::error!("store write panicked; rolled back");
        Err(backend("write panicked"))
    });
    let closed = if result.is_ok() {
        run_cached(tx, "RELEASE job")
    } else {
        run_cached(tx, "ROLLBACK TO job").and_then(|()| run_cached(tx, "RELEASE job"))
    };
    Ran {
        done: done(result),
        broke_group: closed.err(),
    }
}

/// Runs a statement without parameters through the statement cache (two of these frame every
/// job; `execute_batch` would parse them again each time).
fn run_cached(tx: &Transaction<'_>, sql: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(sql)?.execute([]).map(drop)
}

/// The caller side: a sender and the queue gauge. Dropping it stops the thread once the jobs
/// already queued are done, and waits for that.
#[derive(Debug)]
pub(super) struct Writer {
    sender: Option<mpsc::UnboundedSender<Job>>,
    queued: Arc<AtomicU32>,
    /// When the group being committed started (ms on the writer's clock, from its start), 0
    /// while the writer waits for work: a writer stuck in one group (a disk that stopped
    /// answering) shows here.
    busy_since: Arc<AtomicU64>,
    started: Instant,
    thread: Option<JoinHandle<()>>,
    /// Whether a new message records its push job (`PushStore::set_push_jobs`), read by the
    /// writer thread at each group.
    push_jobs: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the writer thread on `conn` (and the checkpointer, for a database in a file).
    pub(super) fn start(conn: Connection) -> StoreResult<Writer> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicU32::new(0));
        let gauge = queued.clone();
        let busy_since = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let busy = Busy {
            since: busy_since.clone(),
            started,
        };
        let checkpointer = Checkpointer::start(&conn);
        let push_jobs = Arc::new(AtomicBool::new(true));
        let jobs = Arc::clone(&push_jobs);
        let thread = std::thread::Builder::new()
            .name("roam-sqlite-writer".into())
            .spawn(move || run(conn, receiver, &gauge, &busy, checkpointer, &jobs))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            sender: Some(sender),
            queued,
            busy_since,
            started,
            thread: Some(thread),
            push_jobs,
        })
    }

    /// Whether the messages of the groups that start from now on record their push jobs.
    pub(super) fn set_push_jobs(&self, on: bool) {
        self.push_jobs.store(on, Ordering::Release);
    }

    /// Whether a new message records its push job.
    pub(super) fn push_jobs(&self) -> bool {
        self.push_jobs.load(Ordering::Acquire)
    }

    /// How long the group being committed has taken so far (`None`: the writer is waiting
    /// for work).
    pub(super) fn busy_for(&self) -> Option<std::time::Duration> {
        match self.busy_since.load(Ordering::Acquire) {
            0 => None,
            since => {
                let now = self.started.elapsed().as_millis() as u64;
                Some(std::time::Duration::from_millis(now.saturating_sub(since)))
            }
        }
    }

    /// Jobs sent and not yet taken by the writer.
    pub(super) fn queued(&self) -> u32 {
        self.queued.load(Ordering::Relaxed)
    }

    /// True while the writer thread runs.
    pub(super) fn is_alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Queues `f` as a job of its own, run in its savepoint on the write transaction and
    /// answered after the group's `COMMIT` (see [`Writer::submit`]).
    pub(super) fn task<T, F>(&self, f: F) -> impl Future<Output = StoreResult<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.submit(move |reply| Job::Task(Box::new(TypedTask { f, reply })))
    }

    /// Queues a job made around a fresh reply channel — at once, before the returned future is
    /// polled, so jobs submitted one after another are applied in that order — and returns the
    /// future of its answer.
    pub(super) fn submit<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> Job,
    ) -> impl Future<Output = StoreResult<T>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = match &self.sender {
            Some(sender) => {
                // Counted before sending so the writer's decrement can never come first.
                self.queued.fetch_add(1, Ordering::Relaxed);
                let sent = sender.send(make(reply)).is_ok();
                if !sent {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                }
                sent
            }
            None => false,
        };
        async move {
            if !queued {
                return Err(stopped());
            }
            answer.await.map_err(|_| stopped())?
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("the store writer has stopped".into())
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the store writer thread panicked");
            }
        }
    }
}

/// Where the writer thread says when its current group started.
struct Busy {
    since: Arc<AtomicU64>,
    started: Instant,
}

impl Busy {
    fn begin(&self) {
        // At least 1: 0 means idle.
        let now = (self.started.elapsed().as_millis() as u64).max(1);
        self.since.store(now, Ordering::Release);
    }

    fn end(&self) {
        self.since.store(0, Ordering::Release);
    }
}

/// The writer thread's loop: one group per wake-up, until every sender is gone.
fn run(
    mut conn: Connection,
    mut receiver: mpsc::UnboundedReceiver<Job>,
    queued: &AtomicU32,
    busy: &Busy,
    checkpointer: Option<Checkpointer>,
    push_jobs: &AtomicBool,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut since_checkpoint = 0usize;
    let mut since_restart = 0usize;
    let mut restart_due = false;
    while let Some(first) = receiver.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        queued.fetch_sub(batch.len() as u32, Ordering::Relaxed);
        since_checkpoint += batch.len();
        since_restart += batch.len();
        busy.begin();
        commit_group(&mut conn, &mut batch, push_jobs.load(Ordering::Acquire));
        busy.end();
        let Some(c) = &checkpointer else {
            continue;
        };
        // At a moment when no job waits, unless the WAL is already twice as long as it
        // should be (a store that is never idle).
        let idle = queued.load(Ordering::Relaxed) == 0;
        if restart_due
            && (idle || since_restart >= 2 * WAL_RESTART_JOBS)
            && c.passed.swap(false, Ordering::AcqRel)
        {
            finish_checkpoint(&conn);
            restart_due = false;
            since_restart = 0;
        }
        if since_checkpoint >= CHECKPOINT_EVERY_JOBS {
            since_checkpoint = 0;
            if since_restart >= WAL_RESTART_JOBS && !restart_due {
                // Only a pass that starts from here counts: what it leaves is small.
                restart_due = true;
                c.passed.store(false, Ordering::Release);
            }
            c.wake();
        }
    }
    // The checkpointer finishes its last pass before the writer connection closes (which
    // checkpoints whatever is left).
    drop(checkpointer);
    tracing::debug!("store writer stopped");
}

/// Copies back, on the writer's own connection, what the checkpointer's last pass left (see the
/// module documentation).
fn finish_checkpoint(conn: &Connection) {
    if let Err(e) = passive_checkpoint(conn, "store: writer finished the checkpoint") {
        tracing::warn!(error = %e, "store: the writer could not finish a checkpoint");
    }
}

/// One `PRAGMA wal_checkpoint(PASSIVE)`, logged with what it found and copied.
fn passive_checkpoint(conn: &Connection, what: &'static str) -> rusqlite::Result<()> {
    let started = Instant::now();
    let (wal_pages, copied) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    })?;
    tracing::debug!(
        wal_pages,
        copied,
        elapsed_us = started.elapsed().as_micros() as u64,
        "{what}"
    );
    Ok(())
}

/// The thread that checkpoints the WAL for the writer (see the module documentation).
struct Checkpointer {
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Set after every checkpoint pass (the frames the writer appended while it ran are left).
    passed: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Opens a connection of its own to the writer's database and turns the writer's automatic
    /// checkpoints off. `None` (and automatic checkpoints kept) for an in-memory database or
    /// when that fails.
    fn start(writer: &Connection) -> Option<Checkpointer> {
        let path = writer.path().filter(|p| !p.is_empty())?.to_owned();
        let conn = match roam_wal::open(
            Path::new(&path),
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "store: no checkpointer; the writer checkpoints itself");
                return None;
            }
        };
        let (wake, asked) = std::sync::mpsc::sync_channel::<()>(1);
        let passed = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&passed);
        let thread = std::thread::Builder::new()
            .name("roam-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&conn, &asked, &done));
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "store: no checkpointer; the writer checkpoints itself");
                return None;
            }
        };
        if let Err(e) = writer.pragma_update(None, "wal_autocheckpoint", 0) {
            tracing::warn!(error = %e, "store: the writer keeps checkpointing itself");
        }
        Some(Checkpointer {
            wake: Some(wake),
            thread: Some(thread),
            passed,
        })
    }

    /// Asks for a checkpoint (one already asked for and not started yet covers this one).
    fn wake(&self) {
        if let Some(w) = &self.wake {
            let _ = w.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.wake.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the store checkpoint thread panicked");
            }
        }
    }
}

/// One `PRAGMA wal_checkpoint(PASSIVE)` per request, until the writer goes.
fn checkpoint_loop(conn: &Connection, asked: &std::sync::mpsc::Receiver<()>, passed: &AtomicBool) {
    while asked.recv().is_ok() {
        match passive_checkpoint(conn, "store: checkpoint") {
            // The writer appends while a pass runs: what came since is for the writer to
            // finish when it starts the WAL over.
            Ok(()) => passed.store(true, Ordering::Release),
            Err(e) => tracing::warn!(error = %e, "store: checkpoint failed"),
        }
    }
}

/// Commits one group; every job of `batch` is answered and the vector left empty. A new message
/// records its push job when `push_jobs`.
pub(super) fn commit_group(conn: &mut Connection, batch: &mut Vec<Job>, push_jobs: bool) {
    let started = Instant::now();
    let size = batch.len();
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!(error = %e, size, "store: cannot begin a write transaction");
            let msg = e.to_string();
            batch.drain(..).for_each(|job| job.fail(&msg));
            return;
        }
    };
    let mut done = Vec::with_capacity(size);
    let mut broken: Option<String> = None;
    for job in batch.drain(..) {
        if let Some(msg) = &broken {
            job.fail(msg);
            continue;
        }
        let ran = job.run(&tx, push_jobs);
        done.push(ran.done);
        if let Some(e) = ran.broke_group {
            tracing::error!(error = %e, "store: savepoint failed, abandoning the group");
            broken = Some(e.to_string());
        }
    }
    if let Some(msg) = broken {
        drop(tx); // rolls back
        done.into_iter().for_each(|d| d.fail(&msg));
        return;
    }
    let failed = done.iter().filter(|d| !d.is_ok()).count();
    match tx.commit() {
        Ok(()) => {
            tracing::debug!(
                size,
                failed,
                elapsed_us = started.elapsed().as_micros() as u64,
                "store: group committed"
            );
            done.into_iter().for_each(Done::answer);
        }
        Err(e) => {
            tracing::error!(error = %e, size, "store: group commit failed");
            let msg = e.to_string();
            done.into_iter().for_each(|d| d.fail(&msg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Change, Store, Write};

    fn write(change: Change) -> Write {
        Write {
            actor: "w".into(),
            now: 1,
            guard: None,
            after: None,
            idem: None,
            change,
            notify: Vec::new(),
        }
    }

    /// A store at `path` holding room `r`.
    async fn store_with_room(path: &Path) -> SqliteStore {
        let store = SqliteStore::open(path, 1).await.expect("store");
        store
            .commit(write(Change::CreateRoom {
                name: "r".into(),
                kind: roam_proto::RoomKind::Public,
                title: String::new(),
                metadata: serde_json::json!({}),
                owner: "w".into(),
            }))
            .await
            .expect("room");
        store
    }

    /// Commits messages `m{from}`..`m{to}` into room `r`, one write each, one after another.
    async fn send(store: &SqliteStore, from: usize, to: usize) {
        let body = "x".repeat(2_000);
        for i in from..to {
            store
                .commit(write(Change::InsertMessage {
                    id: format!("m{i}"),
                    room: "r".into(),
                    body: body.clone(),
                    reply_to: None,
                    attachment: None,
                }))
                .await
                .expect("message");
        }
    }

    #[test]
    fn a_group_in_progress_is_timed_and_an_idle_writer_is_not() {
        let since = Arc::new(AtomicU64::new(0));
        let busy = Busy {
            since: since.clone(),
            started: Instant::now() - std::time::Duration::from_secs(30),
        };
        let writer = Writer {
            sender: None,
            queued: Arc::new(AtomicU32::new(0)),
            busy_since: since,
            started: busy.started,
            thread: None,
            push_jobs: Arc::new(AtomicBool::new(true)),
        };
        assert_eq!(writer.busy_for(), None, "idle");
        busy.begin();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let taken = writer.busy_for().expect("a group in progress");
        assert!(taken >= std::time::Duration::from_millis(20), "{taken:?}");
        busy.end();
        assert_eq!(writer.busy_for(), None, "done");
    }

    #[tokio::test]
    async fn the_checkpointer_copies_the_wal_back_without_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let store = store_with_room(&path).await;
        let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let before = size();
        send(&store, 0, CHECKPOINT_EVERY_JOBS * 2).await;
        // Fewer writes than the writer's own pass comes after: the database file grows only
        // through the checkpointer (waits at most 20 s; a loaded machine may be slow to
        // schedule it).
        let mut grown = false;
        for _ in 0..200 {
            if size() > before + 256 * 1024 {
                grown = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(grown, "the database file stayed at {} bytes", size());
    }

    #[tokio::test]
    async fn the_wal_starts_over_under_a_steady_stream_of_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let wal = dir.path().join("t.db-wal");
        let store = store_with_room(&path).await;
        let wal_size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        // The file keeps the longest length the WAL reached: one that starts over stops
        // growing, one that never does grows with every write.
        send(&store, 0, WAL_RESTART_JOBS * 2).await;
        let early = wal_size();
        send(&store, WAL_RESTART_JOBS * 2, WAL_RESTART_JOBS * 8).await;
        let late = wal_size();
        assert!(early > 0, "no WAL file at {}", wal.display());
        assert!(
            late < early * 2,
            "the WAL grew from {early} to {late} bytes over three times as many writes"
        );
    }
}
