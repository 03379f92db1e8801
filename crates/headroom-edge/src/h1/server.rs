//! The server side of HTTP/1.1 for client connections, plain and TLS: read a request head,
//! hand the request to [`proxy::handle`], write the response, and keep the connection alive
//! while both sides allow it.
//!
//! An idle connection holds no buffer: the read buffer comes from a per-thread free list
//! when the socket turns readable and goes back once a request has been answered and
//! nothing more is buffered (TLS keeps its buffer: it cannot wait for readability without
//! reading). Request heads are parsed by httparse and then checked against RFC 9112's
//! smuggling rules, stricter than hyper: Content-Length with Transfer-Encoding, conflicting
//! lengths, a final coding other than chunked, or two Host headers are a 400 and the
//! connection is closed.

use super::client::Upgraded;
use super::{give_write_buf, take_write_buf, BodyError, Chunk, Framing, ReadBuffer, READ_BUF};
use crate::body::{ClientBody, RequestBody};
use crate::headers::new_request_id;
use crate::proxy::{self, json_error, ConnCtx};
use bytes::Bytes;
use headroom_config::ListenerConfig;
use headroom_telemetry::access_log;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

/// Header fields a request head may carry (431 beyond).
const MAX_HEADERS: usize = 128;
/// Room left in a request's header map for what `forward` adds (X-Forwarded-For, -Proto,
/// -Host, X-Request-Id), so adding them does not regrow the map.
const REQUEST_HEADERS_ADDED: usize = 4;
/// Responses are written in pieces of at most this many bytes (head and small bodies are
/// coalesced into one write up to it).
const WRITE_COALESCE: usize = 16 << 10;
/// When the connection is closed with request bytes still unread, they are read and
/// dropped for at most this long (and this many bytes) first, so the kernel does not answer
/// them with a reset that could destroy the response in flight (RFC 9112 §9.6).
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// The read side of a client connection.
pub enum ClientReader {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

/// The write side of a client connection.
pub enum ClientWriter {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

impl ClientReader {
    /// Waits until the socket has bytes or an end of stream, without a buffer. TLS cannot
    /// tell without reading, so it returns at once and keeps its buffer.
    async fn readable(&self) -> io::Result<()> {
        match self {
            ClientReader::Plain(r) => r.readable().await,
            ClientReader::Tls(_) => Ok(()),
        }
    }

    fn waits_without_buffer(&self) -> bool {
        matches!(self, ClientReader::Plain(_))
    }
}

impl AsyncRead for ClientReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientReader::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ClientReader::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientWriter::Plain(w) => Pin::new(w).poll_write(cx, buf),
            ClientWriter::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientWriter::Plain(w) => Pin::new(w).poll_flush(cx),
            ClientWriter::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientWriter::Plain(w) => Pin::new(w).poll_shutdown(cx),
            ClientWriter::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// The read side and what has been read from it but not yet consumed.
pub struct Reader {
    io: ClientReader,
    rb: ReadBuffer,
}

/// Where a request body gives the connection's read side back when it is dropped, with
/// how far it got (the connection is reused only if the body was read to its end).
type Returned = Arc<Mutex<Option<(Reader, Framing)>>>;

/// A request body read straight from the client connection. It owns the connection's read
/// side while it lives.
pub struct H1Body {
    reader: Option<Reader>,
    framing: Framing,
    back: Returned,
    /// The longest pause between body bytes (`body_timeout`).
    timeout: std::time::Duration,
    /// Armed the first time the body has to wait for the client; moved on with each read.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body")
            .field("framing", &self.framing)
            .finish()
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        if let Some(r) = self.reader.take() {
            *self.back.lock().unwrap_or_else(|e| e.into_inner()) = Some((r, self.framing));
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(r) = this.reader.as_mut() else {
            return Poll::Ready(None);
        };
        match this.framing.poll_data(&mut r.rb, &mut r.io, cx) {
            Poll::Ready(next) => {
                if let Some(t) = this.timer.as_mut() {
                    t.as_mut().reset(tokio::time::Instant::now() + this.timeout);
                }
                Poll::Ready(next.map(|r| r.map(Frame::data)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Some(Err(BodyError::TimedOut(timeout))))
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

/// Content-Length: one or more digits and nothing else (no sign, no spaces, no list).
fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add((d - b'0') as u64)
    })
}

fn has_token(v: &HeaderValue, token: &str) -> bool {
    v.to_str()
        .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
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
    let mut length: Option<u64> = None;
    let (mut te_codings, mut te_last_chunked, mut te_early_chunked) = (0, false, false);
    let (mut hosts, mut close, mut keep_alive_10, mut expect_continue) = (0, false, false, false);
    for h in parsed.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return reject(StatusCode::BAD_REQUEST, "invalid header name");
        };
        let Ok(value) = HeaderValue::from_maybe_shared(slice(h.value)) else {
            return reject(StatusCode::BAD_REQUEST, format!("invalid {name} value"));
        };
        if name == header::CONTENT_LENGTH {
            let Some(n) = parse_content_length(h.value) else {
                return reject(StatusCode::BAD_REQUEST, "invalid Content-Length");
            };
            if length.is_some_and(|l| l != n) {
                return reject(
                    StatusCode::BAD_REQUEST,
                    "conflicting Content-Length headers",
                );
            }
            length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            let Ok(v) = value.to_str() else {
                return reject(StatusCode::BAD_REQUEST, "invalid Transfer-Encoding");
            };
            // Empty list elements are allowed and ignored (RFC 9110 §5.6.1).
            for coding in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                te_early_chunked |= te_last_chunked;
                te_last_chunked = coding.eq_ignore_ascii_case("chunked");
                te_codings += 1;
            }
            if te_codings == 0 {
                return reject(StatusCode::BAD_REQUEST, "empty Transfer-Encoding");
            }
        } else if name == header::HOST {
            hosts += 1;
        } else if name == header::CONNECTION {
            close |= has_token(&value, "close");
            keep_alive_10 |= has_token(&value, "keep-alive");
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
    let framing = if te_codings > 0 {
        // RFC 9112 §6.1 lets a server frame by Transfer-Encoding and drop Content-Length;
        // refusing is safer, as a front proxy may have framed the same bytes by length.
        if length.is_some() {
            return reject(
                StatusCode::BAD_REQUEST,
                "both Content-Length and Transfer-Encoding (a request smuggling pattern)",
            );
        }
        if version == Version::HTTP_10 {
            return reject(
                StatusCode::BAD_REQUEST,
                "Transfer-Encoding in an HTTP/1.0 request",
            );
        }
        if !te_last_chunked || te_early_chunked {
            return reject(
                StatusCode::BAD_REQUEST,
                "the final transfer coding must be chunked, and only it",
            );
        }
        if te_codings > 1 {
            return reject(
                StatusCode::NOT_IMPLEMENTED,
                "transfer codings other than chunked are not supported",
            );
        }
        Framing::Chunked(Chunk::Size)
    } else {
        match length {
            Some(n) if n > 0 => Framing::Length(n),
            _ => Framing::Done,
        }
    };
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

// Only ever a return value: boxing the head would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum HeadOutcome {
    Head(Head),
    /// The client closed, or the worker is shutting down, between requests.
    Closed,
    Reject(Reject),
}

/// receive: waits for and parses the next request head. While nothing is buffered the
/// connection is idle: its buffer goes back to the free list until the socket is readable.
async fn read_head(
    rd: &mut Reader,
    max_header_bytes: usize,
    shutdown: &mut watch::Receiver<bool>,
) -> HeadOutcome {
    loop {
        if rd.rb.is_empty() {
            if *shutdown.borrow() {
                return HeadOutcome::Closed;
            }
            if rd.io.waits_without_buffer() {
                rd.rb.release();
                tokio::select! {
                    biased;
                    r = rd.io.readable() => if r.is_err() { return HeadOutcome::Closed },
                    _ = shutdown.changed() => return HeadOutcome::Closed,
                }
            }
        } else {
            match parse_head(rd.rb.data(), max_header_bytes) {
                Ok(Some((len, head))) => {
                    rd.rb.consume(len);
                    return HeadOutcome::Head(head);
                }
                Ok(None) => {}
                Err(r) => return HeadOutcome::Reject(r),
            }
        }
        rd.rb.ensure(max_header_bytes.max(READ_BUF));
        let rb = &mut rd.rb;
        let io = &mut rd.io;
        match std::future::poll_fn(|cx| rb.poll_fill(io, cx)).await {
            Ok(0) | Err(_) => return HeadOutcome::Closed,
            Ok(_) => {}
        }
    }
}

/// Serves HTTP/1.1 requests on one client connection until either side ends it.
pub async fn serve(
    io: ClientReader,
    mut w: ClientWriter,
    ctx: Arc<ConnCtx>,
    cfg: &ListenerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut reader = Some(Reader {
        io,
        rb: ReadBuffer::default(),
    });
    // Made at the first request with a body, then reused.
    let mut back: Option<Returned> = None;
    // One timer for the connection's life, moved later for each request: moving a pending
    // deadline later is an atomic store in tokio, where a timer per request was an insert
    // into and a removal from the timer wheel each time.
    let mut deadline = std::pin::pin!(tokio::time::sleep(cfg.header_timeout));
    while let Some(rd) = reader.as_mut() {
        deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + cfg.header_timeout);
        let outcome = tokio::select! {
            biased;
            o = read_head(rd, cfg.max_header_bytes, &mut shutdown) => Ok(o),
            () = deadline.as_mut() => Err(()),
        };
        let head = match outcome {
            Ok(HeadOutcome::Head(h)) => h,
            Ok(HeadOutcome::Closed) => break,
            Ok(HeadOutcome::Reject(r)) => {
                let kind = match r.status {
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "header_too_large",
                    StatusCode::HTTP_VERSION_NOT_SUPPORTED => "http_version_not_supported",
                    StatusCode::NOT_IMPLEMENTED => "not_implemented",
                    StatusCode::EXPECTATION_FAILED => "expectation_failed",
                    _ => "bad_request",
                };
                refuse(&mut w, &ctx, r.status, kind, &r.message).await;
                break;
            }
            // Headers too slow, or idle too long. A partial head hears 408; a silent
            // keep-alive connection is just closed, as nginx does.
            Err(_) => {
                if !rd.rb.is_empty() {
                    let message = "the request head did not arrive in time";
                    refuse(
                        &mut w,
                        &ctx,
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        message,
                    )
                    .await;
                }
                break;
            }
        };

        let Head {
            request,
            framing,
            mut keep_alive,
            expect_continue,
        } = head;
        let is_head = request.method() == Method::HEAD;
        let http10 = request.version() == Version::HTTP_10;
        let body = if framing.is_done() {
            RequestBody::Empty
        } else {
            // The client waits for "100 Continue" before sending the body; a body already
            // known to be over the limit gets its 413 instead.
            let declared = framing.size_hint().exact().unwrap_or(0);
            if expect_continue
                && declared <= ctx.max_body_bytes
                && w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err()
            {
                break;
            }
            RequestBody::H1(H1Body {
                reader: reader.take(),
                framing,
                back: back.get_or_insert_with(Default::default).clone(),
                timeout: cfg.body_timeout,
                timer: None,
            })
        };
        let (parts, ()) = request.into_parts();
        // Boxed: the request's state (3.8 KiB, most of it `forward`) lives only while the
        // request does, instead of inside every connection's task for its whole life.
        // Measured: 6.97 -> 4.11 KiB per idle connection, +1.6% instructions per request.
        let resp =
            match Box::pin(proxy::handle(Request::from_parts(parts, body), ctx.clone())).await {
                Ok(r) => r,
                Err(never) => match never {},
            };

        // The request body's owner may have dropped it unread (a 404, a 413): the connection
        // can carry another request only if it was read to its end.
        if reader.is_none() {
            match back.as_ref().and_then(|b| b.lock().ok()?.take()) {
                Some((r, f)) => {
                    keep_alive &= f.is_done();
                    reader = Some(r);
                }
                None => keep_alive = false,
            }
        }
        keep_alive &= !*shutdown.borrow();
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            switch(w, reader, resp, &ctx).await;
            return;
        }
        if !write_response(&mut w, resp, is_head, http10, &mut keep_alive).await {
            break;
        }
        if !keep_alive {
            break;
        }
    }
    close(w, reader).await;
}

/// Answers a request refused before routing (its head was malformed, too large, or too
/// slow), counts it with the requests answered before routing (route ""), and writes its
/// access log line; the caller closes the connection.
async fn refuse(
    w: &mut ClientWriter,
    ctx: &ConnCtx,
    status: StatusCode,
    kind: &str,
    message: &str,
) {
    ctx.shared.unrouted.record(status.as_u16());
    let request_id = new_request_id();
    let resp = json_error(status, kind, message, &request_id);
    let bytes = resp.body().size_hint().exact().unwrap_or(0);
    if let Some(format) = ctx.shared.snapshot.load().access_log {
        access_log::write(
            format,
            &access_log::Entry {
                time: std::time::SystemTime::now(),
                request_id: request_id.to_str().unwrap_or(""),
                client: ctx.client.ip(),
                // The head could not be read: there is no method or target to log.
                method: "-",
                host: "",
                path: "-",
                protocol: "HTTP/1.1",
                route: "",
                service: "",
                replica: "",
                status: status.as_u16(),
                bytes,
                duration: std::time::Duration::ZERO,
                upstream_duration: None,
                attempts: 0,
                user_agent: "",
                referer: "",
            },
        );
    }
    let _ = write_response(w, resp, false, false, &mut false).await;
}

/// The upstream agreed to switch protocols (101): the client hears the same, and from then
/// on bytes flow both ways untouched until either side closes. A 101 that cannot be
/// honoured (the request had a body, or no upstream connection came with it) is a 502.
async fn switch(
    mut w: ClientWriter,
    reader: Option<Reader>,
    resp: Response<ClientBody>,
    ctx: &ConnCtx,
) {
    let upstream = resp
        .extensions()
        .get::<Upgraded>()
        .and_then(|u| Some((u.take()?, u.protocol.clone())));
    let (Some(client), Some(((up_io, up_rb), protocol))) = (reader, upstream) else {
        let resp = json_error(
            StatusCode::BAD_GATEWAY,
            "upgrade_failed",
            "the upstream switched protocols on a request that cannot be tunnelled",
            &new_request_id(),
        );
        let _ = write_response(&mut w, resp, false, false, &mut false).await;
        return close(w, None).await;
    };
    let mut out = take_write_buf();
    let (parts, body) = resp.into_parts();
    drop(body);
    write_head(&mut out, &parts, false);
    out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
    out.extend_from_slice(protocol.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    let sent = w.write_all(&out).await.is_ok();
    give_write_buf(out);
    if !sent {
        return;
    }
    ctx.shared.tunnels.inc();
    let Reader {
        io: mut client_r,
        rb: client_rb,
    } = client;
    let (mut up_r, mut up_w) = up_io.into_split();
    let upward = async {
        if !client_rb.is_empty() {
            up_w.write_all(client_rb.data()).await?;
        }
        tokio::io::copy(&mut client_r, &mut up_w).await?;
        up_w.shutdown().await
    };
    let downward = async {
        if !up_rb.is_empty() {
            w.write_all(up_rb.data()).await?;
        }
        tokio::io::copy(&mut up_r, &mut w).await?;
        w.shutdown().await
    };
    // Each direction ends with a half-close passed on; an error on either ends both.
    let _ = tokio::try_join!(upward, downward);
    ctx.shared.tunnels.dec();
}

/// Closes the connection: our side first, then the client's unread bytes are drained for a
/// moment so the close does not turn into a reset.
async fn close(mut w: ClientWriter, reader: Option<Reader>) {
    let _ = w.shutdown().await;
    let Some(mut rd) = reader else { return };
    let drain = async {
        let mut seen = 0;
        while seen < LINGER_BYTES {
            rd.rb.consume(rd.rb.data().len());
            rd.rb.ensure(READ_BUF);
            let (rb, io) = (&mut rd.rb, &mut rd.io);
            match std::future::poll_fn(|cx| rb.poll_fill(io, cx)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
    rd.rb.consume(rd.rb.data().len());
    rd.rb.release();
}

/// How the response body is delimited on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Delimit {
    None,
    Length,
    Chunked,
    Close,
}

/// Appends `date: <now>\r\n`, formatted at most once a second per thread.
fn push_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_empty() {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(d.1.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// What the writer does next: a body frame arrived, or the body is not ready and what is
/// buffered should go out first.
enum Step {
    Frame(Option<Result<Frame<Bytes>, crate::body::BoxError>>),
    Flush,
}

/// Writes `resp`; returns false when the connection cannot be used again (a write failed or
/// the body broke off). Sets `keep_alive` false when the response demands a close.
async fn write_response(
    w: &mut ClientWriter,
    resp: Response<ClientBody>,
    is_head: bool,
    http10: bool,
    keep_alive: &mut bool,
) -> bool {
    let (parts, mut body) = resp.into_parts();
    let code = parts.status.as_u16();
    let no_body = is_head || parts.status.is_informational() || code == 204 || code == 304;
    if parts
        .headers
        .get(header::CONNECTION)
        .is_some_and(|v| has_token(v, "close"))
    {
        *keep_alive = false;
    }
    let size = body.size_hint().exact();
    let delimit = match size {
        _ if no_body => Delimit::None,
        Some(_) => Delimit::Length,
        None if !http10 => Delimit::Chunked,
        None => {
            *keep_alive = false;
            Delimit::Close
        }
    };

    let mut out = take_write_buf();
    let has_length = write_head(&mut out, &parts, no_body && code != 204);
    match (delimit, size) {
        (Delimit::Length, Some(n)) => content_length(&mut out, n),
        (Delimit::None, Some(n)) if is_head && !has_length && n > 0 => content_length(&mut out, n),
        (Delimit::Chunked, _) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if !*keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");

    let ok = if delimit == Delimit::None {
        drop(body);
        w.write_all(&out).await.is_ok()
    } else {
        write_body(w, &mut body, &mut out, delimit == Delimit::Chunked).await
    };
    let ok = ok && w.flush().await.is_ok();
    give_write_buf(out);
    ok
}

/// Writes the status line and the response's own headers, without framing and connection
/// headers (the caller's to add) and without the blank line. Content-Length is kept only if
/// `keep_length` (a HEAD's or 304's, which describe a body not sent); returns whether it was.
fn write_head(out: &mut Vec<u8>, parts: &http::response::Parts, keep_length: bool) -> bool {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    let (mut has_date, mut has_length) = (false, false);
    for (name, value) in &parts.headers {
        if name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
        {
            continue;
        }
        if name == header::CONTENT_LENGTH {
            if !keep_length || has_length {
                continue;
            }
            has_length = true;
        }
        has_date |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has_date {
        push_date(out);
    }
    has_length
}

fn content_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes the body after the head already in `out`. Frames that are ready at once are
/// coalesced with the head into one write; `out` is flushed whenever the body has to wait.
async fn write_body(
    w: &mut ClientWriter,
    body: &mut ClientBody,
    out: &mut Vec<u8>,
    chunked: bool,
) -> bool {
    loop {
        let step = std::future::poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(f) => Poll::Ready(Step::Frame(f)),
            Poll::Pending if !out.is_empty() => Poll::Ready(Step::Flush),
            Poll::Pending => Poll::Pending,
        })
        .await;
        let data = match step {
            Step::Flush => {
                if w.write_all(out).await.is_err() {
                    return false;
                }
                out.clear();
                continue;
            }
            Step::Frame(None) => break,
            // The body broke off: the client must not take what it got for the whole.
            Step::Frame(Some(Err(_))) => return false,
            Step::Frame(Some(Ok(frame))) => match frame.into_data() {
                Ok(d) if !d.is_empty() => d,
                _ => continue,
            },
        };
        if chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if out.len() + data.len() <= WRITE_COALESCE {
            out.extend_from_slice(&data);
        } else {
            if w.write_all(out).await.is_err() || w.write_all(&data).await.is_err() {
                return false;
            }
            out.clear();
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= WRITE_COALESCE {
            if w.write_all(out).await.is_err() {
                return false;
            }
            out.clear();
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    out.is_empty() || w.write_all(out).await.is_ok()
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
        let mut rng = fastrand::Rng::with_seed(2026);
        for _ in 0..20_000 {
            let mut d = seeds[rng.usize(..seeds.len())].to_vec();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..d.len());
                match rng.u8(..3) {
                    0 => d[at] = alphabet[rng.usize(..alphabet.len())],
                    1 => d.insert(at, alphabet[rng.usize(..alphabet.len())]),
                    _ => d.truncate(at.max(1)),
                }
            }
            fuzz_check(&d);
        }
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
