//! Counters and the [`MetricsSnapshot`] the app reads with `Client::metrics`.
//!
//! The counters are relaxed atomics bumped where things happen (outbox, socket, sync); the cache
//! figures come from the REST cache's own counters;
//! they only grow, from zero when the client is opened. The snapshot adds what is read from the
//! store at that moment (outbox depth and the age of its oldest entry), so one call gives the
//! whole picture. Nothing here is persisted: a snapshot describes this process's lifetime.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::cache::CacheStats;

/// Live counters. One per client.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub connect_attempts: AtomicU64,
    pub connections: AtomicU64,
    pub retries: AtomicU64,
    pub events_recovered: AtomicU64,
    pub events_live: AtomicU64,
    pub duplicates_ignored: AtomicU64,
    pub resets: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub mutations_queued: AtomicU64,
    pub mutations_acked: AtomicU64,
    pub mutations_failed: AtomicU64,
    pub messages_queued: AtomicU64,
    pub messages_sent: AtomicU64,
    pub messages_acked: AtomicU64,
    pub messages_failed: AtomicU64,
    pub protocol_violations: AtomicU64,
    pub upload_bytes: AtomicU64,
    pub uploads_completed: AtomicU64,
    pub upload_retries: AtomicU64,
    pub download_bytes: AtomicU64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The counters, plus the outbox figures read from the store.
    pub(crate) fn snapshot(&self, outbox: OutboxFigures, cache: CacheStats) -> MetricsSnapshot {
        let hits = cache.hits + cache.stale_hits;
        let misses = cache.misses;
        let connections = Self::get(&self.connections);
        MetricsSnapshot {
            outbox_depth: outbox.pending,
            outbox_failed: outbox.failed,
            outbox_oldest_age_ms: outbox.oldest_age_ms,
            retries: Self::get(&self.retries),
            connect_attempts: Self::get(&self.connect_attempts),
            connections,
            reconnects: connections.saturating_sub(1),
            events_recovered: Self::get(&self.events_recovered),
            events_live: Self::get(&self.events_live),
            duplicates_ignored: Self::get(&self.duplicates_ignored),
            resets: Self::get(&self.resets),
            cache_hits: hits,
            cache_misses: misses,
            cache_revalidations: cache.revalidations,
            cache_hit_rate: cache.hit_rate(),
            bytes_sent: Self::get(&self.bytes_sent),
            bytes_received: Self::get(&self.bytes_received),
            frames_sent: Self::get(&self.frames_sent),
            frames_received: Self::get(&self.frames_received),
            mutations_queued: Self::get(&self.mutations_queued),
            mutations_acked: Self::get(&self.mutations_acked),
            mutations_failed: Self::get(&self.mutations_failed),
            messages_queued: Self::get(&self.messages_queued),
            messages_sent: Self::get(&self.messages_sent),
            messages_acked: Self::get(&self.messages_acked),
            messages_failed: Self::get(&self.messages_failed),
            protocol_violations: Self::get(&self.protocol_violations),
            upload_bytes: Self::get(&self.upload_bytes),
            uploads_completed: Self::get(&self.uploads_completed),
            upload_retries: Self::get(&self.upload_retries),
            download_bytes: Self::get(&self.download_bytes),
        }
    }
}

/// Outbox figures read from the store for a snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OutboxFigures {
    pub pending: u64,
    pub failed: u64,
    pub oldest_age_ms: Option<u64>,
}

/// Counters since the client was opened, and the outbox as it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// Outbox entries waiting to be delivered (including those on the wire).
    pub outbox_depth: u64,
    /// Outbox entries that failed for good and wait for `retry` or `discard`.
    pub outbox_failed: u64,
    /// Age of the oldest waiting entry, in milliseconds (`None` when the outbox is empty).
    pub outbox_oldest_age_ms: Option<u64>,
    /// Mutations sent again after a transient failure (error, timeout, lost connection).
    pub retries: u64,
    /// Connection attempts (successful or not).
    pub connect_attempts: u64,
    /// Connections that reached `hello`.
    pub connections: u64,
    /// Connections after the first one.
    pub reconnects: u64,
    /// Missed events applied during recovery (before a room's `caught_up`).
    pub events_recovered: u64,
    /// Live events applied.
    pub events_live: u64,
    /// Events dropped because their sequence number was already applied.
    pub duplicates_ignored: u64,
    /// Rooms reloaded from scratch after a `reset`.
    pub resets: u64,
    /// REST refreshes answered without waiting for the network (fresh, or stale and revalidated
    /// in the background).
    pub cache_hits: u64,
    /// REST refreshes that had to wait for a request.
    pub cache_misses: u64,
    /// Requests answered `304 Not Modified` (the ETag matched; no body transferred).
    pub cache_revalidations: u64,
    /// `cache_hits / (cache_hits + cache_misses)`, 0 when there were none.
    pub cache_hit_rate: f64,
    /// WebSocket text payload bytes sent.
    pub bytes_sent: u64,
    /// WebSocket text payload bytes received.
    pub bytes_received: u64,
    pub frames_sent: u64,
    pub frames_received: u64,
    /// Mutations written to the outbox.
    pub mutations_queued: u64,
    /// Mutations confirmed by the server.
    pub mutations_acked: u64,
    /// Mutations refused for good.
    pub mutations_failed: u64,
    /// `message.send` mutations written to the outbox.
    pub messages_queued: u64,
    /// `message.send` mutations put on the wire for the first time (resends count as retries).
    pub messages_sent: u64,
    /// `message.send` mutations confirmed.
    pub messages_acked: u64,
    /// `message.send` mutations refused for good.
    pub messages_failed: u64,
    /// Connections closed because the server sent more than the protocol allows (a message or
    /// frame over the size limit, compressed data that does not inflate).
    pub protocol_violations: u64,
    /// Attachment bytes sent in upload requests by this process (a resumed upload counts only
    /// what it sent after resuming).
    pub upload_bytes: u64,
    /// Attachment uploads finished (the server holds the file).
    pub uploads_completed: u64,
    /// Upload attempts that failed transiently (network, server busy) and were resumed later
    /// from the server's offset.
    pub upload_retries: u64,
    /// Attachment bytes downloaded into the media cache.
    pub download_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_rate_and_reconnects() {
        let m = Metrics::default();
        Metrics::add(&m.connections, 3);
        let cache = CacheStats {
            hits: 1,
            misses: 3,
            ..CacheStats::default()
        };
        let s = m.snapshot(OutboxFigures::default(), cache);
        assert!((s.cache_hit_rate - 0.25).abs() < f64::EPSILON);
        assert_eq!(s.reconnects, 2);
        assert_eq!(s.outbox_depth, 0);
    }
}
