//! A replica's live state: in-flight count, peak-EWMA latency, active health, passive
//! ejection and slow start. Lives beside the routing snapshot, keyed by (service, label),
//! so a reload keeps it. Every field is an atomic: workers and health checks share it.

use crate::clock::{now_ns, ns};
use crate::pool::PoolSlots;
use headroom_config::OutlierConfig;
use headroom_telemetry::{Counter, Gauge, Registry};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Decay time of the EWMA: a sample's weight halves about every 7 s (tau 10 s, as Finagle).
const EWMA_TAU_NS: f64 = 10e9;

/// One upstream endpoint of a service.
#[derive(Debug)]
pub struct Replica {
    pub label: Arc<str>,
    pub addr: SocketAddr,
    pub weight: AtomicU32,
    pub inflight: Arc<Gauge>,
    ewma_ns: AtomicU64,
    ewma_stamp: AtomicU64,
    /// Active health: false after `fall` failed checks, true again after `rise` passes.
    healthy: AtomicBool,
    checks_ok: AtomicU32,
    checks_failed: AtomicU32,
    /// Refused connections so far: a check that started before the last one and passes
    /// afterwards saw the replica before it died, and is not counted.
    refusals: AtomicU32,
    passive_failures: AtomicU32,
    /// Passive ejection end (clock ns); 0 when not ejected.
    ejected_until: AtomicU64,
    /// Consecutive ejections without a quiet period: the back-off exponent.
    ejections: AtomicU32,
    /// When the replica last became available (clock ns), for slow start.
    available_since: AtomicU64,
    /// Draining: no new requests; removed when its in-flight ones are done.
    draining: AtomicBool,
    pub pools: PoolSlots,
    /// Connections opened to the replica (`headroom_upstream_connects_total`): with the
    /// requests it served, how well its pool keeps up with demand.
    pub connects: Arc<Counter>,
    health_gauge: Arc<Gauge>,
    ejections_total: Arc<Counter>,
}

impl Replica {
    pub fn new(
        service: &str,
        label: &str,
        addr: SocketAddr,
        weight: u32,
        initial_ewma: Duration,
        workers: usize,
        registry: &Registry,
    ) -> Self {
        let labels = [("service", service), ("replica", label)];
        let health_gauge = registry.gauge(
            "headroom_replica_healthy",
            "1 when the replica takes traffic (healthy and not ejected), else 0.",
            &labels,
        );
        health_gauge.set(1);
        Replica {
            label: label.into(),
            addr,
            weight: AtomicU32::new(weight),
            inflight: registry.gauge(
                "headroom_replica_inflight",
                "Requests in flight to the replica.",
                &labels,
            ),
            ewma_ns: AtomicU64::new(ns(initial_ewma).max(1)),
            ewma_stamp: AtomicU64::new(now_ns()),
            healthy: AtomicBool::new(true),
            checks_ok: AtomicU32::new(0),
            checks_failed: AtomicU32::new(0),
            refusals: AtomicU32::new(0),
            passive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            available_since: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            pools: PoolSlots::new(workers),
            connects: registry.counter(
                "headroom_upstream_connects_total",
                "Connections opened to the replica (a pooled connection reused is not counted).",
                &labels,
            ),
            health_gauge,
            ejections_total: registry.counter(
                "headroom_replica_ejections_total",
                "Passive outlier ejections of the replica.",
                &labels,
            ),
        }
    }

    /// Takes traffic: actively healthy, not passively ejected, not draining.
    pub fn is_available(&self, now: u64) -> bool {
        self.healthy.load(Relaxed)
            && self.ejected_until.load(Relaxed) <= now
            && !self.draining.load(Relaxed)
    }

    /// A replica added at runtime: in slow start from now and, when `checked` (its service
    /// has health checks), out until its first passing check.
    pub fn start_at_runtime(&self, checked: bool) {
        self.available_since.store(now_ns(), Relaxed);
        if checked {
            self.healthy.store(false, Relaxed);
            // One pass brings it in, whatever `rise` says: it was never seen failing.
            self.checks_ok.store(u32::MAX / 2, Relaxed);
        }
        self.refresh_gauge(now_ns());
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Relaxed);
        self.refresh_gauge(now_ns());
    }

    /// Ends a drain; true if it was draining.
    pub fn undrain(&self) -> bool {
        let was = self.draining.swap(false, Relaxed);
        self.refresh_gauge(now_ns());
        was
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Relaxed) > now
    }

    /// Share of full traffic during slow start: from 10% up to 100% over `window`.
    pub fn slow_start_factor(&self, now: u64, window: Duration) -> f64 {
        let since = self
            .available_since
            .load(Relaxed)
            .max(self.ejected_until.load(Relaxed));
        let window = ns(window);
        if since == 0 || window == 0 || now >= since + window {
            return 1.0;
        }
        (now.saturating_sub(since) as f64 / window as f64).max(0.1)
    }

    /// Peak-EWMA latency in nanoseconds.
    pub fn ewma(&self) -> f64 {
        self.ewma_ns.load(Relaxed) as f64
    }

    /// Feeds one observed latency: peaks are taken at once, drops decay with time.
    pub fn observe_latency(&self, rtt: Duration, now: u64) {
        let rtt = ns(rtt).max(1) as f64;
        let prev = self.ewma_ns.load(Relaxed) as f64;
        let last = self.ewma_stamp.swap(now, Relaxed);
        let next = if rtt > prev {
            rtt
        } else {
            let w = (-(now.saturating_sub(last) as f64) / EWMA_TAU_NS).exp();
            prev * w + rtt * (1.0 - w)
        };
        self.ewma_ns.store(next.max(1.0) as u64, Relaxed);
    }

    /// Taken before a health check starts, for `record_probe`.
    pub fn check_started(&self) -> u32 {
        self.refusals.load(Relaxed)
    }

    /// Records the result of a check that began at `started` (`check_started`): a pass from
    /// before a refused connection is stale — the replica answered it, then died — and would
    /// bring a dead replica back with `rise = 1`, so it is dropped.
    pub fn record_probe(&self, started: u32, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok && self.refusals.load(Relaxed) != started {
            return None;
        }
        self.record_check(ok, rise, fall)
    }

    /// Records an active health check result; returns Some(new state) on a transition.
    pub fn record_check(&self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok {
            self.checks_failed.store(0, Relaxed);
            let n = self.checks_ok.fetch_add(1, Relaxed) + 1;
            if n >= rise && !self.healthy.swap(true, Relaxed) {
                self.available_since.store(now_ns(), Relaxed);
                self.passive_failures.store(0, Relaxed);
                self.refresh_gauge(now_ns());
                return Some(true);
            }
        } else {
            self.checks_ok.store(0, Relaxed);
            let n = self.checks_failed.fetch_add(1, Relaxed) + 1;
            if n >= fall && self.healthy.swap(false, Relaxed) {
                self.refresh_gauge(now_ns());
                return Some(false);
            }
        }
        None
    }

    /// A request to the replica succeeded: clears the passive failure streak.
    pub fn record_success(&self, now: u64, outlier: &OutlierConfig) {
        if self.passive_failures.load(Relaxed) != 0 {
            self.passive_failures.store(0, Relaxed);
        }
        let until = self.ejected_until.load(Relaxed);
        if self.ejections.load(Relaxed) != 0 && until != 0 && now > until + ns(outlier.max_ejection)
        {
            self.ejections.store(0, Relaxed);
        }
    }

    /// A request failed (connect error or 5xx). Returns the ejection length if this ejects it.
    /// `ejected_share` is the share of the service already ejected, including nothing of this one.
    pub fn record_failure(
        &self,
        now: u64,
        outlier: &OutlierConfig,
        ejected_share_after: f64,
    ) -> Option<Duration> {
        if outlier.consecutive_failures == 0 {
            return None;
        }
        let n = self.passive_failures.fetch_add(1, Relaxed) + 1;
        if n < outlier.consecutive_failures
            || self.is_ejected(now)
            || ejected_share_after > outlier.max_ejected + 1e-9
        {
            return None;
        }
        Some(self.eject(now, outlier))
    }

    /// The replica refused a connection (nothing listens) and the service has health
    /// checks: it is out at once, and back after `rise` passing checks. True when this took
    /// it out.
    pub fn refused_until_checks_pass(&self) -> bool {
        self.refusals.fetch_add(1, Relaxed);
        self.checks_ok.store(0, Relaxed);
        let was = self.healthy.swap(false, Relaxed);
        self.refresh_gauge(now_ns());
        was
    }

    /// The replica refused a connection and the service has no health checks: it is
    /// ejected at once for the back-off's next length (from `base_ejection`), whatever
    /// `consecutive_failures` and `max_ejected` say — a refused connection is not a guess.
    /// `consecutive_failures = 0` (passive ejection off) keeps it in. Returns the length when
    /// this ejected it.
    pub fn refused(&self, now: u64, outlier: &OutlierConfig) -> Option<Duration> {
        if outlier.consecutive_failures == 0 || self.is_ejected(now) {
            return None;
        }
        Some(self.eject(now, outlier))
    }

    fn eject(&self, now: u64, outlier: &OutlierConfig) -> Duration {
        let k = self.ejections.fetch_add(1, Relaxed).min(20);
        let length = outlier
            .base_ejection
            .saturating_mul(1 << k)
            .min(outlier.max_ejection);
        self.ejected_until.store(now + ns(length), Relaxed);
        self.passive_failures.store(0, Relaxed);
        self.ejections_total.inc();
        self.health_gauge.set(0);
        length
    }

    /// Re-reads availability into the health gauge (ejections end silently).
    pub fn refresh_gauge(&self, now: u64) {
        self.health_gauge.set(i64::from(self.is_available(now)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica() -> Replica {
        Replica::new(
            "s",
            "r:1",
            "127.0.0.1:1".parse().unwrap(),
            1,
            Duration::from_millis(1),
            1,
            &Registry::new(),
        )
    }

    fn outlier() -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            max_ejected: 0.5,
        }
    }

    #[test]
    fn ejection_backs_off_and_is_capped() {
        let r = replica();
        let o = outlier();
        let mut now = 1;
        let mut lengths = vec![];
        for _ in 0..3 {
            for _ in 0..2 {
                assert_eq!(r.record_failure(now, &o, 0.0), None);
            }
            let l = r
                .record_failure(now, &o, 0.0)
                .expect("third failure ejects");
            assert!(!r.is_available(now));
            lengths.push(l.as_secs());
            now += ns(l) + 1;
            assert!(r.is_available(now));
        }
        assert_eq!(lengths, vec![10, 20, 25]);
    }

    #[test]
    fn ejection_respects_the_max_ejected_share() {
        let r = replica();
        for _ in 0..5 {
            assert_eq!(r.record_failure(1, &outlier(), 0.75), None);
        }
        assert!(r.is_available(1));
    }

    #[test]
    fn health_transitions_need_rise_and_fall_streaks() {
        let r = replica();
        assert_eq!(r.record_check(false, 2, 2), None);
        assert_eq!(r.record_check(false, 2, 2), Some(false));
        assert!(!r.is_available(now_ns()));
        assert_eq!(r.record_check(true, 2, 2), None);
        assert_eq!(r.record_check(true, 2, 2), Some(true));
        assert!(r.is_available(now_ns()));
    }

    #[test]
    fn a_pass_from_a_check_begun_before_a_refusal_is_stale() {
        let r = replica();
        let started = r.check_started();
        assert!(r.refused_until_checks_pass());
        assert_eq!(r.record_probe(started, true, 1, 1000), None);
        assert!(!r.is_healthy(), "the stale pass does not bring it back");
        let started = r.check_started();
        assert_eq!(r.record_probe(started, true, 1, 1000), Some(true));
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let r = replica();
        r.observe_latency(Duration::from_millis(50), 1);
        assert_eq!(r.ewma() as u64, 50_000_000);
        r.observe_latency(Duration::from_millis(1), 1 + 10_000_000_000);
        let e = r.ewma() / 1e6;
        assert!(e < 50.0 && e > 1.0, "{e}");
    }

    #[test]
    fn a_replica_added_at_runtime_ramps_up_after_its_first_passing_check() {
        let r = replica();
        r.start_at_runtime(true);
        assert!(!r.is_available(now_ns()), "out until checked");
        // rise = 3, but one pass is enough for a replica never seen failing.
        assert_eq!(r.record_check(true, 3, 3), Some(true));
        assert!(r.slow_start_factor(now_ns(), Duration::from_secs(60)) < 0.5);
        let unchecked = replica();
        unchecked.start_at_runtime(false);
        assert!(unchecked.is_available(now_ns()));
        assert!(unchecked.slow_start_factor(now_ns(), Duration::from_secs(60)) < 0.5);
    }

    #[test]
    fn a_draining_replica_takes_no_traffic_until_undrained() {
        let r = replica();
        r.start_draining();
        assert!(!r.is_available(now_ns()));
        assert!(r.undrain());
        assert!(r.is_available(now_ns()));
    }

    #[test]
    fn slow_start_ramps_from_ten_percent() {
        let r = replica();
        r.record_check(false, 1, 1);
        r.record_check(true, 1, 1);
        let since = r.available_since.load(Relaxed);
        let w = Duration::from_secs(10);
        assert!((r.slow_start_factor(since, w) - 0.1).abs() < 1e-9);
        assert!((r.slow_start_factor(since + 5_000_000_000, w) - 0.5).abs() < 1e-9);
        assert_eq!(r.slow_start_factor(since + 11_000_000_000, w), 1.0);
    }
}
