//! `--against`: what headroom's own metrics saw while the load ran. The admin endpoint's
//! Prometheus text is read before and after a run; counters become their increase over the
//! run, gauges their value at its end, histograms their mean over the run. Derived figures
//! (cache hit ratio, requests shed, healthy replicas) are added when headroom exports the
//! series they come from.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Samples by series name, summed over their labels; `_bucket` series are left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    pub series: BTreeMap<String, f64>,
    /// Samples of series whose labels matter for a derived figure, e.g. `status="5xx"`.
    pub labelled: Vec<(String, String, f64)>,
}

/// The admin endpoint to read; `http://host:port` (the `/metrics` path is added).
#[derive(Debug, Clone)]
pub struct Admin {
    host: String,
    port: u16,
    path: String,
}

impl Admin {
    pub fn parse(url: &str) -> Result<Admin, String> {
        let (target, path) =
            crate::request::parse_url(url).map_err(|e| format!("--against: {e}"))?;
        if target.tls {
            return Err("--against: the admin endpoint is read over plain http://".into());
        }
        let path = if path == "/" {
            "/metrics".to_string()
        } else {
            path
        };
        Ok(Admin {
            host: target.host,
            port: target.port,
            path,
        })
    }

    /// Reads the metrics once; a blocking HTTP/1.0 GET, as this runs between load steps.
    pub fn scrape(&self) -> Result<Scrape, String> {
        let what = format!("--against http://{}:{}{}", self.host, self.port, self.path);
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("{what}: {e}"))?
            .next()
            .ok_or_else(|| format!("{what}: no address"))?;
        let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("{what}: cannot connect: {e}"))?;
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
        write!(
            tcp,
            "GET {} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.path, self.host
        )
        .map_err(|e| format!("{what}: {e}"))?;
        let mut body = Vec::new();
        tcp.read_to_end(&mut body)
            .map_err(|e| format!("{what}: {e}"))?;
        let text = String::from_utf8_lossy(&body);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("{what}: not an HTTP response"))?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            let status = head.lines().next().unwrap_or("");
            return Err(format!("{what}: answered {status:?}, not 200"));
        }
        Ok(parse(body))
    }
}

/// Parses Prometheus text exposition.
pub fn parse(text: &str) -> Scrape {
    let mut s = Scrape::default();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if name.ends_with("_bucket") {
            continue;
        }
        *s.series.entry(name.to_string()).or_default() += value;
        if !labels.is_empty() {
            s.labelled
                .push((name.to_string(), labels.to_string(), value));
        }
    }
    s
}

/// What changed between two scrapes, by the rules in the module's doc.
pub fn during(before: &Scrape, after: &Scrape) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let delta = |name: &str| {
        after
            .series
            .get(name)
            .map(|a| a - before.series.get(name).unwrap_or(&0.0))
    };
    for (name, value) in &after.series {
        if name.ends_with("_total") {
            out.insert(name.clone(), delta(name).unwrap_or(0.0));
        } else if let Some(base) = name.strip_suffix("_count") {
            let (Some(count), Some(sum)) = (delta(name), delta(&format!("{base}_sum"))) else {
                continue;
            };
            if count > 0.0 {
                out.insert(format!("{base}_mean"), sum / count);
            }
        } else if !name.ends_with("_sum") {
            out.insert(name.clone(), *value);
        }
    }
    // Derived figures, present when their series are.
    let labelled_delta = |name: &str, label: &str| -> f64 {
        let sum = |s: &Scrape| -> f64 {
            s.labelled
                .iter()
                .filter(|(n, l, _)| n == name && l.contains(label))
                .map(|(_, _, v)| v)
                .sum()
        };
        sum(after) - sum(before)
    };
    if after.series.contains_key("headroom_requests_total") {
        out.insert(
            "requests".into(),
            delta("headroom_requests_total").unwrap_or(0.0),
        );
        out.insert(
            "responses_5xx".into(),
            labelled_delta("headroom_requests_total", "class=\"5"),
        );
    }
    if let Some(v) = after.series.get("headroom_replica_healthy") {
        out.insert("replicas_healthy".into(), *v);
    }
    // Served from storage: fresh hits, stale answers and revalidated ones.
    let hits: f64 = ["hit", "stale", "revalidated"]
        .iter()
        .map(|r| labelled_delta("headroom_cache_requests_total", &format!("result=\"{r}\"")))
        .sum();
    let all = delta("headroom_cache_requests_total").unwrap_or(0.0);
    if all > 0.0 {
        out.insert("cache_hit_ratio".into(), hits / all);
    }
    if let Some(shed) = delta("headroom_shed_total") {
        out.insert("shed".into(), shed);
    }
    out
}

/// The figures worth a place in the one-line summary.
pub fn headline(all: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    const SHOWN: [&str; 8] = [
        "requests",
        "responses_5xx",
        "replicas_healthy",
        "cache_hit_ratio",
        "shed",
        "headroom_retries_total",
        "headroom_replica_ejections_total",
        "headroom_upstream_errors_total",
    ];
    all.iter()
        .filter(|(k, _)| SHOWN.contains(&k.as_str()))
        .map(|(k, v)| (k.trim_start_matches("headroom_").to_string(), *v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_become_increases_gauges_values_histograms_means() {
        let before = parse("# TYPE x counter\nheadroom_requests_total{route=\"a\",class=\"2xx\"} 10\nheadroom_requests_total{route=\"a\",class=\"5xx\"} 1\nheadroom_replica_healthy{replica=\"a\"} 1\nheadroom_request_duration_seconds_count 10\nheadroom_request_duration_seconds_sum 1\n");
        let after = parse("headroom_requests_total{route=\"a\",class=\"2xx\"} 110\nheadroom_requests_total{route=\"a\",class=\"5xx\"} 5\nheadroom_replica_healthy{replica=\"a\"} 1\nheadroom_replica_healthy{replica=\"b\"} 1\nheadroom_request_duration_seconds_bucket{le=\"1\"} 20\nheadroom_request_duration_seconds_count 20\nheadroom_request_duration_seconds_sum 3\n");
        let d = during(&before, &after);
        assert_eq!(d["headroom_requests_total"], 104.0);
        assert_eq!(d["requests"], 104.0);
        assert_eq!(d["responses_5xx"], 4.0);
        assert_eq!(d["replicas_healthy"], 2.0);
        assert_eq!(d["headroom_request_duration_seconds_mean"], 0.2);
        assert!(!d.contains_key("cache_hit_ratio"));
        assert!(!d.keys().any(|k| k.ends_with("_bucket")));
    }

    #[test]
    fn the_cache_hit_ratio_counts_what_storage_answered() {
        let before = parse("headroom_cache_requests_total{route=\"a\",result=\"hit\"} 0\n");
        let after = parse("headroom_cache_requests_total{route=\"a\",result=\"hit\"} 6\nheadroom_cache_requests_total{route=\"a\",result=\"stale\"} 1\nheadroom_cache_requests_total{route=\"a\",result=\"revalidated\"} 1\nheadroom_cache_requests_total{route=\"a\",result=\"miss\"} 2\n");
        assert_eq!(during(&before, &after)["cache_hit_ratio"], 0.8);
    }

    #[test]
    fn admin_urls_default_to_metrics() {
        assert_eq!(
            Admin::parse("http://127.0.0.1:9901").unwrap().path,
            "/metrics"
        );
        assert!(Admin::parse("https://x/").is_err());
    }
}
