//! Rooms: kinds and visibility, roles, invitations with expiry, bans, ownership, input rules.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fixtures::{Api, TestServer};

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["name"].as_str().expect("name").to_owned())
        .collect()
}

/// `(user, role, status)` of every member row, by user id.
async fn members(api: &Api, room: &str) -> Vec<(String, String, String)> {
    let r = api.get(&format!("/v1/rooms/{room}/members")).await;
    assert_eq!(r.status, 200, "members: {:?}", r.body);
    r.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| {
            (
                m["user"].as_str().expect("user").to_owned(),
                m["role"].as_str().expect("role").to_owned(),
                m["status"].as_str().expect("status").to_owned(),
            )
        })
        .collect()
}

fn m(user: &str, role: &str, status: &str) -> (String, String, String) {
    (user.into(), role.into(), status.into())
}

#[tokio::test]
async fn create_list_and_show() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let r = alice
        .post(
            "/v1/rooms",
            json!({"room": "general", "kind": "public", "title": "General", "metadata": {"topic": "x"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let room = r.body.clone();
    assert_eq!(room["name"], "general");
    assert_eq!(room["kind"], "public");
    assert_eq!(room["title"], "General");
    assert_eq!(room["metadata"], json!({"topic": "x"}));
    assert_eq!(room["owner"], "alice");
    assert_eq!(room["created_by"], "alice");
    assert_eq!(
        room["head_seq"], 2,
        "room_created and the owner's member_joined"
    );
    assert_eq!(room["member_count"], 1);

    let shown = alice.get("/v1/rooms/general").await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body, room);
    let listed = alice.get("/v1/rooms").await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["items"], json!([room]));
    assert!(listed.body.get("next_cursor").is_none());
    assert_eq!(
        members(&alice, "general").await,
        vec![m("alice", "owner", "active")]
    );

    // The events of the room: room_created at 1, the owner joining at 2.
    let events = alice.all_events("general").await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["room_created", "member_joined"]);
    assert_eq!(events[0]["seq"], 1);
    assert_eq!(events[1]["data"]["user"], "alice");

    // A second room with the same name is a conflict, whoever asks.
    let again = t
        .as_user("bob")
        .post("/v1/rooms", json!({"room": "general", "kind": "private"}))
        .await;
    assert_eq!(again.status, 409, "{:?}", again.body);
    assert_eq!(again.code(), "conflict");
    assert_eq!(alice.get("/v1/rooms/general").await.body["owner"], "alice");

    // A bad kind is invalid input.
    let bad = alice
        .post("/v1/rooms", json!({"room": "x", "kind": "secret"}))
        .await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert_eq!(bad.code(), "invalid_input");
    assert_eq!(alice.get("/v1/rooms/nothing-here").await.status, 404);
}

#[tokio::test]
async fn list_pages_by_name() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    for name in ["r1", "r2", "r3", "r4", "r5"] {
        alice.create_room(name, "public").await;
    }
    let mut seen = Vec::new();
    let mut path = "/v1/rooms?limit=2".to_owned();
    loop {
        let r = alice.get(&path).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        seen.extend(names(&r.body));
        match r.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/rooms?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ["r1", "r2", "r3", "r4", "r5"]);
}

#[tokio::test]
async fn visibility_of_public_protected_and_private_rooms() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let bob = t.as_user("bob");
    alice.create_room("a-pub", "public").await;
    alice.create_room("b-prot", "protected").await;
    alice.create_room("c-priv", "private").await;
    alice.say("a-pub", "hello public").await;
    alice.say("b-prot", "hello protected").await;
    alice.say("c-priv", "hello private").await;

    assert_eq!(
        names(&alice.get("/v1/rooms").await.body),
        ["a-pub", "b-prot", "c-priv"]
    );
    assert_eq!(names(&bob.get("/v1/rooms").await.body), ["a-pub", "b-prot"]);
    assert_eq!(
        names(&bob.get("/v1/rooms?kind=protected").await.body),
        ["b-prot"]
    );
    assert_eq!(
        names(&bob.get("/v1/rooms?kind=private").await.body),
        Vec::<String>::new()
    );
    assert_eq!(
        names(&bob.get("/v1/rooms?joined=true").await.body),
        Vec::<String>::new()
    );
    assert_eq!(
        names(&alice.get("/v1/rooms?joined=true").await.body),
        ["a-pub", "b-prot", "c-priv"]
    );

    // The room itself: public and protected are visible, private reads as absent.
    assert_eq!(bob.get("/v1/rooms/a-pub").await.status, 200);
    let prot = bob.get("/v1/rooms/b-prot").await;
    assert_eq!(prot.status, 200, "{:?}", prot.body);
    assert_eq!(prot.body["kind"], "protected");
    let private = bob.get("/v1/rooms/c-priv").await;
    assert_eq!(private.status, 404, "{:?}", private.body);
    assert_eq!(private.code(), "not_found");

    // Messages: public readable, protected forbidden, private not found.
    let public = bob.get("/v1/rooms/a-pub/messages").await;
    assert_eq!(public.status, 200);
    assert_eq!(public.body["items"][0]["body"], "hello public");
    let prot = bob.get("/v1/rooms/b-prot/messages").await;
    assert_eq!(prot.status, 403, "{:?}", prot.body);
    assert_eq!(prot.code(), "forbidden");
    for path in [
        "/v1/rooms/c-priv/messages",
        "/v1/rooms/c-priv/members",
        "/v1/rooms/c-priv/events",
        "/v1/rooms/c-priv/documents",
    ] {
        let r = bob.get(path).await;
        assert_eq!(r.status, 404, "{path}: {:?}", r.body);
        assert_eq!(r.code(), "not_found", "{path}");
    }
    // Nor can an outsider write or join there.
    let r = bob
        .post("/v1/rooms/c-priv/messages", json!({"body": "let me in"}))
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = bob.post("/v1/rooms/c-priv/join", json!({})).await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = bob.post("/v1/rooms/b-prot/join", json!({})).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.code(), "forbidden");
    let r = bob
        .post("/v1/rooms/b-prot/messages", json!({"body": "let me in"}))
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(alice.all_messages("c-priv").await.len(), 1);
    assert_eq!(alice.all_messages("b-prot").await.len(), 1);

    // Once invited and accepted, the private room is bob's too.
    let inv = alice.invite("c-priv", "bob", "member").await;
    bob.accept(&inv).await;
    assert_eq!(
        names(&bob.get("/v1/rooms").await.body),
        ["a-pub", "b-prot", "c-priv"]
    );
    let r = bob.get("/v1/rooms/c-priv/messages").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["items"][0]["body"], "hello private");
}

#[tokio::test]
async fn roles_decide_who_edits_documents_and_the_room() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let bob = t.as_user("bob");
    let carol = t.as_user("carol");
    alice.create_room("team", "protected").await;
    let inv = alice.invite("team", "bob", "guest").await;
    assert_eq!(inv["role"], "guest");
    assert_eq!(bob.accept(&inv).await["role"], "guest");
    let inv = alice.invite("team", "carol", "member").await;
    assert_eq!(carol.accept(&inv).await["role"], "member");

    // A guest reads and talks but cannot edit a document.
    bob.say("team", "guest here").await;
    let r = bob
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/team/documents/plan",
            Some(json!({"base_version": 0, "content": "guest plan"})),
        )
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.code(), "forbidden");
    assert_eq!(bob.get("/v1/rooms/team/documents/plan").await.status, 404);
    // … nor invite.
    let r = bob
        .post("/v1/rooms/team/invitations", json!({"user": "dave"}))
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);

    // A member edits documents but not the room.
    let r = carol
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/team/documents/plan",
            Some(json!({"base_version": 0, "content": "member plan"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = carol
        .send(
            reqwest::Method::PATCH,
            "/v1/rooms/team",
            Some(json!({"title": "Carol's"})),
        )
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.code(), "forbidden");
    let r = carol
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/team/members/bob/role",
            Some(json!({"role": "member"})),
        )
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);

    // A member invites into a protected room, but only to a role below her own.
    for role in ["admin", "member"] {
        let r = carol
            .post(
                "/v1/rooms/team/invitations",
                json!({"user": "dave", "role": role}),
            )
            .await;
        assert_eq!(r.status, 403, "{role}: {:?}", r.body);
    }
    let r = carol
        .post(
            "/v1/rooms/team/invitations",
            json!({"user": "dave", "role": "guest"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["invited_by"], "carol");
    assert_eq!(r.body["role"], "guest");

    // The owner makes carol an admin; then carol may update the room and manage bob.
    let r = alice
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/team/members/carol/role",
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["role"], "admin");
    let r = carol
        .send(
            reqwest::Method::PATCH,
            "/v1/rooms/team",
            Some(json!({"title": "Carol's", "metadata": {"color": "red"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["title"], "Carol's");
    assert_eq!(r.body["metadata"], json!({"color": "red"}));
    assert_eq!(r.body["kind"], "protected");
    assert_eq!(alice.get("/v1/rooms/team").await.body["title"], "Carol's");
    let r = carol
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/team/members/bob/role",
            Some(json!({"role": "member"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // An admin cannot touch the owner or make another admin; nobody makes an owner this way.
    for (user, role, status) in [
        ("alice", "member", 403),
        ("bob", "admin", 403),
        ("bob", "owner", 400),
    ] {
        let r = carol
            .send(
                reqwest::Method::PUT,
                &format!("/v1/rooms/team/members/{user}/role"),
                Some(json!({"role": role})),
            )
            .await;
        assert_eq!(r.status, status, "{user} → {role}: {:?}", r.body);
    }
    // An empty update is invalid.
    let r = carol
        .send(reqwest::Method::PATCH, "/v1/rooms/team", Some(json!({})))
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);

    assert_eq!(
        members(&alice, "team").await,
        vec![
            m("alice", "owner", "active"),
            m("bob", "member", "active"),
            m("carol", "admin", "active"),
        ]
    );
    // Members page by user id.
    let p1 = alice.get("/v1/rooms/team/members?limit=2").await;
    assert_eq!(p1.body["items"].as_array().expect("items").len(), 2);
    assert_eq!(p1.body["next_cursor"], "bob");
    let p2 = alice.get("/v1/rooms/team/members?limit=2&cursor=bob").await;
    assert_eq!(p2.body["items"][0]["user"], "carol");
    assert!(p2.body.get("next_cursor").is_none());
    // bob was told about his new role.
    let n = bob.get("/v1/notifications").await;
    let kinds: Vec<&str> = n.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| n["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["invited", "role_changed"]);
    assert_eq!(n.body["items"][1]["data"], json!({"role": "member"}));
}

#[tokio::test]
async fn invitations_expire_can_be_rejected_and_accepted() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let bob = t.as_user("bob");
    let carol = t.as_user("carol");
    alice.create_room("secret", "private").await;

    // Input rules.
    for (body, why) in [
        (json!({"user": "bob", "ttl_secs": 0}), "ttl 0"),
        (
            json!({"user": "bob", "ttl_secs": 30 * 86_400 + 1}),
            "ttl over 30 days",
        ),
        (json!({"user": "bob", "role": "owner"}), "owner role"),
        (json!({"user": "b o b"}), "bad user id"),
    ] {
        let r = alice.post("/v1/rooms/secret/invitations", body).await;
        assert_eq!(r.status, 400, "{why}: {:?}", r.body);
        assert_eq!(r.code(), "invalid_input", "{why}");
    }

    // An invitation that expired answers 410 gone.
    let r = alice
        .post(
            "/v1/rooms/secret/invitations",
            json!({"user": "bob", "ttl_secs": 1}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let short = r.body;
    assert_eq!(short["status"], "pending");
    assert_eq!(short["invitee"], "bob");
    assert_eq!(short["invited_by"], "alice");
    assert_eq!(short["role"], "member");
    assert_eq!(
        short["expires_at"].as_i64().expect("expires_at")
            - short["created_at"].as_i64().expect("created_at"),
        1000
    );
    let mine = bob.get("/v1/invitations").await;
    assert_eq!(mine.body[0]["id"], short["id"]);
    assert_eq!(mine.body[0]["status"], "pending");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let id = short["id"].as_str().expect("id");
    let r = bob
        .post(&format!("/v1/invitations/{id}/accept"), json!({}))
        .await;
    assert_eq!(r.status, 410, "{:?}", r.body);
    assert_eq!(r.code(), "gone");
    assert_eq!(
        bob.get("/v1/invitations").await.body[0]["status"],
        "expired"
    );
    assert_eq!(bob.get("/v1/rooms/secret").await.status, 404);
    // Joining on an expired invitation does not work either.
    let r = bob.post("/v1/rooms/secret/join", json!({})).await;
    assert_eq!(r.status, 404, "{:?}", r.body);

    // A new invitation, rejected: it cannot be accepted afterwards.
    let inv = alice.invite("secret", "bob", "member").await;
    let id = inv["id"].as_str().expect("id");
    let r = bob
        .post(&format!("/v1/invitations/{id}/reject"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "rejected");
    assert_eq!(r.body["id"], inv["id"]);
    let r = bob
        .post(&format!("/v1/invitations/{id}/accept"), json!({}))
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(r.code(), "conflict");

    // A third one with the admin role: only bob can accept it, and he becomes an admin.
    let inv = alice.invite("secret", "bob", "admin").await;
    let id = inv["id"].as_str().expect("id");
    let r = carol
        .post(&format!("/v1/invitations/{id}/accept"), json!({}))
        .await;
    assert_eq!(r.status, 404, "someone else's invitation: {:?}", r.body);
    let r = alice
        .post(&format!("/v1/invitations/{id}/reject"), json!({}))
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    let listed = alice.get("/v1/rooms/secret/invitations").await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    assert_eq!(listed.body[0]["id"], inv["id"]);
    assert_eq!(listed.body.as_array().expect("list").len(), 3);
    let member = bob.accept(&inv).await;
    assert_eq!(member["role"], "admin");
    assert_eq!(member["status"], "active");
    assert_eq!(member["user"], "bob");
    assert_eq!(member["room"], "secret");
    let r = bob
        .post(&format!("/v1/invitations/{id}/accept"), json!({}))
        .await;
    assert_eq!(r.status, 409, "accepting twice: {:?}", r.body);
    assert_eq!(
        members(&alice, "secret").await,
        vec![m("alice", "owner", "active"), m("bob", "admin", "active")]
    );
    assert_eq!(bob.get("/v1/rooms/secret").await.status, 200);
    assert_eq!(alice.get("/v1/rooms/secret").await.body["member_count"], 2);

    // Inviting a member again is a conflict; carol (not a member) sees no invitations list.
    let r = alice
        .post("/v1/rooms/secret/invitations", json!({"user": "bob"}))
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(carol.get("/v1/rooms/secret/invitations").await.status, 403);
    // Two pending invitations for the same user are a conflict too.
    alice.invite("secret", "carol", "member").await;
    let r = alice
        .post("/v1/rooms/secret/invitations", json!({"user": "carol"}))
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    // Joining with a pending invitation is accepting it, with its role.
    let inv = alice.invite("secret", "frank", "guest").await;
    let joined = t.as_user("frank").join("secret").await;
    assert_eq!(joined["role"], "guest");
    let frank_invs = t.as_user("frank").get("/v1/invitations").await;
    assert_eq!(frank_invs.body[0]["id"], inv["id"]);
    assert_eq!(frank_invs.body[0]["status"], "accepted");
    // In a private room only admins invite; a guest never does.
    let inv = alice.invite("secret", "dave", "member").await;
    t.as_user("dave").accept(&inv).await;
    let r = t
        .as_user("dave")
        .post("/v1/rooms/secret/invitations", json!({"user": "erin"}))
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
}

#[tokio::test]
async fn a_banned_user_cannot_join_send_or_read_until_unbanned() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let bob = t.as_user("bob");
    alice.create_room("lobby", "public").await;
    bob.join("lobby").await;
    bob.say("lobby", "hi").await;

    let r = alice
        .post("/v1/rooms/lobby/bans", json!({"user": "bob"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, json!({}));
    assert_eq!(
        members(&alice, "lobby").await,
        vec![m("alice", "owner", "active"), m("bob", "member", "banned")]
    );
    assert_eq!(alice.get("/v1/rooms/lobby").await.body["member_count"], 1);

    let r = bob.post("/v1/rooms/lobby/join", json!({})).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.code(), "forbidden");
    let r = bob
        .post("/v1/rooms/lobby/messages", json!({"body": "still here?"}))
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.code(), "forbidden");
    let r = bob.get("/v1/rooms/lobby/messages").await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let mut ws = t.ws("bob").await;
    let sub = ws.subscribe(&[("lobby", 0)]).await;
    assert_eq!(sub["result"]["rooms"][0]["status"], "forbidden");
    let ack = ws
        .mutate("message.send", json!({"room": "lobby", "body": "over ws"}))
        .await;
    assert_eq!(ack["type"], "error");
    assert_eq!(ack["code"], "forbidden");
    // Nothing bob tried was stored.
    let bodies: Vec<Value> = alice
        .all_messages("lobby")
        .await
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(bodies, [json!("hi")]);

    // Banning twice is a conflict; a member cannot ban; nobody bans themselves.
    let r = alice
        .post("/v1/rooms/lobby/bans", json!({"user": "bob"}))
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    t.as_user("carol").join("lobby").await;
    let r = t
        .as_user("carol")
        .post("/v1/rooms/lobby/bans", json!({"user": "alice"}))
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = alice
        .post("/v1/rooms/lobby/bans", json!({"user": "alice"}))
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    // An admin cannot ban another admin (only a weaker member).
    let r = alice
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/lobby/members/carol/role",
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 200);
    t.as_user("gina").join("lobby").await;
    let r = alice
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/lobby/members/gina/role",
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = t
        .as_user("carol")
        .post("/v1/rooms/lobby/bans", json!({"user": "gina"}))
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    // A user who never joined can be banned too, and then cannot join.
    let r = alice
        .post("/v1/rooms/lobby/bans", json!({"user": "dave"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = t
        .as_user("dave")
        .post("/v1/rooms/lobby/join", json!({}))
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);

    // bob was told; a pending invitation of a banned user cannot be used.
    let kinds: Vec<Value> = bob.get("/v1/notifications").await.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| n["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("banned")]);
    alice.create_room("vip", "protected").await;
    let inv = alice.invite("vip", "erin", "member").await;
    let r = alice
        .post("/v1/rooms/vip/bans", json!({"user": "erin"}))
        .await;
    assert_eq!(r.status, 200);
    let id = inv["id"].as_str().expect("id");
    let erin = t.as_user("erin");
    let r = erin
        .post(&format!("/v1/invitations/{id}/accept"), json!({}))
        .await;
    assert!(
        [403, 404, 409, 410].contains(&r.status),
        "a banned invitee accepted: {:?}",
        r.body
    );
    let r = erin.post("/v1/rooms/vip/join", json!({})).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let vip = members(&alice, "vip").await;
    assert_eq!(vip.len(), 2);
    assert_eq!((vip[1].0.as_str(), vip[1].2.as_str()), ("erin", "banned"));
    let r = alice
        .post("/v1/rooms/vip/invitations", json!({"user": "erin"}))
        .await;
    assert_eq!(r.status, 403, "inviting a banned user: {:?}", r.body);

    // Unban: bob may join and talk again.
    let r = alice
        .send(reqwest::Method::DELETE, "/v1/rooms/lobby/bans/bob", None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = alice
        .send(reqwest::Method::DELETE, "/v1/rooms/lobby/bans/bob", None)
        .await;
    assert_eq!(r.status, 404, "not banned any more: {:?}", r.body);
    let joined = bob.join("lobby").await;
    assert_eq!(joined["role"], "member");
    bob.say("lobby", "back").await;
    let kinds: Vec<String> = alice
        .all_events("lobby")
        .await
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "room_created",
            "member_joined",
            "member_joined",
            "message_created",
            "member_banned",
            "member_joined",
            "member_updated",
            "member_joined",
            "member_updated",
            "member_banned",
            "member_unbanned",
            "member_joined",
            "message_created"
        ]
    );
}

#[tokio::test]
async fn ownership_transfer_and_an_owner_who_wants_to_leave() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let bob = t.as_user("bob");
    alice.create_room("club", "public").await;
    bob.join("club").await;

    let r = alice.post("/v1/rooms/club/leave", json!({})).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(r.code(), "conflict");
    let r = alice
        .post("/v1/rooms/club/transfer", json!({"user": "carol"}))
        .await;
    assert_eq!(r.status, 409, "to a non-member: {:?}", r.body);
    let r = bob
        .post("/v1/rooms/club/transfer", json!({"user": "bob"}))
        .await;
    assert_eq!(r.status, 403, "not the owner: {:?}", r.body);
    let r = alice
        .post("/v1/rooms/club/transfer", json!({"user": "alice"}))
        .await;
    assert_eq!(r.status, 409, "to oneself: {:?}", r.body);
    assert_eq!(alice.get("/v1/rooms/club").await.body["owner"], "alice");

    let r = alice
        .post("/v1/rooms/club/transfer", json!({"user": "bob"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["owner"], "bob");
    assert_eq!(r.body["name"], "club");
    assert_eq!(
        members(&alice, "club").await,
        vec![m("alice", "admin", "active"), m("bob", "owner", "active")]
    );
    let n = bob.get("/v1/notifications").await;
    assert_eq!(n.body["items"][0]["kind"], "ownership_transferred");
    assert_eq!(n.body["items"][0]["room"], "club");
    let events = alice.all_events("club").await;
    let tail: Vec<(String, String)> = events[events.len() - 2..]
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().expect("kind").to_owned(),
                format!(
                    "{}:{}",
                    e["data"]["user"].as_str().unwrap_or(""),
                    e["data"]["role"].as_str().unwrap_or("")
                ),
            )
        })
        .collect();
    assert_eq!(
        tail,
        [
            ("member_updated".to_owned(), "bob:owner".to_owned()),
            ("member_updated".to_owned(), "alice:admin".to_owned())
        ]
    );

    // Now bob is the one who cannot leave, and alice (an admin) can.
    let r = bob.post("/v1/rooms/club/leave", json!({})).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    let r = alice.post("/v1/rooms/club/leave", json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, json!({}));
    assert_eq!(
        members(&bob, "club").await,
        vec![m("bob", "owner", "active")]
    );
    let r = alice.post("/v1/rooms/club/leave", json!({})).await;
    assert_eq!(r.status, 403, "not a member any more: {:?}", r.body);
    // The old owner cannot delete the room; the new one can.
    let r = alice
        .send(reqwest::Method::DELETE, "/v1/rooms/club", None)
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = bob
        .send(reqwest::Method::DELETE, "/v1/rooms/club", None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(bob.get("/v1/rooms/club").await.status, 404);
    assert_eq!(
        names(&bob.get("/v1/rooms").await.body),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn deleting_a_room_ends_its_subscriptions() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("tmp", "public").await;
    t.as_user("bob").join("tmp").await;
    let mut ws = t.ws("bob").await;
    ws.subscribe(&[("tmp", 3)]).await;
    ws.until(|f| f["type"] == "caught_up").await;
    let r = alice
        .send(reqwest::Method::DELETE, "/v1/rooms/tmp", None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let ev = ws.until(|f| f["type"] == "event").await;
    assert_eq!(ev["kind"], "room_deleted");
    assert_eq!(ev["seq"], 4);
    assert_eq!(ev["data"], json!({"name": "tmp"}));
    let un = ws.next().await;
    assert_eq!(un["type"], "unsubscribed", "{un}");
    assert_eq!(un["room"], "tmp");
    assert_eq!(un["reason"], "room_deleted");
    // The name stays taken, and writing to the room is not found.
    let r = alice
        .post("/v1/rooms", json!({"room": "tmp", "kind": "public"}))
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    let r = alice
        .post("/v1/rooms/tmp/messages", json!({"body": "x"}))
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
}

const SQL_NAMES: &[&str] = &[
    "x'; DROP TABLE rooms;--",
    "Robert'); DROP TABLE rooms;--",
    "1 OR 1=1",
    "a\" OR \"\"=\"",
    "%",
    "_",
    "*",
    "../etc/passwd",
    "-lead",
    "",
    "a b",
    "naïve",
];

#[tokio::test]
async fn sql_looking_room_names_are_refused_and_change_nothing() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("keep", "public").await;
    let before = alice.get("/v1/rooms").await.body;
    let too_long = "a".repeat(65);
    for name in SQL_NAMES.iter().copied().chain([too_long.as_str()]) {
        let r = alice
            .post("/v1/rooms", json!({"room": name, "kind": "public"}))
            .await;
        assert_eq!(r.status, 400, "{name:?}: {:?}", r.body);
        assert_eq!(r.code(), "invalid_input", "{name:?}");
        let r = alice
            .post("/v1/rooms", json!({"room": name, "kind": "private"}))
            .await;
        assert_eq!(r.status, 400, "{name:?}: {:?}", r.body);
    }
    // The same names in paths (percent-encoded) are refused as well.
    for name in ["x'%3B%20DROP%20TABLE%20rooms%3B--", "1%20OR%201%3D1", "%25"] {
        let r = alice.get(&format!("/v1/rooms/{name}/messages")).await;
        assert_eq!(r.status, 400, "{name}: {:?}", r.body);
        assert_eq!(r.code(), "invalid_input");
        let r = alice
            .post(&format!("/v1/rooms/{name}/messages"), json!({"body": "x"}))
            .await;
        assert_eq!(r.status, 400, "{name}: {:?}", r.body);
    }
    let mut ws = t.ws("alice").await;
    let r = ws
        .subscribe(&[("keep", 0), ("x'; DROP TABLE rooms;--", 0)])
        .await;
    assert_eq!(r["type"], "error", "{r}");
    assert_eq!(r["code"], "invalid_input");
    let r = ws
        .mutate(
            "room.create",
            json!({"room": "x'; DROP TABLE rooms;--", "kind": "public"}),
        )
        .await;
    assert_eq!(r["code"], "invalid_input", "{r}");
    // Nothing was created, nothing was dropped.
    assert_eq!(alice.get("/v1/rooms").await.body, before);
    assert_eq!(alice.get("/v1/rooms/keep").await.status, 200);
    assert_eq!(alice.all_events("keep").await.len(), 2);
}

#[tokio::test]
async fn sql_looking_bodies_titles_and_contents_are_stored_verbatim() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let r = alice
        .post(
            "/v1/rooms",
            json!({"room": "quotes", "kind": "public", "title": "'); DROP TABLE rooms; --"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let bodies = [
        "'; DELETE FROM messages; --",
        "Robert'); DROP TABLE messages;--",
        "\" OR 1=1 --",
        "100% _done_ \\ back\\slash",
        "<script>alert(1)</script>",
        "héllo wörld 🌍 — 「引用」",
        "line one\nline two\ttabbed",
        "a\u{0}b",
        "@'; SELECT * FROM users; --",
    ];
    let mut ws = t.ws("alice").await;
    ws.subscribe(&[("quotes", 2)]).await;
    ws.until(|f| f["type"] == "caught_up").await;
    for b in bodies {
        let sent = alice.say("quotes", b).await;
        assert_eq!(sent["body"], b);
    }
    let stored: Vec<String> = alice
        .all_messages("quotes")
        .await
        .iter()
        .map(|m| m["body"].as_str().expect("body").to_owned())
        .collect();
    assert_eq!(stored, bodies);
    let live: Vec<String> = ws
        .events_until("quotes", 2 + bodies.len() as u64)
        .await
        .iter()
        .map(|e| e["data"]["body"].as_str().expect("body").to_owned())
        .collect();
    assert_eq!(live, bodies);
    assert_eq!(
        alice.get("/v1/rooms/quotes").await.body["title"],
        "'); DROP TABLE rooms; --"
    );
    let content = "'; UPDATE documents SET version = 0; --";
    let r = alice
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/quotes/documents/doc1",
            Some(json!({"base_version": 0, "content": content})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        alice.get("/v1/rooms/quotes/documents/doc1").await.body["content"],
        content
    );
    // The search box of the directory takes SQL too, and finds nothing odd.
    let r = alice.get("/v1/users?q=%27%20OR%201%3D1%20--").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["items"], json!([]));
    let r = alice.get("/v1/users?q=%25").await;
    assert_eq!(r.body["items"], json!([]), "% is not a wildcard");
}
