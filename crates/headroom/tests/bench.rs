//! `headroom bench` against real servers on loopback: `headroom demo-upstream` shaped as a
//! server with a fixed delay, one that stalls, and one with a known capacity; and
//! `headroom serve` for TLS, HTTP/2 and `--against`.

mod common;
use common::*;
use serde_json::Value;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn bench(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("bench")
        .args(args)
        .output()
        .expect("run headroom bench")
}

/// Runs bench with `--json` on stdout and returns the parsed report.
fn bench_json(args: &[&str]) -> Value {
    let out = bench(&[args, &["--json", "-q"]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}), exit {:?}:\n{stdout}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The run's stdout, once it is known to have exited with `code` (both streams shown if not).
fn stdout_with_code(out: &Output, code: i32) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn url(up: &Upstream) -> String {
    format!("http://{}/", up.addr)
}

fn ms(report: &Value, figure: &str) -> f64 {
    report["run"]["latency_ms"][figure].as_f64().unwrap()
}

#[test]
fn a_fixed_delay_is_reported_in_both_load_models() {
    let up = Upstream::start_with("slow", &["--delay-ms", "50"]);
    let closed = bench_json(&["-c", "4", "-d", "2s", &url(&up)]);
    let open = bench_json(&["--rate", "40/s", "-d", "2s", &url(&up)]);
    for r in [&closed, &open] {
        let (min, p50, p99) = (ms(r, "min"), ms(r, "p50"), ms(r, "p99"));
        assert!(min >= 50.0, "no response can beat the delay: min {min}");
        assert!(
            (50.0..60.0).contains(&p50),
            "p50 {p50} should be the 50 ms delay"
        );
        // Not a timing bound (a loaded 2-core CI machine put it at 126 ms): ordered, and no
        // request stalled.
        assert!((p50..1000.0).contains(&p99), "p99 {p99}");
    }
    // 4 connections, 50 ms each: about 80 requests a second.
    let rps = closed["run"]["throughput_rps"].as_f64().unwrap();
    assert!((55.0..81.0).contains(&rps), "closed loop rps {rps}");
    let sent = open["run"]["sent_rate"].as_f64().unwrap();
    assert!(
        (39.0..=41.0).contains(&sent),
        "open loop sent {sent}/s of 40/s"
    );
}

#[test]
fn open_loop_shows_a_stall_that_a_closed_loop_hides() {
    // Every second, the first 400 ms hold every request that arrives.
    let up = Upstream::start_with("stalls", &["--stall-for", "400ms", "--stall-every", "1s"]);
    let closed = bench_json(&["-c", "2", "-d", "3s", &url(&up)]);
    let open = bench_json(&["--rate", "200/s", "-d", "3s", &url(&up)]);
    // Closed loop: each connection waits out a stall once per second, then sends hundreds
    // of fast requests; the stall is a handful of samples among thousands.
    let closed_p99 = ms(&closed, "p99");
    assert!(closed_p99 < 100.0, "closed-loop p99 {closed_p99}");
    assert!(
        ms(&closed, "max") >= 250.0,
        "the stall is there, in the max"
    );
    // Open loop: 40% of the requests fall due inside a stall and wait for its end.
    let (open_p90, open_p99) = (ms(&open, "p90"), ms(&open, "p99"));
    assert!(
        open_p99 >= 300.0,
        "open-loop p99 {open_p99} should show the 400 ms stalls"
    );
    assert!(open_p90 >= 150.0, "open-loop p90 {open_p90}");
    // The timeline shows the stall in (nearly) every interval.
    let stalled = open["run"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["max_ms"].as_f64().unwrap() >= 300.0)
        .count();
    assert!(stalled >= 2, "intervals with a stall: {stalled}");
}

#[test]
fn find_max_lands_near_a_known_capacity() {
    // 4 requests at once, 20 ms each: 200 requests a second at most.
    let up = Upstream::start_with("capped", &["--concurrency", "4", "--delay-ms", "20"]);
    let out = bench(&[
        "--find-max",
        "--slo",
        "p99<150ms,errors<1%",
        "--start",
        "50/s",
        "--step",
        "2s",
        "--warmup",
        "500ms",
        "--json",
        "-q",
        &url(&up),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &r["search"];
    let max = s["max_rate"].as_f64().unwrap();
    assert!(
        (170.0..=230.0).contains(&max),
        "found {max}/s for a 200/s server\n{s:#}"
    );
    let bad = s["first_failing_rate"].as_f64().unwrap();
    assert!(bad > max && bad / max - 1.0 <= 0.05 + 1e-9, "{max}..{bad}");
    // Little's law: at ~200/s, 4 requests in service and, this close to capacity, more
    // waiting their turn.
    let concurrency = s["concurrency"].as_f64().unwrap();
    assert!(
        (3.5..=40.0).contains(&concurrency),
        "concurrency {concurrency}"
    );
    let steps = s["steps"].as_array().unwrap();
    assert!(steps.iter().any(|st| !st["met_slo"].as_bool().unwrap()));
    // Each step was printed as it ended.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("/s  p50").count(), steps.len(), "{stderr}");
}

#[test]
fn json_csv_and_html_outputs_hold_what_they_promise() {
    let up = Upstream::start("a");
    let dir = temp_dir();
    let (csv, html) = (dir.join("t.csv"), dir.join("r.html"));
    let r = bench_json(&[
        "-n",
        "300",
        "-c",
        "3",
        "--interval",
        "100ms",
        "--csv",
        csv.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
        &format!("http://{}/x?bytes=100", up.addr),
    ]);
    assert_eq!(r["schema"], "headroom-bench/1");
    assert_eq!(r["target"], format!("http://{}", up.addr));
    assert_eq!(r["protocol"], "HTTP/1.1");
    let run = &r["run"];
    assert_eq!(run["load"]["model"], "closed");
    assert_eq!(run["load"]["connections"], 3);
    assert_eq!(run["requests"], 300);
    assert_eq!(run["status"]["200"], 300);
    for kind in ["connect", "tls", "timeout", "reset", "protocol", "other"] {
        assert_eq!(run["errors"][kind], 0, "errors.{kind}");
    }
    for figure in [
        "min", "mean", "stdev", "p50", "p90", "p95", "p99", "p99_9", "max",
    ] {
        assert!(run["latency_ms"][figure].is_f64(), "latency_ms.{figure}");
    }
    let l = &run["latency_ms"];
    assert!(l["p50"].as_f64() <= l["p99"].as_f64() && l["p99"].as_f64() <= l["max"].as_f64());
    assert!(run["bytes"]["received"].as_u64().unwrap() >= 300 * 100);
    assert_eq!(run["connections_opened"], 3);
    assert_eq!(run["interrupted"], false);
    let timeline = run["timeline"].as_array().unwrap();
    let summed: u64 = timeline
        .iter()
        .map(|row| row["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(summed, 300, "the timeline adds up to the total");
    for key in [
        "t_s", "rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "errors",
    ] {
        assert!(!timeline[0][key].is_null(), "timeline[].{key}");
    }
    let counted: f64 = run["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[1].as_f64().unwrap())
        .sum();
    assert_eq!(counted, 300.0, "the histogram holds every response once");
    let dist = run["distribution"].as_array().unwrap();
    assert_eq!(dist.last().unwrap()[0], 100.0);
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert!(csv.starts_with("t_s,requests,rps,errors,p50_ms,p90_ms,p99_ms,max_ms\n"));
    assert_eq!(csv.lines().count(), timeline.len() + 1);
    let html = std::fs::read_to_string(&html).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        3,
        "latency and throughput over time, percentiles"
    );
    assert!(
        !html.contains("<script") && !html.contains("src=\"http"),
        "viewable offline"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_is_a_flag_and_a_file_option_never_swallows_the_url() {
    let up = Upstream::start("a");
    let target = url(&up);
    // `--json` just before the URL: the URL is the target, not a file to write.
    let out = bench(&["-n", "20", "-c", "1", "-q", "--json", &target]);
    let r: Value = serde_json::from_str(&stdout_with_code(&out, 0)).unwrap();
    assert_eq!(r["run"]["requests"], 20);
    // --json-file writes the report, and the summary still prints.
    let dir = temp_dir();
    let file = dir.join("run.json");
    let file_arg = file.to_str().unwrap();
    let out = bench(&[
        "-n",
        "20",
        "-c",
        "1",
        "-q",
        "--json-file",
        file_arg,
        &target,
    ]);
    let stdout = stdout_with_code(&out, 0);
    assert!(stdout.starts_with("headroom bench: "), "{stdout}");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["run"]["requests"], 20);
    let _ = std::fs::remove_dir_all(&dir);
    // A file option written without its file says what happened (clap alone said only
    // that no URL was given).
    for option in [
        "--json-file",
        "--csv",
        "--html",
        "--save",
        "--compare",
        "--body-file",
        "--cacert",
    ] {
        let out = bench(&["-n", "1", option, &target]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{option}: {stderr}");
        let says = format!("{option} takes a file name, but got the URL \"{target}\"");
        assert!(stderr.contains(&says), "{option}: {stderr}");
    }
    // The old `--json FILE` form is pointed to --json-file.
    let out = bench(&["-n", "1", "--json", "run.json", &target]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("write a file with --json-file run.json"),
        "{stderr}"
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_exit_code() {
    let up = Upstream::start("a");
    let cases: [(&[&str], i32, &str); 10] = [
        (&["http://127.0.0.1:1/"], 1, "cannot connect to 127.0.0.1:1"),
        (&["localhost:8080/"], 2, "expected http://host[:port]/path"),
        (&["ftp://127.0.0.1/"], 2, "not supported"),
        (
            &["-H", "no-colon", "http://127.0.0.1:1/"],
            2,
            "expected \"Name: value\"",
        ),
        (
            &["--slo", "p99>1s", "http://127.0.0.1:1/"],
            2,
            "expected FIGURE<BOUND",
        ),
        (
            &["--rate", "lots", "http://127.0.0.1:1/"],
            2,
            "not a number",
        ),
        (
            &[
                "--find-max",
                "--slo",
                "p99<1s",
                "--step",
                "1s",
                "--warmup",
                "2s",
                "http://127.0.0.1:1/",
            ],
            2,
            "leaves nothing to measure",
        ),
        (
            &["--http2", "--no-keepalive", "http://127.0.0.1:1/"],
            2,
            "--no-keepalive is for HTTP/1.1",
        ),
        (
            &[
                "--rate",
                "10/s",
                "-c",
                "1",
                "-t",
                "2",
                "http://127.0.0.1:1/",
            ],
            2,
            "fewer than --threads",
        ),
        (
            &["--compare", "/nonexistent/base.json", "http://127.0.0.1:1/"],
            2,
            "cannot read the baseline",
        ),
    ];
    for (args, code, says) in cases {
        let out = bench(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // A rate this machine cannot send: the run says so, with the rate it reached.
    let out = bench(&[
        "--rate",
        "5000000/s",
        "-d",
        "1s",
        "-c",
        "50",
        "-q",
        &url(&up),
    ]);
    let stdout = stdout_with_code(&out, 0);
    assert!(
        stdout.contains("could not send 5,000,000/s: sent "),
        "{stdout}"
    );
}

#[test]
fn ctrl_c_prints_the_partial_results_and_exits_130() {
    let up = Upstream::start("a");
    let mut child = Command::new(BIN)
        .args(["bench", "-c", "2", "-d", "60s", "-q", &url(&up)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Lines::follow(child.stderr.take().unwrap());
    // The start line is printed after the handler is installed and before the load.
    stderr
        .wait_for("closed loop", Duration::from_secs(20))
        .expect("bench started");
    // Interrupt once the load is under way: the upstream has answered some of it. Each
    // look is a request, no sleep between.
    while up.served() < 200 {}
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stdout = stdout_with_code(&out, 130);
    assert!(stdout.contains("interrupted: partial results"), "{stdout}");
    assert!(stdout.contains("status    200: "), "{stdout}");
}

#[test]
fn compare_exits_1_on_a_regression_and_0_within_the_threshold() {
    let fast = Upstream::start("fast");
    let slow = Upstream::start_with("slow", &["--delay-ms", "20"]);
    let dir = temp_dir();
    let base = dir.join("base.json");
    let saved = bench(&[
        "-n",
        "200",
        "-c",
        "2",
        "-q",
        "--save",
        base.to_str().unwrap(),
        &url(&fast),
    ]);
    assert_eq!(saved.status.code(), Some(0));
    let again = bench(&[
        "-n",
        "200",
        "-c",
        "2",
        "-q",
        "--compare",
        base.to_str().unwrap(),
        "--threshold",
        "1000%",
        &url(&fast),
    ]);
    let stdout = stdout_with_code(&again, 0);
    assert!(
        stdout.contains("compared with the baseline") && !stdout.contains("REGRESSION"),
        "{stdout}"
    );
    let worse = bench(&[
        "-n",
        "200",
        "-c",
        "2",
        "-q",
        "--compare",
        base.to_str().unwrap(),
        &url(&slow),
    ]);
    let stdout = stdout_with_code(&worse, 1);
    let p50 = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("p50"))
        .unwrap();
    assert!(p50.contains("REGRESSION"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_broken_slo_exits_1_and_says_which_objective() {
    let up = Upstream::start_with("a", &["--error-rate", "1.0"]);
    let out = bench(&["-n", "50", "-c", "1", "-q", "--slo", "errors<1%", &url(&up)]);
    let stdout = stdout_with_code(&out, 1);
    assert!(
        stdout.contains("SLO       BROKEN: errors 100.00% (breaks errors<1%)"),
        "{stdout}"
    );
}

#[test]
fn a_scenario_mixes_requests_by_weight() {
    let up = Upstream::start("a");
    let dir = temp_dir();
    let file = dir.join("mix.toml");
    std::fs::write(
        &file,
        format!(
            "target = \"http://{}\"\n[[request]]\npath = \"/ok\"\nweight = 3\n[[request]]\npath = \"/bad?status=503\"\nmethod = \"POST\"\nbody = \"hello\"\n",
            up.addr
        ),
    )
    .unwrap();
    let r = bench_json(&["--scenario", file.to_str().unwrap(), "-n", "800", "-c", "4"]);
    let ok = r["run"]["status"]["200"].as_u64().unwrap();
    let bad = r["run"]["status"]["503"].as_u64().unwrap();
    assert_eq!(ok + bad, 800);
    assert!(
        (140..260).contains(&bad),
        "one in four should be the 503 request: {bad}"
    );
    let rate = r["run"]["error_rate"].as_f64().unwrap();
    assert!(
        (rate - bad as f64 / 800.0).abs() < 1e-9,
        "5xx count as errors"
    );
    // A mistake in the file names its line.
    std::fs::write(
        &file,
        "target = \"http://127.0.0.1:1\"\n[[request]]\npath = \"nopath\"\n",
    )
    .unwrap();
    let out = bench(&["--scenario", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("mix.toml:3: path: \"nopath\" must start with /"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keep_alive_off_opens_a_connection_per_request() {
    let up = Upstream::start("a");
    let r = bench_json(&["-n", "100", "-c", "2", "--no-keepalive", &url(&up)]);
    assert_eq!(r["run"]["requests"], 100);
    assert_eq!(r["run"]["connections_opened"], 100);
}

#[test]
fn http2_cleartext_shares_connections_between_streams() {
    let up = Upstream::start("a");
    let r = bench_json(&[
        "--http2",
        "--streams",
        "4",
        "-c",
        "2",
        "-n",
        "400",
        &url(&up),
    ]);
    assert_eq!(r["protocol"], "HTTP/2");
    assert_eq!(r["run"]["status"]["200"], 400);
    // 2 connections, 4 streams each.
    assert_eq!(r["run"]["connections_opened"], 2);
}

fn tls_headroom(up: &Upstream) -> (Headroom, String) {
    let (cert, key) = make_cert(&temp_dir());
    let config = one_route_config(
        up,
        &format!("tls = {{ cert = \"{cert}\", key = \"{key}\" }}"),
    );
    (Headroom::start(&config), cert)
}

#[test]
fn tls_is_verified_unless_insecure_and_speaks_both_protocols() {
    let up = Upstream::start("a");
    let (h, cert) = tls_headroom(&up);
    let target = format!("https://localhost:{}/", h.addr.port());
    let refused = bench(&["-n", "10", &target]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("TLS handshake with localhost") && stderr.contains("certificate"),
        "{stderr}"
    );
    for extra in [&["-k"][..], &["--cacert", cert.as_str()][..]] {
        for http2 in [false, true] {
            let mut args = vec!["-n", "100", "-c", "2"];
            args.extend_from_slice(extra);
            if http2 {
                args.push("--http2");
            }
            args.push(&target);
            let r = bench_json(&args);
            assert_eq!(r["run"]["status"]["200"], 100, "{args:?}");
            assert_eq!(r["protocol"], if http2 { "HTTP/2" } else { "HTTP/1.1" });
        }
    }
}

#[test]
fn against_records_what_headroom_saw() {
    let up = Upstream::start("a");
    let h = Headroom::start(&one_route_config(&up, ""));
    let admin = format!("http://{}", h.admin.expect("admin listener"));
    let r = bench_json(&[
        "-n",
        "250",
        "-c",
        "2",
        "--against",
        &admin,
        &format!("http://{}/", h.addr),
    ]);
    let seen = &r["run"]["headroom"];
    assert_eq!(seen["requests"], 250.0, "{seen:#}");
    assert_eq!(seen["responses_5xx"], 0.0);
    assert_eq!(seen["replicas_healthy"], 1.0);
}

#[test]
fn a_target_that_goes_away_mid_run_is_counted_not_fatal() {
    let mut up = Upstream::start("a");
    let target = url(&up);
    let child = Command::new(BIN)
        .args(["bench", "-c", "2", "-d", "3s", "-q", "--json", &target])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the target once the load is under way; each look is a request, no sleep.
    while up.served() < 200 {}
    up.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &r["run"];
    assert!(run["status"]["200"].as_u64().unwrap() >= 200);
    let connect = run["errors"]["connect"].as_u64().unwrap();
    assert!(connect > 0, "reconnecting to a dead target fails: {run:#}");
    assert!(run["error_rate"].as_f64().unwrap() > 0.0);
    let first = run["first_errors"].as_array().unwrap();
    assert!(
        first
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("cannot connect to")),
        "{first:?}"
    );
}

/// A server that answers the first request on each connection, then cuts the second
/// response short (10 of 100 promised bytes) and closes.
fn cutting_server() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                for answer in [
                    &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..],
                    b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789",
                ] {
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    if conn.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_response_cut_short_is_a_reset_error_and_never_resent() {
    let addr = cutting_server();
    let r = bench_json(&["-c", "1", "-n", "10", &format!("http://{addr}/")]);
    let run = &r["run"];
    assert_eq!(run["status"]["200"], 5, "{run:#}");
    assert_eq!(run["errors"]["reset"], 5, "{run:#}");
    assert_eq!(run["connections_opened"], 5);
    let first = run["first_errors"][0].as_str().unwrap();
    assert!(first.contains("with 90 body bytes to come"), "{first}");
}

#[test]
fn find_max_records_what_headroom_saw_at_each_step() {
    let up = Upstream::start("a");
    let h = Headroom::start(&one_route_config(&up, ""));
    let admin = format!("http://{}", h.admin.expect("admin listener"));
    let r = bench_json(&[
        "--find-max",
        "--slo",
        "p99<1s",
        "--start",
        "100/s",
        "--step",
        "1s",
        "--max-steps",
        "2",
        "--against",
        &admin,
        &format!("http://{}/", h.addr),
    ]);
    let steps = r["search"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    for (step, rate) in steps.iter().zip([100.0, 200.0]) {
        assert_eq!(step["rate"], rate);
        // headroom served the step's requests (warm-up included: it counts them all).
        let seen = step["headroom"]["requests"].as_f64().unwrap();
        assert!((rate * 0.9..=rate * 1.1).contains(&seen), "{step:#}");
        assert_eq!(step["headroom"]["replicas_healthy"], 1.0);
    }
    assert_eq!(r["search"]["max_rate"], 200.0);
}

/// Runs `command` as a shell would, with `path` as PATH, until it has started loading
/// (its first line on stderr), then interrupts it; returns its exit code and stdout.
fn run_until_started(command: &str, path: &str) -> (Option<i32>, String, String) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .env("PATH", path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Lines::follow(child.stdout.take().unwrap());
    let err = Lines::follow(child.stderr.take().unwrap());
    let started = err.wait_for("headroom bench: ", Duration::from_secs(20));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let code = child.wait().unwrap().code();
    assert!(
        started.is_some(),
        "{command:?} did not start (exit {code:?}):\n{}",
        err.all().join("\n")
    );
    // Both pipes close with the process; wait for every line to be read.
    out.wait_until(Duration::from_secs(5), |_| None::<()>);
    (code, out.all().join("\n"), err.all().join("\n"))
}

#[test]
fn the_demos_bench_lines_run_as_printed() {
    let (port, admin) = (free_port(), free_port());
    // No `headroom` on this PATH, as after `cargo run -- demo`.
    let path = "/usr/bin:/bin";
    let mut demo = Command::new(BIN)
        .args(["demo", "--port", &port.to_string()])
        .args(["--admin-port", &admin.to_string()])
        .env("PATH", path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Lines::follow(demo.stdout.take().unwrap());
    let err = Lines::follow(demo.stderr.take().unwrap());
    err.wait_for("admin listening", Duration::from_secs(20))
        .expect("demo started");
    out.wait_for("Ctrl-C stops the demo", Duration::from_secs(5))
        .expect("demo printed what to try");
    let printed = out.all();
    let commands: Vec<String> = printed
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains(" bench "))
        .map(|(i, l)| {
            // A line ending in `\` goes on on the next; a `#` starts a comment.
            let mut command = l.clone();
            if command.ends_with('\\') {
                command = format!("{command}\n{}", printed[i + 1]);
            }
            command.split(" # ").next().unwrap().trim().to_string()
        })
        .collect();
    assert_eq!(commands.len(), 3, "{printed:#?}");
    let exe = std::fs::canonicalize(BIN).unwrap();
    for command in &commands {
        assert!(
            command.starts_with(&format!("{} bench ", exe.display())),
            "{command}"
        );
        let (code, stdout, stderr) = run_until_started(command, path);
        assert_eq!(code, Some(130), "{command}:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!("http://127.0.0.1:{port}")),
            "{command}:\n{stdout}"
        );
    }
    assert!(
        printed
            .iter()
            .any(|l| l.contains("cargo install --path crates/headroom")),
        "{printed:#?}"
    );
    let _ = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status();
    assert_eq!(demo.wait().unwrap().code(), Some(0));
}
