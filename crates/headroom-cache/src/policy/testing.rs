//! What the policy's unit tests share: a header map from pairs, and times around a fixed
//! instant.

use http::{HeaderMap, HeaderName, HeaderValue};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A header map from `(name, value)` pairs, in order (repeated names appended).
pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// `secs` after a fixed instant (2023-11-14).
pub fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

/// [`t`] as an HTTP date.
pub fn date(secs: u64) -> String {
    httpdate::fmt_http_date(t(secs))
}
