//! The four attachment targets of issue 19, measured in one run on this machine against a real
//! server on loopback, each printed with its figure and pass/fail:
//!
//! 1. a client stopped at 50 % of a 100 MiB upload and reopened on the same database re-sends
//!    at most one chunk (bytes the server stored in total vs the file's size);
//! 2. 1 GiB uploaded by one client and downloaded by another: the server's and the clients'
//!    RSS each grow by at most 32 MiB (peaks sampled from `/proc` every 50 ms);
//! 3. upload throughput of the client ≥ 70 % of one plain `curl` `PATCH` of a file of the same
//!    size to the same server, in the same run; sending an identical file again costs one
//!    request and no byte;
//! 4. 1,000 uploads (each with its message) while the server is SIGKILLed and restarted and a
//!    proxy drops every connection now and then: 0 messages or blobs lost or duplicated.
//!
//! The server runs as a child process (this program started again with `serve`), so its RSS
//! is its own and it can be SIGKILLed; the clients run in this process.
//!
//! ```text
//! cargo run --release -p roam-tests --example attachment_targets [-- --quick]
//! ```
//!
//! `--quick` shrinks every size and count by 16 (for a smoke run; its figures are not the
//! targets'). `--only 3` (or `--only 1,3`) runs only the targets named; "all targets met" then
//! speaks of those alone.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roam_core::{Client, SendState, UploadListener, UploadProgress, UploadState};
use roam_tests::{fast_config, open_client, Api, Fault, Proxy};
use serde_json::Value;

const SECRET: &str = "attachment-targets-secret-0123456789abcdefghij";
const MIB: u64 = 1 << 20;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("no runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if args.get(1).map(String::as_str) == Some("serve") {
        return rt.block_on(serve(&args[2], &args[3]));
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<u32> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| {
            list.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![1, 2, 3, 4]);
    let passed = rt.block_on(run(if quick { 16 } else { 1 }, &only));
    if passed {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// The server's configuration for every phase.
fn server_config(dir: &Path, addr: &str) -> roam_server::config::Config {
    let mut c = roam_server::config::Config::for_data_dir(dir);
    if let Ok(a) = addr.parse() {
        c.listen = a;
    }
    c.jwt_secret = Some(SECRET.into());
    c.max_upload_mb = 2048;
    // Large enough for the single-request baseline of target 3.
    c.max_upload_chunk_mb = 1024;
    c.rate_upload_mb_per_sec = 1_000_000;
    c.blob_quota_mb_per_user = 0;
    c
}

/// The child: a server on `addr` over `dir` until SIGTERM or SIGKILL.
async fn serve(dir: &str, addr: &str) -> std::process::ExitCode {
    let c = server_config(Path::new(dir), addr);
    let listener = match tokio::net::TcpListener::bind(c.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let server = match roam_server::Server::start(c, listener).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("listening {}", server.local_addr());
    let _ = std::io::stdout().flush();
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        term.recv().await;
    }
    server.shutdown().await;
    std::process::ExitCode::SUCCESS
}

/// The server child.
struct Node {
    dir: PathBuf,
    addr: String,
    child: Option<std::process::Child>,
}

impl Node {
    fn start(dir: &Path, addr: &str) -> Node {
        let mut n = Node {
            dir: dir.to_owned(),
            addr: addr.to_owned(),
            child: None,
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let exe = std::env::current_exe().expect("own path");
        for _ in 0..100 {
            let mut child = std::process::Command::new(&exe)
                .args(["serve", &self.dir.display().to_string(), &self.addr])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start the server");
            let mut line = String::new();
            let out = child.stdout.take().expect("stdout");
            let _ = std::io::BufReader::new(out).read_line(&mut line);
            if let Some(addr) = line.trim().strip_prefix("listening ") {
                self.addr = addr.to_owned();
                self.child = Some(child);
                return;
            }
            // The port of the node killed a moment ago may still be held.
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not start");
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn token(user: &str) -> String {
    let mut c = roam_server::config::Config::for_data_dir("/nonexistent");
    c.jwt_secret = Some(SECRET.into());
    roam_server::auth::Keys::from_config(&c)
        .expect("keys")
        .mint(user, 86_400)
        .expect("token")
}

fn api(url: &str, user: &str) -> Api {
    Api {
        base: url.to_owned(),
        token: token(user),
        http: reqwest::Client::new(),
    }
}

/// Resident set of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The highest RSS of `pid` seen every 50 ms until the returned flag is set.
fn sample_peak(pid: u32) -> (Arc<AtomicU64>, Arc<std::sync::atomic::AtomicBool>) {
    let peak = Arc::new(AtomicU64::new(rss(pid)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (p, s) = (peak.clone(), stop.clone());
    std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            p.fetch_max(rss(pid), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    (peak, stop)
}

/// A file of `len` bytes that no other file of the run has (`seed`).
fn write_file(path: &Path, len: u64, seed: u8) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create file"));
    let mut block = vec![0u8; MIB as usize];
    let mut left = len;
    let mut n: u64 = 0;
    while left > 0 {
        for (i, b) in block.iter_mut().enumerate() {
            *b = ((i as u64 + n * 7919) % 251) as u8 ^ seed;
        }
        block[..8].copy_from_slice(&n.to_le_bytes());
        let take = left.min(MIB) as usize;
        f.write_all(&block[..take]).expect("write file");
        left -= take as u64;
        n += 1;
    }
    f.flush().expect("flush file");
}

/// An upload progress report and when it came.
struct Reported {
    progress: UploadProgress,
    at: Instant,
}

struct Progress(tokio::sync::mpsc::UnboundedSender<Reported>);

impl UploadListener for Progress {
    fn on_upload_progress(&self, progress: UploadProgress) {
        let _ = self.0.send(Reported {
            progress,
            at: Instant::now(),
        });
    }
}

fn client(dir: &Path, url: &str, user: &str) -> Client {
    let mut c = fast_config(&dir.join(format!("{user}.db")), url, user);
    c.media.max_bytes = 4 << 30;
    c.media.max_file_bytes = 2 << 30;
    c.media.initial_backoff = Duration::from_millis(50);
    c.media.max_backoff = Duration::from_millis(500);
    open_client(c, token(user))
}

fn attach(c: &Client, room: &str, file: &Path) -> String {
    c.send_attachment(
        room.into(),
        file.display().to_string(),
        "application/octet-stream".into(),
        String::new(),
        Default::default(),
    )
    .expect("send_attachment")
    .local_id
}

async fn wait_sent(c: &Client, ids: &[String], limit: Duration) -> bool {
    wait_sent_every(c, ids, limit, Duration::from_millis(50)).await
}

/// [`wait_sent`], looking every `every` (the throughput target looks every 2 ms, so its figure
/// is not rounded up by the wait).
async fn wait_sent_every(c: &Client, ids: &[String], limit: Duration, every: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let all = ids.iter().all(|id| {
            c.message(id.clone())
                .ok()
                .flatten()
                .is_some_and(|m| m.send_state == SendState::Sent)
        });
        if all {
            return true;
        }
        tokio::time::sleep(every).await;
    }
    false
}

async fn metric(url: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .ok()
        .map(|r| r.text());
    let text = match text {
        Some(t) => t.await.unwrap_or_default(),
        None => String::new(),
    };
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

fn report(name: &str, figure: String, ok: bool) -> bool {
    println!(
        "{:<48} {:<64} {}",
        name,
        figure,
        if ok { "PASS" } else { "FAIL" }
    );
    ok
}

async fn run(shrink: u64, only: &[u32]) -> bool {
    let work = tempfile::tempdir().expect("tempdir");
    let files = work.path().join("files");
    std::fs::create_dir_all(&files).expect("files dir");
    let data = work.path().join("server");
    let mut node = Node::start(&data, "127.0.0.1:0");
    let url = node.url();
    println!(
        "server pid {} on {url}; commit {}",
        node.pid(),
        option_env!("ROAM_COMMIT").unwrap_or("(see git log)")
    );
    api(&url, "alice").create_room("targets", "public").await;
    api(&url, "bob").join("targets").await;
    let mut all = true;

    // 1. Stopped at 50 % of 100 MiB, reopened on the same database.
    if only.contains(&1) {
        let size = 100 * MIB / shrink;
        // The client's own chunk (what a resumed upload may send twice at most).
        let chunk = roam_core::MediaConfig::default().chunk_bytes as u64;
        let path = files.join("hundred.bin");
        write_file(&path, size, 1);
        let dir = work.path().join("c1");
        std::fs::create_dir_all(&dir).expect("dir");
        let before = metric(&url, "roam_blob_upload_bytes_total").await;
        let a = client(&dir, &url, "alice");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sub = a.subscribe_uploads(Arc::new(Progress(tx)));
        a.start().await.expect("start");
        let id = attach(&a, "targets", &path);
        while let Some(p) = rx.recv().await {
            if p.progress.sent_bytes >= size / 2 {
                break;
            }
        }
        drop(sub);
        a.shutdown().await;
        drop(a);
        let a = client(&dir, &url, "alice");
        a.start().await.expect("start");
        let sent = wait_sent(&a, std::slice::from_ref(&id), Duration::from_secs(600)).await;
        let stored = metric(&url, "roam_blob_upload_bytes_total").await - before;
        let again = stored as u64 - size.min(stored as u64);
        all &= report(
            "1. stopped at 50 % of 100 MiB: bytes re-sent",
            format!(
                "{again} B re-sent ({:.2} chunks of {} MiB); {} B stored for {size} B",
                again as f64 / chunk as f64,
                chunk / MIB,
                stored as u64
            ),
            sent && again <= chunk,
        );
        a.shutdown().await;
    }

    // 2. 1 GiB up and down: RSS growth of the server and of the clients.
    if only.contains(&2) {
        let size = 1024 * MIB / shrink;
        let path = files.join("gib.bin");
        write_file(&path, size, 2);
        let dir = work.path().join("c2");
        std::fs::create_dir_all(&dir).expect("dir");
        let a = client(&dir, &url, "alice");
        let b = client(&dir, &url, "bob");
        a.start().await.expect("start");
        b.start().await.expect("start");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (server_base, own_base) = (rss(node.pid()), rss(std::process::id()));
        let (server_peak, stop_s) = sample_peak(node.pid());
        let (own_peak, stop_o) = sample_peak(std::process::id());
        let id = attach(&a, "targets", &path);
        let sent = wait_sent(&a, std::slice::from_ref(&id), Duration::from_secs(1800)).await;
        let server_id = a
            .message(id.clone())
            .ok()
            .flatten()
            .and_then(|m| m.id)
            .unwrap_or_default();
        let mut got = false;
        let end = Instant::now() + Duration::from_secs(60);
        while !got && Instant::now() < end {
            got = b.message(server_id.clone()).ok().flatten().is_some();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let down = b.attachment_file(server_id.clone()).await;
        let same = down
            .as_ref()
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.len() == size);
        stop_s.store(true, Ordering::Relaxed);
        stop_o.store(true, Ordering::Relaxed);
        let sg = server_peak
            .load(Ordering::Relaxed)
            .saturating_sub(server_base);
        let og = own_peak.load(Ordering::Relaxed).saturating_sub(own_base);
        let mib = |b: u64| b as f64 / MIB as f64;
        all &= report(
            "2a. 1 GiB up and down: server RSS growth",
            format!("{:.1} MiB (from {:.1} MiB)", mib(sg), mib(server_base)),
            sent && same && sg <= 32 * MIB,
        );
        all &= report(
            "2b. 1 GiB up and down: clients' RSS growth",
            format!(
                "{:.1} MiB (from {:.1} MiB; both clients, one process)",
                mib(og),
                mib(own_base)
            ),
            sent && same && og <= 32 * MIB,
        );
        if let Err(e) = &down {
            println!("   download failed: {e}");
        }
        a.shutdown().await;
        b.shutdown().await;
        std::fs::remove_file(&path).ok();
    }

    // 3. Throughput against one curl PATCH of the same size; an identical file again.
    if only.contains(&3) {
        let size = 256 * MIB / shrink;
        let (ours, theirs) = (files.join("ours.bin"), files.join("curl.bin"));
        write_file(&ours, size, 3);
        write_file(&theirs, size, 4);
        // On disk before either is measured, so that neither upload shares the disk with the
        // writing back of these two files.
        for f in [&ours, &theirs] {
            std::fs::File::open(f)
                .and_then(|f| f.sync_all())
                .expect("sync a file");
        }
        let sha = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            let mut f = std::fs::File::open(&theirs).expect("open");
            std::io::copy(&mut f, &mut h).expect("hash");
            roam_server::blob::hex(&h.finalize())
        };
        let carol = api(&url, "carol");
        let (s, created) = carol
            .post(
                "/v1/uploads",
                serde_json::json!({"size": size, "sha256": sha, "mime": "application/octet-stream"}),
            )
            .await;
        let upload = created["upload"].as_str().unwrap_or_default().to_owned();
        let started = Instant::now();
        let curl = tokio::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "PATCH",
                "-H",
                &format!("Authorization: Bearer {}", carol.token),
                "-H",
                "Upload-Offset: 0",
                "-H",
                "Content-Type: application/offset+octet-stream",
                "-T",
                &theirs.display().to_string(),
                &format!("{url}/v1/uploads/{upload}"),
            ])
            .output()
            .await;
        let curl_secs = started.elapsed().as_secs_f64();
        let curl_ok = s == 201
            && curl
                .as_ref()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout) == "200");
        let dir = work.path().join("c3");
        std::fs::create_dir_all(&dir).expect("dir");
        let a = client(&dir, &url, "alice");
        a.start().await.expect("start");
        // Where the time goes: the progress reports (one per request answered, then "done").
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sub = a.subscribe_uploads(Arc::new(Progress(tx)));
        let started = Instant::now();
        let id = attach(&a, "targets", &ours);
        let taken_in = started.elapsed().as_secs_f64();
        let sent = wait_sent_every(
            &a,
            std::slice::from_ref(&id),
            Duration::from_secs(900),
            Duration::from_millis(2),
        )
        .await;
        let ours_secs = started.elapsed().as_secs_f64();
        drop(sub);
        let (mut first_byte, mut last_byte, mut stored) = (None, None, None);
        while let Ok(p) = rx.try_recv() {
            let at = p.at.duration_since(started).as_secs_f64();
            if p.progress.state == UploadState::Done {
                stored = Some(at);
            } else if p.progress.sent_bytes == size {
                last_byte = last_byte.or(Some(at));
            } else if p.progress.sent_bytes == 0 {
                first_byte = first_byte.or(Some(at));
            }
        }
        let s = |t: Option<f64>| t.map_or("?".to_owned(), |t| format!("{t:.3} s"));
        println!(
            "   roam: send_attachment returned {taken_in:.3} s, upload created {}, every byte \
             stored {}, finished {}, message sent {ours_secs:.3} s; curl {curl_secs:.3} s",
            s(first_byte),
            s(last_byte),
            s(stored)
        );
        let ratio = curl_secs / ours_secs;
        let mbps = |s: f64| size as f64 / MIB as f64 / s;
        all &= report(
            "3a. upload throughput vs one curl PATCH",
            format!(
                "{:.0} MiB/s vs curl {:.0} MiB/s = {:.0} %",
                mbps(ours_secs),
                mbps(curl_secs),
                ratio * 100.0
            ),
            curl_ok && sent && ratio >= 0.70,
        );
        // The same bytes again: the server holds them, so one POST answers "complete".
        let dedup_before = metric(&url, "roam_blob_uploads_deduplicated_total").await;
        let bytes_before = metric(&url, "roam_blob_upload_bytes_total").await;
        let again = files.join("ours-again.bin");
        std::fs::copy(&ours, &again).expect("copy");
        let id = attach(&a, "targets", &again);
        let sent = wait_sent(&a, std::slice::from_ref(&id), Duration::from_secs(300)).await;
        let dedup = metric(&url, "roam_blob_uploads_deduplicated_total").await - dedup_before;
        let bytes = metric(&url, "roam_blob_upload_bytes_total").await - bytes_before;
        all &= report(
            "3b. an identical file again",
            format!("{dedup} upload request answered \"held\", {bytes} B sent"),
            sent && dedup == 1.0 && bytes == 0.0,
        );
        a.shutdown().await;
    }

    // 4. 1,000 uploads through SIGKILLs, restarts and dropped connections.
    if only.contains(&4) {
        let count = (1000 / shrink) as usize;
        let proxy = Proxy::start(node.addr.parse().expect("addr")).await;
        let dir = work.path().join("c4");
        std::fs::create_dir_all(&dir).expect("dir");
        api(&url, "dave").create_room("faults", "public").await;
        let d = client(&dir, &proxy.url(), "dave");
        d.start().await.expect("start");
        let mut ids = Vec::with_capacity(count);
        let mut shas = std::collections::HashSet::new();
        for i in 0..count {
            let path = files.join(format!("f{i}.bin"));
            write_file(&path, 64 * 1024 + i as u64, 5);
            let bytes = std::fs::read(&path).expect("read");
            use sha2::Digest;
            shas.insert(roam_server::blob::hex(&sha2::Sha256::digest(&bytes)));
            ids.push(attach(&d, "faults", &path));
        }
        let (mut kills, mut drops) = (0u32, 0u32);
        let started = Instant::now();
        let mut done = false;
        while !done && started.elapsed() < Duration::from_secs(1200) {
            tokio::time::sleep(Duration::from_millis(700)).await;
            if (kills + drops) % 2 == 0 {
                node.restart();
                kills += 1;
            } else {
                proxy.set(Fault::Drop);
                tokio::time::sleep(Duration::from_millis(200)).await;
                proxy.set(Fault::Pass);
                drops += 1;
            }
            d.network_available();
            done = wait_sent(&d, &ids, Duration::from_millis(10)).await;
            if kills >= 10 && !done {
                // Enough faults were injected; let the rest finish.
                done = wait_sent(&d, &ids, Duration::from_secs(600)).await;
            }
        }
        let url = node.url();
        let messages: Vec<Value> = api(&url, "dave").all_messages("faults").await;
        let carried: Vec<String> = messages
            .iter()
            .filter_map(|m| m["attachment"]["blob"].as_str().map(str::to_owned))
            .collect();
        let distinct: std::collections::HashSet<&String> = carried.iter().collect();
        let lost = shas.iter().filter(|s| !distinct.contains(s)).count();
        let duplicated = carried.len() - distinct.len();
        let blob_dir = data.join("blobs").join("blobs");
        let on_disk = shas
            .iter()
            .filter(|s| blob_dir.join(s.as_str()).exists())
            .count();
        all &= report(
            "4. 1,000 uploads through faults",
            format!(
                "{} sent; {lost} lost, {duplicated} duplicated; {on_disk}/{} blobs stored; {kills} SIGKILLs, {drops} drops",
                messages.len(),
                shas.len()
            ),
            done && lost == 0 && duplicated == 0 && on_disk == shas.len() && messages.len() == count,
        );
        d.shutdown().await;
    }
    node.kill();
    println!(
        "{}",
        if all {
            "all targets met"
        } else {
            "some targets missed"
        }
    );
    all
}
