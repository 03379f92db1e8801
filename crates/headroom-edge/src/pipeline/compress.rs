//! Compression on a route (`[route.compress]`): the coding is negotiated in `lookup` (the
//! cache keys compressed variants by it) and applied to the upstream's response on its way
//! back, before the cache stores it, so a hit is never compressed again.

use headroom_cache::compress::{self, Coding, Encoder};
use headroom_config::cache::CompressConfig;
use http::{header, HeaderMap, Method, StatusCode};

#[derive(Debug)]
pub struct CompressRule {
    codings: Vec<Coding>,
    min_size: u64,
}

impl CompressRule {
    pub fn new(c: &CompressConfig) -> CompressRule {
        CompressRule {
            codings: c.codings.iter().filter_map(|c| Coding::parse(c)).collect(),
            min_size: c.min_size,
        }
    }

    /// The coding this request's response is sent in.
    pub fn negotiate(&self, req: &HeaderMap) -> Coding {
        compress::negotiate(req.get(header::ACCEPT_ENCODING), &self.codings)
    }

    /// The encoder for a response in `coding`, its headers edited to match; `None` when it
    /// is sent as it is (already encoded, not compressible, too small, no-transform…).
    pub fn encoder_for(
        &self,
        coding: Coding,
        headers: &mut HeaderMap,
        method: &Method,
        status: StatusCode,
    ) -> Option<Encoder> {
        if coding == Coding::Identity
            || !compress::should_compress(method, status, headers, self.min_size)
        {
            return None;
        }
        compress::apply_headers(headers, coding);
        Some(Encoder::new(coding))
    }
}
