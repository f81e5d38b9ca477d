//! Applying what the server sends: room events, subscription results, resets, notifications,
//! presence.
//!
//! **Cursors.** Each room has a cursor, the highest event `seq` applied to the store
//! (`room_cursors`). An event is applied only if its `seq` is exactly `cursor + 1`, and the
//! cursor moves **in the same transaction** as the event's changes, so a crash can never leave
//! an event applied without its cursor or the other way round. An event at or below the cursor is
//! a duplicate (a replay overlapping live delivery, a resent frame) and is dropped. An event
//! above `cursor + 1` means something was missed: it is dropped too, and the room is subscribed
//! again from its cursor, so the server resends the gap in order.
//!
//! **Recovery.** After every connect the socket sends one `subscribe` with every followed room
//! and its cursor (see [`crate::socket`]). For `ok` rooms the server replays the missed events,
//! then `caught_up`; they go through the same path as live events (whatever has arrived, in
//! short transactions: see [`apply`]). For a `reset` room the store drops the room's confirmed
//! messages (local unsent ones stay), moves the cursor to the server's `head_seq`, marks the room
//! for reloading, and reloads in the background over REST everything the missed events would
//! have changed: the room's record, its members, its documents and the newest page of messages,
//! retried until it is stored (see [`reload_room`]); live events continue from `head_seq`.
//! `forbidden` and `not_found` rooms stop being followed.
//!
//! **Own messages.** Messages are sent with a client-chosen id (their local id), so the
//! `message_created` event of a message sent from this device finds its local row by id, whether
//! it arrives before or after the `ack`; either one confirms the row, the other changes nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roam_proto::{
    ErrorCode, EventBody, Member, MemberStatus, MembershipChange, MembershipChangeKind,
    Message as WireMessage, Notification, Presence, ReadMarker, Room, RoomEvent, RoomKind,
    SubscribeResult, SubscriptionStatus,
};
use rusqlite::Transaction;
use serde_json::Value;

use crate::backoff::{Backoff, Jitter};
use crate::context::{Context, Effects, Want};
use crate::db::{reads, writes};
use crate::error::{Error, Result};
use crate::listeners::AppEvent;
use crate::metrics::Metrics;
use crate::model::{DocumentUpdate, DocumentVersion, NotificationInfo, RoomUpdate};
use crate::outbox;
use crate::scheduler::Queued;

/// What a batch of events did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Rooms where an event skipped ahead of the cursor.
    pub gaps: Vec<String>,
}

/// One thing the server sent that changes the store: a room event, or the answer to an outbox
/// entry (already taken off the scheduler's wire).
#[derive(Debug)]
pub(crate) enum Item {
    Event(RoomEvent),
    Ack(Queued, Value),
}

/// Longest the store's writer is held by one transaction of [`apply`]. A catch-up of thousands
/// of events is stored in many short transactions, so the app's own writes (a message sent from
/// the main thread) wait at most about this long for the writer, never for the whole catch-up.
const APPLY_SLICE: Duration = Duration::from_micros(750);

/// Applies what arrived together, in arrival order. `recovering`: rooms still catching up (for
/// the metrics); `skip`: rooms being re-subscribed after a gap (their events will be resent).
///
/// A replay answers thousands of mutations, each acknowledged and echoed as an event, and a
/// catch-up brings thousands of events; one transaction per frame would make the commits the
/// bottleneck, one transaction for all of them would keep the writer from the app for the whole
/// batch. So items share transactions of at most [`APPLY_SLICE`] each (at least one item): each
/// item is stored whole with its cursor, and the writer is handed to any waiting app write
/// between two transactions (see [`Context::write`]). While an app write is waiting, a
/// transaction ends after the item in hand, and the next one starts only once that write is in
/// (`Db::writer_wanted`, `Context::write_in_turn`). Events follow the cursor rules of the
/// module docs; an ack stores the server's result and removes its outbox entry (see
/// [`outbox::complete_in`]).
pub(crate) fn apply(
    ctx: &Context,
    items: &[Item],
    recovering: &HashSet<String>,
    skip: &HashSet<String>,
) -> Result<Applied> {
    let mut counts = Counts::default();
    let mut out = Applied::default();
    let mut cursors: HashMap<&str, u64> = HashMap::new();
    let mut next = 0;
    let mut result = Ok(());
    while next < items.len() {
        let slice = ctx.write_in_turn(|tx, fx| {
            let started = Instant::now();
            let mut slice = Counts::default();
            while let Some(item) = items.get(next) {
                apply_item(
                    ctx,
                    tx,
                    fx,
                    item,
                    &mut cursors,
                    &mut out,
                    &mut slice,
                    recovering,
                    skip,
                )?;
                next += 1;
                // An app write waiting for the writer gets it after this item's commit.
                if started.elapsed() >= APPLY_SLICE || ctx.db.writer_wanted() {
                    break;
                }
            }
            Ok(slice)
        });
        match slice {
            Ok(slice) => counts.add(&slice),
            Err(err) => {
                result = Err(err);
                break;
            }
        }
    }
    Metrics::add(&ctx.metrics.events_recovered, counts.recovered);
    Metrics::add(&ctx.metrics.events_live, counts.live);
    Metrics::add(&ctx.metrics.duplicates_ignored, counts.duplicates);
    Metrics::add(&ctx.metrics.mutations_acked, counts.acked);
    Metrics::add(&ctx.metrics.messages_acked, counts.messages_acked);
    result.map(|()| out)
}

/// What [`apply`] counted (committed transactions only).
#[derive(Debug, Default)]
struct Counts {
    recovered: u64,
    live: u64,
    duplicates: u64,
    acked: u64,
    messages_acked: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.recovered += other.recovered;
        self.live += other.live;
        self.duplicates += other.duplicates;
        self.acked += other.acked;
        self.messages_acked += other.messages_acked;
    }
}

/// Stores one item of [`apply`] inside its transaction.
#[allow(clippy::too_many_arguments)]
fn apply_item<'a>(
    ctx: &Context,
    tx: &Transaction<'_>,
    fx: &mut Effects,
    item: &'a Item,
    cursors: &mut HashMap<&'a str, u64>,
    out: &mut Applied,
    counts: &mut Counts,
    recovering: &HashSet<String>,
    skip: &HashSet<String>,
) -> Result<()> {
    let ev = match item {
        Item::Ack(entry, result) => {
            fx.answers += 1;
            if outbox::complete_in(tx, fx, entry, result)? {
                counts.acked += 1;
                if matches!(entry.mutation, roam_proto::Mutation::SendMessage { .. }) {
                    counts.messages_acked += 1;
                }
            }
            return Ok(());
        }
        Item::Event(ev) => ev,
    };
    if skip.contains(&ev.room) || out.gaps.contains(&ev.room) {
        return Ok(());
    }
    let cursor = match cursors.get(ev.room.as_str()) {
        Some(c) => *c,
        None => reads::cursor(tx, &ev.room)?,
    };
    if ev.seq <= cursor {
        counts.duplicates += 1;
        return Ok(());
    }
    if ev.seq != cursor + 1 {
        tracing::warn!(room = %ev.room, seq = ev.seq, cursor, "gap in room events; re-subscribing");
        out.gaps.push(ev.room.clone());
        return Ok(());
    }
    apply_event(ctx, tx, ev, fx)?;
    if !matches!(ev.body, EventBody::RoomDeleted { .. }) {
        writes::set_cursor(tx, &ev.room, ev.seq)?;
        writes::set_head_seq(tx, &ev.room, ev.seq)?;
    }
    cursors.insert(&ev.room, ev.seq);
    if recovering.contains(&ev.room) {
        counts.recovered += 1;
    } else {
        counts.live += 1;
    }
    Ok(())
}

fn room_changed(tx: &Transaction<'_>, fx: &mut Effects, room: &str) -> Result<()> {
    if let Some(r) = reads::room(tx, room)? {
        fx.room(RoomUpdate::RoomChanged(r));
    }
    Ok(())
}

/// A deleted message's file leaves the media cache (the message as stored locally names it;
/// the server's copy no longer does).
fn forget_deleted(tx: &Transaction<'_>, fx: &mut Effects, m: &roam_proto::Message) -> Result<()> {
    let local = match reads::message_by_server_id(tx, &m.id)? {
        Some(local) => Some(local.local_id),
        None => reads::message(tx, &m.id)?.map(|l| l.local_id),
    };
    match local {
        Some(local_id) => crate::media::forget_message_in(tx, fx, &local_id),
        None => Ok(()),
    }
}

/// Stores a message the server sent (a deleted one's file leaves the media cache first).
fn stored(
    tx: &Transaction<'_>,
    fx: &mut Effects,
    m: &roam_proto::Message,
) -> Result<writes::MessageChange> {
    if m.deleted {
        forget_deleted(tx, fx, m)?;
    }
    writes::upsert_server_message(tx, m)
}

fn apply_event(
    ctx: &Context,
    tx: &Transaction<'_>,
    ev: &RoomEvent,
    fx: &mut Effects,
) -> Result<()> {
    let me = ctx.me.as_str();
    match &ev.body {
        // The server redacts a deleted message in every event that carried it (`deleted: true`,
        // empty body): whatever the event's kind, such a message is shown as deleted.
        EventBody::MessageCreated(m) => match stored(tx, fx, m)? {
            writes::MessageChange::Added(msg) => fx.room(RoomUpdate::MessageAdded(msg)),
            writes::MessageChange::Updated(msg) if m.deleted => {
                fx.room(RoomUpdate::MessageDeleted(msg))
            }
            writes::MessageChange::Updated(msg) => fx.room(RoomUpdate::MessageEdited(msg)),
            writes::MessageChange::Confirmed(msg) => fx.room(RoomUpdate::SendStateChanged {
                room: msg.room,
                local_id: msg.local_id,
                state: msg.send_state,
            }),
            writes::MessageChange::Unchanged => {}
        },
        EventBody::MessageEdited(m) | EventBody::MessageDeleted(m) => {
            let deleted = matches!(ev.body, EventBody::MessageDeleted(_)) || m.deleted;
            if deleted {
                forget_deleted(tx, fx, m)?;
            }
            match writes::upsert_server_message(tx, m)? {
                writes::MessageChange::Added(msg)
                | writes::MessageChange::Updated(msg)
                | writes::MessageChange::Confirmed(msg) => fx.room(if deleted {
                    RoomUpdate::MessageDeleted(msg)
                } else {
                    RoomUpdate::MessageEdited(msg)
                }),
                writes::MessageChange::Unchanged => {}
            }
        }
        EventBody::RoomCreated(r) | EventBody::RoomUpdated(r) => {
            writes::upsert_room(tx, r)?;
            room_changed(tx, fx, &r.name)?;
        }
        EventBody::RoomDeleted { .. } => {
            writes::delete_room(tx, &ev.room)?;
            fx.room(RoomUpdate::RoomRemoved {
                room: ev.room.clone(),
            });
        }
        EventBody::MemberJoined(m) | EventBody::MemberUpdated(m) => {
            writes::upsert_member(tx, m)?;
            fx.room(RoomUpdate::MemberChanged(m.clone()));
            if m.user == me {
                let active = m.status == MemberStatus::Active;
                writes::set_room_flags(tx, &ev.room, Some(active), None)?;
                room_changed(tx, fx, &ev.room)?;
            }
        }
        EventBody::MemberLeft { user } | EventBody::MemberUnbanned { user } => {
            if reads::member(tx, &ev.room, user)?.is_some() {
                writes::delete_member(tx, &ev.room, user)?;
                fx.room(RoomUpdate::MemberRemoved {
                    room: ev.room.clone(),
                    user: user.clone(),
                });
            }
            if user == me && matches!(ev.body, EventBody::MemberLeft { .. }) {
                writes::set_room_flags(tx, &ev.room, Some(false), None)?;
                room_changed(tx, fx, &ev.room)?;
            }
        }
        EventBody::MemberBanned { user } => {
            if let Some(mut m) = reads::member(tx, &ev.room, user)? {
                m.status = MemberStatus::Banned;
                writes::upsert_member(tx, &m)?;
                fx.room(RoomUpdate::MemberChanged(m));
            }
            if user == me {
                writes::set_room_flags(tx, &ev.room, Some(false), None)?;
                room_changed(tx, fx, &ev.room)?;
            }
        }
        EventBody::DocumentUpdated(d) => {
            if let Some(doc) = writes::upsert_server_document(tx, d, false)? {
                fx.emit(AppEvent::Document(DocumentUpdate::Updated(doc)));
            }
        }
    }
    Ok(())
}

/// What a subscription answer asks the socket to do next.
#[derive(Debug, Default)]
pub(crate) struct Subscribed {
    /// Rooms whose missed events follow (wait for their `caught_up`).
    pub catching_up: Vec<String>,
    /// Rooms reset to `head_seq`: reload their newest messages.
    pub resets: Vec<(String, u64)>,
}

/// Applies the answer to a `subscribe`.
pub(crate) fn apply_subscribed(ctx: &Context, result: &SubscribeResult) -> Result<Subscribed> {
    let out = ctx.write(|tx, fx| {
        let mut out = Subscribed::default();
        for r in &result.rooms {
            match r.status {
                SubscriptionStatus::Ok => {
                    writes::set_head_seq(tx, &r.room, r.head_seq)?;
                    out.catching_up.push(r.room.clone());
                }
                SubscriptionStatus::Reset => {
                    let dropped = writes::drop_confirmed_messages(tx, &r.room)?;
                    writes::set_cursor(tx, &r.room, r.head_seq)?;
                    writes::set_head_seq(tx, &r.room, r.head_seq)?;
                    writes::set_kv(tx, &reload_key(&r.room), &r.head_seq.to_string())?;
                    tracing::info!(room = %r.room, head_seq = r.head_seq, dropped, "room reset by the server");
                    fx.room(RoomUpdate::Reset {
                        room: r.room.clone(),
                    });
                    out.resets.push((r.room.clone(), r.head_seq));
                }
                SubscriptionStatus::Forbidden => {
                    // No longer readable: nothing of it stays on the device.
                    tracing::info!(room = %r.room, "not allowed to follow the room any more");
                    forget_room(tx, fx, &r.room)?;
                }
                SubscriptionStatus::NotFound => {
                    tracing::info!(room = %r.room, "the room does not exist on the server");
                    writes::delete_room(tx, &r.room)?;
                    fx.room(RoomUpdate::RoomRemoved {
                        room: r.room.clone(),
                    });
                }
            }
        }
        Ok(out)
    })?;
    Metrics::add(&ctx.metrics.resets, out.resets.len() as u64);
    Ok(out)
}

/// The `kv` keys that mark a reset room as still to be reloaded (kept across restarts) start
/// with this, followed by the room's name.
const RELOAD_PREFIX: &str = "reload:";

fn reload_key(room: &str) -> String {
    format!("{RELOAD_PREFIX}{room}")
}

/// Reloads what a `reset` invalidated in a room — its record, its members, its documents and
/// the newest page of its messages — over REST, and stores it in one transaction. A failed
/// attempt is tried again after a backoff delay (the reconnect settings) until it succeeds, the
/// room turns out to be gone or forbidden, or the client shuts down; the room stays marked in
/// the store until then, so a restart picks the reload up again (see [`pending_reloads`]). At
/// most one reload per room runs at a time.
#[tracing::instrument(skip_all, fields(room = %room))]
pub(crate) async fn reload_room(ctx: Arc<Context>, room: String) {
    if !ctx.start_reload(&room) {
        return;
    }
    let rc = ctx.config.reconnect;
    let mut backoff = Backoff::new(
        rc.initial_delay,
        rc.max_delay,
        Jitter::Randomize(rc.randomization_factor),
    );
    let mut want = ctx.want.subscribe();
    loop {
        if *want.borrow_and_update() == Want::Shutdown {
            break;
        }
        let attempt = match fetch_reload(&ctx, &room).await {
            Ok(fetched) => store_reload(&ctx, &room, fetched),
            Err(err) => Err(err),
        };
        match attempt {
            Ok(()) => {
                tracing::info!("reset room reloaded");
                break;
            }
            Err(Error::Shutdown) => break,
            Err(Error::Server { code, .. })
                if matches!(code, ErrorCode::Forbidden | ErrorCode::NotFound) =>
            {
                tracing::info!(
                    code = code.as_str(),
                    "the reset room is gone; not reloading it"
                );
                if let Err(err) = ctx.write(|tx, _| writes::delete_kv(tx, &reload_key(&room))) {
                    tracing::warn!(error = %err, "cannot clear the reload mark");
                }
                break;
            }
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %err, ?delay, "cannot reload the reset room yet; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    changed = want.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
    ctx.end_reload(&room);
}

/// What a reset room gets from the server again.
#[derive(Debug)]
struct Reloaded {
    record: Room,
    members: Vec<Member>,
    documents: Vec<DocumentVersion>,
    messages: Vec<WireMessage>,
}

async fn fetch_reload(ctx: &Context, room: &str) -> Result<Reloaded> {
    let record = ctx.http.room(room).await?;
    let members = ctx.http.all_members(room).await?;
    let documents = ctx.http.all_documents(room).await?;
    let page = ctx
        .http
        .messages(room, None, ctx.config.reset_page_size)
        .await?;
    Ok(Reloaded {
        record,
        members,
        documents,
        messages: page.items,
    })
}

/// Stores a reload: the room's record, its members (replacing the stored ones), its documents
/// (a local edit still pending stays on top) and its messages up to the cursor (newer ones
/// arrive as events); then clears the room's reload mark.
fn store_reload(ctx: &Context, room: &str, r: Reloaded) -> Result<()> {
    ctx.write(|tx, fx| {
        if r.record.name == room {
            writes::upsert_room(tx, &r.record)?;
            room_changed(tx, fx, room)?;
        }
        let before = reads::members(tx, room)?;
        let members: Vec<Member> = r.members.into_iter().filter(|m| m.room == room).collect();
        writes::replace_members(tx, room, &members)?;
        for gone in before
            .iter()
            .filter(|b| !members.iter().any(|m| m.user == b.user))
        {
            fx.room(RoomUpdate::MemberRemoved {
                room: room.to_owned(),
                user: gone.user.clone(),
            });
        }
        for m in members.iter().filter(|m| !before.contains(m)) {
            fx.room(RoomUpdate::MemberChanged(m.clone()));
        }
        for d in r.documents.iter().filter(|d| d.room == room) {
            if let Some(doc) = writes::upsert_server_document(tx, d, false)? {
                fx.emit(AppEvent::Document(DocumentUpdate::Updated(doc)));
            }
        }
        let cursor = reads::cursor(tx, room)?;
        let mut items: Vec<&WireMessage> = r
            .messages
            .iter()
            .filter(|m| m.seq <= cursor && m.room == room)
            .collect();
        items.sort_by_key(|m| m.seq);
        for m in items {
            if let writes::MessageChange::Added(msg) = writes::upsert_server_message(tx, m)? {
                fx.room(RoomUpdate::MessageAdded(msg));
            }
        }
        writes::delete_kv(tx, &reload_key(room))
    })
}

/// Rooms reset by the server whose reload has not finished (in this process or an earlier
/// one).
pub(crate) fn pending_reloads(ctx: &Context) -> Result<Vec<String>> {
    ctx.db.read(|c| reads::kv_keys_after(c, RELOAD_PREFIX))
}

/// The server stopped sending a room's events: the room was deleted, or the user lost the
/// right to read it (`left`, `banned`, `forbidden`).
pub(crate) fn apply_unsubscribed(ctx: &Context, room: &str, reason: &str) -> Result<()> {
    ctx.write(|tx, fx| match reason {
        "left" => lose_room(tx, fx, &ctx.me, room, false),
        "banned" => lose_room(tx, fx, &ctx.me, room, true),
        "room_deleted" | "forbidden" => forget_room(tx, fx, room),
        _ => {
            if reads::room(tx, room)?.is_some() {
                writes::set_room_flags(tx, room, Some(false), Some(false))?;
                room_changed(tx, fx, room)?;
            }
            Ok(())
        }
    })
}

/// The user is no longer a member of `room`. A public room stays readable (unless `banned`),
/// so only the membership goes; anything else goes whole, text included.
fn lose_room(
    tx: &Transaction<'_>,
    fx: &mut Effects,
    me: &str,
    room: &str,
    banned: bool,
) -> Result<()> {
    let Some(info) = reads::room(tx, room)? else {
        return Ok(());
    };
    if info.kind == RoomKind::Public && !banned {
        writes::set_room_flags(tx, room, Some(false), Some(false))?;
        writes::delete_member(tx, room, me)?;
        fx.room(RoomUpdate::MemberRemoved {
            room: room.to_owned(),
            user: me.to_owned(),
        });
        room_changed(tx, fx, room)
    } else {
        forget_room(tx, fx, room)
    }
}

/// Forgets a room and what was stored of it.
fn forget_room(tx: &Transaction<'_>, fx: &mut Effects, room: &str) -> Result<()> {
    if reads::room(tx, room)?.is_some() {
        writes::delete_room(tx, room)?;
        fx.room(RoomUpdate::RoomRemoved {
            room: room.to_owned(),
        });
    }
    Ok(())
}

/// The user's own membership changed, maybe on another device: the room list follows at once.
/// A room joined elsewhere is listed (with the details the frame carries) and followed; a room
/// left is no longer followed, and its local data goes unless the room is public (anyone may
/// read it); a ban takes the room's data in any case.
pub(crate) fn apply_membership(ctx: &Context, change: &MembershipChange) -> Result<()> {
    let room = change.room.as_str();
    ctx.write(|tx, fx| {
        match change.change {
            MembershipChangeKind::Joined | MembershipChangeKind::Updated => {
                if let Some(details) = &change.details {
                    writes::upsert_room(tx, details)?;
                }
                if let Some(m) = &change.member {
                    writes::upsert_member(tx, m)?;
                    fx.room(RoomUpdate::MemberChanged(m.clone()));
                }
                // A room this device already lists as joined is followed already, or will be
                // when its own join is answered: only a join made elsewhere subscribes here.
                if !reads::room(tx, room)?.is_some_and(|r| r.joined) {
                    writes::set_room_flags(tx, room, Some(true), Some(true))?;
                    fx.subscribe.push(room.to_owned());
                }
                room_changed(tx, fx, room)?;
            }
            MembershipChangeKind::Left => lose_room(tx, fx, &ctx.me, room, false)?,
            MembershipChangeKind::Banned => lose_room(tx, fx, &ctx.me, room, true)?,
            MembershipChangeKind::Unbanned => {}
        }
        Ok(())
    })
}

pub(crate) fn notification_info(n: &Notification) -> NotificationInfo {
    NotificationInfo {
        seq: n.seq,
        id: n.id.clone(),
        kind: n.kind.clone(),
        room: n.room.clone(),
        actor: n.actor.clone(),
        data_json: n.data.to_string(),
        created_at: n.created_at,
        read: n.read,
    }
}

/// Stores a notification and moves the inbox cursor.
pub(crate) fn apply_notification(ctx: &Context, n: &Notification) -> Result<()> {
    ctx.write(|tx, fx| {
        let inserted = writes::upsert_notification(tx, n)?;
        let inbox = reads::kv_u64(tx, "inbox_seq")?;
        if n.seq > inbox {
            writes::set_kv(tx, "inbox_seq", &n.seq.to_string())?;
        }
        if inserted {
            fx.emit(AppEvent::Notification(notification_info(n)));
        }
        Ok(())
    })
}

/// Stores the unread count the server reported.
pub(crate) fn apply_unread(ctx: &Context, count: u64) -> Result<()> {
    ctx.write(|tx, fx| {
        writes::set_kv(tx, "unread", &count.to_string())?;
        fx.emit(AppEvent::Unread(count));
        Ok(())
    })
}

/// Stores a read marker the server reported (this account read `room` up to `seq`, on this
/// device or another); a marker behind the stored one changes nothing.
pub(crate) fn apply_read_marker(ctx: &Context, marker: &ReadMarker) -> Result<()> {
    ctx.write(|tx, fx| advance_marker(tx, fx, marker))
}

/// Moves the stored marker forward (never back) and tells the room list when it moved.
fn advance_marker(tx: &Transaction<'_>, fx: &mut Effects, marker: &ReadMarker) -> Result<()> {
    if writes::advance_read_marker(tx, &marker.room, marker.seq, marker.updated_at)? {
        fx.emit(AppEvent::ReadMarker(marker.room.clone()));
    }
    Ok(())
}

/// Brings the account's own state from the server, as part of every recovery: the rooms it is
/// an active member of (`GET /v1/rooms?joined=true`: one joined on another device is followed
/// from here on) and its read markers (`GET /v1/read-markers`: every one ahead of the stored one
/// is kept — markers moved on another device while this one was away). A room with a local
/// membership change still pending or failed (a leave not yet sent) is left as it is. Returns
/// the rooms to start following.
pub(crate) async fn load_account(ctx: &Context) -> Result<Vec<String>> {
    let mut joined = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = ctx.http.joined_rooms(cursor.as_deref()).await?;
        joined.extend(page.items);
        match page.next_cursor {
            Some(next) if cursor.as_ref() != Some(&next) => cursor = Some(next),
            _ => break,
        }
    }
    let markers = ctx.http.read_markers().await?;
    ctx.write(|tx, fx| {
        let mut follow = Vec::new();
        for r in &joined {
            let known = reads::room(tx, &r.name)?;
            let adopt = match &known {
                None => true,
                Some(k) => !k.joined && k.send_state == crate::model::SendState::Sent,
            };
            if known.is_none() || adopt {
                writes::upsert_room(tx, r)?;
            }
            if adopt {
                writes::set_room_flags(tx, &r.name, Some(true), Some(true))?;
                room_changed(tx, fx, &r.name)?;
                follow.push(r.name.clone());
            }
        }
        for m in &markers.items {
            advance_marker(tx, fx, m)?;
        }
        Ok(follow)
    })
}

/// Stores someone's presence.
pub(crate) fn apply_presence(ctx: &Context, p: &Presence) -> Result<()> {
    ctx.write(|tx, fx| {
        writes::upsert_presence(tx, p)?;
        fx.emit(AppEvent::Presence(p.clone()));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::auth::{StaticToken, TokenProvider};
    use crate::config::ClientConfig;
    use crate::db::Db;
    use crate::http::{self, Http};
    use crate::listeners::Dispatcher;

    fn context(dir: &Path) -> Arc<Context> {
        let config = ClientConfig::new(dir.join("a.db"), "http://127.0.0.1:9", "me");
        let db = Db::open(&config.db_path).expect("open");
        let dispatcher = Dispatcher::start().expect("dispatcher");
        let tokens: Arc<dyn TokenProvider> = Arc::new(StaticToken("token".into()));
        let base = http::base_url(&config.server_url).expect("url");
        let http = Http::new(base, tokens.clone(), config.http_timeout).expect("http");
        Arc::new(Context::new(config, db, dispatcher, tokens, http))
    }

    fn message_event(room: &str, seq: u64) -> Item {
        Item::Event(RoomEvent {
            room: room.into(),
            seq,
            at: 0,
            actor: "them".into(),
            body: EventBody::MessageCreated(WireMessage {
                id: format!("m{seq}"),
                room: room.into(),
                seq,
                sender: "them".into(),
                body: format!("body {seq}"),
                reply_to: None,
                created_at: 0,
                edited_at: None,
                deleted: false,
                attachment: None,
            }),
        })
    }

    /// A long catch-up is stored in short transactions: a write that starts once the first of
    /// them is committed gets the writer before the last one (it sees the room part-applied),
    /// and everything ends applied once, in order.
    #[test]
    fn a_catch_up_commits_after_every_item_while_a_write_waits() {
        const N: u64 = 40;
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = context(dir.path());
        let recovering: HashSet<String> = ["r".to_owned()].into();
        let waited: Vec<Item> = (1..=N).map(|seq| message_event("r", seq)).collect();
        let before = ctx.db.commit_count();
        ctx.db
            .with_writer_wanted(|| apply(&ctx, &waited, &recovering, &HashSet::new()))
            .expect("apply");
        assert_eq!(
            ctx.db.commit_count() - before,
            N,
            "one transaction per item while a write waits for the writer"
        );
        let alone: Vec<Item> = (N + 1..=2 * N).map(|seq| message_event("r", seq)).collect();
        let before = ctx.db.commit_count();
        apply(&ctx, &alone, &recovering, &HashSet::new()).expect("apply");
        assert!(
            ctx.db.commit_count() - before < N,
            "with nobody waiting, items share transactions"
        );
        assert_eq!(
            ctx.db.read(|c| reads::cursor(c, "r")).expect("cursor"),
            2 * N
        );
    }

    #[test]
    fn a_write_gets_in_while_a_long_catch_up_is_applied() {
        const N: u64 = 20_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = context(dir.path());
        let items: Vec<Item> = (1..=N).map(|seq| message_event("r", seq)).collect();
        let recovering: HashSet<String> = ["r".to_owned()].into();
        let applier = {
            let ctx = Arc::clone(&ctx);
            std::thread::spawn(move || apply(&ctx, &items, &recovering, &HashSet::new()))
        };
        // Wait for the first committed slice (bounded: a stuck apply fails the test).
        let mut looks = 0;
        while ctx.db.read(|c| reads::cursor(c, "r")).expect("cursor") == 0 {
            looks += 1;
            assert!(looks < 60_000, "nothing applied");
            std::thread::sleep(Duration::from_millis(1));
        }
        let seen = ctx
            .write(|tx, _| reads::cursor(tx, "r"))
            .expect("the app's write");
        let applied = applier.join().expect("apply thread").expect("apply");
        assert!(applied.gaps.is_empty());
        assert!(
            seen > 0 && seen < N,
            "the write waited for the whole catch-up (it saw the cursor at {seen})"
        );
        let cursor = ctx.db.read(|c| reads::cursor(c, "r")).expect("cursor");
        assert_eq!(cursor, N);
        assert_eq!(
            ctx.metrics
                .events_recovered
                .load(std::sync::atomic::Ordering::Relaxed),
            N
        );
        let newest = ctx
            .db
            .read(|c| reads::messages(c, "r", None, 2))
            .expect("messages");
        let bodies: Vec<&str> = newest.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, [format!("body {}", N - 1), format!("body {N}")]);
    }
}
