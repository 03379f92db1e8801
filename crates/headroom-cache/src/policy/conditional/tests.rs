use super::*;
use crate::policy::testing::*;

const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const BEFORE: &str = "Sun, 06 Nov 1994 08:49:36 GMT";
const AFTER: &str = "Sun, 06 Nov 1994 08:49:38 GMT";

fn nm(req: &[(&str, &str)], stored: &[(&str, &str)]) -> bool {
    not_modified(&headers(req), &headers(stored))
}

// --- not_modified (RFC 9110 §13.1.2, §13.1.3, §13.2.2) ---------------------------

// RFC 9110 §13.1.2: If-None-Match uses the weak comparison, W/ or not.
#[test]
fn if_none_match_compares_weakly() {
    let strong = [("etag", "\"v1\"")];
    let weak = [("etag", "W/\"v1\"")];
    assert!(nm(&[("if-none-match", "\"v1\"")], &strong));
    assert!(nm(&[("if-none-match", "W/\"v1\"")], &strong));
    assert!(nm(&[("if-none-match", "\"v1\"")], &weak));
    assert!(!nm(&[("if-none-match", "\"v2\"")], &strong));
    assert!(!nm(&[("if-none-match", "\"V1\"")], &strong));
}

// RFC 9110 §13.1.2: a list (across field lines, commas allowed in tags) matches any member.
#[test]
fn if_none_match_lists_match_any_member() {
    let stored = [("etag", "\"a,b\"")];
    assert!(nm(&[("if-none-match", "\"x\", W/\"a,b\"")], &stored));
    assert!(nm(
        &[("if-none-match", "\"x\""), ("if-none-match", "\"a,b\"")],
        &stored
    ));
    assert!(!nm(&[("if-none-match", "\"a\", \"b\"")], &stored));
}

// RFC 9110 §13.1.2: `*` matches any current representation.
#[test]
fn if_none_match_star_matches_any_stored_response() {
    assert!(nm(&[("if-none-match", "*")], &[]));
    assert!(nm(&[("if-none-match", " * ")], &[("etag", "\"v\"")]));
}

// RFC 9110 §13.1.2: no stored ETag, no match.
#[test]
fn if_none_match_without_a_stored_etag_does_not_match() {
    assert!(!nm(
        &[("if-none-match", "\"v1\"")],
        &[("last-modified", LM)]
    ));
}

// RFC 9110 §13.2.2: If-None-Match takes precedence: If-Modified-Since is then ignored.
#[test]
fn if_none_match_takes_precedence_over_if_modified_since() {
    let stored = [("etag", "\"v1\""), ("last-modified", LM)];
    assert!(!nm(
        &[("if-none-match", "\"v2\""), ("if-modified-since", AFTER)],
        &stored
    ));
    assert!(nm(
        &[("if-none-match", "\"v1\""), ("if-modified-since", BEFORE)],
        &stored
    ));
}

// RFC 9110 §13.1.3: not modified when Last-Modified is not later than the date.
#[test]
fn if_modified_since_compares_with_last_modified() {
    let stored = [("last-modified", LM), ("date", AFTER)];
    assert!(nm(&[("if-modified-since", LM)], &stored));
    assert!(nm(&[("if-modified-since", AFTER)], &stored));
    assert!(!nm(&[("if-modified-since", BEFORE)], &stored));
}

// RFC 9111 §4.3.2: without Last-Modified, the stored Date is used.
#[test]
fn if_modified_since_falls_back_to_date() {
    assert!(nm(&[("if-modified-since", LM)], &[("date", LM)]));
    assert!(!nm(&[("if-modified-since", BEFORE)], &[("date", LM)]));
    assert!(!nm(&[("if-modified-since", LM)], &[]));
}

// RFC 9110 §13.1.3: an invalid or repeated If-Modified-Since is ignored.
#[test]
fn an_invalid_if_modified_since_is_ignored() {
    let stored = [("last-modified", LM)];
    assert!(!nm(&[("if-modified-since", "yesterday")], &stored));
    assert!(!nm(
        &[("if-modified-since", AFTER), ("if-modified-since", AFTER)],
        &stored
    ));
    assert!(!nm(
        &[("if-modified-since", AFTER)],
        &[("last-modified", "garbage")]
    ));
}

// Origins that forget the quotes: the bare value still compares.
#[test]
fn an_unquoted_etag_is_compared_leniently() {
    assert!(nm(&[("if-none-match", "abc")], &[("etag", "abc")]));
    assert!(!nm(&[("if-none-match", "abcd")], &[("etag", "abc")]));
    for junk in ["\"", "W/", "W/\"", ",,,", "\"a", "W/W/\"a\""] {
        let _ = nm(&[("if-none-match", junk)], &[("etag", junk)]);
    }
}

// --- not_modified_headers (RFC 9110 §15.4.5) ---------------------------------------

// RFC 9110 §15.4.5: a 304 carries Cache-Control, Content-Location, Date, ETag,
// Expires and Vary, and no representation metadata such as Content-Type.
#[test]
fn a_304_carries_the_validator_and_cache_fields_only() {
    let stored = headers(&[
        ("cache-control", "max-age=60"),
        ("content-location", "/a.en"),
        ("date", LM),
        ("etag", "\"v1\""),
        ("expires", AFTER),
        ("vary", "accept"),
        ("vary", "accept-encoding"),
        ("last-modified", LM),
        ("content-type", "text/html"),
        ("content-length", "10"),
        ("set-cookie", "a=b"),
    ]);
    let got = not_modified_headers(&stored);
    let mut names: Vec<&str> = got.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "cache-control",
            "content-location",
            "date",
            "etag",
            "expires",
            "vary"
        ]
    );
    assert_eq!(got.get_all(VARY).iter().count(), 2);
}

// RFC 9110 §15.4.5: without an ETag, Last-Modified guides the client's cache update.
#[test]
fn a_304_carries_last_modified_when_there_is_no_etag() {
    let got = not_modified_headers(&headers(&[
        ("last-modified", LM),
        ("content-type", "text/plain"),
    ]));
    assert_eq!(got.get(LAST_MODIFIED).unwrap(), LM);
    assert_eq!(got.len(), 1);
}

// --- validators (RFC 9111 §4.3.1) --------------------------------------------------

// RFC 9111 §4.3.1: revalidation sends the stored ETag and Last-Modified.
#[test]
fn validators_come_from_the_stored_etag_and_last_modified() {
    let mut into = headers(&[("if-none-match", "\"client\""), ("accept", "*/*")]);
    validators(
        &headers(&[("etag", "W/\"v1\""), ("last-modified", LM)]),
        &mut into,
    );
    assert_eq!(into.get(IF_NONE_MATCH).unwrap(), "W/\"v1\"");
    assert_eq!(into.get(IF_MODIFIED_SINCE).unwrap(), LM);
    assert_eq!(into.get_all(IF_NONE_MATCH).iter().count(), 1);
    assert!(into.contains_key("accept"));
}

// RFC 9111 §4.3.1: a validator the stored response lacks is not sent (nor the client's).
#[test]
fn validators_the_stored_response_lacks_are_not_sent() {
    let mut into = headers(&[("if-none-match", "\"client\""), ("if-modified-since", LM)]);
    validators(&headers(&[("etag", "\"v1\"")]), &mut into);
    assert_eq!(into.get(IF_NONE_MATCH).unwrap(), "\"v1\"");
    assert!(!into.contains_key(IF_MODIFIED_SINCE));
}

// --- freshen (RFC 9111 §4.3.4) -----------------------------------------------------

// RFC 9111 §4.3.4: each field in the 304 replaces the stored one (all its lines).
#[test]
fn a_304_replaces_the_stored_fields_it_carries() {
    let mut stored = headers(&[
        ("cache-control", "max-age=60"),
        ("date", BEFORE),
        ("x-a", "1"),
        ("x-a", "2"),
        ("content-type", "text/html"),
    ]);
    let update = headers(&[
        ("cache-control", "max-age=600"),
        ("date", AFTER),
        ("x-a", "3"),
        ("x-new", "n"),
    ]);
    freshen(&mut stored, &update);
    assert_eq!(stored.get(CACHE_CONTROL).unwrap(), "max-age=600");
    assert_eq!(stored.get(DATE).unwrap(), AFTER);
    assert_eq!(stored.get_all("x-a").iter().collect::<Vec<_>>(), ["3"]);
    assert_eq!(stored.get("x-new").unwrap(), "n");
    assert_eq!(stored.get("content-type").unwrap(), "text/html");
}

// RFC 9111 §4.3.4, §3.1: framing, coding and hop-by-hop fields of a 304 are not taken.
#[test]
fn a_304_does_not_change_framing_coding_or_hop_by_hop_fields() {
    let mut stored = headers(&[("content-length", "10"), ("content-encoding", "br")]);
    let update = headers(&[
        ("content-length", "0"),
        ("content-encoding", "gzip"),
        ("transfer-encoding", "chunked"),
        ("content-range", "bytes 0-1/10"),
        ("connection", "keep-alive, x-trace"),
        ("keep-alive", "timeout=5"),
        ("x-trace", "abc"),
        ("etag", "\"v1\""),
    ]);
    freshen(&mut stored, &update);
    assert_eq!(stored.get(CONTENT_LENGTH).unwrap(), "10");
    assert_eq!(stored.get(CONTENT_ENCODING).unwrap(), "br");
    for gone in [
        "transfer-encoding",
        "content-range",
        "connection",
        "keep-alive",
        "x-trace",
    ] {
        assert!(!stored.contains_key(gone), "{gone}");
    }
    assert_eq!(stored.get(ETAG).unwrap(), "\"v1\"");
}

// --- matches_stored (RFC 9111 §4.3.3) ----------------------------------------------

fn matches(stored: &[(&str, &str)], update: &[(&str, &str)]) -> bool {
    matches_stored(&headers(stored), &headers(update))
}

// RFC 9111 §4.3.3: a strong validator in the 304 must strongly match the stored one.
#[test]
fn a_304_with_another_strong_etag_does_not_update_the_stored_response() {
    assert!(matches(&[("etag", "\"v1\"")], &[("etag", "\"v1\"")]));
    assert!(!matches(&[("etag", "\"v1\"")], &[("etag", "\"v2\"")]));
    assert!(!matches(&[("etag", "W/\"v1\"")], &[("etag", "\"v1\"")]));
    assert!(!matches(&[("last-modified", LM)], &[("etag", "\"v1\"")]));
}

// RFC 9111 §4.3.3: a weak validator in the 304 matches weakly.
#[test]
fn a_304_with_a_weak_etag_matches_weakly() {
    assert!(matches(&[("etag", "W/\"v1\"")], &[("etag", "W/\"v1\"")]));
    assert!(matches(&[("etag", "\"v1\"")], &[("etag", "W/\"v1\"")]));
    assert!(!matches(&[("etag", "W/\"v1\"")], &[("etag", "W/\"v2\"")]));
}

// RFC 9111 §4.3.3: without an ETag, Last-Modified must be the stored one.
#[test]
fn a_304_with_last_modified_must_match_the_stored_date() {
    assert!(matches(&[("last-modified", LM)], &[("last-modified", LM)]));
    assert!(!matches(
        &[("last-modified", LM)],
        &[("last-modified", AFTER)]
    ));
    assert!(!matches(&[], &[("last-modified", LM)]));
    assert!(!matches(
        &[("last-modified", LM)],
        &[("last-modified", "garbage")]
    ));
}

// RFC 9111 §4.3.3: a 304 without validators answers our own conditional request.
#[test]
fn a_304_without_validators_matches() {
    assert!(matches(&[("etag", "\"v1\"")], &[("date", AFTER)]));
}
