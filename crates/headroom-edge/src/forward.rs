//! `forward`: pick a replica, connect or reuse a pooled connection, send, and retry on
//! another replica when the failure and the budget allow.

use crate::balancer::Tried;
use crate::body::{
    is_body_too_large, is_client_body_error, is_client_body_timeout, BoxError, ClientBody,
    RequestBody, UpstreamBody,
};
use crate::clock::now_ns;
use crate::headers::{
    hash_key, host_for_uri, rewrite_path, strip_hop_by_hop, upgrade_requested, X_FORWARDED_FOR,
    X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID,
};
use crate::pool::{self, ConnectError, Sender};
use crate::proxy::{json_error, ConnCtx, Finish};
use crate::replica::Replica;
use crate::snapshot::{Route, Service, Target};
use bytes::Bytes;
use headroom_config::UpstreamProtocol;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Instant;
use tracing::{debug, info, warn};

/// Counts a request in flight on a replica until dropped, however the request ends
/// (completed, failed, or abandoned by a client that went away).
pub(crate) struct InFlight(Arc<Replica>);

impl InFlight {
    pub(crate) fn new(replica: &Arc<Replica>) -> Self {
        replica.inflight.inc();
        InFlight(replica.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.dec();
    }
}

/// The upstream side of a request whose response is streaming to the client.
pub(crate) struct UpstreamDone {
    inflight: InFlight,
    sender: Option<Sender>,
    max_idle: usize,
}

impl UpstreamDone {
    /// The response ended: a completed exchange leaves a reusable connection for the pool.
    pub(crate) fn finish(self, complete: bool) {
        if let (true, Some(sender)) = (complete, self.sender) {
            self.inflight.0.pools.put(sender, self.max_idle);
        }
    }
}

/// Why an attempt failed; `forward` decides from the kind whether a retry is safe.
enum AttemptError {
    Connect(ConnectError),
    /// The connection broke before a complete response head.
    Upstream {
        err: BoxError,
    },
    Timeout,
    BodyTooLarge,
    /// The client's body broke off or was malformed: the client's fault, not the replica's.
    ClientBody(BoxError),
}

pub(crate) async fn forward(
    req: Request<RequestBody>,
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
    // An upgrade (WebSocket) asked of an HTTP/1.1 upstream is the one hop-by-hop request
    // that goes on: the upstream's 101 turns both connections into one tunnel.
    let upgrade = match cfg.protocol {
        UpstreamProtocol::Http1 if parts.version == Version::HTTP_11 => upgrade_requested(headers),
        _ => None,
    };
    strip_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        headers.insert(header::UPGRADE, protocol);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
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
            Err(e) => return client_body_failed(e.as_ref(), request_id),
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
                let (mut head, body) = resp.into_parts();
                head.version = Version::HTTP_11;
                finish.upstream = Some(UpstreamDone {
                    inflight,
                    sender,
                    max_idle: cfg.max_idle,
                });
                return Response::from_parts(head, body);
            }
            Err(e) => e,
        };
        // A failed connect sent nothing, so any method may go to another replica; a broken
        // exchange may have reached the upstream, so only idempotent, replayable ones may.
        let may_retry = match &err {
            AttemptError::Connect(_) => true,
            AttemptError::Upstream { .. } => method_retryable && replayable.is_some(),
            AttemptError::Timeout | AttemptError::BodyTooLarge | AttemptError::ClientBody(_) => {
                false
            }
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
            AttemptError::ClientBody(e) => return client_body_failed(e.as_ref(), request_id),
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

/// The client's body broke off, was malformed, or paused past `body_timeout`: 400 or 408,
/// and the connection is closed (the rest of the body cannot be told from a next request).
fn client_body_failed(
    e: &(dyn std::error::Error + 'static),
    request_id: &HeaderValue,
) -> Response<ClientBody> {
    debug!(error = %e, "client body failed");
    let (status, kind) = if is_client_body_timeout(e) {
        (StatusCode::REQUEST_TIMEOUT, "request_timeout")
    } else {
        (StatusCode::BAD_REQUEST, "bad_request")
    };
    let mut r = json_error(
        status,
        kind,
        &format!("the request body could not be read: {e}"),
        request_id,
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
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
    replica: &Arc<Replica>,
    service: &Service,
    parts: &mut http::request::Parts,
    uri: &Uri,
    body_slot: &mut Option<UpstreamBody>,
    take_body: &impl Fn(&mut Option<UpstreamBody>) -> Option<UpstreamBody>,
    last: bool,
) -> Result<(Response<ClientBody>, Option<Sender>), AttemptError> {
    let cfg = &service.cfg;
    let sender = match replica.pools.take(cfg.idle_timeout) {
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
    match sender {
        Sender::Raw(conn) => {
            // Our HTTP/1.1 client borrows the head: no copy even if a retry may follow.
            let head = crate::h1::client::RequestHead {
                method: &parts.method,
                uri,
                headers: &parts.headers,
            };
            let to = crate::h1::client::Attempt {
                replica,
                max_idle: cfg.max_idle,
                request_timeout: cfg.request_timeout,
                read_timeout: &service.read_timeout,
            };
            let sent = conn.send(head, body, to).await;
            use crate::h1::client::Error;
            match sent {
                Ok(resp) => Ok((resp.map(ClientBody::raw), None)),
                Err(Error::BodyTooLarge) => Err(AttemptError::BodyTooLarge),
                Err(Error::Body(e)) => Err(AttemptError::ClientBody(e)),
                Err(Error::TimedOut) => Err(AttemptError::Timeout),
                Err(e) => Err(AttemptError::Upstream { err: Box::new(e) }),
            }
        }
        Sender::H2(mut s) => {
            let (body, clock) = crate::body::H2Upload::new(body);
            let mut req = Request::new(body);
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = uri.clone();
            // hyper takes the headers by value: a request that cannot be sent again gives
            // its headers away instead of copying them.
            *req.headers_mut() = if last {
                std::mem::take(&mut parts.headers)
            } else {
                parts.headers.clone()
            };
            *req.version_mut() = Version::HTTP_2;
            let send = async {
                s.ready().await?;
                s.send_request(req).await
            };
            // request_timeout counts the upstream's time only (see `UploadClock`).
            let outcome =
                crate::body::within_request_timeout(send, clock.as_deref(), cfg.request_timeout)
                    .await
                    .ok_or(());
            let body = |b| ClientBody::upstream(b, &service.read_timeout, replica);
            match outcome {
                Ok(Ok(resp)) => Ok((resp.map(body), Some(Sender::H2(s)))),
                Ok(Err(err)) => {
                    let cause = std::error::Error::source(&err);
                    if cause.is_some_and(is_body_too_large) {
                        Err(AttemptError::BodyTooLarge)
                    } else if cause.is_some_and(is_client_body_error) {
                        Err(AttemptError::ClientBody(Box::new(err)))
                    } else {
                        Err(AttemptError::Upstream { err: Box::new(err) })
                    }
                }
                Err(_) => Err(AttemptError::Timeout),
            }
        }
    }
}
