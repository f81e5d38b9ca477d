//! Attachments against a fake blob server (protocol §10 routes, in memory): uploads resume from
//! the server's offset, a failed upload fails its message and `retry` uploads again, cancelling
//! removes everything, the media cache evicts least recently used files and survives a restart,
//! downloads resume with `Range`, and a deleted message's file leaves the cache.

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use roam_proto::{EventBody, Message as WireMessage, RoomEvent};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::auth::StaticToken;
use crate::config::ClientConfig;
use crate::db::{reads, writes};
use crate::error::Error;
use crate::model::{AttachmentDetails, SendState, UploadState};
use crate::sync::{self, Item};
use crate::Client;

/// The start of a PNG file: enough for a thumbnail the protocol takes.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Default)]
struct Fake {
    /// upload id → (sha256, size, bytes so far)
    uploads: HashMap<String, (String, u64, Vec<u8>)>,
    blobs: HashMap<String, Vec<u8>>,
    /// (offset, length) of every PATCH.
    patches: Vec<(u64, usize)>,
    /// `Range` headers of every download.
    ranges: Vec<Option<String>>,
    /// Refuse creating uploads with this status and code.
    refuse: Option<(u16, &'static str)>,
    next: u64,
}

type S = Arc<Mutex<Fake>>;

fn error(status: u16, code: &str, offset: Option<u64>) -> Response {
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        Json(json!({"error": {"code": code, "message": code}})),
    )
        .into_response();
    if let Some(o) = offset {
        resp.headers_mut()
            .insert("upload-offset", o.to_string().parse().expect("header"));
    }
    resp
}

async fn create(State(s): State<S>, Json(b): Json<Value>) -> Response {
    let mut f = s.lock();
    if let Some((status, code)) = f.refuse {
        return error(status, code, None);
    }
    let sha = b["sha256"].as_str().unwrap_or_default().to_owned();
    let size = b["size"].as_u64().unwrap_or_default();
    if f.blobs.contains_key(&sha) {
        return Json(json!({"blob": sha, "size": size, "complete": true})).into_response();
    }
    f.next += 1;
    let id = format!("up{}", f.next);
    f.uploads.insert(id.clone(), (sha, size, Vec::new()));
    (
        StatusCode::CREATED,
        Json(json!({"upload": id, "offset": 0, "complete": false})),
    )
        .into_response()
}

fn offset_of(h: &HeaderMap) -> u64 {
    h.get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

async fn head(State(s): State<S>, UrlPath(id): UrlPath<String>) -> Response {
    let f = s.lock();
    match f.uploads.get(&id) {
        Some((_, _, bytes)) => {
            let mut r = StatusCode::OK.into_response();
            r.headers_mut()
                .insert("upload-offset", bytes.len().to_string().parse().expect("h"));
            r
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn append(
    State(s): State<S>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let mut f = s.lock();
    let at = offset_of(&h);
    let Some((_, _, bytes)) = f.uploads.get_mut(&id) else {
        return error(404, "not_found", None);
    };
    let have = bytes.len() as u64;
    if at != have {
        return error(409, "conflict", Some(have));
    }
    bytes.extend_from_slice(&body);
    let now = bytes.len() as u64;
    f.patches.push((at, body.len()));
    let mut r = Json(json!({ "offset": now })).into_response();
    r.headers_mut()
        .insert("upload-offset", now.to_string().parse().expect("h"));
    r
}

async fn finish(State(s): State<S>, UrlPath(id): UrlPath<String>) -> Response {
    let mut f = s.lock();
    let Some((want, size, bytes)) = f.uploads.get(&id).cloned() else {
        return error(404, "not_found", None);
    };
    if (bytes.len() as u64) < size {
        return error(409, "conflict", Some(bytes.len() as u64));
    }
    if sha(&bytes) != want {
        f.uploads.remove(&id);
        return error(422, "hash_mismatch", None);
    }
    f.blobs.insert(want.clone(), bytes);
    Json(json!({"blob": want, "size": size, "complete": true})).into_response()
}

async fn blob(State(s): State<S>, UrlPath(sha256): UrlPath<String>, h: HeaderMap) -> Response {
    let mut f = s.lock();
    let range = h
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    f.ranges.push(range.clone());
    let Some(bytes) = f.blobs.get(&sha256).cloned() else {
        return error(403, "forbidden", None);
    };
    let from = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok());
    match from {
        Some(from) if from >= bytes.len() => StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
        Some(from) => (StatusCode::PARTIAL_CONTENT, bytes[from..].to_vec()).into_response(),
        None => (StatusCode::OK, bytes).into_response(),
    }
}

/// A fake blob server on loopback: its state and base URL.
async fn server() -> (S, String) {
    let state: S = Arc::new(Mutex::new(Fake::default()));
    let app = Router::new()
        .route("/v1/uploads", post(create))
        .route("/v1/uploads/{id}", patch(append).head(head))
        .route("/v1/uploads/{id}/finish", post(finish))
        .route("/v1/blobs/{sha256}", get(blob))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (state, format!("http://{addr}"))
}

fn config(dir: &std::path::Path, url: &str) -> ClientConfig {
    let mut c = ClientConfig::new(dir.join("a.db"), url, "me");
    c.media.chunk_bytes = 1000;
    c.media.max_bytes = 10_000;
    c.media.max_file_bytes = 5_000;
    c
}

fn open(dir: &std::path::Path, url: &str) -> Client {
    Client::open(config(dir, url), Arc::new(StaticToken("t".into()))).expect("open")
}

fn file(dir: &std::path::Path, name: &str, len: usize, seed: u8) -> (String, Vec<u8>) {
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, &bytes).expect("write");
    (path.display().to_string(), bytes)
}

fn upload_of(c: &Client, id: &str) -> Option<reads::StoredUpload> {
    c.ctx()
        .db
        .read(|conn| reads::upload(conn, id))
        .expect("read")
}

/// What the scheduler would put on the wire now.
fn on_wire(c: &Client) -> Vec<String> {
    c.ctx()
        .outbox
        .lock()
        .fill(tokio::time::Instant::now())
        .into_iter()
        .map(|o| o.key)
        .collect()
}

#[tokio::test]
async fn the_send_waits_for_its_upload_and_keeps_its_place_in_the_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, url) = server().await;
    let c = open(dir.path(), &url);
    let (path, bytes) = file(dir.path(), "photo.jpg", 2500, 1);
    let details = AttachmentDetails {
        width: Some(4),
        height: Some(3),
        thumbnail: Some(PNG.to_vec()),
        ..Default::default()
    };
    let m = c
        .send_attachment(
            "r".into(),
            path.clone(),
            "image/jpeg".into(),
            "look".into(),
            details,
        )
        .expect("send");
    let text = c.send_message("r".into(), "after".into()).expect("text");
    let a = m.attachment.clone().expect("attachment");
    assert_eq!(
        (a.name.as_str(), a.size, a.width),
        ("photo.jpg", 2500, Some(4))
    );
    assert_eq!(a.sha256, sha(&bytes));
    assert_eq!(a.thumbnail.as_deref(), Some(PNG));
    assert_eq!(
        a.upload.as_ref().map(|u| u.state.clone()),
        Some(UploadState::Uploading)
    );
    let local = a.local_path.expect("the local file");
    std::fs::remove_file(&path).expect("the app deletes its copy");
    assert_eq!(std::fs::read(&local).expect("still held"), bytes);
    // The timeline reads it back the same way.
    let read = c
        .message(m.local_id.clone())
        .expect("read")
        .expect("stored");
    assert_eq!(
        read.attachment.as_ref().map(|a| a.sha256.clone()),
        Some(sha(&bytes))
    );
    assert!(
        on_wire(&c).is_empty(),
        "the send and the text behind it wait for the upload"
    );

    let u = upload_of(&c, &m.local_id).expect("upload row");
    assert!(crate::upload::tests_send(c.ctx(), &u)
        .await
        .expect("upload"));
    assert!(upload_of(&c, &m.local_id).is_none(), "the upload row goes");
    assert_eq!(on_wire(&c), [m.local_id.clone(), text.local_id.clone()]);
    let read = c.message(m.local_id).expect("read").expect("stored");
    assert_eq!(read.attachment.and_then(|a| a.upload), None);
}

#[tokio::test]
async fn a_request_reads_the_file_as_it_goes_and_a_short_file_is_a_file_error() {
    use crate::http::Sent;
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, url) = server().await;
    let c = open(dir.path(), &url);
    // More than one read of the body (1 MiB each), from the start and from an offset.
    let (path, bytes) = file(dir.path(), "long.bin", 1_500_000, 6);
    fake.lock()
        .uploads
        .insert("u".into(), (sha(&bytes), 1_500_010, Vec::new()));
    let (http, p) = (&c.ctx().http, std::path::Path::new(&path));
    assert_eq!(
        http.send_file_bytes("u", p, 0, 1_200_000)
            .await
            .expect("sent"),
        Sent::At(1_200_000)
    );
    assert_eq!(
        http.send_file_bytes("u", p, 1_200_000, 300_000)
            .await
            .expect("sent"),
        Sent::At(1_500_000)
    );
    assert_eq!(fake.lock().uploads["u"].2, bytes);
    // Bytes past the file's end cannot be read: the file's fault, not the network's (an
    // upload fails for good rather than trying again).
    let r = http.send_file_bytes("u", p, 1_500_000, 10).await;
    assert!(matches!(r, Err(Error::File { .. })), "{r:?}");
    assert_eq!(fake.lock().uploads["u"].2.len(), 1_500_000, "nothing more");
    let gone = dir.path().join("gone.bin");
    let r = http.send_file_bytes("u", &gone, 1_500_000, 10).await;
    assert!(matches!(r, Err(Error::File { .. })), "{r:?}");
}

#[tokio::test]
async fn an_upload_resumes_from_the_servers_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, url) = server().await;
    let c = open(dir.path(), &url);
    let (path, bytes) = file(dir.path(), "clip.mp4", 5000, 2);
    let m = c
        .send_attachment(
            "r".into(),
            path,
            "video/mp4".into(),
            String::new(),
            Default::default(),
        )
        .expect("send");
    // An earlier process got 3,000 bytes to the server, and recorded less before it died.
    fake.lock().uploads.insert(
        "earlier".into(),
        (sha(&bytes), 5000, bytes[..3000].to_vec()),
    );
    c.ctx()
        .write(|tx, _| writes::set_upload_progress(tx, &m.local_id, Some("earlier"), 1000))
        .expect("record");
    drop(c);
    let c = open(dir.path(), &url);
    assert!(on_wire(&c).is_empty(), "still waiting after a restart");
    let u = upload_of(&c, &m.local_id).expect("upload row");
    assert!(crate::upload::tests_send(c.ctx(), &u)
        .await
        .expect("upload"));
    let f = fake.lock();
    assert_eq!(
        f.patches,
        [(3000, 1000), (4000, 1000)],
        "from the server's offset"
    );
    assert_eq!(f.blobs.get(&sha(&bytes)), Some(&bytes));
    drop(f);
    assert_eq!(c.metrics().upload_bytes, 2000);
    assert_eq!(on_wire(&c), [m.local_id]);
}

#[tokio::test]
async fn a_failed_upload_fails_the_message_and_retry_uploads_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, url) = server().await;
    let c = open(dir.path(), &url);
    let (path, _) = file(dir.path(), "big.bin", 1500, 3);
    let m = c
        .send_attachment(
            "r".into(),
            path,
            "application/pdf".into(),
            "x".into(),
            Default::default(),
        )
        .expect("send");
    let after = c.send_message("r".into(), "next".into()).expect("text");
    fake.lock().refuse = Some((413, "payload_too_large"));
    let u = upload_of(&c, &m.local_id).expect("upload row");
    assert!(crate::upload::tests_send(c.ctx(), &u).await.is_err());
    let failed = c
        .message(m.local_id.clone())
        .expect("read")
        .expect("stored");
    assert!(
        matches!(&failed.send_state, SendState::Failed { code, .. } if code == "payload_too_large"),
        "{failed:?}"
    );
    assert!(matches!(
        failed.attachment.and_then(|a| a.upload).map(|u| u.state),
        Some(UploadState::Failed { .. })
    ));
    assert_eq!(
        on_wire(&c),
        [after.local_id],
        "the rest of the room goes on"
    );

    fake.lock().refuse = None;
    c.retry(m.local_id.clone()).expect("retry");
    assert_eq!(
        c.message(m.local_id.clone())
            .expect("r")
            .expect("s")
            .send_state,
        SendState::Pending
    );
    assert!(on_wire(&c).is_empty(), "waits for the upload again");
    let u = upload_of(&c, &m.local_id).expect("upload row");
    assert!(crate::upload::tests_send(c.ctx(), &u)
        .await
        .expect("upload"));
    assert_eq!(on_wire(&c), [m.local_id]);
}

#[tokio::test]
async fn cancelling_removes_the_message_its_upload_and_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, url) = server().await;
    let c = open(dir.path(), &url);
    let (path, _) = file(dir.path(), "a.txt", 1200, 4);
    let m = c
        .send_attachment(
            "r".into(),
            path,
            "text/plain".into(),
            String::new(),
            Default::default(),
        )
        .expect("send");
    let local = m.attachment.and_then(|a| a.local_path).expect("file");
    c.cancel_attachment(m.local_id.clone()).expect("cancel");
    assert!(c.message(m.local_id.clone()).expect("read").is_none());
    assert!(upload_of(&c, &m.local_id).is_none());
    assert!(c.outbox().expect("outbox").is_empty());
    assert!(
        !std::path::Path::new(&local).exists(),
        "the file left the cache"
    );
    assert_eq!(c.media_cache_bytes().expect("bytes"), 0);
    // An upload under way notices at its next chunk.
    let gone = c
        .ctx()
        .write(|tx, _| writes::set_upload_progress(tx, &m.local_id, Some("x"), 1))
        .expect("write");
    assert!(!gone);
    assert!(matches!(
        c.cancel_attachment(m.local_id),
        Err(Error::InvalidState { .. })
    ));
}

/// Stores a message from the server carrying a file of `bytes`.
fn receive(c: &Client, id: &str, seq: u64, bytes: &[u8], deleted: bool) {
    let m = WireMessage {
        id: id.into(),
        room: "r".into(),
        seq,
        sender: "you".into(),
        body: String::new(),
        reply_to: None,
        created_at: 1,
        edited_at: None,
        deleted,
        attachment: (!deleted).then(|| roam_proto::Attachment {
            blob: sha(bytes),
            name: format!("{id}.bin"),
            mime: "application/octet-stream".into(),
            size: bytes.len() as u64,
            width: None,
            height: None,
            duration_ms: None,
            thumbnail: None,
        }),
    };
    let body = if deleted {
        EventBody::MessageDeleted(m)
    } else {
        EventBody::MessageCreated(m)
    };
    let ev = RoomEvent {
        room: "r".into(),
        seq,
        at: 1,
        actor: "you".into(),
        body,
    };
    sync::apply(
        c.ctx(),
        &[Item::Event(ev)],
        &HashSet::new(),
        &HashSet::new(),
    )
    .expect("apply");
}

#[tokio::test]
async fn the_cache_evicts_least_recently_used_files_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, url) = server().await;
    let files: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i + 10; 4000]).collect();
    let big = vec![9u8; 6000];
    {
        let mut f = fake.lock();
        for b in files.iter().chain([&big]) {
            f.blobs.insert(sha(b), b.clone());
        }
    }
    let c = open(dir.path(), &url);
    for (i, b) in files.iter().enumerate() {
        receive(&c, &format!("m{i}"), i as u64 + 1, b, false);
    }
    receive(&c, "huge", 4, &big, false);
    let a = c.attachment_file("m0".into()).await.expect("m0");
    assert_eq!(std::fs::read(&a).expect("read"), files[0]);
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let b = c.attachment_file("m1".into()).await.expect("m1");
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    // m0 used again: m1 is now the least recently used.
    assert_eq!(c.attachment_file("m0".into()).await.expect("again"), a);
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let third = c.attachment_file("m2".into()).await.expect("m2");
    assert_eq!(c.media_cache_bytes().expect("bytes"), 8000, "within 10,000");
    assert!(!std::path::Path::new(&b).exists(), "m1 evicted");
    assert!(std::path::Path::new(&a).exists() && std::path::Path::new(&third).exists());
    assert!(c
        .message("m1".into())
        .expect("r")
        .and_then(|m| m.attachment)
        .and_then(|a| a.local_path)
        .is_none());
    let huge = c.attachment_file("huge".into()).await;
    assert!(
        matches!(huge, Err(Error::InvalidInput { .. })),
        "above the per-file cap: {huge:?}"
    );
    drop(c);
    // After a restart, with the server gone: still held, read offline.
    let c = open(dir.path(), "http://127.0.0.1:9");
    assert_eq!(c.attachment_file("m0".into()).await.expect("offline"), a);
    assert_eq!(c.media_cache_bytes().expect("bytes"), 8000);
    assert!(
        c.attachment_file("m1".into()).await.is_err(),
        "evicted, and no server"
    );
}

#[tokio::test]
async fn a_download_resumes_from_its_partial_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, url) = server().await;
    let bytes: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    fake.lock().blobs.insert(sha(&bytes), bytes.clone());
    let c = open(dir.path(), &url);
    receive(&c, "m", 1, &bytes, false);
    let media = c.ctx().media.dir().to_owned();
    std::fs::create_dir_all(&media).expect("dir");
    std::fs::write(media.join(format!("{}.part", sha(&bytes))), &bytes[..1500]).expect("part");
    let path = c.attachment_file("m".into()).await.expect("file");
    assert_eq!(std::fs::read(&path).expect("read"), bytes);
    assert_eq!(fake.lock().ranges, [Some("bytes=1500-".to_owned())]);
    assert_eq!(c.metrics().download_bytes, 2500);
}

#[tokio::test]
async fn a_deleted_message_leaves_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, url) = server().await;
    let bytes = vec![5u8; 1000];
    fake.lock().blobs.insert(sha(&bytes), bytes.clone());
    let c = open(dir.path(), &url);
    receive(&c, "m", 1, &bytes, false);
    let path = c.attachment_file("m".into()).await.expect("file");
    receive(&c, "m", 2, &bytes, true);
    assert!(!std::path::Path::new(&path).exists());
    assert_eq!(c.media_cache_bytes().expect("bytes"), 0);
    let m = c.message("m".into()).expect("read").expect("stored");
    assert!(m.deleted && m.attachment.is_none());
    assert!(matches!(
        c.attachment_file("m".into()).await,
        Err(Error::InvalidInput { .. })
    ));
}

#[tokio::test]
async fn a_moved_media_directory_is_followed_and_a_wipe_deletes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, url) = server().await;
    let bytes = vec![3u8; 1200];
    fake.lock().blobs.insert(sha(&bytes), bytes.clone());
    let c = open(dir.path(), &url);
    receive(&c, "m", 1, &bytes, false);
    let first = c.attachment_file("m".into()).await.expect("file");
    let old_dir = c.ctx().media.dir().to_owned();
    drop(c);
    // The app's container moved (as iOS does on an update): the files with it.
    let new_dir = dir.path().join("moved-media");
    std::fs::rename(&old_dir, &new_dir).expect("move");
    let mut moved = config(dir.path(), "http://127.0.0.1:9");
    moved.media.dir = Some(new_dir.clone());
    let c = Client::open(moved, Arc::new(StaticToken("t".into()))).expect("open");
    let path = c.attachment_file("m".into()).await.expect("offline, moved");
    assert_ne!(path, first);
    assert!(path.starts_with(&new_dir.display().to_string()));
    assert_eq!(std::fs::read(&path).expect("read"), bytes);
    c.sign_out(true).await.expect("sign out");
    assert!(!new_dir.exists(), "a wipe deletes the media directory");
}
