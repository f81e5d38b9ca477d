//! Versioned documents: compare-and-swap on the base version, the current version attached to a
//! conflict, history, live events.

use serde_json::{json, Value};

use crate::fixtures::{Api, TestServer};

async fn put(api: &Api, room: &str, doc: &str, base: u64, content: &str) -> crate::fixtures::Resp {
    api.send(
        reqwest::Method::PUT,
        &format!("/v1/rooms/{room}/documents/{doc}"),
        Some(json!({"base_version": base, "content": content})),
    )
    .await
}

fn versions(items: &Value) -> Vec<(u64, String)> {
    items
        .as_array()
        .expect("items")
        .iter()
        .map(|d| {
            (
                d["version"].as_u64().expect("version"),
                d["content"].as_str().expect("content").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn create_update_and_reject_a_stale_base() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let bob = t.as_user("bob");
    alice.create_room("team", "public").await;
    bob.join("team").await;

    let r = put(&alice, "team", "plan", 0, "v1 by alice").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["room"], "team");
    assert_eq!(r.body["doc"], "plan");
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["content"], "v1 by alice");
    assert_eq!(r.body["updated_by"], "alice");
    assert!(r.body["updated_at"].as_i64().is_some());

    let r = put(&bob, "team", "plan", 1, "v2 by bob").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["updated_by"], "bob");

    // alice edits from version 1 again: refused, with the document as it is now.
    let r = put(&alice, "team", "plan", 1, "stale edit").await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(r.code(), "version_conflict");
    let current = &r.body["error"]["current"];
    assert_eq!(current["version"], 2);
    assert_eq!(current["content"], "v2 by bob");
    assert_eq!(current["updated_by"], "bob");
    assert_eq!(current["doc"], "plan");
    // Creating it again (base 0) is a conflict of the same kind; so is a base from the future.
    for base in [0, 3, 99] {
        let r = put(&alice, "team", "plan", base, "x").await;
        assert_eq!(r.status, 409, "base {base}: {:?}", r.body);
        assert_eq!(r.code(), "version_conflict", "base {base}");
        assert_eq!(r.body["error"]["current"]["version"], 2, "base {base}");
    }
    // Rebased on `current`, it goes through.
    let r = put(&alice, "team", "plan", 2, "v3 rebased").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["version"], 3);

    let got = alice.get("/v1/rooms/team/documents/plan").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["version"], 3);
    assert_eq!(got.body["content"], "v3 rebased");
    let list = alice.get("/v1/rooms/team/documents").await;
    assert_eq!(list.status, 200);
    assert_eq!(
        versions(&list.body["items"]),
        [(3, "v3 rebased".to_owned())]
    );

    // Over the socket the conflict carries `current` as well.
    let mut ws = t.ws("bob").await;
    let err = ws
        .mutate(
            "document.put",
            json!({"room": "team", "doc": "plan", "base_version": 1, "content": "ws stale"}),
        )
        .await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["code"], "version_conflict");
    assert_eq!(err["current"]["version"], 3);
    assert_eq!(err["current"]["content"], "v3 rebased");

    // Input rules: a bad document name, content over 512 KiB, a missing document.
    let r = put(&alice, "team", "bad%20name", 0, "x").await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = put(&alice, "team", "big", 0, &"x".repeat(512 * 1024 + 1)).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(alice.get("/v1/rooms/team/documents/big").await.status, 404);
    let r = put(&alice, "team", "empty", 0, "").await;
    assert_eq!(r.status, 200, "empty content is a document: {:?}", r.body);
    // Non-members cannot write.
    let r = put(&t.as_user("mallory"), "team", "plan", 3, "vandal").await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(
        alice.get("/v1/rooms/team/documents/plan").await.body["version"],
        3
    );
}

#[tokio::test]
async fn history_is_newest_first_and_pages() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("team", "public").await;
    for v in 0..5u64 {
        let r = put(&alice, "team", "notes", v, &format!("content {}", v + 1)).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let h = alice.get("/v1/rooms/team/documents/notes/history").await;
    assert_eq!(h.status, 200, "{:?}", h.body);
    assert_eq!(
        versions(&h.body["items"]),
        (1..=5u64)
            .rev()
            .map(|v| (v, format!("content {v}")))
            .collect::<Vec<_>>()
    );
    let p1 = alice
        .get("/v1/rooms/team/documents/notes/history?limit=2")
        .await;
    assert_eq!(
        versions(&p1.body["items"]),
        [(5, "content 5".to_owned()), (4, "content 4".to_owned())]
    );
    assert_eq!(p1.body["next_cursor"], "4");
    let p2 = alice
        .get("/v1/rooms/team/documents/notes/history?limit=2&before=4")
        .await;
    assert_eq!(
        versions(&p2.body["items"]),
        [(3, "content 3".to_owned()), (2, "content 2".to_owned())]
    );
    let p3 = alice
        .get("/v1/rooms/team/documents/notes/history?limit=2&before=2")
        .await;
    assert_eq!(versions(&p3.body["items"]), [(1, "content 1".to_owned())]);
    assert!(p3.body.get("next_cursor").is_none());
    let none = alice.get("/v1/rooms/team/documents/other/history").await;
    assert_eq!(none.status, 200);
    assert_eq!(none.body["items"], json!([]));
}

#[tokio::test]
async fn document_updates_reach_subscribers() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("team", "public").await;
    let mut ws = t.ws("bob").await;
    ws.subscribe(&[("team", 2)]).await;
    ws.until(|f| f["type"] == "caught_up").await;
    put(&alice, "team", "plan", 0, "first").await;
    put(&alice, "team", "plan", 1, "second").await;
    put(&alice, "team", "plan", 1, "refused").await;
    let evs = ws.events_until("team", 4).await;
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0]["kind"], "document_updated");
    assert_eq!(evs[0]["seq"], 3);
    assert_eq!(evs[0]["actor"], "alice");
    assert_eq!(evs[0]["data"]["version"], 1);
    assert_eq!(evs[0]["data"]["content"], "first");
    assert_eq!(evs[1]["data"]["version"], 2);
    assert_eq!(evs[1]["data"]["content"], "second");
    assert_eq!(evs[1]["data"]["doc"], "plan");
    // The refused edit made no event.
    assert_eq!(ws.drain().await, Vec::<Value>::new());
    assert_eq!(alice.get("/v1/rooms/team").await.body["head_seq"], 4);
}

#[tokio::test]
async fn no_frame_carrying_a_document_exceeds_one_mebibyte() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("team", "public").await;
    let mut ws = t.ws("bob").await;
    ws.subscribe(&[("team", 2)]).await;
    ws.until(|f| f["type"] == "caught_up").await;
    // 174,757 control characters: 171 KiB raw, just under 1 MiB once escaped as \u0001 in the
    // request body; the event that would carry it is larger than a frame may be.
    let content = "\u{1}".repeat(174_757);
    let body = json!({"base_version": 0, "content": content});
    assert!(body.to_string().len() <= 1024 * 1024);
    let r = alice
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/team/documents/d",
            Some(body),
        )
        .await;
    assert_eq!(r.status, 413, "{:?}", r.body["error"]["code"]);
    assert_eq!(r.code(), "payload_too_large");
    assert_eq!(alice.get("/v1/rooms/team/documents/d").await.status, 404);
    // Escaped content that fits is accepted, and its frames are within the limit.
    let content = "\"".repeat(500 * 1024);
    let r = alice
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/team/documents/d",
            Some(json!({"base_version": 0, "content": content})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body["error"]);
    let ev = loop {
        let m = tokio::time::timeout(
            crate::fixtures::WAIT,
            futures_util::StreamExt::next(&mut ws.stream),
        )
        .await
        .expect("frame in time")
        .expect("open")
        .expect("frame");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            if t.contains("\"type\":\"event\"") {
                break t;
            }
        }
    };
    assert!(ev.len() <= 1024 * 1024, "{}", ev.len());
    let ev: Value = serde_json::from_str(&ev).expect("json");
    assert_eq!(ev["kind"], "document_updated");
    assert_eq!(
        ev["data"]["content"].as_str().map(str::len),
        Some(500 * 1024)
    );
}
