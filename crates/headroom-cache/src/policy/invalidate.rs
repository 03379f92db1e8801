//! Invalidation by unsafe methods (RFC 9111 §4.4).

use http::header::{CONTENT_LOCATION, LOCATION};
use http::uri::Authority;
use http::{HeaderMap, Method, StatusCode, Uri};

/// §4.4: a non-error (2xx or 3xx) response to an unsafe method (anything but
/// GET, HEAD, OPTIONS and TRACE, unknown methods included) invalidates the
/// target URI, and the URIs in Location and Content-Location when they are on
/// the request's host (relative references, or absolute ones whose authority
/// equals `req_host`, default ports aside: §4.4 forbids other hosts, as that
/// would let one origin purge another's entries). Returns path-and-query
/// strings, the request's first, without duplicates; fragments are dropped and
/// relative paths resolved against the request's path (RFC 3986 §5.2).
/// Unparseable Location values are ignored. Allocates the returned strings.
pub fn invalidated(
    method: &Method,
    status: StatusCode,
    req_uri: &Uri,
    req_host: &str,
    resp: &HeaderMap,
) -> Vec<String> {
    let safe = matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    if safe || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let base = req_uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut out = vec![base.to_owned()];
    for name in [LOCATION, CONTENT_LOCATION] {
        let Some(reference) = resp.get(name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        if let Some(target) = same_origin_target(reference.trim(), base, req_uri, req_host) {
            if !out.contains(&target) {
                out.push(target);
            }
        }
    }
    out
}

/// The path-and-query a reference names on the request's host, if it does.
fn same_origin_target(
    reference: &str,
    base: &str,
    req_uri: &Uri,
    req_host: &str,
) -> Option<String> {
    let reference = reference.split('#').next().unwrap_or_default();
    if reference.is_empty() {
        return None;
    }
    if reference.starts_with("//") || has_scheme(reference) {
        let uri: Uri = if reference.starts_with("//") {
            // A network-path reference takes the request's scheme.
            let scheme = req_uri.scheme_str().unwrap_or("http");
            format!("{scheme}:{reference}").parse().ok()?
        } else {
            reference.parse().ok()?
        };
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        if !same_authority(uri.authority()?, req_host, &scheme) {
            return None;
        }
        return Some(
            uri.path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_owned(),
        );
    }
    let (base_path, _) = base.split_once('?').unwrap_or((base, ""));
    let merged = if let Some(query) = reference.strip_prefix('?') {
        format!("{base_path}?{query}")
    } else if reference.starts_with('/') {
        reference.to_owned()
    } else {
        let dir = base_path
            .rfind('/')
            .map_or("/", |i| base_path.get(..=i).unwrap_or("/"));
        format!("{dir}{reference}")
    };
    let (path, query) = match merged.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (merged.as_str(), None),
    };
    let mut target = remove_dot_segments(path);
    if let Some(q) = query {
        target.push('?');
        target.push_str(q);
    }
    // Must still be a valid request target (rejects spaces and the like).
    target.parse::<http::uri::PathAndQuery>().ok()?;
    Some(target)
}

/// RFC 3986 §3.1: `scheme ":"` with scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
fn has_scheme(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Same host (case-insensitive) and same port, a missing port being the
/// scheme's default.
fn same_authority(authority: &Authority, req_host: &str, scheme: &str) -> bool {
    let Ok(req) = req_host.parse::<Authority>() else {
        return false;
    };
    let default = if scheme == "https" { 443 } else { 80 };
    authority.host().eq_ignore_ascii_case(req.host())
        && authority.port_u16().unwrap_or(default) == req.port_u16().unwrap_or(default)
}

/// RFC 3986 §5.2.4, on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = path.split('/').skip(1).peekable();
    let mut trailing_slash = false;
    while let Some(seg) = parts.next() {
        let last = parts.peek().is_none();
        match seg {
            "." => trailing_slash = last,
            ".." => {
                segments.pop();
                trailing_slash = last;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn run(method: Method, status: u16, uri: &str, resp: &[(&str, &str)]) -> Vec<String> {
        let mut h = HeaderMap::new();
        for (k, v) in resp {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        invalidated(
            &method,
            StatusCode::from_u16(status).unwrap(),
            &uri.parse().unwrap(),
            "example.com",
            &h,
        )
    }

    // RFC 9111 §4.4: a non-error response to an unsafe method invalidates the target URI.
    #[test]
    fn a_successful_post_invalidates_its_target() {
        assert_eq!(
            run(Method::POST, 201, "/items?page=2", &[]),
            ["/items?page=2"]
        );
        assert_eq!(
            run(Method::DELETE, 204, "http://example.com/a", &[]),
            ["/a"]
        );
        assert_eq!(
            run(Method::from_bytes(b"PURGEX").unwrap(), 302, "/a", &[]),
            ["/a"]
        );
    }

    // RFC 9111 §4.4: safe methods and error responses invalidate nothing.
    #[test]
    fn safe_methods_and_errors_invalidate_nothing() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(run(m, 200, "/a", &[]).is_empty());
        }
        assert!(run(Method::POST, 404, "/a", &[]).is_empty());
        assert!(run(Method::PUT, 500, "/a", &[]).is_empty());
        assert!(run(Method::PUT, 100, "/a", &[]).is_empty());
    }

    // RFC 9111 §4.4: Location and Content-Location on the same host are invalidated too.
    #[test]
    fn same_host_location_and_content_location_are_invalidated() {
        let got = run(
            Method::POST,
            201,
            "/items",
            &[
                ("location", "/items/7"),
                (
                    "content-location",
                    "https://EXAMPLE.com:443/items/7?v=1#frag",
                ),
            ],
        );
        assert_eq!(got, ["/items", "/items/7", "/items/7?v=1"]);
    }

    // RFC 9111 §4.4: a URI on another host must not be invalidated.
    #[test]
    fn another_hosts_location_is_not_invalidated() {
        let got = run(
            Method::POST,
            201,
            "/items",
            &[
                ("location", "http://evil.example/items/7"),
                ("content-location", "//example.com:8080/x"),
            ],
        );
        assert_eq!(got, ["/items"]);
    }

    // RFC 3986 §5.2: relative references resolve against the request's path.
    #[test]
    fn relative_locations_are_resolved_against_the_request() {
        let got = run(
            Method::PUT,
            200,
            "/a/b/c?q=1",
            &[("location", "../d?x"), ("content-location", "?page=3")],
        );
        assert_eq!(got, ["/a/b/c?q=1", "/a/d?x", "/a/b/c?page=3"]);
        assert_eq!(
            run(Method::PUT, 200, "/a/b", &[("location", "./")]),
            ["/a/b", "/a/"]
        );
        assert_eq!(
            run(Method::PUT, 200, "/a", &[("location", "../../..")]),
            ["/a", "/"]
        );
    }

    // RFC 9111 §4.4: garbage in Location is ignored; duplicates are reported once.
    #[test]
    fn garbage_or_duplicate_locations_are_ignored() {
        let got = run(
            Method::POST,
            200,
            "/a",
            &[("location", "http://"), ("content-location", "/a")],
        );
        assert_eq!(got, ["/a"]);
        assert_eq!(
            run(
                Method::POST,
                200,
                "/a",
                &[("location", "mailto:x@example.com")]
            ),
            ["/a"]
        );
        assert_eq!(
            run(Method::POST, 200, "/a", &[("location", "/b c")]),
            ["/a"]
        );
        assert_eq!(
            run(Method::POST, 200, "/a", &[("location", "#only-a-fragment")]),
            ["/a"]
        );
    }
}
