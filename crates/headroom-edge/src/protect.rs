//! A service's protection: load shedding (`[service.NAME.shed]`) and its circuit breaker
//! (`[service.NAME.circuit]`), from headroom-guard, with their metrics. Kept across reloads
//! in [`crate::snapshot::Live`] while their config stays the same, so a reload neither
//! resets the adaptive limit nor closes an open circuit.

use headroom_config::guard::{CircuitConfig, Priority as ConfigPriority, ShedConfig};
use headroom_guard::{
    AdaptiveSettings, Circuit, CircuitSettings, CircuitState, Priority, ShedReason, ShedSettings,
    Shedder,
};
use headroom_telemetry::{Counter, Gauge, Histogram, Registry};
use std::sync::Arc;

/// One service's shedder and breaker (either may be absent) and their series.
#[derive(Clone)]
pub struct Protection {
    pub shed: Option<Shedder>,
    pub circuit: Option<Circuit>,
    shed_cfg: Option<ShedConfig>,
    circuit_cfg: Option<CircuitConfig>,
    shed_total: [Arc<Counter>; 3],
    circuit_open_total: Arc<Counter>,
    pub(crate) limit: Arc<Gauge>,
    pub(crate) inflight: Arc<Gauge>,
    pub(crate) queued: Arc<Gauge>,
    /// Time from asking the shedder to a slot (0 for most: a slot was free).
    pub(crate) queue_wait: Arc<Histogram>,
}

impl std::fmt::Debug for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protection")
            .field("shed", &self.shed_cfg)
            .field("circuit", &self.circuit_cfg)
            .finish_non_exhaustive()
    }
}

impl Protection {
    /// `None` when the service has neither.
    pub(crate) fn new(
        service: &str,
        shed: Option<&ShedConfig>,
        circuit: Option<&CircuitConfig>,
        registry: &Registry,
    ) -> Option<Protection> {
        if shed.is_none() && circuit.is_none() {
            return None;
        }
        let labels = [("service", service)];
        let shed_total = |reason: ShedReason| {
            registry.counter(
                "headroom_guard_shed_total",
                "Requests shed in front of a service, by reason: queue_full, queue_timeout, sheddable.",
                &[("service", service), ("reason", reason.as_str())],
            )
        };
        let state = registry.gauge(
            "headroom_guard_circuit_state",
            "A service's circuit breaker: 0 closed, 1 half-open, 2 open.",
            &labels,
        );
        let circuit_cfg = circuit.cloned();
        let circuit = circuit.map(|c| {
            let circuit = Circuit::new(&CircuitSettings {
                consecutive_failures: c.consecutive_failures,
                failure_rate: c.failure_rate,
                window: c.window,
                open_for: c.open_for,
                half_open_probes: c.half_open_probes,
            });
            let name: Arc<str> = service.into();
            let gauge = state.clone();
            circuit.observe(move |from, to, _| {
                gauge.set(match to {
                    CircuitState::Closed => 0,
                    CircuitState::HalfOpen => 1,
                    CircuitState::Open => 2,
                });
                match to {
                    CircuitState::Open => tracing::warn!(service = %name, from = from.as_str(), "circuit open: the service fails fast (503) until a probe succeeds"),
                    _ => tracing::info!(service = %name, from = from.as_str(), to = to.as_str(), "circuit"),
                }
            });
            circuit
        });
        Some(Protection {
            shed: shed.map(|s| Shedder::new(&shed_settings(s))),
            circuit,
            shed_cfg: shed.cloned(),
            circuit_cfg,
            shed_total: [
                shed_total(ShedReason::QueueFull),
                shed_total(ShedReason::QueueTimeout),
                shed_total(ShedReason::Sheddable),
            ],
            circuit_open_total: registry.counter(
                "headroom_guard_circuit_rejected_total",
                "Requests answered 503 at once because the service's circuit was open.",
                &labels,
            ),
            limit: registry.gauge(
                "headroom_guard_concurrency_limit",
                "A service's concurrency limit now (the adaptive limit, or the fixed one).",
                &labels,
            ),
            inflight: registry.gauge(
                "headroom_guard_concurrency_inflight",
                "Requests admitted by a service's shedder and not yet answered.",
                &labels,
            ),
            queued: registry.gauge(
                "headroom_guard_concurrency_queued",
                "Requests waiting in a service's shedding queue.",
                &labels,
            ),
            queue_wait: registry.histogram(
                "headroom_guard_queue_wait_seconds",
                "Time admitted requests waited for a slot in a service's shedder.",
                &labels,
            ),
        })
    }

    /// The same protection if `shed` and `circuit` are what it was made for.
    pub(crate) fn same(&self, shed: Option<&ShedConfig>, circuit: Option<&CircuitConfig>) -> bool {
        self.shed_cfg.as_ref() == shed && self.circuit_cfg.as_ref() == circuit
    }

    pub(crate) fn count_shed(&self, reason: ShedReason) {
        let i = match reason {
            ShedReason::QueueFull => 0,
            ShedReason::QueueTimeout => 1,
            ShedReason::Sheddable => 2,
        };
        self.shed_total[i].inc();
    }

    pub(crate) fn count_open(&self) {
        self.circuit_open_total.inc();
    }

    /// The gauges, from the shedder's state now.
    pub(crate) fn observe(&self) {
        if let Some(s) = &self.shed {
            self.limit.set(i64::from(s.limit()));
            self.inflight.set(i64::from(s.inflight()));
            self.queued.set(i64::from(s.queued()));
        }
    }
}

fn shed_settings(s: &ShedConfig) -> ShedSettings {
    ShedSettings {
        max_inflight: s.max_inflight,
        adaptive: s
            .adaptive
            .map(|(min, max, initial, tolerance)| AdaptiveSettings {
                min_limit: min,
                max_limit: max,
                initial_limit: initial,
                tolerance,
                ..AdaptiveSettings::default()
            }),
        queue: s.queue,
        queue_timeout: s.queue_timeout,
        critical_reserve: s.critical_reserve,
    }
}

/// The guard's priority for a route's.
pub(crate) fn priority(p: ConfigPriority) -> Priority {
    match p {
        ConfigPriority::Critical => Priority::Critical,
        ConfigPriority::Normal => Priority::Normal,
        ConfigPriority::Sheddable => Priority::Sheddable,
    }
}
