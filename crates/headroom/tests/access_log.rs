//! The access log as an operator meets it: a stdout nobody reads, a file that logrotate
//! renames (SIGUSR1), a path that cannot be opened, and hostile values in the combined format.

mod common;
use common::*;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `headroom serve` whose stdout is a pipe that nobody reads: a stalled log shipper.
struct Stalled {
    child: Child,
    /// Held open, never read: once the pipe's buffer is full, every write to it blocks.
    _stdout: ChildStdout,
    stderr: Lines,
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    dir: std::path::PathBuf,
}

impl Stalled {
    fn start(config: &str) -> Stalled {
        let dir = temp_dir();
        let path = dir.join("headroom.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--workers", "2", "--config"])
            .arg(&path)
            .env("HEADROOM_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start headroom");
        let stdout = child.stdout.take().unwrap();
        let stderr = Lines::follow(child.stderr.take().unwrap());
        let listening = stderr
            .wait_for(" listening ", Duration::from_secs(20))
            .unwrap_or_else(|| panic!("headroom did not start:\n{}", stderr.all().join("\n")));
        let admin = stderr
            .wait_for("admin listening", Duration::from_secs(5))
            .expect("admin listener");
        Stalled {
            addr: field(&listening, "addr=").parse().unwrap(),
            admin: field(&admin, "addr=").parse().unwrap(),
            child,
            _stdout: stdout,
            stderr,
            dir,
        }
    }

    fn metric(&self, series: &str) -> f64 {
        let m = Client::connect(self.admin).get("/metrics").text();
        m.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in\n{m}"))
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A stalled stdout costs log lines, never requests: 3000 requests (each with a 4 KiB
/// user agent, so their lines are ~50 times what the pipe holds) are all answered, and
/// the lines that did not fit are counted.
#[test]
fn a_stdout_nobody_reads_never_stops_the_gateway() {
    let up = Upstream::start("a");
    let h = Stalled::start(&one_route_config(&up, ""));
    let addr = h.addr;
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let ua = "u".repeat(4096);
        let mut c = Client::connect(addr);
        for i in 0..3000 {
            let r = c.request("GET", &format!("/r{i}"), &[("User-Agent", &ua)], b"");
            assert_eq!(r.status, 200, "request {i}: {}", r.text());
        }
        let _ = done_tx.send(());
    });
    // The safety net turns a hang into a failure; the requests take about a second.
    match done.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("requests hung behind the stalled stdout (no answer within 60 s)")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("a request failed (see above)"),
    }
    let dropped = h.metric("headroom_access_log_dropped_total");
    assert!(dropped > 0.0, "no line counted as dropped");
    // At most the 3000 lines written, and most of them: the pipe and the queue hold little.
    assert!(dropped <= 3000.0, "{dropped}");
    assert!(
        h.metric("headroom_requests_total{route=\"route-1\",service=\"s\",class=\"2xx\"}")
            >= 3000.0
    );
    assert!(
        !h.stderr.all().iter().any(|l| l.contains("panicked")),
        "{}",
        h.stderr.all().join("\n")
    );
}

/// Polls `path` until `pred` holds over its text (there is no signal for "a worker's
/// 100 ms tick has written the file"); 10 s is a safety net.
fn wait_file(path: &Path, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if pred(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} in {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn count_paths(text: &str, prefix: &str) -> usize {
    text.lines()
        .filter(|l| l.contains(&format!("\"path\":\"{prefix}")))
        .count()
}

/// logrotate's `create` sequence: rename the file, send SIGUSR1; the lines after go to a
/// new file at the path, the renamed one keeps the lines before. Nothing goes to stdout.
#[test]
fn access_log_path_takes_the_lines_and_sigusr1_reopens_it() {
    let up = Upstream::start("a");
    let config = one_route_config(&up, "")
        .replace("[global]\n", "[global]\naccess_log_path = \"access.log\"\n");
    let h = Headroom::start(&config);
    // Relative to the config file's directory, which Headroom::start chose.
    let path = h.dir.join("access.log");
    assert!(path.exists(), "the log file is created at start");
    for i in 0..3 {
        assert_eq!(h.get(&format!("/before-{i}")).status, 200);
    }
    wait_file(&path, "3 lines before the rotation", |t| {
        count_paths(t, "/before-") == 3
    });

    let rotated = h.dir.join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    h.signal("USR1");
    h.stderr
        .wait_for("SIGUSR1: access log reopened", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no reopen logged:\n{}", h.stderr.all().join("\n")));
    assert!(path.exists(), "SIGUSR1 creates a new file at the path");
    for i in 0..3 {
        assert_eq!(h.get(&format!("/after-{i}")).status, 200);
    }
    let new = wait_file(&path, "3 lines after the rotation", |t| {
        count_paths(t, "/after-") == 3
    });
    assert_eq!(count_paths(&new, "/before-"), 0, "{new}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(count_paths(&old, "/before-"), 3, "{old}");
    assert_eq!(count_paths(&old, "/after-"), 0, "{old}");
    assert!(
        h.stdout.all().iter().all(|l| !l.contains("\"path\"")),
        "access lines on stdout: {:?}",
        h.stdout.all()
    );
}

/// A full disk (`/dev/full` answers every write with ENOSPC): every request is still
/// served, the lost lines are counted, and the failure is logged once, not per line.
#[test]
fn a_full_disk_drops_and_counts_the_lines_and_the_gateway_serves_on() {
    let up = Upstream::start("a");
    let config = one_route_config(&up, "")
        .replace("[global]\n", "[global]\naccess_log_path = \"/dev/full\"\n");
    let h = Headroom::start(&config);
    for i in 0..50 {
        assert_eq!(h.get(&format!("/full-{i}")).status, 200);
    }
    h.wait_metric_at_least("headroom_access_log_dropped_total", 1.0);
    h.stderr
        .wait_for("access log: cannot write to", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no warning:\n{}", h.stderr.all().join("\n")));
    assert_eq!(
        h.stderr.count("access log: cannot write to"),
        1,
        "logged once"
    );
    assert_eq!(h.get("/after").status, 200);
}

/// Without a file there is nothing to reopen: SIGUSR1 (whose default action would kill
/// the process) leaves the gateway serving and logging to stdout.
#[test]
fn sigusr1_without_an_access_log_path_is_harmless() {
    let up = Upstream::start("a");
    let h = Headroom::start(&one_route_config(&up, ""));
    h.signal("USR1");
    h.stderr
        .wait_for("SIGUSR1: access log reopened", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no SIGUSR1 handling logged:\n{}", h.stderr.all().join("\n")));
    let r = h
        .client()
        .request("GET", "/", &[("X-Request-Id", "after-usr1")], b"");
    assert_eq!(r.status, 200);
    h.stdout
        .wait_for("after-usr1", Duration::from_secs(5))
        .expect("the access line on stdout");
}

/// A log file that cannot be opened stops the start with the path and the OS error, and
/// a non-zero exit, before anything listens.
#[test]
fn an_access_log_file_that_cannot_be_opened_stops_the_start() {
    let up = Upstream::start("a");
    let config = one_route_config(&up, "").replace(
        "[global]\n",
        "[global]\naccess_log_path = \"/nonexistent-headroom-dir/access.log\"\n",
    );
    let dir = temp_dir();
    let path = dir.join("headroom.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Lines::follow(child.stderr.take().unwrap());
    let pid = child.id();
    let (exit_tx, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = exit_tx.send(child.wait());
    });
    let status = match exited.recv_timeout(Duration::from_secs(20)) {
        Ok(status) => status.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("still running after 20 s:\n{}", stderr.all().join("\n"));
        }
    };
    let line = stderr.wait_for("access log", Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&dir);
    let all = stderr.all().join("\n");
    let line = line.unwrap_or_else(|| panic!("no error about the access log:\n{all}"));
    assert!(
        line.contains(
            "cannot open access log /nonexistent-headroom-dir/access.log: No such file or directory"
        ),
        "{all}"
    );
    assert_eq!(status.code(), Some(1), "{all}");
    assert!(!all.contains(" listening "), "{all}");
}

/// What a client sends cannot break a combined line: quotes, backslashes and control
/// bytes come out as nginx writes them (`\xHH`), and a request id cannot forge a field.
#[test]
fn combined_lines_escape_what_the_client_sent() {
    let up = Upstream::start("a");
    let config =
        one_route_config(&up, "").replace("[global]\n", "[global]\naccess_log = \"combined\"\n");
    let h = Headroom::start(&config);
    let r = h.client().request(
        "GET",
        "/esc\"aped\\path",
        &[
            ("User-Agent", "evil\" \"\tagent\\"),
            ("Referer", "\"-\" 200 0"),
            ("X-Request-Id", "rid-esc route=forged"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let line = h
        .stdout
        .wait_for("rid-esc", Duration::from_secs(5))
        .expect("the access line");
    assert!(
        line.contains(r#""GET /esc\x22aped\x5Cpath HTTP/1.1" 200 "#),
        "{line}"
    );
    assert!(
        line.contains(r#" "\x22-\x22 200 0" "evil\x22 \x22\x09agent\x5C" "#),
        "{line}"
    );
    assert!(
        line.contains(r" request_id=rid-esc\x20route=forged route=route-1 "),
        "{line}"
    );
    assert_eq!(line.matches('"').count(), 6, "{line}");
}
