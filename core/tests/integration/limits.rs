//! What the server sends is read within what the protocol can carry: a compressed message that
//! inflates past the bound (a deflate bomb) ends the connection, the client reconnects with a
//! growing backoff and catches up from its cursor; the largest legitimate messages (a catch-up
//! page, an event just over the frame limit) still go through.

use std::time::Duration;

use roam_core::ConnectionState;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::fixture::{self, collector, next, FakeServer};

/// A few KB of DEFLATE inflating to 16 MiB of spaces: far past the core's bound (2 MiB), well
/// within what it accepted before (64 MiB).
fn bomb() -> WsMessage {
    let packed = fixture::deflate(&vec![b' '; 16 << 20]);
    assert!(packed.len() < 64 * 1024, "{}", packed.len());
    WsMessage::binary(packed)
}

#[tokio::test]
async fn a_deflate_bomb_closes_the_connection_and_the_client_reconnects_and_catches_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    let client = fixture::joined_client(dir.path(), &server).await;
    let connections = server.with(|s| s.connections);
    let subscribes = server.with(|s| s.subscribes.len());

    // The bomb, then a live event the client will not read on this connection.
    server.with(|s| {
        s.send_raw_all(bomb());
        s.post("general", "bob", "after the bomb");
    });
    fixture::eventually("caught up after reconnecting", || {
        client
            .messages("general".into(), None, 50)
            .is_ok_and(|m| m.iter().any(|m| m.body == "after the bomb"))
    })
    .await;

    assert_eq!(client.metrics().protocol_violations, 1);
    server
        .until("a second connection", |s| s.connections == connections + 1)
        .await;
    // It came back through a subscription from the cursor it had before the bomb.
    let resubscribed = server.with(|s| s.subscribes[subscribes..].to_vec());
    assert!(
        resubscribed
            .iter()
            .any(|(rooms, _)| rooms.contains(&("general".to_owned(), 5))),
        "{resubscribed:?}"
    );
    fixture::cursor_reaches(&client, "general", 6, "cursor at 6").await;
    client.shutdown().await;
}

#[tokio::test]
async fn a_server_that_keeps_sending_bombs_gets_a_growing_backoff() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    server.with(|s| s.on_connect = vec![bomb()]);
    let client = fixture::open(fixture::config(dir.path(), &server.url(), "alice"));
    let (listener, mut states) = collector::<ConnectionState>();
    let _sub = client.subscribe_connection_state(listener);
    client.start().await.expect("start");
    let mut delays = Vec::new();
    while delays.len() < 4 {
        if let ConnectionState::Waiting { retry_in } = next(&mut states, "state").await {
            delays.push(retry_in);
        }
    }
    // initial 50 ms, max 200 ms, randomisation 0.5: a backoff started over after every
    // connection that reached `hello` would stay at 25–75 ms; the third delay is 100–200 ms.
    assert!(
        delays.iter().any(|d| *d > Duration::from_millis(75)),
        "{delays:?}"
    );
    assert!(client.metrics().protocol_violations >= 4);
    client.shutdown().await;
}

#[tokio::test]
async fn a_compressed_catch_up_page_as_large_as_the_server_sends_is_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    // 510 messages of 2 KB: with the room's other events one page of about 1.1 MiB of frames,
    // sent as one compressed message.
    server.with(|s| {
        s.compress_replay = true;
        s.create_room("general", "bob");
        for i in 0..510 {
            s.post(
                "general",
                "bob",
                &format!("{i:>4} {}", "lorem ipsum ".repeat(170)),
            );
        }
    });
    let client = fixture::open(fixture::config(dir.path(), &server.url(), "alice"));
    client.start().await.expect("start");
    client.join_room("general".into()).expect("join");
    // room_created, 510 messages, member_joined
    fixture::cursor_reaches(&client, "general", 512, "cursor at 512").await;
    let newest = client
        .messages("general".into(), None, 1)
        .expect("read")
        .pop()
        .expect("a message");
    assert!(
        newest.body.starts_with(" 509 lorem"),
        "{}",
        &newest.body[..20]
    );
    let m = client.metrics();
    assert_eq!(m.protocol_violations, 0);
    assert_eq!(m.connections, 1);
    client.shutdown().await;
}

#[tokio::test]
async fn an_event_just_over_the_frame_limit_is_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    let client = fixture::joined_client(dir.path(), &server).await;
    // A document as large as a 1 MiB request body carries: 170 KiB of control characters
    // (within the 512 KiB content limit), each written `\u0001` in JSON, so its event frame,
    // envelope and all, is a little over 1 MiB.
    let content = "\u{1}".repeat((roam_proto::validate::MAX_FRAME_BYTES - 64) / 6);
    assert!(content.len() <= roam_proto::validate::MAX_DOCUMENT_BYTES);
    server.with(|s| s.put_document("general", "big", "bob", &content));
    fixture::eventually("document applied", || {
        client
            .document("general".into(), "big".into())
            .ok()
            .flatten()
            .is_some_and(|d| d.content.len() == content.len())
    })
    .await;
    let m = client.metrics();
    assert_eq!(m.protocol_violations, 0);
    assert_eq!(m.connections, 1);
    client.shutdown().await;
}
