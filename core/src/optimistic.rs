//! How each mutation shows up locally before the server has answered, and what its answer does.
//!
//! For every op this module has up to five steps, all run inside the outbox's transactions:
//!
//! 1. **apply** (at enqueue): change the local tables as if the server had already agreed, with
//!    [`SendState::Pending`] on the affected row, and return an [`Undo`] that is stored with the
//!    outbox entry;
//! 2. **ack**: store the server's result (server id, `seq`, version) and mark the row `Sent`;
//! 3. **failure**: mark the row `Failed` with the reason (a `version_conflict` also keeps the
//!    server's current document next to the local one);
//! 4. **retry**: mark the row `Pending` again;
//! 5. **discard**: play the stored [`Undo`] back, so the store looks as if the app had never
//!    made the change.
//!
//! Ops without a local footprint (invitations, deleting a room) skip the steps they
//! do not need. Every step records the listener events it causes in the [`Effects`] of the
//! transaction, so the app hears about the change right after it is committed.

use roam_proto::{
    Member, MemberStatus, Message as WireMessage, Mutation, ReadMarker, Role, Room, RoomKind,
};
use rusqlite::Transaction;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::Effects;
use crate::db::reads::{self, StoredEntry};
use crate::db::writes;
use crate::error::{Error, Result};
use crate::listeners::AppEvent;
use crate::model::{
    Attachment, Document, DocumentUpdate, DocumentVersion, Message, RoomUpdate, SendState,
    UploadState,
};
use crate::scheduler::Queued;

/// What the optimistic step of an enqueue gets to know.
#[derive(Debug)]
pub(crate) struct LocalStep<'a> {
    /// The entry id (idempotency key).
    pub id: &'a str,
    /// The entry's position (orders local messages).
    pub pos: i64,
    pub now: i64,
    pub me: &'a str,
}

/// The outbox entry an answer, a failure or a retry is about, as the steps here need it (the
/// outbox hands it over; this module never reads or writes outbox rows).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Change<'a> {
    /// The entry id (idempotency key; a message send's is the message's local id).
    pub id: &'a str,
    /// The entry's position.
    pub pos: i64,
    pub mutation: &'a Mutation,
    /// The local id of the message an edit or delete changes.
    pub target: Option<&'a str>,
}

impl<'a> From<&'a Queued> for Change<'a> {
    fn from(q: &'a Queued) -> Self {
        Change {
            id: &q.id,
            pos: q.pos,
            mutation: &q.mutation,
            target: q.target.as_deref(),
        }
    }
}

/// How to take back an optimistic change (stored as JSON in the outbox row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "snake_case")]
pub(crate) enum Undo {
    RemoveMessage {
        local_id: String,
    },
    RestoreMessage {
        local_id: String,
        body: String,
        edited_at: Option<i64>,
        deleted: bool,
        pending: bool,
    },
    RemoveRoom {
        room: String,
    },
    RestoreRoom {
        room: String,
        kind: RoomKind,
        title: String,
        metadata: String,
        updated_at: i64,
        joined: bool,
    },
    RestoreMembership {
        room: String,
        user: String,
        member: Option<Member>,
        joined: Option<bool>,
        subscribed: Option<bool>,
    },
    RestoreDocument {
        room: String,
        doc: String,
        previous: Option<DocumentVersion>,
        previous_pending: bool,
    },
    MarkUnread {
        ids: Vec<String>,
    },
}

fn parse<T: DeserializeOwned>(op: &str, value: &Value) -> Option<T> {
    match T::deserialize(value) {
        Ok(v) => Some(v),
        Err(err) => {
            tracing::warn!(op, error = %err, "unexpected result shape in an ack");
            None
        }
    }
}

fn room_changed(tx: &Transaction<'_>, fx: &mut Effects, room: &str) -> Result<()> {
    if let Some(r) = reads::room(tx, room)? {
        fx.room(RoomUpdate::RoomChanged(r));
    }
    Ok(())
}

fn message_state_changed(
    tx: &Transaction<'_>,
    fx: &mut Effects,
    local_id: &str,
    state: &SendState,
) -> Result<()> {
    if writes::set_message_state(tx, local_id, state)? {
        if let Some(m) = reads::message(tx, local_id)? {
            fx.room(RoomUpdate::SendStateChanged {
                room: m.room,
                local_id: local_id.to_owned(),
                state: state.clone(),
            });
        }
    }
    Ok(())
}

fn document_changed(tx: &Transaction<'_>, fx: &mut Effects, room: &str, doc: &str) -> Result<()> {
    if let Some(d) = reads::document(tx, room, doc)? {
        fx.emit(AppEvent::Document(DocumentUpdate::Updated(d)));
    }
    Ok(())
}

fn unread_delta(tx: &Transaction<'_>, fx: &mut Effects, delta: i64) -> Result<()> {
    let current = reads::kv_u64(tx, "unread")? as i64;
    let next = (current + delta).max(0) as u64;
    writes::set_kv(tx, "unread", &next.to_string())?;
    fx.emit(AppEvent::Unread(next));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. apply

pub(crate) fn send_message(
    tx: &Transaction<'_>,
    step: &LocalStep<'_>,
    fx: &mut Effects,
    room: &str,
    body: &str,
    reply_to: Option<&str>,
    attachment: Option<(&str, Attachment)>,
) -> Result<(Message, Option<Undo>)> {
    let (attachment_json, attachment) = attachment.unzip();
    let m = Message {
        local_id: step.id.to_owned(),
        id: None,
        room: room.to_owned(),
        seq: None,
        sender: step.me.to_owned(),
        body: body.to_owned(),
        reply_to: reply_to.map(str::to_owned),
        created_at: step.now,
        edited_at: None,
        deleted: false,
        send_state: SendState::Pending,
        outbox_entry_id: Some(step.id.to_owned()),
        attachment,
    };
    writes::insert_local_message(tx, &m, step.pos, attachment_json)?;
    fx.room(RoomUpdate::MessageAdded(m.clone()));
    Ok((
        m,
        Some(Undo::RemoveMessage {
            local_id: step.id.to_owned(),
        }),
    ))
}

/// Edits (`body = Some`) or deletes (`None`) a message.
pub(crate) fn change_message(
    tx: &Transaction<'_>,
    step: &LocalStep<'_>,
    fx: &mut Effects,
    before: &Message,
    body: Option<&str>,
) -> Result<(Message, Option<Undo>)> {
    let undo = Undo::RestoreMessage {
        local_id: before.local_id.clone(),
        body: before.body.clone(),
        edited_at: before.edited_at,
        deleted: before.deleted,
        pending: before.send_state == SendState::Pending,
    };
    let (new_body, edited_at, deleted) = match body {
        Some(b) => (b, Some(step.now), false),
        None => ("", before.edited_at, true),
    };
    writes::set_message_content(
        tx,
        &before.local_id,
        new_body,
        edited_at,
        deleted,
        &SendState::Pending,
    )?;
    let mut after = reads::message(tx, &before.local_id)?
        .ok_or_else(|| Error::not_found(format!("message {}", before.local_id)))?;
    // The entry is written after this step (in the same transaction).
    after.outbox_entry_id = Some(step.id.to_owned());
    fx.room(if deleted {
        RoomUpdate::MessageDeleted(after.clone())
    } else {
        RoomUpdate::MessageEdited(after.clone())
    });
    Ok((after, Some(undo)))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn create_room(
    tx: &Transaction<'_>,
    step: &LocalStep<'_>,
    fx: &mut Effects,
    room: &str,
    kind: RoomKind,
    title: &str,
    metadata: &Value,
) -> Result<(crate::model::RoomInfo, Option<Undo>)> {
    if let Some(existing) = reads::room(tx, room)? {
        if existing.joined {
            return Err(Error::invalid(format!("room {room} already exists")));
        }
    }
    writes::insert_local_room(
        tx,
        room,
        kind,
        title,
        &metadata.to_string(),
        step.me,
        step.now,
    )?;
    writes::upsert_member(
        tx,
        &Member {
            room: room.to_owned(),
            user: step.me.to_owned(),
            role: Role::Owner,
            status: MemberStatus::Active,
            joined_at: step.now,
        },
    )?;
    let info = reads::room(tx, room)?.ok_or_else(|| Error::not_found(format!("room {room}")))?;
    fx.room(RoomUpdate::RoomChanged(info.clone()));
    Ok((
        info,
        Some(Undo::RemoveRoom {
            room: room.to_owned(),
        }),
    ))
}

pub(crate) fn update_room(
    tx: &Transaction<'_>,
    step: &LocalStep<'_>,
    fx: &mut Effects,
    m: &Mutation,
) -> Result<(crate::model::RoomInfo, Option<Undo>)> {
    let Mutation::UpdateRoom {
        room,
        title,
        kind,
        metadata,
    } = m
    else {
        return Err(Error::invalid("not a room update"));
    };
    let before = reads::room(tx, room)?;
    let metadata = metadata.as_ref().map(Value::to_string);
    writes::update_room_fields(
        tx,
        room,
        title.as_deref(),
        *kind,
        metadata.as_deref(),
        step.now,
    )?;
    writes::set_room_state(tx, room, &SendState::Pending)?;
    let info = reads::room(tx, room)?.ok_or_else(|| Error::not_found(format!("room {room}")))?;
    fx.room(RoomUpdate::RoomChanged(info.clone()));
    let undo = match before {
        Some(b) => Undo::RestoreRoom {
            room: b.name,
            kind: b.kind,
            title: b.title,
            metadata: b.metadata_json,
            updated_at: b.updated_at,
            joined: b.joined,
        },
        None => Undo::RemoveRoom { room: room.clone() },
    };
    Ok((info, Some(undo)))
}

/// Join (`join = true`) or leave.
pub(crate) fn membership(
    tx: &Transaction<'_>,
    step: &LocalStep<'_>,
    fx: &mut Effects,
    room: &str,
    join: bool,
) -> Result<((), Option<Undo>)> {
    let before_room = reads::room(tx, room)?;
    let before_member = reads::member(tx, room, step.me)?;
    let undo = Undo::RestoreMembership {
        room: room.to_owned(),
        user: step.me.to_owned(),
        member: before_member,
        joined: Some(before_room.as_ref().is_some_and(|r| r.joined)),
        subscribed: None,
    };
    writes::set_room_flags(tx, room, Some(join), None)?;
    writes::set_room_state(tx, room, &SendState::Pending)?;
    if join {
        let m = Member {
            room: room.to_owned(),
            user: step.me.to_owned(),
            role: Role::Member,
            status: MemberStatus::Active,
            joined_at: step.now,
        };
        writes::upsert_member(tx, &m)?;
        fx.room(RoomUpdate::MemberChanged(m));
    } else {
        writes::delete_member(tx, room, step.me)?;
        fx.room(RoomUpdate::MemberRemoved {
            room: room.to_owned(),
            user: step.me.to_owned(),
        });
    }
    room_changed(tx, fx, room)?;
    Ok(((), Some(undo)))
}

/// Role changes and bans of another member.
pub(crate) fn member_change(
    tx: &Transaction<'_>,
    fx: &mut Effects,
    room: &str,
    user: &str,
    role: Option<Role>,
    status: Option<MemberStatus>,
    remove: bool,
) -> Result<((), Option<Undo>)> {
    let before = reads::member(tx, room, user)?;
    let undo = Undo::RestoreMembership {
        room: room.to_owned(),
        user: user.to_owned(),
        member: before.clone(),
        joined: None,
        subscribed: None,
    };
    if remove {
        if before.is_some() {
            writes::delete_member(tx, room, user)?;
            fx.room(RoomUpdate::MemberRemoved {
                room: room.to_owned(),
                user: user.to_owned(),
            });
        }
    } else if let Some(mut m) = before {
        if let Some(r) = role {
            m.role = r;
        }
        if let Some(s) = status {
            m.status = s;
        }
        writes::upsert_member(tx, &m)?;
        fx.room(RoomUpdate::MemberChanged(m));
    }
    Ok(((), Some(undo)))
}

pub(crate) fn put_document(
    tx: &Transaction<'_>,
    step: &LocalStep<'_>,
    fx: &mut Effects,
    room: &str,
    doc: &str,
    base_version: u64,
    content: &str,
) -> Result<(Document, Option<Undo>)> {
    let before = reads::document(tx, room, doc)?;
    let undo = Undo::RestoreDocument {
        room: room.to_owned(),
        doc: doc.to_owned(),
        previous_pending: before
            .as_ref()
            .is_some_and(|d| d.send_state == SendState::Pending),
        previous: before.map(|d| DocumentVersion {
            room: d.room,
            doc: d.doc,
            version: d.version,
            content: d.content,
            updated_by: d.updated_by,
            updated_at: d.updated_at,
        }),
    };
    let local = Document {
        room: room.to_owned(),
        doc: doc.to_owned(),
        version: base_version + 1,
        content: content.to_owned(),
        updated_by: step.me.to_owned(),
        updated_at: step.now,
        send_state: SendState::Pending,
        conflict: None,
    };
    writes::put_local_document(tx, &local)?;
    fx.emit(AppEvent::Document(DocumentUpdate::Updated(local.clone())));
    Ok((local, Some(undo)))
}

/// Marks notifications read (`ids = None`: all).
pub(crate) fn mark_read(
    tx: &Transaction<'_>,
    fx: &mut Effects,
    ids: Option<&[String]>,
) -> Result<((), Option<Undo>)> {
    let newly = match ids {
        Some(ids) => {
            let unread = reads::unread_among(tx, ids)?;
            writes::set_notifications_read(tx, &unread, true)?;
            unread
        }
        None => writes::mark_all_read(tx)?,
    };
    if ids.is_none() {
        writes::set_kv(tx, "unread", "0")?;
        fx.emit(AppEvent::Unread(0));
    } else if !newly.is_empty() {
        unread_delta(tx, fx, -(newly.len() as i64))?;
    }
    Ok(((), Some(Undo::MarkUnread { ids: newly })))
}

/// Moves the room's read marker forward and marks read the mentions it covers, as the server
/// will. A marker cannot move back, so there is nothing to undo: a discarded (or failed) entry
/// leaves the local marker where it is.
pub(crate) fn mark_room_read(
    tx: &Transaction<'_>,
    step: &LocalStep<'_>,
    fx: &mut Effects,
    room: &str,
    seq: u64,
) -> Result<((), Option<Undo>)> {
    if writes::advance_read_marker(tx, room, seq, step.now)? {
        fx.emit(AppEvent::ReadMarker(room.to_owned()));
    }
    let newly = writes::read_mentions_up_to(tx, room, seq)?;
    if !newly.is_empty() {
        unread_delta(tx, fx, -(newly.len() as i64))?;
    }
    Ok(((), None))
}

// ---------------------------------------------------------------------------------------------
// 2. ack

pub(crate) fn apply_ack(
    tx: &Transaction<'_>,
    entry: &Change<'_>,
    result: &Value,
    fx: &mut Effects,
) -> Result<()> {
    let op = entry.mutation.op();
    match entry.mutation {
        // A collaborative document's edits live in its CRDT state, not in these tables.
        Mutation::UpdateCollab { .. } => {}
        Mutation::SendMessage { .. } => {
            if let Some(m) = parse::<WireMessage>(op, result) {
                bind_message(tx, fx, entry.id, &m, entry.pos)?;
            } else {
                message_state_changed(tx, fx, entry.id, &SendState::Sent)?;
            }
        }
        Mutation::EditMessage { .. } | Mutation::DeleteMessage { .. } => {
            let target = entry.target.unwrap_or_default();
            if matches!(entry.mutation, Mutation::DeleteMessage { .. }) && !target.is_empty() {
                crate::media::forget_message_in(tx, fx, target)?;
            }
            match parse::<WireMessage>(op, result) {
                Some(m) if !target.is_empty() => bind_message(tx, fx, target, &m, entry.pos)?,
                _ => message_state_changed(tx, fx, target, &SendState::Sent)?,
            }
        }
        Mutation::CreateRoom { room, .. }
        | Mutation::UpdateRoom { room, .. }
        | Mutation::TransferOwnership { room, .. } => {
            if let Some(r) = parse::<Room>(op, result) {
                writes::upsert_room(tx, &r)?;
            }
            writes::set_room_state(tx, room, &SendState::Sent)?;
            if matches!(entry.mutation, Mutation::CreateRoom { .. }) {
                writes::set_room_flags(tx, room, Some(true), Some(true))?;
                fx.subscribe.push(room.clone());
            }
            room_changed(tx, fx, room)?;
        }
        Mutation::JoinRoom { .. } | Mutation::AcceptInvitation { .. } => {
            if let Some(m) = parse::<Member>(op, result) {
                writes::upsert_member(tx, &m)?;
                writes::set_room_flags(tx, &m.room, Some(true), Some(true))?;
                writes::set_room_state(tx, &m.room, &SendState::Sent)?;
                fx.subscribe.push(m.room.clone());
                fx.room(RoomUpdate::MemberChanged(m.clone()));
                room_changed(tx, fx, &m.room)?;
            }
        }
        Mutation::LeaveRoom { room } => {
            writes::set_room_flags(tx, room, Some(false), Some(false))?;
            writes::set_room_state(tx, room, &SendState::Sent)?;
            room_changed(tx, fx, room)?;
        }
        Mutation::DeleteRoom { room } => {
            writes::delete_room(tx, room)?;
            fx.room(RoomUpdate::RoomRemoved { room: room.clone() });
        }
        Mutation::SetRole { .. } => {
            if let Some(m) = parse::<Member>(op, result) {
                writes::upsert_member(tx, &m)?;
                fx.room(RoomUpdate::MemberChanged(m));
            }
        }
        Mutation::PutDocument { room, doc, .. } => {
            match parse::<DocumentVersion>(op, result) {
                Some(d) => {
                    writes::upsert_server_document(tx, &d, true)?;
                }
                None => writes::set_document_failed(tx, room, doc, &SendState::Sent, None)?,
            }
            document_changed(tx, fx, room, doc)?;
        }
        Mutation::MarkRead { .. } | Mutation::MarkAllRead {} => {
            if let Some(n) = result.get("unread").and_then(Value::as_u64) {
                writes::set_kv(tx, "unread", &n.to_string())?;
                fx.emit(AppEvent::Unread(n));
            }
        }
        Mutation::MarkRoomRead { .. } => {
            if let Some(m) = parse::<ReadMarker>(op, result) {
                if writes::advance_read_marker(tx, &m.room, m.seq, m.updated_at)? {
                    fx.emit(AppEvent::ReadMarker(m.room));
                }
            }
        }
        Mutation::Invite { .. }
        | Mutation::RejectInvitation { .. }
        | Mutation::RevokeInvitation { .. }
        | Mutation::Ban { .. }
        | Mutation::Unban { .. }
        | Mutation::ImportMessages { .. }
        | Mutation::SetPresence { .. }
        | Mutation::RegisterPush { .. }
        | Mutation::UnregisterPush { .. } => {}
        Mutation::SetPushMode { .. } => store_push_settings(tx, result)?,
    }
    Ok(())
}

/// `kv` key of the notification modes as the server last confirmed them (JSON `PushSettings`;
/// read by `crate::push`).
pub(crate) const PUSH_SETTINGS_KEY: &str = "push.settings";

/// Stores the server's notification modes from a `push.set_mode` answer.
fn store_push_settings(tx: &Transaction<'_>, result: &Value) -> Result<()> {
    match serde_json::from_value::<roam_proto::PushSettings>(result.clone()) {
        Ok(s) => writes::set_kv(tx, PUSH_SETTINGS_KEY, &serde_json::to_string(&s)?),
        Err(err) => {
            tracing::warn!(error = %err, "push.set_mode answered without settings");
            Ok(())
        }
    }
}

/// Binds a local message to the server's copy `m`, the answer to the outbox entry at
/// `answered` (see [`writes::attach_server_message`]), and reports what changed.
pub(crate) fn bind_message(
    tx: &Transaction<'_>,
    fx: &mut Effects,
    local_id: &str,
    m: &WireMessage,
    answered: i64,
) -> Result<()> {
    match writes::attach_server_message(tx, local_id, m, Some(answered))? {
        Some((msg, changed)) => {
            if changed {
                fx.room(RoomUpdate::SendStateChanged {
                    room: msg.room,
                    local_id: msg.local_id,
                    state: msg.send_state,
                });
            }
        }
        None => {
            // The local row is gone (discarded meanwhile): keep the server's copy.
            if let writes::MessageChange::Added(msg) = writes::upsert_server_message(tx, m)? {
                fx.room(RoomUpdate::MessageAdded(msg));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. failure, 4. retry

fn set_state(
    tx: &Transaction<'_>,
    entry: &Change<'_>,
    state: &SendState,
    current: Option<&DocumentVersion>,
    fx: &mut Effects,
) -> Result<()> {
    match entry.mutation {
        Mutation::SendMessage { .. } => message_state_changed(tx, fx, entry.id, state)?,
        Mutation::EditMessage { .. } | Mutation::DeleteMessage { .. } => {
            if let Some(t) = entry.target {
                message_state_changed(tx, fx, t, state)?;
            }
        }
        Mutation::CreateRoom { room, .. }
        | Mutation::UpdateRoom { room, .. }
        | Mutation::JoinRoom { room }
        | Mutation::LeaveRoom { room } => {
            writes::set_room_state(tx, room, state)?;
            room_changed(tx, fx, room)?;
        }
        // A refused update of a collaborative document stays in the local document; the app
        // hears of it (a retry is a new attempt, nothing to report).
        Mutation::UpdateCollab { room, doc, .. } => {
            if let SendState::Failed { code, message } = state {
                fx.emit(AppEvent::CollabError(crate::model::CollabError {
                    room: room.clone(),
                    doc: doc.clone(),
                    entry: entry.id.to_owned(),
                    code: code.clone(),
                    message: message.clone(),
                }));
            }
        }
        Mutation::PutDocument { room, doc, .. } => {
            writes::set_document_failed(tx, room, doc, state, current)?;
            if let Some(local) = reads::document(tx, room, doc)? {
                match current {
                    Some(cur) => fx.emit(AppEvent::Document(DocumentUpdate::Conflict {
                        local,
                        current: cur.clone(),
                    })),
                    None => fx.emit(AppEvent::Document(DocumentUpdate::Updated(local))),
                }
            }
        }
        _ => {}
    }
    Ok(())
}

pub(crate) fn apply_failure(
    tx: &Transaction<'_>,
    entry: &Change<'_>,
    state: &SendState,
    current: Option<&DocumentVersion>,
    fx: &mut Effects,
) -> Result<()> {
    set_state(tx, entry, state, current, fx)
}

pub(crate) fn apply_retry(
    tx: &Transaction<'_>,
    entry: &Change<'_>,
    fx: &mut Effects,
) -> Result<()> {
    set_state(tx, entry, &SendState::Pending, None, fx)
}

// ---------------------------------------------------------------------------------------------
// 5. discard

pub(crate) fn apply_discard(
    tx: &Transaction<'_>,
    entry: &StoredEntry,
    fx: &mut Effects,
) -> Result<()> {
    let Some(undo) = entry.undo.as_deref() else {
        return Ok(());
    };
    let undo: Undo = serde_json::from_str(undo)?;
    match undo {
        Undo::RemoveMessage { local_id } => {
            // A send with a file: its upload stops and the file leaves the cache.
            if let Some(u) = reads::upload(tx, &local_id)? {
                crate::media::forget_message_in(tx, fx, &local_id)?;
                writes::delete_upload(tx, &local_id)?;
                fx.emit(AppEvent::Upload(crate::model::UploadProgress {
                    local_id: local_id.clone(),
                    room: u.room,
                    sent_bytes: u.sent,
                    total_bytes: u.size,
                    state: UploadState::Cancelled,
                }));
            } else {
                crate::media::forget_message_in(tx, fx, &local_id)?;
            }
            if let Some(m) = reads::message(tx, &local_id)? {
                writes::delete_message(tx, &local_id)?;
                fx.room(RoomUpdate::MessageRemoved {
                    room: m.room,
                    local_id,
                });
            }
        }
        Undo::RestoreMessage {
            local_id,
            body,
            edited_at,
            deleted,
            pending,
        } => {
            let state = if pending {
                SendState::Pending
            } else {
                SendState::Sent
            };
            writes::set_message_content(tx, &local_id, &body, edited_at, deleted, &state)?;
            if let Some(m) = reads::message(tx, &local_id)? {
                fx.room(RoomUpdate::MessageEdited(m));
            }
        }
        Undo::RemoveRoom { room } => {
            writes::delete_room(tx, &room)?;
            fx.room(RoomUpdate::RoomRemoved { room });
        }
        Undo::RestoreRoom {
            room,
            kind,
            title,
            metadata,
            updated_at,
            joined,
        } => {
            if let Some(mut info) = reads::room(tx, &room)? {
                info.kind = kind;
                info.title = title;
                info.metadata_json = metadata;
                info.updated_at = updated_at;
                info.joined = joined;
                writes::restore_room(tx, &info)?;
            }
            room_changed(tx, fx, &room)?;
        }
        Undo::RestoreMembership {
            room,
            user,
            member,
            joined,
            subscribed,
        } => {
            match member {
                Some(m) => {
                    writes::upsert_member(tx, &m)?;
                    fx.room(RoomUpdate::MemberChanged(m));
                }
                None => {
                    writes::delete_member(tx, &room, &user)?;
                    fx.room(RoomUpdate::MemberRemoved {
                        room: room.clone(),
                        user,
                    });
                }
            }
            if joined.is_some() || subscribed.is_some() {
                writes::set_room_flags(tx, &room, joined, subscribed)?;
                writes::set_room_state(tx, &room, &SendState::Sent)?;
                room_changed(tx, fx, &room)?;
            }
        }
        Undo::RestoreDocument {
            room,
            doc,
            previous,
            previous_pending,
        } => {
            let conflict = reads::document(tx, &room, &doc)?.and_then(|d| d.conflict);
            match (conflict, previous) {
                (Some(current), _) => {
                    writes::upsert_server_document(tx, &current, true)?;
                }
                (None, Some(prev)) => {
                    writes::upsert_server_document(tx, &prev, true)?;
                    if previous_pending {
                        writes::set_document_failed(tx, &room, &doc, &SendState::Pending, None)?;
                    }
                }
                (None, None) => writes::delete_document(tx, &room, &doc)?,
            }
            document_changed(tx, fx, &room, &doc)?;
        }
        Undo::MarkUnread { ids } => {
            writes::set_notifications_read(tx, &ids, false)?;
            if !ids.is_empty() {
                unread_delta(tx, fx, ids.len() as i64)?;
            }
        }
    }
    Ok(())
}
