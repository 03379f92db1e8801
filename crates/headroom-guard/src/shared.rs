//! Shared limits: the GCRA state of each key in Redis, decided by one script call (one
//! round trip, atomic on the key's node) so every instance enforces one limit.
//!
//! Time is Redis's own (`TIME` inside the script), so instances with skewed clocks still
//! agree. Microseconds, not nanoseconds: Lua numbers are doubles, exact to 2^53, and a TAT
//! in nanoseconds since 1970 is past that. Each key is one Redis string holding its TAT,
//! expiring when the key is whole again, so idle keys cost Redis nothing.

use crate::gcra::{Decision, Quota};
use headroom_config::guard::{Fallback, GuardRedisConfig};
use headroom_redis::{Metrics, Options, Redis, Target};
use headroom_telemetry::{Counter, Registry};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

/// GCRA in Redis. KEYS[1]: the key's TAT (µs); ARGV: interval and tolerance (µs).
/// Returns {1, reset} when the request passes, {0, retry_after, reset} when it does not.
const SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local ahead = tat - now
if ahead > tolerance then
  return {0, ahead - tolerance, ahead}
end
local new = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.ceil((new - now) / 1000) + 1)
return {1, new - now, 0}
";

/// The Redis every shared limit of this process uses.
pub struct SharedStore {
    redis: Redis,
    script: redis::Script,
    prefix: String,
    pub(crate) fallback: Fallback,
    pub(crate) instances: u32,
    /// Set while Redis cannot decide: the transition is logged once each way.
    degraded: AtomicBool,
    decided: Arc<Counter>,
    fell_back: Arc<Counter>,
}

/// What Redis said, or that it could not say.
pub(crate) enum SharedDecision {
    Decided(Decision),
    Unavailable,
}

impl SharedStore {
    pub fn new(cfg: &GuardRedisConfig, registry: &Registry) -> Result<SharedStore, String> {
        let target = match &cfg.redis.target {
            headroom_config::cache::RedisTarget::Standalone(u) => Target::Standalone(u.clone()),
            headroom_config::cache::RedisTarget::Cluster(u) => Target::Cluster(u.clone()),
        };
        let labels = [("component", "guard")];
        let opts = Options {
            timeout: cfg.redis.timeout,
            breaker_failures: cfg.redis.breaker_failures,
            breaker_cooldown: cfg.redis.breaker_cooldown,
            metrics: Some(Metrics {
                latency: registry.histogram(
                    "headroom_guard_redis_seconds",
                    "Time per rate-limit decision made in Redis.",
                    &labels,
                ),
                errors: registry.counter(
                    "headroom_guard_redis_errors_total",
                    "Rate-limit decisions Redis failed to make (timeouts included).",
                    &labels,
                ),
                rejected: registry.counter(
                    "headroom_guard_redis_rejected_total",
                    "Rate-limit decisions not sent to Redis: its breaker was open.",
                    &labels,
                ),
                breaker_open: registry.gauge(
                    "headroom_guard_redis_breaker_open",
                    "1 while the breaker in front of the rate limits' Redis is open.",
                    &labels,
                ),
            }),
            ..Options::default()
        };
        let redis = Redis::new(target, opts).map_err(|e| e.to_string())?;
        Ok(SharedStore {
            redis,
            script: redis::Script::new(SCRIPT),
            prefix: cfg.redis.prefix.clone(),
            fallback: cfg.fallback,
            instances: cfg.instances,
            degraded: AtomicBool::new(false),
            decided: registry.counter(
                "headroom_guard_redis_decisions_total",
                "Shared rate-limit decisions, by who made them: redis, or the fallback.",
                &[("by", "redis")],
            ),
            fell_back: registry.counter(
                "headroom_guard_redis_decisions_total",
                "Shared rate-limit decisions, by who made them: redis, or the fallback.",
                &[("by", "fallback")],
            ),
        })
    }

    /// The Redis key of `hash` under a limit: `prefix{route/limit/hash}`, hash-tagged whole
    /// so one key's state lives on one cluster slot.
    pub(crate) fn key(&self, scope: &str, hash: u64) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + scope.len() + 19);
        k.extend_from_slice(self.prefix.as_bytes());
        k.push(b'{');
        k.extend_from_slice(scope.as_bytes());
        k.push(b'/');
        k.extend_from_slice(format!("{hash:016x}").as_bytes());
        k.push(b'}');
        k
    }

    /// One decision on `key` under `quota`, in one round trip.
    pub(crate) async fn decide(&self, quota: &Quota, key: &[u8]) -> SharedDecision {
        let interval = (quota.interval / 1_000).max(1);
        let tolerance = quota.tolerance / 1_000;
        let mut a = itoa::Buffer::new();
        let mut b = itoa::Buffer::new();
        let args: [&[u8]; 2] = [
            a.format(interval).as_bytes(),
            b.format(tolerance).as_bytes(),
        ];
        let answer: Result<Vec<i64>, _> = self.redis.script(&self.script, &[key], &args).await;
        let us = |v: i64| u64::try_from(v).unwrap_or(0).saturating_mul(1_000);
        let decision = match answer.as_deref() {
            Ok([1, reset, ..]) => {
                let reset = us(*reset);
                let remaining = if reset > quota.tolerance {
                    0
                } else {
                    u32::try_from((quota.tolerance - reset) / quota.interval + 1)
                        .unwrap_or(u32::MAX)
                };
                Some(Decision::Allow { remaining, reset })
            }
            Ok([0, retry_after, reset]) => Some(Decision::Deny {
                retry_after: us(*retry_after),
                reset: us(*reset),
            }),
            Ok(other) => {
                self.degrade(&format!("unexpected script answer {other:?}"));
                None
            }
            Err(e) => {
                self.degrade(&e.to_string());
                None
            }
        };
        match decision {
            Some(d) => {
                self.decided.inc();
                if self.degraded.swap(false, Relaxed) {
                    tracing::info!(redis = %self.redis.target(), "rate limits: Redis decides again");
                }
                SharedDecision::Decided(d)
            }
            None => {
                self.fell_back.inc();
                SharedDecision::Unavailable
            }
        }
    }

    fn degrade(&self, why: &str) {
        if !self.degraded.swap(true, Relaxed) {
            let then = match self.fallback {
                Fallback::Local => "each instance enforces its share in memory",
                Fallback::Closed => "requests under shared limits get 503",
            };
            tracing::warn!(redis = %self.redis.target(), error = why, "rate limits: Redis cannot decide; {then} until it answers");
        }
    }
}
