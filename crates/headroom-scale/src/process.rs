//! The `process` driver: one replica of a service as a local child process, started from a
//! command template, reached on a port it was given, stopped gracefully.
//!
//! Between headroom and the replica runs a small supervisor, [`crate::shim`] (`headroom
//! replica-shim`): it puts the replica in its own process group, writes its log, and stops
//! the whole group when its stdin (a pipe from headroom) closes. That pipe closes however
//! headroom ends, SIGKILL included, so a replica never outlives headroom: the guarantee
//! `PR_SET_PDEATHSIG` gives, without `unsafe`.
//!
//! The driver owns one replica's lifecycle ([`Driver::start`], [`Replica::exited`],
//! [`Replica::stop`]); the controller owns policy: how many, when to restart ([`Backoff`]).

mod backoff;
mod exit;
pub(crate) mod log;
mod template;
#[cfg(test)]
mod tests;

pub use backoff::Backoff;
pub use exit::Exit;

use rustix::process::{kill_process, kill_process_group, Pid, Signal};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use template::Vars;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long the start polls between two connection attempts to the replica's port: a
/// control-plane loop, 20 tries a second cost nothing and add at most 50 ms to a start.
const POLL: Duration = Duration::from_millis(50);
/// How many lines of a replica's log a [`StartError`] quotes.
const TAIL_LINES: usize = 20;
/// Past the grace, how long [`Replica::stop`] waits for the shim's own report before it
/// SIGKILLs the shim and the replica's group itself (the shim is stuck or stopped).
const STOP_MARGIN: Duration = Duration::from_secs(5);

/// How to run a service's replicas. Fields are public; [`ProcessSpec::new`] fills the
/// defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    /// The service's name: the log files' and the errors' name, `{service}` in templates.
    pub service: String,
    /// The argv template, e.g. `["python3", "-m", "http.server", "{port}"]`; `{port}`,
    /// `{index}` and `{service}` are substituted, other braces are kept. No shell: use
    /// `["sh", "-c", "..."]` for one.
    pub command: Vec<String>,
    /// Environment added to headroom's (values templated the same way). `PORT={port}` is
    /// always set, after these.
    pub env: Vec<(String, String)>,
    /// The replica's working directory; None: headroom's.
    pub cwd: Option<PathBuf>,
    /// Where the replica listens and is reached. Default 127.0.0.1.
    pub host: IpAddr,
    /// From a stop (or headroom's exit) to the SIGKILL of the replica's process group.
    /// Default 10 s.
    pub grace: Duration,
    /// From the spawn to the port accepting TCP connections. Default 30 s.
    pub startup_timeout: Duration,
    /// The directory of the per-replica log files `<dir>/<service>-<index>.log` (stdout and
    /// stderr), created if missing; None: the output is discarded. Default None.
    pub log_dir: Option<PathBuf>,
    /// A log file reaching this size is rotated once to `.log.1` (the older `.1` is
    /// replaced). Default 10 MiB.
    pub log_max_bytes: u64,
}

impl ProcessSpec {
    /// Default of [`ProcessSpec::grace`]: Kubernetes' `terminationGracePeriodSeconds` is
    /// 30 s; a local replica has no load balancer to drain from first, so 10 s.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
    /// Default of [`ProcessSpec::startup_timeout`]: room for an interpreter's or a JVM's
    /// start on a loaded machine.
    pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default of [`ProcessSpec::log_max_bytes`]: 10 MiB.
    pub const DEFAULT_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;

    /// A spec with the defaults: listening on 127.0.0.1, no extra environment, headroom's
    /// directory, output discarded.
    pub fn new(service: impl Into<String>, command: Vec<String>) -> ProcessSpec {
        ProcessSpec {
            service: service.into(),
            command,
            env: Vec::new(),
            cwd: None,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            grace: Self::DEFAULT_GRACE,
            startup_timeout: Self::DEFAULT_STARTUP_TIMEOUT,
            log_dir: None,
            log_max_bytes: Self::DEFAULT_LOG_MAX_BYTES,
        }
    }

    /// The log file of replica `index`, when there are logs.
    pub fn log_path(&self, index: u32) -> Option<PathBuf> {
        let dir = self.log_dir.as_ref()?;
        Some(dir.join(format!("{}-{index}.log", self.service)))
    }
}

/// How to run the shim: usually `std::env::current_exe()` and `["replica-shim"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimCommand {
    /// The program (headroom's own binary).
    pub program: PathBuf,
    /// The arguments before the shim's own (`--log`, `--grace`, `--`, the command).
    pub args: Vec<String>,
}

impl ShimCommand {
    /// The running headroom binary's `replica-shim` subcommand.
    pub fn current_exe() -> std::io::Result<ShimCommand> {
        Ok(ShimCommand {
            program: std::env::current_exe()?,
            args: vec!["replica-shim".to_owned()],
        })
    }
}

/// Why a replica did not start. The texts do not name the service or the replica: the
/// caller, who knows which it asked for, says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// Nothing ran: no free port, the log directory or the command could not be created or
    /// run; the text says which and why.
    Spawn(String),
    /// It ran and exited before its port accepted a connection.
    ExitedAtStart {
        /// How it ended ([`Exit`]'s text).
        status: String,
        /// The last lines of its log; empty without a log directory.
        log_tail: String,
    },
    /// Its port did not accept a connection within the startup timeout; it was stopped.
    NotListening {
        /// The startup timeout.
        after: Duration,
        /// The last lines of its log; empty without a log directory.
        log_tail: String,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = |f: &mut fmt::Formatter<'_>, log_tail: &str| {
            if log_tail.is_empty() {
                Ok(())
            } else {
                write!(f, "; the last lines of its log:\n{log_tail}")
            }
        };
        match self {
            StartError::Spawn(why) => f.write_str(why),
            StartError::ExitedAtStart { status, log_tail } => {
                write!(f, "exited before listening ({status})")?;
                tail(f, log_tail)
            }
            StartError::NotListening { after, log_tail } => {
                write!(
                    f,
                    "did not accept connections within {} (startup_timeout); stopped",
                    humantime::format_duration(*after)
                )?;
                tail(f, log_tail)
            }
        }
    }
}

impl std::error::Error for StartError {}

/// Starts the replicas of one service. Cheap to share (`Arc` inside).
#[derive(Debug, Clone)]
pub struct Driver {
    spec: Arc<ProcessSpec>,
    shim: Arc<ShimCommand>,
}

impl Driver {
    /// A driver for `spec`'s replicas, each run under `shim`.
    pub fn new(spec: ProcessSpec, shim: ShimCommand) -> Driver {
        Driver {
            spec: Arc::new(spec),
            shim: Arc::new(shim),
        }
    }

    /// The spec it runs.
    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// Starts replica `index`: picks a free port on the host (bind port 0, read it, close:
    /// another process could take it in between, which then shows as an error), spawns the
    /// shim which spawns the command, and waits until the port accepts a TCP connection,
    /// the replica exits, or the startup timeout passes (the replica is then stopped, which
    /// can take up to the grace more).
    ///
    /// Needs a tokio runtime with the IO and time drivers; spawns one task per replica that
    /// watches its exit. Cancel-safe: dropping the future stops what it had started.
    pub async fn start(&self, index: u32) -> Result<Replica, StartError> {
        let spec = &*self.spec;
        if spec.command.is_empty() {
            return Err(StartError::Spawn("the command is empty".into()));
        }
        let port = free_port(spec.host)
            .map_err(|e| StartError::Spawn(format!("no free port on {}: {e}", spec.host)))?;
        let addr = SocketAddr::new(spec.host, port);
        let vars = Vars {
            port,
            index,
            service: &spec.service,
        };
        let log = match spec.log_path(index) {
            Some(path) => Some(prepare_log(&path)?),
            None => None,
        };

        let mut cmd = tokio::process::Command::new(&self.shim.program);
        cmd.args(&self.shim.args);
        if let Some(path) = &log {
            cmd.arg("--log")
                .arg(path)
                .arg("--log-max")
                .arg(spec.log_max_bytes.to_string());
        }
        cmd.arg("--grace")
            .arg(format!("{}ms", spec.grace.as_millis()))
            .arg("--")
            .args(spec.command.iter().map(|a| vars.apply(a)));
        for (key, value) in &spec.env {
            cmd.env(key, vars.apply(value));
        }
        cmd.env("PORT", port.to_string());
        if let Some(dir) = spec.cwd.as_ref().filter(|d| !d.as_os_str().is_empty()) {
            // A missing directory fails the spawn with the same ENOENT as a missing
            // program: say which it is.
            if !dir.is_dir() {
                return Err(StartError::Spawn(format!(
                    "the working directory {} (cwd) is not a directory",
                    dir.display()
                )));
            }
            cmd.current_dir(dir);
        }
        // Not kill_on_drop: killing the shim would orphan the replica. Dropping its stdin
        // stops both; tokio reaps a dropped child in the background. The shim's own process
        // group: a signal to headroom's group (Ctrl-C, a supervisor's `kill -9 -<pgid>`)
        // must not reach it; headroom's end closes its stdin, which stops the replica.
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        let mut shim = cmd.spawn().map_err(|e| {
            StartError::Spawn(format!(
                "cannot run the replica shim {}: {e}",
                self.shim.program.display()
            ))
        })?;
        let shim_pid = shim.id().unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (shim.stdin.take(), shim.stdout.take(), shim.stderr.take())
        else {
            return Err(StartError::Spawn("the replica shim has no pipes".into()));
        };
        let deadline = Instant::now() + spec.startup_timeout;
        let mut stdout = BufReader::new(stdout);

        // The shim's first line names the replica's pid; without it, the shim said why on
        // stderr (the command could not be run, the log not opened).
        let mut first = String::new();
        let pid = match tokio::time::timeout_at(deadline, stdout.read_line(&mut first)).await {
            Ok(Ok(n)) if n > 0 => first
                .trim_end()
                .strip_prefix("pid ")
                .and_then(|p| p.parse::<u32>().ok()),
            Ok(_) => None,
            Err(_) => {
                let _ = shim.start_kill();
                return Err(StartError::Spawn(format!(
                    "the replica shim did not start the command within {} (startup_timeout)",
                    humantime::format_duration(spec.startup_timeout)
                )));
            }
        };
        let Some(pid) = pid else {
            let why = shim_failure(shim, stderr, &first).await;
            return Err(StartError::Spawn(why));
        };

        let (tx, exit) = watch::channel(None);
        tokio::spawn(forward_shim_stderr(stderr, spec.service.clone(), index));
        tokio::spawn(watch_exit(shim, stdout, pid, tx));
        let mut replica = Replica {
            index,
            addr,
            pid,
            stdin: Some(stdin),
            exit,
            shim_pid,
            grace: spec.grace,
            log,
        };

        match wait_listening(addr, &mut replica.exit, deadline).await {
            Listening::Yes => Ok(replica),
            Listening::Exited(exit) => Err(StartError::ExitedAtStart {
                status: exit.to_string(),
                log_tail: replica.log_tail(),
            }),
            Listening::TimedOut => {
                let log = replica.log.clone();
                replica.stop().await;
                // After the stop: the shim has written the last of the output by then.
                let log_tail = log.map(|path| log::tail(&path, TAIL_LINES));
                Err(StartError::NotListening {
                    after: spec.startup_timeout,
                    log_tail: log_tail.unwrap_or_default(),
                })
            }
        }
    }
}

/// One running replica. Dropping it stops the replica gracefully in the background (its
/// shim sees its stdin close); [`Replica::stop`] does the same and waits.
#[derive(Debug)]
pub struct Replica {
    /// Its index in the service, `{index}` in the templates.
    pub index: u32,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The replica's own pid (not the shim's), also its process group's id.
    pub pid: u32,
    /// The write end of the shim's stdin: closing it is the stop.
    stdin: Option<ChildStdin>,
    exit: watch::Receiver<Option<Exit>>,
    shim_pid: u32,
    grace: Duration,
    log: Option<PathBuf>,
}

impl Replica {
    /// Resolves when the replica has exited (a crash, a stop, or the shim lost), with how.
    /// Cancel-safe, and takes `&self`: a controller can select over it.
    pub async fn exited(&self) -> Exit {
        wait_exit(&mut self.exit.clone()).await
    }

    /// How it exited, if it has; never waits.
    pub fn exit(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    /// Its exit as a watch (None while it runs), for a controller watching many.
    pub fn exit_watch(&self) -> watch::Receiver<Option<Exit>> {
        self.exit.clone()
    }

    /// Its log file, when the spec has a log directory.
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// Graceful stop: SIGTERM to the replica's process group, SIGKILL after the grace;
    /// returns how it exited (at once if it already had). Takes up to the grace, plus 5 s
    /// should the shim not answer (then the driver kills the shim and the group itself).
    pub async fn stop(mut self) -> Exit {
        drop(self.stdin.take());
        let wait = tokio::time::timeout(self.grace + STOP_MARGIN, wait_exit(&mut self.exit));
        if let Ok(exit) = wait.await {
            return exit;
        }
        if let Some(shim) = Pid::from_raw(self.shim_pid as i32) {
            let _ = kill_process(shim, Signal::KILL);
        }
        kill_group(self.pid);
        wait_exit(&mut self.exit).await
    }

    fn log_tail(&self) -> String {
        self.log
            .as_deref()
            .map(|path| log::tail(path, TAIL_LINES))
            .unwrap_or_default()
    }
}

/// Waits for the exit in `rx`; a watcher gone without a value (it cannot, short of a
/// runtime shutdown) reads as lost.
async fn wait_exit(rx: &mut watch::Receiver<Option<Exit>>) -> Exit {
    match rx.wait_for(Option::is_some).await {
        Ok(exit) => exit.clone().unwrap_or_else(|| Exit::Lost("no exit".into())),
        Err(_) => Exit::Lost("the runtime watching the replica stopped".into()),
    }
}

fn free_port(host: IpAddr) -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind((host, 0))?.local_addr()?.port())
}

/// The log file's absolute path (the replica may run elsewhere), its directory created.
fn prepare_log(path: &Path) -> Result<PathBuf, StartError> {
    let path = std::path::absolute(path)
        .map_err(|e| StartError::Spawn(format!("log file {}: {e}", path.display())))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            StartError::Spawn(format!(
                "cannot create the log directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    Ok(path)
}

/// Why a shim ended without naming a pid: its stderr, or its status.
async fn shim_failure(
    mut shim: Child,
    mut stderr: tokio::process::ChildStderr,
    first: &str,
) -> String {
    let mut text = String::new();
    let read = stderr.read_to_string(&mut text);
    let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
    let status = match tokio::time::timeout(Duration::from_secs(2), shim.wait()).await {
        Ok(Ok(status)) => Exit::from_status(status).to_string(),
        _ => {
            let _ = shim.start_kill();
            "still running".into()
        }
    };
    let text = text.trim();
    if !text.is_empty() {
        return text
            .strip_prefix("replica-shim: ")
            .unwrap_or(text)
            .to_owned();
    }
    if !first.trim().is_empty() {
        return format!(
            "the replica shim printed {:?} instead of its pid",
            first.trim()
        );
    }
    format!("the replica shim ended without starting the command ({status})")
}

/// The shim's own messages (a replica that ignored SIGTERM, a log it cannot write) go to
/// headroom's log.
async fn forward_shim_stderr(stderr: tokio::process::ChildStderr, service: String, index: u32) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.strip_prefix("replica-shim: ").unwrap_or(&line);
        tracing::warn!(service = %service, replica = index, "{line}");
    }
}

/// Reads the shim's reports until it ends, then publishes the replica's exit. A shim that
/// ends without reporting one was killed: the replica may still run, so its group is
/// SIGKILLed.
async fn watch_exit(
    mut shim: Child,
    stdout: BufReader<ChildStdout>,
    pid: u32,
    tx: watch::Sender<Option<Exit>>,
) {
    let mut reported = None;
    let mut lines = stdout.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(exit) = Exit::parse_line(&line) {
            reported = Some(exit);
        }
    }
    let shim_status = shim.wait().await;
    let exit = reported.unwrap_or_else(|| {
        kill_group(pid);
        let how = match shim_status {
            Ok(status) => Exit::from_status(status).to_string(),
            Err(e) => e.to_string(),
        };
        Exit::Lost(format!(
            "its shim ended without reporting ({how}); its process group was killed"
        ))
    });
    let _ = tx.send(Some(exit));
}

fn kill_group(pgid: u32) {
    if let Some(pgid) = Pid::from_raw(pgid as i32) {
        let _ = kill_process_group(pgid, Signal::KILL);
    }
}

enum Listening {
    Yes,
    Exited(Exit),
    TimedOut,
}

async fn wait_listening(
    addr: SocketAddr,
    exit: &mut watch::Receiver<Option<Exit>>,
    deadline: Instant,
) -> Listening {
    loop {
        if let Some(exit) = exit.borrow_and_update().clone() {
            return Listening::Exited(exit);
        }
        if accepts(addr).await {
            return Listening::Yes;
        }
        if Instant::now() >= deadline {
            return Listening::TimedOut;
        }
        tokio::select! {
            _ = exit.changed() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// True when a TCP connection to `addr` is accepted. A connection to itself does not count:
/// with nothing listening, Linux can connect a socket whose ephemeral port happens to be
/// the destination's to itself (TCP simultaneous open).
async fn accepts(addr: SocketAddr) -> bool {
    let connect = tokio::net::TcpStream::connect(addr);
    match tokio::time::timeout(Duration::from_secs(1), connect).await {
        Ok(Ok(stream)) => stream.local_addr().ok() != stream.peer_addr().ok(),
        _ => false,
    }
}
