//! An encrypted client store through restarts against the real server: a plain store with
//! history is encrypted at the first open with a key, messages sent with the server down wait
//! in the encrypted outbox across a restart of the client and arrive once the server is back,
//! a wrong key is refused without touching the file, the key is changed while the client runs,
//! and no message text is ever readable in the store's files.

use std::path::Path;

use roam_core::{Client, Error, StoreKey};
use roam_tests::{fast_config, local_bodies, open_client, wait_until, Backend};

/// Whether `needle` occurs in any of the store's files (database, WAL, shared memory, copy).
fn on_disk(db: &Path, needle: &str) -> bool {
    ["", "-wal", "-shm", "-new", "-journal"]
        .iter()
        .any(|suffix| {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            std::fs::read(&name)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_store_survives_restarts_and_shows_no_text_on_disk() {
    let mut backend = Backend::up().await;
    let alice = backend.api("alice");
    alice.create_room("vault", "public").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("bob.db");
    let key = StoreKey::new([0x5a; 32]);
    let open = |key: Option<&StoreKey>, url: &str, token: String| -> roam_core::Result<Client> {
        let mut config = fast_config(&db, url, "bob");
        config.store_key = key.cloned();
        Client::open(config, std::sync::Arc::new(roam_core::StaticToken(token)))
    };

    // 1. A plain store with some history.
    let bob = open_client(
        fast_config(&db, &backend.url(), "bob"),
        backend.token("bob"),
    );
    bob.start().await.expect("start");
    bob.join_room("vault".into()).expect("join");
    bob.send_message("vault".into(), "plain-era-8c41e2".into())
        .expect("send");
    wait_until("sent", || bob.metrics().outbox_depth == 0).await;
    bob.shutdown().await;
    drop(bob);
    assert!(on_disk(&db, "plain-era-8c41e2"), "the plain store holds it");

    // 2. Opened with a key: encrypted once, history kept, live traffic still flows.
    let bob = open(Some(&key), &backend.url(), backend.token("bob")).expect("encrypt");
    assert_eq!(local_bodies(&bob, "vault"), ["plain-era-8c41e2"]);
    bob.start().await.expect("start");
    let (s, b) = alice
        .post(
            "/v1/rooms/vault/messages",
            serde_json::json!({ "body": "from-alice-31c9d0" }),
        )
        .await;
    assert!(s == 200 || s == 201, "post: {b}");
    wait_until("alice's message arrives", || {
        local_bodies(&bob, "vault").contains(&"from-alice-31c9d0".to_owned())
    })
    .await;
    bob.shutdown().await;
    drop(bob);

    // 3. The server goes down; bob queues a message, restarts, and it is still queued.
    backend.stop().await;
    let bob = open(Some(&key), &backend.url(), backend.token("bob")).expect("reopen");
    bob.start().await.expect("start");
    bob.send_message("vault".into(), "queued-while-down-e07b55".into())
        .expect("queue");
    bob.shutdown().await;
    drop(bob);
    for text in [
        "plain-era-8c41e2",
        "from-alice-31c9d0",
        "queued-while-down-e07b55",
    ] {
        assert!(!on_disk(&db, text), "{text} readable on disk");
    }

    // 4. A wrong key and no key are refused; the file is untouched.
    let before = std::fs::read(&db).expect("file");
    for wrong in [Some(StoreKey::new([0x11; 32])), None] {
        let err = open(wrong.as_ref(), &backend.url(), backend.token("bob")).expect_err("refused");
        assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
    }
    assert_eq!(std::fs::read(&db).expect("file"), before);

    // 5. The server is back: the queued message goes out after the restart.
    backend.start().await;
    let bob = open(Some(&key), &backend.url(), backend.token("bob")).expect("reopen");
    bob.start().await.expect("start");
    wait_until("the queued message is sent", || {
        bob.metrics().outbox_depth == 0
    })
    .await;
    let server: Vec<String> = alice
        .all_messages("vault")
        .await
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        server,
        [
            "plain-era-8c41e2",
            "from-alice-31c9d0",
            "queued-while-down-e07b55"
        ]
    );

    // 6. A new key while the client runs; it keeps syncing, and only the new key opens it.
    let new_key = StoreKey::new([0xc3; 32]);
    bob.change_store_key(Some(new_key.clone())).expect("re-key");
    bob.send_message("vault".into(), "after-rekey-9a9a17".into())
        .expect("send");
    wait_until("sent after the re-key", || bob.metrics().outbox_depth == 0).await;
    bob.shutdown().await;
    drop(bob);
    assert!(matches!(
        open(Some(&key), &backend.url(), backend.token("bob")),
        Err(Error::InvalidKey { .. })
    ));
    let bob = open(Some(&new_key), &backend.url(), backend.token("bob")).expect("new key");
    assert_eq!(
        local_bodies(&bob, "vault"),
        [
            "plain-era-8c41e2",
            "from-alice-31c9d0",
            "queued-while-down-e07b55",
            "after-rekey-9a9a17"
        ]
    );
    bob.shutdown().await;
    drop(bob);
    assert!(!on_disk(&db, "after-rekey-9a9a17"));
}
