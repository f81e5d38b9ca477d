//! Counters shared by every connection of one run: deliveries, the latency histogram,
//! correctness violations and sockets the server closed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Values below this are their own bucket (microseconds).
const LINEAR: u64 = 128;
/// Bits of mantissa kept above the linear range: relative error at most 1/64.
const MANTISSA_BITS: u32 = 6;
/// Highest exponent kept (2^40 µs is about 12 days).
const MAX_EXP: u32 = 40;
const BUCKETS: usize = LINEAR as usize + ((MAX_EXP - 6) as usize) * (1 << MANTISSA_BITS);
/// Violation texts kept for printing; the count goes on past it.
const KEPT_VIOLATIONS: usize = 40;

/// A log-linear histogram of latencies in microseconds, lock-free.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
}

fn bucket_of(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = (63 - us.leading_zeros()).min(MAX_EXP - 1);
    let mantissa = (us >> (exp - MANTISSA_BITS)) & ((1 << MANTISSA_BITS) - 1);
    let i = LINEAR as usize
        + ((exp - (MANTISSA_BITS + 1)) as usize) * (1 << MANTISSA_BITS)
        + mantissa as usize;
    i.min(BUCKETS - 1)
}

/// The middle of a bucket's range, in microseconds.
fn value_of(bucket: usize) -> f64 {
    if bucket < LINEAR as usize {
        return bucket as f64;
    }
    let k = bucket - LINEAR as usize;
    let exp = (k >> MANTISSA_BITS) as u32 + MANTISSA_BITS + 1;
    let mantissa = (k & ((1 << MANTISSA_BITS) - 1)) as u64;
    let low = ((1u64 << MANTISSA_BITS) | mantissa) << (exp - MANTISSA_BITS);
    let width = 1u64 << (exp - MANTISSA_BITS);
    low as f64 + width as f64 / 2.0
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Histogram {
    pub fn record(&self, us: u64) {
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The value at quantile `q` (0–1) in milliseconds, or `None` when empty.
    #[cfg(test)]
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let mut counts = vec![0; BUCKETS];
        self.add_counts(&mut counts);
        quantile_ms(&counts, q)
    }

    /// Adds this histogram's bucket counts to `into` (one slot per bucket).
    fn add_counts(&self, into: &mut [u64]) {
        for (sum, b) in into.iter_mut().zip(&self.buckets) {
            *sum += b.load(Ordering::Relaxed);
        }
    }
}

/// The value at quantile `q` (0–1) of bucket counts, in milliseconds; `None` when empty.
fn quantile_ms(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(value_of(i) / 1000.0);
        }
    }
    None
}

/// Slices of the delivery counters. Every receiver counts into its own slice (its own cache
/// lines): with one shared counter the load generator's threads took turns owning that line,
/// once per delivery, and at a million deliveries a second that cost the generator more than
/// reading the frames. A window's figures are the sum of the slices.
const SHARDS: usize = 32;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    delivered: AtomicU64,
    latency: Histogram,
}

/// What every connection of a run reports into.
#[derive(Debug)]
pub struct Shared {
    /// The one clock: publishers write `t0.elapsed()` into the body, receivers subtract it.
    pub t0: Instant,
    /// Deliveries and latencies are counted only while this is set.
    pub measuring: AtomicBool,
    shards: Box<[Shard]>,
    next_shard: AtomicUsize,
    /// Messages written by each publisher (index: publisher id).
    pub sent: Vec<AtomicU64>,
    pub publish_errors: AtomicU64,
    violations: AtomicU64,
    kept: Mutex<Vec<String>>,
    /// Sockets closed by the server, by close code (0: the connection ended without a close frame).
    closed: Mutex<BTreeMap<u16, u64>>,
}

impl Shared {
    pub fn new(publishers: usize) -> Self {
        Shared {
            t0: Instant::now(),
            measuring: AtomicBool::new(false),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            next_shard: AtomicUsize::new(0),
            sent: (0..publishers).map(|_| AtomicU64::new(0)).collect(),
            publish_errors: AtomicU64::new(0),
            violations: AtomicU64::new(0),
            kept: Mutex::new(Vec::new()),
            closed: Mutex::new(BTreeMap::new()),
        }
    }

    /// Nanoseconds since `t0`.
    pub fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// The counter slice for a new receiver (they take the slices in turn).
    pub fn shard(&self) -> usize {
        self.next_shard.fetch_add(1, Ordering::Relaxed) % SHARDS
    }

    /// One event reached one receiver, which counts into `shard`; `sent_ns` is the publisher's
    /// instant.
    pub fn delivered(&self, shard: usize, sent_ns: u64) {
        if self.measuring.load(Ordering::Relaxed) {
            let s = &self.shards[shard % SHARDS];
            s.delivered.fetch_add(1, Ordering::Relaxed);
            let us = self.now_ns().saturating_sub(sent_ns) / 1000;
            s.latency.record(us);
        }
    }

    /// Deliveries counted since the window started.
    pub fn deliveries(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.delivered.load(Ordering::Relaxed))
            .sum()
    }

    /// The window's latency bucket counts, every slice summed.
    fn latency_counts(&self) -> Vec<u64> {
        let mut counts = vec![0; BUCKETS];
        for s in self.shards.iter() {
            s.latency.add_counts(&mut counts);
        }
        counts
    }

    /// The window's latency at quantile `q` (0–1) in milliseconds; `None` before any delivery.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        quantile_ms(&self.latency_counts(), q)
    }

    /// Latencies recorded in the window.
    pub fn latency_samples(&self) -> u64 {
        self.latency_counts().iter().sum()
    }

    pub fn start_window(&self) {
        for s in self.shards.iter() {
            s.delivered.store(0, Ordering::Relaxed);
            s.latency.reset();
        }
        self.measuring.store(true, Ordering::Release);
    }

    pub fn end_window(&self) {
        self.measuring.store(false, Ordering::Release);
    }

    pub fn violation(&self, text: String) {
        self.violations.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut kept) = self.kept.lock() {
            if kept.len() < KEPT_VIOLATIONS {
                kept.push(text);
            }
        }
    }

    pub fn violations(&self) -> u64 {
        self.violations.load(Ordering::Relaxed)
    }

    pub fn violation_texts(&self) -> Vec<String> {
        self.kept.lock().map(|k| k.clone()).unwrap_or_default()
    }

    pub fn closed_by_server(&self, code: u16) {
        if let Ok(mut c) = self.closed.lock() {
            *c.entry(code).or_default() += 1;
        }
    }

    pub fn closed(&self) -> BTreeMap<u16, u64> {
        self.closed.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn sent_by(&self, publisher: u32) -> u64 {
        self.sent
            .get(publisher as usize)
            .map_or(0, |s| s.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_two_percent() {
        for us in [0u64, 1, 127, 128, 129, 1000, 54_321, 1_000_000, 987_654_321] {
            let v = value_of(bucket_of(us));
            let err = (v - us as f64).abs() / (us.max(1) as f64);
            assert!(err <= 0.02, "{us} -> {v}");
        }
    }

    #[test]
    fn buckets_are_monotonic() {
        let mut last = 0;
        for us in 0..200_000u64 {
            let b = bucket_of(us);
            assert!(b >= last, "bucket of {us} went back");
            last = b;
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        for us in 1..=1000 {
            h.record(us);
        }
        let p50 = h.quantile_ms(0.5).unwrap_or(0.0);
        let p99 = h.quantile_ms(0.99).unwrap_or(0.0);
        assert!((0.49..=0.51).contains(&p50), "{p50}");
        assert!((0.97..=1.01).contains(&p99), "{p99}");
        assert_eq!(h.count(), 1000);
    }

    #[test]
    fn a_window_sums_every_receivers_slice() {
        let shared = Shared::new(1);
        let receivers: Vec<usize> = (0..SHARDS + 3).map(|_| shared.shard()).collect();
        assert_eq!(receivers[0], receivers[SHARDS], "slices are taken in turn");
        shared.delivered(receivers[0], 0);
        assert_eq!(shared.deliveries(), 0, "nothing counts before the window");
        shared.start_window();
        // Sent "now": every latency lands in the lowest buckets, wherever it is counted.
        for (i, &r) in receivers.iter().enumerate() {
            for _ in 0..=i {
                shared.delivered(r, shared.now_ns());
            }
        }
        let n = receivers.len() as u64;
        assert_eq!(shared.deliveries(), n * (n + 1) / 2);
        assert_eq!(shared.latency_samples(), n * (n + 1) / 2);
        assert!(shared.latency_ms(0.99).is_some_and(|ms| ms < 1000.0));
        shared.end_window();
        shared.delivered(receivers[1], 0);
        assert_eq!(shared.deliveries(), n * (n + 1) / 2, "nor after it");
        shared.start_window();
        assert_eq!(shared.deliveries(), 0);
        assert_eq!(shared.latency_ms(0.5), None, "a new window starts empty");
    }
}
