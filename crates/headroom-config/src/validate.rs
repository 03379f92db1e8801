//! From the file's shape ([`crate::model`]) to a typed [`Config`], collecting every error.

use crate::error::{did_you_mean, Reporter};
use crate::model;
use crate::*;
use std::net::ToSocketAddrs;
use toml::Spanned;

mod cache;
mod guard;
mod postgres;
mod route;
mod scale;
mod service;
mod watch;

use route::validate_route;
use service::validate_service;

pub(crate) fn validate(file: &str, text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut r = Reporter::new(file, text);
    let raw: model::File = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let at = e.span().map_or(0, |s| s.start);
            let (key, message) = explain_toml_error(e.message(), r.key_at(at));
            r.error(at, key, message);
            return Err(ConfigErrors(r.errors));
        }
    };

    let global = GlobalConfig {
        workers: match raw.global.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        },
        shutdown_timeout: raw.global.shutdown_timeout.0,
        access_log: raw.global.access_log,
        access_log_path: raw.global.access_log_path.as_ref().and_then(|p| {
            if p.get_ref().is_empty() {
                r.error(
                    p.span().start,
                    Some("access_log_path".into()),
                    "must be a file path; leave it out to log to stdout",
                );
                return None;
            }
            Some(base_dir.join(p.get_ref()))
        }),
        watch: raw.global.watch,
        resolver: validate_resolver(&mut r, raw.global.resolver.as_ref()),
    };
    let admin = validate_admin(&mut r, &raw.admin);
    let cache = cache::validate_cache(&mut r, &raw.cache);
    let guard = guard::validate_guard(&mut r, &raw.guard);
    let jwt = guard::validate_jwts(&mut r, &raw.jwt, base_dir);
    let jwt_names: Vec<&str> = raw.jwt.keys().map(|k| k.as_str()).collect();
    let consumers = guard::validate_consumers(
        &mut r,
        &raw.consumer,
        raw.guard.key_file.as_ref(),
        base_dir,
        guard.redis.is_some(),
    );
    let listeners = validate_listeners(&mut r, &raw.listener, !raw.postgres.is_empty(), base_dir);
    let http_binds: Vec<SocketAddr> = listeners.iter().map(|l| l.bind).collect();
    let postgres = postgres::validate_postgres(&mut r, &raw.postgres, &http_binds);
    let services: BTreeMap<String, ServiceConfig> = raw
        .service
        .iter()
        .filter_map(|(name, svc)| {
            validate_service(&mut r, name, svc, base_dir).map(|s| (name.get_ref().clone(), s))
        })
        .collect();
    let service_names: Vec<&str> = raw.service.keys().map(|k| k.get_ref().as_str()).collect();
    let listener_names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    let routes = raw
        .route
        .iter()
        .enumerate()
        .filter_map(|(i, route)| {
            let known = route::Known {
                services: &service_names,
                listeners: &listener_names,
                guard: &guard,
                consumers: &consumers,
                jwts: &jwt_names,
            };
            validate_route(&mut r, i, route, &known)
        })
        .collect::<Vec<RouteConfig>>();
    let route_names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    let watch = watch::validate_watch(
        &mut r,
        &raw.watch,
        &watch::Names {
            routes: &route_names,
            services: &service_names,
        },
        base_dir,
    );

    if r.errors.is_empty() {
        Ok(Config {
            source: PathBuf::from(file),
            global,
            admin,
            listeners,
            routes,
            services,
            cache,
            guard,
            consumers,
            jwt,
            watch,
            postgres,
        })
    } else {
        Err(ConfigErrors(r.errors))
    }
}

/// Turns serde's wording into ours, with a "did you mean" for unknown keys and values.
fn explain_toml_error(message: &str, line_key: Option<String>) -> (Option<String>, String) {
    let message = message.trim();
    for (prefix, what) in [("unknown field `", "key"), ("unknown variant `", "value")] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let Some((word, rest)) = rest.split_once('`') else {
                break;
            };
            let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
            let mut msg = format!("unknown {what} \"{word}\"");
            if let Some(best) = did_you_mean(word, expected.iter().copied()) {
                msg.push_str(&format!("; did you mean \"{best}\"?"));
            } else if !expected.is_empty() {
                msg.push_str(&format!("; expected one of: {}", expected.join(", ")));
            }
            let key = if what == "key" {
                Some(word.to_string())
            } else {
                line_key
            };
            return (key, msg);
        }
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        return (
            None,
            format!("missing required key \"{field}\" in this table"),
        );
    }
    if message.starts_with("data did not match any variant of untagged enum ReplicaSpec") {
        return (
            line_key,
            "a replica is \"host:port\" or { addr = \"host:port\", weight = N }; to discover replicas use replicas = { dns = \"host:port\" }".into(),
        );
    }
    (line_key, message.replace("invalid type: ", "wrong type: "))
}

fn resolve_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !s.contains(':') {
        return Err(format!(
            "\"{s}\" has no port: expected \"host:port\", like \"127.0.0.1:8080\""
        ));
    }
    match s.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("\"{s}\" resolves to no address")),
        Err(e) => Err(format!(
            "cannot resolve \"{s}\": {e}; expected \"host:port\""
        )),
    }
}

fn validate_admin(r: &mut Reporter, admin: &model::Admin) -> Option<AdminConfig> {
    if !admin.enabled {
        return None;
    }
    match resolve_addr(admin.bind.get_ref()) {
        Ok(bind) => {
            if !bind.ip().is_loopback() && admin.token.as_deref().unwrap_or("").is_empty() {
                r.error(
                    admin.bind.span().start,
                    Some("admin.bind".into()),
                    "the admin listener is bound beyond loopback: set admin.token so /metrics and /status need a bearer token",
                );
            }
            Some(AdminConfig {
                bind,
                token: admin.token.clone().filter(|t| !t.is_empty()),
            })
        }
        Err(e) => {
            r.error(admin.bind.span().start, Some("admin.bind".into()), e);
            None
        }
    }
}

fn validate_listeners(
    r: &mut Reporter,
    raw: &[Spanned<model::Listener>],
    has_postgres: bool,
    base: &Path,
) -> Vec<ListenerConfig> {
    if raw.is_empty() && !has_postgres {
        r.error(
            0,
            Some("listener".into()),
            "no [[listener]] defined: add one, like\n\n[[listener]]\nbind = \"0.0.0.0:8080\"",
        );
    }
    let mut out: Vec<ListenerConfig> = Vec::new();
    for (i, l) in raw.iter().enumerate() {
        let at = l.span().start;
        let l = l.get_ref();
        let name = l
            .name
            .clone()
            .unwrap_or_else(|| format!("listener-{}", i + 1));
        if out.iter().any(|o| o.name == name) {
            r.error(
                at,
                Some("listener.name".into()),
                format!("listener name \"{name}\" is used twice"),
            );
        }
        let bind = match resolve_addr(l.bind.get_ref()) {
            Ok(a) => a,
            Err(e) => {
                r.error(l.bind.span().start, Some("bind".into()), e);
                continue;
            }
        };
        if bind.port() != 0 && out.iter().any(|o| o.bind == bind) {
            r.error(
                l.bind.span().start,
                Some("bind".into()),
                format!("{bind} is bound by two listeners"),
            );
        }
        for (k, d) in [
            ("header_timeout", &l.header_timeout),
            ("body_timeout", &l.body_timeout),
            ("send_timeout", &l.send_timeout),
        ] {
            if d.0.is_zero() {
                r.error(at, Some(k.into()), "must be more than 0s");
            }
        }
        if l.max_header_bytes.0 < 8192 {
            r.error(
                at,
                Some("max_header_bytes".into()),
                "must be at least 8KiB (8192)",
            );
        }
        let tls = l.tls.as_ref().map(|t| {
            let cert = base.join(t.cert.get_ref());
            let key = base.join(t.key.get_ref());
            for (path, spanned, k) in [(&cert, &t.cert, "tls.cert"), (&key, &t.key, "tls.key")] {
                if let Err(e) = std::fs::metadata(path) {
                    r.error(
                        spanned.span().start,
                        Some(k.into()),
                        format!("cannot read {}: {e}", path.display()),
                    );
                }
            }
            TlsFiles { cert, key }
        });
        let nets = |r: &mut Reporter,
                    list: &[Spanned<String>],
                    k: &str|
         -> Vec<crate::guard::IpNet> {
            list.iter()
                .filter_map(|p| {
                    let n = guard::parse_net(p.get_ref());
                    if n.is_none() {
                        r.error(
                            p.span().start,
                            Some(format!("listener \"{name}\": {k}")),
                            format!("expected an address or a CIDR block like \"10.0.0.0/8\", got \"{}\"", p.get_ref()),
                        );
                    }
                    n
                })
                .collect()
        };
        let (allow, deny) = (nets(r, &l.allow, "allow"), nets(r, &l.deny, "deny"));
        out.push(ListenerConfig {
            name,
            bind,
            tls,
            max_connections: l.max_connections.max(1),
            header_timeout: l.header_timeout.0,
            body_timeout: l.body_timeout.0,
            send_timeout: l.send_timeout.0,
            max_header_bytes: l.max_header_bytes.0 as usize,
            max_body_bytes: l.max_body_bytes.0,
            allow,
            deny,
        });
    }
    out
}

/// A Redis table's one target: `url` (a standalone server) or `cluster` (seed node URLs),
/// each a `redis://` or `rediss://` URL. `table`: its name in messages (`cache.redis`).
fn redis_target(
    r: &mut Reporter,
    at: usize,
    table: &str,
    url: &Option<Spanned<String>>,
    cluster: &[Spanned<String>],
) -> Option<crate::cache::RedisTarget> {
    let check_url = |r: &mut Reporter, u: &Spanned<String>, key: &str| {
        let v = u.get_ref();
        if !(v.starts_with("redis://") || v.starts_with("rediss://")) || v.len() <= 8 {
            r.error(
                u.span().start,
                Some(format!("{table}.{key}")),
                format!("expected a URL like \"redis://127.0.0.1:6379\", got \"{v}\""),
            );
        }
    };
    match (url, cluster.is_empty()) {
        (Some(url), true) => {
            check_url(r, url, "url");
            Some(crate::cache::RedisTarget::Standalone(url.get_ref().clone()))
        }
        (None, false) => {
            for u in cluster {
                check_url(r, u, "cluster");
            }
            Some(crate::cache::RedisTarget::Cluster(
                cluster.iter().map(|u| u.get_ref().clone()).collect(),
            ))
        }
        _ => {
            r.error(
                at,
                Some(table.into()),
                "set exactly one of `url` (a standalone server) or `cluster` (seed node URLs)",
            );
            None
        }
    }
}

fn unknown_name(kind: &str, name: &str, known: &[&str]) -> String {
    let mut msg = format!("unknown {kind} \"{name}\"");
    match did_you_mean(name, known.iter().copied()) {
        Some(best) => msg.push_str(&format!(" (did you mean \"{best}\"?)")),
        None if known.is_empty() => msg.push_str(&format!("; no {kind} is defined")),
        None => msg.push_str(&format!("; defined: {}", known.join(", "))),
    }
    msg
}

/// `[global] resolver`: an IP address, with an optional port (53 by default), like nginx's
/// `resolver`. A host name is refused: resolving the resolver would need a resolver.
fn validate_resolver(r: &mut Reporter, raw: Option<&Spanned<String>>) -> Option<SocketAddr> {
    let raw = raw?;
    let text = raw.get_ref().trim();
    let parsed = text.parse::<SocketAddr>().ok().or_else(|| {
        let ip = text.trim_start_matches('[').trim_end_matches(']');
        ip.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    });
    if parsed.is_none() {
        r.error(
            raw.span().start,
            Some("global.resolver".into()),
            format!("\"{text}\" is not a DNS server address: expected an IP address with an optional port, like \"127.0.0.1:53\" or \"[::1]:5353\""),
        );
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Config, ConfigErrors> {
        parse("t.toml", text, Path::new("."))
    }

    const GOOD: &str = r#"
[[listener]]
bind = "127.0.0.1:8080"

[[route]]
match = { host = "*.example.com", path_prefix = "/api" }
service = "catalog"

[[route]]
split = [ { service = "catalog", weight = 90 }, { service = "orders", weight = 10 } ]

[service.catalog]
replicas = ["127.0.0.1:9001", { addr = "127.0.0.1:9002", weight = 3 }]
health = { path = "/healthz", interval = "1s", expect_status = "2xx" }

[service.orders]
balance = "hash"
hash_on = "header:X-User"
replicas = ["127.0.0.1:9003"]
"#;

    #[test]
    fn access_log_path_resolves_against_the_config_directory() {
        assert_eq!(check(GOOD).unwrap().global.access_log_path, None);
        let text = format!("[global]\naccess_log_path = \"logs/access.log\"\n{GOOD}");
        let c = parse("t.toml", &text, Path::new("/etc/headroom")).unwrap();
        assert_eq!(
            c.global.access_log_path.as_deref(),
            Some(Path::new("/etc/headroom/logs/access.log"))
        );
        let text = format!("[global]\naccess_log_path = \"/var/log/a.log\"\n{GOOD}");
        let c = parse("t.toml", &text, Path::new("/etc/headroom")).unwrap();
        assert_eq!(
            c.global.access_log_path.as_deref(),
            Some(Path::new("/var/log/a.log"))
        );
        let text = format!("[global]\naccess_log_path = \"\"\n{GOOD}");
        let e = check(&text).unwrap_err();
        assert_eq!(e.0[0].line, 2, "{e}");
        assert!(
            e.to_string()
                .contains("access_log_path: must be a file path"),
            "{e}"
        );
    }

    #[test]
    fn a_good_config_becomes_typed_values() {
        let c = check(GOOD).unwrap();
        assert_eq!(c.routes.len(), 2);
        assert_eq!(
            c.routes[0].matcher.host,
            Some(HostMatch::Suffix(".example.com".into()))
        );
        assert_eq!(c.services["catalog"].replicas[1].weight, 3);
        assert_eq!(
            c.services["orders"].hash_on,
            Some(HashKey::Header("x-user".into()))
        );
        assert_eq!(
            c.services["catalog"].health.as_ref().unwrap().expect,
            (200, 299)
        );
        assert_eq!(c.services["catalog"].balance, Balance::P2cEwma);
    }

    #[test]
    fn misspelt_service_name_gets_line_and_suggestion() {
        let text = GOOD.replacen("service = \"catalog\"", "service = \"catalgo\"", 1);
        let e = check(&text).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].line, 7);
        assert!(e.0[0].message.contains("did you mean \"catalog\""), "{e}");
    }

    #[test]
    fn listener_timeouts_must_be_more_than_zero() {
        let text = GOOD.replace(
            "bind = \"127.0.0.1:8080\"",
            "bind = \"127.0.0.1:8080\"\nheader_timeout = \"0s\"\nbody_timeout = \"0s\"",
        );
        let e = check(&text).unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.0.len(), 2, "{msg}");
        assert!(
            msg.contains("header_timeout: must be more than 0s"),
            "{msg}"
        );
        assert!(msg.contains("body_timeout: must be more than 0s"), "{msg}");
        let c = check(GOOD).unwrap();
        assert_eq!(
            c.listeners[0].body_timeout,
            std::time::Duration::from_secs(60)
        );
    }

    #[test]
    fn send_and_read_timeouts_default_to_60s_and_must_be_more_than_zero() {
        let c = check(GOOD).unwrap();
        let minute = std::time::Duration::from_secs(60);
        assert_eq!(c.listeners[0].send_timeout, minute);
        assert_eq!(c.services["catalog"].read_timeout, minute);
        let text = GOOD
            .replace(
                "bind = \"127.0.0.1:8080\"",
                "bind = \"127.0.0.1:8080\"\nsend_timeout = \"0s\"",
            )
            .replace(
                "replicas = [\"127.0.0.1:9003\"]",
                "replicas = [\"127.0.0.1:9003\"]\nread_timeout = \"0ms\"",
            );
        let e = check(&text).unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.0.len(), 2, "{msg}");
        assert!(msg.contains("send_timeout: must be more than 0s"), "{msg}");
        assert!(
            msg.contains("service \"orders\": read_timeout: must be more than 0s"),
            "{msg}"
        );
        let text = GOOD.replace(
            "replicas = [\"127.0.0.1:9003\"]",
            "replicas = [\"127.0.0.1:9003\"]\nread_timeout = \"5m\"",
        );
        assert_eq!(
            check(&text).unwrap().services["orders"].read_timeout,
            minute * 5
        );
    }

    #[test]
    fn unknown_key_gets_a_suggestion_and_its_line() {
        let text = GOOD.replace("balance = \"hash\"", "balanse = \"hash\"");
        let e = check(&text).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("unknown key \"balanse\"; did you mean \"balance\"?"),
            "{msg}"
        );
        assert_eq!(e.0[0].line, 17, "{msg}");
    }

    #[test]
    fn wrong_value_type_names_key_and_expectation() {
        let text = GOOD.replace("interval = \"1s\"", "interval = \"soon\"");
        let e = check(&text).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("invalid duration \"soon\""), "{msg}");
        assert_eq!(e.0[0].line, 14);
    }

    #[test]
    fn every_semantic_error_is_reported_at_once() {
        let text = GOOD
            .replacen("service = \"catalog\"", "service = \"nope\"", 1)
            .replace("\"127.0.0.1:9003\"", "\"127.0.0.1\"");
        let e = check(&text).unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
    }

    #[test]
    fn admin_beyond_loopback_requires_a_token() {
        let text = format!("[admin]\nbind = \"0.0.0.0:9901\"\n{GOOD}");
        assert!(check(&text)
            .unwrap_err()
            .to_string()
            .contains("admin.token"));
        let text = format!("[admin]\nbind = \"0.0.0.0:9901\"\ntoken = \"s3cret\"\n{GOOD}");
        assert!(check(&text).is_ok());
    }

    #[test]
    fn a_route_needs_exactly_one_action() {
        let text = GOOD.replace(
            "service = \"catalog\"\n\n[[route]]",
            "service = \"catalog\"\nrespond = { status = 200 }\n\n[[route]]",
        );
        assert!(check(&text)
            .unwrap_err()
            .to_string()
            .contains("only one of"));
    }

    #[test]
    fn unknown_balance_algorithm_lists_choices() {
        let text = GOOD.replace("balance = \"hash\"", "balance = \"p2c\"");
        let msg = check(&text).unwrap_err().to_string();
        assert!(msg.contains("unknown value \"p2c\""), "{msg}");
    }

    #[test]
    fn route_limits_and_the_guard_read_as_typed_config() {
        let text = GOOD.replacen(
            "service = \"catalog\"\n",
            "service = \"catalog\"\n[[route.limit]]\nrate = \"10/s\"\n[[route.limit]]\nname = \"daily\"\nrate = \"1000/d\"\nburst = 50\nkey = \"header:X-User\"\ndry_run = true\n",
            1,
        ) + "\n[guard]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n[guard.redis]\nurl = \"redis://127.0.0.1:6379\"\nfallback = \"closed\"\ninstances = 3\n";
        let c = check(&text).unwrap();
        let l = &c.routes[0].limits;
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[0].name.as_str(), l[0].count, l[0].burst),
            ("limit-1", 10, 10)
        );
        assert_eq!(l[0].key, crate::guard::LimitKey::Ip);
        assert!(l[0].shared, "shared by default with [guard.redis]");
        assert_eq!(l[1].key, crate::guard::LimitKey::Header("x-user".into()));
        assert_eq!((l[1].burst, l[1].dry_run), (50, true));
        assert_eq!(c.guard.trusted_proxies.len(), 2);
        let r = c.guard.redis.unwrap();
        assert_eq!(
            (r.fallback, r.instances),
            (crate::guard::Fallback::Closed, 3)
        );
        assert!(c.routes[1].limits.is_empty());
    }

    #[test]
    fn bad_limits_and_guard_settings_are_each_reported_with_their_key() {
        let text = GOOD.replacen(
            "service = \"catalog\"\n",
            "service = \"catalog\"\n[[route.limit]]\nrate = \"ten per second\"\n[[route.limit]]\nrate = \"1/s\"\nkey = \"cookie\"\n[[route.limit]]\nrate = \"1/s\"\nburst = 0\nshared = true\n",
            1,
        ) + "\n[guard]\ntrusted_proxies = [\"10.0.0.0/33\"]\n";
        let msg = check(&text).unwrap_err().to_string();
        for want in [
            "limit.rate: expected COUNT/UNIT",
            "limit.key: expected \"ip\", \"route\", \"consumer\", \"header:NAME\" or \"claim:NAME\"",
            "limit.burst: must be at least 1",
            "limit.shared: a shared limit needs [guard.redis]",
            "guard.trusted_proxies: expected an address or a CIDR block",
        ] {
            assert!(msg.contains(want), "missing {want:?} in:\n{msg}");
        }
        let fallback = GOOD.to_string()
            + "\n[guard.redis]\nurl = \"redis://127.0.0.1:1\"\nfallback = \"open\"\n";
        let msg = check(&fallback).unwrap_err().to_string();
        assert!(
            msg.contains("guard.redis.fallback: expected \"local\" or \"closed\""),
            "{msg}"
        );
    }

    const WATCHED: &str = r#"
[[listener]]
bind = "127.0.0.1:8080"

[[route]]
name = "api"
service = "app"

[service.app]
replicas = ["127.0.0.1:9001"]

[watch]
history = "state/history.redb"

[[watch.slo]]
route = "api"
objective = "99.9%"

[[watch.slo]]
route = "api"
objective = 0.95
latency = "250ms"
period = "28d"

[[watch.rule]]
name = "api-errors"
route = "api"
error_rate = "1%"
for = "5m"

[[watch.rule]]
name = "api-slower"
route = "api"
latency = "p99"
above_baseline = "10%"
severity = "page"

[[watch.alert]]
alertmanager = "http://127.0.0.1:9093"

[[watch.alert]]
webhook = "http://127.0.0.1:9000/hook"
"#;

    #[test]
    fn slos_rules_and_receivers_read_as_typed_config() {
        let c = check(WATCHED).unwrap();
        let w = &c.watch;
        assert_eq!(w.history, Some(Path::new("./state/history.redb").into()));
        assert_eq!(w.slos.len(), 2);
        assert_eq!(w.slos[0].name, "api");
        assert!((w.slos[0].objective - 0.999).abs() < 1e-12);
        assert_eq!(w.slos[0].period, Duration::from_secs(30 * 86_400));
        assert_eq!(w.slos[1].name, "api-latency");
        assert_eq!(w.slos[1].latency, Some(Duration::from_millis(250)));
        assert_eq!(w.slos[1].period, Duration::from_secs(28 * 86_400));
        assert_eq!(
            w.rules[0].condition,
            crate::watch::RuleCondition::ErrorRate { above: 0.01 }
        );
        assert_eq!(
            w.rules[1].condition,
            crate::watch::RuleCondition::LatencyAboveBaseline {
                quantile: 0.99,
                ratio: 0.1,
                baseline: Duration::from_secs(3600)
            }
        );
        assert_eq!(w.rules[1].severity, crate::watch::Severity::Page);
        assert_eq!(
            w.receivers,
            [
                crate::watch::ReceiverConfig::Alertmanager("http://127.0.0.1:9093".into()),
                crate::watch::ReceiverConfig::Webhook("http://127.0.0.1:9000/hook".into())
            ]
        );
        assert!(check(GOOD).unwrap().watch.slos.is_empty(), "off by default");
    }

    #[test]
    fn impossible_objectives_unknown_routes_and_odd_thresholds_are_each_reported_at_their_line() {
        let text = WATCHED
            .replacen("objective = \"99.9%\"", "objective = \"100%\"", 1)
            .replacen("objective = 0.95", "objective = 0", 1)
            .replacen("latency = \"250ms\"", "latency = \"300ms\"", 1)
            .replacen(
                "name = \"api-errors\"\nroute = \"api\"",
                "name = \"api-errors\"\nroute = \"apj\"",
                1,
            )
            .replacen(
                "alertmanager = \"http://127.0.0.1:9093\"",
                "alertmanager = \"127.0.0.1:9093\"",
                1,
            );
        let e = check(&text).unwrap_err();
        let text_of = |key: &str| -> Vec<String> {
            e.0.iter()
                .filter(|x| x.key.as_deref() == Some(key))
                .map(|x| format!("{}: {}", x.line, x.message))
                .collect()
        };
        assert_eq!(e.0.len(), 5, "{e}");
        let objectives = text_of("watch.slo.objective");
        assert!(
            objectives[0].starts_with("17: 100% cannot be an objective"),
            "{objectives:?}"
        );
        assert!(
            objectives[1].starts_with("21: 0% cannot be an objective"),
            "{objectives:?}"
        );
        let latency = text_of("watch.slo.latency");
        assert!(
            latency[0].starts_with("22: 300ms is not a latency bucket bound"),
            "{latency:?}"
        );
        assert!(latency[0].contains("250ms, 500ms"), "{latency:?}");
        let route = text_of("watch.rule.route");
        assert!(
            route[0].starts_with("27: unknown route \"apj\" (did you mean \"api\"?)"),
            "{route:?}"
        );
        let alert = text_of("watch.alert");
        assert!(
            alert[0].contains("expected an http:// or https:// URL"),
            "{alert:?}"
        );
    }

    /// An objective or a rule judges a route or a service: exactly one of the two, naming
    /// one that exists; a service's is typed as such.
    #[test]
    fn objectives_and_rules_name_a_route_or_a_service() {
        let service = WATCHED.replacen(
            "[[watch.slo]]\nroute = \"api\"\nobjective = \"99.9%\"",
            "[[watch.slo]]\nservice = \"app\"\nobjective = \"99.9%\"",
            1,
        );
        let c = check(&service).unwrap();
        assert_eq!(
            c.watch.slos[0].subject,
            crate::watch::Subject::Service("app".into())
        );
        assert_eq!(c.watch.slos[0].name, "app");
        assert_eq!(
            c.watch.slos[1].subject,
            crate::watch::Subject::Route("api".into())
        );
        let bad = service
            .replacen(
                "service = \"app\"\nobjective",
                "service = \"apq\"\nobjective",
                1,
            )
            .replacen(
                "name = \"api-errors\"\nroute = \"api\"",
                "name = \"api-errors\"\nroute = \"api\"\nservice = \"app\"",
                1,
            );
        let e = check(&bad).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("watch.slo.service: unknown service \"apq\" (did you mean \"app\"?)"),
            "{text}"
        );
        assert!(
            text.contains("watch.rule: expected one of `route = \"NAME\"`"),
            "{text}"
        );
        assert_eq!(e.0.len(), 2, "{e}");
    }

    /// `latency_buckets` replaces the default bounds, and a latency objective may then use
    /// one of its own; bounds out of order are refused at their line.
    #[test]
    fn latency_buckets_set_the_bounds_latency_objectives_use() {
        let custom = WATCHED.replacen(
            "[watch]\n",
            "[watch]\nlatency_buckets = [\"50ms\", \"300ms\", \"1s\"]\n",
            1,
        );
        let refused = check(&custom).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("250ms is not a latency bucket bound")
                && refused.to_string().contains("one of 50ms, 300ms, 1s"),
            "{refused}"
        );
        let c = check(&custom.replacen("latency = \"250ms\"", "latency = \"300ms\"", 1)).unwrap();
        assert_eq!(c.watch.latency_buckets.seconds(), [0.05, 0.3, 1.0]);
        assert_eq!(c.watch.slos[1].latency, Some(Duration::from_millis(300)));
        assert_eq!(
            check(WATCHED)
                .unwrap()
                .watch
                .latency_buckets
                .seconds()
                .len(),
            16,
            "the default"
        );
        let e = check(&custom.replacen("\"300ms\", \"1s\"", "\"1s\", \"300ms\"", 1)).unwrap_err();
        let bad: Vec<_> =
            e.0.iter()
                .filter(|x| x.key.as_deref() == Some("watch.latency_buckets"))
                .collect();
        assert_eq!(bad.len(), 1, "{e}");
        assert_eq!(bad[0].line, 13, "{e}");
        assert!(
            bad[0]
                .message
                .starts_with("bounds must increase: 1 s then 0.3 s"),
            "{e}"
        );
    }
}
