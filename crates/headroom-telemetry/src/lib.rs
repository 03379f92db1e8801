//! headroom's telemetry: lock-free metrics with Prometheus text exposition, and the access log.
//!
//! Why not `prometheus-client`: its `Histogram::observe` takes a lock on every call, and
//! every request records two histograms. Ours are plain atomics (one `fetch_add` per bucket
//! hit), created once per reload and held by the hot path as `Arc`s.

pub mod access_log;
mod metrics;

pub use metrics::{Counter, Gauge, Histogram, Registry, LATENCY_BUCKETS_SECONDS};
