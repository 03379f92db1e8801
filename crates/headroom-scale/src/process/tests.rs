use super::log::{tail, LogFile};
use super::template::Vars;
use super::{Backoff, Exit, ProcessSpec, StartError};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const VARS: Vars<'static> = Vars {
    port: 8123,
    index: 4,
    service: "app",
};

#[test]
fn placeholders_are_substituted_and_other_braces_kept() {
    assert_eq!(
        VARS.apply("--bind=127.0.0.1:{port}"),
        "--bind=127.0.0.1:8123"
    );
    assert_eq!(VARS.apply("{service}-{index}.pid"), "app-4.pid");
    assert_eq!(VARS.apply("echo ${HOME} {} {port"), "echo ${HOME} {} {port");
    let odd = Vars {
        service: "{port}",
        ..VARS
    };
    assert_eq!(odd.apply("{service}"), "{port}");
}

#[test]
fn exit_report_lines_round_trip() {
    for exit in [
        Exit::Code(0),
        Exit::Code(3),
        Exit::Signal(9),
        Exit::Lost("shim killed\nby 9".into()),
    ] {
        let parsed = Exit::parse_line(&exit.to_line());
        match exit {
            Exit::Lost(_) => assert_eq!(parsed, Some(Exit::Lost("shim killed by 9".into()))),
            _ => assert_eq!(parsed, Some(exit)),
        }
    }
    assert_eq!(Exit::parse_line("listening on 127.0.0.1:1"), None);
    assert_eq!(Exit::parse_line("exit code x"), None);
}

#[test]
fn exits_read_as_people_say_them_and_mirror_as_shells_do() {
    assert_eq!(Exit::Signal(9).to_string(), "killed by SIGKILL (signal 9)");
    assert_eq!(Exit::Signal(40).to_string(), "killed by signal 40");
    assert_eq!(Exit::Code(3).to_string(), "exit code 3");
    assert_eq!(Exit::Signal(15).mirrored_code(), 143);
    assert_eq!(Exit::Code(3).mirrored_code(), 3);
    assert!(Exit::Code(0).success() && !Exit::Signal(15).success());
}

#[test]
fn start_errors_quote_the_log_tail() {
    let e = StartError::ExitedAtStart {
        status: Exit::Code(3).to_string(),
        log_tail: "boom".into(),
    };
    assert_eq!(
        e.to_string(),
        "exited before listening (exit code 3); the last lines of its log:\nboom"
    );
    let e = StartError::NotListening {
        after: Duration::from_millis(1500),
        log_tail: String::new(),
    };
    assert_eq!(
        e.to_string(),
        "did not accept connections within 1s 500ms (startup_timeout); stopped"
    );
}

#[test]
fn spec_defaults_are_the_documented_ones() {
    let spec = ProcessSpec::new("app", vec!["x".into()]);
    assert_eq!(spec.host.to_string(), "127.0.0.1");
    assert_eq!(spec.grace, Duration::from_secs(10));
    assert_eq!(spec.startup_timeout, Duration::from_secs(30));
    assert_eq!(spec.log_max_bytes, 10 << 20);
    assert_eq!(spec.log_path(2), None);
    let spec = ProcessSpec {
        log_dir: Some("/var/log/headroom".into()),
        ..spec
    };
    assert_eq!(
        spec.log_path(2),
        Some(PathBuf::from("/var/log/headroom/app-2.log"))
    );
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn restart_delays_double_from_one_second_up_to_a_minute() {
    let t0 = Instant::now();
    let mut backoff = Backoff::new();
    let mut delays = Vec::new();
    // Exits 10 minutes apart (no crash loop), each after 1 s of running (no reset).
    for i in 0..9u64 {
        let exit = t0 + secs(600 * i + 1);
        delays.push(backoff.on_exit(exit - secs(1), exit).as_secs());
    }
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
}

#[test]
fn a_replica_that_ran_a_minute_resets_the_delay() {
    let t0 = Instant::now();
    let mut backoff = Backoff::new();
    assert_eq!(backoff.on_exit(t0, t0 + secs(1)), secs(1));
    assert_eq!(backoff.on_exit(t0 + secs(2), t0 + secs(3)), secs(2));
    assert_eq!(backoff.on_exit(t0 + secs(5), t0 + secs(64)), secs(4));
    assert_eq!(backoff.on_exit(t0 + secs(70), t0 + secs(130)), secs(1));
}

#[test]
fn five_exits_within_five_minutes_is_a_crash_loop_at_the_max_delay() {
    let t0 = Instant::now();
    let mut backoff = Backoff::new();
    // Each replica runs 61 s: every delay is reset to the first…
    for i in 0..4 {
        let start = t0 + secs(61 * i);
        assert_eq!(backoff.on_exit(start, start + secs(61)), Backoff::FIRST);
        assert!(!backoff.crash_looping(start + secs(61)), "exit {i}");
    }
    // …but the fifth exit within 5 minutes (61 s to 305 s) is a crash loop.
    let fifth = t0 + secs(305);
    assert_eq!(backoff.on_exit(t0 + secs(244), fifth), Backoff::MAX);
    assert!(backoff.crash_looping(fifth));
    // The oldest of the five (61 s) leaves the window at 361 s.
    assert!(backoff.crash_looping(t0 + secs(361)));
    assert!(!backoff.crash_looping(t0 + secs(362)));
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "headroom-scale-{}-{name}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn log_rotates_once_at_line_boundaries_under_the_cap() {
    let dir = scratch("rotate");
    let path = dir.join("app-0.log");
    let mut log = LogFile::open(&path, 100).unwrap();
    let mut written = 0;
    for i in 0..200 {
        let line = format!("line {i:03} of the replica's output\n");
        log.write(line.as_bytes()).unwrap();
        written += line.len();
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
    }
    assert!(written > 300);
    let old = std::fs::read_to_string(dir.join("app-0.log.1")).unwrap();
    let new = std::fs::read_to_string(&path).unwrap();
    assert!(old.len() <= 100 && !old.is_empty());
    assert!(new.ends_with("line 199 of the replica's output\n"));
    for line in old.lines().chain(new.lines()) {
        assert!(
            line.starts_with("line ") && line.ends_with("output"),
            "{line:?}"
        );
    }
    assert!(!dir.join("app-0.log.2").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_line_longer_than_the_cap_is_cut_at_the_cap() {
    let dir = scratch("long");
    let path = dir.join("a.log");
    let mut log = LogFile::open(&path, 10).unwrap();
    log.write(b"short\n").unwrap();
    log.write(&[b'x'; 25]).unwrap();
    assert_eq!(std::fs::read(dir.join("a.log.1")).unwrap(), b"x".repeat(10));
    assert_eq!(std::fs::read(&path).unwrap(), b"x".repeat(5));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tail_is_the_last_whole_lines() {
    let dir = scratch("tail");
    let path = dir.join("a.log");
    let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&path, text).unwrap();
    assert_eq!(tail(&path, 2), "line 4998\nline 4999");
    let all = tail(&path, 100_000);
    assert!(all.lines().next().unwrap().starts_with("line "));
    assert!(all.len() <= 8 * 1024);
    assert_eq!(tail(&dir.join("missing.log"), 5), "");
    let _ = std::fs::remove_dir_all(&dir);
}
