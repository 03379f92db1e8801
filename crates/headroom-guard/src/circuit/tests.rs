//! The breaker's transitions, on paused time.

use super::*;
use tokio::time::advance;
use CircuitState::*;

fn circuit(consecutive: Option<u32>, rate: Option<(f64, u32)>) -> Circuit {
    Circuit::new(&CircuitSettings {
        consecutive_failures: consecutive,
        failure_rate: rate,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(5),
        half_open_probes: 2,
    })
}

fn results(c: &Circuit, oks: &[bool]) {
    for &ok in oks {
        c.allow().expect("closed").record(ok);
    }
}

/// An open circuit that has just half-opened.
async fn half_open() -> Circuit {
    let c = circuit(Some(1), None);
    results(&c, &[false]);
    advance(Duration::from_secs(5)).await;
    c
}

#[tokio::test(start_paused = true)]
async fn it_opens_after_consecutive_failures_and_a_success_resets_the_run() {
    let c = circuit(Some(3), None);
    results(&c, &[false, false, true, false, false]);
    assert_eq!(c.state(), Closed);
    results(&c, &[false]);
    assert_eq!(c.state(), Open);
    assert_eq!(c.transitions(), 1);
}

#[tokio::test(start_paused = true)]
async fn it_opens_on_a_failure_rate_over_the_window() {
    let c = circuit(None, Some((0.5, 10)));
    results(
        &c,
        &[true, false, true, false, true, false, true, false, true],
    );
    assert_eq!(c.state(), Closed, "9 requests: under the minimum");
    results(&c, &[false]);
    assert_eq!(c.state(), Open, "5 failures out of 10");
}

#[tokio::test(start_paused = true)]
async fn the_rate_rule_says_nothing_below_its_minimum_of_requests() {
    let c = circuit(None, Some((0.5, 10)));
    results(&c, &[false; 9]);
    assert_eq!(c.state(), Closed);
}

#[tokio::test(start_paused = true)]
async fn the_rate_counts_only_the_window() {
    let c = circuit(None, Some((0.5, 4)));
    results(&c, &[false, false, false]);
    advance(Duration::from_secs(11)).await;
    results(&c, &[true, true, true, false]);
    assert_eq!(c.state(), Closed, "1 failure out of the window's 4");
    results(&c, &[false]);
    assert_eq!(c.state(), Closed, "2 out of 5");
    results(&c, &[false]);
    assert_eq!(c.state(), Open, "3 out of 6");
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_fails_fast_then_half_opens_after_open_for() {
    let c = circuit(Some(1), None);
    results(&c, &[false]);
    assert_eq!(c.allow().unwrap_err().retry_after, Duration::from_secs(5));
    advance(Duration::from_millis(3500)).await;
    assert_eq!(c.allow().unwrap_err().retry_after, Duration::from_secs(2));
    advance(Duration::from_millis(1500)).await;
    let _probe = c.allow().expect("a probe");
    assert_eq!(c.state(), HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_a_bounded_number_of_probes_through() {
    let c = half_open().await;
    let p1 = c.allow().expect("probe 1");
    let _p2 = c.allow().expect("probe 2");
    assert_eq!(c.allow().unwrap_err().retry_after, Duration::from_secs(1));
    drop(p1);
    let _p3 = c.allow().expect("the gone probe's place");
    assert!(c.allow().is_err());
}

#[tokio::test(start_paused = true)]
async fn good_probes_close_it_and_each_transition_is_observed_once() {
    let c = half_open().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    c.observe(move |from, to, n| log.lock().unwrap().push((from, to, n)));
    let p1 = c.allow().unwrap();
    let p2 = c.allow().unwrap();
    p1.record(true);
    assert_eq!(c.state(), HalfOpen, "one probe of two");
    p2.record(true);
    assert_eq!(c.state(), Closed);
    assert_eq!(
        *seen.lock().unwrap(),
        [(Open, HalfOpen, 2), (HalfOpen, Closed, 3)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_it_again_for_open_for() {
    let c = half_open().await;
    let p = c.allow().unwrap();
    let _other = c.allow().unwrap();
    p.record(false);
    assert_eq!(c.state(), Open);
    assert_eq!(c.allow().unwrap_err().retry_after, Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn results_from_before_a_transition_are_ignored() {
    let c = circuit(Some(1), None);
    let late_ok = c.allow().unwrap();
    let late_fail = c.allow().unwrap();
    results(&c, &[false]);
    advance(Duration::from_secs(5)).await;
    let probe = c.allow().unwrap();
    late_ok.record(true);
    late_fail.record(false);
    assert_eq!(c.state(), HalfOpen);
    probe.record(false);
    assert_eq!(c.state(), Open);
}
