//! Shared fixtures: a fake Roam server speaking protocol v1 over real loopback WebSockets, client
//! configuration with short timings, listener collectors and bounded waits.
//!
//! The fake server keeps a small in-memory model (room event logs, messages, documents,
//! idempotency results) so that replays, recovery and dedup behave as the protocol says, and it
//! has knobs to misbehave on purpose: refuse connections, rate-limit or forbid mutations, hold
//! acks and release them in reverse order, drop the socket after N mutations, duplicate replayed
//! events, answer a subscription with `reset`.

#![allow(dead_code)]
// A test server: large error values and frames are fine here.
#![allow(clippy::result_large_err, clippy::large_enum_variant)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use roam_core::{
    Client, ClientConfig, ConnectionState, ConnectionStateListener, DocumentListener,
    DocumentUpdate, HeartbeatConfig, NotificationInfo, NotificationListener, OutboxConfig,
    Presence, PresenceListener, ReconnectConfig, RoomListener, RoomUpdate, StaticToken,
    TypingConfig, TypingListener,
};
use roam_proto::{
    ClientFrame, Document, Envelope, ErrorBody, ErrorCode, EventBody, Member, MemberStatus,
    Message, Mutation, Notification, PresenceStatus, Role, Room, RoomEvent, RoomKind,
    RoomSubscription, ServerFrame, SubscribeResult, SubscriptionStatus,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Upper bound for any wait in the tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Fake server

/// A subscribe frame as received: (rooms with `since`, `inbox_since`).
pub type Subscribed = (Vec<(String, u64)>, Option<u64>);

/// What to send to one connection.
#[derive(Debug)]
enum Out {
    Frame(ServerFrame),
    /// A message as it is (a compressed message, or one that breaks the protocol).
    Raw(WsMessage),
    Close(u16),
    Drop,
}

#[derive(Debug)]
struct Conn {
    tx: mpsc::UnboundedSender<Out>,
    rooms: HashSet<String>,
    /// Collaborative documents followed: (room, doc).
    docs: HashSet<(String, String)>,
    user: String,
}

/// A collaborative document held by the fake server: a real yrs document and its `seq`.
pub struct FakeCollab {
    pub doc: yrs::Doc,
    pub seq: u64,
}

impl std::fmt::Debug for FakeCollab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeCollab")
            .field("seq", &self.seq)
            .finish()
    }
}

impl FakeCollab {
    /// The text `name` as the server holds it.
    pub fn text(&self, name: &str) -> String {
        use yrs::{GetString, ReadTxn, Transact};
        let txn = self.doc.transact();
        txn.get_text(name)
            .map(|t| t.get_string(&txn))
            .unwrap_or_default()
    }
}

fn new_ydoc() -> yrs::Doc {
    yrs::Doc::with_options(yrs::Options {
        offset_kind: yrs::OffsetKind::Utf16,
        ..yrs::Options::default()
    })
}

/// The fake server's state; tests read it and turn its knobs through [`FakeServer::with`].
#[derive(Debug, Default)]
pub struct State {
    /// Event log per room (index i holds seq i + 1).
    pub logs: BTreeMap<String, Vec<RoomEvent>>,
    /// Current messages per room, by id.
    pub messages: HashMap<String, Message>,
    pub docs: HashMap<(String, String), Document>,
    /// Idempotency: key → stored result.
    pub results: HashMap<String, Value>,
    /// Mutations answered from `results`.
    pub replays: usize,
    /// Every mutate frame in arrival order: (key, mutation).
    pub mutations: Vec<(String, Mutation)>,
    /// Mutations applied (first time), in order.
    pub applied: Vec<(String, Mutation)>,
    /// Every subscribe frame.
    pub subscribes: Vec<Subscribed>,
    /// Typing frames received.
    pub typing: Vec<(String, bool)>,
    /// presence.set statuses received.
    pub presence_sets: Vec<PresenceStatus>,
    /// REST request lines received.
    pub http_requests: Vec<String>,
    /// The `If-None-Match` header of each REST request (lower-cased).
    pub if_none_match: Vec<Option<String>>,
    /// Authorization headers of handshakes.
    pub auth_headers: Vec<String>,
    /// WebSocket connections accepted.
    pub connections: usize,
    /// Handshakes attempted (accepted or refused).
    pub attempts: Vec<std::time::Instant>,
    pub notifications: Vec<Notification>,
    pub unread: u64,

    /// Drop TCP connections right after accepting them.
    pub refuse: bool,
    /// When a send with this body arrives for the first time, refuse every mutation with
    /// `rate_limited` for this many milliseconds (like an emptied token bucket).
    pub rate_limit_once: HashMap<String, u64>,
    /// Until when mutations are refused.
    pub limited_until: Option<std::time::Instant>,
    /// Mutations refused with `rate_limited`.
    pub rate_limited: usize,
    /// When each mutate frame arrived (parallel to `mutations`).
    pub mutation_times: Vec<std::time::Instant>,
    /// ETag of the room directory (`GET /v1/rooms`): `"r<number of rooms>"`.
    pub rooms_etag: String,
    /// Mutations on these rooms are `forbidden`.
    pub forbidden_rooms: HashSet<String>,
    /// Hold answers until this many are pending, then release them in reverse order (0 or 1:
    /// answer at once).
    pub ack_batch: usize,
    /// The largest number of mutations seen without an answer sent.
    pub max_outstanding: usize,
    /// On replay, send every event twice and one already-seen event.
    pub duplicate_replay: bool,
    /// Answer the next subscription of these rooms with `reset`.
    pub reset_once: HashSet<String>,
    /// Drop the connection (without answering) after this many more mutations.
    pub drop_after_mutations: Option<usize>,
    /// Do not answer mutations at all.
    pub silent: bool,
    /// Connections that stopped reading and writing (a half-open link).
    pub stalled: HashSet<u64>,
    /// Send the events replayed for a subscription as one compressed message (raw DEFLATE of
    /// the frames joined by `\n`, as the server does with `compress=deflate`).
    pub compress_replay: bool,
    /// Messages sent to every new connection right after `hello`.
    pub on_connect: Vec<WsMessage>,
    /// Collaborative documents by (room, doc).
    pub collab: HashMap<(String, String), FakeCollab>,
    /// `collab_sync` frames received: (room, doc).
    pub collab_syncs: Vec<(String, String)>,
    /// `collab.update` mutations applied (first time), with their decoded sizes.
    pub collab_updates: Vec<usize>,
    /// Do not send the next this many `collab_update` frames (their `seq` is used up: a gap).
    pub drop_collab_frames: usize,
    /// Awareness frames received: (user, state).
    pub awareness: Vec<(String, Option<Value>)>,

    conns: HashMap<u64, Conn>,
    next_conn: u64,
}

impl State {
    fn head(&self, room: &str) -> u64 {
        self.logs.get(room).map_or(0, |l| l.len() as u64)
    }

    /// Appends an event to a room's log and sends it to every subscribed connection.
    fn append(&mut self, room: &str, actor: &str, body: EventBody) -> RoomEvent {
        let seq = self.head(room) + 1;
        let ev = RoomEvent {
            room: room.to_owned(),
            seq,
            at: now_ms(),
            actor: actor.to_owned(),
            body,
        };
        self.logs
            .entry(room.to_owned())
            .or_default()
            .push(ev.clone());
        for c in self.conns.values() {
            if c.rooms.contains(room) {
                let _ = c.tx.send(Out::Frame(ServerFrame::Event(ev.clone())));
            }
        }
        ev
    }

    fn room_record(&self, name: &str, owner: &str) -> Room {
        Room {
            name: name.to_owned(),
            kind: RoomKind::Public,
            title: name.to_owned(),
            metadata: json!({}),
            owner: owner.to_owned(),
            created_by: owner.to_owned(),
            created_at: now_ms(),
            updated_at: now_ms(),
            head_seq: self.head(name),
            member_count: 1,
        }
    }

    /// Creates a room on the server side.
    pub fn create_room(&mut self, name: &str, owner: &str) {
        let room = self.room_record(name, owner);
        self.append(name, owner, EventBody::RoomCreated(room));
    }

    /// A message posted by someone on the server side.
    pub fn post(&mut self, room: &str, sender: &str, body: &str) -> Message {
        let seq = self.head(room) + 1;
        let m = Message {
            id: uuid::Uuid::now_v7().to_string(),
            room: room.to_owned(),
            seq,
            sender: sender.to_owned(),
            body: body.to_owned(),
            reply_to: None,
            created_at: now_ms(),
            edited_at: None,
            deleted: false,
            attachment: None,
        };
        self.messages.insert(m.id.clone(), m.clone());
        self.append(room, sender, EventBody::MessageCreated(m.clone()));
        m
    }

    /// Bodies of a room's messages in seq order.
    pub fn bodies(&self, room: &str) -> Vec<String> {
        let mut ms: Vec<&Message> = self.messages.values().filter(|m| m.room == room).collect();
        ms.sort_by_key(|m| m.seq);
        ms.into_iter().map(|m| m.body.clone()).collect()
    }

    /// Sends a frame to every connection.
    pub fn broadcast(&self, frame: ServerFrame) {
        for c in self.conns.values() {
            let _ = c.tx.send(Out::Frame(frame.clone()));
        }
    }

    /// Drops every connection abruptly (no close frame).
    pub fn drop_all(&mut self) {
        for c in self.conns.values() {
            let _ = c.tx.send(Out::Drop);
        }
    }

    /// Sends a message as it is to every connection.
    pub fn send_raw_all(&self, msg: WsMessage) {
        for c in self.conns.values() {
            let _ = c.tx.send(Out::Raw(msg.clone()));
        }
    }

    /// A new version of a document, put by `user` on the server side.
    pub fn put_document(&mut self, room: &str, doc: &str, user: &str, content: &str) {
        let base_version = self
            .docs
            .get(&(room.to_owned(), doc.to_owned()))
            .map_or(0, |d| d.version);
        let put = Mutation::PutDocument {
            room: room.to_owned(),
            doc: doc.to_owned(),
            base_version,
            content: content.to_owned(),
        };
        let key = uuid::Uuid::now_v7().to_string();
        if let Err(e) = self.apply(user, &key, &put) {
            panic!("put_document: {e:?}");
        }
    }

    /// Closes every connection with a close code.
    pub fn close_all(&mut self, code: u16) {
        for c in self.conns.values() {
            let _ = c.tx.send(Out::Close(code));
        }
    }

    /// Freezes every current connection: nothing is read (so pings get no pong) or written.
    pub fn stall_all(&mut self) {
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        self.stalled.extend(ids);
    }

    /// The server's collaborative document (empty when it has none).
    pub fn collab_text(&self, room: &str, doc: &str, name: &str) -> String {
        self.collab
            .get(&(room.to_owned(), doc.to_owned()))
            .map(|d| d.text(name))
            .unwrap_or_default()
    }

    /// Merges an update into a collaborative document and fans it out to its followers.
    pub fn collab_apply(
        &mut self,
        room: &str,
        doc: &str,
        actor: &str,
        bytes: &[u8],
    ) -> Result<(u64, u64), ErrorBody> {
        use yrs::updates::decoder::Decode;
        use yrs::{ReadTxn, StateVector, Transact};
        let update = yrs::Update::decode_v1(bytes).map_err(|e| {
            ErrorBody::new(ErrorCode::InvalidInput, format!("malformed update: {e}"))
        })?;
        let key = (room.to_owned(), doc.to_owned());
        let d = self
            .collab
            .entry(key.clone())
            .or_insert_with(|| FakeCollab {
                doc: new_ydoc(),
                seq: 0,
            });
        d.doc
            .transact_mut()
            .apply_update(update)
            .map_err(|e| ErrorBody::new(ErrorCode::InvalidInput, format!("update: {e}")))?;
        d.seq += 1;
        let seq = d.seq;
        let size = d
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
            .len() as u64;
        if self.drop_collab_frames > 0 {
            self.drop_collab_frames -= 1;
            return Ok((seq, size));
        }
        let frame = ServerFrame::CollabUpdate(roam_proto::CollabUpdate {
            room: room.to_owned(),
            doc: doc.to_owned(),
            seq,
            actor: actor.to_owned(),
            update: roam_proto::collab::encode_base64(bytes),
        });
        for c in self.conns.values() {
            if c.docs.contains(&key) {
                let _ = c.tx.send(Out::Frame(frame.clone()));
            }
        }
        Ok((seq, size))
    }

    pub fn live_connections(&self) -> usize {
        self.conns.len()
    }

    fn apply(&mut self, user: &str, key: &str, m: &Mutation) -> Result<Value, ErrorBody> {
        if let Some(room) = m.room() {
            if self.forbidden_rooms.contains(room) {
                return Err(ErrorBody::new(
                    ErrorCode::Forbidden,
                    "you are banned from this room",
                ));
            }
        }
        let now = std::time::Instant::now();
        if let Mutation::SendMessage { body, .. } = m {
            if let Some(ms) = self.rate_limit_once.remove(body) {
                self.limited_until = Some(now + Duration::from_millis(ms));
            }
        }
        if let Some(until) = self.limited_until {
            if now < until {
                self.rate_limited += 1;
                let mut e = ErrorBody::new(ErrorCode::RateLimited, "slow down");
                e.retry_after_ms = Some((until - now).as_millis() as u64 + 1);
                return Err(e);
            }
            self.limited_until = None;
        }
        self.applied.push((key.to_owned(), m.clone()));
        match m {
            Mutation::SendMessage {
                room,
                body,
                reply_to,
                id,
                attachment,
            } => {
                if !self.logs.contains_key(room) {
                    return Err(ErrorBody::new(ErrorCode::NotFound, "no such room"));
                }
                let msg = Message {
                    id: id
                        .clone()
                        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
                    room: room.clone(),
                    seq: self.head(room) + 1,
                    sender: user.to_owned(),
                    body: body.clone(),
                    reply_to: reply_to.clone(),
                    created_at: now_ms(),
                    edited_at: None,
                    deleted: false,
                    attachment: attachment.clone(),
                };
                self.messages.insert(msg.id.clone(), msg.clone());
                self.append(room, user, EventBody::MessageCreated(msg.clone()));
                Ok(serde_json::to_value(msg).unwrap_or_default())
            }
            Mutation::EditMessage {
                room,
                message,
                body,
            } => {
                let Some(msg) = self.messages.get_mut(message) else {
                    return Err(ErrorBody::new(ErrorCode::NotFound, "no such message"));
                };
                msg.body = body.clone();
                msg.edited_at = Some(now_ms());
                let msg = msg.clone();
                self.append(room, user, EventBody::MessageEdited(msg.clone()));
                Ok(serde_json::to_value(msg).unwrap_or_default())
            }
            Mutation::DeleteMessage { room, message } => {
                let Some(msg) = self.messages.get_mut(message) else {
                    return Err(ErrorBody::new(ErrorCode::NotFound, "no such message"));
                };
                msg.body = String::new();
                msg.deleted = true;
                let msg = msg.clone();
                self.append(room, user, EventBody::MessageDeleted(msg.clone()));
                Ok(serde_json::to_value(msg).unwrap_or_default())
            }
            Mutation::CreateRoom { room, .. } => {
                if self.logs.contains_key(room) {
                    return Err(ErrorBody::new(ErrorCode::Conflict, "room exists"));
                }
                let r = self.room_record(room, user);
                self.append(room, user, EventBody::RoomCreated(r.clone()));
                Ok(serde_json::to_value(r).unwrap_or_default())
            }
            Mutation::JoinRoom { room } => {
                let member = Member {
                    room: room.clone(),
                    user: user.to_owned(),
                    role: Role::Member,
                    status: MemberStatus::Active,
                    joined_at: now_ms(),
                };
                self.append(room, user, EventBody::MemberJoined(member.clone()));
                Ok(serde_json::to_value(member).unwrap_or_default())
            }
            Mutation::PutDocument {
                room,
                doc,
                base_version,
                content,
            } => {
                let k = (room.clone(), doc.clone());
                let current = self.docs.get(&k).map_or(0, |d| d.version);
                if *base_version != current {
                    let mut e = ErrorBody::new(ErrorCode::VersionConflict, "stale base version");
                    e.current = self.docs.get(&k).cloned();
                    return Err(e);
                }
                let d = Document {
                    room: room.clone(),
                    doc: doc.clone(),
                    version: current + 1,
                    content: content.clone(),
                    updated_by: user.to_owned(),
                    updated_at: now_ms(),
                };
                self.docs.insert(k, d.clone());
                self.append(room, user, EventBody::DocumentUpdated(d.clone()));
                Ok(serde_json::to_value(d).unwrap_or_default())
            }
            Mutation::MarkRead { ids } => {
                let mut unread = 0;
                for n in self.notifications.iter_mut() {
                    if ids.contains(&n.id) {
                        n.read = true;
                    }
                    if !n.read {
                        unread += 1;
                    }
                }
                self.unread = unread;
                Ok(json!({ "unread": unread }))
            }
            Mutation::MarkAllRead {} => {
                for n in self.notifications.iter_mut() {
                    n.read = true;
                }
                self.unread = 0;
                Ok(json!({ "unread": 0 }))
            }
            Mutation::UpdateCollab { room, doc, update } => {
                let bytes = roam_proto::collab::decode_base64(
                    "update",
                    update,
                    roam_proto::collab::MAX_COLLAB_UPDATE_BYTES,
                )
                .map_err(|e| ErrorBody::new(ErrorCode::InvalidInput, e.to_string()))?;
                let (seq, size) = self.collab_apply(room, doc, user, &bytes)?;
                self.collab_updates.push(bytes.len());
                Ok(serde_json::to_value(roam_proto::CollabUpdated {
                    room: room.clone(),
                    doc: doc.clone(),
                    seq,
                    size,
                })
                .unwrap_or_default())
            }
            _ => Ok(json!({})),
        }
    }
}

/// A fake protocol server on 127.0.0.1:0.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
        self.state.lock().drop_all();
    }
}

impl FakeServer {
    pub async fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    serve(stream, st).await;
                });
            }
        });
        FakeServer { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock())
    }

    /// Waits until `f` holds on the server state.
    pub async fn until(&self, what: &str, mut f: impl FnMut(&State) -> bool) {
        let state = self.state.clone();
        eventually(what, move || f(&state.lock())).await;
    }
}

async fn serve(stream: TcpStream, state: Arc<Mutex<State>>) {
    if state.lock().refuse {
        state.lock().attempts.push(std::time::Instant::now());
        drop(stream);
        return;
    }
    // Tell a WebSocket upgrade from a plain REST request by peeking at the request head.
    let mut buf = vec![0u8; 8192];
    let mut head = String::new();
    for _ in 0..200 {
        let Ok(n) = stream.peek(&mut buf).await else {
            return;
        };
        head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
        if head.contains("\r\n\r\n") || n == buf.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if head.contains("upgrade: websocket") {
        serve_ws(stream, state).await;
    } else {
        serve_http(stream, state).await;
    }
}

async fn serve_http(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let line = text.lines().next().unwrap_or_default().to_owned();
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let if_none_match = text.lines().find_map(|l| {
        l.to_lowercase()
            .strip_prefix("if-none-match:")
            .map(|v| v.trim().to_owned())
    });
    let mut etag = None;
    let body = {
        let mut st = state.lock();
        st.http_requests.push(line.clone());
        st.if_none_match.push(if_none_match.clone());
        let route = path.split('?').next().unwrap_or_default();
        let parts: Vec<&str> = route.trim_matches('/').split('/').collect();
        match parts.as_slice() {
            ["v1", "rooms", room, "messages"] => {
                let mut ms: Vec<&Message> =
                    st.messages.values().filter(|m| m.room == *room).collect();
                ms.sort_by_key(|m| std::cmp::Reverse(m.seq));
                json!({ "items": ms.into_iter().take(50).collect::<Vec<_>>() })
            }
            ["v1", "rooms", room] => json!(st.room_record(room, "bob")),
            ["v1", "rooms"] => {
                // The tag changes with the listing.
                st.rooms_etag = format!("\"r{}\"", st.logs.len());
                etag = Some(st.rooms_etag.clone());
                if if_none_match.as_deref() == Some(st.rooms_etag.to_lowercase().as_str()) {
                    Value::Null
                } else {
                    let rooms: Vec<Room> = st
                        .logs
                        .keys()
                        .map(|name| st.room_record(name, "bob"))
                        .collect();
                    json!({ "items": rooms })
                }
            }
            _ => json!({ "items": [] }),
        }
    };
    if body.is_null() {
        let resp = format!(
            "HTTP/1.1 304 Not Modified\r\netag: {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            etag.unwrap_or_default()
        );
        let _ = stream.write_all(resp.as_bytes()).await;
        let _ = stream.shutdown().await;
        return;
    }
    let etag_line = etag.map(|e| format!("etag: {e}\r\n")).unwrap_or_default();
    let body = body.to_string();
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{}content-length: {}\r\nconnection: close\r\n\r\n{}",
        etag_line,
        body.len(),
        body
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn to_text(frame: ServerFrame) -> WsMessage {
    WsMessage::text(serde_json::to_string(&Envelope::new(frame)).unwrap_or_default())
}

/// Raw DEFLATE (RFC 1951) of `data`.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(5));
    enc.write_all(data).expect("deflate");
    enc.finish().expect("deflate")
}

/// Frames as one compressed binary message.
pub fn compressed(frames: &[ServerFrame]) -> WsMessage {
    let text: Vec<String> = frames
        .iter()
        .map(|f| serde_json::to_string(&Envelope::new(f)).unwrap_or_default())
        .collect();
    WsMessage::binary(deflate(text.join("\n").as_bytes()))
}

async fn serve_ws(stream: TcpStream, state: Arc<Mutex<State>>) {
    let st = state.clone();
    // This connection's own header: several clients may connect at once, so the last header
    // the server saw may be another's.
    let header = Arc::new(Mutex::new(None::<String>));
    let mine = header.clone();
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let mut s = st.lock();
        s.attempts.push(std::time::Instant::now());
        if let Some(h) = req.headers().get("authorization") {
            let h = h.to_str().unwrap_or_default().to_owned();
            *mine.lock() = Some(h.clone());
            s.auth_headers.push(h);
        }
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let (conn_id, user) = {
        let mut s = state.lock();
        s.connections += 1;
        s.next_conn += 1;
        let id = s.next_conn;
        s.conns.insert(
            id,
            Conn {
                tx: tx.clone(),
                rooms: HashSet::new(),
                docs: HashSet::new(),
                user: String::new(),
            },
        );
        let user = header
            .lock()
            .as_deref()
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("alice")
            .to_owned();
        if let Some(c) = s.conns.get_mut(&id) {
            c.user = user.clone();
        }
        (id, user)
    };
    let hello = ServerFrame::Hello {
        session: format!("s{conn_id}"),
        user: user.clone(),
        server_time: now_ms(),
        heartbeat_ms: 25_000,
        max_frame_bytes: 1 << 20,
        compression: None,
    };
    if sink.send(to_text(hello)).await.is_err() {
        state.lock().conns.remove(&conn_id);
        return;
    }
    let on_connect = state.lock().on_connect.clone();
    for m in on_connect {
        if sink.send(m).await.is_err() {
            state.lock().conns.remove(&conn_id);
            return;
        }
    }
    let mut held: Vec<ServerFrame> = Vec::new();
    loop {
        if state.lock().stalled.contains(&conn_id) {
            if tx.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let flush_held = !held.is_empty();
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Frame(f)) => {
                    if sink.send(to_text(f)).await.is_err() { break; }
                }
                Some(Out::Raw(m)) => {
                    if sink.send(m).await.is_err() { break; }
                }
                Some(Out::Close(code)) => {
                    let _ = sink.send(WsMessage::Close(Some(CloseFrame { code: CloseCode::from(code), reason: "bye".into() }))).await;
                    // Finish the closing handshake: dropping the socket with the client's
                    // frames unread would reset the connection, and the client could see the
                    // reset before the close frame.
                    let drain = async {
                        while let Some(Ok(m)) = source.next().await {
                            if matches!(m, WsMessage::Close(_)) {
                                break;
                            }
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
                    break;
                }
                Some(Out::Drop) | None => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(100)), if flush_held => {
                while let Some(f) = held.pop() {
                    if sink.send(to_text(f)).await.is_err() { break; }
                }
            }
            msg = source.next() => {
                let Some(Ok(msg)) = msg else { break };
                let WsMessage::Text(text) = msg else { continue };
                let Ok(env) = serde_json::from_str::<Envelope<ClientFrame>>(&text) else {
                    let _ = tx.send(Out::Frame(ServerFrame::Error { id: None, error: ErrorBody::new(ErrorCode::InvalidInput, "unreadable") }));
                    continue;
                };
                let mut answers: Vec<ServerFrame> = Vec::new();
                let mut direct: Vec<ServerFrame> = Vec::new();
                // A compressed message to send after the first `at` frames of `direct`.
                let mut packed: Option<(usize, WsMessage)> = None;
                let mut drop_now = false;
                {
                    let mut s = state.lock();
                    match env.frame {
                        ClientFrame::Subscribe { id, rooms, inbox_since } => {
                            s.subscribes.push((rooms.iter().map(|r| (r.room.clone(), r.since)).collect(), inbox_since));
                            let mut result = Vec::new();
                            let mut replay = Vec::new();
                            for c in &rooms {
                                let head = s.head(&c.room);
                                let status = if !s.logs.contains_key(&c.room) {
                                    SubscriptionStatus::NotFound
                                } else if s.reset_once.remove(&c.room) || c.since > head {
                                    SubscriptionStatus::Reset
                                } else {
                                    SubscriptionStatus::Ok
                                };
                                result.push(RoomSubscription { room: c.room.clone(), status, head_seq: head });
                                if status == SubscriptionStatus::Ok {
                                    let log = s.logs.get(&c.room).cloned().unwrap_or_default();
                                    let missed: Vec<RoomEvent> = log.iter().filter(|e| e.seq > c.since).cloned().collect();
                                    if s.duplicate_replay {
                                        if let Some(old) = log.iter().find(|e| e.seq == c.since) {
                                            replay.push(ServerFrame::Event(old.clone()));
                                        }
                                        for e in &missed {
                                            replay.push(ServerFrame::Event(e.clone()));
                                            replay.push(ServerFrame::Event(e.clone()));
                                        }
                                    } else {
                                        replay.extend(missed.into_iter().map(ServerFrame::Event));
                                    }
                                    replay.push(ServerFrame::CaughtUp { room: c.room.clone(), seq: head });
                                }
                                if status != SubscriptionStatus::NotFound {
                                    if let Some(conn) = s.conns.get_mut(&conn_id) {
                                        conn.rooms.insert(c.room.clone());
                                    }
                                }
                            }
                            direct.push(ServerFrame::Ack { id, result: serde_json::to_value(SubscribeResult { rooms: result }).unwrap_or_default() });
                            if s.compress_replay && !replay.is_empty() {
                                packed = Some((direct.len(), compressed(&replay)));
                            } else {
                                direct.extend(replay);
                            }
                            if let Some(since) = inbox_since {
                                for n in s.notifications.iter().filter(|n| n.seq > since) {
                                    direct.push(ServerFrame::Notification(n.clone()));
                                }
                                direct.push(ServerFrame::Unread { count: s.unread });
                            }
                        }
                        ClientFrame::Mutate { id, mutation: Mutation::SetPresence { status }, .. } => {
                            // Presence is not an outbox mutation; keep it out of the counts.
                            s.presence_sets.push(status);
                            direct.push(ServerFrame::Ack { id, result: json!({ "user": user, "status": status, "devices": 1 }) });
                        }
                        ClientFrame::Mutate {
                            id, key, mutation, ..
                        } => {
                            s.mutations.push((key.clone(), mutation.clone()));
                            s.mutation_times.push(std::time::Instant::now());
                            if let Some(n) = s.drop_after_mutations {
                                if n == 0 {
                                    drop_now = true;
                                } else {
                                    s.drop_after_mutations = Some(n - 1);
                                }
                            }
                            let answer = if let Some(stored) = s.results.get(&key).cloned() {
                                s.replays += 1;
                                ServerFrame::Ack { id, result: stored }
                            } else {
                                match s.apply(&user, &key, &mutation) {
                                    Ok(result) => {
                                        s.results.insert(key.clone(), result.clone());
                                        ServerFrame::Ack { id, result }
                                    }
                                    Err(error) => ServerFrame::Error { id: Some(id), error },
                                }
                            };
                            if drop_now {
                                s.drop_after_mutations = None;
                            } else if !s.silent {
                                answers.push(answer);
                            }
                        }
                        ClientFrame::Typing { room, typing } => s.typing.push((room, typing)),
                        ClientFrame::Ping { id } => direct.push(ServerFrame::Pong { id }),
                        ClientFrame::CollabSync { id, room, doc, state_vector } => {
                            use yrs::updates::decoder::Decode;
                            use yrs::updates::encoder::Encode;
                            use yrs::{ReadTxn, StateVector, Transact};
                            s.collab_syncs.push((room.clone(), doc.clone()));
                            if s.forbidden_rooms.contains(&room) {
                                direct.push(ServerFrame::Error { id: Some(id), error: ErrorBody::new(ErrorCode::Forbidden, "not a member") });
                            } else {
                                let sv = roam_proto::collab::decode_base64("state_vector", &state_vector, 65536)
                                    .ok()
                                    .filter(|b| !b.is_empty())
                                    .and_then(|b| StateVector::decode_v1(&b).ok())
                                    .unwrap_or_default();
                                let key = (room.clone(), doc.clone());
                                let d = s.collab.entry(key.clone()).or_insert_with(|| FakeCollab { doc: new_ydoc(), seq: 0 });
                                let txn = d.doc.transact();
                                let answer = roam_proto::CollabSync {
                                    room: room.clone(),
                                    doc: doc.clone(),
                                    seq: d.seq,
                                    update: roam_proto::collab::encode_base64(&txn.encode_state_as_update_v1(&sv)),
                                    state_vector: roam_proto::collab::encode_base64(&txn.state_vector().encode_v1()),
                                };
                                drop(txn);
                                if let Some(c) = s.conns.get_mut(&conn_id) {
                                    c.docs.insert(key);
                                }
                                direct.push(ServerFrame::Ack { id, result: serde_json::to_value(answer).unwrap_or_default() });
                            }
                        }
                        ClientFrame::CollabLeave { id, room, doc } => {
                            if let Some(c) = s.conns.get_mut(&conn_id) {
                                c.docs.remove(&(room, doc));
                            }
                            direct.push(ServerFrame::Ack { id, result: json!({}) });
                        }
                        ClientFrame::Awareness { room, doc, state } => {
                            s.awareness.push((user.clone(), state.clone()));
                            let key = (room.clone(), doc.clone());
                            let frame = ServerFrame::Awareness(roam_proto::AwarenessUpdate {
                                room, doc, user: user.clone(), session: format!("s{conn_id}"), state,
                            });
                            for (cid, c) in &s.conns {
                                if *cid != conn_id && c.docs.contains(&key) {
                                    let _ = c.tx.send(Out::Frame(frame.clone()));
                                }
                            }
                        }
                        ClientFrame::Unsubscribe { id, rooms } => {
                            if let Some(conn) = s.conns.get_mut(&conn_id) {
                                for r in rooms { conn.rooms.remove(&r); }
                            }
                            direct.push(ServerFrame::Ack { id, result: json!({}) });
                        }
                    }
                    let batch = s.ack_batch;
                    if batch > 1 {
                        held.append(&mut answers);
                        s.max_outstanding = s.max_outstanding.max(held.len());
                    } else {
                        s.max_outstanding = s.max_outstanding.max(answers.len());
                    }
                    if batch > 1 && held.len() >= batch {
                        held.reverse();
                        answers.append(&mut held);
                    }
                }
                if drop_now {
                    break;
                }
                let mut msgs: Vec<WsMessage> = direct.into_iter().chain(answers).map(to_text).collect();
                if let Some((at, m)) = packed {
                    msgs.insert(at, m);
                }
                for m in msgs {
                    if sink.send(m).await.is_err() { break; }
                }
            }
        }
    }
    let mut s = state.lock();
    // The documents it followed lose its awareness state.
    if let Some(conn) = s.conns.remove(&conn_id) {
        for (room, doc) in conn.docs {
            let frame = ServerFrame::Awareness(roam_proto::AwarenessUpdate {
                room: room.clone(),
                doc: doc.clone(),
                user: conn.user.clone(),
                session: format!("s{conn_id}"),
                state: None,
            });
            for c in s.conns.values() {
                if c.docs.contains(&(room.clone(), doc.clone())) {
                    let _ = c.tx.send(Out::Frame(frame.clone()));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

/// A configuration with short timings for tests.
pub fn config(dir: &Path, server_url: &str, user: &str) -> ClientConfig {
    let mut c = ClientConfig::new(dir.join(format!("{user}.db")), server_url, user);
    c.reconnect = ReconnectConfig {
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        randomization_factor: 0.5,
        ..ReconnectConfig::default()
    };
    c.heartbeat = HeartbeatConfig {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
    };
    c.outbox = OutboxConfig {
        window: 8,
        per_room_window: 8,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ack_timeout: Duration::from_secs(3),
    };
    c.typing = TypingConfig {
        throttle: Duration::from_secs(3),
        idle_stop: Duration::from_secs(3),
        remote_expiry: Duration::from_millis(300),
    };
    c.connect_timeout = Duration::from_secs(2);
    c.recovery_timeout = Duration::from_secs(3);
    c.http_timeout = Duration::from_secs(5);
    c
}

/// Opens a client whose token is its user id (the fake server reads the user from it).
pub fn open(cfg: ClientConfig) -> Client {
    let token = cfg.user_id.clone();
    Client::open(cfg, Arc::new(StaticToken(token))).expect("open client")
}

/// A closed port: connections to it are refused.
pub async fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}

// ---------------------------------------------------------------------------------------------
// Listener collectors

/// Forwards every callback into a channel.
pub struct Collector<T>(mpsc::UnboundedSender<T>);

pub fn collector<T>() -> (Arc<Collector<T>>, mpsc::UnboundedReceiver<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(Collector(tx)), rx)
}

impl RoomListener for Collector<RoomUpdate> {
    fn on_room_update(&self, update: RoomUpdate) {
        let _ = self.0.send(update);
    }
}

impl ConnectionStateListener for Collector<ConnectionState> {
    fn on_connection_state(&self, state: ConnectionState) {
        let _ = self.0.send(state);
    }
}

impl TypingListener for Collector<(String, Vec<String>)> {
    fn on_typing(&self, room: String, users: Vec<String>) {
        let _ = self.0.send((room, users));
    }
}

impl PresenceListener for Collector<Presence> {
    fn on_presence(&self, presence: Presence) {
        let _ = self.0.send(presence);
    }
}

impl DocumentListener for Collector<DocumentUpdate> {
    fn on_document_update(&self, update: DocumentUpdate) {
        let _ = self.0.send(update);
    }
}

/// A notification callback.
#[derive(Debug, Clone, PartialEq)]
pub enum Notified {
    New(NotificationInfo),
    Unread(u64),
}

impl NotificationListener for Collector<Notified> {
    fn on_notification(&self, notification: NotificationInfo) {
        let _ = self.0.send(Notified::New(notification));
    }
    fn on_unread_count(&self, count: u64) {
        let _ = self.0.send(Notified::Unread(count));
    }
}

/// The next item, or a panic after [`WAIT`].
pub async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(v)) => v,
        Ok(None) => panic!("{what}: channel closed"),
        Err(_) => panic!("{what}: nothing within {WAIT:?}"),
    }
}

/// Waits for the first item matching `pred`, skipping others.
pub async fn next_matching<T: std::fmt::Debug>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    what: &str,
    mut pred: impl FnMut(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(v)) if pred(&v) => return v,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("{what}: channel closed"),
            Err(_) => panic!("{what}: nothing matching within {WAIT:?}"),
        }
    }
}

/// Polls `f` every 10 ms until it holds, or panics after [`WAIT`].
/// A client of alice that joined "general" (created by bob with 3 messages), recovered its
/// history (cursor at 5: room_created, 3 messages, member_joined) and is connected.
pub async fn joined_client(dir: &Path, server: &FakeServer) -> Client {
    server.with(|s| {
        s.create_room("general", "bob");
        for i in 0..3 {
            s.post("general", "bob", &format!("old{i}"));
        }
    });
    let client = open(config(dir, &server.url(), "alice"));
    client.start().await.expect("start");
    client.join_room("general".into()).expect("join");
    eventually("history recovered", || {
        client
            .messages("general".into(), None, 50)
            .is_ok_and(|m| m.len() == 3)
    })
    .await;
    cursor_reaches(&client, "general", 5, "cursor at 5").await;
    eventually("connected", || {
        client.connection_state() == ConnectionState::Connected
    })
    .await;
    client
}

/// Waits until `client` has applied `room` up to `seq` (its cursor); panics after the wait.
pub async fn cursor_reaches(client: &Client, room: &str, seq: u64, what: &str) {
    eventually(what, || {
        client
            .room(room.into())
            .ok()
            .flatten()
            .is_some_and(|r| r.last_seq == seq)
    })
    .await;
}

pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A server-side notification.
pub fn notification(seq: u64, user: &str) -> Notification {
    Notification {
        seq,
        id: format!("n{seq}"),
        user: user.to_owned(),
        kind: "mentioned".into(),
        room: Some("general".into()),
        actor: Some("bob".into()),
        data: json!({ "seq": seq }),
        created_at: now_ms(),
        read: false,
    }
}

/// Sends presence of a user to every connection.
pub fn presence_frame(user: &str, status: PresenceStatus) -> ServerFrame {
    ServerFrame::PresenceDiff {
        room: "general".into(),
        presences: vec![Presence {
            user: user.to_owned(),
            status,
            last_seen: Some(now_ms()),
            devices: 1,
        }],
    }
}
