//! `headroom export prometheus-rules` and `headroom export grafana`: the rules file passes
//! `promtool check rules`, and `promtool test rules` (Debian's `prometheus` package) shows
//! its alerts fire when the built-in watch plane's would, with the same names and labels;
//! the dashboard parses and queries only metrics headroom exposes; a bad config is exit 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A file under the temp dir, unique to this test process and `name`.
fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("headroom-export-{}-{name}", std::process::id()))
}

/// A config with routes `api` and `web` (both answer 200) and `watch` (TOML lines) added.
fn config(name: &str, watch: &str) -> PathBuf {
    let text = format!(
        "[[listener]]\nname = \"public\"\nbind = \"127.0.0.1:0\"\n\n\
         [[route]]\nname = \"api\"\nrespond = {{ status = 200, body = \"ok\" }}\n\n\
         [[route]]\nname = \"web\"\nrespond = {{ status = 200, body = \"ok\" }}\n\n\
         {watch}"
    );
    let path = temp_path(&format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn headroom(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_headroom"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `headroom export WHAT --config CONFIG -o FILE` and returns FILE, which it wrote.
fn export(what: &str, config: &Path) -> PathBuf {
    let out = config.with_extension(what);
    let o = headroom(&[
        "export",
        what,
        "--config",
        config.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "export {what} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// `promtool ARGS`, or a failure that says how to install it.
fn promtool(args: &[&str]) -> Output {
    match Command::new("promtool").args(args).output() {
        Ok(o) => o,
        Err(e) => panic!(
            "promtool is needed for these tests and could not be run ({e}): install it with \
             `apt-get install prometheus` (Debian) or put Prometheus' promtool on PATH"
        ),
    }
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `promtool check rules FILE` passes, its lint (duplicate rules and the like, which
/// promtool 2 reports without failing) included. Returns what it printed.
fn promtool_check(rules: &Path) -> String {
    let o = promtool(&["check", "rules", rules.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "promtool check rules:\n{text}");
    assert!(!text.contains("FAILED"), "promtool check rules:\n{text}");
    text
}

/// Writes a `promtool test rules` file for `rules` with `tests` (YAML list items, indented
/// two spaces) and runs it. The ratios are recorded before the alerts read them: promtool
/// otherwise runs the groups in a random order, and an alert could see the ratios of the
/// previous minute (as it can in Prometheus, whose groups run on their own clocks).
fn promtool_test(name: &str, rules: &Path, tests: &str) -> Output {
    let path = temp_path(&format!("{name}.test.yml"));
    let text = format!(
        "rule_files:\n  - {}\nevaluation_interval: 1m\n\
         group_eval_order: [headroom-slo-ratios, headroom-alerts]\ntests:\n{tests}",
        rules.display()
    );
    std::fs::write(&path, text).unwrap();
    promtool(&["test", "rules", path.to_str().unwrap()])
}

const SLOS_AND_RULES: &str = "[watch]\n\
    [[watch.slo]]\nroute = \"api\"\nobjective = \"99.9%\"\n\n\
    [[watch.slo]]\nroute = \"api\"\nobjective = \"99%\"\nlatency = \"250ms\"\nperiod = \"28d\"\n\n\
    [[watch.slo]]\nroute = \"web\"\nobjective = \"99.9%\"\n\n\
    [[watch.slo]]\nname = \"web-slow\"\nroute = \"web\"\nobjective = \"99%\"\nlatency = \"1s\"\n\n\
    [[watch.rule]]\nname = \"api-errors\"\nroute = \"api\"\nerror_rate = \"1%\"\n\n\
    [[watch.rule]]\nname = \"api-slow\"\nroute = \"api\"\nlatency = \"p99\"\nabove = \"500ms\"\nwindow = \"10m\"\nfor = \"0s\"\n\n\
    [[watch.rule]]\nname = \"api-slower\"\nroute = \"api\"\nlatency = \"p99\"\nabove_baseline = \"10%\"\nseverity = \"page\"\n";

/// The expected `SloBurnRate` alerts of an availability objective on `route` for the given
/// pairs, each with its summary at a burn rate of `rate`. `objective` is the label's value
/// as YAML, `who` how the summary names it (as YAML single-quoted text).
fn burn_alerts(
    route: &str,
    objective: &str,
    who: &str,
    pairs: &[(&str, &str, &str, &str)],
    rate: &str,
) -> String {
    pairs
        .iter()
        .map(|(long, short, factor, severity)| {
            format!(
                "          - exp_labels: {{route: {route}, objective: {objective}, sli: availability, severity: {severity}, window: {long}/{short}}}\n            \
                 exp_annotations:\n              summary: '{who}: burning its 99.9% availability budget {rate}× over {long} (and above {factor}× over {short})'\n"
            )
        })
        .collect()
}

const ALL_PAIRS: [(&str, &str, &str, &str); 4] = [
    ("1h", "5m", "14.4", "page"),
    ("6h", "30m", "6", "page"),
    ("1d", "2h", "3", "ticket"),
    ("3d", "6h", "1", "ticket"),
];

#[test]
fn rules_file_passes_promtool_check() {
    let rules = export("prometheus-rules", &config("check", SLOS_AND_RULES));
    let text = promtool_check(&rules);
    // 7 windows × 3 ratios (api error, api slow ≤ 250 ms, web error, web slow ≤ 1 s: 4)
    // recorded, 4 pairs × 4 objectives + 3 rules alerting.
    assert!(text.contains("SUCCESS: 47 rules found"), "{text}");
}

#[test]
fn total_outage_pages_and_the_1h_5m_pair_resolves_five_minutes_after_it_ends() {
    let rules = export("prometheus-rules", &config("outage", SLOS_AND_RULES));
    // api: every request a 5xx for 10 minutes (10/s), then every request a 2xx.
    let mut tests = String::from(
        "  - interval: 1m\n    input_series:\n\
         \x20     - series: 'headroom_requests_total{route=\"api\",service=\"app\",class=\"5xx\"}'\n        values: '0+600x10 6000x50'\n\
         \x20     - series: 'headroom_requests_total{route=\"api\",service=\"app\",class=\"2xx\"}'\n        values: '0x10 600+600x50'\n\
         \x20   alert_rule_test:\n      - eval_time: 10m\n        alertname: SloBurnRate\n        exp_alerts:\n",
    );
    tests += &burn_alerts("api", "api", "route api", &ALL_PAIRS, "1000.0");
    // 10 minutes later the last 5 minutes are clean: the 1h/5m page has resolved while the
    // hour still holds the outage; the longer pairs' short windows still hold it.
    tests += "      - eval_time: 20m\n        alertname: SloBurnRate\n        exp_alerts:\n";
    tests += &burn_alerts("api", "api", "route api", &ALL_PAIRS[1..2], "500.0");
    tests += &burn_alerts("api", "api", "route api", &ALL_PAIRS[2..], "500.0");
    let o = promtool_test("outage", &rules, &tests);
    assert_ok(&o, "promtool test rules");
}

#[test]
fn healthy_route_fires_no_burn_rate_alert() {
    let rules = export("prometheus-rules", &config("healthy", SLOS_AND_RULES));
    // web: 0.05% of requests fail, a burn rate of 0.5; all are answered within 1 s.
    let tests = "  - interval: 1m\n    input_series:\n\
         \x20     - series: 'headroom_requests_total{route=\"web\",service=\"app\",class=\"5xx\"}'\n        values: '0+3x240'\n\
         \x20     - series: 'headroom_requests_total{route=\"web\",service=\"app\",class=\"2xx\"}'\n        values: '0+5997x240'\n\
         \x20     - series: 'headroom_request_duration_seconds_bucket{route=\"web\",le=\"1\"}'\n        values: '0+6000x240'\n\
         \x20     - series: 'headroom_request_duration_seconds_count{route=\"web\"}'\n        values: '0+6000x240'\n\
         \x20   alert_rule_test:\n\
         \x20     - {eval_time: 10m, alertname: SloBurnRate, exp_alerts: []}\n\
         \x20     - {eval_time: 4h, alertname: SloBurnRate, exp_alerts: []}\n";
    let o = promtool_test("healthy", &rules, tests);
    assert_ok(&o, "promtool test rules");
}

#[test]
fn slow_route_burns_its_latency_objective() {
    let rules = export("prometheus-rules", &config("slow", SLOS_AND_RULES));
    // api and web: 10 requests/s, none 5xx, none answered within 250 ms (api's objective)
    // or 1 s (web's). web's bound is written `1.0`, as Prometheus 3 rewrites `le` values.
    let mut tests = String::from("  - interval: 1m\n    input_series:\n");
    for (route, le) in [("api", "0.25"), ("web", "1.0")] {
        tests += &format!(
            "      - series: 'headroom_requests_total{{route=\"{route}\",service=\"app\",class=\"2xx\"}}'\n        values: '0+600x10'\n\
             \x20     - series: 'headroom_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}}'\n        values: '0x10'\n\
             \x20     - series: 'headroom_request_duration_seconds_count{{route=\"{route}\"}}'\n        values: '0+600x10'\n"
        );
    }
    tests += "    alert_rule_test:\n      - eval_time: 10m\n        alertname: SloBurnRate\n        exp_alerts:\n";
    for (route, le, objective, who, within) in [
        (
            "api",
            "0.25",
            "api-latency",
            "route api (api-latency)",
            "250ms",
        ),
        ("web", "1", "web-slow", "route web (web-slow)", "1s"),
    ] {
        for (long, short, factor, severity) in ALL_PAIRS {
            tests += &format!(
                "          - exp_labels: {{route: {route}, le: '{le}', objective: {objective}, sli: latency, severity: {severity}, window: {long}/{short}}}\n\
                 \x20           exp_annotations:\n\
                 \x20             summary: '{who}: burning its 99% latency (within {within}) budget 100.0× over {long} (and above {factor}× over {short})'\n"
            );
        }
    }
    let o = promtool_test("slow", &rules, &tests);
    assert_ok(&o, "promtool test rules");
}

#[test]
fn error_rate_rule_fires_only_after_its_for() {
    let rules = export("prometheus-rules", &config("for", SLOS_AND_RULES));
    // api: 10/s good all along; from 10 minutes in, 1/s 5xx (9.1% of requests, above 1%).
    // The 5m window sees it at 11m; `for = "5m"` (the default) holds it until 16m.
    let tests = "  - interval: 1m\n    input_series:\n\
         \x20     - series: 'headroom_requests_total{route=\"api\",service=\"app\",class=\"2xx\"}'\n        values: '0+600x30'\n\
         \x20     - series: 'headroom_requests_total{route=\"api\",service=\"app\",class=\"5xx\"}'\n        values: '0x10 60+60x20'\n\
         \x20   alert_rule_test:\n\
         \x20     - {eval_time: 10m, alertname: ErrorRateHigh, exp_alerts: []}\n\
         \x20     - {eval_time: 15m, alertname: ErrorRateHigh, exp_alerts: []}\n\
         \x20     - eval_time: 16m\n        alertname: ErrorRateHigh\n        exp_alerts:\n\
         \x20         - exp_labels: {route: api, rule: api-errors, severity: ticket, window: 5m}\n\
         \x20           exp_annotations:\n\
         \x20             summary: 'route api: api-errors: 9.091% of requests failed over the last 5m (threshold 1%)'\n";
    let o = promtool_test("for", &rules, tests);
    assert_ok(&o, "promtool test rules");
}

#[test]
fn names_with_quotes_and_braces_cannot_break_the_rules_file() {
    let watch = "[watch]\n[[watch.slo]]\nname = \"it's \\\"{{ .Bad }}\\\" \\\\o/\"\nroute = \"api\"\nobjective = 0.999\n";
    let rules = export("prometheus-rules", &config("quotes", watch));
    promtool_check(&rules);
    let mut tests = String::from(
        "  - interval: 1m\n    input_series:\n\
         \x20     - series: 'headroom_requests_total{route=\"api\",service=\"app\",class=\"5xx\"}'\n        values: '0+600x10'\n\
         \x20   alert_rule_test:\n      - eval_time: 10m\n        alertname: SloBurnRate\n        exp_alerts:\n",
    );
    tests += &burn_alerts(
        "api",
        "'it''s \"{{ .Bad }}\" \\o/'",
        "route api (it''s \"{{ .Bad }}\" \\o/)",
        &ALL_PAIRS,
        "1000.0",
    );
    let o = promtool_test("quotes", &rules, &tests);
    assert_ok(&o, "promtool test rules");
}

#[test]
fn config_without_slos_or_rules_gives_a_valid_file_with_empty_groups() {
    let rules = export("prometheus-rules", &config("empty", ""));
    let text = std::fs::read_to_string(&rules).unwrap();
    assert!(
        text.contains("no [[watch.slo]] and no [[watch.rule]]"),
        "{text}"
    );
    assert_eq!(text.matches("rules: []").count(), 2, "{text}");
    promtool_check(&rules);
}

/// Every metric `expr` names (`headroom_…`), without a histogram's `_bucket`/`_count`.
fn metrics_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("headroom_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_count"))
            .unwrap_or(name);
        names.push(base.to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn grafana_dashboard_has_the_panels_and_queries_only_metrics_headroom_exposes() {
    let board = export("grafana", &config("grafana", SLOS_AND_RULES));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&board).unwrap()).unwrap();
    assert_eq!(json["schemaVersion"], 39);
    let vars = json["templating"]["list"].as_array().unwrap();
    assert!(vars
        .iter()
        .any(|v| v["name"] == "datasource" && v["type"] == "datasource"));
    let panels = json["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Requests/s by route",
        "5xx ratio by route",
        "Latency p50 / p95 / p99 by route",
        "Healthy replicas by service",
        "In-flight requests",
        "Cache hit ratio by route",
        "Rate limited requests/s",
        "Shed requests/s by service",
        "api: error budget left (30d)",
        "api: burn rate",
        "api-latency: error budget left (28d)",
        "web-slow: burn rate",
    ] {
        assert!(
            titles.contains(&wanted),
            "no panel {wanted:?} in {titles:?}"
        );
    }
    // The metrics table of the README lists what /metrics exposes.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let mut exprs = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let metrics = metrics_in(expr);
            assert!(!metrics.is_empty(), "{expr} queries no headroom metric");
            for m in metrics {
                assert!(
                    readme.contains(&format!("`{m}`")),
                    "{expr}: {m} is not a metric headroom exposes"
                );
            }
            exprs += 1;
        }
    }
    // And each is PromQL: promtool checks them as recording rules, Grafana's variables
    // filled in.
    let as_rules: String = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .enumerate()
        .map(|(i, t)| {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
                .replace("$route", ".*");
            format!("      - record: grafana:panel:{i}\n        expr: '{expr}'\n")
        })
        .collect();
    let rules = temp_path("grafana-exprs.yml");
    std::fs::write(
        &rules,
        format!("groups:\n  - name: grafana\n    rules:\n{as_rules}"),
    )
    .unwrap();
    promtool_check(&rules);
    // 11 traffic queries (3 quantiles, healthy and total replicas), then per objective
    // 1 budget and 7 burn rates.
    assert_eq!(exprs, 11 + 4 * 8);
}

#[test]
fn invalid_config_exits_2_with_the_file_and_line_on_stderr() {
    let path = config(
        "invalid",
        "[watch]\n[[watch.slo]]\nroute = \"api\"\nobjective = \"100%\"\n",
    );
    for what in ["prometheus-rules", "grafana"] {
        let o = headroom(&["export", what, "--config", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{what}");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.contains(&format!("{}:16:13:", path.display())),
            "{what}: {stderr}"
        );
        assert!(stderr.contains("100% cannot be an objective"), "{stderr}");
        assert!(
            o.stdout.is_empty(),
            "{what} wrote to stdout on an invalid config"
        );
    }
}

#[test]
fn without_o_the_rules_go_to_stdout() {
    let path = config("stdout", SLOS_AND_RULES);
    let o = headroom(&[
        "export",
        "prometheus-rules",
        "--config",
        path.to_str().unwrap(),
    ]);
    assert_ok(&o, "export prometheus-rules");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.starts_with("# Prometheus rules for headroom"),
        "{text}"
    );
    assert!(
        text.contains("- record: 'headroom:route_error_ratio:rate5m'"),
        "{text}"
    );
    // "99.9%" is read as 0.9990000000000001; the rules say what the config says.
    assert!(
        text.contains("rate1h{route=\"api\"} / (1 - 0.999) > 14.4 and "),
        "{text}"
    );
}

/// A service's objectives sum every route's requests to it (availability) and judge its
/// replicas' answers (latency, `headroom_upstream_duration_seconds`), labelled `service`.
#[test]
fn a_service_objective_sums_its_routes_and_judges_its_replicas() {
    let text = "[[listener]]\nname = \"public\"\nbind = \"127.0.0.1:0\"\n\n\
         [[route]]\nname = \"api\"\nmatch = { path_prefix = \"/api\" }\nservice = \"app\"\n\n\
         [[route]]\nname = \"web\"\nservice = \"app\"\n\n\
         [service.app]\nreplicas = [\"127.0.0.1:9\"]\n\n\
         [watch]\n\
         [[watch.slo]]\nservice = \"app\"\nobjective = \"99.9%\"\n\n\
         [[watch.slo]]\nservice = \"app\"\nobjective = \"99%\"\nlatency = \"250ms\"\n";
    let path = temp_path("service.toml");
    std::fs::write(&path, text).unwrap();
    let rules = export("prometheus-rules", &path);
    let check = promtool_check(&rules);
    // 7 windows × 2 ratios recorded, 4 pairs × 2 objectives alerting.
    assert!(check.contains("SUCCESS: 22 rules found"), "{check}");
    // api fails everything, web nothing, at the same rate: half of app's requests are 5xx,
    // a burn rate of 500; no answer of its replicas within 250 ms: 100.
    let mut tests = String::from(
        "  - interval: 1m\n    input_series:\n\
         \x20     - series: 'headroom_requests_total{route=\"api\",service=\"app\",class=\"5xx\"}'\n        values: '0+300x10'\n\
         \x20     - series: 'headroom_requests_total{route=\"web\",service=\"app\",class=\"2xx\"}'\n        values: '0+300x10'\n\
         \x20     - series: 'headroom_upstream_duration_seconds_bucket{service=\"app\",le=\"0.25\"}'\n        values: '0x10'\n\
         \x20     - series: 'headroom_upstream_duration_seconds_count{service=\"app\"}'\n        values: '0+600x10'\n\
         \x20   alert_rule_test:\n      - eval_time: 10m\n        alertname: SloBurnRate\n        exp_alerts:\n",
    );
    for (long, short, factor, severity) in ALL_PAIRS {
        tests += &format!(
            "          - exp_labels: {{service: app, objective: app, sli: availability, severity: {severity}, window: {long}/{short}}}\n\
             \x20           exp_annotations:\n\
             \x20             summary: 'service app: burning its 99.9% availability budget 500.0× over {long} (and above {factor}× over {short})'\n\
             \x20         - exp_labels: {{service: app, le: '0.25', objective: app-latency, sli: latency, severity: {severity}, window: {long}/{short}}}\n\
             \x20           exp_annotations:\n\
             \x20             summary: 'service app (app-latency): burning its 99% latency (within 250ms) budget 100.0× over {long} (and above {factor}× over {short})'\n"
        );
    }
    let o = promtool_test("service", &rules, &tests);
    assert_ok(&o, "promtool test rules");
}
