//! `--save` and `--compare`: keep a run's report, and later judge a new run against it, so a
//! CI job can fail on a performance regression.

use crate::report::{duration_ms, rate, Report};
use serde::Serialize;
use std::path::Path;

/// An error rate must rise by more than this (in absolute terms, 0.1 percentage point) as
/// well as by the relative threshold to count as a regression: 0% → 0.01% is noise.
const ERROR_RATE_FLOOR: f64 = 0.001;

/// One figure, before and after.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Change {
    pub figure: String,
    pub baseline: f64,
    pub now: f64,
    /// Relative change, (now − baseline) / baseline; 0 when the baseline is 0.
    pub change: f64,
    pub regression: bool,
}

pub fn load(path: &Path) -> Result<Report, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the baseline: {e}", path.display()))?;
    let report: Report = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}:{}: not a headroom bench report: {e} (make one with --save)",
            path.display(),
            e.line()
        )
    })?;
    if report.schema != crate::report::SCHEMA {
        return Err(format!(
            "{}: schema {:?}, this headroom bench reads {:?}: save the baseline again",
            path.display(),
            report.schema,
            crate::report::SCHEMA
        ));
    }
    Ok(report)
}

pub fn save(path: &Path, report: &Report) -> Result<(), String> {
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(path, json + "\n").map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

/// Compares `now` with `baseline`; `threshold` is the relative change (0.1: 10%) that counts
/// as a regression in the worse direction.
pub fn compare(baseline: &Report, now: &Report, threshold: f64) -> Result<Vec<Change>, String> {
    let mut out = Vec::new();
    // (figure, baseline, now, higher is better)
    let mut figures: Vec<(&str, f64, f64, bool)> = Vec::new();
    match (&baseline.run, &now.run, &baseline.search, &now.search) {
        (Some(b), Some(n), _, _) => {
            figures.push(("throughput", b.throughput_rps, n.throughput_rps, true));
            figures.push(("p50", b.latency_ms.p50, n.latency_ms.p50, false));
            figures.push(("p90", b.latency_ms.p90, n.latency_ms.p90, false));
            figures.push(("p99", b.latency_ms.p99, n.latency_ms.p99, false));
            figures.push(("p99.9", b.latency_ms.p99_9, n.latency_ms.p99_9, false));
            figures.push(("error rate", b.error_rate, n.error_rate, false));
        }
        (_, _, Some(b), Some(n)) => {
            figures.push((
                "max rate",
                b.max_rate.unwrap_or(0.0),
                n.max_rate.unwrap_or(0.0),
                true,
            ));
        }
        _ => {
            let kind = |r: &Report| {
                if r.search.is_some() {
                    "a capacity search (--find-max)"
                } else {
                    "a single run"
                }
            };
            return Err(format!(
                "the baseline is {} but this is {}: compare like with like",
                kind(baseline),
                kind(now)
            ));
        }
    }
    for (figure, b, n, higher_is_better) in figures {
        let change = if b == 0.0 { 0.0 } else { (n - b) / b };
        let worse = if higher_is_better { n < b } else { n > b };
        let regression = worse
            && if figure == "error rate" {
                n - b > ERROR_RATE_FLOOR && (b == 0.0 || change.abs() > threshold)
            } else if b == 0.0 {
                // Nothing to be relative to: a throughput of 0 before cannot get worse,
                // a latency of 0 means nothing was measured.
                false
            } else {
                change.abs() > threshold
            };
        out.push(Change {
            figure: figure.into(),
            baseline: b,
            now: n,
            change,
            regression,
        });
    }
    Ok(out)
}

/// The comparison as a table.
pub fn text(changes: &[Change], threshold: f64) -> String {
    let fmt = |figure: &str, v: f64| match figure {
        "throughput" | "max rate" => format!("{}/s", rate(v)),
        "error rate" => format!("{:.2}%", v * 100.0),
        _ => duration_ms(v),
    };
    let mut s = format!(
        "  {:<12}{:>12}{:>12}{:>10}\n",
        "figure", "baseline", "now", "change"
    );
    for c in changes {
        s.push_str(&format!(
            "  {:<12}{:>12}{:>12}{:>9.1}%{}\n",
            c.figure,
            fmt(&c.figure, c.baseline),
            fmt(&c.figure, c.now),
            c.change * 100.0,
            if c.regression {
                format!("  REGRESSION (beyond {:.0}%)", threshold * 100.0)
            } else {
                String::new()
            }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rps: f64, p99: f64, errors: f64) -> Report {
        serde_json::from_value(serde_json::json!({
            "schema": crate::report::SCHEMA, "target": "http://x", "protocol": "HTTP/1.1",
            "run": {
                "load": {"model":"closed","connections":1,"threads":1},
                "duration_s": 1.0, "warmup_s": 0.0, "requests": 1, "throughput_rps": rps,
                "sent": 1, "sent_rate": rps, "late": 0, "unsent": 0,
                "in_flight_at_end": 0, "latency_ms": {"min":1.0,"mean":1.0,"stdev":0.0,"p50":1.0,"p90":1.0,"p95":1.0,"p99":p99,"p99_9":p99,"max":p99},
                "status": {}, "errors": {}, "error_rate": errors, "bytes": {"received":0,"sent":0},
                "connections_opened": 1, "first_errors": [], "interrupted": false, "warnings": [],
                "timeline": [], "distribution": []
            }
        }))
        .unwrap()
    }

    #[test]
    fn only_changes_beyond_the_threshold_in_the_worse_direction_regress() {
        let base = report(1000.0, 10.0, 0.0);
        let regressed = |now: &Report| -> Vec<String> {
            compare(&base, now, 0.1)
                .unwrap()
                .into_iter()
                .filter(|c| c.regression)
                .map(|c| c.figure)
                .collect()
        };
        assert!(regressed(&report(950.0, 10.5, 0.0)).is_empty());
        assert!(
            regressed(&report(2000.0, 5.0, 0.0)).is_empty(),
            "better is never a regression"
        );
        assert_eq!(regressed(&report(850.0, 10.0, 0.0)), vec!["throughput"]);
        assert_eq!(regressed(&report(1000.0, 12.0, 0.0)), vec!["p99", "p99.9"]);
        assert!(
            regressed(&report(1000.0, 10.0, 0.0005)).is_empty(),
            "below the error-rate floor"
        );
        assert_eq!(regressed(&report(1000.0, 10.0, 0.02)), vec!["error rate"]);
    }

    #[test]
    fn a_run_is_not_compared_with_a_search() {
        let mut search = report(1.0, 1.0, 0.0);
        search.run = None;
        search.search = Some(serde_json::from_value(serde_json::json!({
            "slo": "p99<1s", "max_rate": 10.0, "first_failing_rate": 11.0, "concurrency": 1.0,
            "tolerance": 0.05, "step_s": 1.0, "warmup_s": 0.0, "steps": [], "conclusion": "", "interrupted": false
        })).unwrap());
        let e = compare(&report(1.0, 1.0, 0.0), &search, 0.1).unwrap_err();
        assert!(e.contains("like with like"), "{e}");
    }
}
