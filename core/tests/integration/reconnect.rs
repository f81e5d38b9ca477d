//! The reconnecting socket: recovery by sequence number, duplicates, resets, backoff, the
//! network-available hint, going offline, token refresh.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use roam_core::{ConnectionState, RoomUpdate, SendState, TokenProvider};

use crate::fixture::{self, collector, dead_url, next, next_matching, FakeServer};

#[tokio::test]
async fn reconnects_and_recovers_missed_events_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    let client = fixture::joined_client(dir.path(), &server).await;
    let room = client.room("general".into()).expect("read").expect("room");
    assert!(room.joined);

    // Cut the client off, post while it is away, let it back in.
    server.with(|s| {
        s.refuse = true;
        s.drop_all();
        for i in 0..5 {
            s.post("general", "bob", &format!("new{i}"));
        }
    });
    fixture::eventually("client noticed", || {
        matches!(
            client.connection_state(),
            ConnectionState::Waiting { .. } | ConnectionState::Connecting
        )
    })
    .await;
    let subscribes_before = server.with(|s| s.subscribes.len());
    server.with(|s| s.refuse = false);
    fixture::eventually("recovered", || {
        client
            .messages("general".into(), None, 50)
            .map(|m| m.len() == 8)
            .unwrap_or(false)
    })
    .await;
    let bodies: Vec<String> = client
        .messages("general".into(), None, 50)
        .expect("read")
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(
        bodies,
        ["old0", "old1", "old2", "new0", "new1", "new2", "new3", "new4"]
    );
    let resubscribe = server.with(|s| s.subscribes[subscribes_before].clone());
    assert_eq!(
        resubscribe.0,
        vec![("general".to_string(), 5)],
        "since = last applied seq"
    );
    assert_eq!(
        client
            .room("general".into())
            .expect("read")
            .expect("room")
            .last_seq,
        10
    );
    let m = client.metrics();
    assert!(m.reconnects >= 1);
    assert!(m.events_recovered >= 5, "{m:?}");

    // Live events keep flowing after recovery.
    server.with(|s| {
        s.post("general", "bob", "live");
    });
    fixture::eventually("live event", || {
        client
            .messages("general".into(), None, 50)
            .map(|m| m.last().is_some_and(|m| m.body == "live"))
            .unwrap_or(false)
    })
    .await;
    client.shutdown().await;
}

#[tokio::test]
async fn duplicate_events_are_applied_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    let client = fixture::joined_client(dir.path(), &server).await;
    let (listener, mut updates) = collector::<RoomUpdate>();
    let _sub = client.subscribe_room_updates(Some("general".into()), listener);
    server.with(|s| {
        s.refuse = true;
        s.duplicate_replay = true;
        s.drop_all();
        s.post("general", "bob", "a");
        s.post("general", "bob", "b");
    });
    fixture::eventually("disconnected", || {
        !matches!(client.connection_state(), ConnectionState::Connected)
    })
    .await;
    server.with(|s| s.refuse = false);
    fixture::cursor_reaches(&client, "general", 7, "recovered").await;
    let bodies: Vec<String> = client
        .messages("general".into(), None, 50)
        .expect("read")
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(bodies, ["old0", "old1", "old2", "a", "b"]);
    // Exactly one "added" per new message, in order.
    let mut added = Vec::new();
    while added.len() < 2 {
        if let RoomUpdate::MessageAdded(m) = next(&mut updates, "added").await {
            added.push(m.body);
        }
    }
    assert_eq!(added, ["a", "b"]);
    assert!(client.metrics().duplicates_ignored >= 3);
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Ok(u) = updates.try_recv() {
        assert!(
            !matches!(u, RoomUpdate::MessageAdded(_)),
            "no duplicate: {u:?}"
        );
    }
    client.shutdown().await;
}

#[tokio::test]
async fn a_reset_reloads_the_newest_messages_over_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    let client = fixture::joined_client(dir.path(), &server).await;
    let (listener, mut updates) = collector::<RoomUpdate>();
    let _sub = client.subscribe_room_updates(Some("general".into()), listener);
    server.with(|s| {
        s.refuse = true;
        s.drop_all();
        s.reset_once.insert("general".into());
        s.post("general", "bob", "after");
    });
    fixture::eventually("disconnected", || {
        !matches!(client.connection_state(), ConnectionState::Connected)
    })
    .await;
    server.with(|s| s.refuse = false);
    next_matching(&mut updates, "reset", |u| {
        matches!(u, RoomUpdate::Reset { .. })
    })
    .await;
    fixture::eventually("reloaded", || {
        client
            .messages("general".into(), None, 50)
            .map(|m| m.len() == 4)
            .unwrap_or(false)
    })
    .await;
    let bodies: Vec<String> = client
        .messages("general".into(), None, 50)
        .expect("read")
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(bodies, ["old0", "old1", "old2", "after"]);
    assert!(server.with(|s| s
        .http_requests
        .iter()
        .any(|l| l.contains("/v1/rooms/general/messages"))));
    assert_eq!(
        client
            .room("general".into())
            .expect("read")
            .expect("room")
            .last_seq,
        6
    );
    assert_eq!(client.metrics().resets, 1);
    // Live events continue from head_seq.
    server.with(|s| {
        s.post("general", "bob", "live");
    });
    fixture::cursor_reaches(&client, "general", 7, "live after reset").await;
    client.shutdown().await;
}

#[tokio::test]
async fn backoff_delays_stay_within_bounds_with_jitter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = fixture::open(fixture::config(dir.path(), &dead_url().await, "alice"));
    let (listener, mut states) = collector::<ConnectionState>();
    let _sub = client.subscribe_connection_state(listener);
    assert_eq!(next(&mut states, "initial").await, ConnectionState::Offline);
    client.start().await.expect("start");
    let mut delays = Vec::new();
    while delays.len() < 10 {
        if let ConnectionState::Waiting { retry_in } = next(&mut states, "state").await {
            delays.push(retry_in);
        }
    }
    // initial 50 ms, max 200 ms, randomisation 0.5
    for (i, d) in delays.iter().enumerate() {
        assert!(
            *d >= Duration::from_millis(25) && *d <= Duration::from_millis(200),
            "attempt {i}: {d:?}"
        );
    }
    assert!(
        delays[0] <= Duration::from_millis(75),
        "first delay {:?}",
        delays[0]
    );
    let distinct: std::collections::HashSet<_> = delays.iter().collect();
    assert!(distinct.len() > 1, "jitter varies the delays: {delays:?}");
    assert!(client.metrics().connect_attempts >= 10);
    client.shutdown().await;
    assert_eq!(client.connection_state(), ConnectionState::Offline);
}

#[tokio::test]
async fn network_available_retries_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    server.with(|s| s.refuse = true);
    let mut cfg = fixture::config(dir.path(), &server.url(), "alice");
    cfg.reconnect.initial_delay = Duration::from_secs(30);
    cfg.reconnect.max_delay = Duration::from_secs(30);
    let client = fixture::open(cfg);
    let (listener, mut states) = collector::<ConnectionState>();
    let _sub = client.subscribe_connection_state(listener);
    client.start().await.expect("start");
    next_matching(&mut states, "waiting", |s| {
        matches!(s, ConnectionState::Waiting { .. })
    })
    .await;
    let attempts = server.with(|s| s.attempts.len());
    server.with(|s| s.refuse = false);
    // Without the hint the next attempt would be 15–30 s away; `next` gives up after 10 s.
    client.network_available();
    next_matching(&mut states, "connected", |s| {
        *s == ConnectionState::Connected
    })
    .await;
    assert!(server.with(|s| s.attempts.len()) > attempts);
    client.shutdown().await;
}

#[tokio::test]
async fn going_offline_closes_and_coming_back_reconnects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    server.with(|s| s.create_room("general", "bob"));
    let client = fixture::open(fixture::config(dir.path(), &server.url(), "alice"));
    let (listener, mut states) = collector::<ConnectionState>();
    let _sub = client.subscribe_connection_state(listener);
    client.start().await.expect("start");
    next_matching(&mut states, "connected", |s| {
        *s == ConnectionState::Connected
    })
    .await;
    client.set_online(false);
    next_matching(&mut states, "offline", |s| *s == ConnectionState::Offline).await;
    server
        .until("socket closed", |s| s.live_connections() == 0)
        .await;
    // Writes keep queueing while offline.
    let m = client
        .send_message("general".into(), "queued".into())
        .expect("send");
    assert_eq!(m.send_state, SendState::Pending);
    client.set_online(true);
    next_matching(&mut states, "connected again", |s| {
        *s == ConnectionState::Connected
    })
    .await;
    fixture::eventually("delivered", || {
        server.with(|s| s.bodies("general") == ["queued"])
    })
    .await;
    client.shutdown().await;
}

struct CountingTokens {
    calls: AtomicUsize,
    refreshes: AtomicUsize,
}

#[async_trait]
impl TokenProvider for CountingTokens {
    async fn token(&self, refresh: bool) -> roam_core::Result<String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if refresh {
            self.refreshes.fetch_add(1, Ordering::SeqCst);
        }
        Ok("alice".into())
    }
}

#[tokio::test]
async fn an_expired_token_close_asks_for_a_fresh_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    let tokens = Arc::new(CountingTokens {
        calls: AtomicUsize::new(0),
        refreshes: AtomicUsize::new(0),
    });
    let client = roam_core::Client::open(
        fixture::config(dir.path(), &server.url(), "alice"),
        tokens.clone(),
    )
    .expect("open");
    client.start().await.expect("start");
    server
        .until("connected", |s| s.live_connections() == 1)
        .await;
    assert_eq!(tokens.refreshes.load(Ordering::SeqCst), 0);
    server.with(|s| s.close_all(roam_proto::close::TOKEN_EXPIRED));
    server.until("reconnected", |s| s.connections == 2).await;
    assert_eq!(tokens.refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(
        server.with(|s| s.auth_headers.last().cloned()),
        Some("Bearer alice".into())
    );
    client.shutdown().await;
}

#[tokio::test]
async fn a_silent_link_is_detected_by_the_heartbeat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    let mut cfg = fixture::config(dir.path(), &server.url(), "alice");
    cfg.heartbeat.interval = Duration::from_millis(200);
    cfg.heartbeat.timeout = Duration::from_millis(300);
    let client = fixture::open(cfg);
    let (listener, mut states) = collector::<ConnectionState>();
    let _sub = client.subscribe_connection_state(listener);
    client.start().await.expect("start");
    next_matching(&mut states, "connected", |s| {
        *s == ConnectionState::Connected
    })
    .await;
    // While the server answers, pings keep the link alive.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(client.connection_state(), ConnectionState::Connected);
    assert_eq!(server.with(|s| s.connections), 1);
    // The link goes silent: no pong, no frames.
    server.with(|s| s.stall_all());
    next_matching(&mut states, "declared dead", |s| {
        matches!(s, ConnectionState::Waiting { .. })
    })
    .await;
    next_matching(&mut states, "reconnected", |s| {
        *s == ConnectionState::Connected
    })
    .await;
    assert_eq!(server.with(|s| s.connections), 2);
    client.shutdown().await;
}
