//! Attachments over REST (`docs/protocol.md` §10): resumable, content-addressed uploads and
//! blob downloads. The state lives in the blob store (`crate::blob`), so any node serves any
//! request.
//!
//! These routes sit outside the response compression and the ETag middleware of the other REST
//! routes: a download streams its bytes as stored (ranges refer to them), with a strong ETag
//! (the SHA-256). Uploads need no `Idempotency-Key`: a `PATCH` names its offset, and a finish
//! or a create can be sent again safely.

use std::ops::Range;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Extension, Json, Router};
use futures_util::{StreamExt, TryStreamExt};
use roam_proto::ErrorCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::J;
use crate::auth::Caller;
use crate::blob::upload::Created;
use crate::blob::{keys, parse_sha256, sniff, BlobError, Blobs, UploadError, UploadMeta};
use crate::error::ApiError;
use crate::AppState;

/// The attachments of a handler.
type B = Extension<Arc<Blobs>>;

/// The offset header of uploads.
pub const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
/// The declared size of an upload.
pub const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
/// Largest `POST /v1/uploads` body.
const CREATE_BODY_LIMIT: usize = 4 * 1024;

/// The attachment routes, serving `blobs`.
pub fn router(blobs: Arc<Blobs>) -> Router<AppState> {
    Router::new()
        .route("/v1/uploads", post(create))
        .route(
            "/v1/uploads/{id}",
            patch(append).head(status_head).get(status).delete(abort),
        )
        .route("/v1/uploads/{id}/finish", post(finish))
        .route("/v1/blobs/{sha256}", get(download))
        .layer(DefaultBodyLimit::max(CREATE_BODY_LIMIT))
        .layer(Extension(blobs))
}

/// An error body with the upload's offset, when known, in the body (`offset`) and in
/// `Upload-Offset`.
fn refuse(code: ErrorCode, message: impl Into<String>, offset: Option<u64>) -> Response {
    refuse_with(code, message, offset, &[])
}

/// [`refuse`] with more fields in the error body.
fn refuse_with(
    code: ErrorCode,
    message: impl Into<String>,
    offset: Option<u64>,
    extra: &[(&str, Value)],
) -> Response {
    let mut error = json!({ "code": code, "message": message.into() });
    if let Some(obj) = error.as_object_mut() {
        if let Some(o) = offset {
            obj.insert("offset".into(), json!(o));
        }
        for (k, v) in extra {
            obj.insert((*k).to_owned(), v.clone());
        }
    }
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, Json(json!({ "error": error }))).into_response();
    if let Some(o) = offset {
        resp.headers_mut()
            .insert(UPLOAD_OFFSET, HeaderValue::from(o));
    }
    resp
}

fn store_failure(e: BlobError) -> Response {
    match e {
        BlobError::InvalidKey(_) => ApiError::internal(e).into_response(),
        other => ApiError::unavailable(other).into_response(),
    }
}

fn upload_error(e: UploadError) -> Response {
    let msg = e.to_string();
    match e {
        UploadError::NotFound => refuse(ErrorCode::NotFound, msg, None),
        UploadError::Invalid(m) => refuse(ErrorCode::InvalidInput, m, None),
        UploadError::TooLarge { .. } => refuse(ErrorCode::PayloadTooLarge, msg, None),
        UploadError::QuotaExceeded { used, limit, .. } => refuse_with(
            ErrorCode::QuotaExceeded,
            msg,
            None,
            &[("used", json!(used)), ("limit", json!(limit))],
        ),
        UploadError::PastSize { offset, .. }
        | UploadError::ChunkTooLarge { offset, .. }
        | UploadError::TooManyParts { offset } => {
            refuse(ErrorCode::PayloadTooLarge, msg, Some(offset))
        }
        UploadError::WrongOffset { current, .. } => refuse(ErrorCode::Conflict, msg, Some(current)),
        UploadError::Incomplete { offset, .. } => refuse(ErrorCode::Conflict, msg, Some(offset)),
        UploadError::Finished { size } => refuse(ErrorCode::Conflict, msg, Some(size)),
        UploadError::HashMismatch { .. } | UploadError::SizeMismatch { .. } => {
            refuse(ErrorCode::HashMismatch, msg, None)
        }
        UploadError::Interrupted { offset, .. } => {
            refuse(ErrorCode::InvalidInput, msg, Some(offset))
        }
        UploadError::Store(e) => store_failure(e),
    }
}

fn with_offset(mut resp: Response, offset: u64, size: u64) -> Response {
    let h = resp.headers_mut();
    h.insert(UPLOAD_OFFSET, HeaderValue::from(offset));
    h.insert(UPLOAD_LENGTH, HeaderValue::from(size));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    size: u64,
    sha256: String,
    mime: String,
}

async fn create(Extension(blobs): B, caller: Caller, J(b): J<CreateBody>) -> Response {
    let Some(sha) = parse_sha256(&b.sha256) else {
        return refuse(
            ErrorCode::InvalidInput,
            "sha256 must be 64 hexadecimal digits",
            None,
        );
    };
    match blobs
        .uploads
        .create(&caller.user, b.size, &sha, &b.mime)
        .await
    {
        Ok(Created::Held { blob, size }) => {
            blobs.metrics.blob_uploads_deduplicated.inc();
            Json(json!({ "blob": blob, "size": size, "complete": true })).into_response()
        }
        Ok(Created::Started(m)) => {
            let mut resp = (StatusCode::CREATED, Json(upload_json(&m, 0))).into_response();
            if let Ok(loc) = HeaderValue::from_str(&format!("/v1/uploads/{}", m.id)) {
                resp.headers_mut().insert(header::LOCATION, loc);
            }
            with_offset(resp, 0, m.size)
        }
        Err(e) => {
            if matches!(e, UploadError::QuotaExceeded { .. }) {
                blobs.metrics.blob_quota_refusals.inc();
            }
            upload_error(e)
        }
    }
}

fn upload_json(m: &UploadMeta, offset: u64) -> Value {
    json!({
        "upload": m.id,
        "offset": offset,
        "size": m.size,
        "sha256": m.sha256,
        "mime": m.mime,
        "created_at": m.created_at,
        "complete": m.finished,
    })
}

/// The `Upload-Offset` of a request: a decimal number.
fn upload_offset(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(&UPLOAD_OFFSET)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let v = v.trim();
            (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse::<u64>().ok())
                .flatten()
        })
}

async fn append(
    Extension(blobs): B,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(at) = upload_offset(&headers) else {
        return refuse(
            ErrorCode::InvalidInput,
            "the Upload-Offset header (a decimal byte offset) is required",
            None,
        );
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Err(wait) = blobs.rate.take(&caller.user, declared) {
        blobs.metrics.blob_uploads_rate_limited.inc();
        return ApiError::rate_limited((wait.as_millis() as u64).max(1)).into_response();
    }
    let stream = body
        .into_data_stream()
        .map_err(|e| BlobError::Source(e.to_string()));
    let task_blobs = Arc::clone(&blobs);
    let user = caller.user;
    // In a task of its own: when the client goes away mid-body this handler is dropped, and what
    // it sent must still be stored.
    let run = tokio::spawn(async move {
        task_blobs
            .uploads
            .append(&user, &id, at, Box::pin(stream), declared)
            .await
    });
    let result = match run.await {
        Ok(r) => r,
        Err(e) => return ApiError::internal(format!("an upload task failed: {e}")).into_response(),
    };
    let metrics = &blobs.metrics;
    match result {
        Ok(a) => {
            metrics.blob_upload_bytes.inc_by(a.stored);
            let mut resp = Json(json!({ "offset": a.offset })).into_response();
            resp.headers_mut()
                .insert(UPLOAD_OFFSET, HeaderValue::from(a.offset));
            resp
        }
        Err(e) => {
            if let UploadError::Interrupted { offset, .. }
            | UploadError::PastSize { offset, .. }
            | UploadError::ChunkTooLarge { offset, .. }
            | UploadError::TooManyParts { offset } = &e
            {
                metrics.blob_upload_bytes.inc_by(offset.saturating_sub(at));
            }
            upload_error(e)
        }
    }
}

async fn status(Extension(blobs): B, caller: Caller, Path(id): Path<String>) -> Response {
    match blobs.uploads.status(&caller.user, &id).await {
        Ok((m, offset)) => with_offset(
            Json(upload_json(&m, offset)).into_response(),
            offset,
            m.size,
        ),
        Err(e) => upload_error(e),
    }
}

async fn status_head(Extension(blobs): B, caller: Caller, Path(id): Path<String>) -> Response {
    match blobs.uploads.status(&caller.user, &id).await {
        Ok((m, offset)) => with_offset(StatusCode::OK.into_response(), offset, m.size),
        Err(e) => upload_error(e),
    }
}

async fn finish(Extension(blobs): B, caller: Caller, Path(id): Path<String>) -> Response {
    let task_blobs = Arc::clone(&blobs);
    let user = caller.user;
    // Like an append, a finish that began completes even if its client leaves.
    let run = tokio::spawn(async move { task_blobs.uploads.finish(&user, &id).await });
    let result = match run.await {
        Ok(r) => r,
        Err(e) => return ApiError::internal(format!("an upload task failed: {e}")).into_response(),
    };
    match result {
        Ok(f) => {
            if !f.replayed {
                blobs.metrics.blob_uploads_finished.inc();
            }
            if f.read_back {
                blobs.metrics.blob_finishes_read_back.inc();
            }
            Json(json!({ "blob": f.blob, "size": f.size, "complete": true })).into_response()
        }
        Err(e) => {
            if matches!(e, UploadError::HashMismatch { .. }) {
                blobs.metrics.blob_hash_mismatches.inc();
            }
            upload_error(e)
        }
    }
}

async fn abort(Extension(blobs): B, caller: Caller, Path(id): Path<String>) -> Response {
    match blobs.uploads.abort(&caller.user, &id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => upload_error(e),
    }
}

/// What a `Range` header asks of a blob of a given size.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ranged {
    /// No range, or one this server ignores (another unit, several ranges, bad syntax): the
    /// whole blob, 200.
    Whole,
    /// One satisfiable range, clamped to the blob: 206.
    Part(Range<u64>),
    /// A range that starts past the end (or a suffix of 0 bytes): 416.
    Unsatisfiable,
}

/// Reads a `Range` header (RFC 9110 §14): `bytes=a-b`, `bytes=a-` or `bytes=-n`.
fn parse_range(value: &str, size: u64) -> Ranged {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ranged::Whole;
    };
    let number = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    if first.trim().is_empty() {
        return match number(last) {
            None => Ranged::Whole,
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if size == 0 => Ranged::Unsatisfiable,
            Some(n) => Ranged::Part(size.saturating_sub(n)..size),
        };
    }
    let Some(start) = number(first) else {
        return Ranged::Whole;
    };
    let end = if last.trim().is_empty() {
        size
    } else {
        match number(last) {
            Some(l) if l >= start => l.saturating_add(1).min(size),
            _ => return Ranged::Whole,
        }
    };
    if start >= size {
        return Ranged::Unsatisfiable;
    }
    Ranged::Part(start..end)
}

/// Whether `If-None-Match` names `etag` (or `*`).
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|t| {
                let t = t.trim();
                t == "*" || t == etag || t.strip_prefix("W/") == Some(etag)
            })
        })
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn download(
    Extension(blobs): B,
    caller: Caller,
    method: Method,
    Path(sha): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(sha) = parse_sha256(&sha) else {
        return refuse(
            ErrorCode::InvalidInput,
            "a blob id is 64 hexadecimal digits",
            None,
        );
    };
    match blobs.access.may_read(&caller.user, &sha).await {
        Ok(true) => {}
        Ok(false) => {
            return refuse(
                ErrorCode::Forbidden,
                "this blob is not shared with you",
                None,
            )
        }
        Err(e) => return store_failure(e),
    }
    let key = keys::blob(&sha);
    let size = match blobs.store.stat(&key).await {
        Ok(Some(m)) => m.size,
        Ok(None) => return refuse(ErrorCode::NotFound, "blob not found", None),
        Err(e) => return store_failure(e),
    };
    let etag = format!("\"{sha}\"");
    if none_match(&headers, &etag) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().insert(header::ETAG, header_value(&etag));
        return r;
    }
    // `If-Range` with another validator asks for the whole blob.
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag);
    let ranged = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) if if_range_ok => parse_range(v, size),
        _ => Ranged::Whole,
    };
    let range = match ranged {
        Ranged::Whole => None,
        Ranged::Part(r) => Some(r),
        Ranged::Unsatisfiable => {
            let mut r = refuse(
                ErrorCode::RangeNotSatisfiable,
                format!("the blob has {size} bytes"),
                None,
            );
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{size}")),
            );
            return r;
        }
    };
    let content_type = match sniffed(blobs.store.as_ref(), &key, size).await {
        Ok(t) => t,
        Err(e) => return store_failure(e),
    };
    let span = range.clone().unwrap_or(0..size);
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        match blobs.store.get(&key, Some(span.clone())).await {
            Ok(stream) => {
                blobs.metrics.blob_downloads.inc();
                Body::from_stream(stream)
            }
            Err(e) => return store_failure(e),
        }
    };
    let status = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(span.end - span.start),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, header_value(&etag));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    let disposition = if sniff::inline(content_type) {
        "inline"
    } else {
        "attachment"
    };
    h.insert(
        header::CONTENT_DISPOSITION,
        header_value(&format!("{disposition}; filename=\"{sha}\"")),
    );
    if range.is_some() {
        h.insert(
            header::CONTENT_RANGE,
            header_value(&format!(
                "bytes {}-{}/{size}",
                span.start,
                span.end.saturating_sub(1)
            )),
        );
    }
    resp
}

/// The content type of the blob at `key`, from its first bytes.
async fn sniffed(
    store: &dyn crate::blob::BlobStore,
    key: &str,
    size: u64,
) -> Result<&'static str, BlobError> {
    let want = size.min(sniff::SNIFF_LEN as u64);
    let mut head = Vec::with_capacity(want as usize);
    if want > 0 {
        let mut s = store.get(key, Some(0..want)).await?;
        while let Some(chunk) = s.next().await {
            head.extend_from_slice(&chunk?);
        }
    }
    Ok(sniff::content_type(&head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use Ranged::*;
        let cases = [
            ("bytes=0-9", 100, Part(0..10)),
            ("bytes=10-", 100, Part(10..100)),
            ("bytes=90-200", 100, Part(90..100)),
            ("bytes=-10", 100, Part(90..100)),
            ("bytes=-500", 100, Part(0..100)),
            ("bytes=99-99", 100, Part(99..100)),
            ("bytes=100-", 100, Unsatisfiable),
            ("bytes=150-160", 100, Unsatisfiable),
            ("bytes=-0", 100, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-1", 0, Unsatisfiable),
            ("bytes=5-2", 100, Whole),
            ("bytes=0-1,5-6", 100, Whole),
            ("items=0-1", 100, Whole),
            ("bytes=x-1", 100, Whole),
            ("bytes=+1-2", 100, Whole),
            ("bytes=1", 100, Whole),
        ];
        for (v, size, want) in cases {
            assert_eq!(parse_range(v, size), want, "{v} of {size}");
        }
    }

    #[test]
    fn upload_offsets_are_plain_decimals() {
        let mut h = HeaderMap::new();
        assert_eq!(upload_offset(&h), None);
        for (v, want) in [
            ("0", Some(0)),
            ("1234", Some(1234)),
            ("-1", None),
            ("+5", None),
            ("1e3", None),
            ("", None),
        ] {
            h.insert(UPLOAD_OFFSET, HeaderValue::from_static(v));
            assert_eq!(upload_offset(&h), want, "{v:?}");
        }
    }

    #[test]
    fn if_none_match_takes_strong_weak_and_star() {
        let etag = "\"abc\"";
        let mut h = HeaderMap::new();
        assert!(!none_match(&h, etag));
        for (v, want) in [
            ("\"abc\"", true),
            ("W/\"abc\"", true),
            ("*", true),
            ("\"x\", \"abc\"", true),
            ("\"x\"", false),
        ] {
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_static(v));
            assert_eq!(none_match(&h, etag), want, "{v}");
        }
    }
}
