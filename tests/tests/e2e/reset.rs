//! A room the server resets (more was missed than it replays) is reloaded whole: its record,
//! its members and its documents as well as its newest messages, and a reload that fails is
//! tried again until it is stored.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use roam_core::{Client, Error, TokenProvider};
use roam_tests::{all_local, fast_config, wait_until, Backend};
use serde_json::json;

/// Answers the account's token; while `down` is set, only `allowed` more times, then it fails
/// like a provider that cannot reach its backend (and counts those failures).
struct Flaky {
    token: String,
    down: AtomicBool,
    allowed: AtomicUsize,
    failures: AtomicUsize,
}

#[async_trait::async_trait]
impl TokenProvider for Flaky {
    async fn token(&self, _refresh: bool) -> roam_core::Result<String> {
        let allowed = !self.down.load(Ordering::SeqCst)
            || self
                .allowed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if allowed {
            return Ok(self.token.clone());
        }
        self.failures.fetch_add(1, Ordering::SeqCst);
        Err(Error::Network("the token service is unreachable".into()))
    }
}

/// While bob is away: 30 messages (more than the server replays), a new title, a new member
/// and a new document.
async fn change_the_room_while_bob_is_away(backend: &Backend) {
    let alice = backend.api("alice");
    let bodies: Vec<String> = (0..30).map(|i| format!("missed {i}")).collect();
    let (s, b) = alice
        .post("/v1/rooms/big/messages/import", json!({ "bodies": bodies }))
        .await;
    assert_eq!(s, 200, "import: {b}");
    let r = alice
        .http
        .patch(format!("{}/v1/rooms/big", alice.base))
        .bearer_auth(&alice.token)
        .header("Idempotency-Key", uuid::Uuid::now_v7().to_string())
        .json(&json!({ "title": "Renamed while away" }))
        .send()
        .await
        .expect("rename");
    assert_eq!(r.status().as_u16(), 200);
    backend.api("carol").join("big").await;
    let r = alice
        .http
        .put(format!("{}/v1/rooms/big/documents/plan", alice.base))
        .bearer_auth(&alice.token)
        .header("Idempotency-Key", uuid::Uuid::now_v7().to_string())
        .json(&json!({ "base_version": 0, "content": "written while away" }))
        .send()
        .await
        .expect("put document");
    assert_eq!(r.status().as_u16(), 200);
}

fn reloaded(bob: &Client) -> bool {
    let title = bob
        .room("big".into())
        .ok()
        .flatten()
        .map(|r| r.title)
        .unwrap_or_default();
    let carol = bob
        .members("big".into())
        .unwrap_or_default()
        .iter()
        .any(|m| m.user == "carol");
    let plan = bob
        .document("big".into(), "plan".into())
        .ok()
        .flatten()
        .is_some_and(|d| d.content == "written while away");
    let newest = all_local(bob, "big")
        .last()
        .is_some_and(|m| m.body == "missed 29");
    title == "Renamed while away" && carol && plan && newest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_room_is_reloaded_whole_and_retried_until_done() {
    let mut backend = Backend::down_with(|c| c.max_recovery_events = 20);
    backend.start().await;
    backend.api("alice").create_room("big", "public").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("bob.db");
    let tokens = Arc::new(Flaky {
        token: backend.token("bob"),
        down: AtomicBool::new(false),
        allowed: AtomicUsize::new(0),
        failures: AtomicUsize::new(0),
    });
    let open = || {
        Client::open(
            fast_config(&db, &backend.url(), "bob"),
            tokens.clone() as Arc<dyn TokenProvider>,
        )
        .expect("open")
    };
    let bob = open();
    bob.start().await.expect("start");
    bob.join_room("big".into()).expect("join");
    wait_until("bob follows the room", || {
        bob.metrics().outbox_depth == 0 && bob.members("big".into()).is_ok_and(|m| m.len() == 2)
    })
    .await;
    bob.shutdown().await;
    drop(bob);

    change_the_room_while_bob_is_away(&backend).await;

    // Back online; the token service answers the socket's connect and then fails, so every REST
    // read fails (the recovery's account reload, and each attempt of the room's reload) until
    // it is back.
    tokens.allowed.store(1, Ordering::SeqCst);
    tokens.down.store(true, Ordering::SeqCst);
    let bob = open();
    bob.start().await.expect("start");
    // At most one failure is the account reload; the others are attempts of the room's.
    wait_until("reload attempts failed", || {
        tokens.failures.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert_eq!(bob.metrics().resets, 1, "the server reset the room");
    assert!(!reloaded(&bob), "nothing could be read yet");
    assert_eq!(
        bob.room("big".into()).expect("room").map(|r| r.title),
        Some(String::new()),
        "the old title until the reload lands"
    );
    tokens.down.store(false, Ordering::SeqCst);
    wait_until("the room is reloaded whole", || reloaded(&bob)).await;
    let members: Vec<String> = bob
        .members("big".into())
        .expect("members")
        .into_iter()
        .map(|m| m.user)
        .collect();
    assert_eq!(members, ["alice", "bob", "carol"]);
    bob.shutdown().await;
}
