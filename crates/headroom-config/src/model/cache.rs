//! `[cache]` (the store: memory and Redis tiers), `[route.cache]` (a route's caching policy
//! and its page rules) and `[route.compress]`, as serde reads them.

use crate::units::{Dur, Size};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use toml::Spanned;

/// `[cache]`: the store every caching route shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    /// The memory tier's bound, bodies and headers counted. Default 256 MiB.
    pub memory: Size,
    /// Responses with bodies over this are not stored: they stream past. Default 8 MiB.
    pub max_object: Size,
    /// Cache keys longer than this bypass the cache. Default 8 KiB.
    pub max_key: Size,
    /// Variants (`Vary`, encodings) kept per URL. Default 16.
    pub max_variants: usize,
    /// How long a request waits for another request's fill of the same key before going
    /// upstream itself. Default 10s.
    pub coalesce_wait: Dur,
    /// Heuristic freshness (10% of the time since `Last-Modified`) is capped at this.
    /// Default 1d.
    pub heuristic_cap: Dur,
    /// Send `X-Cache: HIT|MISS|...` besides `Cache-Status`. Default true.
    pub x_cache: bool,
    pub redis: Option<Spanned<CacheRedis>>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            memory: Size(256 << 20),
            max_object: Size(8 << 20),
            max_key: Size(8 << 10),
            max_variants: 16,
            coalesce_wait: Dur(Duration::from_secs(10)),
            heuristic_cap: Dur(Duration::from_secs(86_400)),
            x_cache: true,
            redis: None,
        }
    }
}

/// `[cache.redis]`: the shared tier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRedis {
    /// A standalone server: `redis://host:port[/db]`.
    pub url: Option<Spanned<String>>,
    /// A Redis Cluster: seed node URLs.
    #[serde(default)]
    pub cluster: Vec<Spanned<String>>,
    /// Per-call timeout. Default 50ms.
    #[serde(default = "defaults::redis_timeout")]
    pub timeout: Dur,
    /// Prefix of every key headroom writes. Default "headroom:".
    #[serde(default = "defaults::redis_prefix")]
    pub prefix: String,
    /// Consecutive failures that open the breaker. Default 3.
    #[serde(default = "defaults::breaker_failures")]
    pub breaker_failures: u32,
    /// How long the open breaker skips Redis before probing it. Default 1s.
    #[serde(default = "defaults::breaker_cooldown")]
    pub breaker_cooldown: Dur,
}

/// `[route.cache]`: the route's policy, and its page rules (`[[route.cache.rule]]`), the
/// first matching rule overriding the route's fields it sets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCache {
    /// Default true; false turns the cache off for the route without removing its table.
    pub enabled: Option<bool>,
    #[serde(default)]
    pub rule: Vec<Spanned<CacheRule>>,
    /// Accept the `PURGE` method on this route (admin token required). Default false.
    #[serde(default)]
    pub purge_method: bool,
    pub ttl: Option<Dur>,
    pub ignore_origin: Option<bool>,
    pub statuses: Option<BTreeMap<Spanned<String>, Dur>>,
    pub stale_while_revalidate: Option<Dur>,
    pub stale_if_error: Option<Dur>,
    pub key: Option<CacheKey>,
    pub bypass_cookies: Option<Vec<String>>,
    pub bypass_headers: Option<Vec<Spanned<String>>>,
    pub allow_authorization: Option<bool>,
    pub allow_set_cookie: Option<bool>,
}

/// `[[route.cache.rule]]`: a page rule. Its policy fields repeat [`RouteCache`]'s: serde's
/// `flatten` would share them, but it cannot be combined with `deny_unknown_fields`, and a
/// misspelt key must stay an error with its line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRule {
    /// A path glob: `/static/**`, `*.{css,js,png,woff2}`.
    #[serde(rename = "match")]
    pub matcher: Spanned<String>,
    /// Never cache what this rule matches. Default false.
    #[serde(default)]
    pub bypass: bool,
    pub ttl: Option<Dur>,
    pub ignore_origin: Option<bool>,
    pub statuses: Option<BTreeMap<Spanned<String>, Dur>>,
    pub stale_while_revalidate: Option<Dur>,
    pub stale_if_error: Option<Dur>,
    pub key: Option<CacheKey>,
    pub bypass_cookies: Option<Vec<String>>,
    pub bypass_headers: Option<Vec<Spanned<String>>>,
    pub allow_authorization: Option<bool>,
    pub allow_set_cookie: Option<bool>,
}

/// What goes in a cache key besides the path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheKey {
    /// Default true.
    pub host: Option<bool>,
    /// "all" (default: every parameter, sorted) or "none".
    pub query: Option<Spanned<String>>,
    /// Only these query parameters (sorted).
    pub query_allow: Option<Vec<String>>,
    /// Every query parameter but these (sorted).
    pub query_deny: Option<Vec<String>>,
    /// Request headers whose values are part of the key.
    pub headers: Option<Vec<Spanned<String>>>,
    /// Cookies whose values are part of the key.
    pub cookies: Option<Vec<String>>,
}

/// `[route.compress]`: gzip, brotli and zstd for compressible types.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compress {
    /// In order of preference, used when a client accepts several equally (browsers do).
    /// Default ["zstd", "gzip", "br"]: zstd is ~5x faster than gzip for 4-32% more bytes, and
    /// brotli at a memory-bounded quality is never the smallest (see headroom-cache's
    /// compress module for the measurements).
    #[serde(default = "defaults::codings")]
    pub codings: Vec<Spanned<String>>,
    /// Bodies smaller than this (by Content-Length) are sent as they are. Default 1 KiB.
    #[serde(default = "defaults::min_compress")]
    pub min_size: Size,
}

mod defaults {
    use super::*;
    pub fn redis_timeout() -> Dur {
        Dur(Duration::from_millis(50))
    }
    pub fn redis_prefix() -> String {
        "headroom:".into()
    }
    pub fn breaker_failures() -> u32 {
        3
    }
    pub fn breaker_cooldown() -> Dur {
        Dur(Duration::from_secs(1))
    }
    pub fn codings() -> Vec<Spanned<String>> {
        ["zstd", "gzip", "br"]
            .iter()
            .map(|c| Spanned::new(0..0, c.to_string()))
            .collect()
    }
    pub fn min_compress() -> Size {
        Size(1024)
    }
}
