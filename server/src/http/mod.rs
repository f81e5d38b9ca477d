//! The REST API (`docs/protocol.md` §8; attachments, `blobs.rs`, §10) and the middleware around
//! it: CORS from an explicit allow-list, body limits, gzip/brotli above a size threshold, weak
//! ETags with `304`s, request tracing, and JSON errors for unknown routes.

mod account;
mod blobs;
mod etag;
mod extract;
mod messages;
mod ops;
mod push;
mod rooms;

use std::sync::Arc;

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
            Method::HEAD,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            HeaderName::from_static("idempotency-key"),
            header::RANGE,
            header::IF_RANGE,
            blobs::UPLOAD_OFFSET,
        ])
        .expose_headers([
            header::ETAG,
            header::RETRY_AFTER,
            HeaderName::from_static("idempotent-replayed"),
            header::CONTENT_RANGE,
            header::CONTENT_DISPOSITION,
            header::LOCATION,
            blobs::UPLOAD_OFFSET,
            blobs::UPLOAD_LENGTH,
        ])
}

/// The span of a request trace: method and path, with the query's `access_token` (a bearer
/// token on the WebSocket URL) replaced, so that no log ever holds a token.
fn request_span(req: &Request<Body>) -> tracing::Span {
    let uri = redact_query(req.uri());
    tracing::debug_span!("request", method = %req.method(), uri = %uri, version = ?req.version())
}

/// The path and query of `uri` with the value of every parameter that may hold a credential
/// replaced. A name is judged after percent-decoding and case-folding (`Access_Token`,
/// `access%5Ftoken`), and a pair is split after decoding (`access_token%3D…`), so no spelling
/// of a token reaches a log.
pub fn redact_query(uri: &Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| {
            let decoded = percent_decode(pair);
            let name = decoded.split_once('=').map_or(decoded.as_str(), |(n, _)| n);
            let folded = name.to_ascii_lowercase();
            let secret = ["token", "secret", "password", "auth", "key", "jwt"]
                .iter()
                .any(|w| folded.contains(w));
            match (secret, pair.split_once('=')) {
                (false, _) => pair.to_owned(),
                (true, Some((raw_name, _))) if percent_decode(raw_name) == name => {
                    format!("{raw_name}=[redacted]")
                }
                // The `=` itself was encoded, or the whole pair is one name: show nothing of it.
                (true, _) => "[redacted]".to_owned(),
            }
        })
        .collect();
    format!("{}?{}", uri.path(), redacted.join("&"))
}

/// `%XX` sequences and `+` decoded (invalid sequences kept as they are; lossy UTF-8).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |c: u8| (c as char).to_digit(16);
        match b {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b),
            },
            b'+' => out.push(b' '),
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// All routes with their middleware; the attachment routes serve `blobs`.
pub fn router(state: AppState, blobs: Arc<crate::blob::Blobs>) -> Router {
    let compress = SizeAbove::new(state.config.compress_min_bytes)
        .and(NotForContentType::const_new("text/event-stream"));
    let api = Router::new()
        .merge(rooms::router())
        .merge(messages::router())
        .merge(account::router())
        .merge(push::router())
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
        // Attachments stream their bytes as stored: no compression (a range counts bytes of
        // the blob itself), no 1 MiB body limit (uploads have their own limits).
        .merge(blobs::router(blobs))
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

    #[test]
    fn every_spelling_of_a_token_is_redacted() {
        for q in [
            "Access_Token=eyJsecret",
            "ACCESS_TOKEN=eyJsecret",
            "access%5Ftoken=eyJsecret",
            "access_token%3DeyJsecret",
            "access_token%3deyJsecret",
            "x=1&token=eyJsecret",
            "x=1&access_token",
        ] {
            let uri: Uri = format!("/v1/ws?{q}").parse().expect("uri");
            let shown = redact_query(&uri);
            assert!(!shown.contains("eyJsecret"), "{q} showed {shown}");
        }
        let uri: Uri = "/v1/ws?Access_Token=eyJsecret&since=4"
            .parse()
            .expect("uri");
        assert_eq!(redact_query(&uri), "/v1/ws?Access_Token=[redacted]&since=4");
    }
}
