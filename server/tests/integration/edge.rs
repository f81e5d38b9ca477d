//! The connection edge under slow, half-open and badly behaved clients (protocol §2.1), and
//! RFC 6455 §5–§7 conformance of the WebSocket edge: close frames, UTF-8 checked per fragment,
//! the handshake key, unfinished messages, and the socket caps under concurrent handshakes.
//!
//! Every wait is bounded by [`WAIT`] (or a bounded loop); nothing asserts how fast anything is.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::fixtures::{metric_value, RawSocket, TestServer, Ws, WAIT};

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.x: every one of them
/// is the loopback interface on Linux, so a test can play several client addresses).
async fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback address");
    socket.connect(addr).await.expect("connect")
}

const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

fn loopback(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// Waits (bounded) until the server closes `tcp`: true when it did.
async fn closed_by_server(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// Sends a whole `GET path` on `tcp` and returns the response's status and head (lowercase).
async fn get_on(tcp: &mut TcpStream, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: roam\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let head = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return String::from_utf8_lossy(&buf[..i]).to_lowercase();
            }
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed before answering {path}");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("an answer in time");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
}

/// `GET path` on a new connection from `from`.
async fn get_from(from: Ipv4Addr, addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = connect_from(from, addr).await;
    get_on(&mut tcp, path).await
}

/// This process's resident set (bytes), from /proc.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Opens `n` connections to `addr` from `from`, at most 200 connects at a time.
async fn open_many(n: usize, from: Ipv4Addr, addr: SocketAddr) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let batch = (n - out.len()).min(200);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..batch {
            set.spawn(connect_from(from, addr));
        }
        while let Some(c) = set.join_next().await {
            out.push(c.expect("connect task"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_slow_handshakes_are_cut_while_healthz_answers_and_memory_stays_bounded() {
    const SLOW: usize = 2_000;
    let _alone = crate::fixtures::MEMORY.write().await;
    // Both ends of every connection live in this process: 4,000 descriptors and more.
    roam_server::edge::raise_open_file_limit().expect("raise the open-file limit");
    let t = TestServer::start_with(|c| {
        c.http_header_timeout_ms = 8_000;
        c.max_pending_per_ip = 0;
        c.max_pending_connections = 10_000;
    })
    .await;
    let addr = t.server().local_addr();
    let edge = std::sync::Arc::clone(&t.server().state().edge);
    let before = rss_bytes();

    // 2,000 clients that send their handshake a byte at a time.
    let mut slow = open_many(SLOW, loopback(2), addr).await;
    let hello = b"GET /v1/ws HTTP/1.1\r\nHost: roam\r\nUpgrade: websocket\r\n";
    for s in &mut slow {
        s.write_all(&hello[..1]).await.expect("first byte");
    }
    // While they are held (once the server has accepted them all), a health check gets its
    // answer.
    let mut held = 0;
    for _ in 0..100 {
        held = held.max(edge.pending_connections());
        if held >= SLOW {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = get_from(LOCAL, addr, "/healthz").await;
    assert_eq!(status, 200, "/healthz while {held} slow clients are held");
    assert!(
        held >= SLOW / 2,
        "the slow clients were held ({held}) when /healthz answered"
    );
    let grown = match (before, rss_bytes()) {
        (Some(b), Some(a)) => a.saturating_sub(b),
        _ => 0,
    };

    // They keep sending a byte now and then; the server drops each once its request head is
    // later than the header timeout.
    let mut open: Vec<(TcpStream, usize)> = slow.into_iter().map(|s| (s, 1)).collect();
    for _round in 0..200 {
        if open.is_empty() {
            break;
        }
        let mut still = Vec::with_capacity(open.len());
        for (s, at) in open {
            let mut buf = [0u8; 64];
            match s.try_read(&mut buf) {
                Ok(0) => continue,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => continue,
                _ => {}
            }
            let i = at % hello.len();
            if let Err(e) = s.try_write(&hello[i..i + 1]) {
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    continue;
                }
            }
            still.push((s, at + 1));
        }
        open = still;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        open.is_empty(),
        "{} slow clients still connected after 50 s",
        open.len()
    );
    let text = t.metrics().await;
    assert!(
        metric_value(&text, "roam_edge_timeouts_total", Some("kind=\"header\"")) >= SLOW as f64,
        "every slow client was cut by the header timeout"
    );
    // 2,000 client and server sockets together in this process: a generous bound, far below
    // what a connection that reserved hundreds of KiB would cost.
    assert!(
        grown < 256 * 1024 * 1024,
        "the process grew {} MiB for {SLOW} slow clients",
        grown / (1024 * 1024)
    );
    assert_eq!(
        edge.pending_connections(),
        1,
        "only the metrics client is left"
    );
}

#[tokio::test]
async fn silent_slow_and_idle_keep_alive_connections_are_closed() {
    let t = TestServer::start_with(|c| {
        c.http_header_timeout_ms = 500;
        c.http_idle_timeout_secs = 1;
    })
    .await;
    let addr = t.server().local_addr();
    // Says nothing at all.
    let mut silent = connect_from(LOCAL, addr).await;
    // Half a request head, then nothing.
    let mut half = connect_from(LOCAL, addr).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: ro")
        .await
        .expect("write");
    // A whole request on a keep-alive connection, then nothing.
    let mut idle = connect_from(LOCAL, addr).await;
    assert_eq!(get_on(&mut idle, "/healthz").await.0, 200);
    for (name, tcp) in [
        ("silent", &mut silent),
        ("half a head", &mut half),
        ("idle keep-alive", &mut idle),
    ] {
        assert!(closed_by_server(tcp).await, "{name}: still open");
    }
    let text = t.metrics().await;
    assert!(metric_value(&text, "roam_edge_timeouts_total", Some("kind=\"header\"")) >= 2.0);
    assert!(metric_value(&text, "roam_edge_timeouts_total", Some("kind=\"idle\"")) >= 1.0);
}

#[tokio::test]
async fn over_the_pending_caps_only_health_checks_are_answered() {
    let t = TestServer::start_with(|c| {
        c.max_pending_per_ip = 5;
        c.max_pending_connections = 8;
        c.http_header_timeout_ms = 30_000;
    })
    .await;
    let addr = t.server().local_addr();
    // Five from one address fill its cap.
    let held_a = open_many(5, loopback(2), addr).await;
    let (status, head) = get_from(loopback(2), addr, "/v1/rooms").await;
    assert_eq!(status, 503, "over the per-address cap: {head}");
    assert!(head.contains("retry-after"), "{head}");
    assert_eq!(get_from(loopback(2), addr, "/healthz").await.0, 200);
    // Another address is not held back by the first one's cap…
    let held_b = open_many(3, loopback(3), addr).await;
    // …until the total cap is reached.
    let (status, _) = get_from(loopback(4), addr, "/v1/rooms").await;
    assert_eq!(status, 503, "over the total cap");
    assert_eq!(get_from(loopback(4), addr, "/readyz").await.0, 200);
    // A spare connection serves one request and closes.
    let mut spare = connect_from(loopback(5), addr).await;
    assert_eq!(get_on(&mut spare, "/healthz").await.0, 200);
    assert!(
        closed_by_server(&mut spare).await,
        "a spare is not kept alive"
    );
    // Spare connections are few: past them a connection is closed at once.
    let mut spares = open_many(2 * roam_server::edge::SPARE_CONNECTIONS, loopback(6), addr).await;
    let mut refused = 0;
    for s in &mut spares {
        let mut buf = [0u8; 16];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await
        {
            refused += 1;
        }
    }
    assert!(
        refused >= roam_server::edge::SPARE_CONNECTIONS / 2,
        "{refused} closed"
    );
    drop(spares);
    // Once the held ones go, requests are served again.
    drop(held_a);
    drop(held_b);
    let served = tokio::time::timeout(WAIT, async {
        loop {
            if get_from(loopback(2), addr, "/v1/rooms").await.0 != 503 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(served.is_ok(), "served again once the caps have room");
    let text = t.metrics().await;
    assert!(
        metric_value(
            &text,
            "roam_edge_refused_total",
            Some("pending_per_ip_spare")
        ) >= 2.0
    );
    assert!(
        metric_value(
            &text,
            "roam_edge_refused_total",
            Some("kind=\"pending_spare")
        ) >= 2.0
    );
    assert!(metric_value(&text, "roam_edge_refused_total", Some("_closed")) >= 1.0);
}

#[tokio::test]
async fn near_the_connection_budget_health_checks_are_still_answered() {
    let t = TestServer::start_with(|c| {
        c.max_connections = 20;
        c.max_pending_per_ip = 0;
        c.http_header_timeout_ms = 30_000;
    })
    .await;
    let addr = t.server().local_addr();
    // Sockets of any kind count: WebSockets too.
    let ws = t.ws("alice").await;
    let held = open_many(19, LOCAL, addr).await;
    let (status, head) = get_from(LOCAL, addr, "/v1/rooms").await;
    assert_eq!(status, 503, "{head}");
    assert_eq!(get_from(LOCAL, addr, "/healthz").await.0, 200);
    assert_eq!(
        Ws::try_connect(&t.ws_url(), Some(&t.token("bob")))
            .await
            .map(|_| ())
            .map_err(|r| r.status),
        Err(503),
        "no new socket past the budget"
    );
    drop(held);
    drop(ws);
    let text = tokio::time::timeout(WAIT, async {
        loop {
            let r = t.http.get(format!("{}/metrics", t.base)).send().await;
            if let Ok(r) = r {
                if r.status().as_u16() == 200 {
                    return r.text().await.unwrap_or_default();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("served again");
    assert_eq!(
        metric_value(&text, "roam_edge_connection_budget", None),
        20.0
    );
    assert!(metric_value(&text, "roam_edge_refused_total", Some("descriptors_spare")) >= 3.0);
}

#[tokio::test]
async fn close_frames_are_answered_as_rfc_6455_requires() {
    let t = TestServer::start().await;
    let close = |payload: &[u8]| RawSocket::frame(true, 8, payload, true);
    // (what the client sends, the code the server must answer with)
    let mut cases: Vec<(String, Vec<u8>, u16)> = vec![
        ("one byte".into(), close(&[0x03]), 1002),
        ("no code".into(), close(&[]), 1000),
        (
            "a reason that is not UTF-8".into(),
            close(&[0x03, 0xe8, b'o', b'k', 0xff, 0xfe]),
            1007,
        ),
    ];
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        cases.push((format!("code {code}"), close(&code.to_be_bytes()), 1002));
    }
    for code in [1000u16, 1001, 1003, 1008, 1011, 3000, 3999, 4000, 4999] {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice("bye ✓".as_bytes());
        cases.push((format!("valid code {code}"), close(&payload), code));
    }
    for (name, frame, want) in cases {
        let mut ws = RawSocket::greeted(&t, "alice").await;
        ws.send(&frame).await;
        assert_eq!(ws.close_code().await, want, "{name}");
    }
}

#[tokio::test]
async fn text_is_checked_for_utf8_fragment_by_fragment() {
    let t = TestServer::start().await;
    // The first fragment is not UTF-8: the socket closes with 1007 before any other comes.
    let mut ws = RawSocket::greeted(&t, "alice").await;
    ws.send(&RawSocket::frame(
        false,
        1,
        &[b'{', 0xce, 0xba, 0xf4, 0x90, 0x80],
        true,
    ))
    .await;
    assert_eq!(ws.close_code().await, 1007);
    // A fragment that breaks a code point begun in the one before.
    let mut ws = RawSocket::greeted(&t, "alice").await;
    let mut bytes = RawSocket::frame(false, 1, &[b'{', 0xe2], true);
    bytes.extend(RawSocket::frame(false, 0, b"(", true));
    ws.send(&bytes).await;
    assert_eq!(ws.close_code().await, 1007);
    // A code point split over fragments is fine.
    let mut ws = RawSocket::greeted(&t, "alice").await;
    let text = r#"{"v":1,"type":"ping","id":"€uro"}"#.as_bytes();
    let cut = text.iter().position(|&b| b == 0xe2).expect("euro") + 1;
    let mut bytes = RawSocket::frame(false, 1, &text[..cut], true);
    bytes.extend(RawSocket::frame(false, 0, &text[cut..cut + 1], true));
    bytes.extend(RawSocket::frame(true, 0, &text[cut + 1..], true));
    ws.send(&bytes).await;
    let (op, payload) = ws.next().await;
    assert_eq!(op, 1);
    let v: serde_json::Value = serde_json::from_slice(&payload).expect("json");
    assert_eq!(v, json!({"v": 1, "type": "pong", "id": "€uro"}));
}

#[tokio::test]
async fn the_websocket_key_must_be_the_base64_of_16_bytes() {
    let t = TestServer::start().await;
    let long = "A".repeat(8 * 1024);
    for (name, key) in [
        ("missing", None),
        ("empty", Some("")),
        ("8 KiB", Some(long.as_str())),
        ("15 bytes", Some("dGhlIHNhbXBsZSBub25j")),
        ("not base64", Some("dGhlIHNhbXBsZSBub25j*Q==")),
    ] {
        let (status, _) = RawSocket::handshake(&t, "alice", key).await;
        assert_eq!(status, 400, "{name}");
    }
    let (status, _) = RawSocket::handshake(&t, "alice", Some("dGhlIHNhbXBsZSBub25jZQ==")).await;
    assert_eq!(status, 101);
}

#[tokio::test]
async fn a_message_left_unfinished_closes_the_socket_with_1008_pings_or_not() {
    let t = TestServer::start_with(|c| c.ws_message_timeout_ms = 500).await;
    let mut ws = RawSocket::greeted(&t, "alice").await;
    ws.send(&RawSocket::frame(false, 1, br#"{"v":1,"#, true))
        .await;
    let mut pongs = 0;
    let code = loop {
        assert!(pongs < 200, "still open after {pongs} pings");
        ws.send(&RawSocket::frame(true, 9, b"hb", true)).await;
        let (op, payload) = ws.next().await;
        match op {
            10 => pongs += 1,
            8 => break u16::from_be_bytes([payload[0], payload[1]]),
            other => panic!("unexpected opcode {other}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, 1008);
    assert!(pongs > 0, "pings were answered meanwhile");
    let text = t.metrics().await;
    assert_eq!(
        metric_value(&text, "roam_ws_partial_closed_total", Some("timeout")),
        1.0
    );
}

#[tokio::test]
async fn unfinished_messages_of_all_sockets_share_one_budget() {
    let t = TestServer::start_with(|c| c.ws_partial_budget_bytes = 1 << 20).await;
    let part = vec![b' '; 700 * 1024];
    let mut first = RawSocket::greeted(&t, "alice").await;
    first.send(&RawSocket::frame(false, 1, &part, true)).await;
    // Known to the server once the budget holds it.
    let counted = tokio::time::timeout(WAIT, async {
        while t.server().state().partial.used() < part.len() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(counted.is_ok(), "the first fragment is counted");
    let mut second = RawSocket::greeted(&t, "bob").await;
    second.send(&RawSocket::frame(false, 1, &part, true)).await;
    assert_eq!(second.close_code().await, 1008, "over the shared budget");
    // The first socket finishes its message and goes on.
    first
        .send(&RawSocket::frame(
            true,
            0,
            br#"{"v":1,"type":"ping","id":"p"}"#,
            true,
        ))
        .await;
    let (op, payload) = first.next().await;
    assert_eq!(op, 1);
    let v: serde_json::Value = serde_json::from_slice(&payload).expect("json");
    assert_eq!(v["type"], "pong", "{v}");
    assert_eq!(t.server().state().partial.used(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_handshakes_never_pass_the_socket_caps() {
    let t = TestServer::start_with(|c| {
        c.max_sockets = 10;
        c.max_sockets_per_user = 4;
    })
    .await;
    let url = t.ws_url();
    let attempt = |user: String| {
        let url = url.clone();
        let token = t.token(&user);
        tokio::spawn(async move { Ws::try_connect(&url, Some(&token)).await })
    };
    // 24 at once for one user: exactly 4.
    let tasks: Vec<_> = (0..24).map(|_| attempt("alice".into())).collect();
    let mut alice = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(ws) => alice.push(ws),
            Err(r) => assert_eq!(r.status, 429),
        }
    }
    assert_eq!(alice.len(), 4, "the per-user cap");
    // 24 at once for 24 users: the 6 left of the total.
    let tasks: Vec<_> = (0..24).map(|i| attempt(format!("user{i}"))).collect();
    let mut others = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(ws) => others.push(ws),
            Err(r) => assert_eq!(r.status, 503),
        }
    }
    assert_eq!(others.len(), 6, "the total cap");
    // Closed sockets give their slots back.
    drop(alice);
    drop(others);
    let back = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(ws) = Ws::try_connect(&url, Some(&t.token("alice"))).await {
                return ws;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(back.is_ok(), "slots are given back when sockets close");
}
