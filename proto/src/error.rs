//! Error codes of protocol v1, shared by REST error bodies and WebSocket `error` frames.

use serde::{Deserialize, Serialize};

use crate::model::Document;

/// What went wrong, in a form a program can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request or frame is malformed or breaks a rule; the message says which. (400)
    InvalidInput,
    /// The frame's `v` is missing or not 1. (400)
    UnsupportedVersion,
    /// No token, or a malformed or wrongly signed one. (401)
    Unauthorized,
    /// The token has expired. (401)
    TokenExpired,
    /// An operator suspended the account, or the token was issued before the account's last
    /// suspension ended. (401)
    Suspended,
    /// Authenticated, but not allowed to do this. (403)
    Forbidden,
    /// The room, message, document, invitation, blob or route does not exist (or is not
    /// visible; a blob the caller may not read is not visible). (404)
    NotFound,
    /// The resource already exists, or the state does not allow the change (an owner leaving,
    /// joining twice). (409)
    Conflict,
    /// A document edit named a stale base version; `current` holds the document as it is. (409)
    VersionConflict,
    /// The idempotency key was used before for a different request. (422)
    IdempotencyMismatch,
    /// The invitation expired. (410)
    Gone,
    /// The frame or body is larger than allowed. (413)
    PayloadTooLarge,
    /// Creating this upload would take the user's attachment storage past their quota; the
    /// REST body carries `used` and `limit` (bytes). Nothing was stored. (413)
    QuotaExceeded,
    /// An upload's bytes do not hash to its declared SHA-256 (the upload is deleted), or a blob
    /// with that SHA-256 is held with another size, or a message's attachment states another
    /// size than its blob's. (422)
    HashMismatch,
    /// A download's `Range` starts past the blob's end. (416)
    RangeNotSatisfiable,
    /// Too many requests; retry after `retry_after_ms`. (429)
    RateLimited,
    /// The mutation names a predecessor (`after`) that is not applied: nothing changed. Send the
    /// predecessor again first, then this one. (409)
    OutOfOrder,
    /// The server failed; the detail is in its log, not here. (500)
    Internal,
    /// The server is shutting down or a dependency is down; retry. (503)
    Unavailable,
}

impl ErrorCode {
    /// The HTTP status that carries this code over REST.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidInput | ErrorCode::UnsupportedVersion => 400,
            ErrorCode::Unauthorized | ErrorCode::TokenExpired | ErrorCode::Suspended => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict | ErrorCode::VersionConflict | ErrorCode::OutOfOrder => 409,
            ErrorCode::Gone => 410,
            ErrorCode::PayloadTooLarge | ErrorCode::QuotaExceeded => 413,
            ErrorCode::RangeNotSatisfiable => 416,
            ErrorCode::IdempotencyMismatch | ErrorCode::HashMismatch => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }

    /// True when the same request may succeed later unchanged (the client retries it with
    /// backoff); false when retrying cannot help (the client marks it failed).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited
                | ErrorCode::OutOfOrder
                | ErrorCode::Internal
                | ErrorCode::Unavailable
        )
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::Suspended => "suspended",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::VersionConflict => "version_conflict",
            ErrorCode::IdempotencyMismatch => "idempotency_mismatch",
            ErrorCode::Gone => "gone",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::HashMismatch => "hash_mismatch",
            ErrorCode::RangeNotSatisfiable => "range_not_satisfiable",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::OutOfOrder => "out_of_order",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// The body of an error: `{"error": ErrorBody}` over REST, the fields of an `error` frame on the
/// socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// A sentence for the developer.
    pub message: String,
    /// With `rate_limited`: when to try again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// With `version_conflict`: the document as it is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Document>,
}

impl ErrorBody {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
            retry_after_ms: None,
            current: None,
        }
    }
}

/// The REST error envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}
