//! A retry budget: retries may add at most a share of extra load, plus a small floor per
//! second, so retries never turn a struggling service into a dead one (as Finagle and linkerd).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Tokens are counted in thousandths; one retry costs 1000.
#[derive(Debug)]
pub struct RetryBudget {
    /// Deposited per original request: budget share x 1000.
    deposit: i64,
    /// Cap on saved tokens, so a quiet hour cannot fund a retry storm.
    cap: i64,
    balance: AtomicI64,
    min_per_second: u64,
    /// (second << 32) | retries taken from the per-second floor in that second.
    floor: AtomicU64,
}

impl RetryBudget {
    pub fn new(share: f64, min_per_second: u32) -> Self {
        let deposit = (share * 1000.0).round() as i64;
        RetryBudget {
            deposit,
            // Enough for 100 retries, or for one second of the floor, whichever is more.
            cap: 1000 * 100.max(i64::from(min_per_second)),
            balance: AtomicI64::new(0),
            min_per_second: u64::from(min_per_second),
            floor: AtomicU64::new(0),
        }
    }

    /// True when the budget was made with these terms (a reload that keeps them keeps the
    /// budget and its saved tokens).
    pub fn has_terms(&self, share: f64, min_per_second: u32) -> bool {
        self.deposit == (share * 1000.0).round() as i64
            && self.min_per_second == u64::from(min_per_second)
    }

    /// Called once per original request.
    pub fn deposit(&self) {
        if self.deposit > 0 && self.balance.load(Relaxed) < self.cap {
            self.balance.fetch_add(self.deposit, Relaxed);
        }
    }

    /// Takes one retry's worth; false when the budget is spent. `second` is the current
    /// whole second of the clock.
    pub fn withdraw(&self, second: u64) -> bool {
        if self.balance.fetch_sub(1000, Relaxed) >= 1000 {
            return true;
        }
        self.balance.fetch_add(1000, Relaxed);
        if self.min_per_second == 0 {
            return false;
        }
        let cur = self.floor.load(Relaxed);
        let (sec, used) = (cur >> 32, cur & 0xffff_ffff);
        let next = if sec == second {
            if used >= self.min_per_second {
                return false;
            }
            cur + 1
        } else {
            (second << 32) | 1
        };
        self.floor
            .compare_exchange(cur, next, Relaxed, Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_capped_by_the_share_of_requests() {
        let b = RetryBudget::new(0.2, 0);
        let mut retries = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.withdraw(1) {
                retries += 1;
            }
        }
        assert_eq!(retries, 200);
    }

    #[test]
    fn the_floor_allows_a_few_retries_each_second() {
        let b = RetryBudget::new(0.0, 3);
        let granted = (0..10).filter(|_| b.withdraw(7)).count();
        assert_eq!(granted, 3);
        assert!(b.withdraw(8));
    }
}
