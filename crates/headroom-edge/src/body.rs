//! Bodies in both directions: the request body sent upstream (empty, buffered for replay,
//! or streamed under a byte cap) and the response body sent to the client, which reports
//! its bytes and completion when it ends (metrics, access log, connection back to the pool).

use crate::replica::Replica;
use bytes::Bytes;
use headroom_telemetry::Counter;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

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

/// True when `err` (or anything in its source chain) is a client's body (HTTP/1.1 or h2)
/// that broke off, was malformed, or paused too long: the client's fault, not the replica's.
pub fn is_client_body_error(err: &(dyn std::error::Error + 'static)) -> bool {
    cause::<crate::h1::BodyError>(err).is_some()
}

/// True when `err` (or anything in its source chain) is a client's body (HTTP/1.1 or h2)
/// that paused past the listener's `body_timeout`.
pub fn is_client_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        cause::<crate::h1::BodyError>(err),
        Some(crate::h1::BodyError::TimedOut(_))
    )
}

/// The upstream paused longer than its service's `read_timeout` mid-body.
#[derive(Debug)]
pub struct UpstreamStalled(pub Duration);

impl std::fmt::Display for UpstreamStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no response body bytes for {:?} (read_timeout)", self.0)
    }
}
impl std::error::Error for UpstreamStalled {}

/// A service's `read_timeout`, the longest pause between an upstream's response body bytes,
/// and where a response cut off by it is counted. One per service and snapshot, shared by
/// that service's responses (HTTP/1.1 connections keep a clone across requests, so a request
/// does not touch its reference count).
#[derive(Debug)]
pub struct ReadTimeout {
    pub limit: Duration,
    service: Arc<str>,
    stalls: Arc<Counter>,
}

impl ReadTimeout {
    /// `stalls` is `headroom_upstream_errors_total{service, kind="read_timeout"}`.
    pub fn new(limit: Duration, service: Arc<str>, stalls: Arc<Counter>) -> Self {
        ReadTimeout {
            limit,
            service,
            stalls,
        }
    }

    /// Counts and logs a response that `replica` stopped sending: the client's response is
    /// cut off and the upstream connection dropped.
    pub(crate) fn stalled(&self, replica: &str) -> UpstreamStalled {
        self.stalls.inc();
        tracing::warn!(
            service = %self.service,
            replica,
            read_timeout = ?self.limit,
            "upstream paused mid-body past read_timeout: response cut off, connection dropped"
        );
        UpstreamStalled(self.limit)
    }
}

/// A pause timer for a body that waits on a peer: armed the first time the body has to
/// wait, moved to `limit` from the start of each later wait (a pending deadline moved later
/// is an atomic store in tokio), so one timer serves the whole body, not one per frame.
#[derive(Debug, Default)]
pub(crate) struct PauseTimer {
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl PauseTimer {
    /// The peer had nothing: `Ready` once it has been waited for `limit` in a row.
    pub(crate) fn poll_expired(&mut self, limit: Duration, cx: &mut Context<'_>) -> Poll<()> {
        if !self.waiting {
            self.start(limit);
        }
        match self.timer.as_mut() {
            Some(t) => t.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    /// The peer delivered: the next wait starts a new pause.
    pub(crate) fn progressed(&mut self) {
        self.waiting = false;
    }

    /// Starts one wait of `limit` from now that later waits do not restart (until
    /// [`PauseTimer::progressed`]): a deadline for a whole phase, such as a response head.
    pub(crate) fn start(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        match &mut self.timer {
            Some(t) => t.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.waiting = true;
    }
}

/// A request body as the client sends it: none, read by our HTTP/1.1 server, or an h2
/// stream's (`listener/h2.rs`).
#[derive(Debug)]
pub enum RequestBody {
    Empty,
    H1(crate::h1::server::H1Body),
    H2(H2Body),
}

/// A client's h2 request body, held to the listener's `body_timeout` like an HTTP/1.1 one:
/// a pause longer than that is a 408, not a stall blamed on the upstream.
///
/// What hyper's `Incoming` did for an h2 body, done here: each DATA frame's bytes are given
/// back to the stream's flow-control window as they are read (the client may send as much
/// again), and the declared `content-length` counts down for `size_hint`. The h2 crate
/// itself refuses a stream whose DATA does not add up to its `content-length`.
#[derive(Debug)]
pub struct H2Body {
    recv: h2::RecvStream,
    /// What is left of the declared `content-length`.
    remaining: Option<u64>,
    data_done: bool,
    timeout: Duration,
    pause: PauseTimer,
}

impl H2Body {
    pub fn new(recv: h2::RecvStream, length: Option<u64>, timeout: Duration) -> Self {
        H2Body {
            recv,
            remaining: length,
            data_done: false,
            timeout,
            pause: PauseTimer::default(),
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = crate::h1::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        use crate::h1::BodyError;
        // The client's stream broke (reset, connection lost): its fault, as for HTTP/1.1,
        // so the error is a client body error (400, replica not blamed).
        let broke = |e: h2::Error| BodyError::Io(std::io::Error::other(e));
        let this = self.get_mut();
        let next = if this.data_done {
            this.recv.poll_trailers(cx).map(|t| match t {
                Ok(Some(t)) => Some(Ok(Frame::trailers(t))),
                Ok(None) => None,
                Err(e) => Some(Err(broke(e))),
            })
        } else {
            match this.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(r) = &mut this.remaining {
                        *r = r.saturating_sub(data.len() as u64);
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(broke(e)))),
                Poll::Ready(None) => {
                    this.data_done = true;
                    return Pin::new(this).poll_frame(cx);
                }
                Poll::Pending => Poll::Pending,
            }
        };
        match next {
            Poll::Ready(next) => {
                this.pause.progressed();
                Poll::Ready(next)
            }
            Poll::Pending => {
                ready!(this.pause.poll_expired(this.timeout, cx));
                Poll::Ready(Some(Err(BodyError::TimedOut(this.timeout))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.recv.is_end_stream() {
            return SizeHint::with_exact(0);
        }
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
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

/// Whose turn it is in an h2 upload, and since when: hyper's connection task polls the body
/// and marks it, the request's task reads it, so that `request_timeout` counts the time the
/// upstream keeps the request waiting (flow control, then the response head), not the
/// client's pauses (those are `body_timeout`'s). One atomic: the time in the high bits, the
/// turn in the low two.
#[derive(Debug)]
pub struct UploadClock {
    base: Instant,
    mark: AtomicU64,
}

const CLIENT_TURN: u64 = 0;
const UPSTREAM_TURN: u64 = 1;

impl UploadClock {
    fn new() -> Self {
        UploadClock {
            base: Instant::now(),
            mark: AtomicU64::new(UPSTREAM_TURN),
        }
    }

    fn mark(&self, turn: u64) {
        let ns = self.base.elapsed().as_nanos().min(u64::MAX as u128 >> 2) as u64;
        self.mark.store(ns << 2 | turn, Relaxed);
    }

    /// When `limit` runs out if nothing changes. While the body waits on the client, that
    /// is `limit` from now: the upstream is not kept waiting, and this is asked again then.
    pub fn deadline(&self, limit: Duration) -> Instant {
        let m = self.mark.load(Relaxed);
        if m & 3 == CLIENT_TURN {
            return Instant::now() + limit;
        }
        self.base + Duration::from_nanos(m >> 2) + limit
    }
}

/// Runs `send`, an h2 request up to its response head, under `request_timeout` (`limit`):
/// `None` once the upstream has kept the request waiting that long. Without a clock (an
/// empty or buffered body, handed over at once) that is `limit` from now; with one, the
/// waits on the client are left out.
pub async fn within_request_timeout<F: Future>(
    send: F,
    clock: Option<&UploadClock>,
    limit: Duration,
) -> Option<F::Output> {
    let start = Instant::now() + limit;
    let deadline = || clock.map_or(start, |c| c.deadline(limit));
    let timer = tokio::time::sleep_until(deadline());
    tokio::pin!(send, timer);
    loop {
        tokio::select! {
            biased;
            r = &mut send => return Some(r),
            () = &mut timer => {
                let next = deadline();
                if next <= Instant::now() {
                    return None;
                }
                timer.as_mut().reset(next);
            }
        }
    }
}

/// A request body on its way to an h2 upstream: the body, and for a streamed one the clock
/// its request's `request_timeout` reads.
#[derive(Debug)]
pub struct H2Upload {
    body: UpstreamBody,
    clock: Option<Arc<UploadClock>>,
}

impl H2Upload {
    /// Wraps `body`; a streamed body gets a clock (one allocation, h2 streamed uploads only).
    pub fn new(body: UpstreamBody) -> (H2Upload, Option<Arc<UploadClock>>) {
        let clock = matches!(body, UpstreamBody::Stream { .. } if !body.is_end_stream())
            .then(|| Arc::new(UploadClock::new()));
        let upload = H2Upload {
            body,
            clock: clock.clone(),
        };
        (upload, clock)
    }
}

impl Body for H2Upload {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let next = Pin::new(&mut this.body).poll_frame(cx);
        if let Some(clock) = &this.clock {
            // Pending: waiting on the client. A frame handed over: hyper sends it and polls
            // again once the upstream's window allows. The end: the upstream's turn to answer.
            clock.mark(match next {
                Poll::Pending => CLIENT_TURN,
                Poll::Ready(_) => UPSTREAM_TURN,
            });
        }
        next
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
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
    Upstream(H2Response),
    Raw(crate::h1::client::ResponseBody),
    /// Compressed and/or stored in the cache as it streams (routes with a cache or
    /// compression only).
    Filtered(Box<Filtered>),
}

/// A response body on its way through compression and into the cache: each chunk is
/// encoded (when an encoder is set), then handed to the cache's store, then sent.
struct Filtered {
    src: Inner,
    encoder: Option<headroom_cache::compress::Encoder>,
    store: Option<Box<headroom_cache::Store>>,
    finished: bool,
}

impl Filtered {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            match ready!(poll_inner(&mut self.src, cx)) {
                Some(Ok(frame)) => {
                    let frame = match frame.into_data() {
                        Ok(data) => data,
                        // Trailers pass as they are (and are not stored).
                        Err(other) => return Poll::Ready(Some(Ok(other))),
                    };
                    let out = match &mut self.encoder {
                        Some(e) => e.push(&frame),
                        None => frame,
                    };
                    if let Some(s) = &mut self.store {
                        s.data(&out);
                    }
                    if out.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Some(Err(e)) => {
                    // Cut off (stalled, lied about its length, broke): never stored.
                    if let Some(s) = self.store.take() {
                        s.end(false);
                    }
                    self.finished = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    self.finished = true;
                    let tail = match &mut self.encoder {
                        Some(e) => e.finish(),
                        None => Bytes::new(),
                    };
                    if let Some(mut s) = self.store.take() {
                        s.data(&tail);
                        s.end(true);
                    }
                    if !tail.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(tail))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

fn poll_inner(
    inner: &mut Inner,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    match inner {
        Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        Inner::Upstream(h2) => h2.poll_frame(cx),
        Inner::Raw(raw) => Pin::new(raw).poll_frame(cx),
        Inner::Filtered(f) => f.poll_frame(cx),
    }
}

fn inner_is_end(inner: &Inner) -> bool {
    match inner {
        Inner::Full(b) => b.is_none(),
        Inner::Upstream(h2) => h2.body.is_end_stream(),
        Inner::Raw(raw) => raw.is_end_stream(),
        // Polled once more after its last chunk: the encoder's tail and the store's end.
        Inner::Filtered(f) => f.finished,
    }
}

/// A response body from an h2 upstream, held to its service's `read_timeout`.
struct H2Response {
    body: Incoming,
    read_timeout: Arc<ReadTimeout>,
    replica: Arc<Replica>,
    pause: PauseTimer,
}

impl H2Response {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(next) => {
                self.pause.progressed();
                Poll::Ready(next.map(|r| r.map_err(|e| Box::new(e) as BoxError)))
            }
            Poll::Pending => {
                ready!(self.pause.poll_expired(self.read_timeout.limit, cx));
                let stalled = self.read_timeout.stalled(&self.replica.label);
                // The stream is reset when this body is dropped; the connection it came on
                // is not handed to new requests (other streams on it finish first).
                self.replica.pools.forget_h2();
                Poll::Ready(Some(Err(Box::new(stalled))))
            }
        }
    }
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

    /// A response body from an h2 upstream: `replica`'s, held to `read_timeout`.
    pub fn upstream(b: Incoming, read_timeout: &Arc<ReadTimeout>, replica: &Arc<Replica>) -> Self {
        ClientBody {
            inner: Inner::Upstream(H2Response {
                body: b,
                read_timeout: read_timeout.clone(),
                replica: replica.clone(),
                pause: PauseTimer::default(),
            }),
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

    /// Compresses the body with `encoder` and/or stores it with `store` as it streams.
    pub fn filter(
        &mut self,
        encoder: Option<headroom_cache::compress::Encoder>,
        store: Option<Box<headroom_cache::Store>>,
    ) {
        if encoder.is_none() && store.is_none() {
            return;
        }
        if let (Inner::Full(body), None) = (&self.inner, &encoder) {
            // A body already whole: stored at once.
            if let Some(mut store) = store {
                if let Some(b) = body {
                    store.data(b);
                }
                store.end(true);
            }
            return;
        }
        let src = std::mem::replace(&mut self.inner, Inner::Full(None));
        self.inner = Inner::Filtered(Box::new(Filtered {
            src,
            encoder,
            store,
            finished: false,
        }));
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
        let next = ready!(poll_inner(&mut this.inner, cx));
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
        inner_is_end(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Upstream(h2) => h2.body.size_hint(),
            Inner::Raw(raw) => raw.size_hint(),
            Inner::Filtered(f) if f.encoder.is_some() => SizeHint::default(),
            Inner::Filtered(f) => match &f.src {
                Inner::Upstream(h2) => h2.body.size_hint(),
                Inner::Raw(raw) => raw.size_hint(),
                _ => SizeHint::default(),
            },
        }
    }
}
