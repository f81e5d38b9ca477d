//! The one error type of the Swift and Kotlin API.
//!
//! Kept small on purpose: each variant is something a caller can act on (fix the input, wait
//! for the network, get a new token, reload). All mapping from the core's detailed error happens
//! in the one `From` impl below, which also decides what to log. The `reason` is for developers
//! and logs, not for end users.

use roam_core::ErrorCode;

/// Why a Roam call failed. Swift: `RoamError`; Kotlin: `RoamException`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum RoamError {
    /// An argument broke the protocol's rules (bad room name, body too long, bad URL…).
    /// Retrying the same call cannot succeed.
    #[error("invalid input: {reason}")]
    InvalidInput { reason: String },
    /// The server could not be reached, or the connection failed. Retrying later may succeed.
    #[error("network error: {reason}")]
    Network { reason: String },
    /// The token was refused or expired: get a new one.
    #[error("unauthorized: {reason}")]
    Unauthorized { reason: String },
    /// Not allowed (not a member, banned, role too weak).
    #[error("forbidden: {reason}")]
    Forbidden { reason: String },
    /// No such room, message, document or outbox entry.
    #[error("not found: {reason}")]
    NotFound { reason: String },
    /// The state does not allow it (already a member, an entry being sent right now…).
    #[error("conflict: {reason}")]
    Conflict { reason: String },
    /// Too many requests: wait this long.
    #[error("rate limited: retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// A bug or an unexpected state, including an exception thrown by an app's listener.
    #[error("internal error: {reason}")]
    Internal { reason: String },
}

impl From<roam_proto::validate::Invalid> for RoamError {
    fn from(err: roam_proto::validate::Invalid) -> Self {
        RoamError::InvalidInput { reason: err.0 }
    }
}

impl From<roam_core::Error> for RoamError {
    fn from(err: roam_core::Error) -> Self {
        use roam_core::Error as E;
        let reason = err.to_string();
        match err {
            E::InvalidInput { reason } => RoamError::InvalidInput { reason },
            E::NotFound { what } => RoamError::NotFound { reason: what },
            E::InvalidState { reason } => RoamError::Conflict { reason },
            E::Network(reason) => RoamError::Network { reason },
            E::Unauthorized(reason) => RoamError::Unauthorized { reason },
            E::Shutdown => RoamError::Closed,
            E::Server {
                code,
                message,
                retry_after_ms,
            } => match code {
                ErrorCode::Unauthorized | ErrorCode::TokenExpired => {
                    RoamError::Unauthorized { reason: message }
                }
                ErrorCode::Forbidden => RoamError::Forbidden { reason: message },
                ErrorCode::NotFound | ErrorCode::Gone => RoamError::NotFound { reason: message },
                ErrorCode::Conflict | ErrorCode::VersionConflict => {
                    RoamError::Conflict { reason: message }
                }
                ErrorCode::RateLimited => RoamError::RateLimited {
                    retry_after_ms: retry_after_ms.unwrap_or(1000),
                },
                ErrorCode::InvalidInput
                | ErrorCode::PayloadTooLarge
                | ErrorCode::IdempotencyMismatch
                | ErrorCode::UnsupportedVersion => RoamError::InvalidInput { reason: message },
                ErrorCode::Unavailable => RoamError::Network { reason: message },
                _ => {
                    tracing::warn!(target: "roam_ffi", error = %message, "server error");
                    RoamError::Internal { reason: message }
                }
            },
            other => {
                tracing::error!(target: "roam_ffi", error = %other, "internal error");
                RoamError::Internal { reason }
            }
        }
    }
}

impl From<uniffi::UnexpectedUniFFICallbackError> for RoamError {
    fn from(err: uniffi::UnexpectedUniFFICallbackError) -> Self {
        RoamError::Internal {
            reason: format!("listener failed: {}", err.reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_codes_map_to_actionable_errors() {
        let e = roam_core::Error::Server {
            code: ErrorCode::RateLimited,
            message: "slow down".into(),
            retry_after_ms: Some(250),
        };
        assert_eq!(
            RoamError::from(e),
            RoamError::RateLimited {
                retry_after_ms: 250
            }
        );
        let e = roam_core::Error::Server {
            code: ErrorCode::TokenExpired,
            message: "expired".into(),
            retry_after_ms: None,
        };
        assert!(matches!(RoamError::from(e), RoamError::Unauthorized { .. }));
        assert_eq!(
            RoamError::from(roam_core::Error::Shutdown),
            RoamError::Closed
        );
    }
}
