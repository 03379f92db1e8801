//! Traces: W3C Trace Context (`traceparent`) read and written, the sampling decision, and
//! the bounded queue that carries finished spans from the workers to the exporter.
//!
//! The hot path only fills plain values in here; encoding (OTLP protobuf) and sending
//! happen on the control runtime (`headroom-watch`'s exporter), so a slow or dead
//! collector costs the proxy nothing but the spans it drops, which are counted.

use crate::{Counter, Registry};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

/// A `traceparent` field a client sent: its trace, its span (our parent) and whether it
/// sampled the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

/// Reads a `traceparent` field (W3C Trace Context, level 1): `00-<32 hex>-<16 hex>-<2 hex>`,
/// lowercase; all-zero ids and version `ff` are invalid. A later version may append
/// fields after a `-`, which are ignored, as the spec asks. `None`: start a new trace.
pub fn parse_traceparent(v: &[u8]) -> Option<Parent> {
    if v.len() < 55 {
        return None;
    }
    let version = hex_byte(&v[0..2])?;
    if version == 0xff || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    if (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let mut trace_id = [0u8; 16];
    for (i, b) in trace_id.iter_mut().enumerate() {
        *b = hex_byte(&v[3 + 2 * i..5 + 2 * i])?;
    }
    let mut span_id = [0u8; 8];
    for (i, b) in span_id.iter_mut().enumerate() {
        *b = hex_byte(&v[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&v[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    let d = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(d(two[0])? << 4 | d(two[1])?)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The `traceparent` value for a span of ours: version 00, the sampled flag as decided.
pub fn format_traceparent(trace_id: &TraceId, span_id: &SpanId, sampled: bool) -> [u8; 55] {
    let mut out = [b'-'; 55];
    out[0] = b'0';
    out[1] = b'0';
    let mut put = |at: usize, bytes: &[u8]| {
        for (i, b) in bytes.iter().enumerate() {
            out[at + 2 * i] = HEX[(b >> 4) as usize];
            out[at + 2 * i + 1] = HEX[(b & 15) as usize];
        }
    };
    put(3, trace_id);
    put(36, span_id);
    put(53, &[sampled as u8]);
    out
}

/// Ids as OTLP and the W3C spec want them: random, never all zero.
pub fn new_trace_id() -> TraceId {
    fastrand::u128(1..).to_be_bytes()
}

pub fn new_span_id() -> SpanId {
    fastrand::u64(1..).to_be_bytes()
}

/// Which requests are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampler {
    /// Head sampling of new traces: a trace id whose low 64 bits are below this is sampled
    /// (OpenTelemetry's `TraceIdRatioBased`); `u64::MAX` samples all.
    threshold: u64,
    /// A request answered with a 5xx is exported whatever the head decision.
    pub errors: bool,
    /// A request slower than this is exported whatever the head decision.
    pub slow: Option<Duration>,
}

impl Sampler {
    pub fn new(ratio: f64, errors: bool, slow: Option<Duration>) -> Self {
        let threshold = if ratio >= 1.0 {
            u64::MAX
        } else {
            (ratio.max(0.0) * u64::MAX as f64) as u64
        };
        Sampler {
            threshold,
            errors,
            slow,
        }
    }

    /// The head decision for a request: the client's, when it sent one (parent-based), else
    /// the ratio's over the trace id (so every instance decides the same for a trace).
    pub fn head(&self, trace_id: &TraceId, parent: Option<&Parent>) -> bool {
        match parent {
            Some(p) => p.sampled,
            None => {
                let low = u64::from_be_bytes(trace_id[8..].try_into().unwrap_or([0; 8]));
                self.threshold == u64::MAX || low < self.threshold
            }
        }
    }

    /// The decision once the request has ended: head-sampled, failed or slow.
    pub fn keep(&self, head: bool, status: u16, elapsed: Duration) -> bool {
        head || (self.errors && status >= 500) || self.slow.is_some_and(|s| elapsed >= s)
    }
}

/// OTLP's span kinds that headroom uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Internal,
    Server,
    Client,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
}

/// One finished span, as plain values.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanData {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    /// The `tracestate` the client sent, for the root span (W3C: kept as received).
    pub trace_state: String,
    pub name: String,
    pub kind: SpanKind,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub attributes: Vec<(&'static str, Value)>,
    /// `Some(message)`: the span ended in error.
    pub error: Option<String>,
}

/// `headroom_trace_spans_dropped_total`'s help, shared by the queue (`reason="queue_full"`)
/// and the exporter (`reason="export_failed"`).
pub const DROPPED_HELP: &str =
    "Spans not exported: the export queue was full, or the collector refused them or could not be reached";

/// Where finished requests' spans wait for the exporter: a bounded queue filled without
/// blocking (a full queue drops the request's spans and counts them).
pub struct Tracer {
    tx: SyncSender<Vec<SpanData>>,
    rx: Mutex<Option<Receiver<Vec<SpanData>>>>,
    capacity: usize,
    dropped: Arc<Counter>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Tracer {
    /// A queue of `capacity` requests' spans; its drops are counted in `registry` as
    /// `headroom_trace_spans_dropped_total{reason="queue_full"}`.
    pub fn new(capacity: usize, registry: &Registry) -> Tracer {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        Tracer {
            tx,
            rx: Mutex::new(Some(rx)),
            capacity: capacity.max(1),
            dropped: registry.counter(
                "headroom_trace_spans_dropped_total",
                DROPPED_HELP,
                &[("reason", "queue_full")],
            ),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues one request's spans; never blocks.
    pub fn submit(&self, spans: Vec<SpanData>) {
        let n = spans.len() as u64;
        match self.tx.try_send(spans) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.add(n);
            }
        }
    }

    /// The queue's other end, for the exporter; `None` once taken.
    pub fn take_receiver(&self) -> Option<Receiver<Vec<SpanData>>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_the_specs_example_and_writes_it_back() {
        let p = parse_traceparent(EXAMPLE).unwrap();
        assert!(p.sampled);
        assert_eq!(p.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(
            &format_traceparent(&p.trace_id, &p.span_id, true)[..],
            EXAMPLE
        );
        let unsampled = format_traceparent(&p.trace_id, &p.span_id, false);
        assert!(unsampled.ends_with(b"-00"));
    }

    #[test]
    fn refuses_what_the_spec_calls_invalid() {
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"",
        ] {
            assert_eq!(
                parse_traceparent(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A later version may add fields after a dash.
        let future = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert!(parse_traceparent(future).is_some());
    }

    #[test]
    fn head_sampling_follows_the_parent_else_the_ratio() {
        let none = Sampler::new(0.0, false, None);
        let all = Sampler::new(1.0, false, None);
        let id = new_trace_id();
        assert!(!none.head(&id, None));
        assert!(all.head(&id, None));
        let p = parse_traceparent(EXAMPLE).unwrap();
        assert!(none.head(&p.trace_id, Some(&p)));
        let half = Sampler::new(0.5, false, None);
        let kept = (0..10_000)
            .filter(|_| half.head(&new_trace_id(), None))
            .count();
        assert!((4_000..6_000).contains(&kept), "{kept}");
    }

    #[test]
    fn errors_and_slow_requests_are_kept_whatever_the_head_said() {
        let s = Sampler::new(0.0, true, Some(Duration::from_millis(500)));
        assert!(!s.keep(false, 200, Duration::from_millis(10)));
        assert!(s.keep(false, 502, Duration::from_millis(10)));
        assert!(s.keep(false, 200, Duration::from_millis(500)));
        assert!(s.keep(true, 200, Duration::ZERO));
        let off = Sampler::new(0.0, false, None);
        assert!(!off.keep(false, 503, Duration::from_secs(60)));
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let registry = Registry::new();
        let t = Tracer::new(1, &registry);
        let span = |n| SpanData {
            trace_id: [1; 16],
            span_id: [n; 8],
            parent: None,
            trace_state: String::new(),
            name: "x".into(),
            kind: SpanKind::Server,
            start_unix_ns: 0,
            end_unix_ns: 1,
            attributes: Vec::new(),
            error: None,
        };
        t.submit(vec![span(1)]);
        t.submit(vec![span(2), span(3)]);
        let rx = t.take_receiver().unwrap();
        assert!(t.take_receiver().is_none());
        assert_eq!(rx.try_recv().unwrap()[0].span_id, [1; 8]);
        assert!(rx.try_recv().is_err());
        assert!(registry
            .render()
            .contains("headroom_trace_spans_dropped_total{reason=\"queue_full\"} 2"));
    }
}
