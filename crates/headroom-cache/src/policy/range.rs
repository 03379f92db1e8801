//! Range requests (RFC 9110 §14) answered from a stored full response.

use std::time::Duration;

use http::header::{DATE, IF_RANGE, LAST_MODIFIED, RANGE};
use http::{HeaderMap, Method};

use super::conditional::{etag, next_tag};
use super::freshness::header_date;

/// How to answer a request that may carry Range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// 200 with the whole stored body.
    Full,
    /// 206 with bytes `start..=end` and `Content-Range: bytes start-end/len`.
    Partial {
        /// First byte offset.
        start: u64,
        /// Last byte offset, inclusive.
        end: u64,
    },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
    /// Not answered from the cache (several ranges, another unit): forward it.
    Upstream,
}

/// RFC 9110 §14: a Range request on a stored full response of `len` bytes.
///
/// - not GET (§14.2: GET is the only method with range handling), no Range,
///   or a Range that does not parse (§14.2: ignored) → `Full`;
/// - an If-Range that does not hold (§13.1.5: a strong ETag comparison, or a
///   date exactly equal to a Last-Modified that is a strong validator, i.e. at
///   least a second before the stored Date, §8.8.2.2) → `Full`;
/// - one `bytes=` range (`a-b`, `a-`, `-n`; the unit is case-insensitive) →
///   `Partial`, clipped to the body; one starting at or past the end, or
///   `-0` → `Unsatisfiable` (so is any range on an empty body, except a
///   suffix one, which §14.1.1 calls satisfiable and is answered `Full`, the
///   empty body, since 206 cannot express an empty range);
/// - several ranges or another unit → `Upstream`.
///
/// Cost: one or two lookups; no allocation.
pub fn range(method: &Method, req: &HeaderMap, stored: &HeaderMap, len: u64) -> RangeAnswer {
    if method != Method::GET {
        return RangeAnswer::Full;
    }
    let mut lines = req.get_all(RANGE).iter();
    let Some(spec) = lines.next() else {
        return RangeAnswer::Full;
    };
    if lines.next().is_some() {
        // Range is a singleton field: two lines are invalid, hence ignored.
        return RangeAnswer::Full;
    }
    if req.contains_key(IF_RANGE) && !if_range_holds(req, stored) {
        return RangeAnswer::Full;
    }
    let spec = spec.as_bytes();
    let Some(eq) = spec.iter().position(|b| *b == b'=') else {
        return RangeAnswer::Full;
    };
    let (unit, set) = (
        spec.get(..eq).unwrap_or_default(),
        spec.get(eq + 1..).unwrap_or_default(),
    );
    if !unit.eq_ignore_ascii_case(b"bytes") {
        // An empty or non-token unit is a syntax error; another unit is the origin's business.
        let token = !unit.is_empty()
            && unit
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(b));
        return if token {
            RangeAnswer::Upstream
        } else {
            RangeAnswer::Full
        };
    }
    // `1#range-spec`: empty list elements are allowed and skipped.
    let mut specs = set
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|s| !s.is_empty());
    let (Some(one), None) = (specs.next(), specs.next()) else {
        let several = set
            .split(|b| *b == b',')
            .any(|s| !s.trim_ascii().is_empty());
        return if several {
            RangeAnswer::Upstream
        } else {
            RangeAnswer::Full
        };
    };
    byte_range(one, len)
}

/// One `range-spec` (§14.1.2) against a body of `len` bytes.
fn byte_range(spec: &[u8], len: u64) -> RangeAnswer {
    let Some(dash) = spec.iter().position(|b| *b == b'-') else {
        return RangeAnswer::Full;
    };
    let (first, last) = (
        spec.get(..dash).unwrap_or_default(),
        spec.get(dash + 1..).unwrap_or_default(),
    );
    if first.is_empty() {
        // suffix-range: the last n bytes.
        let Some(n) = digits(last) else {
            return RangeAnswer::Full;
        };
        return match (n, len) {
            (0, _) => RangeAnswer::Unsatisfiable,
            (_, 0) => RangeAnswer::Full,
            _ => RangeAnswer::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        };
    }
    let Some(start) = digits(first) else {
        return RangeAnswer::Full;
    };
    let end = if last.is_empty() {
        None
    } else {
        match digits(last) {
            Some(end) if end >= start => Some(end),
            // last-pos before first-pos, or not digits: invalid, ignored (§14.1.2).
            _ => return RangeAnswer::Full,
        }
    };
    if start >= len {
        return RangeAnswer::Unsatisfiable;
    }
    let last_byte = len - 1;
    RangeAnswer::Partial {
        start,
        end: end.map_or(last_byte, |e| e.min(last_byte)),
    }
}

/// `1*DIGIT`, saturating (a huge position is simply past the end).
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// §13.1.5: an entity tag must strongly equal the stored ETag; a date must
/// equal the stored Last-Modified exactly, and that Last-Modified must be a
/// strong validator (at least one second before the stored Date, §8.8.2.2).
fn if_range_holds(req: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(value) = req.get(IF_RANGE) else {
        return true;
    };
    let bytes = value.as_bytes().trim_ascii();
    if bytes.starts_with(b"\"") || bytes.starts_with(b"W/") {
        let mut s = bytes;
        return match (next_tag(&mut s), etag(stored)) {
            (Some(wanted), Some(have)) => wanted.strong_eq(&have),
            _ => false,
        };
    }
    let Some(date) = value
        .to_str()
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok())
    else {
        return false;
    };
    match (
        header_date(stored, LAST_MODIFIED),
        header_date(stored, DATE),
    ) {
        (Some(modified), Some(sent)) => {
            modified == date
                && sent
                    .duration_since(modified)
                    .is_ok_and(|d| d >= Duration::from_secs(1))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn get(range: &str, len: u64) -> RangeAnswer {
        let mut req = HeaderMap::new();
        req.insert(RANGE, HeaderValue::from_str(range).unwrap());
        super::range(&Method::GET, &req, &HeaderMap::new(), len)
    }

    fn partial(start: u64, end: u64) -> RangeAnswer {
        RangeAnswer::Partial { start, end }
    }

    // RFC 9110 §14.1.2: first-last, open-ended and suffix ranges.
    #[test]
    fn a_single_byte_range_is_partial() {
        assert_eq!(get("bytes=0-99", 1000), partial(0, 99));
        assert_eq!(get("bytes=900-", 1000), partial(900, 999));
        assert_eq!(get("bytes=-100", 1000), partial(900, 999));
    }

    // RFC 9110 §14.1.2: a last-pos past the end is clipped to the last byte.
    #[test]
    fn a_range_past_the_end_is_clipped() {
        assert_eq!(get("bytes=500-5000", 1000), partial(500, 999));
        assert_eq!(get("bytes=5-99999999999999999999999", 10), partial(5, 9));
    }

    // RFC 9110 §14.1.2: a suffix longer than the representation selects all of it.
    #[test]
    fn a_suffix_range_bigger_than_the_body_selects_all_of_it() {
        assert_eq!(get("bytes=-5000", 1000), partial(0, 999));
    }

    // RFC 9110 §14.1.1, §15.5.17: a first-pos at or past the end is unsatisfiable (416).
    #[test]
    fn a_range_starting_past_the_end_is_unsatisfiable() {
        assert_eq!(get("bytes=1000-", 1000), RangeAnswer::Unsatisfiable);
        assert_eq!(get("bytes=2000-3000", 1000), RangeAnswer::Unsatisfiable);
        assert_eq!(
            get("bytes=99999999999999999999999-", 10),
            RangeAnswer::Unsatisfiable
        );
    }

    // RFC 9110 §14.1.1: a suffix of zero bytes is never satisfiable.
    #[test]
    fn a_zero_length_suffix_is_unsatisfiable() {
        assert_eq!(get("bytes=-0", 1000), RangeAnswer::Unsatisfiable);
    }

    // RFC 9110 §14.1.1: nothing in an empty body can be selected by position.
    #[test]
    fn a_range_on_an_empty_body_is_unsatisfiable() {
        assert_eq!(get("bytes=0-", 0), RangeAnswer::Unsatisfiable);
        assert_eq!(get("bytes=0-0", 0), RangeAnswer::Unsatisfiable);
        // A non-zero suffix is satisfiable: the whole (empty) body, as a 200.
        assert_eq!(get("bytes=-5", 0), RangeAnswer::Full);
    }

    // RFC 9110 §14.2: several ranges (multipart) are left to the origin.
    #[test]
    fn several_ranges_go_upstream() {
        assert_eq!(get("bytes=0-1,5-6", 1000), RangeAnswer::Upstream);
        assert_eq!(get("bytes=0-1, -5", 1000), RangeAnswer::Upstream);
    }

    // RFC 9110 §14.1: `1#range-spec` allows empty elements; the unit is case-insensitive.
    #[test]
    fn empty_list_elements_and_unit_case_are_accepted() {
        assert_eq!(get("bytes=0-1,", 1000), partial(0, 1));
        assert_eq!(get("Bytes= 0-1 ", 1000), partial(0, 1));
    }

    // RFC 9110 §14.1: a unit the cache does not know is the origin's to answer.
    #[test]
    fn another_range_unit_goes_upstream() {
        assert_eq!(get("items=0-5", 1000), RangeAnswer::Upstream);
    }

    // RFC 9110 §14.2: an invalid Range is ignored (the full response is sent).
    #[test]
    fn an_invalid_range_is_ignored() {
        for bad in [
            "bytes=5-1",
            "bytes=abc",
            "bytes=1-x",
            "bytes",
            "bytes=",
            "=0-1",
            "bytes=--1",
            "bytes=1",
        ] {
            assert_eq!(get(bad, 1000), RangeAnswer::Full, "{bad}");
        }
    }

    // RFC 9110 §14.2: two Range field lines are invalid, hence ignored.
    #[test]
    fn two_range_lines_are_ignored() {
        let mut req = HeaderMap::new();
        req.append(RANGE, HeaderValue::from_static("bytes=0-1"));
        req.append(RANGE, HeaderValue::from_static("bytes=2-3"));
        assert_eq!(
            super::range(&Method::GET, &req, &HeaderMap::new(), 10),
            RangeAnswer::Full
        );
    }

    // RFC 9110 §14.2: GET is the only method with range handling.
    #[test]
    fn range_is_ignored_on_head() {
        let mut req = HeaderMap::new();
        req.insert(RANGE, HeaderValue::from_static("bytes=0-1"));
        assert_eq!(
            super::range(&Method::HEAD, &req, &HeaderMap::new(), 10),
            RangeAnswer::Full
        );
        assert_eq!(
            super::range(&Method::GET, &HeaderMap::new(), &HeaderMap::new(), 10),
            RangeAnswer::Full
        );
    }

    fn with_if_range(if_range: &str, stored: &[(&str, &str)]) -> RangeAnswer {
        let mut req = HeaderMap::new();
        req.insert(RANGE, HeaderValue::from_static("bytes=0-1"));
        req.insert(IF_RANGE, HeaderValue::from_str(if_range).unwrap());
        let mut st = HeaderMap::new();
        for (k, v) in stored {
            st.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        super::range(&Method::GET, &req, &st, 10)
    }

    // RFC 9110 §13.1.5: If-Range with an entity tag uses the strong comparison.
    #[test]
    fn if_range_etag_must_match_strongly() {
        assert_eq!(
            with_if_range("\"v1\"", &[("etag", "\"v1\"")]),
            partial(0, 1)
        );
        assert_eq!(
            with_if_range("\"v2\"", &[("etag", "\"v1\"")]),
            RangeAnswer::Full
        );
        assert_eq!(
            with_if_range("W/\"v1\"", &[("etag", "W/\"v1\"")]),
            RangeAnswer::Full
        );
        assert_eq!(
            with_if_range("\"v1\"", &[("etag", "W/\"v1\"")]),
            RangeAnswer::Full
        );
        assert_eq!(with_if_range("\"v1\"", &[]), RangeAnswer::Full);
    }

    // RFC 9110 §13.1.5: If-Range with a date holds only for an exact, strong Last-Modified.
    #[test]
    fn if_range_date_must_equal_a_strong_last_modified() {
        let lm = "Sun, 06 Nov 1994 08:49:37 GMT";
        let later = "Sun, 06 Nov 1994 09:49:37 GMT";
        let stored = [("last-modified", lm), ("date", later)];
        assert_eq!(with_if_range(lm, &stored), partial(0, 1));
        assert_eq!(with_if_range(later, &stored), RangeAnswer::Full);
        // Last-Modified equal to Date is weak (§8.8.2.2): the condition is false.
        assert_eq!(
            with_if_range(lm, &[("last-modified", lm), ("date", lm)]),
            RangeAnswer::Full
        );
        assert_eq!(with_if_range("not a date", &stored), RangeAnswer::Full);
    }
}
