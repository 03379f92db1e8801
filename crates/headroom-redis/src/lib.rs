//! headroom's one Redis client, shared by the cache tier, the rate limiter and the autoscaler.
//!
//! Redis is a helper, never a dependency the proxy waits on: every call is bounded by
//! [`Options::timeout`] (connecting included), a Redis that is down, stalled or answering
//! garbage is a returned [`Error`], never a hang or a panic, and a breaker stops paying the
//! timeout on every call while Redis is away, probing it again after a cooldown.
//!
//! ```no_run
//! # async fn f() -> Result<(), headroom_redis::Error> {
//! use headroom_redis::{Options, Redis, Target};
//! let redis = Redis::new(Target::Standalone("redis://127.0.0.1:6379".into()), Options::default())?;
//! let hits: i64 = redis.query(redis::cmd("INCR").arg("hits")).await?;
//! # Ok(()) }
//! ```
//!
//! Standalone targets use one multiplexed connection (every call pipelined on one socket);
//! cluster targets use redis-rs's async cluster connection, which routes each command by its
//! key's slot and follows MOVED/ASK. Either is made lazily, in the background, and re-made
//! after it breaks, with at most one connect attempt in flight.

mod breaker;
mod client;
mod error;
mod link;
#[cfg(feature = "testing")]
pub mod testing;

pub use breaker::Breaker;
pub use client::Redis;
pub use error::Error;

use headroom_telemetry::{Counter, Gauge, Histogram};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server: `redis://[user:password@]host:port[/db]` (`redis+unix:///path` works too).
    Standalone(String),
    /// A Redis Cluster, given by one or more seed node urls (`redis://host:port`); the rest of
    /// the topology is discovered from them.
    Cluster(Vec<String>),
}

impl fmt::Display for Target {
    /// The url(s), with any password replaced by `***`: fit for logs and error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Standalone(url) => f.write_str(&redact(url)),
            Target::Cluster(urls) => {
                f.write_str("cluster ")?;
                for (i, url) in urls.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(&redact(url))?;
                }
                Ok(())
            }
        }
    }
}

/// How calls to Redis are bounded, and when the breaker opens.
#[derive(Debug, Clone)]
pub struct Options {
    /// The most a call waits, from its start to its answer, waiting for a connection
    /// included. Default 50 ms: a Redis tier that is slower than that is not worth waiting
    /// for on a request's path. Must be more than zero.
    pub timeout: Duration,
    /// The most one connect attempt takes (TCP, handshake; for a cluster, each node). Default
    /// 500 ms. It runs in the background, so a caller still waits only `timeout`; a call that
    /// finds a connect in flight waits for it (within its own timeout) instead of starting
    /// another. Must be more than zero.
    pub connect_timeout: Duration,
    /// Consecutive failures (timeouts, connection and protocol errors; not application errors
    /// such as WRONGTYPE or a failing script) that open the breaker. Default 3. 0: the breaker
    /// never opens.
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe call is let through. Default 1 s.
    pub breaker_cooldown: Duration,
    /// Where to count calls; `None` counts nothing.
    pub metrics: Option<Metrics>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(500),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(1),
            metrics: None,
        }
    }
}

/// The series a [`Redis`] feeds. The caller registers them (with its own names and labels,
/// e.g. `component="cache"`) in its `headroom_telemetry::Registry` and hands them over.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Seconds per call that was tried (successes and failures; not refused calls).
    pub latency: Arc<Histogram>,
    /// Calls that were tried and failed: timeouts, connection errors and application errors.
    pub errors: Arc<Counter>,
    /// Calls refused by the open breaker, not tried.
    pub rejected: Arc<Counter>,
    /// 1 while the breaker is open or half-open, 0 while it is closed.
    pub breaker_open: Arc<Gauge>,
}

/// `url` without its password: `redis://:secret@h:1` → `redis://***@h:1`.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_in_displayed_targets() {
        assert_eq!(redact("redis://:s3cret@h:6379/2"), "redis://***@h:6379/2");
        assert_eq!(redact("redis://user:pw@h:1"), "redis://***@h:1");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact("not a url"), "not a url");
        let t = Target::Cluster(vec!["redis://a:1".into(), "redis://:p@b:2".into()]);
        assert_eq!(t.to_string(), "cluster redis://a:1,redis://***@b:2");
    }
}
