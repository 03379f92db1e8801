//! The autoscaler at run time: one controller per service with `[service.NAME.autoscale]`,
//! on the control runtime. Every second it reads the service's load from the edge (the
//! replicas' in-flight gauges, the service's latency histogram — what `/metrics` shows;
//! nothing is added to the request path) and the replica processes' CPU from `/proc`; at
//! each decision (every 2 s in `requests` mode, every `interval` for the HPA) it asks the
//! algorithm for a count, then starts or drains and stops replicas to reach it.
//!
//! A replica joins the service only once its port accepts connections (and, with health
//! checks, after its first passing check); a replica leaving is drained first (no new
//! requests, in-flight ones finish, up to `grace`), then stopped (SIGTERM, SIGKILL after
//! `grace`). A replica that exits on its own is taken out at once and replaced after a
//! back-off (1 s doubling to 60 s; five exits in five minutes is a crash loop, reported).

use crate::kubernetes::Fleet;
use headroom_config::scale::{
    Algorithm, AutoscaleConfig, DriverConfig, ProcessConfig, QueueSource, QueueTarget,
};
use headroom_edge::replica_set::Source;
use headroom_edge::Shared;
use headroom_scale::hpa::{self, Hpa, Metric, Reading};
use headroom_scale::kpa::Kpa;
use headroom_scale::process::{
    Backoff, Driver, Exit, ProcessSpec, Replica, ShimCommand, StartError,
};
use headroom_telemetry::{Counter, Gauge};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

/// The KPA decides this often, as Knative's autoscaler ticks.
const KPA_TICK: Duration = Duration::from_secs(2);
/// Decisions (and starts, stops, crashes) kept per service for `/status` and the dashboard.
const EVENTS_KEPT: usize = 50;

/// Runs the controllers of the config in force until `stop`, then stops every replica.
/// A reload that adds a service's `autoscale` starts its controller, one that removes it (or
/// the service) stops its replicas, one that changes it reconfigures the running controller
/// (its algorithm's state and its replicas stay; a new command applies to replicas started
/// from then on).
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let shim = match ShimCommand::current_exe() {
        Ok(s) => s,
        Err(e) => {
            warn!(
                "autoscaler off: cannot find headroom's own executable to run replicas under: {e}"
            );
            return;
        }
    };
    let mut running: HashMap<String, (watch::Sender<Option<AutoscaleConfig>>, JoinHandle<()>)> =
        HashMap::new();
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    loop {
        let wanted: BTreeMap<String, AutoscaleConfig> = shared
            .config
            .load()
            .services
            .iter()
            .filter_map(|(name, s)| Some((name.clone(), s.autoscale.clone()?)))
            .collect();
        running.retain(|name, (tx, _)| {
            let keep = wanted.contains_key(name);
            if !keep {
                info!(service = %name, "autoscale removed: stopping its replicas");
                let _ = tx.send(None);
            }
            keep
        });
        // A controller whose driver changed kind is stopped (and waited for: its replicas
        // leave the service first) and a new one started: the old replicas are not the new
        // driver's to manage. (A changed Kubernetes table is the controller's own to apply.)
        let restart: Vec<String> = running
            .iter()
            .filter(|(name, (tx, _))| {
                match (
                    tx.borrow().as_ref().map(|c| &c.driver),
                    wanted.get(*name).map(|c| &c.driver),
                ) {
                    (Some(a), Some(b)) => std::mem::discriminant(a) != std::mem::discriminant(b),
                    _ => false,
                }
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in restart {
            if let Some((tx, task)) = running.remove(&name) {
                info!(service = %name, "autoscale driver changed by a reload: restarting its controller");
                let _ = tx.send(None);
                let _ = task.await;
            }
        }
        for (name, cfg) in wanted {
            match running.get(&name) {
                Some((tx, _)) => {
                    if tx.borrow().as_ref() != Some(&cfg) {
                        let _ = tx.send(Some(cfg));
                    }
                }
                None => {
                    let (tx, rx) = watch::channel(Some(cfg));
                    let task = tokio::spawn(Controller::run(
                        shared.clone(),
                        name.clone(),
                        shim.clone(),
                        rx,
                    ));
                    running.insert(name, (tx, task));
                }
            }
        }
        tokio::select! {
            _ = poll.tick() => {}
            _ = stop.changed() => break,
        }
    }
    for (tx, _) in running.values() {
        let _ = tx.send(None);
    }
    for (_, (_, task)) in running {
        let _ = task.await;
    }
}

fn spec(service: &str, p: &ProcessConfig) -> ProcessSpec {
    let mut s = ProcessSpec::new(service, p.command.clone());
    s.env = p.env.clone();
    s.cwd = Some(p.cwd.clone());
    s.host = p.host;
    s.grace = p.grace;
    s.startup_timeout = p.startup_timeout;
    s.log_dir = p.log_dir.clone();
    s.log_max_bytes = p.log_max;
    s
}

/// A replica of the controller's.
enum State {
    /// Its process is starting (the task that starts it reports back).
    Starting { task: JoinHandle<()> },
    /// It runs and is in the service.
    Up {
        replica: Replica,
        /// Its CPU time at the last sample.
        cpu: Option<(Instant, f64)>,
        /// Cores used over the last sample period.
        cores: Option<f64>,
    },
    /// It is being drained and stopped.
    Stopping,
}

struct Managed {
    index: u32,
    since: Instant,
    state: State,
}

enum Msg {
    Started(u32, Result<Replica, StartError>),
    Exited(u32, Exit),
    Stopped(u32, Exit),
}

/// `[..autoscale.queue]`: a Redis list's or stream's length, or a group's lag; or a
/// RabbitMQ queue's messages.
struct QueueReader {
    backend: QueueBackend,
    source: QueueSource,
    per_replica: f64,
    /// The last read failed: the next failure is not logged again.
    failing: bool,
    errors: Arc<Counter>,
}

enum QueueBackend {
    Redis(headroom_redis::Redis),
    RabbitMq(Box<headroom_guard::HttpFetcher>),
}

impl QueueReader {
    fn new(
        service: &str,
        q: &QueueTarget,
        registry: &headroom_telemetry::Registry,
    ) -> Option<QueueReader> {
        let errors = || {
            registry.counter(
                "headroom_autoscale_metric_errors_total",
                "Target readings that failed (the target then proposes nothing: never read as 0).",
                &[("service", service), ("target", "queue")],
            )
        };
        let backend = match &q.source {
            // A decision every few seconds can wait longer than a request would; a queue's
            // JSON is a few KiB.
            QueueSource::RabbitMq { queue_url } => headroom_guard::HttpFetcher::bounded(
                queue_url,
                "RabbitMQ management URL",
                Duration::from_secs(2),
                1 << 20,
            )
            .map(|get| QueueBackend::RabbitMq(Box::new(get))),
            _ => {
                let target = if q.cluster {
                    headroom_redis::Target::Cluster(q.redis.clone())
                } else {
                    headroom_redis::Target::Standalone(q.redis[0].clone())
                };
                let opts = headroom_redis::Options {
                    timeout: Duration::from_secs(1),
                    ..headroom_redis::Options::default()
                };
                headroom_redis::Redis::new(target, opts)
                    .map(QueueBackend::Redis)
                    .map_err(|e| e.to_string())
            }
        };
        match backend {
            Ok(backend) => Some(QueueReader {
                backend,
                source: q.source.clone(),
                per_replica: q.per_replica,
                failing: false,
                errors: errors(),
            }),
            Err(e) => {
                warn!(service, "queue target left out: {e}");
                None
            }
        }
    }

    /// The queue's length (or the group's lag) now.
    async fn read(&self) -> Result<f64, String> {
        let conn = match &self.backend {
            QueueBackend::Redis(r) => r,
            QueueBackend::RabbitMq(get) => return rabbit_messages(&get.get().await?),
        };
        match &self.source {
            QueueSource::RabbitMq { .. } => Err("a RabbitMQ queue read from Redis".into()),
            QueueSource::List(key) => conn
                .query::<u64>(redis::cmd("LLEN").arg(key))
                .await
                .map(|n| n as f64)
                .map_err(|e| e.to_string()),
            QueueSource::Stream(key) => conn
                .query::<u64>(redis::cmd("XLEN").arg(key))
                .await
                .map(|n| n as f64)
                .map_err(|e| e.to_string()),
            QueueSource::GroupLag { stream, group } => {
                let groups: redis::Value = conn
                    .query(redis::cmd("XINFO").arg("GROUPS").arg(stream))
                    .await
                    .map_err(|e| e.to_string())?;
                group_lag(&groups, group)
            }
        }
    }
}

/// A RabbitMQ queue's `messages` (ready and unacknowledged, as KEDA's RabbitMQ scaler
/// reads them over HTTP) in its management API's answer.
fn rabbit_messages(body: &[u8]) -> Result<f64, String> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("not a RabbitMQ management answer: {e}"))?;
    v["messages"]
        .as_u64()
        .map(|n| n as f64)
        .ok_or_else(|| "the answer has no message count (yet: RabbitMQ publishes its statistics every few seconds)".into())
}

/// The readings of the targets outside headroom, for one decision (`None`: not configured,
/// or not read this time).
struct External {
    queue: Option<f64>,
    prometheus: Option<f64>,
}

/// `[..autoscale.prometheus]`: one PromQL query over Prometheus' HTTP API
/// (`GET /api/v1/query`), as KEDA's Prometheus scaler asks it.
struct PromReader {
    get: headroom_guard::HttpFetcher,
    query: String,
    per_replica: f64,
    /// The last failure's reason: a failing streak is logged once per reason.
    failing: Option<String>,
    errors: Arc<Counter>,
}

impl PromReader {
    fn new(
        service: &str,
        p: &headroom_config::scale::PrometheusTarget,
        registry: &headroom_telemetry::Registry,
    ) -> Option<PromReader> {
        // An instant query's answer is small; a query returning thousands of series is a
        // mistake, refused below rather than read whole.
        match headroom_guard::HttpFetcher::bounded(&p.query_url, "Prometheus URL", p.timeout, 1 << 20) {
            Ok(get) => Some(PromReader {
                get,
                query: p.query.clone(),
                per_replica: p.per_replica,
                failing: None,
                errors: registry.counter(
                    "headroom_autoscale_metric_errors_total",
                    "Target readings that failed (the target then proposes nothing: never read as 0).",
                    &[("service", service), ("target", "prometheus")],
                ),
            }),
            Err(e) => {
                warn!(service, "prometheus target left out: {e}");
                None
            }
        }
    }

    async fn read(&self) -> Result<f64, String> {
        prom_value(&self.get.get().await?)
    }
}

/// The one number in an instant query's answer: a scalar, or a vector of exactly one
/// series. Anything else is an error, never 0: an empty vector (the series does not exist
/// yet, or the query is wrong), several series (wrap the query in `sum()`), a value that is
/// not a finite number, or Prometheus' own error.
fn prom_value(body: &[u8]) -> Result<f64, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not a Prometheus answer: {e}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "Prometheus answered {}: {}",
            v["errorType"].as_str().unwrap_or("an error"),
            v["error"].as_str().unwrap_or("(no message)")
        ));
    }
    let data = &v["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
            Some([one]) => &one["value"],
            Some([]) => return Err("the query returned no series".into()),
            Some(many) => {
                return Err(format!(
                    "the query returned {} series, not one: wrap it in sum()",
                    many.len()
                ))
            }
            None => return Err("no result in the answer".into()),
        },
        other => {
            return Err(format!(
                "the query gave a {}, not a number: expected a scalar or one series",
                other.unwrap_or("nothing")
            ))
        }
    };
    let text = sample[1]
        .as_str()
        .ok_or_else(|| "no value in the answer".to_string())?;
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!(
            "the query's value {text:?} is not a number of 0 or more"
        )),
    }
}

/// A group's `lag` in `XINFO GROUPS`' answer (an array of field/value lists, or maps).
fn group_lag(groups: &redis::Value, group: &str) -> Result<f64, String> {
    use redis::Value;
    let fields = |v: &Value| -> Vec<(String, Value)> {
        match v {
            Value::Array(items) => items
                .chunks(2)
                .filter_map(|kv| match kv {
                    [k, v] => Some((
                        redis::from_redis_value::<String>(k.clone()).ok()?,
                        v.clone(),
                    )),
                    _ => None,
                })
                .collect(),
            Value::Map(pairs) => pairs
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        redis::from_redis_value::<String>(k.clone()).ok()?,
                        v.clone(),
                    ))
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    let Value::Array(list) = groups else {
        return Err("XINFO GROUPS did not answer a list".into());
    };
    for g in list {
        let f = fields(g);
        let named = f.iter().any(|(k, v)| {
            k == "name"
                && redis::from_redis_value::<String>(v.clone()).ok().as_deref() == Some(group)
        });
        if !named {
            continue;
        }
        return match f.iter().find(|(k, _)| k == "lag").map(|(_, v)| v) {
            Some(Value::Nil) => Err(format!(
                "group \"{group}\"'s lag is unknown (Redis cannot count it after deletions)"
            )),
            Some(v) => redis::from_redis_value::<u64>(v.clone())
                .map(|n| n as f64)
                .map_err(|e| e.to_string()),
            None => {
                Err("XINFO GROUPS has no lag: Redis 7 or later is needed for a group's lag".into())
            }
        };
    }
    Err(format!("no group \"{group}\" on the stream"))
}

/// What the algorithm runs as.
enum Algo {
    Hpa { hpa: Hpa, interval: Duration },
    Kpa(Kpa),
}

/// One decision, for `/status`, the dashboard and the log.
#[derive(Debug, Clone, serde::Serialize)]
struct Event {
    /// Unix seconds.
    at: u64,
    kind: &'static str,
    /// A scale: the count before and after.
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<u32>,
    /// A replica's start, exit or failure: its index.
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<u32>,
    /// What it rests on, in words.
    why: String,
}

struct Metrics {
    desired: Arc<Gauge>,
    current: Arc<Gauge>,
    ready: Arc<Gauge>,
    scale_ups: Arc<Counter>,
    scale_downs: Arc<Counter>,
    crashes: Arc<Counter>,
    start_failures: Arc<Counter>,
}

impl Metrics {
    fn new(registry: &headroom_telemetry::Registry, service: &str) -> Metrics {
        let replicas = |state: &str| {
            registry.gauge(
                "headroom_autoscale_replicas",
                "The autoscaler's replicas by state: desired (its last decision), current (started or starting, not stopping), ready (in the service).",
                &[("service", service), ("state", state)],
            )
        };
        let scaled = |direction: &str| {
            registry.counter(
                "headroom_autoscale_scalings_total",
                "Decisions that changed the replica count, by direction.",
                &[("service", service), ("direction", direction)],
            )
        };
        Metrics {
            desired: replicas("desired"),
            current: replicas("current"),
            ready: replicas("ready"),
            scale_ups: scaled("up"),
            scale_downs: scaled("down"),
            crashes: registry.counter(
                "headroom_autoscale_replica_exits_total",
                "Replicas that exited on their own (crashed) and were replaced.",
                &[("service", service)],
            ),
            start_failures: registry.counter(
                "headroom_autoscale_start_failures_total",
                "Replicas that did not start: exited at once, or did not listen within startup_timeout.",
                &[("service", service)],
            ),
        }
    }
}

struct Controller {
    shared: Arc<Shared>,
    service: String,
    cfg: AutoscaleConfig,
    /// The process driver (`replicas` are its processes).
    driver: Option<Driver>,
    /// The kubernetes driver (`replicas` stays empty: the pods are the workload's).
    kube: Option<Fleet>,
    /// Cores per pod from the metrics API, at the last HPA decision.
    kube_cpu: HashMap<String, f64>,
    /// With leader election, as leader: the other instances' load.
    others: crate::kubernetes::election::Others,
    /// The workload's running count was handed to the algorithm (`adopt`) since this
    /// instance started deciding.
    adopted: bool,
    /// The service's upstream attempts at the last tick, and when: this instance's rate.
    last_rate: Option<(Instant, u64)>,
    algo: Algo,
    replicas: Vec<Managed>,
    next_index: u32,
    desired: u32,
    backoff: Backoff,
    /// No start before this (the back-off after a crash or a failed start).
    hold_until: Option<Instant>,
    last_decision: Option<Instant>,
    /// The service's latency histogram at the last HPA decision, and when.
    last_latency: Option<(Instant, Vec<u64>)>,
    events: VecDeque<Event>,
    last_inputs: serde_json::Value,
    /// Drains and stops under way.
    stopping: Vec<JoinHandle<()>>,
    /// The last time the service had a request (in flight, held, or answered since the
    /// tick before), for `idle`.
    last_active: Instant,
    last_attempts: u64,
    /// `min` in force: the configured one, raised by an active `schedule` window.
    min: u32,
    /// The configured `min` when `min` was last worked out (a reload may change it).
    last_configured_min: u32,
    queue: Option<QueueReader>,
    prometheus: Option<PromReader>,
    tx: mpsc::UnboundedSender<Msg>,
    metrics: Metrics,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn algo(cfg: &AutoscaleConfig) -> Algo {
    match &cfg.algorithm {
        Algorithm::Hpa { hpa, interval } => Algo::Hpa {
            hpa: Hpa::new(hpa.clone()),
            interval: *interval,
        },
        Algorithm::Requests(k) => Algo::Kpa(Kpa::new(k.clone())),
    }
}

impl Controller {
    async fn run(
        shared: Arc<Shared>,
        service: String,
        shim: ShimCommand,
        mut cfg_rx: watch::Receiver<Option<AutoscaleConfig>>,
    ) {
        let Some(cfg) = cfg_rx.borrow().clone() else {
            return;
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let metrics = Metrics::new(&shared.registry, &service);
        let (driver, kube) = match &cfg.driver {
            DriverConfig::Process(p) => (Some(Driver::new(spec(&service, p), shim.clone())), None),
            DriverConfig::Kubernetes(k) => {
                (None, Some(Fleet::new(shared.clone(), &service, k.clone())))
            }
        };
        let mut c = Controller {
            driver,
            kube,
            kube_cpu: HashMap::new(),
            others: Default::default(),
            adopted: false,
            last_rate: None,
            algo: algo(&cfg),
            // The first decision (at the first tick) takes it to `min` at least, as an event.
            desired: 0,
            shared,
            service,
            cfg,
            replicas: Vec::new(),
            next_index: 0,
            backoff: Backoff::new(),
            hold_until: None,
            last_decision: None,
            last_latency: None,
            events: VecDeque::new(),
            last_inputs: serde_json::Value::Null,
            stopping: Vec::new(),
            last_active: Instant::now(),
            last_attempts: 0,
            min: 0,
            last_configured_min: 0,
            queue: None,
            prometheus: None,
            tx,
            metrics,
        };
        c.queue = c
            .cfg
            .targets
            .queue
            .as_ref()
            .and_then(|q| QueueReader::new(&c.service, q, &c.shared.registry));
        c.prometheus = c
            .cfg
            .targets
            .prometheus
            .as_ref()
            .and_then(|p| PromReader::new(&c.service, p, &c.shared.registry));
        info!(service = %c.service, min = c.cfg.min, max = c.cfg.max, "autoscaler started");
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // With min = 0, a request held for the first replica wakes the controller at once.
            let gate = c.shared.cold_start(&c.service);
            let arrived = async {
                match &gate {
                    Some(g) => g.arrived.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => c.tick().await,
                _ = arrived => c.activate().await,
                Some(msg) = rx.recv() => c.handle(msg).await,
                changed = cfg_rx.changed() => {
                    let next = if changed.is_ok() { cfg_rx.borrow().clone() } else { None };
                    match next {
                        Some(cfg) => c.reconfigure(cfg, &shim),
                        None => break,
                    }
                }
            }
            c.publish();
        }
        c.shutdown(&mut rx).await;
        c.publish();
    }

    fn reconfigure(&mut self, cfg: AutoscaleConfig, shim: &ShimCommand) {
        match (&mut self.algo, &cfg.algorithm) {
            (
                Algo::Hpa { hpa, interval },
                Algorithm::Hpa {
                    hpa: h,
                    interval: i,
                },
            ) => {
                hpa.reconfigure(h.clone());
                // The schedule's min, until the next tick reads it again.
                hpa.set_min(self.min.max(h.min));
                *interval = *i;
            }
            (Algo::Kpa(k), Algorithm::Requests(c)) => k.reconfigure(c.clone()),
            _ => self.algo = algo(&cfg),
        }
        match &cfg.driver {
            DriverConfig::Process(p) => {
                self.driver = Some(Driver::new(spec(&self.service, p), shim.clone()));
            }
            // Another workload, Service, cluster or timeout: a new client and watch. The
            // pods stay in the service meanwhile; the new watch's first list keeps those
            // still ready and drains the others.
            DriverConfig::Kubernetes(k) if self.kube.as_ref().is_some_and(|f| f.config() != k) => {
                self.kube = Some(Fleet::new(self.shared.clone(), &self.service, k.clone()));
                self.adopted = false;
            }
            DriverConfig::Kubernetes(_) => {}
        }
        if cfg.targets.queue != self.cfg.targets.queue {
            self.queue = cfg
                .targets
                .queue
                .as_ref()
                .and_then(|q| QueueReader::new(&self.service, q, &self.shared.registry));
        }
        if cfg.targets.prometheus != self.cfg.targets.prometheus {
            self.prometheus = cfg
                .targets
                .prometheus
                .as_ref()
                .and_then(|p| PromReader::new(&self.service, p, &self.shared.registry));
        }
        self.cfg = cfg;
        info!(service = %self.service, "autoscale reconfigured by a reload");
    }

    fn edge_service(&self) -> Option<Arc<headroom_edge::snapshot::Service>> {
        self.shared
            .snapshot
            .load()
            .services
            .iter()
            .find(|s| *s.name == *self.service)
            .cloned()
    }

    /// The count of replicas started or starting (not stopping); with Kubernetes, the
    /// workload's `spec.replicas` as last read.
    fn current(&self) -> u32 {
        if let Some(k) = &self.kube {
            return k.scale.as_ref().map_or(0, |s| s.spec);
        }
        self.replicas
            .iter()
            .filter(|m| !matches!(m.state, State::Stopping))
            .count() as u32
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        let svc = self.edge_service();
        // The replicas in the service that take traffic, by address.
        let clock = headroom_edge::now_ns();
        let live: HashMap<std::net::SocketAddr, (bool, i64)> = svc
            .iter()
            .flat_map(|s| s.replicas.iter())
            .map(|r| (r.addr, (r.is_available(clock), r.inflight.get())))
            .collect();
        let mut total_inflight = 0.0;
        let mut ready = 0u32;
        for m in &mut self.replicas {
            if let State::Up {
                replica,
                cpu,
                cores,
            } = &mut m.state
            {
                if let Some((up, n)) = live.get(&replica.addr) {
                    total_inflight += (*n).max(0) as f64;
                    ready += u32::from(*up);
                }
                let stat = headroom_telemetry::process::ProcStat::of(Some(replica.pid));
                *cores = match (stat, *cpu) {
                    (Some(s), Some((t, last))) => {
                        let dt = now.duration_since(t).as_secs_f64();
                        (dt > 0.0).then(|| (s.cpu_seconds - last).max(0.0) / dt)
                    }
                    _ => None,
                };
                *cpu = stat.map(|s| (now, s.cpu_seconds));
            }
        }
        if let Some(k) = &mut self.kube {
            k.ensure_connected().await;
        }
        if let Some(k) = &self.kube {
            for pod in k.pods() {
                if let Some((up, n)) = live.get(&pod.addr) {
                    total_inflight += (*n).max(0) as f64;
                    ready += u32::from(*up);
                }
            }
        }
        // Requests held for a first replica are demand too (Knative's activator counts them).
        let waiting = self
            .shared
            .cold_start(&self.service)
            .map_or(0, |g| g.waiting());
        total_inflight += f64::from(waiting);
        let attempts = svc.as_ref().map_or(0, |s| s.upstream_latency.count());
        let rps = match self.last_rate {
            Some((t, n)) if now > t => {
                attempts.saturating_sub(n) as f64 / now.duration_since(t).as_secs_f64()
            }
            _ => 0.0,
        };
        self.last_rate = Some((now, attempts));
        // Several instances: the leader judges on everyone's load; the others only report
        // theirs (and read the scale now and then, for /status).
        let mut follower = false;
        if let Some(k) = &mut self.kube {
            self.others = k.coordinate(total_inflight, rps).await.unwrap_or_default();
            total_inflight += self.others.inflight;
            if !k.may_scale() {
                follower = true;
                // Taking over later starts from what the workload runs then.
                self.adopted = false;
                k.refresh_if_older(Duration::from_secs(5)).await;
                self.last_inputs = serde_json::json!({
                    "kubernetes": format!("not the leader: {} scales", k.standing().and_then(|s| s.holder.clone()).unwrap_or_else(|| "no one yet".into())),
                });
            }
        }
        if total_inflight > 0.0 || attempts != self.last_attempts {
            self.last_active = now;
        }
        self.last_attempts = attempts;
        let current = self.current();
        self.metrics.current.set(i64::from(current));
        self.metrics.ready.set(i64::from(ready));
        if follower {
            return;
        }
        let min =
            headroom_scale::schedule::min_at(self.cfg.min, &self.cfg.schedule, unix_now() as i64)
                .min(self.cfg.max);
        let reloaded = self.cfg.min != self.last_configured_min;
        self.last_configured_min = self.cfg.min;
        if min != self.min {
            if self.last_decision.is_some() {
                let why = if reloaded {
                    "a reload changed min"
                } else {
                    "a schedule window started or ended"
                };
                info!(service = %self.service, from = self.min, to = min, "autoscale: min changed: {why}");
                self.event("min", Some((self.min, min)), None, why.into());
            }
            self.min = min;
            if let Algo::Hpa { hpa, .. } = &mut self.algo {
                hpa.set_min(min);
            }
            // Not waiting for the next decision to be warm.
            if self.desired < min {
                let why = if min > self.cfg.min {
                    format!("a schedule window raised min to {min}")
                } else {
                    format!("below min ({min})")
                };
                if current < min {
                    self.event("scale", Some((current, min)), None, why);
                }
                self.desired = min;
                self.metrics.desired.set(i64::from(min));
            }
        }
        let t = self.clock(now);
        let due = match &mut self.algo {
            Algo::Kpa(k) => {
                k.record(t, total_inflight);
                self.last_decision
                    .is_none_or(|d| now.duration_since(d) >= KPA_TICK)
            }
            Algo::Hpa { interval, .. } => self
                .last_decision
                .is_none_or(|d| now.duration_since(d) >= *interval),
        };
        if due {
            self.last_decision = Some(now);
            // Kubernetes: judged on the workload's count as it is now, never on a guess, and
            // only once the pods taking traffic are known.
            let mut current = Some(current);
            if let Some(k) = &mut self.kube {
                current = k.refresh().await.map(|s| s.spec);
                if !k.synced() && current.is_some() {
                    current = None;
                }
                if current.is_some() && self.cfg.targets.cpu.is_some() {
                    self.kube_cpu = k.cpu().await.unwrap_or_default();
                }
                // A workload found running (a start, a takeover): its count is where the
                // algorithm starts, so the first low reading does not take it down.
                if let (Some(n), false) = (current, self.adopted) {
                    self.adopted = true;
                    match &mut self.algo {
                        Algo::Hpa { hpa, .. } => hpa.adopt(t, n),
                        Algo::Kpa(kpa) => kpa.adopt(t, n),
                    }
                    if self.desired < n {
                        self.desired = n;
                    }
                }
            }
            match current {
                Some(current) => {
                    let external = External {
                        queue: self.read_queue().await,
                        prometheus: self.read_prometheus().await,
                    };
                    self.decide(now, t, current, ready, svc.as_deref(), external);
                }
                None => {
                    let why = match &self.kube {
                        Some(k) if k.scale.is_some() && !k.synced() => {
                            "waiting for the first EndpointSlice list, nothing decided".to_string()
                        }
                        Some(k) => format!(
                            "scale not read, nothing decided: {}",
                            k.error.clone().unwrap_or_default()
                        ),
                        None => String::new(),
                    };
                    self.last_inputs = serde_json::json!({ "kubernetes": why });
                }
            }
        }
        if waiting > 0 && self.desired == 0 {
            self.activate().await;
        }
        // The last replica goes only after `idle` without a request.
        if self.desired == 0 && current > 0 && now.duration_since(self.last_active) < self.cfg.idle
        {
            self.desired = 1;
        }
        self.converge(now).await;
    }

    /// Reaches the desired count: processes started or stopped, or the workload patched.
    async fn converge(&mut self, now: Instant) {
        match &mut self.kube {
            // Only the leader patches (a follower holding a cold-start request included:
            // its waiting requests reach the leader as load), and only once the workload's
            // running count is adopted: nothing is asked of it before it is known.
            Some(k) if k.may_scale() && self.adopted => {
                k.scale_to(self.desired).await;
                // Someone else scaled the workload since it was read: their count stands
                // until the next decision judges from it.
                if let Some(n) = k.take_overridden() {
                    self.desired = n;
                    self.metrics.desired.set(i64::from(n));
                }
            }
            Some(_) => {}
            None => self.reconcile(now),
        }
    }

    /// A request waits for a first replica: start one now, whatever the algorithm last
    /// said (it had no demand to see).
    async fn activate(&mut self) {
        if self.desired == 0 {
            let current = self.current();
            self.desired = 1.max(self.min);
            self.metrics.desired.set(i64::from(self.desired));
            self.event(
                "scale",
                Some((current, self.desired)),
                None,
                "a request is waiting for a replica: scale from zero".into(),
            );
            info!(service = %self.service, "autoscale: a request is waiting for a replica, scaling from zero");
        }
        self.last_active = Instant::now();
        self.converge(Instant::now()).await;
    }

    /// Seconds since the controller's first tick: the algorithms' clock.
    fn clock(&self, now: Instant) -> f64 {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let start = *START.get_or_init(std::time::Instant::now);
        now.into_std()
            .saturating_duration_since(start)
            .as_secs_f64()
    }

    fn decide(
        &mut self,
        now: Instant,
        t: f64,
        current: u32,
        ready: u32,
        svc: Option<&headroom_edge::snapshot::Service>,
        external: External,
    ) {
        // Targets configured but not read this time: said in the decision, never read as 0.
        let mut unread = Vec::new();
        if self.queue.is_some() && external.queue.is_none() {
            unread.push("queue");
        }
        if self.prometheus.is_some() && external.prometheus.is_none() {
            unread.push("prometheus");
        }
        let readings = match self.algo {
            Algo::Hpa { .. } => {
                let mut m = self.hpa_metrics(now, ready, svc);
                if let (Some(q), Some(total)) = (&self.queue, external.queue) {
                    m.push((
                        "queue",
                        Metric::Total {
                            total,
                            per_replica: q.per_replica,
                        },
                    ));
                }
                if let (Some(p), Some(total)) = (&self.prometheus, external.prometheus) {
                    m.push((
                        "prometheus",
                        Metric::Total {
                            total,
                            per_replica: p.per_replica,
                        },
                    ));
                }
                m
            }
            Algo::Kpa(_) => Vec::new(),
        };
        let (desired, why, inputs) = match &mut self.algo {
            Algo::Kpa(k) => {
                let Some(d) = k.decide(t, ready) else {
                    return;
                };
                let desired = d.desired.clamp(self.min, self.cfg.max.max(self.min));
                let why = format!(
                    "{:.1} in flight over {}s ({:.1} over the panic window), {:.1} per replica aimed at{}",
                    d.stable_concurrency,
                    k.config().stable_window,
                    d.panic_concurrency,
                    k.config().per_replica(),
                    if d.panicking { "; panic: only up" } else { "" }
                );
                (desired, why, serde_json::json!(d))
            }
            Algo::Hpa { hpa, .. } => {
                let tolerance = hpa.config().tolerance;
                let mut proposals = Vec::new();
                let mut said = Vec::new();
                for (name, m) in &readings {
                    match hpa::propose(current, m, tolerance) {
                        Ok(p) => {
                            said.push(format!(
                                "{name} at {:.0}% of its target → {}",
                                p.ratio * 100.0,
                                p.replicas
                            ));
                            proposals.push(p.replicas);
                        }
                        Err(e) => said.push(format!("{name}: no reading ({e:?})")),
                    }
                }
                said.extend(unread.iter().map(|name| format!("{name}: not read")));
                let d = hpa.decide(t, current, &proposals);
                let why = match d.limit {
                    hpa::Limit::None => said.join(", "),
                    limit => format!("{}; limited: {limit:?}", said.join(", ")),
                };
                (
                    d.desired,
                    why,
                    serde_json::json!({"proposals": said, "decision": d}),
                )
            }
        };
        self.last_inputs = inputs;
        let changed = desired != self.desired;
        self.desired = desired;
        self.metrics.desired.set(i64::from(desired));
        // A decision that changes the count, once: a count not reached yet (a start that
        // failed, a replica still starting) is not decided again at every tick.
        if changed && desired != current {
            if desired > current {
                self.metrics.scale_ups.inc();
            } else {
                self.metrics.scale_downs.inc();
            }
            info!(service = %self.service, from = current, to = desired, "autoscale: {why}");
            self.event("scale", Some((current, desired)), None, why);
        }
    }

    /// The Prometheus target's reading, as `read_queue` reads the queue's (a streak of
    /// failures logged once per reason: an empty answer after a refused connection says so).
    async fn read_prometheus(&mut self) -> Option<f64> {
        let p = self.prometheus.as_mut()?;
        match p.read().await {
            Ok(v) => {
                if p.failing.take().is_some() {
                    info!(service = %self.service, "prometheus target read again");
                }
                Some(v)
            }
            Err(e) => {
                p.errors.inc();
                if p.failing.as_ref() != Some(&e) {
                    warn!(service = %self.service, query = %p.query, "prometheus target not read, it proposes nothing until it is: {e}");
                    p.failing = Some(e);
                }
                None
            }
        }
    }

    /// The queue target's reading, if there is one and it could be read; a failure is
    /// logged once per streak and counted, and the target proposes nothing.
    async fn read_queue(&mut self) -> Option<f64> {
        let q = self.queue.as_mut()?;
        match q.read().await {
            Ok(n) => {
                if q.failing {
                    q.failing = false;
                    info!(service = %self.service, "queue target read again");
                }
                Some(n)
            }
            Err(e) => {
                q.errors.inc();
                if !q.failing {
                    q.failing = true;
                    warn!(service = %self.service, "queue target not read, it proposes nothing until it is: {e}");
                }
                None
            }
        }
    }

    /// The HPA's metrics for the targets configured.
    fn hpa_metrics(
        &mut self,
        now: Instant,
        ready: u32,
        svc: Option<&headroom_edge::snapshot::Service>,
    ) -> Vec<(&'static str, Metric)> {
        let clock = headroom_edge::now_ns();
        let targets = self.cfg.targets.clone();
        let in_service: HashMap<std::net::SocketAddr, (bool, i64)> = svc
            .iter()
            .flat_map(|s| s.replicas.iter())
            .map(|r| (r.addr, (r.is_available(clock), r.inflight.get())))
            .collect();
        // Each replica's reading from its cores (if known) and in-flight count; not ready
        // when it is not in the service, or (Kubernetes) a pod without a ready endpoint.
        let per_replica = |f: &dyn Fn(Option<f64>, i64) -> Reading| -> Vec<Reading> {
            if let Some(k) = &self.kube {
                // Terminating pods are not counted, as the HPA ignores pods being deleted.
                let mut out: Vec<Reading> = k
                    .pods()
                    .iter()
                    .filter(|p| !p.terminating)
                    .map(|p| match in_service.get(&p.addr) {
                        Some((true, n)) if p.ready => f(self.kube_cpu.get(&p.name).copied(), *n),
                        _ => Reading::NotReady,
                    })
                    .collect();
                // The other instances' requests in flight, spread over the ready pods.
                let ready = out.iter().filter(|r| **r != Reading::NotReady).count();
                if self.others.inflight > 0.0 && ready > 0 {
                    let each = self.others.inflight / ready as f64;
                    for r in &mut out {
                        if let Reading::Value(v) = r {
                            *v += each;
                        }
                    }
                }
                // Pods of the workload with no endpoint yet (pending, starting).
                let pods = k.scale.as_ref().map_or(0, |s| s.status) as usize;
                if out.len() < pods {
                    out.resize(pods, Reading::NotReady);
                }
                return out;
            }
            self.replicas
                .iter()
                .filter(|m| !matches!(m.state, State::Stopping))
                .map(|m| match &m.state {
                    State::Up { replica, cores, .. } => match in_service.get(&replica.addr) {
                        Some((true, n)) => f(*cores, *n),
                        _ => Reading::NotReady,
                    },
                    _ => Reading::NotReady,
                })
                .collect()
        };
        let mut out = Vec::new();
        if let Some(target) = targets.inflight {
            let readings = per_replica(&|_, n| Reading::Value(n.max(0) as f64));
            out.push(("inflight", Metric::PerReplica { readings, target }));
        }
        if let Some(target) = targets.cpu {
            let readings = per_replica(&|cores, _| match cores {
                Some(c) => Reading::Value(c * 100.0),
                None => Reading::Missing,
            });
            out.push((
                "cpu",
                Metric::Utilization {
                    readings,
                    target: target * 100.0,
                },
            ));
        }
        // requests/s and p95 from the service's latency histogram since the last decision.
        let buckets = svc.map(|s| s.upstream_latency.bucket_counts());
        let delta = match (&self.last_latency, &buckets) {
            (Some((t, last)), Some(now_b)) => {
                let dt = now.duration_since(*t).as_secs_f64();
                let d: Vec<u64> = now_b
                    .iter()
                    .zip(last)
                    .map(|(a, b)| a.saturating_sub(*b))
                    .collect();
                Some((dt, d))
            }
            _ => None,
        };
        if let Some(b) = buckets {
            self.last_latency = Some((now, b));
        }
        if let (Some(target), Some((dt, d))) = (targets.rps, &delta) {
            let rps = d.iter().sum::<u64>() as f64 / dt.max(1e-3) + self.others.rps;
            let each = rps / f64::from(ready.max(1));
            let readings = per_replica(&|_, _| Reading::Value(each));
            out.push(("rps", Metric::PerReplica { readings, target }));
        }
        if let (Some(target), Some((_, d))) = (targets.latency_p95, &delta) {
            let bounds = self.shared.registry.latency_bounds().seconds().to_vec();
            let sample = headroom_watch::history::Sample {
                total: d.iter().sum(),
                errors: 0,
                buckets: d.clone(),
            };
            if let Some(p95) = headroom_watch::history::quantile(&sample, &bounds, 0.95) {
                out.push((
                    "latency_p95",
                    Metric::Value {
                        value: p95,
                        target: target.as_secs_f64(),
                        ready,
                    },
                ));
            }
        }
        out
    }

    /// A decision that changed the count (`replica` None), or a replica's start, exit or
    /// failure (`counts` None).
    fn event(
        &mut self,
        kind: &'static str,
        counts: Option<(u32, u32)>,
        replica: Option<u32>,
        why: String,
    ) {
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            at: unix_now(),
            kind,
            from: counts.map(|c| c.0),
            to: counts.map(|c| c.1),
            replica,
            why,
        });
    }

    /// Starts or stops replicas to reach the desired count.
    fn reconcile(&mut self, now: Instant) {
        let current = self.current();
        if self.desired > current {
            if self.hold_until.is_some_and(|h| now < h) {
                return;
            }
            for _ in current..self.desired {
                self.start(now);
            }
        } else if self.desired < current {
            for _ in self.desired..current {
                self.stop_one();
            }
        }
    }

    fn start(&mut self, now: Instant) {
        let index = self.next_index;
        self.next_index += 1;
        let Some(driver) = self.driver.clone() else {
            return;
        };
        let tx = self.tx.clone();
        let task = tokio::spawn(async move {
            let r = driver.start(index).await;
            let _ = tx.send(Msg::Started(index, r));
        });
        self.replicas.push(Managed {
            index,
            since: now,
            state: State::Starting { task },
        });
    }

    /// Drains and stops one replica: a starting one first (it serves nothing), else the
    /// newest.
    fn stop_one(&mut self) {
        let pick = self
            .replicas
            .iter()
            .rposition(|m| matches!(m.state, State::Starting { .. }))
            .or_else(|| {
                self.replicas
                    .iter()
                    .rposition(|m| matches!(m.state, State::Up { .. }))
            });
        let Some(i) = pick else { return };
        let m = &mut self.replicas[i];
        let index = m.index;
        match std::mem::replace(&mut m.state, State::Stopping) {
            State::Starting { task } => {
                // Dropping the start drops its process: the shim stops it.
                task.abort();
                self.replicas.remove(i);
            }
            State::Up { replica, .. } => {
                let (shared, service, tx) =
                    (self.shared.clone(), self.service.clone(), self.tx.clone());
                let grace = self
                    .driver
                    .as_ref()
                    .map_or(Duration::from_secs(10), |d| d.spec().grace);
                self.stopping.retain(|t| !t.is_finished());
                self.stopping.push(tokio::spawn(async move {
                    let label = replica.addr.to_string();
                    match shared.drain_replica(&service, &label, grace).await {
                        Ok(d) => info!(service = %service, replica = %label, drained = ?d, "replica drained"),
                        Err(e) => warn!(service = %service, replica = %label, "drain: {e}"),
                    }
                    let exit = replica.stop().await;
                    let _ = tx.send(Msg::Stopped(index, exit));
                }));
            }
            State::Stopping => {}
        }
    }

    async fn handle(&mut self, msg: Msg) {
        let now = Instant::now();
        match msg {
            Msg::Started(index, Ok(replica)) => {
                if !self.replicas.iter().any(|m| m.index == index) {
                    return; // stopped while it started: dropping it stops it
                }
                let addr = replica.addr;
                if let Err(e) = self
                    .shared
                    .add_replica(&self.service, addr, 1, Source::Autoscaler)
                {
                    warn!(service = %self.service, %addr, "replica not added: {e}");
                }
                info!(service = %self.service, index, %addr, pid = replica.pid, "replica started");
                let mut exit = replica.exit_watch();
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    while exit.borrow().is_none() {
                        if exit.changed().await.is_err() {
                            break;
                        }
                    }
                    let how = exit
                        .borrow()
                        .clone()
                        .unwrap_or(Exit::Lost("its watch closed".into()));
                    let _ = tx.send(Msg::Exited(index, how));
                });
                self.register_process_metrics(index, addr, replica.pid);
                let Some(m) = self.replicas.iter_mut().find(|m| m.index == index) else {
                    return;
                };
                m.since = now;
                m.state = State::Up {
                    replica,
                    cpu: None,
                    cores: None,
                };
                self.event("started", None, Some(index), format!("{addr}"));
            }
            Msg::Started(index, Err(e)) => {
                self.metrics.start_failures.inc();
                let since = self
                    .replicas
                    .iter()
                    .find(|m| m.index == index)
                    .map_or(now, |m| m.since);
                self.replicas.retain(|m| m.index != index);
                let delay = self.backoff.on_exit(since.into_std(), now.into_std());
                self.hold_until = Some(now + delay);
                // One log line: the log's last lines joined.
                let why = e.to_string().trim_end().replace('\n', " | ");
                warn!(service = %self.service, index, retry_in_s = delay.as_secs(), "replica did not start: {why}");
                self.event("start_failed", None, Some(index), e.to_string());
            }
            Msg::Exited(index, how) => {
                let Some(pos) = self.replicas.iter().position(|m| m.index == index) else {
                    return;
                };
                if matches!(self.replicas[pos].state, State::Stopping) {
                    return; // its stop reports it
                }
                let m = self.replicas.remove(pos);
                if let State::Up { replica, .. } = m.state {
                    let _ = self
                        .shared
                        .remove_replica(&self.service, &replica.addr.to_string());
                    self.unregister_process_metrics(replica.addr);
                }
                self.metrics.crashes.inc();
                let delay = self.backoff.on_exit(m.since.into_std(), now.into_std());
                self.hold_until = Some(now + delay);
                let looping = self.backoff.crash_looping(now.into_std());
                warn!(service = %self.service, index, exit = %how, retry_in_s = delay.as_secs(), crash_loop = looping, "replica exited on its own: replaced after the back-off");
                self.event(
                    if looping { "crash_loop" } else { "exited" },
                    None,
                    Some(index),
                    how.to_string(),
                );
            }
            Msg::Stopped(index, how) => {
                if let Some(pos) = self.replicas.iter().position(|m| m.index == index) {
                    self.replicas.remove(pos);
                }
                info!(service = %self.service, index, exit = %how, "replica stopped");
            }
        }
    }

    /// `headroom_replica_process_*` for a replica's process, read at every scrape.
    fn register_process_metrics(&self, index: u32, addr: std::net::SocketAddr, pid: u32) {
        let label = addr.to_string();
        let labels = [
            ("service", self.service.as_str()),
            ("replica", label.as_str()),
        ];
        let _ = index;
        let read = move |f: fn(&headroom_telemetry::process::ProcStat) -> f64| -> headroom_telemetry::ReadFn {
            Arc::new(move || headroom_telemetry::process::ProcStat::of(Some(pid)).map_or(0.0, |s| f(&s)))
        };
        let registry = &self.shared.registry;
        registry.read_fn(
            "headroom_replica_process_cpu_seconds_total",
            "CPU time (user + system) of a replica headroom runs as a local process.",
            "counter",
            &labels,
            read(|s| s.cpu_seconds),
        );
        registry.read_fn(
            "headroom_replica_process_resident_memory_bytes",
            "Resident memory of a replica headroom runs as a local process.",
            "gauge",
            &labels,
            read(|s| s.resident_bytes as f64),
        );
    }

    fn unregister_process_metrics(&self, addr: std::net::SocketAddr) {
        let label = addr.to_string();
        self.shared.registry.remove_series(&[
            ("service", self.service.as_str()),
            ("replica", label.as_str()),
        ]);
    }

    fn publish(&self) {
        let replicas: Vec<serde_json::Value> = self
            .replicas
            .iter()
            .map(|m| {
                let (state, addr, pid, cores) = match &m.state {
                    State::Starting { .. } => ("starting", None, None, None),
                    State::Up { replica, cores, .. } => (
                        "up",
                        Some(replica.addr.to_string()),
                        Some(replica.pid),
                        *cores,
                    ),
                    State::Stopping => ("stopping", None, None, None),
                };
                serde_json::json!({
                    "index": m.index,
                    "state": state,
                    "address": addr,
                    "pid": pid,
                    "cpu_cores": cores,
                    "seconds_in_state": m.since.elapsed().as_secs(),
                })
            })
            .collect();
        let mut replicas = replicas;
        let kubernetes = self.kube.as_ref().map(|k| {
            let cfg = k.config();
            replicas.extend(k.pods().iter().map(|p| {
                serde_json::json!({
                    "pod": p.name,
                    "address": p.addr.to_string(),
                    "state": if p.terminating { "terminating" } else if p.ready { "up" } else { "not_ready" },
                    "cpu_cores": self.kube_cpu.get(&p.name),
                })
            }));
            serde_json::json!({
                "workload": format!("{}/{}", cfg.workload.plural(), cfg.workload.name()),
                "namespace": cfg.namespace,
                "service": cfg.service,
                "scale": k.scale,
                "error": k.error,
                "election": k.standing(),
            })
        });
        let status = serde_json::json!({
            "driver": if kubernetes.is_some() { "kubernetes" } else { "process" },
            "kubernetes": kubernetes,
            "min": self.min,
            "configured_min": self.cfg.min,
            "max": self.cfg.max,
            "mode": match self.algo { Algo::Hpa { .. } => "hpa", Algo::Kpa(_) => "requests" },
            "desired": self.desired,
            "current": self.current(),
            "replicas": replicas,
            "last_decision": self.last_inputs,
            "crash_loop": self.backoff.crash_looping(Instant::now().into_std()),
            "cold_start": self.shared.cold_start(&self.service).map(|g| serde_json::json!({
                "waiting": g.waiting(),
                "last_seconds": g.last_cold_start().map(|d| d.as_secs_f64()),
                "idle_seconds": self.cfg.idle.as_secs_f64(),
            })),
            "events": self.events,
        });
        let mut all = self
            .shared
            .scale_status
            .load_full()
            .map(|v| (*v).clone())
            .unwrap_or_else(|| serde_json::json!({}));
        if let Some(o) = all.as_object_mut() {
            o.insert(self.service.clone(), status);
        }
        self.shared.scale_status.store(Some(Arc::new(all)));
    }

    /// Stops every replica (starting ones by dropping their start) and waits for them.
    async fn shutdown(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) {
        if let Some(k) = &mut self.kube {
            k.shutdown().await;
            info!(service = %self.service, "autoscaler stopped; the Kubernetes workload is left as it is");
            return;
        }
        for m in &mut self.replicas {
            if let State::Starting { task } = &m.state {
                task.abort();
            }
        }
        let ups: Vec<(u32, Replica)> = self
            .replicas
            .drain(..)
            .filter_map(|m| match m.state {
                State::Up { replica, .. } => Some((m.index, replica)),
                _ => None,
            })
            .collect();
        let stops: Vec<_> = ups
            .into_iter()
            .map(|(_, r)| {
                let _ = self
                    .shared
                    .remove_replica(&self.service, &r.addr.to_string());
                self.unregister_process_metrics(r.addr);
                tokio::spawn(r.stop())
            })
            .collect();
        for s in stops {
            let _ = s.await;
        }
        for t in self.stopping.drain(..) {
            let _ = t.await;
        }
        // Replicas being stopped already report on their own.
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(10), rx.recv()).await {}
        info!(service = %self.service, "autoscaler stopped; its replicas are stopped");
    }
}

#[cfg(test)]
mod prometheus_tests {
    use super::prom_value;

    /// Answers in the shape of Prometheus' HTTP API documentation (`/api/v1/query`).
    #[test]
    fn one_series_or_a_scalar_is_the_reading() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"250"]}]}}"#;
        assert_eq!(prom_value(vector), Ok(250.0));
        let scalar =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.1,"0.5"]}}"#;
        assert_eq!(prom_value(scalar), Ok(0.5));
    }

    #[test]
    fn no_series_several_or_not_a_number_is_an_error_never_zero() {
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(
            prom_value(empty),
            Err("the query returned no series".into())
        );
        let two = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}"#;
        assert!(prom_value(two)
            .unwrap_err()
            .contains("2 series, not one: wrap it in sum()"));
        let nan = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert!(prom_value(nan)
            .unwrap_err()
            .contains("\"NaN\" is not a number"));
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(prom_value(matrix).unwrap_err().contains("gave a matrix"));
        let error = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        assert_eq!(
            prom_value(error),
            Err("Prometheus answered bad_data: parse error at char 4".into())
        );
        assert!(prom_value(b"<html>")
            .unwrap_err()
            .starts_with("not a Prometheus answer"));
    }
}
