//! Fake push gateways on loopback that answer as the real ones do, for the server's push tests
//! and the end-to-end tests: APNs (HTTP/2 by prior knowledge, token auth checked against the
//! test key), FCM HTTP v1 with its OAuth2 token endpoint (the service account's assertion
//! checked against the test key), and a webhook receiver that checks the signature. Each
//! records what it accepted and can be told to fail the way the real service fails.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The test-only APNs key (`.p8`), its key id and team id.
pub fn apns_key_path() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/keys/apns-test.p8"))
}
pub const APNS_KEY_ID: &str = "TESTKEY123";
pub const APNS_TEAM_ID: &str = "TESTTEAM42";
/// The APNs topic (bundle id) the tests register with.
pub const APNS_TOPIC: &str = "com.example.roam";
const APNS_PUB: &str = include_str!("../keys/apns-test.pub.pem");
const FCM_KEY: &str = include_str!("../keys/fcm-test.key.pem");
const FCM_PUB: &str = include_str!("../keys/fcm-test.pub.pem");
pub const FCM_PROJECT: &str = "roam-test";
pub const FCM_CLIENT_EMAIL: &str = "push@roam-test.iam.gserviceaccount.com";

/// One request a fake accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The device token it was for.
    pub token: String,
    /// Request headers, names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `roam` object it carried, whatever the gateway.
    pub fn roam(&self) -> Value {
        if let Some(s) = self.body["message"]["data"]["roam"].as_str() {
            return serde_json::from_str(s).unwrap_or(Value::Null);
        }
        self.body["roam"].clone()
    }
}

/// A failure to answer with, once, to the next request that is not for a gone token.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: u16,
    pub retry_after: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    received: Vec<Received>,
    /// Tokens the service no longer knows.
    gone: HashSet<String>,
    failures: VecDeque<Failure>,
    /// Requests refused for their credentials.
    refused_auth: u64,
    /// Access tokens handed out (FCM).
    issued: HashSet<String>,
    /// Failed requests answered (of `failures`), with when.
    failed_at: Vec<Instant>,
}

/// What every fake shares: its address, its state, its task.
#[derive(Debug)]
pub struct Fake {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What it accepted so far.
    pub fn received(&self) -> Vec<Received> {
        self.st().received.clone()
    }

    /// Accepted pushes for `token`.
    pub fn received_for(&self, token: &str) -> Vec<Received> {
        self.st()
            .received
            .iter()
            .filter(|r| r.token == token)
            .cloned()
            .collect()
    }

    /// From now on the service answers `token` as unknown (APNs 410 `Unregistered`, FCM 404
    /// `UNREGISTERED`, webhook 410).
    pub fn forget(&self, token: &str) {
        self.st().gone.insert(token.to_owned());
    }

    /// The next requests fail with these, one each.
    pub fn fail_next(&self, failures: impl IntoIterator<Item = Failure>) {
        self.st().failures.extend(failures);
    }

    /// When each scripted failure was answered.
    pub fn failed_at(&self) -> Vec<Instant> {
        self.st().failed_at.clone()
    }

    /// Requests refused for bad credentials.
    pub fn refused_auth(&self) -> u64 {
        self.st().refused_auth
    }

    /// Waits (at most `within`) until `n` requests were accepted; the count then.
    pub async fn wait_received(&self, n: usize, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.st().received.len();
            if got >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn respond(status: u16, body: Value, retry_after: Option<u64>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Some(s) = retry_after {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&s.to_string()) {
            r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
        }
    }
    r
}

fn headers(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn body(req: Request<Incoming>) -> Bytes {
    req.into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default()
}

fn der(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = d.split_first()?;
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        let len = rest
            .get(..n)?
            .iter()
            .fold(0usize, |a, b| (a << 8) | usize::from(*b));
        (len, rest.get(n..)?)
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("test key PEM")
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The test EC public key as JWT components.
fn apns_decoding_key() -> DecodingKey {
    let spki = pem_der(APNS_PUB);
    // SubjectPublicKeyInfo ends with the uncompressed point 04 || x || y.
    let point = &spki[spki.len() - 65..];
    DecodingKey::from_ec_components(&b64url(&point[1..33]), &b64url(&point[33..]))
        .expect("test EC key")
}

/// The test RSA public key as JWT components.
fn fcm_decoding_key() -> DecodingKey {
    let spki = pem_der(FCM_PUB);
    let (_, info, _) = der(&spki).expect("spki");
    let (_, _alg, rest) = der(info).expect("algorithm");
    let (_, bits, _) = der(rest).expect("bit string");
    let (_, rsa, _) = der(&bits[1..]).expect("RSAPublicKey");
    let (_, n, rest) = der(rsa).expect("n");
    let (_, e, _) = der(rest).expect("e");
    let n = n.strip_prefix(&[0]).unwrap_or(n);
    DecodingKey::from_rsa_components(&b64url(n), &b64url(e)).expect("test RSA key")
}

async fn serve<F, Fut>(listener: TcpListener, http2: bool, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let h = handler.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let h = h.clone();
                async move { Ok::<_, Infallible>(h(req).await) }
            });
            let io = TokioIo::new(stream);
            let _ = if http2 {
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, svc)
                    .await
            } else {
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await
            };
        });
    }
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a fake gateway")
}

/// A scripted failure, if one is queued (not for gone tokens).
fn next_failure(state: &Mutex<State>) -> Option<Failure> {
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    let f = st.failures.pop_front()?;
    st.failed_at.push(Instant::now());
    Some(f)
}

/// Fake APNs: `POST /3/device/{token}` over HTTP/2 (h2c), provider token checked (ES256, key
/// id, team id), answered 200, or 410 `Unregistered` for a forgotten token, 403
/// `InvalidProviderToken` for a bad provider token, 400 for a missing topic or push type, and
/// scripted failures (429 `TooManyRequests`, 500 `InternalServerError`, 503
/// `ServiceUnavailable`) with their `Retry-After`.
pub async fn fake_apns() -> Fake {
    let listener = bind().await;
    let addr = listener.local_addr().expect("address");
    let state = Arc::new(Mutex::new(State::default()));
    let st = Arc::clone(&state);
    let key = Arc::new(apns_decoding_key());
    let task = tokio::spawn(serve(listener, true, move |req: Request<Incoming>| {
        let st = Arc::clone(&st);
        let key = Arc::clone(&key);
        async move {
            let path = req.uri().path().to_owned();
            let Some(token) = path.strip_prefix("/3/device/").map(str::to_owned) else {
                return respond(404, json!({"reason": "BadPath"}), None);
            };
            if req.version() != hyper::Version::HTTP_2 {
                return respond(400, json!({"reason": "BadRequest"}), None);
            }
            let hs = headers(&req);
            let get = |n: &str| hs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            let auth_ok = get("authorization")
                .and_then(|a| {
                    // The auth scheme is case-insensitive (Apple writes `bearer`).
                    let (scheme, jwt) = a.split_once(' ')?;
                    scheme
                        .eq_ignore_ascii_case("bearer")
                        .then(|| jwt.to_owned())
                })
                .and_then(|jwt| {
                    let mut v = Validation::new(Algorithm::ES256);
                    v.required_spec_claims = HashSet::new();
                    v.validate_exp = false;
                    let data = jsonwebtoken::decode::<Value>(&jwt, &key, &v).ok()?;
                    let ok = data.header.kid.as_deref() == Some(APNS_KEY_ID)
                        && data.claims["iss"] == APNS_TEAM_ID
                        && data.claims["iat"].is_u64();
                    ok.then_some(())
                })
                .is_some();
            if !auth_ok {
                st.lock().unwrap_or_else(|p| p.into_inner()).refused_auth += 1;
                return respond(403, json!({"reason": "InvalidProviderToken"}), None);
            }
            if get("apns-topic").is_none() {
                return respond(400, json!({"reason": "MissingTopic"}), None);
            }
            if !matches!(
                get("apns-push-type").as_deref(),
                Some("alert" | "background")
            ) {
                return respond(400, json!({"reason": "InvalidPushType"}), None);
            }
            let raw = body(req).await;
            if raw.len() > 4096 {
                return respond(413, json!({"reason": "PayloadTooLarge"}), None);
            }
            let gone = st
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .gone
                .contains(&token);
            if gone {
                return respond(
                    410,
                    json!({"reason": "Unregistered", "timestamp": 1_700_000_000_000u64}),
                    None,
                );
            }
            if let Some(f) = next_failure(&st) {
                let reason = match f.status {
                    429 => "TooManyRequests",
                    503 => "ServiceUnavailable",
                    _ => "InternalServerError",
                };
                return respond(f.status, json!({"reason": reason}), f.retry_after);
            }
            let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
                return respond(400, json!({"reason": "PayloadEmpty"}), None);
            };
            st.lock()
                .unwrap_or_else(|p| p.into_inner())
                .received
                .push(Received {
                    token,
                    headers: hs,
                    body,
                    at: Instant::now(),
                });
            let mut ok = respond(200, Value::Null, None);
            *ok.body_mut() = Full::new(Bytes::new());
            ok
        }
    }));
    Fake { addr, state, task }
}

/// The service account JSON key of the fake FCM (its `token_uri` is the fake's).
pub fn fcm_credentials(fake: &Fake) -> String {
    json!({
        "type": "service_account",
        "project_id": FCM_PROJECT,
        "private_key_id": "test-key-1",
        "private_key": FCM_KEY,
        "client_email": FCM_CLIENT_EMAIL,
        "token_uri": format!("{}/token", fake.url()),
    })
    .to_string()
}

fn fcm_error(
    status: u16,
    name: &str,
    code: Option<&str>,
    retry_after: Option<u64>,
) -> Response<Full<Bytes>> {
    let mut details = Vec::new();
    if let Some(c) = code {
        details.push(json!({
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": c,
        }));
    }
    respond(
        status,
        json!({"error": {"code": status, "message": name, "status": name, "details": details}}),
        retry_after,
    )
}

/// Fake FCM: `POST /token` (OAuth2 JWT bearer grant: the RS256 assertion checked for issuer,
/// audience and scope) hands out access tokens; `POST /v1/projects/{project}/messages:send`
/// needs one, and answers 200 `{"name"}`, or 404 `NOT_FOUND`/`UNREGISTERED` for a forgotten
/// token, 401 `UNAUTHENTICATED`, 400 `INVALID_ARGUMENT` for a message that is not data-only or
/// whose data is over 4 KiB, and scripted failures (429 `QUOTA_EXCEEDED`, 500 `INTERNAL`, 503
/// `UNAVAILABLE`) with their `Retry-After`.
pub async fn fake_fcm() -> Fake {
    let listener = bind().await;
    let addr = listener.local_addr().expect("address");
    let state = Arc::new(Mutex::new(State::default()));
    let st = Arc::clone(&state);
    let key = Arc::new(fcm_decoding_key());
    let token_uri = format!("http://{addr}/token");
    let task = tokio::spawn(serve(listener, false, move |req: Request<Incoming>| {
        let st = Arc::clone(&st);
        let key = Arc::clone(&key);
        let token_uri = token_uri.clone();
        async move {
            let path = req.uri().path().to_owned();
            if path == "/token" {
                let raw = body(req).await;
                let form: Vec<(String, String)> = String::from_utf8_lossy(&raw)
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), percent_decode(v)))
                    .collect();
                let field = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
                if field("grant_type").as_deref()
                    != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
                {
                    return respond(400, json!({"error": "unsupported_grant_type"}), None);
                }
                let mut v = Validation::new(Algorithm::RS256);
                v.set_audience(&[token_uri.as_str()]);
                v.set_issuer(&[FCM_CLIENT_EMAIL]);
                let ok = field("assertion")
                    .and_then(|a| jsonwebtoken::decode::<Value>(&a, &key, &v).ok())
                    .is_some_and(|d| {
                        d.claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
                    });
                let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                if !ok {
                    s.refused_auth += 1;
                    return respond(
                        400,
                        json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
                        None,
                    );
                }
                let t = format!("ya29.fake-{}", s.issued.len() + 1);
                s.issued.insert(t.clone());
                return respond(
                    200,
                    json!({"access_token": t, "expires_in": 3599, "token_type": "Bearer"}),
                    None,
                );
            }
            if path != format!("/v1/projects/{FCM_PROJECT}/messages:send") {
                return fcm_error(404, "NOT_FOUND", None, None);
            }
            let hs = headers(&req);
            let bearer = hs
                .iter()
                .find(|(k, _)| k == "authorization")
                .and_then(|(_, v)| v.strip_prefix("Bearer ").map(str::to_owned));
            let authed = bearer.is_some_and(|b| {
                st.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .issued
                    .contains(&b)
            });
            if !authed {
                st.lock().unwrap_or_else(|p| p.into_inner()).refused_auth += 1;
                return fcm_error(401, "UNAUTHENTICATED", None, None);
            }
            let raw = body(req).await;
            let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
                return fcm_error(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"), None);
            };
            let msg = &body["message"];
            let token = msg["token"].as_str().unwrap_or_default().to_owned();
            let data_ok = msg["data"].as_object().is_some_and(|d| {
                d.values().all(Value::is_string)
                    && d.iter()
                        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                        .sum::<usize>()
                        <= 4096
            });
            if token.is_empty() || !data_ok || msg.get("notification").is_some() {
                return fcm_error(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"), None);
            }
            let gone = st
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .gone
                .contains(&token);
            if gone {
                return fcm_error(404, "NOT_FOUND", Some("UNREGISTERED"), None);
            }
            if let Some(f) = next_failure(&st) {
                let (name, code) = match f.status {
                    429 => ("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
                    503 => ("UNAVAILABLE", "UNAVAILABLE"),
                    _ => ("INTERNAL", "INTERNAL"),
                };
                return fcm_error(f.status, name, Some(code), f.retry_after);
            }
            let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
            let n = s.received.len();
            s.received.push(Received {
                token,
                headers: hs,
                body,
                at: Instant::now(),
            });
            respond(
                200,
                json!({"name": format!("projects/{FCM_PROJECT}/messages/{n}")}),
                None,
            )
        }
    }));
    Fake { addr, state, task }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Fake webhook: `POST /push` with `X-Roam-Signature: sha256=<hex HMAC-SHA256>` under `secret`
/// (a bad signature is answered 401); 410 for a forgotten token; scripted failures.
pub async fn fake_webhook(secret: &str) -> Fake {
    use hmac::{Hmac, Mac};
    let listener = bind().await;
    let addr = listener.local_addr().expect("address");
    let state = Arc::new(Mutex::new(State::default()));
    let st = Arc::clone(&state);
    let secret = secret.as_bytes().to_vec();
    let task = tokio::spawn(serve(listener, false, move |req: Request<Incoming>| {
        let st = Arc::clone(&st);
        let secret = secret.clone();
        async move {
            let hs = headers(&req);
            let raw = body(req).await;
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&secret).expect("hmac key");
            mac.update(&raw);
            let want: String = mac
                .finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let sig = hs
                .iter()
                .find(|(k, _)| k == "x-roam-signature")
                .map(|(_, v)| v.clone());
            if sig.as_deref() != Some(&format!("sha256={want}")) {
                st.lock().unwrap_or_else(|p| p.into_inner()).refused_auth += 1;
                return respond(401, json!({"error": "bad signature"}), None);
            }
            let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
            let token = body["token"].as_str().unwrap_or_default().to_owned();
            if st
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .gone
                .contains(&token)
            {
                return respond(410, json!({"error": "gone"}), None);
            }
            if let Some(f) = next_failure(&st) {
                return respond(f.status, json!({"error": "failure"}), f.retry_after);
            }
            st.lock()
                .unwrap_or_else(|p| p.into_inner())
                .received
                .push(Received {
                    token,
                    headers: hs,
                    body,
                    at: Instant::now(),
                });
            respond(200, json!({}), None)
        }
    }));
    Fake { addr, state, task }
}
