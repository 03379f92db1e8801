//! The breaker: after `breaker_failures` consecutive outages (timeouts, connection errors) calls
//! are refused at once instead of each paying the timeout; after `breaker_cooldown` one call is
//! let through as a probe, and its outcome closes the breaker or opens it for another cooldown.
//!
//! State and the probe deadline share one atomic word, so every transition is one
//! compare-and-swap: no lock, nothing held across an await, and two racing calls cannot both
//! become the probe.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Where the breaker stands, as [`crate::Redis::breaker`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// Calls go to Redis.
    Closed,
    /// Calls are refused with [`crate::Error::Unavailable`] without being tried; the first call
    /// after the cooldown becomes the probe.
    Open,
    /// One probe call is in flight; every other call is refused until it ends.
    HalfOpen,
}

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const STATE_BITS: u32 = 2;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;
/// The largest deadline the word holds: 2^62 ns, about 146 years after the breaker was built.
const MAX_DEADLINE: u64 = u64::MAX >> STATE_BITS;

/// The state machine behind [`Breaker`]. Cost per call: one atomic load when closed; a
/// compare-and-swap on the transitions, which happen once per outage, not per call.
#[derive(Debug)]
pub(crate) struct Circuit {
    /// `deadline << 2 | state`; the deadline (ns since `epoch`) is when an open breaker lets a
    /// probe through.
    word: AtomicU64,
    /// Consecutive outages seen while closed.
    failures: AtomicU32,
    epoch: Instant,
    threshold: u32,
    cooldown: Duration,
}

/// What a call's outcome changed, for the caller to log and export once per transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    /// Closed → Open after this many consecutive failures.
    Opened {
        failures: u32,
    },
    /// The probe failed: Open for another cooldown.
    Reopened,
    /// The probe succeeded: Closed.
    Closed,
}

/// Leave to make one call. A probe permit dropped before [`Permit::record`] (its caller gave
/// up) puts the breaker back to Open with the cooldown already over, so the next call probes:
/// a cancelled probe must not leave the breaker half-open forever.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    circuit: &'a Circuit,
    probe: bool,
    recorded: bool,
}

impl Circuit {
    /// `threshold` 0 never opens.
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Circuit {
            word: AtomicU64::new(CLOSED),
            failures: AtomicU32::new(0),
            epoch: Instant::now(),
            threshold,
            cooldown,
        }
    }

    fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.epoch))
    }

    fn open_until(&self, deadline: u64) -> u64 {
        (deadline.min(MAX_DEADLINE) << STATE_BITS) | OPEN
    }

    /// A permit for one call, or `None` when the breaker refuses it.
    pub(crate) fn admit(&self) -> Option<Permit<'_>> {
        let word = self.word.load(Ordering::Acquire);
        match word & STATE_MASK {
            CLOSED => Some(self.permit(false)),
            OPEN if self.now() >= word >> STATE_BITS => self
                .word
                .compare_exchange(word, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                .ok()
                .map(|_| self.permit(true)),
            _ => None,
        }
    }

    fn permit(&self, probe: bool) -> Permit<'_> {
        Permit {
            circuit: self,
            probe,
            recorded: false,
        }
    }

    pub(crate) fn state(&self) -> Breaker {
        match self.word.load(Ordering::Acquire) & STATE_MASK {
            CLOSED => Breaker::Closed,
            OPEN => Breaker::Open,
            _ => Breaker::HalfOpen,
        }
    }
}

impl Permit<'_> {
    /// Whether this call is the half-open probe.
    pub(crate) fn is_probe(&self) -> bool {
        self.probe
    }

    /// Records the call's outcome: `outage` is true for a timeout or a connection error, false
    /// for success and for application errors (Redis answered).
    pub(crate) fn record(mut self, outage: bool) -> Transition {
        self.recorded = true;
        let c = self.circuit;
        match (self.probe, outage) {
            (true, false) => {
                c.failures.store(0, Ordering::Relaxed);
                c.word.store(CLOSED, Ordering::Release);
                Transition::Closed
            }
            (true, true) => {
                let deadline = c.now().saturating_add(nanos(c.cooldown));
                c.word.store(c.open_until(deadline), Ordering::Release);
                Transition::Reopened
            }
            (false, false) => {
                c.failures.store(0, Ordering::Relaxed);
                Transition::None
            }
            (false, true) => {
                if c.threshold == 0 {
                    return Transition::None;
                }
                let failures = c.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
                if failures < c.threshold {
                    return Transition::None;
                }
                let deadline = c.now().saturating_add(nanos(c.cooldown));
                // Only a closed breaker opens: a call that started before it opened and fails
                // late changes nothing (and cannot push a probe's deadline back).
                match c.word.compare_exchange(
                    CLOSED,
                    c.open_until(deadline),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => Transition::Opened { failures },
                    Err(_) => Transition::None,
                }
            }
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            let c = self.circuit;
            let _ = c.word.compare_exchange(
                HALF_OPEN,
                c.open_until(c.now()),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const COOLDOWN: Duration = Duration::from_secs(1);

    fn fail(c: &Circuit) -> Transition {
        c.admit().expect("admitted").record(true)
    }

    fn open(c: &Circuit) {
        for _ in 0..2 {
            assert_eq!(fail(c), Transition::None);
        }
        assert_eq!(fail(c), Transition::Opened { failures: 3 });
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_open_the_breaker_and_calls_are_refused() {
        let c = Circuit::new(3, COOLDOWN);
        assert_eq!(fail(&c), Transition::None);
        assert_eq!(fail(&c), Transition::None);
        assert_eq!(c.state(), Breaker::Closed);
        assert_eq!(fail(&c), Transition::Opened { failures: 3 });
        assert_eq!(c.state(), Breaker::Open);
        assert!(c.admit().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_or_an_application_error_resets_the_count() {
        let c = Circuit::new(3, COOLDOWN);
        fail(&c);
        fail(&c);
        assert_eq!(c.admit().unwrap().record(false), Transition::None);
        fail(&c);
        fail(&c);
        assert_eq!(
            c.state(),
            Breaker::Closed,
            "2 + 2 failures are not 3 consecutive"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_cooldown_exactly_one_probe_is_let_through() {
        let c = Circuit::new(3, COOLDOWN);
        open(&c);
        advance(COOLDOWN - Duration::from_millis(1)).await;
        assert!(c.admit().is_none(), "still cooling down");
        advance(Duration::from_millis(1)).await;
        let probe = c.admit().expect("the probe");
        assert!(probe.is_probe());
        assert_eq!(c.state(), Breaker::HalfOpen);
        assert!(c.admit().is_none(), "a second call while the probe runs");
        probe.record(false);
    }

    #[tokio::test(start_paused = true)]
    async fn a_successful_probe_closes_the_breaker() {
        let c = Circuit::new(3, COOLDOWN);
        open(&c);
        advance(COOLDOWN).await;
        assert_eq!(c.admit().unwrap().record(false), Transition::Closed);
        assert_eq!(c.state(), Breaker::Closed);
        let call = c.admit().expect("closed again");
        assert!(!call.is_probe());
        call.record(false);
        // The count started again from zero.
        open(&c);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_the_breaker_for_another_cooldown() {
        let c = Circuit::new(3, COOLDOWN);
        open(&c);
        advance(COOLDOWN).await;
        assert_eq!(c.admit().unwrap().record(true), Transition::Reopened);
        assert_eq!(c.state(), Breaker::Open);
        advance(COOLDOWN - Duration::from_millis(1)).await;
        assert!(c.admit().is_none());
        advance(Duration::from_millis(1)).await;
        assert!(c.admit().expect("the next probe").is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_lets_the_next_call_probe() {
        let c = Circuit::new(3, COOLDOWN);
        open(&c);
        advance(COOLDOWN).await;
        drop(c.admit().expect("the probe"));
        assert_eq!(c.state(), Breaker::Open);
        assert!(c.admit().expect("probe again, no new cooldown").is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_failure_does_not_push_the_probe_back() {
        let c = Circuit::new(3, COOLDOWN);
        let late = c.admit().unwrap(); // started while closed
        open(&c);
        advance(COOLDOWN).await;
        assert_eq!(late.record(true), Transition::None);
        assert!(c.admit().expect("probe on time").is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn threshold_zero_never_opens() {
        let c = Circuit::new(0, COOLDOWN);
        for _ in 0..100 {
            assert_eq!(fail(&c), Transition::None);
        }
        assert_eq!(c.state(), Breaker::Closed);
    }
}
