//! The notifier's tasks and the caller's handle to them: `send` never waits.

use super::delivery::{self, Format, Queue};
use super::dispatch::{Dispatcher, Outgoing, Timing};
use super::post::HttpEndpoint;
use super::{Alert, Backoff, NotifierStats, Receiver};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How the notifier groups, waits, repeats and retries. Every field has Alertmanager's
/// default where Alertmanager has one.
#[derive(Clone, Debug)]
pub struct NotifierOptions {
    /// Labels that split alerts into groups, one webhook notification per group.
    /// Default `["alertname", "route", "service"]`.
    pub group_by: Vec<String>,
    /// How long a new group waits for more alerts before its first notification.
    /// Default 10 s.
    pub group_wait: Duration,
    /// How often a notified group is looked at again for changes. Default 1 min.
    pub group_interval: Duration,
    /// How long before a still-firing group is notified to webhooks again. Default 4 h.
    pub repeat_interval: Duration,
    /// How often firing alerts are pushed to Alertmanager again. Default 1 min: it must be
    /// well under Alertmanager's `resolve_timeout` (default 5 min), after which
    /// Alertmanager resolves an alert it has not heard of.
    pub resend_interval: Duration,
    /// The deadline of one delivery attempt: connect, send, answer. Default 10 s.
    pub request_timeout: Duration,
    /// The waits between attempts of a failing delivery. Default 1 s doubling to 5 min.
    pub backoff: Backoff,
    /// Batches of alerts waiting for the dispatcher; when full, `send` drops. Default
    /// 1024 (the dispatcher takes a batch in microseconds, so this is only reached if its
    /// task is starved).
    pub queue_capacity: usize,
    /// Notifications waiting per receiver (the retry queue); when full, the oldest is
    /// dropped. Default 256 (one per group is kept while a receiver is down).
    pub retry_queue: usize,
    /// The `receiver` field of webhook messages. Default `"headroom"`.
    pub receiver_name: String,
    /// The `externalURL` field of webhook messages: where headroom is reached. Default
    /// empty.
    pub external_url: String,
}

impl Default for NotifierOptions {
    fn default() -> NotifierOptions {
        NotifierOptions {
            group_by: vec!["alertname".into(), "route".into(), "service".into()],
            group_wait: Duration::from_secs(10),
            group_interval: Duration::from_secs(60),
            repeat_interval: Duration::from_secs(4 * 3600),
            resend_interval: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            queue_capacity: 1024,
            retry_queue: 256,
            receiver_name: "headroom".into(),
            external_url: String::new(),
        }
    }
}

/// Starts notifiers; see [`Notifier::spawn`].
#[derive(Debug)]
pub struct Notifier;

impl Notifier {
    /// Starts the dispatching task and one delivery task per receiver on the current tokio
    /// runtime, and returns the handle to feed them. The tasks end when every handle is
    /// dropped and the receivers' queues are drained (a failing receiver is retried until
    /// the runtime ends).
    ///
    /// Cost: for `https://` receivers, the system's root certificates are read here
    /// (blocking file reads, once). Panics, as `tokio::spawn` does, if called outside a
    /// tokio runtime; nothing else panics.
    pub fn spawn(receivers: Vec<Receiver>, options: NotifierOptions) -> NotifierHandle {
        let stats = Arc::new(NotifierStats::new(&receivers));
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let mut webhooks = Vec::new();
        let mut alertmanagers = Vec::new();
        for (index, receiver) in receivers.iter().enumerate() {
            let queue = Arc::new(Queue::new(options.retry_queue, stats.clone(), index));
            let format = match receiver {
                Receiver::Webhook { .. } => {
                    webhooks.push(queue.clone());
                    Format::Webhook {
                        receiver: options.receiver_name.clone(),
                        external_url: options.external_url.clone(),
                    }
                }
                Receiver::Alertmanager { .. } => {
                    alertmanagers.push(queue.clone());
                    Format::Alertmanager
                }
            };
            let endpoint = HttpEndpoint::new(receiver.post_url(), options.request_timeout);
            tokio::spawn(delivery::run(
                endpoint,
                queue,
                format,
                options.backoff,
                fastrand::Rng::new(),
            ));
        }
        let timing = Timing {
            group_by: options.group_by,
            group_wait: options.group_wait,
            group_interval: options.group_interval,
            repeat_interval: options.repeat_interval,
            resend_interval: options.resend_interval,
        };
        let dispatcher = Dispatcher::new(timing, !webhooks.is_empty(), !alertmanagers.is_empty());
        tokio::spawn(dispatch(rx, dispatcher, webhooks, alertmanagers));
        NotifierHandle { tx, stats }
    }
}

/// Feeds alerts to a running notifier; cheap to clone, one per producer.
#[derive(Clone, Debug)]
pub struct NotifierHandle {
    tx: mpsc::Sender<Vec<Alert>>,
    stats: Arc<NotifierStats>,
}

impl NotifierHandle {
    /// Hands over alerts (new, updated or resolved) without waiting: one `try_send` on a
    /// bounded channel. Alerts Alertmanager would refuse (no `alertname`, a bad label
    /// name) are dropped, the others kept; if the channel is full or the notifier has
    /// stopped, the whole batch is dropped. Every dropped alert is counted in
    /// [`NotifierStats::dropped_alerts`] and reported in the error.
    pub fn send(&self, alerts: Vec<Alert>) -> Result<(), AlertsDropped> {
        let mut refused: Option<AlertsDropped> = None;
        let alerts: Vec<Alert> = alerts
            .into_iter()
            .filter(|a| match a.problem() {
                None => true,
                Some(reason) => {
                    refused
                        .get_or_insert(AlertsDropped { count: 0, reason })
                        .count += 1;
                    false
                }
            })
            .collect();
        if !alerts.is_empty() {
            let count = alerts.len();
            let reason = match self.tx.try_send(alerts) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(_)) => Some(DropReason::QueueFull),
                Err(mpsc::error::TrySendError::Closed(_)) => Some(DropReason::Stopped),
            };
            if let Some(reason) = reason {
                let before = refused.map_or(0, |r| r.count);
                refused = Some(AlertsDropped {
                    count: before + count,
                    reason,
                });
            }
        }
        match refused {
            None => Ok(()),
            Some(dropped) => {
                self.stats
                    .dropped_alerts
                    .fetch_add(dropped.count as u64, Ordering::Relaxed);
                Err(dropped)
            }
        }
    }

    /// The notifier's counters, live.
    pub fn stats(&self) -> Arc<NotifierStats> {
        self.stats.clone()
    }
}

/// Alerts [`NotifierHandle::send`] did not take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertsDropped {
    /// How many alerts of the batch were dropped.
    pub count: usize,
    /// Why (the last reason, if there were several).
    pub reason: DropReason,
}

/// Why alerts were dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The dispatcher's queue is full.
    QueueFull,
    /// The notifier's tasks have ended (their runtime shut down).
    Stopped,
    /// An alert had no `alertname` label.
    NoAlertname,
    /// An alert had this label name, outside `[a-zA-Z_][a-zA-Z0-9_]*`.
    BadLabelName(String),
}

impl fmt::Display for AlertsDropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.count;
        match &self.reason {
            DropReason::QueueFull => {
                write!(f, "{n} alert(s) dropped: the notifier's queue is full")
            }
            DropReason::Stopped => write!(f, "{n} alert(s) dropped: the notifier has stopped"),
            DropReason::NoAlertname => {
                write!(f, "{n} alert(s) dropped: no \"alertname\" label")
            }
            DropReason::BadLabelName(name) => write!(
                f,
                "{n} alert(s) dropped: label name {name:?} is not [a-zA-Z_][a-zA-Z0-9_]*"
            ),
        }
    }
}

impl std::error::Error for AlertsDropped {}

/// The dispatching task: alerts in, notifications out to the receivers' queues, on time.
async fn dispatch(
    mut rx: mpsc::Receiver<Vec<Alert>>,
    mut dispatcher: Dispatcher,
    webhooks: Vec<Arc<Queue>>,
    alertmanagers: Vec<Arc<Queue>>,
) {
    loop {
        let deadline = dispatcher.next_deadline();
        let wait = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            batch = rx.recv() => match batch {
                Some(alerts) => {
                    let now = Instant::now();
                    dispatcher.receive(alerts, now);
                    while let Ok(more) = rx.try_recv() {
                        dispatcher.receive(more, now);
                    }
                }
                None => break,
            },
            () = wait => {}
        }
        for out in dispatcher.due(Instant::now()) {
            let queues = match out {
                Outgoing::Webhook(_) => &webhooks,
                Outgoing::Push(_) => &alertmanagers,
            };
            for q in queues {
                q.push(out.clone());
            }
        }
    }
    for q in webhooks.iter().chain(&alertmanagers) {
        q.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn burn() -> Alert {
        Alert::firing("ErrorBudgetBurn", UNIX_EPOCH + Duration::from_secs(1)).label("route", "api")
    }

    #[tokio::test]
    async fn send_drops_alerts_alertmanager_would_refuse_and_keeps_the_rest() {
        let handle = Notifier::spawn(vec![], NotifierOptions::default());
        let mut nameless = burn();
        nameless.labels.remove("alertname");
        let err = handle.send(vec![nameless, burn()]).unwrap_err();
        assert_eq!(err.count, 1);
        assert_eq!(err.reason, DropReason::NoAlertname);
        assert_eq!(
            err.to_string(),
            "1 alert(s) dropped: no \"alertname\" label"
        );
        assert_eq!(handle.stats().dropped_alerts(), 1);
        assert_eq!(handle.send(vec![burn()]), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_dispatching_task_hands_a_new_group_over_after_group_wait() {
        let receivers = [Receiver::webhook("http://127.0.0.1:9/").unwrap()];
        let stats = Arc::new(NotifierStats::new(&receivers));
        let queue = Arc::new(Queue::new(8, stats.clone(), 0));
        let timing = Timing {
            group_by: vec!["alertname".into()],
            group_wait: Duration::from_secs(10),
            group_interval: Duration::from_secs(60),
            repeat_interval: Duration::from_secs(3600),
            resend_interval: Duration::from_secs(60),
        };
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(dispatch(
            rx,
            Dispatcher::new(timing, true, false),
            vec![queue.clone()],
            vec![],
        ));
        tx.send(vec![burn()]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(9_999)).await;
        assert_eq!(stats.receivers()[0].queued(), 0, "still in group_wait");
        tokio::time::sleep(Duration::from_millis(1)).await;
        tokio::task::yield_now().await;
        assert_eq!(stats.receivers()[0].queued(), 1);
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn send_never_waits_and_counts_what_a_full_queue_drops() {
        let options = NotifierOptions {
            queue_capacity: 2,
            ..NotifierOptions::default()
        };
        // The dispatcher task does not run between these sends (one thread, no await).
        let handle = Notifier::spawn(vec![], options);
        assert_eq!(handle.send(vec![burn()]), Ok(()));
        assert_eq!(handle.send(vec![burn()]), Ok(()));
        let err = handle.send(vec![burn(), burn()]).unwrap_err();
        assert_eq!((err.count, err.reason), (2, DropReason::QueueFull));
        assert_eq!(handle.stats().dropped_alerts(), 2);
    }
}
