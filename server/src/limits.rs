//! Per-user rate limits (token buckets keyed by user id, not by IP: many users share an address
//! behind a NAT, and one user has many devices).

use std::num::NonZeroU32;

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
}

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
        }
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
