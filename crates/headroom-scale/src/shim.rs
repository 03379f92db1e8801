//! `headroom replica-shim`: the small supervisor between headroom and one replica, so that
//! the replica never outlives headroom, however headroom ends.
//!
//! ```text
//! headroom replica-shim [--log FILE --log-max BYTES] --grace DUR -- CMD ARGS...
//! ```
//!
//! - CMD runs in its own process group, stdin null, stdout and stderr copied to FILE (capped
//!   at BYTES with one rotation to `FILE.1`) or discarded.
//! - The shim prints `pid <N>` on its stdout once CMD runs, and `exit code <C>` /
//!   `exit signal <S>` when it has ended ([`crate::process`] reads both).
//! - EOF on the shim's stdin (headroom closed the pipe: a stop, or headroom exited, crashed
//!   or was killed), SIGTERM, SIGINT, SIGHUP or SIGQUIT: SIGTERM to CMD's group, then
//!   SIGKILL to the group once the grace has passed or everything in it has exited,
//!   whichever is first. Only a SIGKILL of the shim itself escapes it; the driver then
//!   SIGKILLs the group (when headroom is still there to see it).
//! - CMD exiting on its own: SIGKILL to what is left of its group.
//!
//! The shim then exits with CMD's code, or 128 + the signal that ended it. Its own errors go
//! to its stderr, prefixed `replica-shim: `; it exits 2 on bad arguments, 127 when CMD
//! cannot be run.

use crate::process::log::LogFile;
use crate::process::Exit;
use rustix::process::{kill_process_group, test_kill_process_group, Pid, Signal};
use std::io::Write;
use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::Child;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

const USAGE: &str =
    "usage: headroom replica-shim [--log FILE --log-max BYTES] --grace DUR -- CMD ARGS...";
/// After the replica's group is gone, how long the shim waits for the last of its output to
/// reach the log: a process that left the group can hold the pipes open forever.
const DRAIN: Duration = Duration::from_secs(2);
/// How often the group is checked for leftovers during the grace.
const GROUP_POLL: Duration = Duration::from_millis(20);

/// The shim's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The log file; None: output discarded.
    pub log: Option<PathBuf>,
    /// The log file's cap.
    pub log_max: u64,
    /// From the stop's SIGTERM to the SIGKILL.
    pub grace: Duration,
    /// The replica's argv, never empty.
    pub command: Vec<String>,
}

impl Args {
    /// Reads the arguments after `replica-shim`.
    pub fn parse(args: &[String]) -> Result<Args, String> {
        let mut log = None;
        let mut log_max = crate::process::ProcessSpec::DEFAULT_LOG_MAX_BYTES;
        let mut grace = None;
        let mut rest = args.iter();
        loop {
            let Some(arg) = rest.next() else {
                return Err("missing `-- CMD`: the command to run".into());
            };
            let mut value = |name: &str| {
                rest.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--" => break,
                "--log" => log = Some(PathBuf::from(value("--log")?)),
                "--log-max" => {
                    let text = value("--log-max")?;
                    log_max = text.parse().map_err(|_| {
                        format!("--log-max {text:?}: expected a number of bytes, e.g. 10485760")
                    })?;
                }
                "--grace" => {
                    let text = value("--grace")?;
                    grace = Some(humantime::parse_duration(&text).map_err(|e| {
                        format!("--grace {text:?}: {e} (expected a duration, e.g. 10s or 500ms)")
                    })?);
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        let command: Vec<String> = rest.cloned().collect();
        if command.is_empty() {
            return Err("missing the command after `--`".into());
        }
        let grace = grace.ok_or("missing --grace DUR")?;
        Ok(Args {
            log,
            log_max,
            grace,
            command,
        })
    }
}

/// Runs the shim with the arguments after `replica-shim`; returns when the replica and its
/// group are gone.
pub fn run(args: Vec<String>) -> ExitCode {
    let args = match Args::parse(&args) {
        Ok(args) => args,
        Err(e) => {
            say(&format!("{e}\n{USAGE}"));
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(&format!("cannot start a runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(supervise(args));
    // Nothing of ours is left to wait for.
    rt.shutdown_background();
    code
}

/// One line on the shim's stderr. Write errors are ignored: headroom may be gone.
fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "replica-shim: {message}");
}

/// One report line on the shim's stdout, for the driver.
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The log, shared by the stdout and stderr copies; `failed` once a write failed.
struct Sink {
    file: LogFile,
    failed: bool,
}

type SharedLog = Arc<Mutex<Sink>>;

async fn supervise(args: Args) -> ExitCode {
    // Before the spawn, so that a stop arriving meanwhile is not lost. SIGHUP and SIGQUIT
    // too: their default would end the shim alone and leave the replica, in its own group,
    // behind (a terminal's hang-up reaches a shim run in its session's foreground group).
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut quit)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::quit()),
    ) else {
        say("cannot handle SIGTERM, SIGINT, SIGHUP and SIGQUIT");
        return ExitCode::FAILURE;
    };
    let log = match &args.log {
        Some(path) => match LogFile::open(path, args.log_max) {
            Ok(file) => Some(Arc::new(Mutex::new(Sink {
                file,
                failed: false,
            }))),
            Err(e) => {
                say(&format!("cannot open the log file {}: {e}", path.display()));
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let output = || match log {
        Some(_) => Stdio::piped(),
        None => Stdio::null(),
    };
    let mut cmd = tokio::process::Command::new(&args.command[0]);
    cmd.args(&args.command[1..])
        .stdin(Stdio::null())
        .stdout(output())
        .stderr(output())
        .process_group(0)
        .kill_on_drop(false);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let why = format!("cannot run {:?}: {e}", args.command[0]);
            if let Some(log) = &log {
                write_log(log, format!("{why}\n").as_bytes());
            }
            say(&why);
            return ExitCode::from(127);
        }
    };
    let Some(pid) = child.id() else {
        say("the command ended before its pid was read");
        return ExitCode::FAILURE;
    };
    let Some(group) = Pid::from_raw(pid as i32) else {
        say(&format!("the command has an invalid pid {pid}"));
        return ExitCode::FAILURE;
    };
    report(&format!("pid {pid}"));

    let mut copies = Vec::new();
    if let Some(log) = &log {
        if let Some(out) = child.stdout.take() {
            copies.push(tokio::spawn(copy_to_log(out, log.clone())));
        }
        if let Some(err) = child.stderr.take() {
            copies.push(tokio::spawn(copy_to_log(err, log.clone())));
        }
    }

    let stdin_closed = stdin_eof();
    let ended = tokio::select! {
        status = child.wait() => Some(status),
        _ = stdin_closed => None,
        _ = term.recv() => None,
        _ = int.recv() => None,
        _ = hup.recv() => None,
        _ = quit.recv() => None,
    };
    let status = match ended {
        Some(status) => {
            signal_group(group, Signal::KILL);
            status
        }
        None => stop(&mut child, group, args.grace).await,
    };
    let exit = match status {
        Ok(status) => Exit::from_status(status),
        Err(e) => {
            signal_group(group, Signal::KILL);
            Exit::Lost(format!("waiting for the replica failed: {e}"))
        }
    };
    for copy in copies {
        let _ = tokio::time::timeout(DRAIN, copy).await;
    }
    report(&exit.to_line());
    ExitCode::from(exit.mirrored_code())
}

/// SIGTERM to the group; the replica gets the grace to exit, the rest of its group what is
/// left of it; then SIGKILL to whatever remains.
async fn stop(child: &mut Child, group: Pid, grace: Duration) -> std::io::Result<ExitStatus> {
    let deadline = Instant::now() + grace;
    signal_group(group, Signal::TERM);
    let status = match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            say(&format!(
                "the replica (pid {}) was still running {} after SIGTERM: SIGKILL",
                group.as_raw_nonzero(),
                humantime::format_duration(grace)
            ));
            signal_group(group, Signal::KILL);
            child.wait().await
        }
    };
    while test_kill_process_group(group).is_ok() && Instant::now() < deadline {
        tokio::time::sleep(GROUP_POLL).await;
    }
    signal_group(group, Signal::KILL);
    status
}

/// Sends `signal` to the group; an empty group (ESRCH) is not an error.
fn signal_group(group: Pid, signal: Signal) {
    match kill_process_group(group, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(e) => say(&format!(
            "cannot signal process group {}: {e}",
            group.as_raw_nonzero()
        )),
    }
}

/// Resolves when the shim's stdin reaches EOF (or fails). A thread, not tokio's stdin: a
/// blocking read there would hold the runtime's shutdown.
fn stdin_eof() -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 256];
        while let Ok(n) = std::io::Read::read(&mut stdin, &mut buf) {
            if n == 0 {
                break;
            }
        }
        let _ = tx.send(());
    });
    rx
}

async fn copy_to_log(mut from: impl tokio::io::AsyncRead + Unpin, log: SharedLog) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        write_log(&log, &buf[..n]);
    }
}

fn write_log(log: &SharedLog, bytes: &[u8]) {
    let Ok(mut sink) = log.lock() else {
        return;
    };
    // A full disk must not stop the replica: its output is dropped, said once.
    if let Err(e) = sink.file.write(bytes) {
        if !sink.failed {
            say(&format!("cannot write the log: {e}; output dropped"));
        }
        sink.failed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn arguments_are_read_up_to_the_double_dash() {
        let parsed = Args::parse(&args(
            "--log /tmp/a.log --log-max 100 --grace 2s -- sh -c --grace",
        ));
        assert_eq!(
            parsed,
            Ok(Args {
                log: Some("/tmp/a.log".into()),
                log_max: 100,
                grace: Duration::from_secs(2),
                command: args("sh -c --grace"),
            })
        );
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        let err = |text| Args::parse(&args(text)).unwrap_err();
        assert!(err("--grace 2s").contains("`-- CMD`"));
        assert!(err("--grace 2s --").contains("command"));
        assert!(err("-- sleep 1").contains("--grace"));
        assert!(err("--grace soon -- sleep 1").contains("\"soon\""));
        assert!(err("--log-max lots --grace 1s -- x").contains("number of bytes"));
        assert!(err("--log").contains("--log needs a value"));
        assert!(err("--verbose --grace 1s -- x").contains("unknown argument \"--verbose\""));
    }
}
