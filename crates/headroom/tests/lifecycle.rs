//! The process' life: `check`, hot reload (SIGHUP and file change), graceful shutdown, `demo`.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

fn one_service(up: &Upstream, name: &str) -> String {
    format!(
        "{}[[route]]\nservice = \"{name}\"\n\n[service.{name}]\nreplicas = [\"{}\"]\n",
        preamble(),
        up.addr
    )
}

#[test]
fn check_accepts_a_good_config_and_exits_0() {
    let ran = run_with_config(
        "check",
        "[[listener]]\nbind = \"127.0.0.1:8080\"\n[[route]]\nservice = \"a\"\n[service.a]\nreplicas = [\"127.0.0.1:9001\"]\n",
    );
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout
            .contains("ok (1 listeners, 1 routes, 1 services)"),
        "{}",
        ran.stdout
    );
}

#[test]
fn check_reports_every_error_with_file_line_key_and_suggestion_and_exits_2() {
    let ran = run_with_config(
        "check",
        "[[listener]]\nbind = \"127.0.0.1:8080\"\n\n[[route]]\nname = \"api\"\nservice = \"catalgo\"\n\n[service.catalog]\nreplicas = [\"127.0.0.1\"]\n",
    );
    assert_eq!(ran.code, Some(2));
    let (err, file) = (&ran.stderr, &ran.file);
    assert!(err.contains(&format!("{file}:6:11: route \"api\": service: unknown service \"catalgo\" (did you mean \"catalog\"?)")), "{err}");
    assert!(
        err.contains(&format!(
            "{file}:9:13: service \"catalog\": replicas: \"127.0.0.1\" has no port"
        )),
        "{err}"
    );
    assert!(err.contains("2 error(s)"), "{err}");

    let ran = run_with_config(
        "check",
        "[[listener]]\nbind = \"127.0.0.1:8080\"\n[service.a]\nreplicas = [\"127.0.0.1:1\"]\nbalanse = \"hash\"\n",
    );
    assert_eq!(ran.code, Some(2));
    assert!(
        ran.stderr
            .contains(":5:1: balanse: unknown key \"balanse\"; did you mean \"balance\"?"),
        "{}",
        ran.stderr
    );
}

#[test]
fn serve_with_an_invalid_config_exits_2() {
    let ran = run_with_config("serve", "[[listener]]\nbind = \"nowhere\"\n");
    assert_eq!(ran.code, Some(2));
    assert!(
        ran.stderr.contains(":2:8: bind: \"nowhere\" has no port"),
        "{}",
        ran.stderr
    );
}

#[test]
fn reload_under_load_fails_no_request_and_switches_service() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let h = Headroom::start(&one_service(&a, "x"));
    let stop = AtomicBool::new(false);
    let seen_b = AtomicUsize::new(0);
    let total = AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let mut c = h.client();
                while !stop.load(Ordering::Relaxed) {
                    match c.try_request("GET", "/", &[], b"") {
                        Ok(r) if r.status == 200 => {
                            if r.replica() == "b" {
                                seen_b.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(r) => failures.lock().unwrap().push(format!("{}", r.status)),
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                    total.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        while total.load(Ordering::Relaxed) < 200 {
            std::thread::yield_now();
        }
        for i in 0..6 {
            let (up, name) = if i % 2 == 0 { (&b, "y") } else { (&a, "x") };
            let outcome = h.reload(&one_service(up, name));
            assert!(outcome.contains("config reloaded"), "{outcome}");
        }
        let target = total.load(Ordering::Relaxed) + 200;
        while total.load(Ordering::Relaxed) < target {
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(
        failures.lock().unwrap().is_empty(),
        "{:?}",
        failures.lock().unwrap()
    );
    assert!(seen_b.load(Ordering::Relaxed) > 0);
    assert_eq!(
        h.metric("headroom_config_reloads_total{result=\"ok\"}"),
        6.0
    );
}

#[test]
fn a_bad_reload_is_rejected_and_the_running_config_stays() {
    let a = Upstream::start("a");
    let h = Headroom::start(&one_service(&a, "x"));
    let outcome = h.reload(&format!("{}[[route]]\nservice = \"nope\"\n", preamble()));
    assert!(outcome.contains("config not reloaded"), "{outcome}");
    // The errors follow the outcome line, on lines of their own.
    let why = h
        .stderr
        .wait_for("unknown service \"nope\"", Duration::from_secs(10));
    assert!(why.is_some(), "{}", h.stderr.all().join("\n"));
    assert_eq!(h.get("/").status, 200);
    assert_eq!(
        h.metric("headroom_config_reloads_total{result=\"rejected\"}"),
        1.0
    );
    // Listener changes need a restart: rejected too, with a clear reason.
    let outcome = h.reload(&one_service(&a, "x").replace("name = \"public\"", "name = \"other\""));
    assert!(outcome.contains("listeners changed"), "{outcome}");
    assert_eq!(h.get("/").status, 200);
}

#[test]
fn health_state_survives_a_reload_for_replicas_that_stay() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let cfg = |route_path: &str| {
        format!(
            "{}[[route]]\nmatch = {{ path_prefix = \"{route_path}\" }}\nservice = \"s\"\n\n[service.s]\nreplicas = [{}]\nhealth = {{ interval = \"100ms\", fall = 1, rise = 1000 }}\n",
            preamble(),
            replicas(&[&a, &b])
        )
    };
    let h = Headroom::start(&cfg("/"));
    b.set_health(503);
    let baddr = b.addr.to_string();
    let b_healthy = move |s: &serde_json::Value| {
        s["services"][0]["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["replica"] == baddr && r["healthy"] == true)
    };
    h.wait_status("b unhealthy", |s| !b_healthy(s));
    b.set_health(200);
    let outcome = h.reload(&cfg("/v"));
    assert!(outcome.contains("config reloaded"), "{outcome}");
    // rise = 1000 keeps b down unless the reload forgot its state.
    assert!(!b_healthy(&h.status()));
    assert_eq!(tally(&h, "/v", &[], 20).get("b"), None);
}

#[test]
fn a_changed_config_file_is_reloaded_without_a_signal() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let h = Headroom::start(&one_service(&a, "x").replace("watch = false", "watch = true"));
    assert_eq!(h.get("/").replica(), "a");
    std::fs::write(
        &h.config,
        one_service(&b, "y").replace("watch = false", "watch = true"),
    )
    .unwrap();
    h.stderr
        .wait_for("file change", Duration::from_secs(10))
        .expect("reload on file change");
    assert_eq!(h.get("/").replica(), "b");
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_0() {
    let a = Upstream::start("a");
    let mut h = Headroom::start(&one_service(&a, "x"));
    let addr = h.addr;
    let slow = std::thread::spawn(move || Client::connect(addr).get("/?delay=1500"));
    // The request is in flight once the upstream has it.
    while a.served() == 0 {
        std::thread::yield_now();
    }
    h.signal("TERM");
    h.stderr
        .wait_for("SIGTERM", Duration::from_secs(5))
        .expect("SIGTERM logged");
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "the in-flight request completed");
    let status = h.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer accepting"
    );
}

/// `headroom demo` on free ports, once its admin listener is up: the process, its port and
/// its stdout.
fn start_demo() -> (std::process::Child, u16, Lines) {
    let (child, port, out, _err) = start_demo_logged();
    (child, port, out)
}

/// [`start_demo`], with its stderr (the gateway's log) too.
fn start_demo_logged() -> (std::process::Child, u16, Lines, Lines) {
    let (port, admin) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args(["demo", "--port", &port.to_string()])
        .args(["--admin-port", &admin.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = Lines::follow(child.stdout.take().unwrap());
    let err = Lines::follow(child.stderr.take().unwrap());
    err.wait_for("admin listening", Duration::from_secs(20))
        .expect("demo started");
    (child, port, out, err)
}

#[test]
fn the_demo_s_api_route_is_rate_limited_as_it_says() {
    let (mut child, port, out) = start_demo();
    assert!(
        out.wait_for("/api/", Duration::from_secs(1)).is_some(),
        "the try-line"
    );
    let mut c = Client::connect(format!("127.0.0.1:{port}").parse().unwrap());
    let statuses: Vec<u16> = (0..15).map(|_| c.get("/api/").status).collect();
    // 5/s with bursts of 10: the first 10 pass; 15 requests take far less than the 1 s
    // that would refill 5 more, so some of the rest are limited.
    assert!(statuses[..10].iter().all(|&s| s == 200), "{statuses:?}");
    assert!(statuses[10..].contains(&429), "{statuses:?}");
    let r = c.get("/api/");
    assert!(r.header("ratelimit-policy").is_some() || r.status == 429);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn demo_serves_through_three_replicas() {
    let (mut child, port, out) = start_demo();
    assert!(
        out.wait_for("curl -s", Duration::from_secs(1)).is_some(),
        "demo prints what to try"
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = Client::connect(addr);
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let r = c.get("/");
        // replica-3 fails 5% of requests; the demo retries them on another replica.
        assert_eq!(r.status, 200, "{}", r.text());
        names.insert(r.replica());
    }
    assert!(names.len() >= 2, "{names:?}");
    assert_eq!(c.get("/hello").text(), "hello from headroom\n");
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn routes_can_be_bound_to_some_listeners_only() {
    let a = Upstream::start("a");
    let cfg = format!(
        "{}[[listener]]\nname = \"internal\"\nbind = \"127.0.0.1:0\"\n\n[[route]]\nlisteners = [\"internal\"]\nmatch = {{ path_prefix = \"/admin\" }}\nrespond = {{ status = 200, body = \"internal only\" }}\n\n[[route]]\nservice = \"x\"\n\n[service.x]\nreplicas = [\"{}\"]\n",
        preamble(),
        a.addr
    );
    let h = Headroom::start(&cfg);
    let line = h
        .stderr
        .wait_for("listener=internal", Duration::from_secs(5))
        .expect("second listener");
    let internal: std::net::SocketAddr = field(&line, "addr=").parse().unwrap();
    assert_ne!(internal, h.addr);
    assert_eq!(
        Client::connect(internal).get("/admin").text(),
        "internal only"
    );
    // On the public listener the first route does not exist: the request goes to the service.
    assert_eq!(h.get("/admin").replica(), "a");
}

#[test]
fn the_admin_token_is_required_when_set() {
    let a = Upstream::start("a");
    let cfg = one_service(&a, "x").replace(
        "[admin]\nbind = \"127.0.0.1:0\"\n",
        "[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n",
    );
    let h = Headroom::start(&cfg);
    let admin = h.admin.unwrap();
    let r = Client::connect(admin).get("/metrics");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = Client::connect(admin).request(
        "GET",
        "/metrics",
        &[("Authorization", "Bearer wrong")],
        b"",
    );
    assert_eq!(r.status, 401);
    let r = Client::connect(admin).request(
        "GET",
        "/metrics",
        &[("Authorization", "Bearer s3cret")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(r.text().contains("headroom_inflight_requests"));
}

#[test]
fn shutdown_gives_up_on_requests_still_running_at_the_deadline() {
    let a = Upstream::start("a");
    let mut h = Headroom::start(
        &one_service(&a, "x").replace("shutdown_timeout = \"10s\"", "shutdown_timeout = \"300ms\""),
    );
    let addr = h.addr;
    let stuck = std::thread::spawn(move || {
        Client::connect(addr).try_request("GET", "/?delay=60000", &[], b"")
    });
    while a.served() == 0 {
        std::thread::yield_now();
    }
    h.signal("TERM");
    // The process does not wait a minute for the stuck request: it exits 0 at the deadline
    // (the test's own 20 s client timeout would fail it otherwise).
    assert_eq!(h.child.wait().unwrap().code(), Some(0));
    assert!(
        stuck.join().unwrap().is_err(),
        "the stuck request's connection was closed"
    );
}

/// The demo's promise ("all 200: replica-3's errors are retried") holds after a replica is
/// killed: the dead one's refused connects cost no attempt, so a retry never lands on it.
#[test]
fn demo_answers_all_200_after_a_replica_is_killed() {
    let (mut child, port, _out) = start_demo();
    // The demo's replicas run under its shims; replica-1 is the fast, reliable one.
    let victim = demo_replicas(child.id())
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("replica-1\0"))
        })
        .expect("replica-1 runs under the demo")
        .to_string();
    assert!(Command::new("kill")
        .args(["-9", &victim])
        .status()
        .unwrap()
        .success());
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = Client::connect(addr);
    let mut statuses = BTreeMap::new();
    for _ in 0..60 {
        *statuses.entry(c.get("/").status).or_insert(0) += 1;
    }
    assert_eq!(statuses, BTreeMap::from([(200, 60)]));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// The demo-upstream processes under `pid` (its shims' children).
fn demo_replicas(pid: u32) -> Vec<u32> {
    let children = |p: u32| -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/{p}/task/{p}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .collect()
    };
    children(pid)
        .into_iter()
        .flat_map(children)
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("\0demo-upstream\0"))
        })
        .collect()
}

/// A demo killed with SIGKILL leaves none of its replicas running (the fixed ones run under
/// shims, as the autoscaled ones do).
#[test]
fn a_killed_demo_leaves_no_replica_running() {
    let (mut child, _port, _out) = start_demo();
    let replicas = demo_replicas(child.id());
    assert!(replicas.len() >= 3, "{replicas:?}");
    let _ = child.kill();
    let _ = child.wait();
    let gone = |p: &u32| {
        std::fs::read_to_string(format!("/proc/{p}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    // Not our children (the shims' are): polled, there is no exit to wait on.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !replicas.iter().all(gone) {
        assert!(
            std::time::Instant::now() < deadline,
            "still running: {replicas:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The demo's `/work/` service is autoscaled (1 to 5 replicas, request-driven): its first
/// replica is started by the autoscaler and answers; the try-line says how to load it.
#[test]
fn the_demo_autoscales_its_work_service() {
    let (mut child, port, out, err) = start_demo_logged();
    assert!(
        out.wait_for("/work/ autoscales 1 to 5 replicas", Duration::from_secs(1))
            .is_some(),
        "the try-line"
    );
    // Its first replica takes traffic once its first health check passes, which is logged.
    assert!(
        err.wait_for(
            "replica is healthy again service=scaled",
            Duration::from_secs(15)
        )
        .is_some(),
        "{:#?}",
        err.all()
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let r = Client::connect(addr).get("/work/x");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.replica(), "scaled-0", "{}", r.text());
    let _ = child.kill();
    let _ = child.wait();
}
