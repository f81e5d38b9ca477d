//! Writes. Every function takes the writer's `&Transaction`; the caller commits.

use rusqlite::{params, OptionalExtension, Transaction};

use super::reads;
use crate::error::Result;
use crate::model::{Document, DocumentVersion, Message, SendState};
use roam_proto::{
    Member, Message as WireMessage, Mutation, Notification, Presence, Room, RoomKind,
};

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn failure_parts(state: &SendState) -> (&'static str, Option<&str>, Option<&str>) {
    match state {
        SendState::Failed { code, message } => ("failed", Some(code), Some(message)),
        other => (other.as_str(), None, None),
    }
}

// ---------------------------------------------------------------------------------------------
// Rooms

/// Stores the server's view of a room, keeping the local flags (joined, subscribed, send state).
pub(crate) fn upsert_room(tx: &Transaction<'_>, room: &Room) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO rooms (name, kind, title, metadata, owner, created_by, created_at, updated_at, \
         head_seq, member_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT(name) DO UPDATE SET kind = excluded.kind, title = excluded.title, \
         metadata = excluded.metadata, owner = excluded.owner, created_by = excluded.created_by, \
         created_at = excluded.created_at, updated_at = excluded.updated_at, \
         head_seq = max(rooms.head_seq, excluded.head_seq), member_count = excluded.member_count",
    )?
    .execute(params![
        room.name,
        room.kind.as_str(),
        room.title,
        room.metadata.to_string(),
        room.owner,
        room.created_by,
        room.created_at,
        room.updated_at,
        i64_of(room.head_seq),
        i64_of(room.member_count),
    ])?;
    Ok(())
}

/// A room created locally, not yet confirmed.
pub(crate) fn insert_local_room(
    tx: &Transaction<'_>,
    name: &str,
    kind: RoomKind,
    title: &str,
    metadata: &str,
    owner: &str,
    now: i64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO rooms (name, kind, title, metadata, owner, created_by, created_at, updated_at, \
         member_count, joined, send_state) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?6, 1, 1, 'pending') \
         ON CONFLICT(name) DO UPDATE SET kind = excluded.kind, title = excluded.title, \
         metadata = excluded.metadata, owner = excluded.owner, joined = 1, send_state = 'pending', \
         failure_code = NULL, failure = NULL",
        params![name, kind.as_str(), title, metadata, owner, now],
    )?;
    Ok(())
}

/// Makes sure a row exists for the room (a placeholder until the server's data arrives).
pub(crate) fn ensure_room(tx: &Transaction<'_>, name: &str) -> Result<()> {
    tx.prepare_cached("INSERT OR IGNORE INTO rooms (name) VALUES (?1)")?
        .execute([name])?;
    Ok(())
}

/// Local edit of a room's fields.
pub(crate) fn update_room_fields(
    tx: &Transaction<'_>,
    name: &str,
    title: Option<&str>,
    kind: Option<RoomKind>,
    metadata: Option<&str>,
    now: i64,
) -> Result<()> {
    ensure_room(tx, name)?;
    tx.execute(
        "UPDATE rooms SET title = COALESCE(?2, title), kind = COALESCE(?3, kind), \
         metadata = COALESCE(?4, metadata), updated_at = ?5 WHERE name = ?1",
        params![name, title, kind.map(|k| k.as_str()), metadata, now],
    )?;
    Ok(())
}

pub(crate) fn set_room_state(tx: &Transaction<'_>, name: &str, state: &SendState) -> Result<()> {
    let (s, code, msg) = failure_parts(state);
    tx.prepare_cached(
        "UPDATE rooms SET send_state = ?2, failure_code = ?3, failure = ?4 WHERE name = ?1",
    )?
    .execute(params![name, s, code, msg])?;
    Ok(())
}

/// Sets the local user's membership flags; creates a placeholder row if needed.
pub(crate) fn set_room_flags(
    tx: &Transaction<'_>,
    name: &str,
    joined: Option<bool>,
    subscribed: Option<bool>,
) -> Result<()> {
    ensure_room(tx, name)?;
    tx.prepare_cached(
        "UPDATE rooms SET joined = COALESCE(?2, joined), subscribed = COALESCE(?3, subscribed) \
         WHERE name = ?1",
    )?
    .execute(params![name, joined, subscribed])?;
    Ok(())
}

pub(crate) fn set_head_seq(tx: &Transaction<'_>, name: &str, head: u64) -> Result<()> {
    tx.prepare_cached("UPDATE rooms SET head_seq = max(head_seq, ?2) WHERE name = ?1")?
        .execute(params![name, i64_of(head)])?;
    Ok(())
}

/// Restores a room row as it was (for discarding an update).
pub(crate) fn restore_room(tx: &Transaction<'_>, room: &crate::model::RoomInfo) -> Result<()> {
    tx.execute(
        "UPDATE rooms SET kind = ?2, title = ?3, metadata = ?4, updated_at = ?5, joined = ?6, \
         send_state = 'sent', failure_code = NULL, failure = NULL WHERE name = ?1",
        params![
            room.name,
            room.kind.as_str(),
            room.title,
            room.metadata_json,
            room.updated_at,
            room.joined
        ],
    )?;
    Ok(())
}

/// Forgets everything about a room.
pub(crate) fn delete_room(tx: &Transaction<'_>, name: &str) -> Result<()> {
    for sql in [
        "DELETE FROM rooms WHERE name = ?1",
        "DELETE FROM room_cursors WHERE room = ?1",
        "DELETE FROM members WHERE room = ?1",
        // Two halves so that each uses an index (the `seq` ones are only indexed by seq).
        "DELETE FROM messages WHERE room = ?1 AND seq IS NOT NULL AND send_state = 'sent'",
        "DELETE FROM messages WHERE room = ?1 AND seq IS NULL AND send_state = 'sent'",
        "DELETE FROM documents WHERE room = ?1 AND send_state = 'sent'",
    ] {
        tx.prepare_cached(sql)?.execute([name])?;
    }
    Ok(())
}

pub(crate) fn set_cursor(tx: &Transaction<'_>, room: &str, seq: u64) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO room_cursors (room, seq) VALUES (?1, ?2) \
         ON CONFLICT(room) DO UPDATE SET seq = excluded.seq",
    )?
    .execute(params![room, i64_of(seq)])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Members

pub(crate) fn upsert_member(tx: &Transaction<'_>, m: &Member) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO members (room, user, role, status, joined_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT(room, user) DO UPDATE SET role = excluded.role, status = excluded.status, \
         joined_at = excluded.joined_at",
    )?
    .execute(params![
        m.room,
        m.user,
        m.role.as_str(),
        m.status.as_str(),
        m.joined_at
    ])?;
    Ok(())
}

pub(crate) fn delete_member(tx: &Transaction<'_>, room: &str, user: &str) -> Result<()> {
    tx.prepare_cached("DELETE FROM members WHERE room = ?1 AND user = ?2")?
        .execute([room, user])?;
    Ok(())
}

/// Replaces the stored members of a room (after a REST listing).
pub(crate) fn replace_members(tx: &Transaction<'_>, room: &str, members: &[Member]) -> Result<()> {
    tx.execute("DELETE FROM members WHERE room = ?1", [room])?;
    for m in members {
        upsert_member(tx, m)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Messages

pub(crate) fn insert_local_message(
    tx: &Transaction<'_>,
    m: &Message,
    local_order: i64,
    attachment: Option<&str>,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO messages (local_id, room, sender, body, reply_to, created_at, send_state, \
         local_order, attachment) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8)",
    )?
    .execute(params![
        m.local_id,
        m.room,
        m.sender,
        m.body,
        m.reply_to,
        m.created_at,
        local_order,
        attachment
    ])?;
    Ok(())
}

/// What happened to a stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MessageChange {
    Added(Message),
    Updated(Message),
    /// A local message was confirmed (now sent, with its seq).
    Confirmed(Message),
    /// Not changed (an older copy, or a local change is pending on it).
    Unchanged,
}

/// Stores a message as the server sent it. A message with a local change pending keeps its
/// local body until that change is confirmed or dropped, and a copy older than the stored one
/// (edited earlier, or not deleted where the stored one is) changes nothing. A local message the
/// server now confirms (same id: sends carry the local id) is bound to it, see
/// [`attach_server_message`].
pub(crate) fn upsert_server_message(
    tx: &Transaction<'_>,
    m: &WireMessage,
) -> Result<MessageChange> {
    let existing = match reads::message_by_server_id(tx, &m.id)? {
        Some(e) => Some(e),
        None => reads::message(tx, &m.id)?,
    };
    match existing {
        Some(existing) if existing.id.is_none() => {
            // Our own message, confirmed by its event before the ack.
            Ok(
                match attach_server_message(tx, &existing.local_id, m, None)? {
                    Some((row, true)) => MessageChange::Confirmed(row),
                    _ => MessageChange::Unchanged,
                },
            )
        }
        Some(existing) => {
            if existing.send_state == SendState::Pending {
                tx.prepare_cached("UPDATE messages SET seq = ?2 WHERE local_id = ?1")?
                    .execute(params![existing.local_id, i64_of(m.seq)])?;
                return Ok(MessageChange::Unchanged);
            }
            if existing.seq == Some(m.seq)
                && existing.body == m.body
                && existing.edited_at == m.edited_at
                && existing.deleted == m.deleted
            {
                // Our own ack already stored exactly this (its event came after it).
                return Ok(MessageChange::Unchanged);
            }
            if (existing.deleted && !m.deleted) || m.edited_at < existing.edited_at {
                // An older copy than the stored one: the event of an edit whose answer, and
                // the answer to a later edit, were stored before it.
                return Ok(MessageChange::Unchanged);
            }
            tx.prepare_cached(
                "UPDATE messages SET seq = ?2, body = ?3, edited_at = ?4, deleted = ?5, \
                 created_at = ?6, reply_to = ?7, attachment = ?8 WHERE local_id = ?1",
            )?
            .execute(params![
                existing.local_id,
                i64_of(m.seq),
                m.body,
                m.edited_at,
                m.deleted,
                m.created_at,
                m.reply_to,
                attachment_json(m)?
            ])?;
            let row = reads::message(tx, &existing.local_id)?.unwrap_or(existing);
            Ok(MessageChange::Updated(row))
        }
        None => {
            tx.prepare_cached(
                "INSERT INTO messages (local_id, server_id, room, seq, sender, body, reply_to, \
                 created_at, edited_at, deleted, send_state, attachment) \
                 VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'sent', ?10)",
            )?
            .execute(params![
                m.id,
                m.room,
                i64_of(m.seq),
                m.sender,
                m.body,
                m.reply_to,
                m.created_at,
                m.edited_at,
                m.deleted,
                attachment_json(m)?
            ])?;
            Ok(reads::message(tx, &m.id)?
                .map(MessageChange::Added)
                .unwrap_or(MessageChange::Unchanged))
        }
    }
}

/// Binds the local message `local_id` to the server's copy `m` (the answer to the outbox entry
/// at `answered`, or with `None` the message's `message_created` event), marking it sent. The
/// message never shows an older text again:
///
/// - while an edit or delete of the message written after the answered entry is still in the
///   outbox, only the server id, `seq` and time are taken; the text and the send state stay
///   those of that change;
/// - once the message is bound and sent, an answer changes nothing: the stored copy is the
///   answer to the newest change, and answers may arrive out of order.
///
/// Returns the row and whether it was not already bound (and sent), or `None` if the row is
/// gone.
pub(crate) fn attach_server_message(
    tx: &Transaction<'_>,
    local_id: &str,
    m: &WireMessage,
    answered: Option<i64>,
) -> Result<Option<(Message, bool)>> {
    let Some(before) = reads::message(tx, local_id)? else {
        return Ok(None);
    };
    let later_change = reads::queued_change(tx, local_id, answered)?.is_some();
    let bound = before.id.as_deref() == Some(m.id.as_str()) && before.seq == Some(m.seq);
    if bound && !later_change && before.send_state == SendState::Sent {
        return Ok(Some((before, false)));
    }
    let changed = !bound || (!later_change && before.send_state != SendState::Sent);
    // A message sent from here carries its local id as its server id (client-chosen ids), and
    // a copy stored from the server has `local_id = server_id`, so with `m.id == local_id` no
    // other row can hold that server id. Otherwise look for one stored separately earlier.
    if m.id != local_id {
        if let Some(dup) = reads::message_by_server_id(tx, &m.id)? {
            if dup.local_id != local_id {
                tx.execute("DELETE FROM messages WHERE local_id = ?1", [&dup.local_id])?;
            }
        }
    }
    if later_change {
        tx.prepare_cached(
            "UPDATE messages SET server_id = ?2, seq = ?3, created_at = ?4 WHERE local_id = ?1",
        )?
        .execute(params![local_id, m.id, i64_of(m.seq), m.created_at])?;
        let row = Message {
            id: Some(m.id.clone()),
            seq: Some(m.seq),
            created_at: m.created_at,
            ..before
        };
        return Ok(Some((row, changed)));
    }
    tx.prepare_cached(
        "UPDATE messages SET server_id = ?2, seq = ?3, body = ?4, edited_at = ?5, deleted = ?6, \
         created_at = ?7, send_state = 'sent', failure_code = NULL, failure = NULL, \
         attachment = CASE WHEN ?6 THEN NULL ELSE COALESCE(?8, attachment) END \
         WHERE local_id = ?1",
    )?
    .execute(params![
        local_id,
        m.id,
        i64_of(m.seq),
        m.body,
        m.edited_at,
        m.deleted,
        m.created_at,
        attachment_json(m)?
    ])?;
    // The row as the UPDATE above left it (no need to read it back, but for the attachment's
    // local state, which only a read joins in).
    let attachment = if m.deleted {
        None
    } else {
        reads::message(tx, local_id)?.and_then(|r| r.attachment)
    };
    let row = Message {
        attachment,
        id: Some(m.id.clone()),
        seq: Some(m.seq),
        body: m.body.clone(),
        edited_at: m.edited_at,
        deleted: m.deleted,
        created_at: m.created_at,
        send_state: SendState::Sent,
        outbox_entry_id: None,
        ..before
    };
    Ok(Some((row, changed)))
}

pub(crate) fn set_message_state(
    tx: &Transaction<'_>,
    local_id: &str,
    state: &SendState,
) -> Result<bool> {
    let (s, code, msg) = failure_parts(state);
    let n = tx
        .prepare_cached(
            "UPDATE messages SET send_state = ?2, failure_code = ?3, failure = ?4 WHERE local_id = ?1",
        )?
        .execute(params![local_id, s, code, msg])?;
    Ok(n > 0)
}

/// Applies a local edit or delete optimistically.
pub(crate) fn set_message_content(
    tx: &Transaction<'_>,
    local_id: &str,
    body: &str,
    edited_at: Option<i64>,
    deleted: bool,
    state: &SendState,
) -> Result<()> {
    let (s, code, msg) = failure_parts(state);
    tx.execute(
        "UPDATE messages SET body = ?2, edited_at = ?3, deleted = ?4, send_state = ?5, \
         failure_code = ?6, failure = ?7 WHERE local_id = ?1",
        params![local_id, body, edited_at, deleted, s, code, msg],
    )?;
    Ok(())
}

/// The attachment of a server copy as stored (JSON), `None` for none.
fn attachment_json(m: &WireMessage) -> Result<Option<String>> {
    Ok(m.attachment
        .as_ref()
        .map(serde_json::to_string)
        .transpose()?)
}

pub(crate) fn delete_message(tx: &Transaction<'_>, local_id: &str) -> Result<()> {
    tx.execute("DELETE FROM messages WHERE local_id = ?1", [local_id])?;
    Ok(())
}

/// Drops a room's confirmed messages (after a `reset`); local unconfirmed ones stay.
pub(crate) fn drop_confirmed_messages(tx: &Transaction<'_>, room: &str) -> Result<usize> {
    Ok(tx.execute(
        "DELETE FROM messages WHERE room = ?1 AND seq IS NOT NULL AND send_state = 'sent'",
        [room],
    )?)
}

// ---------------------------------------------------------------------------------------------
// Documents

pub(crate) fn put_local_document(tx: &Transaction<'_>, d: &Document) -> Result<()> {
    tx.execute(
        "INSERT INTO documents (room, doc, version, content, updated_by, updated_at, send_state) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending') \
         ON CONFLICT(room, doc) DO UPDATE SET version = excluded.version, \
         content = excluded.content, updated_by = excluded.updated_by, \
         updated_at = excluded.updated_at, send_state = 'pending', failure_code = NULL, \
         failure = NULL, conflict = NULL",
        params![
            d.room,
            d.doc,
            i64_of(d.version),
            d.content,
            d.updated_by,
            d.updated_at
        ],
    )?;
    Ok(())
}

/// Stores the server's document. Unless `force`, a row with a local edit pending is left alone
/// (its ack or conflict settles it), and an older version never replaces a newer one.
pub(crate) fn upsert_server_document(
    tx: &Transaction<'_>,
    d: &DocumentVersion,
    force: bool,
) -> Result<Option<Document>> {
    if !force {
        if let Some(existing) = reads::document(tx, &d.room, &d.doc)? {
            if existing.send_state == SendState::Pending
                || (existing.send_state == SendState::Sent && existing.version > d.version)
            {
                return Ok(None);
            }
        }
    }
    tx.prepare_cached(
        "INSERT INTO documents (room, doc, version, content, updated_by, updated_at, send_state) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'sent') \
         ON CONFLICT(room, doc) DO UPDATE SET version = excluded.version, \
         content = excluded.content, updated_by = excluded.updated_by, \
         updated_at = excluded.updated_at, send_state = 'sent', failure_code = NULL, \
         failure = NULL, conflict = NULL",
    )?
    .execute(params![
        d.room,
        d.doc,
        i64_of(d.version),
        d.content,
        d.updated_by,
        d.updated_at
    ])?;
    reads::document(tx, &d.room, &d.doc)
}

pub(crate) fn set_document_failed(
    tx: &Transaction<'_>,
    room: &str,
    doc: &str,
    state: &SendState,
    conflict: Option<&DocumentVersion>,
) -> Result<()> {
    let (s, code, msg) = failure_parts(state);
    let conflict = conflict.map(serde_json::to_string).transpose()?;
    tx.execute(
        "UPDATE documents SET send_state = ?3, failure_code = ?4, failure = ?5, conflict = ?6 \
         WHERE room = ?1 AND doc = ?2",
        params![room, doc, s, code, msg, conflict],
    )?;
    Ok(())
}

pub(crate) fn delete_document(tx: &Transaction<'_>, room: &str, doc: &str) -> Result<()> {
    tx.execute(
        "DELETE FROM documents WHERE room = ?1 AND doc = ?2",
        [room, doc],
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Notifications, presence, small values

/// Stores a notification; returns false when it was already stored.
pub(crate) fn upsert_notification(tx: &Transaction<'_>, n: &Notification) -> Result<bool> {
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO notifications (id, seq, kind, room, actor, data, created_at, read) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            n.id,
            i64_of(n.seq),
            n.kind,
            n.room,
            n.actor,
            n.data.to_string(),
            n.created_at,
            n.read
        ])?;
    Ok(inserted > 0)
}

pub(crate) fn set_notifications_read(
    tx: &Transaction<'_>,
    ids: &[String],
    read: bool,
) -> Result<()> {
    let mut stmt = tx.prepare_cached("UPDATE notifications SET read = ?2 WHERE id = ?1")?;
    for id in ids {
        stmt.execute(params![id, read])?;
    }
    Ok(())
}

/// Marks read the unread `mentioned` notifications of a room whose message seq is at most
/// `seq` (as the server does on `room.mark_read`); returns their ids.
pub(crate) fn read_mentions_up_to(
    tx: &Transaction<'_>,
    room: &str,
    seq: u64,
) -> Result<Vec<String>> {
    let ids: Vec<String> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id FROM notifications WHERE read = 0 AND kind = 'mentioned' AND room = ?1 \
             AND json_extract(data, '$.seq') <= ?2",
        )?;
        let rows = stmt.query_map(params![room, i64_of(seq)], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    set_notifications_read(tx, &ids, true)?;
    Ok(ids)
}

/// Marks every stored notification read; returns the ids that were unread.
pub(crate) fn mark_all_read(tx: &Transaction<'_>) -> Result<Vec<String>> {
    let ids: Vec<String> = {
        let mut stmt = tx.prepare("SELECT id FROM notifications WHERE read = 0")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    tx.execute("UPDATE notifications SET read = 1 WHERE read = 0", [])?;
    Ok(ids)
}

pub(crate) fn upsert_presence(tx: &Transaction<'_>, p: &Presence) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO presence (user, status, last_seen, devices) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT(user) DO UPDATE SET status = excluded.status, \
         last_seen = COALESCE(excluded.last_seen, presence.last_seen), devices = excluded.devices",
    )?
    .execute(params![p.user, p.status.as_str(), p.last_seen, p.devices])?;
    Ok(())
}

pub(crate) fn set_kv(tx: &Transaction<'_>, key: &str, value: &str) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])?;
    Ok(())
}

/// Deletes the failed `document.put` entries of one document.
pub(crate) fn delete_failed_document_puts(
    tx: &Transaction<'_>,
    room: &str,
    doc: &str,
) -> Result<()> {
    tx.prepare_cached(
        "DELETE FROM outbox WHERE state = 'failed' AND op = 'document.put' AND queue = ?1 \
         AND json_extract(mutation, '$.args.doc') = ?2",
    )?
    .execute([room, doc])?;
    Ok(())
}

pub(crate) fn delete_kv(tx: &Transaction<'_>, key: &str) -> Result<()> {
    tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?
        .execute([key])?;
    Ok(())
}

/// Moves the room's read marker to `seq` if that is further; true when it moved.
pub(crate) fn advance_read_marker(
    tx: &Transaction<'_>,
    room: &str,
    seq: u64,
    updated_at: i64,
) -> Result<bool> {
    let changed = tx
        .prepare_cached(
            "INSERT INTO read_markers (room, seq, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT(room) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at \
             WHERE excluded.seq > read_markers.seq",
        )?
        .execute(params![room, i64_of(seq), updated_at])?;
    Ok(changed > 0)
}

pub(crate) fn set_etag(tx: &Transaction<'_>, path: &str, etag: &str) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO http_etags (path, etag) VALUES (?1, ?2) \
         ON CONFLICT(path) DO UPDATE SET etag = excluded.etag",
    )?
    .execute([path, etag])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Outbox

/// Appends an entry at `pos` (from [`super::Db::next_pos`]), with its undo record.
#[allow(clippy::too_many_arguments)]
pub(crate) fn insert_entry(
    tx: &Transaction<'_>,
    pos: i64,
    id: &str,
    queue: &str,
    mutation: &Mutation,
    target: Option<&str>,
    undo: Option<&str>,
    now: i64,
) -> Result<()> {
    let json = serde_json::to_string(mutation)?;
    tx.prepare_cached(
        "INSERT INTO outbox (pos, id, queue, op, mutation, target, undo, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        pos,
        id,
        queue,
        mutation.op(),
        json,
        target,
        undo,
        now
    ])?;
    Ok(())
}

// Entries are found by position (the rowid) and id together: the rowid is the lookup, and the
// id makes sure a stale position can never reach another entry.

/// Deletes an entry; false when it was not there.
pub(crate) fn delete_entry(tx: &Transaction<'_>, pos: i64, id: &str) -> Result<bool> {
    Ok(tx
        .prepare_cached("DELETE FROM outbox WHERE pos = ?1 AND id = ?2")?
        .execute(params![pos, id])?
        > 0)
}

/// Replaces the mutation an entry will send (an edit folded into a queued send).
pub(crate) fn set_entry_mutation(
    tx: &Transaction<'_>,
    pos: i64,
    id: &str,
    mutation: &Mutation,
) -> Result<()> {
    let json = serde_json::to_string(mutation)?;
    tx.prepare_cached("UPDATE outbox SET mutation = ?3 WHERE pos = ?1 AND id = ?2")?
        .execute(params![pos, id, json])?;
    Ok(())
}

pub(crate) fn set_entry_state(
    tx: &Transaction<'_>,
    pos: i64,
    id: &str,
    state: &SendState,
) -> Result<()> {
    let (s, code, msg) = failure_parts(state);
    tx.prepare_cached(
        "UPDATE outbox SET state = ?3, error_code = ?4, error = ?5 WHERE pos = ?1 AND id = ?2",
    )?
    .execute(params![pos, id, s, code, msg])?;
    Ok(())
}

pub(crate) fn bump_attempts(tx: &Transaction<'_>, pos: i64, id: &str) -> Result<()> {
    tx.prepare_cached("UPDATE outbox SET attempts = attempts + 1 WHERE pos = ?1 AND id = ?2")?
        .execute(params![pos, id])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Attachments

/// Queues the upload of a message's file (see `crate::upload`).
pub(crate) fn insert_upload(tx: &Transaction<'_>, u: &reads::StoredUpload, now: i64) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO uploads (local_id, room, sha256, size, mime, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        u.local_id,
        u.room,
        u.sha256,
        i64_of(u.size),
        u.mime,
        now
    ])?;
    Ok(())
}

/// Records the server's upload id and how many bytes it holds. False when the upload is gone
/// (cancelled meanwhile).
pub(crate) fn set_upload_progress(
    tx: &Transaction<'_>,
    local_id: &str,
    upload: Option<&str>,
    sent: u64,
) -> Result<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE uploads SET upload = ?2, sent = ?3 WHERE local_id = ?1 AND state = 'pending'",
        )?
        .execute(params![local_id, upload, i64_of(sent)])?;
    Ok(n > 0)
}

/// Marks an upload failed (`Failed`) or to do again (`Pending`, forgetting a failed upload
/// id when `restart`). False when there is no such upload.
pub(crate) fn set_upload_state(
    tx: &Transaction<'_>,
    local_id: &str,
    state: &SendState,
    restart: bool,
) -> Result<bool> {
    let (s, code, msg) = failure_parts(state);
    let n = tx
        .prepare_cached(
            "UPDATE uploads SET state = ?2, error_code = ?3, error = ?4, \
             upload = CASE WHEN ?5 THEN NULL ELSE upload END, \
             sent = CASE WHEN ?5 THEN 0 ELSE sent END WHERE local_id = ?1",
        )?
        .execute(params![local_id, s, code, msg, restart])?;
    Ok(n > 0)
}

/// Removes the upload of a message (done, or cancelled). False when there was none.
pub(crate) fn delete_upload(tx: &Transaction<'_>, local_id: &str) -> Result<bool> {
    let n = tx
        .prepare_cached("DELETE FROM uploads WHERE local_id = ?1")?
        .execute([local_id])?;
    Ok(n > 0)
}

/// Records a file of the media cache (or marks it used now).
pub(crate) fn put_media(
    tx: &Transaction<'_>,
    sha256: &str,
    path: &str,
    size: u64,
    now: i64,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO media (sha256, path, size, last_used) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (sha256) DO UPDATE SET path = ?2, size = ?3, last_used = ?4",
    )?
    .execute(params![sha256, path, i64_of(size), now])?;
    Ok(())
}

/// Marks a file of the media cache used now.
pub(crate) fn touch_media(tx: &Transaction<'_>, sha256: &str, now: i64) -> Result<()> {
    tx.prepare_cached("UPDATE media SET last_used = ?2 WHERE sha256 = ?1")?
        .execute(params![sha256, now])?;
    Ok(())
}

/// Forgets a file of the media cache: returns its path (to delete after the commit).
pub(crate) fn delete_media(tx: &Transaction<'_>, sha256: &str) -> Result<Option<String>> {
    Ok(tx
        .prepare_cached("DELETE FROM media WHERE sha256 = ?1 RETURNING path")?
        .query_row([sha256], |r| r.get(0))
        .optional()?)
}

/// Rewrites the paths of the media cache from directory `old` to `new` (the directory moved).
pub(crate) fn move_media(tx: &Transaction<'_>, old: &str, new: &str) -> Result<usize> {
    Ok(tx
        .prepare_cached(
            "UPDATE media SET path = ?2 || substr(path, length(?1) + 1) \
             WHERE substr(path, 1, length(?1)) = ?1",
        )?
        .execute(params![old, new])?)
}

// ---------------------------------------------------------------------------------------------
// Collaborative documents

/// Appends updates (v1) to a collaborative document's log, creating its row if needed. Returns
/// the bytes appended since its snapshot, these included.
pub(crate) fn append_collab_updates(
    tx: &Transaction<'_>,
    room: &str,
    doc: &str,
    updates: &[&[u8]],
) -> Result<u64> {
    let mut added: i64 = 0;
    {
        let mut insert =
            tx.prepare_cached("INSERT INTO collab_updates (room, doc, data) VALUES (?1, ?2, ?3)")?;
        for u in updates {
            insert.execute(params![room, doc, u])?;
            added += i64::try_from(u.len()).unwrap_or(i64::MAX);
        }
    }
    let total: i64 = tx
        .prepare_cached(
            "INSERT INTO collab_docs (room, doc, snapshot, log_bytes) VALUES (?1, ?2, x'', ?3) \
             ON CONFLICT (room, doc) DO UPDATE SET log_bytes = log_bytes + excluded.log_bytes \
             RETURNING log_bytes",
        )?
        .query_row(params![room, doc, added], |r| r.get(0))?;
    Ok(u64::try_from(total).unwrap_or(0))
}

/// Replaces a collaborative document's snapshot (v2) and drops the log rows up to `upto` (the
/// rows the snapshot covers); rows appended after them stay.
pub(crate) fn compact_collab(
    tx: &Transaction<'_>,
    room: &str,
    doc: &str,
    snapshot: &[u8],
    upto: i64,
) -> Result<()> {
    tx.prepare_cached("DELETE FROM collab_updates WHERE room = ?1 AND doc = ?2 AND id <= ?3")?
        .execute(params![room, doc, upto])?;
    let left: i64 = tx
        .prepare_cached(
            "SELECT COALESCE(SUM(LENGTH(data)), 0) FROM collab_updates WHERE room = ?1 AND doc = ?2",
        )?
        .query_row(params![room, doc], |r| r.get(0))?;
    tx.prepare_cached(
        "INSERT INTO collab_docs (room, doc, snapshot, log_bytes) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (room, doc) DO UPDATE SET snapshot = excluded.snapshot, \
         log_bytes = excluded.log_bytes",
    )?
    .execute(params![room, doc, snapshot, left])?;
    Ok(())
}
