//! Counters of the notifier, read by the caller (and exported as metrics by headroom).

use super::Receiver;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the notifier did, since it started. Every read is one relaxed atomic load; the
/// counters only grow (except [`ReceiverStats::queued`], a gauge).
#[derive(Debug)]
pub struct NotifierStats {
    pub(crate) dropped_alerts: AtomicU64,
    pub(crate) receivers: Vec<ReceiverStats>,
}

impl NotifierStats {
    pub(crate) fn new(receivers: &[Receiver]) -> NotifierStats {
        NotifierStats {
            dropped_alerts: AtomicU64::new(0),
            receivers: receivers.iter().map(ReceiverStats::new).collect(),
        }
    }

    /// Alerts refused by [`super::NotifierHandle::send`]: queue full, notifier stopped, or
    /// an alert Alertmanager would refuse.
    pub fn dropped_alerts(&self) -> u64 {
        self.dropped_alerts.load(Ordering::Relaxed)
    }

    /// One entry per receiver, in the order they were given to [`super::Notifier::spawn`].
    pub fn receivers(&self) -> &[ReceiverStats] {
        &self.receivers
    }
}

/// One receiver's counters.
#[derive(Debug)]
pub struct ReceiverStats {
    kind: &'static str,
    url: String,
    pub(crate) sent: AtomicU64,
    pub(crate) failed_attempts: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) queued: AtomicU64,
}

impl ReceiverStats {
    fn new(receiver: &Receiver) -> ReceiverStats {
        ReceiverStats {
            kind: receiver.kind(),
            url: receiver.url().to_string(),
            sent: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            queued: AtomicU64::new(0),
        }
    }

    /// `"webhook"` or `"alertmanager"`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The receiver's URL as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Notifications delivered (answered 2xx).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Attempts that failed: no connection, timeout, or an answer other than 2xx.
    pub fn failed_attempts(&self) -> u64 {
        self.failed_attempts.load(Ordering::Relaxed)
    }

    /// Notifications given up: refused with a 4xx (other than 429), or pushed out of a
    /// full retry queue.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Notifications waiting for this receiver now, the one being tried included.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }
}
