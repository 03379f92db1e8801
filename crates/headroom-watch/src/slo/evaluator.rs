//! The evaluator: objectives and rules with their alert state, turned into firing and
//! resolved transitions at each evaluation, and into status for `/status` and the dashboard.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::Serialize;

use super::burn::{BurnPair, PairReading, Severity, STANDARD_PAIRS};
use super::format::{period_adjective, rate, window};
use super::objective::{Budget, Objective};
use super::rule::Rule;
use super::{Sli, Source};

/// One alert as it fires or resolves.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertInfo {
    /// The stable alert name: `SloBurnRate`, `ErrorRateHigh`, `LatencyAboveBaseline` or
    /// `LatencyHigh`.
    pub alert: String,
    /// What tells this alert apart from others of its name: `objective` (or `rule`),
    /// `severity` (`page` or `ticket`), `window` (`1h/5m` for a burn-rate pair, `5m` for a
    /// rule) and, for objectives, `sli` (`availability` or `latency`).
    pub labels: BTreeMap<String, String>,
    /// The numbers in a sentence, for a human: `route api: burning its 99.9% availability
    /// budget 16.2× over 1h (and 15.0× over 5m); 97% of the 30-day budget left`.
    pub summary: String,
    /// The evaluation (unix seconds) at which the alert fired.
    pub started_at: u64,
    /// The evaluation (unix seconds) of this transition: `started_at` for a firing one, the
    /// time it stopped holding for a resolved one.
    pub at: u64,
}

/// A change in an alert's state, reported once by [`Evaluator::evaluate`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", content = "alert", rename_all = "lowercase")]
pub enum Transition {
    /// The alert started firing at this evaluation.
    Firing(AlertInfo),
    /// The alert, firing until now, stopped holding at this evaluation.
    Resolved(AlertInfo),
}

impl Transition {
    /// The alert, whichever way it changed.
    pub fn alert(&self) -> &AlertInfo {
        match self {
            Self::Firing(info) | Self::Resolved(info) => info,
        }
    }
}

/// An objective's budget and burn rates at one moment, for `/status`, the dashboard and the
/// advisor. Serialized as JSON with these field names.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SloStatus {
    /// The objective's name.
    pub objective: String,
    /// `"availability"` or `"latency"`.
    pub sli: &'static str,
    /// For a latency SLI, the threshold in seconds; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_threshold_secs: Option<f64>,
    /// The share of good requests promised, e.g. 0.999.
    pub target: f64,
    /// The rolling period, in seconds.
    pub period_secs: u64,
    /// Requests over the period.
    pub total: u64,
    /// Bad requests over the period.
    pub bad: u64,
    /// The share of the budget left: 1.0 untouched (or no traffic), negative overspent.
    pub budget_left: f64,
    /// The burn-rate pairs, in [`STANDARD_PAIRS`] order.
    pub pairs: Vec<PairStatus>,
}

/// One burn-rate pair's reading, within a [`SloStatus`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairStatus {
    /// `"1h/5m"`.
    pub window: String,
    /// The long window, in seconds.
    pub long_secs: u64,
    /// The short window, in seconds.
    pub short_secs: u64,
    /// The burn rate both windows must exceed.
    pub factor: f64,
    /// The burn rate over the long window.
    pub long_rate: f64,
    /// The burn rate over the short window.
    pub short_rate: f64,
    /// Both rates exceed the factor at this moment.
    pub firing: bool,
    /// Who is told when it fires.
    pub severity: Severity,
}

/// Two objectives, or two rules, with the same name: their alerts would carry the same
/// labels and be taken for one another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateName {
    /// `"objective"` or `"rule"`.
    pub kind: &'static str,
    /// The name given twice.
    pub name: String,
}

impl fmt::Display for DuplicateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "two {kind}s are named \"{name}\"; expected each {kind} name once, as it labels the \
             {kind}'s alerts",
            kind = self.kind,
            name = self.name
        )
    }
}

impl std::error::Error for DuplicateName {}

struct ObjectiveState {
    objective: Objective,
    /// Per pair of [`STANDARD_PAIRS`], the alert while it fires.
    firing: Vec<Option<AlertInfo>>,
}

enum Phase {
    Inactive,
    /// The condition has held at every evaluation since `since`, not yet for `for_`.
    Pending {
        since: u64,
    },
    Firing(AlertInfo),
}

struct RuleState {
    rule: Rule,
    phase: Phase,
}

/// Objectives and rules with their alert state. Evaluate it on a timer with the same
/// [`Source`]; every burn-rate pair and rule reports a [`Transition`] only when it changes.
pub struct Evaluator {
    objectives: Vec<ObjectiveState>,
    rules: Vec<RuleState>,
}

impl Evaluator {
    /// An evaluator with nothing firing. Each objective is judged by the four
    /// [`STANDARD_PAIRS`]. Rejects two objectives, or two rules, of the same name.
    pub fn new(objectives: Vec<Objective>, rules: Vec<Rule>) -> Result<Self, DuplicateName> {
        let mut seen = HashSet::new();
        for objective in &objectives {
            if !seen.insert(objective.name()) {
                return Err(DuplicateName {
                    kind: "objective",
                    name: objective.name().to_string(),
                });
            }
        }
        seen.clear();
        for rule in &rules {
            if !seen.insert(rule.name()) {
                return Err(DuplicateName {
                    kind: "rule",
                    name: rule.name().to_string(),
                });
            }
        }
        Ok(Self {
            objectives: objectives
                .into_iter()
                .map(|objective| ObjectiveState {
                    objective,
                    firing: vec![None; STANDARD_PAIRS.len()],
                })
                .collect(),
            rules: rules
                .into_iter()
                .map(|rule| RuleState {
                    rule,
                    phase: Phase::Inactive,
                })
                .collect(),
        })
    }

    /// The objectives, in the order given.
    pub fn objectives(&self) -> impl Iterator<Item = &Objective> {
        self.objectives.iter().map(|state| &state.objective)
    }

    /// The rules, in the order given.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|state| &state.rule)
    }

    /// Judges everything at `now` (unix seconds; windows end at `now`, exclusive) and returns
    /// what changed: objectives first, pair by pair, then rules, in the order given. A pair
    /// fires at the first evaluation where both its windows exceed its factor and resolves at
    /// the first where they do not both; a rule fires once its condition has held at every
    /// evaluation for its `for_` and resolves at the first evaluation where it does not hold.
    /// Cost: eight window reads per objective (nine when something changes) and one or two
    /// per rule.
    pub fn evaluate(&mut self, source: &dyn Source, now: u64) -> Vec<Transition> {
        let mut transitions = Vec::new();
        for state in &mut self.objectives {
            state.evaluate(source, now, &mut transitions);
        }
        for state in &mut self.rules {
            state.evaluate(source, now, &mut transitions);
        }
        transitions
    }

    /// Every objective's budget and burn rates at `now`, read afresh from `source`: `firing`
    /// is whether the pair holds at `now`, which is what the last [`Evaluator::evaluate`]
    /// decided when it ran at the same `now`. Cost: nine window reads per objective.
    pub fn status(&self, source: &dyn Source, now: u64) -> Vec<SloStatus> {
        self.objectives
            .iter()
            .map(|state| status_of(&state.objective, source, now))
            .collect()
    }

    /// The alerts firing after the last evaluation, objectives first. Rules still pending
    /// (holding, not yet for `for_`) are not among them.
    pub fn active(&self) -> Vec<AlertInfo> {
        let objectives = self
            .objectives
            .iter()
            .flat_map(|state| state.firing.iter().flatten());
        let rules = self.rules.iter().filter_map(|state| match &state.phase {
            Phase::Firing(info) => Some(info),
            _ => None,
        });
        objectives.chain(rules).cloned().collect()
    }
}

fn status_of(objective: &Objective, source: &dyn Source, now: u64) -> SloStatus {
    let budget = budget_at(objective, source, now);
    let (sli, latency_threshold_secs) = match objective.sli() {
        Sli::Availability => ("availability", None),
        Sli::Latency { threshold } => ("latency", Some(threshold.as_secs_f64())),
    };
    SloStatus {
        objective: objective.name().to_string(),
        sli,
        latency_threshold_secs,
        target: objective.target(),
        period_secs: objective.period().as_secs(),
        total: budget.total,
        bad: budget.bad,
        budget_left: budget.left,
        pairs: STANDARD_PAIRS
            .iter()
            .map(|pair| {
                let reading = pair.read(objective, source, now);
                PairStatus {
                    window: pair.window_label(),
                    long_secs: pair.long.as_secs(),
                    short_secs: pair.short.as_secs(),
                    factor: pair.factor,
                    long_rate: reading.long_rate,
                    short_rate: reading.short_rate,
                    firing: reading.firing(pair),
                    severity: pair.severity,
                }
            })
            .collect(),
    }
}

fn budget_at(objective: &Objective, source: &dyn Source, now: u64) -> Budget {
    let from = now.saturating_sub(objective.period().as_secs());
    objective.budget(source.counts(objective.sli(), from, now))
}

impl ObjectiveState {
    fn evaluate(&mut self, source: &dyn Source, now: u64, out: &mut Vec<Transition>) {
        let objective = &self.objective;
        // Read once, and only if a summary needs it.
        let mut budget = None;
        for (pair, firing) in STANDARD_PAIRS.iter().zip(self.firing.iter_mut()) {
            let reading = pair.read(objective, source, now);
            let holds = reading.firing(pair);
            match (holds, firing.take()) {
                (true, None) => {
                    let budget = *budget.get_or_insert_with(|| budget_at(objective, source, now));
                    let info = AlertInfo {
                        alert: "SloBurnRate".to_string(),
                        labels: objective_labels(objective, pair),
                        summary: burning(objective, pair, reading, budget),
                        started_at: now,
                        at: now,
                    };
                    *firing = Some(info.clone());
                    out.push(Transition::Firing(info));
                }
                (false, Some(info)) => {
                    let budget = *budget.get_or_insert_with(|| budget_at(objective, source, now));
                    out.push(Transition::Resolved(AlertInfo {
                        summary: burnt_out(objective, pair, reading, budget),
                        at: now,
                        ..info
                    }));
                }
                (true, still) => *firing = still,
                (false, None) => {}
            }
        }
    }
}

impl RuleState {
    fn evaluate(&mut self, source: &dyn Source, now: u64, out: &mut Vec<Transition>) {
        let rule = &self.rule;
        let seen = rule.observe(source, now);
        let phase = std::mem::replace(&mut self.phase, Phase::Inactive);
        self.phase = match (seen.holds, phase) {
            (false, Phase::Firing(info)) => {
                out.push(Transition::Resolved(AlertInfo {
                    summary: format!("{}: back to normal: {}", rule.name(), seen.summary),
                    at: now,
                    ..info
                }));
                Phase::Inactive
            }
            (false, _) => Phase::Inactive,
            (true, Phase::Firing(info)) => Phase::Firing(info),
            (true, Phase::Inactive) => fire_if_held(rule, now, now, &seen.summary, out),
            (true, Phase::Pending { since }) => fire_if_held(rule, since, now, &seen.summary, out),
        };
    }
}

/// Prometheus `for:`: fires once the condition has held since `since` for at least `for_`.
fn fire_if_held(
    rule: &Rule,
    since: u64,
    now: u64,
    summary: &str,
    out: &mut Vec<Transition>,
) -> Phase {
    let for_ = rule.for_().as_secs();
    if now.saturating_sub(since) < for_ {
        return Phase::Pending { since };
    }
    let held = if for_ == 0 {
        String::new()
    } else {
        format!(", for {}", window(for_))
    };
    let mut labels = BTreeMap::new();
    labels.insert("rule".to_string(), rule.name().to_string());
    labels.insert("severity".to_string(), rule.severity().to_string());
    labels.insert("window".to_string(), rule.window_label());
    let info = AlertInfo {
        alert: rule.alert_name().to_string(),
        labels,
        summary: format!("{}: {summary}{held}", rule.name()),
        started_at: now,
        at: now,
    };
    out.push(Transition::Firing(info.clone()));
    Phase::Firing(info)
}

fn objective_labels(objective: &Objective, pair: &BurnPair) -> BTreeMap<String, String> {
    let sli = match objective.sli() {
        Sli::Availability => "availability",
        Sli::Latency { .. } => "latency",
    };
    [
        ("objective", objective.name().to_string()),
        ("severity", pair.severity.to_string()),
        ("sli", sli.to_string()),
        ("window", pair.window_label()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect()
}

/// `"route api: burning its 99.9% availability budget 16.2× over 1h (and 15.0× over 5m);
/// 97% of the 30-day budget left"`.
fn burning(objective: &Objective, pair: &BurnPair, reading: PairReading, budget: Budget) -> String {
    format!(
        "{}: burning its {} budget {} over {} (and {} over {}); {}",
        objective.name(),
        objective.describe(),
        rate(reading.long_rate),
        window(pair.long.as_secs()),
        rate(reading.short_rate),
        window(pair.short.as_secs()),
        budget_words(objective, budget)
    )
}

/// `"route api: no longer burning its 99.9% availability budget above 14.4× over both 1h
/// and 5m (now 40.3× and 0.0×); 83% of the 30-day budget left"`.
fn burnt_out(
    objective: &Objective,
    pair: &BurnPair,
    reading: PairReading,
    budget: Budget,
) -> String {
    format!(
        "{}: no longer burning its {} budget above {} over both {} and {} (now {} and {}); {}",
        objective.name(),
        objective.describe(),
        rate(pair.factor),
        window(pair.long.as_secs()),
        window(pair.short.as_secs()),
        rate(reading.long_rate),
        rate(reading.short_rate),
        budget_words(objective, budget)
    )
}

/// `"97% of the 30-day budget left"`, or `"the 30-day budget is overspent by 20%"`.
fn budget_words(objective: &Objective, budget: Budget) -> String {
    let period = period_adjective(objective.period().as_secs());
    // Rounded down, so a budget being burnt never reads as "100% left"; the epsilon keeps
    // 0.6 computed as 0.59999… at 60%.
    let left = (budget.left * 100.0 + 1e-6).floor();
    if left >= 0.0 {
        format!("{left:.0}% of the {period} budget left")
    } else {
        let over = (-budget.left * 100.0 - 1e-6).ceil();
        format!("the {period} budget is overspent by {over:.0}%")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn monthly() -> Objective {
        Objective::new(
            "api",
            Sli::Availability,
            0.999,
            Duration::from_secs(30 * 86_400),
        )
        .unwrap()
    }

    fn budget(left: f64) -> Budget {
        Budget {
            total: 1_000,
            bad: 0,
            allowed_bad: 1.0,
            left,
        }
    }

    #[test]
    fn a_budget_being_burnt_never_reads_as_whole() {
        assert_eq!(
            budget_words(&monthly(), budget(0.996)),
            "99% of the 30-day budget left"
        );
        assert_eq!(
            budget_words(&monthly(), budget(0.6 - 1e-12)),
            "60% of the 30-day budget left"
        );
    }

    #[test]
    fn an_overspent_budget_reads_as_overspent() {
        assert_eq!(
            budget_words(&monthly(), budget(-0.2)),
            "the 30-day budget is overspent by 20%"
        );
        assert_eq!(
            budget_words(&monthly(), budget(-0.0001)),
            "the 30-day budget is overspent by 1%"
        );
    }
}
