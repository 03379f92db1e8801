//! The HTTP/1.1 client of a run: write a prepared request, read the response head with
//! httparse and skip its body by its framing. Written here rather than taken from hyper
//! because a load generator needs none of hyper's body plumbing, and every instruction spent
//! per request is a request the generator cannot send (`bench/loadgen.sh` measures it
//! against wrk).

use crate::connect::{Connector, ErrorKind, Failure, Stream};
use crate::request::Prepared;

/// Read buffer size: a typical response head and body fit in one read.
const BUF: usize = 16 << 10;
/// Most headers a response may have.
const MAX_HEADERS: usize = 64;

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    pub keep_alive: bool,
}

/// Parses a response head from the start of `buf`: `Ok(None)` while it is incomplete.
/// `head_request`: the request was HEAD, so the response has no body.
pub fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(Failure::new(
                ErrorKind::Protocol,
                format!("malformed response head: {e}"),
            ))
        }
    };
    let status = res.code.unwrap_or(0);
    let http11 = res.version == Some(1);
    let mut keep_alive = http11;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| Failure::new(ErrorKind::Protocol, "invalid content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Failure::new(
                    ErrorKind::Protocol,
                    "conflicting content-length",
                ));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = last_token(h.value).eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                    keep_alive = true;
                }
            }
        }
    }
    let bodiless = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if bodiless {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked(Chunked::default())
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    Ok(Some(Head {
        len,
        status,
        framing,
        keep_alive,
    }))
}

fn last_token(v: &[u8]) -> &[u8] {
    v.rsplit(|&b| b == b',').next().unwrap_or(v).trim_ascii()
}

/// Where a chunked body's reader stands; fed bytes as they arrive, it says how many
/// belonged to the body and whether the body has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Chunked {
    #[default]
    Size,
    SizeDigits(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    EndLf,
    Done,
}

impl Chunked {
    /// Consumes body bytes from `data`; returns how many were the body's.
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, Failure> {
        let bad = || Failure::new(ErrorKind::Protocol, "malformed chunked body");
        let mut i = 0;
        while i < data.len() && *self != Chunked::Done {
            let b = data[i];
            *self = match *self {
                Chunked::Size | Chunked::SizeDigits(_) => {
                    let n = match *self {
                        Chunked::SizeDigits(n) => n,
                        _ => 0,
                    };
                    match (b as char).to_digit(16) {
                        Some(d) => Chunked::SizeDigits(
                            n.checked_mul(16)
                                .and_then(|n| n.checked_add(d as u64))
                                .ok_or_else(bad)?,
                        ),
                        None if *self == Chunked::Size => return Err(bad()),
                        None if b == b'\r' => Chunked::SizeLf(n),
                        None if b == b';' || b == b' ' || b == b'\t' => Chunked::Extension(n),
                        None => return Err(bad()),
                    }
                }
                Chunked::Extension(n) => match b {
                    b'\r' => Chunked::SizeLf(n),
                    b'\n' => return Err(bad()),
                    _ => Chunked::Extension(n),
                },
                Chunked::SizeLf(n) => match (b, n) {
                    (b'\n', 0) => Chunked::TrailerStart,
                    (b'\n', n) => Chunked::Data(n),
                    _ => return Err(bad()),
                },
                Chunked::Data(n) => {
                    let take = (n.min((data.len() - i) as u64)) as usize;
                    i += take;
                    let left = n - take as u64;
                    *self = if left == 0 {
                        Chunked::DataCr
                    } else {
                        Chunked::Data(left)
                    };
                    continue;
                }
                Chunked::DataCr if b == b'\r' => Chunked::DataLf,
                Chunked::DataLf if b == b'\n' => Chunked::Size,
                Chunked::TrailerStart if b == b'\r' => Chunked::EndLf,
                Chunked::TrailerStart | Chunked::Trailer if b == b'\n' => {
                    if *self == Chunked::TrailerStart {
                        return Err(bad());
                    }
                    Chunked::TrailerStart
                }
                Chunked::TrailerStart | Chunked::Trailer => Chunked::Trailer,
                Chunked::EndLf if b == b'\n' => Chunked::Done,
                _ => return Err(bad()),
            };
            i += 1;
        }
        Ok(i)
    }
}

/// One HTTP/1.1 connection and its read buffer.
pub struct Conn {
    stream: Stream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Responses read on this connection so far.
    served: u64,
    /// Bytes read on this connection so far.
    received: u64,
}

/// What one exchange brought back.
pub struct Exchanged {
    pub status: u16,
    pub bytes_in: u64,
    /// A new connection was opened for this request.
    pub connected: bool,
}

impl Conn {
    fn new(stream: Stream) -> Conn {
        Conn {
            stream,
            buf: vec![0; BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            served: 0,
            received: 0,
        }
    }

    /// Reads more bytes after the ones held; returns how many (0: the peer closed).
    async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("response head larger than {BUF} bytes"),
                ));
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        self.received += n as u64;
        Ok(n)
    }

    async fn fill(&mut self) -> Result<usize, Failure> {
        self.read_more().await.map_err(|e| Failure::io(&e))
    }

    /// Reads one response; returns its status, its size, and whether the connection can
    /// carry another request.
    async fn read_response(&mut self, head_request: bool) -> Result<(u16, u64, bool), Failure> {
        let mut bytes = 0u64;
        let head = loop {
            match parse_head(&self.buf[self.start..self.end], head_request)? {
                // 1xx other than 101 (e.g. 103 Early Hints) precede the real response.
                Some(h) if (100..200).contains(&h.status) && h.status != 101 => {
                    self.start += h.len;
                    bytes += h.len as u64;
                }
                Some(h) => break h,
                None => {
                    if self.fill().await? == 0 {
                        let kind = if self.end == self.start && bytes == 0 {
                            "the server closed the connection before answering"
                        } else {
                            "the server closed the connection mid-head"
                        };
                        return Err(Failure::new(ErrorKind::Reset, kind));
                    }
                }
            }
        };
        self.start += head.len;
        bytes += head.len as u64;
        match head.framing {
            Framing::Length(mut left) => loop {
                let have = ((self.end - self.start) as u64).min(left);
                self.start += have as usize;
                bytes += have;
                left -= have;
                if left == 0 {
                    break;
                }
                if self.fill().await? == 0 {
                    return Err(Failure::new(
                        ErrorKind::Reset,
                        format!("the server closed the connection with {left} body bytes to come"),
                    ));
                }
            },
            Framing::Chunked(mut chunked) => loop {
                let n = chunked.feed(&self.buf[self.start..self.end])?;
                self.start += n;
                bytes += n as u64;
                if chunked == Chunked::Done {
                    break;
                }
                if self.fill().await? == 0 {
                    return Err(Failure::new(
                        ErrorKind::Reset,
                        "the server closed the connection mid-chunk",
                    ));
                }
            },
            Framing::UntilClose => {
                bytes += (self.end - self.start) as u64;
                self.start = self.end;
                loop {
                    match self.read_more().await {
                        Ok(0) => break,
                        Ok(_) => {
                            bytes += (self.end - self.start) as u64;
                            self.start = self.end;
                        }
                        // A TLS server that closes without close_notify: the close is the
                        // end of this body all the same (it has no other end).
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                        Err(e) => return Err(Failure::io(&e)),
                    }
                }
            }
        }
        Ok((head.status, bytes, head.keep_alive))
    }
}

/// Sends `req` on `conn` (opening one when there is none) and reads the response. A reused
/// connection that the server had closed while idle is reopened once, as browsers do,
/// when nothing of the response had arrived: that is the server's keep-alive timeout, not a
/// failed request.
pub async fn exchange(
    conn: &mut Option<Conn>,
    connector: &Connector,
    req: &Prepared,
) -> Result<Exchanged, Failure> {
    let mut connected = false;
    loop {
        let c = match conn {
            Some(c) => c,
            None => {
                connected = true;
                conn.insert(Conn::new(connector.connect().await?))
            }
        };
        let reused = c.served > 0;
        let received = c.received;
        let sent = c.stream.write_all(&req.h1).await;
        let result = match sent {
            Ok(()) => c.read_response(req.head).await,
            Err(e) => Err(Failure::io(&e)),
        };
        match result {
            Ok((status, bytes_in, keep_alive)) => {
                c.served += 1;
                if !keep_alive || req.close {
                    *conn = None;
                }
                return Ok(Exchanged {
                    status,
                    bytes_in,
                    connected,
                });
            }
            Err(f) => {
                // Stale only if not one byte of an answer came: a response cut short is a
                // failure, never retried.
                let stale = reused && f.kind == ErrorKind::Reset && c.received == received;
                *conn = None;
                if !stale || connected {
                    return Err(f);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Head {
        parse_head(s.as_bytes(), false).unwrap().unwrap()
    }

    #[test]
    fn framing_follows_the_headers() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (200, Framing::Length(12), true)
        );
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(
            (h.framing, h.keep_alive),
            (Framing::Chunked(Chunked::Size), false)
        );
        let h = head("HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(0));
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(0));
    }

    #[test]
    fn incomplete_heads_wait_and_bad_ones_are_protocol_errors() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-", false)
            .unwrap()
            .is_none());
        for bad in [
            "HTTP/1.1 2x0 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            let e = parse_head(bad.as_bytes(), false).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Protocol, "{bad}");
        }
    }

    #[test]
    fn chunked_body_ends_where_it_says_whatever_the_splits() {
        let body = b"5;ext=1\r\nhello\r\n0a\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let body_len = body.len() - 4;
        for split in 0..body.len() {
            let mut c = Chunked::default();
            let a = c.feed(&body[..split]).unwrap();
            let b = c.feed(&body[a..]).unwrap();
            assert_eq!((a + b, c), (body_len, Chunked::Done), "split at {split}");
        }
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            "x\r\n",
            "5\n",
            "5\r\nhelloX\r\n",
            "\r\n",
            "0\r\n\n",
            "ffffffffffffffffff\r\n",
        ] {
            let mut c = Chunked::default();
            assert!(c.feed(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
