//! The guard's typed config: `[guard]` and each route's `[[route.limit]]`.

use crate::cache::RedisConfig;
use std::time::Duration;

pub use ipnet::IpNet;

/// `[guard]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    /// Peers whose `X-Forwarded-For` is believed; empty: none.
    pub trusted_proxies: Vec<IpNet>,
    /// Distinct keys each limit keeps in memory.
    pub max_keys: usize,
    pub redis: Option<GuardRedisConfig>,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            trusted_proxies: Vec::new(),
            max_keys: 100_000,
            redis: None,
        }
    }
}

/// `[guard.redis]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardRedisConfig {
    pub redis: RedisConfig,
    pub fallback: Fallback,
    /// Instances sharing the limits (≥ 1): the local fallback enforces 1/instances.
    pub instances: u32,
}

/// What a shared limit does while Redis cannot decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Each instance enforces its share of the limit in memory.
    Local,
    /// Reject with 503.
    Closed,
}

/// `[[route.limit]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitConfig {
    pub name: String,
    /// `count` requests per `period`.
    pub count: u64,
    pub period: Duration,
    /// At once on a fresh key (≥ 1).
    pub burst: u32,
    pub key: LimitKey,
    /// In `[guard.redis]`.
    pub shared: bool,
    pub dry_run: bool,
}

/// What a limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The client's address (`X-Forwarded-For` from trusted proxies).
    Ip,
    /// Every request of the route together.
    Route,
    /// A request header's value, lower-case name; requests without it share one key.
    Header(String),
    /// The authenticated consumer (routes with `[route.auth]`).
    Consumer,
}

impl LimitKey {
    /// As written in the config (`ip`, `route`, `header:x-user`).
    pub fn describe(&self) -> String {
        match self {
            LimitKey::Ip => "ip".into(),
            LimitKey::Route => "route".into(),
            LimitKey::Header(h) => format!("header:{h}"),
            LimitKey::Consumer => "consumer".into(),
        }
    }
}

/// `[[consumer]]` (from the config or `guard.key_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    pub name: String,
    pub groups: Vec<String>,
    /// SHA-256 of each API key.
    pub key_hashes: Vec<[u8; 32]>,
    /// Applied on every route that authenticates this consumer, after the route's own.
    pub limits: Vec<LimitConfig>,
}

/// `[route.auth]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAuthConfig {
    /// API keys accepted: where they come from.
    pub key: Option<KeyAuth>,
    /// Groups admitted (any of); empty: every authenticated consumer.
    pub groups: Vec<String>,
    /// Header names (lower-case) the upstream gets the consumer's name and groups in.
    pub forward_consumer: String,
    pub forward_groups: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAuth {
    /// Lower-case header name.
    pub header: String,
    pub query: Option<String>,
}
