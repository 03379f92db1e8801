//! How long a receiver's delivery waits before trying a failed notification again.

use std::time::Duration;

/// Exponential back-off with jitter: the `n`th retry waits `initial × 2ⁿ⁻¹`, capped at
/// `max`, less a random part of up to `jitter` of it (so receivers that failed together
/// do not retry together, and no wait exceeds `max`).
///
/// Default: 1 s doubling to 5 min, 20 % jitter — 1, 2, 4, … 256 s, then 300 s, a long
/// outage costs one attempt per 5 minutes per receiver.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The wait before the first retry.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// The share of each wait (0.0 to 1.0) that is random: the wait is in
    /// `[(1 − jitter) × d, d]`. Values outside 0..=1 are clamped.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The wait after `failures` consecutive failed attempts (`failures ≥ 1`; 0 is treated
    /// as 1), with `random` in `[0, 1)` choosing the jitter. Cost: a few float operations.
    pub fn delay(&self, failures: u32, random: f64) -> Duration {
        let doublings = failures.saturating_sub(1).min(63);
        let full = self
            .initial
            .checked_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max);
        let jitter = self.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0);
        full.mul_f64(1.0 - jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn waits_double_from_one_second_to_five_minutes() {
        let b = Backoff::default();
        let waits: Vec<Duration> = (1..=12).map(|n| b.delay(n, 0.0)).collect();
        assert_eq!(
            waits,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300].map(|s| s * S)
        );
        assert_eq!(
            b.delay(u32::MAX, 0.0),
            300 * S,
            "no overflow after many failures"
        );
    }

    #[test]
    fn jitter_only_shortens_a_wait_by_at_most_its_share() {
        let b = Backoff::default();
        assert_eq!(b.delay(4, 0.5), Duration::from_millis(7_200));
        assert!(b.delay(20, 0.999_999) >= 240 * S);
        assert!(b.delay(20, 0.999_999) <= 300 * S);
    }
}
