//! Configuration of a [`Client`](crate::Client).
//!
//! [`ClientConfig::new`] takes the three things that have no sensible default (where the
//! account's database lives, where the server is, and whose account it is) and fills in every
//! timing from the seed design and the protocol: reconnect backoff 1 s → 5 s with randomisation
//! 0.5, heartbeat ping every 25 s and 5 s to answer, typing throttle 3 s / idle stop 3 s / remote
//! expiry 5 s, an outbox window of 256 in-flight mutations. Every field is public so tests (and
//! apps) can shorten the timings; [`ClientConfig::validate`] refuses combinations that cannot
//! work before anything is opened.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Everything a [`Client`](crate::Client) needs to know.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The account's SQLite database file (created if missing). One file per account.
    pub db_path: PathBuf,
    /// The server's base URL, `http://host:port` or `https://host`; the socket goes to
    /// `ws(s)://host:port/v1/ws` and REST calls to `…/v1/…`.
    pub server_url: String,
    /// The account's user id (the token's `sub`). Optimistic local rows are written as this
    /// user before the server has ever been reached.
    pub user_id: String,
    /// Reconnect backoff of the socket.
    pub reconnect: ReconnectConfig,
    /// WebSocket ping / pong.
    pub heartbeat: HeartbeatConfig,
    /// Outbox replay.
    pub outbox: OutboxConfig,
    /// Typing indicators.
    pub typing: TypingConfig,
    /// Local presence.
    pub presence: PresenceConfig,
    /// The cache of REST reads (room directory, members, presence).
    pub cache: CacheConfig,
    /// How long a connection attempt (TCP, TLS, WebSocket handshake, `hello`) may take.
    pub connect_timeout: Duration,
    /// How long to wait for every subscribed room to be caught up after a connect before the
    /// outbox is flushed anyway.
    pub recovery_timeout: Duration,
    /// How many messages to reload over REST when the server answers a subscription with
    /// `reset` (1–200).
    pub reset_page_size: u32,
    /// Timeout of each REST request.
    pub http_timeout: Duration,
    /// Largest size the database may grow to, in bytes (`None`: as large as the disk allows).
    /// A store that reaches it behaves like a full disk: see [`ReconnectConfig::storage_full_delay`].
    pub max_store_bytes: Option<u64>,
    /// Attachments: the media directory and cache, and how uploads are sent.
    pub media: MediaConfig,
    /// The key of the encrypted store (`None`: the database is plain SQLite, as before). With a
    /// key the database and its WAL are encrypted through SQLCipher (each page sealed with
    /// AES-256-GCM and bound to its place by an HMAC);
    /// a plain store found at `db_path` is encrypted once, at open. The key is used as it is
    /// (SQLCipher's raw key), so opening costs no key derivation: keep a random key in the
    /// Keychain or the Android Keystore, not a passphrase.
    pub store_key: Option<StoreKey>,
    /// Leave the first 32 bytes of an encrypted database in plain text (SQLCipher's
    /// `cipher_plaintext_header_size`). iOS needs it for a database in a shared app-group
    /// container: it recognises a SQLite file by its header and otherwise kills an app that
    /// holds a lock on it while suspended. Default: on for Apple targets, off elsewhere. Applies
    /// when a store is created, encrypted or re-keyed; an existing store is opened as it is.
    pub store_plaintext_header: bool,
}

impl ClientConfig {
    /// A configuration with the default timings.
    pub fn new(
        db_path: impl Into<PathBuf>,
        server_url: impl Into<String>,
        user_id: impl Into<String>,
    ) -> Self {
        ClientConfig {
            db_path: db_path.into(),
            server_url: server_url.into(),
            user_id: user_id.into(),
            reconnect: ReconnectConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            outbox: OutboxConfig::default(),
            typing: TypingConfig::default(),
            presence: PresenceConfig::default(),
            cache: CacheConfig::default(),
            connect_timeout: Duration::from_secs(10),
            recovery_timeout: Duration::from_secs(30),
            reset_page_size: 50,
            http_timeout: Duration::from_secs(20),
            max_store_bytes: None,
            media: MediaConfig::default(),
            store_key: None,
            store_plaintext_header: cfg!(target_vendor = "apple"),
        }
    }

    /// The media directory: [`MediaConfig::dir`], or `<db_path>-media` next to the database.
    pub fn media_dir(&self) -> PathBuf {
        match &self.media.dir {
            Some(dir) => dir.clone(),
            None => {
                let mut name = self.db_path.clone().into_os_string();
                name.push("-media");
                PathBuf::from(name)
            }
        }
    }

    /// Checks the values; called by [`Client::open`](crate::Client::open).
    pub fn validate(&self) -> Result<()> {
        roam_proto::validate::user_id(&self.user_id)?;
        crate::http::base_url(&self.server_url)?;
        let r = &self.reconnect;
        if r.initial_delay.is_zero() || r.max_delay < r.initial_delay {
            return Err(Error::invalid(
                "reconnect delays must be positive with max_delay >= initial_delay",
            ));
        }
        if r.storage_full_delay.is_zero() {
            return Err(Error::invalid(
                "reconnect storage_full_delay must be positive",
            ));
        }
        if !(0.0..=1.0).contains(&r.randomization_factor) {
            return Err(Error::invalid(
                "reconnect randomization_factor must be between 0 and 1",
            ));
        }
        if self.heartbeat.interval.is_zero() || self.heartbeat.timeout.is_zero() {
            return Err(Error::invalid(
                "heartbeat interval and timeout must be positive",
            ));
        }
        let o = &self.outbox;
        if o.window == 0 || o.per_room_window == 0 {
            return Err(Error::invalid("outbox windows must be at least 1"));
        }
        if o.initial_backoff.is_zero() || o.max_backoff < o.initial_backoff {
            return Err(Error::invalid(
                "outbox backoff must be positive with max_backoff >= initial_backoff",
            ));
        }
        if o.ack_timeout.is_zero() {
            return Err(Error::invalid("outbox ack_timeout must be positive"));
        }
        let m = &self.media;
        if m.chunk_bytes == 0 || m.chunk_bytes > 16 * 1024 * 1024 {
            return Err(Error::invalid(
                "media chunk_bytes must be between 1 byte and 16 MiB",
            ));
        }
        if m.max_file_bytes == 0 || m.max_bytes < m.max_file_bytes {
            return Err(Error::invalid(
                "media max_file_bytes must be positive and at most max_bytes",
            ));
        }
        if m.initial_backoff.is_zero() || m.max_backoff < m.initial_backoff {
            return Err(Error::invalid(
                "media backoff must be positive with max_backoff >= initial_backoff",
            ));
        }
        if !(1..=roam_proto::validate::MAX_PAGE_SIZE).contains(&self.reset_page_size) {
            return Err(Error::invalid("reset_page_size must be between 1 and 200"));
        }
        Ok(())
    }
}

/// The 32-byte key of an encrypted store (see [`ClientConfig::store_key`]). Its `Debug` output
/// does not show the key, and its bytes are overwritten when it is dropped.
///
/// Only a random key is safe here: it is used as SQLCipher's raw key, with no key derivation
/// (which would add hundreds of milliseconds to every open). Create it once with a secure
/// random generator and keep it in the Keychain or the Android Keystore.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreKey([u8; StoreKey::LEN]);

impl StoreKey {
    /// Length of a key in bytes.
    pub const LEN: usize = 32;

    /// A key from its 32 bytes.
    pub fn new(bytes: [u8; StoreKey::LEN]) -> Self {
        StoreKey(bytes)
    }

    /// A key from a slice, which must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let bytes: [u8; StoreKey::LEN] = bytes.try_into().map_err(|_| {
            Error::invalid(format!(
                "a store key must be {} bytes, not {}",
                StoreKey::LEN,
                bytes.len()
            ))
        })?;
        Ok(StoreKey(bytes))
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; StoreKey::LEN] {
        &self.0
    }
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

impl Drop for StoreKey {
    fn drop(&mut self) {
        self.0 = [0; StoreKey::LEN];
        // Keeps the write from being removed as a dead store (best effort: copies made outside
        // this value, such as the app's own buffer, are out of its reach).
        std::hint::black_box(&self.0);
    }
}

/// Reconnect backoff: exponential from `initial_delay` to `max_delay`, each delay randomised by
/// ± `randomization_factor` (Socket.IO's scheme, the seed's numbers). Attempts are unbounded
/// while the app wants to be online.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReconnectConfig {
    /// First delay (1 s).
    pub initial_delay: Duration,
    /// Largest delay (5 s).
    pub max_delay: Duration,
    /// Each delay is drawn from `[d·(1−f), min(d·(1+f), max_delay)]` (0.5).
    pub randomization_factor: f64,
    /// How long to wait before connecting again after the store ran out of space (the disk is
    /// full, or the database reached `max_store_bytes`) while storing what the server sent (60 s):
    /// reconnecting at once would download the same events only to fail again. The client
    /// reports [`ConnectionState::StorageFull`](crate::ConnectionState::StorageFull) meanwhile;
    /// `network_available()` tries again at once.
    pub storage_full_delay: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
            randomization_factor: 0.5,
            storage_full_delay: Duration::from_secs(60),
        }
    }
}

/// WebSocket heartbeat (protocol §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// Ping this often (25 s). A smaller `heartbeat_ms` in the server's `hello` wins.
    pub interval: Duration,
    /// The link is dead when a ping gets no pong within this (5 s).
    pub timeout: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval: Duration::from_secs(25),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Outbox replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Most `mutate` frames on the wire at once, over all rooms (256: what the server admits per
    /// socket before it stops reading, so a replay keeps the server's reader, its store writer
    /// and this client busy at the same time instead of taking turns; the answers, an ack and an
    /// echoed event per mutation, stay well inside the server's 1,024-frame send queue).
    pub window: usize,
    /// Most `mutate` frames of one room on the wire at once (256). With 1, a room's entries go
    /// out one round trip at a time, which keeps their order even if the server refuses one
    /// transiently and accepts the next (see the `outbox` module docs).
    pub per_room_window: usize,
    /// First retry delay after a transient failure (500 ms); the delay doubles per consecutive
    /// failure and is drawn with full jitter from `[0, d]`.
    pub initial_backoff: Duration,
    /// Largest retry delay (30 s).
    pub max_backoff: Duration,
    /// A mutation with no answer after this long counts as a transient failure (15 s).
    pub ack_timeout: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            window: 256,
            per_room_window: 256,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(15),
        }
    }
}

/// Typing indicators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypingConfig {
    /// At most one `typing: true` per room this often while the user types (3 s).
    pub throttle: Duration,
    /// `typing: false` is sent after this long without a keystroke (3 s).
    pub idle_stop: Duration,
    /// Someone else's indicator disappears after this long without news (5 s).
    pub remote_expiry: Duration,
}

impl Default for TypingConfig {
    fn default() -> Self {
        TypingConfig {
            throttle: Duration::from_secs(3),
            idle_stop: Duration::from_secs(3),
            remote_expiry: Duration::from_secs(5),
        }
    }
}

/// Local presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceConfig {
    /// With no user activity for this long the device reports `away` (5 min).
    pub idle_timeout: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// The cache of REST reads (see the `remote` module): seed defaults, 5 min fresh, then 24 h
/// stale-while-revalidate, 4 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// A refresh within this long after the last one makes no request.
    pub ttl: Duration,
    /// After `ttl`, for this long, a refresh answers from the store at once and revalidates in
    /// the background.
    pub stale_ttl: Duration,
    /// Size cap of the cached answers (least recently used are evicted).
    pub max_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: crate::cache::DEFAULT_TTL,
            stale_ttl: crate::cache::DEFAULT_STALE_TTL,
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Attachments (see `crate::media` and `crate::upload`): where files live on the device, how
/// much of them is kept, and how uploads travel.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The media directory (`None`: `<db_path>-media`). It holds the files the account sent
    /// and downloaded, named by their SHA-256, and the partial downloads (`*.part`).
    pub dir: Option<PathBuf>,
    /// Size cap of the media cache, in bytes: past it the least recently used files are
    /// deleted (a file still being uploaded never is). Default 256 MiB.
    pub max_bytes: u64,
    /// Largest file `attachment_file` downloads into the cache. Default 64 MiB.
    pub max_file_bytes: u64,
    /// Bytes per upload request (`PATCH`): at most this much of a file is in memory at once.
    /// Default 8 MiB; the server takes at most 16 MiB.
    pub chunk_bytes: usize,
    /// First delay after a transient upload failure (doubling, full jitter).
    pub initial_backoff: Duration,
    /// Longest delay between upload attempts.
    pub max_backoff: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            dir: None,
            max_bytes: 256 * 1024 * 1024,
            max_file_bytes: 64 * 1024 * 1024,
            chunk_bytes: 8 * 1024 * 1024,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_from_the_seed() {
        let c = ClientConfig::new("/tmp/x.db", "http://127.0.0.1:1", "alice");
        c.validate().expect("valid");
        assert_eq!(c.reconnect.initial_delay, Duration::from_secs(1));
        assert_eq!(c.reconnect.max_delay, Duration::from_secs(5));
        assert_eq!(c.heartbeat.interval, Duration::from_secs(25));
        assert_eq!(c.heartbeat.timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_are_refused() {
        let mut c = ClientConfig::new("/tmp/x.db", "ftp://nope", "alice");
        assert!(matches!(c.validate(), Err(Error::InvalidInput { .. })));
        c.server_url = "http://localhost:1".into();
        c.user_id = "has space".into();
        assert!(c.validate().is_err());
        c.user_id = "alice".into();
        c.outbox.window = 0;
        assert!(c.validate().is_err());
        c.outbox.window = 1;
        c.reconnect.randomization_factor = 2.0;
        assert!(c.validate().is_err());
    }
}
