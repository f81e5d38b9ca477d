//! The in-process cache of the reads made on every frame: room metadata and membership.
//!
//! Bounded by entry count with a two-generation scheme (lookups promote from the old
//! generation; when the new one is full the old one is dropped), which approximates LRU at O(1).
//! Every change invalidates what it touched before its result is answered, and a global epoch
//! stops a load that raced with an invalidation from putting stale data back: a revoked
//! permission is never served from cache.
//!
//! Invalidations from other instances travel on the bus, which may lose some (a dropped Redis
//! link). So an entry is also trusted only for a bounded time (`--cache-ttl-ms`, 5 s by
//! default), and a bus that reconnects empties the whole cache ([`ReadCache::invalidate_all`]).
//! Writes do not rely on either: the store checks the writer's membership again inside the
//! write's transaction (`rules::Guard`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use roam_proto::{Member, Room};

#[derive(Debug)]
struct Generations<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> Generations<K, V> {
    fn new(cap: usize) -> Self {
        Generations {
            young: HashMap::new(),
            old: HashMap::new(),
            cap: cap.max(2),
        }
    }

    fn get(&mut self, k: &K) -> Option<V> {
        if let Some(v) = self.young.get(k) {
            return Some(v.clone());
        }
        let v = self.old.remove(k)?;
        self.insert(k.clone(), v.clone());
        Some(v)
    }

    fn insert(&mut self, k: K, v: V) {
        if self.young.len() >= self.cap / 2 {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(k, v);
    }

    fn remove_where(&mut self, f: impl Fn(&K) -> bool) {
        self.young.retain(|k, _| !f(k));
        self.old.retain(|k, _| !f(k));
    }

    /// Keeps the entries `keep` accepts; gives back the room of the others. Returns how many
    /// were dropped.
    fn retain(&mut self, keep: impl Fn(&K) -> bool) -> usize {
        let before = self.len();
        self.young.retain(|k, _| keep(k));
        self.old.retain(|k, _| keep(k));
        self.young.shrink_to_fit();
        self.old.shrink_to_fit();
        before - self.len()
    }

    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

/// Cache statistics for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheStats {
    pub entries: usize,
    pub hits: u64,
    pub misses: u64,
}

impl CacheStats {
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

/// A cached value and when it was read from the store.
type Stamped<V> = (Instant, V);
/// Memberships by (room, user).
type MemberMap = Generations<(String, String), Stamped<Option<Member>>>;

/// Room and membership cache. `None` values (known absent) are cached too.
#[derive(Debug)]
pub struct ReadCache {
    rooms: Mutex<Generations<String, Stamped<Option<Room>>>>,
    members: Mutex<MemberMap>,
    /// How long an entry is served without reading the store again.
    ttl: Duration,
    epoch: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ReadCache {
    /// A cache of about `entries` entries, each served for at most `ttl`.
    pub fn new(entries: usize, ttl: Duration) -> Self {
        ReadCache {
            rooms: Mutex::new(Generations::new(entries / 4)),
            members: Mutex::new(Generations::new(entries - entries / 4)),
            ttl,
            epoch: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Read before loading from the store; pass to `put_*`.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn room(&self, name: &str) -> Option<Option<Room>> {
        let v = self.rooms.lock().get(&name.to_owned());
        self.fresh(v)
    }

    pub fn member(&self, room: &str, user: &str) -> Option<Option<Member>> {
        let v = self.members.lock().get(&(room.to_owned(), user.to_owned()));
        self.fresh(v)
    }

    /// The value if it was read within the TTL (an older one counts as a miss and is replaced
    /// by the caller's next `put_*`).
    fn fresh<V>(&self, v: Option<Stamped<V>>) -> Option<V> {
        let v = v.filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, v)| v);
        self.count(v.is_some());
        v
    }

    fn count(&self, hit: bool) {
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Stores a loaded room unless an invalidation happened since `epoch`.
    pub fn put_room(&self, epoch: u64, name: &str, room: Option<Room>) {
        let mut g = self.rooms.lock();
        if self.epoch.load(Ordering::Acquire) == epoch {
            g.insert(name.to_owned(), (Instant::now(), room));
        }
    }

    /// Stores a loaded member unless an invalidation happened since `epoch`.
    pub fn put_member(&self, epoch: u64, room: &str, user: &str, member: Option<Member>) {
        let mut g = self.members.lock();
        if self.epoch.load(Ordering::Acquire) == epoch {
            g.insert((room.to_owned(), user.to_owned()), (Instant::now(), member));
        }
    }

    /// Drops everything cached about a room (its metadata and every membership).
    pub fn invalidate_room(&self, room: &str) {
        // Bump first, under both locks, so a concurrent loader cannot slip stale data in.
        let mut r = self.rooms.lock();
        let mut m = self.members.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        r.remove_where(|k| k == room);
        m.remove_where(|(r, _)| r == room);
    }

    /// Drops everything: the bus lost messages (its link dropped), so any entry may have missed
    /// its invalidation.
    pub fn invalidate_all(&self) {
        let mut r = self.rooms.lock();
        let mut m = self.members.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        r.retain(|_| false);
        m.retain(|_| false);
    }

    /// Drops the membership entries of users `keep` rejects (users with no socket here, after
    /// many closed) and gives back the room they took. Dropping an entry never serves stale
    /// data: the next lookup reads the store. Returns how many were dropped.
    pub fn retain_members_of(&self, keep: impl Fn(&str) -> bool) -> usize {
        self.members.lock().retain(|(_, user)| keep(user))
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.rooms.lock().len() + self.members.lock().len(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_promotes() {
        let mut g = Generations::new(4);
        for i in 0..10 {
            g.insert(i, i);
        }
        assert!(g.len() <= 4);
        assert_eq!(g.get(&9), Some(9));
        assert_eq!(g.get(&0), None);
    }

    #[test]
    fn members_of_departed_users_are_dropped_and_rooms_kept() {
        let c = ReadCache::new(100, Duration::from_secs(60));
        let e = c.epoch();
        c.put_room(e, "r", None);
        c.put_member(e, "r", "stays", None);
        c.put_member(e, "r", "left", None);
        c.put_member(e, "q", "left", None);
        assert_eq!(c.retain_members_of(|u| u == "stays"), 2);
        assert_eq!(c.member("r", "stays"), Some(None));
        assert_eq!(c.member("r", "left"), None);
        assert_eq!(c.member("q", "left"), None);
        assert_eq!(c.room("r"), Some(None), "room entries are not per user");
    }

    #[test]
    fn stale_load_after_invalidation_is_not_cached() {
        let c = ReadCache::new(100, Duration::from_secs(60));
        let e = c.epoch();
        c.invalidate_room("r");
        c.put_room(e, "r", None);
        assert_eq!(
            c.room("r"),
            None,
            "a load that raced an invalidation must be dropped"
        );
        let e = c.epoch();
        c.put_room(e, "r", None);
        assert_eq!(c.room("r"), Some(None));
        let s = c.stats();
        assert_eq!((s.hits, s.misses), (1, 1));
    }

    #[test]
    fn entries_expire() {
        let c = ReadCache::new(100, Duration::ZERO);
        let e = c.epoch();
        c.put_room(e, "r", None);
        c.put_member(e, "r", "u", None);
        assert_eq!(c.room("r"), None, "an expired room is a miss");
        assert_eq!(c.member("r", "u"), None, "an expired member is a miss");
    }

    #[test]
    fn everything_goes_and_racing_loads_stay_out() {
        let c = ReadCache::new(100, Duration::from_secs(60));
        let e = c.epoch();
        c.put_room(e, "r", None);
        c.put_member(e, "q", "u", None);
        c.invalidate_all();
        assert_eq!(c.room("r"), None);
        assert_eq!(c.member("q", "u"), None);
        // A load that started before the invalidation does not put its stale value back.
        c.put_room(e, "r", None);
        assert_eq!(c.room("r"), None);
        assert_eq!(c.stats().entries, 0);
    }
}
