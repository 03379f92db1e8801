//! A service's upstreams: a replica slower than its peers, retries out of budget, connections
//! not reused, a request timeout far above the latency it guards.

use super::{label, Finding};
use std::collections::BTreeMap;

pub(super) fn slow_replicas(status: &serde_json::Value, out: &mut Vec<Finding>) {
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
            // 3× its peers and at least 20 ms more: not noise (a loaded 2-core machine puts a
            // loopback replica's peak EWMA at 8 ms now and then).
            if *ms < 3.0 * median || *ms - median < 20.0 {
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

pub(super) fn retries_refused(metrics: &BTreeMap<String, f64>, out: &mut Vec<Finding>) {
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

/// Requests the service forwarded since start.
fn forwarded(metrics: &BTreeMap<String, f64>, service: &str) -> f64 {
    metrics
        .get(&format!(
            "headroom_upstream_duration_seconds_count{{service=\"{service}\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
}

pub(super) fn connection_churn(
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
        let forwarded = forwarded(metrics, service);
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
            format!("# the pool keeps no idle connection: keep some\n[service.{service}]\nmax_idle = 1024")
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

/// A service whose requests often found `max_conns` connections to a replica busy and
/// waited for one: the replicas are saturated (or the bound is too low for their latency).
pub(super) fn pool_saturated(
    status: &serde_json::Value,
    metrics: &BTreeMap<String, f64>,
    out: &mut Vec<Finding>,
) {
    for s in status["services"].as_array().into_iter().flatten() {
        let (Some(waits), Some(max_conns)) = (s["pool_waits"].as_u64(), s["max_conns"].as_u64())
        else {
            continue;
        };
        let service = s["service"].as_str().unwrap_or("?");
        let forwarded = forwarded(metrics, service);
        // One request in ten waiting, over enough of them to be a pattern.
        if max_conns == 0 || waits < 50 || (waits as f64) < forwarded * 0.1 {
            continue;
        }
        out.push(Finding {
            kind: "pool_saturated",
            impact: 60,
            title: format!("requests to service {service} wait for a free connection"),
            evidence: format!(
                "{waits} of {forwarded:.0} requests forwarded since start ({:.0}%) found all max_conns = {max_conns} connections to their replica busy (per worker) and queued for one",
                100.0 * waits as f64 / forwarded.max(1.0)
            ),
            change: format!(
                "# more replicas (or an autoscaler) if they are busy; a higher bound if they are\n# slow but not busy (long polling, slow dependencies):\n[service.{service}]\nmax_conns = {}",
                max_conns * 4
            ),
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

pub(super) fn timeout_far_above_latency(
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
