//! The one error type of the Swift and Kotlin API.
//!
//! Kept small on purpose: each variant is something a caller can act on (fix the input, wait
//! for the network, report a bug). The `reason` is for developers and logs, not for end users.

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
    /// A bug or an unexpected state, including an exception thrown by an app's listener.
    #[error("internal error: {reason}")]
    Internal { reason: String },
}

impl From<roam_proto::validate::Invalid> for RoamError {
    fn from(err: roam_proto::validate::Invalid) -> Self {
        RoamError::InvalidInput { reason: err.0 }
    }
}

impl From<uniffi::UnexpectedUniFFICallbackError> for RoamError {
    fn from(err: uniffi::UnexpectedUniFFICallbackError) -> Self {
        RoamError::Internal {
            reason: format!("listener failed: {}", err.reason),
        }
    }
}
