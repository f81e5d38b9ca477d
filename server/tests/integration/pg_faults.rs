//! A slow or stuck PostgreSQL answers 503 within a bound, never hangs (run only when
//! `ROAM_TEST_STORE` is a PostgreSQL URL; they pass at once otherwise):
//!
//! - the database link frozen (a relay that stops forwarding bytes without closing anything, so
//!   no error and no server-side timeout ever arrives): a write answers 503 `unavailable` and
//!   `/readyz` 503; once the link thaws, the same write (same idempotency key) is applied exactly
//!   once;
//! - a room's row locked by another connection: the write to that room answers 503 while writes
//!   to other rooms on the same writer lane go through; once the lock is released, the resend
//!   is applied.
//!
//! The servers run with a 1 s statement timeout and a 0.5 s lock timeout; [`BOUND`] is far
//! beyond them and only separates "answered" from "hung".

use std::future::Future;
use std::time::Duration;

use roam_server::config::{Config, StoreKind};
use roam_testkit::relay::FreezableRelay;
use serde_json::json;

use crate::fixtures::{key, postgres_url, Api, PgSchema, Resp, TestServer};

/// Longer than any answer may take with the short timeouts below.
const BOUND: Duration = Duration::from_secs(15);

/// Short statement and lock timeouts, so that the tests run quickly.
fn short_timeouts(c: &mut Config) {
    c.db_statement_timeout_ms = 1000;
    c.db_lock_timeout_ms = 500;
}

/// Awaits `f`, failing the test if it takes longer than [`BOUND`].
async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {} s", BOUND.as_secs()))
}

/// Sends a message with `key` until it answers 200 (a bounded number of tries, a pause
/// between them); the last answer.
async fn send_until_ok(api: &Api, room: &str, k: &str, body: &str) -> Resp {
    let path = format!("/v1/rooms/{room}/messages");
    let mut last = None;
    for _ in 0..20 {
        let r = bounded(
            "a resend",
            api.post_with_key(&path, k, json!({"body": body})),
        )
        .await;
        if r.status == 200 {
            return r;
        }
        assert_eq!(r.status, 503, "a resend: {:?}", r.body);
        last = Some(r);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the resend never succeeded: {last:?}");
}

/// The bodies of a room's messages, oldest first.
async fn bodies(api: &Api, room: &str) -> Vec<String> {
    api.all_messages(room)
        .await
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_database_link_answers_unavailable_within_a_bound_then_recovers() {
    let Some(base) = postgres_url() else {
        eprintln!("skipped: ROAM_TEST_STORE is not a PostgreSQL URL");
        return;
    };
    let schema = PgSchema::create(&base, "roam_test").await;
    let relay = FreezableRelay::start(schema.server_addr()).await;
    let url = schema.url_via(relay.addr);
    let t = TestServer::start_with(|c| {
        c.store = StoreKind::Postgres(url);
        short_timeouts(c);
    })
    .await;
    let alice = t.as_user("alice");
    alice.create_room("hall", "public").await;
    alice.say("hall", "before").await;
    assert_eq!(t.anon().get("/readyz").await.status, 200);

    relay.freeze();
    let k = key();
    let r = bounded(
        "a write with the link frozen",
        alice.post_with_key("/v1/rooms/hall/messages", &k, json!({"body": "during"})),
    )
    .await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.code(), "unavailable");
    let ready = bounded("/readyz with the link frozen", t.anon().get("/readyz")).await;
    assert_eq!(ready.status, 503, "{:?}", ready.body);
    // A read on a fresh connection (the one the probe used was given up) is bounded too.
    let read = bounded(
        "a read with the link frozen",
        alice.get("/v1/rooms/hall/messages"),
    )
    .await;
    assert_eq!(read.status, 503, "{:?}", read.body);

    // Thawed: the same key is applied, once (or replayed, had the abandoned attempt committed).
    relay.thaw();
    let done = send_until_ok(&alice, "hall", &k, "during").await;
    let again = send_until_ok(&alice, "hall", &k, "during").await;
    assert_eq!(again.body, done.body, "the resend replays");
    assert_eq!(bodies(&alice, "hall").await, ["before", "during"]);
    let mut ready = 0;
    for _ in 0..20 {
        ready = bounded("/readyz after the thaw", t.anon().get("/readyz"))
            .await
            .status;
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(ready, 200, "ready again after the thaw");
    drop(t);
    drop(relay);
    schema.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_room_fails_alone_and_other_rooms_on_its_lane_go_on() {
    if postgres_url().is_none() {
        eprintln!("skipped: ROAM_TEST_STORE is not a PostgreSQL URL");
        return;
    }
    // One writer lane: every room's writes share it with the locked room's.
    let t = TestServer::start_with(|c| {
        c.db_pool_size = 1;
        short_timeouts(c);
    })
    .await;
    let alice = t.as_user("alice");
    let rooms = ["held", "a", "b", "c"];
    for room in rooms {
        alice.create_room(room, "public").await;
    }

    // Another connection locks the room's row, in a transaction left open.
    let url = t.schema.as_ref().expect("a Postgres schema").url();
    let (locker, io) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect the locking client");
    let io = tokio::spawn(io);
    locker.batch_execute("BEGIN").await.expect("begin");
    let locked = locker
        .query(
            "SELECT name FROM rooms WHERE name = $1 FOR UPDATE",
            &[&"held"],
        )
        .await
        .expect("lock the room's row");
    assert_eq!(locked.len(), 1);

    // Writes to the held room are queued first, the others right behind them on the same lane.
    let k = key();
    let held = {
        let (alice, k) = (alice.clone(), k.clone());
        tokio::spawn(async move {
            alice
                .post_with_key("/v1/rooms/held/messages", &k, json!({"body": "held"}))
                .await
        })
    };
    let held2 = {
        let alice = alice.clone();
        tokio::spawn(async move {
            alice
                .post("/v1/rooms/held/messages", json!({"body": "held 2"}))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let others = rooms[1..].iter().map(|room| {
        let alice = alice.clone();
        let room = room.to_string();
        tokio::spawn(async move {
            alice
                .post(
                    &format!("/v1/rooms/{room}/messages"),
                    json!({"body": format!("to {room}")}),
                )
                .await
        })
    });
    let others: Vec<_> = others.collect();
    for (room, task) in rooms[1..].iter().zip(others) {
        let r = bounded("a write to another room", task)
            .await
            .expect("task");
        assert_eq!(r.status, 200, "to {room}: {:?}", r.body);
    }
    for task in [held, held2] {
        let r = bounded("a write to the locked room", task)
            .await
            .expect("task");
        assert_eq!(r.status, 503, "{:?}", r.body);
        assert_eq!(r.code(), "unavailable");
    }
    // One locked room does not make the whole server unready.
    assert_eq!(t.anon().get("/readyz").await.status, 200);

    // Released: the resend (same key) is applied, and the failed attempts left nothing.
    locker.batch_execute("ROLLBACK").await.expect("release");
    drop(locker);
    let _ = io.await;
    send_until_ok(&alice, "held", &k, "held").await;
    assert_eq!(bodies(&alice, "held").await, ["held"]);
    for room in &rooms[1..] {
        assert_eq!(bodies(&alice, room).await, [format!("to {room}")]);
    }
}

#[test]
fn statement_and_lock_timeouts_out_of_range_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let defaults = crate::fixtures::config(dir.path());
    assert_eq!(
        (
            defaults.db_statement_timeout_ms,
            defaults.db_lock_timeout_ms
        ),
        (5000, 2000)
    );
    assert!(defaults.validate().is_ok());
    for (statement, lock) in [(50, 10), (1000, 2000), (1000, 5), (700_000, 2000)] {
        let mut c = crate::fixtures::config(dir.path());
        c.db_statement_timeout_ms = statement;
        c.db_lock_timeout_ms = lock;
        assert!(
            c.validate().is_err(),
            "statement {statement} ms, lock {lock} ms"
        );
    }
}
