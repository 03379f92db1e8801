//! The admin listener: `/metrics` (Prometheus text), `/status` (JSON), `/healthz`.
//! Loopback by default; when `admin.token` is set every request needs `Authorization: Bearer <token>`.
//!
//! It runs on the control runtime, not on a worker, so a saturated data plane cannot starve
//! it; and it guards itself: at most [`MAX_CONNECTIONS`] connections at once (more wait in
//! the accept queue), [`HEADER_READ_TIMEOUT`] to send a request head, a back-off on accept
//! errors (out of file descriptors) instead of a spin, and a constant-time token check.

mod events;
mod purge;
mod replicas;

use crate::clock::now_ns;
use crate::Shared;
use bytes::Bytes;
use headroom_config::{AdminConfig, RouteConfig};
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, warn};

/// Admin connections served at once. Scrapers and operators need a handful; the cap bounds
/// what a misbehaving client can hold (memory, file descriptors). Connections beyond it wait
/// in the kernel's accept queue until one closes.
pub const MAX_CONNECTIONS: usize = 64;

/// How long an admin connection may take to send a request head, and sit idle between
/// requests: an idle connection gives its slot back after this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Pauses after failed accepts (EMFILE, ENFILE, ENOBUFS...): 10 ms, doubling to 1 s, back to
/// 10 ms after a success. A failed accept leaves the connection queued, so retrying at once
/// would fail again at once: a spin that burns the control thread.
#[derive(Debug)]
struct AcceptBackoff {
    next: Duration,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn new() -> Self {
        AcceptBackoff { next: Self::FIRST }
    }

    /// The pause after this failure; the next one will be twice as long (up to `MAX`).
    fn failed(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        pause
    }

    fn succeeded(&mut self) {
        self.next = Self::FIRST;
    }

    /// True while no failure has happened since the last success (to log a streak once).
    fn is_fresh(&self) -> bool {
        self.next == Self::FIRST
    }
}

/// Binds the admin listener now (so errors surface at start) and serves it until shutdown.
pub async fn bind(cfg: &AdminConfig) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(cfg.bind)
        .await
        .map_err(|e| format!("admin: cannot bind {}: {e}", cfg.bind))
}

/// Serves the admin listener until shutdown. The token is read from the config in force at
/// each request, so a reload that changes it takes effect at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = AcceptBackoff::new();
    loop {
        // A slot before accepting: at the cap, connections wait in the accept queue.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => {
                backoff.succeeded();
                tcp
            }
            Err(e) => {
                if backoff.is_fresh() {
                    warn!(error = %e, "admin: accept failed; retrying with back-off (10ms to 1s)");
                } else {
                    debug!(error = %e, "admin: accept failed");
                }
                let pause = backoff.failed();
                tokio::select! {
                    _ = tokio::time::sleep(pause) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move {
                    use http_body_util::BodyExt;
                    if req.uri().path() == "/watch/events" && may_read(req.headers(), &shared) {
                        return Ok::<_, Infallible>(match events::answer(&shared) {
                            Ok(r) => r.map(|b| b.boxed_unsync()),
                            Err(status) => reply(status, "application/json", "{\"error\":\"busy\",\"message\":\"too many event streams open; poll /status\"}\n")
                                .map(|b| b.boxed_unsync()),
                        });
                    }
                    Ok(answer(req, &shared).await.map(|b| b.boxed_unsync()))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
            drop(slot);
        });
    }
}

/// No admin token, or the right one in `headers`.
fn may_read(headers: &HeaderMap, shared: &Shared) -> bool {
    let config = shared.config.load();
    config
        .admin
        .as_ref()
        .and_then(|a| a.token.as_deref())
        .is_none_or(|t| authorized(headers, t))
}

/// True when `headers` carry `Authorization: Bearer <token>`. The scheme is matched without
/// regard to case (RFC 9110 §11.1); the token is compared in constant time, so the time
/// taken tells nothing of how much of a guess was right (only, at most, the token's length).
pub(crate) fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some((scheme, given)) = value.split_at_checked(7) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ") && bool::from(given.ct_eq(token.as_bytes()))
}

pub(super) fn reply(
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

async fn answer(req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Full<Bytes>> {
    let config = shared.config.load();
    if let Some(token) = config.admin.as_ref().and_then(|a| a.token.as_deref()) {
        if !authorized(req.headers(), token) {
            let mut r = reply(StatusCode::UNAUTHORIZED, "application/json", "{\"error\":\"unauthorized\",\"message\":\"send Authorization: Bearer <admin.token>\"}\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    drop(config);
    if let Some(rest) = req.uri().path().strip_prefix("/services/") {
        let rest = rest.to_string();
        return replicas::answer(req, &rest, shared).await;
    }
    if req.uri().path() == "/cache/purge" {
        return purge::answer(req, shared).await;
    }
    match req.uri().path() {
        "/metrics" => {
            let format = headroom_telemetry::Format::negotiate(
                req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()),
            );
            reply(StatusCode::OK, format.content_type(), shared.registry.render_as(format))
        }
        "/status" => reply(StatusCode::OK, "application/json", format!("{:#}\n", status_json(shared))),
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
        "/" | "/dashboard" => reply(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD),
        "/watch/charts" => reply(
            StatusCode::OK,
            "application/json",
            shared
                .watch_charts
                .load_full()
                .map_or_else(|| "{\"routes\":[]}\n".to_string(), |c| format!("{c}\n")),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "application/json",
            "{\"error\":\"not_found\",\"message\":\"admin endpoints: /dashboard, /metrics, /status, /watch/charts, /watch/events, /healthz, /services/NAME/replicas, /cache/purge\"}\n",
        ),
    }
}

/// The dashboard: one page, no external assets (it works offline), reading `/status` and
/// `/watch/charts`.
const DASHBOARD: &str = include_str!("dashboard.html");

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
                .enumerate()
                .map(|(i, r)| {
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
                        "waiting_for_connection": r.pools.waiting(),
                        "connects": r.connects.get(),
                        "source": s.sources.get(i).map_or("config", |s| s.as_str()),
                        "draining": r.is_draining(),
                    })
                })
                .collect();
            let shed = s.protect.as_ref().and_then(|p| p.shed.as_ref()).map(|sh| {
                serde_json::json!({
                    "limit": sh.limit(),
                    "inflight": sh.inflight(),
                    "queued": sh.queued(),
                    "baseline_ms": sh.baseline().map(|b| b.as_secs_f64() * 1e3),
                    "adaptive": s.cfg.shed.as_ref().is_some_and(|c| c.adaptive.is_some()),
                    // The ceiling the limit can reach: the fixed one, or the adaptive max.
                    "max": s.cfg.shed.as_ref().and_then(|c| c.adaptive.map(|a| a.1).or(c.max_inflight)),
                })
            });
            let circuit = s
                .protect
                .as_ref()
                .and_then(|p| p.circuit.as_ref())
                .map(|c| c.state().as_str());
            // Since start: a pool that keeps up opens a handful of connections per thousand
            // requests; one per request means keep-alive is lost.
            let (connects, forwarded) = (s.connections_opened.get(), s.upstream_latency.count());
            serde_json::json!({
                "service": &*s.name,
                "balance": s.cfg.balance.as_str(),
                "replicas": replicas,
                "shed": shed,
                "circuit": circuit,
                "protocol": match s.cfg.protocol {
                    headroom_config::UpstreamProtocol::Http1 => "http1",
                    headroom_config::UpstreamProtocol::H2 => "h2",
                },
                "request_timeout_ms": s.cfg.request_timeout.as_millis() as u64,
                "max_idle": s.cfg.max_idle,
                "max_conns": s.cfg.max_conns,
                "pool_waits": s.pool_waits.get(),
                "idle_timeout_ms": s.cfg.idle_timeout.as_millis() as u64,
                "connects": connects,
                "connects_per_1k_requests": (forwarded > 0)
                    .then(|| (connects as f64 * 1e6 / forwarded as f64).round() / 1e3),
            })
        })
        .collect();
    let routes: Vec<serde_json::Value> = cfg
        .routes
        .iter()
        .map(|rc| {
            let mut r = route_json(rc);
            // Its slow requests' threshold and top paths (the snapshot's route of that name).
            if let Some(live) = snap.routes.iter().find(|s| *s.name == *rc.name) {
                r["slow"] = live.slow.status();
            }
            r
        })
        .collect();
    serde_json::json!({
        "config": cfg.source.display().to_string(),
        "generation": snap.generation,
        "inflight": shared.inflight.get(),
        "routes": routes,
        "services": services,
        "cache": snap.cache.as_ref().map(|c| {
            let routes: Vec<&headroom_cache::RouteCache> = snap
                .routes
                .iter()
                .filter_map(|r| r.cache.as_ref().map(|c| &c.cache))
                .collect();
            c.status(&routes)
        }),
        "watch": shared.watch_status.load_full().as_deref(),
        "autoscale": shared.scale_status.load_full().as_deref(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_from_10ms_to_1s_and_resets_on_success() {
        let mut b = AcceptBackoff::new();
        let ms: Vec<u128> = (0..9).map(|_| b.failed().as_millis()).collect();
        assert_eq!(ms, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert!(!b.is_fresh());
        b.succeeded();
        assert!(b.is_fresh());
        assert_eq!(b.failed(), Duration::from_millis(10));
    }

    #[test]
    fn only_the_exact_bearer_token_is_authorized() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            authorized(&h, "s3cret")
        };
        assert!(!authorized(&HeaderMap::new(), "s3cret"));
        assert!(with("Bearer s3cret"));
        assert!(with("bearer s3cret"), "the scheme is case-insensitive");
        for wrong in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Bearer S3CRET",
            "Bearer  s3cret",
            "Basic s3cret",
            "s3cret",
            "Bearer",
            "",
        ] {
            assert!(!with(wrong), "{wrong:?}");
        }
    }
}
