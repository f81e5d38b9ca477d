//! Retry delays: exponential growth from `backon`, jitter applied here.
//!
//! Both retry loops of the core (socket reconnects and outbox retries) take their base delays
//! from a `backon` [`ExponentialBuilder`] (factor 2, capped, unbounded attempts) and then
//! randomise each delay themselves:
//!
//! - **Socket** ([`Jitter::Randomize`]): Socket.IO's scheme from the seed, `d·(1 ± f)` capped at
//!   the maximum, so every delay lies in `[initial·(1−f), max]`.
//! - **Outbox** ([`Jitter::Full`]): "full jitter" (uniform in `[0, d]`), which spreads the
//!   retries of many clients after a server hiccup the most.
//!
//! `backon`'s own `with_jitter` adds a random `[0, d)` on top of `d`, so its delays can reach
//! twice the configured maximum; neither scheme above can be expressed with it, which is why the
//! jitter is applied here on top of backon's un-jittered sequence.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::Rng;

/// How a base delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Jitter {
    /// Uniform in `[0, d]`.
    Full,
    /// Uniform in `[d·(1−f), d·(1+f)]`, capped at the maximum.
    Randomize(f64),
}

/// An endless sequence of jittered delays; [`Backoff::reset`] starts over.
#[derive(Debug)]
pub(crate) struct Backoff {
    builder: ExponentialBuilder,
    inner: backon::ExponentialBackoff,
    max: Duration,
    jitter: Jitter,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration, jitter: Jitter) -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(initial)
            .with_max_delay(max)
            .with_factor(2.0)
            .without_max_times();
        Backoff {
            builder,
            inner: builder.build(),
            max,
            jitter,
        }
    }

    /// The next delay.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.inner.next().unwrap_or(self.max).min(self.max);
        let mut rng = rand::rng();
        match self.jitter {
            Jitter::Full => base.mul_f64(rng.random_range(0.0..=1.0)),
            Jitter::Randomize(f) => {
                let f = f.clamp(0.0, 1.0);
                base.mul_f64(rng.random_range((1.0 - f)..=(1.0 + f)))
                    .min(self.max)
            }
        }
    }

    /// Back to the first delay (after a success).
    pub(crate) fn reset(&mut self) {
        self.inner = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn randomized_delays_stay_within_bounds_and_vary() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_millis(500);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut b = Backoff::new(initial, max, Jitter::Randomize(0.5));
            for attempt in 0..10 {
                let d = b.next_delay();
                assert!(d >= Duration::from_millis(50), "attempt {attempt}: {d:?}");
                assert!(d <= max, "attempt {attempt}: {d:?}");
                if attempt == 0 {
                    assert!(d <= Duration::from_millis(150));
                }
                seen.insert(d.as_micros());
            }
        }
        assert!(seen.len() > 10, "jitter should vary the delays");
    }

    #[test]
    fn full_jitter_grows_and_resets() {
        let mut b = Backoff::new(
            Duration::from_millis(10),
            Duration::from_secs(1),
            Jitter::Full,
        );
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(10));
    }
}
