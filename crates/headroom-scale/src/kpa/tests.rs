//! Knative's autoscaling documentation ("About autoscaling", "Configuring targets",
//! "Additional autoscaling configuration for KPA": stable and panic windows, panic
//! threshold, scale rates, scale-down delay) as worked examples, and the rules of
//! `pkg/autoscaler/scaling/autoscaler.go` behind them.

use super::*;

/// Feeds `inflight` once a second for the seconds `from..to`.
fn feed(k: &mut Kpa, from: u32, to: u32, inflight: f64) {
    for s in from..to {
        k.record(f64::from(s), inflight);
    }
}

fn kpa() -> Kpa {
    Kpa::new(KpaConfig::new(100.0))
}

/// "a target of 100 ... with the default target utilization of 70%, the autoscaler aims
/// for 70 concurrent requests per replica": 350 in flight ask for 5 replicas.
#[test]
fn docs_the_target_utilization_leaves_headroom() {
    let mut k = kpa();
    feed(&mut k, 0, 60, 350.0);
    let d = k.decide(59.0, 5).unwrap();
    assert_eq!((d.desired, d.stable_wants, d.panicking), (5, 5, false));
    assert!((d.stable_concurrency - 350.0).abs() < 1e-9);
}

#[test]
fn nothing_is_decided_before_a_sample() {
    assert_eq!(kpa().decide(10.0, 3), None);
}

/// "The panic window is 10% of the stable window (6 s) ... If the desired pod count for the
/// panic window is at least twice (panic threshold 200%) the current ready pods, the
/// autoscaler enters panic mode": a burst in the last 6 s scales up at once, though the
/// 60 s average has barely moved.
#[test]
fn docs_a_burst_in_the_panic_window_panics_and_scales_up_at_once() {
    let mut k = kpa();
    feed(&mut k, 0, 54, 20.0);
    feed(&mut k, 54, 60, 300.0);
    let d = k.decide(59.0, 2).unwrap();
    // stable: (54 × 20 + 6 × 300) / 60 = 48 → 1; panic: 300 → ceil(300 / 70) = 5 ≥ 2 × 2.
    assert_eq!((d.stable_wants, d.panic_wants), (1, 5));
    assert!(d.panicking);
    assert_eq!(d.desired, 5);
}

/// "While in panic mode, the autoscaler does not scale down"; panic ends once the stable
/// window has gone by without the threshold crossed, then the stable count applies.
#[test]
fn docs_in_panic_the_count_only_grows_until_a_stable_window_passes() {
    let mut k = kpa();
    feed(&mut k, 0, 54, 20.0);
    feed(&mut k, 54, 60, 300.0);
    assert_eq!(k.decide(59.0, 2).unwrap().desired, 5);
    // The burst is over: nothing in flight.
    for t in 60..=119 {
        k.record(f64::from(t), 0.0);
        let d = k.decide(f64::from(t), 5).unwrap();
        assert!(d.panicking, "at {t}: within 60 s of the last crossing");
        assert_eq!(d.desired, 5, "at {t}: no scale-down in panic");
    }
    k.record(120.0, 0.0);
    let d = k.decide(120.0, 5).unwrap();
    assert!(!d.panicking, "60 s after the last crossing (at 59)");
    // floor(5 / max_scale_down_rate 2) = 2: a decision at most halves the fleet.
    assert_eq!(d.desired, 2);
}

/// "max-scale-down-rate: 2 ... the number of replicas can at most be halved per
/// evaluation": idle from 10 replicas goes 10 → 5 → 2 → 1 → 0.
#[test]
fn docs_scale_down_at_most_halves_per_decision() {
    let mut k = kpa();
    feed(&mut k, 0, 61, 0.0);
    let mut ready = 10;
    let mut seen = vec![ready];
    for t in 61..70 {
        k.record(f64::from(t), 0.0);
        ready = k.decide(f64::from(t), ready).unwrap().desired;
        seen.push(ready);
        if ready == 0 {
            break;
        }
    }
    assert_eq!(seen, [10, 5, 2, 1, 0]);
}

/// "max-scale-up-rate: 1000": a decision adds at most 1000 times the ready replicas.
#[test]
fn docs_scale_up_is_bounded_by_the_rate() {
    let mut cfg = KpaConfig::new(1.0);
    cfg.max_scale_up_rate = 3.0;
    let mut k = Kpa::new(cfg);
    feed(&mut k, 0, 60, 1000.0);
    assert_eq!(k.decide(59.0, 2).unwrap().desired, 6);
}

/// "scale-down-delay ... scale-down decisions are delayed until the specified time has
/// passed at the lower concurrency": the highest count of the delay window holds.
#[test]
fn docs_the_scale_down_delay_holds_the_highest_count_of_its_window() {
    let mut cfg = KpaConfig::new(100.0);
    cfg.scale_down_delay = 30.0;
    cfg.stable_window = 10.0;
    let mut k = Kpa::new(cfg);
    feed(&mut k, 0, 10, 350.0);
    assert_eq!(k.decide(9.0, 5).unwrap().desired, 5);
    feed(&mut k, 10, 20, 140.0);
    let d = k.decide(19.0, 5).unwrap();
    assert_eq!((d.desired, d.delayed, d.stable_wants), (5, true, 2));
    feed(&mut k, 20, 40, 140.0);
    let d = k.decide(39.5, 5).unwrap();
    assert_eq!((d.desired, d.delayed), (2, false), "30 s after the last 5");
}

/// Over less than a window (just started) the average is over the seconds seen; seconds
/// without a sample within the window count as nothing in flight.
#[test]
fn averages_cover_what_was_seen_and_gaps_are_idle() {
    let mut k = kpa();
    k.record(0.0, 350.0);
    assert_eq!(k.decide(0.0, 5).unwrap().stable_concurrency, 350.0);
    k.record(0.5, 150.0);
    assert_eq!(
        k.decide(0.5, 5).unwrap().stable_concurrency,
        250.0,
        "one second's average"
    );
    k.record(3.0, 250.0);
    // Seconds 0..=3: 250, (none), (none), 250.
    assert_eq!(k.decide(3.0, 5).unwrap().stable_concurrency, 125.0);
}

/// A workload found at 5 replicas: for one stable window the first low samples do not
/// take it down (they are all its windows know), then they do.
#[test]
fn an_adopted_count_holds_for_a_stable_window() {
    let mut k = kpa();
    k.adopt(0.0, 5);
    feed(&mut k, 0, 10, 0.0);
    let d = k.decide(9.0, 5).unwrap();
    assert_eq!((d.desired, d.delayed), (5, true));
    feed(&mut k, 10, 61, 0.0);
    let d = k.decide(60.0, 5).unwrap();
    assert!(d.desired < 5, "{d:?}");
}
