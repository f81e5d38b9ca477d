//! The REST API (`docs/protocol.md` §8) and the middleware around it: CORS from an explicit
//! allow-list, body limits, gzip/brotli above a size threshold, weak ETags with `304`s, request
//! tracing, and JSON errors for unknown routes.

mod account;
mod etag;
mod extract;
mod messages;
mod ops;
mod rooms;

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, Uri};
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

pub use extract::{page_limit, seq_cursor, IdemKey, J, Q};

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

/// The span of a request trace: method and path, with the query's `access_token` (a bearer
/// token on the WebSocket URL) replaced, so that no log ever holds a token.
fn request_span(req: &Request<Body>) -> tracing::Span {
    let uri = redact_query(req.uri());
    tracing::debug_span!("request", method = %req.method(), uri = %uri, version = ?req.version())
}

/// The path and query of `uri` with the value of every `access_token` parameter replaced.
pub fn redact_query(uri: &Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if name == "access_token" => format!("{name}=[redacted]"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{}?{}", uri.path(), redacted.join("&"))
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
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_never_hold_an_access_token() {
        let uri: Uri = "/v1/ws?access_token=eyJsecret.part&x=1&access_token=again"
            .parse()
            .expect("uri");
        let shown = redact_query(&uri);
        assert_eq!(
            shown,
            "/v1/ws?access_token=[redacted]&x=1&access_token=[redacted]"
        );
        assert!(!shown.contains("eyJsecret"));
        let plain: Uri = "/v1/rooms?limit=5".parse().expect("uri");
        assert_eq!(redact_query(&plain), "/v1/rooms?limit=5");
    }
}
