//! The servers under test: started one at a time as child processes on a free loopback port,
//! measured through /proc, and killed at the end of each workload.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::Flavor;

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0} did not accept connections within {1:?} (see {2})")]
    NotListening(String, Duration, String),
    #[error("{0} exited early with {1} (see {2})")]
    Exited(String, std::process::ExitStatus, String),
    #[error("/proc/{0}: {1}")]
    Proc(u32, String),
}

/// The three contestants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Kind {
    Roam,
    Socketio,
    Bun,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Roam => "roam",
            Kind::Socketio => "socketio",
            Kind::Bun => "bun",
        }
    }

    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Roam => "roam-server",
            Kind::Socketio => "Socket.IO 4.8 (node)",
            Kind::Bun => "Bun pub/sub",
        }
    }
}

/// Where the programs are.
#[derive(Debug, Clone)]
pub struct Programs {
    pub roam_server: PathBuf,
    pub node: PathBuf,
    pub bun: PathBuf,
    pub peers_dir: PathBuf,
    pub log_dir: PathBuf,
    /// roam-server instances (sharing `roam_store` through `roam_bus` when more than one).
    pub roam_nodes: usize,
    pub roam_store: Option<String>,
    pub roam_bus: Option<String>,
}

impl Programs {
    /// The same paths made absolute (a child started in another directory must still find
    /// them); bare program names such as `node` are left for `PATH`.
    fn absolute(&self) -> Programs {
        let abs = |p: &Path| -> PathBuf {
            if p.components().count() > 1 || p.is_absolute() {
                std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
            } else {
                p.to_path_buf()
            }
        };
        Programs {
            roam_server: abs(&self.roam_server),
            node: abs(&self.node),
            bun: abs(&self.bun),
            peers_dir: abs(&self.peers_dir),
            log_dir: abs(&self.log_dir),
            roam_nodes: self.roam_nodes,
            roam_store: self.roam_store.clone(),
            roam_bus: self.roam_bus.clone(),
        }
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    pub kind: Kind,
    child: Child,
    pub pid: u32,
    /// Further instances of a multi-node roam-server (their CPU and memory count too).
    others: Vec<Child>,
    pub flavor: Flavor,
    pub version: String,
    log: PathBuf,
    _data: Option<tempfile::TempDir>,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16, ServerError> {
    let l = TcpListener::bind(("127.0.0.1", 0)).map_err(io("bind a free port"))?;
    Ok(l.local_addr().map_err(io("bind a free port"))?.port())
}

/// A random secret for the run's tokens (64 hex digits).
fn random_secret() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for i in 0..4u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(Instant::now().elapsed().as_nanos());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

impl Server {
    /// Starts `kind` and waits until it accepts TCP connections. `tag` names the log file.
    pub fn start(kind: Kind, programs: &Programs, tag: &str) -> Result<Server, ServerError> {
        let programs = &programs.absolute();
        let port = free_port()?;
        std::fs::create_dir_all(&programs.log_dir)
            .map_err(io(format!("create {}", programs.log_dir.display())))?;
        let log = programs.log_dir.join(format!("{}-{tag}.log", kind.name()));
        let out = File::create(&log).map_err(io(format!("create {}", log.display())))?;
        let err = out.try_clone().map_err(io("log file"))?;
        let mut data = None;
        let mut others: Vec<(Command, u16, PathBuf)> = Vec::new();
        let (mut cmd, flavor, version) = match kind {
            Kind::Roam => {
                let dir = tempfile::Builder::new()
                    .prefix("roam-race-")
                    .tempdir()
                    .map_err(io("create a data directory"))?;
                let secret = random_secret();
                // Several instances share one store and bus; each its own key prefix per run.
                let prefix = format!("roam-race-{}", &random_secret()[..16]);
                let roam_cmd = |port: u16, node: usize| {
                    let mut c = Command::new(&programs.roam_server);
                    c.arg("--listen")
                        .arg(format!("127.0.0.1:{port}"))
                        .arg("--data-dir")
                        .arg(dir.path().join(format!("n{node}")))
                        // The load generator is one process making thousands of users'
                        // traffic: the per-user limits are raised so that they never answer
                        // `rate_limited`.
                        .args(["--rate-mutations-per-sec", "1000000"])
                        .args(["--rate-mutations-burst", "1000000"])
                        .args(["--rate-connects-per-min", "1000000"])
                        .args(["--rate-connects-burst", "1000000"])
                        .env("ROAM_JWT_SECRET", &secret)
                        .env("RUST_LOG", "warn");
                    if let Some(store) = &programs.roam_store {
                        c.args(["--store", store]);
                    }
                    if let Some(bus) = &programs.roam_bus {
                        c.args(["--bus", bus, "--bus-prefix", &prefix]);
                        c.arg("--node-id").arg(format!("n{node}"));
                    }
                    c
                };
                let mut ports = vec![port];
                // The first instance migrates a fresh store before the others open it.
                for node in 1..programs.roam_nodes {
                    let p = free_port()?;
                    ports.push(p);
                    let log = programs.log_dir.join(format!("roam-{tag}-n{node}.log"));
                    let out =
                        File::create(&log).map_err(io(format!("create {}", log.display())))?;
                    let err = out.try_clone().map_err(io("log file"))?;
                    let mut c = roam_cmd(p, node);
                    c.stdin(Stdio::null())
                        .stdout(Stdio::from(out))
                        .stderr(Stdio::from(err));
                    others.push((c, p, log));
                }
                let c = roam_cmd(port, 0);
                data = Some(dir);
                let nonce = Instant::now().elapsed().as_nanos() as u64
                    ^ u64::from_str_radix(&secret[..16], 16).unwrap_or_default();
                let mut version = program_version(&programs.roam_server, "--version")
                    .unwrap_or_else(|| "roam-server".into());
                if programs.roam_nodes > 1 || programs.roam_store.is_some() {
                    version = format!(
                        "{version} ×{} on {}{}",
                        programs.roam_nodes,
                        if programs.roam_store.is_some() {
                            "postgres"
                        } else {
                            "sqlite"
                        },
                        if programs.roam_bus.is_some() {
                            " + redis"
                        } else {
                            ""
                        },
                    );
                }
                (
                    c,
                    Flavor::Roam {
                        ports: Arc::from(ports),
                        secret: Arc::from(secret.as_str()),
                        nonce,
                    },
                    version,
                )
            }
            Kind::Socketio => {
                let mut c = Command::new(&programs.node);
                c.arg(programs.peers_dir.join("socketio.js"))
                    .arg(port.to_string())
                    .current_dir(&programs.peers_dir);
                let version = package_version(&programs.peers_dir, "socket.io")
                    .map(|v| format!("socket.io {v}"))
                    .unwrap_or_else(|| "socket.io".into());
                let node = program_version(&programs.node, "--version").unwrap_or_default();
                (
                    c,
                    Flavor::SocketIo { port },
                    format!("{version}, node {node}"),
                )
            }
            Kind::Bun => {
                let mut c = Command::new(&programs.bun);
                c.arg(programs.peers_dir.join("bun.js"))
                    .arg(port.to_string())
                    .current_dir(&programs.peers_dir);
                let version = program_version(&programs.bun, "--version")
                    .map(|v| format!("bun {v}"))
                    .unwrap_or_else(|| "bun".into());
                (c, Flavor::SocketIo { port }, version)
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd.spawn().map_err(io(format!("start {}", kind.label())))?;
        let pid = child.id();
        let mut server = Server {
            kind,
            child,
            pid,
            others: Vec::new(),
            flavor,
            version,
            log,
            _data: data,
        };
        server.wait_listening(port)?;
        for (mut c, p, log) in others {
            let child = c.spawn().map_err(io(format!("start {}", kind.label())))?;
            server.others.push(child);
            wait_port(p, &log, kind)?;
        }
        Ok(server)
    }

    fn wait_listening(&mut self, port: u16) -> Result<(), ServerError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        while start.elapsed() < START_TIMEOUT {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ServerError::Exited(
                    self.kind.label().into(),
                    status,
                    self.log.display().to_string(),
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(ServerError::NotListening(
            self.kind.label().into(),
            START_TIMEOUT,
            self.log.display().to_string(),
        ))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.pid).chain(self.others.iter().map(Child::id))
    }

    /// CPU time used so far (user + system), in seconds, over every process of the server.
    pub fn cpu_secs(&self) -> Result<f64, ServerError> {
        let mut total = 0.0;
        for pid in self.pids() {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_err(|e| ServerError::Proc(pid, e.to_string()))?;
            total += cpu_secs_of(&stat)
                .ok_or_else(|| ServerError::Proc(pid, "unreadable stat".into()))?;
        }
        Ok(total)
    }

    /// Resident set size, in KiB, over every process of the server.
    pub fn rss_kib(&self) -> Result<u64, ServerError> {
        let mut total = 0;
        for pid in self.pids() {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map_err(|e| ServerError::Proc(pid, e.to_string()))?;
            total += rss_of(&status).ok_or_else(|| ServerError::Proc(pid, "no VmRSS".into()))?;
        }
        Ok(total)
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for c in &mut self.others {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for c in std::iter::once(&mut self.child).chain(self.others.iter_mut()) {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Waits until a further instance accepts TCP connections.
fn wait_port(port: u16, log: &Path, kind: Kind) -> Result<(), ServerError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while start.elapsed() < START_TIMEOUT {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(ServerError::NotListening(
        kind.label().into(),
        START_TIMEOUT,
        log.display().to_string(),
    ))
}

/// CPU time this process (the load generator) used so far, in seconds.
pub fn own_cpu_secs() -> Option<f64> {
    cpu_secs_of(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// utime + stime from a /proc/PID/stat line, in seconds.
fn cpu_secs_of(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' the first field is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second();
    Some((utime + stime) as f64 / ticks as f64)
}

/// VmRSS from /proc/PID/status, in KiB.
fn rss_of(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn program_version(program: &Path, flag: &str) -> Option<String> {
    let out = Command::new(program).arg(flag).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn package_version(peers: &Path, package: &str) -> Option<String> {
    let path = peers
        .join("node_modules")
        .join(package)
        .join("package.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("version")?.as_str().map(str::to_owned)
}

/// Raises this process's open-file limit to its hard limit (children inherit it).
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let target = now.maximum;
    if target != now.current {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: target,
                maximum: now.maximum,
            },
        );
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_fields() {
        let stat = "1234 (node (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 11 0 100 2000 300";
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        assert_eq!(cpu_secs_of(stat), Some(300.0 / ticks));
        assert_eq!(cpu_secs_of("garbage"), None);
        let status = "Name:\tnode\nVmPeak:\t  100 kB\nVmRSS:\t   43210 kB\n";
        assert_eq!(rss_of(status), Some(43210));
        assert_eq!(rss_of("Name: x\n"), None);
    }

    #[test]
    fn secrets_are_long_and_differ() {
        let a = random_secret();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_secret());
    }
}
