//! The two line formats: JSON, and Apache/nginx "combined" with nginx's escaping.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How access log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    /// Apache/nginx "combined", then headroom's fields as `key=value`.
    Combined,
}

/// Everything one access log line says about a request.
#[derive(Debug)]
pub struct Entry<'a> {
    pub time: SystemTime,
    pub request_id: &'a str,
    pub client: IpAddr,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    pub route: &'a str,
    pub service: &'a str,
    pub replica: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
    pub upstream_duration: Option<Duration>,
    pub attempts: u32,
    /// What the route's cache did (`HIT`, `MISS`, `STALE`, ...); empty without a cache.
    pub cache: &'a str,
    /// What the guard decided when it answered (`limited`, `unavailable`); empty when it
    /// let the request on or the route has no guard.
    pub guard: &'a str,
    /// The authenticated consumer; empty when none.
    pub consumer: &'a str,
    pub user_agent: &'a str,
    pub referer: &'a str,
}

/// Renders one line (with its newline) onto `out`.
pub fn format_entry(out: &mut String, format: Format, e: &Entry) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    match format {
        Format::Json => {
            out.push_str("{\"time\":\"");
            rfc3339(out, e.time);
            out.push_str("\",\"request_id\":");
            json_str(out, e.request_id);
            let _ = write!(out, ",\"client\":\"{}\",\"method\":", e.client);
            json_str(out, e.method);
            out.push_str(",\"host\":");
            json_str(out, e.host);
            out.push_str(",\"path\":");
            json_str(out, e.path);
            out.push_str(",\"protocol\":");
            json_str(out, e.protocol);
            out.push_str(",\"route\":");
            json_str(out, e.route);
            out.push_str(",\"service\":");
            json_str(out, e.service);
            out.push_str(",\"replica\":");
            json_str(out, e.replica);
            let _ = write!(
                out,
                ",\"status\":{},\"bytes\":{},\"duration_ms\":{:.3},\"upstream_ms\":",
                e.status,
                e.bytes,
                ms(e.duration)
            );
            match e.upstream_duration {
                Some(d) => {
                    let _ = write!(out, "{:.3}", ms(d));
                }
                None => out.push_str("null"),
            }
            let _ = write!(out, ",\"attempts\":{}", e.attempts);
            if !e.cache.is_empty() {
                out.push_str(",\"cache\":\"");
                out.push_str(e.cache);
                out.push('"');
            }
            if !e.guard.is_empty() {
                out.push_str(",\"guard\":\"");
                out.push_str(e.guard);
                out.push('"');
            }
            if !e.consumer.is_empty() {
                out.push_str(",\"consumer\":");
                json_str(out, e.consumer);
            }
            out.push_str(",\"user_agent\":");
            json_str(out, e.user_agent);
            out.push_str("}\n");
        }
        Format::Combined => {
            // Every value a client or the config supplies is escaped (see `clf_str`), so a
            // line is one line and its fields are where a parser looks for them.
            let _ = write!(out, "{} - - [", e.client);
            clf_time(out, e.time);
            out.push_str("] \"");
            clf_str(out, e.method, Quoted::Yes);
            out.push(' ');
            clf_str(out, e.path, Quoted::Yes);
            let _ = write!(out, " {}\" {} {} \"", e.protocol, e.status, e.bytes);
            clf_str(out, e.referer, Quoted::Yes);
            out.push_str("\" \"");
            clf_str(out, e.user_agent, Quoted::Yes);
            out.push_str("\" request_id=");
            clf_str(out, e.request_id, Quoted::No);
            out.push_str(" route=");
            clf_str(out, e.route, Quoted::No);
            out.push_str(" replica=");
            clf_str(out, e.replica, Quoted::No);
            if !e.cache.is_empty() {
                out.push_str(" cache=");
                out.push_str(e.cache);
            }
            if !e.guard.is_empty() {
                out.push_str(" guard=");
                out.push_str(e.guard);
            }
            if !e.consumer.is_empty() {
                out.push_str(" consumer=");
                clf_str(out, e.consumer, Quoted::No);
            }
            let _ = writeln!(out, " duration_ms={:.3}", ms(e.duration));
        }
    }
}

/// Whether a combined-format value sits between quotes or bare after `key=`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quoted {
    Yes,
    No,
}

/// Appends `s` as nginx's `log_format escape=default` does: `"`, `\`, control bytes
/// (below 0x20, and 0x7f) and every byte of 0x80 and above as `\xHH` (upper-case hex).
/// Non-ASCII is escaped byte by byte too, as nginx does: the line stays ASCII, and a
/// terminal or log viewer shown a hostile value sees its bytes, not what they render as.
/// A bare (`key=value`) value also has its spaces escaped, so it cannot forge a field.
/// An empty value is `-`.
fn clf_str(out: &mut String, s: &str, quoted: Quoted) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if s.is_empty() {
        out.push('-');
        return;
    }
    let escape = |b: u8| {
        !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\' || (b == b' ' && quoted == Quoted::No)
    };
    let bytes = s.as_bytes();
    let mut clean_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if escape(b) {
            // A run between escaped bytes is ASCII, so it starts and ends on characters.
            if clean_from < i {
                out.push_str(&s[clean_from..i]);
            }
            out.push_str("\\x");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
            clean_from = i + 1;
        }
    }
    out.push_str(&s[clean_from..]);
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`); also used for the alerts' RFC 3339 times (headroom-watch).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn split_time(t: SystemTime) -> ((i64, u32, u32), u64, u32) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    (
        civil_from_days((secs / 86_400) as i64),
        secs % 86_400,
        since.subsec_millis(),
    )
}

fn rfc3339(out: &mut String, t: SystemTime) {
    let ((y, m, d), s, ms) = split_time(t);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
}

fn clf_time(out: &mut String, t: SystemTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let ((y, m, d), s, _) = split_time(t);
    let _ = write!(
        out,
        "{d:02}/{}/{y:04}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        s / 3600,
        s / 60 % 60,
        s % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            time: UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
            request_id: "abc",
            client: "127.0.0.1".parse().unwrap(),
            method: "GET",
            host: "example.com",
            path: "/a\"b",
            protocol: "HTTP/1.1",
            route: "api",
            service: "catalog",
            replica: "127.0.0.1:9001",
            status: 200,
            bytes: 12,
            duration: Duration::from_micros(1500),
            upstream_duration: Some(Duration::from_millis(1)),
            attempts: 1,
            cache: "",
            guard: "",
            consumer: "",
            user_agent: "curl/8",
            referer: "",
        }
    }

    #[test]
    fn json_line_is_valid_json_with_every_field() {
        let mut s = String::new();
        format_entry(&mut s, Format::Json, &entry());
        assert!(s.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(s.trim()).unwrap();
        assert_eq!(v["path"], "/a\"b");
        assert_eq!(v["status"], 200);
        assert_eq!(v["replica"], "127.0.0.1:9001");
        assert_eq!(v["time"], "2026-11-18T11:06:40.123Z");
        assert_eq!(v["duration_ms"], 1.5);
    }

    #[test]
    fn combined_line_follows_the_clf_layout() {
        let mut s = String::new();
        let e = Entry {
            path: "/a/b?c=1",
            ..entry()
        };
        format_entry(&mut s, Format::Combined, &e);
        assert_eq!(
            s,
            "127.0.0.1 - - [18/Nov/2026:11:06:40 +0000] \"GET /a/b?c=1 HTTP/1.1\" 200 12 \"-\" \"curl/8\" request_id=abc route=api replica=127.0.0.1:9001 duration_ms=1.500\n"
        );
    }

    /// A hostile path and user agent cannot end the line, close a quoted field early, send
    /// terminal escapes or forge a `key=value` field: they are escaped as nginx does.
    #[test]
    fn combined_line_escapes_client_values_as_nginx_does() {
        let mut s = String::new();
        let e = Entry {
            path: "/a\"b\\c\nd",
            user_agent: "x\" \x1b[31mred\x7f\tnaïve",
            referer: "\r\n127.0.0.1 - - [forged]",
            request_id: "id route=forged",
            method: "G\"T",
            ..entry()
        };
        format_entry(&mut s, Format::Combined, &e);
        assert_eq!(s.matches('\n').count(), 1, "{s}");
        assert!(s.ends_with('\n') && s.is_ascii(), "{s}");
        assert!(
            s.contains(r#" "G\x22T /a\x22b\x5Cc\x0Ad HTTP/1.1" "#),
            "{s}"
        );
        assert!(
            s.contains(
                r#" "\x0D\x0A127.0.0.1 - - [forged]" "x\x22 \x1B[31mred\x7F\x09na\xC3\xAFve" "#
            ),
            "{s}"
        );
        assert!(
            s.contains(r" request_id=id\x20route=forged route=api "),
            "{s}"
        );
        // Exactly the six quotes of the three quoted fields are left unescaped.
        assert_eq!(s.matches('"').count(), 6, "{s}");
    }

    #[test]
    fn combined_escaping_keeps_clean_values_and_marks_empty_ones() {
        let mut s = String::new();
        clf_str(&mut s, "", Quoted::Yes);
        clf_str(&mut s, "/plain/path?q=a b", Quoted::Yes);
        clf_str(&mut s, "é", Quoted::Yes);
        clf_str(&mut s, "aé\"", Quoted::No);
        assert_eq!(s, r#"-/plain/path?q=a b\xC3\xA9a\xC3\xA9\x22"#);
    }

    #[test]
    fn civil_dates_cross_leap_years() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_417), (2023, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
