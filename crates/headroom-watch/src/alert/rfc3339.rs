//! RFC 3339 timestamps in UTC, written as Go's `time.Time` marshals them to JSON.

use headroom_telemetry::civil_from_days;
use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Go's zero `time.Time`, which Alertmanager writes as the `endsAt` of a firing alert.
pub(crate) const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// `t` in UTC as RFC 3339 with the fraction Go's `RFC3339Nano` writes: none for a whole
/// second (`2026-12-02T05:13:34Z`), otherwise up to nine digits without trailing zeros
/// (`2026-12-02T05:13:34.5Z`). Times before 1970 are written too. Cost: one small string.
pub fn rfc3339(t: SystemTime) -> String {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(before) => {
            let d = before.duration();
            let (s, n) = (d.as_secs() as i64, d.subsec_nanos());
            if n == 0 {
                (-s, 0)
            } else {
                (-s - 1, 1_000_000_000 - n)
            }
        }
    };
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
    if nanos != 0 {
        let mut digits = format!("{nanos:09}");
        while digits.ends_with('0') {
            digits.pop();
        }
        let _ = write!(out, ".{digits}");
    }
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn whole_seconds_have_no_fraction() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_188_414);
        assert_eq!(rfc3339(t), "2026-12-02T05:13:34Z");
    }

    #[test]
    fn fractions_drop_trailing_zeros_as_go_does() {
        let t = UNIX_EPOCH + Duration::new(1_796_188_414, 500_000_000);
        assert_eq!(rfc3339(t), "2026-12-02T05:13:34.5Z");
        let t = UNIX_EPOCH + Duration::new(0, 1);
        assert_eq!(rfc3339(t), "1970-01-01T00:00:00.000000001Z");
    }

    #[test]
    fn leap_days_and_times_before_1970_are_written() {
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
        let before = UNIX_EPOCH - Duration::new(1, 500_000_000);
        assert_eq!(rfc3339(before), "1969-12-31T23:59:58.5Z");
    }
}
