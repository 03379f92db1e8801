//! A route's slow requests: which paths its tail is made of.
//!
//! Each route has a "slow" threshold, the p99 of its own recent latency (from its
//! `headroom_request_duration_seconds` histogram), refreshed every few seconds by
//! [`spawn_refresh`]. A request at or above it records its method and path (without the
//! query) in a small top-k sketch (Space-Saving, [`TOP`] entries); a sample of every
//! request (about 1 in 32) goes into another, so a path's share of the tail can be set
//! against its share of the traffic. `/status` shows both, and `headroom advise` names a
//! path that is most of the tail while being a minority of the traffic.
//!
//! Why the route's p99 and not its SLO's latency threshold: every route has a latency
//! histogram, few have a latency SLO, and a p99 puts ~1 % of requests in the sketch
//! whatever the route's speed — so the lock below is taken by ~1 % (plus the ~3 % sample).

use headroom_telemetry::Histogram;
#[cfg(test)]
use headroom_telemetry::LATENCY_BUCKETS_SECONDS;
use http::{Method, Uri};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Entries per sketch: a route's tail is a handful of paths; 16 keeps the scan of a
/// record short and the top ones' counts within the sketch's error.
pub const TOP: usize = 16;

/// How often the thresholds are refreshed.
pub const REFRESH: Duration = Duration::from_secs(2);

/// Requests a refresh needs before it moves the threshold: under that a p99 is only the
/// slowest few (the window grows until it has them).
const MIN_WINDOW: u64 = 200;

/// A request whose duration's low nanosecond bits are all zero (1 in 32) is sampled into
/// the traffic sketch: the bits are noise at this resolution, so the sample is uniform, and
/// they cost no counter or random number.
const SAMPLE_MASK: u64 = 31;

/// Paths are kept to this many bytes: a longer one is cut (at a char boundary).
const MAX_PATH: usize = 256;

/// A threshold under 1 ms is loopback noise, not a slow path worth a route of its own; it
/// also keeps a route whose every request is fast from locking on each one.
const MIN_THRESHOLD_NS: u64 = 1_000_000;

/// A share of the window at or above the p99's bucket past which its lower bound is not
/// used (the bucket's upper bound is): a bucket holding more than this would make more
/// than this share of requests pay the lock.
const MAX_SLOW_SHARE: f64 = 0.05;

/// One route's slow-request state, kept across reloads while the route keeps its name.
#[derive(Debug)]
pub struct SlowPaths {
    /// Nanoseconds; `u64::MAX` until the route has had [`MIN_WINDOW`] requests.
    threshold_ns: AtomicU64,
    slow: Mutex<Sketch>,
    sampled: Mutex<Sketch>,
    /// The route's latency histogram (the same series across reloads).
    latency: Arc<Histogram>,
    /// Its bucket counts at the last refresh that moved the threshold.
    seen: Mutex<Vec<u64>>,
}

impl SlowPaths {
    pub fn new(latency: Arc<Histogram>) -> Self {
        SlowPaths {
            threshold_ns: AtomicU64::new(u64::MAX),
            slow: Mutex::default(),
            sampled: Mutex::default(),
            latency,
            seen: Mutex::default(),
        }
    }

    /// The `log` phase's check. Cost for a request that is neither slow nor sampled: one
    /// relaxed load, a compare and a mask; else a lock and a scan of [`TOP`] entries (and
    /// an allocation when its path enters the sketch).
    #[inline]
    pub fn observe(&self, elapsed: Duration, request: Option<&(Method, Uri)>) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let slow = ns >= self.threshold_ns.load(Relaxed);
        if !slow && ns & SAMPLE_MASK != 0 {
            return;
        }
        self.record(slow, ns & SAMPLE_MASK == 0, request);
    }

    #[cold]
    fn record(&self, slow: bool, sampled: bool, request: Option<&(Method, Uri)>) {
        // A request that never reached `forward` (a cache hit, a fixed answer) has no
        // request line kept: counted, under no path.
        let (method, path) = request.map_or((&Method::GET, ""), |(m, u)| (m, u.path()));
        let path = cut(path);
        let lock = |m: &Mutex<Sketch>| {
            m.lock()
                .unwrap_or_else(|p| p.into_inner())
                .add(method, path)
        };
        if slow {
            lock(&self.slow);
        }
        if sampled {
            lock(&self.sampled);
        }
    }

    /// The threshold in force, if the route has one yet.
    pub fn threshold(&self) -> Option<Duration> {
        match self.threshold_ns.load(Relaxed) {
            u64::MAX => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Moves the threshold to the p99 of the requests since the last move, once there are
    /// [`MIN_WINDOW`] of them. Control plane: reads every shard of the histogram.
    pub fn refresh(&self) {
        let now = self.latency.bucket_counts();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() != now.len() {
            *seen = vec![0; now.len()];
        }
        let window: Vec<u64> = now
            .iter()
            .zip(seen.iter())
            .map(|(n, s)| n.saturating_sub(*s))
            .collect();
        if window.iter().sum::<u64>() < MIN_WINDOW {
            return;
        }
        if let Some(t) = threshold_of(&window, self.latency.bounds().seconds()) {
            self.threshold_ns.store(t.max(MIN_THRESHOLD_NS), Relaxed);
        }
        *seen = now;
    }

    /// For `/status`: the threshold, the slow and sampled totals and their top paths.
    pub fn status(&self) -> serde_json::Value {
        let top = |m: &Mutex<Sketch>| {
            let s = m.lock().unwrap_or_else(|p| p.into_inner());
            let mut e: Vec<&Entry> = s.entries.iter().collect();
            e.sort_by(|a, b| b.count.cmp(&a.count).then(a.path.cmp(&b.path)));
            let top: Vec<serde_json::Value> = e
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "request": format!("{} {}", e.method, e.path),
                        "count": e.count,
                        "error": e.error,
                    })
                })
                .collect();
            (s.total, top)
        };
        let (slow, slow_top) = top(&self.slow);
        let (sampled, sampled_top) = top(&self.sampled);
        serde_json::json!({
            "threshold_ms": self.threshold().map(|t| (t.as_secs_f64() * 1e6).round() / 1e3),
            "slow": slow,
            "top": slow_top,
            "sampled": sampled,
            "sampled_top": sampled_top,
        })
    }
}

/// The slow threshold for one window of bucket counts (the last is +Inf): the lower bound
/// of the bucket holding the p99, so that a cluster of slow requests just past a bound is
/// all counted (interpolating inside a wide bucket would put the threshold above them);
/// its upper bound when that bucket and those above hold more than [`MAX_SLOW_SHARE`].
/// `bounds` are the histogram's, in seconds.
fn threshold_of(window: &[u64], bounds: &[f64]) -> Option<u64> {
    let total: u64 = window.iter().sum();
    let rank = (0.99 * total as f64).ceil() as u64;
    let bound_ns = |i: usize| {
        bounds
            .get(i)
            .or(bounds.last())
            .map(|s| (s * 1e9).round() as u64)
    };
    let mut below = 0;
    for (i, c) in window.iter().enumerate() {
        if below + c >= rank.max(1) {
            let at_or_above = (total - below) as f64 / total as f64;
            return if i == 0 || at_or_above > MAX_SLOW_SHARE {
                bound_ns(i)
            } else {
                bound_ns(i - 1)
            };
        }
        below += c;
    }
    None
}

/// `path` cut to [`MAX_PATH`] bytes at a char boundary.
fn cut(path: &str) -> &str {
    if path.len() <= MAX_PATH {
        return path;
    }
    let mut end = MAX_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

#[derive(Debug)]
struct Entry {
    method: Method,
    path: Box<str>,
    count: u64,
    /// Space-Saving's overestimate bound: the count of the entry it replaced.
    error: u64,
}

/// Space-Saving (Metwally et al.): [`TOP`] counters; a new key takes the smallest one's
/// place and count (+1), so every key counted more than total/TOP times is in it, each
/// count over by at most its `error`.
#[derive(Debug, Default)]
struct Sketch {
    entries: Vec<Entry>,
    total: u64,
}

impl Sketch {
    fn add(&mut self, method: &Method, path: &str) {
        self.total += 1;
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| &*e.path == path && e.method == method)
        {
            e.count += 1;
            return;
        }
        let entry = |count, error| Entry {
            method: method.clone(),
            path: path.into(),
            count,
            error,
        };
        if self.entries.len() < TOP {
            self.entries.push(entry(1, 0));
            return;
        }
        if let Some(min) = self.entries.iter_mut().min_by_key(|e| e.count) {
            *min = entry(min.count + 1, min.count);
        }
    }
}

/// Refreshes every route's threshold every [`REFRESH`], on the control runtime.
pub fn spawn_refresh(shared: &Arc<crate::Shared>) -> tokio::task::JoinHandle<()> {
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let snap = shared.snapshot.load_full();
            for r in &snap.routes {
                r.slow.refresh();
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(at: &[(usize, u64)]) -> Vec<u64> {
        let mut v = vec![0; LATENCY_BUCKETS_SECONDS.len() + 1];
        for (i, n) in at {
            v[*i] = *n;
        }
        v
    }

    fn bucket_ns(i: usize) -> u64 {
        (LATENCY_BUCKETS_SECONDS[i] * 1e9).round() as u64
    }

    #[test]
    fn a_small_slow_cluster_is_all_above_the_threshold() {
        // 1000 fast in bucket 3, 25 slow in bucket 10: the p99 falls among the slow ones,
        // and the threshold is their bucket's lower bound, so all 25 count.
        let t = threshold_of(&counts(&[(3, 1000), (10, 25)]), &LATENCY_BUCKETS_SECONDS).unwrap();
        assert_eq!(t, bucket_ns(9));
    }

    #[test]
    fn a_route_whose_requests_all_share_a_bucket_gets_its_upper_bound() {
        // Every request in bucket 8: its lower bound would make all of them slow.
        let t = threshold_of(&counts(&[(8, 1000)]), &LATENCY_BUCKETS_SECONDS).unwrap();
        assert_eq!(t, bucket_ns(8));
    }

    /// `[watch] latency_buckets`: the histogram's own bounds, not the default ones.
    #[test]
    fn the_threshold_is_one_of_the_histograms_own_bounds() {
        let t = threshold_of(&[1000, 25, 0], &[0.3, 1.0]).unwrap();
        assert_eq!(t, 300_000_000);
    }

    #[test]
    fn past_the_last_bound_the_threshold_is_the_last_bound() {
        let t = threshold_of(&counts(&[(16, 10)]), &LATENCY_BUCKETS_SECONDS).unwrap();
        assert_eq!(t, bucket_ns(15));
    }

    #[test]
    fn no_threshold_before_the_window_has_its_requests() {
        let h = Arc::new(Histogram::default());
        let s = SlowPaths::new(h.clone());
        for _ in 0..MIN_WINDOW - 1 {
            h.observe(Duration::from_millis(5));
        }
        s.refresh();
        assert_eq!(s.threshold(), None);
        h.observe(Duration::from_millis(5));
        s.refresh();
        assert_eq!(s.threshold(), Some(Duration::from_millis(5)));
    }

    #[test]
    fn only_requests_at_or_above_the_threshold_are_counted_slow() {
        let s = SlowPaths::new(Arc::new(Histogram::default()));
        s.threshold_ns.store(50_000_001, Relaxed);
        let line = |m: Method, uri: &str| (m, uri.parse::<Uri>().unwrap());
        // Durations with low bits set: not sampled.
        s.observe(
            Duration::from_nanos(50_000_001),
            Some(&line(Method::GET, "/a?x=1")),
        );
        s.observe(
            Duration::from_nanos(49_999_999),
            Some(&line(Method::GET, "/b")),
        );
        let st = s.status();
        assert_eq!(st["slow"], 1);
        assert_eq!(st["top"][0]["request"], "GET /a");
        assert_eq!(st["sampled"], 0);
        // A duration whose low five bits are zero is sampled, slow or not.
        s.observe(
            Duration::from_nanos(32 * 1000),
            Some(&line(Method::POST, "/c")),
        );
        assert_eq!(s.status()["sampled_top"][0]["request"], "POST /c");
    }

    #[test]
    fn the_sketch_keeps_every_heavy_path_in_sixteen_entries() {
        let mut s = Sketch::default();
        for i in 0..1000 {
            s.add(&Method::GET, "/heavy");
            s.add(&Method::GET, &format!("/tail/{i}"));
        }
        assert_eq!(s.entries.len(), TOP);
        let heavy = s.entries.iter().find(|e| &*e.path == "/heavy").unwrap();
        assert!(heavy.count >= 1000 && heavy.count - heavy.error <= 1000);
        assert_eq!(s.total, 2000);
    }

    #[test]
    fn a_long_path_is_cut_at_a_char_boundary() {
        let p = format!("/{}", "é".repeat(300));
        let c = cut(&p);
        assert!(c.len() <= MAX_PATH && p.starts_with(c));
    }
}
