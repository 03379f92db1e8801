//! Keep-alive connections to upstream replicas, one slot per worker thread.
//!
//! Each worker runs its own single-threaded runtime, and a connection belongs to the
//! runtime that opened it; so each replica keeps a slot per worker and a worker only
//! touches its own. The slot's mutex is therefore never contended but by the once-a-second
//! sweep (it exists so the types stay `Sync`); taking it costs one uncontended atomic swap.
//!
//! The policy (issue 14): a pool keeps what recent demand needs, not a fixed count. Every
//! connection that comes back idle is kept, up to the `max_idle` ceiling, and requests take
//! the most recently used one, so under a steady load the same hot connections serve and
//! the cold end of the pool goes unused. The sweep closes connections idle for
//! `idle_timeout` (and those the replica closed) from that cold end: what stays is the peak
//! concurrency of the last `idle_timeout`. A burst that returns many connections at once
//! therefore closes none of them — the old fixed `max_idle = 64` closed the excess, and the
//! next burst reconnected (a connect per six requests at 256 client connections). Past
//! the ceiling, the coldest connection is closed, not the one coming back.
//!
//! `max_conns` bounds the HTTP/1.1 connections carrying a request at once (per replica and
//! worker), as Envoy's circuit breaker and HAProxy's `maxconn` per server do: past it a
//! request waits, oldest first, for a connection to come back, and is handed it directly
//! (a request that finished and one that waited cost one connection, not two). Without
//! the bound, 6,400 concurrent h2 streams (`h2load -c64 -m100`) needed 6,400 upstream
//! connections, more than the pool's ceiling, and the excess was closed and reopened: 500
//! connects per 1,000 requests. A connection that is dropped instead of pooled (an error,
//! `Connection: close`) gives its place to the oldest waiter, which opens a new one.

use crate::body::H2Upload;
use headroom_config::UpstreamProtocol;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::cell::Cell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Marks the current thread as worker `i` (0-based).
pub fn set_worker(i: usize) {
    WORKER.with(|w| w.set(i));
}

/// A connection idle this long gives its read buffer back (the sweep frees it): a pool
/// left large by a burst then costs little more than its sockets.
const COLD: Duration = Duration::from_secs(2);

/// A connection ready to carry a request.
pub enum Sender {
    /// headroom's own HTTP/1.1 client connection (`protocol = "http1"`).
    Raw(crate::h1::client::Conn),
    H2(http2::SendRequest<H2Upload>),
}

#[derive(Default)]
struct Slot {
    /// Idle connections with the time each came back: the back is the most recently used.
    raw: VecDeque<(crate::h1::client::Conn, Instant)>,
    h2: Option<http2::SendRequest<H2Upload>>,
    /// HTTP/1.1 connections out carrying a request (each holds a [`Lease`]), or being
    /// opened for one.
    busy: usize,
    /// Requests waiting for a connection under `max_conns`, oldest first.
    waiters: VecDeque<oneshot::Sender<Handoff>>,
}

type SlotRef = Arc<Mutex<Slot>>;

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// One place under `max_conns`: held by a connection while it carries a request (or by
/// the request opening it). Dropped with the connection, it passes to the oldest waiter,
/// which opens a new one; a connection going back to the pool gives it up (`put`).
pub struct Lease(Option<SlotRef>);

impl Lease {
    /// Takes the place out of the lease without giving it back (its count moves on with
    /// the caller, who holds the slot's lock).
    fn disarm(mut self) -> Option<SlotRef> {
        self.0.take()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(slot_ref) = self.0.take() else {
            return;
        };
        let mut slot = lock(&slot_ref);
        while let Some(w) = slot.waiters.pop_front() {
            // The place goes on to the waiter (`busy` unchanged); a waiter that gave up
            // hands it back, disarmed, and the next one is asked.
            match w.send(Handoff::Open(Lease(Some(slot_ref.clone())))) {
                Ok(()) => return,
                Err(Handoff::Open(l)) => drop(l.disarm()),
                Err(Handoff::Conn(_)) => unreachable!("sent an Open"),
            }
        }
        slot.busy = slot.busy.saturating_sub(1);
    }
}

/// What a waiting request is handed.
pub enum Handoff {
    /// A connection that finished its exchange, with its lease.
    Conn(crate::h1::client::Conn),
    /// A place freed by a connection that was dropped: open a new one under it.
    Open(Lease),
}

/// How a request gets its connection.
pub enum Checkout {
    /// A pooled connection (an HTTP/1.1 one carries its lease).
    Ready(Sender),
    /// None idle: open one, under this lease (none for h2, or without `max_conns`).
    Open(Option<Lease>),
    /// `max_conns` connections are busy: wait for one (bounded by the caller).
    Wait(oneshot::Receiver<Handoff>),
}

/// A replica's connection pools, one per worker plus one for other threads.
pub struct PoolSlots {
    slots: Box<[SlotRef]>,
}

impl std::fmt::Debug for PoolSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PoolSlots({})", self.idle_count())
    }
}

impl PoolSlots {
    pub fn new(workers: usize) -> Self {
        PoolSlots {
            slots: (0..=workers).map(|_| SlotRef::default()).collect(),
        }
    }

    fn slot_ref(&self) -> &SlotRef {
        let i = WORKER.with(|w| w.get()).min(self.slots.len() - 1);
        &self.slots[i]
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        lock(self.slot_ref())
    }

    /// A live pooled connection, most recently used first (its socket is warmest); else
    /// leave to open one, or, with `max_conns` (HTTP/1.1 only, 0: no bound) connections
    /// busy, a place in the queue.
    pub fn checkout(&self, idle_timeout: Duration, max_conns: usize) -> Checkout {
        let slot_ref = self.slot_ref();
        let mut slot = lock(slot_ref);
        if let Some(h2) = &slot.h2 {
            if !h2.is_closed() {
                return Checkout::Ready(Sender::H2(h2.clone()));
            }
            slot.h2 = None;
        }
        let lease = |slot: &mut Slot| {
            (max_conns > 0).then(|| {
                slot.busy += 1;
                Lease(Some(slot_ref.clone()))
            })
        };
        while let Some((mut c, since)) = slot.raw.pop_back() {
            if since.elapsed() >= idle_timeout {
                // The most recent is too old: so are all the others.
                slot.raw.clear();
                break;
            }
            if c.is_reusable() {
                c.lease = lease(&mut slot);
                return Checkout::Ready(Sender::Raw(c));
            }
        }
        if max_conns > 0 && slot.busy >= max_conns {
            let (tx, rx) = oneshot::channel();
            slot.waiters.push_back(tx);
            return Checkout::Wait(rx);
        }
        Checkout::Open(lease(&mut slot))
    }

    /// A live pooled connection, if one is idle (tests).
    #[cfg(test)]
    pub fn take(&self, idle_timeout: Duration) -> Option<Sender> {
        match self.checkout(idle_timeout, 0) {
            Checkout::Ready(s) => Some(s),
            _ => None,
        }
    }

    /// Returns a connection whose response has ended: to the oldest waiting request, else
    /// to the idle pool. Beyond `max_idle` idle connections the coldest one is closed.
    pub fn put(&self, sender: Sender, max_idle: usize) {
        let mut slot = self.slot();
        match sender {
            Sender::Raw(mut c) => {
                if c.lease.is_some() {
                    while let Some(w) = slot.waiters.pop_front() {
                        match w.send(Handoff::Conn(c)) {
                            Ok(()) => return,
                            Err(Handoff::Conn(back)) => c = back,
                            Err(Handoff::Open(_)) => unreachable!("sent a Conn"),
                        }
                    }
                    // Nobody waits: the place is given up here, under the lock.
                    if let Some(lease) = c.lease.take() {
                        drop(lease.disarm());
                        slot.busy = slot.busy.saturating_sub(1);
                    }
                }
                if max_idle == 0 {
                    return;
                }
                if slot.raw.len() >= max_idle {
                    slot.raw.pop_front();
                }
                slot.raw.push_back((c, Instant::now()));
            }
            Sender::H2(s) => {
                if !s.is_closed() {
                    slot.h2 = Some(s);
                }
            }
        }
    }

    /// Closes, from the cold end of every worker's pool, the connections idle for
    /// `idle_timeout` or closed by the replica, and frees the read buffers of those idle
    /// for a while. Run once a second (`health::spawn_checks`).
    pub fn sweep(&self, idle_timeout: Duration) {
        let now = Instant::now();
        for s in self.slots.iter() {
            let mut slot = lock(s);
            // Requests that stopped waiting (their client went, or the wait timed out).
            slot.waiters.retain(|w| !w.is_closed());
            while slot
                .raw
                .front()
                .is_some_and(|(_, since)| now.duration_since(*since) >= idle_timeout)
            {
                slot.raw.pop_front();
            }
            slot.raw.retain_mut(|(c, since)| {
                if now.duration_since(*since) >= COLD {
                    c.free_buffer();
                }
                c.is_reusable()
            });
        }
    }

    /// Stops handing this worker's h2 connection to new requests (a stream on it stalled);
    /// the next request opens another. Streams still running on it finish.
    pub fn forget_h2(&self) {
        self.slot().h2 = None;
    }

    /// Idle HTTP/1.1 connections over all workers.
    pub fn idle_count(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.raw.len()))
            .sum()
    }

    /// Drops every pooled connection (the replica left the config).
    pub fn clear(&self) {
        for s in self.slots.iter() {
            if let Ok(mut s) = s.lock() {
                s.raw.clear();
                s.h2 = None;
                s.waiters.clear();
            }
        }
    }

    /// Requests waiting for a connection, over all workers.
    pub fn waiting(&self) -> usize {
        self.slots
            .iter()
            .map(|s| {
                s.lock()
                    .map_or(0, |s| s.waiters.iter().filter(|w| !w.is_closed()).count())
            })
            .sum()
    }
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Io(std::io::Error),
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Handshake(e) => write!(f, "handshake failed: {e}"),
        }
    }
}

/// Opens a new connection to `addr` (for h2, also spawns its driver on the current runtime).
/// `timeout` covers the TCP connect and, for h2, the handshake.
pub async fn connect(
    addr: SocketAddr,
    protocol: UpstreamProtocol,
    timeout: Duration,
) -> Result<Sender, ConnectError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let tcp = match tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Err(_) => return Err(ConnectError::Timeout),
    };
    let _ = tcp.set_nodelay(true);
    match protocol {
        UpstreamProtocol::Http1 => Ok(Sender::Raw(crate::h1::client::Conn::new(tcp))),
        UpstreamProtocol::H2 => h2_handshake(TokioIo::new(tcp), deadline)
            .await
            .map(Sender::H2),
    }
}

/// The h2 client handshake (the preface and our SETTINGS written), by `deadline`.
async fn h2_handshake<I>(
    io: I,
    deadline: tokio::time::Instant,
) -> Result<http2::SendRequest<H2Upload>, ConnectError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let handshake = http2::Builder::new(TokioExecutor::new()).handshake(io);
    let (sender, conn) = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(r) => r.map_err(ConnectError::Handshake)?,
        Err(_) => return Err(ConnectError::Timeout),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that accepts the connection but reads nothing: the handshake cannot finish,
    /// and the connect timeout ends it.
    #[tokio::test(start_paused = true)]
    async fn the_connect_timeout_covers_the_h2_handshake() {
        // One byte of buffer and nobody reading: the 24-byte preface cannot be written.
        let (ours, _theirs) = tokio::io::duplex(1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let outcome = tokio::time::timeout(
            Duration::from_secs(60),
            h2_handshake(TokioIo::new(ours), deadline),
        )
        .await
        .expect("the handshake is bounded by the connect timeout");
        assert!(matches!(outcome, Err(ConnectError::Timeout)), "{outcome:?}");
        assert_eq!(tokio::time::Instant::now(), deadline);
    }
}
