//! The config file's shape, as serde reads it. Defaults live here, next to each field.

use crate::units::{Dur, Share, Size};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use toml::Spanned;

pub mod cache;
pub mod guard;
pub mod postgres;
pub mod scale;
pub mod watch;

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub global: Global,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub listener: Vec<Spanned<Listener>>,
    #[serde(default)]
    pub route: Vec<Spanned<Route>>,
    #[serde(default)]
    pub service: BTreeMap<Spanned<String>, Spanned<Service>>,
    #[serde(default)]
    pub cache: cache::Cache,
    #[serde(default)]
    pub guard: guard::Guard,
    #[serde(default)]
    pub consumer: Vec<Spanned<guard::Consumer>>,
    #[serde(default)]
    pub jwt: BTreeMap<String, Spanned<guard::Jwt>>,
    #[serde(default)]
    pub watch: watch::Watch,
    #[serde(default)]
    pub postgres: Vec<Spanned<postgres::Postgres>>,
}

/// Process-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Global {
    /// Worker threads serving traffic. Default 0: one per core.
    pub workers: usize,
    /// How long graceful shutdown waits for in-flight requests. Default 30s.
    pub shutdown_timeout: Dur,
    /// Access log format: "json" (default), "combined" or "off".
    pub access_log: AccessLogFormat,
    /// Access log file, appended to and created if missing; relative to the config file's
    /// directory. Default none: stdout.
    pub access_log_path: Option<Spanned<String>>,
    /// Reload when the config file changes on disk. Default true.
    pub watch: bool,
    /// DNS server for `replicas = { dns = ... }`: `"ip"` or `"ip:port"` (port 53 by default).
    /// Default none: the system resolver (getaddrinfo: /etc/hosts, resolv.conf).
    pub resolver: Option<Spanned<String>>,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            workers: 0,
            shutdown_timeout: Dur(Duration::from_secs(30)),
            access_log: AccessLogFormat::Json,
            access_log_path: None,
            watch: true,
            resolver: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccessLogFormat {
    Json,
    Combined,
    Off,
}

/// The admin listener: /metrics, /status.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Default "127.0.0.1:9901". Bound elsewhere than loopback, a `token` is required.
    pub bind: Spanned<String>,
    /// Bearer token required on every admin request when set.
    pub token: Option<String>,
    /// Set false to run without an admin listener.
    pub enabled: bool,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            bind: Spanned::new(0..0, "127.0.0.1:9901".into()),
            token: None,
            enabled: true,
        }
    }
}

/// A socket that accepts client traffic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: Option<String>,
    pub bind: Spanned<String>,
    pub tls: Option<Tls>,
    /// Open connections allowed at once; more wait in the accept queue. Default 10000.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Time a client has to send a full header section; on HTTP/1.1 this includes the wait
    /// for the next request on an idle keep-alive connection. Default 15s.
    #[serde(default = "defaults::header_timeout")]
    pub header_timeout: Dur,
    /// Longest a client may pause while sending a request body (408 beyond), like nginx's
    /// `client_body_timeout`. Default 60s.
    #[serde(default = "defaults::body_timeout")]
    pub body_timeout: Dur,
    /// Longest a client may take to accept response bytes (the connection is closed beyond),
    /// like nginx's `send_timeout`. Default 60s.
    #[serde(default = "defaults::send_timeout")]
    pub send_timeout: Dur,
    /// Largest header section accepted (431 beyond). Default 16KiB; minimum 8KiB.
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: Size,
    /// Largest request body accepted (413 beyond). Default 10MiB.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: Size,
    /// Peer addresses or CIDR blocks admitted; empty: all (but `deny`).
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    /// Peer addresses or CIDR blocks refused (403, connection closed), checked first.
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM file holding the certificate chain.
    pub cert: Spanned<String>,
    /// PEM file holding the private key.
    pub key: Spanned<String>,
}

/// How a request is matched and what is done with it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: Option<String>,
    /// Listeners this route serves; default all.
    #[serde(default)]
    pub listeners: Vec<Spanned<String>>,
    #[serde(default, rename = "match")]
    pub matcher: Match,
    pub service: Option<Spanned<String>>,
    pub split: Option<Vec<Spanned<SplitTarget>>>,
    pub redirect: Option<Redirect>,
    pub respond: Option<Respond>,
    /// Remove this prefix from the path before forwarding.
    pub strip_prefix: Option<String>,
    /// Replace `strip_prefix` (or the matched `path_prefix`) with this.
    pub rewrite_prefix: Option<String>,
    #[serde(default)]
    pub request_headers: HeaderEdits,
    #[serde(default)]
    pub response_headers: HeaderEdits,
    pub cache: Option<Spanned<cache::RouteCache>>,
    pub compress: Option<Spanned<cache::Compress>>,
    #[serde(default)]
    pub limit: Vec<Spanned<guard::RouteLimit>>,
    pub auth: Option<Spanned<guard::RouteAuth>>,
    pub access: Option<Spanned<guard::RouteAccess>>,
    /// Under load shedding: "critical", "normal" (default) or "sheddable".
    pub priority: Option<Spanned<String>>,
    pub cors: Option<Spanned<guard::RouteCors>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Exact host, or `*.example.com` for any subdomain.
    pub host: Option<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub path_regex: Option<Spanned<String>>,
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header name to exact value; all must match.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitTarget {
    pub service: Spanned<String>,
    pub weight: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// Target URL. `{path}` is replaced by the request path and `{query}` by its query.
    pub to: String,
    /// Default 302.
    #[serde(default = "defaults::redirect_status")]
    pub status: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    #[serde(default = "defaults::ok")]
    pub status: u16,
    #[serde(default)]
    pub body: String,
    #[serde(default = "defaults::text_plain")]
    pub content_type: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderEdits {
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// A named group of replicas that serve the same thing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    #[serde(default)]
    pub balance: Balance,
    /// For `balance = "hash"`: "header:NAME", "cookie:NAME" or "client-ip".
    pub hash_on: Option<Spanned<String>>,
    /// A list of replicas, or `{ dns = "host:port" }` to discover them; left out when the
    /// autoscaler runs them.
    pub replicas: Option<Spanned<Replicas>>,
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: Dur,
    /// Time for the upstream to send response headers, from the end of the request (and
    /// the longest it may take to accept each write of the request). Default 30s.
    #[serde(default = "defaults::request_timeout")]
    pub request_timeout: Dur,
    /// Longest pause between response body bytes from the upstream (the response is cut
    /// off beyond), like nginx's `proxy_read_timeout`. Default 60s.
    #[serde(default = "defaults::read_timeout")]
    pub read_timeout: Dur,
    /// Idle pooled upstream connections are closed after this (the sweep runs every
    /// second). Default 90s.
    #[serde(default = "defaults::pool_idle_timeout")]
    pub idle_timeout: Dur,
    /// The most idle connections kept per replica and worker (the pool keeps what recent
    /// demand needed, up to this). Default 1024.
    #[serde(default = "defaults::max_idle")]
    pub max_idle: usize,
    /// The most HTTP/1.1 connections carrying a request at once per replica and worker;
    /// more requests wait (oldest first) for one to come back, up to `connect_timeout`.
    /// Default 1024; 0: no limit.
    #[serde(default = "defaults::max_conns")]
    pub max_conns: usize,
    pub health: Option<Health>,
    #[serde(default)]
    pub outlier: Outlier,
    /// A replica that becomes healthy ramps its share of traffic up over this. Default 10s,
    /// 0s with `autoscale` (a replica added for the load takes its share at once); "0s"
    /// disables.
    pub slow_start: Option<Dur>,
    pub shed: Option<Spanned<guard::Shed>>,
    pub circuit: Option<Spanned<guard::Circuit>>,
    #[serde(default)]
    pub retry: Retry,
    pub autoscale: Option<Spanned<scale::Autoscale>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    RoundRobin,
    LeastRequests,
    #[default]
    P2cEwma,
    Hash,
}

impl Balance {
    /// The name as written in the config file (`"p2c-ewma"`), for `/status` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::LeastRequests => "least-requests",
            Balance::P2cEwma => "p2c-ewma",
            Balance::Hash => "hash",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    H2,
}

/// A service's `replicas`: a list, or a DNS name resolved periodically.
#[derive(Debug, Clone)]
pub enum Replicas {
    List(Vec<Spanned<ReplicaSpec>>),
    Dns(DnsReplicas),
}

// By hand rather than `#[serde(untagged)]`: an untagged enum buffers its input, and the
// buffered value loses the spans that `Spanned` list items need for file:line errors.
impl<'de> Deserialize<'de> for Replicas {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Replicas;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list like [\"127.0.0.1:9001\"] or a table like { dns = \"app.internal:8080\" }")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Replicas, A::Error> {
                let mut list = Vec::new();
                while let Some(item) = seq.next_element()? {
                    list.push(item);
                }
                Ok(Replicas::List(list))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Replicas, A::Error> {
                DnsReplicas::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(Replicas::Dns)
            }
        }
        d.deserialize_any(V)
    }
}

/// `{ dns = "app.internal:8080", interval = "5s", weight = 1 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsReplicas {
    /// `"host:port"`: every A and AAAA record of host is a replica at that port.
    pub dns: Spanned<String>,
    /// How often the name is resolved again. Default 5s.
    #[serde(default = "defaults::dns_interval")]
    pub interval: Spanned<Dur>,
    /// Weight of every discovered replica. Default 1.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
}

/// `"127.0.0.1:9001"` or `{ addr = "127.0.0.1:9001", weight = 2 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ReplicaSpec {
    Addr(String),
    Weighted {
        addr: String,
        #[serde(default = "defaults::weight")]
        weight: u32,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default = "defaults::health_path")]
    pub path: String,
    #[serde(default = "defaults::health_interval")]
    pub interval: Dur,
    #[serde(default = "defaults::health_timeout")]
    pub timeout: Dur,
    /// Expected status: a code (200) or a class ("2xx"). Default "2xx".
    #[serde(default)]
    pub expect_status: Option<toml::Value>,
    /// Consecutive passes before a replica counts as healthy. Default 2.
    #[serde(default = "defaults::rise")]
    pub rise: u32,
    /// Consecutive failures before a replica counts as unhealthy. Default 3.
    #[serde(default = "defaults::fall")]
    pub fall: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outlier {
    /// Consecutive 5xx or connect failures that eject a replica. Default 5; 0 disables.
    pub consecutive_failures: u32,
    /// First ejection lasts this; each repeat doubles it. Default 10s.
    pub base_ejection: Dur,
    /// Ejections never last longer than this. Default 5m.
    pub max_ejection: Dur,
    /// Never eject more than this share of a service passively. Default 50%.
    pub max_ejected: Share,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_failures: 5,
            base_ejection: Dur(Duration::from_secs(10)),
            max_ejection: Dur(Duration::from_secs(300)),
            max_ejected: Share(0.5),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Total tries per request, the first included. Default 2; 1 disables retries.
    pub attempts: u32,
    /// Retries may add at most this share of extra load. Default 20%.
    pub budget: Share,
    /// Retries always allowed per second, whatever the budget. Default 10.
    pub min_per_second: u32,
    /// Methods that may be retried. Default the idempotent ones.
    pub methods: Vec<String>,
    /// Statuses that trigger a retry. Default [502, 503, 504].
    pub on_status: Vec<u16>,
    /// Request bodies up to this size are buffered so they can be replayed. Default 64KiB.
    pub replay_body_bytes: Size,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 2,
            budget: Share(0.2),
            min_per_second: 10,
            methods: ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]
                .map(String::from)
                .to_vec(),
            on_status: vec![502, 503, 504],
            replay_body_bytes: Size(64 << 10),
        }
    }
}

pub(crate) mod defaults {
    use super::*;
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn header_timeout() -> Dur {
        Dur(Duration::from_secs(15))
    }
    pub fn body_timeout() -> Dur {
        Dur(Duration::from_secs(60))
    }
    pub fn send_timeout() -> Dur {
        Dur(Duration::from_secs(60))
    }
    pub fn max_header_bytes() -> Size {
        Size(16 << 10)
    }
    pub fn max_body_bytes() -> Size {
        Size(10 << 20)
    }
    pub fn redirect_status() -> u16 {
        302
    }
    pub fn ok() -> u16 {
        200
    }
    pub fn text_plain() -> String {
        "text/plain; charset=utf-8".into()
    }
    pub fn connect_timeout() -> Dur {
        Dur(Duration::from_secs(2))
    }
    pub fn request_timeout() -> Dur {
        Dur(Duration::from_secs(30))
    }
    pub fn read_timeout() -> Dur {
        Dur(Duration::from_secs(60))
    }
    pub fn pool_idle_timeout() -> Dur {
        Dur(Duration::from_secs(90))
    }
    pub fn max_idle() -> usize {
        1024
    }
    pub fn max_conns() -> usize {
        1024
    }
    pub fn slow_start(autoscaled: bool) -> Dur {
        if autoscaled {
            // The autoscaler adds a replica because the others are overloaded: ramping it
            // over 10 s kept them overloaded (bench/autoscale.sh: p99 once at the full
            // fleet 2.3-2.5x the fixed fleet's with a ramp, 0.96-1.01x without).
            return Dur(Duration::ZERO);
        }
        Dur(Duration::from_secs(10))
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn dns_interval() -> Spanned<Dur> {
        Spanned::new(0..0, Dur(Duration::from_secs(5)))
    }
    pub fn health_path() -> String {
        "/healthz".into()
    }
    pub fn health_interval() -> Dur {
        Dur(Duration::from_secs(2))
    }
    pub fn health_timeout() -> Dur {
        Dur(Duration::from_secs(1))
    }
    pub fn rise() -> u32 {
        2
    }
    pub fn fall() -> u32 {
        3
    }
}
