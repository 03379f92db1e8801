//! The `headroom` binary: wiring only. The work happens in the library crates.

mod admin_client;
mod advise;
mod demo;
mod export;
mod key;
mod kubernetes;
mod purge;
mod scale;
mod serve;
mod upstream;
mod watch;

use clap::{Parser, Subcommand};

/// mimalloc: per-request allocations (request and response heads, the forward state) are
/// served from thread-local pages; measured against glibc malloc in bench/proxy.sh.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

/// headroom: the scaling playbook in one binary.
///
/// A reverse proxy and API gateway (routing, load balancing, health checks, retries,
/// metrics) configured by one TOML file.
#[derive(Parser)]
#[command(name = "headroom", version, propagate_version = true)]
#[command(
    after_help = "Examples:\n  headroom demo                              # try it: a gateway in front of three demo replicas\n  headroom check --config headroom.toml      # validate a config (exit 2 on errors)\n  headroom serve --config headroom.toml      # run the gateway\n  headroom bench --find-max --slo 'p99<200ms' http://127.0.0.1:8080/   # how much load it takes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway from a config file.
    #[command(
        after_help = "Signals:\n  SIGHUP            reload the config (also done when the file changes, unless global.watch = false)\n  SIGUSR1           reopen the access log file (global.access_log_path), for logrotate\n  SIGTERM, SIGINT   stop accepting, finish in-flight requests (up to global.shutdown_timeout), exit 0\n\nExample:\n  headroom serve --config headroom.toml\n  kill -HUP $(pidof headroom)   # reload"
    )]
    Serve {
        /// The config file (TOML).
        #[arg(short, long, default_value = "headroom.toml")]
        config: PathBuf,
        /// Worker threads (overrides global.workers; default: one per core).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Validate a config file: exit 0 when valid, else print every error and exit 2.
    #[command(
        after_help = "Example:\n  headroom check --config headroom.toml\n  headroom.toml:14:11: route \"api\": service: unknown service \"catalgo\" (did you mean \"catalog\"?)"
    )]
    Check {
        #[arg(short, long, default_value = "headroom.toml")]
        config: PathBuf,
    },
    /// Start a gateway on 127.0.0.1:8080 in front of three demo replicas; no file needed.
    #[command(
        after_help = "Example:\n  headroom demo\n  curl -s localhost:8080/            # answered by one of the replicas\n  curl -s localhost:9901/metrics     # Prometheus metrics"
    )]
    Demo {
        /// Port of the gateway.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Port of the admin listener (/metrics, /status).
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
        /// Number of demo replicas.
        #[arg(long, default_value_t = 3)]
        replicas: usize,
    },
    /// Load an HTTP target: closed or open loop, latency percentiles, capacity search.
    Bench(Box<headroom_bench::Args>),
    /// Purge the cache of a running headroom: a URL, a prefix, a tag, or everything.
    Purge(purge::Args),
    /// Say what to change, from a running headroom's traffic: findings with evidence and config.
    Advise(advise::Args),
    /// API keys for [[consumer]]: make a new one, or hash one for the config.
    #[command(subcommand)]
    Key(key::Command),
    /// Export the config's SLOs and rules as Prometheus rules, or a Grafana dashboard.
    #[command(
        subcommand,
        after_help = "Examples:\n  headroom export prometheus-rules --config headroom.toml -o headroom.rules.yml\n  promtool check rules headroom.rules.yml\n  headroom export grafana --config headroom.toml -o headroom-dashboard.json"
    )]
    Export(export::Command),
    /// A demo upstream server that answers with its name (used by `demo` and the tests).
    #[command(hide = true)]
    DemoUpstream(upstream::Args),
    /// Supervise one autoscaled replica (run by headroom itself, see headroom_scale::shim).
    #[command(hide = true, disable_help_flag = true, disable_version_flag = true)]
    ReplicaShim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Reads and validates a config: the file's own checks, then what only the guard can check
/// (JWT keys that must parse). Errors as printed, and how many.
pub(crate) fn load_config(
    path: &std::path::Path,
) -> Result<headroom_config::Config, (String, usize)> {
    let cfg = headroom_config::load(path).map_err(|e| (e.to_string(), e.0.len()))?;
    let bad = headroom_guard::check(&cfg.jwt);
    if bad.is_empty() {
        return Ok(cfg);
    }
    let n = bad.len();
    let text = bad
        .iter()
        .map(|b| format!("{}: {b}", path.display()))
        .collect::<Vec<_>>()
        .join("\n");
    Err((text, n))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, workers } => serve::run(&config, workers),
        Command::Check { config } => match load_config(&config) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} listeners, {} routes, {} services)",
                    config.display(),
                    cfg.listeners.len(),
                    cfg.routes.len(),
                    cfg.services.len()
                );
                ExitCode::SUCCESS
            }
            Err((text, n)) => {
                eprintln!("{text}");
                eprintln!("{n} error(s) in {}", config.display());
                ExitCode::from(2)
            }
        },
        Command::Demo {
            port,
            admin_port,
            replicas,
        } => demo::run(port, admin_port, replicas),
        Command::Bench(args) => headroom_bench::run(*args),
        Command::Purge(args) => purge::run(args),
        Command::Advise(args) => advise::run(args),
        Command::Key(cmd) => key::run(cmd),
        Command::Export(cmd) => export::run(cmd),
        Command::DemoUpstream(args) => upstream::run(args),
        Command::ReplicaShim { args } => headroom_scale::shim::run(args),
    }
}

/// Logs (not the access log) go to stderr; `HEADROOM_LOG` or `RUST_LOG` sets the filter.
pub fn init_logging() {
    let filter = std::env::var("HEADROOM_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    // kube's client logs every failed call at ERROR; the kubernetes driver says each failure
    // itself, once per streak, with what to do. Named in the filter, they come back.
    let filter = if filter.contains("kube") {
        filter
    } else {
        format!("{filter},kube_client=off,kube_runtime=off")
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        // A closed or full stderr must never take the gateway down.
        .log_internal_errors(false)
        .try_init();
}
