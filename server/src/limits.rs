//! Per-user rate limits (token buckets keyed by user id, not by IP: many users share an address
//! behind a NAT, and one user has many devices), and the budget of imports written at once.
//!
//! A mutation costs one token, except `message.import`, which costs one per started
//! `--rate-import-kib-per-token` KiB of its messages ([`import_weight`]): an import writes
//! thousands of rows, not one. Imports also share one budget of bytes being written
//! (`--import-inflight-mb`): an import that finds it taken is refused with `rate_limited`
//! rather than queued, so imports never stack up on the store's writer ahead of everyone
//! else's writes.

use std::num::NonZeroU32;
use std::sync::Arc;

use roam_proto::Mutation;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Config;
use crate::error::ApiError;

/// The server's limiters.
#[derive(Debug)]
pub struct Limits {
    mutations: DefaultKeyedRateLimiter<String>,
    connects: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    /// The mutation burst: the most tokens one mutation can cost.
    burst: u32,
    /// Bytes of an import's messages per mutation token.
    import_bytes_per_token: u64,
    /// KiB of imports being written, as permits.
    imports: Arc<Semaphore>,
    import_kib: u32,
}

/// What an import's messages weigh: each body plus this for its row, event and index entries.
pub const IMPORT_ROW_BYTES: u64 = 256;

/// The bytes a mutation writes that count against the import budgets (0: not an import).
pub fn import_weight(m: &Mutation) -> u64 {
    match m {
        Mutation::ImportMessages { bodies, .. } => bodies
            .iter()
            .map(|b| b.len() as u64 + IMPORT_ROW_BYTES)
            .sum(),
        _ => 0,
    }
}

/// When an import refused for a busy budget is worth trying again.
const IMPORT_RETRY_MS: u64 = 1000;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Limits {
    pub fn new(c: &Config) -> Self {
        Limits {
            mutations: RateLimiter::keyed(
                Quota::per_second(nz(c.rate_mutations_per_sec))
                    .allow_burst(nz(c.rate_mutations_burst)),
            ),
            connects: RateLimiter::keyed(
                Quota::per_minute(nz(c.rate_connects_per_min))
                    .allow_burst(nz(c.rate_connects_burst)),
            ),
            clock: DefaultClock::default(),
            burst: c.rate_mutations_burst.max(1),
            import_bytes_per_token: u64::from(c.rate_import_kib_per_token.max(1)) * 1024,
            imports: Arc::new(Semaphore::new(
                (c.import_inflight_mb.max(1) as usize).saturating_mul(1024),
            )),
            import_kib: c.import_inflight_mb.max(1).saturating_mul(1024),
        }
    }

    /// The tokens a mutation costs: one, or for an import one per started
    /// `--rate-import-kib-per-token` KiB of its messages, at most the burst (so that the
    /// largest import can pass on a full bucket).
    pub fn cost(&self, m: &Mutation) -> u32 {
        let weight = import_weight(m);
        if weight == 0 {
            return 1;
        }
        let tokens = weight.div_ceil(self.import_bytes_per_token);
        u32::try_from(tokens)
            .unwrap_or(u32::MAX)
            .clamp(1, self.burst)
    }

    fn check(&self, limiter: &DefaultKeyedRateLimiter<String>, user: &str) -> Result<(), ApiError> {
        limiter.check_key(&user.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::rate_limited((wait.as_millis() as u64).max(1))
        })
    }

    /// One mutation by `user`.
    pub fn mutation(&self, user: &str) -> Result<(), ApiError> {
        self.check(&self.mutations, user)
    }

    /// A mutation by `user` that costs `tokens` (see [`Limits::cost`]).
    pub fn mutation_n(&self, user: &str, tokens: u32) -> Result<(), ApiError> {
        let n = nz(tokens.min(self.burst));
        match self.mutations.check_key_n(&user.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err(ApiError::rate_limited((wait.as_millis() as u64).max(1)))
            }
            // More than the burst: cannot happen (clamped above), and would never pass.
            Err(_) => Err(ApiError::rate_limited(1000)),
        }
    }

    /// A share of the import budget for an import of `weight` bytes, held until its write is
    /// committed; `rate_limited` when other imports hold it.
    pub fn import_permit(&self, weight: u64) -> Result<OwnedSemaphorePermit, ApiError> {
        let kib = u32::try_from(weight.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.import_kib);
        Arc::clone(&self.imports)
            .try_acquire_many_owned(kib)
            .map_err(|_| ApiError::rate_limited(IMPORT_RETRY_MS))
    }

    /// One socket connect by `user`.
    pub fn connect(&self, user: &str) -> Result<(), ApiError> {
        self.check(&self.connects, user)
    }

    /// Forgets users whose buckets are full again (bounded memory).
    pub fn shrink(&self) {
        self.mutations.retain_recent();
        self.connects.retain_recent();
        self.mutations.shrink_to_fit();
        self.connects.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import(n: usize, len: usize) -> Mutation {
        Mutation::ImportMessages {
            room: "r".into(),
            bodies: vec!["x".repeat(len); n],
        }
    }

    #[test]
    fn an_import_costs_tokens_by_size_up_to_the_burst() {
        let mut c = Config::for_data_dir("/tmp/unused");
        c.rate_mutations_burst = 500;
        let limits = Limits::new(&c);
        let send = Mutation::SendMessage {
            room: "r".into(),
            id: None,
            body: "x".repeat(60_000),
            reply_to: None,
            attachment: None,
        };
        assert_eq!(limits.cost(&send), 1, "other mutations cost one token");
        assert_eq!(limits.cost(&import(1, 10)), 1, "at least one");
        // 64 bodies of 16 KiB less their row's 256 bytes: 64 × 16 KiB.
        assert_eq!(limits.cost(&import(64, 16 * 1024 - 256)), 64);
        assert_eq!(limits.cost(&import(64, 16 * 1024 - 255)), 65);
        // The largest import (5,000 × 1.6 KiB ≈ 8 MiB) costs the whole burst, no more.
        assert_eq!(limits.cost(&import(5_000, 1_600)), 500);
    }

    #[test]
    fn imports_share_a_budget_of_bytes_being_written() {
        let mut c = Config::for_data_dir("/tmp/unused");
        c.import_inflight_mb = 1;
        let limits = Limits::new(&c);
        let half = limits.import_permit(512 * 1024).expect("free");
        let quarter = limits.import_permit(256 * 1024).expect("room left");
        assert!(limits.import_permit(512 * 1024).is_err(), "over the budget");
        drop(half);
        assert!(
            limits.import_permit(64 << 20).is_err(),
            "a larger one needs all of it"
        );
        drop(quarter);
        let whole = limits
            .import_permit(64 << 20)
            .expect("a larger one takes it whole");
        assert!(limits.import_permit(1).is_err());
        drop(whole);
        assert!(limits.import_permit(1).is_ok());
    }
}
