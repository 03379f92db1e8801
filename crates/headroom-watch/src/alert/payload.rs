//! The two JSON bodies: Alertmanager's webhook message (version "4") and the postable
//! alerts of Alertmanager's `POST /api/v2/alerts`.

use super::rfc3339::{rfc3339, ZERO_TIME};
use super::{Alert, Notification};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::SystemTime;

type Labels<'a> = &'a BTreeMap<String, String>;

/// What a webhook message says about its sender, the same for every notification.
#[derive(Clone, Debug)]
pub(crate) struct WebhookContext<'a> {
    /// The `receiver` field: the name Alertmanager would give the receiver.
    pub receiver: &'a str,
    /// The `externalURL` field: where the sender is reached (headroom's admin URL).
    pub external_url: &'a str,
}

/// Alertmanager's `webhook.Message`: its template data first, then the version fields, in
/// the order Alertmanager writes them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookMessage<'a> {
    receiver: &'a str,
    status: &'static str,
    alerts: Vec<WebhookAlert<'a>>,
    group_labels: Labels<'a>,
    common_labels: BTreeMap<&'a str, &'a str>,
    common_annotations: BTreeMap<&'a str, &'a str>,
    #[serde(rename = "externalURL")]
    external_url: &'a str,
    version: &'static str,
    group_key: &'a str,
    truncated_alerts: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAlert<'a> {
    status: &'static str,
    labels: Labels<'a>,
    annotations: Labels<'a>,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: &'a str,
    fingerprint: String,
}

fn status(firing: bool) -> &'static str {
    if firing {
        "firing"
    } else {
        "resolved"
    }
}

/// The webhook body of one group's notification: `status` is "firing" while any alert of
/// the group fires; `commonLabels`/`commonAnnotations` are the pairs every alert shares.
pub(crate) fn webhook_json(n: &Notification, ctx: &WebhookContext<'_>) -> Vec<u8> {
    let alerts = n
        .alerts
        .iter()
        .map(|a| WebhookAlert {
            status: status(a.is_firing()),
            labels: &a.labels,
            annotations: &a.annotations,
            starts_at: rfc3339(a.starts_at),
            ends_at: match a.ends_at {
                Some(t) => rfc3339(ends_after_start(a, t)),
                None => ZERO_TIME.to_string(),
            },
            generator_url: &a.generator_url,
            fingerprint: a.fingerprint().to_string(),
        })
        .collect();
    let message = WebhookMessage {
        receiver: ctx.receiver,
        status: status(n.alerts.iter().any(Alert::is_firing)),
        alerts,
        group_labels: &n.group_labels,
        common_labels: common(n.alerts.iter().map(|a| &a.labels)),
        common_annotations: common(n.alerts.iter().map(|a| &a.annotations)),
        external_url: ctx.external_url,
        version: "4",
        group_key: &n.group_key,
        truncated_alerts: 0,
    };
    // Serialising maps of strings and plain structs cannot fail.
    serde_json::to_vec(&message).unwrap_or_default()
}

/// The pairs present, with the same value, in every map.
fn common<'a>(
    mut maps: impl Iterator<Item = &'a BTreeMap<String, String>>,
) -> BTreeMap<&'a str, &'a str> {
    let Some(first) = maps.next() else {
        return BTreeMap::new();
    };
    let mut shared: BTreeMap<&str, &str> = first
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for map in maps {
        shared.retain(|k, v| map.get(*k).map(String::as_str) == Some(*v));
    }
    shared
}

/// Alertmanager refuses an alert that ends before it starts ("start time must be before
/// end time"), which would fail the whole batch: such an end is moved to the start.
fn ends_after_start(a: &Alert, ends_at: SystemTime) -> SystemTime {
    ends_at.max(a.starts_at)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert<'a> {
    labels: Labels<'a>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: Labels<'a>,
    starts_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ends_at: Option<String>,
    #[serde(rename = "generatorURL", skip_serializing_if = "str::is_empty")]
    generator_url: &'a str,
}

/// The body of `POST /api/v2/alerts`: a JSON array of postable alerts. A firing alert has
/// no `endsAt` (Alertmanager then keeps it for its `resolve_timeout`); a resolved one has
/// its end.
pub(crate) fn postable_alerts_json(alerts: &[Alert]) -> Vec<u8> {
    let body: Vec<PostableAlert<'_>> = alerts
        .iter()
        .map(|a| PostableAlert {
            labels: &a.labels,
            annotations: &a.annotations,
            starts_at: rfc3339(a.starts_at),
            ends_at: a.ends_at.map(|t| rfc3339(ends_after_start(a, t))),
            generator_url: &a.generator_url,
        })
        .collect();
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn high_errors(route: &str) -> Alert {
        let mut a = Alert::firing("HighErrorRate", at(1_796_188_414))
            .label("route", route)
            .label("severity", "page")
            .annotation("summary", "5xx above budget")
            .annotation("dashboard", "http://headroom:9000/watch");
        a.generator_url = "http://headroom:9000/watch?route=api".into();
        a
    }

    #[test]
    fn webhook_message_is_alertmanagers_version_4_shape() {
        let n = Notification {
            group_key: r#"{}:{alertname="HighErrorRate", route="api"}"#.into(),
            group_labels: BTreeMap::from([
                ("alertname".into(), "HighErrorRate".into()),
                ("route".into(), "api".into()),
            ]),
            alerts: vec![
                high_errors("api"),
                high_errors("api")
                    .label("replica", "b")
                    .annotation("summary", "other")
                    .resolved(at(1_796_188_474)),
            ],
        };
        let ctx = WebhookContext {
            receiver: "headroom",
            external_url: "http://headroom:9000",
        };
        let json: serde_json::Value = serde_json::from_slice(&webhook_json(&n, &ctx)).unwrap();
        let golden = serde_json::json!({
            "receiver": "headroom",
            "status": "firing",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "HighErrorRate", "route": "api", "severity": "page"},
                    "annotations": {"dashboard": "http://headroom:9000/watch",
                                    "summary": "5xx above budget"},
                    "startsAt": "2026-12-02T05:13:34Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://headroom:9000/watch?route=api",
                    "fingerprint": high_errors("api").fingerprint().to_string()
                },
                {
                    "status": "resolved",
                    "labels": {"alertname": "HighErrorRate", "replica": "b", "route": "api",
                               "severity": "page"},
                    "annotations": {"dashboard": "http://headroom:9000/watch",
                                    "summary": "other"},
                    "startsAt": "2026-12-02T05:13:34Z",
                    "endsAt": "2026-12-02T05:14:34Z",
                    "generatorURL": "http://headroom:9000/watch?route=api",
                    "fingerprint": n.alerts[1].fingerprint().to_string()
                }
            ],
            "groupLabels": {"alertname": "HighErrorRate", "route": "api"},
            "commonLabels": {"alertname": "HighErrorRate", "route": "api", "severity": "page"},
            "commonAnnotations": {"dashboard": "http://headroom:9000/watch"},
            "externalURL": "http://headroom:9000",
            "version": "4",
            "groupKey": "{}:{alertname=\"HighErrorRate\", route=\"api\"}",
            "truncatedAlerts": 0
        });
        assert_eq!(json, golden);
    }

    #[test]
    fn webhook_fields_come_in_alertmanagers_order() {
        let n = Notification {
            group_key: "{}:{}".into(),
            group_labels: BTreeMap::new(),
            alerts: vec![high_errors("api")],
        };
        let ctx = WebhookContext {
            receiver: "r",
            external_url: "",
        };
        let text = String::from_utf8(webhook_json(&n, &ctx)).unwrap();
        let order = [
            "\"receiver\"",
            "\"status\"",
            "\"alerts\"",
            "\"groupLabels\"",
            "\"commonLabels\"",
            "\"commonAnnotations\"",
            "\"externalURL\"",
            "\"version\"",
            "\"groupKey\"",
            "\"truncatedAlerts\"",
        ];
        let positions: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn a_group_whose_alerts_all_resolved_is_resolved() {
        let n = Notification {
            group_key: "{}:{}".into(),
            group_labels: BTreeMap::new(),
            alerts: vec![high_errors("api").resolved(at(1_796_188_500))],
        };
        let ctx = WebhookContext {
            receiver: "r",
            external_url: "",
        };
        let json: serde_json::Value = serde_json::from_slice(&webhook_json(&n, &ctx)).unwrap();
        assert_eq!(json["status"], "resolved");
    }

    #[test]
    fn postable_alerts_omit_ends_at_while_firing_and_set_it_when_resolved() {
        let firing = high_errors("api");
        let resolved = high_errors("cart").resolved(at(1_796_188_474));
        let json: serde_json::Value =
            serde_json::from_slice(&postable_alerts_json(&[firing, resolved])).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {
                    "labels": {"alertname": "HighErrorRate", "route": "api", "severity": "page"},
                    "annotations": {"dashboard": "http://headroom:9000/watch",
                                    "summary": "5xx above budget"},
                    "startsAt": "2026-12-02T05:13:34Z",
                    "generatorURL": "http://headroom:9000/watch?route=api"
                },
                {
                    "labels": {"alertname": "HighErrorRate", "route": "cart", "severity": "page"},
                    "annotations": {"dashboard": "http://headroom:9000/watch",
                                    "summary": "5xx above budget"},
                    "startsAt": "2026-12-02T05:13:34Z",
                    "endsAt": "2026-12-02T05:14:34Z",
                    "generatorURL": "http://headroom:9000/watch?route=api"
                }
            ])
        );
    }

    #[test]
    fn an_end_before_the_start_is_moved_to_the_start() {
        let odd = high_errors("api").resolved(at(1_000));
        let json: serde_json::Value =
            serde_json::from_slice(&postable_alerts_json(&[odd])).unwrap();
        assert_eq!(json[0]["endsAt"], json[0]["startsAt"]);
    }
}
