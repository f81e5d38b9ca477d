//! Periodic clean-up with the seed's defaults: presence older than 24 h, document history older
//! than 30 days (the current version stays; the events of removed versions lose their content),
//! notifications older than 90 days, room events older than 90 days (each room keeps its newest
//! one; a client behind the horizon gets `reset`), plus idempotency keys past their 7 days and
//! invitations long expired. All periods are configurable. A pass runs in batches of
//! `ROAM_RETENTION_BATCH_ROWS` rows, each its own short transaction, so writes are never held
//! up behind a large purge.
//!
//! With several instances on one PostgreSQL store, a pass runs on one instance at a time: the
//! store takes an advisory lock around it, and an instance that does not get it skips its pass
//! (a pass of no batches, logged at debug).

use std::time::Duration;

use crate::clock::now_ms;
use crate::metrics::KindLabel;
use crate::store::{Purged, RetentionCutoffs, StoreResult};
use crate::AppState;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// The cutoffs for `now` under the configured periods.
pub fn cutoffs(state: &AppState, now: i64) -> RetentionCutoffs {
    let c = &state.config;
    RetentionCutoffs {
        presence_before: now - c.presence_retention_hours as i64 * HOUR_MS,
        document_history_before: now - c.document_history_retention_days as i64 * DAY_MS,
        notifications_before: now - c.notification_retention_days as i64 * DAY_MS,
        idempotency_before: now - c.idempotency_retention_days as i64 * DAY_MS,
        invitations_before: now - 30 * DAY_MS,
        events_before: (c.event_retention_days > 0)
            .then(|| now - c.event_retention_days as i64 * DAY_MS),
        batch_rows: c.retention_batch_rows,
    }
}

/// One pass; counts what was removed in `/metrics`.
pub async fn run_once(state: &AppState, now: i64) -> StoreResult<Purged> {
    let mut purged = state.service.store.purge(cutoffs(state, now)).await?;
    if purged.batches == 0 {
        tracing::debug!("retention pass skipped: another instance is running one");
        return Ok(purged);
    }
    // Attachments no message carries any more go after the store's pass (which deleted the
    // last references of some), at most a batch of them, older than an upload's expiry.
    let blobs = state.service.attachments.read().clone();
    if let Some(blobs) = blobs {
        let now = std::time::UNIX_EPOCH + Duration::from_millis(now.max(0) as u64);
        let before = now
            .checked_sub(blobs.expiry)
            .unwrap_or(std::time::UNIX_EPOCH);
        let max = state.config.retention_batch_rows as usize;
        match blobs.collect(&*state.service.store, before, max).await {
            Ok(n) => purged.blobs = n,
            Err(e) => tracing::warn!(error = %e, "retention: unused attachments not collected"),
        }
    }
    let m = &state.service.metrics;
    for (kind, n) in [
        ("presence", purged.presence),
        ("document_versions", purged.document_versions),
        ("notifications", purged.notifications),
        ("idempotency_keys", purged.idempotency_keys),
        ("invitations", purged.invitations),
        ("events", purged.events),
        ("blobs", purged.blobs),
    ] {
        m.retention_deleted
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc_by(n);
    }
    state.service.limits.shrink();
    tracing::info!(?purged, "retention pass done");
    Ok(purged)
}

/// Runs a pass every `retention_interval_secs` until the server stops.
pub async fn run(state: AppState) {
    let every = Duration::from_secs(state.config.retention_interval_secs.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = run_once(&state, now_ms()).await {
            tracing::error!(error = %e, "retention pass failed");
        }
    }
}
