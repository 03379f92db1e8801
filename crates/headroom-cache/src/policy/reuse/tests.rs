use super::*;
use crate::policy::testing::*;

const NOW: u64 = 1000;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// --- age (§4.2.3) -----------------------------------------------------------------

// RFC 9111 §4.2.3: corrected age = Age + response delay, when larger than the apparent age.
#[test]
fn initial_age_is_the_age_header_plus_the_response_delay() {
    let resp = headers(&[("age", "30"), ("date", &date(NOW))]);
    assert_eq!(initial_age(&resp, t(NOW), t(NOW + 2)), secs(32));
}

// RFC 9111 §4.2.3: a Date behind our clock (skew, or a slow path) gives an apparent age.
#[test]
fn initial_age_takes_the_apparent_age_when_date_is_older() {
    let resp = headers(&[("age", "5"), ("date", &date(NOW - 100))]);
    assert_eq!(initial_age(&resp, t(NOW - 1), t(NOW)), secs(100));
}

// RFC 9111 §4.2.3: a Date ahead of our clock gives no apparent age (never negative).
#[test]
fn a_date_in_the_future_gives_no_apparent_age() {
    let resp = headers(&[("date", &date(NOW + 3600))]);
    assert_eq!(initial_age(&resp, t(NOW), t(NOW)), Duration::ZERO);
}

// RFC 9111 §5.1: an invalid Age is ignored; a huge one saturates at 2^31 (§1.2.2).
#[test]
fn an_invalid_age_is_ignored_and_a_huge_one_saturates() {
    for bad in ["-5", "abc", "1.5", ""] {
        assert_eq!(
            initial_age(&headers(&[("age", bad)]), t(NOW), t(NOW)),
            Duration::ZERO,
            "{bad}"
        );
    }
    let huge = headers(&[("age", "999999999999999999999")]);
    assert_eq!(initial_age(&huge, t(NOW), t(NOW)), secs(1 << 31));
}

// A request time after the response time (a clock step) never panics.
#[test]
fn clocks_going_backwards_give_no_response_delay() {
    let resp = headers(&[("age", "7")]);
    assert_eq!(initial_age(&resp, t(NOW + 10), t(NOW)), secs(7));
    assert_eq!(current_age(secs(7), t(NOW), t(NOW - 5)), secs(7));
}

// RFC 9111 §4.2.3: current age adds the time resident in the cache.
#[test]
fn current_age_adds_the_resident_time() {
    assert_eq!(current_age(secs(7), t(NOW), t(NOW + 20)), secs(27));
}

// --- usable (§4.2, §4.2.4, §5.2.1) ------------------------------------------------

fn fresh_for(lifetime: u64) -> Freshness {
    Freshness {
        lifetime: secs(lifetime),
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        must_revalidate: false,
        no_cache: false,
    }
}

fn rd(f: impl FnOnce(&mut RequestDirectives)) -> RequestDirectives {
    let mut d = RequestDirectives::default();
    f(&mut d);
    d
}

// RFC 9111 §4.2: a response is fresh while its age is below its lifetime.
#[test]
fn a_fresh_response_is_used_until_its_lifetime_ends() {
    let any = RequestDirectives::default();
    assert_eq!(usable(&any, &fresh_for(60), secs(59)), Use::Fresh);
    assert_eq!(usable(&any, &fresh_for(60), secs(60)), Use::Revalidate);
}

// RFC 9111 §5.2.1.4: request no-cache revalidates even a fresh response.
#[test]
fn request_no_cache_revalidates_a_fresh_response() {
    assert_eq!(
        usable(&rd(|d| d.no_cache = true), &fresh_for(60), secs(1)),
        Use::Revalidate
    );
}

// RFC 9111 §5.2.1.1: a response older than the request's max-age is not used.
#[test]
fn a_response_older_than_the_request_max_age_is_revalidated() {
    let req = rd(|d| d.max_age = Some(10));
    assert_eq!(usable(&req, &fresh_for(60), secs(11)), Use::Revalidate);
    assert_eq!(usable(&req, &fresh_for(60), secs(10)), Use::Fresh);
    assert_eq!(
        usable(&rd(|d| d.max_age = Some(0)), &fresh_for(60), secs(1)),
        Use::Revalidate
    );
}

// RFC 9111 §5.2.1.3: less than min-fresh remaining is not fresh enough.
#[test]
fn less_than_min_fresh_remaining_is_revalidated() {
    let req = rd(|d| d.min_fresh = Some(20));
    assert_eq!(usable(&req, &fresh_for(60), secs(41)), Use::Revalidate);
    assert_eq!(usable(&req, &fresh_for(60), secs(40)), Use::Fresh);
}

// RFC 9111 §5.2.2.4: a response no-cache is revalidated on every use.
#[test]
fn a_no_cache_response_is_always_revalidated() {
    let f = Freshness {
        no_cache: true,
        stale_while_revalidate: secs(60),
        ..fresh_for(60)
    };
    assert_eq!(
        usable(&RequestDirectives::default(), &f, secs(1)),
        Use::Revalidate
    );
    assert_eq!(
        usable(&rd(|d| d.max_stale = Some(None)), &f, secs(100)),
        Use::Revalidate
    );
}

// RFC 9111 §5.2.1.2: max-stale lets a stale response through, within its bound.
#[test]
fn max_stale_allows_a_stale_response() {
    assert_eq!(
        usable(
            &rd(|d| d.max_stale = Some(None)),
            &fresh_for(60),
            secs(10_000)
        ),
        Use::StaleAllowed
    );
    let req = rd(|d| d.max_stale = Some(Some(30)));
    assert_eq!(usable(&req, &fresh_for(60), secs(90)), Use::StaleAllowed);
    assert_eq!(usable(&req, &fresh_for(60), secs(91)), Use::Revalidate);
}

// RFC 9111 §4.2.4, §5.2.2.2: must-revalidate forbids stale use, max-stale or not.
#[test]
fn a_must_revalidate_response_is_never_served_stale() {
    let f = Freshness {
        must_revalidate: true,
        stale_while_revalidate: secs(60),
        ..fresh_for(60)
    };
    assert_eq!(
        usable(&rd(|d| d.max_stale = Some(None)), &f, secs(61)),
        Use::Revalidate
    );
    assert_eq!(
        usable(&RequestDirectives::default(), &f, secs(61)),
        Use::Revalidate
    );
    assert_eq!(
        usable(&RequestDirectives::default(), &f, secs(59)),
        Use::Fresh
    );
}

// RFC 5861 §3: within stale-while-revalidate a stale response is served and refreshed.
#[test]
fn stale_while_revalidate_serves_stale_within_its_window() {
    let f = Freshness {
        stale_while_revalidate: secs(30),
        ..fresh_for(60)
    };
    let any = RequestDirectives::default();
    assert_eq!(usable(&any, &f, secs(75)), Use::StaleWhileRevalidate);
    assert_eq!(usable(&any, &f, secs(90)), Use::StaleWhileRevalidate);
    assert_eq!(usable(&any, &f, secs(91)), Use::Revalidate);
}

// RFC 9111 §5.2.1.1: a request with max-age does not want a stale response
// (unless it also sends max-stale), so stale-while-revalidate does not apply.
#[test]
fn a_request_max_age_refuses_stale_while_revalidate() {
    let f = Freshness {
        stale_while_revalidate: secs(30),
        ..fresh_for(60)
    };
    assert_eq!(
        usable(&rd(|d| d.max_age = Some(3600)), &f, secs(70)),
        Use::Revalidate
    );
    assert_eq!(
        usable(&rd(|d| d.min_fresh = Some(0)), &f, secs(70)),
        Use::Revalidate
    );
}

// --- stale_if_error (RFC 5861 §4) -------------------------------------------------

// RFC 5861 §4: on an error, a stale response may be served within stale-if-error.
#[test]
fn stale_if_error_serves_a_stale_response_within_its_allowance() {
    let f = Freshness {
        stale_if_error: secs(300),
        ..fresh_for(60)
    };
    let any = RequestDirectives::default();
    assert!(stale_if_error(&any, &f, secs(360)));
    assert!(!stale_if_error(&any, &f, secs(361)));
    assert!(!stale_if_error(&any, &fresh_for(60), secs(61)));
    assert!(stale_if_error(&any, &fresh_for(60), secs(30)));
}

// RFC 5861 §4: the request's stale-if-error extends the allowance for that request.
#[test]
fn a_request_stale_if_error_extends_the_allowance() {
    let req = rd(|d| d.stale_if_error = Some(1000));
    assert!(stale_if_error(&req, &fresh_for(60), secs(1000)));
    assert!(!stale_if_error(&req, &fresh_for(60), secs(1061)));
}

// RFC 9111 §4.2.4, §5.2.2.2: must-revalidate and no-cache forbid stale use on errors (504 instead).
#[test]
fn must_revalidate_or_no_cache_forbid_stale_if_error() {
    let f = Freshness {
        stale_if_error: secs(300),
        must_revalidate: true,
        ..fresh_for(60)
    };
    assert!(!stale_if_error(
        &rd(|d| d.stale_if_error = Some(300)),
        &f,
        secs(61)
    ));
    let f = Freshness {
        stale_if_error: secs(300),
        no_cache: true,
        ..fresh_for(60)
    };
    assert!(!stale_if_error(&RequestDirectives::default(), &f, secs(1)));
}

// RFC 9111 §5.2.1.4: a client that sent no-cache gets no stale response on an
// error unless it asked for one with stale-if-error.
#[test]
fn request_no_cache_refuses_stale_if_error_unless_it_asks_for_it() {
    let f = Freshness {
        stale_if_error: secs(300),
        ..fresh_for(60)
    };
    assert!(!stale_if_error(&rd(|d| d.no_cache = true), &f, secs(61)));
    let asks = rd(|d| {
        d.no_cache = true;
        d.stale_if_error = Some(10);
    });
    assert!(stale_if_error(&asks, &f, secs(61)));
}
