//! Writes: each function takes the writer's `&Transaction` and runs inside the savepoint that
//! the group commit opened for its job (see `writer.rs`), so an error here undoes exactly this
//! write and nothing else.
//!
//! Sequence numbers are assigned here and nowhere else: [`Cx::next_seq`] increments
//! `rooms.head_seq` inside the transaction, and the single writer connection serialises every
//! increment, so a room's seqs are gap-free whatever the number of concurrent callers.

use rusqlite::{params, OptionalExtension, Transaction};

use roam_proto::{
    Document, EventBody, Invitation, InvitationStatus, Member, MemberStatus, Message, Notification,
    Role, Room, RoomEvent, RoomKind,
};
use serde_json::Value;

use super::read;
use super::rows::{self, int, json_text};
use crate::rules::Guard;
use crate::store::{
    Change, Committed, IdemRecord, NewNotification, Output, Purged, RetentionCutoffs, StoreError,
    StoreResult, Write,
};

/// The state of one write while it is applied.
struct Cx<'a, 'c> {
    tx: &'a Transaction<'c>,
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

/// Applies one [`Write`]: the idempotency check, the change, its events and notifications, and
/// the idempotency record.
pub(super) fn commit(tx: &Transaction<'_>, w: &Write) -> StoreResult<Committed> {
    if let Some(idem) = &w.idem {
        if let Some(stored) = read::idempotent_result(tx, &idem.user, &idem.key)? {
            return Ok(Committed::Replayed(stored));
        }
    }
    if let Some(after) = &w.after {
        let applied = tx
            .prepare_cached(IDEM_EXISTS)?
            .exists(params![w.actor, after])?;
        if !applied {
            return Err(StoreError::OutOfOrder(after.clone()));
        }
    }
    if let Some(guard) = &w.guard {
        check_guard(tx, &w.actor, guard)?;
    }
    ensure_user(tx, &w.actor, w.now)?;
    let mut cx = Cx {
        tx,
        actor: &w.actor,
        now: w.now,
        events: Vec::new(),
        unread: Vec::new(),
    };
    let output = cx.apply(&w.change)?;

    let mut notifications = Vec::with_capacity(w.notify.len());
    for n in &w.notify {
        let n = with_message_seq(n, &output);
        notifications.push(cx.notify(&n)?);
        cx.unread.push(n.user.clone());
    }
    let mut unread: Vec<(String, u64)> = Vec::with_capacity(cx.unread.len());
    for user in &cx.unread {
        if !unread.iter().any(|(u, _)| u == user) {
            unread.push((user.clone(), read::unread_count(tx, user)?));
        }
    }

    if let Some(idem) = &w.idem {
        record(tx, idem, &output, w.now)?;
    }
    Ok(Committed::Applied {
        output,
        events: cx.events,
        notifications,
        unread,
    })
}

const IDEM_EXISTS: &str = "SELECT 1 FROM idempotency WHERE user = ?1 AND key = ?2";

const STANDING: &str = "SELECT r.kind, m.role, m.status FROM rooms r \
     LEFT JOIN members m ON m.room = r.name AND m.user = ?2 \
     WHERE r.name = ?1 AND r.deleted_at IS NULL";

/// The write's guard, against the rows as they are now: the one writer applies writes one at a
/// time, so a ban committed before this write is seen here.
fn check_guard(tx: &Transaction<'_>, actor: &str, guard: &Guard) -> StoreResult<()> {
    let row = tx
        .prepare_cached(STANDING)?
        .query_row(params![guard.room, actor], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })
        .optional()?;
    match row {
        None => guard.check_stored(None),
        Some((kind, role, status)) => {
            guard.check_stored(Some((&kind, role.as_deref(), status.as_deref())))
        }
    }
}

const INSERT_IDEM: &str =
    "INSERT INTO idempotency (user, key, op, fingerprint, result, created_at, message) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Records the result; one that echoes a message names it, so that deleting the message can
/// redact the stored result too.
fn record(tx: &Transaction<'_>, idem: &IdemRecord, output: &Output, now: i64) -> StoreResult<()> {
    let (result, message) = match output {
        // The common case, serialised directly rather than through a JSON tree.
        Output::Message(m) => (
            serde_json::to_string(m).map_err(|e| StoreError::Backend(e.to_string()))?,
            Some(m.id.as_str()),
        ),
        other => (json_text(&other.to_json()), None),
    };
    tx.prepare_cached(INSERT_IDEM)?.execute(params![
        idem.user,
        idem.key,
        idem.op,
        idem.fingerprint,
        result,
        now,
        message
    ])?;
    Ok(())
}

const ENSURE_USER: &str =
    "INSERT INTO users (id, created_at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING";

/// Puts the user in the directory if they are not there yet.
fn ensure_user(tx: &Transaction<'_>, user: &str, now: i64) -> StoreResult<()> {
    tx.prepare_cached(ENSURE_USER)?
        .execute(params![user, now])?;
    Ok(())
}

const TOUCH_USER: &str = "INSERT INTO users (id, created_at, last_seen) VALUES (?1, ?2, ?2) \
     ON CONFLICT (id) DO UPDATE SET last_seen = max(coalesce(last_seen, 0), excluded.last_seen)";

/// `Store::touch_user`: first sight records the user; `last_seen` never moves backwards.
pub(super) fn touch_user(tx: &Transaction<'_>, user: &str, now: i64) -> StoreResult<()> {
    tx.prepare_cached(TOUCH_USER)?.execute(params![user, now])?;
    Ok(())
}

const SAVE_LAST_SEEN: &str = "INSERT INTO presence (user, last_seen) VALUES (?1, ?2) \
     ON CONFLICT (user) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)";

/// `Store::save_last_seen`; like `touch_user`, it never moves backwards.
pub(super) fn save_last_seen(tx: &Transaction<'_>, user: &str, at: i64) -> StoreResult<()> {
    tx.prepare_cached(SAVE_LAST_SEEN)?
        .execute(params![user, at])?;
    Ok(())
}

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

const PURGE_PRESENCE: &str = "DELETE FROM presence WHERE user IN \
     (SELECT user FROM presence WHERE last_seen < ?1 LIMIT ?2)";
/// Old versions that are not their document's current one, with the seq of their event.
const EXPIRED_VERSIONS: &str = "SELECT rowid, room, seq FROM document_versions v \
     WHERE v.updated_at < ?1 AND NOT EXISTS (SELECT 1 FROM documents d \
     WHERE d.room = v.room AND d.doc = v.doc AND d.version = v.version) LIMIT ?2";
const DELETE_VERSION: &str = "DELETE FROM document_versions WHERE rowid = ?1";
/// A `document_updated` event whose version history retention removed keeps no content.
const REDACT_DOCUMENT_EVENT: &str = "UPDATE events SET data = json_set(data, '$.content', '') \
     WHERE room = ?1 AND seq = ?2 AND kind = 'document_updated'";
const PURGE_NOTIFICATIONS: &str = "DELETE FROM notifications WHERE (user, seq) IN \
     (SELECT user, seq FROM notifications WHERE created_at < ?1 LIMIT ?2)";
const PURGE_IDEMPOTENCY: &str = "DELETE FROM idempotency WHERE rowid IN \
     (SELECT rowid FROM idempotency WHERE created_at < ?1 LIMIT ?2)";
const PURGE_INVITATIONS: &str = "DELETE FROM invitations WHERE rowid IN \
     (SELECT rowid FROM invitations WHERE expires_at < ?1 LIMIT ?2)";
const NEXT_ROOM: &str = "SELECT name, head_seq FROM rooms WHERE name > ?1 ORDER BY name LIMIT 1";
const OLDEST_EVENTS: &str = "SELECT seq, at FROM events WHERE room = ?1 ORDER BY seq LIMIT ?2";
const DELETE_EVENTS_UPTO: &str = "DELETE FROM events WHERE room = ?1 AND seq <= ?2";

/// The tables of a pass, in order.
const PURGE_STAGES: usize = 6;

/// One batch of a retention pass: removes at most `c.batch_rows` rows (event-log compaction also
/// counts each room it looks at), starting where `from` says, so that a pass over millions of
/// expired rows never holds the writer for long: the store commits each batch on its own and
/// other writes go in between. A document's current version is kept whatever its age; an
/// event log keeps a prefix-free suffix (the oldest events go first, the newest one of each
/// room always stays), so a room's log never has a hole.
pub(super) fn purge_batch(
    tx: &Transaction<'_>,
    c: &RetentionCutoffs,
    from: &PurgeCursor,
) -> StoreResult<PurgeStep> {
    let batch = u64::from(c.batch_rows.max(1));
    let mut cursor = from.clone();
    let mut purged = Purged {
        batches: 1,
        ..Purged::default()
    };
    let mut left = batch;
    while cursor.stage < PURGE_STAGES {
        let (removed, finished) = match cursor.stage {
            0 => limited(tx, PURGE_PRESENCE, c.presence_before, left)?,
            1 => purge_versions(tx, c.document_history_before, left)?,
            2 => limited(tx, PURGE_NOTIFICATIONS, c.notifications_before, left)?,
            3 => limited(tx, PURGE_IDEMPOTENCY, c.idempotency_before, left)?,
            4 => limited(tx, PURGE_INVITATIONS, c.invitations_before, left)?,
            _ => match c.events_before {
                Some(before) => {
                    let (removed, used, finished) =
                        compact_events(tx, before, left, &mut cursor.room)?;
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
        left -= removed;
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

/// Runs a `DELETE … LIMIT` statement; `finished` when it removed fewer rows than it could.
fn limited(tx: &Transaction<'_>, sql: &str, cutoff: i64, left: u64) -> StoreResult<(u64, bool)> {
    if left == 0 {
        return Ok((0, false));
    }
    let n = tx
        .prepare_cached(sql)?
        .execute(params![cutoff, int(left)])? as u64;
    Ok((n, n < left))
}

/// Removes expired document versions and blanks the content of their events.
fn purge_versions(tx: &Transaction<'_>, cutoff: i64, left: u64) -> StoreResult<(u64, bool)> {
    if left == 0 {
        return Ok((0, false));
    }
    let rows: Vec<(i64, String, Option<i64>)> = tx
        .prepare_cached(EXPIRED_VERSIONS)?
        .query_map(params![cutoff, int(left)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut redact = tx.prepare_cached(REDACT_DOCUMENT_EVENT)?;
    let mut delete = tx.prepare_cached(DELETE_VERSION)?;
    for (rowid, room, seq) in &rows {
        if let Some(seq) = seq {
            redact.execute(params![room, seq])?;
        }
        delete.execute(params![rowid])?;
    }
    let n = rows.len() as u64;
    Ok((n, n < left))
}

/// Event-log compaction: walks the rooms by name after `room` and deletes each one's oldest
/// events older than `before`, up to (never including) its newest. Returns the events removed,
/// the budget used (each room visited costs one) and whether every room is done; `room` is
/// left at the last room finished.
fn compact_events(
    tx: &Transaction<'_>,
    before: i64,
    mut left: u64,
    room: &mut String,
) -> StoreResult<(u64, u64, bool)> {
    let budget = left;
    let mut removed = 0;
    while left > 0 {
        let next: Option<(String, u64)> = tx
            .prepare_cached(NEXT_ROOM)?
            .query_row(params![room.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((name, head)) = next else {
            return Ok((removed, budget - left, true));
        };
        left -= 1;
        if left == 0 {
            break;
        }
        let oldest: Vec<(u64, i64)> = tx
            .prepare_cached(OLDEST_EVENTS)?
            .query_map(params![name, int(left)], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let expired = oldest
            .iter()
            .take_while(|(seq, at)| *at < before && *seq < head)
            .count();
        let may_have_more = expired == oldest.len() && oldest.len() as u64 == left;
        if let Some(&(last, _)) = expired.checked_sub(1).and_then(|i| oldest.get(i)) {
            let n = tx
                .prepare_cached(DELETE_EVENTS_UPTO)?
                .execute(params![name, int(last)])? as u64;
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

const ROOM_STATE: &str = "SELECT deleted_at IS NOT NULL FROM rooms WHERE name = ?1";
const INSERT_ROOM: &str = "INSERT INTO rooms \
     (name, head_seq, kind, owner, created_by, created_at, updated_at, title, metadata) \
     VALUES (?1, 0, ?2, ?3, ?4, ?5, ?5, ?6, ?7)";
const UPDATE_ROOM: &str = "UPDATE rooms SET title = coalesce(?2, title), \
     kind = coalesce(?3, kind), metadata = coalesce(?4, metadata), updated_at = ?5 \
     WHERE name = ?1 AND deleted_at IS NULL";
// Two statements rather than `UPDATE … RETURNING`: SQLite runs RETURNING through an ephemeral
// table that it opens and frees on every execution, which cost more than the update itself.
const BUMP_SEQ: &str = "UPDATE rooms SET head_seq = head_seq + ?2 \
     WHERE name = ?1 AND deleted_at IS NULL";
const HEAD_SEQ: &str = "SELECT head_seq FROM rooms WHERE name = ?1";
const INSERT_EVENT: &str = "INSERT INTO events (room, seq, at, actor, kind, data, message) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
/// Blanks a message's text in a stored event or result (JSON of a `Message`).
const REDACT_CREATED_EVENT: &str =
    "UPDATE events SET data = json_set(data, '$.body', '', '$.deleted', json('true')) \
     WHERE room = ?1 AND seq = ?2 AND kind = 'message_created'";
const REDACT_EDIT_EVENTS: &str =
    "UPDATE events SET data = json_set(data, '$.body', '', '$.deleted', json('true')) \
     WHERE message = ?1";
const REDACT_RESULTS: &str =
    "UPDATE idempotency SET result = json_set(result, '$.body', '', '$.deleted', json('true')) \
     WHERE message = ?1";
const INSERT_MEMBER: &str = "INSERT INTO members (room, user, role, status, joined_at) \
     VALUES (?1, ?2, ?3, ?4, ?5)";
const INSERT_MESSAGE: &str = "INSERT INTO messages \
     (id, room, seq, sender, body, reply_to, created_at, edited_at, deleted) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, 0)";
const DELETE_ROLE_CAP: &str = "DELETE FROM role_caps WHERE room = ?1 AND user = ?2";
/// The user's inbox counter (not the directory: a notification for an id nobody has used yet
/// — an invitation — must not list that id as a user).
const NEXT_NOTIFICATION_SEQ: &str = "INSERT INTO inboxes (user, notif_seq) VALUES (?1, 1) \
     ON CONFLICT (user) DO UPDATE SET notif_seq = notif_seq + 1 RETURNING notif_seq";
const INSERT_NOTIFICATION: &str = "INSERT INTO notifications \
     (user, seq, id, kind, room, actor, data, created_at, read) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0)";

/// A marker only moves forward: an equal or lower seq leaves the row (and `updated_at`) alone.
const MOVE_READ_MARKER: &str = "INSERT INTO read_markers (user, room, seq, updated_at) \
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (user, room) DO UPDATE \
     SET seq = excluded.seq, updated_at = excluded.updated_at WHERE excluded.seq > read_markers.seq";
/// The user's unread mentions in a room up to a seq. Without statistics the planner would walk
/// all of the user's notifications by primary key; the unread index visits only unread ones.
pub(super) const READ_MENTIONS: &str = "UPDATE notifications INDEXED BY notifications_unread \
     SET read = 1 \
     WHERE user = ?1 AND read = 0 AND kind = 'mentioned' AND room = ?2 \
     AND json_extract(data, '$.seq') <= ?3";

fn conflict(what: &str) -> StoreError {
    StoreError::Conflict(what.to_owned())
}

impl Cx<'_, '_> {
    fn apply(&mut self, change: &Change) -> StoreResult<Output> {
        match change {
            Change::CreateRoom {
                name,
                kind,
                title,
                metadata,
                owner,
            } => self.create_room(name, *kind, title, metadata, owner),
            Change::UpdateRoom {
                name,
                title,
                kind,
                metadata,
            } => self.update_room(name, title.as_deref(), *kind, metadata.as_ref()),
            Change::DeleteRoom { name } => self.delete_room(name),
            Change::AddMember {
                room,
                user,
                role,
                invitation,
            } => self.add_member(room, user, *role, invitation.as_deref()),
            Change::RemoveMember { room, user } => self.remove_member(room, user),
            Change::SetRole { room, user, role } => self.set_role(room, user, *role),
            Change::TransferOwnership { room, from, to } => self.transfer(room, from, to),
            Change::Ban { room, user } => self.ban(room, user),
            Change::Unban { room, user } => self.unban(room, user),
            Change::CreateInvitation {
                id,
                room,
                invitee,
                role,
                expires_at,
            } => self.create_invitation(id, room, invitee, *role, *expires_at),
            Change::RejectInvitation { id } => {
                self.close_invitation(id, InvitationStatus::Rejected)
            }
            Change::RevokeInvitation { id } => self.close_invitation(id, InvitationStatus::Revoked),
            Change::InsertMessage {
                id,
                room,
                body,
                reply_to,
            } => self.insert_message(id, room, body, reply_to.as_deref()),
            Change::EditMessage { room, id, body } => self.edit_message(room, id, body),
            Change::DeleteMessage { room, id } => self.delete_message(room, id),
            Change::ImportMessages { room, messages } => self.import_messages(room, messages),
            Change::PutDocument {
                room,
                doc,
                base_version,
                content,
            } => self.put_document(room, doc, *base_version, content),
            Change::MarkRead { ids } => self.mark_read(ids.as_deref()),
            Change::MarkRoomRead { room, seq } => self.mark_room_read(room, *seq),
        }
    }

    // --- plumbing -------------------------------------------------------------------------

    fn live_room(&self, name: &str) -> StoreResult<Room> {
        read::room(self.tx, name)?.ok_or(StoreError::NotFound("room"))
    }

    /// Reserves `n` seqs of a live room and returns the last one.
    fn reserve_seqs(&self, room: &str, n: u64) -> StoreResult<u64> {
        let bumped = self
            .tx
            .prepare_cached(BUMP_SEQ)?
            .execute(params![room, int(n)])?;
        if bumped == 0 {
            return Err(StoreError::NotFound("room"));
        }
        Ok(self
            .tx
            .prepare_cached(HEAD_SEQ)?
            .query_row(params![room], |r| r.get(0))?)
    }

    fn next_seq(&self, room: &str) -> StoreResult<u64> {
        self.reserve_seqs(room, 1)
    }

    /// Appends an event with a seq obtained from [`Cx::next_seq`].
    fn emit(&mut self, room: &str, seq: u64, body: EventBody) -> StoreResult<()> {
        let (kind, data) = rows::event_data(&body)?;
        // An edit names its message, so that deleting the message finds it (a creation is
        // found by the message's seq).
        let message = match &body {
            EventBody::MessageEdited(m) => Some(m.id.as_str()),
            _ => None,
        };
        self.tx.prepare_cached(INSERT_EVENT)?.execute(params![
            room,
            int(seq),
            self.now,
            self.actor,
            kind,
            data,
            message
        ])?;
        self.events.push(RoomEvent {
            room: room.to_owned(),
            seq,
            at: self.now,
            actor: self.actor.to_owned(),
            body,
        });
        Ok(())
    }

    /// Takes the next seq and appends the event made from it.
    fn event(&mut self, room: &str, body: EventBody) -> StoreResult<u64> {
        let seq = self.next_seq(room)?;
        self.emit(room, seq, body)?;
        Ok(seq)
    }

    fn active_member(&self, room: &str, user: &str) -> StoreResult<Member> {
        read::member(self.tx, room, user)?
            .filter(|m| m.status == MemberStatus::Active)
            .ok_or(StoreError::NotFound("member"))
    }

    fn notify(&mut self, n: &NewNotification) -> StoreResult<Notification> {
        let seq: u64 = self
            .tx
            .prepare_cached(NEXT_NOTIFICATION_SEQ)?
            .query_row(params![n.user], |r| r.get(0))?;
        self.tx
            .prepare_cached(INSERT_NOTIFICATION)?
            .execute(params![
                n.user,
                int(seq),
                n.id,
                n.kind,
                n.room,
                self.actor,
                json_text(&n.data),
                self.now
            ])?;
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

    fn create_room(
        &mut self,
        name: &str,
        kind: RoomKind,
        title: &str,
        metadata: &Value,
        owner: &str,
    ) -> StoreResult<Output> {
        let deleted: Option<bool> = self
            .tx
            .prepare_cached(ROOM_STATE)?
            .query_row(params![name], |r| r.get(0))
            .optional()?;
        match deleted {
            Some(true) => return Err(conflict("room name was used by a deleted room")),
            Some(false) => return Err(conflict("room name taken")),
            None => {}
        }
        self.tx.prepare_cached(INSERT_ROOM)?.execute(params![
            name,
            kind.as_str(),
            owner,
            self.actor,
            self.now,
            title,
            json_text(metadata)
        ])?;
        let seq = self.next_seq(name)?;
        let created = self.live_room(name)?;
        self.emit(name, seq, EventBody::RoomCreated(created))?;

        ensure_user(self.tx, owner, self.now)?;
        let member = Member {
            room: name.to_owned(),
            user: owner.to_owned(),
            role: Role::Owner,
            status: MemberStatus::Active,
            joined_at: self.now,
        };
        self.insert_member(&member)?;
        self.event(name, EventBody::MemberJoined(member))?;
        Ok(Output::Room(self.live_room(name)?))
    }

    fn update_room(
        &mut self,
        name: &str,
        title: Option<&str>,
        kind: Option<RoomKind>,
        metadata: Option<&Value>,
    ) -> StoreResult<Output> {
        let changed = self.tx.prepare_cached(UPDATE_ROOM)?.execute(params![
            name,
            title,
            kind.map(RoomKind::as_str),
            metadata.map(json_text),
            self.now
        ])?;
        if changed == 0 {
            return Err(StoreError::NotFound("room"));
        }
        let seq = self.next_seq(name)?;
        let room = self.live_room(name)?;
        self.emit(name, seq, EventBody::RoomUpdated(room.clone()))?;
        Ok(Output::Room(room))
    }

    /// Everything of the room goes except its row (marked deleted) and its events.
    fn delete_room(&mut self, name: &str) -> StoreResult<Output> {
        self.event(
            name,
            EventBody::RoomDeleted {
                name: name.to_owned(),
            },
        )?;
        for sql in [
            "DELETE FROM members WHERE room = ?1",
            "DELETE FROM messages WHERE room = ?1",
            "DELETE FROM documents WHERE room = ?1",
            "DELETE FROM document_versions WHERE room = ?1",
            "DELETE FROM invitations WHERE room = ?1",
            "DELETE FROM role_caps WHERE room = ?1",
            "DELETE FROM read_markers WHERE room = ?1",
        ] {
            self.tx.prepare_cached(sql)?.execute(params![name])?;
        }
        self.tx
            .prepare_cached("UPDATE rooms SET deleted_at = ?2, updated_at = ?2 WHERE name = ?1")?
            .execute(params![name, self.now])?;
        Ok(Output::Empty)
    }

    // --- members --------------------------------------------------------------------------

    fn insert_member(&self, m: &Member) -> StoreResult<()> {
        self.tx.prepare_cached(INSERT_MEMBER)?.execute(params![
            m.room,
            m.user,
            m.role.as_str(),
            m.status.as_str(),
            m.joined_at
        ])?;
        Ok(())
    }

    fn add_member(
        &mut self,
        room: &str,
        user: &str,
        role: Role,
        invitation: Option<&str>,
    ) -> StoreResult<Output> {
        self.live_room(room)?;
        match read::member(self.tx, room, user)?.map(|m| m.status) {
            Some(MemberStatus::Active) => return Err(conflict("already an active member")),
            Some(MemberStatus::Banned) => return Err(conflict("user is banned from the room")),
            None => {}
        }
        if let Some(id) = invitation {
            let inv =
                read::invitation_raw(self.tx, id)?.ok_or(StoreError::NotFound("invitation"))?;
            if inv.room != room || inv.invitee != user {
                return Err(conflict("invitation is for another room or user"));
            }
            if inv.status != InvitationStatus::Pending {
                return Err(conflict("invitation is not pending"));
            }
            if self.now > inv.expires_at {
                return Err(conflict("invitation has expired"));
            }
            self.tx
                .prepare_cached("UPDATE invitations SET status = 'accepted' WHERE id = ?1")?
                .execute(params![id])?;
        }
        // An invitation names the role it grants; joining without one gives back at most the
        // role the user left with.
        let role = match invitation {
            Some(_) => role,
            None => match self.role_cap(room, user)? {
                Some(cap) if cap.rank() < role.rank() => cap,
                _ => role,
            },
        };
        self.tx
            .prepare_cached(DELETE_ROLE_CAP)?
            .execute(params![room, user])?;
        ensure_user(self.tx, user, self.now)?;
        let member = Member {
            room: room.to_owned(),
            user: user.to_owned(),
            role,
            status: MemberStatus::Active,
            joined_at: self.now,
        };
        self.insert_member(&member)?;
        self.event(room, EventBody::MemberJoined(member.clone()))?;
        Ok(Output::Member(member))
    }

    /// The highest role the user may rejoin with, if they left demoted.
    fn role_cap(&self, room: &str, user: &str) -> StoreResult<Option<Role>> {
        let cap: Option<String> = self
            .tx
            .prepare_cached("SELECT role FROM role_caps WHERE room = ?1 AND user = ?2")?
            .query_row(params![room, user], |r| r.get(0))
            .optional()?;
        Ok(cap.as_deref().and_then(Role::parse))
    }

    fn remove_member(&mut self, room: &str, user: &str) -> StoreResult<Output> {
        let member = self.active_member(room, user)?;
        if member.role == Role::Owner {
            return Err(conflict("the owner must transfer ownership before leaving"));
        }
        self.tx
            .prepare_cached("DELETE FROM members WHERE room = ?1 AND user = ?2")?
            .execute(params![room, user])?;
        if member.role.rank() < Role::Member.rank() {
            self.tx
                .prepare_cached(
                    "INSERT INTO role_caps (room, user, role) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (room, user) DO UPDATE SET role = excluded.role",
                )?
                .execute(params![room, user, member.role.as_str()])?;
        }
        self.event(
            room,
            EventBody::MemberLeft {
                user: user.to_owned(),
            },
        )?;
        Ok(Output::Empty)
    }

    fn set_role(&mut self, room: &str, user: &str, role: Role) -> StoreResult<Output> {
        let mut member = self.active_member(room, user)?;
        if role == Role::Owner || member.role == Role::Owner {
            return Err(conflict("ownership changes only by transfer"));
        }
        self.set_member_role(room, user, role)?;
        member.role = role;
        self.event(room, EventBody::MemberUpdated(member.clone()))?;
        Ok(Output::Member(member))
    }

    fn set_member_role(&self, room: &str, user: &str, role: Role) -> StoreResult<()> {
        self.tx
            .prepare_cached("UPDATE members SET role = ?3 WHERE room = ?1 AND user = ?2")?
            .execute(params![room, user, role.as_str()])?;
        Ok(())
    }

    fn transfer(&mut self, room: &str, from: &str, to: &str) -> StoreResult<Output> {
        let current = self.live_room(room)?;
        if current.owner != from {
            return Err(conflict("only the current owner can transfer ownership"));
        }
        if from == to {
            return Err(conflict("already the owner"));
        }
        let mut new_owner = self.active_member(room, to)?;
        let mut old_owner = self.active_member(room, from)?;
        self.set_member_role(room, to, Role::Owner)?;
        self.set_member_role(room, from, Role::Admin)?;
        self.tx
            .prepare_cached("UPDATE rooms SET owner = ?2, updated_at = ?3 WHERE name = ?1")?
            .execute(params![room, to, self.now])?;
        new_owner.role = Role::Owner;
        old_owner.role = Role::Admin;
        self.event(room, EventBody::MemberUpdated(new_owner))?;
        self.event(room, EventBody::MemberUpdated(old_owner))?;
        Ok(Output::Room(self.live_room(room)?))
    }

    /// Pending invitations of a banned user are withdrawn: they read `expired` from now on.
    fn ban(&mut self, room: &str, user: &str) -> StoreResult<Output> {
        self.live_room(room)?;
        match read::member(self.tx, room, user)? {
            Some(m) if m.status == MemberStatus::Banned => {
                return Err(conflict("user is already banned"))
            }
            Some(m) if m.role == Role::Owner => return Err(conflict("the owner cannot be banned")),
            Some(_) => {
                self.tx
                    .prepare_cached(
                        "UPDATE members SET status = 'banned' WHERE room = ?1 AND user = ?2",
                    )?
                    .execute(params![room, user])?;
            }
            None => {
                self.insert_member(&Member {
                    room: room.to_owned(),
                    user: user.to_owned(),
                    role: Role::Guest,
                    status: MemberStatus::Banned,
                    joined_at: self.now,
                })?;
            }
        }
        self.tx
            .prepare_cached(
                "UPDATE invitations SET status = 'expired' \
                 WHERE room = ?1 AND invitee = ?2 AND status = 'pending'",
            )?
            .execute(params![room, user])?;
        self.event(
            room,
            EventBody::MemberBanned {
                user: user.to_owned(),
            },
        )?;
        Ok(Output::Empty)
    }

    fn unban(&mut self, room: &str, user: &str) -> StoreResult<Output> {
        self.live_room(room)?;
        let removed = self
            .tx
            .prepare_cached(
                "DELETE FROM members WHERE room = ?1 AND user = ?2 AND status = 'banned'",
            )?
            .execute(params![room, user])?;
        if removed == 0 {
            return Err(StoreError::NotFound("ban"));
        }
        self.event(
            room,
            EventBody::MemberUnbanned {
                user: user.to_owned(),
            },
        )?;
        Ok(Output::Empty)
    }

    // --- invitations ----------------------------------------------------------------------

    fn create_invitation(
        &mut self,
        id: &str,
        room: &str,
        invitee: &str,
        role: Role,
        expires_at: i64,
    ) -> StoreResult<Output> {
        self.live_room(room)?;
        match read::member(self.tx, room, invitee)?.map(|m| m.status) {
            Some(MemberStatus::Active) => return Err(conflict("already an active member")),
            Some(MemberStatus::Banned) => return Err(conflict("user is banned from the room")),
            None => {}
        }
        if read::pending_invitation(self.tx, room, invitee, self.now)?.is_some() {
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
        self.tx
            .prepare_cached(
                "INSERT INTO invitations \
                 (id, room, invited_by, invitee, role, status, expires_at, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7)",
            )?
            .execute(params![
                inv.id,
                inv.room,
                inv.invited_by,
                inv.invitee,
                role.as_str(),
                expires_at,
                self.now
            ])?;
        Ok(Output::Invitation(inv))
    }

    /// A pending invitation becomes `rejected` or `revoked`.
    fn close_invitation(&mut self, id: &str, status: InvitationStatus) -> StoreResult<Output> {
        let mut inv =
            read::invitation_raw(self.tx, id)?.ok_or(StoreError::NotFound("invitation"))?;
        if inv.status != InvitationStatus::Pending || self.now > inv.expires_at {
            return Err(conflict("invitation is no longer pending"));
        }
        self.tx
            .prepare_cached("UPDATE invitations SET status = ?2 WHERE id = ?1")?
            .execute(params![id, status.as_str()])?;
        inv.status = status;
        Ok(Output::Invitation(inv))
    }

    // --- messages -------------------------------------------------------------------------

    fn insert_message(
        &mut self,
        id: &str,
        room: &str,
        body: &str,
        reply_to: Option<&str>,
    ) -> StoreResult<Output> {
        let seq = self.next_seq(room)?;
        if let Some(parent) = reply_to {
            if read::message(self.tx, room, parent)?.is_none() {
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
        self.insert_message_row(&msg)?;
        self.emit(room, seq, EventBody::MessageCreated(msg.clone()))?;
        Ok(Output::Message(msg))
    }

    fn insert_message_row(&self, m: &Message) -> StoreResult<()> {
        self.tx.prepare_cached(INSERT_MESSAGE)?.execute(params![
            m.id,
            m.room,
            int(m.seq),
            m.sender,
            m.body,
            m.reply_to,
            m.created_at
        ])?;
        Ok(())
    }

    fn live_message(&self, room: &str, id: &str) -> StoreResult<Message> {
        read::message(self.tx, room, id)?
            .filter(|m| !m.deleted)
            .ok_or(StoreError::NotFound("message"))
    }

    fn edit_message(&mut self, room: &str, id: &str, body: &str) -> StoreResult<Output> {
        let mut msg = self.live_message(room, id)?;
        self.tx
            .prepare_cached("UPDATE messages SET body = ?2, edited_at = ?3 WHERE id = ?1")?
            .execute(params![id, body, self.now])?;
        msg.body = body.to_owned();
        msg.edited_at = Some(self.now);
        self.event(room, EventBody::MessageEdited(msg.clone()))?;
        Ok(Output::Message(msg))
    }

    /// Deleting redacts: the row, the events that carried its text (its creation and every
    /// edit) and the idempotency results that echo it, all in this transaction.
    fn delete_message(&mut self, room: &str, id: &str) -> StoreResult<Output> {
        let mut msg = self.live_message(room, id)?;
        self.tx
            .prepare_cached("UPDATE messages SET body = '', deleted = 1 WHERE id = ?1")?
            .execute(params![id])?;
        self.tx
            .prepare_cached(REDACT_CREATED_EVENT)?
            .execute(params![room, int(msg.seq)])?;
        self.tx
            .prepare_cached(REDACT_EDIT_EVENTS)?
            .execute(params![id])?;
        self.tx
            .prepare_cached(REDACT_RESULTS)?
            .execute(params![id])?;
        msg.body.clear();
        msg.deleted = true;
        self.event(room, EventBody::MessageDeleted(msg.clone()))?;
        Ok(Output::Message(msg))
    }

    /// Reserves all the seqs at once, then inserts message and event rows with the two cached
    /// statements, in chunks (logged) inside this one transaction.
    fn import_messages(
        &mut self,
        room: &str,
        messages: &[(String, String)],
    ) -> StoreResult<Output> {
        const CHUNK: usize = 200;
        if messages.is_empty() {
            self.live_room(room)?;
            return Ok(Output::Imported {
                imported: 0,
                first_seq: 0,
                last_seq: 0,
            });
        }
        let n = messages.len() as u64;
        let last_seq = self.reserve_seqs(room, n)?;
        let first_seq = last_seq + 1 - n;
        self.events.reserve(messages.len());
        let mut seq = first_seq;
        for (chunk_no, chunk) in messages.chunks(CHUNK).enumerate() {
            for (id, body) in chunk {
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
                self.insert_message_row(&msg)?;
                self.emit(room, seq, EventBody::MessageCreated(msg))?;
                seq += 1;
            }
            tracing::trace!(
                room,
                chunk = chunk_no,
                rows = chunk.len(),
                "import chunk written"
            );
        }
        Ok(Output::Imported {
            imported: n,
            first_seq,
            last_seq,
        })
    }

    // --- documents ------------------------------------------------------------------------

    fn put_document(
        &mut self,
        room: &str,
        doc: &str,
        base_version: u64,
        content: &str,
    ) -> StoreResult<Output> {
        self.live_room(room)?;
        let version = match (base_version, read::document(self.tx, room, doc)?) {
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
        let seq = self.next_seq(room)?;
        self.tx
            .prepare_cached(
                "INSERT INTO document_versions \
                 (room, doc, version, content, updated_by, updated_at, seq) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                room,
                doc,
                int(version),
                content,
                self.actor,
                self.now,
                int(seq)
            ])?;
        self.tx
            .prepare_cached(
                "INSERT INTO documents (room, doc, version) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (room, doc) DO UPDATE SET version = excluded.version",
            )?
            .execute(params![room, doc, int(version)])?;
        self.emit(room, seq, EventBody::DocumentUpdated(document.clone()))?;
        Ok(Output::Document(document))
    }

    // --- notifications --------------------------------------------------------------------

    fn mark_read(&mut self, ids: Option<&[String]>) -> StoreResult<Output> {
        let changed = match ids {
            None => self
                .tx
                .prepare_cached("UPDATE notifications SET read = 1 WHERE user = ?1 AND read = 0")?
                .execute(params![self.actor])?,
            Some(ids) => {
                let mut stmt = self.tx.prepare_cached(
                    "UPDATE notifications SET read = 1 WHERE user = ?1 AND id = ?2 AND read = 0",
                )?;
                let mut changed = 0;
                for id in ids {
                    changed += stmt.execute(params![self.actor, id])?;
                }
                changed
            }
        };
        if changed > 0 {
            self.unread.push(self.actor.to_owned());
        }
        Ok(Output::Unread {
            unread: read::unread_count(self.tx, self.actor)?,
        })
    }

    /// Moves the actor's marker forward only, then reads the marker and clears the mentions it
    /// covers.
    fn mark_room_read(&mut self, room: &str, seq: u64) -> StoreResult<Output> {
        self.live_room(room)?;
        self.tx.prepare_cached(MOVE_READ_MARKER)?.execute(params![
            self.actor,
            room,
            int(seq),
            self.now
        ])?;
        let marker = read::read_marker(self.tx, self.actor, room)?
            .ok_or(StoreError::NotFound("read marker"))?;
        let cleared = self.tx.prepare_cached(READ_MENTIONS)?.execute(params![
            self.actor,
            room,
            int(marker.seq)
        ])?;
        if cleared > 0 {
            self.unread.push(self.actor.to_owned());
        }
        Ok(Output::ReadMarker(marker))
    }
}
