//! What a run sends: the target origin and the mix of requests, each serialized once before
//! the run so the hot path only copies bytes.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Uri};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Where the connections go: one origin per run (a scenario may mix paths, not hosts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// `host[:port]` as the Host header and `:authority` carry it.
    pub authority: String,
}

impl Target {
    /// `scheme://authority`, for messages and reports.
    pub fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.authority
        )
    }
}

/// One request as the user described it, before serialization.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    pub weight: u32,
}

/// A request ready to send: HTTP/1.1 bytes, and the parts HTTP/2 needs.
#[derive(Debug)]
pub struct Prepared {
    /// The whole HTTP/1.1 request: head and body.
    pub h1: Bytes,
    pub method: Method,
    pub uri: Uri,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// A HEAD request: its response has no body whatever its headers say.
    pub head: bool,
    /// The request says `connection: close`: its connection is not used again.
    pub close: bool,
}

/// The requests of a run and how often each is sent. Picking is a fastrand draw over the
/// cumulative weights: no lock, no allocation.
#[derive(Debug)]
pub struct Mix {
    requests: Vec<Prepared>,
    cumulative: Vec<u32>,
}

impl Mix {
    pub fn new(target: &Target, specs: &[RequestSpec], keepalive: bool) -> Result<Mix, String> {
        if specs.is_empty() {
            return Err("no request to send".into());
        }
        let mut total = 0u32;
        let mut cumulative = Vec::with_capacity(specs.len());
        let mut requests = Vec::with_capacity(specs.len());
        for s in specs {
            total = total
                .checked_add(s.weight)
                .ok_or("the weights add up to more than 4294967295")?;
            cumulative.push(total);
            requests.push(prepare(target, s, keepalive)?);
        }
        if total == 0 {
            return Err("every request has weight 0: nothing would be sent".into());
        }
        Ok(Mix {
            requests,
            cumulative,
        })
    }

    pub fn pick(&self) -> &Prepared {
        if self.requests.len() == 1 {
            return &self.requests[0];
        }
        let total = *self.cumulative.last().unwrap_or(&1);
        let draw = fastrand::u32(0..total);
        let i = self.cumulative.partition_point(|&c| c <= draw);
        &self.requests[i.min(self.requests.len() - 1)]
    }

    pub fn len(&self) -> usize {
        self.requests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }
}

/// Headers headroom bench writes itself: a user's value would break the framing or the
/// connection handling it measures.
const OWN_HEADERS: [&str; 4] = ["content-length", "transfer-encoding", "upgrade", "te"];

fn prepare(target: &Target, s: &RequestSpec, keepalive: bool) -> Result<Prepared, String> {
    let mut head = format!("{} {} HTTP/1.1\r\n", s.method, s.path);
    let has = |name: &str| s.headers.iter().any(|(n, _)| n.as_str() == name);
    if !has("host") {
        head.push_str(&format!("host: {}\r\n", target.authority));
    }
    if !has("user-agent") {
        head.push_str(concat!(
            "user-agent: headroom-bench/",
            env!("CARGO_PKG_VERSION"),
            "\r\n"
        ));
    }
    let mut h2_headers = http::HeaderMap::new();
    for (name, value) in &s.headers {
        if OWN_HEADERS.contains(&name.as_str()) {
            return Err(format!(
                "header {name}: headroom bench sets it itself (from the body and the protocol)"
            ));
        }
        let v = value
            .to_str()
            .map_err(|_| format!("header {name}: value is not visible ASCII"))?;
        head.push_str(&format!("{name}: {v}\r\n"));
        if !matches!(name.as_str(), "host" | "connection" | "keep-alive") {
            h2_headers.append(name.clone(), value.clone());
        }
    }
    let sends_body =
        !s.body.is_empty() || matches!(s.method, Method::POST | Method::PUT | Method::PATCH);
    if sends_body {
        head.push_str(&format!("content-length: {}\r\n", s.body.len()));
    }
    if !keepalive && !has("connection") {
        head.push_str("connection: close\r\n");
    }
    let close = !keepalive
        || s.headers.iter().any(|(n, v)| {
            n == http::header::CONNECTION && v.as_bytes().eq_ignore_ascii_case(b"close")
        });
    head.push_str("\r\n");
    let mut h1 = head.into_bytes();
    h1.extend_from_slice(&s.body);
    let uri = format!("{}{}", target.origin(), s.path)
        .parse::<Uri>()
        .map_err(|e| format!("{}: {e}", s.path))?;
    Ok(Prepared {
        h1: Bytes::from(h1),
        method: s.method.clone(),
        uri,
        headers: h2_headers,
        body: s.body.clone(),
        head: s.method == Method::HEAD,
        close,
    })
}

/// Splits a URL into the origin to connect to and the path to request.
pub fn parse_url(url: &str) -> Result<(Target, String), String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e} (expected http://host[:port]/path)"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => {
            return Err(format!(
                "{url:?}: scheme {other:?} is not supported (use http:// or https://)"
            ))
        }
        None => {
            return Err(format!(
                "{url:?} has no scheme (expected http://host[:port]/path)"
            ))
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?} has no host (expected http://host[:port]/path)"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{url:?}: credentials in the URL are not supported (send -H 'authorization: ...')"
        ));
    }
    let host = authority.host().trim_matches(['[', ']']).to_string();
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    let target = Target {
        tls,
        host,
        port,
        authority: authority.as_str().to_string(),
    };
    Ok((target, path))
}

/// `Name: value`, as curl's and wrk's `-H` take it.
pub fn parse_header(h: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| format!("header {h:?}: expected \"Name: value\""))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("header {h:?}: {:?} is not a valid header name", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("header {h:?}: the value has a character a header cannot carry"))?;
    Ok((name, value))
}

pub fn parse_method(m: &str) -> Result<Method, String> {
    Method::from_bytes(m.as_bytes()).map_err(|_| format!("{m:?} is not an HTTP method"))
}

/// A scenario file: a weighted mix of requests to one origin.
///
/// ```toml
/// target = "http://127.0.0.1:8080"     # origin for the paths below
/// [[request]]
/// path = "/products"
/// weight = 9
/// [[request]]
/// path = "/orders"
/// method = "POST"
/// headers = { content-type = "application/json" }
/// body = '{"sku": 42}'                 # or body_file = "order.json", relative to this file
/// ```
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    target: toml::Spanned<String>,
    #[serde(default)]
    request: Vec<ScenarioRequest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioRequest {
    path: toml::Spanned<String>,
    #[serde(default = "one")]
    weight: u32,
    method: Option<toml::Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, toml::Spanned<String>>,
    body: Option<String>,
    body_file: Option<toml::Spanned<String>>,
}

fn one() -> u32 {
    1
}

/// Reads a scenario file; errors say `file:line: what is wrong`.
pub fn load_scenario(path: &Path) -> Result<(Target, Vec<RequestSpec>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the scenario: {e}", path.display()))?;
    let line = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let at = |offset: usize, msg: String| format!("{}:{}: {msg}", path.display(), line(offset));
    let file: ScenarioFile = toml::from_str(&text).map_err(|e| match e.span() {
        Some(span) => at(span.start, e.message().to_string()),
        None => format!("{}: {}", path.display(), e.message()),
    })?;
    let (target, base) = parse_url(file.target.get_ref())
        .map_err(|e| at(file.target.span().start, format!("target: {e}")))?;
    if base != "/" {
        return Err(at(
            file.target.span().start,
            format!("target: give the origin only (scheme://host:port), not the path {base:?}"),
        ));
    }
    if file.request.is_empty() {
        return Err(format!(
            "{}: no [[request]] (expected at least one, with a path)",
            path.display()
        ));
    }
    let mut specs = Vec::new();
    for r in file.request {
        let p = r.path.get_ref();
        if !p.starts_with('/') {
            return Err(at(
                r.path.span().start,
                format!("path: {p:?} must start with /"),
            ));
        }
        p.parse::<http::uri::PathAndQuery>()
            .map_err(|e| at(r.path.span().start, format!("path: {p:?}: {e}")))?;
        let method = match &r.method {
            Some(m) => {
                parse_method(m.get_ref()).map_err(|e| at(m.span().start, format!("method: {e}")))?
            }
            None => Method::GET,
        };
        let mut headers = Vec::new();
        for (name, value) in &r.headers {
            let h = parse_header(&format!("{name}: {}", value.get_ref()))
                .map_err(|e| at(value.span().start, e))?;
            headers.push(h);
        }
        let body = match (&r.body, &r.body_file) {
            (Some(_), Some(f)) => {
                return Err(at(
                    f.span().start,
                    "give body or body_file, not both".into(),
                ))
            }
            (Some(b), None) => Bytes::from(b.clone()),
            (None, Some(f)) => {
                let file = path.parent().unwrap_or(Path::new(".")).join(f.get_ref());
                Bytes::from(std::fs::read(&file).map_err(|e| {
                    at(
                        f.span().start,
                        format!("body_file: {}: {e}", file.display()),
                    )
                })?)
            }
            (None, None) => Bytes::new(),
        };
        specs.push(RequestSpec {
            method,
            path: p.clone(),
            headers,
            body,
            weight: r.weight,
        });
    }
    Ok((target, specs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str, weight: u32) -> RequestSpec {
        RequestSpec {
            method: Method::GET,
            path: path.into(),
            headers: vec![],
            body: Bytes::new(),
            weight,
        }
    }

    #[test]
    fn url_gives_origin_port_and_path() {
        let (t, p) = parse_url("https://example.com/a?b=1").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, p.as_str()),
            (true, "example.com", 443, "/a?b=1")
        );
        let (t, p) = parse_url("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (t.port, t.authority.as_str(), p.as_str()),
            (8080, "127.0.0.1:8080", "/")
        );
        let (t, _) = parse_url("http://[::1]:9/").unwrap();
        assert_eq!(t.host, "::1");
    }

    #[test]
    fn malformed_urls_are_refused_with_the_reason() {
        for (url, says) in [
            ("localhost:8080", "scheme"),
            ("ftp://x/", "not supported"),
            ("http://", "not a URL"),
            ("http://u:p@x/", "credentials"),
            ("http://a b/", "not a URL"),
        ] {
            let e = parse_url(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn headers_parse_and_bad_ones_say_why() {
        let (n, v) = parse_header("X-Api-Key:  abc ").unwrap();
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("x-api-key", "abc"));
        assert!(parse_header("no colon")
            .unwrap_err()
            .contains("Name: value"));
        assert!(parse_header("bad name: x")
            .unwrap_err()
            .contains("not a valid header name"));
        assert!(parse_header("x: a\nb")
            .unwrap_err()
            .contains("cannot carry"));
    }

    #[test]
    fn request_bytes_carry_host_length_and_close() {
        let (t, _) = parse_url("http://h:81/").unwrap();
        let mut s = spec("/p", 1);
        s.method = Method::POST;
        s.body = Bytes::from_static(b"abc");
        let p = prepare(&t, &s, false).unwrap();
        let text = std::str::from_utf8(&p.h1).unwrap();
        assert!(
            text.starts_with("POST /p HTTP/1.1\r\nhost: h:81\r\n"),
            "{text}"
        );
        assert!(text.contains("content-length: 3\r\n"));
        assert!(text.ends_with("connection: close\r\n\r\nabc"));
        s.headers.push(parse_header("content-length: 9").unwrap());
        assert!(prepare(&t, &s, true)
            .unwrap_err()
            .contains("sets it itself"));
    }

    #[test]
    fn mix_follows_the_weights() {
        let (t, _) = parse_url("http://h/").unwrap();
        let mix = Mix::new(&t, &[spec("/a", 9), spec("/b", 1), spec("/never", 0)], true).unwrap();
        fastrand::seed(7);
        let a = (0..10_000)
            .filter(|_| mix.pick().uri.path() == "/a")
            .count();
        let never = (0..10_000)
            .filter(|_| mix.pick().uri.path() == "/never")
            .count();
        assert!((8_700..9_300).contains(&a), "{a}");
        assert_eq!(never, 0);
        assert!(Mix::new(&t, &[spec("/z", 0)], true).is_err());
    }

    #[test]
    fn scenario_errors_name_the_line() {
        let dir = std::env::temp_dir().join(format!("hb-scn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s.toml");
        std::fs::write(&f, "target = \"http://h:1\"\n[[request]]\npath = \"/a\"\n[[request]]\npath = \"/b\"\nmethod = \"G T\"\n").unwrap();
        let e = load_scenario(&f).unwrap_err();
        assert!(
            e.ends_with("s.toml:6: method: \"G T\" is not an HTTP method"),
            "{e}"
        );
        std::fs::write(&f, "target = \"http://h:1\"\n[[request]]\npath = \"/a\"\nweight = 3\nheaders = { x-k = \"v\" }\n").unwrap();
        let (t, specs) = load_scenario(&f).unwrap();
        assert_eq!((t.port, specs[0].weight, specs[0].headers.len()), (1, 3, 1));
        std::fs::write(&f, "target = \"http://h:1\"\n[[request]]\npth = \"/a\"\n").unwrap();
        let e = load_scenario(&f).unwrap_err();
        assert!(e.contains("s.toml:3:") && e.contains("pth"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
