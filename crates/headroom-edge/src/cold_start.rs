//! Scale from zero: a service the autoscaler may take down to no replica (`min = 0`) holds
//! the requests that find it empty — in a bounded queue, for at most `cold_start_timeout` —
//! wakes the autoscaler, and releases them to the first replica that takes traffic. What
//! does not fit, or waits too long, gets 503 with `Retry-After`.
//!
//! The gate lives beside the snapshot (one per service, kept across reloads), so a request
//! that started on a snapshot without replicas is released onto the one that has them. A
//! service without `min = 0` has no gate and pays one `None` check.

use crate::pipeline::Answer;
use crate::snapshot::Service;
use crate::Shared;
use headroom_telemetry::{Counter, Gauge, Histogram, Registry};
use http::{HeaderValue, StatusCode};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A held request looks again this often even if no one wakes it: a replica whose health
/// check passes makes no snapshot change to signal. A cold path: a few wakes per request.
const RECHECK: Duration = Duration::from_millis(25);

/// One service's gate.
#[derive(Debug)]
pub struct ColdStart {
    service: String,
    timeout_ms: AtomicU64,
    queue: AtomicU32,
    waiting: AtomicU32,
    /// Wakes the autoscaler: a request is waiting for a replica.
    pub arrived: Notify,
    /// Wakes held requests: a replica joined or became healthy.
    ready: Notify,
    /// When the first request found the service empty (clock ns since the process
    /// started, +1), 0 when none waits: the cold start's length is measured from it.
    first_wait: AtomicU64,
    last_cold_start_ms: AtomicU64,
    held: Arc<Gauge>,
    released: Arc<Counter>,
    timed_out: Arc<Counter>,
    refused: Arc<Counter>,
    cold_starts: Arc<Histogram>,
}

impl ColdStart {
    pub fn new(service: &str, timeout: Duration, queue: u32, registry: &Registry) -> ColdStart {
        let labels = [("service", service)];
        let outcome = |result: &str| {
            registry.counter(
                "headroom_autoscale_held_requests_total",
                "Requests held while the service had no replica (min = 0), by outcome: released to a replica, timed_out (503 after cold_start_timeout), refused (503: the queue was full).",
                &[("service", service), ("result", result)],
            )
        };
        ColdStart {
            service: service.to_string(),
            timeout_ms: AtomicU64::new(timeout.as_millis() as u64),
            queue: AtomicU32::new(queue),
            waiting: AtomicU32::new(0),
            arrived: Notify::new(),
            ready: Notify::new(),
            first_wait: AtomicU64::new(0),
            last_cold_start_ms: AtomicU64::new(0),
            held: registry.gauge(
                "headroom_autoscale_held_requests",
                "Requests waiting now for the service's first replica.",
                &labels,
            ),
            released: outcome("released"),
            timed_out: outcome("timed_out"),
            refused: outcome("refused"),
            cold_starts: registry.histogram(
                "headroom_autoscale_cold_start_seconds",
                "From the first request finding the service without a replica to its release onto one.",
                &labels,
            ),
        }
    }

    /// A reload's new terms (the gate and what it measured stay).
    pub fn set_terms(&self, timeout: Duration, queue: u32) {
        self.timeout_ms.store(timeout.as_millis() as u64, Relaxed);
        self.queue.store(queue, Relaxed);
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Relaxed)
    }

    /// The last cold start's length, if there was one.
    pub fn last_cold_start(&self) -> Option<Duration> {
        match self.last_cold_start_ms.load(Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// A replica joined or became healthy: held requests look again.
    pub fn replica_ready(&self) {
        self.ready.notify_waiters();
    }

    /// Holds the request until the service in force has a replica taking traffic, and
    /// returns that service; 503 when the queue is full or the timeout passes.
    pub(crate) async fn hold(&self, shared: &Shared) -> Result<Arc<Service>, Answer> {
        let timeout = Duration::from_millis(self.timeout_ms.load(Relaxed));
        let queued = self.waiting.fetch_add(1, Relaxed);
        let _waiting = Waiting(self);
        if queued >= self.queue.load(Relaxed) {
            self.refused.inc();
            return Err(unavailable(
                format!(
                    "service \"{}\" is starting its first replica and {queued} requests already wait for it",
                    self.service
                ),
                timeout,
            ));
        }
        self.held.inc();
        let _held = Held(&self.held);
        let _ = self
            .first_wait
            .compare_exchange(0, crate::clock::now_ns(), Relaxed, Relaxed);
        self.arrived.notify_one();
        let deadline = Instant::now() + timeout;
        loop {
            // Registered before the look, so a replica arriving in between still wakes us.
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if let Some(service) = self.available(shared) {
                self.released.inc();
                let since = self.first_wait.swap(0, Relaxed);
                if since != 0 {
                    let took = Duration::from_nanos(crate::clock::now_ns().saturating_sub(since));
                    self.cold_starts.observe(took);
                    self.last_cold_start_ms
                        .store((took.as_millis() as u64).max(1), Relaxed);
                }
                return Ok(service);
            }
            let now = Instant::now();
            if now >= deadline {
                self.timed_out.inc();
                return Err(unavailable(
                    format!(
                        "service \"{}\" has no replica yet: none took traffic within cold_start_timeout ({} ms)",
                        self.service,
                        timeout.as_millis()
                    ),
                    timeout,
                ));
            }
            let wake = deadline.min(now + RECHECK);
            tokio::select! {
                _ = ready => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// The service in force, if a replica of it takes traffic.
    fn available(&self, shared: &Shared) -> Option<Arc<Service>> {
        let snap = shared.snapshot.load();
        let service = snap.services.iter().find(|s| *s.name == *self.service)?;
        let now = crate::clock::now_ns();
        service
            .replicas
            .iter()
            .any(|r| r.is_available(now))
            .then(|| service.clone())
    }
}

struct Waiting<'a>(&'a ColdStart);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.0.waiting.fetch_sub(1, Relaxed) == 1 {
            // The last one gone (a client that gave up included): the next wait is a new
            // cold start, unless a release measured this one.
            self.0.first_wait.store(0, Relaxed);
        }
    }
}

struct Held<'a>(&'a Gauge);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn unavailable(message: String, retry_after: Duration) -> Answer {
    let mut a = Answer::new(StatusCode::SERVICE_UNAVAILABLE, "cold_start", message);
    let secs = retry_after.as_secs().clamp(1, 60);
    a.headers = vec![(http::header::RETRY_AFTER, HeaderValue::from(secs))];
    a
}
