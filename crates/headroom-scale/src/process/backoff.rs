//! How long to wait before restarting a replica that crashed, and when it is crash-looping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Restart delays for one replica slot: 1 s, 2 s, 4 s … capped at [`Backoff::MAX`], back to
/// 1 s once a replica has run [`Backoff::RESET_AFTER`]; [`Backoff::crash_looping`] when
/// [`Backoff::LOOP_EXITS`] exits happened within [`Backoff::LOOP_WINDOW`], and the delay then
/// stays at the cap while it lasts (the controller reports it and keeps restarting).
///
/// Pure: the caller passes the times, from any monotonic clock (tokio's converts with
/// `into_std`). Cost: at most `LOOP_EXITS` instants kept.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    /// Crashes since the last reset: the exponent of the next delay.
    failures: u32,
    /// The last exits, oldest first, at most `LOOP_EXITS`.
    exits: VecDeque<Instant>,
}

impl Backoff {
    /// The first delay. One second: long enough not to spin on a command that fails at
    /// once, short enough that a one-off crash costs little capacity.
    pub const FIRST: Duration = Duration::from_secs(1);
    /// The cap of the doubling delays, as Kubernetes' CrashLoopBackOff caps at 5 minutes
    /// for pods; a local process is cheaper to retry, so one minute.
    pub const MAX: Duration = Duration::from_secs(60);
    /// A replica that ran this long before exiting was healthy: the next delay is `FIRST`.
    pub const RESET_AFTER: Duration = Duration::from_secs(60);
    /// This many exits within `LOOP_WINDOW` is a crash loop.
    pub const LOOP_EXITS: usize = 5;
    /// See `LOOP_EXITS`.
    pub const LOOP_WINDOW: Duration = Duration::from_secs(5 * 60);

    /// No crash yet.
    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// A replica started at `started` exited (unexpectedly) at `now`: the delay before
    /// starting its replacement.
    pub fn on_exit(&mut self, started: Instant, now: Instant) -> Duration {
        if now.saturating_duration_since(started) >= Self::RESET_AFTER {
            self.failures = 0;
        }
        if self.exits.len() == Self::LOOP_EXITS {
            self.exits.pop_front();
        }
        self.exits.push_back(now);
        let delay = if self.crash_looping(now) {
            Self::MAX
        } else {
            // 2^6 s > 60 s: past that exponent the cap applies anyway, no overflow.
            (Self::FIRST * 2u32.pow(self.failures.min(6))).min(Self::MAX)
        };
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// True when `LOOP_EXITS` exits happened within the `LOOP_WINDOW` before `now`.
    pub fn crash_looping(&self, now: Instant) -> bool {
        self.exits.len() == Self::LOOP_EXITS
            && self
                .exits
                .front()
                .is_some_and(|first| now.saturating_duration_since(*first) <= Self::LOOP_WINDOW)
    }
}
