//! Offline send: a client queues 100 messages over 3 rooms with the server down; they show as
//! pending in order; once the server starts they arrive exactly once, in order, turn `sent`,
//! and a second client sees the same order.

use roam_core::{RoomKind, SendState};
use roam_tests::{fast_config, open_client, wait_until, Backend};

const ROOMS: [&str; 3] = ["alpha", "beta", "gamma"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_sends_arrive_once_in_order() {
    let mut backend = Backend::down();
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open_client(
        fast_config(&dir.path().join("a.db"), &backend.url(), "alice"),
        backend.token("alice"),
    );
    a.start().await.expect("start");
    for room in ROOMS {
        a.create_room(room.into(), RoomKind::Public, room.into(), None)
            .expect("create room offline");
    }
    for i in 0..100 {
        let room = ROOMS[i % 3];
        let m = a
            .send_message(room.into(), format!("m{i:03}"))
            .expect("send");
        assert_eq!(m.send_state, SendState::Pending);
    }
    for (r, room) in ROOMS.iter().enumerate() {
        let local = a.messages((*room).into(), None, 200).expect("read");
        let bodies: Vec<String> = local.iter().map(|m| m.body.clone()).collect();
        let expected: Vec<String> = (0..100)
            .filter(|i| i % 3 == r)
            .map(|i| format!("m{i:03}"))
            .collect();
        assert_eq!(bodies, expected, "local order of {room}");
        assert!(local.iter().all(|m| m.send_state == SendState::Pending));
    }

    backend.start().await;
    a.network_available();
    wait_until("alice's outbox is empty", || a.metrics().outbox_depth == 0).await;

    let api = backend.api("alice");
    for (r, room) in ROOMS.iter().enumerate() {
        let server: Vec<String> = api
            .all_messages(room)
            .await
            .iter()
            .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
            .collect();
        let expected: Vec<String> = (0..100)
            .filter(|i| i % 3 == r)
            .map(|i| format!("m{i:03}"))
            .collect();
        assert_eq!(
            server, expected,
            "server holds {room} exactly once, in order"
        );
        let local = a.messages((*room).into(), None, 200).expect("read");
        assert!(
            local
                .iter()
                .all(|m| m.send_state == SendState::Sent && m.seq.is_some()),
            "every local message of {room} is sent"
        );
    }

    let b = open_client(
        fast_config(&dir.path().join("b.db"), &backend.url(), "bob"),
        backend.token("bob"),
    );
    b.start().await.expect("start b");
    for room in ROOMS {
        b.join_room(room.into()).expect("join");
    }
    for (r, room) in ROOMS.iter().enumerate() {
        let expected: Vec<String> = (0..100)
            .filter(|i| i % 3 == r)
            .map(|i| format!("m{i:03}"))
            .collect();
        wait_until(&format!("bob sees all of {room}"), || {
            b.messages((*room).into(), None, 200)
                .map(|m| m.iter().map(|m| m.body.clone()).collect::<Vec<_>>() == expected)
                .unwrap_or(false)
        })
        .await;
    }
    a.shutdown().await;
    b.shutdown().await;
    backend.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_fold_into_unsent_sends_and_deleting_one_leaves_no_trace() {
    let backend = Backend::up().await;
    backend.api("alice").create_room("fold", "public").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open_client(
        fast_config(&dir.path().join("a.db"), &backend.url(), "alice"),
        backend.token("alice"),
    );
    // Not started: everything below is queued and never on the wire.
    let kept = a.send_message("fold".into(), "draft".into()).expect("send");
    let gone = a.send_message("fold".into(), "oops".into()).expect("send");
    let edited = a
        .edit_message("fold".into(), kept.local_id.clone(), "final".into())
        .expect("edit");
    assert_eq!(edited.body, "final");
    assert_eq!(edited.local_id, kept.local_id);
    a.delete_message("fold".into(), gone.local_id.clone())
        .expect("delete");
    let outbox = a.outbox().expect("outbox");
    assert_eq!(outbox.len(), 1, "one entry, the send: {outbox:?}");
    assert!(outbox[0].mutation_json.contains("final"));
    let local = a.messages("fold".into(), None, 50).expect("messages");
    assert_eq!(
        local.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["final"],
        "the deleted one is gone without a trace"
    );

    a.start().await.expect("start");
    wait_until("sent", || a.metrics().outbox_depth == 0).await;
    let stored = backend.api("alice").all_messages("fold").await;
    assert_eq!(
        stored.iter().map(|m| m["body"].clone()).collect::<Vec<_>>(),
        [serde_json::json!("final")],
        "the server saw one message, with the latest text, never edited"
    );
    assert!(stored[0].get("edited_at").is_none_or(|v| v.is_null()));
    // Sent: an edit now is a real edit.
    let again = a
        .edit_message("fold".into(), kept.local_id.clone(), "later".into())
        .expect("edit");
    assert_eq!(again.body, "later");
    wait_until("edited on the server", || a.metrics().outbox_depth == 0).await;
    a.shutdown().await;
}
