//! Request-driven scaling, as Knative's pod autoscaler (KPA) decides it
//! (`knative.dev/serving/pkg/autoscaler/scaling/autoscaler.go`, with the defaults of its
//! `config-autoscaler`).
//!
//! The service's in-flight requests (over all its replicas) are sampled every second and
//! averaged over a stable window (60 s) and a panic window (10% of it, 6 s). Each replica
//! should carry `target × utilization` (70%) of them:
//!
//! - `stable = ceil(stable average / (target × utilization))`, `panic` likewise on the panic
//!   window; both kept within `[floor(ready / max_scale_down_rate), ready × max_scale_up_rate]`.
//! - Panic starts when `panic / ready ≥ panic_threshold` (200%) and lasts until the stable
//!   window has seen a whole window without that. In panic the count only grows (the larger
//!   of stable and panic, never less than the panic's highest so far).
//! - Out of panic the stable count stands, delayed by `scale_down_delay` (the highest count
//!   of that window, 0 s by default).
//!
//! Averages over less than a window (just started, or just after a restart) are over what
//! was seen. Knative weighs nothing more than that: each second counts the same.

use std::collections::VecDeque;

/// Knative's `config-autoscaler` defaults, with the service's `target` per replica.
#[derive(Debug, Clone, PartialEq)]
pub struct KpaConfig {
    /// In-flight requests one replica is meant to carry (Knative's `containerConcurrency`
    /// target, `autoscaling.knative.dev/target`).
    pub target: f64,
    /// The share of `target` aimed at, leaving room for bursts. Default 0.7.
    pub utilization: f64,
    /// Seconds. Default 60.
    pub stable_window: f64,
    /// The panic window, a share of the stable one. Default 0.1 (6 s).
    pub panic_window_share: f64,
    /// Panic when the panic window asks for this many times the ready replicas. Default 2.
    pub panic_threshold: f64,
    /// A decision adds at most this many times the ready replicas. Default 1000.
    pub max_scale_up_rate: f64,
    /// A decision keeps at least the ready replicas divided by this. Default 2.
    pub max_scale_down_rate: f64,
    /// Seconds a lower count must hold before it is applied. Default 0.
    pub scale_down_delay: f64,
}

impl KpaConfig {
    pub fn new(target: f64) -> KpaConfig {
        KpaConfig {
            target,
            utilization: 0.7,
            stable_window: 60.0,
            panic_window_share: 0.1,
            panic_threshold: 2.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            scale_down_delay: 0.0,
        }
    }

    /// In-flight requests per replica aimed at: `target × utilization`.
    pub fn per_replica(&self) -> f64 {
        self.target * self.utilization
    }

    fn panic_window(&self) -> f64 {
        self.stable_window * self.panic_window_share
    }
}

/// One decision and what it rests on.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KpaDecision {
    pub desired: u32,
    /// Average in-flight requests over the stable and the panic window.
    pub stable_concurrency: f64,
    pub panic_concurrency: f64,
    /// The counts each window asks for (before the rate bounds).
    pub stable_wants: u32,
    pub panic_wants: u32,
    pub panicking: bool,
    /// True when the scale-down delay held a higher count.
    pub delayed: bool,
}

/// The KPA of one service.
#[derive(Debug, Clone)]
pub struct Kpa {
    cfg: KpaConfig,
    /// (second, sum of its samples, their number): one per second with a sample, newest
    /// last, none older than the stable window.
    seconds: VecDeque<(i64, f64, u32)>,
    /// When the first sample was taken: averages over a partial window count from it.
    first: Option<f64>,
    /// When panic was last entered or extended.
    panic_since: Option<f64>,
    max_panic: u32,
    /// (time, desired) within the scale-down delay.
    delay: VecDeque<(f64, u32)>,
    /// A count found running (`adopt`), and when: not scaled below for a stable window.
    adopted: Option<(f64, u32)>,
}

impl Kpa {
    pub fn new(cfg: KpaConfig) -> Kpa {
        Kpa {
            cfg,
            seconds: VecDeque::new(),
            first: None,
            panic_since: None,
            max_panic: 0,
            delay: VecDeque::new(),
            adopted: None,
        }
    }

    /// A workload found running at `current` (headroom started in front of it, or took over
    /// from another instance): its windows know nothing of the load before `now`, so for
    /// one stable window no decision goes below `current` — the windows fill first.
    pub fn adopt(&mut self, now: f64, current: u32) {
        self.adopted = Some((now, current));
    }

    pub fn config(&self) -> &KpaConfig {
        &self.cfg
    }

    /// A new config (a reload): the samples and the panic state stay.
    pub fn reconfigure(&mut self, cfg: KpaConfig) {
        self.cfg = cfg;
    }

    /// Records the in-flight requests seen at `now` (any number per second: a second's
    /// value is their average).
    pub fn record(&mut self, now: f64, inflight: f64) {
        let second = now.floor() as i64;
        self.first.get_or_insert(now);
        match self.seconds.back_mut() {
            Some((s, sum, n)) if *s == second => {
                *sum += inflight;
                *n += 1;
            }
            _ => self.seconds.push_back((second, inflight, 1)),
        }
        let oldest = second - (self.cfg.stable_window.round() as i64).max(1);
        while self.seconds.front().is_some_and(|(s, ..)| *s <= oldest) {
            self.seconds.pop_front();
        }
    }

    /// The average over the last `window` whole seconds up to `now`'s, seconds without a
    /// sample counting as 0; over the seconds since the first sample if fewer. `None` before
    /// any sample.
    fn average(&self, now: f64, window: f64) -> Option<f64> {
        let first = self.first?.floor() as i64;
        let now_s = now.floor() as i64;
        let w = (window.round() as i64).max(1);
        let start = (now_s - w + 1).max(first);
        let count = (now_s - start + 1).max(1);
        let sum: f64 = self
            .seconds
            .iter()
            .filter(|(s, ..)| (start..=now_s).contains(s))
            .map(|(_, sum, n)| sum / f64::from(*n))
            .sum();
        Some(sum / count as f64)
    }

    /// Decides at `now` with `ready` replicas taking traffic. `None` before any sample:
    /// without data nothing is decided (Knative's `ErrNoData`).
    pub fn decide(&mut self, now: f64, ready: u32) -> Option<KpaDecision> {
        let stable = self.average(now, self.cfg.stable_window)?;
        let panic = self.average(now, self.cfg.panic_window())?;
        let per = self.cfg.per_replica().max(f64::MIN_POSITIVE);
        let ready_f = f64::from(ready.max(1));
        let max_up = self.cfg.max_scale_up_rate * ready_f;
        let max_down = (ready_f / self.cfg.max_scale_down_rate).floor();
        let (dspc, dppc) = ((stable / per).ceil(), (panic / per).ceil());
        let bound = |x: f64| x.max(max_down).min(max_up).max(0.0) as u32;
        let (stable_count, panic_count) = (bound(dspc), bound(dppc));
        let over = dppc / ready_f >= self.cfg.panic_threshold;
        match self.panic_since {
            _ if over => self.panic_since = Some(now),
            Some(since) if since + self.cfg.stable_window < now => {
                self.panic_since = None;
                self.max_panic = 0;
            }
            _ => {}
        }
        let mut desired = stable_count;
        let panicking = self.panic_since.is_some();
        if panicking {
            desired = desired.max(panic_count).max(self.max_panic);
            self.max_panic = desired;
        }
        let mut delayed = false;
        match self.adopted {
            Some((t, n)) if now < t + self.cfg.stable_window => {
                delayed = n > desired;
                desired = desired.max(n);
            }
            Some(_) => self.adopted = None,
            None => {}
        }
        if self.cfg.scale_down_delay > 0.0 {
            let cutoff = now - self.cfg.scale_down_delay;
            while self.delay.front().is_some_and(|(t, _)| *t <= cutoff) {
                self.delay.pop_front();
            }
            self.delay.push_back((now, desired));
            let held = self.delay.iter().map(|(_, d)| *d).max().unwrap_or(desired);
            delayed = held > desired;
            desired = held;
        }
        Some(KpaDecision {
            desired,
            stable_concurrency: stable,
            panic_concurrency: panic,
            stable_wants: dspc.max(0.0) as u32,
            panic_wants: dppc.max(0.0) as u32,
            panicking,
            delayed,
        })
    }
}

#[cfg(test)]
mod tests;
