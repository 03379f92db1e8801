//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) loads the admin
//! listener's page, which must render without console errors and show what came through the
//! proxy in this test — the routes' charts, the replica table, an SLO being broken and its
//! alert. A screenshot is kept as a test artifact (`target/tmp/dashboard.png`).

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn config(up: &Upstream) -> String {
    format!(
        "{pre}[[route]]\nname = \"broken\"\nmatch.path_prefix = \"/broken\"\nrespond = {{ status = 500, body = \"no\" }}\n\n\
         [[route]]\nname = \"app\"\nservice = \"s\"\n[[route.limit]]\nrate = \"35/h\"\n\n\
         [service.s]\nreplicas = [\"{addr}\"]\n\n\
         [[watch.slo]]\nroute = \"broken\"\nobjective = \"99.9%\"\n\n\
         [[watch.slo]]\nroute = \"app\"\nobjective = \"99%\"\nlatency = \"250ms\"\n",
        pre = preamble(),
        addr = up.addr
    )
}

/// Chromium, headless, on `url` with `args`; its stdout and stderr.
fn chromium(url: &str, args: &[&str]) -> (String, String) {
    let out = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,1500",
            // Virtual time for the first fetches and drawing, read before the page opens its
            // event stream at 3 s (virtual time would wait for that stream to end).
            "--virtual-time-budget=2500",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("chromium (Debian package chromium; scripts/test.sh installs it)");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_event_stream_sends_the_status_and_the_charts() {
    let h = Headroom::start(&format!(
        "{}[[route]]\nname = \"r\"\nrespond = {{ status = 200, body = \"ok\" }}\n",
        preamble()
    ));
    assert_eq!(h.get("/").status, 200);
    let mut s = std::net::TcpStream::connect(h.admin.unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /watch/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 65536];
    // The first tick is at once: status, and charts once the watch plane has published.
    while !(got.contains("event: status\ndata: ") && got.contains("event: charts\ndata: ")) {
        let n = s.read(&mut buf).expect("events within 20 s");
        assert!(n > 0, "the stream ended: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        got.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{got}"
    );
    let status = got
        .split("event: status\ndata: ")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(status).unwrap();
    assert_eq!(v["generation"], 1, "{v:#}");
    assert!(v["watch"].is_object(), "the watch plane's part: {v:#}");
}

#[test]
fn the_dashboard_shows_the_traffic_the_slo_breach_and_the_replicas_without_console_errors() {
    let up = Upstream::start("u");
    let h = Headroom::start(&config(&up));
    for _ in 0..30 {
        assert_eq!(h.get("/hello").status, 200);
    }
    for _ in 0..5 {
        assert_eq!(h.get("/hello").status, 200, "within the burst of 35");
    }
    for _ in 0..4 {
        assert_eq!(h.get("/hello").status, 429);
    }
    for _ in 0..10 {
        assert_eq!(h.get("/broken").status, 500);
    }
    // Until the watch plane has sampled both routes and the alert fires.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let w = h.status()["watch"].clone();
        let fired = w["alerts"].as_array().is_some_and(|a| !a.is_empty())
            && w["findings"].as_array().is_some_and(|f| !f.is_empty());
        let charts = h.admin_get("/watch/charts").json();
        let routes = charts["routes"].as_array().map_or(0, |r| r.len());
        let replicas = &charts["services"][0]["replicas"];
        let counted = replicas
            .as_array()
            .is_some_and(|r| r.iter().any(|n| n == 1));
        if fired && routes == 2 && counted {
            break;
        }
        assert!(Instant::now() < deadline, "watch {w:#}, charts {charts:#}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let url = format!("http://{}/dashboard", h.admin.unwrap());
    let page = h.admin_get("/dashboard");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        !page.text().contains("http://") && !page.text().contains("https://"),
        "no external assets: the page works offline"
    );

    let (dom, log) = chromium(&url, &["--dump-dom"]);
    // What the page shows, without its own script's text.
    let dom = match (dom.find("<script>"), dom.find("</script>")) {
        (Some(a), Some(b)) => format!("{}{}", &dom[..a], &dom[b..]),
        _ => dom,
    };
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    for needle in [
        "route app",
        "route broken",
        "service s",
        "SloBurnRate",
        "slo_burning",
    ] {
        assert!(dom.contains(needle), "{needle} not on the page:\n{dom}");
    }
    assert!(!dom.contains("nothing firing"), "the alert is shown");
    assert!(!dom.contains("loading…"), "every panel rendered:\n{dom}");
    assert!(!dom.contains("cannot reach headroom"), "{dom}");
    assert!(
        dom.contains(&up.addr.to_string()),
        "the replica table lists the upstream"
    );
    let guard = dom
        .split("Guard: rate limited and shed")
        .nth(1)
        .unwrap_or_else(|| panic!("no guard panel:\n{dom}"));
    assert!(
        guard.contains("route app") && guard.contains(">4<") && guard.contains("10.3%"),
        "4 of 39 limited on route app:\n{guard}"
    );
    let drawn = dom.matches("<path d=\"M").count();
    assert!(drawn >= 4, "charts drawn from the history: {drawn} lines");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&url, &[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("dashboard screenshot: {}", shot.display());
}

/// An autoscaled service's panel: its counts and its events (the decision that started the
/// first replica, the start), as the page renders them in Chromium.
#[test]
fn the_autoscaler_panel_shows_the_services_decisions() {
    let text = format!(
        "{pre}[[route]]\nservice = \"app\"\n\n\
         [service.app.autoscale]\nmin = 1\nmax = 2\ninflight = 10\n\n\
         [service.app.autoscale.process]\ncommand = [\"{BIN}\", \"demo-upstream\", \"--bind\", \"127.0.0.1:{{port}}\"]\ngrace = \"1s\"\n",
        pre = preamble()
    );
    let h = Headroom::start(&text);
    h.wait_status("the first replica up", |s| {
        s["autoscale"]["app"]["current"] == 1
            && s["autoscale"]["app"]["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["kind"] == "started"))
    });
    let (dom, log) = chromium(
        &format!("http://{}/dashboard", h.admin.unwrap()),
        &["--dump-dom"],
    );
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    let panel = dom
        .split("<h2>Autoscaler</h2>")
        .nth(1)
        .unwrap_or_else(|| panic!("no autoscaler panel:\n{dom}"));
    for needle in ["service app", "1 running", "started", "0 → 1"] {
        assert!(
            panel.contains(needle),
            "{needle} not in the panel:\n{panel}"
        );
    }
}
