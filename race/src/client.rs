//! One simulated client: a WebSocket to the server under test, driven by commands from the
//! workload (publish, flush, check, close) while it reads every frame the server sends.
//!
//! Two framings: Roam's JSON frames (`hello`, `mutate`, `subscribe`, `event`) and Socket.IO 4.8
//! (Engine.IO v4 over a plain WebSocket), which both peers speak. Every receiver checks what it
//! gets: per publisher the counters `1, 2, 3, …` with no gap or repeat, and on Roam also the
//! room's `seq` `1, 2, 3, …`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::stats::Shared;
use crate::wire::{self, quote, str_field, Stamp};

/// Commands a workload queued for one client before it starts dropping them.
pub const COMMAND_QUEUE: usize = 4096;
/// How long a setup step (connect, join, subscribe) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// WebSocket ping interval on Roam sockets (the server closes sockets silent for 60 s).
const ROAM_PING: Duration = Duration::from_secs(20);
/// A body as it starts inside a JSON string.
const QUOTED_MARK: &str = "\"R|";
/// Read chunk of the client's WebSocket (the default 128 KiB times 10,000 idle sockets would be
/// the load generator's own memory problem).
const READ_BUFFER: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {url}: {source}")]
    Connect {
        url: String,
        source: tokio_tungstenite::tungstenite::Error,
    },
    #[error("socket: {0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("the server closed the socket during setup")]
    ClosedDuringSetup,
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("the server refused {what}: {frame}")]
    Refused { what: &'static str, frame: String },
    #[error("token: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
}

/// Which server and framing.
#[derive(Debug, Clone)]
pub enum Flavor {
    /// roam-server: HS256 tokens signed with `secret`; `nonce` keeps idempotency keys fresh.
    Roam {
        /// One port per instance; a client picks one by its user id.
        ports: Arc<[u16]>,
        secret: Arc<str>,
        nonce: u64,
    },
    /// Socket.IO 4.8 framing (the node peer and the Bun peer).
    SocketIo { port: u16 },
}

/// What one client does.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// Roam user id (also the Socket.IO client's name in messages).
    pub user: String,
    /// Publisher id and the room it publishes to.
    pub publisher: Option<(u32, Arc<str>)>,
    /// Room to join first: Roam membership (`room.join`), Socket.IO `join`.
    pub join: Option<Arc<str>>,
    /// Roam: room to subscribe to (from seq 0). Socket.IO receives what it joined.
    pub subscribe: Option<Arc<str>>,
    /// Publishers whose every message this client must receive, in order.
    pub watch: Vec<u32>,
    /// Roam: public rooms to create during setup.
    pub create: Vec<Arc<str>>,
    pub body_bytes: usize,
}

#[derive(Debug)]
pub enum Cmd {
    Publish,
    /// Answered once everything published before it is written (Roam: and acknowledged).
    Flush(oneshot::Sender<()>),
    /// Answered with the number of watched events not received yet.
    Check(oneshot::Sender<u64>),
    Close,
}

/// A running client.
#[derive(Debug)]
pub struct Client {
    pub tx: mpsc::Sender<Cmd>,
    pub task: tokio::task::JoinHandle<()>,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Spreads users evenly over instances (their trailing number, else a hash of the id).
fn spread(user: &str) -> usize {
    let digits = user.trim_start_matches(|c: char| !c.is_ascii_digit());
    digits.parse::<usize>().unwrap_or_else(|_| {
        user.bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
    })
}

/// Connects, sets up (join, subscribe) and returns once the client is ready.
pub async fn start(flavor: Flavor, spec: Spec, shared: Arc<Shared>) -> Result<Client, ClientError> {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (ready_tx, ready_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let conn = match Conn::open(flavor, spec, shared).await {
            Ok(c) => c,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        conn.run(rx, ready_tx).await;
    });
    match tokio::time::timeout(SETUP_TIMEOUT, ready_rx).await {
        Ok(Ok(Ok(()))) => Ok(Client { tx, task }),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(_)) => Err(ClientError::ClosedDuringSetup),
        Err(_) => {
            task.abort();
            Err(ClientError::Timeout("client setup"))
        }
    }
}

/// Signs a token for `user`, valid for a day.
pub fn token(secret: &str, user: &str) -> Result<String, ClientError> {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        exp: u64,
        iat: u64,
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        sub: user,
        exp: now + 86_400,
        iat: now,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

struct Conn {
    ws: Ws,
    roam: bool,
    nonce: u64,
    spec: Spec,
    shared: Arc<Shared>,
    /// This receiver's slice of the delivery counters.
    shard: usize,
    track: Tracker,
    published: u64,
    in_flight: u64,
    flush_waiters: Vec<oneshot::Sender<()>>,
    /// Reply awaited during setup: (Roam request id or Socket.IO ack id, the answer frame).
    awaiting: Option<(String, Option<String>)>,
    closing: bool,
}

enum Step {
    Continue,
    /// The connection is over; the bool says whether the server ended it.
    Ended,
}

impl Conn {
    async fn open(flavor: Flavor, spec: Spec, shared: Arc<Shared>) -> Result<Self, ClientError> {
        let (url, roam, nonce) = match &flavor {
            Flavor::Roam {
                ports,
                secret,
                nonce,
            } => {
                let t = token(secret, &spec.user)?;
                let port = ports[spread(&spec.user) % ports.len()];
                (
                    format!("ws://127.0.0.1:{port}/v1/ws?access_token={t}"),
                    true,
                    *nonce,
                )
            }
            Flavor::SocketIo { port } => (
                format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"),
                false,
                0,
            ),
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0);
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true)
                .await
                .map_err(|source| ClientError::Connect {
                    url: url.split('?').next().unwrap_or_default().to_owned(),
                    source,
                })?;
        let track = Tracker::new(&spec.watch, spec.subscribe.iter().cloned());
        Ok(Conn {
            ws,
            roam,
            nonce,
            spec,
            shard: shared.shard(),
            shared,
            track,
            published: 0,
            in_flight: 0,
            flush_waiters: Vec::new(),
            awaiting: None,
            closing: false,
        })
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Cmd>,
        ready: oneshot::Sender<Result<(), ClientError>>,
    ) {
        match self.setup().await {
            Ok(()) => {
                if ready.send(Ok(())).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
        let mut ping = tokio::time::interval(ROAM_PING);
        ping.tick().await;
        loop {
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    match self.command(cmd).await {
                        Step::Continue => {}
                        Step::Ended => return,
                    }
                }
                msg = self.ws.next() => {
                    if let Step::Ended = self.incoming(msg).await {
                        return;
                    }
                }
                _ = ping.tick(), if self.roam => {
                    if self.ws.send(Message::Ping(Default::default())).await.is_err() {
                        self.ended(0);
                        return;
                    }
                }
            }
        }
        self.close().await;
    }

    async fn setup(&mut self) -> Result<(), ClientError> {
        if self.roam {
            self.wait_for(|f| str_field(f, "type") == Some("hello"), "hello")
                .await?;
            for (i, room) in self.spec.create.clone().iter().enumerate() {
                let id = format!("c{i}");
                let frame = format!(
                    r#"{{"v":1,"type":"mutate","id":"{id}","key":"{}.{}.create.{i}","op":"room.create","args":{{"room":{},"kind":"public"}}}}"#,
                    self.spec.user,
                    self.nonce,
                    quote(room)
                );
                let answer = self.request(frame, &id).await?;
                if str_field(&answer, "type") != Some("ack") {
                    return Err(ClientError::Refused {
                        what: "room.create",
                        frame: answer,
                    });
                }
            }
            if let Some(room) = self.spec.join.clone() {
                let frame = format!(
                    r#"{{"v":1,"type":"mutate","id":"j","key":"{}.{}.join","op":"room.join","args":{{"room":{}}}}}"#,
                    self.spec.user,
                    self.nonce,
                    quote(&room)
                );
                let answer = self.request(frame, "j").await?;
                if str_field(&answer, "type") != Some("ack") {
                    return Err(ClientError::Refused {
                        what: "room.join",
                        frame: answer,
                    });
                }
            }
            if let Some(room) = self.spec.subscribe.clone() {
                let frame = format!(
                    r#"{{"v":1,"type":"subscribe","id":"s","rooms":[{{"room":{},"since":0}}]}}"#,
                    quote(&room)
                );
                let answer = self.request(frame, "s").await?;
                if str_field(&answer, "type") != Some("ack")
                    || str_field(&answer, "status") != Some("ok")
                {
                    return Err(ClientError::Refused {
                        what: "subscribe",
                        frame: answer,
                    });
                }
            }
        } else {
            self.wait_for(|f| f.starts_with('0'), "Engine.IO open")
                .await?;
            self.ws.send(Message::text("40")).await?;
            self.wait_for(|f| f.starts_with("40"), "Socket.IO connect")
                .await?;
            if let Some(room) = self.spec.join.clone() {
                let frame = format!(r#"421["join",{}]"#, quote(&room));
                self.request(frame, "1").await?;
            }
        }
        Ok(())
    }

    /// Reads (and handles) frames until one matches.
    async fn wait_for(
        &mut self,
        pred: impl Fn(&str) -> bool,
        what: &'static str,
    ) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| ClientError::Timeout(what))?;
            match msg {
                Some(Ok(Message::Text(t))) => {
                    if pred(t.as_str()) {
                        return Ok(());
                    }
                    self.frame(t.as_str()).await;
                }
                Some(Ok(Message::Close(_))) | None => return Err(ClientError::ClosedDuringSetup),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Sends a request and reads frames until its answer (Roam `ack`/`error` with the id,
    /// Socket.IO `43<id>`).
    async fn request(&mut self, frame: String, id: &str) -> Result<String, ClientError> {
        self.awaiting = Some((id.to_owned(), None));
        self.ws.send(Message::text(frame)).await?;
        let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
        loop {
            if let Some((_, Some(answer))) = &mut self.awaiting {
                let answer = std::mem::take(answer);
                self.awaiting = None;
                return Ok(answer);
            }
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| ClientError::Timeout("setup request"))?;
            match msg {
                Some(Ok(Message::Text(t))) => self.frame(t.as_str()).await,
                Some(Ok(Message::Close(_))) | None => return Err(ClientError::ClosedDuringSetup),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    async fn command(&mut self, cmd: Cmd) -> Step {
        match cmd {
            Cmd::Publish => self.publish().await,
            Cmd::Flush(reply) => {
                if self.in_flight == 0 {
                    let _ = reply.send(());
                } else {
                    self.flush_waiters.push(reply);
                }
                Step::Continue
            }
            Cmd::Check(reply) => {
                let missing = self.track.missing(|p| self.shared.sent_by(p));
                let _ = reply.send(missing);
                Step::Continue
            }
            Cmd::Close => {
                self.close().await;
                Step::Ended
            }
        }
    }

    async fn publish(&mut self) -> Step {
        let Some((id, room)) = self.spec.publisher.clone() else {
            return Step::Continue;
        };
        self.published += 1;
        let n = self.published;
        let body = wire::body(
            Stamp {
                publisher: id,
                n,
                sent_ns: self.shared.now_ns(),
            },
            self.spec.body_bytes,
        );
        let frame = if self.roam {
            format!(
                r#"{{"v":1,"type":"mutate","id":"p{n}","key":"{}.{}.{n}","op":"message.send","args":{{"room":{},"body":{}}}}}"#,
                self.spec.user,
                self.nonce,
                quote(&room),
                quote(&body)
            )
        } else {
            format!(r#"42["publish",{},{}]"#, quote(&room), quote(&body))
        };
        if self.ws.send(Message::text(frame)).await.is_err() {
            self.ended(0);
            return Step::Ended;
        }
        if self.roam {
            self.in_flight += 1;
        }
        if let Some(s) = self.shared.sent.get(id as usize) {
            s.fetch_add(1, Ordering::AcqRel);
        }
        Step::Continue
    }

    async fn incoming(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Step {
        match msg {
            Some(Ok(Message::Text(t))) => {
                self.frame(t.as_str()).await;
                Step::Continue
            }
            Some(Ok(Message::Close(frame))) => {
                self.ended(frame.map_or(1005, |f| u16::from(f.code)));
                Step::Ended
            }
            Some(Ok(_)) => Step::Continue,
            Some(Err(_)) | None => {
                self.ended(0);
                Step::Ended
            }
        }
    }

    /// The server ended the connection (`code` 0: without a close frame).
    fn ended(&mut self, code: u16) {
        if !self.closing {
            self.shared.closed_by_server(code);
        }
        self.flush_waiters.clear();
    }

    async fn close(&mut self) {
        self.closing = true;
        let _ = self.ws.close(None).await;
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
    }

    async fn frame(&mut self, f: &str) {
        if self.roam {
            self.roam_frame(f);
        } else {
            self.socketio_frame(f).await;
        }
    }

    fn roam_frame(&mut self, f: &str) {
        let Some(got) = wire::fields(f) else {
            self.shared
                .violation(format!("{}: unreadable frame {}", self.spec.user, cut(f)));
            return;
        };
        match got.kind_of_frame {
            Some("event") => {
                let (Some(room), Some(seq)) = (got.room, got.seq) else {
                    self.shared.violation(format!(
                        "{}: unreadable event {}",
                        self.spec.user,
                        cut(f)
                    ));
                    return;
                };
                if let Err(v) = self.track.event(room, seq) {
                    self.shared.violation(format!("{}: {v}", self.spec.user));
                }
                if got.kind == Some("message_created") {
                    match got.body.and_then(wire::parse_body) {
                        Some(stamp) => self.received(stamp),
                        None => self.shared.violation(format!(
                            "{}: message without a readable body: {}",
                            self.spec.user,
                            cut(f)
                        )),
                    }
                }
            }
            Some(kind @ ("ack" | "error")) => {
                let id = got.id.unwrap_or_default();
                if let Some((want, answer)) = &mut self.awaiting {
                    if want == id {
                        *answer = Some(f.to_owned());
                        return;
                    }
                }
                if id.starts_with('p') {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    if kind == "error" {
                        self.shared.publish_errors.fetch_add(1, Ordering::Relaxed);
                        self.shared.violation(format!(
                            "{}: message.send refused: {}",
                            self.spec.user,
                            cut(f)
                        ));
                    }
                    if self.in_flight == 0 {
                        for w in self.flush_waiters.drain(..) {
                            let _ = w.send(());
                        }
                    }
                } else if kind == "error" {
                    self.shared
                        .violation(format!("{}: error frame {}", self.spec.user, cut(f)));
                }
            }
            _ => {}
        }
    }

    async fn socketio_frame(&mut self, f: &str) {
        if f == "2" {
            if self.ws.send(Message::text("3")).await.is_err() {
                self.ended(0);
            }
        } else if let Some(rest) = f.strip_prefix("42") {
            let stamp = rest.find(QUOTED_MARK).and_then(|at| {
                let s = &rest[at + 1..];
                s.find('"').and_then(|end| wire::parse_body(&s[..end]))
            });
            match stamp {
                Some(stamp) => self.received(stamp),
                None => self.shared.violation(format!(
                    "{}: event without a readable body: {}",
                    self.spec.user,
                    cut(f)
                )),
            }
        } else if let Some(rest) = f.strip_prefix("43") {
            let id_end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if let Some((want, answer)) = &mut self.awaiting {
                if want == &rest[..id_end] {
                    *answer = Some(f.to_owned());
                }
            }
        } else if f.starts_with("41") || f.starts_with("44") {
            self.shared.violation(format!(
                "{}: Socket.IO disconnect or error {}",
                self.spec.user,
                cut(f)
            ));
        }
    }

    fn received(&mut self, stamp: Stamp) {
        match self.track.message(stamp) {
            Ok(()) => self.shared.delivered(self.shard, stamp.sent_ns),
            Err(v) => {
                // A repeat or a late one still reached the receiver; a stranger did not count.
                if v.counted {
                    self.shared.delivered(self.shard, stamp.sent_ns);
                }
                self.shared
                    .violation(format!("{}: {}", self.spec.user, v.text));
            }
        }
    }
}

/// A broken promise seen by one receiver.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub text: String,
    /// Whether the message is still counted as a delivery.
    pub counted: bool,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// What one receiver has seen: per publisher the last counter, per Roam room the last seq.
/// Both must go up by exactly one each time.
#[derive(Debug, Default)]
pub struct Tracker {
    pubs: Vec<(u32, u64)>,
    rooms: Vec<(Arc<str>, u64)>,
}

impl Tracker {
    pub fn new(watch: &[u32], rooms: impl IntoIterator<Item = Arc<str>>) -> Self {
        Tracker {
            pubs: watch.iter().map(|&p| (p, 0)).collect(),
            rooms: rooms.into_iter().map(|r| (r, 0)).collect(),
        }
    }

    /// A Roam room event with `seq`.
    pub fn event(&mut self, room: &str, seq: u64) -> Result<(), Violation> {
        let Some((_, last)) = self.rooms.iter_mut().find(|(r, _)| &**r == room) else {
            return Err(Violation {
                text: format!("event of room {room}, which it did not subscribe to"),
                counted: false,
            });
        };
        let prev = *last;
        *last = prev.max(seq);
        if seq == prev + 1 {
            return Ok(());
        }
        let what = if seq <= prev {
            "repeated or late"
        } else {
            "gap"
        };
        Err(Violation {
            text: format!("room {room} seq {seq} after {prev} ({what})"),
            counted: true,
        })
    }

    /// A message carrying `stamp`.
    pub fn message(&mut self, stamp: Stamp) -> Result<(), Violation> {
        let Some((_, last)) = self.pubs.iter_mut().find(|(p, _)| *p == stamp.publisher) else {
            return Err(Violation {
                text: format!(
                    "message from publisher {}, which it does not follow",
                    stamp.publisher
                ),
                counted: false,
            });
        };
        let prev = *last;
        *last = prev.max(stamp.n);
        if stamp.n == prev + 1 {
            return Ok(());
        }
        let what = if stamp.n <= prev {
            "repeated or late"
        } else {
            "gap"
        };
        Err(Violation {
            text: format!(
                "publisher {} message {} after {prev} ({what})",
                stamp.publisher, stamp.n
            ),
            counted: true,
        })
    }

    /// Messages of followed publishers not seen yet, given how many each has sent.
    pub fn missing(&self, sent: impl Fn(u32) -> u64) -> u64 {
        self.pubs
            .iter()
            .map(|&(p, last)| sent(p).saturating_sub(last))
            .sum()
    }
}

/// A frame shortened for a violation line.
fn cut(f: &str) -> String {
    let mut end = f.len().min(200);
    while !f.is_char_boundary(end) {
        end -= 1;
    }
    f[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(publisher: u32, n: u64) -> Stamp {
        Stamp {
            publisher,
            n,
            sent_ns: 0,
        }
    }

    #[test]
    fn the_quoted_mark_is_the_body_mark() {
        assert_eq!(QUOTED_MARK, format!("\"{}", wire::BODY_MARK));
    }

    #[test]
    fn in_order_messages_pass_and_count_down_the_missing() {
        let mut t = Tracker::new(&[1, 2], []);
        assert_eq!(t.missing(|_| 2), 4);
        for n in 1..=2 {
            assert!(t.message(st(1, n)).is_ok());
            assert!(t.message(st(2, n)).is_ok());
        }
        assert_eq!(t.missing(|_| 2), 0);
        assert_eq!(t.missing(|p| if p == 1 { 5 } else { 2 }), 3);
    }

    #[test]
    fn gaps_repeats_and_strangers_are_violations() {
        let mut t = Tracker::new(&[1], []);
        assert!(t.message(st(1, 1)).is_ok());
        let gap = t.message(st(1, 3)).expect_err("a violation");
        assert!(gap.text.contains("gap") && gap.counted, "{gap}");
        let late = t.message(st(1, 2)).expect_err("a violation");
        assert!(late.text.contains("repeated or late"), "{late}");
        let again = t.message(st(1, 3)).expect_err("a violation");
        assert!(again.text.contains("repeated"), "{again}");
        assert!(t.message(st(1, 4)).is_ok(), "goes on from the highest seen");
        let stranger = t.message(st(9, 1)).expect_err("a violation");
        assert!(!stranger.counted);
    }

    #[test]
    fn room_seqs_must_be_consecutive() {
        let mut t = Tracker::new(&[], [Arc::from("r")]);
        assert!(t.event("r", 1).is_ok());
        assert!(t.event("r", 2).is_ok());
        assert!(t
            .event("r", 2)
            .expect_err("a violation")
            .text
            .contains("repeated"));
        assert!(t
            .event("r", 4)
            .expect_err("a violation")
            .text
            .contains("gap"));
        assert!(t.event("other", 1).is_err());
    }
}
