//! The routing table: one immutable value built from a [`Config`], swapped atomically on
//! reload. Live per-replica state ([`Replica`]) and retry budgets are looked up in [`Live`]
//! by stable ids while building, so they survive the swap.

use crate::balancer::Balancer;
use crate::pipeline::admit::Admission;
use crate::pipeline::compress::CompressRule;
use crate::pipeline::lookup::CacheRule;
use crate::replica::Replica;
use crate::replica_set::{set_weight, Membership, Source};
use crate::retry::RetryBudget;
use bytes::Bytes;
use headroom_cache::Cache;
use headroom_config::{Action, Config, HostMatch, PathMatch, RouteConfig, ServiceConfig};
use headroom_guard::Guard;
use headroom_telemetry::access_log::Format;
use headroom_telemetry::{Counter, Histogram, Registry};
use http::{HeaderName, HeaderValue, Method};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The routing table in force.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub routes: Vec<Route>,
    pub services: Vec<Arc<Service>>,
    pub access_log: Option<Format>,
    /// `[watch.tracing]`: which requests get spans; `None` when tracing is off (a request
    /// then pays one branch for it).
    pub tracing: Option<Arc<headroom_telemetry::trace::Sampler>>,
    /// Listener names in index order (a route's `listeners` mask uses these indices).
    pub listener_names: Vec<String>,
    /// The cache store, when a route caches (kept across snapshots in [`Live`]).
    pub cache: Option<Cache>,
    /// `[cache] x_cache`: answers through the cache carry `X-Cache`.
    pub cache_x_header: bool,
}

/// Request counters by status class for one (route, service) pair.
#[derive(Debug, Clone)]
pub struct Red {
    by_class: [Arc<Counter>; 5],
}

impl Red {
    fn new(registry: &Registry, route: &str, service: &str) -> Self {
        let class = |c: &str| {
            registry.counter(
                "headroom_requests_total",
                "Requests answered, by route, service and status class.",
                &[("route", route), ("service", service), ("class", c)],
            )
        };
        Red {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
        }
    }

    /// Counters for requests answered before any route matched.
    pub fn new_unrouted(registry: &Registry) -> Self {
        Red::new(registry, "", "")
    }

    /// Requests counted so far by status class, 1xx to 5xx. Reads every shard.
    pub fn counts(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.by_class[i].get())
    }

    pub fn record(&self, status: u16) {
        let i = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[i].inc();
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    /// Bit i set: serves listener i.
    pub listeners: u64,
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    pub methods: Vec<Method>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub action: RouteAction,
    pub strip_prefix: Option<String>,
    pub rewrite_prefix: Option<String>,
    pub request_add: Vec<(HeaderName, HeaderValue)>,
    pub request_remove: Vec<HeaderName>,
    pub response_add: Vec<(HeaderName, HeaderValue)>,
    pub response_remove: Vec<HeaderName>,
    /// Admission policies (guard), checked in order by the `admit` phase; empty: skipped.
    pub admit: Box<[Admission]>,
    /// `[route.access] max_body`: bytes a request body may have here (the listener's
    /// `max_body_bytes` still caps it).
    pub max_body: Option<u64>,
    /// Under load shedding (its services' `[service.NAME.shed]`).
    pub priority: headroom_guard::Priority,
    /// The cache rule the `lookup` phase applies; `None`: skipped.
    pub cache: Option<CacheRule>,
    /// `[route.compress]`; `None`: responses go as they are.
    pub compress: Option<CompressRule>,
    /// Red for fixed responses, redirects and requests that never reached a service.
    pub red: Red,
    pub latency: Arc<Histogram>,
    /// Its slow requests' paths (`log` checks each request against its threshold), kept
    /// across reloads in [`Live`].
    pub slow: Arc<crate::route_slow::SlowPaths>,
    /// `headroom_route_cacheable_responses_total`: a forwarding route without a cache
    /// counts the GET 200s a shared cache could have stored (`respond` checks them); `None`
    /// on a route with a cache or one that does not forward.
    pub cacheable: Option<Arc<Counter>>,
}

#[derive(Debug)]
pub struct Target {
    pub service: Arc<Service>,
    pub red: Red,
}

#[derive(Debug)]
pub enum RouteAction {
    Forward(Target),
    /// Targets with cumulative weights; `total` is the last one.
    Split {
        targets: Vec<(Target, u32)>,
        total: u32,
    },
    Redirect {
        to: String,
        status: u16,
    },
    Respond {
        status: u16,
        body: Bytes,
        content_type: HeaderValue,
    },
}

#[derive(Debug)]
pub struct Service {
    pub name: Arc<str>,
    pub cfg: ServiceConfig,
    pub replicas: Vec<Arc<Replica>>,
    /// Where each replica came from, by index.
    pub sources: Vec<Source>,
    pub balancer: Balancer,
    pub budget: Arc<RetryBudget>,
    pub retry_methods: Vec<Method>,
    pub upstream_latency: Arc<Histogram>,
    pub retries: Arc<Counter>,
    pub retries_denied: Arc<Counter>,
    /// Upstream connections opened (pooled ones reused are not): with the requests
    /// forwarded, how well keep-alive works (`headroom advise`'s `connection_churn`).
    pub connections_opened: Arc<Counter>,
    /// Requests that found `max_conns` connections busy and waited for one.
    pub pool_waits: Arc<Counter>,
    pub connect_errors: Arc<Counter>,
    pub timeouts: Arc<Counter>,
    /// `read_timeout`, with `headroom_upstream_errors_total{kind="read_timeout"}`.
    pub read_timeout: Arc<crate::body::ReadTimeout>,
    /// Load shedding and the circuit breaker; `None`: neither (nothing paid).
    pub protect: Option<crate::protect::Protection>,
    /// Scale from zero (`autoscale.min = 0`): requests finding no replica wait here.
    pub cold_start: Option<Arc<crate::cold_start::ColdStart>>,
}

impl Service {
    fn new(
        name: &str,
        sc: &ServiceConfig,
        replicas: Vec<Arc<Replica>>,
        sources: Vec<Source>,
        budget: Arc<RetryBudget>,
        protect: Option<crate::protect::Protection>,
        registry: &Registry,
    ) -> Service {
        let labels = [("service", name)];
        let err = |kind: &str| {
            registry.counter(
                "headroom_upstream_errors_total",
                "Failed upstream attempts, by service and kind.",
                &[("service", name), ("kind", kind)],
            )
        };
        Service {
            name: name.into(),
            balancer: Balancer::new(sc.balance, &replicas),
            replicas,
            sources,
            budget,
            retry_methods: sc
                .retry
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            upstream_latency: registry.histogram(
                "headroom_upstream_duration_seconds",
                "Time from sending a request upstream to its response headers.",
                &labels,
            ),
            retries: registry.counter(
                "headroom_retries_total",
                "Retries sent to another replica.",
                &labels,
            ),
            retries_denied: registry.counter(
                "headroom_retries_denied_total",
                "Retries not sent because the retry budget was spent.",
                &labels,
            ),
            connections_opened: registry.counter(
                "headroom_upstream_connections_opened_total",
                "Connections opened to the service's replicas (a pooled connection reused is not counted).",
                &labels,
            ),
            pool_waits: registry.counter(
                "headroom_upstream_pool_waits_total",
                "Requests that found max_conns connections to their replica busy and waited for one to come back.",
                &labels,
            ),
            connect_errors: err("connect"),
            timeouts: err("timeout"),
            read_timeout: Arc::new(crate::body::ReadTimeout::new(
                sc.read_timeout,
                name.into(),
                err("read_timeout"),
            )),
            protect,
            cold_start: None,
            cfg: sc.clone(),
        }
    }

    /// Share of replicas passively ejected right now, counting one more.
    pub fn ejected_share_with_one_more(&self, now: u64) -> f64 {
        let ejected = self.replicas.iter().filter(|r| r.is_ejected(now)).count() + 1;
        ejected as f64 / self.replicas.len().max(1) as f64
    }
}

/// State that outlives snapshots, keyed by stable ids.
#[derive(Debug)]
pub struct Live {
    pub registry: Arc<Registry>,
    pub workers: usize,
    replicas: Mutex<HashMap<(String, String), Arc<Replica>>>,
    budgets: Mutex<HashMap<String, Arc<RetryBudget>>>,
    /// Each service's shedder and breaker, kept while their config stays the same.
    protections: Mutex<HashMap<String, crate::protect::Protection>>,
    membership: Mutex<Membership>,
    /// Route, service and consumer names of the last build, so a reload can forget the
    /// series of those it removed.
    names: Mutex<(HashSet<String>, HashSet<String>, HashSet<String>)>,
    /// The cache store: made when a route first caches, kept across reloads while
    /// `[cache]` stays the same.
    cache: Mutex<Option<Cache>>,
    /// The guard (rate limiters' state): made when a route first has limits, kept across
    /// reloads while `[guard]` stays the same.
    guard: Mutex<Option<Arc<Guard>>>,
    /// Each route's slow paths, by route name.
    slow: Mutex<HashMap<String, Arc<crate::route_slow::SlowPaths>>>,
    /// The cold-start gates of services that may scale to zero, by service name.
    cold: Mutex<HashMap<String, Arc<crate::cold_start::ColdStart>>>,
}

impl Live {
    pub fn new(registry: Arc<Registry>, workers: usize) -> Self {
        Live {
            registry,
            workers,
            replicas: Mutex::default(),
            budgets: Mutex::default(),
            protections: Mutex::default(),
            membership: Mutex::default(),
            names: Mutex::default(),
            cache: Mutex::default(),
            guard: Mutex::default(),
            slow: Mutex::default(),
            cold: Mutex::default(),
        }
    }

    /// The guard for `cfg`: the one in use if `[guard]` did not change (limits keep their
    /// counts), a new one if it did; `None` when no route has limits.
    fn guard_for(&self, cfg: &Config) -> Option<Arc<Guard>> {
        let mut slot = self.guard.lock().unwrap_or_else(|p| p.into_inner());
        let guarded = |r: &headroom_config::RouteConfig| {
            !r.limits.is_empty() || r.auth.is_some() || r.access.is_some() || r.cors.is_some()
        };
        if !cfg.routes.iter().any(guarded) {
            *slot = None;
            return None;
        }
        match &*slot {
            Some(g) if g.config() == &cfg.guard => {}
            _ => *slot = Some(Arc::new(Guard::new(&cfg.guard, &self.registry))),
        }
        slot.clone()
    }

    /// The cache store for `cfg`: the one in use if `[cache]` did not change, a new one
    /// (empty) if it did; `None` when no route caches.
    fn cache_for(&self, cfg: &Config) -> Option<Cache> {
        let mut slot = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if !cfg.routes.iter().any(|r| r.cache.is_some()) {
            *slot = None;
            return None;
        }
        match &*slot {
            Some(c) if c.config() == &cfg.cache => {}
            _ => *slot = Some(Cache::new(&cfg.cache, &self.registry)),
        }
        slot.clone()
    }

    pub(crate) fn membership(&self) -> MutexGuard<'_, Membership> {
        self.membership.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the live state of a replica about to be added at runtime: in slow start from
    /// now, and, when its service has health checks, out until its first passing check.
    pub(crate) fn prepare_runtime_replica(
        &self,
        service: &str,
        label: &str,
        addr: std::net::SocketAddr,
        weight: u32,
        checked: bool,
    ) {
        let mut replicas = self.replicas.lock().unwrap_or_else(|p| p.into_inner());
        let key = (service.to_string(), label.to_string());
        if replicas.get(&key).is_some_and(|r| r.addr == addr) {
            return;
        }
        let initial = mean_ewma(
            replicas
                .iter()
                .filter(|((s, _), _)| s == service)
                .map(|(_, r)| r),
        );
        let r = Replica::new(
            service,
            label,
            addr,
            weight,
            initial,
            self.workers,
            &self.registry,
        );
        r.start_at_runtime(checked);
        replicas.insert(key, Arc::new(r));
    }

    /// Keeps runtime replicas only of services that still exist, and forgets config
    /// replicas drained at runtime (a reload brings the file's replicas back). Returns the
    /// count of runtime replicas kept, by service.
    pub(crate) fn reconcile_membership(&self, cfg: &Config) -> Vec<(String, usize)> {
        let mut m = self.membership();
        m.removed.clear();
        m.added.retain(|service, list| {
            let stays = cfg.services.contains_key(service);
            if !stays {
                tracing::info!(
                    service,
                    replicas = list.len(),
                    "service removed by the reload: its runtime-added replicas go too"
                );
            }
            stays && !list.is_empty()
        });
        m.added
            .iter()
            .map(|(s, list)| (s.clone(), list.len()))
            .collect()
    }
}

/// The mean peak-EWMA latency of `replicas`, 1 ms when there are none: where a replica new
/// to a service starts, so it is neither flooded as "fastest" nor starved as "slowest" (the
/// floor RTT of linkerd's balancer, learnt).
fn mean_ewma<'a>(replicas: impl Iterator<Item = &'a Arc<Replica>>) -> Duration {
    let (mut sum, mut n) = (0.0, 0u32);
    for r in replicas {
        sum += r.ewma();
        n += 1;
    }
    if n == 0 {
        Duration::from_millis(1)
    } else {
        Duration::from_nanos((sum / f64::from(n)) as u64)
    }
}

/// One member of a service as a build sees it.
struct Member<'a> {
    label: &'a str,
    addr: std::net::SocketAddr,
    weight: u32,
    source: Source,
}

/// The service's members: the config's (less those drained at runtime), then the runtime
/// additions.
fn members<'a>(name: &str, sc: &'a ServiceConfig, m: &'a Membership) -> Vec<Member<'a>> {
    let mut out: Vec<Member<'a>> = sc
        .replicas
        .iter()
        .filter(|r| !m.removed.contains(&(name.to_string(), r.label.clone())))
        .map(|r| Member {
            label: &r.label,
            addr: r.addr,
            weight: r.weight,
            source: Source::Config,
        })
        .collect();
    for a in m.added.get(name).into_iter().flatten() {
        if !sc.replicas.iter().any(|r| r.label == a.label) {
            out.push(Member {
                label: &a.label,
                addr: a.addr,
                weight: a.weight,
                source: a.source,
            });
        }
    }
    out
}

fn header_pairs(pairs: &[(String, String)]) -> Vec<(HeaderName, HeaderValue)> {
    // Names and values were validated by headroom-config; anything left unparsable is skipped.
    pairs
        .iter()
        .filter_map(|(k, v)| {
            Some((
                HeaderName::from_bytes(k.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        })
        .collect()
}

fn header_names(names: &[String]) -> Vec<HeaderName> {
    names
        .iter()
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect()
}

impl Route {
    /// Compiles one route: its matcher, action, header edits, policies and counters.
    fn build(
        rc: &RouteConfig,
        services: &HashMap<&str, Arc<Service>>,
        listener_names: &[String],
        registry: &Registry,
        cache: Option<&Cache>,
        guard: Option<headroom_guard::RouteGuard>,
        slow: &mut HashMap<String, Arc<crate::route_slow::SlowPaths>>,
    ) -> Route {
        let target = |svc: &str| Target {
            service: services[svc].clone(),
            red: Red::new(registry, &rc.name, svc),
        };
        let action = match &rc.action {
            Action::Forward(s) => RouteAction::Forward(target(s)),
            Action::Split(parts) => {
                let mut total = 0;
                let targets = parts
                    .iter()
                    .map(|(s, w)| {
                        total += w;
                        (target(s), total)
                    })
                    .collect();
                RouteAction::Split { targets, total }
            }
            Action::Redirect { to, status } => RouteAction::Redirect {
                to: to.clone(),
                status: *status,
            },
            Action::Respond {
                status,
                body,
                content_type,
            } => RouteAction::Respond {
                status: *status,
                body: Bytes::from(body.clone()),
                content_type: HeaderValue::from_str(content_type)
                    .unwrap_or(HeaderValue::from_static("text/plain")),
            },
        };
        let latency = registry.histogram(
            "headroom_request_duration_seconds",
            "Time from receiving a request to the end of its response, by route.",
            &[("route", rc.name.as_str())],
        );
        let listeners = if rc.listeners.is_empty() {
            u64::MAX
        } else {
            rc.listeners
                .iter()
                .filter_map(|l| listener_names.iter().position(|n| n == l))
                .fold(0u64, |m, i| m | (1 << i.min(63)))
        };
        Route {
            name: rc.name.as_str().into(),
            listeners,
            host: rc.matcher.host.clone(),
            path: rc.matcher.path.clone(),
            methods: rc
                .matcher
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            headers: header_pairs(&rc.matcher.headers),
            action,
            strip_prefix: rc.strip_prefix.clone().or_else(|| {
                // rewrite_prefix alone replaces the matched path_prefix.
                match (&rc.rewrite_prefix, &rc.matcher.path) {
                    (Some(_), PathMatch::Prefix(p)) => Some(p.clone()),
                    _ => None,
                }
            }),
            rewrite_prefix: rc.rewrite_prefix.clone(),
            request_add: header_pairs(&rc.request_headers.add),
            request_remove: header_names(&rc.request_headers.remove),
            response_add: header_pairs(&rc.response_headers.add),
            response_remove: header_names(&rc.response_headers.remove),
            max_body: rc.access.as_ref().and_then(|a| a.max_body),
            priority: crate::protect::priority(rc.priority),
            admit: guard
                .map(|g| {
                    // CORS first: a preflight carries no credentials. Then who may come
                    // (address, body size), who it is, and how much.
                    let cors = g.cors.map(Admission::Cors);
                    let access = g.access.map(Admission::Access);
                    let auth = g.auth.map(Admission::Auth);
                    let limits = g.limits.map(Admission::Limit);
                    cors.into_iter()
                        .chain(access)
                        .chain(auth)
                        .chain(limits)
                        .collect()
                })
                .unwrap_or_default(),
            cache: rc.cache.as_ref().zip(cache).map(|(c, store)| CacheRule {
                cache: store.route(&rc.name, c),
            }),
            compress: rc.compress.as_ref().map(CompressRule::new),
            red: Red::new(registry, &rc.name, ""),
            slow: slow
                .entry(rc.name.clone())
                .or_insert_with(|| Arc::new(crate::route_slow::SlowPaths::new(latency.clone())))
                .clone(),
            cacheable: (rc.cache.is_none()
                && matches!(rc.action, Action::Forward(_) | Action::Split(_)))
            .then(|| {
                registry.counter(
                    "headroom_route_cacheable_responses_total",
                    "GET 200 answers of a route without a cache that a shared cache could store (Cache-Control public, max-age or s-maxage above 0, or Expires; neither no-store nor private).",
                    &[("route", rc.name.as_str())],
                )
            }),
            latency,
        }
    }
}

/// Forgets the metric series of routes and services the new config no longer has, so
/// `/metrics` does not report them for the life of the process.
fn forget_removed(live: &Live, cfg: &Config) {
    let routes: HashSet<String> = cfg.routes.iter().map(|r| r.name.clone()).collect();
    let services: HashSet<String> = cfg.services.keys().cloned().collect();
    let mut names = live.names.lock().unwrap_or_else(|p| p.into_inner());
    for gone in names.0.difference(&routes) {
        live.registry.remove_series(&[("route", gone)]);
    }
    for gone in names.1.difference(&services) {
        live.registry.remove_series(&[("service", gone)]);
    }
    let consumers: HashSet<String> = cfg.consumers.iter().map(|c| c.name.clone()).collect();
    for gone in names.2.difference(&consumers) {
        live.registry.remove_series(&[("consumer", gone)]);
    }
    *names = (routes, services, consumers);
}

impl Snapshot {
    /// Builds the table for `cfg` and the runtime membership, reusing live replica state,
    /// budgets and metric series from `live`; forgets the series of replicas, routes and
    /// services that are gone.
    pub fn build(cfg: &Config, live: &Live, generation: u64) -> Snapshot {
        let registry = &live.registry;
        let membership = live.membership();
        let mut live_replicas = live.replicas.lock().unwrap_or_else(|p| p.into_inner());
        let mut budgets = live.budgets.lock().unwrap_or_else(|p| p.into_inner());
        let mut keep = HashSet::new();

        let mut services: HashMap<&str, Arc<Service>> = HashMap::new();
        for (name, sc) in &cfg.services {
            let members = members(name, sc, &membership);
            let initial = mean_ewma(
                members
                    .iter()
                    .filter_map(|m| live_replicas.get(&(name.clone(), m.label.to_string()))),
            );
            let mut replicas = Vec::with_capacity(members.len());
            for m in &members {
                let key = (name.clone(), m.label.to_string());
                keep.insert(key.clone());
                let r = match live_replicas.get(&key) {
                    Some(r) if r.addr == m.addr => r.clone(),
                    _ => {
                        let r = Arc::new(Replica::new(
                            name,
                            m.label,
                            m.addr,
                            m.weight,
                            initial,
                            live.workers,
                            registry,
                        ));
                        live_replicas.insert(key, r.clone());
                        r
                    }
                };
                set_weight(&r, m.weight);
                replicas.push(r);
            }
            // A budget is kept across reloads (its saved tokens with it) unless its terms
            // changed: then the new terms take effect at once.
            let budget = budgets
                .entry(name.clone())
                .and_modify(|b| {
                    if !b.has_terms(sc.retry.budget, sc.retry.min_per_second) {
                        *b = Arc::new(RetryBudget::new(sc.retry.budget, sc.retry.min_per_second));
                    }
                })
                .or_insert_with(|| {
                    Arc::new(RetryBudget::new(sc.retry.budget, sc.retry.min_per_second))
                })
                .clone();
            let sources = members.iter().map(|m| m.source).collect();
            let protect = {
                let mut kept = live.protections.lock().unwrap_or_else(|p| p.into_inner());
                let (shed, circuit) = (sc.shed.as_ref(), sc.circuit.as_ref());
                match kept.get(name) {
                    Some(p) if p.same(shed, circuit) => Some(p.clone()),
                    _ => {
                        let p = crate::protect::Protection::new(name, shed, circuit, registry);
                        match &p {
                            Some(p) => kept.insert(name.clone(), p.clone()),
                            None => kept.remove(name),
                        };
                        p
                    }
                }
            };
            let cold_start = {
                let mut gates = live.cold.lock().unwrap_or_else(|p| p.into_inner());
                match sc.autoscale.as_ref().filter(|a| a.min == 0) {
                    Some(a) => {
                        let gate = gates.entry(name.clone()).or_insert_with(|| {
                            Arc::new(crate::cold_start::ColdStart::new(
                                name,
                                a.cold_start_timeout,
                                a.cold_start_queue,
                                registry,
                            ))
                        });
                        gate.set_terms(a.cold_start_timeout, a.cold_start_queue);
                        Some(gate.clone())
                    }
                    None => {
                        gates.remove(name);
                        None
                    }
                }
            };
            let mut service = Service::new(name, sc, replicas, sources, budget, protect, registry);
            service.cold_start = cold_start;
            services.insert(name.as_str(), Arc::new(service));
        }
        drop(membership);
        // Replicas that left: close their connections and forget their series.
        live_replicas.retain(|key, r| {
            let stays = keep.contains(key);
            if !stays {
                r.pools.clear();
                registry.remove_series(&[("service", &key.0), ("replica", &r.label)]);
            }
            stays
        });
        budgets.retain(|name, _| cfg.services.contains_key(name));
        live.protections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name, _| cfg.services.contains_key(name));

        let listener_names: Vec<String> = cfg.listeners.iter().map(|l| l.name.clone()).collect();
        let cache = live.cache_for(cfg);
        let mut guards = match live.guard_for(cfg) {
            Some(g) => g.compile(
                &cfg.routes
                    .iter()
                    .map(|r| headroom_guard::RouteSpec {
                        name: &r.name,
                        limits: &r.limits,
                        auth: r.auth.as_ref(),
                        access: r.access.as_ref(),
                        cors: r.cors.as_ref(),
                    })
                    .collect::<Vec<_>>(),
                &cfg.consumers,
                &cfg.jwt,
            ),
            None => Vec::new(),
        }
        .into_iter();
        let mut slow = live.slow.lock().unwrap_or_else(|p| p.into_inner());
        // A route the config no longer has is forgotten (its latency series is too).
        slow.retain(|name, _| cfg.routes.iter().any(|r| &r.name == name));
        let routes = cfg
            .routes
            .iter()
            .map(|rc| {
                let guard = guards.next();
                Route::build(
                    rc,
                    &services,
                    &listener_names,
                    registry,
                    cache.as_ref(),
                    guard,
                    &mut slow,
                )
            })
            .collect();
        drop(slow);
        forget_removed(live, cfg);

        let mut services: Vec<Arc<Service>> = services.into_values().collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot {
            generation,
            routes,
            services,
            access_log: match cfg.global.access_log {
                headroom_config::AccessLogFormat::Json => Some(Format::Json),
                headroom_config::AccessLogFormat::Combined => Some(Format::Combined),
                headroom_config::AccessLogFormat::Off => None,
            },
            tracing: cfg.watch.tracing.as_ref().map(|t| {
                Arc::new(headroom_telemetry::trace::Sampler::new(
                    t.sample, t.errors, t.slow,
                ))
            }),
            listener_names,
            cache,
            cache_x_header: cfg.cache.x_cache,
        }
    }

    /// The first route that matches, in file order.
    pub fn route(
        &self,
        listener: usize,
        method: &Method,
        host: &str,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Option<(usize, &Route)> {
        let bit = 1u64 << listener.min(63);
        self.routes.iter().enumerate().find(|(_, r)| {
            r.listeners & bit != 0
                && match &r.host {
                    None => true,
                    Some(HostMatch::Exact(h)) => host.eq_ignore_ascii_case(h),
                    Some(HostMatch::Suffix(s)) => {
                        host.len() > s.len() && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
                    }
                }
                && match &r.path {
                    PathMatch::Any => true,
                    PathMatch::Exact(p) => path == p,
                    PathMatch::Prefix(p) => path.starts_with(p.as_str()),
                    PathMatch::Regex(re) => re.is_match(path),
                }
                && (r.methods.is_empty() || r.methods.contains(method))
                && r.headers.iter().all(|(k, v)| headers.get(k) == Some(v))
        })
    }
}
