//! respond: every answer leaves through here — a replica's response, a fixed response, a
//! redirect, or an early [`Answer`] from any phase. The route's response header edits are
//! applied, the request id is set, and the request's context rides on the body until it
//! ends, when `log` runs.

use super::context::RequestCtx;
use super::Answer;
use crate::body::ClientBody;
use crate::headers::{strip_hop_by_hop, X_REQUEST_ID};
use bytes::Bytes;
use headroom_cache::policy::ResponseDirectives;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};

pub(super) fn respond(resp: &mut Response<ClientBody>, mut ctx: Box<RequestCtx>) {
    let ok = resp.status() == StatusCode::OK;
    let h = resp.headers_mut();
    if let Some(r) = ctx.record.route {
        let route = &ctx.snap.routes[r];
        if let Some(c) = &route.cacheable {
            // The origin's own headers, before the route's edits.
            let get = matches!(&ctx.record.request_line, Some((m, _)) if m == Method::GET);
            if ok && get && shared_cacheable(h) {
                c.inc();
            }
        }
        // Only a logged request needs the cache's word for its line.
        if route.cache.is_some() && ctx.logs() {
            ctx.record.cache = headroom_cache::Outcome::from_headers(h);
        }
        strip_hop_by_hop(h);
        for name in &route.response_remove {
            h.remove(name);
        }
        for (k, v) in &route.response_add {
            h.insert(k.clone(), v.clone());
        }
    }
    // Room for them all (and the request id) at once: one growth at most, not one each.
    h.reserve(ctx.record.response_fields.len() + 1);
    for (k, v) in std::mem::take(&mut ctx.record.response_fields) {
        if k == http::header::VARY {
            h.append(k, v);
        } else {
            h.insert(k, v);
        }
    }
    h.insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
    ctx.record.status = resp.status().as_u16();
    resp.body_mut().set_on_end(ctx);
}

/// Could a shared cache store this GET 200 and answer with it: neither no-store nor
/// private, and a lifetime — s-maxage (else max-age) above 0, or without either, `public`
/// or an `Expires`. Cost: one pass over the header names (a standard name compares as a
/// byte: ~40 instructions for a typical answer, where two map lookups and the parse of an
/// absent Cache-Control cost ~310, callgrind), then the cache's non-allocating parse only
/// when there is a Cache-Control.
fn shared_cacheable(h: &HeaderMap) -> bool {
    let (mut cache_control, mut expires) = (false, false);
    for name in h.keys() {
        if *name == header::CACHE_CONTROL {
            cache_control = true;
        } else if *name == header::EXPIRES {
            expires = true;
        }
    }
    if !cache_control {
        return expires;
    }
    let d = ResponseDirectives::parse(h);
    if d.no_store || d.private {
        return false;
    }
    match d.s_maxage.or(d.max_age) {
        Some(secs) => secs > 0,
        None => d.public || expires,
    }
}

/// An early answer as a JSON error response, closing the connection if it says so.
pub(super) fn answer(answer: Answer, request_id: &HeaderValue) -> Response<ClientBody> {
    // A 204 (a CORS preflight answered here) has no body.
    let mut r = if answer.status == StatusCode::NO_CONTENT {
        let mut r = Response::new(ClientBody::full(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        r
    } else {
        json_error(answer.status, answer.kind, &answer.message, request_id)
    };
    for (k, v) in answer.headers {
        r.headers_mut().insert(k, v);
    }
    if answer.close {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
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

/// A route's `respond` action.
pub(super) fn fixed(status: u16, body: &Bytes, content_type: &HeaderValue) -> Response<ClientBody> {
    let mut resp = Response::new(ClientBody::full(body.clone()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, content_type.clone());
    resp
}

/// A route's `redirect` action: `{path}` and `{query}` are filled in from the request.
pub(super) fn redirect<B>(to: &str, status: u16, req: &Request<B>) -> Response<ClientBody> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with(fields: &[(&'static str, &'static str)]) -> bool {
        let mut h = HeaderMap::new();
        for (k, v) in fields {
            h.append(*k, HeaderValue::from_static(v));
        }
        shared_cacheable(&h)
    }

    #[test]
    fn a_lifetime_for_shared_caches_makes_an_answer_cacheable() {
        assert!(with(&[("cache-control", "max-age=60")]));
        assert!(with(&[("cache-control", "public")]));
        assert!(with(&[("cache-control", "s-maxage=10, max-age=0")]));
        assert!(with(&[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")]));
    }

    #[test]
    fn no_store_private_a_zero_lifetime_or_nothing_is_not() {
        assert!(!with(&[]));
        assert!(!with(&[("cache-control", "no-store, max-age=60")]));
        assert!(!with(&[("cache-control", "private, max-age=60")]));
        assert!(!with(&[("cache-control", "public, max-age=0")]));
        assert!(!with(&[("cache-control", "s-maxage=0, max-age=60")]));
        assert!(!with(&[
            ("cache-control", "max-age=0"),
            ("expires", "Thu, 01 Jan 2099 00:00:00 GMT")
        ]));
        assert!(!with(&[("cache-control", "no-cache")]));
    }
}
