//! Writes: each function runs on a writer lane's connection inside the one transaction of its
//! write (see `writer.rs`); any error rolls the whole write back.
//!
//! Sequence numbers are assigned here and nowhere else: [`Cx::reserve_seqs`] runs
//! `UPDATE rooms SET head_seq = head_seq + n … RETURNING head_seq`, which takes the room row's
//! lock until the transaction ends. A concurrent write to the same room, from this server or
//! another, waits on that lock, so a room's seqs are gap-free and committed in order.
//!
//! Idempotency is claimed first: the write inserts its `(user, key)` row before anything else
//! (`ON CONFLICT DO NOTHING`). A racing write with the same key, on any server, waits on the
//! unique index until the first one ends; if that one committed, the claim inserts nothing and
//! the write answers [`Committed::Replayed`] with the stored result; if it rolled back, the claim
//! succeeds and the write proceeds. The result is filled in when the change is done.

use roam_proto::{
    Document, EventBody, Invitation, InvitationStatus, Member, MemberStatus, Message, Notification,
    Role, Room, RoomEvent, RoomKind,
};
use serde_json::Value;

use super::conn::Conn;
use super::read;
use super::rows::{self, col, count, int};
use crate::store::sqlite::event_data;
use crate::store::{
    Change, Committed, IdemRecord, NewNotification, Output, Purged, RetentionCutoffs, StoreError,
    StoreResult, Write,
};
use tokio_postgres::types::ToSql;

/// The state of one write while it is applied.
struct Cx<'a> {
    c: &'a Conn,
    actor: &'a str,
    now: i64,
    /// Events appended so far, in seq order.
    events: Vec<RoomEvent>,
    /// Users whose unread count this write changed, besides the notified ones.
    unread: Vec<String>,
}

/// A notification about a message (a mention) also names the message's seq, which only exists
/// once the message is written.
fn with_message_seq(n: &NewNotification, output: &Output) -> NewNotification {
    let mut n = n.clone();
    if let (Output::Message(m), Some(data)) = (output, n.data.as_object_mut()) {
        if data.get("message").and_then(|v| v.as_str()) == Some(m.id.as_str()) {
            data.insert("seq".into(), m.seq.into());
        }
    }
    n
}

const CLAIM_IDEM: &str = "INSERT INTO idempotency \
     (user_id, key, op, fingerprint, result, created_at) VALUES ($1, $2, $3, $4, 'null', $5) \
     ON CONFLICT (user_id, key) DO NOTHING";
const FILL_IDEM: &str = "UPDATE idempotency SET result = $3, message = $4 \
     WHERE user_id = $1 AND key = $2";

/// What [`commit`] did.
pub(super) enum Outcome {
    /// Applied: the caller commits the transaction.
    Applied(Committed),
    /// The key was already recorded: nothing changed (the caller rolls back).
    Replayed(Committed),
}

/// Applies one [`Write`] inside the caller's open transaction: the idempotency claim, the
/// change, its events and notifications, and the idempotency result.
pub(super) async fn commit(c: &Conn, w: &Write) -> StoreResult<Outcome> {
    // The checks a write makes before its change, sent together (one round trip, run by the
    // server in this order): the idempotency claim, the user row (a replay's is undone with the
    // rest), whether the predecessor it names is applied, and the guard's row, locked.
    let claim = async {
        match &w.idem {
            Some(idem) => {
                let params: [&(dyn ToSql + Sync); 5] =
                    [&idem.user, &idem.key, &idem.op, &idem.fingerprint, &w.now];
                c.execute(CLAIM_IDEM, &params).await.map(Some)
            }
            None => Ok(None),
        }
    };
    let predecessor = async {
        match &w.after {
            Some(after) => c
                .query_opt(IDEM_EXISTS, &[&w.actor, after])
                .await
                .map(|row| Some(row.is_some())),
            None => Ok(None),
        }
    };
    let standing = async {
        match &w.guard {
            Some(guard) => c
                .query_opt(STANDING_LOCKED, &[&guard.room, &w.actor])
                .await
                .map(Some),
            None => Ok(None),
        }
    };
    let (claimed, (), predecessor, standing) = futures_util::try_join!(
        claim,
        ensure_user(c, &w.actor, w.now),
        predecessor,
        standing
    )?;
    if let (Some(0), Some(idem)) = (claimed, &w.idem) {
        let stored = read::idempotent_result(c, &idem.user, &idem.key)
            .await?
            .ok_or_else(|| StoreError::Backend("idempotency record vanished".into()))?;
        return Ok(Outcome::Replayed(Committed::Replayed(stored)));
    }
    if let (Some(false), Some(after)) = (predecessor, &w.after) {
        return Err(StoreError::OutOfOrder(after.clone()));
    }
    if let (Some(row), Some(guard)) = (standing, &w.guard) {
        check_guard(guard, row.as_ref())?;
    }
    let mut cx = Cx {
        c,
        actor: &w.actor,
        now: w.now,
        events: Vec::new(),
        unread: Vec::new(),
    };
    let output = cx.apply(&w.change).await?;

    let mut notifications = Vec::with_capacity(w.notify.len());
    for n in &w.notify {
        let n = with_message_seq(n, &output);
        notifications.push(cx.notify(&n).await?);
        cx.unread.push(n.user.clone());
    }
    let mut unread: Vec<(String, u64)> = Vec::with_capacity(cx.unread.len());
    for user in &cx.unread {
        if !unread.iter().any(|(u, _)| u == user) {
            unread.push((user.clone(), read::unread_count(c, user).await?));
        }
    }

    if let Some(idem) = &w.idem {
        record(c, idem, &output).await?;
    }
    Ok(Outcome::Applied(Committed::Applied {
        output,
        events: cx.events,
        notifications,
        unread,
    }))
}

/// A predecessor's key is applied when its row exists: a write claims its key in its own
/// transaction, so a row of a write still in progress elsewhere is not seen, and one of this
/// lane's batch is (same transaction).
const IDEM_EXISTS: &str = "SELECT 1 FROM idempotency WHERE user_id = $1 AND key = $2";

/// Locks the guarded room's row (the lock seq assignment and every membership change take) and
/// reads the actor's standing under it, so a ban or demotion committed before this write, on
/// any node, refuses it; one committed after waits for this write.
const STANDING_LOCKED: &str = "SELECT r.kind, m.role, m.status FROM rooms r \
     LEFT JOIN members m ON m.room = r.name AND m.user_id = $2 \
     WHERE r.name = $1 AND r.deleted_at IS NULL FOR NO KEY UPDATE OF r";

/// The guard against the row [`STANDING_LOCKED`] read (`None`: no live room).
fn check_guard(guard: &crate::rules::Guard, row: Option<&tokio_postgres::Row>) -> StoreResult<()> {
    match row {
        None => guard.check_stored(None),
        Some(r) => {
            let kind: &str = col(r, 0)?;
            let role: Option<&str> = col(r, 1)?;
            let status: Option<&str> = col(r, 2)?;
            guard.check_stored(Some((kind, role, status)))
        }
    }
}

/// Fills in the claimed key's result; one that echoes a message names it, so that deleting the
/// message can redact the stored result too.
async fn record(c: &Conn, idem: &IdemRecord, output: &Output) -> StoreResult<()> {
    let (result, message) = match output {
        Output::Message(m) => (
            serde_json::to_string(m).map_err(|e| StoreError::Backend(e.to_string()))?,
            Some(m.id.as_str()),
        ),
        other => (other.to_json().to_string(), None),
    };
    c.execute(FILL_IDEM, &[&idem.user, &idem.key, &result, &message])
        .await?;
    Ok(())
}

const ENSURE_USER: &str =
    "INSERT INTO users (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";

/// Puts the user in the directory if they are not there yet.
async fn ensure_user(c: &Conn, user: &str, now: i64) -> StoreResult<()> {
    c.execute(ENSURE_USER, &[&user, &now]).await?;
    Ok(())
}

pub(super) const TOUCH_USER: &str = "INSERT INTO users (id, created_at, last_seen) \
     VALUES ($1, $2, $2) ON CONFLICT (id) DO UPDATE \
     SET last_seen = greatest(coalesce(users.last_seen, 0), excluded.last_seen)";

pub(super) const SAVE_LAST_SEEN: &str = "INSERT INTO presence (user_id, last_seen) \
     VALUES ($1, $2) ON CONFLICT (user_id) DO UPDATE \
     SET last_seen = greatest(presence.last_seen, excluded.last_seen)";

/// Where a retention pass stands between two of its batches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct PurgeCursor {
    /// The table being purged (an index into the pass's order of tables).
    stage: usize,
    /// Event-log compaction walks the rooms by name: the last room it finished.
    room: String,
}

/// One batch of a retention pass: what it removed, and where the next batch starts (`None`
/// when the pass is over).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct PurgeStep {
    pub(super) purged: Purged,
    pub(super) next: Option<PurgeCursor>,
}

const PURGE_PRESENCE: &str = "DELETE FROM presence WHERE user_id IN \
     (SELECT user_id FROM presence WHERE last_seen < $1 LIMIT $2)";
/// Old versions that are not their document's current one, with the seq of their event.
const EXPIRED_VERSIONS: &str = "SELECT v.room, v.doc, v.version, v.seq FROM document_versions v \
     WHERE v.updated_at < $1 AND NOT EXISTS (SELECT 1 FROM documents d \
     WHERE d.room = v.room AND d.doc = v.doc AND d.version = v.version) LIMIT $2";
const DELETE_VERSION: &str =
    "DELETE FROM document_versions WHERE room = $1 AND doc = $2 AND version = $3";
/// The `document_updated` event of a version (retention blanks its content).
const DOCUMENT_EVENT: &str =
    "SELECT seq, data FROM events WHERE room = $1 AND seq = $2 AND kind = 'document_updated'";
const PURGE_NOTIFICATIONS: &str = "DELETE FROM notifications WHERE (user_id, seq) IN \
     (SELECT user_id, seq FROM notifications WHERE created_at < $1 LIMIT $2)";
const PURGE_IDEMPOTENCY: &str = "DELETE FROM idempotency WHERE (user_id, key) IN \
     (SELECT user_id, key FROM idempotency WHERE created_at < $1 LIMIT $2)";
const PURGE_INVITATIONS: &str = "DELETE FROM invitations WHERE id IN \
     (SELECT id FROM invitations WHERE expires_at < $1 LIMIT $2)";
const NEXT_ROOM: &str = "SELECT name, head_seq FROM rooms WHERE name > $1 ORDER BY name LIMIT 1";
const OLDEST_EVENTS: &str = "SELECT seq, at FROM events WHERE room = $1 ORDER BY seq LIMIT $2";
const DELETE_EVENTS_UPTO: &str = "DELETE FROM events WHERE room = $1 AND seq <= $2";

/// The tables of a pass, in order.
const PURGE_STAGES: usize = 6;

/// One batch of a retention pass, inside the caller's transaction: removes at most
/// `c.batch_rows` rows (event-log compaction also counts each room it looks at), starting where
/// `from` says. A document's current version is kept whatever its age; an event log keeps a
/// suffix (the oldest events go first, the newest one of each room always stays).
pub(super) async fn purge_batch(
    c: &Conn,
    cut: &RetentionCutoffs,
    from: &PurgeCursor,
) -> StoreResult<PurgeStep> {
    let batch = u64::from(cut.batch_rows.max(1));
    let mut cursor = from.clone();
    let mut purged = Purged {
        batches: 1,
        ..Purged::default()
    };
    let mut left = batch;
    while cursor.stage < PURGE_STAGES {
        let (removed, finished) = match cursor.stage {
            0 => limited(c, PURGE_PRESENCE, cut.presence_before, left).await?,
            1 => purge_versions(c, cut.document_history_before, left).await?,
            2 => limited(c, PURGE_NOTIFICATIONS, cut.notifications_before, left).await?,
            3 => limited(c, PURGE_IDEMPOTENCY, cut.idempotency_before, left).await?,
            4 => limited(c, PURGE_INVITATIONS, cut.invitations_before, left).await?,
            _ => match cut.events_before {
                Some(before) => {
                    let (removed, used, finished) =
                        compact_events(c, before, left, &mut cursor.room).await?;
                    purged.events += removed;
                    left = left.saturating_sub(used);
                    if !finished {
                        return Ok(PurgeStep {
                            purged,
                            next: Some(cursor),
                        });
                    }
                    cursor.stage += 1;
                    continue;
                }
                None => (0, true),
            },
        };
        match cursor.stage {
            0 => purged.presence += removed,
            1 => purged.document_versions += removed,
            2 => purged.notifications += removed,
            3 => purged.idempotency_keys += removed,
            _ => purged.invitations += removed,
        }
        left = left.saturating_sub(removed);
        if !finished {
            return Ok(PurgeStep {
                purged,
                next: Some(cursor),
            });
        }
        cursor.stage += 1;
    }
    Ok(PurgeStep { purged, next: None })
}

/// Runs a `DELETE … IN (SELECT … LIMIT)` statement; `finished` when it removed fewer rows than
/// it could.
async fn limited(c: &Conn, sql: &'static str, cutoff: i64, left: u64) -> StoreResult<(u64, bool)> {
    if left == 0 {
        return Ok((0, false));
    }
    let n = c.execute(sql, &[&cutoff, &int(left)]).await?;
    Ok((n, n < left))
}

/// Removes expired document versions and blanks the content of their events.
async fn purge_versions(c: &Conn, cutoff: i64, left: u64) -> StoreResult<(u64, bool)> {
    if left == 0 {
        return Ok((0, false));
    }
    let rows = c.query(EXPIRED_VERSIONS, &[&cutoff, &int(left)]).await?;
    for r in &rows {
        let (room, doc, version): (&str, &str, i64) = (col(r, 0)?, col(r, 1)?, col(r, 2)?);
        if let Some(seq) = rows::opt_seq(r, 3)? {
            // A document_updated event whose version history retention removed keeps no
            // content.
            redact_events(
                c,
                room,
                DOCUMENT_EVENT,
                &[&room, &int(seq)],
                &[("content", "".into())],
            )
            .await?;
        }
        c.execute(DELETE_VERSION, &[&room, &doc, &version]).await?;
    }
    let n = rows.len() as u64;
    Ok((n, n < left))
}

/// Event-log compaction: walks the rooms by name after `room` and deletes each one's oldest
/// events older than `before`, up to (never including) its newest. Returns the events removed,
/// the budget used (each room visited costs one) and whether every room is done; `room` is
/// left at the last room finished.
async fn compact_events(
    c: &Conn,
    before: i64,
    mut left: u64,
    room: &mut String,
) -> StoreResult<(u64, u64, bool)> {
    let budget = left;
    let mut removed = 0;
    while left > 0 {
        let Some(next) = c.query_opt(NEXT_ROOM, &[&room.as_str()]).await? else {
            return Ok((removed, budget - left, true));
        };
        let name: String = col(&next, 0)?;
        let head = count(&next, 1)?;
        left -= 1;
        if left == 0 {
            break;
        }
        let oldest = c
            .query(OLDEST_EVENTS, &[&name, &int(left)])
            .await?
            .iter()
            .map(rows::seq_at)
            .collect::<StoreResult<Vec<_>>>()?;
        let expired = oldest
            .iter()
            .take_while(|(seq, at)| *at < before && *seq < head)
            .count();
        let may_have_more = expired == oldest.len() && oldest.len() as u64 == left;
        if let Some(&(last, _)) = expired.checked_sub(1).and_then(|i| oldest.get(i)) {
            let n = c.execute(DELETE_EVENTS_UPTO, &[&name, &int(last)]).await?;
            removed += n;
            left = left.saturating_sub(n);
        }
        if may_have_more {
            // The room may have more expired events than this batch could take: the next
            // batch starts with it again.
            break;
        }
        *room = name;
    }
    Ok((removed, budget - left, false))
}

const ROOM_STATE: &str = "SELECT deleted_at IS NOT NULL FROM rooms WHERE name = $1";
const INSERT_ROOM: &str = "INSERT INTO rooms \
     (name, head_seq, kind, owner, created_by, created_at, updated_at, title, metadata) \
     VALUES ($1, 0, $2, $3, $4, $5, $5, $6, $7) ON CONFLICT (name) DO NOTHING";
const UPDATE_ROOM: &str = "UPDATE rooms SET title = coalesce($2::bytea, title), \
     kind = coalesce($3::text, kind), metadata = coalesce($4::text, metadata), updated_at = $5 \
     WHERE name = $1 AND deleted_at IS NULL";
/// Takes the room's row lock until the transaction ends (see the module docs).
const BUMP_SEQ: &str = "UPDATE rooms SET head_seq = head_seq + $2 \
     WHERE name = $1 AND deleted_at IS NULL RETURNING head_seq";
const INSERT_EVENT: &str = "INSERT INTO events (room, seq, at, actor, kind, data, message) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
/// The events that carry a message's text: its creation (by seq) and its edits (by name).
const CREATED_EVENT: &str =
    "SELECT seq, data FROM events WHERE room = $1 AND seq = $2 AND kind = 'message_created'";
const EDIT_EVENTS: &str = "SELECT seq, data FROM events WHERE room = $1 AND message = $2";
const SET_EVENT_DATA: &str = "UPDATE events SET data = $3 WHERE room = $1 AND seq = $2";
/// The idempotency results that echo a message.
const RESULTS_OF: &str = "SELECT user_id, key, result FROM idempotency WHERE message = $1";
const SET_RESULT: &str = "UPDATE idempotency SET result = $3 WHERE user_id = $1 AND key = $2";
const INSERT_MEMBER: &str = "INSERT INTO members (room, user_id, role, status, joined_at) \
     VALUES ($1, $2, $3, $4, $5)";
const INSERT_MESSAGE: &str = "INSERT INTO messages \
     (id, room, seq, sender, body, reply_to, created_at, edited_at, deleted) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, false)";
const DELETE_ROLE_CAP: &str = "DELETE FROM role_caps WHERE room = $1 AND user_id = $2";
/// The user's inbox counter (not the directory: a notification for an id nobody has used yet
/// — an invitation — must not list that id as a user).
const NEXT_NOTIFICATION_SEQ: &str = "INSERT INTO inboxes (user_id, notif_seq) VALUES ($1, 1) \
     ON CONFLICT (user_id) DO UPDATE SET notif_seq = inboxes.notif_seq + 1 RETURNING notif_seq";
const INSERT_NOTIFICATION: &str = "INSERT INTO notifications \
     (user_id, seq, id, kind, room, actor, data, created_at, read) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, false)";
const ROLE_CAP: &str = "SELECT role FROM role_caps WHERE room = $1 AND user_id = $2";
const SET_ROLE_CAP: &str = "INSERT INTO role_caps (room, user_id, role) VALUES ($1, $2, $3) \
     ON CONFLICT (room, user_id) DO UPDATE SET role = excluded.role";
const DELETE_MEMBER: &str = "DELETE FROM members WHERE room = $1 AND user_id = $2";
const SET_MEMBER_ROLE: &str = "UPDATE members SET role = $3 WHERE room = $1 AND user_id = $2";
const SET_OWNER: &str = "UPDATE rooms SET owner = $2, updated_at = $3 WHERE name = $1";
const BAN_MEMBER: &str = "UPDATE members SET status = 'banned' WHERE room = $1 AND user_id = $2";
const WITHDRAW_INVITATIONS: &str = "UPDATE invitations SET status = 'expired' \
     WHERE room = $1 AND invitee = $2 AND status = 'pending'";
const UNBAN: &str = "DELETE FROM members WHERE room = $1 AND user_id = $2 AND status = 'banned'";
const INSERT_INVITATION: &str = "INSERT INTO invitations \
     (id, room, invited_by, invitee, role, status, expires_at, created_at) \
     VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7)";
const SET_INVITATION_STATUS: &str = "UPDATE invitations SET status = $2 WHERE id = $1";
const EDIT_MESSAGE: &str = "UPDATE messages SET body = $2, edited_at = $3 WHERE id = $1";
const DELETE_MESSAGE: &str = "UPDATE messages SET body = ''::bytea, deleted = true WHERE id = $1";
const INSERT_VERSION: &str = "INSERT INTO document_versions \
     (room, doc, version, content, updated_by, updated_at, seq) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
const SET_CURRENT_VERSION: &str = "INSERT INTO documents (room, doc, version) VALUES ($1, $2, $3) \
     ON CONFLICT (room, doc) DO UPDATE SET version = excluded.version";
const MARK_ALL_READ: &str = "UPDATE notifications SET read = true WHERE user_id = $1 AND NOT read";
const MARK_READ: &str = "UPDATE notifications SET read = true \
     WHERE user_id = $1 AND id = ANY($2::text[]) AND NOT read";
/// Every table a deleted room empties (its row and its events stay).
const DELETE_ROOM_CONTENT: [&str; 7] = [
    "DELETE FROM members WHERE room = $1",
    "DELETE FROM messages WHERE room = $1",
    "DELETE FROM documents WHERE room = $1",
    "DELETE FROM document_versions WHERE room = $1",
    "DELETE FROM invitations WHERE room = $1",
    "DELETE FROM role_caps WHERE room = $1",
    "DELETE FROM read_markers WHERE room = $1",
];
const MARK_ROOM_DELETED: &str = "UPDATE rooms SET deleted_at = $2, updated_at = $2 WHERE name = $1";

const LOCK_ROOM: &str = "SELECT 1 FROM rooms WHERE name = $1 FOR NO KEY UPDATE";
/// An invitation, locked until the write ends (accepting, rejecting and revoking race).
const INVITATION_FOR_UPDATE: &str = concat!(
    "SELECT ",
    rows::invitation_cols!(),
    " FROM invitations WHERE id = $1 FOR UPDATE"
);

/// The room whose row lock a change takes before its checks: changes that read state and then
/// act on it. (Messages and documents take the lock with their seq before reading; creating and
/// updating a room lock the row by writing it first.)
fn checked_under_lock(change: &Change) -> Option<&str> {
    match change {
        Change::AddMember { .. }
        | Change::RemoveMember { .. }
        | Change::SetRole { .. }
        | Change::TransferOwnership { .. }
        | Change::Ban { .. }
        | Change::Unban { .. }
        | Change::CreateInvitation { .. }
        | Change::EditMessage { .. }
        | Change::DeleteMessage { .. } => change.room(),
        _ => None,
    }
}

/// The invitation with its row locked until the write ends.
async fn invitation_locked(c: &Conn, id: &str) -> StoreResult<Option<Invitation>> {
    c.query_opt(INVITATION_FOR_UPDATE, &[&id])
        .await?
        .map(|r| rows::invitation(&r))
        .transpose()
}

/// Rewrites the JSON `data` of the events `select` finds (`seq, data` rows) with `fields` set.
/// (Done here rather than with jsonb: jsonb refuses the `\u0000` that a stored text may hold.)
async fn redact_events(
    c: &Conn,
    room: &str,
    select: &'static str,
    params: super::conn::Params<'_>,
    fields: &[(&str, Value)],
) -> StoreResult<()> {
    for r in c.query(select, params).await? {
        let seq: i64 = col(&r, 0)?;
        let data = with_fields(col(&r, 1)?, fields)?;
        c.execute(SET_EVENT_DATA, &[&room, &seq, &data]).await?;
    }
    Ok(())
}

/// The JSON object `json` with `fields` set (anything else is left as it is).
fn with_fields(json: &str, fields: &[(&str, Value)]) -> StoreResult<String> {
    let mut v: Value =
        serde_json::from_str(json).map_err(|e| StoreError::Backend(format!("stored JSON: {e}")))?;
    if let Some(obj) = v.as_object_mut() {
        for (k, val) in fields {
            obj.insert((*k).to_owned(), val.clone());
        }
    }
    Ok(v.to_string())
}

/// A marker only moves forward: an equal or lower seq leaves the row (and `updated_at`) alone.
const MOVE_READ_MARKER: &str = "INSERT INTO read_markers (user_id, room, seq, updated_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, room) DO UPDATE \
     SET seq = excluded.seq, updated_at = excluded.updated_at \
     WHERE excluded.seq > read_markers.seq";
/// The user's unread mentions in a room up to a seq (served by the unread index). `json`, not
/// `jsonb`: the data may hold a `\u0000` that jsonb refuses.
pub(super) const READ_MENTIONS: &str = "UPDATE notifications SET read = true \
     WHERE user_id = $1 AND NOT read AND kind = 'mentioned' AND room = $2 \
     AND (data::json ->> 'seq')::bigint <= $3";

fn conflict(what: &str) -> StoreError {
    StoreError::Conflict(what.to_owned())
}

impl Cx<'_> {
    async fn apply(&mut self, change: &Change) -> StoreResult<Output> {
        if let Some(room) = checked_under_lock(change) {
            self.lock_room(room).await?;
        }
        match change {
            Change::CreateRoom {
                name,
                kind,
                title,
                metadata,
                owner,
            } => self.create_room(name, *kind, title, metadata, owner).await,
            Change::UpdateRoom {
                name,
                title,
                kind,
                metadata,
            } => {
                self.update_room(name, title.as_deref(), *kind, metadata.as_ref())
                    .await
            }
            Change::DeleteRoom { name } => self.delete_room(name).await,
            Change::AddMember {
                room,
                user,
                role,
                invitation,
            } => {
                self.add_member(room, user, *role, invitation.as_deref())
                    .await
            }
            Change::RemoveMember { room, user } => self.remove_member(room, user).await,
            Change::SetRole { room, user, role } => self.set_role(room, user, *role).await,
            Change::TransferOwnership { room, from, to } => self.transfer(room, from, to).await,
            Change::Ban { room, user } => self.ban(room, user).await,
            Change::Unban { room, user } => self.unban(room, user).await,
            Change::CreateInvitation {
                id,
                room,
                invitee,
                role,
                expires_at,
            } => {
                self.create_invitation(id, room, invitee, *role, *expires_at)
                    .await
            }
            Change::RejectInvitation { id } => {
                self.close_invitation(id, InvitationStatus::Rejected).await
            }
            Change::RevokeInvitation { id } => {
                self.close_invitation(id, InvitationStatus::Revoked).await
            }
            Change::InsertMessage {
                id,
                room,
                body,
                reply_to,
            } => {
                self.insert_message(id, room, body, reply_to.as_deref())
                    .await
            }
            Change::EditMessage { room, id, body } => self.edit_message(room, id, body).await,
            Change::DeleteMessage { room, id } => self.delete_message(room, id).await,
            Change::ImportMessages { room, messages } => self.import_messages(room, messages).await,
            Change::PutDocument {
                room,
                doc,
                base_version,
                content,
            } => self.put_document(room, doc, *base_version, content).await,
            Change::MarkRead { ids } => self.mark_read(ids.as_deref()).await,
            Change::MarkRoomRead { room, seq } => self.mark_room_read(room, *seq).await,
        }
    }

    // --- plumbing -------------------------------------------------------------------------

    /// Takes the room's row lock (the one seq assignment takes) before the change reads
    /// anything, so its checks see every write committed before it, on any server.
    async fn lock_room(&self, room: &str) -> StoreResult<()> {
        self.c.query(LOCK_ROOM, &[&room]).await?;
        Ok(())
    }

    async fn live_room(&self, name: &str) -> StoreResult<Room> {
        read::room(self.c, name)
            .await?
            .ok_or(StoreError::NotFound("room"))
    }

    /// Reserves `n` seqs of a live room and returns the last one; the room's row stays locked
    /// until this write ends.
    async fn reserve_seqs(&self, room: &str, n: u64) -> StoreResult<u64> {
        let row = self
            .c
            .query_opt(BUMP_SEQ, &[&room, &int(n)])
            .await?
            .ok_or(StoreError::NotFound("room"))?;
        count(&row, 0)
    }

    async fn next_seq(&self, room: &str) -> StoreResult<u64> {
        self.reserve_seqs(room, 1).await
    }

    /// Appends an event with a seq obtained from [`Cx::next_seq`].
    async fn emit(&mut self, room: &str, seq: u64, body: EventBody) -> StoreResult<()> {
        self.insert_event(room, seq, &body).await?;
        self.push_event(room, seq, body);
        Ok(())
    }

    /// Writes an event's row (see [`Cx::emit`]).
    async fn insert_event(&self, room: &str, seq: u64, body: &EventBody) -> StoreResult<()> {
        let (kind, data) = event_data(body)?;
        // An edit names its message, so that deleting the message finds it (a creation is
        // found by the message's seq).
        let message = match body {
            EventBody::MessageEdited(m) => Some(m.id.as_str()),
            _ => None,
        };
        self.c
            .execute(
                INSERT_EVENT,
                &[
                    &room,
                    &int(seq),
                    &self.now,
                    &self.actor,
                    &kind,
                    &data,
                    &message,
                ],
            )
            .await?;
        Ok(())
    }

    /// Records a written event for the hub.
    fn push_event(&mut self, room: &str, seq: u64, body: EventBody) {
        self.events.push(RoomEvent {
            room: room.to_owned(),
            seq,
            at: self.now,
            actor: self.actor.to_owned(),
            body,
        });
    }

    /// Takes the next seq and appends the event made from it.
    async fn event(&mut self, room: &str, body: EventBody) -> StoreResult<u64> {
        let seq = self.next_seq(room).await?;
        self.emit(room, seq, body).await?;
        Ok(seq)
    }

    async fn active_member(&self, room: &str, user: &str) -> StoreResult<Member> {
        read::member(self.c, room, user)
            .await?
            .filter(|m| m.status == MemberStatus::Active)
            .ok_or(StoreError::NotFound("member"))
    }

    async fn notify(&mut self, n: &NewNotification) -> StoreResult<Notification> {
        let row = self.c.query_one(NEXT_NOTIFICATION_SEQ, &[&n.user]).await?;
        let seq = count(&row, 0)?;
        let data = n.data.to_string();
        self.c
            .execute(
                INSERT_NOTIFICATION,
                &[
                    &n.user,
                    &int(seq),
                    &n.id,
                    &n.kind,
                    &n.room,
                    &self.actor,
                    &data,
                    &self.now,
                ],
            )
            .await?;
        Ok(Notification {
            seq,
            id: n.id.clone(),
            user: n.user.clone(),
            kind: n.kind.clone(),
            room: n.room.clone(),
            actor: Some(self.actor.to_owned()),
            data: n.data.clone(),
            created_at: self.now,
            read: false,
        })
    }

    // --- rooms ----------------------------------------------------------------------------

    async fn create_room(
        &mut self,
        name: &str,
        kind: RoomKind,
        title: &str,
        metadata: &Value,
        owner: &str,
    ) -> StoreResult<Output> {
        let metadata = metadata.to_string();
        let inserted = self
            .c
            .execute(
                INSERT_ROOM,
                &[
                    &name,
                    &kind.as_str(),
                    &owner,
                    &self.actor,
                    &self.now,
                    &title.as_bytes(),
                    &metadata,
                ],
            )
            .await?;
        if inserted == 0 {
            let deleted: Option<bool> = match self.c.query_opt(ROOM_STATE, &[&name]).await? {
                Some(r) => Some(col(&r, 0)?),
                None => None,
            };
            return Err(match deleted {
                Some(true) => conflict("room name was used by a deleted room"),
                _ => conflict("room name taken"),
            });
        }
        let seq = self.next_seq(name).await?;
        let created = self.live_room(name).await?;
        self.emit(name, seq, EventBody::RoomCreated(created))
            .await?;

        ensure_user(self.c, owner, self.now).await?;
        let member = Member {
            room: name.to_owned(),
            user: owner.to_owned(),
            role: Role::Owner,
            status: MemberStatus::Active,
            joined_at: self.now,
        };
        self.insert_member(&member).await?;
        self.event(name, EventBody::MemberJoined(member)).await?;
        Ok(Output::Room(self.live_room(name).await?))
    }

    async fn update_room(
        &mut self,
        name: &str,
        title: Option<&str>,
        kind: Option<RoomKind>,
        metadata: Option<&Value>,
    ) -> StoreResult<Output> {
        let metadata = metadata.map(Value::to_string);
        let changed = self
            .c
            .execute(
                UPDATE_ROOM,
                &[
                    &name,
                    &title.map(str::as_bytes),
                    &kind.map(RoomKind::as_str),
                    &metadata,
                    &self.now,
                ],
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound("room"));
        }
        let seq = self.next_seq(name).await?;
        let room = self.live_room(name).await?;
        self.emit(name, seq, EventBody::RoomUpdated(room.clone()))
            .await?;
        Ok(Output::Room(room))
    }

    /// Everything of the room goes except its row (marked deleted) and its events.
    async fn delete_room(&mut self, name: &str) -> StoreResult<Output> {
        self.event(
            name,
            EventBody::RoomDeleted {
                name: name.to_owned(),
            },
        )
        .await?;
        for sql in DELETE_ROOM_CONTENT {
            self.c.execute(sql, &[&name]).await?;
        }
        self.c
            .execute(MARK_ROOM_DELETED, &[&name, &self.now])
            .await?;
        Ok(Output::Empty)
    }

    // --- members --------------------------------------------------------------------------

    async fn insert_member(&self, m: &Member) -> StoreResult<()> {
        self.c
            .execute(
                INSERT_MEMBER,
                &[
                    &m.room,
                    &m.user,
                    &m.role.as_str(),
                    &m.status.as_str(),
                    &m.joined_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn add_member(
        &mut self,
        room: &str,
        user: &str,
        role: Role,
        invitation: Option<&str>,
    ) -> StoreResult<Output> {
        self.live_room(room).await?;
        match read::member(self.c, room, user).await?.map(|m| m.status) {
            Some(MemberStatus::Active) => return Err(conflict("already an active member")),
            Some(MemberStatus::Banned) => return Err(conflict("user is banned from the room")),
            None => {}
        }
        if let Some(id) = invitation {
            let inv = invitation_locked(self.c, id)
                .await?
                .ok_or(StoreError::NotFound("invitation"))?;
            if inv.room != room || inv.invitee != user {
                return Err(conflict("invitation is for another room or user"));
            }
            if inv.status != InvitationStatus::Pending {
                return Err(conflict("invitation is not pending"));
            }
            if self.now > inv.expires_at {
                return Err(conflict("invitation has expired"));
            }
            self.c
                .execute(SET_INVITATION_STATUS, &[&id, &"accepted"])
                .await?;
        }
        // An invitation names the role it grants; joining without one gives back at most the
        // role the user left with.
        let role = match invitation {
            Some(_) => role,
            None => match self.role_cap(room, user).await? {
                Some(cap) if cap.rank() < role.rank() => cap,
                _ => role,
            },
        };
        self.c.execute(DELETE_ROLE_CAP, &[&room, &user]).await?;
        ensure_user(self.c, user, self.now).await?;
        let member = Member {
            room: room.to_owned(),
            user: user.to_owned(),
            role,
            status: MemberStatus::Active,
            joined_at: self.now,
        };
        self.insert_member(&member).await?;
        self.event(room, EventBody::MemberJoined(member.clone()))
            .await?;
        Ok(Output::Member(member))
    }

    /// The highest role the user may rejoin with, if they left demoted.
    async fn role_cap(&self, room: &str, user: &str) -> StoreResult<Option<Role>> {
        let cap: Option<String> = match self.c.query_opt(ROLE_CAP, &[&room, &user]).await? {
            Some(r) => Some(col(&r, 0)?),
            None => None,
        };
        Ok(cap.as_deref().and_then(Role::parse))
    }

    async fn remove_member(&mut self, room: &str, user: &str) -> StoreResult<Output> {
        let member = self.active_member(room, user).await?;
        if member.role == Role::Owner {
            return Err(conflict("the owner must transfer ownership before leaving"));
        }
        self.c.execute(DELETE_MEMBER, &[&room, &user]).await?;
        if member.role.rank() < Role::Member.rank() {
            self.c
                .execute(SET_ROLE_CAP, &[&room, &user, &member.role.as_str()])
                .await?;
        }
        self.event(
            room,
            EventBody::MemberLeft {
                user: user.to_owned(),
            },
        )
        .await?;
        Ok(Output::Empty)
    }

    async fn set_role(&mut self, room: &str, user: &str, role: Role) -> StoreResult<Output> {
        let mut member = self.active_member(room, user).await?;
        if role == Role::Owner || member.role == Role::Owner {
            return Err(conflict("ownership changes only by transfer"));
        }
        self.set_member_role(room, user, role).await?;
        member.role = role;
        self.event(room, EventBody::MemberUpdated(member.clone()))
            .await?;
        Ok(Output::Member(member))
    }

    async fn set_member_role(&self, room: &str, user: &str, role: Role) -> StoreResult<()> {
        self.c
            .execute(SET_MEMBER_ROLE, &[&room, &user, &role.as_str()])
            .await?;
        Ok(())
    }

    async fn transfer(&mut self, room: &str, from: &str, to: &str) -> StoreResult<Output> {
        let current = self.live_room(room).await?;
        if current.owner != from {
            return Err(conflict("only the current owner can transfer ownership"));
        }
        if from == to {
            return Err(conflict("already the owner"));
        }
        let mut new_owner = self.active_member(room, to).await?;
        let mut old_owner = self.active_member(room, from).await?;
        self.set_member_role(room, to, Role::Owner).await?;
        self.set_member_role(room, from, Role::Admin).await?;
        self.c.execute(SET_OWNER, &[&room, &to, &self.now]).await?;
        new_owner.role = Role::Owner;
        old_owner.role = Role::Admin;
        self.event(room, EventBody::MemberUpdated(new_owner))
            .await?;
        self.event(room, EventBody::MemberUpdated(old_owner))
            .await?;
        Ok(Output::Room(self.live_room(room).await?))
    }

    /// Pending invitations of a banned user are withdrawn: they read `expired` from now on.
    async fn ban(&mut self, room: &str, user: &str) -> StoreResult<Output> {
        self.live_room(room).await?;
        match read::member(self.c, room, user).await? {
            Some(m) if m.status == MemberStatus::Banned => {
                return Err(conflict("user is already banned"))
            }
            Some(m) if m.role == Role::Owner => return Err(conflict("the owner cannot be banned")),
            Some(_) => {
                self.c.execute(BAN_MEMBER, &[&room, &user]).await?;
            }
            None => {
                self.insert_member(&Member {
                    room: room.to_owned(),
                    user: user.to_owned(),
                    role: Role::Guest,
                    status: MemberStatus::Banned,
                    joined_at: self.now,
                })
                .await?;
            }
        }
        self.c
            .execute(WITHDRAW_INVITATIONS, &[&room, &user])
            .await?;
        self.event(
            room,
            EventBody::MemberBanned {
                user: user.to_owned(),
            },
        )
        .await?;
        Ok(Output::Empty)
    }

    async fn unban(&mut self, room: &str, user: &str) -> StoreResult<Output> {
        self.live_room(room).await?;
        let removed = self.c.execute(UNBAN, &[&room, &user]).await?;
        if removed == 0 {
            return Err(StoreError::NotFound("ban"));
        }
        self.event(
            room,
            EventBody::MemberUnbanned {
                user: user.to_owned(),
            },
        )
        .await?;
        Ok(Output::Empty)
    }

    // --- invitations ----------------------------------------------------------------------

    async fn create_invitation(
        &mut self,
        id: &str,
        room: &str,
        invitee: &str,
        role: Role,
        expires_at: i64,
    ) -> StoreResult<Output> {
        self.live_room(room).await?;
        match read::member(self.c, room, invitee).await?.map(|m| m.status) {
            Some(MemberStatus::Active) => return Err(conflict("already an active member")),
            Some(MemberStatus::Banned) => return Err(conflict("user is banned from the room")),
            None => {}
        }
        if read::pending_invitation(self.c, room, invitee, self.now)
            .await?
            .is_some()
        {
            return Err(conflict("a pending invitation exists"));
        }
        // No directory entry for the invitee: an id is listed once its user has been seen.
        let inv = Invitation {
            id: id.to_owned(),
            room: room.to_owned(),
            invited_by: self.actor.to_owned(),
            invitee: invitee.to_owned(),
            role,
            status: InvitationStatus::Pending,
            expires_at,
            created_at: self.now,
        };
        self.c
            .execute(
                INSERT_INVITATION,
                &[
                    &inv.id,
                    &inv.room,
                    &inv.invited_by,
                    &inv.invitee,
                    &role.as_str(),
                    &expires_at,
                    &self.now,
                ],
            )
            .await?;
        Ok(Output::Invitation(inv))
    }

    /// A pending invitation becomes `rejected` or `revoked`.
    async fn close_invitation(
        &mut self,
        id: &str,
        status: InvitationStatus,
    ) -> StoreResult<Output> {
        let mut inv = invitation_locked(self.c, id)
            .await?
            .ok_or(StoreError::NotFound("invitation"))?;
        if inv.status != InvitationStatus::Pending || self.now > inv.expires_at {
            return Err(conflict("invitation is no longer pending"));
        }
        self.c
            .execute(SET_INVITATION_STATUS, &[&id, &status.as_str()])
            .await?;
        inv.status = status;
        Ok(Output::Invitation(inv))
    }

    // --- messages -------------------------------------------------------------------------

    async fn insert_message(
        &mut self,
        id: &str,
        room: &str,
        body: &str,
        reply_to: Option<&str>,
    ) -> StoreResult<Output> {
        let seq = self.next_seq(room).await?;
        if let Some(parent) = reply_to {
            if read::message(self.c, room, parent).await?.is_none() {
                return Err(StoreError::NotFound("reply_to message"));
            }
        }
        let msg = Message {
            id: id.to_owned(),
            room: room.to_owned(),
            seq,
            sender: self.actor.to_owned(),
            body: body.to_owned(),
            reply_to: reply_to.map(str::to_owned),
            created_at: self.now,
            edited_at: None,
            deleted: false,
        };
        // The row and its event go in one round trip (the room row is locked meanwhile).
        let body = EventBody::MessageCreated(msg.clone());
        futures_util::try_join!(
            self.insert_message_row(&msg),
            self.insert_event(room, seq, &body)
        )?;
        self.push_event(room, seq, body);
        Ok(Output::Message(msg))
    }

    async fn insert_message_row(&self, m: &Message) -> StoreResult<()> {
        self.c
            .execute(
                INSERT_MESSAGE,
                &[
                    &m.id,
                    &m.room,
                    &int(m.seq),
                    &m.sender,
                    &m.body.as_bytes(),
                    &m.reply_to,
                    &m.created_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn live_message(&self, room: &str, id: &str) -> StoreResult<Message> {
        read::message(self.c, room, id)
            .await?
            .filter(|m| !m.deleted)
            .ok_or(StoreError::NotFound("message"))
    }

    async fn edit_message(&mut self, room: &str, id: &str, body: &str) -> StoreResult<Output> {
        let mut msg = self.live_message(room, id).await?;
        self.c
            .execute(EDIT_MESSAGE, &[&id, &body.as_bytes(), &self.now])
            .await?;
        msg.body = body.to_owned();
        msg.edited_at = Some(self.now);
        self.event(room, EventBody::MessageEdited(msg.clone()))
            .await?;
        Ok(Output::Message(msg))
    }

    /// Deleting redacts: the row, the events that carried its text (its creation and every
    /// edit) and the idempotency results that echo it, all in this transaction.
    async fn delete_message(&mut self, room: &str, id: &str) -> StoreResult<Output> {
        let mut msg = self.live_message(room, id).await?;
        self.c.execute(DELETE_MESSAGE, &[&id]).await?;
        let blank = [("body", Value::from("")), ("deleted", Value::from(true))];
        redact_events(self.c, room, CREATED_EVENT, &[&room, &int(msg.seq)], &blank).await?;
        redact_events(self.c, room, EDIT_EVENTS, &[&room, &id], &blank).await?;
        for r in self.c.query(RESULTS_OF, &[&id]).await? {
            let (user, key, result): (&str, &str, &str) = (col(&r, 0)?, col(&r, 1)?, col(&r, 2)?);
            let redacted = with_fields(result, &blank)?;
            self.c
                .execute(SET_RESULT, &[&user, &key, &redacted])
                .await?;
        }
        msg.body.clear();
        msg.deleted = true;
        self.event(room, EventBody::MessageDeleted(msg.clone()))
            .await?;
        Ok(Output::Message(msg))
    }

    /// Reserves all the seqs at once, then inserts message and event rows inside this one
    /// transaction.
    async fn import_messages(
        &mut self,
        room: &str,
        messages: &[(String, String)],
    ) -> StoreResult<Output> {
        if messages.is_empty() {
            self.live_room(room).await?;
            return Ok(Output::Imported {
                imported: 0,
                first_seq: 0,
                last_seq: 0,
            });
        }
        let n = messages.len() as u64;
        let last_seq = self.reserve_seqs(room, n).await?;
        let first_seq = last_seq + 1 - n;
        self.events.reserve(messages.len());
        for (seq, (id, body)) in (first_seq..).zip(messages) {
            let msg = Message {
                id: id.clone(),
                room: room.to_owned(),
                seq,
                sender: self.actor.to_owned(),
                body: body.clone(),
                reply_to: None,
                created_at: self.now,
                edited_at: None,
                deleted: false,
            };
            self.insert_message_row(&msg).await?;
            self.emit(room, seq, EventBody::MessageCreated(msg)).await?;
        }
        Ok(Output::Imported {
            imported: n,
            first_seq,
            last_seq,
        })
    }

    // --- documents ------------------------------------------------------------------------

    async fn put_document(
        &mut self,
        room: &str,
        doc: &str,
        base_version: u64,
        content: &str,
    ) -> StoreResult<Output> {
        self.live_room(room).await?;
        // The room's row lock first, so two writers of one document serialise here and the
        // second one sees the first one's version.
        let seq = self.next_seq(room).await?;
        let version = match (base_version, read::document(self.c, room, doc).await?) {
            (0, None) => 1,
            (_, None) => return Err(StoreError::NotFound("document")),
            (base, Some(current)) if current.version != base => {
                return Err(StoreError::VersionConflict(Box::new(current)))
            }
            (base, Some(_)) => base + 1,
        };
        let document = Document {
            room: room.to_owned(),
            doc: doc.to_owned(),
            version,
            content: content.to_owned(),
            updated_by: self.actor.to_owned(),
            updated_at: self.now,
        };
        // The version row names its event, so history retention can blank the event too.
        self.c
            .execute(
                INSERT_VERSION,
                &[
                    &room,
                    &doc,
                    &int(version),
                    &content.as_bytes(),
                    &self.actor,
                    &self.now,
                    &int(seq),
                ],
            )
            .await?;
        self.c
            .execute(SET_CURRENT_VERSION, &[&room, &doc, &int(version)])
            .await?;
        self.emit(room, seq, EventBody::DocumentUpdated(document.clone()))
            .await?;
        Ok(Output::Document(document))
    }

    // --- notifications --------------------------------------------------------------------

    /// Moves the actor's marker forward only, then reads the marker and clears the mentions it
    /// covers.
    async fn mark_room_read(&mut self, room: &str, seq: u64) -> StoreResult<Output> {
        self.live_room(room).await?;
        self.c
            .execute(
                MOVE_READ_MARKER,
                &[&self.actor, &room, &int(seq), &self.now],
            )
            .await?;
        let marker = read::read_marker(self.c, self.actor, room)
            .await?
            .ok_or(StoreError::NotFound("read marker"))?;
        let cleared = self
            .c
            .execute(READ_MENTIONS, &[&self.actor, &room, &int(marker.seq)])
            .await?;
        if cleared > 0 {
            self.unread.push(self.actor.to_owned());
        }
        Ok(Output::ReadMarker(marker))
    }

    async fn mark_read(&mut self, ids: Option<&[String]>) -> StoreResult<Output> {
        let changed = match ids {
            None => self.c.execute(MARK_ALL_READ, &[&self.actor]).await?,
            Some(ids) => self.c.execute(MARK_READ, &[&self.actor, &ids]).await?,
        };
        if changed > 0 {
            self.unread.push(self.actor.to_owned());
        }
        Ok(Output::Unread {
            unread: read::unread_count(self.c, self.actor).await?,
        })
    }
}
