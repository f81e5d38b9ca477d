//! Tests of what is the SQLite store's own (its group commit, its migrations, its indexes, its
//! sync mode) against real database files in temporary directories; the behaviour every store
//! shares is `store/suite.rs`, run here on a fresh file.

#![allow(clippy::unwrap_used)]

use tempfile::TempDir;

use super::writer::{commit_group, Job};
use super::{read, schema, SqliteStore};
use crate::store::suite::*;

async fn open(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(&db_path(dir), 2).await.unwrap()
}

fn db_path(dir: &TempDir) -> std::path::PathBuf {
    dir.path().join("nested").join("roam.db")
}

/// A store in a temporary directory of its own.
struct SqliteHarness {
    dir: TempDir,
}

#[async_trait::async_trait]
impl Harness for SqliteHarness {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(open(&self.dir).await)
    }
}

async fn harness() -> SqliteHarness {
    SqliteHarness {
        dir: tempfile::tempdir().unwrap(),
    }
}

mod suite {
    use crate::store::suite::*;
    crate::store::suite::store_suite!(super::harness());
}

/// Runs one group directly on a writer connection, so the failing job is certainly in the same
/// transaction as the good ones.
#[tokio::test]
async fn a_failing_write_does_not_undo_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    drop(open(&dir).await); // creates and migrates
    let mut conn = schema::open_writer(&path, schema::Synchronous::Full)
        .unwrap()
        .0;

    let mut batch = Vec::new();
    let mut answers = Vec::new();
    let mut add = |w: Write| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        batch.push(Job::Commit(Box::new(w), tx));
        answers.push(rx);
    };
    add(write(
        "alice",
        T0,
        create_room("grp", RoomKind::Public, "alice"),
    ));
    add(write("alice", T0, message("grp", "g1", "one")));
    add(write(
        "alice",
        T0,
        Change::EditMessage {
            room: "grp".into(),
            id: "missing".into(),
            body: "nope".into(),
        },
    ));
    add(write("alice", T0, message("grp", "g1", "duplicate id")));
    add(write("alice", T0, message("grp", "g2", "two")));
    commit_group(&mut conn, &mut batch);
    assert!(batch.is_empty());

    let mut results = Vec::new();
    for rx in answers {
        results.push(rx.await.unwrap());
    }
    assert!(results[0].is_ok());
    match &results[1] {
        Ok(Committed::Applied { output, .. }) => assert_eq!(seq_of(output), 3),
        other => panic!("{other:?}"),
    }
    assert!(matches!(results[2], Err(StoreError::NotFound("message"))));
    assert!(matches!(results[3], Err(StoreError::Conflict(_))));
    // The failed writes took no seq: the next good one is contiguous.
    match &results[4] {
        Ok(Committed::Applied { output, .. }) => assert_eq!(seq_of(output), 4),
        other => panic!("{other:?}"),
    }
    drop(conn);

    let store = open(&dir).await;
    let msgs = store
        .messages("grp", MessageCursor::After(0), 10)
        .await
        .unwrap()
        .items;
    assert_eq!(
        msgs.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        vec!["one", "two"]
    );
    assert_eq!(store.event_bounds("grp").await.unwrap(), (1, 4));
}

#[tokio::test]
async fn pool_stats_and_ping() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    store.ping().await.unwrap();
    let stats = store.pool_stats();
    assert_eq!(
        (stats.size, stats.in_use, stats.waiting, stats.write_queue),
        (2, 0, 0, 0)
    );
    assert!(format!("{store:?}").contains("SqliteStore"));
}

#[test]
fn migrations_are_idempotent_and_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(
        schema::migrate(&mut conn).unwrap(),
        schema::MIGRATIONS.len()
    );
    assert_eq!(
        schema::migrate(&mut conn).unwrap(),
        schema::MIGRATIONS.len()
    );
    conn.pragma_update(None, "user_version", 999).unwrap();
    assert!(matches!(
        schema::migrate(&mut conn),
        Err(StoreError::Backend(_))
    ));
}

#[test]
fn cursors_round_trip_and_reject_garbage() {
    let c = read::encode_cursor(-42, "we:ird id");
    assert_eq!(read::decode_cursor(&c), Some((-42, "we:ird id".to_owned())));
    for bad in ["", "zz", "abc", "3a", "é1", "7878"] {
        assert_eq!(read::decode_cursor(bad), None, "{bad:?}");
    }
    assert_eq!(read::like_pattern(""), "");
    assert_eq!(read::like_pattern("a_%\\"), "%a\\_\\%\\\\%");
}

/// `EXPLAIN QUERY PLAN` of the exact statements the store runs: each must search by an index,
/// and the big tables (messages, events, notifications) must never be scanned.
#[test]
fn hot_queries_use_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.db");
    let conn = schema::open_writer(&path, schema::Synchronous::Full)
        .unwrap()
        .0;
    let cases: &[(&str, &str, &str)] = &[
        (
            "messages before",
            read::MESSAGES_BEFORE,
            "messages_room_seq",
        ),
        ("messages after", read::MESSAGES_AFTER, "messages_room_seq"),
        ("message", read::MESSAGE, "sqlite_autoindex_messages_1"),
        (
            "events after",
            read::EVENTS_AFTER,
            "sqlite_autoindex_events_1",
        ),
        (
            "event bounds",
            read::EVENT_BOUNDS,
            "sqlite_autoindex_events_1",
        ),
        ("notifications", read::NOTIFICATIONS, "PRIMARY KEY"),
        (
            "unread notifications",
            read::UNREAD_NOTIFICATIONS,
            "notifications_unread",
        ),
        ("unread count", read::UNREAD_COUNT, "notifications_unread"),
        ("read marker", read::READ_MARKER, "PRIMARY KEY"),
        ("read markers", read::READ_MARKERS, "PRIMARY KEY"),
        (
            "read mentions",
            super::apply::READ_MENTIONS,
            "notifications_unread",
        ),
        ("rooms of", read::ROOMS_OF, "members_user_status"),
        ("list rooms", read::LIST_ROOMS, "sqlite_autoindex_rooms_1"),
        (
            "list joined rooms",
            read::LIST_JOINED_ROOMS,
            "members_user_status",
        ),
        ("list members", read::LIST_MEMBERS, "PRIMARY KEY"),
        ("room", read::ROOM, "members_room_status"),
        (
            "invitations for",
            read::INVITATIONS_FOR,
            "invitations_invitee",
        ),
        (
            "room invitations",
            read::ROOM_INVITATIONS,
            "invitations_room_created",
        ),
        (
            "pending invitation",
            read::PENDING_INVITATION,
            "invitations_room_invitee",
        ),
        (
            "document",
            read::DOCUMENT,
            "sqlite_autoindex_document_versions_1",
        ),
        (
            "document history",
            read::DOCUMENT_HISTORY,
            "sqlite_autoindex_document_versions_1",
        ),
        (
            "idempotency",
            read::IDEMPOTENT_RESULT,
            "sqlite_autoindex_idempotency_1",
        ),
        (
            "users by created_at",
            read::USERS_BY_CREATED_ASC,
            "users_created_at",
        ),
        (
            "users by created_at, next",
            read::USERS_BY_CREATED_ASC_NEXT,
            "users_created_at",
        ),
        (
            "users by created_at desc, next",
            read::USERS_BY_CREATED_DESC_NEXT,
            "users_created_at",
        ),
        (
            "users by last_seen, next",
            read::USERS_BY_SEEN_ASC_NEXT,
            "users_last_seen",
        ),
        (
            "users by last_seen desc",
            read::USERS_BY_SEEN_DESC,
            "users_last_seen",
        ),
        (
            "users by last_seen desc, next",
            read::USERS_BY_SEEN_DESC_NEXT,
            "users_last_seen",
        ),
        (
            "users by id, next",
            read::USERS_BY_ID_ASC_NEXT,
            "PRIMARY KEY",
        ),
        (
            "users by id desc, next",
            read::USERS_BY_ID_DESC_NEXT,
            "PRIMARY KEY",
        ),
        (
            "activity by day",
            read::ACTIVITY_BY_DAY,
            "messages_room_created",
        ),
        (
            "activity by week",
            read::ACTIVITY_BY_WEEK,
            "messages_room_created",
        ),
        (
            "activity by month",
            read::ACTIVITY_BY_MONTH,
            "messages_room_created",
        ),
        (
            "activity by year",
            read::ACTIVITY_BY_YEAR,
            "messages_room_created",
        ),
    ];
    for (name, sql, index) in cases {
        let plan = explain(&conn, sql);
        assert!(plan.contains(index), "{name}: expected {index} in\n{plan}");
        for line in plan.lines() {
            for big in ["messages", "events", "notifications"] {
                assert!(
                    !line.starts_with(&format!("SCAN {big}")),
                    "{name}: scans {big}:\n{plan}"
                );
            }
            if line.starts_with("SCAN ") && line != "SCAN CONSTANT ROW" {
                assert!(
                    line.contains("INDEX"),
                    "{name}: scan without an index:\n{plan}"
                );
            }
        }
        assert!(
            plan.contains("SEARCH") || plan.contains("USING INDEX"),
            "{name}: no index use:\n{plan}"
        );
        if name.ends_with("next") {
            // A later page must seek to its cursor, not walk the pages before it.
            assert!(plan.starts_with("SEARCH users"), "{name}: no seek:\n{plan}");
        }
    }
}

/// The plan's detail lines, one per line.
fn explain(conn: &rusqlite::Connection, sql: &str) -> String {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
    let rows = stmt
        .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
        .unwrap();
    rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn the_writer_syncs_every_commit_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    assert_eq!(store.synchronous(), schema::Synchronous::Full);
    drop(store);
    let store = SqliteStore::open_with(&db_path(&dir), 1, schema::Synchronous::Normal)
        .await
        .unwrap();
    assert_eq!(store.synchronous(), schema::Synchronous::Normal);
}

/// The SQLite writer takes a purge batch and the next queued write in turn.
#[tokio::test]
async fn a_purge_runs_in_batches_that_let_writes_in_between() {
    let h = harness().await;
    let store = h.open().await;
    // 1,000 old notifications for carol, in one write.
    let notify: Vec<NewNotification> = (0..1_000)
        .map(|i| NewNotification {
            user: "carol".into(),
            id: format!("n{i}"),
            kind: "mentioned".into(),
            room: None,
            data: json!({}),
        })
        .collect();
    apply(
        &*store,
        Write {
            notify,
            ..write("bob", T0, Change::MarkRead { ids: Some(vec![]) })
        },
    )
    .await;
    assert_eq!(store.unread_count("carol").await.unwrap(), 1_000);

    // The pass starts (its first batch is queued) before carol's write is queued.
    let purging = tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            store
                .purge(RetentionCutoffs {
                    notifications_before: T0 + 1,
                    batch_rows: 100,
                    ..nothing_expires()
                })
                .await
        }
    });
    tokio::task::yield_now().await;
    // A write that changes nothing and reports how many of carol's notifications are left
    // when it commits: between two batches, some are gone and some are not.
    let (output, _) = apply(
        &*store,
        write("carol", T0 + 2, Change::MarkRead { ids: Some(vec![]) }),
    )
    .await;
    let Output::Unread { unread: left } = output else {
        panic!("{output:?}")
    };
    assert!(
        0 < left && left < 1_000,
        "the write went in between batches ({left} left)"
    );
    let purged = purging.await.unwrap().unwrap();
    assert_eq!(purged.notifications, 1_000);
    assert!(purged.batches >= 10, "{purged:?}");
    assert_eq!(store.unread_count("carol").await.unwrap(), 0);
}
