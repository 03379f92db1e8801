//! Cache-Control parsing (RFC 9111 §5.2) into flat structs, without allocating.
//!
//! Both parsers walk every `Cache-Control` field line in place: a directive is a
//! byte slice of the header value, compared case-insensitively, so a request
//! costs one `HeaderMap` lookup (two when it has no Cache-Control and `Pragma`
//! is checked, §5.4).

use http::header::{ValueIter, CACHE_CONTROL, PRAGMA};
use http::{HeaderMap, HeaderName, HeaderValue};

/// RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as 2^31.
pub const DELTA_SECONDS_MAX: u64 = 1 << 31;

/// The response directives a shared cache acts on (RFC 9111 §5.2.2, RFC 5861, RFC 8246).
///
/// `Default` is "no Cache-Control at all". Parsing rules:
/// - every field line is read; names are case-insensitive; values may be a
///   token or a quoted string (`max-age="60"`); unknown directives are ignored;
/// - a duplicated directive: the first occurrence counts (§4.2.1);
/// - an invalid `max-age`/`s-maxage` (`max-age=abc`, `max-age=-1`) is read as
///   `0`: §4.2.1 encourages treating invalid freshness information as stale,
///   which is the conservative reading (the response may still be stored and
///   revalidated). Other invalid values (`stale-if-error=x`) are ignored on their
///   own; the remaining directives still apply;
/// - the qualified forms `no-cache="Set-Cookie"` and `private="X"` are read as
///   the unqualified directive: honouring the field list would mean stripping
///   fields from a stored response, and treating the whole response as no-cache
///   (or private) is the conservative choice §5.2.2.4/§5.2.2.7 allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseDirectives {
    /// `no-store` (§5.2.2.5): never stored.
    pub no_store: bool,
    /// `no-cache` (§5.2.2.4): stored, but each use is revalidated.
    pub no_cache: bool,
    /// `private` (§5.2.2.7): a shared cache must not store it.
    pub private: bool,
    /// `public` (§5.2.2.9): storable even with Authorization or a status that is not heuristically cacheable.
    pub public: bool,
    /// `max-age` in seconds (§5.2.2.1), saturated at 2^31.
    pub max_age: Option<u64>,
    /// `s-maxage` in seconds (§5.2.2.10); overrides max-age in a shared cache.
    pub s_maxage: Option<u64>,
    /// `must-revalidate` (§5.2.2.2): no stale use once expired.
    pub must_revalidate: bool,
    /// `proxy-revalidate` (§5.2.2.8): must-revalidate for shared caches.
    pub proxy_revalidate: bool,
    /// `stale-while-revalidate` in seconds (RFC 5861 §3).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` in seconds (RFC 5861 §4).
    pub stale_if_error: Option<u64>,
    /// `immutable` (RFC 8246).
    pub immutable: bool,
    /// `no-transform` (§5.2.2.6): the cache must not recompress the content.
    pub no_transform: bool,
}

impl ResponseDirectives {
    /// Parses every `Cache-Control` field line of a response. Cost: one lookup,
    /// one pass over the bytes, no allocation.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut d = ResponseDirectives::default();
        let (mut seen_swr, mut seen_sie) = (false, false);
        for (name, value) in Directives::of(headers, CACHE_CONTROL) {
            if name.eq_ignore_ascii_case(b"max-age") {
                if d.max_age.is_none() {
                    d.max_age = Some(value.and_then(delta_seconds).unwrap_or(0));
                }
            } else if name.eq_ignore_ascii_case(b"s-maxage") {
                if d.s_maxage.is_none() {
                    d.s_maxage = Some(value.and_then(delta_seconds).unwrap_or(0));
                }
            } else if name.eq_ignore_ascii_case(b"no-store") {
                d.no_store = true;
            } else if name.eq_ignore_ascii_case(b"no-cache") {
                d.no_cache = true;
            } else if name.eq_ignore_ascii_case(b"private") {
                d.private = true;
            } else if name.eq_ignore_ascii_case(b"public") {
                d.public = true;
            } else if name.eq_ignore_ascii_case(b"must-revalidate") {
                d.must_revalidate = true;
            } else if name.eq_ignore_ascii_case(b"proxy-revalidate") {
                d.proxy_revalidate = true;
            } else if name.eq_ignore_ascii_case(b"stale-while-revalidate") {
                if !std::mem::replace(&mut seen_swr, true) {
                    d.stale_while_revalidate = value.and_then(delta_seconds);
                }
            } else if name.eq_ignore_ascii_case(b"stale-if-error") {
                if !std::mem::replace(&mut seen_sie, true) {
                    d.stale_if_error = value.and_then(delta_seconds);
                }
            } else if name.eq_ignore_ascii_case(b"immutable") {
                d.immutable = true;
            } else if name.eq_ignore_ascii_case(b"no-transform") {
                d.no_transform = true;
            }
        }
        d
    }
}

/// The request directives a cache acts on (RFC 9111 §5.2.1, RFC 5861 §4).
///
/// `Default` is "no Cache-Control". An invalid value (`max-age=abc`) makes that
/// directive ignored; a duplicated directive: the first occurrence counts, so
/// an invalid first one is not replaced by a later one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `no-cache` (§5.2.1.4), or `Pragma: no-cache` without Cache-Control (§5.4).
    pub no_cache: bool,
    /// `no-store` (§5.2.1.5): neither the request nor its response is stored.
    pub no_store: bool,
    /// `max-age` (§5.2.1.1): the oldest response the client accepts, in seconds.
    pub max_age: Option<u64>,
    /// `max-stale` (§5.2.1.2): `Some(None)` accepts any staleness, `Some(Some(n))` up to n seconds.
    pub max_stale: Option<Option<u64>>,
    /// `min-fresh` (§5.2.1.3): the response must stay fresh at least this many seconds.
    pub min_fresh: Option<u64>,
    /// `only-if-cached` (§5.2.1.7): answer from the cache or with 504.
    pub only_if_cached: bool,
    /// `stale-if-error` (RFC 5861 §4) for this request only.
    pub stale_if_error: Option<u64>,
}

impl RequestDirectives {
    /// Parses a request's `Cache-Control` (and `Pragma` when it has none).
    /// Cost: one `HeaderMap` lookup, two without Cache-Control; no allocation.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut d = RequestDirectives::default();
        let mut lines = headers.get_all(CACHE_CONTROL).iter().peekable();
        if lines.peek().is_none() {
            // §5.4: Pragma: no-cache means no-cache only when Cache-Control is absent.
            d.no_cache = Directives::of(headers, PRAGMA)
                .any(|(name, _)| name.eq_ignore_ascii_case(b"no-cache"));
            return d;
        }
        let (mut seen_max_age, mut seen_max_stale, mut seen_min_fresh, mut seen_sie) =
            (false, false, false, false);
        for (name, value) in Directives::new(lines) {
            if name.eq_ignore_ascii_case(b"no-cache") {
                d.no_cache = true;
            } else if name.eq_ignore_ascii_case(b"no-store") {
                d.no_store = true;
            } else if name.eq_ignore_ascii_case(b"max-age") {
                if !std::mem::replace(&mut seen_max_age, true) {
                    d.max_age = value.and_then(delta_seconds);
                }
            } else if name.eq_ignore_ascii_case(b"max-stale") {
                if !std::mem::replace(&mut seen_max_stale, true) {
                    d.max_stale = match value {
                        None => Some(None),
                        Some(v) => delta_seconds(v).map(Some),
                    };
                }
            } else if name.eq_ignore_ascii_case(b"min-fresh") {
                if !std::mem::replace(&mut seen_min_fresh, true) {
                    d.min_fresh = value.and_then(delta_seconds);
                }
            } else if name.eq_ignore_ascii_case(b"only-if-cached") {
                d.only_if_cached = true;
            } else if name.eq_ignore_ascii_case(b"stale-if-error")
                && !std::mem::replace(&mut seen_sie, true)
            {
                d.stale_if_error = value.and_then(delta_seconds);
            }
        }
        d
    }
}

/// `delta-seconds = 1*DIGIT` (§1.2.2), saturated at 2^31. Anything else is invalid.
pub(crate) fn delta_seconds(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    Some(n.min(DELTA_SECONDS_MAX))
}

/// Does any `Cache-Control` field line carry the directive `name`? (Used for
/// rare directives not kept in the structs, such as `must-understand`.)
pub(crate) fn has_directive(headers: &HeaderMap, name: &[u8]) -> bool {
    Directives::of(headers, CACHE_CONTROL).any(|(n, _)| n.eq_ignore_ascii_case(name))
}

/// The directives of every field line of one header, as `(name, value)` byte
/// slices; a quoted value is given without its quotes (escapes left as they are,
/// which makes an escaped delta-seconds invalid, as it should be).
pub(crate) struct Directives<'a, I: Iterator<Item = &'a HeaderValue>> {
    lines: I,
    rest: &'a [u8],
}

impl<'a> Directives<'a, ValueIter<'a, HeaderValue>> {
    pub(crate) fn of(headers: &'a HeaderMap, name: HeaderName) -> Self {
        Directives::new(headers.get_all(name).iter())
    }
}

impl<'a, I: Iterator<Item = &'a HeaderValue>> Directives<'a, I> {
    pub(crate) fn new(lines: I) -> Self {
        Directives { lines, rest: &[] }
    }
}

impl<'a, I: Iterator<Item = &'a HeaderValue>> Iterator for Directives<'a, I> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(d) = next_directive(&mut self.rest) {
                return Some(d);
            }
            self.rest = self.lines.next()?.as_bytes();
        }
    }
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn skip_ows(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| is_ows(**b)).count();
    s.get(n..).unwrap_or_default()
}

fn trim_ows_end(s: &[u8]) -> &[u8] {
    let n = s.iter().rev().take_while(|b| is_ows(**b)).count();
    s.get(..s.len() - n).unwrap_or_default()
}

/// Splits `s` at the first `,` outside a quoted string: (before, after the comma).
fn split_at_comma(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|b| *b == b',') {
        Some(i) => (
            s.get(..i).unwrap_or_default(),
            s.get(i + 1..).unwrap_or_default(),
        ),
        None => (s, &[]),
    }
}

/// The next `name[=value]` of a comma-separated list, advancing `s` past it.
fn next_directive<'a>(s: &mut &'a [u8]) -> Option<(&'a [u8], Option<&'a [u8]>)> {
    // Skip empty list elements (`a,,b`, leading commas, OWS).
    let start = s.iter().position(|b| *b != b',' && !is_ows(*b))?;
    let t = s.get(start..).unwrap_or_default();
    let name_len = t
        .iter()
        .position(|b| matches!(b, b'=' | b',' | b' ' | b'\t'))
        .unwrap_or(t.len());
    let name = t.get(..name_len).unwrap_or_default();
    let after = skip_ows(t.get(name_len..).unwrap_or_default());
    let Some(v) = after.strip_prefix(b"=") else {
        // No value: anything up to the next comma is junk (`max-age 60`).
        *s = split_at_comma(after).1;
        return Some((name, None));
    };
    let v = skip_ows(v);
    if let Some(q) = v.strip_prefix(b"\"") {
        let mut i = 0;
        while let Some(&b) = q.get(i) {
            match b {
                b'\\' => i += 2,
                b'"' => break,
                _ => i += 1,
            }
        }
        let inner = q.get(..i).unwrap_or(q);
        *s = split_at_comma(q.get(i + 1..).unwrap_or_default()).1;
        Some((name, Some(inner)))
    } else {
        let (value, rest) = split_at_comma(v);
        *s = rest;
        Some((name, Some(trim_ows_end(value))))
    }
}

#[cfg(test)]
mod tests;
