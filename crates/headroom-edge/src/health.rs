//! Active health checks: a GET to each replica's health path every interval, in the
//! service's protocol (HTTP/1.1, or h2 with prior knowledge), with rise/fall thresholds;
//! plus the housekeeping tick that notices ejections ending.

use crate::clock::now_ns;
use crate::replica::Replica;
use crate::Shared;
use bytes::Bytes;
use headroom_config::{HealthConfig, UpstreamProtocol};
use http_body_util::Empty;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Starts one checking task per service that has `health` configured, plus housekeeping.
pub fn spawn_checks(shared: &Arc<Shared>) -> Vec<JoinHandle<()>> {
    let snap = shared.snapshot.load_full();
    let mut tasks: Vec<JoinHandle<()>> = snap
        .services
        .iter()
        .filter_map(|s| {
            let hc = s.cfg.health.clone()?;
            Some(tokio::spawn(check_service(
                shared.clone(),
                s.name.clone(),
                hc,
            )))
        })
        .collect();
    let shared = shared.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = now_ns();
            for s in &shared.snapshot.load().services {
                for r in &s.replicas {
                    r.refresh_gauge(now);
                    r.pools.sweep(s.cfg.idle_timeout);
                }
            }
        }
    }));
    tasks
}

/// Checks `name`'s replicas every `hc.interval`, and at once when a replica is added at
/// runtime (`Shared::health_kick`). The replicas are read from the snapshot in force at each
/// round, so replicas added or removed at runtime are checked without a restart.
async fn check_service(shared: Arc<Shared>, name: Arc<str>, hc: HealthConfig) {
    let mut tick = tokio::time::interval(hc.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Registered before each round, so a kick during a round starts the next one at once.
    let kick = || {
        let mut n = Box::pin(shared.health_kick.notified());
        n.as_mut().enable();
        n
    };
    let mut kicked = kick();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut kicked => {}
        }
        kicked = kick();
        let snap = shared.snapshot.load_full();
        let Some(service) = snap.services.iter().find(|s| s.name == name) else {
            return;
        };
        let checks = service.replicas.iter().map(|r| {
            let (r, hc, name) = (r.clone(), hc.clone(), service.name.clone());
            let cold = service.cold_start.clone();
            let protocol = service.cfg.protocol;
            tokio::spawn(async move {
                let started = r.check_started();
                let result = probe(&r, &hc, protocol).await;
                let ok = result.is_ok();
                match r.record_probe(started, ok, hc.rise, hc.fall) {
                    Some(true) => {
                        info!(service = %name, replica = %r.label, "replica is healthy again");
                        if let Some(gate) = &cold {
                            gate.replica_ready();
                        }
                    }
                    Some(false) => warn!(service = %name, replica = %r.label, reason = %result.err().unwrap_or_default(), "replica is unhealthy"),
                    None => {}
                }
            })
        });
        for c in checks.collect::<Vec<_>>() {
            let _ = c.await;
        }
    }
}

/// One check on a fresh connection (a pooled one could hide a dead listener), in `protocol`:
/// a replica that speaks only h2 must be probed in h2, or it never counts as healthy.
pub async fn probe(
    r: &Replica,
    hc: &HealthConfig,
    protocol: UpstreamProtocol,
) -> Result<(), String> {
    let work = async {
        let tcp = tokio::net::TcpStream::connect(r.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let io = TokioIo::new(tcp);
        let status = match protocol {
            UpstreamProtocol::Http1 => {
                let (mut sender, conn) = http1::handshake(io)
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                let req = http::Request::get(hc.path.as_str())
                    .header(http::header::HOST, &*r.label)
                    .header(http::header::USER_AGENT, "headroom-health/1")
                    .header(http::header::CONNECTION, "close")
                    .body(Empty::<Bytes>::new())
                    .map_err(|e| e.to_string())?;
                sender
                    .send_request(req)
                    .await
                    .map_err(|e| e.to_string())?
                    .status()
            }
            UpstreamProtocol::H2 => {
                let (mut sender, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("h2 handshake: {e}"))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                // h2 carries the host as :authority, which hyper takes from an absolute URI;
                // Connection headers are not allowed. Dropping the sender closes the connection.
                let uri = format!("http://{}{}", r.label, hc.path);
                let req = http::Request::get(uri.as_str())
                    .header(http::header::USER_AGENT, "headroom-health/1")
                    .body(Empty::<Bytes>::new())
                    .map_err(|e| format!("health path {:?}: {e}", hc.path))?;
                sender
                    .send_request(req)
                    .await
                    .map_err(|e| e.to_string())?
                    .status()
            }
        };
        let status = status.as_u16();
        if (hc.expect.0..=hc.expect.1).contains(&status) {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    };
    match tokio::time::timeout(hc.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", hc.timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use headroom_telemetry::Registry;

    /// A replica that speaks only h2 (prior knowledge) and answers 204 on any path.
    async fn h2_only_replica() -> Replica {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        let mut r = http::Response::new(Empty::<Bytes>::new());
                        *r.status_mut() = http::StatusCode::NO_CONTENT;
                        Ok::<_, std::convert::Infallible>(r)
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        let label = addr.to_string();
        Replica::new(
            "s",
            &label,
            addr,
            1,
            Duration::from_millis(1),
            1,
            &Registry::new(),
        )
    }

    fn check() -> HealthConfig {
        HealthConfig {
            path: "/healthz".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            expect: (200, 299),
            rise: 1,
            fall: 1,
        }
    }

    #[tokio::test]
    async fn an_h2_only_replica_passes_an_h2_probe_and_fails_an_http1_one() {
        let r = h2_only_replica().await;
        assert_eq!(probe(&r, &check(), UpstreamProtocol::H2).await, Ok(()));
        assert!(probe(&r, &check(), UpstreamProtocol::Http1).await.is_err());
        let strict = HealthConfig {
            expect: (200, 200),
            ..check()
        };
        assert_eq!(
            probe(&r, &strict, UpstreamProtocol::H2).await,
            Err("status 204".into())
        );
    }
}
