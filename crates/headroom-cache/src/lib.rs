//! headroom's HTTP cache: a shared cache (RFC 9111) compiled per route from its page rules,
//! with a memory tier (size-bounded, TinyLFU admission) and an optional Redis tier shared by
//! every headroom instance, request coalescing, purge and compression.
//!
//! The edge calls it from two places: the `lookup` phase ([`RouteCache::lookup`]: a hit
//! answers there) and the response on its way back ([`Fill::response`], then [`Store`] as
//! the body streams to its client).

mod clock;
mod coalesce;
pub mod compress;
mod entry;
mod headers;
mod key;
mod memory;
pub mod policy;
pub mod purge;
mod route;
mod status;
mod tier_redis;

pub use clock::Clock;
pub use entry::Entry;
pub use purge::{Purge, PurgeKind};
pub use route::{
    mark, CacheRequest, Fill, FillResponse, Hit, Invalidation, Lookup, RouteCache, Store,
};
pub use status::{CacheStatus, Outcome};

use headroom_config::cache::{CacheConfig, RouteCacheConfig};
use headroom_telemetry::{Counter, Gauge, Registry};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// The process's cache store, shared by every caching route and kept across reloads (a
/// reload that changes `[cache]` makes a new one).
#[derive(Clone)]
pub struct Cache {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) cfg: CacheConfig,
    pub(crate) memory: memory::Memory,
    pub(crate) fills: Arc<coalesce::Coalescer>,
    pub(crate) purges: purge::Log,
    pub(crate) clock: Clock,
    redis: Option<Arc<tier_redis::RedisTier>>,
    metrics: StoreMetrics,
    registry: Arc<Registry>,
}

pub(crate) struct StoreMetrics {
    objects: Arc<Gauge>,
    bytes: Arc<Gauge>,
    evictions: Arc<Counter>,
    evictions_seen: std::sync::atomic::AtomicU64,
    purges: [Arc<Counter>; 4],
    purged: Arc<Counter>,
}

impl Cache {
    pub fn new(cfg: &CacheConfig, registry: &Arc<Registry>) -> Cache {
        Cache::with_clock(cfg, registry, Clock::system())
    }

    /// [`Cache::new`] reading `clock` (a manual one in tests).
    pub fn with_clock(cfg: &CacheConfig, registry: &Arc<Registry>, clock: Clock) -> Cache {
        let purge = |kind: &str| {
            registry.counter(
                "headroom_cache_purges_total",
                "Purges applied, by kind (url, prefix, tag, all).",
                &[("kind", kind)],
            )
        };
        let metrics = StoreMetrics {
            objects: registry.gauge(
                "headroom_cache_objects",
                "URLs in the memory tier (each with its variants).",
                &[("tier", "memory")],
            ),
            bytes: registry.gauge(
                "headroom_cache_bytes",
                "Bytes the memory tier holds, of its bound.",
                &[("tier", "memory")],
            ),
            evictions: registry.counter(
                "headroom_cache_evictions_total",
                "Objects the memory tier evicted to stay within its bound.",
                &[("tier", "memory")],
            ),
            evictions_seen: Default::default(),
            purges: [purge("url"), purge("prefix"), purge("tag"), purge("all")],
            purged: registry.counter(
                "headroom_cache_purged_entries_total",
                "Stored responses deleted or marked stale by purges.",
                &[],
            ),
        };
        let redis = cfg.redis.as_ref().and_then(|r| {
            match tier_redis::RedisTier::new(r, registry) {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => {
                    // The config was validated; a client that still cannot be made leaves
                    // the cache on memory alone, said once.
                    tracing::error!(error = %e, "cache: Redis tier unusable, memory tier only");
                    None
                }
            }
        });
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            memory: memory::Memory::new(cfg.memory),
            fills: Default::default(),
            purges: Default::default(),
            clock,
            redis,
            metrics,
            registry: registry.clone(),
        });
        if shared.redis.is_some() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(follow_purges(Arc::downgrade(&shared)));
            }
        }
        Cache { shared }
    }

    /// The config this store was made from: a reload with another keeps nothing.
    pub fn config(&self) -> &CacheConfig {
        &self.shared.cfg
    }

    /// Compiles a route's cache for a snapshot.
    pub fn route(&self, name: &str, cfg: &RouteCacheConfig) -> RouteCache {
        RouteCache::new(&self.shared, name, cfg, &self.shared.registry)
    }

    /// Applies a purge here (and, with a Redis tier, publishes it to every instance).
    /// Returns the number of stored responses it covered in this instance's memory tier.
    pub fn purge(&self, p: Purge) -> u64 {
        self.shared.purge(p)
    }

    /// `/status`'s view: the memory tier's size and each route's hit ratio.
    pub fn status(&self, routes: &[&RouteCache]) -> serde_json::Value {
        let s = &self.shared;
        s.memory.map.run_pending_tasks();
        s.refresh_gauges();
        let routes: serde_json::Map<String, serde_json::Value> = routes
            .iter()
            .map(|r| {
                let (hits, all) = r.hits_and_lookups();
                (
                    r.name().to_string(),
                    serde_json::json!({
                        "hits": hits,
                        "lookups": all,
                        "hit_ratio": if all == 0 { 0.0 } else { hits as f64 / all as f64 },
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "memory": {
                "bytes": s.memory.bytes(),
                "limit_bytes": s.cfg.memory,
                "objects": s.memory.objects(),
                "evictions": s.memory.evictions.load(Relaxed),
            },
            "redis": s.redis.as_ref().map(|r| serde_json::json!({
                "breaker": if r.breaker_open() { "open" } else { "closed" },
            })),
            "fills_in_flight": s.fills.len(),
            "routes": routes,
        })
    }
}

impl RouteCache {
    fn hits_and_lookups(&self) -> (u64, u64) {
        self.inner().metrics.hits_and_lookups()
    }
}

impl Shared {
    fn refresh_gauges(&self) {
        let m = &self.metrics;
        m.objects.set(self.memory.objects() as i64);
        m.bytes.set(self.memory.bytes() as i64);
        let ev = self.memory.evictions.load(Relaxed);
        let seen = m.evictions_seen.swap(ev, Relaxed);
        m.evictions.add(ev.saturating_sub(seen));
    }

    /// A purge made here (not one read from the stream): timed by this cache's clock.
    pub(crate) fn purge(&self, mut p: Purge) -> u64 {
        p.at_ms = entry::unix_ms(self.clock.now());
        let i = match p.kind {
            PurgeKind::Url(_) => 0,
            PurgeKind::Prefix(_) => 1,
            PurgeKind::Tag(_) => 2,
            PurgeKind::All => 3,
        };
        self.metrics.purges[i].inc();
        if let Some(r) = &self.redis {
            r.publish(&p);
        }
        self.apply_purge(p)
    }

    /// Applies a purge to this instance (its own, or one read from the stream).
    fn apply_purge(&self, p: Purge) -> u64 {
        let n = purge::apply(&self.memory, &p);
        self.metrics.purged.add(n);
        self.purges.record(p);
        self.refresh_gauges();
        n
    }

    /// The Redis tier's copy of the variant `req` selects (none yet without a Redis tier).
    pub(crate) async fn lookup_redis(
        &self,
        hash: u64,
        key: &[u8],
        req: &CacheRequest<'_>,
        seen: Option<&memory::Object>,
    ) -> Option<Arc<Entry>> {
        let tier = self.redis.as_ref()?;
        let e = Arc::new(tier.get(hash, req).await?);
        // Purges made after it was stored (here or elsewhere) apply to it too.
        if !self.purges.admit(&e) {
            return None;
        }
        self.insert_over(hash, key, e.clone(), seen);
        Some(e)
    }

    /// Stores `e` in memory and, with a Redis tier, in Redis (in the background).
    /// `seen`: the URL's object as the lookup found it (`None`: it had none).
    pub(crate) fn insert_everywhere(
        &self,
        hash: u64,
        key: &[u8],
        e: Arc<Entry>,
        seen: Option<&memory::Object>,
    ) {
        if let Some(r) = &self.redis {
            r.put(hash, &e);
        }
        self.insert_over(hash, key, e, seen);
    }

    fn insert_over(&self, hash: u64, key: &[u8], e: Arc<Entry>, seen: Option<&memory::Object>) {
        self.memory
            .insert_over(hash, key, e, self.cfg.max_variants, seen);
        self.refresh_gauges();
    }
}

/// Reads the purge stream every [`tier_redis::PURGE_POLL`] and applies what other
/// instances purged; ends when the cache is dropped (a reload made a new one).
async fn follow_purges(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(tier_redis::PURGE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(s) = shared.upgrade() else { return };
        let Some(tier) = s.redis.clone() else { return };
        for p in tier.poll().await {
            s.apply_purge(p);
        }
        tier.purges_applied();
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("memory_bytes", &self.shared.memory.bytes())
            .finish()
    }
}
