//! Reads: plain queries on a [`Conn`] (a pooled reader, or a writer lane's connection inside its
//! transaction when a write needs the current state).
//!
//! The SQL of every query is a `const`, so that the query-plan test (`tests.rs`) explains exactly
//! the text the store runs. Every value is a bound parameter; the only variants chosen at run
//! time (sort field, order, period) pick among fixed constants.

use std::collections::HashSet;

use tokio_postgres::Row;

use roam_proto::{
    ActivityBucket, Document, Invitation, Member, Message, Notification, Page, ReadMarker, Room,
    RoomEvent, User,
};

use super::conn::Conn;
use super::rows::{
    self, col, count, document_cols, event_cols, idem_cols, int, invitation_cols, member_cols,
    message_cols, notification_cols, room_cols, text_len, user_cols,
};
use crate::store::sqlite::{decode_cursor, encode_cursor, like_pattern};
use crate::store::{
    Bounded, MessageCursor, NotificationQuery, Order, Period, RoomQuery, StoreError, StoreResult,
    StoredResult, UserQuery, UserSort, PAGE_BYTES,
};

/// Maps rows until there are none left or the text of column `size_col` adds up to more than
/// [`PAGE_BYTES`] (the row that would pass it is left for the next page, unless it is the
/// first): every listing stops at a byte budget as well as at its `LIMIT`.
fn bounded<T>(
    rows: &[Row],
    size_col: usize,
    map: impl Fn(&Row) -> StoreResult<T>,
) -> StoreResult<Bounded<T>> {
    bounded_by(rows, |row| text_len(row, size_col), map)
}

/// [`bounded`], with each row's size given by `size`.
fn bounded_by<T>(
    rows: &[Row],
    size: impl Fn(&Row) -> usize,
    map: impl Fn(&Row) -> StoreResult<T>,
) -> StoreResult<Bounded<T>> {
    let mut items = Vec::new();
    let mut bytes = 0usize;
    for row in rows {
        let size = size(row);
        if !items.is_empty() && bytes + size > PAGE_BYTES {
            return Ok(Bounded { items, cut: true });
        }
        bytes += size;
        items.push(map(row)?);
    }
    Ok(Bounded { items, cut: false })
}

fn all<T>(rows: &[Row], map: impl Fn(&Row) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.iter().map(map).collect()
}

pub(super) const IDEMPOTENT_RESULT: &str = concat!(
    "SELECT ",
    idem_cols!(),
    " FROM idempotency WHERE user_id = $1 AND key = $2"
);

pub(super) async fn idempotent_result(
    c: &Conn,
    user: &str,
    key: &str,
) -> StoreResult<Option<StoredResult>> {
    c.query_opt(IDEMPOTENT_RESULT, &[&user, &key])
        .await?
        .map(|r| rows::stored_result(&r))
        .transpose()
}

pub(super) const ROOM: &str = concat!(
    "SELECT ",
    room_cols!(),
    " FROM rooms r WHERE r.name = $1 AND r.deleted_at IS NULL"
);

/// A live (not deleted) room.
pub(super) async fn room(c: &Conn, name: &str) -> StoreResult<Option<Room>> {
    c.query_opt(ROOM, &[&name])
        .await?
        .map(|r| rows::room(&r))
        .transpose()
}

/// Visible rooms: public and protected ones, and private ones the viewer is an active member of.
pub(super) const LIST_ROOMS: &str = concat!(
    "SELECT ",
    room_cols!(),
    " FROM rooms r WHERE r.deleted_at IS NULL AND r.name > $2 \
     AND ($3::text IS NULL OR r.kind = $3::text) \
     AND (r.kind <> 'private' OR EXISTS (SELECT 1 FROM members j \
          WHERE j.room = r.name AND j.user_id = $1 AND j.status = 'active')) \
     ORDER BY r.name LIMIT $4"
);

/// Rooms the viewer is an active member of, walking the viewer's memberships.
pub(super) const LIST_JOINED_ROOMS: &str = concat!(
    "SELECT ",
    room_cols!(),
    " FROM members j JOIN rooms r ON r.name = j.room \
     WHERE j.user_id = $1 AND j.status = 'active' AND j.room > $2 \
     AND r.deleted_at IS NULL AND ($3::text IS NULL OR r.kind = $3::text) \
     ORDER BY j.room LIMIT $4"
);

pub(super) async fn list_rooms(
    c: &Conn,
    viewer: &str,
    q: &RoomQuery,
) -> StoreResult<Bounded<Room>> {
    let sql = if q.joined_only {
        LIST_JOINED_ROOMS
    } else {
        LIST_ROOMS
    };
    let after = q.after_name.as_deref().unwrap_or("");
    let kind = q.kind.map(|k| k.as_str());
    let limit = i64::from(q.limit);
    let rows = c.query(sql, &[&viewer, &after, &kind, &limit]).await?;
    // Column 3 is the metadata.
    bounded(&rows, 3, rows::room)
}

pub(super) const MEMBER: &str = concat!(
    "SELECT ",
    member_cols!(),
    " FROM members WHERE room = $1 AND user_id = $2"
);

pub(super) async fn member(c: &Conn, room: &str, user: &str) -> StoreResult<Option<Member>> {
    c.query_opt(MEMBER, &[&room, &user])
        .await?
        .map(|r| rows::member(&r))
        .transpose()
}

pub(super) const LIST_MEMBERS: &str = concat!(
    "SELECT ",
    member_cols!(),
    " FROM members WHERE room = $1 AND user_id > $2 ORDER BY user_id LIMIT $3"
);

pub(super) async fn list_members(
    c: &Conn,
    room: &str,
    after_user: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<Member>> {
    let rows = c
        .query(
            LIST_MEMBERS,
            &[&room, &after_user.unwrap_or(""), &i64::from(limit)],
        )
        .await?;
    all(&rows, rows::member)
}

pub(super) const ROOMS_OF: &str =
    "SELECT room FROM members WHERE user_id = $1 AND status = 'active' ORDER BY room";

pub(super) async fn rooms_of(c: &Conn, user: &str) -> StoreResult<Vec<String>> {
    let rows = c.query(ROOMS_OF, &[&user]).await?;
    all(&rows, |r| col(r, 0))
}

pub(super) const INVITATION: &str = concat!(
    "SELECT ",
    invitation_cols!(),
    " FROM invitations WHERE id = $1"
);

/// The invitation with its status as stored (callers apply [`rows::effective`]).
pub(super) async fn invitation_raw(c: &Conn, id: &str) -> StoreResult<Option<Invitation>> {
    c.query_opt(INVITATION, &[&id])
        .await?
        .map(|r| rows::invitation(&r))
        .transpose()
}

pub(super) async fn invitation(c: &Conn, id: &str, now: i64) -> StoreResult<Option<Invitation>> {
    Ok(invitation_raw(c, id)
        .await?
        .map(|i| rows::effective(i, now)))
}

pub(super) const PENDING_INVITATION: &str = concat!(
    "SELECT ",
    invitation_cols!(),
    " FROM invitations WHERE room = $1 AND invitee = $2 AND status = 'pending' \
     AND expires_at >= $3 ORDER BY created_at DESC LIMIT 1"
);

pub(super) async fn pending_invitation(
    c: &Conn,
    room: &str,
    user: &str,
    now: i64,
) -> StoreResult<Option<Invitation>> {
    c.query_opt(PENDING_INVITATION, &[&room, &user, &now])
        .await?
        .map(|r| rows::invitation(&r))
        .transpose()
}

pub(super) const INVITATIONS_FOR: &str = concat!(
    "SELECT ",
    invitation_cols!(),
    " FROM invitations WHERE invitee = $1 ORDER BY created_at DESC LIMIT $2"
);

pub(super) async fn invitations_for(
    c: &Conn,
    user: &str,
    now: i64,
    limit: u32,
) -> StoreResult<Vec<Invitation>> {
    let rows = c
        .query(INVITATIONS_FOR, &[&user, &i64::from(limit)])
        .await?;
    all(&rows, |r| Ok(rows::effective(rows::invitation(r)?, now)))
}

pub(super) const ROOM_INVITATIONS: &str = concat!(
    "SELECT ",
    invitation_cols!(),
    " FROM invitations WHERE room = $1 ORDER BY created_at DESC LIMIT $2"
);

pub(super) async fn room_invitations(
    c: &Conn,
    room: &str,
    now: i64,
    limit: u32,
) -> StoreResult<Vec<Invitation>> {
    let rows = c
        .query(ROOM_INVITATIONS, &[&room, &i64::from(limit)])
        .await?;
    all(&rows, |r| Ok(rows::effective(rows::invitation(r)?, now)))
}

pub(super) const MESSAGE: &str = concat!(
    "SELECT ",
    message_cols!(),
    " FROM messages WHERE id = $1 AND room = $2"
);

pub(super) async fn message(c: &Conn, room: &str, id: &str) -> StoreResult<Option<Message>> {
    c.query_opt(MESSAGE, &[&id, &room])
        .await?
        .map(|r| rows::message(&r))
        .transpose()
}

/// A message that is not deleted, in a live room `$1` may read, references blob `$2`: walks
/// the blob's references (`message_blobs_blob`), then the room's row and the user's member row
/// by primary key.
pub(super) const BLOB_SHARED_WITH: &str = "SELECT EXISTS (SELECT 1 FROM message_blobs b \
     JOIN rooms r ON r.name = b.room AND r.deleted_at IS NULL \
     LEFT JOIN members m ON m.room = b.room AND m.user_id = $1 \
     WHERE b.blob = $2 \
     AND (m.status = 'active' OR (r.kind = 'public' AND m.status IS NULL)))";

/// `Store::blob_shared_with`.
pub(super) async fn blob_shared_with(c: &Conn, user: &str, blob: &str) -> StoreResult<bool> {
    let row = c.query_one(BLOB_SHARED_WITH, &[&user, &blob]).await?;
    col(&row, 0)
}

/// Newest first, below a seq.
pub(super) const MESSAGES_BEFORE: &str = concat!(
    "SELECT ",
    message_cols!(),
    " FROM messages WHERE room = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
);

/// Oldest first, above a seq.
pub(super) const MESSAGES_AFTER: &str = concat!(
    "SELECT ",
    message_cols!(),
    " FROM messages WHERE room = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3"
);

pub(super) async fn messages(
    c: &Conn,
    room: &str,
    cursor: MessageCursor,
    limit: u32,
) -> StoreResult<Bounded<Message>> {
    let (sql, seq) = match cursor {
        MessageCursor::Before(n) => (MESSAGES_BEFORE, n),
        MessageCursor::After(n) => (MESSAGES_AFTER, n),
    };
    let rows = c.query(sql, &[&room, &int(seq), &i64::from(limit)]).await?;
    // Column 4 is the body, column 9 the attachment.
    bounded_by(
        &rows,
        |row| text_len(row, 4) + text_len(row, 9),
        rows::message,
    )
}

pub(super) const EVENTS_AFTER: &str = concat!(
    "SELECT ",
    event_cols!(),
    " FROM events WHERE room = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3"
);

pub(super) async fn events_after(
    c: &Conn,
    room: &str,
    after: u64,
    limit: u32,
) -> StoreResult<Vec<RoomEvent>> {
    let rows = c
        .query(EVENTS_AFTER, &[&room, &int(after), &i64::from(limit)])
        .await?;
    // Column 5 is the event's data.
    Ok(bounded(&rows, 5, rows::event)?.items)
}

/// Two single-aggregate subqueries, so each is one index probe.
pub(super) const EVENT_BOUNDS: &str = "SELECT \
     coalesce((SELECT min(seq) FROM events WHERE room = $1), 0), \
     coalesce((SELECT max(seq) FROM events WHERE room = $1), 0)";

pub(super) async fn event_bounds(c: &Conn, room: &str) -> StoreResult<(u64, u64)> {
    let r = c.query_one(EVENT_BOUNDS, &[&room]).await?;
    Ok((count(&r, 0)?, count(&r, 1)?))
}

pub(super) const DOCUMENT: &str = concat!(
    "SELECT ",
    document_cols!(),
    " FROM documents d JOIN document_versions v \
     ON v.room = d.room AND v.doc = d.doc AND v.version = d.version \
     WHERE d.room = $1 AND d.doc = $2"
);

pub(super) async fn document(c: &Conn, room: &str, doc: &str) -> StoreResult<Option<Document>> {
    c.query_opt(DOCUMENT, &[&room, &doc])
        .await?
        .map(|r| rows::document(&r))
        .transpose()
}

pub(super) const DOCUMENTS: &str = concat!(
    "SELECT ",
    document_cols!(),
    " FROM documents d JOIN document_versions v \
     ON v.room = d.room AND v.doc = d.doc AND v.version = d.version \
     WHERE d.room = $1 AND d.doc > $2 ORDER BY d.doc LIMIT $3"
);

pub(super) async fn documents(
    c: &Conn,
    room: &str,
    after_doc: Option<&str>,
    limit: u32,
) -> StoreResult<Bounded<Document>> {
    let rows = c
        .query(
            DOCUMENTS,
            &[&room, &after_doc.unwrap_or(""), &i64::from(limit)],
        )
        .await?;
    // Column 3 is the content.
    bounded(&rows, 3, rows::document)
}

pub(super) const DOCUMENT_HISTORY: &str = concat!(
    "SELECT ",
    document_cols!(),
    " FROM document_versions v WHERE v.room = $1 AND v.doc = $2 AND v.version < $3 \
     ORDER BY v.version DESC LIMIT $4"
);

pub(super) async fn document_history(
    c: &Conn,
    room: &str,
    doc: &str,
    before: u64,
    limit: u32,
) -> StoreResult<Bounded<Document>> {
    let rows = c
        .query(
            DOCUMENT_HISTORY,
            &[&room, &doc, &int(before), &i64::from(limit)],
        )
        .await?;
    bounded(&rows, 3, rows::document)
}

pub(super) const NOTIFICATIONS: &str = concat!(
    "SELECT ",
    notification_cols!(),
    " FROM notifications WHERE user_id = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3"
);

/// Served by the partial index of unread rows.
pub(super) const UNREAD_NOTIFICATIONS: &str = concat!(
    "SELECT ",
    notification_cols!(),
    " FROM notifications WHERE user_id = $1 AND NOT read AND seq > $2 ORDER BY seq ASC LIMIT $3"
);

pub(super) async fn notifications(
    c: &Conn,
    user: &str,
    q: &NotificationQuery,
) -> StoreResult<Vec<Notification>> {
    let sql = if q.unread_only {
        UNREAD_NOTIFICATIONS
    } else {
        NOTIFICATIONS
    };
    let rows = c
        .query(sql, &[&user, &int(q.after_seq), &i64::from(q.limit)])
        .await?;
    all(&rows, rows::notification)
}

pub(super) const UNREAD_COUNT: &str =
    "SELECT count(*) FROM notifications WHERE user_id = $1 AND NOT read";

pub(super) async fn unread_count(c: &Conn, user: &str) -> StoreResult<u64> {
    let r = c.query_one(UNREAD_COUNT, &[&user]).await?;
    count(&r, 0)
}

pub(super) const LAST_SEEN: &str =
    "SELECT user_id, last_seen FROM presence WHERE user_id = ANY($1::text[])";

pub(super) async fn last_seen(c: &Conn, users: &[String]) -> StoreResult<Vec<(String, i64)>> {
    let rows = c.query(LAST_SEEN, &[&users]).await?;
    let mut found = std::collections::HashMap::with_capacity(rows.len());
    for r in &rows {
        found.insert(col::<String>(r, 0)?, col::<i64>(r, 1)?);
    }
    // In the order asked, each user once (as the SQLite store answers).
    let mut seen = HashSet::with_capacity(users.len());
    Ok(users
        .iter()
        .filter(|u| seen.insert(u.as_str()))
        .filter_map(|u| found.get(u).map(|at| (u.clone(), *at)))
        .collect())
}

/// Which of `$2` share a room with `$1` (both active members).
pub(super) const SHARE_A_ROOM: &str = "SELECT DISTINCT b.user_id FROM members a \
     JOIN members b ON b.room = a.room AND b.status = 'active' \
     WHERE a.user_id = $1 AND a.status = 'active' AND b.user_id = ANY($2::text[])";

pub(super) async fn co_members(
    c: &Conn,
    viewer: &str,
    users: &[String],
) -> StoreResult<Vec<String>> {
    let rows = c.query(SHARE_A_ROOM, &[&viewer, &users]).await?;
    let mut shared = HashSet::with_capacity(rows.len());
    for r in &rows {
        shared.insert(col::<String>(r, 0)?);
    }
    Ok(users
        .iter()
        .filter(|u| u.as_str() == viewer || shared.contains(u.as_str()))
        .cloned()
        .collect())
}

/// The directory's privacy rule, in SQL (`$3` the viewer, `''` for none).
macro_rules! visible {
    () => {
        "($3::text = '' OR id = $3::text OR EXISTS (SELECT 1 FROM members a JOIN members b \
         ON b.room = a.room AND b.user_id = users.id AND b.status = 'active' \
         WHERE a.user_id = $3::text AND a.status = 'active'))"
    };
}

/// The directory search: `$1` the ILIKE pattern (`''` for everyone), `$2` the limit, `$3` the
/// viewer; a page after a cursor adds `$4` the cursor's id and (sorts other than by id) `$5`
/// its sort value.
macro_rules! search_users {
    (first, $key:literal, $dir:literal) => {
        concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE ($1::text = '' OR id ILIKE $1::text ESCAPE '\\') AND ",
            visible!(),
            " ORDER BY ",
            $key,
            " ",
            $dir,
            ", id ",
            $dir,
            " LIMIT $2"
        )
    };
    (next_id, $cmp:literal, $dir:literal) => {
        concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE id ",
            $cmp,
            " $4::text AND ($1::text = '' OR id ILIKE $1::text ESCAPE '\\') AND ",
            visible!(),
            " ORDER BY id ",
            $dir,
            " LIMIT $2"
        )
    };
    (next, $key:literal, $cmp:literal, $dir:literal) => {
        concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE (",
            $key,
            ", id) ",
            $cmp,
            " ($5::bigint, $4::text) \
             AND ($1::text = '' OR id ILIKE $1::text ESCAPE '\\') AND ",
            visible!(),
            " ORDER BY ",
            $key,
            " ",
            $dir,
            ", id ",
            $dir,
            " LIMIT $2"
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

/// The sort value of a user under a sort (a never-seen user has last_seen 0).
fn sort_value(user: &User, sort: UserSort) -> i64 {
    match sort {
        UserSort::Id => 0,
        UserSort::CreatedAt => user.created_at,
        UserSort::LastSeen => user.last_seen.unwrap_or(0),
    }
}

pub(super) async fn search_users(c: &Conn, q: &UserQuery) -> StoreResult<Page<User>> {
    let cursor = match &q.cursor {
        Some(cur) => Some(decode_cursor(cur).ok_or(StoreError::NotFound("cursor"))?),
        None => None,
    };
    let sql = search_users_sql(q.sort, q.order, cursor.is_some());
    let fetch = i64::from(q.limit) + 1;
    let pattern = like_pattern(&q.q);
    let viewer = q.viewer.as_deref().unwrap_or("");
    let rows = match &cursor {
        None => c.query(sql, &[&pattern, &fetch, &viewer]).await?,
        Some((_, after_id)) if q.sort == UserSort::Id => {
            c.query(sql, &[&pattern, &fetch, &viewer, after_id]).await?
        }
        Some((value, after_id)) => {
            c.query(sql, &[&pattern, &fetch, &viewer, after_id, value])
                .await?
        }
    };
    let mut items = all(&rows, rows::user)?;
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

/// Messages and distinct senders per period of a room; `$2 <= created_at < $3`. Periods are
/// computed in UTC; `date_trunc('week', …)` starts weeks on Monday.
macro_rules! room_activity {
    ($period:literal) => {
        concat!(
            "SELECT ",
            $period,
            " AS period, count(*), count(DISTINCT sender) FROM messages \
             WHERE room = $1 AND created_at >= $2 AND created_at < $3 \
             GROUP BY 1 ORDER BY 1"
        )
    };
}

pub(super) const ACTIVITY_BY_DAY: &str =
    room_activity!("to_char(to_timestamp(created_at / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')");
pub(super) const ACTIVITY_BY_WEEK: &str = room_activity!(
    "to_char(date_trunc('week', to_timestamp(created_at / 1000) AT TIME ZONE 'UTC'), 'YYYY-MM-DD')"
);
pub(super) const ACTIVITY_BY_MONTH: &str =
    room_activity!("to_char(to_timestamp(created_at / 1000) AT TIME ZONE 'UTC', 'YYYY-MM')");
pub(super) const ACTIVITY_BY_YEAR: &str =
    room_activity!("to_char(to_timestamp(created_at / 1000) AT TIME ZONE 'UTC', 'YYYY')");

pub(super) async fn room_activity(
    c: &Conn,
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
    let rows = c.query(sql, &[&room, &from, &to]).await?;
    all(&rows, |r| {
        Ok(ActivityBucket {
            period: col(r, 0)?,
            messages: count(r, 1)?,
            senders: count(r, 2)?,
        })
    })
}

pub(super) const READ_MARKER: &str =
    "SELECT room, seq, updated_at FROM read_markers WHERE user_id = $1 AND room = $2";

fn read_marker_row(r: &Row) -> StoreResult<ReadMarker> {
    Ok(ReadMarker {
        room: col(r, 0)?,
        seq: count(r, 1)?,
        updated_at: col(r, 2)?,
    })
}

pub(super) async fn read_marker(
    c: &Conn,
    user: &str,
    room: &str,
) -> StoreResult<Option<ReadMarker>> {
    c.query_opt(READ_MARKER, &[&user, &room])
        .await?
        .map(|r| read_marker_row(&r))
        .transpose()
}

/// Markers of the rooms the user is an active member of (a room left keeps its marker for a
/// return, but is not listed).
pub(super) const READ_MARKERS: &str = "SELECT r.room, r.seq, r.updated_at FROM read_markers r \
     JOIN members m ON m.room = r.room AND m.user_id = r.user_id AND m.status = 'active' \
     WHERE r.user_id = $1 ORDER BY r.room";

pub(super) async fn read_markers(c: &Conn, user: &str) -> StoreResult<Vec<ReadMarker>> {
    let rows = c.query(READ_MARKERS, &[&user]).await?;
    all(&rows, read_marker_row)
}
