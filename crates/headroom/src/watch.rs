//! The watch plane at run time: every 10 s, the edge's per-route counters and latency
//! histograms are read (nothing is added to the request path: they are the counters
//! `/metrics` shows) and their deltas recorded into the history; the SLOs and rules of
//! `[watch]` are judged against it; what changes goes to the alert receivers; and `/status`
//! gets the verdicts. The history is flushed to its file every minute and at shutdown, off
//! the runtime's threads.

use headroom_config::watch::{
    ReceiverConfig, RuleCondition, Severity as CfgSeverity, SloConfig, Subject, WatchConfig,
};
use headroom_edge::Shared;
use headroom_telemetry::Counter;
use headroom_watch::alert::{Alert, Notifier, NotifierHandle, NotifierOptions, Receiver};
use headroom_watch::history::{good_within, quantile, History, HistoryLimits, OpenNotice, Sample};
use headroom_watch::slo::{
    Condition, Counts, Evaluator, Objective, Rule, Severity, Sli, Source, Transition,
};
use headroom_watch::trace_export::ExportOptions;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch as signal;
use tracing::{info, warn};

/// One slot of the history's finest tier.
const TICK: Duration = Duration::from_secs(10);
/// How often the history is written to its file.
const FLUSH_EVERY: u64 = 6;

/// The history's series of a route (`route:api`) or a service (`service:app`).
fn series_of(subject: &Subject) -> String {
    format!("{}:{}", subject.kind(), subject.name())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The history of one route or service, as the SLO evaluator reads it.
struct RouteSource<'a> {
    history: &'a History,
    series: &'a str,
    bounds: &'a [f64],
}

impl Source for RouteSource<'_> {
    fn counts(&self, sli: &Sli, from: u64, to: u64) -> Counts {
        let s = self.history.sum(self.series, from, to);
        let good = match sli {
            Sli::Availability => s.total.saturating_sub(s.errors),
            Sli::Latency { threshold } => good_within(&s, self.bounds, threshold.as_secs_f64()),
        };
        Counts {
            good,
            total: s.total,
        }
    }

    fn quantile(&self, q: f64, from: u64, to: u64) -> Option<f64> {
        quantile(&self.history.sum(self.series, from, to), self.bounds, q)
    }
}

/// A route's (or a service's) objectives and rules with their alert state.
struct RouteWatch {
    subject: Subject,
    series: String,
    evaluator: Evaluator,
    /// The evaluator's names ("route api", "service app (fast)": the start of every
    /// summary) to the config's ("api", "fast"), which the `objective` and `rule` labels carry, as `headroom export
    /// prometheus-rules` writes them.
    names: HashMap<String, String>,
}

impl RouteWatch {
    /// `labels` with the config's names.
    fn relabel(&self, labels: &mut std::collections::BTreeMap<String, String>) {
        for key in ["objective", "rule"] {
            if let Some(v) = labels.get_mut(key) {
                if let Some(name) = self.names.get(v.as_str()) {
                    v.clone_from(name);
                }
            }
        }
    }
}

fn severity(s: CfgSeverity) -> Severity {
    match s {
        CfgSeverity::Page => Severity::Page,
        CfgSeverity::Ticket => Severity::Ticket,
    }
}

/// The evaluators for `cfg`, one per route or service. Config validation already refused
/// what these constructors would; a refusal here is logged and the objective left out.
fn evaluators(cfg: &WatchConfig) -> Vec<RouteWatch> {
    let mut by_route: HashMap<&Subject, (Vec<Objective>, Vec<Rule>)> = HashMap::new();
    let mut names: HashMap<&Subject, HashMap<String, String>> = HashMap::new();
    for s in &cfg.slos {
        match objective(s) {
            Ok(o) => {
                names
                    .entry(&s.subject)
                    .or_default()
                    .insert(o.name().to_string(), s.name.clone());
                by_route.entry(&s.subject).or_default().0.push(o)
            }
            Err(e) => warn!(slo = %s.name, "objective left out: {e}"),
        }
    }
    for r in &cfg.rules {
        let condition = match r.condition {
            RuleCondition::ErrorRate { above } => Condition::ErrorRate {
                above,
                window: r.window,
                for_: r.for_,
            },
            RuleCondition::LatencyAbove {
                quantile,
                threshold,
            } => Condition::LatencyAbove {
                quantile,
                threshold,
                window: r.window,
                for_: r.for_,
            },
            RuleCondition::LatencyAboveBaseline {
                quantile,
                ratio,
                baseline,
            } => Condition::LatencyAboveBaseline {
                quantile,
                above_ratio: ratio,
                baseline,
                window: r.window,
                for_: r.for_,
            },
        };
        let shown = format!("{}: {}", r.subject, r.name);
        names
            .entry(&r.subject)
            .or_default()
            .insert(shown.clone(), r.name.clone());
        match Rule::new(shown, condition) {
            Ok(rule) => by_route
                .entry(&r.subject)
                .or_default()
                .1
                .push(rule.with_severity(severity(r.severity))),
            Err(e) => warn!(rule = %r.name, "rule left out: {e}"),
        }
    }
    let mut out: Vec<RouteWatch> = by_route
        .into_iter()
        .filter_map(
            |(subject, (objectives, rules))| match Evaluator::new(objectives, rules) {
                Ok(evaluator) => Some(RouteWatch {
                    subject: subject.clone(),
                    series: series_of(subject),
                    evaluator,
                    names: names.remove(subject).unwrap_or_default(),
                }),
                Err(e) => {
                    warn!(%subject, "objectives left out: {e}");
                    None
                }
            },
        )
        .collect();
    // Routes first, then services, each by name.
    out.sort_by(|a, b| a.subject.cmp(&b.subject));
    out
}

fn objective(s: &SloConfig) -> Result<Objective, String> {
    let sli = match s.latency {
        Some(threshold) => Sli::Latency { threshold },
        None => Sli::Availability,
    };
    // The name starts the alerts' summaries: "route api: burning its ...".
    let name = if s.name == s.subject.name() {
        s.subject.to_string()
    } else {
        format!("{} ({})", s.subject, s.name)
    };
    Objective::new(name, sli, s.objective, s.period).map_err(|e| e.to_string())
}

fn receivers(cfg: &WatchConfig) -> Vec<Receiver> {
    cfg.receivers
        .iter()
        .filter_map(|r| {
            let made = match r {
                ReceiverConfig::Webhook(u) => Receiver::webhook(u),
                ReceiverConfig::Alertmanager(u) => Receiver::alertmanager(u),
            };
            made.map_err(|e| warn!("alert receiver left out: {e}")).ok()
        })
        .collect()
}

/// The notifier for `cfg`'s receivers (`None` without any).
fn notifier(cfg: &WatchConfig, dashboard: &str) -> Option<NotifierHandle> {
    let receivers = receivers(cfg);
    if receivers.is_empty() {
        return None;
    }
    let a = &cfg.alerting;
    let options = NotifierOptions {
        group_by: a.group_by.clone(),
        group_wait: a.group_wait,
        group_interval: a.group_interval,
        repeat_interval: a.repeat_interval,
        request_timeout: a.timeout,
        external_url: dashboard.to_string(),
        ..NotifierOptions::default()
    };
    Some(Notifier::spawn(receivers, options))
}

fn to_alert(rw: &RouteWatch, t: &Transition, dashboard: &str) -> Alert {
    let (info, resolved) = match t {
        Transition::Firing(i) => (i, false),
        Transition::Resolved(i) => (i, true),
    };
    let mut labels = info.labels.clone();
    rw.relabel(&mut labels);
    let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
    let mut alert = Alert::firing(&info.alert, at(info.started_at))
        .label(rw.subject.kind(), rw.subject.name())
        .annotation("summary", &info.summary)
        .annotation("dashboard", dashboard);
    for (k, v) in &labels {
        alert = alert.label(k, v);
    }
    alert.generator_url = dashboard.to_string();
    if resolved {
        alert = alert.resolved(at(info.at));
    }
    alert
}

/// The alert receivers' counters, copied to `/metrics` at every tick: by delta, so that a
/// notifier made anew by a reload (its own counts from zero) keeps the series counting up.
/// Labelled by kind and the URL's host and port only: a webhook's path often holds its
/// secret.
#[derive(Default)]
struct Delivered {
    /// Per receiver (in config order): sent, failed attempts, dropped, as last copied.
    last: Vec<[u64; 3]>,
    dropped_alerts: u64,
}

/// `https://user:pw@hooks.example.com:8443/T0/secret` → `hooks.example.com:8443`.
fn receiver_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority.rsplit_once('@').map_or(authority, |(_, h)| h)
}

impl Delivered {
    fn publish(
        &mut self,
        registry: &headroom_telemetry::Registry,
        stats: &headroom_watch::alert::NotifierStats,
    ) {
        let receivers = stats.receivers();
        self.last.resize(receivers.len(), [0; 3]);
        for (r, last) in receivers.iter().zip(self.last.iter_mut()) {
            let host = receiver_host(r.url());
            let now = [r.sent(), r.failed_attempts(), r.dropped()];
            for ((result, n), seen) in ["sent", "failed", "dropped"]
                .iter()
                .zip(now)
                .zip(last.iter())
            {
                registry
                    .counter(
                        "headroom_watch_alert_notifications_total",
                        "Alert notifications by receiver and result: sent (answered 2xx), failed (an attempt that will be retried), dropped (given up).",
                        &[("kind", r.kind()), ("receiver", host), ("result", result)],
                    )
                    .add(n.saturating_sub(*seen));
            }
            *last = now;
            registry
                .gauge(
                    "headroom_watch_alert_queued",
                    "Alert notifications waiting for the receiver, the one being tried included.",
                    &[("kind", r.kind()), ("receiver", host)],
                )
                .set(i64::try_from(r.queued()).unwrap_or(i64::MAX));
        }
        let dropped = stats.dropped_alerts();
        registry
            .counter(
                "headroom_watch_alerts_dropped_total",
                "Alerts refused before any receiver saw them: the notifier's queue full or stopped, or an alert Alertmanager would refuse.",
                &[],
            )
            .add(dropped.saturating_sub(self.dropped_alerts));
        self.dropped_alerts = dropped;
    }
}

/// Counters of the watch plane, on `/metrics`.
struct WatchMetrics {
    /// The last flush failed: the next failure is not logged again (one line per
    /// transition, as for alert receivers).
    failing: std::sync::atomic::AtomicBool,
    flushes_ok: Arc<Counter>,
    flushes_failed: Arc<Counter>,
    refused: Arc<Counter>,
    transitions: Arc<Counter>,
}

/// Runs until `stop` turns true, then flushes the history one last time.
pub async fn run(
    shared: Arc<Shared>,
    admin: Option<std::net::SocketAddr>,
    mut stop: signal::Receiver<bool>,
) {
    let traces = shared.tracer.take_receiver().map(|rx| {
        let config = shared.clone();
        let options = move || {
            let c = config.config.load();
            c.watch.tracing.as_ref().map(|t| ExportOptions {
                endpoint: t.endpoint.clone(),
                headers: t.headers.clone(),
                service_name: t.service_name.clone(),
                batch: t.batch,
                interval: t.interval,
                timeout: t.timeout,
            })
        };
        tokio::spawn(headroom_watch::trace_export::run(
            rx,
            options,
            shared.registry.clone(),
            stop.clone(),
        ))
    });
    let cfg = shared.config.load().watch.clone();
    // The registry's: the histograms the samples come from (fixed until a restart).
    let bounds = shared.registry.latency_bounds().seconds().to_vec();
    let limits = HistoryLimits {
        max_series: cfg.max_series,
    };
    let mut history = match &cfg.history {
        Some(path) => match History::open(path.clone(), bounds.clone(), limits.clone()) {
            Ok((h, notice)) => {
                match notice {
                    // Logged where it happened, with the file's new name.
                    OpenNotice::MovedAside { .. } | OpenNotice::BoundsChanged { .. } => {}
                    OpenNotice::Unavailable { error } => warn!(
                        path = %path.display(),
                        "history kept in memory for now, the file retried at every flush: {error}"
                    ),
                    n => info!(path = %path.display(), "history opened: {n:?}"),
                }
                h
            }
            Err(e) => {
                warn!(path = %path.display(), "history kept in memory only: {e}");
                History::in_memory(bounds.clone(), limits.clone())
                    .expect("the latency bounds are valid")
            }
        },
        None => History::in_memory(bounds.clone(), limits.clone())
            .expect("the latency bounds are valid"),
    };
    let registry = &shared.registry;
    let flush_counter = |result: &str| {
        registry.counter(
            "headroom_watch_history_flushes_total",
            "Writes of the history to its file, by result (ok, failed).",
            &[("result", result)],
        )
    };
    let metrics = WatchMetrics {
        failing: Default::default(),
        flushes_ok: flush_counter("ok"),
        flushes_failed: flush_counter("failed"),
        refused: registry.counter(
            "headroom_watch_history_refused_total",
            "Samples the history refused (too many series, a broken clock).",
            &[],
        ),
        transitions: registry.counter(
            "headroom_watch_alert_transitions_total",
            "SLO and rule alerts that started or stopped firing.",
            &[],
        ),
    };
    let dashboard = cfg
        .external_url
        .clone()
        .unwrap_or_else(|| admin.map_or_else(String::new, |a| format!("http://{a}/status")));
    let mut watched = cfg.clone();
    let mut routes = evaluators(&watched);
    let mut notify = notifier(&watched, &dashboard);
    let mut delivered = Delivered::default();
    let mut last: Last = HashMap::new();
    let mut replicas = ReplicaCounts::default();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => break,
        }
        n += 1;
        let now = unix_now();
        // A reload may have changed the objectives, rules or receivers (not the file: that
        // needs a restart, as it holds the state).
        let cfg = shared.config.load().watch.clone();
        if cfg.slos != watched.slos || cfg.rules != watched.rules {
            routes = evaluators(&cfg);
        }
        if cfg.receivers != watched.receivers || cfg.alerting != watched.alerting {
            notify = notifier(&cfg, &dashboard);
            delivered = Delivered::default();
        }
        if cfg.history != watched.history {
            warn!("[watch] history changed: the new file is used after a restart");
        }
        watched = cfg;
        sample(&shared, &mut history, &mut last, now, &metrics);
        replicas.record(&shared, now);
        let mut statuses = Vec::new();
        let mut active = Vec::new();
        for rw in &mut routes {
            let source = RouteSource {
                history: &history,
                series: &rw.series,
                bounds: &bounds,
            };
            let transitions = rw.evaluator.evaluate(&source, now);
            for t in &transitions {
                match t {
                    Transition::Firing(i) => {
                        warn!(subject = %rw.subject, alert = %i.alert, "firing: {}", i.summary)
                    }
                    Transition::Resolved(i) => {
                        info!(subject = %rw.subject, alert = %i.alert, "resolved: {}", i.summary)
                    }
                }
                metrics.transitions.inc();
            }
            if let Some(h) = &notify {
                let alerts: Vec<Alert> = transitions
                    .iter()
                    .map(|t| to_alert(rw, t, &dashboard))
                    .collect();
                if !alerts.is_empty() {
                    if let Err(e) = h.send(alerts) {
                        warn!("alerts not sent: {e:?}");
                    }
                }
            }
            // Each verdict says what it judges: `"route": "api"` or `"service": "app"`.
            statuses.extend(rw.evaluator.status(&source, now).into_iter().map(|s| {
                let mut v = serde_json::json!(s);
                if let Some(o) = v.as_object_mut() {
                    o.insert(rw.subject.kind().into(), rw.subject.name().into());
                }
                v
            }));
            active.extend(rw.evaluator.active().into_iter().map(|mut a| {
                rw.relabel(&mut a.labels);
                a
            }));
        }
        shared.watch_status.store(Some(Arc::new(serde_json::json!({
            "slos": statuses,
            "alerts": active,
            "receivers": notify.as_ref().map(|n| {
                let stats = n.stats();
                serde_json::json!({
                    "dropped_alerts": stats.dropped_alerts(),
                    "receivers": stats.receivers().iter().map(|r| serde_json::json!({
                        "kind": r.kind(),
                        "url": r.url().to_string(),
                        "sent": r.sent(),
                        "failed_attempts": r.failed_attempts(),
                        "dropped": r.dropped(),
                        "queued": r.queued(),
                    })).collect::<Vec<_>>(),
                })
            }),
            "history": {
                "path": watched.history.as_ref().map(|p| p.display().to_string()),
                "series": history.series().len(),
                "memory_bytes": history.memory_bytes(),
            },
        }))));
        if let Some(n) = &notify {
            delivered.publish(registry, &n.stats());
        }
        publish_findings(&shared);
        shared
            .watch_charts
            .store(Some(Arc::new(charts(&history, &bounds, &replicas, now))));
        if n.is_multiple_of(FLUSH_EVERY) {
            history = flush(history, &metrics).await;
        }
    }
    sample(&shared, &mut history, &mut last, unix_now(), &metrics);
    flush(history, &metrics).await;
    // The exporter sends what is queued once more when it sees the stop.
    if let Some(t) = traces {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
}

/// Each service's replicas over the last hour, one reading per tick: in memory only (a
/// restart starts it afresh), for the dashboard — the autoscaler's changes show there.
#[derive(Default)]
struct ReplicaCounts {
    /// Service → (unix seconds, replicas, available ones), oldest first.
    by_service: HashMap<String, std::collections::VecDeque<(u64, u32, u32)>>,
}

impl ReplicaCounts {
    const SPAN: u64 = 3600;

    fn record(&mut self, shared: &Shared, now: u64) {
        let snap = shared.snapshot.load();
        let clock = headroom_edge::now_ns();
        for s in snap.services.iter() {
            let all = u32::try_from(s.replicas.len()).unwrap_or(u32::MAX);
            let up = s.replicas.iter().filter(|r| r.is_available(clock)).count();
            let ring = self.by_service.entry(s.name.to_string()).or_default();
            ring.push_back((now, all, u32::try_from(up).unwrap_or(u32::MAX)));
        }
        // Services removed by a reload age out like the rest.
        self.by_service.retain(|_, ring| {
            while ring.front().is_some_and(|(t, ..)| *t + Self::SPAN < now) {
                ring.pop_front();
            }
            !ring.is_empty()
        });
    }

    /// The readings of `service` on the chart's time axis `ts` (slot starts, evenly
    /// spaced: the history's resolution, coarser for a history younger than its finest
    /// tier): each slot's last reading, `null` where none was taken.
    fn on_grid(&self, service: &str, ts: &[u64]) -> (Vec<Option<u32>>, Vec<Option<u32>>) {
        let (mut all, mut up) = (vec![None; ts.len()], vec![None; ts.len()]);
        let (Some(first), Some(width)) = (
            ts.first(),
            ts.get(1).map(|t| t - ts[0]).or(Some(TICK.as_secs())),
        ) else {
            return (all, up);
        };
        for (t, a, u) in self.by_service.get(service).into_iter().flatten() {
            if let Some(i) = t
                .checked_sub(*first)
                .map(|d| (d / width.max(1)) as usize)
                .filter(|i| *i < ts.len())
            {
                all[i] = Some(*a);
                up[i] = Some(*u);
            }
        }
        (all, up)
    }
}

/// The last hour of every route and service at 10 s: requests/s, the 5xx ratio, p50, p95
/// and p99 (ms), one array per measure, `null` where a slot had no requests; and each
/// service's replicas (all, available).
fn charts(
    history: &History,
    bounds: &[f64],
    replicas: &ReplicaCounts,
    now: u64,
) -> serde_json::Value {
    const SPAN: u64 = 3600;
    let step = TICK.as_secs();
    let to = now - now % step + step;
    let from = to - SPAN;
    let measures = |series: &str| {
        let points = history.points(series, from, to, step);
        let q = |p: &Sample, q: f64| quantile(p, bounds, q).map(|v| (v * 1e5).round() / 100.0);
        serde_json::json!({
            "t": points.iter().map(|(t, _)| t).collect::<Vec<_>>(),
            "rps": points.iter().map(|(_, p)| p.total as f64 / step as f64).collect::<Vec<_>>(),
            "errors": points.iter().map(|(_, p)| (p.total > 0).then(|| p.errors as f64 / p.total as f64)).collect::<Vec<_>>(),
            "p50": points.iter().map(|(_, p)| q(p, 0.5)).collect::<Vec<_>>(),
            "p95": points.iter().map(|(_, p)| q(p, 0.95)).collect::<Vec<_>>(),
            "p99": points.iter().map(|(_, p)| q(p, 0.99)).collect::<Vec<_>>(),
        })
    };
    let named = |kind: &str, name: &str, mut m: serde_json::Value| {
        if let Some(o) = m.as_object_mut() {
            o.insert(kind.into(), name.into());
        }
        m
    };
    let mut series = history.series();
    series.sort();
    let routes: Vec<serde_json::Value> = series
        .iter()
        .filter_map(|s| Some(named("route", s.strip_prefix("route:")?, measures(s))))
        .collect();
    let mut names: Vec<&str> = series
        .iter()
        .filter_map(|s| s.strip_prefix("service:"))
        .chain(replicas.by_service.keys().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    let services: Vec<serde_json::Value> = names
        .into_iter()
        .map(|name| {
            let mut m = named("service", name, measures(&format!("service:{name}")));
            let ts: Vec<u64> = m["t"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_u64())
                .collect();
            let (all, up) = replicas.on_grid(name, &ts);
            if let Some(o) = m.as_object_mut() {
                o.insert("replicas".into(), serde_json::json!(all));
                o.insert("available".into(), serde_json::json!(up));
            }
            m
        })
        .collect();
    serde_json::json!({ "step": step, "from": from, "to": to, "routes": routes, "services": services })
}

/// What a counter set read last time: requests by status class and latency buckets.
type Last = HashMap<String, ([u64; 5], Vec<u64>)>;

/// `now - last` per element, and `last` set to `now` (a counter that went back — a series
/// made anew — counts from zero).
fn delta<const N: usize>(now: [u64; N], last: &mut [u64; N]) -> [u64; N] {
    let d = std::array::from_fn(|i| now[i].saturating_sub(last[i]));
    *last = now;
    d
}

fn delta_vec(now: Vec<u64>, last: &mut Vec<u64>) -> Vec<u64> {
    let d = now
        .iter()
        .enumerate()
        .map(|(i, c)| c.saturating_sub(last.get(i).copied().unwrap_or(0)))
        .collect();
    *last = now;
    d
}

fn sample_of(classes: [u64; 5], buckets: Vec<u64>) -> Sample {
    Sample {
        total: classes.iter().sum(),
        errors: classes[4],
        buckets,
    }
}

/// Records every route's and every service's requests since the last call. A service's
/// requests are every route's to it (each (route, service) pair's counters, by delta, so a
/// route removed by a reload takes nothing back), its latencies its replicas' answers.
fn sample(
    shared: &Shared,
    history: &mut History,
    last: &mut Last,
    now: u64,
    metrics: &WatchMetrics,
) {
    use headroom_edge::snapshot::RouteAction;
    let snap = shared.snapshot.load();
    let record = |history: &mut History, series: String, s: Sample| {
        if s.total == 0 && s.buckets.iter().all(|b| *b == 0) {
            return;
        }
        if history.record(&series, now, &s).is_err() {
            metrics.refused.inc();
        }
    };
    let mut by_service: HashMap<&str, [u64; 5]> = HashMap::new();
    for route in snap.routes.iter() {
        let subject = Subject::Route(route.name.to_string());
        let series = series_of(&subject);
        let prev = last.entry(series.clone()).or_default();
        let classes = delta(route_counts(route), &mut prev.0);
        let buckets = delta_vec(route.latency.bucket_counts(), &mut prev.1);
        record(history, series, sample_of(classes, buckets));
        let targets: Vec<&headroom_edge::snapshot::Target> = match &route.action {
            RouteAction::Forward(t) => vec![t],
            RouteAction::Split { targets, .. } => targets.iter().map(|(t, _)| t).collect(),
            RouteAction::Redirect { .. } | RouteAction::Respond { .. } => Vec::new(),
        };
        for t in targets {
            let key = format!("pair:{}\0{}", route.name, t.service.name);
            let d = delta(t.red.counts(), &mut last.entry(key).or_default().0);
            let sum = by_service.entry(&t.service.name).or_default();
            for (s, n) in sum.iter_mut().zip(d) {
                *s += n;
            }
        }
    }
    for service in snap.services.iter() {
        let subject = Subject::Service(service.name.to_string());
        let series = series_of(&subject);
        let prev = last.entry(series.clone()).or_default();
        let buckets = delta_vec(service.upstream_latency.bucket_counts(), &mut prev.1);
        let classes = by_service.get(&*service.name).copied().unwrap_or_default();
        record(history, series, sample_of(classes, buckets));
    }
}

/// A route's requests by status class: its own (fixed responses, redirects, requests that
/// never reached a service) and those of each service it forwards to.
fn route_counts(route: &headroom_edge::snapshot::Route) -> [u64; 5] {
    use headroom_edge::snapshot::RouteAction;
    let mut c = route.red.counts();
    let mut add = |red: &headroom_edge::snapshot::Red| {
        for (t, n) in c.iter_mut().zip(red.counts()) {
            *t += n;
        }
    };
    match &route.action {
        RouteAction::Forward(t) => add(&t.red),
        RouteAction::Split { targets, .. } => targets.iter().for_each(|(t, _)| add(&t.red)),
        RouteAction::Redirect { .. } | RouteAction::Respond { .. } => {}
    }
    c
}

/// Writes the history to its file on a blocking thread; a failure is logged and counted,
/// and the history stays whole in memory for the next try.
async fn flush(mut history: History, metrics: &WatchMetrics) -> History {
    if history.path().is_none() {
        return history;
    }
    let bounds = history.bounds().to_vec();
    let done = tokio::task::spawn_blocking(move || {
        let r = history.flush();
        (history, r)
    })
    .await;
    match done {
        Ok((h, Ok(_))) => {
            metrics.flushes_ok.inc();
            if metrics.failing.swap(false, Relaxed) {
                info!("history written again");
            }
            h
        }
        Ok((h, Err(e))) => {
            metrics.flushes_failed.inc();
            if !metrics.failing.swap(true, Relaxed) {
                warn!("history not written (kept in memory, retried every minute): {e}");
            }
            h
        }
        Err(e) => {
            metrics.flushes_failed.inc();
            warn!("the history flush failed ({e}): starting afresh in memory");
            History::in_memory(bounds, HistoryLimits::default())
                .expect("the latency bounds are valid")
        }
    }
}

/// The advisor's findings (what `headroom advise` prints) for the dashboard's panel, judged
/// on `/status` with the watch part just published and on `/metrics`, every tick.
fn publish_findings(shared: &Shared) {
    let status = headroom_edge::admin::status_json(shared);
    let metrics = crate::advise::parse_metrics(&shared.registry.render());
    let findings = crate::advise::advise(&status, &metrics);
    let Some(watch) = shared.watch_status.load_full() else {
        return;
    };
    let mut watch = (*watch).clone();
    if let Some(w) = watch.as_object_mut() {
        w.insert("findings".into(), serde_json::json!(findings));
    }
    shared.watch_status.store(Some(Arc::new(watch)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receivers_label_keeps_its_host_and_port_only() {
        assert_eq!(
            receiver_host("https://user:pw@hooks.example.com:8443/T0/secret?x=1"),
            "hooks.example.com:8443"
        );
        assert_eq!(receiver_host("http://127.0.0.1:9093"), "127.0.0.1:9093");
    }
}
