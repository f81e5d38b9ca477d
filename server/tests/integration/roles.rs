//! One role rule: nobody grants a role they could not grant with `member.set_role`,
//! whether by invitation, on acceptance or by leaving and re-joining; invitations can be
//! revoked.

use serde_json::json;

use crate::fixtures::TestServer;

#[tokio::test]
async fn an_admin_cannot_make_an_admin_by_invitation() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let bob = t.as_user("bob");
    alice.create_room("general", "public").await;
    let inv = alice.invite("general", "bob", "admin").await;
    bob.accept(&inv).await;

    // The set_role route refuses, and so does the invitation route.
    let r = bob
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/general/members/carol/role",
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 404, "carol is no member yet: {:?}", r.body);
    let r = bob
        .post(
            "/v1/rooms/general/invitations",
            json!({"user": "mallory", "role": "admin"}),
        )
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.code(), "forbidden");
    // Below his own role is fine.
    let inv = bob.invite("general", "mallory", "member").await;
    assert_eq!(t.as_user("mallory").accept(&inv).await["role"], "member");
}

#[tokio::test]
async fn an_invitation_is_checked_again_when_it_is_accepted() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let bob = t.as_user("bob");
    alice.create_room("club", "protected").await;
    let inv = alice.invite("club", "bob", "admin").await;
    bob.accept(&inv).await;
    let for_carol = bob.invite("club", "carol", "member").await;
    let for_dave = bob.invite("club", "dave", "member").await;

    // bob is demoted to member: he could no longer grant `member`.
    let r = alice
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/club/members/bob/role",
            Some(json!({"role": "member"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let id = for_carol["id"].as_str().expect("id");
    let r = t
        .as_user("carol")
        .post(&format!("/v1/invitations/{id}/accept"), json!({}))
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.code(), "forbidden");
    // Joining with it is refused the same way.
    let r = t
        .as_user("dave")
        .post("/v1/rooms/club/join", json!({}))
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let members = alice.get("/v1/rooms/club/members").await;
    assert_eq!(members.body["items"].as_array().map(Vec::len), Some(2));
    // Promoted again, his invitation holds once more.
    alice
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/club/members/bob/role",
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(t.as_user("dave").accept(&for_dave).await["role"], "member");
}

#[tokio::test]
async fn invitations_can_be_revoked() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let bob = t.as_user("bob");
    let carol = t.as_user("carol");
    alice.create_room("club", "protected").await;
    let inv = alice.invite("club", "carol", "member").await;
    bob.join_invited(&alice, "club", "member").await;
    let id = inv["id"].as_str().expect("id");
    let path = format!("/v1/rooms/club/invitations/{id}");

    // A member who did not send it may not revoke it; an unknown id is not found.
    let r = bob.send(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = alice
        .send(
            reqwest::Method::DELETE,
            "/v1/rooms/club/invitations/no-such-invitation",
            None,
        )
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);

    let r = alice.send(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "revoked");
    let r = alice.send(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(r.status, 409, "revoking twice: {:?}", r.body);

    let r = carol
        .post(&format!("/v1/invitations/{id}/accept"), json!({}))
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    let r = carol.post("/v1/rooms/club/join", json!({})).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(
        carol.get("/v1/invitations").await.body[0]["status"],
        "revoked"
    );
}

#[tokio::test]
async fn a_demoted_guest_who_leaves_and_rejoins_stays_a_guest() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let bob = t.as_user("bob");
    alice.create_room("lobby", "public").await;
    assert_eq!(bob.join("lobby").await["role"], "member");
    let r = alice
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/lobby/members/bob/role",
            Some(json!({"role": "guest"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = bob.post("/v1/rooms/lobby/leave", json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(bob.join("lobby").await["role"], "guest");
    // Another round changes nothing; an invitation from the owner lifts it.
    bob.post("/v1/rooms/lobby/leave", json!({})).await;
    assert_eq!(bob.join("lobby").await["role"], "guest");
    bob.post("/v1/rooms/lobby/leave", json!({})).await;
    let inv = alice.invite("lobby", "bob", "member").await;
    assert_eq!(bob.accept(&inv).await["role"], "member");
}
