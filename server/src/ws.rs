//! The WebSocket gateway: `GET /v1/ws`.
//!
//! Each socket has a reader (this task) and a writer task joined by a bounded queue. The reader
//! parses frames and applies them; mutations are prepared in arrival order and submitted to the
//! store at once, then acknowledged from their own tasks, so a client can pipeline many of them
//! and they are still applied in its order. The writer owns the socket's sink and its per-room
//! cursors: it sends a room's events strictly in sequence, drops any it already sent, and fills a
//! gap from the store, so recovery and live delivery join without loss or duplicates. Catch-up
//! reads the store page by page straight into the sink, so a long outage costs no memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use roam_proto::{
    close, ClientFrame, Envelope, ErrorCode, Mutation, RoomCursor, RoomSubscription, ServerFrame,
    SubscribeResult, SubscriptionStatus,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::auth::{bearer, Caller};
use crate::error::ApiError;
use crate::hub::{effect_of, encode, Conn, Effect, Outbound};
use crate::presence::announce;
use crate::service::now_ms;
use crate::store::NotificationQuery;
use crate::AppState;

/// Events read from the store per catch-up page.
const CATCH_UP_PAGE: u32 = 500;
/// Mutations of one socket waiting for their commit at once.
const MAX_IN_FLIGHT: usize = 256;
/// Typing frames allowed per socket per second.
const TYPING_PER_SEC: u32 = 5;

/// Upgrades after checking the token, the connect rate and that the server is not draining.
pub async fn handler(
    State(state): State<AppState>,
    ws: WebSocketUpgrade,
    parts: Parts,
) -> Response {
    if state.shutdown.is_cancelled() {
        return ApiError::new(ErrorCode::Unavailable, "the server is shutting down")
            .into_response();
    }
    let caller = match bearer(&parts, true).and_then(|t| state.keys.verify(&t)) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = state.service.limits.connect(&caller.user) {
        state.service.metrics.limited("connect");
        return e.into_response();
    }
    let max = roam_proto::validate::MAX_FRAME_BYTES;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let tracker = state.tasks.clone();
            tracker.track_future(run(state, socket, caller))
        })
}

struct Socket {
    state: AppState,
    conn: Conn,
    user: String,
    tx: mpsc::Sender<Outbound>,
    in_flight: Arc<Semaphore>,
    typing_window: (Instant, u32),
    /// Client-chosen ids of messages this socket is sending, until their commit: the receiver
    /// reports closed once the send is committed (or failed).
    sending: HashMap<String, watch::Receiver<()>>,
}

/// The message a mutation refers to, if any (edited, deleted, replied to).
fn referenced_message(m: &Mutation) -> Option<&str> {
    match m {
        Mutation::EditMessage { message, .. } | Mutation::DeleteMessage { message, .. } => {
            Some(message)
        }
        Mutation::SendMessage {
            reply_to: Some(r), ..
        } => Some(r),
        _ => None,
    }
}

async fn run(state: AppState, socket: WebSocket, caller: Caller) {
    let svc = &state.service;
    let id = state.hub.next_conn_id();
    let (tx, rx) = mpsc::channel(state.config.send_queue);
    let conn = Conn {
        id,
        user: Arc::from(caller.user.as_str()),
        tx: tx.clone(),
        close: CancellationToken::new(),
        close_code: Arc::new(AtomicU64::new(0)),
    };
    svc.metrics.connections.inc();
    svc.metrics.connections_total.inc();
    state.hub.connect(conn.clone());
    let now = now_ms();
    if let Err(e) = svc.store.touch_user(&caller.user, now).await {
        tracing::warn!(error = %e, "could not record the user");
    }
    if let Some(p) = svc.presence.connect(&caller.user, id, now) {
        announce(&svc.store, &svc.bus, p).await;
    }
    tracing::debug!(conn = id, user = %caller.user, "socket open");

    let (sink, stream) = socket.split();
    let writer = tokio::spawn(write_loop(state.clone(), conn.clone(), sink, rx));
    let hello = encode(ServerFrame::Hello {
        session: uuid::Uuid::now_v7().to_string(),
        user: caller.user.clone(),
        server_time: now,
        heartbeat_ms: state.config.heartbeat_ms,
        max_frame_bytes: roam_proto::validate::MAX_FRAME_BYTES as u64,
    });
    let mut sock = Socket {
        state: state.clone(),
        conn: conn.clone(),
        user: caller.user.clone(),
        tx,
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        typing_window: (Instant::now(), 0),
        sending: HashMap::new(),
    };
    if sock.tx.send(Outbound::Frame(hello)).await.is_ok() {
        sock.read_loop(stream, caller.exp).await;
    }
    // Make sure the writer ends (it sends the close frame chosen by whoever cancelled).
    conn.close.cancel();
    drop(sock);
    if tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .is_err()
    {
        tracing::debug!(conn = id, "writer did not finish in time");
    }

    let now = now_ms();
    let left = state.hub.disconnect(&caller.user, id);
    if left == 0 {
        state.typing.clear_user(&svc.bus, &caller.user).await;
        if let Err(e) = svc.store.save_last_seen(&caller.user, now).await {
            tracing::warn!(error = %e, "could not save last-seen");
        }
    }
    if let Some(p) = svc.presence.disconnect(&caller.user, id, now) {
        announce(&svc.store, &svc.bus, p).await;
    }
    svc.metrics.connections.dec();
    tracing::debug!(conn = id, user = %caller.user, "socket closed");
}

fn close_with(conn: &Conn, code: u16) {
    conn.close_code
        .compare_exchange(0, u64::from(code), Ordering::AcqRel, Ordering::Acquire)
        .ok();
    conn.close.cancel();
}

impl Socket {
    async fn read_loop(&mut self, mut stream: SplitStream<WebSocket>, exp: u64) {
        let idle = self.state.config.idle_timeout();
        let exp_in = Duration::from_secs(exp.saturating_sub(now_ms() as u64 / 1000));
        let expiry = tokio::time::sleep(exp_in);
        tokio::pin!(expiry);
        loop {
            let next = tokio::select! {
                _ = self.conn.close.cancelled() => return,
                _ = self.state.shutdown.cancelled() => {
                    close_with(&self.conn, close::GOING_AWAY);
                    return;
                }
                _ = &mut expiry => {
                    close_with(&self.conn, close::TOKEN_EXPIRED);
                    return;
                }
                n = tokio::time::timeout(idle, stream.next()) => n,
            };
            let msg = match next {
                Err(_) => {
                    tracing::debug!(conn = self.conn.id, "idle timeout");
                    close_with(&self.conn, close::NORMAL);
                    return;
                }
                Ok(None) => return,
                Ok(Some(Err(e))) => {
                    let text = e.to_string();
                    if text.contains("Space limit exceeded")
                        || text.contains("too long")
                        || text.contains("Capacity")
                    {
                        close_with(&self.conn, close::TOO_BIG);
                    }
                    tracing::debug!(conn = self.conn.id, error = %text, "socket read failed");
                    return;
                }
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    let m = &self.state.service.metrics;
                    m.frames_in.inc();
                    m.bytes_in.inc_by(t.len() as u64);
                    self.on_text(&t).await;
                }
                Message::Binary(_) => {
                    close_with(&self.conn, close::UNSUPPORTED_DATA);
                    return;
                }
                Message::Close(_) => return,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
    }

    async fn send(&self, frame: ServerFrame) {
        // A closed queue means the writer is gone; the read loop ends on its own.
        let _ = self.tx.send(Outbound::Frame(encode(frame))).await;
    }

    async fn error(&self, id: Option<String>, err: ApiError) {
        self.send(ServerFrame::Error {
            id,
            error: err.body(),
        })
        .await;
    }

    async fn on_text(&mut self, text: &str) {
        let env: Envelope<ClientFrame> = match serde_json::from_str(text) {
            Ok(env) => env,
            Err(e) => {
                let (id, err) = explain_bad_frame(text, &e);
                self.error(id, err).await;
                return;
            }
        };
        if env.v != roam_proto::PROTOCOL_VERSION {
            let id = frame_id(&env.frame);
            self.error(
                id,
                ApiError::new(
                    ErrorCode::UnsupportedVersion,
                    "this server speaks protocol v1",
                ),
            )
            .await;
            return;
        }
        match env.frame {
            ClientFrame::Subscribe {
                id,
                rooms,
                inbox_since,
            } => self.subscribe(id, rooms, inbox_since).await,
            ClientFrame::Unsubscribe { id, rooms } => {
                for room in rooms {
                    self.state.hub.unfollow(&room, self.conn.id);
                    let _ = self.tx.send(Outbound::StopRoom { room }).await;
                }
                self.send(ServerFrame::Ack {
                    id,
                    result: json!({}),
                })
                .await;
            }
            ClientFrame::Mutate { id, key, mutation } => self.mutate(id, key, mutation).await,
            ClientFrame::Typing { room, typing } => self.typing(room, typing).await,
            ClientFrame::Ping { id } => self.send(ServerFrame::Pong { id }).await,
        }
    }

    async fn subscribe(&mut self, id: String, rooms: Vec<RoomCursor>, inbox_since: Option<u64>) {
        if rooms.len() > roam_proto::validate::MAX_ROOMS_PER_SUBSCRIBE {
            self.error(
                Some(id),
                ApiError::invalid(format!(
                    "at most {} rooms per subscribe",
                    roam_proto::validate::MAX_ROOMS_PER_SUBSCRIBE
                )),
            )
            .await;
            return;
        }
        if let Some(bad) = rooms
            .iter()
            .find_map(|c| roam_proto::validate::room_name(&c.room).err())
        {
            self.error(Some(id), bad.into()).await;
            return;
        }
        let svc = &self.state.service;
        let mut results = Vec::with_capacity(rooms.len());
        let mut starts = Vec::new();
        let mut subscribed = Vec::new();
        for c in rooms {
            let status = match svc.readable_room(&self.user, &c.room).await {
                Err(e) if e.code == ErrorCode::NotFound => {
                    results.push(RoomSubscription {
                        room: c.room,
                        status: SubscriptionStatus::NotFound,
                        head_seq: 0,
                    });
                    continue;
                }
                Err(e) if e.code == ErrorCode::Forbidden => {
                    results.push(RoomSubscription {
                        room: c.room,
                        status: SubscriptionStatus::Forbidden,
                        head_seq: 0,
                    });
                    continue;
                }
                Err(e) => {
                    self.error(Some(id), e).await;
                    return;
                }
                Ok(_) => SubscriptionStatus::Ok,
            };
            let (oldest, head) = match svc.store.event_bounds(&c.room).await {
                Ok(b) => b,
                Err(e) => {
                    self.error(Some(id), e.into()).await;
                    return;
                }
            };
            let too_old = oldest > 0 && c.since + 1 < oldest;
            let too_far = head.saturating_sub(c.since) > self.state.config.max_recovery_events;
            let (status, since) = if c.since > head || too_old || too_far {
                svc.metrics.resets.inc();
                (SubscriptionStatus::Reset, head)
            } else {
                (status, c.since)
            };
            self.state.hub.follow(&c.room, &self.conn);
            subscribed.push(c.room.clone());
            starts.push((c.room.clone(), since));
            results.push(RoomSubscription {
                room: c.room,
                status,
                head_seq: head,
            });
        }
        let result =
            serde_json::to_value(SubscribeResult { rooms: results }).unwrap_or(Value::Null);
        self.send(ServerFrame::Ack { id, result }).await;
        for (room, since) in starts {
            let _ = self.tx.send(Outbound::StartRoom { room, since }).await;
        }
        self.send_member_presence(&subscribed).await;
        if let Some(after) = inbox_since {
            let q = NotificationQuery {
                after_seq: after,
                unread_only: false,
                limit: 500,
            };
            match svc.store.notifications(&self.user, &q).await {
                Ok(list) => {
                    for n in list {
                        self.send(ServerFrame::Notification(n)).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "inbox catch-up failed"),
            }
            match svc.store.unread_count(&self.user).await {
                Ok(count) => self.send(ServerFrame::Unread { count }).await,
                Err(e) => tracing::warn!(error = %e, "unread count failed"),
            }
        }
    }

    /// The presence of the connected members of newly followed rooms (everyone else is
    /// offline), so a client knows who is around without asking.
    async fn send_member_presence(&self, rooms: &[String]) {
        let svc = &self.state.service;
        let mut sent = std::collections::HashSet::new();
        for room in rooms {
            let members = match svc
                .store
                .list_members(room, None, roam_proto::validate::MAX_IDS_PER_CALL as u32)
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, room, "presence snapshot failed");
                    continue;
                }
            };
            for m in members {
                if m.user == self.user || !sent.insert(m.user.clone()) {
                    continue;
                }
                if let Some(p) = svc.live_presence(&m.user) {
                    self.send(ServerFrame::Presence(p)).await;
                }
            }
        }
    }

    async fn mutate(&mut self, id: String, key: String, mutation: Mutation) {
        let svc = Arc::clone(&self.state.service);
        if let Mutation::SetPresence { status } = mutation {
            // Not stored, so no idempotency record; but checked like every mutation.
            if let Err(e) =
                roam_proto::validate::idempotency_key(&key).and_then(|()| mutation.validate())
            {
                return self.error(Some(id), e.into()).await;
            }
            let away = status == roam_proto::PresenceStatus::Away;
            if let Some(p) = svc
                .presence
                .set_away(&self.user, self.conn.id, away, now_ms())
            {
                announce(&svc.store, &svc.bus, p).await;
            }
            let (status, devices) = svc.presence.live(&self.user);
            let p = roam_proto::Presence {
                user: self.user.clone(),
                status,
                last_seen: Some(now_ms()),
                devices,
            };
            let result = serde_json::to_value(p).unwrap_or(Value::Null);
            self.send(ServerFrame::Ack { id, result }).await;
            return;
        }
        // A client may pipeline an edit, a delete or a reply right behind the send of the
        // message it names (by the id it chose): it is checked once that send is committed.
        if let Some(mut pending) = referenced_message(&mutation)
            .and_then(|m| self.sending.get(m))
            .cloned()
        {
            let _ = pending.changed().await;
        }
        let sent_id = match &mutation {
            Mutation::SendMessage { id: Some(m), .. } => Some(m.clone()),
            _ => None,
        };
        let prepared = match svc.prepare(&self.user, &key, mutation).await {
            Ok(p) => p,
            Err(e) => return self.error(Some(id), e).await,
        };
        let Ok(permit) = Arc::clone(&self.in_flight).acquire_owned().await else {
            return;
        };
        let fut = svc.submit(prepared);
        let committed = sent_id.map(|m| {
            self.sending.retain(|_, rx| rx.has_changed().is_ok());
            let (done, rx) = watch::channel(());
            self.sending.insert(m, rx);
            done
        });
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let outcome = fut.await;
            drop(committed);
            let frame = match outcome {
                Ok(applied) => ServerFrame::Ack {
                    id,
                    result: applied.result,
                },
                Err(e) => ServerFrame::Error {
                    id: Some(id),
                    error: e.body(),
                },
            };
            let _ = tx.send(Outbound::Frame(encode(frame))).await;
            drop(permit);
        });
    }

    async fn typing(&mut self, room: String, typing: bool) {
        let now = Instant::now();
        if now.duration_since(self.typing_window.0) >= Duration::from_secs(1) {
            self.typing_window = (now, 0);
        }
        self.typing_window.1 += 1;
        if self.typing_window.1 > TYPING_PER_SEC {
            self.state.service.metrics.limited("typing");
            self.error(None, ApiError::rate_limited(1000)).await;
            return;
        }
        if let Err(e) = roam_proto::validate::room_name(&room) {
            return self.error(None, e.into()).await;
        }
        let svc = &self.state.service;
        match svc.member(&room, &self.user).await {
            Ok(Some(m)) if m.status == roam_proto::MemberStatus::Active => {}
            Ok(_) => {
                return self
                    .error(None, ApiError::forbidden("only members can type in a room"))
                    .await
            }
            Err(e) => return self.error(None, e).await,
        }
        self.state
            .typing
            .update(&svc.bus, &room, &self.user, typing, Some(self.conn.id))
            .await;
    }
}

fn frame_id(f: &ClientFrame) -> Option<String> {
    match f {
        ClientFrame::Subscribe { id, .. }
        | ClientFrame::Unsubscribe { id, .. }
        | ClientFrame::Mutate { id, .. }
        | ClientFrame::Ping { id } => Some(id.clone()),
        ClientFrame::Typing { .. } => None,
    }
}

/// A precise error for a frame that did not parse.
fn explain_bad_frame(text: &str, err: &serde_json::Error) -> (Option<String>, ApiError) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return (
            None,
            ApiError::invalid(format!("the frame is not valid JSON: {err}")),
        );
    };
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| roam_proto::validate::identifier("id", s).is_ok())
        .map(str::to_owned);
    if v.get("v").and_then(Value::as_u64) != Some(u64::from(roam_proto::PROTOCOL_VERSION)) {
        return (
            id,
            ApiError::new(
                ErrorCode::UnsupportedVersion,
                "every frame needs \"v\": 1 (this server speaks protocol v1)",
            ),
        );
    }
    let known = ["subscribe", "unsubscribe", "mutate", "typing", "ping"];
    match v.get("type").and_then(Value::as_str) {
        None => (id, ApiError::invalid("the frame has no \"type\"")),
        Some(t) if !known.contains(&t) => {
            (id, ApiError::invalid(format!("unknown frame type \"{t}\"")))
        }
        Some(_) => (id, ApiError::invalid(format!("malformed frame: {err}"))),
    }
}

/// The socket's writer: the only place that touches the sink.
async fn write_loop(
    state: AppState,
    conn: Conn,
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outbound>,
) {
    let mut w = Writer {
        state,
        conn,
        cursors: HashMap::new(),
    };
    let close = w.conn.close.clone();
    loop {
        let item = tokio::select! {
            biased;
            _ = close.cancelled() => break,
            item = rx.recv() => item,
        };
        let Some(item) = item else { break };
        let ok = tokio::select! {
            biased;
            _ = close.cancelled() => false,
            r = w.handle_queued(&mut sink, item, &mut rx) => r,
        };
        if !ok {
            break;
        }
    }
    let code = match w.conn.close_code.load(Ordering::Acquire) {
        0 => close::NORMAL,
        c => u16::try_from(c).unwrap_or(close::NORMAL),
    };
    let reason = match code {
        close::GOING_AWAY => "server shutting down",
        close::TOKEN_EXPIRED => "token expired",
        close::TOO_BIG => "frame too large",
        close::UNSUPPORTED_DATA => "binary frames are not supported",
        close::SLOW_CONSUMER => "slow consumer",
        _ => "",
    };
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    // A slow consumer's sink may be full: the close frame then goes after what is pending, if
    // the client reads within the bound, and is dropped with the socket otherwise.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = sink.send(frame).await;
        let _ = sink.flush().await;
    })
    .await;
    w.conn.close.cancel();
}

struct Writer {
    state: AppState,
    conn: Conn,
    /// Last seq sent per followed room.
    cursors: HashMap<String, u64>,
}

/// Items taken from the queue before the socket is flushed.
const FLUSH_EVERY: usize = 64;

impl Writer {
    /// Queues a frame on the sink. The sink writes to the socket by itself once its buffer is
    /// large; [`Writer::handle_queued`] flushes the rest.
    async fn put(&self, sink: &mut SplitSink<WebSocket, Message>, frame: Utf8Bytes) -> bool {
        sink.feed(Message::Text(frame)).await.is_ok()
    }

    /// Handles `first` and whatever else is already queued (up to [`FLUSH_EVERY`] items), then
    /// flushes once: a pipelining client gets its acks and events in a few large writes
    /// instead of one system call per frame. False when the socket is gone.
    async fn handle_queued(
        &mut self,
        sink: &mut SplitSink<WebSocket, Message>,
        first: Outbound,
        rx: &mut mpsc::Receiver<Outbound>,
    ) -> bool {
        if !self.handle(sink, first).await {
            return false;
        }
        for _ in 1..FLUSH_EVERY {
            match rx.try_recv() {
                Ok(item) => {
                    if !self.handle(sink, item).await {
                        return false;
                    }
                }
                Err(_) => break,
            }
        }
        sink.flush().await.is_ok()
    }

    /// Sends one item; false when the socket is gone.
    async fn handle(&mut self, sink: &mut SplitSink<WebSocket, Message>, item: Outbound) -> bool {
        match item {
            Outbound::Frame(f) => self.put(sink, f).await,
            Outbound::StopRoom { room } => {
                self.cursors.remove(&room);
                true
            }
            Outbound::StartRoom { room, since } => {
                self.cursors.insert(room.clone(), since);
                let Some(head) = self.catch_up(sink, &room, u64::MAX).await else {
                    return false;
                };
                if self.cursors.contains_key(&room) {
                    self.put(sink, encode(ServerFrame::CaughtUp { room, seq: head }))
                        .await
                } else {
                    true
                }
            }
            Outbound::Event {
                room,
                seq,
                frame,
                effect,
            } => {
                let Some(&cur) = self.cursors.get(&*room) else {
                    return true;
                };
                if seq <= cur {
                    return true;
                }
                if seq > cur + 1 && self.catch_up(sink, &room, seq - 1).await.is_none() {
                    return false;
                }
                if !self.cursors.contains_key(&*room) {
                    return true;
                }
                if !self.put(sink, frame).await {
                    return false;
                }
                self.cursors.insert(room.to_string(), seq);
                self.apply_effect(sink, &room, effect).await
            }
        }
    }

    /// Sends stored events after the room's cursor up to `upto`; returns the new cursor.
    async fn catch_up(
        &mut self,
        sink: &mut SplitSink<WebSocket, Message>,
        room: &str,
        upto: u64,
    ) -> Option<u64> {
        let store = Arc::clone(&self.state.service.store);
        loop {
            let cur = *self.cursors.get(room)?;
            if cur >= upto {
                return Some(cur);
            }
            let page = match store.events_after(room, cur, CATCH_UP_PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, room, "catch-up read failed");
                    return None;
                }
            };
            if page.is_empty() {
                return Some(cur);
            }
            let n = page.len() as u32;
            for ev in page {
                if ev.seq > upto {
                    return Some(*self.cursors.get(room)?);
                }
                let seq = ev.seq;
                let effect = effect_of(&ev);
                if !self.put(sink, encode(ServerFrame::Event(ev))).await {
                    return None;
                }
                self.state.service.metrics.events_recovered.inc();
                self.cursors.insert(room.to_owned(), seq);
                if !self.apply_effect(sink, room, effect).await {
                    return None;
                }
                if !self.cursors.contains_key(room) {
                    return Some(seq);
                }
            }
            if n < CATCH_UP_PAGE {
                return self.cursors.get(room).copied();
            }
        }
    }

    async fn apply_effect(
        &mut self,
        sink: &mut SplitSink<WebSocket, Message>,
        room: &str,
        effect: Option<Effect>,
    ) -> bool {
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
                    return true;
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
                    _ => return true,
                }
            }
            _ => return true,
        };
        self.cursors.remove(room);
        self.state.hub.unfollow(room, self.conn.id);
        self.put(
            sink,
            encode(ServerFrame::Unsubscribed {
                room: room.to_owned(),
                reason: reason.to_owned(),
            }),
        )
        .await
    }
}
