//! GCRA, the generic cell rate algorithm: a rate and a burst kept as one number per key,
//! the theoretical arrival time (TAT) of the next request at the steady rate. A request at
//! `now` passes when `TAT - now` is within the burst tolerance, and pushes the TAT one
//! emission interval further. No window boundaries (a fixed window admits twice its count
//! across a boundary), no refill timers, one integer of state: the same arithmetic runs
//! here in memory and in the Redis script (`redis_limit`), so both decide alike.
//!
//! Times are nanoseconds on any monotonic base (the local limiter's start; Redis's `TIME`
//! for the shared one); only differences matter.

use std::time::Duration;

/// A limit: `count` requests per `period`, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The emission interval T = period / count: one request's share of the period.
    pub interval: u64,
    /// The burst tolerance τ = T × (burst − 1): how far ahead of `now` the TAT may run
    /// for a request to still pass.
    pub tolerance: u64,
    /// Requests that may come at once on a fresh key (≥ 1).
    pub burst: u32,
}

impl Quota {
    /// `count` per `period`, `burst` at once (0 means the count). `count` and `period` are
    /// validated by the config (both > 0); the interval is at least 1 ns.
    pub fn new(count: u64, period: Duration, burst: u32) -> Quota {
        let burst = if burst == 0 {
            u32::try_from(count).unwrap_or(u32::MAX)
        } else {
            burst
        };
        let interval = (period.as_nanos() / u128::from(count.max(1))).max(1);
        let interval = u64::try_from(interval).unwrap_or(u64::MAX);
        Quota {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1) - 1)),
            burst: burst.max(1),
        }
    }

    /// The window of `RateLimit-Policy`: the time in which `burst` requests come back,
    /// in whole seconds (at least 1).
    pub fn window_secs(&self) -> u64 {
        let w = self.interval.saturating_mul(u64::from(self.burst));
        w.div_ceil(1_000_000_000).max(1)
    }
}

/// What one request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Passed. `remaining`: requests that would still pass right now; `reset`: nanoseconds
    /// until the whole burst is available again.
    Allow { remaining: u32, reset: u64 },
    /// Limited. `retry_after`: nanoseconds until one request passes again.
    Deny { retry_after: u64, reset: u64 },
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// Decides a request at `now` on a key whose TAT is `tat` (0: a fresh key). Returns the
/// decision and the TAT to store (`None`: unchanged, the request was denied).
pub fn decide(q: &Quota, tat: u64, now: u64) -> (Decision, Option<u64>) {
    let tat = tat.max(now);
    let ahead = tat - now;
    if ahead > q.tolerance {
        let retry_after = ahead - q.tolerance;
        return (
            Decision::Deny {
                retry_after,
                reset: ahead,
            },
            None,
        );
    }
    let new_tat = tat.saturating_add(q.interval);
    let reset = new_tat - now;
    // Requests that still pass now: while the TAT stays within the tolerance.
    let remaining = if reset > q.tolerance {
        0
    } else {
        u32::try_from((q.tolerance - reset) / q.interval + 1).unwrap_or(u32::MAX)
    };
    (Decision::Allow { remaining, reset }, Some(new_tat))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// Runs `n` requests at `now` on one key; returns how many passed and the final TAT.
    fn burst_at(q: &Quota, tat: &mut u64, now: u64, n: u32) -> u32 {
        let mut passed = 0;
        for _ in 0..n {
            let (d, next) = decide(q, *tat, now);
            if let Some(t) = next {
                *tat = t;
            }
            passed += u32::from(d.allowed());
        }
        passed
    }

    #[test]
    fn a_fresh_key_takes_its_burst_at_once_and_no_more() {
        let q = Quota::new(10, Duration::from_secs(1), 0);
        let mut tat = 0;
        assert_eq!(burst_at(&q, &mut tat, 5 * S, 25), 10);
    }

    #[test]
    fn the_steady_rate_passes_exactly_count_per_period() {
        // 10/s with burst 1: one request every 100 ms passes, the next one too early fails.
        let q = Quota::new(10, Duration::from_secs(1), 1);
        let mut tat = 0;
        let mut passed = 0;
        for i in 0..100u64 {
            passed += burst_at(&q, &mut tat, S + i * S / 10, 1);
            assert_eq!(
                burst_at(&q, &mut tat, S + i * S / 10 + 1, 1),
                0,
                "request {i}"
            );
        }
        assert_eq!(passed, 100);
    }

    #[test]
    fn over_a_long_run_no_more_than_rate_times_time_plus_burst_pass() {
        // 5/s, burst 5, hammered every 10 ms for 60 s: 5 × 60 + 5 at most.
        let q = Quota::new(5, Duration::from_secs(1), 5);
        let mut tat = 0;
        let mut passed = 0;
        for i in 0..6_000u64 {
            passed += burst_at(&q, &mut tat, i * S / 100, 1);
        }
        assert!((300..=305).contains(&passed), "{passed}");
    }

    #[test]
    fn remaining_counts_down_and_retry_after_says_when_one_passes_again() {
        let q = Quota::new(3, Duration::from_secs(3), 3);
        let now = 10 * S;
        let (d, t) = decide(&q, 0, now);
        assert_eq!(
            d,
            Decision::Allow {
                remaining: 2,
                reset: S
            }
        );
        let (d, t) = decide(&q, t.unwrap(), now);
        assert_eq!(
            d,
            Decision::Allow {
                remaining: 1,
                reset: 2 * S
            }
        );
        let (d, t) = decide(&q, t.unwrap(), now);
        assert_eq!(
            d,
            Decision::Allow {
                remaining: 0,
                reset: 3 * S
            }
        );
        let tat = t.unwrap();
        let (d, t) = decide(&q, tat, now);
        assert_eq!(
            d,
            Decision::Deny {
                retry_after: S,
                reset: 3 * S
            }
        );
        assert_eq!(t, None, "a denied request does not move the TAT");
        // One interval later exactly one passes.
        let (d, _) = decide(&q, tat, now + S);
        assert!(d.allowed());
    }

    #[test]
    fn an_idle_key_is_whole_again() {
        let q = Quota::new(2, Duration::from_secs(1), 2);
        let mut tat = 0;
        assert_eq!(burst_at(&q, &mut tat, S, 5), 2);
        assert_eq!(burst_at(&q, &mut tat, 100 * S, 5), 2);
    }

    #[test]
    fn slow_rates_and_huge_counts_do_not_overflow() {
        let q = Quota::new(1, Duration::from_secs(86_400 * 365), 1);
        assert_eq!(q.window_secs(), 86_400 * 365);
        let mut tat = 0;
        assert_eq!(burst_at(&q, &mut tat, u64::MAX / 2, 3), 1);
        let q = Quota::new(u64::MAX, Duration::from_secs(1), 0);
        assert_eq!(q.interval, 1);
        assert_eq!(q.burst, u32::MAX);
        let (d, _) = decide(&q, 0, 0);
        assert!(d.allowed());
    }

    #[test]
    fn the_policy_window_is_the_time_the_burst_takes_to_come_back() {
        assert_eq!(Quota::new(10, Duration::from_secs(1), 0).window_secs(), 1);
        assert_eq!(Quota::new(10, Duration::from_secs(1), 20).window_secs(), 2);
        assert_eq!(
            Quota::new(1000, Duration::from_secs(3600), 0).window_secs(),
            3600
        );
    }
}
