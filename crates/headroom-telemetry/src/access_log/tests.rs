use super::writer::test_queue;
use super::*;
use crate::Counter;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

fn entry(request_id: &str) -> Entry<'_> {
    Entry {
        time: SystemTime::UNIX_EPOCH,
        request_id,
        client: std::net::Ipv4Addr::LOCALHOST.into(),
        method: "GET",
        host: "example.com",
        path: "/",
        protocol: "HTTP/1.1",
        route: "r",
        service: "s",
        replica: "127.0.0.1:1",
        status: 200,
        bytes: 2,
        duration: Duration::from_micros(100),
        upstream_duration: None,
        attempts: 1,
        cache: "",
        guard: "",
        consumer: "",
        user_agent: "t",
        referer: "",
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "headroom-telemetry-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Whatever waits in the queue is never waited for: a full queue gives the batch back and
/// counts its lines (not one per batch) as dropped; accepted batches come out in order.
#[test]
fn a_full_queue_drops_the_batch_and_counts_its_lines() {
    let dropped = Arc::new(Counter::default());
    let (log, mut next) = test_queue(2, dropped.clone());
    assert!(log.submit("a1\na2\na3\n".into(), 3).is_ok());
    assert!(log.submit("b1\nb2\n".into(), 2).is_ok());
    let back = log.submit("c1\nc2\nc3\nc4\nc5\n".into(), 5);
    assert_eq!(back, Err("c1\nc2\nc3\nc4\nc5\n".to_string()));
    assert_eq!(dropped.get(), 5);
    assert_eq!(next(), Some(("a1\na2\na3\n".into(), 3)));
    assert!(log.submit("d1\n".into(), 1).is_ok(), "room again");
    assert_eq!(next(), Some(("b1\nb2\n".into(), 2)));
    assert_eq!(next(), Some(("d1\n".into(), 1)));
    assert_eq!(next(), None);
    assert_eq!(dropped.get(), 5);
}

/// The thread buffer's path: what a worker writes is either received or counted, line
/// for line, and a dropped batch's buffer is reused rather than lost with its lines.
#[test]
fn every_line_a_thread_writes_is_either_queued_or_counted_as_dropped() {
    let dropped = Arc::new(Counter::default());
    let (log, mut next) = test_queue(1, dropped.clone());
    attach(&log);
    let written = 1000;
    for i in 0..written {
        write(Format::Json, &entry(&i.to_string()));
    }
    flush_thread();
    let (text, lines) = next().expect("the first batch was queued");
    assert_eq!(next(), None, "the queue holds one batch");
    assert_eq!(text.lines().count() as u64, lines);
    assert!(text.len() >= FLUSH_AT, "{}", text.len());
    assert!(dropped.get() > 0);
    assert_eq!(lines + dropped.get(), written);
    // The first queued lines are the first written, whole and in order.
    for (i, l) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["request_id"], i.to_string());
    }
}

/// Several threads log at once through the real writer thread: every line arrives whole,
/// each thread's lines in the order it wrote them.
#[test]
fn lines_stay_whole_and_in_order_per_thread() {
    let dir = temp_dir("order");
    let path = dir.join("access.log");
    let log = AccessLog::start(Destination::File(path.clone()), Arc::default()).unwrap();
    let (threads, per_thread) = (4, 3000);
    std::thread::scope(|s| {
        for t in 0..threads {
            let log = &log;
            s.spawn(move || {
                attach(log);
                for i in 0..per_thread {
                    write(Format::Json, &entry(&format!("{t}-{i}")));
                    if i % 700 == 0 {
                        flush_thread(); // as the worker's tick does, mid-stream
                    }
                }
                flush_thread();
            });
        }
    });
    // A file takes everything; the queue may still have dropped under a burst.
    assert!(log.flush(Duration::from_secs(30)), "writer did not finish");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut last = vec![-1i64; threads];
    let mut seen = 0;
    for l in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a whole line ({e}): {l}"));
        let id = v["request_id"].as_str().unwrap();
        let (t, i) = id.split_once('-').unwrap();
        let (t, i): (usize, i64) = (t.parse().unwrap(), i.parse().unwrap());
        assert!(i > last[t], "thread {t}: line {i} after {}", last[t]);
        last[t] = i;
        seen += 1;
    }
    assert_eq!(seen + log.dropped(), (threads * per_thread) as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

/// logrotate's sequence: rename the file, signal, and the next lines go to a new file at
/// the path while the old one keeps what it had.
#[test]
fn reopen_moves_the_log_to_a_new_file_at_the_path() {
    let dir = temp_dir("reopen");
    let path = dir.join("access.log");
    let log = AccessLog::start(Destination::File(path.clone()), Arc::default()).unwrap();
    attach(&log);
    write(Format::Json, &entry("before"));
    flush_thread();
    assert!(log.flush(Duration::from_secs(10)));
    let rotated = dir.join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    log.reopen().unwrap();
    assert!(path.exists(), "reopen creates the file at once");
    write(Format::Json, &entry("after"));
    flush_thread();
    assert!(log.flush(Duration::from_secs(10)));
    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&path).unwrap();
    assert!(
        old.contains("\"before\"") && !old.contains("\"after\""),
        "{old}"
    );
    assert!(
        new.contains("\"after\"") && !new.contains("\"before\""),
        "{new}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reopen that fails (the path is now a directory) is an error, and the writer goes on
/// writing to the file it had.
#[test]
fn a_failed_reopen_keeps_the_old_file() {
    let dir = temp_dir("reopen-fails");
    let path = dir.join("access.log");
    let log = AccessLog::start(Destination::File(path.clone()), Arc::default()).unwrap();
    let rotated = dir.join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    std::fs::create_dir(&path).unwrap();
    let err = log.reopen().unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    attach(&log);
    write(Format::Json, &entry("kept"));
    flush_thread();
    assert!(log.flush(Duration::from_secs(10)));
    assert!(std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("\"kept\""));
    assert_eq!(log.dropped(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_that_cannot_be_opened_is_an_error_naming_the_path_and_the_os_error() {
    let path = PathBuf::from("/nonexistent-headroom-dir/access.log");
    let err = AccessLog::start(Destination::File(path), Arc::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot open access log /nonexistent-headroom-dir/access.log: ")
            && msg.contains("os error 2"),
        "{msg}"
    );
}

#[test]
fn stdout_has_nothing_to_reopen() {
    let log = AccessLog::start(Destination::Stdout, Arc::default()).unwrap();
    assert!(log.reopen().is_ok());
    assert_eq!(log.destination(), Destination::Stdout);
}
