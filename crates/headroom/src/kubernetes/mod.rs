//! The autoscaler's `kubernetes` driver: a Deployment or StatefulSet scaled through its
//! `scale` subresource, its pods found in the EndpointSlices of a Service.
//!
//! - **Replicas** are the ready endpoints (`conditions.ready`, absent meaning ready, as the
//!   API documents) of the slices labelled `kubernetes.io/service-name = SERVICE`, watched
//!   with kube's runtime watcher: a list, then a watch from its `resourceVersion` with
//!   bookmarks, a fresh list after `410 Gone`, back-off on errors. A ready endpoint joins the
//!   headroom service; one that stops being ready (terminating, failing its readiness probe)
//!   or vanishes is drained (no new requests, in-flight ones finish). While the API server
//!   cannot be reached, the last set stays.
//! - **Scaling** reads the scale subresource before each decision (the count it is judged on
//!   is `spec.replicas`: what the workload was asked for) and, when the decision differs,
//!   patches `spec.replicas` with the `resourceVersion` it read: if someone else scaled the
//!   workload since (`kubectl scale`, another autoscaler), the API server answers 409 and the
//!   controller reads again instead of overwriting them. A call that fails (403, 500, a
//!   timeout) is logged once per streak and counted; nothing is decided on a scale it could
//!   not read.
//! - **CPU** (`cpu = "70%"`) is the pods' usage from the metrics API (`metrics.k8s.io`, as
//!   metrics-server serves it), in cores per pod, like the process driver's.
//! - headroom exiting leaves the workload as it is.

pub mod election;

use election::{Election, Others, Standing};
use headroom_config::scale::{KubernetesConfig, Port, Workload as WorkloadName};
use headroom_edge::replica_set::Source;
use headroom_edge::Shared;
use headroom_telemetry::Counter;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How long a pod that stopped being ready may finish its requests (its own
/// `terminationGracePeriodSeconds` defaults to 30 s too).
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// A client that could not be made (no kubeconfig, no service account) is tried again this
/// often.
const RECONNECT: Duration = Duration::from_secs(10);
/// A scale patch that failed is not tried again before this.
const RETRY: Duration = Duration::from_secs(5);

/// One endpoint of the Service, as the slices say.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Pod {
    /// `targetRef.name`, or the address when the slice names no pod.
    pub name: String,
    pub addr: SocketAddr,
    pub ready: bool,
    pub terminating: bool,
}

/// The workload's scale subresource, as last read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScaleState {
    /// `spec.replicas`: the count asked for.
    pub spec: u32,
    /// `status.replicas`: the pods there are.
    pub status: u32,
    #[serde(skip)]
    resource_version: Option<String>,
    /// `status.selector`: the workload's pods, for the metrics API.
    #[serde(skip)]
    selector: Option<String>,
    #[serde(skip)]
    read_at: tokio::time::Instant,
}

/// The workload's API, whichever kind it is.
#[derive(Clone)]
enum Scaler {
    Deployment(Api<Deployment>),
    StatefulSet(Api<StatefulSet>),
}

impl Scaler {
    async fn get(&self, name: &str) -> kube::Result<Scale> {
        match self {
            Scaler::Deployment(a) => a.get_scale(name).await,
            Scaler::StatefulSet(a) => a.get_scale(name).await,
        }
    }

    async fn patch(&self, name: &str, body: serde_json::Value) -> kube::Result<Scale> {
        let (pp, patch) = (PatchParams::default(), Patch::Merge(body));
        match self {
            Scaler::Deployment(a) => a.patch_scale(name, &pp, &patch).await,
            Scaler::StatefulSet(a) => a.patch_scale(name, &pp, &patch).await,
        }
    }
}

struct Conn {
    client: kube::Client,
    namespace: String,
    scaler: Scaler,
    watcher: JoinHandle<()>,
    election: Option<Election>,
}

/// This instance's name among several: `$POD_NAME` (the downward API), else the host's
/// name and the process id.
fn identity() -> String {
    if let Some(p) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return p;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "headroom".into());
    format!("{host}-{}", std::process::id())
}

/// A call's failure in words: the API server's status (code, reason, message) when it
/// answered, with what to do about a 403.
fn describe(call: &str, cfg: &KubernetesConfig, namespace: &str, e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "{call}: 403 Forbidden ({}): headroom's service account needs get and patch on {}/scale in namespace {namespace}, and list and watch on endpointslices",
            s.message,
            cfg.workload.plural()
        ),
        kube::Error::Api(s) => format!("{call}: {} {} ({})", s.code, s.reason, s.message),
        // The causes too: "client error (SendRequest)" alone hides a timeout or a refusal.
        other => {
            let mut out = format!("{call}: {other}");
            let mut cause = std::error::Error::source(other);
            while let Some(c) = cause {
                let c_text = c.to_string();
                if !out.contains(&c_text) {
                    out.push_str(": ");
                    out.push_str(&c_text);
                }
                cause = c.source();
            }
            out
        }
    }
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// The driver of one service.
pub struct Fleet {
    cfg: KubernetesConfig,
    service: String,
    shared: Arc<Shared>,
    conn: Option<Conn>,
    next_connect: tokio::time::Instant,
    pub scale: Option<ScaleState>,
    /// The last call's failure, until one succeeds.
    pub error: Option<String>,
    /// The calls failing now, with why.
    failing: BTreeMap<&'static str, String>,
    /// `None` until the watch's first list is in.
    pods: watch::Receiver<Option<Vec<Pod>>>,
    pods_tx: watch::Sender<Option<Vec<Pod>>>,
    retry_at: Option<tokio::time::Instant>,
    overridden: Option<u32>,
    errors: Arc<Counter>,
    conflicts: Arc<Counter>,
}

impl Fleet {
    pub fn new(shared: Arc<Shared>, service: &str, cfg: KubernetesConfig) -> Fleet {
        let (pods_tx, pods) = watch::channel(None);
        let errors = shared.registry.counter(
            "headroom_kubernetes_errors_total",
            "Calls of the kubernetes driver to the API server that failed (the scale read or patch, the EndpointSlice watch, the metrics API).",
            &[("service", service)],
        );
        let conflicts = shared.registry.counter(
            "headroom_kubernetes_scale_conflicts_total",
            "Scale patches refused with 409 because the workload was scaled by someone else since it was read.",
            &[("service", service)],
        );
        Fleet {
            cfg,
            service: service.to_string(),
            shared,
            conn: None,
            next_connect: tokio::time::Instant::now(),
            scale: None,
            error: None,
            failing: BTreeMap::new(),
            pods,
            pods_tx,
            retry_at: None,
            overridden: None,
            errors,
            conflicts,
        }
    }

    pub fn config(&self) -> &KubernetesConfig {
        &self.cfg
    }

    /// The Service's endpoints, as the watch last saw them.
    pub fn pods(&self) -> Vec<Pod> {
        self.pods.borrow().clone().unwrap_or_default()
    }

    /// Whether the watch has listed the Service's EndpointSlices: before that, the pods
    /// that take traffic are unknown and nothing is decided.
    pub fn synced(&self) -> bool {
        self.pods.borrow().is_some()
    }

    /// A workload scaled by someone else since it was read (409): the count it asks for
    /// now, once.
    pub fn take_overridden(&mut self) -> Option<u32> {
        self.overridden.take()
    }

    /// A call failed: logged once per streak of that call, counted, and shown in `/status`.
    fn fail(&mut self, call: &'static str, what: String) {
        self.errors.inc();
        if self.failing.get(call) != Some(&what) {
            warn!(service = %self.service, "kubernetes: {what}");
        }
        self.failing.insert(call, what.clone());
        self.error = Some(what);
    }

    fn recovered(&mut self, call: &'static str) {
        if self.failing.remove(call).is_some() {
            info!(service = %self.service, call, "kubernetes: the API server answers again");
        }
        if self.failing.is_empty() {
            self.error = None;
        }
    }

    /// The client, made on first use (and again after a failure, every `RECONNECT`).
    async fn connect(&mut self) -> Option<&Conn> {
        if self.conn.is_none() && tokio::time::Instant::now() >= self.next_connect {
            match self.make_client().await {
                Ok(conn) => {
                    info!(service = %self.service, namespace = %conn.namespace, workload = %format!("{}/{}", self.cfg.workload.plural(), self.cfg.workload.name()), "kubernetes driver connected");
                    self.conn = Some(conn);
                }
                Err(e) => {
                    self.next_connect = tokio::time::Instant::now() + RECONNECT;
                    self.fail("connect", e);
                }
            }
        }
        self.conn.as_ref()
    }

    async fn make_client(&self) -> Result<Conn, String> {
        let mut config = match &self.cfg.kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
                let options = kube::config::KubeConfigOptions {
                    context: self.cfg.context.clone(),
                    ..Default::default()
                };
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
            }
            None if self.cfg.context.is_some() => {
                let options = kube::config::KubeConfigOptions {
                    context: self.cfg.context.clone(),
                    ..Default::default()
                };
                kube::Config::from_kubeconfig(&options)
                    .await
                    .map_err(|e| format!("kubeconfig: {e}"))?
            }
            None => kube::Config::infer().await.map_err(|e| {
                format!("no cluster to talk to (neither $KUBECONFIG, ~/.kube/config nor an in-cluster service account): {e}")
            })?,
        };
        config.connect_timeout = Some(self.cfg.timeout);
        config.write_timeout = Some(self.cfg.timeout);
        // A watch is quiet for as long as nothing changes: its client reads with kube's own
        // 295 s (above the 290 s the server is asked to end it at), not `timeout`, or every
        // quiet watch would be cut and made again.
        let mut watch_config = config.clone();
        watch_config.read_timeout = Some(Duration::from_secs(295));
        config.read_timeout = Some(self.cfg.timeout);
        let namespace = self
            .cfg
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).map_err(|e| format!("client: {e}"))?;
        let watch_client =
            kube::Client::try_from(watch_config).map_err(|e| format!("client: {e}"))?;
        let scaler = match &self.cfg.workload {
            WorkloadName::Deployment(_) => {
                Scaler::Deployment(Api::namespaced(client.clone(), &namespace))
            }
            WorkloadName::StatefulSet(_) => {
                Scaler::StatefulSet(Api::namespaced(client.clone(), &namespace))
            }
        };
        let election = self.cfg.election.map(|lease| {
            Election::new(
                Api::namespaced(client.clone(), &namespace),
                self.cfg.workload.name(),
                identity(),
                lease,
            )
        });
        let slices: Api<EndpointSlice> = Api::namespaced(watch_client, &namespace);
        let watcher = tokio::spawn(watch_endpoints(
            self.shared.clone(),
            self.service.clone(),
            self.cfg.clone(),
            slices,
            self.pods_tx.clone(),
            self.errors.clone(),
        ));
        Ok(Conn {
            client,
            namespace,
            scaler,
            watcher,
            election,
        })
    }

    fn scale_from(s: &Scale) -> ScaleState {
        ScaleState {
            spec: s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0).max(0) as u32,
            status: s.status.as_ref().map_or(0, |s| s.replicas.max(0) as u32),
            resource_version: s.metadata.resource_version.clone(),
            selector: s.status.as_ref().and_then(|s| s.selector.clone()),
            read_at: tokio::time::Instant::now(),
        }
    }

    /// With `leader_election`: reports this instance's load, contends for the Lease, and as
    /// leader returns the other instances' load. `None` without leader election.
    pub async fn coordinate(&mut self, inflight: f64, rps: f64) -> Option<Others> {
        self.cfg.election?;
        self.connect().await?;
        let result = self
            .conn
            .as_mut()?
            .election
            .as_mut()?
            .step(inflight, rps)
            .await;
        match result {
            Ok(()) => self.recovered("lease"),
            Err(e) => self.fail("lease", e),
        }
        self.standing().map(|s| s.others)
    }

    /// Whether this instance may scale the workload: always, without leader election.
    pub fn may_scale(&self) -> bool {
        self.cfg.election.is_none()
            || self
                .conn
                .as_ref()
                .and_then(|c| c.election.as_ref())
                .is_some_and(Election::leading)
    }

    pub fn standing(&self) -> Option<&Standing> {
        Some(&self.conn.as_ref()?.election.as_ref()?.standing)
    }

    /// Reads the scale again if the last read is older than `age` (or there is none).
    pub async fn refresh_if_older(&mut self, age: Duration) {
        if self
            .scale
            .as_ref()
            .is_none_or(|s| s.read_at.elapsed() >= age)
        {
            self.refresh().await;
        }
    }

    /// Reads the scale subresource; `None` (and the reason logged) when it cannot be read.
    pub async fn refresh(&mut self) -> Option<&ScaleState> {
        let name = self.cfg.workload.name().to_string();
        let (scaler, namespace) = {
            let c = self.connect().await?;
            (c.scaler.clone(), c.namespace.clone())
        };
        match scaler.get(&name).await {
            Ok(s) => {
                self.scale = Some(Self::scale_from(&s));
                self.recovered("connect");
                self.recovered("get");
                self.scale.as_ref()
            }
            Err(e) => {
                let what = describe(
                    &format!("GET {}/{name}/scale", self.cfg.workload.plural()),
                    &self.cfg,
                    &namespace,
                    &e,
                );
                self.fail("get", what);
                None
            }
        }
    }

    /// Asks the workload for `replicas`, guarded by the `resourceVersion` of a read at most a
    /// second old: a 409 with `spec.replicas` unchanged (the status moved) is tried once
    /// more; with `spec.replicas` changed, someone else scaled it, and the next decision
    /// judges from there. After a failure, no patch for `RETRY`. Returns the count the
    /// workload now asks for, if the API server took it.
    pub async fn scale_to(&mut self, replicas: u32) -> Option<u32> {
        let now = tokio::time::Instant::now();
        if self.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        if self
            .scale
            .as_ref()
            .is_none_or(|s| s.read_at + Duration::from_secs(1) < now)
        {
            self.refresh().await?;
        }
        let name = self.cfg.workload.name().to_string();
        for _attempt in 0..2 {
            let read = self.scale.clone()?;
            if read.spec == replicas {
                return Some(replicas);
            }
            // Leadership may have lapsed during the reads before (each up to `timeout`).
            if !self.may_scale() {
                return None;
            }
            let mut body = serde_json::json!({ "spec": { "replicas": replicas } });
            if let Some(rv) = &read.resource_version {
                body["metadata"] = serde_json::json!({ "resourceVersion": rv });
            }
            let (scaler, namespace) = {
                let c = self.connect().await?;
                (c.scaler.clone(), c.namespace.clone())
            };
            match scaler.patch(&name, body).await {
                Ok(s) => {
                    self.scale = Some(Self::scale_from(&s));
                    self.retry_at = None;
                    self.recovered("patch");
                    info!(service = %self.service, from = read.spec, to = replicas, "kubernetes: {}/{name} scaled", self.cfg.workload.plural());
                    return Some(replicas);
                }
                Err(e) if status_code(&e) == Some(409) => {
                    self.conflicts.inc();
                    let now = self.refresh().await?.spec;
                    if now != read.spec {
                        self.overridden = Some(now);
                        info!(service = %self.service, from = read.spec, to = now, "kubernetes: {}/{name} was scaled by someone else since it was read: judged again from {now} at the next decision", self.cfg.workload.plural());
                        return None;
                    }
                    // Only its status changed: the same decision, on the new version.
                }
                Err(e) => {
                    let what = describe(
                        &format!("PATCH {}/{name}/scale", self.cfg.workload.plural()),
                        &self.cfg,
                        &namespace,
                        &e,
                    );
                    self.fail("patch", what);
                    self.retry_at = Some(tokio::time::Instant::now() + RETRY);
                    return None;
                }
            }
        }
        None
    }

    /// Cores used by each of the workload's pods, from the metrics API (metrics-server).
    pub async fn cpu(&mut self) -> Option<HashMap<String, f64>> {
        let selector = self.scale.as_ref()?.selector.clone()?;
        let (client, namespace) = {
            let c = self.connect().await?;
            (c.client.clone(), c.namespace.clone())
        };
        let path = format!(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods?labelSelector={}",
            headroom_config::scale::percent_encode(&selector)
        );
        let req = http::Request::get(&path)
            .body(Vec::new())
            .map_err(|e| self.fail("metrics", format!("metrics API: {e}")))
            .ok()?;
        match client.request::<serde_json::Value>(req).await {
            Ok(list) => match pod_cores(&list) {
                Ok(m) => {
                    self.recovered("metrics");
                    Some(m)
                }
                Err(e) => {
                    self.fail("metrics", format!("metrics API: {e}"));
                    None
                }
            },
            Err(e) => {
                let what = describe("GET metrics.k8s.io pods", &self.cfg, &namespace, &e);
                self.fail("metrics", what);
                None
            }
        }
    }

    /// Connects (and starts the watch) if it has not yet.
    pub async fn ensure_connected(&mut self) {
        self.connect().await;
    }

    /// Stops watching, gives up the Leases (a rollout's next leader need not wait out
    /// `lease`) and takes the pods out of the service; the workload stays as it is.
    pub async fn shutdown(&mut self) {
        if let Some(mut c) = self.conn.take() {
            c.watcher.abort();
            if let Some(e) = &mut c.election {
                e.release().await;
            }
        }
        for addr in self.shared.replicas_from(&self.service, Source::Kubernetes) {
            let _ = self.shared.remove_replica(&self.service, &addr.to_string());
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(c) = &self.conn {
            c.watcher.abort();
        }
    }
}

/// A Kubernetes CPU quantity in cores: "250m", "123456789n", "1", "1.5".
pub fn cores(q: &str) -> Option<f64> {
    let (num, scale) = match q.as_bytes().last()? {
        b'n' => (&q[..q.len() - 1], 1e-9),
        b'u' => (&q[..q.len() - 1], 1e-6),
        b'm' => (&q[..q.len() - 1], 1e-3),
        b'k' => (&q[..q.len() - 1], 1e3),
        _ => (q, 1.0),
    };
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v * scale)
}

/// A `PodMetricsList`'s cores per pod (the sum of its containers'). A pod with a container
/// whose usage cannot be read is left out: its reading is missing, not low.
fn pod_cores(list: &serde_json::Value) -> Result<HashMap<String, f64>, String> {
    let items = list["items"]
        .as_array()
        .ok_or("not a PodMetricsList (no items)")?;
    let mut out = HashMap::new();
    for item in items {
        let Some(name) = item["metadata"]["name"].as_str() else {
            continue;
        };
        let sum: Option<f64> = item["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["usage"]["cpu"].as_str().and_then(cores))
            .sum();
        if let Some(sum) = sum {
            out.insert(name.to_string(), sum);
        }
    }
    Ok(out)
}

/// The endpoints of the slices, at the configured port. A slice whose port cannot be told
/// is skipped, and the reason returned (once per slice).
pub fn endpoints<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port: Option<&Port>,
    skipped: &mut Vec<String>,
) -> Vec<Pod> {
    let mut out = Vec::new();
    for slice in slices {
        let slice_name = slice.metadata.name.as_deref().unwrap_or("?");
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            skipped.push(format!(
                "EndpointSlice {slice_name}: addressType {} is not an IP",
                slice.address_type
            ));
            continue;
        }
        let ports = slice.ports.as_deref().unwrap_or_default();
        let number = match port {
            Some(Port::Number(n)) => Some(i32::from(*n)),
            Some(Port::Name(want)) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(want.as_str()))
                .and_then(|p| p.port),
            None if ports.len() == 1 => ports[0].port,
            None => None,
        }
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0);
        let Some(number) = number else {
            let names: Vec<String> = ports
                .iter()
                .map(|p| match (&p.name, p.port) {
                    (Some(n), Some(num)) if !n.is_empty() => format!("{n} ({num})"),
                    (_, Some(num)) => num.to_string(),
                    _ => "?".into(),
                })
                .collect();
            skipped.push(match port {
                Some(Port::Name(n)) => format!(
                    "EndpointSlice {slice_name}: no port named {n:?} (it has {})",
                    names.join(", ")
                ),
                _ => format!(
                    "EndpointSlice {slice_name}: ports [{}]: set port = \"NAME\" in [..autoscale.kubernetes] to say which",
                    names.join(", ")
                ),
            });
            continue;
        };
        for e in slice.endpoints.as_deref().unwrap_or_default() {
            let Some(ip) = e.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            let addr = SocketAddr::new(ip, number);
            let conditions = e.conditions.as_ref();
            out.push(Pod {
                name: e
                    .target_ref
                    .as_ref()
                    .and_then(|r| r.name.clone())
                    .unwrap_or_else(|| addr.to_string()),
                addr,
                // "nil should be interpreted as true" (EndpointConditions in the API).
                ready: conditions.and_then(|c| c.ready).unwrap_or(true),
                terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.addr.cmp(&b.addr)));
    out
}

/// Follows the Service's EndpointSlices and keeps the headroom service's replicas to their
/// ready endpoints.
async fn watch_endpoints(
    shared: Arc<Shared>,
    service: String,
    cfg: KubernetesConfig,
    api: Api<EndpointSlice>,
    tx: watch::Sender<Option<Vec<Pod>>>,
    errors: Arc<Counter>,
) {
    use futures_util::StreamExt;
    let selector = format!("kubernetes.io/service-name={}", cfg.service);
    let stream =
        watcher::watcher(api, watcher::Config::default().labels(&selector)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, EndpointSlice>> = None;
    let mut failing: Option<String> = None;
    let mut said: HashSet<String> = HashSet::new();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                errors.inc();
                let what = format!("EndpointSlice watch ({selector}): {e}");
                if failing.as_ref() != Some(&what) {
                    warn!(service = %service, "kubernetes: {what}; the last endpoints stay");
                    failing = Some(what);
                }
                continue;
            }
        };
        if failing.take().is_some() {
            info!(service = %service, "kubernetes: the EndpointSlice watch is back");
        }
        let key = |s: &EndpointSlice| s.metadata.name.clone().unwrap_or_default();
        match event {
            Event::Init => {
                listing = Some(BTreeMap::new());
                continue;
            }
            Event::InitApply(s) => {
                listing.get_or_insert_with(BTreeMap::new).insert(key(&s), s);
                continue;
            }
            Event::InitDone => slices = listing.take().unwrap_or_default(),
            Event::Apply(s) => {
                slices.insert(key(&s), s);
            }
            Event::Delete(s) => {
                slices.remove(&key(&s));
            }
        }
        let mut skipped = Vec::new();
        let pods = endpoints(slices.values(), cfg.port.as_ref(), &mut skipped);
        // Said once while it lasts (bounded: slices' names are generated).
        if skipped.is_empty() || said.len() > 100 {
            said.clear();
        }
        for s in skipped {
            if said.insert(s.clone()) {
                warn!(service = %service, "kubernetes: {s}");
            }
        }
        apply(&shared, &service, &pods);
        tx.send_replace(Some(pods));
    }
}

/// Ready endpoints in, the others drained.
fn apply(shared: &Arc<Shared>, service: &str, pods: &[Pod]) {
    let ready: HashSet<SocketAddr> = pods.iter().filter(|p| p.ready).map(|p| p.addr).collect();
    let present: HashSet<SocketAddr> = shared
        .replicas_from(service, Source::Kubernetes)
        .into_iter()
        .collect();
    for addr in ready.difference(&present) {
        match shared.add_replica(service, *addr, 1, Source::Kubernetes) {
            Ok(()) => info!(service, %addr, "kubernetes: pod ready, in the service"),
            Err(headroom_edge::replica_set::ReplicaError::Exists(_)) => {}
            Err(e) => warn!(service, %addr, "kubernetes: pod not added: {e}"),
        }
    }
    for addr in present.difference(&ready) {
        info!(service, %addr, "kubernetes: pod not ready or gone: draining it");
        let _ = shared.spawn_drain(service, &addr.to_string(), DRAIN_DEADLINE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(json: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json).unwrap()
    }

    /// Shapes from the EndpointSlice API reference (discovery.k8s.io/v1).
    #[test]
    fn ready_endpoints_at_the_named_port_and_the_rest_said() {
        let a = slice(serde_json::json!({
            "metadata": {"name": "web-abc"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "web-1"}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "terminating": true}, "targetRef": {"kind": "Pod", "name": "web-2"}},
                {"addresses": ["10.0.0.3"], "targetRef": {"kind": "Pod", "name": "web-3"}}
            ]
        }));
        let mut skipped = Vec::new();
        let pods = endpoints([&a], Some(&Port::Name("http".into())), &mut skipped);
        assert!(skipped.is_empty());
        let got: Vec<(&str, String, bool, bool)> = pods
            .iter()
            .map(|p| (p.name.as_str(), p.addr.to_string(), p.ready, p.terminating))
            .collect();
        assert_eq!(
            got,
            [
                ("web-1", "10.0.0.1:8080".into(), true, false),
                ("web-2", "10.0.0.2:8080".into(), false, true),
                ("web-3", "10.0.0.3:8080".into(), true, false),
            ],
            "no conditions means ready"
        );
        let pods = endpoints([&a], None, &mut skipped);
        assert!(pods.is_empty());
        assert!(
            skipped[0].contains("ports [http (8080), metrics (9090)]: set port"),
            "{skipped:?}"
        );
        let fqdn = slice(serde_json::json!({
            "metadata": {"name": "ext"}, "addressType": "FQDN", "endpoints": []
        }));
        skipped.clear();
        endpoints([&fqdn], None, &mut skipped);
        assert!(skipped[0].contains("addressType FQDN is not an IP"));
    }

    #[test]
    fn cpu_quantities_read_as_cores() {
        assert_eq!(cores("250m"), Some(0.25));
        assert_eq!(cores("1"), Some(1.0));
        assert_eq!(cores("1.5"), Some(1.5));
        assert!((cores("123456789n").unwrap() - 0.123456789).abs() < 1e-12);
        assert!((cores("500u").unwrap() - 0.0005).abs() < 1e-12);
        assert_eq!(cores(""), None);
        assert_eq!(cores("abc"), None);
        assert_eq!(cores("-1"), None);
        // The metrics API's PodMetricsList: containers add up per pod.
        let list = serde_json::json!({"kind": "PodMetricsList", "items": [
            {"metadata": {"name": "web-1"}, "containers": [
                {"name": "app", "usage": {"cpu": "300m", "memory": "10Mi"}},
                {"name": "sidecar", "usage": {"cpu": "50000000n", "memory": "1Mi"}}
            ]}
        ]});
        let m = pod_cores(&list).unwrap();
        assert!((m["web-1"] - 0.35).abs() < 1e-9);
        let partial = serde_json::json!({"items": [{"metadata": {"name": "web-2"}, "containers": [
            {"name": "app", "usage": {"cpu": "300m"}}, {"name": "sidecar", "usage": {}}
        ]}]});
        assert!(pod_cores(&partial).unwrap().is_empty(), "missing, not 300m");
        assert!(pod_cores(&serde_json::json!({"kind": "Status"})).is_err());
    }

    #[test]
    fn label_selectors_are_encoded_for_the_query() {
        assert_eq!(
            headroom_config::scale::percent_encode("app=web,tier!=db"),
            "app%3Dweb%2Ctier%21%3Ddb"
        );
    }
}
