//! The request lifecycle, stage by stage (README, "Request lifecycle", uses these names):
//! `receive` (request id, limits) → `route` → act (`respond`, `redirect`, or `forward`:
//! `pick_replica` → `connect` → `send` → `retry?`) → `edit_response` → `finish` (metrics,
//! access log, connection back to the pool) when the response body ends.

use crate::balancer::{hash_of, Tried};
use crate::body::{is_body_too_large, ClientBody, OnEnd, UpstreamBody};
use crate::clock::now_ns;
use crate::pool::{self, ConnectError, Sender};
use crate::replica::Replica;
use crate::snapshot::{Route, RouteAction, Service, Snapshot, Target};
use crate::Shared;
use bytes::Bytes;
use headroom_config::{HashKey, UpstreamProtocol};
use headroom_telemetry::access_log::{self, Format};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::{debug, info, warn};

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

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

/// Counts a request in flight on a replica until dropped, however the request ends
/// (completed, failed, or abandoned by a client that went away).
struct InFlight(Arc<Replica>);

impl InFlight {
    fn new(replica: &Arc<Replica>) -> Self {
        replica.inflight.inc();
        InFlight(replica.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.dec();
    }
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
struct Finish {
    start: Instant,
    status: u16,
    ctx: Arc<ConnCtx>,
    snap: Arc<Snapshot>,
    counted: Counted,
    upstream: Option<UpstreamDone>,
    log: Option<Box<LogLine>>,
    ended: bool,
}

struct UpstreamDone {
    inflight: InFlight,
    sender: Option<Sender>,
    max_idle: usize,
}

struct LogLine {
    format: Format,
    time: SystemTime,
    request_id: String,
    method: Method,
    host: String,
    path: String,
    protocol: &'static str,
    route: Arc<str>,
    service: Option<Arc<str>>,
    replica: Option<Arc<str>>,
    upstream_duration: Option<Duration>,
    attempts: u32,
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
            if let (true, Some(sender)) = (complete, up.sender) {
                up.inflight.0.pools.put(sender, up.max_idle);
            }
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

/// 128 random bits as 32 hex digits.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut buf = [0u8; 32];
    for b in buf.iter_mut().rev() {
        *b = HEX[(n & 15) as usize];
        n >>= 4;
    }
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
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

/// The request's host without port: from the URI (HTTP/2, absolute form) or the Host header.
fn host_of<B>(req: &Request<B>) -> Option<&str> {
    let raw = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    let raw = raw.rsplit('@').next().unwrap_or(raw);
    Some(if raw.starts_with('[') {
        raw.split_inclusive(']').next().unwrap_or(raw)
    } else {
        raw.split(':').next().unwrap_or(raw)
    })
}

/// Serves one request. Never fails: every error becomes a response.
pub async fn handle(
    req: Request<Incoming>,
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

fn header_str(h: &HeaderMap, name: HeaderName) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
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

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The hop-by-hop header names every message loses, whether `Connection` lists them or not.
fn hop_by_hop(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || *name == header::PROXY_AUTHORIZATION
        || *name == KEEP_ALIVE
        || *name == PROXY_CONNECTION
}

/// Headers that describe one hop only (RFC 9110 §7.6.1): never forwarded.
/// One pass over the names finds them; most messages carry none but `Connection`, so only
/// what is there is removed (a remove of an absent name still hashes it: 9% of a request's
/// instructions before this change, by callgrind).
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut found: [Option<HeaderName>; 4] = Default::default();
    let mut n = 0;
    let mut more = false;
    for name in h.keys().filter(|k| hop_by_hop(k)) {
        if n < found.len() {
            found[n] = Some(name.clone());
            n += 1;
        } else {
            more = true;
        }
    }
    if n == 0 {
        return;
    }
    if let Some(listed) = h.get(header::CONNECTION).and_then(|v| v.to_str().ok()) {
        // Usually "keep-alive" or "close": names of no header, or of one removed below.
        let extra: Vec<HeaderName> = listed
            .split(',')
            .map(str::trim)
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .filter(|n| !hop_by_hop(n) && h.contains_key(n))
            .collect();
        for name in extra {
            h.remove(name);
        }
    }
    for name in found.into_iter().flatten() {
        h.remove(name);
    }
    if more {
        let rest: Vec<HeaderName> = h.keys().filter(|k| hop_by_hop(k)).cloned().collect();
        for name in rest {
            h.remove(name);
        }
    }
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

fn rewrite_path(route: &Route, path: &str) -> Option<String> {
    let prefix = route.strip_prefix.as_deref()?;
    let rest = path.strip_prefix(prefix)?;
    let new_prefix = route.rewrite_prefix.as_deref().unwrap_or("");
    let mut out = String::with_capacity(new_prefix.len() + rest.len() + 1);
    out.push_str(new_prefix.trim_end_matches('/'));
    if !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    Some(out)
}

fn hash_key(key: &HashKey, headers: &HeaderMap, client: SocketAddr) -> Option<u64> {
    match key {
        HashKey::ClientIp => Some(hash_of(client.ip())),
        HashKey::Header(name) => headers.get(name.as_str()).map(|v| hash_of(v.as_bytes())),
        HashKey::Cookie(name) => headers.get_all(header::COOKIE).iter().find_map(|v| {
            v.to_str().ok()?.split(';').find_map(|kv| {
                let (k, val) = kv.trim().split_once('=')?;
                (k == name).then(|| hash_of(val.as_bytes()))
            })
        }),
    }
}

/// Why an attempt failed; `retry_safe` says whether the request may be sent again.
enum AttemptError {
    Connect(ConnectError),
    /// The connection broke before a response; `sent` when the body may have left.
    Upstream {
        err: hyper::Error,
    },
    Timeout,
    BodyTooLarge,
}

async fn forward(
    req: Request<Incoming>,
    route: &Route,
    target: &Target,
    ctx: &ConnCtx,
    request_id: &HeaderValue,
    finish: &mut Finish,
) -> Response<ClientBody> {
    let service: &Service = &target.service;
    let cfg = &service.cfg;
    if let Some(l) = finish.log.as_mut() {
        l.service = Some(service.name.clone());
    }
    let (mut parts, body) = req.into_parts();

    // The request as it goes upstream: origin-form for HTTP/1.1, absolute for h2.
    // The common case (no rewrite, origin-form in) reuses the client's URI as is.
    let rewritten = rewrite_path(route, parts.uri.path()).map(|p| match parts.uri.query() {
        Some(q) => format!("{p}?{q}"),
        None => p,
    });
    let uri: Uri = match (cfg.protocol, rewritten) {
        (UpstreamProtocol::Http1, None) if parts.uri.authority().is_none() => parts.uri.clone(),
        (UpstreamProtocol::Http1, None) => {
            let mut p = http::uri::Parts::default();
            p.path_and_query = parts.uri.path_and_query().cloned();
            Uri::from_parts(p).unwrap_or_else(|_| Uri::from_static("/"))
        }
        (UpstreamProtocol::Http1, Some(p)) => p.parse().unwrap_or_else(|_| Uri::from_static("/")),
        (UpstreamProtocol::H2, p) => {
            let pq = p.unwrap_or_else(|| {
                parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string()
            });
            format!("http://{}{}", host_for_uri(&parts), pq)
                .parse()
                .unwrap_or_else(|_| Uri::from_static("/"))
        }
    };
    let headers = &mut parts.headers;
    if headers.get(header::HOST).is_none() {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                headers.insert(header::HOST, v);
            }
        }
    }
    let original_host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(headers);
    for name in &route.request_remove {
        headers.remove(name);
    }
    for (k, v) in &route.request_add {
        headers.insert(k.clone(), v.clone());
    }
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", ctx.client.ip()))
            .unwrap_or_else(|_| ctx.client_ip.clone()),
        None => ctx.client_ip.clone(),
    };
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if ctx.tls { "https" } else { "http" }),
    );
    if let Some(h) = original_host {
        headers.insert(X_FORWARDED_HOST.clone(), h);
    }
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    if cfg.protocol == UpstreamProtocol::H2 {
        headers.remove(header::HOST);
    }

    // Is this request retryable, and can its body be replayed?
    let method_retryable = service.retry_methods.contains(&parts.method) && cfg.retry.attempts > 1;
    let size = body.size_hint();
    let mut body_slot: Option<UpstreamBody>;
    let replayable: Option<Bytes>;
    if body.is_end_stream() {
        replayable = Some(Bytes::new());
        body_slot = None;
    } else if method_retryable
        && size
            .upper()
            .is_some_and(|n| n <= cfg.retry.replay_body_bytes)
    {
        match Box::pin(body.collect()).await {
            Ok(b) => {
                replayable = Some(b.to_bytes());
                body_slot = None;
            }
            Err(e) => {
                debug!(error = %e, "client body failed");
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the request body could not be read",
                    request_id,
                );
            }
        }
    } else {
        replayable = None;
        body_slot = Some(UpstreamBody::Stream {
            inner: body,
            seen: 0,
            limit: ctx.max_body_bytes,
        });
    }
    let take_body = |slot: &mut Option<UpstreamBody>| -> Option<UpstreamBody> {
        match &replayable {
            Some(b) if b.is_empty() => Some(UpstreamBody::Empty),
            Some(b) => Some(UpstreamBody::Full(Some(b.clone()))),
            None => slot.take(),
        }
    };

    service.budget.deposit();
    let key = cfg
        .hash_on
        .as_ref()
        .and_then(|k| hash_key(k, &parts.headers, ctx.client));
    let mut tried = Tried::default();
    let mut last_error: Option<Response<ClientBody>> = None;
    let max_attempts = cfg.retry.attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        if let Some(l) = finish.log.as_mut() {
            l.attempts = attempt;
        }
        let now = now_ns();
        // pick_replica
        let Some(i) = service
            .balancer
            .pick(&service.replicas, tried, key, now, cfg.slow_start)
        else {
            return last_error.unwrap_or_else(|| {
                json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_healthy_replica",
                    &format!("service \"{}\" has no healthy replica", service.name),
                    request_id,
                )
            });
        };
        tried.add(i);
        let replica = &service.replicas[i];
        if let Some(l) = finish.log.as_mut() {
            l.replica = Some(replica.label.clone());
        }
        let inflight = InFlight::new(replica);

        // connect (or reuse), then send
        let sent_at = Instant::now();
        let last = attempt >= max_attempts || !(method_retryable && replayable.is_some());
        let result = attempt_once(
            replica,
            service,
            &mut parts,
            &uri,
            &mut body_slot,
            &take_body,
            last,
        )
        .await;
        let err = match result {
            Ok((resp, sender)) => {
                let status = resp.status();
                let took = sent_at.elapsed();
                let done_at = now + crate::clock::ns(took);
                replica.observe_latency(took, done_at);
                service.upstream_latency.observe(took);
                if let Some(l) = finish.log.as_mut() {
                    l.upstream_duration = Some(took);
                }
                if status.is_server_error() {
                    passive_failure(service, replica);
                } else {
                    replica.record_success(done_at, &cfg.outlier);
                }
                let retry_status = cfg.retry.on_status.contains(&status.as_u16());
                if retry_status
                    && method_retryable
                    && replayable.is_some()
                    && attempt < max_attempts
                    && take_retry(service)
                {
                    debug!(replica = %replica.label, %status, "retrying on status");
                    continue;
                }
                let (mut head, incoming) = resp.into_parts();
                head.version = Version::HTTP_11;
                finish.upstream = Some(UpstreamDone {
                    inflight,
                    sender: Some(sender),
                    max_idle: cfg.max_idle,
                });
                return Response::from_parts(head, ClientBody::upstream(incoming));
            }
            Err(e) => e,
        };
        // A failed connect sent nothing, so any method may go to another replica; a broken
        // exchange may have reached the upstream, so only idempotent, replayable ones may.
        let may_retry = match &err {
            AttemptError::Connect(_) => true,
            AttemptError::Upstream { .. } => method_retryable && replayable.is_some(),
            AttemptError::Timeout | AttemptError::BodyTooLarge => false,
        };
        drop(inflight);
        let resp = match &err {
            AttemptError::BodyTooLarge => {
                let mut r = json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    &format!(
                        "request body exceeds the limit of {} bytes",
                        ctx.max_body_bytes
                    ),
                    request_id,
                );
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return r;
            }
            AttemptError::Connect(e) => {
                service.connect_errors.inc();
                passive_failure(service, replica);
                warn!(service = %service.name, replica = %replica.label, error = %e, "upstream connect failed");
                json_error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_connect_failed",
                    &format!("replica {}: {e}", replica.label),
                    request_id,
                )
            }
            AttemptError::Upstream { err } => {
                passive_failure(service, replica);
                warn!(service = %service.name, replica = %replica.label, error = %err, "upstream request failed");
                json_error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_failed",
                    &format!("replica {}: {err}", replica.label),
                    request_id,
                )
            }
            AttemptError::Timeout => {
                service.timeouts.inc();
                passive_failure(service, replica);
                json_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    &format!(
                        "replica {} sent no response within {:?}",
                        replica.label, cfg.request_timeout
                    ),
                    request_id,
                )
            }
        };
        let body_available = replayable.is_some() || body_slot.is_some();
        if !(may_retry && body_available && attempt < max_attempts && take_retry(service)) {
            return resp;
        }
        last_error = Some(resp);
    }
}

fn host_for_uri(parts: &http::request::Parts) -> String {
    parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "localhost".to_string())
}

fn take_retry(service: &Service) -> bool {
    if service.budget.withdraw(now_ns() / 1_000_000_000) {
        service.retries.inc();
        true
    } else {
        service.retries_denied.inc();
        false
    }
}

fn passive_failure(service: &Service, replica: &Replica) {
    let now = now_ns();
    if let Some(length) = replica.record_failure(
        now,
        &service.cfg.outlier,
        service.ejected_share_with_one_more(now),
    ) {
        info!(service = %service.name, replica = %replica.label, seconds = length.as_secs_f64(), "replica ejected after consecutive failures");
    }
}

async fn attempt_once(
    replica: &Replica,
    service: &Service,
    parts: &mut http::request::Parts,
    uri: &Uri,
    body_slot: &mut Option<UpstreamBody>,
    take_body: &impl Fn(&mut Option<UpstreamBody>) -> Option<UpstreamBody>,
    last: bool,
) -> Result<(Response<Incoming>, Sender), AttemptError> {
    let cfg = &service.cfg;
    let mut sender = match replica.pools.take(cfg.idle_timeout) {
        Some(s) => s,
        // Boxed: connecting is rare (pools) and its future is large; inline it would be
        // copied with every request's state.
        None => Box::pin(pool::connect(
            replica.addr,
            cfg.protocol,
            cfg.connect_timeout,
        ))
        .await
        .map_err(AttemptError::Connect)?,
    };
    // The body leaves our hands only now, after a connection exists.
    let body = take_body(body_slot).unwrap_or(UpstreamBody::Empty);
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri.clone();
    // Once connected, a request that cannot be sent again gives its headers away instead
    // of copying them.
    *req.headers_mut() = if last {
        std::mem::take(&mut parts.headers)
    } else {
        parts.headers.clone()
    };
    *req.version_mut() = match cfg.protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::H2 => Version::HTTP_2,
    };
    let send = async {
        match &mut sender {
            Sender::H1(s) => s.send_request(req).await,
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    };
    match tokio::time::timeout(cfg.request_timeout, send).await {
        Ok(Ok(resp)) => Ok((resp, sender)),
        Ok(Err(err)) => {
            if std::error::Error::source(&err).is_some_and(is_body_too_large) {
                Err(AttemptError::BodyTooLarge)
            } else {
                Err(AttemptError::Upstream { err })
            }
        }
        Err(_) => Err(AttemptError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_taken_without_port() {
        let req = Request::builder()
            .uri("/x")
            .header("host", "Example.com:8080")
            .body(())
            .unwrap();
        assert_eq!(host_of(&req), Some("Example.com"));
        let req = Request::builder()
            .uri("https://[::1]:8443/x")
            .body(())
            .unwrap();
        assert_eq!(host_of(&req), Some("[::1]"));
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));

        let mut plain = HeaderMap::new();
        plain.insert("x-a", HeaderValue::from_static("1"));
        plain.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 2);
    }

    #[test]
    fn cookie_hash_key_reads_the_named_cookie() {
        let mut h = HeaderMap::new();
        h.insert("cookie", HeaderValue::from_static("a=1; session=abc; b=2"));
        let ip: SocketAddr = "1.2.3.4:5".parse().unwrap();
        let k = hash_key(&HashKey::Cookie("session".into()), &h, ip);
        assert_eq!(k, Some(hash_of(b"abc".as_slice())));
        assert_eq!(hash_key(&HashKey::Cookie("none".into()), &h, ip), None);
    }
}
