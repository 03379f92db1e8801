//! `[watch]`: the request history, `[[watch.slo]]`, `[[watch.rule]]` and `[[watch.alert]]`,
//! as serde reads them.

use crate::units::{Dur, Share};
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

/// `[watch]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Watch {
    /// The history file (redb), relative to the config file's directory. Default: none,
    /// the history is kept in memory only and a restart starts it afresh.
    pub history: Option<Spanned<String>>,
    /// Series the history keeps at most. Default 1,000.
    pub max_series: usize,
    /// The dashboard's address for alert links. Default: the admin listener's.
    pub external_url: Option<Spanned<String>>,
    pub slo: Vec<Spanned<Slo>>,
    pub rule: Vec<Spanned<Rule>>,
    pub alert: Vec<Spanned<AlertReceiver>>,
    pub alerting: Alerting,
    /// `[watch.tracing]`: OpenTelemetry traces over OTLP/HTTP. Default: off.
    pub tracing: Option<Spanned<Tracing>>,
    /// The latency histograms' bucket bounds, lowest first. Default: 100µs to 10s in 16.
    pub latency_buckets: Option<Spanned<Vec<Spanned<Dur>>>>,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            history: None,
            max_series: 1_000,
            external_url: None,
            slo: Vec::new(),
            rule: Vec::new(),
            alert: Vec::new(),
            alerting: Alerting::default(),
            tracing: None,
            latency_buckets: None,
        }
    }
}

/// `[watch.tracing]`: spans exported to an OpenTelemetry collector over OTLP/HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// The collector's traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: Spanned<String>,
    /// The share of requests traced when the client sent no sampling decision.
    #[serde(default = "default_sample")]
    pub sample: Share,
    /// Requests answered with a 5xx are always exported. Default true.
    #[serde(default = "yes")]
    pub errors: bool,
    /// Requests slower than this are always exported. Default 1 s; "0s" turns it off.
    #[serde(default = "default_slow")]
    pub slow: Dur,
    /// The `service.name` resource attribute. Default "headroom".
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Requests waiting for export at most; more are dropped and counted. Default 2,048.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Spans per export request at most. Default 512.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// The longest a span waits for its batch. Default 1 s.
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// Per export request. Default 10 s.
    #[serde(default = "default_export_timeout")]
    pub timeout: Dur,
    /// Fields sent with every export request (a vendor's API key).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

fn default_sample() -> Share {
    Share(0.01)
}
fn yes() -> bool {
    true
}
fn default_slow() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_service_name() -> String {
    "headroom".into()
}
fn default_queue() -> usize {
    2048
}
fn default_batch() -> usize {
    512
}
fn default_interval() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_export_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

/// `[[watch.slo]]`: an objective for one route or one service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Default: the route's (or service's) name, then "-latency" for a latency objective.
    pub name: Option<String>,
    /// The route whose requests it judges; or `service`, one of the two.
    pub route: Option<Spanned<String>>,
    /// The service whose requests (every route's to it) it judges.
    pub service: Option<Spanned<String>>,
    /// The share of good requests promised: "99.9%" or 0.999.
    pub objective: Spanned<Share>,
    /// With it, a request is good when answered within this (one of the latency bucket
    /// bounds); without it, when it was not answered with a 5xx.
    pub latency: Option<Spanned<Dur>>,
    /// The rolling period. Default 30d.
    #[serde(default = "thirty_days")]
    pub period: Spanned<Dur>,
}

fn thirty_days() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(Duration::from_secs(30 * 86_400)))
}

/// `[[watch.rule]]`: a plain condition with Prometheus' `for:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// The route it watches; or `service`, one of the two.
    pub route: Option<Spanned<String>>,
    pub service: Option<Spanned<String>>,
    /// Fires when the share of 5xx over `window` is above this.
    pub error_rate: Option<Spanned<Share>>,
    /// "p50", "p95", "p99", "p99.9": the latency quantile `above` or `above_baseline` is
    /// about.
    pub latency: Option<Spanned<String>>,
    /// Fires when the quantile over `window` is above this.
    pub above: Option<Spanned<Dur>>,
    /// Fires when the quantile over `window` is this much above the same quantile over the
    /// `baseline` before it ("10%").
    pub above_baseline: Option<Spanned<Share>>,
    #[serde(default = "one_hour")]
    pub baseline: Dur,
    #[serde(default = "five_minutes")]
    pub window: Dur,
    /// How long the condition must hold before the rule fires. Default 5m.
    #[serde(default = "five_minutes", rename = "for")]
    pub for_: Dur,
    /// "ticket" (default) or "page".
    #[serde(default)]
    pub severity: Severity,
}

fn one_hour() -> Dur {
    Dur(Duration::from_secs(3600))
}

fn five_minutes() -> Dur {
    Dur(Duration::from_secs(300))
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Ticket,
    Page,
}

/// `[[watch.alert]]`: one receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertReceiver {
    /// Alertmanager's webhook payload (version 4) POSTed to this URL.
    pub webhook: Option<Spanned<String>>,
    /// An Alertmanager: alerts pushed to `<url>/api/v2/alerts`.
    pub alertmanager: Option<Spanned<String>>,
}

/// `[watch.alerting]`: grouping and timing of notifications (Alertmanager's terms).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Alerting {
    pub group_by: Vec<String>,
    pub group_wait: Dur,
    pub group_interval: Dur,
    pub repeat_interval: Dur,
    /// Per notification attempt.
    pub timeout: Dur,
}

impl Default for Alerting {
    fn default() -> Self {
        Alerting {
            group_by: vec!["alertname".into(), "route".into(), "service".into()],
            group_wait: Dur(Duration::from_secs(10)),
            group_interval: Dur(Duration::from_secs(60)),
            repeat_interval: Dur(Duration::from_secs(4 * 3600)),
            timeout: Dur(Duration::from_secs(10)),
        }
    }
}
