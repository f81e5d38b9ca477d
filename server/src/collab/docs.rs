//! The node-local cache of loaded documents (see the module documentation of `collab`).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use yrs::Doc;

/// Tuning of the collaborative documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocsConfig {
    /// The cache holds documents whose encoded sizes add up to at most this many bytes.
    pub cache_bytes: u64,
    /// A document's log is compacted into its snapshot once it holds this many updates ...
    pub compact_updates: u64,
    /// ... or this many bytes of them, whichever comes first.
    pub compact_bytes: u64,
}

impl Default for DocsConfig {
    fn default() -> Self {
        DocsConfig {
            cache_bytes: 128 << 20,
            compact_updates: 1_000,
            compact_bytes: 1 << 20,
        }
    }
}

/// A loaded document and where it stands.
pub struct Entry {
    pub doc: Doc,
    /// The `seq` of the last update applied to it.
    pub seq: u64,
    /// Its size (its whole state as one v1 update): exact when loaded or measured, an upper
    /// bound after updates.
    pub size: u64,
    /// Changed by a write whose transaction is not committed yet.
    pub unconfirmed: bool,
    /// Which write changed it last (see [`Ticket`]).
    gen: u64,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("seq", &self.seq)
            .field("size", &self.size)
            .field("unconfirmed", &self.unconfirmed)
            .finish()
    }
}

impl Entry {
    pub fn new(doc: Doc, seq: u64, size: u64) -> Entry {
        Entry {
            doc,
            seq,
            size,
            unconfirmed: false,
            gen: 0,
        }
    }
}

type Key = (Box<str>, Box<str>);

struct Slot {
    entry: Arc<Mutex<Entry>>,
    /// When it was last used (the cache's own clock).
    used: u64,
    /// What it counts against the budget.
    cost: u64,
}

#[derive(Default)]
struct State {
    map: HashMap<Key, Slot>,
    tick: u64,
    bytes: u64,
}

struct Inner {
    config: DocsConfig,
    state: Mutex<State>,
    gen: AtomicU64,
}

/// The cache, shared by the service (which hands it to each `collab.update` write) and the
/// sockets (which sync from it).
#[derive(Clone)]
pub struct Docs(Arc<Inner>);

impl PartialEq for Docs {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Docs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats();
        f.debug_struct("Docs")
            .field("docs", &s.docs)
            .field("bytes", &s.bytes)
            .finish()
    }
}

/// What the cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DocsStats {
    pub docs: u64,
    pub bytes: u64,
}

fn key(room: &str, doc: &str) -> Key {
    (room.into(), doc.into())
}

impl Docs {
    pub fn new(config: DocsConfig) -> Docs {
        Docs(Arc::new(Inner {
            config,
            state: Mutex::new(State::default()),
            gen: AtomicU64::new(1),
        }))
    }

    pub fn config(&self) -> &DocsConfig {
        &self.0.config
    }

    pub fn stats(&self) -> DocsStats {
        let st = self.0.state.lock();
        DocsStats {
            docs: st.map.len() as u64,
            bytes: st.bytes,
        }
    }

    /// The cached document, if any (marked used).
    pub fn get(&self, room: &str, doc: &str) -> Option<Arc<Mutex<Entry>>> {
        let mut st = self.0.state.lock();
        st.tick += 1;
        let tick = st.tick;
        let slot = st.map.get_mut(&key(room, doc))?;
        slot.used = tick;
        Some(Arc::clone(&slot.entry))
    }

    /// Caches `entry` (replacing any other copy), evicting the least recently used documents
    /// past the budget. A document larger than the whole budget is handed back uncached.
    pub fn put(&self, room: &str, doc: &str, entry: Entry) -> Arc<Mutex<Entry>> {
        let cost = entry.size;
        let entry = Arc::new(Mutex::new(entry));
        let mut st = self.0.state.lock();
        if let Some(old) = st.map.remove(&key(room, doc)) {
            st.bytes -= old.cost;
        }
        if cost > self.0.config.cache_bytes {
            return entry;
        }
        st.tick += 1;
        let used = st.tick;
        st.bytes += cost;
        st.map.insert(
            key(room, doc),
            Slot {
                entry: Arc::clone(&entry),
                used,
                cost,
            },
        );
        self.evict(&mut st);
        entry
    }

    /// Records a cached document's new size.
    pub fn resize(&self, room: &str, doc: &str, size: u64) {
        let mut st = self.0.state.lock();
        let Some(slot) = st.map.get_mut(&key(room, doc)) else {
            return;
        };
        let old = std::mem::replace(&mut slot.cost, size);
        st.bytes = st.bytes - old + size;
        self.evict(&mut st);
    }

    fn evict(&self, st: &mut State) {
        while st.bytes > self.0.config.cache_bytes {
            let Some(oldest) = st
                .map
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            if let Some(slot) = st.map.remove(&oldest) {
                st.bytes -= slot.cost;
            }
        }
    }

    /// Forgets the cached document.
    pub fn remove(&self, room: &str, doc: &str) {
        let mut st = self.0.state.lock();
        if let Some(slot) = st.map.remove(&key(room, doc)) {
            st.bytes -= slot.cost;
        }
    }

    /// Forgets every cached document of a room (deleted).
    pub fn remove_room(&self, room: &str) {
        let mut st = self.0.state.lock();
        let mut freed = 0;
        st.map.retain(|(r, _), slot| {
            let keep = &**r != room;
            if !keep {
                freed += slot.cost;
            }
            keep
        });
        st.bytes -= freed;
    }

    /// Marks `entry` as changed by a write not committed yet, and returns the write's ticket:
    /// confirm it once the write is committed; dropped unconfirmed, it takes the entry out of
    /// the cache (unless a later write changed it since).
    pub fn changed(&self, room: &str, doc: &str, entry: &mut Entry) -> Ticket {
        let gen = self.0.gen.fetch_add(1, Ordering::Relaxed);
        entry.gen = gen;
        entry.unconfirmed = true;
        Ticket {
            docs: self.clone(),
            room: room.into(),
            doc: doc.into(),
            gen,
            confirmed: AtomicBool::new(false),
        }
    }
}

/// A write's claim on the cached document it changed (see [`Docs::changed`]).
pub struct Ticket {
    docs: Docs,
    room: Box<str>,
    doc: Box<str>,
    gen: u64,
    confirmed: AtomicBool,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("room", &self.room)
            .field("doc", &self.doc)
            .field("confirmed", &self.confirmed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Ticket {
    /// The write is committed: its change of the cached document stands.
    pub fn confirm(&self) {
        self.confirmed.store(true, Ordering::Release);
        if let Some(entry) = self.docs.get(&self.room, &self.doc) {
            let mut e = entry.lock();
            if e.gen == self.gen {
                e.unconfirmed = false;
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.confirmed.load(Ordering::Acquire) {
            return;
        }
        // Lock order: an entry is never locked under the cache's lock (a writer holding an
        // entry takes the cache's lock to resize it).
        let k = key(&self.room, &self.doc);
        let Some(entry) = self
            .docs
            .0
            .state
            .lock()
            .map
            .get(&k)
            .map(|s| Arc::clone(&s.entry))
        else {
            return;
        };
        if entry.lock().gen != self.gen {
            return;
        }
        let mut st = self.docs.0.state.lock();
        if st
            .map
            .get(&k)
            .is_some_and(|s| Arc::ptr_eq(&s.entry, &entry))
        {
            if let Some(slot) = st.map.remove(&k) {
                st.bytes -= slot.cost;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(bytes: u64) -> Docs {
        Docs::new(DocsConfig {
            cache_bytes: bytes,
            ..DocsConfig::default()
        })
    }

    #[test]
    fn the_least_recently_used_document_goes_first() {
        let d = docs(100);
        d.put("r", "a", Entry::new(Doc::new(), 0, 40));
        d.put("r", "b", Entry::new(Doc::new(), 0, 40));
        assert!(d.get("r", "a").is_some());
        d.put("r", "c", Entry::new(Doc::new(), 0, 40));
        assert!(d.get("r", "b").is_none(), "b was least recently used");
        assert!(d.get("r", "a").is_some() && d.get("r", "c").is_some());
        assert_eq!(d.stats(), DocsStats { docs: 2, bytes: 80 });
    }

    #[test]
    fn an_unconfirmed_change_goes_with_its_ticket() {
        let d = docs(1000);
        let e = d.put("r", "a", Entry::new(Doc::new(), 0, 10));
        let t = d.changed("r", "a", &mut e.lock());
        drop(t);
        assert!(d.get("r", "a").is_none());
        let e = d.put("r", "a", Entry::new(Doc::new(), 0, 10));
        let t = d.changed("r", "a", &mut e.lock());
        t.confirm();
        drop(t);
        let kept = d.get("r", "a").expect("kept");
        assert!(!kept.lock().unconfirmed);
    }
}
