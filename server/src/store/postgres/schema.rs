//! Upgrading the schema.
//!
//! Migration `n` (1-based) is the n-th entry of [`MIGRATIONS`], the embedded
//! `server/migrations/postgres/NNNN_*.sql` files; `roam_migrations` records the versions applied.
//! A server applies every missing migration in ONE transaction that first takes a transaction
//! advisory lock named after the schema: servers starting together queue on that lock, and the
//! ones after the first find nothing left to do. A failure rolls every step back.

use super::conn::{backend, Conn};
use crate::store::{StoreError, StoreResult};

/// The migrations, in order. Never edit a shipped entry; append a new file.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/postgres/0001_init.sql"),
    include_str!("../../../migrations/postgres/0002_attachments.sql"),
    include_str!("../../../migrations/postgres/0003_blob_accounts.sql"),
    include_str!("../../../migrations/postgres/0004_suspensions.sql"),
    include_str!("../../../migrations/postgres/0005_push.sql"),
    include_str!("../../../migrations/postgres/0006_collab.sql"),
];

const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS roam_migrations (\
     version integer NOT NULL PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())";

/// Applies the missing migrations; returns the resulting schema version.
pub(super) async fn migrate(c: &Conn) -> StoreResult<usize> {
    c.begin().await?;
    match migrate_in_tx(c).await {
        Ok(version) => {
            c.commit().await?;
            Ok(version)
        }
        Err(e) => {
            c.rollback().await;
            Err(e)
        }
    }
}

async fn migrate_in_tx(c: &Conn) -> StoreResult<usize> {
    let schema = c
        .query_text("SELECT current_schema()", &[])
        .await
        .map_err(|e| backend(&e))?;
    let schema: Option<String> = schema.first().and_then(|r| r.try_get(0).ok()).flatten();
    let Some(schema) = schema else {
        return Err(StoreError::Backend(
            "no schema of the search_path exists in this database (create it first)".into(),
        ));
    };
    c.query_text(
        "SELECT pg_advisory_xact_lock(hashtext('roam.migrate.' || $1::text))",
        &[&schema],
    )
    .await
    .map_err(|e| backend(&e))?;
    c.batch(CREATE_LEDGER).await.map_err(|e| backend(&e))?;
    let rows = c
        .query_text(
            "SELECT coalesce(max(version), 0)::bigint FROM roam_migrations",
            &[],
        )
        .await
        .map_err(|e| backend(&e))?;
    let current: i64 = rows
        .first()
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(|e| backend(&e))?
        .unwrap_or(0);
    let target = MIGRATIONS.len();
    let current = usize::try_from(current)
        .ok()
        .filter(|v| *v <= target)
        .ok_or_else(|| {
            StoreError::Backend(format!(
                "database schema version {current} is not one this server knows \
                 (it knows 0 to {target})"
            ))
        })?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let version =
            i32::try_from(i + 1).map_err(|_| StoreError::Backend("too many migrations".into()))?;
        c.batch(sql).await.map_err(|e| backend(&e))?;
        c.query_text(
            "INSERT INTO roam_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(|e| backend(&e))?;
        tracing::info!(version, %schema, "store: PostgreSQL schema migrated");
    }
    Ok(target)
}
