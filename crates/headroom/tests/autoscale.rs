//! The autoscaler end to end, with real replica processes (`headroom demo-upstream` under
//! the `process` driver): a load step scales the service up and its end scales it down
//! without a failed request, in both modes; a crashed replica is replaced; a command that
//! cannot start is reported and retried; and no replica outlives headroom, however it ends.

mod common;
use common::*;
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One route to service `app`, autoscaled with `autoscale` (TOML lines of
/// `[service.app.autoscale]`), its replicas answering after `delay_ms`.
fn config(autoscale: &str, delay_ms: u32, process_extra: &str) -> String {
    format!(
        "{pre}[[route]]\nname = \"app\"\nservice = \"app\"\n\n\
         [service.app]\nbalance = \"least-requests\"\n\n\
         [service.app.autoscale]\n{autoscale}\n\n\
         [service.app.autoscale.process]\n\
         command = [\"{BIN}\", \"demo-upstream\", \"--bind\", \"127.0.0.1:{{port}}\", \"--name\", \"r{{index}}\", \"--delay-ms\", \"{delay_ms}\"]\n\
         grace = \"5s\"\n{process_extra}\n",
        pre = preamble()
    )
}

fn app(h: &Headroom) -> serde_json::Value {
    h.status()["autoscale"]["app"].clone()
}

/// The pids of the replicas that are up.
fn pids(h: &Headroom) -> Vec<u32> {
    app(h)["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["pid"].as_u64())
        .map(|p| p as u32)
        .collect()
}

/// Replicas of `app` in the edge's service (taking traffic or not).
fn in_service(h: &Headroom) -> usize {
    h.status()["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["service"] == "app"))
        .and_then(|s| s["replicas"].as_array())
        .map_or(0, |r| {
            r.iter()
                .filter(|r| r["source"] == "autoscaler" && r["available"] == true)
                .count()
        })
}

fn wait_replicas(h: &Headroom, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let seen = h.stderr.all().len();
        let up = in_service(h);
        let current = app(h)["current"].as_u64();
        if up == n && current == Some(n as u64) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {n} replicas: {up} in the service; autoscale {:#}",
            app(h)
        );
        next_change(h, seen);
    }
}

/// Waits for headroom to log something past line `seen` (every start, stop, drain and
/// decision is logged), or for the next refresh of `/status`' autoscale part (every second),
/// whichever comes first.
fn next_change(h: &Headroom, seen: usize) {
    h.stderr.wait_past(seen, Duration::from_secs(1));
}

/// `clients` threads sending GETs in a loop until dropped; counts answers and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(h: &Headroom, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), h.addr);
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    while !stop.load(Relaxed) {
                        match c.try_request("GET", "/", &[], b"") {
                            Ok(r) if r.status == 200 => ok.fetch_add(1, Relaxed),
                            Ok(r) => {
                                eprintln!("failed: {} {}", r.status, r.text());
                                failed.fetch_add(1, Relaxed)
                            }
                            Err(e) => {
                                eprintln!("failed: {e}");
                                c = Client::connect(addr);
                                failed.fetch_add(1, Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    /// Stops the clients; (answered 200, failed).
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        (self.ok.load(Relaxed), self.failed.load(Relaxed))
    }
}

fn alive(pid: u32) -> bool {
    // A zombie is gone for our purpose: its parent has not reaped it yet.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Polls `/proc` until none of `pids` runs: they are not our children (the shims' are), so
/// there is no exit to wait on without `pidfd_open`, which needs `unsafe` here.
fn wait_gone(pids: &[u32], limit: Duration) {
    let deadline = Instant::now() + limit;
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "replicas still running: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The HPA on in-flight requests: 8 clients against replicas taking 200 ms each ask for 4
/// (8 in flight, 2 per replica); with one client left, back to 1 after the scale-down
/// stabilisation — and no request fails on the way up or down.
#[test]
fn hpa_scales_up_under_load_and_down_after_it_without_a_failed_request() {
    let h = Headroom::start(&config(
        "min = 1\nmax = 4\ninflight = 2\ninterval = \"1s\"\n[service.app.autoscale.scale_down]\nstabilization = \"3s\"",
        200,
        "",
    ));
    wait_replicas(&h, 1, Duration::from_secs(15));
    let load = Load::start(&h, 8);
    wait_replicas(&h, 4, Duration::from_secs(20));
    let (ok, failed) = load.finish();
    assert_eq!(
        failed, 0,
        "no request failed while scaling up ({ok} answered)"
    );
    let events = app(&h)["events"].clone();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "scale" && e["from"] == 1 && e["to"] == 4),
        "one decision from 1 to 4 (+100% or +4 per 15 s): {events:#}"
    );
    let light = Load::start(&h, 1);
    wait_replicas(&h, 1, Duration::from_secs(20));
    let (ok, failed) = light.finish();
    assert_eq!(
        failed, 0,
        "no request failed while scaling down ({ok} answered)"
    );
    assert!(ok > 0);
    assert_eq!(
        h.metric("headroom_autoscale_replicas{service=\"app\",state=\"desired\"}"),
        1.0
    );
    assert!(h.metric("headroom_autoscale_scalings_total{service=\"app\",direction=\"up\"}") >= 1.0);
    assert!(
        h.metric("headroom_autoscale_scalings_total{service=\"app\",direction=\"down\"}") >= 1.0
    );
    // The replicas' own processes on /metrics (issue 11: their CPU and memory).
    let m = h.metrics();
    assert!(
        m.contains(
            "headroom_replica_process_resident_memory_bytes{service=\"app\",replica=\"127.0.0.1:"
        ),
        "{m}"
    );
}

/// Knative's mode: the in-flight average asks for ceil(8 / (2 × 70%)) = 6, bounded by max.
#[test]
fn request_driven_mode_scales_on_in_flight_requests() {
    let h = Headroom::start(&config(
        "min = 1\nmax = 3\nmode = \"requests\"\ninflight = 2\nstable_window = \"6s\"",
        200,
        "",
    ));
    wait_replicas(&h, 1, Duration::from_secs(15));
    let load = Load::start(&h, 8);
    wait_replicas(&h, 3, Duration::from_secs(20));
    let (_, failed) = load.finish();
    assert_eq!(failed, 0);
    let d = &app(&h)["last_decision"];
    assert!(d["stable_concurrency"].as_f64().is_some(), "{d:#}");
    wait_replicas(&h, 1, Duration::from_secs(30));
}

/// A replica killed from outside is taken out and replaced after the back-off, and the
/// kill counted.
#[test]
fn a_crashed_replica_is_replaced() {
    let h = Headroom::start(&config(
        "min = 1\nmax = 2\ninflight = 100\ninterval = \"1s\"",
        0,
        "",
    ));
    wait_replicas(&h, 1, Duration::from_secs(15));
    let before = pids(&h);
    assert_eq!(before.len(), 1);
    assert!(std::process::Command::new("kill")
        .args(["-9", &before[0].to_string()])
        .status()
        .unwrap()
        .success());
    h.wait_metric(
        "headroom_autoscale_replica_exits_total{service=\"app\"}",
        1.0,
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = h.stderr.all().len();
        let now = pids(&h);
        if now.len() == 1 && now != before && in_service(&h) == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "not replaced: {:#}", app(&h));
        next_change(&h, seen);
    }
    assert_eq!(h.get("/").status, 200);
    let events = app(&h)["events"].to_string();
    assert!(
        events.contains("\"exited\"") && events.contains("signal 9"),
        "{events}"
    );
}

/// A command that exits at once: reported with its log's last lines, counted, retried
/// after the back-off; the gateway keeps serving (503 for the service, nothing else lost).
#[test]
fn a_replica_that_cannot_start_is_reported_and_retried() {
    let logs = temp_dir();
    let text = format!(
        "{pre}[[route]]\nname = \"app\"\nservice = \"app\"\n\n\
         [service.app.autoscale]\nmax = 2\ninflight = 10\n\n\
         [service.app.autoscale.process]\ncommand = [\"sh\", \"-c\", \"echo no such app >&2; exit 3\"]\nlog_dir = \"{}\"\n",
        logs.display(),
        pre = preamble()
    );
    let h = Headroom::start(&text);
    h.wait_metric_at_least(
        "headroom_autoscale_start_failures_total{service=\"app\"}",
        2.0,
    );
    let line = h
        .stderr
        .wait_for("replica did not start", Duration::from_secs(5))
        .unwrap();
    assert!(
        line.contains("exit code 3") && line.contains("no such app"),
        "{line}"
    );
    assert_eq!(
        h.get("/").status,
        503,
        "no replica: the service answers 503"
    );
    let events = app(&h)["events"].to_string();
    assert!(events.contains("start_failed"), "{events}");
}

/// SIGKILL to headroom: its replicas' shims see their stdin close and stop them.
#[test]
fn no_replica_outlives_a_killed_headroom() {
    let mut h = Headroom::start(&config("min = 2\nmax = 2\ninflight = 10", 0, ""));
    wait_replicas(&h, 2, Duration::from_secs(15));
    let running = pids(&h);
    assert_eq!(running.len(), 2);
    h.child.kill().unwrap();
    h.child.wait().unwrap();
    wait_gone(&running, Duration::from_secs(7));
}

/// SIGTERM: requests drain, then the replicas are stopped, and headroom exits 0.
#[test]
fn a_graceful_shutdown_stops_the_replicas_after_the_requests() {
    let mut h = Headroom::start(&config("min = 1\nmax = 1\ninflight = 10", 300, ""));
    wait_replicas(&h, 1, Duration::from_secs(15));
    let running = pids(&h);
    let addr = h.addr;
    let slow = std::thread::spawn(move || Client::connect(addr).get("/").status);
    // The request is in flight when the signal arrives.
    h.wait_status("the request in flight", |s| s["inflight"] == 1);
    h.signal("TERM");
    assert_eq!(
        slow.join().unwrap(),
        200,
        "answered by the replica before it stopped"
    );
    let status = h.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    wait_gone(&running, Duration::from_secs(1));
}

/// The advisor names a service its load holds at `max`, with the `max` to set.
#[test]
fn the_advisor_names_a_service_held_at_its_max() {
    let h = Headroom::start(&config(
        "min = 1\nmax = 1\ninflight = 1\ninterval = \"1s\"",
        200,
        "",
    ));
    wait_replicas(&h, 1, Duration::from_secs(15));
    let load = Load::start(&h, 6);
    let deadline = Instant::now() + Duration::from_secs(15);
    let finding = loop {
        let seen = h.stderr.all().len();
        let out = std::process::Command::new(BIN)
            .args(["advise", "--json", "--admin", &h.admin.unwrap().to_string()])
            .output()
            .unwrap();
        let findings: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(f) = findings
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["kind"] == "at_replica_ceiling")
        {
            break f.clone();
        }
        assert!(Instant::now() < deadline, "{findings:#}\n{:#}", app(&h));
        next_change(&h, seen);
    };
    load.finish();
    assert!(
        finding["title"]
            .as_str()
            .unwrap()
            .contains("service app is held at its max of 1"),
        "{finding:#}"
    );
    assert!(
        finding["change"]
            .as_str()
            .unwrap()
            .contains("[service.app.autoscale]\nmax = "),
        "{finding:#}"
    );
}

/// `min = 0`: nothing runs until a request comes; it is held while the first replica
/// starts, then answered; after `idle` without a request the replica stops, and the next
/// request starts one again. The cold start is measured.
#[test]
fn from_zero_a_request_waits_for_the_first_replica_and_idleness_takes_it_away() {
    let h = Headroom::start(&config(
        "min = 0\nmax = 2\nmode = \"requests\"\ninflight = 10\nstable_window = \"6s\"\nidle = \"2s\"",
        0,
        "",
    ));
    h.wait_status("the controller's first look", |s| {
        s["autoscale"]["app"]["current"] == 0
    });
    assert!(pids(&h).is_empty(), "nothing runs before a request");
    let r = h.get("/first");
    assert_eq!(r.status, 200, "held, then answered: {}", r.text());
    assert_eq!(
        h.metric("headroom_autoscale_held_requests_total{service=\"app\",result=\"released\"}"),
        1.0
    );
    // `/status`' autoscale part is refreshed every second.
    h.wait_status("the cold start in /status", |s| {
        s["autoscale"]["app"]["cold_start"]["last_seconds"]
            .as_f64()
            .is_some_and(|s| s > 0.0)
    });
    assert_eq!(
        h.metric("headroom_autoscale_cold_start_seconds_count{service=\"app\"}"),
        1.0
    );
    let started = pids(&h);
    assert_eq!(started.len(), 1);
    // No more requests: back to zero after the stable window and `idle`.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = h.stderr.all().len();
        if app(&h)["current"] == 0 && in_service(&h) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still up: {:#}", app(&h));
        next_change(&h, seen);
    }
    wait_gone(&started, Duration::from_secs(7));
    assert_eq!(h.get("/again").status, 200, "a new cold start");
    assert_eq!(
        h.metric("headroom_autoscale_cold_start_seconds_count{service=\"app\"}"),
        2.0
    );
}

/// A first replica that never comes: the held request gets 503 with `Retry-After` after
/// `cold_start_timeout`; beyond `cold_start_queue` a request is refused at once.
#[test]
fn a_cold_start_that_does_not_come_answers_503_with_retry_after() {
    let text = format!(
        "{pre}[[route]]\nname = \"app\"\nservice = \"app\"\n\n\
         [service.app.autoscale]\nmin = 0\nmax = 1\ninflight = 10\ncold_start_timeout = \"1s\"\ncold_start_queue = 1\n\n\
         [service.app.autoscale.process]\ncommand = [\"sleep\", \"100\"]\nstartup_timeout = \"30s\"\ngrace = \"1s\"\n",
        pre = preamble()
    );
    let h = Headroom::start(&text);
    let addr = h.addr;
    let held = std::thread::spawn(move || Client::connect(addr).get("/"));
    h.wait_metric("headroom_autoscale_held_requests{service=\"app\"}", 1.0);
    let refused = h.get("/");
    assert_eq!(refused.status, 503, "the queue of 1 is full");
    assert!(
        refused.text().contains("already wait"),
        "{}",
        refused.text()
    );
    let r = held.join().unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.text().contains("cold_start_timeout"), "{}", r.text());
    assert_eq!(
        h.metric("headroom_autoscale_held_requests_total{service=\"app\",result=\"timed_out\"}"),
        1.0
    );
    assert_eq!(
        h.metric("headroom_autoscale_held_requests_total{service=\"app\",result=\"refused\"}"),
        1.0
    );
}

/// A `schedule` window in force raises `min`: two replicas run with no load at all.
#[test]
fn a_schedule_window_raises_min() {
    // Started every minute, ended never (there is no 31 February): always on.
    let h = Headroom::start(&config(
        "min = 1\nmax = 3\ninflight = 10\ninterval = \"1s\"\n\
         [[service.app.autoscale.schedule]]\nstart = \"* * * * *\"\nend = \"0 0 31 2 *\"\nmin = 2\nutc_offset = \"+01:00\"",
        0,
        "",
    ));
    wait_replicas(&h, 2, Duration::from_secs(15));
    let a = app(&h);
    assert_eq!(
        (a["min"].as_u64(), a["configured_min"].as_u64()),
        (Some(2), Some(1)),
        "{a:#}"
    );
}

fn redis_cli(url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-u", url])
        .args(args)
        .output()
        .expect("redis-cli (Debian package redis-tools; scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Redis list's length sizes the service (KEDA's Redis list scaler): 250 items at 100 per
/// replica ask for 3. Redis gone: the target proposes nothing — the replicas stay, never
/// read as an empty queue — and the failure is counted; back and emptied: down to `min`.
#[test]
fn a_redis_list_sizes_the_service_and_a_dead_redis_changes_nothing() {
    let mut redis = headroom_redis::testing::RedisServer::start();
    let url = redis.url();
    let items: Vec<String> = (0..250).map(|i| i.to_string()).collect();
    let mut push = vec!["RPUSH", "jobs"];
    push.extend(items.iter().map(String::as_str));
    redis_cli(&url, &push);
    let h = Headroom::start(&config(
        &format!(
            "min = 1\nmax = 4\ninterval = \"1s\"\n\
             [service.app.autoscale.queue]\nredis = \"{url}\"\nlist = \"jobs\"\nper_replica = 100\n\
             [service.app.autoscale.scale_down]\nstabilization = \"0s\""
        ),
        0,
        "",
    ));
    wait_replicas(&h, 3, Duration::from_secs(15));
    redis.kill();
    h.wait_metric_at_least(
        "headroom_autoscale_metric_errors_total{service=\"app\",target=\"queue\"}",
        2.0,
    );
    assert!(h.stderr.count("queue target not read") == 1, "logged once");
    assert_eq!(app(&h)["current"], 3, "a dead Redis is not an empty queue");
    redis.restart();
    // Restarted without persistence: the list is gone, the queue empty.
    wait_replicas(&h, 1, Duration::from_secs(15));
    assert!(h.stderr.count("queue target read again") >= 1);
}

/// A stream's consumer group lag (entries not yet delivered to the group, Redis 7).
#[test]
fn a_stream_groups_lag_sizes_the_service() {
    let redis = headroom_redis::testing::RedisServer::start();
    let url = redis.url();
    redis_cli(
        &url,
        &["XGROUP", "CREATE", "events", "workers", "$", "MKSTREAM"],
    );
    for i in 0..5 {
        redis_cli(&url, &["XADD", "events", "*", "n", &i.to_string()]);
    }
    let h = Headroom::start(&config(
        &format!(
            "min = 1\nmax = 4\ninterval = \"1s\"\n\
             [service.app.autoscale.queue]\nredis = \"{url}\"\nstream = \"events\"\ngroup = \"workers\"\nper_replica = 2"
        ),
        0,
        "",
    ));
    wait_replicas(&h, 3, Duration::from_secs(15));
    let d = app(&h)["last_decision"]["proposals"].to_string();
    assert!(d.contains("queue at"), "{d}");
}

/// Two more failed readings of `target` are counted (so decisions were made without it),
/// and the service is still at `n`, desired and running: a missing reading is not a zero.
fn assert_unread_target_holds(h: &Headroom, target: &str, n: u32) {
    let errors =
        format!("headroom_autoscale_metric_errors_total{{service=\"app\",target=\"{target}\"}}");
    let before = h.metric(&errors);
    h.wait_metric_at_least(&errors, before + 2.0);
    let a = app(h);
    assert_eq!(
        (&a["desired"], &a["current"]),
        (&n.into(), &n.into()),
        "an unread {target} is not a zero"
    );
}

/// An external metric over Prometheus' HTTP API (KEDA's Prometheus scaler), from a real
/// Prometheus: `vector(250)` at 100 per replica asks for 3. Prometheus gone: the target
/// proposes nothing — the replicas stay — and the failure is counted and logged once.
#[test]
fn a_prometheus_query_sizes_the_service_and_a_dead_prometheus_changes_nothing() {
    // It scrapes nothing this test needs: the query is an expression of its own.
    let mut prom = Prometheus::start("127.0.0.1:9".parse().unwrap());
    prom.wait("vector(1)", |v| v == 1.0);
    let h = Headroom::start(&config(
        &format!(
            "min = 1\nmax = 4\ninterval = \"1s\"\n\
             [service.app.autoscale.prometheus]\nurl = \"{}\"\nquery = \"vector(250)\"\nper_replica = 100\n\
             [service.app.autoscale.scale_down]\nstabilization = \"0s\"",
            prom.url()
        ),
        0,
        "",
    ));
    wait_replicas(&h, 3, Duration::from_secs(30));
    let d = app(&h)["last_decision"]["proposals"].to_string();
    assert!(d.contains("prometheus at 250% of its target"), "{d}");
    prom.kill();
    assert_unread_target_holds(&h, "prometheus", 3);
    let d = app(&h)["last_decision"]["proposals"].to_string();
    assert!(d.contains("prometheus: not read"), "{d}");
    assert_eq!(
        h.stderr.count("prometheus target not read"),
        1,
        "logged once per streak"
    );
}

/// A query that returns no series (a metric not there yet, a typo) is not 0 either: after
/// a reload to such a query the service stays where it is, and the reason is in the log.
#[test]
fn a_prometheus_query_without_a_series_changes_nothing() {
    let prom = Prometheus::start("127.0.0.1:9".parse().unwrap());
    prom.wait("vector(1)", |v| v == 1.0);
    let with_query = |q: &str| {
        config(
            &format!(
                "min = 1\nmax = 4\ninterval = \"1s\"\n\
                 [service.app.autoscale.prometheus]\nurl = \"{}\"\nquery = \"{q}\"\nper_replica = 100\n\
                 [service.app.autoscale.scale_down]\nstabilization = \"0s\"",
                prom.url()
            ),
            0,
            "",
        )
    };
    let h = Headroom::start(&with_query("vector(250)"));
    wait_replicas(&h, 3, Duration::from_secs(30));
    assert!(h
        .reload(&with_query("no_such_metric_total"))
        .contains("config reloaded"));
    let line = h
        .stderr
        .wait_for("the query returned no series", Duration::from_secs(30))
        .expect("the empty answer is logged");
    assert!(line.contains("no_such_metric_total"), "{line}");
    assert_unread_target_holds(&h, "prometheus", 3);
}

/// A real RabbitMQ (Debian's `rabbitmq-server`, its management plugin on), on free
/// loopback ports, its files in a temp dir; it and its epmd are killed on drop.
struct RabbitMq {
    epmd: std::process::Child,
    server: std::process::Child,
    api: std::net::SocketAddr,
    _dir: std::path::PathBuf,
}

impl RabbitMq {
    fn start() -> RabbitMq {
        let dir = temp_dir();
        let (amqp, api, dist, epmd_port) = (free_port(), free_port(), free_port(), free_port());
        std::fs::write(dir.join("enabled_plugins"), "[rabbitmq_management].\n").unwrap();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{amqp}\nmanagement.tcp.ip = 127.0.0.1\n\
                 management.tcp.port = {api}\ncollect_statistics_interval = 500\n"
            ),
        )
        .unwrap();
        // Our own epmd in the foreground: the one RabbitMQ would start daemonizes and
        // would outlive the test.
        let epmd = std::process::Command::new("epmd")
            .args(["-port", &epmd_port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("epmd (Debian package erlang-base, with rabbitmq-server; scripts/test.sh installs it)");
        let d = dir.display().to_string();
        let server = std::process::Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .env("HOME", &d)
            .env("RABBITMQ_NODENAME", format!("headroom{amqp}@localhost"))
            .env("RABBITMQ_BASE", &d)
            .env("RABBITMQ_MNESIA_BASE", format!("{d}/mnesia"))
            .env("RABBITMQ_LOG_BASE", format!("{d}/log"))
            .env("RABBITMQ_CONFIG_FILE", format!("{d}/rabbitmq.conf"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                format!("{d}/enabled_plugins"),
            )
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            .current_dir(&dir)
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("rabbitmq-server (Debian package; scripts/test.sh installs it)");
        let r = RabbitMq {
            epmd,
            server,
            api: format!("127.0.0.1:{api}").parse().unwrap(),
            _dir: dir,
        };
        // Its management API answering is the readiness that matters here.
        let deadline = Instant::now() + Duration::from_secs(90);
        while r
            .try_call("GET", "/api/overview", "")
            .is_none_or(|s| s != 200)
        {
            assert!(
                Instant::now() < deadline,
                "RabbitMQ did not start within 90 s"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        r
    }

    fn url(&self) -> String {
        format!("http://guest:guest@{}", self.api)
    }

    fn try_call(&self, method: &str, path: &str, body: &str) -> Option<u16> {
        std::net::TcpStream::connect_timeout(&self.api, Duration::from_secs(1)).ok()?;
        let mut c = Client::connect(self.api);
        let headers = [
            ("authorization", "Basic Z3Vlc3Q6Z3Vlc3Q="), // guest:guest
            ("content-type", "application/json"),
        ];
        c.try_request(method, path, &headers, body.as_bytes())
            .ok()
            .map(|r| r.status)
    }

    fn call(&self, method: &str, path: &str, body: &str) {
        let status = self.try_call(method, path, body);
        assert!(
            matches!(status, Some(200..=204)),
            "{method} {path}: {status:?}"
        );
    }

    fn kill(&mut self) {
        let group = format!("-{}", self.server.id());
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .status();
        let _ = self.server.wait();
        let _ = self.epmd.kill();
        let _ = self.epmd.wait();
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A RabbitMQ queue's depth (KEDA's RabbitMQ scaler, over the management API): 5 messages
/// at 2 per replica ask for 3. RabbitMQ gone: the replicas stay, the failure is counted.
#[test]
fn a_rabbitmq_queue_sizes_the_service_and_a_dead_broker_changes_nothing() {
    let mut mq = RabbitMq::start();
    mq.call("PUT", "/api/queues/%2F/jobs", r#"{"durable":false}"#);
    for _ in 0..5 {
        mq.call(
            "POST",
            "/api/exchanges/%2F/amq.default/publish",
            r#"{"properties":{},"routing_key":"jobs","payload":"job","payload_encoding":"string"}"#,
        );
    }
    let h = Headroom::start(&config(
        &format!(
            "min = 1\nmax = 4\ninterval = \"1s\"\n\
             [service.app.autoscale.queue]\nrabbitmq = \"{}\"\nqueue = \"jobs\"\nper_replica = 2\n\
             [service.app.autoscale.scale_down]\nstabilization = \"0s\"",
            mq.url()
        ),
        0,
        "",
    ));
    wait_replicas(&h, 3, Duration::from_secs(30));
    let d = app(&h)["last_decision"]["proposals"].to_string();
    assert!(d.contains("queue at"), "{d}");
    mq.kill();
    assert_unread_target_holds(&h, "queue", 3);
}
