//! Who is calling: consumers and their credentials, and a route's auth (which credentials
//! it accepts, which groups may pass, the identity headers the upstream gets).
//!
//! API keys are stored as SHA-256 hashes only (the config never holds a key): a request's
//! key is hashed once (ring's SHA-256, ~0.3 µs for a key-sized input) and looked up in a
//! map. A lookup by hash leaks nothing useful through timing: finding which hashes exist
//! would need a SHA-256 pre-image. Keys already found valid are remembered by a seeded
//! XXH3 (the seed is per process and secret), so the bytes of a remembered key are only ever
//! compared with a request's key whose 64-bit hash matched it.

use crate::jwt::JwtVerifier;
use crate::limit::RouteLimits;
use crate::local::{random_seed, Prehashed};
use headroom_config::guard::{ConsumerConfig, RouteAuthConfig};
use headroom_telemetry::{Counter, Registry};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

/// A consumer as requests see it.
pub struct Consumer {
    pub name: Box<str>,
    pub groups: Box<[Box<str>]>,
    /// The name and the groups (comma-separated) as header values, made once.
    name_value: Option<HeaderValue>,
    groups_value: Option<HeaderValue>,
    /// The consumer's own limits, checked on every route that authenticates it.
    pub limits: Option<Arc<RouteLimits>>,
    /// Requests this consumer made that passed auth (a label per configured consumer only).
    admitted: Arc<Counter>,
}

/// Every consumer, by key hash and by name.
#[derive(Default)]
pub struct Consumers {
    by_key: HashMap<[u8; 32], Arc<Consumer>>,
    by_name: HashMap<Box<str>, Arc<Consumer>>,
    /// Keys already found valid, as sent: a repeat skips SHA-256 (~2,500 instructions, a
    /// third of the guard's cost per request). Only keys that matched a consumer go in, so
    /// it holds at most the configured keys; it lives as long as this snapshot's consumers
    /// (a reload that revokes a key drops it). Unknown keys pay the hash every time.
    /// Looked up by a seeded XXH3 of the key (SipHash cost ~150 instructions a request), the
    /// key itself kept to compare.
    verified: std::sync::RwLock<Verified>,
    seed: u64,
}

/// The verified keys: XXH3(key) → (key, its consumer).
type Verified = HashMap<u64, (Box<[u8]>, Arc<Consumer>), BuildHasherDefault<Prehashed>>;

impl Consumers {
    pub(crate) fn new(
        cfg: &[ConsumerConfig],
        registry: &Registry,
        mut limits: impl FnMut(&ConsumerConfig) -> Option<Arc<RouteLimits>>,
    ) -> Consumers {
        let mut by_key = HashMap::new();
        let mut by_name = HashMap::new();
        for c in cfg {
            let consumer = Arc::new(Consumer {
                name: c.name.as_str().into(),
                groups: c.groups.iter().map(|g| g.as_str().into()).collect(),
                name_value: HeaderValue::from_str(&c.name).ok(),
                groups_value: HeaderValue::from_str(&c.groups.join(",")).ok(),
                limits: limits(c),
                admitted: registry.counter(
                    "headroom_guard_consumer_requests_total",
                    "Requests that authenticated as a configured consumer.",
                    &[("consumer", c.name.as_str())],
                ),
            });
            for h in &c.key_hashes {
                by_key.insert(*h, consumer.clone());
            }
            by_name.insert(consumer.name.clone(), consumer);
        }
        Consumers {
            by_key,
            by_name,
            verified: Default::default(),
            seed: random_seed(),
        }
    }

    /// A token's consumer: the configured one of that name (its groups and limits), or one
    /// known only by the token (no groups, no limits of its own, no series of its own).
    fn by_token(&self, name: &str) -> Arc<Consumer> {
        if let Some(c) = self.by_name.get(name) {
            return c.clone();
        }
        Arc::new(Consumer {
            name: name.into(),
            groups: Box::new([]),
            name_value: HeaderValue::from_str(name).ok(),
            groups_value: None,
            limits: None,
            admitted: Arc::new(Counter::default()),
        })
    }

    fn by_key(&self, key: &[u8]) -> Option<Arc<Consumer>> {
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(key, self.seed);
        if let Some((k, c)) = self
            .verified
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&h)
        {
            if **k == *key {
                return Some(c.clone());
            }
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, key);
        let hash: [u8; 32] = digest.as_ref().try_into().ok()?;
        let c = self.by_key.get(&hash)?.clone();
        let mut seen = self.verified.write().unwrap_or_else(|p| p.into_inner());
        if seen.len() < self.by_key.len() {
            seen.insert(h, (key.into(), c.clone()));
        }
        Some(c)
    }
}

/// A token's claims the request needs: headers for the upstream, and the values limits
/// with `key = "claim:NAME"` count by. Empty for an API key.
#[derive(Default, Clone)]
pub struct Claims {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub keys: Vec<(Box<str>, String)>,
}

/// What a route's auth decided.
pub enum AuthVerdict {
    /// Authenticated and admitted, with the token's claims (none for an API key).
    Pass(Arc<Consumer>, Claims),
    /// No credentials: 401.
    Missing,
    /// Credentials that match no consumer: 401.
    Invalid,
    /// A consumer the route's groups do not admit: 403.
    Forbidden(Arc<Consumer>),
}

/// How long a verified token is taken on trust before its signature is checked again.
pub const TOKEN_CACHE_FOR: u64 = 60;
/// Tokens remembered per route (beyond it the cache starts over).
const TOKEN_CACHE_MAX: usize = 10_000;

struct CachedToken {
    consumer: Arc<Consumer>,
    claims: Claims,
    /// Seconds since the epoch.
    until: u64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A route's bearer tokens: the verifier, forwarded claims' headers, limit claims' names.
type BearerAuth = (JwtVerifier, Box<[HeaderName]>, Box<[Box<str>]>);

/// `[route.auth]`, compiled.
pub struct RouteAuth {
    key_header: Option<HeaderName>,
    key_query: Option<Box<str>>,
    groups: Box<[Box<str>]>,
    forward_consumer: Option<HeaderName>,
    forward_groups: Option<HeaderName>,
    consumers: Arc<Consumers>,
    /// Bearer tokens: the verifier, the header each forwarded claim goes in (the first
    /// claims the verifier returns), then the claims limits count by (the rest).
    jwt: Option<BearerAuth>,
    /// Tokens this route let through, as sent: a repeat skips the signature check (an
    /// RS256 verification is ~40 µs). Kept until the token expires, and never more than
    /// [`TOKEN_CACHE_FOR`], so a key removed from a JWKS stops working within that.
    tokens: std::sync::Mutex<HashMap<Box<str>, CachedToken>>,
    token_hits: Arc<Counter>,
    /// `WWW-Authenticate` for a 401.
    pub challenge: HeaderValue,
    /// By result: passed, unauthenticated (no credentials), bad_credentials, forbidden.
    results: [Arc<Counter>; 4],
}

impl RouteAuth {
    pub(crate) fn new(
        route: &str,
        cfg: &RouteAuthConfig,
        consumers: Arc<Consumers>,
        jwt: Option<(JwtVerifier, Vec<String>, Vec<String>)>,
        registry: &Registry,
    ) -> RouteAuth {
        let result = |r: &str| {
            registry.counter(
                "headroom_guard_auth_total",
                "Requests through a route's auth, by result: passed, unauthenticated (no credentials), bad_credentials, forbidden (a consumer its groups do not admit).",
                &[("route", route), ("result", r)],
            )
        };
        let key_header = cfg
            .key
            .as_ref()
            .and_then(|k| HeaderName::from_bytes(k.header.as_bytes()).ok());
        let realm = route.replace('"', "");
        let challenge = match (&key_header, &jwt) {
            (Some(h), _) => format!("ApiKey realm=\"{realm}\", header=\"{}\"", h.as_str()),
            (None, _) => format!("Bearer realm=\"{realm}\""),
        };
        let jwt = jwt.map(|(v, headers, keys)| {
            // Headers are validated names; one that is not stays in its place (so indices
            // keep matching) as a name nobody sends.
            let names = headers
                .iter()
                .map(|h| {
                    HeaderName::from_bytes(h.as_bytes())
                        .unwrap_or(HeaderName::from_static("x-headroom-invalid"))
                })
                .collect();
            (v, names, keys.into_iter().map(Into::into).collect())
        });
        RouteAuth {
            key_query: cfg
                .key
                .as_ref()
                .and_then(|k| k.query.as_deref().map(Into::into)),
            key_header,
            groups: cfg.groups.iter().map(|g| g.as_str().into()).collect(),
            forward_consumer: HeaderName::from_bytes(cfg.forward_consumer.as_bytes()).ok(),
            forward_groups: HeaderName::from_bytes(cfg.forward_groups.as_bytes()).ok(),
            consumers,
            jwt,
            tokens: std::sync::Mutex::default(),
            token_hits: registry.counter(
                "headroom_guard_jwt_cache_hits_total",
                "Bearer tokens let through without checking their signature again (seen valid within the last minute).",
                &[("route", route)],
            ),
            challenge: HeaderValue::from_str(&challenge)
                .unwrap_or(HeaderValue::from_static("ApiKey")),
            results: [
                result("passed"),
                result("unauthenticated"),
                result("bad_credentials"),
                result("forbidden"),
            ],
        }
    }

    /// Authenticates a request by its headers and query (an API key first, else a bearer
    /// token), and counts the result.
    pub async fn check(&self, headers: &HeaderMap, uri: &Uri) -> AuthVerdict {
        let v = match self.decide(headers, uri) {
            AuthVerdict::Missing if self.jwt.is_some() => self.bearer(headers).await,
            v => v,
        };
        let i = match &v {
            AuthVerdict::Pass(c, _) => {
                c.admitted.inc();
                0
            }
            AuthVerdict::Missing => 1,
            AuthVerdict::Invalid => 2,
            AuthVerdict::Forbidden(_) => 3,
        };
        self.results[i].inc();
        v
    }

    /// `Authorization: Bearer <token>`, verified.
    async fn bearer(&self, headers: &HeaderMap) -> AuthVerdict {
        let Some((verifier, claim_headers, claim_keys)) = &self.jwt else {
            return AuthVerdict::Missing;
        };
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return AuthVerdict::Missing;
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return AuthVerdict::Missing;
        };
        let now = unix_now();
        if let Some(c) = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .filter(|c| now < c.until)
        {
            self.token_hits.inc();
            return AuthVerdict::Pass(c.consumer.clone(), c.claims.clone());
        }
        let verified = match verifier.verify(token).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = e.kind(), "bearer token refused");
                return AuthVerdict::Invalid;
            }
        };
        let expires = verified.expires;
        let consumer = self.consumers.by_token(&verified.consumer);
        if !self.groups.is_empty() && !consumer.groups.iter().any(|g| self.groups.contains(g)) {
            return AuthVerdict::Forbidden(consumer);
        }
        let mut claims = Claims::default();
        for (i, v) in verified.claims {
            if let Some(h) = claim_headers.get(i) {
                if let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
                    claims.headers.push((h.clone(), v));
                }
            } else if let Some(k) = claim_keys.get(i - claim_headers.len()) {
                claims.keys.push((k.clone(), v));
            }
        }
        let until = expires.map_or(now + TOKEN_CACHE_FOR, |e| e.min(now + TOKEN_CACHE_FOR));
        if token.len() <= 8 << 10 {
            let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            if tokens.len() >= TOKEN_CACHE_MAX {
                tokens.retain(|_, c| now < c.until);
                if tokens.len() >= TOKEN_CACHE_MAX {
                    tokens.clear();
                }
            }
            tokens.insert(
                token.into(),
                CachedToken {
                    consumer: consumer.clone(),
                    claims: claims.clone(),
                    until,
                },
            );
        }
        AuthVerdict::Pass(consumer, claims)
    }

    fn decide(&self, headers: &HeaderMap, uri: &Uri) -> AuthVerdict {
        let key = self
            .key_header
            .as_ref()
            .and_then(|h| headers.get(h))
            .map(|v| v.as_bytes())
            .or_else(|| {
                let q = self.key_query.as_deref()?;
                query_value(uri.query()?, q)
            });
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            return AuthVerdict::Missing;
        };
        let Some(consumer) = self.consumers.by_key(key) else {
            return AuthVerdict::Invalid;
        };
        if !self.groups.is_empty() && !consumer.groups.iter().any(|g| self.groups.contains(g)) {
            return AuthVerdict::Forbidden(consumer);
        }
        AuthVerdict::Pass(consumer, Claims::default())
    }

    /// Readies the request for the upstream: the credentials and any client-sent identity
    /// headers removed, the consumer's identity set.
    /// True when a key may come in the query: [`RouteAuth::strip_query`] has work to do.
    pub fn reads_query(&self) -> bool {
        self.key_query.is_some()
    }

    /// The key's query parameter out of `uri`, when it is there.
    pub fn strip_query(&self, uri: &mut Uri) {
        if let (Some(q), Some(query)) = (self.key_query.as_deref(), uri.query()) {
            if query_value(query, q).is_some() {
                if let Some(stripped) = without_query_param(uri, q) {
                    *uri = stripped;
                }
            }
        }
    }

    pub fn forward(
        &self,
        consumer: &Consumer,
        claims: Vec<(HeaderName, HeaderValue)>,
        headers: &mut HeaderMap,
    ) {
        if let Some((_, names, _)) = &self.jwt {
            for n in names.iter() {
                headers.remove(n);
            }
        }
        for (k, v) in claims {
            headers.insert(k, v);
        }
        if let Some(h) = &self.key_header {
            headers.remove(h);
        }
        for (name, value) in [
            (&self.forward_consumer, &consumer.name_value),
            (&self.forward_groups, &consumer.groups_value),
        ] {
            let Some(name) = name else { continue };
            // `insert` replaces every copy the client sent: one lookup, not two.
            match value {
                Some(v) if !v.is_empty() => {
                    headers.insert(name.clone(), v.clone());
                }
                _ => {
                    headers.remove(name);
                }
            }
        }
    }
}

/// The raw value of `name` in a query string (the first one), not percent-decoded: keys are
/// compared as sent.
fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a [u8]> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

/// `uri` with every `name=` pair removed from its query (the query dropped when empty).
fn without_query_param(uri: &Uri, name: &str) -> Option<Uri> {
    let query = uri.query()?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
        .collect();
    let mut pq = uri.path().to_string();
    if !kept.is_empty() {
        pq.push('?');
        pq.push_str(&kept.join("&"));
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// `sha256:<hex>` of a key, as `[[consumer]] keys` wants it.
pub fn key_hash(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A new random API key: 32 bytes from the OS, as 43 URL-safe base64 characters with a
/// `hr_` prefix (so a leaked key is recognisable in logs and secret scanners).
pub fn new_key() -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the OS random source failed".to_string())?;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::from("hr_");
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use headroom_config::guard::KeyAuth;

    fn hash(key: &str) -> [u8; 32] {
        ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
            .as_ref()
            .try_into()
            .unwrap()
    }

    fn consumers() -> Arc<Consumers> {
        let cfg = [
            ConsumerConfig {
                name: "acme".into(),
                groups: vec!["partners".into()],
                key_hashes: vec![hash("acme-key-1"), hash("acme-key-2")],
                limits: vec![],
            },
            ConsumerConfig {
                name: "intern".into(),
                groups: vec![],
                key_hashes: vec![hash("intern-key")],
                limits: vec![],
            },
        ];
        Arc::new(Consumers::new(&cfg, &Registry::new(), |_| None))
    }

    fn auth(groups: &[&str]) -> RouteAuth {
        RouteAuth::new(
            "api",
            &RouteAuthConfig {
                key: Some(KeyAuth {
                    header: "x-api-key".into(),
                    query: Some("api_key".into()),
                }),
                jwt: None,
                groups: groups.iter().map(|g| g.to_string()).collect(),
                forward_consumer: "x-consumer".into(),
                forward_groups: "x-consumer-groups".into(),
            },
            consumers(),
            None,
            &Registry::new(),
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn check(a: &RouteAuth, h: &HeaderMap, u: &Uri) -> AuthVerdict {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(a.check(h, u))
    }

    fn name(v: &AuthVerdict) -> String {
        match v {
            AuthVerdict::Pass(c, _) => format!("pass {}", c.name),
            AuthVerdict::Missing => "missing".into(),
            AuthVerdict::Invalid => "invalid".into(),
            AuthVerdict::Forbidden(c) => format!("forbidden {}", c.name),
        }
    }

    #[test]
    fn a_key_in_the_header_or_the_query_names_its_consumer() {
        let a = auth(&[]);
        let root: Uri = "/x".parse().unwrap();
        assert_eq!(
            name(&check(&a, &headers(&[("x-api-key", "acme-key-2")]), &root)),
            "pass acme"
        );
        let q: Uri = "/x?a=1&api_key=intern-key".parse().unwrap();
        assert_eq!(name(&check(&a, &HeaderMap::new(), &q)), "pass intern");
        assert_eq!(name(&check(&a, &HeaderMap::new(), &root)), "missing");
        assert_eq!(
            name(&check(&a, &headers(&[("x-api-key", "")]), &root)),
            "missing"
        );
        assert_eq!(
            name(&check(&a, &headers(&[("x-api-key", "garbage")]), &root)),
            "invalid"
        );
        assert_eq!(
            name(&check(&a, &headers(&[("x-api-key", "acme-key-1 ")]), &root)),
            "invalid",
            "keys are compared exactly"
        );
    }

    #[test]
    fn a_remembered_key_passes_again_and_keys_near_it_do_not() {
        let a = auth(&[]);
        let root: Uri = "/".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(
                name(&check(&a, &headers(&[("x-api-key", "acme-key-1")]), &root)),
                "pass acme"
            );
        }
        assert_eq!(a.consumers.verified.read().unwrap().len(), 1);
        for near in ["acme-key-", "acme-key-10", "acme-key-2x", "ACME-KEY-1"] {
            assert_eq!(
                name(&check(&a, &headers(&[("x-api-key", near)]), &root)),
                "invalid",
                "{near}"
            );
        }
        assert_eq!(
            a.consumers.verified.read().unwrap().len(),
            1,
            "only keys that matched are remembered"
        );
    }

    #[test]
    fn groups_admit_only_their_members() {
        let a = auth(&["partners"]);
        let root: Uri = "/".parse().unwrap();
        assert_eq!(
            name(&check(&a, &headers(&[("x-api-key", "acme-key-1")]), &root)),
            "pass acme"
        );
        assert_eq!(
            name(&check(&a, &headers(&[("x-api-key", "intern-key")]), &root)),
            "forbidden intern"
        );
    }

    #[test]
    fn forwarding_removes_the_credentials_and_client_sent_identity_and_sets_the_consumer_s() {
        let a = auth(&[]);
        let mut h = headers(&[
            ("x-api-key", "acme-key-1"),
            ("x-consumer", "admin"),
            ("x-consumer-groups", "root"),
        ]);
        let mut uri: Uri = "/x?a=1&api_key=acme-key-1&b=2".parse().unwrap();
        let AuthVerdict::Pass(c, claims) = check(&a, &h, &uri) else {
            panic!()
        };
        a.forward(&c, claims.headers, &mut h);
        a.strip_query(&mut uri);
        assert_eq!(h.get("x-api-key"), None);
        assert_eq!(h.get("x-consumer").unwrap(), "acme");
        assert_eq!(h.get("x-consumer-groups").unwrap(), "partners");
        assert_eq!(uri.to_string(), "/x?a=1&b=2");
        let mut only: Uri = "/y?api_key=k".parse().unwrap();
        only = without_query_param(&only, "api_key").unwrap();
        assert_eq!(only.to_string(), "/y");
    }

    #[test]
    fn a_verified_token_is_taken_on_trust_when_it_comes_again_and_a_changed_one_is_not() {
        use crate::{JwtSettings, JwtVerifier, KeySource};
        let secret = b"0123456789abcdef0123456789abcdef".to_vec();
        let verifier =
            JwtVerifier::new(&JwtSettings::new(KeySource::Secret(secret.clone()))).unwrap();
        let registry = Registry::new();
        let a = RouteAuth::new(
            "api",
            &RouteAuthConfig {
                key: None,
                jwt: Some("main".into()),
                groups: vec![],
                forward_consumer: "x-consumer".into(),
                forward_groups: "x-consumer-groups".into(),
            },
            consumers(),
            Some((verifier, vec![], vec![])),
            &registry,
        );
        let exp = unix_now() + 600;
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": "acme", "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        let bearer = |t: &str| headers(&[("authorization", &format!("Bearer {t}"))]);
        let root: Uri = "/".parse().unwrap();
        assert_eq!(name(&check(&a, &bearer(&token), &root)), "pass acme");
        assert_eq!(a.token_hits.get(), 0, "the first time it is verified");
        assert_eq!(name(&check(&a, &bearer(&token), &root)), "pass acme");
        assert_eq!(a.token_hits.get(), 1, "then taken from the cache");
        let mut forged = token.clone();
        forged.push('x');
        assert_eq!(name(&check(&a, &bearer(&forged), &root)), "invalid");
        assert_eq!(a.token_hits.get(), 1);
    }

    #[test]
    fn key_hash_is_what_the_config_wants_and_new_keys_are_distinct() {
        assert_eq!(
            key_hash("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let (a, b) = (new_key().unwrap(), new_key().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 43);
        assert!(a[3..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
