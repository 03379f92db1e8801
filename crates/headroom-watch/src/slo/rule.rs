//! Plain alert rules ("error rate over 1% for 5 minutes"), held to Prometheus `for:`
//! semantics by the [`Evaluator`](super::Evaluator).

use std::fmt;
use std::time::Duration;

use super::burn::Severity;
use super::format::{decimal, latency, percent, quantile_name, window};
use super::{Sli, Source};

/// What a [`Rule`] watches. Each condition is judged at every evaluation over windows that
/// end at `now`; the rule fires once it has held at every evaluation for `for_`, and resolves
/// at the first evaluation where it does not hold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Condition {
    /// The share of 5xx answers over the last `window` is above `above` (0.01 = 1 %).
    /// No traffic is a rate of 0.
    ErrorRate {
        /// The error ratio that must be exceeded, in `0.0..1.0`.
        above: f64,
        /// How far back the rate is measured, e.g. 5 min.
        window: Duration,
        /// How long the condition must hold before the rule fires; zero fires at once.
        for_: Duration,
    },
    /// The latency `quantile` over the last `window` is more than `above_ratio` above the same
    /// quantile over the `baseline` just before it: `[now - window - baseline, now - window)`.
    /// Either window without requests is "not above". A lasting shift becomes the new
    /// baseline after `baseline` has passed, and the rule resolves.
    LatencyAboveBaseline {
        /// Which quantile, in `(0, 1]`, e.g. 0.99.
        quantile: f64,
        /// How far above the baseline, e.g. 0.10 for 10 % above; must be positive.
        above_ratio: f64,
        /// How long the baseline is measured over, e.g. 1 h.
        baseline: Duration,
        /// How far back the current quantile is measured, e.g. 5 min.
        window: Duration,
        /// How long the condition must hold before the rule fires; zero fires at once.
        for_: Duration,
    },
    /// The latency `quantile` over the last `window` is above `threshold`. A window without
    /// requests is "not above".
    LatencyAbove {
        /// Which quantile, in `(0, 1]`, e.g. 0.99.
        quantile: f64,
        /// The latency that must be exceeded; must be positive.
        threshold: Duration,
        /// How far back the quantile is measured, e.g. 5 min.
        window: Duration,
        /// How long the condition must hold before the rule fires; zero fires at once.
        for_: Duration,
    },
}

/// A named [`Condition`] with the severity its alert carries. Built by [`Rule::new`], which
/// checks the condition's numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    name: String,
    condition: Condition,
    severity: Severity,
}

/// Why a rule was rejected. Display says which rule, what was wrong and what is expected.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleError {
    /// An error-rate threshold outside `0.0..1.0` (or not a number).
    ErrorRateOutOfRange {
        /// The rule's name.
        name: String,
        /// The threshold given.
        above: f64,
    },
    /// A quantile outside `(0, 1]` (or not a number).
    QuantileOutOfRange {
        /// The rule's name.
        name: String,
        /// The quantile given.
        quantile: f64,
    },
    /// A baseline ratio that is not positive (or not a number).
    RatioNotPositive {
        /// The rule's name.
        name: String,
        /// The ratio given.
        above_ratio: f64,
    },
    /// A window, a baseline or a latency threshold of zero.
    Zero {
        /// The rule's name.
        name: String,
        /// Which field: `"window"`, `"baseline"` or `"threshold"`.
        field: &'static str,
    },
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ErrorRateOutOfRange { name, above } => {
                write!(
                    f,
                    "rule \"{name}\": error rate threshold {above} is out of range; expected a \
                     ratio from 0 up to (not including) 1, e.g. 0.01 for 1%"
                )?;
                if *above >= 1.0 && *above < 100.0 {
                    write!(f, " (did you mean {}?)", decimal(above / 100.0, 6))?;
                }
                Ok(())
            }
            Self::QuantileOutOfRange { name, quantile } => {
                write!(
                    f,
                    "rule \"{name}\": quantile {quantile} is out of range; expected a ratio \
                     above 0 and at most 1, e.g. 0.99 for p99"
                )?;
                if *quantile > 1.0 && *quantile <= 100.0 {
                    write!(f, " (did you mean {}?)", decimal(quantile / 100.0, 6))?;
                }
                Ok(())
            }
            Self::RatioNotPositive { name, above_ratio } => write!(
                f,
                "rule \"{name}\": baseline ratio {above_ratio} is not positive; expected how far \
                 above the baseline, e.g. 0.10 for 10% above"
            ),
            Self::Zero { name, field } => write!(
                f,
                "rule \"{name}\": the {field} is zero; expected a positive duration, e.g. {}",
                match *field {
                    "baseline" => "1h",
                    "threshold" => "500ms",
                    _ => "5m",
                }
            ),
        }
    }
}

impl std::error::Error for RuleError {}

/// What a condition saw at one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Observation {
    /// The condition holds.
    pub holds: bool,
    /// The numbers in a sentence, without the rule's name: `"2.5% of requests failed over
    /// the last 5m (threshold 1%)"`.
    pub summary: String,
}

impl Rule {
    /// A rule named `name` (used as-is in alert labels and summaries) whose alert has
    /// severity [`Severity::Ticket`]; see [`Rule::with_severity`]. Rejects an error-rate
    /// threshold outside `0.0..1.0`, a quantile outside `(0, 1]`, a baseline ratio that is not
    /// positive, and zero windows, baselines and latency thresholds. Never panics.
    pub fn new(name: impl Into<String>, condition: Condition) -> Result<Self, RuleError> {
        let name = name.into();
        let zero = |field| RuleError::Zero {
            name: name.clone(),
            field,
        };
        let quantile_in_range = |q: f64| q > 0.0 && q <= 1.0;
        match condition {
            Condition::ErrorRate { above, window, .. } => {
                if !(0.0..1.0).contains(&above) {
                    return Err(RuleError::ErrorRateOutOfRange { name, above });
                }
                if window.is_zero() {
                    return Err(zero("window"));
                }
            }
            Condition::LatencyAboveBaseline {
                quantile,
                above_ratio,
                baseline,
                window,
                ..
            } => {
                if !quantile_in_range(quantile) {
                    return Err(RuleError::QuantileOutOfRange { name, quantile });
                }
                if above_ratio.is_nan() || above_ratio <= 0.0 {
                    return Err(RuleError::RatioNotPositive { name, above_ratio });
                }
                if window.is_zero() {
                    return Err(zero("window"));
                }
                if baseline.is_zero() {
                    return Err(zero("baseline"));
                }
            }
            Condition::LatencyAbove {
                quantile,
                threshold,
                window,
                ..
            } => {
                if !quantile_in_range(quantile) {
                    return Err(RuleError::QuantileOutOfRange { name, quantile });
                }
                if threshold.is_zero() {
                    return Err(zero("threshold"));
                }
                if window.is_zero() {
                    return Err(zero("window"));
                }
            }
        }
        Ok(Self {
            name,
            condition,
            severity: Severity::Ticket,
        })
    }

    /// The same rule with its alert at `severity`.
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// The name given to [`Rule::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the rule watches.
    pub fn condition(&self) -> &Condition {
        &self.condition
    }

    /// The severity its alert carries; [`Severity::Ticket`] unless changed.
    pub fn severity(&self) -> Severity {
        self.severity
    }

    /// The stable alert name: `ErrorRateHigh`, `LatencyAboveBaseline` or `LatencyHigh`.
    pub fn alert_name(&self) -> &'static str {
        match self.condition {
            Condition::ErrorRate { .. } => "ErrorRateHigh",
            Condition::LatencyAboveBaseline { .. } => "LatencyAboveBaseline",
            Condition::LatencyAbove { .. } => "LatencyHigh",
        }
    }

    /// How long the condition must hold before the rule fires.
    pub fn for_(&self) -> Duration {
        match self.condition {
            Condition::ErrorRate { for_, .. }
            | Condition::LatencyAboveBaseline { for_, .. }
            | Condition::LatencyAbove { for_, .. } => for_,
        }
    }

    /// The window label: `"5m"`.
    pub(crate) fn window_label(&self) -> String {
        match self.condition {
            Condition::ErrorRate { window: w, .. }
            | Condition::LatencyAboveBaseline { window: w, .. }
            | Condition::LatencyAbove { window: w, .. } => window(w.as_secs()),
        }
    }

    /// Judges the condition at `now`: one read of the source (two for the baseline).
    pub(crate) fn observe(&self, source: &dyn Source, now: u64) -> Observation {
        let since = |width: Duration| now.saturating_sub(width.as_secs());
        match self.condition {
            Condition::ErrorRate {
                above, window: w, ..
            } => {
                let rate = source.counts(&Sli::Availability, since(w), now).bad_ratio();
                Observation {
                    holds: rate > above,
                    summary: format!(
                        "{} of requests failed over the last {} (threshold {})",
                        percent(rate),
                        window(w.as_secs()),
                        percent(above)
                    ),
                }
            }
            Condition::LatencyAboveBaseline {
                quantile,
                above_ratio,
                baseline,
                window: w,
                ..
            } => {
                let start = since(w);
                let current = source.quantile(quantile, start, now);
                let before =
                    source.quantile(quantile, start.saturating_sub(baseline.as_secs()), start);
                let name = quantile_name(quantile);
                match (current, before) {
                    (Some(current), Some(before)) => {
                        let holds = current > before * (1.0 + above_ratio);
                        let change = if before > 0.0 {
                            let ratio = current / before - 1.0;
                            let direction = if ratio >= 0.0 { "above" } else { "below" };
                            format!("{} {direction}", percent(ratio.abs()))
                        } else {
                            "not comparable to".to_string()
                        };
                        Observation {
                            holds,
                            summary: format!(
                                "{name} latency {} over the last {} is {change} its {} \
                                 baseline of {} (threshold {} above)",
                                latency(current),
                                window(w.as_secs()),
                                window(baseline.as_secs()),
                                latency(before),
                                percent(above_ratio)
                            ),
                        }
                    }
                    _ => Observation {
                        holds: false,
                        summary: format!(
                            "{name} latency cannot be compared with its {} baseline: no \
                             requests in one of the windows",
                            window(baseline.as_secs())
                        ),
                    },
                }
            }
            Condition::LatencyAbove {
                quantile,
                threshold,
                window: w,
                ..
            } => {
                let name = quantile_name(quantile);
                let limit = threshold.as_secs_f64();
                match source.quantile(quantile, since(w), now) {
                    Some(current) => Observation {
                        holds: current > limit,
                        summary: format!(
                            "{name} latency {} over the last {} (threshold {})",
                            latency(current),
                            window(w.as_secs()),
                            latency(limit)
                        ),
                    },
                    None => Observation {
                        holds: false,
                        summary: format!("no requests over the last {}", window(w.as_secs())),
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn error_rate(above: f64) -> Condition {
        Condition::ErrorRate {
            above,
            window: 5 * MINUTE,
            for_: 5 * MINUTE,
        }
    }

    fn baseline(above_ratio: f64, window: Duration, baseline: Duration) -> Condition {
        Condition::LatencyAboveBaseline {
            quantile: 0.99,
            above_ratio,
            baseline,
            window,
            for_: 5 * MINUTE,
        }
    }

    #[test]
    fn an_error_rate_written_as_a_percentage_is_rejected_with_a_suggestion() {
        let err = Rule::new("api errors", error_rate(1.0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rule \"api errors\": error rate threshold 1 is out of range; expected a ratio from \
             0 up to (not including) 1, e.g. 0.01 for 1% (did you mean 0.01?)"
        );
    }

    #[test]
    fn negative_and_nan_error_rates_are_rejected_but_zero_is_any_error() {
        for above in [-0.1, f64::NAN] {
            assert!(
                matches!(
                    Rule::new("r", error_rate(above)),
                    Err(RuleError::ErrorRateOutOfRange { .. })
                ),
                "{above}"
            );
        }
        assert!(Rule::new("r", error_rate(0.0)).is_ok());
    }

    #[test]
    fn a_baseline_ratio_must_be_positive() {
        let err = Rule::new("p99", baseline(0.0, 5 * MINUTE, 60 * MINUTE)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rule \"p99\": baseline ratio 0 is not positive; expected how far above the \
             baseline, e.g. 0.10 for 10% above"
        );
        assert!(Rule::new("p99", baseline(f64::NAN, 5 * MINUTE, 60 * MINUTE)).is_err());
    }

    #[test]
    fn zero_windows_and_baselines_are_rejected_by_name() {
        let err = Rule::new("p99", baseline(0.1, Duration::ZERO, 60 * MINUTE)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rule \"p99\": the window is zero; expected a positive duration, e.g. 5m"
        );
        let err = Rule::new("p99", baseline(0.1, 5 * MINUTE, Duration::ZERO)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rule \"p99\": the baseline is zero; expected a positive duration, e.g. 1h"
        );
        let err = Rule::new(
            "r",
            Condition::ErrorRate {
                above: 0.01,
                window: Duration::ZERO,
                for_: Duration::ZERO,
            },
        )
        .unwrap_err();
        assert_eq!(
            err,
            RuleError::Zero {
                name: "r".into(),
                field: "window"
            }
        );
    }

    #[test]
    fn quantiles_outside_zero_to_one_are_rejected() {
        let slow = |quantile| Condition::LatencyAbove {
            quantile,
            threshold: Duration::from_millis(500),
            window: 5 * MINUTE,
            for_: Duration::ZERO,
        };
        let err = Rule::new("slow", slow(99.0)).unwrap_err();
        assert!(err.to_string().ends_with("(did you mean 0.99?)"), "{err}");
        assert!(Rule::new("slow", slow(0.0)).is_err());
        assert!(Rule::new("slow", slow(1.0)).is_ok());
        let zero = Condition::LatencyAbove {
            quantile: 0.99,
            threshold: Duration::ZERO,
            window: 5 * MINUTE,
            for_: Duration::ZERO,
        };
        assert_eq!(
            Rule::new("slow", zero).unwrap_err().to_string(),
            "rule \"slow\": the threshold is zero; expected a positive duration, e.g. 500ms"
        );
    }

    #[test]
    fn rules_are_tickets_unless_told_otherwise_and_named_by_kind() {
        let rule = Rule::new("api errors", error_rate(0.01)).unwrap();
        assert_eq!(rule.severity(), Severity::Ticket);
        assert_eq!(rule.alert_name(), "ErrorRateHigh");
        let paged = rule.with_severity(Severity::Page);
        assert_eq!(paged.severity(), Severity::Page);
        let p99 = Rule::new("p99", baseline(0.1, 5 * MINUTE, 60 * MINUTE)).unwrap();
        assert_eq!(p99.alert_name(), "LatencyAboveBaseline");
    }
}
