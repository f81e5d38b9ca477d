//! Peak memory of parallel reads, in a test binary of its own: the peak
//! resident set is a figure of the whole process, so no other test may run beside this one.

use serde_json::{json, Value};

const SECRET: &str = "test-secret-test-secret-test-secret-0123";
/// Close to the largest document content (512 KiB).
const DOC_BYTES: usize = 500 * 1024;

/// The peak resident set of this process, in bytes (Linux), if known.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = http
        .request(method, url)
        .bearer_auth(token)
        .header("Idempotency-Key", uuid::Uuid::now_v7().to_string());
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn parallel_reads_of_a_room_of_large_documents_keep_memory_bounded() {
    if peak_rss().is_none() {
        eprintln!("no /proc/self/status here: memory not measured");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = roam_server::config::Config::for_data_dir(dir.path());
    config.jwt_secret = Some(SECRET.into());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .expect("bind");
    let server = roam_server::Server::start(config, listener)
        .await
        .expect("start");
    let base = format!("http://{}", server.local_addr());
    let token = server.token_for("alice").expect("token");
    let http = reqwest::Client::new();
    let (s, _) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/v1/rooms"),
        &token,
        Some(json!({"room": "heavy", "kind": "public"})),
    )
    .await;
    assert_eq!(s, 200);
    // 24 versions of about 500 KiB: about 12 MB of events.
    for v in 0..24u64 {
        let content = format!("{v:04} lorem ipsum ").repeat(DOC_BYTES / 18);
        let (s, body) = call(
            &http,
            reqwest::Method::PUT,
            format!("{base}/v1/rooms/heavy/documents/big"),
            &token,
            Some(json!({"base_version": v, "content": content})),
        )
        .await;
        assert_eq!(s, 200, "{body:?}");
    }
    let before = peak_rss().unwrap_or(0);

    // Eight readers ask for everything at once (1,000 events a page).
    let reads = (0..8).map(|_| {
        call(
            &http,
            reqwest::Method::GET,
            format!("{base}/v1/rooms/heavy/events?after=0&limit=1000"),
            &token,
            None,
        )
    });
    let answers = futures_util::future::join_all(reads).await;
    let grown = peak_rss().unwrap_or(before).saturating_sub(before);
    // Unbounded, each read holds the whole log several times over (rows, events, JSON):
    // hundreds of MB. Bounded, each holds about one page.
    assert!(
        grown < 96 * 1024 * 1024,
        "peak RSS grew by {} MiB during the reads",
        grown / (1024 * 1024)
    );
    for (s, body) in &answers {
        assert_eq!(*s, 200, "{body:?}");
        assert!(body["next_cursor"].is_string(), "a first page, not all");
    }
    server.shutdown().await;
}
