//! A lean HTTP/1.1 client for upstream connections: this file holds the connection and
//! writes requests; `response.rs` parses response heads, `body.rs` reads response bodies.
//!
//! Why not hyper's client: it drives each connection in its own task and talks to it over
//! channels (request, response, and every body chunk), so a proxied request crosses tasks
//! four times. Here the request's own future writes the request and reads the response, and
//! the response body reads straight from the socket. Framing follows RFC 9112 §6: no body
//! for HEAD, 1xx, 204 and 304; chunked when the coding is chunked; else Content-Length;
//! else until the connection closes. Interim 1xx responses are skipped.
//!
//! Timeouts: `request_timeout` bounds what the upstream keeps the request waiting for:
//! each write of the request, then the time from the request's last byte to the response
//! head. The client's own pauses while its body streams through are `body_timeout`'s (the
//! client's body enforces it), so a slow upload is not blamed on the replica. Pauses mid
//! response body are `read_timeout`'s (`body.rs`).

mod body;
mod response;

pub use body::ResponseBody;
#[doc(hidden)]
pub use response::{fuzz_check, parse_response_head};

use super::{content_length, ReadBuffer, READ_BUF};
use crate::body::{BoxError, PauseTimer, ReadTimeout, UpstreamBody};
use crate::h1::Framing;
use crate::replica::Replica;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use http_body::Body;
use response::ResponseHead;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

/// One keep-alive HTTP/1.1 connection to a replica.
pub struct Conn {
    io: TcpStream,
    /// The request head is built here; kept across requests so it is allocated once.
    head: Vec<u8>,
    rb: ReadBuffer,
    /// The connection's one timer, kept across requests: `request_timeout` while the
    /// request is written and its response awaited, then `read_timeout` mid-body.
    pause: PauseTimer,
    /// The service's `read_timeout` as of this connection's last request (a new one only
    /// after a reload, so a request does not touch the shared reference count).
    read_timeout: Option<Arc<ReadTimeout>>,
    /// While the connection carries a request: its place under the pool's `max_conns`
    /// (given back when the connection is pooled again or dropped).
    pub(crate) lease: Option<crate::pool::Lease>,
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

/// Where a request goes and what it is held to.
pub struct Attempt<'a> {
    /// The replica whose pool the connection goes back to when the response ends cleanly.
    pub replica: &'a Arc<Replica>,
    /// Idle connections the replica's pool keeps (per worker).
    pub max_idle: usize,
    /// The longest the upstream may keep the request waiting: for each write of it, and
    /// from its last byte to the response head.
    pub request_timeout: Duration,
    /// The longest pause between response body bytes, and where a stall is counted.
    pub read_timeout: &'a Arc<ReadTimeout>,
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
    /// The upstream kept the request waiting past the request timeout: it took no bytes of
    /// a write, or sent no complete response head after the request's end.
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
            pause: PauseTimer::default(),
            read_timeout: None,
            lease: None,
        }
    }

    /// Frees the read buffer of an idle connection (nothing buffered: a pooled connection
    /// never has bytes waiting); the next request allocates one again.
    pub fn free_buffer(&mut self) {
        self.rb.free();
    }

    /// True when the connection can carry another request: the peer has not closed it and
    /// sent nothing unasked. Reads only the reactor's cached readiness: no system call.
    pub fn is_reusable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.rb.is_empty() && self.io.poll_read_ready(&mut cx).is_pending()
    }

    /// Sends `req` and reads the response head, the upstream held to `to.request_timeout`.
    /// The body reads from this connection, held to `to.read_timeout`, and gives it back
    /// to the replica's pool when it ends cleanly.
    pub async fn send(
        mut self,
        req: RequestHead<'_>,
        body: UpstreamBody,
        to: Attempt<'_>,
    ) -> Result<Response<ResponseBody>, Error> {
        let upgrading = req.headers.contains_key(header::UPGRADE);
        if !self
            .read_timeout
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(r, to.read_timeout))
        {
            self.read_timeout = Some(to.read_timeout.clone());
        }
        let (resp, framing, keep_alive) = self.exchange(req, body, to.request_timeout).await?;
        // The response head is in: from here the timer measures pauses mid-body.
        self.pause.progressed();
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return self.switched(resp, upgrading);
        }
        let body = ResponseBody {
            conn: Some(self),
            framing,
            keep_alive,
            pool: Some((to.replica.clone(), to.max_idle)),
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
        timeout: Duration,
    ) -> Result<ResponseHead, Error> {
        let is_head = *req.method == Method::HEAD;
        // A connection that sat in the pool long enough has given its buffer back.
        self.rb.ensure(READ_BUF);
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
        let written = match &mut body {
            UpstreamBody::Empty => self.write(&head, timeout).await,
            UpstreamBody::Full(b) => {
                if let Some(b) = b.take() {
                    head.extend_from_slice(&b);
                }
                self.write(&head, timeout).await
            }
            UpstreamBody::Stream { .. } => match self.write(&head, timeout).await {
                Ok(()) => self.write_stream(&mut body, chunked, timeout).await,
                Err(e) => Err(e),
            },
        };
        if head.capacity() <= 64 << 10 {
            self.head = head;
        }
        written?;

        // The request has been sent: the upstream has `timeout` from now to answer, however
        // many reads its head takes.
        self.pause.start(timeout);
        loop {
            if let Some((resp, framing, keep_alive)) = self.parse_head(is_head)? {
                if resp.status().is_informational()
                    && resp.status() != StatusCode::SWITCHING_PROTOCOLS
                {
                    continue;
                }
                return Ok((resp, framing, keep_alive));
            }
            if self.rb.is_full() {
                return Err(Error::Malformed("response head larger than 16 KiB".into()));
            }
            let (rb, io, pause) = (&mut self.rb, &mut self.io, &mut self.pause);
            let n = std::future::poll_fn(|cx| match rb.poll_fill(io, cx) {
                Poll::Ready(r) => Poll::Ready(r.map_err(Error::Io)),
                Poll::Pending => pause
                    .poll_expired(timeout, cx)
                    .map(|()| Err(Error::TimedOut)),
            })
            .await?;
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

    /// Writes all of `buf`; the upstream must take some of it within `timeout` of each time
    /// it stops taking bytes.
    async fn write(&mut self, mut buf: &[u8], timeout: Duration) -> Result<(), Error> {
        let (io, pause) = (&mut self.io, &mut self.pause);
        std::future::poll_fn(|cx| {
            while !buf.is_empty() {
                match Pin::new(&mut *io).poll_write(cx, buf) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(Error::Io(std::io::ErrorKind::WriteZero.into())))
                    }
                    Poll::Ready(Ok(n)) => {
                        buf = &buf[n..];
                        pause.progressed();
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                    Poll::Pending => {
                        return pause
                            .poll_expired(timeout, cx)
                            .map(|()| Err(Error::TimedOut))
                    }
                }
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Streams the client's body upstream. Waiting for the client is not timed here (its
    /// body holds it to `body_timeout`); each write to the upstream is.
    async fn write_stream(
        &mut self,
        body: &mut UpstreamBody,
        chunked: bool,
        timeout: Duration,
    ) -> Result<(), Error> {
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
                self.write(format!("{:x}\r\n", data.len()).as_bytes(), timeout)
                    .await?;
                self.write(&data, timeout).await?;
                self.write(b"\r\n", timeout).await?;
            } else {
                self.write(&data, timeout).await?;
            }
        }
        if chunked {
            self.write(b"0\r\n\r\n", timeout).await?;
        }
        Ok(())
    }

    /// Parses a complete response head from the buffer, consuming it.
    fn parse_head(&mut self, is_head: bool) -> Result<Option<ResponseHead>, Error> {
        let Some((len, head)) = parse_response_head(self.rb.data(), is_head)? else {
            return Ok(None);
        };
        self.rb.consume(len);
        Ok(Some(head))
    }
}

#[cfg(test)]
mod tests;
