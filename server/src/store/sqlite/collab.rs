//! SQLite's rows of collaborative documents (see `store::collab` for what a write does with
//! them). The single writer serialises every write, so the document's row needs no lock.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::rows::int;
use crate::store::{CollabHead, CollabLogEntry, CollabStored, StoreResult};

const ENSURE_DOC: &str = "INSERT INTO collab_docs (room, doc, created_at, updated_at) \
     VALUES (?1, ?2, ?3, ?3) ON CONFLICT (room, doc) DO NOTHING";
const HEAD: &str =
    "SELECT seq, snapshot_seq, size, log_bytes FROM collab_docs WHERE room = ?1 AND doc = ?2";
const SNAPSHOT: &str = "SELECT snapshot FROM collab_docs WHERE room = ?1 AND doc = ?2";
const LOG_AFTER: &str = "SELECT seq, data FROM collab_updates \
     WHERE room = ?1 AND doc = ?2 AND seq > ?3 ORDER BY seq";
const LOG_PAGE: &str = "SELECT seq, actor, data, at FROM collab_updates \
     WHERE room = ?1 AND doc = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4";
const APPEND: &str =
    "INSERT INTO collab_updates (room, doc, seq, actor, data, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const MOVE_HEAD: &str = "UPDATE collab_docs SET seq = ?3, size = ?4, log_bytes = ?5, \
     updated_at = ?6 WHERE room = ?1 AND doc = ?2";
const SAVE_SNAPSHOT: &str = "UPDATE collab_docs SET snapshot = ?3, snapshot_seq = ?4, \
     size = ?5, log_bytes = 0, updated_at = ?6 WHERE room = ?1 AND doc = ?2";
const DELETE_LOG_UPTO: &str =
    "DELETE FROM collab_updates WHERE room = ?1 AND doc = ?2 AND seq <= ?3";

/// What a deleted room's documents take with them.
pub(super) const DELETE_ROOM: [&str; 2] = [
    "DELETE FROM collab_updates WHERE room = ?1",
    "DELETE FROM collab_docs WHERE room = ?1",
];

/// An erased user's name leaves the log.
pub(super) const FORGET_ACTOR: &str = "UPDATE collab_updates SET actor = '' WHERE actor = ?1";

fn head_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<CollabHead> {
    Ok(CollabHead {
        seq: row.get(0)?,
        snapshot_seq: row.get(1)?,
        size: row.get(2)?,
        log_bytes: row.get(3)?,
    })
}

pub(super) fn lock(
    tx: &Transaction<'_>,
    room: &str,
    doc: &str,
    now: i64,
) -> StoreResult<CollabHead> {
    tx.prepare_cached(ENSURE_DOC)?
        .execute(params![room, doc, now])?;
    Ok(tx
        .prepare_cached(HEAD)?
        .query_row(params![room, doc], head_of)?)
}

pub(super) fn snapshot(c: &Connection, room: &str, doc: &str) -> StoreResult<Option<Vec<u8>>> {
    Ok(c.prepare_cached(SNAPSHOT)?
        .query_row(params![room, doc], |r| r.get::<_, Option<Vec<u8>>>(0))
        .optional()?
        .flatten())
}

pub(super) fn log(
    c: &Connection,
    room: &str,
    doc: &str,
    after: u64,
) -> StoreResult<Vec<(u64, Vec<u8>)>> {
    let mut stmt = c.prepare_cached(LOG_AFTER)?;
    let rows = stmt.query_map(params![room, doc, int(after)], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn append(
    tx: &Transaction<'_>,
    room: &str,
    doc: &str,
    e: &CollabLogEntry,
    size: u64,
    log_bytes: u64,
) -> StoreResult<()> {
    tx.prepare_cached(APPEND)?
        .execute(params![room, doc, int(e.seq), e.actor, e.update, e.at])?;
    tx.prepare_cached(MOVE_HEAD)?.execute(params![
        room,
        doc,
        int(e.seq),
        int(size),
        int(log_bytes),
        e.at
    ])?;
    Ok(())
}

pub(super) fn save_snapshot(
    tx: &Transaction<'_>,
    room: &str,
    doc: &str,
    snapshot: &[u8],
    seq: u64,
    size: u64,
    now: i64,
) -> StoreResult<()> {
    tx.prepare_cached(SAVE_SNAPSHOT)?.execute(params![
        room,
        doc,
        snapshot,
        int(seq),
        int(size),
        now
    ])?;
    tx.prepare_cached(DELETE_LOG_UPTO)?
        .execute(params![room, doc, int(seq)])?;
    Ok(())
}

/// The document as stored, read in one transaction of the reader.
pub(super) fn stored(c: &Connection, room: &str, doc: &str) -> StoreResult<Option<CollabStored>> {
    let Some(head) = c
        .prepare_cached(HEAD)?
        .query_row(params![room, doc], head_of)
        .optional()?
    else {
        return Ok(None);
    };
    Ok(Some(CollabStored {
        seq: head.seq,
        snapshot: snapshot(c, room, doc)?,
        snapshot_seq: head.snapshot_seq,
        log: log(c, room, doc, head.snapshot_seq)?,
    }))
}

pub(super) fn page(
    c: &Connection,
    room: &str,
    doc: &str,
    after: u64,
    limit: u32,
) -> StoreResult<Vec<CollabLogEntry>> {
    let mut stmt = c.prepare_cached(LOG_PAGE)?;
    let rows = stmt.query_map(params![room, doc, int(after), limit], |r| {
        Ok(CollabLogEntry {
            seq: r.get(0)?,
            actor: r.get(1)?,
            update: r.get(2)?,
            at: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
