use super::*;
use crate::policy::testing::*;
use std::time::UNIX_EPOCH;

const NOW: u64 = 1000;

/// A GET without request headers, answered at NOW with `status` and `resp`.
fn store(status: u16, resp: &[(&str, &str)]) -> Result<Freshness, NotStorable> {
    store_with(&HeaderMap::new(), status, resp, &StoreOptions::default())
}

fn store_with(
    req: &HeaderMap,
    status: u16,
    resp: &[(&str, &str)],
    opts: &StoreOptions,
) -> Result<Freshness, NotStorable> {
    let status = StatusCode::from_u16(status).unwrap();
    storable(&Method::GET, req, status, &headers(resp), opts, t(NOW))
}

fn lifetime(status: u16, resp: &[(&str, &str)]) -> Duration {
    store(status, resp).unwrap().lifetime
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// --- storable: what is stored -------------------------------------------------

// RFC 9111 §3: only GET responses are stored; a HEAD is answered from a stored GET.
#[test]
fn only_get_responses_are_stored() {
    let resp = headers(&[("cache-control", "max-age=60")]);
    for m in [Method::HEAD, Method::POST, Method::PUT] {
        let r = storable(
            &m,
            &HeaderMap::new(),
            StatusCode::OK,
            &resp,
            &StoreOptions::default(),
            t(NOW),
        );
        assert_eq!(r, Err(NotStorable::Method), "{m}");
    }
}

// RFC 9111 §3: a cache that does not store partial content does not store 206.
#[test]
fn partial_content_is_not_stored() {
    assert_eq!(
        store(206, &[("cache-control", "max-age=60")]),
        Err(NotStorable::Partial)
    );
}

// RFC 9111 §3: the status must be final; a 304 is not a response to store.
#[test]
fn informational_and_not_modified_responses_are_not_stored() {
    assert_eq!(
        store(103, &[("cache-control", "max-age=60")]),
        Err(NotStorable::Status)
    );
    assert_eq!(
        store(304, &[("cache-control", "max-age=60")]),
        Err(NotStorable::Status)
    );
}

// RFC 9111 §5.2.1.5: request no-store forbids storing its response, page rules or not.
#[test]
fn request_no_store_prevents_storing() {
    let req = headers(&[("cache-control", "no-store")]);
    let opts = StoreOptions {
        ignore_origin: true,
        ..Default::default()
    };
    assert_eq!(
        store_with(&req, 200, &[("cache-control", "max-age=60")], &opts),
        Err(NotStorable::NoStore)
    );
}

// RFC 9111 §5.2.2.5: response no-store forbids storing, unless the page rule ignores the origin.
#[test]
fn response_no_store_prevents_storing_unless_the_origin_is_ignored() {
    let resp = [("cache-control", "no-store, max-age=60")];
    assert_eq!(store(200, &resp), Err(NotStorable::NoStore));
    let opts = StoreOptions {
        ignore_origin: true,
        ..Default::default()
    };
    assert_eq!(
        store_with(&HeaderMap::new(), 200, &resp, &opts).map(|f| f.lifetime),
        Ok(secs(60))
    );
}

// RFC 9111 §5.2.2.3: must-understand lets a cache that understands the status
// ignore no-store; for a status it does not understand, it must not store.
#[test]
fn must_understand_overrides_no_store_for_an_understood_status() {
    assert!(store(
        200,
        &[("cache-control", "no-store, must-understand, max-age=60")]
    )
    .is_ok());
    assert_eq!(
        store(
            299,
            &[("cache-control", "no-store, must-understand, max-age=60")]
        ),
        Err(NotStorable::Status)
    );
}

// RFC 9111 §5.2.2.7: a shared cache must not store a private response.
#[test]
fn a_private_response_is_not_stored_by_a_shared_cache() {
    assert_eq!(
        store(200, &[("cache-control", "private, max-age=60")]),
        Err(NotStorable::Private)
    );
    assert_eq!(
        store(200, &[("cache-control", "private=\"x-user\", max-age=60")]),
        Err(NotStorable::Private)
    );
    let opts = StoreOptions {
        ignore_origin: true,
        ..Default::default()
    };
    assert!(store_with(
        &HeaderMap::new(),
        200,
        &[("cache-control", "private, max-age=60")],
        &opts
    )
    .is_ok());
}

// RFC 9111 §4.1: a Vary of * never matches a later request, so it is not stored.
#[test]
fn a_vary_star_response_is_never_stored() {
    let opts = StoreOptions {
        ignore_origin: true,
        ..Default::default()
    };
    let resp = [("cache-control", "max-age=60"), ("vary", "Accept, *")];
    assert_eq!(
        store_with(&HeaderMap::new(), 200, &resp, &opts),
        Err(NotStorable::VaryStar)
    );
    assert!(store(200, &[("cache-control", "max-age=60"), ("vary", "accept")]).is_ok());
}

// RFC 9111 §3.5: a response to a request with Authorization is stored only with
// public, s-maxage or must-revalidate (or when the page rule allows it).
#[test]
fn a_response_to_an_authorized_request_needs_explicit_permission() {
    let req = headers(&[("authorization", "Bearer x")]);
    let opts = StoreOptions::default();
    assert_eq!(
        store_with(&req, 200, &[("cache-control", "max-age=60")], &opts),
        Err(NotStorable::Authorization)
    );
    for cc in [
        "public, max-age=60",
        "s-maxage=60",
        "max-age=60, must-revalidate",
    ] {
        assert!(
            store_with(&req, 200, &[("cache-control", cc)], &opts).is_ok(),
            "{cc}"
        );
    }
    let allow = StoreOptions {
        allow_authorization: true,
        ..Default::default()
    };
    assert!(store_with(&req, 200, &[("cache-control", "max-age=60")], &allow).is_ok());
}

// A response setting a cookie is not stored by default (it would hand one
// client's cookie to the next); a page rule may allow it.
#[test]
fn a_response_with_set_cookie_is_not_stored_unless_allowed() {
    let resp = [("cache-control", "max-age=60"), ("set-cookie", "id=1")];
    assert_eq!(store(200, &resp), Err(NotStorable::SetCookie));
    let opts = StoreOptions {
        allow_set_cookie: true,
        ..Default::default()
    };
    assert!(store_with(&HeaderMap::new(), 200, &resp, &opts).is_ok());
}

// RFC 9111 §3, §4.2.2: without explicit freshness only heuristically cacheable
// statuses (or public responses) are stored; with it, any understood status.
#[test]
fn a_status_that_is_not_heuristically_cacheable_needs_explicit_freshness() {
    let lm = date(0);
    let validators = [("last-modified", lm.as_str())];
    assert_eq!(store(302, &validators), Err(NotStorable::Status));
    assert_eq!(store(500, &validators), Err(NotStorable::Status));
    assert_eq!(lifetime(302, &[("cache-control", "max-age=60")]), secs(60));
    assert!(store(
        500,
        &[("cache-control", "public"), ("last-modified", lm.as_str())]
    )
    .is_ok());
    for s in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
        assert!(store(s, &validators).is_ok(), "{s}");
    }
}

// Page rule: status_ttls store a status the origin gives no freshness for,
// and give it that lifetime; explicit freshness still wins.
#[test]
fn status_ttls_give_a_lifetime_when_the_origin_gives_none() {
    let ttls = [(404, secs(30)), (503, secs(5))];
    let opts = StoreOptions {
        status_ttls: &ttls,
        ..Default::default()
    };
    let none = HeaderMap::new();
    assert_eq!(
        store_with(&none, 404, &[], &opts).map(|f| f.lifetime),
        Ok(secs(30))
    );
    assert_eq!(
        store_with(&none, 503, &[], &opts).map(|f| f.lifetime),
        Ok(secs(5))
    );
    assert_eq!(store_with(&none, 500, &[], &opts), Err(NotStorable::Status));
    let explicit = [("cache-control", "max-age=7")];
    assert_eq!(
        store_with(&none, 404, &explicit, &opts).map(|f| f.lifetime),
        Ok(secs(7))
    );
}

// Page rule: ttl_override replaces the origin's lifetime, but does not make an
// otherwise unstorable status storable.
#[test]
fn ttl_override_replaces_the_origins_lifetime() {
    let opts = StoreOptions {
        ttl_override: Some(secs(600)),
        ..Default::default()
    };
    let none = HeaderMap::new();
    assert_eq!(
        store_with(&none, 200, &[("cache-control", "max-age=5")], &opts).map(|f| f.lifetime),
        Ok(secs(600))
    );
    assert_eq!(
        store_with(&none, 200, &[], &opts).map(|f| f.lifetime),
        Ok(secs(600))
    );
    assert_eq!(store_with(&none, 500, &[], &opts), Err(NotStorable::Status));
}

// --- storable: freshness lifetime (§4.2.1) --------------------------------------

// RFC 9111 §5.2.2.10: s-maxage overrides max-age (and Expires) in a shared cache.
#[test]
fn s_maxage_overrides_max_age_for_a_shared_cache() {
    let exp = date(NOW + 5);
    assert_eq!(
        lifetime(
            200,
            &[
                ("cache-control", "max-age=60, s-maxage=300"),
                ("expires", &exp)
            ]
        ),
        secs(300)
    );
}

// RFC 9111 §5.3: with max-age, Expires is ignored.
#[test]
fn max_age_overrides_expires() {
    let (d, exp) = (date(NOW), date(NOW + 5));
    assert_eq!(
        lifetime(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("date", &d),
                ("expires", &exp)
            ]
        ),
        secs(60)
    );
}

// RFC 9111 §4.2.1: otherwise the lifetime is Expires − Date.
#[test]
fn expires_minus_date_is_the_lifetime() {
    // Date is the origin's clock, 100 s behind ours: the difference still counts.
    let (d, exp) = (date(NOW - 100), date(NOW - 100 + 45));
    assert_eq!(lifetime(200, &[("date", &d), ("expires", &exp)]), secs(45));
    // An Expires before Date is already expired.
    let (d, exp) = (date(NOW), date(NOW - 10));
    assert_eq!(
        lifetime(200, &[("date", &d), ("expires", &exp), ("etag", "\"a\"")]),
        Duration::ZERO
    );
}

// RFC 9111 §4.2.1: without Date, the time the response was received stands in.
#[test]
fn expires_without_date_counts_from_now() {
    let exp = date(NOW + 30);
    assert_eq!(lifetime(200, &[("expires", &exp)]), secs(30));
    assert_eq!(
        lifetime(200, &[("expires", &exp), ("date", "garbage")]),
        secs(30)
    );
}

// RFC 9111 §5.3: an invalid Expires (such as "0") is already expired, and is
// explicit: no heuristic applies.
#[test]
fn an_invalid_expires_is_already_expired() {
    let lm = date(0);
    let resp = [("expires", "0"), ("last-modified", lm.as_str())];
    assert_eq!(lifetime(200, &resp), Duration::ZERO);
    assert_eq!(
        store(200, &[("expires", "0")]),
        Err(NotStorable::NoFreshness)
    );
}

// RFC 9111 §4.2.1: with several Expires lines, the first is used.
#[test]
fn the_first_expires_line_is_used() {
    let (a, b) = (date(NOW + 10), date(NOW + 1000));
    assert_eq!(lifetime(200, &[("expires", &a), ("expires", &b)]), secs(10));
}

// RFC 9111 §4.2.2: heuristic freshness is a fraction of Date − Last-Modified, capped.
#[test]
fn heuristic_freshness_is_a_fraction_of_the_age_since_last_modified() {
    let (d, lm) = (date(NOW), date(NOW - 1000));
    assert_eq!(
        lifetime(200, &[("date", &d), ("last-modified", &lm)]),
        secs(100)
    );
    let old = httpdate::fmt_http_date(UNIX_EPOCH + secs(1_000_000_000));
    assert_eq!(
        lifetime(200, &[("date", &d), ("last-modified", &old)]),
        secs(24 * 3600)
    );
    let opts = StoreOptions {
        heuristic_fraction: 0.5,
        heuristic_cap: secs(120),
        ..Default::default()
    };
    let got = store_with(
        &HeaderMap::new(),
        200,
        &[("date", &d), ("last-modified", &lm)],
        &opts,
    );
    assert_eq!(got.map(|f| f.lifetime), Ok(secs(120)));
}

// RFC 9111 §4.2.2: no Last-Modified (or one in the future) gives no heuristic freshness.
#[test]
fn heuristic_freshness_is_zero_without_a_past_last_modified() {
    assert_eq!(lifetime(200, &[("etag", "\"a\"")]), Duration::ZERO);
    let future = date(NOW + 500);
    assert_eq!(lifetime(200, &[("last-modified", &future)]), Duration::ZERO);
}

// Configuration errors in the heuristic fraction never panic.
#[test]
fn an_odd_heuristic_fraction_never_panics() {
    let lm = date(NOW - 1000);
    for fraction in [f64::NAN, -1.0, f64::INFINITY, 1e300] {
        let opts = StoreOptions {
            heuristic_fraction: fraction,
            ..Default::default()
        };
        let got = store_with(&HeaderMap::new(), 200, &[("last-modified", &lm)], &opts)
            .unwrap()
            .lifetime;
        assert!(got <= opts.heuristic_cap, "{fraction}");
    }
}

// RFC 9111 §5.2.2.4: no-cache is stored, but every use is revalidated.
#[test]
fn a_no_cache_response_is_stored_and_revalidated_on_each_use() {
    let f = store(
        200,
        &[("cache-control", "no-cache, max-age=60"), ("etag", "\"a\"")],
    )
    .unwrap();
    assert!(f.no_cache);
    let opts = StoreOptions {
        ignore_origin: true,
        ..Default::default()
    };
    let f = store_with(
        &HeaderMap::new(),
        200,
        &[("cache-control", "no-cache, max-age=60")],
        &opts,
    )
    .unwrap();
    assert!(!f.no_cache);
}

// RFC 9111 §5.2.2.2, §5.2.2.8, §5.2.2.10: must-revalidate, proxy-revalidate
// and s-maxage each forbid serving it stale.
#[test]
fn must_revalidate_proxy_revalidate_and_s_maxage_forbid_stale_use() {
    for cc in [
        "max-age=1, must-revalidate",
        "max-age=1, proxy-revalidate",
        "s-maxage=1",
    ] {
        assert!(
            store(200, &[("cache-control", cc)])
                .unwrap()
                .must_revalidate,
            "{cc}"
        );
    }
    assert!(
        !store(200, &[("cache-control", "max-age=1")])
            .unwrap()
            .must_revalidate
    );
    let opts = StoreOptions {
        ignore_origin: true,
        ..Default::default()
    };
    let f = store_with(
        &HeaderMap::new(),
        200,
        &[("cache-control", "s-maxage=1, must-revalidate")],
        &opts,
    );
    assert!(!f.unwrap().must_revalidate);
}

// RFC 5861: stale allowances come from the origin, else the page rule's defaults.
#[test]
fn stale_allowances_come_from_the_origin_or_the_defaults() {
    let opts = StoreOptions {
        default_stale_while_revalidate: secs(10),
        default_stale_if_error: secs(20),
        ..Default::default()
    };
    let none = HeaderMap::new();
    let f = store_with(&none, 200, &[("cache-control", "max-age=1")], &opts).unwrap();
    assert_eq!(
        (f.stale_while_revalidate, f.stale_if_error),
        (secs(10), secs(20))
    );
    let cc = [(
        "cache-control",
        "max-age=1, stale-while-revalidate=3, stale-if-error=4",
    )];
    let f = store_with(&none, 200, &cc, &opts).unwrap();
    assert_eq!(
        (f.stale_while_revalidate, f.stale_if_error),
        (secs(3), secs(4))
    );
}

// A response stale at once, with no validator and no stale use allowed, can
// never answer a request: it is not stored.
#[test]
fn a_response_that_can_never_be_reused_is_not_stored() {
    assert_eq!(
        store(200, &[("cache-control", "max-age=0")]),
        Err(NotStorable::NoFreshness)
    );
    assert_eq!(store(200, &[]), Err(NotStorable::NoFreshness));
    assert_eq!(
        store(200, &[("cache-control", "no-cache, max-age=60")]),
        Err(NotStorable::NoFreshness)
    );
    assert!(store(200, &[("cache-control", "max-age=0"), ("etag", "\"a\"")]).is_ok());
    assert!(store(200, &[("cache-control", "max-age=0, stale-if-error=60")]).is_ok());
    assert_eq!(
        store(200, &[("cache-control", "s-maxage=0, stale-if-error=60")]),
        Err(NotStorable::NoFreshness)
    );
}

#[test]
fn not_storable_reasons_have_stable_names() {
    let all = [
        (NotStorable::Method, "method"),
        (NotStorable::Status, "status"),
        (NotStorable::NoStore, "no-store"),
        (NotStorable::Private, "private"),
        (NotStorable::Authorization, "authorization"),
        (NotStorable::SetCookie, "set-cookie"),
        (NotStorable::VaryStar, "vary-star"),
        (NotStorable::NoFreshness, "no-freshness"),
        (NotStorable::Partial, "partial"),
    ];
    for (reason, name) in all {
        assert_eq!(reason.as_str(), name);
        assert_eq!(reason.to_string(), name);
    }
}
