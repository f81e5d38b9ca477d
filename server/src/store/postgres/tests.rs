//! Tests of the Postgres store against a real server: `ROAM_TEST_STORE` when it holds a
//! PostgreSQL URL, else `postgres://postgres@127.0.0.1:5432/test` (scripts/services.sh starts
//! one). Each test works in a schema of its own, so they run in parallel; two `PostgresStore`s on
//! one schema play two servers. The behaviour every store shares is `store/suite.rs`, run here
//! on a fresh schema; the tests below are of what is this store's own (lanes, servers, locks).

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use roam_proto::{EventBody, RoomKind};
use roam_testkit::PgSchema;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{read, PostgresStore};
use crate::store::{
    Change, Committed, IdemRecord, RetentionCutoffs, Store, StoreError, StoreResult, Write,
};

const T0: i64 = 1_704_103_200_000;
/// A bound on how long any one step may hang before the test fails (not a speed assertion).
const HANG: Duration = Duration::from_secs(60);

fn base_url() -> String {
    std::env::var("ROAM_TEST_STORE")
        .ok()
        .filter(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
        .unwrap_or_else(|| roam_testkit::DEFAULT_POSTGRES.into())
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL for the store tests (scripts/services.sh starts one)");
    tokio::spawn(conn);
    client
}

/// A fresh schema of the test's own; `url()` points a store at it. Dropped with `drop_now`.
async fn new_schema() -> PgSchema {
    PgSchema::create(&base_url(), "roam_unit").await
}

fn write(actor: &str, change: Change) -> Write {
    Write {
        actor: actor.into(),
        now: T0,
        guard: None,
        after: None,
        idem: None,
        change,
        notify: Vec::new(),
    }
}

fn create_room(name: &str, owner: &str) -> Change {
    Change::CreateRoom {
        name: name.into(),
        kind: RoomKind::Public,
        title: name.into(),
        metadata: json!({}),
        owner: owner.into(),
    }
}

fn message(room: &str, id: &str) -> Change {
    Change::InsertMessage {
        id: id.into(),
        room: room.into(),
        body: format!("body of {id}"),
        reply_to: None,
        attachment: None,
    }
}

/// A schema of its own on the test server; every `open` connects a store to it.
struct PgHarness {
    schema: PgSchema,
}

#[async_trait::async_trait]
impl crate::store::suite::Harness for PgHarness {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(PostgresStore::connect(&self.schema.url(), 4).await.unwrap())
    }
}

async fn harness() -> PgHarness {
    PgHarness {
        schema: new_schema().await,
    }
}

/// The behaviour every store shares (`store/suite.rs`), on a fresh schema.
mod suite {
    use crate::store::suite::*;
    crate::store::suite::store_suite!(super::harness());
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG, f)
        .await
        .expect("the store hung past the test's bound")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_writing_one_room_get_gap_free_seqs_each_once() {
    let schema = new_schema().await;
    let a = Arc::new(PostgresStore::connect(&schema.url(), 4).await.unwrap());
    let b = Arc::new(PostgresStore::connect(&schema.url(), 4).await.unwrap());
    a.commit(write("owner", create_room("hall", "owner")))
        .await
        .unwrap();

    const WRITERS: usize = 8;
    const EACH: usize = 25;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let actor = format!("writer{w}");
            let mut seqs = Vec::new();
            for i in 0..EACH {
                let id = format!("m-{w}-{i}");
                match store.commit(write(&actor, message("hall", &id))).await {
                    Ok(Committed::Applied { events, .. }) => {
                        seqs.extend(events.iter().map(|e| (e.seq, id.clone())))
                    }
                    other => panic!("write {id}: {other:?}"),
                }
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(bounded(t).await.unwrap());
    }
    all.sort();
    // Creating the room took seqs 1 and 2; the messages take the next ones, each once.
    let seqs: Vec<u64> = all.iter().map(|(s, _)| *s).collect();
    let expected: Vec<u64> = (3..3 + (WRITERS * EACH) as u64).collect();
    assert_eq!(seqs, expected);
    let ids: HashSet<&String> = all.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), WRITERS * EACH);

    // The stored log agrees, read from the other server: contiguous, each message once.
    let mut log = Vec::new();
    let mut after = 0;
    loop {
        let page = b.events_after("hall", after, 100).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        log.extend(page);
    }
    let log_seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
    assert_eq!(
        log_seqs,
        (1..3 + (WRITERS * EACH) as u64).collect::<Vec<_>>()
    );
    for (e, (seq, id)) in log.iter().skip(2).zip(&all) {
        assert_eq!(e.seq, *seq);
        match &e.body {
            EventBody::MessageCreated(m) => assert_eq!(&m.id, id),
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(
        a.room("hall").await.unwrap().unwrap().head_seq,
        2 + (WRITERS * EACH) as u64
    );
    drop((a, b));
    schema.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_raced_from_two_servers_applies_once_and_replays_once() {
    let schema = new_schema().await;
    let a = Arc::new(PostgresStore::connect(&schema.url(), 2).await.unwrap());
    let b = Arc::new(PostgresStore::connect(&schema.url(), 2).await.unwrap());
    a.commit(write("alice", create_room("hall", "alice")))
        .await
        .unwrap();
    const KEYS: usize = 20;
    for k in 0..KEYS {
        let keyed = |id: &str| Write {
            guard: None,
            after: None,
            idem: Some(IdemRecord {
                user: "alice".into(),
                key: format!("key-{k}"),
                op: "message.send".into(),
                fingerprint: format!("fp-{k}"),
            }),
            ..write("alice", message("hall", id))
        };
        // Different message ids: were both applied, both messages would exist.
        let (wa, wb) = (keyed(&format!("a-{k}")), keyed(&format!("b-{k}")));
        let (ra, rb) = bounded(async { tokio::join!(a.commit(wa), b.commit(wb)) }).await;
        let results = [ra.unwrap(), rb.unwrap()];
        let applied = results
            .iter()
            .filter(|r| matches!(r, Committed::Applied { .. }))
            .count();
        assert_eq!(applied, 1, "key {k}: {results:?}");
        let replay = results
            .iter()
            .find_map(|r| match r {
                Committed::Replayed(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(replay.fingerprint, format!("fp-{k}"));
        assert_eq!(replay.op, "message.send");
        assert!(replay.result["id"]
            .as_str()
            .unwrap()
            .ends_with(&format!("-{k}")));
    }
    let page = a
        .messages("hall", crate::store::MessageCursor::After(0), 1000)
        .await
        .unwrap();
    assert_eq!(page.items.len(), KEYS);
    drop((a, b));
    schema.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_starting_together_migrate_once() {
    let schema = new_schema().await;
    let url = schema.url();
    let opens = (0..3).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { PostgresStore::connect(&url, 1).await })
    });
    for o in opens {
        bounded(o).await.unwrap().unwrap();
    }
    let rows = admin(&base_url())
        .await
        .query(
            &format!(
                "SELECT version FROM {}.roam_migrations ORDER BY version",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        versions,
        (1..=super::schema::MIGRATIONS.len() as i32).collect::<Vec<_>>()
    );
    schema.drop_now().await;
}

#[tokio::test]
async fn a_missing_schema_is_a_clear_error() {
    let url = format!("{}?options=-csearch_path%3Droam_no_such_schema", base_url());
    match PostgresStore::connect(&url, 1).await {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("schema"), "{msg}"),
        other => panic!("expected Backend, got {other:?}"),
    }
}

/// A TCP relay to the real server, which a test can cut to play a server that went away.
struct Relay {
    addr: std::net::SocketAddr,
    accept: JoinHandle<()>,
    links: Arc<parking_lot::Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: String, addr: Option<std::net::SocketAddr>) -> Relay {
        let listener = TcpListener::bind(addr.unwrap_or(([127, 0, 0, 1], 0).into()))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let links = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let held = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                held.lock().push(tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                }));
            }
        });
        Relay {
            addr,
            accept,
            links,
        }
    }

    /// Closes every relayed connection and stops accepting.
    fn cut(&self) {
        self.accept.abort();
        for l in self.links.lock().drain(..) {
            l.abort();
        }
    }
}

fn pg_target() -> String {
    let cfg = super::parse_url(&base_url()).unwrap();
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_server_is_a_backend_error_then_the_store_recovers() {
    let schema = new_schema().await;
    let relay = Relay::start(pg_target(), None).await;
    let store = PostgresStore::connect(&schema.url_via(relay.addr), 1)
        .await
        .unwrap();
    store
        .commit(write("alice", create_room("hall", "alice")))
        .await
        .unwrap();
    store.ping().await.unwrap();

    relay.cut();
    // Give the I/O tasks a moment to see the closed sockets; the answers below do not depend
    // on it (a write on a dead connection fails either way).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let failed: StoreResult<Committed> =
        bounded(store.commit(write("alice", message("hall", "lost")))).await;
    assert!(
        matches!(failed, Err(StoreError::Backend(_))),
        "a write with the server gone: {failed:?}"
    );
    assert!(matches!(
        bounded(store.ping()).await,
        Err(StoreError::Backend(_))
    ));
    assert!(matches!(
        bounded(store.room("hall")).await,
        Err(StoreError::Backend(_))
    ));

    // The server is back (same address): the next write opens a new connection and commits;
    // the failed one was never applied.
    let back = Relay::start(pg_target(), Some(relay.addr)).await;
    let done = bounded(store.commit(write("alice", message("hall", "after"))))
        .await
        .unwrap();
    let Committed::Applied { events, .. } = done else {
        panic!("expected Applied")
    };
    assert_eq!(events[0].seq, 3, "the lost write took no seq");
    assert!(store.message("hall", "lost").await.unwrap().is_none());
    back.cut();
    drop(store);
    schema.drop_now().await;
}

#[tokio::test]
async fn an_unreachable_server_fails_to_open_within_the_connect_bound() {
    // Accepts TCP but never answers the startup message: only the connect timeout ends it.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let url = format!("postgres://postgres@127.0.0.1:{}/test", addr.port());
    let opened = bounded(PostgresStore::connect(&url, 1)).await;
    assert!(matches!(opened, Err(StoreError::Backend(_))), "{opened:?}");
    hold.abort();

    // Nothing listening at all: refused at once.
    let refused = bounded(PostgresStore::connect(
        &format!("postgres://postgres@127.0.0.1:{}/test", addr.port()),
        1,
    ))
    .await;
    assert!(matches!(refused, Err(StoreError::Backend(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_runs_on_one_server_at_a_time() {
    let schema = new_schema().await;
    let store = PostgresStore::connect(&schema.url(), 1).await.unwrap();
    let cutoffs = RetentionCutoffs {
        presence_before: T0,
        document_history_before: T0,
        notifications_before: T0,
        idempotency_before: T0,
        invitations_before: T0,
        events_before: None,
        batch_rows: 10,
    };
    store.save_last_seen("old", T0 - 1).await.unwrap();
    // Another "server" holds the retention lock: this one skips its pass.
    let other = admin(&schema.url()).await;
    let got: bool = other
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext('roam.retention.' || current_schema()))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(got);
    let skipped = store.purge(cutoffs).await.unwrap();
    assert_eq!(skipped.batches, 0);
    assert_eq!(store.last_seen(&["old".into()]).await.unwrap().len(), 1);
    // Released: the pass runs.
    drop(other);
    let ran = bounded(async {
        loop {
            let p = store.purge(cutoffs).await.unwrap();
            if p.batches > 0 {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(ran.presence, 1);
    assert!(store.last_seen(&["old".into()]).await.unwrap().is_empty());
    drop(store);
    schema.drop_now().await;
}

#[tokio::test]
async fn pool_statistics_are_the_real_connections() {
    let schema = new_schema().await;
    let store = PostgresStore::connect(&schema.url(), 3).await.unwrap();
    assert_eq!(store.pool_stats().size, 0, "readers open on demand");
    store.ping().await.unwrap();
    let s = store.pool_stats();
    assert_eq!((s.size, s.in_use, s.waiting, s.write_queue), (1, 0, 0, 0));
    let (x, y, z) = tokio::join!(store.ping(), store.room("a"), store.rooms_of("u"));
    x.unwrap();
    y.unwrap();
    z.unwrap();
    let s = store.pool_stats();
    assert!((1..=3).contains(&s.size), "{s:?}");
    assert_eq!(s.in_use, 0);
    drop(store);
    schema.drop_now().await;
}

/// `EXPLAIN` of the exact statements the store runs, with sequential scans priced out: each
/// must be served by the named index (a missing index leaves a `Seq Scan` and fails this).
#[tokio::test]
async fn hot_queries_use_indexes() {
    let schema = new_schema().await;
    let store = PostgresStore::connect(&schema.url(), 1).await.unwrap();
    drop(store);
    let c = super::conn::connect(&super::parse_url(&schema.url()).unwrap())
        .await
        .unwrap();
    c.batch("SET enable_seqscan = off").await.unwrap();
    let (room, user, key, seq, limit) = ("r", "u", "k", 5i64, 50i64);
    let cases: Vec<(
        &str,
        &'static str,
        Vec<&(dyn tokio_postgres::types::ToSql + Sync)>,
        &str,
    )> = vec![
        (
            "events_after",
            read::EVENTS_AFTER,
            vec![&room, &seq, &limit],
            "events_pkey",
        ),
        (
            "messages before",
            read::MESSAGES_BEFORE,
            vec![&room, &seq, &limit],
            "messages_room_seq",
        ),
        (
            "messages after",
            read::MESSAGES_AFTER,
            vec![&room, &seq, &limit],
            "messages_room_seq",
        ),
        ("member", read::MEMBER, vec![&room, &user], "members_pkey"),
        (
            "blob shared with",
            read::BLOB_SHARED_WITH,
            vec![&user, &key],
            "message_blobs_blob",
        ),
        (
            "idempotency",
            read::IDEMPOTENT_RESULT,
            vec![&user, &key],
            "idempotency_pkey",
        ),
        (
            "notifications",
            read::NOTIFICATIONS,
            vec![&user, &seq, &limit],
            "notifications_pkey",
        ),
        (
            "unread notifications",
            read::UNREAD_NOTIFICATIONS,
            vec![&user, &seq, &limit],
            "notifications_unread",
        ),
        (
            "unread count",
            read::UNREAD_COUNT,
            vec![&user],
            "notifications_unread",
        ),
        (
            "rooms of a user",
            read::ROOMS_OF,
            vec![&user],
            "members_user_status",
        ),
        (
            "event bounds",
            read::EVENT_BOUNDS,
            vec![&room],
            "events_pkey",
        ),
    ];
    for (what, sql, params, index) in cases {
        let plan: Vec<String> = c
            .query_text(&format!("EXPLAIN {sql}"), &params)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        let plan = plan.join("\n");
        assert!(!plan.contains("Seq Scan"), "{what} scans a table:\n{plan}");
        assert!(plan.contains(index), "{what} does not use {index}:\n{plan}");
    }
    drop(c);
    schema.drop_now().await;
}

/// One caller's pipelined writes land on one lane and are committed as a group: they apply in
/// call order, and a failing one (a taken message id) is undone alone.
#[tokio::test]
async fn a_group_keeps_call_order_and_a_failing_write_is_undone_alone() {
    let schema = new_schema().await;
    let store = PostgresStore::connect(&schema.url(), 2).await.unwrap();
    store
        .commit(write("alice", create_room("hall", "alice")))
        .await
        .unwrap();
    let futures: Vec<_> = (0..12)
        .map(|i| {
            // The 6th reuses the 2nd's id.
            let id = if i == 5 {
                "m1".to_owned()
            } else {
                format!("m{i}")
            };
            store.commit(write("alice", message("hall", &id)))
        })
        .collect();
    let mut seqs = Vec::new();
    for (i, f) in futures.into_iter().enumerate().rev() {
        match bounded(f).await {
            Ok(Committed::Applied { events, .. }) => seqs.push((i, events[0].seq)),
            Err(StoreError::Conflict(_)) => assert_eq!(i, 5),
            other => panic!("write {i}: {other:?}"),
        }
    }
    seqs.sort_unstable();
    let expected: Vec<(usize, u64)> = (0..12).filter(|i| *i != 5).zip(3..).collect();
    assert_eq!(seqs, expected);
    let (_, head) = store.event_bounds("hall").await.unwrap();
    assert_eq!(head, 13);
    drop(store);
    schema.drop_now().await;
}

/// Writes to one room from many users go down that room's lane: issued one after another, they
/// are numbered in call order (on actor lanes they raced each other for the room's lock).
#[tokio::test]
async fn one_rooms_writes_from_many_users_keep_call_order() {
    let schema = new_schema().await;
    let store = PostgresStore::connect(&schema.url(), 4).await.unwrap();
    store
        .commit(write("alice", create_room("hall", "alice")))
        .await
        .unwrap();
    let futures: Vec<_> = (0..24)
        .map(|i| {
            store.commit(write(
                &format!("user{i}"),
                message("hall", &format!("m{i}")),
            ))
        })
        .collect();
    let mut seqs = Vec::new();
    for (i, f) in futures.into_iter().enumerate() {
        match bounded(f).await {
            Ok(Committed::Applied { events, .. }) => seqs.push(events[0].seq),
            other => panic!("write {i}: {other:?}"),
        }
    }
    let expected: Vec<u64> = (3..27).collect();
    assert_eq!(
        seqs, expected,
        "seqs follow the order the writes were issued in"
    );
    drop(store);
    schema.drop_now().await;
}
