//! The attachment accounts (`migrations/0008_blob_accounts.sql`): per-user quota charges and
//! the touch/doom stamps that keep retention from deleting a blob a send is naming. Every
//! change runs on the writer thread (one job, one savepoint), so a charge's read of the usage
//! and its insert cannot interleave with another charge.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::rows::int;
use crate::store::{blob_item, quota_allows, Charge, StoreResult};

/// A change to the accounts, run by the writer.
#[derive(Debug)]
pub(super) enum Op {
    Charge {
        owner: String,
        item: String,
        bytes: u64,
        limit: u64,
    },
    Release {
        item: String,
    },
    Touch {
        blob: String,
        now: i64,
        doomed_after: i64,
    },
    Doom {
        blob: String,
        now: i64,
        untouched_since: i64,
    },
    Forget {
        blob: String,
    },
}

/// What an [`Op`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Charge(Charge),
    /// Whether the touch, doom or removal changed a row.
    Changed(bool),
}

const CHARGED: &str = "SELECT bytes FROM blob_charges WHERE owner = ?1 AND item = ?2";
const USED: &str = "SELECT coalesce(sum(bytes), 0) FROM blob_charges WHERE owner = ?1";
const INSERT_CHARGE: &str = "INSERT INTO blob_charges (owner, item, bytes) VALUES (?1, ?2, ?3)";
const RELEASE: &str = "DELETE FROM blob_charges WHERE item = ?1";
/// A touch lands unless a doom newer than `?3` stands; it lifts an older one (left by a
/// retention pass that stopped half-way).
const TOUCH: &str = "INSERT INTO blob_holds (blob, touched_at, doomed_at) VALUES (?1, ?2, NULL) \
     ON CONFLICT (blob) DO UPDATE SET touched_at = max(touched_at, excluded.touched_at), \
     doomed_at = NULL WHERE doomed_at IS NULL OR doomed_at <= ?3";
/// A doom lands only on a blob no live message carries, untouched since `?3`.
const DOOM: &str = "INSERT INTO blob_holds (blob, touched_at, doomed_at) \
     SELECT ?1, 0, ?2 WHERE NOT EXISTS (SELECT 1 FROM message_blobs b \
         JOIN rooms r ON r.name = b.room AND r.deleted_at IS NULL WHERE b.blob = ?1) \
     ON CONFLICT (blob) DO UPDATE SET doomed_at = excluded.doomed_at WHERE touched_at < ?3";
const FORGET: &str = "DELETE FROM blob_holds WHERE blob = ?1";

pub(super) fn apply(tx: &Transaction<'_>, op: &Op) -> StoreResult<Answer> {
    Ok(match op {
        Op::Charge {
            owner,
            item,
            bytes,
            limit,
        } => {
            let already: Option<i64> = tx
                .prepare_cached(CHARGED)?
                .query_row(params![owner, item], |r| r.get(0))
                .optional()?;
            if already.is_some() {
                return Ok(Answer::Charge(Charge::Charged));
            }
            let used = used(tx, owner)?;
            if !quota_allows(used, *bytes, *limit) {
                return Ok(Answer::Charge(Charge::Refused { used }));
            }
            tx.prepare_cached(INSERT_CHARGE)?
                .execute(params![owner, item, int(*bytes)])?;
            Answer::Charge(Charge::Charged)
        }
        Op::Release { item } => Answer::Changed(tx.prepare_cached(RELEASE)?.execute([item])? > 0),
        Op::Touch {
            blob,
            now,
            doomed_after,
        } => Answer::Changed(
            tx.prepare_cached(TOUCH)?
                .execute(params![blob, now, doomed_after])?
                > 0,
        ),
        Op::Doom {
            blob,
            now,
            untouched_since,
        } => Answer::Changed(
            tx.prepare_cached(DOOM)?
                .execute(params![blob, now, untouched_since])?
                > 0,
        ),
        Op::Forget { blob } => {
            let holds = tx.prepare_cached(FORGET)?.execute([blob])?;
            let charges = tx
                .prepare_cached(RELEASE)?
                .execute([blob_item("blob", blob)])?;
            Answer::Changed(holds + charges > 0)
        }
    })
}

/// `Store::blob_bytes_used`.
pub(super) fn used(conn: &Connection, owner: &str) -> StoreResult<u64> {
    let sum: i64 = conn
        .prepare_cached(USED)?
        .query_row([owner], |r| r.get(0))?;
    Ok(u64::try_from(sum).unwrap_or(0))
}
