//! A client's HTTP/1.1 request head: parsed by httparse, then held to RFC 9112's framing
//! rules, stricter than hyper. Content-Length with Transfer-Encoding, conflicting or
//! non-digit lengths, a final coding other than chunked, or two Host headers are refused
//! (400, and the connection closes): two parsers that disagree on where a request ends are
//! how requests get smuggled.

use super::{has_token, Framing, FramingError, FramingFields, ReadBuffer, READ_BUF};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use std::mem::MaybeUninit;
use std::task::{Context, Poll};

/// Header fields a request head may carry (431 beyond).
const MAX_HEADERS: usize = 128;
/// Room left in a request's header map for what `forward` adds (X-Forwarded-For, -Proto,
/// -Host, X-Request-Id), so adding them does not regrow the map.
const REQUEST_HEADERS_ADDED: usize = 4;

/// A parsed request head and what it says about the connection.
#[derive(Debug)]
pub struct Head {
    pub request: Request<()>,
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// A request refused before it reaches the router; the connection is closed after it.
#[derive(Debug, PartialEq, Eq)]
pub struct Reject {
    pub status: StatusCode,
    pub message: String,
}

fn reject<T>(status: StatusCode, message: impl Into<String>) -> Result<T, Reject> {
    Err(Reject {
        status,
        message: message.into(),
    })
}

/// Framing fields the shared rules refused: 400, or 501 for a coding that is well formed
/// but not implemented.
fn refuse_framing<T>(e: FramingError) -> Result<T, Reject> {
    let status = match e {
        FramingError::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::BAD_REQUEST,
    };
    reject(status, e.message())
}

/// True when the request line is well formed but names an HTTP version other than 1.x
/// (505 rather than 400).
fn is_other_version(data: &[u8]) -> bool {
    let line = data.split(|&b| b == b'\r').next().unwrap_or(&[]);
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    matches!(parts.as_slice(), [_, _, v] if v.len() == 8
        && v.starts_with(b"HTTP/")
        && v[5].is_ascii_digit()
        && v[6] == b'.'
        && v[7].is_ascii_digit())
}

/// Parses a request head at the start of `data`: `Ok(None)` while it is incomplete,
/// else the head and its length. `max_header_bytes` bounds the whole head (431 beyond).
pub fn parse_head(data: &[u8], max_header_bytes: usize) -> Result<Option<(usize, Head)>, Reject> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(data, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if data.len() >= max_header_bytes => {
            return reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("the request head exceeds {max_header_bytes} bytes"),
            )
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("more than {MAX_HEADERS} header fields"),
            )
        }
        Err(httparse::Error::Version) if is_other_version(data) => {
            return reject(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "only HTTP/1.0 and HTTP/1.1 are spoken here (and h2)",
            )
        }
        Err(e) => return reject(StatusCode::BAD_REQUEST, format!("malformed request: {e}")),
    };
    if len > max_header_bytes {
        return reject(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request head exceeds {max_header_bytes} bytes"),
        );
    }
    // One allocation for the whole head; the target and header values are slices of it.
    let bytes = Bytes::copy_from_slice(&data[..len]);
    let base = data.as_ptr() as usize;
    let slice = |s: &[u8]| {
        let off = s.as_ptr() as usize - base;
        bytes.slice(off..off + s.len())
    };
    let method = Method::from_bytes(parsed.method.unwrap_or("").as_bytes());
    let Ok(method) = method else {
        return reject(StatusCode::BAD_REQUEST, "invalid method");
    };
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let target = parsed.path.unwrap_or("");
    let uri = match Uri::from_maybe_shared(slice(target.as_bytes())) {
        // origin-form, absolute-form, asterisk-form for OPTIONS, authority-form for CONNECT
        Ok(u) if target.starts_with('/') => u,
        Ok(u) if u.scheme().is_some() && u.authority().is_some() => u,
        Ok(u) if target == "*" && method == Method::OPTIONS => u,
        Ok(u) if method == Method::CONNECT && u.authority().is_some() => u,
        _ => return reject(StatusCode::BAD_REQUEST, "invalid request target"),
    };

    let mut map = HeaderMap::with_capacity(parsed.headers.len() + REQUEST_HEADERS_ADDED);
    let mut fields = FramingFields::default();
    let (mut hosts, mut close, mut keep_alive_10, mut expect_continue) = (0, false, false, false);
    for h in parsed.headers.iter() {
        let Ok(name) = crate::headers::header_name(h.name.as_bytes()) else {
            return reject(StatusCode::BAD_REQUEST, "invalid header name");
        };
        let Ok(value) = HeaderValue::from_maybe_shared(slice(h.value)) else {
            return reject(StatusCode::BAD_REQUEST, format!("invalid {name} value"));
        };
        if name == header::CONTENT_LENGTH {
            fields.content_length(h.value).or_else(refuse_framing)?;
        } else if name == header::TRANSFER_ENCODING {
            fields.transfer_encoding(h.value).or_else(refuse_framing)?;
        } else if name == header::HOST {
            hosts += 1;
        } else if name == header::CONNECTION {
            close |= has_token(value.as_bytes(), b"close");
            keep_alive_10 |= has_token(value.as_bytes(), b"keep-alive");
        } else if name == header::EXPECT {
            if !value.as_bytes().eq_ignore_ascii_case(b"100-continue") {
                return reject(StatusCode::EXPECTATION_FAILED, "unsupported expectation");
            }
            expect_continue = true;
        }
        map.append(name, value);
    }
    if hosts > 1 {
        return reject(StatusCode::BAD_REQUEST, "more than one Host header");
    }
    // RFC 9112 §6.1 lets a server frame by Transfer-Encoding and drop Content-Length;
    // refusing is safer, as a front proxy may have framed the same bytes by length.
    let framing = fields
        .framing(version == Version::HTTP_10)
        .or_else(refuse_framing)?
        .unwrap_or(Framing::Done);
    let keep_alive = !close && (version == Version::HTTP_11 || keep_alive_10);
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    Ok(Some((
        len,
        Head {
            request,
            framing,
            keep_alive,
            expect_continue: expect_continue && version == Version::HTTP_11,
        },
    )))
}

/// One request as [`parse_stream`] saw it.
#[doc(hidden)]
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    pub method: String,
    pub target: String,
    pub body: Vec<u8>,
}

/// Parses `data` as a stream of pipelined requests, decoding each body, until it runs out
/// or a request is refused; returns each request's method, target and body, or the refusal.
/// The fuzz target (`fuzz/fuzz_targets/h1_request.rs`) and the tests drive the parser
/// through it without a socket.
#[doc(hidden)]
pub fn parse_stream(data: &[u8]) -> Vec<Result<Parsed, Reject>> {
    let mut out = Vec::new();
    let mut io: &[u8] = &[];
    let mut rb = ReadBuffer::with_capacity(data.len().max(1));
    rb.buf[..data.len()].copy_from_slice(data);
    rb.end = data.len();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    while !rb.is_empty() {
        match parse_head(rb.data(), READ_BUF) {
            Ok(Some((len, mut head))) => {
                rb.consume(len);
                let mut body = Vec::new();
                loop {
                    match head.framing.poll_data(&mut rb, &mut io, &mut cx) {
                        Poll::Ready(Some(Ok(b))) => body.extend_from_slice(&b),
                        Poll::Ready(None) => break,
                        Poll::Ready(Some(Err(e))) => {
                            out.push(reject(StatusCode::BAD_REQUEST, e.to_string()));
                            return out;
                        }
                        Poll::Pending => unreachable!("a slice is always ready"),
                    }
                }
                out.push(Ok(Parsed {
                    method: head.request.method().to_string(),
                    target: head.request.uri().to_string(),
                    body,
                }));
            }
            Ok(None) => break,
            Err(r) => {
                out.push(Err(r));
                break;
            }
        }
    }
    out
}

/// Checks the parser's invariants on arbitrary bytes, panicking when one breaks; the fuzz
/// target and a seeded test feed it. Beyond "never panics": a head is never complete before
/// its end (a prefix of a complete head is incomplete or refused), a refusal is a 4xx or
/// 5xx, and no body decodes to more bytes than arrived.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    const MAX: usize = 4096;
    match parse_head(data, MAX) {
        Ok(Some((len, head))) => {
            assert!(len <= data.len() && len <= MAX);
            assert!(!head.expect_continue || head.request.version() == Version::HTTP_11);
            for k in [len - 1, len / 2, len.saturating_sub(2)] {
                if let Ok(Some((l, _))) = parse_head(&data[..k], MAX) {
                    panic!("a head of {len} bytes was complete after {k} ({l})");
                }
            }
        }
        Ok(None) => assert!(data.len() < MAX),
        Err(r) => assert!(r.status.is_client_error() || r.status.is_server_error()),
    }
    let total: usize = parse_stream(data)
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|p| p.body.len())
        .sum();
    assert!(total <= data.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(raw: &[u8]) -> Option<u16> {
        match parse_stream(raw).pop()? {
            Ok(_) => None,
            Err(r) => Some(r.status.as_u16()),
        }
    }

    #[test]
    fn pipelined_requests_parse_in_order_with_their_bodies() {
        let raw = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;e=1\r\nde\r\n0\r\nT: 1\r\n\r\n\
OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n\
GET http://example.com/d?q HTTP/1.1\r\nHost: example.com\r\n\r\n";
        let got: Vec<_> = parse_stream(raw).into_iter().map(Result::unwrap).collect();
        let want = [
            ("GET", "/a", &b""[..]),
            ("POST", "/b", b"hello"),
            ("POST", "/c", b"abcde"),
            ("OPTIONS", "*", b""),
            ("GET", "http://example.com/d?q", b""),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, (m, t, b)) in got.iter().zip(want) {
            assert_eq!(
                (g.method.as_str(), g.target.as_str(), &g.body[..]),
                (m, t, b)
            );
        }
    }

    #[test]
    fn smuggling_patterns_are_refused() {
        let cases: [(&[u8], u16); 14] = [
            (b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", 400),
            (b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", 400),
            (b"Content-Length: 4\r\nContent-Length: 5\r\n", 400),
            (b"Content-Length: 4, 4\r\n", 400),
            (b"Content-Length: +4\r\n", 400),
            (b"Content-Length: 99999999999999999999\r\n", 400),
            (b"Transfer-Encoding: chunked, chunked\r\n", 400),
            (
                b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
                400,
            ),
            (b"Transfer-Encoding: xchunked\r\n", 400),
            (b"Transfer-Encoding: ,\r\n", 400),
            (b"Transfer-Encoding: gzip, chunked\r\n", 501),
            (b"Transfer-Encoding : chunked\r\n", 400),
            (b" Transfer-Encoding: chunked\r\n", 400),
            (b"Host: y\r\n", 400),
        ];
        for (extra, want) in cases {
            let mut raw = b"POST / HTTP/1.1\r\nHost: x\r\n".to_vec();
            raw.extend_from_slice(extra);
            raw.extend_from_slice(b"\r\n0\r\n\r\n");
            assert_eq!(
                status_of(&raw),
                Some(want),
                "{:?}",
                String::from_utf8_lossy(extra)
            );
        }
        assert_eq!(
            status_of(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            Some(400)
        );
        // Identical repeated lengths are one length (RFC 9110 §8.6).
        assert_eq!(
            status_of(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"
            ),
            None
        );
    }

    #[test]
    fn malformed_heads_get_the_status_that_names_the_problem() {
        let cases: [(&[u8], u16); 8] = [
            (b"GET /a b HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nBad Header: y\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),
            (b"G@T / HTTP/1.1\r\n\r\n", 400),
            (b"GET relative HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/3.0\r\n\r\n", 505),
            (b"GET / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", 417),
        ];
        for (raw, want) in cases {
            assert_eq!(
                status_of(raw),
                Some(want),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: 1\r\n"))
            .collect();
        assert_eq!(
            status_of(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Some(431)
        );
    }

    #[test]
    fn a_head_is_incomplete_until_its_blank_line_and_refused_past_the_limit() {
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n", 1024),
            Ok(None)
        ));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(100));
        assert_eq!(parse_head(big.as_bytes(), 64).unwrap_err().status, 431);
        let done = format!("{big}\r\n");
        assert_eq!(parse_head(done.as_bytes(), 64).unwrap_err().status, 431);
        assert!(parse_head(done.as_bytes(), 1024).unwrap().is_some());
    }

    /// A seeded stand-in for the fuzzer (which needs nightly) in every test run: valid
    /// requests with random byte flips, insertions and cuts.
    #[test]
    fn mutated_requests_never_break_the_parsers_invariants() {
        let seeds: [&[u8]; 4] = [
            b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n",
            b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
            b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n0\r\nT: y\r\n\r\n",
            b"GET http://h:1/d HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n\r\n",
        ];
        let alphabet = b"\r\n :;,0123456789abcdefABCDEF\t\x00\x7f\xff/?#%+-chunkedHTTP";
        crate::h1::for_each_mutation(&seeds, alphabet, 2026, 20_000, fuzz_check);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let ka = |raw: &[u8]| parse_head(raw, 1024).unwrap().unwrap().1.keep_alive;
        assert!(ka(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n"
        ));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        let head = parse_head(
            b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
            1024,
        )
        .unwrap()
        .unwrap()
        .1;
        assert!(head.expect_continue);
        assert_eq!(head.framing, Framing::Length(3));
    }
}
