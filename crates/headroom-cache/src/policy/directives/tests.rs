use super::*;
use crate::policy::testing::*;

fn resp(cc: &str) -> ResponseDirectives {
    ResponseDirectives::parse(&headers(&[("cache-control", cc)]))
}

fn req(cc: &str) -> RequestDirectives {
    RequestDirectives::parse(&headers(&[("cache-control", cc)]))
}

// RFC 9111 §5.2.2: every response directive the cache acts on is read.
#[test]
fn response_directives_are_all_read() {
    let d = resp(
        "public, no-cache, no-store, private, max-age=60, s-maxage=120, must-revalidate, \
         proxy-revalidate, stale-while-revalidate=30, stale-if-error=300, immutable, no-transform",
    );
    let want = ResponseDirectives {
        no_store: true,
        no_cache: true,
        private: true,
        public: true,
        max_age: Some(60),
        s_maxage: Some(120),
        must_revalidate: true,
        proxy_revalidate: true,
        stale_while_revalidate: Some(30),
        stale_if_error: Some(300),
        immutable: true,
        no_transform: true,
    };
    assert_eq!(d, want);
}

// RFC 9111 §5.2: directive names are case-insensitive.
#[test]
fn directive_names_are_case_insensitive() {
    let d = resp("Max-Age=5, NO-STORE, S-MaxAge=7");
    assert_eq!(
        (d.max_age, d.s_maxage, d.no_store),
        (Some(5), Some(7), true)
    );
}

// RFC 9111 §5.2: Cache-Control is a list; several field lines combine.
#[test]
fn directives_are_read_from_every_field_line() {
    let h = headers(&[("cache-control", "public"), ("cache-control", "max-age=9")]);
    let d = ResponseDirectives::parse(&h);
    assert!(d.public);
    assert_eq!(d.max_age, Some(9));
}

// RFC 9111 §5.2: an argument may be a quoted-string (`max-age="60"`).
#[test]
fn a_quoted_value_is_accepted() {
    assert_eq!(resp("max-age=\"60\"").max_age, Some(60));
    assert_eq!(
        req("max-stale=\"10\", min-fresh=\"3\"").max_stale,
        Some(Some(10))
    );
}

// RFC 9111 §4.2.1: invalid freshness information (non-integer, negative) is
// treated as stale; the other directives still apply.
#[test]
fn an_invalid_response_max_age_means_stale_and_the_rest_still_applies() {
    for cc in [
        "max-age=abc, public",
        "max-age=-1, public",
        "max-age=, public",
        "max-age=1.5, public",
    ] {
        let d = resp(cc);
        assert_eq!(d.max_age, Some(0), "{cc}");
        assert!(d.public, "{cc}");
    }
    assert_eq!(resp("s-maxage=x").s_maxage, Some(0));
}

// RFC 9111 §5.2.1: an invalid request directive value is ignored on its own.
#[test]
fn an_invalid_request_value_is_ignored_alone() {
    let d = req("max-age=abc, min-fresh=-1, max-stale=x, no-cache");
    assert_eq!((d.max_age, d.min_fresh, d.max_stale), (None, None, None));
    assert!(d.no_cache);
}

// RFC 5861: an invalid stale-* value is ignored; defaults then apply.
#[test]
fn an_invalid_stale_value_is_ignored() {
    let d = resp("stale-while-revalidate=soon, stale-if-error=1e3, max-age=1");
    assert_eq!(
        (d.stale_while_revalidate, d.stale_if_error, d.max_age),
        (None, None, Some(1))
    );
}

// RFC 9111 §4.2.1: with several values of a directive, the first is used.
#[test]
fn a_duplicated_directive_uses_the_first() {
    assert_eq!(resp("max-age=10, max-age=20").max_age, Some(10));
    let h = headers(&[
        ("cache-control", "s-maxage=1"),
        ("cache-control", "s-maxage=99"),
    ]);
    assert_eq!(ResponseDirectives::parse(&h).s_maxage, Some(1));
    assert_eq!(req("max-age=3, max-age=0").max_age, Some(3));
    assert_eq!(
        resp("stale-if-error=5, stale-if-error=50").stale_if_error,
        Some(5)
    );
}

// RFC 9111 §1.2.2: a delta-seconds too large saturates at 2^31.
#[test]
fn delta_seconds_overflow_saturates_at_2_pow_31() {
    assert_eq!(
        resp("max-age=99999999999999999999999999").max_age,
        Some(1 << 31)
    );
    assert_eq!(resp("max-age=2147483649").max_age, Some(1 << 31));
    assert_eq!(resp("max-age=2147483647").max_age, Some(2147483647));
    assert_eq!(
        req("max-stale=18446744073709551616").max_stale,
        Some(Some(1 << 31))
    );
}

// RFC 9111 §5.2.2.4, §5.2.2.7: the qualified forms are read, conservatively,
// as the unqualified directive; a comma inside the quotes does not split it.
#[test]
fn qualified_no_cache_and_private_count_as_unqualified() {
    let d = resp("no-cache=\"Set-Cookie, X-Foo\", private=\"Authorization\", max-age=5");
    assert!(d.no_cache && d.private);
    assert_eq!(d.max_age, Some(5));
}

// RFC 9111 §5.2.3: unknown directives are ignored.
#[test]
fn unknown_directives_are_ignored() {
    let d = resp("community=\"UCI\", foo, bar=baz, max-age=4");
    assert_eq!(
        d,
        ResponseDirectives {
            max_age: Some(4),
            ..Default::default()
        }
    );
}

// RFC 9111 §5.2.1: every request directive the cache acts on is read.
#[test]
fn request_directives_are_all_read() {
    let d = req(
        "no-cache, no-store, max-age=5, max-stale=7, min-fresh=2, only-if-cached, stale-if-error=9",
    );
    let want = RequestDirectives {
        no_cache: true,
        no_store: true,
        max_age: Some(5),
        max_stale: Some(Some(7)),
        min_fresh: Some(2),
        only_if_cached: true,
        stale_if_error: Some(9),
    };
    assert_eq!(d, want);
}

// RFC 9111 §5.2.1.2: max-stale without a value accepts any staleness.
#[test]
fn max_stale_without_a_value_accepts_any_staleness() {
    assert_eq!(req("max-stale").max_stale, Some(None));
    assert_eq!(req("max-stale=0").max_stale, Some(Some(0)));
    assert_eq!(req("max-age=1").max_stale, None);
}

// RFC 9111 §5.4: Pragma: no-cache is request no-cache only without Cache-Control.
#[test]
fn pragma_no_cache_counts_only_without_cache_control() {
    let pragma = headers(&[("pragma", "No-Cache")]);
    assert!(RequestDirectives::parse(&pragma).no_cache);
    let both = headers(&[("pragma", "no-cache"), ("cache-control", "max-age=5")]);
    assert!(!RequestDirectives::parse(&both).no_cache);
    let other = headers(&[("pragma", "x-no-cache, foo=no-cache")]);
    assert!(!RequestDirectives::parse(&other).no_cache);
}

// RFC 9111 §5.2: no Cache-Control is all defaults.
#[test]
fn no_cache_control_is_all_defaults() {
    assert_eq!(
        RequestDirectives::parse(&HeaderMap::new()),
        RequestDirectives::default()
    );
    assert_eq!(
        ResponseDirectives::parse(&HeaderMap::new()),
        ResponseDirectives::default()
    );
}

// RFC 9110 §5.6.1: empty list elements and optional whitespace are tolerated;
// junk never panics and never invents a directive.
#[test]
fn list_syntax_is_tolerated_and_junk_is_harmless() {
    let d = resp(" ,, public ,\tmax-age = 7 ,, ");
    assert!(d.public);
    assert_eq!(d.max_age, Some(7));
    for junk in [
        "=",
        "\"",
        "max-age=\"",
        "max-age=\"12",
        "max-age=\"1\\",
        "===,,,\"\"\"",
        "max-age 60",
        "no-store\"x",
    ] {
        let _ = resp(junk);
        let _ = req(junk);
    }
    // A max-age without its value is invalid freshness information: stale.
    assert_eq!(resp("max-age 60").max_age, Some(0));
    assert_eq!(resp("max-age=\"12").max_age, Some(12));
    assert_eq!(resp("max-age=\"1\\2\"").max_age, Some(0));
}

// RFC 9110 §5.5: obs-text (bytes >= 0x80) in a value does not break parsing.
#[test]
fn non_ascii_bytes_are_harmless() {
    let mut h = HeaderMap::new();
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_bytes(b"private=\"\xff\xfe\", max-age=3").unwrap(),
    );
    let d = ResponseDirectives::parse(&h);
    assert!(d.private);
    assert_eq!(d.max_age, Some(3));
}
