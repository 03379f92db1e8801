//! respond: every answer leaves through here — a replica's response, a fixed response, a
//! redirect, or an early [`Answer`] from any phase. The route's response header edits are
//! applied, the request id is set, and the request's context rides on the body until it
//! ends, when `log` runs.

use super::context::RequestCtx;
use super::Answer;
use crate::body::ClientBody;
use crate::headers::{strip_hop_by_hop, X_REQUEST_ID};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

pub(super) fn respond(resp: &mut Response<ClientBody>, mut ctx: Box<RequestCtx>) {
    let h = resp.headers_mut();
    if let Some(r) = ctx.record.route {
        let route = &ctx.snap.routes[r];
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
