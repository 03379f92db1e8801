//! Cache keys: host, path, the chosen query parameters (sorted), chosen headers and
//! cookies. Versioned asset URLs (`app.1a2b3c.js`, `?v=1.2.3`) differ in path or query, so
//! they are distinct keys and cache-busting needs nothing else.

use headroom_config::cache::{KeyConfig, QueryKey};
use http::{HeaderMap, HeaderName};

/// A compiled [`KeyConfig`].
#[derive(Debug, Clone)]
pub struct KeySpec {
    host: bool,
    query: QueryKey,
    headers: Vec<HeaderName>,
    cookies: Vec<String>,
}

/// Separates a key's parts: a byte no URL, header value or cookie can contain.
const SEP: u8 = 0;

impl KeySpec {
    pub fn new(c: &KeyConfig) -> KeySpec {
        KeySpec {
            host: c.host,
            query: c.query.clone(),
            headers: c
                .headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            cookies: c.cookies.clone(),
        }
    }

    /// The primary key of a request (before `Vary`): appended to `out`.
    pub fn build(
        &self,
        host: &str,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        out: &mut Vec<u8>,
    ) {
        if self.host {
            out.extend(host.bytes().map(|b| b.to_ascii_lowercase()));
        }
        out.push(SEP);
        out.extend_from_slice(path.as_bytes());
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            self.push_query(q, out);
        }
        for h in &self.headers {
            out.push(SEP);
            for (i, v) in headers.get_all(h).iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(v.as_bytes());
            }
        }
        for c in &self.cookies {
            out.push(SEP);
            if let Some(v) = cookie(headers, c) {
                out.push(b'=');
                out.extend_from_slice(v.as_bytes());
            }
        }
    }

    fn push_query(&self, q: &str, out: &mut Vec<u8>) {
        let keep = |name: &str| match &self.query {
            QueryKey::All => true,
            QueryKey::None => false,
            QueryKey::Allow(a) => a.iter().any(|n| n == name),
            QueryKey::Deny(d) => !d.iter().any(|n| n == name),
        };
        if matches!(self.query, QueryKey::None) {
            return;
        }
        out.push(b'?');
        if !q.contains('&') {
            // One parameter: nothing to sort, no allocation.
            if keep(q.split('=').next().unwrap_or(q)) {
                out.extend_from_slice(q.as_bytes());
            }
            return;
        }
        let mut params: Vec<&str> = q
            .split('&')
            .filter(|p| !p.is_empty() && keep(p.split('=').next().unwrap_or(p)))
            .collect();
        params.sort_unstable();
        for (i, p) in params.iter().enumerate() {
            if i > 0 {
                out.push(b'&');
            }
            out.extend_from_slice(p.as_bytes());
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cfg: KeyConfig, host: &str, pq: &str, h: &[(&str, &str)]) -> Vec<u8> {
        let mut headers = HeaderMap::new();
        for (k, v) in h {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let (path, query) = match pq.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (pq, None),
        };
        let mut out = Vec::new();
        KeySpec::new(&cfg).build(host, path, query, &headers, &mut out);
        out
    }

    #[test]
    fn query_parameters_are_sorted_so_their_order_does_not_matter() {
        let c = KeyConfig::default;
        assert_eq!(
            key(c(), "h", "/p?b=1&a=2", &[]),
            key(c(), "h", "/p?a=2&b=1", &[])
        );
        assert_ne!(key(c(), "h", "/p?a=1", &[]), key(c(), "h", "/p?a=2", &[]));
        assert_ne!(key(c(), "h", "/p?a=1", &[]), key(c(), "h", "/p", &[]));
    }

    #[test]
    fn versioned_asset_urls_are_distinct_keys() {
        let c = KeyConfig::default;
        assert_ne!(
            key(c(), "h", "/app.1a2b3c.js", &[]),
            key(c(), "h", "/app.4d5e6f.js", &[])
        );
        assert_ne!(
            key(c(), "h", "/app.js?v=1.2.3", &[]),
            key(c(), "h", "/app.js?v=1.2.4", &[])
        );
    }

    #[test]
    fn allow_and_deny_lists_choose_the_parameters_in_the_key() {
        let allow = KeyConfig {
            query: QueryKey::Allow(vec!["page".into()]),
            ..KeyConfig::default()
        };
        assert_eq!(
            key(allow.clone(), "h", "/p?page=2&utm_source=x", &[]),
            key(allow.clone(), "h", "/p?utm_source=y&page=2", &[])
        );
        assert_ne!(
            key(allow.clone(), "h", "/p?page=2", &[]),
            key(allow, "h", "/p?page=3", &[])
        );
        let deny = KeyConfig {
            query: QueryKey::Deny(vec!["utm_source".into()]),
            ..KeyConfig::default()
        };
        assert_eq!(
            key(deny.clone(), "h", "/p?utm_source=x", &[]),
            key(deny, "h", "/p?utm_source=y", &[])
        );
        let none = KeyConfig {
            query: QueryKey::None,
            ..KeyConfig::default()
        };
        assert_eq!(
            key(none.clone(), "h", "/p?a=1", &[]),
            key(none, "h", "/p", &[])
        );
    }

    #[test]
    fn chosen_headers_and_cookies_are_part_of_the_key_and_the_host_can_be_left_out() {
        let c = KeyConfig {
            headers: vec!["x-device".into()],
            cookies: vec!["lang".into()],
            ..KeyConfig::default()
        };
        let a = key(
            c.clone(),
            "h",
            "/",
            &[("x-device", "mobile"), ("cookie", "a=1; lang=en")],
        );
        let b = key(
            c.clone(),
            "h",
            "/",
            &[("x-device", "mobile"), ("cookie", "lang=en")],
        );
        let d = key(
            c.clone(),
            "h",
            "/",
            &[("x-device", "mobile"), ("cookie", "lang=fr")],
        );
        let e = key(
            c,
            "h",
            "/",
            &[("x-device", "desktop"), ("cookie", "lang=en")],
        );
        assert_eq!(a, b);
        assert_ne!(a, d);
        assert_ne!(a, e);
        let nohost = KeyConfig {
            host: false,
            ..KeyConfig::default()
        };
        assert_eq!(
            key(nohost.clone(), "a.com", "/", &[]),
            key(nohost, "b.com", "/", &[])
        );
        assert_ne!(
            key(KeyConfig::default(), "a.com", "/", &[]),
            key(KeyConfig::default(), "B.com", "/", &[])
        );
    }
}
