//! The watch plane's typed config: `[watch]`.

use std::path::PathBuf;
use std::time::Duration;

pub use crate::model::watch::Severity;

/// `[watch]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WatchConfig {
    /// `None`: the history lives in memory only.
    pub history: Option<PathBuf>,
    pub max_series: usize,
    pub external_url: Option<String>,
    pub slos: Vec<SloConfig>,
    pub rules: Vec<RuleConfig>,
    pub receivers: Vec<ReceiverConfig>,
    pub alerting: AlertingConfig,
    /// `None`: tracing is off.
    pub tracing: Option<TracingConfig>,
    /// The bounds of every latency histogram (`/metrics`, the history, latency SLOs).
    pub latency_buckets: headroom_telemetry::LatencyBounds,
}

/// `[watch.tracing]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// An `http://` or `https://` URL.
    pub endpoint: String,
    /// 0 to 1.
    pub sample: f64,
    pub errors: bool,
    /// `None`: slow requests are not exported for being slow.
    pub slow: Option<Duration>,
    pub service_name: String,
    pub queue: usize,
    pub batch: usize,
    pub interval: Duration,
    pub timeout: Duration,
    pub headers: Vec<(String, String)>,
}

/// What an objective or a rule judges: the requests of a route, or of a service (every
/// route's requests to it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    Route(String),
    Service(String),
}

impl Subject {
    /// `"route"` or `"service"`: also the label alerts and metrics carry its name in.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Route(_) => "route",
            Subject::Service(_) => "service",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Subject::Route(n) | Subject::Service(n) => n,
        }
    }
}

impl std::fmt::Display for Subject {
    /// `route api`, `service app`: how summaries name it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind(), self.name())
    }
}

/// `[[watch.slo]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SloConfig {
    pub name: String,
    pub subject: Subject,
    /// Strictly between 0 and 1.
    pub objective: f64,
    /// `Some`: a latency objective, this one of the latency bucket bounds.
    pub latency: Option<Duration>,
    pub period: Duration,
}

/// `[[watch.rule]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleConfig {
    pub name: String,
    pub subject: Subject,
    pub condition: RuleCondition,
    pub window: Duration,
    pub for_: Duration,
    pub severity: Severity,
}

/// What a rule watches.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleCondition {
    ErrorRate {
        above: f64,
    },
    LatencyAbove {
        quantile: f64,
        threshold: Duration,
    },
    LatencyAboveBaseline {
        quantile: f64,
        ratio: f64,
        baseline: Duration,
    },
}

/// `[[watch.alert]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverConfig {
    Webhook(String),
    Alertmanager(String),
}

/// `[watch.alerting]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertingConfig {
    pub group_by: Vec<String>,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    pub timeout: Duration,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            group_by: vec!["alertname".into(), "route".into()],
            group_wait: Duration::from_secs(10),
            group_interval: Duration::from_secs(60),
            repeat_interval: Duration::from_secs(4 * 3600),
            timeout: Duration::from_secs(10),
        }
    }
}
