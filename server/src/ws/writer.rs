//! A socket's writer: its per-room cursors, the live events it gathers, the catch-up it reads
//! from the room's recent events or the store, and the vectored writes with their timeout.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use roam_proto::{close, ErrorCode, ServerFrame};
use tokio::io::{AsyncWriteExt, WriteHalf};

use crate::compress;
use crate::conn::{Conn, Outbound};
use crate::event::{encode, Effect, LiveEvent};
use crate::hub::CATCH_UP_PAGE;
use crate::wsframe::{self, WireFrame};
use crate::AppState;

use super::{Io, WRITE_BUFFER, WRITE_FRAMES};

/// The socket is gone (or must go): stop writing.
#[derive(Debug)]
pub(super) struct Gone;

/// Why a socket reads the store.
#[derive(Debug, Clone, Copy)]
pub(super) enum CatchUp {
    /// Its own subscription, from the client's cursor.
    Subscribe,
    /// It skipped events while its queue was full.
    Lagging,
    /// The hub released a gap wider than it fills itself.
    Gap,
}

impl CatchUp {
    fn label(self) -> &'static str {
        match self {
            CatchUp::Subscribe => "subscribe",
            CatchUp::Lagging => "lagging",
            CatchUp::Gap => "gap",
        }
    }
}

/// The socket's writer: the only place that touches the sink.
/// Not an `async fn`, like [`run`]: the writer's future holds the [`Writer`] once, not also
/// the arguments it was built from.
pub(super) fn write_loop(
    state: AppState,
    conn: Arc<Conn>,
    io: WriteHalf<Io>,
    compress: bool,
) -> impl std::future::Future<Output = ()> + Send {
    let grace = Duration::from_millis(state.config.slow_consumer_grace_ms.max(1));
    let compress_min = state.config.ws_compress_min_bytes;
    write_items(Writer {
        state,
        conn,
        io,
        out: VecDeque::new(),
        out_bytes: 0,
        cursors: Cursors::default(),
        compress,
        compress_min,
        batch: None,
        write_timeout: grace,
    })
}

// Deliberately not an `async fn`: its argument would be held twice.
#[allow(clippy::manual_async_fn)]
pub(super) fn write_items(mut w: Writer) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let conn = Arc::clone(&w.conn);
        let mut items: VecDeque<Outbound> = VecDeque::new();
        loop {
            let taken = conn.take(&mut items);
            if items.is_empty() && !taken.lagged {
                if conn.is_closing() {
                    break;
                }
                conn.wait().await;
                continue;
            }
            let done = Box::pin(w.write_all(&mut items, taken.lagged)).await;
            items.clear();
            if items.capacity() > 256 {
                items = VecDeque::new();
            }
            if done.is_err() {
                break;
            }
        }
        // Boxed: the close handshake's timer would otherwise size every idle writer's future.
        Box::pin(send_close(w.io, w.out, &conn)).await;
        conn.shut();
    }
}

/// Sends what is still gathered and the close frame chosen by whoever closed the socket
/// (bounded: a slow consumer's socket may be full), then ends the connection's sending side.
pub(super) async fn send_close(mut io: WriteHalf<Io>, mut out: VecDeque<Bytes>, conn: &Conn) {
    let code = match conn.close_code() {
        0 => close::NORMAL,
        c => c,
    };
    let reason = match code {
        // The client's own code, echoed.
        _ if conn.echoed() => "",
        close::GOING_AWAY => "server shutting down",
        close::TOKEN_EXPIRED => "token expired",
        close::TOO_BIG => "frame too large",
        close::UNSUPPORTED_DATA => "binary frames are not supported",
        close::SLOW_CONSUMER => "slow consumer",
        wsframe::PROTOCOL_ERROR => "protocol error",
        wsframe::INVALID_PAYLOAD => "invalid UTF-8",
        wsframe::POLICY_VIOLATION => "message unfinished too long or over the server's budget",
        _ => "",
    };
    out.push_back(WireFrame::close(code, reason).wire().clone());
    // A slow consumer's socket may be full: the close frame then goes after what is pending, if
    // the client reads within the bound, and is dropped with the socket otherwise.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if wsframe::write_chunks(&mut io, &mut out).await.is_ok() {
            let _ = io.shutdown().await;
        }
    })
    .await;
}

/// Drives a write. It almost always completes at once (the socket's buffer takes it); only
/// one that has to wait for the socket gets a timer, and one that waits longer than `limit`
/// closes the socket as a slow consumer.
pub(super) async fn bounded<F>(
    mut fut: std::pin::Pin<&mut F>,
    limit: Duration,
    conn: &Conn,
    state: &AppState,
) -> Result<(), Gone>
where
    F: std::future::Future<Output = std::io::Result<()>>,
{
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await;
    let done = match first {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => tokio::select! {
            r = tokio::time::timeout(limit, fut) => match r {
                Ok(r) => r,
                Err(_) => {
                    state.service.metrics.disconnects_slow_consumer.inc();
                    conn.close_with(close::SLOW_CONSUMER);
                    return Err(Gone);
                }
            },
            _ = conn.closing() => return Err(Gone),
        },
    };
    done.map_err(|_| Gone)
}

/// The last seq sent per followed room. A socket follows a few rooms, and every delivery looks
/// its room up: a list searched by pointer first — a room's live events share one name, which
/// the list adopts the first time it meets it — and by name only when that misses; no hashing
/// (one that follows hundreds of rooms pays a scan of pointers per delivery, well under a
/// microsecond).
#[derive(Default)]
pub(super) struct Cursors {
    list: Vec<(Arc<str>, u64)>,
}

impl Cursors {
    fn find(&mut self, room: &Arc<str>) -> Option<usize> {
        if let Some(i) = self.list.iter().position(|(r, _)| Arc::ptr_eq(r, room)) {
            return Some(i);
        }
        let i = self.list.iter().position(|(r, _)| **r == **room)?;
        self.list[i].0 = Arc::clone(room);
        Some(i)
    }

    fn get(&mut self, room: &Arc<str>) -> Option<u64> {
        self.find(room).map(|i| self.list[i].1)
    }

    /// Whether the room is followed (no adoption: nothing is delivered from here).
    fn contains(&self, room: &Arc<str>) -> bool {
        self.list
            .iter()
            .any(|(r, _)| Arc::ptr_eq(r, room) || **r == **room)
    }

    /// Moves a followed room's cursor (nothing for a room not followed).
    fn set(&mut self, room: &Arc<str>, seq: u64) {
        if let Some(i) = self.find(room) {
            self.list[i].1 = seq;
        }
    }

    fn insert(&mut self, room: &Arc<str>, seq: u64) {
        match self.find(room) {
            Some(i) => self.list[i].1 = seq,
            None => self.list.push((Arc::clone(room), seq)),
        }
    }

    fn remove(&mut self, room: &Arc<str>) {
        if let Some(i) = self.find(room) {
            self.list.swap_remove(i);
        }
    }

    fn rooms(&self) -> Vec<Arc<str>> {
        self.list.iter().map(|(r, _)| Arc::clone(r)).collect()
    }
}

pub(super) struct Writer {
    state: AppState,
    conn: Arc<Conn>,
    io: WriteHalf<Io>,
    /// Frames gathered for the next write, each a shared buffer (a live event's is the same
    /// buffer for every socket): written together with one vectored write.
    out: VecDeque<Bytes>,
    out_bytes: usize,
    /// Last seq sent per followed room (looked up for every delivery).
    cursors: Cursors,
    compress: bool,
    compress_min: usize,
    /// While catching up a compressing socket: frames gathered for one compressed message.
    batch: Option<Vec<u8>>,
    write_timeout: Duration,
}

impl Writer {
    /// Writes everything taken from the queue, catches up what was skipped while lagging, and
    /// flushes once.
    async fn write_all(
        &mut self,
        items: &mut VecDeque<Outbound>,
        lagged: bool,
    ) -> Result<(), Gone> {
        for item in items.drain(..) {
            if self.conn.is_closing() {
                return Err(Gone);
            }
            self.handle(item).await?;
        }
        if lagged {
            let rooms = self.cursors.rooms();
            for room in rooms {
                self.catch_up(&room, u64::MAX, CatchUp::Lagging).await?;
            }
        }
        self.flush().await
    }

    /// Writes what is gathered, giving up on a client that does not read within the write
    /// timeout.
    async fn flush(&mut self) -> Result<(), Gone> {
        if self.out.is_empty() {
            return Ok(());
        }
        // No clone of the close token per write: cloning and dropping one locks its node twice.
        let done = {
            let fut = std::pin::pin!(wsframe::write_chunks(&mut self.io, &mut self.out));
            bounded(fut, self.write_timeout, &self.conn, &self.state).await
        };
        self.out_bytes = 0;
        if self.out.capacity() > WRITE_FRAMES * 2 {
            self.out = VecDeque::new();
        }
        done
    }

    /// Gathers a frame for the next write (written at once when enough is gathered).
    async fn queue(&mut self, frame: &WireFrame) -> Result<(), Gone> {
        let wire = frame.wire();
        self.out_bytes += wire.len();
        self.out.push_back(wire.clone());
        if self.out_bytes >= WRITE_BUFFER || self.out.len() >= WRITE_FRAMES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends one text frame: into the current compressed batch, compressed alone when large,
    /// or as it is.
    async fn put(&mut self, frame: &WireFrame) -> Result<(), Gone> {
        if let Some(batch) = self.batch.as_mut() {
            if !batch.is_empty() {
                batch.push(b'\n');
            }
            batch.extend_from_slice(frame.payload());
            return Ok(());
        }
        if self.compress && frame.len() >= self.compress_min {
            self.state
                .service
                .metrics
                .compressed_bytes
                .inc_by(frame.len() as u64);
            let packed = compress::deflate(frame.payload());
            return self.queue(&packed).await;
        }
        self.queue(frame).await
    }

    /// Sends a live event's shared frame (compressed once for every socket that asked).
    async fn put_event(&mut self, ev: &LiveEvent) -> Result<(), Gone> {
        if self.batch.is_none() && self.compress && ev.frame.len() >= self.compress_min {
            let packed = ev.deflated.get_or_init(|| {
                // Once per event, however many sockets share it.
                self.state
                    .service
                    .metrics
                    .compressed_bytes
                    .inc_by(ev.frame.len() as u64);
                compress::deflate(ev.frame.payload())
            });
            return self.queue(packed).await;
        }
        self.put(&ev.frame).await
    }

    /// Starts gathering frames into one compressed message (compressing sockets only).
    fn begin_batch(&mut self) {
        if self.compress && self.batch.is_none() {
            self.batch = Some(Vec::new());
        }
    }

    /// Sends the gathered frames as one compressed message.
    async fn end_batch(&mut self) -> Result<(), Gone> {
        let Some(batch) = self.batch.take() else {
            return Ok(());
        };
        if batch.is_empty() {
            return Ok(());
        }
        let packed = compress::deflate(&batch);
        self.state
            .service
            .metrics
            .compressed_bytes
            .inc_by(batch.len() as u64);
        self.queue(&packed).await
    }

    /// Sends one item.
    async fn handle(&mut self, item: Outbound) -> Result<(), Gone> {
        match item {
            Outbound::Frame(f) => self.put(&f).await,
            Outbound::StopRoom(room) => {
                self.cursors.remove(&room);
                Ok(())
            }
            Outbound::StartRoom { room, since } => {
                self.cursors.insert(&room, since);
                let head = self.catch_up(&room, u64::MAX, CatchUp::Subscribe).await?;
                if self.cursors.contains(&room) {
                    self.put(&encode(&ServerFrame::CaughtUp {
                        room: room.to_string(),
                        seq: head,
                    }))
                    .await?;
                }
                Ok(())
            }
            Outbound::Event(ev) => {
                let Some(mut at) = self.cursors.find(&ev.room) else {
                    return Ok(());
                };
                let cur = self.cursors.list[at].1;
                if ev.seq <= cur {
                    return Ok(());
                }
                if ev.seq > cur + 1 {
                    self.catch_up(&ev.room, ev.seq - 1, CatchUp::Gap).await?;
                    // Catching up may have ended the following (a recovered removal).
                    let Some(i) = self.cursors.find(&ev.room) else {
                        return Ok(());
                    };
                    at = i;
                }
                self.put_event(&ev).await?;
                // Sending leaves the list as it was: `at` still names the room.
                self.cursors.list[at].1 = ev.seq;
                if ev.effect.is_some() {
                    self.apply_effect(&ev.room, ev.effect.clone()).await?;
                }
                Ok(())
            }
        }
    }

    /// Sends the events after the room's cursor up to `upto` (the room's recent events in
    /// memory where they cover it, the store otherwise); returns the new cursor.
    async fn catch_up(&mut self, room: &Arc<str>, upto: u64, why: CatchUp) -> Result<u64, Gone> {
        let metrics = Arc::clone(&self.state.service.metrics);
        let recovered = metrics
            .events_recovered
            .get_or_create(&crate::metrics::ReasonLabel {
                reason: why.label(),
            })
            .clone();
        loop {
            let Some(cur) = self.cursors.get(room) else {
                return Ok(0);
            };
            if cur >= upto {
                return Ok(cur);
            }
            // The room's recent events in memory first: shared frames, no store read.
            let (page, counter) =
                match self
                    .state
                    .hub
                    .recent_after(room, cur, CATCH_UP_PAGE as usize)
                {
                    // Caught up with what the room released; newer events come through the queue.
                    Some(recent) if recent.is_empty() => return Ok(cur),
                    Some(recent) => (recent, &metrics.events_replayed_memory),
                    None => match self.state.hub.stored_after(room, cur).await {
                        Ok(stored) if stored.events.is_empty() => {
                            if stored.covered <= cur {
                                return Ok(cur);
                            }
                            // Nothing stored in this page past the cursor (removed by
                            // retention): go on from its end.
                            let next = stored.covered.min(upto);
                            self.cursors.set(room, next);
                            continue;
                        }
                        Ok(stored) => (stored.events, &recovered),
                        Err(e) => {
                            tracing::error!(error = %e, room = %room, "catch-up read failed");
                            return Err(Gone);
                        }
                    },
                };
            let (sent, stop) = self.send_page(room, page, upto).await?;
            counter.inc_by(sent);
            if stop {
                return Ok(self.cursors.get(room).unwrap_or(0));
            }
        }
    }

    /// Sends one catch-up page (compressed as one message when the socket asked) and flushes;
    /// returns how many events went and whether catching up must stop (past `upto`, or the
    /// socket stopped following the room).
    async fn send_page(
        &mut self,
        room: &Arc<str>,
        page: Vec<Arc<LiveEvent>>,
        upto: u64,
    ) -> Result<(u64, bool), Gone> {
        self.begin_batch();
        let mut sent = 0u64;
        let mut stop = false;
        for ev in page {
            if ev.seq > upto {
                stop = true;
                break;
            }
            self.put_event(&ev).await?;
            sent += 1;
            self.cursors.set(room, ev.seq);
            if ev.effect.is_some() {
                self.apply_effect(room, ev.effect.clone()).await?;
            }
            if !self.cursors.contains(room) {
                stop = true;
                break;
            }
        }
        self.end_batch().await?;
        self.flush().await?;
        Ok((sent, stop))
    }

    async fn apply_effect(&mut self, room: &Arc<str>, effect: Option<Effect>) -> Result<(), Gone> {
        let reason = match effect {
            Some(Effect::RoomDeleted) => "room_deleted",
            Some(Effect::Removed { user, reason }) if *user == *self.conn.user => {
                // A recovered event may be old and the user may have come back since (invited
                // again, unbanned and rejoined): judge by the room as it is now. The cache entry
                // was dropped before a live event was published, so this is current too.
                let stands = match self
                    .state
                    .service
                    .readable_room(&self.conn.user, room)
                    .await
                {
                    Ok((_, member)) => {
                        reason == "left"
                            && !member.is_some_and(|m| m.status == roam_proto::MemberStatus::Active)
                    }
                    Err(_) => true,
                };
                if !stands {
                    return Ok(());
                }
                reason
            }
            Some(Effect::Recheck) => {
                // The cache entry of the room was dropped before the event was published, so
                // this reads the room as it is now.
                match self
                    .state
                    .service
                    .readable_room(&self.conn.user, room)
                    .await
                {
                    Err(e) if matches!(e.code, ErrorCode::Forbidden | ErrorCode::NotFound) => {
                        "forbidden"
                    }
                    _ => return Ok(()),
                }
            }
            _ => return Ok(()),
        };
        self.cursors.remove(room);
        self.state.hub.unfollow(room, &self.conn);
        self.put(&encode(&ServerFrame::Unsubscribed {
            room: room.to_string(),
            reason: reason.to_owned(),
        }))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_found_by_pointer_or_name_and_adopt_the_events_name() {
        let mut c = Cursors::default();
        let subscribed: Arc<str> = Arc::from("general");
        c.insert(&subscribed, 3);
        c.insert(&Arc::from("other"), 9);
        // A live event carries the hub's own copy of the name.
        let live: Arc<str> = Arc::from("general");
        assert!(!Arc::ptr_eq(&live, &subscribed));
        assert_eq!(c.get(&live), Some(3), "found by name");
        assert!(
            c.list.iter().any(|(r, _)| Arc::ptr_eq(r, &live)),
            "the list now holds the event's name"
        );
        c.set(&live, 4);
        assert_eq!(c.get(&subscribed), Some(4), "the same room by either name");
        c.set(&Arc::from("unknown"), 7);
        assert_eq!(
            c.get(&Arc::from("unknown")),
            None,
            "set does not follow a room"
        );
        assert!(c.contains(&Arc::from("general")) && !c.contains(&Arc::from("unknown")));
        c.remove(&subscribed);
        assert_eq!(c.get(&live), None);
        assert!(!c.contains(&live));
        assert_eq!(c.rooms(), vec![Arc::<str>::from("other")]);
    }
}
