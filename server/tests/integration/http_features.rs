//! REST features: compression chosen by `Accept-Encoding` above a threshold, ETags and `304`,
//! health and readiness, Prometheus counters that move (protocol §8).

use serde_json::{json, Value};

use crate::fixtures::{Resp, TestServer};

/// A client that never decompresses, so the wire encoding can be seen.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .build()
        .expect("client")
}

struct Raw {
    status: u16,
    encoding: Option<String>,
    etag: Option<String>,
    vary: Option<String>,
    bytes: Vec<u8>,
}

async fn fetch(t: &TestServer, token: &str, path: &str, accept: Option<&str>) -> Raw {
    let mut r = raw_client()
        .get(format!("{}{}", t.base, path))
        .bearer_auth(token);
    if let Some(a) = accept {
        r = r.header("accept-encoding", a);
    }
    let resp = r.send().await.expect("request");
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Raw {
        status: resp.status().as_u16(),
        encoding: header("content-encoding"),
        etag: header("etag"),
        vary: header("vary"),
        bytes: resp.bytes().await.expect("body").to_vec(),
    }
}

async fn room_with_long_messages(t: &TestServer) {
    let alice = t.as_user("alice");
    alice.create_room("long", "public").await;
    let bodies: Vec<String> = (0..50)
        .map(|i| format!("message {i}: {}", "lorem ipsum dolor sit amet ".repeat(8)))
        .collect();
    let r = alice
        .post("/v1/rooms/long/messages/import", json!({"bodies": bodies}))
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn large_responses_are_compressed_as_the_client_asks() {
    let t = TestServer::start().await;
    room_with_long_messages(&t).await;
    let token = t.token("alice");
    let path = "/v1/rooms/long/messages?limit=50";

    let plain = fetch(&t, &token, path, None).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.encoding, None);
    let page: Value = serde_json::from_slice(&plain.bytes).expect("plain JSON");
    assert_eq!(page["items"].as_array().expect("items").len(), 50);
    assert!(plain.bytes.len() > 10_000, "{}", plain.bytes.len());

    let gzip = fetch(&t, &token, path, Some("gzip")).await;
    assert_eq!(gzip.status, 200);
    assert_eq!(gzip.encoding.as_deref(), Some("gzip"));
    assert_eq!(&gzip.bytes[..2], [0x1f, 0x8b], "a gzip stream");
    assert!(gzip.bytes.len() < plain.bytes.len() / 2);
    assert!(
        gzip.vary
            .as_deref()
            .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")),
        "{:?}",
        gzip.vary
    );

    let br = fetch(&t, &token, path, Some("br")).await;
    assert_eq!(br.status, 200);
    assert_eq!(br.encoding.as_deref(), Some("br"));
    assert!(br.bytes.len() < plain.bytes.len() / 2);
    assert!(serde_json::from_slice::<Value>(&br.bytes).is_err());

    let either = fetch(&t, &token, path, Some("gzip, br")).await;
    assert!(
        matches!(either.encoding.as_deref(), Some("br") | Some("gzip")),
        "{:?}",
        either.encoding
    );
    let refused = fetch(&t, &token, path, Some("br;q=0, gzip")).await;
    assert_eq!(refused.encoding.as_deref(), Some("gzip"));
    let identity = fetch(&t, &token, path, Some("identity")).await;
    assert_eq!(identity.encoding, None);
    assert_eq!(identity.bytes, plain.bytes);

    // A decompressing client reads the same page out of each encoding.
    for enc in ["gzip", "br"] {
        let r = t
            .http
            .get(format!("{}{}", t.base, path))
            .bearer_auth(&token)
            .header("accept-encoding", enc)
            .send()
            .await
            .expect("request");
        let decoded: Value = r.json().await.expect("decoded JSON");
        assert_eq!(decoded, page, "{enc}");
    }
    // The same weak tag whatever the encoding.
    assert!(plain.etag.is_some());
    assert_eq!(plain.etag, gzip.etag);
    assert_eq!(plain.etag, br.etag);
}

#[tokio::test]
async fn small_responses_are_not_compressed() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("small", "public").await;
    let token = t.token("alice");
    for path in ["/v1/me", "/v1/rooms/small", "/healthz"] {
        let r = fetch(&t, &token, path, Some("gzip, br")).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.bytes.len() < 1024, "{path}: {}", r.bytes.len());
        assert_eq!(r.encoding, None, "{path}");
    }
    // Errors are small too, and stay readable.
    let r = fetch(&t, &token, "/v1/rooms/none", Some("gzip, br")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.encoding, None);
    let body: Value = serde_json::from_slice(&r.bytes).expect("JSON error");
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn the_compression_threshold_is_configurable() {
    let t = TestServer::start_with(|c| c.compress_min_bytes = 60_000).await;
    room_with_long_messages(&t).await;
    let token = t.token("alice");
    let r = fetch(
        &t,
        &token,
        "/v1/rooms/long/messages?limit=50",
        Some("gzip, br"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.bytes.len() > 10_000 && r.bytes.len() < 60_000,
        "{}",
        r.bytes.len()
    );
    assert_eq!(r.encoding, None);
}

#[tokio::test]
async fn etags_answer_304_until_the_resource_changes() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("tagged", "public").await;
    let first = alice.get("/v1/rooms/tagged").await;
    assert_eq!(first.status, 200);
    let tag = first.header("etag").expect("ETag").to_owned();
    assert!(tag.starts_with("W/\""), "{tag}");
    let again = alice.get("/v1/rooms/tagged").await;
    assert_eq!(again.header("etag"), Some(tag.as_str()), "stable");

    let cached = Resp::read(
        alice
            .builder(reqwest::Method::GET, "/v1/rooms/tagged")
            .header("if-none-match", &tag)
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(cached.status, 304);
    assert_eq!(cached.body, Value::String(String::new()));
    assert_eq!(cached.header("etag"), Some(tag.as_str()));
    // A list of tags, one matching.
    let cached = alice
        .builder(reqwest::Method::GET, "/v1/rooms/tagged")
        .header("if-none-match", format!("W/\"nope\", {tag}"))
        .send()
        .await
        .expect("request");
    assert_eq!(cached.status().as_u16(), 304);

    // A change makes a new tag; the old one gets the full body.
    alice.say("tagged", "news").await;
    let changed = Resp::read(
        alice
            .builder(reqwest::Method::GET, "/v1/rooms/tagged")
            .header("if-none-match", &tag)
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.body["head_seq"], 3);
    assert_ne!(changed.header("etag"), Some(tag.as_str()));
    // Another user sees another body (and tag) for a user-dependent resource.
    let me_a = alice.get("/v1/me").await;
    let me_b = t.as_user("bob").get("/v1/me").await;
    assert_ne!(me_a.header("etag"), me_b.header("etag"));
    // Mutations and errors carry no tag.
    let posted = alice
        .post("/v1/rooms/tagged/messages", json!({"body": "x"}))
        .await;
    assert_eq!(posted.header("etag"), None);
    let missing = alice.get("/v1/rooms/missing").await;
    assert_eq!(missing.header("etag"), None);
}

#[tokio::test]
async fn health_and_readiness_need_no_token() {
    let t = TestServer::start().await;
    let h = t.anon().get("/healthz").await;
    assert_eq!(h.status, 200);
    assert_eq!(h.body, Value::String("ok".into()));
    let r = t.anon().get("/readyz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, Value::String("ok".into()));
    let m = t.anon().get("/metrics").await;
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .is_some_and(|c| c.contains("openmetrics") || c.contains("text/plain")));
    let text = t.metrics().await;
    assert!(text.contains("# TYPE roam_messages counter"), "{text}");
    assert!(
        text.contains("roam_fanout_latency_seconds_bucket"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn metrics_counters_move_when_messages_flow() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("metered", "public").await;
    let base = t.metrics().await;
    let v = |text: &str, name: &str| crate::fixtures::metric_value(text, name, None);
    assert_eq!(v(&base, "roam_messages_total"), 0.0);
    assert_eq!(v(&base, "roam_connections"), 0.0);

    let mut ws = t.ws("bob").await;
    ws.subscribe(&[("metered", 2)]).await;
    ws.until(|f| f["type"] == "caught_up").await;
    for i in 0..3 {
        alice.say("metered", &format!("m{i}")).await;
    }
    ws.events_until("metered", 5).await;
    // Over the socket too.
    let ack = ws.mutate("room.join", json!({"room": "metered"})).await;
    assert_eq!(ack["type"], "ack");
    ws.events_until("metered", 6).await;

    let after = t.metrics().await;
    assert_eq!(v(&after, "roam_messages_total"), 3.0);
    assert_eq!(
        v(&after, "roam_events_delivered_total") - v(&base, "roam_events_delivered_total"),
        4.0,
        "three messages and a join, to one socket"
    );
    assert_eq!(
        v(&after, "roam_fanout_latency_seconds_count")
            - v(&base, "roam_fanout_latency_seconds_count"),
        4.0
    );
    assert_eq!(v(&after, "roam_connections"), 1.0);
    assert_eq!(v(&after, "roam_connections_opened_total"), 1.0);
    assert_eq!(v(&after, "roam_rooms_active"), 1.0);
    assert_eq!(
        crate::fixtures::metric_value(&after, "roam_mutations_total", Some("op=\"message.send\"")),
        3.0
    );
    assert_eq!(
        crate::fixtures::metric_value(&after, "roam_mutations_total", Some("op=\"room.join\"")),
        1.0
    );
    assert!(v(&after, "roam_frames_received_total") >= 2.0);
    assert!(v(&after, "roam_sent_bytes_total") > v(&base, "roam_sent_bytes_total"));
    assert!(v(&after, "roam_db_pool_size") >= 1.0);
}

#[tokio::test]
async fn cors_follows_the_allow_list() {
    let t = TestServer::start_with(|c| c.cors_origins = vec!["https://app.example".into()]).await;
    let preflight = |origin: &str| {
        t.http
            .request(reqwest::Method::OPTIONS, format!("{}/v1/rooms", t.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            )
            .send()
    };
    let ok = preflight("https://app.example").await.expect("preflight");
    assert_eq!(ok.status().as_u16(), 200);
    let h = ok.headers();
    assert_eq!(
        h.get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://app.example")
    );
    let allowed = h
        .get("access-control-allow-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(allowed.contains("idempotency-key"), "{allowed}");
    let other = preflight("https://evil.example").await.expect("preflight");
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let r = t
        .http
        .get(format!("{}/v1/me", t.base))
        .bearer_auth(t.token("alice"))
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("request");
    let exposed = r
        .headers()
        .get("access-control-expose-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(
        exposed.contains("etag") && exposed.contains("idempotent-replayed"),
        "{exposed}"
    );

    // The default allows no origin at all.
    let closed = TestServer::start().await;
    let r = closed
        .http
        .get(format!("{}/healthz", closed.base))
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("request");
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_page_of_large_messages_stops_at_the_byte_budget_and_is_tagged_and_compressed() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("heavy", "public").await;
    for _ in 0..2 {
        let bodies: Vec<String> = (0..72).map(|_| "h".repeat(60 * 1024)).collect();
        let r = alice
            .post("/v1/rooms/heavy/messages/import", json!({"bodies": bodies}))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body["error"]);
    }
    // 144 messages of 60 KiB (8.4 MiB) do not fit in one page: it stops at about 1 MiB and
    // names the next one.
    let r = alice.get("/v1/rooms/heavy/messages?limit=200").await;
    assert_eq!(r.status, 200, "{:?}", r.body["error"]);
    let n = r.body["items"].as_array().expect("items").len();
    assert_eq!(n, roam_server::store::PAGE_BYTES / (60 * 1024));
    assert!(r.body["next_cursor"].is_string());
    assert_eq!(alice.all_messages("heavy").await.len(), 144);
    assert!(r.header("etag").is_some(), "tagged like any other page");
    // Compressed as well.
    let raw = fetch(
        &t,
        &t.token("alice"),
        "/v1/rooms/heavy/messages?limit=200",
        Some("gzip"),
    )
    .await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.encoding.as_deref(), Some("gzip"));
}
