//! The admin listener: `/metrics` (Prometheus text), `/status` (JSON), `/healthz`.
//! Loopback by default; when `admin.token` is set every request needs `Authorization: Bearer <token>`.

use crate::clock::now_ns;
use crate::Shared;
use bytes::Bytes;
use headroom_config::{AdminConfig, RouteConfig};
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::watch;

/// Binds the admin listener now (so errors surface at start) and serves it until shutdown.
pub async fn bind(cfg: &AdminConfig) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(cfg.bind)
        .await
        .map_err(|e| format!("admin: cannot bind {}: {e}", cfg.bind))
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    token: Option<String>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let token = Arc::new(token);
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let (shared, token) = (shared.clone(), token.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (shared, token) = (shared.clone(), token.clone());
                async move { Ok::<_, Infallible>(answer(req, &shared, token.as_deref())) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn answer(req: Request<Incoming>, shared: &Shared, token: Option<&str>) -> Response<Full<Bytes>> {
    if let Some(token) = token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token) {
            let mut r = reply(StatusCode::UNAUTHORIZED, "application/json", "{\"error\":\"unauthorized\",\"message\":\"send Authorization: Bearer <admin.token>\"}\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    match req.uri().path() {
        "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", shared.registry.render()),
        "/status" => reply(StatusCode::OK, "application/json", format!("{:#}\n", status_json(shared))),
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
        _ => reply(
            StatusCode::NOT_FOUND,
            "application/json",
            "{\"error\":\"not_found\",\"message\":\"admin endpoints: /metrics, /status, /healthz\"}\n",
        ),
    }
}

/// Routes, services and replicas with health, EWMA latency and in-flight counts.
pub fn status_json(shared: &Shared) -> serde_json::Value {
    let snap = shared.snapshot.load_full();
    let cfg = shared.config.load_full();
    let now = now_ns();
    let services: Vec<serde_json::Value> = snap
        .services
        .iter()
        .map(|s| {
            let replicas: Vec<serde_json::Value> = s
                .replicas
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "replica": &*r.label,
                        "address": r.addr.to_string(),
                        "weight": r.weight.load(std::sync::atomic::Ordering::Relaxed),
                        "healthy": r.is_healthy(),
                        "ejected": r.is_ejected(now),
                        "available": r.is_available(now),
                        "inflight": r.inflight.get(),
                        "ewma_ms": (r.ewma() / 1e4).round() / 100.0,
                        "idle_connections": r.pools.idle_count(),
                    })
                })
                .collect();
            serde_json::json!({
                "service": &*s.name,
                "balance": format!("{:?}", s.cfg.balance),
                "replicas": replicas,
            })
        })
        .collect();
    let routes: Vec<serde_json::Value> = cfg.routes.iter().map(route_json).collect();
    serde_json::json!({
        "config": cfg.source.display().to_string(),
        "generation": snap.generation,
        "inflight": shared.inflight.get(),
        "routes": routes,
        "services": services,
    })
}

fn route_json(r: &RouteConfig) -> serde_json::Value {
    use headroom_config::{Action, HostMatch, PathMatch};
    let action = match &r.action {
        Action::Forward(s) => serde_json::json!({ "service": s }),
        Action::Split(parts) => serde_json::json!({
            "split": parts.iter().map(|(s, w)| serde_json::json!({"service": s, "weight": w})).collect::<Vec<_>>()
        }),
        Action::Redirect { to, status } => serde_json::json!({ "redirect": to, "status": status }),
        Action::Respond { status, .. } => serde_json::json!({ "respond": status }),
    };
    serde_json::json!({
        "route": r.name,
        "host": r.matcher.host.as_ref().map(|h| match h { HostMatch::Exact(h) => h.clone(), HostMatch::Suffix(s) => format!("*{s}") }),
        "path": match &r.matcher.path {
            PathMatch::Any => None,
            PathMatch::Exact(p) => Some(p.clone()),
            PathMatch::Prefix(p) => Some(format!("{p}*")),
            PathMatch::Regex(re) => Some(format!("~{}", re.as_str())),
        },
        "action": action,
    })
}
