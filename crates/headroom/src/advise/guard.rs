//! The guard's refusals: a rate limit refusing most of what it sees, a service shedding at its
//! concurrency ceiling.

use super::{label, sum_where, Finding};
use std::collections::BTreeMap;

pub(super) fn mostly_limited(metrics: &BTreeMap<String, f64>, out: &mut Vec<Finding>) {
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

pub(super) fn at_concurrency_ceiling(
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
