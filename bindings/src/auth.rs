//! The app's token source, adapted to the core's `TokenProvider`.

use std::sync::Arc;

use crate::error::RoamError;

/// Gives the client a token (a JWT) whenever it connects or calls the REST API. Swift: a
/// protocol with an `async` method; Kotlin: an interface with a `suspend` function, so a provider
/// may refresh over the network or read the keychain without blocking a thread.
#[uniffi::export(with_foreign)]
#[async_trait::async_trait]
pub trait TokenProvider: Send + Sync {
    /// A token to use now; `refresh` is true when the last one was refused or has expired.
    /// Throw `Network` when the token service cannot be reached (the client retries like after
    /// any network failure); throw anything else when there is no sign-in: the client stops
    /// connecting and reports `NeedsSignIn` until `network_available()` is called.
    async fn token(&self, refresh: bool) -> Result<String, RoamError>;
}

/// The app's provider as the core's.
pub(crate) struct Tokens(pub(crate) Arc<dyn TokenProvider>);

#[async_trait::async_trait]
impl roam_core::TokenProvider for Tokens {
    async fn token(&self, refresh: bool) -> roam_core::Result<String> {
        match self.0.token(refresh).await {
            Ok(token) => Ok(token),
            Err(RoamError::Network { reason }) => Err(roam_core::Error::Network(reason)),
            Err(err) => Err(roam_core::Error::Unauthorized(err.to_string())),
        }
    }
}
