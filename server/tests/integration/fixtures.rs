//! Shared fixtures: a real server on 127.0.0.1:0 with a temporary data directory, an HTTP
//! client, and a WebSocket client that speaks protocol v1.
//!
//! The store is SQLite unless `ROAM_TEST_STORE` holds a PostgreSQL URL
//! (`postgres://postgres@127.0.0.1:5432/test`): then every test server gets a schema of its own
//! in that database (created here, dropped when the test server is dropped), so the same tests
//! run on Postgres, isolated from each other and in parallel.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roam_server::config::{Config, StoreKind};
use roam_server::Server;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server under test, with its data directory.
pub struct TestServer {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub http: reqwest::Client,
    /// The Postgres schema of this server's data, when the tests run on Postgres.
    pub schema: Option<PgSchema>,
}

/// The PostgreSQL URL of `ROAM_TEST_STORE`, if the tests run on Postgres.
pub fn postgres_url() -> Option<String> {
    std::env::var("ROAM_TEST_STORE")
        .ok()
        .filter(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

pub use roam_testkit::PgSchema;

/// A TCP relay to a server, which a test cuts to play a database that went away.
pub struct Relay {
    pub addr: std::net::SocketAddr,
    accept: tokio::task::JoinHandle<()>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    /// Relays connections to `target`, listening on `addr` (a fresh port when `None`).
    pub async fn start(target: String, addr: Option<std::net::SocketAddr>) -> Relay {
        let listener = tokio::net::TcpListener::bind(addr.unwrap_or(([127, 0, 0, 1], 0).into()))
            .await
            .expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let held = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                held.lock().expect("relay links").push(link);
            }
        });
        Relay {
            addr,
            accept,
            links,
        }
    }

    /// Closes every relayed connection and stops accepting.
    pub fn cut(&self) {
        self.accept.abort();
        for l in self.links.lock().expect("relay links").drain(..) {
            l.abort();
        }
    }
}

/// The JWT secret of every test server.
pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// Test defaults: fast typing expiry, roomy rate limits unless a test tightens them.
pub fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::for_data_dir(dir);
    c.jwt_secret = Some(SECRET.into());
    c.typing_timeout_ms = 300;
    c.rate_mutations_per_sec = 10_000;
    c.rate_mutations_burst = 10_000;
    c.rate_connects_per_min = 10_000;
    c.rate_connects_burst = 10_000;
    c.shutdown_grace_secs = 3;
    c
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with the test defaults changed by `f`.
    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = config(dir.path());
        f(&mut c);
        Self::start_in(dir, c).await
    }

    async fn start_in(dir: tempfile::TempDir, c: Config) -> Self {
        // A test that names its own Postgres store keeps it.
        let schema = match (postgres_url(), &c.store) {
            (Some(base), StoreKind::Sqlite) => Some(PgSchema::create(&base, "roam_test").await),
            _ => None,
        };
        Self::start_on(dir, schema, c).await
    }

    /// Starts on `dir` and, on Postgres, on `schema` (a restart keeps both).
    async fn start_on(dir: tempfile::TempDir, schema: Option<PgSchema>, mut c: Config) -> Self {
        if let Some(s) = &schema {
            c.store = StoreKind::Postgres(s.url());
        }
        let listener = tokio::net::TcpListener::bind(c.listen).await.expect("bind");
        let server = Server::start(c, listener).await.expect("start server");
        let base = format!("http://{}", server.local_addr());
        TestServer {
            server: Some(server),
            dir,
            base,
            http: reqwest::Client::builder().build().expect("client"),
            schema,
        }
    }

    /// Stops the server and starts a new one on the same data directory (and a new port).
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        let c = config(self.dir.path());
        let schema = self.schema.take();
        Self::start_on(self.dir, schema, c).await
    }

    /// Restart with changed configuration.
    pub async fn restart_with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        self.stop().await;
        let mut c = config(self.dir.path());
        f(&mut c);
        let schema = self.schema.take();
        Self::start_on(self.dir, schema, c).await
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    pub fn token(&self, user: &str) -> String {
        self.server().token_for(user).expect("token")
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.server().local_addr())
    }

    /// A REST client acting as `user`.
    pub fn as_user(&self, user: &str) -> Api {
        Api {
            base: self.base.clone(),
            http: self.http.clone(),
            token: Some(self.token(user)),
        }
    }

    /// Connects a socket as `user` and reads its `hello`.
    pub async fn ws(&self, user: &str) -> Ws {
        Ws::connect(&self.ws_url(), &self.token(user)).await
    }

    /// A REST client without a token.
    pub fn anon(&self) -> Api {
        Api {
            base: self.base.clone(),
            http: self.http.clone(),
            token: None,
        }
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let r = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics request");
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.expect("metrics body")
    }

    /// The sum of the samples named `name` whose labels contain `label` (e.g. `kind="mutation"`).
    pub async fn metric(&self, name: &str, label: Option<&str>) -> f64 {
        metric_value(&self.metrics().await, name, label)
    }
}

/// The sum of the samples named `name` (labels containing `label`, if given); 0 when absent.
pub fn metric_value(text: &str, name: &str, label: Option<&str>) -> f64 {
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, labels) = match key.split_once('{') {
            Some((n, l)) => (n, l),
            None => (key, ""),
        };
        if n == name && label.is_none_or(|l| labels.contains(l)) {
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// A token for `sub` signed with `secret`, expiring at `exp` (seconds since the epoch).
pub fn mint(secret: &str, sub: &str, exp: i64) -> String {
    let claims = json!({"sub": sub, "exp": exp, "iat": now_secs()});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("mint token")
}

/// A fresh idempotency key.
pub fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A REST client with a token.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub token: Option<String>,
}

/// A response, read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    /// Reads a response (JSON body, or the text as a JSON string).
    pub async fn read(resp: reqwest::Response) -> Resp {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Resp {
            status,
            headers,
            body,
        }
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Api {
    pub fn with_token(&self, token: Option<String>) -> Api {
        Api {
            token,
            ..self.clone()
        }
    }

    /// A request builder with this client's token.
    pub fn builder(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    pub async fn req(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        Resp::read(r.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.req(reqwest::Method::GET, path, None, None).await
    }

    /// A mutation with a fresh idempotency key.
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        let key = uuid::Uuid::now_v7().to_string();
        self.req(reqwest::Method::POST, path, Some(&key), Some(body))
            .await
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Resp {
        let key = uuid::Uuid::now_v7().to_string();
        self.req(method, path, Some(&key), body).await
    }

    /// Creates a room owned by this user; panics unless it worked.
    pub async fn create_room(&self, room: &str, kind: &str) -> Value {
        let r = self
            .post("/v1/rooms", json!({"room": room, "kind": kind}))
            .await;
        assert_eq!(r.status, 200, "create room: {:?}", r.body);
        r.body
    }

    /// A mutation with a given idempotency key.
    pub async fn post_with_key(&self, path: &str, key: &str, body: Value) -> Resp {
        self.req(reqwest::Method::POST, path, Some(key), Some(body))
            .await
    }

    /// Every message of a room, oldest first (pages of 200 by `after`).
    pub async fn all_messages(&self, room: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0u64;
        loop {
            let r = self
                .get(&format!(
                    "/v1/rooms/{room}/messages?after={after}&limit=200"
                ))
                .await;
            assert_eq!(r.status, 200, "messages: {:?}", r.body);
            let items = r.body["items"].as_array().expect("items").clone();
            let Some(last) = items.last() else { break };
            after = last["seq"].as_u64().expect("seq");
            out.extend(items);
        }
        out
    }

    /// Every event of a room, in order (REST recovery).
    pub async fn all_events(&self, room: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0u64;
        loop {
            let r = self
                .get(&format!("/v1/rooms/{room}/events?after={after}&limit=1000"))
                .await;
            assert_eq!(r.status, 200, "events: {:?}", r.body);
            let items = r.body["items"].as_array().expect("items").clone();
            let Some(last) = items.last() else { break };
            after = last["seq"].as_u64().expect("seq");
            out.extend(items);
        }
        out
    }

    /// Joins a public room (or one with a pending invitation); panics unless it worked.
    pub async fn join(&self, room: &str) -> Value {
        let r = self
            .post(&format!("/v1/rooms/{room}/join"), json!({}))
            .await;
        assert_eq!(r.status, 200, "join: {:?}", r.body);
        r.body
    }

    /// Invites `user` with `role`; returns the invitation.
    pub async fn invite(&self, room: &str, user: &str, role: &str) -> Value {
        let r = self
            .post(
                &format!("/v1/rooms/{room}/invitations"),
                json!({"user": user, "role": role}),
            )
            .await;
        assert_eq!(r.status, 200, "invite: {:?}", r.body);
        r.body
    }

    /// Becomes a member of `room` on an invitation from `by`, with `role`.
    pub async fn join_invited(&self, by: &Api, room: &str, role: &str) -> Value {
        let me = self.get("/v1/me").await;
        let user = me.body["user"].as_str().expect("user").to_owned();
        let inv = by.invite(room, &user, role).await;
        self.accept(&inv).await
    }

    /// Accepts an invitation; returns the membership.
    pub async fn accept(&self, invitation: &Value) -> Value {
        let id = invitation["id"].as_str().expect("invitation id");
        let r = self
            .post(&format!("/v1/invitations/{id}/accept"), json!({}))
            .await;
        assert_eq!(r.status, 200, "accept: {:?}", r.body);
        r.body
    }

    /// Sends a message; panics unless it worked.
    pub async fn say(&self, room: &str, body: &str) -> Value {
        let r = self
            .post(&format!("/v1/rooms/{room}/messages"), json!({"body": body}))
            .await;
        assert_eq!(r.status, 200, "send: {:?}", r.body);
        r.body
    }
}

/// A protocol v1 WebSocket client.
#[derive(Debug)]
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub hello: Value,
    next_id: u64,
    /// Frames read while waiting for an answer (`call`), returned first by `next`.
    pending: VecDeque<Value>,
    /// When false (the default), each `presence_state`/`presence_diff` frame is read as one
    /// `{"type": "presence", "room", "batch", ...presence}` value per user it lists (none for an
    /// empty one), so tests can wait for one user's presence; true returns the frames as sent.
    pub raw_presence: bool,
    /// Presence entries of a batch frame not returned yet.
    unpacked: VecDeque<Value>,
}

/// A refused WebSocket handshake.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
}

impl Refused {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Ws {
    pub async fn connect(url: &str, token: &str) -> Ws {
        Self::try_connect(url, Some(token))
            .await
            .expect("ws connect")
    }

    /// Connects with `token` in the Authorization header (none: no header); a refused
    /// handshake answers its HTTP status, headers and body.
    pub async fn try_connect(url: &str, token: Option<&str>) -> Result<Ws, Refused> {
        let mut req = url.into_client_request().expect("request");
        if let Some(token) = token {
            req.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
            );
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((stream, _)) => Ok(Self::greeted(stream).await),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let body = resp
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                Err(Refused {
                    status,
                    headers,
                    body,
                })
            }
            Err(e) => panic!("ws connect failed: {e}"),
        }
    }

    /// Wraps a connected stream and reads its `hello`.
    pub async fn greeted(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Ws {
        let mut ws = Ws {
            stream,
            hello: Value::Null,
            next_id: 0,
            pending: VecDeque::new(),
            raw_presence: false,
            unpacked: VecDeque::new(),
        };
        ws.hello = ws.next().await;
        assert_eq!(ws.hello["type"], "hello", "first frame: {:?}", ws.hello);
        ws
    }

    pub fn id(&mut self) -> String {
        self.next_id += 1;
        format!("r{}", self.next_id)
    }

    /// Sends a text frame; the error when the socket is gone.
    pub async fn try_send_raw(
        &mut self,
        text: &str,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.stream.send(Message::Text(text.into())).await
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("ws send");
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_raw(&frame.to_string()).await;
    }

    /// The next text frame as JSON (pings skipped); panics on close or timeout.
    pub async fn next(&mut self) -> Value {
        if let Some(f) = self.pending.pop_front() {
            return f;
        }
        self.read().await
    }

    /// The next frame from the socket itself.
    async fn read(&mut self) -> Value {
        loop {
            if let Some(v) = self.unpacked.pop_front() {
                return v;
            }
            let m = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("socket ended")
                .expect("socket error");
            let v: Value = match m {
                Message::Text(t) => serde_json::from_str(&t).expect("frame is JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected message {other:?}"),
            };
            let batch = v["type"] == "presence_state" || v["type"] == "presence_diff";
            if !batch || self.raw_presence {
                return v;
            }
            for p in v["presences"].as_array().into_iter().flatten() {
                let mut p = p.clone();
                p["type"] = json!("presence");
                p["room"] = v["room"].clone();
                p["batch"] = v["type"].clone();
                self.unpacked.push_back(p);
            }
        }
    }

    /// Reads frames until one matches; panics after `WAIT`.
    pub async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = tokio::time::timeout(left, self.next())
                .await
                .expect("timed out waiting for a matching frame");
            if pred(&v) {
                return v;
            }
        }
    }

    /// Sends a request frame with a fresh id and returns the ack/error answering it. Frames
    /// that arrive before the answer are kept for `next` (an ack and the event it caused may
    /// come in either order).
    pub async fn call(&mut self, mut frame: Value) -> Value {
        let id = self.id();
        frame["id"] = json!(id);
        frame["v"] = json!(1);
        self.send(frame).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut before = Vec::new();
        let answer = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let f = tokio::time::timeout(left, self.read())
                .await
                .expect("timed out waiting for an answer");
            let answers = f["id"] == json!(id)
                && (f["type"] == "ack" || f["type"] == "error" || f["type"] == "pong");
            if answers {
                break f;
            }
            before.push(f);
        };
        self.pending.extend(before);
        answer
    }

    /// Sends a ping and returns every frame that arrived before its pong: everything the server
    /// had queued for this socket when it read the ping.
    pub async fn drain(&mut self) -> Vec<Value> {
        let id = self.id();
        self.send(json!({"v": 1, "type": "ping", "id": id})).await;
        let mut out = Vec::new();
        loop {
            let f = self.next().await;
            if f["type"] == "pong" && f["id"] == json!(id) {
                return out;
            }
            out.push(f);
        }
    }

    /// Reads the room's `event` frames until one with `seq` (frames of other types and rooms
    /// are skipped); returns the events read, in arrival order.
    pub async fn events_until(&mut self, room: &str, seq: u64) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let f = self
                .until(|f| f["type"] == "event" && f["room"] == room)
                .await;
            let s = f["seq"].as_u64().expect("seq");
            out.push(f);
            if s >= seq {
                return out;
            }
        }
    }

    /// Subscribes with an inbox cursor too; returns the ack.
    pub async fn subscribe_inbox(&mut self, rooms: &[(&str, u64)], inbox_since: u64) -> Value {
        let rooms: Vec<Value> = rooms
            .iter()
            .map(|(r, s)| json!({"room": r, "since": s}))
            .collect();
        self.call(json!({"type": "subscribe", "rooms": rooms, "inbox_since": inbox_since}))
            .await
    }

    /// Subscribes to rooms from cursors; returns the ack.
    pub async fn subscribe(&mut self, rooms: &[(&str, u64)]) -> Value {
        let rooms: Vec<Value> = rooms
            .iter()
            .map(|(r, s)| json!({"room": r, "since": s}))
            .collect();
        self.call(json!({"type": "subscribe", "rooms": rooms}))
            .await
    }

    /// A mutation with a given key.
    pub async fn mutate_with_key(&mut self, key: &str, op: &str, args: Value) -> Value {
        self.call(json!({"type": "mutate", "key": key, "op": op, "args": args}))
            .await
    }

    /// A mutation with a fresh key.
    pub async fn mutate(&mut self, op: &str, args: Value) -> Value {
        let key = uuid::Uuid::now_v7().to_string();
        self.mutate_with_key(&key, op, args).await
    }

    /// Waits for the socket to close; returns the close code (None if it just ended).
    pub async fn closed(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.stream.next())
                .await
                .expect("timed out waiting for close")
            {
                None => return None,
                Some(Err(_)) => return None,
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
            }
        }
    }
}

/// A WebSocket spoken to byte by byte — the handshake and the frames written by hand — for what
/// a WebSocket library would not send.
pub struct RawSocket {
    tcp: TcpStream,
    buf: Vec<u8>,
}

/// RFC 6455's sample key (§1.3), whose accept value is known.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Sends `req` and reads the response head: (status, the head, the bytes read after it).
pub async fn http_head(tcp: &mut TcpStream, req: &str) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let end = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed before the answer's head");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("an answer in time");
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    buf.drain(..end);
    (status, head, buf)
}

impl RawSocket {
    /// Sends a handshake with `key` (none: no key header); the status and the connection.
    pub async fn handshake(t: &TestServer, user: &str, key: Option<&str>) -> (u16, RawSocket) {
        let (status, _, socket) = Self::handshake_head(t, user, key).await;
        (status, socket)
    }

    async fn handshake_head(
        t: &TestServer,
        user: &str,
        key: Option<&str>,
    ) -> (u16, String, RawSocket) {
        let mut tcp = TcpStream::connect(t.server().local_addr())
            .await
            .expect("connect");
        let key = key.map_or(String::new(), |k| format!("Sec-WebSocket-Key: {k}\r\n"));
        let req = format!(
            "GET /v1/ws HTTP/1.1\r\nHost: roam\r\nConnection: keep-alive, Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{key}\
             Authorization: Bearer {}\r\n\r\n",
            t.token(user)
        );
        let (status, head, buf) = http_head(&mut tcp, &req).await;
        (status, head, RawSocket { tcp, buf })
    }

    /// Upgrades with the sample key and checks the server's answer to it (`hello` not read).
    pub async fn open(t: &TestServer, user: &str) -> RawSocket {
        let (status, head, socket) = Self::handshake_head(t, user, Some(SAMPLE_KEY)).await;
        assert_eq!(status, 101, "{head}");
        // The accept key RFC 6455 §1.3 gives for its sample key.
        assert!(
            head.to_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        socket
    }

    /// An open socket whose `hello` was read.
    pub async fn greeted(t: &TestServer, user: &str) -> RawSocket {
        let mut socket = Self::open(t, user).await;
        let (op, _) = socket.next().await;
        assert_eq!(op, 1, "hello");
        socket
    }

    /// A client frame: masked, as RFC 6455 requires (unless `masked` is false).
    pub fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mask = [0x5au8, 0x1f, 0x33, 0xc4];
        let mut out = vec![if fin { 0x80 | opcode } else { opcode }];
        let bit = if masked { 0x80 } else { 0 };
        let len = payload.len();
        if len < 126 {
            out.push(bit | len as u8);
        } else if len <= u16::MAX as usize {
            out.push(bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if masked {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.tcp.write_all(bytes).await.expect("write");
    }

    /// The next server frame: its opcode and payload (server frames are final and unmasked).
    pub async fn next(&mut self) -> (u8, Vec<u8>) {
        use tokio::io::AsyncReadExt;
        tokio::time::timeout(WAIT, async {
            loop {
                if self.buf.len() >= 2 {
                    assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                    let (len, at) = match self.buf[1] & 0x7f {
                        126 if self.buf.len() >= 4 => {
                            (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                        }
                        127 if self.buf.len() >= 10 => {
                            let mut n = [0u8; 8];
                            n.copy_from_slice(&self.buf[2..10]);
                            (u64::from_be_bytes(n) as usize, 10)
                        }
                        126 | 127 => (usize::MAX, 0),
                        n => (n as usize, 2),
                    };
                    if len != usize::MAX && self.buf.len() >= at + len {
                        assert_eq!(self.buf[0] & 0x80, 0x80, "server frames are final");
                        let opcode = self.buf[0] & 0x0f;
                        let payload = self.buf[at..at + len].to_vec();
                        self.buf.drain(..at + len);
                        return (opcode, payload);
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = self.tcp.read(&mut chunk).await.expect("read");
                assert!(n > 0, "the connection ended without a close frame");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("a frame in time")
    }

    /// The next text frame, as JSON (control frames before it are returned by `next`).
    pub async fn next_json(&mut self) -> Value {
        let (op, payload) = self.next().await;
        assert_eq!(op, 1, "a text frame");
        serde_json::from_slice(&payload).expect("json")
    }

    /// Reads up to the server's close frame and returns its code.
    pub async fn close_code(&mut self) -> u16 {
        loop {
            let (op, payload) = self.next().await;
            if op == 8 {
                assert!(payload.len() >= 2, "a close frame with a code");
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    }
}

/// Tests that measure this process's resident memory take this lock for writing, and tests
/// that allocate much while they run take it for reading: every test of this binary shares one
/// process, so a measurement must not count another test's allocations.
pub static MEMORY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
