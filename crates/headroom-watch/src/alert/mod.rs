//! Notifications of alerts to Alertmanager and to webhooks, off the request path.
//!
//! The caller hands [`Alert`]s to a [`NotifierHandle`] (never blocking); a background task
//! groups them by labels, waits and deduplicates as Alertmanager's own dispatcher does, and
//! one delivery task per [`Receiver`] posts the notifications, retrying with back-off.
//!
//! ```text
//! send ──► dispatch (group, wait, dedup) ──► per-receiver queue ──► POST, retry, back off
//! ```
//!
//! - A `Webhook` receiver gets exactly the JSON Alertmanager posts to its `webhook_configs`
//!   (version "4"), one notification per group.
//! - An `Alertmanager` receiver gets the postable alerts of `POST /api/v2/alerts` on every
//!   change, and every firing alert again each `resend_interval`, as Prometheus does:
//!   Alertmanager resolves an alert it has not heard of for its `resolve_timeout`.

mod backoff;
mod delivery;
mod dispatch;
mod notifier;
mod payload;
mod post;
mod receiver;
mod rfc3339;
mod stats;

pub use backoff::Backoff;
pub use notifier::{AlertsDropped, DropReason, Notifier, NotifierHandle, NotifierOptions};
pub use receiver::{Receiver, ReceiverError, ReceiverUrl};
pub use stats::{NotifierStats, ReceiverStats};

pub(crate) use dispatch::Notification;
pub(crate) use post::{Endpoint, HttpEndpoint};

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

/// The label every alert must carry: its name, as Alertmanager requires.
pub const ALERTNAME: &str = "alertname";

/// One alert, firing or resolved, as Alertmanager models it.
///
/// Its identity is its label set ([`Alert::fingerprint`]): sending an alert with the same
/// labels again updates it (annotations, times), sending it with `ends_at: Some(..)`
/// resolves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// What the alert is about; must include [`ALERTNAME`]. Names must match
    /// `[a-zA-Z_][a-zA-Z0-9_]*` (Alertmanager rejects a whole batch otherwise).
    pub labels: BTreeMap<String, String>,
    /// What a human reads: by convention "summary", "description", "dashboard".
    pub annotations: BTreeMap<String, String>,
    /// When the condition began.
    pub starts_at: SystemTime,
    /// `None` while firing; `Some(when it ended)` once resolved.
    pub ends_at: Option<SystemTime>,
    /// A link to the dashboard that shows the condition; may be empty.
    pub generator_url: String,
}

impl Alert {
    /// A firing alert named `alertname`, with no other labels or annotations yet.
    pub fn firing(alertname: &str, starts_at: SystemTime) -> Alert {
        Alert {
            labels: BTreeMap::from([(ALERTNAME.to_string(), alertname.to_string())]),
            annotations: BTreeMap::new(),
            starts_at,
            ends_at: None,
            generator_url: String::new(),
        }
    }

    /// Adds (or replaces) a label.
    pub fn label(mut self, name: &str, value: &str) -> Alert {
        self.labels.insert(name.to_string(), value.to_string());
        self
    }

    /// Adds (or replaces) an annotation.
    pub fn annotation(mut self, name: &str, value: &str) -> Alert {
        self.annotations.insert(name.to_string(), value.to_string());
        self
    }

    /// The same alert, resolved at `ends_at`.
    pub fn resolved(mut self, ends_at: SystemTime) -> Alert {
        self.ends_at = Some(ends_at);
        self
    }

    /// Whether the alert is still firing (`ends_at` is `None`).
    pub fn is_firing(&self) -> bool {
        self.ends_at.is_none()
    }

    /// The alert's identity, computed as Alertmanager computes it (see [`Fingerprint`]).
    /// Cost: one pass over the labels, no allocation.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.labels)
    }

    /// Why Alertmanager would refuse this alert, if it would: no `alertname`, or a label
    /// name outside `[a-zA-Z_][a-zA-Z0-9_]*`.
    pub fn problem(&self) -> Option<DropReason> {
        match self.labels.get(ALERTNAME) {
            Some(name) if !name.is_empty() => {}
            _ => return Some(DropReason::NoAlertname),
        }
        self.labels
            .keys()
            .find(|name| !is_label_name(name))
            .map(|name| DropReason::BadLabelName(name.clone()))
    }
}

/// Prometheus' label-name rule, `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// An alert's identity: FNV-1a (64 bits) over its labels sorted by name, each name and
/// value followed by the byte 0xff — exactly Prometheus' `LabelSet.Fingerprint()`, so the
/// value equals the `fingerprint` Alertmanager shows for the same alert. Displayed as 16
/// lower-case hex digits, as Alertmanager writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    /// The fingerprint of a label set (a `BTreeMap` is already sorted by name, bytewise,
    /// as Go sorts strings).
    pub fn of(labels: &BTreeMap<String, String>) -> Fingerprint {
        const OFFSET: u64 = 14_695_981_039_346_656_037;
        const PRIME: u64 = 1_099_511_628_211;
        const SEPARATOR: u8 = 0xff;
        let mut hash = OFFSET;
        let mut add = |bytes: &[u8]| {
            for &b in bytes {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(PRIME);
            }
        };
        for (name, value) in labels {
            add(name.as_bytes());
            add(&[SEPARATOR]);
            add(value.as_bytes());
            add(&[SEPARATOR]);
        }
        Fingerprint(hash)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn fingerprint_of_no_labels_is_the_fnv_offset_basis() {
        assert_eq!(
            Fingerprint::of(&BTreeMap::new()).to_string(),
            "cbf29ce484222325"
        );
    }

    #[test]
    fn fingerprint_depends_on_labels_only_and_is_stable() {
        let a = Alert::firing("HighErrorRate", at(1))
            .label("route", "api")
            .annotation("summary", "one");
        let b = Alert::firing("HighErrorRate", at(99))
            .label("route", "api")
            .annotation("summary", "two")
            .resolved(at(100));
        assert_eq!(a.fingerprint(), b.fingerprint());
        // Pinned: a change of hash or of label order would change what Alertmanager shows.
        assert_eq!(a.fingerprint().to_string(), "24d1276daab9d769");
    }

    #[test]
    fn fingerprint_separates_name_from_value() {
        let ab = BTreeMap::from([("a".to_string(), "b".to_string())]);
        let a_b = BTreeMap::from([("ab".to_string(), String::new())]);
        assert_ne!(Fingerprint::of(&ab), Fingerprint::of(&a_b));
    }

    #[test]
    fn an_alert_without_alertname_or_with_a_bad_label_name_is_a_problem() {
        let mut no_name = Alert::firing("x", at(1));
        no_name.labels.clear();
        assert_eq!(no_name.problem(), Some(DropReason::NoAlertname));
        let bad = Alert::firing("x", at(1)).label("route-name", "api");
        assert_eq!(
            bad.problem(),
            Some(DropReason::BadLabelName("route-name".into()))
        );
        assert_eq!(Alert::firing("x", at(1)).label("_r2", "a").problem(), None);
    }
}
