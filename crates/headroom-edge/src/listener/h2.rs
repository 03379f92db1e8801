//! h2 client connections, served on the `h2` crate directly, every stream inside the
//! connection's own task (hyper's h2 server is not used for clients; its client still
//! speaks h2 to upstreams).
//!
//! Why not hyper's server: it spawns a task per stream and pipes each response body
//! through its own adapter, and the streams of a connection then run on their own. Here
//! the streams are futures in one `FuturesUnordered` beside the connection: a stream
//! woken by its upstream is polled, queues its frames with the h2 crate, and the
//! connection is polled right after in the same turn, so responses that finish together
//! leave in one write, with no task spawned, scheduled or woken across threads (callgrind,
//! `bench/instructions.sh`: the numbers are in the commit that made this change).
//!
//! What hyper did and this does too: the settings below (its defaults: 1 MiB windows,
//! 16 KiB frames, 400 KiB send buffer per stream, 1,024 locally reset streams at most),
//! a `Date` on every response, hop-by-hop fields stripped, `content-length` set from a
//! body of known size, a stream reset by the client drops its request (and the upstream
//! request with it), keep-alive PINGs (every 30 s; no PONG within 20 s closes the
//! connection). The request body (`H2Body`) gives each DATA frame's bytes back to the
//! client's window as it is read.
//!
//! A watch per connection adds what an h2 server needs beyond the protocol: the counts of
//! open streams and of response bodies waiting on the client's flow control, with one
//! timer per connection, moved to the next deadline:
//! - no open stream for `header_timeout` (no first request, or idle between requests: the
//!   same rule as an idle HTTP/1.1 keep-alive connection): GOAWAY, and the connection ends
//!   once the client has seen it (at most `header_timeout` later);
//! - responses waiting on the client, and none of them taken further for `send_timeout`:
//!   the connection is dropped (counted, logged), as HTTP/1.1's is. A body that handed
//!   over a frame and is not polled again waits on the client's window.

use super::coalesce::{coalesce, Coalesced, Flush};
use crate::body::{ClientBody, H2Body, RequestBody};
use crate::pipeline::{self, ConnCtx};
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use headroom_config::ListenerConfig;
use headroom_telemetry::Counter;
use http::{header, HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

/// A PING this often on every connection ...
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// ... and no PONG within this closes it (hyper's defaults, kept).
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

fn builder(cfg: &ListenerConfig) -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 20)
        .max_frame_size(16 << 10)
        .max_send_buffer_size(400 << 10)
        .max_local_error_reset_streams(Some(1024))
        .max_header_list_size(cfg.max_header_bytes as u32)
        .max_concurrent_streams(256);
    b
}

/// What one connection's streams are doing, shared by its response bodies (each holds an
/// `Arc` to it; the connection is served on one thread, so the atomics are uncontended).
#[derive(Debug)]
pub(super) struct ConnWatch {
    base: Instant,
    /// The listener's: how long a response may wait on the client.
    send_timeout: Duration,
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
    pub(super) fn new(send_timeout: Duration) -> Self {
        ConnWatch {
            base: Instant::now(),
            send_timeout,
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

impl<B> WatchedBody<B> {
    /// True when no response body on the connection was taken further for
    /// `send_timeout`: the client reads nothing at all, which is the watch's to end (it
    /// drops the whole connection), not one stream's.
    fn connection_stalled(&self, now: Instant) -> bool {
        let w = &self.stream.0;
        now >= w.at(w.taken.load(Relaxed)) + w.send_timeout
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
    shutdown: watch::Receiver<bool>,
    send_timeouts: &Counter,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let client = ctx.client;
    let (io, flush) = coalesce(io);
    let handshake = builder(cfg).handshake::<_, Bytes>(io);
    let conn = match tokio::time::timeout(cfg.header_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            debug!(%client, error = %e, "h2 handshake failed");
            return;
        }
        Err(_) => return,
    };
    let watch = Arc::new(ConnWatch::new(cfg.send_timeout));
    let body_timeout = cfg.body_timeout;
    let streams = watch.clone();
    let accept = move |req: Request<RecvStream>, reply| {
        let stream = streams.stream();
        let (parts, recv) = req.into_parts();
        let body = if recv.is_end_stream() {
            RequestBody::Empty
        } else {
            let length = content_length(&parts.headers);
            RequestBody::H2(H2Body::new(recv, length, body_timeout))
        };
        // Boxed, as the HTTP/1.1 server does: the pipeline's future is several KiB, and a
        // pointer is what moves into the set and between the stream's states.
        let handled = Box::pin(pipeline::handle(
            Request::from_parts(parts, body),
            ctx.clone(),
        ));
        StreamTask::Handling {
            handled,
            reply,
            stream,
        }
    };
    drive(
        conn,
        flush,
        accept,
        &watch,
        client,
        cfg,
        shutdown,
        send_timeouts,
    )
    .await;
}

/// Serves an h2 connection past its handshake: its streams (each made by `accept`), the
/// watch's timeouts, shutdown and the keep-alive PINGs, until it ends.
#[allow(clippy::too_many_arguments)]
async fn drive<I, A, F>(
    mut conn: h2::server::Connection<Coalesced<I>, Bytes>,
    flush: Flush<I>,
    accept: A,
    watch: &ConnWatch,
    client: std::net::SocketAddr,
    cfg: &ListenerConfig,
    mut shutdown: watch::Receiver<bool>,
    send_timeouts: &Counter,
) where
    I: AsyncRead + AsyncWrite + Unpin,
    A: FnMut(Request<RecvStream>, SendResponse<Bytes>) -> StreamTask<F> + Unpin,
    F: Future<Output = Result<Response<ClientBody>, Infallible>>,
{
    let mut ping = conn.ping_pong();
    let mut served = Served {
        conn,
        flush,
        streams: FuturesUnordered::new(),
        accept,
        send_timeouts,
        listener: &cfg.name,
        client,
    };
    let timer = tokio::time::sleep(cfg.header_timeout);
    tokio::pin!(timer);
    let keep_alive = tokio::time::sleep(KEEP_ALIVE_INTERVAL);
    tokio::pin!(keep_alive);
    let mut awaiting_pong = false;
    // Shutdown began before this connection was served (`changed` would not say so).
    let mut closing = *shutdown.borrow();
    if closing {
        served.conn.graceful_shutdown();
    }
    let result = loop {
        tokio::select! {
            biased;
            r = &mut served => break r,
            _ = shutdown.changed(), if !closing => {
                served.conn.graceful_shutdown();
                closing = true;
            }
            () = timer.as_mut() => {
                match watch.check(Instant::now(), cfg.header_timeout, cfg.send_timeout) {
                    Verdict::Fine(next) => timer.as_mut().reset(next),
                    Verdict::Idle if !closing => {
                        debug!(%client, "h2 connection idle past header_timeout: GOAWAY");
                        served.conn.graceful_shutdown();
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
            pong = std::future::poll_fn(|cx| poll_pong(&mut ping, cx)), if awaiting_pong => {
                if pong.is_err() {
                    break Ok(());
                }
                awaiting_pong = false;
                keep_alive.as_mut().reset(Instant::now() + KEEP_ALIVE_INTERVAL);
            }
            () = keep_alive.as_mut() => {
                if awaiting_pong {
                    debug!(%client, "h2 client answered no PING within 20 s: connection closed");
                    return;
                }
                if let Some(p) = &mut ping {
                    awaiting_pong = p.send_ping(h2::Ping::opaque()).is_ok();
                }
                keep_alive.as_mut().reset(Instant::now() + KEEP_ALIVE_TIMEOUT);
            }
        }
    };
    if let Err(e) = result {
        debug!(%client, error = %e, "h2 connection ended with an error");
    }
}

/// The connection and its streams, polled together: every stream that is ready first
/// (what they queue is written by the connection's poll after them), then the connection,
/// which reads new streams, writes, and flushes once.
struct Served<'a, I, A, F> {
    conn: h2::server::Connection<Coalesced<I>, Bytes>,
    /// What the connection wrote during a turn leaves at its end, in one write.
    flush: Flush<I>,
    streams: FuturesUnordered<StreamTask<F>>,
    accept: A,
    /// For the streams reset because the client took nothing of them for `send_timeout`.
    send_timeouts: &'a Counter,
    listener: &'a str,
    client: std::net::SocketAddr,
}

impl<I, A, F> Future for Served<'_, I, A, F>
where
    I: AsyncRead + AsyncWrite + Unpin,
    A: FnMut(Request<RecvStream>, SendResponse<Bytes>) -> StreamTask<F> + Unpin,
    F: Future<Output = Result<Response<ClientBody>, Infallible>>,
{
    type Output = Result<(), crate::body::BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let turn = this.turn(cx).map_err(Into::into);
        // Pending: the socket is full, and its readiness wakes the task to go on.
        if let Poll::Ready(Err(e)) = this.flush.poll_flush(cx) {
            return Poll::Ready(Err(e.into()));
        }
        turn
    }
}

impl<I, A, F> Served<'_, I, A, F>
where
    I: AsyncRead + AsyncWrite + Unpin,
    A: FnMut(Request<RecvStream>, SendResponse<Bytes>) -> StreamTask<F> + Unpin,
    F: Future<Output = Result<Response<ClientBody>, Infallible>>,
{
    /// One turn: the connection reads and hands over new streams, the ready streams run,
    /// and the connection writes what they queued (into `flush`).
    fn turn(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
        let this = self;
        let mut first = true;
        loop {
            let mut accepted = false;
            // The connection reads everything the socket has, then hands over the new
            // streams one by one; `None` is the end of the connection (its streams done,
            // or it broke).
            loop {
                match this.conn.poll_accept(cx) {
                    Poll::Ready(Some(Ok((req, reply)))) => {
                        this.streams.push((this.accept)(req, reply));
                        accepted = true;
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Pending => break,
                }
            }
            if !accepted && !first {
                return Poll::Pending;
            }
            first = false;
            // The woken and the new streams; what they queue leaves with the next poll
            // of the connection, above.
            while let Poll::Ready(Some(ended)) = this.streams.poll_next_unpin(cx) {
                if ended == Ended::SendStalled {
                    this.send_timeouts.inc();
                    warn!(
                        listener = %this.listener,
                        client = %this.client,
                        "h2 client took no bytes of a response within send_timeout while \
                         taking others: stream reset"
                    );
                }
            }
        }
    }
}

fn poll_pong(ping: &mut Option<h2::PingPong>, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
    match ping {
        Some(p) => p.poll_pong(cx).map_ok(|_| ()),
        None => Poll::Pending,
    }
}

/// The request's declared `content-length`, when it is one number.
fn content_length(h: &HeaderMap) -> Option<u64> {
    let mut values = h.get_all(header::CONTENT_LENGTH).iter();
    let n = values.next()?.to_str().ok()?.trim().parse().ok()?;
    values.next().is_none().then_some(n)
}

/// One stream: its request through the pipeline, then its response out to the client.
/// It lives in the connection's `FuturesUnordered` from accept to end and is never moved,
/// so the body held inline costs no copy.
#[allow(clippy::large_enum_variant)]
enum StreamTask<F> {
    Handling {
        handled: Pin<Box<F>>,
        reply: SendResponse<Bytes>,
        stream: StreamGuard,
    },
    Sending {
        body: WatchedBody,
        tx: SendStream<Bytes>,
        /// A chunk taken from the body, waiting for room in the stream's send buffer.
        held: Option<(Bytes, bool)>,
        /// Made the first time the stream waits on the client (most never do).
        stall: Option<Stall>,
    },
    Done,
}

/// How a stream ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Done,
    /// Reset: the client took nothing of it for `send_timeout` while taking others.
    SendStalled,
}

/// A stream's wait on the client's flow control: `send_timeout` from its start.
struct Stall {
    timer: Pin<Box<tokio::time::Sleep>>,
    armed: bool,
}

impl<F> Future for StreamTask<F>
where
    F: Future<Output = Result<Response<ClientBody>, Infallible>>,
{
    type Output = Ended;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        let this = self.get_mut();
        loop {
            match this {
                StreamTask::Handling { handled, reply, .. } => {
                    let resp = match handled.as_mut().poll(cx) {
                        Poll::Ready(Ok(resp)) => resp,
                        Poll::Ready(Err(never)) => match never {},
                        Poll::Pending => {
                            // Reset by the client while its request is served: the request
                            // (and the upstream's) is dropped.
                            if let Poll::Ready(r) = reply.poll_reset(cx) {
                                debug!(reason = ?r.ok(), "h2 stream reset by the client");
                                *this = StreamTask::Done;
                                return Poll::Ready(Ended::Done);
                            }
                            return Poll::Pending;
                        }
                    };
                    let StreamTask::Handling {
                        mut reply, stream, ..
                    } = std::mem::replace(this, StreamTask::Done)
                    else {
                        unreachable!("matched above")
                    };
                    let (mut head, body) = resp.into_parts();
                    let headers = &mut head.headers;
                    // Fields of one HTTP/1.1 hop (an early answer's `Connection: close`, a
                    // replica's `Keep-Alive`): h2 refuses to send them.
                    crate::headers::strip_hop_by_hop(headers);
                    // `entry`: one lookup each, not a `contains_key` and an `insert`.
                    headers
                        .entry(header::DATE)
                        .or_insert_with(|| crate::h1::response::with_date(Clone::clone));
                    let end = body.is_end_stream();
                    if let Some(n) = body.size_hint().exact().filter(|_| !end) {
                        headers.entry(header::CONTENT_LENGTH).or_insert(n.into());
                    }
                    let body = WatchedBody::new(body, stream);
                    let head = Response::from_parts(head, ());
                    match reply.send_response(head, end) {
                        Ok(tx) if !end => {
                            *this = StreamTask::Sending {
                                body,
                                tx,
                                held: None,
                                stall: None,
                            };
                        }
                        Ok(_) => return Poll::Ready(Ended::Done),
                        Err(e) => {
                            debug!(error = %e, "h2 response head not sent");
                            reply.send_reset(Reason::INTERNAL_ERROR);
                            return Poll::Ready(Ended::Done);
                        }
                    }
                }
                StreamTask::Sending {
                    body,
                    tx,
                    held,
                    stall,
                } => {
                    let r = ready!(send_body(body, tx, held, stall, cx));
                    *this = StreamTask::Done;
                    return Poll::Ready(match r {
                        Ok(()) => Ended::Done,
                        Err(Unsent::Stalled) => Ended::SendStalled,
                        Err(Unsent::Broken(e)) => {
                            debug!(error = %e, "h2 response body not sent whole");
                            Ended::Done
                        }
                    });
                }
                StreamTask::Done => return Poll::Ready(Ended::Done),
            }
        }
    }
}

/// Why a response body was not sent whole.
enum Unsent {
    /// Its stream waited on the client for `send_timeout` while the connection moved:
    /// reset (`CANCEL`).
    Stalled,
    /// The client reset the stream, the connection broke, or the body broke off.
    Broken(crate::body::BoxError),
}

impl<E: Into<crate::body::BoxError>> From<E> for Unsent {
    fn from(e: E) -> Self {
        Unsent::Broken(e.into())
    }
}

/// Sends `body` on `tx` as the client's flow control allows: a chunk is handed over once
/// the stream has room for at least a byte of it (the h2 crate buffers the rest, up to
/// `max_send_buffer_size`), and the body is polled again only then, so a client that
/// takes nothing leaves the body waiting (and the watch sees it). Room is asked for only
/// with a chunk in hand: a claim on the connection's window by a body with nothing to send
/// could hold up the other streams (hyper #4003).
///
/// A stream that waits for room for `send_timeout` is reset unless the whole connection
/// has stalled (that is the watch's, which drops the connection): a client that keeps one
/// stream's window shut while it reads others would otherwise hold the stream, and its
/// upstream connection, for ever.
fn send_body(
    body: &mut WatchedBody,
    tx: &mut SendStream<Bytes>,
    held: &mut Option<(Bytes, bool)>,
    stall: &mut Option<Stall>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Unsent>> {
    loop {
        if let Poll::Ready(r) = tx.poll_reset(cx) {
            return Poll::Ready(Err(format!("reset by the client: {r:?}").into()));
        }
        if held.is_some() {
            while tx.capacity() == 0 {
                match tx.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(0))) => {}
                    Poll::Ready(Some(Ok(_))) => break,
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.into())),
                    Poll::Ready(None) => return Poll::Ready(Err("the stream closed".into())),
                    Poll::Pending => {
                        ready!(poll_stall(body, stall, cx));
                        tx.send_reset(Reason::CANCEL);
                        return Poll::Ready(Err(Unsent::Stalled));
                    }
                }
            }
            if let Some(s) = stall {
                s.armed = false;
            }
            let (data, end) = held.take().expect("checked above");
            tx.send_data(data, end)?;
            if end {
                return Poll::Ready(Ok(()));
            }
            continue;
        }
        match ready!(Pin::new(&mut *body).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let end = body.is_end_stream();
                    // Empty, or the body's last: handed over as it is, without asking for
                    // room (the h2 crate sends it as the window allows). Nothing of the
                    // body is left to hold back, and the send buffer holds at most this
                    // one chunk past its bound; a whole small response (the usual) skips
                    // two trips through the h2 crate's stream lock (~600 instructions).
                    if data.is_empty() || end {
                        tx.send_data(data, end)?;
                        if end {
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                    tx.reserve_capacity(1);
                    *held = Some((data, end));
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        tx.reserve_capacity(0);
                        tx.send_trailers(trailers)?;
                        return Poll::Ready(Ok(()));
                    }
                }
            },
            Some(Err(e)) => {
                // Broken off (the upstream failed or stalled mid-body): the client sees
                // the stream reset, never a short body that looks whole.
                tx.send_reset(Reason::INTERNAL_ERROR);
                return Poll::Ready(Err(Unsent::Broken(e)));
            }
            None => {
                tx.send_data(Bytes::new(), true)?;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Ready when a stream's wait for room has lasted `send_timeout` and the connection as a
/// whole still moves; armed at the start of each wait, so only a wait counts, never the
/// stream's age.
fn poll_stall(body: &WatchedBody, stall: &mut Option<Stall>, cx: &mut Context<'_>) -> Poll<()> {
    let limit = body.stream.0.send_timeout;
    let s = stall.get_or_insert_with(|| Stall {
        timer: Box::pin(tokio::time::sleep(limit)),
        armed: true,
    });
    if !s.armed {
        s.timer.as_mut().reset(Instant::now() + limit);
        s.armed = true;
    }
    loop {
        ready!(s.timer.as_mut().poll(cx));
        if !body.connection_stalled(Instant::now()) {
            return Poll::Ready(());
        }
        // The client takes nothing at all: the watch drops the connection. Should the
        // connection move again before that, this wait counts afresh.
        s.timer.as_mut().reset(Instant::now() + limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(15);
    const SEND: Duration = Duration::from_secs(60);

    fn listener() -> ListenerConfig {
        ListenerConfig {
            name: "public".into(),
            bind: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            max_connections: 16,
            // Long: the keep-alive is what these tests see end a connection.
            header_timeout: Duration::from_secs(3600),
            body_timeout: SEND,
            send_timeout: SEND,
            max_header_bytes: 16 << 10,
            max_body_bytes: 1 << 20,
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }

    /// Serves the server end of an in-memory pipe until the connection ends; no stream is
    /// ever answered (the keep-alive does not depend on them).
    fn serve_pipe(io: tokio::io::DuplexStream) -> tokio::task::JoinHandle<()> {
        serve_with(io, std::future::pending, false)
    }

    /// Serves `io` until the connection ends, every stream answered by `answer()`;
    /// `stopping`: shutdown has begun before the connection is served.
    fn serve_with<I, F>(io: I, answer: fn() -> F, stopping: bool) -> tokio::task::JoinHandle<()>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: Future<Output = Result<Response<ClientBody>, Infallible>> + Send + 'static,
    {
        tokio::spawn(async move {
            let cfg = listener();
            let (io, flush) = coalesce(io);
            let conn = builder(&cfg).handshake::<_, Bytes>(io).await.unwrap();
            let watch = Arc::new(ConnWatch::new(cfg.send_timeout));
            let streams = watch.clone();
            let accept = move |_req, reply| StreamTask::Handling {
                handled: Box::pin(answer()),
                reply,
                stream: streams.stream(),
            };
            let (_tx, shutdown) = watch::channel(stopping);
            let client = "127.0.0.1:1".parse().unwrap();
            let timeouts = Counter::default();
            drive(
                conn, flush, accept, &watch, client, &cfg, shutdown, &timeouts,
            )
            .await;
        })
    }

    /// A client that sends the preface and its SETTINGS, then reads everything and answers
    /// nothing (not even a PING): the frame types it saw, until the server closed.
    async fn deaf_client(mut io: tokio::io::DuplexStream) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        io.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let mut seen = Vec::new();
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return seen,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            while buf.len() >= 9 {
                let len =
                    (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                seen.push(buf[3]);
                buf.drain(..9 + len);
            }
        }
    }

    const PING: u8 = 6;

    #[tokio::test(start_paused = true)]
    async fn a_connection_served_after_shutdown_began_is_told_to_go_at_once() {
        let (server, client) = tokio::io::duplex(64 << 10);
        let start = Instant::now();
        let served = serve_with(server, std::future::pending, true);
        let (_send, conn) = h2::client::handshake(client).await.unwrap();
        let _ = conn.await;
        served.await.unwrap();
        // Not left for the idle rule (header_timeout, an hour here) to end.
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }

    /// An in-memory pipe that counts the writes made to it.
    struct Counted(tokio::io::DuplexStream, Arc<AtomicUsize>);

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.1.fetch_add(1, Relaxed);
            Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    /// 16 requests that arrive together, each answered at once with 1 KiB (past the 256
    /// bytes from which the h2 crate writes a DATA frame by itself and flushes): their
    /// responses leave in a write or two, not one or more each.
    #[tokio::test]
    async fn responses_of_one_turn_leave_the_connection_in_one_write() {
        fn kib() -> std::future::Ready<Result<Response<ClientBody>, Infallible>> {
            std::future::ready(Ok(Response::new(ClientBody::full(vec![b'x'; 1024]))))
        }
        let (server, client) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let _served = serve_with(Counted(server, writes.clone()), kib, false);
        let (send, conn) = h2::client::handshake(client).await.unwrap();
        tokio::spawn(conn);
        let mut send = send.ready().await.unwrap();
        // The handshake's frames (SETTINGS, their ACKs, the window) are written by now or
        // with the first turn.
        let before = writes.load(Relaxed);
        let mut pending = Vec::new();
        for _ in 0..16 {
            let req = Request::get("http://test.local/").body(()).unwrap();
            pending.push(send.send_request(req, true).unwrap().0);
        }
        for p in pending {
            let mut body = p.await.unwrap().into_body();
            let mut got = 0;
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                got += chunk.len();
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            assert_eq!(got, 1024);
        }
        let n = writes.load(Relaxed) - before;
        assert!(n <= 3, "{n} writes for 16 responses");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_answers_no_ping_is_dropped_after_the_keep_alive_timeout() {
        let (server, client) = tokio::io::duplex(64 << 10);
        let start = Instant::now();
        let served = serve_pipe(server);
        let seen = deaf_client(client).await;
        assert_eq!(seen.iter().filter(|&&t| t == PING).count(), 1, "{seen:?}");
        tokio::time::timeout(Duration::from_secs(1), served)
            .await
            .expect("the server's side ended")
            .unwrap();
        assert_eq!(start.elapsed(), KEEP_ALIVE_INTERVAL + KEEP_ALIVE_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_answers_pings_keeps_its_idle_connection() {
        let (server, client) = tokio::io::duplex(64 << 10);
        let served = serve_pipe(server);
        // The h2 crate's client answers PINGs as any h2 client must.
        let (_send, conn) = h2::client::handshake(client).await.unwrap();
        let conn = tokio::spawn(conn);
        let stayed = tokio::time::timeout(KEEP_ALIVE_INTERVAL * 10, served).await;
        assert!(stayed.is_err(), "the connection was closed");
        conn.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_stream_is_idle_after_header_timeout() {
        let w = Arc::new(ConnWatch::new(SEND));
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
        let w = Arc::new(ConnWatch::new(SEND));
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
