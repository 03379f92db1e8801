//! The replica-set endpoints of the admin API:
//!
//! - `GET /services/NAME/replicas`: the service's replicas, with where each came from.
//! - `POST /services/NAME/replicas` with `{"addr": "host:port", "weight": 1}`: adds one
//!   (201); it starts in slow start, and after its first passing check when the service has
//!   health checks.
//! - `DELETE /services/NAME/replicas/ADDR?drain=30s`: drains one (202): no new requests at
//!   once, removed when its in-flight requests are done or the deadline passes. `drain`
//!   defaults to 30s; `drain=0s` removes it at once (requests in flight finish on their own).

use super::{reply, status_json};
use crate::replica_set::{ReplicaError, Source};
use crate::Shared;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The drain deadline when `DELETE` names none.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// A request body larger than this is refused: an add is a few dozen bytes.
const MAX_BODY: usize = 16 << 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Add {
    addr: String,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

pub(super) fn error(
    status: StatusCode,
    kind: &str,
    message: impl std::fmt::Display,
) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": kind, "message": message.to_string() });
    reply(status, "application/json", format!("{body}\n"))
}

fn replica_error(e: ReplicaError) -> Response<Full<Bytes>> {
    let (status, kind) = match &e {
        ReplicaError::NoSuchService(_) | ReplicaError::NoSuchReplica(_) => {
            (StatusCode::NOT_FOUND, "not_found")
        }
        ReplicaError::Exists(_) => (StatusCode::CONFLICT, "exists"),
        ReplicaError::Weight(_) => (StatusCode::BAD_REQUEST, "bad_request"),
    };
    error(status, kind, e)
}

/// `path` is what follows `/services/`: `NAME/replicas` or `NAME/replicas/ADDR`.
pub(super) async fn answer(
    req: Request<Incoming>,
    path: &str,
    shared: &Arc<Shared>,
) -> Response<Full<Bytes>> {
    let mut parts = path.splitn(3, '/');
    let (Some(service), Some("replicas")) = (parts.next(), parts.next()) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "expected /services/NAME/replicas or /services/NAME/replicas/ADDR",
        );
    };
    let service = service.to_string();
    match (req.method().clone(), parts.next()) {
        (Method::GET, None) => list(shared, &service),
        (Method::POST, None) => add(req, shared, &service).await,
        (Method::DELETE, Some(addr)) if !addr.is_empty() => {
            let drain = match drain_deadline(req.uri().query()) {
                Ok(d) => d,
                Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e),
            };
            match shared.spawn_drain(&service, addr, drain) {
                Ok(()) => {
                    let body = serde_json::json!({
                        "service": service,
                        "replica": addr,
                        "draining": true,
                        "deadline_s": drain.as_secs_f64(),
                    });
                    reply(
                        StatusCode::ACCEPTED,
                        "application/json",
                        format!("{body}\n"),
                    )
                }
                Err(e) => replica_error(e),
            }
        }
        (_, None) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "GET or POST /services/NAME/replicas",
        ),
        (_, Some(_)) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "DELETE /services/NAME/replicas/ADDR?drain=30s",
        ),
    }
}

fn list(shared: &Shared, service: &str) -> Response<Full<Bytes>> {
    let status = status_json(shared);
    let found = status["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["service"] == service));
    match found {
        Some(s) => reply(
            StatusCode::OK,
            "application/json",
            format!("{:#}\n", s["replicas"]),
        ),
        None => replica_error(ReplicaError::NoSuchService(service.into())),
    }
}

async fn add(req: Request<Incoming>, shared: &Shared, service: &str) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", format!("body: {e}")),
    };
    let add: Add = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("expected {{\"addr\": \"host:port\", \"weight\": 1}}: {e}"),
            )
        }
    };
    let addr = match resolve(&add.addr).await {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e),
    };
    match shared.add_replica(service, addr, add.weight, Source::Admin) {
        Ok(()) => {
            let body = serde_json::json!({
                "service": service,
                "replica": addr.to_string(),
                "weight": add.weight,
                "source": "admin",
            });
            reply(StatusCode::CREATED, "application/json", format!("{body}\n"))
        }
        Err(e) => replica_error(e),
    }
}

/// `ip:port`, or `host:port` resolved once (the replica is then known by its address).
async fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    if !addr.contains(':') {
        return Err(format!("\"{addr}\": expected host:port"));
    }
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("\"{addr}\": {e}"))?
        .next()
        .ok_or_else(|| format!("\"{addr}\": no address"))
}

/// `drain=30s` from the query, else [`DEFAULT_DRAIN`].
fn drain_deadline(query: Option<&str>) -> Result<Duration, String> {
    let Some(v) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("drain="))
    else {
        return Ok(DEFAULT_DRAIN);
    };
    humantime::parse_duration(v).map_err(|e| format!("drain={v}: {e} (expected e.g. 30s)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_deadline_comes_from_the_query_or_defaults_to_30s() {
        assert_eq!(drain_deadline(None), Ok(DEFAULT_DRAIN));
        assert_eq!(
            drain_deadline(Some("x=1&drain=5s")),
            Ok(Duration::from_secs(5))
        );
        assert_eq!(drain_deadline(Some("drain=0s")), Ok(Duration::ZERO));
        assert!(drain_deadline(Some("drain=soon")).is_err());
    }
}
