//! The WebSocket gateway: `GET /v1/ws`.
//!
//! Each socket has a reader (the task that runs `run`) and a writer task, joined by the
//! socket's queue ([`Conn`]). Neither ever waits for the other: the reader queues its answers
//! without blocking, so a client that stops reading cannot wedge it; every write has a timeout
//! (a client that stops reading is cut with 4008); and one sweeper task closes sockets that are
//! idle or whose token expired (see [`sweep`]).
//!
//! The reader parses frames and applies them; mutations are prepared in arrival order and
//! submitted to the store at once, then acknowledged from their own tasks, so a client can
//! pipeline many of them and they are still applied in its order.
//!
//! The writer owns the connection's sending half and the socket's per-room cursors. Live events
//! come from the hub already in `seq` order, so in the common case it only compares the event
//! with its cursor and gathers the event's frame — framed once for every socket
//! ([`WireFrame`]), so gathering it costs a reference count. When it must catch up — the socket
//! subscribes from an older cursor, its queue overflowed (it skipped events while lagging), or
//! the hub released a gap wider than it fills itself — it takes what the room's recent events in
//! memory cover, and reads the store only for older events. Catch-up goes page by page straight
//! to the socket, so a long outage costs no memory. Everything taken from the queue in one go is
//! written with one vectored write (more when it is over 64 KiB).
//!
//! The upgrade is done here rather than by axum's `WebSocketUpgrade`, so that the gateway frames
//! what it sends itself ([`crate::wsframe`]): a WebSocket library would copy every frame into
//! each socket's own write buffer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use roam_proto::{
    close, ClientFrame, Envelope, ErrorCode, Mutation, Presence, RoomCursor, RoomSubscription,
    ServerFrame, SubscribeResult, SubscriptionStatus,
};
use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{watch, Semaphore};

use crate::auth::{bearer, Caller};
use crate::compress;
use crate::conn::{Conn, Outbound};
use crate::error::ApiError;
use crate::hub::{encode, Effect, LiveEvent, CATCH_UP_PAGE};
use crate::service::now_ms;
use crate::store::NotificationQuery;
use crate::wsframe::{self, FrameReader, Incoming, WireFrame};
use crate::AppState;

/// The upgraded connection under a socket.
type Io = TokioIo<hyper::upgrade::Upgraded>;

/// Mutations of one socket waiting for their commit at once.
const MAX_IN_FLIGHT: usize = 256;
/// Typing frames allowed per socket per second.
const TYPING_PER_SEC: u32 = 5;
/// Control frames (subscribe, unsubscribe, ping) allowed per socket per second.
const CONTROL_PER_SEC: u32 = 20;
/// WebSocket read buffer. Client frames are small (a chat `mutate` is a few hundred bytes);
/// a larger one grows it on demand. Every socket holds this much for as long as it is open.
const READ_BUFFER: usize = 512;
/// The writer writes to the socket once this much is gathered (and at every flush).
const WRITE_BUFFER: usize = 64 * 1024;
/// … or once this many frames are.
const WRITE_FRAMES: usize = 256;

/// True for a `Sec-WebSocket-Key` that is the base64 of 16 bytes (RFC 6455 §4.1, §4.2.1): 22
/// characters of the base64 alphabet and `==`.
fn websocket_key_is_valid(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// Why a socket slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotRefused {
    #[error("the server holds as many sockets as it may")]
    Total,
    #[error("the user holds as many sockets as one may")]
    PerUser,
}

#[derive(Debug, Default)]
struct SlotCounts {
    total: usize,
    per_user: HashMap<Arc<str>, usize>,
}

/// The socket caps (`--max-sockets`, `--max-sockets-per-user`). A handshake takes a slot before
/// it answers 101 and the slot is given back when the socket ends (or the upgrade fails), so
/// concurrent handshakes cannot pass the caps between a check and the socket's registration.
#[derive(Debug)]
pub struct SocketSlots {
    max_total: usize,
    max_per_user: usize,
    counts: parking_lot::Mutex<SlotCounts>,
}

/// One taken socket slot; dropping it gives it back.
#[derive(Debug)]
pub struct SocketSlot {
    slots: Arc<SocketSlots>,
    user: Arc<str>,
}

impl SocketSlots {
    pub fn new(max_total: usize, max_per_user: usize) -> SocketSlots {
        SocketSlots {
            max_total,
            max_per_user,
            counts: parking_lot::Mutex::new(SlotCounts::default()),
        }
    }

    /// Takes a slot for `user`, or says which cap is full.
    pub fn take(self: &Arc<Self>, user: &str) -> Result<SocketSlot, SlotRefused> {
        let mut c = self.counts.lock();
        if c.total >= self.max_total {
            return Err(SlotRefused::Total);
        }
        let user: Arc<str> = match c.per_user.get_key_value(user) {
            Some((_, n)) if *n >= self.max_per_user => return Err(SlotRefused::PerUser),
            Some((u, _)) => Arc::clone(u),
            None => Arc::from(user),
        };
        c.total += 1;
        *c.per_user.entry(Arc::clone(&user)).or_insert(0) += 1;
        Ok(SocketSlot {
            slots: Arc::clone(self),
            user,
        })
    }

    /// Slots taken: in total, and by `user`.
    pub fn taken(&self, user: &str) -> (usize, usize) {
        let c = self.counts.lock();
        (c.total, c.per_user.get(user).copied().unwrap_or(0))
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut c = self.slots.counts.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_user.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_user.remove(&self.user);
            }
        }
    }
}

/// Checks that `parts` asks for a WebSocket (RFC 6455 §4.2.1) and returns the value of its
/// `Sec-WebSocket-Accept`.
fn websocket_accept(parts: &Parts) -> Result<HeaderValue, ApiError> {
    let has = |name: header::HeaderName, want: &str| {
        parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(want))
    };
    let bad = |m: &str| ApiError::new(ErrorCode::InvalidInput, m.to_owned());
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return Err(bad(
            "this endpoint speaks WebSocket: send `Connection: upgrade` and `Upgrade: websocket`",
        ));
    }
    if parts
        .headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(bad("`Sec-WebSocket-Version` must be 13"));
    }
    let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(bad("`Sec-WebSocket-Key` is missing"));
    };
    if !websocket_key_is_valid(key.as_bytes()) {
        return Err(bad(
            "`Sec-WebSocket-Key` must be the base64 of 16 bytes (24 characters)",
        ));
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    HeaderValue::from_str(&accept).map_err(|_| bad("`Sec-WebSocket-Key` is not valid"))
}

/// Upgrades after checking the token, the connect rate, the socket caps and that the server is
/// not draining.
pub async fn handler(State(state): State<AppState>, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    let accept = match websocket_accept(&parts) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::new(
            ErrorCode::InvalidInput,
            "this connection cannot be upgraded to a WebSocket",
        )
        .into_response();
    };
    if state.shutdown.is_cancelled() {
        return ApiError::new(ErrorCode::Unavailable, "the server is shutting down")
            .into_response();
    }
    let caller = match bearer(&parts, true).and_then(|t| state.keys.verify(&t)) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let slot = match state.sockets.take(&caller.user) {
        Ok(slot) => slot,
        Err(SlotRefused::Total) => {
            state.service.metrics.sockets_refused("total");
            return ApiError::new(
                ErrorCode::Unavailable,
                "this server holds as many sockets as it may; retry later or elsewhere",
            )
            .into_response();
        }
        Err(SlotRefused::PerUser) => {
            state.service.metrics.sockets_refused("per_user");
            return ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "at most {} sockets per user; close one first",
                    state.config.max_sockets_per_user
                ),
            )
            .into_response();
        }
    };
    if let Err(e) = state.service.limits.connect(&caller.user) {
        state.service.metrics.limited("connect");
        return e.into_response();
    }
    let compress = parts.uri.query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == format!("compress={}", compress::DEFLATE))
    });
    let tracker = state.tasks.clone();
    tokio::spawn(tracker.track_future(async move {
        // Held until the socket ends (or the upgrade fails).
        let _slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => run(state, TokioIo::new(upgraded), caller, compress).await,
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    }));
    let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    res
}

struct Socket {
    state: AppState,
    conn: Arc<Conn>,
    in_flight: Arc<Semaphore>,
    typing_window: (Instant, u32),
    control_window: (Instant, u32),
    /// Rooms this socket follows (for clean-up when it closes).
    following: HashSet<Arc<str>>,
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

/// Serves one upgraded socket until it closes. Not an `async fn`: an async fn's future keeps
/// its arguments for its whole life, and the unsplit socket and the token's claims would sit
/// in every idle socket's reader task.
fn run(
    state: AppState,
    socket: Io,
    caller: Caller,
    compress: bool,
) -> impl std::future::Future<Output = ()> + Send {
    let id = state.hub.next_conn_id();
    let conn = Conn::new(
        id,
        Arc::from(caller.user.as_str()),
        state.config.send_queue,
        caller.exp.saturating_mul(1000),
    );
    let (stream, sink) = tokio::io::split(socket);
    // The writer waits for its first item; `opened` queues the `hello`.
    let writer = tokio::spawn(write_loop(state.clone(), Arc::clone(&conn), sink, compress));
    let sock = Socket {
        state,
        conn,
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        typing_window: (Instant::now(), 0),
        control_window: (Instant::now(), 0),
        following: HashSet::new(),
        sending: HashMap::new(),
    };
    serve(sock, stream, writer, compress)
}

// Deliberately not an `async fn` (see the comment inside).
#[allow(clippy::manual_async_fn)]
fn serve(
    mut sock: Socket,
    stream: ReadHalf<Io>,
    writer: tokio::task::JoinHandle<()>,
    compress: bool,
) -> impl std::future::Future<Output = ()> + Send {
    // An `async move` block keeps what it captures once (an `async fn` moves its arguments
    // into a second set of slots).
    async move {
        Box::pin(opened(&sock.state, &sock.conn, compress)).await;
        sock.read_loop(stream).await;
        // Make sure the writer ends (it sends the close frame chosen by whoever closed).
        sock.conn.shut();
        let following: Vec<Arc<str>> = sock.following.drain().collect();
        let state = sock.state.clone();
        let conn = Arc::clone(&sock.conn);
        drop(sock);
        // Boxed, like `opened`: the task's future is as large as its largest await, and an idle
        // socket spends its life in the read loop, not in these (a timer alone is larger than it).
        Box::pin(finish(state, conn, writer, following)).await;
    }
}

/// Waits (bounded) for the socket's writer to end, then forgets the socket.
async fn finish(
    state: AppState,
    conn: Arc<Conn>,
    writer: tokio::task::JoinHandle<()>,
    following: Vec<Arc<str>>,
) {
    if tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .is_err()
    {
        tracing::debug!(conn = conn.id, "writer did not finish in time");
    }
    closed(&state, &conn, &following).await;
}

/// Records the user and their presence, queues the socket's `hello`, then registers the socket
/// for what is sent to its user: `hello` is its first frame (no notification, read marker or
/// membership change can come before it), and once a client has it the server counts the
/// device in the user's presence. What is sent to the user while it connects is not lost: the
/// client reads notifications, read markers and rooms after `hello` (§4 of the protocol).
async fn opened(state: &AppState, conn: &Arc<Conn>, compress: bool) {
    let svc = &state.service;
    svc.metrics.connections.inc();
    svc.metrics.connections_total.inc();
    let now = now_ms();
    if let Err(e) = svc.store.touch_user(&conn.user, now).await {
        tracing::warn!(error = %e, "could not record the user");
    }
    svc.presence_moved(svc.presence.connect(&conn.user, conn.id, now))
        .await;
    let hello = encode(&ServerFrame::Hello {
        session: uuid::Uuid::now_v7().to_string(),
        user: conn.user.to_string(),
        server_time: now,
        heartbeat_ms: state.config.heartbeat_ms,
        max_frame_bytes: roam_proto::validate::MAX_FRAME_BYTES as u64,
        compression: compress.then(|| compress::DEFLATE.to_owned()),
    });
    conn.push(Outbound::Frame(hello), &svc.metrics);
    state.hub.connect(conn);
    if state.shutdown.is_cancelled() {
        // Upgraded while the server began to drain: it closes like the others.
        conn.close_with(close::GOING_AWAY);
    }
    tracing::debug!(conn = conn.id, user = %conn.user, "socket open");
}

/// Forgets a closed socket.
async fn closed(state: &AppState, conn: &Arc<Conn>, following: &[Arc<str>]) {
    let svc = &state.service;
    let now = now_ms();
    let left = state.hub.disconnect(conn, following);
    if left == 0 {
        state.typing.clear_user(&svc.bus, &conn.user).await;
        if let Err(e) = svc.store.save_last_seen(&conn.user, now).await {
            tracing::warn!(error = %e, "could not save last-seen");
        }
    }
    if let Some(t) = svc.presence.disconnect(&conn.user, conn.id, now) {
        svc.presence_moved(t).await;
    }
    svc.metrics.connections.dec();
    tracing::debug!(conn = conn.id, user = %conn.user, code = conn.close_code(), "socket closed");
}

/// Closes sockets that are idle or whose token expired, every `every`, whatever their queues
/// hold. One task for all sockets: an idle socket costs no timer of its own. (A socket that
/// stops reading is cut by its writer's write timeout.)
pub async fn sweep(state: AppState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle_ms = state.config.idle_timeout().as_millis() as u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.shutdown.cancelled() => return,
        }
        let now = now_ms();
        for conn in state.hub.all() {
            if conn.is_closing() {
                continue;
            }
            if conn.expired(now) {
                conn.close_with(close::TOKEN_EXPIRED);
            } else if conn.idle_for(now) > idle_ms {
                tracing::debug!(conn = conn.id, "idle timeout");
                conn.close_with(close::NORMAL);
            }
        }
    }
}

impl Socket {
    async fn read_loop(&mut self, mut stream: ReadHalf<Io>) {
        let conn = Arc::clone(&self.conn);
        let mut frames = FrameReader::with_budget(
            roam_proto::validate::MAX_FRAME_BYTES,
            READ_BUFFER,
            Arc::clone(&self.state.partial),
        );
        loop {
            let next = tokio::select! {
                _ = conn.closing() => return,
                n = frames.read(&mut stream) => n,
            };
            self.conn.read_now();
            let msg = match next {
                Ok(None) => return,
                Err(e) => {
                    let partial = match e {
                        wsframe::ReadError::Unfinished(_) => Some("timeout"),
                        wsframe::ReadError::OverBudget => Some("budget"),
                        _ => None,
                    };
                    if let Some(kind) = partial {
                        self.state
                            .service
                            .metrics
                            .ws_partial_closed
                            .get_or_create(&crate::metrics::KindLabel {
                                kind: kind.to_owned(),
                            })
                            .inc();
                    }
                    if let Some(code) = e.close_code() {
                        self.conn.close_with(code);
                    }
                    tracing::debug!(conn = self.conn.id, error = %e, "socket read failed");
                    return;
                }
                Ok(Some(m)) => m,
            };
            match msg {
                Incoming::Text(t) => {
                    let Ok(text) = std::str::from_utf8(&t) else {
                        self.conn.close_with(wsframe::INVALID_PAYLOAD);
                        return;
                    };
                    let m = &self.state.service.metrics;
                    m.frames_in.inc();
                    m.bytes_in.inc_by(t.len() as u64);
                    // Boxed: the handling of a frame is large and rare next to waiting.
                    Box::pin(self.on_text(text)).await;
                }
                Incoming::Binary(_) => {
                    self.conn.close_with(close::UNSUPPORTED_DATA);
                    return;
                }
                Incoming::Close(code) => {
                    // Answered with the client's own code (RFC 6455 §5.5.1), or 1000.
                    self.conn.close_echo(code.unwrap_or(close::NORMAL));
                    return;
                }
                Incoming::Ping(payload) => {
                    self.conn.push(
                        Outbound::Frame(WireFrame::pong(&payload)),
                        &self.state.service.metrics,
                    );
                }
                Incoming::Pong => {}
            }
        }
    }

    fn send(&self, frame: &ServerFrame) {
        // A closing socket drops what is queued; the read loop ends on its own.
        self.conn
            .push(Outbound::Frame(encode(frame)), &self.state.service.metrics);
    }

    fn error(&self, id: Option<String>, err: ApiError) {
        self.send(&ServerFrame::Error {
            id,
            error: err.body(),
        });
    }

    /// Counts a control frame; false (and an error sent) past the per-second allowance.
    fn control_allowed(&mut self, id: &str) -> bool {
        let now = Instant::now();
        if now.duration_since(self.control_window.0) >= Duration::from_secs(1) {
            self.control_window = (now, 0);
        }
        self.control_window.1 += 1;
        if self.control_window.1 > CONTROL_PER_SEC {
            self.state.service.metrics.limited("control");
            self.error(Some(id.to_owned()), ApiError::rate_limited(1000));
            return false;
        }
        true
    }

    async fn on_text(&mut self, text: &str) {
        let env: Envelope<ClientFrame> = match serde_json::from_str(text) {
            Ok(env) => env,
            Err(e) => {
                let (id, err) = explain_bad_frame(text, &e);
                self.error(id, err);
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
            );
            return;
        }
        match env.frame {
            ClientFrame::Subscribe {
                id,
                rooms,
                inbox_since,
            } => {
                if self.control_allowed(&id) {
                    self.subscribe(id, rooms, inbox_since).await;
                }
            }
            ClientFrame::Unsubscribe { id, rooms } => {
                if self.control_allowed(&id) {
                    self.unsubscribe(id, rooms);
                }
            }
            ClientFrame::Mutate {
                id,
                key,
                after,
                mutation,
            } => self.mutate(id, key, after, mutation).await,
            ClientFrame::Typing { room, typing } => self.typing(room, typing).await,
            ClientFrame::Ping { id } => {
                if self.control_allowed(&id) {
                    self.send(&ServerFrame::Pong { id });
                }
            }
        }
    }

    fn unsubscribe(&mut self, id: String, rooms: Vec<String>) {
        let max = roam_proto::validate::MAX_ROOMS_PER_SUBSCRIBE;
        if rooms.len() > max {
            self.error(
                Some(id),
                ApiError::invalid(format!("at most {max} rooms per unsubscribe")),
            );
            return;
        }
        for room in rooms {
            if let Some(name) = self.following.take(room.as_str()) {
                self.state.hub.unfollow(&name, &self.conn);
                self.conn
                    .push(Outbound::StopRoom(name), &self.state.service.metrics);
            }
        }
        self.send(&ServerFrame::Ack {
            id,
            result: json!({}),
        });
    }

    async fn subscribe(&mut self, id: String, rooms: Vec<RoomCursor>, inbox_since: Option<u64>) {
        if rooms.len() > roam_proto::validate::MAX_ROOMS_PER_SUBSCRIBE {
            self.error(
                Some(id),
                ApiError::invalid(format!(
                    "at most {} rooms per subscribe",
                    roam_proto::validate::MAX_ROOMS_PER_SUBSCRIBE
                )),
            );
            return;
        }
        if let Some(bad) = rooms
            .iter()
            .find_map(|c| roam_proto::validate::room_name(&c.room).err())
        {
            self.error(Some(id), bad.into());
            return;
        }
        let names: Vec<&str> = rooms.iter().map(|c| c.room.as_str()).collect();
        if let Err(refused) = self.state.hub.admit(&self.conn, &names) {
            self.refuse_follow(id, &refused);
            return;
        }
        let svc = Arc::clone(&self.state.service);
        let mut results = Vec::with_capacity(rooms.len());
        let mut starts = Vec::new();
        // Rooms this frame started following: a subscribe that fails half-way follows none.
        let mut added: Vec<Arc<str>> = Vec::new();
        for c in rooms {
            let presence_on;
            let member;
            let status = match svc.readable_room(&self.conn.user, &c.room).await {
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
                    self.abandon(&added);
                    self.error(Some(id), e);
                    return;
                }
                Ok((room, m)) => {
                    presence_on = room.member_count <= self.state.config.presence_room_max;
                    member = m.is_some_and(|m| m.status == roam_proto::MemberStatus::Active);
                    SubscriptionStatus::Ok
                }
            };
            let (oldest, head) = match svc.store.event_bounds(&c.room).await {
                Ok(b) => b,
                Err(e) => {
                    self.abandon(&added);
                    self.error(Some(id), e.into());
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
            let name = match self
                .state
                .hub
                .follow(&c.room, &self.conn, head, presence_on, member)
            {
                Ok(name) => name,
                Err(refused) => {
                    // Another socket of the user took the last places since `admit`.
                    self.abandon(&added);
                    self.refuse_follow(id, &refused);
                    return;
                }
            };
            if self.following.insert(Arc::clone(&name)) {
                added.push(Arc::clone(&name));
            }
            starts.push((name, since, presence_on && member));
            results.push(RoomSubscription {
                room: c.room,
                status,
                head_seq: head,
            });
        }
        let result =
            serde_json::to_value(SubscribeResult { rooms: results }).unwrap_or(Value::Null);
        self.send(&ServerFrame::Ack { id, result });
        for (room, since, _) in &starts {
            self.conn.push(
                Outbound::StartRoom {
                    room: Arc::clone(room),
                    since: *since,
                },
                &svc.metrics,
            );
        }
        for (room, _, presence_on) in &starts {
            if *presence_on {
                self.send_presence_state(room).await;
            }
        }
        if let Some(after) = inbox_since {
            let q = NotificationQuery {
                after_seq: after,
                unread_only: false,
                limit: 500,
            };
            match svc.store.notifications(&self.conn.user, &q).await {
                Ok(list) => {
                    for n in list {
                        self.send(&ServerFrame::Notification(n));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "inbox catch-up failed"),
            }
            match svc.store.unread_count(&self.conn.user).await {
                Ok(count) => self.send(&ServerFrame::Unread { count }),
                Err(e) => tracing::warn!(error = %e, "unread count failed"),
            }
        }
    }

    /// Answers a subscribe the follow caps refuse: nothing in it is followed.
    fn refuse_follow(&self, id: String, refused: &crate::hub::FollowRefused) {
        self.state.service.metrics.follow_refused(refused.kind());
        self.error(
            Some(id),
            ApiError::new(ErrorCode::Conflict, refused.to_string()),
        );
    }

    /// Stops following rooms a subscribe followed before it failed.
    fn abandon(&mut self, added: &[Arc<str>]) {
        for room in added {
            self.following.remove(room);
            self.state.hub.unfollow(room, &self.conn);
        }
    }

    /// One `presence_state` frame: the room's members connected right now (other than this
    /// socket's user).
    async fn send_presence_state(&self, room: &str) {
        let svc = &self.state.service;
        let mut presences: Vec<Presence> = Vec::new();
        let mut after: Option<String> = None;
        let page = roam_proto::validate::MAX_IDS_PER_CALL as u32;
        loop {
            let members = match svc.store.list_members(room, after.as_deref(), page).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, room, "presence snapshot failed");
                    return;
                }
            };
            let n = members.len();
            after = members.last().map(|m| m.user.clone());
            let others: Vec<String> = members
                .into_iter()
                .filter(|m| {
                    *m.user != *self.conn.user && m.status == roam_proto::MemberStatus::Active
                })
                .map(|m| m.user)
                .collect();
            presences.extend(svc.live_presences(&others).await);
            if n < page as usize {
                break;
            }
        }
        self.send(&ServerFrame::PresenceState {
            room: room.to_owned(),
            presences,
        });
    }

    async fn mutate(&mut self, id: String, key: String, after: Option<String>, mutation: Mutation) {
        let svc = Arc::clone(&self.state.service);
        let user = self.conn.user.to_string();
        if let Mutation::SetPresence { status } = mutation {
            // Not stored, so no idempotency record; but checked like every mutation.
            if let Err(e) =
                roam_proto::validate::idempotency_key(&key).and_then(|()| mutation.validate())
            {
                return self.error(Some(id), e.into());
            }
            let away = status == roam_proto::PresenceStatus::Away;
            if let Some(t) = svc.presence.set_away(&user, self.conn.id, away, now_ms()) {
                svc.presence_moved(t).await;
            }
            let (status, devices) = svc.presence.live(&user);
            let p = Presence {
                user,
                status,
                last_seen: Some(now_ms()),
                devices,
            };
            let result = serde_json::to_value(p).unwrap_or(Value::Null);
            self.send(&ServerFrame::Ack { id, result });
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
        if let Some(Err(e)) = after.as_deref().map(roam_proto::validate::idempotency_key) {
            return self.error(Some(id), e.into());
        }
        let mut prepared = match svc.prepare(&user, &key, mutation).await {
            Ok(p) => p,
            Err(e) => return self.error(Some(id), e),
        };
        prepared.after(after);
        let permit = tokio::select! {
            p = Arc::clone(&self.in_flight).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = self.conn.closing() => return,
        };
        let fut = svc.submit(prepared);
        let committed = sent_id.map(|m| {
            self.sending.retain(|_, rx| rx.has_changed().is_ok());
            let (done, rx) = watch::channel(());
            self.sending.insert(m, rx);
            done
        });
        let conn = Arc::clone(&self.conn);
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
            conn.push(Outbound::Frame(encode(&frame)), &svc.metrics);
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
            self.error(None, ApiError::rate_limited(1000));
            return;
        }
        if let Err(e) = roam_proto::validate::room_name(&room) {
            return self.error(None, e.into());
        }
        let svc = &self.state.service;
        match svc.member(&room, &self.conn.user).await {
            Ok(Some(m)) if m.status == roam_proto::MemberStatus::Active => {}
            Ok(_) => {
                return self.error(None, ApiError::forbidden("only members can type in a room"))
            }
            Err(e) => return self.error(None, e),
        }
        self.state
            .typing
            .update(&svc.bus, &room, &self.conn.user, typing, Some(self.conn.id))
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

/// The socket is gone (or must go): stop writing.
#[derive(Debug)]
struct Gone;

/// Why a socket reads the store.
#[derive(Debug, Clone, Copy)]
enum CatchUp {
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
fn write_loop(
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
fn write_items(mut w: Writer) -> impl std::future::Future<Output = ()> + Send {
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
async fn send_close(mut io: WriteHalf<Io>, mut out: VecDeque<Bytes>, conn: &Conn) {
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
async fn bounded<F>(
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
struct Cursors {
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

struct Writer {
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

    fn future_size<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
        size_of::<F>()
    }

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

    #[test]
    fn a_websocket_key_must_be_the_base64_of_16_bytes() {
        assert!(websocket_key_is_valid(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(websocket_key_is_valid(b"AAAAAAAAAAAAAAAAAAAAAA=="));
        for bad in [
            &b""[..],
            b"dGhlIHNhbXBsZSBub25jZQ",
            b"dGhlIHNhbXBsZSBub25jZQ=",
            b"dGhlIHNhbXBsZSBub25jZQ===",
            b"dGhlIHNhbXBsZSBub25j",
            b"dGhlIHNhbXBsZSBub25jZQ.=",
            b"dGhlIHNhbXBsZSBub25jZQAA",
            b"dGhlIHNhbXBsZSBub25jZSBsb25nZXI=",
        ] {
            assert!(
                !websocket_key_is_valid(bad),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(!websocket_key_is_valid(&[b'A'; 8192]));
    }

    #[test]
    fn socket_slots_hold_their_caps_under_concurrent_takers() {
        let slots = Arc::new(SocketSlots::new(10, 4));
        let barrier = Arc::new(std::sync::Barrier::new(32));
        let threads: Vec<_> = (0..32)
            .map(|i| {
                let slots = Arc::clone(&slots);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    // Half of them as one user, the rest as 16 others.
                    let user = if i % 2 == 0 {
                        "alice".to_owned()
                    } else {
                        format!("u{i}")
                    };
                    slots.take(&user).ok()
                })
            })
            .collect();
        let held: Vec<SocketSlot> = threads
            .into_iter()
            .filter_map(|t| t.join().expect("thread"))
            .collect();
        assert_eq!(held.len(), 10, "exactly the total cap");
        assert!(slots.taken("alice").1 <= 4, "the per-user cap");
        assert_eq!(
            slots.take("bob").map(|_| ()),
            Err(SlotRefused::Total),
            "full"
        );
        drop(held);
        assert_eq!(slots.taken("alice"), (0, 0), "every slot given back");
        let mine: Vec<_> = (0..4).filter_map(|_| slots.take("alice").ok()).collect();
        assert_eq!(mine.len(), 4);
        assert_eq!(slots.take("alice").map(|_| ()), Err(SlotRefused::PerUser));
    }

    /// Every open socket holds its reader's and its writer's futures for as long as it is
    /// open; what either keeps across its idle wait is paid 10,000 times over by 10,000 idle
    /// sockets. (Before `run` and `write_loop` stopped being `async fn`s and boxed their
    /// closing steps, they were 1,184 and 664 bytes.)
    #[test]
    fn an_idle_sockets_tasks_stay_small() {
        let reader = future_size(run);
        let writer = future_size(write_loop);
        assert!(reader <= 640, "the reader's future is {reader} bytes");
        assert!(writer <= 448, "the writer's future is {writer} bytes");
    }
}
