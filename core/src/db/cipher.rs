//! Encryption at rest of the account's store (SQLCipher).
//!
//! - **Keying.** Every connection to an encrypted store runs `PRAGMA key` with SQLCipher's raw
//!   key form `x'…'` before anything else ([`apply`]), so no key derivation runs at open (a
//!   passphrase would cost hundreds of milliseconds of PBKDF2 per connection). [`verify`] then
//!   reads the schema: a wrong key, or an encrypted store opened without one, fails there with
//!   [`Error::InvalidKey`] before anything is written.
//! - **Page format.** Stores this build creates, encrypts or re-keys seal each page with
//!   AES-256-GCM and bind it to its page number with an HMAC-SHA256 of its nonce and tag
//!   ([`PageFormat::Sealed`], see [`super::crypto`]): per page written that is about an eighth
//!   of the work of SQLCipher's own AES-256-CBC and HMAC over the whole page (0.35 against
//!   2.7 µs for a 1 KiB page on x86 with AES-NI and SHA-NI), which was most of what an encrypted
//!   commit cost over a plain one. Stores encrypted by earlier builds keep SQLCipher's format
//!   ([`PageFormat::Sqlcipher`], with HMAC-SHA512 or HMAC-SHA256) until they are re-keyed: a
//!   keyed open finds which layout a store has by trying each ([`open_keyed`]), the newest
//!   first. Where Roam's crypto provider is not in place (a SQLCipher other than the 4.6 it
//!   was written for) only SQLCipher's format is written and read.
//! - **Page size.** Stores this build creates, encrypts or re-keys use 2 KiB pages
//!   ([`PAGE_BYTES`]; plain stores keep SQLite's 4 KiB). Each commit encrypts and authenticates
//!   every page it changes, whole, and a chat client's commits are small (a queued message
//!   changes a few hundred bytes in three or four b-trees), so smaller pages make each message
//!   sent cheaper; but they make the b-trees deeper, and a batch of acknowledgements or missed
//!   events touches more pages. Measured with the sealed format (`benches/core.rs`, encrypted
//!   against plain): 4 KiB pages cost 16 % on a send and nothing on replay, 1 KiB pages nothing
//!   on a send and 19 % on replay, 2 KiB pages 1–5 % and 6–7 %. Stores encrypted by earlier
//!   builds may have 1 KiB or 4 KiB pages until they are re-keyed; [`open_keyed`] tries each.
//! - **Plaintext header.** With [`Cipher::plaintext_header`] the first 32 bytes of the file stay
//!   plain (`cipher_plaintext_header_size = 32`), as iOS needs for a database in a shared
//!   container. SQLCipher normally keeps its salt in the first 16 bytes; in this mode the salt
//!   comes with the key instead, derived from it ([`salt`]).
//! - **What a file is** is told from its first bytes without opening it ([`inspect`]): a plain
//!   SQLite header with no bytes reserved per page is a plain store (SQLCipher always reserves
//!   room for each page's IV and HMAC), the SQLite header with reserved bytes is an encrypted
//!   store with a plaintext header, anything else an encrypted store.
//! - **Encrypting, re-keying and decrypting** all copy the database into a new file next to it
//!   (`<db>-new`, [`export`], SQLCipher's `sqlcipher_export`) which is synced and then renamed
//!   over the old one ([`swap_in`]). Until the rename the old file is whole (its WAL was
//!   checkpointed into it first), after it the new one is; a crash in between leaves a stray
//!   `<db>-new` that the next open deletes ([`remove_files`]).

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags};
use sha2::{Digest, Sha256};

use super::crypto::{self, PageFormat};
use crate::config::StoreKey;
use crate::error::{Error, Result};

/// The first 16 bytes of a SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Offset of the header byte holding the bytes reserved at the end of each page.
const RESERVED_BYTE: usize = 20;

/// Bytes left plain at the start of the file in plaintext-header mode (the SQLite header up to
/// and including the file change counter, which is what iOS looks at).
const PLAINTEXT_HEADER_BYTES: u32 = 32;

/// Bytes of SQLCipher's salt.
const SALT_BYTES: usize = 16;

/// The schema name under which the new file is attached while a store is copied into it.
const EXPORT_SCHEMA: &str = "roam_export";

/// The HMAC of each page (see the module docs): over its ciphertext, IV and number in
/// SQLCipher's format, over its nonce, tag and number in the sealed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageMac {
    /// What this build writes.
    Sha256,
    /// SQLCipher 4's default, which stores encrypted by earlier builds use.
    Sha512,
}

impl PageMac {
    /// The value of `PRAGMA cipher_hmac_algorithm`.
    fn pragma(self) -> &'static str {
        match self {
            PageMac::Sha256 => "HMAC_SHA256",
            PageMac::Sha512 => "HMAC_SHA512",
        }
    }
}

/// The page size of stores this build creates, encrypts or re-keys (see the module docs).
pub(crate) const PAGE_BYTES: u32 = 2048;

/// The page size of stores encrypted in SQLCipher's format by the builds just before the sealed
/// format.
pub(crate) const SMALL_PAGE_BYTES: u32 = 1024;

/// The page size of stores encrypted by earlier builds (SQLCipher's default).
pub(crate) const LEGACY_PAGE_BYTES: u32 = 4096;

/// Every layout an encrypted store may have (page format, page HMAC, page size), the one this
/// build writes first, then those of earlier builds (newest first).
const LAYOUTS: [(PageFormat, PageMac, u32); 4] = [
    (PageFormat::Sealed, PageMac::Sha256, PAGE_BYTES),
    (PageFormat::Sqlcipher, PageMac::Sha256, SMALL_PAGE_BYTES),
    (PageFormat::Sqlcipher, PageMac::Sha256, LEGACY_PAGE_BYTES),
    (PageFormat::Sqlcipher, PageMac::Sha512, LEGACY_PAGE_BYTES),
];

/// The layouts this process can read and write: the sealed format needs Roam's crypto provider
/// (see [`crypto::install`]).
fn layouts() -> impl Iterator<Item = (PageFormat, PageMac, u32)> {
    let sealed = crypto::install();
    LAYOUTS
        .into_iter()
        .filter(move |(format, ..)| sealed || *format == PageFormat::Sqlcipher)
}

/// How a store's pages are encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cipher {
    /// The raw 256-bit key.
    pub(crate) key: StoreKey,
    /// Whether the first 32 bytes of the file stay plain (see the module docs).
    pub(crate) plaintext_header: bool,
    /// How each page is encrypted and authenticated.
    pub(crate) format: PageFormat,
    /// The HMAC of each page.
    pub(crate) mac: PageMac,
    /// Bytes per page.
    pub(crate) page_size: u32,
}

impl Cipher {
    /// The keying of a store this build creates, encrypts or re-keys.
    pub(crate) fn new(key: &StoreKey, plaintext_header: bool) -> Cipher {
        let (format, mac, page_size) = layouts().next().unwrap_or(LAYOUTS[1]);
        Cipher {
            key: key.clone(),
            plaintext_header,
            format,
            mac,
            page_size,
        }
    }

    /// The value given to `PRAGMA key` and `ATTACH … KEY`: `x'<key>'`, or `x'<key><salt>'` with a
    /// plaintext header (the salt is then not in the file).
    fn key_spec(&self) -> String {
        let mut spec = String::with_capacity(3 + 2 * (StoreKey::LEN + SALT_BYTES));
        spec.push_str("x'");
        let salt = self.plaintext_header.then(|| salt(&self.key));
        for b in self.key.as_bytes().iter().chain(salt.iter().flatten()) {
            let _ = write!(spec, "{b:02x}");
        }
        spec.push('\'');
        spec
    }
}

/// The salt of a store with a plaintext header, derived from the key: the first 16 bytes of
/// SHA-256 over a fixed label and the key. With a random raw key the salt only serves to derive
/// the HMAC key from the encryption key, so deriving it loses nothing, and unlike a salt kept in
/// a file beside the database it cannot be lost or fall out of step with it (a re-key changes
/// both together).
fn salt(key: &StoreKey) -> [u8; SALT_BYTES] {
    let mut hash = Sha256::new();
    hash.update(b"roam store salt v1\0");
    hash.update(key.as_bytes());
    let digest = hash.finalize();
    let mut salt = [0; SALT_BYTES];
    salt.copy_from_slice(&digest[..SALT_BYTES]);
    salt
}

/// Keys a connection that was just opened (before its first statement); nothing for a plain
/// store.
pub(crate) fn apply(conn: &Connection, cipher: Option<&Cipher>) -> Result<()> {
    let Some(cipher) = cipher else {
        return Ok(());
    };
    crypto::install();
    // SQLCipher logs a failed page decryption (a wrong key) to stderr; the error is returned
    // to the caller, and the core logs through `tracing`.
    conn.pragma_update(None, "cipher_log_level", "NONE")?;
    crypto::keying(cipher.format, || {
        conn.pragma_update(None, "key", cipher.key_spec())
    })?;
    conn.pragma_update(None, "cipher_hmac_algorithm", cipher.mac.pragma())?;
    conn.pragma_update(None, "cipher_page_size", cipher.page_size)?;
    if cipher.plaintext_header {
        conn.pragma_update(None, "cipher_plaintext_header_size", PLAINTEXT_HEADER_BYTES)?;
    }
    Ok(())
}

/// Opens the encrypted store at `path` with `flags`, keyed with `key`, and finds its layout
/// (page format, page HMAC and page size, see the module docs): the connection that read it, and the keying
/// that did. A key that reads the store with none of them fails with [`Error::InvalidKey`],
/// having written nothing.
pub(crate) fn open_keyed(
    path: &Path,
    flags: OpenFlags,
    key: &StoreKey,
    plaintext_header: bool,
) -> Result<(Connection, Cipher)> {
    let mut refused = None;
    // With a plaintext header the page size is in the clear (SQLite's header, bytes 16-17), and
    // only layouts of that page size are tried: SQLCipher keyed with another page size than
    // a plain header's crashes reading it (it does not with an encrypted header, whose HMAC
    // just fails).
    let header_page_size = if plaintext_header {
        plain_page_size(path)?
    } else {
        None
    };
    for (format, mac, page_size) in layouts() {
        if header_page_size.is_some_and(|size| size != page_size) {
            continue;
        }
        let cipher = Cipher {
            key: key.clone(),
            plaintext_header,
            format,
            mac,
            page_size,
        };
        let conn = super::open_file(path, flags)?;
        apply(&conn, Some(&cipher))?;
        match verify(&conn, path, Some(&cipher)) {
            Ok(()) => return Ok((conn, cipher)),
            Err(e @ Error::InvalidKey { .. }) => refused = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(refused.unwrap_or_else(|| Error::InvalidKey {
        path: path.display().to_string(),
    }))
}

/// The page size in the plain SQLite header of the file at `path` (`None`: no such header).
/// The value 1 stands for 65,536.
fn plain_page_size(path: &Path) -> Result<Option<u32>> {
    let mut head = Vec::with_capacity(18);
    std::fs::File::open(path)
        .and_then(|f| f.take(18).read_to_end(&mut head))
        .map_err(|e| Error::file(path, e))?;
    if head.len() < 18 || !head.starts_with(SQLITE_MAGIC) {
        return Ok(None);
    }
    Ok(Some(match u16::from_be_bytes([head[16], head[17]]) {
        1 => 65_536,
        n => u32::from(n),
    }))
}

/// Reads the schema through `conn` (keyed with `cipher`): fails with [`Error::InvalidKey`] when
/// the file cannot be decrypted with that key, or is encrypted and there is none. SQLite says
/// `SQLITE_NOTADB` when the header does not decrypt; with a plaintext header the header reads
/// and the page's failed HMAC comes back as a plain `SQLITE_ERROR` (or as corruption), and
/// without a key such a file is an "unsupported file format" (`SQLITE_ERROR` too).
pub(crate) fn verify(conn: &Connection, path: &Path, cipher: Option<&Cipher>) -> Result<()> {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase, Unknown};
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == NotADatabase
                || (matches!(e.code, Unknown | DatabaseCorrupt)
                    && (cipher.is_some()
                        || matches!(inspect(path), Ok(Found::Encrypted { .. })))) =>
        {
            Err(Error::InvalidKey {
                path: path.display().to_string(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// What is at a store's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// No database yet (no file, or an empty one).
    New,
    /// A plain SQLite database.
    Plain,
    /// An encrypted database, with or without a plaintext header.
    Encrypted {
        /// Whether its first 32 bytes are plain.
        plaintext_header: bool,
    },
}

/// Tells what the file at `path` is from its first bytes (see the module docs).
pub(crate) fn inspect(path: &Path) -> Result<Found> {
    let mut head = Vec::with_capacity(PLAINTEXT_HEADER_BYTES as usize);
    match std::fs::File::open(path) {
        Ok(file) => {
            file.take(u64::from(PLAINTEXT_HEADER_BYTES))
                .read_to_end(&mut head)
                .map_err(|e| Error::file(path, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::file(path, e)),
    }
    if head.is_empty() {
        return Ok(Found::New);
    }
    if head.len() <= RESERVED_BYTE || !head.starts_with(SQLITE_MAGIC) {
        // Too short for a header, or a header that is not SQLite's: encrypted, or not a
        // database at all (the key check tells which).
        return Ok(if head.starts_with(SQLITE_MAGIC) {
            Found::Plain
        } else {
            Found::Encrypted {
                plaintext_header: false,
            }
        });
    }
    Ok(if head[RESERVED_BYTE] == 0 {
        Found::Plain
    } else {
        Found::Encrypted {
            plaintext_header: true,
        }
    })
}

/// The file a store is copied into before it replaces the store: `<db>-new`.
pub(crate) fn new_file(path: &Path) -> PathBuf {
    sibling(path, "-new")
}

/// `path` with `suffix` appended to its file name.
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.to_owned().into_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Deletes the database file `path` and its journal, WAL and shared-memory files, where they
/// exist.
pub(crate) fn remove_files(path: &Path) -> Result<()> {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let file = sibling(path, suffix);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::file(&file, e)),
        }
    }
    Ok(())
}

/// Copies the WAL of the database `conn` has open into the database file and empties it, so
/// the file holds every commit by itself. `conn` must be the only connection to the file.
pub(crate) fn checkpoint_all(conn: &Connection) -> Result<()> {
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    if busy != 0 {
        return Err(Error::state(
            "the database is busy: its WAL cannot be checkpointed",
        ));
    }
    Ok(())
}

/// Copies the whole database `conn` has open (schema, rows, `user_version`) into a new file
/// `to`, encrypted with `cipher` (`None`: plain), and syncs it to disk. A file already at `to`
/// is deleted first.
pub(crate) fn export(conn: &Connection, to: &Path, cipher: Option<&Cipher>) -> Result<()> {
    remove_files(to)?;
    let name = to
        .to_str()
        .ok_or_else(|| Error::invalid(format!("{} is not a UTF-8 path", to.display())))?;
    let key = cipher.map(Cipher::key_spec).unwrap_or_default();
    if cipher.is_some() {
        crypto::install();
    }
    let format = cipher.map_or(PageFormat::Sqlcipher, |c| c.format);
    crypto::keying(format, || {
        conn.execute(
            &format!("ATTACH DATABASE ?1 AS {EXPORT_SCHEMA} KEY ?2"),
            params![name, key],
        )
    })?;
    let copied = (|| -> Result<()> {
        if let Some(c) = cipher {
            conn.pragma_update(Some(EXPORT_SCHEMA), "cipher_hmac_algorithm", c.mac.pragma())?;
            conn.pragma_update(Some(EXPORT_SCHEMA), "cipher_page_size", c.page_size)?;
        }
        if cipher.is_some_and(|c| c.plaintext_header) {
            conn.pragma_update(
                Some(EXPORT_SCHEMA),
                "cipher_plaintext_header_size",
                PLAINTEXT_HEADER_BYTES,
            )?;
        }
        conn.query_row(
            &format!("SELECT sqlcipher_export('{EXPORT_SCHEMA}')"),
            [],
            |_| Ok(()),
        )?;
        let version: i64 = conn.pragma_query_value(Some("main"), "user_version", |r| r.get(0))?;
        conn.pragma_update(Some(EXPORT_SCHEMA), "user_version", version)?;
        Ok(())
    })();
    let detached = conn.execute_batch(&format!("DETACH DATABASE {EXPORT_SCHEMA}"));
    copied?;
    detached?;
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::file(to, e))
}

/// Puts the finished copy `new` in the place of the database `path`, whose connections must
/// all be closed and whose WAL was checkpointed: deletes its WAL and shared-memory files (a WAL
/// left beside the new file would be replayed into it), renames `new` over it and syncs the
/// directory.
pub(crate) fn swap_in(new: &Path, path: &Path) -> Result<()> {
    for suffix in ["-wal", "-shm"] {
        let file = sibling(path, suffix);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::file(&file, e)),
        }
    }
    std::fs::rename(new, path).map_err(|e| Error::file(path, e))?;
    sync_dir(path)
}

/// Syncs the directory holding `path`, so a rename in it survives a power loss.
#[cfg(unix)]
fn sync_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::file(dir, e))
}

/// Directories cannot be opened for syncing here; the rename is as durable as the platform
/// makes it.
#[cfg(not(unix))]
fn sync_dir(_path: &Path) -> Result<()> {
    Ok(())
}
