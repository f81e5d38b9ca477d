//! The REST API (`docs/protocol.md` §8) and the middleware around it: CORS from an explicit
//! allow-list, body limits, gzip/brotli above a size threshold, weak ETags with `304`s, request
//! tracing, and JSON errors for unknown routes.

mod account;
mod etag;
mod extract;
mod messages;
mod ops;
mod rooms;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::service::Applied;
use crate::AppState;

pub use extract::{page_limit, IdemKey, J, Q};

/// The answer to a mutation: its result, flagged when it was a replay.
pub fn applied(a: Applied) -> Response {
    let mut resp = Json::<Value>(a.result).into_response();
    if a.replayed {
        resp.headers_mut().insert(
            HeaderName::from_static("idempotent-replayed"),
            HeaderValue::from_static("true"),
        );
    }
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

fn cors(origins: &[String]) -> CorsLayer {
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(list))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            header::ETAG,
            header::RETRY_AFTER,
            HeaderName::from_static("idempotent-replayed"),
        ])
}

/// All routes with their middleware.
pub fn router(state: AppState) -> Router {
    let compress = SizeAbove::new(state.config.compress_min_bytes)
        .and(NotForContentType::const_new("text/event-stream"));
    let api = Router::new()
        .merge(rooms::router())
        .merge(messages::router())
        .merge(account::router())
        .layer(axum::middleware::from_fn(etag::etag));
    Router::new()
        .merge(ops::router())
        .route("/v1/ws", get(crate::ws::handler))
        .merge(api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(roam_proto::validate::MAX_FRAME_BYTES))
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .br(true)
                .compress_when(compress),
        )
        .layer(cors(&state.config.cors_origins))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
