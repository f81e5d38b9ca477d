//! The REST side of the protocol (`/v1/…`), for the few reads the socket does not cover (and
//! for reloading a room the server reset: its record, members, documents and newest messages).
//!
//! The core uses REST to reload a room's newest messages after a `reset`, to page older history,
//! and for directory-style reads the app asks for explicitly (the room list, a room's members,
//! presence of a set of users). Results are written into the store, and reads are then served
//! from the store like everything else.
//!
//! Every `GET` is conditional: the `ETag` of the last answer for that path is kept in the store
//! (`http_etags`), sent as `If-None-Match`, and a `304 Not Modified` means the stored copy is
//! current — it counts as a cache hit in the metrics, a full answer as a miss. A `401` asks the
//! [`TokenProvider`] for a fresh token once and repeats the request. Error bodies are decoded into
//! the protocol's error codes.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, ETAG, IF_NONE_MATCH};
use reqwest::{StatusCode, Url};
use roam_proto::{ErrorResponse, Member, Message as WireMessage, Page, Presence, ReadMarker, Room};
use serde::de::DeserializeOwned;

use crate::auth::TokenProvider;
use crate::error::{Error, Result};
use crate::model::DocumentVersion;

/// Parses and checks the server's base URL (`http` or `https`, with a host).
pub(crate) fn base_url(s: &str) -> Result<Url> {
    let url = Url::parse(s).map_err(|e| Error::invalid(format!("server_url {s:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::invalid(format!(
            "server_url must start with http:// or https://, not {}://",
            url.scheme()
        )));
    }
    if url.host_str().is_none() {
        return Err(Error::invalid("server_url has no host"));
    }
    Ok(url)
}

/// `ws(s)://host/…/v1/ws` for a base URL.
pub(crate) fn ws_url(base: &Url) -> Result<Url> {
    let mut url = base.clone();
    let scheme = if base.scheme() == "https" {
        "wss"
    } else {
        "ws"
    };
    url.set_scheme(scheme)
        .map_err(|()| Error::invalid("server_url cannot be turned into a WebSocket URL"))?;
    let path = format!("{}/v1/ws", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    Ok(url)
}

/// An answer to a conditional `GET`.
#[derive(Debug)]
pub(crate) enum Fetched<T> {
    /// `304`: the stored copy is current.
    NotModified,
    /// A full answer, with its `ETag` if the server sent one.
    Fresh { value: T, etag: Option<String> },
}

/// REST client of one account.
pub(crate) struct Http {
    client: reqwest::Client,
    /// For uploads and downloads: no bound on a whole request (a large file takes as long as it
    /// takes), only on connecting and on each read.
    media: reqwest::Client,
    base: Url,
    tokens: Arc<dyn TokenProvider>,
}

/// The answer to creating an upload (`POST /v1/uploads`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Created {
    /// The server holds the blob already: nothing to send.
    Held,
    /// A new upload, to send from `offset`.
    Started { upload: String, offset: u64 },
}

/// The answer to sending bytes or finishing an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Accepted: the server holds this many bytes (`PATCH`), or the blob is stored (`finish`).
    At(u64),
    /// `409`: the server holds this many bytes, not what the request assumed.
    Conflict(u64),
    /// `404`: the upload is gone (expired, or never there).
    Gone,
}

#[derive(serde::Deserialize)]
struct CreatedBody {
    #[serde(default)]
    upload: Option<String>,
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    complete: bool,
}

#[derive(serde::Deserialize)]
struct OffsetBody {
    offset: u64,
}

/// The `Upload-Offset` header of an answer, if any.
fn upload_offset(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Bytes of a file read at a time into an upload request.
const FILE_READ: u64 = 1024 * 1024;

/// Where a failed read of an upload's file leaves its reason.
type ReadFailure = Arc<parking_lot::Mutex<Option<std::io::Error>>>;

/// An upload request's body: `len` bytes of the file at `path` from `offset`, read
/// [`FILE_READ`] at a time on the blocking pool while the read before goes out (one read
/// ahead, so the socket does not wait for the disk, and two buffers in memory at most). A read
/// that fails ends the body with an error and leaves its reason in `failed`.
fn file_body(path: &std::path::Path, offset: u64, len: u64, failed: ReadFailure) -> reqwest::Body {
    use std::io::{Read, Seek, SeekFrom};
    type Read1 = tokio::task::JoinHandle<std::io::Result<(std::fs::File, Vec<u8>)>>;
    fn read(path: std::path::PathBuf, file: Option<std::fs::File>, at: u64, n: u64) -> Read1 {
        tokio::task::spawn_blocking(move || {
            let mut f = match file {
                Some(f) => f,
                None => {
                    let mut f = std::fs::File::open(&path)?;
                    f.seek(SeekFrom::Start(at))?;
                    f
                }
            };
            let mut buf = vec![0u8; usize::try_from(n).unwrap_or(usize::MAX)];
            f.read_exact(&mut buf)?;
            Ok((f, buf))
        })
    }
    struct Reading {
        path: std::path::PathBuf,
        /// Where the next read not yet started begins, and the bytes from there.
        at: u64,
        left: u64,
        ahead: Option<Read1>,
        failed: ReadFailure,
    }
    let start = Reading {
        path: path.to_owned(),
        at: offset,
        left: len,
        ahead: None,
        failed,
    };
    let stream = futures_util::stream::unfold(start, |mut r| async move {
        let pending = match r.ahead.take() {
            Some(p) => p,
            None if r.left > 0 => {
                let n = r.left.min(FILE_READ);
                let p = read(r.path.clone(), None, r.at, n);
                (r.at, r.left) = (r.at + n, r.left - n);
                p
            }
            None => return None,
        };
        let done = match pending.await {
            Ok(done) => done,
            Err(e) => Err(std::io::Error::other(e)),
        };
        match done {
            Ok((file, buf)) => {
                if r.left > 0 {
                    let n = r.left.min(FILE_READ);
                    r.ahead = Some(read(r.path.clone(), Some(file), r.at, n));
                    (r.at, r.left) = (r.at + n, r.left - n);
                }
                Some((Ok(bytes::Bytes::from(buf)), r))
            }
            Err(e) => {
                let shown = std::io::Error::new(e.kind(), e.to_string());
                *r.failed.lock() = Some(e);
                r.left = 0;
                Some((Err(shown), r))
            }
        }
    });
    reqwest::Body::wrap_stream(stream)
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl Http {
    pub(crate) fn new(
        base: Url,
        tokens: Arc<dyn TokenProvider>,
        timeout: Duration,
    ) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Network(format!("cannot build the HTTP client: {e}")))?;
        let media = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .build()
            .map_err(|e| Error::Network(format!("cannot build the HTTP client: {e}")))?;
        Ok(Http {
            client,
            media,
            base,
            tokens,
        })
    }

    /// Sends a request built by `build` with the bearer token, asking for a fresh token and
    /// sending it again once on a `401`.
    async fn authorized(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let mut refresh = false;
        loop {
            let token = self.tokens.token(refresh).await?;
            let resp = build(&self.media)
                .header(AUTHORIZATION, format!("Bearer {token}"))
                .send()
                .await?;
            if resp.status() == StatusCode::UNAUTHORIZED && !refresh {
                refresh = true;
                continue;
            }
            return Ok(resp);
        }
    }

    /// `POST /v1/uploads`: starts an upload of a file, or learns that the server holds it.
    #[tracing::instrument(level = "debug", skip_all, fields(sha256 = sha256, size))]
    pub(crate) async fn create_upload(
        &self,
        size: u64,
        sha256: &str,
        mime: &str,
    ) -> Result<Created> {
        let url = self.url("/v1/uploads", &[])?;
        let body = serde_json::json!({ "size": size, "sha256": sha256, "mime": mime });
        let resp = self.authorized(|c| c.post(url.clone()).json(&body)).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(error_from(status, resp.text().await.unwrap_or_default()));
        }
        let b: CreatedBody = resp.json().await?;
        match (b.complete, b.upload) {
            (true, _) => Ok(Created::Held),
            (false, Some(upload)) => Ok(Created::Started {
                upload,
                offset: b.offset,
            }),
            (false, None) => Err(Error::Network(
                "the server answered an upload without its id".into(),
            )),
        }
    }

    /// `HEAD /v1/uploads/{id}`: the bytes the server holds of an upload.
    pub(crate) async fn upload_status(&self, upload: &str) -> Result<Sent> {
        let url = self.url(&format!("/v1/uploads/{upload}"), &[])?;
        let resp = self.authorized(|c| c.head(url.clone())).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(Sent::Gone);
        }
        if !status.is_success() {
            return Err(error_from(status, String::new()));
        }
        upload_offset(&resp)
            .map(Sent::At)
            .ok_or_else(|| Error::Network("HEAD of an upload without Upload-Offset".into()))
    }

    /// `PATCH /v1/uploads/{id}`: sends the `len` bytes of the file at `path` from `offset`,
    /// read as they go out (a read failure is [`Error::File`]).
    pub(crate) async fn send_file_bytes(
        &self,
        upload: &str,
        path: &std::path::Path,
        offset: u64,
        len: u64,
    ) -> Result<Sent> {
        let url = self.url(&format!("/v1/uploads/{upload}"), &[])?;
        let failed = Arc::new(parking_lot::Mutex::new(None));
        let resp = self
            .authorized(|c| {
                c.patch(url.clone())
                    .header("upload-offset", offset)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/offset+octet-stream",
                    )
                    .header(reqwest::header::CONTENT_LENGTH, len)
                    .body(file_body(path, offset, len, Arc::clone(&failed)))
            })
            .await;
        if let Some(e) = failed.lock().take() {
            return Err(Error::file(path, e));
        }
        self.sent(resp?).await
    }

    /// `POST /v1/uploads/{id}/finish`: the server checks the hash and stores the blob.
    pub(crate) async fn finish_upload(&self, upload: &str) -> Result<Sent> {
        let url = self.url(&format!("/v1/uploads/{upload}/finish"), &[])?;
        let resp = self.authorized(|c| c.post(url.clone())).await?;
        match resp.status() {
            s if s.is_success() => Ok(Sent::At(0)),
            _ => self.sent(resp).await,
        }
    }

    /// `DELETE /v1/uploads/{id}` (an abandoned upload; failures are only logged).
    pub(crate) async fn abort_upload(&self, upload: &str) {
        let Ok(url) = self.url(&format!("/v1/uploads/{upload}"), &[]) else {
            return;
        };
        if let Err(err) = self.authorized(|c| c.delete(url.clone())).await {
            tracing::debug!(error = %err, "cannot delete an abandoned upload");
        }
    }

    async fn sent(&self, resp: reqwest::Response) -> Result<Sent> {
        let status = resp.status();
        let header = upload_offset(&resp);
        if status == StatusCode::NOT_FOUND {
            return Ok(Sent::Gone);
        }
        if status == StatusCode::CONFLICT {
            if let Some(at) = header {
                return Ok(Sent::Conflict(at));
            }
        }
        if !status.is_success() {
            return Err(error_from(status, resp.text().await.unwrap_or_default()));
        }
        match header {
            Some(at) => Ok(Sent::At(at)),
            None => Ok(Sent::At(resp.json::<OffsetBody>().await?.offset)),
        }
    }

    /// `GET /v1/blobs/{sha256}` from byte `from` (a `Range` when not 0): the answer as it
    /// comes (`200`, `206` or `416`; other statuses are errors), to be read in chunks.
    pub(crate) async fn download(&self, sha256: &str, from: u64) -> Result<reqwest::Response> {
        let url = self.url(&format!("/v1/blobs/{sha256}"), &[])?;
        let resp = self
            .authorized(|c| {
                let req = c.get(url.clone());
                if from > 0 {
                    req.header(reqwest::header::RANGE, format!("bytes={from}-"))
                        .header(reqwest::header::IF_RANGE, format!("\"{sha256}\""))
                } else {
                    req
                }
            })
            .await?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::RANGE_NOT_SATISFIABLE {
            return Ok(resp);
        }
        Err(error_from(status, resp.text().await.unwrap_or_default()))
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<Url> {
        let full = format!("{}{}", self.base.path().trim_end_matches('/'), path);
        let mut url = self.base.clone();
        url.set_path(&full);
        url.set_query(None);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    /// A conditional `GET` of `path` (under the base URL) decoded as `T`.
    #[tracing::instrument(skip_all, fields(path = path))]
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        etag: Option<&str>,
    ) -> Result<Fetched<T>> {
        let url = self.url(path, query)?;
        let mut refresh = false;
        loop {
            let token = self.tokens.token(refresh).await?;
            let mut req = self
                .client
                .get(url.clone())
                .header(AUTHORIZATION, format!("Bearer {token}"));
            if let Some(tag) = etag {
                req = req.header(IF_NONE_MATCH, tag);
            }
            let resp = req.send().await?;
            let status = resp.status();
            if status == StatusCode::NOT_MODIFIED {
                return Ok(Fetched::NotModified);
            }
            if status == StatusCode::UNAUTHORIZED && !refresh {
                refresh = true;
                continue;
            }
            if !status.is_success() {
                return Err(error_from(status, resp.text().await.unwrap_or_default()));
            }
            let tag = resp
                .headers()
                .get(ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let value = resp.json::<T>().await?;
            return Ok(Fetched::Fresh { value, etag: tag });
        }
    }

    /// A GET without a stored ETag: the answer must be a full one (a `304` to an unconditional
    /// request is the server's error, not an empty answer).
    async fn get_fresh<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        match self.get(path, query, None).await? {
            Fetched::Fresh { value, .. } => Ok(value),
            Fetched::NotModified => Err(Error::Network(format!(
                "the server answered 'not modified' to an unconditional GET {path}"
            ))),
        }
    }

    /// The newest page of a room's messages (newest first), or the page before a seq.
    pub(crate) async fn messages(
        &self,
        room: &str,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Page<WireMessage>> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(b) = before {
            query.push(("before", b.to_string()));
        }
        self.get_fresh(&format!("/v1/rooms/{room}/messages"), &query)
            .await
    }

    /// The rooms the caller may see (first page).
    pub(crate) async fn rooms(&self, etag: Option<&str>) -> Result<Fetched<Page<Room>>> {
        let query = [("limit", roam_proto::validate::MAX_PAGE_SIZE.to_string())];
        self.get("/v1/rooms", &query, etag).await
    }

    /// A page of the rooms the account is an active member of, by name after `cursor`.
    pub(crate) async fn joined_rooms(&self, cursor: Option<&str>) -> Result<Page<Room>> {
        let mut query = vec![
            ("joined", "true".to_owned()),
            ("limit", roam_proto::validate::MAX_PAGE_SIZE.to_string()),
        ];
        if let Some(c) = cursor {
            query.push(("cursor", c.to_owned()));
        }
        self.get_fresh("/v1/rooms", &query).await
    }

    /// A room's members (first page).
    pub(crate) async fn members(
        &self,
        room: &str,
        etag: Option<&str>,
    ) -> Result<Fetched<Page<Member>>> {
        let query = [("limit", roam_proto::validate::MAX_PAGE_SIZE.to_string())];
        self.get(&format!("/v1/rooms/{room}/members"), &query, etag)
            .await
    }

    /// One room's record.
    pub(crate) async fn room(&self, room: &str) -> Result<Room> {
        self.get_fresh(&format!("/v1/rooms/{room}"), &[]).await
    }

    /// Every item of a paged list at `path` (`limit` and `cursor` query), page after page.
    async fn all_pages<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", roam_proto::validate::MAX_PAGE_SIZE.to_string())];
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let page: Page<T> = self.get_fresh(path, &query).await?;
            out.extend(page.items);
            match page.next_cursor {
                Some(next) if cursor.as_ref() != Some(&next) => cursor = Some(next),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Every member of a room.
    pub(crate) async fn all_members(&self, room: &str) -> Result<Vec<Member>> {
        self.all_pages(&format!("/v1/rooms/{room}/members")).await
    }

    /// Every document of a room, as the server holds it.
    pub(crate) async fn all_documents(&self, room: &str) -> Result<Vec<DocumentVersion>> {
        self.all_pages(&format!("/v1/rooms/{room}/documents")).await
    }

    /// The account's read markers (one page holds them all).
    pub(crate) async fn read_markers(&self) -> Result<Page<ReadMarker>> {
        self.get_fresh("/v1/read-markers", &[]).await
    }

    /// Presence of up to 500 users.
    pub(crate) async fn presence(
        &self,
        users: &[String],
        etag: Option<&str>,
    ) -> Result<Fetched<Vec<Presence>>> {
        let query = [("users", users.join(","))];
        self.get("/v1/presence", &query, etag).await
    }
}

fn error_from(status: StatusCode, body: String) -> Error {
    match serde_json::from_str::<ErrorResponse>(&body) {
        Ok(e) => Error::from(e.error),
        Err(_) if status == StatusCode::UNAUTHORIZED => {
            Error::Unauthorized(format!("HTTP {status}"))
        }
        Err(_) if status.is_server_error() => Error::Network(format!("HTTP {status}")),
        Err(_) => Error::Network(format!("unexpected HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_urls() {
        let b = base_url("http://127.0.0.1:8080").expect("url");
        assert_eq!(
            ws_url(&b).expect("ws").as_str(),
            "ws://127.0.0.1:8080/v1/ws"
        );
        let b = base_url("https://chat.example.com/roam/").expect("url");
        assert_eq!(
            ws_url(&b).expect("ws").as_str(),
            "wss://chat.example.com/roam/v1/ws"
        );
        assert!(base_url("ws://x").is_err());
        assert!(base_url("not a url").is_err());
    }

    #[test]
    fn error_bodies_become_codes() {
        let e = error_from(
            StatusCode::FORBIDDEN,
            r#"{"error":{"code":"forbidden","message":"no"}}"#.into(),
        );
        assert!(matches!(
            e,
            Error::Server {
                code: roam_proto::ErrorCode::Forbidden,
                ..
            }
        ));
        assert!(error_from(StatusCode::BAD_GATEWAY, "oops".into()).is_transient());
    }
}
