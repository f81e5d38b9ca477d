//! Typing indicators that end by themselves: each carries a generation, and a timer ends it after
//! the configured timeout unless a newer "typing" replaced it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::bus::{Bus, BusMessage};
use crate::conn::ConnId;

/// Server-side typing expiry.
#[derive(Debug)]
pub struct TypingTracker {
    timeout: Duration,
    /// (room, user) → generation of the current indicator
    active: Mutex<HashMap<(String, String), u64>>,
    next: Mutex<u64>,
}

impl TypingTracker {
    pub fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(TypingTracker {
            timeout,
            active: Mutex::new(HashMap::new()),
            next: Mutex::new(0),
        })
    }

    /// Relays a typing change and, for `typing: true`, schedules its end.
    pub async fn update(
        self: &Arc<Self>,
        bus: &Arc<dyn Bus>,
        room: &str,
        user: &str,
        typing: bool,
        origin: Option<ConnId>,
    ) {
        let key = (room.to_owned(), user.to_owned());
        if typing {
            let generation = {
                let mut n = self.next.lock();
                *n += 1;
                *n
            };
            self.active.lock().insert(key.clone(), generation);
            let me = Arc::clone(self);
            let bus2 = Arc::clone(bus);
            tokio::spawn(async move {
                tokio::time::sleep(me.timeout).await;
                let expired = {
                    let mut a = me.active.lock();
                    if a.get(&key) == Some(&generation) {
                        a.remove(&key);
                        true
                    } else {
                        false
                    }
                };
                if expired {
                    // Like the start, the end is for the room's other sockets.
                    bus2.publish(BusMessage::Typing {
                        room: key.0,
                        user: key.1,
                        typing: false,
                        origin,
                    })
                    .await;
                }
            });
        } else if self.active.lock().remove(&key).is_none() {
            // Nothing to stop: do not relay a stop nobody saw start.
            return;
        }
        bus.publish(BusMessage::Typing {
            room: room.to_owned(),
            user: user.to_owned(),
            typing,
            origin,
        })
        .await;
    }

    /// Ends every indicator of a user in every room (their last socket closed).
    pub async fn clear_user(&self, bus: &Arc<dyn Bus>, user: &str) {
        let rooms: Vec<String> = {
            let mut a = self.active.lock();
            let keys: Vec<_> = a.keys().filter(|(_, u)| u == user).cloned().collect();
            keys.into_iter()
                .map(|k| {
                    a.remove(&k);
                    k.0
                })
                .collect()
        };
        for room in rooms {
            bus.publish(BusMessage::Typing {
                room,
                user: user.to_owned(),
                typing: false,
                origin: None,
            })
            .await;
        }
    }
}
