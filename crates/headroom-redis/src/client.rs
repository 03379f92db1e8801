//! [`Redis`]: calls under one timeout and the breaker, over a lazily made connection.

use crate::breaker::{Breaker, Circuit, Transition};
use crate::error::Error;
use crate::link::{Connector, Dialer, Link};
use crate::{redact, Metrics, Options, Target};
use redis::cluster::ClusterClientBuilder;
use redis::{
    AsyncConnectionConfig, Client, ErrorKind, FromRedisValue, IntoConnectionInfo, RedisError, Value,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Retries redis-rs's cluster connection makes by itself (MOVED, ASK, TRYAGAIN, a node
/// reconnect), each after 5–25 ms: a few fit in the default 50 ms timeout, and a call that
/// needs more is a failure for the breaker to count, not a reason to wait.
const CLUSTER_RETRIES: u32 = 3;
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 5;
const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 25;

/// A Redis client: standalone or cluster, every call bounded by a timeout and a breaker. Cheap
/// to clone (one `Arc`); clones share the connection and the breaker.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    timeout: Duration,
    cooldown: Duration,
    circuit: Circuit,
    connector: Arc<Connector>,
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("target", &self.inner.target.to_string())
            .field("breaker", &self.breaker())
            .finish()
    }
}

impl Redis {
    /// Checks the target's urls and the options and returns at once: it does not need Redis
    /// to be up. The connection is made in the background (started here when called inside a
    /// tokio runtime, else by the first call) and made again after it breaks.
    ///
    /// Errors: [`Error::Config`] for a url redis-rs cannot parse, an empty seed list, a zero
    /// timeout; the message names the url (password redacted).
    pub fn new(target: Target, opts: Options) -> Result<Redis, Error> {
        if opts.timeout.is_zero() || opts.connect_timeout.is_zero() {
            return Err(Error::Config(
                "timeout and connect_timeout must be more than 0".into(),
            ));
        }
        let dialer = match &target {
            Target::Standalone(url) => {
                let client = Client::open(url.as_str()).map_err(|e| bad_url(url, e))?;
                // No response timeout inside redis-rs: ours bounds every call, and a single
                // deadline means one error (Error::Timeout) for one cause.
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(opts.connect_timeout))
                    .set_response_timeout(None);
                Dialer::Standalone(client, config)
            }
            Target::Cluster(urls) => {
                if urls.is_empty() {
                    return Err(Error::Config(
                        "a cluster target needs at least one seed node url".into(),
                    ));
                }
                for url in urls {
                    url.as_str()
                        .into_connection_info()
                        .map_err(|e| bad_url(url, e))?;
                }
                let client = ClusterClientBuilder::new(urls.iter().map(String::as_str))
                    .connection_timeout(opts.connect_timeout)
                    .response_timeout(opts.timeout)
                    .retries(CLUSTER_RETRIES)
                    .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
                    .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS)
                    .build()
                    .map_err(|e| Error::Config(format!("redis cluster {target}: {e}")))?;
                Dialer::Cluster(client)
            }
        };
        let connector = Arc::new(Connector::new(dialer, opts.connect_timeout));
        if tokio::runtime::Handle::try_current().is_ok() {
            connector.warm_up();
        }
        if let Some(m) = &opts.metrics {
            m.breaker_open.set(0);
        }
        Ok(Redis {
            inner: Arc::new(Inner {
                target,
                timeout: opts.timeout,
                cooldown: opts.breaker_cooldown,
                circuit: Circuit::new(opts.breaker_failures, opts.breaker_cooldown),
                connector,
                metrics: opts.metrics,
            }),
        })
    }

    /// Runs one command; in cluster mode it goes to the node serving its key's slot (a
    /// command without a key goes to any node). Bounded by the timeout and the breaker.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        self.call(move |mut link| async move { convert(cmd.query_async(&mut link).await) })
            .await
    }

    /// Runs a pipeline (atomic with `.atomic()`: MULTI/EXEC) in one round trip.
    ///
    /// In cluster mode the whole pipeline goes to one node, the one serving its first keyed
    /// command's slot, so all its keys must hash to one slot (use a hash tag: `{user:1}:a`,
    /// `{user:1}:b`). redis-rs checks this before sending: keys of different slots fail with
    /// a CROSSSLOT [`Error::Redis`] (an application error: the breaker does not count it), and
    /// nothing is sent.
    pub async fn pipeline<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, Error> {
        self.call(move |mut link| async move { convert(pipe.query_async(&mut link).await) })
            .await
    }

    /// Runs a Lua script as [`redis::Script`] does: EVALSHA, and on NOSCRIPT, SCRIPT LOAD then
    /// EVALSHA again, all within one timeout. `keys` become `KEYS`, `args` `ARGV`. In cluster
    /// mode the script runs on the node of its first key; all keys must share a slot. A script
    /// that raises an error is an application error (not counted by the breaker).
    pub async fn script<T: FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<T, Error> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let invocation = &invocation;
        self.call(move |mut link| async move { convert(invocation.invoke_async(&mut link).await) })
            .await
    }

    /// The breaker's state now.
    pub fn breaker(&self) -> Breaker {
        self.inner.circuit.state()
    }

    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    /// One call: the breaker's permit, then connection and command under one timeout, then the
    /// outcome recorded (metrics, breaker, a broken link dropped).
    async fn call<T, F, Fut>(&self, op: F) -> Result<T, Error>
    where
        F: FnOnce(Link) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let inner = &*self.inner;
        let Some(permit) = inner.circuit.admit() else {
            if let Some(m) = &inner.metrics {
                m.rejected.inc();
            }
            return Err(Error::Unavailable);
        };
        let started = Instant::now();
        let attempt = async {
            let (link, generation) = inner.connector.link().await.map_err(|e| (e, None))?;
            op(link).await.map_err(|e| (e, Some(generation)))
        };
        let result = match tokio::time::timeout(inner.timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err((e, generation))) => {
                // A standalone link that failed this way is dead (EOF, reset, garbage on the
                // wire): drop it so the next call connects again. A cluster connection
                // reconnects its nodes itself; it is rebuilt only when the breaker opens.
                if let (Some(g), Target::Standalone(_)) = (generation, &inner.target) {
                    if e.is_unrecoverable_error() {
                        inner.connector.invalidate(g);
                    }
                }
                if e.is_timeout() {
                    Err(Error::Timeout(inner.timeout))
                } else {
                    Err(Error::Redis(e))
                }
            }
            Err(_) => Err(Error::Timeout(inner.timeout)),
        };
        if let Some(m) = &inner.metrics {
            m.latency.observe(started.elapsed());
            if result.is_err() {
                m.errors.inc();
            }
        }
        let outage = matches!(&result, Err(e) if e.is_unavailable());
        let probe = permit.is_probe();
        let transition = permit.record(outage);
        self.on_transition(transition, result.as_ref().err());
        if probe && outage {
            tracing::debug!(redis = %inner.target, "redis still unreachable: the probe failed");
        }
        result
    }

    /// Logs and exports a breaker transition: once per transition, never per call.
    fn on_transition(&self, transition: Transition, error: Option<&Error>) {
        let inner = &*self.inner;
        match transition {
            Transition::None => {}
            Transition::Opened { failures } => {
                tracing::warn!(
                    redis = %inner.target,
                    failures,
                    cooldown = ?inner.cooldown,
                    error = %error.map(ToString::to_string).unwrap_or_default(),
                    "redis unreachable: breaker open, calls fail fast until a probe succeeds"
                );
                if let Some(m) = &inner.metrics {
                    m.breaker_open.set(1);
                }
                // The probe must not reuse a connection that may only be timing out.
                inner.connector.invalidate_current();
            }
            Transition::Reopened => inner.connector.invalidate_current(),
            Transition::Closed => {
                tracing::info!(redis = %inner.target, "redis reachable again");
                if let Some(m) = &inner.metrics {
                    m.breaker_open.set(0);
                }
            }
        }
    }
}

/// Converts a reply to `T` apart from receiving it. redis-rs reports a reply of the wrong type
/// (`GET` of a string into an `i64`) with the same error kind, Parse, as bytes on the wire that
/// are not RESP; here it becomes UnexpectedReturnType: Redis answered, the connection is
/// fine, and neither the breaker nor the link should treat it as an outage.
fn convert<T: FromRedisValue>(reply: Result<Value, RedisError>) -> Result<T, RedisError> {
    T::from_redis_value(reply?).map_err(|e| {
        RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "reply of an unexpected type",
            e.to_string(),
        ))
    })
}

fn bad_url(url: &str, e: RedisError) -> Error {
    Error::Config(format!(
        "bad redis url {:?}: {e} (expected redis://host:port[/db])",
        redact(url)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_error(target: Target) -> String {
        match Redis::new(target, Options::default()) {
            Err(Error::Config(msg)) => msg,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn a_bad_url_is_a_config_error_that_names_it() {
        let msg = config_error(Target::Standalone("localhost:6379".into()));
        assert!(msg.contains("\"localhost:6379\""), "{msg}");
        let msg = config_error(Target::Cluster(vec![
            "redis://127.0.0.1:7000".into(),
            "redis://:pw@127.0.0.1:notaport".into(),
        ]));
        assert!(msg.contains("redis://***@127.0.0.1:notaport"), "{msg}");
        assert!(!msg.contains("pw"), "password leaked: {msg}");
        let msg = config_error(Target::Cluster(vec![]));
        assert!(msg.contains("at least one seed"), "{msg}");
    }

    #[test]
    fn new_needs_neither_redis_nor_a_runtime() {
        // Nothing listens on port 1; new() must still return at once, outside any runtime.
        let redis = Redis::new(
            Target::Standalone("redis://127.0.0.1:1".into()),
            Options::default(),
        )
        .expect("a valid url");
        assert_eq!(redis.breaker(), Breaker::Closed);
    }

    #[test]
    fn a_zero_timeout_is_a_config_error() {
        let opts = Options {
            timeout: Duration::ZERO,
            ..Options::default()
        };
        let r = Redis::new(Target::Standalone("redis://127.0.0.1:1".into()), opts);
        assert!(matches!(r, Err(Error::Config(_))));
    }
}
