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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use roam_proto::{
    close, ClientFrame, Envelope, ErrorCode, Mutation, Presence, RoomCursor, RoomSubscription,
    ServerFrame, SubscribeResult, SubscriptionStatus,
};
use serde_json::{json, Value};
use tokio::io::ReadHalf;
use tokio::sync::{watch, Semaphore};

use crate::auth::Caller;
use crate::clock::now_ms;
use crate::compress;
use crate::conn::{Conn, Outbound};
use crate::error::ApiError;
use crate::event::encode;
use crate::store::NotificationQuery;
use crate::wsframe::{self, FrameReader, Incoming, WireFrame};
use crate::AppState;

mod collab;
mod handshake;
mod writer;

pub use handshake::{handler, SlotRefused, SocketSlot, SocketSlots};
use writer::*;

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
    /// Awareness waiting for its turn (made on the first awareness frame).
    awareness: Option<Arc<parking_lot::Mutex<collab::AwarenessGate>>>,
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
        awareness: None,
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
    let session = uuid::Uuid::now_v7().to_string();
    let _ = conn.session.set(Arc::from(session.as_str()));
    let hello = encode(&ServerFrame::Hello {
        session,
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
    // An active device the server lost contact with (no close from it: it fell silent or
    // stopped reading) may have missed what was sent to it since it was last heard from, and
    // the push worker skipped that while the device counted as active.
    let lost_active =
        conn.lost_contact() && svc.presence.device_away(&conn.user, conn.id) == Some(false);
    let left = state.hub.disconnect(conn, following);
    for gone in state.hub.collab().disconnect(conn) {
        collab::publish_awareness(state, gone, None).await;
    }
    if left == 0 {
        state.typing.clear_user(&svc.bus, &conn.user).await;
        if let Err(e) = svc.store.save_last_seen(&conn.user, now).await {
            tracing::warn!(error = %e, "could not save last-seen");
        }
    }
    if let Some(t) = svc.presence.disconnect(&conn.user, conn.id, now) {
        svc.presence_moved(t).await;
    }
    if lost_active {
        // After the presence above: the pushes are checked against it before they go.
        crate::push::lost_contact(svc, &conn.user, conn.last_read_ms()).await;
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
            if conn.expired(now) || state.service.suspensions.is_suspended(&conn.user) {
                conn.close_with(close::TOKEN_EXPIRED);
            } else if conn.idle_for(now) > idle_ms {
                tracing::debug!(conn = conn.id, "idle timeout");
                conn.close_silent(close::NORMAL);
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
            ClientFrame::CollabSync {
                id,
                room,
                doc,
                state_vector,
            } => {
                if self.control_allowed(&id) {
                    Box::pin(self.collab_sync(id, room, doc, state_vector)).await;
                }
            }
            ClientFrame::CollabLeave { id, room, doc } => {
                if self.control_allowed(&id) {
                    self.collab_leave(id, room, doc).await;
                }
            }
            ClientFrame::Awareness { room, doc, state } => {
                self.awareness(room, doc, state).await;
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
        | ClientFrame::CollabSync { id, .. }
        | ClientFrame::CollabLeave { id, .. }
        | ClientFrame::Ping { id } => Some(id.clone()),
        ClientFrame::Typing { .. } | ClientFrame::Awareness { .. } => None,
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
    let known = [
        "subscribe",
        "unsubscribe",
        "mutate",
        "typing",
        "ping",
        "collab_sync",
        "collab_leave",
        "awareness",
    ];
    match v.get("type").and_then(Value::as_str) {
        None => (id, ApiError::invalid("the frame has no \"type\"")),
        Some(t) if !known.contains(&t) => {
            (id, ApiError::invalid(format!("unknown frame type \"{t}\"")))
        }
        Some(_) => (id, ApiError::invalid(format!("malformed frame: {err}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
        size_of::<F>()
    }

    /// Every open socket holds its reader's and its writer's futures for as long as it is
    /// open; what either keeps across its idle wait is paid 10,000 times over by 10,000 idle
    /// sockets. (Before `run` and `write_loop` stopped being `async fn`s and boxed their
    /// closing steps, they were 1,184 and 664 bytes; the reader's 8 bytes over 640 are the
    /// collaborative documents' awareness gate, a pointer made on the first awareness frame.)
    #[test]
    fn an_idle_sockets_tasks_stay_small() {
        let reader = future_size(run);
        let writer = future_size(write_loop);
        assert!(reader <= 648, "the reader's future is {reader} bytes");
        assert!(writer <= 448, "the writer's future is {writer} bytes");
    }
}
