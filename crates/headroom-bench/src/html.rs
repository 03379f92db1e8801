//! `--html`: one self-contained page (inline SVG, no script, no network) with the plots a
//! person would rather look at than read: latency and throughput over time, the latency
//! distribution by percentile, and for a capacity search the latency-against-load curve
//! with the SLO drawn on it. Drawn by hand: a plotting crate would cost more to build than
//! these few lines of SVG.

use crate::report::{duration_ms, Report};
use crate::slo::{Figure, Slo};
use std::fmt::Write as _;

const W: f64 = 760.0;
const H: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 45.0;
const COLORS: [&str; 5] = ["#1f77b4", "#ff7f0e", "#d62728", "#7f7f7f", "#2ca02c"];

struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

#[derive(Clone, Copy, PartialEq)]
enum XAxis {
    Linear,
    /// Percentiles, spread so that 90, 99, 99.9 … are evenly apart.
    Percentile,
}

fn pct_x(p: f64) -> f64 {
    -(1.0 - p.min(99.999) / 100.0).log10()
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    axis: XAxis,
    series: &[Series],
    line: Option<(f64, String)>,
    y_fmt: &dyn Fn(f64) -> String,
) -> String {
    let tx = |x: f64| {
        if axis == XAxis::Percentile {
            pct_x(x)
        } else {
            x
        }
    };
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0f64);
    for &(x, y) in pts {
        x0 = x0.min(tx(x));
        x1 = x1.max(tx(x));
        y1 = y1.max(y);
    }
    if let Some((y, _)) = &line {
        y1 = y1.max(*y);
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if axis == XAxis::Linear {
        x0 = x0.min(0.0);
    }
    if (x1 - x0).abs() < f64::EPSILON {
        x1 = x0 + 1.0;
    }
    let y1 = nice_max(y1 * 1.05);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (tx(x) - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP + ph - y / y1 * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        s,
        r#"<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        esc(title)
    );
    // Grid and y ticks.
    for i in 0..=5 {
        let v = y1 * i as f64 / 5.0;
        let y = sy(v);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            esc(&y_fmt(v))
        );
    }
    // X ticks.
    let ticks: Vec<(f64, String)> = match axis {
        XAxis::Percentile => [0.0, 50.0, 90.0, 99.0, 99.9, 99.99, 99.999]
            .iter()
            .filter(|&&p| pct_x(p) <= x1 + 1e-9)
            .map(|&p| (p, format!("p{p}")))
            .collect(),
        XAxis::Linear => {
            // Round steps (1, 2, 2.5, 5 × 10ⁿ), about five of them.
            let step = nice_max((x1 - x0) / 5.0);
            let first = (x0 / step).ceil() as i64;
            let last = (x1 / step + 1e-9).floor() as i64;
            (first..=last)
                .map(|k| {
                    let v = k as f64 * step;
                    let text = format!("{v:.3}");
                    (
                        v,
                        text.trim_end_matches('0').trim_end_matches('.').to_string(),
                    )
                })
                .collect()
        }
    };
    for (v, label) in ticks {
        let x = sx(v);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{:.1}" stroke="#f0f0f0"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 16.0,
            esc(&label)
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate(14,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"##,
        LEFT + pw / 2.0,
        H - 8.0,
        esc(x_label),
        TOP + ph / 2.0,
        esc(y_label)
    );
    if let Some((y, label)) = &line {
        let yy = sy(*y);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#d62728" stroke-dasharray="6,4"/><text x="{:.1}" y="{:.1}" fill="#d62728">{}</text>"##,
            LEFT + pw,
            LEFT + pw + 6.0,
            yy + 4.0,
            esc(label)
        );
    }
    for (i, ser) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = ser
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"/>"#,
            path.join(" ")
        );
        if ser.points.len() <= 40 {
            for &(x, y) in &ser.points {
                let _ = write!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#,
                    sx(x),
                    sy(y)
                );
            }
        }
        let ly = TOP + 14.0 + i as f64 * 16.0;
        let _ = write!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="12" height="3" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + pw + 10.0,
            ly - 4.0,
            LEFT + pw + 28.0,
            ly,
            esc(&ser.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// The latency bound of the SLO's first latency objective, for the dashed line.
fn slo_line(slo: &str) -> Option<(f64, String)> {
    let slo = Slo::parse(slo).ok()?;
    slo.0
        .iter()
        .find(|o| o.figure != Figure::ErrorRate)
        .map(|o| (o.bound, format!("SLO {}", o.text)))
}

fn ms(v: f64) -> String {
    duration_ms(v)
}

fn per_s(v: f64) -> String {
    crate::report::rate(v)
}

/// The whole page for `report`; `summary` is the text the terminal showed.
pub fn page(report: &Report, summary: &str) -> String {
    let mut body = String::new();
    if let Some(run) = &report.run {
        let t = &run.timeline;
        let mid = |r: &crate::stats::Row| r.t_s;
        let series = |name: &str, f: &dyn Fn(&crate::stats::Row) -> f64| Series {
            name: name.into(),
            points: t.iter().map(|r| (mid(r), f(r))).collect(),
        };
        body.push_str(&chart(
            "Latency over time",
            "seconds from start",
            "latency",
            XAxis::Linear,
            &[
                series("p50", &|r| r.p50_ms),
                series("p90", &|r| r.p90_ms),
                series("p99", &|r| r.p99_ms),
                series("max", &|r| r.max_ms),
            ],
            None,
            &ms,
        ));
        body.push_str(&chart(
            "Throughput over time",
            "seconds from start",
            "per second",
            XAxis::Linear,
            &[
                series("responses/s", &|r| r.rps),
                series("errors/s", &|r| r.errors as f64 / run.interval_s.max(1e-9)),
            ],
            None,
            &per_s,
        ));
        body.push_str(&chart(
            "Latency by percentile",
            "percentile",
            "latency",
            XAxis::Percentile,
            &[Series {
                name: "latency".into(),
                points: run.distribution.iter().map(|[p, v]| (*p, *v)).collect(),
            }],
            None,
            &ms,
        ));
    }
    if let Some(search) = &report.search {
        let mut steps: Vec<_> = search.steps.iter().collect();
        steps.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        let curve = |name: &str, f: &dyn Fn(&crate::search::Step) -> f64| Series {
            name: name.into(),
            points: steps.iter().map(|s| (s.rate, f(s))).collect(),
        };
        body.push_str(&chart(
            "Latency against offered load",
            "arrival rate (requests/s)",
            "latency",
            XAxis::Linear,
            &[
                curve("p50", &|s| s.latency_ms.p50),
                curve("p90", &|s| s.latency_ms.p90),
                curve("p99", &|s| s.latency_ms.p99),
            ],
            slo_line(&search.slo),
            &ms,
        ));
        body.push_str(&chart(
            "Throughput against offered load",
            "arrival rate (requests/s)",
            "responses/s",
            XAxis::Linear,
            &[
                curve("responses/s", &|s| s.throughput_rps),
                curve("offered", &|s| s.rate),
            ],
            None,
            &per_s,
        ));
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>headroom bench: {target}</title>\
<style>body{{font-family:sans-serif;margin:24px;color:#222}} pre{{background:#f6f6f6;padding:12px;overflow:auto}} svg{{display:block;margin:18px 0}}</style></head>\
<body><h1>headroom bench: {target}</h1><pre>{summary}</pre>{body}</body></html>\n",
        target = esc(&report.target),
        summary = esc(summary),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_spread_evenly_by_nines() {
        assert!((pct_x(90.0) - 1.0).abs() < 1e-9);
        assert!((pct_x(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nice_max(7.3), 10.0);
        assert_eq!(nice_max(0.21), 0.25);
    }

    #[test]
    fn a_chart_draws_each_series_and_the_slo() {
        let svg = chart(
            "t",
            "x",
            "y",
            XAxis::Linear,
            &[Series {
                name: "p<99>".into(),
                points: vec![(0.0, 1.0), (1.0, 2.0)],
            }],
            Some((1.5, "SLO p99<2ms".into())),
            &ms,
        );
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("stroke-dasharray") && svg.contains("p&lt;99&gt;"));
    }
}
