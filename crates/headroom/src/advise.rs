//! `headroom advise`: reads a running headroom's `/status` and `/metrics` and says what to
//! change, most impact first, each finding with its evidence (numbers) and the config change
//! as a TOML snippet. A healthy gateway gets no findings.
//!
//! Findings: a route burning its error budget, a replica much slower than its peers, a rate
//! limit that refuses most of what it sees, retries refused by their budget, a service shedding
//! at its concurrency ceiling, a cache that rarely hits, connections to a service never reused,
//! a request timeout far above the latency it guards.

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
    /// `timeout_far_above_latency`.
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
    at_concurrency_ceiling(status, metrics, &mut out);
    cache_low_hit_ratio(status, metrics, &mut out);
    connection_churn(status, metrics, &mut out);
    timeout_far_above_latency(status, metrics, &mut out);
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

/// The sum of every series of metric `name` whose label `key` is `value`.
fn sum_where(metrics: &BTreeMap<String, f64>, name: &str, key: &str, value: &str) -> f64 {
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

fn at_concurrency_ceiling(
    status: &serde_json::Value,
    metrics: &BTreeMap<String, f64>,
    out: &mut Vec<Finding>,
) {
    for s in status["services"].as_array().into_iter().flatten() {
        let shed = &s["shed"];
        if shed.is_null() {
            continue;
        }
        let service = s["service"].as_str().unwrap_or("?");
        let refused: Vec<(&str, f64)> = ["queue_full", "queue_timeout", "sheddable"]
            .into_iter()
            .map(|reason| {
                let series = format!(
                    "headroom_guard_shed_total{{service=\"{service}\",reason=\"{reason}\"}}"
                );
                (reason, metrics.get(&series).copied().unwrap_or(0.0))
            })
            .filter(|(_, n)| *n > 0.0)
            .collect();
        let total_shed: f64 = refused.iter().map(|(_, n)| n).sum();
        // Shed answers are counted there too (503s with the service's label).
        let asked = sum_where(metrics, "headroom_requests_total", "service", service);
        let limit = shed["limit"].as_u64().unwrap_or(0);
        let max = shed["max"].as_u64();
        let inflight = shed["inflight"].as_u64().unwrap_or(0);
        // A handful shed in a burst is the limit doing its job; 1% of what was asked is a
        // ceiling the service lives at.
        if total_shed < 5.0 || total_shed < 0.01 * asked {
            continue;
        }
        let adaptive = shed["adaptive"] == true;
        let change = if adaptive && max.is_some_and(|m| limit < m) {
            format!(
                "# the adaptive limit ({limit}) is under its ceiling: latency grew with load, the replicas are at capacity.\n# add replicas (the limit follows), or let requests wait a little instead of a 503:\n[service.{service}.shed]\nqueue = {}\nqueue_timeout = \"500ms\"",
                limit.max(1)
            )
        } else if !adaptive {
            format!(
                "# the fixed limit is the ceiling; if the replicas keep their latency with more in flight, raise it\n# (or let the limit follow latency), else add replicas:\n[service.{service}.shed]\nmax_inflight = {}\nadaptive = true",
                (limit * 2).max(2)
            )
        } else {
            format!(
                "# the adaptive limit is pinned at its ceiling: raise the ceiling if the replicas can take it, else add replicas:\n[service.{service}.shed]\nmax_limit = {}",
                (limit * 2).max(2)
            )
        };
        out.push(Finding {
            kind: "at_concurrency_ceiling",
            impact: 65,
            title: format!("service {service} sheds requests at its concurrency limit"),
            evidence: format!(
                "{total_shed:.0} of {asked:.0} requests shed ({:.0}%) since start ({}); now {inflight} in flight at a limit of {limit}{}",
                100.0 * total_shed / asked.max(1.0),
                refused
                    .iter()
                    .map(|(r, n)| format!("{n:.0} {r}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                max.map_or(String::new(), |m| format!(" (ceiling {m})"))
            ),
            change,
        });
    }
}

fn cache_low_hit_ratio(
    status: &serde_json::Value,
    metrics: &BTreeMap<String, f64>,
    out: &mut Vec<Finding>,
) {
    let Some(routes) = status["cache"]["routes"].as_object() else {
        return;
    };
    for (route, c) in routes {
        let lookups = c["lookups"].as_u64().unwrap_or(0);
        let hits = c["hits"].as_u64().unwrap_or(0);
        // 50 lookups: under that a cold cache still reads as a bad one.
        if lookups < 50 || hits as f64 >= 0.2 * lookups as f64 {
            continue;
        }
        let count = |result: &str| {
            metrics
                .get(&format!(
                    "headroom_cache_requests_total{{route=\"{route}\",result=\"{result}\"}}"
                ))
                .copied()
                .unwrap_or(0.0)
        };
        let filled = count("miss") + count("expired");
        let bypassed = count("bypass");
        let stored = metrics
            .get(&format!("headroom_cache_stored_total{{route=\"{route}\"}}"))
            .copied()
            .unwrap_or(0.0);
        let change = if bypassed > filled {
            format!(
                "# most requests bypass the cache (a rule, a bypass cookie or header): if they need not,\n# narrow the bypass in route \"{route}\"'s [route.cache] (bypass_cookies, bypass_headers, a rule's bypass)"
            )
        } else if stored < 0.1 * filled {
            format!(
                "# almost nothing the origin answered could be stored: no freshness (Cache-Control max-age,\n# Expires), or Set-Cookie, no-store, private; a response's Cache-Status header says which (detail=).\n# if these answers are the same for everyone, give them a lifetime in route \"{route}\":\n[route.cache]\nttl = \"60s\"\n# and if it is Set-Cookie, only the client whose request filled the cache gets the cookie:\n# allow_set_cookie = true"
            )
        } else {
            format!(
                "# answers are stored but rarely asked for again: each URL comes once (a long tail), or the key\n# is finer than the answers (every query string, a header); if a query parameter or header does not\n# change the answer, leave it out of route \"{route}\"'s key:\n[route.cache]\nkey = {{ query = \"none\" }}   # or query_allow = [\"page\"]"
            )
        };
        out.push(Finding {
            kind: "cache_low_hit_ratio",
            impact: 40,
            title: format!("the cache of route {route} rarely hits"),
            evidence: format!(
                "{hits} hits in {lookups} lookups ({:.0}%) since start; {stored:.0} answers stored from {filled:.0} misses, {bypassed:.0} bypassed",
                100.0 * hits as f64 / lookups as f64
            ),
            change,
        });
    }
}

fn connection_churn(
    status: &serde_json::Value,
    metrics: &BTreeMap<String, f64>,
    out: &mut Vec<Finding>,
) {
    for s in status["services"].as_array().into_iter().flatten() {
        // An h2 connection is shared, not pooled: idle counts say nothing of it.
        if s["protocol"] != "http1" {
            continue;
        }
        let service = s["service"].as_str().unwrap_or("?");
        let forwarded = metrics
            .get(&format!(
                "headroom_upstream_duration_seconds_count{{service=\"{service}\"}}"
            ))
            .copied()
            .unwrap_or(0.0);
        let opened = metrics
            .get(&format!(
                "headroom_upstream_connections_opened_total{{service=\"{service}\"}}"
            ))
            .copied()
            .unwrap_or(0.0);
        // Pooled connections serve many requests each: more than one new connection for
        // every two requests means keep-alive is mostly lost.
        if forwarded < 50.0 || opened < forwarded * 0.5 {
            continue;
        }
        let change = if s["max_idle"] == 0 {
            format!("# the pool keeps no idle connection: keep some\n[service.{service}]\nmax_idle = 64")
        } else {
            format!(
                "# the replicas close every connection (Connection: close, HTTP/1.0, or a body that ends at close):\n# turn keep-alive on in the upstream server (nginx: keepalive_timeout; Node: server.keepAliveTimeout),\n# or, if it speaks h2, one multiplexed connection per worker:\n[service.{service}]\nprotocol = \"h2\""
            )
        };
        out.push(Finding {
            kind: "connection_churn",
            impact: 35,
            title: format!("connections to service {service} are not reused"),
            evidence: format!(
                "{opened:.0} connections opened for {forwarded:.0} requests forwarded since start ({:.0}%): most requests paid a TCP connect",
                100.0 * opened / forwarded
            ),
            change,
        });
    }
}

/// headroom's `request_timeout` when the file sets none: its own choice, not the operator's,
/// so it is not reported (every fast service would get the finding, burying the others).
const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;

/// The upper bound of the histogram bucket holding the `q` quantile of `service`'s upstream
/// durations, with the sample count; None past the last finite bucket.
fn upstream_quantile(metrics: &BTreeMap<String, f64>, service: &str, q: f64) -> Option<(f64, f64)> {
    let prefix = format!("headroom_upstream_duration_seconds_bucket{{service=\"{service}\",le=\"");
    let mut buckets: Vec<(f64, f64)> = metrics
        .iter()
        .filter_map(|(series, n)| {
            let le = series.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            Some((le.parse::<f64>().unwrap_or(f64::INFINITY), *n))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = buckets.last()?.1;
    let (le, _) = buckets.iter().find(|(_, n)| *n >= q * count)?;
    le.is_finite().then_some((*le, count))
}

fn timeout_far_above_latency(
    status: &serde_json::Value,
    metrics: &BTreeMap<String, f64>,
    out: &mut Vec<Finding>,
) {
    for s in status["services"].as_array().into_iter().flatten() {
        let service = s["service"].as_str().unwrap_or("?");
        let Some(timeout_ms) = s["request_timeout_ms"].as_u64() else {
            continue;
        };
        if timeout_ms == DEFAULT_REQUEST_TIMEOUT_MS || timeout_ms < 1_000 {
            continue;
        }
        let Some((p99, count)) = upstream_quantile(metrics, service, 0.99) else {
            continue;
        };
        // Under 100 samples a p99 is only the slowest one seen.
        // Rounded: bucket bounds times 1000 are not exact in binary (0.025 → 25.000000000000004).
        let p99_ms = (p99 * 1e6).round() / 1e3;
        if count < 100.0 || (timeout_ms as f64) < 10.0 * p99_ms {
            continue;
        }
        // 10× the p99, at least 1 s, in whole seconds: room for the slow tail, not for a hang.
        let suggest_s = (10.0 * p99_ms / 1e3).ceil().max(1.0) as u64;
        if suggest_s * 1_000 >= timeout_ms {
            continue;
        }
        out.push(Finding {
            kind: "timeout_far_above_latency",
            impact: 25,
            title: format!("service {service}'s request timeout is far above its latency"),
            evidence: format!(
                "p99 of {count:.0} upstream answers under {p99_ms} ms since start, against request_timeout = {}: {:.0}× it; a hung replica holds each request that long",
                humantime::format_duration(std::time::Duration::from_millis(timeout_ms)),
                timeout_ms as f64 / p99_ms
            ),
            change: format!(
                "# 10× the p99 (at least 1 s): a hung replica fails fast, and a retry can try another\n[service.{service}]\nrequest_timeout = \"{suggest_s}s\""
            ),
        });
    }
}
