//! Tests of `push`: payload parsing, `PushHandler` next to an open app client (found locally,
//! cleared, deadline honoured when the server does not answer), and registration and modes
//! through the outbox. (A file of its own, like `attachment_tests.rs`: they drive a whole
//! `Client`, which `push` itself must not import.)

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roam_proto::{
    Attachment as WireAttachment, Message as WireMessage, PushKind, PushMode, PushPlatform,
    PushSettings, Room, RoomKind,
};

use crate::config::ClientConfig;
use crate::db::writes;
use crate::error::Error;
use crate::push::{parse_push_payload, PushContentKind, PushHandler};
use crate::{Client, StaticToken};

fn wire(seq: u64, sender: &str, body: &str) -> WireMessage {
    WireMessage {
        id: format!("m{seq}"),
        room: "general".into(),
        seq,
        sender: sender.into(),
        body: body.into(),
        reply_to: None,
        created_at: 1_000 + seq as i64,
        edited_at: None,
        deleted: false,
        attachment: None,
    }
}

/// An app client holding the store of "alice": room "general" (title "General") followed
/// up to seq 4, read up to 1; messages 1–3 from bob, 4 from alice, 5 (a photo) from bob.
fn app(dir: &std::path::Path, server: &str) -> (Client, ClientConfig) {
    let mut config = ClientConfig::new(dir.join("alice.db"), server, "alice");
    config.http_timeout = Duration::from_secs(5);
    let client = Client::open(config.clone(), Arc::new(StaticToken("t".into()))).expect("open");
    client
        .ctx()
        .write(|tx, _| {
            writes::upsert_room(
                tx,
                &Room {
                    name: "general".into(),
                    kind: RoomKind::Public,
                    title: "General".into(),
                    metadata: serde_json::json!({}),
                    owner: "bob".into(),
                    created_by: "bob".into(),
                    created_at: 1,
                    updated_at: 1,
                    head_seq: 5,
                    member_count: 2,
                },
            )?;
            writes::set_room_flags(tx, "general", Some(true), Some(true))?;
            for seq in 1..=3 {
                writes::upsert_server_message(tx, &wire(seq, "bob", &format!("hello {seq}")))?;
            }
            writes::upsert_server_message(tx, &wire(4, "alice", "mine"))?;
            let mut photo = wire(5, "bob", "");
            photo.attachment = Some(WireAttachment {
                blob: "a".repeat(64),
                name: "IMG_1.jpg".into(),
                mime: "image/jpeg".into(),
                size: 10,
                width: None,
                height: None,
                duration_ms: None,
                thumbnail: None,
            });
            writes::upsert_server_message(tx, &photo)?;
            writes::set_cursor(tx, "general", 5)?;
            writes::advance_read_marker(tx, "general", 1, 0)?;
            Ok(())
        })
        .expect("seed");
    (client, config)
}

fn push(kind: &str, seq: u64, message: Option<&str>, unread: u64) -> String {
    let mut roam = serde_json::json!({"v": 1, "kind": kind, "room": "general", "seq": seq,
        "unread": unread});
    if let Some(m) = message {
        roam["message"] = m.into();
    }
    serde_json::json!({"aps": {"mutable-content": 1, "thread-id": "general"}, "roam": roam})
        .to_string()
}

#[test]
fn payloads_of_every_platform_parse() {
    let apns = r#"{"aps":{"alert":{"title":"New message"},"mutable-content":1},
        "roam":{"v":1,"kind":"message","room":"general","seq":7,"message":"m7","unread":2}}"#;
    let p = parse_push_payload(apns).expect("apns");
    assert_eq!((p.kind, p.seq, p.unread), (PushKind::Message, 7, 2));
    assert_eq!(p.message.as_deref(), Some("m7"));
    let fcm =
        serde_json::json!({"roam": r#"{"v":1,"kind":"read","room":"general","seq":9,"unread":0}"#})
            .to_string();
    let p = parse_push_payload(&fcm).expect("fcm");
    assert_eq!((p.kind, p.seq), (PushKind::Read, 9));
    let bare = r#"{"v":1,"kind":"message","room":"r","seq":1,"unread":1,
        "preview":{"sender":"bob","room_title":"R","body":"hi"}}"#;
    let p = parse_push_payload(bare).expect("bare");
    assert_eq!(p.preview.map(|v| v.body), Some("hi".to_owned()));
}

#[test]
fn bad_payloads_are_refused_with_a_reason() {
    for (payload, words) in [
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        (r#"{"aps":{}}"#, "no \"roam\""),
        (r#"{"roam":5}"#, "neither an object"),
        (r#"{"roam":"{oops"}"#, "not a JSON object"),
        (
            r#"{"roam":{"v":2,"kind":"read","room":"r","seq":1,"unread":0}}"#,
            "version 2",
        ),
        (
            r#"{"roam":{"kind":"read","room":"r","seq":1,"unread":0}}"#,
            "version none",
        ),
        (
            r#"{"roam":{"v":1,"kind":"shout","room":"r","seq":1,"unread":0}}"#,
            "roam",
        ),
        (
            r#"{"roam":{"v":1,"kind":"read","room":"no spaces","seq":1,"unread":0}}"#,
            "room",
        ),
        (
            r#"{"roam":{"v":1,"kind":"message","room":"r","seq":0,"unread":0}}"#,
            "seq",
        ),
    ] {
        match parse_push_payload(payload) {
            Err(Error::InvalidInput { reason }) => {
                assert!(reason.contains(words), "{payload}: {reason}");
            }
            other => panic!("{payload}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_local_message_is_shown_with_the_badge_counted_from_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_app, config) = app(dir.path(), "http://127.0.0.1:9");
    let handler = PushHandler::open(&config, Arc::new(StaticToken("t".into())))
        .expect("a second open next to the app");
    let c = handler
        .handle_push(&push("message", 3, Some("m3"), 99), Duration::from_secs(1))
        .await
        .expect("handled");
    assert_eq!(c.kind, PushContentKind::Show);
    assert_eq!(
        (c.room_title.as_str(), c.sender.as_deref()),
        ("General", Some("bob"))
    );
    assert_eq!(c.body.as_deref(), Some("hello 3"));
    // Unread: 2, 3 and 5 from bob (4 is alice's own), not the payload's 99.
    assert_eq!(c.badge, 3);
    // Found by seq without an id too; a photo without caption says so.
    let c = handler
        .handle_push(&push("message", 5, None, 99), Duration::from_secs(1))
        .await
        .expect("handled");
    assert_eq!(c.body.as_deref(), Some("Photo"));
    assert_eq!(c.message.as_deref(), Some("m5"));
}

#[tokio::test]
async fn own_and_already_read_messages_clear_and_read_pushes_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_app, config) = app(dir.path(), "http://127.0.0.1:9");
    let handler = PushHandler::open(&config, Arc::new(StaticToken("t".into()))).expect("open");
    let own = handler
        .handle_push(&push("message", 4, Some("m4"), 9), Duration::from_secs(1))
        .await
        .expect("own");
    assert_eq!(own.kind, PushContentKind::Clear);
    let read = handler
        .handle_push(&push("message", 1, Some("m1"), 9), Duration::from_secs(1))
        .await
        .expect("read already");
    assert_eq!(read.kind, PushContentKind::Clear);
    // Read on another device up to 3: only 5 is left unread.
    let cleared = handler
        .handle_push(&push("read", 3, None, 7), Duration::from_secs(1))
        .await
        .expect("read push");
    assert_eq!(cleared.kind, PushContentKind::Clear);
    assert_eq!((cleared.seq, cleared.badge), (3, 1));
}

/// A server that accepts the connection and never answers: the handler answers generic
/// content once the deadline passes, with the payload's badge and preview.
#[tokio::test]
async fn the_deadline_is_honoured_when_the_server_does_not_answer() {
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", silent.local_addr().expect("addr"));
    let dir = tempfile::tempdir().expect("tempdir");
    let (_app, config) = app(dir.path(), &url);
    let handler = PushHandler::open(&config, Arc::new(StaticToken("t".into()))).expect("open");
    let deadline = Duration::from_millis(300);
    let started = Instant::now();
    let c = handler
        .handle_push(&push("message", 6, Some("m6"), 4), deadline)
        .await
        .expect("generic");
    let took = started.elapsed();
    assert!(
        took >= deadline,
        "answered before the fetch could: {took:?}"
    );
    // The HTTP timeout is 5 s: only the deadline can have ended the wait this early.
    assert!(
        took < Duration::from_secs(3),
        "the deadline was not honoured: {took:?}"
    );
    assert_eq!(c.kind, PushContentKind::Show);
    assert_eq!(
        (c.room_title.as_str(), c.body.clone(), c.badge),
        ("General", None, 4)
    );
    let with_preview = r#"{"roam":{"v":1,"kind":"message","room":"general","seq":6,"unread":4,
        "preview":{"sender":"bob","room_title":"General","body":"see you"}}}"#;
    let c = handler
        .handle_push(with_preview, Duration::from_millis(50))
        .await
        .expect("generic with preview");
    assert_eq!(
        (c.sender.as_deref(), c.body.as_deref()),
        (Some("bob"), Some("see you"))
    );
    drop(silent);
}

/// No app has created the store: the handler says so and creates nothing.
#[test]
fn a_missing_store_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ClientConfig::new(dir.path().join("none.db"), "http://127.0.0.1:9", "alice");
    let err = PushHandler::open(&config, Arc::new(StaticToken("t".into()))).expect_err("none");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert!(!dir.path().join("none.db").exists());
}

#[test]
fn settings_apply_pending_changes_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, _) = app(dir.path(), "http://127.0.0.1:9");
    let id = app.push_device_id().expect("device");
    assert_eq!(
        app.push_device_id().expect("again"),
        id,
        "the device id is stable"
    );
    assert_eq!(
        app.push_settings().expect("settings"),
        PushSettings::default()
    );
    app.set_push_mode(None, PushMode::Mentions)
        .expect("default");
    app.set_push_mode(Some("general".into()), PushMode::Mute)
        .expect("room");
    app.set_push_mode(Some("other".into()), PushMode::All)
        .expect("room");
    app.set_push_mode(Some("other".into()), PushMode::Default)
        .expect("reset");
    let s = app.push_settings().expect("settings");
    assert_eq!(s.default, PushMode::Mentions);
    assert_eq!(s.mode_for("general"), PushMode::Mute);
    assert!(!s.rooms.contains_key("other"));
    // Refused before anything is queued.
    let queued = app.outbox().expect("outbox").len();
    assert!(app.set_push_mode(None, PushMode::Default).is_err());
    assert!(app
        .set_push_mode(Some("bad room".into()), PushMode::Mute)
        .is_err());
    assert!(app
        .register_push(
            PushPlatform::Apns,
            String::new(),
            "com.x".into(),
            false,
            None
        )
        .is_err());
    assert_eq!(app.outbox().expect("outbox").len(), queued);
    app.register_push(PushPlatform::Fcm, "tok".into(), "app".into(), false, None)
        .expect("register offline");
    app.unregister_push().expect("unregister offline");
    let ops: Vec<_> = app
        .outbox()
        .expect("outbox")
        .into_iter()
        .map(|e| e.op)
        .collect();
    assert_eq!(&ops[ops.len() - 2..], ["push.register", "push.unregister"]);
}
