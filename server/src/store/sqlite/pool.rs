//! The reader pool: a fixed set of read-only connections handed out one per query.
//!
//! A semaphore with one permit per connection makes callers wait (asynchronously) when every
//! connection is busy; the query itself runs on tokio's blocking pool, since SQLite calls block.
//! A leased connection goes back to the pool when its lease drops, even if the query panicked.
//! In WAL mode readers never block the writer nor each other.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::store::{PoolStats, StoreError, StoreResult};

#[derive(Debug)]
pub(super) struct ReaderPool {
    conns: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    size: u32,
    in_use: AtomicU32,
    waiting: AtomicU32,
}

impl ReaderPool {
    pub(super) fn new(conns: Vec<Connection>) -> Arc<ReaderPool> {
        let size = conns.len();
        Arc::new(ReaderPool {
            conns: Mutex::new(conns),
            permits: Arc::new(Semaphore::new(size)),
            size: u32::try_from(size).unwrap_or(u32::MAX),
            in_use: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
        })
    }

    /// Size, in use and waiting (the write queue is filled in by the store).
    pub(super) fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.size,
            in_use: self.in_use.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            write_queue: 0,
        }
    }

    /// Runs `f` on a pooled connection on the blocking thread pool.
    pub(super) async fn read<T, F>(self: &Arc<Self>, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let permit = {
            let _waiting = Gauge::enter(&self.waiting);
            self.permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| StoreError::Backend("the reader pool is closed".into()))?
        };
        let conn = self
            .conns
            .lock()
            .pop()
            .ok_or_else(|| StoreError::Backend("no reader connection left".into()))?;
        let lease = Lease {
            conn: Some(conn),
            pool: self.clone(),
            _permit: permit,
        };
        self.in_use.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let lease = lease;
            match &lease.conn {
                Some(conn) => f(conn),
                None => Err(StoreError::Backend(
                    "reader lease without a connection".into(),
                )),
            }
        })
        .await
        .map_err(|e| StoreError::Backend(format!("reader task failed: {e}")))?
    }
}

impl ReaderPool {
    /// Empties the page cache of every connection not in use (each is a few hundred
    /// microseconds at most: it frees the cached pages).
    pub(super) fn release_memory(&self) {
        for conn in self.conns.lock().iter() {
            if let Err(e) = conn.execute_batch("PRAGMA shrink_memory") {
                tracing::debug!(error = %e, "store: a reader could not shrink its cache");
            }
        }
    }

    /// Runs `f` on the calling thread if a connection is free right now, else like [`read`].
    ///
    /// Only for reads that are a few b-tree probes by primary key (microseconds once the pages
    /// are cached): handing those to the blocking pool costs more than the read itself (two
    /// thread wake-ups), and when one is awaited per WebSocket frame that hop becomes the
    /// socket's throughput limit. Anything that scans goes through [`read`].
    ///
    /// [`read`]: ReaderPool::read
    pub(super) async fn read_point<T, F>(self: &Arc<Self>, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return self.read(f).await;
        };
        let Some(conn) = self.conns.lock().pop() else {
            drop(permit);
            return self.read(f).await;
        };
        self.in_use.fetch_add(1, Ordering::Relaxed);
        let lease = Lease {
            conn: Some(conn),
            pool: self.clone(),
            _permit: permit,
        };
        match &lease.conn {
            Some(conn) => f(conn),
            None => Err(StoreError::Backend(
                "reader lease without a connection".into(),
            )),
        }
    }
}

/// A connection out of the pool; it goes back (and the permit is released) on drop.
struct Lease {
    conn: Option<Connection>,
    pool: Arc<ReaderPool>,
    // Dropped after `drop` below has put the connection back.
    _permit: OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.conns.lock().push(conn);
        }
        self.pool.in_use.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts itself in a gauge while alive.
struct Gauge<'a>(&'a AtomicU32);

impl<'a> Gauge<'a> {
    fn enter(gauge: &'a AtomicU32) -> Gauge<'a> {
        gauge.fetch_add(1, Ordering::Relaxed);
        Gauge(gauge)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
