//! Attachments (`docs/protocol.md` §10): resumable uploads and blob downloads over real HTTP,
//! on the default file store and on an S3-compatible server (`moto_server`, started by each S3
//! test on a free loopback port; skipped, saying so, only when it is not installed and
//! `ROAM_REQUIRE_S3` is unset).

use std::time::Duration;

use reqwest::Method;
use roam_server::blob::s3::{S3BlobStore, S3Settings};
use roam_server::blob::BlobStore;
use roam_server::config::{BlobStoreKind, Config, Secret};
use roam_testkit::OwnMoto;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fixtures::{Api, Resp, TestServer, WAIT};

pub(crate) fn sha(data: &[u8]) -> String {
    roam_server::blob::hex(&Sha256::digest(data))
}

/// `len` bytes that start like a PNG file.
pub(crate) fn png(len: usize) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    v.extend((0..len.saturating_sub(v.len())).map(|i| (i * 31 % 251) as u8));
    v.truncate(len);
    v
}

async fn create(api: &Api, data: &[u8], mime: &str) -> Resp {
    let body = json!({"size": data.len(), "sha256": sha(data), "mime": mime});
    Resp::read(
        api.builder(Method::POST, "/v1/uploads")
            .json(&body)
            .send()
            .await
            .expect("create"),
    )
    .await
}

/// Creates an upload; panics unless it is a new one.
async fn start(api: &Api, data: &[u8]) -> String {
    let r = create(api, data, "image/png").await;
    assert_eq!(r.status, 201, "create: {:?}", r.body);
    assert_eq!(r.header("upload-offset"), Some("0"));
    r.body["upload"].as_str().expect("upload id").to_owned()
}

async fn patch(api: &Api, id: &str, offset: u64, bytes: &[u8]) -> Resp {
    Resp::read(
        api.builder(Method::PATCH, &format!("/v1/uploads/{id}"))
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .expect("patch"),
    )
    .await
}

async fn offset_of(api: &Api, id: &str) -> Option<u64> {
    let r = api
        .builder(Method::HEAD, &format!("/v1/uploads/{id}"))
        .send()
        .await
        .expect("head");
    if r.status() != 200 {
        return None;
    }
    r.headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

async fn finish(api: &Api, id: &str) -> Resp {
    Resp::read(
        api.builder(Method::POST, &format!("/v1/uploads/{id}/finish"))
            .send()
            .await
            .expect("finish"),
    )
    .await
}

/// Uploads `data` whole in requests of `chunk` bytes; returns the blob id.
pub(crate) async fn upload(api: &Api, data: &[u8], chunk: usize) -> String {
    let id = start(api, data).await;
    let mut at = 0;
    for piece in data.chunks(chunk.max(1)) {
        let r = patch(api, &id, at as u64, piece).await;
        assert_eq!(r.status, 200, "patch at {at}: {:?}", r.body);
        at += piece.len();
        assert_eq!(r.body["offset"], json!(at));
    }
    let r = finish(api, &id).await;
    assert_eq!(r.status, 200, "finish: {:?}", r.body);
    assert_eq!(r.body["blob"], json!(sha(data)));
    sha(data)
}

/// A download: status, headers and bytes.
pub(crate) async fn download(
    api: &Api,
    blob: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut b = api.builder(Method::GET, &format!("/v1/blobs/{blob}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let r = b.send().await.expect("download");
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.bytes().await.expect("bytes").to_vec())
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Every file under `dir` (relative paths), skipping the store's temporary directory.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with(".tmp") {
                    todo.push(p);
                }
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.push(rel.display().to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn a_file_uploads_in_pieces_and_downloads_whole_and_in_ranges() {
    let server = TestServer::start().await;
    let alice = server.as_user("alice");
    let data = png(100_000);
    let blob = upload(&alice, &data, 30_000).await;

    let (status, h, bytes) = download(&alice, &blob, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, data);
    assert_eq!(header(&h, "content-type"), "image/png");
    assert_eq!(header(&h, "content-length"), "100000");
    assert_eq!(header(&h, "etag"), format!("\"{blob}\""));
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    assert_eq!(header(&h, "accept-ranges"), "bytes");
    assert!(header(&h, "content-disposition").starts_with("inline"));
    assert!(h.get("content-encoding").is_none(), "blobs go as stored");

    let (status, h, bytes) = download(&alice, &blob, &[("Range", "bytes=10-19")]).await;
    assert_eq!(status, 206);
    assert_eq!(bytes, &data[10..20]);
    assert_eq!(header(&h, "content-range"), "bytes 10-19/100000");
    let (status, h, bytes) = download(&alice, &blob, &[("Range", "bytes=-7")]).await;
    assert_eq!(status, 206);
    assert_eq!(bytes, &data[100_000 - 7..]);
    assert_eq!(header(&h, "content-range"), "bytes 99993-99999/100000");
    let (status, _, bytes) = download(&alice, &blob, &[("Range", "bytes=99990-")]).await;
    assert_eq!((status, bytes.as_slice()), (206, &data[99_990..]));
    let (status, h, _) = download(&alice, &blob, &[("Range", "bytes=100000-")]).await;
    assert_eq!(status, 416);
    assert_eq!(header(&h, "content-range"), "bytes */100000");
    // Several ranges are not supported: the whole blob.
    let (status, _, bytes) = download(&alice, &blob, &[("Range", "bytes=0-1,5-6")]).await;
    assert_eq!((status, bytes.len()), (200, data.len()));
    // A stale If-Range asks for the whole blob; the right one for the range.
    let (status, _, _) = download(
        &alice,
        &blob,
        &[("Range", "bytes=0-1"), ("If-Range", "\"x\"")],
    )
    .await;
    assert_eq!(status, 200);
    let tag = format!("\"{blob}\"");
    let (status, _, bytes) = download(&alice, &blob, &[("If-None-Match", &tag)]).await;
    assert_eq!((status, bytes.len()), (304, 0));

    assert_eq!(
        server
            .metric("roam_blob_uploads_finished_total", None)
            .await,
        1.0
    );
    assert_eq!(
        server.metric("roam_blob_upload_bytes_total", None).await,
        100_000.0
    );
    assert!(server.metric("roam_blob_downloads_total", None).await >= 5.0);
    // The parts went once the blob was made.
    let left = files_under(&server.dir.path().join("blobs/uploads"));
    assert!(left.iter().all(|f| f.ends_with("meta.json")), "{left:?}");
}

#[tokio::test]
async fn an_interrupted_patch_resumes_from_what_was_stored() {
    let server = TestServer::start().await;
    let alice = server.as_user("alice");
    let data = png(200_000);
    let id = start(&alice, &data).await;

    // A client that announces the whole file, sends 30,000 bytes and goes away.
    let mut sock = tokio::net::TcpStream::connect(server.server().local_addr())
        .await
        .expect("connect");
    let head = format!(
        "PATCH /v1/uploads/{id} HTTP/1.1\r\nHost: roam\r\nAuthorization: Bearer {}\r\n\
         Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n\
         Content-Length: {}\r\n\r\n",
        server.token("alice"),
        data.len()
    );
    sock.write_all(head.as_bytes()).await.expect("head");
    sock.write_all(&data[..30_000]).await.expect("some bytes");
    sock.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, sock.read_to_end(&mut answer)).await;
    drop(sock);

    // What arrived is stored (the server finishes storing it even with the client gone).
    let mut offset = None;
    for _ in 0..200 {
        offset = offset_of(&alice, &id).await;
        if offset == Some(30_000) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        offset,
        Some(30_000),
        "the offset after the interrupted request"
    );
    let r = patch(&alice, &id, 30_000, &data[30_000..]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = finish(&alice, &id).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (_, _, bytes) = download(&alice, &sha(&data), &[]).await;
    assert_eq!(bytes, data);
}

#[tokio::test]
async fn a_wrong_offset_is_answered_with_the_current_one() {
    let server = TestServer::start().await;
    let alice = server.as_user("alice");
    let data = png(1_000);
    let id = start(&alice, &data).await;
    assert_eq!(patch(&alice, &id, 0, &data[..400]).await.status, 200);
    for wrong in [0, 300, 500] {
        let r = patch(&alice, &id, wrong, &data[400..500]).await;
        assert_eq!(r.status, 409, "{:?}", r.body);
        assert_eq!(r.code(), "conflict");
        assert_eq!(r.body["error"]["offset"], json!(400));
        assert_eq!(r.header("upload-offset"), Some("400"));
    }
    let r = Resp::read(
        alice
            .builder(Method::PATCH, &format!("/v1/uploads/{id}"))
            .body(b"x".to_vec())
            .send()
            .await
            .expect("patch"),
    )
    .await;
    assert_eq!(r.status, 400, "no Upload-Offset: {:?}", r.body);
    // Finishing early says how far the upload got.
    let r = finish(&alice, &id).await;
    assert_eq!(
        (r.status, r.body["error"]["offset"].clone()),
        (409, json!(400))
    );
    let r = Resp::read(
        alice
            .builder(Method::GET, &format!("/v1/uploads/{id}"))
            .send()
            .await
            .expect("status"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["offset"], json!(400));
    assert_eq!(r.body["size"], json!(1_000));
    assert_eq!(r.body["sha256"], json!(sha(&data)));
}

#[tokio::test]
async fn too_large_is_refused_before_anything_is_stored() {
    let server = TestServer::start_with(|c| {
        c.max_upload_mb = 2;
        c.max_upload_chunk_mb = 1;
    })
    .await;
    let alice = server.as_user("alice");
    let uploads = server.dir.path().join("blobs/uploads");

    let over = vec![0u8; 2 * 1024 * 1024 + 1];
    let r = create(&alice, &over, "video/mp4").await;
    assert_eq!(
        (r.status, r.code()),
        (413, "payload_too_large"),
        "{:?}",
        r.body
    );
    assert_eq!(files_under(&uploads), Vec::<String>::new());

    let data = png(1_500_000);
    let id = start(&alice, &data).await;
    // More than one request may carry.
    let r = patch(&alice, &id, 0, &data[..1024 * 1024 + 1]).await;
    assert_eq!(
        (r.status, r.header("upload-offset")),
        (413, Some("0")),
        "{:?}",
        r.body
    );
    // More than the declared size.
    let mut past = data[..1_000_000].to_vec();
    assert_eq!(patch(&alice, &id, 0, &past).await.status, 200);
    past.resize(600_000, 1);
    let r = patch(&alice, &id, 1_000_000, &past).await;
    assert_eq!(
        (r.status, r.body["error"]["offset"].clone()),
        (413, json!(1_000_000))
    );
    let parts = files_under(&uploads.join(&id).join("parts"));
    assert_eq!(
        parts.len(),
        1,
        "only the accepted request is stored: {parts:?}"
    );
    assert_eq!(offset_of(&alice, &id).await, Some(1_000_000));
}

#[tokio::test]
async fn a_hash_mismatch_keeps_nothing() {
    let server = TestServer::start().await;
    let alice = server.as_user("alice");
    let declared = png(5_000);
    let id = start(&alice, &declared).await;
    let mut other = declared.clone();
    other[4_000] ^= 1;
    assert_eq!(patch(&alice, &id, 0, &other).await.status, 200);
    // Found by the hash carried along as the bytes arrived (the restart test reads them back).
    let r = finish(&alice, &id).await;
    assert_eq!((r.status, r.code()), (422, "hash_mismatch"), "{:?}", r.body);
    assert_eq!(offset_of(&alice, &id).await, None, "the upload is gone");
    assert_eq!(finish(&alice, &id).await.status, 404);
    assert_eq!(
        files_under(&server.dir.path().join("blobs")),
        Vec::<String>::new()
    );
    let (status, _, _) = download(&alice, &sha(&declared), &[]).await;
    assert_eq!(status, 403, "nothing was stored under the declared hash");
    assert_eq!(
        server.metric("roam_blob_hash_mismatches_total", None).await,
        1.0
    );
}

#[tokio::test]
async fn an_upload_resumed_after_a_restart_is_hashed_again_at_finish() {
    // Bytes that arrive in order on one server are hashed as they come; an upload resumed on
    // a restarted one (its memory gone) is read back at finish, and checked all the same.
    let server = TestServer::start().await;
    let alice = server.as_user("alice");
    let data = png(300_000);
    upload(&alice, &data, 100_000).await;
    assert_eq!(
        server
            .metric("roam_blob_finishes_read_back_total", None)
            .await,
        0.0,
        "hashed as the bytes arrived"
    );
    let good = png(250_000);
    let good_id = start(&alice, &good).await;
    assert_eq!(
        patch(&alice, &good_id, 0, &good[..120_000]).await.status,
        200
    );
    let declared: Vec<u8> = good.iter().map(|b| b ^ 0x5a).collect();
    let bad_id = start(&alice, &declared).await;
    assert_eq!(
        patch(&alice, &bad_id, 0, &declared[..120_000]).await.status,
        200
    );

    let server = server.restart().await;
    let alice = server.as_user("alice");
    assert_eq!(
        patch(&alice, &good_id, 120_000, &good[120_000..])
            .await
            .status,
        200
    );
    let r = finish(&alice, &good_id).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["blob"], json!(sha(&good)));
    let (_, _, bytes) = download(&alice, &sha(&good), &[]).await;
    assert_eq!(bytes, good);
    assert_eq!(
        server
            .metric("roam_blob_finishes_read_back_total", None)
            .await,
        1.0
    );

    // The rest of the other one is wrong by one bit: 422, and nothing of it kept.
    let mut rest = declared[120_000..].to_vec();
    rest[1_000] ^= 1;
    assert_eq!(patch(&alice, &bad_id, 120_000, &rest).await.status, 200);
    let r = finish(&alice, &bad_id).await;
    assert_eq!((r.status, r.code()), (422, "hash_mismatch"), "{:?}", r.body);
    assert_eq!(offset_of(&alice, &bad_id).await, None, "the upload is gone");
    let left = files_under(&server.dir.path().join("blobs/uploads"));
    assert!(
        left.iter().all(|f| !f.contains(&bad_id)),
        "nothing of it: {left:?}"
    );
    let (status, _, _) = download(&alice, &sha(&declared), &[]).await;
    assert_eq!(status, 403, "nothing stored under the declared hash");
}

#[tokio::test]
async fn a_file_the_server_holds_uploads_no_bytes() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.as_user("alice"), server.as_user("bob"));
    let data = png(20_000);
    let blob = upload(&alice, &data, 20_000).await;
    let (status, _, _) = download(&bob, &blob, &[]).await;
    assert_eq!(status, 403, "bob has not shown he holds it yet");

    let r = create(&bob, &data, "image/png").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!({"blob": blob, "size": 20_000, "complete": true})
    );
    let (status, _, bytes) = download(&bob, &blob, &[]).await;
    assert_eq!((status, bytes == data), (200, true));
    // The same hash with another size is not the same file.
    let r = Resp::read(
        bob.builder(Method::POST, "/v1/uploads")
            .json(&json!({"size": 19_999, "sha256": blob, "mime": "image/png"}))
            .send()
            .await
            .expect("create"),
    )
    .await;
    assert_eq!((r.status, r.code()), (422, "hash_mismatch"));
    assert_eq!(
        server
            .metric("roam_blob_uploads_deduplicated_total", None)
            .await,
        1.0
    );
    assert_eq!(
        server.metric("roam_blob_upload_bytes_total", None).await,
        20_000.0
    );
}

#[tokio::test]
async fn uploads_are_their_owners_alone_and_blobs_need_access() {
    let server = TestServer::start().await;
    let (alice, bob) = (server.as_user("alice"), server.as_user("bob"));
    let data = png(3_000);
    let id = start(&alice, &data).await;
    assert_eq!(offset_of(&bob, &id).await, None);
    let r = patch(&bob, &id, 0, &data).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    assert_eq!(finish(&bob, &id).await.status, 404);
    let r = bob
        .builder(Method::DELETE, &format!("/v1/uploads/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 404);
    assert_eq!(offset_of(&alice, &id).await, Some(0), "bob changed nothing");
    assert_eq!(
        offset_of(&alice, "0123456789abcdef0123456789abcdef").await,
        None
    );

    assert_eq!(patch(&alice, &id, 0, &data).await.status, 200);
    let blob = sha(&data);
    assert_eq!(finish(&alice, &id).await.status, 200);
    let (status, _, body) = download(&bob, &blob, &[]).await;
    assert_eq!(status, 403);
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["error"]["code"], "forbidden");
    // A blob nobody holds answers the same as one held by others.
    let (status, _, _) = download(&bob, &sha(b"nothing"), &[]).await;
    assert_eq!(status, 403);
    let (status, _, _) = download(&alice, "not-a-hash", &[]).await;
    assert_eq!(status, 400);
    let anon = server.anon();
    let (status, _, _) = download(&anon, &blob, &[]).await;
    assert_eq!(status, 401);
    assert_eq!(create(&anon, &data, "image/png").await.status, 401);

    // An upload can be abandoned by its owner.
    let id = start(&alice, &png(10)).await;
    let r = alice
        .builder(Method::DELETE, &format!("/v1/uploads/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    assert_eq!(offset_of(&alice, &id).await, None);
}

#[tokio::test]
async fn html_is_served_as_an_octet_stream_attachment() {
    let server = TestServer::start().await;
    let alice = server.as_user("alice");
    let page = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>";
    let id = {
        let r = create(&alice, page, "text/html").await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body["upload"].as_str().expect("id").to_owned()
    };
    assert_eq!(patch(&alice, &id, 0, page).await.status, 200);
    assert_eq!(finish(&alice, &id).await.status, 200);
    let (status, h, bytes) = download(&alice, &sha(page), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, page);
    assert_eq!(header(&h, "content-type"), "application/octet-stream");
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    assert!(header(&h, "content-disposition").starts_with("attachment"));
    assert!(header(&h, "content-security-policy").contains("sandbox"));
}

#[tokio::test]
async fn an_empty_file_is_a_blob_too() {
    let server = TestServer::start().await;
    let alice = server.as_user("alice");
    let id = start(&alice, b"").await;
    let r = finish(&alice, &id).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (status, h, bytes) = download(&alice, &sha(b""), &[]).await;
    assert_eq!((status, bytes.len()), (200, 0));
    assert_eq!(header(&h, "content-length"), "0");
    let (status, _, _) = download(&alice, &sha(b""), &[("Range", "bytes=0-")]).await;
    assert_eq!(status, 416);
}

// --- S3 -----------------------------------------------------------------------------------

const S3_KEY: &str = "roam-test-key";
const S3_SECRET: &str = "roam-test-secret";

fn on_s3(c: &mut Config, moto: &OwnMoto, bucket: &str) {
    c.blob_store = BlobStoreKind::S3;
    c.s3_endpoint = Some(moto.endpoint());
    c.s3_bucket = Some(bucket.to_owned());
    c.s3_region = "us-east-1".into();
    c.s3_access_key_id = Some(S3_KEY.into());
    c.s3_secret_access_key = Some(Secret::new(S3_SECRET));
}

/// The bucket as the server sees it, to look inside.
fn bucket(moto: &OwnMoto, name: &str) -> S3BlobStore {
    S3BlobStore::new(&S3Settings {
        endpoint: Some(moto.endpoint()),
        bucket: name.to_owned(),
        region: "us-east-1".into(),
        access_key_id: S3_KEY.into(),
        secret_access_key: S3_SECRET.into(),
    })
    .expect("s3 client")
}

#[tokio::test]
async fn s3_uploads_resume_check_their_hash_and_serve_ranges() {
    let Some(moto) =
        OwnMoto::start_or_skip("s3_uploads_resume_check_their_hash_and_serve_ranges").await
    else {
        return;
    };
    moto.create_bucket("roam-one").await;
    let server = TestServer::start_with(|c| on_s3(c, &moto, "roam-one")).await;
    let alice = server.as_user("alice");
    let data = png(300_000);
    let blob = upload(&alice, &data, 128 * 1024).await;
    let (status, h, bytes) = download(&alice, &blob, &[]).await;
    assert_eq!((status, bytes == data), (200, true));
    assert_eq!(header(&h, "content-type"), "image/png");
    let (status, _, bytes) = download(&alice, &blob, &[("Range", "bytes=-1000")]).await;
    assert_eq!((status, bytes.as_slice()), (206, &data[299_000..]));

    // A mismatch leaves nothing in the bucket.
    let id = start(&alice, &png(1_000)).await;
    assert_eq!(patch(&alice, &id, 0, &png(999)).await.status, 200);
    assert_eq!(patch(&alice, &id, 999, b"?").await.status, 200);
    let r = finish(&alice, &id).await;
    assert_eq!((r.status, r.code()), (422, "hash_mismatch"));
    let store = bucket(&moto, "roam-one");
    let mut keys: Vec<String> = store
        .list("blobs")
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key)
        .collect();
    keys.extend(
        store
            .list(&format!("uploads/{id}"))
            .await
            .expect("list")
            .into_iter()
            .map(|m| m.key),
    );
    assert_eq!(keys, vec![format!("blobs/{blob}")]);

    // Expired uploads go (a sweep as the server's task runs it).
    let id = start(&alice, &png(10)).await;
    let later = std::time::SystemTime::now() + Duration::from_secs(48 * 3600);
    let blobs = server.server().blobs();
    assert_eq!(
        blobs.uploads.sweep(later, blobs.expiry).await,
        Ok(2),
        "this one and the finished one"
    );
    assert_eq!(offset_of(&alice, &id).await, None);
}

#[tokio::test]
async fn two_nodes_share_uploads_and_blobs_through_s3() {
    let Some(moto) = OwnMoto::start_or_skip("two_nodes_share_uploads_and_blobs_through_s3").await
    else {
        return;
    };
    moto.create_bucket("roam-shared").await;
    let a = TestServer::start_with(|c| on_s3(c, &moto, "roam-shared")).await;
    let b = TestServer::start_with(|c| on_s3(c, &moto, "roam-shared")).await;
    let (on_a, on_b) = (a.as_user("alice"), b.as_user("alice"));
    // Over 8 MiB, so that joining it is a multipart upload.
    let data = png(9 * 1024 * 1024 + 12_345);

    let id = start(&on_a, &data).await;
    assert_eq!(patch(&on_a, &id, 0, &data[..5_000_000]).await.status, 200);
    assert_eq!(
        offset_of(&on_b, &id).await,
        Some(5_000_000),
        "node b sees node a's bytes"
    );
    let r = patch(&on_b, &id, 4_000_000, &data[4_000_000..]).await;
    assert_eq!(
        (r.status, r.header("upload-offset")),
        (409, Some("5000000"))
    );
    let r = patch(&on_b, &id, 5_000_000, &data[5_000_000..]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(offset_of(&on_a, &id).await, Some(data.len() as u64));
    let r = finish(&on_b, &id).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Finishing again on the other node answers the same.
    assert_eq!(finish(&on_a, &id).await.body, r.body);

    let blob = sha(&data);
    for api in [&on_a, &on_b] {
        let (status, _, bytes) = download(api, &blob, &[]).await;
        assert_eq!(status, 200);
        assert!(bytes == data, "the blob as uploaded");
        let (status, _, bytes) = download(api, &blob, &[("Range", "bytes=8388600-8388615")]).await;
        assert_eq!(
            (status, bytes.as_slice()),
            (206, &data[8_388_600..8_388_616])
        );
    }
    // Bob is refused on both; a second upload of the same bytes on node b needs none.
    let bob_b = b.as_user("bob");
    assert_eq!(download(&a.as_user("bob"), &blob, &[]).await.0, 403);
    let r = create(&bob_b, &data, "image/png").await;
    assert_eq!((r.status, r.body["complete"].clone()), (200, json!(true)));
    assert_eq!(download(&a.as_user("bob"), &blob, &[]).await.0, 200);
}

/// Each user's upload bytes per second are bounded: a request over the rate is answered
/// `rate_limited` with the wait before its body is stored, and another user is not slowed.
#[tokio::test]
async fn uploads_are_paced_per_user() {
    let t = TestServer::start_with(|c| {
        c.rate_upload_mb_per_sec = 1;
        c.max_upload_chunk_mb = 1;
    })
    .await;
    let alice = t.as_user("alice");
    let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 253) as u8).collect();
    let id = start(&alice, &data).await;
    let mib = 1usize << 20;
    let r = patch(&alice, &id, 0, &data[..mib]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = patch(&alice, &id, mib as u64, &data[mib..2 * mib]).await;
    assert_eq!(r.status, 429, "{:?}", r.body);
    assert_eq!(r.code(), "rate_limited");
    let wait = r.body["error"]["retry_after_ms"]
        .as_u64()
        .expect("retry_after_ms");
    assert!((1..=1000).contains(&wait), "{wait}");
    // Nothing of the refused request was stored.
    assert_eq!(offset_of(&alice, &id).await, Some(mib as u64));
    // bob has a bucket of his own.
    let bob = t.as_user("bob");
    let small = png(2_000);
    upload(&bob, &small, 2_000).await;
    // After the wait, alice goes on where she was.
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    let r = patch(&alice, &id, mib as u64, &data[mib..2 * mib]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        t.metric("roam_blob_uploads_rate_limited_total", None).await,
        1.0
    );
}

/// Each user's blobs and unfinished uploads count against `--blob-quota-mb-per-user`: an
/// upload that would pass it is refused at creation (413 `quota_exceeded`, with the usage and
/// the limit) with nothing stored; aborting, and retention deleting an unused blob, free it.
#[tokio::test]
async fn uploads_are_held_within_each_users_quota() {
    let t = TestServer::start_with(|c| c.blob_quota_mb_per_user = 1).await;
    let (alice, bob) = (t.as_user("alice"), t.as_user("bob"));
    let kib = 1024usize;
    let a = png(600 * kib);
    upload(&alice, &a, 300 * kib).await;

    // 600 KiB held + 500 KiB more would pass 1 MiB.
    let uploads_dir = t.dir.path().join("blobs").join("uploads");
    let stored = files_under(&uploads_dir);
    let b = png(500 * kib);
    let r = create(&alice, &b, "image/png").await;
    assert_eq!(
        (r.status, r.code()),
        (413, "quota_exceeded"),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["error"]["used"], json!(600 * kib));
    assert_eq!(r.body["error"]["limit"], json!(1 << 20));
    assert_eq!(files_under(&uploads_dir), stored, "nothing stored");

    // An unfinished upload counts with its declared size.
    let c = png(400 * kib);
    let c_id = start(&alice, &c).await;
    let d = png(100 * kib);
    assert_eq!(
        create(&alice, &d, "image/png").await.code(),
        "quota_exceeded"
    );
    // Aborting it frees its share.
    let r = alice
        .builder(Method::DELETE, &format!("/v1/uploads/{c_id}"))
        .send()
        .await
        .expect("abort");
    assert_eq!(r.status(), 204);
    let d_id = start(&alice, &d).await;

    // Bob has a quota of his own, up to the last byte; a blob he proves to hold counts too.
    let full = png(1 << 20);
    upload(&bob, &full, 1 << 20).await;
    let r = create(&bob, &a, "image/png").await;
    assert_eq!(
        (r.status, r.code()),
        (413, "quota_exceeded"),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["error"]["used"], json!(1 << 20));
    // …but a blob he already uploaded is not counted twice.
    let r = create(&bob, &full, "image/png").await;
    assert_eq!((r.status, r.body["complete"].clone()), (200, json!(true)));

    // Retention deletes alice's unused blob: its bytes are hers again (the unfinished upload
    // of 100 KiB still counts).
    let state = t.server().state().clone();
    let later = crate::fixtures::now_ms() + 2 * 86_400_000;
    let purged = roam_server::retention::run_once(&state, later)
        .await
        .expect("pass");
    assert!(purged.blobs >= 1, "{purged:?}");
    let store = &state.service.store;
    assert_eq!(
        store.blob_bytes_used("alice").await.expect("used"),
        100 * kib as u64
    );
    let e = png(924 * kib);
    start(&alice, &e).await;
    assert_eq!(
        create(&alice, &png(1), "image/png").await.code(),
        "quota_exceeded"
    );
    // Finishing an upload moves its charge to the blob: the usage stays.
    let r = patch(&alice, &d_id, 0, &d).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(finish(&alice, &d_id).await.status, 200);
    assert_eq!(store.blob_bytes_used("alice").await.expect("used"), 1 << 20);
    assert_eq!(t.metric("roam_blob_quota_refusals_total", None).await, 4.0);
}

/// A quota of 0 is no limit.
#[tokio::test]
async fn a_quota_of_zero_is_unlimited() {
    let t = TestServer::start_with(|c| {
        c.blob_quota_mb_per_user = 0;
        c.max_upload_mb = 2;
    })
    .await;
    let alice = t.as_user("alice");
    for i in 0..3u8 {
        let mut data = png(2 << 20);
        data[100] = i;
        start(&alice, &data).await;
    }
}
