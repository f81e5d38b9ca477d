//! Cached REST reads: TTL, stale-while-revalidate, ETag revalidation across restarts.

use std::time::Duration;

use roam_core::CacheConfig;

use crate::fixture::{self, FakeServer};

fn room_requests(server: &FakeServer) -> Vec<Option<String>> {
    server.with(|s| {
        s.http_requests
            .iter()
            .zip(&s.if_none_match)
            .filter(|(l, _)| l.contains(" /v1/rooms?"))
            .map(|(_, tag)| tag.clone())
            .collect()
    })
}

#[tokio::test]
async fn fresh_answers_make_no_request_and_expired_ones_revalidate_with_the_etag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    server.with(|s| {
        s.create_room("general", "bob");
        s.create_room("random", "bob");
    });
    let mut cfg = fixture::config(dir.path(), &server.url(), "alice");
    cfg.cache = CacheConfig {
        ttl: Duration::from_millis(200),
        stale_ttl: Duration::ZERO,
        max_bytes: 1 << 20,
    };
    let client = fixture::open(cfg.clone());
    let rooms = client.refresh_rooms().await.expect("rooms");
    assert_eq!(
        rooms.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["general", "random"]
    );
    assert!(rooms.iter().all(|r| !r.joined));
    client.refresh_rooms().await.expect("fresh");
    assert_eq!(
        room_requests(&server),
        [None],
        "the fresh answer made no request"
    );

    tokio::time::sleep(Duration::from_millis(250)).await;
    let again = client.refresh_rooms().await.expect("expired");
    assert_eq!(again.len(), 2);
    assert_eq!(room_requests(&server), [None, Some("\"r2\"".into())]);
    let m = client.metrics();
    assert_eq!(
        (m.cache_hits, m.cache_misses, m.cache_revalidations),
        (1, 2, 1)
    );

    // After a restart the first request is already conditional (ETag kept in the store).
    drop(client);
    let client = fixture::open(cfg);
    let rooms = client.refresh_rooms().await.expect("after restart");
    assert_eq!(rooms.len(), 2);
    assert_eq!(
        room_requests(&server).last().cloned().flatten(),
        Some("\"r2\"".into())
    );
    assert_eq!(client.metrics().cache_revalidations, 1);
}

#[tokio::test]
async fn stale_answers_come_at_once_and_revalidate_in_the_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeServer::start().await;
    server.with(|s| s.create_room("general", "bob"));
    let mut cfg = fixture::config(dir.path(), &server.url(), "alice");
    cfg.cache = CacheConfig {
        ttl: Duration::ZERO,
        stale_ttl: Duration::from_secs(60),
        max_bytes: 1 << 20,
    };
    let client = fixture::open(cfg);
    client.refresh_rooms().await.expect("first");
    server.with(|s| s.create_room("new", "bob"));
    // Stale: the stored answer at once, one background request.
    let stale = client.refresh_rooms().await.expect("stale");
    assert_eq!(stale.len(), 1);
    fixture::eventually("background revalidation stored the new room", || {
        client.room("new".into()).ok().flatten().is_some()
    })
    .await;
    assert_eq!(room_requests(&server).len(), 2);
    assert_eq!(client.metrics().cache_hits, 1);
}
