//! Outbox replay: pipelining, ack order, transient and permanent failures, retry and discard,
//! exactly-once delivery across a dropped connection, document conflicts.

use std::time::Duration;

use roam_core::{DocumentUpdate, RoomUpdate, SendState};

use crate::fixture::{self, collector, next_matching, FakeServer};

fn drained(client: &roam_core::Client) -> bool {
    client.outbox().map(|o| o.is_empty()).unwrap_or(false)
}

#[tokio::test]
async fn pipelined_replay_with_acks_in_any_order_keeps_room_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    server.with(|s| {
        for r in ["a", "b", "c"] {
            s.create_room(r, "bob");
        }
        // Hold answers until 6 are pending, then release them newest first.
        s.ack_batch = 6;
    });
    let client = fixture::open(fixture::config(dir.path(), &server.url(), "alice"));
    for i in 0..10 {
        for r in ["a", "b", "c"] {
            client
                .send_message(r.into(), format!("{r}{i}"))
                .expect("send");
        }
    }
    client.start().await.expect("start");
    fixture::eventually("outbox drained", || drained(&client)).await;

    for r in ["a", "b", "c"] {
        let expected: Vec<String> = (0..10).map(|i| format!("{r}{i}")).collect();
        assert_eq!(
            server.with(|s| s.bodies(r)),
            expected,
            "server order in room {r}"
        );
        let local = client.messages(r.into(), None, 50).expect("read");
        assert_eq!(
            local.iter().map(|m| m.body.clone()).collect::<Vec<_>>(),
            expected
        );
        assert!(local.iter().all(|m| m.send_state == SendState::Sent));
        let seqs: Vec<u64> = local.iter().map(|m| m.seq.unwrap_or(0)).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "seqs increase: {seqs:?}"
        );
    }
    // Pipelined: the server saw several mutations before answering any; exactly once each.
    assert!(server.with(|s| s.max_outstanding) >= 6);
    assert_eq!(server.with(|s| s.applied.len()), 30);
    assert_eq!(server.with(|s| s.replays), 0);
    client.shutdown().await;
}

#[tokio::test]
async fn rate_limited_mutations_are_retried_after_retry_after_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    server.with(|s| {
        s.create_room("a", "bob");
        s.rate_limit_once.insert("m0".into(), 300);
    });
    let client = fixture::open(fixture::config(dir.path(), &server.url(), "alice"));
    for i in 0..4 {
        client
            .send_message("a".into(), format!("m{i}"))
            .expect("send");
    }
    client.start().await.expect("start");
    fixture::eventually("outbox drained", || drained(&client)).await;

    assert_eq!(server.with(|s| s.bodies("a")), ["m0", "m1", "m2", "m3"]);
    let (refused, first, retried) = server.with(|s| {
        let first = s.mutation_times[0];
        let keys: Vec<&String> = s.mutations.iter().map(|(k, _)| k).collect();
        let retry_idx = keys
            .iter()
            .skip(1)
            .position(|k| *k == keys[0])
            .map(|p| p + 1)
            .expect("m0 sent again");
        (s.rate_limited, first, s.mutation_times[retry_idx])
    });
    assert!(refused >= 1);
    assert!(
        retried.duration_since(first) >= Duration::from_millis(290),
        "retry_after honoured: {:?}",
        retried.duration_since(first)
    );
    let entry_attempts = client.metrics().retries;
    assert!(entry_attempts >= 1);
    client.shutdown().await;
}

#[tokio::test]
async fn a_permanent_failure_is_marked_and_blocks_nothing_then_retry_and_discard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    server.with(|s| {
        s.create_room("locked", "bob");
        s.create_room("open", "bob");
        s.forbidden_rooms.insert("locked".into());
    });
    let client = fixture::open(fixture::config(dir.path(), &server.url(), "alice"));
    let (listener, mut updates) = collector::<RoomUpdate>();
    let _sub = client.subscribe_room_updates(Some("locked".into()), listener);
    let x1 = client
        .send_message("locked".into(), "x1".into())
        .expect("send");
    client
        .send_message("open".into(), "o1".into())
        .expect("send");
    let x2 = client
        .send_message("locked".into(), "x2".into())
        .expect("send");
    client
        .send_message("open".into(), "o2".into())
        .expect("send");
    client.start().await.expect("start");

    fixture::eventually("both locked sends failed", || {
        client
            .messages("locked".into(), None, 10)
            .map(|ms| ms.iter().all(|m| m.send_state.is_failed()))
            .unwrap_or(false)
    })
    .await;
    fixture::eventually("open room delivered", || {
        server.with(|s| s.bodies("open").len() == 2)
    })
    .await;
    assert_eq!(server.with(|s| s.bodies("open")), ["o1", "o2"]);
    let failed = client
        .message(x1.local_id.clone())
        .expect("read")
        .expect("x1");
    assert_eq!(
        failed.send_state,
        SendState::Failed {
            code: "forbidden".into(),
            message: "you are banned from this room".into()
        }
    );
    next_matching(&mut updates, "failed state", |u| {
        matches!(
            u,
            RoomUpdate::SendStateChanged {
                state: SendState::Failed { .. },
                ..
            }
        )
    })
    .await;
    let outbox = client.outbox().expect("outbox");
    assert_eq!(outbox.len(), 2);
    assert!(outbox.iter().all(|e| e.state.is_failed()));

    // The ban is lifted: retry one, discard the other.
    server.with(|s| s.forbidden_rooms.clear());
    client.retry(x1.local_id.clone()).expect("retry");
    // The resend may be answered before the message could be read back: observe the change.
    next_matching(&mut updates, "back to pending", |u| {
        matches!(
            u,
            RoomUpdate::SendStateChanged {
                local_id,
                state: SendState::Pending,
                ..
            } if *local_id == x1.local_id
        )
    })
    .await;
    client.discard(x2.local_id.clone()).expect("discard");
    assert!(client.message(x2.local_id.clone()).expect("read").is_none());
    fixture::eventually("retried entry delivered", || drained(&client)).await;
    assert_eq!(server.with(|s| s.bodies("locked")), ["x1"]);
    assert_eq!(
        client
            .message(x1.local_id)
            .expect("read")
            .expect("x1")
            .send_state,
        SendState::Sent
    );
    client.shutdown().await;
}

#[tokio::test]
async fn a_connection_dropped_mid_replay_still_delivers_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    server.with(|s| {
        s.create_room("a", "bob");
        s.create_room("b", "bob");
        // The 4th mutation is applied but never answered; the socket dies with it.
        s.drop_after_mutations = Some(3);
    });
    let client = fixture::open(fixture::config(dir.path(), &server.url(), "alice"));
    for i in 0..6 {
        client
            .send_message("a".into(), format!("a{i}"))
            .expect("send");
        client
            .send_message("b".into(), format!("b{i}"))
            .expect("send");
    }
    client.start().await.expect("start");
    fixture::eventually("outbox drained", || drained(&client)).await;
    assert_eq!(
        server.with(|s| s.bodies("a")),
        ["a0", "a1", "a2", "a3", "a4", "a5"]
    );
    assert_eq!(
        server.with(|s| s.bodies("b")),
        ["b0", "b1", "b2", "b3", "b4", "b5"]
    );
    assert_eq!(server.with(|s| s.applied.len()), 12, "each applied once");
    assert!(
        server.with(|s| s.replays) >= 1,
        "the unanswered one was replayed"
    );
    assert!(server.with(|s| s.connections) >= 2);
    client.shutdown().await;
}

#[tokio::test]
async fn a_document_conflict_delivers_the_current_version_for_a_rebase() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    server.with(|s| {
        s.create_room("team", "bob");
        s.docs.insert(
            ("team".into(), "notes".into()),
            roam_proto::Document {
                room: "team".into(),
                doc: "notes".into(),
                version: 2,
                content: "theirs".into(),
                updated_by: "bob".into(),
                updated_at: 1,
            },
        );
    });
    let client = fixture::open(fixture::config(dir.path(), &server.url(), "alice"));
    let (listener, mut docs) = collector::<DocumentUpdate>();
    let _sub = client.subscribe_documents(Some("team".into()), listener);
    let local = client
        .put_document("team".into(), "notes".into(), 1, "mine".into())
        .expect("put");
    assert_eq!(local.version, 2);
    assert_eq!(local.send_state, SendState::Pending);
    client.start().await.expect("start");

    let conflict = next_matching(&mut docs, "conflict", |u| {
        matches!(u, DocumentUpdate::Conflict { .. })
    })
    .await;
    let DocumentUpdate::Conflict { local, current } = conflict else {
        unreachable!()
    };
    assert_eq!(local.content, "mine");
    assert_eq!(current.version, 2);
    assert_eq!(current.content, "theirs");
    let stored = client
        .document("team".into(), "notes".into())
        .expect("read")
        .expect("doc");
    assert!(stored.send_state.is_failed());
    assert_eq!(stored.conflict.as_ref().map(|d| d.version), Some(2));

    // Rebase on the server's version: the failed edit is superseded.
    client
        .put_document(
            "team".into(),
            "notes".into(),
            current.version,
            "theirs+mine".into(),
        )
        .expect("rebased put");
    fixture::eventually("outbox drained", || drained(&client)).await;
    let stored = client
        .document("team".into(), "notes".into())
        .expect("read")
        .expect("doc");
    assert_eq!(stored.version, 3);
    assert_eq!(stored.content, "theirs+mine");
    assert_eq!(stored.send_state, SendState::Sent);
    assert_eq!(stored.conflict, None);
    client.shutdown().await;
}
