//! Response compression at the edge: which coding to send (negotiation), whether a response
//! may be compressed at all, the header edits that go with it, and a streaming encoder.
//!
//! Everything here is pure (no I/O): the edge wraps [`Encoder`] into its response body and the
//! cache stores the compressed variants (the response carries `Vary: Accept-Encoding`).
//!
//! Order of use on a response: [`should_compress`] → [`negotiate`] → [`apply_headers`] →
//! [`Encoder`]. [`wants_any`] lets a request that accepts none of a route's codings skip all
//! of it.
//!
//! # Levels and memory
//!
//! Chosen for a proxy, which compresses on the fly and holds one encoder per response in
//! flight: fast levels, small windows (the constants' docs say why each). Ratio (input/output)
//! and encoding speed on 64 KiB bodies, 16 KiB pushes, release build, on this project's 2-core
//! dev box while other builds ran (MB/s are the range of two runs, so compare them, do not quote
//! them as absolutes); `json` and `html` are the benchmark's own generated bodies, the others
//! real files (the first 64 KiB of url's `urltestdata.json`, rustc's `platform-support.html`,
//! rustdoc's `search.js`; the Rust book's `print.html`, 1.8 MB, whole):
//!
//! | coding, setting | heap per encoder | json | html | url json | rustc html | js | 1.8 MB html | MB/s (json, html) |
//! |---|---|---|---|---|---|---|---|---|
//! | gzip 5 | 311 KiB | 5.31 | 6.63 | 16.73 | 6.11 | 4.44 | 4.16 | 43–51, 52–59 |
//! | br 3, lgwin 16 | 660 KiB | 4.94 | 5.73 | 13.74 | 5.74 | 4.09 | 3.73 | 97–99, 82–102 |
//! | zstd 3, window 2^16 | 585 KiB | 5.08 | 6.40 | 12.67 | 5.52 | 4.07 | 3.69 | 250–316, 250–263 |
//! | *for comparison:* gzip 6 | 311 KiB | 5.42 | 7.01 | 17.19 | 6.17 | 4.49 | 4.23 | 36, 35 |
//! | br 4, lgwin 18 | 1.5 MiB | 5.03 | 5.69 | 14.66 | 6.04 | 4.20 | 4.09 | 49, 46 |
//! | br 5, lgwin 18 | 2.0 MiB | 5.53 | 6.54 | 17.66 | 6.50 | 4.57 | 3.62 | 37, 41 |
//! | zstd 3, its own window (2 MiB) | 3.5 MiB | 5.09 | 6.43 | 12.69 | 5.53 | 4.07 | 4.29 | 280, 241 |
//!
//! Reproduce: `HEADROOM_BENCH_BODIES=a.json:b.html cargo test -p headroom-cache --release
//! bench_encoders -- --ignored --nocapture`. Heap per encoder is the most held while streaming
//! a 1 MiB body: for gzip and brotli counted by a global allocator in a scratch binary (this
//! crate forbids the `unsafe` an allocator needs), for zstd `ZSTD_sizeof_CCtx` (the benchmark
//! prints it). It does not grow with the body. gzip allocates its state in `Encoder::new`; brotli
//! and zstd as input arrives (a 4 KiB body holds 13 KiB of brotli state).
//!
//! What the numbers say: at proxy-sized memory, gzip 5 gives the smallest output; zstd 3 is ~5×
//! faster for 4–32% more bytes; brotli 3 is ~2× faster for 6–22% more bytes. Brotli beats gzip
//! on size only from quality 5, at 2 MiB per encoder and worse on long bodies: a route-level
//! choice to add later (a cached variant is compressed once), not a default.

mod eligibility;
mod encoder;
mod headers;
mod negotiate;

pub use eligibility::{compressible, should_compress, DEFAULT_MIN_SIZE};
pub use encoder::{Encoder, BROTLI_LGWIN, BROTLI_QUALITY, GZIP_LEVEL, ZSTD_LEVEL, ZSTD_WINDOW_LOG};
pub use headers::apply_headers;
pub use negotiate::{negotiate, wants_any, DEFAULT_OFFERED};

use http::HeaderValue;

/// A content coding (RFC 9110 §8.4.1) the edge can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    /// No coding: the body as the upstream sent it.
    Identity,
    /// gzip (RFC 1952): understood by every client.
    Gzip,
    /// brotli (RFC 7932), `br`: smaller than gzip for text; every current browser sends it.
    Brotli,
    /// zstd (RFC 8878): fastest to encode for a ratio better than gzip; newer browsers.
    Zstd,
}

impl Coding {
    /// The coding's name in `Content-Encoding` and `Accept-Encoding`: "identity", "gzip",
    /// "br", "zstd".
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip => "gzip",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }

    /// The coding's name as a header value; static, no allocation.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }

    /// A coding from its name in config: "gzip", "br" or "brotli", "zstd" (and "identity"),
    /// case-insensitive. `None` for anything else.
    pub fn parse(s: &str) -> Option<Coding> {
        let s = s.trim();
        [
            ("gzip", Coding::Gzip),
            ("br", Coding::Brotli),
            ("brotli", Coding::Brotli),
            ("zstd", Coding::Zstd),
            ("identity", Coding::Identity),
        ]
        .into_iter()
        .find(|(name, _)| s.eq_ignore_ascii_case(name))
        .map(|(_, coding)| coding)
    }

    /// The coding an `Accept-Encoding` token names (RFC 9110 §8.4.1: `x-gzip` is gzip);
    /// `None` for codings the edge does not produce (deflate, compress, ...).
    fn from_token(token: &[u8]) -> Option<Coding> {
        [
            (&b"gzip"[..], Coding::Gzip),
            (b"x-gzip", Coding::Gzip),
            (b"br", Coding::Brotli),
            (b"zstd", Coding::Zstd),
            (b"identity", Coding::Identity),
        ]
        .into_iter()
        .find(|(name, _)| token.eq_ignore_ascii_case(name))
        .map(|(_, coding)| coding)
    }

    /// A dense index for per-coding tables.
    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Coding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The comma-separated elements of a list-valued header across all its lines (RFC 9110 §5.6.1),
/// trimmed of whitespace, empty elements skipped. No allocation.
fn list_elements<'a>(
    values: impl Iterator<Item = &'a HeaderValue>,
) -> impl Iterator<Item = &'a [u8]> {
    values
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|e| e.trim_ascii())
        .filter(|e| !e.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coding_names_round_trip_through_parse() {
        for coding in [Coding::Identity, Coding::Gzip, Coding::Brotli, Coding::Zstd] {
            assert_eq!(Coding::parse(coding.as_str()), Some(coding));
            assert_eq!(coding.header_value(), coding.as_str());
        }
        assert_eq!(Coding::parse("brotli"), Some(Coding::Brotli));
        assert_eq!(Coding::parse(" GZIP "), Some(Coding::Gzip));
        assert_eq!(Coding::parse("deflate"), None);
        assert_eq!(Coding::parse(""), None);
    }
}
