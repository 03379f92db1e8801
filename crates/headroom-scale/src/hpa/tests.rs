//! The worked examples of Kubernetes' "Horizontal Pod Autoscaling" page
//! (kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/, "Algorithm details"
//! and "Configurable scaling behavior"), and the rules of `replica_calculator.go` and
//! `horizontal.go` they illustrate.

use super::*;
use Reading::{Missing, NotReady, Value as V};

fn per_replica(readings: &[Reading], target: f64) -> Metric {
    Metric::PerReplica {
        readings: readings.to_vec(),
        target,
    }
}

fn replicas(current: u32, m: &Metric) -> u32 {
    propose(current, m, DEFAULT_TOLERANCE).unwrap().replicas
}

/// "if the current metric value is 200m, and the desired value is 100m, the number of
/// replicas will be doubled ... If the current value is instead 50m, you'll halve the
/// number of replicas".
#[test]
fn docs_double_at_twice_the_target_and_halve_at_half() {
    assert_eq!(replicas(2, &per_replica(&[V(200.0), V(200.0)], 100.0)), 4);
    assert_eq!(replicas(4, &per_replica(&[V(50.0); 4], 100.0)), 2);
}

/// "The control plane skips any scaling action if the ratio is sufficiently close to 1.0
/// (within a globally-configurable tolerance, 0.1 by default)."
#[test]
fn docs_within_the_tolerance_nothing_changes() {
    let p = propose(4, &per_replica(&[V(109.0); 4], 100.0), DEFAULT_TOLERANCE).unwrap();
    assert_eq!((p.replicas, p.within_tolerance), (4, true));
    assert_eq!(replicas(4, &per_replica(&[V(111.0); 4], 100.0)), 5);
}

/// "assuming those pods were consuming 100% of the desired value in case of a scale down,
/// and 0% in case of a scale up."
#[test]
fn docs_missing_readings_damp_the_change_in_both_directions() {
    // Down: without the missing one, ceil(0.5 × 2) = 1; with it at the target, 2.
    assert_eq!(
        replicas(3, &per_replica(&[V(50.0), V(50.0), Missing], 100.0)),
        2
    );
    // Up: without it, ceil(2 × 2) = 4 of the two read; with it at 0, ceil(4/3 × 3) = 4 —
    // the average of three, not a fourth replica on top of the two read.
    let p = propose(3, &per_replica(&[V(200.0), V(200.0), Missing], 100.0), 0.1).unwrap();
    assert_eq!(p.replicas, 4);
    assert!((p.ratio - 2.0).abs() < 1e-9, "the ratio over the readings");
}

/// A missing CPU reading counts as 100% of the replica's request, not as the target: with a
/// 50% target, two replicas at 30% and one unread make the average 53%, above the target —
/// the direction flips, so nothing changes.
#[test]
fn a_missing_utilization_reading_counts_as_the_whole_request() {
    let m = Metric::Utilization {
        readings: vec![V(30.0), V(30.0), Missing],
        target: 50.0,
    };
    let p = propose(3, &m, DEFAULT_TOLERANCE).unwrap();
    assert_eq!((p.replicas, p.within_tolerance), (3, true));
}

/// "the controller conservatively assumes that the not-yet-ready pods are consuming 0% of
/// the desired metric, further dampening the magnitude of a scale up."
#[test]
fn docs_not_ready_replicas_count_as_idle_when_scaling_up() {
    // Two ready at twice the target and two starting: (400 + 0 + 0) / 4 = the target.
    let m = per_replica(&[V(200.0), V(200.0), NotReady, NotReady], 100.0);
    let p = propose(4, &m, DEFAULT_TOLERANCE).unwrap();
    assert_eq!((p.replicas, p.within_tolerance), (4, true));
    // One ready at three times the target and four starting: the ready one alone would
    // ask ceil(3 × 1) = 3, fewer than the five there are; with the four at 0 the average
    // is 0.6 of the target, the other way: nothing changes.
    let m = per_replica(&[V(300.0), NotReady, NotReady, NotReady, NotReady], 100.0);
    let p = propose(5, &m, DEFAULT_TOLERANCE).unwrap();
    assert_eq!((p.replicas, p.within_tolerance), (5, true));
    // Scaling down, not-ready replicas are left out: ceil(0.5 × 2) = 1.
    let m = per_replica(&[V(50.0), V(50.0), NotReady], 100.0);
    assert_eq!(replicas(3, &m), 1);
}

#[test]
fn no_reading_proposes_nothing_rather_than_zero() {
    let m = per_replica(&[Missing, NotReady], 100.0);
    assert_eq!(propose(2, &m, 0.1), Err(NoProposal::NoReadings));
    assert_eq!(
        propose(2, &per_replica(&[V(1.0)], 0.0), 0.1),
        Err(NoProposal::BadTarget)
    );
    assert_eq!(
        propose(2, &per_replica(&[V(f64::NAN)], 1.0), 0.1),
        Err(NoProposal::BadValue)
    );
}

/// An object metric with a `Value` target (p95 latency): the ready count scaled by the
/// ratio; from zero replicas, `ceil(ratio)`.
#[test]
fn a_service_wide_value_scales_the_ready_replicas() {
    let m = |value, ready| Metric::Value {
        value,
        target: 0.3,
        ready,
    };
    assert_eq!(replicas(3, &m(0.6, 3)), 6);
    assert_eq!(replicas(3, &m(0.31, 3)), 3, "within the tolerance");
    assert_eq!(replicas(4, &m(0.15, 4)), 2);
    assert_eq!(replicas(0, &m(0.6, 0)), 2);
}

/// An external metric with an `AverageValue` target (a queue): `ceil(total / per_replica)`,
/// unless within the tolerance of what the current replicas take.
#[test]
fn a_total_is_shared_per_replica() {
    let q = |total| Metric::Total {
        total,
        per_replica: 10.0,
    };
    assert_eq!(replicas(2, &q(100.0)), 10);
    assert_eq!(replicas(0, &q(100.0)), 10);
    assert_eq!(replicas(2, &q(21.0)), 2, "within 10% of 20");
    assert_eq!(replicas(5, &q(0.0)), 0);
}

fn hpa(min: u32, max: u32) -> Hpa {
    Hpa::new(HpaConfig::new(min, max))
}

/// "When the metrics indicate that the target should be scaled down the algorithm looks
/// into previously computed desired states, and uses the highest value from the specified
/// interval" (300 s by default).
#[test]
fn docs_scale_down_waits_for_the_stabilization_window() {
    let mut h = hpa(1, 20);
    assert_eq!(h.decide(0.0, 10, &[10]).desired, 10);
    let d = h.decide(60.0, 10, &[5]);
    assert_eq!((d.desired, d.limit), (10, Limit::ScaleDownStabilized));
    assert_eq!(
        h.decide(299.0, 10, &[5]).desired,
        10,
        "t=0's 10 is in the window"
    );
    let d = h.decide(301.0, 10, &[5]);
    assert_eq!((d.desired, d.limit), (5, Limit::None));
}

/// The default scale-up: "+100% or +4 pods per 15 s, whichever is more".
#[test]
fn default_scale_up_adds_four_or_doubles_per_fifteen_seconds() {
    let mut h = hpa(1, 50);
    let d = h.decide(0.0, 1, &[10]);
    assert_eq!((d.desired, d.limit), (5, Limit::ScaleUpLimit));
    let d = h.decide(10.0, 5, &[10]);
    assert_eq!(d.desired, 5, "the period still holds the +4");
    assert_eq!(h.decide(15.0, 5, &[10]).desired, 10, "5 doubled");
    let d = h.decide(30.0, 10, &[60]);
    assert_eq!((d.desired, d.limit), (20, Limit::ScaleUpLimit));
    let d = h.decide(45.0, 20, &[60]);
    assert_eq!((d.desired, d.limit), (40, Limit::ScaleUpLimit));
    let d = h.decide(60.0, 40, &[60]);
    assert_eq!((d.desired, d.limit), (50, Limit::TooManyReplicas));
}

/// "scaleDown: policies: Pods 4 per 60 s, Percent 10 per 60 s ... if there are 80 replicas
/// and the target has to be scaled down to 10 replicas then during the first step 8
/// replicas will be reduced. In the next iteration when the number of replicas is 72, 10%
/// of the pods is 7.2 but the number is rounded up to 8 ... When the number of replicas
/// falls below 40 the first policy (Pods) is applied and 4 replicas will be reduced at a
/// time."
#[test]
fn docs_scale_down_by_the_policy_allowing_the_larger_change() {
    let mut cfg = HpaConfig::new(1, 100);
    cfg.down.policies = vec![
        Policy::Pods {
            value: 4,
            period: 60.0,
        },
        Policy::Percent {
            value: 10,
            period: 60.0,
        },
    ];
    let mut h = Hpa::new(cfg);
    let mut current = 80;
    let mut seen = vec![current];
    let mut t = 0.0;
    while current != 10 {
        let d = h.decide(t, current, &[10]);
        // Within the same minute, the policy holds it.
        let held = h.decide(t + 30.0, d.desired, &[10]);
        assert_eq!(held.desired, d.desired, "at {t} + 30 s");
        current = d.desired;
        seen.push(current);
        t += 60.0;
    }
    assert_eq!(
        seen,
        [80, 72, 64, 57, 51, 45, 40, 36, 32, 28, 24, 20, 16, 12, 10]
    );
}

#[test]
fn select_min_takes_the_smaller_change_and_disabled_none() {
    let mut cfg = HpaConfig::new(1, 50);
    cfg.up.select = Select::Min;
    assert_eq!(Hpa::new(cfg.clone()).decide(0.0, 1, &[10]).desired, 2);
    cfg.up.select = Select::Disabled;
    cfg.down.select = Select::Disabled;
    cfg.down.stabilization = 0.0;
    let mut h = Hpa::new(cfg);
    assert_eq!(h.decide(0.0, 3, &[10]).desired, 3);
    assert_eq!(h.decide(1.0, 3, &[1]).desired, 3);
}

#[test]
fn bounds_come_first_and_last() {
    let mut h = hpa(2, 5);
    let d = h.decide(0.0, 8, &[8]);
    assert_eq!((d.desired, d.limit), (5, Limit::TooManyReplicas));
    let d = h.decide(1.0, 1, &[1]);
    assert_eq!((d.desired, d.limit), (2, Limit::TooFewReplicas));
    let mut h = hpa(2, 5);
    h.cfg.down.stabilization = 0.0;
    let d = h.decide(2.0, 4, &[1]);
    assert_eq!((d.desired, d.limit), (2, Limit::TooFewReplicas));
}

#[test]
fn without_a_metric_nothing_changes() {
    let mut h = hpa(1, 10);
    let d = h.decide(0.0, 4, &[]);
    assert_eq!(
        (d.desired, d.recommended, d.limit),
        (4, None, Limit::NoMetrics)
    );
}

/// Several metrics: the largest proposal wins (horizontal.go's `computeReplicasForMetrics`).
#[test]
fn the_largest_proposal_wins() {
    let mut h = hpa(1, 10);
    assert_eq!(h.decide(0.0, 2, &[3, 4, 1]).desired, 4);
}

/// horizontal.go seeds a new HPA's recommendations with `{currentReplicas, now}`: a
/// workload found at 6 is not scaled down on the first low reading, only once the
/// stabilisation window has passed.
#[test]
fn an_adopted_count_is_a_recommendation_the_window_remembers() {
    let mut h = hpa(1, 10);
    h.adopt(0.0, 6);
    assert_eq!(h.decide(15.0, 6, &[1]).desired, 6);
    assert_eq!(h.decide(301.0, 6, &[1]).desired, 1);
}
