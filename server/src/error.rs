//! The error every handler returns: a protocol [`ErrorCode`] with a message for the developer.
//!
//! Internal failures are logged here with their detail and leave the server as a generic
//! `internal` error, so nothing about the database or the machine reaches a client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use roam_proto::{Document, ErrorBody, ErrorCode, ErrorResponse};

use crate::store::StoreError;

/// A failed request or frame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_ms: Option<u64>,
    pub current: Option<Box<Document>>,
}

/// `Result` with [`ApiError`].
pub type ApiResult<T, E = ApiError> = Result<T, E>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after_ms: None,
            current: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn rate_limited(retry_after_ms: u64) -> Self {
        ApiError {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(
                ErrorCode::RateLimited,
                format!("rate limit exceeded; retry in {retry_after_ms} ms"),
            )
        }
    }

    /// Logs `detail` and returns the generic internal error.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(ErrorCode::Internal, "internal server error")
    }

    /// Logs `detail` (a store that failed or cannot be reached: a lost database connection, a
    /// disk error) and returns the generic `unavailable` error (503): nothing was changed and
    /// the client may retry.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "store unavailable");
        Self::new(
            ErrorCode::Unavailable,
            "the server's storage is unavailable; retry later",
        )
    }

    /// The body sent on the wire.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code,
            message: self.message.clone(),
            retry_after_ms: self.retry_after_ms,
            current: self.current.as_deref().cloned(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(msg) => ApiError::conflict(msg),
            StoreError::VersionConflict(doc) => ApiError {
                current: Some(doc),
                ..ApiError::new(
                    ErrorCode::VersionConflict,
                    "the document changed since base_version; rebase on `current`",
                )
            },
            StoreError::Refused(r) => r.into(),
            StoreError::OutOfOrder(key) => ApiError::new(
                ErrorCode::OutOfOrder,
                format!("the mutation {key} this one follows is not applied; send it first"),
            ),
            StoreError::Collab(r) => r.into(),
            StoreError::Backend(detail) => ApiError::unavailable(detail),
        }
    }
}

impl From<crate::rules::Refusal> for ApiError {
    fn from(r: crate::rules::Refusal) -> Self {
        use crate::rules::RefusalKind;
        match r.kind() {
            RefusalKind::NotFound(what) => ApiError::not_found(what),
            RefusalKind::Forbidden => ApiError::forbidden(r.message()),
            RefusalKind::Conflict => ApiError::conflict(r.message()),
            RefusalKind::Gone => ApiError::new(ErrorCode::Gone, r.message()),
        }
    }
}

impl From<crate::collab::Refusal> for ApiError {
    fn from(r: crate::collab::Refusal) -> Self {
        use crate::collab::Refusal as R;
        match &r {
            R::TooLarge { .. } => ApiError::new(ErrorCode::PayloadTooLarge, r.to_string()),
            R::Malformed(_) | R::Pending => ApiError::invalid(r.to_string()),
        }
    }
}

impl From<roam_proto::validate::Invalid> for ApiError {
    fn from(err: roam_proto::validate::Invalid) -> Self {
        ApiError::invalid(err.0)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry = self.retry_after_ms;
        let mut resp = (status, axum::Json(ErrorResponse { error: self.body() })).into_response();
        if let Some(ms) = retry {
            let secs = ms.div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
