//! Read markers (`room.mark_read`): stored per member, only forward, pushed to every socket of
//! the reader and to nobody else, listed by `GET /v1/read-markers`, and clearing the mentions
//! they cover (protocol §5, §6).

use serde_json::{json, Value};

use crate::fixtures::{Api, TestServer};

async fn markers(api: &Api) -> Vec<Value> {
    let r = api.get("/v1/read-markers").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body.get("next_cursor").is_none());
    r.body["items"].as_array().expect("items").clone()
}

async fn mark(api: &Api, room: &str, seq: u64) -> crate::fixtures::Resp {
    api.post(&format!("/v1/rooms/{room}/read"), json!({ "seq": seq }))
        .await
}

async fn unread(api: &Api) -> u64 {
    let r = api.get("/v1/me").await;
    assert_eq!(r.status, 200);
    r.body["unread"].as_u64().expect("unread")
}

fn seq_of(v: &Value) -> u64 {
    v["seq"].as_u64().expect("seq")
}

#[tokio::test]
async fn a_marker_reaches_every_socket_of_the_reader_and_no_one_else() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let bob = t.as_user("bob");
    alice.create_room("team", "public").await;
    bob.join("team").await;
    let last = alice.say("team", "one").await;
    alice.say("team", "two").await;

    let mut phone = t.ws("bob").await;
    let mut tablet = t.ws("bob").await;
    let mut other = t.ws("alice").await;

    let r = mark(&bob, "team", seq_of(&last)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["room"], "team");
    assert_eq!(r.body["seq"], last["seq"]);
    assert!(r.body["updated_at"].as_i64().is_some_and(|t| t > 0));

    for ws in [&mut phone, &mut tablet] {
        let f = ws.until(|f| f["type"] == "read_marker").await;
        assert_eq!(
            f,
            json!({"v": 1, "type": "read_marker", "room": "team", "seq": last["seq"],
                   "updated_at": r.body["updated_at"]})
        );
    }
    // Alice's socket hears nothing of it (the marker was published before the answer came).
    assert!(other
        .drain()
        .await
        .iter()
        .all(|f| f["type"] != "read_marker"));

    assert_eq!(
        markers(&bob).await,
        vec![json!({"room": "team", "seq": last["seq"], "updated_at": r.body["updated_at"]})]
    );
    assert!(markers(&alice).await.is_empty());
}

#[tokio::test]
async fn a_marker_only_moves_forward() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("team", "public").await;
    let a = alice.say("team", "a").await;
    let b = alice.say("team", "b").await;

    let ahead = mark(&alice, "team", seq_of(&b)).await;
    assert_eq!(ahead.status, 200);
    let behind = mark(&alice, "team", seq_of(&a)).await;
    assert_eq!(behind.status, 200, "{:?}", behind.body);
    // The answer is the marker as it is: still at b, not moved back, not re-stamped.
    assert_eq!(behind.body, ahead.body);
    assert_eq!(markers(&alice).await, vec![ahead.body.clone()]);
}

#[tokio::test]
async fn the_socket_marks_read_like_rest_and_replays_by_key() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("team", "public").await;
    let m = alice.say("team", "hello").await;
    let mut ws = t.ws("alice").await;
    let args = json!({"room": "team", "seq": m["seq"]});
    let first = ws
        .mutate_with_key("k-read-1", "room.mark_read", args.clone())
        .await;
    assert_eq!(first["type"], "ack", "{first}");
    assert_eq!(first["result"]["seq"], m["seq"]);
    let pushed = ws.until(|f| f["type"] == "read_marker").await;
    assert_eq!(pushed["seq"], m["seq"]);
    let again = ws.mutate_with_key("k-read-1", "room.mark_read", args).await;
    assert_eq!(again["result"], first["result"]);
}

#[tokio::test]
async fn bad_marks_are_refused_and_change_nothing() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("team", "public").await;
    alice.create_room("secret", "private").await;
    let m = alice.say("team", "hello").await;
    mark(&alice, "team", seq_of(&m)).await;
    let before = markers(&alice).await;

    // Past the room's last event.
    let r = mark(&alice, "team", seq_of(&m) + 1).await;
    assert_eq!((r.status, r.code()), (400, "invalid_input"), "{:?}", r.body);
    // Past the largest seq there can be.
    let r = mark(&alice, "team", i64::MAX as u64 + 1).await;
    assert_eq!((r.status, r.code()), (400, "invalid_input"), "{:?}", r.body);
    // Not a number, or a field too many.
    let r = alice.post("/v1/rooms/team/read", json!({"seq": "1"})).await;
    assert_eq!(r.status, 400);
    let r = alice
        .post("/v1/rooms/team/read", json!({"seq": 1, "extra": true}))
        .await;
    assert_eq!(r.status, 400);
    // Not a member: a public room is forbidden, a private one does not exist for them.
    let carol = t.as_user("carol");
    assert_eq!(mark(&carol, "team", 1).await.code(), "forbidden");
    assert_eq!(mark(&carol, "secret", 1).await.code(), "not_found");
    assert_eq!(mark(&carol, "nowhere", 1).await.code(), "not_found");
    // Unknown query parameters on the listing.
    assert_eq!(alice.get("/v1/read-markers?room=team").await.status, 400);

    assert_eq!(markers(&alice).await, before);
    assert!(markers(&carol).await.is_empty());
}

#[tokio::test]
async fn marking_read_clears_the_mentions_it_covers() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let bob = t.as_user("bob");
    alice.create_room("team", "public").await;
    alice.create_room("other", "public").await;
    bob.join("team").await;
    bob.join("other").await;
    let first = alice.say("team", "@bob one").await;
    let second = alice.say("team", "@bob two").await;
    alice.say("other", "@bob elsewhere").await;
    assert_eq!(unread(&bob).await, 3);

    let mut ws = t.ws("bob").await;
    mark(&bob, "team", seq_of(&first)).await;
    // The mention of `second` and the one in `other` stay unread; the count is pushed.
    let u = ws.until(|f| f["type"] == "unread").await;
    assert_eq!(u["count"], 2);
    assert_eq!(unread(&bob).await, 2);
    let r = bob.get("/v1/notifications?unread=true").await;
    let left: Vec<&Value> = r.body["items"].as_array().expect("items").iter().collect();
    assert_eq!(left.len(), 2);
    assert!(left.iter().any(|n| n["data"]["seq"] == second["seq"]));
    assert!(left.iter().any(|n| n["room"] == "other"));

    mark(&bob, "team", seq_of(&second)).await;
    assert_eq!(unread(&bob).await, 1);
}

#[tokio::test]
async fn markers_follow_membership_and_go_with_the_room() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let bob = t.as_user("bob");
    alice.create_room("team", "public").await;
    bob.join("team").await;
    let m = alice.say("team", "hello").await;
    mark(&bob, "team", seq_of(&m)).await;
    assert_eq!(markers(&bob).await.len(), 1);

    // Left: not listed; back: the marker is where it was.
    assert_eq!(
        bob.post("/v1/rooms/team/leave", json!({})).await.status,
        200
    );
    assert!(markers(&bob).await.is_empty());
    bob.join("team").await;
    assert_eq!(seq_of(&markers(&bob).await[0]), seq_of(&m));

    // Deleted: the markers go with the room.
    let r = alice
        .send(reqwest::Method::DELETE, "/v1/rooms/team", None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(markers(&bob).await.is_empty());
    assert_eq!(mark(&bob, "team", 1).await.code(), "not_found");
}
