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
