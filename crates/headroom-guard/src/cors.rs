//! CORS (the Fetch standard's CORS protocol) at the edge: preflights answered here, without
//! the upstream, and the `Access-Control-Allow-*` fields added to the responses of allowed
//! origins. Browsers enforce the result; the rules that make them accept it are kept here:
//! with credentials, the origin is echoed (never `*`), and `*` never stands for headers or
//! methods.

use headroom_config::guard::{CorsConfig, OriginPattern};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method};

/// A route's CORS policy, compiled.
pub struct Cors {
    origins: Box<[OriginPattern]>,
    any_origin: bool,
    methods: Box<[Method]>,
    /// Lower-case; `["*"]` (without credentials) allows any.
    headers: Box<[Box<str>]>,
    any_header: bool,
    credentials: bool,
    allow_methods: HeaderValue,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
}

/// What a request gets from the policy.
pub enum CorsVerdict {
    /// Not a CORS request (no `Origin`), or an origin the policy does not allow on an
    /// actual request: go on, no fields added (the browser will refuse to read it).
    None,
    /// A preflight answered here: 204 with these fields.
    Preflight(Vec<(HeaderName, HeaderValue)>),
    /// A preflight the policy refuses (origin, method or a header not allowed): 403.
    Refused(&'static str),
    /// An actual request from an allowed origin: go on, and add these to the response.
    Actual(Vec<(HeaderName, HeaderValue)>),
}

impl Cors {
    pub(crate) fn new(cfg: &CorsConfig) -> Cors {
        let any_origin = cfg.origins.iter().any(|o| matches!(o, OriginPattern::Any));
        let any_header = cfg.headers.iter().any(|h| h == "*") && !cfg.credentials;
        let join = |v: &[String]| HeaderValue::from_str(&v.join(", ")).ok();
        Cors {
            origins: cfg.origins.clone().into(),
            any_origin,
            methods: cfg
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            headers: cfg.headers.iter().map(|h| h.as_str().into()).collect(),
            any_header,
            credentials: cfg.credentials,
            allow_methods: join(&cfg.methods).unwrap_or(HeaderValue::from_static("GET")),
            expose: (!cfg.expose.is_empty())
                .then(|| join(&cfg.expose))
                .flatten(),
            max_age: cfg.max_age.map(|d| HeaderValue::from(d.as_secs())),
        }
    }

    fn allows_origin(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|p| p.matches(origin))
    }

    /// `Access-Control-Allow-Origin` (and `-Credentials`) for an allowed `origin`.
    fn origin_fields(&self, origin: &HeaderValue, out: &mut Vec<(HeaderName, HeaderValue)>) {
        let value = if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        };
        out.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, value));
        if self.credentials {
            out.push((
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
    }

    /// Decides a request by its method and headers.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> CorsVerdict {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return CorsVerdict::None;
        };
        let origin_text = origin.to_str().unwrap_or("");
        let requested = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD);
        let preflight = method == Method::OPTIONS && requested.is_some();
        if !self.allows_origin(origin_text) {
            return if preflight {
                CorsVerdict::Refused("origin not allowed")
            } else {
                CorsVerdict::None
            };
        }
        let mut out = Vec::with_capacity(6);
        if !preflight {
            self.origin_fields(origin, &mut out);
            if let Some(e) = &self.expose {
                out.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone()));
            }
            out.push((header::VARY, HeaderValue::from_static("Origin")));
            return CorsVerdict::Actual(out);
        }
        let method_ok = requested
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .is_some_and(|m| self.methods.contains(&m));
        if !method_ok {
            return CorsVerdict::Refused("method not allowed");
        }
        let asked = headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let headers_ok = self.any_header
            || asked
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .all(|h| self.headers.iter().any(|a| **a == *h));
        if !headers_ok {
            return CorsVerdict::Refused("a requested header is not allowed");
        }
        self.origin_fields(origin, &mut out);
        out.push((
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        ));
        if !asked.is_empty() {
            if let Ok(v) = HeaderValue::from_str(asked) {
                out.push((header::ACCESS_CONTROL_ALLOW_HEADERS, v));
            }
        }
        if let Some(a) = &self.max_age {
            out.push((header::ACCESS_CONTROL_MAX_AGE, a.clone()));
        }
        out.push((
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        ));
        CorsVerdict::Preflight(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors::new(&CorsConfig {
            origins: origins
                .iter()
                .map(|o| OriginPattern::parse(o).unwrap())
                .collect(),
            methods: vec!["GET".into(), "POST".into(), "PUT".into()],
            headers: vec!["content-type".into(), "x-api-key".into()],
            expose: vec!["x-request-id".into()],
            credentials,
            max_age: Some(Duration::from_secs(600)),
        })
    }

    fn req(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn field<'a>(f: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
        f.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn a_preflight_from_an_allowed_origin_is_answered_with_what_it_asked_for() {
        let c = cors(&["https://app.example.com", "https://*.example.org"], false);
        let h = req(&[
            ("origin", "https://shop.example.org"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "Content-Type, X-Api-Key"),
        ]);
        let CorsVerdict::Preflight(f) = c.check(&Method::OPTIONS, &h) else {
            panic!("a preflight")
        };
        assert_eq!(
            field(&f, "access-control-allow-origin"),
            Some("https://shop.example.org")
        );
        assert_eq!(
            field(&f, "access-control-allow-methods"),
            Some("GET, POST, PUT")
        );
        assert_eq!(
            field(&f, "access-control-allow-headers"),
            Some("Content-Type, X-Api-Key")
        );
        assert_eq!(field(&f, "access-control-max-age"), Some("600"));
        assert_eq!(field(&f, "access-control-allow-credentials"), None);
    }

    #[test]
    fn preflights_outside_the_policy_are_refused() {
        let c = cors(&["https://app.example.com"], false);
        let ask = |origin: &str, method: &str, headers: &str| {
            let h = req(&[
                ("origin", origin),
                ("access-control-request-method", method),
                ("access-control-request-headers", headers),
            ]);
            match c.check(&Method::OPTIONS, &h) {
                CorsVerdict::Refused(why) => why,
                _ => "answered",
            }
        };
        assert_eq!(ask("https://evil.example", "GET", ""), "origin not allowed");
        assert_eq!(
            ask("https://app.example.com.evil.example", "GET", ""),
            "origin not allowed"
        );
        assert_eq!(
            ask("https://app.example.com", "DELETE", ""),
            "method not allowed"
        );
        assert_eq!(
            ask("https://app.example.com", "GET", "x-secret"),
            "a requested header is not allowed"
        );
        assert_eq!(
            ask("https://app.example.com", "GET", "content-type"),
            "answered"
        );
    }

    #[test]
    fn actual_requests_get_the_origin_fields_and_others_nothing() {
        let c = cors(&["https://app.example.com"], true);
        let CorsVerdict::Actual(f) =
            c.check(&Method::GET, &req(&[("origin", "https://app.example.com")]))
        else {
            panic!("an actual request")
        };
        assert_eq!(
            field(&f, "access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(field(&f, "access-control-allow-credentials"), Some("true"));
        assert_eq!(
            field(&f, "access-control-expose-headers"),
            Some("x-request-id")
        );
        assert_eq!(field(&f, "vary"), Some("Origin"));
        assert!(matches!(
            c.check(&Method::GET, &req(&[("origin", "https://evil.example")])),
            CorsVerdict::None
        ));
        assert!(matches!(
            c.check(&Method::GET, &HeaderMap::new()),
            CorsVerdict::None
        ));
    }

    #[test]
    fn a_wildcard_origin_is_sent_as_star_only_without_credentials() {
        let open = cors(&["*"], false);
        let CorsVerdict::Actual(f) =
            open.check(&Method::GET, &req(&[("origin", "https://x.test")]))
        else {
            panic!()
        };
        assert_eq!(field(&f, "access-control-allow-origin"), Some("*"));
    }
}
