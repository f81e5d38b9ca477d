//! Reads: plain queries on a `&Connection` (a pooled reader, or the writer's transaction when a
//! write needs the current state).
//!
//! The SQL of every query is a `const` built with `concat!`, so that the query-plan test in
//! `tests.rs` explains exactly the text the store runs. Every value is a bound parameter; the
//! only variants chosen at run time (sort field, order, period) pick among fixed constants.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension};

use roam_proto::{
    ActivityBucket, Document, Invitation, Member, Message, Notification, Page, ReadMarker, Room,
    RoomEvent, User,
};

use super::rows::{
    self, document_cols, event_cols, idem_cols, int, invitation_cols, member_cols, message_cols,
    notification_cols, room_cols, user_cols,
};
use crate::store::{
    Bounded, MessageCursor, NotificationQuery, Order, Period, RoomQuery, StoreError, StoreResult,
    StoredResult, UserQuery, UserSort, PAGE_BYTES,
};

/// Maps rows until there are none left or the text of column `size_col` adds up to more than
/// [`PAGE_BYTES`] (the row that would pass it is left for the next page, unless it is the
/// first): every listing stops at a byte budget as well as at its `LIMIT`.
fn bounded<T>(
    mut rows: rusqlite::Rows<'_>,
    size_col: usize,
    map: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Bounded<T>> {
    let mut items = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.next()? {
        let size = match row.get_ref(size_col)? {
            rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => t.len(),
            _ => 0,
        };
        if !items.is_empty() && bytes + size > PAGE_BYTES {
            return Ok(Bounded { items, cut: true });
        }
        bytes += size;
        items.push(map(row)?);
    }
    Ok(Bounded { items, cut: false })
}

pub(super) const IDEMPOTENT_RESULT: &str = concat!(
    "SELECT ",
    idem_cols!(),
    " FROM idempotency WHERE user = ?1 AND key = ?2"
);

/// A `message.send` recorded on the message it created: its result is the creation, as sent
/// (blanked once the message is deleted).
pub(super) const SENT_RESULT: &str = "SELECT 'message.send', sent_fingerprint, data, at \
     FROM events WHERE actor = ?1 AND sent_key = ?2";

pub(super) fn idempotent_result(
    conn: &Connection,
    user: &str,
    key: &str,
) -> StoreResult<Option<StoredResult>> {
    let mut stmt = conn.prepare_cached(IDEMPOTENT_RESULT)?;
    if let Some(found) = stmt
        .query_row(params![user, key], rows::stored_result)
        .optional()?
    {
        return Ok(Some(found));
    }
    let mut stmt = conn.prepare_cached(SENT_RESULT)?;
    Ok(stmt
        .query_row(params![user, key], |r| {
            Ok(StoredResult {
                op: r.get(0)?,
                fingerprint: r.get(1)?,
                result: rows::json_col(r, 2)?,
                created_at: r.get(3)?,
            })
        })
        .optional()?)
}

pub(super) const ROOM: &str = concat!(
    "SELECT ",
    room_cols!(),
    " FROM rooms r WHERE r.name = ?1 AND r.deleted_at IS NULL"
);

/// A live (not deleted) room.
pub(super) fn room(conn: &Connection, name: &str) -> StoreResult<Option<Room>> {
    let mut stmt = conn.prepare_cached(ROOM)?;
    Ok(stmt.query_row(params![name], rows::room).optional()?)
}

/// Visible rooms: public and protected ones, and private ones the viewer is an active member of.
pub(super) const LIST_ROOMS: &str = concat!(
    "SELECT ",
    room_cols!(),
    " FROM rooms r WHERE r.deleted_at IS NULL AND r.name > ?2 \
     AND (?3 IS NULL OR r.kind = ?3) \
     AND (r.kind <> 'private' OR EXISTS (SELECT 1 FROM members j \
          WHERE j.room = r.name AND j.user = ?1 AND j.status = 'active')) \
     ORDER BY r.name LIMIT ?4"
);

/// Rooms the viewer is an active member of, walking the viewer's memberships.
pub(super) const LIST_JOINED_ROOMS: &str = concat!(
    "SELECT ",
    room_cols!(),
    " FROM members j JOIN rooms r ON r.name = j.room \
     WHERE j.user = ?1 AND j.status = 'active' AND j.room > ?2 \
     AND r.deleted_at IS NULL AND (?3 IS NULL OR r.kind = ?3) \
     ORDER BY j.room LIMIT ?4"
);

pub(super) fn list_rooms(
    conn: &Connection,
    viewer: &str,
    q: &RoomQuery,
) -> StoreResult<Bounded<Room>> {
    let sql = if q.joined_only {
        LIST_JOINED_ROOMS
    } else {
        LIST_ROOMS
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let after = q.after_name.as_deref().unwrap_or("");
    let kind = q.kind.map(|k| k.as_str());
    // Column 3 is the metadata.
    let page = bounded(
        stmt.query(params![viewer, after, kind, q.limit])?,
        3,
        rows::room,
    )?;
    Ok(page)
}

pub(super) const MEMBER: &str = concat!(
    "SELECT ",
    member_cols!(),
    " FROM members WHERE room = ?1 AND user = ?2"
);

pub(super) fn member(conn: &Connection, room: &str, user: &str) -> StoreResult<Option<Member>> {
    let mut stmt = conn.prepare_cached(MEMBER)?;
    Ok(stmt
        .query_row(params![room, user], rows::member)
        .optional()?)
}

pub(super) const LIST_MEMBERS: &str = concat!(
    "SELECT ",
    member_cols!(),
    " FROM members WHERE room = ?1 AND user > ?2 ORDER BY user LIMIT ?3"
);

pub(super) fn list_members(
    conn: &Connection,
    room: &str,
    after_user: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<Member>> {
    let mut stmt = conn.prepare_cached(LIST_MEMBERS)?;
    let rows = stmt.query_map(params![room, after_user.unwrap_or(""), limit], rows::member)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) const ROOMS_OF: &str =
    "SELECT room FROM members WHERE user = ?1 AND status = 'active' ORDER BY room";

pub(super) fn rooms_of(conn: &Connection, user: &str) -> StoreResult<Vec<String>> {
    let mut stmt = conn.prepare_cached(ROOMS_OF)?;
    let rows = stmt.query_map(params![user], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) const INVITATION: &str = concat!(
    "SELECT ",
    invitation_cols!(),
    " FROM invitations WHERE id = ?1"
);

/// The invitation with its status as stored (callers apply [`rows::effective`]).
pub(super) fn invitation_raw(conn: &Connection, id: &str) -> StoreResult<Option<Invitation>> {
    let mut stmt = conn.prepare_cached(INVITATION)?;
    Ok(stmt.query_row(params![id], rows::invitation).optional()?)
}

pub(super) fn invitation(conn: &Connection, id: &str, now: i64) -> StoreResult<Option<Invitation>> {
    Ok(invitation_raw(conn, id)?.map(|i| rows::effective(i, now)))
}

pub(super) const PENDING_INVITATION: &str = concat!(
    "SELECT ",
    invitation_cols!(),
    " FROM invitations WHERE room = ?1 AND invitee = ?2 AND status = 'pending' \
     AND expires_at >= ?3 ORDER BY created_at DESC LIMIT 1"
);

pub(super) fn pending_invitation(
    conn: &Connection,
    room: &str,
    user: &str,
    now: i64,
) -> StoreResult<Option<Invitation>> {
    let mut stmt = conn.prepare_cached(PENDING_INVITATION)?;
    Ok(stmt
        .query_row(params![room, user, now], rows::invitation)
        .optional()?)
}

pub(super) const INVITATIONS_FOR: &str = concat!(
    "SELECT ",
    invitation_cols!(),
    " FROM invitations WHERE invitee = ?1 ORDER BY created_at DESC LIMIT ?2"
);

pub(super) fn invitations_for(
    conn: &Connection,
    user: &str,
    now: i64,
    limit: u32,
) -> StoreResult<Vec<Invitation>> {
    let mut stmt = conn.prepare_cached(INVITATIONS_FOR)?;
    let rows = stmt.query_map(params![user, limit], rows::invitation)?;
    rows.map(|r| Ok(rows::effective(r?, now))).collect()
}

pub(super) const ROOM_INVITATIONS: &str = concat!(
    "SELECT ",
    invitation_cols!(),
    " FROM invitations WHERE room = ?1 ORDER BY created_at DESC LIMIT ?2"
);

pub(super) fn room_invitations(
    conn: &Connection,
    room: &str,
    now: i64,
    limit: u32,
) -> StoreResult<Vec<Invitation>> {
    let mut stmt = conn.prepare_cached(ROOM_INVITATIONS)?;
    let rows = stmt.query_map(params![room, limit], rows::invitation)?;
    rows.map(|r| Ok(rows::effective(r?, now))).collect()
}

pub(super) const MESSAGE: &str = concat!(
    "SELECT ",
    message_cols!(),
    " FROM events WHERE message = ?1 AND kind = 'message_created' AND room = ?2"
);

/// Whether the room exists and is not deleted. A deleted room keeps its events, which hold its
/// messages; they are not readable as messages any more.
const LIVE_ROOM: &str = "SELECT 1 FROM rooms WHERE name = ?1 AND deleted_at IS NULL";

fn live(conn: &Connection, room: &str) -> StoreResult<bool> {
    Ok(conn.prepare_cached(LIVE_ROOM)?.exists(params![room])?)
}

pub(super) fn message(conn: &Connection, room: &str, id: &str) -> StoreResult<Option<Message>> {
    if !live(conn, room)? {
        return Ok(None);
    }
    let mut stmt = conn.prepare_cached(MESSAGE)?;
    Ok(stmt
        .query_row(params![id, room], rows::message)
        .optional()?)
}

/// A message that is not deleted, in a live room `?1` may read, references blob `?2`: walks
/// the blob's references (`message_blobs_blob`), then the room's row and the user's member row
/// by primary key.
pub(super) const BLOB_SHARED_WITH: &str = "SELECT EXISTS (SELECT 1 FROM message_blobs b \
     JOIN rooms r ON r.name = b.room AND r.deleted_at IS NULL \
     LEFT JOIN members m ON m.room = b.room AND m.user = ?1 \
     WHERE b.blob = ?2 \
     AND (m.status = 'active' OR (r.kind = 'public' AND m.status IS NULL)))";

/// `Store::blob_shared_with`.
pub(super) fn blob_shared_with(conn: &Connection, user: &str, blob: &str) -> StoreResult<bool> {
    Ok(conn
        .prepare_cached(BLOB_SHARED_WITH)?
        .query_row(params![user, blob], |r| r.get(0))?)
}

/// Newest first, below a seq.
pub(super) const MESSAGES_BEFORE: &str = concat!(
    "SELECT ",
    message_cols!(),
    " FROM events WHERE room = ?1 AND seq < ?2 AND kind = 'message_created' \
     ORDER BY seq DESC LIMIT ?3"
);

/// Oldest first, above a seq.
pub(super) const MESSAGES_AFTER: &str = concat!(
    "SELECT ",
    message_cols!(),
    " FROM events WHERE room = ?1 AND seq > ?2 AND kind = 'message_created' \
     ORDER BY seq ASC LIMIT ?3"
);

pub(super) fn messages(
    conn: &Connection,
    room: &str,
    cursor: MessageCursor,
    limit: u32,
) -> StoreResult<Bounded<Message>> {
    if !live(conn, room)? {
        return Ok(Bounded {
            items: Vec::new(),
            cut: false,
        });
    }
    let (sql, seq) = match cursor {
        MessageCursor::Before(n) => (MESSAGES_BEFORE, n),
        MessageCursor::After(n) => (MESSAGES_AFTER, n),
    };
    let mut stmt = conn.prepare_cached(sql)?;
    // Column 0 is the message's JSON.
    let page = bounded(
        stmt.query(params![room, int(seq), limit])?,
        0,
        rows::message,
    )?;
    Ok(page)
}

pub(super) const EVENTS_AFTER: &str = concat!(
    "SELECT ",
    event_cols!(),
    " FROM events WHERE room = ?1 AND seq > ?2 ORDER BY seq ASC LIMIT ?3"
);

pub(super) fn events_after(
    conn: &Connection,
    room: &str,
    after: u64,
    limit: u32,
) -> StoreResult<Vec<RoomEvent>> {
    let mut stmt = conn.prepare_cached(EVENTS_AFTER)?;
    // Column 5 is the event's data.
    let page = bounded(
        stmt.query(params![room, int(after), limit])?,
        5,
        rows::event,
    )?;
    Ok(page.items)
}

/// The oldest event above the room's compaction horizon (below it only messages stay) and the
/// newest: each one primary-key probe.
pub(super) const EVENT_BOUNDS: &str = "SELECT \
     coalesce((SELECT min(seq) FROM events WHERE room = ?1 \
         AND seq > coalesce((SELECT log_from FROM rooms WHERE name = ?1), 0)), 0), \
     coalesce((SELECT max(seq) FROM events WHERE room = ?1), 0)";

pub(super) fn event_bounds(conn: &Connection, room: &str) -> StoreResult<(u64, u64)> {
    let mut stmt = conn.prepare_cached(EVENT_BOUNDS)?;
    Ok(stmt.query_row(params![room], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

pub(super) const DOCUMENT: &str = concat!(
    "SELECT ",
    document_cols!(),
    " FROM documents d JOIN document_versions v \
     ON v.room = d.room AND v.doc = d.doc AND v.version = d.version \
     WHERE d.room = ?1 AND d.doc = ?2"
);

pub(super) fn document(conn: &Connection, room: &str, doc: &str) -> StoreResult<Option<Document>> {
    let mut stmt = conn.prepare_cached(DOCUMENT)?;
    Ok(stmt
        .query_row(params![room, doc], rows::document)
        .optional()?)
}

pub(super) const DOCUMENTS: &str = concat!(
    "SELECT ",
    document_cols!(),
    " FROM documents d JOIN document_versions v \
     ON v.room = d.room AND v.doc = d.doc AND v.version = d.version \
     WHERE d.room = ?1 AND d.doc > ?2 ORDER BY d.doc LIMIT ?3"
);

pub(super) fn documents(
    conn: &Connection,
    room: &str,
    after_doc: Option<&str>,
    limit: u32,
) -> StoreResult<Bounded<Document>> {
    let mut stmt = conn.prepare_cached(DOCUMENTS)?;
    // Column 3 is the content.
    let page = bounded(
        stmt.query(params![room, after_doc.unwrap_or(""), limit])?,
        3,
        rows::document,
    )?;
    Ok(page)
}

pub(super) const DOCUMENT_HISTORY: &str = concat!(
    "SELECT ",
    document_cols!(),
    " FROM document_versions v WHERE v.room = ?1 AND v.doc = ?2 AND v.version < ?3 \
     ORDER BY v.version DESC LIMIT ?4"
);

pub(super) fn document_history(
    conn: &Connection,
    room: &str,
    doc: &str,
    before: u64,
    limit: u32,
) -> StoreResult<Bounded<Document>> {
    let mut stmt = conn.prepare_cached(DOCUMENT_HISTORY)?;
    let page = bounded(
        stmt.query(params![room, doc, int(before), limit])?,
        3,
        rows::document,
    )?;
    Ok(page)
}

pub(super) const NOTIFICATIONS: &str = concat!(
    "SELECT ",
    notification_cols!(),
    " FROM notifications WHERE user = ?1 AND seq > ?2 ORDER BY seq ASC LIMIT ?3"
);

/// Without statistics the planner prefers the primary key range (which walks read rows too);
/// `INDEXED BY` pins the (user, read, seq) index, and fails loudly if it ever goes away.
pub(super) const UNREAD_NOTIFICATIONS: &str = concat!(
    "SELECT ",
    notification_cols!(),
    " FROM notifications INDEXED BY notifications_unread \
     WHERE user = ?1 AND read = 0 AND seq > ?2 ORDER BY seq ASC LIMIT ?3"
);

pub(super) fn notifications(
    conn: &Connection,
    user: &str,
    q: &NotificationQuery,
) -> StoreResult<Vec<Notification>> {
    let sql = if q.unread_only {
        UNREAD_NOTIFICATIONS
    } else {
        NOTIFICATIONS
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params![user, int(q.after_seq), q.limit], rows::notification)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) const UNREAD_COUNT: &str =
    "SELECT count(*) FROM notifications WHERE user = ?1 AND read = 0";

pub(super) fn unread_count(conn: &Connection, user: &str) -> StoreResult<u64> {
    let mut stmt = conn.prepare_cached(UNREAD_COUNT)?;
    Ok(stmt.query_row(params![user], |r| r.get(0))?)
}

pub(super) const READ_MARKER: &str =
    "SELECT room, seq, updated_at FROM read_markers WHERE user = ?1 AND room = ?2";

fn read_marker_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReadMarker> {
    Ok(ReadMarker {
        room: r.get(0)?,
        seq: r.get(1)?,
        updated_at: r.get(2)?,
    })
}

pub(super) fn read_marker(
    conn: &Connection,
    user: &str,
    room: &str,
) -> StoreResult<Option<ReadMarker>> {
    let mut stmt = conn.prepare_cached(READ_MARKER)?;
    Ok(stmt
        .query_row(params![user, room], read_marker_row)
        .optional()?)
}

/// Markers of the rooms the user is an active member of (a room left keeps its marker for a
/// return, but is not listed).
pub(super) const READ_MARKERS: &str = "SELECT r.room, r.seq, r.updated_at FROM read_markers r \
     JOIN members m ON m.room = r.room AND m.user = r.user AND m.status = 'active' \
     WHERE r.user = ?1 ORDER BY r.room";

pub(super) fn read_markers(conn: &Connection, user: &str) -> StoreResult<Vec<ReadMarker>> {
    let mut stmt = conn.prepare_cached(READ_MARKERS)?;
    let rows = stmt.query_map(params![user], read_marker_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) const LAST_SEEN: &str = "SELECT last_seen FROM presence WHERE user = ?1";

pub(super) fn last_seen(conn: &Connection, users: &[String]) -> StoreResult<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(LAST_SEEN)?;
    let mut seen = HashSet::with_capacity(users.len());
    let mut out = Vec::with_capacity(users.len());
    for user in users {
        if !seen.insert(user.as_str()) {
            continue;
        }
        if let Some(at) = stmt
            .query_row(params![user], |r| r.get::<_, i64>(0))
            .optional()?
        {
            out.push((user.clone(), at));
        }
    }
    Ok(out)
}

/// Whether two users share a room (both active members).
pub(super) const SHARE_A_ROOM: &str = "SELECT EXISTS (SELECT 1 FROM members a \
     JOIN members b ON b.room = a.room AND b.user = ?2 AND b.status = 'active' \
     WHERE a.user = ?1 AND a.status = 'active')";

pub(super) fn co_members(
    conn: &Connection,
    viewer: &str,
    users: &[String],
) -> StoreResult<Vec<String>> {
    let mut stmt = conn.prepare_cached(SHARE_A_ROOM)?;
    let mut out = Vec::new();
    for user in users {
        if user == viewer || stmt.query_row(params![viewer, user], |r| r.get::<_, bool>(0))? {
            out.push(user.clone());
        }
    }
    Ok(out)
}

/// The directory search: `?1` the LIKE pattern (`''` for everyone), `?2`/`?3` the cursor's
/// sort value and id, `?4` the limit, `?5` the viewer (`''`: no viewer, everyone is listed;
/// else only the viewer and those who share a room with them). The id sort ignores `?2`;
/// first pages ignore both (a parameter index that the text does not use may still be bound).
/// The directory's privacy rule, in SQL (`?5` the viewer).
macro_rules! visible {
    () => {
        "(?5 = '' OR id = ?5 OR EXISTS (SELECT 1 FROM members a JOIN members b \
         ON b.room = a.room AND b.user = users.id AND b.status = 'active' \
         WHERE a.user = ?5 AND a.status = 'active'))"
    };
}

macro_rules! search_users {
    (first, $key:literal, $dir:literal) => {
        concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE (?1 = '' OR id LIKE ?1 ESCAPE '\\') \
             AND ",
            visible!(),
            " ORDER BY ",
            $key,
            " ",
            $dir,
            ", id ",
            $dir,
            " LIMIT ?4"
        )
    };
    (next_id, $cmp:literal, $dir:literal) => {
        concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE id ",
            $cmp,
            " ?3 AND (?1 = '' OR id LIKE ?1 ESCAPE '\\') \
             AND ",
            visible!(),
            " ORDER BY id ",
            $dir,
            " LIMIT ?4"
        )
    };
    // `key >= ?2` (or `<=`) is a plain range on the index; the row value then skips the ties
    // already seen (the planner does not turn a row value over an expression into a range).
    (next, $key:literal, $cmp:literal, $dir:literal) => {
        concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE ",
            $key,
            " ",
            $cmp,
            "= ?2 AND (",
            $key,
            ", id) ",
            $cmp,
            " (?2, ?3) AND (?1 = '' OR id LIKE ?1 ESCAPE '\\') \
             AND ",
            visible!(),
            " ORDER BY ",
            $key,
            " ",
            $dir,
            ", id ",
            $dir,
            " LIMIT ?4"
        )
    };
}

pub(super) const USERS_BY_ID_ASC: &str = search_users!(first, "id", "ASC");
pub(super) const USERS_BY_ID_DESC: &str = search_users!(first, "id", "DESC");
pub(super) const USERS_BY_ID_ASC_NEXT: &str = search_users!(next_id, ">", "ASC");
pub(super) const USERS_BY_ID_DESC_NEXT: &str = search_users!(next_id, "<", "DESC");
pub(super) const USERS_BY_CREATED_ASC: &str = search_users!(first, "created_at", "ASC");
pub(super) const USERS_BY_CREATED_DESC: &str = search_users!(first, "created_at", "DESC");
pub(super) const USERS_BY_CREATED_ASC_NEXT: &str = search_users!(next, "created_at", ">", "ASC");
pub(super) const USERS_BY_CREATED_DESC_NEXT: &str = search_users!(next, "created_at", "<", "DESC");
pub(super) const USERS_BY_SEEN_ASC: &str = search_users!(first, "coalesce(last_seen, 0)", "ASC");
pub(super) const USERS_BY_SEEN_DESC: &str = search_users!(first, "coalesce(last_seen, 0)", "DESC");
pub(super) const USERS_BY_SEEN_ASC_NEXT: &str =
    search_users!(next, "coalesce(last_seen, 0)", ">", "ASC");
pub(super) const USERS_BY_SEEN_DESC_NEXT: &str =
    search_users!(next, "coalesce(last_seen, 0)", "<", "DESC");

/// The statement for a sort, an order and whether a cursor continues a previous page.
pub(super) fn search_users_sql(sort: UserSort, order: Order, next: bool) -> &'static str {
    use {Order::*, UserSort::*};
    match (sort, order, next) {
        (Id, Asc, false) => USERS_BY_ID_ASC,
        (Id, Desc, false) => USERS_BY_ID_DESC,
        (Id, Asc, true) => USERS_BY_ID_ASC_NEXT,
        (Id, Desc, true) => USERS_BY_ID_DESC_NEXT,
        (CreatedAt, Asc, false) => USERS_BY_CREATED_ASC,
        (CreatedAt, Desc, false) => USERS_BY_CREATED_DESC,
        (CreatedAt, Asc, true) => USERS_BY_CREATED_ASC_NEXT,
        (CreatedAt, Desc, true) => USERS_BY_CREATED_DESC_NEXT,
        (LastSeen, Asc, false) => USERS_BY_SEEN_ASC,
        (LastSeen, Desc, false) => USERS_BY_SEEN_DESC,
        (LastSeen, Asc, true) => USERS_BY_SEEN_ASC_NEXT,
        (LastSeen, Desc, true) => USERS_BY_SEEN_DESC_NEXT,
    }
}

/// `%q%` with LIKE's wildcards (and the escape character itself) escaped, or `''` for "all".
/// (SQLite's LIKE folds case for ASCII letters only, which covers user ids in practice.)
pub(in crate::store) fn like_pattern(q: &str) -> String {
    if q.is_empty() {
        return String::new();
    }
    let mut p = String::with_capacity(q.len() + 2);
    p.push('%');
    for c in q.chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// The sort value of a user under a sort (a never-seen user has last_seen 0).
fn sort_value(user: &User, sort: UserSort) -> i64 {
    match sort {
        UserSort::Id => 0,
        UserSort::CreatedAt => user.created_at,
        UserSort::LastSeen => user.last_seen.unwrap_or(0),
    }
}

/// An opaque cursor: `<sort value>:<id>` in lowercase hex.
pub(in crate::store) fn encode_cursor(value: i64, id: &str) -> String {
    format!("{value}:{id}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The inverse of [`encode_cursor`]; `None` for anything it did not make.
pub(in crate::store) fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    if !cursor.len().is_multiple_of(2) || !cursor.is_ascii() {
        return None;
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&cursor[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let text = String::from_utf8(bytes).ok()?;
    let (value, id) = text.split_once(':')?;
    Some((value.parse().ok()?, id.to_owned()))
}

pub(super) fn search_users(conn: &Connection, q: &UserQuery) -> StoreResult<Page<User>> {
    let cursor = match &q.cursor {
        Some(c) => Some(decode_cursor(c).ok_or(StoreError::NotFound("cursor"))?),
        None => None,
    };
    let sql = search_users_sql(q.sort, q.order, cursor.is_some());
    let (value, after_id) = cursor.unwrap_or((0, String::new()));
    let mut stmt = conn.prepare_cached(sql)?;
    let fetch = i64::from(q.limit) + 1;
    let rows = stmt.query_map(
        params![
            like_pattern(&q.q),
            value,
            after_id,
            fetch,
            q.viewer.as_deref().unwrap_or("")
        ],
        rows::user,
    )?;
    let mut items: Vec<User> = rows.collect::<Result<_, _>>()?;
    let next_cursor = if items.len() > q.limit as usize {
        items.truncate(q.limit as usize);
        items
            .last()
            .map(|u| encode_cursor(sort_value(u, q.sort), &u.id))
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// Messages and distinct senders per period of a room; `?2 <= created_at < ?3` (a message's
/// creation event's `at` and `actor`).
macro_rules! room_activity {
    ($period:literal) => {
        concat!(
            "SELECT ",
            $period,
            " AS period, count(*), count(DISTINCT actor) FROM events \
             WHERE room = ?1 AND kind = 'message_created' AND at >= ?2 AND at < ?3 \
             GROUP BY period ORDER BY period"
        )
    };
}

pub(super) const ACTIVITY_BY_DAY: &str =
    room_activity!("strftime('%Y-%m-%d', at / 1000, 'unixepoch')");
/// `weekday 0` moves to the coming Sunday (or stays on one); six days back is its Monday.
pub(super) const ACTIVITY_BY_WEEK: &str =
    room_activity!("date(at / 1000, 'unixepoch', 'weekday 0', '-6 days')");
pub(super) const ACTIVITY_BY_MONTH: &str =
    room_activity!("strftime('%Y-%m', at / 1000, 'unixepoch')");
pub(super) const ACTIVITY_BY_YEAR: &str = room_activity!("strftime('%Y', at / 1000, 'unixepoch')");

pub(super) fn room_activity(
    conn: &Connection,
    room: &str,
    period: Period,
    from: i64,
    to: i64,
) -> StoreResult<Vec<ActivityBucket>> {
    let sql = match period {
        Period::Day => ACTIVITY_BY_DAY,
        Period::Week => ACTIVITY_BY_WEEK,
        Period::Month => ACTIVITY_BY_MONTH,
        Period::Year => ACTIVITY_BY_YEAR,
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params![room, from, to], |r| {
        Ok(ActivityBucket {
            period: r.get(0)?,
            messages: r.get(1)?,
            senders: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
