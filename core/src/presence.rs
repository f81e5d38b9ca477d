//! Presence: the local device's online/away state, and everyone else's as the server reports it.
//!
//! **Local.** The device is `online` while the user is active. The app reports activity with
//! `user_activity()` (any input) or says the app went to the background with `set_idle(true)`;
//! after [`PresenceConfig::idle_timeout`] without activity the device turns `away` by itself.
//! Every change is sent as a `presence.set` mutate frame on the socket only — presence is a fact
//! about *now*, so it is never queued in the outbox — and the current state is sent again after
//! every connect. `offline` is never sent: the server derives it from the device's socket being
//! gone.
//!
//! **Others.** `presence` frames are stored (so `Client::presence(user)` answers offline too) and
//! passed to the app's [`PresenceListener`](crate::PresenceListener). Aggregation over a user's
//! devices is the server's job (protocol §5): a user is online while any device is connected and
//! not away.

use std::sync::Arc;

use parking_lot::Mutex;
use roam_proto::PresenceStatus;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::PresenceConfig;

#[derive(Debug)]
struct State {
    last_activity: Instant,
    forced_idle: bool,
    status: PresenceStatus,
}

/// The local device's presence.
#[derive(Debug)]
pub(crate) struct PresenceTracker {
    config: PresenceConfig,
    state: Mutex<State>,
    /// Signalled when the deadline may have moved.
    pub changed: Notify,
}

impl PresenceTracker {
    pub(crate) fn new(config: PresenceConfig) -> Self {
        PresenceTracker {
            config,
            state: Mutex::new(State {
                last_activity: Instant::now(),
                forced_idle: false,
                status: PresenceStatus::Online,
            }),
            changed: Notify::new(),
        }
    }

    /// The device's current status (`online` or `away`).
    pub(crate) fn status(&self) -> PresenceStatus {
        self.state.lock().status
    }

    /// The user did something. Returns the new status if it changed.
    pub(crate) fn activity(&self, now: Instant) -> Option<PresenceStatus> {
        let mut s = self.state.lock();
        s.last_activity = now;
        s.forced_idle = false;
        let out = self.set(&mut s, PresenceStatus::Online);
        drop(s);
        self.changed.notify_one();
        out
    }

    /// The app went to the background (`true`) or came back (`false`).
    pub(crate) fn set_idle(&self, idle: bool, now: Instant) -> Option<PresenceStatus> {
        if !idle {
            return self.activity(now);
        }
        let mut s = self.state.lock();
        s.forced_idle = true;
        let out = self.set(&mut s, PresenceStatus::Away);
        drop(s);
        self.changed.notify_one();
        out
    }

    fn set(&self, s: &mut State, status: PresenceStatus) -> Option<PresenceStatus> {
        (s.status != status).then(|| {
            s.status = status;
            status
        })
    }

    /// Turns `away` when the idle time has passed. Returns the new status if it changed.
    pub(crate) fn tick(&self, now: Instant) -> Option<PresenceStatus> {
        let mut s = self.state.lock();
        if s.status == PresenceStatus::Online
            && now.duration_since(s.last_activity) >= self.config.idle_timeout
        {
            return self.set(&mut s, PresenceStatus::Away);
        }
        None
    }

    /// When the device turns away if nothing happens.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let s = self.state.lock();
        (s.status == PresenceStatus::Online && !s.forced_idle)
            .then(|| s.last_activity + self.config.idle_timeout)
    }
}

/// Drives the idle deadline; `send(status)` on every change made by the clock.
pub(crate) async fn run(
    tracker: Arc<PresenceTracker>,
    send: impl Fn(PresenceStatus) + Send + 'static,
) {
    {
        loop {
            let changed = tracker.changed.notified();
            match tracker.next_deadline() {
                Some(at) => {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => changed.await,
            }
            if let Some(status) = tracker.tick(Instant::now()) {
                send(status);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tracker() -> PresenceTracker {
        PresenceTracker::new(PresenceConfig {
            idle_timeout: Duration::from_secs(60),
        })
    }

    #[test]
    fn idle_turns_away_and_activity_comes_back() {
        let p = tracker();
        let t0 = Instant::now();
        assert_eq!(p.activity(t0), None);
        assert_eq!(p.tick(t0 + Duration::from_secs(59)), None);
        assert_eq!(
            p.tick(t0 + Duration::from_secs(60)),
            Some(PresenceStatus::Away)
        );
        assert_eq!(p.next_deadline(), None);
        assert_eq!(
            p.activity(t0 + Duration::from_secs(61)),
            Some(PresenceStatus::Online)
        );
        assert_eq!(
            p.set_idle(true, t0 + Duration::from_secs(62)),
            Some(PresenceStatus::Away)
        );
        assert_eq!(p.set_idle(true, t0 + Duration::from_secs(63)), None);
        assert_eq!(
            p.set_idle(false, t0 + Duration::from_secs(64)),
            Some(PresenceStatus::Online)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn driver_reports_away_after_the_idle_time() {
        let p = Arc::new(tracker());
        p.activity(Instant::now());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(run(p.clone(), move |s| {
            let _ = tx.send(s);
        }));
        let start = Instant::now();
        let s = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .expect("in time")
            .expect("status");
        assert_eq!(s, PresenceStatus::Away);
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        task.abort();
    }
}
