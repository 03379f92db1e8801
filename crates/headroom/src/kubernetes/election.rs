//! Several headroom instances in front of one workload (`leader_election = true`): one of
//! them scales it, on the load all of them see.
//!
//! - **Leadership** is a `coordination.k8s.io/v1` Lease named `headroom-WORKLOAD`, taken and
//!   renewed as client-go's `leaderelection` does: the holder renews it every `lease / 3`;
//!   another instance takes it over once it has seen the record unchanged for `lease` (by
//!   its own clock, so clock skew between nodes does not matter); every write carries the
//!   `resourceVersion` read, so of two instances racing for it one gets 409 and follows. A
//!   leader that cannot renew for `lease` stops scaling before anyone else may start.
//! - **Load**: every instance also keeps a Lease of its own, `headroom-WORKLOAD-ID`, labelled
//!   `headroom.dev/lease-of = headroom-WORKLOAD`, whose annotations carry the requests it has
//!   in flight to the workload and its requests/s. The leader adds up those it has seen
//!   renewed within `lease`: the in-flight and requests/s targets (and the requests mode)
//!   judge the whole workload's load, not one instance's share of it.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::Instant;

const INFLIGHT: &str = "headroom.dev/inflight";
const RPS: &str = "headroom.dev/rps";
const LEASE_OF: &str = "headroom.dev/lease-of";

/// The other instances' load, as the leader adds it up.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Others {
    pub instances: u32,
    pub inflight: f64,
    pub rps: f64,
}

/// Where this instance stands.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Standing {
    pub identity: String,
    pub leader: bool,
    /// The holder as last read.
    pub holder: Option<String>,
    pub others: Others,
}

pub struct Election {
    api: Api<Lease>,
    name: String,
    member: String,
    identity: String,
    lease: Duration,
    next_at: Instant,
    /// The leader Lease's record as last seen, and when it was first seen so.
    observed: Option<(String, Instant)>,
    /// When this instance last renewed as leader.
    renewed: Option<Instant>,
    /// Other members: their record's version, and when it was first seen so.
    members: HashMap<String, (String, Instant)>,
    pub standing: Standing,
}

/// `s` within `max` characters: longer ones keep their start and end with a hash of the
/// whole (FNV-1a: stable across builds), so two long names still differ.
fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let hash = s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let keep = max.saturating_sub(17);
    format!("{}-{hash:016x}", s[..keep].trim_end_matches(['-', '.']))
}

/// `headroom-NAME-ID` must be a DNS-1123 name: the identity's other characters become '-'.
fn member_name(name: &str, identity: &str) -> String {
    let id: String = identity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    bounded(&format!("{name}-{}", id.trim_matches('-')), 253)
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Election {
    pub fn new(api: Api<Lease>, workload: &str, identity: String, lease: Duration) -> Election {
        // A label value (`lease-of`) is at most 63 characters.
        let name = bounded(&format!("headroom-{workload}"), 63);
        Election {
            api,
            member: member_name(&name, &identity),
            name,
            standing: Standing {
                identity: identity.clone(),
                ..Standing::default()
            },
            identity,
            lease,
            next_at: Instant::now(),
            observed: None,
            renewed: None,
            members: HashMap::new(),
        }
    }

    fn period(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(500))
    }

    /// Whether this instance may scale now: it holds the Lease and renewed it within two
    /// thirds of `lease` (client-go's renew deadline, 10 s of 15): a call started now, at
    /// most `timeout` (at most a third of `lease`, validation says), ends before anyone
    /// else may take the Lease over.
    pub fn leading(&self) -> bool {
        self.standing.leader
            && self
                .renewed
                .is_some_and(|r| r.elapsed() < self.lease * 2 / 3)
    }

    /// On the way out: this instance's own Lease deleted, and the leader's given up (no
    /// holder, as client-go's `ReleaseOnCancel`), so another takes over at once.
    pub async fn release(&mut self) {
        let _ = self
            .api
            .delete(&self.member, &kube::api::DeleteParams::default())
            .await;
        if !self.standing.leader {
            return;
        }
        self.standing.leader = false;
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() == Some(self.identity.as_str()) {
                spec.holder_identity = None;
                spec.lease_duration_seconds = Some(1);
                spec.renew_time = Some(now_micro());
                let _ = self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await;
                tracing::info!(lease = %self.name, "kubernetes: leadership given up");
            }
        }
    }

    /// Every `lease / 3`: reports this instance's load, takes or renews leadership, and as
    /// leader reads the others' load. Errors are returned in words (the caller logs them);
    /// a step that fails leaves the standing as it was, and leadership lapses by itself.
    pub async fn step(&mut self, inflight: f64, rps: f64) -> Result<(), String> {
        let now = Instant::now();
        if now < self.next_at {
            return Ok(());
        }
        self.next_at = now + self.period();
        let report = self.report(inflight, rps).await;
        let lead = self.contend().await;
        if !self.leading() {
            self.standing.leader = false;
        }
        if self.standing.leader {
            self.standing.others = self.others().await?;
        } else {
            self.standing.others = Others::default();
        }
        report.and(lead)
    }

    async fn report(&mut self, inflight: f64, rps: f64) -> Result<(), String> {
        let secs = i32::try_from(self.lease.as_secs().max(1)).unwrap_or(i32::MAX);
        let body = serde_json::json!({
            "metadata": {
                "labels": { LEASE_OF: self.name },
                "annotations": { INFLIGHT: format!("{inflight:.3}"), RPS: format!("{rps:.3}") },
            },
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": secs,
                "renewTime": now_micro(),
            },
        });
        match self
            .api
            .patch(&self.member, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                let lease: Lease =
                    serde_json::from_value(serde_json::json!({"metadata": {"name": self.member}}))
                        .map_err(|e| e.to_string())?;
                let mut lease = lease;
                json_patch(&mut lease, &body)?;
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("create Lease {}: {e}", self.member))
            }
            Err(e) => Err(format!("Lease {}: {e}", self.member)),
        }
    }

    /// client-go's tryAcquireOrRenew.
    async fn contend(&mut self) -> Result<(), String> {
        let now = Instant::now();
        let secs = i32::try_from(self.lease.as_secs().max(1)).unwrap_or(i32::MAX);
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| format!("Lease {}: {e}", self.name))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now_micro()),
                    renew_time: Some(now_micro()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.took(now);
                    Ok(())
                }
                // Someone else created it first: they lead.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(format!("create Lease {}: {e}", self.name)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        self.standing.holder = holder.clone();
        // The record as seen: any change (a renewal) restarts its clock.
        let record = serde_json::to_string(&spec).unwrap_or_default();
        match &self.observed {
            Some((r, _)) if *r == record => {}
            _ => self.observed = Some((record, now)),
        }
        let mine = holder.as_deref() == Some(self.identity.as_str());
        let held_for = spec
            .lease_duration_seconds
            .map_or(self.lease, |s| Duration::from_secs(s.max(1) as u64));
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|(_, since)| now.duration_since(*since) >= held_for);
        if !mine && holder.is_some() && !expired {
            self.standing.leader = false;
            return Ok(());
        }
        let mut next = spec;
        if !mine {
            next.holder_identity = Some(self.identity.clone());
            next.acquire_time = Some(now_micro());
            next.lease_transitions = Some(next.lease_transitions.unwrap_or(0) + 1);
        }
        next.renew_time = Some(now_micro());
        next.lease_duration_seconds = Some(secs);
        lease.spec = Some(next);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.took(now);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.standing.leader = false;
                Ok(())
            }
            Err(e) => Err(format!("Lease {}: {e}", self.name)),
        }
    }

    fn took(&mut self, now: Instant) {
        if !self.standing.leader {
            tracing::info!(lease = %self.name, identity = %self.identity, "kubernetes: this instance leads the scaling");
        }
        self.standing.leader = true;
        self.standing.holder = Some(self.identity.clone());
        self.renewed = Some(now);
    }

    /// The other members renewed within `lease`, added up.
    async fn others(&mut self) -> Result<Others, String> {
        let now = Instant::now();
        let list = self
            .api
            .list(&ListParams::default().labels(&format!("{LEASE_OF}={}", self.name)))
            .await
            .map_err(|e| format!("list Leases of {}: {e}", self.name))?;
        let mut out = Others::default();
        let mut seen = HashMap::new();
        for l in list.items {
            let Some(name) = l.metadata.name.clone() else {
                continue;
            };
            if name == self.member {
                continue;
            }
            let record = l.metadata.resource_version.clone().unwrap_or_default();
            let since = match self.members.get(&name) {
                Some((r, since)) if *r == record => *since,
                _ => now,
            };
            seen.insert(name.clone(), (record, since));
            let quiet = now.duration_since(since);
            if quiet >= self.lease {
                // An instance gone without a word (killed): its Lease is cleared away
                // after three leases unrenewed.
                if quiet >= self.lease * 3 {
                    let _ = self
                        .api
                        .delete(&name, &kube::api::DeleteParams::default())
                        .await;
                }
                continue;
            }
            let a: BTreeMap<String, String> = l.metadata.annotations.unwrap_or_default();
            let num = |k: &str| {
                a.get(k)
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .unwrap_or(0.0)
            };
            out.instances += 1;
            out.inflight += num(INFLIGHT);
            out.rps += num(RPS);
        }
        self.members = seen;
        Ok(out)
    }
}

/// Lays the merge-patch `body` (metadata and spec) over a fresh Lease.
fn json_patch(lease: &mut Lease, body: &serde_json::Value) -> Result<(), String> {
    let mut v = serde_json::to_value(&*lease).map_err(|e| e.to_string())?;
    for part in ["metadata", "spec"] {
        if let (Some(dst), Some(src)) = (
            v.get_mut(part).and_then(|d| d.as_object_mut()),
            body[part].as_object(),
        ) {
            for (k, val) in src {
                dst.insert(k.clone(), val.clone());
            }
        } else if !body[part].is_null() {
            v[part] = body[part].clone();
        }
    }
    *lease = serde_json::from_value(v).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_are_kubernetes_names() {
        assert_eq!(
            member_name("headroom-web", "Pod_Web-7f9:1234"),
            "headroom-web-pod-web-7f9-1234"
        );
        assert_eq!(member_name("headroom-web", "-x-"), "headroom-web-x");
        let long = format!("headroom-{}", "a".repeat(80));
        let b = bounded(&long, 63);
        assert_eq!(b.len(), 63);
        assert_ne!(b, bounded(&format!("headroom-{}b", "a".repeat(80)), 63));
        assert_eq!(bounded("headroom-web", 63), "headroom-web");
    }

    #[test]
    fn a_member_lease_is_laid_out_from_its_patch() {
        let mut lease: Lease =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "m"}})).unwrap();
        let body = serde_json::json!({
            "metadata": {"labels": {LEASE_OF: "headroom-web"}, "annotations": {INFLIGHT: "2.000"}},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
        });
        json_patch(&mut lease, &body).unwrap();
        assert_eq!(lease.metadata.name.as_deref(), Some("m"));
        assert_eq!(lease.metadata.labels.unwrap()[LEASE_OF], "headroom-web");
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
    }
}
