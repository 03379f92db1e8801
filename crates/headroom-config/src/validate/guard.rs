//! `[guard]` and `[[route.limit]]`.

use crate::error::Reporter;
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
            let parsed = v
                .parse::<IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => Some(net.trunc()),
                Err(_) => {
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
                            "expected \"ip\", \"route\" or \"header:NAME\", got \"{}\"",
                            k.get_ref()
                        ),
                    );
                    continue;
                }
            },
        };
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
        other => {
            let name = other.strip_prefix("header:")?.trim().to_ascii_lowercase();
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            valid.then_some(LimitKey::Header(name))
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
