//! Stale responses: reuse constraints, stale-while-revalidate, stale-if-error,
//! validation and purges.

use super::*;
use crate::{Purge, PurgeKind};

// ---- Reuse constraints (§4.2.4, §5.2.2) -----------------------------------------------

// §5.2.2.4: a no-cache response is stored, but every use is revalidated first.
#[tokio::test]
async fn no_cache_response_is_stored_but_revalidated_on_every_use() {
    let h = Harness::new();
    let up = origin(
        200,
        &[("cache-control", "no-cache"), ("etag", "\"v1\"")],
        "x",
    );
    h.get("/a", &[], &up).await;
    assert_eq!(h.stored("example.com/a").len(), 1, "stored");
    for _ in 0..2 {
        let got = h
            .get("/a", &[], &origin(304, &[("etag", "\"v1\"")], ""))
            .await;
        assert!(got.asked, "each use revalidated");
        assert_eq!(got.sent["if-none-match"], "\"v1\"");
        assert_eq!((got.x_cache(), got.body()), ("REVALIDATED", "x"));
    }
}

// §4.2.4, §5.2.2.2: must-revalidate is never served stale, even within the
// stale-while-revalidate window.
#[tokio::test]
async fn must_revalidate_is_never_served_stale_within_stale_while_revalidate() {
    let h = Harness::new();
    let cc = "max-age=10, must-revalidate, stale-while-revalidate=600";
    h.get("/a", &[], &ok(cc, "x")).await;
    h.advance(20);
    assert_eq!(kind(&h.lookup("GET", "/a", &[]).await), "Forward");
    let got = h
        .get("/a", &[("cache-control", "max-stale=600")], &ok(cc, "y"))
        .await;
    assert!(got.asked, "max-stale does not override must-revalidate");
}

// §4.2.4, §5.2.2.2: nor within stale-if-error (must-revalidate asks for an error).
#[tokio::test]
async fn must_revalidate_is_never_served_stale_within_stale_if_error() {
    let h = Harness::new();
    h.get(
        "/a",
        &[],
        &ok("max-age=10, must-revalidate, stale-if-error=600", "x"),
    )
    .await;
    h.advance(20);
    let fill = forwarded(h.lookup("GET", "/a", &[]).await);
    assert!(fill.error().is_none());
    let got = h.get("/a", &[], &origin(503, &[], "down")).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
}

// ---- stale-while-revalidate (RFC 5861 §3) ----------------------------------------------

// RFC 5861 §3: within the window, the stale response is served and refreshed in the
// background, once: a second request meanwhile gets the stale response, no second refresh.
#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_once() {
    let h = Harness::new();
    h.get(
        "/a",
        &[],
        &ok("max-age=10, stale-while-revalidate=60", "v1"),
    )
    .await;
    h.advance(30);
    let first = h.get("/a", &[], &ok("", "")).await;
    assert!(!first.asked);
    assert_eq!((first.x_cache(), first.body()), ("STALE", "v1"));
    let refresh = first.refresh.expect("a background refresh");
    assert!(refresh.is_background());
    let second = h.lookup("GET", "/a", &[]).await;
    assert_eq!(kind(&second), "Hit", "no second refresh while one runs");
    h.forward(refresh, &ok("max-age=10, stale-while-revalidate=60", "v2"));
    let after = h.get("/a", &[], &ok("", "")).await;
    assert_eq!((after.x_cache(), after.body()), ("HIT", "v2"));
}

// RFC 5861 §3: a refresh started by a HEAD is still the whole GET (the edge sends a GET
// for it), so its response is stored like any other refresh.
#[tokio::test]
async fn a_refresh_started_by_a_head_stores_the_refreshed_response() {
    let h = Harness::new();
    let cc = "max-age=10, stale-while-revalidate=60";
    h.get("/a", &[], &ok(cc, "v1")).await;
    h.advance(30);
    let head = h.send("HEAD", "/a", &[], &ok("", "")).await;
    assert_eq!((head.x_cache(), head.body()), ("STALE", ""));
    let refreshed = h.forward(head.refresh.expect("a background refresh"), &ok(cc, "v2"));
    assert!(
        refreshed.cache_status().contains("stored"),
        "{}",
        refreshed.cache_status()
    );
    let after = h.get("/a", &[], &ok("", "")).await;
    assert_eq!((after.x_cache(), after.body()), ("HIT", "v2"));
}

// RFC 5861 §3: past the window the response is revalidated before use.
#[tokio::test]
async fn past_stale_while_revalidate_the_response_is_revalidated_first() {
    let h = Harness::new();
    h.get(
        "/a",
        &[],
        &ok("max-age=10, stale-while-revalidate=60", "v1"),
    )
    .await;
    h.advance(71);
    assert_eq!(kind(&h.lookup("GET", "/a", &[]).await), "Forward");
}

// The route's stale_while_revalidate applies when the origin sends none.
#[tokio::test]
async fn route_stale_while_revalidate_applies_when_the_origin_sends_none() {
    let h = Harness::with_policy(|p| p.stale_while_revalidate = secs(60));
    h.get("/a", &[], &ok("max-age=10", "v1")).await;
    h.advance(30);
    assert_eq!(kind(&h.lookup("GET", "/a", &[]).await), "HitAndRefresh");
}

// ---- stale-if-error (RFC 5861 §4) -------------------------------------------------------

// RFC 5861 §4: within the window, an upstream failure is answered with the stale response.
#[tokio::test]
async fn stale_if_error_serves_the_stale_response_when_the_upstream_fails() {
    let h = Harness::new();
    h.get("/a", &[], &ok("max-age=10, stale-if-error=60", "v1"))
        .await;
    h.advance(30);
    let hit = forwarded(h.lookup("GET", "/a", &[]).await)
        .error()
        .expect("stale within stale-if-error");
    assert_eq!(hit.body, "v1");
    assert_eq!(hit.cache_status.detail, Some("stale-if-error"));
    h.advance(41); // stale by 61 s
    assert!(forwarded(h.lookup("GET", "/a", &[]).await)
        .error()
        .is_none());
}

// RFC 5861 §4: a 500–504 from upstream is an error too: replaced by the stale response.
#[tokio::test]
async fn stale_if_error_replaces_a_5xx_from_the_upstream() {
    let h = Harness::new();
    h.get("/a", &[], &ok("max-age=10, stale-if-error=60", "v1"))
        .await;
    h.advance(30);
    let got = h.get("/a", &[], &origin(503, &[], "down")).await;
    assert!(got.asked);
    assert_eq!((got.status, got.body()), (StatusCode::OK, "v1"));
    assert!(got.cache_status().contains("detail=stale-if-error"));
    h.advance(41);
    let past = h.get("/a", &[], &origin(503, &[], "down")).await;
    assert_eq!(
        (past.status, past.body()),
        (StatusCode::SERVICE_UNAVAILABLE, "down")
    );
}

// The route's stale_if_error applies when the origin sends none.
#[tokio::test]
async fn route_stale_if_error_applies_when_the_origin_sends_none() {
    let h = Harness::with_policy(|p| p.stale_if_error = secs(60));
    h.get("/a", &[], &ok("max-age=10", "v1")).await;
    h.advance(30);
    assert!(forwarded(h.lookup("GET", "/a", &[]).await)
        .error()
        .is_some());
    let plain = Harness::new();
    plain.get("/a", &[], &ok("max-age=10", "v1")).await;
    plain.advance(30);
    assert!(forwarded(plain.lookup("GET", "/a", &[]).await)
        .error()
        .is_none());
}

// ---- Validation (§4.3) -------------------------------------------------------------------

// §4.3.1: the revalidation carries the stored validators; §4.3.4: a 304 freshens the stored
// response (its headers updated, its body kept), fresh again from then.
#[tokio::test]
async fn revalidation_sends_validators_and_a_304_freshens_the_entry() {
    let h = Harness::new();
    let modified = h.ago(3_600);
    h.get(
        "/a",
        &[],
        &origin(
            200,
            &[
                ("cache-control", "max-age=10"),
                ("etag", "\"v1\""),
                ("last-modified", &modified),
                ("x-version", "1"),
            ],
            "body",
        ),
    )
    .await;
    h.advance(20);
    let not_modified = origin(
        304,
        &[
            ("etag", "\"v1\""),
            ("cache-control", "max-age=100"),
            ("x-version", "2"),
        ],
        "",
    );
    let got = h
        .get("/a", &[("if-none-match", "\"client\"")], &not_modified)
        .await;
    assert!(got.asked);
    assert_eq!(
        got.sent["if-none-match"], "\"v1\"",
        "the stored ETag, not the client's"
    );
    assert_eq!(got.sent["if-modified-since"], modified.as_str());
    assert_eq!((got.status, got.body()), (StatusCode::OK, "body"));
    assert_eq!(got.header("x-version"), "2", "headers freshened");
    assert!(got.cache_status().contains("fwd-status=304"));
    h.advance(99);
    let hit = h.get("/a", &[], &ok("", "")).await;
    assert!(!hit.asked, "fresh under the 304's max-age");
    assert_eq!((hit.body(), hit.header("x-version")), ("body", "2"));
    assert_eq!(hit.age(), 99);
}

// §4.3.3: a 200 to the revalidation replaces the stored response.
#[tokio::test]
async fn revalidation_answered_with_200_stores_the_new_response() {
    let h = Harness::new();
    h.get(
        "/a",
        &[],
        &origin(
            200,
            &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
            "v1",
        ),
    )
    .await;
    h.advance(20);
    let up = origin(
        200,
        &[("cache-control", "max-age=10"), ("etag", "\"v2\"")],
        "v2",
    );
    let got = h.get("/a", &[], &up).await;
    assert_eq!((got.x_cache(), got.body()), ("EXPIRED", "v2"));
    let hit = h.get("/a", &[], &ok("", "")).await;
    assert_eq!((hit.x_cache(), hit.body()), ("HIT", "v2"));
    assert_eq!(hit.header("etag"), "\"v2\"");
    assert_eq!(h.stored("example.com/a").len(), 1, "replaced, not added");
}

// ---- Purge ----------------------------------------------------------------------------------

fn url_purge(path: &str, soft: bool) -> Purge {
    Purge::new(PurgeKind::Url(format!("{HOST}{path}")), soft)
}

// A soft purge marks stale: stale-while-revalidate still serves it (refreshing it).
#[tokio::test]
async fn soft_purge_marks_stale_and_is_served_under_stale_while_revalidate() {
    let h = Harness::new();
    h.get(
        "/a",
        &[],
        &ok("max-age=600, stale-while-revalidate=60", "v1"),
    )
    .await;
    assert_eq!(h.cache.purge(url_purge("/a", true)), 1);
    let got = h.get("/a", &[], &ok("", "")).await;
    assert!(!got.asked);
    assert_eq!((got.x_cache(), got.body()), ("STALE", "v1"));
    assert!(got.refresh.is_some(), "refreshed in the background");
}

// A soft purge without a stale allowance: revalidated before use.
#[tokio::test]
async fn soft_purge_without_stale_allowance_revalidates() {
    let h = Harness::new();
    h.get(
        "/a",
        &[],
        &origin(
            200,
            &[("cache-control", "max-age=600"), ("etag", "\"v1\"")],
            "v1",
        ),
    )
    .await;
    h.cache.purge(url_purge("/a", true));
    let got = h
        .get("/a", &[], &origin(304, &[("etag", "\"v1\"")], ""))
        .await;
    assert!(got.asked);
    assert_eq!(got.sent["if-none-match"], "\"v1\"");
    assert_eq!((got.x_cache(), got.body()), ("REVALIDATED", "v1"));
}

// A hard purge deletes: the next request is a miss (no validators sent).
#[tokio::test]
async fn hard_purge_deletes_the_entry() {
    let h = Harness::new();
    let up = origin(
        200,
        &[("cache-control", "max-age=600"), ("etag", "\"v1\"")],
        "v1",
    );
    h.get("/a", &[], &up).await;
    h.get("/b", &[], &up).await;
    assert_eq!(h.cache.purge(url_purge("/a", false)), 1);
    let got = h.get("/a", &[], &up).await;
    assert_eq!(got.x_cache(), "MISS");
    assert!(got.sent.get("if-none-match").is_none());
    assert!(!h.get("/b", &[], &up).await.asked, "other URLs kept");
}

// A purge covers the entries stored before it, not those stored after (what an entry that
// comes back from the Redis tier is checked against).
#[tokio::test]
async fn purge_does_not_affect_entries_stored_after_it() {
    let h = Harness::new();
    h.get("/a", &[], &ok("max-age=600", "old")).await;
    let old = h.stored("example.com/a").pop().unwrap();
    h.advance(1);
    h.cache.purge(url_purge("/a", false));
    h.advance(1);
    h.get("/a", &[], &ok("max-age=600", "new")).await;
    let new = h.stored("example.com/a").pop().unwrap();
    assert_eq!(new.body, "new");
    assert!(!h.cache.shared.purges.admit(&old), "stored before: purged");
    assert!(h.cache.shared.purges.admit(&new), "stored after: kept");
    h.cache.purge(url_purge("/b", true));
    assert!(h.cache.shared.purges.admit(&new) && !new.is_soft_purged());
    assert_eq!(h.get("/a", &[], &ok("", "")).await.x_cache(), "HIT");
}
