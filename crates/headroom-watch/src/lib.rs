//! The watch plane: what headroom remembers of the requests it served, and what it makes of
//! them. Nothing here is on the request path: a sampler reads the edge's counters and
//! histograms on a timer and feeds [`history`]; [`slo`] judges the history against the
//! configured objectives; [`alert`] tells Alertmanager or a webhook when a judgement changes.
#![forbid(unsafe_code)]
pub mod alert;
pub mod history;
pub mod slo;
pub mod trace_export;
