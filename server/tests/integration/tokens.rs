//! Tokens and secrets: `nbf`, optional `iss`/`aud`, the `token` subcommand's
//! secret checks, and cursors that could overflow.

use serde_json::json;

use crate::fixtures::{now_secs, TestServer, SECRET};

fn sign(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

#[tokio::test]
async fn a_token_used_before_its_nbf_is_refused() {
    let t = TestServer::start().await;
    let early = sign(json!({"sub": "alice", "exp": now_secs() + 600, "nbf": now_secs() + 300}));
    let r = t.anon().with_token(Some(early)).get("/v1/me").await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    assert_eq!(r.code(), "unauthorized");
    let ok = sign(json!({"sub": "alice", "exp": now_secs() + 600, "nbf": now_secs() - 5}));
    let r = t.anon().with_token(Some(ok)).get("/v1/me").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[tokio::test]
async fn issuer_and_audience_are_required_when_configured() {
    let t = TestServer::start_with(|c| {
        c.jwt_issuer = Some("https://id.example".into());
        c.jwt_audience = Some("roam".into());
    })
    .await;
    let exp = now_secs() + 600;
    for (claims, what) in [
        (json!({"sub": "alice", "exp": exp}), "neither"),
        (
            json!({"sub": "alice", "exp": exp, "iss": "https://id.example"}),
            "no aud",
        ),
        (json!({"sub": "alice", "exp": exp, "aud": "roam"}), "no iss"),
        (
            json!({"sub": "alice", "exp": exp, "iss": "https://evil.example", "aud": "roam"}),
            "other iss",
        ),
        (
            json!({"sub": "alice", "exp": exp, "iss": "https://id.example", "aud": "other"}),
            "other aud",
        ),
    ] {
        let r = t.anon().with_token(Some(sign(claims))).get("/v1/me").await;
        assert_eq!(r.status, 401, "{what}: {:?}", r.body);
    }
    let good =
        sign(json!({"sub": "alice", "exp": exp, "iss": "https://id.example", "aud": "roam"}));
    let r = t.anon().with_token(Some(good)).get("/v1/me").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The server's own tokens carry both.
    assert_eq!(t.as_user("bob").get("/v1/me").await.status, 200);
}

#[test]
fn the_token_subcommand_applies_the_server_secret_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roam-server"))
        .args(["--data-dir"])
        .arg(dir.path())
        .args(["token", "--user", "alice"])
        .env("ROAM_JWT_SECRET", "too-short")
        .output()
        .expect("run roam-server token");
    assert!(!out.status.success(), "a short secret must be refused");
    assert!(out.stdout.is_empty(), "no token printed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 32 bytes"), "{err}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roam-server"))
        .args(["--data-dir"])
        .arg(dir.path())
        .args(["token", "--user", "alice"])
        .env("ROAM_JWT_SECRET", SECRET)
        .output()
        .expect("run roam-server token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(unix)]
#[test]
fn a_secret_file_readable_by_others_is_reported() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    roam_server::auth::Keys::load(None, dir.path()).expect("generate");
    let path = dir.path().join("jwt-secret");
    assert_eq!(
        roam_server::auth::readable_by_others(&path).expect("stat"),
        None
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_eq!(
        roam_server::auth::readable_by_others(&path).expect("stat"),
        Some(0o644)
    );
}

#[tokio::test]
async fn cursors_past_the_stored_range_are_invalid_input() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("general", "public").await;
    alice
        .send(
            reqwest::Method::PUT,
            "/v1/rooms/general/documents/d",
            Some(json!({"base_version": 0, "content": "x"})),
        )
        .await;
    let max = u64::MAX;
    for path in [
        format!("/v1/rooms/general/events?after={max}"),
        format!("/v1/rooms/general/messages?after={max}"),
        format!("/v1/rooms/general/messages?before={max}"),
        format!("/v1/rooms/general/documents/d/history?before={max}"),
        format!("/v1/notifications?after={max}"),
        format!("/v1/rooms/general/events?after={}", i64::MAX as u64 + 1),
    ] {
        let r = alice.get(&path).await;
        assert_eq!(r.status, 400, "{path}: {:?}", r.body);
        assert_eq!(r.code(), "invalid_input", "{path}");
    }
    // The largest stored value is fine.
    let r = alice
        .get(&format!("/v1/rooms/general/events?after={}", i64::MAX))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["items"], json!([]));
}

#[tokio::test]
async fn socket_cursors_past_the_stored_range_are_invalid_input() {
    let t = TestServer::start().await;
    t.as_user("alice").create_room("general", "public").await;
    let mut ws = t.ws("alice").await;
    for frame in [
        json!({"type": "subscribe", "rooms": [{"room": "general", "since": u64::MAX}]}),
        json!({"type": "subscribe", "rooms": [], "inbox_since": u64::MAX}),
    ] {
        let f = ws.call(frame).await;
        assert_eq!(f["type"], "error", "{f}");
        assert_eq!(f["code"], "invalid_input", "{f}");
    }
    // The socket is still there, and the largest stored value is fine.
    let ack = ws
        .call(json!({"type": "subscribe", "rooms": [{"room": "general", "since": i64::MAX}]}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
}
