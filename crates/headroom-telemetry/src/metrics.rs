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

/// Upper bounds of the latency buckets, in seconds (Prometheus' `le`).
/// Chosen to resolve both a loopback hop (~100 µs) and a slow backend (seconds).
pub const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// [`LATENCY_BUCKETS_SECONDS`] in microseconds, the unit `observe` compares in.
const BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Buckets per histogram: the 16 bounds and +Inf.
pub(crate) const BUCKETS: usize = 17;

#[derive(Debug, Default)]
struct HistogramShard {
    /// Non-cumulative counts per bucket; the last one is +Inf.
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

/// A latency histogram with fixed buckets, one shard per worker. Cost of `observe`: a scan
/// of the bounds up to the sample's bucket and two relaxed atomic adds on the worker's own
/// cache lines; no lock. The count is not stored: it is the sum of the buckets.
/// `Default` has one shard.
#[derive(Debug)]
pub struct Histogram(Shards<HistogramShard>);

impl Default for Histogram {
    fn default() -> Self {
        Histogram::with_shards(1)
    }
}

/// Bucket counts (non-cumulative) and the sum in microseconds, summed over shards.
pub(crate) struct HistogramTotals {
    pub(crate) buckets: [u64; BUCKETS],
    pub(crate) sum_us: u64,
}

impl Histogram {
    pub fn with_shards(shards: usize) -> Self {
        Histogram(Shards::new(shards))
    }

    pub fn observe(&self, d: Duration) {
        let us = d
            .as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from(d.subsec_micros()));
        let i = BOUNDS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKETS - 1);
        let shard = self.0.local();
        shard.buckets[i].fetch_add(1, Relaxed);
        shard.sum_us.fetch_add(us, Relaxed);
    }

    pub(crate) fn totals(&self) -> HistogramTotals {
        let mut t = HistogramTotals {
            buckets: [0; BUCKETS],
            sum_us: 0,
        };
        for s in self.0.iter() {
            for (total, b) in t.buckets.iter_mut().zip(&s.buckets) {
                *total = total.wrapping_add(b.load(Relaxed));
            }
            t.sum_us = t.sum_us.wrapping_add(s.sum_us.load(Relaxed));
        }
        t
    }

    /// Counts per bucket (not cumulative; the last is +Inf), summed over every shard: one
    /// more than [`LATENCY_BUCKETS_SECONDS`].
    pub fn bucket_counts(&self) -> Vec<u64> {
        self.totals().buckets.to_vec()
    }

    /// Samples observed, over every shard.
    pub fn count(&self) -> u64 {
        self.totals()
            .buckets
            .iter()
            .fold(0u64, |t, c| t.wrapping_add(*c))
    }

    /// Estimated quantile `q` (0..=1) in seconds, by linear interpolation inside the bucket.
    /// Cost: reads every shard.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let counts = self.totals().buckets;
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            if seen + c >= rank {
                let lo = if i == 0 {
                    0.0
                } else {
                    LATENCY_BUCKETS_SECONDS[i - 1]
                };
                let hi = *LATENCY_BUCKETS_SECONDS
                    .get(i)
                    .unwrap_or(&LATENCY_BUCKETS_SECONDS[15]);
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
    fn bounds_in_microseconds_match_the_bounds_in_seconds() {
        let from_seconds = LATENCY_BUCKETS_SECONDS.map(|s| (s * 1e6).round() as u64);
        assert_eq!(BOUNDS_US, from_seconds);
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
        assert_eq!(h.totals().buckets[BUCKETS - 1], 1);
        assert_eq!(h.count(), 1);
    }
}
