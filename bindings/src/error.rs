//! The one error type of the Swift and Kotlin API.
//!
//! Kept small on purpose: each variant is something a caller can act on (fix the input, wait
//! for the network, get a new token, rebase a document, reload). All mapping from the core's
//! detailed error happens in the one `From<roam_core::Error>` impl below, which also decides what
//! to log. The `reason` strings are for developers and logs, not for end users.

use roam_core::ErrorCode;

/// Why a Roam call failed. Swift: `RoamError` (an `Error`); Kotlin: `RoamException`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum RoamError {
    /// An argument broke the protocol's rules (bad room name, body too long, bad URL, …).
    /// Retrying the same call cannot succeed.
    #[error("invalid input: {reason}")]
    InvalidInput { reason: String },
    /// The server could not be reached, or the connection failed. Retrying later may succeed.
    #[error("network error: {reason}")]
    Network { reason: String },
    /// The token was refused or has expired: get a new one.
    #[error("unauthorized: {reason}")]
    Unauthorized { reason: String },
    /// Not allowed (not a member, banned, role too weak).
    #[error("forbidden: {reason}")]
    Forbidden { reason: String },
    /// No such room, message, document, invitation or outbox entry.
    #[error("not found: {reason}")]
    NotFound { reason: String },
    /// The state does not allow it (already a member, an owner leaving, an entry being sent
    /// right now, …).
    #[error("conflict: {reason}")]
    Conflict { reason: String },
    /// A document edit was based on a stale version: here is the server's current one. Rebase
    /// and save again with `base_version = current_version`.
    #[error("version conflict: the document is at version {current_version}")]
    VersionConflict {
        current_version: u64,
        current_content: String,
    },
    /// Too many requests: wait this long before trying again.
    #[error("rate limited: retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    /// The client was closed (`shutdown`, `sign_out`).
    #[error("the client is closed")]
    Closed,
    /// The user must sign in again before anything can be sent.
    #[error("sign-in needed: {reason}")]
    NeedsSignIn { reason: String },
    /// A write that was waited for was refused by the server for good; the outbox entry
    /// `entry_id` waits for `retry` or `discard`.
    #[error("write {entry_id} failed ({code}): {reason}")]
    WriteFailed {
        entry_id: String,
        code: String,
        reason: String,
    },
    /// A bounded wait (`sync_once`) ran out of time.
    #[error("timed out: {reason}")]
    Timeout { reason: String },
    /// A local file could not be read or written: the file to send (missing, unreadable), or
    /// one of the media cache (disk full).
    #[error("file error: {path}: {reason}")]
    File { path: String, reason: String },
    /// Another client has this account's database open: close it first.
    #[error("the database {path} is already open")]
    AlreadyOpen { path: String },
    /// The account's store is of another schema version than this library reads, and the
    /// caller may not migrate it (a `PushHandler` in an extension): open the app (or update the
    /// extension) so both are at the same version.
    #[error("the store is at schema version {found}, this library reads {expected}")]
    StoreVersion { found: u32, expected: u32 },
    /// The database cannot be read with the store key given: a wrong key, or an encrypted
    /// store opened without one. Nothing was written to it.
    #[error("the database {path} cannot be read with this store key")]
    InvalidKey { path: String },
    /// A bug or an unexpected state (a corrupt database, a listener that threw, …).
    #[error("internal error: {reason}")]
    Internal { reason: String },
}

impl From<roam_proto::validate::Invalid> for RoamError {
    fn from(err: roam_proto::validate::Invalid) -> Self {
        RoamError::from(roam_core::Error::from(err))
    }
}

impl From<roam_core::Error> for RoamError {
    fn from(err: roam_core::Error) -> Self {
        use roam_core::Error as E;
        match err {
            // What the app did wrong or asked too early: the app handles it, nothing to log.
            E::InvalidInput { reason } => RoamError::InvalidInput { reason },
            E::NotFound { what } => RoamError::NotFound { reason: what },
            E::InvalidState { reason } => RoamError::Conflict { reason },
            E::Shutdown => RoamError::Closed,
            E::AlreadyOpen { path } => RoamError::AlreadyOpen { path },
            E::SchemaMismatch { found, expected } => {
                tracing::info!(target: "roam_ffi", found, expected, "store of another schema version");
                RoamError::StoreVersion { found, expected }
            }
            E::InvalidKey { path } => RoamError::InvalidKey { path },
            E::File { path, reason } => {
                tracing::info!(target: "roam_ffi", %path, error = %reason, "file error");
                RoamError::File { path, reason }
            }
            E::Timeout(reason) => RoamError::Timeout { reason },
            E::NeedsSignIn(reason) => {
                tracing::info!(target: "roam_ffi", error = %reason, "sign-in needed");
                RoamError::NeedsSignIn { reason }
            }
            // `save_document` waited for a stale edit's answer.
            E::VersionConflict { current } => RoamError::VersionConflict {
                current_version: current.version,
                current_content: current.content,
            },
            E::WriteFailed {
                entry,
                code,
                message,
            } => RoamError::WriteFailed {
                entry_id: entry,
                code,
                reason: message,
            },
            // The network and the token: expected in a mobile app's life, logged quietly.
            E::Network(reason) => {
                tracing::debug!(target: "roam_ffi", error = %reason, "network error");
                RoamError::Network { reason }
            }
            E::Unauthorized(reason) => {
                tracing::info!(target: "roam_ffi", error = %reason, "unauthorized");
                RoamError::Unauthorized { reason }
            }
            E::Server {
                code,
                message,
                retry_after_ms,
            } => match code {
                ErrorCode::Unauthorized | ErrorCode::TokenExpired => {
                    tracing::info!(target: "roam_ffi", error = %message, "token refused");
                    RoamError::Unauthorized { reason: message }
                }
                ErrorCode::Forbidden => RoamError::Forbidden { reason: message },
                ErrorCode::NotFound | ErrorCode::Gone => RoamError::NotFound { reason: message },
                // A version conflict with the server's document attached is reported by
                // `save_document`; without it, it is a plain conflict.
                ErrorCode::Conflict | ErrorCode::VersionConflict => {
                    RoamError::Conflict { reason: message }
                }
                ErrorCode::RateLimited => RoamError::RateLimited {
                    retry_after_ms: retry_after_ms.unwrap_or(1000),
                },
                ErrorCode::InvalidInput | ErrorCode::PayloadTooLarge | ErrorCode::QuotaExceeded => {
                    RoamError::InvalidInput { reason: message }
                }
                // Out of order is the outbox's to resend; it reaches an app only as "try again".
                ErrorCode::Unavailable | ErrorCode::OutOfOrder => {
                    tracing::debug!(target: "roam_ffi", error = %message, "server unavailable");
                    RoamError::Network { reason: message }
                }
                // Mismatched idempotency keys and protocol versions are bugs, as is a 500.
                _ => {
                    tracing::warn!(target: "roam_ffi", ?code, error = %message, "server error");
                    RoamError::Internal { reason: message }
                }
            },
            // The disk, the database, a corrupt row, a missing runtime: bugs or broken devices.
            other => {
                tracing::error!(target: "roam_ffi", error = %other, "internal error");
                RoamError::Internal {
                    reason: other.to_string(),
                }
            }
        }
    }
}

impl From<uniffi::UnexpectedUniFFICallbackError> for RoamError {
    fn from(err: uniffi::UnexpectedUniFFICallbackError) -> Self {
        tracing::warn!(target: "roam_ffi", error = %err.reason, "a listener threw");
        RoamError::Internal {
            reason: format!("a listener threw: {}", err.reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: ErrorCode, retry_after_ms: Option<u64>) -> roam_core::Error {
        roam_core::Error::Server {
            code,
            message: "m".into(),
            retry_after_ms,
        }
    }

    #[test]
    fn server_codes_map_to_actionable_errors() {
        assert_eq!(
            RoamError::from(server(ErrorCode::RateLimited, Some(250))),
            RoamError::RateLimited {
                retry_after_ms: 250
            }
        );
        let cases = [
            (ErrorCode::TokenExpired, "unauthorized"),
            (ErrorCode::Unauthorized, "unauthorized"),
            (ErrorCode::Forbidden, "forbidden"),
            (ErrorCode::NotFound, "not found"),
            (ErrorCode::Gone, "not found"),
            (ErrorCode::Conflict, "conflict"),
            (ErrorCode::VersionConflict, "conflict"),
            (ErrorCode::InvalidInput, "invalid input"),
            (ErrorCode::PayloadTooLarge, "invalid input"),
            (ErrorCode::QuotaExceeded, "invalid input"),
            (ErrorCode::Unavailable, "network error"),
            (ErrorCode::Internal, "internal error"),
            (ErrorCode::IdempotencyMismatch, "internal error"),
        ];
        for (code, prefix) in cases {
            let e = RoamError::from(server(code, None)).to_string();
            assert!(e.starts_with(prefix), "{code:?} -> {e}");
        }
    }

    #[test]
    fn core_errors_map_to_actionable_errors() {
        assert_eq!(
            RoamError::from(roam_core::Error::Shutdown),
            RoamError::Closed
        );
        assert!(matches!(
            RoamError::from(roam_core::Error::Network("down".into())),
            RoamError::Network { .. }
        ));
        assert!(matches!(
            RoamError::from(roam_core::Error::Unauthorized("bad".into())),
            RoamError::Unauthorized { .. }
        ));
        assert!(matches!(
            RoamError::from(roam_core::Error::NotFound { what: "x".into() }),
            RoamError::NotFound { .. }
        ));
        assert!(matches!(
            RoamError::from(roam_core::Error::NoRuntime),
            RoamError::Internal { .. }
        ));
    }

    #[test]
    fn a_stale_save_carries_the_servers_document() {
        let current = roam_core::DocumentVersion {
            room: "team".into(),
            doc: "plan".into(),
            version: 3,
            content: "v3".into(),
            updated_by: "bob".into(),
            updated_at: 0,
        };
        assert_eq!(
            RoamError::from(roam_core::Error::VersionConflict {
                current: Box::new(current)
            }),
            RoamError::VersionConflict {
                current_version: 3,
                current_content: "v3".into()
            }
        );
    }
}
