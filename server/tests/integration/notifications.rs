//! Notifications: created by mentions and invitations, pushed live with the unread count,
//! listed over REST, read state, and catch-up on `subscribe` (protocol §5).

use serde_json::{json, Value};

use crate::fixtures::{Api, TestServer};

async fn inbox(api: &Api, query: &str) -> Vec<Value> {
    let r = api.get(&format!("/v1/notifications{query}")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["items"].as_array().expect("items").clone()
}

async fn unread(api: &Api) -> u64 {
    let r = api.get("/v1/me").await;
    assert_eq!(r.status, 200);
    r.body["unread"].as_u64().expect("unread")
}

#[tokio::test]
async fn a_mention_notifies_a_connected_member_live() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("team", "public").await;
    t.as_user("bob").join("team").await;
    let mut bob = t.ws("bob").await;

    let msg = alice.say("team", "hey @bob, look at this").await;
    let n = bob.until(|f| f["type"] == "notification").await;
    assert_eq!(n["seq"], 1);
    assert_eq!(n["user"], "bob");
    assert_eq!(n["kind"], "mentioned");
    assert_eq!(n["room"], "team");
    assert_eq!(n["actor"], "alice");
    assert_eq!(n["read"], false);
    assert_eq!(n["data"]["message"], msg["id"]);
    assert!(n["id"].as_str().is_some_and(|s| !s.is_empty()));
    let u = bob.next().await;
    assert_eq!(u, json!({"v": 1, "type": "unread", "count": 1}));
    // The same one is listed over REST.
    let listed = inbox(&t.as_user("bob"), "").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], n["id"]);
    assert_eq!(listed[0]["data"], n["data"]);
    assert_eq!(unread(&t.as_user("bob")).await, 1);
}

#[tokio::test]
async fn a_mention_names_the_message_seq() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("team", "public").await;
    t.as_user("bob").join("team").await;
    let msg = alice.say("team", "@bob see this").await;
    let listed = inbox(&t.as_user("bob"), "").await;
    assert_eq!(
        listed[0]["data"],
        json!({"message": msg["id"], "seq": msg["seq"]})
    );
}

#[tokio::test]
async fn mentions_are_stored_for_offline_members_only_once_each() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let dave = t.as_user("dave");
    alice.create_room("team", "public").await;
    dave.join("team").await;
    alice.say("team", "@dave @dave @carol @alice hello").await;
    alice.say("team", "again, @dave.").await;
    alice.say("team", "no mention: dave@example.com").await;

    let all = inbox(&dave, "").await;
    let seqs: Vec<u64> = all
        .iter()
        .map(|n| n["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [1, 2]);
    assert!(all
        .iter()
        .all(|n| n["kind"] == "mentioned" && n["read"] == false));
    assert_eq!(unread(&dave).await, 2);
    assert_eq!(inbox(&dave, "?after=1").await.len(), 1);
    assert_eq!(inbox(&dave, "?after=1").await[0]["seq"], 2);
    assert_eq!(inbox(&dave, "?limit=1").await.len(), 1);
    // Not a member, or oneself: no notification.
    assert_eq!(inbox(&t.as_user("carol"), "").await, Vec::<Value>::new());
    assert_eq!(inbox(&alice, "").await, Vec::<Value>::new());
}

#[tokio::test]
async fn an_invitation_notifies_the_invitee() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("secret", "private").await;
    let mut bob = t.ws("bob").await;
    let inv = alice.invite("secret", "bob", "admin").await;
    let n = bob.until(|f| f["type"] == "notification").await;
    assert_eq!(n["kind"], "invited");
    assert_eq!(n["room"], "secret");
    assert_eq!(n["actor"], "alice");
    assert_eq!(n["data"]["id"], inv["id"]);
    assert_eq!(n["data"]["role"], "admin");
    assert_eq!(n["data"]["room"], "secret");
    assert_eq!(bob.next().await["count"], 1);
}

#[tokio::test]
async fn reading_updates_and_pushes_the_unread_count() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let bob_api = t.as_user("bob");
    alice.create_room("team", "public").await;
    bob_api.join("team").await;
    for i in 0..4 {
        alice.say("team", &format!("@bob #{i}")).await;
    }
    let ids: Vec<String> = inbox(&bob_api, "")
        .await
        .iter()
        .map(|n| n["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 4);
    let mut bob = t.ws("bob").await;

    let r = bob_api
        .post("/v1/notifications/read", json!({"ids": [ids[0]]}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, json!({"unread": 3}));
    assert_eq!(bob.until(|f| f["type"] == "unread").await["count"], 3);
    // Reading again, or unknown ids, or someone else's: nothing changes.
    let r = bob_api
        .post("/v1/notifications/read", json!({"ids": [ids[0], "nope"]}))
        .await;
    assert_eq!(r.body, json!({"unread": 3}));
    let r = t
        .as_user("carol")
        .post("/v1/notifications/read", json!({"ids": [ids[1]]}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, json!({"unread": 0}));
    assert_eq!(unread(&bob_api).await, 3);
    let unread_only = inbox(&bob_api, "?unread=true").await;
    assert_eq!(
        unread_only
            .iter()
            .map(|n| n["id"].as_str().expect("id"))
            .collect::<Vec<_>>(),
        [&ids[1], &ids[2], &ids[3]]
    );
    assert_eq!(inbox(&bob_api, "").await[0]["read"], true);

    // Over the socket.
    let ack = bob
        .mutate("notification.read", json!({"ids": [ids[1]]}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["result"], json!({"unread": 2}));
    assert_eq!(bob.until(|f| f["type"] == "unread").await["count"], 2);

    // Everything.
    let r = bob_api.post("/v1/notifications/read-all", json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, json!({"unread": 0}));
    assert_eq!(bob.until(|f| f["type"] == "unread").await["count"], 0);
    assert_eq!(unread(&bob_api).await, 0);
    assert_eq!(inbox(&bob_api, "?unread=true").await, Vec::<Value>::new());
    assert!(inbox(&bob_api, "").await.iter().all(|n| n["read"] == true));

    let too_many: Vec<String> = (0..501).map(|i| format!("n{i}")).collect();
    let r = bob_api
        .post("/v1/notifications/read", json!({"ids": too_many}))
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
}

#[tokio::test]
async fn subscribe_with_inbox_since_delivers_what_was_missed() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("team", "public").await;
    t.as_user("bob").join("team").await;
    // bob is away; three notifications pile up.
    let inv_room = alice.create_room("other", "private").await;
    assert_eq!(inv_room["name"], "other");
    alice.say("team", "@bob one").await;
    alice.say("team", "@bob two").await;
    alice.invite("other", "bob", "member").await;

    let mut bob = t.ws("bob").await;
    let ack = bob.subscribe_inbox(&[("team", 3)], 1).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let mut got = Vec::new();
    let mut count = None;
    while count.is_none() {
        let f = bob.next().await;
        match f["type"].as_str() {
            Some("notification") => got.push(f),
            Some("unread") => count = Some(f["count"].clone()),
            Some("caught_up") | Some("event") => {}
            _ => panic!("unexpected {f}"),
        }
    }
    let seqs: Vec<u64> = got
        .iter()
        .map(|n| n["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [2, 3]);
    assert_eq!(got[0]["kind"], "mentioned");
    assert_eq!(got[1]["kind"], "invited");
    assert_eq!(count, Some(json!(3)));

    // Up to date: only the count.
    let ack = bob.subscribe_inbox(&[], 3).await;
    assert_eq!(ack["result"]["rooms"], json!([]));
    let f = bob.next().await;
    assert_eq!(f, json!({"v": 1, "type": "unread", "count": 3}));
    assert_eq!(bob.drain().await, Vec::<Value>::new());
}
