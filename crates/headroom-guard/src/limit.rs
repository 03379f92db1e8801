//! A route's rate limits, checked in order on each request: the key each counts by, the
//! decision (in memory, or in Redis for a shared limit), and the `RateLimit-Policy`,
//! `RateLimit` and `Retry-After` fields that tell the client where it stands
//! (draft-ietf-httpapi-ratelimit-headers).

use crate::gcra::{Decision, Quota};
use crate::local::LocalLimiter;
use crate::shared::{SharedDecision, SharedStore};
use headroom_config::guard::{Fallback, IpNet, LimitConfig, LimitKey};
use headroom_telemetry::{Counter, Registry};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;
use std::sync::Arc;

pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// One limit's state and counters; outlives snapshots while its config stays the same.
pub struct Limit {
    pub(crate) cfg: LimitConfig,
    quota: Quota,
    /// The local fallback's share of a shared limit: 1/instances of it.
    share: Quota,
    local: LocalLimiter,
    shared: Option<Arc<SharedStore>>,
    /// `route/limit`: the Redis key's scope.
    scope: String,
    /// `"name";q=..;w=..`, for `RateLimit-Policy`.
    policy: String,
    /// `key = "header:NAME"`'s name, parsed once.
    header: Option<HeaderName>,
    allowed: Arc<Counter>,
    limited: Arc<Counter>,
    would_limit: Arc<Counter>,
}

impl Limit {
    pub(crate) fn new(
        route: &str,
        cfg: &LimitConfig,
        max_keys: usize,
        shared: Option<Arc<SharedStore>>,
        registry: &Registry,
    ) -> Limit {
        let quota = Quota::new(cfg.count, cfg.period, cfg.burst);
        let shared = shared.filter(|_| cfg.shared);
        let n = u64::from(shared.as_ref().map_or(1, |s| s.instances.max(1)));
        let share = Quota::new(
            (cfg.count / n).max(1),
            cfg.period,
            (cfg.burst / n as u32).max(1),
        );
        let counter = |result: &str| {
            registry.counter(
                "headroom_guard_limit_total",
                "Requests checked by a rate limit, by result: allowed, limited, or would_limit (a dry-run limit that would have limited).",
                &[("route", route), ("limit", cfg.name.as_str()), ("result", result)],
            )
        };
        Limit {
            policy: format!(
                "\"{}\";q={};w={}",
                cfg.name,
                quota.burst,
                quota.window_secs()
            ),
            scope: format!("{route}/{}", cfg.name),
            header: match &cfg.key {
                LimitKey::Header(h) => HeaderName::from_bytes(h.as_bytes()).ok(),
                _ => None,
            },
            local: LocalLimiter::new(quota, max_keys),
            quota,
            share,
            shared,
            allowed: counter("allowed"),
            limited: counter("limited"),
            would_limit: counter("would_limit"),
            cfg: cfg.clone(),
        }
    }

    /// The key this request counts under; `None`: the route as a whole.
    fn key<'b>(&self, client: &'b [u8], req: &'b LimitRequest<'_>) -> Option<&'b [u8]> {
        let headers = req.headers;
        match &self.cfg.key {
            LimitKey::Consumer => Some(req.consumer.map_or(&[][..], str::as_bytes)),
            LimitKey::Claim(c) => Some(
                req.claims
                    .iter()
                    .find(|(k, _)| **k == **c)
                    .map_or(&[][..], |(_, v)| v.as_bytes()),
            ),
            LimitKey::Ip => Some(client),
            LimitKey::Route => None,
            LimitKey::Header(_) => Some(
                self.header
                    .as_ref()
                    .and_then(|h| headers.get(h))
                    .map_or(&[][..], |v| v.as_bytes()),
            ),
        }
    }

    async fn decide(&self, key: Option<&[u8]>) -> Option<Decision> {
        let Some(store) = &self.shared else {
            return Some(self.local.check(key, self.local.now()));
        };
        let hash = key.map_or(0, xxhash_rust::xxh3::xxh3_64);
        match store
            .decide(&self.quota, &store.key(&self.scope, hash))
            .await
        {
            SharedDecision::Decided(d) => Some(d),
            SharedDecision::Unavailable => match store.fallback {
                Fallback::Local => Some(self.local.check_with(&self.share, key, self.local.now())),
                Fallback::Closed => None,
            },
        }
    }
}

/// Who is asking: what a limit's key is made of.
pub struct LimitRequest<'a> {
    /// The client's address (see [`crate::client_ip`]).
    pub client: IpAddr,
    pub headers: &'a HeaderMap,
    /// The authenticated consumer's name (`key = "consumer"`).
    pub consumer: Option<&'a str>,
    /// The bearer token's claims limits count by (`key = "claim:NAME"`).
    pub claims: &'a [(Box<str>, String)],
}

/// The outcome for one request.
#[derive(Debug)]
pub enum Verdict {
    /// Every limit passed; the fields for the response (none when every limit is dry-run).
    Pass(Option<RateFields>),
    /// A limit said no: 429 with these fields.
    Limited {
        limit: String,
        retry_after_secs: u64,
        fields: RateFields,
    },
    /// A shared limit could not be decided and its fallback is "closed": 503.
    Unavailable { limit: String },
}

/// `RateLimit-Policy` and `RateLimit`, ready to add to a response.
#[derive(Debug, Clone)]
pub struct RateFields {
    pub policy: HeaderValue,
    pub state: HeaderValue,
}

impl RateFields {
    pub fn apply(self, h: &mut HeaderMap) {
        h.insert(RATELIMIT_POLICY.clone(), self.policy);
        h.insert(RATELIMIT.clone(), self.state);
    }
}

/// A route's limits, in order; built once per snapshot, the state inside kept across
/// reloads (see [`crate::Guard::route_limits`]).
pub struct RouteLimits {
    pub(crate) limits: Box<[Arc<Limit>]>,
    pub(crate) trusted: Arc<[IpNet]>,
    /// `RateLimit-Policy` of the enforced limits, rendered once.
    policy: Option<HeaderValue>,
}

impl RouteLimits {
    pub(crate) fn new(limits: Vec<Arc<Limit>>, trusted: Arc<[IpNet]>) -> RouteLimits {
        let enforced: Vec<&str> = limits
            .iter()
            .filter(|l| !l.cfg.dry_run)
            .map(|l| l.policy.as_str())
            .collect();
        let policy = (!enforced.is_empty())
            .then(|| HeaderValue::from_str(&enforced.join(", ")).ok())
            .flatten();
        RouteLimits {
            limits: limits.into(),
            trusted,
            policy,
        }
    }

    /// The client's address for `peer` and these headers, through the trusted proxies.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        crate::client::client_ip(&self.trusted, peer, headers)
    }

    /// Checks every limit in order; the first that says no decides (the ones before it
    /// have counted the request). Dry-run limits count what they would limit and pass.
    pub async fn check(&self, req: &LimitRequest<'_>) -> Verdict {
        let ip = match req.client {
            IpAddr::V4(a) => Ip::V4(a.octets()),
            IpAddr::V6(a) => Ip::V6(a.octets()),
        };
        // One allocation for the `RateLimit` field: ~40 bytes a limit.
        let mut state = String::with_capacity(48 * self.limits.len());
        for limit in self.limits.iter() {
            let key = limit.key(ip.bytes(), req);
            let Some(decision) = limit.decide(key).await else {
                limit.limited.inc();
                return Verdict::Unavailable {
                    limit: limit.cfg.name.clone(),
                };
            };
            match decision {
                Decision::Allow { remaining, reset } => {
                    limit.allowed.inc();
                    if !limit.cfg.dry_run {
                        push_state(&mut state, &limit.cfg.name, remaining, reset);
                    }
                }
                Decision::Deny { .. } if limit.cfg.dry_run => limit.would_limit.inc(),
                Decision::Deny { retry_after, reset } => {
                    limit.limited.inc();
                    let mut state = String::new();
                    push_state(&mut state, &limit.cfg.name, 0, reset);
                    return Verdict::Limited {
                        limit: limit.cfg.name.clone(),
                        retry_after_secs: secs_up(retry_after),
                        fields: RateFields {
                            policy: HeaderValue::from_str(&limit.policy)
                                .unwrap_or(HeaderValue::from_static("")),
                            state: HeaderValue::from_str(&state)
                                .unwrap_or(HeaderValue::from_static("")),
                        },
                    };
                }
            }
        }
        // The string's buffer becomes the value's: no copy.
        let fields = self.policy.clone().and_then(|policy| {
            Some(RateFields {
                policy,
                state: HeaderValue::from_maybe_shared(bytes::Bytes::from(state)).ok()?,
            })
        });
        Verdict::Pass(fields)
    }
}

enum Ip {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Ip {
    fn bytes(&self) -> &[u8] {
        match self {
            Ip::V4(b) => b,
            Ip::V6(b) => b,
        }
    }
}

/// Whole seconds, rounded up: a client told 0 would come back at once.
fn secs_up(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000).max(1)
}

fn push_state(out: &mut String, name: &str, remaining: u32, reset: u64) {
    if !out.is_empty() {
        out.push_str(", ");
    }
    let mut n = itoa::Buffer::new();
    out.push('"');
    out.push_str(name);
    out.push_str("\";r=");
    out.push_str(n.format(remaining));
    out.push_str(";t=");
    out.push_str(n.format(reset.div_ceil(1_000_000_000)));
}
