//! The admin listener: its token, its `/status`, and that it keeps answering when the data
//! plane is saturated, when its own connection cap is reached, and when the process is out
//! of file descriptors.

mod common;
use common::*;
use headroom_edge::admin::MAX_CONNECTIONS;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The preamble with `admin.token` set.
fn with_token(token: &str) -> String {
    preamble().replacen(
        "[admin]\nbind = \"127.0.0.1:0\"\n",
        &format!("[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"{token}\"\n"),
        1,
    )
}

fn fixed_response() -> &'static str {
    "[[route]]\nrespond = { status = 200, body = \"ok\" }\n"
}

/// One GET on a fresh connection, with `headers`.
fn admin_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    Client::connect(addr).request("GET", path, headers, b"")
}

#[test]
fn the_admin_token_is_required_and_checked() {
    let h = Headroom::start(&format!("{}{}", with_token("s3cret"), fixed_response()));
    let admin = h.admin.expect("admin listener");
    for path in ["/healthz", "/metrics", "/status"] {
        let missing = admin_get(admin, path, &[]);
        assert_eq!(missing.status, 401, "{path} without a token");
        assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
        assert_eq!(missing.json()["error"], "unauthorized");
        for wrong in [
            "Bearer nope",
            "Bearer s3cre",
            "Bearer s3cret!",
            "Basic s3cret",
        ] {
            let r = admin_get(admin, path, &[("Authorization", wrong)]);
            assert_eq!(r.status, 401, "{path} with {wrong:?}");
        }
        let right = admin_get(admin, path, &[("Authorization", "Bearer s3cret")]);
        assert_eq!(right.status, 200, "{path}: {}", right.text());
        // RFC 9110: the scheme is case-insensitive (curl and some clients send "bearer").
        let lower = admin_get(admin, path, &[("Authorization", "bearer s3cret")]);
        assert_eq!(lower.status, 200, "{path}: {}", lower.text());
    }
}

#[test]
fn status_names_each_balance_as_the_config_does() {
    let up = Upstream::start("a");
    let mut cfg = format!("{}[[route]]\nservice = \"default\"\n\n", preamble());
    for (name, line) in [
        ("default", ""),
        ("rr", "balance = \"round-robin\"\n"),
        ("lr", "balance = \"least-requests\"\n"),
        ("hashed", "balance = \"hash\"\n"),
    ] {
        cfg.push_str(&format!(
            "[service.{name}]\n{line}replicas = [\"{}\"]\n\n",
            up.addr
        ));
    }
    let h = Headroom::start(&cfg);
    let status = h.status();
    let balance = |name: &str| {
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == name)
            .unwrap_or_else(|| panic!("no service {name} in {status:#}"))["balance"]
            .clone()
    };
    assert_eq!(balance("default"), "p2c-ewma");
    assert_eq!(balance("rr"), "round-robin");
    assert_eq!(balance("lr"), "least-requests");
    assert_eq!(balance("hashed"), "hash");
}

#[test]
fn the_admin_answers_while_the_data_plane_is_at_max_connections() {
    let cfg = format!("{}{}", preamble(), fixed_response()).replacen(
        "name = \"public\"\nbind = \"127.0.0.1:0\"\n",
        "name = \"public\"\nbind = \"127.0.0.1:0\"\nmax_connections = 4\n",
        1,
    );
    let h = Headroom::start(&cfg);
    // Four idle clients take every data-plane slot; forty more wait in the accept queue,
    // their requests sent and unanswered.
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(h.addr).unwrap())
        .collect();
    h.wait_metric("headroom_open_connections{listener=\"public\"}", 4.0);
    let mut queued: Vec<Client> = (0..40).map(|_| h.client()).collect();
    for c in &mut queued {
        c.stream()
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
    }
    let started = Instant::now();
    for path in ["/healthz", "/metrics", "/status"] {
        let mut c = Client::connect(h.admin.unwrap());
        c.stream()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let r = c
            .try_request("GET", path, &[], b"")
            .unwrap_or_else(|e| panic!("admin {path} while the data plane is full: {e}"));
        assert_eq!(r.status, 200, "{path}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The data plane really was full: the queued clients are still waiting.
    let mut first = queued.remove(0);
    first
        .stream()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut b = [0u8; 1];
    assert!(
        first.stream().read(&mut b).is_err(),
        "a queued client was served past max_connections"
    );
    drop(idle);
}

#[test]
fn at_its_connection_cap_the_admin_serves_a_new_request_once_a_connection_closes() {
    let h = Headroom::start(&format!("{}{}", preamble(), fixed_response()));
    let admin = h.admin.unwrap();
    // The cap's worth of idle connections, accepted in order (the kernel's queue is FIFO)...
    let mut idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(admin).unwrap())
        .collect();
    // ...so this one waits in the accept queue, its request unread.
    let mut waiting = Client::connect(admin);
    waiting
        .stream()
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    waiting
        .stream()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut b = [0u8; 1];
    let early = waiting.stream().read(&mut b);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "served past the cap of {MAX_CONNECTIONS}: {early:?}"
    );
    // One idle connection closes: its slot goes to the waiting request.
    drop(idle.pop());
    waiting
        .stream()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let r = waiting.read_response().expect("served once a slot freed");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok\n");
}

/// CPU time (user + system) the process has used, in clock ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// How many descriptors the process has open with a number below `below`.
fn open_fds(pid: u32, below: usize) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<usize>().ok())
        .filter(|fd| *fd < below)
        .count()
}

#[test]
fn out_of_file_descriptors_the_admin_backs_off_and_recovers() {
    let h = Headroom::start(&format!("{}{}", preamble(), fixed_response()));
    let pid = h.child.id();
    // Lower the running gateway's descriptor limit to what it has open plus twenty (room
    // for the few a worker still starting may open after "listening" is logged).
    let limit = open_fds(pid, usize::MAX) + 20;
    let ok = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("prlimit (util-linux)");
    assert!(ok.success());
    // Idle data-plane clients use up the spare descriptors; the rest cannot be accepted.
    // Ten times the spare: a descriptor the gateway held only briefly when the limit was
    // read (a fresh clone's CI run once left more than 40 free) is used up too.
    let clients: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(h.addr).unwrap())
        .collect();
    // Wait until the workers have accepted all they can: every descriptor number below the
    // limit is taken. (Nothing signals it but /proc, read every 10 ms; 10 s is a safety net.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid, limit) < limit {
        assert!(Instant::now() < deadline, "descriptors never ran out");
        std::thread::sleep(Duration::from_millis(10));
    }
    // An admin request now fails to be accepted (EMFILE), and keeps failing.
    let mut c = Client::connect(h.admin.unwrap());
    c.stream()
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    h.stderr
        .wait_for("admin: accept failed", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no accept failure logged:\n{}", h.stderr.all().join("\n")));
    // A spinning accept loop burns a core; backing off costs next to nothing.
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1)); // a measuring window, not a synchronisation
    let used = cpu_ticks(pid) - before;
    assert!(used < 10, "{used} ticks of CPU in 1 s while accepts fail");
    // Descriptors come back: the queued admin request is served.
    drop(clients);
    let r = c
        .read_response()
        .expect("admin served once descriptors are back");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok\n");
}
