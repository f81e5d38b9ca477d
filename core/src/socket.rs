//! The reconnecting WebSocket connection, and everything that happens while it is up.
//!
//! [`run`] is one long-lived task per started client. It loops over connection attempts while
//! the app wants to be online:
//!
//! ```text
//!   Offline ──set_online(true)/start──▶ Connecting ──hello──▶ Connected ──drop──▶ Waiting(d) ─┐
//!      ▲                                    │ failed                                ▲           │
//!      └──────────set_online(false)─────────┴───────────────────────────────────────┘◀──d / network_available()
//! ```
//!
//! - **Connecting**: ask the [`TokenProvider`](crate::TokenProvider) for a token (`refresh`
//!   after a 401 or a `4001` close), open `ws(s)://host/v1/ws` with `Authorization: Bearer`, and
//!   wait for the server's `hello`, all within `connect_timeout`.
//! - **Waiting**: the delay comes from [`Backoff`] with Socket.IO-style randomisation (defaults
//!   1 s → 5 s, ±50 %), at least the `Retry-After` of a `429` handshake, reset after every
//!   connection that reached `hello`. `network_available()` cancels the wait; `set_online(false)`
//!   ends it.
//! - **Connected** (a [`Session`]): first one `subscribe` frame (in chunks of 500 rooms) with
//!   each followed room's cursor and `inbox_since`; recovered events are applied as they arrive
//!   (see [`crate::sync`]); once every room is caught up (or `recovery_timeout` passed) the
//!   device's presence is sent and the outbox is flushed through its window, and from then on
//!   the outbox is flushed whenever an entry is queued, answered or due. A WebSocket ping goes out
//!   every heartbeat interval (the smaller of the configured one and the server's
//!   `heartbeat_ms`); when nothing at all arrives within the heartbeat timeout after a ping the
//!   link is declared dead and dropped.
//!
//! - **NeedsSignIn**: the token provider failed (other than with a network error), the server
//!   refused a token the provider was just asked to refresh, or the `hello` names another user
//!   than the account's (the socket is closed before anything is sent). No attempt is made until
//!   the app calls `network_available()` or changes `set_online`.
//!
//! - **StorageFull**: what the server sent could not be stored because the store is out of space
//!   (`SQLITE_FULL`: the disk is full, or the database reached `max_store_bytes`). The session
//!   ends and the next attempt waits `storage_full_delay` (a minute) instead of the usual
//!   backoff — at once it would only download the same events to fail again — or until the app
//!   calls `network_available()`.
//!
//! When a session ends, whatever the outbox had on the wire goes back to waiting (it is sent
//! again with the same idempotency keys), remote typing indicators are cleared, and the loop
//! goes to Waiting.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use roam_proto::{
    close, ClientFrame, Envelope, ErrorBody, ErrorCode, Mutation, RoomCursor, ServerFrame,
    SubscribeResult, PROTOCOL_VERSION,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::backoff::{Backoff, Jitter};
use crate::context::{Context, SessionCmd, Want};
use crate::db::reads;
use crate::inflate::{Inflater, Violation, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES};
use crate::listeners::AppEvent;
use crate::metrics::Metrics;
use crate::model::ConnectionState;
use crate::{http, outbox, sync};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Events applied per transaction at most.
const MAX_BATCH: usize = 1024;

/// Why a connection attempt failed.
#[derive(Debug)]
struct ConnectFailure {
    reason: String,
    /// Ask the token provider for a fresh token next time.
    refresh: bool,
    /// The server asked to wait at least this long.
    retry_after: Option<Duration>,
    /// Trying again cannot help until the app signs in again.
    sign_in: bool,
}

impl ConnectFailure {
    fn network(reason: impl Into<String>) -> Self {
        ConnectFailure {
            reason: reason.into(),
            refresh: false,
            retry_after: None,
            sign_in: false,
        }
    }

    fn sign_in(reason: impl Into<String>) -> Self {
        ConnectFailure {
            reason: reason.into(),
            refresh: true,
            retry_after: None,
            sign_in: true,
        }
    }
}

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The app asked to go offline or shut down.
    Stopped,
    /// The server closed with `4001`.
    TokenExpired,
    /// The link broke or the server closed it.
    Lost(String),
    /// The store is out of space: what the server sends cannot be kept.
    StorageFull(String),
    /// The server sent more than the protocol allows (see [`crate::inflate`]): the next
    /// connection waits a backoff that keeps growing while this repeats.
    Violation(String),
}

/// How a session ends when storing what the server sent failed.
fn store_failed(err: crate::Error, what: &str) -> End {
    if err.is_storage_full() {
        End::StorageFull(format!("{what}: {err}"))
    } else {
        End::Lost(format!("{what}: {err}"))
    }
}

/// The connection loop of a client; returns on shutdown.
#[tracing::instrument(skip_all, fields(user = %ctx.me))]
pub(crate) async fn run(ctx: Arc<Context>) {
    let mut want = ctx.want.subscribe();
    let rc = ctx.config.reconnect;
    let mut backoff = Backoff::new(
        rc.initial_delay,
        rc.max_delay,
        Jitter::Randomize(rc.randomization_factor),
    );
    let mut refresh = false;
    loop {
        let w = *want.borrow_and_update();
        match w {
            Want::Shutdown => break,
            Want::Offline => {
                ctx.set_connection_state(ConnectionState::Offline);
                if want.changed().await.is_err() {
                    break;
                }
                continue;
            }
            Want::Online => {}
        }
        ctx.set_connection_state(ConnectionState::Connecting);
        Metrics::inc(&ctx.metrics.connect_attempts);
        let mut retry_after = None;
        let attempt = tokio::select! {
            attempt = connect(&ctx, refresh) => attempt,
            _ = until_not_online(&mut want) => continue,
        };
        match attempt {
            Ok((ws, heartbeat)) => {
                refresh = false;
                Metrics::inc(&ctx.metrics.connections);
                ctx.set_connection_state(ConnectionState::Connected);
                tracing::info!("connected");
                let end = Session::run(&ctx, ws, heartbeat, &mut want).await;
                end_session(&ctx);
                // A connection that reached `hello` starts the delays over, unless the server
                // broke the protocol: reconnecting at once would only fetch the same again.
                if !matches!(end, End::Violation(_)) {
                    backoff.reset();
                }
                match end {
                    End::Stopped => continue,
                    End::TokenExpired => {
                        tracing::info!("token expired; reconnecting with a fresh one");
                        refresh = true;
                    }
                    End::Lost(reason) => tracing::info!(%reason, "connection lost"),
                    End::Violation(reason) => {
                        tracing::warn!(%reason, "the server broke the protocol; connection closed")
                    }
                    End::StorageFull(reason) => {
                        // Reconnecting at once would download the same events only to fail
                        // again: wait long, unless the app says space was freed.
                        let delay = ctx.config.reconnect.storage_full_delay;
                        tracing::warn!(%reason, ?delay, "the store is full; waiting before connecting again");
                        let waiting = pause(&ctx, &mut want, Some(delay), || {
                            ctx.set_connection_state(ConnectionState::StorageFull {
                                retry_in: delay,
                            })
                        });
                        if !waiting.await {
                            break;
                        }
                        continue;
                    }
                }
            }
            Err(failure) if failure.sign_in => {
                refresh = true;
                // Until the app signs in again (it calls `network_available`).
                if !pause(&ctx, &mut want, None, || {
                    ctx.set_needs_sign_in(failure.reason)
                })
                .await
                {
                    break;
                }
                continue;
            }
            Err(failure) => {
                tracing::info!(reason = %failure.reason, "connection attempt failed");
                refresh = failure.refresh;
                retry_after = failure.retry_after;
            }
        }
        if *want.borrow() != Want::Online {
            continue;
        }
        let delay = backoff.next_delay().max(retry_after.unwrap_or_default());
        let waiting = pause(&ctx, &mut want, Some(delay), || {
            ctx.set_connection_state(ConnectionState::Waiting { retry_in: delay })
        });
        if !waiting.await {
            break;
        }
    }
    ctx.set_connection_state(ConnectionState::Offline);
}

/// Waits before the next connection attempt: until `delay` has passed (with `None`, for as
/// long as it takes), the app says the network is back (`network_available`), or what the app
/// wants changes. `announce` tells the app why it waits; it runs once the wait already listens
/// for `network_available`, so a call made in answer to it is not missed. False when the client
/// is gone.
async fn pause(
    ctx: &Context,
    want: &mut watch::Receiver<Want>,
    delay: Option<Duration>,
    announce: impl FnOnce(),
) -> bool {
    let notified = ctx.network_available.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    announce();
    let elapsed = async {
        match delay {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = elapsed => true,
        _ = notified => {
            tracing::debug!("network available: trying again now");
            true
        }
        changed = want.changed() => changed.is_ok(),
    }
}

/// What the task behind `rx` answered (nothing if it is gone, or without one).
async fn wait<T: Default>(rx: &mut Option<oneshot::Receiver<T>>) -> T {
    match rx {
        Some(rx) => rx.await.unwrap_or_default(),
        None => T::default(),
    }
}

/// Resolves when the app no longer wants to be online.
async fn until_not_online(want: &mut watch::Receiver<Want>) {
    loop {
        if want.changed().await.is_err() || *want.borrow() != Want::Online {
            return;
        }
    }
}

fn end_session(ctx: &Context) {
    ctx.set_session(None);
    ctx.set_recovered(false);
    let back = ctx.outbox.lock().on_disconnect();
    if back > 0 {
        tracing::debug!(entries = back, "in-flight mutations will be sent again");
    }
    for room in ctx.typing.clear_remote() {
        ctx.emit(AppEvent::Typing {
            room,
            users: Vec::new(),
        });
    }
    if let Some(router) = ctx.collab() {
        router.on_disconnected();
    }
}

/// Opens the socket and waits for `hello`. Returns the socket and the heartbeat interval.
async fn connect(ctx: &Context, refresh: bool) -> Result<(Ws, Duration), ConnectFailure> {
    let token = match ctx.tokens.token(refresh).await {
        Ok(token) => token,
        // A provider that cannot reach its own backend says so with a network error: that is
        // retried like any connection failure. Anything else means there is no sign-in.
        Err(crate::Error::Network(reason)) => {
            return Err(ConnectFailure {
                reason: format!("no token: {reason}"),
                refresh: true,
                retry_after: None,
                sign_in: false,
            })
        }
        Err(e) => return Err(ConnectFailure::sign_in(format!("no token: {e}"))),
    };
    let base = http::base_url(&ctx.config.server_url)
        .map_err(|e| ConnectFailure::network(e.to_string()))?;
    let mut url = http::ws_url(&base).map_err(|e| ConnectFailure::network(e.to_string()))?;
    // Large frames (catch-up pages, documents) then come compressed.
    url.set_query(Some("compress=deflate"));
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectFailure::network(e.to_string()))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ConnectFailure::sign_in("the token is not a valid header value"))?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    // No message is read past the largest the server sends (compressed or not); a text frame
    // is held to the frame limit when it is read (`classify`).
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let attempt = async {
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
            .await
            .map_err(|e| handshake_failure(e, refresh))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    Metrics::add(&ctx.metrics.bytes_received, text.len() as u64);
                    Metrics::inc(&ctx.metrics.frames_received);
                    match serde_json::from_str::<Envelope<ServerFrame>>(&text) {
                        Ok(Envelope {
                            frame:
                                ServerFrame::Hello {
                                    user, heartbeat_ms, ..
                                },
                            ..
                        }) => {
                            if user != ctx.me {
                                // Nothing of this account may be sent as another user: close
                                // before the first subscribe or mutation.
                                tracing::error!(server_user = %user, "the token belongs to another user than this database");
                                let _ = ws
                                    .close(Some(CloseFrame {
                                        code: CloseCode::Normal,
                                        reason: "wrong account".into(),
                                    }))
                                    .await;
                                return Err(ConnectFailure::sign_in(format!(
                                    "the token is for user {user}, this client's account is {}",
                                    ctx.me
                                )));
                            }
                            let hb = ctx
                                .config
                                .heartbeat
                                .interval
                                .min(Duration::from_millis(heartbeat_ms.max(1000)));
                            return Ok((ws, hb));
                        }
                        _ => return Err(ConnectFailure::network("the first frame was not hello")),
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code));
                    return Err(ConnectFailure {
                        reason: format!("closed before hello ({code:?})"),
                        refresh: code == Some(close::TOKEN_EXPIRED),
                        retry_after: None,
                        sign_in: false,
                    });
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(ConnectFailure::network(e.to_string())),
                None => return Err(ConnectFailure::network("closed before hello")),
            }
        }
    };
    match tokio::time::timeout(ctx.config.connect_timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(ConnectFailure::network("timed out")),
    }
}

/// A refused handshake. A 401 for a token the provider was asked to refresh means the account
/// needs a new sign-in; the first 401 only asks for a fresh token.
fn handshake_failure(err: WsError, refreshed: bool) -> ConnectFailure {
    match &err {
        WsError::Http(resp) if resp.status().as_u16() == 401 && refreshed => {
            ConnectFailure::sign_in("the server refused a freshly issued token (HTTP 401)")
        }
        WsError::Http(resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            ConnectFailure {
                reason: format!("handshake refused with HTTP {status}"),
                refresh: status == 401,
                retry_after,
                sign_in: false,
            }
        }
        _ => ConnectFailure::network(err.to_string()),
    }
}

/// One item read from the socket.
enum Incoming {
    Frame(Box<ServerFrame>),
    Alive,
    End(End),
}

/// One live connection.
struct Session<'a> {
    ctx: &'a Arc<Context>,
    sink: SplitSink<Ws, Message>,
    /// Subscribe frames awaiting their ack: frame id → rooms.
    subscribes: HashMap<String, Vec<String>>,
    /// Rooms whose `caught_up` has not arrived.
    catching_up: HashSet<String>,
    /// Rooms re-subscribed after a gap, until their ack.
    resubscribing: HashSet<String>,
    recovered: bool,
    /// The account's rooms and read markers have been read from the server (part of recovery).
    account_loaded: bool,
    next_id: u64,
    /// Frames to send with the next flush.
    outgoing: Vec<ClientFrame>,
    /// `collab_sync` frames awaiting their answer: frame id → (room, doc).
    collab_syncs: HashMap<String, (String, String)>,
}

impl<'a> Session<'a> {
    async fn run(
        ctx: &'a Arc<Context>,
        ws: Ws,
        heartbeat: Duration,
        want: &mut watch::Receiver<Want>,
    ) -> End {
        let (sink, mut stream) = ws.split();
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
        ctx.set_session(Some(cmd_tx));
        let mut s = Session {
            ctx,
            sink,
            subscribes: HashMap::new(),
            catching_up: HashSet::new(),
            resubscribing: HashSet::new(),
            recovered: false,
            account_loaded: false,
            next_id: 0,
            outgoing: Vec::new(),
            collab_syncs: HashMap::new(),
        };
        match s.loop_(&mut stream, heartbeat, want, &mut cmd_rx).await {
            Ok(end) | Err(end) => {
                if end == End::Stopped {
                    let _ = s
                        .sink
                        .send(Message::Close(Some(CloseFrame {
                            code: CloseCode::Normal,
                            reason: "client going offline".into(),
                        })))
                        .await;
                }
                end
            }
        }
    }

    async fn loop_(
        &mut self,
        stream: &mut SplitStream<Ws>,
        heartbeat: Duration,
        want: &mut watch::Receiver<Want>,
        cmd_rx: &mut mpsc::UnboundedReceiver<SessionCmd>,
    ) -> Result<End, End> {
        self.subscribe_all()?;
        if let Some(router) = self.ctx.collab() {
            for (room, doc) in router.open_docs() {
                self.collab_sync(room, doc);
            }
        }
        self.flush_sink().await?;
        // Reset rooms whose reload an earlier session or process did not finish.
        match sync::pending_reloads(self.ctx) {
            Ok(rooms) => {
                for room in rooms {
                    tokio::spawn(sync::reload_room(self.ctx.clone(), room));
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot read the rooms still to reload"),
        }
        // The account's rooms and read markers, as changed on other devices while this one was
        // away, come over REST alongside the catch-up; recovery waits for them (a failure is
        // logged and does not hold it up).
        let mut account = Some(self.load_account());
        let timeout = self.ctx.config.heartbeat.timeout;
        let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pong_deadline: Option<Instant> = None;
        let recovery_deadline = Instant::now() + self.ctx.config.recovery_timeout;
        // A compressed message being read: its frames are handled [`MAX_BATCH`] at a time, and
        // the socket is read again only once it is over.
        let mut inflating: Option<Inflater> = None;
        loop {
            let outbox_deadline = if self.recovered {
                self.ctx.outbox.lock().next_deadline(Instant::now())
            } else {
                None
            };
            tokio::select! {
                changed = want.changed() => {
                    if changed.is_err() || *want.borrow() != Want::Online {
                        return Ok(End::Stopped);
                    }
                }
                msg = stream.next(), if inflating.is_none() => {
                    pong_deadline = None;
                    let mut batch = Vec::new();
                    classify(&self.ctx.metrics, msg, &mut batch, &mut inflating);
                    read_ready(&self.ctx.metrics, stream, &mut inflating, &mut batch);
                    self.handle_batch(batch).await?;
                }
                () = std::future::ready(()), if inflating.is_some() => {
                    let mut batch = Vec::new();
                    read_ready(&self.ctx.metrics, stream, &mut inflating, &mut batch);
                    self.handle_batch(batch).await?;
                }
                cmd = cmd_rx.recv() => match cmd {
                    Some(SessionCmd::Frame(frame)) => self.send(frame).await?,
                    Some(SessionCmd::Subscribe(rooms)) => {
                        self.subscribe_rooms(rooms)?;
                        self.flush_sink().await?;
                    }
                    Some(SessionCmd::CollabSync { room, doc }) => {
                        self.collab_sync(room, doc);
                        self.flush_sink().await?;
                    }
                    Some(SessionCmd::CheckLink) => {
                        // Back from the background: find out now whether the link still works
                        // instead of at the next heartbeat.
                        if pong_deadline.is_none() {
                            pong_deadline = Some(Instant::now() + timeout);
                            self.sink
                                .send(Message::Ping(Vec::new().into()))
                                .await
                                .map_err(|e| End::Lost(e.to_string()))?;
                        }
                    }
                    None => return Ok(End::Stopped),
                },
                _ = self.ctx.outbox_wakeup.notified(), if self.recovered => {
                    self.flush_outbox().await?;
                }
                _ = ticker.tick() => {
                    if pong_deadline.is_none() {
                        pong_deadline = Some(Instant::now() + timeout);
                        self.sink
                            .send(Message::Ping(Vec::new().into()))
                            .await
                            .map_err(|e| End::Lost(e.to_string()))?;
                    }
                }
                _ = sleep_until(pong_deadline.unwrap_or_else(Instant::now)), if pong_deadline.is_some() => {
                    return Ok(End::Lost("no pong within the heartbeat timeout".into()));
                }
                _ = sleep_until(outbox_deadline.unwrap_or_else(Instant::now)), if outbox_deadline.is_some() => {
                    let expired = self.ctx.outbox.lock().expire(Instant::now());
                    for (id, pos) in expired {
                        tracing::debug!(entry = %id, "no answer in time; will resend");
                        outbox::note_attempt(self.ctx, &id, pos);
                    }
                    self.flush_outbox().await?;
                }
                rooms = wait(&mut account), if account.is_some() => {
                    account = None;
                    if !rooms.is_empty() {
                        tracing::info!(rooms = rooms.len(), "following rooms joined elsewhere");
                        self.subscribe_rooms(rooms)?;
                        self.flush_sink().await?;
                    }
                    self.account_loaded = true;
                    self.maybe_recovered().await?;
                }
                _ = sleep_until(recovery_deadline), if !self.recovered => {
                    // Late answers are still handled when they come; only the outbox stops
                    // waiting for them.
                    tracing::warn!(rooms = self.catching_up.len(), "recovery did not finish in time; flushing the outbox anyway");
                    self.finish_recovery().await?;
                }
            }
        }
    }

    /// Starts reading the account's rooms and read markers; the receiver gets the rooms to
    /// start following when that is over.
    fn load_account(&self) -> oneshot::Receiver<Vec<String>> {
        let (done, rx) = oneshot::channel();
        let ctx = Arc::clone(self.ctx);
        tokio::spawn(async move {
            let follow = match sync::load_account(&ctx).await {
                Ok(follow) => follow,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot load the account's rooms and read markers");
                    Vec::new()
                }
            };
            let _ = done.send(follow);
        });
        rx
    }

    fn frame_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    /// Queues a frame on the sink without flushing.
    async fn feed(&mut self, frame: ClientFrame) -> Result<(), End> {
        let text = serde_json::to_string(&Envelope::new(frame))
            .map_err(|e| End::Lost(format!("cannot encode a frame: {e}")))?;
        Metrics::add(&self.ctx.metrics.bytes_sent, text.len() as u64);
        Metrics::inc(&self.ctx.metrics.frames_sent);
        self.sink
            .feed(Message::text(text))
            .await
            .map_err(|e| End::Lost(e.to_string()))
    }

    /// Sends the queued frames.
    async fn flush_sink(&mut self) -> Result<(), End> {
        for frame in std::mem::take(&mut self.outgoing) {
            self.feed(frame).await?;
        }
        self.sink
            .flush()
            .await
            .map_err(|e| End::Lost(e.to_string()))
    }

    async fn send(&mut self, frame: ClientFrame) -> Result<(), End> {
        self.feed(frame).await?;
        self.flush_sink().await
    }

    /// Queued subscribe frames, sent by the next flush.
    fn subscribe_all(&mut self) -> Result<(), End> {
        let (rooms, inbox) = self
            .ctx
            .db
            .read(|c| Ok((reads::subscriptions(c)?, reads::kv_u64(c, "inbox_seq")?)))
            .map_err(|e| End::Lost(format!("cannot read the cursors: {e}")))?;
        self.pending_subscribe(rooms, Some(inbox));
        Ok(())
    }

    /// Queues a `collab_sync` of an open document with its state vector (sent by the next
    /// flush); nothing when the document is not open.
    fn collab_sync(&mut self, room: String, doc: String) {
        let Some(router) = self.ctx.collab() else {
            return;
        };
        let Some(sv) = router.state_vector(&room, &doc) else {
            return;
        };
        let id = self.frame_id("c");
        self.collab_syncs
            .insert(id.clone(), (room.clone(), doc.clone()));
        self.outgoing.push(ClientFrame::CollabSync {
            id,
            room,
            doc,
            state_vector: roam_proto::collab::encode_base64(&sv),
        });
    }

    fn subscribe_rooms(&mut self, rooms: Vec<String>) -> Result<(), End> {
        let cursors = self
            .ctx
            .db
            .read(|c| {
                rooms
                    .iter()
                    .map(|r| {
                        Ok(RoomCursor {
                            room: r.clone(),
                            since: reads::cursor(c, r)?,
                        })
                    })
                    .collect::<crate::Result<Vec<_>>>()
            })
            .map_err(|e| End::Lost(format!("cannot read the cursors: {e}")))?;
        self.pending_subscribe(cursors, None);
        Ok(())
    }

    fn pending_subscribe(&mut self, rooms: Vec<RoomCursor>, inbox_since: Option<u64>) {
        let mut chunks: Vec<Vec<RoomCursor>> = rooms
            .chunks(roam_proto::validate::MAX_ROOMS_PER_SUBSCRIBE)
            .map(<[RoomCursor]>::to_vec)
            .collect();
        if chunks.is_empty() {
            if inbox_since.is_none() {
                return;
            }
            chunks.push(Vec::new());
        }
        for (i, chunk) in chunks.into_iter().enumerate() {
            let id = self.frame_id("s");
            let names: Vec<String> = chunk.iter().map(|c| c.room.clone()).collect();
            self.catching_up.extend(names.iter().cloned());
            self.subscribes.insert(id.clone(), names);
            let frame = ClientFrame::Subscribe {
                id,
                rooms: chunk,
                inbox_since: if i == 0 { inbox_since } else { None },
            };
            self.outgoing.push(frame);
        }
    }

    /// Handles what arrived. Consecutive events and outbox acks are applied in one transaction
    /// (see [`sync::apply`]); any other frame is handled after the ones before it are stored.
    /// The outbox window is refilled and the socket flushed once, at the end.
    async fn handle_batch(&mut self, batch: Vec<Incoming>) -> Result<(), End> {
        let mut items: Vec<sync::Item> = Vec::new();
        let mut acked = false;
        for item in batch {
            match item {
                Incoming::Frame(frame) => match *frame {
                    ServerFrame::Event(ev) => items.push(sync::Item::Event(ev)),
                    ServerFrame::Ack { id, result }
                        if !self.subscribes.contains_key(&id)
                            && !self.collab_syncs.contains_key(&id) =>
                    {
                        let entry = self.ctx.outbox.lock().on_ack(&id);
                        match entry {
                            Some(entry) => {
                                items.push(sync::Item::Ack(entry, result));
                                acked = true;
                            }
                            None => tracing::trace!(frame = %id, "ack of an untracked frame"),
                        }
                    }
                    frame => {
                        self.apply_items(&mut items)?;
                        self.handle_frame(frame).await?;
                    }
                },
                Incoming::Alive => {}
                Incoming::End(end) => {
                    self.apply_items(&mut items)?;
                    return Err(end);
                }
            }
        }
        self.apply_items(&mut items)?;
        if acked {
            self.flush_outbox().await
        } else {
            self.flush_sink().await
        }
    }

    fn apply_items(&mut self, items: &mut Vec<sync::Item>) -> Result<(), End> {
        if items.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(items);
        let applied = sync::apply(self.ctx, &batch, &self.catching_up, &self.resubscribing)
            .map_err(|e| store_failed(e, "cannot store events and answers"))?;
        for room in applied.gaps {
            if self.resubscribing.insert(room.clone()) {
                self.subscribe_rooms(vec![room])?;
            }
        }
        Ok(())
    }

    async fn handle_frame(&mut self, frame: ServerFrame) -> Result<(), End> {
        match frame {
            ServerFrame::Ack { id, result } => {
                // Outbox acks are taken by `handle_batch`; this is a subscription's or a
                // `collab_sync`'s.
                if let Some(rooms) = self.subscribes.remove(&id) {
                    self.on_subscribed(rooms, result).await?;
                } else if let Some((room, doc)) = self.collab_syncs.remove(&id) {
                    match serde_json::from_value::<roam_proto::CollabSync>(result) {
                        Ok(answer) => {
                            if let Some(router) = self.ctx.collab() {
                                router.on_synced(answer);
                            }
                        }
                        Err(err) => {
                            tracing::warn!(%room, %doc, error = %err, "unreadable collab_sync answer")
                        }
                    }
                }
            }
            ServerFrame::Error {
                id: Some(id),
                error,
            } => self.on_error(id, error).await?,
            ServerFrame::Error { id: None, error } => {
                tracing::warn!(code = error.code.as_str(), message = %error.message, "the server could not read a frame");
            }
            ServerFrame::Event(_) => {}
            ServerFrame::CollabUpdate(update) => {
                if let Some(router) = self.ctx.collab() {
                    let (room, doc) = (update.room.clone(), update.doc.clone());
                    if router.on_update(update) {
                        tracing::debug!(%room, %doc, "gap in a collaborative document's updates; syncing again");
                        self.collab_sync(room, doc);
                    }
                }
            }
            ServerFrame::Awareness(update) => {
                if let Some(router) = self.ctx.collab() {
                    router.on_awareness(update);
                }
            }
            ServerFrame::CaughtUp { room, seq } => {
                tracing::debug!(%room, seq, "caught up");
                self.catching_up.remove(&room);
                self.maybe_recovered().await?;
            }
            ServerFrame::Unsubscribed { room, reason } => {
                tracing::info!(%room, %reason, "unsubscribed by the server");
                self.catching_up.remove(&room);
                if let Err(err) = sync::apply_unsubscribed(self.ctx, &room, &reason) {
                    tracing::error!(error = %err, "cannot store an unsubscription");
                }
                self.maybe_recovered().await?;
            }
            ServerFrame::Typing { room, user, typing } => {
                if user != self.ctx.me {
                    if let Some(users) =
                        self.ctx.typing.remote(&room, &user, typing, Instant::now())
                    {
                        self.ctx.emit(AppEvent::Typing { room, users });
                    }
                }
            }
            ServerFrame::PresenceState { presences, .. }
            | ServerFrame::PresenceDiff { presences, .. } => {
                for p in &presences {
                    if let Err(err) = sync::apply_presence(self.ctx, p) {
                        tracing::error!(error = %err, "cannot store presence");
                    }
                }
            }
            ServerFrame::Notification(n) => {
                if let Err(err) = sync::apply_notification(self.ctx, &n) {
                    tracing::error!(error = %err, "cannot store a notification");
                }
            }
            ServerFrame::Unread { count } => {
                if let Err(err) = sync::apply_unread(self.ctx, count) {
                    tracing::error!(error = %err, "cannot store the unread count");
                }
            }
            ServerFrame::ReadMarker(marker) => {
                if let Err(err) = sync::apply_read_marker(self.ctx, &marker) {
                    tracing::error!(error = %err, "cannot store a read marker");
                }
            }
            ServerFrame::Membership(change) => {
                if let Err(err) = sync::apply_membership(self.ctx, &change) {
                    tracing::error!(error = %err, "cannot store a membership change");
                }
            }
            ServerFrame::Hello { .. } | ServerFrame::Pong { .. } => {}
        }
        Ok(())
    }

    async fn on_subscribed(
        &mut self,
        rooms: Vec<String>,
        result: serde_json::Value,
    ) -> Result<(), End> {
        for r in &rooms {
            self.resubscribing.remove(r);
        }
        match serde_json::from_value::<SubscribeResult>(result) {
            Ok(result) => {
                let answered: HashSet<&str> =
                    result.rooms.iter().map(|r| r.room.as_str()).collect();
                for r in rooms.iter().filter(|r| !answered.contains(r.as_str())) {
                    self.catching_up.remove(r);
                }
                match sync::apply_subscribed(self.ctx, &result) {
                    Ok(done) => {
                        for r in &result.rooms {
                            if !done.catching_up.contains(&r.room) {
                                self.catching_up.remove(&r.room);
                            }
                        }
                        for (room, _) in done.resets {
                            tokio::spawn(sync::reload_room(self.ctx.clone(), room));
                        }
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "cannot store a subscription result");
                        return Err(store_failed(err, "cannot store a subscription result"));
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "unreadable subscribe ack");
                for r in &rooms {
                    self.catching_up.remove(r);
                }
            }
        }
        self.maybe_recovered().await
    }

    async fn on_error(&mut self, id: String, error: ErrorBody) -> Result<(), End> {
        if let Some((room, doc)) = self.collab_syncs.remove(&id) {
            tracing::warn!(%room, %doc, code = error.code.as_str(), message = %error.message, "collab_sync refused");
            if let Some(router) = self.ctx.collab() {
                router.on_sync_failed(&room, &doc, &error);
            }
            if error.code.is_transient() {
                // Followed again once the server is willing; the connection may be gone by
                // then (a new one syncs every open document anyway).
                let delay = Duration::from_millis(error.retry_after_ms.unwrap_or(1000));
                let ctx = Arc::clone(self.ctx);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    ctx.send(SessionCmd::CollabSync { room, doc });
                });
            }
            return Ok(());
        }
        if let Some(rooms) = self.subscribes.remove(&id) {
            tracing::warn!(code = error.code.as_str(), message = %error.message, "subscribe refused");
            for r in &rooms {
                self.catching_up.remove(r);
                self.resubscribing.remove(r);
            }
            return self.maybe_recovered().await;
        }
        if error.code == ErrorCode::OutOfOrder {
            // Its predecessor failed or was lost: it is sent again, in order, once the
            // predecessor has been.
            let entry = self.ctx.outbox.lock().on_out_of_order(&id);
            tracing::debug!(frame = %id, ?entry, "out of order; will resend after its predecessor");
            return Ok(());
        }
        let transient = error.code.is_transient() || error.code == ErrorCode::TokenExpired;
        if transient {
            let retry_after = error.retry_after_ms.map(Duration::from_millis);
            let entry = self
                .ctx
                .outbox
                .lock()
                .on_transient(&id, retry_after, Instant::now());
            match entry {
                Some((entry, pos)) => {
                    tracing::debug!(entry = %entry, code = error.code.as_str(), ?retry_after, "transient failure; will retry");
                    outbox::note_attempt(self.ctx, &entry, pos);
                }
                None => {
                    tracing::debug!(frame = %id, code = error.code.as_str(), "transient error for an untracked frame")
                }
            }
            return Ok(());
        }
        let entry = self.ctx.outbox.lock().on_permanent(&id);
        match entry {
            Some(entry) => {
                if let Err(err) = outbox::fail(self.ctx, &entry, &error) {
                    tracing::error!(error = %err, "cannot store an outbox failure");
                }
                self.flush_outbox().await
            }
            None => {
                tracing::debug!(frame = %id, code = error.code.as_str(), message = %error.message, "error for an untracked frame");
                Ok(())
            }
        }
    }

    async fn maybe_recovered(&mut self) -> Result<(), End> {
        if !self.recovered
            && self.account_loaded
            && self.subscribes.is_empty()
            && self.catching_up.is_empty()
        {
            self.finish_recovery().await?;
        }
        Ok(())
    }

    async fn finish_recovery(&mut self) -> Result<(), End> {
        self.recovered = true;
        tracing::debug!("recovery complete");
        let status = self.ctx.presence.status();
        let id = self.frame_id("p");
        self.outgoing.push(ClientFrame::Mutate {
            id,
            key: uuid::Uuid::now_v7().to_string(),
            after: None,
            mutation: Mutation::SetPresence { status },
        });
        self.flush_outbox().await?;
        // Synced from here on: caught up, and the outbox window is on the wire.
        self.ctx.set_recovered(true);
        Ok(())
    }

    /// Fills the outbox window and sends.
    async fn flush_outbox(&mut self) -> Result<(), End> {
        if !self.recovered {
            return self.flush_sink().await;
        }
        let ctx = self.ctx;
        let out = ctx.outbox.lock().fill(Instant::now());
        for o in out {
            if o.retry {
                Metrics::inc(&ctx.metrics.retries);
            } else if matches!(o.mutation, Mutation::SendMessage { .. }) {
                Metrics::inc(&ctx.metrics.messages_sent);
            }
            self.outgoing.push(ClientFrame::Mutate {
                id: o.frame_id,
                key: o.key,
                after: o.after,
                mutation: o.mutation,
            });
        }
        self.flush_sink().await
    }
}

/// Reads what is ready without waiting, up to [`MAX_BATCH`] items: the rest of the compressed
/// message being read first, then further messages while the socket has them. Stops at the end
/// of the session.
fn read_ready(
    metrics: &Metrics,
    stream: &mut SplitStream<Ws>,
    inflating: &mut Option<Inflater>,
    out: &mut Vec<Incoming>,
) {
    loop {
        if let Some(message) = inflating.as_mut() {
            if !next_frames(metrics, message, out) {
                return;
            }
            *inflating = None;
        }
        if out.len() >= MAX_BATCH || matches!(out.last(), Some(Incoming::End(_))) {
            return;
        }
        match stream.next().now_or_never() {
            Some(m) => classify(metrics, m, out, inflating),
            None => return,
        }
    }
}

/// Turns a socket read into [`Incoming`]s: one per text frame; a compressed binary message (raw
/// DEFLATE of frames separated by `\n`, negotiated with `compress=deflate`) is left in
/// `inflating` for [`next_frames`] to read.
fn classify(
    metrics: &Metrics,
    msg: Option<Result<Message, WsError>>,
    out: &mut Vec<Incoming>,
    inflating: &mut Option<Inflater>,
) {
    match msg {
        Some(Ok(Message::Text(text))) => {
            Metrics::add(&metrics.bytes_received, text.len() as u64);
            if text.len() > MAX_FRAME_BYTES {
                out.push(violation(
                    metrics,
                    Violation::FrameTooLarge {
                        limit: MAX_FRAME_BYTES,
                    },
                ));
            } else {
                out.push(parse_frame(metrics, text.as_bytes()));
            }
        }
        Some(Ok(Message::Binary(packed))) => {
            Metrics::add(&metrics.bytes_received, packed.len() as u64);
            *inflating = Some(Inflater::new(packed));
        }
        Some(Ok(Message::Close(frame))) => {
            let code = frame.as_ref().map(|f| u16::from(f.code));
            if code == Some(close::TOKEN_EXPIRED) {
                out.push(Incoming::End(End::TokenExpired));
            } else {
                out.push(Incoming::End(End::Lost(format!(
                    "closed by the server ({code:?})"
                ))));
            }
        }
        Some(Ok(_)) => out.push(Incoming::Alive),
        Some(Err(WsError::Capacity(err))) => {
            out.push(violation(metrics, Violation::Oversized(err)));
        }
        Some(Err(err)) => out.push(Incoming::End(End::Lost(err.to_string()))),
        None => out.push(Incoming::End(End::Lost("the connection closed".into()))),
    }
}

/// Reads frames of a compressed message until `out` holds [`MAX_BATCH`] items; true once the
/// message is over (read whole, or refused).
fn next_frames(metrics: &Metrics, message: &mut Inflater, out: &mut Vec<Incoming>) -> bool {
    while out.len() < MAX_BATCH {
        match message.next_frame() {
            Ok(Some(frame)) => out.push(parse_frame(metrics, frame)),
            Ok(None) => return true,
            Err(err) => {
                tracing::debug!(inflated = message.inflated(), "compressed message refused");
                out.push(violation(metrics, err));
                return true;
            }
        }
    }
    false
}

/// The end of a session whose server sent what the protocol does not allow.
fn violation(metrics: &Metrics, err: Violation) -> Incoming {
    Metrics::inc(&metrics.protocol_violations);
    Incoming::End(End::Violation(err.to_string()))
}

/// One JSON frame.
fn parse_frame(metrics: &Metrics, text: &[u8]) -> Incoming {
    Metrics::inc(&metrics.frames_received);
    match serde_json::from_slice::<Envelope<ServerFrame>>(text) {
        Ok(env) if env.v == PROTOCOL_VERSION => Incoming::Frame(Box::new(env.frame)),
        Ok(env) => {
            tracing::warn!(v = env.v, "frame of another protocol version ignored");
            Incoming::Alive
        }
        Err(err) => {
            tracing::warn!(error = %err, "unreadable frame ignored");
            Incoming::Alive
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use roam_proto::{EventBody, Message as WireMessage, RoomEvent};
    use tokio_tungstenite::tungstenite::Bytes;

    use super::*;
    use crate::test_alloc::peak_during;

    fn deflate(data: &[u8]) -> Bytes {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).expect("deflate");
        Bytes::from(enc.finish().expect("deflate"))
    }

    fn event_line(seq: u64, body: &str) -> String {
        let ev = RoomEvent {
            room: "general".into(),
            seq,
            at: 1_764_201_600_000,
            actor: "bob".into(),
            body: EventBody::MessageCreated(WireMessage {
                id: format!("m{seq}"),
                room: "general".into(),
                seq,
                sender: "bob".into(),
                body: body.into(),
                reply_to: None,
                created_at: 1_764_201_600_000,
                edited_at: None,
                deleted: false,
                attachment: None,
            }),
        };
        serde_json::to_string(&Envelope::new(ServerFrame::Event(ev))).expect("encode")
    }

    /// What reading a message gave: events and other frames seen, and how the session ended.
    #[derive(Debug, Default)]
    struct Read_ {
        events: u64,
        last_seq: u64,
        frames: u64,
        end: Option<End>,
    }

    fn tally(read: &mut Read_, batch: &mut Vec<Incoming>) {
        for item in batch.drain(..) {
            match item {
                Incoming::Frame(f) => {
                    read.frames += 1;
                    if let ServerFrame::Event(ev) = *f {
                        read.events += 1;
                        read.last_seq = ev.seq;
                    }
                }
                Incoming::Alive => {}
                Incoming::End(end) => read.end = Some(end),
            }
        }
    }

    /// A message as the session reads it: [`MAX_BATCH`] items at a time, each batch handled
    /// (here: counted and dropped) before the next is read.
    fn read_streaming(metrics: &Metrics, msg: Message) -> Read_ {
        let mut read = Read_::default();
        let mut inflating = None;
        let mut batch = Vec::new();
        classify(metrics, Some(Ok(msg)), &mut batch, &mut inflating);
        tally(&mut read, &mut batch);
        while let Some(message) = inflating.as_mut() {
            let over = next_frames(metrics, message, &mut batch);
            assert!(batch.len() <= MAX_BATCH);
            tally(&mut read, &mut batch);
            if over {
                inflating = None;
            }
        }
        read
    }

    /// How the core read a compressed message before the bound (kept to measure against):
    /// inflated whole, up to 64 MiB, and every frame parsed before any was handled.
    fn read_whole_before(metrics: &Metrics, packed: Bytes) -> Read_ {
        const MAX_INFLATED: u64 = 64 * 1024 * 1024;
        let mut out = Vec::new();
        let mut text = String::new();
        let inflated = flate2::read::DeflateDecoder::new(&packed[..])
            .take(MAX_INFLATED + 1)
            .read_to_string(&mut text);
        match inflated {
            Ok(n) if n as u64 <= MAX_INFLATED => {
                out.extend(
                    text.split('\n')
                        .map(|frame| parse_frame(metrics, frame.as_bytes())),
                );
            }
            _ => out.push(Incoming::End(End::Lost("refused".into()))),
        }
        let mut read = Read_::default();
        tally(&mut read, &mut out);
        read
    }

    const MIB: f64 = 1024.0 * 1024.0;

    #[test]
    fn a_deflate_bomb_is_refused_within_a_few_mebibytes() {
        let metrics = Metrics::default();
        // 64 MiB of event frames (the same one over and over): about 64 KB compressed.
        let line = event_line(1, "hello") + "\n";
        let frames = deflate(line.repeat((64 << 20) / line.len()).as_bytes());
        // One 64 MiB line of spaces.
        let spaces = deflate(&vec![b' '; 64 << 20]);
        for (what, packed) in [("small frames", frames), ("one long line", spaces)] {
            let size = packed.len();
            let (read, peak) = peak_during(|| read_streaming(&metrics, Message::Binary(packed)));
            eprintln!(
                "{what}: {size} bytes compressed, peak {:.1} MiB allocated, {} frames read, {:?}",
                peak as f64 / MIB,
                read.frames,
                read.end
            );
            assert!(
                matches!(read.end, Some(End::Violation(_))),
                "{:?}",
                read.end
            );
            assert!(peak < 4 * MAX_FRAME_BYTES, "{what}: peak {peak}");
            assert!(
                read.frames as usize <= MAX_MESSAGE_BYTES / line.len(),
                "{what}"
            );
        }
        assert_eq!(Metrics::get(&metrics.protocol_violations), 2);
    }

    #[test]
    fn a_large_catch_up_page_is_read_and_parsed_in_batches() {
        let metrics = Metrics::default();
        // A page as large as the server sends: 512 events, about 1 MiB of bodies.
        let lines: Vec<String> = (1..=512)
            .map(|seq| event_line(seq, &format!("{seq:>5} {}", "lorem ipsum ".repeat(170))))
            .collect();
        let page = lines.join("\n");
        assert!(page.len() > 1 << 20, "{}", page.len());
        let (read, peak) =
            peak_during(|| read_streaming(&metrics, Message::Binary(deflate(page.as_bytes()))));
        eprintln!(
            "a {:.2} MiB page: peak {:.1} MiB allocated",
            page.len() as f64 / MIB,
            peak as f64 / MIB
        );
        assert!(read.end.is_none(), "{:?}", read.end);
        assert_eq!((read.events, read.last_seq), (512, 512));
        assert!(peak < 4 * page.len(), "peak {peak}");
        assert_eq!(Metrics::get(&metrics.protocol_violations), 0);
    }

    /// Not a check: the figures of the reading before the bound, for comparison
    /// (`cargo test -p roam-core --lib socket::tests::peak_before_and_after -- --ignored --nocapture`).
    #[test]
    #[ignore = "allocates hundreds of MiB"]
    fn peak_before_and_after() {
        let metrics = Metrics::default();
        let line = event_line(1, "hello") + "\n";
        let pong = format!("{}\n", r#"{"v":1,"type":"pong","id":"p"}"#);
        let cases = [
            (
                "64 MiB of event frames",
                deflate(line.repeat((64 << 20) / line.len()).as_bytes()),
            ),
            (
                "64 MiB of pong frames",
                deflate(pong.repeat((64 << 20) / pong.len()).as_bytes()),
            ),
            ("64 MiB of spaces", deflate(&vec![b' '; 64 << 20])),
        ];
        for (what, packed) in cases {
            let size = packed.len();
            let (read, before) = peak_during(|| read_whole_before(&metrics, packed.clone()));
            let (_, after) = peak_during(|| read_streaming(&metrics, Message::Binary(packed)));
            eprintln!(
                "{what} ({size} bytes compressed): before {:.1} MiB ({} frames), after {:.1} MiB",
                before as f64 / MIB,
                read.frames,
                after as f64 / MIB
            );
        }
        let lines: Vec<String> = (1..=512)
            .map(|seq| event_line(seq, &format!("{seq:>5} {}", "lorem ipsum ".repeat(170))))
            .collect();
        let page = deflate(lines.join("\n").as_bytes());
        let (_, before) = peak_during(|| read_whole_before(&metrics, page.clone()));
        let (_, after) = peak_during(|| read_streaming(&metrics, Message::Binary(page)));
        eprintln!(
            "a 512-event page: before {:.1} MiB, after {:.1} MiB",
            before as f64 / MIB,
            after as f64 / MIB
        );
    }

    #[test]
    fn a_text_frame_over_the_limit_is_a_violation() {
        let metrics = Metrics::default();
        let text = format!(
            "{{\"v\":1,\"type\":\"pong\",\"id\":\"{}\"}}",
            "x".repeat(MAX_FRAME_BYTES)
        );
        let read = read_streaming(&metrics, Message::text(text));
        assert!(
            matches!(read.end, Some(End::Violation(_))),
            "{:?}",
            read.end
        );
        // At the limit it is read.
        let text = format!(
            "{{\"v\":1,\"type\":\"pong\",\"id\":\"{}\"}}",
            "x".repeat(MAX_FRAME_BYTES - 40)
        );
        let read = read_streaming(&metrics, Message::text(text));
        assert_eq!((read.frames, read.end), (1, None));
        assert_eq!(Metrics::get(&metrics.protocol_violations), 1);
    }
}
