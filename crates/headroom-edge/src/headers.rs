//! Header work of the hot path: hop-by-hop stripping, forwarding headers, the request id,
//! the host, path rewrites and hash keys.

use crate::balancer::hash_bytes;
use crate::snapshot::Route;
use headroom_config::HashKey;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Request;
use std::net::{IpAddr, SocketAddr};

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// 128 random bits as 32 hex digits. Marked never-indexed for HPACK (RFC 7541 §7.1.3): a
/// value unique to one request would only churn the h2 dynamic table — each response
/// inserted it and evicted an older entry (~2,500 instructions per h2 response, callgrind).
pub(crate) fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut buf = [0u8; 32];
    for b in buf.iter_mut().rev() {
        *b = HEX[(n & 15) as usize];
        n >>= 4;
    }
    let mut v = HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"));
    v.set_sensitive(true);
    v
}

/// A header field's name as an HTTP/1.1 peer sent it (any case). The names nearly every
/// message carries are compared here first: `HeaderName::from_bytes` lowercases each name
/// into a buffer, then matches it against all the standard names (~120 instructions a
/// field, callgrind); a length and a case-insensitive compare are a third of that.
pub(crate) fn header_name(raw: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    let is = |name: &[u8]| raw.eq_ignore_ascii_case(name);
    Ok(match raw.len() {
        4 if is(b"host") => header::HOST,
        4 if is(b"date") => header::DATE,
        6 if is(b"accept") => header::ACCEPT,
        6 if is(b"server") => header::SERVER,
        10 if is(b"connection") => header::CONNECTION,
        10 if is(b"user-agent") => header::USER_AGENT,
        12 if is(b"content-type") => header::CONTENT_TYPE,
        14 if is(b"content-length") => header::CONTENT_LENGTH,
        _ => return HeaderName::from_bytes(raw),
    })
}

/// The request's host without port: from the URI (HTTP/2, absolute form) or the Host header.
pub(crate) fn host_of<B>(req: &Request<B>) -> Option<&str> {
    host_from(req.uri(), req.headers().get(header::HOST))
}

/// [`host_of`] from a request's URI and `Host` header.
pub(crate) fn host_from<'a>(uri: &'a http::Uri, host: Option<&'a HeaderValue>) -> Option<&'a str> {
    let raw = match uri.authority() {
        Some(a) => a.as_str(),
        None => host?.to_str().ok()?,
    };
    // Byte searches, not `str` patterns (~400 instructions a request less); the cuts fall
    // beside ASCII bytes, so they are char boundaries.
    let b = raw.as_bytes();
    let raw = &raw[b.iter().rposition(|&c| c == b'@').map_or(0, |i| i + 1)..];
    let b = raw.as_bytes();
    let end = if b.first() == Some(&b'[') {
        b.iter().position(|&c| c == b']').map_or(b.len(), |i| i + 1)
    } else {
        b.iter().position(|&c| c == b':').unwrap_or(b.len())
    };
    Some(&raw[..end])
}

/// The hop-by-hop header names every message loses, whether `Connection` lists them or not.
/// Compared as strings (a length check rules most names out at once): cheaper than eight
/// `HeaderName` comparisons, two of them against names the http crate does not know.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
            | "keep-alive"
            | "proxy-connection"
    )
}

/// The protocol a request asks to switch to (`Connection: upgrade` with an `Upgrade`
/// header, RFC 9110 §7.8), if any.
pub(crate) fn upgrade_requested(h: &HeaderMap) -> Option<HeaderValue> {
    let listed = h.get(header::CONNECTION)?;
    if !crate::h1::has_token(listed.as_bytes(), b"upgrade") {
        return None;
    }
    h.get(header::UPGRADE).cloned()
}

/// Headers that describe one hop only (RFC 9110 §7.6.1): never forwarded.
/// One pass over the names finds them. Most messages carry none, or only a `Connection`
/// that lists no header (`keep-alive`, `close`): those take the short ways out, which matter
/// as this runs twice per proxied request (callgrind: removing absent names was 9% of a
/// request's instructions once; parsing a plain `keep-alive` 2%).
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    let (mut n, mut besides_connection) = (0, false);
    for name in h.keys().filter(|k| hop_by_hop(k)) {
        n += 1;
        besides_connection |= *name != header::CONNECTION;
    }
    if n == 0 {
        return;
    }
    let listed: Vec<HeaderName> = match h.get(header::CONNECTION) {
        Some(v) if lists_other_headers(v) => v
            .to_str()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .filter(|n| !hop_by_hop(n) && h.contains_key(n))
            .collect(),
        _ => Vec::new(),
    };
    if besides_connection {
        let all: Vec<HeaderName> = h.keys().filter(|k| hop_by_hop(k)).cloned().collect();
        for name in all {
            h.remove(name);
        }
    } else {
        h.remove(header::CONNECTION);
    }
    for name in listed {
        h.remove(name);
    }
}

/// False for the usual single `Connection` tokens, which name no header.
pub(crate) fn lists_other_headers(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !(b.eq_ignore_ascii_case(b"keep-alive")
        || b.eq_ignore_ascii_case(b"close")
        || b.eq_ignore_ascii_case(b"upgrade"))
}

pub(crate) fn rewrite_path(route: &Route, path: &str) -> Option<String> {
    let prefix = route.strip_prefix.as_deref()?;
    let rest = path.strip_prefix(prefix)?;
    let new_prefix = route.rewrite_prefix.as_deref().unwrap_or("");
    let mut out = String::with_capacity(new_prefix.len() + rest.len() + 1);
    out.push_str(new_prefix.trim_end_matches('/'));
    if !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    Some(out)
}

/// The request's hash key for `balance = "hash"`: XXH3-64 (seed 0, see
/// [`hash_bytes`]) of a header's value, a cookie's value (the bytes after `NAME=`), or the
/// client IP's octets (4 for IPv4, 16 for IPv6; an IPv4-mapped IPv6 address, as a dual-stack
/// listener sees IPv4 clients, counts as its IPv4 address). None when the header or cookie
/// is absent (the balancer then picks at random).
pub(crate) fn hash_key(key: &HashKey, headers: &HeaderMap, client: SocketAddr) -> Option<u64> {
    match key {
        HashKey::ClientIp => Some(match client.ip().to_canonical() {
            IpAddr::V4(ip) => hash_bytes(&ip.octets()),
            IpAddr::V6(ip) => hash_bytes(&ip.octets()),
        }),
        HashKey::Header(name) => headers.get(name.as_str()).map(|v| hash_bytes(v.as_bytes())),
        HashKey::Cookie(name) => headers.get_all(header::COOKIE).iter().find_map(|v| {
            v.to_str().ok()?.split(';').find_map(|kv| {
                let (k, val) = kv.trim().split_once('=')?;
                (k == name).then(|| hash_bytes(val.as_bytes()))
            })
        }),
    }
}

pub(crate) fn host_for_uri(parts: &http::request::Parts) -> String {
    parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Uri;

    #[test]
    fn host_is_taken_without_port() {
        let req = Request::builder()
            .uri("/x")
            .header("host", "Example.com:8080")
            .body(())
            .unwrap();
        assert_eq!(host_of(&req), Some("Example.com"));
        let req = Request::builder()
            .uri("https://[::1]:8443/x")
            .body(())
            .unwrap();
        assert_eq!(host_of(&req), Some("[::1]"));
        let root = Uri::from_static("/");
        let host = |h: &'static str| {
            host_from(&root, Some(&HeaderValue::from_static(h))).map(str::to_owned)
        };
        assert_eq!(host("example.com").as_deref(), Some("example.com"));
        assert_eq!(
            host("user:pw@example.com:81").as_deref(),
            Some("example.com")
        );
        assert_eq!(host("a@b@[::1]:81").as_deref(), Some("[::1]"));
        assert_eq!(host("[::1").as_deref(), Some("[::1"));
        assert_eq!(host(":81").as_deref(), Some(""));
        assert_eq!(host_from(&Uri::from_static("/"), None), None);
    }

    /// An upgrade is asked for only when `Connection` lists `upgrade` (in any case, among
    /// other tokens) and an `Upgrade` header names the protocol.
    #[test]
    fn upgrade_is_requested_only_when_connection_lists_it() {
        let map = |conn: &'static str, up: Option<&'static str>| {
            let mut h = HeaderMap::new();
            h.insert(header::CONNECTION, HeaderValue::from_static(conn));
            if let Some(up) = up {
                h.insert(header::UPGRADE, HeaderValue::from_static(up));
            }
            h
        };
        let ws = Some(HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_requested(&map("Upgrade", Some("websocket"))), ws);
        assert_eq!(
            upgrade_requested(&map("keep-alive, UPGRADE ", Some("websocket"))),
            ws
        );
        assert_eq!(
            upgrade_requested(&map("keep-alive", Some("websocket"))),
            None
        );
        assert_eq!(upgrade_requested(&map("upgraded", Some("websocket"))), None);
        assert_eq!(upgrade_requested(&map("upgrade", None)), None);
        assert_eq!(upgrade_requested(&HeaderMap::new()), None);
    }

    /// The fast path gives what `HeaderName::from_bytes` gives, in any case, and leaves
    /// every other name (and every invalid one) to it.
    #[test]
    fn header_names_match_the_http_crate() {
        for raw in [
            "Host",
            "DATE",
            "accept",
            "Server",
            "Connection",
            "user-AGENT",
            "Content-Type",
            "content-length",
            "Content-Lengthx",
            "x-date",
            "Hos",
            "Accept-Encoding",
            "X-Request-Id",
            "bad name",
            "",
            "host\0",
            "d@te",
        ] {
            let want = HeaderName::from_bytes(raw.as_bytes()).ok();
            assert_eq!(header_name(raw.as_bytes()).ok(), want, "{raw:?}");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));

        let mut plain = HeaderMap::new();
        plain.insert("x-a", HeaderValue::from_static("1"));
        plain.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 2);

        // Only a Connection header: the usual token, then one naming another header.
        for (value, left) in [("Keep-Alive", 2), ("x-a", 1)] {
            let mut h = plain.clone();
            h.insert("connection", HeaderValue::from_static(value));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), left, "{value}: {h:?}");
            assert!(!h.contains_key("connection") && h.contains_key("accept"));
        }
    }

    #[test]
    fn cookie_hash_key_reads_the_named_cookie() {
        let mut h = HeaderMap::new();
        h.insert("cookie", HeaderValue::from_static("a=1; session=abc; b=2"));
        let ip: SocketAddr = "1.2.3.4:5".parse().unwrap();
        let k = hash_key(&HashKey::Cookie("session".into()), &h, ip);
        assert_eq!(k, Some(hash_bytes(b"abc")));
        assert_eq!(hash_key(&HashKey::Cookie("none".into()), &h, ip), None);
    }

    /// Fixed vectors from the reference C library (libxxhash, `XXH3_64bits`): what is
    /// hashed for each kind of key is part of the contract between instances.
    #[test]
    fn hash_keys_are_xxh3_of_specified_bytes() {
        let h = HeaderMap::new();
        let key = |ip: &str| hash_key(&HashKey::ClientIp, &h, ip.parse().unwrap());
        assert_eq!(key("1.2.3.4:5"), Some(0x988b7b9033ac4622));
        assert_eq!(key("[::ffff:1.2.3.4]:5"), Some(0x988b7b9033ac4622));
        assert_eq!(key("[2001:db8::1]:5"), Some(0x275c8fa58c2d19a0));
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("user-42"));
        h.insert("cookie", HeaderValue::from_static("session=user-42"));
        let ip: SocketAddr = "1.2.3.4:5".parse().unwrap();
        for k in [
            HashKey::Header("x-user".into()),
            HashKey::Cookie("session".into()),
        ] {
            assert_eq!(hash_key(&k, &h, ip), Some(0x50fe4b21cf7b09cd), "{k:?}");
        }
    }
}
