//! Conditional requests (RFC 9110 §13, RFC 9111 §4.3): answering a client's
//! conditional GET from the cache, revalidating upstream, and updating a stored
//! response from a 304. Range requests ([`range()`]) are in their own file and
//! re-exported here.

use http::header::{
    CACHE_CONTROL, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_LOCATION, CONTENT_RANGE,
    DATE, ETAG, EXPIRES, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE, VARY,
};
use http::{HeaderMap, HeaderName};

use super::freshness::header_date;
pub use super::range::{range, RangeAnswer};

/// An entity tag (RFC 9110 §8.8.3), borrowed from a header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityTag<'a> {
    /// `W/` prefix.
    pub weak: bool,
    /// The opaque tag without its quotes.
    pub opaque: &'a [u8],
}

impl EntityTag<'_> {
    /// §8.8.3.2 strong comparison: both strong and identical.
    pub fn strong_eq(&self, other: &EntityTag) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// §8.8.3.2 weak comparison: identical opaque tags, either may be weak.
    pub fn weak_eq(&self, other: &EntityTag) -> bool {
        self.opaque == other.opaque
    }
}

/// The entity tag of a stored response's first ETag line. Lenient with origins
/// that forget the quotes (`ETag: abc` is read as the strong tag `abc`), as
/// clients echo such a value back as it is.
pub fn etag(headers: &HeaderMap) -> Option<EntityTag<'_>> {
    let mut s = headers.get(ETAG)?.as_bytes();
    next_tag(&mut s)
}

/// The next entity tag of a comma-separated list, advancing `s` past it.
/// Commas may appear inside quotes (`etagc` allows them), so the list is
/// split by tags, not by commas. None at the end of the list.
pub(crate) fn next_tag<'a>(s: &mut &'a [u8]) -> Option<EntityTag<'a>> {
    let start = s.iter().position(|b| !matches!(b, b',' | b' ' | b'\t'))?;
    let mut t = s.get(start..).unwrap_or_default();
    let weak = t.starts_with(b"W/");
    if weak {
        t = t.get(2..).unwrap_or_default();
    }
    let (opaque, rest) = match t.strip_prefix(b"\"") {
        Some(q) => {
            let end = q.iter().position(|b| *b == b'"').unwrap_or(q.len());
            (
                q.get(..end).unwrap_or(q),
                q.get(end + 1..).unwrap_or_default(),
            )
        }
        None => {
            let end = t
                .iter()
                .position(|b| matches!(b, b',' | b' ' | b'\t'))
                .unwrap_or(t.len());
            (t.get(..end).unwrap_or(t), t.get(end..).unwrap_or_default())
        }
    };
    *s = rest;
    Some(EntityTag { weak, opaque })
}

/// RFC 9110 §13.1.2, §13.1.3, §13.2.2; RFC 9111 §4.3.2: does a client's
/// conditional GET/HEAD evaluate to 304 against the stored response's headers?
/// (The caller checks the method: for other methods these fields mean
/// something else.)
///
/// If-None-Match decides when present: `*` matches any stored response, and a
/// list matches when any member weakly equals the stored ETag (none without
/// one). Only without If-None-Match is If-Modified-Since read: 304 when the
/// stored Last-Modified (or Date when it has none) is not later than it. An
/// invalid or repeated If-Modified-Since is ignored. Cost: two or three
/// lookups; no allocation.
pub fn not_modified(req: &HeaderMap, stored: &HeaderMap) -> bool {
    let mut inm = req.get_all(IF_NONE_MATCH).iter().peekable();
    if inm.peek().is_some() {
        let stored_tag = etag(stored);
        for line in inm {
            let mut s = line.as_bytes();
            if s.trim_ascii() == b"*" {
                return true;
            }
            let Some(stored_tag) = stored_tag else {
                continue;
            };
            while let Some(tag) = next_tag(&mut s) {
                if tag.weak_eq(&stored_tag) {
                    return true;
                }
            }
        }
        return false;
    }
    let mut ims = req.get_all(IF_MODIFIED_SINCE).iter();
    let (Some(since), None) = (ims.next(), ims.next()) else {
        return false;
    };
    let Some(since) = since
        .to_str()
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok())
    else {
        return false;
    };
    match header_date(stored, LAST_MODIFIED).or_else(|| header_date(stored, DATE)) {
        Some(modified) => modified <= since,
        None => false,
    }
}

/// The headers a 304 generated from a stored response carries (RFC 9110
/// §15.4.5): Cache-Control, Content-Location, Date, ETag, Expires and Vary,
/// plus Last-Modified when there is no ETag (it is then the validator that
/// guides the client's cache update). The caller adds Age. Allocates the map.
pub fn not_modified_headers(stored: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(8);
    let has_etag = stored.contains_key(ETAG);
    let fields = [
        CACHE_CONTROL,
        CONTENT_LOCATION,
        DATE,
        ETAG,
        EXPIRES,
        VARY,
        LAST_MODIFIED,
    ];
    for name in fields {
        if name == LAST_MODIFIED && has_etag {
            continue;
        }
        for value in stored.get_all(&name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// §4.3.1: sets the conditional headers for revalidating a stored response
/// upstream: If-None-Match from its ETag, If-Modified-Since from its
/// Last-Modified. They replace any the client sent (the client's own
/// conditions are evaluated against the refreshed stored response instead).
pub fn validators(stored: &HeaderMap, into: &mut HeaderMap) {
    if let Some(tag) = stored.get(ETAG) {
        into.insert(IF_NONE_MATCH, tag.clone());
    } else {
        into.remove(IF_NONE_MATCH);
    }
    if let Some(modified) = stored.get(LAST_MODIFIED) {
        into.insert(IF_MODIFIED_SINCE, modified.clone());
    } else {
        into.remove(IF_MODIFIED_SINCE);
    }
}

/// Fields a 304 never changes in the stored response: the stored body's framing
/// and coding (§4.3.4), and hop-by-hop fields, which are not stored (§3.1).
const KEEP_STORED: [HeaderName; 10] = [
    CONTENT_LENGTH,
    CONTENT_ENCODING,
    TRANSFER_ENCODING,
    CONTENT_RANGE,
    CONNECTION,
    TE,
    TRAILER,
    UPGRADE,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
];

fn hop_by_hop_extra(name: &HeaderName) -> bool {
    name == "keep-alive" || name == "proxy-connection"
}

/// Is `name` listed in the Connection field of `headers` (hop-by-hop, §3.1)?
fn named_by_connection(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.get_all(CONNECTION).iter().any(|line| {
        line.as_bytes().split(|b| *b == b',').any(|token| {
            token
                .trim_ascii()
                .eq_ignore_ascii_case(name.as_str().as_bytes())
        })
    })
}

/// §4.3.4: a 304 from upstream updates the stored headers: each field in the
/// 304 replaces the stored field of that name (all its lines), except
/// Content-Length, Content-Encoding, Transfer-Encoding, Content-Range and
/// hop-by-hop fields (those named by Connection included). Call it only when
/// [`matches_stored`] holds.
pub fn freshen(stored: &mut HeaderMap, not_modified: &HeaderMap) {
    for name in not_modified.keys() {
        if KEEP_STORED.contains(name)
            || hop_by_hop_extra(name)
            || named_by_connection(not_modified, name)
        {
            continue;
        }
        let mut values = not_modified.get_all(name).iter();
        if let Some(first) = values.next() {
            stored.insert(name.clone(), first.clone());
        }
        for value in values {
            stored.append(name.clone(), value.clone());
        }
    }
}

/// §4.3.3: does a 304 from upstream identify this stored response? With an
/// ETag in the 304: a strong one must strongly equal the stored ETag, a weak
/// one weakly. Else with a Last-Modified: it must equal the stored one. A 304
/// without validators answers the conditional request built from this stored
/// response's validators ([`validators`]), so it matches (the RFC's stricter
/// rule for that case is about picking among several stored responses).
pub fn matches_stored(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    if let Some(new) = etag(not_modified) {
        return match etag(stored) {
            Some(old) if new.weak => new.weak_eq(&old),
            Some(old) => new.strong_eq(&old),
            None => false,
        };
    }
    if not_modified.contains_key(LAST_MODIFIED) {
        return match (
            header_date(not_modified, LAST_MODIFIED),
            header_date(stored, LAST_MODIFIED),
        ) {
            (Some(new), Some(old)) => new == old,
            _ => false,
        };
    }
    true
}

#[cfg(test)]
mod tests;
