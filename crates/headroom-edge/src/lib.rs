//! headroom's HTTP data plane: listeners, TLS, router, balancer, upstream pools, health
//! checks, retries and the admin endpoints.
//!
//! Threading: `workers` OS threads each run a single-threaded tokio runtime with their own
//! SO_REUSEPORT sockets and their own upstream connections, so a request never crosses a
//! thread. The control runtime (the caller's) runs health checks, the admin listener and
//! reloads. The routing table is an immutable [`Snapshot`] behind an `ArcSwap`.

pub mod admin;
pub mod balancer;
pub mod body;
mod clock;
pub mod cold_start;
/// The edge's monotonic clock, in which replica states (ejections, slow start) are stamped.
pub use clock::now_ns;
pub mod discovery;
pub mod error;
mod forward;
pub mod h1;
mod headers;
pub mod health;
pub mod listener;
pub mod pipeline;
pub mod pool;
pub mod protect;
pub mod replica;
pub mod replica_set;
pub mod retry;
pub mod route_slow;
pub mod snapshot;
mod tls;
pub mod trace;

use arc_swap::ArcSwap;
use headroom_config::Config;
use headroom_telemetry::access_log::{self, AccessLog, Destination};
use headroom_telemetry::{Counter, Gauge, Histogram, Registry, UpDownCounter};
use listener::WorkerListener;
use snapshot::{Live, Red, Snapshot};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::info;

/// State every worker and the control plane share.
#[derive(Debug)]
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub config: ArcSwap<Config>,
    pub live: Live,
    pub registry: Arc<Registry>,
    /// Requests being served, over all workers: sharded, as it changes twice per request.
    pub inflight: Arc<UpDownCounter>,
    /// Where every worker's access log lines go (its writer thread and bounded queue).
    pub access_log: AccessLog,
    /// Where traced requests' spans wait for the exporter (`[watch.tracing]`); its queue is
    /// sized by the config at start.
    pub tracer: headroom_telemetry::trace::Tracer,
    /// Client connections switched to another protocol (WebSocket) and tunnelled.
    pub tunnels: Arc<Gauge>,
    /// Counters for requests answered before a route was found (404, 400, 413).
    pub unrouted: Red,
    pub unrouted_latency: Arc<Histogram>,
    reloads_ok: Arc<Counter>,
    reloads_failed: Arc<Counter>,
    /// The snapshot's generation: bumped by every reload and every replica-set change.
    generation: AtomicU64,
    /// Wakes the health checks at once (a replica was added at runtime).
    pub(crate) health_kick: tokio::sync::Notify,
    /// Serialises snapshot rebuilds, so a reload and a runtime change never lose each
    /// other's work. Held only while a snapshot is built (control plane, never per request).
    rebuilding: Mutex<()>,
    /// The watch plane's last word for `/status` (SLOs, alerts, history), set by it on
    /// every evaluation; `None` until then or without one.
    pub watch_status: arc_swap::ArcSwapOption<serde_json::Value>,
    /// The last hour of every route, for the dashboard's charts (`/watch/charts`), set by
    /// the watch plane every 10 s.
    pub watch_charts: arc_swap::ArcSwapOption<serde_json::Value>,
    /// The autoscaler's state per service (`/status`' `autoscale`), published by its
    /// controllers.
    pub scale_status: arc_swap::ArcSwapOption<serde_json::Value>,
}

impl Shared {
    pub(crate) fn rebuild_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.rebuilding.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Builds and swaps in a snapshot of the config in force and the live membership.
    /// The caller holds [`Shared::rebuild_lock`].
    pub(crate) fn rebuild_locked(&self) -> u64 {
        let generation = self.generation.fetch_add(1, Relaxed) + 1;
        let snap = Snapshot::build(&self.config.load(), &self.live, generation);
        self.snapshot.store(Arc::new(snap));
        generation
    }
}

/// What a reload from `old` to `new` cannot apply in a running process, if anything.
/// Everything else takes effect: routes, services (replicas, weights, balancing, timeouts,
/// health checks, outlier ejection, retry budgets), the access log format, the admin token
/// and `shutdown_timeout`.
fn needs_restart(old: &Config, new: &Config) -> Option<&'static str> {
    if old.listeners != new.listeners {
        return Some("listeners changed");
    }
    if old.global.workers != new.global.workers {
        return Some("global.workers changed");
    }
    if old.admin.as_ref().map(|a| a.bind) != new.admin.as_ref().map(|a| a.bind) {
        return Some("admin.bind or admin.enabled changed");
    }
    if old.watch.latency_buckets != new.watch.latency_buckets {
        // Every histogram and the history are laid out by them.
        return Some("watch.latency_buckets changed");
    }
    None
}

/// The control plane's tasks for the config in force: health checks, housekeeping and DNS
/// discovery. A reload aborts and restarts them (discovery resolves again at once).
fn control_tasks(shared: &Arc<Shared>) -> Vec<JoinHandle<()>> {
    let mut tasks = health::spawn_checks(shared);
    tasks.extend(replica_set::spawn_discovery(shared));
    tasks.push(route_slow::spawn_refresh(shared));
    tasks
}

/// A running gateway.
pub struct Edge {
    pub shared: Arc<Shared>,
    listeners: Vec<(String, SocketAddr)>,
    admin_addr: Option<SocketAddr>,
    workers: Vec<std::thread::JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    health: Mutex<Vec<JoinHandle<()>>>,
}

impl Edge {
    /// Binds every listener and starts the workers. Call inside the control runtime:
    /// health checks and the admin listener are spawned on it.
    pub async fn start(config: Config) -> Result<Edge, String> {
        let workers = config.global.workers.max(1);
        // One shard per worker for the per-request metrics, one for every other thread.
        let registry = Arc::new(
            Registry::with_shards(workers + 1)
                .with_latency_bounds(config.watch.latency_buckets.clone()),
        );
        headroom_telemetry::process::register(&registry);
        let access_log = AccessLog::start(
            log_destination(&config),
            registry.counter(
                "headroom_access_log_dropped_total",
                "Access log lines dropped because the log sink was full (its queue) or failing.",
                &[],
            ),
        )
        .map_err(|e| e.to_string())?;
        let live = Live::new(registry.clone(), workers);
        let snap = Snapshot::build(&config, &live, 1);
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snap),
            live,
            inflight: registry.up_down_counter(
                "headroom_inflight_requests",
                "Requests being served.",
                &[],
            ),
            access_log,
            tracer: headroom_telemetry::trace::Tracer::new(
                config.watch.tracing.as_ref().map_or(2048, |t| t.queue),
                &registry,
            ),
            tunnels: registry.gauge(
                "headroom_tunnels_open",
                "Client connections upgraded (WebSocket) and tunnelled to a replica.",
                &[],
            ),
            unrouted: snapshot::Red::new_unrouted(&registry),
            unrouted_latency: registry.histogram(
                "headroom_request_duration_seconds",
                "Time from receiving a request to the end of its response, by route.",
                &[("route", "")],
            ),
            reloads_ok: registry.counter(
                "headroom_config_reloads_total",
                "Config reloads, by result.",
                &[("result", "ok")],
            ),
            reloads_failed: registry.counter(
                "headroom_config_reloads_total",
                "Config reloads, by result.",
                &[("result", "rejected")],
            ),
            registry,
            config: ArcSwap::from_pointee(config.clone()),
            generation: AtomicU64::new(1),
            rebuilding: Mutex::new(()),
            watch_status: Default::default(),
            watch_charts: Default::default(),
            scale_status: Default::default(),
            health_kick: tokio::sync::Notify::new(),
        });

        let bound = config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| listener::bind(i, l, workers, &shared))
            .collect::<Result<Vec<_>, _>>()?;
        let listeners = bound.iter().map(|b| (b.cfg.name.clone(), b.addr)).collect();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);

        let admin_addr = match &config.admin {
            Some(a) => {
                let l = admin::bind(a).await?;
                let addr = l.local_addr().ok();
                tokio::spawn(admin::serve(l, shared.clone(), shutdown_rx.clone()));
                addr
            }
            None => None,
        };

        let mut per_worker: Vec<Vec<WorkerListener>> = (0..workers).map(|_| Vec::new()).collect();
        for b in bound {
            for (w, socket) in b.sockets.into_iter().enumerate() {
                per_worker[w].push(WorkerListener {
                    index: b.index,
                    cfg: b.cfg.clone(),
                    socket,
                    tls: b.tls.clone(),
                    limit: b.limit.clone(),
                    open: b.open.clone(),
                });
            }
        }
        let mut threads = Vec::new();
        for (w, ls) in per_worker.into_iter().enumerate() {
            let (shared, mut shutdown) = (shared.clone(), shutdown_rx.clone());
            let t = std::thread::Builder::new()
                .name(format!("headroom-worker-{w}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start a worker runtime");
                            return;
                        }
                    };
                    pool::set_worker(w);
                    headroom_telemetry::set_worker(w);
                    access_log::attach(&shared.access_log);
                    rt.block_on(async move {
                        let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
                        for l in ls {
                            tokio::spawn(listener::accept_loop(
                                l,
                                shared.clone(),
                                shutdown.clone(),
                                drain_tx.clone(),
                            ));
                        }
                        drop(drain_tx);
                        tokio::spawn(async {
                            let mut t = tokio::time::interval(Duration::from_millis(100));
                            loop {
                                t.tick().await;
                                access_log::flush_thread();
                            }
                        });
                        while !*shutdown.borrow_and_update() {
                            if shutdown.changed().await.is_err() {
                                break;
                            }
                        }
                        // Every connection holds a drain sender: recv() ends when the last closes.
                        // Read now: a reload may have changed it.
                        let shutdown_timeout = shared.config.load().global.shutdown_timeout;
                        let _ = tokio::time::timeout(shutdown_timeout, drain_rx.recv()).await;
                        access_log::flush_thread();
                    });
                })
                .map_err(|e| format!("cannot start worker thread: {e}"))?;
            threads.push(t);
        }

        let edge = Edge {
            health: Mutex::new(control_tasks(&shared)),
            shared,
            listeners,
            admin_addr,
            workers: threads,
            shutdown: shutdown_tx,
        };
        Ok(edge)
    }

    /// Listener names and the addresses they are bound to.
    pub fn listener_addrs(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Swaps in a new config. In-flight requests finish on the snapshot they started with;
    /// replica health, latency and pools carry over for replicas that stay. Listener changes
    /// need a restart: such a config is rejected and the running one stays.
    pub fn reload(&self, config: Config) -> Result<u64, String> {
        let current = self.shared.config.load_full();
        if let Some(reason) = needs_restart(&current, &config) {
            self.shared.reloads_failed.inc();
            return Err(format!("{reason}: restart headroom to apply it (routes, services and the rest reload live); the running config stays"));
        }
        let bad_keys = headroom_guard::check(&config.jwt);
        if !bad_keys.is_empty() {
            self.shared.reloads_failed.inc();
            return Err(format!("{}; the running config stays", bad_keys.join("; ")));
        }
        let log_to = log_destination(&config);
        if log_to != self.shared.access_log.destination() {
            if let Err(e) = self.shared.access_log.retarget(log_to) {
                tracing::warn!("{e}; the access log stays where it was");
            }
        }
        let generation = {
            let _serial = self.shared.rebuild_lock();
            for (service, n) in self.shared.live.reconcile_membership(&config) {
                info!(
                    service,
                    replicas = n,
                    "reload keeps the replicas added at runtime"
                );
            }
            self.shared.config.store(Arc::new(config));
            self.shared.rebuild_locked()
        };
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        for t in health.drain(..) {
            t.abort();
        }
        *health = control_tasks(&self.shared);
        self.shared.reloads_ok.inc();
        Ok(generation)
    }

    /// Counts a reload that failed validation (the running config stays).
    pub fn reload_rejected(&self) {
        self.shared.reloads_failed.inc();
    }

    /// Stops accepting, lets in-flight requests finish (up to `global.shutdown_timeout`),
    /// and returns when every worker has stopped. Blocks: call from a blocking context.
    pub fn shutdown_and_wait(self) {
        let _ = self.shutdown.send(true);
        for t in self
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
        for w in self.workers {
            let _ = w.join();
        }
        access_log::flush_thread();
        // What the workers queued is written before we return; a stalled sink (a pipe
        // nobody reads) must not hold the exit forever.
        if !self.shared.access_log.flush(ACCESS_LOG_FLUSH_LIMIT) {
            tracing::warn!(
                "access log: {} did not take the last lines within {ACCESS_LOG_FLUSH_LIMIT:?}; they are lost",
                self.shared.access_log.destination()
            );
        }
    }
}

/// How long shutdown waits for the access log's queue to be written.
const ACCESS_LOG_FLUSH_LIMIT: Duration = Duration::from_secs(5);

fn log_destination(config: &Config) -> Destination {
    match &config.global.access_log_path {
        Some(p) => Destination::File(p.clone()),
        None => Destination::Stdout,
    }
}
