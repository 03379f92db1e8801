//! The shedder's rules on a fixed limit (futures polled by hand: each step is explicit), and
//! the adaptive limit against a simulated upstream on paused time.

use super::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, Waker};
use tokio::sync::Semaphore;
use Priority::*;

type Admit<'a> = Pin<Box<dyn Future<Output = Result<Permit, Shed>> + 'a>>;

fn fixed(limit: u32, queue: u32) -> Shedder {
    Shedder::new(&ShedSettings {
        max_inflight: Some(limit),
        queue,
        ..ShedSettings::default()
    })
}

fn start(s: &Shedder, p: Priority) -> Admit<'_> {
    Box::pin(s.admit(p))
}

fn poll(f: &mut Admit<'_>) -> Poll<Result<Permit, Shed>> {
    f.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

/// Admission that must be decided at once.
fn now(s: &Shedder, p: Priority) -> Result<Permit, Shed> {
    match poll(&mut start(s, p)) {
        Poll::Ready(r) => r,
        Poll::Pending => panic!("a {p:?} request waits"),
    }
}

fn waiting<'a>(s: &'a Shedder, p: Priority) -> Admit<'a> {
    let mut f = start(s, p);
    assert!(
        poll(&mut f).is_pending(),
        "a {p:?} request is decided at once"
    );
    f
}

fn admitted(f: &mut Admit<'_>) -> Permit {
    match poll(f) {
        Poll::Ready(Ok(p)) => p,
        Poll::Ready(Err(e)) => panic!("shed: {e:?}"),
        Poll::Pending => panic!("still waiting"),
    }
}

fn shed(f: &mut Admit<'_>) -> ShedReason {
    match poll(f) {
        Poll::Ready(Err(e)) => e.reason,
        Poll::Ready(Ok(_)) => panic!("admitted"),
        Poll::Pending => panic!("still waiting"),
    }
}

#[tokio::test(start_paused = true)]
async fn fixed_limit_admits_the_limit_queues_the_queue_then_rejects_queue_full() {
    let s = fixed(2, 2);
    let a = now(&s, Normal).unwrap();
    let _b = now(&s, Normal).unwrap();
    let mut c = waiting(&s, Normal);
    let _d = waiting(&s, Normal);
    assert_eq!((s.inflight(), s.queued()), (2, 2));
    let e = now(&s, Normal).unwrap_err();
    assert_eq!(e.reason, ShedReason::QueueFull);
    assert_eq!(e.retry_after, Duration::from_secs(1));
    a.done(Duration::from_millis(5), Outcome::Ok);
    let _c = admitted(&mut c);
    assert_eq!((s.inflight(), s.queued()), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_times_out_with_queue_timeout() {
    let s = Shedder::new(&ShedSettings {
        max_inflight: Some(1),
        queue: 1,
        queue_timeout: Duration::from_millis(1500),
        ..ShedSettings::default()
    });
    let held = now(&s, Normal).unwrap();
    let mut f = waiting(&s, Normal);
    tokio::time::advance(Duration::from_millis(1499)).await;
    assert!(poll(&mut f).is_pending());
    tokio::time::advance(Duration::from_millis(1)).await;
    match poll(&mut f) {
        Poll::Ready(Err(e)) => {
            assert_eq!(e.reason, ShedReason::QueueTimeout);
            assert_eq!(e.retry_after, Duration::from_secs(2), "rounded up");
        }
        other => panic!("{:?}", other.map(|r| r.map(|_| ()))),
    }
    assert_eq!(s.queued(), 0);
    drop(held);
    assert_eq!(s.inflight(), 0, "the slot is not handed to the gone waiter");
}

#[tokio::test(start_paused = true)]
async fn a_released_permit_goes_to_the_first_waiter_in_priority_order() {
    let s = fixed(1, 4);
    let held = now(&s, Normal).unwrap();
    let mut n1 = waiting(&s, Normal);
    let mut n2 = waiting(&s, Normal);
    let mut c = waiting(&s, Critical);
    drop(held);
    // Handed over: a newcomer, even a critical one, cannot take it in between.
    let _late = waiting(&s, Critical);
    let c = admitted(&mut c);
    assert!(poll(&mut n1).is_pending() && poll(&mut n2).is_pending());
    c.done(Duration::from_millis(1), Outcome::Ok);
    // The late critical request is ahead of both normal ones now.
    assert!(poll(&mut n1).is_pending());
}

#[tokio::test(start_paused = true)]
async fn waiters_of_one_priority_are_served_first_come_first_served() {
    let s = fixed(1, 4);
    let held = now(&s, Normal).unwrap();
    let mut n1 = waiting(&s, Normal);
    let mut n2 = waiting(&s, Normal);
    drop(held);
    assert!(poll(&mut n2).is_pending());
    let p1 = admitted(&mut n1);
    drop(p1);
    let _p2 = admitted(&mut n2);
}

#[tokio::test(start_paused = true)]
async fn sheddable_requests_are_shed_first_and_critical_ones_last() {
    // Limit 10, reserve 10 %: sheddable up to 8 in flight, normal 9, critical 10.
    let s = fixed(10, 0);
    let _held: Vec<Permit> = (0..8).map(|_| now(&s, Normal).unwrap()).collect();
    assert_eq!(
        now(&s, Sheddable).unwrap_err().reason,
        ShedReason::Sheddable
    );
    let _ninth = now(&s, Normal).unwrap();
    assert_eq!(now(&s, Normal).unwrap_err().reason, ShedReason::QueueFull);
    let _tenth = now(&s, Critical).unwrap();
    assert_eq!(now(&s, Critical).unwrap_err().reason, ShedReason::QueueFull);
    assert_eq!(s.inflight(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_sheddable_request_never_waits_behind_another() {
    let s = fixed(1, 4);
    let held = now(&s, Normal).unwrap();
    let mut first = waiting(&s, Sheddable);
    assert_eq!(
        now(&s, Sheddable).unwrap_err().reason,
        ShedReason::Sheddable
    );
    let mut n = waiting(&s, Normal);
    drop(held);
    assert!(
        poll(&mut first).is_pending(),
        "the normal request goes first"
    );
    drop(admitted(&mut n));
    let _ = admitted(&mut first);
}

#[tokio::test(start_paused = true)]
async fn a_critical_request_takes_the_place_of_the_newest_lower_one_in_a_full_queue() {
    let s = fixed(1, 2);
    let held = now(&s, Normal).unwrap();
    let mut n1 = waiting(&s, Normal);
    let mut n2 = waiting(&s, Normal);
    let mut c1 = waiting(&s, Critical);
    assert_eq!(shed(&mut n2), ShedReason::QueueFull);
    let _c2 = waiting(&s, Critical);
    assert_eq!(shed(&mut n1), ShedReason::QueueFull);
    assert_eq!(
        now(&s, Critical).unwrap_err().reason,
        ShedReason::QueueFull,
        "a queue full of critical requests is full"
    );
    assert_eq!(s.queued(), 2);
    drop(held);
    let _ = admitted(&mut c1);
}

#[tokio::test(start_paused = true)]
async fn the_queue_keeps_a_share_for_critical_requests() {
    let s = fixed(1, 10);
    let _held = now(&s, Normal).unwrap();
    let _normal: Vec<Admit> = (0..9).map(|_| waiting(&s, Normal)).collect();
    assert_eq!(now(&s, Normal).unwrap_err().reason, ShedReason::QueueFull);
    let _critical = waiting(&s, Critical);
    assert_eq!(s.queued(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_normal_request_takes_the_place_of_a_sheddable_one() {
    let s = fixed(1, 1);
    let _held = now(&s, Normal).unwrap();
    let mut sh = waiting(&s, Sheddable);
    let _n = waiting(&s, Normal);
    assert_eq!(shed(&mut sh), ShedReason::Sheddable);
    assert_eq!(s.queued(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_goes_away_gives_up_its_place_and_the_slot_it_was_handed() {
    let s = fixed(1, 2);
    let held = now(&s, Normal).unwrap();
    drop(waiting(&s, Normal));
    assert_eq!(s.queued(), 0);
    let handed = waiting(&s, Normal);
    drop(held);
    assert_eq!(s.inflight(), 1, "handed to the waiter");
    drop(handed);
    assert_eq!(s.inflight(), 0);
}

// ---- the adaptive limit against a simulated upstream ----

/// An upstream with `servers` requests served at once, each for `service`; the rest wait
/// in its own queue (first come first served), as a thread pool does.
struct Upstream {
    servers: Semaphore,
    service_ms: AtomicU64,
}

impl Upstream {
    fn new(servers: usize, service_ms: u64) -> Arc<Upstream> {
        Arc::new(Upstream {
            servers: Semaphore::new(servers),
            service_ms: AtomicU64::new(service_ms),
        })
    }

    async fn call(&self) {
        let _server = self.servers.acquire().await.expect("never closed");
        let ms = self.service_ms.load(Relaxed);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

#[derive(Default)]
struct Tally {
    admitted: AtomicU64,
    latency_ms: AtomicU64,
    shed: AtomicU64,
}

impl Tally {
    /// (admitted, their mean latency in ms, shed), counted since the last take.
    fn take(&self) -> (u64, f64, u64) {
        let n = self.admitted.swap(0, Relaxed);
        let ms = self.latency_ms.swap(0, Relaxed);
        (n, ms as f64 / n.max(1) as f64, self.shed.swap(0, Relaxed))
    }
}

/// Offers `per_ms` requests every millisecond for `ms`; returns the limit every 100 ms.
async fn offer(
    s: &Shedder,
    up: &Arc<Upstream>,
    tally: &Arc<Tally>,
    per_ms: u32,
    ms: u32,
) -> Vec<u32> {
    let mut limits = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for t in 0..ms {
        tick.tick().await;
        if t % 100 == 0 {
            limits.push(s.limit());
        }
        for _ in 0..per_ms {
            let (s, up, tally) = (s.clone(), up.clone(), tally.clone());
            tokio::spawn(async move {
                match s.admit(Normal).await {
                    Ok(permit) => {
                        let began = Instant::now();
                        up.call().await;
                        let latency = began.elapsed();
                        tally.admitted.fetch_add(1, Relaxed);
                        tally
                            .latency_ms
                            .fetch_add(latency.as_millis() as u64, Relaxed);
                        permit.done(latency, Outcome::Ok);
                    }
                    Err(_) => {
                        tally.shed.fetch_add(1, Relaxed);
                    }
                }
            });
        }
    }
    limits
}

fn adaptive(a: AdaptiveSettings) -> Shedder {
    Shedder::new(&ShedSettings {
        adaptive: Some(a),
        ..ShedSettings::default()
    })
}

fn within(limits: &[u32], lo: f64, hi: f64) -> bool {
    limits
        .iter()
        .all(|&l| f64::from(l) >= lo && f64::from(l) <= hi)
}

#[tokio::test(start_paused = true)]
async fn the_adaptive_limit_comes_down_to_the_upstream_s_capacity_and_sheds_the_excess() {
    // 20 servers × 10 ms: 2,000 requests/s; offered 8,000/s. Started well above capacity.
    let (c, service) = (20.0, 10.0);
    let s = adaptive(AdaptiveSettings {
        initial_limit: 100,
        ..AdaptiveSettings::default()
    });
    let up = Upstream::new(20, 10);
    let tally = Arc::new(Tally::default());
    offer(&s, &up, &tally, 8, 3000).await;
    tally.take();
    let limits = offer(&s, &up, &tally, 8, 5000).await;
    let (admitted, mean_ms, shed) = tally.take();
    assert!(
        within(&limits, 0.8 * c, 1.5 * c),
        "limit over time: {limits:?}"
    );
    assert!(
        mean_ms <= 1.5 * service,
        "admitted requests' mean latency {mean_ms} ms"
    );
    assert_eq!(s.baseline().map(|b| b.as_millis()), Some(10));
    // Goodput stays near capacity (2,000/s over 5 s), the rest is shed.
    assert!(admitted as f64 >= 0.8 * 2000.0 * 5.0, "admitted {admitted}");
    assert!(shed as f64 >= 0.5 * 8000.0 * 5.0, "shed {shed}");
}

#[tokio::test(start_paused = true)]
async fn the_adaptive_limit_grows_back_when_the_upstream_recovers() {
    let s = adaptive(AdaptiveSettings::default());
    let up = Upstream::new(10, 10);
    let tally = Arc::new(Tally::default());
    let before = offer(&s, &up, &tally, 8, 3000).await;
    assert!(
        within(&before[20..], 8.0, 15.0),
        "limit at 10 servers: {before:?}"
    );
    up.servers.add_permits(30);
    offer(&s, &up, &tally, 8, 3000).await;
    tally.take();
    let after = offer(&s, &up, &tally, 8, 2000).await;
    let (_, mean_ms, _) = tally.take();
    assert!(within(&after, 32.0, 60.0), "limit at 40 servers: {after:?}");
    assert!(mean_ms <= 15.0, "mean latency {mean_ms} ms");
}

#[tokio::test(start_paused = true)]
async fn the_adaptive_limit_stays_within_its_bounds() {
    let tally = Arc::new(Tally::default());
    let capped = adaptive(AdaptiveSettings {
        max_limit: 15,
        ..AdaptiveSettings::default()
    });
    let big = Upstream::new(100, 10);
    let limits = offer(&capped, &big, &tally, 8, 3000).await;
    assert!(limits.iter().all(|&l| l <= 15), "{limits:?}");
    assert_eq!(capped.limit(), 15, "it reaches its ceiling");

    let floored = adaptive(AdaptiveSettings {
        min_limit: 8,
        ..AdaptiveSettings::default()
    });
    let small = Upstream::new(2, 10);
    let limits = offer(&floored, &small, &tally, 8, 3000).await;
    assert!(limits.iter().all(|&l| l >= 8), "{limits:?}");
    assert!(limits.contains(&8), "it reaches its floor: {limits:?}");
}

#[tokio::test(start_paused = true)]
async fn with_a_fixed_limit_too_the_adaptive_limit_is_capped_by_it() {
    let s = Shedder::new(&ShedSettings {
        max_inflight: Some(12),
        adaptive: Some(AdaptiveSettings::default()),
        ..ShedSettings::default()
    });
    let tally = Arc::new(Tally::default());
    let limits = offer(&s, &Upstream::new(100, 10), &tally, 8, 2000).await;
    assert!(limits.iter().all(|&l| l <= 12), "{limits:?}");
    assert_eq!(s.limit(), 12);
}

#[tokio::test(start_paused = true)]
async fn a_slower_upstream_is_measured_again_from_the_floor() {
    // The upstream's service time triples at the same concurrency: the old baseline makes
    // every window look congested, the limit sinks to its floor, and from there the
    // baseline is measured again.
    let s = adaptive(AdaptiveSettings::default());
    let up = Upstream::new(20, 10);
    let tally = Arc::new(Tally::default());
    offer(&s, &up, &tally, 8, 2000).await;
    up.service_ms.store(30, Relaxed);
    offer(&s, &up, &tally, 8, 5000).await;
    let limits = offer(&s, &up, &tally, 8, 2000).await;
    assert_eq!(s.baseline().map(|b| b.as_millis()), Some(30));
    assert!(within(&limits, 16.0, 30.0), "{limits:?}");
}

#[tokio::test(start_paused = true)]
async fn the_baseline_is_measured_again_every_interval() {
    // The upstream gets faster: latency under the old baseline lets the limit grow until
    // requests queue in the upstream up to the old latency; only a new measurement brings
    // the limit back to the capacity.
    let s = adaptive(AdaptiveSettings {
        baseline_interval: Duration::from_secs(2),
        ..AdaptiveSettings::default()
    });
    let up = Upstream::new(20, 10);
    let tally = Arc::new(Tally::default());
    offer(&s, &up, &tally, 8, 3000).await;
    up.service_ms.store(5, Relaxed);
    offer(&s, &up, &tally, 8, 4000).await;
    let limits = offer(&s, &up, &tally, 8, 1000).await;
    assert_eq!(s.baseline().map(|b| b.as_millis()), Some(5));
    assert!(within(&limits[3..], 16.0, 30.0), "{limits:?}");
}

/// Runs `n` requests one after the other with `latency` and `outcome`, then closes the window.
async fn window(s: &Shedder, n: u32, latency: Duration, outcome: Outcome) {
    for _ in 0..n {
        now(s, Normal).unwrap().done(latency, outcome);
    }
    tokio::time::advance(Duration::from_millis(100)).await;
}

async fn measured(initial: u32) -> Shedder {
    let s = adaptive(AdaptiveSettings {
        initial_limit: initial,
        ..AdaptiveSettings::default()
    });
    assert_eq!(s.limit(), 4, "held at min_limit while measuring");
    window(&s, 25, Duration::from_millis(10), Outcome::Ok).await;
    assert_eq!(s.limit(), initial);
    s
}

#[tokio::test(start_paused = true)]
async fn failures_push_the_adaptive_limit_down_even_when_they_are_fast() {
    let s = measured(20).await;
    for _ in 0..10 {
        for _ in 0..10 {
            now(&s, Normal)
                .unwrap()
                .done(Duration::from_millis(1), Outcome::Ok);
            now(&s, Normal)
                .unwrap()
                .done(Duration::from_millis(1), Outcome::Failed);
        }
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    // Half the requests failing: the limit backs off (fast answers alone would not move it
    // here: one request at a time is app-limited, never grown).
    assert!(s.limit() < 20, "limit {}", s.limit());
}

#[tokio::test(start_paused = true)]
async fn dropped_requests_are_no_sample() {
    let s = measured(20).await;
    for _ in 0..5 {
        window(&s, 20, Duration::from_secs(10), Outcome::Dropped).await;
    }
    assert_eq!(s.limit(), 20);
    // The same latencies as successes do push it down: the test could fail.
    for _ in 0..5 {
        window(&s, 20, Duration::from_secs(10), Outcome::Ok).await;
    }
    assert!(s.limit() < 20);
}

/// Threads racing on one shedder: the limit holds, no waiter is forgotten (a lost wake-up
/// would end in a queue timeout), and everything is given back. Real threads, so not on
/// paused time; no timing in the assertions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_threads_never_exceed_the_limit_nor_lose_a_waiter() {
    let s = Shedder::new(&ShedSettings {
        max_inflight: Some(8),
        queue: 10_000,
        queue_timeout: Duration::from_secs(10),
        ..ShedSettings::default()
    });
    let peak = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..4000)
        .map(|i| {
            let (s, peak) = (s.clone(), peak.clone());
            tokio::spawn(async move {
                let p = [Critical, Normal][i % 2];
                let permit = s.admit(p).await?;
                peak.fetch_max(u64::from(s.inflight()), Relaxed);
                for _ in 0..(i % 3) {
                    tokio::task::yield_now().await;
                }
                permit.done(Duration::from_millis(1), Outcome::Ok);
                Ok::<(), Shed>(())
            })
        })
        .collect();
    for t in tasks {
        t.await
            .expect("no panic")
            .expect("every request is admitted in time");
    }
    assert!(
        peak.load(Relaxed) <= 8,
        "peak in flight {}",
        peak.load(Relaxed)
    );
    assert_eq!((s.inflight(), s.queued()), (0, 0));
}
