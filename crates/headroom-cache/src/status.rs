//! What the cache did with a request, as `Cache-Status` (RFC 9211) and `X-Cache`.

use http::HeaderValue;

/// The cache's part in one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A fresh stored response answered.
    Hit,
    /// A stale stored response answered (stale-while-revalidate, stale-if-error, max-stale).
    Stale,
    /// A stored response was revalidated upstream (304) and answered.
    Revalidated,
    /// A stored response was stale; the upstream sent a new one.
    Expired,
    /// Nothing was stored.
    Miss,
    /// The route's rules keep this request away from the cache.
    Bypass,
}

impl Outcome {
    /// The `X-Cache` value, and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Stale => "STALE",
            Outcome::Revalidated => "REVALIDATED",
            Outcome::Expired => "EXPIRED",
            Outcome::Miss => "MISS",
            Outcome::Bypass => "BYPASS",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Stale => "stale",
            Outcome::Revalidated => "revalidated",
            Outcome::Expired => "expired",
            Outcome::Miss => "miss",
            Outcome::Bypass => "bypass",
        }
    }

    pub fn x_cache(self) -> HeaderValue {
        // Constants: `from_static` run at runtime checks every byte again.
        const VALUES: [HeaderValue; 6] = [
            HeaderValue::from_static("HIT"),
            HeaderValue::from_static("STALE"),
            HeaderValue::from_static("REVALIDATED"),
            HeaderValue::from_static("EXPIRED"),
            HeaderValue::from_static("MISS"),
            HeaderValue::from_static("BYPASS"),
        ];
        VALUES[self as usize].clone()
    }

    /// The word a response's `Cache-Status` says (for the access log): "" when the cache
    /// was not involved (OPTIONS, an error before the cache).
    pub fn from_headers(h: &http::HeaderMap) -> &'static str {
        let Some(cs) = h.get(crate::headers::CACHE_STATUS) else {
            return "";
        };
        // Our own member, as `CacheStatus::header` wrote it: the first parameter says what
        // happened, the others refine it.
        let mut params = cs.as_bytes().split(|b| *b == b';').map(|p| p.trim_ascii());
        let (mut hit, mut stale, mut fwd_stale, mut bypass, mut revalidated) =
            (false, false, false, false, false);
        params.next();
        for p in params {
            match p {
                b"hit" => hit = true,
                b"fwd=stale" => fwd_stale = true,
                b"fwd=bypass" => bypass = true,
                b"fwd-status=304" => revalidated = true,
                b"detail=stale-if-error" => stale = true,
                _ if p.starts_with(b"ttl=-") => stale = true,
                _ => {}
            }
        }
        match () {
            _ if stale && (hit || fwd_stale) => "STALE",
            _ if hit => "HIT",
            _ if fwd_stale && revalidated => "REVALIDATED",
            _ if fwd_stale => "EXPIRED",
            _ if bypass => "BYPASS",
            _ => "MISS",
        }
    }

    /// Served from storage (counts towards the hit ratio).
    pub fn is_hit(self) -> bool {
        matches!(self, Outcome::Hit | Outcome::Stale | Outcome::Revalidated)
    }
}

/// One `Cache-Status` member: `headroom; hit; ttl=42`, `headroom; fwd=miss; stored`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStatus {
    pub outcome: Outcome,
    /// Freshness left, in seconds (negative: stale), when a stored response answered.
    pub ttl: Option<i64>,
    pub stored: bool,
    /// This request waited for another's fill.
    pub collapsed: bool,
    /// Why it was not stored or not used, when that is worth saying.
    pub detail: Option<&'static str>,
    /// The upstream's status, when it was asked.
    pub fwd_status: Option<u16>,
}

impl CacheStatus {
    pub fn new(outcome: Outcome) -> Self {
        CacheStatus {
            outcome,
            ttl: None,
            stored: false,
            collapsed: false,
            detail: None,
            fwd_status: None,
        }
    }

    pub fn header(&self) -> HeaderValue {
        if let Some(v) = self.common_value() {
            return v;
        }
        let mut s = String::with_capacity(48);
        s.push_str("headroom");
        match self.outcome {
            Outcome::Hit | Outcome::Stale => s.push_str("; hit"),
            Outcome::Revalidated | Outcome::Expired => s.push_str("; fwd=stale"),
            Outcome::Miss => s.push_str("; fwd=uri-miss"),
            Outcome::Bypass => s.push_str("; fwd=bypass"),
        }
        if let Some(st) = self.fwd_status {
            s.push_str("; fwd-status=");
            s.push_str(itoa::Buffer::new().format(st));
        }
        if let Some(ttl) = self.ttl {
            s.push_str("; ttl=");
            s.push_str(itoa::Buffer::new().format(ttl));
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(d) = self.detail {
            s.push_str("; detail=");
            s.push_str(d);
        }
        // The String's buffer becomes the value's, not copied again.
        HeaderValue::from_maybe_shared(bytes::Bytes::from(s))
            .unwrap_or(HeaderValue::from_static("headroom"))
    }
}

impl CacheStatus {
    fn common_value(&self) -> Option<HeaderValue> {
        const BYPASS_RULE: HeaderValue =
            HeaderValue::from_static("headroom; fwd=bypass; detail=rule");
        const BYPASS_COOKIE: HeaderValue =
            HeaderValue::from_static("headroom; fwd=bypass; detail=cookie");
        const BYPASS_HEADER: HeaderValue =
            HeaderValue::from_static("headroom; fwd=bypass; detail=header");
        const MISS_STORED: HeaderValue =
            HeaderValue::from_static("headroom; fwd=uri-miss; fwd-status=200; stored");
        Some(match self.common()? {
            "headroom; fwd=bypass; detail=rule" => BYPASS_RULE,
            "headroom; fwd=bypass; detail=cookie" => BYPASS_COOKIE,
            "headroom; fwd=bypass; detail=header" => BYPASS_HEADER,
            _ => MISS_STORED,
        })
    }

    /// The most frequent values, as static strings: a bypass and a stored 200 miss cost no
    /// allocation (what [`CacheStatus::header`] would write, checked by a test).
    fn common(&self) -> Option<&'static str> {
        if self.collapsed || self.ttl.is_some() {
            return None;
        }
        match (self.outcome, self.fwd_status, self.stored, self.detail) {
            (Outcome::Bypass, None, false, Some("rule")) => {
                Some("headroom; fwd=bypass; detail=rule")
            }
            (Outcome::Bypass, None, false, Some("cookie")) => {
                Some("headroom; fwd=bypass; detail=cookie")
            }
            (Outcome::Bypass, None, false, Some("header")) => {
                Some("headroom; fwd=bypass; detail=header")
            }
            (Outcome::Miss, Some(200), true, None) => {
                Some("headroom; fwd=uri-miss; fwd-status=200; stored")
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_common_values_are_what_the_general_writer_writes() {
        let mut cases = Vec::new();
        for d in ["rule", "cookie", "header"] {
            let mut b = CacheStatus::new(Outcome::Bypass);
            b.detail = Some(d);
            cases.push(b);
        }
        let mut m = CacheStatus::new(Outcome::Miss);
        m.fwd_status = Some(200);
        m.stored = true;
        cases.push(m);
        for c in cases {
            let fast = c.common().expect("a common value");
            let mut general = c;
            general.ttl = Some(0); // not common: forces the general writer
            let written = general.header();
            let expected = written.to_str().unwrap().replace("; ttl=0", "");
            assert_eq!(fast, expected);
        }
    }

    #[test]
    fn cache_status_names_the_cache_and_what_it_did() {
        // RFC 9211 §2: the cache's name, then its parameters.
        let mut hit = CacheStatus::new(Outcome::Hit);
        hit.ttl = Some(42);
        assert_eq!(hit.header(), "headroom; hit; ttl=42");
        let mut miss = CacheStatus::new(Outcome::Miss);
        miss.stored = true;
        miss.fwd_status = Some(200);
        assert_eq!(
            miss.header(),
            "headroom; fwd=uri-miss; fwd-status=200; stored"
        );
        let mut bypass = CacheStatus::new(Outcome::Bypass);
        bypass.detail = Some("cookie");
        assert_eq!(bypass.header(), "headroom; fwd=bypass; detail=cookie");
    }
}
