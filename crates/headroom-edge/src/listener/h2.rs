//! h2 client connections: hyper serves them, and a watch per connection adds what hyper's
//! h2 server lacks. hyper 1.x has keep-alive PINGs (a peer that stops answering them is
//! dropped) but no header, idle or send timeout: a client that opens a connection and
//! sends no request, or stops reading its responses while acknowledging PINGs, would hold
//! the connection (and the upstream responses behind it) forever.
//!
//! The watch counts the connection's open streams and the response bodies waiting on the
//! client's flow control, with one timer per connection, moved to the next deadline:
//! - no open stream for `header_timeout` (no first request, or idle between requests: the
//!   same rule as an idle HTTP/1.1 keep-alive connection): GOAWAY, and the connection ends
//!   once the client has seen it (at most `header_timeout` later);
//! - responses waiting on the client, and none of them taken further for `send_timeout`:
//!   the connection is dropped (counted, logged). hyper polls a response body only when the
//!   stream's window has room, so a body that handed over a frame and is not polled again
//!   waits on the client; the watch cannot reset that one stream (hyper owns it), so the
//!   whole connection goes, as HTTP/1.1's does.

use crate::body::{ClientBody, H2Body, RequestBody};
use crate::pipeline::{self, ConnCtx};
use headroom_config::ListenerConfig;
use headroom_telemetry::Counter;
use http_body::{Body, Frame, SizeHint};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

fn builder(cfg: &ListenerConfig) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(cfg.max_header_bytes as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

/// What one connection's streams are doing, shared by its response bodies (each holds an
/// `Arc` to it; the connection is served on one thread, so the atomics are uncontended).
#[derive(Debug)]
pub(super) struct ConnWatch {
    base: Instant,
    /// Streams from their request to the end (or drop) of their response body.
    open: AtomicUsize,
    /// When the last stream ended (ns since `base`): the start of the idle time.
    idle_since: AtomicU64,
    /// Response bodies that handed hyper a frame and have not been polled since.
    waiting: AtomicUsize,
    /// When a response body on the connection was last polled (ns since `base`).
    taken: AtomicU64,
}

/// What the watch found when its timer fired.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nothing to do until this instant.
    Fine(Instant),
    /// No open stream for `header_timeout`.
    Idle,
    /// Responses waited on the client for `send_timeout`.
    SendStalled,
}

impl ConnWatch {
    pub(super) fn new() -> Self {
        ConnWatch {
            base: Instant::now(),
            open: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            taken: AtomicU64::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos().min(u64::MAX as u128) as u64
    }

    fn at(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }

    /// A request arrived: its stream is open until the guard (then its body) is dropped.
    pub(super) fn stream(self: &Arc<Self>) -> StreamGuard {
        self.open.fetch_add(1, Relaxed);
        StreamGuard(self.clone())
    }

    /// The verdict at `now`. Deadlines that depend on a change not seen yet (a stream
    /// ending, a body starting to wait) are at least a timeout away, so when nothing is due
    /// the watch looks again within the shorter timeout.
    pub(super) fn check(
        &self,
        now: Instant,
        header_timeout: Duration,
        send_timeout: Duration,
    ) -> Verdict {
        if self.open.load(Relaxed) == 0 {
            let due = self.at(self.idle_since.load(Relaxed)) + header_timeout;
            return if now >= due {
                Verdict::Idle
            } else {
                Verdict::Fine(due)
            };
        }
        let later = now + header_timeout.min(send_timeout);
        if self.waiting.load(Relaxed) > 0 {
            let due = self.at(self.taken.load(Relaxed)) + send_timeout;
            return if now >= due {
                Verdict::SendStalled
            } else {
                Verdict::Fine(due.min(later))
            };
        }
        Verdict::Fine(later)
    }
}

/// One open stream; dropped with its response body (or with the request, if no response
/// was made).
#[derive(Debug)]
pub(super) struct StreamGuard(Arc<ConnWatch>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let w = &self.0;
        if w.open.fetch_sub(1, Relaxed) == 1 {
            w.idle_since.store(w.now_ns(), Relaxed);
        }
    }
}

/// A response body (a [`ClientBody`]) on an h2 client connection, reporting to the
/// connection's watch.
pub(super) struct WatchedBody<B = ClientBody> {
    inner: B,
    stream: StreamGuard,
    /// Handed hyper a frame and not polled since: waiting on the client's window.
    waiting: bool,
}

impl<B> WatchedBody<B> {
    pub(super) fn new(inner: B, stream: StreamGuard) -> Self {
        WatchedBody {
            inner,
            stream,
            waiting: false,
        }
    }
}

impl<B> Drop for WatchedBody<B> {
    fn drop(&mut self) {
        if self.waiting {
            self.stream.0.waiting.fetch_sub(1, Relaxed);
        }
    }
}

impl<B: Body + Unpin> Body for WatchedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let w = &this.stream.0;
        // Polled again: the client made room for what was handed over.
        if std::mem::take(&mut this.waiting) {
            w.waiting.fetch_sub(1, Relaxed);
        }
        w.taken.store(w.now_ns(), Relaxed);
        let next = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(next, Poll::Ready(Some(Ok(_)))) && !this.inner.is_end_stream() {
            this.waiting = true;
            w.waiting.fetch_add(1, Relaxed);
        }
        next
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one h2 client connection until it ends, the watch closes it, or shutdown asks it
/// to finish (GOAWAY; in-flight streams run to their end).
pub(super) async fn serve<I>(
    io: I,
    ctx: Arc<ConnCtx>,
    cfg: &ListenerConfig,
    mut shutdown: watch::Receiver<bool>,
    send_timeouts: &Counter,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let watch = Arc::new(ConnWatch::new());
    let (body_timeout, client) = (cfg.body_timeout, ctx.client);
    let streams = watch.clone();
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let stream = streams.stream();
        let req = req.map(|b| RequestBody::H2(H2Body::new(b, body_timeout)));
        // Boxed, as the HTTP/1.1 server does: the pipeline's future is several KiB, and
        // hyper moves the stream's future into a spawned task and overwrites it with the
        // output when done; a pointer makes each of those copies 8 bytes (13% of the CPU
        // at h2load -c8 -m16 was memcpy before).
        let handled = Box::pin(pipeline::handle(req, ctx.clone()));
        async move {
            let resp = handled.await?;
            Ok::<_, std::convert::Infallible>(resp.map(|b| WatchedBody::new(b, stream)))
        }
    });
    let conn = builder(cfg).serve_connection(io, svc);
    tokio::pin!(conn);
    let timer = tokio::time::sleep(cfg.header_timeout);
    tokio::pin!(timer);
    let mut closing = false;
    if *shutdown.borrow() {
        conn.as_mut().graceful_shutdown();
        closing = true;
    }
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = shutdown.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = timer.as_mut() => {
                match watch.check(Instant::now(), cfg.header_timeout, cfg.send_timeout) {
                    Verdict::Fine(next) => timer.as_mut().reset(next),
                    Verdict::Idle if !closing => {
                        debug!(%client, "h2 connection idle past header_timeout: GOAWAY");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        timer.as_mut().reset(Instant::now() + cfg.header_timeout);
                    }
                    // Told to go and still here a header_timeout later: dropped.
                    Verdict::Idle => return,
                    Verdict::SendStalled => {
                        send_timeouts.inc();
                        warn!(
                            listener = %cfg.name,
                            %client,
                            send_timeout = ?cfg.send_timeout,
                            "h2 client took no response bytes within send_timeout: connection closed"
                        );
                        return;
                    }
                }
            }
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(15);
    const SEND: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_stream_is_idle_after_header_timeout() {
        let w = Arc::new(ConnWatch::new());
        let start = Instant::now();
        assert_eq!(w.check(start, HEADER, SEND), Verdict::Fine(start + HEADER));
        tokio::time::advance(HEADER).await;
        assert_eq!(w.check(Instant::now(), HEADER, SEND), Verdict::Idle);
        // A stream open: not idle, however long it runs.
        let stream = w.stream();
        tokio::time::advance(HEADER * 3).await;
        assert!(matches!(
            w.check(Instant::now(), HEADER, SEND),
            Verdict::Fine(_)
        ));
        // Its end starts the idle time afresh.
        drop(stream);
        let ended = Instant::now();
        tokio::time::advance(HEADER / 2).await;
        assert_eq!(
            w.check(Instant::now(), HEADER, SEND),
            Verdict::Fine(ended + HEADER)
        );
        tokio::time::advance(HEADER / 2).await;
        assert_eq!(w.check(Instant::now(), HEADER, SEND), Verdict::Idle);
    }

    /// A body that always has one more frame.
    struct Endless;

    impl Body for Endless {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(Some(Ok(Frame::data(bytes::Bytes::from_static(b"x")))))
        }
    }

    fn endless(w: &Arc<ConnWatch>) -> WatchedBody<Endless> {
        WatchedBody::new(Endless, w.stream())
    }

    fn poll(b: &mut WatchedBody<Endless>) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(b).poll_frame(&mut cx).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn responses_the_client_takes_nothing_of_for_send_timeout_stall_the_connection() {
        let w = Arc::new(ConnWatch::new());
        let mut a = endless(&w);
        let mut b = endless(&w);
        poll(&mut a);
        let handed = Instant::now();
        // The client takes more of `b` for a while: the connection moves.
        for _ in 0..3 {
            tokio::time::advance(SEND / 2).await;
            poll(&mut b);
            assert!(matches!(
                w.check(Instant::now(), HEADER, SEND),
                Verdict::Fine(_)
            ));
        }
        // Then nothing: both wait, and send_timeout after the last poll the verdict is in.
        let last = Instant::now();
        assert!(last > handed);
        tokio::time::advance(SEND - Duration::from_millis(1)).await;
        assert!(
            matches!(w.check(Instant::now(), HEADER, SEND), Verdict::Fine(t) if t <= last + SEND)
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(w.check(Instant::now(), HEADER, SEND), Verdict::SendStalled);
        // Bodies that are gone wait for nothing.
        drop((a, b));
        assert_eq!(w.waiting.load(Relaxed), 0);
        assert_eq!(w.open.load(Relaxed), 0);
    }
}
