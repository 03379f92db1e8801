//! `[guard]` and `[[route.limit]]`.

use crate::error::{ConfigError, Reporter};
use crate::guard::*;
use crate::model::guard as model;
use std::time::Duration;
use toml::Spanned;

/// `[guard]`: trusted proxies, the limiters' bound, shared limits' Redis.
pub(crate) fn validate_guard(r: &mut Reporter, raw: &model::Guard) -> GuardConfig {
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .filter_map(|p| {
            let v = p.get_ref().trim();
            match parse_net(v) {
                Some(net) => Some(net),
                None => {
                    r.error(
                        p.span().start,
                        Some("guard.trusted_proxies".into()),
                        format!(
                            "expected an address or a CIDR block like \"10.0.0.0/8\" or \"::1\", got \"{v}\""
                        ),
                    );
                    None
                }
            }
        })
        .collect();
    if raw.max_keys == 0 {
        r.error(0, Some("guard.max_keys".into()), "must be at least 1");
    }
    let redis = raw.redis.as_ref().and_then(|s| {
        let at = s.span().start;
        let g = s.get_ref();
        let target = super::redis_target(r, at, "guard.redis", &g.url, &g.cluster)?;
        if g.timeout.0.is_zero() {
            r.error(
                at,
                Some("guard.redis.timeout".into()),
                "must be more than 0",
            );
        }
        let fallback = match g.fallback.get_ref().as_str() {
            "local" => Fallback::Local,
            "closed" => Fallback::Closed,
            other => {
                r.error(
                    g.fallback.span().start,
                    Some("guard.redis.fallback".into()),
                    format!("expected \"local\" or \"closed\", got \"{other}\""),
                );
                Fallback::Local
            }
        };
        if g.instances == 0 {
            r.error(
                at,
                Some("guard.redis.instances".into()),
                "must be at least 1",
            );
        }
        Some(GuardRedisConfig {
            redis: crate::cache::RedisConfig {
                target,
                timeout: g.timeout.0,
                prefix: g.prefix.clone(),
                breaker_failures: g.breaker_failures.max(1),
                breaker_cooldown: g.breaker_cooldown.0,
            },
            fallback,
            instances: g.instances.max(1),
        })
    });
    GuardConfig {
        trusted_proxies,
        max_keys: raw.max_keys.max(1),
        redis,
    }
}

/// A route's `[[route.limit]]` tables, in order.
pub(super) fn validate_limits(
    r: &mut Reporter,
    limits: &[Spanned<model::RouteLimit>],
    key: &impl Fn(&str) -> Option<String>,
    shared_available: bool,
    has_auth: bool,
    has_jwt: bool,
) -> Vec<LimitConfig> {
    let mut out: Vec<LimitConfig> = Vec::new();
    for (i, s) in limits.iter().enumerate() {
        let at = s.span().start;
        let l = s.get_ref();
        let name = l.name.clone().unwrap_or_else(|| format!("limit-{}", i + 1));
        if out.iter().any(|o| o.name == name) {
            r.error(
                at,
                key("limit.name"),
                format!("two limits are named \"{name}\" on this route"),
            );
        }
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            r.error(
                at,
                key("limit.name"),
                format!("\"{name}\": use letters, digits, '-', '_' and '.' (it goes into RateLimit headers)"),
            );
        }
        let Some((count, period)) = parse_rate(l.rate.get_ref()) else {
            r.error(
                l.rate.span().start,
                key("limit.rate"),
                format!(
                    "expected COUNT/UNIT like \"10/s\", \"600/m\", \"1000/h\", \"50000/d\" or \"5/10s\", got \"{}\"",
                    l.rate.get_ref()
                ),
            );
            continue;
        };
        if l.burst == Some(0) {
            r.error(at, key("limit.burst"), "must be at least 1");
        }
        let limit_key = match &l.key {
            None => LimitKey::Ip,
            Some(k) => match parse_key(k.get_ref()) {
                Some(lk) => lk,
                None => {
                    r.error(
                        k.span().start,
                        key("limit.key"),
                        format!(
                            "expected \"ip\", \"route\", \"consumer\", \"header:NAME\" or \"claim:NAME\", got \"{}\"",
                            k.get_ref()
                        ),
                    );
                    continue;
                }
            },
        };
        if matches!(limit_key, LimitKey::Claim(_)) && !has_jwt {
            r.error(
                at,
                key("limit.key"),
                "key = \"claim:NAME\" needs [route.auth] with methods = [\"jwt\"] on this route",
            );
        }
        if limit_key == LimitKey::Consumer && !has_auth {
            r.error(
                at,
                key("limit.key"),
                "key = \"consumer\" needs [route.auth] on this route (who the consumer is)",
            );
        }
        if l.shared == Some(true) && !shared_available {
            r.error(
                at,
                key("limit.shared"),
                "a shared limit needs [guard.redis] (where the instances keep it)",
            );
        }
        let burst = l
            .burst
            .unwrap_or_else(|| u32::try_from(count).unwrap_or(u32::MAX))
            .max(1);
        out.push(LimitConfig {
            name,
            count,
            period,
            burst,
            key: limit_key,
            shared: l.shared.unwrap_or(shared_available) && shared_available,
            dry_run: l.dry_run,
        });
    }
    out
}

/// `[[consumer]]` tables from the config, then from `guard.key_file` (its errors name that
/// file). Names and keys must be unique across both.
pub(crate) fn validate_consumers(
    r: &mut Reporter,
    raw: &[Spanned<model::Consumer>],
    key_file: Option<&Spanned<String>>,
    base_dir: &std::path::Path,
    shared_available: bool,
) -> Vec<ConsumerConfig> {
    let mut out = Vec::new();
    let mut seen_keys: Vec<[u8; 32]> = Vec::new();
    consumers_into(r, raw, shared_available, &mut out, &mut seen_keys);
    let Some(kf) = key_file else { return out };
    let path = base_dir.join(kf.get_ref());
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            r.error(
                kf.span().start,
                Some("guard.key_file".into()),
                format!("cannot read {name}: {e}"),
            );
            return out;
        }
    };
    let mut fr = Reporter::new(&name, &text);
    match toml::from_str::<model::KeyFile>(&text) {
        Ok(file) => consumers_into(
            &mut fr,
            &file.consumer,
            shared_available,
            &mut out,
            &mut seen_keys,
        ),
        Err(e) => {
            let at = e.span().map_or(0, |s| s.start);
            fr.error(at, None, e.message().to_string());
        }
    }
    let errors: Vec<ConfigError> = std::mem::take(&mut fr.errors);
    r.errors.extend(errors);
    out
}

fn consumers_into(
    r: &mut Reporter,
    raw: &[Spanned<model::Consumer>],
    shared_available: bool,
    out: &mut Vec<ConsumerConfig>,
    seen_keys: &mut Vec<[u8; 32]>,
) {
    for s in raw {
        let c = s.get_ref();
        let name = c.name.get_ref().trim().to_string();
        let at = c.name.span().start;
        if name.is_empty() {
            r.error(at, Some("consumer.name".into()), "must not be empty");
            continue;
        }
        if out.iter().any(|o: &ConsumerConfig| o.name == name) {
            r.error(
                at,
                Some("consumer.name".into()),
                format!("two consumers are named \"{name}\""),
            );
        }
        let key = |k: &str| Some(format!("consumer \"{name}\": {k}"));
        let mut key_hashes = Vec::new();
        for k in &c.keys {
            match parse_key_hash(k.get_ref()) {
                Some(h) if seen_keys.contains(&h) => r.error(
                    k.span().start,
                    key("keys"),
                    "this key is already another consumer's (or listed twice)",
                ),
                Some(h) => {
                    seen_keys.push(h);
                    key_hashes.push(h);
                }
                None => r.error(
                    k.span().start,
                    key("keys"),
                    "expected \"sha256:<64 hex digits>\", the key's hash (`headroom key hash` prints it), never the key itself",
                ),
            }
        }
        for l in &c.limit {
            if l.get_ref()
                .key
                .as_ref()
                .is_some_and(|k| k.get_ref().trim() != "consumer")
            {
                r.error(
                    l.span().start,
                    key("limit.key"),
                    "a consumer's own limits count by the consumer: leave `key` out",
                );
            }
        }
        let mut limits = validate_limits(r, &c.limit, &key, shared_available, true, false);
        for l in &mut limits {
            l.key = LimitKey::Consumer;
        }
        out.push(ConsumerConfig {
            name,
            groups: c.groups.iter().map(|g| g.trim().to_string()).collect(),
            key_hashes,
            limits,
        });
    }
}

/// `sha256:<64 hex digits>`.
pub(crate) fn parse_key_hash(s: &str) -> Option<[u8; 32]> {
    let hex = s.trim().strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// `[jwt.NAME]` tables: exactly one key source, files that can be read, a URL that is one.
/// (The keys themselves are parsed when the guard is built: `headroom_guard::check`.)
pub(crate) fn validate_jwts(
    r: &mut Reporter,
    raw: &std::collections::BTreeMap<String, Spanned<model::Jwt>>,
    base_dir: &std::path::Path,
) -> std::collections::BTreeMap<String, JwtConfig> {
    let mut out = std::collections::BTreeMap::new();
    for (name, s) in raw {
        let at = s.span().start;
        let j = s.get_ref();
        let key = |k: &str| Some(format!("jwt.{name}.{k}"));
        let file = |r: &mut Reporter, f: &Spanned<String>, what: &str| {
            let path = base_dir.join(f.get_ref());
            if let Err(e) = std::fs::metadata(&path) {
                r.error(
                    f.span().start,
                    key(what),
                    format!("cannot read {}: {e}", path.display()),
                );
            }
            path
        };
        let mut sources = Vec::new();
        if let Some(secret) = &j.secret {
            sources.push(JwtKeys::Secret(secret.as_bytes().to_vec()));
        }
        if let Some(var) = &j.secret_env {
            match std::env::var(var.get_ref()) {
                Ok(v) if !v.is_empty() => sources.push(JwtKeys::Secret(v.into_bytes())),
                _ => r.error(
                    var.span().start,
                    key("secret_env"),
                    format!(
                        "the environment variable {} is not set (or empty)",
                        var.get_ref()
                    ),
                ),
            }
        }
        if let Some(f) = &j.pem_file {
            sources.push(JwtKeys::PemFile(file(r, f, "pem_file")));
        }
        if let Some(f) = &j.jwks_file {
            sources.push(JwtKeys::JwksFile(file(r, f, "jwks_file")));
        }
        if let Some(u) = &j.jwks_url {
            let v = u.get_ref();
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                r.error(
                    u.span().start,
                    key("jwks_url"),
                    format!("expected an http:// or https:// URL, got \"{v}\""),
                );
            }
            sources.push(JwtKeys::JwksUrl(v.clone()));
        }
        let declared = usize::from(j.secret.is_some())
            + usize::from(j.secret_env.is_some())
            + usize::from(j.pem_file.is_some())
            + usize::from(j.jwks_file.is_some())
            + usize::from(j.jwks_url.is_some());
        if declared != 1 {
            r.error(
                at,
                Some(format!("jwt.{name}")),
                "set exactly one of `secret`, `secret_env`, `pem_file`, `jwks_file` or `jwks_url`",
            );
        }
        for a in &j.algorithms {
            if a.get_ref().eq_ignore_ascii_case("none") {
                r.error(
                    a.span().start,
                    key("algorithms"),
                    "\"none\" is never accepted: a token must be signed",
                );
            }
        }
        let mut forward_claims = Vec::new();
        for (claim, header) in &j.forward_claims {
            match http_token(header) {
                Some(h) => forward_claims.push((claim.clone(), h.to_ascii_lowercase())),
                None => r.error(
                    at,
                    key("forward_claims"),
                    format!("\"{header}\" is not a header name"),
                ),
            }
        }
        let Some(keys) = sources.into_iter().next() else {
            continue;
        };
        out.insert(
            name.clone(),
            JwtConfig {
                name: name.clone(),
                keys,
                algorithms: j.algorithms.iter().map(|a| a.get_ref().clone()).collect(),
                issuer: j.issuer.clone(),
                audience: j.audience.clone(),
                leeway: j.leeway.0,
                require_exp: j.require_exp,
                consumer_claim: j.consumer_claim.clone(),
                forward_claims,
                max_token_bytes: usize::try_from(j.max_token_bytes.0).unwrap_or(usize::MAX),
                jwks_refresh: j.jwks_refresh.0,
            },
        );
    }
    out
}

/// `[route.auth]`: its methods, key locations, admitted groups (each must be some
/// consumer's) and the identity headers.
pub(super) fn validate_auth(
    r: &mut Reporter,
    raw: Option<&Spanned<model::RouteAuth>>,
    key: &impl Fn(&str) -> Option<String>,
    consumers: &[ConsumerConfig],
    jwts: &[&str],
) -> Option<RouteAuthConfig> {
    let s = raw?;
    let a = s.get_ref();
    let mut keys = None;
    let mut jwt = None;
    for m in &a.methods {
        match m.get_ref().as_str() {
            "jwt" => match &a.jwt {
                Some(n) if jwts.contains(&n.get_ref().as_str()) => jwt = Some(n.get_ref().clone()),
                Some(n) => r.error(
                    n.span().start,
                    key("auth.jwt"),
                    super::unknown_name("[jwt.NAME] table", n.get_ref(), jwts),
                ),
                None => r.error(
                    m.span().start,
                    key("auth.jwt"),
                    "method \"jwt\" needs `jwt = \"NAME\"`, naming a [jwt.NAME] table",
                ),
            },
            "key" => {
                keys = Some(KeyAuth {
                    header: a.key_header.trim().to_ascii_lowercase(),
                    query: a.key_query.clone().filter(|q| !q.is_empty()),
                })
            }
            other => r.error(
                m.span().start,
                key("auth.methods"),
                format!("expected \"key\" (API keys) or \"jwt\" (bearer tokens), got \"{other}\""),
            ),
        }
    }
    if a.methods.is_empty() {
        r.error(
            s.span().start,
            key("auth.methods"),
            "name at least one method: [\"key\"]",
        );
    }
    for (what, h) in [
        ("auth.key_header", &a.key_header),
        ("auth.forward.consumer", &a.forward.consumer),
        ("auth.forward.groups", &a.forward.groups),
    ] {
        if http_token(h).is_none() {
            r.error(
                s.span().start,
                key(what),
                format!("\"{h}\" is not a header name"),
            );
        }
    }
    let groups: Vec<String> = a
        .groups
        .iter()
        .map(|g| {
            let name = g.get_ref().trim().to_string();
            if !consumers.iter().any(|c| c.groups.contains(&name)) {
                r.error(
                    g.span().start,
                    key("auth.groups"),
                    format!("no consumer is in group \"{name}\""),
                );
            }
            name
        })
        .collect();
    Some(RouteAuthConfig {
        key: keys,
        jwt,
        groups,
        forward_consumer: a.forward.consumer.trim().to_ascii_lowercase(),
        forward_groups: a.forward.groups.trim().to_ascii_lowercase(),
    })
}

/// `[route.access]`.
pub(super) fn validate_access(
    r: &mut Reporter,
    raw: Option<&Spanned<model::RouteAccess>>,
    key: &impl Fn(&str) -> Option<String>,
) -> Option<AccessConfig> {
    let a = raw?.get_ref();
    let nets = |r: &mut Reporter, list: &[Spanned<String>], what: &str| -> Vec<IpNet> {
        list.iter()
            .filter_map(|p| match parse_net(p.get_ref()) {
                Some(n) => Some(n),
                None => {
                    r.error(
                        p.span().start,
                        key(what),
                        format!(
                            "expected an address or a CIDR block like \"10.0.0.0/8\" or \"2001:db8::/32\", got \"{}\"",
                            p.get_ref()
                        ),
                    );
                    None
                }
            })
            .collect()
    };
    Some(AccessConfig {
        allow: nets(r, &a.allow, "access.allow"),
        deny: nets(r, &a.deny, "access.deny"),
        max_body: a.max_body.map(|s| s.0),
    })
}

/// `[route.cors]`: origins parsed; credentials with a wildcard origin refused (browsers
/// refuse such answers).
pub(super) fn validate_cors(
    r: &mut Reporter,
    raw: Option<&Spanned<model::RouteCors>>,
    key: &impl Fn(&str) -> Option<String>,
) -> Option<CorsConfig> {
    let s = raw?;
    let c = s.get_ref();
    let origins: Vec<OriginPattern> = c
        .origins
        .iter()
        .filter_map(|o| match OriginPattern::parse(o.get_ref()) {
            Some(p) => Some(p),
            None => {
                r.error(
                    o.span().start,
                    key("cors.origins"),
                    format!(
                        "expected \"*\", an origin like \"https://app.example.com\" or \"https://*.example.com\", got \"{}\"",
                        o.get_ref()
                    ),
                );
                None
            }
        })
        .collect();
    if c.origins.is_empty() {
        r.error(
            s.span().start,
            key("cors.origins"),
            "list the origins allowed (or \"*\")",
        );
    }
    if c.credentials && origins.contains(&OriginPattern::Any) {
        r.error(
            s.span().start,
            key("cors.credentials"),
            "browsers refuse credentials with a wildcard origin: list the origins",
        );
    }
    for m in &c.methods {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            r.error(
                s.span().start,
                key("cors.methods"),
                format!("\"{m}\" is not a method"),
            );
        }
    }
    for h in c.headers.iter().chain(&c.expose) {
        if h != "*" && http_token(h).is_none() {
            r.error(
                s.span().start,
                key("cors.headers"),
                format!("\"{h}\" is not a header name"),
            );
        }
    }
    Some(CorsConfig {
        origins,
        methods: c.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
        headers: c
            .headers
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect(),
        expose: c.expose.iter().map(|h| h.trim().to_string()).collect(),
        credentials: c.credentials,
        max_age: Some(
            c.max_age
                .map_or(std::time::Duration::from_secs(600), |d| d.0),
        ),
    })
}

/// `[service.NAME.shed]`: a limit to enforce (fixed, adaptive, or both), bounds in order.
pub(super) fn validate_shed(
    r: &mut Reporter,
    raw: Option<&Spanned<model::Shed>>,
    key: &impl Fn(&str) -> Option<String>,
) -> Option<ShedConfig> {
    let s = raw?;
    let at = s.span().start;
    let c = s.get_ref();
    if c.max_inflight.is_none() && !c.adaptive {
        r.error(
            at,
            key("shed"),
            "set `max_inflight` (a fixed limit), `adaptive = true`, or both",
        );
    }
    if c.max_inflight == Some(0) {
        r.error(at, key("shed.max_inflight"), "must be at least 1");
    }
    let adaptive = c.adaptive.then(|| {
        let min = c.min_limit.unwrap_or(4).max(1);
        let max = c.max_limit.unwrap_or(1000);
        let initial = c.initial_limit.unwrap_or(20);
        if min > max || initial < min || initial > max {
            r.error(
                at,
                key("shed"),
                format!(
                    "expected min_limit <= initial_limit <= max_limit, got {min}, {initial}, {max}"
                ),
            );
        }
        let tolerance = c.tolerance.unwrap_or(0.1);
        if !(0.0..=10.0).contains(&tolerance) {
            r.error(
                at,
                key("shed.tolerance"),
                "expected a share like 0.1 (10% over the unloaded latency)",
            );
        }
        (
            min,
            max.max(min),
            initial.clamp(min, max.max(min)),
            tolerance,
        )
    });
    if !(0.0..=0.4).contains(&c.critical_reserve) {
        r.error(
            at,
            key("shed.critical_reserve"),
            "expected a share from 0 to 0.4",
        );
    }
    if c.queue > 0 && c.queue_timeout.0.is_zero() {
        r.error(
            at,
            key("shed.queue_timeout"),
            "must be more than 0s with a queue",
        );
    }
    Some(ShedConfig {
        max_inflight: c.max_inflight,
        adaptive,
        queue: c.queue,
        queue_timeout: c.queue_timeout.0,
        critical_reserve: c.critical_reserve,
    })
}

/// `[service.NAME.circuit]`.
pub(super) fn validate_circuit(
    r: &mut Reporter,
    raw: Option<&Spanned<model::Circuit>>,
    key: &impl Fn(&str) -> Option<String>,
) -> Option<CircuitConfig> {
    let s = raw?;
    let at = s.span().start;
    let c = s.get_ref();
    if !(0.0..=1.0).contains(&c.failure_rate) {
        r.error(
            at,
            key("circuit.failure_rate"),
            "expected a share from 0 to 1 (0.5: half the requests)",
        );
    }
    if c.consecutive_failures == 0 && c.failure_rate == 0.0 {
        r.error(
            at,
            key("circuit"),
            "both rules are off: set consecutive_failures or failure_rate",
        );
    }
    for (what, d) in [
        ("circuit.window", c.window.0),
        ("circuit.open_for", c.open_for.0),
    ] {
        if d.is_zero() {
            r.error(at, key(what), "must be more than 0s");
        }
    }
    if c.half_open_probes == 0 {
        r.error(at, key("circuit.half_open_probes"), "must be at least 1");
    }
    Some(CircuitConfig {
        consecutive_failures: (c.consecutive_failures > 0).then_some(c.consecutive_failures),
        failure_rate: (c.failure_rate > 0.0).then_some((c.failure_rate, c.min_requests.max(1))),
        window: c.window.0,
        open_for: c.open_for.0,
        half_open_probes: c.half_open_probes.max(1),
    })
}

/// A route's `priority`.
pub(super) fn validate_priority(
    r: &mut Reporter,
    raw: Option<&Spanned<String>>,
    key: &impl Fn(&str) -> Option<String>,
) -> Priority {
    let Some(p) = raw else {
        return Priority::Normal;
    };
    match p.get_ref().as_str() {
        "critical" => Priority::Critical,
        "normal" => Priority::Normal,
        "sheddable" => Priority::Sheddable,
        other => {
            r.error(
                p.span().start,
                key("priority"),
                format!("expected \"critical\", \"normal\" or \"sheddable\", got \"{other}\""),
            );
            Priority::Normal
        }
    }
}

pub(super) fn parse_net(v: &str) -> Option<IpNet> {
    let v = v.trim();
    v.parse::<IpNet>()
        .or_else(|_| v.parse::<std::net::IpAddr>().map(IpNet::from))
        .ok()
        .map(|n| n.trunc())
}

fn http_token(s: &str) -> Option<&str> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    ok.then_some(s)
}

/// `10/s`, `600/m`, `1000/h`, `50000/d`, `5/10s` (any duration after the slash).
pub(crate) fn parse_rate(s: &str) -> Option<(u64, Duration)> {
    let (count, unit) = s.split_once('/')?;
    let count: u64 = count.trim().parse().ok().filter(|&c| c > 0)?;
    let period = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        other => humantime::parse_duration(other).ok()?,
    };
    (!period.is_zero()).then_some((count, period))
}

fn parse_key(s: &str) -> Option<LimitKey> {
    match s.trim() {
        "ip" => Some(LimitKey::Ip),
        "route" => Some(LimitKey::Route),
        "consumer" => Some(LimitKey::Consumer),
        other if other.starts_with("claim:") => {
            let c = other["claim:".len()..].trim();
            (!c.is_empty()).then(|| LimitKey::Claim(c.to_string()))
        }
        other => {
            let name = http_token(other.strip_prefix("header:")?)?;
            Some(LimitKey::Header(name.to_ascii_lowercase()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_count_per_period() {
        assert_eq!(parse_rate("10/s"), Some((10, Duration::from_secs(1))));
        assert_eq!(parse_rate("600/m"), Some((600, Duration::from_secs(60))));
        assert_eq!(
            parse_rate("1000/h"),
            Some((1000, Duration::from_secs(3600)))
        );
        assert_eq!(parse_rate("5 / 10s"), Some((5, Duration::from_secs(10))));
        for bad in ["10", "0/s", "-1/s", "10/fortnight", "10/0s", "x/s", ""] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_read_as_ip_route_or_a_header() {
        assert_eq!(parse_key("ip"), Some(LimitKey::Ip));
        assert_eq!(parse_key("route"), Some(LimitKey::Route));
        assert_eq!(
            parse_key("header:X-User"),
            Some(LimitKey::Header("x-user".into()))
        );
        assert_eq!(parse_key("header:"), None);
        assert_eq!(parse_key("header:bad name"), None);
        assert_eq!(parse_key("cookie"), None);
    }
}
