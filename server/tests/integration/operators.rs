//! The operator's actions on users and rooms (`roam-server admin users|rooms …`, docs/admin.md):
//! suspend and unsuspend, erase, export, list and show users; list, show, transfer and delete
//! rooms. On SQLite and, with `ROAM_TEST_STORE`, on PostgreSQL; the two-instance cases are in
//! `cluster.rs`.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::blobs::{download, png, sha, upload};
use crate::fixtures::{postgres_url, Api, TestServer, Ws};

pub(crate) const ADMIN_TOKEN: &str = "admin-token-for-the-operators-0123456789";

async fn start() -> TestServer {
    TestServer::start_with(|c| {
        c.admin_token = Some(ADMIN_TOKEN.parse().expect("token"));
        c.admin_listen = ([127, 0, 0, 1], 0).into();
    })
    .await
}

/// An admin request: status and JSON answer.
pub(crate) async fn admin(
    t: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let addr = t
        .server()
        .admin_addr()
        .expect("the admin interface is served");
    let mut r = t
        .http
        .request(method, format!("http://{addr}{path}"))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.expect("admin request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON answer"))
}

/// Waits (bounded) for the socket to be closed by the server; answers the close code.
pub(crate) async fn closed_within(ws: &mut Ws, secs: u64) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(secs), ws.closed())
        .await
        .expect("the socket was not closed in time")
}

#[tokio::test]
async fn a_suspended_user_is_shut_out_and_comes_back_with_a_new_token_only() {
    let t = start().await;
    let alice = t.as_user("alice");
    alice.create_room("den", "public").await;
    let old = t.token("alice");
    let mut ws = t.ws("alice").await;
    assert_eq!(alice.get("/v1/me").await.status, 200);

    let (status, body) = admin(&t, Method::POST, "/admin/v1/users/alice/suspend", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["suspended"], true);
    assert_eq!(
        closed_within(&mut ws, 5).await,
        Some(roam_proto::close::TOKEN_EXPIRED)
    );

    let r = alice.get("/v1/me").await;
    assert_eq!((r.status, r.code()), (401, "suspended"), "{:?}", r.body);
    let fresh = t.as_user("alice");
    let r = fresh
        .post("/v1/rooms/den/messages", json!({"body": "let me in"}))
        .await;
    assert_eq!((r.status, r.code()), (401, "suspended"));
    let refused = Ws::try_connect(&t.ws_url(), Some(&old)).await;
    assert!(refused.is_err(), "the handshake is refused");
    // Others are not affected.
    assert_eq!(t.as_user("bob").get("/v1/me").await.status, 200);

    // Tokens issued before the end of the suspension stay refused.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = admin(&t, Method::POST, "/admin/v1/users/alice/unsuspend", None).await;
    assert_eq!(status, 200, "{body}");
    let r = alice.with_token(Some(old.clone())).get("/v1/me").await;
    assert_eq!((r.status, r.code()), (401, "suspended"));
    let after = t.as_user("alice");
    assert_eq!(after.get("/v1/me").await.status, 200);
    let mut back = t.ws("alice").await;
    back.subscribe(&[("den", 0)]).await;

    assert_eq!(
        t.metric("roam_admin_actions_total", Some("\"suspend\""))
            .await,
        1.0
    );
    assert_eq!(
        t.metric("roam_admin_actions_total", Some("\"unsuspend\""))
            .await,
        1.0
    );
    // A suspension survives a restart (the store holds it).
    let (status, _) = admin(&t, Method::POST, "/admin/v1/users/bob/suspend", None).await;
    assert_eq!(status, 200);
    let t = t
        .restart_with(|c| {
            c.admin_token = Some(ADMIN_TOKEN.parse().expect("token"));
            c.admin_listen = ([127, 0, 0, 1], 0).into();
        })
        .await;
    let r = t.as_user("bob").get("/v1/me").await;
    assert_eq!((r.status, r.code()), (401, "suspended"));
    assert_eq!(t.as_user("alice").get("/v1/me").await.status, 200);
}

#[tokio::test]
async fn operators_list_show_transfer_and_delete_rooms_of_every_kind() {
    let t = start().await;
    let (alice, bob, carol) = (t.as_user("alice"), t.as_user("bob"), t.as_user("carol"));
    alice.create_room("hidden", "private").await;
    alice.create_room("open", "public").await;
    bob.join("open").await;
    carol.join("open").await;

    let (status, body) = admin(&t, Method::GET, "/admin/v1/rooms?limit=10", None).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["hidden", "open"], "private rooms too");
    let (_, body) = admin(&t, Method::GET, "/admin/v1/rooms?after=hidden", None).await;
    assert_eq!(body["rooms"].as_array().expect("rooms").len(), 1);

    let (status, body) = admin(&t, Method::GET, "/admin/v1/rooms/open", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room"]["owner"], "alice");
    assert_eq!(body["members"].as_array().expect("members").len(), 3);

    // Without --to: the oldest admin, else the oldest member (bob joined first).
    let (status, body) = admin(
        &t,
        Method::POST,
        "/admin/v1/rooms/open/transfer",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["owner"], "bob");
    let (status, body) = admin(
        &t,
        Method::POST,
        "/admin/v1/rooms/open/transfer",
        Some(json!({"to": "carol"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["owner"], "carol");
    assert_eq!(alice.get("/v1/rooms/open").await.body["owner"], "carol");
    let (status, _) = admin(&t, Method::POST, "/admin/v1/rooms/hidden/transfer", None).await;
    assert_eq!(status, 409, "nobody else is in it");
    let (status, _) = admin(
        &t,
        Method::POST,
        "/admin/v1/rooms/open/transfer",
        Some(json!({"to": "nobody"})),
    )
    .await;
    assert!(status == 404 || status == 409, "{status}");
    assert_eq!(
        alice.get("/v1/rooms/open").await.body["owner"],
        "carol",
        "nothing changed"
    );

    let (status, body) = admin(&t, Method::DELETE, "/admin/v1/rooms/hidden", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(alice.get("/v1/rooms/hidden").await.status, 404);
    let (status, _) = admin(&t, Method::GET, "/admin/v1/rooms/hidden", None).await;
    assert_eq!(status, 404);
    let (status, _) = admin(&t, Method::DELETE, "/admin/v1/rooms/hidden", None).await;
    assert_eq!(status, 404);

    // The token guards every route.
    let addr = t.server().admin_addr().expect("admin");
    let r = t
        .http
        .get(format!("http://{addr}/admin/v1/rooms"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        t.metric("roam_admin_actions_total", Some("room_transfer"))
            .await,
        2.0
    );
    assert_eq!(
        t.metric("roam_admin_actions_total", Some("room_delete"))
            .await,
        1.0
    );
}

/// Every file under `dir`, with its bytes.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p, bytes));
        }
    }
    out
}

fn holds(hay: &[u8], needle: impl AsRef<[u8]>) -> bool {
    let needle = needle.as_ref();
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The entries of a tar archive: name and bytes.
fn archive(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut tar = tar::Archive::new(std::fs::File::open(path).expect("archive"));
    for entry in tar.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("name").to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read entry");
        out.insert(name, bytes);
    }
    out
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

async fn edit(api: &Api, room: &str, id: &str, body: &str) {
    let r = api
        .send(
            Method::PATCH,
            &format!("/v1/rooms/{room}/messages/{id}"),
            Some(json!({"body": body})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[tokio::test]
async fn users_are_listed_shown_exported_and_erased_without_a_trace() {
    let t = start().await;
    let (zed, bob, carol) = (t.as_user("zed"), t.as_user("bob"), t.as_user("carol"));
    // zed owns a room bob and carol are in (carol is its admin), and writes in bob's.
    zed.create_room("zeds", "public").await;
    bob.join("zeds").await;
    carol.join("zeds").await;
    let r = zed
        .send(
            Method::PUT,
            "/v1/rooms/zeds/members/carol/role",
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    bob.create_room("bobs", "public").await;
    zed.join("bobs").await;
    zed.create_room("solo", "private").await;
    let m1 = zed.say("zeds", "quokka-alpha-7731 first words").await;
    let id1 = m1["id"].as_str().expect("id").to_owned();
    edit(&zed, "zeds", &id1, "quokka-beta-7731 edited words").await;
    zed.say("bobs", "quokka-gamma-7731 in bob's room").await;
    let gone = zed.say("solo", "quokka-delta-7731 alone").await;
    let r = zed
        .send(
            Method::DELETE,
            &format!(
                "/v1/rooms/solo/messages/{}",
                gone["id"].as_str().expect("id")
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = zed
        .send(
            Method::PUT,
            "/v1/rooms/zeds/documents/notes",
            Some(json!({"base_version": 0, "content": "quokka-doc-7731"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let data = png(4_000);
    let blob = upload(&zed, &data, 1_500).await;
    let r = zed
        .post(
            "/v1/rooms/bobs/messages",
            json!({"body": "quokka-file-7731", "attachment": {"blob": sha(&data), "name": "q.png",
                   "mime": "image/png", "size": data.len(), "width": 8, "height": 8}}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    bob.say("bobs", "bob's own words stay").await;
    assert_eq!(download(&bob, &blob, &[]).await.0, 200);
    let mut zeds_socket = t.ws("zed").await;

    // List and show.
    let (status, body) = admin(&t, Method::GET, "/admin/v1/users?q=ZE&limit=10", None).await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["id"].as_str())
        .collect();
    assert_eq!(ids, ["zed"]);
    let (status, body) = admin(&t, Method::GET, "/admin/v1/users?limit=1", None).await;
    assert_eq!(status, 200);
    let next = body["next_cursor"].as_str().expect("more pages").to_owned();
    let (_, body) = admin(
        &t,
        Method::GET,
        &format!("/admin/v1/users?limit=10&cursor={next}"),
        None,
    )
    .await;
    assert_eq!(body["users"].as_array().expect("users").len(), 2, "{body}");
    let (status, body) = admin(&t, Method::GET, "/admin/v1/users/zed", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"], 4);
    assert_eq!(body["attachments"], 1);
    assert_eq!(body["attachment_bytes"], data.len());
    assert_eq!(
        body["memberships"].as_array().expect("memberships").len(),
        3
    );
    assert_eq!(body["devices_online"], 1);

    // Export: everything, in an archive that reads on its own.
    let out = tempfile::tempdir().expect("tempdir");
    let to = out.path().join("zed.tar");
    let (status, body) = admin(
        &t,
        Method::POST,
        "/admin/v1/users/zed/export",
        Some(json!({"to": to})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = admin(
        &t,
        Method::POST,
        "/admin/v1/users/zed/export",
        Some(json!({"to": to})),
    )
    .await;
    assert_eq!(status, 409, "an export never overwrites");
    let check_export = |to: &Path| {
        let files = archive(to);
        let manifest: Value = serde_json::from_slice(&files["manifest.json"]).expect("manifest");
        assert_eq!(manifest["format"], "roam-user-export");
        assert_eq!(manifest["user"], "zed");
        let messages = lines(&files["messages.jsonl"]);
        assert_eq!(messages.len(), 4);
        assert_eq!(manifest["parts"]["messages.jsonl"], 4);
        let bodies: Vec<&str> = messages.iter().filter_map(|m| m["body"].as_str()).collect();
        assert!(
            bodies.contains(&"quokka-beta-7731 edited words"),
            "{bodies:?}"
        );
        assert!(bodies.contains(&"quokka-gamma-7731 in bob's room"));
        assert!(
            !bodies.iter().any(|b| b.contains("delta")),
            "a deleted message stays deleted"
        );
        assert_eq!(lines(&files["memberships.jsonl"]).len(), 3);
        assert!(holds(&files["documents.jsonl"], "quokka-doc-7731"));
        assert_eq!(files[&format!("blobs/{blob}")], data);
        assert_eq!(lines(&files["profile.jsonl"])[0]["id"], "zed");
    };
    check_export(&to);

    // Erase: zed's room goes to carol (its admin), the rest is gone.
    let (status, body) = admin(
        &t,
        Method::POST,
        "/admin/v1/users/zed/erase",
        Some(json!({"rooms": "transfer"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rooms_transferred"], json!([["zeds", "carol"]]));
    assert_eq!(body["rooms_deleted"], json!(["solo"]));
    assert_eq!(body["blobs_deleted"], 1);
    assert!(closed_within(&mut zeds_socket, 5).await.is_some());
    assert_eq!(bob.get("/v1/rooms/zeds").await.body["owner"], "carol");
    assert_ne!(download(&bob, &blob, &[]).await.0, 200);
    for room in ["zeds", "bobs"] {
        let events = serde_json::to_string(&bob.all_events(room).await).expect("json");
        assert!(
            !events.contains("quokka-alpha")
                && !events.contains("quokka-beta")
                && !events.contains("quokka-gamma")
                && !events.contains("quokka-file"),
            "{room}: {events}"
        );
        let messages = serde_json::to_string(&bob.all_messages(room).await).expect("json");
        assert!(!messages.contains("7731"), "{room}: {messages}");
    }
    assert!(serde_json::to_string(&bob.all_messages("bobs").await)
        .expect("json")
        .contains("bob's own words stay"));
    let (_, body) = admin(&t, Method::GET, "/admin/v1/users/zed", None).await;
    assert_eq!(body["profile"], Value::Null, "{body}");
    assert_eq!(body["memberships"], json!([]));
    let r = zed.get("/v1/me").await;
    assert_eq!((r.status, r.code()), (401, "suspended"));
    if postgres_url().is_none() {
        // Not in the database, its WAL, or the blobs (the shared document stays: it is the
        // room's).
        for (path, bytes) in files(t.dir.path()) {
            for s in [
                "quokka-alpha",
                "quokka-beta",
                "quokka-gamma",
                "quokka-delta",
                "quokka-file",
            ] {
                assert!(!holds(&bytes, s), "{s} is still in {}", path.display());
            }
            assert!(
                !holds(&bytes, &data[16..80]),
                "the attachment is in {}",
                path.display()
            );
        }
    }
    // The export still reads.
    check_export(&to);
    assert_eq!(
        t.metric("roam_admin_actions_total", Some("erase")).await,
        1.0
    );
    assert_eq!(
        t.metric("roam_admin_actions_total", Some("export")).await,
        1.0
    );
}
