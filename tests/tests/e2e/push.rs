//! Push on the device: the app holds the account's store and keeps writing to it, while a
//! notification extension's process (`roam-e2e-push`, a real second process) opens the same
//! store with a `PushHandler`, shows a message the store does not hold yet (fetched from the
//! server), clears on a read push, and counts the badge. Neither process fails or blocks the
//! other, and the app's own client sees consistent data afterwards.

use std::time::Duration;

use roam_core::{RoomKind, SendState};
use roam_tests::{fast_config, open_client, wait_until, Backend};
use serde_json::{json, Value};
use tokio::process::Command;

/// Runs the extension process on `payloads` and returns its output lines (the last one is the
/// memory line).
async fn extension(backend: &Backend, db: &std::path::Path, payloads: &[String]) -> Vec<Value> {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(env!("CARGO_BIN_EXE_roam-e2e-push"))
            .arg(db)
            .arg(backend.url())
            .arg("alice")
            .arg(backend.token("alice"))
            // A generous deadline: this checks what is shown; the push bench measures how fast.
            .arg("5000")
            .args(payloads)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the extension process took too long")
    .expect("run roam-e2e-push");
    assert!(
        out.status.success(),
        "extension failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extension_shows_and_clears_next_to_the_writing_app() {
    let backend = Backend::up().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("alice.db");
    let app = open_client(
        fast_config(&db, &backend.url(), "alice"),
        backend.token("alice"),
    );
    app.start().await.expect("start");
    app.create_room("team".into(), RoomKind::Public, "Team".into(), None)
        .expect("create");
    wait_until("the room is confirmed", || {
        app.room("team".into())
            .ok()
            .flatten()
            .is_some_and(|r| r.send_state == SendState::Sent)
    })
    .await;
    let bob = backend.api("bob");
    bob.join("team").await;
    let (status, room) = bob.get("/v1/rooms/team").await;
    assert_eq!(status, 200, "{room}");
    let head = room["head_seq"].as_u64().expect("head_seq");
    wait_until("alice has followed the room up to bob's join", || {
        app.room("team".into())
            .ok()
            .flatten()
            .is_some_and(|r| r.last_seq >= head)
    })
    .await;

    // The app goes to the background (no socket) but keeps its store open, and bob writes.
    app.set_online(false);
    wait_until("alice is offline", || {
        app.connection_state() == roam_core::ConnectionState::Offline
    })
    .await;
    let (status, sent) = bob
        .post("/v1/rooms/team/messages", json!({"body": "lunch at noon?"}))
        .await;
    assert_eq!(status, 200, "{sent}");
    let seq = sent["seq"].as_u64().expect("seq");
    let id = sent["id"].as_str().expect("id").to_owned();
    assert!(
        app.message(id.clone()).expect("read").is_none(),
        "not local yet"
    );

    // While the extension runs, the app keeps writing (messages queued offline).
    let writer = {
        let app = app.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            for i in 0..200 {
                app.send_message("team".into(), format!("draft {i}"))
                    .expect("the app writes next to the extension");
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            n
        })
    };
    let message = json!({"aps": {"alert": {"title": "New message"}, "mutable-content": 1},
        "roam": {"v": 1, "kind": "message", "room": "team", "seq": seq, "message": id,
                 "unread": 7}})
    .to_string();
    let fcm_read = json!({"roam": json!({"v": 1, "kind": "read", "room": "team", "seq": seq,
        "unread": 0}).to_string()})
    .to_string();
    let lines = extension(&backend, &db, &[message, fcm_read]).await;
    let written = writer.join().expect("writer thread");
    assert_eq!(written, 200);

    let shown = &lines[0];
    assert_eq!(shown["kind"], "show", "{shown}");
    assert_eq!(shown["room_title"], "Team");
    assert_eq!(shown["sender"], "bob");
    assert_eq!(shown["body"], "lunch at noon?");
    // Counted from the store (it followed the room up to the message before): bob's message
    // is the one unread, whatever the payload said.
    assert_eq!(shown["badge"], 1, "{shown}");
    let cleared = &lines[1];
    assert_eq!(cleared["kind"], "clear", "{cleared}");
    assert_eq!(
        (cleared["seq"].as_u64(), cleared["badge"].as_u64()),
        (Some(seq), Some(0))
    );

    // The extension wrote nothing: the app's store still lacks bob's message until the app
    // itself catches up, and then holds it once, with its drafts all sent.
    assert!(app.message(id.clone()).expect("read").is_none());
    app.set_online(true);
    app.sync_once(Duration::from_secs(20)).await.expect("sync");
    let m = app.message(id).expect("read").expect("caught up");
    assert_eq!((m.body.as_str(), m.seq), ("lunch at noon?", Some(seq)));
    let drafts = app
        .messages("team".into(), None, 200)
        .expect("read")
        .into_iter()
        .filter(|m| m.body.starts_with("draft "))
        .collect::<Vec<_>>();
    assert_eq!(drafts.len(), 200);
    assert!(drafts.iter().all(|m| m.send_state == SendState::Sent));
    app.shutdown().await;
}
