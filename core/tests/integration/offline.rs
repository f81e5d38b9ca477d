//! Offline-first: writes appear at once, survive a restart, bad input is refused up front.

use roam_core::{Error, RoomKind, RoomUpdate, SendState};

use crate::fixture::{self, collector, dead_url, next, FakeServer};

#[tokio::test]
async fn offline_writes_appear_at_once_as_pending_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = fixture::open(fixture::config(dir.path(), &dead_url().await, "alice"));
    let (listener, mut updates) = collector::<RoomUpdate>();
    let _sub = client.subscribe_room_updates(Some("general".into()), listener);

    let room = client
        .create_room(
            "general".into(),
            RoomKind::Public,
            "General".into(),
            Some(r#"{"topic":"x"}"#.into()),
        )
        .expect("create");
    assert_eq!(room.send_state, SendState::Pending);
    assert!(room.joined);
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(
            client
                .send_message("general".into(), format!("g{i}"))
                .expect("send"),
        );
        client
            .send_message("random".into(), format!("r{i}"))
            .expect("send");
    }

    let msgs = client.messages("general".into(), None, 50).expect("read");
    let bodies: Vec<_> = msgs.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["g0", "g1", "g2", "g3", "g4"]);
    for (m, s) in msgs.iter().zip(&sent) {
        assert_eq!(m.send_state, SendState::Pending);
        assert_eq!(m.seq, None);
        assert_eq!(m.id, None);
        assert_eq!(m.sender, "alice");
        assert_eq!(&m.local_id, &s.local_id);
    }
    let outbox = client.outbox().expect("outbox");
    assert_eq!(outbox.len(), 11);
    assert_eq!(outbox[0].op, "room.create");
    assert!(outbox.iter().all(|e| e.state == SendState::Pending));
    let general: Vec<_> = outbox
        .iter()
        .filter(|e| e.room.as_deref() == Some("general") && e.op == "message.send")
        .map(|e| e.id.clone())
        .collect();
    assert_eq!(
        general,
        sent.iter().map(|m| m.local_id.clone()).collect::<Vec<_>>()
    );

    // The listener saw the room, then each message, in order.
    assert!(matches!(
        next(&mut updates, "room").await,
        RoomUpdate::RoomChanged(_)
    ));
    for i in 0..5 {
        match next(&mut updates, "message").await {
            RoomUpdate::MessageAdded(m) => assert_eq!(m.body, format!("g{i}")),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_outbox_survives_a_restart_and_is_delivered_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    server.with(|s| s.create_room("general", "bob"));
    let cfg = fixture::config(dir.path(), &server.url(), "alice");
    let ids: Vec<String> = {
        let client = fixture::open(cfg.clone());
        (0..4)
            .map(|i| {
                client
                    .send_message("general".into(), format!("m{i}"))
                    .expect("send")
                    .local_id
            })
            .collect()
        // dropped without ever starting: as if the process died
    };

    let client = fixture::open(cfg);
    let outbox = client.outbox().expect("outbox");
    assert_eq!(outbox.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), ids);
    let msgs = client.messages("general".into(), None, 50).expect("read");
    assert_eq!(msgs.len(), 4);
    assert!(msgs.iter().all(|m| m.send_state == SendState::Pending));

    client.start().await.expect("start");
    fixture::eventually("outbox drained", || {
        client.outbox().map(|o| o.is_empty()).unwrap_or(false)
    })
    .await;
    assert_eq!(
        server.with(|s| s.bodies("general")),
        ["m0", "m1", "m2", "m3"]
    );
    assert_eq!(server.with(|s| s.applied.len()), 4);
    let msgs = client.messages("general".into(), None, 50).expect("read");
    let seqs: Vec<_> = msgs.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [Some(2), Some(3), Some(4), Some(5)]);
    assert!(msgs.iter().all(|m| m.send_state == SendState::Sent));
    // The server stored each message under the id the client chose.
    assert_eq!(
        msgs.iter()
            .map(|m| m.id.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        ids
    );
    client.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_queued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = fixture::open(fixture::config(dir.path(), &dead_url().await, "alice"));
    let cases = [
        client.send_message("general".into(), String::new()).err(),
        client
            .send_message("no spaces allowed".into(), "hi".into())
            .err(),
        client
            .send_message("general".into(), "x".repeat(64 * 1024 + 1))
            .err(),
        client
            .create_room(
                "ok".into(),
                RoomKind::Public,
                "t".into(),
                Some("[1,2]".into()),
            )
            .err(),
        client.update_room("ok".into(), None, None, None).err(),
        client
            .invite("ok".into(), "bad user".into(), None, None)
            .err(),
        client
            .set_role("ok".into(), "bob".into(), roam_core::Role::Owner)
            .err(),
        client
            .put_document("ok".into(), "-bad".into(), 0, "c".into())
            .err(),
        client.mark_read(vec!["".into()]).err(),
        client.messages("general".into(), None, 0).err(),
    ];
    for (i, err) in cases.into_iter().enumerate() {
        assert!(
            matches!(err, Some(Error::InvalidInput { .. })),
            "case {i}: {err:?}"
        );
    }
    assert!(client.outbox().expect("outbox").is_empty());
    assert!(client.rooms().expect("rooms").is_empty());
    assert!(client
        .messages("general".into(), None, 10)
        .expect("read")
        .is_empty());
}

#[tokio::test]
async fn discarding_a_pending_send_removes_the_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = fixture::open(fixture::config(dir.path(), &dead_url().await, "alice"));
    let a = client
        .send_message("general".into(), "a".into())
        .expect("send");
    let b = client
        .send_message("general".into(), "b".into())
        .expect("send");
    client.discard(a.local_id.clone()).expect("discard");
    let msgs = client.messages("general".into(), None, 10).expect("read");
    assert_eq!(
        msgs.iter().map(|m| m.local_id.clone()).collect::<Vec<_>>(),
        [b.local_id]
    );
    assert_eq!(client.outbox().expect("outbox").len(), 1);
    assert!(matches!(
        client.discard(a.local_id),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        client.retry("nope".into()),
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn edits_of_a_queued_message_fold_into_its_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    server.with(|s| s.create_room("general", "bob"));
    let client = fixture::open(fixture::config(dir.path(), &server.url(), "alice"));
    let m = client
        .send_message("general".into(), "helo".into())
        .expect("send");
    let edited = client
        .edit_message("general".into(), m.local_id.clone(), "hello".into())
        .expect("edit");
    assert_eq!(edited.body, "hello");
    assert_eq!(edited.send_state, SendState::Pending);
    let gone = client
        .send_message("general".into(), "oops".into())
        .expect("send");
    client
        .delete_message("general".into(), gone.local_id.clone())
        .expect("delete");
    // A delete of a message never sent removes it without a trace; the edit folded into the
    // send: one entry, with the latest text.
    assert!(client
        .message(gone.local_id.clone())
        .expect("read")
        .is_none());
    assert_eq!(client.outbox().expect("outbox").len(), 1);

    client.start().await.expect("start");
    fixture::eventually("outbox drained", || {
        client.outbox().map(|o| o.is_empty()).unwrap_or(false)
    })
    .await;
    assert_eq!(server.with(|s| s.bodies("general")), ["hello"]);
    let local = client
        .message(m.local_id.clone())
        .expect("read")
        .expect("message");
    assert_eq!(local.body, "hello");
    assert_eq!(local.send_state, SendState::Sent);
    client.shutdown().await;
}
