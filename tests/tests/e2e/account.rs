//! The sync status, waiting for pending writes, one-shot sync, and an account that cannot be
//! crossed or bricked: wrong-user tokens, failing token providers, sign-out, a second client on
//! the same file, undecodable outbox rows.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roam_core::{
    Client, ConnectionState, Error, RoomKind, SendState, SyncPhase, SyncStatus, SyncStatusListener,
    TokenProvider,
};
use roam_tests::{fast_config, open_client, wait_until, Backend, Fault, Proxy, WAIT};

#[derive(Default)]
struct Statuses(Mutex<Vec<SyncStatus>>);

impl Statuses {
    fn all(&self) -> Vec<SyncStatus> {
        self.0.lock().expect("lock").clone()
    }
}

impl SyncStatusListener for Statuses {
    fn on_sync_status(&self, status: SyncStatus) {
        self.0.lock().expect("lock").push(status);
    }
}

fn message_count(c: &Client, room: &str) -> usize {
    c.messages(room.into(), None, 200)
        .map(|m| m.len())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_pending_writes_returns_after_an_outage_ends() {
    let mut backend = Backend::down();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open_client(
        fast_config(&dir.path().join("c.db"), &backend.url(), "carol"),
        backend.token("carol"),
    );
    let statuses = Arc::new(Statuses::default());
    let _sub = c.subscribe_sync_status(statuses.clone());
    c.start().await.expect("start");
    c.create_room("w".into(), RoomKind::Public, "W".into(), None)
        .expect("create");
    for i in 0..20 {
        c.send_message("w".into(), format!("m{i}")).expect("send");
    }
    let status = c.sync_status();
    assert_eq!(status.pending_writes, 21);
    assert!(status.oldest_pending_at.is_some());
    assert_ne!(status.phase, SyncPhase::Synced);

    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.wait_for_pending_writes().await })
    };
    wait_until("the client tried and failed to connect", || {
        c.metrics().connect_attempts >= 2
    })
    .await;
    assert!(
        !waiter.is_finished(),
        "nothing can be sent while the server is down"
    );

    backend.start().await;
    c.network_available();
    tokio::time::timeout(WAIT, waiter)
        .await
        .expect("the wait ends")
        .expect("task")
        .expect("every write confirmed");
    assert_eq!(c.sync_status().pending_writes, 0);
    assert_eq!(backend.api("carol").all_messages("w").await.len(), 20);
    wait_until("synced", || c.sync_status().phase == SyncPhase::Synced).await;
    let seen = statuses.all();
    assert_eq!(seen.first().map(|s| &s.phase), Some(&SyncPhase::Offline));
    assert!(seen.iter().any(|s| s.phase == SyncPhase::Connecting));
    assert!(seen
        .iter()
        .any(|s| s.phase == SyncPhase::Synced && s.pending_writes == 0));
    assert!(seen.iter().any(|s| s.pending_writes == 21));
    // Pending counts only go down once the outage is over.
    assert_eq!(seen.last().map(|s| s.pending_writes), Some(0));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_pending_writes_reports_a_refused_write() {
    let backend = Backend::up().await;
    let owner = backend.api("alice");
    owner.create_room("private", "private").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = open_client(
        fast_config(&dir.path().join("d.db"), &backend.url(), "dave"),
        backend.token("dave"),
    );
    d.start().await.expect("start");
    let m = d
        .send_message("private".into(), "let me in".into())
        .expect("queue");
    match tokio::time::timeout(WAIT, d.wait_for_pending_writes()).await {
        Ok(Err(Error::WriteFailed { entry, code, .. })) => {
            assert_eq!(entry, m.local_id);
            assert!(code == "forbidden" || code == "not_found", "{code}");
        }
        other => panic!("expected WriteFailed, got {other:?}"),
    }
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_once_connects_flushes_and_disconnects() {
    let backend = Backend::up().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open_client(
        fast_config(&dir.path().join("e.db"), &backend.url(), "erin"),
        backend.token("erin"),
    );
    e.create_room("bg".into(), RoomKind::Public, "Bg".into(), None)
        .expect("create");
    for i in 0..5 {
        e.send_message("bg".into(), format!("queued {i}"))
            .expect("send");
    }
    e.sync_once(WAIT).await.expect("one round");
    assert_eq!(e.connection_state(), ConnectionState::Offline);
    assert_eq!(e.sync_status().pending_writes, 0);
    assert_eq!(backend.api("erin").all_messages("bg").await.len(), 5);
    assert!(e
        .messages("bg".into(), None, 10)
        .expect("read")
        .iter()
        .all(|m| m.send_state == SendState::Sent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_once_gives_up_after_its_timeout() {
    let backend = Backend::down();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = open_client(
        fast_config(&dir.path().join("f.db"), &backend.url(), "frank"),
        backend.token("frank"),
    );
    f.send_message("nowhere".into(), "x".into()).expect("send");
    match f.sync_once(Duration::from_millis(300)).await {
        Err(Error::Timeout(_)) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(f.connection_state(), ConnectionState::Offline);
    assert_eq!(f.sync_status().pending_writes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_for_another_user_sends_nothing() {
    let backend = Backend::up().await;
    backend.api("mallory").create_room("shared", "public").await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Alice's database, Mallory's token.
    let c = open_client(
        fast_config(&dir.path().join("alice.db"), &backend.url(), "alice"),
        backend.token("mallory"),
    );
    let statuses = Arc::new(Statuses::default());
    let _sub = c.subscribe_sync_status(statuses.clone());
    c.send_message("shared".into(), "alice's secret".into())
        .expect("queue");
    c.start().await.expect("start");
    wait_until("needs sign-in", || {
        c.connection_state() == ConnectionState::NeedsSignIn
    })
    .await;
    let attempts = c.metrics().connect_attempts;
    match c.sync_status().phase {
        SyncPhase::NeedsSignIn { reason } => assert!(reason.contains("mallory"), "{reason}"),
        p => panic!("expected NeedsSignIn, got {p:?}"),
    }
    assert!(matches!(
        c.wait_for_pending_writes().await,
        Err(Error::NeedsSignIn(_))
    ));
    // No reconnect loop: several reconnect delays later, still one attempt.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(c.metrics().connect_attempts, attempts);
    assert_eq!(c.metrics().frames_sent, 0, "nothing was sent as mallory");
    assert!(backend
        .api("mallory")
        .all_messages("shared")
        .await
        .is_empty());
    assert_eq!(c.sync_status().pending_writes, 1, "the write is kept");
    c.shutdown().await;
}

/// A provider whose sign-in is gone.
struct SignedOut(AtomicUsize);

#[async_trait::async_trait]
impl TokenProvider for SignedOut {
    async fn token(&self, _refresh: bool) -> roam_core::Result<String> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(Error::Unauthorized("no refresh token stored".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_provider_stops_the_reconnect_loop() {
    let backend = Backend::up().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = Arc::new(SignedOut(AtomicUsize::new(0)));
    let c = Client::open(
        fast_config(&dir.path().join("g.db"), &backend.url(), "gina"),
        provider.clone(),
    )
    .expect("open");
    c.start().await.expect("start");
    wait_until("needs sign-in", || {
        c.connection_state() == ConnectionState::NeedsSignIn
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        provider.0.load(Ordering::SeqCst),
        1,
        "asked once, not every few seconds"
    );
    // After a new sign-in the app asks for one more attempt.
    c.network_available();
    wait_until("asked again", || provider.0.load(Ordering::SeqCst) == 2).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_per_database_and_sign_out_wipes_it() {
    let backend = Backend::up().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("h.db");
    let h = open_client(
        fast_config(&path, &backend.url(), "hank"),
        backend.token("hank"),
    );
    h.send_message("r".into(), "hi".into()).expect("send");
    match Client::open(
        fast_config(&path, &backend.url(), "hank"),
        Arc::new(roam_core::StaticToken(backend.token("hank"))),
    ) {
        Err(Error::AlreadyOpen { path: p }) => assert!(p.ends_with("h.db")),
        other => panic!("expected AlreadyOpen, got {other:?}"),
    }
    h.start().await.expect("start");
    h.sign_out(true).await.expect("sign out");
    assert!(!path.exists(), "the database is deleted");
    assert!(
        std::fs::read_dir(dir.path()).expect("dir").next().is_none(),
        "no file of the account is left"
    );
    assert!(matches!(
        h.messages("r".into(), None, 10),
        Err(Error::Shutdown)
    ));
    assert!(matches!(
        h.send_message("r".into(), "again".into()),
        Err(Error::Shutdown)
    ));
    // A new sign-in starts from an empty store.
    let again = open_client(
        fast_config(&path, &backend.url(), "hank"),
        backend.token("hank"),
    );
    assert_eq!(message_count(&again, "r"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_outbox_row_is_failed_and_kept() {
    let backend = Backend::up().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("i.db");
    {
        let c = open_client(
            fast_config(&path, &backend.url(), "ivy"),
            backend.token("ivy"),
        );
        c.create_room("r".into(), RoomKind::Public, "R".into(), None)
            .expect("create");
        c.send_message("r".into(), "fine".into()).expect("send");
    }
    // A newer app version wrote an op this one does not know.
    let db = rusqlite::Connection::open(&path).expect("sqlite");
    let n = db
        .execute(
            "UPDATE outbox SET mutation = '{\"op\":\"message.teleport\",\"args\":{}}' \
             WHERE pos = (SELECT MAX(pos) FROM outbox)",
            [],
        )
        .expect("update");
    assert_eq!(n, 1);
    drop(db);

    let c = open_client(
        fast_config(&path, &backend.url(), "ivy"),
        backend.token("ivy"),
    );
    let outbox = c.outbox().expect("outbox");
    assert_eq!(outbox.len(), 2);
    let odd = outbox.iter().find(|e| e.op == "unknown").expect("kept");
    assert!(matches!(&odd.state, SendState::Failed { code, .. } if code == "client"));
    c.start().await.expect("start");
    wait_until("the readable entry is sent", || {
        c.sync_status().pending_writes == 0
    })
    .await;
    c.discard(odd.id.clone()).expect("discard");
    assert!(c.outbox().expect("outbox").is_empty());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coming_back_to_the_foreground_checks_the_link_at_once() {
    let backend = Backend::up().await;
    let proxy = Proxy::start(backend.addr).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = fast_config(&dir.path().join("j.db"), &proxy.url(), "jack");
    // Far longer than the test may take: only the foreground check can find the dead link.
    config.heartbeat.interval = Duration::from_secs(600);
    let j = open_client(config, backend.token("jack"));
    j.start().await.expect("start");
    wait_until("connected", || {
        j.connection_state() == ConnectionState::Connected
    })
    .await;
    let connections = j.metrics().connections;
    proxy.set(Fault::Stall);
    j.set_idle(true);
    j.set_idle(false);
    wait_until("the dead link is dropped", || {
        j.connection_state() != ConnectionState::Connected
    })
    .await;
    proxy.set(Fault::Pass);
    wait_until("connected again", || j.metrics().connections > connections).await;
    j.shutdown().await;
}
