//! The PostgreSQL wire protocol (v3): startup packets, message framing, and the few backend
//! messages headroom writes itself. The relay does not decode what it forwards: it finds
//! message boundaries ([`Scanner`]) and looks at the tags it must act on.

use bytes::{Buf, BufMut, BytesMut};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The protocol version of a normal startup packet: 3.0.
pub const PROTOCOL_3: u32 = 196_608;
/// `SSLRequest`'s code in place of a version.
pub const SSL_REQUEST: u32 = 80_877_103;
/// `GSSENCRequest`'s.
pub const GSSENC_REQUEST: u32 = 80_877_104;
/// `CancelRequest`'s.
pub const CANCEL_REQUEST: u32 = 80_877_102;
/// A startup packet larger than this is refused (PostgreSQL's own limit is 10,000 bytes).
pub const MAX_STARTUP: usize = 10_000;

/// What a client sends first.
#[derive(Debug, PartialEq, Eq)]
pub enum Startup {
    /// Protocol 3.0 with its parameters (`user`, `database`, `application_name`, ...).
    Params(Vec<(String, String)>),
    Ssl,
    GssEnc,
    Cancel {
        pid: u32,
        secret: u32,
    },
}

impl Startup {
    pub fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one startup packet (its length, then its code and body).
pub async fn read_startup<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Startup> {
    let len = r.read_u32().await? as usize;
    if !(8..=MAX_STARTUP).contains(&len) {
        return Err(invalid(format!("startup packet of {len} bytes")));
    }
    let mut body = vec![0; len - 4];
    r.read_exact(&mut body).await?;
    parse_startup(&body)
}

/// A startup packet's body: the code, then what the code says follows.
pub fn parse_startup(body: &[u8]) -> io::Result<Startup> {
    let mut b = body;
    if b.len() < 4 {
        return Err(invalid("startup packet without a version".into()));
    }
    let code = b.get_u32();
    match code {
        SSL_REQUEST if b.is_empty() => Ok(Startup::Ssl),
        GSSENC_REQUEST if b.is_empty() => Ok(Startup::GssEnc),
        CANCEL_REQUEST if b.len() == 8 => Ok(Startup::Cancel {
            pid: b.get_u32(),
            secret: b.get_u32(),
        }),
        PROTOCOL_3 => {
            let mut params = Vec::new();
            loop {
                let key = cstr(&mut b)?;
                if key.is_empty() {
                    break;
                }
                let value = cstr(&mut b)?;
                params.push((key, value));
            }
            if !b.is_empty() {
                return Err(invalid("bytes after the startup parameters".into()));
            }
            Ok(Startup::Params(params))
        }
        v if v >> 16 != 1234 => Err(invalid(format!(
            "unsupported protocol {}.{}: headroom speaks 3.0",
            v >> 16,
            v & 0xffff
        ))),
        v => Err(invalid(format!("unknown request code {v}"))),
    }
}

/// Takes a NUL-terminated string off the front of `b`.
pub fn cstr(b: &mut &[u8]) -> io::Result<String> {
    let end = b
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| invalid("a string without its NUL".into()))?;
    let s = std::str::from_utf8(&b[..end])
        .map_err(|_| invalid("a string that is not UTF-8".into()))?
        .to_owned();
    *b = &b[end + 1..];
    Ok(s)
}

/// Reads one typed message into `buf` (cleared first): returns its tag; `buf` holds the body.
/// For the login phases; the relay frames with [`Scanner`] instead.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<u8> {
    let tag = r.read_u8().await?;
    let len = r.read_u32().await? as usize;
    if len < 4 || len > max {
        return Err(invalid(format!(
            "message '{}' of {len} bytes",
            tag.escape_ascii()
        )));
    }
    buf.clear();
    buf.resize(len - 4, 0);
    r.read_exact(buf).await?;
    Ok(tag)
}

pub fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Appends a message: the tag, the length (filled in after `body` wrote), the body.
pub fn message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_u32(0);
    body(out);
    let len = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

/// `Authentication*` ('R') with its code and data.
pub fn auth(out: &mut BytesMut, code: u32, data: &[u8]) {
    message(out, b'R', |o| {
        o.put_u32(code);
        o.put_slice(data);
    });
}

pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    message(out, b'S', |o| {
        put_cstr(o, name);
        put_cstr(o, value);
    });
}

pub fn backend_key(out: &mut BytesMut, pid: u32, secret: u32) {
    message(out, b'K', |o| {
        o.put_u32(pid);
        o.put_u32(secret);
    });
}

pub fn ready(out: &mut BytesMut, status: u8) {
    message(out, b'Z', |o| o.put_u8(status));
}

/// A `Query` ('Q') message.
pub fn query(out: &mut BytesMut, sql: &str) {
    message(out, b'Q', |o| put_cstr(o, sql));
}

/// An `ErrorResponse` ('E', severity ERROR or FATAL) or a `NoticeResponse` ('N', WARNING...).
pub fn error(out: &mut BytesMut, tag: u8, severity: &str, code: &str, text: &str) {
    message(out, tag, |o| {
        for (field, value) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', code),
            (b'M', text),
        ] {
            o.put_u8(field);
            put_cstr(o, value);
        }
        o.put_u8(0);
    });
}

/// An `ErrorResponse`'s or `NoticeResponse`'s fields, for messages headroom reports on.
pub fn error_fields(mut body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    while let Some((&field, rest)) = body.split_first() {
        if field == 0 {
            break;
        }
        body = rest;
        match cstr(&mut body) {
            Ok(v) => out.push((field, v)),
            Err(_) => break,
        }
    }
    out
}

/// Finds message boundaries in one direction of a stream without buffering whole messages:
/// a message's body is skipped as it goes by, however long; its 5-byte header (tag and
/// length) is looked at, and so is the body of the few messages the relay acts on (`keep`
/// returns true for their tags), which then must fit in the buffer.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Bytes of the current message's body still to go by.
    skip: usize,
}

/// One message's header, seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub tag: u8,
    /// The whole message, header included.
    pub len: usize,
    /// Where in the buffer it starts (valid for the `scan` call that returned it).
    pub at: usize,
}

impl Scanner {
    /// Scans `buf[from..]` and calls `on` for each message header (and, for kept tags, once
    /// the whole message is in `buf`). Returns how far the buffer may be forwarded: bytes
    /// past that are an incomplete header or kept message, to be scanned again with more.
    /// `Err` for a length under 4 or over `max`.
    pub fn scan(
        &mut self,
        buf: &[u8],
        from: usize,
        max: usize,
        keep: impl Fn(u8) -> bool,
        mut on: impl FnMut(Seen, &[u8]),
    ) -> io::Result<usize> {
        let mut at = from;
        loop {
            if self.skip > 0 {
                let n = self.skip.min(buf.len() - at);
                self.skip -= n;
                at += n;
                if self.skip > 0 {
                    return Ok(at);
                }
            }
            if buf.len() - at < 5 {
                return Ok(at);
            }
            let tag = buf[at];
            let len =
                u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
            if !(4..=max).contains(&len) {
                return Err(invalid(format!(
                    "message '{}' of {len} bytes",
                    tag.escape_ascii()
                )));
            }
            let whole = 1 + len;
            if keep(tag) {
                if buf.len() - at < whole {
                    return Ok(at);
                }
                on(
                    Seen {
                        tag,
                        len: whole,
                        at,
                    },
                    &buf[at + 5..at + whole],
                );
                at += whole;
            } else {
                on(
                    Seen {
                        tag,
                        len: whole,
                        at,
                    },
                    &[],
                );
                self.skip = whole - 5;
                at += 5;
            }
        }
    }

    /// True between messages: nothing of a message is left to go by.
    pub fn at_boundary(&self) -> bool {
        self.skip == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn startup_packets_are_parsed_by_their_code() {
        let mut b = PROTOCOL_3.to_be_bytes().to_vec();
        b.extend_from_slice(b"user\0app\0database\0db\0\0");
        assert_eq!(
            parse_startup(&b).unwrap(),
            Startup::Params(vec![
                ("user".into(), "app".into()),
                ("database".into(), "db".into())
            ])
        );
        assert_eq!(
            parse_startup(&SSL_REQUEST.to_be_bytes()).unwrap(),
            Startup::Ssl
        );
        let mut c = CANCEL_REQUEST.to_be_bytes().to_vec();
        c.extend_from_slice(&7u32.to_be_bytes());
        c.extend_from_slice(&9u32.to_be_bytes());
        assert_eq!(
            parse_startup(&c).unwrap(),
            Startup::Cancel { pid: 7, secret: 9 }
        );
        // Protocol 2, a missing NUL, trailing bytes: refused, not guessed at.
        assert!(parse_startup(&0x0002_0000u32.to_be_bytes()).is_err());
        let mut bad = PROTOCOL_3.to_be_bytes().to_vec();
        bad.extend_from_slice(b"user\0app");
        assert!(parse_startup(&bad).is_err());
        let mut trailing = PROTOCOL_3.to_be_bytes().to_vec();
        trailing.extend_from_slice(b"user\0app\0\0x");
        assert!(parse_startup(&trailing).is_err());
    }

    #[test]
    fn scanner_finds_boundaries_across_any_split() {
        let mut stream = msg(b'D', &[1; 300]);
        stream.extend(msg(b'C', b"SELECT 1\0"));
        stream.extend(msg(b'Z', b"I"));
        // Every split point: the same messages, the Z's body seen whole, nothing lost.
        for cut in 0..=stream.len() {
            let mut s = Scanner::default();
            let mut seen = Vec::new();
            let mut buf: Vec<u8> = stream[..cut].to_vec();
            let done = s
                .scan(
                    &buf,
                    0,
                    1 << 20,
                    |t| t == b'Z',
                    |m, body| seen.push((m.tag, body.to_vec())),
                )
                .unwrap();
            // What may be forwarded is dropped, as the relay does, and the rest arrives.
            buf.drain(..done);
            buf.extend_from_slice(&stream[cut..]);
            let done2 = s
                .scan(
                    &buf,
                    0,
                    1 << 20,
                    |t| t == b'Z',
                    |m, body| seen.push((m.tag, body.to_vec())),
                )
                .unwrap();
            assert_eq!(done2, buf.len(), "cut at {cut}");
            assert!(s.at_boundary());
            assert_eq!(
                seen,
                vec![(b'D', vec![]), (b'C', vec![]), (b'Z', b"I".to_vec())],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn scanner_refuses_impossible_lengths() {
        let mut s = Scanner::default();
        let bad = [b'Q', 0, 0, 0, 3];
        assert!(s.scan(&bad, 0, 1 << 20, |_| false, |_, _| {}).is_err());
        let big = msg(b'Q', &[b'x'; 100]);
        assert!(Scanner::default()
            .scan(&big, 0, 50, |_| false, |_, _| {})
            .is_err());
    }

    #[test]
    fn errors_are_written_and_read_back() {
        let mut out = BytesMut::new();
        error(
            &mut out,
            b'E',
            "FATAL",
            "28P01",
            "password authentication failed",
        );
        assert_eq!(out[0], b'E');
        let fields = error_fields(&out[5..]);
        assert!(fields.contains(&(b'C', "28P01".to_owned())));
        assert!(fields.contains(&(b'M', "password authentication failed".to_owned())));
    }
}
