//! Counters, gauges and histograms on atomics, grouped into named families with labels.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A monotonically increasing count. Cost: one relaxed atomic add.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down (in-flight requests, open connections, health).
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

/// Upper bounds of the latency buckets, in seconds (Prometheus' `le`).
/// Chosen to resolve both a loopback hop (~100 µs) and a slow backend (seconds).
pub const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A latency histogram with fixed buckets. Cost of `observe`: a scan of 16 bounds and
/// three relaxed atomic adds; no lock.
#[derive(Debug)]
pub struct Histogram {
    bounds_us: [u64; 16],
    /// Non-cumulative counts per bucket; the last one is +Inf.
    buckets: [AtomicU64; 17],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            bounds_us: LATENCY_BUCKETS_SECONDS.map(|s| (s * 1e6).round() as u64),
            buckets: Default::default(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = self.bounds_us.iter().position(|b| us <= *b).unwrap_or(16);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Estimated quantile `q` (0..=1) in seconds, by linear interpolation inside the bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
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

#[derive(Debug, Clone)]
enum Metric {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
    Histogram(Arc<Histogram>),
}

#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: &'static str,
    /// Rendered label set (`route="api",status="2xx"`) to metric.
    series: BTreeMap<String, Metric>,
}

/// All metrics of the process. Get-or-create: asking twice for the same name and labels
/// returns the same metric, so a reload keeps counting where it was. The lock is taken only
/// when metrics are created (at reload) and rendered (on scrape), never per request.
#[derive(Debug, Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    fn get_or_insert(
        &self,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> Metric,
    ) -> Metric {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        family
            .series
            .entry(render_labels(labels))
            .or_insert_with(make)
            .clone()
    }

    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Arc<Counter> {
        match self.get_or_insert(name, help, "counter", labels, || {
            Metric::Counter(Arc::default())
        }) {
            Metric::Counter(c) => c,
            _ => panic!("metric {name} registered with two types"),
        }
    }

    pub fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Arc<Gauge> {
        match self.get_or_insert(
            name,
            help,
            "gauge",
            labels,
            || Metric::Gauge(Arc::default()),
        ) {
            Metric::Gauge(g) => g,
            _ => panic!("metric {name} registered with two types"),
        }
    }

    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Arc<Histogram> {
        match self.get_or_insert(name, help, "histogram", labels, || {
            Metric::Histogram(Arc::default())
        }) {
            Metric::Histogram(h) => h,
            _ => panic!("metric {name} registered with two types"),
        }
    }

    /// Drops series whose labels contain `label="value"` (a replica removed by a reload).
    pub fn remove_series(&self, label: &str, value: &str) {
        let needle = render_labels(&[(label, value)]);
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        for f in families.values_mut() {
            f.series
                .retain(|k, _| !k.split(',').any(|part| part == needle));
        }
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(16 << 10);
        for (name, f) in families.iter() {
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {}", f.help, f.kind);
            for (labels, m) in &f.series {
                let braced = |extra: &str| -> String {
                    match (labels.is_empty(), extra.is_empty()) {
                        (true, true) => String::new(),
                        (true, false) => format!("{{{extra}}}"),
                        (false, true) => format!("{{{labels}}}"),
                        (false, false) => format!("{{{labels},{extra}}}"),
                    }
                };
                match m {
                    Metric::Counter(c) => {
                        let _ = writeln!(out, "{name}{} {}", braced(""), c.get());
                    }
                    Metric::Gauge(g) => {
                        let _ = writeln!(out, "{name}{} {}", braced(""), g.get());
                    }
                    Metric::Histogram(h) => {
                        let mut cumulative = 0;
                        for (i, b) in h.buckets.iter().enumerate() {
                            cumulative += b.load(Relaxed);
                            let le = LATENCY_BUCKETS_SECONDS
                                .get(i)
                                .map_or("+Inf".to_string(), |s| s.to_string());
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {cumulative}",
                                braced(&format!("le=\"{le}\""))
                            );
                        }
                        let sum = h.sum_us.load(Relaxed) as f64 / 1e6;
                        let _ = writeln!(out, "{name}_sum{} {sum}", braced(""));
                        let _ = writeln!(out, "{name}_count{} {}", braced(""), h.count());
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_and_labels_return_the_same_counter() {
        let r = Registry::new();
        r.counter("x_total", "x", &[("route", "a")]).inc();
        r.counter("x_total", "x", &[("route", "a")]).inc();
        r.counter("x_total", "x", &[("route", "b")]).inc();
        let text = r.render();
        assert!(text.contains("x_total{route=\"a\"} 2"), "{text}");
        assert!(text.contains("x_total{route=\"b\"} 1"), "{text}");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let r = Registry::new();
        let h = r.histogram("lat_seconds", "lat", &[]);
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let text = r.render();
        assert!(
            text.contains("lat_seconds_bucket{le=\"0.0001\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(text.contains("lat_seconds_bucket{le=\"+Inf\"} 3"), "{text}");
        assert!(text.contains("lat_seconds_count 3"), "{text}");
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

    #[test]
    fn label_values_are_escaped() {
        let r = Registry::new();
        r.gauge("g", "g", &[("v", "a\"b")]).set(3);
        assert!(r.render().contains("g{v=\"a\\\"b\"} 3"));
    }

    #[test]
    fn removed_series_disappear() {
        let r = Registry::new();
        r.gauge("g", "g", &[("replica", "a:1")]).set(1);
        r.gauge("g", "g", &[("replica", "b:1")]).set(1);
        r.remove_series("replica", "a:1");
        let text = r.render();
        assert!(!text.contains("a:1") && text.contains("b:1"), "{text}");
    }
}
