//! An objective (`99.9 %` of requests good over a rolling 30 days) and its error budget.

use std::fmt;
use std::time::Duration;

use super::format::{decimal, percent, period_words};
use super::{Counts, Sli};

/// The longest rolling period an [`Objective`] may have: 90 days. Longer periods make the
/// budget so slow to move that it stops saying anything about this quarter's service.
pub const MAX_PERIOD: Duration = Duration::from_secs(90 * 86_400);

/// What is promised: `target` of the requests measured by `sli` are good over a rolling
/// `period`. Built by [`Objective::new`], which checks every field, so an `Objective` in hand
/// is always valid.
#[derive(Clone, Debug, PartialEq)]
pub struct Objective {
    name: String,
    sli: Sli,
    target: f64,
    period: Duration,
}

/// Why an objective was rejected. Display says which objective, what was wrong and what is
/// expected.
#[derive(Clone, Debug, PartialEq)]
pub enum ObjectiveError {
    /// The target is not strictly between 0 and 1 (or is not a number).
    TargetOutOfRange {
        /// The objective's name.
        name: String,
        /// The target given.
        target: f64,
    },
    /// The period is zero.
    PeriodZero {
        /// The objective's name.
        name: String,
    },
    /// The period is longer than [`MAX_PERIOD`].
    PeriodTooLong {
        /// The objective's name.
        name: String,
        /// The period given.
        period: Duration,
    },
    /// A latency SLI with a zero threshold: no request could ever be good.
    LatencyThresholdZero {
        /// The objective's name.
        name: String,
    },
}

impl fmt::Display for ObjectiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TargetOutOfRange { name, target } => {
                write!(
                    f,
                    "objective \"{name}\": target {target} is out of range; expected a ratio \
                     strictly between 0 and 1, e.g. 0.999 for 99.9%"
                )?;
                if *target > 1.0 && *target < 100.0 {
                    write!(f, " (did you mean {}?)", decimal(target / 100.0, 6))?;
                }
                Ok(())
            }
            Self::PeriodZero { name } => write!(
                f,
                "objective \"{name}\": the period is zero; expected a rolling period of up to \
                 90 days, e.g. 30 days"
            ),
            Self::PeriodTooLong { name, period } => write!(
                f,
                "objective \"{name}\": the period of {} is too long; expected at most 90 days, \
                 e.g. 30 days",
                period_words(period.as_secs())
            ),
            Self::LatencyThresholdZero { name } => write!(
                f,
                "objective \"{name}\": the latency threshold is zero, so no request could be \
                 good; expected the slowest acceptable answer, e.g. 300ms"
            ),
        }
    }
}

impl std::error::Error for ObjectiveError {}

impl Objective {
    /// An objective named `name` (used as-is in alert labels and summaries, e.g.
    /// `"route api"`). Rejects a `target` not strictly between 0 and 1, a zero `period`, a
    /// `period` over [`MAX_PERIOD`] and a latency SLI with a zero threshold. Never panics.
    pub fn new(
        name: impl Into<String>,
        sli: Sli,
        target: f64,
        period: Duration,
    ) -> Result<Self, ObjectiveError> {
        let name = name.into();
        if target.is_nan() || target <= 0.0 || target >= 1.0 {
            return Err(ObjectiveError::TargetOutOfRange { name, target });
        }
        if period.is_zero() {
            return Err(ObjectiveError::PeriodZero { name });
        }
        if period > MAX_PERIOD {
            return Err(ObjectiveError::PeriodTooLong { name, period });
        }
        if let Sli::Latency { threshold } = sli {
            if threshold.is_zero() {
                return Err(ObjectiveError::LatencyThresholdZero { name });
            }
        }
        Ok(Self {
            name,
            sli,
            target,
            period,
        })
    }

    /// The name given to [`Objective::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the objective is measured by.
    pub fn sli(&self) -> &Sli {
        &self.sli
    }

    /// The share of good requests promised, strictly between 0 and 1.
    pub fn target(&self) -> f64 {
        self.target
    }

    /// The rolling period the budget is counted over, at most [`MAX_PERIOD`].
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The share of requests that may be bad, `1 - target`: the budget as a ratio.
    pub fn allowed_bad_ratio(&self) -> f64 {
        1.0 - self.target
    }

    /// The budget given the requests counted over the period. Free.
    pub fn budget(&self, counts: Counts) -> Budget {
        let allowed_bad = self.allowed_bad_ratio() * counts.total as f64;
        let bad = counts.bad();
        let left = if counts.total == 0 {
            1.0
        } else {
            1.0 - bad as f64 / allowed_bad
        };
        Budget {
            total: counts.total,
            bad,
            allowed_bad,
            left,
        }
    }

    /// How the objective reads in a sentence: `"99.9% availability"`,
    /// `"99% latency (within 300ms)"`.
    pub(crate) fn describe(&self) -> String {
        let target = percent(self.target);
        match self.sli {
            Sli::Availability => format!("{target} availability"),
            Sli::Latency { threshold } => format!(
                "{target} latency (within {})",
                super::format::latency(threshold.as_secs_f64())
            ),
        }
    }
}

/// An error budget over the objective's rolling period.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    /// Requests in the period.
    pub total: u64,
    /// Bad requests in the period: the budget spent.
    pub bad: u64,
    /// Bad requests the objective allows for this traffic: `(1 - target) × total`.
    pub allowed_bad: f64,
    /// The share of the budget not yet spent: `1 - bad / allowed_bad`. 1.0 with no traffic;
    /// negative once more was spent than allowed (-0.5: overspent by half).
    pub left: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn availability(target: f64) -> Objective {
        Objective::new(
            "route api",
            Sli::Availability,
            target,
            Duration::from_secs(30 * DAY),
        )
        .expect("a valid objective")
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn four_hundred_errors_in_a_million_leave_sixty_percent_of_a_three_nines_budget() {
        let budget = availability(0.999).budget(Counts {
            good: 999_600,
            total: 1_000_000,
        });
        assert_eq!(budget.bad, 400);
        assert!(close(budget.allowed_bad, 1_000.0), "{budget:?}");
        assert!(close(budget.left, 0.6), "{budget:?}");
    }

    #[test]
    fn budget_is_spent_by_errors_not_by_traffic() {
        let objective = availability(0.999);
        let quiet = objective.budget(Counts {
            good: 1_000,
            total: 1_000,
        });
        let busy = objective.budget(Counts {
            good: 10_000_000,
            total: 10_000_000,
        });
        assert_eq!(quiet.left, 1.0);
        assert_eq!(busy.left, 1.0);
    }

    #[test]
    fn an_overspent_budget_goes_negative() {
        let budget = availability(0.99).budget(Counts {
            good: 985,
            total: 1_000,
        });
        assert!(close(budget.left, -0.5), "{budget:?}");
    }

    #[test]
    fn no_traffic_leaves_the_whole_budget() {
        let budget = availability(0.999).budget(Counts::default());
        assert_eq!(budget.left, 1.0);
        assert_eq!(budget.bad, 0);
    }

    #[test]
    fn a_target_of_one_or_more_is_rejected_with_what_is_expected() {
        let err = Objective::new(
            "route api",
            Sli::Availability,
            1.0,
            Duration::from_secs(DAY),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "objective \"route api\": target 1 is out of range; expected a ratio strictly \
             between 0 and 1, e.g. 0.999 for 99.9%"
        );
    }

    #[test]
    fn a_target_written_as_a_percentage_is_rejected_with_a_suggestion() {
        let err = Objective::new(
            "route api",
            Sli::Availability,
            99.9,
            Duration::from_secs(DAY),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("e.g. 0.999 for 99.9% (did you mean 0.999?)"),
            "{err}"
        );
    }

    #[test]
    fn zero_negative_and_nan_targets_are_rejected() {
        for target in [0.0, -0.5, f64::NAN] {
            let result = Objective::new("api", Sli::Availability, target, Duration::from_secs(DAY));
            assert!(
                matches!(result, Err(ObjectiveError::TargetOutOfRange { .. })),
                "target {target}: {result:?}"
            );
        }
    }

    #[test]
    fn a_zero_period_is_rejected_with_what_is_expected() {
        let err = Objective::new("api", Sli::Availability, 0.999, Duration::ZERO).unwrap_err();
        assert_eq!(
            err.to_string(),
            "objective \"api\": the period is zero; expected a rolling period of up to 90 days, \
             e.g. 30 days"
        );
    }

    #[test]
    fn a_period_over_ninety_days_is_rejected_but_ninety_is_accepted() {
        let err = Objective::new(
            "api",
            Sli::Availability,
            0.999,
            Duration::from_secs(91 * DAY),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "objective \"api\": the period of 91 days is too long; expected at most 90 days, \
             e.g. 30 days"
        );
        assert!(Objective::new("api", Sli::Availability, 0.999, MAX_PERIOD).is_ok());
    }

    #[test]
    fn a_latency_objective_with_a_zero_threshold_is_rejected() {
        let sli = Sli::Latency {
            threshold: Duration::ZERO,
        };
        let err = Objective::new("api", sli, 0.99, Duration::from_secs(DAY)).unwrap_err();
        assert_eq!(
            err,
            ObjectiveError::LatencyThresholdZero { name: "api".into() }
        );
    }

    #[test]
    fn objectives_describe_themselves_in_percent() {
        assert_eq!(availability(0.999).describe(), "99.9% availability");
        let latency = Objective::new(
            "api",
            Sli::Latency {
                threshold: Duration::from_millis(300),
            },
            0.99,
            Duration::from_secs(DAY),
        )
        .unwrap();
        assert_eq!(latency.describe(), "99% latency (within 300ms)");
    }
}
