//! In-memory cache for REST responses and derived data.
//!
//! [`Cache<V>`] maps `String` keys to values of one type. Every entry remembers when it was
//! stored (or last revalidated), the [`CachePolicy`] it was stored with, an optional ETag and a
//! weight in bytes. Its age decides its [`Freshness`]: *fresh* for `ttl`, then *stale* for a
//! further `stale_ttl` (it may still be served while a background request revalidates it), then
//! *expired*. Expired entries are not served, but they are kept until evicted because their ETag
//! still makes the next request conditional: a `304 Not Modified` brings them back to life
//! without downloading the body again.
//!
//! [`Cache::get_or_fetch`] is the main entry point. Fresh entries are returned at once; stale
//! ones are returned at once *and* revalidated by a spawned task (at most one request per key at
//! a time); expired or missing ones are fetched while the caller waits. Concurrent callers for
//! the same key share one request ("single-flight"): the request is a
//! [`Shared`] future registered per key; only a weak handle is kept
//! in the cache, so a request that every caller abandoned is dropped rather than leaked, and the
//! next caller starts a new one. Errors reach every waiter and nothing is cached. Invalidating a
//! key while its request is in flight unregisters the request, so its late answer is handed to
//! the callers that asked but not stored.
//!
//! The total weight is capped. Recency is tracked with a generation counter: each use of an entry
//! gives it a new, larger tick, and a `BTreeMap<tick, key>` orders entries from least to most
//! recently used, so a lookup costs O(log n) and eviction pops the smallest tick. All state sits
//! behind one `parking_lot` mutex that is never held across an `.await`. Time is read from
//! [`tokio::time::Instant`], so tests with paused time are exact.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared, WeakShared};
use parking_lot::Mutex;
use tokio::time::Instant;

/// Default time an entry stays fresh: 5 minutes (the seed design's `ttl = 300`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// Default time an entry may be served stale after its TTL: 24 hours (the seed design's
/// `staleTtl = 86400`).
pub const DEFAULT_STALE_TTL: Duration = Duration::from_secs(86_400);

/// How long an entry is fresh and how long after that it may still be served stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CachePolicy {
    /// Time after storing (or revalidating) during which the entry is fresh.
    pub ttl: Duration,
    /// Window after `ttl` during which the entry is stale: still served, but revalidated in the
    /// background by [`Cache::get_or_fetch`]. Zero disables stale-while-revalidate.
    pub stale_ttl: Duration,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_TTL,
            stale_ttl: DEFAULT_STALE_TTL,
        }
    }
}

impl CachePolicy {
    /// A policy with the given TTL and stale window.
    pub fn new(ttl: Duration, stale_ttl: Duration) -> Self {
        Self { ttl, stale_ttl }
    }

    /// The freshness of an entry of the given age under this policy.
    pub fn freshness(&self, age: Duration) -> Freshness {
        if age < self.ttl {
            Freshness::Fresh
        } else if age < self.ttl.saturating_add(self.stale_ttl) {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }
}

/// Where an entry stands in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Freshness {
    /// Younger than its TTL: served as is.
    Fresh,
    /// Past its TTL but inside the stale window: served while it is revalidated.
    Stale,
    /// Past the stale window: not served; only its ETag is still useful.
    Expired,
}

/// What a fetch closure passed to [`Cache::get_or_fetch`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched<V> {
    /// The server confirmed that the value for the ETag it was sent is still current
    /// (HTTP 304). The cached value is kept and its timestamps are refreshed.
    NotModified,
    /// A new value.
    New {
        /// The value to return and cache.
        value: V,
        /// The ETag the server sent with it, if any.
        etag: Option<String>,
        /// Its size in bytes, counted against the cache's cap (ignored when the cache was built
        /// with a [`Weigher`]).
        weight: usize,
    },
}

/// A snapshot of one entry, as returned by [`Cache::get_entry`].
#[derive(Debug, Clone, PartialEq)]
pub struct CacheEntry<V> {
    /// The cached value (possibly stale or expired; see `freshness`).
    pub value: V,
    /// The ETag stored with it.
    pub etag: Option<String>,
    /// Its freshness now.
    pub freshness: Freshness,
    /// Time since it was stored or last revalidated.
    pub age: Duration,
    /// Its weight in bytes.
    pub weight: usize,
}

/// Counters and gauges of a [`Cache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered with a fresh value.
    pub hits: u64,
    /// Lookups answered with a stale value (and a background revalidation).
    pub stale_hits: u64,
    /// Lookups that found nothing servable and had to wait for a fetch (or, for
    /// [`Cache::get`], returned `None`).
    pub misses: u64,
    /// Fetches answered with [`Fetched::NotModified`] (HTTP 304).
    pub revalidations: u64,
    /// Entries removed to keep the total weight under the cap.
    pub evictions: u64,
    /// Current total weight of the entries, in bytes.
    pub size_bytes: usize,
    /// The cap on `size_bytes`.
    pub max_bytes: usize,
    /// Current number of entries (including expired ones kept for their ETag).
    pub entries: usize,
}

impl CacheStats {
    /// `(hits + stale_hits) / (hits + stale_hits + misses)`, or `0.0` before any lookup.
    pub fn hit_rate(&self) -> f64 {
        let served = self.hits.saturating_add(self.stale_hits);
        let total = served.saturating_add(self.misses);
        if total == 0 {
            0.0
        } else {
            // Precision loss only beyond 2^53 lookups.
            served as f64 / total as f64
        }
    }
}

/// Errors produced by the cache itself (fetch errors are the caller's own type).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The fetch answered [`Fetched::NotModified`] although the cache held no value for the key
    /// (a server that answers 304 to an unconditional request).
    #[error("fetch for {key:?} answered 'not modified' but no cached value exists")]
    NotModifiedWithoutValue {
        /// The key that was being fetched.
        key: String,
    },
}

/// Computes the weight in bytes of a value; see [`Cache::with_weigher`].
pub type Weigher<V> = Arc<dyn Fn(&V) -> usize + Send + Sync>;

/// The future shared by all callers waiting for one fetch of one key.
type FlightFuture<V, E> = Shared<BoxFuture<'static, Result<V, E>>>;

/// A cheaply clonable, thread-safe cache of `V` values keyed by `String`.
///
/// Clones share the same storage. See the [module documentation](self) for the design.
pub struct Cache<V> {
    shared: Arc<CacheShared<V>>,
}

struct CacheShared<V> {
    inner: Mutex<Inner<V>>,
    max_bytes: usize,
    weigher: Option<Weigher<V>>,
}

struct Slot<V> {
    value: V,
    etag: Option<String>,
    weight: usize,
    stored_at: Instant,
    policy: CachePolicy,
    tick: u64,
}

/// The previous entry a fetch started from, kept so a 304 can be answered even if the entry
/// was evicted while the request was in flight.
struct Prev<V> {
    value: V,
    etag: Option<String>,
    weight: usize,
}

/// A registered in-flight fetch.
struct Flight {
    id: u64,
    /// Dies with the flight's future; lets us test liveness without knowing its error type.
    alive: Weak<()>,
    /// A `WeakShared<BoxFuture<'static, Result<V, E>>>` for the caller's `E`.
    handle: Box<dyn Any + Send + Sync>,
}

#[derive(Default)]
struct Counters {
    hits: u64,
    stale_hits: u64,
    misses: u64,
    revalidations: u64,
    evictions: u64,
}

struct Inner<V> {
    entries: HashMap<String, Slot<V>>,
    /// Recency order: smallest tick = least recently used.
    lru: BTreeMap<u64, String>,
    next_tick: u64,
    size: usize,
    flights: HashMap<String, Flight>,
    next_flight: u64,
    counters: Counters,
}

impl<V> Inner<V> {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
            lru: BTreeMap::new(),
            next_tick: 0,
            size: 0,
            flights: HashMap::new(),
            next_flight: 0,
            counters: Counters::default(),
        }
    }

    fn tick(&mut self) -> u64 {
        self.next_tick = self.next_tick.wrapping_add(1);
        self.next_tick
    }

    /// Marks `key` as just used. O(log n).
    fn touch(&mut self, key: &str) {
        let tick = self.tick();
        if let Some(slot) = self.entries.get_mut(key) {
            let old = std::mem::replace(&mut slot.tick, tick);
            if let Some(k) = self.lru.remove(&old) {
                self.lru.insert(tick, k);
            }
        }
    }

    fn remove(&mut self, key: &str) -> Option<Slot<V>> {
        let slot = self.entries.remove(key)?;
        self.lru.remove(&slot.tick);
        self.size = self.size.saturating_sub(slot.weight);
        Some(slot)
    }

    /// Stores an entry (replacing any previous one) and evicts least recently used entries
    /// until the total weight fits `max_bytes`. Returns `false`, and drops any previous entry
    /// for the key, if the value alone is heavier than the cap.
    fn store(&mut self, key: &str, slot: SlotInit<V>, max_bytes: usize) -> bool {
        self.remove(key);
        if slot.weight > max_bytes {
            tracing::debug!(
                key,
                weight = slot.weight,
                max_bytes,
                "cache entry larger than the cap, not stored"
            );
            return false;
        }
        let tick = self.tick();
        self.lru.insert(tick, key.to_owned());
        self.size = self.size.saturating_add(slot.weight);
        self.entries.insert(
            key.to_owned(),
            Slot {
                value: slot.value,
                etag: slot.etag,
                weight: slot.weight,
                stored_at: slot.stored_at,
                policy: slot.policy,
                tick,
            },
        );
        while self.size > max_bytes {
            let Some((_, victim)) = self.lru.pop_first() else {
                break;
            };
            if let Some(evicted) = self.entries.remove(&victim) {
                self.size = self.size.saturating_sub(evicted.weight);
                self.counters.evictions += 1;
                tracing::trace!(key = %victim, weight = evicted.weight, "cache eviction");
            }
        }
        true
    }

    /// Whether a fetch for `key` is registered and still alive; forgets dead registrations.
    fn flight_alive(&mut self, key: &str) -> bool {
        match self.flights.get(key) {
            Some(flight) if flight.alive.strong_count() > 0 => true,
            Some(_) => {
                self.flights.remove(key);
                false
            }
            None => false,
        }
    }

    /// The live in-flight fetch for `key`, if any and if it has the caller's error type.
    fn join_flight<E>(&mut self, key: &str) -> Option<FlightFuture<V, E>>
    where
        V: Clone + Send + Sync + 'static,
        E: Clone + Send + Sync + 'static,
    {
        if !self.flight_alive(key) {
            return None;
        }
        self.flights
            .get(key)?
            .handle
            .downcast_ref::<WeakShared<BoxFuture<'static, Result<V, E>>>>()?
            .upgrade()
    }
}

struct SlotInit<V> {
    value: V,
    etag: Option<String>,
    weight: usize,
    stored_at: Instant,
    policy: CachePolicy,
}

impl<V> Clone for Cache<V> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<V> fmt::Debug for Cache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.shared.inner.lock();
        f.debug_struct("Cache")
            .field("entries", &inner.entries.len())
            .field("size_bytes", &inner.size)
            .field("max_bytes", &self.shared.max_bytes)
            .field("in_flight", &inner.flights.len())
            .finish()
    }
}

impl<V> Cache<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// An empty cache whose entries may weigh at most `max_bytes` in total. Entry weights are
    /// those passed by callers ([`Cache::insert`], [`Fetched::New`]).
    pub fn new(max_bytes: usize) -> Self {
        Self::build(max_bytes, None)
    }

    /// Like [`Cache::new`], but every entry's weight is computed by `weigher`, and weights
    /// passed by callers are ignored.
    pub fn with_weigher<W>(max_bytes: usize, weigher: W) -> Self
    where
        W: Fn(&V) -> usize + Send + Sync + 'static,
    {
        Self::build(max_bytes, Some(Arc::new(weigher)))
    }

    fn build(max_bytes: usize, weigher: Option<Weigher<V>>) -> Self {
        Self {
            shared: Arc::new(CacheShared {
                inner: Mutex::new(Inner::new()),
                max_bytes,
                weigher,
            }),
        }
    }

    fn weigh(&self, value: &V, weight: usize) -> usize {
        match &self.shared.weigher {
            Some(weigher) => weigher(value),
            None => weight,
        }
    }

    /// Stores `value` under `key`, fresh from now, replacing any previous entry and evicting
    /// least recently used entries to stay under the cap. Returns `false` (and removes any
    /// previous entry for the key) if the value alone is heavier than the cap.
    ///
    /// An explicit insert is newer than any fetch of the key still in flight: that fetch's
    /// result goes to its callers but does not replace this value.
    pub fn insert(
        &self,
        key: &str,
        value: V,
        etag: Option<String>,
        weight: usize,
        policy: CachePolicy,
    ) -> bool {
        let weight = self.weigh(&value, weight);
        let init = SlotInit {
            value,
            etag,
            weight,
            stored_at: Instant::now(),
            policy,
        };
        let mut inner = self.shared.inner.lock();
        inner.flights.remove(key);
        inner.store(key, init, self.shared.max_bytes)
    }

    /// The value for `key` if it is fresh. Counts a hit or a miss, and marks the entry as used.
    pub fn get(&self, key: &str) -> Option<V> {
        let now = Instant::now();
        let mut inner = self.shared.inner.lock();
        let fresh = inner.entries.get(key).and_then(|slot| {
            let age = now.saturating_duration_since(slot.stored_at);
            (slot.policy.freshness(age) == Freshness::Fresh).then(|| slot.value.clone())
        });
        match fresh {
            Some(value) => {
                inner.counters.hits += 1;
                inner.touch(key);
                Some(value)
            }
            None => {
                inner.counters.misses += 1;
                None
            }
        }
    }

    /// The entry for `key` whatever its freshness, with its ETag. Marks it as used but does not
    /// count a hit or a miss.
    pub fn get_entry(&self, key: &str) -> Option<CacheEntry<V>> {
        let now = Instant::now();
        let mut inner = self.shared.inner.lock();
        let entry = inner.entries.get(key).map(|slot| {
            let age = now.saturating_duration_since(slot.stored_at);
            CacheEntry {
                value: slot.value.clone(),
                etag: slot.etag.clone(),
                freshness: slot.policy.freshness(age),
                age,
                weight: slot.weight,
            }
        })?;
        inner.touch(key);
        Some(entry)
    }

    /// Returns the value for `key`, fetching it if needed.
    ///
    /// - **Fresh** entry: returned at once (a hit); `fetch` is not called.
    /// - **Stale** entry: returned at once (a stale hit), and unless a fetch for the key is
    ///   already running, `fetch` is spawned on the current tokio runtime to revalidate it.
    /// - **Expired** or **missing** entry: a miss; the caller waits for the key's in-flight
    ///   fetch if there is one, otherwise `fetch` is called.
    ///
    /// `fetch` receives the ETag of the entry it replaces (stale or expired), so it can make a
    /// conditional request. [`Fetched::New`] stores the new value under `policy`;
    /// [`Fetched::NotModified`] keeps the cached value and makes it fresh again under `policy`.
    /// An error is returned to every caller waiting on that fetch, and nothing is cached.
    /// If `fetch` answers `NotModified` while no value is cached, the callers get
    /// [`CacheError::NotModifiedWithoutValue`].
    pub async fn get_or_fetch<F, Fut, E>(
        &self,
        key: &str,
        policy: CachePolicy,
        fetch: F,
    ) -> Result<V, E>
    where
        F: FnOnce(Option<String>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Fetched<V>, E>> + Send + 'static,
        E: From<CacheError> + Clone + Send + Sync + 'static,
    {
        let now = Instant::now();
        let flight = {
            let mut inner = self.shared.inner.lock();
            let found = inner.entries.get(key).map(|slot| {
                let age = now.saturating_duration_since(slot.stored_at);
                (
                    slot.policy.freshness(age),
                    Prev {
                        value: slot.value.clone(),
                        etag: slot.etag.clone(),
                        weight: slot.weight,
                    },
                )
            });
            match found {
                Some((Freshness::Fresh, prev)) => {
                    inner.counters.hits += 1;
                    inner.touch(key);
                    return Ok(prev.value);
                }
                Some((Freshness::Stale, prev)) => {
                    inner.counters.stale_hits += 1;
                    inner.touch(key);
                    let value = prev.value.clone();
                    if !inner.flight_alive(key) {
                        match tokio::runtime::Handle::try_current() {
                            Ok(runtime) => {
                                let flight =
                                    self.start_flight(&mut inner, key, policy, Some(prev), fetch);
                                drop(inner);
                                tracing::debug!(key, "serving stale cache entry, revalidating");
                                runtime.spawn(async move {
                                    // Errors were logged by the flight; the stale value stays.
                                    let _ = flight.await;
                                });
                            }
                            Err(_) => {
                                tracing::warn!(
                                    key,
                                    "no tokio runtime: stale entry not revalidated"
                                );
                            }
                        }
                    }
                    return Ok(value);
                }
                Some((Freshness::Expired, prev)) => {
                    inner.counters.misses += 1;
                    match inner.join_flight::<E>(key) {
                        Some(flight) => flight,
                        None => self.start_flight(&mut inner, key, policy, Some(prev), fetch),
                    }
                }
                None => {
                    inner.counters.misses += 1;
                    match inner.join_flight::<E>(key) {
                        Some(flight) => flight,
                        None => self.start_flight(&mut inner, key, policy, None, fetch),
                    }
                }
            }
        };
        flight.await
    }

    /// Registers and returns a new fetch for `key`. Must be called with the lock held.
    fn start_flight<F, Fut, E>(
        &self,
        inner: &mut Inner<V>,
        key: &str,
        policy: CachePolicy,
        prev: Option<Prev<V>>,
        fetch: F,
    ) -> FlightFuture<V, E>
    where
        F: FnOnce(Option<String>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Fetched<V>, E>> + Send + 'static,
        E: From<CacheError> + Clone + Send + Sync + 'static,
    {
        inner.next_flight = inner.next_flight.wrapping_add(1);
        let id = inner.next_flight;
        let token = Arc::new(());
        let alive = Arc::downgrade(&token);
        let cache = self.clone();
        let key_owned = key.to_owned();
        let etag = prev.as_ref().and_then(|p| p.etag.clone());
        let flight = async move {
            let _token = token;
            let result = fetch(etag).await;
            cache.finish_flight(&key_owned, id, policy, prev, result)
        }
        .boxed()
        .shared();
        if let Some(weak) = flight.downgrade() {
            inner.flights.insert(
                key.to_owned(),
                Flight {
                    id,
                    alive,
                    handle: Box::new(weak),
                },
            );
        }
        flight
    }

    /// Applies the outcome of a fetch: stores or refreshes the entry (unless the flight was
    /// unregistered by an invalidation meanwhile) and computes what the callers receive.
    fn finish_flight<E>(
        &self,
        key: &str,
        id: u64,
        policy: CachePolicy,
        prev: Option<Prev<V>>,
        result: Result<Fetched<V>, E>,
    ) -> Result<V, E>
    where
        E: From<CacheError>,
    {
        let now = Instant::now();
        let max_bytes = self.shared.max_bytes;
        // Run the caller's weigher before taking the lock.
        let new_weight = match &result {
            Ok(Fetched::New { value, weight, .. }) => self.weigh(value, *weight),
            _ => 0,
        };
        let mut inner = self.shared.inner.lock();
        let current = inner.flights.get(key).is_some_and(|f| f.id == id);
        if current {
            inner.flights.remove(key);
        }
        match result {
            Err(err) => {
                tracing::debug!(key, "cache fetch failed; nothing cached");
                Err(err)
            }
            Ok(Fetched::New { value, etag, .. }) => {
                if current {
                    let init = SlotInit {
                        value: value.clone(),
                        etag,
                        weight: new_weight,
                        stored_at: now,
                        policy,
                    };
                    inner.store(key, init, max_bytes);
                } else {
                    tracing::debug!(key, "cache key invalidated during fetch; result not stored");
                }
                Ok(value)
            }
            Ok(Fetched::NotModified) => {
                inner.counters.revalidations += 1;
                let Some(prev) = prev else {
                    return Err(CacheError::NotModifiedWithoutValue {
                        key: key.to_owned(),
                    }
                    .into());
                };
                if current {
                    let refreshed = match inner.entries.get_mut(key) {
                        // Only refresh the entry the ETag we sent belongs to.
                        Some(slot) if slot.etag == prev.etag => {
                            slot.stored_at = now;
                            slot.policy = policy;
                            Some(slot.value.clone())
                        }
                        _ => None,
                    };
                    if let Some(value) = refreshed {
                        inner.touch(key);
                        return Ok(value);
                    }
                    if !inner.entries.contains_key(key) {
                        // Evicted while the request was in flight: the server vouched for it.
                        let init = SlotInit {
                            value: prev.value.clone(),
                            etag: prev.etag,
                            weight: prev.weight,
                            stored_at: now,
                            policy,
                        };
                        inner.store(key, init, max_bytes);
                    }
                }
                Ok(prev.value)
            }
        }
    }

    /// Removes the entry for `key` and forgets any in-flight fetch for it (its result will not
    /// be stored). Returns whether an entry was removed.
    pub fn invalidate(&self, key: &str) -> bool {
        let mut inner = self.shared.inner.lock();
        inner.flights.remove(key);
        inner.remove(key).is_some()
    }

    /// Removes every entry whose key starts with `prefix` (and forgets their in-flight
    /// fetches). Returns the number of entries removed. Costs O(n) in the number of entries.
    pub fn invalidate_prefix(&self, prefix: &str) -> usize {
        let mut inner = self.shared.inner.lock();
        inner.flights.retain(|k, _| !k.starts_with(prefix));
        let doomed: Vec<String> = inner
            .entries
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        for key in &doomed {
            inner.remove(key);
        }
        doomed.len()
    }

    /// Removes every entry and forgets every in-flight fetch. Counters are kept.
    pub fn clear(&self) {
        let mut inner = self.shared.inner.lock();
        inner.entries.clear();
        inner.lru.clear();
        inner.flights.clear();
        inner.size = 0;
    }

    /// A snapshot of the counters and gauges.
    pub fn stats(&self) -> CacheStats {
        let inner = self.shared.inner.lock();
        CacheStats {
            hits: inner.counters.hits,
            stale_hits: inner.counters.stale_hits,
            misses: inner.counters.misses,
            revalidations: inner.counters.revalidations,
            evictions: inner.counters.evictions,
            size_bytes: inner.size,
            max_bytes: self.shared.max_bytes,
            entries: inner.entries.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    enum TestError {
        Server(String),
        Cache(CacheError),
    }

    impl From<CacheError> for TestError {
        fn from(err: CacheError) -> Self {
            Self::Cache(err)
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn new_value(value: &str, etag: Option<&str>) -> Fetched<String> {
        Fetched::New {
            value: value.to_owned(),
            etag: etag.map(str::to_owned),
            weight: value.len(),
        }
    }

    fn short_policy() -> CachePolicy {
        CachePolicy::new(secs(10), secs(20))
    }

    #[test]
    fn default_policy_matches_the_seed_numbers() {
        let policy = CachePolicy::default();
        assert_eq!(policy.ttl, secs(300));
        assert_eq!(policy.stale_ttl, secs(86_400));
    }

    #[test]
    fn cache_is_send_sync_and_clone() {
        fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync_clone::<Cache<String>>();
    }

    #[tokio::test(start_paused = true)]
    async fn lru_evicts_least_recently_used_under_size_cap() {
        let cache = Cache::new(30);
        let policy = CachePolicy::default();
        assert!(cache.insert("a", "A".to_owned(), None, 10, policy));
        assert!(cache.insert("b", "B".to_owned(), None, 10, policy));
        assert!(cache.insert("c", "C".to_owned(), None, 10, policy));
        // Using `a` makes `b` the least recently used.
        assert_eq!(cache.get("a").as_deref(), Some("A"));
        assert!(cache.insert("d", "D".to_owned(), None, 10, policy));
        assert_eq!(cache.get_entry("b"), None, "b was least recently used");
        assert_eq!(cache.stats().evictions, 1);

        // Recency is now c < a < d; using c through get_entry leaves a then d as oldest.
        assert!(cache.get_entry("c").is_some());
        assert!(cache.insert("e", "E".to_owned(), None, 20, policy));
        assert!(cache.get_entry("a").is_none(), "a evicted second");
        assert!(cache.get_entry("d").is_none(), "d evicted third");
        assert!(cache.get_entry("c").is_some());
        assert!(cache.get_entry("e").is_some());
        let stats = cache.stats();
        assert_eq!(stats.evictions, 3);
        assert_eq!(stats.size_bytes, 30);
        assert_eq!(stats.entries, 2);

        // A value heavier than the whole cap is not cached and drops the old entry.
        assert!(!cache.insert("c", "huge".to_owned(), None, 31, policy));
        assert!(cache.get_entry("c").is_none());
        assert_eq!(cache.stats().size_bytes, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn replacing_an_entry_adjusts_the_size() {
        let cache = Cache::new(100);
        cache.insert("k", "v1".to_owned(), None, 40, CachePolicy::default());
        cache.insert("k", "v2".to_owned(), None, 25, CachePolicy::default());
        let stats = cache.stats();
        assert_eq!(
            (stats.size_bytes, stats.entries, stats.evictions),
            (25, 1, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn weigher_overrides_caller_weight() {
        let cache = Cache::with_weigher(10, |v: &String| v.len());
        assert!(cache.insert("a", "12345".to_owned(), None, 1_000, CachePolicy::default()));
        assert!(cache.insert("b", "123456".to_owned(), None, 0, CachePolicy::default()));
        // 5 + 6 > 10: `a` is evicted.
        assert!(cache.get_entry("a").is_none());
        assert_eq!(cache.stats().size_bytes, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_moves_entry_from_fresh_to_stale_to_expired() {
        let cache = Cache::new(1_000);
        cache.insert(
            "k",
            "v".to_owned(),
            Some("e1".to_owned()),
            1,
            short_policy(),
        );
        let freshness = |c: &Cache<String>| c.get_entry("k").map(|e| e.freshness);

        assert_eq!(freshness(&cache), Some(Freshness::Fresh));
        assert_eq!(cache.get("k").as_deref(), Some("v"));

        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(freshness(&cache), Some(Freshness::Fresh));

        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(freshness(&cache), Some(Freshness::Stale));
        assert_eq!(cache.get("k"), None, "get only returns fresh values");

        tokio::time::advance(Duration::from_millis(19_999)).await;
        assert_eq!(freshness(&cache), Some(Freshness::Stale));

        tokio::time::advance(Duration::from_millis(1)).await;
        let entry = cache
            .get_entry("k")
            .expect("expired entries are kept for their etag");
        assert_eq!(entry.freshness, Freshness::Expired);
        assert_eq!(entry.etag.as_deref(), Some("e1"));
        assert_eq!(entry.age, secs(30));

        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_entry_is_served_without_fetching() {
        let cache = Cache::new(1_000);
        cache.insert("k", "cached".to_owned(), None, 6, short_policy());
        let got = cache
            .get_or_fetch("k", short_policy(), |_| async {
                Err::<Fetched<String>, _>(TestError::Server("must not be called".into()))
            })
            .await;
        assert_eq!(got, Ok("cached".to_owned()));
        assert_eq!(cache.stats().hits, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn not_modified_keeps_value_and_refreshes_it() {
        let cache = Cache::new(1_000);
        cache.insert(
            "k",
            "v1".to_owned(),
            Some("e1".to_owned()),
            2,
            short_policy(),
        );
        tokio::time::advance(secs(31)).await;
        assert_eq!(
            cache.get_entry("k").map(|e| e.freshness),
            Some(Freshness::Expired)
        );

        let seen_etag = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&seen_etag);
        let got = cache
            .get_or_fetch("k", short_policy(), move |etag| async move {
                *seen.lock() = etag;
                Ok::<_, TestError>(Fetched::NotModified)
            })
            .await;
        assert_eq!(got, Ok("v1".to_owned()));
        assert_eq!(
            seen_etag.lock().as_deref(),
            Some("e1"),
            "request was conditional"
        );

        let entry = cache.get_entry("k").expect("entry kept");
        assert_eq!(entry.value, "v1");
        assert_eq!(entry.etag.as_deref(), Some("e1"));
        assert_eq!(entry.freshness, Freshness::Fresh);
        assert_eq!(entry.age, Duration::ZERO);
        let stats = cache.stats();
        assert_eq!((stats.misses, stats.revalidations), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn not_modified_without_cached_value_is_an_error() {
        let cache: Cache<String> = Cache::new(1_000);
        let got = cache
            .get_or_fetch("k", short_policy(), |etag| async move {
                assert_eq!(etag, None);
                Ok::<_, TestError>(Fetched::NotModified)
            })
            .await;
        assert_eq!(
            got,
            Err(TestError::Cache(CacheError::NotModifiedWithoutValue {
                key: "k".into()
            }))
        );
        assert!(cache.get_entry("k").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn single_flight_fetch_counts_one_call_for_ten_concurrent_callers() {
        let cache: Cache<String> = Cache::new(1_000);
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let cache = cache.clone();
            let calls = Arc::clone(&calls);
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch("room:1", short_policy(), move |_| async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, TestError>(new_value("fetched", Some("e1")))
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("task"), Ok("fetched".to_owned()));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let stats = cache.stats();
        assert_eq!((stats.misses, stats.hits), (10, 0));
        assert_eq!(cache.get("room:1").as_deref(), Some("fetched"));
    }

    #[tokio::test(start_paused = true)]
    async fn fetch_error_reaches_every_waiter_and_nothing_is_cached() {
        let cache: Cache<String> = Cache::new(1_000);
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let cache = cache.clone();
            let calls = Arc::clone(&calls);
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch("k", short_policy(), move |_| async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        Err::<Fetched<String>, _>(TestError::Server("503".into()))
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(
                task.await.expect("task"),
                Err(TestError::Server("503".into()))
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(cache.get_entry("k").is_none());
        // The failed flight is gone: the next call fetches again.
        let got = cache
            .get_or_fetch("k", short_policy(), |_| async {
                Ok::<_, TestError>(new_value("ok", None))
            })
            .await;
        assert_eq!(got, Ok("ok".to_owned()));
    }

    #[tokio::test(start_paused = true)]
    async fn stale_while_revalidate_returns_stale_at_once_and_refresh_lands() {
        let cache = Cache::new(1_000);
        cache.insert(
            "k",
            "old".to_owned(),
            Some("e1".to_owned()),
            3,
            short_policy(),
        );
        tokio::time::advance(secs(15)).await; // stale

        let calls = Arc::new(AtomicUsize::new(0));
        let fetch = |calls: Arc<AtomicUsize>| {
            move |etag: Option<String>| async move {
                assert_eq!(etag.as_deref(), Some("e1"));
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(secs(1)).await;
                Ok::<_, TestError>(new_value("new", Some("e2")))
            }
        };

        let start = Instant::now();
        let got = cache
            .get_or_fetch("k", short_policy(), fetch(Arc::clone(&calls)))
            .await;
        assert_eq!(got, Ok("old".to_owned()));
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "stale value returned at once"
        );

        // A second caller during the revalidation also gets the stale value, and no second
        // request starts.
        let got = cache
            .get_or_fetch("k", short_policy(), fetch(Arc::clone(&calls)))
            .await;
        assert_eq!(got, Ok("old".to_owned()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.get("k"), None, "not refreshed yet");

        tokio::time::sleep(Duration::from_millis(600)).await;
        let entry = cache.get_entry("k").expect("refreshed entry");
        assert_eq!(entry.value, "new");
        assert_eq!(entry.etag.as_deref(), Some("e2"));
        assert_eq!(entry.freshness, Freshness::Fresh);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let stats = cache.stats();
        assert_eq!((stats.stale_hits, stats.misses), (2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn invalidation_during_fetch_does_not_store_the_late_result() {
        let cache: Cache<String> = Cache::new(1_000);
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_fetch("k", short_policy(), |_| async {
                        tokio::time::sleep(secs(1)).await;
                        Ok::<_, TestError>(new_value("late", None))
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!cache.invalidate("k"), "nothing stored yet");
        assert_eq!(waiter.await.expect("task"), Ok("late".to_owned()));
        assert!(cache.get_entry("k").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn insert_during_fetch_wins_over_the_late_result() {
        let cache: Cache<String> = Cache::new(1_000);
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_fetch("k", short_policy(), |_| async {
                        tokio::time::sleep(secs(1)).await;
                        Ok::<_, TestError>(new_value("fetched", None))
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        cache.insert("k", "pushed".to_owned(), None, 6, short_policy());
        assert_eq!(waiter.await.expect("task"), Ok("fetched".to_owned()));
        assert_eq!(cache.get("k").as_deref(), Some("pushed"));
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_prefix_and_clear() {
        let cache = Cache::new(1_000);
        let policy = CachePolicy::default();
        for key in ["room:1", "room:2", "user:1"] {
            cache.insert(key, key.to_owned(), None, 10, policy);
        }
        assert_eq!(cache.invalidate_prefix("room:"), 2);
        assert!(cache.get_entry("room:1").is_none());
        assert!(cache.get_entry("user:1").is_some());
        assert_eq!(cache.stats().size_bytes, 10);
        assert!(cache.invalidate("user:1"));
        assert!(!cache.invalidate("user:1"));
        cache.insert("x", "x".to_owned(), None, 5, policy);
        cache.clear();
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.size_bytes), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn hit_rate_counts_fresh_and_stale_hits_against_misses() {
        assert_eq!(CacheStats::default().hit_rate(), 0.0);
        let stats = CacheStats {
            hits: 6,
            stale_hits: 2,
            misses: 2,
            ..CacheStats::default()
        };
        assert!((stats.hit_rate() - 0.8).abs() < 1e-12);

        let cache = Cache::new(1_000);
        let ok = |v: &'static str| {
            move |_: Option<String>| async move { Ok::<_, TestError>(new_value(v, None)) }
        };
        cache
            .get_or_fetch("k", short_policy(), ok("v"))
            .await
            .expect("miss"); // miss
        cache
            .get_or_fetch("k", short_policy(), ok("v"))
            .await
            .expect("hit"); // hit
        cache
            .get_or_fetch("k", short_policy(), ok("v"))
            .await
            .expect("hit"); // hit
        tokio::time::advance(secs(11)).await;
        cache
            .get_or_fetch("k", short_policy(), ok("v"))
            .await
            .expect("stale"); // stale hit
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.stale_hits, stats.misses), (2, 1, 1));
        assert!((stats.hit_rate() - 0.75).abs() < 1e-12);
    }
}
