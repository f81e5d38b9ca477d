//! Authentication: bearer JWTs on REST and on the WebSocket handshake (protocol §1).

use serde_json::json;

use crate::fixtures::{mint, now_secs, TestServer, Ws, SECRET, WAIT};

/// Calls `GET /v1/me` with a raw `Authorization` header value (None: no header).
async fn me_with(t: &TestServer, authorization: Option<&str>) -> crate::fixtures::Resp {
    let mut r = t.anon().builder(reqwest::Method::GET, "/v1/me");
    if let Some(a) = authorization {
        r = r.header("authorization", a);
    }
    crate::fixtures::Resp::read(r.send().await.expect("request")).await
}

#[tokio::test]
async fn rest_accepts_a_valid_token() {
    let t = TestServer::start().await;
    let r = t.as_user("alice").get("/v1/me").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, json!({"user": "alice", "unread": 0}));
    // A token minted outside the server with the same secret works too.
    let token = mint(SECRET, "bob", now_secs() + 60);
    let r = me_with(&t, Some(&format!("Bearer {token}"))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["user"], "bob");
}

#[tokio::test]
async fn rest_refuses_missing_malformed_expired_and_wrongly_signed_tokens() {
    let t = TestServer::start().await;
    let expired = mint(SECRET, "alice", now_secs() - 10);
    let wrong_key = mint(
        "another-secret-another-secret-0000000",
        "alice",
        now_secs() + 60,
    );
    let valid = mint(SECRET, "alice", now_secs() + 60);
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "unauthorized"),
        (Some("Bearer".into()), "unauthorized"),
        (Some("Bearer ".into()), "unauthorized"),
        (Some("Bearer not-a-jwt".into()), "unauthorized"),
        (Some("Bearer a.b.c".into()), "unauthorized"),
        (Some(format!("Basic {valid}")), "unauthorized"),
        (Some(format!("Bearer {wrong_key}")), "unauthorized"),
        (Some(format!("Bearer {expired}")), "token_expired"),
    ];
    for (header, code) in cases {
        let r = me_with(&t, header.as_deref()).await;
        assert_eq!(r.status, 401, "{header:?}: {:?}", r.body);
        assert_eq!(r.code(), code, "{header:?}: {:?}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "an error carries a message: {:?}",
            r.body
        );
    }
    // The same through the client helper, on another route.
    let r = t
        .as_user("alice")
        .with_token(Some(expired.clone()))
        .get("/v1/rooms")
        .await;
    assert_eq!((r.status, r.code()), (401, "token_expired"));
    // A mutation with a bad token is refused before anything else (no 400 for the missing
    // idempotency key, nothing created).
    let r = t
        .anon()
        .req(
            reqwest::Method::POST,
            "/v1/rooms",
            None,
            Some(json!({"room": "r1", "kind": "public"})),
        )
        .await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    assert_eq!(r.code(), "unauthorized");
    let r = t.as_user("alice").get("/v1/rooms").await;
    assert_eq!(r.body["items"], json!([]));
}

#[tokio::test]
async fn rest_refuses_tokens_without_exp_or_with_a_bad_sub() {
    let t = TestServer::start().await;
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let header = jsonwebtoken::Header::default();
    let no_exp = jsonwebtoken::encode(&header, &json!({"sub": "alice"}), &key).expect("mint");
    let no_sub =
        jsonwebtoken::encode(&header, &json!({"exp": now_secs() + 60}), &key).expect("mint");
    let bad_sub = jsonwebtoken::encode(
        &header,
        &json!({"sub": "has space", "exp": now_secs() + 60}),
        &key,
    )
    .expect("mint");
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &json!({"sub": "alice", "exp": now_secs() + 60}),
        &key,
    )
    .expect("mint");
    for token in [no_exp, no_sub, bad_sub, hs512] {
        let r = me_with(&t, Some(&format!("Bearer {token}"))).await;
        assert_eq!(r.status, 401, "{:?}", r.body);
        assert_eq!(r.code(), "unauthorized", "{:?}", r.body);
    }
}

#[tokio::test]
async fn rest_does_not_take_the_token_from_the_query() {
    let t = TestServer::start().await;
    let token = t.token("alice");
    let r = t.anon().get(&format!("/v1/me?access_token={token}")).await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    assert_eq!(r.code(), "unauthorized");
}

#[tokio::test]
async fn ws_handshake_refuses_bad_tokens_before_the_upgrade() {
    let t = TestServer::start().await;
    let url = t.ws_url();
    let expired = mint(SECRET, "alice", now_secs() - 10);
    let wrong_key = mint(
        "another-secret-another-secret-0000000",
        "alice",
        now_secs() + 60,
    );
    for (token, code) in [
        (None, "unauthorized"),
        (Some("garbage".to_owned()), "unauthorized"),
        (Some(wrong_key.clone()), "unauthorized"),
        (Some(expired.clone()), "token_expired"),
    ] {
        let refused = Ws::try_connect(&url, token.as_deref())
            .await
            .expect_err("handshake must fail");
        assert_eq!(refused.status, 401, "{token:?}: {refused:?}");
        assert_eq!(refused.code(), code, "{token:?}: {refused:?}");
    }
    // The same through the query parameter.
    for (token, code) in [(wrong_key, "unauthorized"), (expired, "token_expired")] {
        let refused = Ws::try_connect(&format!("{url}?access_token={token}"), None)
            .await
            .expect_err("handshake must fail");
        assert_eq!(refused.status, 401, "{refused:?}");
        assert_eq!(refused.code(), code, "{refused:?}");
    }
    assert_eq!(t.metric("roam_connections_opened_total", None).await, 0.0);
}

#[tokio::test]
async fn ws_accepts_the_token_in_the_query() {
    let t = TestServer::start().await;
    let url = format!("{}?access_token={}", t.ws_url(), t.token("carol"));
    let mut ws = Ws::try_connect(&url, None).await.expect("connect");
    assert_eq!(ws.hello["user"], "carol");
    assert_eq!(ws.hello["v"], 1);
    assert_eq!(ws.hello["max_frame_bytes"], 1_048_576);
    assert!(ws.hello["session"].as_str().is_some_and(|s| !s.is_empty()));
    let pong = ws.call(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn a_socket_whose_token_expires_is_closed_with_4001() {
    let t = TestServer::start().await;
    let token = mint(SECRET, "alice", now_secs() + 2);
    let mut ws = Ws::connect(&t.ws_url(), &token).await;
    // Still usable right now.
    let pong = ws.call(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    let code = tokio::time::timeout(WAIT, ws.closed())
        .await
        .expect("closed in time");
    assert_eq!(code, Some(4001));
    // A fresh token works again afterwards.
    let mut again = t.ws("alice").await;
    let pong = again.call(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn the_token_command_mints_tokens_the_server_accepts() {
    // Without a configured secret the server makes one in its data directory; the command
    // reads the same file.
    let t = TestServer::start_with(|c| c.jwt_secret = None).await;
    let run = |args: &[&str], dir: &std::path::Path, secret: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_roam-server"));
        cmd.args(args)
            .env("ROAM_DATA_DIR", dir)
            .env("RUST_LOG", "error")
            .env_remove("ROAM_JWT_SECRET");
        if let Some(s) = secret {
            cmd.env("ROAM_JWT_SECRET", s);
        }
        cmd.output().expect("run roam-server")
    };
    let out = run(
        &["token", "--user", "cli-user", "--ttl-secs", "60"],
        t.dir.path(),
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    let r = t.anon().with_token(Some(token.clone())).get("/v1/me").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["user"], "cli-user");
    let mut ws = Ws::connect(&t.ws_url(), &token).await;
    assert_eq!(ws.hello["user"], "cli-user");
    assert_eq!(ws.call(json!({"type": "ping"})).await["type"], "pong");

    // With ROAM_JWT_SECRET the command signs with it (the default test server's secret).
    let other = TestServer::start().await;
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let out = run(&["token", "--user", "dana"], elsewhere.path(), Some(SECRET));
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    let r = other
        .anon()
        .with_token(Some(token.clone()))
        .get("/v1/me")
        .await;
    assert_eq!(r.body["user"], "dana");
    // … which the first server, with its own generated secret, refuses.
    let r = t.anon().with_token(Some(token)).get("/v1/me").await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));

    // A user id the protocol refuses gets no token.
    let out = run(
        &["token", "--user", "two words"],
        elsewhere.path(),
        Some(SECRET),
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}
