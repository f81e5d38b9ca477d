//! `admin users export`: everything a user has, as one tar archive (format in docs/admin.md).
//!
//! The archive is made on the server's machine, at a path that must not exist. Each part is
//! written page by page to a file of its own in a scratch directory beside the archive (JSON
//! Lines: one object a line), attachments are copied there from the blob store as streams, and
//! the files are then appended to the archive one by one: memory holds one page at a time,
//! whatever the user's history. The archive is written under a `.partial` name and renamed
//! when whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::users::{store_err, MAX_PAGE, MESSAGE_BATCH};
use super::{count, failed, io_at, remove_all, AdminError};
use crate::blob::{hex, keys, parse_sha256};
use crate::clock::now_ms;
use crate::store::NotificationQuery;
use crate::AppState;

/// The archive format's name and version, in its `manifest.json`.
pub const FORMAT: &str = "roam-user-export";
pub const FORMAT_VERSION: u32 = 1;

/// `POST /admin/v1/users/{user}/export`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// The archive to write, on the server's machine (must not exist).
    pub to: PathBuf,
}

/// What an export wrote (also the archive's `manifest.json`, without `path`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exported {
    pub format: String,
    pub version: u32,
    pub user: String,
    pub exported_at: i64,
    /// Each JSON Lines part and how many lines it holds.
    pub parts: BTreeMap<String, u64>,
    /// `blobs/<sha256>` files: the attachments of the user's messages and the blobs they
    /// uploaded.
    pub blobs: Vec<String>,
    /// The archive (not in the manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

/// One JSON Lines part being written.
struct Part {
    file: tokio::io::BufWriter<tokio::fs::File>,
    path: PathBuf,
    lines: u64,
}

impl Part {
    async fn create(dir: &Path, name: &str) -> Result<Part, AdminError> {
        let path = dir.join(name);
        let file = tokio::fs::File::create(&path).await.map_err(io_at(&path))?;
        Ok(Part {
            file: tokio::io::BufWriter::new(file),
            path,
            lines: 0,
        })
    }

    async fn line(&mut self, value: &impl Serialize) -> Result<(), AdminError> {
        let mut bytes = serde_json::to_vec(value).map_err(failed)?;
        bytes.push(b'\n');
        self.file
            .write_all(&bytes)
            .await
            .map_err(io_at(&self.path))?;
        self.lines += 1;
        Ok(())
    }

    async fn finish(mut self) -> Result<u64, AdminError> {
        self.file.flush().await.map_err(io_at(&self.path))?;
        Ok(self.lines)
    }
}

/// Writes the archive of everything `user` has to `to`.
pub async fn export(state: &AppState, user: &str, to: &Path) -> Result<Exported, AdminError> {
    roam_proto::validate::user_id(user).map_err(|e| AdminError::Refused(e.0))?;
    if to.exists() {
        return Err(AdminError::Refused(format!(
            "{} exists already: an export goes to a new file",
            to.display()
        )));
    }
    let scratch = to.with_extension("export-parts");
    let partial = to.with_extension("partial");
    let result = async {
        remove_all(&scratch).await?;
        tokio::fs::create_dir_all(scratch.join("blobs"))
            .await
            .map_err(io_at(&scratch))?;
        let manifest = write_parts(state, user, &scratch).await?;
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(failed)?;
        let path = scratch.join("manifest.json");
        tokio::fs::write(&path, bytes).await.map_err(io_at(&path))?;
        let (from, into) = (scratch.clone(), partial.clone());
        let names: Vec<String> = std::iter::once("manifest.json".to_owned())
            .chain(manifest.parts.keys().cloned())
            .chain(manifest.blobs.iter().map(|b| format!("blobs/{b}")))
            .collect();
        tokio::task::spawn_blocking(move || pack(&from, &names, &into))
            .await
            .map_err(failed)??;
        tokio::fs::rename(&partial, to).await.map_err(io_at(to))?;
        Ok(Exported {
            path: Some(to.to_path_buf()),
            ..manifest
        })
    }
    .await;
    let _ = remove_all(&scratch).await;
    match &result {
        Ok(e) => {
            count(state, "export");
            tracing::info!(%user, path = %to.display(), parts = ?e.parts, blobs = e.blobs.len(), "admin: user exported");
        }
        Err(e) => {
            count(state, "export_failed");
            tracing::error!(%user, error = %e, "admin: export failed");
            let _ = tokio::fs::remove_file(&partial).await;
        }
    }
    result
}

/// Appends `names` (paths under `dir`) to a new tar file `to`, synced.
fn pack(dir: &Path, names: &[String], to: &Path) -> Result<(), AdminError> {
    let file = std::fs::File::create(to).map_err(io_at(to))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    tar.mode(tar::HeaderMode::Deterministic);
    for name in names {
        let path = dir.join(name);
        tar.append_path_with_name(&path, name)
            .map_err(io_at(&path))?;
    }
    let out = tar.into_inner().map_err(io_at(to))?;
    let file = out.into_inner().map_err(|e| io_at(to)(e.into_error()))?;
    file.sync_all().map_err(io_at(to))
}

/// Writes every part and blob into `dir`; answers the manifest.
async fn write_parts(state: &AppState, user: &str, dir: &Path) -> Result<Exported, AdminError> {
    let store = &state.service.store;
    let now = now_ms();
    let mut parts = BTreeMap::new();

    let mut profile = Part::create(dir, "profile.jsonl").await?;
    if let Some(u) = super::users::profile(state, user).await? {
        profile.line(&u).await?;
    }
    for p in state
        .service
        .presence_of(&[user.to_owned()])
        .await
        .map_err(|e| AdminError::Failed(e.message))?
    {
        profile.line(&serde_json::json!({ "presence": p })).await?;
    }
    parts.insert("profile.jsonl".to_owned(), profile.finish().await?);

    let memberships = store.memberships(user).await.map_err(store_err)?;
    let mut part = Part::create(dir, "memberships.jsonl").await?;
    for m in &memberships {
        part.line(m).await?;
    }
    parts.insert("memberships.jsonl".to_owned(), part.finish().await?);

    // Messages: a page at a time, written as they are read.
    let mut part = Part::create(dir, "messages.jsonl").await?;
    let mut blobs = std::collections::BTreeSet::new();
    let mut after = (String::new(), 0u64);
    loop {
        let page = store
            .messages_by(user, (&after.0, after.1), MESSAGE_BATCH)
            .await
            .map_err(store_err)?;
        let Some(last) = page.last() else { break };
        after = (last.room.clone(), last.seq);
        for m in &page {
            if let Some(a) = &m.attachment {
                blobs.insert(a.blob.clone());
            }
            part.line(m).await?;
        }
    }
    parts.insert("messages.jsonl".to_owned(), part.finish().await?);

    // The kept versions they wrote of the documents of their rooms.
    let mut part = Part::create(dir, "documents.jsonl").await?;
    for m in memberships.iter() {
        let mut after: Option<String> = None;
        loop {
            let docs = store
                .documents(&m.room, after.as_deref(), MAX_PAGE)
                .await
                .map_err(store_err)?;
            let Some(last) = docs.items.last() else {
                break;
            };
            after = Some(last.doc.clone());
            for d in &docs.items {
                let mut before = u64::MAX;
                loop {
                    let history = store
                        .document_history(&m.room, &d.doc, before, MAX_PAGE)
                        .await
                        .map_err(store_err)?;
                    let Some(oldest) = history.items.last() else {
                        break;
                    };
                    before = oldest.version;
                    for v in history.items.iter().filter(|v| v.updated_by == user) {
                        part.line(v).await?;
                    }
                }
            }
        }
    }
    parts.insert("documents.jsonl".to_owned(), part.finish().await?);

    let mut part = Part::create(dir, "read_markers.jsonl").await?;
    for r in store.read_markers(user).await.map_err(store_err)? {
        part.line(&r).await?;
    }
    parts.insert("read_markers.jsonl".to_owned(), part.finish().await?);

    let mut part = Part::create(dir, "notifications.jsonl").await?;
    let mut after_seq = 0;
    loop {
        let page = store
            .notifications(
                user,
                &NotificationQuery {
                    after_seq,
                    unread_only: false,
                    limit: MAX_PAGE,
                },
            )
            .await
            .map_err(store_err)?;
        let Some(last) = page.last() else { break };
        after_seq = last.seq;
        for n in &page {
            part.line(n).await?;
        }
    }
    parts.insert("notifications.jsonl".to_owned(), part.finish().await?);

    let mut part = Part::create(dir, "invitations.jsonl").await?;
    for i in store
        .invitations_for(user, now, u32::MAX)
        .await
        .map_err(store_err)?
    {
        part.line(&i).await?;
    }
    parts.insert("invitations.jsonl".to_owned(), part.finish().await?);

    let mut part = Part::create(dir, "suspension.jsonl").await?;
    if let Some(s) = state.service.suspensions.get(user) {
        part.line(&s).await?;
    }
    parts.insert("suspension.jsonl".to_owned(), part.finish().await?);

    let copied = copy_blobs(state, user, blobs, &dir.join("blobs")).await?;
    Ok(Exported {
        format: FORMAT.to_owned(),
        version: FORMAT_VERSION,
        user: user.to_owned(),
        exported_at: now,
        parts,
        blobs: copied,
        path: None,
    })
}

/// Copies the blobs of `sent` and those `user` uploaded into `dir`, each as a stream; answers
/// the hashes copied (a blob already gone is left out).
async fn copy_blobs(
    state: &AppState,
    user: &str,
    mut wanted: std::collections::BTreeSet<String>,
    dir: &Path,
) -> Result<Vec<String>, AdminError> {
    let Some(blobs) = state.service.attachments.read().clone() else {
        return Ok(Vec::new());
    };
    let objects = &blobs.store;
    let mine = format!("/{}", hex(user.as_bytes()));
    for marker in objects.list("owners/").await.map_err(failed)? {
        if let Some(sha) = marker
            .key
            .strip_suffix(&mine)
            .and_then(|k| k.strip_prefix("owners/"))
            .and_then(parse_sha256)
        {
            wanted.insert(sha);
        }
    }
    let mut copied = Vec::new();
    for sha in wanted {
        if parse_sha256(&sha).is_none() {
            continue;
        }
        let mut stream = match objects.get(&keys::blob(&sha), None).await {
            Ok(s) => s,
            Err(crate::blob::BlobError::NotFound(_)) => continue,
            Err(e) => return Err(failed(e)),
        };
        let path = dir.join(&sha);
        let mut file = tokio::fs::File::create(&path).await.map_err(io_at(&path))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(failed)?;
            file.write_all(&chunk).await.map_err(io_at(&path))?;
        }
        file.flush().await.map_err(io_at(&path))?;
        copied.push(sha);
    }
    Ok(copied)
}
