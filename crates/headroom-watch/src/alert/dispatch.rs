//! What to notify and when: grouping, waiting and deduplication, with no I/O. Time is an
//! argument, so the whole schedule is a function of the alerts received and the clock.
//!
//! For webhooks this is Alertmanager's aggregation group: a new group waits `group_wait`,
//! then is looked at every `group_interval`; it is notified when an alert fires that was
//! not notified as firing, when a notified alert resolves, or when `repeat_interval` has
//! passed since its last notification. A notification carries the whole group (firing
//! alerts and those just resolved); resolved alerts are forgotten once notified.
//!
//! For Alertmanager receivers, grouping is Alertmanager's job: every change is pushed at
//! once, and every push carries all firing alerts, repeated each `resend_interval`.

use super::{Alert, Fingerprint};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One group's notification to webhooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Notification {
    /// Alertmanager's group key: `{}:{alertname="X", route="y"}`.
    pub group_key: String,
    /// The `group_by` labels the group's alerts share.
    pub group_labels: BTreeMap<String, String>,
    /// Every alert of the group, firing or just resolved, ordered by fingerprint.
    pub alerts: Vec<Alert>,
}

/// What the dispatcher hands to the receivers of one kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// To every webhook receiver.
    Webhook(Arc<Notification>),
    /// To every Alertmanager receiver: the body of one `POST /api/v2/alerts`.
    Push(Arc<Vec<Alert>>),
}

/// The dispatcher's clock settings (see [`super::NotifierOptions`] for their defaults).
#[derive(Clone, Debug)]
pub(crate) struct Timing {
    pub group_by: Vec<String>,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    pub resend_interval: Duration,
}

/// How far an alert of a group has been told to webhooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Told {
    Nothing,
    Firing,
}

struct Tracked {
    alert: Alert,
    told: Told,
}

struct Group {
    labels: BTreeMap<String, String>,
    alerts: BTreeMap<Fingerprint, Tracked>,
    next_look: Instant,
    last_notified: Option<Instant>,
}

/// The Alertmanager side: the firing set, and what resolved since the last push.
#[derive(Default)]
struct PushState {
    firing: BTreeMap<Fingerprint, Alert>,
    resolved: BTreeMap<Fingerprint, Alert>,
    changed_at: Option<Instant>,
    next_resend: Option<Instant>,
}

/// The grouping and dedup state machine; see the module documentation.
pub(crate) struct Dispatcher {
    timing: Timing,
    groups: BTreeMap<String, Group>,
    webhooks: bool,
    push: Option<PushState>,
}

impl Dispatcher {
    /// A dispatcher feeding webhooks if `webhooks`, Alertmanagers if `alertmanagers`
    /// (it keeps no state for a kind nobody receives).
    pub(crate) fn new(timing: Timing, webhooks: bool, alertmanagers: bool) -> Dispatcher {
        Dispatcher {
            timing,
            groups: BTreeMap::new(),
            webhooks,
            push: alertmanagers.then(PushState::default),
        }
    }

    /// Takes in alerts (new, updated or resolved) received at `now`.
    pub(crate) fn receive(&mut self, alerts: Vec<Alert>, now: Instant) {
        for alert in alerts {
            let fp = alert.fingerprint();
            if let Some(push) = &mut self.push {
                push.receive(fp, &alert, now);
            }
            if self.webhooks {
                self.group(fp, alert, now);
            }
        }
    }

    fn group(&mut self, fp: Fingerprint, alert: Alert, now: Instant) {
        let labels: BTreeMap<String, String> = self
            .timing
            .group_by
            .iter()
            .filter_map(|name| Some((name.clone(), alert.labels.get(name)?.clone())))
            .collect();
        let key = group_key(&labels);
        let group = match self.groups.get_mut(&key) {
            Some(group) => group,
            // A resolved alert of no group was never told: there is nothing to resolve.
            None if !alert.is_firing() => return,
            None => self.groups.entry(key).or_insert(Group {
                labels,
                alerts: BTreeMap::new(),
                next_look: now + self.timing.group_wait,
                last_notified: None,
            }),
        };
        match group.alerts.get_mut(&fp) {
            Some(tracked) => tracked.alert = alert,
            None if alert.is_firing() => {
                group.alerts.insert(
                    fp,
                    Tracked {
                        alert,
                        told: Told::Nothing,
                    },
                );
            }
            None => {}
        }
    }

    /// When [`Dispatcher::due`] next has something to say, if ever.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let groups = self.groups.values().map(|g| g.next_look);
        let push = self.push.as_ref().and_then(PushState::next_deadline);
        groups.chain(push).min()
    }

    /// The notifications due at `now`, in group-key order, Alertmanager's push last.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let timing = &self.timing;
        self.groups.retain(|key, group| {
            if group.next_look > now {
                return true;
            }
            if let Some(n) = group.look(key, now, timing.repeat_interval) {
                out.push(Outgoing::Webhook(Arc::new(n)));
            }
            group.next_look = now + timing.group_interval;
            !group.alerts.is_empty()
        });
        if let Some(push) = &mut self.push {
            if let Some(alerts) = push.due(now, timing.resend_interval) {
                out.push(Outgoing::Push(Arc::new(alerts)));
            }
        }
        out
    }
}

impl Group {
    /// The group's notification at `now`, if one is needed; updates what was told.
    fn look(&mut self, key: &str, now: Instant, repeat: Duration) -> Option<Notification> {
        // Resolved before anyone heard it fire: Alertmanager does not tell those either.
        self.alerts
            .retain(|_, t| t.alert.is_firing() || t.told == Told::Firing);
        let news = self.alerts.values().any(|t| match t.alert.is_firing() {
            true => t.told == Told::Nothing,
            false => true,
        });
        let firing = self.alerts.values().any(|t| t.alert.is_firing());
        let repeat_due = self.last_notified.is_some_and(|last| now >= last + repeat);
        let needed = news || (firing && repeat_due);
        if !needed {
            return None;
        }
        let alerts = self.alerts.values().map(|t| t.alert.clone()).collect();
        self.alerts.retain(|_, t| t.alert.is_firing());
        for t in self.alerts.values_mut() {
            t.told = Told::Firing;
        }
        self.last_notified = Some(now);
        Some(Notification {
            group_key: key.to_string(),
            group_labels: self.labels.clone(),
            alerts,
        })
    }
}

impl PushState {
    fn receive(&mut self, fp: Fingerprint, alert: &Alert, now: Instant) {
        let changed = if alert.is_firing() {
            self.resolved.remove(&fp);
            self.firing.insert(fp, alert.clone()).as_ref() != Some(alert)
        } else {
            // Resolving an alert Alertmanager never heard of would tell it nothing.
            let was_firing = self.firing.remove(&fp).is_some();
            if was_firing {
                self.resolved.insert(fp, alert.clone());
            }
            was_firing
        };
        if changed && self.changed_at.is_none() {
            self.changed_at = Some(now);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        match self.changed_at {
            Some(at) => Some(at),
            None if self.firing.is_empty() => None,
            None => self.next_resend,
        }
    }

    fn due(&mut self, now: Instant, resend: Duration) -> Option<Vec<Alert>> {
        let resend_due = !self.firing.is_empty() && self.next_resend.is_some_and(|t| now >= t);
        if self.changed_at.is_none() && !resend_due {
            return None;
        }
        let alerts: Vec<Alert> = self
            .firing
            .values()
            .chain(self.resolved.values())
            .cloned()
            .collect();
        self.resolved.clear();
        self.changed_at = None;
        self.next_resend = Some(now + resend);
        Some(alerts)
    }
}

/// Alertmanager's group key for the root route: `{}:` and the group labels as Prometheus
/// prints a label set, `{alertname="X", route="y"}`.
fn group_key(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(name, value)| {
            let quoted = serde_json::to_string(value).unwrap_or_default();
            format!("{name}={quoted}")
        })
        .collect();
    format!("{{}}:{{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    const S: Duration = Duration::from_secs(1);

    fn timing() -> Timing {
        Timing {
            group_by: vec!["alertname".into(), "route".into()],
            group_wait: 10 * S,
            group_interval: 60 * S,
            repeat_interval: 4 * 3600 * S,
            resend_interval: 60 * S,
        }
    }

    fn wall(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_188_414 + secs)
    }

    fn burn(route: &str) -> Alert {
        Alert::firing("ErrorBudgetBurn", wall(0)).label("route", route)
    }

    fn webhooks_only() -> Dispatcher {
        Dispatcher::new(timing(), true, false)
    }

    fn notifications(out: Vec<Outgoing>) -> Vec<Arc<Notification>> {
        out.into_iter()
            .map(|o| match o {
                Outgoing::Webhook(n) => n,
                Outgoing::Push(_) => panic!("a push to a dispatcher without Alertmanagers"),
            })
            .collect()
    }

    #[test]
    fn a_new_group_is_notified_after_group_wait_not_before() {
        let t0 = Instant::now();
        let mut d = webhooks_only();
        d.receive(vec![burn("api")], t0);
        assert_eq!(d.next_deadline(), Some(t0 + 10 * S));
        assert!(d.due(t0 + 9 * S).is_empty());
        let sent = notifications(d.due(t0 + 10 * S));
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0].group_key,
            r#"{}:{alertname="ErrorBudgetBurn", route="api"}"#
        );
        assert_eq!(sent[0].alerts, vec![burn("api")]);
    }

    #[test]
    fn alerts_arriving_during_group_wait_go_out_in_one_notification() {
        let t0 = Instant::now();
        let mut d = webhooks_only();
        d.receive(vec![burn("api").label("replica", "a")], t0);
        d.receive(vec![burn("api").label("replica", "b")], t0 + 5 * S);
        let sent = notifications(d.due(t0 + 10 * S));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].alerts.len(), 2);
    }

    #[test]
    fn alerts_are_grouped_by_the_group_by_labels() {
        let t0 = Instant::now();
        let mut d = webhooks_only();
        d.receive(vec![burn("api"), burn("cart")], t0);
        let sent = notifications(d.due(t0 + 10 * S));
        let keys: Vec<&str> = sent.iter().map(|n| n.group_key.as_str()).collect();
        assert_eq!(
            keys,
            [
                r#"{}:{alertname="ErrorBudgetBurn", route="api"}"#,
                r#"{}:{alertname="ErrorBudgetBurn", route="cart"}"#
            ]
        );
    }

    #[test]
    fn a_notified_firing_alert_is_not_sent_again_before_repeat_interval() {
        let t0 = Instant::now();
        let mut d = webhooks_only();
        d.receive(vec![burn("api")], t0);
        assert_eq!(d.due(t0 + 10 * S).len(), 1);
        // The caller re-sends the same alert: still nothing new to say.
        d.receive(
            vec![burn("api").annotation("summary", "still")],
            t0 + 30 * S,
        );
        let mut now = t0 + 10 * S;
        for _ in 0..10 {
            now += 60 * S;
            assert!(d.due(now).is_empty());
        }
    }

    #[test]
    fn a_firing_alert_is_repeated_at_the_first_look_after_repeat_interval() {
        let t0 = Instant::now();
        let mut d = webhooks_only();
        d.receive(vec![burn("api")], t0);
        let first = t0 + 10 * S;
        assert_eq!(d.due(first).len(), 1);
        let mut now = first;
        let mut repeats = Vec::new();
        while now < first + 5 * 3600 * S {
            now = d.next_deadline().unwrap();
            if !d.due(now).is_empty() {
                repeats.push(now - first);
            }
        }
        assert_eq!(repeats, [4 * 3600 * S]);
    }

    #[test]
    fn a_new_alert_in_a_notified_group_waits_for_group_interval() {
        let t0 = Instant::now();
        let mut d = webhooks_only();
        d.receive(vec![burn("api").label("replica", "a")], t0);
        assert_eq!(d.due(t0 + 10 * S).len(), 1);
        d.receive(vec![burn("api").label("replica", "b")], t0 + 20 * S);
        assert_eq!(d.next_deadline(), Some(t0 + 70 * S));
        assert!(d.due(t0 + 69 * S).is_empty());
        let sent = notifications(d.due(t0 + 70 * S));
        assert_eq!(sent[0].alerts.len(), 2, "the whole group is sent");
    }

    #[test]
    fn a_resolved_alert_is_sent_once_then_forgotten() {
        let t0 = Instant::now();
        let mut d = webhooks_only();
        d.receive(vec![burn("api")], t0);
        d.due(t0 + 10 * S);
        d.receive(vec![burn("api").resolved(wall(30))], t0 + 30 * S);
        let sent = notifications(d.due(t0 + 70 * S));
        assert_eq!(sent.len(), 1);
        assert!(!sent[0].alerts[0].is_firing());
        assert_eq!(d.next_deadline(), None, "an empty group is dropped");
        d.receive(vec![burn("api").resolved(wall(40))], t0 + 80 * S);
        assert_eq!(d.next_deadline(), None, "a second resolve is not news");
    }

    #[test]
    fn an_alert_resolved_before_it_was_ever_notified_is_not_sent() {
        let t0 = Instant::now();
        let mut d = webhooks_only();
        d.receive(vec![burn("api")], t0);
        d.receive(vec![burn("api").resolved(wall(5))], t0 + 5 * S);
        assert!(d.due(t0 + 10 * S).is_empty());
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn a_resolved_alert_of_an_unknown_group_is_ignored() {
        let t0 = Instant::now();
        let mut d = webhooks_only();
        d.receive(vec![burn("api").resolved(wall(5))], t0);
        assert_eq!(d.next_deadline(), None);
    }

    fn pushes(out: Vec<Outgoing>) -> Vec<Arc<Vec<Alert>>> {
        out.into_iter()
            .filter_map(|o| match o {
                Outgoing::Push(p) => Some(p),
                Outgoing::Webhook(_) => None,
            })
            .collect()
    }

    #[test]
    fn alertmanager_gets_changes_at_once_and_firing_alerts_every_resend_interval() {
        let t0 = Instant::now();
        let mut d = Dispatcher::new(timing(), false, true);
        d.receive(vec![burn("api")], t0);
        assert_eq!(
            d.next_deadline(),
            Some(t0),
            "no group_wait for Alertmanager"
        );
        assert_eq!(pushes(d.due(t0)), [Arc::new(vec![burn("api")])]);
        // The same alert again is no change: nothing until the resend.
        d.receive(vec![burn("api")], t0 + S);
        assert_eq!(d.next_deadline(), Some(t0 + 60 * S));
        assert!(d.due(t0 + 59 * S).is_empty());
        assert_eq!(pushes(d.due(t0 + 60 * S)), [Arc::new(vec![burn("api")])]);
        assert_eq!(d.next_deadline(), Some(t0 + 120 * S));
    }

    #[test]
    fn alertmanager_gets_a_resolved_alert_once_with_the_firing_ones() {
        let t0 = Instant::now();
        let mut d = Dispatcher::new(timing(), false, true);
        d.receive(vec![burn("api"), burn("cart")], t0);
        d.due(t0);
        let done = burn("cart").resolved(wall(20));
        d.receive(vec![done.clone()], t0 + 20 * S);
        assert_eq!(
            pushes(d.due(t0 + 20 * S)),
            [Arc::new(vec![burn("api"), done])]
        );
        assert_eq!(
            pushes(d.due(t0 + 80 * S)),
            [Arc::new(vec![burn("api")])],
            "the resolved alert is not repeated"
        );
    }

    #[test]
    fn alertmanager_is_left_alone_once_nothing_fires() {
        let t0 = Instant::now();
        let mut d = Dispatcher::new(timing(), false, true);
        d.receive(vec![burn("api")], t0);
        d.due(t0);
        d.receive(vec![burn("api").resolved(wall(5))], t0 + 5 * S);
        assert_eq!(pushes(d.due(t0 + 5 * S)).len(), 1);
        assert_eq!(d.next_deadline(), None);
    }
}
