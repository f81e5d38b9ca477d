//! Push notifications (protocol §11) against fake APNs, FCM and webhook servers on loopback
//! (`roam_testkit::push`): registration and modes over REST and the socket, who is pushed,
//! coalescing, read clearing, the gateways' errors, a device that falls silent (on one node and
//! across two), two nodes sharing the queue, and a room of 10,000 offline members.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use roam_server::auth::Keys;
use roam_server::config::Config;
use roam_server::store::postgres::PostgresStore;
use roam_server::store::sqlite::{SqliteStore, Synchronous};
use roam_server::store::{Change, Store, Write};
use roam_server::{AppState, Server};
use roam_testkit::push::{self as fakes, Failure, Fake};
use roam_testkit::relay::FreezableRelay;
use serde_json::{json, Value};

use crate::fixtures::{config, postgres_url, PgSchema, TestServer, Ws};

const WEBHOOK_SECRET: &str = "webhook-test-secret";

/// The three fake gateways, and the FCM credentials file that points at the fake.
struct Gateways {
    apns: Fake,
    fcm: Fake,
    webhook: Fake,
    creds: tempfile::TempDir,
}

async fn gateways() -> Gateways {
    let apns = fakes::fake_apns().await;
    let fcm = fakes::fake_fcm().await;
    let webhook = fakes::fake_webhook(WEBHOOK_SECRET).await;
    let creds = tempfile::tempdir().expect("tempdir");
    std::fs::write(creds.path().join("fcm.json"), fakes::fcm_credentials(&fcm))
        .expect("write credentials");
    Gateways {
        apns,
        fcm,
        webhook,
        creds,
    }
}

impl Gateways {
    fn configure(&self, c: &mut Config) {
        let p = &mut c.push;
        p.push_apns_key = Some(fakes::apns_key_path());
        p.push_apns_key_id = Some(fakes::APNS_KEY_ID.into());
        p.push_apns_team_id = Some(fakes::APNS_TEAM_ID.into());
        p.push_apns_url = self.apns.url();
        p.push_apns_sandbox_url = self.apns.url();
        p.push_fcm_credentials = Some(self.creds.path().join("fcm.json"));
        p.push_fcm_url = self.fcm.url();
        p.push_webhook_url = Some(format!("{}/push", self.webhook.url()));
        p.push_webhook_secret = Some(WEBHOOK_SECRET.into());
        p.push_poll_ms = 50;
    }
}

async fn start(g: &Gateways, f: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(|c| {
        g.configure(c);
        f(c);
    })
    .await
}

/// Registers `user`'s device over REST.
async fn register(t: &TestServer, user: &str, device: &str, platform: &str, token: &str) -> Value {
    let r = t
        .as_user(user)
        .send(
            Method::PUT,
            &format!("/v1/push/devices/{device}"),
            Some(json!({"platform": platform, "token": token, "app_id": fakes::APNS_TOPIC})),
        )
        .await;
    assert_eq!(r.status, 200, "register: {:?}", r.body);
    r.body
}

/// alice owns public room `room`; each of `others` joined it.
async fn room_with(t: &TestServer, room: &str, others: &[&str]) {
    t.as_user("alice").create_room(room, "public").await;
    for u in others {
        t.as_user(u).join(room).await;
    }
}

/// Waits until `f` holds (at most 10 s).
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn counter(t: &TestServer, name: &str, label: &str) -> f64 {
    t.metric(&format!("roam_{name}_total"), Some(label)).await
}

#[tokio::test]
async fn devices_and_modes_over_rest_and_the_socket() {
    let g = gateways().await;
    let t = start(&g, |_| {}).await;
    room_with(&t, "team", &["bob"]).await;
    let bob = t.as_user("bob");

    let d = register(&t, "bob", "phone-1", "apns", &"ab".repeat(32)).await;
    assert_eq!(d["device"], "phone-1");
    assert_eq!(d["platform"], "apns");
    assert_eq!(d["sandbox"], false);
    assert!(d.get("token").is_none(), "the token is never echoed: {d}");

    let mut ws = t.ws("bob").await;
    let ack = ws
        .mutate(
            "push.register",
            json!({"device": "tablet", "platform": "fcm", "token": "fcm-token-1",
                   "app_id": "com.example.roam", "locale": "pt-BR"}),
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["result"]["locale"], "pt-BR");
    let listed = bob.get("/v1/push/devices").await;
    let devices: Vec<&str> = listed.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|d| d["device"].as_str())
        .collect();
    assert_eq!(devices, ["phone-1", "tablet"]);

    // Bad input changes nothing.
    let bad = bob
        .send(
            Method::PUT,
            "/v1/push/devices/phone-2",
            Some(json!({"platform": "apns", "token": "", "app_id": "x"})),
        )
        .await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    let bad = bob
        .send(
            Method::PUT,
            "/v1/push/devices/phone-2",
            Some(json!({"platform": "sms", "token": "t", "app_id": "x"})),
        )
        .await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);

    // A token moves with its phone to another account.
    register(&t, "carol", "phone-c", "fcm", "fcm-token-1").await;
    let listed = bob.get("/v1/push/devices").await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1));

    // Modes.
    let s = bob.get("/v1/push/settings").await;
    assert_eq!(s.body, json!({"default": "all", "rooms": {}}));
    let r = bob
        .send(
            Method::PUT,
            "/v1/push/settings",
            Some(json!({"mode": "mentions"})),
        )
        .await;
    assert_eq!(r.body, json!({"default": "mentions", "rooms": {}}));
    let r = bob
        .send(
            Method::PUT,
            "/v1/push/settings",
            Some(json!({"mode": "default"})),
        )
        .await;
    assert_eq!(r.status, 400, "the account default cannot be `default`");
    let r = bob
        .send(
            Method::PUT,
            "/v1/rooms/team/push-mode",
            Some(json!({"mode": "mute"})),
        )
        .await;
    assert_eq!(
        r.body,
        json!({"default": "mentions", "rooms": {"team": "mute"}})
    );
    let ack = ws
        .mutate("push.set_mode", json!({"room": "team", "mode": "default"}))
        .await;
    assert_eq!(ack["result"], json!({"default": "mentions", "rooms": {}}));
    let r = bob
        .send(
            Method::PUT,
            "/v1/rooms/nowhere/push-mode",
            Some(json!({"mode": "mute"})),
        )
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);

    // Sign-out.
    let r = bob
        .send(Method::DELETE, "/v1/push/devices/phone-1", None)
        .await;
    assert_eq!(r.status, 200);
    let r = bob
        .send(Method::DELETE, "/v1/push/devices/never", None)
        .await;
    assert_eq!(r.status, 200, "an unknown device answers the same");
    assert_eq!(bob.get("/v1/push/devices").await.body, json!({"items": []}));
}

#[tokio::test]
async fn a_server_without_gateways_queues_no_push_job_and_one_with_a_gateway_does() {
    // No gateway: nothing could send a push, so a message writes no job.
    let t = TestServer::start().await;
    room_with(&t, "quiet", &["bob"]).await;
    let store = Arc::clone(&t.server().state().service.store);
    assert!(!store.push_jobs());
    let sent = t.as_user("alice").say("quiet", "no push for this").await;
    let stats = store.push_queue_stats().await.expect("stats");
    assert_eq!(stats.jobs, 0, "{stats:?}");
    let kept = store
        .message("quiet", sent["id"].as_str().expect("id"))
        .await
        .expect("read")
        .expect("the message is committed");
    assert_eq!(kept.body, "no push for this");

    // The webhook alone is a gateway: jobs are on, and bob's device is pushed.
    let g = gateways().await;
    let t = TestServer::start_with(|c| {
        c.push.push_webhook_url = Some(format!("{}/push", g.webhook.url()));
        c.push.push_webhook_secret = Some(WEBHOOK_SECRET.into());
        c.push.push_poll_ms = 50;
    })
    .await;
    assert!(t.server().state().service.store.push_jobs());
    room_with(&t, "loud", &["bob"]).await;
    register(&t, "bob", "hook", "webhook", "bob-hook").await;
    t.as_user("alice").say("loud", "pushed").await;
    assert_eq!(g.webhook.wait_received(1, Duration::from_secs(10)).await, 1);
}

#[tokio::test]
async fn an_active_user_gets_nothing_and_an_away_or_offline_one_is_pushed() {
    let g = gateways().await;
    let t = start(&g, |_| {}).await;
    room_with(&t, "team", &["bob"]).await;
    let token = "a1".repeat(32);
    register(&t, "bob", "phone", "apns", &token).await;
    let alice = t.as_user("alice");

    // Active on a socket: none of 50 messages is pushed.
    let mut ws = t.ws("bob").await;
    for i in 0..50 {
        alice.say("team", &format!("m{i}")).await;
    }
    eventually("the active skips are counted", async || {
        counter(&t, "push_skipped", "kind=\"active\"").await >= 50.0
    })
    .await;
    assert!(g.apns.received().is_empty(), "pushed while active");

    // Idle (away): pushed, with the generic alert and the room's collapse id.
    ws.mutate("presence.set", json!({"status": "away"})).await;
    let sent = alice.say("team", "are you there?").await;
    assert_eq!(g.apns.wait_received(1, Duration::from_secs(10)).await, 1);
    let got = &g.apns.received()[0];
    assert_eq!(got.token, token);
    assert_eq!(got.header("apns-push-type"), Some("alert"));
    assert_eq!(got.header("apns-priority"), Some("10"));
    assert_eq!(got.header("apns-topic"), Some(fakes::APNS_TOPIC));
    assert_eq!(got.header("apns-collapse-id"), Some("team"));
    assert_eq!(got.body["aps"]["mutable-content"], 1);
    assert_eq!(got.body["aps"]["thread-id"], "team");
    assert_eq!(
        got.body["aps"]["alert"]["title-loc-key"],
        "ROAM_NEW_MESSAGE"
    );
    assert!(
        !got.body.to_string().contains("are you there"),
        "no message text without previews"
    );
    let roam = got.roam();
    assert_eq!(roam["kind"], "message");
    assert_eq!(roam["room"], "team");
    assert_eq!(roam["seq"], sent["seq"]);
    assert_eq!(roam["message"], sent["id"]);
    assert_eq!(roam["unread"], 51, "the badge counts every unread message");

    // Gone: pushed too; the sender never is.
    drop(ws);
    alice.say("team", "and now?").await;
    assert_eq!(g.apns.wait_received(2, Duration::from_secs(10)).await, 2);
    register(&t, "alice", "alice-phone", "apns", &"a2".repeat(32)).await;
    alice.say("team", "mine").await;
    assert_eq!(g.apns.wait_received(3, Duration::from_secs(10)).await, 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(g.apns.received_for(&"a2".repeat(32)).is_empty());
}

#[tokio::test]
async fn modes_decide_what_pushes() {
    let g = gateways().await;
    let t = start(&g, |_| {}).await;
    room_with(&t, "team", &["bob", "carol"]).await;
    register(&t, "bob", "b", "fcm", "bob-fcm").await;
    register(&t, "carol", "c", "fcm", "carol-fcm").await;
    let bob = t.as_user("bob");
    let carol = t.as_user("carol");
    bob.send(
        Method::PUT,
        "/v1/rooms/team/push-mode",
        Some(json!({"mode": "mentions"})),
    )
    .await;
    carol
        .send(
            Method::PUT,
            "/v1/push/settings",
            Some(json!({"mode": "mute"})),
        )
        .await;
    let alice = t.as_user("alice");
    alice.say("team", "plain").await;
    alice.say("team", "hey @bob look").await;
    assert_eq!(g.fcm.wait_received(1, Duration::from_secs(10)).await, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = g.fcm.received();
    assert_eq!(got.len(), 1, "only bob's mention: {got:?}");
    assert_eq!(got[0].token, "bob-fcm");
    assert_eq!(got[0].body["message"]["android"]["priority"], "HIGH");
    assert_eq!(got[0].roam()["kind"], "message");
    assert!(got[0].body["message"].get("notification").is_none());

    // A direct room (private, two members) pushes every message in `mentions` mode.
    bob.send(
        Method::PUT,
        "/v1/push/settings",
        Some(json!({"mode": "mentions"})),
    )
    .await;
    alice.create_room("dm", "private").await;
    let inv = alice.invite("dm", "bob", "member").await;
    bob.accept(&inv).await;
    alice.say("dm", "just us").await;
    assert_eq!(g.fcm.wait_received(2, Duration::from_secs(10)).await, 2);
    assert_eq!(g.fcm.received()[1].roam()["room"], "dm");
}

#[tokio::test]
async fn a_burst_coalesces_and_reading_clears_it_everywhere() {
    let g = gateways().await;
    let t = start(&g, |c| c.push.push_device_per_min = 1).await;
    room_with(&t, "team", &["bob"]).await;
    register(&t, "bob", "phone", "fcm", "bob-phone").await;
    register(&t, "bob", "hook", "webhook", "bob-hook").await;
    let alice = t.as_user("alice");
    alice.say("team", "first").await;
    assert_eq!(g.fcm.wait_received(1, Duration::from_secs(10)).await, 1);
    assert_eq!(g.webhook.wait_received(1, Duration::from_secs(10)).await, 1);
    // Over the device's rate: the next ten wait in one coalesced entry.
    let mut last = Value::Null;
    for i in 0..10 {
        last = alice.say("team", &format!("more {i}")).await;
    }
    eventually("the burst waits as one entry", async || {
        t.metric("roam_push_queue_depth", None).await == 1.0
    })
    .await;
    assert_eq!(g.fcm.received().len(), 1);

    // Reading drops the waiting push and clears the notification on every device.
    let seq = last["seq"].as_u64().expect("seq");
    let r = t
        .as_user("bob")
        .post("/v1/rooms/team/read", json!({"seq": seq}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(g.fcm.wait_received(2, Duration::from_secs(10)).await, 2);
    let read = &g.fcm.received()[1];
    assert_eq!(read.body["message"]["android"]["priority"], "NORMAL");
    let roam = read.roam();
    assert_eq!(roam["kind"], "read");
    assert_eq!(roam["seq"], seq);
    assert_eq!(roam["unread"], 0);
    assert_eq!(g.webhook.wait_received(2, Duration::from_secs(10)).await, 2);
    let hook = &g.webhook.received()[1];
    assert_eq!(hook.body["user"], "bob");
    assert_eq!(hook.body["device"], "hook");
    assert_eq!(hook.body["platform"], "webhook");
    assert_eq!(hook.body["roam"]["kind"], "read");
    eventually("the queue is empty", async || {
        t.metric("roam_push_queue_depth", None).await == 0.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        g.fcm.received().len(),
        2,
        "the coalesced burst was read: never pushed"
    );
}

#[tokio::test]
async fn a_dead_token_is_unregistered() {
    let g = gateways().await;
    let t = start(&g, |_| {}).await;
    room_with(&t, "team", &["bob", "carol"]).await;
    register(&t, "bob", "iphone", "apns", &"de".repeat(32)).await;
    register(&t, "carol", "pixel", "fcm", "carol-pixel").await;
    g.apns.forget(&"de".repeat(32));
    g.fcm.forget("carol-pixel");
    t.as_user("alice").say("team", "hello").await;
    eventually("both tokens are removed", async || {
        t.metric("roam_push_tokens_removed_total", None).await == 2.0
    })
    .await;
    for user in ["bob", "carol"] {
        let listed = t.as_user(user).get("/v1/push/devices").await;
        assert_eq!(listed.body, json!({"items": []}), "{user}");
    }
    assert_eq!(
        counter(&t, "push_failed", "kind=\"unregistered\"").await,
        2.0
    );
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_after_their_wait() {
    let g = gateways().await;
    let t = start(&g, |_| {}).await;
    room_with(&t, "team", &["bob", "carol"]).await;
    register(&t, "bob", "iphone", "apns", &"b0".repeat(32)).await;
    register(&t, "carol", "pixel", "fcm", "carol-pixel").await;
    g.apns.fail_next([Failure {
        status: 429,
        retry_after: Some(2),
    }]);
    g.fcm.fail_next([
        Failure {
            status: 500,
            retry_after: None,
        },
        Failure {
            status: 503,
            retry_after: None,
        },
    ]);
    t.as_user("alice").say("team", "hello").await;
    assert_eq!(g.apns.wait_received(1, Duration::from_secs(10)).await, 1);
    let refused = g.apns.failed_at()[0];
    let waited = g.apns.received()[0].at.duration_since(refused);
    assert!(
        waited >= Duration::from_millis(1_900),
        "Retry-After honoured: {waited:?}"
    );
    assert_eq!(g.fcm.wait_received(1, Duration::from_secs(10)).await, 1);
    let failed = g.fcm.failed_at();
    assert_eq!(failed.len(), 2);
    // Backoff: 1 s after the first failure, 2 s after the second.
    assert!(failed[1].duration_since(failed[0]) >= Duration::from_millis(900));
    assert!(g.fcm.received()[0].at.duration_since(failed[1]) >= Duration::from_millis(1_900));
    assert_eq!(
        counter(&t, "push_retried", "kind=\"rate_limited\"").await,
        1.0
    );
    assert_eq!(
        counter(&t, "push_retried", "kind=\"server_error\"").await,
        2.0
    );
    assert_eq!(g.apns.refused_auth() + g.fcm.refused_auth(), 0);
}

#[tokio::test]
async fn a_message_deleted_or_read_before_its_push_is_not_pushed() {
    let g = gateways().await;
    // The worker runs when a commit through the service wakes it (or after a minute).
    let t = start(&g, |c| c.push.push_poll_ms = 60_000).await;
    room_with(&t, "team", &["bob"]).await;
    t.as_user("alice").create_room("other", "public").await;
    register(&t, "bob", "phone", "fcm", "bob-phone").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let store = Arc::clone(&t.server().state().service.store);
    // Straight to the store: queued, but nothing wakes the worker.
    let send = |id: &str| {
        store.commit(write(
            "alice",
            Change::InsertMessage {
                id: id.into(),
                room: "team".into(),
                body: "oops".into(),
                reply_to: None,
                attachment: None,
            },
        ))
    };
    send("gone").await.expect("message");
    store
        .commit(write(
            "alice",
            Change::DeleteMessage {
                room: "team".into(),
                id: "gone".into(),
            },
        ))
        .await
        .expect("delete");
    let read = send("read").await.expect("message");
    let roam_server::store::Committed::Applied { events, .. } = read else {
        panic!("not applied");
    };
    let seq = events[0].seq;
    store
        .commit(write(
            "bob",
            Change::MarkRoomRead {
                room: "team".into(),
                seq,
            },
        ))
        .await
        .expect("read");
    // A commit through the service wakes the worker.
    t.as_user("alice").say("other", "wake up").await;
    eventually("both are skipped", async || {
        counter(&t, "push_skipped", "kind=\"deleted\"").await >= 1.0
            && counter(&t, "push_skipped", "kind=\"read\"").await >= 1.0
    })
    .await;
    assert_eq!(g.fcm.wait_received(1, Duration::from_secs(5)).await, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = g.fcm.received();
    assert_eq!(got.len(), 1, "only the read push: {got:?}");
    assert_eq!(got[0].roam()["kind"], "read");
}

// ----- a device that falls silent ---------------------------------------------------------

/// The idle timeout of the silent-device tests (the server checks it every second).
const IDLE_SECS: u64 = 2;

fn short_idle(c: &mut Config) {
    c.idle_timeout_secs = IDLE_SECS;
    c.heartbeat_ms = 250;
}

/// Connects `user`'s socket to `addr` (a server, or a relay to one) and pings it every 250 ms
/// from a task of its own, as a client's heartbeat does, without reading the answers; the
/// socket lives as long as the task.
async fn heartbeating(addr: std::net::SocketAddr, token: &str) -> tokio::task::JoinHandle<()> {
    let mut ws = Ws::connect(&format!("ws://{addr}/v1/ws"), token).await;
    tokio::spawn(async move {
        for i in 0u64.. {
            ws.send(json!({"v": 1, "type": "ping", "id": format!("hb{i}")}))
                .await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

/// A phone that loses its network without a word (no FIN, no RST: the relay stops forwarding
/// in both directions and closes nothing) counts as active until the idle timeout; then what
/// was sent to it since it was last heard from is pushed, the room's newest message once. What
/// it got well before it fell silent is not.
#[tokio::test]
async fn a_silent_device_stops_counting_as_active_and_what_it_missed_is_pushed() {
    let g = gateways().await;
    let t = start(&g, short_idle).await;
    room_with(&t, "team", &["bob"]).await;
    room_with(&t, "earlier", &["bob"]).await;
    let token = "5a".repeat(32);
    register(&t, "bob", "phone", "apns", &token).await;
    let relay = FreezableRelay::start(t.server().local_addr().to_string()).await;
    let beat = heartbeating(relay.addr, &t.token("bob")).await;
    let alice = t.as_user("alice");

    // Active: not pushed. "earlier" reached the phone long (more than the server's margin of
    // two seconds) before it fell silent.
    alice.say("earlier", "seen while connected").await;
    eventually("the active skip is counted", async || {
        counter(&t, "push_skipped", "kind=\"active\"").await >= 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    // The network goes. The server still counts the phone as active for the idle timeout.
    relay.freeze();
    alice.say("team", "are you there?").await;
    let sent = alice.say("team", "still there?").await;
    assert_eq!(g.apns.wait_received(1, Duration::from_secs(15)).await, 1);
    let got = &g.apns.received()[0];
    assert_eq!(got.token, token);
    let roam = got.roam();
    assert_eq!(roam["kind"], "message");
    assert_eq!(roam["room"], "team");
    assert_eq!(roam["seq"], sent["seq"], "the room's newest message");
    assert_eq!(roam["message"], sent["id"]);
    assert_eq!(roam["unread"], 3, "the badge counts every unread message");
    assert_eq!(t.metric("roam_push_lost_contact_total", None).await, 1.0);
    eventually("the queue is empty", async || {
        t.metric("roam_push_queue_depth", None).await == 0.0
    })
    .await;
    assert_eq!(g.apns.received().len(), 1, "nothing for \"earlier\"");

    // Gone now: the next message is pushed as to any offline user.
    let next = alice.say("team", "hello?").await;
    assert_eq!(g.apns.wait_received(2, Duration::from_secs(10)).await, 2);
    assert_eq!(g.apns.received()[1].roam()["seq"], next["seq"]);
    beat.abort();
}

/// The same across two nodes: bob's phone falls silent on node b while alice writes on node a
/// (which saw bob active through the cluster's presence), and bob is pushed; carol, whose
/// phone fell silent too but whose laptop is connected to node a, is not.
#[tokio::test]
async fn a_silent_device_on_another_node_is_pushed_unless_another_device_is_active() {
    let g = gateways().await;
    let s = shared_store().await;
    let a = node_with(&s, &g, "a", short_idle).await;
    let b = node_with(&s, &g, "b", short_idle).await;
    room_with(&a, "team", &["bob", "carol"]).await;
    register(&a, "bob", "phone", "fcm", "bob-phone").await;
    register(&a, "carol", "phone", "fcm", "carol-phone").await;
    let relay = FreezableRelay::start(b.server().local_addr().to_string()).await;
    let bob_phone = heartbeating(relay.addr, &b.token("bob")).await;
    let carol_phone = heartbeating(relay.addr, &b.token("carol")).await;
    let carol_laptop = heartbeating(a.server().local_addr(), &a.token("carol")).await;
    let alice = a.as_user("alice");
    alice.say("team", "everyone here?").await;
    // Either node may take the message's job.
    eventually("both are active", async || {
        counter(&a, "push_skipped", "kind=\"active\"").await
            + counter(&b, "push_skipped", "kind=\"active\"").await
            >= 2.0
    })
    .await;

    relay.freeze();
    let sent = alice.say("team", "anyone?").await;
    assert_eq!(g.fcm.wait_received(1, Duration::from_secs(15)).await, 1);
    let got = &g.fcm.received()[0];
    assert_eq!(got.token, "bob-phone");
    assert_eq!(got.roam()["seq"], sent["seq"]);
    eventually("both phones are given up on", async || {
        b.metric("roam_connections", None).await == 0.0
    })
    .await;
    eventually("the queue is empty", async || {
        a.metric("roam_push_queue_depth", None).await == 0.0
    })
    .await;
    let got = g.fcm.received();
    assert_eq!(got.len(), 1, "carol's laptop is active: {got:?}");
    for beat in [bob_phone, carol_phone, carol_laptop] {
        beat.abort();
    }
}

// ----- two nodes on one store -----------------------------------------------------------

fn redis_url() -> String {
    std::env::var("ROAM_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

struct Shared {
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
    _schema: Option<PgSchema>,
    prefix: String,
}

async fn shared_store() -> Shared {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, schema): (Arc<dyn Store>, _) = match postgres_url() {
        Some(base) => {
            let schema = PgSchema::create(&base, "roam_test").await;
            let store = PostgresStore::connect(&schema.url(), 4)
                .await
                .expect("store");
            (Arc::new(store), Some(schema))
        }
        None => (
            Arc::new(
                SqliteStore::open_with(&dir.path().join("shared.db"), 4, Synchronous::Normal)
                    .await
                    .expect("store"),
            ),
            None,
        ),
    };
    Shared {
        store,
        _dir: dir,
        _schema: schema,
        prefix: format!("roampush-{}", uuid::Uuid::new_v4().simple()),
    }
}

async fn node(s: &Shared, g: &Gateways, name: &str) -> TestServer {
    node_with(s, g, name, |_| {}).await
}

async fn node_with(
    s: &Shared,
    g: &Gateways,
    name: &str,
    f: impl FnOnce(&mut Config),
) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    g.configure(&mut cfg);
    f(&mut cfg);
    cfg.bus = redis_url();
    cfg.bus_prefix = s.prefix.clone();
    cfg.node_id = Some(name.to_owned());
    cfg.bus_heartbeat_ms = 100;
    let keys = Keys::from_config(&cfg).expect("keys");
    let state = AppState::on_store(cfg, keys, Arc::clone(&s.store)).expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = Server::start_with(state, listener).expect("start");
    let base = format!("http://{}", server.local_addr());
    TestServer {
        server: Some(server),
        dir,
        base,
        http: reqwest::Client::new(),
        schema: None,
    }
}

fn write(actor: &str, change: Change) -> Write {
    Write {
        actor: actor.into(),
        now: roam_server::service::now_ms(),
        idem: None,
        guard: None,
        after: None,
        change,
        notify: Vec::new(),
    }
}

/// `n` members of `room` with one APNs device each (tokens `t{i}`), written straight to the
/// store, 500 queued at a time so the store commits them in groups (and a PostgreSQL writer
/// lane's queue stays within its wait limit).
async fn members_with_devices(store: &Arc<dyn Store>, room: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let joins: Vec<_> = chunk
            .iter()
            .map(|i| {
                store.commit(write(
                    &format!("u{i:05}"),
                    Change::AddMember {
                        room: room.into(),
                        user: format!("u{i:05}"),
                        role: roam_proto::Role::Member,
                        invitation: None,
                    },
                ))
            })
            .collect();
        for j in futures_util::future::join_all(joins).await {
            j.expect("join");
        }
        let devices: Vec<_> = chunk
            .iter()
            .map(|i| {
                store.commit(write(
                    &format!("u{i:05}"),
                    Change::RegisterPush {
                        device: "phone".into(),
                        platform: roam_proto::PushPlatform::Apns,
                        token: format!("t{i:05}"),
                        app_id: fakes::APNS_TOPIC.into(),
                        locale: None,
                        sandbox: false,
                    },
                ))
            })
            .collect();
        for d in futures_util::future::join_all(devices).await {
            d.expect("device");
        }
    }
}

#[tokio::test]
async fn two_nodes_share_the_queue_send_each_push_once_and_see_presence_on_both() {
    let g = gateways().await;
    let s = shared_store().await;
    let a = node(&s, &g, "a").await;
    let b = node(&s, &g, "b").await;
    a.as_user("alice").create_room("big", "public").await;
    members_with_devices(&s.store, "big", 300).await;
    // u00000 is active on node b; alice writes on node a.
    let _ws = b.ws("u00000").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.as_user("alice").say("big", "to everyone").await;
    assert_eq!(
        g.apns.wait_received(299, Duration::from_secs(20)).await,
        299
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = g.apns.received();
    assert_eq!(got.len(), 299, "each once over both nodes");
    let mut tokens: Vec<&str> = got.iter().map(|r| r.token.as_str()).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 299);
    assert!(!tokens.contains(&"t00000"), "active on the other node");
}

#[tokio::test]
async fn pushes_a_dead_node_had_taken_are_sent_by_another_when_its_lease_ends() {
    let g = gateways().await;
    let s = shared_store().await;
    let a = node(&s, &g, "a").await;
    a.as_user("alice").create_room("big", "public").await;
    members_with_devices(&s.store, "big", 20).await;
    let mut a = a;
    a.stop().await;
    // Written while no node runs; then a node takes everything and dies before sending.
    let msg = Change::InsertMessage {
        id: "m-dead".into(),
        room: "big".into(),
        body: "while you were out".into(),
        reply_to: None,
        attachment: None,
    };
    s.store.commit(write("alice", msg)).await.expect("message");
    let now = roam_server::service::now_ms();
    let job = s
        .store
        .claim_push_job("dead-node", now, now + 60_000)
        .await
        .expect("claim")
        .expect("the message's job");
    let users: Vec<_> = s
        .store
        .push_candidates("big", "alice", "", 100)
        .await
        .expect("candidates");
    assert_eq!(users.len(), 20);
    let entries: Vec<_> = users
        .iter()
        .map(|c| roam_server::store::push::NewPush {
            user: c.user.clone(),
            room: "big".into(),
            seq: job.seq,
            message: job.message.clone(),
        })
        .collect();
    assert!(s
        .store
        .push_fanout(job.id, "dead-node", &entries, None, now)
        .await
        .expect("fan out"));
    let claimed = Instant::now();
    let now = roam_server::service::now_ms();
    let taken = s
        .store
        .claim_pushes("dead-node", now, now + 5_000, 100)
        .await
        .expect("claim");
    assert_eq!(taken.len(), 20);
    // Another node starts: it waits for the lease, then sends each once.
    let b = node(&s, &g, "b").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    if claimed.elapsed() < Duration::from_millis(4_500) {
        assert!(
            g.apns.received().is_empty(),
            "taken by the dead node's live lease"
        );
    }
    assert_eq!(g.apns.wait_received(20, Duration::from_secs(15)).await, 20);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(g.apns.received().len(), 20);
    drop(b);
}

#[tokio::test]
/// Several batches (`--push-batch`, 500) of one message's recipients: each pushed once. The
/// 10,000-member figure is measured by `cargo run --release -p roam-server --example push_cost`
/// (a debug build on PostgreSQL takes minutes for it, too long for every test run).
async fn a_message_to_a_crowd_of_offline_members_pushes_each_once() {
    const CROWD: usize = 2_000;
    let g = gateways().await;
    let t = start(&g, |_| {}).await;
    let store = Arc::clone(&t.server().state().service.store);
    t.as_user("alice").create_room("huge", "public").await;
    members_with_devices(&store, "huge", CROWD).await;
    t.as_user("alice").say("huge", "hello, all").await;
    assert_eq!(
        g.apns.wait_received(CROWD, Duration::from_secs(300)).await,
        CROWD
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = g.apns.received();
    assert_eq!(got.len(), CROWD);
    let tokens: std::collections::HashSet<&str> = got.iter().map(|r| r.token.as_str()).collect();
    assert_eq!(tokens.len(), CROWD, "each member once");
    eventually("the queue is empty", async || {
        t.metric("roam_push_queue_depth", None).await == 0.0
            && t.metric("roam_push_queue_jobs", None).await == 0.0
    })
    .await;
}
