//! The Rust peer of the three-language convergence check (`scripts/test-converge.sh`, which
//! runs it next to the Kotlin `CollabConvergeTest` and the Swift `CollabConvergeTests`).
//!
//! As a peer (`converge_peer`): joins the collaborative document `converge` of the room
//! `$ROAM_CONVERGE_ROOM` (the script made the room and its members over REST), marks itself
//! ready in the map `peers`, writes `$ROAM_CONVERGE_OUT/ready-rust`, waits for the other two,
//! makes `$ROAM_CONVERGE_EDITS` random inserts and deletes in the text `body` (going offline
//! now and then), sets `done_rust`, waits until every peer is done and its outbox is empty,
//! then until the text has been still for a moment, and writes it to `$ROAM_CONVERGE_OUT/rust.txt`.
//!
//! As the server's copy (`converge_peer --read`): a newcomer with an empty store opens the
//! document, waits for the three done keys and a still text, and writes `server.txt`.
//!
//! Environment: `ROAM_CONVERGE_URL`, `ROAM_CONVERGE_ROOM`, `ROAM_CONVERGE_OUT`,
//! `ROAM_CONVERGE_USER_<PEER>` and `ROAM_CONVERGE_TOKEN_<PEER>` (PEER: RUST, KOTLIN, SWIFT, or
//! SERVER for `--read`), `ROAM_CONVERGE_EDITS` (default 300), `ROAM_CONVERGE_SEED` (default 1). Exits non-zero on any failure or timeout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roam_core::{Client, ClientConfig, CollabDoc, StaticToken};

const DOC: &str = "converge";
const TEXT: &str = "body";
const PEERS: &str = "peers";
const LANGS: [&str; 3] = ["rust", "kotlin", "swift"];
/// Upper bound of each wait of a peer.
const WAIT: Duration = Duration::from_secs(120);
/// How long the text must stay the same before it is written out.
const QUIET: Duration = Duration::from_secs(1);

type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

fn env(name: &str) -> Fallible<String> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

async fn wait_for(what: &str, mut f: impl FnMut() -> Fallible<bool>) -> Fallible<()> {
    let deadline = Instant::now() + WAIT;
    while !f()? {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting until {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Waits until the text has not changed for [`QUIET`], and returns it.
async fn still_text(doc: &CollabDoc) -> Fallible<String> {
    let deadline = Instant::now() + WAIT;
    let mut text = doc.text(TEXT)?;
    let mut since = Instant::now();
    while since.elapsed() < QUIET {
        if Instant::now() > deadline {
            return Err("the text never stood still".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = doc.text(TEXT)?;
        if now != text {
            text = now;
            since = Instant::now();
        }
    }
    Ok(text)
}

fn all_keys(doc: &CollabDoc, prefix: &str) -> Fallible<bool> {
    let m = doc.map(PEERS)?;
    Ok(LANGS
        .iter()
        .all(|l| m.contains_key(&format!("{prefix}_{l}"))))
}

/// One random insert (1–3 letters, BMP only so no index splits a surrogate pair) or delete
/// (1–3 units) at a random place. A remote update may shorten the text between reading its
/// length and editing: such an edit is refused, changes nothing and is not counted.
fn random_edit(rng: &mut StdRng, doc: &CollabDoc) -> bool {
    let Ok(len) = doc.text_len(TEXT) else {
        return false;
    };
    if len > 10 && rng.random_bool(0.35) {
        let at = rng.random_range(0..len);
        let n = rng.random_range(1..=3).min(len - at);
        return doc.delete_text(TEXT, at, n).is_ok();
    }
    let letters = ['r', 'u', 's', 't', 'é', ' '];
    let s: String = (0..rng.random_range(1..=3))
        .map(|_| letters[rng.random_range(0..letters.len())])
        .collect();
    doc.insert_text(TEXT, rng.random_range(0..=len), &s, None)
        .is_ok()
}

async fn run() -> Fallible<()> {
    let read_only = std::env::args().any(|a| a == "--read");
    let url = env("ROAM_CONVERGE_URL")?;
    let room = env("ROAM_CONVERGE_ROOM")?;
    let out = PathBuf::from(env("ROAM_CONVERGE_OUT")?);
    let edits: usize = std::env::var("ROAM_CONVERGE_EDITS")
        .unwrap_or_else(|_| "300".into())
        .parse()?;
    let seed: u64 = std::env::var("ROAM_CONVERGE_SEED")
        .unwrap_or_else(|_| "1".into())
        .parse()?;
    let name = if read_only { "server" } else { "rust" };
    let token = env(&format!("ROAM_CONVERGE_TOKEN_{}", name.to_uppercase()))?;
    let user = env(&format!("ROAM_CONVERGE_USER_{}", name.to_uppercase()))?;
    let db = tempfile::tempdir()?;
    let mut config = ClientConfig::new(db.path().join("peer.db"), &url, &user);
    config.reconnect.initial_delay = Duration::from_millis(50);
    config.reconnect.max_delay = Duration::from_millis(250);
    let client = Client::open(config, Arc::new(StaticToken(token)))?;
    client.start().await?;
    let doc = client.open_collab(&room, DOC)?;

    if !read_only {
        doc.map_set(
            PEERS,
            &format!("ready_{name}"),
            serde_json::Value::Bool(true),
        )?;
        std::fs::write(out.join(format!("ready-{name}")), b"")?;
        wait_for("every peer is ready", || all_keys(&doc, "ready")).await?;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut made = 0;
        for i in 0..edits {
            if i % 50 == 25 {
                client.set_online(false);
            } else if i % 50 == 40 {
                client.set_online(true);
            }
            if random_edit(&mut rng, &doc) {
                made += 1;
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        client.set_online(true);
        doc.map_set(
            PEERS,
            &format!("done_{name}"),
            serde_json::Value::Bool(true),
        )?;
        doc.flush()?;
        eprintln!("converge_peer: {made} of {edits} edits made");
    }
    wait_for("every peer is done", || all_keys(&doc, "done")).await?;
    wait_for("the outbox is empty", || {
        Ok(client.metrics().outbox_depth == 0)
    })
    .await?;
    let text = still_text(&doc).await?;
    std::fs::write(out.join(format!("{name}.txt")), text)?;
    client.shutdown().await;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("converge_peer: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
