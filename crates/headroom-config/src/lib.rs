//! headroom's configuration: one TOML file parsed once into typed, validated structs.
//!
//! Nothing downstream re-parses strings: durations are [`Duration`]s, addresses are
//! [`SocketAddr`]s, regexes are compiled. Every problem is reported with the file, line,
//! column and key, and a "did you mean" for misspelt names (see [`ConfigError`]).

pub mod cache;
mod error;
pub mod guard;
pub mod model;
pub mod postgres;
pub mod scale;
pub mod units;
mod validate;
pub mod watch;

pub use error::{did_you_mean, ConfigError, ConfigErrors};
pub use model::{AccessLogFormat, Balance, UpstreamProtocol};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest replica weight (the smallest is 1). Config files outside 1..=1000 are refused;
/// the balancer clamps any other source (the admin API) to it. A thousand-to-one spread is
/// finer than any real fleet needs, and keeps the round-robin schedule and the hash ring
/// small (see `headroom_edge::balancer`).
pub const MAX_WEIGHT: u32 = 1000;

/// A validated config, ready to build a routing table from.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from (for reload and messages).
    pub source: PathBuf,
    pub global: GlobalConfig,
    /// `None` when the admin listener is disabled.
    pub admin: Option<AdminConfig>,
    pub listeners: Vec<ListenerConfig>,
    /// In file order; the first that matches wins.
    pub routes: Vec<RouteConfig>,
    pub services: BTreeMap<String, ServiceConfig>,
    pub cache: cache::CacheConfig,
    pub guard: guard::GuardConfig,
    /// `[[consumer]]`, from the config then `guard.key_file`.
    pub consumers: Vec<guard::ConsumerConfig>,
    /// `[jwt.NAME]`, by name.
    pub jwt: BTreeMap<String, guard::JwtConfig>,
    /// `[watch]`: history, SLOs, rules, alert receivers.
    pub watch: watch::WatchConfig,
    /// `[[postgres]]`: the SQL plane's listeners, in file order.
    pub postgres: Vec<postgres::PostgresConfig>,
}

#[derive(Debug, Clone)]
pub struct GlobalConfig {
    /// Worker threads; 0 in the file becomes the number of cores.
    pub workers: usize,
    pub shutdown_timeout: Duration,
    pub access_log: AccessLogFormat,
    /// The access log file (resolved against the config file's directory); `None`: stdout.
    /// Opened at start (an error there stops the start), reopened on SIGUSR1.
    pub access_log_path: Option<PathBuf>,
    pub watch: bool,
    /// DNS server queried for `replicas = { dns = ... }`; `None`: the system resolver.
    pub resolver: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub bind: SocketAddr,
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// Longest a client may take to accept response bytes.
    pub send_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    /// Peer addresses admitted (empty: all) and refused.
    pub allow: Vec<guard::IpNet>,
    pub deny: Vec<guard::IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    /// Listener names; empty means every listener.
    pub listeners: Vec<String>,
    pub matcher: MatchConfig,
    pub action: Action,
    pub strip_prefix: Option<String>,
    pub rewrite_prefix: Option<String>,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    pub cache: Option<cache::RouteCacheConfig>,
    pub compress: Option<cache::CompressConfig>,
    /// `[[route.limit]]`, in order; a request must pass each.
    pub limits: Vec<guard::LimitConfig>,
    pub auth: Option<guard::RouteAuthConfig>,
    /// `[route.access]`: client address rules, body limit.
    pub access: Option<guard::AccessConfig>,
    pub priority: guard::Priority,
    pub cors: Option<guard::CorsConfig>,
}

#[derive(Debug, Clone, Default)]
pub struct MatchConfig {
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    /// Upper-case method names; empty means any.
    pub methods: Vec<String>,
    /// Lower-case header names with the exact value each must have.
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Lower-case host without port.
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

#[derive(Debug, Clone, Default)]
pub enum PathMatch {
    #[default]
    Any,
    Exact(String),
    Prefix(String),
    Regex(regex::Regex),
}

#[derive(Debug, Clone)]
pub enum Action {
    Forward(String),
    /// (service, weight) pairs; weights are > 0.
    Split(Vec<(String, u32)>),
    Redirect {
        to: String,
        status: u16,
    },
    Respond {
        status: u16,
        body: String,
        content_type: String,
    },
}

#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    pub balance: Balance,
    pub hash_on: Option<HashKey>,
    /// The replicas listed in the file; empty when `discovery` is set.
    pub replicas: Vec<ReplicaConfig>,
    /// `replicas = { dns = ... }`: the replicas come from DNS instead of the list.
    pub discovery: Option<DnsDiscovery>,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    /// From the end of the request to the response head.
    pub request_timeout: Duration,
    /// Longest pause between response body bytes.
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
    /// HTTP/1.1 connections busy at once per replica and worker; 0: no limit.
    pub max_conns: usize,
    pub health: Option<HealthConfig>,
    pub outlier: OutlierConfig,
    pub slow_start: Duration,
    pub retry: RetryConfig,
    pub shed: Option<guard::ShedConfig>,
    pub circuit: Option<guard::CircuitConfig>,
    /// `[service.NAME.autoscale]`: its replicas are the autoscaler's (`replicas` is empty).
    pub autoscale: Option<scale::AutoscaleConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Header(String),
    Cookie(String),
    ClientIp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// As written in the file (`localhost:9001`): the replica's stable id.
    pub label: String,
    pub addr: SocketAddr,
    pub weight: u32,
}

/// Replicas discovered by resolving `name` every `interval`: each A and AAAA record is a
/// replica at `port` with `weight`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsDiscovery {
    /// Lower-case host name as written (`app.internal`, or `app.internal.` to skip the
    /// system resolver's search domains).
    pub name: String,
    pub port: u16,
    /// Default 5s; never zero.
    pub interval: Duration,
    /// Default 1; never zero.
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Inclusive status range that counts as a pass.
    pub expect: (u16, u16),
    pub rise: u32,
    pub fall: u32,
}

#[derive(Debug, Clone)]
pub struct OutlierConfig {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejected: f64,
}

#[derive(Debug, Clone)]
pub struct RetryConfig {
    pub attempts: u32,
    pub budget: f64,
    pub min_per_second: u32,
    pub methods: Vec<String>,
    pub on_status: Vec<u16>,
    pub replay_body_bytes: u64,
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: name.clone(),
            line: 0,
            column: 0,
            key: None,
            message: format!("cannot read the config file: {e}"),
            snippet: None,
        }])
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut cfg = parse(&name, &text, base)?;
    cfg.source = path.to_path_buf();
    Ok(cfg)
}

/// Validates config `text`; `file` names it in errors, relative paths resolve against `base_dir`.
pub fn parse(file: &str, text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    validate::validate(file, text, base_dir)
}

/// A page rule's path glob: `*` and `**` match any characters (`/` included), `{a,b}`
/// alternatives, `?` one character, `[...]` a class.
pub fn glob(pattern: &str) -> Result<globset::GlobMatcher, globset::Error> {
    Ok(globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()?
        .compile_matcher())
}
