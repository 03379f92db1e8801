//! `[watch]`: SLOs and rules name routes that exist, objectives are possible, receivers are
//! URLs.

use super::unknown_name;
use crate::error::Reporter;
use crate::model::watch as model;
use crate::watch::*;
use headroom_telemetry::LatencyBounds;
use std::path::Path;
use std::time::Duration;

/// The routes and services objectives and rules may name.
pub(crate) struct Names<'a> {
    pub(crate) routes: &'a [&'a str],
    pub(crate) services: &'a [&'a str],
}

/// The subject of an objective or a rule at `at` (`key` is `watch.slo` or `watch.rule`):
/// exactly one of `route` and `service`, naming one that exists.
fn subject(
    r: &mut Reporter,
    at: usize,
    key: &str,
    route: &Option<toml::Spanned<String>>,
    service: &Option<toml::Spanned<String>>,
    names: &Names,
) -> Option<Subject> {
    let (given, known, kind, make): (_, &[&str], _, fn(String) -> Subject) = match (route, service)
    {
        (Some(n), None) => (n, names.routes, "route", Subject::Route),
        (None, Some(n)) => (n, names.services, "service", Subject::Service),
        _ => {
            r.error(
                at,
                Some(key.into()),
                "expected one of `route = \"NAME\"` (the route's requests) or `service = \"NAME\"` (every route's requests to the service)",
            );
            return None;
        }
    };
    if known.contains(&given.get_ref().as_str()) {
        Some(make(given.get_ref().clone()))
    } else {
        r.error(
            given.span().start,
            Some(format!("{key}.{kind}")),
            unknown_name(kind, given.get_ref(), known),
        );
        None
    }
}

pub(crate) fn validate_watch(
    r: &mut Reporter,
    raw: &model::Watch,
    known: &Names,
    base_dir: &Path,
) -> WatchConfig {
    let history = raw.history.as_ref().and_then(|p| {
        if p.get_ref().trim().is_empty() {
            r.error(
                p.span().start,
                Some("watch.history".into()),
                "must be a file path; leave it out to keep the history in memory only",
            );
            return None;
        }
        Some(base_dir.join(p.get_ref()))
    });
    if raw.max_series == 0 {
        r.error(0, Some("watch.max_series".into()), "must be at least 1");
    }
    let external_url = raw.external_url.as_ref().and_then(|u| {
        let v = u.get_ref().trim();
        if v.starts_with("http://") || v.starts_with("https://") {
            Some(v.trim_end_matches('/').to_string())
        } else {
            r.error(
                u.span().start,
                Some("watch.external_url".into()),
                format!("expected an http:// or https:// URL, got \"{v}\""),
            );
            None
        }
    });
    let latency_buckets = latency_buckets(r, raw.latency_buckets.as_ref());
    let mut names = Vec::new();
    let mut slos = Vec::new();
    for s in &raw.slo {
        let at = s.span().start;
        let s = s.get_ref();
        let subject = subject(r, at, "watch.slo", &s.route, &s.service, known);
        let objective = s.objective.get_ref().0;
        let objective_ok = objective > 0.0 && objective < 1.0;
        if !objective_ok {
            r.error(
                s.objective.span().start,
                Some("watch.slo.objective".into()),
                format!(
                    "{}% cannot be an objective: expected more than 0% and less than 100%, like \"99.9%\" (100% leaves no error budget to judge by)",
                    objective * 100.0
                ),
            );
        }
        let period = s.period.get_ref().0;
        if period < Duration::from_secs(3600) || period > Duration::from_secs(90 * 86_400) {
            r.error(
                s.period.span().start.max(at),
                Some("watch.slo.period".into()),
                "expected a period from 1h to 90d, like \"30d\" or \"28d\"",
            );
        }
        let latency = s.latency.as_ref().map(|l| (l.span().start, l.get_ref().0));
        if let Some((lat_at, l)) = latency {
            if !latency_buckets
                .seconds()
                .iter()
                .any(|b| (b - l.as_secs_f64()).abs() < 1e-9)
            {
                let bounds: Vec<String> = latency_buckets
                    .seconds()
                    .iter()
                    .map(|b| humantime::format_duration(Duration::from_secs_f64(*b)).to_string())
                    .collect();
                r.error(
                    lat_at,
                    Some("watch.slo.latency".into()),
                    format!(
                        "{} is not a latency bucket bound: requests are counted by bucket, so the threshold must be one of {} (or add it to watch.latency_buckets)",
                        humantime::format_duration(l),
                        bounds.join(", ")
                    ),
                );
            }
        }
        let named = subject.as_ref().map_or("", |s| s.name());
        let name = s.name.clone().unwrap_or_else(|| match latency {
            Some(_) => format!("{named}-latency"),
            None => named.to_string(),
        });
        if names.contains(&name) {
            r.error(
                at,
                Some("watch.slo.name".into()),
                format!("two objectives are named \"{name}\": give one a `name`"),
            );
        }
        names.push(name.clone());
        if let (Some(subject), true) = (subject, objective_ok) {
            slos.push(SloConfig {
                name,
                subject,
                objective,
                latency: latency.map(|(_, l)| l),
                period,
            });
        }
    }
    let mut rules = Vec::new();
    for raw_rule in &raw.rule {
        let at = raw_rule.span().start;
        let x = raw_rule.get_ref();
        let subject = subject(r, at, "watch.rule", &x.route, &x.service, known);
        let quantile = x.latency.as_ref().and_then(|q| {
            let v = q.get_ref().trim();
            match v
                .strip_prefix('p')
                .and_then(|n| n.parse::<f64>().ok())
                .filter(|n| *n > 0.0 && *n < 100.0)
            {
                Some(n) => Some(n / 100.0),
                None => {
                    r.error(
                        q.span().start,
                        Some("watch.rule.latency".into()),
                        format!("expected a quantile like \"p95\" or \"p99.9\", got \"{v}\""),
                    );
                    None
                }
            }
        });
        let condition = match (&x.error_rate, quantile, &x.above, &x.above_baseline) {
            (Some(e), None, None, None) => Some(RuleCondition::ErrorRate {
                above: e.get_ref().0,
            }),
            (None, Some(q), Some(t), None) => Some(RuleCondition::LatencyAbove {
                quantile: q,
                threshold: t.get_ref().0,
            }),
            (None, Some(q), None, Some(ratio)) if ratio.get_ref().0 > 0.0 => {
                Some(RuleCondition::LatencyAboveBaseline {
                    quantile: q,
                    ratio: ratio.get_ref().0,
                    baseline: x.baseline.0,
                })
            }
            _ if x.latency.is_some() && quantile.is_none() => None,
            _ => {
                r.error(
                    at,
                    Some("watch.rule".into()),
                    format!(
                        "rule \"{}\": expected one condition: `error_rate = \"1%\"`, or `latency = \"p99\"` with `above = \"500ms\"` or `above_baseline = \"10%\"` (more than 0%)",
                        x.name
                    ),
                );
                None
            }
        };
        if x.window.0.is_zero() {
            r.error(at, Some("watch.rule.window".into()), "must be more than 0s");
        }
        if names.contains(&x.name) {
            r.error(
                at,
                Some("watch.rule.name".into()),
                format!("\"{}\" names another rule or objective", x.name),
            );
        }
        names.push(x.name.clone());
        if let (Some(subject), Some(condition)) = (subject, condition) {
            rules.push(RuleConfig {
                name: x.name.clone(),
                subject,
                condition,
                window: x.window.0,
                for_: x.for_.0,
                severity: x.severity,
            });
        }
    }
    let receivers = raw
        .alert
        .iter()
        .filter_map(|a| {
            let at = a.span().start;
            let a = a.get_ref();
            let (url, make): (&toml::Spanned<String>, fn(String) -> ReceiverConfig) =
                match (&a.webhook, &a.alertmanager) {
                    (Some(u), None) => (u, ReceiverConfig::Webhook),
                    (None, Some(u)) => (u, ReceiverConfig::Alertmanager),
                    _ => {
                        r.error(
                            at,
                            Some("watch.alert".into()),
                            "expected one of `webhook = \"http://...\"` or `alertmanager = \"http://host:9093\"`",
                        );
                        return None;
                    }
                };
            let v = url.get_ref().trim();
            if v.starts_with("http://") || v.starts_with("https://") {
                Some(make(v.to_string()))
            } else {
                r.error(
                    url.span().start,
                    Some("watch.alert".into()),
                    format!("expected an http:// or https:// URL, got \"{v}\""),
                );
                None
            }
        })
        .collect();
    let al = &raw.alerting;
    let tracing = raw.tracing.as_ref().and_then(|t| validate_tracing(r, t));
    WatchConfig {
        history,
        max_series: raw.max_series.max(1),
        external_url,
        slos,
        rules,
        receivers,
        alerting: AlertingConfig {
            group_by: al.group_by.clone(),
            group_wait: al.group_wait.0,
            group_interval: al.group_interval.0,
            repeat_interval: al.repeat_interval.0,
            timeout: al.timeout.0,
        },
        tracing,
        latency_buckets,
    }
}

/// `watch.latency_buckets`, or the default 16 bounds when left out or refused.
fn latency_buckets(
    r: &mut Reporter,
    raw: Option<&toml::Spanned<Vec<toml::Spanned<crate::units::Dur>>>>,
) -> LatencyBounds {
    let Some(raw) = raw else {
        return LatencyBounds::default();
    };
    let seconds: Vec<f64> = raw
        .get_ref()
        .iter()
        .map(|d| d.get_ref().0.as_secs_f64())
        .collect();
    match LatencyBounds::new(&seconds) {
        Ok(b) => b,
        Err(why) => {
            r.error(
                raw.span().start,
                Some("watch.latency_buckets".into()),
                format!(
                    "{why}: expected 1 to {} increasing durations from 1µs, like [\"5ms\", \"25ms\", \"100ms\", \"300ms\", \"1s\"]",
                    headroom_telemetry::MAX_LATENCY_BOUNDS
                ),
            );
            LatencyBounds::default()
        }
    }
}

fn validate_tracing(r: &mut Reporter, t: &toml::Spanned<model::Tracing>) -> Option<TracingConfig> {
    let at = t.span().start;
    let t = t.get_ref();
    let mut ok = true;
    let endpoint = t.endpoint.get_ref().trim();
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        || endpoint.parse::<http::Uri>().is_err()
    {
        r.error(
            t.endpoint.span().start,
            Some("watch.tracing.endpoint".into()),
            format!(
                "expected the collector's OTLP/HTTP traces URL, like \"http://127.0.0.1:4318/v1/traces\", got \"{endpoint}\""
            ),
        );
        ok = false;
    }
    for (key, n, max) in [("queue", t.queue, 1 << 20), ("batch", t.batch, 1 << 16)] {
        if n == 0 || n > max {
            r.error(
                at,
                Some(format!("watch.tracing.{key}")),
                format!("must be from 1 to {max}, got {n}"),
            );
            ok = false;
        }
    }
    if t.interval.0.is_zero() || t.timeout.0.is_zero() {
        r.error(
            at,
            Some("watch.tracing".into()),
            "`interval` and `timeout` must be longer than 0s",
        );
        ok = false;
    }
    let mut headers = Vec::new();
    for (k, v) in &t.headers {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || http::HeaderValue::from_str(v).is_err()
        {
            r.error(
                at,
                Some(format!("watch.tracing.headers.{k}")),
                "expected a header field name and a printable ASCII value",
            );
            ok = false;
        }
        headers.push((k.clone(), v.clone()));
    }
    ok.then(|| TracingConfig {
        endpoint: endpoint.to_string(),
        sample: t.sample.0,
        errors: t.errors,
        slow: (!t.slow.0.is_zero()).then_some(t.slow.0),
        service_name: t.service_name.clone(),
        queue: t.queue,
        batch: t.batch,
        interval: t.interval.0,
        timeout: t.timeout.0,
        headers,
    })
}
