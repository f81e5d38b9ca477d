//! The metrics snapshot matches what happened.

use roam_core::ConnectionState;

use crate::fixture::{self, collector, next_matching, FakeServer};

#[tokio::test]
async fn the_snapshot_matches_what_happened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    server.with(|s| {
        s.create_room("open", "bob");
        s.create_room("locked", "bob");
        s.forbidden_rooms.insert("locked".into());
        s.rate_limit_once.insert("slow".into(), 50);
    });
    let client = fixture::open(fixture::config(dir.path(), &server.url(), "alice"));
    client
        .send_message("open".into(), "slow".into())
        .expect("send");
    client
        .send_message("open".into(), "fine".into())
        .expect("send");
    client
        .send_message("locked".into(), "nope".into())
        .expect("send");
    client.mark_all_read().expect("mark");

    let before = client.metrics();
    assert_eq!(before.outbox_depth, 4);
    assert!(before.outbox_oldest_age_ms.is_some());
    assert_eq!(before.mutations_queued, 4);
    assert_eq!(before.messages_queued, 3);
    assert_eq!(before.connections, 0);
    assert_eq!(before.bytes_sent, 0);

    let (l, mut states) = collector::<ConnectionState>();
    let _sub = client.subscribe_connection_state(l);
    client.start().await.expect("start");
    fixture::eventually("settled", || {
        let m = client.metrics();
        m.outbox_depth == 0 && m.outbox_failed == 1
    })
    .await;
    let m = client.metrics();
    assert_eq!(m.messages_sent, 3);
    assert_eq!(m.messages_acked, 2);
    assert_eq!(m.messages_failed, 1);
    assert_eq!(m.mutations_acked, 3);
    assert_eq!(m.mutations_failed, 1);
    assert!(m.retries >= 1, "the rate-limited send was retried");
    assert_eq!(m.connections, 1);
    assert_eq!(m.reconnects, 0);
    assert_eq!(m.outbox_oldest_age_ms, None);
    assert!(m.bytes_sent > 0 && m.bytes_received > 0);
    assert!(
        m.frames_sent >= 5,
        "subscribe + presence + 4 mutations (+ retries)"
    );

    // Conditional REST reads: a miss, then a 304 hit.
    client.refresh_rooms().await.expect("rooms");
    let rooms = client.refresh_rooms().await.expect("rooms again");
    assert_eq!(rooms.len(), 2);
    let m = client.metrics();
    assert_eq!((m.cache_misses, m.cache_hits), (1, 1));
    assert!((m.cache_hit_rate - 0.5).abs() < 1e-9);

    // A dropped connection counts as a reconnect.
    server.with(|s| s.drop_all());
    next_matching(&mut states, "waiting", |s| {
        matches!(s, ConnectionState::Waiting { .. })
    })
    .await;
    next_matching(&mut states, "connected", |s| {
        *s == ConnectionState::Connected
    })
    .await;
    let m = client.metrics();
    assert_eq!(m.connections, 2);
    assert_eq!(m.reconnects, 1);
    client.shutdown().await;
}
