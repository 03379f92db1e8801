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
    /// A claim of the request's bearer token (routes whose auth takes JWTs); requests
    /// without it share one key.
    Claim(String),
}

impl LimitKey {
    /// As written in the config (`ip`, `route`, `header:x-user`).
    pub fn describe(&self) -> String {
        match self {
            LimitKey::Ip => "ip".into(),
            LimitKey::Route => "route".into(),
            LimitKey::Header(h) => format!("header:{h}"),
            LimitKey::Consumer => "consumer".into(),
            LimitKey::Claim(c) => format!("claim:{c}"),
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
    /// Bearer tokens accepted (`Authorization: Bearer ...`), verified by this `[jwt.NAME]`.
    pub jwt: Option<String>,
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

/// `[route.access]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessConfig {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    /// Bytes a request body may have on this route.
    pub max_body: Option<u64>,
}

/// `[route.cors]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    pub origins: Vec<OriginPattern>,
    /// Upper-case.
    pub methods: Vec<String>,
    /// Lower-case request headers a preflight may ask for; `*` (without credentials): any.
    pub headers: Vec<String>,
    /// Response headers scripts may read.
    pub expose: Vec<String>,
    pub credentials: bool,
    pub max_age: Option<std::time::Duration>,
}

/// One entry of `cors.origins`: `*`, an exact origin (`https://app.example.com`), or a
/// pattern with one leading wildcard label (`https://*.example.com`: any subdomain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    Any,
    /// Lower-case `scheme://host[:port]`.
    Exact(String),
    /// `scheme://` and `.rest` (lower-case): matches `scheme://anything.rest`.
    Subdomains {
        scheme: String,
        suffix: String,
    },
}

impl OriginPattern {
    /// `None` when it is not `*` nor `scheme://host[:port]` (with at most a leading `*.`).
    pub fn parse(s: &str) -> Option<OriginPattern> {
        let s = s.trim().to_ascii_lowercase();
        if s == "*" {
            return Some(OriginPattern::Any);
        }
        let (scheme, host) = s.split_once("://")?;
        let valid = |h: &str| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        };
        if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphabetic()) {
            return None;
        }
        match host.strip_prefix("*.") {
            Some(rest) if valid(rest) => Some(OriginPattern::Subdomains {
                scheme: format!("{scheme}://"),
                suffix: format!(".{rest}"),
            }),
            Some(_) => None,
            None if valid(host) => Some(OriginPattern::Exact(s.clone())),
            None => None,
        }
    }

    /// Does the request's `Origin` value match (case-insensitively)?
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginPattern::Subdomains { scheme, suffix } => {
                let o = origin.to_ascii_lowercase();
                o.strip_prefix(scheme.as_str())
                    .and_then(|host| host.strip_suffix(suffix.as_str()))
                    .is_some_and(|label| !label.is_empty() && !label.contains(['/', ':']))
            }
        }
    }
}

/// `[jwt.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    pub name: String,
    pub keys: JwtKeys,
    pub algorithms: Vec<String>,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub leeway: std::time::Duration,
    pub require_exp: bool,
    pub consumer_claim: String,
    /// (claim, lower-case header name), sorted by claim.
    pub forward_claims: Vec<(String, String)>,
    pub max_token_bytes: usize,
    pub jwks_refresh: std::time::Duration,
}

/// Where a `[jwt.NAME]`'s keys come from.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKeys {
    Secret(Vec<u8>),
    PemFile(std::path::PathBuf),
    JwksFile(std::path::PathBuf),
    JwksUrl(String),
}

impl std::fmt::Debug for JwtKeys {
    /// Never prints a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKeys::Secret(_) => f.write_str("Secret(***)"),
            JwtKeys::PemFile(p) => write!(f, "PemFile({})", p.display()),
            JwtKeys::JwksFile(p) => write!(f, "JwksFile({})", p.display()),
            JwtKeys::JwksUrl(u) => write!(f, "JwksUrl({u})"),
        }
    }
}

/// `[service.NAME.shed]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShedConfig {
    pub max_inflight: Option<u32>,
    /// (min, max, initial, tolerance) when adaptive.
    pub adaptive: Option<(u32, u32, u32, f64)>,
    pub queue: u32,
    pub queue_timeout: std::time::Duration,
    pub critical_reserve: f64,
}

/// `[service.NAME.circuit]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitConfig {
    pub consecutive_failures: Option<u32>,
    /// (share, minimum requests in the window).
    pub failure_rate: Option<(f64, u32)>,
    pub window: std::time::Duration,
    pub open_for: std::time::Duration,
    pub half_open_probes: u32,
}

/// A route's priority under load shedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    Critical,
    #[default]
    Normal,
    Sheddable,
}
