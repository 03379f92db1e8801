//! forward: `pick → connect → send → retry`. The request is prepared for the upstream
//! once (`request.rs`); each attempt picks an available, untried replica, connects (or
//! reuses a pooled connection) and sends (`attempt.rs`). Whether a failure may be retried is
//! read from the error itself ([`ProxyError::retry`]).

mod attempt;
mod request;

pub(crate) use attempt::{InFlight, UpstreamDone};

use crate::balancer::Tried;
use crate::body::{ClientBody, RequestBody, UpstreamBody};
use crate::clock::now_ns;
use crate::error::{ErrorKind, ProxyError, RetrySafety};
use crate::headers::hash_key;
use crate::pipeline::{Answer, ConnCtx, Record};
use crate::replica::Replica;
use crate::snapshot::{Route, Service, Target};
use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::time::Instant;
use tracing::{debug, info, warn};

/// How the request's body reaches each attempt.
enum Replay {
    /// Buffered (or empty): every attempt sends a copy.
    Buffered(Bytes),
    /// Streamed from the client: only the first attempt that sends can have it.
    Stream(Option<UpstreamBody>),
}

impl Replay {
    /// The body for the next send; `None` once a streamed body has been sent.
    fn take(&mut self) -> Option<UpstreamBody> {
        match self {
            Replay::Buffered(b) if b.is_empty() => Some(UpstreamBody::Empty),
            Replay::Buffered(b) => Some(UpstreamBody::Full(Some(b.clone()))),
            Replay::Stream(slot) => slot.take(),
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, Replay::Buffered(_))
    }

    fn available(&self) -> bool {
        match self {
            Replay::Buffered(_) => true,
            Replay::Stream(slot) => slot.is_some(),
        }
    }
}

/// Forwards the request to `target`'s service; the response head, or the answer to give.
/// A service with a circuit breaker or load shedding admits the request first (503 with
/// `Retry-After` when its circuit is open or it sheds), and learns how it ended: at the
/// response head, so a slow client does not look like a slow upstream.
pub(crate) async fn forward(
    req: Request<RequestBody>,
    route: &Route,
    target: &Target,
    conn: &ConnCtx,
    request_id: &HeaderValue,
    record: &mut Record,
) -> Result<Response<ClientBody>, Answer> {
    let Some(protect) = &target.service.protect else {
        return forward_upstream(req, route, target, conn, request_id, record).await;
    };
    let circuit = match protect.circuit.as_ref().map(|c| c.allow()) {
        None => None,
        Some(Ok(permit)) => Some(permit),
        Some(Err(open)) => {
            protect.count_open();
            return Err(unavailable(
                "circuit_open",
                format!(
                    "service \"{}\" is failing: its circuit is open",
                    target.service.name
                ),
                open.retry_after,
            ));
        }
    };
    let asked = std::time::Instant::now();
    let shed = match &protect.shed {
        None => None,
        Some(s) => match s.admit(route.priority).await {
            Ok(permit) => {
                protect.queue_wait.observe(asked.elapsed());
                protect.observe();
                Some(permit)
            }
            Err(shed) => {
                protect.count_shed(shed.reason);
                protect.observe();
                return Err(unavailable(
                    "shed",
                    format!(
                        "service \"{}\" is at its capacity: request shed ({})",
                        target.service.name,
                        shed.reason.as_str()
                    ),
                    shed.retry_after,
                ));
            }
        },
    };
    let start = std::time::Instant::now();
    let result = forward_upstream(req, route, target, conn, request_id, record).await;
    // What counts against the service: a 5xx of its own, or no answer (connect failure,
    // timeout, no replica). A 4xx, or an answer the edge gave for the client's fault
    // (413, 408, 400), is not the service failing.
    let failed = match &result {
        Ok(resp) => resp.status().is_server_error(),
        Err(a) => matches!(a.status.as_u16(), 502..=504),
    };
    if let Some(c) = circuit {
        c.record(!failed);
    }
    if let Some(p) = shed {
        let outcome = if failed {
            headroom_guard::Outcome::Failed
        } else {
            headroom_guard::Outcome::Ok
        };
        p.done(start.elapsed(), outcome);
        protect.observe();
    }
    result
}

/// 503 with `Retry-After` (whole seconds, at least 1).
fn unavailable(kind: &'static str, message: String, retry_after: std::time::Duration) -> Answer {
    let mut a = Answer::new(StatusCode::SERVICE_UNAVAILABLE, kind, message);
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    a.headers = vec![(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)))];
    a
}

/// Returns `$result` from [`forward_upstream`], first moving the client's method and URI
/// into the record (`respond` and `log` read them; a move, not a clone).
macro_rules! done {
    ($record:expr, $parts:expr, $result:expr) => {{
        $record.request_line = Some((
            std::mem::take(&mut $parts.method),
            std::mem::take(&mut $parts.uri),
        ));
        return $result;
    }};
}

/// Forwards to the service, with retries: what [`forward`] protects.
pub(crate) async fn forward_upstream(
    req: Request<RequestBody>,
    route: &Route,
    target: &Target,
    conn: &ConnCtx,
    request_id: &HeaderValue,
    record: &mut Record,
) -> Result<Response<ClientBody>, Answer> {
    let service: &Service = &target.service;
    let cfg = &service.cfg;
    // The route's body limit, within the listener's.
    let max_body = route
        .max_body
        .map_or(conn.max_body_bytes, |m| m.min(conn.max_body_bytes));
    let (mut parts, body) = req.into_parts();
    let uri = request::upstream_request(&mut parts, route, cfg.protocol, conn, request_id);

    // Is this request retryable, and can its body be replayed?
    let idempotent = service.retry_methods.contains(&parts.method) && cfg.retry.attempts > 1;
    let mut replay = if body.is_end_stream() {
        Replay::Buffered(Bytes::new())
    } else if idempotent
        && body
            .size_hint()
            .upper()
            .is_some_and(|n| n <= cfg.retry.replay_body_bytes)
    {
        match Box::pin(body.collect()).await {
            Ok(b) => Replay::Buffered(b.to_bytes()),
            Err(e) => {
                let err = attempt_body_error(e);
                done!(
                    record,
                    parts,
                    Err(err.answer("", cfg.request_timeout, max_body))
                );
            }
        }
    } else {
        Replay::Stream(Some(UpstreamBody::Stream {
            inner: body,
            seen: 0,
            limit: max_body,
        }))
    };

    service.budget.deposit();
    let key = cfg
        .hash_on
        .as_ref()
        .and_then(|k| hash_key(k, &parts.headers, conn.client));
    let replicas = &service.replicas;
    let max_attempts = cfg.retry.attempts.max(1);
    let mut tried = Tried::default();
    // Connect failures do not use up attempts, but there are only so many replicas to try.
    let mut connect_failures = 0;
    // pick: an available, untried replica. Its clock reading also stamps the attempt's
    // latency sample.
    let mut picked_at = 0;
    let pick = |tried: &mut Tried, picked_at: &mut u64| {
        *picked_at = now_ns();
        let i = service
            .balancer
            .pick(replicas, *tried, key, *picked_at, cfg.slow_start)?;
        tried.add(i);
        Some(i)
    };
    let Some(mut i) = pick(&mut tried, &mut picked_at) else {
        done!(record, parts, Err(no_healthy_replica(service)));
    };
    loop {
        // pick (done: `i`)
        let replica = &replicas[i];
        record.replica = Some(i);

        // connect
        let sender = match attempt::connect(replica, service).await {
            Ok(s) => s,
            Err(e) => {
                connect_failed(service, replica, &e);
                connect_failures += 1;
                let next = (connect_failures < replicas.len().min(64))
                    .then(|| pick(&mut tried, &mut picked_at))
                    .flatten();
                match next {
                    Some(n) => {
                        i = n;
                        continue;
                    }
                    None => done!(
                        record,
                        parts,
                        Err(e.answer(&replica.label, cfg.request_timeout, max_body))
                    ),
                }
            }
        };

        // send
        record.attempts += 1;
        let inflight = InFlight::new(replica);
        let sent_at = Instant::now();
        let may_retry = idempotent && replay.replayable() && record.attempts < max_attempts;
        let body = replay.take().unwrap_or(UpstreamBody::Empty);
        let span = record
            .trace
            .as_ref()
            .map(|t| t.attempt_begin(&mut parts.headers));
        let result =
            attempt::send(sender, replica, service, &mut parts, &uri, body, !may_retry).await;
        if let (Some(t), Some(span)) = (&mut record.trace, span) {
            let (status, error) = match &result {
                Ok((resp, _)) => (resp.status().as_u16(), None),
                Err(e) => (0, Some(e.to_string())),
            };
            t.attempt_end(span, &service.name, &replica.label, status, error);
        }

        // retry?
        let failure = match result {
            Ok((resp, h2)) => {
                let status = resp.status();
                let took = sent_at.elapsed();
                let done_at = picked_at + crate::clock::ns(took);
                replica.observe_latency(took, done_at);
                service.upstream_latency.observe(took);
                record.upstream_duration = Some(took);
                if status.is_server_error() {
                    passive_failure(service, replica);
                } else {
                    replica.record_success(done_at, &cfg.outlier);
                }
                if may_retry && cfg.retry.on_status.contains(&status.as_u16()) {
                    // Only when another replica can take it: else this answer stands.
                    if let Some(n) =
                        pick(&mut tried, &mut picked_at).filter(|_| take_retry(service))
                    {
                        debug!(replica = %replica.label, %status, "retrying on status");
                        i = n;
                        continue;
                    }
                }
                let (mut head, body) = resp.into_parts();
                head.version = Version::HTTP_11;
                record.upstream = Some(UpstreamDone {
                    inflight,
                    h2,
                    max_idle: cfg.max_idle,
                });
                done!(record, parts, Ok(Response::from_parts(head, body)));
            }
            Err(e) => e,
        };
        drop(inflight);
        if failure.blames_replica() {
            if failure.kind == ErrorKind::UpstreamTimeout {
                service.timeouts.inc();
            }
            passive_failure(service, replica);
            warn!(service = %service.name, replica = %replica.label, error = %failure, "upstream request failed");
        }
        let answer = failure.answer(&replica.label, cfg.request_timeout, max_body);
        let retry = match failure.retry() {
            RetrySafety::NothingSent => true,
            RetrySafety::IfIdempotent => may_retry,
            RetrySafety::Never => false,
        };
        if !(retry && replay.available()) {
            done!(record, parts, Err(answer));
        }
        match pick(&mut tried, &mut picked_at).filter(|_| take_retry(service)) {
            Some(n) => i = n,
            None => done!(record, parts, Err(answer)),
        }
    }
}

fn no_healthy_replica(service: &Service) -> Answer {
    Answer::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_healthy_replica",
        format!("service \"{}\" has no healthy replica", service.name),
    )
}

/// The client's body failed while it was being buffered for replay.
fn attempt_body_error(e: crate::body::BoxError) -> ProxyError {
    let kind = if crate::body::is_body_too_large(e.as_ref()) {
        ErrorKind::BodyTooLarge
    } else if crate::body::is_client_body_timeout(e.as_ref()) {
        ErrorKind::ClientBodyTimeout
    } else {
        ErrorKind::ClientBody
    };
    debug!(error = %e, "client body failed");
    ProxyError::new(kind, e)
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

/// A failed connect. A refused one is unambiguous — nothing listens — so the replica is
/// taken out at once (back after its health checks pass, or after `base_ejection` when the
/// service has none); any other counts as a passive failure.
fn connect_failed(service: &Service, replica: &Replica, e: &ProxyError) {
    if e.kind == ErrorKind::PoolFull {
        // Saturated, not broken: counted in headroom_upstream_pool_waits_total already.
        debug!(service = %service.name, replica = %replica.label, error = %e, "no upstream connection came free");
        return;
    }
    service.connect_errors.inc();
    warn!(service = %service.name, replica = %replica.label, error = %e, "upstream connect failed");
    if e.kind != ErrorKind::ConnectRefused {
        return passive_failure(service, replica);
    }
    match service.cfg.health.as_ref() {
        Some(h) => {
            if replica.refused_until_checks_pass() {
                info!(service = %service.name, replica = %replica.label, rise = h.rise, "replica refused a connection: out until its health checks pass");
            }
        }
        None => {
            if let Some(length) = replica.refused(now_ns(), &service.cfg.outlier) {
                info!(service = %service.name, replica = %replica.label, seconds = length.as_secs_f64(), "replica refused a connection: ejected");
            }
        }
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
