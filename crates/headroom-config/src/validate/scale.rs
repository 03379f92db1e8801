//! `[service.NAME.autoscale]`: bounds that can hold, targets that are positive, one
//! algorithm with what it needs, a command to run.

use crate::error::Reporter;
use crate::model::scale as model;
use crate::scale::*;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

pub(super) fn validate_autoscale(
    r: &mut Reporter,
    raw: &Spanned<model::Autoscale>,
    base_dir: &Path,
    key: &impl Fn(&str) -> Option<String>,
) -> Option<AutoscaleConfig> {
    let at = raw.span().start;
    let a = raw.get_ref();
    let before = r.errors.len();
    let min = a.min.as_ref().map_or(1, |m| *m.get_ref());
    let max = *a.max.get_ref();
    if max == 0 {
        r.error(
            a.max.span().start,
            key("autoscale.max"),
            "must be at least 1",
        );
    } else if min > max {
        let at = a.min.as_ref().map_or(at, |m| m.span().start);
        r.error(
            at,
            key("autoscale.min"),
            format!("{min} is more than max ({max}): expected min ≤ max, like min = 1, max = 10"),
        );
    }
    let positive = |r: &mut Reporter, v: &Option<Spanned<f64>>, name: &str| -> Option<f64> {
        let v = v.as_ref()?;
        let x = *v.get_ref();
        if x.is_finite() && x > 0.0 {
            Some(x)
        } else {
            r.error(
                v.span().start,
                key(&format!("autoscale.{name}")),
                format!("{x} cannot be a target: expected a number above 0"),
            );
            None
        }
    };
    let targets = Targets {
        inflight: positive(r, &a.inflight, "inflight"),
        rps: positive(r, &a.rps, "rps"),
        latency_p95: a.latency_p95.as_ref().and_then(|l| {
            let d = l.get_ref().0;
            if d.is_zero() {
                r.error(
                    l.span().start,
                    key("autoscale.latency_p95"),
                    "must be more than 0s",
                );
                None
            } else {
                Some(d)
            }
        }),
        queue: a.queue.as_ref().and_then(|q| queue(r, q, key)),
        prometheus: a.prometheus.as_ref().and_then(|p| prometheus(r, p, key)),
        cpu: a.cpu.as_ref().and_then(|c| {
            let x = c.get_ref().0;
            if x > 0.0 {
                Some(x)
            } else {
                r.error(
                    c.span().start,
                    key("autoscale.cpu"),
                    "0% cannot be a target: expected more, like \"70%\"",
                );
                None
            }
        }),
    };
    let mode = a.mode.as_ref().map_or("hpa", |m| m.get_ref().as_str());
    let algorithm = match mode {
        "hpa" => {
            let given = a.inflight.is_some()
                || a.queue.is_some()
                || a.prometheus.is_some()
                || a.rps.is_some()
                || a.latency_p95.is_some()
                || a.cpu.is_some();
            if !given {
                r.error(
                    at,
                    key("autoscale"),
                    "no target: give at least one of inflight = 10 (in-flight requests per replica), rps = 100 (requests/s per replica), latency_p95 = \"300ms\", cpu = \"70%\", [..autoscale.queue] or [..autoscale.prometheus]",
                );
            }
            let mut hpa = HpaConfig::new(min, max);
            if let Some(t) = &a.tolerance {
                hpa.tolerance = t.get_ref().0;
            }
            if let Some(up) = &a.scale_up {
                hpa.up = rules(r, up, Rules::default_up(), &|k| {
                    key(&format!("autoscale.scale_up.{k}"))
                });
            }
            if let Some(down) = &a.scale_down {
                hpa.down = rules(r, down, Rules::default_down(), &|k| {
                    key(&format!("autoscale.scale_down.{k}"))
                });
            }
            let interval = a
                .interval
                .as_ref()
                .map_or(Duration::from_secs(15), |i| i.get_ref().0);
            if interval < Duration::from_secs(1) {
                let at = a.interval.as_ref().map_or(at, |i| i.span().start);
                r.error(
                    at,
                    key("autoscale.interval"),
                    "expected 1s or more, like \"15s\"",
                );
            }
            Algorithm::Hpa { hpa, interval }
        }
        "requests" => {
            if a.rps.is_some()
                || a.latency_p95.is_some()
                || a.cpu.is_some()
                || a.queue.is_some()
                || a.prometheus.is_some()
            {
                r.error(
                    at,
                    key("autoscale.mode"),
                    "mode = \"requests\" sizes by in-flight requests only: leave out rps, latency_p95, cpu, queue and prometheus, or use mode = \"hpa\"",
                );
            }
            let target = targets.inflight.unwrap_or_else(|| {
                if a.inflight.is_none() {
                    r.error(
                        at,
                        key("autoscale.inflight"),
                        "mode = \"requests\" needs inflight, the in-flight requests one replica should carry, like inflight = 10",
                    );
                }
                1.0
            });
            let mut k = KpaConfig::new(target);
            if let Some(u) = &a.utilization {
                k.utilization = u.get_ref().0;
                if k.utilization <= 0.0 {
                    r.error(
                        u.span().start,
                        key("autoscale.utilization"),
                        "expected more than 0%, like \"70%\"",
                    );
                }
            }
            if let Some(w) = &a.stable_window {
                k.stable_window = w.get_ref().0.as_secs_f64();
                if !(6.0..=3600.0).contains(&k.stable_window) {
                    r.error(
                        w.span().start,
                        key("autoscale.stable_window"),
                        "expected 6s to 1h, like \"60s\"",
                    );
                }
            }
            if let Some(p) = &a.panic_window {
                k.panic_window_share = p.get_ref().0;
                if k.panic_window_share < 0.01 {
                    r.error(
                        p.span().start,
                        key("autoscale.panic_window"),
                        "expected 1% to 100% of the stable window, like \"10%\"",
                    );
                }
            }
            if let Some(t) = &a.panic_threshold {
                k.panic_threshold = t.get_ref().0;
                if k.panic_threshold <= 1.0 {
                    r.error(
                        t.span().start,
                        key("autoscale.panic_threshold"),
                        "expected more than 100%, like \"200%\"",
                    );
                }
            }
            if let Some(d) = &a.scale_down_delay {
                k.scale_down_delay = d.get_ref().0.as_secs_f64();
            }
            if let Some(x) = positive(r, &a.max_scale_up_rate, "max_scale_up_rate") {
                k.max_scale_up_rate = x;
            }
            if let Some(x) = positive(r, &a.max_scale_down_rate, "max_scale_down_rate") {
                k.max_scale_down_rate = x.max(1.0);
            }
            Algorithm::Requests(k)
        }
        other => {
            let at = a.mode.as_ref().map_or(at, |m| m.span().start);
            r.error(
                at,
                key("autoscale.mode"),
                format!("unknown mode \"{other}\": expected \"hpa\" (Kubernetes' HPA) or \"requests\" (Knative's, on in-flight requests)"),
            );
            Algorithm::Hpa {
                hpa: HpaConfig::new(min, max),
                interval: Duration::from_secs(15),
            }
        }
    };
    let driver = match (&a.process, &a.kubernetes) {
        (Some(p), None) => process(r, p, base_dir, key).map(DriverConfig::Process),
        (None, Some(k)) => kubernetes(r, k, base_dir, key).map(DriverConfig::Kubernetes),
        (Some(_), Some(k)) => {
            r.error(
                k.span().start,
                key("autoscale.kubernetes"),
                "one driver per service: [..autoscale.process] (local processes) or [..autoscale.kubernetes] (a workload's pods), not both",
            );
            None
        }
        (None, None) => {
            r.error(
                at,
                key("autoscale.process"),
                "no driver: add [service.NAME.autoscale.process] with command = [\"./app\", \"--port\", \"{port}\"], or [service.NAME.autoscale.kubernetes] with deployment = \"NAME\"",
            );
            None
        }
    };
    let cold_start_timeout = a
        .cold_start_timeout
        .as_ref()
        .map_or(Duration::from_secs(30), |t| t.get_ref().0);
    if cold_start_timeout.is_zero() {
        let at = a.cold_start_timeout.as_ref().map_or(at, |t| t.span().start);
        r.error(
            at,
            key("autoscale.cold_start_timeout"),
            "must be more than 0s: requests arriving with no replica wait this long for the first",
        );
    }
    let idle = a
        .idle
        .as_ref()
        .map_or(Duration::from_secs(30), |t| t.get_ref().0);
    let schedule = a
        .schedule
        .iter()
        .filter_map(|s| window(r, s, max, key))
        .collect();
    (r.errors.len() == before).then_some(AutoscaleConfig {
        min,
        max,
        algorithm,
        targets,
        driver: driver?,
        cold_start_timeout,
        cold_start_queue: a.cold_start_queue.unwrap_or(1000),
        idle,
        schedule,
    })
}

/// `[..autoscale.queue]`: one Redis (or a cluster), one thing to measure, a positive target.
fn queue(
    r: &mut Reporter,
    raw: &Spanned<model::Queue>,
    key: &impl Fn(&str) -> Option<String>,
) -> Option<QueueTarget> {
    let at = raw.span().start;
    let q = raw.get_ref();
    if let Some(api) = &q.rabbitmq {
        return rabbitmq(r, q, api, key);
    }
    if q.queue.is_some() || q.vhost.is_some() {
        r.error(
            at,
            key("autoscale.queue"),
            "queue and vhost name a RabbitMQ queue: give rabbitmq = \"http://guest:guest@127.0.0.1:15672\" too",
        );
        return None;
    }
    let (redis, cluster) = match (&q.redis, q.cluster.is_empty()) {
        (Some(u), true) => (vec![u.get_ref().clone()], false),
        (None, false) => (
            q.cluster.iter().map(|u| u.get_ref().clone()).collect(),
            true,
        ),
        _ => {
            r.error(
                at,
                key("autoscale.queue"),
                "expected one of redis = \"redis://127.0.0.1:6379\", cluster = [\"redis://...\"] or rabbitmq = \"http://guest:guest@127.0.0.1:15672\" with queue = \"NAME\"",
            );
            return None;
        }
    };
    if let Some(bad) = redis
        .iter()
        .find(|u| !u.starts_with("redis://") && !u.starts_with("rediss://"))
    {
        r.error(
            at,
            key("autoscale.queue.redis"),
            format!("\"{bad}\" is not a redis:// or rediss:// url"),
        );
        return None;
    }
    let source = match (&q.list, &q.stream, &q.group) {
        (Some(l), None, None) => QueueSource::List(l.get_ref().clone()),
        (None, Some(s), None) => QueueSource::Stream(s.get_ref().clone()),
        (None, Some(s), Some(g)) => QueueSource::GroupLag {
            stream: s.get_ref().clone(),
            group: g.get_ref().clone(),
        },
        _ => {
            r.error(at, key("autoscale.queue"), "expected list = \"KEY\" (its length), stream = \"KEY\" (its length), or stream with group = \"NAME\" (the group's lag)");
            return None;
        }
    };
    let per = *q.per_replica.get_ref();
    if !(per.is_finite() && per > 0.0) {
        r.error(q.per_replica.span().start, key("autoscale.queue.per_replica"), format!("{per} cannot be a target: expected a number above 0, the items one replica should have waiting"));
        return None;
    }
    Some(QueueTarget {
        redis,
        cluster,
        source,
        per_replica: per,
    })
}

/// One `[[..autoscale.schedule]]` window: both expressions valid, its `min` within `max`.
fn window(
    r: &mut Reporter,
    raw: &Spanned<model::Schedule>,
    max: u32,
    key: &impl Fn(&str) -> Option<String>,
) -> Option<headroom_scale::schedule::Window> {
    use headroom_scale::schedule::{parse_utc_offset, Cron, Window};
    let s = raw.get_ref();
    let mut cron = |text: &Spanned<String>, name: &str| match Cron::parse(text.get_ref()) {
        Ok(c) => Some(c),
        Err(why) => {
            r.error(
                text.span().start,
                key(&format!("autoscale.schedule.{name}")),
                format!("\"{}\": {why}", text.get_ref()),
            );
            None
        }
    };
    let (start, end) = (cron(&s.start, "start"), cron(&s.end, "end"));
    let offset = match &s.utc_offset {
        None => Some(0),
        Some(o) => match parse_utc_offset(o.get_ref()) {
            Ok(m) => Some(m),
            Err(why) => {
                r.error(o.span().start, key("autoscale.schedule.utc_offset"), why);
                None
            }
        },
    };
    if s.min > max {
        r.error(
            raw.span().start,
            key("autoscale.schedule.min"),
            format!(
                "{} is more than max ({max}): a schedule raises min within max",
                s.min
            ),
        );
        return None;
    }
    Some(Window {
        start: start?,
        end: end?,
        replicas: s.min,
        utc_offset_minutes: offset?,
    })
}

fn rules(
    r: &mut Reporter,
    raw: &Spanned<model::Rules>,
    base: Rules,
    key: &dyn Fn(&str) -> Option<String>,
) -> Rules {
    let at = raw.span().start;
    let x = raw.get_ref();
    let mut out = base;
    if let Some(s) = x.stabilization {
        out.stabilization = s.0.as_secs_f64();
        if s.0 > Duration::from_secs(3600) {
            r.error(
                at,
                key("stabilization"),
                "expected 0s to 1h, as Kubernetes allows",
            );
        }
    }
    if let Some(sel) = &x.select {
        out.select = match sel.get_ref().as_str() {
            "max" => Select::Max,
            "min" => Select::Min,
            "disabled" => Select::Disabled,
            other => {
                r.error(
                    sel.span().start,
                    key("select"),
                    format!(
                        "unknown select \"{other}\": expected \"max\", \"min\" or \"disabled\""
                    ),
                );
                Select::Max
            }
        };
    }
    if let Some(policies) = &x.policies {
        out.policies = policies
            .iter()
            .filter_map(|p| {
                let s = p.get_ref();
                let period = s.period.0.as_secs_f64();
                if !(1.0..=1800.0).contains(&period) {
                    r.error(p.span().start, key("policies.period"), "expected 1s to 30m, as Kubernetes allows");
                }
                match (s.pods, s.percent) {
                    (Some(v), None) if v > 0 => Some(Policy::Pods { value: v, period }),
                    (None, Some(v)) if v > 0 => Some(Policy::Percent { value: v, period }),
                    _ => {
                        r.error(p.span().start, key("policies"), "expected one of pods = N or percent = N (more than 0), with period = \"15s\"");
                        None
                    }
                }
            })
            .collect();
        if out.policies.is_empty() && out.select != Select::Disabled {
            r.error(
                at,
                key("policies"),
                "no policy: give one, or select = \"disabled\" to scale this way never",
            );
        }
    }
    out
}

/// A DNS-1123 name, as Kubernetes requires of namespaces, Services and workloads.
fn dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn kubernetes(
    r: &mut Reporter,
    raw: &Spanned<model::Kubernetes>,
    base_dir: &Path,
    key: &impl Fn(&str) -> Option<String>,
) -> Option<KubernetesConfig> {
    let k = raw.get_ref();
    let before = r.errors.len();
    let mut name = |field: &str, v: &Spanned<String>| -> String {
        if !dns_name(v.get_ref()) {
            r.error(
                v.span().start,
                key(&format!("autoscale.kubernetes.{field}")),
                format!(
                    "\"{}\" is not a Kubernetes name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
                    v.get_ref()
                ),
            );
        }
        v.get_ref().clone()
    };
    let workload = match (&k.deployment, &k.statefulset) {
        (Some(d), None) => Workload::Deployment(name("deployment", d)),
        (None, Some(s)) => Workload::StatefulSet(name("statefulset", s)),
        (Some(_), Some(s)) => {
            r.error(
                s.span().start,
                key("autoscale.kubernetes.statefulset"),
                "one workload: deployment = \"NAME\" or statefulset = \"NAME\", not both",
            );
            return None;
        }
        (None, None) => {
            r.error(
                raw.span().start,
                key("autoscale.kubernetes.deployment"),
                "which workload to scale: deployment = \"NAME\" or statefulset = \"NAME\"",
            );
            return None;
        }
    };
    let namespace = k.namespace.as_ref().map(|n| name("namespace", n));
    let service = k
        .service
        .as_ref()
        .map_or_else(|| workload.name().to_string(), |s| name("service", s));
    let port = k.port.as_ref().and_then(|p| match p.get_ref() {
        model::PortRef::Number(n) => match u16::try_from(*n) {
            Ok(n) if n > 0 => Some(Port::Number(n)),
            _ => {
                r.error(
                    p.span().start,
                    key("autoscale.kubernetes.port"),
                    format!("{n} is not a port: expected 1 to 65535, or the port's name in the EndpointSlice (\"http\")"),
                );
                None
            }
        },
        model::PortRef::Name(s) if s.is_empty() => {
            r.error(
                p.span().start,
                key("autoscale.kubernetes.port"),
                "expected the port's name in the EndpointSlice (\"http\") or its number",
            );
            None
        }
        model::PortRef::Name(s) => Some(Port::Name(s.clone())),
    });
    let base_dir = if base_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base_dir
    };
    let kubeconfig = k.kubeconfig.as_ref().map(|p| {
        let p = p.get_ref();
        match p.strip_prefix("~/") {
            Some(rest) => std::env::var_os("HOME")
                .map_or_else(|| base_dir.join(p), |h| Path::new(&h).join(rest)),
            None => base_dir.join(p),
        }
    });
    let timeout = k
        .timeout
        .as_ref()
        .map_or(Duration::from_secs(5), |t| t.get_ref().0);
    if timeout.is_zero() {
        r.error(
            k.timeout
                .as_ref()
                .map_or(raw.span().start, |t| t.span().start),
            key("autoscale.kubernetes.timeout"),
            "must be more than 0s",
        );
    }
    let lease = k
        .lease
        .as_ref()
        .map_or(Duration::from_secs(15), |l| l.get_ref().0);
    if lease < Duration::from_secs(2) {
        r.error(
            k.lease
                .as_ref()
                .map_or(raw.span().start, |l| l.span().start),
            key("autoscale.kubernetes.lease"),
            "must be 2s or more: the leader renews it every third of it",
        );
    }
    if k.leader_election == Some(true) && timeout * 3 > lease {
        r.error(
            k.timeout.as_ref().map_or(raw.span().start, |t| t.span().start),
            key("autoscale.kubernetes.timeout"),
            format!(
                "with leader_election, at most a third of lease ({}): a leader's last call must end before its Lease can be taken over",
                humantime::format_duration(lease)
            ),
        );
    }
    if k.lease.is_some() && k.leader_election != Some(true) {
        r.error(
            k.lease
                .as_ref()
                .map_or(raw.span().start, |l| l.span().start),
            key("autoscale.kubernetes.lease"),
            "lease is the leader election's: set leader_election = true with it",
        );
    }
    (r.errors.len() == before).then_some(KubernetesConfig {
        election: (k.leader_election == Some(true)).then_some(lease),
        workload,
        namespace,
        service,
        port,
        kubeconfig,
        context: k.context.as_ref().map(|c| c.get_ref().clone()),
        timeout,
    })
}

fn process(
    r: &mut Reporter,
    raw: &Spanned<model::Process>,
    base_dir: &Path,
    key: &impl Fn(&str) -> Option<String>,
) -> Option<ProcessConfig> {
    // `--config headroom.toml` has the empty path as its directory: the current one.
    let base_dir = if base_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base_dir
    };
    let p = raw.get_ref();
    let command = p.command.get_ref();
    if command.is_empty() || command[0].trim().is_empty() {
        r.error(
            p.command.span().start,
            key("autoscale.process.command"),
            "expected the program and its arguments, like [\"./app\", \"--port\", \"{port}\"]",
        );
        return None;
    }
    let host = match &p.host {
        None => std::net::IpAddr::from([127, 0, 0, 1]),
        Some(h) => match h.get_ref().parse() {
            Ok(ip) => ip,
            Err(_) => {
                r.error(
                    h.span().start,
                    key("autoscale.process.host"),
                    format!(
                        "\"{}\" is not an IP address: expected one like \"127.0.0.1\"",
                        h.get_ref()
                    ),
                );
                return None;
            }
        },
    };
    let grace = p.grace.map_or(Duration::from_secs(10), |d| d.0);
    let startup_timeout = p.startup_timeout.map_or(Duration::from_secs(30), |d| d.0);
    if startup_timeout.is_zero() {
        r.error(
            raw.span().start,
            key("autoscale.process.startup_timeout"),
            "must be more than 0s",
        );
    }
    Some(ProcessConfig {
        command: command.clone(),
        env: p.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        cwd: p
            .cwd
            .as_ref()
            .map_or_else(|| base_dir.to_path_buf(), |c| base_dir.join(c)),
        host,
        grace,
        startup_timeout,
        log_dir: p.log_dir.as_ref().map(|d| base_dir.join(d)),
        log_max: p.log_max.map_or(10 << 20, |s| s.0.max(4096)),
    })
}

/// `[..autoscale.queue]` of RabbitMQ: its management API's URL, a queue, a positive target.
fn rabbitmq(
    r: &mut Reporter,
    q: &model::Queue,
    api: &Spanned<String>,
    key: &impl Fn(&str) -> Option<String>,
) -> Option<QueueTarget> {
    if q.redis.is_some() || !q.cluster.is_empty() || q.list.is_some() || q.stream.is_some() {
        r.error(
            api.span().start,
            key("autoscale.queue"),
            "one queue per target: rabbitmq with queue, or redis (or cluster) with list or stream",
        );
        return None;
    }
    let url = api.get_ref().trim_end_matches('/');
    let ok = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(['?', '#']));
    if !ok {
        r.error(
            api.span().start,
            key("autoscale.queue.rabbitmq"),
            format!("\"{}\" is not RabbitMQ's management API: expected rabbitmq = \"http://guest:guest@127.0.0.1:15672\"", api.get_ref()),
        );
        return None;
    }
    let Some(queue) = q.queue.as_ref().filter(|n| !n.get_ref().is_empty()) else {
        r.error(
            api.span().start,
            key("autoscale.queue.queue"),
            "expected queue = \"NAME\", the RabbitMQ queue whose messages size the service",
        );
        return None;
    };
    let vhost = q.vhost.as_ref().map_or("/", |v| v.get_ref().as_str());
    let per = *q.per_replica.get_ref();
    if !(per.is_finite() && per > 0.0) {
        r.error(q.per_replica.span().start, key("autoscale.queue.per_replica"), format!("{per} cannot be a target: expected a number above 0, the messages one replica should have waiting"));
        return None;
    }
    Some(QueueTarget {
        redis: Vec::new(),
        cluster: false,
        source: QueueSource::RabbitMq {
            queue_url: format!(
                "{url}/api/queues/{}/{}",
                percent_encode(vhost),
                percent_encode(queue.get_ref())
            ),
        },
        per_replica: per,
    })
}

/// `[..autoscale.prometheus]`: an http(s) server, a query, a positive target.
fn prometheus(
    r: &mut Reporter,
    raw: &Spanned<model::Prometheus>,
    key: &impl Fn(&str) -> Option<String>,
) -> Option<PrometheusTarget> {
    let p = raw.get_ref();
    let url = p.url.get_ref().trim_end_matches('/');
    let host_ok = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(['?', '#']));
    if !host_ok {
        r.error(
            p.url.span().start,
            key("autoscale.prometheus.url"),
            format!(
                "\"{}\" is not a Prometheus server: expected url = \"http://127.0.0.1:9090\"",
                p.url.get_ref()
            ),
        );
        return None;
    }
    let query = p.query.get_ref().trim();
    if query.is_empty() {
        r.error(
            p.query.span().start,
            key("autoscale.prometheus.query"),
            "is empty: expected PromQL giving one number, like query = \"sum(rate(http_requests_total{job=\\\"app\\\"}[1m]))\"",
        );
        return None;
    }
    let per = *p.per_replica.get_ref();
    if !(per.is_finite() && per > 0.0) {
        r.error(p.per_replica.span().start, key("autoscale.prometheus.per_replica"), format!("{per} cannot be a target: expected a number above 0, the query's value one replica should carry"));
        return None;
    }
    let timeout = p
        .timeout
        .as_ref()
        .map_or(Duration::from_secs(2), |t| t.get_ref().0);
    if timeout.is_zero() {
        let at = p
            .timeout
            .as_ref()
            .map_or(raw.span().start, |t| t.span().start);
        r.error(
            at,
            key("autoscale.prometheus.timeout"),
            "must be more than 0s",
        );
        return None;
    }
    Some(PrometheusTarget {
        query_url: format!("{url}/api/v1/query?query={}", percent_encode(query)),
        query: query.to_string(),
        per_replica: per,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use crate::scale::*;
    use std::path::Path;
    use std::time::Duration;

    const BASE: &str = "[[listener]]\nbind = \"127.0.0.1:8080\"\n\n[[route]]\nservice = \"app\"\n\n[service.app]\n";

    fn check(autoscale: &str) -> Result<crate::Config, crate::ConfigErrors> {
        crate::validate::parse("t.toml", &format!("{BASE}{autoscale}"), Path::new("/srv"))
    }

    fn errors(autoscale: &str) -> Vec<String> {
        check(autoscale)
            .unwrap_err()
            .0
            .iter()
            .map(|e| {
                format!(
                    "{}: {}: {}",
                    e.line,
                    e.key.as_deref().unwrap_or(""),
                    e.message
                )
            })
            .collect()
    }

    const PROCESS: &str =
        "[service.app.autoscale.process]\ncommand = [\"./app\", \"--port\", \"{port}\"]\n";

    #[test]
    fn an_hpa_on_in_flight_requests_with_kubernetes_defaults() {
        let c = check(&format!(
            "[service.app.autoscale]\nmax = 5\ninflight = 10\n{PROCESS}"
        ))
        .unwrap();
        let a = c.services["app"].autoscale.clone().unwrap();
        assert_eq!((a.min, a.max), (1, 5));
        assert_eq!(a.targets.inflight, Some(10.0));
        let Algorithm::Hpa { hpa, interval } = a.algorithm else {
            panic!("hpa is the default")
        };
        assert_eq!(interval, Duration::from_secs(15));
        assert_eq!(hpa.down.stabilization, 300.0);
        let p = a.driver.process().unwrap();
        assert_eq!(p.cwd, Path::new("/srv"));
        assert_eq!(p.grace, Duration::from_secs(10));
        assert!(c.services["app"].replicas.is_empty());
    }

    #[test]
    fn a_kubernetes_driver_names_its_workload_and_defaults_the_rest() {
        let text = format!(
            "{BASE}[service.app.autoscale]\nmax = 20\ninflight = 10\n[service.app.autoscale.kubernetes]\ndeployment = \"web\"\nkubeconfig = \"kube/config\"\n"
        );
        let c = crate::validate::parse("/etc/headroom/h.toml", &text, Path::new("/etc/headroom"))
            .unwrap();
        let DriverConfig::Kubernetes(k) = c.services["app"].autoscale.clone().unwrap().driver
        else {
            panic!("the kubernetes driver")
        };
        assert_eq!(k.workload, Workload::Deployment("web".into()));
        assert_eq!(
            k.service, "web",
            "the Service is the workload's name by default"
        );
        assert_eq!(k.namespace, None);
        assert_eq!(k.port, None);
        assert_eq!(
            k.kubeconfig.as_deref(),
            Some(Path::new("/etc/headroom/kube/config"))
        );
        assert_eq!(k.timeout, Duration::from_secs(5));
        assert_eq!(k.election, None, "one instance unless told");

        let text = format!(
            "{BASE}[service.app.autoscale]\nmax = 20\ninflight = 10\n[service.app.autoscale.kubernetes]\nstatefulset = \"db\"\nservice = \"db-headless\"\nnamespace = \"prod\"\nport = 5432\n"
        );
        let c = crate::validate::parse("h.toml", &text, Path::new("")).unwrap();
        let DriverConfig::Kubernetes(k) = c.services["app"].autoscale.clone().unwrap().driver
        else {
            panic!("the kubernetes driver")
        };
        assert_eq!(k.workload, Workload::StatefulSet("db".into()));
        assert_eq!(
            (k.service.as_str(), k.namespace.as_deref()),
            ("db-headless", Some("prod"))
        );
        assert_eq!(k.port, Some(Port::Number(5432)));
    }

    #[test]
    fn a_kubernetes_driver_refuses_what_the_api_server_would() {
        let scale = "[service.app.autoscale]\nmax = 2\ninflight = 4\n";
        for (driver, expected) in [
            ("[service.app.autoscale.kubernetes]\nnamespace = \"x\"\n", "autoscale.kubernetes.deployment: which workload to scale"),
            ("[service.app.autoscale.kubernetes]\ndeployment = \"a\"\nstatefulset = \"b\"\n", "autoscale.kubernetes.statefulset: one workload"),
            ("[service.app.autoscale.kubernetes]\ndeployment = \"Web_App\"\n", "autoscale.kubernetes.deployment: \"Web_App\" is not a Kubernetes name"),
            ("[service.app.autoscale.kubernetes]\ndeployment = \"a\"\nport = 70000\n", "autoscale.kubernetes.port: 70000 is not a port"),
            ("[service.app.autoscale.kubernetes]\ndeployment = \"a\"\ntimeout = \"0s\"\n", "autoscale.kubernetes.timeout: must be more than 0s"),
            ("[service.app.autoscale.kubernetes]\ndeployment = \"a\"\nleader_election = true\nlease = \"1s\"\n", "autoscale.kubernetes.lease: must be 2s or more"),
            ("[service.app.autoscale.kubernetes]\ndeployment = \"a\"\nlease = \"10s\"\n", "autoscale.kubernetes.lease: lease is the leader election's"),
            ("[service.app.autoscale.kubernetes]\ndeployment = \"a\"\nleader_election = true\nlease = \"6s\"\n", "autoscale.kubernetes.timeout: with leader_election, at most a third of lease (6s)"),
            ("[service.app.autoscale.kubernetes]\ndeployment = \"a\"\n[service.app.autoscale.process]\ncommand = [\"./app\"]\n", "autoscale.kubernetes: one driver per service"),
        ] {
            let e = errors(&format!("{scale}{driver}"));
            assert!(e.iter().any(|e| e.contains(expected)), "{expected} in {e:?}");
        }
    }

    /// `headroom serve --config headroom.toml`: the file's directory is the empty path, and
    /// the replicas' working directory the current one (an empty one failed every spawn).
    #[test]
    fn a_config_given_by_a_bare_file_name_runs_replicas_in_the_current_directory() {
        let text = format!(
            "{BASE}[service.app.autoscale]\nmax = 2\ninflight = 4\n{PROCESS}log_dir = \"logs\"\n"
        );
        let c = crate::validate::parse("headroom.toml", &text, Path::new("")).unwrap();
        let p = c.services["app"]
            .autoscale
            .clone()
            .unwrap()
            .driver
            .process()
            .cloned()
            .unwrap();
        assert_eq!(p.cwd, Path::new("."));
        assert_eq!(p.log_dir.as_deref(), Some(Path::new("./logs")));
    }

    #[test]
    fn requests_mode_and_behavior_policies_are_typed() {
        let c = check(&format!(
            "[service.app.autoscale]\nmin = 0\nmax = 8\nmode = \"requests\"\ninflight = 20\nutilization = \"80%\"\npanic_threshold = \"300%\"\n{PROCESS}"
        ))
        .unwrap();
        let Algorithm::Requests(k) = c.services["app"].autoscale.clone().unwrap().algorithm else {
            panic!()
        };
        assert_eq!(
            (k.target, k.utilization, k.panic_threshold),
            (20.0, 0.8, 3.0)
        );
        let c = check(&format!(
            "[service.app.autoscale]\nmax = 8\ncpu = \"150%\"\n[service.app.autoscale.scale_down]\nstabilization = \"60s\"\npolicies = [{{ pods = 1, period = \"30s\" }}]\nselect = \"min\"\n{PROCESS}"
        ))
        .unwrap();
        let a = c.services["app"].autoscale.clone().unwrap();
        assert_eq!(a.targets.cpu, Some(1.5));
        let Algorithm::Hpa { hpa, .. } = a.algorithm else {
            panic!()
        };
        assert_eq!(
            hpa.down.policies,
            [Policy::Pods {
                value: 1,
                period: 30.0
            }]
        );
        assert_eq!(
            (hpa.down.select, hpa.down.stabilization),
            (Select::Min, 60.0)
        );
    }

    #[test]
    fn impossible_bounds_and_targets_are_reported_at_their_line() {
        let e = errors(&format!(
            "[service.app.autoscale]\nmin = 5\nmax = 2\ninflight = 0\n{PROCESS}"
        ));
        assert!(
            e.iter().any(
                |x| x.starts_with("9: service \"app\": autoscale.min: 5 is more than max (2)")
            ),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|x| x
                    .starts_with("11: service \"app\": autoscale.inflight: 0 cannot be a target")),
            "{e:#?}"
        );
        let e = errors(&format!("[service.app.autoscale]\nmax = 2\n{PROCESS}"));
        assert!(
            e[0].contains("no target: give at least one of inflight"),
            "{e:#?}"
        );
        let e = errors(&format!(
            "[service.app.autoscale]\nmax = 2\nmode = \"knative\"\n{PROCESS}"
        ));
        assert!(
            e[0].starts_with("10: service \"app\": autoscale.mode: unknown mode \"knative\""),
            "{e:#?}"
        );
        let e = errors(&format!(
            "[service.app.autoscale]\nmax = 2\nmode = \"requests\"\n{PROCESS}"
        ));
        assert!(e[0].contains("needs inflight"), "{e:#?}");
        let e = errors("[service.app.autoscale]\nmax = 2\ninflight = 4\n");
        assert!(e[0].contains("no driver"), "{e:#?}");
        let e = errors(&format!("[service.app.autoscale]\nmax = 2\ninflight = 4\n[service.app.autoscale.scale_up]\npolicies = [{{ pods = 1, percent = 5, period = \"15s\" }}]\n{PROCESS}"));
        assert!(
            e.iter()
                .any(|x| x.contains("scale_up.policies: expected one of pods = N or percent = N")),
            "{e:#?}"
        );
    }

    #[test]
    fn schedules_are_typed_and_bad_ones_refused_at_their_line() {
        let ok = check(&format!("[service.app.autoscale]\nmax = 4\ninflight = 4\n[[service.app.autoscale.schedule]]\nstart = \"0 8 * * 1-5\"\nend = \"0 18 * * 1-5\"\nmin = 3\nutc_offset = \"+02:00\"\n{PROCESS}")).unwrap();
        let s = &ok.services["app"].autoscale.as_ref().unwrap().schedule;
        assert_eq!(
            (s.len(), s[0].replicas, s[0].utc_offset_minutes),
            (1, 3, 120)
        );
        let e = errors(&format!("[service.app.autoscale]\nmax = 4\ninflight = 4\n[[service.app.autoscale.schedule]]\nstart = \"0 25 * * *\"\nend = \"0 18 * *\"\nmin = 9\nutc_offset = \"CET\"\n{PROCESS}"));
        assert!(
            e.iter().any(|x| x.starts_with(
                "12: service \"app\": autoscale.schedule.start: \"0 25 * * *\": hour: \"25\""
            )),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|x| x.contains("autoscale.schedule.end: \"0 18 * *\": expected five fields")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|x| x.contains("utc_offset: \"CET\" is not a UTC offset")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|x| x.contains("schedule.min: 9 is more than max (4)")),
            "{e:#?}"
        );
    }

    #[test]
    fn replicas_come_from_the_file_or_the_autoscaler_not_both() {
        let e = errors(&format!("replicas = [\"127.0.0.1:9001\"]\n[service.app.autoscale]\nmax = 2\ninflight = 4\n{PROCESS}"));
        assert!(
            e[0].contains("the autoscaler runs this service's replicas: leave out `replicas`"),
            "{e:#?}"
        );
        let e = errors("balance = \"round-robin\"\n");
        assert!(e[0].contains("a service needs replicas"), "{e:#?}");
        let e = errors("[service.app.autoscale]\nmax = 2\ninflight = 4\n[service.app.autoscale.process]\ncommand = []\n");
        assert!(
            e[0].contains("autoscale.process.command: expected the program"),
            "{e:#?}"
        );
    }

    #[test]
    fn a_prometheus_target_encodes_its_query_into_the_api_url() {
        let c = check(&format!(
            "[service.app.autoscale]\nmax = 5\n{PROCESS}[service.app.autoscale.prometheus]\nurl = \"http://127.0.0.1:9090/\"\nquery = 'sum(rate(jobs_total{{queue=\"mail\"}}[1m]))'\nper_replica = 50\n"
        ))
        .unwrap();
        let p = c.services["app"]
            .autoscale
            .clone()
            .unwrap()
            .targets
            .prometheus
            .unwrap();
        assert_eq!(
            p.query_url,
            "http://127.0.0.1:9090/api/v1/query?query=sum%28rate%28jobs_total%7Bqueue%3D%22mail%22%7D%5B1m%5D%29%29"
        );
        assert_eq!((p.per_replica, p.timeout), (50.0, Duration::from_secs(2)));
    }

    #[test]
    fn a_prometheus_target_without_a_server_a_query_or_a_positive_target_is_refused() {
        let bad = |body: &str| {
            errors(&format!(
                "[service.app.autoscale]\nmax = 5\n{PROCESS}[service.app.autoscale.prometheus]\n{body}"
            ))
        };
        let e = bad("url = \"127.0.0.1:9090\"\nquery = \"up\"\nper_replica = 1\n");
        assert!(
            e[0].contains(
                "autoscale.prometheus.url: \"127.0.0.1:9090\" is not a Prometheus server"
            ),
            "{e:?}"
        );
        let e = bad("url = \"http://p:9090\"\nquery = \" \"\nper_replica = 1\n");
        assert!(
            e[0].contains("autoscale.prometheus.query: is empty"),
            "{e:?}"
        );
        let e = bad("url = \"http://p:9090\"\nquery = \"up\"\nper_replica = 0\n");
        assert!(
            e[0].contains("autoscale.prometheus.per_replica: 0 cannot be a target"),
            "{e:?}"
        );
        let e = errors(&format!(
            "[service.app.autoscale]\nmax = 5\nmode = \"requests\"\ninflight = 4\n{PROCESS}[service.app.autoscale.prometheus]\nurl = \"http://p:9090\"\nquery = \"up\"\nper_replica = 1\n"
        ));
        assert!(
            e[0].contains("queue and prometheus, or use mode = \"hpa\""),
            "{e:?}"
        );
    }

    #[test]
    fn a_rabbitmq_queue_is_read_from_the_management_api() {
        let c = check(&format!(
            "[service.app.autoscale]\nmax = 5\n{PROCESS}[service.app.autoscale.queue]\nrabbitmq = \"http://guest:guest@127.0.0.1:15672/\"\nqueue = \"mail jobs\"\nper_replica = 20\n"
        ))
        .unwrap();
        let q = c.services["app"]
            .autoscale
            .clone()
            .unwrap()
            .targets
            .queue
            .unwrap();
        assert_eq!(
            q.source,
            QueueSource::RabbitMq {
                queue_url: "http://guest:guest@127.0.0.1:15672/api/queues/%2F/mail%20jobs".into(),
            }
        );
        let bad = |body: &str| {
            errors(&format!(
                "[service.app.autoscale]\nmax = 5\n{PROCESS}[service.app.autoscale.queue]\n{body}per_replica = 1\n"
            ))
        };
        let e = bad("rabbitmq = \"http://h:15672\"\n");
        assert!(
            e[0].contains("autoscale.queue.queue: expected queue = \"NAME\""),
            "{e:?}"
        );
        let e = bad("rabbitmq = \"amqp://h:5672\"\nqueue = \"q\"\n");
        assert!(e[0].contains("is not RabbitMQ's management API"), "{e:?}");
        let e = bad("rabbitmq = \"http://h:15672\"\nqueue = \"q\"\nlist = \"jobs\"\n");
        assert!(e[0].contains("one queue per target"), "{e:?}");
        let e = bad("redis = \"redis://h:6379\"\nqueue = \"q\"\n");
        assert!(e[0].contains("give rabbitmq = "), "{e:?}");
    }

    /// A replica the autoscaler adds takes its share at once (no slow start) unless the
    /// service asks for one; a listed replica still ramps over 10 s.
    #[test]
    fn autoscaled_services_do_not_slow_start_by_default() {
        let auto = |extra: &str| {
            check(&format!(
                "{extra}[service.app.autoscale]\nmax = 5\ninflight = 4\n{PROCESS}"
            ))
            .unwrap()
            .services["app"]
                .slow_start
        };
        assert_eq!(auto(""), Duration::ZERO);
        assert_eq!(auto("slow_start = \"5s\"\n"), Duration::from_secs(5));
        let listed = crate::validate::parse(
            "t.toml",
            &format!("{BASE}replicas = [\"127.0.0.1:9001\"]\n"),
            Path::new("/srv"),
        )
        .unwrap();
        assert_eq!(listed.services["app"].slow_start, Duration::from_secs(10));
    }
}
