//! The cache's typed config: the store (`[cache]`), each route's policy and page rules
//! (`[route.cache]`), and compression (`[route.compress]`).

use std::time::Duration;

/// `[cache]`: the store every caching route shares.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub memory: u64,
    pub max_object: u64,
    pub max_key: usize,
    pub max_variants: usize,
    pub coalesce_wait: Duration,
    pub heuristic_cap: Duration,
    pub x_cache: bool,
    pub redis: Option<RedisConfig>,
}

/// `[cache.redis]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub target: RedisTarget,
    pub timeout: Duration,
    pub prefix: String,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Standalone(String),
    Cluster(Vec<String>),
}

/// `[route.cache]`: the route's policy and its page rules, each rule already merged with
/// the route's fields it does not set.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteCacheConfig {
    pub policy: CachePolicy,
    pub rules: Vec<CacheRuleConfig>,
    pub purge_method: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheRuleConfig {
    /// The path glob, as written (validated).
    pub glob: String,
    pub bypass: bool,
    pub policy: CachePolicy,
}

/// What a route, or one of its rules, does with a request and its response.
#[derive(Debug, Clone, PartialEq)]
pub struct CachePolicy {
    /// Replaces the origin's freshness lifetime.
    pub ttl: Option<Duration>,
    /// Ignore the origin's `no-store`, `no-cache`, `private` and `must-revalidate`.
    pub ignore_origin: bool,
    /// Statuses stored for this long when the origin gives no freshness, sorted.
    pub statuses: Vec<(u16, Duration)>,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    pub key: KeyConfig,
    pub bypass_cookies: Vec<String>,
    /// Lowercase header names.
    pub bypass_headers: Vec<String>,
    pub allow_authorization: bool,
    pub allow_set_cookie: bool,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            ttl: None,
            ignore_origin: false,
            statuses: Vec::new(),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            key: KeyConfig::default(),
            bypass_cookies: Vec::new(),
            bypass_headers: Vec::new(),
            allow_authorization: false,
            allow_set_cookie: false,
        }
    }
}

/// What goes in the cache key besides the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConfig {
    pub host: bool,
    pub query: QueryKey,
    /// Lowercase header names.
    pub headers: Vec<String>,
    pub cookies: Vec<String>,
}

impl Default for KeyConfig {
    fn default() -> Self {
        KeyConfig {
            host: true,
            query: QueryKey::All,
            headers: Vec::new(),
            cookies: Vec::new(),
        }
    }
}

/// Which query parameters are part of the key; in every case they are sorted, so
/// `?b=1&a=2` and `?a=2&b=1` are one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryKey {
    All,
    None,
    Allow(Vec<String>),
    Deny(Vec<String>),
}

/// `[route.compress]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressConfig {
    /// "br", "zstd", "gzip", in order of preference.
    pub codings: Vec<String>,
    pub min_size: u64,
}
