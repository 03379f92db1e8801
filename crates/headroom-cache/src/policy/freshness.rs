//! May a response be stored, and for how long is it fresh (RFC 9111 §3, §3.5, §4.2.1,
//! §4.2.2)? Runs once per miss. Reuse (age, [`usable`], [`stale_if_error`]) is in
//! [`reuse`](super::reuse), re-exported here.

use std::time::{Duration, SystemTime};

use http::header::{AUTHORIZATION, DATE, ETAG, EXPIRES, LAST_MODIFIED, SET_COOKIE};
use http::{HeaderMap, Method, StatusCode};

use super::directives::{has_directive, RequestDirectives, ResponseDirectives};
pub use super::reuse::{current_age, initial_age, stale_if_error, usable, Use};
use super::vary::{vary, Vary};

/// What a route's page rules change about storing (defaults: the RFC's behaviour,
/// heuristic freshness 10 % of the age since Last-Modified capped at 24 h, no
/// stale serving beyond what the origin allows).
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions<'a> {
    /// A page rule's ttl: this freshness lifetime replaces the origin's. It does
    /// not make a status storable on its own (a 500 without explicit freshness
    /// stays unstored; list it in `status_ttls` for that).
    pub ttl_override: Option<Duration>,
    /// Ignore the origin's no-store, no-cache, private, must-revalidate,
    /// proxy-revalidate and s-maxage's revalidation requirement. Set-Cookie and
    /// Authorization have their own switches; Vary: * is never stored.
    pub ignore_origin: bool,
    /// Lifetimes by status when the origin gives no explicit freshness (e.g.
    /// 404 for 30 s); a status listed here is storable even if it is not
    /// heuristically cacheable.
    pub status_ttls: &'a [(u16, Duration)],
    /// Store responses to requests with Authorization (§3.5 otherwise requires
    /// public, s-maxage or must-revalidate).
    pub allow_authorization: bool,
    /// Store responses carrying Set-Cookie (default: not stored, so one
    /// client's cookie is never handed to another).
    pub allow_set_cookie: bool,
    /// Heuristic freshness as a fraction of (Date − Last-Modified), §4.2.2. Default 0.1.
    pub heuristic_fraction: f64,
    /// Upper bound of heuristic freshness. Default 24 h.
    pub heuristic_cap: Duration,
    /// stale-while-revalidate when the origin sends none. Default 0.
    pub default_stale_while_revalidate: Duration,
    /// stale-if-error when the origin sends none. Default 0.
    pub default_stale_if_error: Duration,
}

impl Default for StoreOptions<'_> {
    fn default() -> Self {
        StoreOptions {
            ttl_override: None,
            ignore_origin: false,
            status_ttls: &[],
            allow_authorization: false,
            allow_set_cookie: false,
            heuristic_fraction: 0.1,
            heuristic_cap: Duration::from_secs(24 * 3600),
            default_stale_while_revalidate: Duration::ZERO,
            default_stale_if_error: Duration::ZERO,
        }
    }
}

/// How a stored response may be reused, decided once when it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Freshness lifetime (§4.2.1); zero means stale at once.
    pub lifetime: Duration,
    /// How long past its lifetime it may be served while refreshed in the background.
    pub stale_while_revalidate: Duration,
    /// How long past its lifetime it may be served when the upstream fails.
    pub stale_if_error: Duration,
    /// must-revalidate, proxy-revalidate or s-maxage (§5.2.2.2, §5.2.2.8,
    /// §5.2.2.10): never served stale, whatever the stale allowances say.
    pub must_revalidate: bool,
    /// Response no-cache (§5.2.2.4): stored, but each use is revalidated.
    pub no_cache: bool,
}

/// Why a response is not stored (the value of `as_str` appears in the
/// Cache-Status `detail` and in metrics labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    /// Not a GET. HEAD responses are not stored either: a HEAD is answered from
    /// the stored GET, and a HEAD response has no body to answer a GET with.
    Method,
    /// A status not storable without explicit freshness (or never: 1xx, 304).
    Status,
    /// no-store in the request or the response (§3, §5.2.1.5, §5.2.2.5).
    NoStore,
    /// private in the response: a shared cache must not store it (§5.2.2.7).
    Private,
    /// The request carried Authorization (§3.5).
    Authorization,
    /// The response sets a cookie.
    SetCookie,
    /// `Vary: *` never matches a later request (§4.1).
    VaryStar,
    /// Stale at once with no validator and no stale allowance: nothing to gain.
    NoFreshness,
    /// 206: partial content is not stored.
    Partial,
}

impl NotStorable {
    /// A short stable name: "method", "status", "no-store", "private",
    /// "authorization", "set-cookie", "vary-star", "no-freshness", "partial".
    pub fn as_str(self) -> &'static str {
        match self {
            NotStorable::Method => "method",
            NotStorable::Status => "status",
            NotStorable::NoStore => "no-store",
            NotStorable::Private => "private",
            NotStorable::Authorization => "authorization",
            NotStorable::SetCookie => "set-cookie",
            NotStorable::VaryStar => "vary-star",
            NotStorable::NoFreshness => "no-freshness",
            NotStorable::Partial => "partial",
        }
    }
}

impl std::fmt::Display for NotStorable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Statuses a cache may give heuristic freshness (RFC 9110 §15.1).
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Final statuses defined by RFC 9110: the ones this cache "understands" for
/// `must-understand` (§5.2.2.3).
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=206 | 300..=305 | 307 | 308 | 400..=417 | 421..=422 | 426 | 500..=505
    )
}

/// May this response to this request be stored, and with what freshness?
///
/// Checks, in order: method (GET only), status (1xx, 304 never; 206 is
/// [`NotStorable::Partial`]), no-store (request, then response, §3), private
/// (§5.2.2.7), Vary: * (§4.1), Authorization (§3.5), Set-Cookie; then the
/// lifetime: `ttl_override`, else s-maxage, max-age, Expires − Date (§4.2.1;
/// an invalid Expires is already expired, §5.3), a `status_ttls` entry, or
/// the heuristic (§4.2.2) for heuristically cacheable statuses or `public`.
/// `now` stands in for an absent or invalid Date. Cost: a few header lookups
/// and date parses; no allocation unless the response has a Vary.
pub fn storable(
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    resp: &HeaderMap,
    opts: &StoreOptions,
    now: SystemTime,
) -> Result<Freshness, NotStorable> {
    if method != Method::GET {
        return Err(NotStorable::Method);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        return Err(NotStorable::Partial);
    }
    if status.is_informational() || status == StatusCode::NOT_MODIFIED {
        return Err(NotStorable::Status);
    }
    if RequestDirectives::parse(req).no_store {
        return Err(NotStorable::NoStore);
    }
    let d = ResponseDirectives::parse(resp);
    // §5.2.2.3: with must-understand, a cache that understands the status may
    // ignore no-store; one that does not must not store.
    let must_understand = d.no_store && has_directive(resp, b"must-understand");
    if must_understand && !understood(status) {
        return Err(NotStorable::Status);
    }
    if d.no_store && !must_understand && !opts.ignore_origin {
        return Err(NotStorable::NoStore);
    }
    if d.private && !opts.ignore_origin {
        return Err(NotStorable::Private);
    }
    if resp.contains_key(http::header::VARY) && vary(resp) == Vary::Star {
        return Err(NotStorable::VaryStar);
    }
    if req.contains_key(AUTHORIZATION)
        && !opts.allow_authorization
        && !(d.public || d.s_maxage.is_some() || d.must_revalidate)
    {
        return Err(NotStorable::Authorization);
    }
    if resp.contains_key(SET_COOKIE) && !opts.allow_set_cookie {
        return Err(NotStorable::SetCookie);
    }

    // Date is only read when max-age/s-maxage do not settle the lifetime (Expires − Date,
    // the heuristic): parsing it costs ~900 instructions a response.
    let date = if d.s_maxage.or(d.max_age).is_some() {
        now
    } else {
        header_date(resp, DATE).unwrap_or(now)
    };
    let explicit = explicit_lifetime(&d, resp, date);
    let status_ttl = opts
        .status_ttls
        .iter()
        .find(|(s, _)| *s == status.as_u16())
        .map(|(_, ttl)| *ttl);
    let heuristic_ok = heuristically_cacheable(status) || d.public;
    if explicit.is_none() && status_ttl.is_none() && !heuristic_ok {
        return Err(NotStorable::Status);
    }
    let lifetime = match (opts.ttl_override, explicit, status_ttl) {
        (Some(ttl), _, _) => ttl,
        (None, Some(explicit), _) => explicit,
        (None, None, Some(ttl)) => ttl,
        (None, None, None) => heuristic(resp, date, opts),
    };

    let obey = !opts.ignore_origin;
    let f = Freshness {
        lifetime,
        stale_while_revalidate: d
            .stale_while_revalidate
            .map_or(opts.default_stale_while_revalidate, Duration::from_secs),
        stale_if_error: d
            .stale_if_error
            .map_or(opts.default_stale_if_error, Duration::from_secs),
        must_revalidate: obey && (d.must_revalidate || d.proxy_revalidate || d.s_maxage.is_some()),
        no_cache: obey && d.no_cache,
    };
    // A response that can never answer a request without going upstream, and
    // cannot be revalidated conditionally, only costs memory.
    let fresh_use = !f.lifetime.is_zero() && !f.no_cache;
    let any_stale_allowance = !f.stale_while_revalidate.is_zero() || !f.stale_if_error.is_zero();
    let stale_use = any_stale_allowance && !f.must_revalidate && !f.no_cache;
    let validator = resp.contains_key(ETAG) || resp.contains_key(LAST_MODIFIED);
    if !fresh_use && !stale_use && !validator {
        return Err(NotStorable::NoFreshness);
    }
    Ok(f)
}

/// §4.2.1: s-maxage (shared cache), else max-age, else Expires − Date.
fn explicit_lifetime(
    d: &ResponseDirectives,
    resp: &HeaderMap,
    date: SystemTime,
) -> Option<Duration> {
    if let Some(secs) = d.s_maxage.or(d.max_age) {
        return Some(Duration::from_secs(secs));
    }
    // §4.2.1: with several Expires lines, the first counts; §5.3: an invalid
    // one (such as "0") is a time in the past.
    let expires = resp.get(EXPIRES)?;
    let lifetime = match expires
        .to_str()
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok())
    {
        Some(at) => at.duration_since(date).unwrap_or(Duration::ZERO),
        None => Duration::ZERO,
    };
    Some(lifetime)
}

/// §4.2.2: a fraction of the time since Last-Modified, capped; zero without it.
fn heuristic(resp: &HeaderMap, date: SystemTime, opts: &StoreOptions) -> Duration {
    let Some(modified) = header_date(resp, LAST_MODIFIED) else {
        return Duration::ZERO;
    };
    let age = date.duration_since(modified).unwrap_or(Duration::ZERO);
    let secs = age.as_secs_f64() * opts.heuristic_fraction;
    // Written so that NaN, negative and huge fractions cannot panic.
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else if secs >= opts.heuristic_cap.as_secs_f64() {
        opts.heuristic_cap
    } else {
        Duration::try_from_secs_f64(secs).unwrap_or(opts.heuristic_cap)
    }
}

/// The first field line of `name` as an HTTP-date, if valid.
pub(crate) fn header_date(
    headers: &HeaderMap,
    name: http::header::HeaderName,
) -> Option<SystemTime> {
    let s = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(s).ok()
}

#[cfg(test)]
mod tests;
