//! This instance as a bus between instances sees it ([`Inbound`]): the hub, and through a weak
//! reference the service (its read cache, store, write order and presence), which owns the bus
//! and so must not be owned by it.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use roam_proto::{Presence, PresenceStatus};

use crate::bus::{announce_presence, BusMessage, Deliver, Inbound};
use crate::hub::Hub;
use crate::service::Service;

/// The [`Inbound`] of an instance, given to its bus when the bus starts.
#[derive(Debug)]
pub struct Instance {
    hub: Arc<Hub>,
    service: Weak<Service>,
}

impl Instance {
    pub fn new(hub: Arc<Hub>, service: Weak<Service>) -> Self {
        Instance { hub, service }
    }
}

impl Deliver for Instance {
    fn deliver(self: Arc<Self>, msg: BusMessage) {
        self.hub.dispatch(msg);
    }
}

#[async_trait]
impl Inbound for Instance {
    fn unread_changed(&self, user: String) {
        if self.hub.socket_counts(&user).0 == 0 {
            return;
        }
        let Some(svc) = self.service.upgrade() else {
            return;
        };
        let hub = Arc::clone(&self.hub);
        tokio::spawn(async move {
            match svc.store.unread_count(&user).await {
                Ok(count) => {
                    let order = {
                        let mut o = svc.commit_order.lock();
                        *o += 1;
                        *o
                    };
                    hub.dispatch(BusMessage::Unread { user, count, order });
                }
                Err(e) => tracing::warn!(error = %e, "redis bus: unread count failed"),
            }
        });
    }

    fn invalidate(&self, room: &str) {
        if let Some(svc) = self.service.upgrade() {
            svc.cache.invalidate_room(room);
        }
    }

    fn resync(&self) {
        // Whatever the bus lost may include cache invalidations, so the whole read cache goes
        // first: the events read back (a ban, a deletion) are then judged against the store,
        // not stale entries.
        if let Some(svc) = self.service.upgrade() {
            svc.cache.invalidate_all();
            // A lost `UserChanged` may be among them.
            tokio::spawn(async move {
                if let Err(e) = svc.suspensions.reload(&*svc.store).await {
                    tracing::warn!(error = %e, "redis bus: suspensions could not be read again");
                }
            });
        }
        let hub = Arc::clone(&self.hub);
        tokio::spawn(async move {
            let read = hub.resync().await;
            tracing::debug!(events = read, "redis bus: resync done");
        });
    }

    fn user_changed(&self, user: String) {
        let Some(svc) = self.service.upgrade() else {
            return;
        };
        let hub = Arc::clone(&self.hub);
        tokio::spawn(async move {
            if let Err(e) = svc.suspensions.reload(&*svc.store).await {
                tracing::warn!(error = %e, %user, "redis bus: suspensions could not be read again");
            }
            let closed = hub.close_user(&user, roam_proto::close::TOKEN_EXPIRED);
            tracing::info!(%user, closed, "an operator changed the user on another instance: sockets closed");
        });
    }

    fn sockets(&self) -> usize {
        self.hub.connection_count()
    }

    fn presence_here(&self) -> Vec<(String, PresenceStatus, u32)> {
        self.service
            .upgrade()
            .map(|svc| svc.presence.snapshot())
            .unwrap_or_default()
    }

    fn presence_of(&self, user: &str) -> (PresenceStatus, u32) {
        match self.service.upgrade() {
            Some(svc) => svc.presence.live(user),
            None => (PresenceStatus::Offline, 0),
        }
    }

    async fn went_offline(&self, user: &str, last_seen: i64) {
        let Some(svc) = self.service.upgrade() else {
            return;
        };
        if let Err(e) = svc.store.save_last_seen(user, last_seen).await {
            tracing::warn!(error = %e, "redis bus: could not save last-seen");
        }
        let presence = Presence {
            user: user.to_owned(),
            status: PresenceStatus::Offline,
            last_seen: Some(last_seen),
            devices: 0,
        };
        announce_presence(&svc.store, &svc.bus, presence).await;
    }
}
