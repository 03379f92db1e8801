//! One receiver's delivery: a bounded queue of notifications, tried in order, retried with
//! back-off, and a log line only when the receiver goes down or comes back.
//!
//! A queued notification that a newer one makes obsolete (the same webhook group, or any
//! earlier Alertmanager push, since every push carries all firing alerts) is merged into
//! the newer one: the newer alerts win, and the older one's resolved alerts are kept so
//! no resolution is lost. A long outage thus costs one queued notification per group,
//! not one per change.

use super::backoff::Backoff;
use super::dispatch::Outgoing;
use super::payload::{postable_alerts_json, webhook_json, WebhookContext};
use super::post::{DeliveryError, Endpoint};
use super::{Alert, Notification, NotifierStats, ReceiverStats};
use bytes::Bytes;
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// The notifications waiting for one receiver. The dispatcher pushes (never waiting: a
/// short lock), the delivery task pops.
pub(crate) struct Queue {
    items: Mutex<VecDeque<Outgoing>>,
    wake: Notify,
    closed: AtomicBool,
    capacity: usize,
    stats: Arc<NotifierStats>,
    index: usize,
}

impl Queue {
    /// An empty queue of at most `capacity` (at least 1) notifications, counting into
    /// receiver `index` of `stats`.
    pub(crate) fn new(capacity: usize, stats: Arc<NotifierStats>, index: usize) -> Queue {
        Queue {
            items: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            capacity: capacity.max(1),
            stats,
            index,
        }
    }

    fn stats(&self) -> &ReceiverStats {
        &self.stats.receivers[self.index]
    }

    fn items(&self) -> MutexGuard<'_, VecDeque<Outgoing>> {
        // A panic elsewhere while holding the lock leaves a valid queue: keep using it.
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item`, merged into the queued notification it supersedes if there is one;
    /// when the queue is full, the oldest waiting notification is dropped (and counted).
    pub(crate) fn push(&self, item: Outgoing) {
        {
            let mut items = self.items();
            match items.iter().position(|old| supersedes(&item, old)) {
                Some(at) => {
                    let merged = merge(&items[at], item);
                    items[at] = merged;
                }
                None => {
                    if items.len() >= self.capacity {
                        items.pop_front();
                        self.stats().dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    items.push_back(item);
                    self.stats().queued.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.wake.notify_one();
    }

    /// No more pushes: the delivery task ends once the queue is empty.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// The next notification, waiting for one; `None` once closed and empty.
    async fn next(&self) -> Option<Outgoing> {
        loop {
            if let Some(item) = self.items().pop_front() {
                return Some(item);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            self.wake.notified().await;
        }
    }

    /// If a queued notification supersedes `in_flight`, merges `in_flight` into it and says
    /// so: the in-flight one need not be tried again.
    fn absorb(&self, in_flight: &Outgoing) -> bool {
        let mut items = self.items();
        match items.iter().position(|newer| supersedes(newer, in_flight)) {
            Some(at) => {
                let newer = items[at].clone();
                items[at] = merge(in_flight, newer);
                true
            }
            None => false,
        }
    }

    /// The in-flight notification is done with (delivered, dropped or absorbed).
    fn done(&self) {
        self.stats().queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether `newer` makes `older` obsolete.
fn supersedes(newer: &Outgoing, older: &Outgoing) -> bool {
    match (newer, older) {
        (Outgoing::Webhook(n), Outgoing::Webhook(o)) => n.group_key == o.group_key,
        (Outgoing::Push(_), Outgoing::Push(_)) => true,
        _ => false,
    }
}

/// `newer`, plus the resolved alerts of `older` that `newer` does not mention.
fn merge(older: &Outgoing, newer: Outgoing) -> Outgoing {
    let carry = |old: &[Alert], new: &[Alert]| -> Vec<Alert> {
        let seen: BTreeSet<_> = new.iter().map(Alert::fingerprint).collect();
        let kept = old
            .iter()
            .filter(|a| !a.is_firing() && !seen.contains(&a.fingerprint()));
        new.iter().cloned().chain(kept.cloned()).collect()
    };
    match (older, newer) {
        (Outgoing::Webhook(o), Outgoing::Webhook(n)) => {
            let mut alerts = carry(&o.alerts, &n.alerts);
            alerts.sort_by_key(Alert::fingerprint);
            Outgoing::Webhook(Arc::new(Notification {
                alerts,
                ..(*n).clone()
            }))
        }
        (Outgoing::Push(o), Outgoing::Push(n)) => Outgoing::Push(Arc::new(carry(o, &n))),
        (_, newer) => newer,
    }
}

/// How a receiver wants its notifications written.
#[derive(Clone, Debug)]
pub(crate) enum Format {
    /// Alertmanager's webhook message, with these `receiver` and `externalURL` fields.
    Webhook {
        receiver: String,
        external_url: String,
    },
    /// The postable alerts of `POST /api/v2/alerts`.
    Alertmanager,
}

impl Format {
    fn render(&self, item: &Outgoing) -> Bytes {
        let body = match (self, item) {
            (
                Format::Webhook {
                    receiver,
                    external_url,
                },
                Outgoing::Webhook(n),
            ) => webhook_json(
                n,
                &WebhookContext {
                    receiver,
                    external_url,
                },
            ),
            (Format::Alertmanager, Outgoing::Push(alerts)) => postable_alerts_json(alerts),
            // The dispatcher routes each kind to its receivers only.
            _ => Vec::new(),
        };
        Bytes::from(body)
    }
}

/// A change of a receiver's health worth one log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    WentDown,
    CameBack { failed_attempts: u64 },
}

/// Whether a receiver is failing, so it is logged once per change, not per attempt.
#[derive(Debug, Default)]
pub(crate) struct Health {
    failing_since: Option<u64>,
    failed_attempts: u64,
}

impl Health {
    pub(crate) fn failed(&mut self) -> Option<Transition> {
        self.failed_attempts += 1;
        match self.failing_since {
            Some(_) => None,
            None => {
                self.failing_since = Some(self.failed_attempts);
                Some(Transition::WentDown)
            }
        }
    }

    pub(crate) fn delivered(&mut self) -> Option<Transition> {
        let since = self.failing_since.take()?;
        Some(Transition::CameBack {
            failed_attempts: self.failed_attempts + 1 - since,
        })
    }
}

/// Delivers the queue's notifications to `endpoint` until the queue is closed and empty.
/// `random` draws the jitter of each back-off (a seeded generator in tests).
pub(crate) async fn run<E: Endpoint>(
    endpoint: E,
    queue: Arc<Queue>,
    format: Format,
    backoff: Backoff,
    mut random: fastrand::Rng,
) {
    let mut health = Health::default();
    let name = || {
        let s = queue.stats();
        format!("{} {}", s.kind(), s.url())
    };
    while let Some(item) = queue.next().await {
        let mut failures = 0;
        loop {
            match endpoint.post(format.render(&item)).await {
                Ok(()) => {
                    queue.stats().sent.fetch_add(1, Ordering::Relaxed);
                    if let Some(Transition::CameBack { failed_attempts }) = health.delivered() {
                        tracing::info!(
                            receiver = %name(),
                            failed_attempts,
                            "alert receiver is delivering again"
                        );
                    }
                    break;
                }
                Err(e) => {
                    queue
                        .stats()
                        .failed_attempts
                        .fetch_add(1, Ordering::Relaxed);
                    log_failure(health.failed(), &name(), &e);
                    if !e.is_retryable() {
                        queue.stats().dropped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    failures += 1;
                    tokio::time::sleep(backoff.delay(failures, random.f64())).await;
                    if queue.absorb(&item) {
                        break;
                    }
                }
            }
        }
        queue.done();
    }
}

fn log_failure(transition: Option<Transition>, receiver: &str, e: &DeliveryError) {
    let outcome = if e.is_retryable() {
        "retrying with back-off"
    } else {
        "notification dropped"
    };
    match transition {
        Some(_) => tracing::warn!(%receiver, error = %e, "alert receiver failing; {outcome}"),
        None => tracing::debug!(%receiver, error = %e, "alert receiver still failing; {outcome}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Receiver;
    use http::StatusCode;
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    use tokio::time::Instant;

    const S: Duration = Duration::from_secs(1);

    fn wall(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_188_414 + secs)
    }

    fn group(route: &str, alerts: Vec<Alert>) -> Outgoing {
        Outgoing::Webhook(Arc::new(Notification {
            group_key: format!("{{}}:{{route=\"{route}\"}}"),
            group_labels: BTreeMap::from([("route".into(), route.into())]),
            alerts,
        }))
    }

    fn burn(route: &str, replica: &str) -> Alert {
        Alert::firing("ErrorBudgetBurn", wall(0))
            .label("route", route)
            .label("replica", replica)
    }

    fn queue(capacity: usize) -> Arc<Queue> {
        let receivers = [Receiver::webhook("http://127.0.0.1:9/").unwrap()];
        Arc::new(Queue::new(
            capacity,
            Arc::new(NotifierStats::new(&receivers)),
            0,
        ))
    }

    /// Answers each attempt from a script (then 200), noting when it was tried.
    struct Scripted {
        answers: Mutex<VecDeque<Result<(), DeliveryError>>>,
        tried: Arc<Mutex<Vec<(Instant, Bytes)>>>,
    }

    impl Endpoint for Scripted {
        async fn post(&self, body: Bytes) -> Result<(), DeliveryError> {
            self.tried.lock().unwrap().push((Instant::now(), body));
            self.answers.lock().unwrap().pop_front().unwrap_or(Ok(()))
        }
    }

    fn answered(code: u16) -> Result<(), DeliveryError> {
        Err(DeliveryError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            body: String::new(),
        })
    }

    type Tried = Arc<Mutex<Vec<(Instant, Bytes)>>>;

    fn start(q: &Arc<Queue>, answers: Vec<Result<(), DeliveryError>>) -> Tried {
        let tried = Arc::new(Mutex::new(Vec::new()));
        let endpoint = Scripted {
            answers: Mutex::new(answers.into()),
            tried: tried.clone(),
        };
        let no_jitter = Backoff {
            jitter: 0.0,
            ..Backoff::default()
        };
        tokio::spawn(run(
            endpoint,
            q.clone(),
            Format::Alertmanager,
            no_jitter,
            fastrand::Rng::with_seed(7),
        ));
        tried
    }

    /// Lets the delivery task run until it waits on the (paused) clock or the queue.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    fn push(alerts: Vec<Alert>) -> Outgoing {
        Outgoing::Push(Arc::new(alerts))
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_receiver_is_retried_after_1_2_and_4_seconds() {
        let q = queue(8);
        let tried = start(&q, vec![answered(503), answered(500), answered(429)]);
        let t0 = Instant::now();
        q.push(push(vec![burn("api", "a")]));
        tokio::time::sleep(60 * S).await;
        let at: Vec<Duration> = tried.lock().unwrap().iter().map(|(t, _)| *t - t0).collect();
        assert_eq!(at, [Duration::ZERO, S, 3 * S, 7 * S]);
        let s = q.stats();
        assert_eq!((s.sent(), s.failed_attempts(), s.dropped()), (1, 3, 0));
        assert_eq!(s.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_error_drops_the_notification_without_retrying() {
        let q = queue(8);
        let tried = start(&q, vec![answered(400)]);
        q.push(push(vec![burn("api", "a")]));
        settle().await;
        q.push(push(vec![burn("api", "b")]));
        tokio::time::sleep(60 * S).await;
        assert_eq!(tried.lock().unwrap().len(), 2, "one attempt each");
        let s = q.stats();
        assert_eq!((s.sent(), s.failed_attempts(), s.dropped()), (1, 1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_notification_superseded_during_back_off_is_not_retried() {
        let q = queue(8);
        let tried = start(&q, vec![answered(503)]);
        let gone = burn("api", "a").resolved(wall(5));
        q.push(push(vec![gone.clone(), burn("api", "b")]));
        settle().await;
        q.push(push(vec![burn("api", "b"), burn("api", "c")]));
        tokio::time::sleep(60 * S).await;
        let tried = tried.lock().unwrap();
        assert_eq!(tried.len(), 2, "the failed push is not tried again");
        let last: Vec<serde_json::Value> = serde_json::from_slice(&tried[1].1).unwrap();
        assert_eq!(
            last.len(),
            3,
            "the newer push keeps the older one's resolution"
        );
        assert!(last[2]["endsAt"].is_string());
        assert_eq!(q.stats().sent(), 1);
    }

    #[test]
    fn a_newer_notification_of_a_group_replaces_the_queued_one() {
        let q = queue(8);
        q.push(group("api", vec![burn("api", "a").resolved(wall(5))]));
        q.push(group("cart", vec![burn("cart", "a")]));
        q.push(group("api", vec![burn("api", "b")]));
        let items = q.items();
        assert_eq!(items.len(), 2);
        let Outgoing::Webhook(api) = &items[0] else {
            panic!("not a webhook notification")
        };
        let replicas: Vec<&str> = api
            .alerts
            .iter()
            .map(|a| a.labels["replica"].as_str())
            .collect();
        let mut expected = [burn("api", "b"), burn("api", "a")];
        expected.sort_by_key(Alert::fingerprint);
        let expected: Vec<&str> = expected
            .iter()
            .map(|a| a.labels["replica"].as_str())
            .collect();
        assert_eq!(replicas, expected);
        assert_eq!(q.stats().queued(), 2);
    }

    #[test]
    fn a_full_queue_drops_its_oldest_notification_and_counts_it() {
        let q = queue(2);
        for route in ["a", "b", "c"] {
            q.push(group(route, vec![burn(route, "x")]));
        }
        let keys: Vec<String> = q
            .items()
            .iter()
            .map(|o| match o {
                Outgoing::Webhook(n) => n.group_key.clone(),
                Outgoing::Push(_) => String::new(),
            })
            .collect();
        assert_eq!(keys, [r#"{}:{route="b"}"#, r#"{}:{route="c"}"#]);
        assert_eq!(q.stats().dropped(), 1);
    }

    #[test]
    fn a_receiver_is_reported_down_once_and_back_once() {
        let mut h = Health::default();
        assert_eq!(
            h.delivered(),
            None,
            "healthy and delivering: nothing to say"
        );
        assert_eq!(h.failed(), Some(Transition::WentDown));
        assert_eq!(h.failed(), None);
        assert_eq!(h.failed(), None);
        assert_eq!(
            h.delivered(),
            Some(Transition::CameBack { failed_attempts: 3 })
        );
        assert_eq!(h.delivered(), None);
        assert_eq!(h.failed(), Some(Transition::WentDown));
    }
}
