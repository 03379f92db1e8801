//! The Prometheus rules file: recording rules for the ratios the burn-rate pairs read, and
//! alerting rules for the objectives and rules, as YAML written by hand.

use super::{
    error_ratio, latency_words, number, percent, prom_duration, prom_duration_secs, promql_str,
    quantile_expr, quantile_name, ratio_windows, Sli,
};
use headroom_config::watch::{RuleCondition, RuleConfig, Severity, SloConfig, WatchConfig};
use headroom_watch::slo::STANDARD_PAIRS;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// The Prometheus rules file for `watch`'s objectives and rules, `config` named in its
/// header. With neither, a valid file whose two groups are empty. Never panics.
pub(super) fn prometheus_rules(watch: &WatchConfig, config: &Path) -> String {
    let mut out = String::new();
    // A line break in the path would end the comment.
    let from: String = config
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let _ = writeln!(
        out,
        "# Prometheus rules for headroom, written by `headroom export prometheus-rules` from {from}."
    );
    out.push_str(
        "# Load it with `rule_files: [this file]` in prometheus.yml; check it with\n\
         # `promtool check rules`. A request is bad when answered with a 5xx (availability) or\n\
         # slower than the objective's latency; burn rate = bad ratio / (1 - objective).\n",
    );
    if watch.slos.is_empty() && watch.rules.is_empty() {
        out.push_str(
            "# The config has no [[watch.slo]] and no [[watch.rule]]: both groups are empty.\n",
        );
    }
    out.push_str("groups:\n");

    out.push_str("  - name: 'headroom-slo-ratios'\n");
    let mut recorded = Vec::new();
    for slo in &watch.slos {
        let sli = Sli::of(slo);
        if !recorded.contains(&sli) {
            recorded.push(sli);
        }
    }
    rules_header(&mut out, recorded.is_empty());
    for sli in &recorded {
        for w in ratio_windows() {
            let _ = write!(
                out,
                "      - record: {}\n        expr: {}\n",
                yaml(&sli.record(w)),
                yaml(&sli.ratio_expr(w))
            );
            // The labels the expression yields, written out too: promtool's lint tells
            // rules apart by their name and labels.
            let _ = writeln!(
                out,
                "        labels:\n          {}: {}",
                sli.subject.kind(),
                yaml(sli.subject.name())
            );
            if let Some(le) = &sli.le {
                let _ = writeln!(out, "          le: {}", yaml(le));
            }
        }
    }

    out.push_str("  - name: 'headroom-alerts'\n");
    rules_header(&mut out, watch.slos.is_empty() && watch.rules.is_empty());
    for slo in &watch.slos {
        burn_alerts(&mut out, slo);
    }
    for rule in &watch.rules {
        rule_alert(&mut out, rule);
    }
    out
}

fn rules_header(out: &mut String, empty: bool) {
    out.push_str(if empty {
        "    rules: []\n"
    } else {
        "    rules:\n"
    });
}

/// One `SloBurnRate` alert per pair: both windows' burn rate above the factor.
fn burn_alerts(out: &mut String, slo: &SloConfig) {
    let sli = Sli::of(slo);
    let allowed = format!("(1 - {})", number(slo.objective));
    let (kind, describe) = match slo.latency {
        None => (
            "availability",
            format!("{} availability", percent(slo.objective)),
        ),
        Some(l) => (
            "latency",
            format!(
                "{} latency (within {})",
                percent(slo.objective),
                latency_words(l)
            ),
        ),
    };
    // As the built-in watch plane names an objective in its summaries.
    let who = if slo.name == slo.subject.name() {
        slo.subject.to_string()
    } else {
        format!("{} ({})", slo.subject, slo.name)
    };
    for pair in STANDARD_PAIRS {
        let (long, short, factor) = (pair.long.as_secs(), pair.short.as_secs(), pair.factor);
        let (l, s) = (prom_duration_secs(long), prom_duration_secs(short));
        let severity = pair.severity.as_str();
        let expr = format!(
            "{} / {allowed} > {factor} and {} / {allowed} > {factor}",
            sli.recorded(long),
            sli.recorded(short)
        );
        let summary = format!(
            "{}: burning its {describe} budget {{{{ $value | printf \"%.1f\" }}}}× over {l} (and above {factor}× over {s})",
            template_text(&who)
        );
        let labels = [
            (slo.subject.kind(), slo.subject.name()),
            ("objective", slo.name.as_str()),
            ("sli", kind),
            ("severity", severity),
            ("window", &format!("{l}/{s}")),
        ];
        alert(out, "SloBurnRate", &expr, None, &labels, &summary);
    }
}

/// The alert of one `[[watch.rule]]`, with Prometheus' `for:`.
fn rule_alert(out: &mut String, rule: &RuleConfig) {
    let w = prom_duration(rule.window);
    let who = template_text(&format!("{}: {}", rule.subject, rule.name));
    let (name, expr, summary) = match rule.condition {
        RuleCondition::ErrorRate { above } => (
            "ErrorRateHigh",
            format!("{} > {}", error_ratio(&rule.subject, &w), number(above)),
            format!(
                "{who}: {{{{ $value | humanizePercentage }}}} of requests failed over the last {w} (threshold {})",
                percent(above)
            ),
        ),
        RuleCondition::LatencyAbove {
            quantile,
            threshold,
        } => (
            "LatencyHigh",
            format!(
                "{} > {}",
                quantile_expr(&rule.subject, quantile, &w, None),
                number(threshold.as_secs_f64())
            ),
            format!(
                "{who}: {} {{{{ $value | humanizeDuration }}}} over the last {w} (threshold {})",
                quantile_name(quantile),
                latency_words(threshold)
            ),
        ),
        RuleCondition::LatencyAboveBaseline {
            quantile,
            ratio,
            baseline,
        } => (
            "LatencyAboveBaseline",
            format!(
                "{} > (1 + {}) * {}",
                quantile_expr(&rule.subject, quantile, &w, None),
                number(ratio),
                quantile_expr(&rule.subject, quantile, &prom_duration(baseline), Some(&w))
            ),
            format!(
                "{who}: {} {{{{ $value | humanizeDuration }}}} over the last {w}, more than {} above its {} baseline",
                quantile_name(quantile),
                percent(ratio),
                prom_duration(baseline)
            ),
        ),
    };
    let labels = [
        (rule.subject.kind(), rule.subject.name()),
        ("rule", rule.name.as_str()),
        ("severity", severity_name(rule.severity)),
        ("window", w.as_str()),
    ];
    alert(out, name, &expr, Some(rule.for_), &labels, &summary);
}

/// One alerting rule: `for_` only for `[[watch.rule]]`s (a burn-rate pair fires at once,
/// as the built-in watch plane's do).
fn alert(
    out: &mut String,
    name: &str,
    expr: &str,
    for_: Option<Duration>,
    labels: &[(&str, &str)],
    summary: &str,
) {
    let _ = write!(
        out,
        "      - alert: {}\n        expr: {}\n",
        yaml(name),
        yaml(expr)
    );
    if let Some(f) = for_ {
        let _ = writeln!(out, "        for: {}", yaml(&prom_duration(f)));
    }
    out.push_str("        labels:\n");
    for (key, value) in labels {
        // Prometheus expands label values as templates too.
        let _ = writeln!(out, "          {key}: {}", yaml(&template_text(value)));
    }
    let _ = writeln!(
        out,
        "        annotations:\n          summary: {}",
        yaml(summary)
    );
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Page => "page",
        Severity::Ticket => "ticket",
    }
}

/// Text that Prometheus' Go templates print as it is: a `{{` in a name would start an
/// action, so such text goes in as a template string literal (Go's quoting, as PromQL's).
fn template_text(s: &str) -> String {
    if s.contains("{{") {
        format!("{{{{ {} }}}}", promql_str(s))
    } else {
        s.to_string()
    }
}

/// A YAML scalar that reads back as `s` exactly: single-quoted (`'` doubled) when `s` is
/// printable, else double-quoted with escapes (YAML folds line breaks in single quotes).
fn yaml(s: &str) -> String {
    let special = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}');
    if !s.chars().any(special) {
        return format!("'{}'", s.replace('\'', "''"));
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if special(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
