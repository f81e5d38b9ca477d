//! The gateways: APNs (HTTP/2, token auth), FCM HTTP v1 (OAuth2 service account) and a signed
//! webhook. Each answers what became of one push to one device, by the platform's own rules.

use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use roam_proto::{PushKind, PushPayload};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use super::payload;
use super::PushError;
use crate::store::push::PushTarget;

/// What became of one push to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The gateway took it.
    Sent,
    /// The token is no longer valid: its registration goes.
    Unregistered(&'static str),
    /// Try again later: after `after` when the gateway said so.
    Retry {
        after: Option<Duration>,
        reason: &'static str,
    },
    /// Retrying cannot help (a refused request).
    Failed(&'static str),
}

/// One push service.
#[async_trait]
pub trait Gateway: Send + Sync + std::fmt::Debug {
    async fn send(&self, to: &PushTarget, p: &PushPayload) -> Outcome;
}

/// `Retry-After` in seconds (an HTTP date is ignored: the queue's own backoff applies).
pub fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A client for one gateway: HTTP/2 by prior knowledge when the base URL is plain `http://`
/// (a loopback test server), ALPN over TLS otherwise.
fn client(base: &str, timeout: Duration) -> Result<reqwest::Client, PushError> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(600));
    if base.starts_with("http://") {
        b = b.http2_prior_knowledge();
    }
    b.build()
        .map_err(|e| PushError::Setup(format!("HTTP client: {e}")))
}

/// A network failure (no answer): retried.
fn network(e: &reqwest::Error) -> Outcome {
    tracing::debug!(error = %e, "push: gateway unreachable");
    Outcome::Retry {
        after: None,
        reason: "network",
    }
}

/// The DER inside a PEM block labelled `label` (`-----BEGIN <label>-----`).
pub fn pem_der(pem: &str, label: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin).ok_or_else(|| format!("no {begin} line"))? + begin.len();
    let stop = pem[start..]
        .find(&end)
        .ok_or_else(|| format!("no {end} line"))?
        + start;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the PEM body is not base64: {e}"))
}

/// One DER element at the start of `d`: its tag, its contents, and what follows it.
fn der(d: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let short = || "truncated DER".to_owned();
    let (&tag, rest) = d.split_first().ok_or_else(short)?;
    let (&len0, rest) = rest.split_first().ok_or_else(short)?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err("bad DER length".into());
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, b| (a << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(short());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (what Google's service account
/// keys hold): SEQUENCE { version, AlgorithmIdentifier, OCTET STRING { RSAPrivateKey } }.
fn pkcs8_rsa(pkcs8: &[u8]) -> Result<Vec<u8>, String> {
    const RSA_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let (tag, info, _) = der(pkcs8)?;
    if tag != 0x30 {
        return Err("not a PKCS#8 key".into());
    }
    let (_, _version, rest) = der(info)?;
    let (_, algorithm, rest) = der(rest)?;
    let (_, oid, _) = der(algorithm)?;
    if oid != RSA_OID {
        return Err("not an RSA key".into());
    }
    let (tag, key, _) = der(rest)?;
    if tag != 0x04 {
        return Err("not a PKCS#8 key".into());
    }
    Ok(key.to_vec())
}

// ----- APNs -------------------------------------------------------------------------------

/// Apple refuses provider tokens older than an hour and throttles refreshing more often than
/// every 20 minutes: a token is reused for 50 minutes.
const APNS_TOKEN_LIFE: Duration = Duration::from_secs(50 * 60);

/// APNs with token-based authentication.
pub struct Apns {
    http: reqwest::Client,
    production: String,
    sandbox: String,
    key: EncodingKey,
    key_id: String,
    team_id: String,
    token: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for Apns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apns")
            .field("production", &self.production)
            .field("sandbox", &self.sandbox)
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, serde::Serialize)]
struct ApnsClaims<'a> {
    iss: &'a str,
    iat: u64,
}

#[derive(Debug, Deserialize)]
struct ApnsError {
    #[serde(default)]
    reason: String,
}

impl Apns {
    /// Reads the `.p8` key (PKCS#8 PEM, P-256).
    pub fn new(
        key_path: &Path,
        key_id: &str,
        team_id: &str,
        production: &str,
        sandbox: &str,
    ) -> Result<Apns, PushError> {
        let pem = std::fs::read(key_path).map_err(|e| {
            PushError::Setup(format!(
                "cannot read the APNs key {}: {e}",
                key_path.display()
            ))
        })?;
        let not_p256 = |e: String| {
            PushError::Setup(format!(
                "the APNs key {} is not a P-256 key in PKCS#8 PEM: {e}",
                key_path.display()
            ))
        };
        let der = pem_der(&String::from_utf8_lossy(&pem), "PRIVATE KEY").map_err(not_p256)?;
        let key = EncodingKey::from_ec_der(&der);
        // Sign once now, so a wrong key fails at start rather than at the first push.
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &json!({}), &key)
            .map_err(|e| not_p256(e.to_string()))?;
        let production = production.trim_end_matches('/').to_owned();
        let sandbox = sandbox.trim_end_matches('/').to_owned();
        Ok(Apns {
            http: client(&production, Duration::from_secs(30))?,
            production,
            sandbox,
            key,
            key_id: key_id.to_owned(),
            team_id: team_id.to_owned(),
            token: Mutex::new(None),
        })
    }

    /// The provider token: an ES256 JWT (`kid`, `iss`, `iat`), made again after 50 minutes.
    fn bearer(&self) -> Result<String, jsonwebtoken::errors::Error> {
        let mut cached = self.token.lock();
        if let Some((t, made)) = cached.as_ref() {
            if made.elapsed() < APNS_TOKEN_LIFE {
                return Ok(t.clone());
            }
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = ApnsClaims {
            iss: &self.team_id,
            iat: unix_secs(),
        };
        let t = jsonwebtoken::encode(&header, &claims, &self.key)?;
        *cached = Some((t.clone(), Instant::now()));
        Ok(t)
    }
}

#[async_trait]
impl Gateway for Apns {
    async fn send(&self, to: &PushTarget, p: &PushPayload) -> Outcome {
        let mut p = p.clone();
        if !payload::fit(&mut p, payload::APNS_MAX_BYTES, payload::apns_bytes) {
            return Outcome::Failed("too_large");
        }
        let bearer = match self.bearer() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "push: cannot sign the APNs provider token");
                return Outcome::Failed("signing");
            }
        };
        let base = if to.sandbox {
            &self.sandbox
        } else {
            &self.production
        };
        let (push_type, priority) = match p.kind {
            PushKind::Message => ("alert", "10"),
            PushKind::Read => ("background", "5"),
        };
        let res = self
            .http
            .post(format!("{base}/3/device/{}", to.token))
            .bearer_auth(bearer)
            .header("apns-topic", &to.app_id)
            .header("apns-push-type", push_type)
            .header("apns-priority", priority)
            .header("apns-collapse-id", payload::collapse_id(&p.room))
            .json(&payload::apns(&p))
            .send()
            .await;
        let res = match res {
            Ok(r) => r,
            Err(e) => return network(&e),
        };
        let status = res.status().as_u16();
        if status == 200 {
            return Outcome::Sent;
        }
        let after = retry_after(res.headers());
        let reason = res
            .json::<ApnsError>()
            .await
            .map(|e| e.reason)
            .unwrap_or_default();
        match (status, reason.as_str()) {
            (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => {
                Outcome::Unregistered("unregistered")
            }
            (403, "ExpiredProviderToken" | "InvalidProviderToken") => {
                // Make a fresh token for the next try.
                *self.token.lock() = None;
                Outcome::Retry {
                    after: None,
                    reason: "auth",
                }
            }
            (413, _) => Outcome::Failed("too_large"),
            (429, _) => Outcome::Retry {
                after,
                reason: "rate_limited",
            },
            (s, _) if s >= 500 => Outcome::Retry {
                after,
                reason: "server_error",
            },
            (s, r) => {
                tracing::warn!(status = s, reason = r, "push: APNs refused a push");
                Outcome::Failed("bad_request")
            }
        }
    }
}

// ----- FCM --------------------------------------------------------------------------------

const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// The fields of a service account's JSON key that FCM needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    pub private_key: String,
    pub token_uri: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
}

/// FCM HTTP v1 with an OAuth2 access token from a service account.
pub struct Fcm {
    http: reqwest::Client,
    oauth: reqwest::Client,
    base: String,
    account: ServiceAccount,
    key: EncodingKey,
    token: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for Fcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fcm")
            .field("base", &self.base)
            .field("project", &self.account.project_id)
            .field("client_email", &self.account.client_email)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, serde::Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Debug, Deserialize)]
struct AccessToken {
    access_token: String,
    #[serde(default = "default_expiry")]
    expires_in: u64,
}

fn default_expiry() -> u64 {
    3600
}

#[derive(Debug, Deserialize)]
struct FcmErrorBody {
    error: FcmError,
}

#[derive(Debug, Deserialize)]
struct FcmError {
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<Value>,
}

impl FcmError {
    fn error_code(&self) -> Option<&str> {
        self.details
            .iter()
            .find_map(|d| d.get("errorCode").and_then(Value::as_str))
    }
}

impl Fcm {
    /// Reads the service account's JSON key file.
    pub fn new(credentials: &Path, base: &str) -> Result<Fcm, PushError> {
        let text = std::fs::read(credentials).map_err(|e| {
            PushError::Setup(format!(
                "cannot read the FCM credentials {}: {e}",
                credentials.display()
            ))
        })?;
        let account: ServiceAccount = serde_json::from_slice(&text).map_err(|e| {
            PushError::Setup(format!(
                "{} is not a service account key: {e}",
                credentials.display()
            ))
        })?;
        let bad_key =
            |e: String| PushError::Setup(format!("the service account's private_key: {e}"));
        let key = match pem_der(&account.private_key, "PRIVATE KEY") {
            Ok(pkcs8) => pkcs8_rsa(&pkcs8).map_err(bad_key)?,
            Err(_) => pem_der(&account.private_key, "RSA PRIVATE KEY").map_err(bad_key)?,
        };
        let key = EncodingKey::from_rsa_der(&key);
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &json!({}), &key)
            .map_err(|e| bad_key(e.to_string()))?;
        let base = base.trim_end_matches('/').to_owned();
        Ok(Fcm {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| PushError::Setup(format!("HTTP client: {e}")))?,
            oauth: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| PushError::Setup(format!("HTTP client: {e}")))?,
            base,
            account,
            key,
            token: Mutex::new(None),
        })
    }

    /// The access token, fetched with an RS256 assertion and kept until a minute before it
    /// expires.
    async fn access_token(&self) -> Result<String, Outcome> {
        if let Some((t, until)) = self.token.lock().as_ref() {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let iat = unix_secs();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.account.private_key_id.clone();
        let claims = Assertion {
            iss: &self.account.client_email,
            scope: FCM_SCOPE,
            aud: &self.account.token_uri,
            iat,
            exp: iat + 3600,
        };
        let assertion = jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| {
            tracing::error!(error = %e, "push: cannot sign the FCM assertion");
            Outcome::Failed("signing")
        })?;
        let res = self
            .oauth
            .post(&self.account.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| network(&e))?;
        let status = res.status().as_u16();
        if status != 200 {
            let after = retry_after(res.headers());
            let body = res.text().await.unwrap_or_default();
            tracing::warn!(status, body = %body, "push: FCM OAuth token refused");
            return Err(if status == 429 || status >= 500 {
                Outcome::Retry {
                    after,
                    reason: "auth",
                }
            } else {
                Outcome::Failed("auth")
            });
        }
        let t: AccessToken = res.json().await.map_err(|e| {
            tracing::warn!(error = %e, "push: FCM OAuth answer unreadable");
            Outcome::Retry {
                after: None,
                reason: "auth",
            }
        })?;
        let life = Duration::from_secs(t.expires_in.saturating_sub(60).max(1));
        *self.token.lock() = Some((t.access_token.clone(), Instant::now() + life));
        Ok(t.access_token)
    }
}

#[async_trait]
impl Gateway for Fcm {
    async fn send(&self, to: &PushTarget, p: &PushPayload) -> Outcome {
        let mut p = p.clone();
        if !payload::fit(&mut p, payload::FCM_MAX_DATA_BYTES, payload::fcm_data_bytes) {
            return Outcome::Failed("too_large");
        }
        let token = match self.access_token().await {
            Ok(t) => t,
            Err(outcome) => return outcome,
        };
        let res = self
            .http
            .post(format!(
                "{}/v1/projects/{}/messages:send",
                self.base, self.account.project_id
            ))
            .bearer_auth(token)
            .json(&payload::fcm(&to.token, &p))
            .send()
            .await;
        let res = match res {
            Ok(r) => r,
            Err(e) => return network(&e),
        };
        let status = res.status().as_u16();
        if status == 200 {
            return Outcome::Sent;
        }
        let after = retry_after(res.headers());
        let err = res.json::<FcmErrorBody>().await.ok().map(|b| b.error);
        let code = err.as_ref().and_then(FcmError::error_code).unwrap_or("");
        let st = err.as_ref().map_or("", |e| e.status.as_str());
        match (status, code) {
            (404, _) | (_, "UNREGISTERED") | (403, "SENDER_ID_MISMATCH") => {
                Outcome::Unregistered("unregistered")
            }
            (401, _) => {
                *self.token.lock() = None;
                Outcome::Retry {
                    after: None,
                    reason: "auth",
                }
            }
            (429, _) => Outcome::Retry {
                after,
                reason: "rate_limited",
            },
            (s, _) if s >= 500 => Outcome::Retry {
                after,
                reason: "server_error",
            },
            (s, c) => {
                tracing::warn!(
                    status = s,
                    code = c,
                    fcm_status = st,
                    "push: FCM refused a push"
                );
                Outcome::Failed("bad_request")
            }
        }
    }
}

// ----- webhook ----------------------------------------------------------------------------

/// The deployment's own push service.
pub struct Webhook {
    http: reqwest::Client,
    url: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// `sha256=<hex HMAC-SHA256 of body>`, the `X-Roam-Signature` header.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

impl Webhook {
    pub fn new(url: &str, secret: &str) -> Result<Webhook, PushError> {
        Ok(Webhook {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| PushError::Setup(format!("HTTP client: {e}")))?,
            url: url.to_owned(),
            secret: secret.as_bytes().to_vec(),
        })
    }
}

#[async_trait]
impl Gateway for Webhook {
    async fn send(&self, to: &PushTarget, p: &PushPayload) -> Outcome {
        let body = json!({
            "user": to.user,
            "device": to.device,
            "platform": to.platform,
            "token": to.token,
            "app_id": to.app_id,
            "roam": p,
        });
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let res = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Roam-Signature", signature(&self.secret, &body))
            .body(body)
            .send()
            .await;
        let res = match res {
            Ok(r) => r,
            Err(e) => return network(&e),
        };
        let status = res.status().as_u16();
        let after = retry_after(res.headers());
        match status {
            200..=299 => Outcome::Sent,
            404 | 410 => Outcome::Unregistered("unregistered"),
            429 => Outcome::Retry {
                after,
                reason: "rate_limited",
            },
            s if s >= 500 => Outcome::Retry {
                after,
                reason: "server_error",
            },
            _ => Outcome::Failed("bad_request"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roam_testkit::push as fakes;

    fn target(platform: roam_proto::PushPlatform, token: &str) -> PushTarget {
        PushTarget {
            user: "bob".into(),
            device: "phone".into(),
            platform,
            token: token.into(),
            app_id: fakes::APNS_TOPIC.into(),
            locale: None,
            sandbox: false,
        }
    }

    fn payload() -> PushPayload {
        PushPayload {
            v: 1,
            kind: PushKind::Message,
            room: "team".into(),
            seq: 3,
            message: Some("m3".into()),
            unread: 1,
            preview: None,
        }
    }

    #[tokio::test]
    async fn apns_against_the_fake() {
        let fake = fakes::fake_apns().await;
        let apns = Apns::new(
            &fakes::apns_key_path(),
            fakes::APNS_KEY_ID,
            fakes::APNS_TEAM_ID,
            &fake.url(),
            &fake.url(),
        )
        .expect("apns");
        let out = apns
            .send(&target(roam_proto::PushPlatform::Apns, "aa"), &payload())
            .await;
        assert_eq!(out, Outcome::Sent, "refused auth: {}", fake.refused_auth());
        fake.forget("bb");
        let out = apns
            .send(&target(roam_proto::PushPlatform::Apns, "bb"), &payload())
            .await;
        assert_eq!(out, Outcome::Unregistered("unregistered"));
    }

    #[tokio::test]
    async fn fcm_against_the_fake() {
        let fake = fakes::fake_fcm().await;
        let dir = tempfile::tempdir().expect("dir");
        let creds = dir.path().join("sa.json");
        std::fs::write(&creds, fakes::fcm_credentials(&fake)).expect("write");
        let fcm = Fcm::new(&creds, &fake.url()).expect("fcm");
        let out = fcm
            .send(&target(roam_proto::PushPlatform::Fcm, "aa"), &payload())
            .await;
        assert_eq!(out, Outcome::Sent, "refused auth: {}", fake.refused_auth());
    }

    #[test]
    fn webhook_signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let sig = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn retry_after_in_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("header"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
