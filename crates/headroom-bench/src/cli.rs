//! `headroom bench`'s options, and turning them into a checked `Plan`: every mistake is found
//! here, before any load is sent.

use crate::connect::{tls_config, Connector};
use crate::engine::Plan;
use crate::request::{self, Mix, RequestSpec};
use crate::schedule::{self, Load, Rate};
use crate::slo::Slo;
use bytes::Bytes;
use clap::Args as ClapArgs;
use std::path::PathBuf;
use std::time::Duration;

/// How long a run lasts without --duration, --requests or a ramp's own length.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Closed loop: connections when `-c` is not given (oha's default).
pub const CLOSED_CONNECTIONS: usize = 50;
/// Open loop: the most connections when `-c` is not given (k6's maxVUs is of this order).
pub const OPEN_MAX_CONNECTIONS: usize = 1000;

/// Load an HTTP target and report what it took.
#[derive(ClapArgs, Debug, Clone)]
#[command(after_help = "Load models:
  closed loop (default)   -c connections, each sending its next request when the last is answered
  open loop               --rate 5000/s or --ramp '100..10000/s over 60s': requests are due at fixed
                          times whatever the server does; a request that waits for a busy
                          connection has the wait counted in its latency, so a stalled server
                          cannot hide its stalls (coordinated omission corrected)

Output: the summary on stdout, progress on stderr. --json prints the report as JSON on stdout
        instead; --json-file, --csv and --html write files (a file option takes its file
        name, so `--csv t.csv URL`, never `--csv URL`).

Exit codes: 0 done; 1 the SLO broken, a regression against --compare, or the target unreachable;
            2 bad options or files; 130 interrupted by Ctrl-C (partial results are printed).

Examples:
  headroom bench http://127.0.0.1:8080/                          # 10s, 50 connections
  headroom bench -c 200 -d 30s -H 'x-api-key: k' http://127.0.0.1:8080/products
  headroom bench --rate 2000/s -d 60s --slo 'p99<50ms,errors<0.1%' http://127.0.0.1:8080/
  headroom bench --ramp '100..10000/s over 2m' --html report.html http://127.0.0.1:8080/
  headroom bench --find-max --slo 'p99<200ms,errors<1%' \\
      --against http://127.0.0.1:9901 http://127.0.0.1:8080/
  headroom bench -m POST --body-file order.json \\
      -H 'content-type: application/json' http://127.0.0.1:8080/orders
  headroom bench --scenario mix.toml -d 30s --json > result.json
  headroom bench --json-file run.json --csv run.csv http://127.0.0.1:8080/
  headroom bench --save baseline.json http://127.0.0.1:8080/     # then, in CI:
  headroom bench --compare baseline.json --threshold 10% http://127.0.0.1:8080/")]
pub struct Args {
    /// URLs to load (http:// or https://, one origin); several are mixed evenly.
    #[arg(required_unless_present = "scenario")]
    pub urls: Vec<String>,
    /// Closed loop: connections [default: 50]. Open loop: the most connections kept busy at
    /// once [default: 1000]; a request due when all are busy waits, and its wait counts.
    #[arg(short, long)]
    pub connections: Option<usize>,
    /// How long to run [default: 10s, or until --requests are done].
    #[arg(short, long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Worker threads, each with its own connections and event loop.
    #[arg(short, long, default_value_t = 1)]
    pub threads: usize,
    /// Open loop at a constant arrival rate, e.g. 5000/s (also /m, /ms).
    #[arg(long, conflicts_with = "ramp")]
    pub rate: Option<String>,
    /// Open loop at a rate moving linearly, e.g. '100..10000/s over 60s' (without 'over',
    /// across the whole --duration); after the ramp the last rate holds.
    #[arg(long)]
    pub ramp: Option<String>,
    /// HTTP method.
    #[arg(short, long, default_value = "GET")]
    pub method: String,
    /// A request header, 'Name: value'; repeat for more.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// The request body.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// The request body, read from a file.
    #[arg(long, value_name = "FILE", value_parser = FileArg)]
    pub body_file: Option<PathBuf>,
    /// A TOML file with a weighted mix of requests (see the README), instead of URLs.
    #[arg(long, conflicts_with_all = ["urls", "body", "body_file"])]
    pub scenario: Option<PathBuf>,
    /// Speak HTTP/2 (h2c with prior knowledge on http://, ALPN h2 on https://).
    #[arg(long)]
    pub http2: bool,
    /// HTTP/2: concurrent streams on each connection.
    #[arg(long, default_value_t = 1, requires = "http2")]
    pub streams: usize,
    /// Accept any TLS certificate (self-signed test servers).
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// Trust the CA certificates in this PEM file instead of the web's roots.
    #[arg(long, value_name = "FILE", value_parser = FileArg, conflicts_with = "insecure")]
    pub cacert: Option<PathBuf>,
    /// HTTP/1.1: open a new connection for every request ('connection: close').
    #[arg(long)]
    pub no_keepalive: bool,
    /// A request without a whole response by then is a timeout error.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Discard what ends in the first part of the run [default: 0s; with --find-max, a
    /// fifth of each step].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// The timeline's resolution (progress, --csv, --html).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Objectives to judge the run by, e.g. 'p99<200ms,errors<1%' (errors: failed requests
    /// and 5xx). A broken SLO exits 1.
    #[arg(long)]
    pub slo: Option<String>,
    /// Find the highest arrival rate that meets --slo: open-loop steps, doubling, then a
    /// binary search.
    #[arg(long, requires = "slo", conflicts_with_all = ["rate", "ramp", "requests", "duration"])]
    pub find_max: bool,
    /// --find-max: the first step's rate.
    #[arg(long, default_value = "50/s", requires = "find_max")]
    pub start: String,
    /// --find-max: how long each step runs.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, requires = "find_max")]
    pub step: Duration,
    /// --find-max: stop when the last good and first bad rate are this close.
    #[arg(long, default_value = "5%", requires = "find_max")]
    pub tolerance: String,
    /// --find-max: never step above this rate.
    #[arg(long, requires = "find_max")]
    pub max_rate: Option<String>,
    /// --find-max: the most steps.
    #[arg(long, default_value_t = 30, requires = "find_max")]
    pub max_steps: usize,
    /// Also record what headroom's admin endpoint (/metrics) saw: e.g. http://127.0.0.1:9901.
    #[arg(long)]
    pub against: Option<String>,
    /// Print the results as JSON on stdout, instead of the summary (progress and warnings
    /// stay on stderr). A flag: it takes no value.
    #[arg(long)]
    pub json: bool,
    /// Write the results as JSON to this file (the summary still prints).
    #[arg(long, value_name = "FILE", value_parser = FileArg)]
    pub json_file: Option<PathBuf>,
    /// Write the timeline (or, with --find-max, the curve) as CSV.
    #[arg(long, value_name = "FILE", value_parser = FileArg)]
    pub csv: Option<PathBuf>,
    /// Write an HTML report with plots (self-contained, viewable offline).
    #[arg(long, value_name = "FILE", value_parser = FileArg)]
    pub html: Option<PathBuf>,
    /// Keep the results as a baseline for --compare.
    #[arg(long, value_name = "FILE", value_parser = FileArg)]
    pub save: Option<PathBuf>,
    /// Compare with a saved baseline; a change beyond --threshold in the worse direction
    /// exits 1.
    #[arg(long, value_name = "FILE", value_parser = FileArg)]
    pub compare: Option<PathBuf>,
    /// --compare: the relative change that counts as a regression.
    #[arg(long, default_value = "10%")]
    pub threshold: String,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
}

/// The value of a file option (`--csv`, `--html`, `--json-file`...). A URL is refused: it is
/// the target, swallowed by an option written without its file (`--csv http://host/`), and
/// clap alone would only say that no URL was given.
#[derive(Clone)]
struct FileArg;

impl clap::builder::TypedValueParser for FileArg {
    type Value = PathBuf;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<PathBuf, clap::Error> {
        let text = value.to_string_lossy();
        let head = text.get(..8).unwrap_or(&text).to_ascii_lowercase();
        if head.starts_with("http://") || head.starts_with("https://") {
            let option = arg
                .and_then(|a| a.get_long())
                .map(|l| format!("--{l}"))
                .unwrap_or_else(|| "this option".into());
            let message = format!(
                "{option} takes a file name, but got the URL {text:?}: give the file first and \
                 the URL last, as in `{option} FILE {text}`\n"
            );
            return Err(
                clap::Error::raw(clap::error::ErrorKind::InvalidValue, message).with_cmd(cmd),
            );
        }
        Ok(PathBuf::from(value))
    }
}

/// `5%` or `5` (percent), as a fraction.
pub fn parse_percent(what: &str, s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .trim()
        .parse()
        .map_err(|_| format!("{what} {s:?}: expected a percentage, e.g. 10%"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("{what} {s:?}: must be 0% or more"));
    }
    Ok(v / 100.0)
}

/// The parts of a plan every run of an invocation shares.
pub struct Setup {
    pub connector: Connector,
    pub mix_specs: Vec<RequestSpec>,
    pub keepalive: bool,
    pub slo: Option<Slo>,
}

impl Args {
    pub fn setup(&self) -> Result<Setup, String> {
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        if self.connections == Some(0) {
            return Err("--connections must be at least 1".into());
        }
        if self.streams == 0 {
            return Err("--streams must be at least 1".into());
        }
        if self.http2 && self.no_keepalive {
            return Err("--no-keepalive is for HTTP/1.1: HTTP/2 carries requests as streams on kept connections (use --streams 1 with -c for many connections)".into());
        }
        if self.find_max && self.warmup.is_some_and(|w| w >= self.step) {
            return Err(format!(
                "--warmup {} leaves nothing to measure in a --step of {}",
                humantime::format_duration(self.warmup.unwrap_or_default()),
                humantime::format_duration(self.step)
            ));
        }
        if self.timeout.is_zero() || self.interval.is_zero() {
            return Err("--timeout and --interval must be more than 0s".into());
        }
        let (target, specs) = match &self.scenario {
            Some(file) => request::load_scenario(file)?,
            None => {
                let method = request::parse_method(&self.method)?;
                let headers = self
                    .headers
                    .iter()
                    .map(|h| request::parse_header(h))
                    .collect::<Result<Vec<_>, _>>()?;
                let body = match (&self.body, &self.body_file) {
                    (Some(b), _) => Bytes::from(b.clone()),
                    (None, Some(f)) => Bytes::from(
                        std::fs::read(f)
                            .map_err(|e| format!("--body-file {}: {e}", f.display()))?,
                    ),
                    (None, None) => Bytes::new(),
                };
                let mut target = None;
                let mut specs = Vec::new();
                for url in &self.urls {
                    let (t, path) = request::parse_url(url).map_err(|e| {
                        // `--json FILE` wrote a file before --json became a flag.
                        if self.json && url == "-" {
                            format!("{e}; note that --json takes no value (it prints on stdout): drop the \"-\"")
                        } else if self.json && !url.contains("://") {
                            format!("{e}; note that --json takes no value (it prints on stdout): write a file with --json-file {url}")
                        } else {
                            e
                        }
                    })?;
                    match &target {
                        None => target = Some(t),
                        Some(first) if *first != t => {
                            return Err(format!(
                            "{url:?}: every URL must share one origin ({}); mix paths, not hosts",
                            first.origin()
                        ))
                        }
                        Some(_) => {}
                    }
                    specs.push(RequestSpec {
                        method: method.clone(),
                        path,
                        headers: headers.clone(),
                        body: body.clone(),
                        weight: 1,
                    });
                }
                (target.ok_or("no URL to load")?, specs)
            }
        };
        let keepalive = !self.no_keepalive
            && !specs.iter().any(|s| {
                s.headers.iter().any(|(n, v)| {
                    n == http::header::CONNECTION && v.as_bytes().eq_ignore_ascii_case(b"close")
                })
            });
        let tls = if target.tls {
            Some(tls_config(
                self.insecure,
                self.cacert.as_deref(),
                self.http2,
            )?)
        } else {
            None
        };
        let slo = self.slo.as_deref().map(Slo::parse).transpose()?;
        // Serialize once now so a bad request fails before the run, not in it.
        Mix::new(&target, &specs, keepalive)?;
        Ok(Setup {
            connector: Connector::new(target, tls)?,
            mix_specs: specs,
            keepalive,
            slo,
        })
    }

    /// The load of a single run (not --find-max).
    pub fn load(&self) -> Result<Load, String> {
        let rate = match (&self.rate, &self.ramp) {
            (Some(r), _) => Some(Rate::constant(schedule::parse_rate(r)?)),
            (None, Some(r)) => Some(schedule::parse_ramp(
                r,
                self.duration.unwrap_or(DEFAULT_DURATION),
            )?),
            (None, None) => None,
        };
        if rate.is_some() && self.connections.is_some_and(|c| c < self.threads) {
            return Err(format!(
                "--connections {} is fewer than --threads {}: each thread of an open loop needs a connection",
                self.connections.unwrap_or(0),
                self.threads
            ));
        }
        Ok(match rate {
            Some(rate) => Load::Open {
                rate,
                max_connections: self.connections.unwrap_or(OPEN_MAX_CONNECTIONS),
            },
            None => Load::Closed {
                connections: self.connections.unwrap_or(CLOSED_CONNECTIONS),
            },
        })
    }

    /// How long a single run lasts: --duration, else the ramp's length, else until
    /// --requests are done, else 10s.
    pub fn duration(&self, load: &Load) -> Option<Duration> {
        if self.duration.is_some() {
            return self.duration;
        }
        if let Load::Open { rate, .. } = load {
            if rate.is_ramp() {
                return Some(rate.over);
            }
        }
        if self.requests.is_some() {
            return None;
        }
        Some(DEFAULT_DURATION)
    }

    pub fn plan(
        &self,
        setup: &Setup,
        load: Load,
        duration: Option<Duration>,
        warmup: Duration,
        drain: bool,
    ) -> Result<Plan, String> {
        if duration.is_some_and(|d| warmup >= d) {
            return Err(format!(
                "--warmup {} leaves nothing to measure in a run of {}",
                humantime::format_duration(warmup),
                humantime::format_duration(duration.unwrap_or_default())
            ));
        }
        Ok(Plan {
            connector: setup.connector.clone(),
            mix: Mix::new(&setup.connector.target, &setup.mix_specs, setup.keepalive)?,
            http2: self.http2,
            streams: self.streams,
            load,
            duration,
            requests: self.requests,
            threads: self.threads,
            timeout: self.timeout,
            interval: self.interval,
            warmup,
            drain: drain.then_some(self.timeout),
        })
    }
}
