//! What a run records: latencies in an HdrHistogram (nanoseconds, 3 significant digits, up
//! to an hour), status codes, errors by kind and bytes. Each worker thread records into its
//! own `Recorder` with no lock; the runner merges them once per interval.

use crate::connect::{ErrorKind, Failure};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency kept exactly; longer ones are recorded as this.
const MAX_NS: u64 = 3_600_000_000_000;
/// Distinct error messages kept to show the user.
const KEPT_ERRORS: usize = 5;

pub fn histogram() -> Histogram<u64> {
    // Valid bounds (1 ≤ low, high ≥ 2·low, 3 digits): `new_with_bounds` cannot fail on them.
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("constant histogram bounds are valid")
}

/// One worker's record of one interval (or, merged, of a whole run).
#[derive(Clone)]
pub struct Recorder {
    pub latency: Histogram<u64>,
    /// Responses by status code; index 0 holds codes outside 100..=599.
    pub status: Box<[u64; 600]>,
    pub errors: [u64; ErrorKind::ALL.len()],
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Requests started.
    pub sent: u64,
    /// Open loop: requests that waited more than 1 ms for a free connection after they
    /// were due (their wait counts in their latency).
    pub late: u64,
    /// Connections opened.
    pub connects: u64,
    /// The first few distinct error messages.
    pub first_errors: Vec<String>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            latency: histogram(),
            status: Box::new([0; 600]),
            errors: [0; ErrorKind::ALL.len()],
            bytes_in: 0,
            bytes_out: 0,
            sent: 0,
            late: 0,
            connects: 0,
            first_errors: Vec::new(),
        }
    }
}

impl Recorder {
    pub fn response(&mut self, latency_ns: u64, status: u16, bytes_in: u64, bytes_out: u64) {
        self.latency.saturating_record(latency_ns.max(1));
        let i = if (100..600).contains(&status) {
            status as usize
        } else {
            0
        };
        self.status[i] += 1;
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
    }

    pub fn error(&mut self, f: Failure) {
        self.errors[f.kind.index()] += 1;
        if self.first_errors.len() < KEPT_ERRORS && !self.first_errors.contains(&f.detail) {
            self.first_errors.push(f.detail);
        }
    }

    pub fn merge(&mut self, o: &Recorder) {
        // Same bounds on both sides: `add` cannot fail.
        let _ = self.latency.add(&o.latency);
        for (a, b) in self.status.iter_mut().zip(o.status.iter()) {
            *a += b;
        }
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.sent += o.sent;
        self.late += o.late;
        self.connects += o.connects;
        for e in &o.first_errors {
            if self.first_errors.len() < KEPT_ERRORS && !self.first_errors.contains(e) {
                self.first_errors.push(e.clone());
            }
        }
    }

    /// Responses received, whatever their status.
    pub fn responses(&self) -> u64 {
        self.status.iter().sum()
    }

    /// Requests that got no response.
    pub fn failures(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Failed requests and 5xx responses: what an SLO counts as errors.
    pub fn errors(&self) -> u64 {
        self.failures() + self.status[500..].iter().sum::<u64>()
    }

    /// Errors over everything that ended (responses and failures); 0 when nothing ended.
    pub fn error_rate(&self) -> f64 {
        let ended = self.responses() + self.failures();
        if ended == 0 {
            0.0
        } else {
            self.errors() as f64 / ended as f64
        }
    }

    /// The latency at quantile `q` (0.0–1.0), in milliseconds; 0 with no response.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latency.is_empty() {
            return 0.0;
        }
        self.latency.value_at_quantile(q) as f64 / 1e6
    }

    /// Status codes seen, in order, with their counts.
    pub fn statuses(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.status
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(code, &n)| (code as u16, n))
    }
}

impl crate::slo::Measured for Recorder {
    fn quantile_ms(&self, q: f64) -> f64 {
        Recorder::quantile_ms(self, q)
    }
    fn mean_ms(&self) -> f64 {
        if self.latency.is_empty() {
            0.0
        } else {
            self.latency.mean() / 1e6
        }
    }
    fn max_ms(&self) -> f64 {
        self.latency.max() as f64 / 1e6
    }
    fn error_rate(&self) -> f64 {
        Recorder::error_rate(self)
    }
}

/// One interval of the run's timeline.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Row {
    /// Start of the interval, in seconds from the start of the run.
    pub t_s: f64,
    pub requests: u64,
    pub rps: f64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Row {
    pub fn of(rec: &Recorder, t_s: f64, seconds: f64) -> Row {
        let requests = rec.responses();
        Row {
            t_s,
            requests,
            rps: if seconds > 0.0 {
                requests as f64 / seconds
            } else {
                0.0
            },
            errors: rec.errors(),
            p50_ms: rec.quantile_ms(0.5),
            p90_ms: rec.quantile_ms(0.9),
            p99_ms: rec.quantile_ms(0.99),
            max_ms: rec.latency.max() as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_count_failures_and_5xx_but_not_4xx() {
        let mut r = Recorder::default();
        r.response(1_000_000, 200, 10, 5);
        r.response(2_000_000, 404, 10, 5);
        r.response(3_000_000, 503, 10, 5);
        r.error(Failure::new(ErrorKind::Timeout, "t"));
        assert_eq!((r.responses(), r.failures(), r.errors()), (3, 1, 2));
        assert_eq!(r.error_rate(), 0.5);
        assert_eq!(
            r.statuses().collect::<Vec<_>>(),
            vec![(200, 1), (404, 1), (503, 1)]
        );
    }

    #[test]
    fn an_slo_reads_any_percentile_from_the_histogram() {
        use crate::slo::{Measured, Slo};
        let mut r = Recorder::default();
        for ms in 1..=100u64 {
            r.response(ms * 1_000_000, 200, 0, 0);
        }
        assert!((Measured::quantile_ms(&r, 0.98) - 98.0).abs() < 0.1);
        let v = Slo::parse("p98<98.5ms,p97<97ms").unwrap().check(&r);
        assert_eq!((v[0].met, v[1].met), (true, false));
    }

    #[test]
    fn merging_adds_everything_and_keeps_few_messages() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for i in 0..10 {
            a.response(1_000_000, 200, 1, 1);
            b.error(Failure::new(ErrorKind::Reset, format!("reset {i}")));
        }
        a.merge(&b);
        assert_eq!(
            (a.responses(), a.errors[ErrorKind::Reset.index()]),
            (10, 10)
        );
        assert_eq!(a.first_errors.len(), KEPT_ERRORS);
        assert!((a.quantile_ms(0.99) - 1.0).abs() < 0.001);
    }
}
