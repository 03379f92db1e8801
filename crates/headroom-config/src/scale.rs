//! The autoscaler's typed config: `[service.NAME.autoscale]`.

pub use headroom_scale::hpa::{HpaConfig, Policy, Rules, Select};
pub use headroom_scale::kpa::KpaConfig;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// One service's autoscaler.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscaleConfig {
    pub min: u32,
    pub max: u32,
    pub algorithm: Algorithm,
    pub targets: Targets,
    /// Who runs the replicas.
    pub driver: DriverConfig,
    /// With `min = 0`: requests finding no replica wait this long for the first one.
    pub cold_start_timeout: Duration,
    /// With `min = 0`: at most this many wait.
    pub cold_start_queue: u32,
    /// With `min = 0`: no request for this long stops the last replica.
    pub idle: Duration,
    /// Busy hours: `min` is at least each active window's replicas.
    pub schedule: Vec<headroom_scale::schedule::Window>,
}

/// How the replica count is decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Algorithm {
    /// Kubernetes' HPA, every `interval`.
    Hpa { hpa: HpaConfig, interval: Duration },
    /// Knative's KPA on the service's in-flight requests (`Targets::inflight`).
    Requests(KpaConfig),
}

/// What the replicas are sized by; the HPA takes the largest of their proposals.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Targets {
    /// In-flight requests per replica.
    pub inflight: Option<f64>,
    /// Requests/s per replica.
    pub rps: Option<f64>,
    pub latency_p95: Option<Duration>,
    /// Per replica process, in cores (0.7: 70% of one).
    pub cpu: Option<f64>,
    pub queue: Option<QueueTarget>,
    pub prometheus: Option<PrometheusTarget>,
}

/// A PromQL query whose value sizes the service: `per_replica` of it each.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusTarget {
    /// `{url}/api/v1/query?query={query}`, encoded.
    pub query_url: String,
    pub query: String,
    pub per_replica: f64,
    pub timeout: Duration,
}

/// A queue whose length sizes the service: `per_replica` items each.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueTarget {
    /// One url; several for a cluster's seeds.
    pub redis: Vec<String>,
    pub cluster: bool,
    pub source: QueueSource,
    pub per_replica: f64,
}

/// What is measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueSource {
    /// `LLEN key`.
    List(String),
    /// `XLEN key`.
    Stream(String),
    /// `XINFO GROUPS key`'s `lag` of the group (Redis 7 or later).
    GroupLag { stream: String, group: String },
    /// A RabbitMQ queue's `messages` (ready and unacknowledged), from
    /// `GET {api}/api/queues/{vhost}/{queue}` of its management plugin (`redis` is empty).
    RabbitMq { queue_url: String },
}

/// The replicas' driver: exactly one of `process` and `kubernetes`.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverConfig {
    Process(ProcessConfig),
    Kubernetes(KubernetesConfig),
}

impl DriverConfig {
    pub fn process(&self) -> Option<&ProcessConfig> {
        match self {
            DriverConfig::Process(p) => Some(p),
            DriverConfig::Kubernetes(_) => None,
        }
    }
}

/// `[service.NAME.autoscale.kubernetes]`.
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesConfig {
    pub workload: Workload,
    /// `None`: the kubeconfig context's (or the in-cluster service account's) namespace.
    pub namespace: Option<String>,
    /// The Service whose EndpointSlices (label `kubernetes.io/service-name`) list the pods.
    pub service: String,
    pub port: Option<Port>,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub timeout: Duration,
    /// `leader_election = true`: the Lease's duration.
    pub election: Option<Duration>,
}

/// The scaled workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    Deployment(String),
    StatefulSet(String),
}

impl Workload {
    pub fn name(&self) -> &str {
        match self {
            Workload::Deployment(n) | Workload::StatefulSet(n) => n,
        }
    }

    /// The resource's plural, as in the API path and in RBAC rules.
    pub fn plural(&self) -> &'static str {
        match self {
            Workload::Deployment(_) => "deployments",
            Workload::StatefulSet(_) => "statefulsets",
        }
    }
}

/// An EndpointSlice port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Port {
    Number(u16),
    Name(String),
}

/// `[service.NAME.autoscale.process]`: replicas as local child processes.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessConfig {
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub host: IpAddr,
    pub grace: Duration,
    pub startup_timeout: Duration,
    pub log_dir: Option<PathBuf>,
    pub log_max: u64,
}

/// A URL query value: everything but RFC 3986's unreserved characters percent-encoded (a
/// PromQL query, a Kubernetes label selector).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
