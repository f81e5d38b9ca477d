//! Collaborative documents end to end (protocol §12): real roam-core clients editing one text
//! through the real server, with offline periods and a server restart, ending identical to each
//! other and to what a newcomer gets from the server; and the `friendsforever` concurrent
//! editing trace replayed by two clients through the server.

use std::collections::HashMap;
use std::io::Read;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roam_core::{Client, CollabDoc, ConnectionState, RoomKind};
use roam_tests::{fast_config, open_client, wait_until, Backend};

const ROOM: &str = "notes";
const DOC: &str = "draft";
const TEXT: &str = "body";

/// `users` connected to `backend`, the first one having created the public room [`ROOM`] and
/// the others joined it; each with the document [`DOC`] open.
async fn editors(
    backend: &Backend,
    dir: &std::path::Path,
    users: &[&str],
) -> Vec<(Client, CollabDoc)> {
    let mut out = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let c = open_client(
            fast_config(&dir.join(format!("{user}.db")), &backend.url(), user),
            backend.token(user),
        );
        c.start().await.expect("start");
        if i == 0 {
            c.create_room(ROOM.into(), RoomKind::Public, "Notes".into(), None)
                .expect("create");
        } else {
            c.join_room(ROOM.into()).expect("join");
        }
        wait_until("the room is created or joined", || {
            c.metrics().outbox_depth == 0
        })
        .await;
        let doc = c.open_collab(ROOM, DOC).expect("open the document");
        out.push((c, doc));
    }
    out
}

/// Waits until every editor has stored and sent its edits and all hold the same text; returns it.
async fn converged(eds: &[(Client, CollabDoc)]) -> String {
    for (_, d) in eds {
        d.flush().expect("flush");
    }
    wait_until("every edit is sent and all texts are equal", || {
        let texts: Vec<String> = eds
            .iter()
            .map(|(_, d)| d.text(TEXT).expect("text"))
            .collect();
        eds.iter().all(|(c, _)| c.metrics().outbox_depth == 0)
            && texts.windows(2).all(|w| w[0] == w[1])
    })
    .await;
    eds[0].1.text(TEXT).expect("text")
}

/// Waits until every editor has sent its edits and holds `want`; on timeout, fails showing
/// where the texts differ from it.
async fn settled(eds: &[(Client, CollabDoc)], want: &str, what: &str) {
    for (_, d) in eds {
        d.flush().expect("flush");
    }
    let deadline = tokio::time::Instant::now() + roam_tests::WAIT;
    loop {
        let texts: Vec<String> = eds
            .iter()
            .map(|(_, d)| d.text(TEXT).expect("text"))
            .collect();
        if texts.iter().all(|t| t == want) && eds.iter().all(|(c, _)| c.metrics().outbox_depth == 0)
        {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            for (i, t) in texts.iter().enumerate() {
                let at = t
                    .chars()
                    .zip(want.chars())
                    .take_while(|(a, b)| a == b)
                    .count();
                let near = |s: &str| {
                    s.chars()
                        .skip(at.saturating_sub(20))
                        .take(40)
                        .collect::<String>()
                };
                assert_eq!(
                    near(t),
                    near(want),
                    "{what}: client {i}'s text differs from the expected at char {at}"
                );
            }
            panic!("{what}: the clients did not settle (outboxes not empty)");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// One random edit at a random place of the current text: an insert of 1–4 characters (some
/// outside the BMP) or a delete of 1–3. A remote update may land between reading the length and
/// editing; an edit refused for an index that went out of range then changes nothing and counts
/// as not made.
fn random_edit(rng: &mut StdRng, doc: &CollabDoc, who: usize) -> bool {
    let len = doc.text_len(TEXT).expect("len");
    if len > 0 && rng.random_bool(0.3) {
        let at = rng.random_range(0..len);
        let n = rng.random_range(1..=3).min(len - at);
        return doc.delete_text(TEXT, at, n).is_ok();
    }
    let alphabet = ["a", "b", "c", "é", "\u{1F600}", " "];
    let mut s = format!("{who}");
    for _ in 0..rng.random_range(0..4) {
        s.push_str(alphabet[rng.random_range(0..alphabet.len())]);
    }
    // Never split a surrogate pair: insert at a character boundary of the text as it is.
    let text = doc.text(TEXT).expect("text");
    let boundaries: Vec<u32> = std::iter::once(0)
        .chain(text.chars().scan(0u32, |acc, c| {
            *acc += c.len_utf16() as u32;
            Some(*acc)
        }))
        .collect();
    let at = boundaries[rng.random_range(0..boundaries.len())];
    doc.insert_text(TEXT, at, &s, None).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_converge_through_offline_periods_and_a_restart() {
    let mut backend = Backend::up().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let eds = editors(&backend, dir.path(), &["ana", "ben", "cleo"]).await;
    eds[0]
        .1
        .insert_text(TEXT, 0, "start ", None)
        .expect("insert");
    wait_until("everyone has the start", || {
        eds.iter()
            .all(|(_, d)| d.text(TEXT).expect("text") == "start ")
    })
    .await;

    let mut rng = StdRng::seed_from_u64(22);
    let mut made = 0usize;
    for round in 0..8 {
        // Some clients go offline for the round; everyone edits concurrently.
        let offline: Vec<bool> = (0..eds.len()).map(|_| rng.random_bool(0.5)).collect();
        for ((c, _), off) in eds.iter().zip(&offline) {
            c.set_online(!off);
        }
        for step in 0..60 {
            let who = step % eds.len();
            if random_edit(&mut rng, &eds[who].1, who) {
                made += 1;
            }
            if step % 10 == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        if round == 3 {
            // Restart the server on the same data while some clients hold offline edits.
            backend.stop().await;
            for (_, d) in &eds {
                for _ in 0..5 {
                    if random_edit(&mut rng, d, 9) {
                        made += 1;
                    }
                }
            }
            backend.start().await;
            for (c, _) in &eds {
                c.network_available();
            }
        }
        for (c, _) in &eds {
            c.set_online(true);
        }
        if round % 2 == 1 {
            converged(&eds).await;
        }
    }
    assert!(made > 300, "most random edits were made: {made}");
    let text = converged(&eds).await;
    assert!(
        text.chars().count() > 100,
        "the text kept content: {text:?}"
    );

    // A newcomer gets exactly that from the server.
    let dana = open_client(
        fast_config(&dir.path().join("dana.db"), &backend.url(), "dana"),
        backend.token("dana"),
    );
    dana.start().await.expect("start");
    let fresh = dana.open_collab(ROOM, DOC).expect("open");
    wait_until("the newcomer has the text", || {
        fresh.text(TEXT).expect("text") == text
    })
    .await;
    for (c, _) in &eds {
        c.shutdown().await;
    }
    dana.shutdown().await;
    backend.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The friendsforever trace

/// How many transactions of the trace the test replays (of 26,078). Each round of the replay
/// (both clients offline, then synced) costs a reconnect, and a debug build needs about 0.1 s a
/// round; the whole trace takes 883 rounds. `ROAM_TRACE_TXNS` overrides it (e.g. 26078 in a
/// release build: the result is then compared with the trace's `endContent` too).
const TRACE_TXNS: usize = 5000;

/// One transaction of the trace: its agent (0 or 1) and its one patch.
struct Txn {
    agent: usize,
    parents: Vec<usize>,
    pos: usize,
    del: usize,
    ins: String,
}

struct Trace {
    txns: Vec<Txn>,
    end: String,
}

fn load_trace() -> Trace {
    let path = "/work/shared/data/editing-traces/friendsforever.json.gz";
    let path = std::env::var("ROAM_FRIENDSFOREVER").unwrap_or_else(|_| path.to_owned());
    let mut json = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).expect("open the trace"))
        .read_to_string(&mut json)
        .expect("read the trace");
    let v: serde_json::Value = serde_json::from_str(&json).expect("trace JSON");
    let txns = v["txns"]
        .as_array()
        .expect("txns")
        .iter()
        .map(|t| {
            let patches = t["patches"].as_array().expect("patches");
            assert_eq!(patches.len(), 1, "one patch per transaction");
            let p = patches[0].as_array().expect("patch");
            Txn {
                agent: usize::try_from(t["agent"].as_u64().expect("agent")).expect("agent"),
                parents: t["parents"]
                    .as_array()
                    .expect("parents")
                    .iter()
                    .map(|p| usize::try_from(p.as_u64().expect("parent")).expect("parent"))
                    .collect(),
                pos: usize::try_from(p[0].as_u64().expect("pos")).expect("pos"),
                del: usize::try_from(p[1].as_u64().expect("del")).expect("del"),
                ins: p[2].as_str().expect("ins").to_owned(),
            }
        })
        .collect();
    Trace {
        txns,
        end: v["endContent"].as_str().expect("endContent").to_owned(),
    }
}

/// A version of the trace: how many transactions of each agent it holds (each agent's
/// transactions form a chain, so a prefix count says which).
type Version = [usize; 2];

/// A transaction as (agent, its index among that agent's).
type TxnId = (usize, usize);

fn holds(v: Version, (agent, k): TxnId) -> bool {
    k < v[agent]
}

/// One character ever inserted: who inserted and who deleted it.
#[derive(Clone, Copy)]
struct Char {
    ch: char,
    ins: TxnId,
    del: Option<TxnId>,
}

impl Char {
    fn visible(&self, v: Version) -> bool {
        holds(v, self.ins) && !self.del.is_some_and(|d| holds(v, d))
    }
}

/// What one transaction does, in terms of [`Model`] characters.
enum Op {
    Insert(usize),
    Delete(usize),
}

/// The trace's meaning independent of any CRDT: every character ever inserted in one order
/// (the trace never has two concurrent inserts at the same place, so the order is unique), each
/// transaction as an insert or delete of one of them, and the version each one starts from.
struct Model {
    chars: Vec<Char>,
    ops: Vec<(TxnId, Version, Op)>,
}

impl Model {
    fn build(txns: &[Txn]) -> Model {
        let mut order: Vec<usize> = Vec::new(); // indexes into `chars`, in document order
        let mut chars: Vec<Char> = Vec::new();
        let mut clocks: Vec<Version> = Vec::with_capacity(txns.len());
        let mut counts = [0usize; 2];
        let mut ops = Vec::with_capacity(txns.len());
        for t in txns {
            let mut v = [0usize; 2];
            for &p in &t.parents {
                v = [v[0].max(clocks[p][0]), v[1].max(clocks[p][1])];
            }
            assert_eq!(
                v[t.agent], counts[t.agent],
                "an agent's transactions form a chain"
            );
            let id = (t.agent, counts[t.agent]);
            counts[t.agent] += 1;
            // The place of the `pos`-th character visible at `v` in `order`.
            let nth_visible = |n: usize| -> usize {
                let mut seen = 0;
                for (i, &c) in order.iter().enumerate() {
                    if chars[c].visible(v) {
                        if seen == n {
                            return i;
                        }
                        seen += 1;
                    }
                }
                order.len()
            };
            let op = match (t.del, t.ins.chars().count()) {
                (0, 1) => {
                    let at = if t.pos == 0 {
                        0
                    } else {
                        nth_visible(t.pos - 1) + 1
                    };
                    chars.push(Char {
                        ch: t.ins.chars().next().expect("one char"),
                        ins: id,
                        del: None,
                    });
                    order.insert(at, chars.len() - 1);
                    Op::Insert(chars.len() - 1)
                }
                (1, 0) => {
                    let c = order[nth_visible(t.pos)];
                    chars[c].del = Some(id);
                    Op::Delete(c)
                }
                other => panic!("unexpected patch shape {other:?}"),
            };
            ops.push((id, v, op));
            let mut mine = v;
            mine[t.agent] = counts[t.agent];
            clocks.push(mine);
        }
        let ordered: Vec<Char> = order.iter().map(|&c| chars[c]).collect();
        let rank: HashMap<usize, usize> = order.iter().enumerate().map(|(r, &c)| (c, r)).collect();
        let ops = ops
            .into_iter()
            .map(|(id, v, op)| {
                let op = match op {
                    Op::Insert(c) => Op::Insert(rank[&c]),
                    Op::Delete(c) => Op::Delete(rank[&c]),
                };
                (id, v, op)
            })
            .collect();
        Model {
            chars: ordered,
            ops,
        }
    }

    /// The text at version `v`.
    fn text(&self, v: Version) -> String {
        self.chars
            .iter()
            .filter(|c| c.visible(v))
            .map(|c| c.ch)
            .collect()
    }

    /// How many UTF-16 units visible at `v` come before the character of rank `r`.
    fn index(&self, v: Version, r: usize) -> u32 {
        self.chars[..r]
            .iter()
            .filter(|c| c.visible(v))
            .map(|c| c.ch.len_utf16() as u32)
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friendsforever_replayed_by_two_clients_ends_identical() {
    let trace = load_trace();
    let n = std::env::var("ROAM_TRACE_TXNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(TRACE_TXNS)
        .min(trace.txns.len());
    let model = Model::build(&trace.txns[..n]);
    let mut all = [0usize; 2];
    for (id, _, _) in &model.ops {
        all[id.0] = all[id.0].max(id.1 + 1);
    }
    let expected = model.text(all);
    if n == trace.txns.len() {
        assert_eq!(expected, trace.end, "the model replays the trace");
    }

    let backend = Backend::up().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let eds = editors(&backend, dir.path(), &["agent0", "agent1"]).await;
    let mine: [Vec<usize>; 2] = [0, 1].map(|g| {
        (0..model.ops.len())
            .filter(|&i| model.ops[i].0 .0 == g)
            .collect()
    });

    // Rounds: both clients offline, each applies the transactions of its agent whose
    // dependencies it holds (its own earlier ones, and the other agent's it had at the start
    // of the round) — concurrently with the other's; then both online until they hold the same
    // text, which must be the trace's at what they applied.
    let mut done = [0usize; 2];
    let mut rounds = 0;
    while done[0] < mine[0].len() || done[1] < mine[1].len() {
        rounds += 1;
        for (c, _) in &eds {
            c.set_online(false);
        }
        wait_until("both clients are offline", || {
            eds.iter()
                .all(|(c, _)| c.connection_state() == ConnectionState::Offline)
        })
        .await;
        let start = [done[0], done[1]];
        let mut progressed = false;
        for g in 0..2 {
            let other = 1 - g;
            let doc = &eds[g].1;
            while let Some(&i) = mine[g].get(done[g]) {
                let (_, parents, op) = &model.ops[i];
                if parents[other] > start[other] {
                    break; // needs the other agent's edits of this round
                }
                let mut local = [0usize; 2];
                local[g] = done[g];
                local[other] = start[other];
                match *op {
                    Op::Insert(r) => {
                        let at = model.index(local, r);
                        let ch = model.chars[r].ch.to_string();
                        doc.insert_text(TEXT, at, &ch, None).expect("insert");
                    }
                    Op::Delete(r) => {
                        // Already gone when the other agent deleted it concurrently.
                        if model.chars[r].visible(local) {
                            let at = model.index(local, r);
                            let len = model.chars[r].ch.len_utf16() as u32;
                            doc.delete_text(TEXT, at, len).expect("delete");
                        }
                    }
                }
                done[g] += 1;
                progressed = true;
            }
        }
        assert!(progressed, "round {rounds} applied nothing at {done:?}");
        for (c, _) in &eds {
            c.set_online(true);
        }
        settled(
            &eds,
            &model.text(done),
            &format!("round {rounds} at {done:?}"),
        )
        .await;
    }
    settled(&eds, &expected, "the end").await;
    assert_eq!(eds[0].1.text(TEXT).expect("text"), expected);
    for (c, _) in &eds {
        c.shutdown().await;
    }
}
