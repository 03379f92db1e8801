//! A route's cache: one that rarely hits, one that stores answers that set a cookie (or cannot
//! store them for their cookie), and a route without one whose answers a shared cache could keep.

use super::{label, Finding};
use std::collections::BTreeMap;

pub(super) fn cache_low_hit_ratio(
    status: &serde_json::Value,
    metrics: &BTreeMap<String, f64>,
    out: &mut Vec<Finding>,
) {
    let Some(routes) = status["cache"]["routes"].as_object() else {
        return;
    };
    for (route, c) in routes {
        let lookups = c["lookups"].as_u64().unwrap_or(0);
        let hits = c["hits"].as_u64().unwrap_or(0);
        // 50 lookups: under that a cold cache still reads as a bad one.
        if lookups < 50 || hits as f64 >= 0.2 * lookups as f64 {
            continue;
        }
        let count = |result: &str| {
            metrics
                .get(&format!(
                    "headroom_cache_requests_total{{route=\"{route}\",result=\"{result}\"}}"
                ))
                .copied()
                .unwrap_or(0.0)
        };
        let filled = count("miss") + count("expired");
        let bypassed = count("bypass");
        let stored = metrics
            .get(&format!("headroom_cache_stored_total{{route=\"{route}\"}}"))
            .copied()
            .unwrap_or(0.0);
        let change = if bypassed > filled {
            format!(
                "# most requests bypass the cache (a rule, a bypass cookie or header): if they need not,\n# narrow the bypass in route \"{route}\"'s [route.cache] (bypass_cookies, bypass_headers, a rule's bypass)"
            )
        } else if stored < 0.1 * filled {
            format!(
                "# almost nothing the origin answered could be stored: no freshness (Cache-Control max-age,\n# Expires), or Set-Cookie, no-store, private; a response's Cache-Status header says which (detail=).\n# if these answers are the same for everyone, give them a lifetime in route \"{route}\":\n[route.cache]\nttl = \"60s\"\n# and if it is Set-Cookie, only the client whose request filled the cache gets the cookie:\n# allow_set_cookie = true"
            )
        } else {
            format!(
                "# answers are stored but rarely asked for again: each URL comes once (a long tail), or the key\n# is finer than the answers (every query string, a header); if a query parameter or header does not\n# change the answer, leave it out of route \"{route}\"'s key:\n[route.cache]\nkey = {{ query = \"none\" }}   # or query_allow = [\"page\"]"
            )
        };
        out.push(Finding {
            kind: "cache_low_hit_ratio",
            impact: 40,
            title: format!("the cache of route {route} rarely hits"),
            evidence: format!(
                "{hits} hits in {lookups} lookups ({:.0}%) since start; {stored:.0} answers stored from {filled:.0} misses, {bypassed:.0} bypassed",
                100.0 * hits as f64 / lookups as f64
            ),
            change,
        });
    }
}

/// 2xx answers of `route` since start, over all its services.
fn ok_answers(metrics: &BTreeMap<String, f64>, route: &str) -> f64 {
    metrics
        .iter()
        .filter(|(series, _)| {
            series.starts_with("headroom_requests_total{")
                && label(series, "route") == Some(route)
                && label(series, "class") == Some("2xx")
        })
        .map(|(_, v)| v)
        .sum()
}

pub(super) fn cacheable_without_cache(
    status: &serde_json::Value,
    metrics: &BTreeMap<String, f64>,
    out: &mut Vec<Finding>,
) {
    let cached = &status["cache"]["routes"];
    for (series, cacheable) in metrics {
        if !series.starts_with("headroom_route_cacheable_responses_total{") {
            continue;
        }
        let Some(route) = label(series, "route") else {
            continue;
        };
        // The series outlives a reload that gave the route a cache.
        if !cached[route].is_null() {
            continue;
        }
        // Every 2xx, not only GET 200s: the share is at least this.
        let ok = ok_answers(metrics, route);
        // 50: under that it is a few answers, not a pattern.
        if *cacheable < 50.0 || *cacheable < 0.5 * ok {
            continue;
        }
        out.push(Finding {
            kind: "cacheable_without_cache",
            impact: 45,
            title: format!("route {route} has no cache, though its origin lets shared caches keep most of its answers"),
            evidence: format!(
                "{cacheable:.0} of its {ok:.0} 2xx answers ({:.0}%) since start were GET 200s with a lifetime for shared caches (Cache-Control public, max-age or s-maxage, or Expires; not private, not no-store): each went upstream again",
                100.0 * cacheable / ok.max(1.0)
            ),
            change: format!(
                "# cache them: the origin's Cache-Control sets each answer's lifetime, and what it marks\n# private or no-store is still not stored. In route \"{route}\"'s [[route]] table:\n[route.cache]\n# ttl = \"60s\"   # only to override the origin's lifetimes"
            ),
        });
    }
}

pub(super) fn cache_stores_set_cookie(
    status: &serde_json::Value,
    metrics: &BTreeMap<String, f64>,
    out: &mut Vec<Finding>,
) {
    let Some(routes) = status["cache"]["routes"].as_object() else {
        return;
    };
    let get = |series: String| metrics.get(&series).copied().unwrap_or(0.0);
    for route in routes.keys() {
        let stored = get(format!("headroom_cache_stored_total{{route=\"{route}\"}}"));
        let with_cookie = get(format!(
            "headroom_cache_stored_set_cookie_total{{route=\"{route}\"}}"
        ));
        if with_cookie >= 1.0 {
            out.push(Finding {
                kind: "cache_stores_set_cookie",
                impact: 60,
                title: format!("the cache of route {route} stores answers that set a cookie"),
                evidence: format!(
                    "{with_cookie:.0} of the {stored:.0} answers stored since start came with Set-Cookie (allow_set_cookie = true): the cookie went only to the client whose request filled the cache, but the body is answered to every later client"
                ),
                change: format!(
                    "# if the body depends on who asked (a session, a cart, a name), it must not be shared. In route \"{route}\"'s [[route]] table:\n[route.cache]\nallow_set_cookie = false\n# or keep storing, but let requests that carry the session cookie skip the cache (they get their own answer):\n# bypass_cookies = [\"SESSION_COOKIE_NAME\"]\n# if the body is the same for everyone (a tracking or consent cookie), it is safe as it is;\n# better still, have the origin set no cookie on cacheable answers"
                ),
            });
        }
        let count = |result: &str| {
            get(format!(
                "headroom_cache_requests_total{{route=\"{route}\",result=\"{result}\"}}"
            ))
        };
        let misses = count("miss") + count("expired");
        let refused = get(format!(
            "headroom_cache_not_stored_total{{route=\"{route}\",reason=\"set-cookie\"}}"
        ));
        // 50 misses: under that a cold cache; half of them: what the cache mostly sees.
        if misses < 50.0 || refused < 0.5 * misses {
            continue;
        }
        out.push(Finding {
            kind: "cache_stores_set_cookie",
            impact: 45,
            title: format!("the origin of route {route} sets cookies on answers its cache could store"),
            evidence: format!(
                "{refused:.0} of {misses:.0} misses ({:.0}%) since start were not stored because the answer carried Set-Cookie (a shared cache does not store one by default)",
                100.0 * refused / misses
            ),
            change: format!(
                "# best: have the origin set cookies only where a session starts (login), not on every page.\n# if the cookie is incidental (tracking, consent) and the body the same for everyone, store the body;\n# the cookie then goes only to the client whose request filled the cache. In route \"{route}\"'s [[route]] table:\n[route.cache]\nallow_set_cookie = true\n# if the body depends on the cookie, leave it: these answers must not be shared"
            ),
        });
    }
}
