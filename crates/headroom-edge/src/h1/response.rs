//! Writing a response to a client over HTTP/1.1: the head and the body frames that are
//! ready at once go out in one write; Content-Length when the size is known, else chunked
//! (or delimited by the close for HTTP/1.0).

use super::server::ClientWriter;
use super::{content_length, give_write_buf, has_token, take_write_buf};
use crate::body::ClientBody;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Response;
use http_body::{Body, Frame};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::time::{Instant, Sleep};

/// Responses are written in pieces of at most this many bytes (head and small bodies are
/// coalesced into one write up to it).
const WRITE_COALESCE: usize = 16 << 10;

/// How the response body is delimited on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Delimit {
    None,
    Length,
    Chunked,
    Close,
}

/// `f` of the `Date` field's value for now, formatted at most once a second per thread
/// (HTTP/1.1 writes its bytes, h2 clones the value: a reference count, no copy).
pub(crate) fn with_date<R>(f: impl FnOnce(&HeaderValue) -> R) -> R {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static DATE: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.as_ref().is_none_or(|(s, _)| *s != secs) {
            let v = HeaderValue::from_maybe_shared(Bytes::from(httpdate::fmt_http_date(now)))
                .expect("an HTTP date is a valid field value");
            *d = Some((secs, v));
        }
        let (_, v) = d.as_ref().expect("set above");
        f(v)
    })
}

/// Appends `date: <now>\r\n`.
fn push_date(out: &mut Vec<u8>) {
    with_date(|v| {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// Why a response could not be written whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriteFailed {
    /// The client's connection broke.
    Client,
    /// The response body broke off (the upstream failed or stalled mid-body).
    Body,
    /// The client took no bytes for `send_timeout`.
    TimedOut,
}

/// The listener's `send_timeout` on one connection, on the connection's own timer (the
/// one its header timeout uses between requests): the clock starts when a write has to
/// wait for the client and restarts whenever the client takes bytes, like nginx's
/// `send_timeout`. A write that completes at once touches no timer.
pub(super) struct SendTimeout<'a> {
    timer: Pin<&'a mut Sleep>,
    limit: Duration,
    waiting: bool,
}

impl<'a> SendTimeout<'a> {
    pub(super) fn new(timer: Pin<&'a mut Sleep>, limit: Duration) -> Self {
        SendTimeout {
            timer,
            limit,
            waiting: false,
        }
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<WriteFailed> {
        if !std::mem::replace(&mut self.waiting, true) {
            self.timer.as_mut().reset(Instant::now() + self.limit);
        }
        self.timer.as_mut().poll(cx).map(|()| WriteFailed::TimedOut)
    }

    pub(super) async fn write_all(
        &mut self,
        w: &mut ClientWriter,
        mut buf: &[u8],
    ) -> Result<(), WriteFailed> {
        std::future::poll_fn(|cx| {
            while !buf.is_empty() {
                match Pin::new(&mut *w).poll_write(cx, buf) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(Err(WriteFailed::Client))
                    }
                    Poll::Ready(Ok(n)) => {
                        buf = &buf[n..];
                        self.waiting = false;
                    }
                    Poll::Pending => return self.poll_expired(cx).map(Err),
                }
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    async fn flush(&mut self, w: &mut ClientWriter) -> Result<(), WriteFailed> {
        std::future::poll_fn(|cx| match Pin::new(&mut *w).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r.map_err(|_| WriteFailed::Client)),
            Poll::Pending => self.poll_expired(cx).map(Err),
        })
        .await
    }
}

/// What the writer does next: a body frame arrived, or the body is not ready and what is
/// buffered should go out first.
enum Step {
    Frame(Option<Result<Frame<Bytes>, crate::body::BoxError>>),
    Flush,
}

/// Writes `resp`, the client held to `send`; an error means the connection cannot be used
/// again. Sets `keep_alive` false when the response demands a close.
pub(super) async fn write_response(
    w: &mut ClientWriter,
    resp: Response<ClientBody>,
    is_head: bool,
    http10: bool,
    keep_alive: &mut bool,
    send: &mut SendTimeout<'_>,
) -> Result<(), WriteFailed> {
    let (parts, mut body) = resp.into_parts();
    let code = parts.status.as_u16();
    let no_body = is_head || parts.status.is_informational() || code == 204 || code == 304;
    if parts
        .headers
        .get(header::CONNECTION)
        .is_some_and(|v| has_token(v.as_bytes(), b"close"))
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

    let written = if delimit == Delimit::None {
        drop(body);
        send.write_all(w, &out).await
    } else {
        write_body(w, &mut body, &mut out, delimit == Delimit::Chunked, send).await
    };
    let written = match written {
        Ok(()) => send.flush(w).await,
        Err(e) => Err(e),
    };
    give_write_buf(out);
    written
}

/// Writes the status line and the response's own headers, without framing and connection
/// headers (the caller's to add) and without the blank line. Content-Length is kept only if
/// `keep_length` (a HEAD's or 304's, which describe a body not sent); returns whether it was.
pub(super) fn write_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    keep_length: bool,
) -> bool {
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

/// Writes the body after the head already in `out`. Frames that are ready at once are
/// coalesced with the head into one write; `out` is flushed whenever the body has to wait.
async fn write_body(
    w: &mut ClientWriter,
    body: &mut ClientBody,
    out: &mut Vec<u8>,
    chunked: bool,
    send: &mut SendTimeout<'_>,
) -> Result<(), WriteFailed> {
    loop {
        let step = std::future::poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(f) => Poll::Ready(Step::Frame(f)),
            Poll::Pending if !out.is_empty() => Poll::Ready(Step::Flush),
            Poll::Pending => Poll::Pending,
        })
        .await;
        let data = match step {
            Step::Flush => {
                send.write_all(w, out).await?;
                out.clear();
                continue;
            }
            Step::Frame(None) => break,
            // The body broke off: the client must not take what it got for the whole, so
            // no final chunk; the caller closes the connection.
            Step::Frame(Some(Err(_))) => return Err(WriteFailed::Body),
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
            send.write_all(w, out).await?;
            send.write_all(w, &data).await?;
            out.clear();
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= WRITE_COALESCE {
            send.write_all(w, out).await?;
            out.clear();
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if out.is_empty() {
        return Ok(());
    }
    send.write_all(w, out).await
}
