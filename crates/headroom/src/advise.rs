//! `headroom advise`: reads a running headroom's `/status` and `/metrics` and says what to
//! change, most impact first, each finding with its evidence (numbers) and the config change
//! as a TOML snippet. A healthy gateway gets no findings.
//!
//! Findings so far: a route burning its error budget, a replica much slower than its peers,
//! a rate limit that refuses most of what it sees, retries refused by their budget.

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
    /// A stable name: `slo_burning`, `slow_replica`, `mostly_rate_limited`, `retries_refused`.
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
fn label<'a>(series: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("{key}=\"");
    let start = series.find(&needle)? + needle.len();
    let end = series[start..].find('"')? + start;
    Some(&series[start..end])
}

/// The findings, most impact first.
pub fn advise(status: &serde_json::Value, metrics: &BTreeMap<String, f64>) -> Vec<Finding> {
    let mut out = Vec::new();
    slo_burning(status, &mut out);
    slow_replicas(status, &mut out);
    mostly_limited(metrics, &mut out);
    retries_refused(metrics, &mut out);
    out.sort_by(|a, b| b.impact.cmp(&a.impact).then(a.title.cmp(&b.title)));
    out
}

/// The service a route forwards to, from `/status`'s routes.
fn service_of<'a>(status: &'a serde_json::Value, route: &str) -> Option<&'a str> {
    status["routes"]
        .as_array()?
        .iter()
        .find(|r| r["route"] == route)?["action"]["service"]
        .as_str()
}

fn slo_burning(status: &serde_json::Value, out: &mut Vec<Finding>) {
    let Some(slos) = status["watch"]["slos"].as_array() else {
        return;
    };
    for o in slos {
        let name = o["objective"].as_str().unwrap_or("?");
        let left = o["budget_left"].as_f64().unwrap_or(1.0);
        let firing: Vec<String> = o["pairs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["firing"] == true)
            .map(|p| {
                format!(
                    "{:.1}× over {}",
                    p["long_rate"].as_f64().unwrap_or(0.0),
                    p["window"].as_str().unwrap_or("?")
                )
            })
            .collect();
        if firing.is_empty() && left >= 0.5 {
            continue;
        }
        let route = name
            .strip_prefix("route ")
            .map(|r| r.split(' ').next().unwrap_or(r))
            .unwrap_or(name);
        let service = service_of(status, route).unwrap_or("NAME");
        let svc = status["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["service"] == service));
        let has_ewma = svc.is_some_and(|s| s["balance"] == "p2c-ewma");
        let has_shed = svc.is_some_and(|s| !s["shed"].is_null());
        let latency = o["sli"] == "latency";
        out.push(Finding {
            kind: "slo_burning",
            impact: if left < 0.0 || !firing.is_empty() { 95 } else { 70 },
            title: format!("{name} is burning its error budget"),
            evidence: format!(
                "{} of {} requests bad against a {}% objective over {} days: {:.0}% of the budget left{}",
                o["bad"],
                o["total"],
                o["target"].as_f64().unwrap_or(0.0) * 100.0,
                o["period_secs"].as_u64().unwrap_or(0) / 86_400,
                left * 100.0,
                if firing.is_empty() {
                    String::new()
                } else {
                    format!("; burning {}", firing.join(", "))
                }
            ),
            change: if latency {
                // Only what the service does not do yet.
                let mut c = String::from("# slow answers spend it");
                if !has_ewma {
                    c.push_str(&format!(
                        "; let a slow replica get less:\n[service.{service}]\nbalance = \"p2c-ewma\""
                    ));
                }
                if !has_shed {
                    c.push_str(&format!(
                        "\n# shed before the queue grows:\n[service.{service}.shed]\nadaptive = true"
                    ));
                }
                if has_ewma && has_shed {
                    c.push_str(
                        " although the service balances by latency and sheds: add replicas, or find the slow path (the dashboard's p99 by route)",
                    );
                }
                c
            } else {
                format!(
                    "# 5xx answers spend it: retry what a replica failed on another one\n[service.{service}]\nretry = {{ attempts = 2, on_status = [502, 503, 504] }}"
                )
            },
        });
    }
}

fn slow_replicas(status: &serde_json::Value, out: &mut Vec<Finding>) {
    for s in status["services"].as_array().into_iter().flatten() {
        let reps: Vec<(&str, f64)> = s["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| Some((r["replica"].as_str()?, r["ewma_ms"].as_f64()?)))
            .filter(|(_, ms)| *ms > 0.0)
            .collect();
        if reps.len() < 2 {
            continue;
        }
        for (i, (name, ms)) in reps.iter().enumerate() {
            let mut others: Vec<f64> = reps
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, r)| r.1)
                .collect();
            others.sort_by(f64::total_cmp);
            let median = others[others.len() / 2];
            // 3× its peers and at least 5 ms more: not loopback noise.
            if *ms < 3.0 * median || *ms - median < 5.0 {
                continue;
            }
            let service = s["service"].as_str().unwrap_or("?");
            let change = if s["balance"] == "p2c-ewma" {
                format!(
                    "# p2c-ewma already sends it less; drain it while you look:\n#   curl -X DELETE 'http://ADMIN/services/{service}/replicas/{name}?drain=10s'\n# or give it less weight:\n[service.{service}]\nreplicas = [{{ addr = \"{name}\", weight = 1 }}, ...]   # the others at 3"
                )
            } else {
                format!(
                    "# send a slow replica less, by its latency:\n[service.{service}]\nbalance = \"p2c-ewma\""
                )
            };
            out.push(Finding {
                kind: "slow_replica",
                impact: 60,
                title: format!("replica {name} of service {service} is much slower than its peers"),
                evidence: format!(
                    "EWMA latency {ms:.1} ms against a median of {median:.1} ms for the other {} replica(s)",
                    others.len()
                ),
                change,
            });
        }
    }
}

fn mostly_limited(metrics: &BTreeMap<String, f64>, out: &mut Vec<Finding>) {
    // (route, limit) → (allowed, limited)
    let mut seen: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    for (series, v) in metrics {
        if !series.starts_with("headroom_guard_limit_total{") {
            continue;
        }
        let (Some(route), Some(limit), Some(result)) = (
            label(series, "route"),
            label(series, "limit"),
            label(series, "result"),
        ) else {
            continue;
        };
        let e = seen.entry((route.into(), limit.into())).or_default();
        match result {
            "allowed" => e.0 += v,
            "limited" => e.1 += v,
            _ => {}
        }
    }
    for ((route, limit), (allowed, limited)) in seen {
        let total = allowed + limited;
        if total < 20.0 || limited / total < 0.5 {
            continue;
        }
        let who = route
            .strip_prefix("consumer:")
            .map_or(format!("route {route}"), |c| format!("consumer {c}"));
        out.push(Finding {
            kind: "mostly_rate_limited",
            impact: 50,
            title: format!("limit \"{limit}\" of {who} refuses most of what it sees"),
            evidence: format!(
                "{limited:.0} of {total:.0} requests limited ({:.0}%) since start",
                100.0 * limited / total
            ),
            change: format!(
                "# if this is real demand, raise the limit (or count it per consumer):\n[[route.limit]]\nname = \"{limit}\"\nrate = \"...\"   # above the demand: {total:.0} requests were asked for\nkey = \"consumer\"\n# if it is abuse, it works as meant: leave it"
            ),
        });
    }
}

fn retries_refused(metrics: &BTreeMap<String, f64>, out: &mut Vec<Finding>) {
    for (series, denied) in metrics {
        if !series.starts_with("headroom_retries_denied_total{") || *denied < 1.0 {
            continue;
        }
        let service = label(series, "service").unwrap_or("?");
        let tried = metrics
            .get(&format!("headroom_retries_total{{service=\"{service}\"}}"))
            .copied()
            .unwrap_or(0.0);
        out.push(Finding {
            kind: "retries_refused",
            impact: 55,
            title: format!("service {service}'s retries run out of budget"),
            evidence: format!(
                "{denied:.0} retries refused by the budget, {tried:.0} made, since start: failures reached clients that a retry might have saved"
            ),
            change: format!(
                "# a larger budget, if the replicas can take the extra load (it caps retries at a share of requests):\n[service.{service}]\nretry = {{ attempts = 2, budget = \"30%\", min_per_second = 20 }}"
            ),
        });
    }
}
