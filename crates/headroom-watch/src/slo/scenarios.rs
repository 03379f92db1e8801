//! Incidents played against the evaluator on a simulated clock stepping 10 s: which
//! burn-rate pair fires for which kind of incident, and when it resolves.

use std::time::Duration;

use super::fake::{FakeHistory, SLOT};
use super::{Evaluator, Objective, Severity, Sli, Source, Transition};

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const FAST: Duration = Duration::from_millis(50);

fn three_nines() -> Objective {
    Objective::new(
        "route api",
        Sli::Availability,
        0.999,
        Duration::from_secs(30 * DAY),
    )
    .expect("a valid objective")
}

fn evaluator(objective: Objective) -> Evaluator {
    Evaluator::new(vec![objective], Vec::new()).expect("distinct names")
}

/// Evaluates at every 10 s in `(from, to]`, as a sampler's timer would, and collects the
/// transitions in order.
fn run(evaluator: &mut Evaluator, source: &dyn Source, from: u64, to: u64) -> Vec<Transition> {
    let mut transitions = Vec::new();
    let mut now = from + SLOT;
    while now <= to {
        transitions.extend(evaluator.evaluate(source, now));
        now += SLOT;
    }
    transitions
}

/// `(firing?, window label, severity label, at)` for each transition, for compact asserts.
fn summary_of(transitions: &[Transition]) -> Vec<(bool, String, String, u64)> {
    transitions
        .iter()
        .map(|t| {
            let info = t.alert();
            (
                matches!(t, Transition::Firing(_)),
                info.labels["window"].clone(),
                info.labels["severity"].clone(),
                info.at,
            )
        })
        .collect()
}

#[test]
fn a_total_outage_pages_through_the_1h_5m_pair_within_a_minute() {
    let mut history = FakeHistory::new();
    history.serve(3 * DAY, 100, 0, FAST);
    let outage = history.end();
    history.serve(HOUR, 100, 100, FAST);
    let mut evaluator = evaluator(three_nines());

    let transitions = run(&mut evaluator, &history, outage, outage + 10 * MINUTE);

    let fired: Vec<_> = summary_of(&transitions)
        .into_iter()
        .map(|(firing, window, severity, at)| (firing, window, severity, at - outage))
        .collect();
    assert_eq!(
        fired,
        [
            (true, "1h/5m".into(), "page".into(), 60),
            (true, "6h/30m".into(), "page".into(), 130),
            (true, "1d/2h".into(), "ticket".into(), 260),
            (true, "3d/6h".into(), "ticket".into(), 260),
        ]
    );
    let page = transitions[0].alert();
    assert_eq!(page.alert, "SloBurnRate");
    assert_eq!(page.labels["objective"], "route api");
    assert_eq!(page.labels["sli"], "availability");
    // 600 errors in the last hour's 36,000 requests (16.7×), in the last 5 minutes' 3,000
    // (200×); 600 of the 2,592.6 allowed over the 3 days of history (76.9% left).
    assert_eq!(
        page.summary,
        "route api: burning its 99.9% availability budget 16.7× over 1h (and 200.0× over 5m); \
         76% of the 30-day budget left"
    );
}

#[test]
fn a_pair_needs_both_windows_so_it_resolves_when_the_short_one_recovers() {
    let mut history = FakeHistory::new();
    history.serve(3 * DAY, 100, 0, FAST);
    let outage = history.end();
    history.serve(10 * MINUTE, 100, 100, FAST);
    let recovery = history.end();
    history.serve(HOUR, 100, 0, FAST);
    let mut evaluator = evaluator(three_nines());

    let transitions = run(&mut evaluator, &history, outage, recovery + 5 * MINUTE);

    let fast: Vec<_> = summary_of(&transitions)
        .into_iter()
        .filter(|(_, window, _, _)| window == "1h/5m")
        .map(|(firing, _, _, at)| (firing, at - outage))
        .collect();
    // The 5-minute window is clean 5 minutes after the outage ends.
    assert_eq!(fast, [(true, 60), (false, 15 * MINUTE)]);
    let status = &evaluator.status(&history, recovery + 5 * MINUTE)[0].pairs[0];
    assert!(
        status.long_rate > 14.4,
        "the hour still holds the outage: {status:?}"
    );
    assert_eq!(status.short_rate, 0.0);
    assert!(!status.firing);
}

#[test]
fn a_resolved_burn_alert_keeps_its_labels_and_start_and_says_it_stopped() {
    let mut history = FakeHistory::new();
    history.serve(3 * DAY, 100, 0, FAST);
    let outage = history.end();
    history.serve(10 * MINUTE, 100, 100, FAST);
    history.serve(HOUR, 100, 0, FAST);
    let mut evaluator = evaluator(three_nines());

    let transitions = run(&mut evaluator, &history, outage, outage + 15 * MINUTE);

    let fired = transitions[0].alert();
    let resolved = transitions
        .iter()
        .find_map(|t| match t {
            Transition::Resolved(info) => Some(info),
            Transition::Firing(_) => None,
        })
        .expect("the 1h/5m pair resolves");
    assert_eq!(resolved.labels, fired.labels);
    assert_eq!(resolved.started_at, outage + 60);
    assert_eq!(resolved.at, outage + 15 * MINUTE);
    assert!(
        resolved
            .summary
            .starts_with("route api: no longer burning its 99.9% availability budget above 14.4× over both 1h and 5m (now 166.7× and 0.0×); "),
        "{}",
        resolved.summary
    );
}

#[test]
fn a_firing_pair_fires_once_while_it_stays_firing() {
    let mut history = FakeHistory::new();
    history.serve(3 * DAY, 100, 0, FAST);
    let outage = history.end();
    history.serve(2 * HOUR, 100, 100, FAST);
    let mut evaluator = evaluator(three_nines());

    let transitions = run(&mut evaluator, &history, outage, outage + 2 * HOUR);

    assert_eq!(transitions.len(), 4, "one firing per pair: {transitions:?}");
    assert!(transitions
        .iter()
        .all(|t| matches!(t, Transition::Firing(_))));
    assert_eq!(evaluator.active().len(), 4);
}

#[test]
fn a_slow_two_times_burn_pages_no_one_and_opens_a_3d_6h_ticket_after_a_day_and_a_half() {
    let mut history = FakeHistory::new();
    history.serve(3 * DAY, 1_000, 0, FAST);
    let burn = history.end();
    history.serve(3 * DAY, 1_000, 2, FAST); // 0.2% errors: twice the 0.1% allowed
    let mut evaluator = evaluator(three_nines());

    let transitions = run(&mut evaluator, &history, burn, burn + 3 * DAY);

    let fired = summary_of(&transitions);
    assert_eq!(fired.len(), 1, "{fired:?}");
    let (firing, window, severity, at) = &fired[0];
    assert!(firing);
    assert_eq!((window.as_str(), severity.as_str()), ("3d/6h", "ticket"));
    // Twice the rate fills the 3-day window past 1× once half of it is the burn.
    assert!(
        (burn + 3 * DAY / 2..=burn + 3 * DAY / 2 + SLOT).contains(at),
        "fired {} s after the burn began",
        at - burn
    );
}

#[test]
fn a_day_of_three_and_a_half_times_burn_opens_the_1d_2h_ticket_but_pages_no_one() {
    let mut history = FakeHistory::new();
    history.serve(3 * DAY, 2_000, 0, FAST);
    let burn = history.end();
    history.serve(DAY, 2_000, 7, FAST); // 0.35% errors
    let mut evaluator = evaluator(three_nines());

    let transitions = run(&mut evaluator, &history, burn, burn + DAY);

    let fired: Vec<_> = summary_of(&transitions)
        .into_iter()
        .map(|(firing, window, severity, at)| (firing, window, severity, at - burn))
        .collect();
    // 3.5× fills a day's window past 3× after 3/3.5 of a day (20 h 34 m); the 3-day window
    // passes 1× at the same moment. The 6h/30m pair needs 6×: never.
    assert_eq!(
        fired,
        [
            (true, "1d/2h".into(), "ticket".into(), 74_060),
            (true, "3d/6h".into(), "ticket".into(), 74_060),
        ]
    );
}

#[test]
fn a_latency_objective_counts_slow_answers_as_bad() {
    let objective = Objective::new(
        "route search",
        Sli::Latency {
            threshold: Duration::from_millis(300),
        },
        0.99,
        Duration::from_secs(30 * DAY),
    )
    .unwrap();
    let mut history = FakeHistory::new();
    history.serve(DAY, 100, 0, Duration::from_millis(100));
    let slow = history.end();
    history.serve(HOUR, 100, 0, Duration::from_millis(800));
    let mut evaluator = evaluator(objective);

    let transitions = run(&mut evaluator, &history, slow, slow + 10 * MINUTE);

    let page = transitions.first().expect("the 1h/5m pair fires").alert();
    assert_eq!(page.labels["window"], "1h/5m");
    assert_eq!(page.labels["sli"], "latency");
    assert!(
        page.summary
            .starts_with("route search: burning its 99% latency (within 300ms) budget "),
        "{}",
        page.summary
    );
}

#[test]
fn no_traffic_raises_no_alert_and_leaves_the_whole_budget() {
    let mut history = FakeHistory::new();
    history.idle(DAY);
    let mut evaluator = evaluator(three_nines());

    let transitions = run(&mut evaluator, &history, 0, DAY);

    assert!(transitions.is_empty(), "{transitions:?}");
    let status = &evaluator.status(&history, DAY)[0];
    assert_eq!((status.total, status.bad, status.budget_left), (0, 0, 1.0));
    assert!(status
        .pairs
        .iter()
        .all(|p| p.long_rate == 0.0 && p.short_rate == 0.0 && !p.firing));
}

#[test]
fn status_reports_the_worked_budget_example_and_every_pair_as_json() {
    // 1,000,000 requests, 400 of them errors (all in the first 40 s), over 99.9%: 60% left.
    let mut history = FakeHistory::new();
    history.serve(40, 10_000, 10_000 / 100, FAST);
    history.serve(9_600 * SLOT, 100, 0, FAST);
    let now = history.end();
    let evaluator = evaluator(three_nines());

    let status = &evaluator.status(&history, now)[0];

    assert_eq!((status.total, status.bad), (1_000_000, 400));
    assert!((status.budget_left - 0.6).abs() < 1e-9, "{status:?}");
    let json = serde_json::to_value(status).unwrap();
    assert_eq!(json["objective"], "route api");
    assert_eq!(json["sli"], "availability");
    assert!(json.get("latency_threshold_secs").is_none());
    assert_eq!(json["period_secs"], 30 * DAY);
    let pairs = json["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 4);
    assert_eq!(pairs[0]["window"], "1h/5m");
    assert_eq!(pairs[0]["long_secs"], HOUR);
    assert_eq!(pairs[0]["short_secs"], 5 * MINUTE);
    assert_eq!(pairs[0]["factor"], 14.4);
    assert_eq!(pairs[0]["severity"], "page");
    assert_eq!(pairs[0]["firing"], false);
    assert_eq!(pairs[3]["severity"], "ticket");
}

#[test]
fn two_objectives_of_one_name_are_rejected() {
    let err = Evaluator::new(vec![three_nines(), three_nines()], Vec::new())
        .err()
        .expect("a duplicate name");
    assert_eq!(
        err.to_string(),
        "two objectives are named \"route api\"; expected each objective name once, as it \
         labels the objective's alerts"
    );
}

#[test]
fn severities_serialize_as_their_label() {
    assert_eq!(serde_json::to_value(Severity::Page).unwrap(), "page");
    assert_eq!(Severity::Ticket.to_string(), "ticket");
}

/// Counts reads, to pin down what an evaluation costs the history.
struct CountingSource<'a> {
    inner: &'a dyn Source,
    reads: std::cell::Cell<usize>,
}

impl Source for CountingSource<'_> {
    fn counts(&self, sli: &Sli, from: u64, to: u64) -> super::Counts {
        self.reads.set(self.reads.get() + 1);
        self.inner.counts(sli, from, to)
    }
    fn quantile(&self, q: f64, from: u64, to: u64) -> Option<f64> {
        self.reads.set(self.reads.get() + 1);
        self.inner.quantile(q, from, to)
    }
}

#[test]
fn a_quiet_evaluation_reads_two_windows_per_pair_and_status_adds_the_budget() {
    let mut history = FakeHistory::new();
    history.serve(DAY, 100, 0, FAST);
    let source = CountingSource {
        inner: &history,
        reads: Default::default(),
    };
    let mut evaluator = evaluator(three_nines());

    evaluator.evaluate(&source, DAY);
    assert_eq!(source.reads.get(), 8);
    evaluator.status(&source, DAY);
    assert_eq!(source.reads.get(), 8 + 9);
}
