//! Configuration: every setting is a flag and an environment variable (clap), with defaults that
//! make `cargo run -p roam-server` work on a laptop with nothing else installed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// `roam-server` command line.
#[derive(Debug, Parser)]
#[command(name = "roam-server", version, about = "Roam real-time server")]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands; without one the server runs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Print a token for a user, signed with the configured secret (for local use and tests).
    Token {
        /// The user id (the token's `sub`).
        #[arg(long)]
        user: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: u64,
    },
    /// Ask the running server's admin interface (`--admin-listen`, `--admin-token`).
    Admin {
        #[command(subcommand)]
        action: AdminCommand,
    },
    /// Put a backup in place of the data directory's database (the server must be stopped):
    /// checked first; the current database is kept beside it.
    Restore {
        /// The backup's directory (as `admin backup` wrote it).
        #[arg(long)]
        from: PathBuf,
    },
}

/// `roam-server admin …`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// A consistent copy of the live store (and of a file blob store) while it serves.
    Backup {
        /// A new directory to write (default: a new one in `--backup-dir`).
        #[arg(long)]
        to: Option<PathBuf>,
    },
    /// List, show, export, erase, suspend and unsuspend users.
    Users {
        #[command(subcommand)]
        action: UserCommand,
    },
    /// List, show, delete and transfer rooms.
    Rooms {
        #[command(subcommand)]
        action: RoomCommand,
    },
}

/// `roam-server admin users …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Users whose id holds `--q` (any case), by id.
    List {
        #[arg(long, default_value = "")]
        q: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// A user's rooms and roles, devices connected now, messages and attachment bytes.
    Show { user: String },
    /// Everything the user has, as one archive written on the server's machine.
    Export {
        user: String,
        /// The archive to write (must not exist).
        #[arg(long)]
        to: PathBuf,
    },
    /// Erases the user everywhere (docs/admin.md says what goes and what stays).
    Erase {
        user: String,
        /// The rooms they own: `transfer` (to the oldest admin, else the oldest member; deleted
        /// when nobody is left) or `delete`.
        #[arg(long, value_parser = ["transfer", "delete"])]
        rooms: String,
    },
    /// Refuses every token of the user and closes their sockets, on every instance.
    Suspend { user: String },
    /// Lets the user in again with tokens issued from now on.
    Unsuspend { user: String },
}

/// `roam-server admin rooms …`.
#[derive(Debug, Subcommand)]
pub enum RoomCommand {
    /// Live rooms of every kind, by name, after `--after`.
    List {
        #[arg(long, default_value = "")]
        after: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// The room and its members.
    Show { room: String },
    /// Deletes the room.
    Delete { room: String },
    /// Makes `--to` (an active member; default: the oldest admin, else the oldest member) the
    /// owner.
    Transfer {
        room: String,
        #[arg(long)]
        to: Option<String>,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `ROAM_DB_SYNCHRONOUS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DbSynchronous {
    Full,
    Normal,
}

/// Where attachments are kept (`--blob-store`, `ROAM_BLOB_STORE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BlobStoreKind {
    /// Files under `<data dir>/blobs` (one server).
    #[default]
    Fs,
    /// An S3-compatible bucket that several servers share (`--s3-*`).
    S3,
}

/// Push notifications (protocol §11): the gateways a deployment uses and how the queue runs.
/// A gateway without its settings is off; a device of a platform that is off is skipped (and
/// counted).
#[derive(Debug, Clone, Args)]
pub struct PushConfig {
    /// The APNs token-auth key: the `.p8` file (PKCS#8 PEM, P-256) from Apple's developer site.
    #[arg(long, global = true, env = "ROAM_PUSH_APNS_KEY")]
    pub push_apns_key: Option<PathBuf>,
    /// The key's id (10 characters, shown beside the key).
    #[arg(long, global = true, env = "ROAM_PUSH_APNS_KEY_ID")]
    pub push_apns_key_id: Option<String>,
    /// The Apple developer team id (the JWT's issuer).
    #[arg(long, global = true, env = "ROAM_PUSH_APNS_TEAM_ID")]
    pub push_apns_team_id: Option<String>,
    /// APNs production host.
    #[arg(
        long,
        global = true,
        env = "ROAM_PUSH_APNS_URL",
        default_value = "https://api.push.apple.com"
    )]
    pub push_apns_url: String,
    /// APNs development host (devices registered with `sandbox: true`).
    #[arg(
        long,
        global = true,
        env = "ROAM_PUSH_APNS_SANDBOX_URL",
        default_value = "https://api.sandbox.push.apple.com"
    )]
    pub push_apns_sandbox_url: String,
    /// The FCM service account's JSON key file (`project_id`, `client_email`, `private_key`,
    /// `token_uri`).
    #[arg(long, global = true, env = "ROAM_PUSH_FCM_CREDENTIALS")]
    pub push_fcm_credentials: Option<PathBuf>,
    /// The FCM HTTP v1 API's base URL.
    #[arg(
        long,
        global = true,
        env = "ROAM_PUSH_FCM_URL",
        default_value = "https://fcm.googleapis.com"
    )]
    pub push_fcm_url: String,
    /// The deployment's own push service: pushes of `webhook` devices are POSTed here.
    #[arg(long, global = true, env = "ROAM_PUSH_WEBHOOK_URL")]
    pub push_webhook_url: Option<String>,
    /// The HMAC-SHA256 key of the webhook's `X-Roam-Signature` (required with the URL).
    #[arg(
        long,
        global = true,
        env = "ROAM_PUSH_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub push_webhook_secret: Option<String>,
    /// Put the sender, room title and message text in pushes (off: they never reach Apple,
    /// Google or the webhook; the app fetches the message itself).
    #[arg(
        long,
        global = true,
        env = "ROAM_PUSH_PREVIEWS",
        default_value_t = false
    )]
    pub push_previews: bool,
    /// Pushes one device may get per minute; more wait (and coalesce).
    #[arg(
        long,
        global = true,
        env = "ROAM_PUSH_DEVICE_PER_MIN",
        default_value_t = 30
    )]
    pub push_device_per_min: u32,
    /// Attempts of a push that fails with a retryable error (429, 5xx, network) before it is
    /// dropped.
    #[arg(
        long,
        global = true,
        env = "ROAM_PUSH_MAX_ATTEMPTS",
        default_value_t = 8
    )]
    pub push_max_attempts: u32,
    /// How often a node looks for due pushes when nothing woke it (a commit on the node itself
    /// wakes it at once).
    #[arg(long, global = true, env = "ROAM_PUSH_POLL_MS", default_value_t = 500)]
    pub push_poll_ms: u64,
    /// How long a node holds the pushes it took; a node that dies leaves them to the others
    /// after this.
    #[arg(
        long,
        global = true,
        env = "ROAM_PUSH_LEASE_SECS",
        default_value_t = 30
    )]
    pub push_lease_secs: u64,
    /// Users turned into queued pushes per store transaction, and pushes taken per batch.
    #[arg(long, global = true, env = "ROAM_PUSH_BATCH", default_value_t = 500)]
    pub push_batch: u32,
    /// Gateway requests in flight at once per node.
    #[arg(
        long,
        global = true,
        env = "ROAM_PUSH_CONCURRENCY",
        default_value_t = 64
    )]
    pub push_concurrency: usize,
}

impl PushConfig {
    /// Checks the settings that belong together.
    pub fn validate(&self) -> Result<(), String> {
        let apns = [
            self.push_apns_key.is_some(),
            self.push_apns_key_id.is_some(),
            self.push_apns_team_id.is_some(),
        ];
        if apns.iter().any(|x| *x) && !apns.iter().all(|x| *x) {
            return Err(
                "APNs needs --push-apns-key, --push-apns-key-id and --push-apns-team-id together"
                    .into(),
            );
        }
        if self.push_webhook_url.is_some() != self.push_webhook_secret.is_some() {
            return Err(
                "the push webhook needs --push-webhook-url and --push-webhook-secret".into(),
            );
        }
        if self.push_device_per_min == 0 || self.push_max_attempts == 0 {
            return Err("--push-device-per-min and --push-max-attempts must be at least 1".into());
        }
        if self.push_poll_ms < 10 || self.push_lease_secs == 0 {
            return Err(
                "--push-poll-ms must be at least 10 and --push-lease-secs at least 1".into(),
            );
        }
        if self.push_batch == 0 || self.push_batch > 10_000 || self.push_concurrency == 0 {
            return Err(
                "--push-batch must be 1 to 10,000 and --push-concurrency at least 1".into(),
            );
        }
        Ok(())
    }
}

/// A credential: parsed like a string, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// Where the server keeps its data (`--store`, `ROAM_STORE`).
#[derive(Clone, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// The embedded SQLite file in the data directory (one server).
    #[default]
    Sqlite,
    /// A PostgreSQL database that several servers can share: the connection URL.
    Postgres(String),
}

impl std::fmt::Debug for StoreKind {
    /// Never prints the URL (it may carry a password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreKind::Sqlite => f.write_str("Sqlite"),
            StoreKind::Postgres(_) => f.write_str("Postgres(..)"),
        }
    }
}

impl std::str::FromStr for StoreKind {
    type Err = String;

    /// `sqlite`, or a `postgres://` / `postgresql://` URL (checked here, so a typo fails at
    /// start-up with the reason rather than at the first connection).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "sqlite" {
            return Ok(StoreKind::Sqlite);
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            crate::store::postgres::parse_url(s).map_err(|e| e.to_string())?;
            return Ok(StoreKind::Postgres(s.to_owned()));
        }
        Err("the store must be `sqlite` or a PostgreSQL URL (postgres://user@host:5432/db)".into())
    }
}

/// Server settings.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(
        long,
        global = true,
        env = "ROAM_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Directory for the SQLite database and the generated JWT secret.
    #[arg(long, global = true, env = "ROAM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Where data lives: `sqlite` (the embedded file in the data directory) or a PostgreSQL URL
    /// (`postgres://user:password@host:5432/db`) that several servers can share.
    #[arg(
        long,
        global = true,
        env = "ROAM_STORE",
        default_value = "sqlite",
        hide_env_values = true,
        value_parser = clap::value_parser!(StoreKind)
    )]
    pub store: StoreKind,
    /// HS256 secret for tokens. Without it, one is generated in the data directory.
    #[arg(long, global = true, env = "ROAM_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Required `iss` of tokens (and the one `roam-server token` writes). Unset: not checked.
    #[arg(long, global = true, env = "ROAM_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of tokens (and the one `roam-server token` writes). Unset: not checked.
    #[arg(long, global = true, env = "ROAM_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Origins allowed by CORS (comma separated). Empty: no cross-origin access.
    #[arg(long, global = true, env = "ROAM_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "ROAM_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// How commits reach the disk: `full` (an acknowledged write survives power loss) or
    /// `normal` (synced at checkpoints: faster, but the last writes before a power loss can be
    /// lost; never corrupt).
    #[arg(
        long,
        global = true,
        env = "ROAM_DB_SYNCHRONOUS",
        value_enum,
        default_value = "full"
    )]
    pub db_synchronous: DbSynchronous,
    /// Reader connections of the database pool (with PostgreSQL, also its writer connections).
    #[arg(long, global = true, env = "ROAM_DB_POOL_SIZE", default_value_t = 4)]
    pub db_pool_size: u32,
    /// PostgreSQL: the longest a statement may run before the server cancels it
    /// (`statement_timeout`; also `idle_in_transaction_session_timeout`). A call that gets no
    /// answer at all for this long plus 1 s gives its connection up. Either way the request
    /// answers 503 (retry).
    #[arg(
        long,
        global = true,
        env = "ROAM_DB_STATEMENT_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub db_statement_timeout_ms: u64,
    /// PostgreSQL: the longest a statement waits for a row lock (`lock_timeout`), e.g. a room's
    /// row held by another connection; the write then answers 503 and the others go on.
    #[arg(
        long,
        global = true,
        env = "ROAM_DB_LOCK_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub db_lock_timeout_ms: u64,
    /// Mutations per second per user (sustained).
    #[arg(
        long,
        global = true,
        env = "ROAM_RATE_MUTATIONS_PER_SEC",
        default_value_t = 50
    )]
    pub rate_mutations_per_sec: u32,
    /// Mutation burst per user.
    #[arg(
        long,
        global = true,
        env = "ROAM_RATE_MUTATIONS_BURST",
        default_value_t = 500
    )]
    pub rate_mutations_burst: u32,
    /// WebSocket connects per minute per user (sustained).
    #[arg(
        long,
        global = true,
        env = "ROAM_RATE_CONNECTS_PER_MIN",
        default_value_t = 60
    )]
    pub rate_connects_per_min: u32,
    /// WebSocket connect burst per user.
    #[arg(
        long,
        global = true,
        env = "ROAM_RATE_CONNECTS_BURST",
        default_value_t = 30
    )]
    pub rate_connects_burst: u32,
    /// Frames queued for one socket before it counts as a slow consumer and is dropped.
    #[arg(long, global = true, env = "ROAM_SEND_QUEUE", default_value_t = 1024)]
    pub send_queue: usize,
    /// Close a socket that sent nothing (not even a ping) for this long.
    #[arg(
        long,
        global = true,
        env = "ROAM_IDLE_TIMEOUT_SECS",
        default_value_t = 60
    )]
    pub idle_timeout_secs: u64,
    /// Heartbeat interval announced to clients in `hello`.
    #[arg(
        long,
        global = true,
        env = "ROAM_HEARTBEAT_MS",
        default_value_t = 25_000
    )]
    pub heartbeat_ms: u64,
    /// A typing indicator ends by itself after this long without news.
    #[arg(
        long,
        global = true,
        env = "ROAM_TYPING_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub typing_timeout_ms: u64,
    /// A gap larger than this many events answers `reset` instead of replaying.
    #[arg(
        long,
        global = true,
        env = "ROAM_MAX_RECOVERY_EVENTS",
        default_value_t = 100_000
    )]
    pub max_recovery_events: u64,
    /// Compress REST responses of at least this many bytes.
    #[arg(
        long,
        global = true,
        env = "ROAM_COMPRESS_MIN_BYTES",
        default_value_t = 1024
    )]
    pub compress_min_bytes: u16,
    /// Keep presence (last-seen) rows this many hours.
    #[arg(
        long,
        global = true,
        env = "ROAM_PRESENCE_RETENTION_HOURS",
        default_value_t = 24
    )]
    pub presence_retention_hours: u64,
    /// Keep document history this many days (the current version always stays).
    #[arg(
        long,
        env = "ROAM_DOCUMENT_HISTORY_RETENTION_DAYS",
        default_value_t = 30
    )]
    pub document_history_retention_days: u64,
    /// Keep notifications this many days.
    #[arg(
        long,
        global = true,
        env = "ROAM_NOTIFICATION_RETENTION_DAYS",
        default_value_t = 90
    )]
    pub notification_retention_days: u64,
    /// Keep room events this many days (0: forever). Each room keeps at least its newest
    /// event; a client whose cursor is older gets `reset` and reloads the room.
    #[arg(
        long,
        global = true,
        env = "ROAM_EVENT_RETENTION_DAYS",
        default_value_t = 90
    )]
    pub event_retention_days: u64,
    /// Rows one retention batch removes at most (each batch is one short write transaction).
    #[arg(
        long,
        global = true,
        env = "ROAM_RETENTION_BATCH_ROWS",
        default_value_t = 1_000
    )]
    pub retention_batch_rows: u32,
    /// Keep idempotency keys this many days (at least 7).
    #[arg(
        long,
        global = true,
        env = "ROAM_IDEMPOTENCY_RETENTION_DAYS",
        default_value_t = 7
    )]
    pub idempotency_retention_days: u64,
    /// Run the retention clean-up this often.
    #[arg(
        long,
        global = true,
        env = "ROAM_RETENTION_INTERVAL_SECS",
        default_value_t = 3_600
    )]
    pub retention_interval_secs: u64,
    /// Entries of the in-process room/membership cache.
    #[arg(
        long,
        global = true,
        env = "ROAM_CACHE_ENTRIES",
        default_value_t = 100_000
    )]
    pub cache_entries: usize,
    /// How long a cached room or membership is served before it is read again: the bound on
    /// how stale a permission can be on an instance that missed an invalidation.
    #[arg(
        long,
        global = true,
        env = "ROAM_CACHE_TTL_MS",
        default_value_t = 5_000
    )]
    pub cache_ttl_ms: u64,
    /// How long shutdown waits for connections to close.
    #[arg(
        long,
        global = true,
        env = "ROAM_SHUTDOWN_GRACE_SECS",
        default_value_t = 10
    )]
    pub shutdown_grace_secs: u64,
    /// Most WebSockets this server holds at once; more are refused with 503.
    #[arg(
        long,
        global = true,
        env = "ROAM_MAX_SOCKETS",
        default_value_t = 100_000
    )]
    pub max_sockets: usize,
    /// Most WebSockets one user may hold at once; more are refused with 429.
    #[arg(
        long,
        global = true,
        env = "ROAM_MAX_SOCKETS_PER_USER",
        default_value_t = 16
    )]
    pub max_sockets_per_user: usize,
    /// An HTTP request head (request line and headers) must arrive in full within this long of
    /// the connection opening, or of its first byte after a keep-alive wait; past it the
    /// connection is dropped.
    #[arg(
        long,
        global = true,
        env = "ROAM_HTTP_HEADER_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub http_header_timeout_ms: u64,
    /// A keep-alive HTTP connection with no request in flight is dropped after this long
    /// without a byte from the client.
    #[arg(
        long,
        global = true,
        env = "ROAM_HTTP_IDLE_TIMEOUT_SECS",
        default_value_t = 60
    )]
    pub http_idle_timeout_secs: u64,
    /// Most HTTP connections not upgraded to a WebSocket (REST keep-alive connections and
    /// handshakes in progress) held at once; more get health checks only.
    #[arg(
        long,
        global = true,
        env = "ROAM_MAX_PENDING_CONNECTIONS",
        default_value_t = 10_000
    )]
    pub max_pending_connections: usize,
    /// Most such connections from one client address (0: no cap; behind a reverse proxy every
    /// connection comes from the proxy's address).
    #[arg(
        long,
        global = true,
        env = "ROAM_MAX_PENDING_PER_IP",
        default_value_t = 2_048
    )]
    pub max_pending_per_ip: usize,
    /// Most client sockets (HTTP and WebSocket) held at once; more get health checks only.
    /// 0: the open-file limit less the descriptors open at start and `--fd-reserve`.
    #[arg(long, global = true, env = "ROAM_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,
    /// File descriptors kept free below the open-file limit (for the store, logs and health
    /// checks) when the connection budget comes from the limit.
    #[arg(long, global = true, env = "ROAM_FD_RESERVE", default_value_t = 128)]
    pub fd_reserve: usize,
    /// Sets `TCP_NODELAY` on client connections: every frame leaves at once instead of waiting
    /// for the previous segment's acknowledgement (lower latency under load, more CPU per
    /// delivery; BENCHMARKS.md measures both).
    #[arg(
        long,
        global = true,
        env = "ROAM_TCP_NODELAY",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub tcp_nodelay: bool,
    /// A WebSocket message left unfinished (fragments without the final one) this long closes
    /// the socket with 1008.
    #[arg(
        long,
        global = true,
        env = "ROAM_WS_MESSAGE_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub ws_message_timeout_ms: u64,
    /// Bytes of unfinished WebSocket messages (partial frames and fragments) the server holds
    /// over all sockets; a socket whose message would pass it is closed with 1008.
    #[arg(
        long,
        global = true,
        env = "ROAM_WS_PARTIAL_BUDGET_BYTES",
        default_value_t = 256 * 1024 * 1024
    )]
    pub ws_partial_budget_bytes: usize,
    /// A write to a socket that does not complete this long closes it (4008: the client stopped
    /// reading).
    #[arg(
        long,
        global = true,
        env = "ROAM_SLOW_CONSUMER_GRACE_MS",
        default_value_t = 5_000
    )]
    pub slow_consumer_grace_ms: u64,
    /// How long a room's delivery line waits for a missing event before reading it from the
    /// store (for every socket of the room at once).
    #[arg(
        long,
        global = true,
        env = "ROAM_HUB_REORDER_WINDOW_MS",
        default_value_t = 50
    )]
    pub hub_reorder_window_ms: u64,
    /// MiB of encoded events the hub keeps in memory over every room followed here (each
    /// room's recent events and shared catch-up pages). Past it the hub evicts pages (least
    /// recently used first), then the oldest recent events of the least recently active rooms;
    /// sockets read what was evicted from the store.
    #[arg(long, global = true, env = "ROAM_HUB_MEMORY_MB", default_value_t = 256)]
    pub hub_memory_mb: usize,
    /// Most rooms one socket may follow; a `subscribe` past it is refused with `conflict`.
    #[arg(
        long,
        global = true,
        env = "ROAM_MAX_ROOMS_PER_SOCKET",
        default_value_t = 1_000
    )]
    pub max_rooms_per_socket: usize,
    /// Most rooms one user's sockets on this server may follow together (a room followed by
    /// several of them counts once); a `subscribe` past it is refused with `conflict`.
    #[arg(
        long,
        global = true,
        env = "ROAM_MAX_ROOMS_PER_USER",
        default_value_t = 2_000
    )]
    pub max_rooms_per_user: usize,
    /// MiB of collaborative documents (their encoded sizes) this server keeps loaded in
    /// memory, least recently used first out; a document not loaded is read from the store.
    #[arg(
        long,
        global = true,
        env = "ROAM_COLLAB_CACHE_MB",
        default_value_t = 128
    )]
    pub collab_cache_mb: u64,
    /// A collaborative document's update log is compacted into its snapshot once it holds this
    /// many updates ...
    #[arg(
        long,
        global = true,
        env = "ROAM_COLLAB_COMPACT_UPDATES",
        default_value_t = 1_000
    )]
    pub collab_compact_updates: u64,
    /// ... or this many KiB of them, whichever comes first.
    #[arg(
        long,
        global = true,
        env = "ROAM_COLLAB_COMPACT_KIB",
        default_value_t = 1_024
    )]
    pub collab_compact_kib: u64,
    /// A `message.import` costs one mutation token per started this many KiB of its messages
    /// (each body plus 256 bytes for its row and event), at least one and at most the burst.
    #[arg(
        long,
        global = true,
        env = "ROAM_RATE_IMPORT_KIB_PER_TOKEN",
        default_value_t = 16
    )]
    pub rate_import_kib_per_token: u32,
    /// MiB of `message.import` messages this server writes at once; an import that finds the
    /// budget taken is refused with `rate_limited` (an import larger than the budget takes it
    /// whole), so imports queue at most this much ahead of other writes.
    #[arg(
        long,
        global = true,
        env = "ROAM_IMPORT_INFLIGHT_MB",
        default_value_t = 8
    )]
    pub import_inflight_mb: u32,
    /// Rooms with more members than this get no presence frames (`presence_state`,
    /// `presence_diff`): their clients ask `GET /v1/presence` for the users they show.
    #[arg(
        long,
        global = true,
        env = "ROAM_PRESENCE_ROOM_MAX",
        default_value_t = 200
    )]
    pub presence_room_max: u64,
    /// WebSocket frames from this size go compressed to sockets that asked for compression.
    #[arg(
        long,
        global = true,
        env = "ROAM_WS_COMPRESS_MIN_BYTES",
        default_value_t = 512
    )]
    pub ws_compress_min_bytes: usize,
    /// How instances reach each other: `local` (this process only) or `redis://host:port/db`
    /// (several instances on one Postgres store; see README "Run more than one node").
    #[arg(long, global = true, env = "ROAM_BUS", default_value = "local")]
    pub bus: String,
    /// Prefix of the Redis bus's keys and channel (deployments sharing one Redis differ here).
    #[arg(long, global = true, env = "ROAM_BUS_PREFIX", default_value = "roam")]
    pub bus_prefix: String,
    /// This instance's id in the cluster (default: a new random one at each start).
    #[arg(long, global = true, env = "ROAM_NODE_ID")]
    pub node_id: Option<String>,
    /// How often an instance tells the cluster it is alive; one silent for 5 of these is gone
    /// and its users' presence expires.
    #[arg(
        long,
        global = true,
        env = "ROAM_BUS_HEARTBEAT_MS",
        default_value_t = 2_000
    )]
    pub bus_heartbeat_ms: u64,
    /// Where attachments (blobs and unfinished uploads) are kept: `fs` (files under
    /// `<data dir>/blobs`, for one server) or `s3` (an S3-compatible bucket, which several
    /// servers share; `--s3-bucket` and the AWS credential variables are then required).
    #[arg(
        long,
        global = true,
        env = "ROAM_BLOB_STORE",
        value_enum,
        default_value = "fs"
    )]
    pub blob_store: BlobStoreKind,
    /// The S3 service's URL (`http://127.0.0.1:9000` for MinIO); unset: AWS S3 of `--s3-region`.
    #[arg(long, global = true, env = "ROAM_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// The bucket of `--blob-store s3` (it must exist).
    #[arg(long, global = true, env = "ROAM_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// The bucket's region.
    #[arg(
        long,
        global = true,
        env = "ROAM_S3_REGION",
        default_value = "us-east-1"
    )]
    pub s3_region: String,
    /// The S3 access key id (set it through the environment).
    #[arg(long, global = true, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    /// The S3 secret access key (set it through the environment).
    #[arg(
        long,
        global = true,
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub s3_secret_access_key: Option<Secret>,
    /// Largest attachment, in MiB; a larger upload is refused (413) before anything is stored.
    #[arg(long, global = true, env = "ROAM_MAX_UPLOAD_MB", default_value_t = 100)]
    pub max_upload_mb: u64,
    /// Most MiB one upload request (`PATCH /v1/uploads/{id}`) may carry; more answers 413.
    #[arg(
        long,
        global = true,
        env = "ROAM_MAX_UPLOAD_CHUNK_MB",
        default_value_t = 16
    )]
    pub max_upload_chunk_mb: u64,
    /// An upload that received nothing for this many hours is deleted.
    #[arg(
        long,
        global = true,
        env = "ROAM_UPLOAD_EXPIRY_HOURS",
        default_value_t = 24
    )]
    pub upload_expiry_hours: u64,
    /// Upload bytes a user may send per second, over all their uploads (MiB/s); a burst of
    /// one `--max-upload-chunk-mb` request passes at once.
    #[arg(
        long,
        global = true,
        env = "ROAM_RATE_UPLOAD_MB_PER_SEC",
        default_value_t = 64
    )]
    pub rate_upload_mb_per_sec: u32,
    /// Attachment storage per user, in MiB: the blobs they uploaded plus their unfinished
    /// uploads. Creating an upload that would pass it is refused (413 `quota_exceeded`) before
    /// anything is stored. 0: unlimited.
    #[arg(
        long,
        global = true,
        env = "ROAM_BLOB_QUOTA_MB_PER_USER",
        default_value_t = 1024
    )]
    pub blob_quota_mb_per_user: u64,
    /// Where the admin interface listens (backups, …): loopback unless you put it elsewhere.
    /// It is served only when an admin token is set.
    #[arg(
        long,
        global = true,
        env = "ROAM_ADMIN_LISTEN",
        default_value = "127.0.0.1:9091"
    )]
    pub admin_listen: SocketAddr,
    /// The bearer token of the admin interface and of `roam-server admin …` (unset: no admin
    /// interface).
    #[arg(long, global = true, env = "ROAM_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// Where backups go: `admin backup` without `--to`, and scheduled backups (default
    /// `<data dir>/backups`).
    #[arg(long, global = true, env = "ROAM_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    /// A backup every this many minutes (0: none scheduled).
    #[arg(
        long,
        global = true,
        env = "ROAM_BACKUP_INTERVAL_MINS",
        default_value_t = 0
    )]
    pub backup_interval_mins: u64,
    /// Scheduled backups kept: older ones are deleted after each new one.
    #[arg(long, global = true, env = "ROAM_BACKUP_KEEP", default_value_t = 7)]
    pub backup_keep: u32,
    /// Push notifications (protocol §11).
    #[command(flatten)]
    pub push: PushConfig,
}

/// Which bus `--bus` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusChoice {
    Local,
    Redis(String),
}

/// The rule a configured JWT secret must meet (the server and `roam-server token` alike).
pub fn check_secret(secret: &str) -> Result<(), String> {
    if secret.len() < 32 {
        return Err("the JWT secret must be at least 32 bytes".into());
    }
    Ok(())
}

impl Config {
    /// Defaults, with the given data directory and a free loopback port (`127.0.0.1:0`).
    pub fn for_data_dir(dir: impl Into<PathBuf>) -> Self {
        let cli = Cli::parse_from(["roam-server"]);
        Config {
            data_dir: dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..cli.config
        }
    }

    /// Checks the settings that have rules beyond their type.
    pub fn validate(&self) -> Result<(), String> {
        self.push.validate()?;
        if self.idempotency_retention_days < 7 {
            return Err("idempotency keys must be kept at least 7 days".into());
        }
        if self.db_pool_size == 0 || self.db_pool_size > 64 {
            return Err("db pool size must be 1 to 64".into());
        }
        if self.db_statement_timeout_ms < 100 || self.db_statement_timeout_ms > 600_000 {
            return Err("the db statement timeout must be 100 ms to 10 min".into());
        }
        if self.db_lock_timeout_ms < 10 || self.db_lock_timeout_ms > self.db_statement_timeout_ms {
            return Err(
                "the db lock timeout must be at least 10 ms and at most the statement timeout"
                    .into(),
            );
        }
        if self.rate_mutations_per_sec == 0 || self.rate_connects_per_min == 0 {
            return Err("rate limits must be at least 1".into());
        }
        if self.retention_batch_rows == 0 {
            return Err("retention batches must remove at least 1 row".into());
        }
        if self.max_sockets == 0 || self.max_sockets_per_user == 0 {
            return Err("socket caps must be at least 1".into());
        }
        if self.http_header_timeout_ms < 100 || self.http_idle_timeout_secs == 0 {
            return Err(
                "the HTTP header timeout must be at least 100 ms and the idle timeout \
                        at least 1 s"
                    .into(),
            );
        }
        if self.max_pending_connections == 0 {
            return Err("--max-pending-connections must be at least 1".into());
        }
        if self.ws_message_timeout_ms < 100 {
            return Err("the WebSocket message timeout must be at least 100 ms".into());
        }
        if self.ws_partial_budget_bytes < roam_proto::validate::MAX_FRAME_BYTES {
            return Err("the partial-message budget must hold at least one largest message".into());
        }
        if self.slow_consumer_grace_ms < 100 {
            return Err("the slow-consumer grace must be at least 100 ms".into());
        }
        if self.hub_memory_mb == 0 {
            return Err("the hub memory budget must be at least 1 MiB".into());
        }
        if self.max_rooms_per_socket == 0 || self.max_rooms_per_user == 0 {
            return Err("room caps must be at least 1".into());
        }
        if self.collab_cache_mb == 0 {
            return Err("the collaborative-document cache must be at least 1 MiB".into());
        }
        if self.collab_compact_updates == 0 || self.collab_compact_kib == 0 {
            return Err("collaborative-document compaction thresholds must be at least 1".into());
        }
        if self.rate_import_kib_per_token == 0 || self.import_inflight_mb == 0 {
            return Err("import budgets must be at least 1".into());
        }
        if self.send_queue < 16 {
            return Err("send queue must hold at least 16 frames".into());
        }
        if let Some(s) = &self.jwt_secret {
            check_secret(s)?;
        }
        if self.bus_choice()? != BusChoice::Local && self.store == StoreKind::Sqlite {
            return Err(
                "--bus redis://… needs --store postgres://…: instances on a Redis bus \
                        must share one store, and the SQLite file belongs to one process"
                    .into(),
            );
        }
        if self.bus_heartbeat_ms < 100 || self.bus_heartbeat_ms > 60_000 {
            return Err("the bus heartbeat must be 100 ms to 60 s".into());
        }
        if self.bus_prefix.is_empty()
            || !self
                .bus_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err("the bus prefix must be letters, digits, '-', '_' or '.'".into());
        }
        if self
            .node_id
            .as_ref()
            .is_some_and(|n| n.is_empty() || n.len() > 64 || n.contains(':'))
        {
            return Err("the node id must be 1 to 64 characters without ':'".into());
        }
        if self.rate_upload_mb_per_sec == 0 {
            return Err("--rate-upload-mb-per-sec must be at least 1".into());
        }
        if self.max_upload_mb == 0 || self.max_upload_chunk_mb == 0 {
            return Err("--max-upload-mb and --max-upload-chunk-mb must be at least 1".into());
        }
        if self.upload_expiry_hours == 0 {
            return Err("--upload-expiry-hours must be at least 1".into());
        }
        if self
            .admin_token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 16)
        {
            return Err("the admin token must be at least 16 characters".into());
        }
        if self.backup_keep == 0 {
            return Err("--backup-keep must be at least 1".into());
        }
        if self.blob_store == BlobStoreKind::S3 {
            if self.s3_bucket.as_deref().is_none_or(str::is_empty) {
                return Err("--blob-store s3 needs --s3-bucket".into());
            }
            if self.s3_access_key_id.is_none() || self.s3_secret_access_key.is_none() {
                return Err(
                    "--blob-store s3 needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
                );
            }
        }
        Ok(())
    }

    /// Where backups go.
    pub fn backup_dir(&self) -> PathBuf {
        self.backup_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("backups"))
    }

    /// How long an untouched upload is kept.
    pub fn upload_expiry(&self) -> Duration {
        Duration::from_secs(self.upload_expiry_hours.saturating_mul(3600))
    }

    /// The bus `--bus` names.
    pub fn bus_choice(&self) -> Result<BusChoice, String> {
        let b = self.bus.trim();
        if b == "local" {
            Ok(BusChoice::Local)
        } else if b.starts_with("redis://") || b.starts_with("rediss://") {
            Ok(BusChoice::Redis(b.to_owned()))
        } else {
            Err(format!(
                "--bus must be `local`, a redis:// URL or a rediss:// (TLS) URL, not {b:?}"
            ))
        }
    }

    /// The Redis bus heartbeat.
    pub fn bus_heartbeat(&self) -> Duration {
        Duration::from_millis(self.bus_heartbeat_ms)
    }

    pub fn typing_timeout(&self) -> Duration {
        Duration::from_millis(self.typing_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// The PostgreSQL store's statement and lock timeouts.
    pub fn db_timeouts(&self) -> crate::store::postgres::Timeouts {
        crate::store::postgres::Timeouts {
            statement: Duration::from_millis(self.db_statement_timeout_ms),
            lock: Duration::from_millis(self.db_lock_timeout_ms),
        }
    }

    /// Path of the SQLite database.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("roam.db")
    }
}
