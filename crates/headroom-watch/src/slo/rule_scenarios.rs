//! Plain rules played against the evaluator on a simulated clock stepping 10 s: Prometheus
//! `for:` semantics, and latency against its own baseline.

use std::time::Duration;

use super::fake::{FakeHistory, SLOT};
use super::{Condition, Evaluator, Rule, Severity, Source, Transition};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3_600);
const FAST: Duration = Duration::from_millis(100);

fn evaluator(rule: Rule) -> Evaluator {
    Evaluator::new(Vec::new(), vec![rule]).expect("distinct names")
}

/// "Error rate over 1% over the last minute, for `for_`".
fn errors_over_one_percent(for_: Duration) -> Rule {
    let condition = Condition::ErrorRate {
        above: 0.01,
        window: MINUTE,
        for_,
    };
    Rule::new("api errors", condition).expect("a valid rule")
}

/// "The `quantile` over 5 minutes more than `above_ratio` above its 1-hour baseline, for 5
/// minutes".
fn above_baseline(quantile: f64, above_ratio: f64) -> Rule {
    let condition = Condition::LatencyAboveBaseline {
        quantile,
        above_ratio,
        baseline: HOUR,
        window: 5 * MINUTE,
        for_: 5 * MINUTE,
    };
    Rule::new("api latency", condition).expect("a valid rule")
}

/// Evaluates at every 10 s in `(from, to]` and returns `(firing?, seconds after from)`.
fn run(evaluator: &mut Evaluator, source: &dyn Source, from: u64, to: u64) -> Vec<(bool, u64)> {
    let mut seen = Vec::new();
    let mut now = from + SLOT;
    while now <= to {
        for transition in evaluator.evaluate(source, now) {
            seen.push((matches!(transition, Transition::Firing(_)), now - from));
        }
        now += SLOT;
    }
    seen
}

/// An hour of clean traffic, then `bursts` of (seconds of 50% errors, seconds clean after).
fn history_with_error_bursts(bursts: &[(u64, u64)]) -> (FakeHistory, u64) {
    let mut history = FakeHistory::new();
    history.serve(3_600, 100, 0, FAST);
    let start = history.end();
    for &(errors, clean) in bursts {
        history.serve(errors, 100, 50, FAST);
        history.serve(clean, 100, 0, FAST);
    }
    (history, start)
}

#[test]
fn an_error_rate_held_for_less_than_for_raises_nothing() {
    // Over 1% from +10 s to +290 s: 280 s, short of the 5 minutes.
    let (history, start) = history_with_error_bursts(&[(240, 1_800)]);
    let mut evaluator = evaluator(errors_over_one_percent(5 * MINUTE));

    assert_eq!(run(&mut evaluator, &history, start, history.end()), []);
}

#[test]
fn an_error_rate_fires_once_after_holding_for_its_for_and_resolves_at_the_first_false() {
    let (history, start) = history_with_error_bursts(&[(600, 1_800)]);
    let mut evaluator = evaluator(errors_over_one_percent(5 * MINUTE));

    let seen = run(&mut evaluator, &history, start, history.end());

    // Holds from +10 s; fires 5 minutes later; the minute window is clean at +660 s.
    assert_eq!(seen, [(true, 310), (false, 660)]);
}

#[test]
fn an_error_rate_alert_says_what_it_saw_for_how_long() {
    let (history, start) = history_with_error_bursts(&[(600, 1_800)]);
    let mut evaluator =
        evaluator(errors_over_one_percent(5 * MINUTE).with_severity(Severity::Page));

    let fired = evaluator.evaluate(&history, start + 10);
    assert!(fired.is_empty(), "{fired:?}");
    run(&mut evaluator, &history, start + 10, start + 300);
    let fired = evaluator.evaluate(&history, start + 310);

    let [Transition::Firing(info)] = fired.as_slice() else {
        panic!("one firing transition, got {fired:?}");
    };
    assert_eq!(info.alert, "ErrorRateHigh");
    assert_eq!(info.labels["rule"], "api errors");
    assert_eq!(info.labels["severity"], "page");
    assert_eq!(info.labels["window"], "1m");
    assert_eq!(
        info.summary,
        "api errors: 50% of requests failed over the last 1m (threshold 1%), for 5m"
    );
}

#[test]
fn a_condition_that_lapses_starts_its_for_clock_again() {
    // Over 1% for 220 s, under for 70 s, over for 280 s: 570 s in all, never 300 s at once.
    let (history, start) = history_with_error_bursts(&[(180, 120), (240, 1_800)]);
    let mut evaluator = evaluator(errors_over_one_percent(5 * MINUTE));

    assert_eq!(run(&mut evaluator, &history, start, history.end()), []);
}

#[test]
fn a_zero_for_fires_at_the_first_evaluation_that_holds() {
    let (history, start) = history_with_error_bursts(&[(60, 600)]);
    let mut evaluator = evaluator(errors_over_one_percent(Duration::ZERO));

    let seen = run(&mut evaluator, &history, start, history.end());

    assert_eq!(seen, [(true, 10), (false, 120)]);
}

#[test]
fn a_lasting_median_shift_fires_after_for_and_resolves_once_it_is_the_baseline() {
    let mut history = FakeHistory::new();
    history.serve(2 * 3_600, 100, 0, FAST);
    let shift = history.end();
    history.serve(2 * 3_600, 100, 0, Duration::from_millis(150)); // 50% slower
    let mut evaluator = evaluator(above_baseline(0.5, 0.10));

    let seen = run(&mut evaluator, &history, shift, history.end());

    // Above once more than half of the 5-minute window is past the shift (+160 s), so it
    // fires 5 minutes later. The baseline [now - 65m, now - 5m) has a 150 ms median once more
    // than half of it is past the shift: after +35 min.
    assert_eq!(seen, [(true, 460), (false, 2_110)]);
}

#[test]
fn a_rise_within_the_ratio_raises_nothing() {
    let mut history = FakeHistory::new();
    history.serve(2 * 3_600, 100, 0, FAST);
    let shift = history.end();
    history.serve(3_600, 100, 0, Duration::from_millis(105)); // 5% slower, 10% allowed
    let mut evaluator = evaluator(above_baseline(0.5, 0.10));

    assert_eq!(run(&mut evaluator, &history, shift, history.end()), []);
}

#[test]
fn a_p99_step_is_absorbed_by_its_baseline_once_one_percent_of_it_has_seen_the_step() {
    // Every request 50% slower: the baseline's p99 moves once 1% of its hour (36 s) is past
    // the shift, 5m + 36 s after it. The condition holds from +10 s to +330 s, so a 5-minute
    // `for` fires, briefly; a `for` longer than that would never fire on such a step.
    let mut history = FakeHistory::new();
    history.serve(2 * 3_600, 100, 0, FAST);
    let shift = history.end();
    history.serve(3_600, 100, 0, Duration::from_millis(150));
    let mut evaluator = evaluator(above_baseline(0.99, 0.10));

    let seen = run(&mut evaluator, &history, shift, history.end());

    assert_eq!(seen, [(true, 310), (false, 340)]);
}

#[test]
fn a_baseline_alert_says_how_far_above_the_baseline_latency_is() {
    let mut history = FakeHistory::new();
    history.serve(2 * 3_600, 100, 0, FAST);
    let shift = history.end();
    history.serve(2 * 3_600, 100, 0, Duration::from_millis(150));
    let mut evaluator = evaluator(above_baseline(0.5, 0.10));
    run(&mut evaluator, &history, shift, shift + 450);

    let fired = evaluator.evaluate(&history, shift + 460);

    let info = fired[0].alert();
    assert_eq!(info.alert, "LatencyAboveBaseline");
    assert_eq!(info.labels["window"], "5m");
    assert_eq!(
        info.summary,
        "api latency: p50 latency 150ms over the last 5m is 50% above its 1h baseline of \
         100ms (threshold 10% above), for 5m"
    );
}

#[test]
fn a_latency_threshold_rule_fires_while_the_quantile_is_above_it() {
    let mut history = FakeHistory::new();
    history.serve(3_600, 100, 0, FAST);
    let slow = history.end();
    history.serve(120, 100, 0, Duration::from_secs(2));
    history.serve(3_600, 100, 0, FAST);
    let condition = Condition::LatencyAbove {
        quantile: 0.99,
        threshold: Duration::from_secs(1),
        window: MINUTE,
        for_: Duration::ZERO,
    };
    let mut watching = evaluator(Rule::new("api slow", condition).unwrap());

    let seen = run(&mut watching, &history, slow, slow + 10 * 60);
    assert_eq!(seen, [(true, 10), (false, 180)]);

    let mut fresh = evaluator(Rule::new("api slow", condition).unwrap());
    let fired = fresh.evaluate(&history, slow + 10);
    assert_eq!(fired[0].alert().alert, "LatencyHigh");
    assert_eq!(
        fired[0].alert().summary,
        "api slow: p99 latency 2s over the last 1m (threshold 1s)"
    );
}

#[test]
fn no_traffic_fires_no_rule() {
    let mut history = FakeHistory::new();
    history.idle(3 * 3_600);
    let rules = vec![
        errors_over_one_percent(Duration::ZERO),
        above_baseline(0.99, 0.10),
        Rule::new(
            "api slow",
            Condition::LatencyAbove {
                quantile: 0.99,
                threshold: Duration::from_secs(1),
                window: MINUTE,
                for_: Duration::ZERO,
            },
        )
        .unwrap(),
    ];
    let mut evaluator = Evaluator::new(Vec::new(), rules).unwrap();

    assert_eq!(run(&mut evaluator, &history, 0, history.end()), []);
    assert!(evaluator.active().is_empty());
}
