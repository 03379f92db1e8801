//! Service-level objectives judged against the request history: error budgets over a rolling
//! period, multi-window multi-burn-rate alerts, and plain threshold rules with Prometheus
//! `for:` semantics.
//!
//! Everything here is pure: the history is read through [`Source`], and time is the `now`
//! (unix seconds) the caller passes to [`Evaluator::evaluate`]. Nothing sleeps, spawns or
//! reads a clock, so the same history and the same `now` always give the same verdict.
//!
//! - [`Objective`]: what is promised (`99.9 %` of requests good over 30 days) and its
//!   [`Budget`].
//! - [`BurnPair`] and [`STANDARD_PAIRS`]: how fast the budget is being spent, over a long and
//!   a short window at once.
//! - [`Rule`]: a plain condition ("error rate over 1 % for 5 minutes").
//! - [`Evaluator`]: holds objectives and rules with their alert state, and reports
//!   [`Transition`]s and [`SloStatus`]es.

mod burn;
mod evaluator;
mod format;
mod objective;
mod rule;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod rule_scenarios;
#[cfg(test)]
mod scenarios;

pub use burn::{burn_rate, BurnPair, Severity, STANDARD_PAIRS};
pub use evaluator::{AlertInfo, DuplicateName, Evaluator, PairStatus, SloStatus, Transition};
pub use format::window as window_label;
pub use objective::{Budget, Objective, ObjectiveError, MAX_PERIOD};
pub use rule::{Condition, Rule, RuleError};

/// What an SLO is measured by.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sli {
    /// A request is good when it was not answered with a 5xx.
    Availability,
    /// A request is good when it was answered within `threshold`.
    Latency {
        /// The slowest answer that still counts as good (inclusive).
        threshold: std::time::Duration,
    },
}

/// Requests counted over a window: how many there were and how many of them were good.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    /// Requests that met the SLI.
    pub good: u64,
    /// All requests.
    pub total: u64,
}

impl Counts {
    /// Requests that did not meet the SLI: `total - good` (0 if a source reports more good
    /// than total, rather than wrapping). Free.
    pub fn bad(&self) -> u64 {
        self.total.saturating_sub(self.good)
    }

    /// The share of bad requests, `bad / total`, in `0.0..=1.0`; 0.0 with no traffic. Free.
    pub fn bad_ratio(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.bad() as f64 / self.total as f64
        }
    }
}

/// The history, as the evaluator reads it; times are unix seconds, windows [from, to).
pub trait Source {
    /// Requests in `[from, to)`, judged good or bad by `sli`.
    fn counts(&self, sli: &Sli, from: u64, to: u64) -> Counts;
    /// Latency quantile q (0..=1) in seconds over [from, to); None without requests.
    fn quantile(&self, q: f64, from: u64, to: u64) -> Option<f64>;
}
