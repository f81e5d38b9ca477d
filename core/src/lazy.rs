//! Lazy loading of keyed values with priorities, dependencies and single-flight.
//!
//! A [`LazyLoader<V>`] holds a registry of loaders: each key has a [`Priority`], a list of keys
//! it depends on, and an async [`Loader`]. [`LazyLoader::load`] first walks the dependency graph
//! from the key (an iterative depth-first search) and fails with [`LoadError::Cycle`] or
//! [`LoadError::Unknown`] before any loader runs. It then loads the dependencies (concurrently,
//! each one no sooner than its own dependencies), runs the key's loader and caches the value;
//! later loads return the cached value without calling the loader again.
//!
//! Concurrent loads of one key share a single *flight*: a
//! [`Shared`] future registered per key. Only a weak handle is
//! registered, so a flight that every caller abandoned is dropped rather than left half-done, and
//! the next caller starts a new one. A dependency shared by several keys is likewise loaded once.
//!
//! Loaders run under a bounded concurrency ([`DEFAULT_MAX_CONCURRENT`] by default). The limit is
//! a small semaphore whose waiters sit in a priority queue (highest [`Priority`] first, FIFO
//! within a priority), so when loads pile up, the critical ones start first. A flight waits for
//! its dependencies *before* it asks for a permit, so a chain of dependencies never holds
//! permits while waiting and cannot deadlock even with a limit of one. A dependency loaded on
//! behalf of a key runs at least at that key's priority (priority inheritance), so a critical
//! key is never stuck behind normal work because of a low-priority dependency.
//!
//! [`LazyLoader::invalidate`] forgets a value and, transitively, every value that was loaded on
//! top of it, and unregisters the matching in-flight loads so their late results are not cached.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::{join_all, ready, BoxFuture, FutureExt, Shared, WeakShared};
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Default number of loaders that may run at the same time.
pub const DEFAULT_MAX_CONCURRENT: usize = 4;

/// An async function producing the value of one key.
pub type Loader<V> = Arc<dyn Fn() -> BoxFuture<'static, Result<V, LoadError>> + Send + Sync>;

/// Wraps an async closure into a [`Loader`].
pub fn loader_fn<V, F, Fut>(f: F) -> Loader<V>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<V, LoadError>> + Send + 'static,
{
    Arc::new(move || f().boxed())
}

/// Why a load failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The key's loader returned an error.
    #[error("load failed: {0}")]
    Failed(String),
    /// The dependency graph from the requested key has a cycle; the path starts and ends with
    /// the same key, e.g. `["a", "b", "a"]`. Nothing was loaded.
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// The key, or one of its transitive dependencies, is not registered. Nothing was loaded.
    #[error("unknown key {0:?}")]
    Unknown(String),
    /// A direct dependency failed to load, so this key's loader was not called.
    #[error("dependency {key:?} failed to load")]
    DependencyFailed {
        /// The dependency that failed.
        key: String,
        /// Its error.
        #[source]
        source: Box<LoadError>,
    },
    /// [`LazyLoader::preload`] was called outside a tokio runtime.
    #[error("no tokio runtime to preload on")]
    NoRuntime,
}

/// How urgently a key should be loaded when loaders have to wait for a free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// Needed to show the current screen.
    Critical,
    /// Needed soon.
    High,
    /// The default.
    #[default]
    Normal,
    /// Background work, such as preloading.
    Low,
}

impl Priority {
    fn rank(self) -> u8 {
        match self {
            Self::Critical => 3,
            Self::High => 2,
            Self::Normal => 1,
            Self::Low => 0,
        }
    }
}

/// `Critical > High > Normal > Low`.
impl Ord for Priority {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl PartialOrd for Priority {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Counters of a [`LazyLoader`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LazyStats {
    /// Loader calls.
    pub loads_started: u64,
    /// Loads that joined a flight already under way instead of starting one.
    pub loads_shared: u64,
    /// Loads answered from the cached values.
    pub cached: u64,
    /// Loader calls that returned an error.
    pub failures: u64,
    /// Values currently cached.
    pub loaded: usize,
}

// ---------------------------------------------------------------------------------------------
// Priority semaphore

/// A counting semaphore that hands permits to the highest-priority waiter first.
struct Gate {
    state: Mutex<GateState>,
}

struct GateState {
    available: usize,
    waiters: BinaryHeap<Waiter>,
    next_seq: u64,
}

struct Waiter {
    priority: Priority,
    seq: u64,
    tx: oneshot::Sender<Permit>,
}

impl Waiter {
    /// Max-heap key: higher priority first, then lower sequence number (FIFO).
    fn key(&self) -> (Priority, Reverse<u64>) {
        (self.priority, Reverse(self.seq))
    }
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Waiter {}

impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// A slot to run one loader; handed to the next waiter when dropped.
struct Permit {
    gate: Option<Arc<Gate>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.release();
        }
    }
}

impl Gate {
    fn new(permits: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(GateState {
                available: permits,
                waiters: BinaryHeap::new(),
                next_seq: 0,
            }),
        })
    }

    async fn acquire(self: &Arc<Self>, priority: Priority) -> Permit {
        loop {
            let rx = {
                let mut state = self.state.lock();
                if state.available > 0 {
                    state.available -= 1;
                    return Permit {
                        gate: Some(Arc::clone(self)),
                    };
                }
                let (tx, rx) = oneshot::channel();
                state.next_seq += 1;
                let seq = state.next_seq;
                state.waiters.push(Waiter { priority, seq, tx });
                rx
            };
            if let Ok(permit) = rx.await {
                return permit;
            }
            // The sender is only dropped unsent if the gate itself went away; ask again.
        }
    }

    /// Gives a permit to the best live waiter, or returns it to the pool.
    fn release(self: &Arc<Self>) {
        let mut state = self.state.lock();
        while let Some(waiter) = state.waiters.pop() {
            let permit = Permit {
                gate: Some(Arc::clone(self)),
            };
            match waiter.tx.send(permit) {
                Ok(()) => return,
                // That waiter gave up: defuse the permit (we hold the lock) and try the next.
                Err(mut permit) => permit.gate = None,
            }
        }
        state.available += 1;
    }

    fn waiting(&self) -> usize {
        self.state.lock().waiters.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Loader

type LoadFuture<V> = BoxFuture<'static, Result<V, LoadError>>;

struct Registration<V> {
    priority: Priority,
    deps: Vec<String>,
    loader: Loader<V>,
}

struct FlightEntry<V> {
    id: u64,
    deps: Vec<String>,
    future: WeakShared<LoadFuture<V>>,
}

struct State<V> {
    registry: HashMap<String, Registration<V>>,
    loaded: HashMap<String, V>,
    flights: HashMap<String, FlightEntry<V>>,
    /// dependency → keys whose cached value was loaded on top of it.
    dependents: HashMap<String, HashSet<String>>,
    next_flight: u64,
    stats: LazyStats,
}

struct Inner<V> {
    state: Mutex<State<V>>,
    gate: Arc<Gate>,
    max_concurrent: usize,
}

/// Loads values by key, once, in dependency order, with bounded concurrency and priorities.
///
/// Clones share the same registry and cache. See the [module documentation](self).
pub struct LazyLoader<V> {
    inner: Arc<Inner<V>>,
}

impl<V> Clone for LazyLoader<V> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<V> fmt::Debug for LazyLoader<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("LazyLoader")
            .field("registered", &state.registry.len())
            .field("loaded", &state.loaded.len())
            .field("in_flight", &state.flights.len())
            .field("waiting", &self.inner.gate.waiting())
            .field("max_concurrent", &self.inner.max_concurrent)
            .finish()
    }
}

impl<V> Default for LazyLoader<V>
where
    V: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<V> LazyLoader<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// A loader running at most [`DEFAULT_MAX_CONCURRENT`] loaders at a time.
    pub fn new() -> Self {
        Self::with_max_concurrent(DEFAULT_MAX_CONCURRENT)
    }

    /// A loader running at most `max_concurrent` loaders at a time (at least one).
    pub fn with_max_concurrent(max_concurrent: usize) -> Self {
        let max_concurrent = max_concurrent.max(1);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    registry: HashMap::new(),
                    loaded: HashMap::new(),
                    flights: HashMap::new(),
                    dependents: HashMap::new(),
                    next_flight: 0,
                    stats: LazyStats::default(),
                }),
                gate: Gate::new(max_concurrent),
                max_concurrent,
            }),
        }
    }

    /// Registers (or replaces) the loader for `key`. Replacing a loader invalidates the key and
    /// its dependents.
    pub fn register(
        &self,
        key: impl Into<String>,
        priority: Priority,
        deps: Vec<String>,
        loader: Loader<V>,
    ) {
        let key = key.into();
        let mut state = self.inner.state.lock();
        if state.registry.contains_key(&key) {
            invalidate_locked(&mut state, &key);
        }
        state.registry.insert(
            key,
            Registration {
                priority,
                deps,
                loader,
            },
        );
    }

    /// Loads `key`: returns its cached value, or joins its in-flight load, or checks the
    /// dependency graph, loads the dependencies and then runs its loader.
    pub async fn load(&self, key: &str) -> Result<V, LoadError> {
        self.load_with(key, Priority::Low).await
    }

    /// The future of one load. `floor` is the priority of the key that needs it (inheritance).
    fn load_with(&self, key: &str, floor: Priority) -> LoadFuture<V> {
        let mut state = self.inner.state.lock();
        if let Some(value) = state.loaded.get(key) {
            let value = value.clone();
            state.stats.cached += 1;
            return ready(Ok(value)).boxed();
        }
        if let Some(flight) = state.flights.get(key).and_then(|f| f.future.upgrade()) {
            state.stats.loads_shared += 1;
            return flight.boxed();
        }
        if let Err(err) = check_graph(&state.registry, key) {
            tracing::debug!(key, error = %err, "lazy load rejected");
            return ready(Err(err)).boxed();
        }
        let Some(registration) = state.registry.get(key) else {
            return ready(Err(LoadError::Unknown(key.to_owned()))).boxed();
        };
        let priority = registration.priority.max(floor);
        let deps = registration.deps.clone();
        let loader = Arc::clone(&registration.loader);
        state.next_flight += 1;
        let id = state.next_flight;
        let flight: Shared<LoadFuture<V>> = self
            .run_flight(key.to_owned(), id, priority, deps.clone(), loader)
            .boxed()
            .shared();
        if let Some(weak) = flight.downgrade() {
            state.flights.insert(
                key.to_owned(),
                FlightEntry {
                    id,
                    deps,
                    future: weak,
                },
            );
        }
        flight.boxed()
    }

    /// The body of a flight: dependencies, permit, loader, bookkeeping.
    fn run_flight(
        &self,
        key: String,
        id: u64,
        priority: Priority,
        deps: Vec<String>,
        loader: Loader<V>,
    ) -> impl Future<Output = Result<V, LoadError>> + Send + 'static {
        let this = self.clone();
        async move {
            let dep_loads: Vec<_> = deps.iter().map(|d| this.load_with(d, priority)).collect();
            for (dep, result) in deps.iter().zip(join_all(dep_loads).await) {
                if let Err(err) = result {
                    this.finish(&key, id, &deps, None);
                    return Err(LoadError::DependencyFailed {
                        key: dep.clone(),
                        source: Box::new(err),
                    });
                }
            }
            let permit = this.inner.gate.acquire(priority).await;
            this.inner.state.lock().stats.loads_started += 1;
            tracing::trace!(key, ?priority, "lazy load started");
            let result = loader().await;
            drop(permit);
            match &result {
                Ok(value) => {
                    if !this.finish(&key, id, &deps, Some(value)) {
                        tracing::debug!(key, "lazy key invalidated during its load; not cached");
                    }
                }
                Err(err) => {
                    tracing::debug!(key, error = %err, "lazy load failed");
                    this.inner.state.lock().stats.failures += 1;
                    this.finish(&key, id, &deps, None);
                }
            }
            result
        }
    }

    /// Unregisters flight `id` of `key` and, if it produced `value`, caches it and records the
    /// key as a dependent of its deps, all under one lock. Does nothing if the flight is no
    /// longer current (invalidated meanwhile); returns whether it was.
    fn finish(&self, key: &str, id: u64, deps: &[String], value: Option<&V>) -> bool {
        let mut state = self.inner.state.lock();
        let current = state.flights.get(key).is_some_and(|f| f.id == id);
        if current {
            state.flights.remove(key);
            if let Some(value) = value {
                state.loaded.insert(key.to_owned(), value.clone());
                for dep in deps {
                    state
                        .dependents
                        .entry(dep.clone())
                        .or_default()
                        .insert(key.to_owned());
                }
            }
        }
        current
    }

    /// Starts loading `keys` in the background, highest priority first (in the given order
    /// within a priority), without waiting. Failures are logged.
    pub fn preload<I, S>(&self, keys: I) -> Result<(), LoadError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| LoadError::NoRuntime)?;
        let mut keys: Vec<(Priority, String)> = {
            let state = self.inner.state.lock();
            keys.into_iter()
                .map(Into::into)
                .map(|k| {
                    let priority = state.registry.get(&k).map_or(Priority::Low, |r| r.priority);
                    (priority, k)
                })
                .collect()
        };
        // Stable sort: FIFO within a priority.
        keys.sort_by_key(|(priority, _)| Reverse(*priority));
        let loads: Vec<_> = keys
            .into_iter()
            .map(|(_, key)| {
                let load = self.load_with(&key, Priority::Low);
                async move {
                    if let Err(err) = load.await {
                        tracing::warn!(key, error = %err, "preload failed");
                    }
                }
            })
            .collect();
        runtime.spawn(join_all(loads));
        Ok(())
    }

    /// Whether a value for `key` is cached.
    pub fn is_loaded(&self, key: &str) -> bool {
        self.inner.state.lock().loaded.contains_key(key)
    }

    /// The cached value for `key`, without loading it.
    pub fn get(&self, key: &str) -> Option<V> {
        self.inner.state.lock().loaded.get(key).cloned()
    }

    /// Forgets the value of `key` and, transitively, of every key loaded on top of it, and
    /// unregisters their in-flight loads (whose results will then not be cached). Returns the
    /// keys whose cached values were dropped.
    pub fn invalidate(&self, key: &str) -> Vec<String> {
        invalidate_locked(&mut self.inner.state.lock(), key)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> LazyStats {
        let state = self.inner.state.lock();
        LazyStats {
            loaded: state.loaded.len(),
            ..state.stats
        }
    }
}

fn invalidate_locked<V>(state: &mut State<V>, key: &str) -> Vec<String> {
    let mut dropped = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![key.to_owned()];
    while let Some(key) = stack.pop() {
        if !seen.insert(key.clone()) {
            continue;
        }
        state.flights.remove(&key);
        if state.loaded.remove(&key).is_some() {
            dropped.push(key.clone());
        }
        if let Some(dependents) = state.dependents.remove(&key) {
            stack.extend(dependents);
        }
        // Loads under way on top of this key would cache values built on the old one.
        stack.extend(
            state
                .flights
                .iter()
                .filter(|(_, f)| f.deps.contains(&key))
                .map(|(k, _)| k.clone()),
        );
    }
    dropped
}

/// Depth-first walk of the registered graph from `root`: the first cycle found (as a path that
/// starts and ends with the same key) or the first unregistered key.
fn check_graph<V>(
    registry: &HashMap<String, Registration<V>>,
    root: &str,
) -> Result<(), LoadError> {
    if !registry.contains_key(root) {
        return Err(LoadError::Unknown(root.to_owned()));
    }
    let mut done: HashSet<&str> = HashSet::new();
    let mut on_path: HashSet<&str> = HashSet::from([root]);
    // (key, index of the next dependency to visit)
    let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
    while let Some(&(node, next)) = stack.last() {
        let deps = registry.get(node).map_or(&[][..], |r| r.deps.as_slice());
        let Some(dep) = deps.get(next) else {
            on_path.remove(node);
            done.insert(node);
            stack.pop();
            continue;
        };
        if let Some(top) = stack.last_mut() {
            top.1 += 1;
        }
        let dep = dep.as_str();
        if on_path.contains(dep) {
            let start = stack.iter().position(|(k, _)| *k == dep).unwrap_or(0);
            let mut path: Vec<String> = stack[start..]
                .iter()
                .map(|(k, _)| (*k).to_owned())
                .collect();
            path.push(dep.to_owned());
            return Err(LoadError::Cycle(path));
        }
        if done.contains(dep) {
            continue;
        }
        if !registry.contains_key(dep) {
            return Err(LoadError::Unknown(dep.to_owned()));
        }
        on_path.insert(dep);
        stack.push((dep, 0));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
    use std::time::Duration;

    use super::*;

    type Journal = Arc<Mutex<Vec<String>>>;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn deps(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| (*k).to_owned()).collect()
    }

    /// A loader that logs its key when it starts, takes `took`, and returns `"<key>!"`.
    fn logging(journal: &Journal, key: &str, took: Duration) -> Loader<String> {
        let journal = Arc::clone(journal);
        let key = key.to_owned();
        loader_fn(move || {
            let journal = Arc::clone(&journal);
            let key = key.clone();
            async move {
                journal.lock().push(key.clone());
                tokio::time::sleep(took).await;
                Ok(format!("{key}!"))
            }
        })
    }

    /// A loader that counts its calls.
    fn counting(calls: &Arc<AtomicUsize>, value: &str, took: Duration) -> Loader<String> {
        let calls = Arc::clone(calls);
        let value = value.to_owned();
        loader_fn(move || {
            calls.fetch_add(1, AtomicOrdering::SeqCst);
            let value = value.clone();
            async move {
                tokio::time::sleep(took).await;
                Ok(value)
            }
        })
    }

    fn journal() -> Journal {
        Arc::new(Mutex::new(Vec::new()))
    }

    #[test]
    fn loader_is_send_sync_and_priorities_are_ordered() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<LazyLoader<String>>();
        assert!(Priority::Critical > Priority::High);
        assert!(Priority::High > Priority::Normal);
        assert!(Priority::Normal > Priority::Low);
    }

    #[tokio::test(start_paused = true)]
    async fn dependencies_load_first_in_dependency_order() {
        let loader = LazyLoader::new();
        let log = journal();
        let calls = Arc::new(AtomicUsize::new(0));
        // app -> {rooms, session}, rooms -> session: a diamond.
        loader.register(
            "app",
            Priority::Normal,
            deps(&["rooms", "session"]),
            logging(&log, "app", ms(5)),
        );
        loader.register(
            "rooms",
            Priority::Normal,
            deps(&["session"]),
            logging(&log, "rooms", ms(5)),
        );
        let session = {
            let log = Arc::clone(&log);
            let inner = counting(&calls, "session!", ms(5));
            loader_fn(move || {
                log.lock().push("session".to_owned());
                inner()
            })
        };
        loader.register("session", Priority::Normal, vec![], session);

        assert_eq!(loader.load("app").await, Ok("app!".to_owned()));
        assert_eq!(*log.lock(), deps(&["session", "rooms", "app"]));
        assert_eq!(
            calls.load(AtomicOrdering::SeqCst),
            1,
            "shared dependency loaded once"
        );
        assert!(loader.is_loaded("session") && loader.is_loaded("rooms"));
        assert_eq!(loader.get("rooms").as_deref(), Some("rooms!"));

        // Cached afterwards.
        assert_eq!(loader.load("app").await, Ok("app!".to_owned()));
        assert_eq!(log.lock().len(), 3);
        let stats = loader.stats();
        assert_eq!((stats.loads_started, stats.loaded, stats.cached), (3, 3, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn cycles_are_detected_with_their_path_before_anything_loads() {
        let loader = LazyLoader::new();
        let calls = Arc::new(AtomicUsize::new(0));
        loader.register(
            "root",
            Priority::Normal,
            deps(&["a"]),
            counting(&calls, "r", ms(1)),
        );
        loader.register(
            "a",
            Priority::Normal,
            deps(&["ok", "b"]),
            counting(&calls, "a", ms(1)),
        );
        loader.register(
            "ok",
            Priority::Normal,
            vec![],
            counting(&calls, "ok", ms(1)),
        );
        loader.register(
            "b",
            Priority::Normal,
            deps(&["c"]),
            counting(&calls, "b", ms(1)),
        );
        loader.register(
            "c",
            Priority::Normal,
            deps(&["a"]),
            counting(&calls, "c", ms(1)),
        );
        loader.register(
            "self",
            Priority::Normal,
            deps(&["self"]),
            counting(&calls, "s", ms(1)),
        );

        assert_eq!(
            loader.load("root").await,
            Err(LoadError::Cycle(deps(&["a", "b", "c", "a"])))
        );
        assert_eq!(
            loader.load("b").await,
            Err(LoadError::Cycle(deps(&["b", "c", "a", "b"])))
        );
        assert_eq!(
            loader.load("self").await,
            Err(LoadError::Cycle(deps(&["self", "self"])))
        );
        assert_eq!(calls.load(AtomicOrdering::SeqCst), 0, "nothing started");
        assert!(!loader.is_loaded("ok"));
        assert_eq!(loader.stats().loads_started, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_keys_are_reported() {
        let loader: LazyLoader<String> = LazyLoader::new();
        let calls = Arc::new(AtomicUsize::new(0));
        assert_eq!(
            loader.load("nope").await,
            Err(LoadError::Unknown("nope".into()))
        );
        loader.register(
            "a",
            Priority::Normal,
            deps(&["ghost"]),
            counting(&calls, "a", ms(1)),
        );
        assert_eq!(
            loader.load("a").await,
            Err(LoadError::Unknown("ghost".into()))
        );
        assert_eq!(calls.load(AtomicOrdering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_loads_share_one_loader_call() {
        let loader = LazyLoader::new();
        let calls = Arc::new(AtomicUsize::new(0));
        loader.register("k", Priority::Normal, vec![], counting(&calls, "v", ms(50)));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let loader = loader.clone();
                tokio::spawn(async move { loader.load("k").await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("task"), Ok("v".to_owned()));
        }
        assert_eq!(calls.load(AtomicOrdering::SeqCst), 1);
        let stats = loader.stats();
        assert_eq!((stats.loads_started, stats.loads_shared), (1, 9));
        assert_eq!(loader.load("k").await, Ok("v".to_owned()));
        assert_eq!(calls.load(AtomicOrdering::SeqCst), 1, "cached");
    }

    #[tokio::test(start_paused = true)]
    async fn higher_priority_starts_first_when_slots_are_scarce() {
        let loader = LazyLoader::with_max_concurrent(1);
        let log = journal();
        loader.register(
            "blocker",
            Priority::Low,
            vec![],
            logging(&log, "blocker", ms(100)),
        );
        for (key, priority) in [
            ("low", Priority::Low),
            ("normal-1", Priority::Normal),
            ("critical", Priority::Critical),
            ("normal-2", Priority::Normal),
            ("high", Priority::High),
        ] {
            loader.register(key, priority, vec![], logging(&log, key, ms(10)));
        }
        let blocker = {
            let loader = loader.clone();
            tokio::spawn(async move { loader.load("blocker").await })
        };
        tokio::time::sleep(ms(1)).await; // the blocker holds the only slot
        let mut tasks = Vec::new();
        for key in ["low", "normal-1", "critical", "normal-2", "high"] {
            let loader = loader.clone();
            tasks.push(tokio::spawn(async move { loader.load(key).await }));
            tokio::time::sleep(ms(1)).await; // enqueue in this order
        }
        assert_eq!(*log.lock(), deps(&["blocker"]));
        blocker.await.expect("task").expect("load");
        for task in tasks {
            task.await.expect("task").expect("load");
        }
        assert_eq!(
            *log.lock(),
            deps(&["blocker", "critical", "high", "normal-1", "normal-2", "low"])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dependencies_inherit_the_priority_of_the_key_that_needs_them() {
        let loader = LazyLoader::with_max_concurrent(1);
        let log = journal();
        loader.register(
            "blocker",
            Priority::Low,
            vec![],
            logging(&log, "blocker", ms(100)),
        );
        loader.register(
            "normal",
            Priority::Normal,
            vec![],
            logging(&log, "normal", ms(10)),
        );
        loader.register(
            "low-dep",
            Priority::Low,
            vec![],
            logging(&log, "low-dep", ms(10)),
        );
        loader.register(
            "critical",
            Priority::Critical,
            deps(&["low-dep"]),
            logging(&log, "critical", ms(10)),
        );
        let spawn = |key: &'static str| {
            let loader = loader.clone();
            tokio::spawn(async move { loader.load(key).await })
        };
        let mut tasks = Vec::new();
        for key in ["blocker", "normal", "critical"] {
            tasks.push(spawn(key));
            tokio::time::sleep(ms(1)).await; // enqueue in this order
        }
        for task in tasks {
            task.await.expect("task").expect("load");
        }
        // low-dep runs at critical priority, ahead of normal (without inheritance the order
        // would be blocker, normal, low-dep, critical). When low-dep finishes, its slot goes to
        // normal, the only waiter at that moment; critical asks for a slot only afterwards.
        assert_eq!(
            *log.lock(),
            deps(&["blocker", "low-dep", "normal", "critical"])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn preload_starts_in_priority_order_without_waiting() {
        let loader = LazyLoader::with_max_concurrent(1);
        let log = journal();
        for (key, priority) in [
            ("low", Priority::Low),
            ("high", Priority::High),
            ("critical", Priority::Critical),
            ("normal", Priority::Normal),
        ] {
            loader.register(key, priority, vec![], logging(&log, key, ms(10)));
        }
        let start = tokio::time::Instant::now();
        loader
            .preload(["low", "high", "critical", "normal", "unknown"])
            .expect("runtime");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(!loader.is_loaded("critical"), "preload does not wait");
        tokio::time::sleep(ms(100)).await;
        assert_eq!(*log.lock(), deps(&["critical", "high", "normal", "low"]));
        assert!(["low", "high", "critical", "normal"]
            .iter()
            .all(|k| loader.is_loaded(k)));
    }

    #[tokio::test(start_paused = true)]
    async fn preload_joins_and_is_joined_by_loads() {
        let loader = LazyLoader::new();
        let calls = Arc::new(AtomicUsize::new(0));
        loader.register("k", Priority::Low, vec![], counting(&calls, "v", ms(50)));
        loader.preload(["k"]).expect("runtime");
        assert_eq!(loader.load("k").await, Ok("v".to_owned()));
        assert_eq!(calls.load(AtomicOrdering::SeqCst), 1);
        assert_eq!(loader.stats().loads_shared, 1);
    }

    #[test]
    fn preload_outside_a_runtime_is_an_error() {
        let loader: LazyLoader<String> = LazyLoader::new();
        assert_eq!(loader.preload(["x"]), Err(LoadError::NoRuntime));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_propagate_to_dependents() {
        let loader = LazyLoader::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let attempts = Arc::new(AtomicUsize::new(0));
        let failing = {
            let attempts = Arc::clone(&attempts);
            loader_fn(move || {
                attempts.fetch_add(1, AtomicOrdering::SeqCst);
                async { Err::<String, _>(LoadError::Failed("boom".into())) }
            })
        };
        loader.register("a", Priority::Normal, vec![], failing);
        loader.register(
            "b",
            Priority::Normal,
            deps(&["a"]),
            counting(&calls, "b", ms(1)),
        );
        loader.register(
            "c",
            Priority::Normal,
            deps(&["b"]),
            counting(&calls, "c", ms(1)),
        );

        let expected = LoadError::DependencyFailed {
            key: "b".into(),
            source: Box::new(LoadError::DependencyFailed {
                key: "a".into(),
                source: Box::new(LoadError::Failed("boom".into())),
            }),
        };
        assert_eq!(loader.load("c").await, Err(expected));
        assert_eq!(
            calls.load(AtomicOrdering::SeqCst),
            0,
            "dependents never ran"
        );
        assert!(!loader.is_loaded("a") && !loader.is_loaded("b") && !loader.is_loaded("c"));
        assert_eq!(loader.stats().failures, 1);

        // Failures are not cached: the next load tries again.
        assert_eq!(
            loader.load("a").await,
            Err(LoadError::Failed("boom".into()))
        );
        assert_eq!(attempts.load(AtomicOrdering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidation_reaches_dependents_only() {
        let loader = LazyLoader::new();
        let counters: HashMap<&str, Arc<AtomicUsize>> = ["a", "b", "c", "d"]
            .into_iter()
            .map(|k| (k, Arc::new(AtomicUsize::new(0))))
            .collect();
        let count = |k: &str| counters[k].load(AtomicOrdering::SeqCst);
        // c -> b -> a, and d -> a's sibling-free independent root.
        loader.register(
            "a",
            Priority::Normal,
            vec![],
            counting(&counters["a"], "a", ms(1)),
        );
        loader.register(
            "b",
            Priority::Normal,
            deps(&["a"]),
            counting(&counters["b"], "b", ms(1)),
        );
        loader.register(
            "c",
            Priority::Normal,
            deps(&["b"]),
            counting(&counters["c"], "c", ms(1)),
        );
        loader.register(
            "d",
            Priority::Normal,
            vec![],
            counting(&counters["d"], "d", ms(1)),
        );
        loader.load("c").await.expect("c");
        loader.load("d").await.expect("d");

        let mut dropped = loader.invalidate("b");
        dropped.sort();
        assert_eq!(dropped, deps(&["b", "c"]));
        assert!(loader.is_loaded("a") && loader.is_loaded("d"));
        assert!(!loader.is_loaded("b") && !loader.is_loaded("c"));

        loader.load("c").await.expect("c again");
        assert_eq!(
            (count("a"), count("b"), count("c"), count("d")),
            (1, 2, 2, 1)
        );

        let mut dropped = loader.invalidate("a");
        dropped.sort();
        assert_eq!(dropped, deps(&["a", "b", "c"]));
        assert!(loader.is_loaded("d"));
    }

    #[tokio::test(start_paused = true)]
    async fn invalidation_during_a_load_keeps_its_result_out_of_the_cache() {
        let loader = LazyLoader::new();
        let calls = Arc::new(AtomicUsize::new(0));
        loader.register(
            "k",
            Priority::Normal,
            vec![],
            counting(&calls, "old", ms(100)),
        );
        let task = {
            let loader = loader.clone();
            tokio::spawn(async move { loader.load("k").await })
        };
        tokio::time::sleep(ms(10)).await;
        loader.invalidate("k");
        assert_eq!(task.await.expect("task"), Ok("old".to_owned()));
        assert!(!loader.is_loaded("k"));
    }
}
