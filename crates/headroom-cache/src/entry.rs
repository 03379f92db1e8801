//! A stored response, and its encoding for the Redis tier.
//!
//! The Redis encoding is ours (no serde format fits a header map plus a raw body without
//! copying the body through base64): a magic and version, a JSON head with the metadata,
//! the body, and an XXH3 checksum over all of it, so a truncated or foreign value is
//! recognised and treated as a miss instead of being served.

use crate::compress::Coding;
use crate::policy::Freshness;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One stored response: one variant of one URL.
#[derive(Debug)]
pub struct Entry {
    pub status: StatusCode,
    /// As stored: hop-by-hop fields and `Age` removed, `Date` present.
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the response was received (RFC 9111 §4.2.3 `response_time`).
    pub response_time: SystemTime,
    /// Its `corrected_initial_age` then.
    pub initial_age: Duration,
    pub freshness: Freshness,
    /// `host` + path and query, as the request had them: what a URL or prefix purge matches.
    pub url: Box<str>,
    /// `Surrogate-Key` / `Cache-Tag` values: what a tag purge matches.
    pub tags: Box<[Box<str>]>,
    /// The response's `Vary` fields (sorted, lowercase).
    pub vary: Box<[HeaderName]>,
    /// The selecting request's normalised values of `vary`, and the coding byte.
    pub variant: Box<[u8]>,
    pub coding: Coding,
    /// Marked stale by a soft purge: served only where a stale response may be.
    soft_purged: AtomicBool,
}

impl Entry {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        response_time: SystemTime,
        initial_age: Duration,
        freshness: Freshness,
        url: Box<str>,
        tags: Box<[Box<str>]>,
        vary: Box<[HeaderName]>,
        variant: Box<[u8]>,
        coding: Coding,
    ) -> Entry {
        Entry {
            status,
            headers,
            body,
            response_time,
            initial_age,
            freshness,
            url,
            tags,
            vary,
            variant,
            coding,
            soft_purged: AtomicBool::new(false),
        }
    }

    /// RFC 9111 §4.2.3 `current_age`; a soft-purged entry is at least as old as its
    /// freshness lifetime (stale, but still within its stale allowances).
    pub fn age(&self, now: SystemTime) -> Duration {
        let resident = now.duration_since(self.response_time).unwrap_or_default();
        let age = self.initial_age + resident;
        if self.soft_purged.load(Relaxed) {
            age.max(self.freshness.lifetime)
        } else {
            age
        }
    }

    pub fn soft_purge(&self) {
        self.soft_purged.store(true, Relaxed);
    }

    pub fn is_soft_purged(&self) -> bool {
        self.soft_purged.load(Relaxed)
    }

    /// Milliseconds since the epoch at `response_time`: what purges are compared with.
    pub fn stored_at_ms(&self) -> u64 {
        unix_ms(self.response_time)
    }

    /// How long past its freshness this entry may still be of use (served stale while
    /// revalidating, or instead of an error): the Redis tier's expiry beyond freshness.
    pub fn stale_allowance(&self) -> Duration {
        self.freshness
            .stale_while_revalidate
            .max(self.freshness.stale_if_error)
    }

    /// True when nothing can use this entry any more at `now`: stale past its allowances
    /// and without a validator to revalidate it with.
    pub fn is_dead(&self, now: SystemTime) -> bool {
        let has_validator = self.headers.contains_key(http::header::ETAG)
            || self.headers.contains_key(http::header::LAST_MODIFIED);
        !has_validator && self.age(now) > self.freshness.lifetime + self.stale_allowance()
    }

    /// Bytes this entry holds, for the memory tier's bound.
    pub fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        std::mem::size_of::<Entry>()
            + headers
            + self.body.len()
            + self.url.len()
            + self.variant.len()
            + self.tags.iter().map(|t| t.len() + 16).sum::<usize>()
    }

    /// The Redis encoding: `HRC1`, u32 head length, JSON head, body, XXH3-64 of all before.
    pub fn encode(&self) -> Bytes {
        let head = Head {
            status: self.status.as_u16(),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
                .collect(),
            response_time_ms: unix_ms(self.response_time),
            initial_age_ms: self.initial_age.as_millis() as u64,
            lifetime_ms: self.freshness.lifetime.as_millis() as u64,
            swr_ms: self.freshness.stale_while_revalidate.as_millis() as u64,
            sie_ms: self.freshness.stale_if_error.as_millis() as u64,
            must_revalidate: self.freshness.must_revalidate,
            no_cache: self.freshness.no_cache,
            url: self.url.to_string(),
            tags: self.tags.iter().map(|t| t.to_string()).collect(),
            vary: self.vary.iter().map(|v| v.as_str().to_string()).collect(),
            variant: self.variant.to_vec(),
            coding: self.coding.as_str().to_string(),
            soft_purged: self.is_soft_purged(),
        };
        let head = serde_json::to_vec(&head).unwrap_or_default();
        let mut out = BytesMut::with_capacity(4 + 4 + head.len() + self.body.len() + 8);
        out.put_slice(MAGIC);
        out.put_u32(head.len() as u32);
        out.put_slice(&head);
        out.put_slice(&self.body);
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.put_u64(sum);
        out.freeze()
    }

    /// Decodes [`Entry::encode`]'s bytes; `None` for anything else (truncated, foreign,
    /// corrupted, another version).
    pub fn decode(raw: &Bytes) -> Option<Entry> {
        if raw.len() < 16 || &raw[..4] != MAGIC {
            return None;
        }
        let (payload, sum) = raw.split_at(raw.len() - 8);
        if xxhash_rust::xxh3::xxh3_64(payload) != u64::from_be_bytes(sum.try_into().ok()?) {
            return None;
        }
        let head_len = u32::from_be_bytes(payload[4..8].try_into().ok()?) as usize;
        let head_end = 8usize.checked_add(head_len)?;
        if head_end > payload.len() {
            return None;
        }
        let head: Head = serde_json::from_slice(&payload[8..head_end]).ok()?;
        let mut headers = HeaderMap::with_capacity(head.headers.len());
        for (k, v) in head.headers {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).ok()?,
                HeaderValue::from_bytes(&v).ok()?,
            );
        }
        let entry = Entry::new(
            StatusCode::from_u16(head.status).ok()?,
            headers,
            raw.slice(head_end..payload.len()),
            UNIX_EPOCH + Duration::from_millis(head.response_time_ms),
            Duration::from_millis(head.initial_age_ms),
            Freshness {
                lifetime: Duration::from_millis(head.lifetime_ms),
                stale_while_revalidate: Duration::from_millis(head.swr_ms),
                stale_if_error: Duration::from_millis(head.sie_ms),
                must_revalidate: head.must_revalidate,
                no_cache: head.no_cache,
            },
            head.url.into(),
            head.tags.into_iter().map(Into::into).collect(),
            head.vary
                .iter()
                .map(|v| HeaderName::from_bytes(v.as_bytes()).ok())
                .collect::<Option<_>>()?,
            head.variant.into(),
            Coding::parse(&head.coding).unwrap_or(Coding::Identity),
        );
        if head.soft_purged {
            entry.soft_purge();
        }
        Some(entry)
    }
}

const MAGIC: &[u8; 4] = b"HRC1";

#[derive(serde::Serialize, serde::Deserialize)]
struct Head {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    response_time_ms: u64,
    initial_age_ms: u64,
    lifetime_ms: u64,
    swr_ms: u64,
    sie_ms: u64,
    must_revalidate: bool,
    no_cache: bool,
    url: String,
    tags: Vec<String>,
    vary: Vec<String>,
    variant: Vec<u8>,
    coding: String,
    soft_purged: bool,
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        Entry::new(
            StatusCode::OK,
            h,
            Bytes::from_static(b"hello body"),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            Duration::from_secs(3),
            Freshness {
                lifetime: Duration::from_secs(60),
                stale_while_revalidate: Duration::from_secs(5),
                stale_if_error: Duration::from_secs(30),
                must_revalidate: false,
                no_cache: false,
            },
            "example.com/a?b=1".into(),
            vec!["t1".into()].into(),
            vec![HeaderName::from_static("accept-language")].into(),
            b"en".to_vec().into(),
            Coding::Gzip,
        )
    }

    #[test]
    fn an_entry_survives_its_redis_encoding() {
        let e = sample();
        let d = Entry::decode(&e.encode()).expect("decodes");
        assert_eq!(d.status, e.status);
        assert_eq!(d.headers, e.headers);
        assert_eq!(d.body, e.body);
        assert_eq!(d.response_time, e.response_time);
        assert_eq!(d.initial_age, e.initial_age);
        assert_eq!(d.freshness, e.freshness);
        assert_eq!((&*d.url, &*d.tags, &*d.vary), (&*e.url, &*e.tags, &*e.vary));
        assert_eq!((&*d.variant, d.coding), (&*e.variant, e.coding));
    }

    #[test]
    fn a_truncated_or_foreign_value_is_not_an_entry() {
        let raw = sample().encode();
        for cut in [0, 3, 8, 20, raw.len() / 2, raw.len() - 1] {
            assert!(Entry::decode(&raw.slice(..cut)).is_none(), "cut at {cut}");
        }
        let mut flipped = raw.to_vec();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        assert!(Entry::decode(&Bytes::from(flipped)).is_none());
        assert!(Entry::decode(&Bytes::from_static(b"HRC1 not really an entry at all")).is_none());
        assert!(Entry::decode(&Bytes::from_static(b"garbage")).is_none());
    }

    #[test]
    fn a_soft_purged_entry_is_at_least_as_old_as_its_lifetime() {
        let e = sample();
        let now = e.response_time + Duration::from_secs(1);
        assert_eq!(e.age(now), Duration::from_secs(4));
        e.soft_purge();
        assert_eq!(e.age(now), Duration::from_secs(60));
    }
}
