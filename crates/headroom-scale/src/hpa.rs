//! HPA semantics, as Kubernetes' horizontal pod autoscaler computes them
//! (`pkg/controller/podautoscaler`: `replica_calculator.go` for one metric's proposal,
//! `horizontal.go` for the stabilisation and the `behavior` policies).
//!
//! One decision, every sync period:
//! 1. Each metric proposes a replica count ([`propose`]): `ceil(current × value / target)`,
//!    or the current count while `|value / target − 1| ≤ tolerance` (0.1). Per-replica
//!    readings that are missing count as 100% of the target when scaling down and 0 when
//!    scaling up; not-ready replicas count as 0 when scaling up and are left out when
//!    scaling down; if filling them in flips the direction or lands within the tolerance,
//!    the current count stays.
//! 2. The largest proposal wins; a metric that could not be read proposes nothing (it is
//!    never taken for 0).
//! 3. [`Hpa::decide`] stabilises it (the lowest recommendation of the scale-up window —
//!    0 s by default — and the highest of the scale-down window — 300 s), then limits the
//!    change by the policies of its direction (by default up: +100% or +4 per 15 s, the
//!    larger; down: −100% per 15 s), then clamps it to `min..=max`.

use std::collections::VecDeque;

/// The tolerance Kubernetes uses by default (`--horizontal-pod-autoscaler-tolerance`).
pub const DEFAULT_TOLERANCE: f64 = 0.1;

/// One replica's reading of a per-replica metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    Value(f64),
    /// The replica is up but its metric could not be read.
    Missing,
    /// The replica is not ready (starting, or failing its health checks).
    NotReady,
}

/// What a metric is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// A per-replica average (`AverageValue`): in-flight requests or requests/s per replica.
    /// A missing reading counts as `target` when scaling down.
    PerReplica { readings: Vec<Reading>, target: f64 },
    /// A utilisation in percent of each replica's request (`Utilization`): CPU. A missing
    /// reading counts as 100% when scaling down, as Kubernetes assumes of a pod's request.
    Utilization { readings: Vec<Reading>, target: f64 },
    /// One value for the whole service (an object metric with a `Value` target): its p95
    /// latency. `ready` replicas serve it.
    Value { value: f64, target: f64, ready: u32 },
    /// A total to be shared (an external metric with an `AverageValue` target): a queue's
    /// length, `per_replica` items each.
    Total { total: f64, per_replica: f64 },
}

/// Why a metric proposes what it does.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub replicas: u32,
    /// `value / target` over the readings (before missing and not-ready ones were filled in).
    pub ratio: f64,
    /// True when the ratio was within the tolerance (or filling in readings made it so).
    pub within_tolerance: bool,
}

/// Why a metric proposes nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum NoProposal {
    /// No replica had a reading (all missing or not ready).
    NoReadings,
    /// The target is not a positive number.
    BadTarget,
    /// The value is not a finite number at or above 0.
    BadValue,
}

/// The replica count `metric` asks for, with `current` replicas now.
pub fn propose(current: u32, metric: &Metric, tolerance: f64) -> Result<Proposal, NoProposal> {
    let ok = |replicas: u32, ratio: f64, within: bool| Proposal {
        replicas,
        ratio,
        within_tolerance: within,
    };
    match metric {
        Metric::PerReplica { readings, target } => {
            per_replica(current, readings, *target, *target, tolerance)
        }
        Metric::Utilization { readings, target } => {
            per_replica(current, readings, *target, 100.0, tolerance)
        }
        Metric::Value {
            value,
            target,
            ready,
        } => {
            check(*value, *target)?;
            let ratio = value / target;
            // getUsageRatioReplicaCount: from zero, ceil(ratio); else the ready count scaled.
            if current == 0 {
                return Ok(ok(ceil(ratio), ratio, false));
            }
            if (ratio - 1.0).abs() <= tolerance {
                return Ok(ok(current, ratio, true));
            }
            Ok(ok(ceil(ratio * f64::from(*ready)), ratio, false))
        }
        Metric::Total { total, per_replica } => {
            check(*total, *per_replica)?;
            // GetExternalMetricReplicas with a target average value.
            let ratio = total / (per_replica * f64::from(current));
            if current > 0 && (ratio - 1.0).abs() <= tolerance {
                return Ok(ok(current, ratio, true));
            }
            Ok(ok(ceil(total / per_replica), ratio, false))
        }
    }
}

fn check(value: f64, target: f64) -> Result<(), NoProposal> {
    if !(target.is_finite() && target > 0.0) {
        return Err(NoProposal::BadTarget);
    }
    if !(value.is_finite() && value >= 0.0) {
        return Err(NoProposal::BadValue);
    }
    Ok(())
}

/// `ceil(x)` as a replica count, saturating.
fn ceil(x: f64) -> u32 {
    let c = x.ceil();
    if c >= f64::from(u32::MAX) {
        u32::MAX
    } else if c > 0.0 {
        c as u32
    } else {
        0
    }
}

/// `replica_calculator.go`'s `calcPlainMetricReplicas` and `GetResourceReplicas`:
/// `fill_down` is what a missing reading counts as when scaling down.
fn per_replica(
    current: u32,
    readings: &[Reading],
    target: f64,
    fill_down: f64,
    tolerance: f64,
) -> Result<Proposal, NoProposal> {
    if !(target.is_finite() && target > 0.0) {
        return Err(NoProposal::BadTarget);
    }
    let mut sum = 0.0;
    let (mut ready, mut missing, mut not_ready) = (0u32, 0u32, 0u32);
    for r in readings {
        match r {
            Reading::Value(v) if v.is_finite() && *v >= 0.0 => {
                sum += v;
                ready += 1;
            }
            Reading::Value(_) => return Err(NoProposal::BadValue),
            Reading::Missing => missing += 1,
            Reading::NotReady => not_ready += 1,
        }
    }
    if ready == 0 {
        return Err(NoProposal::NoReadings);
    }
    let ratio = sum / f64::from(ready) / target;
    let proposal = |replicas, within| Proposal {
        replicas,
        ratio,
        within_tolerance: within,
    };
    let up_with_not_ready = not_ready > 0 && ratio > 1.0;
    if !up_with_not_ready && missing == 0 {
        if (ratio - 1.0).abs() <= tolerance {
            return Ok(proposal(current, true));
        }
        return Ok(proposal(ceil(ratio * f64::from(ready)), false));
    }
    // Fill in the missing readings against the direction, and the not-ready ones (only
    // when scaling up) as idle.
    let mut n = ready;
    if missing > 0 {
        if ratio < 1.0 {
            sum += fill_down * f64::from(missing);
        }
        n += missing;
    }
    if up_with_not_ready {
        n += not_ready;
    }
    let new_ratio = sum / f64::from(n) / target;
    if (new_ratio - 1.0).abs() <= tolerance
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(proposal(current, true));
    }
    let replicas = ceil(new_ratio * f64::from(n));
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(proposal(current, true));
    }
    Ok(proposal(replicas, false))
}

/// A scaling policy: at most `value` replicas (`Pods`) or `value` percent (`Percent`) per
/// `period` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    Pods { value: u32, period: f64 },
    Percent { value: u32, period: f64 },
}

impl Policy {
    fn period(&self) -> f64 {
        match self {
            Policy::Pods { period, .. } | Policy::Percent { period, .. } => *period,
        }
    }
}

/// Which policy limits a direction: the one allowing the largest change (`Max`, the
/// default), the smallest (`Min`), or none — no scaling that way at all (`Disabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Select {
    #[default]
    Max,
    Min,
    Disabled,
}

/// One direction's `behavior`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Seconds of past recommendations considered.
    pub stabilization: f64,
    pub policies: Vec<Policy>,
    pub select: Select,
}

impl Rules {
    /// Kubernetes' scale-up default: no stabilisation; +100% or +4 replicas per 15 s,
    /// whichever is more.
    pub fn default_up() -> Rules {
        Rules {
            stabilization: 0.0,
            policies: vec![
                Policy::Percent {
                    value: 100,
                    period: 15.0,
                },
                Policy::Pods {
                    value: 4,
                    period: 15.0,
                },
            ],
            select: Select::Max,
        }
    }

    /// Kubernetes' scale-down default: the highest recommendation of the last 300 s; down
    /// to any count per 15 s.
    pub fn default_down() -> Rules {
        Rules {
            stabilization: 300.0,
            policies: vec![Policy::Percent {
                value: 100,
                period: 15.0,
            }],
            select: Select::Max,
        }
    }
}

/// `min`, `max` and the behaviour of both directions.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaConfig {
    pub min: u32,
    pub max: u32,
    pub up: Rules,
    pub down: Rules,
    pub tolerance: f64,
}

impl HpaConfig {
    /// Kubernetes' defaults between `min` and `max`.
    pub fn new(min: u32, max: u32) -> HpaConfig {
        HpaConfig {
            min,
            max,
            up: Rules::default_up(),
            down: Rules::default_down(),
            tolerance: DEFAULT_TOLERANCE,
        }
    }
}

/// What limited a decision, as the HPA's `ScalingLimited` and `AbleToScale` conditions
/// name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// Nothing: the recommendation stands.
    None,
    /// A lower recommendation within the scale-up stabilisation window held it back.
    ScaleUpStabilized,
    /// A higher recommendation within the scale-down window held it up.
    ScaleDownStabilized,
    /// A scale-up policy's rate.
    ScaleUpLimit,
    /// A scale-down policy's rate.
    ScaleDownLimit,
    /// `max`.
    TooManyReplicas,
    /// `min`.
    TooFewReplicas,
    /// No metric could be read: nothing changes.
    NoMetrics,
}

/// One decision: the count to scale to and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Decision {
    pub current: u32,
    /// The largest proposal of the metrics (before stabilisation and policies).
    pub recommended: Option<u32>,
    pub desired: u32,
    pub limit: Limit,
}

/// The HPA of one service: the recommendations and scale events it remembers.
#[derive(Debug, Clone)]
pub struct Hpa {
    cfg: HpaConfig,
    /// (time, recommendation), for the stabilisation windows.
    recommendations: VecDeque<(f64, u32)>,
    /// (time, replicas added), (time, replicas removed): for the policies' periods.
    ups: VecDeque<(f64, u32)>,
    downs: VecDeque<(f64, u32)>,
}

impl Hpa {
    pub fn new(cfg: HpaConfig) -> Hpa {
        Hpa {
            cfg,
            recommendations: VecDeque::new(),
            ups: VecDeque::new(),
            downs: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &HpaConfig {
        &self.cfg
    }

    /// A `min` for the next decisions (a schedule raising it), within `max`.
    pub fn set_min(&mut self, min: u32) {
        self.cfg.min = min.min(self.cfg.max);
    }

    /// A new config (a reload): the remembered recommendations and events stay.
    pub fn reconfigure(&mut self, cfg: HpaConfig) {
        self.cfg = cfg;
    }

    /// A workload found running at `current` (headroom started in front of it, or took over
    /// from another instance): remembered as a recommendation at `now`, as Kubernetes seeds
    /// a new HPA's (`horizontal.go`: `{currentReplicas, now}`), so a scale-down waits for
    /// the stabilisation window instead of following the first low reading.
    pub fn adopt(&mut self, now: f64, current: u32) {
        self.recommendations.push_back((now, current));
    }

    /// Decides at `now` with `current` replicas and the metrics' `proposals` (those that
    /// could be read). Records the scale event if the count changes: call it once per
    /// sync, and scale to `desired`.
    pub fn decide(&mut self, now: f64, current: u32, proposals: &[u32]) -> Decision {
        let (min, max) = (self.cfg.min, self.cfg.max.max(self.cfg.min));
        let recommended = proposals.iter().copied().max();
        let decision = |desired, limit| Decision {
            current,
            recommended,
            desired,
            limit,
        };
        // horizontal.go: out of bounds first, whatever the metrics say.
        let d = if current > max {
            decision(max, Limit::TooManyReplicas)
        } else if current < min {
            decision(min, Limit::TooFewReplicas)
        } else {
            match recommended {
                None => decision(current, Limit::NoMetrics),
                Some(r) => self.normalize(now, current, r, min, max, decision),
            }
        };
        self.record_event(now, current, d.desired);
        d
    }

    /// `normalizeDesiredReplicasWithBehaviors`: stabilise, then limit by rate and bounds.
    fn normalize(
        &mut self,
        now: f64,
        current: u32,
        recommended: u32,
        min: u32,
        max: u32,
        decision: impl Fn(u32, Limit) -> Decision,
    ) -> Decision {
        let (stabilized, why) = self.stabilize(now, current, recommended);
        if stabilized > current {
            let rate = self.limit_up(now, current).max(current);
            let (bound, reason) = if max > rate {
                (rate, Limit::ScaleUpLimit)
            } else {
                (max, Limit::TooManyReplicas)
            };
            if stabilized > bound {
                return decision(bound, reason);
            }
        } else if stabilized < current {
            let rate = self.limit_down(now, current).min(current);
            let (bound, reason) = if min < rate {
                (rate, Limit::ScaleDownLimit)
            } else {
                (min, Limit::TooFewReplicas)
            };
            if stabilized < bound {
                return decision(bound, reason);
            }
        }
        decision(stabilized, why)
    }

    /// `stabilizeRecommendationWithBehaviors`: between the lowest recommendation of the
    /// scale-up window and the highest of the scale-down window, the current count if it
    /// lies there. Records `recommended`.
    fn stabilize(&mut self, now: f64, current: u32, recommended: u32) -> (u32, Limit) {
        let up_cutoff = now - self.cfg.up.stabilization;
        let down_cutoff = now - self.cfg.down.stabilization;
        let (mut up, mut down) = (recommended, recommended);
        for &(t, r) in &self.recommendations {
            if t > up_cutoff {
                up = up.min(r);
            }
            if t > down_cutoff {
                down = down.max(r);
            }
        }
        let oldest = up_cutoff.min(down_cutoff);
        while self
            .recommendations
            .front()
            .is_some_and(|(t, _)| *t < oldest)
        {
            self.recommendations.pop_front();
        }
        self.recommendations.push_back((now, recommended));
        let stabilized = current.max(up).min(down);
        let why = if stabilized == recommended {
            Limit::None
        } else if stabilized < recommended {
            Limit::ScaleUpStabilized
        } else {
            Limit::ScaleDownStabilized
        };
        (stabilized, why)
    }

    /// Replicas added and removed within the last `period` seconds.
    fn changes(&self, now: f64, period: f64) -> (u32, u32) {
        let within = |events: &VecDeque<(f64, u32)>| {
            events
                .iter()
                .filter(|(t, _)| *t > now - period)
                .fold(0u32, |s, (_, n)| s.saturating_add(*n))
        };
        (within(&self.ups), within(&self.downs))
    }

    /// `calculateScaleUpLimitWithScalingRules`.
    fn limit_up(&self, now: f64, current: u32) -> u32 {
        let rules = &self.cfg.up;
        let (mut result, pick): (u32, fn(u32, u32) -> u32) = match rules.select {
            Select::Disabled => return current,
            Select::Min => (u32::MAX, u32::min),
            Select::Max => (0, u32::max),
        };
        for p in &rules.policies {
            let (added, removed) = self.changes(now, p.period());
            let start = current.saturating_sub(added).saturating_add(removed);
            let proposed = match p {
                Policy::Pods { value, .. } => start.saturating_add(*value),
                // Rounded up, or a small fleet could never grow.
                Policy::Percent { value, .. } => {
                    ceil(f64::from(start) * (1.0 + f64::from(*value) / 100.0))
                }
            };
            result = pick(result, proposed);
        }
        if rules.policies.is_empty() {
            return u32::MAX;
        }
        result
    }

    /// `calculateScaleDownLimitWithBehaviors`.
    fn limit_down(&self, now: f64, current: u32) -> u32 {
        let rules = &self.cfg.down;
        let (mut result, pick): (u32, fn(u32, u32) -> u32) = match rules.select {
            Select::Disabled => return current,
            Select::Min => (0, u32::max),
            Select::Max => (u32::MAX, u32::min),
        };
        for p in &rules.policies {
            let (added, removed) = self.changes(now, p.period());
            let start = current.saturating_sub(added).saturating_add(removed);
            let proposed = match p {
                Policy::Pods { value, .. } => start.saturating_sub(*value),
                // Truncated: `int32(float64(start) * (1 - value/100))`.
                Policy::Percent { value, .. } => {
                    let v = f64::from(start) * (1.0 - f64::from(*value) / 100.0);
                    if v > 0.0 {
                        v as u32
                    } else {
                        0
                    }
                }
            };
            result = pick(result, proposed);
        }
        if rules.policies.is_empty() {
            return 0;
        }
        result
    }

    /// Remembers a change for the policies' periods; forgets what no period reaches.
    fn record_event(&mut self, now: f64, current: u32, desired: u32) {
        let longest = self
            .cfg
            .up
            .policies
            .iter()
            .chain(&self.cfg.down.policies)
            .map(Policy::period)
            .fold(0.0, f64::max);
        for events in [&mut self.ups, &mut self.downs] {
            while events.front().is_some_and(|(t, _)| *t <= now - longest) {
                events.pop_front();
            }
        }
        if desired > current {
            self.ups.push_back((now, desired - current));
        } else if desired < current {
            self.downs.push_back((now, current - desired));
        }
    }
}

#[cfg(test)]
mod tests;
