//! A device's sends commit in the order it wrote them, whatever fails in between: a burst far
//! past the server's rate limit (some frames refused, later ones arriving after the bucket
//! refilled) and answers that time out while their frames were applied. The room's seqs follow
//! the send order exactly, with every message once.

use std::time::Duration;

use roam_core::RoomKind;
use roam_tests::{fast_config, open_client, wait_until, Api, Backend};

/// The bodies of a room in seq order, as the server holds them.
async fn server_bodies(api: &Api, room: &str) -> Vec<String> {
    api.all_messages(room)
        .await
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_rate_limit_commits_in_send_order() {
    let mut backend = Backend::down_with(|c| {
        c.rate_mutations_per_sec = 40;
        c.rate_mutations_burst = 50;
    });
    backend.start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open_client(
        fast_config(&dir.path().join("a.db"), &backend.url(), "alice"),
        backend.token("alice"),
    );
    a.start().await.expect("start");
    a.create_room("burst".into(), RoomKind::Public, "Burst".into(), None)
        .expect("create");
    const N: usize = 300;
    let sent: Vec<String> = (0..N).map(|i| format!("m{i:03}")).collect();
    for body in &sent {
        a.send_message("burst".into(), body.clone()).expect("send");
    }
    wait_until("every message is confirmed", || {
        a.metrics().outbox_depth == 0
    })
    .await;
    assert!(
        a.metrics().retries > 0,
        "the burst met the rate limit: {:?}",
        a.metrics()
    );
    let held = server_bodies(&backend.api("alice"), "burst").await;
    assert_eq!(
        held, sent,
        "the server holds every message once, in send order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_time_out_do_not_reorder_the_room() {
    let mut backend = Backend::down_with(|c| {
        c.rate_mutations_per_sec = 40;
        c.rate_mutations_burst = 50;
    });
    backend.start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = fast_config(&dir.path().join("a.db"), &backend.url(), "alice");
    // Answers held up by the rate limiter's refusals and resends count as lost now and then.
    config.outbox.ack_timeout = Duration::from_millis(150);
    let a = open_client(config, backend.token("alice"));
    a.start().await.expect("start");
    a.create_room("late".into(), RoomKind::Public, "Late".into(), None)
        .expect("create");
    let sent: Vec<String> = (0..200).map(|i| format!("t{i:03}")).collect();
    for body in &sent {
        a.send_message("late".into(), body.clone()).expect("send");
    }
    wait_until("every message is confirmed", || {
        a.metrics().outbox_depth == 0
    })
    .await;
    let held = server_bodies(&backend.api("alice"), "late").await;
    assert_eq!(held, sent);
}
