//! Real-time features between real clients and the real server: typing throttle and expiry,
//! presence across two devices of one user, document conflict and rebase, notifications and
//! unread counts, and a metrics snapshot that matches what happened.

use std::time::Duration;

use roam_core::{PresenceStatus, RoomKind, SendState};
use roam_tests::{fast_config, open_client, wait_until, Backend};

async fn joined_pair(
    backend: &Backend,
    dir: &std::path::Path,
    tune: impl Fn(&mut roam_core::ClientConfig),
) -> (roam_core::Client, roam_core::Client) {
    let mut ca = fast_config(&dir.join("a.db"), &backend.url(), "alice");
    let mut cb = fast_config(&dir.join("b.db"), &backend.url(), "bob");
    tune(&mut ca);
    tune(&mut cb);
    let a = open_client(ca, backend.token("alice"));
    let b = open_client(cb, backend.token("bob"));
    a.start().await.expect("start a");
    b.start().await.expect("start b");
    a.create_room("team".into(), RoomKind::Public, "Team".into(), None)
        .expect("create");
    wait_until("room created", || a.metrics().outbox_depth == 0).await;
    b.join_room("team".into()).expect("join");
    wait_until("bob joined", || b.metrics().outbox_depth == 0).await;
    wait_until("alice knows bob joined", || {
        a.members("team".into())
            .map(|m| m.iter().any(|m| m.user == "bob"))
            .unwrap_or(false)
    })
    .await;
    // Bob's socket follows the room once it has applied his own `member_joined` (seq 3, after
    // `room_created` and alice's): only then do frames that are not replayed (typing) reach him.
    wait_until("bob follows the room", || {
        b.room("team".into())
            .ok()
            .flatten()
            .is_some_and(|r| r.last_seq >= 3)
    })
    .await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_other_client_and_expires() {
    // The server would end an indicator after 30 s; the client's own 300 ms expiry must win.
    let backend = {
        let mut b = Backend::down_with(|c| c.typing_timeout_ms = 30_000);
        b.start().await;
        b
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = joined_pair(&backend, dir.path(), |c| {
        c.typing.remote_expiry = Duration::from_millis(300);
        c.typing.idle_stop = Duration::from_secs(60);
    })
    .await;
    a.typing_started("team".into());
    wait_until("bob sees alice typing", || {
        b.typing("team".into()) == vec!["alice".to_owned()]
    })
    .await;
    wait_until("the indicator expires by itself", || {
        b.typing("team".into()).is_empty()
    })
    .await;
    a.typing_started("team".into());
    a.typing_started("team".into());
    a.send_message("team".into(), "done typing".into())
        .expect("send");
    wait_until("sending stops the indicator", || {
        b.typing("team".into()).is_empty()
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_online_while_any_device_is_connected() {
    let backend = Backend::up().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = joined_pair(&backend, dir.path(), |_| {}).await;
    let status = |b: &roam_core::Client| {
        b.presence("alice".into())
            .ok()
            .flatten()
            .map(|p| (p.status, p.devices))
    };
    // A second device of alice.
    let a2 = open_client(
        fast_config(&dir.path().join("a2.db"), &backend.url(), "alice"),
        backend.token("alice"),
    );
    a2.start().await.expect("start a2");
    wait_until("alice's second device is connected", || {
        a2.connection_state() == roam_core::ConnectionState::Connected
    })
    .await;
    wait_until("bob sees alice online", || {
        matches!(status(&b), Some((PresenceStatus::Online, _)))
    })
    .await;
    a.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status(&b).map(|s| s.0),
        Some(PresenceStatus::Online),
        "one of two devices left: still online"
    );
    a2.set_idle(true);
    wait_until("alice's only device is idle: away", || {
        matches!(status(&b), Some((PresenceStatus::Away, 1)))
    })
    .await;
    a2.shutdown().await;
    wait_until("both devices gone: offline", || {
        matches!(status(&b), Some((PresenceStatus::Offline, 0)))
    })
    .await;
    let p = b.presence("alice".into()).expect("read").expect("known");
    assert!(p.last_seen.is_some(), "offline carries last_seen");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_conflict_is_reported_and_rebased() {
    let backend = Backend::up().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = joined_pair(&backend, dir.path(), |_| {}).await;
    a.put_document("team".into(), "plan".into(), 0, "v1".into())
        .expect("create doc");
    wait_until("bob has v1", || {
        b.document("team".into(), "plan".into())
            .ok()
            .flatten()
            .is_some_and(|d| d.version == 1)
    })
    .await;
    // Both edit version 1; the second to arrive loses.
    a.put_document("team".into(), "plan".into(), 1, "alice's v2".into())
        .expect("edit a");
    wait_until("alice's edit is in", || a.metrics().outbox_depth == 0).await;
    b.put_document("team".into(), "plan".into(), 1, "bob's v2".into())
        .expect("edit b");
    wait_until("bob's edit is refused with the current version", || {
        b.document("team".into(), "plan".into())
            .ok()
            .flatten()
            .is_some_and(|d| d.conflict.as_ref().is_some_and(|c| c.version == 2))
    })
    .await;
    let d = b
        .document("team".into(), "plan".into())
        .expect("read")
        .expect("doc");
    let current = d.conflict.expect("conflict");
    assert_eq!(current.content, "alice's v2");
    assert!(d.send_state.is_failed());
    // Rebase on the current version.
    b.put_document(
        "team".into(),
        "plan".into(),
        current.version,
        format!("{} + bob", current.content),
    )
    .expect("rebase");
    wait_until("both see v3", || {
        [&a, &b].iter().all(|c| {
            c.document("team".into(), "plan".into())
                .ok()
                .flatten()
                .is_some_and(|d| d.version == 3 && d.content == "alice's v2 + bob")
        })
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// `save_document` is one await that ends with the server's answer: the confirmed version, or
/// the server's document when the base was stale; a client shut down meanwhile ends the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_document_answers_with_the_confirmed_version_or_the_conflict() {
    let backend = Backend::up().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = joined_pair(&backend, dir.path(), |_| {}).await;
    let v1 = tokio::time::timeout(
        roam_tests::WAIT,
        a.save_document("team".into(), "plan".into(), 0, "v1".into())
            .expect("queued"),
    )
    .await
    .expect("answered")
    .expect("saved");
    assert_eq!((v1.version, v1.content.as_str()), (1, "v1"));
    assert!(!v1.send_state.is_failed());
    let stale = tokio::time::timeout(
        roam_tests::WAIT,
        b.save_document("team".into(), "plan".into(), 0, "bob's v1".into())
            .expect("queued"),
    )
    .await
    .expect("answered");
    match stale {
        Err(roam_core::Error::VersionConflict { current }) => {
            assert_eq!((current.version, current.content.as_str()), (1, "v1"));
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    // Offline, the answer cannot come; shutting the client down ends the wait.
    b.set_online(false);
    let waiting = b
        .save_document("team".into(), "plan".into(), 1, "offline edit".into())
        .expect("queued");
    let waiter = tokio::spawn(waiting);
    b.shutdown().await;
    let ended = tokio::time::timeout(roam_tests::WAIT, waiter)
        .await
        .expect("the wait ends")
        .expect("task");
    assert!(
        matches!(ended, Err(roam_core::Error::Shutdown)),
        "{ended:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mentions_notify_and_metrics_add_up() {
    let backend = Backend::up().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = joined_pair(&backend, dir.path(), |_| {}).await;
    let before = a.metrics();
    for i in 0..5 {
        a.send_message("team".into(), format!("@bob look at {i}"))
            .expect("send");
    }
    wait_until("bob has 5 unread", || b.unread_count().unwrap_or(0) == 5).await;
    let n = b.notifications(None, true, 50).expect("notifications");
    assert_eq!(n.len(), 5);
    assert!(n
        .iter()
        .all(|n| n.kind == "mentioned" && n.actor.as_deref() == Some("alice")));
    b.mark_all_read().expect("mark read");
    assert_eq!(
        b.unread_count().expect("unread"),
        0,
        "marked read locally at once"
    );
    wait_until("the server agrees", || b.metrics().outbox_depth == 0).await;
    let (_, me) = backend.api("bob").get("/v1/me").await;
    assert_eq!(me["unread"], 0);

    // Bob's notifications can arrive before alice's acks: wait for those.
    tokio::time::timeout(roam_tests::WAIT, a.wait_for_pending_writes())
        .await
        .expect("alice's writes answered in time")
        .expect("alice's writes confirmed");
    let m = a.metrics();
    assert_eq!(m.outbox_depth, 0);
    assert_eq!(m.outbox_failed, 0);
    assert_eq!(m.messages_sent - before.messages_sent, 5, "{m:?}");
    assert!(
        m.connections >= 1 && m.bytes_sent > 0 && m.bytes_received > 0,
        "{m:?}"
    );
    let local = a.messages("team".into(), None, 50).expect("read");
    assert_eq!(
        local
            .iter()
            .filter(|m| m.send_state == SendState::Sent)
            .count(),
        5
    );
    a.shutdown().await;
    b.shutdown().await;
}
