//! Named metric families with labels, and their Prometheus text exposition.

use crate::metrics::{Counter, Gauge, Histogram, LatencyBounds, UpDownCounter};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// A value read when the metrics are rendered (the process's CPU time, its memory).
pub type ReadFn = Arc<dyn Fn() -> f64 + Send + Sync>;

#[derive(Clone)]
enum Metric {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
    UpDown(Arc<UpDownCounter>),
    Histogram(Arc<Histogram>),
    Read(ReadFn),
}

impl std::fmt::Debug for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Metric::Counter(c) => c.fmt(f),
            Metric::Gauge(g) => g.fmt(f),
            Metric::UpDown(g) => g.fmt(f),
            Metric::Histogram(h) => h.fmt(f),
            Metric::Read(_) => f.write_str("Read"),
        }
    }
}

/// The two text formats `/metrics` speaks, chosen by the scraper's `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4, the default.
    Prometheus,
    /// OpenMetrics 1.0 text: counter families named without `_total`, `# EOF` at the end.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when `accept` asks for `application/openmetrics-text` (as Prometheus
    /// does when it can take it), else the Prometheus text format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

#[derive(Debug)]
struct Series {
    /// The label pairs as given, for [`Registry::remove_series`] to match exactly.
    labels: Vec<(String, String)>,
    metric: Metric,
}

#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: &'static str,
    /// Rendered label set (`route="api",status="2xx"`) to series.
    series: BTreeMap<String, Series>,
}

/// All metrics of the process. Get-or-create: asking twice for the same name and labels
/// returns the same metric, so a reload keeps counting where it was. The lock is taken only
/// when metrics are created (at reload) and rendered (on scrape), never per request.
///
/// Counters, up-down counters and histograms get one shard per worker thread (see
/// [`crate::set_worker`]): `with_shards(workers + 1)`, the extra one for every other thread.
#[derive(Debug)]
pub struct Registry {
    shards: usize,
    /// The bounds of every histogram it makes (`[watch] latency_buckets`).
    bounds: LatencyBounds,
    families: Mutex<BTreeMap<&'static str, Family>>,
}

impl Default for Registry {
    /// One shard: every thread shares it. For tests and one-thread use.
    fn default() -> Self {
        Registry::with_shards(1)
    }
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
    /// A registry with one shard per metric (see [`Registry::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry whose sharded metrics have `shards` shards (at least one): workers + 1,
    /// so that each worker writes its own and every other thread the last. Memory: about
    /// 128 bytes per shard per counter, 256 per histogram (x86-64).
    pub fn with_shards(shards: usize) -> Self {
        Registry {
            shards: shards.max(1),
            bounds: LatencyBounds::default(),
            families: Mutex::default(),
        }
    }

    /// The same registry, its histograms with `bounds` (set before any is made).
    pub fn with_latency_bounds(mut self, bounds: LatencyBounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// The bounds of its histograms.
    pub fn latency_bounds(&self) -> &LatencyBounds {
        &self.bounds
    }

    /// The number of shards each sharded metric has.
    pub fn shards(&self) -> usize {
        self.shards
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
            .or_insert_with(|| Series {
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                metric: make(),
            })
            .metric
            .clone()
    }

    /// Panics if `name` was registered with another type (a programming error).
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Arc<Counter> {
        let shards = self.shards;
        match self.get_or_insert(name, help, "counter", labels, || {
            Metric::Counter(Arc::new(Counter::with_shards(shards)))
        }) {
            Metric::Counter(c) => c,
            _ => panic!("metric {name} registered with two types"),
        }
    }

    /// A gauge on one atomic (not sharded). Panics if `name` has another type.
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

    /// A sharded gauge that only goes up and down, rendered as a Prometheus gauge.
    /// Panics if `name` has another type.
    pub fn up_down_counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Arc<UpDownCounter> {
        let shards = self.shards;
        match self.get_or_insert(name, help, "gauge", labels, || {
            Metric::UpDown(Arc::new(UpDownCounter::with_shards(shards)))
        }) {
            Metric::UpDown(g) => g,
            _ => panic!("metric {name} registered with two types"),
        }
    }

    /// Panics if `name` has another type.
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Arc<Histogram> {
        let shards = self.shards;
        match self.get_or_insert(name, help, "histogram", labels, || {
            Metric::Histogram(Arc::new(Histogram::with_bounds(
                self.bounds.clone(),
                shards,
            )))
        }) {
            Metric::Histogram(h) => h,
            _ => panic!("metric {name} registered with two types"),
        }
    }

    /// A value read at every render by `read` (cheap, never blocking for long): `kind` is
    /// "counter" or "gauge". Registering the same name and labels again keeps the first.
    pub fn read_fn(
        &self,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        labels: &[(&str, &str)],
        read: ReadFn,
    ) {
        self.get_or_insert(name, help, kind, labels, || Metric::Read(read));
    }

    /// Drops, in every family, the series whose labels include every pair of `labels`:
    /// `&[("service", "a"), ("replica", "10.0.0.1:80")]` forgets that replica of service
    /// `a` only, `&[("route", "api")]` every series of route `api`. An empty `labels`
    /// removes nothing. Metrics already handed out keep counting, unseen.
    pub fn remove_series(&self, labels: &[(&str, &str)]) {
        if labels.is_empty() {
            return;
        }
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        for f in families.values_mut() {
            f.series.retain(|_, s| {
                !labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            });
        }
    }

    /// The Prometheus text exposition format (version 0.0.4). Cost: reads every shard of
    /// every series, under the registry's lock.
    pub fn render(&self) -> String {
        self.render_as(Format::Prometheus)
    }

    /// Every metric in `format`. In OpenMetrics a counter's family drops its `_total`
    /// (which its sample keeps) and the text ends with `# EOF`.
    pub fn render_as(&self, format: Format) -> String {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(16 << 10);
        for (name, f) in families.iter() {
            let family = match format {
                Format::OpenMetrics if f.kind == "counter" => {
                    name.strip_suffix("_total").unwrap_or(name)
                }
                _ => name,
            };
            let _ = writeln!(
                out,
                "# HELP {family} {}\n# TYPE {family} {}",
                escape_help(f.help),
                f.kind
            );
            let sample_name = match format {
                Format::OpenMetrics if f.kind == "counter" => format!("{family}_total"),
                _ => name.to_string(),
            };
            let name = sample_name.as_str();
            for (labels, series) in &f.series {
                let braced = |extra: &str| -> String {
                    match (labels.is_empty(), extra.is_empty()) {
                        (true, true) => String::new(),
                        (true, false) => format!("{{{extra}}}"),
                        (false, true) => format!("{{{labels}}}"),
                        (false, false) => format!("{{{labels},{extra}}}"),
                    }
                };
                match &series.metric {
                    Metric::Counter(c) => {
                        let _ = writeln!(out, "{name}{} {}", braced(""), c.get());
                    }
                    Metric::Gauge(g) => {
                        let _ = writeln!(out, "{name}{} {}", braced(""), g.get());
                    }
                    Metric::UpDown(g) => {
                        let _ = writeln!(out, "{name}{} {}", braced(""), g.get());
                    }
                    Metric::Read(read) => {
                        let _ = writeln!(out, "{name}{} {}", braced(""), read());
                    }
                    Metric::Histogram(h) => {
                        // One read of the shards: the buckets, +Inf and _count agree.
                        let totals = h.totals();
                        let mut cumulative = 0u64;
                        let bounds = h.bounds().seconds();
                        for (i, b) in totals.buckets.iter().enumerate() {
                            cumulative = cumulative.wrapping_add(*b);
                            let le = bounds.get(i).map_or("+Inf".to_string(), |s| s.to_string());
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {cumulative}",
                                braced(&format!("le=\"{le}\""))
                            );
                        }
                        let sum = totals.sum_us as f64 / 1e6;
                        let _ = writeln!(out, "{name}_sum{} {sum}", braced(""));
                        let _ = writeln!(out, "{name}_count{} {cumulative}", braced(""));
                    }
                }
            }
        }
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

/// HELP text with `\` and newlines escaped, as both formats require.
fn escape_help(help: &str) -> std::borrow::Cow<'_, str> {
    if help.contains(['\\', '\n']) {
        help.replace('\\', "\\\\").replace('\n', "\\n").into()
    } else {
        help.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let r = Registry::new();
        r.counter("req_total", "Requests.\nAll of them.", &[("route", "a")])
            .inc();
        r.gauge("up", "Up.", &[]).set(1);
        let om = r.render_as(Format::OpenMetrics);
        assert!(om.contains("# TYPE req counter\n"), "{om}");
        assert!(om.contains("# HELP req Requests.\\nAll of them.\n"), "{om}");
        assert!(om.contains("req_total{route=\"a\"} 1\n"), "{om}");
        assert!(om.contains("# TYPE up gauge\nup 1\n"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let text = r.render();
        assert!(text.contains("# TYPE req_total counter\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
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
    fn sharded_metrics_render_the_sum_of_their_shards() {
        let r = Registry::with_shards(3);
        let c = r.counter("c_total", "c", &[]);
        let g = r.up_down_counter("inflight", "g", &[]);
        let h = r.histogram("h_seconds", "h", &[]);
        std::thread::scope(|s| {
            for w in 0..2 {
                let (c, g, h) = (&c, &g, &h);
                s.spawn(move || {
                    crate::set_worker(w);
                    c.add(10);
                    g.inc();
                    h.observe(Duration::from_millis(1));
                });
            }
        });
        c.inc();
        let text = r.render();
        assert!(text.contains("c_total 21\n"), "{text}");
        assert!(
            text.contains("# TYPE inflight gauge\ninflight 2\n"),
            "{text}"
        );
        assert!(text.contains("h_seconds_count 2\n"), "{text}");
        assert!(text.contains("h_seconds_sum 0.002\n"), "{text}");
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
        r.remove_series(&[("replica", "a:1")]);
        let text = r.render();
        assert!(!text.contains("a:1") && text.contains("b:1"), "{text}");
    }

    /// Two services share a replica address; one drops it, the other's series stay.
    #[test]
    fn removing_a_replica_of_one_service_keeps_the_other_services_series() {
        let r = Registry::new();
        for service in ["a", "b"] {
            let labels = [("service", service), ("replica", "10.0.0.1:80")];
            r.gauge("headroom_replica_healthy", "h", &labels).set(1);
            r.counter("headroom_replica_ejections_total", "e", &labels)
                .inc();
        }
        r.remove_series(&[("service", "a"), ("replica", "10.0.0.1:80")]);
        let text = r.render();
        for family in [
            "headroom_replica_healthy",
            "headroom_replica_ejections_total",
        ] {
            assert!(
                !text.contains(&format!("{family}{{service=\"a\"")),
                "{text}"
            );
            assert!(
                text.contains(&format!(
                    "{family}{{service=\"b\",replica=\"10.0.0.1:80\"}} 1"
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn one_label_pair_removes_every_series_that_carries_it() {
        let r = Registry::new();
        for (route, class) in [("api", "2xx"), ("api", "5xx"), ("web", "2xx")] {
            r.counter("req_total", "r", &[("route", route), ("class", class)])
                .inc();
        }
        r.histogram("lat_seconds", "l", &[("route", "api")]);
        // A value that only looks like a pair of the label set must not match.
        r.counter("req_total", "r", &[("route", "x,route=\"api\"")])
            .inc();
        r.remove_series(&[("route", "api")]);
        r.remove_series(&[]);
        let text = r.render();
        assert!(!text.contains("route=\"api\",") && !text.contains("{route=\"api\"}"));
        assert!(
            text.contains("req_total{route=\"web\",class=\"2xx\"} 1"),
            "{text}"
        );
        assert!(text.contains("x,route=\\\"api\\\""), "{text}");
    }
}
