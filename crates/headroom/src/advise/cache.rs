//! A route's cache: one that rarely hits.

use super::Finding;
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
