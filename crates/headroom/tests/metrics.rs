//! `/metrics` as the tools that read it see it: `promtool check metrics` (Debian's
//! `prometheus` package) lints the Prometheus text format, and a real Prometheus scrapes the
//! admin listener (asking for OpenMetrics, as it does by default) and answers queries on
//! what came through the proxy. The process metrics are there too.

mod common;
use common::*;
use std::io::Write;
use std::process::{Command, Stdio};

/// A route with a cache, one with an API key and a limit, one with a limit only: every
/// family the edge, the cache and the guard register shows up once traffic has passed.
fn busy_config(up: &Upstream) -> String {
    let hash = String::from_utf8(
        Command::new(BIN)
            .args(["key", "hash", "metrics-key"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    format!(
        "{pre}[[route]]\nname = \"cached\"\nservice = \"s\"\nmatch.path_prefix = \"/c/\"\n[route.cache]\n\n\
         [[route]]\nname = \"keyed\"\nservice = \"s\"\nmatch.path_prefix = \"/k/\"\n[route.auth]\n[[route.limit]]\nrate = \"1000/s\"\nkey = \"consumer\"\n\n\
         [[route]]\nname = \"limited\"\nservice = \"s\"\n[[route.limit]]\nrate = \"2/h\"\n\n\
         [[consumer]]\nname = \"m\"\nkeys = [\"{hash}\"]\n\n\
         [service.s]\nreplicas = [\"{addr}\"]\n",
        pre = preamble(),
        hash = hash.trim(),
        addr = up.addr
    )
}

fn send_traffic(h: &Headroom) -> usize {
    let mut sent = 0;
    for _ in 0..3 {
        assert_eq!(h.get("/c/page").status, 200);
        let k = h
            .client()
            .request("GET", "/k/x", &[("x-api-key", "metrics-key")], b"");
        assert_eq!(k.status, 200);
        assert_eq!(h.get("/k/x").status, 401);
        sent += 3;
    }
    let statuses: Vec<u16> = (0..4).map(|_| h.get("/x").status).collect();
    assert_eq!(statuses, [200, 200, 429, 429]);
    sent + 4
}

#[test]
fn metrics_pass_promtool_check_and_carry_the_process_readings() {
    let up = Upstream::start("u");
    let h = Headroom::start(&busy_config(&up));
    send_traffic(&h);
    let text = h.metrics();
    for family in [
        "headroom_requests_total",
        "headroom_cache_",
        "headroom_guard_limit_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(text.contains(family), "{family} missing from\n{text}");
    }
    assert!(h.metric("process_resident_memory_bytes") > 1e6);
    assert!(h.metric("process_open_fds") >= 3.0);

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test.sh installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn openmetrics_is_served_when_asked_for() {
    let h = Headroom::start(&format!(
        "{}[[route]]\nrespond = {{ status = 200, body = \"ok\" }}\n",
        preamble()
    ));
    assert_eq!(h.get("/").status, 200);
    let r = Client::connect(h.admin.unwrap()).request(
        "GET",
        "/metrics",
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
        b"",
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let om = r.text();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE headroom_requests counter\n"), "{om}");
    let plain = h.admin_get("/metrics");
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(!plain.text().contains("# EOF"));
}

#[test]
fn a_real_prometheus_scrapes_the_admin_listener_and_sees_the_traffic() {
    let up = Upstream::start("u");
    let h = Headroom::start(&busy_config(&up));
    let sent = send_traffic(&h);
    let prom = Prometheus::start(h.admin.unwrap());
    assert_eq!(prom.wait("up{job=\"headroom\"}", |v| v == 1.0), 1.0);
    let counted = prom.wait("sum(headroom_requests_total)", |v| v >= sent as f64);
    assert_eq!(counted, sent as f64, "every request the test sent, no more");
    let limited = prom.wait(
        "sum(headroom_guard_limit_total{route=\"limited\",result=\"limited\"})",
        |v| v >= 2.0,
    );
    assert_eq!(limited, 2.0);
    prom.wait("process_resident_memory_bytes", |v| v > 1e6);
}
