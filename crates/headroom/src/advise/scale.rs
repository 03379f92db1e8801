//! The autoscaler's findings: a service held at its `max` while its load asks for more,
//! and one whose `min` is too low for its spikes.

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

/// Jumps from the floor that make a spike: at least doubling, and by two replicas or more.
fn is_spike(from: u64, to: u64) -> bool {
    to >= from.saturating_mul(2) && to >= from + 2
}

/// A service that keeps falling back to its `min` and then has to jump far above it at
/// once: every spike waits for replicas to start (at zero, the first requests are held for
/// a cold start). Two such jumps among the kept decisions make the pattern.
pub(super) fn min_too_low_for_spikes(status: &serde_json::Value, out: &mut Vec<Finding>) {
    let Some(services) = status["autoscale"].as_object() else {
        return;
    };
    for (service, a) in services {
        let (Some(min), Some(configured)) = (a["min"].as_u64(), a["configured_min"].as_u64())
        else {
            continue;
        };
        // The decisions that scaled up from the floor, straight to a multiple of it.
        let jumps: Vec<u64> = a["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["kind"] == "scale")
            .filter_map(|e| Some((e["from"].as_u64()?, e["to"].as_u64()?)))
            .filter(|&(from, to)| from <= min.max(configured) && is_spike(from, to))
            .map(|(_, to)| to)
            .collect();
        if jumps.len() < 2 {
            continue;
        }
        let mut sorted = jumps.clone();
        sorted.sort_unstable();
        let typical = sorted[sorted.len() / 2];
        let peak = sorted[sorted.len() - 1];
        // Half the usual spike stays warm: the rest still comes from the autoscaler.
        let suggested = typical.div_ceil(2).max(configured + 1);
        let cold = a["cold_start"]["last_seconds"]
            .as_f64()
            .map(|s| format!("; the last cold start from zero held the first requests {s:.1} s"))
            .unwrap_or_default();
        out.push(Finding {
            kind: "min_too_low_for_spikes",
            impact: 55,
            title: format!("service {service} falls back to min = {configured} and spikes far above it"),
            evidence: format!(
                "{} times in its last decisions it jumped from its floor straight to {typical} replicas (peak {peak}): each spike waits for replicas to start{cold}",
                jumps.len()
            ),
            change: format!(
                "# keep part of the usual spike warm (or raise min only at the busy hours with a schedule):\n[service.{service}.autoscale]\nmin = {suggested}"
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(min: u64, scales: &[(u64, u64)]) -> serde_json::Value {
        let events: Vec<_> = scales
            .iter()
            .map(|(f, t)| serde_json::json!({"at": 1, "kind": "scale", "from": f, "to": t, "why": ""}))
            .chain([serde_json::json!({"at": 1, "kind": "started", "replica": 0, "why": ""})])
            .collect();
        serde_json::json!({"autoscale": {"app": {
            "min": min, "configured_min": min, "max": 10, "desired": min,
            "events": events, "cold_start": null,
        }}})
    }

    fn findings(st: &serde_json::Value) -> Vec<Finding> {
        let mut out = Vec::new();
        min_too_low_for_spikes(st, &mut out);
        out
    }

    #[test]
    fn repeated_jumps_from_the_floor_suggest_a_higher_min() {
        let f = findings(&status(
            1,
            &[(1, 6), (6, 1), (1, 8), (8, 1), (1, 6), (6, 1)],
        ));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, "min_too_low_for_spikes");
        assert!(f[0].evidence.starts_with("3 times"), "{}", f[0].evidence);
        assert!(
            f[0].evidence.contains("to 6 replicas (peak 8)"),
            "{}",
            f[0].evidence
        );
        assert!(
            f[0].change.ends_with("[service.app.autoscale]\nmin = 3"),
            "{}",
            f[0].change
        );
    }

    #[test]
    fn gradual_growth_or_a_single_spike_is_not_the_pattern() {
        // Step by step from the floor: the autoscaler keeps up.
        assert!(findings(&status(2, &[(2, 3), (3, 4), (4, 2), (2, 3), (3, 2)])).is_empty());
        // One spike: not yet a pattern.
        assert!(findings(&status(1, &[(1, 6), (6, 1)])).is_empty());
        // Jumps that do not start at the floor.
        assert!(findings(&status(1, &[(3, 8), (8, 3), (3, 8)])).is_empty());
    }

    #[test]
    fn from_zero_the_cold_start_is_in_the_evidence() {
        let mut st = status(0, &[(0, 4), (4, 0), (0, 4)]);
        st["autoscale"]["app"]["cold_start"] = serde_json::json!({"last_seconds": 1.3});
        let f = findings(&st);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].evidence.contains("held the first requests 1.3 s"),
            "{}",
            f[0].evidence
        );
        assert!(f[0].change.ends_with("min = 2"), "{}", f[0].change);
    }
}
