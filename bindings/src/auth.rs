//! The app's token source, adapted to the core's `TokenProvider`.

use std::sync::Arc;

use crate::error::RoamError;

/// Gives the client a token (a JWT) whenever it connects or calls the REST API. Swift: a
/// protocol; Kotlin: an interface. It may block (keychain, a refresh request): it is called off
/// the client's async workers. (Not `async`: the Swift 6.0 compiler crashes on the code uniffi
/// generates for async methods of foreign traits.)
#[uniffi::export(with_foreign)]
pub trait TokenProvider: Send + Sync {
    /// A token to use now; `refresh` is true when the last one was refused or has expired.
    /// Throw `Network` when the token service cannot be reached (the client retries like after
    /// any network failure); throw anything else when there is no sign-in: the client stops
    /// connecting and reports `NeedsSignIn` until `network_available()` is called.
    fn token(&self, refresh: bool) -> Result<String, RoamError>;
}

/// The app's provider as the core's.
pub(crate) struct Tokens(pub(crate) Arc<dyn TokenProvider>);

#[async_trait::async_trait]
impl roam_core::TokenProvider for Tokens {
    async fn token(&self, refresh: bool) -> roam_core::Result<String> {
        let provider = Arc::clone(&self.0);
        match tokio::task::spawn_blocking(move || provider.token(refresh)).await {
            Ok(Ok(token)) => Ok(token),
            Ok(Err(RoamError::Network { reason })) => Err(roam_core::Error::Network(reason)),
            Ok(Err(err)) => Err(roam_core::Error::Unauthorized(err.to_string())),
            Err(err) => Err(roam_core::Error::Unauthorized(format!(
                "the token provider failed: {err}"
            ))),
        }
    }
}
