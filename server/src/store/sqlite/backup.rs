//! A consistent copy of a live database: `VACUUM INTO` on a read-only connection of its own.
//!
//! In WAL mode the copy reads one snapshot (every write committed before it began, nothing
//! after) and never blocks the writer: writes go on into the WAL meanwhile, which the
//! checkpointer copies back once the copy's snapshot is released. The copy is written under a
//! `.partial` name, synced, then renamed into place, so a copy that exists is whole.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::store::{BackupReport, StoreError, StoreResult};

/// How long the copy waits for a lock (it takes none that a write holds long).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes the database at `db` to `to`, which must not exist.
pub(super) fn vacuum_into(db: &Path, to: &Path) -> StoreResult<BackupReport> {
    if to.exists() {
        return Err(StoreError::Backend(format!(
            "the backup file {} exists already",
            to.display()
        )));
    }
    let partial = to.with_extension("partial");
    // A partial file is what an interrupted copy left: never a backup.
    match std::fs::remove_file(&partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&partial, e)),
    }
    let partial_name = partial
        .to_str()
        .ok_or_else(|| StoreError::Backend(format!("{} is not UTF-8", partial.display())))?;
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute("VACUUM INTO ?1", [partial_name])?;
    drop(conn);
    let copy = Connection::open_with_flags(&partial, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let schema_version: u32 = copy.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    drop(copy);
    let file = File::open(&partial).map_err(|e| io(&partial, e))?;
    file.sync_all().map_err(|e| io(&partial, e))?;
    let bytes = file.metadata().map_err(|e| io(&partial, e))?.len();
    drop(file);
    std::fs::rename(&partial, to).map_err(|e| io(to, e))?;
    if let Some(dir) = to.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, e))?;
    }
    Ok(BackupReport {
        bytes,
        schema_version,
    })
}

/// What a restore checks before a server starts on a copy: SQLite's own integrity check, and a
/// schema this server knows (equal or older: it migrates an older one when it opens it).
pub fn check_copy(path: &Path) -> StoreResult<BackupReport> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let verdict: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        return Err(StoreError::Backend(format!(
            "{} fails SQLite's integrity check: {verdict}",
            path.display()
        )));
    }
    let schema_version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = super::schema::MIGRATIONS.len();
    if schema_version as usize > known {
        return Err(StoreError::Backend(format!(
            "{} has schema version {schema_version}; this server knows up to {known}",
            path.display()
        )));
    }
    if schema_version == 0 {
        return Err(StoreError::Backend(format!(
            "{} is not a Roam database (schema version 0)",
            path.display()
        )));
    }
    let bytes = std::fs::metadata(path).map_err(|e| io(path, e))?.len();
    Ok(BackupReport {
        bytes,
        schema_version,
    })
}

fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("{}: {e}", path.display()))
}
