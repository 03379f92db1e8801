//! DNS discovery: a service's replicas are the A and AAAA records of a name, resolved again
//! every interval (`replicas = { dns = "app.internal:8080" }`).
//!
//! One task per discovered service ([`run`]) asks the [`Resolver`], compares the answer with
//! the replicas DNS gave before ([`diff`]) and tells the live replica set ([`ReplicaSink`])
//! what to add and what to drain. Decided:
//! - **A failed lookup keeps the last good set.** It is counted, logged once as a warning
//!   when lookups start failing and once as info when they work again.
//! - **An empty answer is a failure too** (NXDOMAIN, or a name without A/AAAA records), like
//!   nginx and unlike Envoy's STRICT_DNS, which drains everything. For a gateway, draining
//!   on empty turns one bad answer (a zone being redeployed, a search-domain slip, a headless
//!   Service with every pod briefly unready during a rollout) into an outage of a service
//!   whose replicas may be fine; keeping the set at worst sends requests to addresses that
//!   are gone, which connect failures, retries, passive ejection and health checks already
//!   handle. A service scaled to zero on purpose keeps its last replicas until they fail.
//! - **New replicas are added before vanished ones are drained**, so a rotation of every
//!   address never leaves the service with none.
//! - TTLs are not read: the interval alone decides when to ask again (nginx's `valid=`).

mod resolver;
#[doc(hidden)]
pub mod test_responder;
mod wire;

pub use headroom_config::DnsDiscovery;
pub use resolver::{Resolver, ATTEMPTS, QUERY_TIMEOUT, SYSTEM_TIMEOUT};
#[doc(hidden)]
pub use wire::fuzz_check as fuzz_check_answer;

use headroom_telemetry::Counter;
use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;

/// What discovery needs from the live replica set (implemented by the edge's shared state).
pub trait ReplicaSink: Send + Sync + 'static {
    /// Addresses of the service's replicas that came from DNS, draining ones excluded.
    fn dns_replicas(&self, service: &str) -> Vec<SocketAddr>;
    /// Adds a replica (source "dns"); a replica already present is left as it is.
    fn add_dns_replica(&self, service: &str, addr: SocketAddr, weight: u32);
    /// Drains a replica: no new requests, in-flight ones finish, then it is removed.
    fn drain_dns_replica(&self, service: &str, addr: SocketAddr);
}

/// What one answer changes: addresses to add and addresses to drain, each sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub add: Vec<SocketAddr>,
    pub drain: Vec<SocketAddr>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.drain.is_empty()
    }
}

/// Compares the replicas DNS gave before (`current`) with a new `answer`: what appeared is
/// added, what vanished is drained, what stays is left alone. Duplicates count once.
pub fn diff(current: &[SocketAddr], answer: &[SocketAddr]) -> Change {
    let current: BTreeSet<_> = current.iter().collect();
    let answer: BTreeSet<_> = answer.iter().collect();
    Change {
        add: answer.difference(&current).map(|a| **a).collect(),
        drain: current.difference(&answer).map(|a| **a).collect(),
    }
}

/// Keeps `service`'s DNS replicas in `sink` equal to what `spec.name` resolves to: resolves
/// at once, then every `spec.interval` (a lookup slower than the interval delays the next
/// one, never overlaps it). Runs until the task is aborted. Each failed or empty lookup
/// increments `failures` (`headroom_dns_lookup_failures_total{service}`) and keeps the set.
/// Cost: one lookup per interval (two UDP datagrams, or one getaddrinfo on the blocking
/// pool); nothing on the request path.
pub async fn run(
    sink: Arc<dyn ReplicaSink>,
    service: String,
    spec: DnsDiscovery,
    resolver: Resolver,
    failures: Arc<Counter>,
) {
    let (name, port) = (spec.name.clone(), spec.port);
    let lookup = move || {
        let name = name.clone();
        async move { resolver.lookup(&name, port).await }
    };
    discover(sink, service, spec, lookup, failures).await
}

/// [`run`] with the lookup as a parameter, so tests can answer it under paused time.
async fn discover<L, F>(
    sink: Arc<dyn ReplicaSink>,
    service: String,
    spec: DnsDiscovery,
    mut lookup: L,
    failures: Arc<Counter>,
) where
    L: FnMut() -> F,
    F: Future<Output = Result<Vec<SocketAddr>, String>>,
{
    // Validated config never has a zero interval; `interval` would panic on one.
    let mut ticker = tokio::time::interval(spec.interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing_since: Option<u64> = None;
    loop {
        ticker.tick().await;
        let answer = match lookup().await {
            Ok(addrs) if addrs.is_empty() => Err("the name has no A or AAAA records".to_string()),
            other => other,
        };
        match answer {
            Ok(addrs) => {
                if let Some(failed) = failing_since.take() {
                    tracing::info!(
                        service = %service,
                        name = %spec.name,
                        failed_lookups = failed,
                        replicas = addrs.len(),
                        "DNS lookups succeed again"
                    );
                }
                let change = diff(&sink.dns_replicas(&service), &addrs);
                for &addr in &change.add {
                    sink.add_dns_replica(&service, addr, spec.weight);
                }
                for &addr in &change.drain {
                    sink.drain_dns_replica(&service, addr);
                }
                if !change.is_empty() {
                    tracing::info!(
                        service = %service,
                        name = %spec.name,
                        added = ?change.add,
                        drained = ?change.drain,
                        "DNS discovery changed the replicas"
                    );
                }
            }
            Err(error) => {
                failures.inc();
                match &mut failing_since {
                    Some(n) => {
                        *n += 1;
                        tracing::debug!(service = %service, name = %spec.name, %error, "DNS lookup failed again");
                    }
                    None => {
                        failing_since = Some(1);
                        tracing::warn!(
                            service = %service,
                            name = %spec.name,
                            %error,
                            kept = sink.dns_replicas(&service).len(),
                            "DNS lookup failed; keeping the last replicas until a lookup succeeds"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
