//! The adaptive concurrency limit: a gradient controller after Envoy's adaptive
//! concurrency filter, which finds how many requests the upstream serves at once before it
//! starts to queue them.
//!
//! # The algorithm
//!
//! - **Baseline.** The upstream's unloaded latency is *measured*: the limit is held at
//!   `min_limit` until `baseline_samples` requests admitted under it have answered, and their
//!   mean latency is the baseline. This happens at start, every `baseline_interval` (plus up
//!   to 10 % jitter, so a fleet does not measure in step), and after 5 windows in a row at
//!   `min_limit` (the upstream got slower: at the floor the baseline is stale, not the
//!   limit). The limit then resumes where it was (`initial_limit` the first time). An
//!   upstream that fails everything never completes a measurement and stays at `min_limit`.
//! - **Windows.** Every `window` (once it holds at least 10 samples), the mean latency of the
//!   window's successful requests gives the gradient
//!   `g = clamp(baseline·(1 + tolerance) / mean, 0.5, 2)`; failures (5xx, connect failures,
//!   timeouts) cap it at `1 − failed_share/2`, so an upstream that answers fast 503s is
//!   backed off from, not rewarded. The new limit is `L·g`, plus `√L` of headroom when the
//!   window was not congested (`g ≥ 1`), smoothed: `L ← (1 − smoothing)·L + smoothing·new`,
//!   within `[min_limit, max_limit]`. A window whose peak in flight stayed under `L/2` does
//!   not raise the limit (Gradient2's rule: an idle service proves nothing about capacity).
//!
//! Under a queueing upstream of capacity `C` the mean latency is `baseline·L/C` above `C`,
//! so the limit settles where `L/C = 1 + tolerance`: about 10 % above the capacity with the
//! default, admitted requests about 10 % slower than unloaded, the rest shed.
//!
//! # Why this one
//!
//! Netflix's Gradient2 compares against a long exponential average of latency instead of a
//! measured baseline; under sustained overload that average converges to the loaded latency,
//! the gradient returns to 1 and the limit creeps up again. Vegas and Gradient (v1) take the
//! minimum latency seen, which is only the unloaded one if some moment was unloaded; Envoy
//! creates that moment on purpose, which is what we do. AIMD only backs off on drops, and an
//! upstream that queues instead of failing never drops. Differences from Envoy: the mean
//! instead of a percentile (atomics, no histogram per window), headroom only when not
//! congested (Envoy adds `√L` always, which at small limits holds the limit well above
//! capacity), failures as a signal, and Gradient2's app-limited rule and smoothing.
//!
//! # Cost
//!
//! Per completed request: three relaxed atomic additions, a `fetch_max` and a clock read;
//! the window's close takes an uncontended `try_lock` once per window. The measurement costs
//! a dip to `min_limit` for about `baseline_samples / min_limit` baseline latencies once a
//! `baseline_interval` (with the defaults and a 20 ms upstream, ~125 ms a minute).

use super::Outcome;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Mutex, TryLockError};
use std::time::Duration;
use tokio::time::Instant;

/// A window closes with at least this many samples, so one slow request is not a trend.
const MIN_WINDOW_SAMPLES: u64 = 10;

/// Windows in a row at `min_limit` that trigger a new baseline measurement (Envoy's 5).
const FLOOR_WINDOWS: u32 = 5;

/// The adaptive limit's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveSettings {
    /// The limit's floor, and the concurrency at which the baseline is measured (keep it
    /// under the upstream's capacity, or the baseline includes queueing). Default 4.
    pub min_limit: u32,
    /// The limit's ceiling. Default 1000.
    pub max_limit: u32,
    /// The limit after the first baseline measurement. Default 20.
    pub initial_limit: u32,
    /// How often the limit is recomputed (a window needs 10 samples to close). Default 100 ms.
    pub window: Duration,
    /// How much above the baseline the mean latency may rise before the limit shrinks, as a
    /// share of the baseline. Default 0.1.
    pub tolerance: f64,
    /// Weight of a new limit against the current one, 0 to 1. Default 0.2.
    pub smoothing: f64,
    /// How often the baseline is measured again. Default 60 s.
    pub baseline_interval: Duration,
    /// Successful requests whose mean latency is the baseline. Default 25.
    pub baseline_samples: u32,
}

impl Default for AdaptiveSettings {
    fn default() -> AdaptiveSettings {
        AdaptiveSettings {
            min_limit: 4,
            max_limit: 1000,
            initial_limit: 20,
            window: Duration::from_millis(100),
            tolerance: 0.1,
            smoothing: 0.2,
            baseline_interval: Duration::from_secs(60),
            baseline_samples: 25,
        }
    }
}

pub(super) struct Adaptive {
    min: u32,
    max: u32,
    window: u64,
    tolerance: f64,
    smoothing: f64,
    interval: u64,
    baseline_samples: u64,
    clock: Instant,
    /// Bumped when a measurement starts: it takes only requests admitted since.
    epoch: AtomicU32,
    measuring: AtomicBool,
    /// Nanoseconds (on `clock`) after which the tracking window may close.
    window_end: AtomicU64,
    ok: AtomicU64,
    ok_nanos: AtomicU64,
    failed: AtomicU64,
    peak: AtomicU32,
    /// The baseline in nanoseconds, 0 before the first measurement (for the getter).
    baseline_nanos: AtomicU64,
    ctl: Mutex<Controller>,
}

struct Controller {
    estimate: f64,
    baseline: f64,
    /// The limit to resume at after a measurement.
    resume: f64,
    next_baseline: u64,
    floor_windows: u32,
    rng: u64,
}

impl Adaptive {
    pub(super) fn new(s: &AdaptiveSettings, cap: Option<u32>) -> Adaptive {
        let max = s.max_limit.min(cap.unwrap_or(u32::MAX)).max(1);
        let min = s.min_limit.clamp(1, max);
        let finite = |v: f64, lo: f64, hi: f64, default: f64| {
            if v.is_finite() {
                v.clamp(lo, hi)
            } else {
                default
            }
        };
        Adaptive {
            min,
            max,
            window: nanos(s.window).max(1),
            tolerance: finite(s.tolerance, 0.0, 10.0, 0.1),
            smoothing: finite(s.smoothing, 0.01, 1.0, 0.2),
            interval: nanos(s.baseline_interval),
            baseline_samples: u64::from(s.baseline_samples.max(1)),
            clock: Instant::now(),
            epoch: AtomicU32::new(0),
            measuring: AtomicBool::new(true),
            window_end: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            ok_nanos: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            peak: AtomicU32::new(0),
            baseline_nanos: AtomicU64::new(0),
            ctl: Mutex::new(Controller {
                estimate: f64::from(min),
                baseline: 0.0,
                resume: f64::from(s.initial_limit.clamp(min, max)),
                next_baseline: 0,
                floor_windows: 0,
                rng: seed(),
            }),
        }
    }

    /// The limit to start at: `min_limit`, while the first baseline is measured.
    pub(super) fn start_limit(&self) -> u32 {
        self.min
    }

    pub(super) fn epoch(&self) -> u32 {
        self.epoch.load(Acquire)
    }

    pub(super) fn baseline(&self) -> Option<Duration> {
        match self.baseline_nanos.load(Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    fn now(&self) -> u64 {
        nanos(self.clock.elapsed())
    }

    /// Takes one request's sample; `inflight` counts it. Returns true when this closed a
    /// window and raised the limit (stored in `limit`), so waiters may be let in.
    pub(super) fn sample(
        &self,
        latency: Duration,
        outcome: Outcome,
        epoch: u32,
        inflight: u32,
        limit: &AtomicU32,
    ) -> bool {
        let measuring = self.measuring.load(Acquire);
        if outcome == Outcome::Dropped || (measuring && epoch != self.epoch.load(Acquire)) {
            return false;
        }
        match outcome {
            Outcome::Ok => {
                self.ok.fetch_add(1, Relaxed);
                self.ok_nanos.fetch_add(nanos(latency), Relaxed);
            }
            _ => {
                self.failed.fetch_add(1, Relaxed);
            }
        }
        self.peak.fetch_max(inflight, Relaxed);
        let now = self.now();
        if !self.due(measuring, now) {
            return false;
        }
        let mut ctl = match self.ctl.try_lock() {
            Ok(c) => c,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            // Another thread is closing this window.
            Err(TryLockError::WouldBlock) => return false,
        };
        // Re-read under the lock: the window may have closed since.
        let measuring = self.measuring.load(Acquire);
        if !self.due(measuring, now) {
            return false;
        }
        let before = limit.load(SeqCst);
        if measuring {
            self.end_measurement(&mut ctl, now, limit);
        } else {
            self.end_window(&mut ctl, now, limit);
        }
        limit.load(SeqCst) > before
    }

    fn due(&self, measuring: bool, now: u64) -> bool {
        if measuring {
            self.ok.load(Relaxed) >= self.baseline_samples
        } else {
            now >= self.window_end.load(Relaxed)
                && self.ok.load(Relaxed) + self.failed.load(Relaxed) >= MIN_WINDOW_SAMPLES
        }
    }

    fn take(&self) -> (u64, u64, u64, u32) {
        (
            self.ok.swap(0, Relaxed),
            self.ok_nanos.swap(0, Relaxed),
            self.failed.swap(0, Relaxed),
            self.peak.swap(0, Relaxed),
        )
    }

    fn end_measurement(&self, ctl: &mut Controller, now: u64, limit: &AtomicU32) {
        let (ok, ok_nanos, _, _) = self.take();
        ctl.baseline = ok_nanos as f64 / ok.max(1) as f64;
        self.baseline_nanos
            .store((ctl.baseline as u64).max(1), Relaxed);
        ctl.estimate = ctl.resume;
        ctl.floor_windows = 0;
        // Up to 10 % later, so instances started together do not measure together.
        ctl.rng = xorshift(ctl.rng);
        let jitter = ctl.rng % (self.interval / 10 + 1);
        ctl.next_baseline = now.saturating_add(self.interval).saturating_add(jitter);
        self.window_end
            .store(now.saturating_add(self.window), Relaxed);
        limit.store(self.round(ctl.estimate), SeqCst);
        self.measuring.store(false, Release);
    }

    fn end_window(&self, ctl: &mut Controller, now: u64, limit: &AtomicU32) {
        let (ok, ok_nanos, failed, peak) = self.take();
        let l = ctl.estimate;
        let mut g = if ok > 0 {
            let mean = ok_nanos as f64 / ok as f64;
            (ctl.baseline * (1.0 + self.tolerance) / mean.max(1.0)).clamp(0.5, 2.0)
        } else {
            0.5
        };
        if failed > 0 {
            g = g.min(1.0 - 0.5 * failed as f64 / (ok + failed) as f64);
        }
        let mut next = l * g;
        if g >= 1.0 {
            next += l.sqrt();
            if f64::from(peak) < l / 2.0 {
                next = l;
            }
        }
        let smoothed = (1.0 - self.smoothing) * l + self.smoothing * next;
        ctl.estimate = smoothed.clamp(f64::from(self.min), f64::from(self.max));
        ctl.floor_windows = if self.round(ctl.estimate) <= self.min {
            ctl.floor_windows + 1
        } else {
            0
        };
        self.window_end
            .store(now.saturating_add(self.window), Relaxed);
        if now >= ctl.next_baseline || ctl.floor_windows >= FLOOR_WINDOWS {
            self.start_measurement(ctl, limit);
        } else {
            limit.store(self.round(ctl.estimate), SeqCst);
        }
    }

    fn start_measurement(&self, ctl: &mut Controller, limit: &AtomicU32) {
        ctl.resume = ctl.estimate;
        self.epoch.fetch_add(1, AcqRel);
        self.measuring.store(true, Release);
        // Samples of requests admitted before are not the unloaded latency.
        self.take();
        limit.store(self.min, SeqCst);
    }

    fn round(&self, v: f64) -> u32 {
        (v.round() as u32).clamp(self.min, self.max)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x7368_6564u64) | 1
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}
