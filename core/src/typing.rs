//! Typing indicators: throttled going out, self-expiring coming in.
//!
//! **Outgoing.** The app calls `typing_started(room)` on every keystroke (cheap: no I/O unless a
//! frame is due). The first call sends `typing: true`; later calls send it again at most once
//! per [`TypingConfig::throttle`] (3 s), which also keeps the server's 5 s expiry from firing
//! while the user types. After [`TypingConfig::idle_stop`] (3 s) without a keystroke, or when the
//! app calls `typing_stopped(room)` or sends a message in the room, one `typing: false` goes out.
//! Typing frames travel on the socket only: when offline they are dropped, never queued.
//!
//! **Incoming.** `typing` frames from the server update a per-room set of users, each with an
//! expiry of [`TypingConfig::remote_expiry`] (5 s) that a new `typing: true` extends; a user whose
//! `typing: false` never arrives (their app died, the frame was lost) disappears by itself. The
//! app's [`TypingListener`](crate::TypingListener) gets the room's full list on every change.
//!
//! The state is a plain struct driven by explicit instants ([`Typing::tick`]); one small task
//! ([`run`]) sleeps until the next deadline and turns ticks into frames and events, so tests can
//! drive it with Tokio's paused clock.

use std::collections::{BTreeSet, HashMap};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::TypingConfig;

#[derive(Debug)]
struct Outgoing {
    last_sent: Instant,
    idle_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    outgoing: HashMap<String, Outgoing>,
    incoming: HashMap<String, HashMap<String, Instant>>,
}

/// What became due at a tick.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tick {
    /// Rooms to send `typing: false` to (the user went idle).
    pub stop: Vec<String>,
    /// Rooms whose typing list shrank because indicators expired, with the new list.
    pub expired: Vec<(String, Vec<String>)>,
}

/// Typing state of one client.
#[derive(Debug)]
pub(crate) struct Typing {
    config: TypingConfig,
    state: Mutex<State>,
    /// Signalled when a deadline may have moved.
    pub changed: Notify,
}

impl Typing {
    pub(crate) fn new(config: TypingConfig) -> Self {
        Typing {
            config,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    /// The user typed in `room`. True when a `typing: true` frame is due now.
    pub(crate) fn started(&self, room: &str, now: Instant) -> bool {
        let idle_at = now + self.config.idle_stop;
        let send = {
            let mut s = self.state.lock();
            match s.outgoing.get_mut(room) {
                Some(o) => {
                    o.idle_at = idle_at;
                    if now.duration_since(o.last_sent) >= self.config.throttle {
                        o.last_sent = now;
                        true
                    } else {
                        false
                    }
                }
                None => {
                    s.outgoing.insert(
                        room.to_owned(),
                        Outgoing {
                            last_sent: now,
                            idle_at,
                        },
                    );
                    true
                }
            }
        };
        self.changed.notify_one();
        send
    }

    /// The user stopped (or sent). True when a `typing: false` frame is due.
    pub(crate) fn stopped(&self, room: &str) -> bool {
        let was = self.state.lock().outgoing.remove(room).is_some();
        if was {
            self.changed.notify_one();
        }
        was
    }

    /// Someone else started or stopped typing. Returns the room's new list if it changed.
    pub(crate) fn remote(
        &self,
        room: &str,
        user: &str,
        typing: bool,
        now: Instant,
    ) -> Option<Vec<String>> {
        let mut s = self.state.lock();
        let users = s.incoming.entry(room.to_owned()).or_default();
        let changed = if typing {
            users
                .insert(user.to_owned(), now + self.config.remote_expiry)
                .is_none()
        } else {
            users.remove(user).is_some()
        };
        let list = sorted(users);
        if users.is_empty() {
            s.incoming.remove(room);
        }
        drop(s);
        self.changed.notify_one();
        changed.then_some(list)
    }

    /// Who is typing in `room` now.
    pub(crate) fn users(&self, room: &str) -> Vec<String> {
        self.state
            .lock()
            .incoming
            .get(room)
            .map(sorted)
            .unwrap_or_default()
    }

    /// Forgets every remote indicator (the connection dropped). Returns the rooms that had any.
    pub(crate) fn clear_remote(&self) -> Vec<String> {
        let mut s = self.state.lock();
        let rooms: Vec<String> = s.incoming.keys().cloned().collect();
        s.incoming.clear();
        rooms
    }

    /// Everything due at `now`.
    pub(crate) fn tick(&self, now: Instant) -> Tick {
        let mut s = self.state.lock();
        let mut tick = Tick::default();
        s.outgoing.retain(|room, o| {
            if o.idle_at <= now {
                tick.stop.push(room.clone());
                false
            } else {
                true
            }
        });
        for (room, users) in s.incoming.iter_mut() {
            let before = users.len();
            users.retain(|_, expires| *expires > now);
            if users.len() != before {
                tick.expired.push((room.clone(), sorted(users)));
            }
        }
        s.incoming.retain(|_, users| !users.is_empty());
        tick.stop.sort();
        tick.expired.sort();
        tick
    }

    /// The next moment something becomes due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let s = self.state.lock();
        let out = s.outgoing.values().map(|o| o.idle_at);
        let inc = s.incoming.values().flat_map(|u| u.values().copied());
        out.chain(inc).min()
    }
}

fn sorted(users: &HashMap<String, Instant>) -> Vec<String> {
    users
        .keys()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Drives the deadlines: `send(room, false)` when the user went idle, `emit(room, users)` when
/// indicators expired. Runs until the task is aborted.
pub(crate) async fn run(
    typing: std::sync::Arc<Typing>,
    send: impl Fn(String, bool) + Send + 'static,
    emit: impl Fn(String, Vec<String>) + Send + 'static,
) {
    {
        loop {
            let changed = typing.changed.notified();
            match typing.next_deadline() {
                Some(at) => {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => changed.await,
            }
            let tick = typing.tick(Instant::now());
            for room in tick.stop {
                send(room, false);
            }
            for (room, users) in tick.expired {
                emit(room, users);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn config() -> TypingConfig {
        TypingConfig::default()
    }

    #[test]
    fn outgoing_is_throttled_and_stops_when_idle() {
        let t = Typing::new(config());
        let t0 = Instant::now();
        assert!(t.started("r", t0));
        assert!(!t.started("r", t0 + Duration::from_secs(1)));
        assert!(!t.started("r", t0 + Duration::from_millis(2900)));
        assert!(t.started("r", t0 + Duration::from_secs(3)));
        // idle 3 s after the last keystroke (at 3 s) → due at 6 s
        assert_eq!(
            t.tick(t0 + Duration::from_millis(5999)).stop,
            Vec::<String>::new()
        );
        assert_eq!(
            t.tick(t0 + Duration::from_secs(6)).stop,
            vec!["r".to_string()]
        );
        assert!(!t.stopped("r"), "already stopped");
        assert!(t.started("r", t0 + Duration::from_secs(7)));
        assert!(t.stopped("r"));
    }

    #[test]
    fn incoming_expires_unless_refreshed() {
        let t = Typing::new(config());
        let t0 = Instant::now();
        assert_eq!(
            t.remote("r", "bob", true, t0),
            Some(vec!["bob".to_string()])
        );
        assert_eq!(
            t.remote("r", "amy", true, t0 + Duration::from_secs(2)),
            Some(vec!["amy".to_string(), "bob".to_string()])
        );
        assert_eq!(
            t.remote("r", "bob", true, t0 + Duration::from_secs(4)),
            None,
            "refresh only"
        );
        let tick = t.tick(t0 + Duration::from_secs(7));
        assert_eq!(
            tick.expired,
            vec![("r".to_string(), vec!["bob".to_string()])]
        );
        assert_eq!(t.users("r"), vec!["bob".to_string()]);
        assert_eq!(
            t.remote("r", "bob", false, t0 + Duration::from_secs(8)),
            Some(vec![])
        );
        assert!(t.users("r").is_empty());
        assert_eq!(t.next_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn driver_sends_stop_and_expires_with_paused_time() {
        let t = Arc::new(Typing::new(config()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let tx2 = tx.clone();
        let task = tokio::spawn(run(
            t.clone(),
            move |room, typing| {
                let _ = tx.send(format!("send {room} {typing}"));
            },
            move |room, users| {
                let _ = tx2.send(format!("emit {room} {}", users.join(",")));
            },
        ));
        let start = Instant::now();
        assert!(t.started("r", Instant::now()));
        t.remote("r", "bob", true, Instant::now());
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("in time")
            .expect("event");
        assert_eq!(first, "send r false");
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        let second = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("in time")
            .expect("event");
        assert_eq!(second, "emit r ");
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        task.abort();
    }
}
