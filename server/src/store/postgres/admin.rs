//! The operator's reads and changes (`crate::admin`): suspension stamps, every room, a user's
//! memberships and messages, and what is left of a user once their messages are deleted.

use roam_proto::{Member, Message, Room};

use super::conn::Conn;
use super::rows::{self, col, int, member_cols, message_cols, room_cols};
use crate::store::{Forgotten, StoreResult, Suspension};

const SUSPENSIONS: &str = "SELECT user_id, suspended, not_before FROM suspensions ORDER BY user_id";
const SET_SUSPENSION: &str = "INSERT INTO suspensions (user_id, suspended, not_before) \
     VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE \
     SET suspended = excluded.suspended, not_before = excluded.not_before";

const ALL_ROOMS: &str = concat!(
    "SELECT ",
    room_cols!(),
    " FROM rooms r WHERE r.deleted_at IS NULL AND r.name > $1 ORDER BY r.name LIMIT $2"
);

const MEMBERSHIPS: &str = concat!(
    "SELECT ",
    member_cols!(),
    " FROM members WHERE user_id = $1 \
     AND EXISTS (SELECT 1 FROM rooms r WHERE r.name = members.room AND r.deleted_at IS NULL) \
     ORDER BY room"
);

const MESSAGES_BY: &str = concat!(
    "SELECT ",
    message_cols!(),
    " FROM messages WHERE sender = $1 AND (room, seq) > ($2, $3) ORDER BY room, seq LIMIT $4"
);

/// The text of the user's messages still kept where ordinary deletion did not reach (a
/// deleted room's events and rows).
const REDACT_LEFT_OVER_EVENTS: &str = "UPDATE events SET \
     data = ((data::jsonb - 'attachment') || '{\"body\": \"\", \"deleted\": true}'::jsonb)::text \
     WHERE actor = $1 AND kind IN ('message_created', 'message_edited') \
     AND (data::jsonb ->> 'body' <> '' OR data::jsonb ? 'attachment')";
const REDACT_LEFT_OVER_MESSAGES: &str = "UPDATE messages SET body = ''::bytea, deleted = true, \
     attachment = NULL WHERE sender = $1 AND (body <> ''::bytea OR attachment IS NOT NULL)";
const DELETE_BLOB_REFS: &str = "DELETE FROM message_blobs b USING messages m \
     WHERE m.sender = $1 AND b.room = m.room AND b.seq = m.seq";

/// The user's own rows, each statement with the user as `$1`.
const FORGET: [&str; 13] = [
    "DELETE FROM users WHERE id = $1",
    "DELETE FROM presence WHERE user_id = $1",
    "DELETE FROM inboxes WHERE user_id = $1",
    "DELETE FROM notifications WHERE user_id = $1 OR actor = $1",
    "DELETE FROM idempotency WHERE user_id = $1",
    "DELETE FROM read_markers WHERE user_id = $1",
    "DELETE FROM members WHERE user_id = $1",
    "DELETE FROM role_caps WHERE user_id = $1",
    "DELETE FROM blob_charges WHERE owner = $1",
    "DELETE FROM push_devices WHERE user_id = $1",
    "DELETE FROM push_modes WHERE user_id = $1",
    "DELETE FROM push_queue WHERE user_id = $1",
    "DELETE FROM invitations WHERE invitee = $1 OR invited_by = $1",
];

pub(super) async fn suspensions(c: &Conn) -> StoreResult<Vec<Suspension>> {
    c.query(SUSPENSIONS, &[])
        .await?
        .iter()
        .map(|r| {
            Ok(Suspension {
                user: col(r, 0)?,
                suspended: col(r, 1)?,
                not_before: col(r, 2)?,
            })
        })
        .collect()
}

pub(super) async fn set_suspension(c: &Conn, s: &Suspension) -> StoreResult<()> {
    c.execute(SET_SUSPENSION, &[&s.user, &s.suspended, &s.not_before])
        .await
        .map(drop)
}

pub(super) async fn all_rooms(c: &Conn, after: &str, limit: u32) -> StoreResult<Vec<Room>> {
    c.query(ALL_ROOMS, &[&after, &i64::from(limit)])
        .await?
        .iter()
        .map(rows::room)
        .collect()
}

pub(super) async fn memberships(c: &Conn, user: &str) -> StoreResult<Vec<Member>> {
    c.query(MEMBERSHIPS, &[&user])
        .await?
        .iter()
        .map(rows::member)
        .collect()
}

pub(super) async fn messages_by(
    c: &Conn,
    user: &str,
    after: (&str, u64),
    limit: u32,
) -> StoreResult<Vec<Message>> {
    c.query(
        MESSAGES_BY,
        &[&user, &after.0, &int(after.1), &i64::from(limit)],
    )
    .await?
    .iter()
    .map(rows::message)
    .collect()
}

/// In one transaction.
pub(super) async fn forget_user(c: &Conn, user: &str) -> StoreResult<Forgotten> {
    c.begin().await?;
    let done = async {
        c.execute(DELETE_BLOB_REFS, &[&user]).await?;
        let mut out = Forgotten {
            events_redacted: c.execute(REDACT_LEFT_OVER_EVENTS, &[&user]).await?,
            rows_deleted: c.execute(REDACT_LEFT_OVER_MESSAGES, &[&user]).await?,
            collab_updates_anonymised: c.execute(super::collab::FORGET_ACTOR, &[&user]).await?,
        };
        for sql in FORGET {
            out.rows_deleted += c.execute(sql, &[&user]).await?;
        }
        Ok(out)
    }
    .await;
    match done {
        Ok(out) => {
            c.commit().await?;
            Ok(out)
        }
        Err(e) => {
            c.rollback().await;
            Err(e)
        }
    }
}
