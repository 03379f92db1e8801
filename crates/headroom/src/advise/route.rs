//! A route's slow requests: one path making most of its tail.

use super::{service_of, Finding};

/// A duration in milliseconds as people read it: "1.2 s", "50 ms".
fn human_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

/// `route` and `path` as a route name: "api-reports-export".
fn route_name(route: &str, path: &str) -> String {
    let mut name = String::from(route);
    for part in path.split(|c: char| !c.is_ascii_alphanumeric()) {
        if !part.is_empty() {
            name.push('-');
            name.push_str(&part.to_ascii_lowercase());
        }
    }
    name
}

pub(super) fn slow_path_dominates_p99(status: &serde_json::Value, out: &mut Vec<Finding>) {
    for r in status["routes"].as_array().into_iter().flatten() {
        let s = &r["slow"];
        let (Some(route), Some(threshold_ms), Some(slow)) = (
            r["route"].as_str(),
            s["threshold_ms"].as_f64(),
            s["slow"].as_u64(),
        ) else {
            continue;
        };
        let Some(top) = s["top"].as_array().and_then(|t| t.first()) else {
            continue;
        };
        let request = top["request"].as_str().unwrap_or("");
        let Some((method, path)) = request.split_once(' ').filter(|(_, p)| !p.is_empty()) else {
            continue;
        };
        // Space-Saving may count a path up to `error` too many: only what it surely saw.
        let surely = top["count"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(top["error"].as_u64().unwrap_or(0));
        // 20 slow requests: under that, a few unlucky ones.
        if slow < 20 || (surely as f64) < 0.5 * slow as f64 {
            continue;
        }
        // Its share of all the route's requests, from the sample; a path missing from a
        // full sketch was seen at most as often as its smallest entry.
        let sampled = s["sampled"].as_u64().unwrap_or(0);
        let entries = s["sampled_top"].as_array().map_or(&[][..], |v| v);
        let in_sample = entries
            .iter()
            .find(|e| e["request"] == request)
            .and_then(|e| e["count"].as_u64())
            .unwrap_or_else(|| {
                if entries.len() >= 16 {
                    entries
                        .iter()
                        .filter_map(|e| e["count"].as_u64())
                        .min()
                        .unwrap_or(0)
                } else {
                    0
                }
            });
        // 20 sampled: under that the share is a guess. Half of the traffic or more: the
        // path is the route, and its own route would change nothing.
        if sampled < 20 || in_sample as f64 >= 0.5 * sampled as f64 {
            continue;
        }
        let service = service_of(status, route).unwrap_or("SERVICE");
        let name = route_name(route, path);
        let cache = if method == "GET" {
            "\n# a GET: if its answer is the same for everyone for a while, cache it too\n[route.cache]\nttl = \"60s\""
        } else {
            ""
        };
        out.push(Finding {
            kind: "slow_path_dominates_p99",
            impact: 50,
            title: format!(
                "{request} is {:.0}% of route {route}'s requests above its p99 ({})",
                100.0 * surely as f64 / slow as f64,
                human_ms(threshold_ms)
            ),
            evidence: format!(
                "{surely} of {slow} requests at or above {} since start were {request}, which is {} of the route's {sampled} sampled requests ({:.0}%): it sets the route's tail, and the timeout and latency objective the rest live under",
                human_ms(threshold_ms),
                if in_sample == 0 { "none".to_string() } else { in_sample.to_string() },
                100.0 * in_sample as f64 / sampled as f64
            ),
            change: format!(
                "# give it a route of its own, before route \"{route}\" (the first route that matches wins),\n# and a service entry of its own (the same replicas) whose timeout fits it:\n[[route]]\nname = \"{name}\"\nmatch.path = \"{path}\"\nservice = \"{service}-slow\"{cache}\n\n[service.{service}-slow]\nreplicas = [...]   # those of service {service}\nrequest_timeout = \"...\"   # above this path's own latency (at least {} now)",
                human_ms(threshold_ms)
            ),
        });
    }
}
