//! A run's results as a person reads them (a summary table), as scripts read them (JSON,
//! CSV), and as `--save` keeps them for `--compare`.

use crate::connect::ErrorKind;
use crate::engine::Outcome;
use crate::slo::{Measured, Verdict};
use crate::stats::Row;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The schema tag of the JSON output; bumped when a field changes meaning.
pub const SCHEMA: &str = "headroom-bench/1";

/// Everything a `headroom bench` invocation produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    /// `scheme://host:port`.
    pub target: String,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: String,
    /// A single run (without `--find-max`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub run: Option<RunReport>,
    /// A capacity search (`--find-max`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub search: Option<crate::search::SearchReport>,
}

/// How the load was made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoadReport {
    /// `closed` or `open`.
    pub model: String,
    /// Closed loop: connections; open loop: the most connections allowed.
    pub connections: usize,
    /// Open loop: the arrival rate at the start, per second.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rate: Option<f64>,
    /// Open loop with a ramp: the rate it ends at, and over how long.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ramp_to: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ramp_over_s: Option<f64>,
    pub threads: usize,
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct Transfer {
    pub received: u64,
    pub sent: u64,
}

/// One run's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub load: LoadReport,
    /// The measured window (after the warm-up), in seconds.
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Responses received in the window, whatever their status.
    pub requests: u64,
    /// Responses per second.
    pub throughput_rps: f64,
    /// Requests started in the window.
    pub sent: u64,
    /// Open loop: requests per second the schedule asked for, and how many it sent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub requested_rate: Option<f64>,
    pub sent_rate: f64,
    /// Open loop: requests that waited more than 1 ms for a free connection.
    pub late: u64,
    /// Open loop: requests due before the end that never started.
    pub unsent: u64,
    pub in_flight_at_end: u64,
    pub latency_ms: Latency,
    /// Responses by status code.
    pub status: BTreeMap<String, u64>,
    /// Requests that got no response, by why.
    pub errors: BTreeMap<String, u64>,
    /// Failed requests and 5xx responses over all that ended.
    pub error_rate: f64,
    pub bytes: Transfer,
    pub connections_opened: u64,
    /// The first few distinct error messages.
    pub first_errors: Vec<String>,
    /// Ctrl-C ended the run early: these are partial results.
    pub interrupted: bool,
    pub warnings: Vec<String>,
    /// The timeline's resolution, in seconds.
    #[serde(default)]
    pub interval_s: f64,
    pub timeline: Vec<Row>,
    /// The latency distribution: `[percentile, ms]` pairs, for plots.
    pub distribution: Vec<[f64; 2]>,
    /// How many responses took how long: `[upper bound in ms, count]`, in buckets spaced
    /// evenly on a log scale from the fastest response to the slowest.
    #[serde(default)]
    pub histogram: Vec<[f64; 2]>,
    /// `--slo`: each objective against this run.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub slo: Option<Vec<Verdict>>,
    /// `--against`: what headroom's own metrics saw during the run.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub headroom: Option<BTreeMap<String, f64>>,
}

impl Measured for RunReport {
    fn quantile_ms(&self, q: f64) -> f64 {
        // The distribution holds fixed percentiles; exact ones for the common objectives.
        let l = &self.latency_ms;
        match (q * 1000.0).round() as u64 {
            500 => l.p50,
            900 => l.p90,
            950 => l.p95,
            990 => l.p99,
            999 => l.p99_9,
            _ => self
                .distribution
                .iter()
                .find(|[p, _]| *p >= q * 100.0)
                .map_or(l.max, |[_, ms]| *ms),
        }
    }
    fn mean_ms(&self) -> f64 {
        self.latency_ms.mean
    }
    fn max_ms(&self) -> f64 {
        self.latency_ms.max
    }
    fn error_rate(&self) -> f64 {
        self.error_rate
    }
}

/// Buckets of the latency histogram the summary draws.
const HISTOGRAM_BUCKETS: u32 = 10;

/// `HISTOGRAM_BUCKETS` log-spaced buckets from the fastest response to the slowest.
fn histogram_buckets(h: &hdrhistogram::Histogram<u64>) -> Vec<[f64; 2]> {
    if h.is_empty() {
        return Vec::new();
    }
    let (lo, hi) = (h.min().max(1) as f64, h.max().max(1) as f64);
    let mut out = Vec::new();
    let mut below = h.lowest_equivalent(h.min());
    for k in 1..=HISTOGRAM_BUCKETS {
        let edge = (lo * (hi / lo).powf(k as f64 / HISTOGRAM_BUCKETS as f64)).round() as u64;
        let upper = if k == HISTOGRAM_BUCKETS {
            h.max()
        } else {
            edge.max(below)
        };
        // Values the histogram keeps as equal are counted in one bucket only.
        let upper = h.highest_equivalent(upper);
        let count = if upper >= below {
            h.count_between(below, upper)
        } else {
            0
        };
        out.push([upper as f64 / 1e6, count as f64]);
        below = upper + 1;
    }
    out
}

/// Percentiles the distribution lists: fine near the tail, where plots look.
fn distribution_points() -> Vec<f64> {
    let mut p: Vec<f64> = (0..=18).map(|i| i as f64 * 5.0).collect();
    p.extend([
        92.5, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95, 99.99, 99.999, 100.0,
    ]);
    p.dedup();
    p
}

impl RunReport {
    pub fn from_outcome(o: &Outcome, load: LoadReport, warmup_s: f64) -> RunReport {
        let t = &o.total;
        let secs = o.elapsed.as_secs_f64();
        let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let h = &t.latency;
        let ms = |ns: u64| ns as f64 / 1e6;
        let latency_ms = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                min: ms(h.min()),
                mean: h.mean() / 1e6,
                stdev: h.stdev() / 1e6,
                p50: t.quantile_ms(0.5),
                p90: t.quantile_ms(0.9),
                p95: t.quantile_ms(0.95),
                p99: t.quantile_ms(0.99),
                p99_9: t.quantile_ms(0.999),
                max: ms(h.max()),
            }
        };
        let distribution = if h.is_empty() {
            Vec::new()
        } else {
            distribution_points()
                .into_iter()
                .map(|p| [p, t.quantile_ms(p / 100.0)])
                .collect()
        };
        RunReport {
            load,
            duration_s: secs,
            warmup_s,
            requests: t.responses(),
            throughput_rps: per_s(t.responses()),
            sent: t.sent,
            requested_rate: o.due.map(per_s),
            sent_rate: per_s(t.sent),
            late: t.late,
            unsent: o.unsent,
            in_flight_at_end: o.in_flight_at_end,
            latency_ms,
            status: t.statuses().map(|(c, n)| (c.to_string(), n)).collect(),
            errors: ErrorKind::ALL
                .iter()
                .map(|k| (k.name().to_string(), t.errors[k.index()]))
                .collect(),
            error_rate: t.error_rate(),
            bytes: Transfer {
                received: t.bytes_in,
                sent: t.bytes_out,
            },
            connections_opened: t.connects,
            first_errors: t.first_errors.clone(),
            interrupted: o.interrupted,
            warnings: Vec::new(),
            interval_s: o.interval.as_secs_f64(),
            timeline: o.timeline.clone(),
            distribution,
            histogram: histogram_buckets(h),
            slo: None,
            headroom: None,
        }
    }

    /// Failed requests, all kinds together.
    pub fn failures(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The summary a person reads at the end of a run.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let l = &self.latency_ms;
        let _ = writeln!(
            s,
            "  requests  {} in {:.2}s: {} req/s{}",
            thousands(self.requests),
            self.duration_s,
            rate(self.throughput_rps),
            if self.interrupted {
                "  (interrupted: partial results)"
            } else {
                ""
            }
        );
        if let Some(r) = self.requested_rate {
            let _ = writeln!(
                s,
                "  sent      {} req/s of {} req/s due ({} waited > 1 ms for a connection, {} never sent)",
                rate(self.sent_rate),
                rate(r),
                thousands(self.late),
                thousands(self.unsent),
            );
        }
        if self.requests > 0 {
            let _ = writeln!(
                s,
                "  latency       p50      p90      p95      p99    p99.9      max     mean"
            );
            let _ = writeln!(
                s,
                "            {}{}{}{}{}{}{}",
                cell(l.p50),
                cell(l.p90),
                cell(l.p95),
                cell(l.p99),
                cell(l.p99_9),
                cell(l.max),
                cell(l.mean)
            );
            let total: f64 = self.histogram.iter().map(|[_, n]| n).sum();
            let most = self.histogram.iter().map(|[_, n]| *n).fold(0.0, f64::max);
            for [upper, n] in &self.histogram {
                let width = if most > 0.0 {
                    (n / most * 40.0).round() as usize
                } else {
                    0
                };
                // A bucket with any response shows, however thin.
                let bar = match (width, *n > 0.0) {
                    (0, true) => "▏".to_string(),
                    (w, _) => "█".repeat(w),
                };
                let _ = writeln!(
                    s,
                    "   ≤ {:>8} {:<40} {:>5.1}%",
                    duration_ms(*upper),
                    bar,
                    n / total.max(1.0) * 100.0
                );
            }
        }
        let statuses: Vec<String> = self
            .status
            .iter()
            .map(|(c, n)| format!("{c}: {}", thousands(*n)))
            .collect();
        let _ = writeln!(
            s,
            "  status    {}",
            if statuses.is_empty() {
                "no response".into()
            } else {
                statuses.join(", ")
            }
        );
        let errors: Vec<String> = self
            .errors
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {}", thousands(*n)))
            .collect();
        let _ = writeln!(
            s,
            "  errors    {}  (error rate {:.2}%, 5xx included)",
            if errors.is_empty() {
                "none".into()
            } else {
                errors.join(", ")
            },
            self.error_rate * 100.0
        );
        for e in &self.first_errors {
            let _ = writeln!(s, "            e.g. {e}");
        }
        let _ = writeln!(
            s,
            "  transfer  {} received, {} sent; {} connections opened, {} in flight at the end",
            bytes(self.bytes.received),
            bytes(self.bytes.sent),
            thousands(self.connections_opened),
            thousands(self.in_flight_at_end)
        );
        if let Some(slo) = &self.slo {
            let all = slo.iter().all(|v| v.met);
            let parts: Vec<String> = slo.iter().map(Verdict::describe).collect();
            let _ = writeln!(
                s,
                "  SLO       {}: {}",
                if all { "met" } else { "BROKEN" },
                parts.join("; ")
            );
        }
        if let Some(h) = &self.headroom {
            let parts: Vec<String> = h
                .iter()
                .map(|(k, v)| format!("{k} {}", short(*v)))
                .collect();
            let _ = writeln!(s, "  headroom  {}", parts.join(", "));
        }
        for w in &self.warnings {
            let _ = writeln!(s, "  warning:  {w}");
        }
        s
    }

    /// The timeline as CSV, one row per interval.
    pub fn csv(&self) -> String {
        let mut s = String::from("t_s,requests,rps,errors,p50_ms,p90_ms,p99_ms,max_ms\n");
        for r in &self.timeline {
            let _ = writeln!(
                s,
                "{},{},{:.1},{},{:.3},{:.3},{:.3},{:.3}",
                r.t_s, r.requests, r.rps, r.errors, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms
            );
        }
        s
    }
}

fn cell(ms: f64) -> String {
    format!("{:>9}", duration_ms(ms))
}

/// `0.84ms`, `12.3ms`, `1.20s`: three significant digits or so.
pub fn duration_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2}s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0}ms")
    } else if ms >= 10.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.2}ms")
    }
}

pub fn rate(r: f64) -> String {
    if r >= 100.0 || r.fract() == 0.0 {
        thousands(r.round() as u64)
    } else {
        format!("{r:.1}")
    }
}

pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && matches!((digits.len() - i) % 3, 0) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// A figure as the summary shows it: whole numbers with thousands separators.
pub fn short(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        thousands(v.abs() as u64)
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_hold_every_response_once_up_to_the_slowest() {
        let mut h = crate::stats::histogram();
        for ms in [1u64, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 1000] {
            h.record(ms * 1_000_000).unwrap();
        }
        let b = histogram_buckets(&h);
        assert_eq!(b.len(), HISTOGRAM_BUCKETS as usize);
        assert_eq!(b.iter().map(|[_, n]| n).sum::<f64>(), 13.0);
        assert!((b.last().unwrap()[0] - 1000.0).abs() < 1.0);
        assert!(b.windows(2).all(|w| w[0][0] < w[1][0]), "{b:?}");
        let mut one = crate::stats::histogram();
        one.record(5_000_000).unwrap();
        assert_eq!(
            histogram_buckets(&one).iter().map(|[_, n]| n).sum::<f64>(),
            1.0
        );
    }

    #[test]
    fn numbers_read_like_a_person_writes_them() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(duration_ms(0.8412), "0.84ms");
        assert_eq!(duration_ms(12.34), "12.3ms");
        assert_eq!(duration_ms(1200.0), "1.20s");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(rate(52_345.6), "52,346");
    }
}
