//! Active health checks: a GET to each replica's health path every interval, with
//! rise/fall thresholds; plus the housekeeping tick that notices ejections ending.

use crate::clock::now_ns;
use crate::replica::Replica;
use crate::snapshot::Service;
use crate::Shared;
use bytes::Bytes;
use headroom_config::HealthConfig;
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
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
        .filter(|s| s.cfg.health.is_some())
        .map(|s| tokio::spawn(check_service(s.clone())))
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
                }
            }
        }
    }));
    tasks
}

async fn check_service(service: Arc<Service>) {
    let Some(hc) = service.cfg.health.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(hc.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let checks = service.replicas.iter().map(|r| {
            let (r, hc, name) = (r.clone(), hc.clone(), service.name.clone());
            tokio::spawn(async move {
                let result = probe(&r, &hc).await;
                let ok = result.is_ok();
                match r.record_check(ok, hc.rise, hc.fall) {
                    Some(true) => info!(service = %name, replica = %r.label, "replica is healthy again"),
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

/// One check on a fresh connection (a pooled one could hide a dead listener).
pub async fn probe(r: &Replica, hc: &HealthConfig) -> Result<(), String> {
    let work = async {
        let tcp = tokio::net::TcpStream::connect(r.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::get(hc.path.as_str())
            .header(http::header::HOST, &*r.label)
            .header(http::header::USER_AGENT, "headroom-health/1")
            .header(http::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
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
