//! A full store: when what the server sends cannot be stored, the client says so
//! (`StorageFull`) and waits long before it connects again, instead of downloading the same
//! events every second; once there is room, it catches up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use roam_core::{Client, ConnectionState, ConnectionStateListener, SyncPhase};
use roam_tests::{all_local, fast_config, open_client, wait_until, Backend};
use serde_json::json;

#[derive(Default)]
struct States(Mutex<Vec<ConnectionState>>);

impl ConnectionStateListener for States {
    fn on_connection_state(&self, state: ConnectionState) {
        self.0.lock().expect("lock").push(state);
    }
}

impl States {
    fn storage_full(&self) -> usize {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| matches!(s, ConnectionState::StorageFull { .. }))
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_waits_long_and_catches_up_once_there_is_room() {
    const N: usize = 4_000;
    let backend = Backend::up().await;
    let alice = backend.api("alice");
    alice.create_room("big", "public").await;
    let bodies: Vec<String> = (0..N)
        .map(|i| format!("{i:05} {}", "x".repeat(200)))
        .collect();
    let (s, b) = alice
        .post("/v1/rooms/big/messages/import", json!({ "bodies": bodies }))
        .await;
    assert_eq!(s, 200, "import: {b}");

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("bob.db");
    let mut config = fast_config(&db, &backend.url(), "bob");
    // Room for the schema and a few hundred messages, not for 4,000 of 200 bytes.
    config.max_store_bytes = Some(384 * 1024);
    config.reconnect.storage_full_delay = Duration::from_secs(3_600);
    let bob = Client::open(
        config,
        Arc::new(roam_core::StaticToken(backend.token("bob"))),
    )
    .expect("open");
    let states = Arc::new(States::default());
    let _sub = bob.subscribe_connection_state(states.clone());
    bob.start().await.expect("start");
    bob.join_room("big".into()).expect("join");
    wait_until("the store is full", || states.storage_full() == 1).await;
    assert_eq!(
        bob.connection_state(),
        ConnectionState::StorageFull {
            retry_in: Duration::from_secs(3_600)
        }
    );
    assert_eq!(bob.sync_status().phase, SyncPhase::StorageFull);
    assert_eq!(
        bob.metrics().connect_attempts,
        1,
        "no reconnect before the long wait"
    );
    let stored = all_local(&bob, "big").len();
    assert!(stored > 0 && stored < N, "{stored} of {N} stored");

    // The app says to try now (say, after freeing space): one attempt, full again.
    bob.network_available();
    wait_until("full again after one more attempt", || {
        states.storage_full() == 2
    })
    .await;
    assert_eq!(bob.metrics().connect_attempts, 2);
    bob.shutdown().await;
    drop(bob);

    // With room, the same database catches up completely.
    let bob = open_client(
        fast_config(&db, &backend.url(), "bob"),
        backend.token("bob"),
    );
    bob.start().await.expect("start");
    wait_until("caught up", || {
        bob.room("big".into())
            .ok()
            .flatten()
            .is_some_and(|r| r.last_seq >= r.head_seq && r.head_seq > N as u64)
    })
    .await;
    let all = all_local(&bob, "big");
    assert_eq!(all.len(), N);
    assert!(all[N - 1].body.starts_with(&format!("{:05}", N - 1)));
    bob.shutdown().await;
}
