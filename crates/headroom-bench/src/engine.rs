//! Running a load: one OS thread per `--threads`, each a single-threaded tokio runtime with
//! its own request loops and its own `Recorder` (no lock, no shared counter on the hot
//! path). Once per interval each worker hands its `Recorder` to the runner, which merges
//! them into the timeline and the totals.
//!
//! Open loop and coordinated omission: request `i` is due at `rate.time_of(i)`, whatever the
//! server does. A pacer releases each request when it is due into a queue the loops take
//! from; a request that finds every connection busy waits there, and its latency counts
//! from its release, so the time it waited for a stalled server counts, as wrk2 and k6's
//! arrival-rate executors do. The pacer's own timer lateness (about a millisecond tick) is
//! the generator's, not the server's, and is not charged, unless requests were already
//! waiting: then the late one is measured from its due time, as it would have waited too.

use crate::connect::{Connector, ErrorKind, Failure};
use crate::h1;
use crate::h2;
use crate::request::Mix;
use crate::schedule::{Load, Rate};
use crate::stats::{Recorder, Row};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{sleep_until, Instant};

/// A request that waits more than this for a free connection counts as late.
const LATE: Duration = Duration::from_millis(1);
/// Open loop: the most requests released but not yet started, per worker; beyond it the
/// generator is hopelessly behind and the rest count as never sent.
const MAX_QUEUED: usize = 65_536;
/// Open loop: the fewest connections each worker opens before the first request.
const INITIAL_CONNECTIONS: usize = 4;
/// Open loop: each worker starts with connections for the requests due in this long.
const BURST: Duration = Duration::from_millis(2);

/// Everything a run needs, checked and built before it starts.
pub struct Plan {
    pub connector: Connector,
    pub mix: Mix,
    pub http2: bool,
    /// HTTP/2: request loops sharing one connection.
    pub streams: usize,
    pub load: Load,
    /// Stop after this long (None: when `requests` are done).
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    pub requests: Option<u64>,
    pub threads: usize,
    pub timeout: Duration,
    /// The timeline's resolution.
    pub interval: Duration,
    /// Responses that end before this are not recorded.
    pub warmup: Duration,
    /// At the end, let requests in flight finish (unrecorded) for up to this long, so the
    /// next run meets an idle server (capacity search steps).
    pub drain: Option<Duration>,
}

/// What a run measured.
pub struct Outcome {
    /// Everything recorded after the warm-up.
    pub total: Recorder,
    pub timeline: Vec<Row>,
    /// The measured window: from the end of the warm-up to the end of the run.
    pub elapsed: Duration,
    /// Open loop: requests due in the measured window.
    pub due: Option<u64>,
    /// Open loop: requests due before the end that never started.
    pub unsent: u64,
    /// Requests sent but not answered when the run ended.
    pub in_flight_at_end: u64,
    /// Ctrl-C ended the run early.
    pub interrupted: bool,
    /// The timeline's resolution.
    pub interval: Duration,
}

/// The live view the progress bar draws, sent once per interval.
pub struct Progress<'a> {
    pub elapsed: Duration,
    pub last: &'a Row,
    pub total: &'a Recorder,
}

struct Snapshot {
    index: u32,
    rec: Recorder,
}

struct WorkerEnd {
    ended: Instant,
    in_flight: u64,
    started: u64,
}

/// Runs `plan` to its end, or until `stop` turns true (Ctrl-C). `on_interval` sees each
/// interval as it completes.
pub fn run(
    plan: Arc<Plan>,
    stop: watch::Receiver<bool>,
    on_interval: &mut dyn FnMut(Progress<'_>),
) -> Result<Outcome, String> {
    let threads = plan.threads.max(1);
    let (tx, mut rx) = mpsc::unbounded_channel::<Snapshot>();
    // A short lead so every worker's runtime is up before the first request is due.
    let start = Instant::now() + Duration::from_millis(5);
    let mut handles = Vec::with_capacity(threads);
    for w in 0..threads {
        let (plan, tx, stop) = (plan.clone(), tx.clone(), stop.clone());
        let h = std::thread::Builder::new()
            .name(format!("bench-{w}"))
            .spawn(move || worker(w, plan, start, tx, stop))
            .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        handles.push(h);
    }
    drop(tx);

    let interval = plan.interval.as_secs_f64();
    let warm = plan.warmup.as_secs_f64();
    let mut pending: BTreeMap<u32, (Recorder, usize)> = BTreeMap::new();
    let mut total = Recorder::default();
    let mut timeline = Vec::new();
    let mut finish = |index: u32, rec: Recorder, total: &mut Recorder, timeline: &mut Vec<Row>| {
        let t = index as f64 * interval;
        total.merge(&rec);
        // Intervals wholly inside the warm-up recorded nothing, and one that starts at the
        // end holds only the last stragglers: neither is on the timeline.
        let after_end = plan.duration.is_some_and(|d| t >= d.as_secs_f64() - 1e-9);
        if t + interval > warm && !after_end {
            // The part of the interval that was measured: after the warm-up, before the end.
            let until = plan
                .duration
                .map_or(t + interval, |d| (t + interval).min(d.as_secs_f64()));
            let row = Row::of(&rec, t, until - t.max(warm));
            on_interval(Progress {
                elapsed: Duration::from_secs_f64(t + interval),
                last: &row,
                total,
            });
            timeline.push(row);
        }
    };
    while let Some(snap) = rx.blocking_recv() {
        let entry = pending
            .entry(snap.index)
            .or_insert_with(|| (Recorder::default(), 0));
        entry.0.merge(&snap.rec);
        entry.1 += 1;
        if entry.1 == threads {
            if let Some((rec, _)) = pending.remove(&snap.index) {
                finish(snap.index, rec, &mut total, &mut timeline);
            }
        }
    }
    // The last, partial intervals.
    for (index, (rec, _)) in std::mem::take(&mut pending) {
        finish(index, rec, &mut total, &mut timeline);
    }
    let mut ends = Vec::with_capacity(threads);
    for h in handles {
        match h.join() {
            Ok(Ok(end)) => ends.push(end),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a worker thread panicked".into()),
        }
    }
    let ended = ends.iter().map(|e| e.ended).max().unwrap_or(start);
    // A run that ended early (--requests, Ctrl-C) measured its last interval only in part.
    if let Some(last) = timeline.last_mut() {
        let end = plan.duration.map_or(ended, |d| ended.min(start + d));
        let span = end.saturating_duration_since(start).as_secs_f64() - last.t_s.max(warm);
        if span > 0.0 && span < interval {
            *last = Row {
                rps: last.requests as f64 / span,
                ..last.clone()
            };
        }
    }
    let warm_end = start + plan.warmup;
    // The window ends at --duration at the latest: the pacer's grace after it is not load.
    let window_end = plan.duration.map_or(ended, |d| ended.min(start + d));
    let elapsed = window_end.saturating_duration_since(warm_end);
    let (due, unsent) = match &plan.load {
        Load::Open { rate, .. } => {
            let mut at_end = ended.saturating_duration_since(start);
            if let Some(d) = plan.duration {
                at_end = at_end.min(d);
            }
            let at_end = at_end.as_secs_f64();
            let mut due_total = rate.due_by(at_end).ceil() as u64;
            if let Some(n) = plan.requests {
                due_total = due_total.min(n);
            }
            let before = rate.due_by(warm).ceil() as u64;
            let started: u64 = ends.iter().map(|e| e.started).sum();
            (
                Some(due_total.saturating_sub(before)),
                due_total.saturating_sub(started),
            )
        }
        Load::Closed { .. } => (None, 0),
    };
    Ok(Outcome {
        total,
        timeline,
        elapsed,
        due,
        unsent,
        in_flight_at_end: ends.iter().map(|e| e.in_flight).sum(),
        interrupted: *stop.borrow(),
        interval: plan.interval,
    })
}

/// One worker thread's share of the run.
struct Worker {
    plan: Arc<Plan>,
    start: Instant,
    warm_end: Instant,
    end: Option<Instant>,
    /// Open loop: this worker's due requests are `next, next + stride, …`.
    rate: Option<Rate>,
    next: Cell<u64>,
    stride: u64,
    /// Requests this worker may still start (`--requests`).
    quota: Cell<u64>,
    /// Requests started, warm-up included.
    started: Cell<u64>,
    /// Open loop: released requests no loop has taken yet, with when each was due and
    /// when it was released.
    queue: RefCell<std::collections::VecDeque<(Instant, Instant)>>,
    /// Open loop: loops waiting for a request, and the signal that one is queued.
    idle: Cell<usize>,
    ready: Notify,
    /// Open loop: the pacer has released its last request.
    paced_out: Cell<bool>,
    max_loops: usize,
    loops: Cell<usize>,
    in_flight: Cell<u64>,
    stopping: Cell<bool>,
    recording: Cell<bool>,
    rec: RefCell<Recorder>,
    /// Which interval `rec` is recording.
    index: Cell<u32>,
    /// Open loop: a request found every loop busy; the grower adds one.
    grow: Notify,
    /// Every request loop has ended (quota or schedule exhausted).
    done: Notify,
    /// Draining: the last request in flight has ended.
    drained: Notify,
}

fn share(total: u64, parts: usize, i: usize) -> u64 {
    let parts = parts as u64;
    total / parts + u64::from((i as u64) < total % parts)
}

fn worker(
    w: usize,
    plan: Arc<Plan>,
    start: Instant,
    tx: mpsc::UnboundedSender<Snapshot>,
    mut stop: watch::Receiver<bool>,
) -> Result<WorkerEnd, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a worker runtime: {e}"))?;
    let threads = plan.threads.max(1);
    let (rate, loops_wanted, max_loops) = match &plan.load {
        Load::Closed { connections } => {
            let n = share(*connections as u64, threads, w) as usize;
            (None, n, n)
        }
        Load::Open {
            rate,
            max_connections,
        } => {
            let max = (share(*max_connections as u64, threads, w) as usize).max(1);
            // Enough loops for what falls due in one timer tick (the pacer wakes once a
            // millisecond and releases everything due by then): a burst of the generator's
            // own making must not queue behind too few connections.
            let per_worker = rate.from.max(rate.to) / threads as f64;
            let burst = (per_worker * BURST.as_secs_f64()).ceil() as usize;
            (Some(*rate), burst.max(INITIAL_CONNECTIONS).min(max), max)
        }
    };
    let (loops_wanted, max_loops) = if plan.http2 {
        (loops_wanted * plan.streams, max_loops * plan.streams)
    } else {
        (loops_wanted, max_loops)
    };
    let ctx = Rc::new(Worker {
        start,
        warm_end: start + plan.warmup,
        end: plan.duration.map(|d| start + d),
        rate,
        next: Cell::new(w as u64),
        stride: threads as u64,
        quota: Cell::new(plan.requests.map_or(u64::MAX, |n| share(n, threads, w))),
        started: Cell::new(0),
        queue: RefCell::new(std::collections::VecDeque::new()),
        idle: Cell::new(0),
        ready: Notify::new(),
        paced_out: Cell::new(false),
        max_loops,
        loops: Cell::new(0),
        in_flight: Cell::new(0),
        stopping: Cell::new(false),
        recording: Cell::new(true),
        rec: RefCell::new(Recorder::default()),
        index: Cell::new(0),
        grow: Notify::new(),
        done: Notify::new(),
        drained: Notify::new(),
        plan,
    });
    let local = tokio::task::LocalSet::new();
    let end = local.block_on(&rt, async {
        tokio::task::spawn_local(ticker(ctx.clone(), tx.clone()));
        let h2_conns = (ctx.plan.http2).then(H2Shared::default).map(Rc::new);
        for i in 0..loops_wanted {
            spawn_loop(&ctx, i, &h2_conns);
        }
        if loops_wanted == 0 {
            ctx.done.notify_one();
        }
        if let Some(rate) = ctx.rate {
            tokio::task::spawn_local(pacer(ctx.clone(), rate));
            let ctx = ctx.clone();
            let h2_conns = h2_conns.clone();
            tokio::task::spawn_local(async move {
                loop {
                    ctx.grow.notified().await;
                    if ctx.loops.get() < ctx.max_loops && !ctx.stopping.get() {
                        spawn_loop(&ctx, ctx.loops.get(), &h2_conns);
                    }
                }
            });
        }
        let deadline = ctx
            .end
            .unwrap_or(start + Duration::from_secs(100 * 365 * 86_400));
        let stopped = tokio::select! {
            _ = sleep_until(deadline) => false,
            _ = ctx.done.notified() => false,
            _ = stopped_by(&mut stop) => true,
        };
        // Open loop: the pacer's timer runs up to a few milliseconds late; let it release
        // what was due before the end, so those count as sent rather than never sent.
        if ctx.rate.is_some() && !stopped {
            let pacer_done = async {
                while !ctx.paced_out.get() {
                    tokio::task::yield_now().await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_millis(20), pacer_done).await;
        }
        let ended = Instant::now();
        let in_flight = ctx.in_flight.get();
        ctx.stopping.set(true);
        ctx.ready.notify_waiters();
        if let Some(limit) = ctx.plan.drain {
            ctx.recording.set(false);
            if ctx.in_flight.get() > 0 {
                let _ = tokio::time::timeout(limit, ctx.drained.notified()).await;
            }
        }
        let rec = std::mem::take(&mut *ctx.rec.borrow_mut());
        let _ = tx.send(Snapshot {
            index: ctx.index.get(),
            rec,
        });
        WorkerEnd {
            ended,
            in_flight,
            started: ctx.started.get(),
        }
    });
    Ok(end)
}

/// Resolves when `stop` turns true; never, if its sender is gone (no Ctrl-C handler).
async fn stopped_by(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Hands the interval's record to the runner at each interval boundary.
async fn ticker(ctx: Rc<Worker>, tx: mpsc::UnboundedSender<Snapshot>) {
    loop {
        let index = ctx.index.get();
        sleep_until(ctx.start + ctx.plan.interval * (index + 1)).await;
        let rec = std::mem::take(&mut *ctx.rec.borrow_mut());
        ctx.index.set(index + 1);
        if tx.send(Snapshot { index, rec }).is_err() {
            return;
        }
    }
}

fn spawn_loop(ctx: &Rc<Worker>, i: usize, h2_conns: &Option<Rc<H2Shared>>) {
    ctx.loops.set(ctx.loops.get() + 1);
    let ctx = ctx.clone();
    match h2_conns {
        None => {
            tokio::task::spawn_local(h1_loop(ctx));
        }
        Some(shared) => {
            // Loops `k·streams … k·streams + streams − 1` share connection `k`.
            let slot = i / ctx.plan.streams.max(1);
            tokio::task::spawn_local(h2_loop(ctx, shared.clone(), slot));
        }
    }
}

impl Worker {
    /// Takes the next request to send, waiting for it when the loop is ahead; returns the
    /// instant its latency is measured from, or None when the run has no more for this loop.
    async fn begin(&self) -> Option<Instant> {
        let start = match &self.rate {
            None => {
                if self.stopping.get() || self.quota.get() == 0 {
                    return None;
                }
                self.quota.set(self.quota.get() - 1);
                if Instant::now() < self.start {
                    sleep_until(self.start).await;
                }
                Instant::now()
            }
            Some(_) => loop {
                if self.stopping.get() {
                    return None;
                }
                let next = self.queue.borrow_mut().pop_front();
                if let Some((due, released)) = next {
                    if Instant::now() - released > LATE {
                        if due >= self.warm_end {
                            self.rec.borrow_mut().late += 1;
                        }
                        self.grow.notify_one();
                    }
                    break released;
                }
                if self.paced_out.get() {
                    return None;
                }
                self.idle.set(self.idle.get() + 1);
                self.ready.notified().await;
                self.idle.set(self.idle.get() - 1);
            },
        };
        self.in_flight.set(self.in_flight.get() + 1);
        self.started.set(self.started.get() + 1);
        if start >= self.warm_end && self.recording.get() {
            self.rec.borrow_mut().sent += 1;
        }
        Some(start)
    }

    /// Records how a request begun at `start` ended.
    fn end(&self, start: Instant, bytes_out: usize, result: Result<(u16, u64, bool), Failure>) {
        let done = Instant::now();
        self.in_flight.set(self.in_flight.get() - 1);
        if self.stopping.get() && self.in_flight.get() == 0 {
            self.drained.notify_one();
        }
        if done < self.warm_end || !self.recording.get() {
            return;
        }
        let mut rec = self.rec.borrow_mut();
        match result {
            Ok((status, bytes_in, connected)) => {
                let ns = (done - start).as_nanos().min(u64::MAX as u128) as u64;
                rec.response(ns, status, bytes_in, bytes_out as u64);
                rec.connects += u64::from(connected);
            }
            Err(f) => rec.error(f),
        }
    }

    fn loop_ended(&self) {
        self.loops.set(self.loops.get() - 1);
        if self.loops.get() == 0 {
            self.done.notify_one();
        }
    }
}

/// Open loop: releases each request when it is due, into the queue the loops take from. A
/// request released while no loop is free waits in the queue, and its wait is charged to
/// its latency; the grower is asked for another connection.
async fn pacer(ctx: Rc<Worker>, rate: Rate) {
    let mut i = ctx.next.get();
    // Released in a row without waiting for the timer: the generator is behind.
    let mut behind = 0u32;
    while !ctx.stopping.get() && ctx.quota.get() > 0 {
        let Some(offset) = rate.time_of(i) else { break };
        let due = ctx.start + Duration::from_secs_f64(offset);
        if ctx.end.is_some_and(|end| due >= end) {
            break;
        }
        if due > Instant::now() {
            behind = 0;
            sleep_until(due).await;
        } else {
            behind += 1;
            if ctx.queue.borrow().len() >= MAX_QUEUED {
                // More due than the loops can ever take: stop releasing until they catch up
                // (what stays unreleased is reported as never sent), and let them run.
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            if behind & 63 == 0 {
                // Never starve the loops (and the end-of-run timer) on this one thread.
                tokio::task::yield_now().await;
            }
        }
        i += ctx.stride;
        ctx.quota.set(ctx.quota.get() - 1);
        // Measured from release: the timer's lateness (about a tick) is the generator's.
        // But when requests have been waiting for a connection for longer than that, this
        // one would have waited behind them had it been released on time: it is measured
        // from `due`. (Requests of the same tick's burst wait less: they do not count.)
        let waiting = {
            let mut q = ctx.queue.borrow_mut();
            let now = Instant::now();
            let backlog = q.front().is_some_and(|&(_, r)| now - r > LATE);
            let released = if backlog { due } else { now };
            q.push_back((due, released));
            q.len()
        };
        ctx.ready.notify_one();
        // The oldest request has waited too long for a loop: every one is busy (a slow or
        // stalled target holds them), so open another connection, as new users would.
        let oldest = ctx.queue.borrow().front().map(|&(_, released)| released);
        if waiting > ctx.idle.get() && oldest.is_some_and(|r| Instant::now() - r > LATE) {
            ctx.grow.notify_one();
        }
    }
    ctx.paced_out.set(true);
    ctx.ready.notify_waiters();
}

fn timed_out(after: Duration) -> Failure {
    Failure::new(
        ErrorKind::Timeout,
        format!(
            "no whole response within {}",
            humantime::format_duration(after)
        ),
    )
}

/// One HTTP/1.1 connection's request loop: a request, its response, the next.
async fn h1_loop(ctx: Rc<Worker>) {
    let mut conn: Option<h1::Conn> = None;
    // One timer per loop, moved for each request, rather than one made and dropped per
    // request.
    let timer = tokio::time::sleep(ctx.plan.timeout);
    tokio::pin!(timer);
    while let Some(start) = ctx.begin().await {
        let req = ctx.plan.mix.pick();
        timer.as_mut().reset(Instant::now() + ctx.plan.timeout);
        let result = tokio::select! {
            biased;
            r = h1::exchange(&mut conn, &ctx.plan.connector, req) => r,
            _ = &mut timer => Err(timed_out(ctx.plan.timeout)),
        };
        let result = match result {
            Ok(x) => Ok((x.status, x.bytes_in, x.connected)),
            Err(f) => {
                conn = None;
                Err(f)
            }
        };
        ctx.end(start, req.h1.len(), result);
    }
    ctx.loop_ended();
}

/// HTTP/2 connections of a worker, each shared by `--streams` loops.
#[derive(Default)]
struct H2Shared {
    conns: RefCell<Vec<Option<h2::Sender>>>,
    connecting: RefCell<Vec<bool>>,
    ready: Notify,
}

impl H2Shared {
    /// The live connection of `slot`, opened by the first loop that needs it while the
    /// others wait for it. Returns the sender and whether this call opened it.
    async fn get(&self, slot: usize, connector: &Connector) -> Result<(h2::Sender, bool), Failure> {
        loop {
            {
                let mut conns = self.conns.borrow_mut();
                if conns.len() <= slot {
                    conns.resize(slot + 1, None);
                    self.connecting.borrow_mut().resize(slot + 1, false);
                }
                if let Some(s) = &conns[slot] {
                    if !s.is_closed() {
                        return Ok((s.clone(), false));
                    }
                    conns[slot] = None;
                }
            }
            if self.connecting.borrow()[slot] {
                self.ready.notified().await;
                continue;
            }
            self.connecting.borrow_mut()[slot] = true;
            // Cleared however the connect ends, a timeout dropping it mid-way included, so
            // the loops waiting for this slot are never left waiting for nothing.
            let guard = Connecting { shared: self, slot };
            let result = h2::connect(connector).await;
            drop(guard);
            let sender = result?;
            self.conns.borrow_mut()[slot] = Some(sender.clone());
            return Ok((sender, true));
        }
    }
}

/// Marks an HTTP/2 slot as connecting while it lives.
struct Connecting<'a> {
    shared: &'a H2Shared,
    slot: usize,
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.shared.connecting.borrow_mut()[self.slot] = false;
        self.shared.ready.notify_waiters();
    }
}

async fn h2_loop(ctx: Rc<Worker>, shared: Rc<H2Shared>, slot: usize) {
    while let Some(start) = ctx.begin().await {
        let req = ctx.plan.mix.pick();
        let exchange = async {
            let (mut sender, connected) = shared.get(slot, &ctx.plan.connector).await?;
            let (status, bytes) = h2::exchange(&mut sender, req).await?;
            Ok((status, bytes, connected))
        };
        let result = match tokio::time::timeout(ctx.plan.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(timed_out(ctx.plan.timeout)),
        };
        ctx.end(start, req.body.len(), result);
    }
    ctx.loop_ended();
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_add_up_to_the_whole() {
        for (total, parts) in [(10, 3), (2, 4), (64, 1), (0, 2)] {
            let sum: u64 = (0..parts).map(|i| share(total, parts, i)).sum();
            assert_eq!(sum, total);
        }
    }
}
