//! The uploader: sends the files of attachments ahead of their messages (protocol §10).
//!
//! `Client::send_attachment` queues, in one transaction, the message's send in the room's outbox
//! queue (as any message) and an `uploads` row for its file. While that row is pending the
//! scheduler holds the send back, and with it everything queued after it in the room, so sends
//! keep their order; other rooms are not held.
//!
//! This task, started with the client, takes the oldest pending upload, one at a time:
//!
//! 1. **Where to start.** With a server upload id recorded, `HEAD` tells how many bytes the server
//!    holds (after a crash, a restart or a lost connection the upload goes on from there, not
//!    from 0); without one (or when it expired), `POST /v1/uploads` starts one, or answers that
//!    the server holds the file already (nothing is sent). The id is stored at once.
//! 2. **Bytes.** The file (in the media directory, named by its hash) is sent `chunk_bytes` at a
//!    time from the server's offset, each chunk one `PATCH` whose body is read from the file as
//!    it goes out (1 MiB at a time, one read ahead: the socket does not wait for the disk, and
//!    a chunk is never whole in memory); a `409` names the server's offset and the upload goes
//!    on from there. After each chunk the offset is stored and reported to the upload
//!    listeners.
//! 3. **Finish.** `POST …/finish`; the server checks the hash. Then, in one transaction, the
//!    upload row goes and the send is released to the scheduler.
//!
//! Transient failures (network, `5xx`, rate limits) wait with backoff (cut short by
//! `network_available`) and try again from the server's offset. Permanent ones (the file is too
//! large, its hash does not match, it is gone from the device) mark the upload, the send and the
//! message failed; the send leaves the scheduler so the rest of the room's queue goes on, and
//! `retry` of the entry queues the upload again. Cancelling (discarding the send) deletes the
//! row: the task notices at its next chunk, stops, and deletes the server's upload.

use std::sync::Arc;

use crate::backoff::{Backoff, Jitter};
use crate::context::{Context, Want};
use crate::db::reads::{self, StoredUpload};
use crate::db::writes;
use crate::error::{Error, Result};
use crate::http::{Created, Sent};
use crate::listeners::AppEvent;
use crate::metrics::Metrics;
use crate::model::{RoomUpdate, SendState, UploadProgress, UploadState};
use crate::optimistic::{self, Change};

/// How an upload attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The server holds the file.
    Stored,
    /// The upload was cancelled meanwhile.
    Cancelled,
}

/// The progress record of an upload.
fn progress(u: &StoredUpload, sent: u64, state: UploadState) -> UploadProgress {
    UploadProgress {
        local_id: u.local_id.clone(),
        room: u.room.clone(),
        sent_bytes: sent,
        total_bytes: u.size,
        state,
    }
}

/// Runs the uploader until the client shuts down (see the module docs).
pub(crate) async fn run(ctx: Arc<Context>) {
    let cfg = ctx.config.media.clone();
    let mut backoff = Backoff::new(cfg.initial_backoff, cfg.max_backoff, Jitter::Full);
    let mut want = ctx.want.subscribe();
    loop {
        let now = *want.borrow_and_update();
        match now {
            Want::Shutdown => return,
            Want::Offline => {
                if want.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Want::Online => {}
        }
        // Registered before looking, so a wake-up between the look and the wait is not lost.
        let woken = ctx.uploads_wakeup.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let next = match ctx.db.read(reads::next_upload) {
            Ok(n) => n,
            Err(Error::Shutdown) => return,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the uploads");
                None
            }
        };
        let Some(u) = next else {
            tokio::select! {
                _ = &mut woken => {}
                r = want.changed() => if r.is_err() { return },
            }
            continue;
        };
        match send_file(&ctx, &u).await {
            Ok(Outcome::Stored) => {
                backoff.reset();
                if let Err(err) = done(&ctx, &u) {
                    tracing::warn!(error = %err, "cannot record a finished upload");
                }
            }
            Ok(Outcome::Cancelled) => {}
            Err(Error::Shutdown) => return,
            Err(err) if transient(&err) => {
                Metrics::inc(&ctx.metrics.upload_retries);
                let delay = backoff.next_delay();
                tracing::info!(upload = %u.local_id, error = %err, ?delay, "upload interrupted; will resume");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = ctx.network_available.notified() => {}
                    _ = &mut woken => {}
                    r = want.changed() => if r.is_err() { return },
                }
            }
            Err(err) => {
                if let Err(e) = fail(&ctx, &u, &err) {
                    tracing::warn!(error = %e, "cannot record a failed upload");
                }
            }
        }
    }
}

/// Whether an upload that failed so may go on later unchanged.
fn transient(err: &Error) -> bool {
    err.is_transient() || matches!(err, Error::Unauthorized(_) | Error::NeedsSignIn(_))
}

/// Records the server's upload id and offset: false when the upload was cancelled meanwhile.
fn record(ctx: &Context, u: &StoredUpload, upload: &str, sent: u64) -> Result<bool> {
    let kept =
        ctx.write(|tx, _| writes::set_upload_progress(tx, &u.local_id, Some(upload), sent))?;
    if kept {
        ctx.emit(AppEvent::Upload(progress(u, sent, UploadState::Uploading)));
    }
    Ok(kept)
}

/// Starts a server upload: `None` when the server holds the file already.
async fn create(ctx: &Context, u: &StoredUpload) -> Result<Option<(String, u64)>> {
    match ctx.http.create_upload(u.size, &u.sha256, &u.mime).await? {
        Created::Held => Ok(None),
        Created::Started { upload, offset } => Ok(Some((upload, offset))),
    }
}

/// One attempt at an upload (see the module docs).
#[tracing::instrument(level = "debug", skip_all, fields(upload = %u.local_id, size = u.size))]
async fn send_file(ctx: &Context, u: &StoredUpload) -> Result<Outcome> {
    let path = ctx.media.path_of(&u.sha256);
    let len = tokio::fs::metadata(&path)
        .await
        .map_err(|e| Error::file(&path, e))?
        .len();
    if len != u.size {
        return Err(Error::file(
            &path,
            format!("the file changed: {len} bytes, {} expected", u.size),
        ));
    }
    let resumed = match &u.upload {
        Some(id) => match ctx.http.upload_status(id).await? {
            Sent::At(offset) | Sent::Conflict(offset) => Some((id.clone(), offset)),
            Sent::Gone => None,
        },
        None => None,
    };
    let (upload, mut offset) = match resumed {
        Some(r) => {
            tracing::debug!(offset = r.1, "resuming an upload from the server's offset");
            r
        }
        None => match create(ctx, u).await? {
            Some(started) => started,
            None => {
                tracing::debug!("the server holds the file already");
                return Ok(Outcome::Stored);
            }
        },
    };
    if !record(ctx, u, &upload, offset)? {
        ctx.http.abort_upload(&upload).await;
        return Ok(Outcome::Cancelled);
    }
    let chunk = ctx.media.config.chunk_bytes as u64;
    loop {
        while offset < u.size {
            let n = chunk.min(u.size - offset);
            let sent = ctx.http.send_file_bytes(&upload, &path, offset, n).await?;
            offset = match sent {
                Sent::At(at) => {
                    Metrics::add(&ctx.metrics.upload_bytes, n);
                    at
                }
                Sent::Conflict(at) => at,
                Sent::Gone => return Err(gone(ctx, u)),
            };
            if !record(ctx, u, &upload, offset)? {
                ctx.http.abort_upload(&upload).await;
                return Ok(Outcome::Cancelled);
            }
        }
        match ctx.http.finish_upload(&upload).await? {
            Sent::At(_) => return Ok(Outcome::Stored),
            Sent::Conflict(at) => offset = at,
            Sent::Gone => return Err(gone(ctx, u)),
        }
    }
}

/// The server's upload expired: forget its id, so the next attempt starts a new one.
fn gone(ctx: &Context, u: &StoredUpload) -> Error {
    let res = ctx.write(|tx, _| writes::set_upload_progress(tx, &u.local_id, None, 0));
    if let Err(err) = res {
        tracing::warn!(error = %err, "cannot forget an expired upload");
    }
    Error::Network("the server's upload expired; starting it again".into())
}

/// The server holds the file: the upload row goes and the send is released, in one transaction.
fn done(ctx: &Context, u: &StoredUpload) -> Result<()> {
    ctx.write(|tx, fx| {
        if !writes::delete_upload(tx, &u.local_id)? {
            return Ok(());
        }
        fx.released.push(u.local_id.clone());
        fx.emit(AppEvent::Upload(progress(u, u.size, UploadState::Done)));
        if let Some(m) = reads::message(tx, &u.local_id)? {
            fx.room(RoomUpdate::MessageEdited(m));
        }
        Ok(())
    })?;
    Metrics::inc(&ctx.metrics.uploads_completed);
    tracing::info!(upload = %u.local_id, size = u.size, "upload finished");
    Ok(())
}

/// The upload failed for good: it, the send and the message are marked failed, and the send
/// leaves the scheduler.
fn fail(ctx: &Context, u: &StoredUpload, err: &Error) -> Result<()> {
    let (code, message) = match err {
        Error::Server { code, message, .. } => (code.as_str().to_owned(), message.clone()),
        other => ("client".to_owned(), other.to_string()),
    };
    let state = SendState::Failed {
        code: code.clone(),
        message: message.clone(),
    };
    ctx.write(|tx, fx| {
        if !writes::set_upload_state(tx, &u.local_id, &state, false)? {
            return Ok(());
        }
        if let Some(entry) = reads::outbox_entry(tx, &u.local_id)? {
            // Held back, so never on the wire: it can leave the scheduler.
            let _ = ctx.outbox.lock().remove(&entry.id);
            writes::set_entry_state(tx, entry.pos, &entry.id, &state)?;
            let change = Change {
                id: &entry.id,
                pos: entry.pos,
                mutation: &entry.mutation,
                target: entry.target.as_deref(),
            };
            optimistic::apply_failure(tx, &change, &state, None, fx)?;
        }
        fx.emit(AppEvent::Upload(progress(
            u,
            u.sent,
            UploadState::Failed { code, message },
        )));
        Ok(())
    })?;
    // The room's later sends waited behind this one: the scheduler may put them on the wire.
    ctx.outbox_wakeup.notify_one();
    tracing::warn!(upload = %u.local_id, error = %err, "upload failed");
    Metrics::inc(&ctx.metrics.messages_failed);
    Ok(())
}

/// One upload attempt and its bookkeeping, as the task does it: `Ok(true)` once stored.
#[cfg(test)]
pub(crate) async fn tests_send(ctx: &Context, u: &StoredUpload) -> Result<bool> {
    match send_file(ctx, u).await {
        Ok(Outcome::Stored) => {
            done(ctx, u)?;
            Ok(true)
        }
        Ok(Outcome::Cancelled) => Ok(false),
        Err(err) => {
            if !transient(&err) {
                fail(ctx, u, &err)?;
            }
            Err(err)
        }
    }
}
