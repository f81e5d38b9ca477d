//! Row mapping: Postgres rows into protocol types. A column that does not convert (an unknown
//! enum name, broken JSON, a negative counter) is a [`StoreError::Backend`]. Column lists live
//! next to their mappers so the two cannot drift apart.

use serde_json::Value;
use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use roam_proto::{
    Document, EventBody, Invitation, InvitationStatus, Member, MemberStatus, Message, Notification,
    Role, Room, RoomEvent, RoomKind, User,
};

use crate::store::{StoreError, StoreResult, StoredResult};

/// A `u64` cursor or count as a bigint (saturating: `u64::MAX` means "no bound").
pub(super) fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A column, or `Backend` naming it.
pub(super) fn col<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> StoreResult<T> {
    row.try_get(idx)
        .map_err(|e| StoreError::Backend(format!("column {idx}: {e}")))
}

/// A bigint column that holds a counter (never negative).
pub(super) fn count(row: &Row, idx: usize) -> StoreResult<u64> {
    let n: i64 = col(row, idx)?;
    u64::try_from(n).map_err(|_| StoreError::Backend(format!("column {idx}: negative value {n}")))
}

fn opt_count(row: &Row, idx: usize) -> StoreResult<Option<u64>> {
    let n: Option<i64> = col(row, idx)?;
    n.map(|n| {
        u64::try_from(n).map_err(|_| StoreError::Backend(format!("column {idx}: negative {n}")))
    })
    .transpose()
}

/// The byte length of a text or bytea column (0 when NULL), for the page byte budget.
pub(super) fn text_len(row: &Row, idx: usize) -> usize {
    match row.try_get::<_, Option<&str>>(idx) {
        Ok(text) => text.map_or(0, str::len),
        Err(_) => row
            .try_get::<_, Option<&[u8]>>(idx)
            .ok()
            .flatten()
            .map_or(0, <[u8]>::len),
    }
}

/// A bytea column holding UTF-8 text (titles, bodies, contents: see the schema).
pub(super) fn utf8(row: &Row, idx: usize) -> StoreResult<String> {
    let bytes: Vec<u8> = col(row, idx)?;
    String::from_utf8(bytes).map_err(|e| StoreError::Backend(format!("column {idx}: {e}")))
}

fn enum_col<T>(row: &Row, idx: usize, parse: fn(&str) -> Option<T>) -> StoreResult<T> {
    let s: &str = col(row, idx)?;
    parse(s).ok_or_else(|| StoreError::Backend(format!("column {idx}: unknown value {s:?}")))
}

/// Parses a JSON text column.
pub(super) fn json_col(row: &Row, idx: usize) -> StoreResult<Value> {
    let s: &str = col(row, idx)?;
    serde_json::from_str(s).map_err(|e| StoreError::Backend(format!("column {idx}: {e}")))
}

/// Columns of [`room`]: `r` is the rooms table; the member count is computed from `members`.
macro_rules! room_cols {
    () => {
        "r.name, r.kind, r.title, r.metadata, r.owner, r.created_by, \
         r.created_at, r.updated_at, r.head_seq, \
         (SELECT count(*) FROM members m WHERE m.room = r.name AND m.status = 'active')"
    };
}
pub(super) use room_cols;

pub(super) fn room(row: &Row) -> StoreResult<Room> {
    Ok(Room {
        name: col(row, 0)?,
        kind: enum_col(row, 1, RoomKind::parse)?,
        title: utf8(row, 2)?,
        metadata: json_col(row, 3)?,
        owner: col(row, 4)?,
        created_by: col(row, 5)?,
        created_at: col(row, 6)?,
        updated_at: col(row, 7)?,
        head_seq: count(row, 8)?,
        member_count: count(row, 9)?,
    })
}

macro_rules! member_cols {
    () => {
        "room, user_id, role, status, joined_at"
    };
}
pub(super) use member_cols;

pub(super) fn member(row: &Row) -> StoreResult<Member> {
    Ok(Member {
        room: col(row, 0)?,
        user: col(row, 1)?,
        role: enum_col(row, 2, Role::parse)?,
        status: enum_col(row, 3, MemberStatus::parse)?,
        joined_at: col(row, 4)?,
    })
}

macro_rules! invitation_cols {
    () => {
        "id, room, invited_by, invitee, role, status, expires_at, created_at"
    };
}
pub(super) use invitation_cols;

/// The invitation with its status as stored; see [`effective`] for the status at a time.
pub(super) fn invitation(row: &Row) -> StoreResult<Invitation> {
    Ok(Invitation {
        id: col(row, 0)?,
        room: col(row, 1)?,
        invited_by: col(row, 2)?,
        invitee: col(row, 3)?,
        role: enum_col(row, 4, Role::parse)?,
        status: enum_col(row, 5, InvitationStatus::parse)?,
        expires_at: col(row, 6)?,
        created_at: col(row, 7)?,
    })
}

/// A stored `pending` invitation reads `expired` once `now` is past `expires_at`.
pub(super) fn effective(mut inv: Invitation, now: i64) -> Invitation {
    if inv.status == InvitationStatus::Pending && now > inv.expires_at {
        inv.status = InvitationStatus::Expired;
    }
    inv
}

macro_rules! message_cols {
    () => {
        "id, room, seq, sender, body, reply_to, created_at, edited_at, deleted, attachment"
    };
}
pub(super) use message_cols;

pub(super) fn message(row: &Row) -> StoreResult<Message> {
    Ok(Message {
        id: col(row, 0)?,
        room: col(row, 1)?,
        seq: count(row, 2)?,
        sender: col(row, 3)?,
        body: utf8(row, 4)?,
        reply_to: col(row, 5)?,
        created_at: col(row, 6)?,
        edited_at: col(row, 7)?,
        deleted: col(row, 8)?,
        attachment: col::<Option<&str>>(row, 9)?
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| StoreError::Backend(format!("column 9: {e}")))?,
    })
}

/// Columns of [`document`]: `v` is document_versions.
macro_rules! document_cols {
    () => {
        "v.room, v.doc, v.version, v.content, v.updated_by, v.updated_at"
    };
}
pub(super) use document_cols;

pub(super) fn document(row: &Row) -> StoreResult<Document> {
    Ok(Document {
        room: col(row, 0)?,
        doc: col(row, 1)?,
        version: count(row, 2)?,
        content: utf8(row, 3)?,
        updated_by: col(row, 4)?,
        updated_at: col(row, 5)?,
    })
}

macro_rules! event_cols {
    () => {
        "room, seq, at, actor, kind, data"
    };
}
pub(super) use event_cols;

/// Events are stored as `kind` plus the `data` JSON, exactly the wire's tagged form.
pub(super) fn event(row: &Row) -> StoreResult<RoomEvent> {
    let kind: &str = col(row, 4)?;
    let data = json_col(row, 5)?;
    let body: EventBody = serde_json::from_value(serde_json::json!({ "kind": kind, "data": data }))
        .map_err(|e| StoreError::Backend(format!("event data: {e}")))?;
    Ok(RoomEvent {
        room: col(row, 0)?,
        seq: count(row, 1)?,
        at: col(row, 2)?,
        actor: col(row, 3)?,
        body,
    })
}

macro_rules! notification_cols {
    () => {
        "seq, id, user_id, kind, room, actor, data, created_at, read"
    };
}
pub(super) use notification_cols;

pub(super) fn notification(row: &Row) -> StoreResult<Notification> {
    Ok(Notification {
        seq: count(row, 0)?,
        id: col(row, 1)?,
        user: col(row, 2)?,
        kind: col(row, 3)?,
        room: col(row, 4)?,
        actor: col(row, 5)?,
        data: json_col(row, 6)?,
        created_at: col(row, 7)?,
        read: col(row, 8)?,
    })
}

macro_rules! user_cols {
    () => {
        "id, created_at, last_seen"
    };
}
pub(super) use user_cols;

pub(super) fn user(row: &Row) -> StoreResult<User> {
    Ok(User {
        id: col(row, 0)?,
        created_at: col(row, 1)?,
        last_seen: col(row, 2)?,
    })
}

macro_rules! idem_cols {
    () => {
        "op, fingerprint, result, created_at"
    };
}
pub(super) use idem_cols;

pub(super) fn stored_result(row: &Row) -> StoreResult<StoredResult> {
    Ok(StoredResult {
        op: col(row, 0)?,
        fingerprint: col(row, 1)?,
        result: json_col(row, 2)?,
        created_at: col(row, 3)?,
    })
}

/// `(seq, at)` pairs, for event compaction.
pub(super) fn seq_at(row: &Row) -> StoreResult<(u64, i64)> {
    Ok((count(row, 0)?, col(row, 1)?))
}

/// An optional counter column (document_versions.seq).
pub(super) fn opt_seq(row: &Row, idx: usize) -> StoreResult<Option<u64>> {
    opt_count(row, idx)
}
