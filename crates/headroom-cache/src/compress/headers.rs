//! The header edits that go with compressing a response.

use http::header::{ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, ETAG, VARY};
use http::{HeaderMap, HeaderValue};

use super::{list_elements, Coding};

/// Headers that describe the identity body's bytes and are wrong once it is compressed:
/// RFC 9530 digests (`Repr-Digest` covers the representation, which the coding changes) and
/// the obsolete `Content-MD5`.
const DIGEST_HEADERS: [&str; 3] = ["content-digest", "repr-digest", "content-md5"];

/// Edits `resp`'s headers for a body sent with `coding` (a no-op for [`Coding::Identity`]):
/// - `Content-Encoding: <coding>` set;
/// - `Content-Length` removed (the compressed length is known only at the end; the body is
///   sent chunked, or with h2 framing);
/// - `Vary: Accept-Encoding` added, merged into an existing `Vary` as one line, not added
///   twice, not added when `Vary: *` (which already varies on everything);
/// - a strong `ETag` made weak, `"x"` → `W/"x"`: the compressed bytes are another
///   representation, so the strong validator no longer names them (RFC 9110 §8.8.1), while a
///   weak one still lets `If-None-Match` revalidate against the identity body's tag;
/// - `Accept-Ranges` removed: ranges of a compressed body on the fly are not offered;
/// - digests of the identity body (`Content-Digest`, `Repr-Digest`, `Content-MD5`) removed.
///
/// Call it only when [`should_compress`](super::should_compress) said yes (it does not check).
/// Cost: a few header edits; allocates only to merge a `Vary` or weaken an `ETag`.
pub fn apply_headers(resp: &mut HeaderMap, coding: Coding) {
    if coding == Coding::Identity {
        return;
    }
    resp.insert(CONTENT_ENCODING, coding.header_value());
    resp.remove(CONTENT_LENGTH);
    resp.remove(ACCEPT_RANGES);
    for name in DIGEST_HEADERS {
        resp.remove(name);
    }
    add_vary_accept_encoding(resp);
    weaken_etag(resp);
}

fn add_vary_accept_encoding(resp: &mut HeaderMap) {
    const ACCEPT_ENCODING: &str = "Accept-Encoding";
    let varies_already = list_elements(resp.get_all(VARY).iter())
        .any(|e| e == b"*" || e.eq_ignore_ascii_case(ACCEPT_ENCODING.as_bytes()));
    if varies_already {
        return;
    }
    if !resp.contains_key(VARY) {
        resp.insert(VARY, HeaderValue::from_static(ACCEPT_ENCODING));
        return;
    }
    // One line, so that code reading `headers.get(VARY)` (a cache's secondary key) sees all.
    let mut merged = Vec::new();
    for element in list_elements(resp.get_all(VARY).iter()) {
        merged.extend_from_slice(element);
        merged.extend_from_slice(b", ");
    }
    merged.extend_from_slice(ACCEPT_ENCODING.as_bytes());
    match HeaderValue::from_bytes(&merged) {
        Ok(value) => {
            resp.insert(VARY, value);
        }
        // Cannot happen (the parts were valid header values), but a second line means the same.
        Err(_) => {
            resp.append(VARY, HeaderValue::from_static(ACCEPT_ENCODING));
        }
    }
}

fn weaken_etag(resp: &mut HeaderMap) {
    let Some(etag) = resp.get(ETAG) else {
        return;
    };
    let tag = etag.as_bytes();
    let strong = tag.len() >= 2 && tag[0] == b'"' && tag[tag.len() - 1] == b'"';
    if !strong {
        // Weak already, or not an entity-tag at all: left as it is.
        return;
    }
    let mut weak = Vec::with_capacity(tag.len() + 2);
    weak.extend_from_slice(b"W/");
    weak.extend_from_slice(tag);
    if let Ok(value) = HeaderValue::from_bytes(&weak) {
        resp.insert(ETAG, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for &(name, value) in pairs {
            map.append(name, HeaderValue::from_static(value));
        }
        map
    }

    fn vary_after(pairs: &[(&'static str, &'static str)]) -> Vec<String> {
        let mut resp = headers(pairs);
        apply_headers(&mut resp, Coding::Gzip);
        resp.get_all(VARY)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn content_encoding_is_set_and_length_and_ranges_removed() {
        let mut resp = headers(&[
            ("content-type", "text/html"),
            ("content-length", "5000"),
            ("accept-ranges", "bytes"),
            ("content-digest", "sha-256=:abc=:"),
            ("content-encoding", "identity"),
        ]);
        apply_headers(&mut resp, Coding::Brotli);
        assert_eq!(
            resp.get_all(CONTENT_ENCODING).iter().collect::<Vec<_>>(),
            ["br"]
        );
        assert!(!resp.contains_key(CONTENT_LENGTH));
        assert!(!resp.contains_key(ACCEPT_RANGES));
        assert!(!resp.contains_key("content-digest"));
        assert_eq!(resp[http::header::CONTENT_TYPE], "text/html");
    }

    #[test]
    fn vary_accept_encoding_is_added_or_merged_once() {
        assert_eq!(vary_after(&[]), ["Accept-Encoding"]);
        assert_eq!(
            vary_after(&[("vary", "Origin")]),
            ["Origin, Accept-Encoding"]
        );
        assert_eq!(
            vary_after(&[("vary", "Origin"), ("vary", "Cookie, ,Accept-Language")]),
            ["Origin, Cookie, Accept-Language, Accept-Encoding"]
        );
        assert_eq!(
            vary_after(&[("vary", "accept-encoding")]),
            ["accept-encoding"]
        );
        assert_eq!(
            vary_after(&[("vary", "Origin, ACCEPT-ENCODING")]),
            ["Origin, ACCEPT-ENCODING"]
        );
        assert_eq!(
            vary_after(&[("vary", "Origin"), ("vary", "*")]),
            ["Origin", "*"]
        );
        assert_eq!(vary_after(&[("vary", "*")]), ["*"]);
    }

    #[test]
    fn a_strong_etag_is_made_weak() {
        let mut resp = headers(&[("etag", "\"v1-abc\"")]);
        apply_headers(&mut resp, Coding::Zstd);
        assert_eq!(resp[ETAG], "W/\"v1-abc\"");

        let mut resp = headers(&[("etag", "W/\"v1\"")]);
        apply_headers(&mut resp, Coding::Gzip);
        assert_eq!(resp[ETAG], "W/\"v1\"", "a weak tag stays as it is");

        let mut resp = headers(&[("etag", "\"\"")]);
        apply_headers(&mut resp, Coding::Gzip);
        assert_eq!(resp[ETAG], "W/\"\"");
    }

    #[test]
    fn identity_changes_nothing() {
        let mut resp = headers(&[("content-length", "5000"), ("etag", "\"v1\"")]);
        let before = resp.clone();
        apply_headers(&mut resp, Coding::Identity);
        assert_eq!(resp, before);
    }
}
