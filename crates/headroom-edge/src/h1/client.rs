//! A lean HTTP/1.1 client for upstream connections.
//!
//! Why not hyper's client: it drives each connection in its own task and talks to it over
//! channels (request, response, and every body chunk), so a proxied request crosses tasks
//! four times. Here the request's own future writes the request and reads the response, and
//! the response body reads straight from the socket. Framing follows RFC 9112 §6: no body
//! for HEAD, 1xx, 204 and 304; chunked when the last transfer coding is chunked; else
//! Content-Length; else until the connection closes. Interim 1xx responses are skipped.

use super::{content_length, Chunk, Framing, ReadBuffer, READ_BUF};
use crate::body::{BoxError, UpstreamBody};
use crate::headers::lists_other_headers;
use crate::replica::Replica;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Headers a response head may carry.
const MAX_HEADERS: usize = 128;
/// Room left in a response's header map for what the gateway adds (X-Request-Id, a route's
/// additions), so adding them does not regrow the map.
const RESPONSE_HEADERS_ADDED: usize = 2;

/// One keep-alive HTTP/1.1 connection to a replica.
pub struct Conn {
    io: TcpStream,
    /// The request head is built here; kept across requests so it is allocated once.
    head: Vec<u8>,
    rb: ReadBuffer,
    /// `request_timeout`'s timer, kept across requests.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("rb", &self.rb).finish()
    }
}

/// The request line and header fields `Conn::send` writes. Borrowed: a request that may be
/// retried keeps its headers, and the first attempt copies nothing.
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

/// An upstream connection that answered 101 Switching Protocols, in the response's
/// extensions until the client's connection is joined to it (`h1::server`).
#[derive(Clone)]
pub struct Upgraded {
    conn: Arc<Mutex<Option<Conn>>>,
    /// The protocol switched to, from the upstream's Upgrade header.
    pub protocol: HeaderValue,
}

impl Upgraded {
    /// The socket and the bytes the upstream sent after its 101; `None` once taken.
    pub fn take(&self) -> Option<(TcpStream, ReadBuffer)> {
        let conn = self.conn.lock().ok()?.take()?;
        Some((conn.io, conn.rb))
    }
}

/// Why an exchange failed. `Closed` before any response byte on a reused connection is the
/// usual race with an upstream closing an idle connection.
#[derive(Debug)]
pub enum Error {
    Io(std::io::Error),
    /// The upstream closed the connection before a complete response head.
    Closed,
    Malformed(String),
    Body(BoxError),
    BodyTooLarge,
    /// No complete response head within the request timeout.
    TimedOut,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Closed => f.write_str("connection closed before a response"),
            Error::Malformed(m) => write!(f, "malformed response: {m}"),
            Error::Body(e) => write!(f, "request body: {e}"),
            Error::BodyTooLarge => f.write_str("request body exceeds max_body_bytes"),
            Error::TimedOut => f.write_str("no response within the request timeout"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl Conn {
    pub fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            head: Vec::with_capacity(1024),
            rb: ReadBuffer::with_capacity(READ_BUF),
            timer: None,
        }
    }

    /// True when the connection can carry another request: the peer has not closed it and
    /// sent nothing unasked. Reads only the reactor's cached readiness: no system call.
    pub fn is_reusable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.rb.is_empty() && self.io.poll_read_ready(&mut cx).is_pending()
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.rb.is_full() {
            return Err(std::io::Error::other("response head larger than 16 KiB"));
        }
        std::future::poll_fn(|cx| self.rb.poll_fill(&mut self.io, cx)).await
    }

    /// Sends `req` and reads the response head, within `timeout`. The body reads from this
    /// connection and gives it back to `replica`'s pool when it ends cleanly.
    pub async fn send(
        mut self,
        req: RequestHead<'_>,
        body: UpstreamBody,
        replica: Arc<Replica>,
        max_idle: usize,
        timeout: Duration,
    ) -> Result<Response<ResponseBody>, Error> {
        let upgrading = req.headers.contains_key(header::UPGRADE);
        // The connection's own timer, moved later for each request (an atomic store in
        // tokio, where a new timer per request was a timer-wheel insert and removal).
        let mut timer = self
            .timer
            .take()
            .unwrap_or_else(|| Box::pin(tokio::time::sleep(timeout)));
        timer.as_mut().reset(tokio::time::Instant::now() + timeout);
        let outcome = tokio::select! {
            biased;
            r = self.exchange(req, body) => r,
            () = timer.as_mut() => Err(Error::TimedOut),
        };
        self.timer = Some(timer);
        let (resp, framing, keep_alive) = outcome?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return self.switched(resp, upgrading);
        }
        let body = ResponseBody {
            conn: Some(self),
            framing,
            keep_alive,
            pool: Some((replica, max_idle)),
        };
        let (head, ()) = resp.into_parts();
        let mut resp = Response::from_parts(head, body);
        if matches!(resp.body().framing, Framing::Done) {
            resp.body_mut().release();
        }
        Ok(resp)
    }

    /// Writes the request and reads the final response head (interim 1xx skipped, but a
    /// 101 returned).
    async fn exchange(
        &mut self,
        req: RequestHead<'_>,
        mut body: UpstreamBody,
    ) -> Result<(Response<()>, Framing, bool), Error> {
        let is_head = *req.method == Method::HEAD;
        let mut head = std::mem::take(&mut self.head);
        head.clear();
        head.extend_from_slice(req.method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(
            req.uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .as_bytes(),
        );
        head.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in req.headers {
            // Framing is ours to write; Expect is answered by the gateway, not forwarded.
            if name == header::CONTENT_LENGTH
                || name == header::TRANSFER_ENCODING
                || name == header::EXPECT
            {
                continue;
            }
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        let chunked = match &body {
            UpstreamBody::Empty => {
                if matches!(*req.method, Method::POST | Method::PUT | Method::PATCH) {
                    head.extend_from_slice(b"content-length: 0\r\n");
                }
                false
            }
            UpstreamBody::Full(b) => {
                content_length(&mut head, b.as_ref().map_or(0, |b| b.len() as u64));
                false
            }
            UpstreamBody::Stream { .. } => match body.size_hint().exact() {
                Some(n) => {
                    content_length(&mut head, n);
                    false
                }
                None => {
                    head.extend_from_slice(b"transfer-encoding: chunked\r\n");
                    true
                }
            },
        };
        head.extend_from_slice(b"\r\n");
        match &mut body {
            UpstreamBody::Empty => self.io.write_all(&head).await?,
            UpstreamBody::Full(b) => {
                if let Some(b) = b.take() {
                    head.extend_from_slice(&b);
                }
                self.io.write_all(&head).await?
            }
            UpstreamBody::Stream { .. } => {
                self.io.write_all(&head).await?;
                self.write_stream(&mut body, chunked).await?;
            }
        }
        if head.capacity() <= 64 << 10 {
            self.head = head;
        }

        // Read the response head, skipping interim 1xx responses.
        loop {
            if let Some((resp, framing, keep_alive)) = self.parse_head(is_head)? {
                if resp.status().is_informational()
                    && resp.status() != StatusCode::SWITCHING_PROTOCOLS
                {
                    continue;
                }
                return Ok((resp, framing, keep_alive));
            }
            let n = self.fill().await?;
            if n == 0 {
                return Err(Error::Closed);
            }
        }
    }

    /// A 101 answer: the connection now speaks another protocol and leaves HTTP (and the
    /// pool) for good, carried to the client side in the response's extensions.
    fn switched(
        self,
        resp: Response<()>,
        upgrading: bool,
    ) -> Result<Response<ResponseBody>, Error> {
        if !upgrading {
            return Err(Error::Malformed(
                "101 to a request that asked for no upgrade".into(),
            ));
        }
        let Some(protocol) = resp.headers().get(header::UPGRADE).cloned() else {
            return Err(Error::Malformed("101 without an Upgrade header".into()));
        };
        let (mut head, ()) = resp.into_parts();
        head.extensions.insert(Upgraded {
            conn: Arc::new(Mutex::new(Some(self))),
            protocol,
        });
        let body = ResponseBody {
            conn: None,
            framing: Framing::Done,
            keep_alive: false,
            pool: None,
        };
        Ok(Response::from_parts(head, body))
    }

    async fn write_stream(&mut self, body: &mut UpstreamBody, chunked: bool) -> Result<(), Error> {
        let mut body = Pin::new(body);
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            let frame = frame.map_err(|e| {
                if crate::body::is_body_too_large(e.as_ref()) {
                    Error::BodyTooLarge
                } else {
                    Error::Body(e)
                }
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            if chunked {
                self.io
                    .write_all(format!("{:x}\r\n", data.len()).as_bytes())
                    .await?;
                self.io.write_all(&data).await?;
                self.io.write_all(b"\r\n").await?;
            } else {
                self.io.write_all(&data).await?;
            }
        }
        if chunked {
            self.io.write_all(b"0\r\n\r\n").await?;
        }
        Ok(())
    }

    /// Parses a complete response head from the buffer, consuming it.
    fn parse_head(
        &mut self,
        is_head: bool,
    ) -> Result<Option<(Response<()>, Framing, bool)>, Error> {
        let Some((len, head)) = parse_response_head(self.rb.data(), is_head)? else {
            return Ok(None);
        };
        self.rb.consume(len);
        Ok(Some(head))
    }
}

/// What a response head says: the response without its body, how the body is framed, and
/// whether the connection may carry another request.
type ResponseHead = (Response<()>, Framing, bool);

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
    let (mut length, mut chunked, mut te, mut close, mut keep_alive_10) =
        (None, false, false, false, false);
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| Error::Malformed(format!("header name {:?}", h.name)))?;
        let off = h.value.as_ptr() as usize - base;
        let value = HeaderValue::from_maybe_shared(bytes.slice(off..off + h.value.len()))
            .map_err(|_| Error::Malformed(format!("header {name}")))?;
        if name == header::CONTENT_LENGTH {
            let n: u64 = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| Error::Malformed("content-length".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Malformed("conflicting content-length".into()));
            }
            length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            te = true;
            chunked = value
                .to_str()
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            // Hop-by-hop, read here for framing and never forwarded: not kept.
            continue;
        } else if name == header::CONNECTION {
            let v = value.to_str().unwrap_or("");
            close |= v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"));
            keep_alive_10 |= v
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("keep-alive"));
            // Kept only when it names headers that must go too (strip_hop_by_hop).
            if !lists_other_headers(&value) {
                continue;
            }
        } else if name.as_str() == "keep-alive" {
            continue;
        }
        map.append(name, value);
    }
    let framing = if is_head || status.is_informational() || code == 204 || code == 304 {
        Framing::Done
    } else if te {
        if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        if n == 0 {
            Framing::Done
        } else {
            Framing::Length(n)
        }
    } else {
        Framing::UntilClose
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

/// A response body read straight from the upstream connection.
#[derive(Debug)]
pub struct ResponseBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    pool: Option<(Arc<Replica>, usize)>,
}

impl ResponseBody {
    /// The body has ended: the connection goes back to the pool if it can carry another
    /// request.
    fn release(&mut self) {
        self.framing = Framing::Done;
        if let (Some(conn), Some((replica, max_idle))) = (self.conn.take(), self.pool.take()) {
            if self.keep_alive && conn.rb.is_empty() {
                replica.pools.put(crate::pool::Sender::Raw(conn), max_idle);
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let next = ready!(this.framing.poll_data(&mut conn.rb, &mut conn.io, cx));
        match next {
            Some(Ok(data)) => {
                if this.framing.is_done() {
                    this.release();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Some(Err(e)) => {
                this.conn = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            None => {
                this.release();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.framing.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use headroom_telemetry::Registry;
    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A one-connection server: reads one request head (and `body` more bytes), answers
    /// `reply` in pieces of `piece` bytes, then closes if `close`. Returns what it read.
    async fn server(
        reply: &'static [u8],
        piece: usize,
        close: bool,
        body: usize,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n")
                || got.len() < got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4 + body
            {
                let n = s.read(&mut b).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&b[..n]);
            }
            for part in reply.chunks(piece) {
                s.write_all(part).await.unwrap();
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            if !close {
                // Hold the connection open until the client is done with it.
                let _ = s.read(&mut b).await;
            }
            got
        });
        (addr, task)
    }

    fn replica(addr: std::net::SocketAddr) -> Arc<Replica> {
        Arc::new(Replica::new(
            "s",
            "r",
            addr,
            1,
            std::time::Duration::from_millis(1),
            1,
            &Registry::new(),
        ))
    }

    /// Sends one request through a fresh connection; returns the status and body (or the
    /// error) and the bytes the server received.
    async fn exchange(
        method: Method,
        body: UpstreamBody,
        reply: &'static [u8],
        piece: usize,
        close: bool,
    ) -> (Result<(StatusCode, Vec<u8>), String>, Vec<u8>) {
        let body_len = match &body {
            UpstreamBody::Full(Some(b)) => b.len(),
            _ => 0,
        };
        let (addr, srv) = server(reply, piece, close, body_len).await;
        let r = replica(addr);
        let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
        let uri: Uri = "/x?y=1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("up"));
        headers.insert("content-length", HeaderValue::from_static("999"));
        let head = RequestHead {
            method: &method,
            uri: &uri,
            headers: &headers,
        };
        let result = match conn
            .send(head, body, r.clone(), 8, Duration::from_secs(10))
            .await
        {
            Ok(resp) => {
                let status = resp.status();
                match resp.into_body().collect().await {
                    Ok(b) => Ok((status, b.to_bytes().to_vec())),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        r.pools.clear();
        (result, srv.await.unwrap())
    }

    #[tokio::test]
    async fn the_request_head_is_written_and_a_content_length_body_read() {
        let (res, got) = exchange(
            Method::GET,
            UpstreamBody::Empty,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            3,
            false,
        )
        .await;
        assert_eq!(res.unwrap(), (StatusCode::OK, b"hello".to_vec()));
        let req = String::from_utf8(got).unwrap();
        assert!(
            req.starts_with("GET /x?y=1 HTTP/1.1\r\nhost: up\r\n\r\n"),
            "{req:?}"
        );
    }

    #[tokio::test]
    async fn a_chunked_body_arriving_in_pieces_is_decoded() {
        let reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for piece in [1, 7, 200] {
            let (res, _) = exchange(Method::GET, UpstreamBody::Empty, reply, piece, false).await;
            assert_eq!(
                res.unwrap(),
                (StatusCode::OK, b"hello world".to_vec()),
                "piece {piece}"
            );
        }
    }

    #[tokio::test]
    async fn random_chunkings_and_read_splits_decode_to_the_same_body() {
        let mut rng = fastrand::Rng::with_seed(7);
        for case in 0..40 {
            let body: Vec<u8> = (0..rng.usize(0..5000))
                .map(|_| rng.alphanumeric() as u8)
                .collect();
            let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec();
            let mut at = 0;
            while at < body.len() {
                let n = rng.usize(1..=700).min(body.len() - at);
                let ext = if rng.bool() { ";x=y" } else { "" };
                wire.extend_from_slice(format!("{n:X}{ext}\r\n").as_bytes());
                wire.extend_from_slice(&body[at..at + n]);
                wire.extend_from_slice(b"\r\n");
                at += n;
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let wire: &'static [u8] = Box::leak(wire.into_boxed_slice());
            let piece = rng.usize(1..300);
            let (res, _) = exchange(Method::GET, UpstreamBody::Empty, wire, piece, false).await;
            assert_eq!(res.unwrap().1, body, "case {case}, piece {piece}");
        }
    }

    #[tokio::test]
    async fn a_body_without_length_is_read_until_close() {
        let (res, _) = exchange(
            Method::GET,
            UpstreamBody::Empty,
            b"HTTP/1.1 200 OK\r\n\r\nuntil close",
            4,
            true,
        )
        .await;
        assert_eq!(res.unwrap(), (StatusCode::OK, b"until close".to_vec()));
    }

    #[tokio::test]
    async fn head_204_and_304_have_no_body() {
        let (res, _) = exchange(
            Method::HEAD,
            UpstreamBody::Empty,
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            100,
            false,
        )
        .await;
        assert_eq!(res.unwrap(), (StatusCode::OK, vec![]));
        let (res, _) = exchange(
            Method::GET,
            UpstreamBody::Empty,
            b"HTTP/1.1 204 No Content\r\n\r\n",
            100,
            false,
        )
        .await;
        assert_eq!(res.unwrap(), (StatusCode::NO_CONTENT, vec![]));
        let (res, _) = exchange(
            Method::GET,
            UpstreamBody::Empty,
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
            100,
            false,
        )
        .await;
        assert_eq!(res.unwrap(), (StatusCode::NOT_MODIFIED, vec![]));
    }

    #[tokio::test]
    async fn interim_responses_are_skipped() {
        let reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
        let (res, _) = exchange(Method::GET, UpstreamBody::Empty, reply, 5, false).await;
        assert_eq!(res.unwrap(), (StatusCode::CREATED, b"ok".to_vec()));
    }

    #[tokio::test]
    async fn request_bodies_are_framed_by_the_client_not_the_caller() {
        let (res, got) = exchange(
            Method::PUT,
            UpstreamBody::Full(Some(Bytes::from_static(b"abc"))),
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            100,
            false,
        )
        .await;
        assert_eq!(res.unwrap(), (StatusCode::OK, vec![]));
        let req = String::from_utf8(got).unwrap();
        assert!(req.contains("content-length: 3\r\n\r\nabc"), "{req:?}");
        assert!(
            !req.contains("999"),
            "the caller's Content-Length is replaced: {req:?}"
        );
        let (_, got) = exchange(
            Method::POST,
            UpstreamBody::Empty,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            100,
            false,
        )
        .await;
        assert!(String::from_utf8(got)
            .unwrap()
            .contains("content-length: 0\r\n"));
    }

    #[tokio::test]
    async fn broken_responses_are_errors() {
        let (res, _) = exchange(Method::GET, UpstreamBody::Empty, b"", 1, true).await;
        assert!(res.unwrap_err().contains("closed before a response"));
        let (res, _) = exchange(
            Method::GET,
            UpstreamBody::Empty,
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            100,
            true,
        )
        .await;
        assert!(res.unwrap_err().contains("closed mid-body"));
        let (res, _) = exchange(
            Method::GET,
            UpstreamBody::Empty,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            100,
            false,
        )
        .await;
        assert!(res.unwrap_err().contains("chunk size"));
        let (res, _) = exchange(
            Method::GET,
            UpstreamBody::Empty,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            100,
            false,
        )
        .await;
        assert!(res.unwrap_err().contains("conflicting content-length"));
    }

    #[tokio::test]
    async fn hop_by_hop_response_headers_are_left_out_unless_connection_names_others() {
        async fn headers_of(reply: &'static [u8]) -> HeaderMap {
            let (addr, srv) = server(reply, 100, false, 0).await;
            let r = replica(addr);
            let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
            let head = RequestHead {
                method: &Method::GET,
                uri: &Uri::from_static("/"),
                headers: &HeaderMap::new(),
            };
            let resp = conn
                .send(
                    head,
                    UpstreamBody::Empty,
                    r.clone(),
                    8,
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
            let headers = resp.headers().clone();
            let _ = resp.into_body().collect().await;
            r.pools.clear();
            let _ = srv.await;
            headers
        }
        let h = headers_of(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n0\r\n\r\n").await;
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-a"));
        // A Connection naming another header stays, so that header is stripped with it.
        let h = headers_of(
            b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(
            h.contains_key("connection") && h.contains_key("x-secret"),
            "{h:?}"
        );
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
        let alphabet = b"\r\n :;,0123456789abcdefABCDEF\t\x00\x7f\xff-chunkedHTTP";
        crate::h1::for_each_mutation(&seeds, alphabet, 2027, 20_000, fuzz_check);
    }

    #[tokio::test]
    async fn only_clean_keep_alive_connections_return_to_the_pool() {
        async fn pooled_after(reply: &'static [u8], close: bool) -> usize {
            let (addr, srv) = server(reply, 100, close, 0).await;
            let r = replica(addr);
            let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
            let head = RequestHead {
                method: &Method::GET,
                uri: &Uri::from_static("/"),
                headers: &HeaderMap::new(),
            };
            let resp = conn
                .send(
                    head,
                    UpstreamBody::Empty,
                    r.clone(),
                    8,
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
            let _ = resp.into_body().collect().await;
            let n = r.pools.idle_count();
            r.pools.clear();
            let _ = srv.await;
            n
        }
        assert_eq!(
            pooled_after(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await,
            1
        );
        assert_eq!(
            pooled_after(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                false
            )
            .await,
            0
        );
        assert_eq!(
            pooled_after(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await,
            0
        );
        assert_eq!(pooled_after(b"HTTP/1.1 200 OK\r\n\r\nok", true).await, 0);
    }
}
