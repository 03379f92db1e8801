//! The fill: a request sent upstream on the cache's behalf, and what becomes of its
//! response — stored as it streams ([`Store`]), freshened by a 304, replaced by a stale
//! response when the upstream failed — and an unsafe request's [`Invalidation`].

use super::{serve, variant_of, Hit, Policy, RouteInner};
use crate::coalesce::FillGuard;
use crate::compress::Coding;
use crate::entry::Entry;
use crate::memory::Object;
use crate::policy::{self, RequestDirectives, Vary};
use crate::status::{CacheStatus, Outcome};
use crate::Shared;
use bytes::BytesMut;
use http::header::{self, HeaderName};
use http::{HeaderMap, Method, StatusCode};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A request sent upstream on the cache's behalf: what is needed to store its response.
pub struct Fill {
    pub(super) route: Arc<RouteInner>,
    pub(super) policy: Arc<Policy>,
    pub(super) key: Box<[u8]>,
    pub(super) hash: u64,
    /// The stored response being revalidated, or kept for stale-if-error.
    pub(super) stale: Option<Arc<Entry>>,
    /// The URL's object as lookup saw it: storing adds to its variants without reading the
    /// memory tier again.
    pub(super) seen: Option<Arc<Object>>,
    pub(super) guard: Option<FillGuard>,
    pub(super) request_time: SystemTime,
    pub(super) request_headers: HeaderMap,
    pub(super) url: Box<str>,
    pub(super) head: bool,
    pub(super) coding: Coding,
    pub(super) compresses: bool,
    pub(super) store: bool,
    pub(super) collapsed: bool,
    pub(super) background: bool,
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
    pub(super) fn background(mut self) -> Fill {
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
                let hit = self.revalidated(fresh.as_ref().unwrap_or(&e), now, None);
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
                return FillResponse::Replace(self.revalidated(&e, now, Some("unmatched-304")));
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
                let why = if self.head {
                    "head"
                } else {
                    "request-no-store"
                };
                return self.pass(headers, cs, why);
            }
            Err(why) => return self.pass(headers, cs, why.as_str()),
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > shared.cfg.max_object) {
            return self.pass(headers, cs, "too-big");
        }
        let vary = match policy::vary(headers) {
            Vary::Star => {
                return self.pass(headers, cs, "vary-star");
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
            return self.pass(headers, cs, "vary-too-wide");
        }
        cs.stored = true;
        self.mark(headers, cs);
        // Read before the cookie is left out of the stored copy: what the advisor weighs
        // (a body that came with a cookie, handed to every later client).
        let set_cookie = headers.contains_key(header::SET_COOKIE);
        let mut variant = variant_of(&select, &self.request_headers, self.coding);
        if self.compresses
            && self.coding != Coding::Identity
            && !headers.contains_key(header::CONTENT_ENCODING)
        {
            // Sent as it is to a client that would have taken a coding: it is what every
            // client gets, whatever it negotiates.
            variant[0] = super::ANY_CODING;
        }
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
            set_cookie,
            fill: Some(self),
        }))
    }

    /// Passes the response on unstored for `why`: its `Cache-Status` detail, and
    /// `headroom_cache_not_stored_total{reason}` (a background refresh is not counted,
    /// as it is not counted a miss).
    fn pass(
        &self,
        headers: &mut HeaderMap,
        mut cs: CacheStatus,
        why: &'static str,
    ) -> FillResponse {
        cs.detail = Some(why);
        self.mark(headers, cs);
        self.not_stored(why);
        FillResponse::Pass
    }

    fn not_stored(&self, why: &'static str) {
        if !self.background {
            let r = &self.route;
            r.metrics.not_stored(&r.shared.registry, &r.name, why);
        }
    }

    /// The stored response `e` answering after a 304 from upstream, counted as revalidated.
    fn revalidated(&self, e: &Entry, now: SystemTime, detail: Option<&'static str>) -> Hit {
        let method = if self.head { Method::HEAD } else { Method::GET };
        let mut hit = serve(
            e,
            &method,
            &self.request_headers,
            now,
            Outcome::Revalidated,
            self.collapsed,
        );
        hit.cache_status.fwd_status = Some(304);
        hit.cache_status.detail = detail;
        if !self.background {
            self.route.metrics.count(Outcome::Revalidated);
        }
        hit
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
    /// The response came with Set-Cookie (stored without it, `allow_set_cookie`).
    set_cookie: bool,
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
            if let Some(f) = self.fill.take() {
                f.not_stored("too-big");
            }
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
            fill.not_stored("incomplete");
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
        if self.set_cookie {
            m.stored_set_cookie(&fill.route.shared.registry, &fill.route.name);
        }
        fill.insert(entry.clone());
        if let Some(g) = fill.guard.take() {
            g.complete(Some(entry));
        }
    }
}

/// An unsafe request's invalidation (RFC 9111 §4.4).
pub struct Invalidation {
    pub(super) shared: Arc<Shared>,
    pub(super) host: Box<str>,
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
