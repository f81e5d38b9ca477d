//! Attachments on the device: the media directory and its cache.
//!
//! Every file the client holds lives in one directory (`MediaConfig::dir`, by default
//! `<db_path>-media`), named by the lowercase hex SHA-256 of its bytes, with an index in the
//! account's store (the `media` table: path, size, last use). Both the files this device sends
//! and the ones it downloads are there, so a file is held once however many messages carry it.
//!
//! - **Taking a file in** (`crate::files::take_in`): the app's file is hard-linked into the directory (copied
//!   when linking fails, e.g. across file systems), then hashed in chunks from that link, then
//!   renamed to its hash. The app may delete its own copy as soon as `send_attachment` returns.
//! - **Downloading** ([`fetch`]): into `<sha256>.part`, resuming with a `Range` from what the
//!   partial file holds (a download cut off by a crash or a lost network goes on from there),
//!   then hashed in chunks and renamed. One download per file at a time; a second caller waits
//!   for the first and gets its result.
//! - **Bounds**: the cache holds at most `MediaConfig::max_bytes`; past it the least recently used
//!   files are deleted ([`trim_in`]), except the sources of uploads not finished yet. A download
//!   larger than `MediaConfig::max_file_bytes` is refused. The index survives restarts, so held
//!   files are readable offline.
//! - **Deletion**: when the store learns that a message is deleted (the server's event or the
//!   answer to this device's delete), its file leaves the cache ([`forget_message_in`]); so does
//!   the file of a send that is cancelled or discarded. Another message carrying the same file
//!   downloads it again when asked.
//!
//! Files are deleted after the transaction that removes their row commits (`Effects::remove_files`).
//! Nothing here holds a whole file in memory: downloads are written as their chunks arrive, and
//! hashes read 1 MiB at a time.

use std::path::{Path, PathBuf};

use rusqlite::Transaction;
use tokio::io::AsyncWriteExt;

use crate::context::{Context, Effects};
use crate::db::{reads, writes};
use crate::error::{Error, Result};
use crate::files::{hash_file, remove_file};
use crate::metrics::Metrics;
use crate::model::now_ms;

/// Deletes least recently used files until the cache is within its cap, in the caller's
/// transaction: never `keep`, nor the source of an upload not finished.
pub(crate) fn trim_in(
    tx: &Transaction<'_>,
    fx: &mut Effects,
    max_bytes: u64,
    keep: &str,
) -> Result<()> {
    let mut total = reads::media_bytes(tx)?;
    if total <= max_bytes {
        return Ok(());
    }
    for (sha, _, size) in reads::media_evictable(tx, keep)? {
        if total <= max_bytes {
            break;
        }
        if let Some(path) = writes::delete_media(tx, &sha)? {
            tracing::debug!(sha256 = %sha, size, "evicted from the media cache");
            fx.remove_files.push(path);
        }
        total = total.saturating_sub(size);
    }
    Ok(())
}

/// The file of message `local_id` leaves the cache (the message is deleted, or its send is
/// discarded), unless an upload still needs it. In the caller's transaction.
pub(crate) fn forget_message_in(
    tx: &Transaction<'_>,
    fx: &mut Effects,
    local_id: &str,
) -> Result<()> {
    let Some(sha) = reads::attachment_blob(tx, local_id)? else {
        return Ok(());
    };
    if reads::upload_of_blob(tx, &sha, local_id)? {
        return Ok(());
    }
    if let Some(path) = writes::delete_media(tx, &sha)? {
        tracing::debug!(sha256 = %sha, "a deleted message's file left the media cache");
        fx.remove_files.push(path);
    }
    Ok(())
}

/// At open: the media directory exists, and the index names files in it (when the directory
/// moved since the last open, its paths are rewritten).
pub(crate) fn open(ctx: &Context) -> Result<()> {
    let dir = ctx.media.dir.display().to_string();
    let before = ctx.db.read(|c| reads::kv(c, "media_dir"))?;
    if before.as_deref() != Some(dir.as_str()) {
        ctx.write(|tx, _| {
            if let Some(old) = &before {
                let n = writes::move_media(tx, old, &dir)?;
                tracing::info!(moved = n, from = %old, to = %dir, "the media directory moved");
            }
            writes::set_kv(tx, "media_dir", &dir)
        })?;
    }
    Ok(())
}

/// The length of a file, if it exists.
async fn file_len(path: &Path) -> Option<u64> {
    tokio::fs::metadata(path).await.ok().map(|m| m.len())
}

/// The local file of blob `sha256` of `size` bytes: from the cache (marked used), or downloaded
/// into it (resuming a partial download). See the module docs.
#[tracing::instrument(level = "debug", skip(ctx), fields(sha256 = sha256))]
pub(crate) async fn fetch(ctx: &Context, sha256: &str, size: u64) -> Result<PathBuf> {
    let media = &ctx.media;
    let flight = media.flight(sha256);
    let out = {
        let _one = flight.lock().await;
        fetch_alone(ctx, sha256, size).await
    };
    drop(flight);
    media.land();
    out
}

async fn fetch_alone(ctx: &Context, sha256: &str, size: u64) -> Result<PathBuf> {
    let media = &ctx.media;
    if let Some((path, stored)) = ctx.db.read(|c| reads::media_file(c, sha256))? {
        let path = PathBuf::from(path);
        if file_len(&path).await == Some(stored) {
            ctx.write(|tx, _| writes::touch_media(tx, sha256, now_ms()))?;
            return Ok(path);
        }
        tracing::warn!(file = %path.display(), "a cached file is missing or damaged; fetching it again");
        ctx.write(|tx, _| writes::delete_media(tx, sha256).map(|_| ()))?;
    }
    if size > media.config.max_file_bytes {
        return Err(Error::invalid(format!(
            "the file has {size} bytes, more than the media cache takes ({} bytes per file)",
            media.config.max_file_bytes
        )));
    }
    tokio::fs::create_dir_all(&media.dir)
        .await
        .map_err(|e| Error::file(&media.dir, e))?;
    let part = media.part_of(sha256);
    download(ctx, sha256, size, &part).await?;
    let check = part.clone();
    let (hash, len) = tokio::task::spawn_blocking(move || hash_file(&check))
        .await
        .map_err(|e| Error::state(format!("the hashing task failed: {e}")))??;
    if hash != sha256 || len != size {
        remove_file(&part);
        return Err(Error::Network(format!(
            "the downloaded file does not match its hash ({len} bytes, sha256 {hash})"
        )));
    }
    let path = media.path_of(sha256);
    tokio::fs::rename(&part, &path)
        .await
        .map_err(|e| Error::file(&path, e))?;
    let max = media.config.max_bytes;
    let shown = path.display().to_string();
    ctx.write(|tx, fx| {
        writes::put_media(tx, sha256, &shown, size, now_ms())?;
        trim_in(tx, fx, max, sha256)
    })?;
    tracing::debug!(size, "downloaded into the media cache");
    Ok(path)
}

/// Brings `part` to `size` bytes of the blob, from what it holds.
async fn download(ctx: &Context, sha256: &str, size: u64, part: &Path) -> Result<()> {
    let mut have = file_len(part).await.unwrap_or(0);
    if have > size {
        remove_file(part);
        have = 0;
    }
    if have == size {
        if size == 0 {
            tokio::fs::write(part, b"")
                .await
                .map_err(|e| Error::file(part, e))?;
        }
        return Ok(());
    }
    let mut resp = ctx.http.download(sha256, have).await?;
    let append = match resp.status() {
        reqwest::StatusCode::PARTIAL_CONTENT => true,
        reqwest::StatusCode::RANGE_NOT_SATISFIABLE => {
            // The partial file is not a prefix of this blob: start over.
            remove_file(part);
            resp = ctx.http.download(sha256, 0).await?;
            false
        }
        _ => false,
    };
    if !append {
        have = 0;
    }
    if have > 0 {
        tracing::debug!(from = have, "resuming a download");
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .await
        .map_err(|e| Error::file(part, e))?;
    while let Some(chunk) = resp.chunk().await? {
        if have + chunk.len() as u64 > size {
            drop(file);
            remove_file(part);
            return Err(Error::Network(
                "the server sent more bytes than the file has".into(),
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| Error::file(part, e))?;
        have += chunk.len() as u64;
        Metrics::add(&ctx.metrics.download_bytes, chunk.len() as u64);
    }
    file.flush().await.map_err(|e| Error::file(part, e))?;
    if have != size {
        return Err(Error::Network(format!(
            "the download ended at {have} of {size} bytes"
        )));
    }
    Ok(())
}
