//! The rules of Roam, shared by REST and WebSocket: who may read what, and how a mutation is
//! checked, applied exactly once and announced.
//!
//! A mutation runs in two steps. [`Service::prepare`] applies the rate limit and checks the
//! input and the caller's permissions against current state (room and membership come from the
//! read cache); a replayed idempotency key is answered from the store, inside the write's
//! transaction or, when the mutation would be refused, before it. [`Service::submit`] then queues
//! the resulting write on the store at once and returns a future for its outcome. A socket
//! prepares its frames one after another and submits each as soon as it is prepared, so a
//! client's pipelined mutations are applied in the order it sent them while their commits
//! overlap. After the commit, the touched cache entries are dropped and the events and
//! notifications are published on the bus.

use std::future::Future;
use std::sync::Arc;

use roam_proto::{
    Attachment, ErrorCode, Invitation, InvitationStatus, Member, MemberStatus, MembershipChange,
    MembershipChangeKind, Mutation, Presence, PresenceStatus, Role, Room, RoomKind,
};
use serde_json::{json, Value};

use crate::blob::{self, Blobs};
use crate::bus::{Bus, BusMessage};
use crate::cache::ReadCache;
use crate::error::{ApiError, ApiResult};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::presence::PresenceTracker;
use crate::rules::{self, active_role, Guard, Refusal, Subject};
use crate::store::{Change, Committed, IdemRecord, NewNotification, Output, Store, Write};

pub use crate::clock::now_ms;

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// What a mutation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub result: Value,
    /// True when the key was seen before and nothing was applied.
    pub replayed: bool,
}

impl Prepared {
    /// Makes the write apply only after the actor's mutation `key` (a pipelined queue's
    /// predecessor): see [`Write::after`].
    pub fn after(&mut self, key: Option<String>) {
        if let Prepared::Write { write, .. } = self {
            write.after = key;
        }
    }
}

/// A checked mutation, ready to submit.
#[derive(Debug)]
pub enum Prepared {
    /// The key was used before for this same request: its stored result.
    Replay(Value),
    /// A write for the store; an import holds its share of the import budget
    /// ([`crate::limits::Limits::import_permit`]) until it is committed.
    Write {
        op: &'static str,
        write: Box<Write>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    },
}

/// The shared rules.
#[derive(Debug)]
pub struct Service {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub cache: ReadCache,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub presence: PresenceTracker,
    /// Numbers writes in the order they are queued on the store, which is the order the store
    /// applies them: announcements that can race (unread counts) carry it so that a late one
    /// never overwrites a newer one.
    pub commit_order: parking_lot::Mutex<u64>,
    /// The attachments served next to this service, which a `message.send` with an attachment
    /// is checked against: set by [`crate::app_with`] when the router is built (`None` until
    /// then: such a send is refused as unavailable). Kept here rather than in
    /// [`crate::AppState`], whose copy every open WebSocket task holds.
    pub attachments: parking_lot::RwLock<Option<Arc<Blobs>>>,
    /// Operators' suspensions, checked on every request and handshake.
    pub suspensions: crate::suspend::Suspensions,
    /// Woken after a commit that queued pushes (a message, a moved read marker), so this
    /// node's push worker (`crate::push`) sends them at once.
    pub push_wake: Arc<tokio::sync::Notify>,
    /// The collaborative documents loaded on this node (`collab`), handed to each
    /// `collab.update` write and read by `collab_sync`.
    pub docs: crate::collab::Docs,
}

impl Service {
    /// Checks `message.send` attachments against these blobs from now on.
    pub fn use_blobs(&self, blobs: Arc<Blobs>) {
        *self.attachments.write() = Some(blobs);
    }

    /// Refuses an attachment unless the sender may read its blob (uploaded it, or may read a
    /// message that carries it: the blobs' access rule) and the blob is stored with exactly
    /// the size the attachment states. A blob the sender may not read answers as one that does
    /// not exist, so that a send cannot probe which files others uploaded.
    async fn check_attachment(&self, user: &str, a: &Attachment) -> ApiResult<()> {
        let blobs = self.attachments.read().clone();
        let Some(blobs) = blobs else {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "attachments are not served by this server",
            ));
        };
        let failed = |e: blob::BlobError| {
            tracing::warn!(error = %e, blob = %a.blob, "checking an attachment's blob failed");
            ApiError::new(
                ErrorCode::Unavailable,
                "the blob store is unavailable; retry later",
            )
        };
        if !blobs.access.may_read(user, &a.blob).await.map_err(failed)? {
            return Err(ApiError::not_found("blob"));
        }
        // Touched before the existence check: retention then leaves the blob alone until
        // this message is committed (or refuses the touch, deleting it right now).
        if !blobs.hold(&a.blob).await.map_err(failed)? {
            return Err(ApiError::not_found("blob"));
        }
        let stored = blobs
            .store
            .stat(&blob::keys::blob(&a.blob))
            .await
            .map_err(failed)?
            .ok_or_else(|| ApiError::not_found("blob"))?;
        if stored.size != a.size {
            return Err(ApiError::new(
                ErrorCode::HashMismatch,
                format!(
                    "the attachment's size is {} bytes but its blob holds {} bytes",
                    a.size, stored.size
                ),
            ));
        }
        Ok(())
    }
}

/// The followers of collaborative documents ask the service who may still read a room.
impl crate::follow::Gate for Service {
    fn may_read<'a>(
        &'a self,
        user: &'a str,
        room: &'a str,
    ) -> futures_util::future::BoxFuture<'a, bool> {
        Box::pin(async move {
            match self.readable_room(user, room).await {
                Ok(_) => true,
                Err(e) => !matches!(e.code, ErrorCode::NotFound | ErrorCode::Forbidden),
            }
        })
    }

    fn left(
        &self,
        gone: roam_proto::collab::AwarenessUpdate,
    ) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            self.bus
                .publish(BusMessage::Awareness {
                    update: Arc::new(gone),
                    origin: None,
                })
                .await;
        })
    }
}

/// The fingerprint of a mutation: a hash of its canonical JSON.
pub fn fingerprint(m: &Mutation) -> String {
    let json = serde_json::to_vec(m).unwrap_or_default();
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&json))
}

/// Largest document content once escaped as a JSON string: a frame (1 MiB) minus room for the
/// fields around it.
const MAX_ENCODED_DOCUMENT: usize = roam_proto::validate::MAX_FRAME_BYTES - 4 * 1024;

/// A commit with more events than this in one room publishes only the room's last one. It
/// matches `HubConfig::fill_max`: the hub sees the gap before that event is wider than any
/// reordering and reads the run from the store at once, once for the room.
const COALESCE_OVER: usize = 256;

/// The events of one commit to publish. A `message.import` appends up to 5,000 events at once;
/// publishing only the last one lets the hub read the run from the store in pages, once for the
/// room, instead of carrying thousands of bus messages.
fn coalesce(events: Vec<roam_proto::RoomEvent>) -> Vec<roam_proto::RoomEvent> {
    if events.len() <= COALESCE_OVER {
        return events;
    }
    let mut per_room: std::collections::HashMap<String, usize> = Default::default();
    for ev in &events {
        *per_room.entry(ev.room.clone()).or_default() += 1;
    }
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<roam_proto::RoomEvent> = events
        .into_iter()
        .rev()
        .filter(|ev| per_room[&ev.room] <= COALESCE_OVER || seen.insert(ev.room.clone()))
        .collect();
    out.reverse();
    out
}

/// What planning a mutation gives: the store change, the notifications it creates, and the
/// guard the store checks again when it applies the change.
type Planned = (Change, Vec<NewNotification>, Option<Guard>);

/// A planner was handed a mutation of another area (a bug in `Service::plan`'s routing).
fn misrouted(m: &Mutation) -> ApiError {
    ApiError::internal(format!("{} reached the wrong planner", m.op()))
}

/// The user whose own membership an event changed, and the change to tell their devices.
fn membership_change(ev: &roam_proto::RoomEvent) -> Option<(String, MembershipChange)> {
    use roam_proto::EventBody as E;
    let (user, change, member) = match &ev.body {
        E::MemberJoined(m) => (&m.user, MembershipChangeKind::Joined, Some(m.clone())),
        E::MemberUpdated(m) => (&m.user, MembershipChangeKind::Updated, Some(m.clone())),
        E::MemberLeft { user } => (user, MembershipChangeKind::Left, None),
        E::MemberBanned { user } => (user, MembershipChangeKind::Banned, None),
        E::MemberUnbanned { user } => (user, MembershipChangeKind::Unbanned, None),
        _ => return None,
    };
    Some((
        user.clone(),
        MembershipChange {
            room: ev.room.clone(),
            change,
            seq: ev.seq,
            member,
            details: None,
        },
    ))
}

impl Service {
    // ----- cached reads -----

    /// The room, through the cache.
    pub async fn room(&self, name: &str) -> ApiResult<Option<Room>> {
        if let Some(r) = self.cache.room(name) {
            return Ok(r);
        }
        let epoch = self.cache.epoch();
        let r = self.store.room(name).await?;
        self.cache.put_room(epoch, name, r.clone());
        Ok(r)
    }

    /// The membership row, through the cache.
    pub async fn member(&self, room: &str, user: &str) -> ApiResult<Option<Member>> {
        if let Some(m) = self.cache.member(room, user) {
            return Ok(m);
        }
        let epoch = self.cache.epoch();
        let m = self.store.member(room, user).await?;
        self.cache.put_member(epoch, room, user, m.clone());
        Ok(m)
    }

    /// The room if `user` may read it; a private room they are not in reads as not found.
    pub async fn readable_room(&self, user: &str, name: &str) -> ApiResult<(Room, Option<Member>)> {
        roam_proto::validate::room_name(name)?;
        let room = self
            .room(name)
            .await?
            .ok_or_else(|| ApiError::not_found("room"))?;
        let member = self.member(name, user).await?;
        if member
            .as_ref()
            .is_some_and(|m| m.status == MemberStatus::Banned)
        {
            return Err(ApiError::forbidden("you are banned from this room"));
        }
        let is_member = active_role(&member).is_some();
        match room.kind {
            RoomKind::Public => Ok((room, member)),
            _ if is_member => Ok((room, member)),
            RoomKind::Protected => Err(ApiError::forbidden(
                "only members can read a protected room",
            )),
            RoomKind::Private => Err(ApiError::not_found("room")),
        }
    }

    /// The room if `user` is an active member with at least `min` role.
    async fn require_role(&self, user: &str, name: &str, min: Role) -> ApiResult<(Room, Role)> {
        let room = self.room(name).await?;
        let member = self.member(name, user).await?;
        let role =
            rules::require_role(room.as_ref().map(|r| r.kind), rules::standing(&member), min)?;
        let room = room.ok_or_else(|| ApiError::not_found("room"))?;
        Ok((room, role))
    }

    /// [`Service::require_role`] for a write: the same requirement goes with the write as its
    /// guard, which the store checks again under the room's lock.
    async fn require(
        &self,
        guard: &mut Option<Guard>,
        user: &str,
        name: &str,
        min: Role,
    ) -> ApiResult<(Room, Role)> {
        let found = self.require_role(user, name, min).await?;
        *guard = Some(Guard {
            room: name.to_owned(),
            min,
        });
        Ok(found)
    }

    /// Presence of users over every instance, with their stored last-seen when offline.
    pub async fn presence_of(&self, users: &[String]) -> ApiResult<Vec<Presence>> {
        let seen = self.store.last_seen(users).await?;
        let mut out = self.cluster_presence(users).await;
        for p in &mut out {
            if p.status == PresenceStatus::Offline {
                p.last_seen = seen.iter().find(|(x, _)| *x == p.user).map(|(_, t)| *t);
            }
        }
        Ok(out)
    }

    /// The presence of those of `users` connected to any instance (online or away).
    pub async fn live_presences(&self, users: &[String]) -> Vec<Presence> {
        let mut out = self.cluster_presence(users).await;
        out.retain(|p| p.status != PresenceStatus::Offline);
        out
    }

    /// Presence over every instance, one per user (`last_seen` now for the connected).
    async fn cluster_presence(&self, users: &[String]) -> Vec<Presence> {
        let now = now_ms();
        let local = users
            .iter()
            .map(|u| {
                let (status, devices) = self.presence.live(u);
                Presence {
                    user: u.clone(),
                    status,
                    last_seen: Some(now),
                    devices,
                }
            })
            .collect();
        self.bus.cluster_presence(local).await
    }

    /// Shares a presence change of this instance with the cluster, and tells the user's rooms
    /// when the user's status over every instance changed.
    pub async fn presence_moved(&self, t: crate::presence::Transition) {
        if let Some(p) = self.bus.share_presence(t).await {
            crate::bus::announce_presence(&self.store, &self.bus, p).await;
        }
    }

    // ----- mutations -----

    /// Checks and applies a mutation (REST path).
    pub async fn mutate(
        self: &Arc<Self>,
        user: &str,
        key: &str,
        m: Mutation,
    ) -> ApiResult<Applied> {
        let p = self.prepare(user, key, m).await?;
        self.submit(p).await
    }

    /// Step one: rate limit, validation and permissions, or the answer to a replayed key.
    ///
    /// The rate limit comes first and reads nothing: a refused mutation costs the store
    /// nothing, and a replay over the limit is refused too (`rate_limited` is transient, and
    /// the retry gets the stored answer). A replayed key must get its first answer, not a
    /// refusal made from the state since (the message it sent may be deleted, the user
    /// banned). The store is read for it only when the mutation would be refused here: a write
    /// that passes is checked again inside its transaction, where the store answers a replay
    /// with the stored result and changes nothing ([`Committed::Replayed`]). So the usual
    /// fresh mutation costs no read before its write.
    pub async fn prepare(&self, user: &str, key: &str, m: Mutation) -> ApiResult<Prepared> {
        roam_proto::validate::idempotency_key(key)?;
        m.validate()?;
        // An import first takes its share of the bytes imports may write at once (refused
        // while others hold it, before it costs any tokens), then tokens by its size.
        let weight = crate::limits::import_weight(&m);
        let permit = if weight > 0 {
            match self.limits.import_permit(weight) {
                Ok(p) => Some(p),
                Err(busy) => {
                    self.metrics.limited("import");
                    return Err(busy);
                }
            }
        } else {
            None
        };
        if let Err(limited) = self.limits.mutation_n(user, self.limits.cost(&m)) {
            self.metrics.limited("mutation");
            return Err(limited);
        }
        let fp = fingerprint(&m);
        let op = m.op();
        let now = now_ms();
        let (change, notify, guard) = match self.plan(user, m, now).await {
            Ok(p) => p,
            Err(refused) => {
                if let Some(stored) = self.store.idempotent_result(user, key).await? {
                    return self.replayed(stored.op, stored.fingerprint, stored.result, op, &fp);
                }
                return Err(refused);
            }
        };
        Ok(Prepared::Write {
            op,
            write: Box::new(Write {
                actor: user.to_owned(),
                now,
                idem: Some(IdemRecord {
                    user: user.to_owned(),
                    key: key.to_owned(),
                    op: op.to_owned(),
                    fingerprint: fp,
                }),
                guard,
                after: None,
                change,
                notify,
            }),
            permit,
        })
    }

    fn replayed(
        &self,
        stored_op: String,
        stored_fp: String,
        result: Value,
        op: &str,
        fp: &str,
    ) -> ApiResult<Prepared> {
        if stored_op != op || stored_fp != fp {
            return Err(ApiError::new(
                ErrorCode::IdempotencyMismatch,
                "this idempotency key was already used for a different request",
            ));
        }
        self.metrics.replays_deduplicated.inc();
        Ok(Prepared::Replay(result))
    }

    /// Step two: queue the write now; the future resolves when it is committed and announced.
    pub fn submit(
        self: &Arc<Self>,
        p: Prepared,
    ) -> impl Future<Output = ApiResult<Applied>> + Send + 'static {
        let pending = match p {
            Prepared::Replay(result) => Err(result),
            Prepared::Write { op, write, permit } => {
                let fp = write.idem.as_ref().map(|i| i.fingerprint.clone());
                // A moved read marker goes to the reader's own sockets.
                let reader = matches!(write.change, Change::MarkRoomRead { .. })
                    .then(|| write.actor.clone());
                let pushes = matches!(
                    write.change,
                    Change::InsertMessage { .. } | Change::MarkRoomRead { .. }
                );
                let mut order = self.commit_order.lock();
                *order += 1;
                Ok((
                    op,
                    fp,
                    reader,
                    pushes,
                    *order,
                    self.store.commit(*write),
                    permit,
                ))
            }
        };
        let me = Arc::clone(self);
        async move {
            let (op, fp, reader, pushes, order, fut, permit) = match pending {
                Err(result) => {
                    return Ok(Applied {
                        result,
                        replayed: true,
                    })
                }
                Ok(p) => p,
            };
            let committed = fut.await;
            // The write is done: the next import may go.
            drop(permit);
            if let Err(crate::store::StoreError::Collab(r)) = &committed {
                me.metrics.collab.refused(r.reason());
            }
            match committed? {
                Committed::Replayed(stored) => {
                    match me.replayed(
                        stored.op,
                        stored.fingerprint,
                        stored.result,
                        op,
                        &fp.unwrap_or_default(),
                    )? {
                        Prepared::Replay(result) => Ok(Applied {
                            result,
                            replayed: true,
                        }),
                        Prepared::Write { .. } => {
                            Err(ApiError::internal("unexpected replay state"))
                        }
                    }
                }
                Committed::Applied {
                    output,
                    events,
                    notifications,
                    unread,
                } => {
                    if pushes {
                        me.push_wake.notify_one();
                    }
                    me.announce(op, order, events, notifications, unread).await;
                    if let Output::Collab(c) = &output {
                        me.collab_applied(c).await;
                    }
                    if let (Output::ReadMarker(marker), Some(user)) = (&output, reader) {
                        me.bus
                            .publish(BusMessage::ReadMarker {
                                user,
                                marker: marker.clone(),
                            })
                            .await;
                    }
                    Ok(Applied {
                        result: output.to_json(),
                        replayed: false,
                    })
                }
            }
        }
    }

    /// After a `collab.update` commit: counters, then the update on the bus for every node's
    /// followers of the document.
    async fn collab_applied(&self, c: &crate::store::CollabOutput) {
        let m = &self.metrics.collab;
        m.updates_applied.inc();
        if c.compacted {
            m.compactions.inc();
        }
        let stats = self.docs.stats();
        m.cache_docs.set(stats.docs as i64);
        m.cache_bytes.set(stats.bytes as i64);
        self.bus
            .publish(BusMessage::CollabUpdate(Arc::new(
                crate::collab::Published {
                    room: c.result.room.clone(),
                    doc: c.result.doc.clone(),
                    seq: c.result.seq,
                    actor: c.actor.clone(),
                    update: Arc::clone(&c.update),
                },
            )))
            .await;
    }

    /// After a commit: counters, cache invalidation, then events and notifications on the bus.
    async fn announce(
        &self,
        op: &str,
        order: u64,
        events: Vec<roam_proto::RoomEvent>,
        notifications: Vec<roam_proto::Notification>,
        unread: Vec<(String, u64)>,
    ) {
        use roam_proto::EventBody as E;
        self.metrics.mutation(op);
        let mut messages = 0u64;
        let mut invalidated: Vec<&str> = Vec::new();
        for ev in &events {
            match ev.body {
                E::MessageCreated(_) => messages += 1,
                E::MessageEdited(_) | E::MessageDeleted(_) | E::DocumentUpdated(_) => {}
                _ => {
                    if !invalidated.contains(&ev.room.as_str()) {
                        invalidated.push(&ev.room);
                    }
                }
            }
        }
        self.metrics.messages.inc_by(messages);
        for room in invalidated {
            self.cache.invalidate_room(room);
            self.bus
                .publish(BusMessage::Invalidate {
                    room: room.to_owned(),
                })
                .await;
        }
        let mut joined: Vec<(String, String)> = Vec::new();
        let mut own: Vec<(String, MembershipChange)> = Vec::new();
        for ev in coalesce(events) {
            if let E::MemberJoined(m) = &ev.body {
                joined.push((m.room.clone(), m.user.clone()));
            }
            if let Some(change) = membership_change(&ev) {
                own.push(change);
            }
            self.bus.publish(BusMessage::Event(Arc::new(ev))).await;
        }
        // Each user's devices hear of their own membership changes, followed room or not.
        for (user, mut change) in own {
            if change.change == MembershipChangeKind::Joined {
                match self.room(&change.room).await {
                    Ok(details) => change.details = details,
                    Err(e) => tracing::warn!(error = %e.message, "membership: room unreadable"),
                }
            }
            self.bus
                .publish(BusMessage::Membership {
                    user,
                    change: Box::new(change),
                })
                .await;
        }
        // A new member's presence is news to the room they joined.
        for (room, user) in joined {
            for presence in self.live_presences(std::slice::from_ref(&user)).await {
                self.bus
                    .publish(BusMessage::Presence {
                        presence,
                        rooms: vec![room.clone()],
                    })
                    .await;
            }
        }
        for n in notifications {
            self.bus
                .publish(BusMessage::Notification {
                    user: n.user.clone(),
                    notification: Box::new(n),
                })
                .await;
        }
        for (user, count) in unread {
            self.bus
                .publish(BusMessage::Unread { user, count, order })
                .await;
        }
    }

    /// Turns a mutation into a store change after checking the caller may do it: the change,
    /// the notifications it creates, and the guard the store checks again when it applies it.
    async fn plan(&self, user: &str, m: Mutation, now: i64) -> ApiResult<Planned> {
        use Mutation as M;
        match m {
            M::UpdateCollab { room, doc, update } => {
                // A guest reads a document but does not edit it, as with `document.put`.
                let mut guard = None;
                self.require(&mut guard, user, &room, Role::Member).await?;
                let update = roam_proto::collab::decode_base64(
                    "update",
                    &update,
                    roam_proto::collab::MAX_COLLAB_UPDATE_BYTES,
                )?;
                if let Err(r) = crate::collab::check::update(&update) {
                    self.metrics.collab.refused(r.reason());
                    return Err(r.into());
                }
                Ok((
                    Change::UpdateCollab {
                        room,
                        doc,
                        update,
                        docs: self.docs.clone(),
                    },
                    Vec::new(),
                    guard,
                ))
            }
            M::CreateRoom { .. }
            | M::UpdateRoom { .. }
            | M::DeleteRoom { .. }
            | M::JoinRoom { .. }
            | M::LeaveRoom { .. }
            | M::TransferOwnership { .. } => self.plan_room(user, m, now).await,
            M::Invite { .. }
            | M::AcceptInvitation { .. }
            | M::RejectInvitation { .. }
            | M::RevokeInvitation { .. }
            | M::SetRole { .. }
            | M::Ban { .. }
            | M::Unban { .. } => self.plan_membership(user, m, now).await,
            M::SendMessage { .. }
            | M::EditMessage { .. }
            | M::DeleteMessage { .. }
            | M::ImportMessages { .. } => self.plan_message(user, m, now).await,
            M::PutDocument { .. }
            | M::MarkRoomRead { .. }
            | M::MarkRead { .. }
            | M::MarkAllRead {}
            | M::SetPresence { .. } => self.plan_account(user, m, now).await,
            M::RegisterPush { .. } | M::UnregisterPush { .. } | M::SetPushMode { .. } => {
                self.plan_push(user, m).await
            }
        }
    }

    /// Rooms: create, update, delete, join, leave, transfer.
    async fn plan_room(&self, user: &str, m: Mutation, now: i64) -> ApiResult<Planned> {
        let mut notify = Vec::new();
        let mut guard = None;
        let change = match m {
            Mutation::CreateRoom {
                room,
                kind,
                title,
                metadata,
            } => {
                if self.room(&room).await?.is_some() {
                    return Err(ApiError::conflict("a room with this name exists"));
                }
                Change::CreateRoom {
                    name: room,
                    kind,
                    title,
                    metadata,
                    owner: user.to_owned(),
                }
            }
            Mutation::UpdateRoom {
                room,
                title,
                kind,
                metadata,
            } => {
                self.require(&mut guard, user, &room, Role::Admin).await?;
                Change::UpdateRoom {
                    name: room,
                    title,
                    kind,
                    metadata,
                }
            }
            Mutation::DeleteRoom { room } => {
                self.require(&mut guard, user, &room, Role::Owner).await?;
                Change::DeleteRoom { name: room }
            }
            Mutation::JoinRoom { room } => {
                let r = self
                    .room(&room)
                    .await?
                    .ok_or_else(|| ApiError::not_found("room"))?;
                let member = self.member(&room, user).await?;
                rules::may_become_member(member.map(|m| m.status), Subject::Actor)?;
                let mut invitation = self.store.pending_invitation(&room, user, now).await?;
                if let Some(inv) = &invitation {
                    if let Err(e) = self.check_grant(&r, inv).await {
                        // A public room needs no invitation: join it as anyone would.
                        if r.kind != RoomKind::Public {
                            return Err(e);
                        }
                        invitation = None;
                    }
                }
                match (r.kind, invitation) {
                    (_, Some(inv)) => Change::AddMember {
                        room,
                        user: user.to_owned(),
                        role: inv.role,
                        invitation: Some(inv.id),
                    },
                    (RoomKind::Public, None) => Change::AddMember {
                        room,
                        user: user.to_owned(),
                        role: Role::Member,
                        invitation: None,
                    },
                    (RoomKind::Protected, None) => return Err(Refusal::NeedsInvitation.into()),
                    (RoomKind::Private, None) => return Err(ApiError::not_found("room")),
                }
            }
            Mutation::LeaveRoom { room } => {
                let (_, role) = self.require(&mut guard, user, &room, Role::Guest).await?;
                rules::may_leave(role)?;
                Change::RemoveMember {
                    room,
                    user: user.to_owned(),
                }
            }
            Mutation::TransferOwnership { room, user: to } => {
                let (r, my_role) = self.require(&mut guard, user, &room, Role::Owner).await?;
                let target = active_role(&self.member(&room, &to).await?);
                rules::may_transfer(user, my_role, &r.owner, &to, target)?;
                notify.push(NewNotification {
                    user: to.clone(),
                    id: new_id(),
                    kind: "ownership_transferred".into(),
                    room: Some(room.clone()),
                    data: json!({}),
                });
                Change::TransferOwnership {
                    room,
                    from: user.to_owned(),
                    to,
                }
            }
            other => return Err(misrouted(&other)),
        };
        Ok((change, notify, guard))
    }

    /// Who is in a room: invitations, roles, bans.
    async fn plan_membership(&self, user: &str, m: Mutation, now: i64) -> ApiResult<Planned> {
        let mut notify = Vec::new();
        let mut guard = None;
        let change = match m {
            Mutation::Invite {
                room,
                user: invitee,
                role,
                ttl_secs,
            } => {
                let r = self
                    .room(&room)
                    .await?
                    .ok_or_else(|| ApiError::not_found("room"))?;
                let (_, my_role) = self
                    .require(&mut guard, user, &room, rules::inviter_min(r.kind))
                    .await?;
                rules::may_grant(my_role, role)?;
                let status = self.member(&room, &invitee).await?.map(|m| m.status);
                rules::may_become_member(status, Subject::Other)?;
                let ttl = ttl_secs.unwrap_or(roam_proto::validate::DEFAULT_INVITATION_TTL_SECS);
                let id = new_id();
                let expires_at = now + (ttl as i64) * 1000;
                let invitation = Invitation {
                    id: id.clone(),
                    room: room.clone(),
                    invited_by: user.to_owned(),
                    invitee: invitee.clone(),
                    role,
                    status: InvitationStatus::Pending,
                    expires_at,
                    created_at: now,
                };
                notify.push(NewNotification {
                    user: invitee.clone(),
                    id: new_id(),
                    kind: "invited".into(),
                    room: Some(room.clone()),
                    data: serde_json::to_value(&invitation).unwrap_or(Value::Null),
                });
                Change::CreateInvitation {
                    id,
                    room,
                    invitee,
                    role,
                    expires_at,
                }
            }
            Mutation::AcceptInvitation { invitation } => {
                let inv = self.own_invitation(user, &invitation, now).await?;
                let status = self.member(&inv.room, user).await?.map(|m| m.status);
                rules::may_become_member(status, Subject::Actor)?;
                let r = self
                    .room(&inv.room)
                    .await?
                    .ok_or_else(|| ApiError::not_found("invitation"))?;
                self.check_grant(&r, &inv).await?;
                Change::AddMember {
                    room: inv.room,
                    user: user.to_owned(),
                    role: inv.role,
                    invitation: Some(inv.id),
                }
            }
            Mutation::RejectInvitation { invitation } => {
                let inv = self.own_invitation(user, &invitation, now).await?;
                Change::RejectInvitation { id: inv.id }
            }
            Mutation::RevokeInvitation { room, invitation } => {
                let (_, my_role) = self.require(&mut guard, user, &room, Role::Guest).await?;
                let inv = self
                    .store
                    .invitation(&invitation, now)
                    .await?
                    .filter(|i| i.room == room)
                    .ok_or_else(|| ApiError::not_found("invitation"))?;
                rules::may_revoke(user, my_role, &inv)?;
                rules::invitation_open(&inv, now)?;
                Change::RevokeInvitation { id: inv.id }
            }
            Mutation::SetRole {
                room,
                user: target,
                role,
            } => {
                let (_, my_role) = self.require(&mut guard, user, &room, Role::Admin).await?;
                let current = active_role(&self.member(&room, &target).await?);
                rules::may_set_role(user, my_role, &target, current, role)?;
                notify.push(NewNotification {
                    user: target.clone(),
                    id: new_id(),
                    kind: "role_changed".into(),
                    room: Some(room.clone()),
                    data: json!({ "role": role }),
                });
                Change::SetRole {
                    room,
                    user: target,
                    role,
                }
            }
            Mutation::Ban { room, user: target } => {
                let (_, my_role) = self.require(&mut guard, user, &room, Role::Admin).await?;
                let member = self.member(&room, &target).await?;
                rules::may_ban(user, my_role, &target, rules::standing(&member))?;
                notify.push(NewNotification {
                    user: target.clone(),
                    id: new_id(),
                    kind: "banned".into(),
                    room: Some(room.clone()),
                    data: json!({}),
                });
                Change::Ban { room, user: target }
            }
            Mutation::Unban { room, user: target } => {
                self.require(&mut guard, user, &room, Role::Admin).await?;
                rules::may_unban(self.member(&room, &target).await?.map(|m| m.status))?;
                Change::Unban { room, user: target }
            }
            other => return Err(misrouted(&other)),
        };
        Ok((change, notify, guard))
    }

    /// Messages: send, edit, delete, import.
    async fn plan_message(&self, user: &str, m: Mutation, _now: i64) -> ApiResult<Planned> {
        let mut notify = Vec::new();
        let mut guard = None;
        let change = match m {
            Mutation::SendMessage {
                room,
                body,
                reply_to,
                id,
                attachment,
            } => {
                self.require(&mut guard, user, &room, Role::Guest).await?;
                if let Some(r) = &reply_to {
                    if self.store.message(&room, r).await?.is_none() {
                        return Err(ApiError::not_found("reply_to message"));
                    }
                }
                if let Some(a) = &attachment {
                    self.check_attachment(user, a).await?;
                }
                let id = id.unwrap_or_else(new_id);
                for name in roam_proto::mentions(&body) {
                    if name != user && active_role(&self.member(&room, &name).await?).is_some() {
                        notify.push(NewNotification {
                            user: name,
                            id: new_id(),
                            kind: "mentioned".into(),
                            room: Some(room.clone()),
                            data: json!({ "message": id }),
                        });
                    }
                }
                Change::InsertMessage {
                    id,
                    room,
                    body,
                    reply_to,
                    attachment,
                }
            }
            Mutation::EditMessage {
                room,
                message,
                body,
            } => {
                self.require(&mut guard, user, &room, Role::Guest).await?;
                let msg = self
                    .store
                    .message(&room, &message)
                    .await?
                    .filter(|m| !m.deleted)
                    .ok_or_else(|| ApiError::not_found("message"))?;
                if msg.sender != user {
                    return Err(ApiError::forbidden("only the author can edit a message"));
                }
                Change::EditMessage {
                    room,
                    id: message,
                    body,
                }
            }
            Mutation::DeleteMessage { room, message } => {
                let (_, role) = self.require(&mut guard, user, &room, Role::Guest).await?;
                let msg = self
                    .store
                    .message(&room, &message)
                    .await?
                    .filter(|m| !m.deleted)
                    .ok_or_else(|| ApiError::not_found("message"))?;
                if msg.sender != user {
                    if role.rank() < Role::Admin.rank() {
                        return Err(ApiError::forbidden(
                            "only the author, an admin or the owner can delete a message",
                        ));
                    }
                    // Someone else's message: the deleter must still be an admin then.
                    guard = Some(Guard {
                        room: room.clone(),
                        min: Role::Admin,
                    });
                }
                Change::DeleteMessage { room, id: message }
            }
            Mutation::ImportMessages { room, bodies } => {
                self.require(&mut guard, user, &room, Role::Admin).await?;
                Change::ImportMessages {
                    room,
                    messages: bodies.into_iter().map(|b| (new_id(), b)).collect(),
                }
            }
            other => return Err(misrouted(&other)),
        };
        Ok((change, notify, guard))
    }

    /// Documents, read markers and notifications.
    async fn plan_account(&self, user: &str, m: Mutation, _now: i64) -> ApiResult<Planned> {
        let notify = Vec::new();
        let mut guard = None;
        let change = match m {
            Mutation::PutDocument {
                room,
                doc,
                base_version,
                content,
            } => {
                self.require(&mut guard, user, &room, Role::Member).await?;
                // The event, the ack and a later `version_conflict` each carry the content in
                // one frame: escaped as JSON (a control character takes six bytes), it must
                // leave room in 1 MiB for the rest of that frame.
                let encoded = serde_json::to_string(&content).map_or(usize::MAX, |s| s.len());
                if encoded > MAX_ENCODED_DOCUMENT {
                    return Err(ApiError::new(
                        ErrorCode::PayloadTooLarge,
                        format!(
                            "content takes {encoded} bytes as JSON; at most {MAX_ENCODED_DOCUMENT} fit in a frame"
                        ),
                    ));
                }
                Change::PutDocument {
                    room,
                    doc,
                    base_version,
                    content,
                }
            }
            Mutation::MarkRoomRead { room, seq } => {
                self.require(&mut guard, user, &room, Role::Guest).await?;
                let (_, head) = self.store.event_bounds(&room).await?;
                if seq > head {
                    return Err(ApiError::invalid(format!(
                        "seq {seq} is past the room's last event ({head})"
                    )));
                }
                Change::MarkRoomRead { room, seq }
            }
            Mutation::MarkRead { ids } => Change::MarkRead { ids: Some(ids) },
            Mutation::MarkAllRead {} => Change::MarkRead { ids: None },
            Mutation::SetPresence { .. } => {
                return Err(ApiError::invalid(
                    "presence.set is per device: send it on the WebSocket",
                ))
            }
            other => return Err(misrouted(&other)),
        };
        Ok((change, notify, guard))
    }

    /// Push registrations and modes (protocol §11): the caller's own; a room's mode needs a
    /// room the caller may read.
    async fn plan_push(&self, user: &str, m: Mutation) -> ApiResult<Planned> {
        let change = match m {
            Mutation::RegisterPush {
                device,
                platform,
                token,
                app_id,
                locale,
                sandbox,
            } => Change::RegisterPush {
                device,
                platform,
                token,
                app_id,
                locale,
                sandbox,
            },
            Mutation::UnregisterPush { device } => Change::UnregisterPush { device },
            Mutation::SetPushMode { room, mode } => {
                if let Some(r) = &room {
                    self.readable_room(user, r).await?;
                }
                Change::SetPushMode { room, mode }
            }
            other => return Err(misrouted(&other)),
        };
        Ok((change, Vec::new(), None))
    }

    /// An invitation grants its role only while its inviter could still grant it: an active
    /// member of the room who may invite there and whose role is above the invitation's.
    /// Checked again when it is accepted (or used by `room.join`), so an inviter demoted or
    /// gone since then grants nothing.
    async fn check_grant(&self, room: &Room, inv: &Invitation) -> ApiResult<()> {
        let inviter = active_role(&self.member(&room.name, &inv.invited_by).await?);
        Ok(rules::inviter_may_grant(room.kind, inviter, inv.role)?)
    }

    async fn own_invitation(&self, user: &str, id: &str, now: i64) -> ApiResult<Invitation> {
        let inv = self
            .store
            .invitation(id, now)
            .await?
            .ok_or_else(|| ApiError::not_found("invitation"))?;
        rules::invitation_for(&inv, user, None)?;
        rules::invitation_open(&inv, now)?;
        Ok(inv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(room: &str, seq: u64) -> roam_proto::RoomEvent {
        roam_proto::RoomEvent {
            room: room.into(),
            seq,
            at: 0,
            actor: "a".into(),
            body: roam_proto::EventBody::MemberLeft { user: "u".into() },
        }
    }

    #[test]
    fn long_runs_publish_their_last_event_only() {
        let few: Vec<_> = (1..=3).map(|s| event("a", s)).collect();
        assert_eq!(coalesce(few.clone()), few);
        let mut many: Vec<_> = (1..=300).map(|s| event("a", s)).collect();
        many.push(event("b", 7));
        let out = coalesce(many);
        assert_eq!(
            out.iter()
                .map(|e| (e.room.as_str(), e.seq))
                .collect::<Vec<_>>(),
            [("a", 300), ("b", 7)]
        );
    }

    #[test]
    fn fingerprint_tracks_arguments() {
        let a = Mutation::JoinRoom { room: "a".into() };
        let b = Mutation::JoinRoom { room: "b".into() };
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
    }
}
