//! Typing, presence and notifications over a live connection.

use std::time::Duration;

use roam_core::{ConnectionState, PresenceStatus};
use roam_proto::ServerFrame;

use crate::fixture::{
    self, collector, next, next_matching, notification, presence_frame, FakeServer, Notified,
};

async fn connected(dir: &std::path::Path, server: &FakeServer) -> roam_core::Client {
    let client = fixture::open(fixture::config(dir, &server.url(), "alice"));
    let (listener, mut states) = collector::<ConnectionState>();
    let _sub = client.subscribe_connection_state(listener);
    client.start().await.expect("start");
    next_matching(&mut states, "connected", |s| {
        *s == ConnectionState::Connected
    })
    .await;
    client
}

#[tokio::test]
async fn outgoing_typing_is_throttled_and_stopped_by_a_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    server.with(|s| s.create_room("general", "bob"));
    let client = connected(dir.path(), &server).await;
    for _ in 0..10 {
        client.typing_started("general".into());
    }
    server.until("typing true", |s| !s.typing.is_empty()).await;
    client
        .send_message("general".into(), "hi".into())
        .expect("send");
    server.until("typing false", |s| s.typing.len() == 2).await;
    fixture::eventually("sent", || server.with(|s| s.bodies("general").len() == 1)).await;
    assert_eq!(
        server.with(|s| s.typing.clone()),
        [
            ("general".to_string(), true),
            ("general".to_string(), false)
        ]
    );
    // Stopping again sends nothing more.
    client.typing_stopped("general".into());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.with(|s| s.typing.len()), 2);
    client.shutdown().await;
}

#[tokio::test]
async fn incoming_typing_expires_by_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    let client = connected(dir.path(), &server).await;
    let (listener, mut typing) = collector::<(String, Vec<String>)>();
    let _sub = client.subscribe_typing(Some("general".into()), listener);
    assert_eq!(
        next(&mut typing, "initial").await,
        ("general".to_string(), vec![])
    );
    server.with(|s| {
        s.broadcast(ServerFrame::Typing {
            room: "general".into(),
            user: "bob".into(),
            typing: true,
        })
    });
    assert_eq!(next(&mut typing, "bob typing").await.1, ["bob"]);
    assert_eq!(client.typing("general".into()), ["bob"]);
    // No "stopped" ever comes: the indicator expires after remote_expiry (300 ms here).
    assert_eq!(next(&mut typing, "expired").await.1, Vec::<String>::new());
    assert!(client.typing("general".into()).is_empty());
    client.shutdown().await;
}

#[tokio::test]
async fn presence_is_sent_after_connect_and_received_from_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    let client = connected(dir.path(), &server).await;
    server
        .until("presence sent after connect", |s| {
            s.presence_sets == [PresenceStatus::Online]
        })
        .await;
    client.set_idle(true);
    assert_eq!(client.my_presence(), PresenceStatus::Away);
    server
        .until("away sent", |s| {
            s.presence_sets.last() == Some(&PresenceStatus::Away)
        })
        .await;
    client.user_activity();
    server
        .until("online again", |s| {
            s.presence_sets.last() == Some(&PresenceStatus::Online)
        })
        .await;

    let (listener, mut presence) = collector::<roam_core::Presence>();
    let _sub = client.subscribe_presence(listener);
    server.with(|s| s.broadcast(presence_frame("bob", PresenceStatus::Away)));
    let p = next(&mut presence, "bob").await;
    assert_eq!((p.user.as_str(), p.status), ("bob", PresenceStatus::Away));
    let stored = client.presence("bob".into()).expect("read").expect("bob");
    assert_eq!(stored.status, PresenceStatus::Away);
    client.shutdown().await;
}

#[tokio::test]
async fn notifications_and_unread_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    server.with(|s| {
        s.notifications = vec![notification(1, "alice"), notification(2, "alice")];
        s.unread = 2;
    });
    let client = fixture::open(fixture::config(dir.path(), &server.url(), "alice"));
    let (listener, mut notified) = collector::<Notified>();
    let _sub = client.subscribe_notifications(listener);
    assert_eq!(
        next(&mut notified, "initial count").await,
        Notified::Unread(0)
    );
    client.start().await.expect("start");
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(next(&mut notified, "inbox").await);
    }
    assert!(matches!(&got[0], Notified::New(n) if n.id == "n1"));
    assert!(matches!(&got[1], Notified::New(n) if n.id == "n2"));
    assert_eq!(got[2], Notified::Unread(2));
    assert_eq!(client.unread_count().expect("count"), 2);
    assert_eq!(client.notifications(None, true, 50).expect("read").len(), 2);

    client.mark_read(vec!["n1".into()]).expect("mark");
    assert_eq!(client.unread_count().expect("count"), 1, "optimistic");
    assert_eq!(client.notifications(None, true, 50).expect("read").len(), 1);
    fixture::eventually("acked", || {
        client.outbox().map(|o| o.is_empty()).unwrap_or(false)
    })
    .await;
    assert_eq!(client.unread_count().expect("count"), 1);

    // A reconnect asks only for what is new.
    server.with(|s| s.drop_all());
    server
        .until("resubscribed", |s| s.subscribes.len() >= 2)
        .await;
    assert_eq!(server.with(|s| s.subscribes[1].1), Some(2));
    client.shutdown().await;
}

#[tokio::test]
async fn an_accepted_invitation_is_queued_with_its_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    server.with(|s| {
        let mut n = notification(1, "alice");
        n.kind = "invited".into();
        n.room = Some("secret".into());
        n.data = serde_json::json!({ "id": "inv1", "room": "secret", "invitee": "alice" });
        s.notifications = vec![n];
        s.unread = 1;
        s.silent = true;
    });
    let client = connected(dir.path(), &server).await;
    fixture::eventually("invitation stored", || {
        client
            .notifications(None, false, 10)
            .map(|n| n.len() == 1)
            .unwrap_or(false)
    })
    .await;
    let accept = client.accept_invitation("inv1".into()).expect("accept");
    let send = client
        .send_message("secret".into(), "hello".into())
        .expect("send")
        .local_id;
    let outbox = client.outbox().expect("outbox");
    let rooms: Vec<_> = outbox
        .iter()
        .map(|e| (e.id.clone(), e.room.clone()))
        .collect();
    assert_eq!(
        rooms,
        [
            (accept, Some("secret".to_string())),
            (send, Some("secret".to_string()))
        ]
    );
    // The acceptance is a barrier: the message waits for its answer.
    server
        .until("acceptance sent", |s| !s.mutations.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.with(|s| s.mutations.len()), 1);
    client.shutdown().await;
}
