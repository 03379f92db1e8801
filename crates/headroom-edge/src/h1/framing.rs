//! Message framing, the same on both sides (RFC 9112 §6, §7.1): what a message's
//! Content-Length and Transfer-Encoding fields may say ([`FramingFields`], one set of rules
//! for a client's requests and an upstream's responses), and the body decoder that follows
//! the framing they give ([`Framing::poll_data`]).

use super::ReadBuffer;
use bytes::Bytes;
use std::io;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncRead;

/// Content-Length: one or more digits and nothing else (no sign, no spaces, no list, even of
/// equal values). Both parsers read it this way: a lenient `+5`, ` 5 6` or `5, 6` is where
/// two parsers start to disagree on where a message ends.
pub(crate) fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add((d - b'0') as u64)
    })
}

/// Why a message's framing fields were refused; requests and responses share the rules
/// (RFC 9112 §6), each side maps them to its own answer (a 4xx/501, or a 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FramingError {
    InvalidLength,
    ConflictingLengths,
    InvalidCoding,
    EmptyCoding,
    /// Both Content-Length and Transfer-Encoding: RFC 9112 §6.3 lets Transfer-Encoding win
    /// but says such a message "ought to be handled as an error"; it is, in both directions.
    LengthAndCoding,
    /// RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
    CodingInHttp10,
    /// `chunked` must be the final coding and appear once.
    ChunkedNotFinal,
    /// A coding besides `chunked` (`gzip, chunked`): not decoded here, and it cannot be
    /// passed on either (Transfer-Encoding is hop-by-hop, h2 has none).
    UnsupportedCoding,
}

impl FramingError {
    pub(crate) fn message(self) -> &'static str {
        match self {
            FramingError::InvalidLength => "invalid Content-Length",
            FramingError::ConflictingLengths => "conflicting Content-Length headers",
            FramingError::InvalidCoding => "invalid Transfer-Encoding",
            FramingError::EmptyCoding => "empty Transfer-Encoding",
            FramingError::LengthAndCoding => {
                "both Content-Length and Transfer-Encoding (a request smuggling pattern)"
            }
            FramingError::CodingInHttp10 => "Transfer-Encoding in an HTTP/1.0 message",
            FramingError::ChunkedNotFinal => {
                "the final transfer coding must be chunked, and only it"
            }
            FramingError::UnsupportedCoding => {
                "transfer codings other than chunked are not supported"
            }
        }
    }
}

/// A message's Content-Length and Transfer-Encoding fields as the head parser meets them,
/// then the body framing they add up to.
#[derive(Debug, Default)]
pub(crate) struct FramingFields {
    length: Option<u64>,
    codings: u32,
    last_chunked: bool,
    chunked_early: bool,
}

impl FramingFields {
    /// One Content-Length field. Repeated identical values are one length (RFC 9110 §8.6).
    pub(crate) fn content_length(&mut self, v: &[u8]) -> Result<(), FramingError> {
        let n = parse_content_length(v).ok_or(FramingError::InvalidLength)?;
        if self.length.is_some_and(|l| l != n) {
            return Err(FramingError::ConflictingLengths);
        }
        self.length = Some(n);
        Ok(())
    }

    /// One Transfer-Encoding field. Empty list elements are ignored (RFC 9110 §5.6.1), an
    /// empty field is not.
    pub(crate) fn transfer_encoding(&mut self, v: &[u8]) -> Result<(), FramingError> {
        let v = std::str::from_utf8(v).map_err(|_| FramingError::InvalidCoding)?;
        for coding in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            self.chunked_early |= self.last_chunked;
            self.last_chunked = coding.eq_ignore_ascii_case("chunked");
            self.codings += 1;
        }
        if self.codings == 0 {
            return Err(FramingError::EmptyCoding);
        }
        Ok(())
    }

    /// The body's framing, or `None` when neither field was present (a request then has
    /// no body, a response runs until the connection closes).
    pub(crate) fn framing(&self, http10: bool) -> Result<Option<Framing>, FramingError> {
        if self.codings == 0 {
            return Ok(self.length.map(|n| match n {
                0 => Framing::Done,
                n => Framing::Length(n),
            }));
        }
        if self.length.is_some() {
            return Err(FramingError::LengthAndCoding);
        }
        if http10 {
            return Err(FramingError::CodingInHttp10);
        }
        if !self.last_chunked || self.chunked_early {
            return Err(FramingError::ChunkedNotFinal);
        }
        if self.codings > 1 {
            return Err(FramingError::UnsupportedCoding);
        }
        Ok(Some(Framing::Chunked(Chunk::Size)))
    }
}

/// Where the chunked decoder is within a body (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a size line.
    Size,
    /// This many data bytes of the current chunk are left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines until an empty one; the count read so far.
    Trailers(u16),
}

/// Trailer lines accepted (and dropped) after a chunked body.
const MAX_TRAILERS: u16 = 64;

/// How a message body is delimited (RFC 9112 §6.3), and how much of it is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked(Chunk),
    /// Until the connection closes (responses only).
    UntilClose,
    Done,
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    Io(io::Error),
    /// The peer closed the connection before the body's end.
    Closed,
    Malformed(String),
    /// The client paused longer than the listener's `body_timeout` (408).
    TimedOut(std::time::Duration),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Io(e) => write!(f, "{e}"),
            BodyError::Closed => f.write_str("connection closed mid-body"),
            BodyError::Malformed(m) => write!(f, "malformed body: {m}"),
            BodyError::TimedOut(d) => write!(f, "no body bytes for {d:?}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// A chunk-size line: 1 to 16 hex digits, then optional whitespace and `;` extensions.
/// Stricter than `u64::from_str_radix`, which takes a leading `+`: a smuggling vector when
/// two parsers disagree.
pub fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = &line[digits..];
    let rest_ok = rest
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .is_none_or(|i| rest[i] == b';');
    if !rest_ok {
        return None;
    }
    let mut n = 0u64;
    for &b in &line[..digits] {
        n = n << 4 | (b as char).to_digit(16)? as u64;
    }
    Some(n)
}

impl Framing {
    pub fn is_done(&self) -> bool {
        *self == Framing::Done
    }

    pub fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Framing::Done => http_body::SizeHint::with_exact(0),
            Framing::Length(n) => http_body::SizeHint::with_exact(*n),
            _ => http_body::SizeHint::default(),
        }
    }

    /// The next piece of body data, `None` at its end. Reads from `io` into `rb` as needed;
    /// data already buffered is handed out before any read.
    pub fn poll_data<R: AsyncRead + Unpin>(
        &mut self,
        rb: &mut ReadBuffer,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            let buffered = (rb.end - rb.start) as u64;
            match *self {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) if buffered > 0 => {
                    let n = left.min(buffered);
                    let data = rb.take(n as usize);
                    let left = left - n;
                    *self = match *self {
                        Framing::Length(_) if left == 0 => Framing::Done,
                        Framing::Length(_) => Framing::Length(left),
                        _ if left == 0 => Framing::Chunked(Chunk::DataEnd),
                        _ => Framing::Chunked(Chunk::Data(left)),
                    };
                    return Poll::Ready(Some(Ok(data)));
                }
                Framing::UntilClose if buffered > 0 => {
                    return Poll::Ready(Some(Ok(rb.take(buffered as usize))));
                }
                Framing::Chunked(state @ (Chunk::Size | Chunk::DataEnd | Chunk::Trailers(_))) => {
                    if let Some(line) = rb.take_line() {
                        *self = match state {
                            Chunk::Size => match parse_chunk_size(&line) {
                                Some(0) => Framing::Chunked(Chunk::Trailers(0)),
                                Some(n) => Framing::Chunked(Chunk::Data(n)),
                                None => {
                                    return Poll::Ready(Some(Err(BodyError::Malformed(format!(
                                        "chunk size {:?}",
                                        String::from_utf8_lossy(&line)
                                    )))))
                                }
                            },
                            Chunk::DataEnd if line.is_empty() => Framing::Chunked(Chunk::Size),
                            Chunk::DataEnd => {
                                return Poll::Ready(Some(Err(BodyError::Malformed(
                                    "chunk without CRLF".into(),
                                ))))
                            }
                            // Trailers are dropped; an empty line ends the body.
                            _ if line.is_empty() => Framing::Done,
                            Chunk::Trailers(n) if n < MAX_TRAILERS => {
                                Framing::Chunked(Chunk::Trailers(n + 1))
                            }
                            _ => {
                                return Poll::Ready(Some(Err(BodyError::Malformed(
                                    "too many trailer lines".into(),
                                ))))
                            }
                        };
                        if self.is_done() {
                            return Poll::Ready(None);
                        }
                        continue;
                    }
                    if rb.is_full() {
                        return Poll::Ready(Some(Err(BodyError::Malformed(
                            "chunk line too long".into(),
                        ))));
                    }
                }
                _ => {}
            }
            match ready!(rb.poll_fill(io, cx)) {
                Ok(0) if *self == Framing::UntilClose => {
                    *self = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(BodyError::Closed))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(BodyError::Io(e)))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::READ_BUF;
    use std::pin::Pin;

    #[test]
    fn chunk_sizes_are_hex_digits_and_nothing_else() {
        assert_eq!(parse_chunk_size(b"1a"), Some(26));
        assert_eq!(parse_chunk_size(b"A;name=value"), Some(10));
        assert_eq!(parse_chunk_size(b"5 ;x"), Some(5));
        assert_eq!(parse_chunk_size(b"0"), Some(0));
        for bad in [
            &b""[..],
            b"+5",
            b"-5",
            b"0x5",
            b" 5",
            b"5 x",
            b"g",
            b"11111111111111111",
        ] {
            assert_eq!(
                parse_chunk_size(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn content_lengths_are_digits_and_nothing_else() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b"0042"), Some(42));
        assert_eq!(
            parse_content_length(b"18446744073709551615"),
            Some(u64::MAX)
        );
        for bad in [
            &b""[..],
            b"+5",
            b"-5",
            b" 5",
            b"5 ",
            b"5 6",
            b"5, 6",
            b"5,5",
            b"0x5",
            b"18446744073709551616",
        ] {
            assert_eq!(
                parse_content_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// The framing a list of (field, value) pairs adds up to, as both parsers see it.
    fn framing_of(fields: &[(&str, &str)], http10: bool) -> Result<Option<Framing>, FramingError> {
        let mut f = FramingFields::default();
        for (name, value) in fields {
            match *name {
                "cl" => f.content_length(value.as_bytes())?,
                _ => f.transfer_encoding(value.as_bytes())?,
            }
        }
        f.framing(http10)
    }

    #[test]
    fn framing_fields_follow_rfc_9112_or_are_refused() {
        use FramingError::*;
        let ok = [
            (&[][..], None),
            (&[("cl", "0")][..], Some(Framing::Done)),
            (&[("cl", "7"), ("cl", "7")], Some(Framing::Length(7))),
            (&[("te", "chunked")], Some(Framing::Chunked(Chunk::Size))),
            (
                &[("te", ", Chunked ,")],
                Some(Framing::Chunked(Chunk::Size)),
            ),
        ];
        for (fields, want) in ok {
            assert_eq!(framing_of(fields, false), Ok(want), "{fields:?}");
        }
        let refused = [
            (&[("cl", "+5")][..], InvalidLength),
            (&[("cl", "5, 5")], InvalidLength),
            (&[("cl", "5"), ("cl", "6")], ConflictingLengths),
            (&[("te", " , ")], EmptyCoding),
            (&[("te", "chunked"), ("cl", "5")], LengthAndCoding),
            (&[("cl", "5"), ("te", "chunked")], LengthAndCoding),
            (&[("te", "gzip")], ChunkedNotFinal),
            (&[("te", "chunked, gzip")], ChunkedNotFinal),
            (&[("te", "chunked"), ("te", "chunked")], ChunkedNotFinal),
            (&[("te", "gzip, chunked")], UnsupportedCoding),
        ];
        for (fields, want) in refused {
            assert_eq!(framing_of(fields, false), Err(want), "{fields:?}");
        }
        assert_eq!(framing_of(&[("te", "chunked")], true), Err(CodingInHttp10));
        assert_eq!(
            FramingFields::default().transfer_encoding(b"chunked\xff"),
            Err(InvalidCoding)
        );
    }

    /// Decodes `wire` fed in pieces of `piece` bytes; returns the body or the error.
    fn decode(framing: Framing, wire: &[u8], piece: usize) -> Result<Vec<u8>, String> {
        let mut io = pieces(wire, piece);
        let mut rb = ReadBuffer::default();
        rb.ensure(64);
        let mut f = framing;
        let mut out = Vec::new();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        loop {
            match f.poll_data(&mut rb, &mut io, &mut cx) {
                Poll::Ready(None) => return Ok(out),
                Poll::Ready(Some(Ok(b))) => out.extend_from_slice(&b),
                Poll::Ready(Some(Err(e))) => return Err(e.to_string()),
                Poll::Pending => unreachable!("an in-memory reader is always ready"),
            }
        }
    }

    /// An in-memory reader handing out at most `piece` bytes per read.
    fn pieces(wire: &[u8], piece: usize) -> Pieces {
        Pieces {
            data: wire.to_vec(),
            at: 0,
            piece,
        }
    }

    struct Pieces {
        data: Vec<u8>,
        at: usize,
        piece: usize,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self
                .piece
                .min(buf.remaining())
                .min(self.data.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_chunked_body_decodes_whatever_the_read_sizes() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for piece in [1, 2, 7, 64] {
            assert_eq!(
                decode(Framing::Chunked(Chunk::Size), wire, piece).unwrap(),
                b"hello world",
                "piece {piece}"
            );
        }
    }

    #[test]
    fn a_length_body_stops_at_its_length() {
        assert_eq!(
            decode(Framing::Length(5), b"helloGET / HTTP/1.1", 3).unwrap(),
            b"hello"
        );
        assert!(decode(Framing::Length(9), b"hello", 3)
            .unwrap_err()
            .contains("closed mid-body"));
    }

    #[test]
    fn broken_chunked_bodies_are_errors() {
        let cases: [(&[u8], &str); 4] = [
            (b"zz\r\n", "chunk size"),
            (b"5\r\nhelloXX0\r\n\r\n", "chunk without CRLF"),
            (b"5\nhello\r\n0\r\n\r\n", "chunk size"),
            (b"5\r\nhel", "closed mid-body"),
        ];
        for (wire, want) in cases {
            let err = decode(Framing::Chunked(Chunk::Size), wire, 64).unwrap_err();
            assert!(
                err.contains(want),
                "{err} for {:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let endless = format!("0\r\n{}", "x: y\r\n".repeat(100));
        assert!(
            decode(Framing::Chunked(Chunk::Size), endless.as_bytes(), 64)
                .unwrap_err()
                .contains("too many trailer lines")
        );
        let long = format!("5;{}\r\n", "x".repeat(READ_BUF));
        assert!(decode(Framing::Chunked(Chunk::Size), long.as_bytes(), 64)
            .unwrap_err()
            .contains("too long"));
    }
}
