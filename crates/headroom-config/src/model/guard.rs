//! `[guard]` (what every route's guard shares: trusted proxies, the limiters' bounds, the
//! Redis that shared limits live in) and `[[route.limit]]` (a route's rate limits), as
//! serde reads them.

use crate::units::Dur;
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

/// `[guard]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Guard {
    /// Peers (CIDR, or a bare address) whose `X-Forwarded-For` is believed. Default none:
    /// the peer address is the client's.
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Distinct keys each limit keeps in memory (idle keys first, then the closest to
    /// idle, are forgotten beyond it). Default 100,000.
    pub max_keys: usize,
    /// A TOML file of more `[[consumer]]` tables (API keys kept apart from the config),
    /// relative to the config file's directory; read again on every reload.
    pub key_file: Option<Spanned<String>>,
    pub redis: Option<Spanned<GuardRedis>>,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            trusted_proxies: Vec::new(),
            max_keys: 100_000,
            key_file: None,
            redis: None,
        }
    }
}

/// `[guard.redis]`: where shared limits live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardRedis {
    pub url: Option<Spanned<String>>,
    #[serde(default)]
    pub cluster: Vec<Spanned<String>>,
    /// Per decision. Default 50ms.
    #[serde(default = "defaults::timeout")]
    pub timeout: Dur,
    /// Default "headroom:rl:".
    #[serde(default = "defaults::prefix")]
    pub prefix: String,
    #[serde(default = "defaults::breaker_failures")]
    pub breaker_failures: u32,
    #[serde(default = "defaults::breaker_cooldown")]
    pub breaker_cooldown: Dur,
    /// When Redis cannot decide: "local" (default: each instance enforces its share of
    /// the limit in memory) or "closed" (reject with 503).
    #[serde(default = "defaults::fallback")]
    pub fallback: Spanned<String>,
    /// Instances sharing the limits: the local fallback's share is 1/instances. Default 1.
    #[serde(default = "defaults::instances")]
    pub instances: u32,
}

/// `[[route.limit]]`: one rate limit; a request must pass every limit of its route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteLimit {
    /// Names the limit in `RateLimit` headers, metrics and logs. Default "limit-N".
    pub name: Option<String>,
    /// `COUNT/UNIT`: `10/s`, `600/m`, `1000/h`, `50000/d`, or `COUNT/DURATION` (`5/10s`).
    pub rate: Spanned<String>,
    /// Requests allowed at once on a fresh key. Default: the rate's count.
    pub burst: Option<u32>,
    /// What the limit counts by: "ip" (default), "route" (all requests together),
    /// "header:NAME".
    pub key: Option<Spanned<String>>,
    /// Kept in `[guard.redis]` (shared by every instance). Default true when
    /// `[guard.redis]` is set.
    pub shared: Option<bool>,
    /// Count what would be limited, reject nothing. Default false.
    #[serde(default)]
    pub dry_run: bool,
}

/// `[[consumer]]`: a named client of the API, its credentials, groups and own limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    pub name: Spanned<String>,
    /// Groups a route's `auth.groups` admits.
    #[serde(default)]
    pub groups: Vec<String>,
    /// API keys as `"sha256:<64 hex digits>"` (`headroom key hash` prints one); never the
    /// key itself.
    #[serde(default)]
    pub keys: Vec<Spanned<String>>,
    /// Limits this consumer gets on every route that authenticates it.
    #[serde(default)]
    pub limit: Vec<Spanned<RouteLimit>>,
}

/// The file `guard.key_file` names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    #[serde(default)]
    pub consumer: Vec<Spanned<Consumer>>,
}

/// `[route.auth]`: who may use the route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAuth {
    /// Accepted credentials, any of: "key" (default).
    #[serde(default = "defaults::auth_methods")]
    pub methods: Vec<Spanned<String>>,
    /// The header an API key comes in. Default "x-api-key".
    #[serde(default = "defaults::key_header")]
    pub key_header: String,
    /// A query parameter an API key may come in instead (removed before forwarding).
    pub key_query: Option<String>,
    /// Groups admitted (any of); empty: every authenticated consumer.
    #[serde(default)]
    pub groups: Vec<Spanned<String>>,
    /// Headers the upstream gets with the consumer's identity (client-sent copies removed).
    #[serde(default)]
    pub forward: AuthForward,
    /// The `[jwt.NAME]` that verifies bearer tokens (method "jwt").
    pub jwt: Option<Spanned<String>>,
}

/// `[jwt.NAME]`: how bearer tokens are verified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// An HMAC secret (HS256/384/512), or the environment variable holding it.
    pub secret: Option<String>,
    pub secret_env: Option<Spanned<String>>,
    /// Public keys or certificates, PEM (RS*, PS256, ES256/384, EdDSA).
    pub pem_file: Option<Spanned<String>>,
    /// A JWKS document on disk, read at start and on reload.
    pub jwks_file: Option<Spanned<String>>,
    /// A JWKS URL fetched in the background (`http://` or `https://`).
    pub jwks_url: Option<Spanned<String>>,
    /// Algorithms accepted; default: those the keys imply. "none" is never accepted.
    #[serde(default)]
    pub algorithms: Vec<Spanned<String>>,
    pub issuer: Option<String>,
    #[serde(default)]
    pub audience: Vec<String>,
    /// Clock-skew allowance on `exp` and `nbf`. Default 60s.
    #[serde(default = "defaults::leeway")]
    pub leeway: Dur,
    /// Refuse tokens without `exp`. Default true.
    #[serde(default = "defaults::yes")]
    pub require_exp: bool,
    /// The claim naming the consumer. Default "sub".
    #[serde(default = "defaults::sub")]
    pub consumer_claim: String,
    /// Claims forwarded to the upstream: claim name → header name.
    #[serde(default)]
    pub forward_claims: std::collections::BTreeMap<String, String>,
    /// Tokens longer than this are refused unread. Default 8KiB.
    #[serde(default = "defaults::max_token")]
    pub max_token_bytes: crate::units::Size,
    /// How often a JWKS URL is fetched again. Default 5m.
    #[serde(default = "defaults::jwks_refresh")]
    pub jwks_refresh: Dur,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthForward {
    /// Default "x-consumer".
    pub consumer: String,
    /// Default "x-consumer-groups" (comma-separated).
    pub groups: String,
}

impl Default for AuthForward {
    fn default() -> Self {
        AuthForward {
            consumer: "x-consumer".into(),
            groups: "x-consumer-groups".into(),
        }
    }
}

/// `[route.access]`: who may use the route by address, and how large a body it takes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAccess {
    /// Addresses or CIDR blocks admitted; empty: all (but `deny`).
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    /// Addresses or CIDR blocks refused (403), checked first.
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
    /// Largest request body on this route (the listener's `max_body_bytes` still caps it).
    pub max_body: Option<crate::units::Size>,
}

/// `[route.cors]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCors {
    /// `"*"`, exact origins, or `"https://*.example.com"`.
    pub origins: Vec<Spanned<String>>,
    /// Default ["GET", "HEAD", "POST"].
    #[serde(default = "defaults::cors_methods")]
    pub methods: Vec<String>,
    /// Request headers a preflight may ask for. Default ["content-type"].
    #[serde(default = "defaults::cors_headers")]
    pub headers: Vec<String>,
    #[serde(default)]
    pub expose: Vec<String>,
    #[serde(default)]
    pub credentials: bool,
    /// How long browsers may cache a preflight. Default 10m.
    pub max_age: Option<Dur>,
}

/// `[service.NAME.shed]`: load shedding in front of the service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shed {
    /// A fixed limit of requests in flight (with `adaptive`: its ceiling).
    pub max_inflight: Option<u32>,
    /// Find the limit from latency (a gradient controller). Default false.
    #[serde(default)]
    pub adaptive: bool,
    /// Adaptive bounds: floor (default 4), ceiling (default 1000), start (default 20).
    pub min_limit: Option<u32>,
    pub max_limit: Option<u32>,
    pub initial_limit: Option<u32>,
    /// How far above the unloaded latency admitted requests may go. Default 0.1 (10%).
    pub tolerance: Option<f64>,
    /// Requests that may wait for a slot. Default 0 (shed at once).
    #[serde(default)]
    pub queue: u32,
    /// Longest wait in the queue. Default 1s.
    #[serde(default = "defaults::queue_timeout")]
    pub queue_timeout: Dur,
    /// Share of the limit only critical routes may use. Default 0.1.
    #[serde(default = "defaults::critical_reserve")]
    pub critical_reserve: f64,
}

/// `[service.NAME.circuit]`: a circuit breaker on the service as a whole.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Circuit {
    /// Failures in a row that open it. Default 20; 0 turns the rule off.
    #[serde(default = "defaults::consecutive_failures")]
    pub consecutive_failures: u32,
    /// Failure share over `window` that opens it. Default 0.5; 0 turns the rule off.
    #[serde(default = "defaults::failure_rate")]
    pub failure_rate: f64,
    /// Requests the window must hold before the rate counts. Default 20.
    #[serde(default = "defaults::min_requests")]
    pub min_requests: u32,
    /// Default 10s.
    #[serde(default = "defaults::circuit_window")]
    pub window: Dur,
    /// How long it stays open before probing. Default 5s.
    #[serde(default = "defaults::open_for")]
    pub open_for: Dur,
    /// Probes let through half-open; all must succeed to close it. Default 3.
    #[serde(default = "defaults::half_open_probes")]
    pub half_open_probes: u32,
}

mod defaults {
    use super::*;
    pub fn timeout() -> Dur {
        Dur(Duration::from_millis(50))
    }
    pub fn prefix() -> String {
        "headroom:rl:".into()
    }
    pub fn breaker_failures() -> u32 {
        3
    }
    pub fn breaker_cooldown() -> Dur {
        Dur(Duration::from_secs(1))
    }
    pub fn fallback() -> Spanned<String> {
        Spanned::new(0..0, "local".into())
    }
    pub fn instances() -> u32 {
        1
    }
    pub fn auth_methods() -> Vec<Spanned<String>> {
        vec![Spanned::new(0..0, "key".into())]
    }
    pub fn queue_timeout() -> Dur {
        Dur(Duration::from_secs(1))
    }
    pub fn critical_reserve() -> f64 {
        0.1
    }
    pub fn consecutive_failures() -> u32 {
        20
    }
    pub fn failure_rate() -> f64 {
        0.5
    }
    pub fn min_requests() -> u32 {
        20
    }
    pub fn circuit_window() -> Dur {
        Dur(Duration::from_secs(10))
    }
    pub fn open_for() -> Dur {
        Dur(Duration::from_secs(5))
    }
    pub fn half_open_probes() -> u32 {
        3
    }
    pub fn leeway() -> Dur {
        Dur(Duration::from_secs(60))
    }
    pub fn yes() -> bool {
        true
    }
    pub fn sub() -> String {
        "sub".into()
    }
    pub fn max_token() -> crate::units::Size {
        crate::units::Size(8 << 10)
    }
    pub fn jwks_refresh() -> Dur {
        Dur(Duration::from_secs(300))
    }
    pub fn cors_methods() -> Vec<String> {
        vec!["GET".into(), "HEAD".into(), "POST".into()]
    }
    pub fn cors_headers() -> Vec<String> {
        vec!["content-type".into()]
    }
    pub fn key_header() -> String {
        "x-api-key".into()
    }
}
