//! `POST /cache/purge`: one URL (all its variants), a prefix, a tag, or everything; soft
//! (marked stale) or hard. With a Redis tier the purge reaches every instance sharing it.
//!
//! Body: `{"url": "example.com/a?b=1"}`, `{"prefix": "/static/"}`, `{"tag": "product-42"}`
//! or `{"all": true}`, each with an optional `"soft": true`.

use super::{replicas::error, reply};
use crate::Shared;
use bytes::Bytes;
use headroom_cache::{Purge, PurgeKind};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    url: Option<String>,
    prefix: Option<String>,
    tag: Option<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    soft: bool,
}

const EXPECTED: &str = "expected one of {\"url\": \"host/path?query\"}, {\"prefix\": \"/path/\"}, {\"tag\": \"name\"}, {\"all\": true}, with an optional \"soft\": true";

pub(super) async fn answer(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.method() != http::Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST /cache/purge",
        );
    }
    let body = match Limited::new(req.into_body(), 64 << 10).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", format!("body: {e}")),
    };
    let b: Body = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{EXPECTED}: {e}"),
            )
        }
    };
    let kind = match (b.url, b.prefix, b.tag, b.all) {
        (Some(u), None, None, false) if !u.is_empty() => PurgeKind::Url(u),
        (None, Some(p), None, false) if !p.is_empty() => PurgeKind::Prefix(p),
        (None, None, Some(t), false) if !t.is_empty() => PurgeKind::Tag(t),
        (None, None, None, true) => PurgeKind::All,
        _ => return error(StatusCode::BAD_REQUEST, "bad_request", EXPECTED),
    };
    let snap = shared.snapshot.load();
    let Some(cache) = &snap.cache else {
        return error(
            StatusCode::NOT_FOUND,
            "no_cache",
            "no route has a [route.cache]",
        );
    };
    let purge = Purge::new(kind, b.soft);
    let label = purge.kind_label();
    let n = cache.purge(purge.clone());
    let body = serde_json::json!({
        "purged": n,
        "kind": label,
        "soft": b.soft,
        "shared": cache.config().redis.is_some(),
    });
    reply(StatusCode::OK, "application/json", format!("{body}\n"))
}
