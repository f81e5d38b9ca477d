//! The SQLite side of a write: [`SqliteRows`] gives the write engine (`store::write`) the rows
//! it reads and changes, on the writer's `&Transaction`, inside the savepoint that the group
//! commit opened for its job (see `writer.rs`), so an error undoes exactly this write.
//!
//! Every call does its work synchronously and the engine's futures complete on their first
//! poll: [`commit`] and [`purge_batch`] drive them with `now_or_never` on the writer thread.
//! The single writer connection serialises every write, so a room's seqs (its head is the
//! largest seq of its events) are gap-free and [`SqliteRows::lock_room`] has nothing to do.

use std::future::Future;

use futures_util::FutureExt;
use rusqlite::{params, OptionalExtension, Transaction};

use roam_proto::{
    Document, EventBody, Invitation, InvitationStatus, Member, Message, Notification, ReadMarker,
    Role, Room, RoomEvent, RoomKind,
};

use super::rows::{int, json_text};
use super::{collab, push, read};
use crate::store::write::{self, Begun, Expiring, PurgeCursor, PurgeStep, Rows};
use crate::store::{
    CollabHead, CollabLogEntry, Committed, IdemRecord, Output, RetentionCutoffs, StoreError,
    StoreResult, Write,
};

/// Runs one of the engine's futures, which on SQLite never waits.
fn now<T>(f: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    f.now_or_never().unwrap_or_else(|| {
        Err(StoreError::Backend(
            "a SQLite write step did not complete".into(),
        ))
    })
}

/// Applies one [`Write`] (see [`write::commit`]); a new message records its push job when
/// `push_jobs` (the store's setting) says so.
pub(super) fn commit(tx: &Transaction<'_>, w: &Write, push_jobs: bool) -> StoreResult<Committed> {
    now(write::commit(&SqliteRows { tx, push_jobs }, w))
}

/// One batch of a retention pass (see [`write::purge_batch`]).
pub(super) fn purge_batch(
    tx: &Transaction<'_>,
    c: &RetentionCutoffs,
    from: &PurgeCursor,
) -> StoreResult<PurgeStep> {
    // A purge inserts no message: the push setting does not matter to it.
    let rows = SqliteRows {
        tx,
        push_jobs: false,
    };
    now(write::purge_batch(&rows, c, from))
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

/// A key is recorded in `idempotency`, or on the message a `message.send` created.
const IDEM_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM idempotency WHERE user = ?1 AND key = ?2) \
     OR EXISTS (SELECT 1 FROM events WHERE actor = ?1 AND sent_key = ?2)";
/// The op whose key is kept on the message it created.
const SEND: &str = "message.send";
const MARK_SENT: &str =
    "UPDATE events SET sent_key = ?3, sent_fingerprint = ?4 WHERE room = ?1 AND seq = ?2";
const STANDING: &str = "SELECT r.kind, m.role, m.status FROM rooms r \
     LEFT JOIN members m ON m.room = r.name AND m.user = ?2 \
     WHERE r.name = ?1 AND r.deleted_at IS NULL";
const INSERT_IDEM: &str =
    "INSERT INTO idempotency (user, key, op, fingerprint, result, created_at, message) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const ENSURE_USER: &str =
    "INSERT INTO users (id, created_at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING";
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
const NEXT_ROOM: &str = "SELECT r.name, \
     coalesce((SELECT max(e.seq) FROM events e WHERE e.room = r.name), 0) \
     FROM rooms r WHERE r.name > ?1 ORDER BY r.name LIMIT 1";
/// The oldest events above the room's compaction horizon.
const OLDEST_EVENTS: &str = "SELECT seq, at FROM events WHERE room = ?1 \
     AND seq > (SELECT log_from FROM rooms WHERE name = ?1) ORDER BY seq LIMIT ?2";
/// Compaction keeps messages: a message is its creation and edit rows.
const DELETE_EVENTS_UPTO: &str = "DELETE FROM events WHERE room = ?1 AND seq <= ?2 \
     AND kind NOT IN ('message_created', 'message_edited')";
const HORIZON: &str = "SELECT log_from FROM rooms WHERE name = ?1";
const MOVE_HORIZON: &str = "UPDATE rooms SET log_from = ?2 WHERE name = ?1 AND log_from < ?2";

const ROOM_STATE: &str = "SELECT deleted_at IS NOT NULL FROM rooms WHERE name = ?1";
const INSERT_ROOM: &str = "INSERT INTO rooms \
     (name, kind, owner, created_by, created_at, updated_at, title, metadata) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7) ON CONFLICT (name) DO NOTHING";
const UPDATE_ROOM: &str = "UPDATE rooms SET title = coalesce(?2, title), \
     kind = coalesce(?3, kind), metadata = coalesce(?4, metadata), updated_at = ?5 \
     WHERE name = ?1 AND deleted_at IS NULL";
/// A live room's head: the largest seq of its events (read through the primary key, nothing to
/// write; the newest event of a room is never deleted).
const HEAD_SEQ: &str = "SELECT coalesce((SELECT max(seq) FROM events WHERE room = ?1), 0) \
     FROM rooms WHERE name = ?1 AND deleted_at IS NULL";
const INSERT_EVENT: &str = "INSERT INTO events (room, seq, at, actor, kind, data, message) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
/// Blanks a message's text and drops its attachment in a stored event (JSON of a `Message`).
const REDACT_CREATED_EVENT: &str = "UPDATE events SET data = \
     json_remove(json_set(data, '$.body', '', '$.deleted', json('true')), '$.attachment') \
     WHERE room = ?1 AND seq = ?2 AND kind = 'message_created'";
const REDACT_RESULTS: &str = "UPDATE idempotency SET result = \
     json_remove(json_set(result, '$.body', '', '$.deleted', json('true')), '$.attachment') \
     WHERE message = ?1";
const REDACT_EDIT_EVENTS: &str = "UPDATE events SET data = \
     json_remove(json_set(data, '$.body', '', '$.deleted', json('true')), '$.attachment') \
     WHERE message = ?1 AND kind = 'message_edited'";
const INSERT_BLOB_REF: &str = "INSERT INTO message_blobs (room, seq, blob) VALUES (?1, ?2, ?3)";
const DELETE_BLOB_REF: &str = "DELETE FROM message_blobs WHERE room = ?1 AND seq = ?2";
const INSERT_MEMBER: &str = "INSERT INTO members (room, user, role, status, joined_at) \
     VALUES (?1, ?2, ?3, ?4, ?5)";
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

const ROLE_CAP: &str = "SELECT role FROM role_caps WHERE room = ?1 AND user = ?2";
const SET_ROLE_CAP: &str = "INSERT INTO role_caps (room, user, role) VALUES (?1, ?2, ?3) \
     ON CONFLICT (room, user) DO UPDATE SET role = excluded.role";
const DELETE_MEMBER: &str = "DELETE FROM members WHERE room = ?1 AND user = ?2";
const SET_MEMBER_ROLE: &str = "UPDATE members SET role = ?3 WHERE room = ?1 AND user = ?2";
const BAN_MEMBER: &str = "UPDATE members SET status = 'banned' WHERE room = ?1 AND user = ?2";
const SET_OWNER: &str = "UPDATE rooms SET owner = ?2, updated_at = ?3 WHERE name = ?1";
const WITHDRAW_INVITATIONS: &str = "UPDATE invitations SET status = 'expired' \
     WHERE room = ?1 AND invitee = ?2 AND status = 'pending'";
const INSERT_INVITATION: &str = "INSERT INTO invitations \
     (id, room, invited_by, invitee, role, status, expires_at, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7)";
const SET_INVITATION_STATUS: &str = "UPDATE invitations SET status = ?2 WHERE id = ?1";
const INSERT_VERSION: &str = "INSERT INTO document_versions \
     (room, doc, version, content, updated_by, updated_at, seq) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const SET_CURRENT_VERSION: &str = "INSERT INTO documents (room, doc, version) VALUES (?1, ?2, ?3) \
     ON CONFLICT (room, doc) DO UPDATE SET version = excluded.version";
const MARK_ALL_READ: &str = "UPDATE notifications SET read = 1 WHERE user = ?1 AND read = 0";
const MARK_READ: &str =
    "UPDATE notifications SET read = 1 WHERE user = ?1 AND id = ?2 AND read = 0";
/// Every table a deleted room empties (its row and its events stay).
const DELETE_ROOM_CONTENT: [&str; 7] = [
    "DELETE FROM members WHERE room = ?1",
    "DELETE FROM message_blobs WHERE room = ?1",
    "DELETE FROM documents WHERE room = ?1",
    "DELETE FROM document_versions WHERE room = ?1",
    "DELETE FROM invitations WHERE room = ?1",
    "DELETE FROM role_caps WHERE room = ?1",
    "DELETE FROM read_markers WHERE room = ?1",
];
const MARK_ROOM_DELETED: &str = "UPDATE rooms SET deleted_at = ?2, updated_at = ?2 WHERE name = ?1";

/// The writer's open transaction, as the write engine sees it.
pub(super) struct SqliteRows<'a, 'c> {
    tx: &'a Transaction<'c>,
    /// Whether a new message records its push job (`PushStore::set_push_jobs`).
    push_jobs: bool,
}

impl SqliteRows<'_, '_> {
    fn exec(&self, sql: &str, p: impl rusqlite::Params) -> StoreResult<u64> {
        Ok(self.tx.prepare_cached(sql)?.execute(p)? as u64)
    }
}

impl Rows for SqliteRows<'_, '_> {
    /// The replay check first: a replayed write reads nothing else.
    async fn begin(&self, w: &Write) -> StoreResult<Begun> {
        let mut begun = Begun::default();
        if let Some(idem) = &w.idem {
            if let Some(stored) = read::idempotent_result(self.tx, &idem.user, &idem.key)? {
                begun.replayed = Some(stored);
                return Ok(begun);
            }
        }
        if let Some(after) = &w.after {
            let applied: bool = self
                .tx
                .prepare_cached(IDEM_EXISTS)?
                .query_row(params![w.actor, after], |r| r.get(0))?;
            begun.predecessor_missing = !applied;
        }
        if let Some(guard) = &w.guard {
            // The one writer applies writes one at a time: a ban committed before this write
            // is seen here.
            let row = self
                .tx
                .prepare_cached(STANDING)?
                .query_row(params![guard.room, w.actor], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            begun.standing = Some(row);
        }
        self.exec(ENSURE_USER, params![w.actor, w.now])?;
        Ok(begun)
    }

    /// A `message.send` keeps its key on the message it created (the row is already written
    /// in this transaction: no other page); its result is that row. Other keys go to
    /// `idempotency`, naming the message a result echoes so that deleting it redacts the result.
    async fn record(&self, idem: &IdemRecord, output: &Output, now: i64) -> StoreResult<()> {
        if let Output::Message(m) = output {
            if idem.op == SEND && idem.user == m.sender {
                let p = params![m.room, int(m.seq), idem.key, idem.fingerprint];
                self.exec(MARK_SENT, p)?;
                return Ok(());
            }
        }
        let (result, message) = write::stored_result(output)?;
        self.exec(
            INSERT_IDEM,
            params![
                idem.user,
                idem.key,
                idem.op,
                idem.fingerprint,
                result,
                now,
                message
            ],
        )?;
        Ok(())
    }

    async fn ensure_user(&self, user: &str, now: i64) -> StoreResult<()> {
        self.exec(ENSURE_USER, params![user, now])?;
        Ok(())
    }

    async fn lock_room(&self, _room: &str) -> StoreResult<()> {
        Ok(())
    }

    async fn room(&self, name: &str) -> StoreResult<Option<Room>> {
        read::room(self.tx, name)
    }

    async fn room_deleted(&self, name: &str) -> StoreResult<Option<bool>> {
        Ok(self
            .tx
            .prepare_cached(ROOM_STATE)?
            .query_row(params![name], |r| r.get(0))
            .optional()?)
    }

    async fn member(&self, room: &str, user: &str) -> StoreResult<Option<Member>> {
        read::member(self.tx, room, user)
    }

    async fn role_cap(&self, room: &str, user: &str) -> StoreResult<Option<Role>> {
        let cap: Option<String> = self
            .tx
            .prepare_cached(ROLE_CAP)?
            .query_row(params![room, user], |r| r.get(0))
            .optional()?;
        Ok(cap.as_deref().and_then(Role::parse))
    }

    async fn invitation(&self, id: &str) -> StoreResult<Option<Invitation>> {
        read::invitation_raw(self.tx, id)
    }

    async fn has_pending_invitation(
        &self,
        room: &str,
        invitee: &str,
        now: i64,
    ) -> StoreResult<bool> {
        Ok(read::pending_invitation(self.tx, room, invitee, now)?.is_some())
    }

    async fn message(&self, room: &str, id: &str) -> StoreResult<Option<Message>> {
        read::message(self.tx, room, id)
    }

    async fn document(&self, room: &str, doc: &str) -> StoreResult<Option<Document>> {
        read::document(self.tx, room, doc)
    }

    async fn read_marker(&self, user: &str, room: &str) -> StoreResult<Option<ReadMarker>> {
        read::read_marker(self.tx, user, room)
    }

    async fn unread_count(&self, user: &str) -> StoreResult<u64> {
        read::unread_count(self.tx, user)
    }

    async fn insert_room(&self, r: &Room) -> StoreResult<bool> {
        let n = self.exec(
            INSERT_ROOM,
            params![
                r.name,
                r.kind.as_str(),
                r.owner,
                r.created_by,
                r.created_at,
                r.title,
                json_text(&r.metadata)
            ],
        )?;
        Ok(n == 1)
    }

    async fn update_room(
        &self,
        name: &str,
        title: Option<&str>,
        kind: Option<RoomKind>,
        metadata: Option<&str>,
        now: i64,
    ) -> StoreResult<bool> {
        let n = self.exec(
            UPDATE_ROOM,
            params![name, title, kind.map(RoomKind::as_str), metadata, now],
        )?;
        Ok(n > 0)
    }

    async fn delete_room(&self, name: &str, now: i64) -> StoreResult<()> {
        for sql in DELETE_ROOM_CONTENT.iter().chain(&collab::DELETE_ROOM) {
            self.exec(sql, params![name])?;
        }
        self.exec(MARK_ROOM_DELETED, params![name, now])?;
        Ok(())
    }

    async fn set_owner(&self, room: &str, owner: &str, now: i64) -> StoreResult<()> {
        self.exec(SET_OWNER, params![room, owner, now])?;
        Ok(())
    }

    /// The head is read, not stored: the seqs reserved become the head once their events
    /// are written, which the engine does before it reserves again.
    async fn reserve_seqs(&self, room: &str, n: u64) -> StoreResult<Option<u64>> {
        let head: Option<u64> = self
            .tx
            .prepare_cached(HEAD_SEQ)?
            .query_row(params![room], |r| r.get(0))
            .optional()?;
        Ok(head.map(|h| h + n))
    }

    /// A creation event names its message too: it is where the message lives.
    async fn insert_event(
        &self,
        e: &RoomEvent,
        kind: &str,
        data: &str,
        message: Option<&str>,
    ) -> StoreResult<()> {
        let message = match &e.body {
            EventBody::MessageCreated(m) => Some(m.id.as_str()),
            _ => message,
        };
        self.exec(
            INSERT_EVENT,
            params![e.room, int(e.seq), e.at, e.actor, kind, data, message],
        )?;
        Ok(())
    }

    async fn insert_member(&self, m: &Member) -> StoreResult<()> {
        self.exec(
            INSERT_MEMBER,
            params![
                m.room,
                m.user,
                m.role.as_str(),
                m.status.as_str(),
                m.joined_at
            ],
        )?;
        Ok(())
    }

    async fn delete_member(&self, room: &str, user: &str) -> StoreResult<()> {
        self.exec(DELETE_MEMBER, params![room, user])?;
        Ok(())
    }

    async fn set_member_role(&self, room: &str, user: &str, role: Role) -> StoreResult<()> {
        self.exec(SET_MEMBER_ROLE, params![room, user, role.as_str()])?;
        Ok(())
    }

    async fn set_member_banned(&self, room: &str, user: &str) -> StoreResult<()> {
        self.exec(BAN_MEMBER, params![room, user])?;
        Ok(())
    }

    async fn set_role_cap(&self, room: &str, user: &str, cap: Option<Role>) -> StoreResult<()> {
        match cap {
            Some(role) => self.exec(SET_ROLE_CAP, params![room, user, role.as_str()])?,
            None => self.exec(DELETE_ROLE_CAP, params![room, user])?,
        };
        Ok(())
    }

    async fn insert_invitation(&self, inv: &Invitation) -> StoreResult<()> {
        self.exec(
            INSERT_INVITATION,
            params![
                inv.id,
                inv.room,
                inv.invited_by,
                inv.invitee,
                inv.role.as_str(),
                inv.expires_at,
                inv.created_at
            ],
        )?;
        Ok(())
    }

    async fn set_invitation_status(&self, id: &str, status: InvitationStatus) -> StoreResult<()> {
        self.exec(SET_INVITATION_STATUS, params![id, status.as_str()])?;
        Ok(())
    }

    async fn withdraw_invitations(&self, room: &str, invitee: &str) -> StoreResult<()> {
        self.exec(WITHDRAW_INVITATIONS, params![room, invitee])?;
        Ok(())
    }

    /// The message is its creation event's row (see [`SqliteRows::insert_event`]), whose
    /// unique index refuses a taken id.
    async fn insert_message(&self, _m: &Message) -> StoreResult<()> {
        Ok(())
    }

    /// The attachment is in the message's creation event with the rest of it.
    async fn insert_blob_ref(&self, blob: &str, room: &str, seq: u64) -> StoreResult<()> {
        self.exec(INSERT_BLOB_REF, params![room, int(seq), blob])?;
        Ok(())
    }

    async fn delete_blob_ref(&self, room: &str, seq: u64) -> StoreResult<()> {
        self.exec(DELETE_BLOB_REF, params![room, int(seq)])?;
        Ok(())
    }

    /// The edit's event is the message as it is now (see `rows::message_cols`).
    async fn edit_message(&self, _id: &str, _body: &str, _at: i64) -> StoreResult<()> {
        Ok(())
    }

    async fn redact_message(&self, m: &Message) -> StoreResult<()> {
        self.exec(REDACT_CREATED_EVENT, params![m.room, int(m.seq)])?;
        self.exec(REDACT_EDIT_EVENTS, params![m.id])?;
        self.exec(REDACT_RESULTS, params![m.id])?;
        Ok(())
    }

    async fn put_document(&self, d: &Document, seq: u64) -> StoreResult<()> {
        self.exec(
            INSERT_VERSION,
            params![
                d.room,
                d.doc,
                int(d.version),
                d.content,
                d.updated_by,
                d.updated_at,
                int(seq)
            ],
        )?;
        self.exec(SET_CURRENT_VERSION, params![d.room, d.doc, int(d.version)])?;
        Ok(())
    }

    async fn next_notification_seq(&self, user: &str) -> StoreResult<u64> {
        Ok(self
            .tx
            .prepare_cached(NEXT_NOTIFICATION_SEQ)?
            .query_row(params![user], |r| r.get(0))?)
    }

    async fn insert_notification(&self, n: &Notification) -> StoreResult<()> {
        self.exec(
            INSERT_NOTIFICATION,
            params![
                n.user,
                int(n.seq),
                n.id,
                n.kind,
                n.room,
                n.actor,
                json_text(&n.data),
                n.created_at
            ],
        )?;
        Ok(())
    }

    async fn mark_notifications_read(
        &self,
        user: &str,
        ids: Option<&[String]>,
    ) -> StoreResult<u64> {
        match ids {
            None => self.exec(MARK_ALL_READ, params![user]),
            Some(ids) => {
                let mut stmt = self.tx.prepare_cached(MARK_READ)?;
                let mut changed = 0;
                for id in ids {
                    changed += stmt.execute(params![user, id])? as u64;
                }
                Ok(changed)
            }
        }
    }

    async fn move_read_marker(
        &self,
        user: &str,
        room: &str,
        seq: u64,
        now: i64,
    ) -> StoreResult<()> {
        self.exec(MOVE_READ_MARKER, params![user, room, int(seq), now])?;
        Ok(())
    }

    async fn read_mentions(&self, user: &str, room: &str, upto: u64) -> StoreResult<u64> {
        self.exec(READ_MENTIONS, params![user, room, int(upto)])
    }

    async fn upsert_push_device(
        &self,
        user: &str,
        d: &roam_proto::PushDevice,
        token: &str,
    ) -> StoreResult<()> {
        push::upsert_device(self.tx, user, d, token)
    }

    async fn delete_push_device(&self, user: &str, device: &str) -> StoreResult<()> {
        push::delete_device(self.tx, user, device)
    }

    async fn set_push_mode(
        &self,
        user: &str,
        room: &str,
        mode: Option<roam_proto::PushMode>,
    ) -> StoreResult<()> {
        push::set_mode(self.tx, user, room, mode)
    }

    async fn push_settings(&self, user: &str) -> StoreResult<roam_proto::PushSettings> {
        push::settings(self.tx, user)
    }

    fn push_jobs(&self) -> bool {
        self.push_jobs
    }

    async fn enqueue_push_job(
        &self,
        room: &str,
        seq: u64,
        message: &str,
        sender: &str,
        now: i64,
    ) -> StoreResult<()> {
        push::enqueue_job(self.tx, room, seq, message, sender, now)
    }

    async fn enqueue_read_push(
        &self,
        user: &str,
        room: &str,
        seq: u64,
        now: i64,
    ) -> StoreResult<()> {
        push::enqueue_read(self.tx, user, room, seq, now)
    }

    async fn purge_expired(&self, what: Expiring, cutoff: i64, limit: u64) -> StoreResult<u64> {
        let sql = match what {
            Expiring::Presence => PURGE_PRESENCE,
            Expiring::Notifications => PURGE_NOTIFICATIONS,
            Expiring::Idempotency => PURGE_IDEMPOTENCY,
            Expiring::Invitations => PURGE_INVITATIONS,
        };
        self.exec(sql, params![cutoff, int(limit)])
    }

    async fn purge_versions(&self, cutoff: i64, limit: u64) -> StoreResult<u64> {
        let rows: Vec<(i64, String, Option<i64>)> = self
            .tx
            .prepare_cached(EXPIRED_VERSIONS)?
            .query_map(params![cutoff, int(limit)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut redact = self.tx.prepare_cached(REDACT_DOCUMENT_EVENT)?;
        let mut delete = self.tx.prepare_cached(DELETE_VERSION)?;
        for (rowid, room, seq) in &rows {
            if let Some(seq) = seq {
                redact.execute(params![room, seq])?;
            }
            delete.execute(params![rowid])?;
        }
        Ok(rows.len() as u64)
    }

    async fn next_room(&self, after: &str) -> StoreResult<Option<(String, u64)>> {
        Ok(self
            .tx
            .prepare_cached(NEXT_ROOM)?
            .query_row(params![after], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    async fn oldest_events(&self, room: &str, limit: u64) -> StoreResult<Vec<(u64, i64)>> {
        Ok(self
            .tx
            .prepare_cached(OLDEST_EVENTS)?
            .query_map(params![room, int(limit)], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?)
    }

    /// Counts the log entries that went below the horizon (the log above it has no hole),
    /// messages included, though their rows stay.
    async fn delete_events_upto(&self, room: &str, seq: u64) -> StoreResult<u64> {
        let from: u64 = self
            .tx
            .prepare_cached(HORIZON)?
            .query_row(params![room], |r| r.get(0))?;
        self.exec(DELETE_EVENTS_UPTO, params![room, int(seq)])?;
        self.exec(MOVE_HORIZON, params![room, int(seq)])?;
        Ok(seq.saturating_sub(from))
    }

    async fn lock_collab(&self, room: &str, doc: &str, now: i64) -> StoreResult<CollabHead> {
        collab::lock(self.tx, room, doc, now)
    }

    async fn collab_snapshot(&self, room: &str, doc: &str) -> StoreResult<Option<Vec<u8>>> {
        collab::snapshot(self.tx, room, doc)
    }

    async fn collab_log(
        &self,
        room: &str,
        doc: &str,
        after: u64,
    ) -> StoreResult<Vec<(u64, Vec<u8>)>> {
        collab::log(self.tx, room, doc, after)
    }

    async fn append_collab(
        &self,
        room: &str,
        doc: &str,
        e: &CollabLogEntry,
        size: u64,
        log_bytes: u64,
    ) -> StoreResult<()> {
        collab::append(self.tx, room, doc, e, size, log_bytes)
    }

    async fn save_collab_snapshot(
        &self,
        room: &str,
        doc: &str,
        snapshot: &[u8],
        seq: u64,
        size: u64,
        now: i64,
    ) -> StoreResult<()> {
        collab::save_snapshot(self.tx, room, doc, snapshot, seq, size, now)
    }

    /// In place: this is the writer's own thread, not an async worker.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> StoreResult<T> {
        Ok(f())
    }
}
