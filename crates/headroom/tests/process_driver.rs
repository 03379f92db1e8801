//! The autoscaler's `process` driver and its `replica-shim`, with real processes: the
//! replicas are `headroom demo-upstream` or `sh -c` scripts that misbehave on purpose, and
//! what is left running is read from /proc.

mod common;
use common::*;
use headroom_scale::process::{Driver, Exit, ProcessSpec, ShimCommand, StartError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn shim() -> ShimCommand {
    ShimCommand {
        program: BIN.into(),
        args: vec!["replica-shim".into()],
    }
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// `headroom demo-upstream` on the replica's port, answering with `r<index>`.
fn demo_command() -> Vec<String> {
    argv(&[
        BIN,
        "demo-upstream",
        "--bind",
        "127.0.0.1:{port}",
        "--name",
        "r{index}",
    ])
}

fn spec(command: Vec<String>) -> ProcessSpec {
    ProcessSpec {
        grace: Duration::from_secs(20),
        startup_timeout: Duration::from_secs(20),
        log_dir: Some(temp_dir()),
        ..ProcessSpec::new("app", command)
    }
}

fn sh(script: &str) -> Vec<String> {
    argv(&["sh", "-c", script])
}

/// A process's state letter from /proc/<pid>/stat and its process group; None when gone.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's name in parentheses: state, ppid, pgrp.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some((state, pgrp))
}

/// Running (not zombie) processes, with their command lines.
fn processes() -> Vec<(u32, u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Some((state, pgrp)) = stat(pid) else {
            continue;
        };
        if state == 'Z' {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        found.push((pid, pgrp, cmdline));
    }
    found
}

/// The running members of process group `pgid`.
fn group(pgid: u32) -> Vec<String> {
    processes()
        .into_iter()
        .filter(|(_, pgrp, _)| *pgrp == pgid)
        .map(|(pid, _, cmd)| format!("{pid}: {cmd}"))
        .collect()
}

/// A `sleep` argument no other process has: `<n>.<this test process' pid>` seconds, so a
/// process left over by another run is never mistaken for this one's.
fn marker(n: u32) -> String {
    format!("{n}.{}", std::process::id())
}

fn with_marker(marker: &str) -> Vec<String> {
    processes()
        .into_iter()
        .filter(|(_, _, cmd)| cmd.contains(marker))
        .map(|(pid, _, cmd)| format!("{pid}: {cmd}"))
        .collect()
}

fn parent(pid: u32) -> u32 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &text[text.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn running(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z')
}

/// Polls until `pid` is no longer running (a process that is not our child sends us no
/// signal when it dies); returns how long that took, None past `limit`.
fn gone_within(pid: u32, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !running(pid) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn kill(signal: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signal} {pid}");
}

fn http_get(addr: std::net::SocketAddr) -> String {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"GET /hello HTTP/1.1\r\nHost: replica\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    answer
}

async fn start(
    spec: ProcessSpec,
    index: u32,
) -> Result<headroom_scale::process::Replica, StartError> {
    Driver::new(spec, shim()).start(index).await
}

#[tokio::test]
async fn started_replica_answers_http_on_its_address_and_pid_is_the_apps() {
    let replica = start(spec(demo_command()), 3).await.unwrap();
    let answer = http_get(replica.addr);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("r3"),
        "answered by the replica named r{{index}}: {answer}"
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", replica.pid)).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("demo-upstream"), "{cmdline}");
    assert!(!cmdline.contains("replica-shim"), "{cmdline}");
    // The replica leads its own process group.
    assert_eq!(stat(replica.pid).map(|(_, pgrp)| pgrp), Some(replica.pid));
    replica.stop().await;
}

#[tokio::test]
async fn stop_sends_sigterm_and_returns_the_exit() {
    let replica = start(spec(demo_command()), 0).await.unwrap();
    let pid = replica.pid;
    let begun = Instant::now();
    // demo-upstream does not handle SIGTERM: it dies of it, long before the 20 s grace.
    assert_eq!(replica.stop().await, Exit::Signal(15));
    assert!(
        begun.elapsed() < Duration::from_secs(5),
        "{:?}",
        begun.elapsed()
    );
    assert!(!running(pid));
}

#[tokio::test]
async fn a_replica_ignoring_sigterm_is_killed_with_its_group_after_the_grace() {
    // sh, a sleep and a listener, all ignoring SIGTERM (an ignored signal stays ignored
    // across fork and exec); $PORT is the replica's port. All three are forked by the time
    // the listener listens.
    let script =
        format!("trap '' TERM; '{BIN}' demo-upstream --bind 127.0.0.1:$PORT & sleep 1000 & wait");
    let spec = ProcessSpec {
        grace: Duration::from_secs(1),
        ..spec(sh(&script))
    };
    let replica = start(spec, 0).await.unwrap();
    let pid = replica.pid;
    assert_eq!(group(pid).len(), 3, "{:?}", group(pid));
    let begun = Instant::now();
    assert_eq!(replica.stop().await, Exit::Signal(9));
    let took = begun.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "SIGKILL before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(group(pid), Vec::<String>::new(), "left of the group");
}

#[tokio::test]
async fn dropping_a_replica_stops_it() {
    let replica = start(spec(demo_command()), 0).await.unwrap();
    let pid = replica.pid;
    drop(replica);
    let took = tokio::task::spawn_blocking(move || gone_within(pid, Duration::from_secs(10)));
    assert!(took.await.unwrap().is_some(), "pid {pid} still running");
}

/// Not a test of its own: the process `the_replica_is_gone_when_its_owner_is_killed` starts
/// and SIGKILLs. It starts a replica with the driver, says its pid, and waits forever.
#[test]
fn driver_owner_process() {
    if std::env::var_os("HEADROOM_TEST_DRIVER_OWNER").is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Should the test fail before killing it, the owner ends with the test (its stdin).
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    rt.block_on(async {
        // It ignores SIGTERM: only the SIGKILL after the grace ends it.
        let script = format!("trap '' TERM; exec '{BIN}' demo-upstream --bind 127.0.0.1:{{port}}");
        let spec = ProcessSpec {
            grace: Duration::from_secs(1),
            ..spec(sh(&script))
        };
        let replica = start(spec, 0).await.unwrap();
        println!("replica pid {}", replica.pid);
        std::future::pending::<()>().await;
    });
}

#[test]
fn the_replica_is_gone_when_its_owner_is_killed() {
    replica_outlives_its_killed_owner_by_the_grace_only(false);
}

/// `kill -9 -<pgid>`: the owner's whole process group at once (a supervisor's "kill as
/// group"): the shim must not be in it.
#[test]
fn the_replica_is_gone_when_its_owners_process_group_is_killed() {
    replica_outlives_its_killed_owner_by_the_grace_only(true);
}

fn replica_outlives_its_killed_owner_by_the_grace_only(whole_group: bool) {
    use std::os::unix::process::CommandExt;
    let mut owner = Command::new(std::env::current_exe().unwrap());
    if whole_group {
        owner.process_group(0);
    }
    let mut owner = owner
        .args([
            "--exact",
            "driver_owner_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HEADROOM_TEST_DRIVER_OWNER", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = Lines::follow(owner.stdout.take().unwrap());
    let pid: u32 = lines
        .wait_until(Duration::from_secs(30), |lines| {
            lines
                .iter()
                // The harness prints `test driver_owner_process ... ` first, same line.
                .find_map(|l| l.split("replica pid ").nth(1)?.trim().parse().ok())
        })
        .expect("the owner started a replica");
    assert!(running(pid));
    // SIGKILL: the owner runs no code of its own on the way out.
    if whole_group {
        let ok = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", owner.id())])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    } else {
        owner.kill().unwrap();
    }
    owner.wait().unwrap();
    // The shim sees its stdin close: SIGTERM (ignored), the grace (1 s), SIGKILL.
    let took = gone_within(pid, Duration::from_secs(2));
    let took = took.unwrap_or_else(|| panic!("replica {pid} outlived its owner by 2 s"));
    assert!(
        took >= Duration::from_millis(800),
        "killed before the grace: {took:?}"
    );
}

/// The shim run by hand: its stdin held by the test, its reports on its stdout. Should a
/// test fail with it still running, it and its replica's group are SIGKILLed.
struct Shim {
    child: std::process::Child,
    lines: Lines,
}

impl Drop for Shim {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Some(pid) = self.lines.wait_until(Duration::ZERO, reported) {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn run_shim(args: &[&str]) -> Shim {
    let mut child = Command::new(BIN)
        .arg("replica-shim")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = Lines::follow(child.stdout.take().unwrap());
    Shim { child, lines }
}

fn reported(lines: &[String]) -> Option<u32> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("pid ")?.parse().ok())
}

fn reported_pid(lines: &Lines) -> u32 {
    lines
        .wait_until(Duration::from_secs(10), reported)
        .expect("the shim reports the pid")
}

fn reported_exit(lines: &Lines) -> String {
    lines
        .wait_until(Duration::from_secs(10), |lines| {
            lines.iter().find(|l| l.starts_with("exit ")).cloned()
        })
        .expect("the shim reports the exit")
}

#[test]
fn shim_stops_the_group_when_its_stdin_closes() {
    let sleep = marker(864);
    let script = format!("sleep {sleep} & wait");
    let mut shim = run_shim(&["--grace", "5s", "--", "sh", "-c", &script]);
    let pid = reported_pid(&shim.lines);
    // sh forks the sleep on its own time: wait for it (no signal says it happened).
    let deadline = Instant::now() + Duration::from_secs(10);
    while group(pid).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(group(pid).len(), 2, "{:?}", group(pid));
    drop(shim.child.stdin.take());
    assert_eq!(reported_exit(&shim.lines), "exit signal 15");
    assert_eq!(shim.child.wait().unwrap().code(), Some(128 + 15));
    assert_eq!(with_marker(&sleep), Vec::<String>::new());
}

#[test]
fn shim_kills_what_ignores_sigterm_in_the_group_once_the_grace_has_passed() {
    // sh dies of the SIGTERM at once; the sleep it forked ignores it.
    let sleep = marker(868);
    let script = format!("(trap '' TERM; exec sleep {sleep}) & wait");
    let mut shim = run_shim(&["--grace", "1s", "--", "sh", "-c", &script]);
    let pid = reported_pid(&shim.lines);
    let deadline = Instant::now() + Duration::from_secs(10);
    while with_marker(&sleep).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let begun = Instant::now();
    drop(shim.child.stdin.take());
    assert_eq!(reported_exit(&shim.lines), "exit signal 15");
    assert!(
        begun.elapsed() >= Duration::from_millis(900),
        "{:?}",
        begun.elapsed()
    );
    shim.child.wait().unwrap();
    assert_eq!(group(pid), Vec::<String>::new());
    assert_eq!(with_marker(&sleep), Vec::<String>::new());
}

#[test]
fn shim_sigterm_sigint_and_sighup_are_the_same_graceful_stop() {
    for signal in ["-TERM", "-INT", "-HUP"] {
        let sleep = marker(865);
        let mut shim = run_shim(&["--grace", "5s", "--", "sleep", &sleep]);
        reported_pid(&shim.lines);
        kill(signal, shim.child.id());
        // The replica got SIGTERM whatever the shim got.
        assert_eq!(reported_exit(&shim.lines), "exit signal 15", "{signal}");
        assert_eq!(shim.child.wait().unwrap().code(), Some(143), "{signal}");
        assert_eq!(with_marker(&sleep), Vec::<String>::new(), "{signal}");
    }
}

#[test]
fn shim_mirrors_an_app_exiting_on_its_own_and_kills_what_it_left() {
    let sleep = marker(866);
    let script = format!("sleep {sleep} & exit 4");
    let mut shim = run_shim(&["--grace", "30s", "--", "sh", "-c", &script]);
    reported_pid(&shim.lines);
    assert_eq!(reported_exit(&shim.lines), "exit code 4");
    assert_eq!(shim.child.wait().unwrap().code(), Some(4));
    assert_eq!(with_marker(&sleep), Vec::<String>::new());
}

#[test]
fn shim_refuses_bad_arguments_with_usage() {
    let out = Command::new(BIN)
        .args(["replica-shim", "--grace", "soon", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--grace \"soon\""), "{err}");
    assert!(err.contains("usage: headroom replica-shim"), "{err}");
}

#[tokio::test]
async fn a_command_exiting_at_once_is_exited_at_start_with_its_log() {
    let err = start(spec(sh("echo starting; echo boom >&2; exit 3")), 0)
        .await
        .unwrap_err();
    let StartError::ExitedAtStart { status, log_tail } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(status, "exit code 3");
    // stdout and stderr are two pipes: their lines may come in either order.
    assert!(
        log_tail.contains("starting") && log_tail.contains("boom"),
        "{log_tail}"
    );
    assert!(err.to_string().contains("boom"), "{err}");
}

#[tokio::test]
async fn a_command_that_never_listens_is_stopped_after_the_startup_timeout() {
    let spec = ProcessSpec {
        startup_timeout: Duration::from_millis(700),
        grace: Duration::from_millis(500),
        ..spec(sh(&format!("echo warming up; exec sleep {}", marker(867))))
    };
    let begun = Instant::now();
    let err = start(spec, 0).await.unwrap_err();
    assert!(begun.elapsed() >= Duration::from_millis(700));
    assert_eq!(
        err,
        StartError::NotListening {
            after: Duration::from_millis(700),
            log_tail: "warming up".into()
        }
    );
    assert_eq!(with_marker(&marker(867)), Vec::<String>::new());
}

#[tokio::test]
async fn a_replica_binding_a_taken_port_is_exited_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let command = argv(&[BIN, "demo-upstream", "--bind", &format!("127.0.0.1:{port}")]);
    let err = start(spec(command), 0).await.unwrap_err();
    let StartError::ExitedAtStart { status, log_tail } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(status, "exit code 1");
    assert!(log_tail.contains("cannot bind"), "{log_tail}");
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_error_naming_it() {
    let err = start(spec(argv(&["/nonexistent/replica-app"])), 0)
        .await
        .unwrap_err();
    let StartError::Spawn(why) = &err else {
        panic!("{err:?}");
    };
    assert!(why.contains("\"/nonexistent/replica-app\""), "{why}");
    assert!(why.contains("No such file"), "{why}");
    let file = temp_dir().join("a-file");
    std::fs::write(&file, "").unwrap();
    let spec_in_file = ProcessSpec {
        log_dir: Some(file.join("logs")),
        ..spec(demo_command())
    };
    let err = start(spec_in_file, 0).await.unwrap_err().to_string();
    assert!(err.starts_with("cannot create the log directory "), "{err}");
    assert!(err.contains("a-file/logs"), "{err}");
    let empty = start(spec(Vec::new()), 0).await.unwrap_err();
    assert_eq!(empty, StartError::Spawn("the command is empty".into()));
}

#[tokio::test]
async fn a_crash_resolves_exited_with_the_signal() {
    let replica = start(spec(demo_command()), 0).await.unwrap();
    assert_eq!(replica.exit(), None);
    kill("-KILL", replica.pid);
    let exit = tokio::time::timeout(Duration::from_secs(10), replica.exited()).await;
    assert_eq!(exit, Ok(Exit::Signal(9)));
    assert_eq!(replica.exit(), Some(Exit::Signal(9)));
    // Stopping a replica that already exited returns at once, with that exit.
    assert_eq!(replica.stop().await, Exit::Signal(9));
}

#[tokio::test]
async fn a_killed_shim_is_a_lost_exit_and_its_replica_is_killed() {
    let replica = start(spec(demo_command()), 0).await.unwrap();
    let shim = parent(replica.pid);
    assert_ne!(shim, std::process::id());
    kill("-KILL", shim);
    let exit = tokio::time::timeout(Duration::from_secs(10), replica.exited()).await;
    let Ok(Exit::Lost(why)) = &exit else {
        panic!("{exit:?}");
    };
    assert!(why.contains("SIGKILL"), "{why}");
    let pid = replica.pid;
    let gone = tokio::task::spawn_blocking(move || gone_within(pid, Duration::from_secs(5)));
    assert!(
        gone.await.unwrap().is_some(),
        "replica {pid} outlived its shim"
    );
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_chatty_replicas_log_stays_under_its_cap_with_one_rotation() {
    let script = format!(
        "i=0; while [ $i -lt 3000 ]; do echo \"line $i of a chatty replica\"; \
         i=$((i+1)); done; exec '{BIN}' demo-upstream --bind 127.0.0.1:{{port}}"
    );
    let spec = ProcessSpec {
        log_max_bytes: 4096,
        ..spec(sh(&script))
    };
    let dir = spec.log_dir.clone().unwrap();
    let replica = start(spec, 2).await.unwrap();
    let log = PathBuf::from(replica.log_path().unwrap());
    assert_eq!(log, dir.join("app-2.log"));
    replica.stop().await; // the shim writes the last output before it reports the exit
    let old = dir.join("app-2.log.1");
    for file in [&log, &old] {
        let size = std::fs::metadata(file).unwrap().len();
        assert!(size <= 4096, "{}: {size} bytes", file.display());
    }
    assert!(!dir.join("app-2.log.2").exists());
    let (old, new) = (read_lines(&old), read_lines(&log));
    assert!(
        new.last().unwrap().starts_with("listening on 127.0.0.1:"),
        "{new:?}"
    );
    for line in old.iter().chain(&new[..new.len() - 1]) {
        assert!(
            line.starts_with("line ") && line.ends_with(" of a chatty replica"),
            "{line:?}"
        );
    }
    // Nothing was lost within the two files: consecutive lines, up to line 2999.
    let numbers: Vec<u32> = old
        .iter()
        .chain(&new[..new.len() - 1])
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(*numbers.last().unwrap(), 2999);
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
}
