//! Weak ETags on successful `GET` responses, and `304 Not Modified` for a matching
//! `If-None-Match`. The tag is a 128-bit xxh3 of the uncompressed body (weak, because the bytes
//! on the wire differ per content encoding).

use axum::body::{to_bytes, Body, HttpBody};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

pub async fn etag(req: Request, next: Next) -> Response {
    if req.method() != Method::GET {
        return next.run(req).await;
    }
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
    let resp = next.run(req).await;
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // Only a body already in memory (of known size, as every JSON answer is) gets a tag, whatever
    // its size; a streamed one passes through untagged rather than being buffered.
    let Some(len) = body.size_hint().exact() else {
        return Response::from_parts(parts, body);
    };
    let bytes = match to_bytes(body, usize::try_from(len).unwrap_or(usize::MAX)).await {
        Ok(b) => b,
        Err(e) => return ApiError::internal(format!("buffering a response: {e}")).into_response(),
    };
    let tag = format!("W/\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(&bytes));
    let Ok(tag_value) = HeaderValue::from_str(&tag) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let matches = if_none_match
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|t| {
                t.trim() == tag || t.trim() == "*" || t.trim() == tag.trim_start_matches("W/")
            })
        });
    if matches {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().insert(header::ETAG, tag_value);
        return r;
    }
    parts.headers.insert(header::ETAG, tag_value);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}
