//! Real Redis for tests (feature `testing`): [`RedisServer`], one Debian `redis-server` on a
//! free loopback port that a test can kill, restart and stall, and [`RedisCluster`], six of
//! them joined into a cluster (three masters, three replicas) whose masters a test can kill.
//!
//! Blocking std code on purpose: it runs in test setup, outside the runtime under test. Every
//! wait is bounded and panics with what it saw (and the server's log) when it gives up.

mod cluster;

pub use cluster::RedisCluster;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a server gets to answer PING after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One `redis-server` on `127.0.0.1:port`, without persistence (`--save "" --appendonly no`),
/// in its own temporary directory; killed (and the directory removed) on drop.
pub struct RedisServer {
    pub port: u16,
    dir: TempDir,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers PING. Panics (with
    /// "install redis-server (scripts/test.sh does)") when `redis-server` is not installed.
    pub fn start() -> Self {
        Self::start_on(free_port(), &[])
    }

    /// Starts a server on `port` with extra `redis-server` arguments and waits for PING.
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        let mut server = RedisServer {
            port,
            dir: TempDir::new(&format!("redis-{port}")),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the process is running (not killed; a stalled one counts as running).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL: no goodbye on its connections beyond the kernel's reset).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, and starts it again on the same port (empty: nothing is
    /// persisted), waiting until it answers PING.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Freezes the server (SIGSTOP): connections stay open, the kernel still accepts new ones,
    /// nothing is answered. A Redis that hangs.
    pub fn stall(&mut self) {
        self.signal("STOP");
    }

    /// Thaws a stalled server (SIGCONT); it answers what it was sent meanwhile.
    pub fn resume(&mut self) {
        self.signal("CONT");
    }

    /// The server's log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is not running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill (procps)");
        assert!(status.success(), "kill -{signal} {} failed", child.id());
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("redis-server not found: install redis-server (scripts/test.sh does)")
            }
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls PING with a short back-off until it answers, the process dies, or START_TIMEOUT.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut pause = Duration::from_millis(2);
        loop {
            if ping(self.port).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "redis-server on port {} exited ({status}) at start:\n{}",
                        self.port,
                        self.log()
                    );
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "redis-server on port {} did not answer PING within {START_TIMEOUT:?}:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking connection to `port` whose every read and write gives up after a second.
pub(crate) fn connect(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let con = client.get_connection_with_timeout(Duration::from_secs(1))?;
    con.set_read_timeout(Some(Duration::from_secs(1)))?;
    con.set_write_timeout(Some(Duration::from_secs(1)))?;
    Ok(con)
}

fn ping(port: u16) -> redis::RedisResult<String> {
    redis::cmd("PING").query(&mut connect(port)?)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// A directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "headroom-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
