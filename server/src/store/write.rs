//! What every write does, decided once for every store.
//!
//! A backend opens the write's transaction and hands [`commit`] a [`Rows`]: the reads the rules
//! need, taken under the write's locks, and the row changes that persist a decision. Everything
//! else is decided here: the replay and order checks, who may (through [`crate::rules`], the
//! same functions the service calls before it queues the write), which rows change, which
//! events follow and with which seqs, which notifications are created and whose unread count
//! moved. A backend only knows its SQL; neither backend imports the other.
//!
//! Retention is the same: [`purge_batch`] decides the order of the tables, the batch budget and
//! which events of a room's log may go; the backend deletes what it is told.
//!
//! [`Rows`] is async because PostgreSQL's client is. SQLite's implementation does its work
//! synchronously inside each call, so on its writer thread every future here completes on its
//! first poll (see `sqlite::apply`).

use roam_proto::{
    Attachment, Document, EventBody, Invitation, InvitationStatus, Member, MemberStatus, Message,
    Notification, PushDevice, PushMode, PushSettings, ReadMarker, Role, Room, RoomEvent, RoomKind,
};
use serde_json::Value;

use crate::rules::{self, active_role as active, standing, Guard, Refusal, Standing, Subject};
use crate::store::push::DEFAULT_ROOM;
use crate::store::{
    Change, CollabHead, CollabLogEntry, Committed, IdemRecord, NewNotification, Output, Purged,
    RetentionCutoffs, StoreError, StoreResult, StoredResult, Write,
};

/// What a backend read before the change, in one go (PostgreSQL sends these together).
#[derive(Debug, Default)]
pub(crate) struct Begun {
    /// The write's idempotency key is recorded already: its stored result.
    pub replayed: Option<StoredResult>,
    /// `Write::after` names a key that is not recorded.
    pub predecessor_missing: bool,
    /// The guard's room and the actor's standing in it, as stored (`None`: no live room).
    pub standing: Option<StoredStanding>,
}

/// A room's kind and one user's role and status in it, as stored text.
pub(crate) type StoredStanding = Option<(String, Option<String>, Option<String>)>;

/// The tables retention empties by age, batch by batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiring {
    Presence,
    Notifications,
    Idempotency,
    Invitations,
}

/// What the rules need of a backend's open write transaction. Reads see this transaction's own
/// changes; facts a rule depends on are read under the lock [`Rows::lock_room`] or
/// [`Rows::reserve_seqs`] takes.
#[allow(async_fn_in_trait)]
pub(crate) trait Rows {
    // --- the write's preamble and epilogue ---

    /// The replay check, the predecessor check, the guard's row (locked) and the actor's user
    /// row, for `w`. A replayed write may skip the rest.
    async fn begin(&self, w: &Write) -> StoreResult<Begun>;
    /// Records the write's idempotency key with its result: a replay answers the first result
    /// (see [`stored_result`]), blanked if it echoes a message deleted since.
    async fn record(&self, idem: &IdemRecord, output: &Output, now: i64) -> StoreResult<()>;
    /// Puts a user in the directory if they are not there.
    async fn ensure_user(&self, user: &str, now: i64) -> StoreResult<()>;
    /// Takes the room's row lock until the write ends (a no-op where one writer serialises
    /// every write).
    async fn lock_room(&self, room: &str) -> StoreResult<()>;

    // --- facts ---

    /// A live (not deleted) room.
    async fn room(&self, name: &str) -> StoreResult<Option<Room>>;
    /// Whether a room row with this name exists and is deleted (`None`: no row).
    async fn room_deleted(&self, name: &str) -> StoreResult<Option<bool>>;
    async fn member(&self, room: &str, user: &str) -> StoreResult<Option<Member>>;
    /// The role a user who left demoted may rejoin with at most.
    async fn role_cap(&self, room: &str, user: &str) -> StoreResult<Option<Role>>;
    /// The invitation as stored (a stale `pending` is not turned into `expired`), locked.
    async fn invitation(&self, id: &str) -> StoreResult<Option<Invitation>>;
    /// Whether the invitee has a pending, unexpired invitation to the room.
    async fn has_pending_invitation(
        &self,
        room: &str,
        invitee: &str,
        now: i64,
    ) -> StoreResult<bool>;
    async fn message(&self, room: &str, id: &str) -> StoreResult<Option<Message>>;
    async fn document(&self, room: &str, doc: &str) -> StoreResult<Option<Document>>;
    async fn read_marker(&self, user: &str, room: &str) -> StoreResult<Option<ReadMarker>>;
    async fn unread_count(&self, user: &str) -> StoreResult<u64>;

    // --- changes ---

    /// Inserts a room (head seq 0) unless the name is taken: `false` then.
    async fn insert_room(&self, room: &Room) -> StoreResult<bool>;
    /// Sets the given fields of a live room: `false` when there is none.
    async fn update_room(
        &self,
        name: &str,
        title: Option<&str>,
        kind: Option<RoomKind>,
        metadata: Option<&str>,
        now: i64,
    ) -> StoreResult<bool>;
    /// Empties the room (members, messages and their blob references, documents, invitations,
    /// caps, markers) and marks its row deleted; its events stay.
    async fn delete_room(&self, name: &str, now: i64) -> StoreResult<()>;
    async fn set_owner(&self, room: &str, owner: &str, now: i64) -> StoreResult<()>;
    /// Advances a live room's head by `n` and returns the new head (`None`: no live room).
    /// Every seq reserved gets its event (through [`Rows::insert_event`]) before the next
    /// reservation of the write.
    async fn reserve_seqs(&self, room: &str, n: u64) -> StoreResult<Option<u64>>;
    /// Appends an event row; `message` names the message an edit is about.
    async fn insert_event(
        &self,
        e: &RoomEvent,
        kind: &str,
        data: &str,
        message: Option<&str>,
    ) -> StoreResult<()>;
    async fn insert_member(&self, m: &Member) -> StoreResult<()>;
    async fn delete_member(&self, room: &str, user: &str) -> StoreResult<()>;
    async fn set_member_role(&self, room: &str, user: &str, role: Role) -> StoreResult<()>;
    async fn set_member_banned(&self, room: &str, user: &str) -> StoreResult<()>;
    /// Sets (`Some`) or clears the user's rejoin cap.
    async fn set_role_cap(&self, room: &str, user: &str, cap: Option<Role>) -> StoreResult<()>;
    async fn insert_invitation(&self, inv: &Invitation) -> StoreResult<()>;
    async fn set_invitation_status(&self, id: &str, status: InvitationStatus) -> StoreResult<()>;
    /// The user's pending invitations to the room read `expired` from now on.
    async fn withdraw_invitations(&self, room: &str, invitee: &str) -> StoreResult<()>;
    /// Inserts a message row (a taken id is a `Conflict`).
    async fn insert_message(&self, m: &Message) -> StoreResult<()>;
    /// Records that the message at `(room, seq)` carries the blob `blob` (the reference that
    /// [`crate::store::Store::blob_shared_with`] reads).
    async fn insert_blob_ref(&self, blob: &str, room: &str, seq: u64) -> StoreResult<()>;
    /// Removes the blob reference of the message at `(room, seq)`, if any.
    async fn delete_blob_ref(&self, room: &str, seq: u64) -> StoreResult<()>;
    async fn edit_message(&self, id: &str, body: &str, at: i64) -> StoreResult<()>;
    /// Blanks a message everywhere its text is kept: its row (marked deleted), the event that
    /// created it (by its seq), its edit events and the idempotency results that echo it. Its
    /// attachment goes with its text.
    async fn redact_message(&self, m: &Message) -> StoreResult<()>;
    /// Stores a document version (naming its event's seq) and makes it the current one.
    async fn put_document(&self, d: &Document, seq: u64) -> StoreResult<()>;
    /// The user's next notification seq.
    async fn next_notification_seq(&self, user: &str) -> StoreResult<u64>;
    async fn insert_notification(&self, n: &Notification) -> StoreResult<()>;
    /// Marks the user's unread notifications (`None`: all) read: how many changed.
    async fn mark_notifications_read(&self, user: &str, ids: Option<&[String]>)
        -> StoreResult<u64>;
    /// Moves the user's marker of the room to `seq` if that is further.
    async fn move_read_marker(&self, user: &str, room: &str, seq: u64, now: i64)
        -> StoreResult<()>;
    /// Marks read the user's unread mentions in the room whose message seq is at most `upto`:
    /// how many changed.
    async fn read_mentions(&self, user: &str, room: &str, upto: u64) -> StoreResult<u64>;

    // --- push (protocol §11; see `store::push`) ---

    /// Replaces the user's device row, after removing any other row that holds the token.
    async fn upsert_push_device(&self, user: &str, d: &PushDevice, token: &str) -> StoreResult<()>;
    async fn delete_push_device(&self, user: &str, device: &str) -> StoreResult<()>;
    /// Sets (`Some`) or removes the user's mode for `room` ([`DEFAULT_ROOM`]: the account
    /// default).
    async fn set_push_mode(
        &self,
        user: &str,
        room: &str,
        mode: Option<PushMode>,
    ) -> StoreResult<()>;
    async fn push_settings(&self, user: &str) -> StoreResult<PushSettings>;
    /// Whether a new message records its push job (the store's setting, see
    /// `PushStore::set_push_jobs`).
    fn push_jobs(&self) -> bool;
    /// Records the push job of a new message.
    async fn enqueue_push_job(
        &self,
        room: &str,
        seq: u64,
        message: &str,
        sender: &str,
        now: i64,
    ) -> StoreResult<()>;
    /// Queues (or moves forward) the user's `read` entry for the room, if they have a device,
    /// and drops their queued `message` entry of the room up to `seq`.
    async fn enqueue_read_push(
        &self,
        user: &str,
        room: &str,
        seq: u64,
        now: i64,
    ) -> StoreResult<()>;

    // --- collaborative documents (see `store::collab`) ---

    /// The document's row, created (seq 0) if there is none, locked until the write ends.
    async fn lock_collab(&self, room: &str, doc: &str, now: i64) -> StoreResult<CollabHead>;
    /// The document's snapshot (v2), if it has one.
    async fn collab_snapshot(&self, room: &str, doc: &str) -> StoreResult<Option<Vec<u8>>>;
    /// The logged updates with seq > `after`, in order.
    async fn collab_log(
        &self,
        room: &str,
        doc: &str,
        after: u64,
    ) -> StoreResult<Vec<(u64, Vec<u8>)>>;
    /// Appends an update to the log and moves the document's row to its seq, with the
    /// document's `size` and the bytes logged since the snapshot.
    async fn append_collab(
        &self,
        room: &str,
        doc: &str,
        e: &CollabLogEntry,
        size: u64,
        log_bytes: u64,
    ) -> StoreResult<()>;
    /// Stores `snapshot` as holding everything up to `seq` (with its exact `size`) and deletes
    /// the log up to it.
    async fn save_collab_snapshot(
        &self,
        room: &str,
        doc: &str,
        snapshot: &[u8],
        seq: u64,
        size: u64,
        now: i64,
    ) -> StoreResult<()>;
    /// Runs CPU-heavy work (loading a large document) where it does not hold up other tasks:
    /// SQLite's writer thread runs it in place, PostgreSQL's lanes on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> StoreResult<T>;

    // --- retention ---

    /// Deletes at most `limit` rows of `what` older than `cutoff`: how many went.
    async fn purge_expired(&self, what: Expiring, cutoff: i64, limit: u64) -> StoreResult<u64>;
    /// Deletes at most `limit` document versions older than `cutoff` that are not their
    /// document's current one, blanking their events' content: how many went.
    async fn purge_versions(&self, cutoff: i64, limit: u64) -> StoreResult<u64>;
    /// The first room (deleted or not) whose name sorts after `after`, with its head seq.
    async fn next_room(&self, after: &str) -> StoreResult<Option<(String, u64)>>;
    /// The room's oldest `limit` events: `(seq, at)`, oldest first.
    async fn oldest_events(&self, room: &str, limit: u64) -> StoreResult<Vec<(u64, i64)>>;
    /// Deletes the room's events up to and including `seq`: how many went.
    async fn delete_events_upto(&self, room: &str, seq: u64) -> StoreResult<u64>;
}

/// Splits an event body into its stored `(kind, data)`: the wire's tagged form, taken apart.
pub(crate) fn event_data(body: &EventBody) -> StoreResult<(&'static str, String)> {
    let backend = |e: serde_json::Error| StoreError::Backend(e.to_string());
    // Message events are most of the log: their data is serialised directly, without
    // building the tagged JSON tree first.
    if let EventBody::MessageCreated(m)
    | EventBody::MessageEdited(m)
    | EventBody::MessageDeleted(m) = body
    {
        return Ok((body.kind(), serde_json::to_string(m).map_err(backend)?));
    }
    let mut tagged = serde_json::to_value(body).map_err(backend)?;
    let data = tagged
        .get_mut("data")
        .map(Value::take)
        .unwrap_or(Value::Null);
    Ok((body.kind(), data.to_string()))
}

/// Serialises a value stored as JSON text.
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(e.to_string()))
}

/// What a replay of `output` answers (its first result), and the message it echoes, if any:
/// deleting that message blanks the stored result too.
pub(crate) fn stored_result(output: &Output) -> StoreResult<(String, Option<&str>)> {
    Ok(match output {
        // The common case, serialised directly rather than through a JSON tree.
        Output::Message(m) => (to_json(m)?, Some(m.id.as_str())),
        other => (other.to_json().to_string(), None),
    })
}

/// Applies one [`Write`] inside the backend's open transaction: the replay, order and guard
/// checks, the change, its events and notifications, and the idempotency record. An error
/// leaves the caller to roll the transaction back; [`Committed::Replayed`] changed nothing.
pub(crate) async fn commit<R: Rows>(rows: &R, w: &Write) -> StoreResult<Committed> {
    let begun = rows.begin(w).await?;
    if let Some(stored) = begun.replayed {
        return Ok(Committed::Replayed(stored));
    }
    if begun.predecessor_missing {
        let after = w.after.clone().unwrap_or_default();
        return Err(StoreError::OutOfOrder(after));
    }
    let actor_role = match (&w.guard, begun.standing) {
        (Some(guard), Some(row)) => Some(check_guard(guard, row)?),
        _ => None,
    };
    let mut cx = Cx {
        rows,
        actor: &w.actor,
        actor_role,
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
            unread.push((user.clone(), rows.unread_count(user).await?));
        }
    }
    if let Some(idem) = &w.idem {
        rows.record(idem, &output, w.now).await?;
    }
    Ok(Committed::Applied {
        output,
        events: cx.events,
        notifications,
        unread,
    })
}

/// The guard against the stored standing: the actor's role, or why not.
fn check_guard(guard: &Guard, row: StoredStanding) -> StoreResult<Role> {
    let bad = |what: &str, v: &str| StoreError::Backend(format!("stored {what} {v:?}"));
    let (kind, standing) = match &row {
        None => (None, None),
        Some((kind, role, status)) => {
            let kind = RoomKind::parse(kind).ok_or_else(|| bad("room kind", kind))?;
            let standing = match (role, status) {
                (Some(role), Some(status)) => Some(Standing {
                    role: Role::parse(role).ok_or_else(|| bad("role", role))?,
                    status: MemberStatus::parse(status)
                        .ok_or_else(|| bad("member status", status))?,
                }),
                _ => None,
            };
            (Some(kind), standing)
        }
    };
    rules::require_role(kind, standing, guard.min).map_err(StoreError::Refused)
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

/// The changes whose checks read state and then act on it: they take the room's row lock
/// before reading, so their checks see every write committed before them, on any node.
/// (Messages and documents take the lock with their seq; creating and updating a room lock the
/// row by writing it first.)
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

fn refused(r: Refusal) -> StoreError {
    StoreError::Refused(r)
}

/// The state of one write while it is applied.
struct Cx<'a, R> {
    rows: &'a R,
    actor: &'a str,
    /// The actor's role in the guarded room, as checked under the lock.
    actor_role: Option<Role>,
    now: i64,
    /// Events appended so far, in seq order.
    events: Vec<RoomEvent>,
    /// Users whose unread count this write changed, besides the notified ones.
    unread: Vec<String>,
}

impl<R: Rows> Cx<'_, R> {
    async fn apply(&mut self, change: &Change) -> StoreResult<Output> {
        if let Some(room) = checked_under_lock(change) {
            self.rows.lock_room(room).await?;
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
                attachment,
            } => {
                self.insert_message(id, room, body, reply_to.as_deref(), attachment.as_ref())
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
            Change::UpdateCollab {
                room,
                doc,
                update,
                docs,
            } => {
                crate::store::collab::update(
                    self.rows, docs, room, doc, update, self.actor, self.now,
                )
                .await
            }
            Change::MarkRead { ids } => self.mark_read(ids.as_deref()).await,
            Change::MarkRoomRead { room, seq } => self.mark_room_read(room, *seq).await,
            Change::RegisterPush {
                device,
                platform,
                token,
                app_id,
                locale,
                sandbox,
            } => {
                let d = PushDevice {
                    device: device.clone(),
                    platform: *platform,
                    app_id: app_id.clone(),
                    locale: locale.clone(),
                    sandbox: *sandbox,
                    registered_at: self.now,
                };
                self.rows.ensure_user(self.actor, self.now).await?;
                self.rows.upsert_push_device(self.actor, &d, token).await?;
                Ok(Output::PushDevice(d))
            }
            Change::UnregisterPush { device } => {
                self.rows.delete_push_device(self.actor, device).await?;
                Ok(Output::Empty)
            }
            Change::SetPushMode { room, mode } => self.set_push_mode(room.as_deref(), *mode).await,
        }
    }

    // --- plumbing -------------------------------------------------------------------------

    async fn live_room(&self, name: &str) -> StoreResult<Room> {
        self.rows
            .room(name)
            .await?
            .ok_or(StoreError::NotFound("room"))
    }

    /// The actor's role in `room`: as the guard found it, else read now (a write without a
    /// guard, such as the server's own).
    async fn actor_role(&self, room: &str) -> StoreResult<Role> {
        if let Some(role) = self.actor_role {
            return Ok(role);
        }
        let kind = self.rows.room(room).await?.map(|r| r.kind);
        let me = standing(&self.rows.member(room, self.actor).await?);
        rules::require_role(kind, me, Role::Guest).map_err(refused)
    }

    async fn reserve_seqs(&self, room: &str, n: u64) -> StoreResult<u64> {
        self.rows
            .reserve_seqs(room, n)
            .await?
            .ok_or(StoreError::NotFound("room"))
    }

    fn event_of(&self, room: &str, seq: u64, body: EventBody) -> RoomEvent {
        RoomEvent {
            room: room.to_owned(),
            seq,
            at: self.now,
            actor: self.actor.to_owned(),
            body,
        }
    }

    /// Appends an event with a seq obtained from [`Cx::reserve_seqs`].
    async fn emit(&mut self, room: &str, seq: u64, body: EventBody) -> StoreResult<()> {
        let e = self.event_of(room, seq, body);
        self.write_event(&e).await?;
        self.events.push(e);
        Ok(())
    }

    async fn write_event(&self, e: &RoomEvent) -> StoreResult<()> {
        let (kind, data) = event_data(&e.body)?;
        // An edit names its message, so that deleting the message finds it (a creation is
        // found by the message's seq).
        let message = match &e.body {
            EventBody::MessageEdited(m) => Some(m.id.as_str()),
            _ => None,
        };
        self.rows.insert_event(e, kind, &data, message).await
    }

    /// Takes the next seq and appends the event made from it.
    async fn event(&mut self, room: &str, body: EventBody) -> StoreResult<u64> {
        let seq = self.reserve_seqs(room, 1).await?;
        self.emit(room, seq, body).await?;
        Ok(seq)
    }

    async fn notify(&mut self, n: &NewNotification) -> StoreResult<Notification> {
        let seq = self.rows.next_notification_seq(&n.user).await?;
        let made = Notification {
            seq,
            id: n.id.clone(),
            user: n.user.clone(),
            kind: n.kind.clone(),
            room: n.room.clone(),
            actor: Some(self.actor.to_owned()),
            data: n.data.clone(),
            created_at: self.now,
            read: false,
        };
        self.rows.insert_notification(&made).await?;
        Ok(made)
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
        let room = Room {
            name: name.to_owned(),
            kind,
            title: title.to_owned(),
            metadata: metadata.clone(),
            owner: owner.to_owned(),
            created_by: self.actor.to_owned(),
            created_at: self.now,
            updated_at: self.now,
            head_seq: 0,
            member_count: 0,
        };
        if !self.rows.insert_room(&room).await? {
            let what = match self.rows.room_deleted(name).await? {
                Some(true) => "room name was used by a deleted room",
                _ => "room name taken",
            };
            return Err(StoreError::Conflict(what.into()));
        }
        let seq = self.reserve_seqs(name, 1).await?;
        let created = self.live_room(name).await?;
        self.emit(name, seq, EventBody::RoomCreated(created))
            .await?;

        self.rows.ensure_user(owner, self.now).await?;
        let member = Member {
            room: name.to_owned(),
            user: owner.to_owned(),
            role: Role::Owner,
            status: MemberStatus::Active,
            joined_at: self.now,
        };
        self.rows.insert_member(&member).await?;
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
            .rows
            .update_room(name, title, kind, metadata.as_deref(), self.now)
            .await?;
        if !changed {
            return Err(StoreError::NotFound("room"));
        }
        let seq = self.reserve_seqs(name, 1).await?;
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
        self.rows.delete_room(name, self.now).await?;
        Ok(Output::Empty)
    }

    // --- members --------------------------------------------------------------------------

    /// Joining, by invitation or not. An invitation must be the user's, for this room, open,
    /// and still grantable by its inviter; it becomes `accepted`.
    async fn add_member(
        &mut self,
        room: &str,
        user: &str,
        role: Role,
        invitation: Option<&str>,
    ) -> StoreResult<Output> {
        let r = self.live_room(room).await?;
        let who = if user == self.actor {
            Subject::Actor
        } else {
            Subject::Other
        };
        let existing = self.rows.member(room, user).await?;
        rules::may_become_member(existing.map(|m| m.status), who).map_err(refused)?;
        let role = match invitation {
            Some(id) => {
                let inv = self
                    .rows
                    .invitation(id)
                    .await?
                    .ok_or(StoreError::NotFound("invitation"))?;
                rules::invitation_for(&inv, user, Some(room)).map_err(refused)?;
                rules::invitation_open(&inv, self.now).map_err(refused)?;
                let inviter = active(&self.rows.member(room, &inv.invited_by).await?);
                rules::inviter_may_grant(r.kind, inviter, inv.role).map_err(refused)?;
                self.rows
                    .set_invitation_status(id, InvitationStatus::Accepted)
                    .await?;
                // An invitation names the role it grants.
                inv.role
            }
            None => rules::rejoin_role(role, self.rows.role_cap(room, user).await?),
        };
        self.rows.set_role_cap(room, user, None).await?;
        self.rows.ensure_user(user, self.now).await?;
        let member = Member {
            room: room.to_owned(),
            user: user.to_owned(),
            role,
            status: MemberStatus::Active,
            joined_at: self.now,
        };
        self.rows.insert_member(&member).await?;
        self.event(room, EventBody::MemberJoined(member.clone()))
            .await?;
        Ok(Output::Member(member))
    }

    async fn active_member(&self, room: &str, user: &str) -> StoreResult<Member> {
        self.rows
            .member(room, user)
            .await?
            .filter(|m| m.status == MemberStatus::Active)
            .ok_or(StoreError::NotFound("member"))
    }

    /// Leaving (or being removed). A member below `member` leaves a cap on the role they may
    /// rejoin with.
    async fn remove_member(&mut self, room: &str, user: &str) -> StoreResult<Output> {
        let member = self.active_member(room, user).await?;
        rules::may_leave(member.role).map_err(refused)?;
        self.rows.delete_member(room, user).await?;
        if let Some(cap) = rules::leave_cap(member.role) {
            self.rows.set_role_cap(room, user, Some(cap)).await?;
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
        let actor_role = self.actor_role(room).await?;
        let mut member = self.active_member(room, user).await?;
        rules::may_set_role(self.actor, actor_role, user, Some(member.role), role)
            .map_err(refused)?;
        self.rows.set_member_role(room, user, role).await?;
        member.role = role;
        self.event(room, EventBody::MemberUpdated(member.clone()))
            .await?;
        Ok(Output::Member(member))
    }

    /// `to` becomes owner, `from` (the owner) becomes admin, the room's owner changes.
    async fn transfer(&mut self, room: &str, from: &str, to: &str) -> StoreResult<Output> {
        let current = self.live_room(room).await?;
        let from_member = self.rows.member(room, from).await?;
        let to_member = self.rows.member(room, to).await?;
        let from_role = active(&from_member).unwrap_or(Role::Guest);
        rules::may_transfer(from, from_role, &current.owner, to, active(&to_member))
            .map_err(refused)?;
        let (Some(mut new_owner), Some(mut old_owner)) = (to_member, from_member) else {
            return Err(StoreError::NotFound("member"));
        };
        self.rows.set_member_role(room, to, Role::Owner).await?;
        self.rows.set_member_role(room, from, Role::Admin).await?;
        self.rows.set_owner(room, to, self.now).await?;
        new_owner.role = Role::Owner;
        old_owner.role = Role::Admin;
        self.event(room, EventBody::MemberUpdated(new_owner))
            .await?;
        self.event(room, EventBody::MemberUpdated(old_owner))
            .await?;
        Ok(Output::Room(self.live_room(room).await?))
    }

    /// Banning marks the member banned (a row is made for a non-member) and withdraws their
    /// pending invitations to the room: they read `expired` from now on.
    async fn ban(&mut self, room: &str, user: &str) -> StoreResult<Output> {
        self.live_room(room).await?;
        let actor_role = self.actor_role(room).await?;
        let existing = self.rows.member(room, user).await?;
        rules::may_ban(self.actor, actor_role, user, standing(&existing)).map_err(refused)?;
        match existing {
            Some(_) => self.rows.set_member_banned(room, user).await?,
            None => {
                self.rows
                    .insert_member(&Member {
                        room: room.to_owned(),
                        user: user.to_owned(),
                        role: Role::Guest,
                        status: MemberStatus::Banned,
                        joined_at: self.now,
                    })
                    .await?
            }
        }
        self.rows.withdraw_invitations(room, user).await?;
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
        let status = self.rows.member(room, user).await?.map(|m| m.status);
        rules::may_unban(status).map_err(refused)?;
        self.rows.delete_member(room, user).await?;
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

    /// A pending invitation. The invitee must not be a member or banned, nor hold a pending
    /// invitation to the room; the inviter grants only a role below theirs.
    async fn create_invitation(
        &mut self,
        id: &str,
        room: &str,
        invitee: &str,
        role: Role,
        expires_at: i64,
    ) -> StoreResult<Output> {
        self.live_room(room).await?;
        let actor_role = self.actor_role(room).await?;
        rules::may_grant(actor_role, role).map_err(refused)?;
        let status = self.rows.member(room, invitee).await?.map(|m| m.status);
        rules::may_become_member(status, Subject::Other).map_err(refused)?;
        if self
            .rows
            .has_pending_invitation(room, invitee, self.now)
            .await?
        {
            return Err(refused(Refusal::PendingInvitationExists));
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
        self.rows.insert_invitation(&inv).await?;
        Ok(Output::Invitation(inv))
    }

    /// An open invitation becomes `rejected` (by its invitee) or `revoked` (by its inviter or
    /// an admin of its room).
    async fn close_invitation(
        &mut self,
        id: &str,
        status: InvitationStatus,
    ) -> StoreResult<Output> {
        let mut inv = self
            .rows
            .invitation(id)
            .await?
            .ok_or(StoreError::NotFound("invitation"))?;
        if status == InvitationStatus::Revoked {
            self.rows.lock_room(&inv.room).await?;
            let actor_role = self.actor_role(&inv.room).await?;
            rules::may_revoke(self.actor, actor_role, &inv).map_err(refused)?;
        } else {
            rules::invitation_for(&inv, self.actor, None).map_err(refused)?;
        }
        rules::invitation_open(&inv, self.now).map_err(refused)?;
        self.rows.set_invitation_status(id, status).await?;
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
        attachment: Option<&Attachment>,
    ) -> StoreResult<Output> {
        let seq = self.reserve_seqs(room, 1).await?;
        if let Some(parent) = reply_to {
            if self.rows.message(room, parent).await?.is_none() {
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
            attachment: attachment.cloned(),
        };
        let e = self.event_of(room, seq, EventBody::MessageCreated(msg.clone()));
        // The row, its event and its blob reference go together (one round trip where the
        // backend pipelines).
        let blob_ref = async {
            match attachment {
                Some(a) => self.rows.insert_blob_ref(&a.blob, room, seq).await,
                None => Ok(()),
            }
        };
        futures_util::try_join!(
            self.rows.insert_message(&msg),
            self.write_event(&e),
            blob_ref
        )?;
        // Its push job commits with it: no message is lost to push by a crash. A deployment
        // that can send no push records none.
        if self.rows.push_jobs() {
            self.rows
                .enqueue_push_job(room, seq, id, self.actor, self.now)
                .await?;
        }
        self.events.push(e);
        Ok(Output::Message(msg))
    }

    async fn live_message(&self, room: &str, id: &str) -> StoreResult<Message> {
        self.rows
            .message(room, id)
            .await?
            .filter(|m| !m.deleted)
            .ok_or(StoreError::NotFound("message"))
    }

    async fn edit_message(&mut self, room: &str, id: &str, body: &str) -> StoreResult<Output> {
        let mut msg = self.live_message(room, id).await?;
        self.rows.edit_message(id, body, self.now).await?;
        msg.body = body.to_owned();
        msg.edited_at = Some(self.now);
        self.event(room, EventBody::MessageEdited(msg.clone()))
            .await?;
        Ok(Output::Message(msg))
    }

    /// Deleting redacts: the row, the events that carried its text and attachment (its creation
    /// and every edit) and the idempotency results that echo it, all in this transaction. Its
    /// blob reference goes, so the room's members can no longer download the blob through it.
    async fn delete_message(&mut self, room: &str, id: &str) -> StoreResult<Output> {
        let mut msg = self.live_message(room, id).await?;
        self.rows.redact_message(&msg).await?;
        if msg.attachment.take().is_some() {
            self.rows.delete_blob_ref(room, msg.seq).await?;
        }
        msg.body.clear();
        msg.deleted = true;
        self.event(room, EventBody::MessageDeleted(msg.clone()))
            .await?;
        Ok(Output::Message(msg))
    }

    /// Reserves all the seqs at once, then writes message and event rows inside this one
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
                attachment: None,
            };
            self.rows.insert_message(&msg).await?;
            self.emit(room, seq, EventBody::MessageCreated(msg)).await?;
        }
        tracing::trace!(room, rows = n, "import written");
        Ok(Output::Imported {
            imported: n,
            first_seq,
            last_seq,
        })
    }

    // --- documents ------------------------------------------------------------------------

    /// Compare-and-swap on the version. The room's lock is taken (with the seq) before the
    /// document is read, so two writers of one document serialise and the second sees the
    /// first one's version.
    async fn put_document(
        &mut self,
        room: &str,
        doc: &str,
        base_version: u64,
        content: &str,
    ) -> StoreResult<Output> {
        let seq = self.reserve_seqs(room, 1).await?;
        let version = match (base_version, self.rows.document(room, doc).await?) {
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
        self.rows.put_document(&document, seq).await?;
        self.emit(room, seq, EventBody::DocumentUpdated(document.clone()))
            .await?;
        Ok(Output::Document(document))
    }

    // --- notifications --------------------------------------------------------------------

    async fn mark_read(&mut self, ids: Option<&[String]>) -> StoreResult<Output> {
        let changed = self.rows.mark_notifications_read(self.actor, ids).await?;
        if changed > 0 {
            self.unread.push(self.actor.to_owned());
        }
        Ok(Output::Unread {
            unread: self.rows.unread_count(self.actor).await?,
        })
    }

    /// Moves the actor's marker forward only, then reads the marker and clears the mentions it
    /// covers.
    async fn mark_room_read(&mut self, room: &str, seq: u64) -> StoreResult<Output> {
        self.live_room(room).await?;
        let before = self
            .rows
            .read_marker(self.actor, room)
            .await?
            .map_or(0, |m| m.seq);
        self.rows
            .move_read_marker(self.actor, room, seq, self.now)
            .await?;
        let marker = self
            .rows
            .read_marker(self.actor, room)
            .await?
            .ok_or(StoreError::NotFound("read marker"))?;
        if marker.seq > before {
            // The user's devices clear the room's notifications up to the marker.
            self.rows
                .enqueue_read_push(self.actor, room, marker.seq, self.now)
                .await?;
        }
        let cleared = self
            .rows
            .read_mentions(self.actor, room, marker.seq)
            .await?;
        if cleared > 0 {
            self.unread.push(self.actor.to_owned());
        }
        Ok(Output::ReadMarker(marker))
    }
}

impl<R: Rows> Cx<'_, R> {
    /// The actor's account default (`room` None) or a room's override; the room must be one
    /// the actor may read (checked by the service), and live.
    async fn set_push_mode(&mut self, room: Option<&str>, mode: PushMode) -> StoreResult<Output> {
        let stored = match mode {
            PushMode::Default => None,
            m => Some(m),
        };
        match room {
            None => {
                if stored.is_none() {
                    return Err(StoreError::Conflict(
                        "the account default mode must be all, mentions or mute".into(),
                    ));
                }
                self.rows
                    .set_push_mode(self.actor, DEFAULT_ROOM, stored)
                    .await?;
            }
            Some(room) => {
                self.live_room(room).await?;
                self.rows.set_push_mode(self.actor, room, stored).await?;
            }
        }
        Ok(Output::PushSettings(
            self.rows.push_settings(self.actor).await?,
        ))
    }
}

// --- retention ----------------------------------------------------------------------------

/// Where a retention pass stands between two of its batches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PurgeCursor {
    /// The table being purged (an index into [`STAGES`]).
    stage: usize,
    /// Event-log compaction walks the rooms by name: the last room it finished.
    room: String,
}

/// One batch of a retention pass: what it removed, and where the next batch starts (`None`
/// when the pass is over).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PurgeStep {
    pub(crate) purged: Purged,
    pub(crate) next: Option<PurgeCursor>,
}

/// The stages of a pass, in order.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Expired(Expiring),
    Versions,
    Events,
}

const STAGES: [Stage; 6] = [
    Stage::Expired(Expiring::Presence),
    Stage::Versions,
    Stage::Expired(Expiring::Notifications),
    Stage::Expired(Expiring::Idempotency),
    Stage::Expired(Expiring::Invitations),
    Stage::Events,
];

/// One batch of a retention pass: removes at most `c.batch_rows` rows (event-log compaction also
/// counts each room it looks at), starting where `from` says, so that a pass over millions of
/// expired rows never holds the writer for long: the store commits each batch on its own and
/// other writes go in between. A document's current version is kept whatever its age; an
/// event log keeps a suffix (the oldest events go first, the newest one of each room always
/// stays), so a room's log never has a hole.
pub(crate) async fn purge_batch<R: Rows>(
    rows: &R,
    c: &RetentionCutoffs,
    from: &PurgeCursor,
) -> StoreResult<PurgeStep> {
    let mut cursor = from.clone();
    let mut purged = Purged {
        batches: 1,
        ..Purged::default()
    };
    let mut left = u64::from(c.batch_rows.max(1));
    while let Some(stage) = STAGES.get(cursor.stage) {
        let finished = match *stage {
            Stage::Events => match c.events_before {
                Some(before) => {
                    let (removed, used, finished) =
                        compact_events(rows, before, left, &mut cursor.room).await?;
                    purged.events += removed;
                    left = left.saturating_sub(used);
                    finished
                }
                None => true,
            },
            Stage::Versions | Stage::Expired(_) => {
                if left == 0 {
                    false
                } else {
                    let removed = match *stage {
                        Stage::Expired(what) => {
                            let (cutoff, count) = match what {
                                Expiring::Presence => (c.presence_before, &mut purged.presence),
                                Expiring::Notifications => {
                                    (c.notifications_before, &mut purged.notifications)
                                }
                                Expiring::Idempotency => {
                                    (c.idempotency_before, &mut purged.idempotency_keys)
                                }
                                Expiring::Invitations => {
                                    (c.invitations_before, &mut purged.invitations)
                                }
                            };
                            let n = rows.purge_expired(what, cutoff, left).await?;
                            *count += n;
                            n
                        }
                        _ => {
                            let n = rows.purge_versions(c.document_history_before, left).await?;
                            purged.document_versions += n;
                            n
                        }
                    };
                    let finished = removed < left;
                    left -= removed.min(left);
                    finished
                }
            }
        };
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

/// Event-log compaction: walks the rooms by name after `room` and deletes each one's oldest
/// events older than `before`, up to (never including) its newest. Returns the events removed,
/// the budget used (each room visited costs one) and whether every room is done; `room` is
/// left at the last room finished.
async fn compact_events<R: Rows>(
    rows: &R,
    before: i64,
    mut left: u64,
    room: &mut String,
) -> StoreResult<(u64, u64, bool)> {
    let budget = left;
    let mut removed = 0;
    while left > 0 {
        let Some((name, head)) = rows.next_room(room).await? else {
            return Ok((removed, budget - left, true));
        };
        left -= 1;
        if left == 0 {
            break;
        }
        let oldest = rows.oldest_events(&name, left).await?;
        let expired = oldest
            .iter()
            .take_while(|(seq, at)| *at < before && *seq < head)
            .count();
        let may_have_more = expired == oldest.len() && oldest.len() as u64 == left;
        if let Some(&(last, _)) = expired.checked_sub(1).and_then(|i| oldest.get(i)) {
            let n = rows.delete_events_upto(&name, last).await?;
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
