//! Bodies in both directions: the request body sent upstream (empty, buffered for replay,
//! or streamed under a byte cap) and the response body sent to the client, which reports
//! its bytes and completion when it ends (metrics, access log, connection back to the pool).

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client sent more body than the listener's `max_body_bytes`.
#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body exceeds max_body_bytes")
    }
}
impl std::error::Error for BodyTooLarge {}

/// The first `T` in `err`'s source chain, `err` itself included.
fn cause<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// True when `err` (or anything in its source chain) is [`BodyTooLarge`].
pub fn is_body_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    cause::<BodyTooLarge>(err).is_some()
}

/// True when `err` (or anything in its source chain) is a client's HTTP/1.1 body that broke
/// off or was malformed.
pub fn is_client_body_error(err: &(dyn std::error::Error + 'static)) -> bool {
    cause::<crate::h1::BodyError>(err).is_some()
}

/// True when `err` (or anything in its source chain) is a client's HTTP/1.1 body that
/// paused past the listener's `body_timeout`.
pub fn is_client_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        cause::<crate::h1::BodyError>(err),
        Some(crate::h1::BodyError::TimedOut(_))
    )
}

/// A request body as the client sends it: none, read by our HTTP/1.1 server, or by hyper's
/// h2 server.
#[derive(Debug)]
pub enum RequestBody {
    Empty,
    H1(crate::h1::server::H1Body),
    H2(Incoming),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::H1(b) => Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
            RequestBody::H2(b) => Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::H1(b) => b.is_end_stream(),
            RequestBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::H1(b) => b.size_hint(),
            RequestBody::H2(b) => b.size_hint(),
        }
    }
}

/// A request body on its way upstream.
#[derive(Debug)]
pub enum UpstreamBody {
    Empty,
    /// Buffered (so a retry can replay it).
    Full(Option<Bytes>),
    /// Streamed from the client; errors with [`BodyTooLarge`] past `limit` bytes.
    Stream {
        inner: RequestBody,
        seen: u64,
        limit: u64,
    },
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            UpstreamBody::Stream { inner, seen, limit } => {
                match ready!(Pin::new(inner).poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Some(d) = frame.data_ref() {
                            *seen += d.len() as u64;
                            if *seen > *limit {
                                return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                            }
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(e)) => Poll::Ready(Some(Err(e))),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Full(b) => b.is_none(),
            UpstreamBody::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            UpstreamBody::Stream { inner, .. } => inner.size_hint(),
        }
    }
}

/// Called once when a response body ends (`complete`) or is dropped before its end.
pub trait OnEnd: Send + Sync {
    fn on_end(self: Box<Self>, bytes: u64, complete: bool);
}

/// A response body on its way to the client.
pub struct ClientBody {
    inner: Inner,
    bytes: u64,
    on_end: Option<Box<dyn OnEnd>>,
}

enum Inner {
    Full(Option<Bytes>),
    Upstream(Incoming),
    Raw(crate::h1::client::ResponseBody),
}

impl ClientBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b: Bytes = b.into();
        ClientBody {
            inner: Inner::Full((!b.is_empty()).then_some(b)),
            bytes: 0,
            on_end: None,
        }
    }

    pub fn empty() -> Self {
        ClientBody::full(Bytes::new())
    }

    pub fn upstream(b: Incoming) -> Self {
        ClientBody {
            inner: Inner::Upstream(b),
            bytes: 0,
            on_end: None,
        }
    }

    pub fn raw(b: crate::h1::client::ResponseBody) -> Self {
        ClientBody {
            inner: Inner::Raw(b),
            bytes: 0,
            on_end: None,
        }
    }

    pub fn set_on_end(&mut self, f: Box<dyn OnEnd>) {
        self.on_end = Some(f);
        if self.is_end_stream() {
            // An empty body is never polled by hyper: report it now.
            self.finish(true);
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(f) = self.on_end.take() {
            f.on_end(self.bytes, complete);
        }
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        self.finish(false);
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let next = match &mut this.inner {
            Inner::Full(b) => b.take().map(|b| Ok(Frame::data(b))),
            Inner::Upstream(inc) => {
                ready!(Pin::new(inc).poll_frame(cx)).map(|r| r.map_err(|e| Box::new(e) as BoxError))
            }
            Inner::Raw(raw) => ready!(Pin::new(raw).poll_frame(cx)),
        };
        match &next {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if this.is_end_stream() {
                    this.finish(true);
                }
            }
            Some(Err(_)) => this.finish(false),
            None => this.finish(true),
        }
        Poll::Ready(next)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Upstream(inc) => inc.is_end_stream(),
            Inner::Raw(raw) => raw.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Upstream(inc) => inc.size_hint(),
            Inner::Raw(raw) => raw.size_hint(),
        }
    }
}
