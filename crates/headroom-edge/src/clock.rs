//! A monotonic nanosecond clock shared by every thread, so times fit in atomics.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process' clock epoch; never 0, so 0 can mean "never".
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64 + 1
}

pub fn ns(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}
