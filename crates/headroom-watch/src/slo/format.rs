//! How numbers read in alert labels and summaries: `99.9%`, `1h/5m`, `16.2×`, `312ms`.

/// `x` with at most `places` decimals and no trailing zeros: `0.999`, `16.2`, `3`.
pub(crate) fn decimal(x: f64, places: usize) -> String {
    let text = format!("{x:.places$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A ratio as a percentage with up to three decimals: `0.999` → `99.9%`, `0.01` → `1%`.
pub(crate) fn percent(ratio: f64) -> String {
    format!("{}%", decimal(ratio * 100.0, 3))
}

/// A quantile as it is usually written: `0.99` → `p99`, `0.999` → `p99.9`, `0.5` → `p50`.
pub(crate) fn quantile_name(q: f64) -> String {
    format!("p{}", decimal(q * 100.0, 3))
}

/// A window in the largest whole unit: `3600` → `1h`, `300` → `5m`, `259200` → `3d`,
/// `90` → `90s` (also a valid Prometheus duration: `headroom export` writes windows so).
pub fn window(secs: u64) -> String {
    match secs {
        0 => "0s".to_string(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A period in words, for `"of the 30-day budget"` and error messages: `30 days`, `12 hours`.
pub(crate) fn period_words(secs: u64) -> String {
    let (n, unit) = match secs {
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// A period as an adjective: `30-day`, `12-hour`.
pub(crate) fn period_adjective(secs: u64) -> String {
    let words = period_words(secs);
    let mut parts = words.splitn(2, ' ');
    let n = parts.next().unwrap_or_default();
    let unit = parts.next().unwrap_or_default().trim_end_matches('s');
    format!("{n}-{unit}")
}

/// A latency in seconds: under a second in whole milliseconds (`312ms`), else in seconds
/// with up to two decimals (`1.25s`).
pub(crate) fn latency(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0}ms", secs * 1_000.0)
    } else {
        format!("{}s", decimal(secs, 2))
    }
}

/// A burn rate with one decimal: `16.2×`.
pub(crate) fn rate(x: f64) -> String {
    format!("{x:.1}×")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_as_percentages_without_float_noise() {
        assert_eq!(percent(0.999), "99.9%");
        assert_eq!(percent(0.9995), "99.95%");
        assert_eq!(percent(0.99), "99%");
        assert_eq!(percent(0.01), "1%");
    }

    #[test]
    fn windows_read_in_their_largest_whole_unit() {
        assert_eq!(window(3_600), "1h");
        assert_eq!(window(300), "5m");
        assert_eq!(window(259_200), "3d");
        assert_eq!(window(5_400), "90m");
        assert_eq!(window(45), "45s");
    }

    #[test]
    fn periods_read_as_words_and_adjectives() {
        assert_eq!(period_words(30 * 86_400), "30 days");
        assert_eq!(period_words(86_400), "1 day");
        assert_eq!(period_adjective(30 * 86_400), "30-day");
        assert_eq!(period_adjective(12 * 3_600), "12-hour");
    }

    #[test]
    fn latencies_read_in_milliseconds_below_a_second() {
        assert_eq!(latency(0.3124), "312ms");
        assert_eq!(latency(1.25), "1.25s");
        assert_eq!(quantile_name(0.99), "p99");
        assert_eq!(quantile_name(0.999), "p99.9");
    }
}
