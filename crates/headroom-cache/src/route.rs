//! A route's cache: its policy and page rules compiled at snapshot build time, the lookup
//! a request makes, and the fill that stores its response on the way back.

use crate::coalesce::{self, FillGuard, Join};
use crate::compress::Coding;
use crate::entry::Entry;
use crate::key::{cookie, KeySpec};
use crate::memory::Object;
use crate::policy::{self, RequestDirectives, StoreOptions, Use};
use crate::status::{CacheStatus, Outcome};
use crate::Shared;
use bytes::Bytes;
use headroom_config::cache::{CachePolicy, RouteCacheConfig};
use headroom_telemetry::{Counter, Registry};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

/// A route's (or page rule's) compiled policy.
#[derive(Debug)]
pub struct Policy {
    key: KeySpec,
    ttl: Option<Duration>,
    ignore_origin: bool,
    statuses: Vec<(u16, Duration)>,
    stale_while_revalidate: Duration,
    stale_if_error: Duration,
    bypass_cookies: Vec<String>,
    bypass_headers: Vec<HeaderName>,
    allow_authorization: bool,
    allow_set_cookie: bool,
}

impl Policy {
    fn new(c: &CachePolicy) -> Policy {
        Policy {
            key: KeySpec::new(&c.key),
            ttl: c.ttl,
            ignore_origin: c.ignore_origin,
            statuses: c.statuses.clone(),
            stale_while_revalidate: c.stale_while_revalidate,
            stale_if_error: c.stale_if_error,
            bypass_cookies: c.bypass_cookies.clone(),
            bypass_headers: c
                .bypass_headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            allow_authorization: c.allow_authorization,
            allow_set_cookie: c.allow_set_cookie,
        }
    }

    fn store_options(&self, heuristic_cap: Duration) -> StoreOptions<'_> {
        StoreOptions {
            ttl_override: self.ttl,
            ignore_origin: self.ignore_origin,
            status_ttls: &self.statuses,
            allow_authorization: self.allow_authorization,
            allow_set_cookie: self.allow_set_cookie,
            heuristic_cap,
            default_stale_while_revalidate: self.stale_while_revalidate,
            default_stale_if_error: self.stale_if_error,
            ..StoreOptions::default()
        }
    }

    /// Why this request must not touch the cache, if it must not.
    fn bypass(&self, headers: &HeaderMap) -> Option<&'static str> {
        if self.bypass_headers.iter().any(|h| headers.contains_key(h)) {
            return Some("header");
        }
        if !self.bypass_cookies.is_empty()
            && self
                .bypass_cookies
                .iter()
                .any(|c| cookie(headers, c).is_some())
        {
            return Some("cookie");
        }
        None
    }
}

struct Rule {
    glob: globset::GlobMatcher,
    bypass: bool,
    policy: Arc<Policy>,
}

/// Why a miss's response was not stored, as `headroom_cache_not_stored_total`'s `reason`:
/// the `Cache-Status` detail's word ([`policy::NotStorable::as_str`], then the fill's own:
/// a HEAD, a request's no-store, a body past `max_object`, too many Vary fields, a body
/// that did not come whole).
pub const NOT_STORED_REASONS: [&str; 14] = [
    "method",
    "status",
    "no-store",
    "private",
    "authorization",
    "set-cookie",
    "vary-star",
    "no-freshness",
    "partial",
    "head",
    "request-no-store",
    "too-big",
    "vary-too-wide",
    "incomplete",
];

/// Per-route cache counters: `headroom_cache_requests_total{route, result}` and friends.
pub(crate) struct RouteMetrics {
    outcomes: [Arc<Counter>; 6],
    coalesced: Arc<Counter>,
    revalidations: Arc<Counter>,
    stored: Arc<Counter>,
    stored_bytes: Arc<Counter>,
    /// `headroom_cache_stored_set_cookie_total`: stored responses that came with Set-Cookie
    /// (`allow_set_cookie`). Registered on first use: a route that never stores one has no
    /// series.
    stored_set_cookie: OnceLock<Arc<Counter>>,
    /// `headroom_cache_not_stored_total{reason}`, by [`NOT_STORED_REASONS`], each
    /// registered the first time a response is not stored for that reason: `/metrics`
    /// lists the reasons a route has seen, not fourteen zeros.
    not_stored: [OnceLock<Arc<Counter>>; NOT_STORED_REASONS.len()],
}

impl RouteMetrics {
    fn new(registry: &Registry, route: &str) -> Self {
        let o = |outcome: Outcome| {
            registry.counter(
                "headroom_cache_requests_total",
                "Requests through a route's cache, by what the cache did (hit, stale, revalidated, expired, miss, bypass).",
                &[("route", route), ("result", outcome.label())],
            )
        };
        RouteMetrics {
            outcomes: [
                o(Outcome::Hit),
                o(Outcome::Stale),
                o(Outcome::Revalidated),
                o(Outcome::Expired),
                o(Outcome::Miss),
                o(Outcome::Bypass),
            ],
            coalesced: registry.counter(
                "headroom_cache_coalesced_total",
                "Requests that waited for another request's fill of the same key.",
                &[("route", route)],
            ),
            revalidations: registry.counter(
                "headroom_cache_revalidations_total",
                "Stored responses revalidated upstream (conditional requests sent).",
                &[("route", route)],
            ),
            stored: registry.counter(
                "headroom_cache_stored_total",
                "Responses stored.",
                &[("route", route)],
            ),
            stored_bytes: registry.counter(
                "headroom_cache_stored_bytes_total",
                "Body bytes of the responses stored.",
                &[("route", route)],
            ),
            stored_set_cookie: OnceLock::new(),
            not_stored: Default::default(),
        }
    }

    /// A response not stored for `reason` (one of [`NOT_STORED_REASONS`]; another word is
    /// not counted). Cost: a scan of 14 words and a relaxed add; the first time for a
    /// reason, a registration (the registry's lock).
    pub(crate) fn not_stored(&self, registry: &Registry, route: &str, reason: &'static str) {
        let Some(i) = NOT_STORED_REASONS.iter().position(|r| *r == reason) else {
            return;
        };
        self.not_stored[i]
            .get_or_init(|| {
                registry.counter(
                    "headroom_cache_not_stored_total",
                    "Miss responses the cache passed on without storing, by why (the Cache-Status detail: set-cookie, no-store, private, no-freshness, too-big, ...).",
                    &[("route", route), ("reason", reason)],
                )
            })
            .inc();
    }

    /// A response stored though it came with Set-Cookie (the cookie itself is not stored).
    pub(crate) fn stored_set_cookie(&self, registry: &Registry, route: &str) {
        self.stored_set_cookie
            .get_or_init(|| {
                registry.counter(
                    "headroom_cache_stored_set_cookie_total",
                    "Responses stored that came with Set-Cookie (allow_set_cookie): the cookie went to the client that filled the cache, the body to every later one.",
                    &[("route", route)],
                )
            })
            .inc();
    }

    pub(crate) fn count(&self, o: Outcome) {
        self.outcomes[o as usize].inc();
    }

    pub(crate) fn hits_and_lookups(&self) -> (u64, u64) {
        let hits = self.outcomes[0].get() + self.outcomes[1].get() + self.outcomes[2].get();
        let all = self.outcomes.iter().map(|c| c.get()).sum();
        (hits, all)
    }
}

/// One route's cache, compiled into its snapshot route.
pub struct RouteCache {
    inner: Arc<RouteInner>,
}

pub(crate) struct RouteInner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) name: Arc<str>,
    default: Arc<Policy>,
    rules: Box<[Rule]>,
    pub purge_method: bool,
    pub(crate) metrics: RouteMetrics,
}

impl std::fmt::Debug for RouteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteCache")
            .field("route", &self.inner.name)
            .finish()
    }
}

/// What the request is, as the cache needs it.
pub struct CacheRequest<'a> {
    pub method: &'a Method,
    /// Lowercase host, as routing saw it.
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The coding the response will be sent in (the route's compression, negotiated).
    pub coding: Coding,
    /// The route compresses: `Accept-Encoding` is covered by `coding` in the key.
    pub compresses: bool,
}

/// A stored response answering a request.
#[derive(Debug)]
pub struct Hit {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub cache_status: CacheStatus,
}

/// What `lookup` decided.
pub enum Lookup {
    /// Not the cache's business (OPTIONS, TRACE, CONNECT): forward as usual.
    Pass,
    /// Forward, not stored; `Cache-Status` says why.
    Bypass(&'static str),
    /// Answer with this stored response.
    Hit(Hit),
    /// Answer with this (stale) response, and refresh it in the background with `Fill`.
    HitAndRefresh(Hit, Fill),
    /// Forward, and hand the response to the fill.
    Forward(Fill),
    /// `only-if-cached` and nothing stored: 504 (RFC 9111 §5.2.1.7).
    GatewayTimeout,
    /// An unsafe method: forward; a success invalidates the URL (RFC 9111 §4.4).
    Invalidate(Invalidation),
    /// The route's `PURGE` method: the URL to purge (the edge checks the token).
    Purge(String),
}

impl RouteCache {
    pub(crate) fn new(
        shared: &Arc<Shared>,
        name: &str,
        cfg: &RouteCacheConfig,
        registry: &Registry,
    ) -> RouteCache {
        let rules = cfg
            .rules
            .iter()
            .filter_map(|r| {
                Some(Rule {
                    glob: headroom_config::glob(&r.glob).ok()?,
                    bypass: r.bypass,
                    policy: Arc::new(Policy::new(&r.policy)),
                })
            })
            .collect();
        RouteCache {
            inner: Arc::new(RouteInner {
                shared: shared.clone(),
                name: name.into(),
                default: Arc::new(Policy::new(&cfg.policy)),
                rules,
                purge_method: cfg.purge_method,
                metrics: RouteMetrics::new(registry, name),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn purge_method(&self) -> bool {
        self.inner.purge_method
    }

    /// The route's policy for `path`: its first matching rule's (`None`: a bypass rule).
    fn policy(&self, path: &str) -> Option<&Arc<Policy>> {
        for r in self.inner.rules.iter() {
            if r.glob.is_match(path) {
                return (!r.bypass).then_some(&r.policy);
            }
        }
        Some(&self.inner.default)
    }

    /// The `lookup` phase.
    pub async fn lookup(&self, req: &CacheRequest<'_>) -> Lookup {
        let m = &self.inner.metrics;
        let shared = &self.inner.shared;
        match *req.method {
            Method::GET | Method::HEAD => {}
            Method::OPTIONS | Method::TRACE | Method::CONNECT => return Lookup::Pass,
            _ if req.method.as_str() == "PURGE" && self.inner.purge_method => {
                return Lookup::Purge(url_of(req));
            }
            _ => {
                return Lookup::Invalidate(Invalidation {
                    shared: shared.clone(),
                    host: req.host.into(),
                })
            }
        }
        let Some(policy) = self.policy(req.path) else {
            m.count(Outcome::Bypass);
            return Lookup::Bypass("rule");
        };
        if let Some(why) = policy.bypass(req.headers) {
            m.count(Outcome::Bypass);
            return Lookup::Bypass(why);
        }
        let mut key = Vec::with_capacity(req.host.len() + req.path.len() + 16);
        policy
            .key
            .build(req.host, req.path, req.query, req.headers, &mut key);
        if key.len() > shared.cfg.max_key {
            m.count(Outcome::Bypass);
            return Lookup::Bypass("key-too-long");
        }
        let hash = xxhash_rust::xxh3::xxh3_64(&key);
        let directives = RequestDirectives::parse(req.headers);
        let now = shared.clock.now();
        let (mut seen, mut stored) = self.select(hash, &key, req);
        if stored.is_none() {
            stored = shared.lookup_redis(hash, &key, req, seen.as_deref()).await;
            if stored.is_some() {
                seen = shared.memory.get(hash, &key);
            }
        }
        if let Some(e) = &stored {
            let age = e.age(now);
            match policy::usable(&directives, &e.freshness, age) {
                Use::Fresh | Use::StaleAllowed => {
                    let fresh = age < e.freshness.lifetime;
                    let o = if fresh { Outcome::Hit } else { Outcome::Stale };
                    m.count(o);
                    return Lookup::Hit(serve(e, req.method, req.headers, now, o, false));
                }
                Use::StaleWhileRevalidate => {
                    m.count(Outcome::Stale);
                    let hit = serve(e, req.method, req.headers, now, Outcome::Stale, false);
                    if let Join::Leader(guard) = shared.fills.join(hash ^ req.coding as u64) {
                        let fill =
                            self.fill(policy, key, hash, stored.clone(), Some(guard), req, now);
                        let mut fill = fill;
                        fill.seen = seen;
                        return Lookup::HitAndRefresh(hit, fill.background());
                    }
                    return Lookup::Hit(hit);
                }
                Use::Revalidate if directives.only_if_cached => {
                    // §5.2.2.2 / §5.2.2.4: never served stale, whatever the request allows.
                    if e.freshness.must_revalidate || e.freshness.no_cache {
                        m.count(Outcome::Miss);
                        return Lookup::GatewayTimeout;
                    }
                    m.count(Outcome::Stale);
                    return Lookup::Hit(serve(
                        e,
                        req.method,
                        req.headers,
                        now,
                        Outcome::Stale,
                        false,
                    ));
                }
                Use::Revalidate => {}
            }
        } else if directives.only_if_cached {
            m.count(Outcome::Miss);
            return Lookup::GatewayTimeout;
        }
        if directives.no_store {
            let mut f = self.fill(policy, key, hash, stored, None, req, now);
            f.store = false;
            f.seen = seen;
            return Lookup::Forward(f);
        }
        match shared.fills.join(hash ^ req.coding as u64) {
            Join::Leader(guard) => {
                let mut f = self.fill(policy, key, hash, stored, Some(guard), req, now);
                f.seen = seen;
                Lookup::Forward(f)
            }
            Join::Wait(rx) => {
                m.coalesced.inc();
                let got = coalesce::wait(rx, shared.cfg.coalesce_wait).await;
                let now = shared.clock.now();
                if let Some(e) = got.filter(|e| variant_matches(e, req)) {
                    if policy::usable(&directives, &e.freshness, e.age(now)) == Use::Fresh {
                        m.count(Outcome::Hit);
                        return Lookup::Hit(serve(
                            &e,
                            req.method,
                            req.headers,
                            now,
                            Outcome::Hit,
                            true,
                        ));
                    }
                }
                // Not stored, not for this variant, or the wait ran out: upstream ourselves.
                let (seen, stored) = self.select(hash, &key, req);
                let mut f = self.fill(policy, key, hash, stored, None, req, now);
                f.seen = seen;
                f.collapsed = true;
                Lookup::Forward(f)
            }
        }
    }

    /// The memory tier's object for `key`, and the stored variant `req` selects from it.
    fn select(
        &self,
        hash: u64,
        key: &[u8],
        req: &CacheRequest<'_>,
    ) -> (Option<Arc<Object>>, Option<Arc<Entry>>) {
        let Some(obj) = self.inner.shared.memory.get(hash, key) else {
            return (None, None);
        };
        let v = obj
            .variants
            .iter()
            .rev()
            .find(|e| variant_matches(e, req))
            .cloned();
        (Some(obj), v)
    }

    #[allow(clippy::too_many_arguments)]
    fn fill(
        &self,
        policy: &Arc<Policy>,
        key: Vec<u8>,
        hash: u64,
        stale: Option<Arc<Entry>>,
        guard: Option<FillGuard>,
        req: &CacheRequest<'_>,
        now: SystemTime,
    ) -> Fill {
        Fill {
            route: self.inner.clone(),
            policy: policy.clone(),
            key: key.into(),
            hash,
            stale,
            seen: None,
            guard,
            request_time: now,
            request_headers: req.headers.clone(),
            url: url_of(req).into(),
            head: req.method == Method::HEAD,
            coding: req.coding,
            compresses: req.compresses,
            store: true,
            collapsed: false,
            background: false,
        }
    }
}

fn url_of(req: &CacheRequest<'_>) -> String {
    let mut u = String::with_capacity(req.host.len() + req.path.len() + 8);
    u.push_str(req.host);
    u.push_str(req.path);
    if let Some(q) = req.query {
        u.push('?');
        u.push_str(q);
    }
    u
}

/// The selecting values of `e.vary` in `headers`, with the coding first.
pub(crate) fn variant_of(vary: &[HeaderName], headers: &HeaderMap, coding: Coding) -> Vec<u8> {
    let mut out = vec![coding as u8];
    policy::vary_values(vary, headers, &mut out);
    out
}

/// The coding byte of a variant stored as it came (not compressed, though the client that
/// filled it would have taken a coding: too small, not a compressible type, no-transform)
/// on a route that compresses: it answers every client, whatever coding it negotiates.
pub(crate) const ANY_CODING: u8 = 0xFF;

/// Does stored variant `e` answer `req`: its coding (or any), then its Vary'd values.
pub(crate) fn variant_matches(e: &Entry, req: &CacheRequest<'_>) -> bool {
    match e.variant.first() {
        Some(&c) if c == req.coding as u8 || c == ANY_CODING => {}
        _ => return false,
    }
    if e.vary.is_empty() {
        return e.variant.len() == 1;
    }
    variant_of(&e.vary, req.headers, req.coding)[1..] == e.variant[1..]
}

/// A stored response as the answer to a request: 304 for a matching conditional, 206 or
/// 416 for a range, the headers alone for HEAD, with `Age` and the cache's status headers.
pub(crate) fn serve(
    e: &Entry,
    method: &Method,
    req: &HeaderMap,
    now: SystemTime,
    outcome: Outcome,
    collapsed: bool,
) -> Hit {
    let age = e.age(now);
    let mut cache_status = CacheStatus::new(outcome);
    cache_status.collapsed = collapsed;
    cache_status.ttl = Some(e.freshness.lifetime.as_secs() as i64 - age.as_secs() as i64);
    let age_value = HeaderValue::from(age.as_secs());
    if e.status == StatusCode::OK && policy::not_modified(req, &e.headers) {
        // RFC 9111 §4.3.2: the cache answers the client's conditional itself.
        let mut headers = policy::not_modified_headers(&e.headers);
        headers.insert(header::AGE, age_value);
        return Hit {
            status: StatusCode::NOT_MODIFIED,
            headers,
            body: Bytes::new(),
            cache_status,
        };
    }
    let mut headers = e.headers.clone();
    headers.insert(header::AGE, age_value);
    let len = e.body.len() as u64;
    if e.status == StatusCode::OK {
        match policy::range(method, req, &e.headers, len) {
            policy::RangeAnswer::Partial { start, end } => {
                headers.insert(
                    header::CONTENT_RANGE,
                    content_range(&format!("bytes {start}-{end}/{len}")),
                );
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
                return Hit {
                    status: StatusCode::PARTIAL_CONTENT,
                    headers,
                    body: e.body.slice(start as usize..=end as usize),
                    cache_status,
                };
            }
            policy::RangeAnswer::Unsatisfiable => {
                headers.insert(
                    header::CONTENT_RANGE,
                    content_range(&format!("bytes */{len}")),
                );
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                return Hit {
                    status: StatusCode::RANGE_NOT_SATISFIABLE,
                    headers,
                    body: Bytes::new(),
                    cache_status,
                };
            }
            // Several ranges: a full response is a correct answer to any Range (RFC 9110 §14.2).
            policy::RangeAnswer::Full | policy::RangeAnswer::Upstream => {}
        }
    }
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        e.body.clone()
    };
    Hit {
        status: e.status,
        headers,
        body,
        cache_status,
    }
}

fn content_range(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("bytes */0"))
}

impl RouteCache {
    pub(crate) fn inner(&self) -> &RouteInner {
        &self.inner
    }
}

mod fill;
pub use fill::{mark, Fill, FillResponse, Invalidation, Store};

#[cfg(test)]
mod tests;
