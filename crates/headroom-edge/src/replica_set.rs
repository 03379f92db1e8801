//! The live replica set. The config file, the admin API, DNS discovery and (later) the
//! autoscaler add, drain and remove replicas through this one API, which keeps every other
//! replica's state (health, EWMA latency, ejection, pools): a change rebuilds the routing
//! snapshot from the config in force plus the runtime membership, and the snapshot build
//! reuses each remaining replica's live state by its stable id.
//!
//! A replica added at runtime starts in slow start; when its service has health checks it
//! takes traffic only after its first passing check. Draining takes a replica out of
//! balancing at once; it is removed when its in-flight requests are done or its deadline
//! passes, whichever comes first. A reload keeps runtime-added replicas of services that
//! still exist; config replicas drained at runtime come back with a reload (the file is the
//! source of truth for them).

use crate::replica::Replica;
use crate::Shared;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

/// Where a replica came from, as `/status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Config,
    Admin,
    Dns,
    /// Started by the autoscaler's driver.
    Autoscaler,
    /// A ready pod in the EndpointSlices of the autoscaler's Kubernetes workload.
    Kubernetes,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Admin => "admin",
            Source::Dns => "dns",
            Source::Autoscaler => "autoscaler",
            Source::Kubernetes => "kubernetes",
        }
    }
}

/// A replica added at runtime.
#[derive(Debug, Clone)]
pub(crate) struct Added {
    pub label: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub source: Source,
}

/// The runtime part of every service's membership; the config's part is in the config.
#[derive(Debug, Default)]
pub(crate) struct Membership {
    /// Service name to the replicas added at runtime, in the order they were added.
    pub added: BTreeMap<String, Vec<Added>>,
    /// (service, label) of config replicas removed at runtime, until the next reload.
    pub removed: HashSet<(String, String)>,
}

/// Why a change to the replica set was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplicaError {
    NoSuchService(String),
    /// The replica is in the service already (and not draining).
    Exists(String),
    NoSuchReplica(String),
    /// The weight is outside 1..=MAX_WEIGHT.
    Weight(u32),
}

impl std::fmt::Display for ReplicaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicaError::NoSuchService(s) => write!(f, "no service \"{s}\""),
            ReplicaError::Exists(r) => write!(f, "replica {r} is in the service already"),
            ReplicaError::NoSuchReplica(r) => write!(f, "no replica {r} in the service"),
            ReplicaError::Weight(w) => {
                write!(
                    f,
                    "weight {w}: expected 1 to {}",
                    headroom_config::MAX_WEIGHT
                )
            }
        }
    }
}

impl std::error::Error for ReplicaError {}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Its in-flight requests finished.
    Idle,
    /// The deadline passed with requests still in flight (they finish on their own).
    Deadline,
    /// It was added back before the drain ended, and stays.
    Cancelled,
}

impl Shared {
    /// The cold-start gate of `service` (`autoscale.min = 0`), in the snapshot in force.
    pub fn cold_start(&self, service: &str) -> Option<Arc<crate::cold_start::ColdStart>> {
        let snap = self.snapshot.load();
        snap.services
            .iter()
            .find(|s| &*s.name == service)?
            .cold_start
            .clone()
    }

    /// The replica `label` of `service` in the snapshot in force.
    fn find_replica(&self, service: &str, label: &str) -> Result<Arc<Replica>, ReplicaError> {
        let snap = self.snapshot.load();
        let svc = snap
            .services
            .iter()
            .find(|s| &*s.name == service)
            .ok_or_else(|| ReplicaError::NoSuchService(service.into()))?;
        svc.replicas
            .iter()
            .find(|r| &*r.label == label || r.addr.to_string() == label)
            .cloned()
            .ok_or_else(|| ReplicaError::NoSuchReplica(label.into()))
    }

    /// Adds a replica at `addr` to `service` (its id is the address). A replica of that
    /// address that is draining is kept instead (its drain is cancelled).
    pub fn add_replica(
        &self,
        service: &str,
        addr: SocketAddr,
        weight: u32,
        source: Source,
    ) -> Result<(), ReplicaError> {
        if !(1..=headroom_config::MAX_WEIGHT).contains(&weight) {
            return Err(ReplicaError::Weight(weight));
        }
        let label = addr.to_string();
        let _serial = self.rebuild_lock();
        let config = self.config.load();
        let Some(sc) = config.services.get(service) else {
            return Err(ReplicaError::NoSuchService(service.into()));
        };
        if let Ok(r) = self.find_replica(service, &label) {
            if r.undrain() {
                info!(service, replica = %label, "drain cancelled: the replica stays");
                return Ok(());
            }
            return Err(ReplicaError::Exists(label));
        }
        let mut m = self.live.membership();
        m.removed.remove(&(service.to_string(), label.clone()));
        let in_config = sc.replicas.iter().any(|r| r.label == label);
        if !in_config {
            m.added.entry(service.to_string()).or_default().push(Added {
                label: label.clone(),
                addr,
                weight,
                source,
            });
        }
        drop(m);
        // A new replica waits for its first passing check, then ramps up (slow start).
        self.live
            .prepare_runtime_replica(service, &label, addr, weight, sc.health.is_some());
        let generation = self.rebuild_locked();
        if sc.health.is_some() {
            self.health_kick.notify_waiters();
        } else if let Some(gate) = self.cold_start(service) {
            // Without health checks it takes traffic now: release what waits for it.
            gate.replica_ready();
        }
        info!(service, replica = %label, source = source.as_str(), generation, "replica added");
        Ok(())
    }

    /// Drains `label` (its address as listed) from `service`: no new requests at once, then
    /// removed when its in-flight requests are done or `deadline` has passed. Returns when it
    /// has been removed (or added back); errors at once when there is no such replica.
    pub async fn drain_replica(
        self: &Arc<Self>,
        service: &str,
        label: &str,
        deadline: Duration,
    ) -> Result<Drained, ReplicaError> {
        let replica = self.find_replica(service, label)?;
        replica.start_draining();
        info!(service, replica = %replica.label, deadline_s = deadline.as_secs_f64(), "replica draining");
        let until = Instant::now() + deadline;
        // The control plane polls (a drain is rare and 50 ms is well below any deadline
        // a user sets); the hot path pays nothing for it.
        let ended = loop {
            if !replica.is_draining() {
                break Drained::Cancelled;
            }
            if replica.inflight.get() <= 0 {
                break Drained::Idle;
            }
            if Instant::now() >= until {
                break Drained::Deadline;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if ended != Drained::Cancelled {
            self.remove_now(service, &replica);
        }
        Ok(ended)
    }

    /// Removes `label` from `service` at once: no new requests; those in flight finish on
    /// their own (they hold the replica), its idle pooled connections are closed.
    pub fn remove_replica(&self, service: &str, label: &str) -> Result<(), ReplicaError> {
        let replica = self.find_replica(service, label)?;
        replica.start_draining();
        self.remove_now(service, &replica);
        Ok(())
    }

    /// Starts a drain without waiting for it (the admin API's `DELETE`); a zero deadline
    /// removes the replica before returning.
    pub fn spawn_drain(
        self: &Arc<Self>,
        service: &str,
        label: &str,
        deadline: Duration,
    ) -> Result<(), ReplicaError> {
        if deadline.is_zero() {
            return self.remove_replica(service, label);
        }
        self.find_replica(service, label)?;
        let (shared, service, label) = (self.clone(), service.to_string(), label.to_string());
        tokio::spawn(async move {
            let _ = shared.drain_replica(&service, &label, deadline).await;
        });
        Ok(())
    }

    fn remove_now(&self, service: &str, replica: &Replica) {
        let _serial = self.rebuild_lock();
        if !replica.is_draining() {
            return; // added back meanwhile
        }
        let label = replica.label.to_string();
        let mut m = self.live.membership();
        let was_added = m.added.get_mut(service).is_some_and(|list| {
            let before = list.len();
            list.retain(|a| a.label != label);
            list.len() != before
        });
        if !was_added {
            m.removed.insert((service.to_string(), label.clone()));
        }
        drop(m);
        let generation = self.rebuild_locked();
        info!(service, replica = %label, generation, "replica removed");
    }

    /// Addresses of `service`'s replicas from `source`, draining ones excluded.
    pub fn replicas_from(&self, service: &str, source: Source) -> Vec<SocketAddr> {
        let snap = self.snapshot.load();
        let Some(svc) = snap.services.iter().find(|s| &*s.name == service) else {
            return Vec::new();
        };
        svc.replicas
            .iter()
            .zip(svc.sources.iter())
            .filter(|(r, s)| **s == source && !r.is_draining())
            .map(|(r, _)| r.addr)
            .collect()
    }
}

/// The live replica set as DNS discovery sees it.
pub(crate) struct DnsSink(pub Arc<Shared>);

impl crate::discovery::ReplicaSink for DnsSink {
    fn dns_replicas(&self, service: &str) -> Vec<SocketAddr> {
        self.0.replicas_from(service, Source::Dns)
    }

    /// A replica of that address that is draining is kept (its record came back).
    fn add_dns_replica(&self, service: &str, addr: SocketAddr, weight: u32) {
        match self.0.add_replica(service, addr, weight, Source::Dns) {
            Ok(()) | Err(ReplicaError::Exists(_)) => {}
            Err(e) => tracing::warn!(service, %addr, error = %e, "DNS replica not added"),
        }
    }

    fn drain_dns_replica(&self, service: &str, addr: SocketAddr) {
        if let Err(e) = self
            .0
            .spawn_drain(service, &addr.to_string(), DNS_DRAIN_DEADLINE)
        {
            tracing::debug!(service, %addr, error = %e, "DNS replica already gone");
        }
    }
}

/// How long a replica whose DNS record vanished may finish its requests.
pub const DNS_DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Starts one discovery task per service with `replicas = { dns = ... }`.
pub(crate) fn spawn_discovery(shared: &Arc<Shared>) -> Vec<tokio::task::JoinHandle<()>> {
    let config = shared.config.load_full();
    let resolver = crate::discovery::Resolver::from_config(config.global.resolver);
    let sink: Arc<dyn crate::discovery::ReplicaSink> = Arc::new(DnsSink(shared.clone()));
    config
        .services
        .iter()
        .filter_map(|(name, sc)| {
            let spec = sc.discovery.clone()?;
            let failures = shared.registry.counter(
                "headroom_dns_lookup_failures_total",
                "DNS lookups of discovered services that failed or came back empty (the last set stays).",
                &[("service", name.as_str())],
            );
            Some(tokio::spawn(crate::discovery::run(
                sink.clone(),
                name.clone(),
                spec,
                resolver,
                failures,
            )))
        })
        .collect()
}

/// Replicas keep their weight as an atomic: a rebuild stores the configured one.
pub(crate) fn set_weight(r: &Replica, weight: u32) {
    r.weight
        .store(weight.clamp(1, headroom_config::MAX_WEIGHT), Relaxed);
}
