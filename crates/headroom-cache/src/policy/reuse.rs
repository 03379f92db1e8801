//! How old is a stored response, and may it answer a request without going
//! upstream (RFC 9111 §4.2.3, §4.2.4, §5.2.1; RFC 5861)? Runs on every hit: plain
//! arithmetic over [`Freshness`] and [`RequestDirectives`], no allocation.

use std::time::{Duration, SystemTime};

use http::header::{AGE, DATE};
use http::HeaderMap;

use super::directives::{delta_seconds, RequestDirectives};
use super::freshness::{header_date, Freshness};

/// §4.2.3: the corrected initial age of a response received at
/// `response_time` for a request sent at `request_time`:
/// `max(response_time − Date, Age + (response_time − request_time))`.
/// A Date in the future counts as zero apparent age; an absent or invalid Age
/// as zero; Age saturates at 2^31 s. Clocks going backwards never panic.
pub fn initial_age(
    resp: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let apparent = header_date(resp, DATE)
        .and_then(|date| response_time.duration_since(date).ok())
        .unwrap_or(Duration::ZERO);
    let age_value = resp
        .get(AGE)
        .and_then(|v| delta_seconds(v.as_bytes()))
        .map_or(Duration::ZERO, Duration::from_secs);
    let delay = response_time
        .duration_since(request_time)
        .unwrap_or(Duration::ZERO);
    apparent.max(age_value.saturating_add(delay))
}

/// §4.2.3: current age = corrected initial age + time resident in the cache.
pub fn current_age(initial_age: Duration, response_time: SystemTime, now: SystemTime) -> Duration {
    initial_age.saturating_add(now.duration_since(response_time).unwrap_or(Duration::ZERO))
}

/// How a stored response may answer a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Fresh: answer from the cache.
    Fresh,
    /// Stale, but the request's max-stale accepts it (§5.2.1.2).
    StaleAllowed,
    /// Stale within stale-while-revalidate: serve now, refresh in the background (RFC 5861 §3).
    StaleWhileRevalidate,
    /// Go upstream (conditionally, when the stored response has validators).
    Revalidate,
}

/// Can a stored response with `f`, now `age` old, answer this request without
/// going upstream (§4.2, §4.2.4, §5.2.1)? Request no-cache, an age over the
/// request's max-age, or less than min-fresh remaining force a revalidation; a
/// stale response is served only when neither no-cache nor must-revalidate
/// forbids it (§4.2.4) and max-stale or stale-while-revalidate allows it. A
/// request with max-age or min-fresh does not want stale content (§5.2.1.1),
/// so only its max-stale can let one through. Cost: a few comparisons.
pub fn usable(req: &RequestDirectives, f: &Freshness, age: Duration) -> Use {
    if req.no_cache {
        return Use::Revalidate;
    }
    if req
        .max_age
        .is_some_and(|max| age > Duration::from_secs(max))
    {
        return Use::Revalidate;
    }
    if f.no_cache {
        return Use::Revalidate;
    }
    if age < f.lifetime {
        let remaining = f.lifetime - age;
        if req
            .min_fresh
            .is_some_and(|min| remaining < Duration::from_secs(min))
        {
            return Use::Revalidate;
        }
        return Use::Fresh;
    }
    if f.must_revalidate {
        return Use::Revalidate;
    }
    let staleness = age - f.lifetime;
    match req.max_stale {
        Some(None) => return Use::StaleAllowed,
        Some(Some(max)) if staleness <= Duration::from_secs(max) => return Use::StaleAllowed,
        _ => {}
    }
    let wants_fresh = req.max_age.is_some() || req.min_fresh.is_some();
    if !wants_fresh && within(staleness, f.stale_while_revalidate) {
        return Use::StaleWhileRevalidate;
    }
    Use::Revalidate
}

/// On an upstream error, timeout or no healthy replica: may the stored
/// response be served instead (RFC 5861 §4)? Allowed up to the larger of the
/// response's (or the default) and the request's stale-if-error, never with
/// no-cache or must-revalidate (§4.2.4; must-revalidate asks for a 504, §5.2.2.2).
/// A request no-cache refuses it unless that request also sends stale-if-error.
pub fn stale_if_error(req: &RequestDirectives, f: &Freshness, age: Duration) -> bool {
    if f.no_cache || f.must_revalidate {
        return false;
    }
    if req.no_cache && req.stale_if_error.is_none() {
        return false;
    }
    let allowance = req.stale_if_error.map_or(f.stale_if_error, |s| {
        f.stale_if_error.max(Duration::from_secs(s))
    });
    match age.checked_sub(f.lifetime) {
        None => true,
        Some(staleness) => within(staleness, allowance),
    }
}

/// Staleness within a non-zero allowance ("up to n seconds", inclusive).
fn within(staleness: Duration, allowance: Duration) -> bool {
    !allowance.is_zero() && staleness <= allowance
}

#[cfg(test)]
mod tests;
