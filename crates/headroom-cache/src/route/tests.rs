//! Route-level cache tests: each caching behaviour, named after it, with the RFC section it
//! follows (RFC 9111 unless said), driven through `lookup` → `Fill` → `Store` as the edge
//! drives them. Time is a manual [`Clock`]: freshness and staleness windows are crossed by
//! advancing it, never by waiting; coalescing waits run on paused tokio time.

use super::*;
use crate::{Cache, Clock, Entry, Purge, PurgeKind};
use headroom_config::cache::{CacheConfig, CacheRuleConfig};
use std::time::UNIX_EPOCH;
use tokio::time::Instant;

/// 2023-11-14T22:13:20Z: a whole second, so `Date` (second precision) is exact.
const START: u64 = 1_700_000_000;
const HOST: &str = "example.com";

/// `[cache]` with the defaults documented in headroom-config's model.
fn store_config() -> CacheConfig {
    CacheConfig {
        memory: 256 << 20,
        max_object: 8 << 20,
        max_key: 8 << 10,
        max_variants: 16,
        coalesce_wait: Duration::from_secs(10),
        heuristic_cap: Duration::from_secs(86_400),
        x_cache: true,
        redis: None,
    }
}

fn route_config() -> RouteCacheConfig {
    RouteCacheConfig {
        policy: CachePolicy::default(),
        rules: vec![],
        purge_method: false,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// An upstream response: `Date` is added (the clock's now) when not given.
#[derive(Clone)]
struct Origin {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
}

fn origin(status: u16, headers: &[(&str, &str)], body: &str) -> Origin {
    Origin {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

/// 200 with this `Cache-Control`.
fn ok(cache_control: &str, body: &str) -> Origin {
    origin(200, &[("cache-control", cache_control)], body)
}

fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// What the client got.
struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// The upstream was asked (a miss, a revalidation, a bypass).
    asked: bool,
    /// The request headers the upstream got (after `Fill::prepare`).
    sent: HeaderMap,
    /// A stale-while-revalidate hit's background refresh.
    refresh: Option<Fill>,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |v| v.to_str().unwrap_or(""))
    }
    fn x_cache(&self) -> &str {
        self.header("x-cache")
    }
    fn cache_status(&self) -> &str {
        self.header("cache-status")
    }
    fn age(&self) -> u64 {
        self.header("age").parse().expect("an Age header")
    }
    fn body(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

struct Harness {
    clock: Clock,
    cache: Cache,
    route: RouteCache,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(store_config(), route_config())
    }

    fn with(cfg: CacheConfig, rc: RouteCacheConfig) -> Harness {
        let clock = Clock::manual(UNIX_EPOCH + secs(START));
        let cache = Cache::with_clock(&cfg, &Arc::new(Registry::new()), clock.clone());
        let route = cache.route("r", &rc);
        Harness {
            clock,
            cache,
            route,
        }
    }

    fn with_policy(edit: impl FnOnce(&mut CachePolicy)) -> Harness {
        let mut rc = route_config();
        edit(&mut rc.policy);
        Harness::with(store_config(), rc)
    }

    fn advance(&self, s: u64) {
        self.clock.advance(secs(s));
    }

    /// An HTTP-date `s` seconds before now.
    fn ago(&self, s: u64) -> String {
        httpdate::fmt_http_date(self.clock.now() - secs(s))
    }

    async fn lookup(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Lookup {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let headers = header_map(headers);
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        self.route
            .lookup(&CacheRequest {
                method: &method,
                host: HOST,
                path,
                query,
                headers: &headers,
                coding: Coding::Identity,
                compresses: false,
            })
            .await
    }

    async fn get(&self, target: &str, headers: &[(&str, &str)], up: &Origin) -> Got {
        self.send("GET", target, headers, up).await
    }

    /// One request through the cache: a `Forward` is answered by `up` and stored as the
    /// edge would store it.
    async fn send(&self, method: &str, target: &str, headers: &[(&str, &str)], up: &Origin) -> Got {
        match self.lookup(method, target, headers).await {
            Lookup::Hit(hit) => from_hit(hit, false, HeaderMap::new()),
            Lookup::HitAndRefresh(hit, fill) => {
                let mut got = from_hit(hit, false, HeaderMap::new());
                got.refresh = Some(fill);
                got
            }
            Lookup::Forward(fill) => self.forward(fill, up),
            Lookup::Bypass(why) => {
                let mut got = self.upstream(up, header_map(headers));
                let mut cs = CacheStatus::new(Outcome::Bypass);
                cs.detail = Some(why);
                mark(&mut got.headers, &cs, true);
                got
            }
            Lookup::GatewayTimeout => Got {
                status: StatusCode::GATEWAY_TIMEOUT,
                headers: HeaderMap::new(),
                body: Bytes::new(),
                asked: false,
                sent: HeaderMap::new(),
                refresh: None,
            },
            Lookup::Pass | Lookup::Invalidate(_) | Lookup::Purge(_) => {
                panic!("not a GET/HEAD lookup")
            }
        }
    }

    fn upstream(&self, up: &Origin, sent: HeaderMap) -> Got {
        let mut headers = HeaderMap::new();
        for (k, v) in &up.headers {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        if !headers.contains_key(header::DATE) {
            let date = httpdate::fmt_http_date(self.clock.now());
            headers.insert(header::DATE, HeaderValue::from_str(&date).unwrap());
        }
        Got {
            status: StatusCode::from_u16(up.status).unwrap(),
            headers,
            body: up.body.clone(),
            asked: true,
            sent,
            refresh: None,
        }
    }

    /// The upstream answers `fill`'s request with `up`; its body streams through `Store`
    /// in 4-byte chunks.
    fn forward(&self, fill: Fill, up: &Origin) -> Got {
        let mut sent = fill.request_headers().clone();
        fill.prepare(&mut sent);
        let mut got = self.upstream(up, sent);
        match fill.response(got.status, &mut got.headers) {
            FillResponse::Store(mut store) => {
                for chunk in got.body.chunks(4) {
                    store.data(chunk);
                }
                store.end(true);
                got
            }
            FillResponse::Pass => got,
            FillResponse::Replace(hit) => from_hit(hit, true, got.sent),
        }
    }

    /// The entries stored for `host/path`, all variants.
    fn stored(&self, url: &str) -> Vec<Arc<Entry>> {
        self.cache
            .shared
            .memory
            .map
            .iter()
            .flat_map(|(_, o)| o.variants.to_vec())
            .filter(|e| &*e.url == url)
            .collect()
    }
}

fn from_hit(hit: Hit, asked: bool, sent: HeaderMap) -> Got {
    let mut headers = hit.headers;
    mark(&mut headers, &hit.cache_status, true);
    Got {
        status: hit.status,
        headers,
        body: hit.body,
        asked,
        sent,
        refresh: None,
    }
}

fn forwarded(l: Lookup) -> Fill {
    match l {
        Lookup::Forward(f) => f,
        other => panic!("expected Forward, got {}", kind(&other)),
    }
}

fn kind(l: &Lookup) -> &'static str {
    match l {
        Lookup::Pass => "Pass",
        Lookup::Bypass(_) => "Bypass",
        Lookup::Hit(_) => "Hit",
        Lookup::HitAndRefresh(..) => "HitAndRefresh",
        Lookup::Forward(_) => "Forward",
        Lookup::GatewayTimeout => "GatewayTimeout",
        Lookup::Invalidate(_) => "Invalidate",
        Lookup::Purge(_) => "Purge",
    }
}

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

// ---- Vary (§4.1) -----------------------------------------------------------------------------

fn by_language(body: &str) -> Origin {
    origin(
        200,
        &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
        body,
    )
}

// §4.1: a stored response is selected by the request's values of its Vary fields.
#[tokio::test]
async fn vary_selects_the_variant_by_the_request_header() {
    let h = Harness::new();
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    h.get("/a", &en, &by_language("en")).await;
    let got = h.get("/a", &fr, &by_language("fr")).await;
    assert!(got.asked, "another variant");
    assert_eq!(h.get("/a", &en, &ok("", "")).await.body(), "en");
    let hit = h.get("/a", &fr, &ok("", "")).await;
    assert_eq!((hit.asked, hit.body()), (false, "fr"));
    assert!(
        h.get("/a", &[], &by_language("none")).await.asked,
        "no value is a value"
    );
}

// §4.1: Vary: * never matches: not stored.
#[tokio::test]
async fn vary_star_is_not_stored() {
    let h = Harness::new();
    let up = origin(200, &[("cache-control", "max-age=60"), ("vary", "*")], "x");
    let got = h.get("/a", &[], &up).await;
    assert!(
        got.cache_status().contains("detail=vary-star"),
        "{}",
        got.cache_status()
    );
    assert!(h.get("/a", &[], &up).await.asked);
}

// Past max_variants the oldest variant goes.
#[tokio::test]
async fn more_variants_than_max_variants_keeps_the_newest() {
    let mut cfg = store_config();
    cfg.max_variants = 2;
    let h = Harness::with(cfg, route_config());
    for lang in ["en", "fr", "de"] {
        h.get("/a", &[("accept-language", lang)], &by_language(lang))
            .await;
    }
    for lang in ["fr", "de"] {
        let got = h.get("/a", &[("accept-language", lang)], &ok("", "")).await;
        assert_eq!((got.asked, got.body()), (false, lang));
    }
    let en = h
        .get("/a", &[("accept-language", "en")], &by_language("en"))
        .await;
    assert!(en.asked, "the oldest variant was dropped");
}

// ---- Statuses ----------------------------------------------------------------------------

// A status listed in `statuses` is stored for its ttl when the origin gives no freshness.
#[tokio::test]
async fn a_status_in_statuses_is_stored_for_its_ttl() {
    let h = Harness::with_policy(|p| p.statuses = vec![(404, secs(30))]);
    let up = origin(404, &[], "nope");
    h.get("/a", &[], &up).await;
    h.advance(29);
    let hit = h.get("/a", &[], &up).await;
    assert_eq!((hit.asked, hit.status), (false, StatusCode::NOT_FOUND));
    h.advance(2);
    assert!(h.get("/a", &[], &up).await.asked);
    let plain = Harness::new();
    plain.get("/a", &[], &up).await;
    assert!(plain.get("/a", &[], &up).await.asked, "not stored unlisted");
}

// §3, §4.2.2: a 500 without explicit freshness is never stored, not even under a rule's ttl.
#[tokio::test]
async fn a_500_is_never_stored_without_explicit_freshness() {
    for h in [
        Harness::new(),
        Harness::with_policy(|p| p.ttl = Some(secs(60))),
    ] {
        let up = origin(500, &[], "boom");
        let got = h.get("/a", &[], &up).await;
        assert!(
            got.cache_status().contains("detail=status"),
            "{}",
            got.cache_status()
        );
        assert!(h.get("/a", &[], &up).await.asked);
    }
}

// ---- Authorization and cookies (§3.5) ---------------------------------------------------

// §3.5: a response to a request with Authorization is stored only with public, s-maxage
// or must-revalidate.
#[tokio::test]
async fn an_authorized_request_is_not_stored_unless_public_or_s_maxage() {
    let auth = [("authorization", "Bearer t")];
    let cases = [
        ("max-age=60", false),
        ("public, max-age=60", true),
        ("s-maxage=60", true),
    ];
    for (cc, stored) in cases {
        let h = Harness::new();
        let got = h.get("/a", &auth, &ok(cc, "x")).await;
        assert_eq!(
            !h.get("/a", &auth, &ok(cc, "x")).await.asked,
            stored,
            "{cc}"
        );
        if !stored {
            assert!(got.cache_status().contains("detail=authorization"));
        }
    }
}

// allow_authorization stores them anyway.
#[tokio::test]
async fn allow_authorization_stores_responses_to_authorized_requests() {
    let h = Harness::with_policy(|p| p.allow_authorization = true);
    let auth = [("authorization", "Bearer t")];
    h.get("/a", &auth, &ok("max-age=60", "x")).await;
    assert!(!h.get("/a", &auth, &ok("", "")).await.asked);
}

// A response setting a cookie is not stored (one client's cookie would go to all) unless
// allow_set_cookie.
#[tokio::test]
async fn set_cookie_response_is_not_stored_unless_allowed() {
    let up = origin(
        200,
        &[("cache-control", "max-age=60"), ("set-cookie", "id=1")],
        "x",
    );
    let h = Harness::new();
    let got = h.get("/a", &[], &up).await;
    assert!(got.cache_status().contains("detail=set-cookie"));
    assert!(h.get("/a", &[], &up).await.asked);
    let allowed = Harness::with_policy(|p| p.allow_set_cookie = true);
    allowed.get("/a", &[], &up).await;
    assert!(!allowed.get("/a", &[], &up).await.asked);
}

// ---- Bypass and page rules -----------------------------------------------------------------

// A bypass cookie or header keeps the request away from the cache.
#[tokio::test]
async fn bypass_cookie_and_header_skip_the_cache() {
    let h = Harness::with_policy(|p| {
        p.bypass_cookies = vec!["session".into()];
        p.bypass_headers = vec!["x-preview".into()];
    });
    h.get("/a", &[], &ok("max-age=60", "x")).await;
    let l = h
        .lookup("GET", "/a", &[("cookie", "a=1; session=abc")])
        .await;
    assert!(matches!(l, Lookup::Bypass("cookie")), "{}", kind(&l));
    let l = h.lookup("GET", "/a", &[("x-preview", "1")]).await;
    assert!(matches!(l, Lookup::Bypass("header")), "{}", kind(&l));
    let l = h.lookup("GET", "/a", &[("cookie", "a=1")]).await;
    assert_eq!(kind(&l), "Hit", "another cookie does not bypass");
}

fn with_rule(glob: &str, bypass: bool, edit: impl FnOnce(&mut CachePolicy)) -> Harness {
    let mut rc = route_config();
    let mut policy = CachePolicy::default();
    edit(&mut policy);
    rc.rules.push(CacheRuleConfig {
        glob: glob.into(),
        bypass,
        policy,
    });
    Harness::with(store_config(), rc)
}

// A bypass page rule keeps its paths away from the cache.
#[tokio::test]
async fn a_bypass_rule_skips_the_cache_for_its_paths() {
    let h = with_rule("/admin/**", true, |_| {});
    let l = h.lookup("GET", "/admin/users", &[]).await;
    assert!(matches!(l, Lookup::Bypass("rule")), "{}", kind(&l));
    assert_eq!(kind(&h.lookup("GET", "/a", &[]).await), "Forward");
}

// A rule's ttl replaces the origin's freshness lifetime, on its paths only.
#[tokio::test]
async fn a_rules_ttl_overrides_origin_freshness() {
    let h = with_rule("/static/**", false, |p| p.ttl = Some(secs(3_600)));
    h.get("/static/app.js", &[], &ok("max-age=10", "js")).await;
    h.get("/a", &[], &ok("max-age=10", "a")).await;
    h.advance(100);
    assert!(!h.get("/static/app.js", &[], &ok("", "")).await.asked);
    assert!(h.get("/a", &[], &ok("max-age=10", "a")).await.asked);
    h.advance(3_501);
    assert!(h.get("/static/app.js", &[], &ok("", "")).await.asked);
}

// ignore_origin stores a no-store response (with the rule's ttl).
#[tokio::test]
async fn ignore_origin_stores_a_no_store_response() {
    let up = ok("no-store, private", "x");
    let obeying = Harness::with_policy(|p| p.ttl = Some(secs(60)));
    obeying.get("/a", &[], &up).await;
    assert!(obeying.get("/a", &[], &up).await.asked);
    let h = Harness::with_policy(|p| {
        p.ttl = Some(secs(60));
        p.ignore_origin = true;
    });
    h.get("/a", &[], &up).await;
    assert!(!h.get("/a", &[], &up).await.asked);
}

// A key longer than max_key bypasses the cache.
#[tokio::test]
async fn a_key_longer_than_max_key_bypasses() {
    let mut cfg = store_config();
    cfg.max_key = 32;
    let h = Harness::with(cfg, route_config());
    let long = format!("/{}", "x".repeat(40));
    let l = h.lookup("GET", &long, &[]).await;
    assert!(matches!(l, Lookup::Bypass("key-too-long")), "{}", kind(&l));
}

// ---- HEAD, ranges, conditionals -------------------------------------------------------------

// §4 (RFC 9110 §9.3.2): HEAD is answered from the stored GET, without its body.
#[tokio::test]
async fn head_is_answered_from_a_stored_get_with_an_empty_body() {
    let h = Harness::new();
    h.get("/a", &[], &ok("max-age=60", "0123456789")).await;
    let got = h.send("HEAD", "/a", &[], &ok("", "")).await;
    assert!(!got.asked);
    assert_eq!((got.status, got.body()), (StatusCode::OK, ""));
    assert_eq!(got.header("content-length"), "10");
}

// A HEAD miss is not stored: it has no body to answer a GET with.
#[tokio::test]
async fn a_head_miss_is_not_stored() {
    let h = Harness::new();
    let got = h.send("HEAD", "/a", &[], &ok("max-age=60", "")).await;
    assert!(
        got.cache_status().contains("detail=head"),
        "{}",
        got.cache_status()
    );
    assert!(h.get("/a", &[], &ok("max-age=60", "x")).await.asked);
}

// RFC 9110 §14: one range of a stored response is answered 206 with that slice.
#[tokio::test]
async fn a_single_range_is_answered_206_from_storage() {
    let h = Harness::new();
    h.get("/a", &[], &ok("max-age=60", "0123456789")).await;
    let got = h.get("/a", &[("range", "bytes=2-5")], &ok("", "")).await;
    assert!(!got.asked);
    assert_eq!(
        (got.status, got.body()),
        (StatusCode::PARTIAL_CONTENT, "2345")
    );
    assert_eq!(got.header("content-range"), "bytes 2-5/10");
    assert_eq!(got.header("content-length"), "4");
}

// RFC 9110 §15.5.17: a range starting past the end is 416.
#[tokio::test]
async fn a_range_past_the_end_is_416() {
    let h = Harness::new();
    h.get("/a", &[], &ok("max-age=60", "0123456789")).await;
    let got = h.get("/a", &[("range", "bytes=20-")], &ok("", "")).await;
    assert_eq!(
        (got.status, got.body()),
        (StatusCode::RANGE_NOT_SATISFIABLE, "")
    );
    assert_eq!(got.header("content-range"), "bytes */10");
}

// §4.3.2: the cache answers a client's If-None-Match itself: 304 when it matches.
#[tokio::test]
async fn if_none_match_on_the_stored_etag_is_answered_304() {
    let h = Harness::new();
    let up = origin(
        200,
        &[("cache-control", "max-age=60"), ("etag", "\"v1\"")],
        "x",
    );
    h.get("/a", &[], &up).await;
    h.advance(5);
    let got = h
        .get("/a", &[("if-none-match", "\"v1\"")], &ok("", ""))
        .await;
    assert!(!got.asked);
    assert_eq!((got.status, got.body()), (StatusCode::NOT_MODIFIED, ""));
    assert_eq!((got.header("etag"), got.age()), ("\"v1\"", 5));
    let other = h
        .get("/a", &[("if-none-match", "\"v0\"")], &ok("", ""))
        .await;
    assert_eq!((other.status, other.body()), (StatusCode::OK, "x"));
}

// ---- Limits ----------------------------------------------------------------------------------

// A body past max_object streams past the cache: not stored, and waiters released at once.
#[tokio::test(start_paused = true)]
async fn a_body_past_max_object_is_not_stored_and_waiters_are_released() {
    let mut cfg = store_config();
    cfg.max_object = 8;
    let h = Harness::with(cfg, route_config());
    let big = ok("max-age=60", "0123456789abcdef"); // no Content-Length: found out streaming
    let first = forwarded(h.lookup("GET", "/a", &[]).await);
    let start = Instant::now();
    let (second, got) = tokio::join!(h.lookup("GET", "/a", &[]), async {
        tokio::task::yield_now().await;
        h.forward(first, &big)
    });
    assert_eq!(got.body(), "0123456789abcdef", "the client gets it all");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(kind(&second), "Forward");
    assert!(h.stored("example.com/a").is_empty());
    let declared = origin(
        200,
        &[("cache-control", "max-age=60"), ("content-length", "16")],
        "0123456789abcdef",
    );
    let got = h.get("/b", &[], &declared).await;
    assert!(
        got.cache_status().contains("detail=too-big"),
        "{}",
        got.cache_status()
    );
}

// A body that did not come whole (Store::end(false)) is not stored; waiters are released.
#[tokio::test(start_paused = true)]
async fn an_incomplete_body_is_not_stored() {
    let h = Harness::new();
    let first = forwarded(h.lookup("GET", "/a", &[]).await);
    let start = Instant::now();
    let (second, _) = tokio::join!(h.lookup("GET", "/a", &[]), async {
        tokio::task::yield_now().await;
        let mut headers = header_map(&[("cache-control", "max-age=60")]);
        let FillResponse::Store(mut store) = first.response(StatusCode::OK, &mut headers) else {
            panic!("storable")
        };
        store.data(b"half");
        store.end(false);
    });
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(kind(&second), "Forward");
    assert!(h.stored("example.com/a").is_empty());
}

// ---- Invalidation (§4.4) -----------------------------------------------------------------

async fn invalidate(h: &Harness, status: u16, location: &str) {
    let Lookup::Invalidate(inv) = h.lookup("POST", "/a", &[]).await else {
        panic!("an unsafe method invalidates")
    };
    inv.response(
        &Method::POST,
        StatusCode::from_u16(status).unwrap(),
        &"/a".parse().unwrap(),
        &header_map(&[("location", location)]),
    );
}

// §4.4: a 2xx to an unsafe method invalidates the target URI and a same-origin Location.
#[tokio::test]
async fn unsafe_method_success_invalidates_the_url_and_same_origin_location() {
    let h = Harness::new();
    let up = ok("max-age=600", "x");
    for p in ["/a", "/b", "/c"] {
        h.get(p, &[], &up).await;
    }
    invalidate(&h, 201, "/b").await;
    assert!(h.get("/a", &[], &up).await.asked, "target invalidated");
    assert!(h.get("/b", &[], &up).await.asked, "Location invalidated");
    assert!(!h.get("/c", &[], &up).await.asked, "others kept");
    invalidate(&h, 200, "http://other.example/c").await;
    assert!(
        !h.get("/c", &[], &up).await.asked,
        "another origin's Location ignored"
    );
}

// §4.4: an error response invalidates nothing.
#[tokio::test]
async fn unsafe_method_server_error_invalidates_nothing() {
    let h = Harness::new();
    let up = ok("max-age=600", "x");
    h.get("/a", &[], &up).await;
    h.get("/b", &[], &up).await;
    invalidate(&h, 503, "/b").await;
    assert!(!h.get("/a", &[], &up).await.asked);
    assert!(!h.get("/b", &[], &up).await.asked);
}

// OPTIONS is not the cache's business; PURGE is only with purge_method.
#[tokio::test]
async fn options_pass_and_purge_needs_purge_method() {
    let h = Harness::new();
    assert_eq!(kind(&h.lookup("OPTIONS", "/a", &[]).await), "Pass");
    assert_eq!(kind(&h.lookup("PURGE", "/a", &[]).await), "Invalidate");
    let mut rc = route_config();
    rc.purge_method = true;
    let p = Harness::with(store_config(), rc);
    let Lookup::Purge(url) = p.lookup("PURGE", "/a?b=1", &[]).await else {
        panic!("PURGE with purge_method")
    };
    assert_eq!(url, "example.com/a?b=1");
}

// §4.3.3: a 304 that names another validator does not update the stored response, and a
// client that asked unconditionally never gets a 304.
#[tokio::test]
async fn an_unmatched_304_is_not_passed_to_an_unconditional_client() {
    let h = Harness::new();
    let first = origin(
        200,
        &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
        "body",
    );
    h.get("/a", &[], &first).await;
    h.advance(20);
    let got = h
        .get("/a", &[], &origin(304, &[("etag", "\"v2\"")], ""))
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body(), "body");
    assert!(
        got.cache_status().contains("unmatched-304"),
        "{}",
        got.cache_status()
    );
    assert!(
        h.stored("/a").is_empty(),
        "dropped, so the next request fetches it whole"
    );
}

// A route that stores responses with cookies gives the cookie to the client whose request
// filled the cache only: the stored copy has none.
#[tokio::test]
async fn a_stored_response_never_replays_its_set_cookie() {
    let h = Harness::with_policy(|p| p.allow_set_cookie = true);
    let up = origin(
        200,
        &[("cache-control", "max-age=60"), ("set-cookie", "id=1")],
        "x",
    );
    let first = h.get("/a", &[], &up).await;
    assert_eq!(first.header("set-cookie"), "id=1");
    let hit = h.get("/a", &[], &up).await;
    assert!(!hit.asked);
    assert_eq!(hit.header("set-cookie"), "");
}

// A Vary naming more headers than a variant key should hold is not stored (bounded
// variants per URL, however hostile the origin).
#[tokio::test]
async fn a_vary_on_too_many_headers_is_not_stored() {
    let h = Harness::new();
    let names: Vec<String> = (0..40).map(|i| format!("x-h{i}")).collect();
    let vary = names.join(", ");
    let up = origin(
        200,
        &[("cache-control", "max-age=60"), ("vary", &vary)],
        "x",
    );
    let got = h.get("/a", &[], &up).await;
    assert!(
        got.cache_status().contains("detail=vary-too-wide"),
        "{}",
        got.cache_status()
    );
    assert!(h.get("/a", &[], &up).await.asked);
}
