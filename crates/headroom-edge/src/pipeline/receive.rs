//! receive: what is checked of a request before it is routed. The head itself was parsed
//! by the connection's codec (`h1::request` or hyper's h2); the request id and the snapshot
//! were taken when its context was made.

use super::context::ConnCtx;
use super::Answer;
use crate::body::RequestBody;
use crate::headers::host_of;
use http::{Request, StatusCode, Version};
use http_body::Body as _;

/// 400 for an HTTP/1.1 request without `Host`; 413 for a body declared over the limit.
/// Both close the connection: the client is not trusted with the rest of it (an unread body
/// would be parsed as the next request). Returns the request's host (without port; empty
/// when an HTTP/1.0 request has none), which routing matches.
pub(super) fn receive<'r>(
    req: &'r Request<RequestBody>,
    conn: &ConnCtx,
) -> Result<&'r str, Answer> {
    if conn.denied {
        return Err(Answer::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{} may not use this listener", conn.client.ip()),
        )
        .close());
    }
    let host = host_of(req).unwrap_or("");
    if req.version() == Version::HTTP_11 && host.is_empty() {
        return Err(Answer::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "an HTTP/1.1 request needs a Host header",
        )
        .close());
    }
    if req.body().size_hint().lower() > conn.max_body_bytes {
        return Err(Answer::body_too_large(conn.max_body_bytes));
    }
    Ok(host)
}
