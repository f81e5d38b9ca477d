//! Permanent failure: a send into a room the user was banned from ends `failed` with a reason,
//! sends to other rooms go on, and retry and discard work.

use std::sync::{Arc, Mutex};

use roam_core::{RoomListener, RoomUpdate, SendState};
use roam_tests::{all_local, fast_config, open_client, wait_until, Backend};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banned_room_fails_without_blocking_others() {
    let backend = Backend::up().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let owner = backend.api("alice");
    owner.create_room("open", "public").await;
    owner.create_room("closed", "public").await;
    let b = open_client(
        fast_config(&dir.path().join("b.db"), &backend.url(), "bob"),
        backend.token("bob"),
    );
    b.start().await.expect("start");
    b.join_room("open".into()).expect("join");
    b.join_room("closed".into()).expect("join");
    wait_until("bob joined both", || b.metrics().outbox_depth == 0).await;

    let (s, body) = owner
        .post("/v1/rooms/closed/bans", json!({"user": "bob"}))
        .await;
    assert_eq!(s, 200, "ban: {body}");

    let doomed = b
        .send_message("closed".into(), "let me in".into())
        .expect("queue");
    let other = b
        .send_message("closed".into(), "second try".into())
        .expect("queue");
    let fine = b
        .send_message("open".into(), "hello".into())
        .expect("queue");
    let state = |id: &str| b.message(id.into()).ok().flatten().map(|m| m.send_state);
    wait_until("the open room's message is sent", || {
        state(&fine.local_id) == Some(SendState::Sent)
    })
    .await;
    wait_until("the banned room's messages failed", || {
        matches!(state(&doomed.local_id), Some(SendState::Failed { .. }))
            && matches!(state(&other.local_id), Some(SendState::Failed { .. }))
    })
    .await;
    match state(&doomed.local_id) {
        Some(SendState::Failed { code, message }) => {
            assert_eq!(code, "forbidden");
            assert!(!message.is_empty());
        }
        s => panic!("expected failed, got {s:?}"),
    }
    let m = b.metrics();
    assert_eq!(m.outbox_failed, 2, "{m:?}");
    assert_eq!(m.outbox_depth, 0, "failed entries block nothing: {m:?}");

    // Discard one: it disappears locally and from the outbox.
    b.discard(other.local_id.clone()).expect("discard");
    assert!(b.message(other.local_id.clone()).expect("read").is_none());
    assert!(!b
        .outbox()
        .expect("outbox")
        .iter()
        .any(|e| e.id == other.local_id));

    // Retry while still banned: back to pending, then failed again. The resend can fail before
    // this test gets to read the message, so the transitions are observed, not sampled.
    let states = Arc::new(States::default());
    let sub = b.subscribe_room_updates(Some("closed".into()), states.clone());
    b.retry(doomed.local_id.clone()).expect("retry");
    wait_until("the retry failed again", || {
        let seen = states.of(&doomed.local_id);
        seen.len() >= 2
            && seen[seen.len() - 2] == SendState::Pending
            && seen[seen.len() - 1].is_failed()
    })
    .await;
    assert_eq!(
        states.of(&doomed.local_id).first(),
        Some(&SendState::Pending),
        "retry puts the message back in the queue first"
    );
    sub.close();
    assert!(
        b.retry("no-such-entry".into()).is_err(),
        "retrying an unknown entry is an error"
    );

    // Unban, rejoin, retry: it goes through, exactly once.
    let r = owner
        .http
        .delete(format!("{}/v1/rooms/closed/bans/bob", owner.base))
        .bearer_auth(&owner.token)
        .header("Idempotency-Key", "unban-bob-1")
        .send()
        .await
        .expect("unban");
    assert_eq!(r.status().as_u16(), 200);
    b.join_room("closed".into()).expect("rejoin");
    wait_until("bob rejoined", || b.metrics().outbox_depth == 0).await;
    b.retry(doomed.local_id.clone()).expect("retry");
    wait_until("the retried message is sent", || {
        state(&doomed.local_id) == Some(SendState::Sent)
    })
    .await;
    let bodies: Vec<String> = owner
        .all_messages("closed")
        .await
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(bodies, vec!["let me in".to_owned()]);
    assert_eq!(
        all_local(&b, "closed")
            .iter()
            .filter(|m| m.body == "second try")
            .count(),
        0
    );
    b.shutdown().await;
}

/// Records every send-state change of a room's messages, in delivery order.
#[derive(Default)]
struct States(Mutex<Vec<(String, SendState)>>);

impl States {
    fn of(&self, local_id: &str) -> Vec<SendState> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter(|(id, _)| id == local_id)
            .map(|(_, s)| s.clone())
            .collect()
    }
}

impl RoomListener for States {
    fn on_room_update(&self, update: RoomUpdate) {
        if let RoomUpdate::SendStateChanged {
            local_id, state, ..
        } = update
        {
            self.0.lock().expect("lock").push((local_id, state));
        }
    }
}
