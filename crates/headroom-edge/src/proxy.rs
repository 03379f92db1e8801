//! The request lifecycle, stage by stage (README, "Request lifecycle", uses these names):
//! `receive` (request id, limits) → `route` → act (`respond`, `redirect`, or `forward`:
//! `pick_replica` → `connect` → `send` → `retry?`) → `edit_response` → `finish` (metrics,
//! access log, connection back to the pool) when the response body ends.
//! `forward` and its stages live in `forward.rs`, header work in `headers.rs`.

use crate::body::{ClientBody, OnEnd, RequestBody};
use crate::forward::{forward, UpstreamDone};
use crate::headers::{header_str, host_of, new_request_id, strip_hop_by_hop, X_REQUEST_ID};
use crate::snapshot::{Route, RouteAction, Snapshot};
use crate::Shared;
use headroom_telemetry::access_log::{self, Format};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use std::convert::Infallible;
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
}

/// Which request counters a finished request goes to.
#[derive(Clone, Copy)]
enum Counted {
    /// Answered before routing (404, 400, 413).
    Unrouted,
    /// By the route itself (fixed response, redirect).
    Route(usize),
    /// By the route's target service: (route, split index or 0).
    Target(usize, usize),
}

/// Everything `finish` needs once the response body has ended. Holds the snapshot the
/// request started on, so counters are found by index without cloning them per request.
/// Dropped without ending (the client went away mid-request), it still accounts.
pub(crate) struct Finish {
    start: Instant,
    status: u16,
    ctx: Arc<ConnCtx>,
    snap: Arc<Snapshot>,
    counted: Counted,
    pub(crate) upstream: Option<UpstreamDone>,
    pub(crate) log: Option<Box<LogLine>>,
    ended: bool,
}

pub(crate) struct LogLine {
    format: Format,
    time: SystemTime,
    request_id: String,
    method: Method,
    host: String,
    path: String,
    protocol: &'static str,
    route: Arc<str>,
    pub(crate) service: Option<Arc<str>>,
    pub(crate) replica: Option<Arc<str>>,
    pub(crate) upstream_duration: Option<Duration>,
    pub(crate) attempts: u32,
    user_agent: String,
    referer: String,
}

impl Finish {
    fn new(ctx: &Arc<ConnCtx>, snap: Arc<Snapshot>, counted: Counted, start: Instant) -> Self {
        Finish {
            start,
            status: 0,
            ctx: ctx.clone(),
            snap,
            counted,
            upstream: None,
            log: None,
            ended: false,
        }
    }

    fn end(&mut self, bytes: u64, complete: bool) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let elapsed = self.start.elapsed();
        let shared = &self.ctx.shared;
        let (red, latency) = match self.counted {
            Counted::Unrouted => (&shared.unrouted, &shared.unrouted_latency),
            Counted::Route(r) => (&self.snap.routes[r].red, &self.snap.routes[r].latency),
            Counted::Target(r, t) => {
                let route = &self.snap.routes[r];
                let red = match &route.action {
                    RouteAction::Forward(target) => &target.red,
                    RouteAction::Split { targets, .. } => &targets[t].0.red,
                    _ => &route.red,
                };
                (red, &route.latency)
            }
        };
        // A request dropped before any response has no status: count it as 499, nginx's
        // "client closed request".
        let status = if self.status == 0 { 499 } else { self.status };
        latency.observe(elapsed);
        red.record(status);
        shared.inflight.dec();
        if let Some(up) = self.upstream.take() {
            up.finish(complete);
        }
        if let Some(l) = self.log.take() {
            access_log::write(
                l.format,
                &access_log::Entry {
                    time: l.time,
                    request_id: &l.request_id,
                    client: self.ctx.client.ip(),
                    method: l.method.as_str(),
                    host: &l.host,
                    path: &l.path,
                    protocol: l.protocol,
                    route: &l.route,
                    service: l.service.as_deref().unwrap_or(""),
                    replica: l.replica.as_deref().unwrap_or(""),
                    status,
                    bytes,
                    duration: elapsed,
                    upstream_duration: l.upstream_duration,
                    attempts: l.attempts,
                    user_agent: &l.user_agent,
                    referer: &l.referer,
                },
            );
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.end(0, false);
    }
}

impl OnEnd for Finish {
    fn on_end(mut self: Box<Self>, bytes: u64, complete: bool) {
        self.end(bytes, complete);
    }
}

/// A JSON error body: `{"error": kind, "message": ..., "request_id": ...}`.
pub fn json_error(
    status: StatusCode,
    kind: &str,
    message: &str,
    request_id: &HeaderValue,
) -> Response<ClientBody> {
    let body = serde_json::json!({
        "error": kind,
        "message": message,
        "request_id": request_id.to_str().unwrap_or(""),
    });
    let mut resp = Response::new(ClientBody::full(format!("{body}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
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

/// Serves one request. Never fails: every error becomes a response.
pub async fn handle(
    req: Request<RequestBody>,
    ctx: Arc<ConnCtx>,
) -> Result<Response<ClientBody>, Infallible> {
    let start = Instant::now();
    ctx.shared.inflight.inc();
    let snap = ctx.shared.snapshot.load_full();

    // receive
    let request_id = match req.headers().get(&X_REQUEST_ID) {
        Some(v) if !v.is_empty() && v.len() <= 128 => v.clone(),
        _ => new_request_id(),
    };
    let host = host_of(&req).unwrap_or("");
    let early = if req.version() == Version::HTTP_11 && host.is_empty() {
        Some((
            StatusCode::BAD_REQUEST,
            "bad_request",
            "an HTTP/1.1 request needs a Host header".to_string(),
        ))
    } else if req.body().size_hint().lower() > ctx.max_body_bytes {
        Some((
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "request body exceeds the limit of {} bytes",
                ctx.max_body_bytes
            ),
        ))
    } else {
        None
    };

    // route
    let routed = match early {
        Some(_) => None,
        None => snap.route(
            ctx.listener,
            req.method(),
            host,
            req.uri().path(),
            req.headers(),
        ),
    };
    let log_line = |route: Arc<str>| {
        snap.access_log.map(|format| {
            Box::new(LogLine {
                format,
                time: SystemTime::now(),
                request_id: request_id.to_str().unwrap_or("").to_string(),
                method: req.method().clone(),
                host: host.to_string(),
                path: req
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string(),
                protocol: protocol_name(req.version()),
                route,
                service: None,
                replica: None,
                upstream_duration: None,
                attempts: 0,
                user_agent: header_str(req.headers(), header::USER_AGENT),
                referer: header_str(req.headers(), header::REFERER),
            })
        })
    };
    let Some((index, route)) = routed else {
        let (status, kind, message) = early.unwrap_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                "no_route",
                format!(
                    "no route matches {} {}{}",
                    req.method(),
                    host,
                    req.uri().path()
                ),
            )
        });
        let mut resp = json_error(status, kind, &message, &request_id);
        // A client that sent a bad request or too large a body is not trusted with the
        // rest of the connection (the unread body would be parsed as the next request).
        if status != StatusCode::NOT_FOUND {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let mut finish = Finish::new(&ctx, snap.clone(), Counted::Unrouted, start);
        finish.log = log_line("".into());
        finish.status = status.as_u16();
        resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
        resp.body_mut().set_on_end(Box::new(finish));
        return Ok(resp);
    };

    let log = log_line(route.name.clone());
    let mut finish = Finish::new(&ctx, snap.clone(), Counted::Route(index), start);
    finish.log = log;

    let mut resp = match &route.action {
        RouteAction::Respond {
            status,
            body,
            content_type,
        } => {
            let mut resp = Response::new(ClientBody::full(body.clone()));
            *resp.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, content_type.clone());
            resp
        }
        RouteAction::Redirect { to, status } => redirect(to, *status, &req),
        RouteAction::Forward(target) => {
            finish.counted = Counted::Target(index, 0);
            forward(req, route, target, &ctx, &request_id, &mut finish).await
        }
        RouteAction::Split { targets, total } => {
            let roll = fastrand::u32(..*total);
            let t = targets
                .iter()
                .position(|(_, cumulative)| roll < *cumulative)
                .unwrap_or(0);
            finish.counted = Counted::Target(index, t);
            forward(req, route, &targets[t].0, &ctx, &request_id, &mut finish).await
        }
    };

    // edit_response
    edit_response(resp.headers_mut(), route, &request_id);
    finish.status = resp.status().as_u16();
    resp.body_mut().set_on_end(Box::new(finish));
    Ok(resp)
}

fn redirect<B>(to: &str, status: u16, req: &Request<B>) -> Response<ClientBody> {
    let location = to
        .replace("{path}", req.uri().path())
        .replace("{query}", req.uri().query().unwrap_or(""));
    let mut resp = Response::new(ClientBody::empty());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn edit_response(h: &mut HeaderMap, route: &Route, request_id: &HeaderValue) {
    strip_hop_by_hop(h);
    for name in &route.response_remove {
        h.remove(name);
    }
    for (k, v) in &route.response_add {
        h.insert(k.clone(), v.clone());
    }
    h.insert(X_REQUEST_ID.clone(), request_id.clone());
}
