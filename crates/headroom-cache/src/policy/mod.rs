//! The HTTP caching policy of a shared cache (RFC 9111, with RFC 9110 for
//! conditional and range requests, RFC 5861 for stale-while-revalidate and
//! stale-if-error): pure functions over `http` types.
//!
//! Nothing here does I/O or reads the clock: times come in as arguments, so
//! every decision is deterministic and tested as a specification. The
//! functions the edge calls on each hit ([`RequestDirectives::parse`],
//! [`usable`], [`not_modified`], [`range()`], [`vary_values`]) do not allocate;
//! a request without Cache-Control or Pragma costs two header lookups to parse.
//!
//! How the edge uses it:
//! - **lookup**: [`RequestDirectives::parse`] the request; key the entry with
//!   [`vary_values`] of the stored [`Vary`]; [`current_age`] of the entry and
//!   [`usable`] decide between a hit, a stale hit with background refresh, and
//!   a revalidation (with [`validators`]); [`not_modified`] and [`range()`] shape
//!   the answer (304 with [`not_modified_headers`], 206, 416).
//! - **forward** failed: [`stale_if_error`] says whether the stale entry may answer.
//! - **respond**: [`storable`] gives a miss's [`Freshness`] or why it is not
//!   stored ([`NotStorable::as_str`]); [`initial_age`] dates it; a 304 from
//!   upstream that [`matches_stored`] is merged with [`freshen`]; an unsafe
//!   method's success lists the paths to drop with [`invalidated`].

pub mod conditional;
pub mod directives;
pub mod freshness;
pub mod invalidate;
// Private: its one function, `range`, is re-exported (a public module of the same
// name would make `policy::range` ambiguous in docs).
mod range;
pub mod reuse;
#[cfg(test)]
mod testing;
pub mod vary;

pub use conditional::{
    etag, freshen, matches_stored, not_modified, not_modified_headers, validators, EntityTag,
};
pub use directives::{RequestDirectives, ResponseDirectives, DELTA_SECONDS_MAX};
pub use freshness::{
    current_age, heuristically_cacheable, initial_age, stale_if_error, storable, usable, Freshness,
    NotStorable, StoreOptions, Use,
};
pub use invalidate::invalidated;
pub use range::{range, RangeAnswer};
pub use vary::{vary, vary_values, Vary};

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;
    use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// Values that have broken parsers elsewhere: empty, lone quotes and
    /// escapes, separators only, huge numbers, obs-text, half dates.
    const JUNK: &[&[u8]] = &[
        b"",
        b" ",
        b"\"",
        b"\\",
        b"\"\\",
        b"W/",
        b"W/\"",
        b",",
        b",,=,,",
        b"=",
        b"-",
        b"--",
        b"*",
        b"bytes=",
        b"bytes=-",
        b"bytes=-99999999999999999999999",
        b"bytes=99999999999999999999999-1",
        b"bytes=0-0,",
        b"max-age=99999999999999999999999999999999",
        b"max-stale=\"",
        b"Sun, 06 Nov 1994",
        b"Thu, 01 Jan 1970 00:00:00 GMT",
        b"Fri, 31 Dec 9999 23:59:59 GMT",
        b"\xff\xfe\x80",
        b"//",
        b"http://",
        b"http://[::1",
        b"../../../..",
        b"?",
        b"#",
    ];

    const FIELDS: &[&str] = &[
        "cache-control",
        "pragma",
        "age",
        "date",
        "expires",
        "last-modified",
        "etag",
        "vary",
        "if-none-match",
        "if-modified-since",
        "if-range",
        "range",
        "authorization",
        "set-cookie",
        "location",
        "content-location",
        "connection",
    ];

    fn all_fields(value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        let value = HeaderValue::from_bytes(value).unwrap();
        for f in FIELDS {
            h.append(HeaderName::from_static(f), value.clone());
            h.append(HeaderName::from_static(f), value.clone());
        }
        h
    }

    // No input panics: every function over every junk value in every field,
    // as request and as stored response, at clock extremes.
    #[test]
    fn no_function_panics_on_junk_headers() {
        let uri: Uri = "/a/b?c".parse().unwrap();
        let times = [UNIX_EPOCH, UNIX_EPOCH + Duration::from_secs(1 << 40)];
        let ttls = [(500, Duration::MAX)];
        let opts = StoreOptions {
            status_ttls: &ttls,
            heuristic_fraction: f64::MAX,
            ..Default::default()
        };
        for a in JUNK {
            for b in JUNK {
                let (req, resp) = (all_fields(a), all_fields(b));
                let rd = RequestDirectives::parse(&req);
                let _ = ResponseDirectives::parse(&resp);
                for now in times {
                    for status in [200, 206, 304, 404, 500] {
                        let status = StatusCode::from_u16(status).unwrap();
                        if let Ok(f) = storable(&Method::GET, &req, status, &resp, &opts, now) {
                            for age in [Duration::ZERO, Duration::MAX] {
                                let _ = usable(&rd, &f, age);
                                let _ = stale_if_error(&rd, &f, age);
                            }
                        }
                    }
                    let age = initial_age(&resp, now, SystemTime::UNIX_EPOCH);
                    let _ = current_age(age, now, UNIX_EPOCH);
                }
                let _ = not_modified(&req, &resp);
                let _ = not_modified_headers(&resp);
                for len in [0, 1, u64::MAX] {
                    let _ = range(&Method::GET, &req, &resp, len);
                }
                let mut upstream = req.clone();
                validators(&resp, &mut upstream);
                let mut stored = resp.clone();
                if matches_stored(&stored, &req) {
                    freshen(&mut stored, &req);
                }
                if let Vary::Fields(fields) = vary(&resp) {
                    vary_values(&fields, &req, &mut Vec::new());
                }
                let _ = invalidated(&Method::POST, StatusCode::OK, &uri, "example.com", &resp);
                let _ = invalidated(&Method::POST, StatusCode::OK, &uri, "[::1", &resp);
            }
        }
    }
}
