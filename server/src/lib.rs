//! Roam server: the WebSocket gateway and REST API that Roam clients talk to.
//!
//! [`app`] builds the router from an [`AppState`]; [`Server::start`] runs it on a listener with
//! graceful shutdown, so tests bind `127.0.0.1:0` and drive a real server:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use roam_server::{config::Config, Server};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = Server::start(Config::for_data_dir("/tmp/roam-demo"), listener).await?;
//! let token = server.token_for("alice")?;
//! println!("ws://{}/v1/ws  token {token}", server.local_addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod auth;
pub mod blob;
pub mod bus;
pub mod cache;
pub mod clock;
pub mod cluster;
pub mod collab;
pub mod compress;
pub mod config;
pub mod conn;
pub mod edge;
pub mod error;
pub mod event;
pub mod follow;
pub mod http;
pub mod hub;
pub mod instance;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod presence;
pub mod push;
pub mod retention;
pub mod rules;
pub mod service;
pub mod store;
pub mod suspend;
pub mod typing;
pub mod ws;
pub mod wsframe;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Keys;
use crate::bus::{Bus, LocalBus};
use crate::cache::ReadCache;
use crate::config::Config;
use crate::hub::{Hub, HubConfig};
use crate::instance::Instance;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::presence::PresenceTracker;
use crate::service::Service;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::{SqliteStore, Synchronous};
use crate::store::Store;
use crate::typing::TypingTracker;

/// Everything a handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub keys: Arc<Keys>,
    pub service: Arc<Service>,
    pub hub: Arc<Hub>,
    pub typing: Arc<TypingTracker>,
    /// Cancelled when the server starts draining.
    pub shutdown: CancellationToken,
    /// Socket tasks, awaited on shutdown.
    pub tasks: TaskTracker,
    /// The connection edge: what is counted of the HTTP connections, and their limits.
    pub edge: Arc<edge::Edge>,
    /// WebSocket slots, taken before an upgrade (the socket caps).
    pub sockets: Arc<ws::SocketSlots>,
    /// Bytes of unfinished WebSocket messages, over every socket.
    pub partial: Arc<wsframe::PartialBudget>,
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("could not load the JWT secret: {0}")]
    Secret(#[from] std::io::Error),
    #[error("could not open the store: {0}")]
    Store(#[from] store::StoreError),
    #[error("could not set up the bus: {0}")]
    Bus(#[from] cluster::BusError),
}

impl AppState {
    /// Builds the state on the embedded SQLite store and the in-process bus.
    pub async fn embedded(config: Config) -> Result<Self, StartError> {
        config.validate().map_err(StartError::Config)?;
        let keys = Keys::from_config(&config)?;
        let sync = match config.db_synchronous {
            config::DbSynchronous::Full => Synchronous::Full,
            config::DbSynchronous::Normal => Synchronous::Normal,
        };
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_with(&config.db_path(), config.db_pool_size, sync).await?);
        Self::on_store(config, keys, store)
    }

    /// Builds the state on a store with the bus the configuration names, and joins the cluster
    /// when that is Redis.
    pub fn on_store(config: Config, keys: Keys, store: Arc<dyn Store>) -> Result<Self, StartError> {
        match config.bus_choice().map_err(StartError::Config)? {
            config::BusChoice::Local => Ok(Self::with_parts(config, keys, store, None)),
            config::BusChoice::Redis(url) => {
                let bus = cluster::RedisBus::new(cluster::RedisBusConfig {
                    url,
                    prefix: config.bus_prefix.clone(),
                    node: config
                        .node_id
                        .clone()
                        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
                    heartbeat: config.bus_heartbeat(),
                    node_ttl: config.bus_heartbeat() * 5,
                    key: keys.bus_key(),
                })?;
                let shared: Arc<dyn Bus> = bus.clone();
                let state = Self::with_parts(config, keys, store, Some(shared));
                bus.start(
                    Arc::new(Instance::new(
                        Arc::clone(&state.hub),
                        Arc::downgrade(&state.service),
                    )),
                    Arc::clone(&state.service.metrics),
                    state.shutdown.clone(),
                    Duration::from_secs(state.config.shutdown_grace_secs),
                );
                Ok(state)
            }
        }
    }

    /// Builds the state on the configured store (`--store`): the embedded SQLite file, or a
    /// PostgreSQL database (connected and migrated here); the bus as [`AppState::on_store`].
    pub async fn from_config(config: Config) -> Result<Self, StartError> {
        let url = match &config.store {
            config::StoreKind::Sqlite => return Self::embedded(config).await,
            config::StoreKind::Postgres(url) => url.clone(),
        };
        config.validate().map_err(StartError::Config)?;
        let keys = Keys::from_config(&config)?;
        let store: Arc<dyn Store> = Arc::new(
            PostgresStore::connect_with(&url, config.db_pool_size, config.db_timeouts()).await?,
        );
        Self::on_store(config, keys, store)
    }

    /// Builds the state on any store, with the in-process bus unless one is given.
    pub fn with_parts(
        config: Config,
        keys: Keys,
        store: Arc<dyn Store>,
        bus: Option<Arc<dyn Bus>>,
    ) -> Self {
        let metrics = Arc::new(Metrics::new());
        let hub = Arc::new(Hub::new(
            Arc::clone(&metrics),
            Arc::clone(&store),
            HubConfig {
                reorder_window: Duration::from_millis(config.hub_reorder_window_ms),
                memory_budget: config.hub_memory_mb.saturating_mul(1 << 20),
                max_rooms_per_socket: config.max_rooms_per_socket,
                max_rooms_per_user: config.max_rooms_per_user,
                ..HubConfig::default()
            },
        ));
        let edge = edge::Edge::new(edge::EdgeConfig::from_config(&config), Arc::clone(&metrics));
        let sockets = Arc::new(ws::SocketSlots::new(
            config.max_sockets,
            config.max_sockets_per_user,
        ));
        let partial = Arc::new(wsframe::PartialBudget::new(
            config.ws_partial_budget_bytes,
            Duration::from_millis(config.ws_message_timeout_ms),
            Arc::clone(&metrics),
        ));
        let bus = bus.unwrap_or_else(|| Arc::new(LocalBus::new(hub.clone())));
        let service = Arc::new(Service {
            store,
            bus,
            cache: ReadCache::new(
                config.cache_entries,
                Duration::from_millis(config.cache_ttl_ms),
            ),
            limits: Limits::new(&config),
            presence: PresenceTracker::default(),
            commit_order: parking_lot::Mutex::new(0),
            attachments: parking_lot::RwLock::new(None),
            suspensions: suspend::Suspensions::default(),
            push_wake: Default::default(),
            docs: collab::Docs::new(collab::DocsConfig {
                cache_bytes: config.collab_cache_mb.saturating_mul(1 << 20),
                compact_updates: config.collab_compact_updates,
                compact_bytes: config.collab_compact_kib.saturating_mul(1 << 10),
            }),
            metrics,
        });
        hub.collab().set_gate(Arc::downgrade(&service) as _);
        AppState {
            typing: TypingTracker::new(config.typing_timeout()),
            config: Arc::new(config),
            keys: Arc::new(keys),
            service,
            hub,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            edge,
            sockets,
            partial,
        }
    }
}

/// The whole HTTP application, with attachments on the blob store the configuration names.
pub fn app(state: AppState) -> axum::Router {
    let blobs = default_blobs(&state);
    app_with(state, blobs)
}

/// The whole HTTP application with these attachments (their store and access rule).
///
/// Attachments are not part of [`AppState`]: every WebSocket task holds a copy of the state for
/// as long as it is open. The blob routes get them, and so does the service (in its own `Arc`),
/// which checks the attachment of every `message.send` against them.
pub fn app_with(state: AppState, blobs: Arc<blob::Blobs>) -> axum::Router {
    state.service.use_blobs(Arc::clone(&blobs));
    http::router(state, blobs)
}

/// Attachments as the configuration names them, with the default access rule
/// ([`blob::MessageAccess`]: the uploaders, and whoever may read a message that carries the
/// blob).
pub fn default_blobs(state: &AppState) -> Arc<blob::Blobs> {
    let blobs = blob::Blobs::from_config(&state.config, Arc::clone(&state.service.metrics));
    let access =
        blob::MessageAccess::new(Arc::clone(&blobs.store), Arc::clone(&state.service.store));
    let quota = state.config.blob_quota_mb_per_user.saturating_mul(1 << 20);
    Arc::new(
        blobs
            .with_access(Arc::new(access))
            .with_accounts(Arc::clone(&state.service.store), quota),
    )
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    state: AppState,
    addr: SocketAddr,
    serve: JoinHandle<()>,
    retention: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    trimmer: JoinHandle<()>,
    blobs: Arc<blob::Blobs>,
    blob_sweeper: JoinHandle<()>,
    /// The admin interface's address, when it is served (an admin token is set).
    admin_addr: Option<SocketAddr>,
    admin: Option<JoinHandle<()>>,
    backups: Option<JoinHandle<()>>,
    push: JoinHandle<()>,
}

impl Server {
    /// Opens the configured store and serves on `listener` until [`Server::shutdown`].
    pub async fn start(config: Config, listener: TcpListener) -> Result<Server, StartError> {
        let state = AppState::from_config(config).await?;
        Self::start_with(state, listener)
    }

    /// Serves a prepared state on `listener`.
    pub fn start_with(state: AppState, listener: TcpListener) -> Result<Server, StartError> {
        let blobs = default_blobs(&state);
        Self::start_with_blobs(state, blobs, listener)
    }

    /// Serves a prepared state and these attachments (e.g. with another access rule) on
    /// `listener`.
    pub fn start_with_blobs(
        state: AppState,
        blobs: Arc<blob::Blobs>,
        listener: TcpListener,
    ) -> Result<Server, StartError> {
        let addr = listener.local_addr()?;
        // Before the first request: a message records its push job only where a gateway could
        // send the push.
        let gateways = push::Gateways::from_config(&state.config.push)
            .map_err(|e| StartError::Config(e.to_string()))?;
        state.service.store.set_push_jobs(gateways.any());
        if !gateways.any() {
            tracing::info!("no push gateway configured: messages record no push job");
        }
        let router = app_with(state.clone(), Arc::clone(&blobs));
        let stop = state.shutdown.clone();
        let serve = tokio::spawn(edge::serve(listener, router, Arc::clone(&state.edge), stop));
        let retention = tokio::spawn(retention::run(state.clone()));
        let sweeper = tokio::spawn(ws::sweep(state.clone(), Duration::from_secs(1)));
        let trimmer = tokio::spawn(memory::run(state.clone(), Duration::from_secs(1)));
        let blob_sweeper = blob::start(Arc::clone(&blobs), state.shutdown.clone());
        let (admin_addr, admin) = match &state.config.admin_token {
            Some(_) => {
                let std = std::net::TcpListener::bind(state.config.admin_listen)?;
                std.set_nonblocking(true)?;
                let listener = TcpListener::from_std(std)?;
                let admin_addr = listener.local_addr()?;
                tracing::info!(addr = %admin_addr, "admin interface listening");
                (
                    Some(admin_addr),
                    Some(admin::serve(state.clone(), listener)),
                )
            }
            None => (None, None),
        };
        let backups = admin::schedule(state.clone());
        let push = push::start(
            Arc::clone(&state.service),
            gateways,
            &state.config.push,
            state.shutdown.clone(),
        );
        tracing::info!(%addr, "roam server listening");
        Ok(Server {
            state,
            addr,
            serve,
            retention,
            sweeper,
            trimmer,
            blobs,
            blob_sweeper,
            admin_addr,
            admin,
            backups,
            push,
        })
    }

    /// Where the admin interface listens (`None`: no admin token, no interface).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The attachments this server serves.
    pub fn blobs(&self) -> &Arc<blob::Blobs> {
        &self.blobs
    }

    /// A token for `user`, valid for a day.
    pub fn token_for(&self, user: &str) -> Result<String, error::ApiError> {
        self.state.keys.mint(user, 86_400)
    }

    /// Stops accepting, closes every socket with 1001, and waits (bounded) for them to finish.
    pub async fn shutdown(self) {
        tracing::info!("shutting down: draining connections");
        self.state.shutdown.cancel();
        for conn in self.state.hub.all() {
            conn.close_with(roam_proto::close::GOING_AWAY);
        }
        self.state.tasks.close();
        let grace = Duration::from_secs(self.state.config.shutdown_grace_secs);
        if tokio::time::timeout(grace, self.state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some sockets did not close within the grace period");
        }
        self.retention.abort();
        self.sweeper.abort();
        self.trimmer.abort();
        self.blob_sweeper.abort();
        // It stops between two batches; a batch cut short is taken again when its lease ends.
        if tokio::time::timeout(grace, self.push).await.is_err() {
            tracing::warn!("the push worker did not stop within the grace period");
        }
        if let Some(b) = self.backups {
            b.abort();
        }
        if let Some(a) = self.admin {
            // Cancelled with the rest: it finishes the request in flight (a backup) first.
            if tokio::time::timeout(grace, a).await.is_err() {
                tracing::warn!("the admin interface did not finish within the grace period");
            }
        }
        if tokio::time::timeout(grace, self.serve).await.is_err() {
            tracing::warn!("HTTP connections did not finish within the grace period");
        }
        tracing::info!("shutdown complete");
    }
}
