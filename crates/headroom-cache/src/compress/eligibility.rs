//! Which responses are compressed: the media types worth it and the responses it may touch.

use http::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::list_elements;

/// The smallest body compressed by default: 1 KiB. Below it the coding's header and trailer
/// (18 bytes for gzip) and a round of CPU buy little, and the body fits a packet or two anyway.
pub const DEFAULT_MIN_SIZE: u64 = 1024;

/// `application/<subtype>` types that compress well and carry no suffix saying so.
const APPLICATION_SUBTYPES: &[&str] = &[
    "json",
    "javascript",
    "x-javascript",
    "ecmascript",
    "xml",
    "wasm",
    "vnd.ms-fontobject",
    "x-font-ttf",
    "x-font-otf",
    "font-sfnt",
    "yaml",
    "x-yaml",
    "toml",
];

/// Whether a body of this `Content-Type` is worth compressing: text and text-like formats
/// (`text/*`, JSON and `+json`, JavaScript, XML and `+xml` including SVG, WebAssembly, TrueType
/// and OpenType fonts, the EOT font, YAML, TOML). Not images, video, audio, archives or
/// woff/woff2 fonts: they are compressed already and only get bigger.
///
/// Exception: `text/event-stream` is not compressed. An event stream must reach the client
/// event by event, and an encoder holds output back until its block fills; compressing it
/// would delay events by up to a block's worth of them.
///
/// Parameters (`; charset=utf-8`) and case are ignored. No `Content-Type`, or one that is not
/// `type/subtype`, is `false`: the edge does not guess. Cost: a scan of the value, no allocation.
pub fn compressible(content_type: Option<&HeaderValue>) -> bool {
    let Some(value) = content_type else {
        return false;
    };
    let essence = value
        .as_bytes()
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    let Ok(essence) = std::str::from_utf8(essence.trim_ascii()) else {
        return false;
    };
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let ends_with = |s: &str, suffix: &str| {
        s.len() > suffix.len()
            && s.is_char_boundary(s.len() - suffix.len())
            && is(&s[s.len() - suffix.len()..], suffix)
    };
    if subtype.is_empty() || subtype.contains(|c: char| c.is_ascii_whitespace() || c == '/') {
        return false;
    }
    if is(kind, "text") {
        return !is(subtype, "event-stream");
    }
    if is(kind, "application") {
        return APPLICATION_SUBTYPES.iter().any(|s| is(subtype, s))
            || ends_with(subtype, "+json")
            || ends_with(subtype, "+xml");
    }
    if is(kind, "image") {
        // SVG is XML; the other image formats (and image/x-icon, which may embed PNG) are not
        // worth the CPU.
        return is(subtype, "svg+xml");
    }
    if is(kind, "font") {
        // woff and woff2 are compressed already.
        return is(subtype, "ttf") || is(subtype, "otf") || is(subtype, "collection");
    }
    false
}

/// Whether the edge may compress this response at all (the coding is negotiated after).
///
/// Yes only when all of these hold:
/// - the request is not `HEAD` (no body to compress; a HEAD's headers would promise a
///   Content-Encoding the GET may not get),
/// - the status is 200, 203, 403, 404 or 410: full representations, and the error pages
///   nginx also compresses; never 206 (a range of the identity body: compressing it would break
///   the range arithmetic), 204 or 304 (no body), 1xx;
/// - no `Content-Range` (a range is never compressed, whatever its status),
/// - no `Content-Encoding` other than `identity`: an upstream's encoded response passes
///   through untouched (never compressed twice),
/// - no `Cache-Control: no-transform` (RFC 9111 §5.2.2.6: an intermediary must not change the
///   content),
/// - a [`compressible`] `Content-Type`,
/// - a `Content-Length`, when present, of at least `min_size` ([`DEFAULT_MIN_SIZE`] by
///   default); no `Content-Length` (a streamed body) counts as large enough, and an unreadable
///   one as "do not touch".
///
/// Cost: a few header lookups and scans, no allocation.
pub fn should_compress(
    method: &Method,
    status: StatusCode,
    resp: &HeaderMap,
    min_size: u64,
) -> bool {
    if method == Method::HEAD {
        return false;
    }
    if !matches!(status.as_u16(), 200 | 203 | 403 | 404 | 410) {
        return false;
    }
    if resp.contains_key(CONTENT_RANGE) {
        return false;
    }
    let encoded = list_elements(resp.get_all(CONTENT_ENCODING).iter())
        .any(|coding| !coding.eq_ignore_ascii_case(b"identity"));
    if encoded {
        return false;
    }
    if no_transform(resp) {
        return false;
    }
    if !compressible(resp.get(CONTENT_TYPE)) {
        return false;
    }
    match resp.get(CONTENT_LENGTH) {
        None => true,
        Some(length) => std::str::from_utf8(length.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .is_some_and(|length| length >= min_size),
    }
}

/// Whether any `Cache-Control` line carries the `no-transform` directive.
fn no_transform(resp: &HeaderMap) -> bool {
    list_elements(resp.get_all(CACHE_CONTROL).iter()).any(|directive| {
        let name = directive.split(|&b| b == b'=').next().unwrap_or_default();
        name.trim_ascii().eq_ignore_ascii_case(b"no-transform")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(value: &str) -> bool {
        compressible(Some(&HeaderValue::from_str(value).unwrap()))
    }

    #[test]
    fn compressible_types_table() {
        let yes = [
            "text/html",
            "text/html; charset=utf-8",
            "TEXT/HTML;CHARSET=UTF-8",
            "text/css",
            "text/plain",
            "text/csv",
            "text/javascript",
            "text/xml",
            "application/json",
            "Application/JSON ; charset=utf-8",
            "application/ld+json",
            "application/manifest+json",
            "application/problem+json",
            "application/vnd.api+json",
            "application/javascript",
            "application/x-javascript",
            "application/xml",
            "application/rss+xml",
            "application/atom+xml",
            "application/xhtml+xml",
            "image/svg+xml",
            "application/wasm",
            "font/ttf",
            "font/otf",
            "application/vnd.ms-fontobject",
            "application/yaml",
        ];
        let no = [
            "image/png",
            "image/jpeg",
            "image/webp",
            "image/avif",
            "image/gif",
            "video/mp4",
            "audio/mpeg",
            "application/zip",
            "application/gzip",
            "application/x-gzip",
            "application/octet-stream",
            "application/pdf",
            "font/woff",
            "font/woff2",
            "application/font-woff",
            "text/event-stream",
            "text/event-stream; charset=utf-8",
            "application/+json", // no subtype before the suffix
            "json",
            "text/",
            "text/html/extra",
            "",
            ";charset=utf-8",
        ];
        for t in yes {
            assert!(ct(t), "{t:?} should be compressible");
        }
        for t in no {
            assert!(!ct(t), "{t:?} should not be compressible");
        }
        assert!(!compressible(None));
        let latin1 = HeaderValue::from_bytes(b"text/h\xe9ml").unwrap();
        assert!(!compressible(Some(&latin1)));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for &(name, value) in pairs {
            map.append(name, HeaderValue::from_static(value));
        }
        map
    }

    fn html(extra: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = headers(&[("content-type", "text/html; charset=utf-8")]);
        map.extend(headers(extra));
        map
    }

    fn get_ok(resp: &HeaderMap) -> bool {
        should_compress(&Method::GET, StatusCode::OK, resp, DEFAULT_MIN_SIZE)
    }

    #[test]
    fn a_large_or_streamed_text_response_is_compressed() {
        assert!(get_ok(&html(&[("content-length", "1024")])));
        assert!(get_ok(&html(&[("content-length", "5000000")])));
        assert!(get_ok(&html(&[])), "no Content-Length: a streamed body");
        assert!(should_compress(
            &Method::POST,
            StatusCode::OK,
            &html(&[]),
            1024
        ));
        assert!(get_ok(&html(&[("content-encoding", "identity")])));
    }

    #[test]
    fn a_small_body_is_not_compressed() {
        assert!(!get_ok(&html(&[("content-length", "1023")])));
        assert!(!get_ok(&html(&[("content-length", "0")])));
        let resp = html(&[("content-length", "100")]);
        assert!(should_compress(&Method::GET, StatusCode::OK, &resp, 100));
        assert!(!should_compress(&Method::GET, StatusCode::OK, &resp, 101));
    }

    #[test]
    fn an_unreadable_content_length_is_left_alone() {
        assert!(!get_ok(&html(&[("content-length", "lots")])));
        assert!(!get_ok(&html(&[("content-length", "-5000")])));
    }

    #[test]
    fn an_encoded_response_passes_through() {
        assert!(!get_ok(&html(&[("content-encoding", "gzip")])));
        assert!(!get_ok(&html(&[("content-encoding", "br")])));
        assert!(!get_ok(&html(&[("content-encoding", "identity, gzip")])));
        assert!(!get_ok(&html(&[
            ("content-encoding", "identity"),
            ("content-encoding", "zstd")
        ])));
        assert!(!get_ok(&html(&[("content-encoding", "x-custom")])));
    }

    #[test]
    fn no_transform_forbids_compression() {
        assert!(!get_ok(&html(&[("cache-control", "no-transform")])));
        assert!(!get_ok(&html(&[(
            "cache-control",
            "public, max-age=60, No-Transform"
        )])));
        assert!(!get_ok(&html(&[
            ("cache-control", "max-age=60"),
            ("cache-control", "no-transform")
        ])));
        assert!(get_ok(&html(&[("cache-control", "public, max-age=60")])));
    }

    #[test]
    fn only_full_representations_and_error_pages_are_compressed() {
        let resp = html(&[]);
        for status in [200, 203, 403, 404, 410] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(
                should_compress(&Method::GET, status, &resp, 1024),
                "{status}"
            );
        }
        for status in [100, 101, 201, 204, 206, 301, 302, 304, 500, 502, 503] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(
                !should_compress(&Method::GET, status, &resp, 1024),
                "{status}"
            );
        }
        let range = html(&[("content-range", "bytes 0-99/5000")]);
        assert!(!get_ok(&range), "a range is never compressed");
    }

    #[test]
    fn a_head_response_is_not_compressed() {
        let resp = html(&[("content-length", "5000")]);
        assert!(!should_compress(&Method::HEAD, StatusCode::OK, &resp, 1024));
    }

    #[test]
    fn an_incompressible_or_untyped_response_is_not_compressed() {
        assert!(!get_ok(&headers(&[("content-type", "image/png")])));
        assert!(!get_ok(&headers(&[("content-length", "5000")])));
    }
}
