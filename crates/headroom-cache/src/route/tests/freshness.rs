//! Freshness, Age and request directives.

use super::*;

// ---- Freshness (§4.2) ----------------------------------------------------------------

// §4.2, §4.2.1: fresh while its age is below max-age, stale from then on.
#[tokio::test]
async fn fresh_response_is_served_until_max_age_passes_then_is_stale() {
    let h = Harness::new();
    let up = ok("max-age=60", "v1");
    let miss = h.get("/a", &[], &up).await;
    assert!(miss.asked);
    assert_eq!(miss.x_cache(), "MISS");
    assert!(
        miss.cache_status().contains("stored"),
        "{}",
        miss.cache_status()
    );
    h.advance(59);
    let hit = h.get("/a", &[], &up).await;
    assert!(!hit.asked, "fresh at 59s of 60");
    assert_eq!((hit.x_cache(), hit.body()), ("HIT", "v1"));
    assert!(
        hit.cache_status().contains("ttl=1"),
        "{}",
        hit.cache_status()
    );
    h.advance(2);
    let stale = h.get("/a", &[], &ok("max-age=60", "v2")).await;
    assert!(stale.asked, "stale at 61s of 60");
    assert_eq!((stale.x_cache(), stale.body()), ("EXPIRED", "v2"));
}

// §5.2.2.10: a shared cache takes s-maxage over max-age.
#[tokio::test]
async fn s_maxage_overrides_max_age() {
    let h = Harness::new();
    h.get("/a", &[], &ok("max-age=10, s-maxage=100", "x")).await;
    h.advance(50);
    assert!(
        !h.get("/a", &[], &ok("", "")).await.asked,
        "fresh by s-maxage"
    );
    h.advance(51);
    assert!(
        h.get("/a", &[], &ok("", "")).await.asked,
        "stale past s-maxage"
    );
}

// §4.2.1, §5.3: without max-age, the lifetime is Expires − Date.
#[tokio::test]
async fn expires_minus_date_is_the_lifetime_without_max_age() {
    let h = Harness::new();
    let expires = httpdate::fmt_http_date(h.clock.now() + secs(120));
    h.get("/a", &[], &origin(200, &[("expires", &expires)], "x"))
        .await;
    h.advance(119);
    assert!(!h.get("/a", &[], &ok("", "")).await.asked);
    h.advance(2);
    assert!(h.get("/a", &[], &ok("", "")).await.asked);
}

// §4.2.2: heuristic freshness, 10% of the time since Last-Modified.
#[tokio::test]
async fn heuristic_freshness_is_a_tenth_of_the_time_since_last_modified() {
    let h = Harness::new();
    let modified = h.ago(36_000); // 10 h: fresh for 1 h
    h.get(
        "/a",
        &[],
        &origin(200, &[("last-modified", &modified)], "x"),
    )
    .await;
    h.advance(3_599);
    assert!(!h.get("/a", &[], &ok("", "")).await.asked);
    h.advance(2);
    let stale = h.get("/a", &[], &ok("", "")).await;
    assert!(stale.asked);
    assert_eq!(
        stale.sent["if-modified-since"],
        modified.as_str(),
        "revalidated with Last-Modified"
    );
}

// §4.2.2: the heuristic lifetime is capped (`heuristic_cap`).
#[tokio::test]
async fn heuristic_freshness_is_capped_by_heuristic_cap() {
    let mut cfg = store_config();
    cfg.heuristic_cap = secs(3_600);
    let h = Harness::with(cfg, route_config());
    let modified = h.ago(100 * 86_400); // heuristic 10 days, capped at 1 h
    h.get(
        "/a",
        &[],
        &origin(200, &[("last-modified", &modified)], "x"),
    )
    .await;
    h.advance(3_599);
    assert!(!h.get("/a", &[], &ok("", "")).await.asked);
    h.advance(2);
    assert!(h.get("/a", &[], &ok("", "")).await.asked, "capped at 1 h");
}

// §4.2.3, §5.1: Age is the upstream's Age plus the time resident here; it counts against
// the lifetime.
#[tokio::test]
async fn age_on_a_hit_is_the_time_resident_plus_the_upstream_age() {
    let h = Harness::new();
    h.get(
        "/a",
        &[],
        &origin(200, &[("cache-control", "max-age=60"), ("age", "30")], "x"),
    )
    .await;
    h.advance(10);
    let hit = h.get("/a", &[], &ok("", "")).await;
    assert!(!hit.asked);
    assert_eq!(hit.age(), 40);
    h.advance(19);
    assert_eq!(h.get("/a", &[], &ok("", "")).await.age(), 59);
    h.advance(2);
    assert!(
        h.get("/a", &[], &ok("", "")).await.asked,
        "stale at Age 61 although resident only 31s"
    );
}

// §4.2.3: the apparent age (now − Date) counts when the upstream sends no Age.
#[tokio::test]
async fn age_includes_the_apparent_age_from_an_old_date() {
    let h = Harness::new();
    let date = h.ago(5);
    h.get(
        "/a",
        &[],
        &origin(
            200,
            &[("cache-control", "max-age=60"), ("date", &date)],
            "x",
        ),
    )
    .await;
    h.advance(10);
    assert_eq!(h.get("/a", &[], &ok("", "")).await.age(), 15);
}

// ---- Request directives (§5.2.1) -----------------------------------------------------

// §5.2.1.1: request max-age refuses a response older than it.
#[tokio::test]
async fn request_max_age_refuses_an_older_response() {
    let h = Harness::new();
    h.get("/a", &[], &ok("max-age=600", "x")).await;
    h.advance(30);
    let cc = [("cache-control", "max-age=40")];
    assert!(!h.get("/a", &cc, &ok("", "")).await.asked);
    h.advance(11);
    assert!(h.get("/a", &cc, &ok("max-age=600", "y")).await.asked);
}

// §5.2.1.3: request min-fresh refuses a response fresh for less than it.
#[tokio::test]
async fn request_min_fresh_refuses_a_response_fresh_for_less() {
    let h = Harness::new();
    h.get("/a", &[], &ok("max-age=60", "x")).await;
    h.advance(30); // 30 s left
    assert!(
        !h.get("/a", &[("cache-control", "min-fresh=20")], &ok("", ""))
            .await
            .asked
    );
    assert!(
        h.get(
            "/a",
            &[("cache-control", "min-fresh=40")],
            &ok("max-age=60", "y")
        )
        .await
        .asked
    );
}

// §5.2.1.2: request max-stale accepts a response stale by up to its value.
#[tokio::test]
async fn request_max_stale_accepts_a_stale_response_within_it() {
    let h = Harness::new();
    h.get("/a", &[], &ok("max-age=10", "x")).await;
    h.advance(30); // stale by 20 s
    let cc = [("cache-control", "max-stale=25")];
    let hit = h.get("/a", &cc, &ok("", "")).await;
    assert!(!hit.asked);
    assert_eq!(hit.x_cache(), "STALE");
    h.advance(10); // stale by 30 s
    assert!(h.get("/a", &cc, &ok("max-age=10", "y")).await.asked);
    h.advance(100);
    let any = [("cache-control", "max-stale")];
    assert!(
        !h.get("/a", &any, &ok("", "")).await.asked,
        "max-stale without a value accepts any staleness"
    );
}

// §5.2.1.4: request no-cache revalidates even a fresh response.
#[tokio::test]
async fn request_no_cache_revalidates_a_fresh_response() {
    let h = Harness::new();
    let up = origin(
        200,
        &[("cache-control", "max-age=600"), ("etag", "\"v1\"")],
        "x",
    );
    h.get("/a", &[], &up).await;
    let got = h
        .get(
            "/a",
            &[("cache-control", "no-cache")],
            &origin(304, &[("etag", "\"v1\"")], ""),
        )
        .await;
    assert!(got.asked, "revalidated although fresh");
    assert_eq!(got.sent["if-none-match"], "\"v1\"");
    assert_eq!((got.status, got.body()), (StatusCode::OK, "x"));
    assert_eq!(got.x_cache(), "REVALIDATED");
}

// §5.2.1.7: only-if-cached with nothing stored is a 504; with a stored response, a hit.
#[tokio::test]
async fn only_if_cached_answers_from_storage_or_504() {
    let h = Harness::new();
    let oic = [("cache-control", "only-if-cached")];
    let none = h.get("/a", &oic, &ok("max-age=60", "x")).await;
    assert_eq!(none.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(!none.asked);
    h.get("/a", &[], &ok("max-age=60", "x")).await;
    let hit = h.get("/a", &oic, &ok("", "")).await;
    assert_eq!(
        (hit.status, hit.body(), hit.asked),
        (StatusCode::OK, "x", false)
    );
}

// §5.2.2.2, §5.2.1.7: a stale must-revalidate response is never reused unvalidated; a
// cache that cannot go upstream (only-if-cached) answers 504 instead.
#[tokio::test]
async fn only_if_cached_never_serves_a_stale_must_revalidate_response() {
    let h = Harness::new();
    h.get("/a", &[], &ok("max-age=10, must-revalidate", "x"))
        .await;
    h.advance(20);
    let got = h
        .get("/a", &[("cache-control", "only-if-cached")], &ok("", ""))
        .await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
}
