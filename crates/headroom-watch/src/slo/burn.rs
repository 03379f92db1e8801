//! Burn rates: how many times faster than "exactly on budget" the error budget is being
//! spent, and the standard long/short window pairs that turn them into alerts.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::format::window;
use super::{Counts, Objective, Source};

/// Who an alert is for: a page wakes someone, a ticket waits for working hours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Wake someone: the budget will be gone within days at this rate.
    Page,
    /// Look at it during working hours.
    Ticket,
}

impl Severity {
    /// `"page"` or `"ticket"`, as in alert labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Page => "page",
            Self::Ticket => "ticket",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A long and a short window and a burn-rate factor. The pair fires only while the burn rate
/// over *both* windows is above `factor`: the long window makes it significant (enough of the
/// budget is gone), the short one makes it current (it is still happening), so the alert
/// resolves minutes after the incident ends rather than when the long window forgets it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BurnPair {
    /// The window that says the burn is significant, e.g. 1 h.
    pub long: Duration,
    /// The window that says the burn is still going on, e.g. 5 min (1/12 of `long`).
    pub short: Duration,
    /// The burn rate both windows must exceed, e.g. 14.4.
    pub factor: f64,
    /// Who is told when the pair fires.
    pub severity: Severity,
}

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// The multi-window, multi-burn-rate pairs of the Google SRE workbook (chapter 5, "Alerting
/// on SLOs"), worked out there for a 30-day period:
///
/// | long | short | factor | severity | budget spent when it fires (30 d) |
/// |------|-------|--------|----------|-----------------------------------|
/// | 1 h  | 5 min | 14.4×  | page     | 2 %                               |
/// | 6 h  | 30 min| 6×     | page     | 5 %                               |
/// | 1 d  | 2 h   | 3×     | ticket   | 10 %                              |
/// | 3 d  | 6 h   | 1×     | ticket   | 10 %                              |
///
/// The windows stay fixed whatever the objective's period, as the workbook keeps them: an
/// hour of a total outage is an hour for a 7-day objective too. What changes with the period
/// is the share of the budget a firing pair stands for (on a 7-day period, 1 h at 14.4× is
/// 8.6 % of it, not 2 %).
pub const STANDARD_PAIRS: [BurnPair; 4] = [
    BurnPair {
        long: Duration::from_secs(HOUR),
        short: Duration::from_secs(5 * MINUTE),
        factor: 14.4,
        severity: Severity::Page,
    },
    BurnPair {
        long: Duration::from_secs(6 * HOUR),
        short: Duration::from_secs(30 * MINUTE),
        factor: 6.0,
        severity: Severity::Page,
    },
    BurnPair {
        long: Duration::from_secs(DAY),
        short: Duration::from_secs(2 * HOUR),
        factor: 3.0,
        severity: Severity::Ticket,
    },
    BurnPair {
        long: Duration::from_secs(3 * DAY),
        short: Duration::from_secs(6 * HOUR),
        factor: 1.0,
        severity: Severity::Ticket,
    },
];

/// The burn rate of `counts` against `target`: `(bad / total) / (1 - target)`. 1.0 spends
/// the budget exactly over the period; 14.4 spends a 30-day budget in a little over two days.
/// 0.0 with no traffic. Free; never panics (a target of 1 gives infinity, which
/// [`Objective::new`] does not allow).
pub fn burn_rate(counts: Counts, target: f64) -> f64 {
    if counts.total == 0 {
        0.0
    } else {
        counts.bad_ratio() / (1.0 - target)
    }
}

/// A pair's burn rates at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct PairReading {
    pub long_rate: f64,
    pub short_rate: f64,
}

impl PairReading {
    /// Both windows above the factor (strictly, as in the workbook's `>`).
    pub fn firing(&self, pair: &BurnPair) -> bool {
        self.long_rate > pair.factor && self.short_rate > pair.factor
    }
}

impl BurnPair {
    /// `"1h/5m"`: the label that tells pairs apart.
    pub fn window_label(&self) -> String {
        format!(
            "{}/{}",
            window(self.long.as_secs()),
            window(self.short.as_secs())
        )
    }

    /// The burn rates over `[now - long, now)` and `[now - short, now)`. Two reads of the
    /// source.
    pub(crate) fn read(&self, objective: &Objective, source: &dyn Source, now: u64) -> PairReading {
        let over = |width: Duration| {
            let counts = source.counts(objective.sli(), now.saturating_sub(width.as_secs()), now);
            burn_rate(counts, objective.target())
        };
        PairReading {
            long_rate: over(self.long),
            short_rate: over(self.short),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn one_percent_errors_burn_a_three_nines_budget_ten_times_too_fast() {
        let rate = burn_rate(
            Counts {
                good: 990,
                total: 1_000,
            },
            0.999,
        );
        assert!(close(rate, 10.0), "{rate}");
    }

    #[test]
    fn errors_at_exactly_the_allowed_ratio_burn_at_one() {
        let rate = burn_rate(
            Counts {
                good: 99_900,
                total: 100_000,
            },
            0.999,
        );
        assert!(close(rate, 1.0), "{rate}");
    }

    #[test]
    fn a_total_outage_burns_at_one_over_the_allowed_ratio() {
        let rate = burn_rate(Counts { good: 0, total: 50 }, 0.99);
        assert!(close(rate, 100.0), "{rate}");
    }

    #[test]
    fn no_traffic_burns_nothing() {
        assert_eq!(burn_rate(Counts::default(), 0.999), 0.0);
    }

    #[test]
    fn a_pair_fires_only_when_both_windows_exceed_its_factor() {
        let pair = STANDARD_PAIRS[0];
        let both = PairReading {
            long_rate: 20.0,
            short_rate: 15.0,
        };
        let short_recovered = PairReading {
            long_rate: 20.0,
            short_rate: 2.0,
        };
        let long_not_yet = PairReading {
            long_rate: 5.0,
            short_rate: 900.0,
        };
        assert!(both.firing(&pair));
        assert!(!short_recovered.firing(&pair));
        assert!(!long_not_yet.firing(&pair));
    }

    #[test]
    fn a_window_exactly_at_the_factor_does_not_fire_its_pair() {
        let pair = STANDARD_PAIRS[0];
        let long_at = PairReading {
            long_rate: 14.4,
            short_rate: 900.0,
        };
        let short_at = PairReading {
            long_rate: 900.0,
            short_rate: 14.4,
        };
        assert!(
            !long_at.firing(&pair),
            "the factor must be exceeded, not met"
        );
        assert!(
            !short_at.firing(&pair),
            "the factor must be exceeded, not met"
        );
    }

    #[test]
    fn the_standard_pairs_are_the_workbooks() {
        let labels: Vec<_> = STANDARD_PAIRS
            .iter()
            .map(|p| (p.window_label(), p.factor, p.severity))
            .collect();
        assert_eq!(
            labels,
            [
                ("1h/5m".to_string(), 14.4, Severity::Page),
                ("6h/30m".to_string(), 6.0, Severity::Page),
                ("1d/2h".to_string(), 3.0, Severity::Ticket),
                ("3d/6h".to_string(), 1.0, Severity::Ticket),
            ]
        );
    }

    #[test]
    fn each_short_window_is_a_twelfth_of_its_long_one() {
        for pair in STANDARD_PAIRS {
            assert_eq!(pair.long.as_secs(), 12 * pair.short.as_secs(), "{pair:?}");
        }
    }
}
