//! The trace exporter: takes finished requests' spans from the workers' bounded queue,
//! batches them, and POSTs them to an OpenTelemetry collector as OTLP/HTTP protobuf
//! (`ExportTraceServiceRequest`, `Content-Type: application/x-protobuf`).
//!
//! A collector that is slow or gone costs the proxy nothing: the queue is filled without
//! blocking and drops (and counts) what does not fit; a batch the collector refuses with a
//! retryable answer (429, 502, 503, 504, a broken connection) is tried again on the next
//! tick, at most [`TRIES`] times, then dropped and counted.

use crate::alert::{Endpoint, HttpEndpoint, ReceiverUrl};
use bytes::Bytes;
use headroom_telemetry::trace::{SpanData, SpanKind, Value};
use headroom_telemetry::{Counter, Registry};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{self as otlp, ResourceSpans, ScopeSpans};
use prost::Message;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Tries of one batch before it is dropped.
pub const TRIES: u32 = 3;

/// `[watch.tracing]` as the exporter needs it; read again every tick, so a reload that
/// changes the collector takes effect within one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub service_name: String,
    pub batch: usize,
    pub interval: Duration,
    pub timeout: Duration,
}

/// The exporter's counters, on `/metrics`.
struct Stats {
    exported: Arc<Counter>,
    failed: Arc<Counter>,
    requests_ok: Arc<Counter>,
    requests_failed: Arc<Counter>,
}

impl Stats {
    fn new(registry: &Registry) -> Stats {
        let exports = |result| {
            registry.counter(
                "headroom_trace_exports_total",
                "Export requests to the collector, by outcome.",
                &[("result", result)],
            )
        };
        Stats {
            exported: registry.counter(
                "headroom_trace_spans_exported_total",
                "Spans the collector accepted.",
                &[],
            ),
            failed: registry.counter(
                "headroom_trace_spans_dropped_total",
                headroom_telemetry::trace::DROPPED_HELP,
                &[("reason", "export_failed")],
            ),
            requests_ok: exports("ok"),
            requests_failed: exports("failed"),
        }
    }
}

/// Runs until `stop` turns true, then sends what is queued once more and returns.
/// `options` gives the tracing config in force (`None`: tracing is off, queued spans are
/// discarded).
pub async fn run(
    rx: Receiver<Vec<SpanData>>,
    options: impl Fn() -> Option<ExportOptions> + Send,
    registry: Arc<Registry>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let stats = Stats::new(&registry);
    let mut endpoint: Option<(ExportOptions, HttpEndpoint)> = None;
    // A batch the collector could not take yet, and how often it was tried.
    let mut pending: Option<(Vec<SpanData>, u32)> = None;
    let mut failing = false;
    loop {
        let interval = endpoint
            .as_ref()
            .map_or(Duration::from_secs(1), |(o, _)| o.interval);
        let stopping = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            _ = stop.changed() => true,
        } || *stop.borrow();
        let Some(opts) = options() else {
            while rx.try_recv().is_ok() {}
            pending = None;
            endpoint = None;
            if stopping {
                return;
            }
            continue;
        };
        if endpoint.as_ref().is_none_or(|(o, _)| *o != opts) {
            match make_endpoint(&opts) {
                Ok(e) => endpoint = Some((opts.clone(), e)),
                Err(why) => {
                    warn!(endpoint = %opts.endpoint, "tracing: {why}");
                    endpoint = None;
                }
            }
        }
        let Some((opts, ep)) = &endpoint else {
            continue;
        };
        // Send batches until the queue is empty (or the collector fails).
        loop {
            let (batch, tries) = match pending.take() {
                Some(p) => p,
                None => {
                    let batch = take_batch(&rx, opts.batch);
                    if batch.is_empty() {
                        break;
                    }
                    (batch, 0)
                }
            };
            let body = Bytes::from(encode(&batch, &opts.service_name));
            match ep.post(body).await {
                Ok(()) => {
                    stats.requests_ok.inc();
                    stats.exported.add(batch.len() as u64);
                    if std::mem::replace(&mut failing, false) {
                        info!(endpoint = %opts.endpoint, "tracing: the collector takes spans again");
                    }
                }
                Err(e) => {
                    stats.requests_failed.inc();
                    if !std::mem::replace(&mut failing, true) {
                        warn!(endpoint = %opts.endpoint, "tracing: spans not exported: {e}");
                    }
                    if e.is_retryable() && tries + 1 < TRIES && !stopping {
                        pending = Some((batch, tries + 1));
                    } else {
                        stats.failed.add(batch.len() as u64);
                    }
                    break;
                }
            }
        }
        if stopping {
            return;
        }
    }
}

fn make_endpoint(o: &ExportOptions) -> Result<HttpEndpoint, String> {
    let url: ReceiverUrl = o.endpoint.parse().map_err(|e| format!("{e}"))?;
    let mut fields = Vec::new();
    for (k, v) in &o.headers {
        let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
        let value = http::HeaderValue::from_str(v).map_err(|e| e.to_string())?;
        fields.push((name, value));
    }
    Ok(HttpEndpoint::new(url, o.timeout).with_body_type("application/x-protobuf", fields))
}

/// Up to `max` spans, whole requests at a time (a request's spans are never split, so a
/// batch may be a request's worth over `max`).
fn take_batch(rx: &Receiver<Vec<SpanData>>, max: usize) -> Vec<SpanData> {
    let mut batch = Vec::new();
    while batch.len() < max {
        match rx.try_recv() {
            Ok(spans) => batch.extend(spans),
            Err(_) => break,
        }
    }
    batch
}

/// One OTLP export request: one resource (`service.name`), one scope (headroom), the spans.
pub fn encode(spans: &[SpanData], service_name: &str) -> Vec<u8> {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", &Value::Str(service_name.to_string())),
                    kv(
                        "service.version",
                        &Value::Str(env!("CARGO_PKG_VERSION").to_string()),
                    ),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "headroom".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans: spans.iter().map(span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    request.encode_to_vec()
}

fn span(s: &SpanData) -> otlp::Span {
    let kind = match s.kind {
        SpanKind::Internal => otlp::span::SpanKind::Internal,
        SpanKind::Server => otlp::span::SpanKind::Server,
        SpanKind::Client => otlp::span::SpanKind::Client,
    };
    otlp::Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s.trace_state.clone(),
        parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: s.name.clone(),
        kind: kind as i32,
        start_time_unix_nano: s.start_unix_ns,
        end_time_unix_nano: s.end_unix_ns,
        attributes: s.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
        status: Some(match &s.error {
            Some(message) => otlp::Status {
                message: message.clone(),
                code: otlp::status::StatusCode::Error as i32,
            },
            None => otlp::Status::default(),
        }),
        ..Default::default()
    }
}

fn kv(key: &str, v: &Value) -> KeyValue {
    let value = match v {
        Value::Str(s) => any_value::Value::StringValue(s.clone()),
        Value::Int(i) => any_value::Value::IntValue(*i),
    };
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_what_an_otlp_receiver_decodes() {
        let s = SpanData {
            trace_id: [7; 16],
            span_id: [8; 8],
            parent: Some([9; 8]),
            trace_state: "a=b".into(),
            name: "GET api".into(),
            kind: SpanKind::Server,
            start_unix_ns: 1_000,
            end_unix_ns: 2_000,
            attributes: vec![("http.response.status_code", Value::Int(502))],
            error: Some("answered 502".into()),
        };
        let bytes = encode(&[s], "edge-1");
        let back = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
        let rs = &back.resource_spans[0];
        let service = &rs.resource.as_ref().unwrap().attributes[0];
        assert_eq!(service.key, "service.name");
        let span = &rs.scope_spans[0].spans[0];
        assert_eq!(span.trace_id, vec![7; 16]);
        assert_eq!(span.parent_span_id, vec![9; 8]);
        assert_eq!(span.kind, otlp::span::SpanKind::Server as i32);
        assert_eq!(span.trace_state, "a=b");
        assert_eq!(
            span.status.as_ref().unwrap().code,
            otlp::status::StatusCode::Error as i32
        );
        assert_eq!(
            span.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(502))
        );
    }

    #[test]
    fn a_batch_takes_whole_requests() {
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        let one = |n| SpanData {
            trace_id: [1; 16],
            span_id: [n; 8],
            parent: None,
            trace_state: String::new(),
            name: String::new(),
            kind: SpanKind::Internal,
            start_unix_ns: 0,
            end_unix_ns: 0,
            attributes: Vec::new(),
            error: None,
        };
        for _ in 0..3 {
            tx.send(vec![one(1), one(2)]).unwrap();
        }
        assert_eq!(take_batch(&rx, 3).len(), 4);
        assert_eq!(take_batch(&rx, 3).len(), 2);
        assert!(take_batch(&rx, 3).is_empty());
    }
}
