//! headroom's telemetry: lock-free metrics with Prometheus text exposition, and the access log.
//!
//! Why not `prometheus-client`: its `Histogram::observe` takes a lock on every call, and
//! every request records two histograms. Ours are plain atomics (one `fetch_add` per bucket
//! hit), created once per reload and held by the hot path as `Arc`s. The ones bumped per
//! request keep one cache-line-padded shard per worker thread ([`set_worker`]), summed when
//! read, so workers on different cores never write the same cache line.
//!
//! The access log never blocks a worker: each thread batches its lines and hands full
//! batches to one writer thread through a bounded queue; what does not fit is dropped and
//! counted ([`access_log`]).

pub mod access_log;
mod metrics;
mod registry;
mod shard;

pub use metrics::{
    Counter, Gauge, Histogram, LatencyBounds, UpDownCounter, LATENCY_BUCKETS_SECONDS,
    MAX_LATENCY_BOUNDS,
};
pub mod process;
pub mod trace;
pub use access_log::civil_from_days;
pub use registry::{Format, ReadFn, Registry};
pub use shard::set_worker;
