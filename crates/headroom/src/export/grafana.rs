//! The Grafana dashboard: traffic, errors, latency, replicas, cache, limits and shedding,
//! then each objective's error budget and burn rates, as JSON.

use super::{
    error_ratio_of, number, prom_duration, prom_duration_secs, ratio_windows, Sli, DURATION,
    REQUESTS,
};
use headroom_config::watch::SloConfig;
use serde_json::{json, Value};

/// The Grafana dashboard (JSON, schema 39) for headroom and these objectives. Its data
/// source is a `datasource` variable (any Prometheus), so it imports and provisions as is;
/// a `route` variable filters the route panels. Never panics.
pub(super) fn grafana_dashboard(slos: &[SloConfig]) -> String {
    let mut board = Board::default();
    let rate = "$__rate_interval";
    let route = "route=~\"$route\"";
    board.row("Traffic");
    board.timeseries(
        "Requests/s by route",
        "reqps",
        &[(
            format!("sum by (route) (rate({REQUESTS}{{{route}}}[{rate}]))"),
            "{{route}}",
        )],
    );
    board.timeseries(
        "5xx ratio by route",
        "percentunit",
        &[(error_ratio_of(route, rate), "{{route}}")],
    );
    let quantile = |q: f64| {
        format!("histogram_quantile({q}, sum by (route, le) (rate({DURATION}_bucket{{{route}}}[{rate}])))")
    };
    let quantiles = [
        (quantile(0.5), "{{route}} p50"),
        (quantile(0.95), "{{route}} p95"),
        (quantile(0.99), "{{route}} p99"),
    ];
    board.timeseries("Latency p50 / p95 / p99 by route", "s", &quantiles);
    board.timeseries(
        "In-flight requests",
        "short",
        &[(
            "sum by (instance) (headroom_inflight_requests)".into(),
            "{{instance}}",
        )],
    );
    board.row("Replicas, cache and protection");
    board.timeseries(
        "Healthy replicas by service",
        "short",
        &[
            (
                "sum by (service) (headroom_replica_healthy)".into(),
                "{{service}} healthy",
            ),
            (
                "count by (service) (headroom_replica_healthy)".into(),
                "{{service}} total",
            ),
        ],
    );
    board.timeseries(
        "Cache hit ratio by route",
        "percentunit",
        &[(
            format!(
                "sum by (route) (rate(headroom_cache_requests_total{{{route},result=\"hit\"}}[{rate}])) / sum by (route) (rate(headroom_cache_requests_total{{{route}}}[{rate}]))"
            ),
            "{{route}}",
        )],
    );
    board.timeseries(
        "Rate limited requests/s",
        "reqps",
        &[(
            format!("sum by (route, limit) (rate(headroom_guard_limit_total{{result=\"limited\"}}[{rate}]))"),
            "{{route}} {{limit}}",
        )],
    );
    board.timeseries(
        "Shed requests/s by service",
        "reqps",
        &[(
            format!("sum by (service, reason) (rate(headroom_guard_shed_total[{rate}]))"),
            "{{service}} {{reason}}",
        )],
    );
    if !slos.is_empty() {
        board.row("SLOs");
    }
    for slo in slos {
        let sli = Sli::of(slo);
        let period = prom_duration(slo.period);
        let allowed = format!("(1 - {})", number(slo.objective));
        board.budget(
            &format!("{}: error budget left ({period})", slo.name),
            &format!("1 - ({}) / {allowed}", sli.ratio_over(&period)),
        );
        let burns: Vec<(String, String)> = ratio_windows()
            .into_iter()
            .map(|w| {
                let w = prom_duration_secs(w);
                (format!("({}) / {allowed}", sli.ratio_over(&w)), w)
            })
            .collect();
        board.burn_rates(&format!("{}: burn rate", slo.name), &burns);
    }
    board.finish()
}

/// Panels laid out two to a row, 12 columns wide and 8 high each.
#[derive(Default)]
struct Board {
    panels: Vec<Value>,
    /// Where the next panel goes: (x, y).
    at: (u64, u64),
}

const DATASOURCE: &str = "${datasource}";

impl Board {
    fn place(&mut self, width: u64, height: u64) -> Value {
        if self.at.0 + width > 24 {
            self.at = (0, self.at.1 + 8);
        }
        let pos = json!({"h": height, "w": width, "x": self.at.0, "y": self.at.1});
        self.at.0 += width;
        pos
    }

    fn push(&mut self, mut panel: Value, width: u64) {
        panel["id"] = json!(self.panels.len() + 1);
        panel["gridPos"] = self.place(width, 8);
        panel["datasource"] = json!({"type": "prometheus", "uid": DATASOURCE});
        self.panels.push(panel);
    }

    fn row(&mut self, title: &str) {
        if self.at.0 > 0 {
            self.at = (0, self.at.1 + 8);
        }
        let id = self.panels.len() + 1;
        self.panels.push(json!({
            "type": "row", "title": title, "id": id, "collapsed": false, "panels": [],
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.at.1}
        }));
        self.at.1 += 1;
    }

    fn targets<L: AsRef<str>>(queries: &[(String, L)]) -> Value {
        queries
            .iter()
            .enumerate()
            .map(|(i, (expr, legend))| {
                json!({
                    "refId": ((b'A' + (i % 26) as u8) as char).to_string(),
                    "datasource": {"type": "prometheus", "uid": DATASOURCE},
                    "expr": expr, "legendFormat": legend.as_ref(), "range": true
                })
            })
            .collect()
    }

    fn timeseries<L: AsRef<str>>(&mut self, title: &str, unit: &str, queries: &[(String, L)]) {
        let panel = json!({
            "type": "timeseries", "title": title,
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": true},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "targets": Self::targets(queries)
        });
        self.push(panel, 12);
    }

    fn budget(&mut self, title: &str, expr: &str) {
        let panel = json!({
            "type": "stat", "title": title,
            "description": "1 - bad ratio over the period / (1 - objective): 100% untouched, 0% spent, negative overspent.",
            "fieldConfig": {"defaults": {"unit": "percentunit", "decimals": 1,
                "thresholds": {"mode": "absolute", "steps": [
                    {"color": "red", "value": null}, {"color": "orange", "value": 0},
                    {"color": "green", "value": 0.25}]}}, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
                        "colorMode": "background", "graphMode": "area"},
            "targets": Self::targets(&[(expr.to_string(), "budget left")])
        });
        self.push(panel, 6);
    }

    fn burn_rates<L: AsRef<str>>(&mut self, title: &str, queries: &[(String, L)]) {
        let panel = json!({
            "type": "timeseries", "title": title,
            "description": "Burn rate = bad ratio / (1 - objective). Pairs fire when both windows exceed: 1h & 5m > 14.4, 6h & 30m > 6 (page); 1d & 2h > 3, 3d & 6h > 1 (ticket).",
            "fieldConfig": {"defaults": {"unit": "short",
                "custom": {"thresholdsStyle": {"mode": "line"}},
                "thresholds": {"mode": "absolute", "steps": [
                    {"color": "green", "value": null}, {"color": "yellow", "value": 1},
                    {"color": "orange", "value": 6}, {"color": "red", "value": 14.4}]}}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "right", "showLegend": true},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "targets": Self::targets(queries)
        });
        self.push(panel, 18);
    }

    fn finish(self) -> String {
        let route_query = format!("label_values({REQUESTS}, route)");
        let dashboard = json!({
            "title": "headroom", "uid": "headroom", "tags": ["headroom"],
            "description": "Written by `headroom export grafana`.",
            "schemaVersion": 39, "version": 1, "editable": true, "graphTooltip": 1,
            "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "timezone": "browser",
            "annotations": {"list": []},
            "templating": {"list": [
                {"name": "datasource", "label": "Data source", "type": "datasource",
                 "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
                {"name": "route", "label": "Route", "type": "query",
                 "datasource": {"type": "prometheus", "uid": DATASOURCE},
                 "query": {"query": route_query, "refId": "route"}, "definition": route_query,
                 "includeAll": true, "multi": true, "allValue": ".*", "refresh": 2, "sort": 1,
                 "current": {"selected": true, "text": ["All"], "value": ["$__all"]}, "options": []}
            ]},
            "panels": self.panels
        });
        let mut text = serde_json::to_string_pretty(&dashboard).unwrap_or_default();
        text.push('\n');
        text
    }
}
