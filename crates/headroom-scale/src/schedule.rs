//! `schedule`: raise a service's `min` during known busy hours, as KEDA's cron scaler does
//! (`start` and `end` cron expressions and a replica count).
//!
//! Written here rather than taken from a crate: the maintained cron crates bring a calendar
//! library (chrono) for what is five small fields matched against a civil minute. The
//! expressions are the classic five fields — minute (0–59), hour (0–23), day of month
//! (1–31), month (1–12), day of week (0–7, 0 and 7 Sunday) — each `*`, a number, a range
//! `a-b`, a step `*/n` or `a-b/n`, or a list of those; numbers only (no `MON`/`JAN`). As in
//! cron, when both day fields are restricted a day matches either. Times are UTC shifted by
//! a fixed offset (no time-zone database: daylight-saving changes are the user's).

/// One field's allowed values, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field {
    bits: u64,
    /// `*` (or `*/1`): for the day fields' either-or rule.
    any: bool,
}

impl Field {
    fn parse(text: &str, lo: u32, hi: u32, name: &str) -> Result<Field, String> {
        let mut bits = 0u64;
        let mut any = false;
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step: u32 =
                        s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                            format!("{name}: step \"{s}\" is not a number above 0")
                        })?;
                    (r, step)
                }
                None => (part, 1),
            };
            let (a, b) = if range == "*" {
                any |= step == 1;
                (lo, hi)
            } else if let Some((a, b)) = range.split_once('-') {
                (num(a, lo, hi, name)?, num(b, lo, hi, name)?)
            } else {
                let a = num(range, lo, hi, name)?;
                // `5/15`: from 5 to the end, every 15 (as Vixie cron reads it).
                (a, if step > 1 { hi } else { a })
            };
            if a > b {
                return Err(format!("{name}: range {a}-{b} runs backwards"));
            }
            let mut v = a;
            while v <= b {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok(Field { bits, any })
    }

    fn has(&self, v: u32) -> bool {
        self.bits & (1 << v) != 0
    }
}

fn num(s: &str, lo: u32, hi: u32, name: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .ok()
        .filter(|v| (lo..=hi).contains(v))
        .ok_or_else(|| format!("{name}: \"{s}\" is not a number from {lo} to {hi}"))
}

/// A five-field cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minute: Field,
    hour: Field,
    dom: Field,
    month: Field,
    dow: Field,
}

impl Cron {
    /// Parses `"0 8 * * 1-5"`; the error names the field and what it expected.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let f: Vec<&str> = text.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!(
                "expected five fields (minute hour day-of-month month day-of-week), like \"0 8 * * 1-5\"; got {}",
                f.len()
            ));
        }
        let mut dow = Field::parse(f[4], 0, 7, "day of week")?;
        if dow.has(7) {
            dow.bits |= 1; // 7 is Sunday too
        }
        Ok(Cron {
            minute: Field::parse(f[0], 0, 59, "minute")?,
            hour: Field::parse(f[1], 0, 23, "hour")?,
            dom: Field::parse(f[2], 1, 31, "day of month")?,
            month: Field::parse(f[3], 1, 12, "month")?,
            dow,
        })
    }

    /// True when the civil minute starting at `minute` (minutes since the Unix epoch, in
    /// the schedule's local time) matches.
    pub fn matches(&self, minute: i64) -> bool {
        let days = minute.div_euclid(1440);
        let in_day = minute.rem_euclid(1440) as u32;
        let (_, month, day) = headroom_telemetry::civil_from_days(days);
        // 1970-01-01 was a Thursday (4).
        let weekday = (days + 4).rem_euclid(7) as u32;
        let day_ok = match (self.dom.any, self.dow.any) {
            (true, true) => true,
            (true, false) => self.dow.has(weekday),
            (false, true) => self.dom.has(day),
            (false, false) => self.dom.has(day) || self.dow.has(weekday),
        };
        self.minute.has(in_day % 60)
            && self.hour.has(in_day / 60)
            && self.month.has(month)
            && day_ok
    }

    /// The latest matching minute at or before `minute`, looking back at most `within`
    /// minutes.
    fn last_at_or_before(&self, minute: i64, within: i64) -> Option<i64> {
        (0..=within)
            .map(|back| minute - back)
            .find(|m| self.matches(*m))
    }
}

/// One window: from each `start` to the next `end`, `min` is at least `replicas`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start: Cron,
    pub end: Cron,
    pub replicas: u32,
    /// Minutes east of UTC the expressions are read in.
    pub utc_offset_minutes: i32,
}

/// How far back a window's start and end are looked for: a weekly schedule's start is at
/// most a week old.
const LOOK_BACK_MINUTES: i64 = 8 * 1440;

impl Window {
    /// True when `unix_secs` is within a window: its latest start is later than its latest
    /// end (a start and an end on the same minute: the window is closed).
    pub fn active(&self, unix_secs: i64) -> bool {
        let local = unix_secs.div_euclid(60) + i64::from(self.utc_offset_minutes);
        let Some(start) = self.start.last_at_or_before(local, LOOK_BACK_MINUTES) else {
            return false;
        };
        match self.end.last_at_or_before(local, LOOK_BACK_MINUTES) {
            Some(end) => start > end,
            None => true,
        }
    }
}

/// The `min` in force at `unix_secs`: the configured one, raised by the active windows.
pub fn min_at(base: u32, windows: &[Window], unix_secs: i64) -> u32 {
    windows
        .iter()
        .filter(|w| w.active(unix_secs))
        .map(|w| w.replicas)
        .fold(base, u32::max)
}

/// `"+02:00"`, `"-05:30"`, `"UTC"`, `"Z"` → minutes east of UTC.
pub fn parse_utc_offset(text: &str) -> Result<i32, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" {
        return Ok(0);
    }
    let bad = || {
        format!(
            "\"{text}\" is not a UTC offset: expected one like \"+02:00\", \"-05:30\" or \"UTC\""
        )
    };
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 60 + m))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-02 (a Wednesday) at `hh:mm` UTC, in Unix seconds.
    fn at(hh: i64, mm: i64) -> i64 {
        // 2026-12-02 is day 20,789 since the epoch.
        20_789 * 86_400 + hh * 3600 + mm * 60
    }

    #[test]
    fn fields_parse_ranges_steps_and_lists() {
        let c = Cron::parse("*/15 8-18/2 * * 1,3,5").unwrap();
        assert!(c.matches(at(8, 0) / 60), "Wednesday 08:00");
        assert!(c.matches(at(10, 45) / 60));
        assert!(!c.matches(at(9, 0) / 60), "9 is not in 8-18/2");
        assert!(!c.matches(at(8, 10) / 60), "10 is not a quarter");
        assert!(!c.matches((at(8, 0) + 86_400) / 60), "Thursday");
        let sunday = Cron::parse("0 0 * * 7").unwrap();
        // 2026-12-06 is a Sunday.
        assert!(sunday.matches((at(0, 0) + 4 * 86_400) / 60));
    }

    #[test]
    fn bad_expressions_say_which_field() {
        let err = |t| Cron::parse(t).unwrap_err();
        assert!(err("0 8 * *").contains("expected five fields"));
        assert!(err("60 8 * * *").starts_with("minute: \"60\" is not a number from 0 to 59"));
        assert!(err("0 8 * * MON").starts_with("day of week"));
        assert!(err("0 18-8 * * *").contains("runs backwards"));
        assert!(err("*/0 * * * *").contains("step"));
    }

    /// Cron's rule: when both day fields are restricted, either matches.
    #[test]
    fn restricted_day_fields_match_either() {
        let c = Cron::parse("0 0 1 * 3").unwrap();
        assert!(c.matches(at(0, 0) / 60), "a Wednesday, not the 1st");
        assert!(c.matches((at(0, 0) - 86_400) / 60), "the 1st, a Tuesday");
        assert!(!c.matches((at(0, 0) + 86_400) / 60), "Thursday the 3rd");
    }

    /// Weekdays from 08:00 to 18:00: raised within, not before, not after, not at the
    /// weekend; an offset moves it.
    #[test]
    fn a_window_runs_from_its_start_to_its_end() {
        let w = Window {
            start: Cron::parse("0 8 * * 1-5").unwrap(),
            end: Cron::parse("0 18 * * 1-5").unwrap(),
            replicas: 3,
            utc_offset_minutes: 0,
        };
        assert!(!w.active(at(7, 59)));
        assert!(w.active(at(8, 0)));
        assert!(w.active(at(17, 59)));
        assert!(!w.active(at(18, 0)));
        // Saturday noon: Friday's window ended at 18:00.
        assert!(!w.active(at(12, 0) + 3 * 86_400));
        assert_eq!(min_at(1, std::slice::from_ref(&w), at(9, 0)), 3);
        assert_eq!(
            min_at(4, std::slice::from_ref(&w), at(9, 0)),
            4,
            "never lowers min"
        );
        assert_eq!(min_at(1, std::slice::from_ref(&w), at(19, 0)), 1);
        let east = Window {
            utc_offset_minutes: 120,
            ..w
        };
        assert!(east.active(at(6, 0)), "08:00 at UTC+2");
        assert!(!east.active(at(16, 0)), "18:00 at UTC+2");
    }

    #[test]
    fn utc_offsets() {
        assert_eq!(parse_utc_offset("+02:00"), Ok(120));
        assert_eq!(parse_utc_offset("-05:30"), Ok(-330));
        assert_eq!(parse_utc_offset("UTC"), Ok(0));
        assert!(parse_utc_offset("CET").is_err());
    }
}
