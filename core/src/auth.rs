//! Where tokens come from.
//!
//! The core never stores or refreshes credentials itself: the app supplies a [`TokenProvider`]
//! and the core asks it for a token before every connection attempt and every REST call. When
//! the server refused the previous token (HTTP 401 on the handshake or a request, or the socket
//! closed with `4001` because the token expired), the core passes `refresh = true` so the
//! provider knows a cached token will not do.

use async_trait::async_trait;

use crate::error::Result;

/// Supplies bearer tokens (JWTs whose `sub` is the account's user id).
#[async_trait]
pub trait TokenProvider: Send + Sync {
    /// A token to use now. `refresh` is true when the last one was refused or expired.
    /// Return [`Error::Unauthorized`](crate::Error::Unauthorized) (or any error) when none can
    /// be had; the core then waits and tries again like after a network failure.
    async fn token(&self, refresh: bool) -> Result<String>;
}

/// A provider that always answers the same token (tests, tools, long-lived service tokens).
#[derive(Debug, Clone)]
pub struct StaticToken(pub String);

#[async_trait]
impl TokenProvider for StaticToken {
    async fn token(&self, _refresh: bool) -> Result<String> {
        Ok(self.0.clone())
    }
}
