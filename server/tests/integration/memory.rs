//! Giving memory back after sockets close (`roam_server::memory`): a trim forgets what users
//! without a socket left behind and changes no answer for anyone.

use serde_json::json;

use crate::fixtures::{TestServer, WAIT};

/// Waits until the hub holds `n` sockets.
async fn sockets_settle_at(t: &TestServer, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while t.server().state().hub.connection_count() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hub still holds {} sockets",
            t.server().state().hub.connection_count()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_trim_forgets_departed_users_and_changes_no_answer() {
    let t = TestServer::start().await;
    t.as_user("owner").create_room("lobby", "public").await;

    // Readers of the public room: each subscription caches the reader's (absent) membership.
    let mut stays = t.ws("stays").await;
    assert_eq!(stays.subscribe(&[("lobby", 0)]).await["type"], "ack");
    let mut gone = Vec::new();
    for i in 0..3 {
        let mut ws = t.ws(&format!("gone-{i}")).await;
        assert_eq!(ws.subscribe(&[("lobby", 0)]).await["type"], "ack");
        gone.push(ws);
    }
    let state = t.server().state();
    assert_eq!(state.service.cache.member("lobby", "gone-0"), Some(None));
    drop(gone);
    sockets_settle_at(&t, 1).await;

    let trimmed = roam_server::memory::trim(state).await;
    assert_eq!(
        trimmed.cache_entries, 3,
        "the three departed readers' entries"
    );
    assert_eq!(
        state.service.cache.member("lobby", "gone-0"),
        None,
        "forgotten"
    );
    assert_eq!(
        state.service.cache.member("lobby", "stays"),
        Some(None),
        "a connected user's entry stays"
    );

    // Everyone is served as before: the one still connected receives, a departed user comes
    // back and is let in and served again.
    let owner = t.as_user("owner");
    let sent = owner.say("lobby", "after the trim").await;
    let seq = sent["seq"].as_u64().expect("seq");
    let events = stays.events_until("lobby", seq).await;
    assert!(events.iter().any(|e| e["seq"] == json!(seq)), "{events:?}");
    let mut back = t.ws("gone-0").await;
    assert_eq!(back.subscribe(&[("lobby", 0)]).await["type"], "ack");
    let replayed = back.events_until("lobby", seq).await;
    assert!(
        replayed.iter().any(|e| e["seq"] == json!(seq)),
        "{replayed:?}"
    );
}
