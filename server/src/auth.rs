//! Bearer JWT authentication (HS256, `sub` = user id, `exp` required, `nbf` checked when
//! present, `iss`/`aud` required when configured).
//!
//! The secret comes from `ROAM_JWT_SECRET`; without one, the server generates a random secret
//! once, keeps it in `<data dir>/jwt-secret` (mode 0600) and says so in the log, so tokens minted
//! with `roam-server token` keep working across restarts. A secret file that other users can
//! read is used but warned about. [`Keys::from_config`] is the one way the server and the
//! `token` subcommand get their keys, so both apply the same checks.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use roam_proto::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::AppState;

/// Claims Roam reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
    /// Not before (seconds): a token used earlier is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Signs and checks tokens.
pub struct Keys {
    /// The key that seals the Redis bus's messages, derived from the secret: instances that
    /// accept each other's tokens accept each other's bus messages, and nobody else's.
    bus: [u8; 32],
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    /// Token expiry, seconds since the epoch.
    pub exp: u64,
    /// When the token was issued, seconds since the epoch (0 when it does not say).
    pub iat: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Keys {
    pub fn new(secret: &[u8]) -> Self {
        Self::with_claims(secret, None, None)
    }

    /// Keys that also require (and mint) the given `iss` and `aud`.
    pub fn with_claims(secret: &[u8], issuer: Option<&str>, audience: Option<&str>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Keys {
            bus: crate::cluster::derive_bus_key(secret),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.map(str::to_owned),
            audience: audience.map(str::to_owned),
        }
    }

    /// The keys of a configuration: its secret checked by [`Config::validate`]'s rules, or
    /// the secret file of its data directory, with its issuer and audience.
    ///
    /// [`Config::validate`]: crate::config::Config::validate
    pub fn from_config(config: &crate::config::Config) -> std::io::Result<Self> {
        if let Some(s) = &config.jwt_secret {
            crate::config::check_secret(s)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        }
        let secret = load_secret(config.jwt_secret.as_deref(), &config.data_dir)?;
        Ok(Keys::with_claims(
            secret.as_bytes(),
            config.jwt_issuer.as_deref(),
            config.jwt_audience.as_deref(),
        ))
    }

    /// Uses `configured`, or reads (or creates) the secret file in `data_dir`.
    pub fn load(configured: Option<&str>, data_dir: &Path) -> std::io::Result<Self> {
        Ok(Keys::new(load_secret(configured, data_dir)?.as_bytes()))
    }

    /// The key that seals this cluster's bus messages.
    pub fn bus_key(&self) -> [u8; 32] {
        self.bus
    }

    /// Mints a token for `user` valid for `ttl_secs`.
    pub fn mint(&self, user: &str, ttl_secs: u64) -> Result<String, ApiError> {
        roam_proto::validate::user_id(user)?;
        let now = now_secs();
        let claims = Claims {
            sub: user.to_owned(),
            exp: now + ttl_secs,
            iat: now,
            nbf: None,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)
    }

    /// Checks a token and returns the caller.
    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => {
                    ApiError::new(ErrorCode::TokenExpired, "the token has expired")
                }
                ErrorKind::InvalidSignature => ApiError::new(
                    ErrorCode::Unauthorized,
                    "the token's signature is not valid",
                ),
                ErrorKind::ImmatureSignature => {
                    ApiError::new(ErrorCode::Unauthorized, "the token is not valid yet (nbf)")
                }
                ErrorKind::InvalidIssuer => ApiError::new(
                    ErrorCode::Unauthorized,
                    "the token's issuer is not accepted",
                ),
                ErrorKind::InvalidAudience => ApiError::new(
                    ErrorCode::Unauthorized,
                    "the token's audience is not accepted",
                ),
                ErrorKind::MissingRequiredClaim(c) => ApiError::new(
                    ErrorCode::Unauthorized,
                    format!("the token lacks the {c} claim"),
                ),
                _ => ApiError::new(ErrorCode::Unauthorized, "the token is malformed"),
            })?;
        roam_proto::validate::user_id(&data.claims.sub).map_err(|e| {
            ApiError::new(
                ErrorCode::Unauthorized,
                format!("the token's sub is not a valid {e}"),
            )
        })?;
        Ok(Caller {
            user: data.claims.sub,
            exp: data.claims.exp,
            iat: data.claims.iat,
        })
    }
}

/// The secret: `configured`, or the file `<data_dir>/jwt-secret` (made on first use, mode 0600).
fn load_secret(configured: Option<&str>, data_dir: &Path) -> std::io::Result<String> {
    if let Some(s) = configured {
        return Ok(s.to_owned());
    }
    let path = data_dir.join("jwt-secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => {
            tracing::info!(path = %path.display(), "using the JWT secret from the data directory");
            if let Some(mode) = readable_by_others(&path)? {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "the JWT secret file can be read by other users; chmod 600 it"
                );
            }
            return Ok(s.trim().to_owned());
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} holds a secret shorter than 32 bytes", path.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &secret)?;
    tracing::warn!(
        path = %path.display(),
        "ROAM_JWT_SECRET is not set: generated a secret in the data directory; set ROAM_JWT_SECRET in production"
    );
    Ok(secret)
}

/// The file's permission bits when group or others may read or write it.
#[cfg(unix)]
pub fn readable_by_others(path: &Path) -> std::io::Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    Ok((mode & 0o077 != 0).then_some(mode))
}

/// Other platforms have no mode bits to check.
#[cfg(not(unix))]
pub fn readable_by_others(_path: &Path) -> std::io::Result<Option<u32>> {
    Ok(None)
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// The bearer token of a request: the `Authorization` header, or (`allow_query`) the
/// `access_token` query parameter.
pub fn bearer(parts: &Parts, allow_query: bool) -> Result<String, ApiError> {
    if let Some(h) = parts.headers.get(header::AUTHORIZATION) {
        let h = h.to_str().map_err(|_| {
            ApiError::new(ErrorCode::Unauthorized, "malformed Authorization header")
        })?;
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthorized,
                    "Authorization must be `Bearer <token>`",
                )
            })?;
        return Ok(token.trim().to_owned());
    }
    if allow_query {
        if let Some(q) = parts.uri.query() {
            for pair in q.split('&') {
                if let Some(v) = pair.strip_prefix("access_token=") {
                    return Ok(v.to_owned());
                }
            }
        }
    }
    Err(ApiError::new(
        ErrorCode::Unauthorized,
        "missing bearer token",
    ))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts, false)?;
        let caller = state.keys.verify(&token)?;
        state
            .service
            .suspensions
            .check(&*state.service.store, &caller.user, caller.iat)
            .await?;
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_and_verify() {
        let keys = Keys::new(b"0123456789abcdef0123456789abcdef");
        let t = keys.mint("alice", 60).expect("mint");
        assert_eq!(keys.verify(&t).expect("verify").user, "alice");
        let other = Keys::new(b"fedcba9876543210fedcba9876543210");
        assert_eq!(
            other.verify(&t).expect_err("wrong key").code,
            ErrorCode::Unauthorized
        );
        assert_eq!(
            keys.verify("abc").expect_err("garbage").code,
            ErrorCode::Unauthorized
        );
    }

    #[test]
    fn secret_file_is_made_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Keys::load(None, dir.path()).expect("load");
        let t = a.mint("bob", 60).expect("mint");
        let b = Keys::load(None, dir.path()).expect("reload");
        assert_eq!(b.verify(&t).expect("verify").user, "bob");
    }
}
