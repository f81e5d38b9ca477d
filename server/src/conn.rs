//! One connected socket as the rest of the server sees it: who it is, how to close it, and its
//! send queue.
//!
//! The queue sits between everything that produces frames for the socket (its own reader, the
//! hub) and the socket's writer task. Producers never wait on it:
//!
//! - A room event offered to a full queue is not queued. The socket becomes *lagging*: further
//!   events are skipped until the writer has emptied the queue, and the writer then reads what it
//!   skipped from the store, once, before it takes anything newer. A burst therefore never cuts a
//!   socket that is still reading, and never holds more than `capacity` items for it.
//! - Any other frame (an ack, an error, typing, presence, a notification) is queued even when the
//!   queue is full, up to twice its capacity; past that the socket is closed with 4008 (slow
//!   consumer). A client that stops reading altogether is cut by the writer: every write to the
//!   socket has a timeout (the slow-consumer grace), whatever the queue holds.
//!
//! Only the item that finds the queue empty wakes the writer: the writer takes the whole queue
//! at once, so one wake-up covers everything queued until it takes, and a burst of events costs
//! a socket one wake-up instead of one per event.
//!
//! An idle socket's queue holds no allocation: the deque grows on demand and the writer swaps it
//! out whole, giving back large buffers after a burst.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::event::LiveEvent;
use crate::metrics::Metrics;
use crate::wsframe::WireFrame;

/// A socket's id, unique in this process.
pub type ConnId = u64;

/// What a socket's writer receives.
#[derive(Debug)]
pub enum Outbound {
    /// A ready frame.
    Frame(WireFrame),
    /// A room event, shared with every socket that follows the room.
    Event(Arc<LiveEvent>),
    /// Start delivering `room` after `since` (catch up from the store first).
    StartRoom { room: Arc<str>, since: u64 },
    /// Stop delivering `room`.
    StopRoom(Arc<str>),
}

/// One connected socket.
#[derive(Debug)]
pub struct Conn {
    pub id: ConnId,
    pub user: Arc<str>,
    /// Cancelled to close the socket ([`Conn::close_with`], [`Conn::shut`]).
    close: CancellationToken,
    /// Set with `close`, read where every delivery checks it: a token's `is_cancelled` takes
    /// its node's lock.
    closing: AtomicBool,
    close_code: AtomicU16,
    /// The close code is the client's own, echoed (sent without a reason).
    echoed: AtomicBool,
    /// Closed because the client fell silent (the idle timeout): what was sent to it since it
    /// was last heard from may never have arrived.
    silent: AtomicBool,
    queue: Mutex<VecDeque<Outbound>>,
    wake: Notify,
    capacity: usize,
    /// Events were skipped because the queue was full; the writer recovers them.
    lagging: AtomicBool,
    /// When the reader last received a frame (ms since the epoch).
    read_ms: AtomicU64,
    /// When the socket's token expires (ms since the epoch; 0: never).
    expires_ms: u64,
    /// The session named in the socket's `hello` (set once, when it is sent).
    pub session: std::sync::OnceLock<Arc<str>>,
}

/// What [`Conn::take`] hands the writer.
#[derive(Debug, Default)]
pub struct Taken {
    /// Events were skipped since the last take: catch every room up from the store after the
    /// taken items.
    pub lagged: bool,
}

impl Conn {
    pub fn new(id: ConnId, user: Arc<str>, capacity: usize, expires_ms: u64) -> Arc<Conn> {
        let now = now_ms().max(0) as u64;
        Arc::new(Conn {
            id,
            user,
            close: CancellationToken::new(),
            closing: AtomicBool::new(false),
            close_code: AtomicU16::new(0),
            echoed: AtomicBool::new(false),
            silent: AtomicBool::new(false),
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            capacity: capacity.max(1),
            lagging: AtomicBool::new(false),
            read_ms: AtomicU64::new(now),
            expires_ms,
            session: std::sync::OnceLock::new(),
        })
    }

    /// Closes the socket with `code`, unless a code was already chosen.
    pub fn close_with(&self, code: u16) {
        let _ = self
            .close_code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.shut();
    }

    /// Closes the socket answering the client's close frame with its `code`, unless a code was
    /// already chosen.
    pub fn close_echo(&self, code: u16) {
        if self
            .close_code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.echoed.store(true, Ordering::Release);
        }
        self.shut();
    }

    /// Closes the socket of a client that fell silent (sent nothing, not even a ping, for the
    /// idle timeout) with `code`: its network is probably gone without a word.
    pub fn close_silent(&self, code: u16) {
        self.silent.store(true, Ordering::Release);
        self.close_with(code);
    }

    /// True when the socket was closed without the client having (probably) received what was
    /// sent to it since it was last heard from: it fell silent, or it stopped reading (slow
    /// consumer).
    pub fn lost_contact(&self) -> bool {
        self.silent.load(Ordering::Acquire) || self.close_code() == roam_proto::close::SLOW_CONSUMER
    }

    /// True when the close code is the client's, echoed.
    pub fn echoed(&self) -> bool {
        self.echoed.load(Ordering::Acquire)
    }

    /// Closes the socket with whatever code was chosen (none: a normal close).
    pub fn shut(&self) {
        self.closing.store(true, Ordering::Release);
        self.close.cancel();
        // The writer waits on `wake` alone ([`Conn::wait`]); a wake-up given while it is busy
        // is kept for its next wait.
        self.wake.notify_one();
    }

    /// True once the socket is closing.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Completes once the socket is closing.
    pub async fn closing(&self) {
        self.close.cancelled().await
    }

    /// The close code chosen, or 0.
    pub fn close_code(&self) -> u16 {
        self.close_code.load(Ordering::Acquire)
    }

    fn slow_consumer(&self, metrics: &Metrics) {
        if !self.is_closing() {
            tracing::warn!(conn = self.id, user = %self.user, "slow consumer: closing socket");
            metrics.disconnects_slow_consumer.inc();
            self.close_with(roam_proto::close::SLOW_CONSUMER);
        }
    }

    /// Queues a frame that must not be skipped. False when the socket is closing or had to be
    /// closed because it stopped reading.
    pub fn push(&self, item: Outbound, metrics: &Metrics) -> bool {
        if self.is_closing() {
            return false;
        }
        let was_empty;
        {
            let mut q = self.queue.lock();
            if q.len() >= self.capacity * 2 {
                drop(q);
                self.slow_consumer(metrics);
                return false;
            }
            was_empty = q.is_empty();
            q.push_back(item);
        }
        if was_empty {
            self.wake.notify_one();
        }
        true
    }

    /// Offers a room event; a full queue skips it and marks the socket lagging. True when it
    /// was queued.
    pub fn offer_event(&self, ev: &Arc<LiveEvent>) -> bool {
        if self.lagging.load(Ordering::Acquire) || self.is_closing() {
            return false;
        }
        let was_empty;
        {
            let mut q = self.queue.lock();
            if q.len() >= self.capacity {
                self.lagging.store(true, Ordering::Release);
                drop(q);
                self.wake.notify_one();
                return false;
            }
            was_empty = q.is_empty();
            q.push_back(Outbound::Event(Arc::clone(ev)));
        }
        if was_empty {
            self.wake.notify_one();
        }
        true
    }

    /// Moves everything queued into `into` (which must be empty) and clears the lagging mark.
    pub fn take(&self, into: &mut VecDeque<Outbound>) -> Taken {
        let mut q = self.queue.lock();
        std::mem::swap(&mut *q, into);
        let lagged = self.lagging.swap(false, Ordering::AcqRel);
        Taken { lagged }
    }

    /// Waits until something is queued or the socket is closing. Only the writer waits here:
    /// every producer and [`Conn::shut`] notify `wake`, so the wait needs no cancellation
    /// future of its own (which would double what an idle writer holds while it waits).
    pub async fn wait(&self) {
        if self.is_closing() {
            return;
        }
        self.wake.notified().await;
    }

    /// The reader received a frame.
    pub fn read_now(&self) {
        self.read_ms
            .store(now_ms().max(0) as u64, Ordering::Relaxed);
    }

    /// When the reader last received a frame (ms since the epoch).
    pub fn last_read_ms(&self) -> i64 {
        self.read_ms.load(Ordering::Relaxed).min(i64::MAX as u64) as i64
    }

    /// How long the client has been silent (ms).
    pub fn idle_for(&self, now: i64) -> u64 {
        (now.max(0) as u64).saturating_sub(self.read_ms.load(Ordering::Relaxed))
    }

    /// True once the socket's token has expired.
    pub fn expired(&self, now: i64) -> bool {
        self.expires_ms != 0 && now.max(0) as u64 >= self.expires_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Arc<LiveEvent> {
        Arc::new(LiveEvent {
            room: Arc::from("r"),
            seq,
            frame: WireFrame::text("{}"),
            effect: None,
            redacts: false,
            deflated: Default::default(),
        })
    }

    #[test]
    fn a_full_queue_skips_events_and_marks_the_socket_lagging() {
        let m = Metrics::new();
        let c = Conn::new(1, Arc::from("u"), 2, 0);
        assert!(c.offer_event(&event(1)));
        assert!(c.offer_event(&event(2)));
        assert!(!c.offer_event(&event(3)), "the third does not fit");
        assert!(!c.offer_event(&event(4)), "skipped while lagging");
        assert!(!c.is_closing(), "lagging is not a reason to close");
        let mut got = VecDeque::new();
        assert!(c.take(&mut got).lagged);
        assert_eq!(got.len(), 2);
        got.clear();
        assert!(!c.take(&mut got).lagged, "the mark is cleared by a take");
        assert!(c.push(Outbound::Frame(WireFrame::text("a")), &m));
    }

    #[test]
    fn frames_past_twice_the_capacity_close_the_socket() {
        let m = Metrics::new();
        let c = Conn::new(1, Arc::from("u"), 2, 0);
        for _ in 0..4 {
            assert!(c.push(Outbound::Frame(WireFrame::text("a")), &m));
        }
        assert!(!c.push(Outbound::Frame(WireFrame::text("a")), &m));
        assert!(c.is_closing());
        assert_eq!(c.close_code(), roam_proto::close::SLOW_CONSUMER);
    }
}
