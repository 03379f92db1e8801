//! The cache's clock: the system's, or, in tests, one that only moves when told, so that
//! freshness and staleness windows are tested without waiting.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wall clock the cache reads (`Date`, `Age` and freshness are wall-clock times).
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<AtomicU64>>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock at `start` that moves only by [`Clock::advance`] (for tests).
    pub fn manual(start: SystemTime) -> Clock {
        let ns = start
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        Clock(Some(Arc::new(AtomicU64::new(ns))))
    }

    pub fn now(&self) -> SystemTime {
        match &self.0 {
            None => SystemTime::now(),
            Some(ns) => UNIX_EPOCH + Duration::from_nanos(ns.load(Relaxed)),
        }
    }

    /// Moves a manual clock forward; the system clock is not moved.
    pub fn advance(&self, d: Duration) {
        if let Some(ns) = &self.0 {
            ns.fetch_add(d.as_nanos() as u64, Relaxed);
        }
    }
}
