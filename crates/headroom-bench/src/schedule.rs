//! The load models: a closed loop (a fixed number of connections, each sending its next
//! request when the last is answered) and an open loop, where requests are due at fixed
//! times whatever the server does: a constant rate, or a linear ramp between two rates.

use std::time::Duration;

/// How requests are sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    /// `connections` request loops, each as fast as the server answers.
    Closed { connections: usize },
    /// Requests due at the times `rate` sets; up to `max_connections` in flight.
    Open { rate: Rate, max_connections: usize },
}

/// An arrival rate in requests per second: `from` at the start, moving linearly to `to`
/// over `over`, then held at `to`. A constant rate has `from == to`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub from: f64,
    pub to: f64,
    pub over: Duration,
}

impl Rate {
    pub fn constant(per_second: f64) -> Rate {
        Rate {
            from: per_second,
            to: per_second,
            over: Duration::ZERO,
        }
    }

    pub fn is_ramp(&self) -> bool {
        self.from != self.to && !self.over.is_zero()
    }

    /// The rate at `t` seconds from the start.
    pub fn at(&self, t: f64) -> f64 {
        let span = self.over.as_secs_f64();
        if !self.is_ramp() || t >= span {
            self.to
        } else {
            self.from + (self.to - self.from) * t / span
        }
    }

    /// How many requests are due in the first `t` seconds: the integral of the rate.
    pub fn due_by(&self, t: f64) -> f64 {
        let span = self.over.as_secs_f64();
        if !self.is_ramp() {
            return self.to * t;
        }
        let ramp = t.min(span);
        let during = self.from * ramp + (self.to - self.from) * ramp * ramp / (2.0 * span);
        during + self.to * (t - span).max(0.0)
    }

    /// When request `i` (counted from 0) is due, in seconds from the start: the `t` where
    /// `due_by(t) == i`. None when the rate falls to zero before it.
    pub fn time_of(&self, i: u64) -> Option<f64> {
        let i = i as f64;
        if i == 0.0 {
            return Some(0.0);
        }
        let span = self.over.as_secs_f64();
        if self.is_ramp() && i <= self.due_by(span) {
            // Solve from·t + k·t² = i with k = (to − from)/(2·span). Written as
            // 2i / (from + √(from² + 4ki)), which holds for a rising, falling or flat ramp
            // and does not cancel when k is tiny.
            let k = (self.to - self.from) / (2.0 * span);
            let disc = self.from * self.from + 4.0 * k * i;
            let denom = self.from + disc.max(0.0).sqrt();
            return (denom > 0.0).then(|| 2.0 * i / denom);
        }
        let before = if self.is_ramp() {
            self.due_by(span)
        } else {
            0.0
        };
        let start = if self.is_ramp() { span } else { 0.0 };
        (self.to > 0.0).then(|| start + (i - before) / self.to)
    }
}

/// Parses `5000/s`, `300/m`, `20/ms` or a bare number (per second).
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let (n, unit) = match s.trim().split_once('/') {
        Some((n, u)) => (n.trim(), u.trim()),
        None => (s.trim(), "s"),
    };
    let per: f64 = match unit {
        "s" | "sec" => 1.0,
        "m" | "min" => 1.0 / 60.0,
        "ms" => 1000.0,
        other => {
            return Err(format!(
                "rate {s:?}: unknown unit {other:?} (expected /s, /m or /ms, e.g. 5000/s)"
            ))
        }
    };
    let value: f64 = n
        .replace('_', "")
        .parse()
        .map_err(|_| format!("rate {s:?}: {n:?} is not a number (expected e.g. 5000/s)"))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("rate {s:?}: must be more than 0"));
    }
    Ok(value * per)
}

/// Parses `100..10000/s`, optionally followed by `over 60s`; without it the ramp spans the
/// whole run (`default_over`).
pub fn parse_ramp(s: &str, default_over: Duration) -> Result<Rate, String> {
    let (range, over) = match s.split_once(" over ") {
        Some((r, o)) => (
            r.trim(),
            humantime::parse_duration(o.trim())
                .map_err(|e| format!("ramp {s:?}: {o:?} is not a duration: {e}"))?,
        ),
        None => (s.trim(), default_over),
    };
    let (from, to) = range.split_once("..").ok_or_else(|| {
        format!("ramp {s:?}: expected FROM..TO/s [over DURATION], e.g. '100..10000/s over 60s'")
    })?;
    let unit = to.split_once('/').map(|(_, u)| u.trim()).unwrap_or("s");
    let to = parse_rate(to)?;
    // FROM may carry its own unit (`1/ms..2/ms`); without one it takes TO's. 0 is allowed:
    // a ramp may start from nothing.
    let from = from.trim();
    let from_with_unit = if from.contains('/') {
        from.to_string()
    } else {
        format!("{from}/{unit}")
    };
    let from = match from_with_unit.split_once('/') {
        Some((n, _)) if n.trim().parse::<f64>() == Ok(0.0) => 0.0,
        _ => parse_rate(&from_with_unit)?,
    };
    if over.is_zero() {
        return Err(format!("ramp {s:?}: its duration must be more than 0"));
    }
    Ok(Rate { from, to, over })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_rate_spaces_requests_evenly() {
        let r = Rate::constant(1000.0);
        assert_eq!(r.time_of(0), Some(0.0));
        assert!((r.time_of(500).unwrap() - 0.5).abs() < 1e-12);
        assert!((r.due_by(2.0) - 2000.0).abs() < 1e-9);
    }

    #[test]
    fn a_ramp_is_the_inverse_of_its_integral_up_and_down() {
        for (from, to) in [
            (100.0, 10_000.0),
            (10_000.0, 100.0),
            (0.0, 50.0),
            (7.0, 7.0000001),
        ] {
            let r = Rate {
                from,
                to,
                over: Duration::from_secs(60),
            };
            let total = r.due_by(90.0) as u64;
            let mut last = -1.0;
            for i in (0..total).step_by((total / 997).max(1) as usize) {
                let t = r.time_of(i).unwrap();
                assert!(t > last, "{from}..{to}: not increasing at {i}");
                assert!(
                    (r.due_by(t) - i as f64).abs() < 1e-6 * (i as f64).max(1.0),
                    "{from}..{to} at {i}"
                );
                last = t;
            }
        }
    }

    #[test]
    fn a_ramp_moves_the_rate_linearly_then_holds() {
        let r = parse_ramp("100..10000/s over 60s", Duration::ZERO).unwrap();
        assert_eq!(
            (r.at(0.0), r.at(30.0), r.at(60.0), r.at(600.0)),
            (100.0, 5050.0, 10_000.0, 10_000.0)
        );
        let r = parse_ramp("0..50/s", Duration::from_secs(10)).unwrap();
        assert_eq!((r.from, r.to, r.over), (0.0, 50.0, Duration::from_secs(10)));
        let r = parse_ramp("1/ms..2/ms over 1m", Duration::ZERO).unwrap();
        assert_eq!(
            (r.from, r.to, r.over),
            (1000.0, 2000.0, Duration::from_secs(60))
        );
        let r = parse_ramp("120/m..10/s", Duration::from_secs(1)).unwrap();
        assert_eq!((r.from, r.to), (2.0, 10.0));
        assert_eq!(
            parse_ramp("0/s..50/s", Duration::from_secs(1))
                .unwrap()
                .from,
            0.0
        );
    }

    #[test]
    fn rates_parse_with_units_and_bad_ones_say_why() {
        assert_eq!(parse_rate("5000/s").unwrap(), 5000.0);
        assert_eq!(parse_rate("120/m").unwrap(), 2.0);
        assert_eq!(parse_rate("2/ms").unwrap(), 2000.0);
        assert_eq!(parse_rate("10_000").unwrap(), 10_000.0);
        assert!(parse_rate("fast").unwrap_err().contains("not a number"));
        assert!(parse_rate("5/h").unwrap_err().contains("unknown unit"));
        assert!(parse_rate("0/s").unwrap_err().contains("more than 0"));
        assert!(parse_ramp("100-200/s", Duration::ZERO)
            .unwrap_err()
            .contains("FROM..TO"));
        assert!(parse_ramp("1..2/s", Duration::ZERO)
            .unwrap_err()
            .contains("more than 0"));
    }
}
