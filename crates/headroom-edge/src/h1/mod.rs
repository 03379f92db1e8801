//! HTTP/1.1, both sides: `server` for client connections, `client` for upstream ones. They
//! share what RFC 9112 makes the same on either side: a read buffer (here) and the framing
//! rules and message-body decoder (`framing.rs`: §6 framing, §7.1 chunked coding).
//!
//! Why our own codec and not hyper's: hyper's HTTP/1 server keeps an 8 KiB read buffer and
//! an 8 KiB write buffer for the whole life of a connection, so 10,000 idle keep-alive
//! connections cost 160 MiB; it drops Content-Length when Transfer-Encoding is present
//! instead of refusing the request; and its client crosses tasks over channels for every
//! request and body chunk. Here the buffers are taken from a per-thread free list while a
//! request is being read or written and given back when the connection goes idle.

pub mod client;
mod framing;
pub mod request;
pub(crate) mod response;
pub mod server;

use bytes::Bytes;
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncRead;

/// Size of a pooled read buffer: the default `max_header_bytes`, and the read size for bodies.
pub const READ_BUF: usize = 16 << 10;
/// Buffers kept per thread for reuse; beyond this they are freed.
const POOLED: usize = 256;

thread_local! {
    static FREE_READ: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    static FREE_WRITE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A byte buffer with a read and a write cursor. It may hold no allocation at all (an idle
/// connection's), see [`ReadBuffer::release`].
#[derive(Default)]
pub struct ReadBuffer {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl std::fmt::Debug for ReadBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadBuffer({} buffered)", self.end - self.start)
    }
}

impl ReadBuffer {
    /// A buffer allocated at once (upstream connections, which are few and busy).
    pub fn with_capacity(n: usize) -> Self {
        ReadBuffer {
            buf: vec![0; n].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Allocates (from this thread's free list when it can) if the buffer has no memory.
    pub fn ensure(&mut self, min: usize) {
        if self.buf.len() >= min {
            return;
        }
        debug_assert!(self.start == self.end);
        let pooled = if min <= READ_BUF {
            FREE_READ.with(|f| f.borrow_mut().pop())
        } else {
            None
        };
        self.buf = pooled.unwrap_or_else(|| vec![0; min.max(READ_BUF)].into_boxed_slice());
        self.start = 0;
        self.end = 0;
    }

    /// Gives the memory back to this thread's free list when nothing is buffered, so an idle
    /// connection holds no buffer. Returns false (and keeps it) when bytes are buffered.
    pub fn release(&mut self) -> bool {
        if self.start != self.end {
            return false;
        }
        let buf = std::mem::take(&mut self.buf);
        self.start = 0;
        self.end = 0;
        if buf.len() == READ_BUF {
            FREE_READ.with(|f| {
                let mut f = f.borrow_mut();
                if f.len() < POOLED {
                    f.push(buf);
                }
            });
        }
        true
    }

    /// Drops the memory when nothing is buffered (from any thread: it does not go to
    /// this thread's free list, which serves another worker's connections).
    pub fn free(&mut self) {
        if self.start == self.end {
            self.buf = Box::default();
            self.start = 0;
            self.end = 0;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.end);
    }

    /// Takes up to `n` buffered bytes as one `Bytes` (a copy: the buffer is reused).
    pub fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.end - self.start);
        let b = Bytes::copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        b
    }

    /// True when the buffered bytes fill the whole buffer: nothing more can be read until
    /// some are consumed.
    pub fn is_full(&self) -> bool {
        self.end - self.start == self.buf.len()
    }

    /// Reads more bytes after those buffered; `Ok(0)` at end of stream. The buffer must have
    /// memory ([`ReadBuffer::ensure`]) and room ([`ReadBuffer::is_full`] false).
    pub fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Poll::Ready(Err(io::Error::other("line or header section too long")));
        }
        let mut rb = tokio::io::ReadBuf::new(&mut self.buf[self.end..]);
        ready!(Pin::new(io).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        self.end += n;
        Poll::Ready(Ok(n))
    }

    /// Takes one whole buffered line without its CRLF, if there is one.
    fn take_line(&mut self) -> Option<Vec<u8>> {
        let data = self.data();
        let pos = data.windows(2).position(|w| w == b"\r\n")?;
        let line = data[..pos].to_vec();
        self.start += pos + 2;
        Some(line)
    }
}

/// A write buffer from this thread's free list; given back with [`give_write_buf`].
pub fn take_write_buf() -> Vec<u8> {
    FREE_WRITE
        .with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(4096))
}

/// Gives a write buffer back (cleared); very large ones are freed instead.
pub fn give_write_buf(mut b: Vec<u8>) {
    if b.capacity() > 64 << 10 || b.capacity() == 0 {
        return;
    }
    b.clear();
    FREE_WRITE.with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < POOLED {
            f.push(b);
        }
    });
}

/// True when the comma-separated header value lists `token` (ASCII case-insensitive,
/// whitespace around items ignored: RFC 9110 §5.6.1). On bytes, not `str`: the `str`
/// split and trim cost ~200 instructions per `Connection` field, on every message.
pub(crate) fn has_token(v: &[u8], token: &[u8]) -> bool {
    v.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Appends a `content-length` header line.
pub(crate) fn content_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub use framing::{parse_chunk_size, BodyError, Chunk, Framing};
pub(crate) use framing::{FramingError, FramingFields};

/// Feeds `check` `n` mutations of the `seeds` (byte flips, insertions and cuts drawn from
/// `alphabet`), from a fixed `seed`: the seeded stand-in for the fuzzers, run by `cargo test`.
#[cfg(test)]
pub(crate) fn for_each_mutation(
    seeds: &[&[u8]],
    alphabet: &[u8],
    seed: u64,
    n: usize,
    mut check: impl FnMut(&[u8]),
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..n {
        let mut d = seeds[rng.usize(..seeds.len())].to_vec();
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(..d.len());
            match rng.u8(..3) {
                0 => d[at] = alphabet[rng.usize(..alphabet.len())],
                1 => d.insert(at, alphabet[rng.usize(..alphabet.len())]),
                _ => d.truncate(at.max(1)),
            }
        }
        check(&d);
    }
}

#[cfg(test)]
mod tests {
    use super::has_token;

    #[test]
    fn tokens_are_found_in_lists_in_any_case() {
        for (v, want) in [
            ("close", true),
            ("Keep-Alive, CLOSE", true),
            (" x ,\tclose\t", true),
            ("closed", false),
            ("x-close, clo se", false),
            ("", false),
        ] {
            assert_eq!(has_token(v.as_bytes(), b"close"), want, "{v:?}");
        }
        assert!(has_token(b"a,,keep-alive", b"keep-alive"));
        assert!(!has_token(b"\xffclose", b"close"));
    }
}
