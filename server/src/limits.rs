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
