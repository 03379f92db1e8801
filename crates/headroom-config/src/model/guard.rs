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
    pub redis: Option<Spanned<GuardRedis>>,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            trusted_proxies: Vec::new(),
            max_keys: 100_000,
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
}
