//! Operators' suspensions, as every request and handshake checks them.
//!
//! The store holds the truth ([`Suspension`] rows, a handful); each instance keeps all of them
//! in memory, read once on first use and read again when the bus says one changed
//! (`BusMessage::UserChanged`) or may have been lost (a resync). So a check costs a map lookup,
//! never a store round trip.
//!
//! The rule: a user who is suspended is refused whatever their token; after `unsuspend`,
//! a token issued (`iat`, in seconds) before the second of the stamp's `not_before` is still
//! refused, so the tokens from before the suspension never work again. `unsuspend` moves
//! `not_before` to its own time: tokens minted while the user was suspended are refused too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;
use roam_proto::ErrorCode;
use tokio::sync::OnceCell;

use crate::error::ApiError;
use crate::store::{Store, StoreResult, Suspension};

/// Every suspension stamp, in memory.
#[derive(Debug, Default)]
pub struct Suspensions {
    loaded: OnceCell<()>,
    /// Some stamp exists: without one a check is a single atomic load.
    any: AtomicBool,
    stamps: RwLock<HashMap<String, Suspension>>,
}

impl Suspensions {
    /// Refuses (`401 suspended`) a token of `user` issued at `iat` (seconds) if their stamp
    /// says so. Reads the stamps from the store the first time only.
    pub async fn check(&self, store: &dyn Store, user: &str, iat: u64) -> Result<(), ApiError> {
        if self.loaded.get().is_none() {
            self.loaded
                .get_or_try_init(|| async { self.reload(store).await })
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "suspensions: could not read the stamps");
                    ApiError::new(
                        ErrorCode::Unavailable,
                        "the server cannot check the account's status right now",
                    )
                })?;
        }
        match self.refuses(user, iat) {
            None => Ok(()),
            Some(why) => Err(ApiError::new(ErrorCode::Suspended, why)),
        }
    }

    /// Why a token of `user` issued at `iat` is refused, if it is (from memory only).
    pub fn refuses(&self, user: &str, iat: u64) -> Option<&'static str> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let stamps = self.stamps.read();
        let s = stamps.get(user)?;
        if s.suspended {
            Some("an operator suspended this account")
        } else if (iat as i64) < s.not_before.div_euclid(1000) {
            Some("this token was issued before the account's suspension ended: get a new one")
        } else {
            None
        }
    }

    /// Whether `user` is suspended now (from memory only).
    pub fn is_suspended(&self, user: &str) -> bool {
        self.any.load(Ordering::Acquire)
            && self.stamps.read().get(user).is_some_and(|s| s.suspended)
    }

    /// Reads every stamp from the store again, replacing what is held.
    pub async fn reload(&self, store: &dyn Store) -> StoreResult<()> {
        let all = store.suspensions().await?;
        let mut stamps = self.stamps.write();
        *stamps = all.into_iter().map(|s| (s.user.clone(), s)).collect();
        self.any.store(!stamps.is_empty(), Ordering::Release);
        Ok(())
    }

    /// Holds `s` (after this instance wrote it to the store).
    pub fn put(&self, s: Suspension) {
        let mut stamps = self.stamps.write();
        stamps.insert(s.user.clone(), s);
        self.any.store(true, Ordering::Release);
    }

    /// The stamp held for `user`.
    pub fn get(&self, user: &str) -> Option<Suspension> {
        self.stamps.read().get(user).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspended_refuses_every_token_then_only_older_ones() {
        let s = Suspensions::default();
        assert_eq!(s.refuses("bob", 0), None);
        s.put(Suspension {
            user: "bob".into(),
            suspended: true,
            not_before: 10_500,
        });
        assert!(s.refuses("bob", 99).is_some());
        assert!(s.is_suspended("bob"));
        assert_eq!(s.refuses("alice", 0), None);
        s.put(Suspension {
            user: "bob".into(),
            suspended: false,
            not_before: 20_500,
        });
        assert!(!s.is_suspended("bob"));
        assert!(s.refuses("bob", 19).is_some());
        assert_eq!(s.refuses("bob", 20), None);
        assert_eq!(s.refuses("bob", 21), None);
    }
}
