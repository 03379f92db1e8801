//! The watch plane end to end: a route breaking its SLO shows in `/status`, fires the
//! burn-rate alert to a webhook (Alertmanager's v4 payload) and to a real Alertmanager
//! (Debian's `prometheus-alertmanager`, started here), and the history — hence the error
//! budget — survives a restart; a corrupt history file is moved aside.
//!
//! The watch plane samples every 10 s of wall time, so each test takes one or two of those.

mod common;
use common::*;
use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A route answering 500 to everything, with an availability SLO and an error-rate rule.
fn failing_config(extra: &str) -> String {
    format!(
        "{pre}[[route]]\nname = \"api\"\nrespond = {{ status = 500, body = \"no\" }}\n\n\
         [watch]\n{extra}\n\
         [[watch.slo]]\nroute = \"api\"\nobjective = \"99.9%\"\n\n\
         [[watch.rule]]\nname = \"errors\"\nroute = \"api\"\nerror_rate = \"1%\"\nfor = \"0s\"\n\n\
         [watch.alerting]\ngroup_wait = \"1s\"\ngroup_interval = \"1s\"\n",
        pre = preamble()
    )
}

/// An HTTP server taking POSTs and keeping their bodies, answering 200.
#[derive(Clone)]
struct Webhook {
    url: String,
    bodies: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Webhook {
    fn start() -> Webhook {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let bodies: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        let b = bodies.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                if let Some((_, body)) = read_request(&conn) {
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                    b.0.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                    b.1.notify_all();
                }
            }
        });
        Webhook { url, bodies }
    }

    /// The first body `pred` accepts, waiting up to 40 s.
    fn wait(&self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let (m, cv) = &*self.bodies;
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut got = m.lock().unwrap();
        loop {
            if let Some(v) = got
                .iter()
                .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
                .find(|v| pred(v))
            {
                return v;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no matching webhook call in {got:#?}");
            got = cv.wait_timeout(got, left).unwrap().0;
        }
    }
}

/// A real Alertmanager on loopback, killed on drop.
struct Alertmanager {
    child: Child,
    port: u16,
    _dir: std::path::PathBuf,
}

impl Alertmanager {
    fn start() -> Alertmanager {
        let dir = temp_dir();
        let port = free_port();
        std::fs::write(
            dir.join("am.yml"),
            "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n",
        )
        .unwrap();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", dir.join("am.yml").display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager (Debian package; scripts/test.sh installs it)");
        let am = Alertmanager {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while am.get("/-/ready").map(|r| r.status) != Some(200) {
            assert!(Instant::now() < deadline, "alertmanager did not get ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }

    fn get(&self, path: &str) -> Option<Response> {
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        Some(Client::connect(addr).get(path))
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_burn_alert(a: &serde_json::Value) -> bool {
    a["labels"]["alertname"] == "SloBurnRate"
        && a["labels"]["route"] == "api"
        && a["labels"]["window"] == "1h/5m"
}

#[test]
fn a_route_breaking_its_slo_shows_in_status_and_alerts_a_webhook_and_a_real_alertmanager() {
    let hook = Webhook::start();
    let am = Alertmanager::start();
    let h = Headroom::start(&failing_config(&format!(
        "[[watch.alert]]\nwebhook = \"{}\"\n\n[[watch.alert]]\nalertmanager = \"{}\"\n",
        hook.url,
        am.url()
    )));
    for _ in 0..50 {
        assert_eq!(h.get("/").status, 500);
    }
    let w = h.wait_watch("the burn rate fires on all 50", |w| {
        w["slos"][0]["total"] == 50
            && w["alerts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["labels"]["window"] == "1h/5m"))
    });
    let slo = &w["slos"][0];
    assert_eq!(slo["total"], 50, "{w:#}");
    assert_eq!(slo["bad"], 50, "{w:#}");
    assert!(
        slo["budget_left"].as_f64().unwrap() < 0.0,
        "50 errors overspend a budget of 0.05: {w:#}"
    );
    assert!(
        w["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["alert"] == "ErrorRateHigh"),
        "the rule fires too: {w:#}"
    );

    let payload = hook.wait(|v| {
        v["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(is_burn_alert))
    });
    assert_eq!(payload["version"], "4");
    assert_eq!(payload["status"], "firing");
    let alert = payload["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| is_burn_alert(a))
        .unwrap();
    assert_eq!(alert["labels"]["severity"], "page");
    assert_eq!(
        alert["labels"]["objective"], "api",
        "the config's name, as `headroom export prometheus-rules` labels it"
    );
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert!(summary.contains("99.9% availability budget"), "{summary}");

    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let alerts: serde_json::Value = am
            .get("/api/v2/alerts")
            .map(|r| r.json())
            .unwrap_or_default();
        if alerts
            .as_array()
            .is_some_and(|a| a.iter().any(is_burn_alert))
        {
            break;
        }
        assert!(Instant::now() < deadline, "alertmanager has {alerts:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(h.metric("headroom_watch_alert_transitions_total") >= 2.0);
}

#[test]
fn the_history_and_so_the_error_budget_survive_a_restart() {
    let up = Upstream::start("u");
    let dir = temp_dir();
    let path = dir.join("history.redb");
    // Forwarded this time: a route's requests are counted by the services it reaches.
    let config = failing_config(&format!("history = \"{}\"\n", path.display())).replacen(
        "respond = { status = 500, body = \"no\" }",
        &format!("service = \"s\"\n[service.s]\nreplicas = [\"{}\"]", up.addr),
        1,
    );
    let h = Headroom::start(&config);
    for i in 0..20 {
        let status = if i % 2 == 0 { 500 } else { 200 };
        assert_eq!(h.get(&format!("/?status={status}")).status, status);
    }
    h.wait_watch("the requests are in the history", |w| {
        w["slos"][0]["total"] == 20
    });
    h.signal("TERM");
    let mut h = h;
    assert!(h.child.wait().unwrap().success());
    assert!(path.exists(), "the history was written at shutdown");

    let again = Headroom::start(&config);
    let w = again.wait_watch("the history is read back", |w| w["slos"][0]["total"] == 20);
    assert_eq!(w["slos"][0]["bad"], 10, "{w:#}");
}

#[test]
fn a_corrupt_history_file_is_moved_aside_and_a_new_one_started() {
    let dir = temp_dir();
    let path = dir.join("history.redb");
    std::fs::write(&path, b"this is not a redb file, just garbage on disk").unwrap();
    let h = Headroom::start(&failing_config(&format!(
        "history = \"{}\"\n",
        path.display()
    )));
    assert_eq!(h.get("/").status, 500);
    h.wait_watch("the new history counts", |w| w["slos"][0]["total"] == 1);
    let aside: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("history.redb.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(
        h.stderr.count("history file moved aside") == 1,
        "logged once: {:?}",
        h.stderr.all()
    );
}

#[test]
fn an_unwritable_history_and_a_dead_receiver_cost_the_proxy_nothing() {
    let dir = temp_dir();
    // The history's directory is a regular file: it can never be written.
    let blocker = dir.join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let dead = format!("http://127.0.0.1:{}/hook", free_port());
    let h = Headroom::start(&failing_config(&format!(
        "history = \"{}\"\n[[watch.alert]]\nwebhook = \"{dead}\"\n",
        blocker.join("history.redb").display()
    )));
    for _ in 0..20 {
        assert_eq!(h.get("/").status, 500, "the route answers as configured");
    }
    let w = h.wait_watch("the alert was tried and failed", |w| {
        w["receivers"]["receivers"][0]["failed_attempts"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    });
    assert_eq!(w["slos"][0]["total"], 20, "judged from memory: {w:#}");
    assert!(
        h.stderr.count("history kept in memory") == 1,
        "said once: {:?}",
        h.stderr.all()
    );
    // On /metrics too, labelled by host and port (a webhook's path may hold its secret).
    let host = dead.trim_start_matches("http://").trim_end_matches("/hook");
    let failed = format!(
        "headroom_watch_alert_notifications_total{{kind=\"webhook\",receiver=\"{host}\",result=\"failed\"}}"
    );
    h.wait_watch("the failed attempts on /metrics", |_| {
        series_value(&h.metrics(), &failed).is_some_and(|n| n >= 1.0)
    });
    for _ in 0..20 {
        assert_eq!(h.get("/").status, 500);
    }
}

#[test]
fn a_reload_changes_the_objectives_and_an_impossible_one_keeps_the_running_config() {
    let config = failing_config("");
    let h = Headroom::start(&config);
    assert_eq!(h.get("/").status, 500);
    h.wait_watch("one objective", |w| {
        w["slos"].as_array().is_some_and(|s| s.len() == 1)
    });

    let tighter = config.replacen(
        "objective = \"99.9%\"\n",
        "objective = \"99.9%\"\n\n[[watch.slo]]\nname = \"fast\"\nroute = \"api\"\nobjective = \"90%\"\nlatency = \"1s\"\n",
        1,
    );
    assert!(h.reload(&tighter).contains("config reloaded"));
    let w = h.wait_watch("two objectives after the reload", |w| {
        w["slos"].as_array().is_some_and(|s| s.len() == 2)
    });
    assert_eq!(w["slos"][1]["objective"], "route api (fast)", "{w:#}");
    assert_eq!(
        w["slos"][1]["total"], 1,
        "judged on the history kept across the reload"
    );

    let impossible = tighter.replacen("objective = \"90%\"", "objective = \"100%\"", 1);
    let outcome = h.reload(&impossible);
    assert!(outcome.contains("config not reloaded"), "{outcome}");
    // The reasons follow the outcome's line: wait for them rather than read at once.
    assert!(
        h.stderr
            .wait_for("100% cannot be an objective", Duration::from_secs(10))
            .is_some(),
        "the reason is logged: {:?}",
        h.stderr.all()
    );
    let w = h.wait_watch("still two", |w| {
        w["slos"].as_array().is_some_and(|s| s.len() == 2)
    });
    assert_eq!(w["slos"][1]["target"], 0.9);
}

/// `watch.latency_buckets` lays out every latency histogram: `/metrics` shows its bounds, a
/// latency objective is judged on one of them, and a reload cannot change them (the history
/// is laid out by them too): the running config stays.
#[test]
fn latency_buckets_lay_out_the_histograms_and_cannot_change_on_reload() {
    let config = format!(
        "{pre}[[route]]\nname = \"api\"\nrespond = {{ status = 200, body = \"ok\" }}\n\n\
         [watch]\nlatency_buckets = [\"2ms\", \"300ms\", \"1s\"]\n\n\
         [[watch.slo]]\nroute = \"api\"\nobjective = \"95%\"\nlatency = \"300ms\"\n",
        pre = preamble()
    );
    let h = Headroom::start(&config);
    for _ in 0..5 {
        assert_eq!(h.get("/").status, 200);
    }
    let metrics = h.metrics();
    // The layout, not how fast this machine answered: every bound is a series, the counts
    // only grow with the bound, and the last one holds all five requests.
    let mut below = 0;
    for le in ["0.002", "0.3", "1", "+Inf"] {
        let series =
            format!("headroom_request_duration_seconds_bucket{{route=\"api\",le=\"{le}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("{series} in\n{metrics}"))
            .parse()
            .expect("a count");
        assert!(count >= below, "{series}{count} after {below}");
        below = count;
    }
    assert_eq!(below, 5, "{metrics}");
    assert!(!metrics.contains("le=\"0.25\""), "no default bound left");
    let w = h.wait_watch("the latency objective judged", |w| {
        w["slos"][0]["total"].as_u64() == Some(5)
    });
    assert_eq!(w["slos"][0]["bad"], 0, "{w:#}");
    assert_eq!(w["slos"][0]["latency_threshold_secs"], 0.3, "{w:#}");

    let other = config.replacen("\"2ms\", ", "", 1);
    let outcome = h.reload(&other);
    assert!(outcome.contains("config not reloaded"), "{outcome}");
    assert!(
        h.stderr
            .wait_for("watch.latency_buckets changed", Duration::from_secs(10))
            .is_some(),
        "{:?}",
        h.stderr.all()
    );
    assert!(h.metrics().contains("le=\"0.002\""), "the bounds stay");
}

/// A service's objective judges every route's requests to it: two routes to a failing
/// service add up in one verdict, which says it is the service's, and its alert carries
/// `service` (not `route`); the latency objective judges the replicas' answers.
#[test]
fn a_service_objective_adds_up_the_routes_to_it() {
    let up = Upstream::start_with("app", &["--error-rate", "1.0"]);
    let hook = Webhook::start();
    let config = format!(
        "{pre}[[route]]\nname = \"api\"\nmatch = {{ path_prefix = \"/api\" }}\nservice = \"app\"\n\n\
         [[route]]\nname = \"web\"\nservice = \"app\"\n\n\
         [service.app]\nreplicas = [\"{addr}\"]\n\n\
         [watch]\n\n\
         [[watch.slo]]\nservice = \"app\"\nobjective = \"99.9%\"\n\n\
         [[watch.slo]]\nservice = \"app\"\nobjective = \"99%\"\nlatency = \"5s\"\n\n\
         [[watch.alert]]\nwebhook = \"{hook}\"\n\n\
         [watch.alerting]\ngroup_wait = \"1s\"\ngroup_interval = \"1s\"\n",
        pre = preamble(),
        addr = up.addr,
        hook = hook.url
    );
    let h = Headroom::start(&config);
    for path in ["/api/a", "/api/b", "/", "/x"] {
        assert_eq!(h.get(path).status, 500);
    }
    let w = h.wait_watch("the service's verdicts", |w| {
        w["slos"][0]["total"].as_u64() == Some(4)
    });
    let (availability, latency) = (&w["slos"][0], &w["slos"][1]);
    assert_eq!(availability["service"], "app", "{w:#}");
    assert!(availability.get("route").is_none(), "{w:#}");
    assert_eq!(availability["objective"], "service app");
    assert_eq!(availability["bad"], 4);
    assert_eq!(latency["objective"], "service app (app-latency)");
    assert_eq!(
        (latency["total"].as_u64(), latency["bad"].as_u64()),
        (Some(4), Some(0)),
        "{w:#}"
    );
    let page = |a: &serde_json::Value| {
        a["labels"]["alertname"] == "SloBurnRate" && a["labels"]["window"] == "1h/5m"
    };
    let body = hook.wait(|b| b["alerts"].as_array().is_some_and(|a| a.iter().any(page)));
    assert_eq!(
        body["groupLabels"]["service"], "app",
        "grouped by service too: {body:#}"
    );
    let alert = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| page(a))
        .unwrap();
    assert_eq!(alert["labels"]["service"], "app", "{alert:#}");
    let sent = format!(
        "headroom_watch_alert_notifications_total{{kind=\"webhook\",receiver=\"{}\",result=\"sent\"}}",
        hook.url.trim_start_matches("http://").trim_end_matches("/hook")
    );
    h.wait_watch("the notification counted on /metrics", |_| {
        series_value(&h.metrics(), &sent).is_some_and(|n| n >= 1.0)
    });
    assert!(alert["labels"].get("route").is_none(), "{alert:#}");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("service app: burning its 99.9% availability budget"),
        "{alert:#}"
    );
}
