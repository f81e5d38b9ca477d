//! Connections: opening one (bounded in time), a per-connection statement cache, the error
//! mapping, and the small reader pool.
//!
//! The pool is ours rather than a crate's: it is a semaphore over a stack of idle connections,
//! opened lazily up to the configured size, and a connection that broke (the server went away)
//! is dropped instead of being handed out again, so the next caller opens a fresh one. That is
//! all the store needs, and it keeps `/metrics`' pool figures exact (size, in use, waiting).

use std::collections::HashMap;
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

/// True for errors after which the same transaction may simply be run again: a deadlock or a
/// serialization failure between writers (possibly on other servers).
pub(super) fn retryable(err: &tokio_postgres::Error) -> bool {
    matches!(
        err.code(),
        Some(&SqlState::T_R_DEADLOCK_DETECTED) | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
    )
}

/// Opens a connection with the store's settings and spawns its I/O task.
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
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "store: PostgreSQL connection ended");
        }
    });
    Ok(Conn {
        client,
        stmts: Mutex::new(HashMap::new()),
        retryable: AtomicBool::new(false),
    })
}

/// One connection with its prepared statements (each SQL text is prepared once per
/// connection, then executed in one round trip).
pub(super) struct Conn {
    client: Client,
    stmts: Mutex<HashMap<&'static str, Statement>>,
    /// A statement failed with a deadlock or serialization error since the last
    /// [`Conn::take_retryable`].
    retryable: AtomicBool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("closed", &self.client.is_closed())
            .finish_non_exhaustive()
    }
}

impl Conn {
    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Whether a statement lost a lock race since the last call (and clears it).
    pub(super) fn take_retryable(&self) -> bool {
        self.retryable.swap(false, Ordering::Relaxed)
    }

    /// Notes a failure that a retry of the whole transaction may cure.
    fn note(&self, err: tokio_postgres::Error) -> tokio_postgres::Error {
        if retryable(&err) {
            self.retryable.store(true, Ordering::Relaxed);
        }
        err
    }

    pub(super) async fn begin(&self) -> StoreResult<()> {
        self.client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| backend(&e))
    }

    /// Commits; a failure here leaves the outcome unknown to us, and is reported as such.
    pub(super) async fn commit(&self) -> StoreResult<()> {
        self.client.batch_execute("COMMIT").await.map_err(|e| {
            let e = self.note(e);
            StoreError::Backend(format!("COMMIT failed, outcome unknown: {}", backend(&e)))
        })
    }

    /// Savepoint control inside a write group (`SAVEPOINT …`, `RELEASE …`, `ROLLBACK TO …`).
    pub(super) async fn savepoint(&self, sql: &str) -> StoreResult<()> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(|e| backend(&self.note(e)))
    }

    /// Rolls back; on a broken connection there is nothing to roll back (the server already
    /// did).
    pub(super) async fn rollback(&self) {
        if let Err(e) = self.client.batch_execute("ROLLBACK").await {
            tracing::debug!(error = %e, "store: rollback failed");
        }
    }

    async fn stmt(&self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.stmts.lock().get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await?;
        self.stmts.lock().insert(sql, s.clone());
        Ok(s)
    }

    /// Runs a statement of the store (prepared once, cached).
    pub(super) async fn query_raw(
        &self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let stmt = self.stmt(sql).await.map_err(|e| self.note(e))?;
        self.client
            .query(&stmt, params)
            .await
            .map_err(|e| self.note(e))
    }

    pub(super) async fn execute_raw(
        &self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<u64, tokio_postgres::Error> {
        let stmt = self.stmt(sql).await.map_err(|e| self.note(e))?;
        self.client
            .execute(&stmt, params)
            .await
            .map_err(|e| self.note(e))
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

    /// Plain SQL without parameters (transaction control, migrations).
    pub(super) async fn batch(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.client.batch_execute(sql).await
    }

    /// A one-off query with a text not worth caching (EXPLAIN in tests, locks).
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
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
    open: AtomicU32,
    in_use: AtomicU32,
    waiting: AtomicU32,
}

impl Pool {
    pub(super) fn new(config: tokio_postgres::Config, size: u32) -> Arc<Pool> {
        let size = size.max(1);
        Arc::new(Pool {
            config,
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
    /// unless it broke meanwhile.
    pub(super) async fn get(self: &Arc<Self>) -> StoreResult<Lease> {
        let permit = {
            self.waiting.fetch_add(1, Ordering::Relaxed);
            let permit = self.permits.clone().acquire_owned().await;
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            permit.map_err(|_| StoreError::Backend("the reader pool is closed".into()))?
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
                let conn = connect(&self.config).await?;
                conn.batch(READER_SESSION).await.map_err(|e| backend(&e))?;
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
