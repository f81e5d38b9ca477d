//! What the test suites of several crates share (roam-server's unit and integration tests,
//! roam-tests): a free loopback address, a PostgreSQL schema of a test's own, a
//! `redis-server` of a test's own, an S3-compatible server (`moto_server`) of a test's own,
//! fake push gateways ([`push`]), and a loopback relay that can play a silent network
//! ([`relay`]).
//! Test code: a failure to set one up panics with what is missing.

pub mod collab;
pub mod push;
pub mod relay;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::net::TcpStream;

/// The database the tests use when their environment names none (`scripts/services.sh` starts
/// it; trust authentication).
pub const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// How long a server started by a test may take to listen.
const START_WAIT: Duration = Duration::from_secs(10);

/// A free loopback address (a port bound and released).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address")
}

/// Waits until something listens on `port` of 127.0.0.1; panics after `START_WAIT`.
pub async fn wait_port(port: u16) {
    let deadline = tokio::time::Instant::now() + START_WAIT;
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing listens on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A schema of a test's own in the database at `base`; a store pointed at [`PgSchema::url`]
/// keeps everything in it. Dropped with everything in it by [`PgSchema::drop_now`], or on drop
/// (in the background).
#[derive(Debug)]
pub struct PgSchema {
    base: String,
    pub name: String,
}

async fn connect(url: &str) -> Option<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .ok()?;
    let io = tokio::spawn(async move {
        let _ = conn.await;
    });
    Some((client, io))
}

impl PgSchema {
    /// Creates a fresh schema named `{prefix}_{uuid}` in the database of `base`.
    pub async fn create(base: &str, prefix: &str) -> PgSchema {
        let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
        let (client, io) = connect(base).await.unwrap_or_else(|| {
            panic!("PostgreSQL at {base} for the tests (scripts/services.sh starts one)")
        });
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("create the test schema");
        drop(client);
        let _ = io.await;
        PgSchema {
            base: base.to_owned(),
            name,
        }
    }

    /// The database URL for this schema (its `search_path`).
    pub fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{}", self.base, self.name)
    }

    /// The database URL for this schema, reaching the server through `addr` (a relay).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        let cfg: tokio_postgres::Config = self.base.parse().expect("a PostgreSQL URL");
        let user = cfg.get_user().unwrap_or("postgres");
        let db = cfg.get_dbname().unwrap_or("test");
        format!(
            "postgres://{user}@{addr}/{db}?options=-csearch_path%3D{}",
            self.name
        )
    }

    /// `host:port` of the database server itself.
    pub fn server_addr(&self) -> String {
        let cfg: tokio_postgres::Config = self.base.parse().expect("a PostgreSQL URL");
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".into(),
        };
        format!(
            "{host}:{}",
            cfg.get_ports().first().copied().unwrap_or(5432)
        )
    }

    /// Drops the schema and everything in it now, and waits for it.
    pub async fn drop_now(mut self) {
        let name = std::mem::take(&mut self.name);
        drop_schema(&self.base, &name).await;
    }
}

async fn drop_schema(base: &str, name: &str) {
    if let Some((client, io)) = connect(base).await {
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
            .await;
        drop(client);
        let _ = io.await;
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return; // dropped by `drop_now` already
        }
        let (base, name) = (self.base.clone(), self.name.clone());
        // Drop runs inside the test's runtime, whose tasks (a server's writes, a retention pass)
        // may hold locks on the schema until that runtime ends: the clean-up gets a thread of
        // its own and is not waited for. Schemas a finished process left behind are removed by
        // scripts/test.sh before the Postgres run.
        std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_schema(&base, &name));
            }
        });
    }
}

/// A `redis-server` of a test's own, on a free port, keeping nothing on disk; killed on drop.
#[derive(Debug)]
pub struct OwnRedis {
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts one and waits until it listens.
    pub async fn start() -> OwnRedis {
        Self::start_with(&[]).await
    }

    /// Starts one with more `redis-server` arguments (`["--requirepass", "…"]`).
    pub async fn start_with(args: &[&str]) -> OwnRedis {
        let mut r = OwnRedis {
            port: free_addr().port(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        r.up().await;
        r
    }

    /// Starts it again (after [`OwnRedis::down`]) on the same port, empty.
    pub async fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/services.sh installs it)");
        self.child = Some(child);
        wait_port(self.port).await;
    }

    /// Kills it and waits until it is gone.
    pub async fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = tokio::task::spawn_blocking(move || c.wait()).await;
        }
    }

    /// `redis://127.0.0.1:port/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis://:password@127.0.0.1:port/0`.
    pub fn url_with_password(&self, password: &str) -> String {
        format!("redis://:{password}@127.0.0.1:{}/0", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `moto_server` the S3 tests run: `ROAM_MOTO_SERVER`, the virtual environment
/// `scripts/s3.sh` installs (`/var/cache/roam/moto`), or the first on `PATH`.
pub fn moto_server_path() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("ROAM_MOTO_SERVER").filter(|p| !p.is_empty()) {
        return Some(p.into());
    }
    let venv = std::path::PathBuf::from("/var/cache/roam/moto/bin/moto_server");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.is_file())
    })
}

/// How long `moto_server` may take to listen (a Python start on a busy machine).
const MOTO_START_WAIT: Duration = Duration::from_secs(60);

/// An S3-compatible server of a test's own: `moto_server` on a free loopback port, keeping
/// everything in memory; killed on drop. It checks no signature, so a bucket is made with a
/// plain `PUT`.
#[derive(Debug)]
pub struct OwnMoto {
    port: u16,
    child: Child,
}

impl OwnMoto {
    /// Starts one and waits until it listens. Without `moto_server` it prints why and returns
    /// `None`, unless `ROAM_REQUIRE_S3` is set (as CI sets it): then it panics, so that a
    /// missing install fails the run instead of skipping the tests.
    pub async fn start_or_skip(test: &str) -> Option<OwnMoto> {
        let Some(bin) = moto_server_path() else {
            assert!(
                std::env::var_os("ROAM_REQUIRE_S3").is_none(),
                "ROAM_REQUIRE_S3 is set but moto_server is missing (scripts/s3.sh installs it)"
            );
            println!("SKIPPED {test}: moto_server is not installed (scripts/s3.sh installs it)");
            return None;
        };
        let port = free_addr().port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let moto = OwnMoto { port, child };
        let deadline = tokio::time::Instant::now() + MOTO_START_WAIT;
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "moto_server did not listen on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(moto)
    }

    /// `http://127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Makes a bucket; panics unless the server says 200.
    pub async fn create_bucket(&self, name: &str) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to moto_server");
        let req = format!(
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.port
        );
        s.write_all(req.as_bytes()).await.expect("send");
        let mut answer = Vec::new();
        tokio::time::timeout(START_WAIT, s.read_to_end(&mut answer))
            .await
            .expect("moto_server answers in time")
            .expect("read");
        let head = String::from_utf8_lossy(&answer);
        assert!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "creating bucket {name}: {}",
            head.lines().next().unwrap_or("")
        );
    }
}

impl Drop for OwnMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
