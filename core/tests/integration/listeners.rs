//! Listener subscriptions: current state first, no callback after drop or close.

use roam_core::{ConnectionState, RoomUpdate};

use crate::fixture::{self, collector, dead_url, next, next_matching, FakeServer};

#[tokio::test]
async fn dropped_or_closed_subscriptions_get_no_more_callbacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = fixture::open(fixture::config(dir.path(), &dead_url().await, "alice"));
    let (la, mut ra) = collector::<RoomUpdate>();
    let (lb, mut rb) = collector::<RoomUpdate>();
    let (lc, mut rc) = collector::<RoomUpdate>();
    let sub_a = client.subscribe_room_updates(None, la);
    let sub_b = client.subscribe_room_updates(Some("general".into()), lb);
    let _sub_c = client.subscribe_room_updates(None, lc);

    client
        .send_message("general".into(), "one".into())
        .expect("send");
    for rx in [&mut ra, &mut rb, &mut rc] {
        assert!(matches!(next(rx, "first").await, RoomUpdate::MessageAdded(m) if m.body == "one"));
    }

    drop(sub_a);
    sub_b.close();
    assert!(!sub_b.is_active());
    client
        .send_message("general".into(), "two".into())
        .expect("send");
    // c registered last, so once it has the update, a and b would have had theirs.
    assert!(
        matches!(next(&mut rc, "second").await, RoomUpdate::MessageAdded(m) if m.body == "two")
    );
    assert!(ra.try_recv().is_err(), "a was dropped");
    assert!(rb.try_recv().is_err(), "b was closed");
}

#[tokio::test]
async fn room_filters_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = fixture::open(fixture::config(dir.path(), &dead_url().await, "alice"));
    let (l, mut rx) = collector::<RoomUpdate>();
    let _sub = client.subscribe_room_updates(Some("b".into()), l);
    client
        .send_message("a".into(), "in a".into())
        .expect("send");
    client
        .send_message("b".into(), "in b".into())
        .expect("send");
    assert!(matches!(next(&mut rx, "b only").await, RoomUpdate::MessageAdded(m) if m.room == "b"));
}

#[tokio::test]
async fn connection_state_starts_with_the_current_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    let client = fixture::open(fixture::config(dir.path(), &server.url(), "alice"));
    let (l, mut rx) = collector::<ConnectionState>();
    let _sub = client.subscribe_connection_state(l);
    assert_eq!(next(&mut rx, "initial").await, ConnectionState::Offline);
    client.start().await.expect("start");
    assert_eq!(
        next(&mut rx, "connecting").await,
        ConnectionState::Connecting
    );
    assert_eq!(next(&mut rx, "connected").await, ConnectionState::Connected);
    // A late subscriber gets "connected" first.
    let (l2, mut rx2) = collector::<ConnectionState>();
    let _sub2 = client.subscribe_connection_state(l2);
    assert_eq!(
        next(&mut rx2, "late initial").await,
        ConnectionState::Connected
    );
    client.shutdown().await;
    next_matching(&mut rx, "offline", |s| *s == ConnectionState::Offline).await;
}
