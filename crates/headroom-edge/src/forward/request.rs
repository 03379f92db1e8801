//! The request as it goes upstream: its URI (origin-form for HTTP/1.1, absolute for h2,
//! rewritten by the route) and its headers (hop-by-hop removed, the route's edits,
//! `X-Forwarded-*`, the request id).

use crate::headers::{
    host_for_uri, rewrite_path, strip_hop_by_hop, upgrade_requested, X_FORWARDED_FOR,
    X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID,
};
use crate::pipeline::ConnCtx;
use crate::snapshot::Route;
use headroom_config::UpstreamProtocol;
use http::header::{self, HeaderValue};
use http::{Uri, Version};

/// Rewrites `parts`' headers in place for the upstream and returns the URI to send.
pub(super) fn upstream_request(
    parts: &mut http::request::Parts,
    route: &Route,
    protocol: UpstreamProtocol,
    conn: &ConnCtx,
    request_id: &HeaderValue,
) -> Uri {
    // The common case (no rewrite, origin-form in) reuses the client's URI as is.
    let rewritten = rewrite_path(route, parts.uri.path()).map(|p| match parts.uri.query() {
        Some(q) => format!("{p}?{q}"),
        None => p,
    });
    let uri: Uri = match (protocol, rewritten) {
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
            format!("http://{}{}", host_for_uri(parts), pq)
                .parse()
                .unwrap_or_else(|_| Uri::from_static("/"))
        }
    };
    let headers = &mut parts.headers;
    // One lookup: a request without Host (h2, absolute form) gets its authority's.
    let original_host = match headers.get(header::HOST) {
        Some(v) => Some(v.clone()),
        None => parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .inspect(|v| {
                headers.insert(header::HOST, v.clone());
            }),
    };
    // An upgrade (WebSocket) asked of an HTTP/1.1 upstream is the one hop-by-hop request
    // that goes on: the upstream's 101 turns both connections into one tunnel.
    let upgrade = match protocol {
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
        Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", conn.client.ip()))
            .unwrap_or_else(|_| conn.client_ip.clone()),
        None => conn.client_ip.clone(),
    };
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
    );
    if let Some(h) = original_host {
        headers.insert(X_FORWARDED_HOST.clone(), h);
    }
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    if protocol == UpstreamProtocol::H2 {
        headers.remove(header::HOST);
    }
    uri
}
