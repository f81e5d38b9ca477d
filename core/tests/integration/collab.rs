//! Collaborative documents against the fake server (a real yrs document per document, `seq`,
//! state-vector answers, fan-out): convergence online and offline, restart, coalescing, gaps,
//! refusals, remote deltas, awareness, and a seeded random stress of three clients.

use std::sync::Arc;

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use roam_core::{
    AwarenessListener, Client, CollabChange, CollabDoc, CollabError, CollabListener, CollabPeer,
    CollabValueChange, TextDelta,
};

use crate::fixture::{self, eventually, FakeServer};

const ROOM: &str = "general";
const DOC: &str = "notes";

async fn started(dir: &std::path::Path, server: &FakeServer, user: &str) -> Client {
    let client = fixture::open(fixture::config(dir, &server.url(), user));
    client.start().await.expect("start");
    client
}

/// Alice and Bob, each with a started client on a store of their own, and the document open on
/// both (the stores' directories last, so they go after the clients).
struct Pair {
    alice: Client,
    bob: Client,
    a: CollabDoc,
    b: CollabDoc,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn pair(server: &FakeServer) -> Pair {
    let dirs = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let alice = started(dirs.0.path(), server, "alice").await;
    let bob = started(dirs.1.path(), server, "bob").await;
    let a = alice.open_collab(ROOM, DOC).expect("open");
    let b = bob.open_collab(ROOM, DOC).expect("open");
    Pair {
        alice,
        bob,
        a,
        b,
        _dirs: dirs,
    }
}

fn text(doc: &CollabDoc) -> String {
    doc.text("body").expect("text")
}

/// Waits until every document and the server hold the same text.
async fn converged(server: &FakeServer, docs: &[&CollabDoc]) -> String {
    eventually("documents converge", || {
        let server_text = server.with(|s| s.collab_text(ROOM, DOC, "body"));
        docs.iter().all(|d| text(d) == server_text)
    })
    .await;
    text(docs[0])
}

#[derive(Default)]
struct Recorder {
    changes: Mutex<Vec<CollabChange>>,
    errors: Mutex<Vec<CollabError>>,
}

impl CollabListener for Recorder {
    fn on_change(&self, change: CollabChange) {
        self.changes.lock().push(change);
    }
    fn on_error(&self, error: CollabError) {
        self.errors.lock().push(error);
    }
}

/// Applies text deltas to a plain UTF-16 string, as an editor would.
fn apply(model: &mut Vec<u16>, delta: &[TextDelta]) {
    let mut at = 0usize;
    for d in delta {
        match d {
            TextDelta::Retain { len, .. } => at += *len as usize,
            TextDelta::Insert { text, .. } => {
                let units: Vec<u16> = text.encode_utf16().collect();
                let n = units.len();
                model.splice(at..at, units);
                at += n;
            }
            TextDelta::Delete { len } => {
                model.drain(at..at + *len as usize);
            }
        }
    }
}

#[tokio::test]
async fn two_clients_converge_and_remote_deltas_rebuild_the_text() {
    let server = FakeServer::start().await;
    let Pair {
        alice: _alice,
        bob: _bob,
        a,
        b,
        _dirs,
    } = pair(&server).await;
    let rec = Arc::new(Recorder::default());
    let _sub = b.subscribe(rec.clone());
    a.insert_text("body", 0, "hello 😀 world", None).expect("a");
    b.insert_text("body", 0, "bob: ", None).expect("b");
    converged(&server, &[&a, &b]).await;
    a.delete_text("body", 0, 3).expect("delete");
    a.format_text("body", 0, 2, serde_json::json!({"bold": true}))
        .expect("format");
    let end = converged(&server, &[&a, &b]).await;
    // Bob's listener saw his own edit and Alice's, as deltas that rebuild the text.
    eventually("deltas delivered", || {
        let mut model = Vec::new();
        for c in rec.changes.lock().iter() {
            for v in &c.changes {
                if let CollabValueChange::Text { delta, .. } = v {
                    apply(&mut model, delta);
                }
            }
        }
        String::from_utf16(&model).ok().as_deref() == Some(end.as_str())
    })
    .await;
    assert!(
        rec.changes.lock().iter().any(|c| !c.local),
        "remote changes marked remote"
    );
    assert!(
        rec.changes.lock().iter().any(|c| c.local),
        "own changes marked local"
    );
}

#[tokio::test]
async fn offline_edits_on_both_sides_merge_after_reconnect() {
    let server = FakeServer::start().await;
    let Pair {
        alice,
        bob,
        a,
        b,
        _dirs,
    } = pair(&server).await;
    a.insert_text("body", 0, "base", None).expect("base");
    converged(&server, &[&a, &b]).await;
    alice.set_online(false);
    bob.set_online(false);
    for (i, c) in "AAAA".chars().enumerate() {
        a.insert_text("body", i as u32, &c.to_string(), None)
            .expect("a");
    }
    b.insert_text("body", text(&b).encode_utf16().count() as u32, "BBBB", None)
        .expect("b");
    b.list_push("tasks", serde_json::json!("from bob"))
        .expect("list");
    a.map_set("meta", "owner", serde_json::json!("alice"))
        .expect("map");
    alice.set_online(true);
    bob.set_online(true);
    let end = converged(&server, &[&a, &b]).await;
    assert_eq!(end, "AAAAbaseBBBB");
    eventually("list and map merged", || {
        a.list("tasks").expect("list") == vec!["\"from bob\"".to_owned()]
            && b.map_get("meta", "owner").expect("map").as_deref() == Some("\"alice\"")
    })
    .await;
}

#[tokio::test]
async fn a_restart_keeps_unsent_edits_and_sends_them() {
    let server = FakeServer::start().await;
    let dir = tempfile::tempdir().expect("dir");
    {
        let offline = fixture::open(fixture::config(dir.path(), &server.url(), "alice"));
        let doc = offline.open_collab(ROOM, DOC).expect("open");
        doc.insert_text("body", 0, "written offline", None)
            .expect("edit");
        doc.flush().expect("flush");
    }
    assert_eq!(server.with(|s| s.collab_text(ROOM, DOC, "body")), "");
    let client = started(dir.path(), &server, "alice").await;
    eventually("sent after the restart", || {
        server.with(|s| s.collab_text(ROOM, DOC, "body")) == "written offline"
    })
    .await;
    let doc = client.open_collab(ROOM, DOC).expect("open");
    assert_eq!(text(&doc), "written offline");
}

#[tokio::test]
async fn offline_keystrokes_are_coalesced_into_few_updates() {
    let server = FakeServer::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let client = started(dir.path(), &server, "alice").await;
    let doc = client.open_collab(ROOM, DOC).expect("open");
    eventually("synced once", || {
        server.with(|s| !s.collab_syncs.is_empty())
    })
    .await;
    client.set_online(false);
    let typed = "the quick brown fox jumps over the lazy dog ".repeat(10);
    for (i, c) in typed.chars().enumerate() {
        doc.insert_text("body", i as u32, &c.to_string(), None)
            .expect("type");
    }
    client.set_online(true);
    eventually("all typed text arrives", || {
        server.with(|s| s.collab_text(ROOM, DOC, "body")) == typed
    })
    .await;
    let sent = server.with(|s| s.collab_updates.len());
    assert!(
        sent * 20 <= typed.len(),
        "{} keystrokes went in {sent} updates",
        typed.len()
    );
}

#[tokio::test]
async fn a_gap_in_seq_syncs_again_and_catches_up() {
    let server = FakeServer::start().await;
    let Pair {
        alice: _alice,
        bob: _bob,
        a,
        b,
        _dirs,
    } = pair(&server).await;
    a.insert_text("body", 0, "one ", None).expect("one");
    converged(&server, &[&a, &b]).await;
    let syncs_before = server.with(|s| s.collab_syncs.len());
    // The next update's frame is lost; the one after shows the gap.
    server.with(|s| s.drop_collab_frames = 1);
    a.insert_text("body", 4, "two ", None).expect("two");
    eventually("applied by the server", || {
        server.with(|s| s.collab_text(ROOM, DOC, "body")) == "one two "
    })
    .await;
    a.insert_text("body", 8, "three", None).expect("three");
    let end = converged(&server, &[&a, &b]).await;
    assert_eq!(end, "one two three");
    assert!(
        server.with(|s| s.collab_syncs.len()) > syncs_before,
        "a gap triggers a new collab_sync"
    );
}

#[tokio::test]
async fn a_refused_update_is_reported_and_not_retried_forever() {
    let server = FakeServer::start().await;
    let dir = tempfile::tempdir().expect("dir");
    server.with(|s| {
        s.forbidden_rooms.insert(ROOM.to_owned());
    });
    let client = started(dir.path(), &server, "alice").await;
    let doc = client.open_collab(ROOM, DOC).expect("open");
    let rec = Arc::new(Recorder::default());
    let _sub = doc.subscribe(rec.clone());
    doc.insert_text("body", 0, "not allowed", None)
        .expect("local edit");
    eventually("refusal reported", || {
        rec.errors
            .lock()
            .iter()
            .any(|e| e.code == "forbidden" && !e.entry.is_empty())
    })
    .await;
    let attempts = server.with(|s| s.mutations.len());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(server.with(|s| s.mutations.len()), attempts, "not retried");
    assert_eq!(text(&doc), "not allowed", "kept locally");
}

#[derive(Default)]
struct Peers(Mutex<Vec<Vec<CollabPeer>>>);

impl AwarenessListener for Peers {
    fn on_peers(&self, peers: Vec<CollabPeer>) {
        self.0.lock().push(peers);
    }
}

#[tokio::test]
async fn awareness_shows_peers_selections_and_their_leaving() {
    let server = FakeServer::start().await;
    let Pair {
        alice: _alice,
        bob: _bob,
        a,
        b,
        _dirs,
    } = pair(&server).await;
    let peers = Arc::new(Peers::default());
    let _sub = b.subscribe_peers(peers.clone());
    a.insert_text("body", 0, "hello world", None).expect("text");
    converged(&server, &[&a, &b]).await;
    a.set_local_state(Some(serde_json::json!({"name": "Alice"})))
        .expect("state");
    a.set_selection("body", 6, 11).expect("select");
    eventually("bob sees alice's selection", || {
        b.peers().iter().any(|p| {
            p.user == "alice"
                && p.state.as_deref() == Some(r#"{"name":"Alice"}"#)
                && p.selection.is_some_and(|s| (s.anchor, s.head) == (6, 11))
        })
    })
    .await;
    // Bob edits before the selection: it moves with the text.
    b.insert_text("body", 0, ">> ", None).expect("edit");
    eventually("the selection follows the text", || {
        b.peers()
            .iter()
            .any(|p| p.selection.is_some_and(|s| (s.anchor, s.head) == (9, 14)))
    })
    .await;
    a.close().expect("close");
    eventually("alice left", || b.peers().is_empty()).await;
    // The listener hears it on the dispatcher's thread, a moment after the state changed.
    eventually("the listener heard alice leave", || {
        peers.0.lock().last().is_some_and(Vec::is_empty)
    })
    .await;
    assert!(peers.0.lock().iter().any(|p| !p.is_empty()));
}

/// Three clients edit one text offline at random for several rounds, reconnecting after each:
/// every round ends with the three and the server identical. Seeded and bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_concurrent_offline_edits_of_three_clients_converge() {
    let server = FakeServer::start().await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let users = ["alice", "bob", "carol"];
    let mut clients = Vec::new();
    for (d, u) in dirs.iter().zip(users) {
        clients.push(started(d.path(), &server, u).await);
    }
    let docs: Vec<CollabDoc> = clients
        .iter()
        .map(|c| c.open_collab(ROOM, DOC).expect("open"))
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(22);
    let alphabet: Vec<char> = "abcdefgh é😀\n".chars().collect();
    let mut edits = 0;
    for _round in 0..5 {
        for c in &clients {
            c.set_online(false);
        }
        for _ in 0..250 {
            for d in &docs {
                let len = d.text_len("body").expect("len");
                if len > 0 && rng.random_bool(0.3) {
                    let at = rng.random_range(0..len);
                    let n = rng.random_range(1..=(len - at).min(4));
                    // Never split a surrogate pair: delete whole characters.
                    let s: Vec<u16> = text(d).encode_utf16().collect();
                    let start = if at > 0 && (0xDC00..0xE000).contains(&s[at as usize]) {
                        at - 1
                    } else {
                        at
                    };
                    let mut end = (at + n) as usize;
                    if end < s.len() && (0xDC00..0xE000).contains(&s[end]) {
                        end += 1;
                    }
                    d.delete_text("body", start, end as u32 - start)
                        .expect("delete");
                } else {
                    let s: Vec<u16> = text(d).encode_utf16().collect();
                    let mut at = rng.random_range(0..=len) as usize;
                    if at < s.len() && (0xDC00..0xE000).contains(&s[at]) {
                        at -= 1;
                    }
                    let c = alphabet[rng.random_range(0..alphabet.len())];
                    d.insert_text("body", at as u32, &c.to_string(), None)
                        .expect("insert");
                }
                edits += 1;
            }
        }
        for c in &clients {
            c.set_online(true);
        }
        let refs: Vec<&CollabDoc> = docs.iter().collect();
        converged(&server, &refs).await;
    }
    assert_eq!(edits, 3 * 5 * 250);
    assert!(!text(&docs[0]).is_empty());
}
