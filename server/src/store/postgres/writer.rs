//! Writer lanes: a few tasks, each owning one connection and fed by its own channel.
//!
//! `Store::commit` picks the lane by a hash of the write's room (its actor when it names no
//! room) and sends the write at once (the channel is unbounded, so queuing never waits): a
//! room's writes go down one lane in call order and are applied in that order, which is the
//! trait's "queued when called" contract for everything that can conflict. Writes to different
//! rooms run on different lanes concurrently. A room's writes from other servers meet this
//! server's at the room row's lock in Postgres (see `apply.rs`), which orders them; on one
//! server a hot room's writes are committed in groups by its one lane instead of each lane
//! taking its turn on that lock.
//!
//! A lane commits what is queued on it as one group: one transaction, each write in its own
//! savepoint (a failing write is undone alone), one `COMMIT` and so one WAL flush for all. A lone
//! write is its own transaction, at once. Answers are sent only after `COMMIT` returned, so no
//! caller sees a result that could still be lost; if `COMMIT` fails, every write of the group gets
//! that error. A deadlock or serialization failure (possible between lanes and servers) abandons
//! the group and runs its writes one transaction each, each retried a few times; a lost
//! connection fails the writes with `Backend` and the lane opens a new connection for the next.
//!
//! **Bounds.** A lane never waits without end. Its connection has `lock_timeout` and
//! `statement_timeout`, and a deadline on each round trip (`conn.rs`): a write waiting on a room
//! row that someone else holds fails alone (its savepoint is rolled back, `Backend`, 503) and
//! the rest of the group goes on; the group's later writes to that same room are answered the
//! same way without waiting again, so one locked room costs the lane at most one lock timeout
//! per group. A connection that missed a deadline is dropped (its state is unknown) and every
//! write of its group gets a `Backend` error: one whose `COMMIT` may have landed is a transient
//! error all the same, and its resend with the same idempotency key replays. A write that has
//! waited in the queue longer than [`Lanes`]' queue bound is answered `Backend` without being
//! tried. Each lane records when it last finished a group; [`Lanes::stalled`] names a lane with
//! writes queued and no group finished for too long (`/readyz`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::apply::{self, Outcome};
use super::conn::{self, Conn, Timeouts};
use crate::store::{Committed, StoreError, StoreResult, Write};

/// How many times a write that lost a deadlock or a serialization conflict is tried in all.
const ATTEMPTS: u32 = 5;
/// Most writes a lane commits in one transaction.
const MAX_GROUP: usize = 64;

type Reply = oneshot::Sender<StoreResult<Committed>>;

struct Job {
    write: Box<Write>,
    reply: Reply,
    queued_at: Instant,
}

/// The lanes. Dropping them closes the channels; each lane finishes its queued writes and ends.
#[derive(Debug)]
pub(super) struct Lanes {
    senders: Vec<mpsc::UnboundedSender<JobBox>>,
    state: Arc<[LaneState]>,
    /// What the lanes' progress is measured from.
    epoch: Instant,
    /// Whether a new message records its push job (`PushStore::set_push_jobs`), read by each
    /// lane at each group.
    push_jobs: Arc<AtomicBool>,
}

/// One lane's progress, read by [`Lanes::stalled`] and the pool figures.
#[derive(Debug, Default)]
struct LaneState {
    /// Writes sent to the lane and not answered.
    pending: AtomicU32,
    /// Milliseconds after the epoch at which the lane last finished a group, or was idle when a
    /// write came.
    progress_ms: AtomicU64,
}

/// What a lane needs besides its channel.
struct LaneContext {
    lane: u32,
    config: tokio_postgres::Config,
    timeouts: Timeouts,
    state: Arc<[LaneState]>,
    epoch: Instant,
    push_jobs: Arc<AtomicBool>,
}

impl LaneContext {
    fn state(&self) -> Option<&LaneState> {
        self.state.get(self.lane as usize)
    }

    /// Longest a write may wait in the queue before it is answered without being tried.
    fn queue_bound(&self) -> Duration {
        2 * self.timeouts.deadline()
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A queued job (boxed: the channel holds pointers).
pub(super) struct JobBox(Box<Job>);

impl std::fmt::Debug for JobBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("actor", &self.0.write.actor)
            .finish_non_exhaustive()
    }
}

impl Lanes {
    /// Starts `n` lanes (at least one); each opens its connection when its first write comes.
    pub(super) fn start(config: &tokio_postgres::Config, n: u32, timeouts: Timeouts) -> Lanes {
        let n = n.max(1);
        let state: Arc<[LaneState]> = (0..n).map(|_| LaneState::default()).collect();
        let epoch = Instant::now();
        let push_jobs = Arc::new(AtomicBool::new(true));
        let senders = (0..n)
            .map(|lane| {
                let (tx, rx) = mpsc::unbounded_channel();
                let cx = LaneContext {
                    lane,
                    config: config.clone(),
                    timeouts,
                    state: state.clone(),
                    epoch,
                    push_jobs: Arc::clone(&push_jobs),
                };
                tokio::spawn(run(cx, rx));
                tx
            })
            .collect();
        Lanes {
            senders,
            state,
            epoch,
            push_jobs,
        }
    }

    /// Whether the messages of the groups that start from now on record their push jobs.
    pub(super) fn set_push_jobs(&self, on: bool) {
        self.push_jobs.store(on, Ordering::Release);
    }

    /// Whether a new message records its push job.
    pub(super) fn push_jobs(&self) -> bool {
        self.push_jobs.load(Ordering::Acquire)
    }

    /// Writes sent and not yet finished.
    pub(super) fn queued(&self) -> u32 {
        self.state
            .iter()
            .map(|s| s.pending.load(Ordering::Relaxed))
            .fold(0u32, u32::saturating_add)
    }

    /// The first lane that has writes queued and has finished no group for longer than `bound`,
    /// with how long that has been.
    pub(super) fn stalled(&self, bound: Duration) -> Option<(usize, Duration)> {
        let now = millis_since(self.epoch);
        self.state.iter().enumerate().find_map(|(lane, s)| {
            if s.pending.load(Ordering::Relaxed) == 0 {
                return None;
            }
            let idle =
                Duration::from_millis(now.saturating_sub(s.progress_ms.load(Ordering::Relaxed)));
            (idle > bound).then_some((lane, idle))
        })
    }

    /// Queues the write now (before the future is polled) and returns its answer's future.
    pub(super) fn submit(
        &self,
        write: Write,
    ) -> impl Future<Output = StoreResult<Committed>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let lane = lane_of(lane_key(&write), self.senders.len());
        let sent = match (self.senders.get(lane), self.state.get(lane)) {
            (Some(sender), Some(state)) => {
                if state.pending.fetch_add(1, Ordering::Relaxed) == 0 {
                    // An idle lane: its wait for progress starts now.
                    state
                        .progress_ms
                        .store(millis_since(self.epoch), Ordering::Relaxed);
                }
                let job = JobBox(Box::new(Job {
                    write: Box::new(write),
                    reply,
                    queued_at: Instant::now(),
                }));
                let ok = sender.send(job).is_ok();
                if !ok {
                    state.pending.fetch_sub(1, Ordering::Relaxed);
                }
                ok
            }
            _ => false,
        };
        async move {
            if !sent {
                return Err(stopped());
            }
            answer.await.map_err(|_| stopped())?
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("the store's writer lanes have stopped".into())
}

/// The lane of a key: a stable hash, so writes with one key always share a lane.
fn lane_of(key: &str, lanes: usize) -> usize {
    let h = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
    (h % lanes.max(1) as u64) as usize
}

/// What a write is queued by: its room when it has one, else its actor. A room's writes then
/// share one lane on this server, in call order, and are committed in groups by it instead of
/// taking turns with the other lanes on the room row's lock; writes that name no room (an
/// invitation answered by id, notifications marked read) keep their actor's order.
fn lane_key(w: &Write) -> &str {
    w.change.room().unwrap_or(&w.actor)
}

/// One lane's loop: takes the first write that arrives plus whatever else is queued (up to
/// [`MAX_GROUP`]) and commits them as one group, until the channel closes. Writes that waited
/// longer than the queue bound are answered without being tried.
async fn run(cx: LaneContext, mut rx: mpsc::UnboundedReceiver<JobBox>) {
    let lane = cx.lane;
    let mut conn: Option<Conn> = None;
    let mut group: Vec<Box<Job>> = Vec::with_capacity(MAX_GROUP);
    while let Some(JobBox(first)) = rx.recv().await {
        let mut expired = 0u32;
        let mut take = |job: Box<Job>, group: &mut Vec<Box<Job>>| {
            let waited = job.queued_at.elapsed();
            if waited > cx.queue_bound() {
                expired += 1;
                let _ = job.reply.send(Err(StoreError::Backend(format!(
                    "the write waited {} ms for writer lane {lane}; not tried",
                    waited.as_millis()
                ))));
            } else {
                group.push(job);
            }
        };
        take(first, &mut group);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(JobBox(job)) => take(job, &mut group),
                Err(_) => break,
            }
        }
        if expired > 0 {
            tracing::warn!(lane, expired, "store: writes waited too long in the queue");
            if let Some(s) = cx.state() {
                s.pending.fetch_sub(expired, Ordering::Relaxed);
            }
        }
        if group.is_empty() {
            continue;
        }
        let started = Instant::now();
        let results = run_group(&cx, &mut conn, &group).await;
        if let Some(s) = cx.state() {
            s.progress_ms
                .store(millis_since(cx.epoch), Ordering::Relaxed);
            s.pending.fetch_sub(group.len() as u32, Ordering::Relaxed);
        }
        tracing::trace!(
            lane,
            size = group.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "store: write group done"
        );
        for (job, result) in group.drain(..).zip(results) {
            if let Err(e @ StoreError::Backend(_)) = &result {
                tracing::error!(lane, error = %e, "store: write failed");
            }
            // The caller may have stopped waiting; the write stands (or not) all the same.
            let _ = job.reply.send(result);
        }
    }
    tracing::debug!(lane, "store writer lane stopped");
}

/// Why a group could not be committed whole.
enum GroupFailed {
    /// A write lost a lock race with another lane or server: each write runs on its own.
    Retry,
    /// The connection failed, or `COMMIT` did: every write of the group gets this error.
    Fatal(String),
}

/// Commits a group: one transaction, each write in its own savepoint (a failing write is undone
/// alone), one `COMMIT` (one WAL flush) for all. Falls back to one transaction per write when a
/// write of the group lost a lock race.
async fn run_group(
    cx: &LaneContext,
    slot: &mut Option<Conn>,
    group: &[Box<Job>],
) -> Vec<StoreResult<Committed>> {
    let push_jobs = cx.push_jobs.load(Ordering::Acquire);
    if let [job] = group {
        return vec![run_job(cx, slot, &job.write, push_jobs).await];
    }
    if slot.as_ref().is_none_or(Conn::is_closed) {
        match conn::connect_bounded(&cx.config, &cx.timeouts).await {
            Ok(c) => *slot = Some(c),
            Err(e) => return fail_all(group.len(), &e.to_string()),
        }
    }
    let outcome = match slot.as_ref() {
        Some(c) => {
            let outcome = group_transaction(c, group, push_jobs).await;
            c.take_retryable();
            c.take_timed_out();
            if c.is_closed() {
                *slot = None;
            }
            outcome
        }
        None => Err(GroupFailed::Fatal("no writer connection".into())),
    };
    match outcome {
        Ok(results) => results,
        Err(GroupFailed::Fatal(msg)) => fail_all(group.len(), &msg),
        Err(GroupFailed::Retry) => {
            tracing::debug!(
                size = group.len(),
                "store: write group lost a lock race, one by one"
            );
            let mut results = Vec::with_capacity(group.len());
            for job in group {
                results.push(run_job(cx, slot, &job.write, push_jobs).await);
            }
            results
        }
    }
}

fn fail_all(n: usize, msg: &str) -> Vec<StoreResult<Committed>> {
    (0..n)
        .map(|_| Err(StoreError::Backend(msg.to_owned())))
        .collect()
}

async fn group_transaction(
    c: &Conn,
    group: &[Box<Job>],
    push_jobs: bool,
) -> Result<Vec<StoreResult<Committed>>, GroupFailed> {
    let fatal = |e: StoreError| GroupFailed::Fatal(e.to_string());
    // `BEGIN` and the first savepoint go together; each later savepoint goes with the end of
    // the write before it (one round trip fewer per write while the room row is locked).
    if let Err(e) = c.savepoint("BEGIN; SAVEPOINT w").await {
        c.rollback().await;
        return Err(fatal(e));
    }
    let mut results = Vec::with_capacity(group.len());
    // Rooms (lane keys) whose write hit the lock or statement timeout: the group's later writes
    // to them would wait just as long, and are answered at once instead.
    let mut timed_out: Vec<&str> = Vec::new();
    for (i, job) in group.iter().enumerate() {
        let key = lane_key(&job.write);
        let applied = if timed_out.contains(&key) {
            Err(StoreError::Backend(format!(
                "an earlier write to {key} in this group timed out waiting; not tried"
            )))
        } else {
            apply::commit(c, &job.write, push_jobs).await
        };
        let (result, keep) = match applied {
            Ok(Outcome::Applied(done)) => (Ok(done), true),
            Ok(Outcome::Replayed(done)) => (Ok(done), false),
            Err(e) => {
                if c.take_retryable() {
                    c.rollback().await;
                    return Err(GroupFailed::Retry);
                }
                if c.take_timed_out() {
                    tracing::warn!(key, error = %e, "store: a write timed out in its group");
                    timed_out.push(key);
                }
                (Err(e), false)
            }
        };
        let last = i + 1 == group.len();
        let end = match (keep, last) {
            (true, true) => "RELEASE SAVEPOINT w",
            (true, false) => "RELEASE SAVEPOINT w; SAVEPOINT w",
            (false, true) => "ROLLBACK TO SAVEPOINT w; RELEASE SAVEPOINT w",
            (false, false) => "ROLLBACK TO SAVEPOINT w; RELEASE SAVEPOINT w; SAVEPOINT w",
        };
        if let Err(e) = c.savepoint(end).await {
            c.rollback().await;
            return Err(fatal(e));
        }
        results.push(result);
    }
    c.commit().await.map_err(fatal)?;
    for committed in results.iter().flatten() {
        committed.confirm();
    }
    Ok(results)
}

/// Runs one write on the lane's connection (opening it if needed), retrying deadlocks.
async fn run_job(
    cx: &LaneContext,
    slot: &mut Option<Conn>,
    write: &Write,
    push_jobs: bool,
) -> StoreResult<Committed> {
    let mut attempt = 1;
    loop {
        if slot.as_ref().is_none_or(Conn::is_closed) {
            *slot = Some(conn::connect_bounded(&cx.config, &cx.timeouts).await?);
        }
        let Some(c) = slot.as_ref() else {
            return Err(StoreError::Backend("no writer connection".into()));
        };
        let result = transaction(c, write, push_jobs).await;
        let retry = c.take_retryable();
        c.take_timed_out();
        if c.is_closed() {
            *slot = None;
        }
        match result {
            Err(e) if retry && attempt < ATTEMPTS => {
                tracing::debug!(attempt, error = %e, "store: write lost a lock race, retrying");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// `BEGIN`, the write, then `COMMIT` (or `ROLLBACK` when it failed or was a replay).
async fn transaction(c: &Conn, write: &Write, push_jobs: bool) -> StoreResult<Committed> {
    c.begin().await?;
    match apply::commit(c, write, push_jobs).await {
        Ok(Outcome::Applied(done)) => {
            c.commit().await?;
            done.confirm();
            Ok(done)
        }
        Ok(Outcome::Replayed(done)) => {
            c.rollback().await;
            Ok(done)
        }
        Err(e) => {
            c.rollback().await;
            Err(e)
        }
    }
}
