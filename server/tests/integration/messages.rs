//! Messages: send, edit, delete, paged history, gap-free seqs under concurrent senders, batch
//! import, client-chosen ids.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::fixtures::{key, TestServer};

fn seqs(items: &Value) -> Vec<u64> {
    items
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test]
async fn send_edit_and_delete() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let bob = t.as_user("bob");
    let carol = t.as_user("carol");
    alice.create_room("chat", "public").await;
    bob.join("chat").await;
    carol.join("chat").await;

    let sent = bob.say("chat", "first draft").await;
    assert_eq!(sent["room"], "chat");
    assert_eq!(sent["sender"], "bob");
    assert_eq!(sent["body"], "first draft");
    assert_eq!(sent["seq"], 5);
    assert_eq!(sent["deleted"], false);
    assert!(sent.get("edited_at").is_none());
    let id = sent["id"].as_str().expect("id").to_owned();
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "server ids are UUIDs: {id}"
    );

    // Only the author edits.
    let path = format!("/v1/rooms/chat/messages/{id}");
    let r = carol
        .send(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"body": "hijacked"})),
        )
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.code(), "forbidden");
    let r = alice
        .send(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"body": "owner edit"})),
        )
        .await;
    assert_eq!(r.status, 403, "even the owner cannot edit: {:?}", r.body);
    let r = bob
        .send(reqwest::Method::PATCH, &path, Some(json!({"body": ""})))
        .await;
    assert_eq!(r.status, 400, "empty body: {:?}", r.body);
    let r = bob
        .send(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"body": "final"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["body"], "final");
    assert_eq!(r.body["seq"], 5, "an edit keeps the message's place");
    assert!(r.body["edited_at"].as_i64().is_some(), "{:?}", r.body);

    // Only the author, an admin or the owner deletes.
    let r = carol.send(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = alice.send(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(
        r.status, 200,
        "the owner deletes others' messages: {:?}",
        r.body
    );
    assert_eq!(r.body["deleted"], true);
    assert_eq!(r.body["body"], "");
    assert_eq!(r.body["id"], id.as_str());

    // Deleted: reads as deleted with an empty body, and cannot be edited or deleted again.
    let page = alice.get("/v1/rooms/chat/messages").await;
    assert_eq!(page.body["items"].as_array().expect("items").len(), 1);
    let msg = &page.body["items"][0];
    assert_eq!(msg["id"], id.as_str());
    assert_eq!(msg["deleted"], true);
    assert_eq!(msg["body"], "");
    assert_eq!(msg["sender"], "bob");
    let r = bob
        .send(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"body": "zombie"})),
        )
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = bob.send(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(r.status, 404, "{:?}", r.body);

    // An admin may delete others' messages; the author their own.
    let r = alice
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/chat/members/carol/role",
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let m2 = bob.say("chat", "second").await;
    let m3 = bob.say("chat", "third").await;
    let r = carol
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/rooms/chat/messages/{}", m2["id"].as_str().expect("id")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = bob
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/rooms/chat/messages/{}", m3["id"].as_str().expect("id")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = bob
        .send(
            reqwest::Method::DELETE,
            "/v1/rooms/chat/messages/no-such-message",
            None,
        )
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);

    // The log holds every step.
    let kinds: Vec<String> = alice
        .all_events("chat")
        .await
        .iter()
        .skip(4)
        .map(|e| e["kind"].as_str().expect("kind").to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "message_created",
            "message_edited",
            "message_deleted",
            "member_updated",
            "message_created",
            "message_created",
            "message_deleted",
            "message_deleted"
        ]
    );
}

#[tokio::test]
async fn replies_must_point_at_a_message_of_the_room() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("chat", "public").await;
    let first = alice.say("chat", "question").await;
    let r = alice
        .post(
            "/v1/rooms/chat/messages",
            json!({"body": "answer", "reply_to": first["id"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["reply_to"], first["id"]);
    let r = alice
        .post(
            "/v1/rooms/chat/messages",
            json!({"body": "answer", "reply_to": "nope"}),
        )
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = alice
        .post(
            "/v1/rooms/chat/messages",
            json!({"body": "x".repeat(64 * 1024 + 1)}),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.code(), "invalid_input");
    let r = alice
        .post(
            "/v1/rooms/chat/messages",
            json!({"body": "x".repeat(64 * 1024)}),
        )
        .await;
    assert_eq!(r.status, 200, "64 KiB exactly is fine");
    assert_eq!(alice.all_messages("chat").await.len(), 3);
}

#[tokio::test]
async fn history_pages_by_seq_cursor() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("log", "public").await;
    // seqs 3..=27
    for i in 0..25 {
        alice.say("log", &format!("m{i}")).await;
    }
    // Newest first by default.
    let p1 = alice.get("/v1/rooms/log/messages?limit=10").await;
    assert_eq!(p1.status, 200);
    assert_eq!(seqs(&p1.body["items"]), (18..=27).rev().collect::<Vec<_>>());
    assert_eq!(p1.body["items"][0]["body"], "m24");
    assert_eq!(p1.body["next_cursor"], "18");
    let p2 = alice.get("/v1/rooms/log/messages?limit=10&before=18").await;
    assert_eq!(seqs(&p2.body["items"]), (8..=17).rev().collect::<Vec<_>>());
    assert_eq!(p2.body["next_cursor"], "8");
    let p3 = alice.get("/v1/rooms/log/messages?limit=10&before=8").await;
    assert_eq!(seqs(&p3.body["items"]), (3..=7).rev().collect::<Vec<_>>());
    assert!(p3.body.get("next_cursor").is_none(), "{:?}", p3.body);

    // Oldest first after a seq.
    let a1 = alice.get("/v1/rooms/log/messages?after=0&limit=10").await;
    assert_eq!(seqs(&a1.body["items"]), (3..=12).collect::<Vec<_>>());
    assert_eq!(a1.body["next_cursor"], "12");
    let a2 = alice.get("/v1/rooms/log/messages?after=20&limit=10").await;
    assert_eq!(seqs(&a2.body["items"]), (21..=27).collect::<Vec<_>>());
    assert!(a2.body.get("next_cursor").is_none());
    let a3 = alice.get("/v1/rooms/log/messages?after=27").await;
    assert_eq!(a3.body["items"], json!([]));
    // Default page size is 50: everything here.
    let all = alice.get("/v1/rooms/log/messages").await;
    assert_eq!(all.body["items"].as_array().expect("items").len(), 25);

    let r = alice.get("/v1/rooms/log/messages?after=1&before=9").await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.code(), "invalid_input");
    let r = alice.get("/v1/rooms/log/messages?before=-1").await;
    assert_eq!(r.status, 400, "{:?}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_senders_leave_no_gap_and_no_duplicate() {
    const SENDERS: usize = 20;
    const EACH: usize = 10;
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("busy", "public").await;
    for i in 0..SENDERS {
        t.as_user(&format!("u{i}")).join("busy").await;
    }
    // A reader follows the room throughout.
    let mut reader = t.ws("reader").await;
    reader.subscribe(&[("busy", 2 + SENDERS as u64)]).await;
    reader.until(|f| f["type"] == "caught_up").await;
    // Half of them over REST, half over their own socket, all at once.
    let mut tasks = Vec::new();
    for i in 0..SENDERS {
        let user = format!("u{i}");
        if i % 2 == 0 {
            let api = t.as_user(&user);
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for n in 0..EACH {
                    let m = api.say("busy", &format!("{user}-{n}")).await;
                    got.push(m["seq"].as_u64().expect("seq"));
                }
                got
            }));
        } else {
            let mut ws = t.ws(&user).await;
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for n in 0..EACH {
                    let ack = ws
                        .mutate(
                            "message.send",
                            json!({"room": "busy", "body": format!("{user}-{n}")}),
                        )
                        .await;
                    assert_eq!(ack["type"], "ack", "{ack}");
                    got.push(ack["result"]["seq"].as_u64().expect("seq"));
                }
                got
            }));
        }
    }
    let mut acked = Vec::new();
    for task in tasks {
        let got = task.await.expect("sender task");
        // Each sender's own messages are in the order it sent them.
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
        acked.extend(got);
    }
    let first = 2 + SENDERS as u64 + 1;
    let last = first + (SENDERS * EACH) as u64 - 1;
    acked.sort_unstable();
    assert_eq!(acked, (first..=last).collect::<Vec<_>>());

    let stored = alice.all_messages("busy").await;
    let stored_seqs: Vec<u64> = stored
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(stored_seqs, (first..=last).collect::<Vec<_>>());
    let bodies: BTreeSet<&str> = stored
        .iter()
        .map(|m| m["body"].as_str().expect("body"))
        .collect();
    assert_eq!(bodies.len(), SENDERS * EACH, "no message lost or doubled");
    let events = alice.all_events("busy").await;
    let event_seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(event_seqs, (1..=last).collect::<Vec<_>>());
    // The reader got every one of them live, once, in seq order.
    let live: Vec<u64> = reader
        .events_until("busy", last)
        .await
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(live, (first..=last).collect::<Vec<_>>());
    assert!(reader.drain().await.iter().all(|f| f["type"] != "event"));
    assert_eq!(alice.get("/v1/rooms/busy").await.body["head_seq"], last);
}

#[tokio::test]
async fn import_of_a_thousand_messages() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("archive", "public").await;
    alice.say("archive", "before").await;
    let bodies: Vec<String> = (0..1_000).map(|i| format!("imported #{i}")).collect();
    let r = alice
        .post(
            "/v1/rooms/archive/messages/import",
            json!({"bodies": bodies}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!({"imported": 1000, "first_seq": 4, "last_seq": 1003})
    );
    alice.say("archive", "after").await;
    let stored = alice.all_messages("archive").await;
    assert_eq!(stored.len(), 1_002);
    assert_eq!(stored[0]["body"], "before");
    assert_eq!(stored[1_001]["body"], "after");
    assert_eq!(stored[1_001]["seq"], 1_004);
    for (i, m) in stored[1..=1_000].iter().enumerate() {
        assert_eq!(m["body"], format!("imported #{i}"));
        assert_eq!(m["seq"], 4 + i as u64);
        assert_eq!(m["sender"], "alice");
    }
    let ids: BTreeSet<&str> = stored
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 1_002);

    // Only the owner and admins import; empty and oversized batches are refused.
    t.as_user("bob").join("archive").await;
    let r = t
        .as_user("bob")
        .post(
            "/v1/rooms/archive/messages/import",
            json!({"bodies": ["x"]}),
        )
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = alice
        .post("/v1/rooms/archive/messages/import", json!({"bodies": []}))
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let too_many: Vec<&str> = vec!["x"; 5_001];
    let r = alice
        .post(
            "/v1/rooms/archive/messages/import",
            json!({"bodies": too_many}),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = alice
        .post(
            "/v1/rooms/archive/messages/import",
            json!({"bodies": ["ok", ""]}),
        )
        .await;
    assert_eq!(
        r.status, 400,
        "one bad body refuses the batch: {:?}",
        r.body
    );
    assert_eq!(alice.all_messages("archive").await.len(), 1_002);
}

#[tokio::test]
async fn import_reaches_a_subscribed_socket_in_order() {
    // A reader that keeps up must not be dropped as a slow consumer because one import
    // produced more events than its send queue holds.
    let t = TestServer::start_with(|c| c.send_queue = 16).await;
    let alice = t.as_user("alice");
    alice.create_room("archive", "public").await;
    let mut ws = t.ws("bob").await;
    ws.subscribe(&[("archive", 2)]).await;
    ws.until(|f| f["type"] == "caught_up").await;
    let bodies: Vec<String> = (0..500).map(|i| format!("#{i}")).collect();
    let r = alice
        .post(
            "/v1/rooms/archive/messages/import",
            json!({"bodies": bodies}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let events = ws.events_until("archive", 502).await;
    let got: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(got, (3..=502).collect::<Vec<_>>());
    assert_eq!(events[499]["data"]["body"], "#499");
    assert_eq!(
        t.metric("roam_slow_consumer_disconnects_total", None).await,
        0.0
    );
}

#[tokio::test]
async fn client_chosen_message_ids() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("chat", "public").await;
    alice.create_room("other", "public").await;
    let k1 = key();
    let r = alice
        .post_with_key(
            "/v1/rooms/chat/messages",
            &k1,
            json!({"body": "mine", "id": "0190d1c4-client-1"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["id"], "0190d1c4-client-1");
    // The same key again is a replay of the same message.
    let again = alice
        .post_with_key(
            "/v1/rooms/chat/messages",
            &k1,
            json!({"body": "mine", "id": "0190d1c4-client-1"}),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, r.body);
    // The id under another key is a conflict, in this room or another, by anyone.
    for (room, user) in [("chat", "alice"), ("other", "alice"), ("chat", "bob")] {
        if user == "bob" {
            t.as_user("bob").join("chat").await;
        }
        let r = t
            .as_user(user)
            .post(
                &format!("/v1/rooms/{room}/messages"),
                json!({"body": "copy", "id": "0190d1c4-client-1"}),
            )
            .await;
        assert_eq!(r.status, 409, "{room}/{user}: {:?}", r.body);
        assert_eq!(r.code(), "conflict");
    }
    let mut ws = t.ws("alice").await;
    let ack = ws
        .mutate(
            "message.send",
            json!({"room": "chat", "body": "ws copy", "id": "0190d1c4-client-1"}),
        )
        .await;
    assert_eq!(ack["type"], "error", "{ack}");
    assert_eq!(ack["code"], "conflict");
    let bad = alice
        .post(
            "/v1/rooms/chat/messages",
            json!({"body": "x", "id": "has space"}),
        )
        .await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    let stored = alice.all_messages("chat").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["body"], "mine");
    assert_eq!(alice.all_messages("other").await.len(), 0);
    // A reply may point at the client-chosen id, and edits use it.
    let r = alice
        .post(
            "/v1/rooms/chat/messages",
            json!({"body": "reply", "reply_to": "0190d1c4-client-1", "id": "0190d1c4-client-2"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = alice
        .send(
            reqwest::Method::PATCH,
            "/v1/rooms/chat/messages/0190d1c4-client-2",
            Some(json!({"body": "reply, edited"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["reply_to"], "0190d1c4-client-1");
}
