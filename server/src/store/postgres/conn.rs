//! Connections: opening one (bounded in time), a per-connection statement cache, the error
//! mapping, the deadlines of every round trip, and the small reader pool.
//!
//! **Timeouts.** The store's connections (readers, writer lanes, retention) carry
//! `statement_timeout`, `lock_timeout` and `idle_in_transaction_session_timeout`
//! ([`Timeouts`]), so the server itself ends a slow statement or a long lock wait; and each round
//! trip has a deadline of our own a little longer than the statement timeout, for when no answer
//! comes at all (a frozen link, a stuck server). A connection that missed its deadline is in an
//! unknown state: it is marked broken, fails every later call at once, is never handed out
//! again, and its I/O task is stopped when it is dropped. Either way the caller gets a `Backend`
//! error (503, retry), never a wait without end.
//!
//! The pool is ours rather than a crate's: it is a semaphore over a stack of idle connections,
//! opened lazily up to the configured size, and a connection that broke (the server went away)
//! is dropped instead of being handed out again, so the next caller opens a fresh one. That is
//! all the store needs, and it keeps `/metrics`' pool figures exact (size, in use, waiting).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use crate::store::{PoolStats, StoreError, StoreResult};

/// Parameters of a query.
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// How long opening a connection may take before the store answers `Backend` (an unreachable
/// server must not hang a request).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive idle time: a server that vanished without closing the connection is noticed.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// How much longer than the statement timeout a round trip may take before the connection is
/// given up: the server's own timeout error normally comes first.
const DEADLINE_MARGIN: Duration = Duration::from_secs(1);

/// The time limits of the store's connections (`--db-statement-timeout-ms`,
/// `--db-lock-timeout-ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `statement_timeout` (and `idle_in_transaction_session_timeout`): the longest a statement
    /// runs, or a transaction of ours sits idle on the server, before the server ends it.
    pub statement: Duration,
    /// `lock_timeout`: the longest a statement waits for a row lock (another server's write to
    /// the same room, a stray `SELECT … FOR UPDATE`) before it fails.
    pub lock: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            statement: Duration::from_secs(5),
            lock: Duration::from_secs(2),
        }
    }
}

impl Timeouts {
    /// The deadline of one round trip on a connection with these settings.
    pub fn deadline(&self) -> Duration {
        self.statement + DEADLINE_MARGIN
    }

    /// The `SET` commands applied to each new connection.
    fn session_sql(&self) -> String {
        let statement = self.statement.as_millis().max(1);
        format!(
            "SET statement_timeout = {statement}; SET lock_timeout = {}; \
             SET idle_in_transaction_session_timeout = {statement}",
            self.lock.as_millis().max(1)
        )
    }
}

impl From<tokio_postgres::Error> for StoreError {
    /// A unique violation means "exists already" (Conflict), as in the SQLite store; anything
    /// else (a lost connection included) is a backend failure.
    fn from(err: tokio_postgres::Error) -> Self {
        if err.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            return StoreError::Conflict("already exists".into());
        }
        backend(&err)
    }
}

/// The error as a `Backend` failure, with the server's message when there is one.
pub(super) fn backend(err: &tokio_postgres::Error) -> StoreError {
    if err.is_closed() {
        return StoreError::Backend(format!("connection to PostgreSQL lost: {err}"));
    }
    match err.as_db_error() {
        Some(db) => StoreError::Backend(format!(
            "PostgreSQL: {} ({})",
            db.message(),
            db.code().code()
        )),
        None => StoreError::Backend(format!("PostgreSQL: {err}")),
    }
}

/// True for a statement the server ended because it waited too long for a lock
/// (`lock_timeout`) or ran too long (`statement_timeout`): transient, the write may be sent again.
pub(super) fn timed_out(err: &tokio_postgres::Error) -> bool {
    matches!(
        err.code(),
        Some(&SqlState::LOCK_NOT_AVAILABLE) | Some(&SqlState::QUERY_CANCELED)
    )
}

/// True for errors after which the same transaction may simply be run again: a deadlock or a
/// serialization failure between writers (possibly on other servers).
pub(super) fn retryable(err: &tokio_postgres::Error) -> bool {
    matches!(
        err.code(),
        Some(&SqlState::T_R_DEADLOCK_DETECTED) | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
    )
}

/// Opens a connection with the store's [`Timeouts`]: the server enforces them, and every round
/// trip has a deadline ([`Timeouts::deadline`]).
pub(super) async fn connect_bounded(
    config: &tokio_postgres::Config,
    timeouts: &Timeouts,
) -> StoreResult<Conn> {
    let mut conn = connect(config).await?;
    conn.deadline = Some(timeouts.deadline());
    conn.simple(&timeouts.session_sql()).await?;
    Ok(conn)
}

/// Opens a connection without statement timeouts or deadlines (migrations, which may wait for
/// another server's, and tests), and spawns its I/O task.
pub(super) async fn connect(config: &tokio_postgres::Config) -> StoreResult<Conn> {
    let mut config = config.clone();
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .application_name("roam-server");
    let connecting = config.connect(NoTls);
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| {
            StoreError::Backend(format!(
                "cannot connect to PostgreSQL within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| StoreError::Backend(format!("cannot connect to PostgreSQL: {e}")))?;
    let io = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "store: PostgreSQL connection ended");
        }
    });
    Ok(Conn {
        client,
        stmts: Mutex::new(HashMap::new()),
        retryable: AtomicBool::new(false),
        timed_out: AtomicBool::new(false),
        broken: AtomicBool::new(false),
        deadline: None,
        io: io.abort_handle(),
    })
}

/// Why a round trip failed.
enum Fault {
    /// The server answered with an error, or the connection closed.
    Pg(tokio_postgres::Error),
    /// No answer within the deadline, or the connection had missed one before.
    Abandoned(String),
}

impl From<Fault> for StoreError {
    fn from(f: Fault) -> Self {
        match f {
            Fault::Pg(e) => StoreError::from(e),
            Fault::Abandoned(msg) => StoreError::Backend(msg),
        }
    }
}

/// One connection with its prepared statements (each SQL text is prepared once per
/// connection, then executed in one round trip).
pub(super) struct Conn {
    client: Client,
    stmts: Mutex<HashMap<&'static str, Statement>>,
    /// A statement failed with a deadlock or serialization error since the last
    /// [`Conn::take_retryable`].
    retryable: AtomicBool,
    /// A statement hit `lock_timeout` or `statement_timeout` since the last
    /// [`Conn::take_timed_out`].
    timed_out: AtomicBool,
    /// A round trip missed its deadline: the connection's state is unknown, it is not used again.
    broken: AtomicBool,
    /// The deadline of each round trip (none on the migration connection).
    deadline: Option<Duration>,
    /// The connection's I/O task, stopped when a broken connection is dropped (a frozen link
    /// would keep it waiting).
    io: tokio::task::AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.broken.load(Ordering::Relaxed) {
            self.io.abort();
        }
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("closed", &self.client.is_closed())
            .field("broken", &self.broken.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Closed by the server or the network, or given up after a missed deadline.
    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed() || self.broken.load(Ordering::Relaxed)
    }

    /// Whether a statement lost a lock race since the last call (and clears it).
    pub(super) fn take_retryable(&self) -> bool {
        self.retryable.swap(false, Ordering::Relaxed)
    }

    /// Whether a statement hit the lock or statement timeout since the last call (and clears
    /// it).
    pub(super) fn take_timed_out(&self) -> bool {
        self.timed_out.swap(false, Ordering::Relaxed)
    }

    /// Notes a failure that a retry of the whole transaction may cure, or a server timeout.
    fn note(&self, err: tokio_postgres::Error) -> tokio_postgres::Error {
        if retryable(&err) {
            self.retryable.store(true, Ordering::Relaxed);
        }
        if timed_out(&err) {
            self.timed_out.store(true, Ordering::Relaxed);
        }
        err
    }

    /// Runs one round trip within the connection's deadline. A connection that missed one is
    /// marked broken and fails every later call at once.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, Fault> {
        if self.broken.load(Ordering::Relaxed) {
            return Err(Fault::Abandoned(
                "PostgreSQL connection abandoned after a missed deadline".into(),
            ));
        }
        let answer = match self.deadline {
            None => call.await,
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(answer) => answer,
                Err(_) => {
                    self.broken.store(true, Ordering::Relaxed);
                    tracing::warn!(
                        deadline_ms = limit.as_millis() as u64,
                        "store: PostgreSQL did not answer in time; connection abandoned"
                    );
                    return Err(Fault::Abandoned(format!(
                        "PostgreSQL did not answer within {} ms",
                        limit.as_millis()
                    )));
                }
            },
        };
        answer.map_err(|e| Fault::Pg(self.note(e)))
    }

    pub(super) async fn begin(&self) -> StoreResult<()> {
        self.simple("BEGIN").await
    }

    /// Commits; a failure here (a missed deadline included) leaves the outcome unknown to us,
    /// and is reported as such: a `Backend` error, which the client retries with the same
    /// idempotency key (a replay if the commit did land).
    pub(super) async fn commit(&self) -> StoreResult<()> {
        self.bounded(self.client.batch_execute("COMMIT"))
            .await
            .map_err(|f| {
                let detail = match f {
                    Fault::Pg(e) => backend(&e).to_string(),
                    Fault::Abandoned(msg) => msg,
                };
                StoreError::Backend(format!("COMMIT failed, outcome unknown: {detail}"))
            })
    }

    /// Savepoint control inside a write group (`SAVEPOINT …`, `RELEASE …`, `ROLLBACK TO …`).
    pub(super) async fn savepoint(&self, sql: &str) -> StoreResult<()> {
        self.simple(sql).await
    }

    /// Plain SQL without parameters, within the deadline; any failure is a `Backend` error.
    pub(super) async fn simple(&self, sql: &str) -> StoreResult<()> {
        self.bounded(self.client.batch_execute(sql))
            .await
            .map_err(|f| match f {
                Fault::Pg(e) => backend(&e),
                Fault::Abandoned(msg) => StoreError::Backend(msg),
            })
    }

    /// Rolls back; on a broken connection there is nothing to roll back (the server already
    /// did, or will when the connection closes).
    pub(super) async fn rollback(&self) {
        if let Err(e) = self.simple("ROLLBACK").await {
            tracing::debug!(error = %e, "store: rollback failed");
        }
    }

    async fn stmt(&self, sql: &'static str) -> Result<Statement, Fault> {
        if let Some(s) = self.stmts.lock().get(sql) {
            return Ok(s.clone());
        }
        let s = self.bounded(self.client.prepare(sql)).await?;
        self.stmts.lock().insert(sql, s.clone());
        Ok(s)
    }

    /// Runs a statement of the store (prepared once, cached).
    async fn query_raw(&self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>, Fault> {
        let stmt = self.stmt(sql).await?;
        self.bounded(self.client.query(&stmt, params)).await
    }

    async fn execute_raw(&self, sql: &'static str, params: Params<'_>) -> Result<u64, Fault> {
        let stmt = self.stmt(sql).await?;
        self.bounded(self.client.execute(&stmt, params)).await
    }

    pub(super) async fn query(
        &self,
        sql: &'static str,
        params: Params<'_>,
    ) -> StoreResult<Vec<Row>> {
        Ok(self.query_raw(sql, params).await?)
    }

    pub(super) async fn query_opt(
        &self,
        sql: &'static str,
        params: Params<'_>,
    ) -> StoreResult<Option<Row>> {
        Ok(self.query_raw(sql, params).await?.into_iter().next())
    }

    pub(super) async fn query_one(
        &self,
        sql: &'static str,
        params: Params<'_>,
    ) -> StoreResult<Row> {
        self.query_opt(sql, params)
            .await?
            .ok_or_else(|| StoreError::Backend(format!("no row from: {sql}")))
    }

    pub(super) async fn execute(&self, sql: &'static str, params: Params<'_>) -> StoreResult<u64> {
        Ok(self.execute_raw(sql, params).await?)
    }

    /// A one-off query with a text not worth caching (locks, the readiness probe), within the
    /// deadline; any failure is a `Backend` error.
    pub(super) async fn query_sql(&self, sql: &str, params: Params<'_>) -> StoreResult<Vec<Row>> {
        self.bounded(self.client.query(sql, params))
            .await
            .map_err(|f| match f {
                Fault::Pg(e) => backend(&e),
                Fault::Abandoned(msg) => StoreError::Backend(msg),
            })
    }

    /// Plain SQL without parameters and without a deadline (migrations, tests).
    pub(super) async fn batch(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.client.batch_execute(sql).await
    }

    /// A one-off query without a deadline (migrations, EXPLAIN in tests).
    pub(super) async fn query_text(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.client.query(sql, params).await
    }
}

/// Session settings of the reader connections. Besides reads they write only last-seen
/// instants (`touch_user`, `save_last_seen`), which no client waits on and the next connection
/// sets again: those commits do not wait for the WAL flush (a crash may lose the newest few,
/// never corrupt anything). Every write a client is answered for goes through the writer
/// lanes, whose connections keep `synchronous_commit` on.
const READER_SESSION: &str = "SET synchronous_commit = off";

/// Reader connections, opened on demand up to `size`.
#[derive(Debug)]
pub(super) struct Pool {
    config: tokio_postgres::Config,
    timeouts: Timeouts,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
    open: AtomicU32,
    in_use: AtomicU32,
    waiting: AtomicU32,
}

impl Pool {
    pub(super) fn new(config: tokio_postgres::Config, size: u32, timeouts: Timeouts) -> Arc<Pool> {
        let size = size.max(1);
        Arc::new(Pool {
            config,
            timeouts,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size as usize)),
            open: AtomicU32::new(0),
            in_use: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
        })
    }

    /// Open connections (idle or in use), at most the configured size.
    pub(super) fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.open.load(Ordering::Relaxed),
            in_use: self.in_use.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            write_queue: 0,
        }
    }

    /// A connection for the caller alone; it goes back to the pool when the lease drops,
    /// unless it broke meanwhile. Waiting for a free one is bounded by the round-trip deadline
    /// (every connection in use stuck on a dead server must not queue callers without end).
    pub(super) async fn get(self: &Arc<Self>) -> StoreResult<Lease> {
        let permit = {
            self.waiting.fetch_add(1, Ordering::Relaxed);
            let limit = self.timeouts.deadline();
            let permit = tokio::time::timeout(limit, self.permits.clone().acquire_owned()).await;
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            match permit {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(StoreError::Backend("the reader pool is closed".into())),
                Err(_) => {
                    return Err(StoreError::Backend(format!(
                        "no PostgreSQL reader connection free within {} ms",
                        limit.as_millis()
                    )))
                }
            }
        };
        let reused = loop {
            let Some(conn) = self.idle.lock().pop() else {
                break None;
            };
            if conn.is_closed() {
                self.open.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            break Some(conn);
        };
        let conn = match reused {
            Some(conn) => conn,
            None => {
                let conn = connect_bounded(&self.config, &self.timeouts).await?;
                conn.simple(READER_SESSION).await?;
                self.open.fetch_add(1, Ordering::Relaxed);
                conn
            }
        };
        self.in_use.fetch_add(1, Ordering::Relaxed);
        Ok(Lease {
            conn: Some(conn),
            pool: self.clone(),
            _permit: permit,
        })
    }
}

/// A pooled connection in use.
pub(super) struct Lease {
    conn: Option<Conn>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("conn", &self.conn).finish()
    }
}

impl std::ops::Deref for Lease {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        // Only `drop` takes the connection out.
        match &self.conn {
            Some(c) => c,
            None => unreachable!("a lease holds its connection until dropped"),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.in_use.fetch_sub(1, Ordering::Relaxed);
        if let Some(conn) = self.conn.take() {
            if conn.is_closed() {
                self.pool.open.fetch_sub(1, Ordering::Relaxed);
            } else {
                self.pool.idle.lock().push(conn);
            }
        }
    }
}
