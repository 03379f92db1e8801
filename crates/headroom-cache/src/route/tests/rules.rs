//! What is stored and under which key: Vary, statuses, Authorization and cookies, bypass
//! and page rules.

use super::*;
use headroom_config::cache::CacheRuleConfig;

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

// An answer not stored is counted by why (the Cache-Status detail), each reason from the
// first time it is seen; a stored answer that came with a cookie is counted on its own.
#[tokio::test]
async fn answers_not_stored_are_counted_by_reason_and_stored_cookies_apart() {
    let cookie = origin(
        200,
        &[("cache-control", "max-age=60"), ("set-cookie", "id=1")],
        "x",
    );
    let h = Harness::new();
    h.get("/a", &[], &cookie).await;
    h.get("/b", &[], &ok("no-store", "x")).await;
    h.get("/c", &[], &ok("no-store", "x")).await;
    h.get("/d", &[], &ok("max-age=60", "x")).await;
    let m = h.metrics();
    let line = |reason: &str| {
        format!("headroom_cache_not_stored_total{{route=\"r\",reason=\"{reason}\"}}")
    };
    assert!(m.contains(&format!("{} 1", line("set-cookie"))), "{m}");
    assert!(m.contains(&format!("{} 2", line("no-store"))), "{m}");
    assert!(
        !m.contains(&line("private")),
        "a reason not seen has no series: {m}"
    );
    assert!(
        !m.contains("headroom_cache_stored_set_cookie_total{"),
        "{m}"
    );

    let allowed = Harness::with_policy(|p| p.allow_set_cookie = true);
    allowed.get("/a", &[], &cookie).await;
    allowed.get("/d", &[], &ok("max-age=60", "x")).await;
    let m = allowed.metrics();
    assert!(
        m.contains("headroom_cache_stored_set_cookie_total{route=\"r\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("headroom_cache_stored_total{route=\"r\"} 2"),
        "{m}"
    );
    assert!(!m.contains("headroom_cache_not_stored_total{"), "{m}");
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
