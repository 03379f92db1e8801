//! The per-request context every phase shares, and `log`, the last phase, which records
//! metrics and the access log line once the response body has ended (or was dropped).

use crate::forward::UpstreamDone;
use crate::headers::{host_from, new_request_id, X_REQUEST_ID};
use crate::snapshot::{Red, RouteAction, Snapshot, Target};
use crate::Shared;
use headroom_telemetry::access_log::{self, Format};
use headroom_telemetry::Histogram;
use http::header::{self, HeaderValue};
use http::{Method, Request, Uri, Version};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What a connection knows about itself; shared by its requests.
#[derive(Debug)]
pub struct ConnCtx {
    pub shared: Arc<Shared>,
    pub listener: usize,
    pub client: SocketAddr,
    /// The client's IP as a header value, made once per connection for X-Forwarded-For.
    pub client_ip: HeaderValue,
    pub tls: bool,
    pub max_body_bytes: u64,
    /// The listener's `allow`/`deny` refuse this peer: every request gets 403.
    pub denied: bool,
}

/// What the phases found out and did, for metrics and the log line.
#[derive(Default)]
pub struct Record {
    /// Index of the matched route in the snapshot.
    pub route: Option<usize>,
    /// Index of the route's target (0 for `service`, the split entry for `split`).
    pub target: Option<usize>,
    /// Requests sent upstream (connect failures that sent nothing are not counted).
    pub attempts: u32,
    /// Index (in its target's service) of the replica of the last attempt.
    pub replica: Option<usize>,
    /// Time from sending upstream to the response head, of the attempt that answered.
    pub upstream_duration: Option<Duration>,
    /// The upstream exchange whose response is streaming, released when it ends.
    pub(crate) upstream: Option<UpstreamDone>,
    /// The status sent; 0 until `respond`.
    pub status: u16,
    /// What the route's cache did (`X-Cache`'s word), for the log line; "" without one.
    pub cache: &'static str,
    /// What the guard decided when it answered (`limited`, `unavailable`); "" otherwise.
    pub guard: &'static str,
    /// The authenticated consumer, for the log line.
    pub consumer: Option<Arc<headroom_guard::Consumer>>,
    /// Fields the guard adds to the response it let through (`RateLimit`, CORS).
    pub response_fields: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The request's trace, when the snapshot traces (`[watch.tracing]`).
    pub trace: Option<Box<crate::trace::RequestTrace>>,
    /// The client's method and URI, moved here (not cloned) by `forward` once it is done
    /// with them: what `respond` (a cacheable GET) and `log` (a slow path) read of a
    /// forwarded request. `None` for a request answered without forwarding.
    pub request_line: Option<(Method, Uri)>,
}

/// The request's fields the access log line needs, kept as the request had them: clones of
/// the URI and header values share their bytes, so keeping them allocates nothing.
struct LogFields {
    format: Format,
    time: SystemTime,
    method: Method,
    uri: Uri,
    host: Option<HeaderValue>,
    version: Version,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
}

/// One request's context, from `receive` to `log`. Holds the snapshot the request started
/// on, so routes and counters are found by index and stay valid across a reload.
pub struct RequestCtx {
    pub conn: Arc<ConnCtx>,
    pub snap: Arc<Snapshot>,
    pub request_id: HeaderValue,
    pub start: Instant,
    pub record: Record,
    /// Boxed: only requests that are logged pay for it.
    log: Option<Box<LogFields>>,
    ended: bool,
}

impl RequestCtx {
    /// `receive` begins: the clock starts, the request counts as in flight, the current
    /// snapshot is taken and the request id is the client's (if sane) or a new one.
    pub fn new<B>(conn: Arc<ConnCtx>, req: &Request<B>) -> Self {
        let start = Instant::now();
        conn.shared.inflight.inc();
        let snap = conn.shared.snapshot.load_full();
        let request_id = match req.headers().get(&X_REQUEST_ID) {
            Some(v) if !v.is_empty() && v.len() <= 128 => v.clone(),
            _ => new_request_id(),
        };
        let log = snap.access_log.map(|format| {
            Box::new(LogFields {
                format,
                time: SystemTime::now(),
                method: req.method().clone(),
                uri: req.uri().clone(),
                host: req.headers().get(header::HOST).cloned(),
                version: req.version(),
                user_agent: req.headers().get(header::USER_AGENT).cloned(),
                referer: req.headers().get(header::REFERER).cloned(),
            })
        });
        let mut record = Record::default();
        if let Some(sampler) = &snap.tracing {
            record.trace = Some(crate::trace::RequestTrace::begin(sampler, req, start));
        }
        RequestCtx {
            conn,
            snap,
            request_id,
            start,
            record,
            log,
            ended: false,
        }
    }

    /// True when this request gets an access log line.
    pub fn logs(&self) -> bool {
        self.log.is_some()
    }

    /// The counters and latency histogram this request is counted in: its target's, else
    /// its route's, else those of requests answered before routing.
    fn counters(&self) -> (&Red, &Histogram, Option<&Target>) {
        let shared = &self.conn.shared;
        let Some(r) = self.record.route else {
            return (&shared.unrouted, &shared.unrouted_latency, None);
        };
        let route = &self.snap.routes[r];
        let target = match (&route.action, self.record.target) {
            (RouteAction::Forward(t), Some(_)) => Some(t),
            (RouteAction::Split { targets, .. }, Some(i)) => targets.get(i).map(|(t, _)| t),
            _ => None,
        };
        match target {
            Some(t) => (&t.red, &route.latency, Some(t)),
            None => (&route.red, &route.latency, None),
        }
    }

    /// log: the response body ended (`complete`) or was dropped. Records the request's
    /// metrics and access log line, and gives a completed upstream connection back to its
    /// pool. Runs once, however the request ended.
    pub fn log(&mut self, bytes: u64, complete: bool) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let elapsed = self.start.elapsed();
        // A request dropped before any response has no status: count it as 499, nginx's
        // "client closed request".
        let status = if self.record.status == 0 {
            499
        } else {
            self.record.status
        };
        if let Some(up) = self.record.upstream.take() {
            up.finish(complete);
        }
        let trace = self.record.trace.take();
        let (red, latency, target) = self.counters();
        latency.observe(elapsed);
        red.record(status);
        if let Some(r) = self.record.route {
            let line = self.record.request_line.as_ref();
            self.snap.routes[r].slow.observe(elapsed, line);
        }
        self.conn.shared.inflight.dec();
        if trace.is_none() && self.log.is_none() {
            return;
        }
        let route = self.record.route.map_or("", |r| &*self.snap.routes[r].name);
        let service = target.map_or("", |t| &*t.service.name);
        let replica = target
            .zip(self.record.replica)
            .and_then(|(t, i)| t.service.replicas.get(i))
            .map_or("", |r| &*r.label);
        if let Some(trace) = trace {
            let ended = crate::trace::Ended {
                status,
                elapsed,
                client: self.conn.client.ip(),
                request_id: self.request_id.to_str().unwrap_or(""),
                route,
                service,
                replica,
                cache: self.record.cache,
                guard: self.record.guard,
                consumer: self.record.consumer.as_deref().map_or("", |c| &*c.name),
                attempts: self.record.attempts,
            };
            let sampler = self.snap.tracing.as_deref();
            if let Some(spans) = sampler.and_then(|s| trace.finish(s, &ended)) {
                self.conn.shared.tracer.submit(spans);
            }
        }
        let Some(l) = &self.log else { return };
        access_log::write(
            l.format,
            &access_log::Entry {
                time: l.time,
                request_id: self.request_id.to_str().unwrap_or(""),
                client: self.conn.client.ip(),
                method: l.method.as_str(),
                // The host as routing saw it: from the URI (h2, absolute form) or the Host header.
                host: host_from(&l.uri, l.host.as_ref()).unwrap_or(""),
                path: l.uri.path_and_query().map_or("/", |p| p.as_str()),
                protocol: protocol_name(l.version),
                route,
                service,
                replica,
                status,
                bytes,
                duration: elapsed,
                upstream_duration: self.record.upstream_duration,
                attempts: self.record.attempts,
                cache: self.record.cache,
                guard: self.record.guard,
                consumer: self.record.consumer.as_deref().map_or("", |c| &*c.name),
                user_agent: header_text(&l.user_agent),
                referer: header_text(&l.referer),
            },
        );
    }
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        self.log(0, false);
    }
}

impl crate::body::OnEnd for RequestCtx {
    fn on_end(mut self: Box<Self>, bytes: u64, complete: bool) {
        self.log(bytes, complete);
    }
}

fn header_text(v: &Option<HeaderValue>) -> &str {
    v.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn protocol_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}
