//! The bus: how what happens on one instance reaches the sockets of every instance.
//!
//! Whoever causes something (a commit, a typing frame, a presence change) publishes a
//! [`BusMessage`] on the [`Bus`]. A bus hands each message to this instance's sockets through
//! [`Deliver`] (the hub implements it), and a bus between instances also hands what it
//! receives from the others to [`Inbound`], the narrow view of this instance it is given when it
//! starts. The in-process bus of a single instance is [`LocalBus`]; the Redis bus is in
//! `cluster.rs`. Nothing here knows the hub, the service or the cache: they are behind these two
//! traits.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use roam_proto::{MembershipChange, Notification, Presence, PresenceStatus, ReadMarker, RoomEvent};

use crate::conn::ConnId;
use crate::presence::Transition;
use crate::store::Store;

/// A message between instances.
#[derive(Debug, Clone)]
pub enum BusMessage {
    /// A committed room event.
    Event(Arc<RoomEvent>),
    /// Typing, relayed to the room's sockets except `origin`.
    Typing {
        room: String,
        user: String,
        typing: bool,
        origin: Option<ConnId>,
    },
    /// A presence change, for sockets following any of `rooms`.
    Presence {
        presence: Presence,
        rooms: Vec<String>,
    },
    /// A new notification for a user's sockets.
    Notification {
        user: String,
        notification: Box<Notification>,
    },
    /// A user's unread count as of the write numbered `order` (see
    /// `Service::commit_order`); an older one arriving late is dropped.
    Unread {
        user: String,
        count: u64,
        order: u64,
    },
    /// Cached room metadata or membership changed: drop it from every instance's cache.
    Invalidate { room: String },
    /// A user's read marker of a room moved: for all of that user's sockets.
    ReadMarker { user: String, marker: ReadMarker },
    /// A user's own membership of a room changed: for all of that user's sockets.
    Membership {
        user: String,
        change: Box<MembershipChange>,
    },
    /// An operator suspended, unsuspended or erased the user: every other instance reads the
    /// user's suspension stamp again and closes their sockets (the instance that did it already
    /// has).
    UserChanged { user: String },
    /// A collaborative-document update applied (§12): for the document's followers.
    CollabUpdate(Arc<crate::collab::Published>),
    /// Someone's awareness in a collaborative document, for its other followers (`origin`:
    /// the sending socket, on this instance).
    Awareness {
        update: Arc<roam_proto::collab::AwarenessUpdate>,
        origin: Option<ConnId>,
    },
}

/// Carries [`BusMessage`]s to every instance's hub, and keeps the cluster's view of presence.
/// The defaults are those of a single instance: its own view is the whole view.
#[async_trait]
pub trait Bus: Send + Sync + fmt::Debug + 'static {
    async fn publish(&self, msg: BusMessage);

    /// Why the bus cannot reach the other instances right now (`None`: it can). `/readyz`
    /// answers 503 while this is `Some`.
    fn unavailable(&self) -> Option<String> {
        None
    }

    /// Shares a change of this instance's view of a user's presence (`devices` 0: no socket
    /// here left) and answers the user's presence over every instance when its status changed
    /// (`None`: nothing anyone should be told).
    async fn share_presence(&self, change: Transition) -> Option<Presence> {
        change.status_changed().then_some(change.now)
    }

    /// The presence of each user over every instance, given this instance's view of each.
    async fn cluster_presence(&self, local: Vec<Presence>) -> Vec<Presence> {
        local
    }
}

/// Where a bus hands each message meant for this instance's sockets: the hub, which passes it
/// to the sockets it concerns.
pub trait Deliver: Send + Sync + fmt::Debug + 'static {
    fn deliver(self: Arc<Self>, msg: BusMessage);
}

/// This instance as a bus between instances sees it: where what it receives from the others
/// goes, and what it reads to keep the cluster's view of this instance. It is given to the bus
/// once, when the bus starts.
#[async_trait]
pub trait Inbound: Deliver {
    /// Another instance changed `user`'s unread count: read it again and deliver it to the
    /// user's sockets here, if there are any.
    fn unread_changed(&self, user: String);

    /// Another instance changed a room's metadata or membership: forget the cached reads of it.
    fn invalidate(&self, room: &str);

    /// Messages may have been lost: forget every cached read, then bring every room followed
    /// here up to the store (in the background).
    fn resync(&self);

    /// Sockets open here.
    fn sockets(&self) -> usize;

    /// Every user connected here, with their status and device count here.
    fn presence_here(&self) -> Vec<(String, PresenceStatus, u32)>;

    /// A user's status and device count here.
    fn presence_of(&self, user: &str) -> (PresenceStatus, u32);

    /// `user` is connected nowhere any more (the instance that had their sockets went silent
    /// after `last_seen`, in ms since the epoch): saves their last-seen time and tells their
    /// rooms they are offline.
    async fn went_offline(&self, user: &str, last_seen: i64);

    /// Another instance's operator changed `user` (see [`BusMessage::UserChanged`]).
    fn user_changed(&self, user: String) {
        let _ = user;
    }
}

/// The in-process bus of a single instance: every message goes straight to the local hub.
#[derive(Debug)]
pub struct LocalBus {
    hub: Arc<dyn Deliver>,
}

impl LocalBus {
    pub fn new(hub: Arc<dyn Deliver>) -> Self {
        LocalBus { hub }
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(&self, msg: BusMessage) {
        Arc::clone(&self.hub).deliver(msg);
    }
}

/// Publishes a presence change to the rooms the user is in.
pub async fn announce_presence(store: &Arc<dyn Store>, bus: &Arc<dyn Bus>, presence: Presence) {
    let rooms = match store.rooms_of(&presence.user).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, user = %presence.user, "presence: could not list rooms");
            return;
        }
    };
    bus.publish(BusMessage::Presence { presence, rooms }).await;
}
