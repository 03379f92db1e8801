//! lookup: the route's cache. A hit answers here (and `respond` serves it like any
//! response); a miss or a revalidation goes on to `forward` with a [`Pending`] that takes
//! the response on the way back ([`after`]): stored as it streams to its client, refreshed
//! by a 304, or replaced by a stale response when the upstream failed (stale-if-error). A
//! route without a cache has `cache: None` and skips this phase.

use super::context::{ConnCtx, Record};
use super::Answer;
use crate::body::{ClientBody, RequestBody};
use crate::snapshot::{Route, Snapshot, Target};
use headroom_cache::compress::Coding;
use headroom_cache::{CacheRequest, Fill, FillResponse, Hit, Invalidation, Lookup, RouteCache};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use std::sync::Arc;

/// A route's cache rule: its cache, compiled into `Route::cache` at snapshot build time.
#[derive(Debug)]
pub struct CacheRule {
    pub cache: RouteCache,
}

/// What a forwarded request owes the cache once its response comes.
pub(super) enum Pending {
    Fill(Fill),
    /// Kept away from the cache: only `Cache-Status` says so.
    Bypass(&'static str),
    Invalidate(Invalidation, Method, Uri),
}

/// What `lookup` decided.
pub(super) enum Looked {
    Answer(Response<ClientBody>),
    Forward(Option<Pending>),
}

/// Where a background refresh finds its route and target again.
pub(super) struct Origin<'a> {
    pub conn: &'a Arc<ConnCtx>,
    pub snap: &'a Arc<Snapshot>,
    pub route: usize,
    pub target: Option<usize>,
    pub request_id: &'a HeaderValue,
}

pub(super) async fn lookup(
    rule: &CacheRule,
    req: &Request<RequestBody>,
    host: &str,
    coding: Coding,
    compresses: bool,
    origin: Origin<'_>,
) -> Result<Looked, Answer> {
    let looked = {
        let creq = CacheRequest {
            method: req.method(),
            host,
            path: req.uri().path(),
            query: req.uri().query(),
            headers: req.headers(),
            coding,
            compresses,
        };
        rule.cache.lookup(&creq).await
    };
    let x_cache = origin.snap.cache_x_header;
    Ok(match looked {
        Lookup::Pass => Looked::Forward(None),
        Lookup::Bypass(why) => Looked::Forward(Some(Pending::Bypass(why))),
        Lookup::Hit(hit) => Looked::Answer(hit_response(hit, x_cache)),
        Lookup::HitAndRefresh(hit, fill) => {
            refresh(fill, req.uri().clone(), coding, origin);
            Looked::Answer(hit_response(hit, x_cache))
        }
        // The caller edits the upstream request with `Fill::prepare`.
        Lookup::Forward(fill) => Looked::Forward(Some(Pending::Fill(fill))),
        Lookup::GatewayTimeout => {
            return Err(Answer::new(
                StatusCode::GATEWAY_TIMEOUT,
                "not_cached",
                "only-if-cached: nothing stored for this request",
            ))
        }
        Lookup::Invalidate(inv) => Looked::Forward(Some(Pending::Invalidate(
            inv,
            req.method().clone(),
            req.uri().clone(),
        ))),
        Lookup::Purge(url) => Looked::Answer(super::purge::purge_method(
            req,
            url,
            &origin.conn.shared,
            origin.request_id,
        )),
    })
}

/// The forwarded request's response (or error) through the cache.
pub(super) fn after(
    pending: Pending,
    result: Result<Response<ClientBody>, Answer>,
    encoder: &mut Option<headroom_cache::compress::Encoder>,
    x_cache: bool,
) -> Result<Response<ClientBody>, Answer> {
    match pending {
        Pending::Bypass(why) => result.map(|mut resp| {
            let mut cs = headroom_cache::CacheStatus::new(headroom_cache::Outcome::Bypass);
            cs.detail = Some(why);
            headroom_cache::mark(resp.headers_mut(), &cs, x_cache);
            resp.body_mut().filter(encoder.take(), None);
            resp
        }),
        Pending::Invalidate(inv, method, uri) => {
            if let Ok(resp) = &result {
                inv.response(&method, resp.status(), &uri, resp.headers());
            }
            result.map(|mut resp| {
                resp.body_mut().filter(encoder.take(), None);
                resp
            })
        }
        Pending::Fill(fill) => match result {
            Ok(mut resp) => {
                let status = resp.status();
                match fill.response(status, resp.headers_mut()) {
                    FillResponse::Store(store) => {
                        resp.body_mut().filter(encoder.take(), Some(store));
                        Ok(resp)
                    }
                    FillResponse::Pass => {
                        resp.body_mut().filter(encoder.take(), None);
                        Ok(resp)
                    }
                    FillResponse::Replace(hit) => {
                        *encoder = None;
                        Ok(hit_response(hit, x_cache))
                    }
                }
            }
            Err(answer) => match fill.error() {
                Some(hit) => Ok(hit_response(hit, x_cache)),
                None => Err(answer),
            },
        },
    }
}

pub(super) fn hit_response(hit: Hit, x_cache: bool) -> Response<ClientBody> {
    let mut resp = Response::new(ClientBody::full(hit.body));
    *resp.status_mut() = hit.status;
    *resp.headers_mut() = hit.headers;
    headroom_cache::mark(resp.headers_mut(), &hit.cache_status, x_cache);
    resp
}

/// stale-while-revalidate: the stale response has answered; one background request
/// refreshes it (the fill's guard keeps others from starting a second).
fn refresh(fill: Fill, uri: Uri, coding: Coding, origin: Origin<'_>) {
    let conn = origin.conn.clone();
    let snap = origin.snap.clone();
    let (ri, ti) = (origin.route, origin.target);
    let request_id = origin.request_id.clone();
    tokio::spawn(async move {
        let route: &Route = &snap.routes[ri];
        let Some(target) = target_of(route, ti) else {
            return;
        };
        let mut req = Request::new(RequestBody::Empty);
        *req.uri_mut() = uri;
        *req.headers_mut() = fill.request_headers().clone();
        // The refresh fetches the whole response for storage, whatever the client asked.
        for h in [
            http::header::RANGE,
            http::header::IF_RANGE,
            http::header::IF_NONE_MATCH,
            http::header::IF_MODIFIED_SINCE,
            http::header::IF_MATCH,
            http::header::IF_UNMODIFIED_SINCE,
        ] {
            req.headers_mut().remove(h);
        }
        fill.prepare(req.headers_mut());
        let mut record = Record {
            route: Some(ri),
            target: ti,
            ..Record::default()
        };
        let result =
            crate::forward::forward(req, route, target, &conn, &request_id, &mut record).await;
        let Ok(mut resp) = result else {
            return;
        };
        let status = resp.status();
        let mut encoder = route
            .compress
            .as_ref()
            .and_then(|c| c.encoder_for(coding, resp.headers_mut(), &Method::GET, status));
        if let FillResponse::Store(store) = fill.response(status, resp.headers_mut()) {
            resp.body_mut().filter(encoder.take(), Some(store));
            let mut body = resp.into_body();
            let mut complete = true;
            while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
                if frame.is_err() {
                    complete = false;
                    break;
                }
            }
            if let Some(up) = record.upstream.take() {
                up.finish(complete);
            }
        }
    });
}

fn target_of(route: &Route, ti: Option<usize>) -> Option<&Target> {
    match (&route.action, ti) {
        (crate::snapshot::RouteAction::Forward(t), _) => Some(t),
        (crate::snapshot::RouteAction::Split { targets, .. }, Some(i)) => {
            targets.get(i).map(|(t, _)| t)
        }
        _ => None,
    }
}
