//! The collaborative document (`crate::collab`) offline: edits, storage, coalescing in the outbox, undo,
//! deltas. With a server: `core/tests/integration/collab.rs`.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::json;
use yrs::updates::decoder::Decode;
use yrs::{GetString, ReadTxn, Text, Transact, Update};

use std::time::{Duration, Instant};

use roam_proto::collab::{decode_base64, MAX_COLLAB_UPDATE_BYTES};
use roam_proto::Mutation;
use yrs::{Doc, OffsetKind, Options};

use crate::collab::COMPACT_FLOOR;
use crate::{
    Client, ClientConfig, CollabChange, CollabError, CollabListener, CollabValueChange,
    StaticToken, TextDelta,
};

fn open_client(dir: &std::path::Path) -> Client {
    let config = ClientConfig::new(dir.join("alice.db"), "http://127.0.0.1:9", "alice");
    Client::open(config, Arc::new(StaticToken("t".into()))).expect("open")
}

fn queued_updates(client: &Client) -> Vec<Vec<u8>> {
    client
        .outbox()
        .expect("outbox")
        .into_iter()
        .filter(|e| e.op == "collab.update")
        .map(|e| {
            let m: Mutation = serde_json::from_str(&e.mutation_json).expect("mutation");
            match m {
                Mutation::UpdateCollab { update, .. } => {
                    decode_base64("u", &update, MAX_COLLAB_UPDATE_BYTES).expect("base64")
                }
                other => panic!("not a collab update: {other:?}"),
            }
        })
        .collect()
}

/// A plain yrs document with these updates applied: what a server merging them would hold.
fn replay(updates: &[Vec<u8>]) -> Doc {
    let doc = Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    });
    {
        let mut txn = doc.transact_mut();
        for u in updates {
            txn.apply_update(Update::decode_v1(u).expect("decode"))
                .expect("apply");
        }
    }
    doc
}

#[test]
fn edits_are_stored_coalesced_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let client = open_client(dir.path());
    let doc = client.open_collab("general", "notes").expect("open");
    let same = client.open_collab("general", "notes").expect("again");
    for (i, ch) in "hello world".chars().enumerate() {
        doc.insert_text("body", i as u32, &ch.to_string(), None)
            .expect("type");
    }
    same.delete_text("body", 5, 6).expect("delete");
    doc.list_push("tasks", json!({"title": "milk", "done": false}))
        .expect("push");
    doc.map_set("meta", "title", json!("Groceries"))
        .expect("set");
    assert_eq!(same.text("body").expect("text"), "hello");
    doc.flush().expect("flush");
    let updates = queued_updates(&client);
    // Nothing went on the wire: every keystroke merged into one entry.
    assert_eq!(updates.len(), 1, "coalesced into one entry");
    let server = replay(&updates);
    let txn = server.transact();
    let body = txn.get_text("body").expect("body");
    assert_eq!(body.get_string(&txn), "hello");
    drop(txn);
    drop((doc, same));
    drop(client);

    let client = open_client(dir.path());
    let doc = client.open_collab("general", "notes").expect("reopen");
    assert_eq!(doc.text("body").expect("text"), "hello");
    assert_eq!(
        doc.list("tasks").expect("list"),
        vec![r#"{"done":false,"title":"milk"}"#.to_owned()]
    );
    assert_eq!(
        doc.map_get("meta", "title").expect("get"),
        Some("\"Groceries\"".to_owned())
    );
    // The unsent entry is still queued after the restart.
    assert_eq!(queued_updates(&client).len(), 1);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let client = open_client(dir.path());
    assert!(client.open_collab("bad room!", "notes").is_err());
    let doc = client.open_collab("general", "notes").expect("open");
    doc.insert_text("body", 0, "abc", None).expect("insert");
    assert!(
        doc.insert_text("body", 4, "x", None).is_err(),
        "past the end"
    );
    assert!(doc.delete_text("body", 2, 2).is_err(), "past the end");
    assert!(
        doc.format_text("body", 0, 1, json!(1)).is_err(),
        "not an object"
    );
    assert!(
        doc.list_push("body", json!(1)).is_err(),
        "a text, not a list"
    );
    assert!(doc.list_delete("tasks", 0, 1).is_err(), "empty list");
    assert!(doc.insert_text("", 0, "x", None).is_err(), "no name");
    let big = "x".repeat(MAX_COLLAB_UPDATE_BYTES);
    assert!(doc.insert_text("body", 0, &big, None).is_err(), "too large");
    assert!(doc
        .set_local_state(Some(json!({"name": "y".repeat(4096)})))
        .is_err());
    assert!(doc.set_selection("body", 0, 9).is_err());
    assert_eq!(doc.text("body").expect("text"), "abc");
    doc.close().expect("close");
    assert!(doc.insert_text("body", 0, "x", None).is_err(), "closed");
    let again = client.open_collab("general", "notes").expect("reopen");
    assert_eq!(again.text("body").expect("text"), "abc");
}

#[test]
fn offsets_are_utf16_units() {
    let dir = tempfile::tempdir().expect("dir");
    let client = open_client(dir.path());
    let doc = client.open_collab("general", "notes").expect("open");
    doc.insert_text("body", 0, "a😀b", None).expect("insert");
    assert_eq!(doc.text_len("body").expect("len"), 4);
    doc.insert_text("body", 3, "é", None)
        .expect("after the emoji");
    assert_eq!(doc.text("body").expect("text"), "a😀éb");
    doc.delete_text("body", 1, 2).expect("delete the emoji");
    assert_eq!(doc.text("body").expect("text"), "aéb");
}

#[derive(Default)]
struct Changes(Mutex<Vec<CollabChange>>);

impl CollabListener for Changes {
    fn on_change(&self, change: CollabChange) {
        self.0.lock().push(change);
    }
    fn on_error(&self, _error: CollabError) {}
}

/// Applies text deltas to a plain string (UTF-16), as an editor would.
pub(crate) fn apply_text(model: &mut Vec<u16>, delta: &[TextDelta]) {
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

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn deltas_describe_local_edits_and_undo_exactly() {
    let dir = tempfile::tempdir().expect("dir");
    let client = open_client(dir.path());
    let doc = client.open_collab("general", "notes").expect("open");
    let changes = Arc::new(Changes::default());
    let _sub = doc.subscribe(changes.clone());
    let mut expected = 0;
    let step = |f: &dyn Fn()| f();
    step(&|| doc.insert_text("body", 0, "hello", None).expect("a"));
    step(&|| doc.insert_text("body", 5, " world", None).expect("b"));
    step(&|| {
        doc.format_text("body", 0, 5, json!({"bold": true}))
            .expect("c")
    });
    step(&|| doc.delete_text("body", 2, 4).expect("d"));
    expected += 4;
    doc.stop_capturing();
    doc.insert_text("body", 0, "😀", None).expect("e");
    expected += 1;
    assert!(doc.undo().expect("undo"));
    expected += 1;
    wait_for("deltas", || changes.0.lock().len() >= expected);
    let mut model: Vec<u16> = Vec::new();
    for c in changes.0.lock().iter() {
        assert!(c.local);
        for v in &c.changes {
            if let CollabValueChange::Text { delta, .. } = v {
                apply_text(&mut model, delta);
            }
        }
    }
    let text = doc.text("body").expect("text");
    assert_eq!(String::from_utf16(&model).expect("utf16"), text);
    assert_eq!(text, "heworld");
    let content = doc.text_content("body").expect("content");
    assert_eq!(
        content.first(),
        Some(&TextDelta::Insert {
            text: "he".into(),
            attributes: Some(r#"{"bold":true}"#.into())
        })
    );
}

#[test]
fn undo_reverts_only_local_edits() {
    let dir = tempfile::tempdir().expect("dir");
    let client = open_client(dir.path());
    let doc = client.open_collab("general", "notes").expect("open");
    doc.insert_text("body", 0, "mine ", None).expect("local");
    doc.stop_capturing();
    // Someone else's edit, as the server would relay it.
    let other = Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    });
    let remote = {
        let t = other.get_or_insert_text("body");
        let mut txn = other.transact_mut();
        t.insert(&mut txn, 0, "theirs");
        txn.encode_update_v1()
    };
    let shared = &doc.shared;
    {
        let mut inner = shared.inner.lock();
        assert!(shared.apply_remote(&mut inner, remote));
    }
    let both = doc.text("body").expect("text");
    assert!(both == "theirsmine " || both == "mine theirs", "{both}");
    assert!(doc.undo().expect("undo"));
    assert_eq!(doc.text("body").expect("text"), "theirs");
    assert!(!doc.undo().expect("nothing more of mine"));
    assert!(doc.redo().expect("redo"));
    assert_eq!(doc.text("body").expect("text"), both);
}

#[test]
fn a_large_log_is_compacted_into_the_snapshot() {
    let dir = tempfile::tempdir().expect("dir");
    let client = open_client(dir.path());
    let doc = client.open_collab("general", "notes").expect("open");
    let line = "the quick brown fox jumps over the lazy dog\n";
    for i in 0..2_000u32 {
        doc.insert_text("body", doc.text_len("body").expect("len"), line, None)
            .expect("type");
        if i % 100 == 0 {
            doc.flush().expect("flush");
        }
    }
    doc.flush().expect("flush");
    let (snapshot, log) = doc.stored_size().expect("sizes");
    assert!(snapshot > 0, "compacted at least once");
    assert!(log <= COMPACT_FLOOR.max(snapshot), "log {log} bounded");
    let text = doc.text("body").expect("text");
    drop(doc);
    drop(client);
    let client = open_client(dir.path());
    let doc = client.open_collab("general", "notes").expect("reopen");
    assert_eq!(doc.text("body").expect("text"), text);
}

#[test]
fn many_keystroke_updates_merge_into_one_equal_to_their_sum() {
    // Enough per-keystroke updates (inserts, backspaces, a format) for several levels of the
    // merge tree; the merged update must carry exactly what applying them one by one does.
    let source = Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    });
    let text = source.get_or_insert_text("body");
    let mut updates = Vec::new();
    for i in 0..700u32 {
        let mut txn = source.transact_mut();
        let len = text.len(&txn);
        if i % 7 == 6 {
            text.remove_range(&mut txn, len - 2, 1);
        } else if i % 50 == 49 {
            let bold = yrs::types::Attrs::from([("bold".into(), yrs::Any::Bool(true))]);
            text.format(&mut txn, 0, 3, bold);
        } else {
            let at = if i % 3 == 0 { len / 2 } else { len };
            text.insert(&mut txn, at, &char::from(b'a' + (i % 26) as u8).to_string());
        }
        updates.push(txn.encode_update_v1());
    }
    let merged = crate::collab::merge(&updates).expect("merge");
    let content = |d: &Doc| {
        let t = d.get_or_insert_text("body");
        let txn = d.transact();
        let runs = t.diff(&txn, yrs::types::text::YChange::identity);
        (format!("{runs:?}"), txn.state_vector())
    };
    let expected = content(&source);
    assert_eq!(content(&replay(&updates)), expected, "one by one");
    assert_eq!(content(&replay(&[merged])), expected, "merged");
}

#[test]
fn the_snapshot_holds_no_deleted_content_yet_undo_brings_it_back() {
    let dir = tempfile::tempdir().expect("dir");
    let client = open_client(dir.path());
    let doc = client.open_collab("general", "notes").expect("open");
    let secret = "QZXJ-deleted-words-QZXJ";
    doc.insert_text("body", 0, "kept ", None).expect("type");
    doc.insert_text("body", 5, secret, None).expect("type");
    doc.stop_capturing();
    doc.delete_text("body", 5, secret.len() as u32)
        .expect("delete");
    doc.compact().expect("compact");
    let snapshot: Vec<u8> = rusqlite::Connection::open(dir.path().join("alice.db"))
        .expect("db")
        .query_row(
            "SELECT snapshot FROM collab_docs WHERE room = 'general' AND doc = 'notes'",
            [],
            |r| r.get(0),
        )
        .expect("snapshot");
    assert!(!snapshot.is_empty(), "compacted");
    assert!(
        !snapshot
            .windows(secret.len())
            .any(|w| w == secret.as_bytes()),
        "deleted content is collected in the snapshot"
    );
    // The live document still has what undo needs.
    assert!(doc.undo().expect("undo"));
    assert_eq!(doc.text("body").expect("text"), format!("kept {secret}"));
    assert!(doc.redo().expect("redo"));
    doc.flush().expect("flush");
    drop(doc);
    drop(client);
    let client = open_client(dir.path());
    let doc = client.open_collab("general", "notes").expect("reopen");
    assert_eq!(doc.text("body").expect("text"), "kept ");
}

#[test]
fn a_step_of_typing_without_a_pause_undoes_in_pieces() {
    let dir = tempfile::tempdir().expect("dir");
    let client = open_client(dir.path());
    let doc = client.open_collab("general", "notes").expect("open");
    let typed = 3 * crate::collab::MAX_STEP_EDITS;
    for i in 0..typed {
        doc.insert_text("body", i as u32, "x", None).expect("type");
    }
    assert!(doc.undo().expect("undo"));
    let left = doc.text("body").expect("text").len();
    let undone = typed - left;
    assert!(
        undone > 0 && undone <= crate::collab::MAX_STEP_EDITS,
        "one undo took back {undone} of {typed} keystrokes"
    );
}

#[test]
fn old_undo_steps_are_dropped_and_what_they_deleted_is_collected() {
    use crate::collab::MAX_UNDO_STEPS;
    let dir = tempfile::tempdir().expect("dir");
    let client = open_client(dir.path());
    let doc = client.open_collab("general", "notes").expect("open");
    let secret = "QZXJ-deleted-long-ago-QZXJ";
    doc.insert_text("body", 0, secret, None).expect("type");
    doc.stop_capturing();
    doc.delete_text("body", 0, secret.len() as u32)
        .expect("delete");
    doc.stop_capturing();
    let held = |doc: &crate::CollabDoc| {
        let state = doc
            .shared
            .inner
            .lock()
            .doc
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        state.windows(secret.len()).any(|w| w == secret.as_bytes())
    };
    assert!(held(&doc), "kept for undo while its step is in the history");
    // Enough one-character steps to push the deletion's step out of the history.
    let steps = 2 * MAX_UNDO_STEPS;
    for i in 0..steps {
        doc.insert_text("body", i as u32, "y", None).expect("type");
        doc.stop_capturing();
    }
    assert!(
        !held(&doc),
        "the deleted text is collected once its step is dropped"
    );
    let mut undone = 0;
    while doc.undo().expect("undo") {
        undone += 1;
    }
    assert!(
        (MAX_UNDO_STEPS..=2 * MAX_UNDO_STEPS).contains(&undone),
        "{undone} steps undone"
    );
    assert_eq!(
        doc.text("body").expect("text"),
        "y".repeat(steps - undone),
        "the newest steps undo exactly"
    );
    // Redo brings them all back, and the document is stored as edited.
    while doc.redo().expect("redo") {}
    assert_eq!(doc.text("body").expect("text"), "y".repeat(steps));
    doc.flush().expect("flush");
    drop(doc);
    drop(client);
    let client = open_client(dir.path());
    let doc = client.open_collab("general", "notes").expect("reopen");
    assert_eq!(doc.text("body").expect("text"), "y".repeat(steps));
}
