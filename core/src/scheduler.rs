//! The outbox's scheduler: which queued mutations go on the wire next, and what happens when
//! they are answered or time out. It holds the entries in memory only (the durable rows and
//! their lifecycle are [`crate::outbox`]'s) and knows nothing of the store or the connection,
//! so the shared client state can hold it without depending on the outbox's code. The rules
//! (queues, barriers, the window, backoff) are described in [`crate::outbox`].

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use roam_proto::Mutation;
use tokio::time::Instant;

use crate::backoff::{Backoff, Jitter};
use crate::config::OutboxConfig;

/// An entry as the scheduler holds it.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub id: String,
    pub pos: i64,
    /// The queue: the mutation's room, or `""` for the account.
    pub queue: String,
    pub mutation: Mutation,
    pub target: Option<String>,
    /// When it was written, milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Held back until the upload of its attachment is done (see `crate::upload`): neither it
    /// nor anything after it in its queue goes on the wire.
    pub waits: bool,
    /// The frame id while on the wire.
    flight: Option<String>,
}

impl Queued {
    pub(crate) fn new(
        id: String,
        pos: i64,
        queue: String,
        mutation: Mutation,
        target: Option<String>,
        created_at: i64,
    ) -> Self {
        Queued {
            id,
            pos,
            queue,
            mutation,
            target,
            created_at,
            waits: false,
            flight: None,
        }
    }

    fn is_barrier(&self) -> bool {
        is_barrier(&self.mutation)
    }
}

/// The queue name of a mutation: its room, or `""` for the account.
pub(crate) fn queue_of(m: &Mutation) -> String {
    m.room().unwrap_or_default().to_owned()
}

/// Mutations that change what later mutations of the same room are allowed to do (the room
/// exists, the account is a member, its role). They travel alone: sent once nothing else of the
/// queue is on the wire, and nothing of the queue follows until they are answered, because the
/// server checks a mutation's permission against what is committed when it reads the frame.
fn is_barrier(m: &Mutation) -> bool {
    matches!(
        m,
        Mutation::CreateRoom { .. }
            | Mutation::UpdateRoom { .. }
            | Mutation::DeleteRoom { .. }
            | Mutation::JoinRoom { .. }
            | Mutation::LeaveRoom { .. }
            | Mutation::TransferOwnership { .. }
            | Mutation::AcceptInvitation { .. }
            | Mutation::SetRole { .. }
            | Mutation::Ban { .. }
            | Mutation::Unban { .. }
    )
}

/// Whether two mutations are updates of the same collaborative document.
fn same_collab_doc(a: &Mutation, b: &Mutation) -> bool {
    match (a, b) {
        (
            Mutation::UpdateCollab {
                room: r1, doc: d1, ..
            },
            Mutation::UpdateCollab {
                room: r2, doc: d2, ..
            },
        ) => r1 == r2 && d1 == d2,
        _ => false,
    }
}

/// Where an entry on the wire is, and when its answer is overdue.
#[derive(Debug, Clone)]
struct Flight {
    queue: String,
    pos: i64,
    deadline: Instant,
}

#[derive(Debug)]
struct RoomQueue {
    entries: BTreeMap<i64, Queued>,
    /// Entries of this queue on the wire.
    flying: usize,
    /// A barrier entry is on the wire.
    barrier: bool,
    retry_at: Option<Instant>,
    draining: bool,
    backoff: Backoff,
}

/// A frame to put on the wire.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub frame_id: String,
    pub key: String,
    /// The key of the queue's previous entry, still awaiting its answer: the server applies
    /// this one only after it (`after` on the wire), so nothing overtakes a refused or lost
    /// frame.
    pub after: Option<String>,
    pub mutation: Mutation,
    pub retry: bool,
}

/// The in-memory mirror of the pending outbox rows, and the send window.
#[derive(Debug)]
pub(crate) struct Scheduler {
    config: OutboxConfig,
    queues: BTreeMap<String, RoomQueue>,
    /// Entries on the wire, by frame id.
    in_flight: HashMap<String, Flight>,
    /// Entries sent at least once in this process (a resend counts as a retry).
    sent_before: std::collections::HashSet<String>,
    /// Entries loaded at open: an earlier process may have sent them, so the server may hold
    /// their key with this mutation, and they are never rewritten.
    loaded: std::collections::HashSet<String>,
    next_frame: u64,
    /// Round-robin start.
    rotate: usize,
    /// Entries answered (taken off by `on_ack`) whose answer is not stored yet: still pending
    /// for the sync status until the transaction that removes their row commits.
    answered: usize,
}

impl Scheduler {
    pub(crate) fn new(config: OutboxConfig) -> Self {
        Scheduler {
            config,
            queues: BTreeMap::new(),
            in_flight: HashMap::new(),
            sent_before: Default::default(),
            loaded: Default::default(),
            next_frame: 0,
            rotate: 0,
            answered: 0,
        }
    }

    /// Adds a pending entry loaded from the store at open (an earlier process may have sent it).
    pub(crate) fn push_loaded(&mut self, entry: Queued) {
        self.loaded.insert(entry.id.clone());
        self.push(entry);
    }

    /// Adds a pending entry (in `pos` order within its queue).
    pub(crate) fn push(&mut self, entry: Queued) {
        let config = self.config;
        let q = self
            .queues
            .entry(entry.queue.clone())
            .or_insert_with(|| RoomQueue {
                entries: BTreeMap::new(),
                flying: 0,
                barrier: false,
                retry_at: None,
                draining: false,
                backoff: Backoff::new(config.initial_backoff, config.max_backoff, Jitter::Full),
            });
        q.entries.insert(entry.pos, entry);
    }

    /// Pending entries held (including those on the wire).
    pub(crate) fn len(&self) -> usize {
        self.queues.values().map(|q| q.entries.len()).sum()
    }

    /// The pending entries' count and when the oldest was written (each queue's first entry is
    /// its oldest, so this looks at one entry per queue).
    pub(crate) fn figures(&self) -> (u64, Option<i64>) {
        let oldest = self
            .queues
            .values()
            .filter_map(|q| q.entries.first_key_value().map(|(_, e)| e.created_at))
            .min();
        ((self.len() + self.answered) as u64, oldest)
    }

    /// `n` answers taken by `on_ack` were stored (or dropped with their session).
    pub(crate) fn answers_stored(&mut self, n: usize) {
        self.answered = self.answered.saturating_sub(n);
    }

    /// The ids of the pending entries.
    pub(crate) fn ids(&self) -> std::collections::HashSet<String> {
        self.queues
            .values()
            .flat_map(|q| q.entries.values().map(|e| e.id.clone()))
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }

    /// True when the entry is held and has certainly never reached the server: not on the
    /// wire, not sent earlier in this process, not loaded from an earlier one.
    pub(crate) fn unsent(&self, id: &str) -> bool {
        !self.sent_before.contains(id)
            && !self.loaded.contains(id)
            && self
                .queues
                .values()
                .any(|q| q.entries.values().any(|e| e.id == id && e.flight.is_none()))
    }

    /// Replaces the mutation of an [`unsent`](Self::unsent) entry: false (and nothing changed)
    /// for any other.
    pub(crate) fn rewrite(&mut self, id: &str, mutation: &Mutation) -> bool {
        if !self.unsent(id) {
            return false;
        }
        for q in self.queues.values_mut() {
            if let Some(e) = q.entries.values_mut().find(|e| e.id == id) {
                e.mutation = mutation.clone();
                return true;
            }
        }
        false
    }

    /// The upload of an entry's attachment is done: it may go on the wire.
    pub(crate) fn release(&mut self, id: &str) {
        for q in self.queues.values_mut() {
            if let Some(e) = q.entries.values_mut().find(|e| e.id == id) {
                e.waits = false;
                return;
            }
        }
    }

    /// Removes an entry that is not on the wire. `Err` if it is.
    pub(crate) fn remove(&mut self, id: &str) -> Result<Option<Queued>, ()> {
        for q in self.queues.values_mut() {
            if let Some((&pos, e)) = q.entries.iter().find(|(_, e)| e.id == id) {
                if e.flight.is_some() {
                    return Err(());
                }
                self.sent_before.remove(id);
                return Ok(q.entries.remove(&pos));
            }
        }
        Ok(None)
    }

    /// Takes as many entries as the window allows, round-robin over the queues, each queue in
    /// order.
    pub(crate) fn fill(&mut self, now: Instant) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let names: Vec<String> = self.queues.keys().cloned().collect();
        if names.is_empty() {
            return out;
        }
        let start = self.rotate % names.len();
        self.rotate = self.rotate.wrapping_add(1);
        let mut blocked = vec![false; names.len()];
        loop {
            let mut progress = false;
            for i in 0..names.len() {
                if self.in_flight.len() >= self.config.window {
                    return out;
                }
                let idx = (start + i) % names.len();
                if blocked[idx] {
                    continue;
                }
                let Some(q) = self.queues.get_mut(&names[idx]) else {
                    blocked[idx] = true;
                    continue;
                };
                if q.draining {
                    if q.flying == 0 && q.retry_at.is_none_or(|t| t <= now) {
                        q.draining = false;
                        q.retry_at = None;
                    } else {
                        blocked[idx] = true;
                        continue;
                    }
                }
                if q.retry_at.is_some_and(|t| t > now)
                    || q.flying >= self.config.per_room_window
                    || q.barrier
                {
                    blocked[idx] = true;
                    continue;
                }
                let Some(pos) = q
                    .entries
                    .iter()
                    .find(|(_, e)| e.flight.is_none())
                    .map(|(p, _)| *p)
                else {
                    blocked[idx] = true;
                    continue;
                };
                let Some(entry) = q.entries.get(&pos) else {
                    blocked[idx] = true;
                    continue;
                };
                // Its file is still uploading: the queue waits, in order.
                if entry.waits {
                    blocked[idx] = true;
                    continue;
                }
                // One update of a collaborative document on the wire at a time: the edits made
                // meanwhile coalesce into this entry (see `crate::collab`) instead of each
                // taking a frame.
                if q.entries
                    .range(..pos)
                    .any(|(_, e)| same_collab_doc(&e.mutation, &entry.mutation))
                {
                    blocked[idx] = true;
                    continue;
                }
                let is_barrier = entry.is_barrier();
                if is_barrier {
                    if q.flying > 0 {
                        blocked[idx] = true;
                        continue;
                    }
                    q.barrier = true;
                }
                // Every earlier entry of the queue is on the wire (the queue is sent in order
                // and a failure drains it before anything is sent again): the nearest one is
                // this one's predecessor.
                let after = q
                    .entries
                    .range(..pos)
                    .next_back()
                    .map(|(_, e)| e.id.clone());
                let Some(entry) = q.entries.get_mut(&pos) else {
                    blocked[idx] = true;
                    continue;
                };
                self.next_frame += 1;
                let frame_id = format!("o{}", self.next_frame);
                entry.flight = Some(frame_id.clone());
                q.flying += 1;
                let retry = !self.sent_before.insert(entry.id.clone());
                self.in_flight.insert(
                    frame_id.clone(),
                    Flight {
                        queue: names[idx].clone(),
                        pos,
                        deadline: now + self.config.ack_timeout,
                    },
                );
                out.push(Outgoing {
                    frame_id,
                    key: entry.id.clone(),
                    after,
                    mutation: entry.mutation.clone(),
                    retry,
                });
                progress = true;
            }
            if !progress {
                break;
            }
        }
        out
    }

    /// Takes a frame off the wire: returns its queue and position.
    fn take_flight(&mut self, frame_id: &str) -> Option<(String, i64)> {
        let f = self.in_flight.remove(frame_id)?;
        if let Some(q) = self.queues.get_mut(&f.queue) {
            q.flying = q.flying.saturating_sub(1);
            if let Some(e) = q.entries.get_mut(&f.pos) {
                e.flight = None;
                if e.is_barrier() {
                    q.barrier = false;
                }
            }
        }
        Some((f.queue, f.pos))
    }

    /// The entry of a frame that was acknowledged: it leaves the scheduler.
    pub(crate) fn on_ack(&mut self, frame_id: &str) -> Option<Queued> {
        let (queue, pos) = self.take_flight(frame_id)?;
        let q = self.queues.get_mut(&queue)?;
        let e = q.entries.remove(&pos);
        if !q.draining {
            q.backoff.reset();
        }
        if q.entries.is_empty() {
            self.queues.remove(&queue);
        }
        if let Some(e) = &e {
            self.sent_before.remove(&e.id);
            self.answered += 1;
        }
        e
    }

    /// The entry of a frame that failed for good: it leaves the scheduler.
    pub(crate) fn on_permanent(&mut self, frame_id: &str) -> Option<Queued> {
        let (queue, pos) = self.take_flight(frame_id)?;
        let q = self.queues.get_mut(&queue)?;
        let e = q.entries.remove(&pos);
        if q.entries.is_empty() {
            self.queues.remove(&queue);
        }
        if let Some(e) = &e {
            self.sent_before.remove(&e.id);
        }
        e
    }

    /// A frame failed transiently: its entry waits, its queue drains and backs off.
    /// Returns the entry's id and position.
    pub(crate) fn on_transient(
        &mut self,
        frame_id: &str,
        retry_after: Option<Duration>,
        now: Instant,
    ) -> Option<(String, i64)> {
        let (queue, pos) = self.take_flight(frame_id)?;
        let q = self.queues.get_mut(&queue)?;
        let id = (q.entries.get(&pos)?.id.clone(), pos);
        let delay = q.backoff.next_delay().max(retry_after.unwrap_or_default());
        let at = now + delay;
        q.retry_at = Some(q.retry_at.map_or(at, |t| t.max(at)));
        q.draining = true;
        Some(id)
    }

    /// A frame was refused because its predecessor was not applied (`out_of_order`): its
    /// entry waits and its queue drains, to be sent again in order once the predecessor's own
    /// answer (a transient failure, with its backoff) has come. No backoff of its own: it is
    /// the predecessor's failure, counted there. Returns the entry's id and position.
    pub(crate) fn on_out_of_order(&mut self, frame_id: &str) -> Option<(String, i64)> {
        let (queue, pos) = self.take_flight(frame_id)?;
        let q = self.queues.get_mut(&queue)?;
        let id = (q.entries.get(&pos)?.id.clone(), pos);
        q.draining = true;
        Some(id)
    }

    /// Frames whose answer is overdue: each counts as a transient failure. Returns the entries'
    /// ids and positions.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(String, i64)> {
        let overdue: Vec<String> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        overdue
            .iter()
            .filter_map(|f| self.on_transient(f, None, now))
            .collect()
    }

    /// The connection is gone: whatever was on the wire waits to be sent again.
    pub(crate) fn on_disconnect(&mut self) -> usize {
        // Answers that could not be stored are lost with the session; their rows stay pending
        // and are sent again after the next open.
        self.answered = 0;
        let frames: Vec<String> = self.in_flight.keys().cloned().collect();
        for f in &frames {
            self.take_flight(f);
        }
        frames.len()
    }

    /// The earliest moment something becomes due (a backoff ends, an answer is overdue).
    ///
    /// A drained queue whose backoff is already over is due *now* (when the window has room):
    /// nothing else may come to flush it — its frames are all answered or expired, and once
    /// the other queues are done no answer or event arrives to trigger a fill. Other backoffs
    /// already over are not deadlines: `fill` does not wait for them.
    pub(crate) fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let room = self.in_flight.len() < self.config.window;
        let backoffs = self.queues.values().filter_map(|q| {
            let at = q.retry_at?;
            if at > now {
                Some(at)
            } else if room && q.draining && q.flying == 0 {
                Some(now)
            } else {
                None
            }
        });
        let answers = self.in_flight.values().map(|f| f.deadline);
        backoffs.chain(answers).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(room: &str, n: i64) -> Queued {
        Queued::new(
            format!("{room}-{n}"),
            n,
            room.to_owned(),
            Mutation::SendMessage {
                room: room.into(),
                body: format!("m{n}"),
                reply_to: None,
                id: None,
                attachment: None,
            },
            None,
            0,
        )
    }

    fn config(window: usize) -> OutboxConfig {
        OutboxConfig {
            window,
            per_room_window: window,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ack_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn window_is_shared_round_robin_and_ordered_per_queue() {
        let mut s = Scheduler::new(config(4));
        for i in 1..=5 {
            s.push(send("a", i));
        }
        for i in 6..=7 {
            s.push(send("b", i));
        }
        let now = Instant::now();
        let out = s.fill(now);
        assert_eq!(out.len(), 4);
        let a: Vec<_> = out
            .iter()
            .filter(|o| o.key.starts_with("a-"))
            .map(|o| o.key.clone())
            .collect();
        let b: Vec<_> = out
            .iter()
            .filter(|o| o.key.starts_with("b-"))
            .map(|o| o.key.clone())
            .collect();
        assert_eq!(a, vec!["a-1", "a-2"]);
        assert_eq!(b, vec!["b-6", "b-7"]);
        // Window full: nothing more until an answer.
        assert!(s.fill(now).is_empty());
        let e = s.on_ack(&out[0].frame_id).expect("entry");
        assert!(e.id == "a-1" || e.id == "b-6");
        let more = s.fill(now);
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].key, "a-3");
    }

    #[test]
    fn transient_failure_drains_the_queue_then_resends_in_order() {
        let mut s = Scheduler::new(config(10));
        for i in 1..=3 {
            s.push(send("a", i));
        }
        s.push(send("b", 4));
        let now = Instant::now();
        let out = s.fill(now);
        assert_eq!(out.len(), 4);
        let frame = |key: &str| {
            out.iter()
                .find(|o| o.key == key)
                .map(|o| o.frame_id.clone())
                .expect("frame")
        };
        // a-1 is rate limited for 2 s; a-2 and a-3 are still on the wire.
        s.on_transient(&frame("a-1"), Some(Duration::from_secs(2)), now)
            .expect("entry");
        s.on_transient(&frame("a-2"), None, now).expect("entry");
        assert!(s.fill(now).is_empty(), "queue a drains");
        s.on_ack(&frame("b-4"));
        s.on_transient(&frame("a-3"), None, now).expect("entry");
        assert!(
            s.fill(now + Duration::from_secs(1)).is_empty(),
            "retry_after honoured"
        );
        let later = now + Duration::from_secs(3);
        let again = s.fill(later);
        let keys: Vec<_> = again.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, vec!["a-1", "a-2", "a-3"]);
        assert!(again.iter().all(|o| o.retry));
    }

    #[test]
    fn permanent_failure_does_not_block_the_queue() {
        let mut s = Scheduler::new(config(1));
        s.push(send("a", 1));
        s.push(send("a", 2));
        let now = Instant::now();
        let out = s.fill(now);
        assert_eq!(out[0].key, "a-1");
        let e = s.on_permanent(&out[0].frame_id).expect("entry");
        assert_eq!(e.id, "a-1");
        let out = s.fill(now);
        assert_eq!(out[0].key, "a-2");
    }

    #[test]
    fn timeouts_and_disconnects_put_entries_back() {
        let mut s = Scheduler::new(config(8));
        s.push(send("a", 1));
        s.push(send("a", 2));
        let now = Instant::now();
        let out = s.fill(now);
        assert_eq!(out.len(), 2);
        assert_eq!(s.next_deadline(now), Some(now + Duration::from_secs(5)));
        assert!(s.remove("a-1").is_err(), "in flight");
        let expired = s.expire(now + Duration::from_secs(6));
        assert_eq!(expired.len(), 2);
        assert_eq!(s.in_flight_count(), 0);
        let later = now + Duration::from_secs(10);
        let out = s.fill(later);
        assert_eq!(out.len(), 2);
        assert_eq!(s.on_disconnect(), 2);
        assert!(s.remove("a-2").expect("not in flight").is_some());
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_drained_queue_whose_backoff_is_over_is_due_at_once() {
        // Every frame of the queue expired; its backoff then ends while the session is busy
        // elsewhere. Nothing else will come to flush it, so the deadline must say "now".
        let mut s = Scheduler::new(config(8));
        s.push(send("a", 1));
        s.push(send("a", 2));
        let now = Instant::now();
        assert_eq!(s.fill(now).len(), 2);
        let expired_at = now + Duration::from_secs(6);
        assert_eq!(s.expire(expired_at).len(), 2);
        let backoff = s
            .next_deadline(expired_at)
            .expect("the backoff is a deadline while it runs");
        assert!(backoff >= expired_at);
        let over = expired_at + Duration::from_secs(1);
        assert_eq!(s.next_deadline(over), Some(over), "due now, not forgotten");
        assert_eq!(s.fill(over).len(), 2, "the queue resumes");
        // On the wire again: only the answers' deadlines remain, none of them in the past.
        assert_eq!(s.next_deadline(over), Some(over + Duration::from_secs(5)));
    }

    #[test]
    fn a_due_queue_waits_without_spinning_while_the_window_is_full() {
        let mut s = Scheduler::new(config(1));
        s.push(send("a", 1));
        s.push(send("b", 1));
        let now = Instant::now();
        let first = s.fill(now);
        assert_eq!(first.len(), 1);
        let later = now + Duration::from_secs(6);
        s.expire(later);
        // One queue's frame fills the window of one again; the other queue waits for room.
        let over = later + Duration::from_secs(1);
        assert_eq!(s.fill(over).len(), 1);
        let d = s.next_deadline(over).expect("the frame's answer is due");
        assert!(d > over, "a full window is not a reason to wake at once");
    }
}

#[cfg(test)]
mod upload_tests {
    use super::*;

    fn send(n: i64) -> Queued {
        Queued::new(
            format!("e{n}"),
            n,
            "r".into(),
            Mutation::SendMessage {
                room: "r".into(),
                body: format!("m{n}"),
                reply_to: None,
                id: None,
                attachment: None,
            },
            None,
            n,
        )
    }

    #[test]
    fn a_send_waiting_for_its_upload_holds_its_queue_only() {
        let mut s = Scheduler::new(OutboxConfig::default());
        s.push(send(1));
        let mut with_file = send(2);
        with_file.waits = true;
        s.push(with_file);
        s.push(send(3));
        let mut other = send(4);
        other.queue = "elsewhere".into();
        s.push(other);
        let now = Instant::now();
        let keys = |out: Vec<Outgoing>| out.into_iter().map(|o| o.key).collect::<Vec<_>>();
        let mut first = keys(s.fill(now));
        first.sort();
        assert_eq!(first, ["e1", "e4"]);
        assert!(s.fill(now).is_empty(), "e3 waits behind the upload of e2");
        assert!(s.unsent("e2"), "a waiting send can be cancelled");
        s.release("e2");
        assert_eq!(keys(s.fill(now)), ["e2", "e3"]);
    }
}

#[cfg(test)]
mod barrier_tests {
    use super::*;

    fn entry(n: i64, mutation: Mutation) -> Queued {
        Queued::new(format!("e{n}"), n, "r".into(), mutation, None, n)
    }

    fn send(n: i64) -> Queued {
        entry(
            n,
            Mutation::SendMessage {
                room: "r".into(),
                body: format!("m{n}"),
                reply_to: None,
                id: None,
                attachment: None,
            },
        )
    }

    #[test]
    fn barriers_travel_alone() {
        let mut s = Scheduler::new(OutboxConfig::default());
        s.push(send(1));
        s.push(entry(2, Mutation::LeaveRoom { room: "r".into() }));
        s.push(send(3));
        let now = Instant::now();
        let out = s.fill(now);
        assert_eq!(
            out.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
            ["e1"]
        );
        s.on_ack(&out[0].frame_id);
        let out = s.fill(now);
        assert_eq!(
            out.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
            ["e2"]
        );
        assert!(
            s.fill(now).is_empty(),
            "nothing follows a barrier on the wire"
        );
        s.on_ack(&out[0].frame_id);
        let out = s.fill(now);
        assert_eq!(
            out.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
            ["e3"]
        );
    }
}
