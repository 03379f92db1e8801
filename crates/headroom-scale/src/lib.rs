//! headroom's autoscaler. The two algorithms are pure state machines fed with readings and
//! the time, so they are tested against the worked examples of the documentation they
//! follow without a clock or a process:
//!
//! - [`hpa`]: Kubernetes' horizontal pod autoscaler (`pkg/controller/podautoscaler`): the
//!   replica calculator with its tolerance and its treatment of missing and not-ready
//!   replicas, then the stabilisation windows and the `behavior` policies.
//! - [`kpa`]: Knative's pod autoscaler: concurrency averaged over a stable and a panic
//!   window, panic mode, the target utilisation and the scale-down delay.
//!
//! Times are seconds (`f64`) on any monotonic clock the caller chooses.

#![forbid(unsafe_code)]

pub mod hpa;
pub mod kpa;
pub mod process;
pub mod schedule;
pub mod shim;
