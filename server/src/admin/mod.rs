//! The operator's interface: a listener of its own (`--admin-listen`, loopback by default),
//! served only when an admin token is set, and the `roam-server admin …` / `restore` commands.
//!
//! Today it makes and restores backups of the embedded store:
//!
//! - **Backup** (`POST /admin/v1/backups`, `roam-server admin backup`, or every
//!   `--backup-interval-mins`): a directory holding `roam.db`, a consistent copy of the live
//!   database made while writes go on (`VACUUM INTO`, see `store/sqlite/backup.rs`), and
//!   `blobs/`, the attachments of a file blob store (hard links where the file system allows:
//!   blobs are named by their hash and never change). The directory is written under a
//!   `.partial` name and renamed when whole. Scheduled backups keep the newest
//!   `--backup-keep`.
//! - **Restore** (`roam-server restore --from DIR`, with the server stopped): the copy must pass
//!   SQLite's integrity check and carry a schema this server knows, and no server may hold the
//!   data directory's database; the current database is kept beside it as
//!   `roam.db.before-restore-<time>`, then the copy and its blobs are put in place.
//!
//! Users and rooms (`users.rs`, `export.rs`, routes and the commands calling them in
//! `routes.rs`; see docs/admin.md): list and show users, export everything a user has as one
//! archive, erase a user, suspend and unsuspend one on every instance, and list, show, delete
//! and transfer rooms.
//!
//! Every action is logged and counted (`roam_admin_actions_total`). A PostgreSQL deployment is
//! backed up with PostgreSQL's own tools (README, "Operate it").

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

mod export;
mod routes;
pub mod users;

pub use export::{export, ExportRequest, Exported};
pub use routes::{call, run};
pub use users::{EraseRequest, Erased, OwnedRooms, RoomDetails, UserDetails, UserPage};

use crate::config::{BlobStoreKind, Config, StoreKind};
use crate::store::sqlite::backup::check_copy;
use crate::store::sqlite::take_lock;
use crate::AppState;

/// The database file in a data directory and in a backup.
const DB_FILE: &str = "roam.db";
/// The attachments of a file blob store, under the data directory and in a backup.
const BLOBS_DIR: &str = "blobs";
/// What of a file blob store a backup holds: finished blobs and who uploaded them (uploads in
/// progress are not kept).
const BLOB_PARTS: [&str; 2] = ["blobs", "owners"];

/// An operator action that failed; the text says why.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request or the command is wrong (a path that exists, a store that cannot do it).
    #[error("{0}")]
    Refused(String),
    /// The disk or the database failed.
    #[error("{0}")]
    Failed(String),
    /// The user or room named does not exist.
    #[error("{0}")]
    NotFound(String),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match self {
            AdminError::Refused(_) => StatusCode::CONFLICT,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

fn failed(what: impl std::fmt::Display) -> AdminError {
    AdminError::Failed(what.to_string())
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> AdminError + '_ {
    move |e| AdminError::Failed(format!("{}: {e}", path.display()))
}

/// A backup that was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// The backup's directory.
    pub path: PathBuf,
    /// The size of its database copy.
    pub db_bytes: u64,
    /// The copy's schema version.
    pub schema_version: u32,
    /// Attachment files it holds.
    pub blob_files: u64,
    /// How long it took.
    pub took_ms: u64,
}

/// `POST /admin/v1/backups`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// The directory to write (must not exist); default: a new one in `--backup-dir`.
    #[serde(default)]
    pub to: Option<PathBuf>,
}

/// A time stamp that sorts: `20261207T041500123Z`.
fn stamp(at: SystemTime) -> String {
    let ms = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis()) as i64;
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Name prefix of the backups this server makes in `--backup-dir`.
const BACKUP_PREFIX: &str = "roam-backup-";

/// Writes a backup of the running store (and of a file blob store) to `to`, or to a new
/// directory in `--backup-dir`.
pub async fn backup(state: &AppState, to: Option<PathBuf>) -> Result<Backup, AdminError> {
    let started = std::time::Instant::now();
    let config = &state.config;
    if config.store != StoreKind::Sqlite {
        count(state, "backup_refused");
        return Err(AdminError::Refused(
            "the PostgreSQL store is backed up with PostgreSQL's tools (pg_dump, or base backups \
             with WAL archiving): see README, \"Operate it\""
                .into(),
        ));
    }
    let dir = match to {
        Some(dir) => dir,
        None => config
            .backup_dir()
            .join(format!("{BACKUP_PREFIX}{}", stamp(SystemTime::now()))),
    };
    if dir.exists() {
        count(state, "backup_refused");
        return Err(AdminError::Refused(format!(
            "{} exists already: a backup goes to a new directory",
            dir.display()
        )));
    }
    let partial = dir.with_extension("partial");
    let result = async {
        remove_all(&partial).await?;
        tokio::fs::create_dir_all(&partial)
            .await
            .map_err(io_at(&partial))?;
        let report = state
            .service
            .store
            .backup(&partial.join(DB_FILE))
            .await
            .map_err(failed)?;
        let blob_files = if config.blob_store == BlobStoreKind::Fs {
            let from = config.data_dir.join(BLOBS_DIR);
            let to = partial.join(BLOBS_DIR);
            tokio::task::spawn_blocking(move || copy_blobs(&from, &to))
                .await
                .map_err(failed)??
        } else {
            0
        };
        sync_dir(&partial).await?;
        tokio::fs::rename(&partial, &dir)
            .await
            .map_err(io_at(&dir))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent).await?;
        }
        Ok(Backup {
            path: dir.clone(),
            db_bytes: report.bytes,
            schema_version: report.schema_version,
            blob_files,
            took_ms: started.elapsed().as_millis() as u64,
        })
    }
    .await;
    match &result {
        Ok(b) => {
            count(state, "backup");
            tracing::info!(path = %b.path.display(), db_bytes = b.db_bytes, blob_files = b.blob_files, took_ms = b.took_ms, "admin: backup written");
        }
        Err(e) => {
            count(state, "backup_failed");
            tracing::error!(error = %e, path = %dir.display(), "admin: backup failed");
            let _ = remove_all(&partial).await;
        }
    }
    result
}

fn count(state: &AppState, action: &'static str) {
    state.service.metrics.admin_action(action);
}

async fn remove_all(path: &Path) -> Result<(), AdminError> {
    match tokio::fs::remove_dir_all(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(path)(e)),
    }
}

async fn sync_dir(dir: &Path) -> Result<(), AdminError> {
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&d).and_then(|f| f.sync_all()))
        .await
        .map_err(failed)?
        .map_err(io_at(dir))
}

/// Copies a file blob store's finished blobs and owner markers from `from` to `to`: hard links
/// where possible (blobs never change once written), else copies, synced. Returns the files.
fn copy_blobs(from: &Path, to: &Path) -> Result<u64, AdminError> {
    let mut files = 0;
    for part in BLOB_PARTS {
        files += copy_tree(&from.join(part), &to.join(part))?;
    }
    Ok(files)
}

fn copy_tree(from: &Path, to: &Path) -> Result<u64, AdminError> {
    let entries = match std::fs::read_dir(from) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_at(from)(e)),
    };
    std::fs::create_dir_all(to).map_err(io_at(to))?;
    let mut files = 0;
    for entry in entries {
        let entry = entry.map_err(io_at(from))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().map_err(io_at(&src))?;
        if kind.is_dir() {
            files += copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst).map_err(io_at(&src))?;
                std::fs::File::open(&dst)
                    .and_then(|f| f.sync_all())
                    .map_err(io_at(&dst))?;
            }
            files += 1;
        }
    }
    std::fs::File::open(to)
        .and_then(|d| d.sync_all())
        .map_err(io_at(to))?;
    Ok(files)
}

/// What a restore put in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restored {
    /// The database as it was before, kept aside (`None`: there was none).
    pub previous: Option<PathBuf>,
    pub schema_version: u32,
    pub blob_files: u64,
}

/// Puts the backup in `from` in place of `config`'s database (and file blob store), with the
/// server stopped: checked first, nothing changed when a check fails.
pub fn restore(config: &Config, from: &Path) -> Result<Restored, AdminError> {
    if config.store != StoreKind::Sqlite {
        return Err(AdminError::Refused(
            "the PostgreSQL store is restored with PostgreSQL's tools".into(),
        ));
    }
    let copy = from.join(DB_FILE);
    if !copy.is_file() {
        return Err(AdminError::Refused(format!(
            "{} holds no {DB_FILE}: not a Roam backup",
            from.display()
        )));
    }
    let report = check_copy(&copy).map_err(|e| AdminError::Refused(e.to_string()))?;
    let db = config.db_path();
    std::fs::create_dir_all(&config.data_dir).map_err(io_at(&config.data_dir))?;
    // Held until the restore is done: no server opens the database meanwhile.
    let _restoring = take_lock(&db, true).map_err(failed)?.ok_or_else(|| {
        AdminError::Refused(format!(
            "{} is in use by a running server: stop it before restoring",
            db.display()
        ))
    })?;

    // The copy goes in under a temporary name, synced, before anything of the current
    // database moves.
    let incoming = db.with_extension("restoring");
    std::fs::copy(&copy, &incoming).map_err(io_at(&incoming))?;
    std::fs::File::open(&incoming)
        .and_then(|f| f.sync_all())
        .map_err(io_at(&incoming))?;
    let previous = if db.exists() {
        let aside = db.with_extension(format!("db.before-restore-{}", stamp(SystemTime::now())));
        std::fs::rename(&db, &aside).map_err(io_at(&db))?;
        for suffix in ["-wal", "-shm"] {
            let side = PathBuf::from(format!("{}{suffix}", db.display()));
            if side.exists() {
                let to = PathBuf::from(format!("{}{suffix}", aside.display()));
                std::fs::rename(&side, &to).map_err(io_at(&side))?;
            }
        }
        Some(aside)
    } else {
        None
    };
    std::fs::rename(&incoming, &db).map_err(io_at(&db))?;
    std::fs::File::open(&config.data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(&config.data_dir))?;
    let blob_files = if config.blob_store == BlobStoreKind::Fs {
        copy_blobs(&from.join(BLOBS_DIR), &config.data_dir.join(BLOBS_DIR))?
    } else {
        0
    };
    tracing::info!(from = %from.display(), schema_version = report.schema_version, blob_files, "admin: backup restored");
    Ok(Restored {
        previous,
        schema_version: report.schema_version,
        blob_files,
    })
}

/// Deletes the oldest of this server's backups in `dir` beyond the newest `keep`.
pub async fn prune(dir: &Path, keep: u32) -> Result<Vec<PathBuf>, AdminError> {
    let found = list(dir).await?;
    let excess = found.len().saturating_sub(keep as usize);
    let old: Vec<PathBuf> = found.iter().take(excess).map(|n| dir.join(n)).collect();
    for path in &old {
        remove_all(path).await?;
    }
    Ok(old)
}

/// The names of this server's backups in `dir`, oldest first (names sort by time).
async fn list(dir: &Path) -> Result<Vec<String>, AdminError> {
    let mut names = Vec::new();
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(io_at(dir)(e)),
    };
    while let Some(entry) = entries.next_entry().await.map_err(io_at(dir))? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(BACKUP_PREFIX) && !name.ends_with(".partial") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Scheduled backups every `--backup-interval-mins`, each followed by pruning to
/// `--backup-keep`, until shutdown (none when the interval is 0).
pub fn schedule(state: AppState) -> Option<JoinHandle<()>> {
    let mins = state.config.backup_interval_mins;
    if mins == 0 {
        return None;
    }
    Some(tokio::spawn(async move {
        let every = Duration::from_secs(mins.saturating_mul(60));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if backup(&state, None).await.is_ok() {
                match prune(&state.config.backup_dir(), state.config.backup_keep).await {
                    Ok(gone) if !gone.is_empty() => {
                        tracing::info!(deleted = gone.len(), "admin: old backups deleted");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "admin: pruning backups failed"),
                }
            }
        }
    }))
}

/// The admin routes, behind the admin token.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/admin/v1/backups", post(create_backup).get(list_backups))
        .merge(routes::router(state.clone()))
        .with_state(state)
}

/// The bearer token must be the admin token (compared in constant time); `false` is counted.
fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let expected = state.config.admin_token.as_ref().map(|t| t.expose());
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = matches!((expected, given), (Some(e), Some(g)) if constant_time_eq(e.as_bytes(), g.as_bytes()));
    if !ok {
        count(state, "unauthorized");
    }
    ok
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({ "error": "the admin token is missing or wrong" })),
    )
        .into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn create_backup(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Option<Json<BackupRequest>>,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let to = body.and_then(|Json(b)| b.to);
    match backup(&state, to).await {
        Ok(b) => (StatusCode::CREATED, Json(b)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_backups(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    match list(&state.config.backup_dir()).await {
        Ok(names) => Json(serde_json::json!({
            "dir": state.config.backup_dir(),
            "backups": names,
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Serves the admin routes on `listener` until shutdown.
pub fn serve(state: AppState, listener: TcpListener) -> JoinHandle<()> {
    let stop = state.shutdown.clone();
    let app = router(state);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin listener failed");
        }
    })
}

/// `roam-server admin backup`: asks the running server's admin interface for a backup.
pub async fn request_backup(config: &Config, to: Option<PathBuf>) -> Result<Backup, AdminError> {
    let token = config.admin_token.as_ref().ok_or_else(|| {
        AdminError::Refused("set the admin token (ROAM_ADMIN_TOKEN or --admin-token)".into())
    })?;
    let url = format!("http://{}/admin/v1/backups", config.admin_listen);
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token.expose())
        .json(&BackupRequest { to })
        .timeout(Duration::from_secs(3600))
        .send()
        .await
        .map_err(|e| AdminError::Failed(format!("{url}: {e}")))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|e| AdminError::Failed(format!("{url}: {e}")))?;
    if !status.is_success() {
        let why = body["error"].as_str().unwrap_or("no reason given");
        return Err(AdminError::Refused(format!("{status}: {why}")));
    }
    serde_json::from_value(body).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_sort_and_read_as_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_765_080_900_123);
        assert_eq!(stamp(t), "20251207T041500123Z");
        assert_eq!(stamp(UNIX_EPOCH), "19700101T000000000Z");
        assert!(stamp(t) < stamp(t + Duration::from_millis(1)));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
