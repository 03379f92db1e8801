//! A JWKS URL's keys, kept fresh in the background: fetched on a schedule, and early (at
//! most once per `min_refetch`) when a token names a key the set does not have. A failed
//! fetch, or a document with no usable key, keeps the last good keys; each change between
//! working and failing is logged once.
//!
//! Verification reads the keys through an `ArcSwap` (no lock); the schedule and the rate
//! limit are behind a small mutex taken only on a refetch, never per token.

use super::{fetch::HttpFetcher, keys_from_jwks, AlgSet, KeySet};
use arc_swap::ArcSwap;
use bytes::Bytes;
#[cfg(test)]
use std::future::Future;
#[cfg(test)]
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// How long a token that names an unknown `kid` waits for the refetch it triggers (or one
/// already under way): long enough for one round trip to an identity provider, short
/// enough that a client is not held when the provider is slow.
pub(crate) const KID_MISS_WAIT: Duration = Duration::from_secs(2);

#[cfg(test)]
type FetchFuture = Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send>>;

/// Where the document comes from: the URL, or in tests anything that yields bytes.
pub(crate) enum Fetch {
    Http(Box<HttpFetcher>),
    #[cfg(test)]
    Fn(Box<dyn Fn() -> FetchFuture + Send + Sync>),
}

impl Fetch {
    async fn get(&self) -> Result<Bytes, String> {
        match self {
            Fetch::Http(http) => http.get().await,
            #[cfg(test)]
            Fetch::Fn(f) => f().await,
        }
    }
}

#[derive(Debug, Default)]
struct Schedule {
    /// When the last fetch began (scheduled, early or by hand).
    last: Option<Instant>,
    /// A fetch is under way, or asked for and about to begin.
    busy: bool,
    /// The background task runs.
    started: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Unknown,
    Good,
    Failing,
}

/// One JWKS URL's keys and their refresh.
pub(crate) struct Refresher {
    fetch: Fetch,
    label: String,
    allowed: AlgSet,
    pub(crate) keys: Arc<ArcSwap<KeySet>>,
    every: Duration,
    min_refetch: Duration,
    schedule: Mutex<Schedule>,
    health: Mutex<Health>,
    /// Counts finished fetches: a token waiting on a refetch watches it move.
    done: watch::Sender<u64>,
    wake: Notify,
}

impl Refresher {
    pub(crate) fn new(
        fetch: Fetch,
        label: String,
        allowed: AlgSet,
        every: Duration,
        min_refetch: Duration,
    ) -> Refresher {
        Refresher {
            fetch,
            label,
            allowed,
            keys: Arc::default(),
            every,
            min_refetch,
            schedule: Mutex::default(),
            health: Mutex::new(Health::Unknown),
            done: watch::channel(0).0,
            wake: Notify::new(),
        }
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spawns the background task on the current tokio runtime (none: nothing, and keys
    /// come only from [`Refresher::refresh`]). The caller aborts the task when it is done with the keys.
    pub(crate) fn start(self: &Arc<Self>) -> Option<tokio::task::AbortHandle> {
        let rt = tokio::runtime::Handle::try_current().ok()?;
        {
            let mut s = self.schedule();
            if s.started {
                return None;
            }
            s.started = true;
            // The first fetch is under way from now: early tokens wait for it.
            s.busy = true;
        }
        let this = self.clone();
        Some(rt.spawn(async move { this.run().await }).abort_handle())
    }

    async fn run(&self) {
        let mut failures = 0u32;
        loop {
            let ok = self.refresh().await.is_ok();
            failures = if ok { 0 } else { failures.saturating_add(1) };
            // After a failure, try again sooner than the schedule: min_refetch, doubling.
            let wait = match failures {
                0 => self.every,
                n => self
                    .min_refetch
                    .max(Duration::from_secs(1))
                    .saturating_mul(1 << (n - 1).min(10))
                    .min(self.every),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Fetches now, whatever the schedule; keeps the last good keys on failure. The number
    /// of keys in use afterwards, or why the fetch failed.
    pub(crate) async fn refresh(&self) -> Result<usize, String> {
        {
            let mut s = self.schedule();
            s.last = Some(Instant::now());
            s.busy = true;
        }
        let got = self
            .fetch
            .get()
            .await
            .and_then(|body| keys_from_jwks(&body, self.allowed));
        let result = match got {
            Ok((keys, skipped)) => {
                let n = keys.len();
                self.keys.store(Arc::new(KeySet { keys }));
                self.healthy(n, &skipped);
                Ok(n)
            }
            Err(why) => {
                self.failing(&why);
                Err(why)
            }
        };
        self.schedule().busy = false;
        self.done.send_modify(|n| *n += 1);
        result
    }

    fn healthy(&self, n: usize, skipped: &[String]) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if *h != Health::Good {
            tracing::info!(jwks = %self.label, keys = n, skipped = ?skipped, "JWT keys fetched");
        }
        *h = Health::Good;
    }

    fn failing(&self, why: &str) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if *h != Health::Failing {
            let kept = self.keys.load().keys.len();
            tracing::warn!(jwks = %self.label, error = why, kept, "JWT keys cannot be fetched; the last good keys are kept until they can");
        }
        *h = Health::Failing;
    }

    /// Counts finished fetches.
    #[cfg(test)]
    pub(crate) fn finished(&self) -> watch::Receiver<u64> {
        self.done.subscribe()
    }

    /// A token named a key the set lacks: asks for an early fetch unless one ran less than
    /// `min_refetch` ago. `Some(receiver)` to wait on when a fetch is (now) under way,
    /// `None` when the rate limit (or no background task) says the token fails at once.
    pub(crate) fn refetch_for_unknown_key(&self) -> Option<watch::Receiver<u64>> {
        let mut s = self.schedule();
        if !s.started {
            return None;
        }
        // Subscribed under the lock, before the fetch can finish: its end is seen.
        let rx = self.done.subscribe();
        if s.busy {
            return Some(rx);
        }
        if s.last.is_some_and(|t| t.elapsed() < self.min_refetch) {
            return None;
        }
        s.busy = true;
        drop(s);
        self.wake.notify_one();
        Some(rx)
    }
}
