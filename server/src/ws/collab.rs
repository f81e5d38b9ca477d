//! A socket's collaborative-document frames (protocol §12): `collab_sync`, `collab_leave` and
//! `awareness`.
//!
//! **Sync.** The answer is computed from the node's cached document (loaded from the store
//! when it is not cached, off the async workers) and the socket is made a follower at the
//! answer's `seq` while the document is held, so the next update it receives is `seq + 1`:
//! nothing is lost or sent twice between the answer and the live updates. When the document's
//! line here has already released updates past the cached copy (written on another node), the
//! copy is brought up from the stored log first. A cached copy changed by a write that is not
//! committed yet is not answered from: the answer is then built from the store.
//!
//! **Awareness** is coalesced per socket: at most one relay per [`AWARENESS_EVERY`], the latest
//! state of each document winning.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use roam_proto::collab::{self as wire, AwarenessUpdate, CollabSync};
use roam_proto::{ErrorCode, ServerFrame};
use serde_json::{json, Value};

use super::Socket;
use crate::bus::BusMessage;
use crate::collab::{self, Entry};
use crate::error::ApiError;
use crate::follow::FollowRefused;
use crate::service::Service;
use crate::AppState;

/// A socket's awareness is relayed at most this often (latest wins).
pub(super) const AWARENESS_EVERY: Duration = Duration::from_millis(50);
/// Attempts at catching an answer up with a line that moves on meanwhile.
const SYNC_ATTEMPTS: usize = 8;
/// Stored updates read per page when a cached document catches up.
const CATCH_UP_PAGE: u32 = 1_000;

/// A socket's awareness waiting for its turn.
#[derive(Debug, Default)]
pub(super) struct AwarenessGate {
    last: Option<Instant>,
    pending: HashMap<(String, String), Option<Value>>,
    scheduled: bool,
}

/// The document as stored, loaded off the async workers (empty when it does not exist).
async fn load(svc: &Service, room: &str, doc: &str) -> Result<Entry, ApiError> {
    let stored = svc.store.collab_doc(room, doc).await?;
    let Some(stored) = stored else {
        return Ok(Entry::new(yrs::Doc::new(), 0, 2));
    };
    tokio::task::spawn_blocking(move || {
        collab::load(stored.snapshot.as_deref(), &stored.log, stored.seq)
    })
    .await
    .map_err(|e| ApiError::internal(format!("loading a document failed: {e}")))?
    .map_err(|r| ApiError::internal(format!("stored document {room}/{doc}: {r}")))
}

/// Brings a cached document up to the stored log; false when the log no longer reaches back
/// to it (compacted) or did not apply.
async fn catch_up(
    svc: &Service,
    room: &str,
    doc: &str,
    entry: &Mutex<Entry>,
) -> Result<bool, ApiError> {
    loop {
        let have = entry.lock().seq;
        let page = svc
            .store
            .collab_updates(room, doc, have, CATCH_UP_PAGE)
            .await?;
        if page.is_empty() {
            return Ok(true);
        }
        let log: Vec<collab::Logged> = page.into_iter().map(|e| (e.seq, e.update)).collect();
        let mut e = entry.lock();
        if e.unconfirmed {
            return Ok(false);
        }
        if collab::catch_up(&mut e, &log).is_err() {
            return Ok(false);
        }
        if log.len() < CATCH_UP_PAGE as usize {
            return Ok(true);
        }
    }
}

impl Socket {
    pub(super) async fn collab_sync(&mut self, id: String, room: String, doc: String, sv: String) {
        match self.sync_answer(&room, &doc, &sv).await {
            Ok(answer) => {
                let result = serde_json::to_value(answer).unwrap_or(Value::Null);
                self.send(&ServerFrame::Ack { id, result });
            }
            Err(e) => self.error(Some(id), e),
        }
    }

    async fn sync_answer(&self, room: &str, doc: &str, sv: &str) -> Result<CollabSync, ApiError> {
        wire::sync(room, doc, sv)?;
        let svc = Arc::clone(&self.state.service);
        let (_, member) = svc.readable_room(&self.conn.user, room).await?;
        let member = member.is_some_and(|m| m.status == roam_proto::MemberStatus::Active);
        let sv_bytes = wire::decode_base64("state_vector", sv, wire::MAX_STATE_VECTOR_BYTES)?;
        let sv = collab::decode_state_vector(&sv_bytes)?;
        let followers = Arc::clone(self.state.hub.collab());
        let session = self
            .conn
            .session
            .get()
            .cloned()
            .unwrap_or_else(|| Arc::from(""));
        for _ in 0..SYNC_ATTEMPTS {
            let entry = match svc.docs.get(room, doc) {
                Some(e) => e,
                None => {
                    let loaded = load(&svc, room, doc).await?;
                    svc.docs.put(room, doc, loaded)
                }
            };
            let behind = {
                let e = entry.lock();
                e.unconfirmed || followers.released(room, doc).is_some_and(|r| r > e.seq)
            };
            // A copy a write is changing, or one behind this node's line: answer from the
            // store (bringing the cached copy up when it can be).
            let entry = if behind {
                if entry.lock().unconfirmed || !catch_up(&svc, room, doc, &entry).await? {
                    Arc::new(Mutex::new(load(&svc, room, doc).await?))
                } else {
                    entry
                }
            } else {
                entry
            };
            let e = entry.lock();
            match followers.follow(room, doc, &self.conn, &session, member, e.seq) {
                Ok(()) => {
                    let (update, state_vector) = collab::diff(&e, &sv)?;
                    return Ok(CollabSync {
                        room: room.to_owned(),
                        doc: doc.to_owned(),
                        seq: e.seq,
                        update: wire::encode_base64(&update),
                        state_vector: wire::encode_base64(&state_vector),
                    });
                }
                Err(FollowRefused::Behind(_)) => continue,
                Err(refused @ FollowRefused::TooMany) => {
                    return Err(ApiError::new(ErrorCode::Conflict, refused.to_string()))
                }
            }
        }
        Err(ApiError::new(
            ErrorCode::Unavailable,
            "the document changed too fast to answer; retry",
        ))
    }

    pub(super) async fn collab_leave(&mut self, id: String, room: String, doc: String) {
        if let Err(e) = roam_proto::validate::room_name(&room)
            .and_then(|()| roam_proto::validate::document_name(&doc))
        {
            return self.error(Some(id), e.into());
        }
        if let Some(gone) = self.state.hub.collab().leave(&room, &doc, &self.conn) {
            publish_awareness(&self.state, gone, Some(self.conn.id)).await;
        }
        self.send(&ServerFrame::Ack {
            id,
            result: json!({}),
        });
    }

    pub(super) async fn awareness(&mut self, room: String, doc: String, state: Option<Value>) {
        let state = state.filter(|s| !s.is_null());
        if let Err(e) = wire::awareness(&room, &doc, state.as_ref()) {
            return self.error(None, e.into());
        }
        let followers = self.state.hub.collab();
        let Some(session) = followers.aware(&room, &doc, self.conn.id) else {
            let why = if followers.follows(&room, &doc, self.conn.id) {
                ApiError::forbidden("only members of the room share awareness")
            } else {
                ApiError::invalid("follow the document (collab_sync) before sending awareness")
            };
            return self.error(None, why);
        };
        let gate = Arc::clone(self.awareness.get_or_insert_with(Default::default));
        let now = Instant::now();
        let send_now = {
            let mut g = gate.lock();
            let free = g.pending.is_empty() && g.last.is_none_or(|t| now - t >= AWARENESS_EVERY);
            if free {
                g.last = Some(now);
            } else {
                g.pending.insert((room.clone(), doc.clone()), state.clone());
            }
            let schedule = !free && !g.scheduled;
            if schedule {
                g.scheduled = true;
            }
            (free, schedule, g.last)
        };
        let update = |room: String, doc: String, state: Option<Value>| AwarenessUpdate {
            room,
            doc,
            user: self.conn.user.to_string(),
            session: session.to_string(),
            state,
        };
        match send_now {
            (true, _, _) => {
                publish_awareness(&self.state, update(room, doc, state), Some(self.conn.id)).await
            }
            (false, true, last) => {
                let state = self.state.clone();
                let conn = Arc::clone(&self.conn);
                let user = self.conn.user.to_string();
                let session = session.to_string();
                tokio::spawn(async move {
                    let due = last.map_or(Instant::now(), |t| t + AWARENESS_EVERY);
                    tokio::time::sleep_until(due.into()).await;
                    let pending = {
                        let mut g = gate.lock();
                        g.scheduled = false;
                        g.last = Some(Instant::now());
                        std::mem::take(&mut g.pending)
                    };
                    for ((room, doc), s) in pending {
                        // Only while it still follows: a leave announced its removal already.
                        if conn.is_closing() || !state.hub.collab().follows(&room, &doc, conn.id) {
                            continue;
                        }
                        let a = AwarenessUpdate {
                            room,
                            doc,
                            user: user.clone(),
                            session: session.clone(),
                            state: s,
                        };
                        publish_awareness(&state, a, Some(conn.id)).await;
                    }
                });
            }
            (false, false, _) => {}
        }
    }
}

/// Relays an awareness change to every node's followers of its document.
pub(super) async fn publish_awareness(
    state: &AppState,
    update: AwarenessUpdate,
    origin: Option<crate::conn::ConnId>,
) {
    state
        .service
        .bus
        .publish(BusMessage::Awareness {
            update: Arc::new(update),
            origin,
        })
        .await;
}
