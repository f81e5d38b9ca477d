//! Backoff and connectivity: with the server down, reconnect attempts are spaced within the
//! configured bounds, with jitter; `network_available()` retries at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use roam_core::{ConnectionState, ConnectionStateListener};
use roam_tests::{fast_config, open_client, wait_until, Backend};

#[derive(Default)]
struct States(Mutex<Vec<ConnectionState>>);

impl ConnectionStateListener for States {
    fn on_connection_state(&self, state: ConnectionState) {
        if let Ok(mut s) = self.0.lock() {
            s.push(state);
        }
    }
}

impl States {
    fn waits(&self) -> Vec<Duration> {
        self.0
            .lock()
            .map(|s| {
                s.iter()
                    .filter_map(|st| match st {
                        ConnectionState::Waiting { retry_in } => Some(*retry_in),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_delays_stay_in_bounds_with_jitter() {
    let backend = Backend::down();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = fast_config(&dir.path().join("a.db"), &backend.url(), "alice");
    c.reconnect.initial_delay = Duration::from_millis(40);
    c.reconnect.max_delay = Duration::from_millis(160);
    c.reconnect.randomization_factor = 0.5;
    let client = open_client(c, backend.token("alice"));
    let states = Arc::new(States::default());
    let _sub = client.subscribe_connection_state(states.clone());
    client.start().await.expect("start");
    wait_until("a dozen failed attempts", || states.waits().len() >= 12).await;
    let waits = states.waits();
    for w in &waits {
        assert!(
            *w >= Duration::from_millis(20) && *w <= Duration::from_millis(160),
            "delay {w:?} outside [initial·(1−f), max]"
        );
    }
    let distinct: std::collections::HashSet<_> = waits.iter().collect();
    assert!(distinct.len() > 3, "delays are jittered: {waits:?}");
    let late = &waits[6..];
    assert!(
        late.iter().any(|w| *w > Duration::from_millis(60)),
        "delays grow towards max: {waits:?}"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_available_retries_at_once() {
    let mut backend = Backend::down();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = fast_config(&dir.path().join("a.db"), &backend.url(), "alice");
    // The next automatic attempt is minutes away; only network_available() can explain a
    // connection within the test's bounded wait.
    c.reconnect.initial_delay = Duration::from_secs(600);
    c.reconnect.max_delay = Duration::from_secs(900);
    let client = open_client(c, backend.token("alice"));
    let states = Arc::new(States::default());
    let _sub = client.subscribe_connection_state(states.clone());
    client.start().await.expect("start");
    wait_until("the first attempt failed", || !states.waits().is_empty()).await;
    backend.start().await;
    client.network_available();
    wait_until("connected right away", || {
        client.connection_state() == ConnectionState::Connected
    })
    .await;
    assert_eq!(
        states.waits().len(),
        1,
        "no second timed attempt was needed"
    );
    client.shutdown().await;
    backend.stop().await;
}
