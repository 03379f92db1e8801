//! Route-level cache tests: each caching behaviour, named after it, with the RFC section it
//! follows (RFC 9111 unless said), driven through `lookup` → `Fill` → `Store` as the edge
//! drives them. Time is a manual [`Clock`]: freshness and staleness windows are crossed by
//! advancing it, never by waiting; coalescing waits run on paused tokio time.

use super::*;
use crate::{Cache, Clock, Entry};
use headroom_config::cache::CacheConfig;
use std::time::UNIX_EPOCH;

mod coalesce;
mod freshness;
mod rules;
mod serving;
mod stale;

/// 2023-11-14T22:13:20Z: a whole second, so `Date` (second precision) is exact.
const START: u64 = 1_700_000_000;
const HOST: &str = "example.com";

/// `[cache]` with the defaults documented in headroom-config's model.
fn store_config() -> CacheConfig {
    CacheConfig {
        memory: 256 << 20,
        max_object: 8 << 20,
        max_key: 8 << 10,
        max_variants: 16,
        coalesce_wait: Duration::from_secs(10),
        heuristic_cap: Duration::from_secs(86_400),
        x_cache: true,
        redis: None,
    }
}

fn route_config() -> RouteCacheConfig {
    RouteCacheConfig {
        policy: CachePolicy::default(),
        rules: vec![],
        purge_method: false,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// An upstream response: `Date` is added (the clock's now) when not given.
#[derive(Clone)]
struct Origin {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
}

fn origin(status: u16, headers: &[(&str, &str)], body: &str) -> Origin {
    Origin {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

/// 200 with this `Cache-Control`.
fn ok(cache_control: &str, body: &str) -> Origin {
    origin(200, &[("cache-control", cache_control)], body)
}

fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// What the client got.
struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// The upstream was asked (a miss, a revalidation, a bypass).
    asked: bool,
    /// The request headers the upstream got (after `Fill::prepare`).
    sent: HeaderMap,
    /// A stale-while-revalidate hit's background refresh.
    refresh: Option<Fill>,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |v| v.to_str().unwrap_or(""))
    }
    fn x_cache(&self) -> &str {
        self.header("x-cache")
    }
    fn cache_status(&self) -> &str {
        self.header("cache-status")
    }
    fn age(&self) -> u64 {
        self.header("age").parse().expect("an Age header")
    }
    fn body(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

struct Harness {
    clock: Clock,
    cache: Cache,
    route: RouteCache,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(store_config(), route_config())
    }

    fn with(cfg: CacheConfig, rc: RouteCacheConfig) -> Harness {
        let clock = Clock::manual(UNIX_EPOCH + secs(START));
        let cache = Cache::with_clock(&cfg, &Arc::new(Registry::new()), clock.clone());
        let route = cache.route("r", &rc);
        Harness {
            clock,
            cache,
            route,
        }
    }

    fn with_policy(edit: impl FnOnce(&mut CachePolicy)) -> Harness {
        let mut rc = route_config();
        edit(&mut rc.policy);
        Harness::with(store_config(), rc)
    }

    fn advance(&self, s: u64) {
        self.clock.advance(secs(s));
    }

    /// The store's registry as `/metrics` shows it.
    fn metrics(&self) -> String {
        self.cache.shared.registry.render()
    }

    /// An HTTP-date `s` seconds before now.
    fn ago(&self, s: u64) -> String {
        httpdate::fmt_http_date(self.clock.now() - secs(s))
    }

    async fn lookup(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Lookup {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let headers = header_map(headers);
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        self.route
            .lookup(&CacheRequest {
                method: &method,
                host: HOST,
                path,
                query,
                headers: &headers,
                coding: Coding::Identity,
                compresses: false,
            })
            .await
    }

    async fn get(&self, target: &str, headers: &[(&str, &str)], up: &Origin) -> Got {
        self.send("GET", target, headers, up).await
    }

    /// One request through the cache: a `Forward` is answered by `up` and stored as the
    /// edge would store it.
    async fn send(&self, method: &str, target: &str, headers: &[(&str, &str)], up: &Origin) -> Got {
        match self.lookup(method, target, headers).await {
            Lookup::Hit(hit) => from_hit(hit, false, HeaderMap::new()),
            Lookup::HitAndRefresh(hit, fill) => {
                let mut got = from_hit(hit, false, HeaderMap::new());
                got.refresh = Some(fill);
                got
            }
            Lookup::Forward(fill) => self.forward(fill, up),
            Lookup::Bypass(why) => {
                let mut got = self.upstream(up, header_map(headers));
                let mut cs = CacheStatus::new(Outcome::Bypass);
                cs.detail = Some(why);
                mark(&mut got.headers, &cs, true);
                got
            }
            Lookup::GatewayTimeout => Got {
                status: StatusCode::GATEWAY_TIMEOUT,
                headers: HeaderMap::new(),
                body: Bytes::new(),
                asked: false,
                sent: HeaderMap::new(),
                refresh: None,
            },
            Lookup::Pass | Lookup::Invalidate(_) | Lookup::Purge(_) => {
                panic!("not a GET/HEAD lookup")
            }
        }
    }

    fn upstream(&self, up: &Origin, sent: HeaderMap) -> Got {
        let mut headers = HeaderMap::new();
        for (k, v) in &up.headers {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        if !headers.contains_key(header::DATE) {
            let date = httpdate::fmt_http_date(self.clock.now());
            headers.insert(header::DATE, HeaderValue::from_str(&date).unwrap());
        }
        Got {
            status: StatusCode::from_u16(up.status).unwrap(),
            headers,
            body: up.body.clone(),
            asked: true,
            sent,
            refresh: None,
        }
    }

    /// The upstream answers `fill`'s request with `up`; its body streams through `Store`
    /// in 4-byte chunks.
    fn forward(&self, fill: Fill, up: &Origin) -> Got {
        let mut sent = fill.request_headers().clone();
        fill.prepare(&mut sent);
        let mut got = self.upstream(up, sent);
        match fill.response(got.status, &mut got.headers) {
            FillResponse::Store(mut store) => {
                for chunk in got.body.chunks(4) {
                    store.data(chunk);
                }
                store.end(true);
                got
            }
            FillResponse::Pass => got,
            FillResponse::Replace(hit) => from_hit(hit, true, got.sent),
        }
    }

    /// The entries stored for `host/path`, all variants.
    fn stored(&self, url: &str) -> Vec<Arc<Entry>> {
        self.cache
            .shared
            .memory
            .map
            .iter()
            .flat_map(|(_, o)| o.variants.to_vec())
            .filter(|e| &*e.url == url)
            .collect()
    }
}

fn from_hit(hit: Hit, asked: bool, sent: HeaderMap) -> Got {
    let mut headers = hit.headers;
    mark(&mut headers, &hit.cache_status, true);
    Got {
        status: hit.status,
        headers,
        body: hit.body,
        asked,
        sent,
        refresh: None,
    }
}

fn forwarded(l: Lookup) -> Fill {
    match l {
        Lookup::Forward(f) => f,
        other => panic!("expected Forward, got {}", kind(&other)),
    }
}

fn kind(l: &Lookup) -> &'static str {
    match l {
        Lookup::Pass => "Pass",
        Lookup::Bypass(_) => "Bypass",
        Lookup::Hit(_) => "Hit",
        Lookup::HitAndRefresh(..) => "HitAndRefresh",
        Lookup::Forward(_) => "Forward",
        Lookup::GatewayTimeout => "GatewayTimeout",
        Lookup::Invalidate(_) => "Invalidate",
        Lookup::Purge(_) => "Purge",
    }
}
