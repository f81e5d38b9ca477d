//! The blob store on the local disk: one file per key under a root directory
//! (`<data dir>/blobs` by default), for a server that is alone on its data.
//!
//! A put writes a temporary file in `<root>/.tmp` (the same file system, so a rename can move
//! it), syncs it, renames it onto its key and syncs the directory: the object appears whole or
//! not at all, and is on disk before the put returns. A reader never sees a half-written file.
//! Directories are made as keys need them and removed when a delete empties them; a put that
//! races such a removal makes the directory again. Temporary files that a crash left behind are
//! removed by [`BlobStore::sweep_scratch`].

use std::io::{ErrorKind, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::{check_key, BlobError, BlobStore, ByteStream, ObjectMeta};

/// The directory of temporary files, under the root (no key segment starts with `.`).
const TMP_DIR: &str = ".tmp";
/// Bytes read from a file at a time when streaming it out.
const READ_CHUNK: usize = 64 * 1024;
/// Attempts at moving a file into a directory that a concurrent delete may remove.
const PLACE_ATTEMPTS: usize = 4;

/// Blobs as files under a directory.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> BlobError {
    BlobError::Backend(format!("{what} {}: {e}", path.display()))
}

impl FsBlobStore {
    /// A store under `root` (made on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsBlobStore { root: root.into() }
    }

    /// The directory the store keeps its files in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, BlobError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn prefix_path(&self, prefix: &str) -> Result<PathBuf, BlobError> {
        let p = prefix.trim_end_matches('/');
        if p.is_empty() {
            return Ok(self.root.clone());
        }
        self.path(p)
    }

    /// Moves the synced file `tmp` to `dest` and syncs `dest`'s directory, making the directory
    /// first (again, if a delete removed it in between).
    async fn place(&self, tmp: &Path, dest: &Path) -> Result<(), BlobError> {
        let dir = dest
            .parent()
            .ok_or_else(|| BlobError::InvalidKey(dest.display().to_string()))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io_err("creating", dir, e))?;
            match tokio::fs::rename(tmp, dest).await {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::NotFound && attempt < PLACE_ATTEMPTS => continue,
                Err(e) => return Err(io_err("renaming into", dest, e)),
            }
        }
        sync_dir(dir).await
    }

    /// Removes the directories from `dir` up to the root that are empty.
    async fn prune(&self, mut dir: &Path) {
        while dir != self.root && dir.starts_with(&self.root) {
            if tokio::fs::remove_dir(dir).await.is_err() {
                return;
            }
            match dir.parent() {
                Some(p) => dir = p,
                None => return,
            }
        }
    }
}

async fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    let d = tokio::fs::File::open(dir)
        .await
        .map_err(|e| io_err("opening", dir, e))?;
    d.sync_all().await.map_err(|e| io_err("syncing", dir, e))
}

/// Whether `path` still names the open file `f` (false when nothing is there any more).
fn same_file(f: &std::fs::File, path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let open = f.metadata()?;
    match std::fs::metadata(path) {
        Ok(now) => Ok(now.dev() == open.dev() && now.ino() == open.ino()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn meta_of(key: String, m: &std::fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        key,
        size: m.len(),
        modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn put(&self, key: &str, mut body: ByteStream) -> Result<u64, BlobError> {
        let dest = self.path(key)?;
        let tmp_dir = self.root.join(TMP_DIR);
        tokio::fs::create_dir_all(&tmp_dir)
            .await
            .map_err(|e| io_err("creating", &tmp_dir, e))?;
        let tmp = tmp_dir.join(uuid::Uuid::new_v4().simple().to_string());
        let written = async {
            let mut f = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .await
                .map_err(|e| io_err("creating", &tmp, e))?;
            let mut n = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                f.write_all(&chunk)
                    .await
                    .map_err(|e| io_err("writing", &tmp, e))?;
                n += chunk.len() as u64;
            }
            f.flush().await.map_err(|e| io_err("writing", &tmp, e))?;
            f.sync_all().await.map_err(|e| io_err("syncing", &tmp, e))?;
            Ok::<u64, BlobError>(n)
        }
        .await;
        let placed = match written {
            Ok(n) => self.place(&tmp, &dest).await.map(|()| n),
            Err(e) => Err(e),
        };
        if placed.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        placed
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, BlobError> {
        let path = self.path(key)?;
        let mut f = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(BlobError::NotFound(key.to_owned()))
            }
            Err(e) => return Err(io_err("opening", &path, e)),
        };
        let size = f
            .metadata()
            .await
            .map_err(|e| io_err("reading", &path, e))?
            .len();
        let Range { start, end } = range.unwrap_or(0..size);
        let (start, end) = (start.min(size), end.min(size));
        if start > 0 {
            f.seek(SeekFrom::Start(start))
                .await
                .map_err(|e| io_err("seeking", &path, e))?;
        }
        let shown = path.display().to_string();
        let stream = ReaderStream::with_capacity(f.take(end.saturating_sub(start)), READ_CHUNK)
            .map(move |r| r.map_err(|e| BlobError::Backend(format!("reading {shown}: {e}"))));
        Ok(Box::pin(stream))
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>, BlobError> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(meta_of(key.to_owned(), &m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &path, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("removing", &path, e)),
        }
        if let Some(dir) = path.parent() {
            self.prune(dir).await;
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, BlobError> {
        let base = prefix.trim_end_matches('/').to_owned();
        let mut out = Vec::new();
        let mut dirs = vec![(self.prefix_path(prefix)?, base)];
        while let Some((dir, key)) = dirs.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("listing", &dir, e)),
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| io_err("listing", &dir, e))?
            {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                let child = if key.is_empty() {
                    name
                } else {
                    format!("{key}/{name}")
                };
                // A file removed between the listing and this look is not reported.
                let m = match entry.metadata().await {
                    Ok(m) => m,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("reading", &entry.path(), e)),
                };
                if m.is_dir() {
                    dirs.push((entry.path(), child));
                } else if m.is_file() {
                    out.push(meta_of(child, &m));
                }
            }
        }
        Ok(out)
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let dir = self.prefix_path(prefix)?;
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &dir, e)),
        };
        let mut out = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| io_err("listing", &dir, e))?
        {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let is_dir = entry.file_type().await.is_ok_and(|t| t.is_dir());
            if is_dir && !name.starts_with('.') {
                out.push(name);
            }
        }
        Ok(out)
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), BlobError> {
        let (src, dest) = (self.path(from)?, self.path(to)?);
        if tokio::fs::metadata(&src).await.is_err() {
            return Err(BlobError::NotFound(from.to_owned()));
        }
        self.place(&src, &dest).await?;
        if let Some(dir) = src.parent() {
            self.prune(dir).await;
        }
        Ok(())
    }

    fn writes_in_place(&self) -> bool {
        true
    }

    /// Takes a shared lock on the file ([`BlobStore::seal`] takes it exclusively), checks that
    /// the path still names the file it opened (a seal moves it), writes, and syncs the data
    /// before letting the lock go.
    async fn write_at(
        &self,
        key: &str,
        offset: u64,
        mut body: ByteStream,
    ) -> Result<u64, BlobError> {
        let path = self.path(key)?;
        let f = match tokio::fs::OpenOptions::new().write(true).open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(BlobError::NotFound(key.to_owned()))
            }
            Err(e) => return Err(io_err("opening", &path, e)),
        };
        let f = f.into_std().await;
        let locked = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                f.lock_shared()?;
                let same = same_file(&f, &path)?;
                Ok::<_, std::io::Error>(same.then_some(f))
            })
            .await
            .map_err(|e| BlobError::Backend(format!("a file lock task failed: {e}")))?
        };
        let mut f = match locked {
            Ok(Some(f)) => tokio::fs::File::from_std(f),
            Ok(None) => return Err(BlobError::NotFound(key.to_owned())),
            Err(e) => return Err(io_err("locking", &path, e)),
        };
        f.seek(SeekFrom::Start(offset))
            .await
            .map_err(|e| io_err("seeking", &path, e))?;
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            f.write_all(&chunk)
                .await
                .map_err(|e| io_err("writing", &path, e))?;
            n += chunk.len() as u64;
        }
        f.flush().await.map_err(|e| io_err("writing", &path, e))?;
        f.sync_data()
            .await
            .map_err(|e| io_err("syncing", &path, e))?;
        // Closing the file lets the lock go.
        Ok(n)
    }

    /// Takes the file's lock exclusively (waiting out the writes under way), then moves it: a
    /// write that opened it before but locks it after finds the path no longer names it.
    async fn seal(&self, from: &str, to: &str) -> Result<(), BlobError> {
        let (src, dest) = (self.path(from)?, self.path(to)?);
        let f = match tokio::fs::File::open(&src).await {
            Ok(f) => f.into_std().await,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(BlobError::NotFound(from.to_owned()))
            }
            Err(e) => return Err(io_err("opening", &src, e)),
        };
        let locked = tokio::task::spawn_blocking(move || f.lock().map(|()| f))
            .await
            .map_err(|e| BlobError::Backend(format!("a file lock task failed: {e}")))?;
        let held = locked.map_err(|e| io_err("locking", &src, e))?;
        if !same_file(&held, &src).map_err(|e| io_err("reading", &src, e))? {
            // Sealed by another call meanwhile.
            return Err(BlobError::NotFound(from.to_owned()));
        }
        self.place(&src, &dest).await?;
        drop(held);
        Ok(())
    }

    async fn sweep_scratch(&self, older_than: SystemTime) -> Result<u64, BlobError> {
        let dir = self.root.join(TMP_DIR);
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err("listing", &dir, e)),
        };
        let mut removed = 0;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| io_err("listing", &dir, e))?
        {
            let old = entry
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .is_some_and(|t| t < older_than);
            if old && tokio::fs::remove_file(entry.path()).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn kind(&self) -> &'static str {
        "fs"
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::TryStreamExt;

    use super::*;
    use crate::blob::once;

    async fn read(store: &FsBlobStore, key: &str, range: Option<Range<u64>>) -> Vec<u8> {
        let chunks: Vec<Bytes> = store
            .get(key, range)
            .await
            .expect("get")
            .try_collect()
            .await
            .expect("read");
        chunks.concat()
    }

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<Result<Bytes, BlobError>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures_util::stream::iter(items))
    }

    #[tokio::test]
    async fn put_get_stat_and_ranges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::new(dir.path().join("blobs"));
        assert_eq!(store.stat("a/b").await, Ok(None));
        let n = store
            .put("a/b", chunks(&[b"hello ", b"world"]))
            .await
            .expect("put");
        assert_eq!(n, 11);
        assert_eq!(read(&store, "a/b", None).await, b"hello world");
        assert_eq!(read(&store, "a/b", Some(6..11)).await, b"world");
        assert_eq!(read(&store, "a/b", Some(3..5)).await, b"lo");
        assert_eq!(read(&store, "a/b", Some(9..100)).await, b"ld");
        assert_eq!(read(&store, "a/b", Some(50..60)).await, b"");
        let meta = store.stat("a/b").await.expect("stat").expect("present");
        assert_eq!((meta.key.as_str(), meta.size), ("a/b", 11));
        // A put replaces.
        store
            .put("a/b", once(Bytes::from_static(b"x")))
            .await
            .expect("put");
        assert_eq!(read(&store, "a/b", None).await, b"x");
        assert!(matches!(
            store.get("a/c", None).await.err(),
            Some(BlobError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_failing_body_stores_nothing_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::new(dir.path());
        let items: Vec<Result<Bytes, BlobError>> = vec![
            Ok(Bytes::from_static(b"partial")),
            Err(BlobError::Source("cut".into())),
        ];
        let err = store
            .put("k", Box::pin(futures_util::stream::iter(items)))
            .await
            .expect_err("the body failed");
        assert_eq!(err, BlobError::Source("cut".into()));
        assert_eq!(store.stat("k").await, Ok(None));
        let tmp: Vec<_> = std::fs::read_dir(dir.path().join(TMP_DIR))
            .expect("tmp dir")
            .collect();
        assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
    }

    #[tokio::test]
    async fn list_delete_rename_and_empty_directories_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::new(dir.path());
        for k in [
            "up/1/meta.json",
            "up/1/parts/0",
            "up/1/parts/5",
            "up/2/meta.json",
            "x",
        ] {
            store
                .put(k, once(Bytes::from_static(b"12345")))
                .await
                .expect("put");
        }
        let mut keys: Vec<String> = store
            .list("up/1")
            .await
            .expect("list")
            .into_iter()
            .map(|m| m.key)
            .collect();
        keys.sort();
        assert_eq!(keys, ["up/1/meta.json", "up/1/parts/0", "up/1/parts/5"]);
        assert_eq!(store.list("nothing/here").await, Ok(vec![]));
        let mut dirs = store.list_dirs("up").await.expect("dirs");
        dirs.sort();
        assert_eq!(dirs, ["1", "2"]);

        store
            .rename("up/1/parts/5", "done/blob")
            .await
            .expect("rename");
        assert_eq!(read(&store, "done/blob", None).await, b"12345");
        assert_eq!(
            store.rename("up/1/parts/5", "done/blob").await,
            Err(BlobError::NotFound("up/1/parts/5".into()))
        );
        for k in ["up/1/meta.json", "up/1/parts/0", "up/1/parts/0"] {
            store.delete(k).await.expect("delete twice is fine");
        }
        assert!(!dir.path().join("up/1").exists(), "empty directories stay");
        assert!(dir.path().join("up/2").exists());
        assert_eq!(store.list_dirs("up").await, Ok(vec!["2".to_owned()]));
    }

    #[tokio::test]
    async fn keys_that_escape_the_root_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::new(dir.path().join("root"));
        for bad in ["../x", "/etc/passwd", "a/../../x", ".tmp/x"] {
            assert!(matches!(
                store.put(bad, once(Bytes::new())).await,
                Err(BlobError::InvalidKey(_))
            ));
            assert!(matches!(
                store.get(bad, None).await.err(),
                Some(BlobError::InvalidKey(_))
            ));
        }
    }

    #[tokio::test]
    async fn scratch_files_older_than_the_cut_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::new(dir.path());
        std::fs::create_dir_all(dir.path().join(TMP_DIR)).expect("mkdir");
        std::fs::write(dir.path().join(TMP_DIR).join("left"), b"x").expect("write");
        let past = SystemTime::now() - Duration::from_secs(3600);
        assert_eq!(store.sweep_scratch(past).await, Ok(0));
        let future = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(store.sweep_scratch(future).await, Ok(1));
    }
}
