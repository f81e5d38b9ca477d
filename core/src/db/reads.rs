//! Reads. Every function takes a `&Connection` (a pooled reader, or the writer's transaction).

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::Result;
use crate::metrics::OutboxFigures;
use crate::model::{
    Attachment, Document, DocumentVersion, Message, NotificationInfo, OutboxEntry, RoomInfo,
    SendState, UploadProgress, UploadState,
};
use roam_proto::{
    Member, MemberStatus, Mutation, Presence, PresenceStatus, Role, RoomCursor, RoomKind,
};

pub(crate) fn send_state(state: &str, code: Option<String>, message: Option<String>) -> SendState {
    match state {
        "pending" => SendState::Pending,
        "failed" => SendState::Failed {
            code: code.unwrap_or_else(|| "unknown".into()),
            message: message.unwrap_or_default(),
        },
        _ => SendState::Sent,
    }
}

fn u64_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(idx)?;
    Ok(u64::try_from(v).unwrap_or(0))
}

fn opt_u64_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<u64>> {
    let v: Option<i64> = row.get(idx)?;
    Ok(v.map(|v| u64::try_from(v).unwrap_or(0)))
}

// ---------------------------------------------------------------------------------------------
// Rooms

// Column lists are macros so that every query is one `concat!`ed literal: `prepare_cached` then
// finds its statement by that string, instead of preparing a freshly `format!`ted one each call.
macro_rules! room_cols {
    () => {
        "r.name, r.kind, r.title, r.metadata, r.owner, r.created_at, r.updated_at, r.head_seq, \
         r.member_count, r.joined, COALESCE(c.seq, 0), r.send_state, r.failure_code, r.failure"
    };
}

fn room_row(row: &Row<'_>) -> rusqlite::Result<RoomInfo> {
    let kind: String = row.get(1)?;
    Ok(RoomInfo {
        name: row.get(0)?,
        kind: RoomKind::parse(&kind).unwrap_or(RoomKind::Public),
        title: row.get(2)?,
        metadata_json: row.get(3)?,
        owner: row.get(4)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
        head_seq: u64_col(row, 7)?,
        member_count: u64_col(row, 8)?,
        joined: row.get(9)?,
        last_seq: u64_col(row, 10)?,
        send_state: send_state(&row.get::<_, String>(11)?, row.get(12)?, row.get(13)?),
    })
}

/// Every known room, by name.
pub(crate) fn rooms(conn: &Connection) -> Result<Vec<RoomInfo>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        room_cols!(),
        " FROM rooms r LEFT JOIN room_cursors c ON c.room = r.name ORDER BY r.name"
    ))?;
    let rows = stmt.query_map([], room_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn room(conn: &Connection, name: &str) -> Result<Option<RoomInfo>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        room_cols!(),
        " FROM rooms r LEFT JOIN room_cursors c ON c.room = r.name WHERE r.name = ?1"
    ))?;
    Ok(stmt.query_row([name], room_row).optional()?)
}

/// The rooms to follow on the socket, with their cursors.
pub(crate) fn subscriptions(conn: &Connection) -> Result<Vec<RoomCursor>> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.name, COALESCE(c.seq, 0) FROM rooms r LEFT JOIN room_cursors c ON c.room = r.name \
         WHERE r.subscribed = 1 ORDER BY r.name",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok(RoomCursor {
            room: row.get(0)?,
            since: u64_col(row, 1)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The highest applied seq of a room (0 for none).
pub(crate) fn cursor(conn: &Connection, room: &str) -> Result<u64> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT seq FROM room_cursors WHERE room = ?1")?
        .query_row([room], |r| r.get(0))
        .optional()?;
    Ok(v.map(|v| u64::try_from(v).unwrap_or(0)).unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------
// Members

fn member_row(row: &Row<'_>) -> rusqlite::Result<Member> {
    let role: String = row.get(2)?;
    let status: String = row.get(3)?;
    Ok(Member {
        room: row.get(0)?,
        user: row.get(1)?,
        role: Role::parse(&role).unwrap_or(Role::Member),
        status: MemberStatus::parse(&status).unwrap_or(MemberStatus::Active),
        joined_at: row.get(4)?,
    })
}

pub(crate) fn members(conn: &Connection, room: &str) -> Result<Vec<Member>> {
    let mut stmt = conn.prepare_cached(
        "SELECT room, user, role, status, joined_at FROM members WHERE room = ?1 ORDER BY user",
    )?;
    let rows = stmt.query_map([room], member_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn member(conn: &Connection, room: &str, user: &str) -> Result<Option<Member>> {
    Ok(conn
        .prepare_cached(
            "SELECT room, user, role, status, joined_at FROM members WHERE room = ?1 AND user = ?2",
        )?
        .query_row([room, user], member_row)
        .optional()?)
}

// ---------------------------------------------------------------------------------------------
// Messages

/// The columns of a message row, and last the id of the outbox entry holding its latest local
/// change: none once everything is sent; else the newest edit or delete of it still in the
/// outbox (found through the `outbox_target` index), or, for a message not confirmed yet, its
/// send (whose id is the message's local id). Every query selects `FROM messages`.
macro_rules! message_cols {
    () => {
        "local_id, server_id, room, seq, sender, body, reply_to, created_at, edited_at, deleted, \
         send_state, failure_code, failure, \
         CASE WHEN send_state = 'sent' THEN NULL ELSE COALESCE( \
           (SELECT o.id FROM outbox o WHERE o.target = messages.local_id \
            ORDER BY o.pos DESC LIMIT 1), \
           CASE WHEN seq IS NULL THEN local_id END) END, \
         attachment, \
         CASE WHEN attachment IS NULL THEN NULL ELSE \
           (SELECT json_array(u.sent, u.state, u.error_code, u.error) FROM uploads u \
            WHERE u.local_id = messages.local_id) END, \
         CASE WHEN attachment IS NULL THEN NULL ELSE \
           (SELECT md.path FROM media md \
            WHERE md.sha256 = json_extract(messages.attachment, '$.blob')) END"
    };
}

fn message_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        local_id: row.get(0)?,
        id: row.get(1)?,
        room: row.get(2)?,
        seq: opt_u64_col(row, 3)?,
        sender: row.get(4)?,
        body: row.get(5)?,
        reply_to: row.get(6)?,
        created_at: row.get(7)?,
        edited_at: row.get(8)?,
        deleted: row.get(9)?,
        send_state: send_state(&row.get::<_, String>(10)?, row.get(11)?, row.get(12)?),
        outbox_entry_id: row.get(13)?,
        attachment: attachment_cols(row, 14)?,
    })
}

/// The attachment of a message row (columns `idx..idx + 3` of [`message_cols`]): its stored
/// JSON, its upload as a JSON array, its file in the media cache. A deleted message has none,
/// and a stored value this version cannot read is left out (and logged).
fn attachment_cols(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Attachment>> {
    let Some(json) = row.get::<_, Option<String>>(idx)? else {
        return Ok(None);
    };
    if row.get::<_, bool>(9)? {
        return Ok(None);
    }
    let wire: roam_proto::Attachment = match serde_json::from_str(&json) {
        Ok(w) => w,
        Err(err) => {
            tracing::warn!(error = %err, "a stored attachment cannot be read");
            return Ok(None);
        }
    };
    let upload = row
        .get::<_, Option<String>>(idx + 1)?
        .and_then(|j| {
            serde_json::from_str::<(u64, String, Option<String>, Option<String>)>(&j).ok()
        })
        .map(|(sent, state, code, message)| UploadProgress {
            local_id: row.get(0).unwrap_or_default(),
            room: row.get(2).unwrap_or_default(),
            sent_bytes: sent,
            total_bytes: wire.size,
            state: match send_state(&state, code, message) {
                SendState::Failed { code, message } => UploadState::Failed { code, message },
                _ => UploadState::Uploading,
            },
        });
    let local_path = row.get::<_, Option<String>>(idx + 2)?;
    Ok(Some(crate::model::attachment_from_wire(
        wire, local_path, upload,
    )))
}

/// The id of the newest edit or delete of a message still in the outbox (pending or failed)
/// that was written after position `after` (`None`: any).
pub(crate) fn queued_change(
    conn: &Connection,
    local_id: &str,
    after: Option<i64>,
) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT id FROM outbox WHERE target = ?1 AND pos > ?2 ORDER BY pos DESC LIMIT 1",
        )?
        .query_row(params![local_id, after.unwrap_or(i64::MIN)], |r| r.get(0))
        .optional()?)
}

/// A page of a room's messages, oldest first: the newest `limit` confirmed messages below
/// `before_seq`, and, on the newest page (`before_seq == None`), the local unconfirmed ones after
/// them in the order they were written.
pub(crate) fn messages(
    conn: &Connection,
    room: &str,
    before_seq: Option<u64>,
    limit: u32,
) -> Result<Vec<Message>> {
    let limit = limit as usize;
    let mut out: Vec<Message> = Vec::new();
    let mut pending: Vec<Message> = Vec::new();
    if before_seq.is_none() {
        let mut stmt = conn.prepare_cached(concat!(
            "SELECT ",
            message_cols!(),
            " FROM messages WHERE room = ?1 AND seq IS NULL ORDER BY local_order"
        ))?;
        pending = stmt
            .query_map([room], message_row)?
            .collect::<rusqlite::Result<_>>()?;
        if pending.len() > limit {
            pending.drain(..pending.len() - limit);
        }
    }
    let confirmed_limit = limit - pending.len();
    if confirmed_limit > 0 {
        let before = before_seq.map_or(i64::MAX, |s| i64::try_from(s).unwrap_or(i64::MAX));
        let mut stmt = conn.prepare_cached(concat!(
            "SELECT ",
            message_cols!(),
            " FROM messages WHERE room = ?1 AND seq IS NOT NULL AND seq < ?2 \
             ORDER BY seq DESC LIMIT ?3"
        ))?;
        out = stmt
            .query_map(params![room, before, confirmed_limit as i64], message_row)?
            .collect::<rusqlite::Result<_>>()?;
        out.reverse();
    }
    out.extend(pending);
    Ok(out)
}

/// A room's messages from `floor` up, then its unconfirmed ones in the order they were written,
/// in one statement (one snapshot). The order is that of [`messages`].
pub(crate) fn messages_from(conn: &Connection, room: &str, floor: i64) -> Result<Vec<Message>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        message_cols!(),
        " FROM messages WHERE room = ?1 AND (seq IS NULL OR seq >= ?2) \
         ORDER BY seq IS NULL, seq, local_order"
    ))?;
    let rows = stmt.query_map(params![room, floor], message_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The newest local message of a room not yet confirmed and not deleted.
pub(crate) fn newest_unconfirmed(conn: &Connection, room: &str) -> Result<Option<Message>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        message_cols!(),
        " FROM messages WHERE room = ?1 AND seq IS NULL AND deleted = 0 \
         ORDER BY local_order DESC LIMIT 1"
    ))?;
    Ok(stmt.query_row([room], message_row).optional()?)
}

/// The confirmed message of a room with the highest seq that is not deleted.
pub(crate) fn newest_confirmed(conn: &Connection, room: &str) -> Result<Option<Message>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        message_cols!(),
        " FROM messages WHERE room = ?1 AND seq IS NOT NULL AND deleted = 0 \
         ORDER BY seq DESC LIMIT 1"
    ))?;
    Ok(stmt.query_row([room], message_row).optional()?)
}

/// The room's read marker (0: nothing read).
pub(crate) fn read_marker(conn: &Connection, room: &str) -> Result<u64> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT seq FROM read_markers WHERE room = ?1")?
        .query_row([room], |r| r.get(0))
        .optional()?;
    Ok(v.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
}

pub(crate) fn message(conn: &Connection, local_id: &str) -> Result<Option<Message>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        message_cols!(),
        " FROM messages WHERE local_id = ?1"
    ))?;
    Ok(stmt.query_row([local_id], message_row).optional()?)
}

pub(crate) fn message_by_server_id(conn: &Connection, id: &str) -> Result<Option<Message>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        message_cols!(),
        " FROM messages WHERE server_id = ?1"
    ))?;
    Ok(stmt.query_row([id], message_row).optional()?)
}

/// A message by the id the app holds: its local id, or failing that its server id.
pub(crate) fn message_by_any_id(conn: &Connection, id: &str) -> Result<Option<Message>> {
    match message(conn, id)? {
        Some(m) => Ok(Some(m)),
        None => message_by_server_id(conn, id),
    }
}

// ---------------------------------------------------------------------------------------------
// Documents

macro_rules! document_cols {
    () => {
        "room, doc, version, content, updated_by, updated_at, send_state, failure_code, failure, \
         conflict"
    };
}

fn document_row(row: &Row<'_>) -> rusqlite::Result<Document> {
    let conflict: Option<String> = row.get(9)?;
    Ok(Document {
        room: row.get(0)?,
        doc: row.get(1)?,
        version: u64_col(row, 2)?,
        content: row.get(3)?,
        updated_by: row.get(4)?,
        updated_at: row.get(5)?,
        send_state: send_state(&row.get::<_, String>(6)?, row.get(7)?, row.get(8)?),
        conflict: conflict.and_then(|c| serde_json::from_str::<DocumentVersion>(&c).ok()),
    })
}

pub(crate) fn document(conn: &Connection, room: &str, doc: &str) -> Result<Option<Document>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        document_cols!(),
        " FROM documents WHERE room = ?1 AND doc = ?2"
    ))?;
    Ok(stmt.query_row([room, doc], document_row).optional()?)
}

pub(crate) fn documents(conn: &Connection, room: &str) -> Result<Vec<Document>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        document_cols!(),
        " FROM documents WHERE room = ?1 ORDER BY doc"
    ))?;
    let rows = stmt.query_map([room], document_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

// ---------------------------------------------------------------------------------------------
// Notifications, presence, small values

fn notification_row(row: &Row<'_>) -> rusqlite::Result<NotificationInfo> {
    Ok(NotificationInfo {
        id: row.get(0)?,
        seq: u64_col(row, 1)?,
        kind: row.get(2)?,
        room: row.get(3)?,
        actor: row.get(4)?,
        data_json: row.get(5)?,
        created_at: row.get(6)?,
        read: row.get(7)?,
    })
}

/// Notifications with `seq > after`, oldest first.
pub(crate) fn notifications(
    conn: &Connection,
    after: u64,
    unread_only: bool,
    limit: u32,
) -> Result<Vec<NotificationInfo>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, seq, kind, room, actor, data, created_at, read FROM notifications \
         WHERE seq > ?1 AND (?2 = 0 OR read = 0) ORDER BY seq LIMIT ?3",
    )?;
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![after, unread_only, limit], notification_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Ids among `ids` that are stored and unread.
pub(crate) fn unread_among(conn: &Connection, ids: &[String]) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT read FROM notifications WHERE id = ?1")?;
    let mut out = Vec::new();
    for id in ids {
        let read: Option<bool> = stmt.query_row([id], |r| r.get(0)).optional()?;
        if read == Some(false) {
            out.push(id.clone());
        }
    }
    Ok(out)
}

/// The room of an invitation, if its `invited` notification is stored.
pub(crate) fn invitation_room(conn: &Connection, invitation: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT COALESCE(json_extract(data, '$.room'), room) FROM notifications \
             WHERE kind = 'invited' AND json_extract(data, '$.id') = ?1 LIMIT 1",
            [invitation],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()?
        .flatten())
}

pub(crate) fn presence(conn: &Connection, user: &str) -> Result<Option<Presence>> {
    Ok(conn
        .query_row(
            "SELECT user, status, last_seen, devices FROM presence WHERE user = ?1",
            [user],
            |row| {
                let status: String = row.get(1)?;
                Ok(Presence {
                    user: row.get(0)?,
                    status: PresenceStatus::parse(&status).unwrap_or(PresenceStatus::Offline),
                    last_seen: row.get(2)?,
                    devices: row.get(3)?,
                })
            },
        )
        .optional()?)
}

pub(crate) fn kv(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT value FROM kv WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

/// The keys of `kv` that start with `prefix`, without it.
pub(crate) fn kv_keys_after(conn: &Connection, prefix: &str) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare_cached("SELECT key FROM kv WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key")?;
    let keys = stmt
        .query_map([prefix], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(keys
        .into_iter()
        .filter_map(|k| k.strip_prefix(prefix).map(str::to_owned))
        .collect())
}

pub(crate) fn kv_u64(conn: &Connection, key: &str) -> Result<u64> {
    Ok(kv(conn, key)?.and_then(|v| v.parse().ok()).unwrap_or(0))
}

pub(crate) fn etag(conn: &Connection, path: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT etag FROM http_etags WHERE path = ?1", [path], |r| {
            r.get(0)
        })
        .optional()?)
}

// ---------------------------------------------------------------------------------------------
// Outbox

/// An outbox row as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredEntry {
    pub pos: i64,
    pub id: String,
    pub queue: String,
    pub mutation: Mutation,
    pub target: Option<String>,
    pub undo: Option<String>,
    pub state: SendState,
    pub attempts: u32,
    pub created_at: i64,
}

macro_rules! outbox_cols {
    () => {
        "pos, id, queue, mutation, target, undo, state, error_code, error, attempts, created_at"
    };
}

fn outbox_row(row: &Row<'_>) -> rusqlite::Result<(StoredEntry, String)> {
    let mutation_json: String = row.get(3)?;
    let mutation = serde_json::from_str(&mutation_json).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok((
        StoredEntry {
            pos: row.get(0)?,
            id: row.get(1)?,
            queue: row.get(2)?,
            mutation,
            target: row.get(4)?,
            undo: row.get(5)?,
            state: send_state(&row.get::<_, String>(6)?, row.get(7)?, row.get(8)?),
            attempts: row.get(9)?,
            created_at: row.get(10)?,
        },
        mutation_json,
    ))
}

/// Pending entries in queue order (to load the scheduler).
pub(crate) fn pending_entries(conn: &Connection) -> Result<Vec<StoredEntry>> {
    let mut stmt = conn.prepare(concat!(
        "SELECT ",
        outbox_cols!(),
        " FROM outbox WHERE state = 'pending' ORDER BY pos"
    ))?;
    let rows = stmt.query_map([], outbox_row)?;
    Ok(rows
        .map(|r| r.map(|(e, _)| e))
        .collect::<rusqlite::Result<_>>()?)
}

/// An entry by id, for the app's `retry` and `discard` (the outbox has no index on `id`: the
/// core itself finds entries by position, so this reads the outbox through).
pub(crate) fn outbox_entry(conn: &Connection, id: &str) -> Result<Option<StoredEntry>> {
    Ok(conn
        .prepare_cached(concat!(
            "SELECT ",
            outbox_cols!(),
            " FROM outbox WHERE id = ?1"
        ))?
        .query_row([id], outbox_row)
        .optional()?
        .map(|(e, _)| e))
}

/// Every entry, for the app. An entry this version cannot decode (written by a newer app) is
/// listed with the op `unknown` and its stored text.
pub(crate) fn outbox(conn: &Connection) -> Result<Vec<OutboxEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, queue, mutation, state, error_code, error, attempts, created_at \
         FROM outbox ORDER BY pos",
    )?;
    let rows = stmt.query_map([], |row| {
        let queue: String = row.get(1)?;
        let json: String = row.get(2)?;
        let op = serde_json::from_str::<Mutation>(&json)
            .map(|m| m.op().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        Ok(OutboxEntry {
            id: row.get(0)?,
            room: (!queue.is_empty()).then_some(queue),
            op,
            mutation_json: json,
            state: send_state(&row.get::<_, String>(3)?, row.get(4)?, row.get(5)?),
            attempts: row.get(6)?,
            created_at: row.get(7)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Pending entries whose mutation this version cannot decode: `(pos, id, why)`.
pub(crate) fn undecodable_pending(conn: &Connection) -> Result<Vec<(i64, String, String)>> {
    let mut stmt =
        conn.prepare("SELECT pos, id, mutation FROM outbox WHERE state = 'pending' ORDER BY pos")?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (pos, id, json) = row?;
        if let Err(err) = serde_json::from_str::<Mutation>(&json) {
            out.push((pos, id, err.to_string()));
        }
    }
    Ok(out)
}

/// The position of an entry by id, whether or not its mutation can be decoded.
pub(crate) fn entry_pos(conn: &Connection, id: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT pos FROM outbox WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

/// Depth, failed count and oldest pending age.
///
/// Apps poll this (so do the tests and benchmarks, every few milliseconds while thousands of
/// entries drain), so it decodes no rows: an entry is either pending or failed (an answered one
/// is deleted), the total is a b-tree count, the failed ones are counted in their partial index,
/// and the oldest pending entry is the first one in queue order.
pub(crate) fn outbox_figures(conn: &Connection, now_ms: i64) -> Result<OutboxFigures> {
    let (total, failed, oldest): (i64, i64, Option<i64>) = conn
        .prepare_cached(
            "SELECT (SELECT count(*) FROM outbox), \
             (SELECT count(*) FROM outbox WHERE state = 'failed'), \
             (SELECT created_at FROM outbox WHERE state = 'pending' ORDER BY pos LIMIT 1)",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let pending = total - failed;
    Ok(OutboxFigures {
        pending: u64::try_from(pending).unwrap_or(0),
        failed: u64::try_from(failed).unwrap_or(0),
        oldest_age_ms: oldest.map(|t| u64::try_from(now_ms.saturating_sub(t)).unwrap_or(0)),
    })
}

// ---------------------------------------------------------------------------------------------
// Attachments

/// An upload row (see `crate::upload`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredUpload {
    pub local_id: String,
    pub room: String,
    pub sha256: String,
    pub size: u64,
    pub mime: String,
    pub upload: Option<String>,
    pub sent: u64,
    pub state: SendState,
}

macro_rules! upload_cols {
    () => {
        "local_id, room, sha256, size, mime, upload, sent, state, error_code, error"
    };
}

fn upload_row(row: &Row<'_>) -> rusqlite::Result<StoredUpload> {
    Ok(StoredUpload {
        local_id: row.get(0)?,
        room: row.get(1)?,
        sha256: row.get(2)?,
        size: u64_col(row, 3)?,
        mime: row.get(4)?,
        upload: row.get(5)?,
        sent: u64_col(row, 6)?,
        state: send_state(&row.get::<_, String>(7)?, row.get(8)?, row.get(9)?),
    })
}

/// The upload of a message, if it has one still going or failed.
pub(crate) fn upload(conn: &Connection, local_id: &str) -> Result<Option<StoredUpload>> {
    Ok(conn
        .prepare_cached(concat!(
            "SELECT ",
            upload_cols!(),
            " FROM uploads WHERE local_id = ?1"
        ))?
        .query_row([local_id], upload_row)
        .optional()?)
}

/// The oldest upload still to do (not failed).
pub(crate) fn next_upload(conn: &Connection) -> Result<Option<StoredUpload>> {
    Ok(conn
        .prepare_cached(concat!(
            "SELECT ",
            upload_cols!(),
            " FROM uploads WHERE state = 'pending' ORDER BY created_at, local_id LIMIT 1"
        ))?
        .query_row([], upload_row)
        .optional()?)
}

/// The messages whose upload is still to do: their sends wait (at open).
pub(crate) fn pending_uploads(conn: &Connection) -> Result<std::collections::HashSet<String>> {
    let mut stmt = conn.prepare_cached("SELECT local_id FROM uploads WHERE state = 'pending'")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A file of the media cache: its path and size.
pub(crate) fn media_file(conn: &Connection, sha256: &str) -> Result<Option<(String, u64)>> {
    Ok(conn
        .prepare_cached("SELECT path, size FROM media WHERE sha256 = ?1")?
        .query_row([sha256], |r| Ok((r.get(0)?, u64_col(r, 1)?)))
        .optional()?)
}

/// The bytes the media cache holds.
pub(crate) fn media_bytes(conn: &Connection) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT COALESCE(sum(size), 0) FROM media")?
        .query_row([], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The files of the media cache that may be evicted, least recently used first: not `keep`,
/// and not the source of an upload (pending or failed).
pub(crate) fn media_evictable(conn: &Connection, keep: &str) -> Result<Vec<(String, String, u64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT sha256, path, size FROM media \
         WHERE sha256 != ?1 AND sha256 NOT IN (SELECT sha256 FROM uploads) \
         ORDER BY last_used, sha256",
    )?;
    let rows = stmt.query_map([keep], |r| Ok((r.get(0)?, r.get(1)?, u64_col(r, 2)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The stored attachment of a message, deleted or not (its blob's hash), by local id.
pub(crate) fn attachment_blob(conn: &Connection, local_id: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT json_extract(attachment, '$.blob') FROM messages \
             WHERE local_id = ?1 AND attachment IS NOT NULL",
        )?
        .query_row([local_id], |r| r.get(0))
        .optional()?
        .flatten())
}

/// Whether an upload other than `except`'s (pending or failed) has this blob as its source.
pub(crate) fn upload_of_blob(conn: &Connection, sha256: &str, except: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM uploads WHERE sha256 = ?1 AND local_id != ?2 LIMIT 1")?
        .query_row([sha256, except], |_| Ok(()))
        .optional()?
        .is_some())
}

// ---------------------------------------------------------------------------------------------
// Collaborative documents

/// A collaborative document as stored: its snapshot (v2, empty for none) and its log of
/// updates (v1) in order.
pub(crate) struct StoredCollab {
    pub snapshot: Vec<u8>,
    pub log: Vec<Vec<u8>>,
}

pub(crate) fn collab_doc(c: &Connection, room: &str, doc: &str) -> Result<StoredCollab> {
    let snapshot: Option<Vec<u8>> = c
        .prepare_cached("SELECT snapshot FROM collab_docs WHERE room = ?1 AND doc = ?2")?
        .query_row(params![room, doc], |r| r.get(0))
        .optional()?;
    let mut stmt = c.prepare_cached(
        "SELECT data FROM collab_updates WHERE room = ?1 AND doc = ?2 ORDER BY id",
    )?;
    let log = stmt
        .query_map(params![room, doc], |r| r.get::<_, Vec<u8>>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(StoredCollab {
        snapshot: snapshot.unwrap_or_default(),
        log,
    })
}

/// The id of a collaborative document's last log row (0 for none).
pub(crate) fn collab_last_update(c: &Connection, room: &str, doc: &str) -> Result<i64> {
    Ok(c.prepare_cached(
        "SELECT COALESCE(MAX(id), 0) FROM collab_updates WHERE room = ?1 AND doc = ?2",
    )?
    .query_row(params![room, doc], |r| r.get(0))?)
}

/// A collaborative document's stored size: snapshot bytes and log bytes.
pub(crate) fn collab_sizes(c: &Connection, room: &str, doc: &str) -> Result<(u64, u64)> {
    let row: Option<(i64, i64)> = c
        .prepare_cached(
            "SELECT LENGTH(snapshot), log_bytes FROM collab_docs WHERE room = ?1 AND doc = ?2",
        )?
        .query_row(params![room, doc], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (s, l) = row.unwrap_or((0, 0));
    Ok((u64::try_from(s).unwrap_or(0), u64::try_from(l).unwrap_or(0)))
}

/// The `collab.update` mutations of the outbox still pending or failed (unreadable rows are
/// skipped: they are reported by the outbox's load).
pub(crate) fn collab_queued(c: &Connection) -> Result<Vec<Mutation>> {
    let mut stmt = c.prepare_cached(
        "SELECT mutation FROM outbox WHERE op = 'collab.update' AND state IN ('pending', 'failed') \
         ORDER BY pos",
    )?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        if let Ok(m) = serde_json::from_str(&row?) {
            out.push(m);
        }
    }
    Ok(out)
}
