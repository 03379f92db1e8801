//! `headroom advise`: reads a running headroom's `/status` and `/metrics` and says what to
//! change, most impact first, each finding with its evidence (numbers) and the config change
//! as a TOML snippet. A healthy gateway gets no findings.
//!
//! Findings: a route burning its error budget, a replica much slower than its peers, a rate
//! limit that refuses most of what it sees, retries refused by their budget, a service shedding
//! at its concurrency ceiling, a cache that rarely hits, connections to a service never reused,
//! a request timeout far above the latency it guards, a route without a cache whose answers a
//! shared cache could keep, a cache storing (or refused) answers that set a cookie, one path
//! making most of a route's slow requests.

mod cache;
mod guard;
mod route;
mod scale;
mod slo;
mod upstream;

use clap::Args as ClapArgs;
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::ExitCode;

#[derive(Debug, ClapArgs)]
#[command(
    about = "Say what to change: findings from a running headroom, ranked by impact, with the config to change",
    after_help = "Examples:\n  headroom advise                       # the admin listener at 127.0.0.1:9901\n  headroom advise --admin 10.0.0.5:9901 --json\n\nExit code: 0 with no findings, 1 with findings, 2 when the admin API cannot be read."
)]
pub struct Args {
    /// The admin listener.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: String,
    /// The admin token (`admin.token`), if set.
    #[arg(long, env = "HEADROOM_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
}

/// One thing to change.
#[derive(Debug, Serialize)]
pub struct Finding {
    /// A stable name: `slo_burning`, `slow_replica`, `mostly_rate_limited`, `retries_refused`,
    /// `at_concurrency_ceiling`, `cache_low_hit_ratio`, `connection_churn`,
    /// `timeout_far_above_latency`, `cacheable_without_cache`, `cache_stores_set_cookie`,
    /// `slow_path_dominates_p99`, `at_replica_ceiling`, `min_too_low_for_spikes`,
    /// `pool_saturated`.
    pub kind: &'static str,
    /// How much it matters, 0 to 100: findings are listed by it.
    pub impact: u32,
    pub title: String,
    /// The numbers it rests on, and over what.
    pub evidence: String,
    /// The config change, as TOML.
    pub change: String,
}

pub fn run(args: Args) -> ExitCode {
    let read = |path: &str| {
        crate::admin_client::request(&args.admin, args.token.as_deref(), "GET", path, None)
    };
    let (status, metrics) = match (read("/status"), read("/metrics")) {
        (Ok((200, s)), Ok((200, m))) => (s, m),
        (Ok((code, body)), _) | (_, Ok((code, body))) if code != 200 => {
            eprintln!(
                "headroom advise: the admin API at {} answered {code}: {}",
                args.admin,
                body.trim()
            );
            return ExitCode::from(2);
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!(
                "headroom advise: cannot reach the admin API at {}: {e}",
                args.admin
            );
            return ExitCode::from(2);
        }
        _ => unreachable!("every pair of answers is matched above"),
    };
    let status: serde_json::Value = match serde_json::from_str(&status) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("headroom advise: /status is not JSON: {e}");
            return ExitCode::from(2);
        }
    };
    let findings = advise(&status, &parse_metrics(&metrics));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&findings).unwrap_or_default()
        );
    } else if findings.is_empty() {
        println!("no findings: nothing to change from what this headroom has seen");
    } else {
        for (i, f) in findings.iter().enumerate() {
            println!("{}. [{}] {} (impact {})", i + 1, f.kind, f.title, f.impact);
            println!("   evidence: {}", f.evidence);
            println!("   change:");
            for line in f.change.lines() {
                println!("     {line}");
            }
            println!();
        }
    }
    if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Series → value, from the Prometheus text format.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// `name{a="x",b="y"}` → the value of label `key`.
pub(super) fn label<'a>(series: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("{key}=\"");
    let start = series.find(&needle)? + needle.len();
    let end = series[start..].find('"')? + start;
    Some(&series[start..end])
}

/// The findings, most impact first.
pub fn advise(status: &serde_json::Value, metrics: &BTreeMap<String, f64>) -> Vec<Finding> {
    let mut out = Vec::new();
    slo::slo_burning(status, &mut out);
    upstream::slow_replicas(status, &mut out);
    guard::mostly_limited(metrics, &mut out);
    upstream::retries_refused(metrics, &mut out);
    guard::at_concurrency_ceiling(status, metrics, &mut out);
    cache::cache_low_hit_ratio(status, metrics, &mut out);
    cache::cacheable_without_cache(status, metrics, &mut out);
    cache::cache_stores_set_cookie(status, metrics, &mut out);
    route::slow_path_dominates_p99(status, &mut out);
    upstream::connection_churn(status, metrics, &mut out);
    upstream::pool_saturated(status, metrics, &mut out);
    upstream::timeout_far_above_latency(status, metrics, &mut out);
    scale::at_replica_ceiling(status, &mut out);
    scale::min_too_low_for_spikes(status, &mut out);
    out.sort_by(|a, b| b.impact.cmp(&a.impact).then(a.title.cmp(&b.title)));
    out
}

/// The service a route forwards to, from `/status`'s routes.
pub(super) fn service_of<'a>(status: &'a serde_json::Value, route: &str) -> Option<&'a str> {
    status["routes"]
        .as_array()?
        .iter()
        .find(|r| r["route"] == route)?["action"]["service"]
        .as_str()
}

/// The sum of every series of metric `name` whose label `key` is `value`.
pub(super) fn sum_where(
    metrics: &BTreeMap<String, f64>,
    name: &str,
    key: &str,
    value: &str,
) -> f64 {
    metrics
        .iter()
        .filter(|(series, _)| {
            series
                .strip_prefix(name)
                .is_some_and(|r| r.starts_with('{'))
                && label(series, key) == Some(value)
        })
        .map(|(_, v)| v)
        .sum()
}
