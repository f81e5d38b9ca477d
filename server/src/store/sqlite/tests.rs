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
    commit_group(&mut conn, &mut batch, true);
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

/// A version-5 database (messages in their own table, the head seq in the room row) keeps
/// every message through migration 6: edited and deleted ones as they were, one whose creation
/// compaction had removed, one whose edit it had removed, stored results as first answered, and
/// the horizon that tells a client to reset.
#[tokio::test]
async fn migration_6_keeps_every_message_and_the_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for sql in &schema::MIGRATIONS[..5] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 5).unwrap();
        // A message's JSON as version 5 stored it in its events.
        let msg = |id: &str, seq: i64, body: &str, edited: Option<i64>, deleted: bool| {
            let edited = edited
                .map(|e| format!(r#","edited_at":{e}"#))
                .unwrap_or_default();
            format!(
                r#"{{"id":"{id}","room":"r","seq":{seq},"sender":"alice","body":"{body}","created_at":{seq}{edited},"deleted":{deleted}}}"#
            )
        };
        // Seqs 1 and 2 (created, joined) and 3 (message m1) were compacted away, and so was
        // the edit of m5 (seq 9); m3 was deleted at seq 7 (its creation redacted then).
        conn.execute_batch(&format!(
            "INSERT INTO rooms (name, head_seq, kind, owner, created_by, created_at, updated_at, \
                 title, metadata) VALUES ('r', 10, 'public', 'alice', 'alice', 1, 1, '', '{{}}');
             INSERT INTO messages (id, room, seq, sender, body, created_at, edited_at, deleted) VALUES
                 ('m1', 'r', 3, 'alice', 'kept', 3, NULL, 0),
                 ('m2', 'r', 4, 'alice', 'edited', 4, 6, 0),
                 ('m3', 'r', 5, 'alice', '', 5, NULL, 1),
                 ('m5', 'r', 8, 'alice', 'edited later', 8, 9, 0);
             INSERT INTO events (room, seq, at, actor, kind, data, message) VALUES
                 ('r', 4, 4, 'alice', 'message_created', '{m2}', NULL),
                 ('r', 5, 5, 'alice', 'message_created', '{m3}', NULL),
                 ('r', 6, 6, 'alice', 'message_edited', '{m2e}', 'm2'),
                 ('r', 7, 7, 'alice', 'message_deleted', '{m3}', NULL),
                 ('r', 8, 8, 'alice', 'message_created', '{m5}', NULL),
                 ('r', 10, 10, 'alice', 'member_left', '{{\"user\":\"bob\"}}', NULL);
             INSERT INTO idempotency (user, key, op, fingerprint, result, created_at, message)
                 VALUES ('alice', 'k2', 'message.send', 'f', '{m2}', 4, 'm2');",
            m2 = msg("m2", 4, "original", None, false),
            m2e = msg("m2", 4, "edited", Some(6), false),
            m3 = msg("m3", 5, "", None, true),
            m5 = msg("m5", 8, "first text", None, false),
        ))
        .unwrap();
    }
    let store = open(&dir).await;
    let page = store
        .messages("r", MessageCursor::After(0), 10)
        .await
        .unwrap()
        .items;
    let seen: Vec<_> = page
        .iter()
        .map(|m| (m.id.as_str(), m.body.as_str(), m.edited_at, m.deleted))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("m1", "kept", None, false),
            ("m2", "edited", Some(6), false),
            ("m3", "", None, true),
            ("m5", "edited later", Some(9), false),
        ]
    );
    assert_eq!(
        store.message("r", "m2").await.unwrap().unwrap().body,
        "edited"
    );
    // The log above the horizon starts where it did; the head is the newest event.
    assert_eq!(store.event_bounds("r").await.unwrap(), (4, 10));
    assert_eq!(store.room("r").await.unwrap().unwrap().head_seq, 10);
    // A stored result is the first answer.
    let replay = store
        .idempotent_result("alice", "k2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(replay.result["body"], "original");
    // The next message takes the next seq.
    let (out, _) = apply(&store, write("alice", T0, message("r", "m4", "new"))).await;
    assert_eq!(seq_of(&out), 11);
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
            "sqlite_autoindex_events_1",
        ),
        (
            "messages after",
            read::MESSAGES_AFTER,
            "sqlite_autoindex_events_1",
        ),
        ("message", read::MESSAGE, "events_message_created"),
        (
            "blob shared with",
            read::BLOB_SHARED_WITH,
            "message_blobs_blob (blob=?)",
        ),
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
        ("sent result", read::SENT_RESULT, "events_sent"),
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
            // The room's events by its (room, seq) key (no index kept up on every message).
            "sqlite_autoindex_events_1 (room=?)",
        ),
        (
            "activity by week",
            read::ACTIVITY_BY_WEEK,
            // The room's events by its (room, seq) key (no index kept up on every message).
            "sqlite_autoindex_events_1 (room=?)",
        ),
        (
            "activity by month",
            read::ACTIVITY_BY_MONTH,
            // The room's events by its (room, seq) key (no index kept up on every message).
            "sqlite_autoindex_events_1 (room=?)",
        ),
        (
            "activity by year",
            read::ACTIVITY_BY_YEAR,
            // The room's events by its (room, seq) key (no index kept up on every message).
            "sqlite_autoindex_events_1 (room=?)",
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
