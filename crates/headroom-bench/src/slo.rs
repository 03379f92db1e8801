//! Service level objectives a run is judged by: `p99<200ms,errors<1%`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A figure an objective bounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Figure {
    /// A latency quantile (0.5 for p50), in milliseconds.
    Quantile(f64),
    MeanLatency,
    MaxLatency,
    /// Failed requests and 5xx over all that ended, as a fraction.
    ErrorRate,
}

/// One objective: `figure < bound` (or `<=`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    pub text: String,
    pub figure: Figure,
    pub bound: f64,
    pub inclusive: bool,
}

/// All objectives of `--slo`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Slo(pub Vec<Objective>);

/// What a run measured, as the objectives read it.
pub trait Measured {
    fn quantile_ms(&self, q: f64) -> f64;
    fn mean_ms(&self) -> f64;
    fn max_ms(&self) -> f64;
    fn error_rate(&self) -> f64;
}

/// One objective checked against a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    pub objective: String,
    pub measured: f64,
    pub met: bool,
}

impl Verdict {
    /// `p99 240.1 ms > 200 ms`: the measured figure against its bound.
    pub fn describe(&self) -> String {
        let (value, unit) = if self.objective.starts_with("errors") {
            (self.measured * 100.0, "%")
        } else {
            (self.measured, " ms")
        };
        let name = self.objective.split(['<']).next().unwrap_or("");
        format!(
            "{name} {value:.2}{unit} ({} {})",
            if self.met { "meets" } else { "breaks" },
            self.objective
        )
    }
}

impl Slo {
    pub fn parse(s: &str) -> Result<Slo, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            out.push(parse_objective(part)?);
        }
        if out.is_empty() {
            return Err(format!(
                "SLO {s:?}: no objective (expected e.g. 'p99<200ms,errors<1%')"
            ));
        }
        Ok(Slo(out))
    }

    pub fn check(&self, m: &dyn Measured) -> Vec<Verdict> {
        self.0
            .iter()
            .map(|o| {
                let measured = match o.figure {
                    Figure::Quantile(q) => m.quantile_ms(q),
                    Figure::MeanLatency => m.mean_ms(),
                    Figure::MaxLatency => m.max_ms(),
                    Figure::ErrorRate => m.error_rate(),
                };
                let met = if o.inclusive {
                    measured <= o.bound
                } else {
                    measured < o.bound
                };
                Verdict {
                    objective: o.text.clone(),
                    measured,
                    met,
                }
            })
            .collect()
    }
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = self.0.iter().map(|o| o.text.as_str()).collect();
        f.write_str(&parts.join(","))
    }
}

fn parse_objective(part: &str) -> Result<Objective, String> {
    let expected = "expected FIGURE<BOUND: p50..p99.99, mean or max with a duration (p99<200ms), or errors with a percentage (errors<1%)";
    let (name, inclusive, bound) = if let Some((n, b)) = part.split_once("<=") {
        (n, true, b)
    } else if let Some((n, b)) = part.split_once('<') {
        (n, false, b)
    } else {
        return Err(format!("SLO objective {part:?}: {expected}"));
    };
    let (name, bound) = (name.trim(), bound.trim());
    let figure = match name {
        "errors" | "error_rate" => Figure::ErrorRate,
        "mean" => Figure::MeanLatency,
        "max" => Figure::MaxLatency,
        p if p.starts_with('p') => {
            let q: f64 = p[1..].parse().map_err(|_| {
                format!("SLO objective {part:?}: {name:?} is not a percentile ({expected})")
            })?;
            if !(q > 0.0 && q < 100.0) {
                return Err(format!(
                    "SLO objective {part:?}: a percentile is between p0 and p100, not both"
                ));
            }
            Figure::Quantile(q / 100.0)
        }
        _ => {
            return Err(format!(
                "SLO objective {part:?}: unknown figure {name:?} ({expected})"
            ))
        }
    };
    let bound = if figure == Figure::ErrorRate {
        let pct = bound.strip_suffix('%').ok_or_else(|| {
            format!("SLO objective {part:?}: give the error rate as a percentage, e.g. errors<1%")
        })?;
        let v: f64 = pct
            .trim()
            .parse()
            .map_err(|_| format!("SLO objective {part:?}: {pct:?} is not a number"))?;
        if !(0.0..=100.0).contains(&v) {
            return Err(format!(
                "SLO objective {part:?}: a percentage is between 0% and 100%"
            ));
        }
        v / 100.0
    } else {
        let d: Duration = humantime::parse_duration(bound).map_err(|e| {
            format!("SLO objective {part:?}: {bound:?} is not a duration ({e}); e.g. 200ms")
        })?;
        d.as_secs_f64() * 1e3
    };
    Ok(Objective {
        text: format!(
            "{name}{}{bound_text}",
            if inclusive { "<=" } else { "<" },
            bound_text = bound_text_of(part)
        ),
        figure,
        bound,
        inclusive,
    })
}

fn bound_text_of(part: &str) -> &str {
    part.rsplit(['<', '=']).next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Measured for Fixed {
        fn quantile_ms(&self, q: f64) -> f64 {
            q * 100.0
        }
        fn mean_ms(&self) -> f64 {
            40.0
        }
        fn max_ms(&self) -> f64 {
            500.0
        }
        fn error_rate(&self) -> f64 {
            0.02
        }
    }

    #[test]
    fn objectives_parse_and_judge() {
        let slo = Slo::parse("p99<200ms, errors<1%,p50<=50ms,mean<1s").unwrap();
        assert_eq!(slo.to_string(), "p99<200ms,errors<1%,p50<=50ms,mean<1s");
        let v = slo.check(&Fixed);
        let met: Vec<bool> = v.iter().map(|v| v.met).collect();
        assert_eq!(met, vec![true, false, true, true]);
        assert_eq!(v[1].describe(), "errors 2.00% (breaks errors<1%)");
        assert!(
            matches!(Slo::parse("p99.9<1s").unwrap().0[0].figure, Figure::Quantile(q) if (q - 0.999).abs() < 1e-12)
        );
    }

    #[test]
    fn bad_objectives_say_what_is_expected() {
        for (bad, says) in [
            ("", "no objective"),
            ("p99>200ms", "expected FIGURE<BOUND"),
            ("p999x<1s", "not a percentile"),
            ("p100<1s", "between p0 and p100"),
            ("errors<1", "percentage"),
            ("p99<fast", "not a duration"),
            ("latency<1s", "unknown figure"),
        ] {
            let e = Slo::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
