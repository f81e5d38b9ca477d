//! The admin interface: backups of a live store, restore, and the admin token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use roam_server::store::sqlite::SqliteStore;
use roam_server::store::{MessageCursor, Store};
use serde_json::{json, Value};

use crate::fixtures::{config, postgres_url, TestServer};

const ADMIN_TOKEN: &str = "admin-token-for-the-tests-0123456789";

async fn start_admin() -> TestServer {
    TestServer::start_with(|c| {
        c.admin_token = Some(ADMIN_TOKEN.parse().expect("token"));
        c.admin_listen = ([127, 0, 0, 1], 0).into();
    })
    .await
}

fn admin_url(t: &TestServer, path: &str) -> String {
    let addr = t
        .server()
        .admin_addr()
        .expect("the admin interface is served");
    format!("http://{addr}{path}")
}

async fn post_backup(t: &TestServer, body: Value) -> (u16, Value) {
    let r = t
        .http
        .post(admin_url(t, "/admin/v1/backups"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("admin request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON answer"))
}

/// Every message the server acknowledged before the backup was asked for is in the copy, while
/// a writer keeps sending during the backup.
#[tokio::test]
async fn a_backup_taken_while_messages_are_written_holds_every_acknowledged_one() {
    let t = start_admin().await;
    let alice = t.as_user("alice");
    alice.create_room("busy", "public").await;
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, alice) = (acked.clone(), stop.clone(), t.as_user("alice"));
        tokio::spawn(async move {
            let mut n = 0;
            // Bounded: the test stops it long before.
            while !stop.load(Ordering::Relaxed) && n < 20_000 {
                let m = alice.say("busy", &format!("message {n}")).await;
                acked
                    .lock()
                    .expect("acked")
                    .push(m["id"].as_str().expect("id").to_owned());
                n += 1;
            }
        })
    };
    while acked.lock().expect("acked").len() < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let before: Vec<String> = acked.lock().expect("acked").clone();
    let to = t.dir.path().join("backup-1");
    let (status, body) = post_backup(&t, json!({ "to": to })).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    if postgres_url().is_some() {
        // PostgreSQL is backed up with its own tools: a clear refusal, nothing written.
        assert_eq!(status, 409, "{body}");
        assert!(
            body["error"].as_str().unwrap_or("").contains("pg_dump"),
            "{body}"
        );
        assert!(!to.exists());
        return;
    }
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["path"], json!(to));
    assert!(body["db_bytes"].as_u64().unwrap_or(0) > 0, "{body}");
    let report = roam_server::store::sqlite::backup::check_copy(&to.join("roam.db"))
        .expect("the copy passes the integrity check");
    assert!(report.schema_version > 0);

    // The copy opens as a store on its own and holds every acknowledged message.
    let copy = tempfile::tempdir().expect("tempdir");
    std::fs::copy(to.join("roam.db"), copy.path().join("roam.db")).expect("copy");
    let store = SqliteStore::open(&copy.path().join("roam.db"), 1)
        .await
        .expect("open the copy");
    let mut held = std::collections::HashSet::new();
    let mut after = 0;
    loop {
        let page = store
            .messages("busy", MessageCursor::After(after), 500)
            .await
            .expect("messages");
        let Some(last) = page.items.last() else { break };
        after = last.seq;
        held.extend(page.items.iter().map(|m| m.id.clone()));
    }
    let missing: Vec<_> = before.iter().filter(|id| !held.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages missing",
        missing.len()
    );
    // Nothing was written twice and the copy is a snapshot: at most what was acknowledged.
    assert!(held.len() <= acked.lock().expect("acked").len());
    assert_eq!(
        t.metric("roam_admin_actions_total", Some("backup")).await,
        1.0
    );
}

#[tokio::test]
async fn the_admin_interface_needs_its_token_and_is_not_on_the_main_listener() {
    let t = start_admin().await;
    let url = admin_url(&t, "/admin/v1/backups");
    let none = t.http.post(&url).send().await.expect("request");
    assert_eq!(none.status().as_u16(), 401);
    let wrong = t
        .http
        .post(&url)
        .bearer_auth("admin-token-for-the-tests-0123456788")
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status().as_u16(), 401);
    let main = t
        .http
        .post(format!("{}/admin/v1/backups", t.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(main.status().as_u16(), 404);
    assert_eq!(
        t.metric("roam_admin_actions_total", Some("unauthorized"))
            .await,
        2.0
    );
    // Without a token there is no admin interface at all.
    let plain = TestServer::start().await;
    assert!(plain.server().admin_addr().is_none());
}

/// A backup is restored into a stopped server's data directory, checked first; a damaged copy
/// and a running server are refused and change nothing.
#[tokio::test]
async fn restore_puts_a_checked_backup_in_place() {
    if postgres_url().is_some() {
        return; // The restore of PostgreSQL is PostgreSQL's (README, "Operate it").
    }
    let mut t = start_admin().await;
    let alice = t.as_user("alice");
    alice.create_room("keep", "public").await;
    alice.say("keep", "before the backup").await;
    let photo: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let blob = crate::blobs::upload(&alice, &photo, 32 * 1024).await;
    let backup = t.dir.path().join("b");
    let (status, body) = post_backup(&t, json!({ "to": backup })).await;
    assert_eq!(status, 201, "{body}");
    // The attachments are in the backup.
    assert_eq!(body["blob_files"].as_u64(), Some(2), "{body}"); // the blob and its owner mark
    assert!(backup.join("blobs").join("blobs").join(&blob).is_file());
    // A second backup to the same place is refused.
    let (status, body) = post_backup(&t, json!({ "to": backup })).await;
    assert_eq!(status, 409, "{body}");
    alice.say("keep", "after the backup").await;

    // While the server runs, its database is in use: refused.
    let live = config(t.dir.path());
    let err = roam_server::admin::restore(&live, &backup).expect_err("in use");
    assert!(err.to_string().contains("in use"), "{err}");
    t.stop().await;

    // A damaged copy is refused and the current database stays.
    let damaged = t.dir.path().join("damaged");
    std::fs::create_dir_all(&damaged).expect("mkdir");
    let mut bytes = std::fs::read(backup.join("roam.db")).expect("read");
    let len = bytes.len();
    for b in &mut bytes[len / 2..] {
        *b = 0x5a;
    }
    std::fs::write(damaged.join("roam.db"), &bytes).expect("write");
    let before = std::fs::read(live.db_path()).expect("current database");
    assert!(roam_server::admin::restore(&live, &damaged).is_err());
    assert_eq!(std::fs::read(live.db_path()).expect("database"), before);
    let empty = tempfile::tempdir().expect("tempdir");
    let err = roam_server::admin::restore(&live, empty.path()).expect_err("not a backup");
    assert!(err.to_string().contains("not a Roam backup"), "{err}");
    assert_eq!(std::fs::read(live.db_path()).expect("database"), before);

    // Into a fresh data directory: the database and the attachments.
    let fresh = tempfile::tempdir().expect("tempdir");
    let elsewhere = config(fresh.path());
    let restored = roam_server::admin::restore(&elsewhere, &backup).expect("restore elsewhere");
    assert_eq!((restored.previous, restored.blob_files), (None, 2));
    let other = TestServer::start_with(|c| c.data_dir = fresh.path().to_path_buf()).await;
    let (status, _, bytes) = crate::blobs::download(&other.as_user("alice"), &blob, &[]).await;
    assert_eq!((status, bytes.len()), (200, photo.len()));
    assert_eq!(bytes, photo);
    drop(other);

    let restored = roam_server::admin::restore(&live, &backup).expect("restore");
    let previous = restored.previous.expect("the previous database is kept");
    assert!(previous.exists());
    let t = t.restart().await;
    let bodies: Vec<String> = t
        .as_user("alice")
        .all_messages("keep")
        .await
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(bodies, vec!["before the backup"]);
}

#[tokio::test]
async fn scheduled_backups_keep_the_newest() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in [
        "roam-backup-20260101T000000000Z",
        "roam-backup-20260102T000000000Z",
        "roam-backup-20260103T000000000Z",
        "roam-backup-20260104T000000000Z.partial",
        "someone-elses",
    ] {
        std::fs::create_dir_all(dir.path().join(name)).expect("mkdir");
    }
    let gone = roam_server::admin::prune(dir.path(), 2)
        .await
        .expect("prune");
    assert_eq!(
        gone,
        vec![dir.path().join("roam-backup-20260101T000000000Z")]
    );
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![
            "roam-backup-20260102T000000000Z",
            "roam-backup-20260103T000000000Z",
            "roam-backup-20260104T000000000Z.partial",
            "someone-elses",
        ]
    );
}
