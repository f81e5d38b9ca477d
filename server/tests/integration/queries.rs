//! Queries: the user directory (search, whitelisted sort, cursor paging) and room activity by
//! period.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::fixtures::{now_ms, Api, TestServer};

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|u| u["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Every user id of a query, following `next_cursor` with `limit`.
async fn walk(api: &Api, query: &str, limit: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/v1/users?limit={limit}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = api.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        let page = ids(&r.body);
        assert!(page.len() <= limit as usize);
        out.extend(page);
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
    panic!("paging never ended: {out:?}");
}

#[tokio::test]
async fn the_user_directory_searches_sorts_and_pages() {
    let t = TestServer::start().await;
    let pause = || tokio::time::sleep(Duration::from_millis(3));
    // In order of first sight: a mutation, two sockets, another mutation. dave only reads.
    t.as_user("alice").create_room("r", "public").await;
    pause().await;
    let _bob = t.ws("bob").await;
    pause().await;
    let _carol = t.ws("Carol").await;
    pause().await;
    t.as_user("erin").join("r").await;
    assert_eq!(t.as_user("dave").get("/v1/rooms").await.status, 200);
    // The directory lists those who share a room with the viewer: everyone joins `r`.
    t.as_user("bob").join("r").await;
    t.as_user("Carol").join("r").await;

    let api = t.as_user("alice");
    let all = api.get("/v1/users").await;
    assert_eq!(all.status, 200, "{:?}", all.body);
    assert_eq!(
        ids(&all.body),
        ["Carol", "alice", "bob", "erin"],
        "by id, bytewise"
    );
    let first = &all.body["items"][1];
    assert_eq!(first["id"], "alice");
    assert!(first["created_at"].as_i64().is_some());
    assert_eq!(
        ids(&api.get("/v1/users?order=desc").await.body),
        ["erin", "bob", "alice", "Carol"]
    );
    // Case-insensitive substring search.
    assert_eq!(ids(&api.get("/v1/users?q=CAR").await.body), ["Carol"]);
    assert_eq!(ids(&api.get("/v1/users?q=e").await.body), ["alice", "erin"]);
    assert_eq!(
        ids(&api.get("/v1/users?q=zz").await.body),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&api.get("/v1/users?q=_").await.body),
        Vec::<String>::new()
    );

    // Sorted by first sight.
    assert_eq!(
        ids(&api.get("/v1/users?sort=created_at").await.body),
        ["alice", "bob", "Carol", "erin"]
    );
    assert_eq!(
        ids(&api.get("/v1/users?sort=created_at&order=desc").await.body),
        ["erin", "Carol", "bob", "alice"]
    );
    // By last seen: the two who connected, newest first, then those never seen on a socket.
    let by_seen = ids(&api.get("/v1/users?sort=last_seen&order=desc").await.body);
    assert_eq!(by_seen, ["Carol", "bob", "erin", "alice"]);
    assert_eq!(
        ids(&api.get("/v1/users?sort=last_seen").await.body),
        ["alice", "erin", "bob", "Carol"]
    );

    // Paging visits everyone exactly once, in every order.
    for (query, expected) in [
        ("", vec!["Carol", "alice", "bob", "erin"]),
        ("&order=desc", vec!["erin", "bob", "alice", "Carol"]),
        ("&sort=created_at", vec!["alice", "bob", "Carol", "erin"]),
        (
            "&sort=created_at&order=desc",
            vec!["erin", "Carol", "bob", "alice"],
        ),
        (
            "&sort=last_seen&order=desc",
            vec!["Carol", "bob", "erin", "alice"],
        ),
        ("&sort=last_seen", vec!["alice", "erin", "bob", "Carol"]),
        ("&q=e", vec!["alice", "erin"]),
    ] {
        for limit in [1, 3] {
            assert_eq!(
                walk(&api, query, limit).await,
                expected,
                "{query} limit {limit}"
            );
        }
    }
}

fn civil(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days-from-civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn day_of(ms: i64) -> String {
    let (y, m, d) = civil(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

fn period_of(ms: i64, period: &str) -> String {
    let days = ms.div_euclid(86_400_000);
    match period {
        "day" => day_of(ms),
        "week" => {
            let monday = days - (days + 3).rem_euclid(7);
            day_of(monday * 86_400_000)
        }
        "month" => day_of(ms)[..7].to_owned(),
        _ => day_of(ms)[..4].to_owned(),
    }
}

#[tokio::test]
async fn room_activity_counts_messages_and_senders_per_period() {
    assert_eq!(day_of(0), "1970-01-01");
    assert_eq!(period_of(0, "week"), "1969-12-29");
    assert_eq!(day_of(951_782_400_000), "2000-02-29");
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let bob = t.as_user("bob");
    let carol = t.as_user("carol");
    alice.create_room("stats", "public").await;
    bob.join("stats").await;
    carol.join("stats").await;
    for (who, n) in [(&alice, 3), (&bob, 2)] {
        for i in 0..n {
            who.say("stats", &format!("m{i}")).await;
        }
    }
    let deleted = bob.say("stats", "gone soon").await;
    let r = bob
        .send(
            reqwest::Method::DELETE,
            &format!(
                "/v1/rooms/stats/messages/{}",
                deleted["id"].as_str().expect("id")
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let messages = alice.all_messages("stats").await;
    assert_eq!(messages.len(), 6);

    for period in ["day", "week", "month", "year"] {
        // Expected buckets from the stored messages' own timestamps.
        let mut expected: BTreeMap<String, (u64, Vec<String>)> = BTreeMap::new();
        for m in &messages {
            let b = expected
                .entry(period_of(
                    m["created_at"].as_i64().expect("created_at"),
                    period,
                ))
                .or_default();
            b.0 += 1;
            let s = m["sender"].as_str().expect("sender").to_owned();
            if !b.1.contains(&s) {
                b.1.push(s);
            }
        }
        let expected: Vec<Value> = expected
            .into_iter()
            .map(|(p, (n, s))| json!({"period": p, "messages": n, "senders": s.len()}))
            .collect();
        let r = alice
            .get(&format!("/v1/rooms/stats/activity?period={period}"))
            .await;
        assert_eq!(r.status, 200, "{period}: {:?}", r.body);
        assert_eq!(r.body, json!(expected), "{period}");
    }
    // Only today's data: the range excludes everything before `from`.
    let later = now_ms() + 3_600_000;
    let r = alice
        .get(&format!("/v1/rooms/stats/activity?period=day&from={later}"))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, json!([]));

    // An admin may look; a member, a stranger or a guest may not.
    let r = alice
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/stats/members/carol/role",
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = carol.get("/v1/rooms/stats/activity?period=day").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    for user in ["bob", "mallory"] {
        let r = t
            .as_user(user)
            .get("/v1/rooms/stats/activity?period=day")
            .await;
        assert_eq!(r.status, 403, "{user}: {:?}", r.body);
        assert_eq!(r.code(), "forbidden");
    }
}
