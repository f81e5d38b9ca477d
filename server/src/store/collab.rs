//! `collab.update` inside its write's transaction, the same for every store.
//!
//! Under the document's row lock (created on first use, with seq 0), the node's cached copy is
//! brought up to the stored `seq` — from the log when it is only behind, from the snapshot and
//! the log when it is missing, ahead (a write whose transaction failed) or behind what the log
//! still holds — and the update is applied to it ([`crate::collab::apply`]). The update then
//! takes the next `seq` and is appended to the log; once the log since the snapshot holds
//! [`DocsConfig::compact_updates`](crate::collab::DocsConfig) updates or
//! `compact_bytes` bytes, the document is written as the new snapshot and the log up to it is
//! deleted, in the same transaction. A refused update changes nothing in the store, and drops
//! the cached copy when yrs touched it.

use std::sync::Arc;

use parking_lot::Mutex;
use roam_proto::collab::CollabUpdated;

use crate::collab::{self, Docs, Entry};
use crate::store::write::Rows;
use crate::store::{CollabHead, CollabLogEntry, CollabOutput, Output, StoreError, StoreResult};

/// Loads the document from the store (in this transaction) and caches it.
async fn load<R: Rows>(
    rows: &R,
    docs: &Docs,
    room: &str,
    doc: &str,
    head: &CollabHead,
) -> StoreResult<Arc<Mutex<Entry>>> {
    let snapshot = rows.collab_snapshot(room, doc).await?;
    let log = rows.collab_log(room, doc, head.snapshot_seq).await?;
    let seq = head.seq;
    let entry = rows
        .blocking(move || collab::load(snapshot.as_deref(), &log, seq))
        .await?
        .map_err(|r| StoreError::Backend(format!("stored document {room}/{doc}: {r}")))?;
    Ok(docs.put(room, doc, entry))
}

/// The cached document at the stored `seq`.
async fn current<R: Rows>(
    rows: &R,
    docs: &Docs,
    room: &str,
    doc: &str,
    head: &CollabHead,
) -> StoreResult<Arc<Mutex<Entry>>> {
    let Some(entry) = docs.get(room, doc) else {
        return load(rows, docs, room, doc, head).await;
    };
    let have = entry.lock().seq;
    if have == head.seq {
        return Ok(entry);
    }
    if have > head.seq || have < head.snapshot_seq {
        return load(rows, docs, room, doc, head).await;
    }
    let log = rows.collab_log(room, doc, have).await?;
    let caught_up = {
        let mut e = entry.lock();
        collab::catch_up(&mut e, &log).is_ok() && e.seq == head.seq
    };
    if caught_up {
        let size = entry.lock().size;
        docs.resize(room, doc, size);
        Ok(entry)
    } else {
        load(rows, docs, room, doc, head).await
    }
}

/// Applies one update (see the module documentation).
pub(crate) async fn update<R: Rows>(
    rows: &R,
    docs: &Docs,
    room: &str,
    doc: &str,
    bytes: &[u8],
    actor: &str,
    now: i64,
) -> StoreResult<Output> {
    // Refused before any lock or read when its structure is wrong.
    collab::check::update(bytes).map_err(StoreError::Collab)?;
    let head = rows.lock_collab(room, doc, now).await?;
    let entry = current(rows, docs, room, doc, &head).await?;
    let seq = head.seq + 1;
    let log_bytes = head.log_bytes + bytes.len() as u64;
    let compact = seq - head.snapshot_seq >= docs.config().compact_updates
        || log_bytes >= docs.config().compact_bytes;
    let (applied, ticket, snapshot) = {
        let mut e = entry.lock();
        let applied = match collab::apply(&mut e, bytes) {
            Ok(a) => a,
            Err(refused) => {
                drop(e);
                if refused.touched {
                    docs.remove(room, doc);
                }
                return Err(StoreError::Collab(refused.refusal));
            }
        };
        e.seq = seq;
        let ticket = docs.changed(room, doc, &mut e);
        let snapshot = if compact {
            match collab::snapshot(&e) {
                Ok(s) => Some(s),
                Err(r) => {
                    drop(e);
                    docs.remove(room, doc);
                    return Err(StoreError::Backend(format!("compacting {room}/{doc}: {r}")));
                }
            }
        } else {
            None
        };
        (applied, ticket, snapshot)
    };
    let size = match &snapshot {
        Some((_, exact)) => *exact,
        None => applied.size,
    };
    docs.resize(room, doc, size);
    let logged = CollabLogEntry {
        seq,
        actor: actor.to_owned(),
        update: bytes.to_vec(),
        at: now,
    };
    rows.append_collab(room, doc, &logged, size, log_bytes)
        .await?;
    if let Some((snap, exact)) = &snapshot {
        rows.save_collab_snapshot(room, doc, snap, seq, *exact, now)
            .await?;
    }
    Ok(Output::Collab(Arc::new(CollabOutput {
        result: CollabUpdated {
            room: room.to_owned(),
            doc: doc.to_owned(),
            seq,
            size,
        },
        actor: actor.to_owned(),
        update: Arc::from(logged.update),
        compacted: snapshot.is_some(),
        ticket: Some(ticket),
    })))
}
