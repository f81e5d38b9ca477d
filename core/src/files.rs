//! The media directory's files: where they live, how a file the app sends is taken in (hard
//! link, or copy, then hashed in chunks and named by its SHA-256), and the state of the
//! downloads under way. The cache's index and its rules are `crate::media`'s; this module knows
//! nothing of the store, so the shared client state can hold a [`Media`].

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::config::MediaConfig;
use crate::error::{Error, Result};

/// Bytes read at a time when hashing.
const CHUNK: usize = 1024 * 1024;

/// The media directory of a client, and the downloads under way.
pub(crate) struct Media {
    pub(crate) dir: PathBuf,
    pub config: MediaConfig,
    /// One lock per file being downloaded (single flight).
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media").field("dir", &self.dir).finish()
    }
}

impl Media {
    pub(crate) fn new(dir: PathBuf, config: MediaConfig) -> Self {
        Media {
            dir,
            config,
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// The media directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the file with this hash lives once complete.
    pub(crate) fn path_of(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    pub(crate) fn part_of(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.part"))
    }

    pub(crate) fn flight(&self, sha256: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.flights
            .lock()
            .entry(sha256.to_owned())
            .or_default()
            .clone()
    }

    pub(crate) fn land(&self) {
        self.flights.lock().retain(|_, f| Arc::strong_count(f) > 1);
    }
}

/// Lowercase hex of a digest.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Fills `buf` from `file` as far as it goes; the bytes read (fewer only at the end).
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The SHA-256 (hex) and size of a file, read in chunks. A file of more than a few chunks is
/// read on this thread and hashed on another, so the reading hides behind the hashing (SHA-256
/// itself is one sequential pass); three buffers go round between the two.
pub(crate) fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
    let len = file.metadata().map_err(|e| Error::file(path, e))?.len();
    if len <= 4 * CHUNK as u64 {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut size = 0u64;
        loop {
            let n = read_full(&mut file, &mut buf).map_err(|e| Error::file(path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        return Ok((hex(&hasher.finalize()), size));
    }
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    for _ in 0..3 {
        let _ = empty_tx.send(vec![0u8; CHUNK]);
    }
    std::thread::scope(|scope| {
        let hashing = scope.spawn(move || {
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            for buf in full_rx {
                hasher.update(&buf);
                size += buf.len() as u64;
                let _ = empty_tx.send(buf);
            }
            (hex(&hasher.finalize()), size)
        });
        let read = (|| loop {
            let Ok(mut buf) = empty_rx.recv() else {
                return Err(Error::file(path, "the hashing thread stopped"));
            };
            buf.resize(CHUNK, 0);
            let n = read_full(&mut file, &mut buf).map_err(|e| Error::file(path, e))?;
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            if full_tx.send(buf).is_err() {
                return Err(Error::file(path, "the hashing thread stopped"));
            }
        })();
        // Closing the channel ends the hashing thread, after an error too.
        drop(full_tx);
        let hashed = hashing
            .join()
            .map_err(|_| Error::file(path, "the hashing thread panicked"));
        read.and(hashed)
    })
}

/// Deletes a file of the media directory (a missing one is fine; failures are logged).
pub(crate) fn remove_file(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::debug!(file = %path.display(), "media file deleted"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(file = %path.display(), error = %e, "cannot delete a media file"),
    }
}

/// A file taken into the media directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Taken {
    pub sha256: String,
    pub size: u64,
    pub path: PathBuf,
}

/// Takes the app's file `src` into the media directory (hard link, or copy), hashing it there;
/// the result is named by its hash. Not yet in the index: the caller records it in the
/// transaction that queues the send.
pub(crate) fn take_in(media: &Media, src: &Path) -> Result<Taken> {
    let meta = std::fs::metadata(src).map_err(|e| Error::file(src, e))?;
    if !meta.is_file() {
        return Err(Error::invalid(format!("{} is not a file", src.display())));
    }
    std::fs::create_dir_all(&media.dir).map_err(|e| Error::file(&media.dir, e))?;
    let tmp = media.dir.join(format!("in-{}.tmp", uuid::Uuid::now_v7()));
    if let Err(link_err) = std::fs::hard_link(src, &tmp) {
        tracing::debug!(error = %link_err, "cannot link the file; copying it");
        if let Err(e) = std::fs::copy(src, &tmp) {
            remove_file(&tmp);
            return Err(Error::file(src, e));
        }
    }
    let (sha256, size) = match hash_file(&tmp) {
        Ok(h) => h,
        Err(e) => {
            remove_file(&tmp);
            return Err(e);
        }
    };
    let path = media.path_of(&sha256);
    if path.exists() {
        // Held already (sent or downloaded before): the same bytes, by their hash.
        remove_file(&tmp);
    } else if let Err(e) = std::fs::rename(&tmp, &path) {
        remove_file(&tmp);
        return Err(Error::file(&path, e));
    }
    tracing::debug!(sha256, size, "file taken into the media directory");
    Ok(Taken { sha256, size, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_in_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").expect("write");
        let (h, n) = hash_file(&f).expect("hash");
        assert_eq!(n, 3);
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Read on one thread and hashed on another past four chunks: the same hash.
        for len in [CHUNK * 2 + 5, CHUNK * 4 + 1, CHUNK * 9] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let big = dir.path().join("big");
            std::fs::write(&big, &bytes).expect("write");
            let (h, n) = hash_file(&big).expect("hash");
            assert_eq!(n, len as u64);
            assert_eq!(h, hex(&Sha256::digest(&bytes)), "{len} bytes");
        }
    }

    #[test]
    fn a_taken_file_is_named_by_its_hash_and_survives_the_original() {
        let dir = tempfile::tempdir().expect("tempdir");
        let media = Media::new(dir.path().join("media"), MediaConfig::default());
        let src = dir.path().join("photo.jpg");
        std::fs::write(&src, b"abc").expect("write");
        let t = take_in(&media, &src).expect("take");
        assert_eq!(t.size, 3);
        assert_eq!(t.path, media.path_of(&t.sha256));
        std::fs::remove_file(&src).expect("app deletes its copy");
        assert_eq!(std::fs::read(&t.path).expect("read"), b"abc");
        // The same bytes again: the same file.
        std::fs::write(&src, b"abc").expect("write");
        assert_eq!(take_in(&media, &src).expect("again").path, t.path);
        let left: Vec<_> = std::fs::read_dir(media.dir())
            .expect("dir")
            .filter_map(|e| e.ok())
            .collect();
        assert_eq!(left.len(), 1, "no temporary file left");
    }
}
