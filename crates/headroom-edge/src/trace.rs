//! A request's trace while it is served: its ids (the client's trace, or a new one), the
//! child spans the phases record (guard, cache lookup, each upstream attempt), and at
//! `log` the decision to export them. Only requests on a snapshot with `[watch.tracing]`
//! have one; the rest pay a `None` check.

use headroom_telemetry::trace::{
    format_traceparent, new_span_id, new_trace_id, parse_traceparent, Sampler, SpanData, SpanId,
    SpanKind, TraceId, Value,
};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// What a child span was.
enum ChildKind {
    Guard(&'static str),
    Cache(&'static str),
    Attempt {
        service: Arc<str>,
        replica: Arc<str>,
        /// The response's status, or 0 when there was none.
        status: u16,
        error: Option<String>,
    },
}

struct Child {
    span_id: SpanId,
    start: Instant,
    end: Instant,
    kind: ChildKind,
}

/// An attempt's span, begun: its id went upstream in `traceparent`.
pub(crate) struct AttemptSpan {
    span_id: SpanId,
    start: Instant,
}

pub struct RequestTrace {
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<SpanId>,
    /// The head decision, sent upstream as the sampled flag.
    sampled: bool,
    tracestate: Option<HeaderValue>,
    /// The client sent a `tracestate` without a valid `traceparent`: not sent on.
    strip_tracestate: bool,
    start_unix_ns: u64,
    start: Instant,
    method: http::Method,
    uri: http::Uri,
    host: Option<HeaderValue>,
    children: Vec<Child>,
}

impl RequestTrace {
    /// `receive` begins: the client's trace is continued (a valid `traceparent`), or a new
    /// one is started; the head sampling decision is made now.
    pub(crate) fn begin<B>(
        sampler: &Sampler,
        req: &http::Request<B>,
        start: Instant,
    ) -> Box<RequestTrace> {
        let parent = req
            .headers()
            .get(&TRACEPARENT)
            .and_then(|v| parse_traceparent(v.as_bytes()));
        let trace_id = parent.map_or_else(new_trace_id, |p| p.trace_id);
        let sampled = sampler.head(&trace_id, parent.as_ref());
        let state = req.headers().get(&TRACESTATE);
        Box::new(RequestTrace {
            trace_id,
            span_id: new_span_id(),
            parent: parent.map(|p| p.span_id),
            sampled,
            // W3C: tracestate goes on only with a valid traceparent.
            tracestate: parent.and(state.cloned()),
            strip_tracestate: parent.is_none() && state.is_some(),
            start_unix_ns: unix_ns(SystemTime::now()),
            start,
            method: req.method().clone(),
            uri: req.uri().clone(),
            host: req.headers().get(http::header::HOST).cloned(),
            children: Vec::new(),
        })
    }

    /// A phase's span (guard, cache lookup) that ran from `start` until now.
    pub(crate) fn guard(&mut self, start: Instant, decision: &'static str) {
        self.child(start, ChildKind::Guard(decision));
    }

    pub(crate) fn cache(&mut self, start: Instant, result: &'static str) {
        self.child(start, ChildKind::Cache(result));
    }

    fn child(&mut self, start: Instant, kind: ChildKind) {
        self.children.push(Child {
            span_id: new_span_id(),
            start,
            end: Instant::now(),
            kind,
        });
    }

    /// An upstream attempt begins: its span's id goes upstream as the parent in
    /// `traceparent` (replacing the client's), with the client's `tracestate`.
    pub(crate) fn attempt_begin(&self, headers: &mut HeaderMap) -> AttemptSpan {
        let span_id = new_span_id();
        let value = format_traceparent(&self.trace_id, &span_id, self.sampled);
        if let Ok(v) = HeaderValue::from_bytes(&value) {
            headers.insert(TRACEPARENT.clone(), v);
        }
        // A valid client tracestate is already among the forwarded fields.
        if self.strip_tracestate {
            headers.remove(&TRACESTATE);
        }
        AttemptSpan {
            span_id,
            start: Instant::now(),
        }
    }

    pub(crate) fn attempt_end(
        &mut self,
        span: AttemptSpan,
        service: &Arc<str>,
        replica: &Arc<str>,
        status: u16,
        error: Option<String>,
    ) {
        self.children.push(Child {
            span_id: span.span_id,
            start: span.start,
            end: Instant::now(),
            kind: ChildKind::Attempt {
                service: service.clone(),
                replica: replica.clone(),
                status,
                error,
            },
        });
    }

    /// `log`: whether the request is exported (head-sampled, failed or slow), and if so
    /// its spans: the request's (SERVER) and its children.
    pub(crate) fn finish(self, sampler: &Sampler, end: &Ended<'_>) -> Option<Vec<SpanData>> {
        if !sampler.keep(self.sampled, end.status, end.elapsed) {
            return None;
        }
        let at = |i: Instant| {
            self.start_unix_ns + i.saturating_duration_since(self.start).as_nanos() as u64
        };
        let mut spans = Vec::with_capacity(1 + self.children.len());
        let path = self.uri.path().to_string();
        let mut attributes = vec![
            ("http.request.method", Value::Str(self.method.to_string())),
            ("url.path", Value::Str(path)),
            ("http.response.status_code", Value::Int(end.status as i64)),
            ("client.address", Value::Str(end.client.to_string())),
            (
                "headroom.request_id",
                Value::Str(end.request_id.to_string()),
            ),
        ];
        if let Some(q) = self.uri.query() {
            attributes.push(("url.query", Value::Str(q.to_string())));
        }
        if let Some(host) = crate::headers::host_from(&self.uri, self.host.as_ref()) {
            attributes.push(("server.address", Value::Str(host.to_string())));
        }
        if !end.route.is_empty() {
            attributes.push(("http.route", Value::Str(end.route.to_string())));
        }
        for (key, v) in [
            ("headroom.service", end.service),
            ("headroom.replica", end.replica),
            ("headroom.cache", end.cache),
            ("headroom.guard", end.guard),
            ("headroom.consumer", end.consumer),
        ] {
            if !v.is_empty() {
                attributes.push((key, Value::Str(v.to_string())));
            }
        }
        if end.attempts > 0 {
            attributes.push(("headroom.attempts", Value::Int(end.attempts as i64)));
        }
        let name = if end.route.is_empty() {
            self.method.to_string()
        } else {
            format!("{} {}", self.method, end.route)
        };
        spans.push(SpanData {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent: self.parent,
            trace_state: self
                .tracestate
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            name,
            kind: SpanKind::Server,
            start_unix_ns: self.start_unix_ns,
            end_unix_ns: self.start_unix_ns + end.elapsed.as_nanos() as u64,
            attributes,
            error: (end.status >= 500).then(|| format!("answered {}", end.status)),
        });
        for c in &self.children {
            let (name, kind, attributes, error) = match &c.kind {
                ChildKind::Guard(d) => (
                    "guard".to_string(),
                    SpanKind::Internal,
                    vec![("headroom.guard", Value::Str(d.to_string()))],
                    None,
                ),
                ChildKind::Cache(r) => (
                    "cache lookup".to_string(),
                    SpanKind::Internal,
                    vec![("headroom.cache", Value::Str(r.to_string()))],
                    None,
                ),
                ChildKind::Attempt {
                    service,
                    replica,
                    status,
                    error,
                } => {
                    let mut a = vec![
                        ("http.request.method", Value::Str(self.method.to_string())),
                        ("headroom.service", Value::Str(service.to_string())),
                        ("server.address", Value::Str(replica.to_string())),
                    ];
                    if *status > 0 {
                        a.push(("http.response.status_code", Value::Int(*status as i64)));
                    }
                    let error = error
                        .clone()
                        .or_else(|| (*status >= 500).then(|| format!("answered {status}")));
                    (format!("upstream {service}"), SpanKind::Client, a, error)
                }
            };
            spans.push(SpanData {
                trace_id: self.trace_id,
                span_id: c.span_id,
                parent: Some(self.span_id),
                trace_state: String::new(),
                name,
                kind,
                start_unix_ns: at(c.start),
                end_unix_ns: at(c.end),
                attributes,
                error,
            });
        }
        Some(spans)
    }
}

/// What `log` knows of the request when it ends.
pub(crate) struct Ended<'a> {
    pub status: u16,
    pub elapsed: Duration,
    pub client: std::net::IpAddr,
    pub request_id: &'a str,
    pub route: &'a str,
    pub service: &'a str,
    pub replica: &'a str,
    pub cache: &'a str,
    pub guard: &'a str,
    pub consumer: &'a str,
    pub attempts: u32,
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
