//! `headroom export`: the config's SLOs and rules as Prometheus recording and alerting rules,
//! and a Grafana dashboard, for teams that watch headroom with the tools they already run.
//!
//! The rules judge what the built-in watch plane judges, with its alert names and labels:
//! the four burn-rate pairs of the Google SRE workbook per objective (`SloBurnRate`), and one
//! alert per `[[watch.rule]]` (`ErrorRateHigh`, `LatencyHigh`, `LatencyAboveBaseline`). The
//! YAML is written by hand (no YAML crate): every string is quoted, so no route name can
//! change the file's structure. This file holds the command and the PromQL both outputs
//! share; `rules` writes the YAML, `grafana` the dashboard.

mod grafana;
mod rules;

use headroom_config::watch::{SloConfig, Subject, WatchConfig};
use headroom_watch::slo::STANDARD_PAIRS;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// What `headroom export` writes.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Prometheus rules (YAML): error and slow ratios per SLO route, the burn-rate alerts of
    /// every [[watch.slo]] and one alert per [[watch.rule]].
    #[command(
        after_help = "Example:\n  headroom export prometheus-rules --config headroom.toml -o /etc/prometheus/headroom.rules.yml\n  promtool check rules /etc/prometheus/headroom.rules.yml"
    )]
    PrometheusRules(Target),
    /// A Grafana dashboard (JSON): traffic, errors, latency, replicas, cache, limits,
    /// shedding, and each SLO's error budget and burn rates.
    #[command(
        after_help = "Example:\n  headroom export grafana --config headroom.toml -o headroom-dashboard.json\n  # Grafana: Dashboards > New > Import > upload headroom-dashboard.json"
    )]
    Grafana(Target),
}

/// The config read and the file written.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The config file (TOML) whose [[watch.slo]] and [[watch.rule]] are exported.
    #[arg(short, long, default_value = "headroom.toml")]
    config: PathBuf,
    /// Write here instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// Runs `headroom export ...`: exit 0 when written, 2 for an invalid config (the errors
/// printed as `headroom check` prints them), 1 when the output cannot be written.
pub fn run(command: Command) -> ExitCode {
    let (target, render): (Target, fn(&WatchConfig, &Path) -> String) = match command {
        Command::PrometheusRules(t) => (t, rules::prometheus_rules),
        Command::Grafana(t) => (t, |w, _| grafana::grafana_dashboard(&w.slos)),
    };
    let cfg = match crate::load_config(&target.config) {
        Ok(cfg) => cfg,
        Err((text, n)) => {
            eprintln!("{text}");
            eprintln!("{n} error(s) in {}", target.config.display());
            return ExitCode::from(2);
        }
    };
    let text = render(&cfg.watch, &target.config);
    let written = match &target.output {
        // Not print!: a closed pipe (`| head`) is an error to report, not a panic.
        None => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .map_err(|e| format!("standard output: cannot write: {e}")),
        Some(path) => {
            std::fs::write(path, text).map_err(|e| format!("{}: cannot write: {e}", path.display()))
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
    }
}

/// Every window a burn-rate pair of the built-in watch plane reads ([`STANDARD_PAIRS`]: 5m,
/// 30m, 1h, 2h, 6h, 1d, 3d), in seconds, shortest first: one recording rule each.
fn ratio_windows() -> Vec<u64> {
    let mut windows: Vec<u64> = STANDARD_PAIRS
        .iter()
        .flat_map(|p| [p.long.as_secs(), p.short.as_secs()])
        .collect();
    windows.sort_unstable();
    windows.dedup();
    windows
}

const REQUESTS: &str = "headroom_requests_total";
const DURATION: &str = "headroom_request_duration_seconds";
const UPSTREAM_DURATION: &str = "headroom_upstream_duration_seconds";

/// The latency histogram a subject is judged on: a route's answers, or a service's
/// (its replicas' time to response headers), as the built-in watch plane judges them.
fn duration_metric(subject: &Subject) -> &'static str {
    match subject {
        Subject::Route(_) => DURATION,
        Subject::Service(_) => UPSTREAM_DURATION,
    }
}

/// `route="api"` or `service="app"`.
fn matcher(subject: &Subject) -> String {
    format!("{}={}", subject.kind(), promql_str(subject.name()))
}

/// What an objective counts as bad on its route or service: 5xx, or slower than a bucket
/// bound.
#[derive(Debug, Clone, PartialEq)]
struct Sli {
    subject: Subject,
    /// `Some("0.25")`: a latency objective, the bound as `/metrics` writes it.
    le: Option<String>,
}

impl Sli {
    fn of(slo: &SloConfig) -> Sli {
        Sli {
            subject: slo.subject.clone(),
            le: slo.latency.map(le_label),
        }
    }

    /// `headroom:route_error_ratio:rate5m` or `headroom:route_slow_ratio:rate5m`
    /// (`service_` for a service's).
    fn record(&self, window: u64) -> String {
        let kind = if self.le.is_some() { "slow" } else { "error" };
        format!(
            "headroom:{}_{kind}_ratio:rate{}",
            self.subject.kind(),
            prom_duration_secs(window)
        )
    }

    /// The recorded ratio, selected: `headroom:route_error_ratio:rate1h{route="api"}`.
    fn recorded(&self, window: u64) -> String {
        let mut selector = matcher(&self.subject);
        if let Some(le) = &self.le {
            let _ = write!(selector, ",le={}", promql_str(le));
        }
        format!("{}{{{selector}}}", self.record(window))
    }

    /// The bad ratio over `window`, computed from the raw series.
    fn ratio_expr(&self, window: u64) -> String {
        self.ratio_over(&prom_duration_secs(window))
    }

    /// [`Sli::ratio_expr`] over a window written as a Prometheus duration (`30d`).
    fn ratio_over(&self, window: &str) -> String {
        match &self.le {
            None => error_ratio(&self.subject, window),
            Some(le) => {
                let (by, m) = (self.subject.kind(), matcher(&self.subject));
                let metric = duration_metric(&self.subject);
                format!(
                    "1 - sum by ({by}) (rate({metric}_bucket{{{m},le{}}}[{window}])) / sum by ({by}) (rate({metric}_count{{{m}}}[{window}]))",
                    le_matcher(le)
                )
            }
        }
    }
}

/// The share of 5xx among a route's (or a service's) requests over `window`: 0 (not
/// absent) with traffic and no 5xx yet, absent without traffic.
fn error_ratio(subject: &Subject, window: &str) -> String {
    error_ratio_by(subject.kind(), &matcher(subject), window)
}

/// [`error_ratio`] by route for the routes `matcher` selects (`route=~"$route"`).
fn error_ratio_of(matcher: &str, window: &str) -> String {
    error_ratio_by("route", matcher, window)
}

/// The share of 5xx summed by label `by` (`route` or `service`).
fn error_ratio_by(by: &str, matcher: &str, window: &str) -> String {
    let all = format!("sum by ({by}) (rate({REQUESTS}{{{matcher}}}[{window}]))");
    format!(
        "(sum by ({by}) (rate({REQUESTS}{{{matcher},class=\"5xx\"}}[{window}])) or {all} * 0) / {all}"
    )
}

/// The latency quantile of a route (or a service) over `window` ending `offset` ago.
fn quantile_expr(subject: &Subject, quantile: f64, window: &str, offset: Option<&str>) -> String {
    let offset = offset.map(|o| format!(" offset {o}")).unwrap_or_default();
    format!(
        "histogram_quantile({}, sum by ({}, le) (rate({}_bucket{{{}}}[{window}]{offset})))",
        number(quantile),
        subject.kind(),
        duration_metric(subject),
        matcher(subject)
    )
}

/// A bucket bound as `/metrics` writes it in `le` (Rust's `f64` Display: `0.25`, `1`). The
/// registry's bounds are the config's durations in seconds, computed as here (validation
/// made the threshold one of them), so the text is the same.
fn le_label(latency: Duration) -> String {
    latency.as_secs_f64().to_string()
}

/// The `le` matcher: `="0.25"`; a whole number also as Prometheus 3 rewrites it (`1.0`).
fn le_matcher(le: &str) -> String {
    if le.contains('.') {
        format!("={}", promql_str(le))
    } else {
        format!("=~{}", promql_str(&format!("{le}(\\.0)?")))
    }
}

/// A Prometheus duration in its largest whole unit: `5m`, `1h`, `3d`, `90s`, `1500ms`.
fn prom_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        prom_duration_secs(d.as_secs())
    } else {
        format!("{}ms", d.as_millis().max(1))
    }
}

fn prom_duration_secs(secs: u64) -> String {
    headroom_watch::slo::window_label(secs)
}

/// `0.999` → `99.9%`, without float noise.
fn percent(ratio: f64) -> String {
    format!("{}%", decimal(ratio * 100.0))
}

/// `0.99` → `p99`, `0.999` → `p99.9`.
fn quantile_name(q: f64) -> String {
    format!("p{}", decimal(q * 100.0))
}

/// A number for PromQL without the float noise of parsing a percentage: `99.9%` is read
/// as 0.9990000000000001 and written `0.999`. Twelve decimals keep every objective and
/// threshold a config can sensibly hold.
fn number(x: f64) -> String {
    let text = format!("{x:.12}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn decimal(x: f64) -> String {
    let text = format!("{x:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `250ms`, `1s`, `2.5s`.
fn latency_words(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", decimal(d.as_secs_f64() * 1_000.0))
    } else {
        format!("{}s", decimal(d.as_secs_f64()))
    }
}

/// A PromQL string literal: `"api"`, with `\`, `"` and control characters escaped.
fn promql_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
