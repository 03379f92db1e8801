//! A route's cache: its policy and page rules compiled at snapshot build time, the lookup
//! a request makes, and the fill that stores its response on the way back.

use crate::coalesce::{self, FillGuard, Join};
use crate::compress::Coding;
use crate::entry::Entry;
use crate::key::{cookie, KeySpec};
use crate::memory::Object;
use crate::policy::{self, RequestDirectives, StoreOptions, Use, Vary};
use crate::status::{CacheStatus, Outcome};
use crate::Shared;
use bytes::{Bytes, BytesMut};
use headroom_config::cache::{CachePolicy, RouteCacheConfig};
use headroom_telemetry::{Counter, Registry};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use std::sync::Arc;
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

/// Per-route cache counters: `headroom_cache_requests_total{route, result}` and friends.
pub(crate) struct RouteMetrics {
    outcomes: [Arc<Counter>; 6],
    coalesced: Arc<Counter>,
    revalidations: Arc<Counter>,
    stored: Arc<Counter>,
    stored_bytes: Arc<Counter>,
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
        }
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

fn variant_matches(e: &Entry, req: &CacheRequest<'_>) -> bool {
    if e.variant.first() != Some(&(req.coding as u8)) {
        return false;
    }
    if e.vary.is_empty() {
        return e.variant.len() == 1;
    }
    variant_of(&e.vary, req.headers, req.coding) == *e.variant
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

/// A request sent upstream on the cache's behalf: what is needed to store its response.
pub struct Fill {
    route: Arc<RouteInner>,
    policy: Arc<Policy>,
    key: Box<[u8]>,
    hash: u64,
    /// The stored response being revalidated, or kept for stale-if-error.
    stale: Option<Arc<Entry>>,
    /// The URL's object as lookup saw it: storing adds to its variants without reading the
    /// memory tier again.
    seen: Option<Arc<Object>>,
    guard: Option<FillGuard>,
    request_time: SystemTime,
    request_headers: HeaderMap,
    url: Box<str>,
    head: bool,
    coding: Coding,
    compresses: bool,
    store: bool,
    collapsed: bool,
    background: bool,
}

/// What to do with the upstream's response.
pub enum FillResponse {
    /// Send it on, storing its body as it streams (boxed: the other answers are small).
    Store(Box<Store>),
    /// Send it on; not stored.
    Pass,
    /// Answer from the cache instead (a 304 refreshed the stored response, or
    /// stale-if-error).
    Replace(Hit),
}

/// Request headers the cache sets on a revalidation: the client's own conditionals are
/// replaced by the stored response's validators (its conditionals are answered from the
/// refreshed entry).
const CONDITIONALS: [HeaderName; 4] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

impl Fill {
    fn background(mut self) -> Fill {
        self.background = true;
        // The refresh is a GET, whatever method the client's request that started it.
        self.head = false;
        self
    }

    /// A background refresh (stale-while-revalidate): the edge sends it on its own.
    pub fn is_background(&self) -> bool {
        self.background
    }

    /// The headers of the request the edge sends (for a background refresh).
    pub fn request_headers(&self) -> &HeaderMap {
        &self.request_headers
    }

    /// Edits the upstream request: a revalidation carries the stored validators.
    pub fn prepare(&self, headers: &mut HeaderMap) {
        if let Some(e) = &self.stale {
            if e.headers.contains_key(header::ETAG) || e.headers.contains_key(header::LAST_MODIFIED)
            {
                for h in &CONDITIONALS {
                    headers.remove(h);
                }
                policy::validators(&e.headers, headers);
                self.route.metrics.revalidations.inc();
            }
        }
    }

    /// The upstream's response head: store it, pass it, or answer from the cache.
    pub fn response(mut self, status: StatusCode, headers: &mut HeaderMap) -> FillResponse {
        let now = self.route.shared.clock.now();
        let route = self.route.clone();
        let m = &route.metrics;
        let shared = route.shared.clone();
        if let Some(e) = self.stale.clone() {
            if status == StatusCode::NOT_MODIFIED && policy::matches_stored(&e.headers, headers) {
                // RFC 9111 §4.3.4: the 304 freshens the stored response.
                let fresh = self.freshened(&e, headers, now);
                let hit_entry = fresh.clone().unwrap_or(e);
                let mut hit = serve(
                    &hit_entry,
                    &if self.head { Method::HEAD } else { Method::GET },
                    &self.request_headers,
                    now,
                    Outcome::Revalidated,
                    self.collapsed,
                );
                hit.cache_status.fwd_status = Some(304);
                if !self.background {
                    m.count(Outcome::Revalidated);
                }
                if let Some(f) = fresh {
                    self.insert(f.clone());
                    if let Some(g) = self.guard.take() {
                        g.complete(Some(f));
                    }
                }
                return FillResponse::Replace(hit);
            }
            if status == StatusCode::NOT_MODIFIED {
                // §4.3.3: a 304 naming another validator must not update the stored
                // response. It answered our conditional, not the client's: the client gets
                // the stored response as it is (never a 304 it did not ask for), and the
                // entry is dropped so the next request fetches it whole.
                shared.memory.remove_variant(self.hash, &self.key, &e);
                let mut hit = serve(
                    &e,
                    &if self.head { Method::HEAD } else { Method::GET },
                    &self.request_headers,
                    now,
                    Outcome::Revalidated,
                    self.collapsed,
                );
                hit.cache_status.fwd_status = Some(304);
                hit.cache_status.detail = Some("unmatched-304");
                if !self.background {
                    m.count(Outcome::Revalidated);
                }
                return FillResponse::Replace(hit);
            }
            if status.is_server_error() && (500..=504).contains(&status.as_u16()) {
                if let Some(hit) = self.stale_if_error(&e, now) {
                    return FillResponse::Replace(hit);
                }
            }
        }
        let outcome = if self.stale.is_some() {
            Outcome::Expired
        } else {
            Outcome::Miss
        };
        let mut cs = CacheStatus::new(outcome);
        cs.fwd_status = Some(status.as_u16());
        cs.collapsed = self.collapsed;
        if !self.background {
            m.count(outcome);
        }
        let opts = self.policy.store_options(shared.cfg.heuristic_cap);
        let verdict = policy::storable(
            &Method::GET,
            &self.request_headers,
            status,
            headers,
            &opts,
            now,
        );
        let freshness = match verdict {
            Ok(f) if self.store && !self.head => f,
            Ok(_) => {
                cs.detail = Some(if self.head {
                    "head"
                } else {
                    "request-no-store"
                });
                self.mark(headers, cs);
                return FillResponse::Pass;
            }
            Err(why) => {
                cs.detail = Some(why.as_str());
                self.mark(headers, cs);
                return FillResponse::Pass;
            }
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > shared.cfg.max_object) {
            cs.detail = Some("too-big");
            self.mark(headers, cs);
            return FillResponse::Pass;
        }
        let vary = match policy::vary(headers) {
            Vary::Star => {
                cs.detail = Some("vary-star");
                self.mark(headers, cs);
                return FillResponse::Pass;
            }
            Vary::None => Vec::new(),
            Vary::Fields(f) => f,
        };
        // What selects this variant: the coding (when the route compresses and did it
        // itself, `Accept-Encoding` is covered by it), then the other Vary fields.
        let ours = self.compresses
            && headers
                .get(header::CONTENT_ENCODING)
                .is_some_and(|v| v.as_bytes() == self.coding.as_str().as_bytes());
        let select: Vec<HeaderName> = vary
            .into_iter()
            .filter(|f| !(ours && f == header::ACCEPT_ENCODING))
            .collect();
        if select.len() > 32 {
            cs.detail = Some("vary-too-wide");
            self.mark(headers, cs);
            return FillResponse::Pass;
        }
        cs.stored = true;
        self.mark(headers, cs);
        let variant = variant_of(&select, &self.request_headers, self.coding);
        let stored_headers = crate::headers::storable_copy(headers);
        FillResponse::Store(Box::new(Store {
            buf: BytesMut::with_capacity(declared.unwrap_or(0).min(1 << 20) as usize),
            limit: shared.cfg.max_object,
            status,
            headers: stored_headers,
            freshness,
            vary: select.into(),
            variant: variant.into(),
            initial_age: policy::initial_age(headers, self.request_time, now),
            response_time: now,
            fill: Some(self),
        }))
    }

    /// The upstream failed (error, timeout, no healthy replica): a stale response instead,
    /// if stale-if-error allows it.
    pub fn error(mut self) -> Option<Hit> {
        let stale = self.stale.clone();
        if let Some(hit) =
            stale.and_then(|e| self.stale_if_error(&e, self.route.shared.clock.now()))
        {
            return Some(hit);
        }
        if !self.background {
            let o = if self.stale.is_some() {
                Outcome::Expired
            } else {
                Outcome::Miss
            };
            self.route.metrics.count(o);
        }
        None
    }

    fn stale_if_error(&mut self, e: &Arc<Entry>, now: SystemTime) -> Option<Hit> {
        let directives = RequestDirectives::parse(&self.request_headers);
        if !policy::stale_if_error(&directives, &e.freshness, e.age(now)) {
            return None;
        }
        if !self.background {
            self.route.metrics.count(Outcome::Stale);
        }
        let method = if self.head { Method::HEAD } else { Method::GET };
        let mut hit = serve(
            e,
            &method,
            &self.request_headers,
            now,
            Outcome::Stale,
            false,
        );
        hit.cache_status.detail = Some("stale-if-error");
        Some(hit)
    }

    /// The stored response with the 304's headers; `None` if it is no longer storable.
    fn freshened(
        &self,
        e: &Entry,
        not_modified: &HeaderMap,
        now: SystemTime,
    ) -> Option<Arc<Entry>> {
        let mut headers = e.headers.clone();
        policy::freshen(&mut headers, not_modified);
        let opts = self
            .policy
            .store_options(self.route.shared.cfg.heuristic_cap);
        let freshness = policy::storable(
            &Method::GET,
            &self.request_headers,
            e.status,
            &headers,
            &opts,
            now,
        )
        .ok()?;
        let initial_age = policy::initial_age(not_modified, self.request_time, now);
        Some(Arc::new(Entry::new(
            e.status,
            headers,
            e.body.clone(),
            now,
            initial_age,
            freshness,
            e.url.clone(),
            e.tags.clone(),
            e.vary.clone(),
            e.variant.clone(),
            e.coding,
        )))
    }

    fn mark(&self, headers: &mut HeaderMap, cs: CacheStatus) {
        mark(headers, &cs, self.route.shared.cfg.x_cache);
    }

    fn insert(&self, e: Arc<Entry>) {
        self.route
            .shared
            .insert_everywhere(self.hash, &self.key, e, self.seen.as_deref());
    }
}

/// Sets `Cache-Status` and, when configured, `X-Cache`.
pub fn mark(headers: &mut HeaderMap, cs: &CacheStatus, x_cache: bool) {
    headers.insert(crate::headers::CACHE_STATUS, cs.header());
    if x_cache {
        headers.insert(crate::headers::X_CACHE, cs.outcome.x_cache());
    }
}

/// A response body being stored as it streams to its client.
pub struct Store {
    buf: BytesMut,
    limit: u64,
    status: StatusCode,
    headers: HeaderMap,
    freshness: policy::Freshness,
    vary: Box<[HeaderName]>,
    variant: Box<[u8]>,
    initial_age: Duration,
    response_time: SystemTime,
    /// `None` once the body went past the object limit: not stored, waiters released.
    fill: Option<Fill>,
}

impl Store {
    /// A chunk of the body went to the client.
    pub fn data(&mut self, chunk: &[u8]) {
        if self.fill.is_none() {
            return;
        }
        if (self.buf.len() + chunk.len()) as u64 > self.limit {
            // Streams past the cache from here: the waiters go upstream themselves.
            self.fill = None;
            self.buf = BytesMut::new();
            return;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The body ended: stored when it came whole. `complete = false` (the upstream broke
    /// off, lied about its length, or the client went away) stores nothing.
    pub fn end(mut self, complete: bool) {
        let Some(mut fill) = self.fill.take() else {
            return;
        };
        if !complete {
            return;
        }
        let body = std::mem::take(&mut self.buf).freeze();
        let mut headers = std::mem::take(&mut self.headers);
        crate::headers::prepare_for_storage(&mut headers, body.len(), self.response_time);
        let tags = crate::headers::tags(&headers);
        let entry = Arc::new(Entry::new(
            self.status,
            headers,
            body,
            self.response_time,
            self.initial_age,
            self.freshness,
            fill.url.clone(),
            tags,
            std::mem::take(&mut self.vary),
            std::mem::take(&mut self.variant),
            fill.coding,
        ));
        let m = &fill.route.metrics;
        m.stored.inc();
        m.stored_bytes.add(entry.body.len() as u64);
        fill.insert(entry.clone());
        if let Some(g) = fill.guard.take() {
            g.complete(Some(entry));
        }
    }
}

/// An unsafe request's invalidation (RFC 9111 §4.4).
pub struct Invalidation {
    shared: Arc<Shared>,
    host: Box<str>,
}

impl Invalidation {
    /// The response came: a non-error one invalidates the target URI and the same-origin
    /// `Location` and `Content-Location`.
    pub fn response(
        self,
        method: &Method,
        status: StatusCode,
        uri: &http::Uri,
        headers: &HeaderMap,
    ) {
        for url in policy::invalidated(method, status, uri, &self.host, headers) {
            let full = format!("{}{}", self.host, url);
            self.shared.purge(crate::purge::Purge::new(
                crate::purge::PurgeKind::Url(full),
                false,
            ));
        }
    }
}

impl RouteCache {
    pub(crate) fn inner(&self) -> &RouteInner {
        &self.inner
    }
}

#[cfg(test)]
mod tests;
