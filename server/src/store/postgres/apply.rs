//! The PostgreSQL side of a write: [`PgRows`] gives the write engine (`store::write`) the rows
//! it reads and changes, on a writer lane's connection inside the one transaction of its write
//! (see `writer.rs`); any error rolls the whole write back.
//!
//! Sequence numbers: [`PgRows::reserve_seqs`] runs `UPDATE rooms SET head_seq = head_seq + n …
//! RETURNING head_seq`, which takes the room row's lock until the transaction ends. A
//! concurrent write to the same room, from this server or another, waits on that lock, so a
//! room's seqs are gap-free and committed in order. Changes that check state before acting on
//! it take the same lock first ([`PgRows::lock_room`]).
//!
//! Idempotency is claimed first: the write inserts its `(user, key)` row before anything else
//! (`ON CONFLICT DO NOTHING`). A racing write with the same key, on any server, waits on the
//! unique index until the first one ends; if that one committed, the claim inserts nothing and
//! the write answers [`Committed::Replayed`] with the stored result; if it rolled back, the claim
//! succeeds and the write proceeds. The result is filled in when the change is done.

use roam_proto::{
    Document, Invitation, InvitationStatus, Member, Message, Notification, ReadMarker, Role, Room,
    RoomEvent, RoomKind,
};
use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::conn::Conn;
use super::rows::{self, col, count, int};
use super::{collab, push, read};
use crate::store::write::{self, Begun, Expiring, PurgeCursor, PurgeStep, Rows};
use crate::store::{
    CollabHead, CollabLogEntry, Committed, IdemRecord, Output, RetentionCutoffs, StoreError,
    StoreResult, Write,
};

/// What [`commit`] did.
pub(super) enum Outcome {
    /// Applied: the caller commits the transaction.
    Applied(Committed),
    /// The key was already recorded: nothing changed (the caller rolls back).
    Replayed(Committed),
}

/// Applies one [`Write`] inside the caller's open transaction (see [`write::commit`]); a new
/// message records its push job when `push_jobs` (the store's setting) says so.
pub(super) async fn commit(c: &Conn, w: &Write, push_jobs: bool) -> StoreResult<Outcome> {
    Ok(match write::commit(&PgRows { c, push_jobs }, w).await? {
        replayed @ Committed::Replayed(_) => Outcome::Replayed(replayed),
        applied => Outcome::Applied(applied),
    })
}

/// One batch of a retention pass, inside the caller's transaction (see [`write::purge_batch`]).
pub(super) async fn purge_batch(
    c: &Conn,
    cut: &RetentionCutoffs,
    from: &PurgeCursor,
) -> StoreResult<PurgeStep> {
    // A purge inserts no message: the push setting does not matter to it.
    let rows = PgRows {
        c,
        push_jobs: false,
    };
    write::purge_batch(&rows, cut, from).await
}

const CLAIM_IDEM: &str = "INSERT INTO idempotency \
     (user_id, key, op, fingerprint, result, created_at) VALUES ($1, $2, $3, $4, 'null', $5) \
     ON CONFLICT (user_id, key) DO NOTHING";
const FILL_IDEM: &str = "UPDATE idempotency SET result = $3, message = $4 \
     WHERE user_id = $1 AND key = $2";

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

const ENSURE_USER: &str =
    "INSERT INTO users (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";

pub(super) const TOUCH_USER: &str = "INSERT INTO users (id, created_at, last_seen) \
     VALUES ($1, $2, $2) ON CONFLICT (id) DO UPDATE \
     SET last_seen = greatest(coalesce(users.last_seen, 0), excluded.last_seen)";

pub(super) const SAVE_LAST_SEEN: &str = "INSERT INTO presence (user_id, last_seen) \
     VALUES ($1, $2) ON CONFLICT (user_id) DO UPDATE \
     SET last_seen = greatest(presence.last_seen, excluded.last_seen)";

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
     (id, room, seq, sender, body, reply_to, created_at, edited_at, deleted, attachment) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, false, $8)";
const INSERT_BLOB_REF: &str = "INSERT INTO message_blobs (room, seq, blob) VALUES ($1, $2, $3)";
const DELETE_BLOB_REF: &str = "DELETE FROM message_blobs WHERE room = $1 AND seq = $2";
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
const INSERT_INVITATION: &str = "INSERT INTO invitations \
     (id, room, invited_by, invitee, role, status, expires_at, created_at) \
     VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7)";
const SET_INVITATION_STATUS: &str = "UPDATE invitations SET status = $2 WHERE id = $1";
const EDIT_MESSAGE: &str = "UPDATE messages SET body = $2, edited_at = $3 WHERE id = $1";
const DELETE_MESSAGE: &str =
    "UPDATE messages SET body = ''::bytea, deleted = true, attachment = NULL WHERE id = $1";
const INSERT_VERSION: &str = "INSERT INTO document_versions \
     (room, doc, version, content, updated_by, updated_at, seq) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
const SET_CURRENT_VERSION: &str = "INSERT INTO documents (room, doc, version) VALUES ($1, $2, $3) \
     ON CONFLICT (room, doc) DO UPDATE SET version = excluded.version";
const MARK_ALL_READ: &str = "UPDATE notifications SET read = true WHERE user_id = $1 AND NOT read";
const MARK_READ: &str = "UPDATE notifications SET read = true \
     WHERE user_id = $1 AND id = ANY($2::text[]) AND NOT read";
/// Every table a deleted room empties (its row and its events stay).
const DELETE_ROOM_CONTENT: [&str; 8] = [
    "DELETE FROM members WHERE room = $1",
    "DELETE FROM message_blobs WHERE room = $1",
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

/// The JSON object `json` with `fields` set, a field set to `null` removed (anything else is
/// left as it is).
fn with_fields(json: &str, fields: &[(&str, Value)]) -> StoreResult<String> {
    let mut v: Value =
        serde_json::from_str(json).map_err(|e| StoreError::Backend(format!("stored JSON: {e}")))?;
    if let Some(obj) = v.as_object_mut() {
        for (k, val) in fields {
            if val.is_null() {
                obj.remove(*k);
            } else {
                obj.insert((*k).to_owned(), val.clone());
            }
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

/// A writer lane's open transaction, as the write engine sees it.
pub(super) struct PgRows<'a> {
    c: &'a Conn,
    /// Whether a new message records its push job (`PushStore::set_push_jobs`).
    push_jobs: bool,
}

impl Rows for PgRows<'_> {
    /// The checks a write makes before its change, sent together (one round trip, run by the
    /// server in this order): the idempotency claim, the user row (a replay's is undone with the
    /// rest), whether the predecessor it names is applied, and the guard's row, locked.
    async fn begin(&self, w: &Write) -> StoreResult<Begun> {
        let c = self.c;
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
                    .map(|row| row.is_none()),
                None => Ok(false),
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
        let (claimed, (), predecessor_missing, standing) = futures_util::try_join!(
            claim,
            self.ensure_user(&w.actor, w.now),
            predecessor,
            standing
        )?;
        let mut begun = Begun {
            predecessor_missing,
            ..Begun::default()
        };
        if let (Some(0), Some(idem)) = (claimed, &w.idem) {
            let stored = read::idempotent_result(c, &idem.user, &idem.key)
                .await?
                .ok_or_else(|| StoreError::Backend("idempotency record vanished".into()))?;
            begun.replayed = Some(stored);
            return Ok(begun);
        }
        if let Some(row) = standing {
            begun.standing = Some(match row {
                None => None,
                Some(r) => Some((col(&r, 0)?, col(&r, 1)?, col(&r, 2)?)),
            });
        }
        Ok(begun)
    }

    /// Fills in the key claimed in [`PgRows::begin`].
    async fn record(&self, idem: &IdemRecord, output: &Output, _now: i64) -> StoreResult<()> {
        let (result, message) = write::stored_result(output)?;
        self.c
            .execute(FILL_IDEM, &[&idem.user, &idem.key, &result, &message])
            .await?;
        Ok(())
    }

    async fn ensure_user(&self, user: &str, now: i64) -> StoreResult<()> {
        self.c.execute(ENSURE_USER, &[&user, &now]).await?;
        Ok(())
    }

    /// Takes the room's row lock (the one seq assignment takes) before the change reads
    /// anything, so its checks see every write committed before it, on any server.
    async fn lock_room(&self, room: &str) -> StoreResult<()> {
        self.c.query(LOCK_ROOM, &[&room]).await?;
        Ok(())
    }

    async fn room(&self, name: &str) -> StoreResult<Option<Room>> {
        read::room(self.c, name).await
    }

    async fn room_deleted(&self, name: &str) -> StoreResult<Option<bool>> {
        match self.c.query_opt(ROOM_STATE, &[&name]).await? {
            Some(r) => Ok(Some(col(&r, 0)?)),
            None => Ok(None),
        }
    }

    async fn member(&self, room: &str, user: &str) -> StoreResult<Option<Member>> {
        read::member(self.c, room, user).await
    }

    async fn role_cap(&self, room: &str, user: &str) -> StoreResult<Option<Role>> {
        let cap: Option<String> = match self.c.query_opt(ROLE_CAP, &[&room, &user]).await? {
            Some(r) => Some(col(&r, 0)?),
            None => None,
        };
        Ok(cap.as_deref().and_then(Role::parse))
    }

    /// Locked until the write ends: accepting, rejecting and revoking race.
    async fn invitation(&self, id: &str) -> StoreResult<Option<Invitation>> {
        invitation_locked(self.c, id).await
    }

    async fn has_pending_invitation(
        &self,
        room: &str,
        invitee: &str,
        now: i64,
    ) -> StoreResult<bool> {
        Ok(read::pending_invitation(self.c, room, invitee, now)
            .await?
            .is_some())
    }

    async fn message(&self, room: &str, id: &str) -> StoreResult<Option<Message>> {
        read::message(self.c, room, id).await
    }

    async fn document(&self, room: &str, doc: &str) -> StoreResult<Option<Document>> {
        read::document(self.c, room, doc).await
    }

    async fn read_marker(&self, user: &str, room: &str) -> StoreResult<Option<ReadMarker>> {
        read::read_marker(self.c, user, room).await
    }

    async fn unread_count(&self, user: &str) -> StoreResult<u64> {
        read::unread_count(self.c, user).await
    }

    async fn insert_room(&self, r: &Room) -> StoreResult<bool> {
        let metadata = r.metadata.to_string();
        let inserted = self
            .c
            .execute(
                INSERT_ROOM,
                &[
                    &r.name,
                    &r.kind.as_str(),
                    &r.owner,
                    &r.created_by,
                    &r.created_at,
                    &r.title.as_bytes(),
                    &metadata,
                ],
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn update_room(
        &self,
        name: &str,
        title: Option<&str>,
        kind: Option<RoomKind>,
        metadata: Option<&str>,
        now: i64,
    ) -> StoreResult<bool> {
        let changed = self
            .c
            .execute(
                UPDATE_ROOM,
                &[
                    &name,
                    &title.map(str::as_bytes),
                    &kind.map(RoomKind::as_str),
                    &metadata,
                    &now,
                ],
            )
            .await?;
        Ok(changed > 0)
    }

    async fn delete_room(&self, name: &str, now: i64) -> StoreResult<()> {
        for sql in DELETE_ROOM_CONTENT.iter().chain(&collab::DELETE_ROOM) {
            self.c.execute(sql, &[&name]).await?;
        }
        self.c.execute(MARK_ROOM_DELETED, &[&name, &now]).await?;
        Ok(())
    }

    async fn set_owner(&self, room: &str, owner: &str, now: i64) -> StoreResult<()> {
        self.c.execute(SET_OWNER, &[&room, &owner, &now]).await?;
        Ok(())
    }

    /// The room's row stays locked until this write ends.
    async fn reserve_seqs(&self, room: &str, n: u64) -> StoreResult<Option<u64>> {
        match self.c.query_opt(BUMP_SEQ, &[&room, &int(n)]).await? {
            Some(row) => Ok(Some(count(&row, 0)?)),
            None => Ok(None),
        }
    }

    async fn insert_event(
        &self,
        e: &RoomEvent,
        kind: &str,
        data: &str,
        message: Option<&str>,
    ) -> StoreResult<()> {
        self.c
            .execute(
                INSERT_EVENT,
                &[
                    &e.room,
                    &int(e.seq),
                    &e.at,
                    &e.actor,
                    &kind,
                    &data,
                    &message,
                ],
            )
            .await?;
        Ok(())
    }

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

    async fn delete_member(&self, room: &str, user: &str) -> StoreResult<()> {
        self.c.execute(DELETE_MEMBER, &[&room, &user]).await?;
        Ok(())
    }

    async fn set_member_role(&self, room: &str, user: &str, role: Role) -> StoreResult<()> {
        self.c
            .execute(SET_MEMBER_ROLE, &[&room, &user, &role.as_str()])
            .await?;
        Ok(())
    }

    async fn set_member_banned(&self, room: &str, user: &str) -> StoreResult<()> {
        self.c.execute(BAN_MEMBER, &[&room, &user]).await?;
        Ok(())
    }

    async fn set_role_cap(&self, room: &str, user: &str, cap: Option<Role>) -> StoreResult<()> {
        match cap {
            Some(role) => {
                self.c
                    .execute(SET_ROLE_CAP, &[&room, &user, &role.as_str()])
                    .await?
            }
            None => self.c.execute(DELETE_ROLE_CAP, &[&room, &user]).await?,
        };
        Ok(())
    }

    async fn insert_invitation(&self, inv: &Invitation) -> StoreResult<()> {
        self.c
            .execute(
                INSERT_INVITATION,
                &[
                    &inv.id,
                    &inv.room,
                    &inv.invited_by,
                    &inv.invitee,
                    &inv.role.as_str(),
                    &inv.expires_at,
                    &inv.created_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn set_invitation_status(&self, id: &str, status: InvitationStatus) -> StoreResult<()> {
        self.c
            .execute(SET_INVITATION_STATUS, &[&id, &status.as_str()])
            .await?;
        Ok(())
    }

    async fn withdraw_invitations(&self, room: &str, invitee: &str) -> StoreResult<()> {
        self.c
            .execute(WITHDRAW_INVITATIONS, &[&room, &invitee])
            .await?;
        Ok(())
    }

    async fn insert_message(&self, m: &Message) -> StoreResult<()> {
        let attachment = m.attachment.as_ref().map(write::to_json).transpose()?;
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
                    &attachment,
                ],
            )
            .await?;
        Ok(())
    }

    async fn insert_blob_ref(&self, blob: &str, room: &str, seq: u64) -> StoreResult<()> {
        self.c
            .execute(INSERT_BLOB_REF, &[&room, &int(seq), &blob])
            .await?;
        Ok(())
    }

    async fn delete_blob_ref(&self, room: &str, seq: u64) -> StoreResult<()> {
        self.c.execute(DELETE_BLOB_REF, &[&room, &int(seq)]).await?;
        Ok(())
    }

    async fn edit_message(&self, id: &str, body: &str, at: i64) -> StoreResult<()> {
        self.c
            .execute(EDIT_MESSAGE, &[&id, &body.as_bytes(), &at])
            .await?;
        Ok(())
    }

    async fn redact_message(&self, m: &Message) -> StoreResult<()> {
        let (c, room, id) = (self.c, m.room.as_str(), m.id.as_str());
        c.execute(DELETE_MESSAGE, &[&id]).await?;
        let blank = [
            ("body", Value::from("")),
            ("deleted", Value::from(true)),
            ("attachment", Value::Null),
        ];
        redact_events(c, room, CREATED_EVENT, &[&room, &int(m.seq)], &blank).await?;
        redact_events(c, room, EDIT_EVENTS, &[&room, &id], &blank).await?;
        for r in c.query(RESULTS_OF, &[&id]).await? {
            let (user, key, result): (&str, &str, &str) = (col(&r, 0)?, col(&r, 1)?, col(&r, 2)?);
            let redacted = with_fields(result, &blank)?;
            c.execute(SET_RESULT, &[&user, &key, &redacted]).await?;
        }
        Ok(())
    }

    async fn put_document(&self, d: &Document, seq: u64) -> StoreResult<()> {
        self.c
            .execute(
                INSERT_VERSION,
                &[
                    &d.room,
                    &d.doc,
                    &int(d.version),
                    &d.content.as_bytes(),
                    &d.updated_by,
                    &d.updated_at,
                    &int(seq),
                ],
            )
            .await?;
        self.c
            .execute(SET_CURRENT_VERSION, &[&d.room, &d.doc, &int(d.version)])
            .await?;
        Ok(())
    }

    async fn next_notification_seq(&self, user: &str) -> StoreResult<u64> {
        let row = self.c.query_one(NEXT_NOTIFICATION_SEQ, &[&user]).await?;
        count(&row, 0)
    }

    async fn insert_notification(&self, n: &Notification) -> StoreResult<()> {
        let data = n.data.to_string();
        self.c
            .execute(
                INSERT_NOTIFICATION,
                &[
                    &n.user,
                    &int(n.seq),
                    &n.id,
                    &n.kind,
                    &n.room,
                    &n.actor,
                    &data,
                    &n.created_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn mark_notifications_read(
        &self,
        user: &str,
        ids: Option<&[String]>,
    ) -> StoreResult<u64> {
        match ids {
            None => self.c.execute(MARK_ALL_READ, &[&user]).await,
            Some(ids) => self.c.execute(MARK_READ, &[&user, &ids]).await,
        }
    }

    async fn move_read_marker(
        &self,
        user: &str,
        room: &str,
        seq: u64,
        now: i64,
    ) -> StoreResult<()> {
        self.c
            .execute(MOVE_READ_MARKER, &[&user, &room, &int(seq), &now])
            .await?;
        Ok(())
    }

    async fn read_mentions(&self, user: &str, room: &str, upto: u64) -> StoreResult<u64> {
        self.c
            .execute(READ_MENTIONS, &[&user, &room, &int(upto)])
            .await
    }

    async fn upsert_push_device(
        &self,
        user: &str,
        d: &roam_proto::PushDevice,
        token: &str,
    ) -> StoreResult<()> {
        push::upsert_device(self.c, user, d, token).await
    }

    async fn delete_push_device(&self, user: &str, device: &str) -> StoreResult<()> {
        push::delete_device(self.c, user, device).await
    }

    async fn set_push_mode(
        &self,
        user: &str,
        room: &str,
        mode: Option<roam_proto::PushMode>,
    ) -> StoreResult<()> {
        push::set_mode(self.c, user, room, mode).await
    }

    async fn push_settings(&self, user: &str) -> StoreResult<roam_proto::PushSettings> {
        push::settings(self.c, user).await
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
        push::enqueue_job(self.c, room, seq, message, sender, now).await
    }

    async fn enqueue_read_push(
        &self,
        user: &str,
        room: &str,
        seq: u64,
        now: i64,
    ) -> StoreResult<()> {
        push::enqueue_read(self.c, user, room, seq, now).await
    }

    async fn purge_expired(&self, what: Expiring, cutoff: i64, limit: u64) -> StoreResult<u64> {
        let sql = match what {
            Expiring::Presence => PURGE_PRESENCE,
            Expiring::Notifications => PURGE_NOTIFICATIONS,
            Expiring::Idempotency => PURGE_IDEMPOTENCY,
            Expiring::Invitations => PURGE_INVITATIONS,
        };
        self.c.execute(sql, &[&cutoff, &int(limit)]).await
    }

    async fn purge_versions(&self, cutoff: i64, limit: u64) -> StoreResult<u64> {
        let c = self.c;
        let rows = c.query(EXPIRED_VERSIONS, &[&cutoff, &int(limit)]).await?;
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
        Ok(rows.len() as u64)
    }

    async fn next_room(&self, after: &str) -> StoreResult<Option<(String, u64)>> {
        match self.c.query_opt(NEXT_ROOM, &[&after]).await? {
            Some(r) => Ok(Some((col(&r, 0)?, count(&r, 1)?))),
            None => Ok(None),
        }
    }

    async fn oldest_events(&self, room: &str, limit: u64) -> StoreResult<Vec<(u64, i64)>> {
        self.c
            .query(OLDEST_EVENTS, &[&room, &int(limit)])
            .await?
            .iter()
            .map(rows::seq_at)
            .collect()
    }

    async fn delete_events_upto(&self, room: &str, seq: u64) -> StoreResult<u64> {
        self.c
            .execute(DELETE_EVENTS_UPTO, &[&room, &int(seq)])
            .await
    }

    async fn lock_collab(&self, room: &str, doc: &str, now: i64) -> StoreResult<CollabHead> {
        collab::lock(self.c, room, doc, now).await
    }

    async fn collab_snapshot(&self, room: &str, doc: &str) -> StoreResult<Option<Vec<u8>>> {
        collab::snapshot(self.c, room, doc).await
    }

    async fn collab_log(
        &self,
        room: &str,
        doc: &str,
        after: u64,
    ) -> StoreResult<Vec<(u64, Vec<u8>)>> {
        collab::log(self.c, room, doc, after).await
    }

    async fn append_collab(
        &self,
        room: &str,
        doc: &str,
        e: &CollabLogEntry,
        size: u64,
        log_bytes: u64,
    ) -> StoreResult<()> {
        collab::append(self.c, room, doc, e, size, log_bytes).await
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
        collab::save_snapshot(self.c, room, doc, snapshot, seq, size, now).await
    }

    /// On the blocking pool: a lane is an async task.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> StoreResult<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Backend(format!("blocking work failed: {e}")))
    }
}
