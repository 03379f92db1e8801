//! A stored response, and its encoding for the Redis tier.
//!
//! The Redis encoding is ours (no serde format fits a header map plus a raw body without
//! copying the body through base64): a magic and version, a binary head with the metadata
//! (fixed-width numbers, length-prefixed fields), the body, and an XXH3 checksum over all
//! of it, so a truncated or foreign value is recognised and treated as a miss instead of
//! being served. Decoding copies neither the body nor the header values, and parses no
//! text: a Redis hit pays for a checksum, a few small allocations, and the header names'
//! validation.

use crate::compress::Coding;
use crate::policy::Freshness;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Heap bytes of one stored header field beyond its name and value: its bucket in the
/// `HeaderMap` (name, value, hash and links: 112 bytes with http 1 on 64-bit), its index
/// slot, and the `": "` and CRLF around it in the head its value is sliced from.
const FIELD: usize = std::mem::size_of::<HeaderName>() + std::mem::size_of::<HeaderValue>() + 48;

/// Heap bytes of an entry beyond its fields and data: the entry in its `Arc`, its header
/// map's index table and status line, and the allocator's rounding of its eight or so
/// allocations.
const ENTRY: usize = std::mem::size_of::<Entry>() + 16 + 96 + 128;

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

    /// Heap bytes this entry holds, for the memory tier's bound: itself, its header map
    /// (a bucket per field, plus the head its values are sliced from), its body and its
    /// strings. `tests/memory_bound.rs` checks this against a counting allocator.
    pub fn weight(&self) -> usize {
        let fields: usize = self
            .headers
            .iter()
            .map(|(k, v)| FIELD + k.as_str().len() + v.len())
            .sum();
        ENTRY
            + fields
            + self.body.len()
            + self.url.len()
            + self.variant.len()
            + self.vary.len() * std::mem::size_of::<HeaderName>()
            + self
                .tags
                .iter()
                .map(|t| t.len() + std::mem::size_of::<Box<str>>())
                .sum::<usize>()
    }

    /// The Redis encoding, `HRC2`: a binary head of fixed-width numbers and length-prefixed
    /// fields (big-endian; see [`Entry::decode`] for the order), the body, and XXH3-64 of all
    /// before it. One allocation, of the exact size.
    pub fn encode(&self) -> Bytes {
        let fields = |n: usize| 4 + n;
        let mut len = MAGIC.len() + 2 + 1 + 1 + 5 * 8;
        len += fields(self.url.len()) + fields(self.variant.len());
        len += 4 + self
            .vary
            .iter()
            .map(|v| fields(v.as_str().len()))
            .sum::<usize>();
        len += 4 + self.tags.iter().map(|t| fields(t.len())).sum::<usize>();
        len += 4 + self
            .headers
            .iter()
            .map(|(k, v)| fields(k.as_str().len()) + fields(v.len()))
            .sum::<usize>();
        len += self.body.len() + 8;
        let mut out = BytesMut::with_capacity(len);
        let put = |out: &mut BytesMut, b: &[u8]| {
            out.put_u32(b.len() as u32);
            out.put_slice(b);
        };
        let ms = |d: Duration| d.as_millis() as u64;
        out.put_slice(MAGIC);
        out.put_u16(self.status.as_u16());
        let f = &self.freshness;
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        let flags = flag(f.must_revalidate, MUST_REVALIDATE)
            | flag(f.no_cache, NO_CACHE)
            | flag(self.is_soft_purged(), SOFT_PURGED);
        out.put_u8(flags);
        out.put_u8(self.coding as u8);
        out.put_u64(unix_ms(self.response_time));
        out.put_u64(ms(self.initial_age));
        out.put_u64(ms(f.lifetime));
        out.put_u64(ms(f.stale_while_revalidate));
        out.put_u64(ms(f.stale_if_error));
        put(&mut out, self.url.as_bytes());
        put(&mut out, &self.variant);
        out.put_u32(self.vary.len() as u32);
        for v in self.vary.iter() {
            put(&mut out, v.as_str().as_bytes());
        }
        out.put_u32(self.tags.len() as u32);
        for t in self.tags.iter() {
            put(&mut out, t.as_bytes());
        }
        out.put_u32(self.headers.len() as u32);
        for (k, v) in &self.headers {
            put(&mut out, k.as_str().as_bytes());
            put(&mut out, v.as_bytes());
        }
        out.put_slice(&self.body);
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.put_u64(sum);
        debug_assert_eq!(out.len(), len);
        out.freeze()
    }

    /// Decodes [`Entry::encode`]'s bytes; `None` for anything else (truncated, foreign,
    /// corrupted, another version). The body and the header values are slices of `raw`, not
    /// copies.
    ///
    /// Never panics and allocates no more than `raw` could hold: a value with a valid checksum
    /// may still be hostile (anyone who can write to the Redis can compute one), so every
    /// length and count is checked against the bytes that remain.
    pub fn decode(raw: &Bytes) -> Option<Entry> {
        if raw.len() < MAGIC.len() + 8 || &raw[..MAGIC.len()] != MAGIC {
            return None;
        }
        let end = raw.len() - 8;
        let sum = u64::from_be_bytes(raw[end..].try_into().ok()?);
        if xxhash_rust::xxh3::xxh3_64(&raw[..end]) != sum {
            return None;
        }
        let mut r = Reader {
            raw,
            pos: MAGIC.len(),
            end,
        };
        let status = StatusCode::from_u16(r.u16()?).ok()?;
        let flags = r.u8()?;
        let coding = r.u8()?;
        let coding = CODINGS.into_iter().find(|c| *c as u8 == coding)?;
        let response_time = UNIX_EPOCH.checked_add(Duration::from_millis(r.u64()?))?;
        let initial_age = Duration::from_millis(r.u64()?);
        let freshness = Freshness {
            lifetime: Duration::from_millis(r.u64()?),
            stale_while_revalidate: Duration::from_millis(r.u64()?),
            stale_if_error: Duration::from_millis(r.u64()?),
            must_revalidate: flags & MUST_REVALIDATE != 0,
            no_cache: flags & NO_CACHE != 0,
        };
        let url: Box<str> = std::str::from_utf8(r.field()?).ok()?.into();
        let variant: Box<[u8]> = r.field()?.into();
        let n = r.count(4)?;
        let mut vary = Vec::with_capacity(n);
        for _ in 0..n {
            vary.push(HeaderName::from_bytes(r.field()?).ok()?);
        }
        let n = r.count(4)?;
        let mut tags = Vec::with_capacity(n);
        for _ in 0..n {
            tags.push(std::str::from_utf8(r.field()?).ok()?.into());
        }
        // Each header takes two length prefixes at least.
        let n = r.count(8)?;
        let mut headers = HeaderMap::try_with_capacity(n).ok()?;
        for _ in 0..n {
            let name = HeaderName::from_bytes(r.field()?).ok()?;
            let value = HeaderValue::from_maybe_shared(r.shared()?).ok()?;
            headers.try_append(name, value).ok()?;
        }
        let body = raw.slice(r.pos..end);
        let entry = Entry::new(
            status,
            headers,
            body,
            response_time,
            initial_age,
            freshness,
            url,
            tags.into(),
            vary.into(),
            variant,
            coding,
        );
        if flags & SOFT_PURGED != 0 {
            entry.soft_purge();
        }
        Some(entry)
    }
}

const MAGIC: &[u8; 4] = b"HRC2";
const MUST_REVALIDATE: u8 = 1;
const NO_CACHE: u8 = 2;
const SOFT_PURGED: u8 = 4;
const CODINGS: [Coding; 4] = [Coding::Identity, Coding::Gzip, Coding::Brotli, Coding::Zstd];

/// A cursor over an encoded entry's head; every read is checked against what remains.
struct Reader<'a> {
    raw: &'a Bytes,
    pos: usize,
    /// Where the checksum starts.
    end: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<std::ops::Range<usize>> {
        if n > self.end - self.pos {
            return None;
        }
        let at = self.pos;
        self.pos += n;
        Some(at..self.pos)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let r = self.take(N)?;
        self.raw[r].try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }

    /// A u32 length or count.
    fn length(&mut self) -> Option<usize> {
        usize::try_from(u32::from_be_bytes(self.array()?)).ok()
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }

    /// A length-prefixed field, borrowed.
    fn field(&mut self) -> Option<&'a [u8]> {
        let n = self.length()?;
        let r = self.take(n)?;
        let raw: &'a Bytes = self.raw;
        Some(&raw[r])
    }

    /// A length-prefixed field, shared with the buffer.
    fn shared(&mut self) -> Option<Bytes> {
        let n = self.length()?;
        let r = self.take(n)?;
        Some(self.raw.slice(r))
    }

    /// A count of items that take `min` bytes each at least: no more than the bytes left
    /// could hold, so a hostile count cannot make a large allocation.
    fn count(&mut self, min: usize) -> Option<usize> {
        let n = self.length()?;
        (n <= (self.end - self.pos) / min).then_some(n)
    }
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
        assert!(Entry::decode(&Bytes::from_static(b"HRC2 not really an entry at all")).is_none());
        assert!(Entry::decode(&Bytes::from_static(b"garbage")).is_none());
    }

    /// `payload` with a valid checksum: what a hostile writer to the Redis could store.
    fn sealed(mut payload: Vec<u8>) -> Bytes {
        let sum = xxhash_rust::xxh3::xxh3_64(&payload);
        payload.extend_from_slice(&sum.to_be_bytes());
        Bytes::from(payload)
    }

    /// The sample's encoding without its checksum.
    fn payload() -> Vec<u8> {
        let raw = sample().encode();
        raw[..raw.len() - 8].to_vec()
    }

    /// A small deterministic generator (xorshift64), so a failure can be replayed.
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn every_truncation_is_rejected() {
        let raw = sample().encode();
        for cut in 0..raw.len() {
            assert!(Entry::decode(&raw.slice(..cut)).is_none(), "cut at {cut}");
            // Resealed, so the checksum no longer catches it: the head's lengths must.
            let head_cut = sealed(payload()[..cut.min(raw.len() - 8)].to_vec());
            if cut < raw.len() - 8 - sample().body.len() {
                assert!(Entry::decode(&head_cut).is_none(), "resealed cut at {cut}");
            }
        }
    }

    #[test]
    fn a_flipped_byte_is_rejected_and_a_resealed_one_never_panics() {
        let raw = sample().encode();
        let mut next = rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let at = next() as usize % raw.len();
            let bit = 1u8 << (next() % 8);
            let mut v = raw.to_vec();
            v[at] ^= bit;
            assert!(Entry::decode(&Bytes::from(v)).is_none(), "flip at {at}");
            // The same damage under a valid checksum: decoded or refused, never a panic.
            let mut p = payload();
            if at < p.len() {
                p[at] ^= bit;
                let _ = Entry::decode(&sealed(p));
            }
        }
        // Random values of every length up to the sample's, sealed and with the magic.
        for len in 0..raw.len() {
            let mut p = MAGIC.to_vec();
            p.extend((0..len).map(|_| next() as u8));
            let _ = Entry::decode(&sealed(p));
        }
    }

    #[test]
    fn lengths_and_counts_claiming_more_than_the_value_holds_are_rejected() {
        let e = sample();
        // Offsets in the sample's head: fixed part, then url, variant, vary, tags, headers.
        let url_len = 4 + 2 + 1 + 1 + 5 * 8;
        let variant_len = url_len + 4 + e.url.len();
        let vary_count = variant_len + 4 + e.variant.len();
        let tags_count =
            vary_count + 4 + e.vary.iter().map(|v| 4 + v.as_str().len()).sum::<usize>();
        let headers_count = tags_count + 4 + e.tags.iter().map(|t| 4 + t.len()).sum::<usize>();
        let first_name_len = headers_count + 4;
        let p = payload();
        for at in [
            url_len,
            variant_len,
            vary_count,
            tags_count,
            headers_count,
            first_name_len,
        ] {
            let left = (p.len() - at - 4) as u32;
            for claim in [u32::MAX, u32::MAX / 2, 1 << 24, left + 1] {
                let mut v = p.clone();
                v[at..at + 4].copy_from_slice(&claim.to_be_bytes());
                assert!(Entry::decode(&sealed(v)).is_none(), "{claim} at {at}");
            }
        }
        // The offsets above are the real ones: the untouched value decodes.
        let n = u32::from_be_bytes(p[headers_count..][..4].try_into().unwrap());
        assert_eq!(n as usize, e.headers.len());
        assert!(Entry::decode(&sealed(p)).is_some());
    }

    #[test]
    fn decoding_shares_the_body_and_header_values_with_the_value_read() {
        let raw = sample().encode();
        let d = Entry::decode(&raw).expect("decodes");
        let within = |p: *const u8| raw.as_ptr_range().contains(&p);
        assert!(within(d.body.as_ptr()), "the body is a slice, not a copy");
        for v in d.headers.values() {
            assert!(
                within(v.as_bytes().as_ptr()),
                "{v:?} is a slice, not a copy"
            );
        }
    }

    #[test]
    fn flags_and_an_empty_entry_survive_the_encoding() {
        let e = Entry::new(
            StatusCode::NOT_FOUND,
            HeaderMap::new(),
            Bytes::new(),
            UNIX_EPOCH,
            Duration::ZERO,
            Freshness {
                lifetime: Duration::ZERO,
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
                must_revalidate: true,
                no_cache: true,
            },
            "".into(),
            Box::new([]),
            Box::new([]),
            Box::new([Coding::Zstd as u8]),
            Coding::Zstd,
        );
        e.soft_purge();
        let d = Entry::decode(&e.encode()).expect("decodes");
        assert_eq!(
            (d.status, d.freshness, d.coding),
            (e.status, e.freshness, e.coding)
        );
        assert!(d.is_soft_purged());
        assert!(d.headers.is_empty() && d.body.is_empty() && d.tags.is_empty());
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
