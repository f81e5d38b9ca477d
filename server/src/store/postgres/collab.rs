//! PostgreSQL's rows of collaborative documents (see `store::collab` for what a write does
//! with them). A write locks its document's row (`FOR UPDATE`, after the room's row that its
//! guard locked), so the seq it takes is the next one whichever node writes.

use super::conn::Conn;
use super::rows::{col, count, int};
use crate::store::{CollabHead, CollabLogEntry, CollabStored, StoreResult};

const ENSURE_DOC: &str = "INSERT INTO collab_docs (room, doc, created_at, updated_at) \
     VALUES ($1, $2, $3, $3) ON CONFLICT (room, doc) DO NOTHING";
const HEAD_LOCKED: &str = "SELECT seq, snapshot_seq, size, log_bytes FROM collab_docs \
     WHERE room = $1 AND doc = $2 FOR UPDATE";
const HEAD_AND_SNAPSHOT: &str =
    "SELECT seq, snapshot_seq, snapshot FROM collab_docs WHERE room = $1 AND doc = $2";
const SNAPSHOT: &str = "SELECT snapshot FROM collab_docs WHERE room = $1 AND doc = $2";
const LOG_AFTER: &str = "SELECT seq, data FROM collab_updates \
     WHERE room = $1 AND doc = $2 AND seq > $3 ORDER BY seq";
const LOG_PAGE: &str = "SELECT seq, actor, data, at FROM collab_updates \
     WHERE room = $1 AND doc = $2 AND seq > $3 ORDER BY seq LIMIT $4";
const APPEND: &str =
    "INSERT INTO collab_updates (room, doc, seq, actor, data, at) VALUES ($1, $2, $3, $4, $5, $6)";
const MOVE_HEAD: &str = "UPDATE collab_docs SET seq = $3, size = $4, log_bytes = $5, \
     updated_at = $6 WHERE room = $1 AND doc = $2";
const SAVE_SNAPSHOT: &str = "UPDATE collab_docs SET snapshot = $3, snapshot_seq = $4, \
     size = $5, log_bytes = 0, updated_at = $6 WHERE room = $1 AND doc = $2";
const DELETE_LOG_UPTO: &str =
    "DELETE FROM collab_updates WHERE room = $1 AND doc = $2 AND seq <= $3";

/// What a deleted room's documents take with them.
pub(super) const DELETE_ROOM: [&str; 2] = [
    "DELETE FROM collab_updates WHERE room = $1",
    "DELETE FROM collab_docs WHERE room = $1",
];

/// An erased user's name leaves the log.
pub(super) const FORGET_ACTOR: &str = "UPDATE collab_updates SET actor = '' WHERE actor = $1";

pub(super) async fn lock(c: &Conn, room: &str, doc: &str, now: i64) -> StoreResult<CollabHead> {
    c.execute(ENSURE_DOC, &[&room, &doc, &now]).await?;
    let row = c.query_one(HEAD_LOCKED, &[&room, &doc]).await?;
    Ok(CollabHead {
        seq: count(&row, 0)?,
        snapshot_seq: count(&row, 1)?,
        size: count(&row, 2)?,
        log_bytes: count(&row, 3)?,
    })
}

pub(super) async fn snapshot(c: &Conn, room: &str, doc: &str) -> StoreResult<Option<Vec<u8>>> {
    match c.query_opt(SNAPSHOT, &[&room, &doc]).await? {
        Some(row) => col(&row, 0),
        None => Ok(None),
    }
}

pub(super) async fn log(
    c: &Conn,
    room: &str,
    doc: &str,
    after: u64,
) -> StoreResult<Vec<(u64, Vec<u8>)>> {
    c.query(LOG_AFTER, &[&room, &doc, &int(after)])
        .await?
        .iter()
        .map(|r| Ok((count(r, 0)?, col(r, 1)?)))
        .collect()
}

pub(super) async fn append(
    c: &Conn,
    room: &str,
    doc: &str,
    e: &CollabLogEntry,
    size: u64,
    log_bytes: u64,
) -> StoreResult<()> {
    c.execute(
        APPEND,
        &[&room, &doc, &int(e.seq), &e.actor, &e.update, &e.at],
    )
    .await?;
    c.execute(
        MOVE_HEAD,
        &[&room, &doc, &int(e.seq), &int(size), &int(log_bytes), &e.at],
    )
    .await?;
    Ok(())
}

pub(super) async fn save_snapshot(
    c: &Conn,
    room: &str,
    doc: &str,
    snapshot: &[u8],
    seq: u64,
    size: u64,
    now: i64,
) -> StoreResult<()> {
    c.execute(
        SAVE_SNAPSHOT,
        &[&room, &doc, &snapshot, &int(seq), &int(size), &now],
    )
    .await?;
    c.execute(DELETE_LOG_UPTO, &[&room, &doc, &int(seq)])
        .await?;
    Ok(())
}

/// The document as stored. The snapshot and the log are read apart, without a transaction:
/// a compaction in between shows as a log that does not start right after the snapshot, and
/// the read is made again.
pub(super) async fn stored(c: &Conn, room: &str, doc: &str) -> StoreResult<Option<CollabStored>> {
    loop {
        let Some(row) = c.query_opt(HEAD_AND_SNAPSHOT, &[&room, &doc]).await? else {
            return Ok(None);
        };
        let snapshot_seq = count(&row, 1)?;
        let snapshot: Option<Vec<u8>> = col(&row, 2)?;
        let log = log(c, room, doc, snapshot_seq).await?;
        let contiguous = log
            .iter()
            .enumerate()
            .all(|(i, (seq, _))| *seq == snapshot_seq + 1 + i as u64);
        if contiguous {
            return Ok(Some(CollabStored {
                seq: log.last().map_or(snapshot_seq, |(s, _)| *s),
                snapshot,
                snapshot_seq,
                log,
            }));
        }
    }
}

pub(super) async fn page(
    c: &Conn,
    room: &str,
    doc: &str,
    after: u64,
    limit: u32,
) -> StoreResult<Vec<CollabLogEntry>> {
    c.query(LOG_PAGE, &[&room, &doc, &int(after), &i64::from(limit)])
        .await?
        .iter()
        .map(|r| {
            Ok(CollabLogEntry {
                seq: count(r, 0)?,
                actor: col(r, 1)?,
                update: col(r, 2)?,
                at: col(r, 3)?,
            })
        })
        .collect()
}
