//! From the file's shape ([`crate::model`]) to a typed [`Config`], collecting every error.

use crate::error::{did_you_mean, Reporter};
use crate::model::{self, ReplicaSpec};
use crate::*;
use std::net::ToSocketAddrs;
use toml::Spanned;

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
    };
    let admin = validate_admin(&mut r, &raw.admin);
    let listeners = validate_listeners(&mut r, &raw.listener, base_dir);
    let services: BTreeMap<String, ServiceConfig> = raw
        .service
        .iter()
        .filter_map(|(name, svc)| {
            validate_service(&mut r, name, svc).map(|s| (name.get_ref().clone(), s))
        })
        .collect();
    let service_names: Vec<&str> = raw.service.keys().map(|k| k.get_ref().as_str()).collect();
    let listener_names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    let routes = raw
        .route
        .iter()
        .enumerate()
        .filter_map(|(i, route)| validate_route(&mut r, i, route, &service_names, &listener_names))
        .collect();

    if r.errors.is_empty() {
        Ok(Config {
            source: PathBuf::from(file),
            global,
            admin,
            listeners,
            routes,
            services,
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
            "a replica is \"host:port\" or { addr = \"host:port\", weight = N }".into(),
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
    base: &Path,
) -> Vec<ListenerConfig> {
    if raw.is_empty() {
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
        out.push(ListenerConfig {
            name,
            bind,
            tls,
            max_connections: l.max_connections.max(1),
            header_timeout: l.header_timeout.0,
            body_timeout: l.body_timeout.0,
            max_header_bytes: l.max_header_bytes.0 as usize,
            max_body_bytes: l.max_body_bytes.0,
        });
    }
    out
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

fn validate_route(
    r: &mut Reporter,
    index: usize,
    spanned: &Spanned<model::Route>,
    services: &[&str],
    listeners: &[&str],
) -> Option<RouteConfig> {
    let at = spanned.span().start;
    let route = spanned.get_ref();
    let name = route
        .name
        .clone()
        .unwrap_or_else(|| format!("route-{}", index + 1));
    let errors_before = r.errors.len();
    let key = |k: &str| Some(format!("route \"{name}\": {k}"));

    for l in &route.listeners {
        if !listeners.contains(&l.get_ref().as_str()) {
            r.error(
                l.span().start,
                key("listeners"),
                unknown_name("listener", l.get_ref(), listeners),
            );
        }
    }
    let check_service = |r: &mut Reporter, s: &Spanned<String>| {
        if !services.contains(&s.get_ref().as_str()) {
            r.error(
                s.span().start,
                key("service"),
                unknown_name("service", s.get_ref(), services),
            );
        }
    };
    let actions = [
        route.service.is_some(),
        route.split.is_some(),
        route.redirect.is_some(),
        route.respond.is_some(),
    ];
    let action = match actions.iter().filter(|a| **a).count() {
        1 => {
            if let Some(s) = &route.service {
                check_service(r, s);
                Some(Action::Forward(s.get_ref().clone()))
            } else if let Some(split) = &route.split {
                for t in split {
                    check_service(r, &t.get_ref().service);
                    if t.get_ref().weight == 0 {
                        r.error(
                            t.span().start,
                            key("split.weight"),
                            "a split weight must be at least 1",
                        );
                    }
                }
                if split.is_empty() {
                    r.error(
                        at,
                        key("split"),
                        "a split needs at least one { service, weight }",
                    );
                }
                Some(Action::Split(
                    split
                        .iter()
                        .map(|t| (t.get_ref().service.get_ref().clone(), t.get_ref().weight))
                        .collect(),
                ))
            } else if let Some(rd) = &route.redirect {
                if !(300..400).contains(&rd.status) {
                    r.error(
                        at,
                        key("redirect.status"),
                        format!(
                            "{} is not a redirect status: expected 301, 302, 303, 307 or 308",
                            rd.status
                        ),
                    );
                }
                Some(Action::Redirect {
                    to: rd.to.clone(),
                    status: rd.status,
                })
            } else {
                let rs = route.respond.as_ref()?;
                if !(100..600).contains(&rs.status) {
                    r.error(
                        at,
                        key("respond.status"),
                        format!("{} is not an HTTP status: expected 100 to 599", rs.status),
                    );
                }
                Some(Action::Respond {
                    status: rs.status,
                    body: rs.body.clone(),
                    content_type: rs.content_type.clone(),
                })
            }
        }
        0 => {
            r.error(
                at,
                key("action"),
                "a route needs one action: service, split, redirect or respond",
            );
            None
        }
        _ => {
            r.error(
                at,
                key("action"),
                "a route takes only one of service, split, redirect, respond",
            );
            None
        }
    };

    let m = &route.matcher;
    let host = m.host.as_ref().map(|h| {
        let h = h.to_ascii_lowercase();
        match h.strip_prefix("*.") {
            Some(rest) => HostMatch::Suffix(format!(".{rest}")),
            None => HostMatch::Exact(h),
        }
    });
    let paths = [
        m.path.is_some(),
        m.path_prefix.is_some(),
        m.path_regex.is_some(),
    ];
    if paths.iter().filter(|p| **p).count() > 1 {
        r.error(
            at,
            key("match"),
            "use only one of path, path_prefix, path_regex",
        );
    }
    let path = if let Some(p) = &m.path {
        PathMatch::Exact(p.clone())
    } else if let Some(p) = &m.path_prefix {
        PathMatch::Prefix(p.clone())
    } else if let Some(p) = &m.path_regex {
        match regex::Regex::new(p.get_ref()) {
            Ok(re) => PathMatch::Regex(re),
            Err(e) => {
                r.error(
                    p.span().start,
                    key("match.path_regex"),
                    format!("invalid regex: {e}"),
                );
                PathMatch::Any
            }
        }
    } else {
        PathMatch::Any
    };
    for p in [
        &m.path,
        &m.path_prefix,
        &route.strip_prefix,
        &route.rewrite_prefix,
    ]
    .into_iter()
    .flatten()
    {
        if !p.starts_with('/') {
            r.error(at, key("path"), format!("\"{p}\" must start with '/'"));
        }
    }
    if route.rewrite_prefix.is_some() && route.strip_prefix.is_none() && m.path_prefix.is_none() {
        r.error(
            at,
            key("rewrite_prefix"),
            "rewrite_prefix replaces strip_prefix or match.path_prefix: set one of them",
        );
    }
    let methods: Vec<String> = m.methods.iter().map(|s| s.to_ascii_uppercase()).collect();
    for meth in &methods {
        if meth.is_empty() || !meth.bytes().all(|b| b.is_ascii_alphabetic()) {
            r.error(
                at,
                key("match.methods"),
                format!("\"{meth}\" is not an HTTP method"),
            );
        }
    }
    let headers = m
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    for (k, _) in route
        .request_headers
        .add
        .iter()
        .chain(&route.response_headers.add)
    {
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            r.error(
                at,
                key("headers.add"),
                format!("\"{k}\" is not a valid header name"),
            );
        }
    }
    let edits = |e: &model::HeaderEdits| HeaderEdits {
        add: e
            .add
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        remove: e.remove.iter().map(|k| k.to_ascii_lowercase()).collect(),
    };
    let cfg = RouteConfig {
        name: name.clone(),
        listeners: route
            .listeners
            .iter()
            .map(|l| l.get_ref().clone())
            .collect(),
        matcher: MatchConfig {
            host,
            path,
            methods,
            headers,
        },
        action: action?,
        strip_prefix: route.strip_prefix.clone(),
        rewrite_prefix: route.rewrite_prefix.clone(),
        request_headers: edits(&route.request_headers),
        response_headers: edits(&route.response_headers),
    };
    (r.errors.len() == errors_before).then_some(cfg)
}

fn validate_service(
    r: &mut Reporter,
    name: &Spanned<String>,
    spanned: &Spanned<model::Service>,
) -> Option<ServiceConfig> {
    let at = name.span().start;
    let s = spanned.get_ref();
    let errors_before = r.errors.len();
    let key = |k: &str| Some(format!("service \"{}\": {k}", name.get_ref()));

    if s.replicas.is_empty() {
        r.error(
            at,
            key("replicas"),
            "a service needs at least one replica, like replicas = [\"127.0.0.1:9001\"]",
        );
    }
    let mut replicas: Vec<ReplicaConfig> = Vec::new();
    for rep in &s.replicas {
        let (label, weight) = match rep.get_ref() {
            ReplicaSpec::Addr(a) => (a.clone(), 1),
            ReplicaSpec::Weighted { addr, weight } => (addr.clone(), *weight),
        };
        if weight == 0 {
            r.error(
                rep.span().start,
                key("replicas.weight"),
                "a replica weight must be at least 1",
            );
        }
        match resolve_addr(&label) {
            Ok(addr) => {
                if replicas.iter().any(|x| x.label == label) {
                    r.error(
                        rep.span().start,
                        key("replicas"),
                        format!("replica \"{label}\" is listed twice"),
                    );
                }
                replicas.push(ReplicaConfig {
                    label,
                    addr,
                    weight,
                });
            }
            Err(e) => r.error(rep.span().start, key("replicas"), e),
        }
    }
    let hash_on = match (&s.hash_on, s.balance) {
        (Some(h), Balance::Hash) => {
            let v = h.get_ref();
            let parsed = if v == "client-ip" {
                Some(HashKey::ClientIp)
            } else if let Some(n) = v.strip_prefix("header:") {
                Some(HashKey::Header(n.to_ascii_lowercase()))
            } else {
                v.strip_prefix("cookie:")
                    .map(|n| HashKey::Cookie(n.to_string()))
            };
            if parsed.is_none() {
                r.error(
                    h.span().start,
                    key("hash_on"),
                    format!("\"{v}\": expected \"header:NAME\", \"cookie:NAME\" or \"client-ip\""),
                );
            }
            parsed
        }
        (None, Balance::Hash) => Some(HashKey::ClientIp),
        (Some(h), _) => {
            r.error(
                h.span().start,
                key("hash_on"),
                "hash_on only applies with balance = \"hash\"",
            );
            None
        }
        (None, _) => None,
    };
    let health = s.health.as_ref().map(|h| {
        let expect = match &h.expect_status {
            None => (200, 299),
            Some(toml::Value::Integer(code)) if (100..600).contains(code) => {
                (*code as u16, *code as u16)
            }
            Some(toml::Value::String(class))
                if class.len() == 3
                    && class.ends_with("xx")
                    && (b'1'..=b'5').contains(&class.as_bytes()[0]) =>
            {
                let c = (class.as_bytes()[0] - b'0') as u16 * 100;
                (c, c + 99)
            }
            Some(other) => {
                r.error(
                    at,
                    key("health.expect_status"),
                    format!("{other:?}: expected a status like 200 or a class like \"2xx\""),
                );
                (200, 299)
            }
        };
        if h.rise == 0 || h.fall == 0 {
            r.error(at, key("health"), "rise and fall must be at least 1");
        }
        if !h.path.starts_with('/') {
            r.error(
                at,
                key("health.path"),
                format!("\"{}\" must start with '/'", h.path),
            );
        }
        if h.interval.0.is_zero() {
            r.error(at, key("health.interval"), "must be more than 0s");
        }
        HealthConfig {
            path: h.path.clone(),
            interval: h.interval.0,
            timeout: h.timeout.0,
            expect,
            rise: h.rise.max(1),
            fall: h.fall.max(1),
        }
    });
    if s.retry.attempts == 0 {
        r.error(
            at,
            key("retry.attempts"),
            "must be at least 1 (1 means no retries)",
        );
    }
    if s.outlier.base_ejection.0 > s.outlier.max_ejection.0 {
        r.error(
            at,
            key("outlier.base_ejection"),
            "must not exceed outlier.max_ejection",
        );
    }
    let cfg = ServiceConfig {
        name: name.get_ref().clone(),
        balance: s.balance,
        hash_on,
        replicas,
        protocol: s.protocol,
        connect_timeout: s.connect_timeout.0,
        request_timeout: s.request_timeout.0,
        idle_timeout: s.idle_timeout.0,
        max_idle: s.max_idle,
        health,
        outlier: OutlierConfig {
            consecutive_failures: s.outlier.consecutive_failures,
            base_ejection: s.outlier.base_ejection.0,
            max_ejection: s.outlier.max_ejection.0,
            max_ejected: s.outlier.max_ejected.0,
        },
        slow_start: s.slow_start.0,
        retry: RetryConfig {
            attempts: s.retry.attempts.max(1),
            budget: s.retry.budget.0,
            min_per_second: s.retry.min_per_second,
            methods: s
                .retry
                .methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            on_status: s.retry.on_status.clone(),
            replay_body_bytes: s.retry.replay_body_bytes.0,
        },
    };
    (r.errors.len() == errors_before).then_some(cfg)
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
}
