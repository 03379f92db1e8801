//! The `PURGE` method on a route that allows it (`purge_method = true`): the request's URL
//! is purged (all its variants), soft with `X-Purge: soft`. The admin token is required,
//! as a bearer token, and without one configured the method is refused.

use super::respond::json_error;
use crate::body::{ClientBody, RequestBody};
use crate::Shared;
use headroom_cache::{Purge, PurgeKind};
use http::{header, HeaderValue, Request, Response, StatusCode};

pub(super) fn purge_method(
    req: &Request<RequestBody>,
    url: String,
    shared: &Shared,
    request_id: &HeaderValue,
) -> Response<ClientBody> {
    let cfg = shared.config.load();
    let Some(token) = cfg.admin.as_ref().and_then(|a| a.token.as_deref()) else {
        return json_error(
            StatusCode::FORBIDDEN,
            "purge_disabled",
            "PURGE needs the admin token: set admin.token",
            request_id,
        );
    };
    if !crate::admin::authorized(req.headers(), token) {
        let mut r = json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "PURGE needs `Authorization: Bearer <admin token>`",
            request_id,
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let soft = req
        .headers()
        .get("x-purge")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"soft"));
    let snap = shared.snapshot.load();
    let Some(cache) = &snap.cache else {
        return json_error(
            StatusCode::NOT_FOUND,
            "no_cache",
            "no cache configured",
            request_id,
        );
    };
    let purged = cache.purge(Purge::new(PurgeKind::Url(url.clone()), soft));
    let body = serde_json::json!({ "purged": purged, "url": url, "soft": soft });
    let mut r = Response::new(ClientBody::full(format!("{body}\n")));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
