//! Fuzzing the parsers: random and malformed input for every REST body, every
//! query string and the socket's frame decoder. Whatever arrives, the server answers with a
//! clear error (a JSON error body or an `error` frame, never a 5xx, a panic or a closed
//! socket), and an input it refuses changes nothing.
//!
//! Inputs come from a seeded generator, so a failure names the seed and the input that caused
//! it and can be replayed: `ROAM_FUZZ_SEED=<n> ROAM_FUZZ_CASES=<n> cargo test -p roam-server
//! --test integration fuzz::`. The default case counts keep CI fast.

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::fixtures::{Api, TestServer, WAIT};

/// Field names the parsers know, so that generated objects get past the first checks.
const FIELDS: &[&str] = &[
    "v",
    "type",
    "id",
    "key",
    "op",
    "args",
    "room",
    "rooms",
    "since",
    "inbox_since",
    "typing",
    "body",
    "reply_to",
    "user",
    "role",
    "kind",
    "title",
    "metadata",
    "ttl_secs",
    "message",
    "bodies",
    "doc",
    "base_version",
    "content",
    "ids",
    "invitation",
    "status",
    "seq",
];
const STRINGS: &[&str] = &[
    "",
    "fz",
    "general",
    "x'; DROP TABLE rooms;--",
    "owner",
    "admin",
    "member",
    "guest",
    "public",
    "protected",
    "private",
    "online",
    "offline",
    "message.send",
    "room.create",
    "member.invite",
    "document.put",
    "subscribe",
    "mutate",
    "ping",
    "typing",
    "unsubscribe",
    "\u{0}\u{1}\u{7f}",
    "ünïcødé ✓",
    "../../etc/passwd",
    "%00%ff",
];
const OPS: &[&str] = &[
    "room.create",
    "room.update",
    "room.delete",
    "room.join",
    "room.leave",
    "room.transfer",
    "member.invite",
    "member.revoke_invitation",
    "invitation.accept",
    "invitation.reject",
    "member.set_role",
    "member.ban",
    "member.unban",
    "message.send",
    "message.edit",
    "message.delete",
    "message.import",
    "document.put",
    "notification.read",
    "notification.read_all",
    "room.mark_read",
    "presence.set",
    "no.such.op",
];

fn seed() -> u64 {
    std::env::var("ROAM_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0009)
}

fn cases(default: usize) -> usize {
    std::env::var("ROAM_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn number(rng: &mut StdRng) -> Value {
    match rng.random_range(0..10) {
        0 => json!(u64::MAX),
        1 => json!(i64::MAX),
        2 => json!(i64::MIN),
        3 => json!(i64::MAX as u64 + 1),
        4 => json!(-1),
        5 => json!(1e300),
        6 => json!(0.5),
        7 => json!(0),
        _ => json!(rng.random_range(0..100_000u32)),
    }
}

/// A string for a URL (paths and queries stay within what HTTP servers accept).
fn short_string(rng: &mut StdRng) -> String {
    let s = string(rng);
    s.chars().take(300).collect()
}

fn string(rng: &mut StdRng) -> String {
    match rng.random_range(0..8) {
        0 => "a".repeat(rng.random_range(60..300)),
        1 if rng.random_bool(0.1) => "z".repeat(70_000),
        2 => (0..rng.random_range(0..12))
            .map(|_| char::from_u32(rng.random_range(0..0x3000)).unwrap_or('?'))
            .collect(),
        _ => STRINGS[rng.random_range(0..STRINGS.len())].to_owned(),
    }
}

fn value(rng: &mut StdRng, depth: u32) -> Value {
    let top = if depth == 0 { 4 } else { 6 };
    match rng.random_range(0..top) {
        0 => Value::Null,
        1 => json!(rng.random_bool(0.5)),
        2 => number(rng),
        3 => json!(string(rng)),
        4 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| value(rng, depth - 1))
                .collect(),
        ),
        _ => object(rng, depth - 1),
    }
}

fn object(rng: &mut StdRng, depth: u32) -> Value {
    let mut m = Map::new();
    for _ in 0..rng.random_range(0..6) {
        let k = if rng.random_bool(0.85) {
            FIELDS[rng.random_range(0..FIELDS.len())].to_owned()
        } else {
            string(rng)
        };
        let v = value(rng, depth);
        m.insert(k, v);
    }
    Value::Object(m)
}

/// A request body: mostly a JSON object, sometimes another value or bytes that are not JSON.
fn body(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..10) {
        0 => (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
        1 => b"{\"room\": \"fz\", \"body\": ".to_vec(),
        2 => value(rng, 2).to_string().into_bytes(),
        _ => object(rng, 2).to_string().into_bytes(),
    }
}

/// A query string of known and unknown parameters with odd values.
fn query(rng: &mut StdRng) -> String {
    const PARAMS: &[&str] = &[
        "limit",
        "after",
        "before",
        "cursor",
        "kind",
        "joined",
        "sort",
        "order",
        "q",
        "unread",
        "users",
        "period",
        "from",
        "to",
        "access_token",
        "bogus",
    ];
    let pairs: Vec<String> = (0..rng.random_range(0..5))
        .map(|_| {
            let name = PARAMS[rng.random_range(0..PARAMS.len())];
            let v = match rng.random_range(0..4) {
                0 => number(rng).to_string(),
                1 => "%ff%fe%00".to_owned(),
                _ => urlencode(&short_string(rng)),
            };
            format!("{name}={v}")
        })
        .collect();
    pairs.join("&")
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What a refused input must leave unchanged.
async fn fingerprint(api: &Api) -> Value {
    let room = api.get("/v1/rooms/fz").await.body;
    let rooms = api.get("/v1/rooms?limit=200").await.body;
    let me = api.get("/v1/me").await.body;
    let invitations = api.get("/v1/invitations").await.body;
    let docs = api.get("/v1/rooms/fz/documents").await.body;
    let markers = api.get("/v1/read-markers").await.body;
    json!([
        room["head_seq"],
        room["title"],
        room["member_count"],
        rooms,
        me,
        invitations,
        docs,
        markers
    ])
}

async fn setup(t: &TestServer) -> Api {
    let api = t.as_user("fuzzer");
    api.create_room("fz", "public").await;
    api.say("fz", "hello").await;
    api
}

#[tokio::test]
async fn any_rest_input_gets_a_clear_error_and_changes_nothing() {
    let t = TestServer::start().await;
    let api = setup(&t).await;
    let msg = api.all_messages("fz").await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let routes: Vec<(reqwest::Method, String)> = {
        use reqwest::Method as M;
        vec![
            (M::POST, "/v1/rooms".into()),
            (M::PATCH, "/v1/rooms/{room}".into()),
            (M::POST, "/v1/rooms/{room}/join".into()),
            (M::POST, "/v1/rooms/{room}/leave".into()),
            (M::POST, "/v1/rooms/{room}/read".into()),
            (M::POST, "/v1/rooms/{room}/transfer".into()),
            (M::PUT, "/v1/rooms/{room}/members/{user}/role".into()),
            (M::POST, "/v1/rooms/{room}/bans".into()),
            (M::POST, "/v1/rooms/{room}/invitations".into()),
            (M::POST, "/v1/rooms/{room}/messages".into()),
            (M::PATCH, format!("/v1/rooms/{{room}}/messages/{msg}")),
            (M::POST, "/v1/rooms/{room}/messages/import".into()),
            (M::PUT, "/v1/rooms/{room}/documents/{doc}".into()),
            (M::POST, "/v1/invitations/{id}/accept".into()),
            (M::POST, "/v1/invitations/{id}/reject".into()),
            (M::POST, "/v1/notifications/read".into()),
            (M::GET, "/v1/rooms".into()),
            (M::GET, "/v1/rooms/{room}/messages".into()),
            (M::GET, "/v1/rooms/{room}/events".into()),
            (M::GET, "/v1/rooms/{room}/members".into()),
            (M::GET, "/v1/rooms/{room}/activity".into()),
            (M::GET, "/v1/rooms/{room}/documents".into()),
            (M::GET, "/v1/rooms/{room}/documents/{doc}/history".into()),
            (M::GET, "/v1/users".into()),
            (M::GET, "/v1/notifications".into()),
            (M::GET, "/v1/invitations".into()),
            (M::GET, "/v1/presence".into()),
            (M::GET, "/v1/read-markers".into()),
        ]
    };
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut before = fingerprint(&api).await;
    for case in 0..cases(300) {
        let (method, template) = routes[case % routes.len()].clone();
        let mut seg = || {
            if rng.random_bool(0.7) {
                "fz".to_owned()
            } else {
                urlencode(&short_string(&mut rng))
            }
        };
        let (room, user, doc, id) = (seg(), seg(), seg(), seg());
        let mut path = template
            .replace("{room}", &room)
            .replace("{user}", &user)
            .replace("{doc}", &doc)
            .replace("{id}", &id);
        if rng.random_bool(0.6) {
            path = format!("{path}?{}", query(&mut rng));
        }
        let mut req = api.builder(method.clone(), &path);
        let mut input = format!("{method} {path}");
        if method != reqwest::Method::GET {
            match rng.random_range(0..10) {
                0 => {}
                1 => req = req.header("Idempotency-Key", "ü not ascii".as_bytes()),
                _ => req = req.header("Idempotency-Key", uuid::Uuid::now_v7().to_string()),
            }
            let b = body(&mut rng);
            let shown: String = String::from_utf8_lossy(&b).chars().take(400).collect();
            input.push_str(&format!(" body ({} bytes) {shown}", b.len()));
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("seed {seed} case {case}: {input}: no answer: {e}"));
        let status = resp.status().as_u16();
        let full = resp.text().await.unwrap_or_default();
        let text: String = full.chars().take(600).collect();
        assert!(
            status < 500,
            "seed {seed} case {case}: {input}: {status} {text}"
        );
        if status >= 400 {
            let err: Value = serde_json::from_str(&full).unwrap_or_else(|_| {
                panic!("seed {seed} case {case}: {input}: not a JSON error: {text}")
            });
            assert!(
                err["error"]["code"].is_string() && err["error"]["message"].is_string(),
                "seed {seed} case {case}: {input}: {text}"
            );
            let after = fingerprint(&api).await;
            assert_eq!(
                after, before,
                "seed {seed} case {case}: {input}: refused ({text}) but state changed"
            );
        } else if method != reqwest::Method::GET {
            // A random input that happens to be valid is applied: compare from here on.
            before = fingerprint(&api).await;
        }
    }
    // Still serving.
    assert_eq!(api.get("/v1/me").await.status, 200);
}

#[tokio::test]
async fn any_socket_frame_gets_a_clear_error_and_changes_nothing() {
    let t = TestServer::start().await;
    let api = setup(&t).await;
    let mut ws = t.ws("fuzzer").await;
    let seed = seed().wrapping_add(1);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut before = fingerprint(&api).await;
    for case in 0..cases(300) {
        let text = match rng.random_range(0..10) {
            0 => {
                let bytes: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            1 => value(&mut rng, 2).to_string(),
            _ => {
                let mut f = object(&mut rng, 2);
                if let Some(m) = f.as_object_mut() {
                    if rng.random_bool(0.9) {
                        m.insert("v".into(), json!(1));
                    }
                    let kind = ["subscribe", "unsubscribe", "mutate", "typing", "ping", "x"]
                        [rng.random_range(0..6)];
                    m.insert("type".into(), json!(kind));
                    if kind == "mutate" && rng.random_bool(0.8) {
                        m.insert("op".into(), json!(OPS[rng.random_range(0..OPS.len())]));
                    }
                    if rng.random_bool(0.7) {
                        m.insert("id".into(), json!(format!("f{case}")));
                    }
                }
                f.to_string()
            }
        };
        let full = text;
        let text: String = full.chars().take(400).collect();
        ws.stream
            .send(Message::Text(full.into()))
            .await
            .unwrap_or_else(|e| panic!("seed {seed} case {case}: {text}: send failed: {e}"));
        // A probe that always fails: its error says every frame before it was handled.
        let probe = format!("probe-{case}");
        let p = json!({"v": 1, "type": "mutate", "id": probe, "key": "k", "op": "no.such.op",
                       "args": {}});
        ws.stream
            .send(Message::Text(p.to_string().into()))
            .await
            .unwrap_or_else(|e| panic!("seed {seed} case {case}: {text}: socket gone: {e}"));
        let mut acked = false;
        loop {
            let m = tokio::time::timeout(WAIT, ws.stream.next())
                .await
                .unwrap_or_else(|_| panic!("seed {seed} case {case}: {text}: no answer"));
            let m = match m {
                Some(Ok(m)) => m,
                other => panic!("seed {seed} case {case}: {text}: socket closed: {other:?}"),
            };
            let Message::Text(reply) = m else {
                assert!(
                    !matches!(m, Message::Close(_)),
                    "seed {seed} case {case}: {text}: closed with {m:?}"
                );
                continue;
            };
            let f: Value = serde_json::from_str(&reply).expect("frames are JSON");
            if f["type"] == "error" {
                assert!(
                    f["code"].is_string() && f["message"].is_string(),
                    "seed {seed} case {case}: {text}: {f}"
                );
                if f["id"] == probe.as_str() {
                    break;
                }
            }
            if f["type"] == "ack" {
                acked = true;
            }
        }
        if acked {
            before = fingerprint(&api).await;
        } else {
            let after = fingerprint(&api).await;
            assert_eq!(
                after, before,
                "seed {seed} case {case}: {text}: refused but state changed"
            );
        }
    }
    assert_eq!(ws.call(json!({"type": "ping"})).await["type"], "pong");
}

/// Random and mutated collaborative-document updates through a socket: every one is answered
/// (an ack or a clear error), the server does not panic, and the document still converges
/// with a client that applied what the server accepted.
#[tokio::test]
async fn any_collab_update_gets_an_answer_and_the_document_stays_whole() {
    // It grows documents in this process: not while the memory of the process is measured.
    let _shared = crate::fixtures::MEMORY.read().await;
    let t = TestServer::start().await;
    let api = t.as_user("fuzzer");
    api.create_room("fzc", "private").await;
    let mut ws = t.ws("fuzzer").await;
    let s = ws
        .call(json!({"type": "collab_sync", "room": "fzc", "doc": "d", "state_vector": ""}))
        .await;
    assert_eq!(s["type"], "ack", "{s}");
    let seed = seed().wrapping_add(7);
    let mut m = roam_testkit::collab::Mutator::new(seed);
    let mirror = yrs::Doc::new();
    let mut accepted = 0u64;
    for case in 0..cases(3_000) {
        let u = m.input();
        let b64 = roam_proto::collab::encode_base64(&u);
        let key = format!("fz-{seed}-{case}");
        let a = ws
            .mutate_with_key(
                &key,
                "collab.update",
                json!({"room": "fzc", "doc": "d", "update": b64}),
            )
            .await;
        match a["type"].as_str() {
            Some("ack") => {
                accepted += 1;
                use yrs::updates::decoder::Decode;
                use yrs::Transact;
                let upd = yrs::Update::decode_v1(&u).expect("an accepted update decodes");
                mirror
                    .transact_mut()
                    .apply_update(upd)
                    .expect("an accepted update applies");
            }
            Some("error") => {
                let code = a["code"].as_str().unwrap_or_default();
                assert!(
                    ["invalid_input", "payload_too_large"].contains(&code),
                    "seed {seed} case {case}: {a} for {u:?}"
                );
            }
            _ => panic!("seed {seed} case {case}: unexpected answer {a}"),
        }
    }
    assert!(accepted > 0, "some updates were valid");
    assert_eq!(
        t.metric("roam_collab_updates_applied_total", None).await,
        accepted as f64
    );
    let s = ws
        .call(json!({"type": "collab_sync", "room": "fzc", "doc": "d", "state_vector": ""}))
        .await;
    let bytes = roam_proto::collab::decode_base64(
        "u",
        s["result"]["update"].as_str().expect("update"),
        usize::MAX / 2,
    )
    .expect("base64");
    let fresh = yrs::Doc::new();
    {
        use yrs::updates::decoder::Decode;
        use yrs::Transact;
        fresh
            .transact_mut()
            .apply_update(yrs::Update::decode_v1(&bytes).expect("decodes"))
            .expect("applies");
    }
    use yrs::{GetString, Transact};
    assert_eq!(
        fresh.get_or_insert_text("t").get_string(&fresh.transact()),
        mirror
            .get_or_insert_text("t")
            .get_string(&mirror.transact()),
        "seed {seed}: the server's document is what the accepted updates make"
    );
}
