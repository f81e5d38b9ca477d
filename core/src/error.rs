//! The one error type of the core.
//!
//! Every fallible public call returns [`Result<T>`](Result), whose error is the
//! [`Error`] enum below. Its variants are what an app can act on: bad input it should not have
//! sent ([`Error::InvalidInput`]), something that is not in the local store
//! ([`Error::NotFound`]), an outbox entry that cannot be touched right now
//! ([`Error::InvalidState`]), the network or the server ([`Error::Network`],
//! [`Error::Server`], [`Error::Unauthorized`]), or the local database ([`Error::Database`],
//! [`Error::Migration`]). Detail that only a developer needs stays in the message text and in
//! the `tracing` events that the core emits where the error arises.

use roam_proto::{ErrorBody, ErrorCode};

/// The result type of the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed something the protocol refuses (a bad room name, an empty body, …).
    /// Nothing was written or queued.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// Which rule was broken, in a sentence for the developer.
        reason: String,
    },

    /// The room, message, document or outbox entry is not in the local store.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },

    /// The operation does not fit the current state (for example discarding an outbox entry that
    /// is on the wire right now, or retrying one that has not failed).
    #[error("invalid state: {reason}")]
    InvalidState {
        /// Why the operation was refused.
        reason: String,
    },

    /// The server could not be reached or the connection broke. Transient: try again later.
    #[error("network error: {0}")]
    Network(String),

    /// The server answered with a protocol error.
    #[error("server error {code:?}: {message}")]
    Server {
        /// The protocol error code; [`ErrorCode::is_transient`] tells whether to retry.
        code: ErrorCode,
        /// The server's message, for developers.
        message: String,
        /// With `rate_limited`: when to try again.
        retry_after_ms: Option<u64>,
    },

    /// The token provider could not supply a token, or the server refused it.
    #[error("unauthorized: {0}")]
    Unauthorized(String),

    /// The local database failed (disk full, corrupted file, I/O error).
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),

    /// A schema migration failed; the database was left at its previous version.
    #[error("migration to schema version {version} failed: {reason}")]
    Migration {
        /// The schema version that could not be reached.
        version: u32,
        /// Why.
        reason: String,
    },

    /// A value could not be encoded or decoded as JSON (a corrupt row, or a server answer that
    /// does not match the protocol).
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),

    /// The call needs a running Tokio runtime (`start`, network calls) and none was found.
    #[error("no Tokio runtime: call this from within a Tokio runtime")]
    NoRuntime,

    /// The client was shut down.
    #[error("the client was shut down")]
    Shutdown,

    /// A write the caller waited for was refused by the server for good (see
    /// `Client::wait_for_pending_writes`); the entry waits for `retry` or `discard`.
    #[error("outbox entry {entry} failed ({code}): {message}")]
    WriteFailed {
        /// The outbox entry id.
        entry: String,
        /// The protocol error code.
        code: String,
        /// The server's reason.
        message: String,
    },

    /// A document edit was based on a stale version (`Client::save_document`): the document
    /// as the server holds it. Rebase onto it and save again with its version as the base.
    #[error("the document changed since the base version (now version {})", current.version)]
    VersionConflict {
        /// The server's document.
        current: Box<crate::model::DocumentVersion>,
    },

    /// The account cannot connect until the app signs in again.
    #[error("sign-in needed: {0}")]
    NeedsSignIn(String),

    /// A bounded wait (`sync_once`) ran out of time.
    #[error("timed out: {0}")]
    Timeout(String),

    /// A local file could not be read or written: the file to send, or one of the media cache.
    #[error("file error: {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },

    /// The store is of another schema version than this build reads, and this caller may not
    /// migrate it (a notification extension next to the app, see `PushHandler`): `found` below
    /// `expected` means the app was updated but has not opened the store since; above it, the
    /// extension is older than the app that wrote it.
    #[error("the store is at schema version {found} but this build reads version {expected} only (open the app to bring them together)")]
    SchemaMismatch {
        /// The store's schema version.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },

    /// Another client has this account's database open (in this process or another one).
    #[error("the database {path} is already open by another client")]
    AlreadyOpen {
        /// The database file.
        path: String,
    },

    /// The database cannot be read with the key given: the key is wrong, an encrypted store
    /// was opened without a key, or the file is not a Roam store. Nothing was written to it.
    #[error("the database {path} cannot be read with the key given (wrong key, or an encrypted store opened without one)")]
    InvalidKey {
        /// The database file.
        path: String,
    },
}

impl Error {
    /// An [`Error::InvalidInput`] with this reason.
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            reason: reason.into(),
        }
    }

    /// An [`Error::NotFound`] naming what was looked for.
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    /// An [`Error::File`] about `path`.
    pub(crate) fn file(path: &std::path::Path, reason: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// An [`Error::InvalidState`] with this reason.
    pub(crate) fn state(reason: impl Into<String>) -> Self {
        Error::InvalidState {
            reason: reason.into(),
        }
    }

    /// True when the store ran out of space: the disk is full (`ENOSPC`) or the database
    /// reached `max_store_bytes` (SQLite's `SQLITE_FULL` either way).
    pub fn is_storage_full(&self) -> bool {
        matches!(
            self,
            Error::Database(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DiskFull
        )
    }

    /// True when the same call may succeed later unchanged.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Network(_) => true,
            Error::Server { code, .. } => code.is_transient(),
            _ => false,
        }
    }
}

impl From<roam_proto::validate::Invalid> for Error {
    fn from(err: roam_proto::validate::Invalid) -> Self {
        Error::InvalidInput { reason: err.0 }
    }
}

impl From<ErrorBody> for Error {
    fn from(body: ErrorBody) -> Self {
        match body.code {
            // A suspended account is refused like a revoked token: the app signs in again, and a
            // token issued after the operator lifts the suspension works.
            ErrorCode::Unauthorized | ErrorCode::TokenExpired | ErrorCode::Suspended => {
                Error::Unauthorized(body.message)
            }
            code => Error::Server {
                code,
                message: body.message,
                retry_after_ms: body.retry_after_ms,
            },
        }
    }
}

impl From<reqwest::Error> for Error {
    fn from(err: reqwest::Error) -> Self {
        if err.is_decode() {
            Error::Network(format!("unreadable answer: {err}"))
        } else {
            Error::Network(err.to_string())
        }
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for Error {
    fn from(err: tokio_tungstenite::tungstenite::Error) -> Self {
        Error::Network(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_follows_the_protocol() {
        assert!(Error::Network("x".into()).is_transient());
        let rate = Error::from(ErrorBody::new(ErrorCode::RateLimited, "slow down"));
        assert!(rate.is_transient());
        let forbidden = Error::from(ErrorBody::new(ErrorCode::Forbidden, "no"));
        assert!(!forbidden.is_transient());
        let expired = Error::from(ErrorBody::new(ErrorCode::TokenExpired, "old"));
        assert!(matches!(expired, Error::Unauthorized(_)));
    }

    #[test]
    fn invalid_input_keeps_the_reason() {
        let err = Error::from(roam_proto::validate::Invalid::new("body must not be empty"));
        assert_eq!(err.to_string(), "invalid input: body must not be empty");
    }
}
