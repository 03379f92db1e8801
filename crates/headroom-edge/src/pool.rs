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

use crate::body::H2Upload;
use headroom_config::UpstreamProtocol;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::cell::Cell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
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
}

/// A replica's connection pools, one per worker plus one for other threads.
pub struct PoolSlots {
    slots: Box<[Mutex<Slot>]>,
}

impl std::fmt::Debug for PoolSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PoolSlots({})", self.idle_count())
    }
}

impl PoolSlots {
    pub fn new(workers: usize) -> Self {
        PoolSlots {
            slots: (0..=workers).map(|_| Mutex::default()).collect(),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        let i = WORKER.with(|w| w.get()).min(self.slots.len() - 1);
        self.slots[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A live pooled connection, most recently used first (its socket is warmest).
    pub fn take(&self, idle_timeout: Duration) -> Option<Sender> {
        let mut slot = self.slot();
        if let Some(h2) = &slot.h2 {
            if !h2.is_closed() {
                return Some(Sender::H2(h2.clone()));
            }
            slot.h2 = None;
        }
        while let Some((c, since)) = slot.raw.pop_back() {
            if since.elapsed() >= idle_timeout {
                // The most recent is too old: so are all the others.
                slot.raw.clear();
                break;
            }
            if c.is_reusable() {
                return Some(Sender::Raw(c));
            }
        }
        None
    }

    /// Returns a connection whose response has ended. Beyond `max_idle` idle connections
    /// the coldest one is closed.
    pub fn put(&self, sender: Sender, max_idle: usize) {
        let mut slot = self.slot();
        match sender {
            Sender::Raw(c) => {
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
            let mut slot = s.lock().unwrap_or_else(|p| p.into_inner());
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
            }
        }
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
