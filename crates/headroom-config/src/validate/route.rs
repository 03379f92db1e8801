//! `[[route]]`: its listeners, its action, its matcher and its header edits, each checked
//! by a function of its own.

use super::unknown_name;
use crate::error::Reporter;
use crate::model;
use crate::*;
use toml::Spanned;

/// What a route may refer to, by name.
pub(super) struct Known<'a> {
    pub services: &'a [&'a str],
    pub listeners: &'a [&'a str],
    pub guard: &'a crate::guard::GuardConfig,
    pub consumers: &'a [crate::guard::ConsumerConfig],
    pub jwts: &'a [&'a str],
}

pub(super) fn validate_route(
    r: &mut Reporter,
    index: usize,
    spanned: &Spanned<model::Route>,
    known: &Known<'_>,
) -> Option<RouteConfig> {
    let (services, listeners, guard) = (known.services, known.listeners, known.guard);
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
    let action = action(r, route, at, &key, services);
    let matcher = matcher(r, route, at, &key);
    let (request_headers, response_headers) = header_edits(r, route, at, &key);
    let cache = super::cache::validate_route_cache(r, route.cache.as_ref(), &key);
    let compress = super::cache::validate_compress(r, route.compress.as_ref(), &key);
    let auth =
        super::guard::validate_auth(r, route.auth.as_ref(), &key, known.consumers, known.jwts);
    let access = super::guard::validate_access(r, route.access.as_ref(), &key);
    let cors = super::guard::validate_cors(r, route.cors.as_ref(), &key);
    let priority = super::guard::validate_priority(r, route.priority.as_ref(), &key);
    let limits = super::guard::validate_limits(
        r,
        &route.limit,
        &key,
        guard.redis.is_some(),
        auth.is_some(),
        auth.as_ref().is_some_and(|a| a.jwt.is_some()),
    );
    let cfg = RouteConfig {
        name: name.clone(),
        listeners: route
            .listeners
            .iter()
            .map(|l| l.get_ref().clone())
            .collect(),
        matcher,
        action: action?,
        strip_prefix: route.strip_prefix.clone(),
        rewrite_prefix: route.rewrite_prefix.clone(),
        request_headers,
        response_headers,
        cache,
        compress,
        limits,
        auth,
        access,
        priority,
        cors,
    };
    (r.errors.len() == errors_before).then_some(cfg)
}

/// The route's one action: `service`, `split`, `redirect` or `respond`.
fn action(
    r: &mut Reporter,
    route: &model::Route,
    at: usize,
    key: &impl Fn(&str) -> Option<String>,
    services: &[&str],
) -> Option<Action> {
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
    match actions.iter().filter(|a| **a).count() {
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
    }
}

/// `match`: host, one of path / path_prefix / path_regex, methods and headers; and the
/// path rewrites that depend on it.
fn matcher(
    r: &mut Reporter,
    route: &model::Route,
    at: usize,
    key: &impl Fn(&str) -> Option<String>,
) -> MatchConfig {
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
    MatchConfig {
        host,
        path,
        methods,
        headers,
    }
}

/// `request_headers` and `response_headers`: names checked, lower-cased.
fn header_edits(
    r: &mut Reporter,
    route: &model::Route,
    at: usize,
    key: &impl Fn(&str) -> Option<String>,
) -> (HeaderEdits, HeaderEdits) {
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
    (
        edits(&route.request_headers),
        edits(&route.response_headers),
    )
}
