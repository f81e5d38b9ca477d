//! Presence aggregated over a user's devices.
//!
//! A user is `online` while any of their sockets is connected and not away, `away` when every
//! connected socket said so, and `offline` when none is connected (not when one of several
//! disconnects). Last-seen is written to the store when the last socket closes, so it survives a
//! restart.

use std::collections::HashMap;

use parking_lot::Mutex;
use roam_proto::{Presence, PresenceStatus};

use crate::conn::ConnId;

fn aggregate(devices: &HashMap<ConnId, bool>) -> PresenceStatus {
    if devices.is_empty() {
        PresenceStatus::Offline
    } else if devices.values().all(|away| *away) {
        PresenceStatus::Away
    } else {
        PresenceStatus::Online
    }
}

/// A change of a user's presence on this instance: the status before it and the presence
/// after it (every connect, disconnect and away change makes one, even when only the device
/// count moved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub before: PresenceStatus,
    pub now: Presence,
}

impl Transition {
    /// The status changed, so the user's rooms should hear of it (on a single instance).
    pub fn status_changed(&self) -> bool {
        self.before != self.now.status
    }
}

/// Live presence of this instance's users.
#[derive(Debug, Default)]
pub struct PresenceTracker {
    /// user → (socket → away?)
    users: Mutex<HashMap<String, HashMap<ConnId, bool>>>,
}

fn transition(
    user: &str,
    before: PresenceStatus,
    devices: &HashMap<ConnId, bool>,
    now: i64,
) -> Transition {
    Transition {
        before,
        now: Presence {
            user: user.to_owned(),
            status: aggregate(devices),
            last_seen: Some(now),
            devices: devices.len() as u32,
        },
    }
}

impl PresenceTracker {
    /// Records a socket.
    pub fn connect(&self, user: &str, conn: ConnId, now: i64) -> Transition {
        let mut u = self.users.lock();
        let devices = u.entry(user.to_owned()).or_default();
        let before = aggregate(devices);
        devices.insert(conn, false);
        transition(user, before, devices, now)
    }

    /// Forgets a socket (`None` if it was not recorded).
    pub fn disconnect(&self, user: &str, conn: ConnId, now: i64) -> Option<Transition> {
        let mut u = self.users.lock();
        let devices = u.get_mut(user)?;
        let before = aggregate(devices);
        devices.remove(&conn)?;
        let t = transition(user, before, devices, now);
        if devices.is_empty() {
            u.remove(user);
        }
        Some(t)
    }

    /// A socket says it is away (or back) (`None` if it is not recorded).
    pub fn set_away(&self, user: &str, conn: ConnId, away: bool, now: i64) -> Option<Transition> {
        let mut u = self.users.lock();
        let devices = u.get_mut(user)?;
        let before = aggregate(devices);
        let slot = devices.get_mut(&conn)?;
        *slot = away;
        Some(transition(user, before, devices, now))
    }

    /// Whether one socket of the user said it is away (`None` if it is not recorded).
    pub fn device_away(&self, user: &str, conn: ConnId) -> Option<bool> {
        self.users.lock().get(user)?.get(&conn).copied()
    }

    /// The live status of a user and their device count on this instance.
    pub fn live(&self, user: &str) -> (PresenceStatus, u32) {
        let u = self.users.lock();
        match u.get(user) {
            Some(d) => (aggregate(d), d.len() as u32),
            None => (PresenceStatus::Offline, 0),
        }
    }

    /// Gives back the map's room for users who have left.
    pub fn shrink(&self) {
        self.users.lock().shrink_to_fit();
    }

    /// Every user connected here, with their status and device count on this instance.
    pub fn snapshot(&self) -> Vec<(String, PresenceStatus, u32)> {
        self.users
            .lock()
            .iter()
            .map(|(u, d)| (u.clone(), aggregate(d), d.len() as u32))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(t: Option<Transition>) -> Option<PresenceStatus> {
        t.filter(Transition::status_changed).map(|t| t.now.status)
    }

    #[test]
    fn online_while_any_device_connected() {
        let p = PresenceTracker::default();
        assert_eq!(
            status(Some(p.connect("a", 1, 0))),
            Some(PresenceStatus::Online)
        );
        let second = p.connect("a", 2, 0);
        assert!(
            !second.status_changed(),
            "a second device changes only the count"
        );
        assert_eq!(second.now.devices, 2);
        let one_left = p.disconnect("a", 1, 0);
        assert_eq!(
            status(one_left.clone()),
            None,
            "one device left: still online"
        );
        assert_eq!(one_left.map(|t| t.now.devices), Some(1));
        assert_eq!(p.live("a"), (PresenceStatus::Online, 1));
        assert_eq!(
            status(p.set_away("a", 2, true, 0)),
            Some(PresenceStatus::Away)
        );
        assert_eq!(
            status(p.disconnect("a", 2, 0)),
            Some(PresenceStatus::Offline)
        );
        assert_eq!(
            p.disconnect("a", 2, 0),
            None,
            "an unknown socket changes nothing"
        );
        assert!(p.snapshot().is_empty());
    }

    #[test]
    fn away_only_when_every_device_is_away() {
        let p = PresenceTracker::default();
        p.connect("a", 1, 0);
        p.connect("a", 2, 0);
        assert_eq!(status(p.set_away("a", 1, true, 0)), None);
        assert_eq!(p.live("a").0, PresenceStatus::Online);
        assert_eq!(
            status(p.set_away("a", 2, true, 0)),
            Some(PresenceStatus::Away)
        );
        assert_eq!(p.live("a").0, PresenceStatus::Away);
        assert_eq!(
            p.set_away("a", 9, true, 0),
            None,
            "an unknown socket changes nothing"
        );
        assert_eq!(
            p.snapshot(),
            vec![("a".to_owned(), PresenceStatus::Away, 2)]
        );
    }
}
