//! A route's SLO burning its error budget.

use super::{service_of, Finding};

pub(super) fn slo_burning(status: &serde_json::Value, out: &mut Vec<Finding>) {
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
        // The verdict says what it judges: a route (then the service it forwards to, if
        // any) or a service.
        let service = match (o["route"].as_str(), o["service"].as_str()) {
            (_, Some(s)) => Some(s),
            (Some(route), None) => service_of(status, route),
            (None, None) => None,
        };
        let Some(service) = service else {
            // A route answering by itself (`respond`, `redirect`): no service to change.
            let route = o["route"].as_str().unwrap_or(name);
            out.push(Finding {
                kind: "slo_burning",
                impact: if left < 0.0 || !firing.is_empty() { 95 } else { 70 },
                title: format!("{name} is burning its error budget"),
                evidence: format!(
                    "{} of {} requests bad against a {}% objective: {:.0}% of the budget left; the route answers by itself, no service behind it",
                    o["bad"],
                    o["total"],
                    o["target"].as_f64().unwrap_or(0.0) * 100.0,
                    left * 100.0
                ),
                change: format!("# route \"{route}\" answers with its own `respond` or `redirect`: its answers are the config's,\n# check its status (a 5xx there spends the budget on purpose) or the objective"),
            });
            continue;
        };
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
