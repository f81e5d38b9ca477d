//! Operations endpoints: liveness, readiness and Prometheus metrics (no token needed).

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::AppState;

/// The longest `/readyz` waits for the store's probe before it answers 503.
const READY_PROBE: Duration = Duration::from_secs(3);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    if let Some(why) = state.service.bus.unavailable() {
        tracing::warn!(reason = %why, "readiness: bus unavailable");
        return (StatusCode::SERVICE_UNAVAILABLE, "bus unavailable");
    }
    // The store's probe is bounded on its own (PostgreSQL: the round-trip deadline, and a stalled
    // writer lane fails it); this bound holds for any store, and whatever is slower than it
    // counts as not ready.
    match tokio::time::timeout(READY_PROBE, state.service.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: store not answering");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
        }
        Err(_) => {
            tracing::warn!(
                limit_ms = READY_PROBE.as_millis() as u64,
                "readiness: store probe timed out"
            );
            (StatusCode::SERVICE_UNAVAILABLE, "store not answering")
        }
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let svc = &state.service;
    let m = &svc.metrics;
    let pool = svc.store.pool_stats();
    m.db_pool_size.set(i64::from(pool.size));
    m.db_pool_in_use.set(i64::from(pool.in_use));
    m.db_pool_waiting.set(i64::from(pool.waiting));
    m.db_write_queue.set(i64::from(pool.write_queue));
    let c = svc.cache.stats();
    m.cache_entries.set(c.entries as i64);
    m.cache_hits.set(c.hits);
    m.cache_misses.set(c.misses);
    m.cache_hit_ratio.set(c.hit_ratio());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}
