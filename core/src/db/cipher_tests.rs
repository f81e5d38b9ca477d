//! Tests of the encrypted store (see `cipher`).

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags};

use super::cipher::{self, Cipher};
use super::crypto::PageFormat;
use super::Db;
use crate::config::StoreKey;
use crate::error::Error;

fn key(byte: u8) -> StoreKey {
    StoreKey::new([byte; StoreKey::LEN])
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    cipher::sibling(path, suffix)
}

/// Stores a confirmed message with `body` through the writer.
fn put_message(db: &Db, id: &str, body: &str) {
    db.writer()
        .execute(
            "INSERT INTO messages (local_id, server_id, room, seq, sender, body, created_at) \
             VALUES (?1, ?1, 'r', (SELECT COALESCE(max(seq), 0) + 1 FROM messages), 'you', ?2, 0)",
            params![id, body],
        )
        .expect("insert");
    db.committed();
}

fn bodies(db: &Db) -> Vec<String> {
    db.read(|c| {
        let mut stmt = c.prepare("SELECT body FROM messages ORDER BY seq")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
    })
    .expect("read")
}

/// Whether `needle` occurs in the file at `path` (false when there is no file).
fn file_contains(path: &Path, needle: &str) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn anywhere(path: &Path, needle: &str) -> bool {
    ["", "-wal", "-shm", "-new"]
        .iter()
        .any(|s| file_contains(&sibling(path, s), needle))
}

#[test]
fn an_encrypted_store_keeps_no_plain_text_on_disk_and_reopens_with_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = "zebra-quartz-7d1f secret message";
    // The same writes to a plain store leave the text on disk: the check below can fail.
    let plain = dir.path().join("plain.db");
    {
        let db = Db::open(&plain).expect("open plain");
        put_message(&db, "m1", secret);
        assert!(anywhere(&plain, secret), "the plain store holds the text");
    }
    let path = dir.path().join("a.db");
    {
        let db = Db::open_with(&path, Some(&key(7)), false).expect("open");
        put_message(&db, "m1", secret);
        // Still in the WAL (no checkpoint yet), and nowhere readable.
        assert!(sibling(&path, "-wal").exists());
        assert!(!anywhere(&path, secret), "plain text on disk");
        assert_eq!(bodies(&db), [secret]);
        let head = std::fs::read(&path).expect("file");
        assert!(
            !head.starts_with(b"SQLite format 3"),
            "the header is encrypted"
        );
        db.close();
    }
    assert!(!anywhere(&path, secret), "plain text on disk after close");
    let db = Db::open_with(&path, Some(&key(7)), false).expect("reopen");
    assert_eq!(bodies(&db), [secret]);
}

#[test]
fn a_plaintext_header_leaves_only_the_sqlite_header_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.db");
    let secret = "plaintext-header-unique-31337";
    {
        let db = Db::open_with(&path, Some(&key(3)), true).expect("open");
        put_message(&db, "m1", secret);
        db.close();
    }
    let bytes = std::fs::read(&path).expect("file");
    assert!(bytes.starts_with(b"SQLite format 3\0"), "plain header");
    assert_eq!(
        u16::from_be_bytes([bytes[16], bytes[17]]),
        cipher::PAGE_BYTES as u16,
        "page size"
    );
    assert_ne!(bytes[20], 0, "bytes reserved per page for SQLCipher");
    assert!(!anywhere(&path, secret));
    assert_eq!(
        cipher::inspect(&path).expect("inspect"),
        cipher::Found::Encrypted {
            plaintext_header: true
        }
    );
    // Opened with the option off, the store is still read as it is.
    let db = Db::open_with(&path, Some(&key(3)), false).expect("reopen");
    assert_eq!(bodies(&db), [secret]);
    db.close();
    let bytes = std::fs::read(&path).expect("file");
    for wrong in [Some(key(4)), None] {
        let err = Db::open_with(&path, wrong.as_ref(), true).expect_err("refused");
        assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
    }
    assert_eq!(std::fs::read(&path).expect("file"), bytes, "file untouched");
    // Its pages carry HMAC-SHA256: read as SQLCipher's default HMAC-SHA512 they fail.
    let sha512 = Cipher {
        mac: cipher::PageMac::Sha512,
        ..Cipher::new(&key(3), true)
    };
    let conn = Connection::open(&path).expect("conn");
    cipher::apply(&conn, Some(&sha512)).expect("key");
    let err = cipher::verify(&conn, &path, Some(&sha512)).expect_err("not SHA-512");
    assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
    let sha256 = Connection::open(&path).expect("conn");
    cipher::apply(&sha256, Some(&Cipher::new(&key(3), true))).expect("key");
    cipher::verify(&sha256, &path, Some(&Cipher::new(&key(3), true))).expect("SHA-256");
}

#[test]
fn a_wrong_key_or_no_key_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.db");
    {
        let db = Db::open_with(&path, Some(&key(1)), false).expect("open");
        put_message(&db, "m1", "hello");
        db.close();
    }
    let before = std::fs::read(&path).expect("file");
    for attempt in [Some(key(2)), None] {
        let err = Db::open_with(&path, attempt.as_ref(), false).expect_err("refused");
        assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
        assert!(err.to_string().contains("key"), "{err}");
        assert_eq!(
            std::fs::read(&path).expect("file"),
            before,
            "file untouched"
        );
        assert!(!sibling(&path, "-new").exists());
    }
    let db = Db::open_with(&path, Some(&key(1)), false).expect("right key");
    assert_eq!(bodies(&db), ["hello"]);
}

#[test]
fn a_plain_store_with_data_is_encrypted_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.db");
    let secret = "migrated-unique-ff00aa";
    {
        let db = Db::open(&path).expect("plain");
        put_message(&db, "m1", secret);
        put_message(&db, "m2", "second");
        // Left open with its WAL, as after a crash: the migration checkpoints it first.
    }
    assert!(anywhere(&path, secret));
    {
        let db = Db::open_with(&path, Some(&key(9)), false).expect("encrypt");
        assert_eq!(bodies(&db), [secret, "second"]);
        db.close();
    }
    assert!(!anywhere(&path, secret), "plain text left on disk");
    assert!(!sibling(&path, "-new").exists());
    assert!(matches!(Db::open(&path), Err(Error::InvalidKey { .. })));
    let db = Db::open_with(&path, Some(&key(9)), false).expect("reopen");
    assert_eq!(bodies(&db), [secret, "second"]);
    db.close();
    assert_eq!(
        cipher::inspect(&path).expect("inspect"),
        cipher::Found::Encrypted {
            plaintext_header: false
        }
    );
}

/// A crash while encrypting leaves either a half-written copy or a finished one beside the
/// plain store; either way the plain store is whole, and the next open with the key encrypts
/// it and loses nothing.
#[test]
fn a_crash_in_the_middle_of_the_migration_leaves_a_usable_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    for crash in ["half-written copy", "finished copy, not renamed"] {
        let path = dir.path().join(format!("{}.db", crash.len()));
        {
            let db = Db::open(&path).expect("plain");
            put_message(&db, "m1", "before the crash");
        }
        let copy = cipher::new_file(&path);
        match crash {
            "half-written copy" => {
                std::fs::write(&copy, b"SQLite format 3\0 and then the power went").expect("w")
            }
            _ => {
                let conn = Connection::open(&path).expect("conn");
                cipher::checkpoint_all(&conn).expect("checkpoint");
                let c = Cipher::new(&key(5), false);
                cipher::export(&conn, &copy, Some(&c)).expect("export");
            }
        }
        // Without the key the store still opens as the plain store it was.
        {
            let db = Db::open(&path).expect("plain still");
            assert_eq!(bodies(&db), ["before the crash"], "{crash}");
            db.close();
        }
        std::fs::write(&copy, b"junk").expect("leftover again");
        let db = Db::open_with(&path, Some(&key(5)), false).expect("encrypt");
        assert_eq!(bodies(&db), ["before the crash"], "{crash}");
        put_message(&db, "m2", "after");
        db.close();
        assert!(!copy.exists(), "{crash}: the stray copy is gone");
        let db = Db::open_with(&path, Some(&key(5)), false).expect("reopen");
        assert_eq!(bodies(&db), ["before the crash", "after"], "{crash}");
    }
}

#[test]
fn change_key_re_encrypts_an_open_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.db");
    let db = Db::open_with(&path, Some(&key(1)), false).expect("open");
    db.set_max_bytes(64 * 1024 * 1024).expect("cap");
    put_message(&db, "m1", "one");
    assert_eq!(bodies(&db), ["one"]);
    db.change_key(Some(&key(2))).expect("rekey");
    // Writes, reads (new reader connections) and the cap go on with the new key.
    put_message(&db, "m2", "two");
    assert_eq!(bodies(&db), ["one", "two"]);
    let cap: i64 = db
        .writer()
        .pragma_query_value(None, "max_page_count", |r| r.get(0))
        .expect("cap");
    assert!(
        cap < 1_000_000,
        "the cap is applied to the new writer: {cap}"
    );
    db.close();
    assert!(matches!(
        Db::open_with(&path, Some(&key(1)), false),
        Err(Error::InvalidKey { .. })
    ));
    let db = Db::open_with(&path, Some(&key(2)), false).expect("new key");
    assert_eq!(bodies(&db), ["one", "two"]);
    // Decrypting to a plain store, and encrypting it again while open.
    db.change_key(None).expect("decrypt");
    put_message(&db, "m3", "three-plain-unique");
    db.close();
    assert!(anywhere(&path, "three-plain-unique"));
    let db = Db::open(&path).expect("plain");
    db.change_key(Some(&key(3))).expect("encrypt open store");
    db.close();
    assert!(!anywhere(&path, "three-plain-unique"));
    let db = Db::open_with(&path, Some(&key(3)), false).expect("key 3");
    assert_eq!(bodies(&db), ["one", "two", "three-plain-unique"]);
}

/// A store encrypted by an earlier build in SQLCipher's page format (4 KiB pages with
/// SQLCipher 4's HMAC-SHA512 on each, or with HMAC-SHA256; 1 KiB pages with HMAC-SHA256; with
/// or without a plaintext header) opens with its key, for the app and for a second process,
/// and a re-key moves it to this build's layout; a wrong key is still refused.
#[test]
fn a_store_of_an_earlier_layout_still_opens_and_a_re_key_moves_it_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layouts = [
        (cipher::PageMac::Sha512, cipher::LEGACY_PAGE_BYTES),
        (cipher::PageMac::Sha256, cipher::LEGACY_PAGE_BYTES),
        (cipher::PageMac::Sha256, cipher::SMALL_PAGE_BYTES),
    ];
    for ((mac, page_size), plaintext_header) in
        layouts.into_iter().flat_map(|l| [(l, false), (l, true)])
    {
        let path = dir
            .path()
            .join(format!("legacy-{mac:?}-{page_size}-{plaintext_header}.db"));
        {
            let db = Db::open(&path).expect("plain");
            put_message(&db, "m1", "written-before-unique");
        }
        let legacy = Cipher {
            format: PageFormat::Sqlcipher,
            mac,
            page_size,
            ..Cipher::new(&key(7), plaintext_header)
        };
        {
            let conn = Connection::open(&path).expect("conn");
            cipher::checkpoint_all(&conn).expect("checkpoint");
            cipher::export(&conn, &cipher::new_file(&path), Some(&legacy)).expect("export");
        }
        cipher::swap_in(&cipher::new_file(&path), &path).expect("swap");
        assert!(!anywhere(&path, "written-before-unique"));
        if plaintext_header {
            let bytes = std::fs::read(&path).expect("file");
            assert_ne!(bytes[20], 0, "IV and HMAC");
            assert_eq!(
                u32::from(u16::from_be_bytes([bytes[16], bytes[17]])),
                page_size
            );
        }
        let before = std::fs::read(&path).expect("file");
        let err = Db::open_with(&path, Some(&key(8)), plaintext_header).expect_err("wrong");
        assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
        assert_eq!(std::fs::read(&path).expect("file"), before, "untouched");

        let db = Db::open_with(&path, Some(&key(7)), plaintext_header).expect("legacy opens");
        assert_eq!(*db.cipher.lock(), Some(legacy.clone()));
        put_message(&db, "m2", "written-after-unique");
        assert_eq!(
            bodies(&db),
            ["written-before-unique", "written-after-unique"]
        );
        let shared = super::shared::SharedDb::open(&path, Some(&key(7))).expect("shared");
        drop(shared);
        db.change_key(Some(&key(7))).expect("re-key");
        assert_eq!(
            *db.cipher.lock(),
            Some(Cipher::new(&key(7), plaintext_header))
        );
        db.close();
        let db = Db::open_with(&path, Some(&key(7)), plaintext_header).expect("re-keyed");
        assert_eq!(
            db.cipher
                .lock()
                .as_ref()
                .map(|c| (c.format, c.mac, c.page_size)),
            Some((
                PageFormat::Sealed,
                cipher::PageMac::Sha256,
                cipher::PAGE_BYTES
            ))
        );
        assert_eq!(
            bodies(&db),
            ["written-before-unique", "written-after-unique"]
        );
        db.close();
        assert!(!anywhere(&path, "written-after-unique"));
    }
}

#[test]
fn a_closed_store_cannot_be_re_keyed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_with(&dir.path().join("a.db"), Some(&key(1)), false).expect("open");
    db.close();
    assert!(matches!(db.change_key(Some(&key(2))), Err(Error::Shutdown)));
}

#[test]
fn store_keys_must_be_32_bytes_and_do_not_print() {
    assert!(StoreKey::from_slice(&[0; 31]).is_err());
    assert!(StoreKey::from_slice(&[0; 33]).is_err());
    let k = StoreKey::from_slice(&[0xab; 32]).expect("32 bytes");
    assert!(!format!("{k:?}").contains("ab"));
}

/// A page of an encrypted store copied over another page of the same table (both well-formed
/// leaves, which SQLite alone would read as rows) is refused when read, as is a page with one
/// byte changed; the untouched store reads.
#[test]
fn a_moved_or_changed_page_of_an_encrypted_store_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Cipher::new(&key(9), false);
    assert_eq!(c.format, PageFormat::Sealed);
    let page = c.page_size as usize;
    let write = |path: &Path| {
        let conn = Connection::open(path).expect("open");
        cipher::apply(&conn, Some(&c)).expect("key");
        conn.execute_batch(
            "PRAGMA journal_mode = DELETE;
             CREATE TABLE t (x TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
             INSERT INTO t SELECT printf('row-%05d-%s', i, hex(zeroblob(40))) FROM n;",
        )
        .expect("rows");
    };
    let read = |path: &Path| -> rusqlite::Result<(i64, i64)> {
        let conn = Connection::open(path)?;
        cipher::apply(&conn, Some(&c)).map_err(|_| rusqlite::Error::InvalidQuery)?;
        conn.query_row("SELECT count(*), count(DISTINCT x) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    };
    let path = dir.path().join("whole.db");
    write(&path);
    assert_eq!(read(&path).expect("reads"), (2000, 2000));
    let bytes = std::fs::read(&path).expect("file");
    assert!(bytes.len() / page > 20, "the table spans many pages");

    // Page 10 copied over page 11: both are leaves of `t`.
    let moved = dir.path().join("moved.db");
    let mut copy = bytes.clone();
    copy.copy_within(9 * page..10 * page, 10 * page);
    std::fs::write(&moved, &copy).expect("write");
    read(&moved).expect_err("a moved page is refused");

    let changed = dir.path().join("changed.db");
    let mut copy = bytes.clone();
    copy[10 * page + 100] ^= 1;
    std::fs::write(&changed, &copy).expect("write");
    read(&changed).expect_err("a changed page is refused");
}

/// `VACUUM` on a sealed store (SQLite attaches a scratch database keyed with the main one's key,
/// outside [`crate::db::crypto::keying`], so in SQLCipher's format) leaves it sealed and whole.
#[test]
fn vacuum_keeps_a_sealed_store_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v.db");
    let c = Cipher::new(&key(9), false);
    let conn = Connection::open(&path).expect("open");
    cipher::apply(&conn, Some(&c)).expect("key");
    conn.execute_batch(
        "CREATE TABLE t (x TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
         INSERT INTO t SELECT printf('vacuumed-%05d', i) FROM n;
         DELETE FROM t WHERE rowid % 2 = 0;
         VACUUM;",
    )
    .expect("rows and vacuum");
    drop(conn);
    assert!(!anywhere(&path, "vacuumed-"));
    let (conn, found) =
        cipher::open_keyed(&path, OpenFlags::default(), &key(9), false).expect("reopen");
    assert_eq!(found.format, PageFormat::Sealed);
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM t WHERE x LIKE 'vacuumed-%'",
            [],
            |r| r.get(0),
        )
        .expect("read");
    assert_eq!(n, 1000);
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(ok, "ok");
}
