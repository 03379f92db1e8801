//! An upstream's HTTP/1.1 response head: parsed by httparse, then held to the same framing
//! rules as a client's request (`h1::FramingFields`, RFC 9112 §6): a `Content-Length` that
//! is not just digits, two that differ, `Transfer-Encoding` with `Content-Length`, a coding
//! other than a single final `chunked`, or `Transfer-Encoding` in HTTP/1.0 make the response
//! malformed (502 for the client, a passive failure for the replica). A lenient reading
//! here would let a broken or hostile upstream split one response into two for a client.

use super::Error;
use crate::h1::{has_token, Framing, FramingError, FramingFields, ReadBuffer, READ_BUF};
use crate::headers::{header_name, lists_other_headers};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, Version};
use std::task::{Context, Poll, Waker};

/// Headers a response head may carry.
const MAX_HEADERS: usize = 128;
/// Room left in a response's header map for what the gateway adds (X-Request-Id, a route's
/// additions), so adding them does not regrow the map.
const RESPONSE_HEADERS_ADDED: usize = 2;

/// What a response head says: the response without its body, how the body is framed, and
/// whether the connection may carry another request.
pub(super) type ResponseHead = (Response<()>, Framing, bool);

fn malformed(e: FramingError) -> Error {
    Error::Malformed(e.message().into())
}

/// Parses a response head at the start of `data`: `Ok(None)` while it is incomplete, else
/// its length and what it says. `is_head`: the request was HEAD (no body follows).
#[doc(hidden)]
pub fn parse_response_head(
    data: &[u8],
    is_head: bool,
) -> Result<Option<(usize, ResponseHead)>, Error> {
    // Uninitialised slots: zeroing 128 headers (4 KiB) on every call cost more than
    // parsing a typical response head.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    if data.is_empty() {
        return Ok(None);
    }
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        data,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Error::Malformed(e.to_string())),
    };
    // One allocation for the whole head; header values are slices of it.
    let bytes = Bytes::copy_from_slice(&data[..len]);
    let base = data.as_ptr() as usize;
    let code = parsed.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| Error::Malformed(format!("status {code}")))?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut map = HeaderMap::with_capacity(parsed.headers.len() + RESPONSE_HEADERS_ADDED);
    let mut fields = FramingFields::default();
    let (mut close, mut keep_alive_10) = (false, false);
    for h in parsed.headers.iter() {
        let name = header_name(h.name.as_bytes())
            .map_err(|_| Error::Malformed(format!("header name {:?}", h.name)))?;
        if name == header::TRANSFER_ENCODING {
            fields.transfer_encoding(h.value).map_err(malformed)?;
            // Hop-by-hop, read here for framing and never forwarded: not kept.
            continue;
        }
        let off = h.value.as_ptr() as usize - base;
        let value = HeaderValue::from_maybe_shared(bytes.slice(off..off + h.value.len()))
            .map_err(|_| Error::Malformed(format!("header {name}")))?;
        if name == header::CONTENT_LENGTH {
            // Kept: a HEAD's or a 304's length describes the body it did not send.
            fields.content_length(h.value).map_err(malformed)?;
        } else if name == header::CONNECTION {
            close |= has_token(h.value, b"close");
            keep_alive_10 |= has_token(h.value, b"keep-alive");
            // Kept only when it names headers that must go too (strip_hop_by_hop).
            if !lists_other_headers(&value) {
                continue;
            }
        } else if name.as_str() == "keep-alive" {
            continue;
        }
        map.append(name, value);
    }
    // RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304, whatever the fields say; then
    // chunked, a length, or until the connection closes.
    let framing = if is_head || status.is_informational() || code == 204 || code == 304 {
        Framing::Done
    } else {
        fields
            .framing(version == Version::HTTP_10)
            .map_err(malformed)?
            .unwrap_or(Framing::UntilClose)
    };
    let keep_alive = !close
        && (version == Version::HTTP_11 || keep_alive_10)
        && !matches!(framing, Framing::UntilClose);
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = map;
    Ok(Some((len, (resp, framing, keep_alive))))
}

/// Checks the response parser's invariants on arbitrary bytes from an upstream, panicking
/// when one breaks; the fuzz target `h1_response` and a seeded test feed it. A head is
/// never complete before its end, and no body decodes to more bytes than arrived.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    for is_head in [false, true] {
        let Ok(Some((len, (_, mut framing, _)))) = parse_response_head(data, is_head) else {
            continue;
        };
        assert!(len <= data.len());
        assert!(
            !matches!(parse_response_head(&data[..len - 1], is_head), Ok(Some(_))),
            "a head of {len} bytes was complete before its end"
        );
        let mut rb = ReadBuffer::with_capacity(READ_BUF);
        let mut io: &[u8] = &data[len..];
        let mut cx = Context::from_waker(Waker::noop());
        let mut got = 0;
        while let Poll::Ready(Some(Ok(b))) = framing.poll_data(&mut rb, &mut io, &mut cx) {
            got += b.len();
        }
        assert!(got <= data.len() - len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::Chunk;

    /// The framing and keep-alive of a complete head, or the parser's refusal.
    fn framing_of(raw: &[u8]) -> Result<(Framing, bool), String> {
        match parse_response_head(raw, false) {
            Ok(Some((len, (_, framing, keep_alive)))) => {
                assert_eq!(len, raw.len());
                Ok((framing, keep_alive))
            }
            Ok(None) => panic!("incomplete: {:?}", String::from_utf8_lossy(raw)),
            Err(e) => Err(e.to_string()),
        }
    }

    fn head(fields: &str) -> Vec<u8> {
        format!("HTTP/1.1 200 OK\r\n{fields}\r\n").into_bytes()
    }

    #[test]
    fn content_length_is_read_as_strictly_as_a_requests() {
        assert_eq!(
            framing_of(&head("Content-Length: 5\r\n")),
            Ok((Framing::Length(5), true))
        );
        assert_eq!(
            framing_of(&head("Content-Length: 5\r\nContent-Length: 5\r\n")),
            Ok((Framing::Length(5), true)),
            "identical repeated lengths are one length (RFC 9110 §8.6)"
        );
        assert_eq!(
            framing_of(&head("Content-Length: 0\r\n")),
            Ok((Framing::Done, true))
        );
        for bad in [
            "Content-Length: +5\r\n",
            "Content-Length: -5\r\n",
            "Content-Length: 5 6\r\n",
            "Content-Length: 5, 6\r\n",
            "Content-Length: 5, 5\r\n",
            "Content-Length: 0x5\r\n",
            "Content-Length: \r\n",
            "Content-Length: 99999999999999999999\r\n",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
        ] {
            let err = framing_of(&head(bad)).expect_err(bad);
            assert!(err.contains("Content-Length"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn transfer_encoding_is_read_as_strictly_as_a_requests() {
        assert_eq!(
            framing_of(&head("Transfer-Encoding: chunked\r\n")),
            Ok((Framing::Chunked(Chunk::Size), true))
        );
        let refused = [
            // RFC 9112 §6.3: Transfer-Encoding would win, but the message "ought to be
            // handled as an error": it is (either order).
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                "both",
            ),
            (
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                "both",
            ),
            ("Transfer-Encoding: chunked, chunked\r\n", "final"),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "final",
            ),
            ("Transfer-Encoding: chunked, gzip\r\n", "final"),
            ("Transfer-Encoding: gzip\r\n", "final"),
            ("Transfer-Encoding: xchunked\r\n", "final"),
            ("Transfer-Encoding: ,\r\n", "empty"),
            ("Transfer-Encoding: gzip, chunked\r\n", "not supported"),
        ];
        for (fields, why) in refused {
            let err = framing_of(&head(fields)).expect_err(fields);
            assert!(err.contains(why), "{fields:?}: {err}");
        }
        let err = framing_of(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .expect_err("HTTP/1.0 with Transfer-Encoding");
        assert!(err.contains("HTTP/1.0"), "{err}");
    }

    #[test]
    fn a_response_without_framing_fields_runs_until_close_and_ends_the_connection() {
        assert_eq!(framing_of(&head("")), Ok((Framing::UntilClose, false)));
        assert_eq!(
            framing_of(&head("Content-Length: 2\r\nConnection: close\r\n")),
            Ok((Framing::Length(2), false))
        );
        assert_eq!(
            framing_of(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n"),
            Ok((Framing::Length(2), false))
        );
        assert_eq!(
            framing_of(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n"),
            Ok((Framing::Length(2), true))
        );
    }

    #[test]
    fn head_1xx_204_and_304_have_no_body_whatever_their_fields_say() {
        let raw = head("Content-Length: 10\r\n");
        let (_, (resp, framing, _)) = parse_response_head(&raw, true).unwrap().unwrap();
        assert_eq!(framing, Framing::Done);
        assert_eq!(
            resp.headers()["content-length"],
            "10",
            "kept for the client"
        );
        for status in ["204 No Content", "304 Not Modified", "103 Early Hints"] {
            let raw = format!("HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n");
            assert_eq!(
                framing_of(raw.as_bytes()).unwrap().0,
                Framing::Done,
                "{status}"
            );
        }
    }

    #[test]
    fn hop_by_hop_response_headers_are_left_out_unless_connection_names_others() {
        let headers_of = |raw: &[u8]| parse_response_head(raw, false).unwrap().unwrap().1 .0;
        let r = headers_of(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n");
        assert_eq!(r.headers().len(), 1, "{:?}", r.headers());
        assert!(r.headers().contains_key("x-a"));
        // A Connection naming another header stays, so that header is stripped with it.
        let r = headers_of(
            b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(
            r.headers().contains_key("connection") && r.headers().contains_key("x-secret"),
            "{:?}",
            r.headers()
        );
    }

    #[test]
    fn a_head_is_incomplete_until_its_blank_line() {
        let raw = head("Content-Length: 5\r\n");
        for cut in [0, 1, 8, raw.len() - 2, raw.len() - 1] {
            assert!(
                matches!(parse_response_head(&raw[..cut], false), Ok(None)),
                "cut at {cut}"
            );
        }
        assert!(parse_response_head(b"HTTP/1.1 2x0 OK\r\n\r\n", false).is_err());
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nBad Header: 1\r\n\r\n", false).is_err());
    }

    /// A hostile or broken upstream: mutated responses never panic the parser, a head is
    /// never complete before its end, and a body never decodes to more than arrived.
    #[test]
    fn mutated_responses_never_break_the_parsers_invariants() {
        let seeds: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n0\r\nT: y\r\n\r\n",
            b"HTTP/1.0 101 Switching\r\nUpgrade: websocket\r\nConnection: x-a\r\nX-A: 1\r\n\r\n",
        ];
        let alphabet = b"\r\n :;,+0123456789abcdefABCDEF\t\x00\x7f\xff-chunkedHTTP";
        crate::h1::for_each_mutation(&seeds, alphabet, 2027, 20_000, fuzz_check);
    }
}
