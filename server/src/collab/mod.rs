//! Collaborative documents (protocol §12): the CRDT side, without storage or sockets.
//!
//! A collaborative document is a Yjs document (`yrs`). The server keeps, per document, an
//! append-only log of the updates it applied (each with the document's next `seq`) and a
//! snapshot (the whole state, v2-encoded) that the log is compacted into; the store writes
//! those (`store/collab.rs`), this module decides what they hold.
//!
//! **Applying an update** ([`apply`]): the bytes are first checked for structure ([`check`]:
//! counts that a few bytes could declare and that would make yrs reserve memory for them),
//! then decoded and applied inside `catch_unwind`, so a bug in yrs answers `invalid_input`
//! instead of taking the server down. An update that yrs would keep *pending* (it names
//! content the server does not have), or whose blocks for some client start past what the
//! server holds of that client (yrs would integrate them after a gap), is refused: the document would otherwise hold state that
//! no client can see and every later state vector would be wrong. An update that would take
//! the document past [`MAX_COLLAB_DOC_BYTES`] is refused too. Its size is not measured per
//! keystroke: the document carries an upper bound (the last exact size plus every update since,
//! since merging an update of `n` bytes grows the encoded state by at most about `n`), and the
//! exact size is measured only when the bound comes near the limit. A refusal after yrs
//! touched the document drops the cached copy, so the next write reloads it from the store; one
//! decided before (unreadable bytes, a hole before the update's first block) keeps it.
//!
//! **The cache** ([`Docs`]) holds loaded documents in memory, least recently used first out,
//! bounded by the sum of their encoded sizes. Each entry knows the `seq` it holds; a write
//! brings it up to the stored `seq` from the log (another node may have written) before it
//! applies. Entries changed by a write that is not committed yet are *unconfirmed*: if the
//! write's transaction fails, its [`Ticket`] is dropped unconfirmed and the entry goes.

pub mod check;
mod docs;

use std::panic::{catch_unwind, AssertUnwindSafe};

use roam_proto::collab::MAX_COLLAB_DOC_BYTES;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

pub use docs::{Docs, DocsConfig, DocsStats, Entry, Ticket};

/// Why an update, a state vector or a stored document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Not a Yjs v1 update (or state vector): the text says what is wrong.
    #[error("{0}")]
    Malformed(String),
    /// The update names content the server does not have (yrs would keep it pending).
    #[error(
        "the update depends on content the server does not have: sync first \
         (collab_sync with your state vector) and send what the server lacks"
    )]
    Pending,
    /// The document would grow past [`MAX_COLLAB_DOC_BYTES`].
    #[error("the document would take {size} bytes and may take at most {max}: it is full")]
    TooLarge { size: u64, max: u64 },
}

impl Refusal {
    /// The metric label of the refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::Pending => "pending",
            Refusal::TooLarge { .. } => "too_large",
        }
    }
}

/// An applied update as it travels to every node's followers of its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub room: String,
    pub doc: String,
    pub seq: u64,
    pub actor: String,
    /// The v1 update.
    pub update: std::sync::Arc<[u8]>,
}

/// An update as the log stores it: its seq and its v1 bytes.
pub type Logged = (u64, Vec<u8>);

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The document's size once applied: exact when `exact`, else an upper bound.
    pub size: u64,
    pub exact: bool,
}

/// The exact size of a document: its whole state as one v1 update, in bytes.
pub fn exact_size(doc: &Doc) -> u64 {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
        .len() as u64
}

/// How far below the limit the bound may go before the size is measured exactly.
fn measure_from(max: u64) -> u64 {
    max - max / 8
}

/// Runs `f` with yrs, turning a panic into a refusal.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, Refusal>) -> Result<T, Refusal> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        tracing::warn!(what, "collab: yrs panicked on an input; refused");
        Err(Refusal::Malformed(format!("the {what} could not be read")))
    })
}

/// Decodes a v1 update after the structure check.
pub fn decode_update(bytes: &[u8]) -> Result<Update, Refusal> {
    check::update(bytes)?;
    guarded("update", || {
        Update::decode_v1(bytes)
            .map_err(|e| Refusal::Malformed(format!("the update is not a Yjs v1 update: {e}")))
    })
}

/// Whether some client's blocks in `update` start past what the document holds of that client
/// (`have`) or past the update's own earlier blocks: content is missing before them. yrs would
/// integrate such blocks after a gap (its `Skip`) without keeping them pending, leaving the
/// document holding content beyond its own state vector, so they are refused as pending, before
/// yrs touches the document.
fn leaves_a_hole(update: &Update, have: &StateVector) -> bool {
    // Each client's first block, by its start alone: a block whose clock is so high that its
    // end passes `u32::MAX` has no range in `insertions` (and made yrs panic on integrating it).
    let first_past = update
        .state_vector_lower()
        .iter()
        .any(|(client, clock)| *clock > have.get(client));
    first_past
        || update.insertions(true).iter().any(|(client, ranges)| {
            let mut next = have.get(client);
            ranges.iter().any(|r| {
                let hole = r.start > next;
                next = next.max(r.end);
                hole
            })
        })
}

/// Decodes a client's state vector (empty: the client has nothing).
pub fn decode_state_vector(bytes: &[u8]) -> Result<StateVector, Refusal> {
    if bytes.is_empty() {
        return Ok(StateVector::default());
    }
    check::state_vector(bytes)?;
    guarded("state vector", || {
        StateVector::decode_v1(bytes)
            .map_err(|e| Refusal::Malformed(format!("state_vector is not a Yjs state vector: {e}")))
    })
}

/// A refused update, and whether yrs had already changed the document when it was refused
/// (the caller then drops the copy and reloads it from the store; an untouched one is kept).
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub refusal: Refusal,
    pub touched: bool,
}

impl Refused {
    fn untouched(refusal: Refusal) -> Refused {
        Refused {
            refusal,
            touched: false,
        }
    }

    fn touched(refusal: Refusal) -> Refused {
        Refused {
            refusal,
            touched: true,
        }
    }
}

/// Applies one client update to `entry` (whose `seq` the caller moves on): refused when it is
/// malformed, pending or makes the document too large — before yrs changes the document when
/// the update can be judged from its bytes and the document's state vector, after otherwise.
pub fn apply(entry: &mut Entry, bytes: &[u8]) -> Result<Applied, Refused> {
    apply_with_max(entry, bytes, MAX_COLLAB_DOC_BYTES as u64)
}

/// [`apply`] with another size limit (tests use a small one).
pub fn apply_with_max(entry: &mut Entry, bytes: &[u8], max: u64) -> Result<Applied, Refused> {
    let update = decode_update(bytes).map_err(Refused::untouched)?;
    let hole = guarded("update", || {
        Ok(leaves_a_hole(&update, &entry.doc.transact().state_vector()))
    })
    .map_err(Refused::untouched)?;
    if hole {
        return Err(Refused::untouched(Refusal::Pending));
    }
    guarded("update", || {
        let mut txn = entry.doc.transact_mut();
        txn.apply_update(update)
            .map_err(|e| Refusal::Malformed(format!("the update could not be applied: {e}")))?;
        let store = txn.store();
        if store.pending_update().is_some() || store.pending_ds().is_some() {
            return Err(Refusal::Pending);
        }
        Ok(())
    })
    .map_err(Refused::touched)?;
    let bound = entry.size.saturating_add(bytes.len() as u64);
    let applied = if bound >= measure_from(max) {
        let size = guarded("update", || Ok(exact_size(&entry.doc))).map_err(Refused::touched)?;
        Applied { size, exact: true }
    } else {
        Applied {
            size: bound,
            exact: false,
        }
    };
    if applied.size > max {
        return Err(Refused::touched(Refusal::TooLarge {
            size: applied.size,
            max,
        }));
    }
    entry.size = applied.size;
    Ok(applied)
}

/// Builds a document from its snapshot (v2, may be absent) and the log after it, as stored:
/// the stored content was checked when it was written, but it is decoded as carefully.
pub fn load(snapshot: Option<&[u8]>, log: &[Logged], seq: u64) -> Result<Entry, Refusal> {
    let doc = Doc::new();
    guarded("stored document", || {
        let mut txn = doc.transact_mut();
        if let Some(snap) = snapshot.filter(|s| !s.is_empty()) {
            let u = Update::decode_v2(snap)
                .map_err(|e| Refusal::Malformed(format!("stored snapshot: {e}")))?;
            txn.apply_update(u)
                .map_err(|e| Refusal::Malformed(format!("stored snapshot: {e}")))?;
        }
        for (_, bytes) in log {
            let u = Update::decode_v1(bytes)
                .map_err(|e| Refusal::Malformed(format!("stored update: {e}")))?;
            txn.apply_update(u)
                .map_err(|e| Refusal::Malformed(format!("stored update: {e}")))?;
        }
        Ok(())
    })?;
    let size = guarded("stored document", || Ok(exact_size(&doc)))?;
    Ok(Entry::new(doc, seq, size))
}

/// Applies stored updates (already checked when written) to a cached document.
pub fn catch_up(entry: &mut Entry, log: &[Logged]) -> Result<(), Refusal> {
    for (seq, bytes) in log {
        if *seq <= entry.seq {
            continue;
        }
        if *seq != entry.seq + 1 {
            return Err(Refusal::Malformed(format!(
                "the stored log jumps from {} to {seq}",
                entry.seq
            )));
        }
        guarded("stored update", || {
            let u = Update::decode_v1(bytes)
                .map_err(|e| Refusal::Malformed(format!("stored update: {e}")))?;
            entry
                .doc
                .transact_mut()
                .apply_update(u)
                .map_err(|e| Refusal::Malformed(format!("stored update: {e}")))
        })?;
        entry.size = entry.size.saturating_add(bytes.len() as u64);
        entry.seq = *seq;
    }
    Ok(())
}

/// The answer to a sync: what a client with `sv` lacks (v1) and the document's state vector
/// (v1), both encoded.
pub fn diff(entry: &Entry, sv: &StateVector) -> Result<(Vec<u8>, Vec<u8>), Refusal> {
    guarded("state vector", || {
        let txn = entry.doc.transact();
        Ok((txn.encode_diff_v1(sv), txn.state_vector().encode_v1()))
    })
}

/// The document's whole state, v2-encoded (a snapshot), and its exact v1 size.
pub fn snapshot(entry: &Entry) -> Result<(Vec<u8>, u64), Refusal> {
    guarded("document", || {
        let txn = entry.doc.transact();
        let snap = txn.encode_state_as_update_v2(&StateVector::default());
        let size = txn.encode_state_as_update_v1(&StateVector::default()).len() as u64;
        Ok((snap, size))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    fn typed(client: u64, text: &str) -> (Doc, Vec<u8>) {
        let doc = Doc::with_client_id(client);
        let t = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 0, text);
        let u = txn.encode_update_v1();
        drop(txn);
        (doc, u)
    }

    /// The whole state of the entry's document (v1), to compare before and after a refusal.
    fn state_of(e: &Entry) -> Vec<u8> {
        e.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    fn empty() -> Entry {
        Entry::new(Doc::new(), 0, 2)
    }

    #[test]
    fn an_update_is_applied_and_the_size_bounded() {
        let mut e = empty();
        let (_, u) = typed(1, "hello");
        let a = apply(&mut e, &u).expect("applies");
        assert!(a.size >= exact_size(&e.doc));
        let t = e.doc.get_or_insert_text("t");
        assert_eq!(t.get_string(&e.doc.transact()), "hello");
    }

    #[test]
    fn garbage_and_pending_updates_are_refused() {
        let mut e = empty();
        assert!(matches!(
            apply(&mut e, &[0xff, 0xff, 0xff]),
            Err(Refused {
                refusal: Refusal::Malformed(_),
                touched: false
            })
        ));
        // The second edit of a client without its first: pending.
        let doc = Doc::with_client_id(7);
        let t = doc.get_or_insert_text("t");
        t.insert(&mut doc.transact_mut(), 0, "ab");
        let sv = doc.transact().state_vector();
        t.insert(&mut doc.transact_mut(), 2, "cd");
        let second = doc.transact().encode_diff_v1(&sv);
        assert_eq!(
            apply(&mut empty(), &second),
            Err(Refused::untouched(Refusal::Pending))
        );
    }

    #[test]
    fn an_update_after_a_gap_is_refused_and_changes_nothing() {
        // A client's third edit without its second: no origin is missing (it is typed at the
        // start), but the clocks between are.
        let doc = Doc::with_client_id(9);
        let t = doc.get_or_insert_text("t");
        t.insert(&mut doc.transact_mut(), 0, "ab");
        let first = doc.transact().encode_diff_v1(&StateVector::default());
        t.insert(&mut doc.transact_mut(), 0, "cd");
        let sv = doc.transact().state_vector();
        t.insert(&mut doc.transact_mut(), 0, "ef");
        let third = doc.transact().encode_diff_v1(&sv);
        let mut e = empty();
        apply(&mut e, &first).expect("the first edit applies");
        let before = state_of(&e);
        assert_eq!(
            apply(&mut e, &third),
            Err(Refused::untouched(Refusal::Pending))
        );
        let after = state_of(&e);
        assert_eq!(before, after, "the refused update changed the document");
    }

    #[test]
    fn a_block_at_a_clock_past_the_document_is_refused_before_yrs_sees_it() {
        // Found by collab_fuzz (seed 1, case 410,427): a block of a known client at clock
        // u32::MAX, whose end wraps around; yrs panicked integrating it (reading it, in a
        // debug build). Clocks from 2^31 up confuse it too (it compares clocks as i32).
        let (doc, first) = typed(77, "ab");
        drop(doc);
        let mut e = empty();
        apply(&mut e, &first).expect("the first edit applies");
        let before = state_of(&e);
        // One client (77), one block at clock u32::MAX: a string "u" whose parent is (77, 0).
        let last = [
            1, 1, 77, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x04, 0x44, 77, 0, 1, b'u', 0,
        ];
        let refused = apply(&mut e, &last).expect_err("refused");
        assert!(
            refused
                .refusal
                .to_string()
                .contains("would pass the largest clock"),
            "{}",
            refused.refusal
        );
        assert!(!refused.touched, "refused before yrs saw it");
        // The same block at clock 2^31 + 5: past what the document holds of client 77.
        let high = [
            1, 1, 77, 0x85, 0x80, 0x80, 0x80, 0x08, 0x04, 0x44, 77, 0, 1, b'u', 0,
        ];
        assert_eq!(
            apply(&mut e, &high),
            Err(Refused::untouched(Refusal::Pending))
        );
        let after = state_of(&e);
        assert_eq!(before, after, "the refused updates changed the document");
    }

    #[test]
    fn growth_past_the_limit_is_refused_exactly() {
        let mut e = empty();
        let (_, u) = typed(1, &"x".repeat(400));
        let err = apply_with_max(&mut e, &u, 300).expect_err("too large");
        assert!(matches!(err.refusal, Refusal::TooLarge { max: 300, .. }));
        assert!(
            err.touched,
            "measured after applying: the copy must be reloaded"
        );
    }

    #[test]
    fn a_snapshot_and_log_load_back_the_same_document() {
        let mut e = empty();
        let (_, u) = typed(1, "abc");
        apply(&mut e, &u).expect("applies");
        e.seq = 1;
        let (snap, size) = snapshot(&e).expect("snapshot");
        let loaded = load(Some(&snap), &[], 1).expect("loads");
        assert_eq!(exact_size(&loaded.doc), size);
        let (d, _) = diff(&loaded, &StateVector::default()).expect("diff");
        let fresh = Doc::new();
        fresh
            .transact_mut()
            .apply_update(Update::decode_v1(&d).expect("decodes"))
            .expect("applies");
        let t = fresh.get_or_insert_text("t");
        assert_eq!(t.get_string(&fresh.transact()), "abc");
    }
}
