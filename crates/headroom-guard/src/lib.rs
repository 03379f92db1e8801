//! headroom's API-gateway layer, the pipeline's `admit` phase: rate limits (GCRA, in memory
//! or shared by every instance through Redis) and who the client is behind trusted proxies.
//!
//! The edge builds one [`Guard`] per `[guard]` config and asks it, per snapshot, for each
//! route's [`RouteLimits`]; the limiters' state lives in the guard, so a reload that leaves a
//! limit as it was keeps its counts (a reload is not a free burst). A route without limits
//! gets `None` and pays nothing.

#![forbid(unsafe_code)]

mod access;
mod auth;
mod circuit;
mod client;
mod cors;
pub mod gcra;
mod jwks;
mod jwt;
mod limit;
mod local;
mod shared;
mod shed;

pub use access::{Access, AccessRules};
pub use auth::{key_hash, new_key, AuthVerdict, Claims, Consumer, RouteAuth};
pub use circuit::{Circuit, CircuitPermit, CircuitSettings, CircuitState, Observer, Open};
pub use client::client_ip;
pub use cors::{Cors, CorsVerdict};
pub use jwks::fetch::HttpFetcher;
pub use jwks::KeySource;
pub use jwt::{JwtError, JwtSettings, JwtVerifier, Verified};
pub use limit::{LimitRequest, RateFields, RouteLimits, Verdict, RATELIMIT, RATELIMIT_POLICY};
pub use shed::{
    AdaptiveSettings, Outcome, Permit, Priority, Shed, ShedReason, ShedSettings, Shedder,
};

use auth::Consumers;
use headroom_config::guard::{
    ConsumerConfig, GuardConfig, JwtConfig, JwtKeys, LimitConfig, RouteAuthConfig,
};
use headroom_telemetry::Registry;
use limit::Limit;
use shared::SharedStore;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Each `[jwt.NAME]`: its config, the claims limits count by, its verifier.
type Verifiers = HashMap<String, (JwtConfig, Vec<String>, JwtVerifier)>;

/// The guard's state for one `[guard]` config.
pub struct Guard {
    cfg: GuardConfig,
    registry: Arc<Registry>,
    shared: Option<Arc<SharedStore>>,
    trusted: Arc<[headroom_config::guard::IpNet]>,
    /// Each (route, limit)'s state, reused while its config is the same.
    limits: Mutex<HashMap<(String, String), Arc<Limit>>>,
    /// Each `[jwt.NAME]`'s verifier (its keys, its JWKS fetcher), reused while its config is
    /// the same, so a reload does not refetch a JWKS URL.
    jwts: Mutex<Verifiers>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// A guard for `cfg`. A `[guard.redis]` that cannot be set up (a URL the client
    /// refuses) is logged, and shared limits then use their fallback.
    pub fn new(cfg: &GuardConfig, registry: &Arc<Registry>) -> Guard {
        let shared = cfg.redis.as_ref().and_then(|r| match SharedStore::new(r, registry) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                tracing::error!(error = %e, "guard.redis: cannot use it; shared limits are kept in memory");
                None
            }
        });
        Guard {
            cfg: cfg.clone(),
            registry: registry.clone(),
            shared,
            trusted: cfg.trusted_proxies.clone().into(),
            limits: Mutex::default(),
            jwts: Mutex::default(),
        }
    }

    pub fn config(&self) -> &GuardConfig {
        &self.cfg
    }

    /// Compiles every route's guard for a new snapshot: its auth (against `consumers`) and
    /// its limits, keeping the state of limits whose config did not change (routes' and
    /// consumers' alike) and forgetting the rest.
    pub fn compile(
        &self,
        routes: &[RouteSpec<'_>],
        consumers: &[ConsumerConfig],
        jwts: &BTreeMap<String, JwtConfig>,
    ) -> Vec<RouteGuard> {
        // The claims limits count by, for each [jwt.NAME], beyond its forward_claims.
        let mut extra: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for r in routes {
            let Some(name) = r.auth.and_then(|a| a.jwt.as_deref()) else {
                continue;
            };
            for l in r.limits {
                if let headroom_config::guard::LimitKey::Claim(c) = &l.key {
                    let e = extra.entry(name).or_default();
                    if !e.contains(c) {
                        e.push(c.clone());
                    }
                }
            }
        }
        let verifiers = self.verifiers(jwts, &extra);
        let mut map = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::new();
        let mut build = |scope: &str, limits: &[LimitConfig]| -> Option<Arc<RouteLimits>> {
            if limits.is_empty() {
                return None;
            }
            let built: Vec<Arc<Limit>> = limits
                .iter()
                .map(|cfg| {
                    let id = (scope.to_string(), cfg.name.clone());
                    let limit = match map.remove(&id) {
                        Some(l) if l.cfg == *cfg => l,
                        _ => Arc::new(Limit::new(
                            scope,
                            cfg,
                            self.cfg.max_keys,
                            self.shared.clone(),
                            &self.registry,
                        )),
                    };
                    next.insert(id, limit.clone());
                    limit
                })
                .collect();
            Some(Arc::new(RouteLimits::new(built, self.trusted.clone())))
        };
        let consumers = Arc::new(Consumers::new(consumers, &self.registry, |c| {
            build(&format!("consumer:{}", c.name), &c.limits)
        }));
        let out = routes
            .iter()
            .map(|r| RouteGuard {
                access: r
                    .access
                    .map(|a| Arc::new(AccessRules::new(a, self.trusted.clone()))),
                cors: r.cors.map(|c| Arc::new(Cors::new(c))),
                auth: r.auth.map(|a| {
                    let jwt = a.jwt.as_ref().and_then(|name| {
                        let (cfg, keys, v) = verifiers.get(name)?;
                        let headers = cfg.forward_claims.iter().map(|(_, h)| h.clone()).collect();
                        Some((v.clone(), headers, keys.clone()))
                    });
                    Arc::new(RouteAuth::new(
                        r.name,
                        a,
                        consumers.clone(),
                        jwt,
                        &self.registry,
                    ))
                }),
                limits: build(r.name, r.limits),
            })
            .collect();
        for ((route, limit), _) in map.drain() {
            self.registry
                .remove_series(&[("route", route.as_str()), ("limit", limit.as_str())]);
        }
        *map = next;
        out
    }

    /// The verifiers for `jwts`: the ones in use where the config is unchanged, new ones
    /// (started on the current runtime) for the rest. One that cannot be built is logged
    /// and left out: its routes then refuse every token (`headroom check` reports it).
    fn verifiers(
        &self,
        jwts: &BTreeMap<String, JwtConfig>,
        extra: &BTreeMap<&str, Vec<String>>,
    ) -> Verifiers {
        let mut map = self.jwts.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::new();
        for (name, cfg) in jwts {
            let keys = extra.get(name.as_str()).cloned().unwrap_or_default();
            let v = match map.remove(name) {
                Some((old, old_keys, v)) if old == *cfg && old_keys == keys => v,
                _ => match jwt_verifier(cfg, &keys) {
                    Ok(v) => {
                        if tokio::runtime::Handle::try_current().is_ok() {
                            v.start();
                        }
                        v
                    }
                    Err(e) => {
                        tracing::error!(jwt = %name, error = %e, "jwt: cannot verify tokens; its routes refuse every token");
                        continue;
                    }
                },
            };
            next.insert(name.clone(), (cfg.clone(), keys, v));
        }
        *map = next.clone();
        next
    }

    /// The client's address for `peer`, through the trusted proxies.
    pub fn client(&self, peer: std::net::IpAddr, headers: &http::HeaderMap) -> std::net::IpAddr {
        client::client_ip(&self.trusted, peer, headers)
    }
}

/// The verifier a `[jwt.NAME]` describes: its keys read and parsed now.
/// `limit_claims`: claims the routes' limits count by, read after the forwarded ones.
fn jwt_verifier(cfg: &JwtConfig, limit_claims: &[String]) -> Result<JwtVerifier, String> {
    let keys = match &cfg.keys {
        JwtKeys::Secret(s) => KeySource::Secret(s.clone()),
        JwtKeys::PemFile(p) => {
            KeySource::Pem(std::fs::read(p).map_err(|e| format!("pem_file {}: {e}", p.display()))?)
        }
        JwtKeys::JwksFile(p) => KeySource::JwksFile(p.clone()),
        JwtKeys::JwksUrl(u) => KeySource::JwksUrl(u.clone()),
    };
    let mut s = JwtSettings::new(keys);
    s.algorithms = cfg.algorithms.clone();
    s.issuer = cfg.issuer.clone();
    s.audience = cfg.audience.clone();
    s.leeway = cfg.leeway;
    s.require_exp = cfg.require_exp;
    s.consumer_claim = cfg.consumer_claim.clone();
    s.forward_claims = cfg.forward_claims.iter().map(|(c, _)| c.clone()).collect();
    s.forward_claims.extend(limit_claims.iter().cloned());
    s.max_token_bytes = cfg.max_token_bytes;
    s.jwks_refresh = cfg.jwks_refresh;
    JwtVerifier::new(&s)
}

/// What the guard finds wrong in a config that its validation could not see: keys that do
/// not parse (a PEM that is not a public key, a JWKS without a usable key). Each message
/// names the `[jwt.NAME]` table. `headroom check`, `serve` and reloads refuse such a config.
pub fn check(jwts: &BTreeMap<String, JwtConfig>) -> Vec<String> {
    jwts.iter()
        .filter_map(|(name, cfg)| {
            jwt_verifier(cfg, &[])
                .err()
                .map(|e| format!("jwt.{name}: {e}"))
        })
        .collect()
}

/// What [`Guard::compile`] needs of a route.
pub struct RouteSpec<'a> {
    pub name: &'a str,
    pub limits: &'a [LimitConfig],
    pub auth: Option<&'a RouteAuthConfig>,
    pub access: Option<&'a headroom_config::guard::AccessConfig>,
    pub cors: Option<&'a headroom_config::guard::CorsConfig>,
}

/// A route's compiled guard; each part `None` when the route has none.
pub struct RouteGuard {
    pub cors: Option<Arc<Cors>>,
    pub access: Option<Arc<AccessRules>>,
    pub auth: Option<Arc<RouteAuth>>,
    pub limits: Option<Arc<RouteLimits>>,
}
