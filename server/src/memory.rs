//! Giving memory back after a burst of sockets closes.
//!
//! Three things keep memory after many sockets close:
//!
//! - **State the departed users leave behind**: their rate-limit buckets, their membership
//!   entries in the read cache, and the capacity of the per-user maps (presence, the hub's
//!   registry) that grew while they were connected. [`trim`] drops what no connected user
//!   needs and shrinks the maps. Nothing it drops changes an answer: a bucket that is full
//!   again is the same as a new one, and a cache entry is read again from the store on demand.
//! - **Pages mimalloc keeps.** mimalloc frees an empty page back to the OS only after a delay,
//!   and only when the thread that owns the page allocates or frees again; after a burst
//!   closes, the runtime's worker threads go quiet and keep their pages. [`trim`] bumps a
//!   collection epoch, collects on its own thread and wakes the workers; each worker collects
//!   its own heap (forcing the purge) the next time it parks ([`on_worker_park`], installed by
//!   the `roam-server` binary as the runtime's park hook). The blocking threads that ran store
//!   reads during the burst own pages too: the binary lets them exit after
//!   [`BLOCKING_KEEP_ALIVE`] idle (tokio's default is 10 s), which hands their pages back.
//!   mimalloc is only called when the binary said it is the global allocator
//!   ([`use_mimalloc`]); in tests and other embeddings that part is a no-op.
//! - **Memory C code took from the C allocator**: SQLite allocates with the C library's
//!   `malloc`, and glibc gives each thread that used it an arena whose free memory it keeps.
//!   [`trim`] empties the store's page caches ([`crate::store::Store::release_memory`]: SQLite keeps the
//!   pages it read until its cache is full) and then asks glibc to return what is free in every
//!   arena (`malloc_trim`).
//!
//! [`run`] also sweeps the hub once a second ([`crate::hub::Hub::sweep`]: expired catch-up
//! pages go, and the hub evicts when over its memory budget).
//!
//! [`run`] watches the socket count once a second and trims when it dropped sharply (by at
//! least [`MIN_DROP`] sockets and a quarter of its peak) and then held still for a tick — and
//! once more [`FOLLOW_UP`] later, for what the closing sockets' tasks and the exiting blocking
//! threads freed after it — and otherwise at most every [`PERIOD`] while the count is below the
//! peak seen since the last trim.
//!
//! The calls into the two allocators are the only `unsafe` code of the server (module `ffi`).

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::AppState;

/// The smallest drop in sockets that counts as sharp.
pub const MIN_DROP: usize = 256;
/// The longest time between trims while fewer sockets are open than at the last peak.
pub const PERIOD: Duration = Duration::from_secs(60);
/// A second trim this long after one for a sharp drop.
pub const FOLLOW_UP: Duration = Duration::from_secs(3);
/// How long an idle blocking thread (store reads) lives before it exits and hands its
/// allocator pages back.
pub const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// mimalloc is the global allocator (set once by the binary).
static MIMALLOC: AtomicBool = AtomicBool::new(false);
/// Bumped by every trim; each worker thread collects once per new value.
static EPOCH: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The epoch this thread last collected for.
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

/// Declares that mimalloc is the process's global allocator, so [`trim`] may ask it to give
/// freed pages back. Call once at start, before the runtime starts.
pub fn use_mimalloc() {
    MIMALLOC.store(true, Ordering::Release);
}

/// The runtime's park hook: a worker that has not collected since the last trim does so now.
/// Costs one atomic load otherwise.
pub fn on_worker_park() {
    let epoch = EPOCH.load(Ordering::Acquire);
    if epoch == 0 {
        return;
    }
    let stale = SEEN.with(|seen| {
        if seen.get() == epoch {
            false
        } else {
            seen.set(epoch);
            true
        }
    });
    if stale {
        collect_this_thread();
    }
}

/// Frees this thread's empty allocator pages and purges freed memory now.
fn collect_this_thread() {
    if !MIMALLOC.load(Ordering::Acquire) {
        return;
    }
    ffi::mi_collect();
}

/// The calls into the allocators' C APIs.
#[allow(unsafe_code)]
mod ffi {
    /// Collects the calling thread's mimalloc heap, forcing the release of its empty pages and
    /// the purge of freed arena memory.
    pub(super) fn mi_collect() {
        // SAFETY: `mi_collect` takes no pointers and only walks the calling thread's own heap
        // and the process's arenas, under mimalloc's internal locking; it may be called from
        // any thread at any time. It is only reached when mimalloc is the global allocator
        // (see `use_mimalloc`).
        unsafe { libmimalloc_sys::mi_collect(true) }
    }

    /// Returns the free memory of every glibc malloc arena to the OS.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub(super) fn malloc_trim() {
        // SAFETY: `malloc_trim` takes no pointers; glibc locks each arena while it trims it, so
        // it is safe to call while other threads allocate.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    /// Other C libraries have no such call.
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub(super) fn malloc_trim() {}
}

/// When to trim, from the socket count sampled once per tick.
#[derive(Debug)]
pub struct Policy {
    /// Most sockets seen since the last trim.
    peak: usize,
    /// The count at the previous tick.
    last: usize,
    last_trim: Instant,
    /// When the follow-up of a trim for a sharp drop is due.
    follow_up: Option<Instant>,
}

impl Policy {
    pub fn new(now: Instant) -> Self {
        Policy {
            peak: 0,
            last: 0,
            last_trim: now,
            follow_up: None,
        }
    }

    /// Takes one sample; true when a trim is due now.
    pub fn tick(&mut self, count: usize, now: Instant) -> bool {
        // Still: moved by at most 1 % of the peak since the previous tick (a burst is over).
        let still = count.abs_diff(self.last) <= self.peak / 100;
        self.last = count;
        self.peak = self.peak.max(count);
        let dropped = self.peak - count;
        let sharp = dropped >= MIN_DROP && dropped.saturating_mul(4) >= self.peak;
        let due = dropped > 0 && now.duration_since(self.last_trim) >= PERIOD;
        let follow_up = self.follow_up.is_some_and(|at| now >= at);
        if (sharp && still) || due || follow_up {
            self.follow_up = (sharp && still).then(|| now + FOLLOW_UP);
            self.peak = count;
            self.last_trim = now;
            true
        } else {
            false
        }
    }
}

/// What one trim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// Read-cache membership entries of users with no socket here, dropped.
    pub cache_entries: usize,
}

/// Drops the per-user state of users with no socket here, shrinks the per-user maps, empties
/// the store's page caches, and asks the allocators to give freed pages back.
pub async fn trim(state: &AppState) -> Trimmed {
    let svc = &state.service;
    svc.limits.shrink();
    svc.presence.shrink();
    let connected: HashSet<Arc<str>> = state.hub.shrink();
    let cache_entries = svc.cache.retain_members_of(|user| connected.contains(user));
    drop(connected);
    if let Err(e) = svc.store.release_memory().await {
        tracing::debug!(error = %e, "the store could not release memory");
    }
    ffi::malloc_trim();
    if MIMALLOC.load(Ordering::Acquire) {
        EPOCH.fetch_add(1, Ordering::AcqRel);
        on_worker_park();
        // Wake the other workers: each collects when it parks again.
        let workers = tokio::runtime::Handle::try_current()
            .map(|h| h.metrics().num_workers())
            .unwrap_or(0);
        for _ in 0..workers * 2 {
            tokio::spawn(tokio::task::yield_now());
        }
    }
    Trimmed { cache_entries }
}

/// Samples the socket count every `every` and trims when [`Policy`] says so, until shutdown.
pub async fn run(state: AppState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut policy = Policy::new(Instant::now());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.shutdown.cancelled() => return,
        }
        // Catch-up pages expire on time whether or not their room is read again.
        state.hub.sweep();
        let count = state.hub.connection_count();
        if policy.tick(count, Instant::now()) {
            let started = Instant::now();
            let t = trim(&state).await;
            state.service.metrics.memory_trims.inc();
            tracing::debug!(
                sockets = count,
                cache_entries = t.cache_entries,
                took_us = started.elapsed().as_micros() as u64,
                "memory trimmed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sharp_drop_trims_once_the_count_holds_still() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut p = Policy::new(t0);
        assert!(!p.tick(10_000, s(1)), "growth never trims");
        assert!(!p.tick(10_000, s(2)));
        assert!(!p.tick(4_000, s(3)), "still dropping: wait");
        assert!(!p.tick(0, s(4)), "still dropping: wait");
        assert!(p.tick(0, s(5)), "held still after a sharp drop");
        assert!(!p.tick(0, s(6)), "nothing new to give back");
        assert!(!p.tick(0, s(7)));
        assert!(p.tick(0, s(8)), "the follow-up");
        assert!(!p.tick(0, s(9)), "one follow-up only");
        assert!(!p.tick(0, s(20)));
    }

    #[test]
    fn small_drops_wait_for_the_period() {
        let t0 = Instant::now();
        let mut p = Policy::new(t0);
        assert!(!p.tick(1_000, t0 + Duration::from_secs(1)));
        assert!(
            !p.tick(900, t0 + Duration::from_secs(2)),
            "a tenth is not sharp"
        );
        assert!(!p.tick(900, t0 + Duration::from_secs(3)));
        assert!(!p.tick(100, t0 + Duration::from_secs(4)));
        assert!(
            !p.tick(1_000, t0 + Duration::from_secs(5)),
            "back at the peak"
        );
        assert!(!p.tick(1_000, t0 + PERIOD + Duration::from_secs(1)));
        assert!(
            p.tick(990, t0 + PERIOD + Duration::from_secs(2)),
            "below the peak when the period is over"
        );
    }

    #[test]
    fn a_drop_below_the_minimum_is_not_sharp() {
        let t0 = Instant::now();
        let mut p = Policy::new(t0);
        assert!(!p.tick(200, t0));
        assert!(!p.tick(0, t0 + Duration::from_secs(1)));
        assert!(!p.tick(0, t0 + Duration::from_secs(2)));
    }
}
