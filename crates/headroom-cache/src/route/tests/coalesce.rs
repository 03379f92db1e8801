//! Coalescing concurrent misses on one key.

use super::*;
use tokio::time::Instant;

// ---- Coalescing ------------------------------------------------------------------------------

// Concurrent misses on one key make one upstream request: the second waits for the first's
// Store to end and is answered from it.
#[tokio::test(start_paused = true)]
async fn concurrent_misses_wait_for_the_first_fill() {
    let h = Harness::new();
    let first = forwarded(h.lookup("GET", "/a", &[]).await);
    let start = Instant::now();
    let (second, _) = tokio::join!(h.lookup("GET", "/a", &[]), async {
        tokio::task::yield_now().await;
        h.forward(first, &ok("max-age=60", "v1"))
    });
    assert_eq!(start.elapsed(), Duration::ZERO);
    let Lookup::Hit(hit) = second else {
        panic!("expected Hit, got {}", kind(&second))
    };
    assert_eq!(hit.body, "v1");
    assert!(hit.cache_status.collapsed, "it waited for the fill");
}

// A first response that is not stored releases the waiters at once (not at coalesce_wait).
#[tokio::test(start_paused = true)]
async fn an_unstored_first_response_releases_the_waiters_at_once() {
    let h = Harness::new();
    let first = forwarded(h.lookup("GET", "/a", &[]).await);
    let start = Instant::now();
    let (second, _) = tokio::join!(h.lookup("GET", "/a", &[]), async {
        tokio::task::yield_now().await;
        h.forward(first, &ok("no-store", "v1"))
    });
    assert_eq!(start.elapsed(), Duration::ZERO, "released at once");
    let got = h.forward(forwarded(second), &ok("no-store", "v1"));
    assert!(
        got.cache_status().contains("collapsed"),
        "{}",
        got.cache_status()
    );
}

// A waiter gives up after coalesce_wait and goes upstream itself (collapsed).
#[tokio::test(start_paused = true)]
async fn a_waiter_goes_upstream_after_coalesce_wait() {
    let h = Harness::new();
    let _first = forwarded(h.lookup("GET", "/a", &[]).await);
    let start = Instant::now();
    let second = forwarded(h.lookup("GET", "/a", &[]).await);
    assert_eq!(start.elapsed(), secs(10));
    let got = h.forward(second, &ok("max-age=60", "v1"));
    assert!(
        got.cache_status().contains("collapsed"),
        "{}",
        got.cache_status()
    );
}
