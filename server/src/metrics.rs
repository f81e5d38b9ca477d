//! Prometheus metrics: real counters moved by the code paths they describe, rendered at
//! `/metrics`. Pool and cache figures are read at scrape time.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label of per-op counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: String,
}

/// Label of rate-limit counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// Label of counters split by cause.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub connections_total: Counter,
    pub disconnects_slow_consumer: Counter,
    pub memory_trims: Counter,
    pub messages: Counter,
    pub mutations: Family<OpLabel, Counter>,
    pub replays_deduplicated: Counter,
    pub rate_limited: Family<KindLabel, Counter>,
    pub events_delivered: Counter,
    pub events_recovered: Family<ReasonLabel, Counter>,
    pub events_duplicate: Counter,
    pub events_replayed_memory: Counter,
    pub events_skipped_lagging: Counter,
    pub events_filled: Counter,
    pub catch_up_pages_read: Counter,
    pub hub_gap_fills: Counter,
    pub hub_gaps_skipped: Counter,
    pub collab: CollabMetrics,
    pub presence_frames: Counter,
    pub compressed_bytes: Counter,
    pub sockets_refused: Family<KindLabel, Counter>,
    pub resets: Counter,
    pub frames_in: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub fanout_seconds: Histogram,
    pub rooms_active: Gauge,
    /// Bytes of encoded events the hub keeps (recent events and catch-up pages of every room).
    pub hub_cached_bytes: Gauge,
    /// The hub's budget for them (`--hub-memory-mb`).
    pub hub_cache_budget_bytes: Gauge,
    /// What the hub dropped from memory, by kind: `page` and `event` (evicted for the budget),
    /// `expired_page` (a catch-up page past its time).
    pub hub_evictions: Family<KindLabel, Counter>,
    /// Subscribes refused because a socket or a user would follow too many rooms, by kind.
    pub follows_refused: Family<KindLabel, Counter>,
    pub db_pool_size: Gauge,
    pub db_pool_in_use: Gauge,
    pub db_pool_waiting: Gauge,
    pub db_write_queue: Gauge,
    pub cache_entries: Gauge,
    pub cache_hits: Gauge<u64, AtomicU64>,
    pub cache_misses: Gauge<u64, AtomicU64>,
    pub cache_hit_ratio: Gauge<f64, AtomicU64>,
    pub retention_deleted: Family<KindLabel, Counter>,
    /// Operator actions through the admin interface, by action (and refusals).
    pub admin_actions: Family<KindLabel, Counter>,
    /// Bus messages sent to other instances.
    pub bus_published: Counter,
    /// Bus messages received from other instances.
    pub bus_received: Counter,
    /// Bus messages dropped because their seal did not verify (not sent by an instance holding
    /// the cluster's secret).
    pub bus_rejected: Counter,
    /// Bus messages that could not be sent (the bus was down or its queue full).
    pub bus_dropped: Counter,
    /// Whole-node repairs from the store after the bus lost messages.
    pub bus_resyncs: Counter,
    /// 1 while the bus reaches the other instances (always 1 on the in-process bus).
    pub bus_up: Gauge,
    /// Client sockets open (HTTP connections and WebSockets).
    pub edge_open: Gauge,
    /// HTTP connections not upgraded to a WebSocket (admitted under the pending caps).
    pub edge_pending: Gauge,
    /// Most client sockets held before new ones get health checks only.
    pub edge_connection_budget: Gauge,
    /// Connections over a cap, by `<cap>_<outcome>` (outcome: spare, closed).
    pub edge_refused: Family<KindLabel, Counter>,
    /// HTTP connections dropped by the watchdog, by kind (header, idle).
    pub edge_timeouts: Family<KindLabel, Counter>,
    /// Accepts that failed for want of a file descriptor.
    pub edge_accept_errors: Counter,
    /// Bytes of unfinished WebSocket messages held, over every socket.
    pub ws_partial_bytes: Gauge,
    /// Sockets closed for an unfinished message, by kind (timeout, budget).
    pub ws_partial_closed: Family<KindLabel, Counter>,
    /// Bytes of uploads stored (request bodies written to the blob store).
    pub blob_upload_bytes: Counter,
    /// Uploads finished: their bytes matched their SHA-256 and became a blob.
    pub blob_uploads_finished: Counter,
    /// Uploads answered "already held" at creation (no byte sent).
    pub blob_uploads_deduplicated: Counter,
    /// Uploads whose bytes did not match their SHA-256 (deleted).
    pub blob_hash_mismatches: Counter,
    /// Finishes that read the upload's bytes back to hash them: joined from parts, or an
    /// in-place upload without a running hash on this node (resumed after a restart, or
    /// elsewhere).
    pub blob_finishes_read_back: Counter,
    /// Blob downloads answered (200 or 206).
    pub blob_downloads: Counter,
    /// Bytes of finished blobs in the blob store, as the last retention pass counted them.
    pub blob_stored_bytes: Gauge,
    /// Upload requests refused by the per-user upload rate.
    pub blob_uploads_rate_limited: Counter,
    /// Uploads refused because they would pass their user's storage quota.
    pub blob_quota_refusals: Counter,
    /// Blobs retention left alone because a send or an upload had just named them.
    pub blob_gc_skipped_touched: Counter,
    /// Push notifications (protocol §11).
    pub push: PushMetrics,
}

/// Push notification counters and gauges.
#[derive(Debug)]
pub struct PushMetrics {
    /// Pushes a gateway accepted, by kind (`<platform>_<message|read>`).
    pub sent: Family<KindLabel, Counter>,
    /// Messages that joined a push already queued for the same user and room.
    pub coalesced: Counter,
    /// Pushes not sent, by reason (active, read, deleted, mode, not_member, no_gateway, …).
    pub skipped: Family<KindLabel, Counter>,
    /// Pushes that failed, by reason (unregistered, bad_request, too_large, gave_up, …).
    pub failed: Family<KindLabel, Counter>,
    /// Attempts put off for a later try, by reason (rate_limited, server_error, network,
    /// device_rate).
    pub retried: Family<KindLabel, Counter>,
    /// Registrations removed because the gateway said the token is gone.
    pub tokens_removed: Counter,
    /// Pushes queued when the server lost contact with a user's active device (it fell
    /// silent, or stopped reading) for the messages it may have missed.
    pub lost_contact: Counter,
    /// Pushes queued (entries) and messages not yet turned into pushes (jobs).
    pub queue_depth: Gauge,
    pub queue_jobs: Gauge,
    /// Age of the oldest queued push or job.
    pub queue_oldest_seconds: Gauge<f64, AtomicU64>,
    /// From the message's commit to the gateway's answer.
    pub latency_seconds: Histogram,
}

impl PushMetrics {
    fn new() -> Self {
        PushMetrics {
            sent: Family::default(),
            coalesced: Counter::default(),
            skipped: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            tokens_removed: Counter::default(),
            lost_contact: Counter::default(),
            queue_depth: Gauge::default(),
            queue_jobs: Gauge::default(),
            queue_oldest_seconds: Gauge::default(),
            // 1 ms … ~65 s
            latency_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "push_sent",
            "Pushes a gateway accepted, by platform and kind",
            self.sent.clone(),
        );
        r.register(
            "push_coalesced",
            "Messages that joined a push already queued for the same user and room",
            self.coalesced.clone(),
        );
        r.register(
            "push_skipped",
            "Pushes not sent, by reason",
            self.skipped.clone(),
        );
        r.register(
            "push_failed",
            "Pushes that failed, by reason",
            self.failed.clone(),
        );
        r.register(
            "push_retried",
            "Push attempts put off for a later try, by reason",
            self.retried.clone(),
        );
        r.register(
            "push_tokens_removed",
            "Push registrations removed because the gateway said the token is gone",
            self.tokens_removed.clone(),
        );
        r.register(
            "push_lost_contact",
            "Pushes queued for what a device may have missed when the server lost contact with it",
            self.lost_contact.clone(),
        );
        r.register(
            "push_queue_depth",
            "Pushes queued",
            self.queue_depth.clone(),
        );
        r.register(
            "push_queue_jobs",
            "Messages not yet turned into queued pushes",
            self.queue_jobs.clone(),
        );
        r.register(
            "push_queue_oldest_seconds",
            "Age of the oldest queued push or job",
            self.queue_oldest_seconds.clone(),
        );
        r.register(
            "push_latency_seconds",
            "From a message's commit to the gateway's answer",
            self.latency_seconds.clone(),
        );
    }

    fn label(kind: &str) -> KindLabel {
        KindLabel { kind: kind.into() }
    }

    pub fn sent(&self, kind: &str) {
        self.sent.get_or_create(&Self::label(kind)).inc();
    }

    pub fn skipped(&self, reason: &str) {
        self.skipped.get_or_create(&Self::label(reason)).inc();
    }

    pub fn failed(&self, reason: &str) {
        self.failed.get_or_create(&Self::label(reason)).inc();
    }

    pub fn retried(&self, reason: &str) {
        self.retried.get_or_create(&Self::label(reason)).inc();
    }

    /// The count of one label (tests and the measuring example read it).
    pub fn count(family: &Family<KindLabel, Counter>, kind: &str) -> u64 {
        family.get_or_create(&Self::label(kind)).get()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("roam");
        let m = Metrics {
            connections: Gauge::default(),
            connections_total: Counter::default(),
            disconnects_slow_consumer: Counter::default(),
            memory_trims: Counter::default(),
            messages: Counter::default(),
            mutations: Family::default(),
            replays_deduplicated: Counter::default(),
            rate_limited: Family::default(),
            events_delivered: Counter::default(),
            events_recovered: Family::default(),
            events_duplicate: Counter::default(),
            events_replayed_memory: Counter::default(),
            events_skipped_lagging: Counter::default(),
            events_filled: Counter::default(),
            catch_up_pages_read: Counter::default(),
            hub_gap_fills: Counter::default(),
            hub_gaps_skipped: Counter::default(),
            collab: CollabMetrics::default(),
            presence_frames: Counter::default(),
            compressed_bytes: Counter::default(),
            sockets_refused: Family::default(),
            resets: Counter::default(),
            frames_in: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            // 10 µs … ~1.3 s
            fanout_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 18)),
            rooms_active: Gauge::default(),
            hub_cached_bytes: Gauge::default(),
            hub_cache_budget_bytes: Gauge::default(),
            hub_evictions: Family::default(),
            follows_refused: Family::default(),
            db_pool_size: Gauge::default(),
            db_pool_in_use: Gauge::default(),
            db_pool_waiting: Gauge::default(),
            db_write_queue: Gauge::default(),
            cache_entries: Gauge::default(),
            cache_hits: Gauge::default(),
            cache_misses: Gauge::default(),
            cache_hit_ratio: Gauge::default(),
            retention_deleted: Family::default(),
            admin_actions: Family::default(),
            bus_published: Counter::default(),
            bus_received: Counter::default(),
            bus_rejected: Counter::default(),
            bus_dropped: Counter::default(),
            bus_resyncs: Counter::default(),
            bus_up: Gauge::default(),
            edge_open: Gauge::default(),
            edge_pending: Gauge::default(),
            edge_connection_budget: Gauge::default(),
            edge_refused: Family::default(),
            edge_timeouts: Family::default(),
            edge_accept_errors: Counter::default(),
            ws_partial_bytes: Gauge::default(),
            ws_partial_closed: Family::default(),
            blob_upload_bytes: Counter::default(),
            blob_uploads_finished: Counter::default(),
            blob_uploads_deduplicated: Counter::default(),
            blob_hash_mismatches: Counter::default(),
            blob_finishes_read_back: Counter::default(),
            blob_downloads: Counter::default(),
            blob_uploads_rate_limited: Counter::default(),
            blob_quota_refusals: Counter::default(),
            blob_gc_skipped_touched: Counter::default(),
            blob_stored_bytes: Gauge::default(),
            push: PushMetrics::new(),
            registry: Registry::default(),
        };
        m.push.register(&mut r);
        m.bus_up.set(1);
        r.register(
            "bus_published",
            "Bus messages sent to the other instances",
            m.bus_published.clone(),
        );
        r.register(
            "bus_received",
            "Bus messages received from the other instances",
            m.bus_received.clone(),
        );
        r.register(
            "bus_rejected",
            "Bus messages dropped because their seal did not verify (not from an instance with \
             the cluster's secret)",
            m.bus_rejected.clone(),
        );
        r.register(
            "bus_dropped",
            "Bus messages that could not be sent (bus down or its queue full); the other \
             instances repair from the store",
            m.bus_dropped.clone(),
        );
        r.register(
            "bus_resyncs",
            "Repairs of every followed room from the store after the bus lost messages",
            m.bus_resyncs.clone(),
        );
        r.register(
            "bus_up",
            "1 while the bus reaches the other instances",
            m.bus_up.clone(),
        );
        r.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        r.register(
            "connections_opened",
            "WebSocket connections accepted",
            m.connections_total.clone(),
        );
        r.register(
            "slow_consumer_disconnects",
            "Sockets dropped because their send queue was full",
            m.disconnects_slow_consumer.clone(),
        );
        r.register(
            "memory_trims",
            "Times the server dropped departed users' state and gave freed memory back (after \
             many sockets closed)",
            m.memory_trims.clone(),
        );
        r.register(
            "messages",
            "Messages stored (rate: messages/s)",
            m.messages.clone(),
        );
        r.register("mutations", "Mutations applied, by op", m.mutations.clone());
        r.register(
            "outbox_replays_deduplicated",
            "Mutations answered from the idempotency store instead of being applied again",
            m.replays_deduplicated.clone(),
        );
        r.register(
            "rate_limited",
            "Requests refused by a rate limit, by kind",
            m.rate_limited.clone(),
        );
        r.register(
            "events_delivered",
            "Event frames queued to sockets",
            m.events_delivered.clone(),
        );
        r.register(
            "events_recovered",
            "Events a socket caught up from the store (its own read or a shared catch-up page), by \
             reason: subscribe (its own catch-up), lagging (skipped while its queue was full), \
             gap (wider than the hub fills)",
            m.events_recovered.clone(),
        );
        r.register(
            "events_replayed_memory",
            "Events a socket caught up from its room's recent events in memory (no store read)",
            m.events_replayed_memory.clone(),
        );
        r.register(
            "events_duplicate",
            "Events that reached a room's line after it had released them (dropped)",
            m.events_duplicate.clone(),
        );
        r.register(
            "events_skipped_lagging",
            "Live events not queued on a socket whose queue was full (it reads them later)",
            m.events_skipped_lagging.clone(),
        );
        r.register(
            "hub_gap_fills",
            "Store reads by the hub to fill a room's missing events, once for all its sockets",
            m.hub_gap_fills.clone(),
        );
        r.register(
            "events_filled",
            "Events the hub read from the store to fill gaps",
            m.events_filled.clone(),
        );
        r.register(
            "catch_up_pages_read",
            "Store reads of shared catch-up pages: each serves every socket of its room that is \
             as far behind (counted in events_recovered by the reason of each)",
            m.catch_up_pages_read.clone(),
        );
        m.collab.register(&mut r);
        r.register(
            "hub_gaps_skipped",
            "Gaps the hub released unfilled (too wide, or not in the store)",
            m.hub_gaps_skipped.clone(),
        );
        r.register(
            "presence_frames",
            "Coalesced presence_diff frames queued to sockets",
            m.presence_frames.clone(),
        );
        r.register(
            "compressed_input_bytes",
            "Bytes of frames compressed for sockets that asked for compression (before)",
            m.compressed_bytes.clone(),
        );
        r.register(
            "sockets_refused",
            "WebSocket upgrades refused by a socket cap, by kind (total, per_user)",
            m.sockets_refused.clone(),
        );
        r.register(
            "edge_open_connections",
            "Client sockets open (HTTP connections and WebSockets)",
            m.edge_open.clone(),
        );
        r.register(
            "edge_pending_connections",
            "HTTP connections not upgraded to a WebSocket, under the pending caps",
            m.edge_pending.clone(),
        );
        r.register(
            "edge_connection_budget",
            "Client sockets held before new connections get health checks only (from the \
             open-file limit or --max-connections; 0: none)",
            m.edge_connection_budget.clone(),
        );
        r.register(
            "edge_refused",
            "Connections over a cap, by kind: <cap>_<outcome>, cap pending, pending_per_ip or \
             descriptors, outcome spare (health checks only) or closed",
            m.edge_refused.clone(),
        );
        r.register(
            "edge_timeouts",
            "HTTP connections dropped by kind: header (request head late), idle (keep-alive)",
            m.edge_timeouts.clone(),
        );
        r.register(
            "edge_accept_errors",
            "Accepts that failed for want of a file descriptor",
            m.edge_accept_errors.clone(),
        );
        r.register(
            "ws_partial_bytes",
            "Bytes of unfinished WebSocket messages held, over every socket",
            m.ws_partial_bytes.clone(),
        );
        r.register(
            "ws_partial_closed",
            "Sockets closed for an unfinished message, by kind: timeout, budget",
            m.ws_partial_closed.clone(),
        );
        r.register(
            "blob_upload_bytes",
            "Bytes of uploads stored in the blob store",
            m.blob_upload_bytes.clone(),
        );
        r.register(
            "blob_uploads_finished",
            "Uploads whose bytes matched their SHA-256 and became a blob",
            m.blob_uploads_finished.clone(),
        );
        r.register(
            "blob_uploads_deduplicated",
            "Uploads answered at creation because the blob was already held (no byte sent)",
            m.blob_uploads_deduplicated.clone(),
        );
        r.register(
            "blob_hash_mismatches",
            "Uploads whose bytes did not match their declared SHA-256 (deleted)",
            m.blob_hash_mismatches.clone(),
        );
        r.register(
            "blob_finishes_read_back",
            "Upload finishes that read the bytes back to hash them (joined from parts, or no running hash on this node)",
            m.blob_finishes_read_back.clone(),
        );
        r.register(
            "admin_actions",
            "Operator actions through the admin interface, by kind (backup, backup_failed, backup_refused, unauthorized)",
            m.admin_actions.clone(),
        );
        r.register(
            "blob_stored_bytes",
            "Bytes of finished blobs in the blob store, as the last retention pass counted them",
            m.blob_stored_bytes.clone(),
        );
        r.register(
            "blob_uploads_rate_limited",
            "Upload requests refused by the per-user upload rate (--rate-upload-mb-per-sec)",
            m.blob_uploads_rate_limited.clone(),
        );
        r.register(
            "blob_quota_refusals",
            "Uploads refused because they would pass the user's storage quota (--blob-quota-mb-per-user)",
            m.blob_quota_refusals.clone(),
        );
        r.register(
            "blob_gc_skipped_touched",
            "Unused blobs retention kept because a send or an upload named them within the upload expiry",
            m.blob_gc_skipped_touched.clone(),
        );
        r.register(
            "blob_downloads",
            "Blob downloads answered (whole or a range)",
            m.blob_downloads.clone(),
        );
        r.register(
            "recovery_resets",
            "Subscriptions answered with reset",
            m.resets.clone(),
        );
        r.register(
            "frames_received",
            "Client frames received",
            m.frames_in.clone(),
        );
        r.register(
            "received_bytes",
            "Bytes of client frames received",
            m.bytes_in.clone(),
        );
        r.register(
            "sent_bytes",
            "Bytes of frames queued to sockets",
            m.bytes_out.clone(),
        );
        r.register(
            "fanout_latency_seconds",
            "From commit to the event queued on every subscribed socket",
            m.fanout_seconds.clone(),
        );
        r.register(
            "rooms_active",
            "Rooms with at least one subscribed socket",
            m.rooms_active.clone(),
        );
        r.register(
            "hub_cached_bytes",
            "Bytes of encoded events the hub keeps in memory (recent events and shared catch-up \
             pages, over every room followed here)",
            m.hub_cached_bytes.clone(),
        );
        r.register(
            "hub_cache_budget_bytes",
            "The hub's memory budget for them (--hub-memory-mb)",
            m.hub_cache_budget_bytes.clone(),
        );
        r.register(
            "hub_evictions",
            "What the hub dropped from memory, by kind: page and event (evicted to stay within \
             the budget; read again from the store when needed), expired_page (a catch-up page \
             past its time)",
            m.hub_evictions.clone(),
        );
        r.register(
            "follows_refused",
            "Subscribes refused because the socket (socket) or the user (user) would follow \
             more rooms than allowed",
            m.follows_refused.clone(),
        );
        r.register(
            "db_pool_size",
            "Reader connections in the pool",
            m.db_pool_size.clone(),
        );
        r.register(
            "db_pool_in_use",
            "Reader connections in use",
            m.db_pool_in_use.clone(),
        );
        r.register(
            "db_pool_waiting",
            "Tasks waiting for a reader connection",
            m.db_pool_waiting.clone(),
        );
        r.register(
            "db_write_queue",
            "Writes waiting for the writer",
            m.db_write_queue.clone(),
        );
        r.register(
            "cache_entries",
            "Entries in the room/membership cache",
            m.cache_entries.clone(),
        );
        r.register(
            "cache_hits",
            "Room/membership cache hits",
            m.cache_hits.clone(),
        );
        r.register(
            "cache_misses",
            "Room/membership cache misses",
            m.cache_misses.clone(),
        );
        r.register(
            "cache_hit_ratio",
            "Room/membership cache hit ratio",
            m.cache_hit_ratio.clone(),
        );
        r.register(
            "retention_deleted",
            "Rows removed by retention, by kind",
            m.retention_deleted.clone(),
        );
        // Every known label value starts at 0, so dashboards and alerts see the series before
        // the first occurrence.
        for reason in ["subscribe", "lagging", "gap"] {
            let _ = m.events_recovered.get_or_create(&ReasonLabel { reason });
        }
        for kind in ["total", "per_user"] {
            let _ = m
                .sockets_refused
                .get_or_create(&KindLabel { kind: kind.into() });
        }
        for kind in ["page", "event", "expired_page"] {
            let _ = m
                .hub_evictions
                .get_or_create(&KindLabel { kind: kind.into() });
        }
        for kind in ["socket", "user"] {
            let _ = m
                .follows_refused
                .get_or_create(&KindLabel { kind: kind.into() });
        }
        for kind in ["connect", "control", "typing", "mutation", "import"] {
            let _ = m
                .rate_limited
                .get_or_create(&KindLabel { kind: kind.into() });
        }
        for kind in [
            "presence",
            "document_versions",
            "notifications",
            "idempotency_keys",
            "invitations",
            "events",
        ] {
            let _ = m
                .retention_deleted
                .get_or_create(&KindLabel { kind: kind.into() });
        }
        Metrics { registry: r, ..m }
    }

    /// Counts one applied mutation.
    pub fn mutation(&self, op: &str) {
        self.mutations
            .get_or_create(&OpLabel { op: op.to_owned() })
            .inc();
    }

    /// Counts one refusal by a rate limit.
    pub fn limited(&self, kind: &str) {
        self.rate_limited
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Counts what the hub dropped from memory.
    pub fn hub_evicted(&self, kind: &str, n: u64) {
        self.hub_evictions
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc_by(n);
    }

    /// Counts one subscribe refused by a follow cap.
    pub fn follow_refused(&self, kind: &str) {
        self.follows_refused
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Counts one upgrade refused by a socket cap.
    pub fn sockets_refused(&self, kind: &str) {
        self.sockets_refused
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    /// Counts one operator action.
    pub fn admin_action(&self, kind: &str) {
        self.admin_actions
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Collaborative documents (protocol §12).
#[derive(Debug, Default)]
pub struct CollabMetrics {
    pub updates_applied: Counter,
    pub updates_refused: Family<ReasonLabel, Counter>,
    pub compactions: Counter,
    pub cache_docs: Gauge,
    pub cache_bytes: Gauge,
    pub followers: Gauge,
    pub awareness_relayed: Counter,
    pub gap_fills: Counter,
}

impl CollabMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "collab_updates_applied",
            "Collaborative-document updates merged and stored",
            self.updates_applied.clone(),
        );
        r.register(
            "collab_updates_refused",
            "Collaborative-document updates refused, by reason (malformed, pending, too_large)",
            self.updates_refused.clone(),
        );
        r.register(
            "collab_compactions",
            "Update logs compacted into a snapshot",
            self.compactions.clone(),
        );
        r.register(
            "collab_cache_docs",
            "Collaborative documents loaded in this server's cache",
            self.cache_docs.clone(),
        );
        r.register(
            "collab_cache_bytes",
            "Encoded bytes of the collaborative documents in this server's cache",
            self.cache_bytes.clone(),
        );
        r.register(
            "collab_followers",
            "Sockets here following a collaborative document (one per socket and document)",
            self.followers.clone(),
        );
        r.register(
            "collab_awareness_relayed",
            "Awareness changes relayed to followers (after coalescing)",
            self.awareness_relayed.clone(),
        );
        r.register(
            "collab_gap_fills",
            "Updates read from the stored log to fill a follower line's gap",
            self.gap_fills.clone(),
        );
    }

    /// Counts one refused update.
    pub fn refused(&self, reason: &'static str) {
        self.updates_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
}
