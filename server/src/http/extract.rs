//! Extractors that turn every bad input into a protocol error body (never axum's plain text).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use roam_proto::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A query string checked against `T` (which denies unknown fields).
#[derive(Debug)]
pub struct Q<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(v)| Q(v))
            .map_err(|e: QueryRejection| {
                ApiError::invalid(format!("bad query parameters: {}", e.body_text()))
            })
    }
}

/// A JSON body checked against `T`.
#[derive(Debug)]
pub struct J<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for J<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(J(v)),
            Err(e) => Err(json_rejection(e)),
        }
    }
}

fn json_rejection(e: JsonRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large");
    }
    ApiError::invalid(e.body_text())
}

/// The `Idempotency-Key` header every mutating route needs.
#[derive(Debug, Clone)]
pub struct IdemKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdemKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let v = parts.headers.get("idempotency-key").ok_or_else(|| {
            ApiError::invalid("the Idempotency-Key header is required on mutations")
        })?;
        let s = v
            .to_str()
            .map_err(|_| ApiError::invalid("the Idempotency-Key header must be ASCII"))?;
        roam_proto::validate::idempotency_key(s)?;
        Ok(IdemKey(s.to_owned()))
    }
}

/// Checks a page size: 1 to 200, default 50.
pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(roam_proto::validate::DEFAULT_PAGE_SIZE),
        Some(n) if (1..=roam_proto::validate::MAX_PAGE_SIZE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(format!(
            "limit must be 1 to {}",
            roam_proto::validate::MAX_PAGE_SIZE
        ))),
    }
}

/// Checks an optional sequence-number cursor of a query (`after`, `before`): at most
/// [`roam_proto::validate::MAX_SEQ`], so that no arithmetic on it can overflow.
pub fn seq_cursor(what: &str, v: Option<u64>) -> Result<Option<u64>, ApiError> {
    if let Some(n) = v {
        roam_proto::validate::cursor(what, n)?;
    }
    Ok(v)
}
