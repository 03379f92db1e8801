//! Counters, gauges and histograms on atomics. The ones bumped per request are sharded per
//! worker ([`crate::shard`]); a gauge that is set, or read on the hot path, is one atomic.

use crate::shard::Shards;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A monotonically increasing count, one shard per worker.
/// Cost: a thread-local read and one relaxed atomic add on the worker's own cache line;
/// [`Counter::get`] sums the shards. `Default` has one shard (for tests and one-thread use).
#[derive(Debug)]
pub struct Counter(Shards<AtomicU64>);

impl Default for Counter {
    fn default() -> Self {
        Counter::with_shards(1)
    }
}

impl Counter {
    /// A counter with `shards` shards (at least one); see `Registry::with_shards`.
    pub fn with_shards(shards: usize) -> Self {
        Counter(Shards::new(shards))
    }

    pub fn inc(&self) {
        self.0.local().fetch_add(1, Relaxed);
    }

    pub fn add(&self, n: u64) {
        self.0.local().fetch_add(n, Relaxed);
    }

    /// The total over every shard.
    pub fn get(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |t, s| t.wrapping_add(s.load(Relaxed)))
    }
}

/// A value that is set, or goes up and down, as one atomic that everybody shares: health,
/// open connections, a replica's in-flight count. The last must stay one atomic: the
/// balancer reads it on every pick (power of two choices), and a sharded value would make
/// each pick read every worker's shard. For a count that is only incremented and
/// decremented per request and read on scrape, use [`UpDownCounter`].
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// A gauge that only goes up and down (OpenTelemetry's name), one shard per worker: the
/// process-wide in-flight request count. It has no `set` (a shard cannot be set to a
/// total). A request counted up on one thread and down on another leaves one shard above
/// and one below zero; the sum, which [`UpDownCounter::get`] and `/metrics` show, is right.
/// Cost: as [`Counter`].
#[derive(Debug)]
pub struct UpDownCounter(Shards<AtomicI64>);

impl Default for UpDownCounter {
    fn default() -> Self {
        UpDownCounter::with_shards(1)
    }
}

impl UpDownCounter {
    pub fn with_shards(shards: usize) -> Self {
        UpDownCounter(Shards::new(shards))
    }

    pub fn inc(&self) {
        self.0.local().fetch_add(1, Relaxed);
    }

    pub fn dec(&self) {
        self.0.local().fetch_sub(1, Relaxed);
    }

    /// The total over every shard.
    pub fn get(&self) -> i64 {
        self.0
            .iter()
            .fold(0i64, |t, s| t.wrapping_add(s.load(Relaxed)))
    }
}

/// The default upper bounds of the latency buckets, in seconds (Prometheus' `le`).
/// Chosen to resolve both a loopback hop (~100 µs) and a slow backend (seconds).
pub const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Most latency bounds a histogram takes (`[watch] latency_buckets`): twice the default's 16.
pub const MAX_LATENCY_BOUNDS: usize = 32;

/// Buckets per histogram at most: the bounds and +Inf.
pub(crate) const MAX_BUCKETS: usize = MAX_LATENCY_BOUNDS + 1;

/// The latency buckets' upper bounds, in seconds and in the microseconds `observe` compares
/// in; shared by every histogram of a registry (cloning is an `Arc` bump).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyBounds {
    seconds: std::sync::Arc<[f64]>,
    us: std::sync::Arc<[u64]>,
}

impl Default for LatencyBounds {
    fn default() -> Self {
        LatencyBounds::new(&LATENCY_BUCKETS_SECONDS).expect("the default bounds are valid")
    }
}

impl LatencyBounds {
    /// Bounds in seconds: 1 to [`MAX_LATENCY_BOUNDS`] of them, each at least 1 µs, whole
    /// microseconds, strictly increasing. The error says which rule failed.
    pub fn new(seconds: &[f64]) -> Result<LatencyBounds, String> {
        if seconds.is_empty() {
            return Err("no bounds given".into());
        }
        if seconds.len() > MAX_LATENCY_BOUNDS {
            return Err(format!(
                "{} bounds given, at most {MAX_LATENCY_BOUNDS}",
                seconds.len()
            ));
        }
        let mut us = Vec::with_capacity(seconds.len());
        for s in seconds {
            let u = s * 1e6;
            if !u.is_finite() || u < 1.0 || (u - u.round()).abs() > 1e-6 {
                return Err(format!(
                    "{s} s is not a whole number of microseconds from 1 µs up"
                ));
            }
            us.push(u.round() as u64);
        }
        if let Some(w) = us.windows(2).find(|w| w[0] >= w[1]) {
            return Err(format!(
                "bounds must increase: {} s then {} s",
                w[0] as f64 / 1e6,
                w[1] as f64 / 1e6
            ));
        }
        Ok(LatencyBounds {
            seconds: seconds.into(),
            us: us.into(),
        })
    }

    /// The bounds in seconds, lowest first (without +Inf).
    pub fn seconds(&self) -> &[f64] {
        &self.seconds
    }

    /// Buckets a histogram with these bounds has: one more, for +Inf.
    pub fn buckets(&self) -> usize {
        self.us.len() + 1
    }
}

#[derive(Debug)]
struct HistogramShard {
    /// Non-cumulative counts per bucket; the one after the last bound is +Inf. Inline, so a
    /// worker's shard stays on its own padded cache lines whatever the bounds.
    buckets: [AtomicU64; MAX_BUCKETS],
    sum_us: AtomicU64,
}

impl Default for HistogramShard {
    fn default() -> Self {
        HistogramShard {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// A latency histogram with fixed buckets ([`LatencyBounds`]), one shard per worker. Cost of
/// `observe`: a scan of the bounds up to the sample's bucket and two relaxed atomic adds on
/// the worker's own cache lines; no lock. The count is not stored: it is the sum of the
/// buckets. `Default` has one shard and the default bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: LatencyBounds,
    shards: Shards<HistogramShard>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::with_shards(1)
    }
}

/// Bucket counts (non-cumulative, `bounds + 1` of them) and the sum in microseconds, summed
/// over shards.
pub(crate) struct HistogramTotals {
    pub(crate) buckets: Vec<u64>,
    pub(crate) sum_us: u64,
}

impl Histogram {
    /// A histogram with the default bounds.
    pub fn with_shards(shards: usize) -> Self {
        Histogram::with_bounds(LatencyBounds::default(), shards)
    }

    pub fn with_bounds(bounds: LatencyBounds, shards: usize) -> Self {
        Histogram {
            bounds,
            shards: Shards::new(shards),
        }
    }

    /// Its bounds.
    pub fn bounds(&self) -> &LatencyBounds {
        &self.bounds
    }

    pub fn observe(&self, d: Duration) {
        let us = d
            .as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from(d.subsec_micros()));
        let bounds = &self.bounds.us;
        let i = bounds.iter().position(|b| us <= *b).unwrap_or(bounds.len());
        let shard = self.shards.local();
        shard.buckets[i].fetch_add(1, Relaxed);
        shard.sum_us.fetch_add(us, Relaxed);
    }

    pub(crate) fn totals(&self) -> HistogramTotals {
        let mut t = HistogramTotals {
            buckets: vec![0; self.bounds.buckets()],
            sum_us: 0,
        };
        for s in self.shards.iter() {
            for (total, b) in t.buckets.iter_mut().zip(&s.buckets) {
                *total = total.wrapping_add(b.load(Relaxed));
            }
            t.sum_us = t.sum_us.wrapping_add(s.sum_us.load(Relaxed));
        }
        t
    }

    /// Counts per bucket (not cumulative; the last is +Inf), summed over every shard: one
    /// more than the bounds.
    pub fn bucket_counts(&self) -> Vec<u64> {
        self.totals().buckets
    }

    /// Samples observed, over every shard.
    pub fn count(&self) -> u64 {
        self.totals()
            .buckets
            .iter()
            .fold(0u64, |t, c| t.wrapping_add(*c))
    }

    /// Estimated quantile `q` (0..=1) in seconds, by linear interpolation inside the bucket
    /// (the +Inf bucket reads as its lower bound). Cost: reads every shard.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let counts = self.totals().buckets;
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let bounds = self.bounds.seconds();
        let last = bounds[bounds.len() - 1];
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            if seen + c >= rank {
                let lo = if i == 0 { 0.0 } else { bounds[i - 1] };
                let hi = *bounds.get(i).unwrap_or(&last);
                let frac = (rank - seen) as f64 / (*c).max(1) as f64;
                return Some(lo + (hi - lo) * frac);
            }
            seen += c;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::set_worker;
    use std::sync::Arc;

    #[test]
    fn the_default_bounds_in_microseconds() {
        let b = LatencyBounds::default();
        assert_eq!(b.us[0], 100);
        assert_eq!(b.us[15], 10_000_000);
        assert_eq!(b.buckets(), 17);
    }

    #[test]
    fn bad_bounds_are_refused_with_the_rule_they_break() {
        let err = |b: &[f64]| LatencyBounds::new(b).unwrap_err();
        assert_eq!(err(&[]), "no bounds given");
        assert!(err(&[0.1, 0.05]).contains("must increase"));
        assert!(err(&[0.1, 0.1]).contains("must increase"));
        assert!(err(&[0.0]).contains("microseconds"));
        assert!(err(&[f64::NAN]).contains("microseconds"));
        assert!(err(&[1e-7]).contains("microseconds"));
        assert!(err(&[0.001; 33]).contains("at most 32"));
        let max: Vec<f64> = (1..=32).map(|i| i as f64 / 1000.0).collect();
        assert_eq!(LatencyBounds::new(&max).unwrap().buckets(), 33);
    }

    /// A histogram with its own bounds counts into them, renders them and reads its
    /// quantiles from them; a sample past the last bound is +Inf.
    #[test]
    fn custom_bounds_are_counted_into() {
        let h = Histogram::with_bounds(LatencyBounds::new(&[0.3, 0.6]).unwrap(), 1);
        h.observe(Duration::from_millis(300));
        h.observe(Duration::from_millis(301));
        h.observe(Duration::from_secs(5));
        assert_eq!(h.bucket_counts(), vec![1, 1, 1]);
        let p50 = h.quantile(0.5).unwrap();
        assert!((0.3..=0.6).contains(&p50), "{p50}");
        assert_eq!(h.quantile(1.0), Some(0.6));
    }

    #[test]
    fn quantile_lands_in_the_right_bucket() {
        let h = Histogram::default();
        for _ in 0..99 {
            h.observe(Duration::from_micros(800));
        }
        h.observe(Duration::from_secs(2));
        let p50 = h.quantile(0.5).unwrap();
        assert!((0.0005..=0.001).contains(&p50), "{p50}");
        assert!(h.quantile(1.0).unwrap() > 1.0);
    }

    /// Each worker thread writes its own shard; every read sums them all.
    #[test]
    fn reads_sum_what_every_worker_wrote() {
        let c = Arc::new(Counter::with_shards(3));
        let g = Arc::new(UpDownCounter::with_shards(3));
        let h = Arc::new(Histogram::with_shards(3));
        let threads: Vec<_> = (0..2)
            .map(|w| {
                let (c, g, h) = (c.clone(), g.clone(), h.clone());
                std::thread::spawn(move || {
                    set_worker(w);
                    for _ in 0..1000 {
                        c.inc();
                        g.inc();
                        h.observe(Duration::from_micros(200));
                    }
                    // Requests that started on the other worker end here.
                    for _ in 0..300 {
                        g.dec();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        c.add(5); // this thread is no worker: the shared last shard
        let shard_totals: Vec<u64> = c.0.iter().map(|s| s.load(Relaxed)).collect();
        assert_eq!(shard_totals, [1000, 1000, 5]);
        assert_eq!(c.get(), 2005);
        assert_eq!(g.get(), 1400);
        assert_eq!(h.count(), 2000);
        assert_eq!(h.totals().sum_us, 2000 * 200);
        let p50 = h.quantile(0.5).unwrap();
        assert!((0.0001..=0.00025).contains(&p50), "{p50}");
    }

    #[test]
    fn a_very_long_sample_lands_in_the_inf_bucket_without_overflow() {
        let h = Histogram::default();
        h.observe(Duration::MAX);
        assert_eq!(h.totals().buckets[16], 1);
        assert_eq!(h.count(), 1);
    }
}
