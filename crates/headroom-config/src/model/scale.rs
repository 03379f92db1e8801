//! `[service.NAME.autoscale]`: the autoscaler of one service, as serde reads it.

use crate::units::{Dur, Ratio, Share, Size};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// `[service.NAME.autoscale]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    /// Default 1.
    pub min: Option<Spanned<u32>>,
    pub max: Spanned<u32>,
    /// "hpa" (Kubernetes' HPA, the default) or "requests" (Knative's KPA on in-flight
    /// requests).
    pub mode: Option<Spanned<String>>,
    /// In-flight requests per replica.
    pub inflight: Option<Spanned<f64>>,
    /// Requests per second per replica (hpa).
    pub rps: Option<Spanned<f64>>,
    /// The service's p95 latency (hpa).
    pub latency_p95: Option<Spanned<Dur>>,
    /// Each replica process's CPU, as a share of one core (hpa): "70%" ("150%": one and a
    /// half cores).
    pub cpu: Option<Spanned<Ratio>>,
    /// A queue's length per replica (hpa): a Redis list, stream, or consumer group's lag.
    pub queue: Option<Spanned<Queue>>,
    /// An external metric (hpa): a PromQL query's value per replica, over Prometheus'
    /// HTTP API.
    pub prometheus: Option<Spanned<Prometheus>>,
    /// How often the HPA decides. Default 15s.
    pub interval: Option<Spanned<Dur>>,
    /// Default 10%.
    pub tolerance: Option<Spanned<Share>>,
    pub scale_up: Option<Spanned<Rules>>,
    pub scale_down: Option<Spanned<Rules>>,
    /// requests mode: the share of `inflight` aimed at. Default 70%.
    pub utilization: Option<Spanned<Share>>,
    /// Default 60s.
    pub stable_window: Option<Spanned<Dur>>,
    /// A share of the stable window. Default 10%.
    pub panic_window: Option<Spanned<Share>>,
    /// Default 200%.
    pub panic_threshold: Option<Spanned<Ratio>>,
    /// Default 0s.
    pub scale_down_delay: Option<Spanned<Dur>>,
    /// Default 1000.
    pub max_scale_up_rate: Option<Spanned<f64>>,
    /// Default 2.
    pub max_scale_down_rate: Option<Spanned<f64>>,
    /// With `min = 0`: how long a request waits for the first replica. Default 30s.
    pub cold_start_timeout: Option<Spanned<Dur>>,
    /// With `min = 0`: requests held at most while it starts. Default 1000.
    pub cold_start_queue: Option<u32>,
    /// With `min = 0`: the last replica stops after this long without a request. Default 30s.
    pub idle: Option<Spanned<Dur>>,
    /// `[[service.NAME.autoscale.schedule]]`: busy hours with a higher `min`.
    #[serde(default)]
    pub schedule: Vec<Spanned<Schedule>>,
    /// The replicas as local processes.
    pub process: Option<Spanned<Process>>,
    /// The replicas as a Kubernetes Deployment's or StatefulSet's pods.
    pub kubernetes: Option<Spanned<Kubernetes>>,
}

/// `[service.NAME.autoscale.kubernetes]`: the workload scaled through its scale subresource,
/// its pods found in the EndpointSlices of a Service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kubernetes {
    pub deployment: Option<Spanned<String>>,
    pub statefulset: Option<Spanned<String>>,
    /// Default: the kubeconfig context's namespace, or the pod's own in the cluster.
    pub namespace: Option<Spanned<String>>,
    /// The Service whose EndpointSlices list the pods. Default: the workload's name.
    pub service: Option<Spanned<String>>,
    /// The EndpointSlice port, by name ("http") or number. Default: the slice's only port.
    pub port: Option<Spanned<PortRef>>,
    /// Default: `$KUBECONFIG` or `~/.kube/config`, else the in-cluster service account.
    pub kubeconfig: Option<Spanned<String>>,
    /// A kubeconfig context other than its current one.
    pub context: Option<Spanned<String>>,
    /// Each call to the API server. Default 5s.
    pub timeout: Option<Spanned<Dur>>,
    /// Several headroom instances in front of the workload: one scales it (a Lease), on
    /// the load all of them report. Default false.
    pub leader_election: Option<bool>,
    /// The leadership Lease's duration. Default 15s.
    pub lease: Option<Spanned<Dur>>,
}

/// A port by name or number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    Number(i64),
    Name(String),
}

/// `[service.NAME.autoscale.queue]`: KEDA's Redis scalers, and its RabbitMQ scaler over the
/// management HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    /// `redis://host:port[/db]`; or `cluster`.
    pub redis: Option<Spanned<String>>,
    /// RabbitMQ's management API, `http://user:password@host:15672`, with `queue` (and
    /// `vhost`, default "/").
    pub rabbitmq: Option<Spanned<String>>,
    pub queue: Option<Spanned<String>>,
    pub vhost: Option<Spanned<String>>,
    #[serde(default)]
    pub cluster: Vec<Spanned<String>>,
    /// `LLEN` of this list.
    pub list: Option<Spanned<String>>,
    /// `XLEN` of this stream; with `group`, the group's lag (entries not yet delivered).
    pub stream: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    /// Items one replica should have waiting.
    pub per_replica: Spanned<f64>,
}

/// `[service.NAME.autoscale.prometheus]`: KEDA's Prometheus scaler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prometheus {
    /// The server, `http://127.0.0.1:9090` (its `/api/v1/query` is asked).
    pub url: Spanned<String>,
    /// PromQL giving one number (one series, or a scalar).
    pub query: Spanned<String>,
    /// The query's value one replica should carry.
    pub per_replica: Spanned<f64>,
    /// The whole exchange. Default 2s.
    pub timeout: Option<Spanned<Dur>>,
}

/// `[[service.NAME.autoscale.schedule]]`, as KEDA's cron scaler: from each `start` to the
/// next `end`, at least `min` replicas.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub start: Spanned<String>,
    pub end: Spanned<String>,
    pub min: u32,
    /// "+02:00", "-05:30"; default "UTC".
    pub utc_offset: Option<Spanned<String>>,
}

/// `scale_up` / `scale_down`: the HPA's `behavior` of one direction.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub stabilization: Option<Dur>,
    pub policies: Option<Vec<Spanned<PolicySpec>>>,
    /// "max" (default), "min" or "disabled".
    pub select: Option<Spanned<String>>,
}

/// `{ pods = 4, period = "15s" }` or `{ percent = 100, period = "15s" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub pods: Option<u32>,
    pub percent: Option<u32>,
    pub period: Dur,
}

/// `[service.NAME.autoscale.process]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// argv, with `{port}`, `{index}` and `{service}` substituted.
    pub command: Spanned<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Relative to the config file's directory. Default: that directory.
    pub cwd: Option<String>,
    /// Default 127.0.0.1.
    pub host: Option<Spanned<String>>,
    /// SIGTERM to SIGKILL. Default 10s.
    pub grace: Option<Dur>,
    /// Spawn to listening. Default 30s.
    pub startup_timeout: Option<Dur>,
    /// Relative to the config file's directory. Default: output discarded.
    pub log_dir: Option<String>,
    /// Default 10MiB.
    pub log_max: Option<Size>,
}

/// The map of environment variables, for the typed config.
pub type Env = BTreeMap<String, String>;
