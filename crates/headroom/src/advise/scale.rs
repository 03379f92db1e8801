//! The autoscaler's findings: a service held at its `max` while its load asks for more.

use super::Finding;

/// A service whose autoscaler wants more replicas than `max` allows, at its last decision.
pub(super) fn at_replica_ceiling(status: &serde_json::Value, out: &mut Vec<Finding>) {
    let Some(services) = status["autoscale"].as_object() else {
        return;
    };
    for (service, a) in services {
        let (Some(max), Some(desired)) = (a["max"].as_u64(), a["desired"].as_u64()) else {
            continue;
        };
        let d = &a["last_decision"];
        // The HPA's recommendation, or the larger of the KPA's two windows.
        let wants = d["decision"]["recommended"]
            .as_u64()
            .or_else(|| {
                let (s, p) = (
                    d["stable_wants"].as_u64()?,
                    d["panic_wants"].as_u64().unwrap_or(0),
                );
                Some(s.max(p))
            })
            .unwrap_or(0);
        if desired < max || wants <= max {
            continue;
        }
        let why = match (d["stable_concurrency"].as_f64(), d["proposals"].as_array()) {
            (Some(c), _) => format!("{c:.1} requests in flight on average"),
            (None, Some(p)) => p
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            _ => String::new(),
        };
        out.push(Finding {
            kind: "at_replica_ceiling",
            impact: 80,
            title: format!("service {service} is held at its max of {max} replicas"),
            evidence: format!(
                "its last decision wanted {wants} replicas ({why}); max allows {max}: requests queue on the replicas there are"
            ),
            change: format!(
                "# let it grow to what the load asks for (and check the machine has the cores):\n[service.{service}.autoscale]\nmax = {}",
                wants.max(max * 2)
            ),
        });
    }
}
