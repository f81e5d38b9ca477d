//! Debouncing: coalesce bursts of calls into few callback invocations.
//!
//! [`Debouncer<T>`] delivers values to a callback according to [`DebounceOptions`], with the
//! semantics of lodash's `debounce`: a *burst* starts with a call made while the debouncer is
//! idle and ends once `wait` has passed without a call. With `leading`, the call that starts a
//! burst fires at once; with `trailing`, the latest value not yet fired fires when the burst
//! ends; `max_wait` bounds how long a value may wait while calls keep coming: it fires at most
//! `max_wait` after the first call that was not fired. A burst made of a single call fires once
//! even with both `leading` and `trailing`. [`KeyedDebouncer<K, T>`] keeps one such state per
//! key (per room, say) and hands the key to its callback; [`Debouncer<T>`] is the one-key case.
//!
//! Each debouncer owns one tokio task. `call`, `flush` and `cancel` only update a small state
//! machine under a `parking_lot` mutex and wake the task through a
//! [`Notify`]; the task sleeps until the earliest deadline, moves due
//! values to a FIFO and invokes the callback outside the lock. Every invocation, including a
//! leading edge or a flush, therefore happens on that task, in the order it was decided, and a
//! callback may call back into its debouncer without deadlocking. Dropping the debouncer aborts
//! the task: nothing fires afterwards. Time comes from [`tokio::time`], so tests with paused
//! time are exact.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// When a debouncer fires; see the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DebounceOptions {
    /// Quiet time after the last call that ends a burst.
    pub wait: Duration,
    /// Longest time the first unfired value of a burst may wait, even while calls keep coming.
    /// Values below `wait` are raised to `wait`, as lodash does.
    pub max_wait: Option<Duration>,
    /// Fire the first call of a burst at once.
    pub leading: bool,
    /// Fire the latest unfired value when the burst ends.
    pub trailing: bool,
}

impl DebounceOptions {
    /// Trailing-edge debouncing with the given wait (lodash's default).
    pub fn new(wait: Duration) -> Self {
        Self {
            wait,
            max_wait: None,
            leading: false,
            trailing: true,
        }
    }

    /// Sets `max_wait`.
    #[must_use]
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// Sets `leading`.
    #[must_use]
    pub fn with_leading(mut self, leading: bool) -> Self {
        self.leading = leading;
        self
    }

    /// Sets `trailing`.
    #[must_use]
    pub fn with_trailing(mut self, trailing: bool) -> Self {
        self.trailing = trailing;
        self
    }

    fn normalized(mut self) -> Self {
        self.max_wait = self.max_wait.map(|m| m.max(self.wait));
        self
    }

    /// Whether calls that are not a leading edge need to keep their value.
    fn keeps_values(&self) -> bool {
        self.trailing || self.max_wait.is_some()
    }
}

/// Errors creating a debouncer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DebounceError {
    /// `new` was called outside a tokio runtime; use `new_in` with a runtime handle.
    #[error("no tokio runtime to run the debouncer on")]
    NoRuntime,
}

/// The per-key state machine.
struct Slot<T> {
    /// Time of the latest call of the current burst; `None` when idle.
    last_call: Option<Instant>,
    /// The latest value not fired yet.
    pending: Option<T>,
    /// When `pending` must fire at the latest (set by the first unfired call).
    max_deadline: Option<Instant>,
}

impl<T> Slot<T> {
    fn idle() -> Self {
        Self {
            last_call: None,
            pending: None,
            max_deadline: None,
        }
    }

    fn is_idle(&self) -> bool {
        self.last_call.is_none() && self.pending.is_none()
    }

    /// Records a call; returns the value if it fires at once (leading edge).
    fn call(&mut self, value: T, now: Instant, options: &DebounceOptions) -> Option<T> {
        let starts_burst = self.last_call.is_none();
        self.last_call = Some(now);
        if starts_burst && options.leading {
            return Some(value);
        }
        if options.keeps_values() {
            if self.pending.is_none() {
                // An unrepresentable deadline (absurdly long max_wait) means "never".
                self.max_deadline = options.max_wait.and_then(|m| now.checked_add(m));
            }
            self.pending = Some(value);
        }
        None
    }

    /// Advances to `now`; returns the value that fires, if any.
    fn expire(&mut self, now: Instant, options: &DebounceOptions) -> Option<T> {
        let mut fired = None;
        if self.max_deadline.is_some_and(|d| d <= now) {
            self.max_deadline = None;
            fired = self.pending.take();
        }
        if self
            .last_call
            .and_then(|t| t.checked_add(options.wait))
            .is_some_and(|end| end <= now)
        {
            self.last_call = None;
            self.max_deadline = None;
            let value = self.pending.take();
            if options.trailing && fired.is_none() {
                fired = value;
            }
        }
        fired
    }

    fn deadline(&self, options: &DebounceOptions) -> Option<Instant> {
        let burst_end = self.last_call.and_then(|t| t.checked_add(options.wait));
        let forced = self.pending.as_ref().and(self.max_deadline);
        match (burst_end, forced) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

struct State<K, T> {
    slots: HashMap<K, Slot<T>>,
    /// Values decided to fire, in order, waiting for the task to invoke the callback.
    ready: VecDeque<(K, T)>,
    closed: bool,
}

type KeyedCallback<K, T> = Arc<dyn Fn(K, T) + Send + Sync>;

struct Core<K, T> {
    state: Mutex<State<K, T>>,
    notify: Notify,
    options: DebounceOptions,
    callback: KeyedCallback<K, T>,
}

/// A debouncer with independent state per key, sharing one task.
///
/// The callback receives the key and the value. See the [module documentation](self).
pub struct KeyedDebouncer<K, T> {
    core: Arc<Core<K, T>>,
    task: JoinHandle<()>,
}

impl<K, T> fmt::Debug for KeyedDebouncer<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.core.state.lock();
        f.debug_struct("KeyedDebouncer")
            .field("options", &self.core.options)
            .field("active_keys", &state.slots.len())
            .field("ready", &state.ready.len())
            .finish()
    }
}

impl<K, T> KeyedDebouncer<K, T>
where
    K: Eq + Hash + Clone + Send + 'static,
    T: Send + 'static,
{
    /// A debouncer running on the current tokio runtime.
    pub fn new<F>(options: DebounceOptions, callback: F) -> Result<Self, DebounceError>
    where
        F: Fn(K, T) + Send + Sync + 'static,
    {
        let handle = Handle::try_current().map_err(|_| DebounceError::NoRuntime)?;
        Ok(Self::new_in(&handle, options, callback))
    }

    /// A debouncer running on the given runtime (usable from threads outside any runtime).
    pub fn new_in<F>(handle: &Handle, options: DebounceOptions, callback: F) -> Self
    where
        F: Fn(K, T) + Send + Sync + 'static,
    {
        let core = Arc::new(Core {
            state: Mutex::new(State {
                slots: HashMap::new(),
                ready: VecDeque::new(),
                closed: false,
            }),
            notify: Notify::new(),
            options: options.normalized(),
            callback: Arc::new(callback),
        });
        let task = handle.spawn(run(Arc::clone(&core)));
        Self { core, task }
    }

    /// The options in effect (after `max_wait` was raised to at least `wait`).
    pub fn options(&self) -> DebounceOptions {
        self.core.options
    }

    /// Records a call for `key` with `value`; see the [module documentation](self).
    pub fn call(&self, key: K, value: T) {
        let now = Instant::now();
        let options = &self.core.options;
        let mut state = self.core.state.lock();
        let State { slots, ready, .. } = &mut *state;
        let slot = slots.entry(key.clone()).or_insert_with(Slot::idle);
        if let Some(value) = slot.call(value, now, options) {
            ready.push_back((key, value));
        }
        drop(state);
        self.core.notify.notify_one();
    }

    /// Drops the pending value for `key` without firing it and ends its burst (the next call
    /// is a leading edge again).
    pub fn cancel(&self, key: &K) {
        let removed = self.core.state.lock().slots.remove(key);
        if removed.is_some() {
            self.core.notify.notify_one();
        }
    }

    /// Fires the pending value for `key` now and ends its burst; does nothing if no value is
    /// pending. The callback runs on the debouncer's task right away.
    pub fn flush(&self, key: &K) {
        let mut state = self.core.state.lock();
        let value = match state.slots.get_mut(key) {
            Some(slot) => slot.pending.take(),
            None => None,
        };
        if let Some(value) = value {
            state.slots.remove(key);
            state.ready.push_back((key.clone(), value));
            drop(state);
            self.core.notify.notify_one();
        }
    }

    /// Whether a value for `key` is waiting to fire.
    pub fn pending(&self, key: &K) -> bool {
        self.core
            .state
            .lock()
            .slots
            .get(key)
            .is_some_and(|slot| slot.pending.is_some())
    }

    /// Cancels every key.
    pub fn cancel_all(&self) {
        self.core.state.lock().slots.clear();
        self.core.notify.notify_one();
    }

    /// Flushes every key that has a pending value.
    pub fn flush_all(&self) {
        let mut state = self.core.state.lock();
        let State { slots, ready, .. } = &mut *state;
        for (key, mut slot) in slots.drain() {
            if let Some(value) = slot.pending.take() {
                ready.push_back((key, value));
            }
        }
        drop(state);
        self.core.notify.notify_one();
    }
}

impl<K, T> Drop for KeyedDebouncer<K, T> {
    fn drop(&mut self) {
        {
            let mut state = self.core.state.lock();
            state.closed = true;
            state.slots.clear();
            state.ready.clear();
        }
        self.task.abort();
    }
}

/// The debouncer task: fire what is due, then sleep until the next deadline or a change.
async fn run<K, T>(core: Arc<Core<K, T>>)
where
    K: Eq + Hash + Clone + Send + 'static,
    T: Send + 'static,
{
    loop {
        let (due, deadline) = {
            let mut state = core.state.lock();
            if state.closed {
                return;
            }
            let now = Instant::now();
            let State { slots, ready, .. } = &mut *state;
            for (key, slot) in slots.iter_mut() {
                if let Some(value) = slot.expire(now, &core.options) {
                    ready.push_back((key.clone(), value));
                }
            }
            slots.retain(|_, slot| !slot.is_idle());
            let deadline = slots
                .values()
                .filter_map(|slot| slot.deadline(&core.options))
                .min();
            (std::mem::take(ready), deadline)
        };
        for (key, value) in due {
            let callback = &core.callback;
            if catch_unwind(AssertUnwindSafe(|| callback(key, value))).is_err() {
                tracing::error!("debouncer callback panicked");
            }
        }
        let changed = core.notify.notified();
        match deadline {
            Some(deadline) => {
                tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep_until(deadline) => {}
                }
            }
            None => changed.await,
        }
    }
}

/// A single debouncer; see the [module documentation](self).
pub struct Debouncer<T> {
    inner: KeyedDebouncer<(), T>,
}

impl<T> fmt::Debug for Debouncer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Debouncer")
            .field("options", &self.inner.core.options)
            .finish_non_exhaustive()
    }
}

impl<T> Debouncer<T>
where
    T: Send + 'static,
{
    /// A debouncer running on the current tokio runtime.
    pub fn new<F>(options: DebounceOptions, callback: F) -> Result<Self, DebounceError>
    where
        F: Fn(T) + Send + Sync + 'static,
    {
        let handle = Handle::try_current().map_err(|_| DebounceError::NoRuntime)?;
        Ok(Self::new_in(&handle, options, callback))
    }

    /// A debouncer running on the given runtime (usable from threads outside any runtime).
    pub fn new_in<F>(handle: &Handle, options: DebounceOptions, callback: F) -> Self
    where
        F: Fn(T) + Send + Sync + 'static,
    {
        Self {
            inner: KeyedDebouncer::new_in(handle, options, move |(), value| callback(value)),
        }
    }

    /// The options in effect (after `max_wait` was raised to at least `wait`).
    pub fn options(&self) -> DebounceOptions {
        self.inner.options()
    }

    /// Records a call with `value`; see the [module documentation](self).
    pub fn call(&self, value: T) {
        self.inner.call((), value);
    }

    /// Drops the pending value without firing it and ends the burst.
    pub fn cancel(&self) {
        self.inner.cancel(&());
    }

    /// Fires the pending value now and ends the burst; does nothing if no value is pending.
    pub fn flush(&self) {
        self.inner.flush(&());
    }

    /// Whether a value is waiting to fire.
    pub fn pending(&self) -> bool {
        self.inner.pending(&())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Log<T> = Arc<Mutex<Vec<(T, Duration)>>>;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A callback that records each value with the time it fired, relative to now.
    fn recorder<T: Send + 'static>() -> (Log<T>, impl Fn(T) + Send + Sync + 'static) {
        let log: Log<T> = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let sink = Arc::clone(&log);
        (log, move |value| sink.lock().push((value, start.elapsed())))
    }

    fn debouncer<T: Send + 'static>(options: DebounceOptions) -> (Debouncer<T>, Log<T>) {
        let (log, callback) = recorder();
        let debouncer = Debouncer::new(options, callback).expect("inside a runtime");
        (debouncer, log)
    }

    fn fired<T: Clone>(log: &Log<T>) -> Vec<(T, Duration)> {
        log.lock().clone()
    }

    #[test]
    fn new_outside_a_runtime_is_an_error() {
        let result = Debouncer::<u32>::new(DebounceOptions::new(ms(10)), |_| {});
        assert_eq!(result.err(), Some(DebounceError::NoRuntime));
    }

    #[test]
    fn debouncers_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Debouncer<String>>();
        assert_send_sync::<KeyedDebouncer<String, String>>();
    }

    #[tokio::test(start_paused = true)]
    async fn trailing_only_fires_the_last_value_wait_after_the_last_call() {
        let (d, log) = debouncer(DebounceOptions::new(ms(100)));
        d.call(1);
        tokio::time::sleep(ms(50)).await;
        d.call(2);
        tokio::time::sleep(ms(50)).await;
        d.call(3);
        assert!(d.pending());
        tokio::time::sleep(ms(99)).await;
        assert_eq!(fired(&log), vec![], "nothing before wait has passed");
        tokio::time::sleep(ms(2)).await;
        assert_eq!(fired(&log), vec![(3, ms(200))]);
        assert!(!d.pending());
        tokio::time::sleep(ms(1_000)).await;
        assert_eq!(fired(&log).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn leading_only_fires_the_first_call_of_each_burst() {
        let options = DebounceOptions::new(ms(100))
            .with_leading(true)
            .with_trailing(false);
        let (d, log) = debouncer(options);
        d.call(1);
        tokio::time::sleep(ms(1)).await;
        assert_eq!(fired(&log), vec![(1, ms(0))], "fires at once");
        tokio::time::sleep(ms(49)).await;
        d.call(2);
        tokio::time::sleep(ms(50)).await;
        d.call(3); // at 100: the burst goes on until 200
        assert!(!d.pending(), "leading-only keeps no trailing value");
        tokio::time::sleep(ms(200)).await;
        assert_eq!(fired(&log), vec![(1, ms(0))]);
        d.call(4); // at 300: a new burst
        tokio::time::sleep(ms(1)).await;
        assert_eq!(fired(&log), vec![(1, ms(0)), (4, ms(300))]);
    }

    #[tokio::test(start_paused = true)]
    async fn leading_and_trailing_single_call_fires_once() {
        let options = DebounceOptions::new(ms(100)).with_leading(true);
        let (d, log) = debouncer(options);
        d.call(1);
        tokio::time::sleep(ms(1_000)).await;
        assert_eq!(fired(&log), vec![(1, ms(0))]);
    }

    #[tokio::test(start_paused = true)]
    async fn leading_and_trailing_burst_fires_first_and_last() {
        let options = DebounceOptions::new(ms(100)).with_leading(true);
        let (d, log) = debouncer(options);
        d.call(1);
        tokio::time::sleep(ms(30)).await;
        d.call(2);
        tokio::time::sleep(ms(30)).await;
        d.call(3);
        tokio::time::sleep(ms(1_000)).await;
        assert_eq!(fired(&log), vec![(1, ms(0)), (3, ms(160))]);
    }

    #[tokio::test(start_paused = true)]
    async fn max_wait_fires_during_a_continuous_burst() {
        let options = DebounceOptions::new(ms(100)).with_max_wait(ms(250));
        let (d, log) = debouncer(options);
        // A call every 40 ms from 0 to 600 ms: the burst never goes quiet for 100 ms.
        for value in 0..=15 {
            d.call(value);
            if value < 15 {
                tokio::time::sleep(ms(40)).await;
            }
        }
        tokio::time::sleep(ms(1_000)).await;
        assert_eq!(
            fired(&log),
            vec![
                (6, ms(250)),  // 250 ms after the call at 0; latest call was at 240
                (13, ms(530)), // 250 ms after the first unfired call, at 280
                (15, ms(700)), // trailing edge, 100 ms after the last call at 600
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn max_wait_below_wait_is_raised_to_wait() {
        let options = DebounceOptions::new(ms(100)).with_max_wait(ms(10));
        let (d, log) = debouncer::<u32>(options);
        assert_eq!(d.options().max_wait, Some(ms(100)));
        d.call(1);
        tokio::time::sleep(ms(50)).await;
        d.call(2);
        tokio::time::sleep(ms(500)).await;
        assert_eq!(fired(&log), vec![(2, ms(100))]);
    }

    #[tokio::test(start_paused = true)]
    async fn huge_durations_mean_never_and_do_not_panic() {
        let options = DebounceOptions::new(Duration::MAX).with_max_wait(Duration::MAX);
        let (d, log) = debouncer(options);
        d.call(1);
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        assert_eq!(fired(&log), vec![]);
        assert!(d.pending());
        d.flush();
        tokio::time::sleep(ms(1)).await;
        assert_eq!(fired(&log), vec![(1, Duration::from_secs(3_600))]);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_drops_the_pending_value() {
        let (d, log) = debouncer(DebounceOptions::new(ms(100)));
        d.call(1);
        tokio::time::sleep(ms(50)).await;
        assert!(d.pending());
        d.cancel();
        assert!(!d.pending());
        tokio::time::sleep(ms(500)).await;
        assert_eq!(fired(&log), vec![]);
        d.call(2); // at 550
        tokio::time::sleep(ms(500)).await;
        assert_eq!(fired(&log), vec![(2, ms(650))]);
    }

    #[tokio::test(start_paused = true)]
    async fn flush_fires_the_pending_value_now() {
        let (d, log) = debouncer(DebounceOptions::new(ms(100)));
        d.flush(); // nothing pending: no-op
        d.call(1);
        tokio::time::sleep(ms(10)).await;
        d.call(2);
        tokio::time::sleep(ms(10)).await;
        d.flush();
        assert!(!d.pending());
        tokio::time::sleep(ms(1)).await;
        assert_eq!(fired(&log), vec![(2, ms(20))]);
        tokio::time::sleep(ms(500)).await;
        d.flush();
        tokio::time::sleep(ms(1)).await;
        assert_eq!(
            fired(&log),
            vec![(2, ms(20))],
            "fired once, second flush is a no-op"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_debouncer_stops_its_task() {
        let (log, record) = recorder();
        let token = Arc::new(());
        let held = Arc::clone(&token);
        let d = Debouncer::new(DebounceOptions::new(ms(100)), move |v| {
            let _ = &held;
            record(v);
        })
        .expect("runtime");
        d.call(1);
        tokio::time::sleep(ms(50)).await;
        drop(d);
        tokio::time::sleep(ms(500)).await;
        assert_eq!(fired(&log), vec![]);
        assert_eq!(
            Arc::strong_count(&token),
            1,
            "the task and its callback are gone"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_callback_does_not_stop_the_debouncer() {
        let (log, record) = recorder();
        let d = Debouncer::new(DebounceOptions::new(ms(10)), move |v: u32| {
            assert!(v != 1, "boom");
            record(v);
        })
        .expect("runtime");
        d.call(1);
        tokio::time::sleep(ms(50)).await;
        d.call(2);
        tokio::time::sleep(ms(50)).await;
        assert_eq!(fired(&log), vec![(2, ms(60))]);
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_debouncer_keeps_keys_independent() {
        let log: Log<(&'static str, u32)> = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let sink = Arc::clone(&log);
        let d = KeyedDebouncer::new(DebounceOptions::new(ms(100)), move |k, v| {
            sink.lock().push(((k, v), start.elapsed()));
        })
        .expect("runtime");
        d.call("room-a", 1);
        tokio::time::sleep(ms(50)).await;
        d.call("room-b", 1);
        d.call("room-c", 1);
        tokio::time::sleep(ms(30)).await;
        d.call("room-a", 2); // extends only room-a's burst
        assert!(d.pending(&"room-a") && d.pending(&"room-b") && d.pending(&"room-c"));
        d.cancel(&"room-c");
        assert!(!d.pending(&"room-c"));
        assert!(d.pending(&"room-b"));
        tokio::time::sleep(ms(500)).await;
        assert_eq!(
            fired(&log),
            vec![(("room-b", 1), ms(150)), (("room-a", 2), ms(180))]
        );
        d.call("room-d", 7);
        d.flush(&"room-d");
        assert!(!d.pending(&"room-d"));
        tokio::time::sleep(ms(1)).await;
        assert_eq!(fired(&log).last(), Some(&(("room-d", 7), ms(580))));
    }
}
