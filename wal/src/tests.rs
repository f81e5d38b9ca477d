//! Tests of the gathered WAL writes: every commit is in the file before any other
//! connection can see it, through big transactions, cache spills and a killed writer.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use rusqlite::{Connection, OpenFlags};

/// The writer through the VFS under test, WAL, as the store opens it.
fn writer(path: &Path) -> Connection {
    let c = crate::open(path, OpenFlags::default()).expect("open");
    c.pragma_update(None, "journal_mode", "WAL").expect("wal");
    c.pragma_update(None, "synchronous", "NORMAL")
        .expect("sync");
    c.execute_batch("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        .expect("table");
    c
}

/// A reader on the default VFS: it sees only what is in the files.
fn plain_reader(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("reader")
}

fn count(c: &Connection) -> i64 {
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .expect("count")
}

fn integrity(c: &Connection) -> String {
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check")
}

#[test]
#[allow(unsafe_code)]
fn it_is_registered_under_its_name() {
    assert_eq!(super::name(), super::NAME.to_str().ok());
    // SAFETY: a lookup by a NUL-terminated name.
    let found = unsafe { rusqlite::ffi::sqlite3_vfs_find(super::NAME.as_ptr()) };
    assert!(!found.is_null());
}

#[test]
fn each_commit_is_in_the_file_when_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.db");
    let w = writer(&path);
    let r = plain_reader(&path);
    let body = "x".repeat(900);
    for i in 1..=300 {
        w.execute("INSERT INTO t (body) VALUES (?1)", [&body])
            .expect("insert");
        assert_eq!(count(&r), i, "commit {i} visible to another connection");
    }
    // A transaction bigger than what is gathered at once (its frames go out as it goes).
    let tx = w.unchecked_transaction().expect("tx");
    let big = "y".repeat(4000);
    for _ in 0..500 {
        tx.execute("INSERT INTO t (body) VALUES (?1)", [&big])
            .expect("insert");
    }
    assert_eq!(count(&r), 300, "nothing of an open transaction");
    tx.commit().expect("commit");
    assert_eq!(count(&r), 800);
    assert_eq!(integrity(&r), "ok");
}

/// Transactions of 1 to 300 pages of 1 KiB (up to past the most bytes gathered at once, at
/// every position of a commit frame against that limit): after each commit, a connection on the
/// default VFS reads every row of it, exact.
#[test]
fn commits_of_every_size_are_in_the_file_when_they_return() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.db");
    {
        let c = crate::open(&path, OpenFlags::default()).expect("open");
        c.pragma_update(None, "page_size", 1024).expect("page size");
    }
    let w = writer(&path);
    let r = plain_reader(&path);
    let mut rows = 0i64;
    let mut bytes = 0i64;
    for pages in 1..=300i64 {
        let tx = w.unchecked_transaction().expect("tx");
        for i in 0..pages {
            let body = format!("{pages}-{i}-{}", "b".repeat(800));
            bytes += body.len() as i64;
            tx.execute("INSERT INTO t (body) VALUES (?1)", [&body])
                .expect("insert");
        }
        tx.commit().expect("commit");
        rows += pages;
        let (n, total): (i64, i64) = r
            .query_row("SELECT count(*), sum(length(body)) FROM t", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .expect("read");
        assert_eq!(
            (n, total),
            (rows, bytes),
            "after the commit of {pages} pages"
        );
        let last: String = r
            .query_row("SELECT body FROM t ORDER BY id DESC LIMIT 1", [], |row| {
                row.get(0)
            })
            .expect("last");
        assert!(
            last.starts_with(&format!("{pages}-{}-", pages - 1)),
            "{last:.20}"
        );
    }
    assert_eq!(integrity(&r), "ok");
}

/// A writer with a tiny page cache spills pages to the WAL before its commit and writes some
/// of them again, out of order: what the file holds after the commit is still exact.
#[test]
fn spilled_and_rewritten_frames_stay_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.db");
    let w = writer(&path);
    w.pragma_update(None, "cache_size", 2).expect("cache");
    for round in 0..5 {
        let tx = w.unchecked_transaction().expect("tx");
        for i in 0..400 {
            tx.execute(
                "INSERT OR REPLACE INTO t (id, body) VALUES (?1, ?2)",
                rusqlite::params![i, format!("{round}-{i}-{}", "z".repeat(200))],
            )
            .expect("upsert");
        }
        tx.commit().expect("commit");
    }
    drop(w);
    let r = plain_reader(&path);
    assert_eq!(integrity(&r), "ok");
    assert_eq!(count(&r), 400);
    let last: String = r
        .query_row("SELECT body FROM t WHERE id = 399", [], |row| row.get(0))
        .expect("row");
    assert!(last.starts_with("4-399-"), "{last}");
}

/// Environment variable naming the database of [`child_writer`].
const CHILD_DB: &str = "ROAM_WAL_CHILD_DB";

/// Run by [`a_killed_writer_loses_no_commit`] in a process of its own: commits rows one by one
/// and prints each id once its commit returned, until it is killed.
#[test]
#[ignore = "a helper process of a_killed_writer_loses_no_commit"]
fn child_writer() {
    let Some(path) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let w = writer(Path::new(&path));
    let body = "k".repeat(700);
    let first: i64 = w
        .query_row("SELECT coalesce(max(id), 0) + 1 FROM t", [], |r| r.get(0))
        .expect("next id");
    for i in first.. {
        w.execute(
            "INSERT INTO t (id, body) VALUES (?1, ?2)",
            rusqlite::params![i, body],
        )
        .expect("insert");
        println!("committed {i}");
    }
}

/// A writer killed at any point (SIGKILL) loses no transaction whose commit had returned, and
/// leaves a database that passes its integrity check.
#[test]
fn a_killed_writer_loses_no_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.db");
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--ignored",
                "--exact",
                "tests::child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DB, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let out = child.stdout.take().expect("stdout");
        let mut last = 0i64;
        let target = 200 * (round + 1);
        let mut seen = Vec::new();
        for line in BufReader::new(out).lines() {
            let line = line.expect("line");
            if seen.len() < 20 {
                seen.push(line.clone());
            }
            if let Some(n) = line.strip_prefix("committed ") {
                last = n.parse().expect("id");
                if last >= target {
                    break;
                }
            }
        }
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(last >= target, "the child wrote ({last}): {seen:?}");
        let r = plain_reader(&path);
        assert_eq!(integrity(&r), "ok");
        let max: i64 = r
            .query_row("SELECT max(id) FROM t", [], |row| row.get(0))
            .expect("max");
        assert!(
            max >= last,
            "commit {last} returned, the file ends at {max}"
        );
        assert_eq!(count(&r), max, "no hole");
    }
}

/// The writes that reached the fake file of [`gathering`] (offset, length), in order.
static WRITTEN: std::sync::Mutex<Vec<(i64, usize)>> = std::sync::Mutex::new(Vec::new());

#[allow(unsafe_code)]
unsafe extern "C" fn fake_write(
    _file: *mut rusqlite::ffi::sqlite3_file,
    _data: *const std::ffi::c_void,
    amt: std::ffi::c_int,
    offset: i64,
) -> std::ffi::c_int {
    if let Ok(mut w) = WRITTEN.lock() {
        w.push((offset, amt as usize));
    }
    rusqlite::ffi::SQLITE_OK
}

/// A file that only records its writes.
static FAKE_METHODS: rusqlite::ffi::sqlite3_io_methods = rusqlite::ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: None,
    xRead: None,
    xWrite: Some(fake_write),
    xTruncate: None,
    xSync: None,
    xFileSize: None,
    xLock: None,
    xUnlock: None,
    xCheckReservedLock: None,
    xFileControl: None,
    xSectorSize: None,
    xDeviceCharacteristics: None,
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

/// The gathering itself, over a file that records its writes: a commit frame's page is written
/// out as soon as it is written, also when its header filled the gathering and went out alone;
/// a frame that is not a commit waits; a write that does not follow on sends what was gathered.
#[test]
#[allow(unsafe_code)]
fn gathering() {
    use super::{wal_write, Gathered, WalFile, MAX_GATHERED, WAL_METHODS};
    let mut inner = rusqlite::ffi::sqlite3_file {
        pMethods: &FAKE_METHODS,
    };
    let mut wal = WalFile {
        base: rusqlite::ffi::sqlite3_file {
            pMethods: &WAL_METHODS,
        },
        inner: &mut inner,
        gathered: Box::into_raw(Box::<Gathered>::default()),
    };
    let file = (&mut wal as *mut WalFile).cast::<rusqlite::ffi::sqlite3_file>();
    let header = |commit: bool| {
        let mut h = [0u8; 24];
        if commit {
            h[4..8].copy_from_slice(&7u32.to_be_bytes());
        }
        h
    };
    let page = vec![0u8; 1024];
    let write = |data: &[u8], offset: i64| {
        // SAFETY: `file` is the `WalFile` above, alive for the test; `data` is readable.
        let rc = unsafe { wal_write(file, data.as_ptr().cast(), data.len() as i32, offset) };
        assert_eq!(rc, rusqlite::ffi::SQLITE_OK);
        WRITTEN.lock().map(|w| w.clone()).unwrap_or_default()
    };
    // A frame that is not a commit, then a commit frame: nothing until the commit's page, then
    // all of it at once.
    assert!(write(&header(false), 32).is_empty());
    assert!(write(&page, 56).is_empty());
    assert!(write(&header(true), 1080).is_empty());
    assert_eq!(write(&page, 1104), [(32, 2 * (24 + 1024))]);
    // Gathered bytes up to 24 short of the most gathered; the commit header fills it and goes
    // out with them; its page still goes out at once.
    WRITTEN.lock().expect("lock").clear();
    let filler = vec![1u8; MAX_GATHERED - 10];
    assert!(write(&filler, 10_000).is_empty());
    let at = 10_000 + filler.len() as i64;
    let out = write(&header(true), at);
    assert_eq!(out.iter().map(|w| w.1).sum::<usize>(), filler.len() + 24);
    let out = write(&page, at + 24);
    assert_eq!(
        out.last(),
        Some(&(at + 24, 1024)),
        "the commit's page is in the file"
    );
    // A write that does not follow on sends what was gathered first.
    WRITTEN.lock().expect("lock").clear();
    assert!(write(&header(false), 500_000).is_empty());
    assert_eq!(write(&page, 900_000), [(500_000, 24)]);
    // SAFETY: frees what was allocated above, once.
    unsafe { drop(Box::from_raw(wal.gathered)) };
}
