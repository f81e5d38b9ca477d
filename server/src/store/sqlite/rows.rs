//! Row mapping: SQL rows into protocol types, and the error conversion.
//!
//! Mapping closures return `rusqlite::Result` (that is what `query_map` wants); a column that
//! does not parse (an unknown enum name, broken JSON) becomes a conversion error, which reaches
//! callers as [`StoreError::Backend`]. Column lists live next to their mappers so the two cannot
//! drift apart.

use rusqlite::types::Type;
use rusqlite::{ffi, Row};
use serde_json::Value;

use roam_proto::{
    Document, EventBody, Invitation, InvitationStatus, Member, MemberStatus, Message, Notification,
    Role, Room, RoomEvent, RoomKind, User,
};

use crate::store::{StoreError, StoredResult};

impl From<rusqlite::Error> for StoreError {
    /// A UNIQUE or PRIMARY KEY violation means "exists already" (Conflict); anything else is a
    /// backend failure (other constraint violations are bugs: the store checks those itself).
    fn from(err: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(e, _) = &err {
            if e.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            {
                return StoreError::Conflict("already exists".into());
            }
        }
        StoreError::Backend(err.to_string())
    }
}

/// A `u64` cursor or count as an SQLite integer (saturating: `u64::MAX` means "no bound").
pub(super) fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn conversion(idx: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, what.into())
}

/// Parses a text column with one of the `parse` functions of the wire enums.
fn enum_col<T>(row: &Row<'_>, idx: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let s: String = row.get(idx)?;
    parse(&s).ok_or_else(|| conversion(idx, format!("unknown value {s:?}")))
}

/// Parses a JSON text column.
pub(super) fn json_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<Value> {
    let s: String = row.get(idx)?;
    serde_json::from_str(&s).map_err(|e| conversion(idx, e.to_string()))
}

/// JSON as stored text.
pub(super) fn json_text(v: &Value) -> String {
    v.to_string()
}

/// Columns of [`room`]: `r` is the rooms table; the member count is computed from `members`.
/// Column lists are macros so that `concat!` can build whole SQL strings as `const`s.
macro_rules! room_cols {
    () => {
        "r.name, r.kind, r.title, r.metadata, r.owner, r.created_by, \
     r.created_at, r.updated_at, \
     coalesce((SELECT max(e.seq) FROM events e WHERE e.room = r.name), 0), \
     (SELECT count(*) FROM members m WHERE m.room = r.name AND m.status = 'active')"
    };
}
pub(super) use room_cols;

pub(super) fn room(row: &Row<'_>) -> rusqlite::Result<Room> {
    Ok(Room {
        name: row.get(0)?,
        kind: enum_col(row, 1, RoomKind::parse)?,
        title: row.get(2)?,
        metadata: json_col(row, 3)?,
        owner: row.get(4)?,
        created_by: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
        head_seq: row.get(8)?,
        member_count: row.get(9)?,
    })
}

macro_rules! member_cols {
    () => {
        "room, user, role, status, joined_at"
    };
}
pub(super) use member_cols;

pub(super) fn member(row: &Row<'_>) -> rusqlite::Result<Member> {
    Ok(Member {
        room: row.get(0)?,
        user: row.get(1)?,
        role: enum_col(row, 2, Role::parse)?,
        status: enum_col(row, 3, MemberStatus::parse)?,
        joined_at: row.get(4)?,
    })
}

macro_rules! invitation_cols {
    () => {
        "id, room, invited_by, invitee, role, status, expires_at, created_at"
    };
}
pub(super) use invitation_cols;

/// The invitation with its status as stored; see [`effective`] for the status at a time.
pub(super) fn invitation(row: &Row<'_>) -> rusqlite::Result<Invitation> {
    Ok(Invitation {
        id: row.get(0)?,
        room: row.get(1)?,
        invited_by: row.get(2)?,
        invitee: row.get(3)?,
        role: enum_col(row, 4, Role::parse)?,
        status: enum_col(row, 5, InvitationStatus::parse)?,
        expires_at: row.get(6)?,
        created_at: row.get(7)?,
    })
}

/// A stored `pending` invitation reads `expired` once `now` is past `expires_at`.
pub(super) fn effective(mut inv: Invitation, now: i64) -> Invitation {
    if inv.status == InvitationStatus::Pending && now > inv.expires_at {
        inv.status = InvitationStatus::Expired;
    }
    inv
}

/// A message as it is now: its newest edit's data, else its creation's (both blanked once it is
/// deleted). Read from an unaliased `events` row of kind `message_created`; edits are few, and
/// their partial index holds nothing else.
macro_rules! message_cols {
    () => {
        "coalesce((SELECT x.data FROM events x WHERE x.message = events.message \
         AND x.kind = 'message_edited' ORDER BY x.seq DESC LIMIT 1), events.data)"
    };
}
pub(super) use message_cols;

pub(super) fn message(row: &Row<'_>) -> rusqlite::Result<Message> {
    let data = row.get_ref(0)?.as_str()?;
    serde_json::from_str(data).map_err(|e| conversion(0, e.to_string()))
}

/// Columns of [`document`]: `v` is document_versions.
macro_rules! document_cols {
    () => {
        "v.room, v.doc, v.version, v.content, v.updated_by, v.updated_at"
    };
}
pub(super) use document_cols;

pub(super) fn document(row: &Row<'_>) -> rusqlite::Result<Document> {
    Ok(Document {
        room: row.get(0)?,
        doc: row.get(1)?,
        version: row.get(2)?,
        content: row.get(3)?,
        updated_by: row.get(4)?,
        updated_at: row.get(5)?,
    })
}

macro_rules! event_cols {
    () => {
        "room, seq, at, actor, kind, data"
    };
}
pub(super) use event_cols;

/// Events are stored as `kind` plus the `data` JSON, exactly the wire's tagged form.
pub(super) fn event(row: &Row<'_>) -> rusqlite::Result<RoomEvent> {
    let kind: String = row.get(4)?;
    let data = json_col(row, 5)?;
    let body: EventBody = serde_json::from_value(serde_json::json!({ "kind": kind, "data": data }))
        .map_err(|e| conversion(5, e.to_string()))?;
    Ok(RoomEvent {
        room: row.get(0)?,
        seq: row.get(1)?,
        at: row.get(2)?,
        actor: row.get(3)?,
        body,
    })
}

macro_rules! notification_cols {
    () => {
        "seq, id, user, kind, room, actor, data, created_at, read"
    };
}
pub(super) use notification_cols;

pub(super) fn notification(row: &Row<'_>) -> rusqlite::Result<Notification> {
    Ok(Notification {
        seq: row.get(0)?,
        id: row.get(1)?,
        user: row.get(2)?,
        kind: row.get(3)?,
        room: row.get(4)?,
        actor: row.get(5)?,
        data: json_col(row, 6)?,
        created_at: row.get(7)?,
        read: row.get(8)?,
    })
}

macro_rules! user_cols {
    () => {
        "id, created_at, last_seen"
    };
}
pub(super) use user_cols;

pub(super) fn user(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        created_at: row.get(1)?,
        last_seen: row.get(2)?,
    })
}

macro_rules! idem_cols {
    () => {
        "op, fingerprint, result, created_at"
    };
}
pub(super) use idem_cols;

pub(super) fn stored_result(row: &Row<'_>) -> rusqlite::Result<StoredResult> {
    Ok(StoredResult {
        op: row.get(0)?,
        fingerprint: row.get(1)?,
        result: json_col(row, 2)?,
        created_at: row.get(3)?,
    })
}
