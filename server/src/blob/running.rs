//! Running SHA-256s of in-place uploads, so that `finish` need not read their bytes back.
//!
//! An upload written in place ([`super::BlobStore::writes_in_place`]: the file store) gets
//! its bytes in order, request after request, each written at the end of what is stored. While
//! that happens on this node, the upload's hash can be carried along: each part is hashed as it
//! is written, and the state after it is kept here with the offset it covers. `finish` then
//! takes the digest from here when it covers every byte, instead of reading the whole file
//! again.
//!
//! **When the state is right.** The hash kept for an upload is the SHA-256 of bytes `0..offset`
//! as they were written into its data object, and it is only kept while nothing else wrote
//! there:
//!
//! - Every append registers itself ([`RunningHashes::begin`]) *before* it checks its offset
//!   against the stored chain, and lets go when it ends. An append that does not overlap another
//!   in time sees everything the one before it stored, so it writes only at the end of the
//!   chain, and its bytes follow the ones hashed. When two appends of one upload are under way at
//!   once (a client that sent again while its first request was still being stored), what they
//!   wrote may have landed in any order: the hash is dropped, and none is kept until an append
//!   starts again at offset 0.
//! - A part counts only once it is stored (its write is durable and its span marker put): a
//!   write that failed half way leaves the hash where it was, and the next append overwrites
//!   those bytes from the same offset.
//! - An upload resumed after a restart, or on a node that did not see its first bytes, has no
//!   state here (or one at another offset): it gets none, and `finish` reads the bytes back as
//!   before. So does one that was under way when the map was full ([`MAX_KEPT`]).
//! - `finish` takes the digest only after it sealed the data (no write lands after that), when
//!   no append is under way and the state covers exactly the declared size.
//!
//! This relies on every write into an in-place object going through this process: the file
//! store is for one server alone on its data directory (`super::fs`). A store of parts (S3)
//! never uses it: its `finish` copies the parts into one object anyway and hashes them on the
//! way, in the same pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::hex;

/// Most uploads whose running hash is kept at once (each is about 200 bytes); past it, an
/// upload that starts gets none and its `finish` reads its bytes back.
pub const MAX_KEPT: usize = 16_384;

/// The running hashes of one node's in-place uploads (see the module docs).
#[derive(Default)]
pub struct RunningHashes {
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for RunningHashes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningHashes")
            .field("uploads", &self.entries.lock().len())
            .finish()
    }
}

/// What this node knows of one upload.
struct Entry {
    /// Appends of the upload under way.
    active: u32,
    /// Two appends were under way at once since `active` was last 0.
    overlapped: bool,
    /// The SHA-256 of the bytes `0..offset` as stored, when known (taken out while an append
    /// carries it on).
    hash: Option<(Sha256, u64)>,
    /// When an append last ended.
    touched: Instant,
}

impl RunningHashes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an append of upload `id` under way, before it checks its offset; it ends when
    /// the returned value is dropped.
    pub fn begin(self: &Arc<Self>, id: &str) -> Writing {
        let mut entries = self.entries.lock();
        let full = entries.len() >= MAX_KEPT && !entries.contains_key(id);
        let e = entries.entry(id.to_owned()).or_insert_with(|| Entry {
            active: 0,
            overlapped: false,
            hash: None,
            touched: Instant::now(),
        });
        e.active += 1;
        if e.active > 1 {
            e.overlapped = true;
            e.hash = None;
        }
        Writing {
            hashes: Arc::clone(self),
            id: id.to_owned(),
            resumed: false,
            may_hash: !full,
            hash: None,
        }
    }

    /// The SHA-256 (lowercase hex) of the first `size` bytes of upload `id` when they are known
    /// here and no append of it is under way.
    pub fn digest(&self, id: &str, size: u64) -> Option<String> {
        let entries = self.entries.lock();
        let e = entries.get(id)?;
        match &e.hash {
            Some((h, offset)) if e.active == 0 && !e.overlapped && *offset == size => {
                Some(hex(&h.clone().finalize()))
            }
            _ => None,
        }
    }

    /// Forgets upload `id` (finished, aborted or expired). Appends under way keep their entry
    /// until they end, but no hash.
    pub fn forget(&self, id: &str) {
        let mut entries = self.entries.lock();
        if let Some(e) = entries.get_mut(id) {
            if e.active == 0 {
                entries.remove(id);
            } else {
                e.overlapped = true;
                e.hash = None;
            }
        }
    }

    /// Forgets the uploads whose last append ended more than `idle` ago and that have none
    /// under way; returns how many went.
    pub fn forget_idle(&self, idle: Duration) -> usize {
        let mut entries = self.entries.lock();
        let before = entries.len();
        entries.retain(|_, e| e.active > 0 || e.touched.elapsed() < idle);
        before - entries.len()
    }

    /// How many uploads have an entry (for tests and logs).
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One append under way, carrying the upload's hash on as its parts are stored.
pub struct Writing {
    hashes: Arc<RunningHashes>,
    id: String,
    /// [`Writing::resume`] took the entry's hash out (it goes back when this ends).
    resumed: bool,
    /// The map had room for this upload when the append began.
    may_hash: bool,
    /// The hash of the bytes `0..offset` stored so far, when known.
    hash: Option<(Sha256, u64)>,
}

impl std::fmt::Debug for Writing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writing")
            .field("id", &self.id)
            .field("offset", &self.hash.as_ref().map(|(_, o)| *o))
            .finish()
    }
}

impl Writing {
    /// Called once the append's offset `at` was found to be the end of the stored chain: takes
    /// the upload's hash when it covers exactly `0..at`, or starts one at offset 0, unless
    /// another append is under way.
    pub fn resume(&mut self, at: u64) {
        let mut entries = self.hashes.entries.lock();
        let Some(e) = entries.get_mut(&self.id) else {
            return;
        };
        self.resumed = true;
        let kept = e.hash.take();
        if e.overlapped || e.active > 1 || !self.may_hash {
            return;
        }
        self.hash = match kept {
            Some((h, offset)) if offset == at => Some((h, offset)),
            _ if at == 0 => Some((Sha256::new(), 0)),
            _ => None,
        };
    }

    /// A copy of the hash of `0..at`, to carry on over the part about to be stored at `at`;
    /// `None` when it is not known.
    pub fn hash_at(&self, at: u64) -> Option<Sha256> {
        match &self.hash {
            Some((h, offset)) if *offset == at => Some(h.clone()),
            _ => None,
        }
    }

    /// The part ending at `end` is stored, and `hash` covers `0..end`.
    pub fn stored(&mut self, hash: Sha256, end: u64) {
        self.hash = Some((hash, end));
    }

    /// The hash can no longer follow the stored bytes (a part was stored but not hashed).
    pub fn lose(&mut self) {
        self.hash = None;
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        let mut entries = self.hashes.entries.lock();
        let Some(e) = entries.get_mut(&self.id) else {
            return;
        };
        e.active = e.active.saturating_sub(1);
        e.touched = Instant::now();
        if self.resumed && !e.overlapped {
            e.hash = self.hash.take();
        }
        if e.active == 0 {
            e.overlapped = false;
            if e.hash.is_none() {
                entries.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        hex(&Sha256::digest(data))
    }

    /// One append of `data` at `at`, stored in one part.
    fn append(h: &Arc<RunningHashes>, id: &str, at: u64, data: &[u8]) {
        let mut w = h.begin(id);
        w.resume(at);
        if let Some(mut s) = w.hash_at(at) {
            s.update(data);
            w.stored(s, at + data.len() as u64);
        }
    }

    #[test]
    fn appends_in_order_carry_the_hash_to_finish() {
        let h = Arc::new(RunningHashes::new());
        append(&h, "u", 0, b"hello ");
        assert_eq!(h.digest("u", 6), Some(sha(b"hello ")));
        append(&h, "u", 6, b"world");
        assert_eq!(h.digest("u", 11), Some(sha(b"hello world")));
        assert_eq!(h.digest("u", 12), None, "not the declared size");
        h.forget("u");
        assert!(h.is_empty());
    }

    #[test]
    fn an_append_elsewhere_than_the_hashed_offset_drops_it() {
        // Resumed at 6 on a node that knows nothing: no hash.
        let h = Arc::new(RunningHashes::new());
        append(&h, "u", 6, b"world");
        assert_eq!(h.digest("u", 11), None);
        assert!(h.is_empty(), "nothing kept for it");
        // Known up to 6, but the chain says 9 (bytes stored without this node's hash).
        append(&h, "v", 0, b"hello ");
        append(&h, "v", 9, b"ld");
        assert_eq!(h.digest("v", 11), None);
        // Back at 0 (nothing of the chain left), the hash starts again.
        append(&h, "v", 0, b"hi");
        assert_eq!(h.digest("v", 2), Some(sha(b"hi")));
    }

    #[test]
    fn overlapping_appends_drop_the_hash() {
        let h = Arc::new(RunningHashes::new());
        append(&h, "u", 0, b"abc");
        let mut first = h.begin("u");
        first.resume(3);
        let s = first.hash_at(3);
        assert!(s.is_some());
        // A second request of the same upload while the first is being stored.
        let mut second = h.begin("u");
        second.resume(3);
        assert!(second.hash_at(3).is_none());
        let mut s = s.expect("hash");
        s.update(b"def");
        first.stored(s, 6);
        assert_eq!(h.digest("u", 6), None, "appends under way");
        drop(first);
        assert_eq!(h.digest("u", 6), None, "one still under way");
        drop(second);
        assert_eq!(h.digest("u", 6), None, "overlapped: no hash kept");
        // An append that begins while another is checked and refused still counts.
        append(&h, "w", 0, b"abc");
        let refused = h.begin("w");
        append(&h, "w", 3, b"def");
        drop(refused);
        assert_eq!(h.digest("w", 6), None);
    }

    #[test]
    fn a_refused_append_leaves_the_hash_alone() {
        let h = Arc::new(RunningHashes::new());
        append(&h, "u", 0, b"abc");
        // Wrong offset: it never resumes.
        drop(h.begin("u"));
        assert_eq!(h.digest("u", 3), Some(sha(b"abc")));
        // A part stored but not hashed.
        let mut w = h.begin("u");
        w.resume(3);
        w.lose();
        drop(w);
        assert_eq!(h.digest("u", 3), None);
    }

    #[test]
    fn idle_uploads_are_forgotten_and_those_under_way_kept() {
        let h = Arc::new(RunningHashes::new());
        append(&h, "u", 0, b"abc");
        let w = h.begin("v");
        assert_eq!(h.forget_idle(Duration::ZERO), 1);
        assert_eq!(h.len(), 1);
        // Forgetting one under way takes its hash, not its count.
        h.forget("v");
        drop(w);
        assert!(h.is_empty());
    }
}
