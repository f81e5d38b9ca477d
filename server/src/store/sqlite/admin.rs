//! The operator's reads and changes (`crate::admin`): suspension stamps, every room, a user's
//! memberships and messages, and what is left of a user once their messages are deleted.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, Transaction};

use roam_proto::{Member, Message, Room};

use super::rows::{self, int, member_cols, message_cols, room_cols};
use crate::store::{StoreError, StoreResult, Suspension};

const SUSPENSIONS: &str = "SELECT user, suspended, not_before FROM suspensions ORDER BY user";
const SET_SUSPENSION: &str = "INSERT INTO suspensions (user, suspended, not_before) \
     VALUES (?1, ?2, ?3) ON CONFLICT (user) DO UPDATE \
     SET suspended = excluded.suspended, not_before = excluded.not_before";

const ALL_ROOMS: &str = concat!(
    "SELECT ",
    room_cols!(),
    " FROM rooms r WHERE r.deleted_at IS NULL AND r.name > ?1 ORDER BY r.name LIMIT ?2"
);

const MEMBERSHIPS: &str = concat!(
    "SELECT ",
    member_cols!(),
    " FROM members WHERE user = ?1 \
     AND EXISTS (SELECT 1 FROM rooms r WHERE r.name = members.room AND r.deleted_at IS NULL) \
     ORDER BY room"
);

/// A message is its `message_created` row (and its newest edit); `actor` is its sender.
const MESSAGES_BY: &str = concat!(
    "SELECT ",
    message_cols!(),
    " FROM events WHERE actor = ?1 AND kind = 'message_created' \
     AND (room > ?2 OR (room = ?2 AND seq > ?3)) ORDER BY room, seq LIMIT ?4"
);

/// The text of the user's messages that is still kept (the events of deleted rooms keep
/// their messages as they were).
const REDACT_LEFT_OVER: &str = "UPDATE events SET data = \
     json_remove(json_set(data, '$.body', '', '$.deleted', json('true')), '$.attachment'), \
     sent_key = NULL, sent_fingerprint = NULL \
     WHERE actor = ?1 AND kind IN ('message_created', 'message_edited') \
     AND (json_extract(data, '$.body') <> '' OR json_extract(data, '$.attachment') IS NOT NULL \
          OR sent_key IS NOT NULL)";
const DELETE_BLOB_REFS: &str = "DELETE FROM message_blobs WHERE (room, seq) IN \
     (SELECT room, seq FROM events WHERE actor = ?1 AND kind = 'message_created')";

/// The user's own rows, each statement with the user as `?1`.
const FORGET: [&str; 13] = [
    "DELETE FROM users WHERE id = ?1",
    "DELETE FROM presence WHERE user = ?1",
    "DELETE FROM inboxes WHERE user = ?1",
    "DELETE FROM notifications WHERE user = ?1 OR actor = ?1",
    "DELETE FROM idempotency WHERE user = ?1",
    "DELETE FROM read_markers WHERE user = ?1",
    "DELETE FROM members WHERE user = ?1",
    "DELETE FROM role_caps WHERE user = ?1",
    "DELETE FROM blob_charges WHERE owner = ?1",
    "DELETE FROM push_devices WHERE user = ?1",
    "DELETE FROM push_modes WHERE user = ?1",
    "DELETE FROM push_queue WHERE user = ?1",
    "DELETE FROM invitations WHERE invitee = ?1 OR invited_by = ?1",
];

pub(super) fn suspensions(conn: &Connection) -> StoreResult<Vec<Suspension>> {
    let mut stmt = conn.prepare_cached(SUSPENSIONS)?;
    let rows = stmt.query_map([], |r| {
        Ok(Suspension {
            user: r.get(0)?,
            suspended: r.get(1)?,
            not_before: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Answers `(rows written, 0)`.
pub(super) fn set_suspension(tx: &Transaction<'_>, s: &Suspension) -> StoreResult<(u64, u64)> {
    let n =
        tx.prepare_cached(SET_SUSPENSION)?
            .execute(params![s.user, s.suspended, s.not_before])?;
    Ok((n as u64, 0))
}

pub(super) fn all_rooms(conn: &Connection, after: &str, limit: u32) -> StoreResult<Vec<Room>> {
    let mut stmt = conn.prepare_cached(ALL_ROOMS)?;
    let rows = stmt.query_map(params![after, limit], rows::room)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn memberships(conn: &Connection, user: &str) -> StoreResult<Vec<Member>> {
    let mut stmt = conn.prepare_cached(MEMBERSHIPS)?;
    let rows = stmt.query_map(params![user], rows::member)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn messages_by(
    conn: &Connection,
    user: &str,
    after: (&str, u64),
    limit: u32,
) -> StoreResult<Vec<Message>> {
    let mut stmt = conn.prepare_cached(MESSAGES_BY)?;
    let rows = stmt.query_map(params![user, after.0, int(after.1), limit], rows::message)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Blanks what is left of the user's messages and deletes their rows; answers
/// `(events redacted, rows deleted)`.
pub(super) fn forget_user(tx: &Transaction<'_>, user: &str) -> StoreResult<(u64, u64)> {
    tx.execute(DELETE_BLOB_REFS, params![user])?;
    let redacted = tx.execute(REDACT_LEFT_OVER, params![user])? as u64;
    let mut deleted = 0u64;
    for sql in FORGET {
        deleted += tx.execute(sql, params![user])? as u64;
    }
    Ok((redacted, deleted))
}

/// Rewrites the database file from its live rows (`VACUUM`), then copies the WAL into it and
/// truncates the WAL to nothing: the bytes of deleted rows are then in neither file.
///
/// On its own connection, waiting up to `wait` for the writer's group in progress; writes
/// queue behind it meanwhile.
pub(super) fn scrub(db: &Path, wait: Duration) -> StoreResult<()> {
    let conn = Connection::open(db)?;
    conn.busy_timeout(wait)?;
    conn.execute_batch("PRAGMA secure_delete = ON; VACUUM;")?;
    let (busy, _, _): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    if busy != 0 {
        return Err(StoreError::Backend(
            "the WAL could not be truncated: a reader held it the whole time".into(),
        ));
    }
    Ok(())
}
