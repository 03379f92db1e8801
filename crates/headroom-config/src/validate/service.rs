//! `[service.NAME]`: its replicas (a list, or DNS discovery), its hash key, its health
//! checks and the rest, each checked by a function of its own.

use super::resolve_addr;
use crate::error::Reporter;
use crate::model::{self, ReplicaSpec, Replicas};
use crate::*;
use toml::Spanned;

pub(super) fn validate_service(
    r: &mut Reporter,
    name: &Spanned<String>,
    spanned: &Spanned<model::Service>,
    base_dir: &std::path::Path,
) -> Option<ServiceConfig> {
    let at = name.span().start;
    let s = spanned.get_ref();
    let errors_before = r.errors.len();
    let key = |k: &str| Some(format!("service \"{}\": {k}", name.get_ref()));

    let (replicas, discovery) = replicas(r, s, at, &key);
    let hash_on = hash_on(r, s, &key);
    let health = s.health.as_ref().map(|h| health(r, h, at, &key));
    if s.retry.attempts == 0 {
        r.error(
            at,
            key("retry.attempts"),
            "must be at least 1 (1 means no retries)",
        );
    }
    if s.read_timeout.0.is_zero() {
        r.error(at, key("read_timeout"), "must be more than 0s");
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
        discovery,
        protocol: s.protocol,
        connect_timeout: s.connect_timeout.0,
        request_timeout: s.request_timeout.0,
        read_timeout: s.read_timeout.0,
        idle_timeout: s.idle_timeout.0,
        max_idle: s.max_idle,
        max_conns: s.max_conns,
        health,
        outlier: OutlierConfig {
            consecutive_failures: s.outlier.consecutive_failures,
            base_ejection: s.outlier.base_ejection.0,
            max_ejection: s.outlier.max_ejection.0,
            max_ejected: s.outlier.max_ejected.0,
        },
        slow_start: s
            .slow_start
            .unwrap_or_else(|| crate::model::defaults::slow_start(s.autoscale.is_some()))
            .0,
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
        shed: super::guard::validate_shed(r, s.shed.as_ref(), &key),
        circuit: super::guard::validate_circuit(r, s.circuit.as_ref(), &key),
        autoscale: s
            .autoscale
            .as_ref()
            .and_then(|a| super::scale::validate_autoscale(r, a, base_dir, &key)),
    };
    (r.errors.len() == errors_before).then_some(cfg)
}

/// `replicas`: the list (addresses resolved, weights bounded, no duplicates) or DNS
/// discovery.
fn replicas(
    r: &mut Reporter,
    s: &model::Service,
    at: usize,
    key: &impl Fn(&str) -> Option<String>,
) -> (Vec<ReplicaConfig>, Option<DnsDiscovery>) {
    let Some(given) = &s.replicas else {
        if s.autoscale.is_none() {
            r.error(
                at,
                key("replicas"),
                "a service needs replicas, like replicas = [\"127.0.0.1:9001\"], or an [service.NAME.autoscale] that runs them",
            );
        }
        return (Vec::new(), None);
    };
    if s.autoscale.is_some() {
        r.error(
            given.span().start,
            key("replicas"),
            "the autoscaler runs this service's replicas: leave out `replicas`",
        );
    }
    let (list, discovery) = match given.get_ref() {
        Replicas::List(list) => {
            if list.is_empty() {
                r.error(
                    at,
                    key("replicas"),
                    "a service needs at least one replica, like replicas = [\"127.0.0.1:9001\"]",
                );
            }
            (list.as_slice(), None)
        }
        Replicas::Dns(d) => {
            let at = given.span().start;
            (&[][..], validate_dns_replicas(r, at, &key, d))
        }
    };
    let mut replicas: Vec<ReplicaConfig> = Vec::new();
    for rep in list {
        let (label, weight) = match rep.get_ref() {
            ReplicaSpec::Addr(a) => (a.clone(), 1),
            ReplicaSpec::Weighted { addr, weight } => (addr.clone(), *weight),
        };
        if !(1..=crate::MAX_WEIGHT).contains(&weight) {
            r.error(
                rep.span().start,
                key("replicas.weight"),
                format!(
                    "{weight}: a replica weight must be from 1 to {}",
                    crate::MAX_WEIGHT
                ),
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
    (replicas, discovery)
}

/// `hash_on`, which only `balance = "hash"` reads (default: the client's IP).
fn hash_on(
    r: &mut Reporter,
    s: &model::Service,
    key: &impl Fn(&str) -> Option<String>,
) -> Option<HashKey> {
    match (&s.hash_on, s.balance) {
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
    }
}

/// `health`: the expected status, thresholds, path and interval.
fn health(
    r: &mut Reporter,
    h: &model::Health,
    at: usize,
    key: &impl Fn(&str) -> Option<String>,
) -> HealthConfig {
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
}

/// `replicas = { dns = "host:port", interval, weight }`.
fn validate_dns_replicas(
    r: &mut Reporter,
    at: usize,
    key: &dyn Fn(&str) -> Option<String>,
    d: &model::DnsReplicas,
) -> Option<DnsDiscovery> {
    let errors_before = r.errors.len();
    let target = parse_dns_target(d.dns.get_ref());
    if let Err(e) = &target {
        r.error(d.dns.span().start, key("replicas.dns"), e.clone());
    }
    if d.interval.get_ref().0.is_zero() {
        let at = if d.interval.span().start > 0 {
            d.interval.span().start
        } else {
            at
        };
        r.error(at, key("replicas.interval"), "must be more than 0s");
    }
    if d.weight == 0 {
        r.error(
            at,
            key("replicas.weight"),
            "a replica weight must be at least 1",
        );
    }
    let (name, port) = target.ok()?;
    (r.errors.len() == errors_before).then(|| DnsDiscovery {
        name,
        port,
        interval: d.interval.get_ref().0,
        weight: d.weight,
    })
}

/// Splits `"app.internal:8080"` into a lower-case host name and a port.
fn parse_dns_target(s: &str) -> Result<(String, u16), String> {
    let example = "expected \"host:port\", like \"app.internal:8080\"";
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("\"{s}\" has no port: {example}"));
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => {
            return Err(format!(
                "\"{port}\" in \"{s}\" is not a port (1 to 65535): {example}"
            ))
        }
    };
    // The trailing dot is kept: it tells the system resolver the name is absolute, so the
    // resolv.conf search list (Kubernetes' ndots:5) is skipped.
    let host = host.to_ascii_lowercase();
    let bare = host.strip_suffix('.').unwrap_or(&host);
    if bare.parse::<std::net::IpAddr>().is_ok() || bare.starts_with('[') {
        return Err(format!(
            "\"{s}\" is an IP address, not a name to resolve: list it as replicas = [\"{s}\"]"
        ));
    }
    // RFC 1035 limits: labels of 1 to 63 bytes, 253 characters in all. `_` is allowed
    // because service names use it (`_http._tcp`); anything else would never resolve.
    let labels_ok = bare.split('.').all(|l| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if bare.is_empty() || bare.len() > 253 || !labels_ok {
        return Err(format!("\"{host}\" is not a DNS name: labels of letters, digits, '-' and '_', 1 to 63 characters each, separated by dots; {example}"));
    }
    Ok((host, port))
}
