//! Reads bounded in bytes, not only in items: every listing that can carry
//! large text stops at about 1 MiB and continues with its cursor, so a page of large documents
//! or messages never grows with the page size. The memory of parallel readers is measured in
//! `server/tests/memory.rs`, a process of its own.

use serde_json::{json, Value};

use crate::fixtures::{Api, TestServer};

/// The store's page budget (`roam_server::store::PAGE_BYTES`).
const BUDGET: usize = roam_server::store::PAGE_BYTES;
/// Close to the largest document content (512 KiB).
const DOC_BYTES: usize = 500 * 1024;

fn text(tag: usize, len: usize) -> String {
    let unit = format!("{tag:04} lorem ipsum dolor sit amet ");
    unit.repeat(len / unit.len() + 1)[..len].to_owned()
}

/// `versions` versions of document `doc`, each about `DOC_BYTES`.
async fn put_versions(api: &Api, room: &str, doc: &str, versions: usize) {
    for v in 0..versions {
        let r = api
            .send(
                reqwest::Method::PUT,
                &format!("/v1/rooms/{room}/documents/{doc}"),
                Some(json!({"base_version": v, "content": text(v, DOC_BYTES)})),
            )
            .await;
        assert_eq!(r.status, 200, "put v{v}: {:?}", r.body);
    }
}

/// Reads a listing page by page; asserts every page is within the budget (or a single item)
/// and returns the pages' item counts and all items.
async fn pages(
    api: &Api,
    path: &str,
    cursor_param: &str,
    first: Option<&str>,
) -> (Vec<usize>, Vec<Value>) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut counts = Vec::new();
    let mut all = Vec::new();
    let mut next: Option<String> = first.map(str::to_owned);
    loop {
        let url = match &next {
            Some(c) => format!("{path}{sep}{cursor_param}={c}"),
            None => path.to_owned(),
        };
        let r = api.get(&url).await;
        assert_eq!(r.status, 200, "{url}: {:?}", r.body);
        let items = r.body["items"].as_array().expect("items").clone();
        let size = r.body.to_string().len();
        assert!(
            items.len() <= 1 || size <= BUDGET + 64 * 1024,
            "{url}: a page of {} items takes {size} bytes",
            items.len()
        );
        counts.push(items.len());
        all.extend(items);
        match r.body["next_cursor"].as_str() {
            Some(c) => next = Some(c.to_owned()),
            None => return (counts, all),
        }
        assert!(counts.len() < 1_000, "{path}: the cursor never ends");
    }
}

#[tokio::test]
async fn pages_of_large_items_stop_at_the_byte_budget_and_continue() {
    let t = TestServer::start().await;
    let alice = t.as_user("alice");
    alice.create_room("big", "public").await;
    put_versions(&alice, "big", "plan", 6).await;
    for d in 0..4 {
        put_versions(&alice, "big", &format!("doc-{d}"), 1).await;
    }
    let bodies: Vec<String> = (0..40).map(|i| text(i, 60 * 1024)).collect();
    let r = alice
        .post("/v1/rooms/big/messages/import", json!({"bodies": bodies}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // Events: 2 (create, join) + 10 document versions + 40 messages, far more than 1 MiB.
    let head = alice.get("/v1/rooms/big").await.body["head_seq"]
        .as_u64()
        .expect("head");
    let (counts, events) = pages(
        &alice,
        "/v1/rooms/big/events?limit=1000",
        "after",
        Some("0"),
    )
    .await;
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        (1..=head).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert!(counts.len() >= 8, "pages: {counts:?}");

    // Messages, newest first and oldest first.
    let (counts, msgs) = pages(&alice, "/v1/rooms/big/messages?limit=200", "before", None).await;
    assert_eq!(msgs.len(), 40);
    assert!(counts.len() >= 3, "pages: {counts:?}");
    let (_, msgs) = pages(
        &alice,
        "/v1/rooms/big/messages?limit=200",
        "after",
        Some("0"),
    )
    .await;
    assert_eq!(msgs.len(), 40);

    // The document listing and a document's history.
    let (counts, docs) = pages(&alice, "/v1/rooms/big/documents?limit=200", "cursor", None).await;
    let names: Vec<&str> = docs.iter().filter_map(|d| d["doc"].as_str()).collect();
    assert_eq!(names, ["doc-0", "doc-1", "doc-2", "doc-3", "plan"]);
    assert!(counts.len() >= 3, "pages: {counts:?}");
    let (counts, versions) = pages(
        &alice,
        "/v1/rooms/big/documents/plan/history?limit=200",
        "before",
        None,
    )
    .await;
    let v: Vec<u64> = versions
        .iter()
        .filter_map(|d| d["version"].as_u64())
        .collect();
    assert_eq!(v, [6, 5, 4, 3, 2, 1]);
    assert!(counts.len() >= 3, "pages: {counts:?}");
}
