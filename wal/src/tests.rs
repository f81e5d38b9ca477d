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
