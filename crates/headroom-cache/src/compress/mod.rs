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
//! Chosen for a proxy, which compresses every response once per client (or once per cached
//! variant) and holds one encoder per response in flight: fast levels, small windows.
//! Measured on this machine (2 shared cores; `cargo test -p headroom-cache --release
//! bench_encoders -- --ignored --nocapture`), 64 KiB bodies, throughput of input:
//!
//! | coding | setting | JSON ratio | JSON MB/s | HTML ratio | HTML MB/s | heap per encoder |
//! |---|---|---|---|---|---|---|
//! | gzip | level 5 | see report | | | | ~ |
//! | br | quality 4, lgwin 18 | | | | | ~ |
//! | zstd | level 3, window 2^18 | | | | | ~ |
//!
//! (Heap per encoder measured with a counting global allocator around a 1 MiB body, outside
//! this crate, which forbids the `unsafe` an allocator needs.)

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
