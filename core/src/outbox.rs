//! The outbox: a durable, ordered, pipelined queue of mutations.
//!
//! Every change the app makes (send, edit or delete a message; create, update, join or leave a
//! room; invite; answer an invitation; set a role; ban; unban; put a document; mark
//! notifications read) goes through here.
//!
//! ## Enqueuing
//!
//! [`enqueue`] validates the [`Mutation`] (nothing invalid is ever queued), then, in **one
//! SQLite transaction**, applies the change optimistically to the local tables (see
//! [`crate::optimistic`]) and appends an `outbox` row holding the mutation exactly as it will
//! travel, with a fresh UUIDv7 as its idempotency key. Local reads show the change at once with
//! [`SendState::Pending`]. Because the outbox is just rows, it survives process death: on the
//! next open, every row still `pending` is loaded back into the scheduler and sent again with the
//! same key, and the server answers a key it has already applied with the stored result, so
//! nothing is applied twice.
//!
//! ## Queues and order
//!
//! Entries are grouped in queues: one per room (the mutation's `room`), plus one for the account
//! (`invitation.*`, `notification.*`). Entries of one queue go out strictly in the order they
//! were written; queues are independent. The [`Scheduler`] keeps a window of at most
//! [`OutboxConfig::window`] `mutate` frames on the wire over all queues, filling it round-robin,
//! so a busy room does not starve the others and a replay of thousands of entries is not one
//! round trip each. Answers are matched to entries by frame id, in any order.
//!
//! Pipelining inside a queue relies on the server handling one connection's frames in the order
//! they arrive (it submits each mutation to its store as it reads it). A message is sent with a
//! client-chosen id (its local id, a UUIDv7, which is also the entry's key), so an edit or delete
//! queued behind a send names the message by that id and needs nothing from the send's answer.
//!
//! A message with a file (`Client::send_attachment`) is queued like any message, and its
//! entry is held back while its file uploads (`crate::upload`): neither it nor anything after it
//! in its queue goes on the wire until the server holds the file, so the room's order is kept.
//! A permanent upload failure fails the entry (the rest of the queue goes on) and `retry`
//! uploads again; `discard` cancels the upload too.
//!
//! Mutations that change what the following ones may do (create, join, leave, accept an
//! invitation, roles, bans, room settings) are *barriers*: they go out alone and the rest of their
//! queue waits for their answer, because the server checks each mutation against what is
//! committed when it reads the frame — a message pipelined behind the `room.create` of its room
//! would otherwise be refused as `not_found`. An accepted invitation is queued in its room's queue
//! when the invitation is known locally (from its `invited` notification), so sends to the room
//! written after it wait for it.
//!
//! ## Failures
//!
//! - **Transient** (no connection, a lost connection, [`ErrorCode::is_transient`] codes, no
//!   answer within [`OutboxConfig::ack_timeout`]): the entry stays pending and its queue is
//!   *drained*: nothing new of that queue is sent until its in-flight entries are answered and a
//!   backoff delay has passed (exponential, full jitter, at least `retry_after_ms` when the server
//!   sent one). Then the queue resumes from its oldest unanswered entry, with the same key.
//!   Entries of that queue that were already on the wire behind the failed one are answered as
//!   usual. If the server refused entry *k* transiently but accepted *k + 1*, the two were applied
//!   out of order; the server's token-bucket rate limiter refuses everything until it refills, so
//!   this does not happen with `rate_limited`, but it can with `internal` or `unavailable`. An app
//!   that needs strict order even then sets [`OutboxConfig::per_room_window`] to 1.
//! - **Permanent** (every other code): the entry is marked [`SendState::Failed`] with the code and
//!   message, and so is the local row it changed. It leaves the scheduler; **later entries of the
//!   same queue keep going** (a message that cannot be sent must not hold back the next ones, and
//!   an app that wants "stop on first failure" can discard the rest), and other queues are not
//!   affected at all. The app calls [`retry`] (back to pending, at its original place in the
//!   queue) or [`discard`] (the entry is deleted and its optimistic change undone).
//!
//! ## Acks
//!
//! An `ack` removes the entry and stores the server's result in the same transaction (the
//! message gets its server id and `seq` and becomes [`SendState::Sent`]); acks and events read
//! from the socket together share that transaction (see [`crate::sync::apply`]). The `event` that the
//! mutation caused may arrive before or after the ack; both paths bind to the same local row.
//!
//! [`Scheduler`]: crate::scheduler::Scheduler
//! [`OutboxConfig::window`]: crate::config::OutboxConfig::window
//! [`OutboxConfig::ack_timeout`]: crate::config::OutboxConfig::ack_timeout
//! [`OutboxConfig::per_room_window`]: crate::config::OutboxConfig::per_room_window

use roam_proto::{ErrorBody, Mutation};
use serde_json::Value;

use crate::context::{Context, Effects};
use crate::db::{reads, writes};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::{now_ms, SendState};
use crate::optimistic::{self, Change, Undo};

pub(crate) use crate::optimistic::LocalStep;
use crate::scheduler::{queue_of, Queued};

// ---------------------------------------------------------------------------------------------
// Durable lifecycle

/// Validates, applies locally and queues a mutation, all in one transaction. Returns the entry
/// id (the idempotency key) and whatever the optimistic step produced.
pub(crate) fn enqueue<T>(
    ctx: &Context,
    mutation: Mutation,
    target: Option<String>,
    local: impl FnOnce(
        &rusqlite::Transaction<'_>,
        &LocalStep<'_>,
        &mut Effects,
    ) -> Result<(T, Option<Undo>)>,
) -> Result<(String, T)> {
    let queue = queue_of(&mutation);
    enqueue_with_id(ctx, new_key(), queue, mutation, target, local)
}

/// A fresh idempotency key (UUIDv7).
pub(crate) fn new_key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// [`enqueue`] with a key chosen by the caller (a message send uses its message id).
#[tracing::instrument(level = "debug", skip_all, fields(op = mutation.op(), entry = %id))]
pub(crate) fn enqueue_with_id<T>(
    ctx: &Context,
    id: String,
    queue: String,
    mutation: Mutation,
    target: Option<String>,
    local: impl FnOnce(
        &rusqlite::Transaction<'_>,
        &LocalStep<'_>,
        &mut Effects,
    ) -> Result<(T, Option<Undo>)>,
) -> Result<(String, T)> {
    mutation.validate()?;
    let is_message = matches!(mutation, Mutation::SendMessage { .. });
    let out = ctx.write(|tx, fx| {
        let now = now_ms();
        let pos = ctx.db.next_pos();
        let step = LocalStep {
            id: &id,
            pos,
            now,
            me: &ctx.me,
        };
        // A new edit of a document supersedes its earlier edits that failed for good
        // (typically the app rebasing after a version conflict): their entries go, without
        // undoing anything.
        if let Mutation::PutDocument { room, doc, .. } = &mutation {
            writes::delete_failed_document_puts(tx, room, doc)?;
        }
        // The local change first, so that its undo record goes into the outbox row as it is
        // inserted (one write of the row, not an insert and an update).
        let (value, undo) = local(tx, &step, fx)?;
        let undo = undo.map(|u| serde_json::to_string(&u)).transpose()?;
        writes::insert_entry(
            tx,
            pos,
            &id,
            &queue,
            &mutation,
            target.as_deref(),
            undo.as_deref(),
            now,
        )?;
        let mut queued = Queued::new(id.clone(), pos, queue, mutation, target, now);
        // A send whose file the local step queued for upload waits for it (`crate::upload`).
        if has_attachment(&queued.mutation) && reads::upload(tx, &id)?.is_some() {
            queued.waits = true;
            fx.uploads = true;
        }
        fx.enqueue(queued);
        Ok(value)
    })?;
    Metrics::inc(&ctx.metrics.mutations_queued);
    if is_message {
        Metrics::inc(&ctx.metrics.messages_queued);
    }
    Ok((id, out))
}

/// Queues a mutation with no local effect inside the caller's transaction (a collaborative
/// document's update, whose local effect is its CRDT state, stored in the same transaction):
/// validates it, writes its row and hands it to the scheduler when the transaction commits.
/// Returns the entry's id and position.
pub(crate) fn enqueue_in(
    ctx: &Context,
    tx: &rusqlite::Transaction<'_>,
    fx: &mut Effects,
    mutation: Mutation,
) -> Result<(String, i64)> {
    mutation.validate()?;
    let id = new_key();
    let pos = ctx.db.next_pos();
    let now = now_ms();
    let queue = queue_of(&mutation);
    writes::insert_entry(tx, pos, &id, &queue, &mutation, None, None, now)?;
    fx.enqueue(Queued::new(id.clone(), pos, queue, mutation, None, now));
    Metrics::inc(&ctx.metrics.mutations_queued);
    Ok((id, pos))
}

/// Replaces the mutation of a queued entry that has certainly never gone on the wire (see
/// `Scheduler::unsent`), in the scheduler and then in its row, inside the caller's
/// transaction. `false`: it went (or is gone), and nothing changed.
pub(crate) fn rewrite_unsent(
    ctx: &Context,
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    pos: i64,
    mutation: &Mutation,
) -> Result<bool> {
    mutation.validate()?;
    if !ctx.outbox.lock().rewrite(id, mutation) {
        return Ok(false);
    }
    writes::set_entry_mutation(tx, pos, id, mutation)?;
    Ok(true)
}

/// Whether a mutation is the send of a message with a file.
fn has_attachment(m: &Mutation) -> bool {
    matches!(
        m,
        Mutation::SendMessage {
            attachment: Some(_),
            ..
        }
    )
}

/// Stores the server's answer to an entry and removes it, inside the caller's transaction
/// (answers are applied in batches, see [`crate::sync::apply`]). Returns false when the entry
/// was gone already: discarding one on the wire is refused, so that is a stale answer, and the
/// event the mutation caused (if any) brings its effect anyway.
pub(crate) fn complete_in(
    tx: &rusqlite::Transaction<'_>,
    fx: &mut Effects,
    entry: &Queued,
    result: &Value,
) -> Result<bool> {
    if !writes::delete_entry(tx, entry.pos, &entry.id)? {
        return Ok(false);
    }
    optimistic::apply_ack(tx, &Change::from(entry), result, fx)?;
    Ok(true)
}

/// Marks an entry failed for good, with its local row.
pub(crate) fn fail(ctx: &Context, entry: &Queued, error: &ErrorBody) -> Result<()> {
    let state = SendState::Failed {
        code: error.code.as_str().to_owned(),
        message: error.message.clone(),
    };
    let is_message = matches!(entry.mutation, Mutation::SendMessage { .. });
    ctx.write(|tx, fx| {
        writes::set_entry_state(tx, entry.pos, &entry.id, &state)?;
        optimistic::apply_failure(tx, &Change::from(entry), &state, error.current.as_ref(), fx)
    })?;
    tracing::info!(entry = %entry.id, op = entry.mutation.op(), code = error.code.as_str(), "outbox entry failed");
    Metrics::inc(&ctx.metrics.mutations_failed);
    if is_message {
        Metrics::inc(&ctx.metrics.messages_failed);
    }
    Ok(())
}

/// Counts a transient failure against an entry (the `retries` metric counts the resend).
pub(crate) fn note_attempt(ctx: &Context, id: &str, pos: i64) {
    let res = ctx.write(|tx, _| writes::bump_attempts(tx, pos, id));
    if let Err(err) = res {
        tracing::warn!(error = %err, "cannot record an outbox attempt");
    }
}

/// Puts a failed entry back in its queue.
pub(crate) fn retry(ctx: &Context, id: &str) -> Result<()> {
    ctx.write(|tx, fx| {
        let entry = reads::outbox_entry(tx, id)?
            .ok_or_else(|| Error::not_found(format!("outbox entry {id}")))?;
        if !entry.state.is_failed() {
            return Err(Error::state("only a failed entry can be retried"));
        }
        writes::set_entry_state(tx, entry.pos, id, &SendState::Pending)?;
        // A send whose upload failed uploads again first (from what the server holds).
        let upload_again = has_attachment(&entry.mutation)
            && writes::set_upload_state(tx, id, &SendState::Pending, false)?;
        let mut q = Queued::new(
            entry.id.clone(),
            entry.pos,
            entry.queue.clone(),
            entry.mutation.clone(),
            entry.target.clone(),
            entry.created_at,
        );
        q.waits = upload_again;
        fx.uploads |= upload_again;
        optimistic::apply_retry(tx, &Change::from(&q), fx)?;
        fx.enqueue(q);
        Ok(())
    })
}

/// Folds an edit into the queued send of a message written on this device and not sent yet (a
/// pending entry that never went on the wire, or a failed one): the send's entry gets `body`,
/// so one entry travels, with the latest text, and a retry sends that text. Returns the message
/// as it now is, or `None` when the send cannot take it (on the wire, or answered): the caller
/// then queues an edit.
pub(crate) fn fold_edit_into_send(
    ctx: &Context,
    local_id: &str,
    body: &str,
) -> Result<Option<crate::model::Message>> {
    roam_proto::validate::body(body)?;
    ctx.write(|tx, fx| {
        let Some(entry) = reads::outbox_entry(tx, local_id)? else {
            return Ok(None);
        };
        let Mutation::SendMessage {
            room,
            reply_to,
            id,
            attachment,
            ..
        } = &entry.mutation
        else {
            return Ok(None);
        };
        let mutation = Mutation::SendMessage {
            room: room.clone(),
            body: body.to_owned(),
            reply_to: reply_to.clone(),
            id: id.clone(),
            attachment: attachment.clone(),
        };
        // A failed entry is not held by the scheduler; a pending one must be held and not on
        // the wire. The scheduler's copy changes under its lock, before the row: once this
        // returns true, whatever it sends carries the new body.
        if !entry.state.is_failed() && !ctx.outbox.lock().rewrite(local_id, &mutation) {
            return Ok(None);
        }
        writes::set_entry_mutation(tx, entry.pos, local_id, &mutation)?;
        let Some(before) = reads::message(tx, local_id)? else {
            return Ok(None);
        };
        writes::set_message_content(tx, local_id, body, None, false, &before.send_state)?;
        let after = reads::message(tx, local_id)?;
        if let Some(m) = &after {
            fx.room(crate::model::RoomUpdate::MessageEdited(m.clone()));
        }
        Ok(after)
    })
}

/// Deletes an entry that is pending (not on the wire) or failed, and undoes its local change.
/// An entry that cannot be decoded is simply deleted (its local change cannot be known).
pub(crate) fn discard(ctx: &Context, id: &str) -> Result<()> {
    ctx.write(|tx, fx| {
        let entry = match reads::outbox_entry(tx, id) {
            Ok(Some(entry)) => entry,
            Ok(None) => return Err(Error::not_found(format!("outbox entry {id}"))),
            Err(err) => {
                let Some(pos) = reads::entry_pos(tx, id)? else {
                    return Err(err);
                };
                tracing::info!(entry = %id, error = %err, "discarding an undecodable outbox entry");
                writes::delete_entry(tx, pos, id)?;
                return Ok(());
            }
        };
        if ctx.outbox.lock().remove(id).is_err() {
            return Err(Error::state(
                "the entry is being sent right now; wait for its answer",
            ));
        }
        writes::delete_entry(tx, entry.pos, id)?;
        optimistic::apply_discard(tx, &entry, fx)
    })
}

/// Loads the pending rows into the scheduler (at open). A row whose mutation this version cannot
/// decode (written by a newer app version, or damaged) is marked failed with the code `client`
/// and kept, so the app can show and discard it; it never stops the client from opening.
pub(crate) fn load(ctx: &Context) -> Result<usize> {
    let unreadable = ctx.db.read(reads::undecodable_pending)?;
    if !unreadable.is_empty() {
        ctx.write(|tx, _| {
            for (pos, id, why) in &unreadable {
                tracing::warn!(entry = %id, error = %why, "an outbox entry cannot be decoded; marked failed");
                let state = SendState::Failed {
                    code: "client".into(),
                    message: format!("this app version cannot read the entry: {why}"),
                };
                writes::set_entry_state(tx, *pos, id, &state)?;
            }
            Ok(())
        })?;
    }
    let (entries, uploading) = ctx
        .db
        .read(|c| Ok((reads::pending_entries(c)?, reads::pending_uploads(c)?)))?;
    let n = entries.len();
    let mut s = ctx.outbox.lock();
    for e in entries {
        let waits = uploading.contains(&e.id);
        let mut q = Queued::new(e.id, e.pos, e.queue, e.mutation, e.target, e.created_at);
        q.waits = waits;
        s.push_loaded(q);
    }
    drop(s);
    ctx.refresh_sync();
    Ok(n)
}
