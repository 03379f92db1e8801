//! The request pipeline: one straight line of named phases (the README's "Request
//! lifecycle" chart uses these names):
//!
//! ```text
//! receive → route → admit → lookup → forward (pick → connect → send → retry) → respond → log
//! ```
//!
//! - [`receive`](receive::receive): the request id, `Host`, the declared body size.
//! - [`route`](route::route): the first matching route, and for a split its target.
//! - [`admit`](admit::admit): the route's admission policies (guard: auth, limits, shedding).
//! - [`lookup`](lookup::lookup): the route's cache rule (a hit answers here).
//! - [`forward`](crate::forward::forward), or the route's own fixed answer or redirect.
//! - [`respond`](respond::respond): every answer, early or not, leaves through here.
//! - [`log`](context::RequestCtx::log): metrics and the access log line, once, when the
//!   response body has been sent or the client went away.
//!
//! Any phase may end the request early with an [`Answer`]; there is one exit, so metrics
//! and the log line are recorded the same way whatever happened. A route's policies are
//! compiled into its [`Route`](crate::snapshot::Route) at snapshot build time: a route with
//! none skips `admit` and `lookup` without a lookup or an allocation.

pub mod admit;
pub mod compress;
mod context;
pub mod lookup;
mod purge;
mod receive;
mod respond;
mod route;

pub use context::{ConnCtx, Record, RequestCtx};
pub use respond::json_error;

use crate::body::{ClientBody, RequestBody};
use crate::snapshot::RouteAction;
use headroom_cache::compress::Coding;
use http::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;

/// An early answer from any phase: the status, a stable machine-readable `kind` for the
/// JSON error body, a message for people, and whether the connection must close after it
/// (the client sent something that makes the rest of the connection unreadable).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub close: bool,
    /// Fields the answer carries (`Retry-After`, `RateLimit`); empty for most.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Answer {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Answer {
            status,
            kind,
            message: message.into(),
            close: false,
            headers: Vec::new(),
        }
    }

    /// The connection closes after this answer.
    pub fn close(mut self) -> Self {
        self.close = true;
        self
    }

    /// 413, closing: the unread rest of the body would be parsed as the next request.
    pub fn body_too_large(limit: u64) -> Self {
        Answer::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds the limit of {limit} bytes"),
        )
        .close()
    }
}

/// Ends the phases with `$answer` when a phase answers early.
macro_rules! phase {
    ($phases:lifetime, $result:expr) => {
        match $result {
            Ok(v) => v,
            Err(answer) => break $phases Err(answer),
        }
    };
}

/// Serves one request through the phases. Never fails: every error becomes a response.
///
/// The phases run inside one labelled block rather than a function of their own: the
/// request and the response are then moved once each instead of once per call level
/// (callgrind: ~150 instructions per request of `memcpy`).
pub async fn handle(
    mut req: Request<RequestBody>,
    conn: Arc<ConnCtx>,
) -> Result<Response<ClientBody>, Infallible> {
    // Boxed from the start: the context rides on the response body until `log`, and a box
    // made now is moved as a pointer instead of copied through every phase.
    let mut ctx = Box::new(RequestCtx::new(conn, &req));
    let outcome = 'phases: {
        let host = phase!('phases, receive::receive(&req, &ctx.conn));
        let ctx = &mut *ctx;
        let routed = phase!(
            'phases,
            route::route(&ctx.snap, &req, host, &ctx.conn, &mut ctx.record)
        );
        let route = routed.route;
        let mut admitted = None;
        if !route.admit.is_empty() {
            let started = ctx.record.trace.as_ref().map(|_| std::time::Instant::now());
            let decided = admit::admit(&route.admit, &req, &ctx.conn, &mut ctx.record).await;
            if let (Some(t), Some(at)) = (&mut ctx.record.trace, started) {
                let decision = match (&decided, ctx.record.guard) {
                    (_, g) if !g.is_empty() => g,
                    (Ok(_), _) => "allowed",
                    (Err(a), _) => a.kind,
                };
                t.guard(at, decision);
            }
            admitted = phase!('phases, decided);
        }
        let coding = route
            .compress
            .as_ref()
            .map_or(Coding::Identity, |c| c.negotiate(req.headers()));
        let mut pending = None;
        if let Some(rule) = &route.cache {
            let origin = lookup::Origin {
                conn: &ctx.conn,
                snap: &ctx.snap,
                route: ctx.record.route.unwrap_or(0),
                target: ctx.record.target,
                request_id: &ctx.request_id,
            };
            let started = ctx.record.trace.as_ref().map(|_| std::time::Instant::now());
            let looked = lookup::lookup(rule, &req, host, coding, route.compress.is_some(), origin);
            let looked = looked.await;
            if let (Some(t), Some(at)) = (&mut ctx.record.trace, started) {
                let result = match &looked {
                    Ok(lookup::Looked::Answer(_)) => "hit",
                    Ok(lookup::Looked::Forward(Some(lookup::Pending::Fill(_)))) => "miss",
                    Ok(lookup::Looked::Forward(Some(lookup::Pending::Bypass(_)))) => "bypass",
                    Ok(lookup::Looked::Forward(Some(lookup::Pending::Invalidate(..)))) => {
                        "invalidate"
                    }
                    Ok(lookup::Looked::Forward(None)) => "uncacheable",
                    Err(a) => a.kind,
                };
                t.cache(at, result);
            }
            match phase!('phases, looked) {
                lookup::Looked::Answer(resp) => break 'phases Ok(resp),
                lookup::Looked::Forward(p) => pending = p,
            }
        }
        if let Some(a) = admitted {
            a.apply(&mut req);
        }
        if let Some(lookup::Pending::Fill(fill)) = &pending {
            fill.prepare(req.headers_mut());
        }
        // Kept for compression's checks only (a HEAD is never compressed); a standard
        // method's clone allocates nothing.
        let method = route.compress.as_ref().map(|_| req.method().clone());
        // Scale from zero: a service that may have no replica holds the request until it
        // has one (a service without `min = 0` pays this `None` check).
        let released;
        let mut target = routed.target;
        if let Some(t) = target {
            if let Some(gate) = &t.service.cold_start {
                let now = crate::clock::now_ns();
                if !t.service.replicas.iter().any(|r| r.is_available(now)) {
                    let service = phase!('phases, gate.hold(&ctx.conn.shared).await);
                    released = crate::snapshot::Target {
                        service,
                        red: t.red.clone(),
                    };
                    target = Some(&released);
                }
            }
        }
        let result = match (&route.action, target) {
            // A service without shedding or a breaker is forwarded to directly: awaiting
            // through the protected wrapper would move the forward future once more
            // (callgrind: ~600 instructions a request).
            (_, Some(target)) if target.service.protect.is_none() => {
                crate::forward::forward_upstream(
                    req,
                    route,
                    target,
                    &ctx.conn,
                    &ctx.request_id,
                    &mut ctx.record,
                )
                .await
            }
            (_, Some(target)) => {
                crate::forward::forward(
                    req,
                    route,
                    target,
                    &ctx.conn,
                    &ctx.request_id,
                    &mut ctx.record,
                )
                .await
            }
            (
                RouteAction::Respond {
                    status,
                    body,
                    content_type,
                },
                None,
            ) => Ok(respond::fixed(*status, body, content_type)),
            (RouteAction::Redirect { to, status }, None) => {
                Ok(respond::redirect(to, *status, &req))
            }
            // A forwarding route always has a target (route::route picks one).
            (RouteAction::Forward(_) | RouteAction::Split { .. }, None) => Err(Answer::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "route without a target",
            )),
        };
        let mut result = result;
        let mut encoder = None;
        if let (Some(c), Ok(resp), Some(m)) = (&route.compress, &mut result, &method) {
            let status = resp.status();
            encoder = c.encoder_for(coding, resp.headers_mut(), m, status);
        }
        match pending {
            Some(p) => lookup::after(p, result, &mut encoder, ctx.snap.cache_x_header),
            None => {
                if let (Some(e), Ok(resp)) = (encoder, &mut result) {
                    resp.body_mut().filter(Some(e), None);
                }
                result
            }
        }
    };
    let mut resp = match outcome {
        Ok(resp) => resp,
        Err(answer) => respond::answer(answer, &ctx.request_id),
    };
    respond::respond(&mut resp, ctx);
    Ok(resp)
}
