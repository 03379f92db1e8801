//! Load shedding for one service: a concurrency limit (fixed, or found by the adaptive
//! controller of [`adaptive`]) in front of a bounded wait queue ordered by priority.
//!
//! # Who gets a slot, who waits, who is shed
//!
//! A service has a *limit* `L` of requests in flight and a queue of `Q` places. A share
//! `reserve` (default 10 %) of both is kept for critical requests, `r = ⌊L·reserve⌋`,
//! `rq = ⌊Q·reserve⌋`:
//!
//! | priority    | takes a slot while in flight is under | may wait in the queue                       |
//! |-------------|----------------------------------------|---------------------------------------------|
//! | `Critical`  | `L`                                    | while it holds under `Q`; a full queue makes room by turning away its newest lowest-priority waiter |
//! | `Normal`    | `L − r`                                | while it holds under `Q − rq`; past that, by turning away the newest sheddable waiter |
//! | `Sheddable` | `L − 2r`                               | only when the queue is empty: never behind anyone |
//!
//! (each ceiling is at least 1). So as load rises, sheddable requests are the first to be
//! turned away (at 80 % of the limit with the default reserve, and whenever anyone waits),
//! normal ones next (at 90 %, or when the queue is full), critical ones last (at the limit
//! with a full queue of critical requests). A request never takes a slot while a request
//! of its priority or a higher one waits: a freed slot goes to the queue's head (critical
//! first, then normal, then sheddable; first come first served within a priority), handed
//! over directly so no newcomer can take it in between. Under a limit of 10 the reserve
//! rounds to 0 and priorities differ only by the queue.
//!
//! A waiter gives up after `queue_timeout` ([`ShedReason::QueueTimeout`]). Every rejection
//! carries a retry-after hint: `queue_timeout` rounded up to whole seconds, at least 1 s (the
//! time a request would have been allowed to wait, which is also when the queue has turned
//! over), for the `Retry-After` of the 503.
//!
//! # Use (per request to a service that has a [`Shedder`], after its circuit allowed it)
//!
//! 1. `let permit = shedder.admit(route_priority).await` — `Err(Shed)`: answer 503 with
//!    `Retry-After`; the wait (if any) is the time this call took.
//! 2. Forward (retries included). When the upstream's response head arrives, or the request
//!    fails: `permit.done(latency_since_admission, outcome)` with [`Outcome::Ok`] for any
//!    status under 500, [`Outcome::Failed`] for a 5xx, a connect failure, a timeout (or no
//!    replica left to try). The client going away: drop the permit.
//!
//! # Cost
//!
//! Under the limit with nobody waiting, [`Shedder::admit`] is three atomic loads, one
//! compare-and-swap and one reference count increment; [`Permit::done`] is one atomic
//! subtraction and a load (plus, with the adaptive limit, three relaxed additions and a
//! clock read). The queue path takes a mutex and allocates a oneshot channel.

mod adaptive;
#[cfg(test)]
mod tests;

pub use adaptive::AdaptiveSettings;

use adaptive::Adaptive;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A route's priority under load. Default `Normal`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Shed last: may use the reserved share of the limit and of the queue.
    Critical,
    #[default]
    Normal,
    /// Shed first: never waits behind another request, never uses the reserve.
    Sheddable,
}

impl Priority {
    fn index(self) -> usize {
        self as usize
    }
}

/// One service's shedding settings. The default has no limit at all (a service without
/// shedding should not have a [`Shedder`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ShedSettings {
    /// A fixed limit of requests in flight. With `adaptive` too, it caps the adaptive
    /// limit. Default none.
    pub max_inflight: Option<u32>,
    /// The limit found by the adaptive controller. Default none.
    pub adaptive: Option<AdaptiveSettings>,
    /// Requests that may wait for a slot. Default 0: past the limit a request is shed at
    /// once, as Envoy's and Netflix's limiters do; waiting in front of an upstream at its
    /// capacity only adds latency. A queue absorbs bursts under a fixed limit.
    pub queue: u32,
    /// How long a request may wait in the queue before it is shed. Default 1 s.
    pub queue_timeout: Duration,
    /// Share of the limit and of the queue only critical requests may use (sheddable ones
    /// stay out of twice that share), 0 to 0.4. Default 0.1.
    pub critical_reserve: f64,
}

impl Default for ShedSettings {
    fn default() -> ShedSettings {
        ShedSettings {
            max_inflight: None,
            adaptive: None,
            queue: 0,
            queue_timeout: Duration::from_secs(1),
            critical_reserve: 0.1,
        }
    }
}

/// How an admitted request ended, for the adaptive limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An answer from the upstream (any status below 500): its latency is a sample.
    Ok,
    /// A 5xx, a connect failure or a timeout: a congestion signal (its latency is not a
    /// sample: a fast 503 is not a fast upstream).
    Failed,
    /// The client went away before the end: no signal at all.
    Dropped,
}

/// Why a request was shed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShedReason {
    /// No slot for its priority and no place in the queue for it (a queue of 0 is always
    /// full), or a higher-priority request took its place in a full queue.
    QueueFull,
    /// It waited `queue_timeout` without getting a slot.
    QueueTimeout,
    /// A sheddable request turned away: out of its share of the limit while others wait
    /// or may need the rest, or its place in the queue taken by a more important request.
    Sheddable,
}

impl ShedReason {
    /// The metric label: `queue_full`, `queue_timeout`, `sheddable`.
    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::QueueFull => "queue_full",
            ShedReason::QueueTimeout => "queue_timeout",
            ShedReason::Sheddable => "sheddable",
        }
    }
}

/// A rejection: answer 503 with `Retry-After: retry_after` (whole seconds, at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shed {
    pub reason: ShedReason,
    pub retry_after: Duration,
}

/// One service's concurrency limit and wait queue, shared by every worker thread (a clone
/// shares the same state). See the module's documentation for the rules.
#[derive(Clone)]
pub struct Shedder {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Shedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shedder")
            .field("limit", &self.limit())
            .field("inflight", &self.inflight())
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

struct Inner {
    inflight: AtomicU32,
    limit: AtomicU32,
    /// Waiters in the queue, readable without its lock (the fast path's "nobody waits").
    queued: AtomicU32,
    /// `critical_reserve` in thousandths: integer arithmetic on the fast path.
    reserve_permille: u32,
    queue_cap: u32,
    queue_timeout: Duration,
    retry_after: Duration,
    waiters: Mutex<Waiters>,
    adaptive: Option<Adaptive>,
}

#[derive(Default)]
struct Waiters {
    next_id: u64,
    /// One FIFO per priority, `Critical` first.
    by_priority: [VecDeque<Waiter>; 3],
}

struct Waiter {
    id: u64,
    priority: Priority,
    /// `Ok`: a slot is yours (already counted in flight); `Err`: you were turned away.
    tx: oneshot::Sender<Result<(), Shed>>,
}

impl Waiters {
    fn len(&self) -> usize {
        self.by_priority.iter().map(VecDeque::len).sum()
    }

    fn head(&self) -> Option<Priority> {
        self.by_priority
            .iter()
            .find_map(|q| q.front().map(|w| w.priority))
    }

    fn any_at_least(&self, p: Priority) -> bool {
        self.by_priority[..=p.index()].iter().any(|q| !q.is_empty())
    }

    /// Takes the newest waiter of the lowest priority strictly below `p`.
    fn take_newest_below(&mut self, p: Priority) -> Option<Waiter> {
        self.by_priority[p.index() + 1..]
            .iter_mut()
            .rev()
            .find_map(VecDeque::pop_back)
    }

    fn remove(&mut self, id: u64, p: Priority) -> bool {
        let q = &mut self.by_priority[p.index()];
        match q.iter().position(|w| w.id == id) {
            Some(i) => {
                q.remove(i);
                true
            }
            None => false,
        }
    }
}

impl Shedder {
    /// A shedder for `s`. Settings out of range are brought into it (a limit of at least 1,
    /// a reserve of 0 to 0.4); the config layer is where they are refused.
    pub fn new(s: &ShedSettings) -> Shedder {
        let adaptive = s
            .adaptive
            .as_ref()
            .map(|a| Adaptive::new(a, s.max_inflight));
        let limit = match (&adaptive, s.max_inflight) {
            (Some(a), _) => a.start_limit(),
            (None, Some(n)) => n.max(1),
            (None, None) => u32::MAX,
        };
        let reserve = if s.critical_reserve.is_finite() {
            s.critical_reserve.clamp(0.0, 0.4)
        } else {
            0.0
        };
        let secs = s.queue_timeout.as_secs() + u64::from(s.queue_timeout.subsec_nanos() > 0);
        Shedder {
            inner: Arc::new(Inner {
                inflight: AtomicU32::new(0),
                limit: AtomicU32::new(limit),
                queued: AtomicU32::new(0),
                reserve_permille: (reserve * 1000.0).round() as u32,
                queue_cap: s.queue,
                queue_timeout: s.queue_timeout,
                retry_after: Duration::from_secs(secs.max(1)),
                waiters: Mutex::default(),
                adaptive,
            }),
        }
    }

    /// Admits a request of priority `p` now, after a wait in the queue, or not at all. The
    /// permit holds its slot until it is dropped; pass its outcome with [`Permit::done`].
    /// Dropping the future while it waits gives its place up.
    pub async fn admit(&self, p: Priority) -> Result<Permit, Shed> {
        let inner = &self.inner;
        if inner.queued.load(SeqCst) == 0 && inner.try_acquire(p) {
            return Ok(self.permit());
        }
        self.wait(p).await
    }

    /// The limit of requests in flight now (the adaptive one moves; `u32::MAX` without any).
    pub fn limit(&self) -> u32 {
        self.inner.limit.load(SeqCst)
    }

    /// Requests holding a permit now.
    pub fn inflight(&self) -> u32 {
        self.inner.inflight.load(SeqCst)
    }

    /// Requests waiting in the queue now.
    pub fn queued(&self) -> u32 {
        self.inner.queued.load(SeqCst)
    }

    /// The adaptive limit's unloaded latency, once measured (`None` without adaptive limit
    /// or before the first measurement).
    pub fn baseline(&self) -> Option<Duration> {
        self.inner.adaptive.as_ref().and_then(Adaptive::baseline)
    }

    fn permit(&self) -> Permit {
        Permit {
            epoch: self.inner.adaptive.as_ref().map_or(0, Adaptive::epoch),
            inner: self.inner.clone(),
        }
    }

    fn shed(&self, reason: ShedReason) -> Shed {
        Shed {
            reason,
            retry_after: self.inner.retry_after,
        }
    }

    async fn wait(&self, p: Priority) -> Result<Permit, Shed> {
        let inner = &self.inner;
        let (id, rx) = {
            let mut w = inner.lock();
            if !w.any_at_least(p) && inner.try_acquire(p) {
                return Ok(self.permit());
            }
            let len = w.len();
            let cap = inner.queue_cap as usize;
            let reserved =
                (u64::from(inner.queue_cap) * u64::from(inner.reserve_permille) / 1000) as usize;
            let fits = match p {
                Priority::Critical => len < cap,
                Priority::Normal => len < cap - reserved,
                Priority::Sheddable => len == 0 && cap > 0,
            };
            if !fits {
                let displaced = match p {
                    Priority::Sheddable => None,
                    _ if cap == 0 => None,
                    _ => w.take_newest_below(p),
                };
                let Some(out) = displaced else {
                    return Err(self.shed(match p {
                        Priority::Sheddable => ShedReason::Sheddable,
                        _ => ShedReason::QueueFull,
                    }));
                };
                let reason = match out.priority {
                    Priority::Sheddable => ShedReason::Sheddable,
                    _ => ShedReason::QueueFull,
                };
                // It is gone from the queue whether or not its receiver still listens.
                let _ = out.tx.send(Err(self.shed(reason)));
                inner.queued.fetch_sub(1, SeqCst);
            }
            let id = w.next_id;
            w.next_id += 1;
            let (tx, rx) = oneshot::channel();
            w.by_priority[p.index()].push_back(Waiter {
                id,
                priority: p,
                tx,
            });
            inner.queued.fetch_add(1, SeqCst);
            // A slot freed between the fast path and here was handed to nobody: the
            // releaser saw no waiter. Look again now that we are counted.
            inner.dispatch(&mut w);
            (id, rx)
        };
        let mut waiting = Waiting {
            shedder: self,
            id,
            priority: p,
            rx,
            settled: false,
        };
        let deadline = Instant::now() + inner.queue_timeout;
        let answer = match tokio::time::timeout_at(deadline, &mut waiting.rx).await {
            Ok(Ok(answer)) => answer,
            // The sender is only dropped after a send; this is the shedder going away.
            Ok(Err(_)) => Err(self.shed(ShedReason::QueueFull)),
            Err(_elapsed) => {
                let removed = inner.lock().remove(id, p);
                if removed {
                    inner.queued.fetch_sub(1, SeqCst);
                    Err(self.shed(ShedReason::QueueTimeout))
                } else {
                    // Answered as the time ran out: take the answer.
                    waiting
                        .rx
                        .try_recv()
                        .unwrap_or(Err(self.shed(ShedReason::QueueTimeout)))
                }
            }
        };
        waiting.settled = true;
        answer.map(|()| self.permit())
    }
}

/// A queued request's place; dropped unanswered (the client went away), it gives the
/// place up, or the slot it was just handed.
struct Waiting<'a> {
    shedder: &'a Shedder,
    id: u64,
    priority: Priority,
    rx: oneshot::Receiver<Result<(), Shed>>,
    settled: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let inner = &self.shedder.inner;
        let removed = inner.lock().remove(self.id, self.priority);
        if removed {
            inner.queued.fetch_sub(1, SeqCst);
        } else if let Ok(Ok(())) = self.rx.try_recv() {
            inner.release();
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most requests of priority `p` in flight at once under `limit`.
    fn ceiling(&self, limit: u32, p: Priority) -> u32 {
        let r = (u64::from(limit) * u64::from(self.reserve_permille) / 1000) as u32;
        let c = match p {
            Priority::Critical => limit,
            Priority::Normal => limit.saturating_sub(r),
            Priority::Sheddable => limit.saturating_sub(r.saturating_mul(2)),
        };
        c.max(1)
    }

    /// Takes a slot for priority `p` if one is free.
    fn try_acquire(&self, p: Priority) -> bool {
        let ceiling = self.ceiling(self.limit.load(SeqCst), p);
        let mut n = self.inflight.load(SeqCst);
        loop {
            if n >= ceiling {
                return false;
            }
            match self
                .inflight
                .compare_exchange_weak(n, n + 1, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(seen) => n = seen,
            }
        }
    }

    /// Hands free slots to the queue's head while it fits.
    fn dispatch(&self, w: &mut Waiters) {
        while let Some(p) = w.head() {
            if !self.try_acquire(p) {
                // The head is the most important waiter: if it does not fit, nobody does.
                return;
            }
            let Some(next) = w.by_priority[p.index()].pop_front() else {
                return;
            };
            self.queued.fetch_sub(1, SeqCst);
            if next.tx.send(Ok(())).is_err() {
                // Its receiver is gone without removing it (cannot happen while `Waiting`
                // removes itself first): the slot is free again.
                self.inflight.fetch_sub(1, SeqCst);
            }
        }
    }

    /// Gives a slot back; the queue's head gets it.
    fn release(&self) {
        self.inflight.fetch_sub(1, SeqCst);
        // Sequentially consistent with the waiter's `queued` increment then `inflight`
        // read: one of the two sees the other, so no slot is left idle with a waiter.
        if self.queued.load(SeqCst) > 0 {
            self.dispatch(&mut self.lock());
        }
    }

    /// A new limit from the controller: a higher one may let waiters in.
    fn limit_changed(&self) {
        if self.queued.load(SeqCst) > 0 {
            self.dispatch(&mut self.lock());
        }
    }
}

/// A slot in flight. Pass the outcome with [`Permit::done`]; dropping it without is
/// [`Outcome::Dropped`] (the slot is freed, no sample is taken).
#[must_use = "the slot is held until the permit is dropped; pass its outcome with done"]
pub struct Permit {
    inner: Arc<Inner>,
    /// The adaptive controller's phase at admission: a baseline measurement only takes
    /// requests admitted under it.
    epoch: u32,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

impl Permit {
    /// The request ended after `latency` (from admission to the end of the upstream's
    /// answer, or to the failure) with `outcome`; frees the slot.
    pub fn done(self, latency: Duration, outcome: Outcome) {
        if let Some(a) = &self.inner.adaptive {
            let inflight = self.inner.inflight.load(SeqCst);
            if a.sample(latency, outcome, self.epoch, inflight, &self.inner.limit) {
                self.inner.limit_changed();
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.inner.release();
    }
}
