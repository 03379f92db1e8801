//! The server side of HTTP/1.1 for client connections, plain and TLS: read a request head
//! (`request.rs`), hand the request to [`pipeline::handle`], write the response
//! (`response.rs`), and keep the connection alive while both sides allow it; or, on a 101,
//! join it to the upstream's as a tunnel.
//!
//! An idle connection holds no buffer: the read buffer comes from a per-thread free list
//! when the socket turns readable and goes back once a request has been answered and
//! nothing more is buffered (TLS keeps its buffer: it cannot wait for readability without
//! reading).

use super::client::Upgraded;
use super::request::{parse_head, Head, Reject};
use super::response::{write_head, write_response, SendTimeout, WriteFailed};
use super::{give_write_buf, take_write_buf, BodyError, Framing, ReadBuffer, READ_BUF};
use crate::body::{ClientBody, PauseTimer, RequestBody};
use crate::headers::new_request_id;
use crate::pipeline::{self, json_error, ConnCtx};
use bytes::Bytes;
use headroom_config::ListenerConfig;
use headroom_telemetry::{access_log, Counter};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tracing::warn;

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
    /// Armed the first time the body has to wait for the client.
    pause: PauseTimer,
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
                this.pause.progressed();
                Poll::Ready(next.map(|r| r.map(Frame::data)))
            }
            Poll::Pending => {
                ready!(this.pause.poll_expired(this.timeout, cx));
                Poll::Ready(Some(Err(BodyError::TimedOut(this.timeout))))
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
/// `send_timeouts` counts connections closed because the client took no response bytes
/// for `send_timeout`.
pub async fn serve(
    io: ClientReader,
    mut w: ClientWriter,
    ctx: Arc<ConnCtx>,
    cfg: &ListenerConfig,
    mut shutdown: watch::Receiver<bool>,
    send_timeouts: &Counter,
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
                let mut send = SendTimeout::new(deadline.as_mut(), cfg.send_timeout);
                let kind = match r.status {
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "header_too_large",
                    StatusCode::HTTP_VERSION_NOT_SUPPORTED => "http_version_not_supported",
                    StatusCode::NOT_IMPLEMENTED => "not_implemented",
                    StatusCode::EXPECTATION_FAILED => "expectation_failed",
                    _ => "bad_request",
                };
                // Rare paths are boxed (refuse, switch, close): inline, their futures would
                // be part of every connection's task, idle or not.
                Box::pin(refuse(&mut w, &ctx, r.status, kind, &r.message, &mut send)).await;
                break;
            }
            // Headers too slow, or idle too long. A partial head hears 408; a silent
            // keep-alive connection is just closed, as nginx does.
            Err(_) => {
                if !rd.rb.is_empty() {
                    let message = "the request head did not arrive in time";
                    let mut send = SendTimeout::new(deadline.as_mut(), cfg.send_timeout);
                    Box::pin(refuse(
                        &mut w,
                        &ctx,
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        message,
                        &mut send,
                    ))
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
                pause: PauseTimer::default(),
            })
        };
        let (parts, ()) = request.into_parts();
        // Boxed: the request's state (3.8 KiB, most of it `forward`) lives only while the
        // request does, instead of inside every connection's task for its whole life.
        // Measured: 6.97 -> 4.11 KiB per idle connection, +1.6% instructions per request.
        let resp = match Box::pin(pipeline::handle(
            Request::from_parts(parts, body),
            ctx.clone(),
        ))
        .await
        {
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
            Box::pin(switch(w, reader, resp, &ctx)).await;
            return;
        }
        let mut send = SendTimeout::new(deadline.as_mut(), cfg.send_timeout);
        match write_response(&mut w, resp, is_head, http10, &mut keep_alive, &mut send).await {
            Ok(()) => {}
            Err(WriteFailed::TimedOut) => {
                send_timeouts.inc();
                warn!(
                    listener = %cfg.name,
                    client = %ctx.client,
                    send_timeout = ?cfg.send_timeout,
                    "client took no response bytes within send_timeout: connection closed"
                );
                // No orderly close: the client reads nothing, so a TLS close_notify could
                // not be written either. Dropping the socket ends it.
                return;
            }
            // The response is incomplete: closing is how the client learns it.
            Err(WriteFailed::Client | WriteFailed::Body) => break,
        }
        if !keep_alive {
            break;
        }
    }
    Box::pin(close(w, reader)).await;
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
    send: &mut SendTimeout<'_>,
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
                cache: "",
                guard: "",
                consumer: "",
                user_agent: "",
                referer: "",
            },
        );
    }
    let _ = write_response(w, resp, false, false, &mut false, send).await;
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
        let mut timer = std::pin::pin!(tokio::time::sleep(LINGER));
        let mut send = SendTimeout::new(timer.as_mut(), LINGER);
        let _ = write_response(&mut w, resp, false, false, &mut false, &mut send).await;
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
    // Bounded: a TLS close_notify cannot be written to a client that reads nothing.
    let _ = tokio::time::timeout(LINGER, w.shutdown()).await;
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
