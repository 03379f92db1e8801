//! `[cache]`, `[route.cache]` with its page rules, and `[route.compress]`.

use crate::cache::*;
use crate::error::Reporter;
use crate::model::cache as model;
use toml::Spanned;

/// `[cache]`: the store's bounds and its Redis tier.
pub(crate) fn validate_cache(r: &mut Reporter, raw: &model::Cache) -> CacheConfig {
    let redis = raw.redis.as_ref().and_then(|s| {
        let at = s.span().start;
        let redis = s.get_ref();
        let target = super::redis_target(r, at, "cache.redis", &redis.url, &redis.cluster)?;
        if redis.timeout.0.is_zero() {
            r.error(
                at,
                Some("cache.redis.timeout".into()),
                "must be more than 0",
            );
        }
        Some(RedisConfig {
            target,
            timeout: redis.timeout.0,
            prefix: redis.prefix.clone(),
            breaker_failures: redis.breaker_failures.max(1),
            breaker_cooldown: redis.breaker_cooldown.0,
        })
    });
    if raw.max_variants == 0 {
        r.error(0, Some("cache.max_variants".into()), "must be at least 1");
    }
    CacheConfig {
        memory: raw.memory.0,
        max_object: raw.max_object.0,
        max_key: usize::try_from(raw.max_key.0).unwrap_or(usize::MAX),
        max_variants: raw.max_variants.max(1),
        coalesce_wait: raw.coalesce_wait.0,
        heuristic_cap: raw.heuristic_cap.0,
        x_cache: raw.x_cache,
        redis,
    }
}

/// The fields a route and its rules share; a rule's unset fields come from its route's.
struct Fields<'a> {
    ttl: &'a Option<crate::units::Dur>,
    ignore_origin: &'a Option<bool>,
    statuses: &'a Option<std::collections::BTreeMap<Spanned<String>, crate::units::Dur>>,
    stale_while_revalidate: &'a Option<crate::units::Dur>,
    stale_if_error: &'a Option<crate::units::Dur>,
    key: &'a Option<model::CacheKey>,
    bypass_cookies: &'a Option<Vec<String>>,
    bypass_headers: &'a Option<Vec<Spanned<String>>>,
    allow_authorization: &'a Option<bool>,
    allow_set_cookie: &'a Option<bool>,
}

macro_rules! fields {
    ($x:expr) => {
        Fields {
            ttl: &$x.ttl,
            ignore_origin: &$x.ignore_origin,
            statuses: &$x.statuses,
            stale_while_revalidate: &$x.stale_while_revalidate,
            stale_if_error: &$x.stale_if_error,
            key: &$x.key,
            bypass_cookies: &$x.bypass_cookies,
            bypass_headers: &$x.bypass_headers,
            allow_authorization: &$x.allow_authorization,
            allow_set_cookie: &$x.allow_set_cookie,
        }
    };
}

/// `[route.cache]`; `None` when it is absent, disabled or wrong (errors reported).
pub(crate) fn validate_route_cache(
    r: &mut Reporter,
    raw: Option<&Spanned<model::RouteCache>>,
    key: &impl Fn(&str) -> Option<String>,
) -> Option<RouteCacheConfig> {
    let raw = raw?;
    let at = raw.span().start;
    let c = raw.get_ref();
    if c.enabled == Some(false) {
        return None;
    }
    let policy = policy(r, at, &fields!(c), &CachePolicy::default(), key, "cache");
    let rules = c
        .rule
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let at = rule.span().start;
            let rule = rule.get_ref();
            let pat = rule.matcher.get_ref();
            if let Err(e) = crate::glob(pat) {
                r.error(
                    rule.matcher.span().start,
                    key(&format!("cache.rule[{}].match", i + 1)),
                    format!("expected a path glob such as \"/static/**\" or \"*.{{css,js}}\": {e}"),
                );
            }
            CacheRuleConfig {
                glob: pat.clone(),
                bypass: rule.bypass,
                policy: policy_of(r, at, &fields!(rule), &policy, key, i),
            }
        })
        .collect();
    Some(RouteCacheConfig {
        policy,
        rules,
        purge_method: c.purge_method,
    })
}

fn policy_of(
    r: &mut Reporter,
    at: usize,
    f: &Fields,
    base: &CachePolicy,
    key: &impl Fn(&str) -> Option<String>,
    i: usize,
) -> CachePolicy {
    policy(r, at, f, base, key, &format!("cache.rule[{}]", i + 1))
}

/// One policy: `f`'s fields where set, `base`'s otherwise.
fn policy(
    r: &mut Reporter,
    at: usize,
    f: &Fields,
    base: &CachePolicy,
    key: &impl Fn(&str) -> Option<String>,
    prefix: &str,
) -> CachePolicy {
    let k = |name: &str| key(&format!("{prefix}.{name}"));
    let statuses = match f.statuses {
        None => base.statuses.clone(),
        Some(map) => {
            let mut out: Vec<(u16, std::time::Duration)> = Vec::new();
            for (code, ttl) in map {
                match code.get_ref().parse::<u16>() {
                    Ok(c) if (200..600).contains(&c) => out.push((c, ttl.0)),
                    _ => r.error(
                        code.span().start,
                        k("statuses"),
                        format!(
                            "expected an HTTP status code (200-599) as the key, got \"{}\"",
                            code.get_ref()
                        ),
                    ),
                }
            }
            out.sort_unstable();
            out
        }
    };
    let key_cfg = match f.key {
        None => base.key.clone(),
        Some(kc) => {
            let query = match (&kc.query, &kc.query_allow, &kc.query_deny) {
                (None, None, None) => base.key.query.clone(),
                (Some(q), None, None) => match q.get_ref().as_str() {
                    "all" => QueryKey::All,
                    "none" => QueryKey::None,
                    other => {
                        r.error(
                            q.span().start,
                            k("key.query"),
                            format!("expected \"all\" or \"none\" (or use query_allow / query_deny), got \"{other}\""),
                        );
                        QueryKey::All
                    }
                },
                (None, Some(allow), None) => QueryKey::Allow(sorted(allow)),
                (None, None, Some(deny)) => QueryKey::Deny(sorted(deny)),
                _ => {
                    r.error(
                        at,
                        k("key"),
                        "set at most one of `query`, `query_allow` and `query_deny`",
                    );
                    QueryKey::All
                }
            };
            KeyConfig {
                host: kc.host.unwrap_or(base.key.host),
                query,
                headers: match &kc.headers {
                    Some(h) => header_names(r, h, &k("key.headers")),
                    None => base.key.headers.clone(),
                },
                cookies: kc
                    .cookies
                    .clone()
                    .unwrap_or_else(|| base.key.cookies.clone()),
            }
        }
    };
    CachePolicy {
        ttl: f.ttl.as_ref().map(|d| d.0).or(base.ttl),
        ignore_origin: f.ignore_origin.unwrap_or(base.ignore_origin),
        statuses,
        stale_while_revalidate: f
            .stale_while_revalidate
            .as_ref()
            .map_or(base.stale_while_revalidate, |d| d.0),
        stale_if_error: f
            .stale_if_error
            .as_ref()
            .map_or(base.stale_if_error, |d| d.0),
        key: key_cfg,
        bypass_cookies: f
            .bypass_cookies
            .clone()
            .unwrap_or_else(|| base.bypass_cookies.clone()),
        bypass_headers: match f.bypass_headers {
            Some(h) => header_names(r, h, &k("bypass_headers")),
            None => base.bypass_headers.clone(),
        },
        allow_authorization: f.allow_authorization.unwrap_or(base.allow_authorization),
        allow_set_cookie: f.allow_set_cookie.unwrap_or(base.allow_set_cookie),
    }
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v.dedup();
    v
}

fn header_names(r: &mut Reporter, names: &[Spanned<String>], key: &Option<String>) -> Vec<String> {
    names
        .iter()
        .filter_map(|n| {
            let v = n.get_ref();
            let ok = !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !ok {
                r.error(
                    n.span().start,
                    key.clone(),
                    format!("\"{v}\" is not a header name"),
                );
            }
            ok.then(|| v.to_ascii_lowercase())
        })
        .collect()
}

/// `[route.compress]`.
pub(crate) fn validate_compress(
    r: &mut Reporter,
    raw: Option<&Spanned<model::Compress>>,
    key: &impl Fn(&str) -> Option<String>,
) -> Option<CompressConfig> {
    let c = raw?.get_ref();
    let mut codings = Vec::new();
    for coding in &c.codings {
        let name = match coding.get_ref().as_str() {
            "br" | "brotli" => "br",
            "gzip" => "gzip",
            "zstd" => "zstd",
            other => {
                r.error(
                    coding.span().start,
                    key("compress.codings"),
                    format!("expected \"br\", \"zstd\" or \"gzip\", got \"{other}\""),
                );
                continue;
            }
        };
        if !codings.contains(&name.to_string()) {
            codings.push(name.to_string());
        }
    }
    if codings.is_empty() {
        r.error(
            raw?.span().start,
            key("compress.codings"),
            "name at least one of \"br\", \"zstd\", \"gzip\"",
        );
    }
    Some(CompressConfig {
        codings,
        min_size: c.min_size.0,
    })
}

#[cfg(test)]
mod tests {
    use crate::ConfigErrors;

    fn check(extra: &str) -> Result<crate::Config, ConfigErrors> {
        let text = format!(
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\n\n[[route]]\nservice = \"s\"\n{extra}\n[service.s]\nreplicas = [\"127.0.0.1:1\"]\n"
        );
        crate::validate::validate("x.toml", &text, std::path::Path::new("."))
    }

    fn one_error(extra: &str) -> String {
        let e = check(extra).expect_err("invalid");
        assert_eq!(e.0.len(), 1, "{e}");
        e.0[0].to_string()
    }

    #[test]
    fn a_route_cache_with_rules_becomes_merged_policies() {
        let cfg = check(
            "[route.cache]\nstale_if_error = \"5m\"\nbypass_cookies = [\"session_id\"]\nstatuses = { \"404\" = \"30s\" }\n[[route.cache.rule]]\nmatch = \"*.{css,js}\"\nttl = \"7d\"\nkey = { query = \"none\" }\n",
        )
        .unwrap();
        let c = cfg.routes[0].cache.as_ref().unwrap();
        assert_eq!(
            c.policy.statuses,
            vec![(404, std::time::Duration::from_secs(30))]
        );
        let rule = &c.rules[0];
        assert_eq!(
            rule.policy.ttl,
            Some(std::time::Duration::from_secs(7 * 86400))
        );
        assert_eq!(rule.policy.key.query, crate::cache::QueryKey::None);
        // Unset in the rule: the route's.
        assert_eq!(
            rule.policy.stale_if_error,
            std::time::Duration::from_secs(300)
        );
        assert_eq!(rule.policy.bypass_cookies, ["session_id"]);
    }

    #[test]
    fn a_bad_glob_names_its_rule_and_line() {
        let e = one_error("[route.cache]\n[[route.cache.rule]]\nmatch = \"/static/[oops\"\n");
        assert!(e.contains("x.toml:9:"), "{e}");
        assert!(e.contains("cache.rule[1].match"), "{e}");
        assert!(e.contains("path glob"), "{e}");
    }

    #[test]
    fn a_status_key_must_be_a_status_code() {
        let e = one_error("[route.cache]\nstatuses = { \"40x\" = \"30s\" }\n");
        assert!(e.contains("HTTP status code"), "{e}");
    }

    #[test]
    fn redis_needs_exactly_one_of_url_and_cluster() {
        let both = "[cache.redis]\nurl = \"redis://127.0.0.1:6379\"\ncluster = [\"redis://127.0.0.1:7000\"]\n";
        let text = format!("[route.cache]\n{both}");
        let e = one_error(&text);
        assert!(e.contains("exactly one of `url`"), "{e}");
        let e = one_error("[route.cache]\n[cache.redis]\nurl = \"127.0.0.1:6379\"\n");
        assert!(e.contains("redis://"), "{e}");
    }

    #[test]
    fn an_unknown_coding_is_named() {
        let e = one_error("[route.compress]\ncodings = [\"gzip\", \"lzma\"]\n");
        assert!(e.contains("\"lzma\""), "{e}");
    }
}
