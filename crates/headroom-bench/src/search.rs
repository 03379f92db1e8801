//! `--find-max`: the highest arrival rate at which the target still meets its SLO. Open-loop
//! steps, each held long enough to judge (its warm-up discarded): the rate doubles until a
//! step breaks the SLO, then a binary search between the last good and the first bad rate
//! narrows it to within the tolerance.

use crate::report::{Latency, RunReport};
use crate::slo::{Slo, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A step that sent less than this share of its due requests, while the target met the SLO,
/// shows the generator's limit, not the target's.
const SENT_ENOUGH: f64 = 0.97;
/// Below this rate a search that never met the SLO gives up.
const LOWEST_RATE: f64 = 1.0;

/// How to search.
#[derive(Debug, Clone)]
pub struct Search {
    pub slo: Slo,
    /// The first step's rate, per second.
    pub start: f64,
    /// Never step above this rate.
    pub max_rate: Option<f64>,
    /// Stop when the last good and first bad rate are this close (0.05: within 5%).
    pub tolerance: f64,
    pub max_steps: usize,
}

/// One step of the search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// The arrival rate asked for, per second.
    pub rate: f64,
    pub sent_rate: f64,
    pub throughput_rps: f64,
    pub latency_ms: Latency,
    pub error_rate: f64,
    pub met_slo: bool,
    pub verdicts: Vec<Verdict>,
    /// The generator could not send the rate asked for.
    pub generator_limited: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub headroom: Option<BTreeMap<String, f64>>,
}

/// What the search found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchReport {
    pub slo: String,
    /// The highest rate that met the SLO, per second.
    pub max_rate: Option<f64>,
    /// The lowest rate that broke it.
    pub first_failing_rate: Option<f64>,
    /// Requests in flight at `max_rate`, by Little's law: throughput × mean latency.
    pub concurrency: Option<f64>,
    pub tolerance: f64,
    pub step_s: f64,
    pub warmup_s: f64,
    /// In the order they ran; the latency-against-load curve when sorted by rate.
    pub steps: Vec<Step>,
    /// Why the search stopped, in words.
    pub conclusion: String,
    pub interrupted: bool,
}

impl Step {
    /// `r.slo`, when the run was judged from its histogram, else `slo` on its figures.
    pub fn of(rate: f64, r: &RunReport, slo: &Slo) -> Step {
        let verdicts = r.slo.clone().unwrap_or_else(|| slo.check(r));
        let requested = r.requested_rate.unwrap_or(rate);
        let generator_limited = r.sent_rate < SENT_ENOUGH * requested;
        Step {
            rate,
            sent_rate: r.sent_rate,
            throughput_rps: r.throughput_rps,
            latency_ms: r.latency_ms,
            error_rate: r.error_rate,
            met_slo: verdicts.iter().all(|v| v.met) && !generator_limited,
            verdicts,
            generator_limited,
            headroom: r.headroom.clone(),
        }
    }

    /// `  400/s  p99 12.3ms  errors 0.00%  meets the SLO`.
    pub fn line(&self) -> String {
        let why = if self.met_slo {
            "meets the SLO".to_string()
        } else if self.generator_limited && self.verdicts.iter().all(|v| v.met) {
            format!(
                "the generator sent only {}/s",
                crate::report::rate(self.sent_rate)
            )
        } else {
            let broken: Vec<String> = self
                .verdicts
                .iter()
                .filter(|v| !v.met)
                .map(Verdict::describe)
                .collect();
            broken.join("; ")
        };
        let seen = self
            .headroom
            .as_ref()
            .map(|h| {
                let parts: Vec<String> = crate::against::headline(h)
                    .iter()
                    .map(|(k, v)| format!("{k} {}", crate::report::short(*v)))
                    .collect();
                format!("  [headroom: {}]", parts.join(", "))
            })
            .unwrap_or_default();
        format!(
            "{:>9}/s  p50 {:>8}  p99 {:>8}  errors {:>6.2}%  {why}{seen}",
            crate::report::rate(self.rate),
            crate::report::duration_ms(self.latency_ms.p50),
            crate::report::duration_ms(self.latency_ms.p99),
            self.error_rate * 100.0,
        )
    }
}

/// What one step's run returned: its report, or that Ctrl-C stopped it.
pub enum StepRun {
    Done(Box<RunReport>),
    Interrupted,
}

/// Runs the search; `run_step(rate)` runs one step, `on_step` sees each as it ends.
pub fn find_max(
    s: &Search,
    step_s: f64,
    warmup_s: f64,
    mut run_step: impl FnMut(f64) -> Result<StepRun, String>,
    mut on_step: impl FnMut(&Step),
) -> Result<SearchReport, String> {
    let mut steps: Vec<Step> = Vec::new();
    let mut good: Option<f64> = None;
    let mut bad: Option<f64> = None;
    let mut rate = cap(s.start, s.max_rate);
    let mut interrupted = false;
    let conclusion = loop {
        if steps.len() >= s.max_steps {
            break format!("stopped after {} steps (--max-steps)", s.max_steps);
        }
        let report = match run_step(rate)? {
            StepRun::Done(r) => r,
            StepRun::Interrupted => {
                interrupted = true;
                break "interrupted (Ctrl-C)".to_string();
            }
        };
        let step = Step::of(rate, &report, &s.slo);
        on_step(&step);
        let met = step.met_slo;
        let limited = step.generator_limited && step.verdicts.iter().all(|v| v.met);
        steps.push(step);
        if limited {
            break format!(
                "the generator could not send {}/s (it sent {}/s) while the target met the SLO: the target's limit is above what this machine can generate; try --threads or another machine",
                crate::report::rate(rate),
                crate::report::rate(report.sent_rate)
            );
        }
        if met {
            good = Some(good.map_or(rate, |g: f64| g.max(rate)));
        } else {
            bad = Some(bad.map_or(rate, |b: f64| b.min(rate)));
        }
        rate = match (good, bad) {
            (Some(g), None) => {
                if s.max_rate.is_some_and(|m| g >= m) {
                    break format!("met the SLO at the highest rate allowed (--max-rate {g}/s)");
                }
                cap(g * 2.0, s.max_rate)
            }
            (None, Some(b)) => {
                if b / 2.0 < LOWEST_RATE {
                    break format!("the SLO was not met even at {}/s", crate::report::rate(b));
                }
                b / 2.0
            }
            (Some(g), Some(b)) => {
                if b / g - 1.0 <= s.tolerance {
                    break format!(
                        "the highest rate meeting the SLO is between {}/s and {}/s (within {:.0}%)",
                        crate::report::rate(g),
                        crate::report::rate(b),
                        s.tolerance * 100.0
                    );
                }
                (g + b) / 2.0
            }
            (None, None) => unreachable!("every step is good or bad"),
        };
    };
    let best = good.and_then(|g| steps.iter().find(|st| st.rate == g && st.met_slo));
    Ok(SearchReport {
        slo: s.slo.to_string(),
        max_rate: good,
        first_failing_rate: bad,
        concurrency: best.map(|b| b.throughput_rps * b.latency_ms.mean / 1e3),
        tolerance: s.tolerance,
        step_s,
        warmup_s,
        steps,
        conclusion,
        interrupted,
    })
}

fn cap(rate: f64, max: Option<f64>) -> f64 {
    max.map_or(rate, |m| rate.min(m))
}

impl SearchReport {
    pub fn text(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("  SLO       {}\n", self.slo));
        let mut by_rate: Vec<&Step> = self.steps.iter().collect();
        by_rate.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        s.push_str("  latency against load (each step's rate, in order of rate):\n");
        for st in by_rate {
            s.push_str(&format!("  {}\n", st.line()));
        }
        match self.max_rate {
            Some(m) => s.push_str(&format!(
                "  capacity  {}/s meets the SLO{}; about {:.1} requests in flight there (Little's law)\n",
                crate::report::rate(m),
                self.first_failing_rate
                    .map(|b| format!(", {}/s does not", crate::report::rate(b)))
                    .unwrap_or_default(),
                self.concurrency.unwrap_or(0.0)
            )),
            None => s.push_str("  capacity  no rate tried met the SLO\n"),
        }
        s.push_str(&format!("  {}\n", self.conclusion));
        s
    }

    /// The curve as CSV, one row per step in order of rate.
    pub fn csv(&self) -> String {
        let mut s = String::from(
            "rate,sent_rate,throughput_rps,p50_ms,p90_ms,p99_ms,max_ms,error_rate,met_slo\n",
        );
        let mut by_rate: Vec<&Step> = self.steps.iter().collect();
        by_rate.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        for st in by_rate {
            let l = &st.latency_ms;
            s.push_str(&format!(
                "{:.1},{:.1},{:.1},{:.3},{:.3},{:.3},{:.3},{:.5},{}\n",
                st.rate,
                st.sent_rate,
                st.throughput_rps,
                l.p50,
                l.p90,
                l.p99,
                l.max,
                st.error_rate,
                st.met_slo
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of a server with capacity `cap`/s: fast below it, slow above.
    fn fake_run(rate: f64, cap: f64) -> RunReport {
        let mut r: RunReport = serde_json::from_value(serde_json::json!({
            "load": {"model":"open","connections":1,"threads":1},
            "duration_s": 1.0, "warmup_s": 0.0, "requests": 1, "throughput_rps": rate.min(cap),
            "sent": 1, "requested_rate": rate, "sent_rate": rate, "late": 0, "unsent": 0,
            "in_flight_at_end": 0, "latency_ms": {"min":1.0,"mean":10.0,"stdev":0.0,"p50":10.0,"p90":10.0,"p95":10.0,"p99":10.0,"p99_9":10.0,"max":10.0},
            "status": {}, "errors": {}, "error_rate": 0.0, "bytes": {"received":0,"sent":0},
            "connections_opened": 1, "first_errors": [], "interrupted": false, "warnings": [],
            "timeline": [], "distribution": []
        }))
        .unwrap();
        if rate > cap {
            r.latency_ms.p99 = 1000.0;
        }
        r
    }

    fn search(start: f64) -> Search {
        Search {
            slo: Slo::parse("p99<100ms").unwrap(),
            start,
            max_rate: None,
            tolerance: 0.05,
            max_steps: 40,
        }
    }

    #[test]
    fn doubles_then_bisects_to_within_the_tolerance() {
        let r = find_max(
            &search(10.0),
            1.0,
            0.0,
            |rate| Ok(StepRun::Done(Box::new(fake_run(rate, 777.0)))),
            |_| {},
        )
        .unwrap();
        let (g, b) = (r.max_rate.unwrap(), r.first_failing_rate.unwrap());
        assert!(g <= 777.0 && b > 777.0 && b / g - 1.0 <= 0.05, "{g} {b}");
        let rates: Vec<f64> = r.steps.iter().map(|s| s.rate).take(8).collect();
        assert_eq!(&rates[..7], &[10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0]);
        assert!((r.concurrency.unwrap() - g * 0.01).abs() < 1e-9);
    }

    #[test]
    fn halves_when_the_first_step_already_fails() {
        let r = find_max(
            &search(1000.0),
            1.0,
            0.0,
            |rate| Ok(StepRun::Done(Box::new(fake_run(rate, 100.0)))),
            |_| {},
        )
        .unwrap();
        assert!(
            r.max_rate.unwrap() <= 100.0
                && r.first_failing_rate.unwrap() / r.max_rate.unwrap() - 1.0 <= 0.05
        );
        let r = find_max(
            &search(4.0),
            1.0,
            0.0,
            |rate| Ok(StepRun::Done(Box::new(fake_run(rate, 0.5)))),
            |_| {},
        )
        .unwrap();
        assert_eq!(r.max_rate, None);
        assert!(r.conclusion.contains("not met even at"), "{}", r.conclusion);
    }

    #[test]
    fn a_generator_that_cannot_keep_up_ends_the_search_and_says_so() {
        let r = find_max(
            &search(10.0),
            1.0,
            0.0,
            |rate| {
                let mut run = fake_run(rate, 1e9);
                run.sent_rate = rate.min(50.0);
                Ok(StepRun::Done(Box::new(run)))
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(r.max_rate, Some(40.0));
        assert!(
            r.conclusion.contains("could not send 80/s"),
            "{}",
            r.conclusion
        );
    }
}
