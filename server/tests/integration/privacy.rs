//! Presence and the user directory are private: only users who share a room
//! see each other's presence, `last_seen` and directory entry; an invitation to a made-up id
//! creates no directory entry.

use serde_json::json;

use crate::fixtures::{TestServer, WAIT};

fn ids(body: &serde_json::Value) -> Vec<String> {
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|u| u["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn only_roommates_see_presence_and_directory_entries() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    let carol = t.as_user("carol");
    let mallory = t.as_user("mallory");
    alice.create_room("team", "private").await;
    carol.join_invited(&alice, "team", "member").await;
    mallory.get("/v1/me").await;
    mallory.create_room("elsewhere", "public").await;

    // alice comes online.
    let _ws = t.ws("alice").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let p = carol.get("/v1/presence?users=alice").await;
        if p.body[0]["status"] == "online" {
            assert!(p.body[0]["last_seen"].is_i64());
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:?}", p.body);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // mallory shares no room with alice: offline, never seen.
    let p = mallory.get("/v1/presence?users=alice,carol,mallory").await;
    assert_eq!(p.status, 200, "{:?}", p.body);
    assert_eq!(
        p.body[0],
        json!({"user": "alice", "status": "offline", "devices": 0})
    );
    assert_eq!(
        p.body[1],
        json!({"user": "carol", "status": "offline", "devices": 0})
    );
    assert_eq!(p.body[2]["user"], "mallory");

    // The directory: carol sees alice (and herself); mallory sees only herself.
    assert_eq!(ids(&carol.get("/v1/users").await.body), ["alice", "carol"]);
    assert_eq!(ids(&mallory.get("/v1/users").await.body), ["mallory"]);
    assert_eq!(
        ids(&mallory.get("/v1/users?q=alice").await.body),
        Vec::<String>::new()
    );
    // Joining mallory's public room makes carol visible to her.
    carol.join("elsewhere").await;
    assert_eq!(
        ids(&mallory.get("/v1/users").await.body),
        ["carol", "mallory"]
    );
}

#[tokio::test]
async fn an_invitation_to_a_made_up_id_creates_no_directory_entry() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("lobby", "public").await;
    alice.invite("lobby", "ghost-4711", "member").await;
    let r = alice
        .post("/v1/rooms/lobby/bans", json!({"user": "phantom-99"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let store = &t.server().state().service.store;
    let everyone = store
        .search_users(&roam_server::store::UserQuery {
            limit: 200,
            ..Default::default()
        })
        .await
        .expect("search");
    let listed: Vec<&str> = everyone.items.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(listed, ["alice"]);
    // The invitee still has the invitation and its notification once they show up.
    let ghost = t.as_user("ghost-4711");
    assert_eq!(
        ghost.get("/v1/invitations").await.body[0]["status"],
        "pending"
    );
    let n = ghost.get("/v1/notifications").await;
    assert_eq!(n.body["items"][0]["kind"], "invited");
    assert_eq!(n.body["items"][0]["seq"], 1);
}
