//! Attachments between real clients and the real server: alice sends a file, her client is
//! stopped and reopened mid-upload and goes on from the server's offset (not from 0), the message
//! reaches bob with its attachment, bob downloads it (the same bytes) into his media cache, and
//! alice deleting the message takes it out of bob's cache.

use std::sync::Arc;
use std::time::Duration;

use roam_core::{SendState, UploadListener, UploadProgress, UploadState};
use roam_tests::{all_local, fast_config, open_client, wait_until, Backend, Fault, Proxy};
use tokio::sync::mpsc;

/// Forwards upload progress to the test.
struct Progress(mpsc::UnboundedSender<UploadProgress>);

impl UploadListener for Progress {
    fn on_upload_progress(&self, progress: UploadProgress) {
        let _ = self.0.send(progress);
    }
}

const SIZE: usize = 6 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

fn config(dir: &std::path::Path, backend: &Backend, user: &str) -> roam_core::ClientConfig {
    let mut c = fast_config(&dir.join(format!("{user}.db")), &backend.url(), user);
    c.media.chunk_bytes = CHUNK;
    c.media.initial_backoff = Duration::from_millis(50);
    c.media.max_backoff = Duration::from_millis(250);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_resumes_after_a_restart_reaches_the_other_client_and_leaves_with_deletion() {
    let backend = Backend::up().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let api = backend.api("alice");
    api.create_room("pics", "public").await;
    backend.api("bob").join("pics").await;

    let bytes: Vec<u8> = (0..SIZE)
        .map(|i| (i % 251) as u8 ^ (i / 7919) as u8)
        .collect();
    let file = dir.path().join("holiday.mp4");
    std::fs::write(&file, &bytes).expect("write the file");

    // Alice sends it; her client stops after the first chunks reached the server.
    let a = open_client(
        config(dir.path(), &backend, "alice"),
        backend.token("alice"),
    );
    let (tx, mut progress) = mpsc::unbounded_channel();
    let sub = a.subscribe_uploads(Arc::new(Progress(tx)));
    a.start().await.expect("start alice");
    let taken = std::time::Instant::now();
    let sent = a
        .send_attachment(
            "pics".into(),
            file.display().to_string(),
            "video/mp4".into(),
            "the beach".into(),
            roam_core::AttachmentDetails {
                width: Some(1920),
                height: Some(1080),
                duration_ms: Some(4000),
                ..Default::default()
            },
        )
        .expect("send");
    eprintln!(
        "send_attachment of {SIZE} bytes (link, hash, queue): {:?}",
        taken.elapsed()
    );
    std::fs::remove_file(&file).expect("the app deletes its copy");
    let a_local = sent
        .attachment
        .clone()
        .and_then(|a| a.local_path)
        .expect("local file");
    let stopped_at = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let p = progress.recv().await.expect("progress");
            if p.sent_bytes > 0 {
                return p.sent_bytes;
            }
        }
    })
    .await
    .expect("the upload started");
    a.shutdown().await;
    drop(sub);
    drop(a);
    assert!(stopped_at < SIZE as u64, "stopped mid-upload");

    // Reopened: the upload goes on from what the server holds.
    let a = open_client(
        config(dir.path(), &backend, "alice"),
        backend.token("alice"),
    );
    assert_eq!(
        a.message(sent.local_id.clone())
            .expect("read")
            .and_then(|m| m.attachment)
            .and_then(|a| a.upload)
            .map(|u| u.state),
        Some(UploadState::Uploading),
        "still uploading after the restart"
    );
    a.start().await.expect("restart alice");
    let resumed_at = std::time::Instant::now();
    wait_until("alice's message is sent", || {
        a.message(sent.local_id.clone())
            .ok()
            .flatten()
            .is_some_and(|m| m.send_state == SendState::Sent)
    })
    .await;
    let resumed = a.metrics().upload_bytes;
    eprintln!(
        "rest of the upload ({resumed} bytes in {CHUNK}-byte requests) and the send: {:?}",
        resumed_at.elapsed()
    );
    // The server held at least what alice's first process saw acknowledged.
    assert!(
        resumed <= SIZE as u64 - stopped_at,
        "resumed from the server's offset, not from 0: sent {resumed} of {SIZE} after the \
         restart, {stopped_at} were on the server before"
    );
    eprintln!("stopped at {stopped_at} bytes; {resumed} sent after the restart");
    assert_eq!(a.metrics().uploads_completed, 1);
    assert_eq!(std::fs::read(&a_local).expect("alice's cached copy"), bytes);

    // Bob gets the message with its attachment, and downloads it.
    let b = open_client(config(dir.path(), &backend, "bob"), backend.token("bob"));
    b.start().await.expect("start bob");
    wait_until("bob has the message with its file", || {
        all_local(&b, "pics")
            .iter()
            .any(|m| m.attachment.is_some() && m.body == "the beach")
    })
    .await;
    let theirs = all_local(&b, "pics")
        .into_iter()
        .find(|m| m.attachment.is_some())
        .expect("message");
    let att = theirs.attachment.clone().expect("attachment");
    assert_eq!(
        (
            att.name.as_str(),
            att.mime.as_str(),
            att.size,
            att.width,
            att.duration_ms
        ),
        (
            "holiday.mp4",
            "video/mp4",
            SIZE as u64,
            Some(1920),
            Some(4000)
        )
    );
    assert!(att.local_path.is_none(), "not downloaded yet");
    let fetching = std::time::Instant::now();
    let path = b
        .attachment_file(theirs.local_id.clone())
        .await
        .expect("download");
    eprintln!(
        "download of {SIZE} bytes with its hash check: {:?}",
        fetching.elapsed()
    );
    let cached = std::time::Instant::now();
    assert_eq!(
        b.attachment_file(theirs.local_id.clone())
            .await
            .expect("cached"),
        path
    );
    eprintln!("the same file from the cache: {:?}", cached.elapsed());
    assert!(
        std::fs::read(&path).expect("bob's copy") == bytes,
        "the same bytes"
    );
    assert_eq!(b.media_cache_bytes().expect("bytes"), SIZE as u64);

    // Alice deletes it: bob's copy leaves his cache.
    a.delete_message("pics".into(), sent.local_id.clone())
        .expect("delete");
    wait_until("bob's cached copy is gone", || {
        !std::path::Path::new(&path).exists()
    })
    .await;
    assert_eq!(b.media_cache_bytes().expect("bytes"), 0);
    let gone = b.message(theirs.local_id).expect("read").expect("stored");
    assert!(gone.deleted && gone.attachment.is_none());
    wait_until("alice's own copy is gone too", || {
        !std::path::Path::new(&a_local).exists()
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_by_the_network_goes_on_from_the_servers_offset() {
    let backend = Backend::up().await;
    let proxy = Proxy::start(backend.addr).await;
    let dir = tempfile::tempdir().expect("tempdir");
    backend.api("alice").create_room("pics", "public").await;
    let bytes: Vec<u8> = (0..SIZE).map(|i| (i % 241) as u8).collect();
    let file = dir.path().join("scan.pdf");
    std::fs::write(&file, &bytes).expect("write the file");
    let mut config = config(dir.path(), &backend, "alice");
    config.server_url = proxy.url();
    let a = open_client(config, backend.token("alice"));
    let (tx, mut progress) = mpsc::unbounded_channel();
    let _sub = a.subscribe_uploads(Arc::new(Progress(tx)));
    a.start().await.expect("start");
    let sent = a
        .send_attachment(
            "pics".into(),
            file.display().to_string(),
            "application/pdf".into(),
            String::new(),
            Default::default(),
        )
        .expect("send");
    // The network goes once some bytes are on the server, and comes back a moment later.
    tokio::time::timeout(Duration::from_secs(30), async {
        while progress.recv().await.expect("progress").sent_bytes == 0 {}
    })
    .await
    .expect("the upload started");
    proxy.set(Fault::Drop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.set(Fault::Pass);
    a.network_available();
    wait_until("the message is sent", || {
        a.message(sent.local_id.clone())
            .ok()
            .flatten()
            .is_some_and(|m| m.send_state == SendState::Sent)
    })
    .await;
    let total = a.metrics().upload_bytes;
    let retries = a.metrics().upload_retries;
    eprintln!("after the cut: {total} bytes sent for a file of {SIZE}, {retries} retries");
    assert!(retries >= 1, "the cut interrupted the upload");
    assert!(
        total <= (SIZE + CHUNK) as u64,
        "at most the chunk cut off is sent twice, not the file: {total} bytes for {SIZE}"
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let p = progress.recv().await.expect("progress");
            if p.state != UploadState::Uploading {
                return p;
            }
        }
    })
    .await
    .expect("the upload ended");
    assert_eq!(ended.state, UploadState::Done);
    a.shutdown().await;
}

/// A file that would take the sender past their storage quota (`--blob-quota-mb-per-user`)
/// fails its message at once with `quota_exceeded` (the server's usage and limit in the
/// reason), not retried; the room's next message goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_the_quota_fails_its_message_and_the_room_goes_on() {
    let mut backend = Backend::down_with(|c| c.blob_quota_mb_per_user = 1);
    backend.start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    backend.api("alice").create_room("pics", "public").await;
    let file = dir.path().join("big.bin");
    std::fs::write(&file, vec![7u8; 3 << 19]).expect("write the file");
    let a = open_client(
        config(dir.path(), &backend, "alice"),
        backend.token("alice"),
    );
    a.start().await.expect("start");
    let sent = a
        .send_attachment(
            "pics".into(),
            file.display().to_string(),
            "application/octet-stream".into(),
            "too much".into(),
            Default::default(),
        )
        .expect("send");
    let next = a
        .send_message("pics".into(), "after it".into())
        .expect("text");
    wait_until("the attachment fails", || {
        a.message(sent.local_id.clone())
            .ok()
            .flatten()
            .is_some_and(|m| m.send_state.is_failed())
    })
    .await;
    let failed = a
        .message(sent.local_id.clone())
        .expect("read")
        .expect("stored");
    match &failed.send_state {
        SendState::Failed { code, message, .. } => {
            assert_eq!(code, "quota_exceeded");
            assert!(message.contains("quota"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    wait_until("the next message is sent", || {
        a.message(next.local_id.clone())
            .ok()
            .flatten()
            .is_some_and(|m| m.send_state == SendState::Sent)
    })
    .await;
    assert_eq!(a.metrics().upload_bytes, 0, "nothing was uploaded");
    let bodies: Vec<String> = backend
        .api("alice")
        .all_messages("pics")
        .await
        .iter()
        .filter_map(|m| m["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(bodies, ["after it"]);
    a.shutdown().await;
}
