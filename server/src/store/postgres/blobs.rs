//! The attachment accounts (`migrations/postgres/0003_blob_accounts.sql`): per-user quota
//! charges and the touch/doom stamps that keep retention from deleting a blob a send is
//! naming. A charge runs in a transaction holding an advisory lock on its owner, so charges of
//! one owner from any node are checked one after the other; the other changes are single
//! statements on one row.

use super::conn::Conn;
use super::rows::col;
use crate::store::{blob_item, quota_allows, Charge, StoreResult};

const LOCK_OWNER: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 19))";
const CHARGED: &str = "SELECT 1 FROM blob_charges WHERE owner = $1 AND item = $2";
const USED: &str = "SELECT coalesce(sum(bytes), 0)::bigint FROM blob_charges WHERE owner = $1";
const INSERT_CHARGE: &str = "INSERT INTO blob_charges (owner, item, bytes) VALUES ($1, $2, $3)";
const RELEASE: &str = "DELETE FROM blob_charges WHERE item = $1";
/// A touch lands unless a doom newer than `$3` stands; it lifts an older one (left by a
/// retention pass that stopped half-way).
const TOUCH: &str = "INSERT INTO blob_holds (blob, touched_at, doomed_at) VALUES ($1, $2, NULL) \
     ON CONFLICT (blob) DO UPDATE SET \
         touched_at = greatest(blob_holds.touched_at, excluded.touched_at), doomed_at = NULL \
     WHERE blob_holds.doomed_at IS NULL OR blob_holds.doomed_at <= $3::bigint";
/// A doom lands only on a blob no live message carries, untouched since `$3`.
const DOOM: &str = "INSERT INTO blob_holds (blob, touched_at, doomed_at) \
     SELECT $1::text, 0, $2::bigint WHERE NOT EXISTS (SELECT 1 FROM message_blobs b \
         JOIN rooms r ON r.name = b.room AND r.deleted_at IS NULL WHERE b.blob = $1::text) \
     ON CONFLICT (blob) DO UPDATE SET doomed_at = excluded.doomed_at \
     WHERE blob_holds.touched_at < $3::bigint";
const FORGET: &str = "DELETE FROM blob_holds WHERE blob = $1";

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `Store::charge_blob_bytes`.
pub(super) async fn charge(
    c: &Conn,
    owner: &str,
    item: &str,
    bytes: u64,
    limit: u64,
) -> StoreResult<Charge> {
    c.begin().await?;
    let result = charge_in(c, owner, item, bytes, limit).await;
    match result {
        Ok(Charge::Charged) => {
            c.commit().await?;
            Ok(Charge::Charged)
        }
        other => {
            c.rollback().await;
            other
        }
    }
}

async fn charge_in(
    c: &Conn,
    owner: &str,
    item: &str,
    bytes: u64,
    limit: u64,
) -> StoreResult<Charge> {
    c.query(LOCK_OWNER, &[&owner]).await?;
    if c.query_opt(CHARGED, &[&owner, &item]).await?.is_some() {
        return Ok(Charge::Charged);
    }
    let used = used(c, owner).await?;
    if !quota_allows(used, bytes, limit) {
        return Ok(Charge::Refused { used });
    }
    c.execute(INSERT_CHARGE, &[&owner, &item, &int(bytes)])
        .await?;
    Ok(Charge::Charged)
}

/// `Store::blob_bytes_used`.
pub(super) async fn used(c: &Conn, owner: &str) -> StoreResult<u64> {
    let row = c.query_one(USED, &[&owner]).await?;
    let sum: i64 = col(&row, 0)?;
    Ok(u64::try_from(sum).unwrap_or(0))
}

/// `Store::release_blob_bytes`.
pub(super) async fn release(c: &Conn, item: &str) -> StoreResult<()> {
    c.execute(RELEASE, &[&item]).await.map(drop)
}

/// `Store::touch_blob`.
pub(super) async fn touch(c: &Conn, blob: &str, now: i64, doomed_after: i64) -> StoreResult<bool> {
    Ok(c.execute(TOUCH, &[&blob, &now, &doomed_after]).await? > 0)
}

/// `Store::doom_blob`.
pub(super) async fn doom(
    c: &Conn,
    blob: &str,
    now: i64,
    untouched_since: i64,
) -> StoreResult<bool> {
    Ok(c.execute(DOOM, &[&blob, &now, &untouched_since]).await? > 0)
}

/// `Store::forget_blob`.
pub(super) async fn forget(c: &Conn, blob: &str) -> StoreResult<()> {
    c.execute(FORGET, &[&blob]).await?;
    c.execute(RELEASE, &[&blob_item("blob", blob)])
        .await
        .map(drop)
}
