//! The circuit breaker of one service: when the service as a whole keeps failing, its
//! requests fail fast for a while instead of piling onto it.
//!
//! # States
//!
//! - **Closed**: requests pass; their results are counted. It opens on `consecutive_failures`
//!   failures in a row, or when failures reach `failure_rate` of the requests that answered
//!   in the last `window`, once that window holds at least the rate's minimum number of
//!   requests (below it, the rate rule says nothing: 2 failures out of 3 are not a trend).
//! - **Open**: [`Circuit::allow`] refuses at once with the time left (the 503's
//!   `Retry-After`). After `open_for` it is half-open.
//! - **HalfOpen**: up to `half_open_probes` requests pass as probes, the rest are refused
//!   (retry after 1 s). When every probe has succeeded it closes, with its counts cleared;
//!   one failed probe opens it again for `open_for`. A probe whose client went away (its
//!   permit dropped without a result) gives its place to another probe.
//!
//! A result is only counted in the state it was admitted in: the answers of requests
//! admitted before a transition, arriving after it, are ignored (the slow failures of a
//! closed circuit do not re-open a half-open one).
//!
//! # What counts as a failure
//!
//! What the service as a whole answered: a 5xx from the upstream, a connect failure, a
//! timeout. Not a 4xx (the client's fault), not a client that went away (no answer: drop the
//! permit). This is service-level and composes with outlier ejection, which is replica-level:
//! ejection takes a bad replica out of the set, so its failures stop once it is out and do
//! not trip the breaker while the others answer; the breaker opens when the replicas left
//! (or the only one) fail — including when every replica is ejected or down, which ejection
//! alone cannot help.
//!
//! # Cost
//!
//! Closed: [`Circuit::allow`] is one atomic load and a reference count increment;
//! [`CircuitPermit::record`] one load, one compare-and-swap on the current 1/10 of the window
//! and, after a failure, a sum over the ten buckets. Transitions take a mutex.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The rolling window's buckets: its resolution is a tenth of the window.
const BUCKETS: u64 = 10;

/// The hint for a request refused while the probes are out.
const PROBING_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A service's breaker settings.
#[derive(Clone, Debug, PartialEq)]
pub struct CircuitSettings {
    /// Failures in a row that open the circuit; `None`: this rule is off. Default 20: at
    /// high traffic a run of 20 is only likely when nearly everything fails (at a 30 %
    /// error rate, 0.3²⁰ ≈ 3·10⁻¹¹ per request), so it speaks for low-traffic services the
    /// rate rule's minimum does not reach.
    pub consecutive_failures: Option<u32>,
    /// (share of failures 0..1, minimum requests in the window) that opens the circuit;
    /// `None`: this rule is off. Default 50 % of at least 20 requests.
    pub failure_rate: Option<(f64, u32)>,
    /// The failure rate's rolling window (in ten buckets). Default 10 s.
    pub window: Duration,
    /// How long the circuit stays open before probing. Default 5 s.
    pub open_for: Duration,
    /// Probes let through half-open; all must succeed to close. Default 3 (at least 1).
    pub half_open_probes: u32,
}

impl Default for CircuitSettings {
    fn default() -> CircuitSettings {
        CircuitSettings {
            consecutive_failures: Some(20),
            failure_rate: Some((0.5, 20)),
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            half_open_probes: 3,
        }
    }
}

/// Where a circuit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    /// For `/status` and metric labels: `closed`, `open`, `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    fn bits(self) -> u64 {
        self as u64
    }

    fn from_bits(b: u64) -> CircuitState {
        match b {
            0 => CircuitState::Closed,
            1 => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        }
    }
}

/// A refusal: answer 503 with `Retry-After: retry_after` (whole seconds, at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Open {
    pub retry_after: Duration,
}

/// Called once per transition, in order: (from, to, transitions so far including this one).
pub type Observer = Box<dyn Fn(CircuitState, CircuitState, u32) + Send + Sync>;

/// One service's breaker, shared by every worker thread (a clone shares the same state).
#[derive(Clone)]
pub struct Circuit {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Circuit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Circuit")
            .field("state", &self.state())
            .field("transitions", &self.transitions())
            .finish_non_exhaustive()
    }
}

/// The state word: generation (transitions so far) in the high 32 bits, the state in bits
/// 30–31, probes out in bits 15–29, probes succeeded in bits 0–14. One word, so a probe is
/// taken or counted by one compare-and-swap that fails if the circuit moved meanwhile.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Word(u64);

const PROBE_BITS: u64 = 15;
const PROBE_MASK: u64 = (1 << PROBE_BITS) - 1;

impl Word {
    fn new(generation: u32, state: CircuitState) -> Word {
        Word(u64::from(generation) << 32 | state.bits() << 30)
    }
    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
    fn state(self) -> CircuitState {
        CircuitState::from_bits(self.0 >> 30 & 3)
    }
    fn probes_out(self) -> u32 {
        (self.0 >> PROBE_BITS & PROBE_MASK) as u32
    }
    fn probes_ok(self) -> u32 {
        (self.0 & PROBE_MASK) as u32
    }
    fn with_probes(self, out: u32, ok: u32) -> Word {
        Word(self.0 & !((1 << 30) - 1) | u64::from(out) << PROBE_BITS | u64::from(ok))
    }
}

struct Inner {
    consecutive: Option<u32>,
    rate: Option<(f64, u64)>,
    bucket_nanos: u64,
    open_for: Duration,
    probes: u32,
    clock: Instant,
    word: AtomicU64,
    /// When it last opened (nanoseconds on `clock`).
    opened_at: AtomicU64,
    streak: AtomicU32,
    /// Each: bucket sequence number's low 16 bits | successes (24 bits) | failures (24 bits).
    buckets: [AtomicU64; BUCKETS as usize],
    /// Serialises transitions, so the observer sees them once each and in order.
    transitions: Mutex<Option<Observer>>,
}

impl Circuit {
    /// A closed circuit for `s`. Values out of range are brought into it (a rate within
    /// 0..1, at least one probe, a window of at least 10 ms).
    pub fn new(s: &CircuitSettings) -> Circuit {
        let rate = s.failure_rate.map(|(r, min)| {
            let r = if r.is_finite() {
                r.clamp(0.0, 1.0)
            } else {
                0.5
            };
            (r, u64::from(min.max(1)))
        });
        Circuit {
            inner: Arc::new(Inner {
                consecutive: s.consecutive_failures.map(|n| n.max(1)),
                rate,
                bucket_nanos: (nanos(s.window) / BUCKETS).max(1_000_000),
                open_for: s.open_for,
                probes: s.half_open_probes.clamp(1, PROBE_MASK as u32),
                clock: Instant::now(),
                word: AtomicU64::new(Word::new(0, CircuitState::Closed).0),
                opened_at: AtomicU64::new(0),
                streak: AtomicU32::new(0),
                buckets: Default::default(),
                transitions: Mutex::new(None),
            }),
        }
    }

    /// Calls `f` once per transition from now on (to log it), with the circuit's transition
    /// lock held: `f` must not call back into this circuit.
    pub fn observe(&self, f: impl Fn(CircuitState, CircuitState, u32) + Send + Sync + 'static) {
        *self.inner.lock() = Some(Box::new(f));
    }

    /// May a request go to the service? Pass its result with [`CircuitPermit::record`].
    pub fn allow(&self) -> Result<CircuitPermit, Open> {
        let inner = &self.inner;
        loop {
            let w = inner.load();
            match w.state() {
                CircuitState::Closed => return Ok(self.permit(w, false)),
                CircuitState::Open => {
                    let now = inner.now();
                    let until = inner
                        .opened_at
                        .load(Acquire)
                        .saturating_add(nanos(inner.open_for));
                    if now < until {
                        return Err(Open {
                            retry_after: whole_seconds(Duration::from_nanos(until - now)),
                        });
                    }
                    inner.transition(w, CircuitState::HalfOpen, now);
                }
                CircuitState::HalfOpen => {
                    if w.probes_out() >= inner.probes {
                        return Err(Open {
                            retry_after: PROBING_RETRY_AFTER,
                        });
                    }
                    let next = w.with_probes(w.probes_out() + 1, w.probes_ok());
                    if inner.swap(w, next) {
                        return Ok(self.permit(w, true));
                    }
                }
            }
        }
    }

    /// The state now (an open circuit past `open_for` reads open until a request asks).
    pub fn state(&self) -> CircuitState {
        self.inner.load().state()
    }

    /// Transitions since the circuit was made (for a counter metric).
    pub fn transitions(&self) -> u32 {
        self.inner.load().generation()
    }

    fn permit(&self, w: Word, probe: bool) -> CircuitPermit {
        CircuitPermit {
            inner: self.inner.clone(),
            generation: w.generation(),
            probe,
            recorded: false,
        }
    }
}

/// A request let through. Dropped without [`CircuitPermit::record`], it counts as nothing.
#[must_use = "pass the request's result with record"]
pub struct CircuitPermit {
    inner: Arc<Inner>,
    generation: u32,
    probe: bool,
    recorded: bool,
}

impl std::fmt::Debug for CircuitPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitPermit")
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

impl CircuitPermit {
    /// The service answered (`ok`: anything but a failure as the module defines it).
    pub fn record(mut self, ok: bool) {
        self.recorded = true;
        let inner = &self.inner;
        let now = inner.now();
        loop {
            let w = inner.load();
            if w.generation() != self.generation {
                return;
            }
            match w.state() {
                CircuitState::Closed => {
                    inner.count(now, ok);
                    return;
                }
                CircuitState::HalfOpen if !ok => {
                    inner.transition(w, CircuitState::Open, now);
                    return;
                }
                CircuitState::HalfOpen => {
                    if w.probes_ok() + 1 >= inner.probes {
                        inner.transition(w, CircuitState::Closed, now);
                        return;
                    }
                    if inner.swap(w, w.with_probes(w.probes_out(), w.probes_ok() + 1)) {
                        return;
                    }
                }
                CircuitState::Open => return,
            }
        }
    }
}

impl Drop for CircuitPermit {
    fn drop(&mut self) {
        if self.recorded || !self.probe {
            return;
        }
        // A probe without an answer: its place goes to another probe.
        let inner = &self.inner;
        loop {
            let w = inner.load();
            if w.generation() != self.generation || w.state() != CircuitState::HalfOpen {
                return;
            }
            let out = w.probes_out().saturating_sub(1);
            if inner.swap(w, w.with_probes(out, w.probes_ok())) {
                return;
            }
        }
    }
}

impl Inner {
    fn load(&self) -> Word {
        Word(self.word.load(Acquire))
    }

    fn swap(&self, from: Word, to: Word) -> bool {
        self.word
            .compare_exchange(from.0, to.0, AcqRel, Acquire)
            .is_ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Observer>> {
        self.transitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> u64 {
        nanos(self.clock.elapsed())
    }

    /// A closed circuit's result: counts it, and opens the circuit if a rule says so.
    fn count(&self, now: u64, ok: bool) {
        let seq = now / self.bucket_nanos;
        let bucket = &self.buckets[(seq % BUCKETS) as usize];
        let tag = seq & 0xffff;
        let mut cur = bucket.load(Relaxed);
        loop {
            let (t, mut good, mut bad) = unpack(cur);
            if t != tag {
                (good, bad) = (0, 0);
            }
            if ok {
                good = (good + 1).min(COUNT_MAX);
            } else {
                bad = (bad + 1).min(COUNT_MAX);
            }
            match bucket.compare_exchange_weak(cur, pack(tag, good, bad), Relaxed, Relaxed) {
                Ok(_) => break,
                Err(seen) => cur = seen,
            }
        }
        if ok {
            // A load first: successes do not write a shared line that has not changed.
            if self.streak.load(Relaxed) != 0 {
                self.streak.store(0, Relaxed);
            }
            return;
        }
        let streak = self.streak.fetch_add(1, Relaxed) + 1;
        let by_streak = self.consecutive.is_some_and(|n| streak >= n);
        let by_rate = self.rate.is_some_and(|(rate, min)| {
            let (good, bad) = self.window_counts(seq);
            let total = good + bad;
            total >= min && bad as f64 >= rate * total as f64
        });
        if by_streak || by_rate {
            let w = self.load();
            if w.state() == CircuitState::Closed {
                self.transition(w, CircuitState::Open, now);
            }
        }
    }

    /// Successes and failures in the window ending in bucket `seq` (the current bucket is
    /// partial: the window spans 9 to 10 tenths). A bucket is counted only if its tag is the
    /// sequence number it should hold; one untouched for 65,536 bucket lengths could match
    /// by chance, which only adds old counts to one decision.
    fn window_counts(&self, seq: u64) -> (u64, u64) {
        (0..BUCKETS.min(seq + 1)).fold((0, 0), |(good, bad), back| {
            let s = seq - back;
            let (t, g, b) = unpack(self.buckets[(s % BUCKETS) as usize].load(Relaxed));
            if t == s & 0xffff {
                (good + g, bad + b)
            } else {
                (good, bad)
            }
        })
    }

    /// Moves from `from` (if the circuit is still in its generation and state) to `to`.
    fn transition(&self, from: Word, to: CircuitState, now: u64) {
        let observer = self.lock();
        let cur = self.load();
        if cur.generation() != from.generation() || cur.state() != from.state() {
            return;
        }
        match to {
            CircuitState::Open => self.opened_at.store(now, Release),
            CircuitState::Closed => {
                self.streak.store(0, Relaxed);
                for b in &self.buckets {
                    b.store(0, Relaxed);
                }
            }
            CircuitState::HalfOpen => {}
        }
        let generation = from.generation().wrapping_add(1);
        self.word.store(Word::new(generation, to).0, Release);
        match to {
            CircuitState::Open => tracing::debug!(from = from.state().as_str(), "circuit opened"),
            _ => tracing::debug!(
                from = from.state().as_str(),
                to = to.as_str(),
                "circuit moved"
            ),
        }
        if let Some(f) = observer.as_ref() {
            f(from.state(), to, generation);
        }
    }
}

const COUNT_MAX: u64 = (1 << 24) - 1;

fn pack(tag: u64, good: u64, bad: u64) -> u64 {
    tag << 48 | good << 24 | bad
}

fn unpack(v: u64) -> (u64, u64, u64) {
    (v >> 48, v >> 24 & COUNT_MAX, v & COUNT_MAX)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Rounded up to whole seconds, at least 1 (`Retry-After` counts seconds).
fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs((d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1))
}

#[cfg(test)]
mod tests;
