//! An h2 connection's writes, gathered for the whole of the connection's turn and written
//! to the socket once at its end.
//!
//! Why: the h2 crate writes a DATA frame of 256 bytes or more by reference (a vectored
//! write of its buffer and the payload) and flushes before it buffers the next frame, so
//! every response with a body past 256 bytes left in a write (a TCP segment, a TLS record)
//! of its own: 2.0 client segments per request at `h2load -c8 -m16` against 351-byte
//! answers, where HAProxy sent 0.16. Here the writes the connection makes while its ready
//! streams are served are copied into one buffer, and [`Flush::poll_flush`] at the end of
//! the turn writes them out together. A write of 16 KiB or more finding the buffer empty
//! goes straight to the socket (no copy of large bodies), and past 64 KiB gathered the
//! socket is written first (the buffer is bounded; a client that reads nothing holds the
//! connection back as before).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Gathered past this, the socket is written before more is taken.
const HIGH_WATER: usize = 64 << 10;
/// A write this large finding nothing gathered goes straight to the socket.
const DIRECT: usize = 16 << 10;

struct State<I> {
    io: I,
    out: Vec<u8>,
}

impl<I: AsyncWrite + Unpin> State<I> {
    /// Writes out everything gathered, then flushes the socket (TLS: its records).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.drain(..n);
        }
        // A burst's buffer is not kept by an idle connection.
        if self.out.capacity() > DIRECT {
            self.out = Vec::new();
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

/// The connection's side: what the h2 crate reads from and writes to. The lock is taken
/// on one thread only (the connection's task), never contended.
pub(super) struct Coalesced<I>(Arc<Mutex<State<I>>>);

/// The owner's side: writes out what the connection gathered.
pub(super) struct Flush<I>(Arc<Mutex<State<I>>>);

pub(super) fn coalesce<I>(io: I) -> (Coalesced<I>, Flush<I>) {
    let state = Arc::new(Mutex::new(State {
        io,
        out: Vec::new(),
    }));
    (Coalesced(state.clone()), Flush(state))
}

fn lock<I>(s: &Mutex<State<I>>) -> MutexGuard<'_, State<I>> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<I: AsyncWrite + Unpin> Flush<I> {
    /// Writes out what the connection gathered during its turn.
    pub(super) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.0).poll_drain(cx)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Coalesced<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut lock(&self.0).io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Coalesced<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut s = lock(&self.0);
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if s.out.is_empty() && len >= DIRECT {
            return Pin::new(&mut s.io).poll_write_vectored(cx, bufs);
        }
        if s.out.len() >= HIGH_WATER {
            ready!(s.poll_drain(cx))?;
        }
        s.out.reserve(len);
        for b in bufs {
            s.out.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Deferred: the h2 crate flushes after every frame it writes by reference, and the
    /// point is to write them together. The owner flushes at the end of the turn.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = lock(&self.0);
        ready!(s.poll_drain(cx))?;
        Pin::new(&mut s.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the writes that reach it.
    struct Counting {
        writes: usize,
        bytes: Vec<u8>,
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes += 1;
            self.bytes.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn writes(f: &Flush<Counting>) -> (usize, Vec<u8>) {
        let s = lock(&f.0);
        (s.io.writes, s.io.bytes.clone())
    }

    #[tokio::test]
    async fn writes_and_flushes_of_a_turn_reach_the_socket_as_one_write() {
        let (mut c, f) = coalesce(Counting {
            writes: 0,
            bytes: Vec::new(),
        });
        for i in 0..16u8 {
            // A frame head and a payload by reference, then the crate's flush.
            let payload = [i; 300];
            let bufs = [IoSlice::new(&[0, 1, 44]), IoSlice::new(&payload)];
            assert_eq!(c.write_vectored(&bufs).await.unwrap(), 303);
            c.flush().await.unwrap();
        }
        assert_eq!(writes(&f).0, 0, "nothing written before the turn ends");
        std::future::poll_fn(|cx| f.poll_flush(cx)).await.unwrap();
        let (n, bytes) = writes(&f);
        assert_eq!(n, 1);
        assert_eq!(bytes.len(), 16 * 303);
        assert!(bytes[3..303].iter().all(|&b| b == 0) && bytes[306..606].iter().all(|&b| b == 1));
    }

    #[tokio::test]
    async fn a_large_write_goes_straight_through_and_the_buffer_is_bounded() {
        let (mut c, f) = coalesce(Counting {
            writes: 0,
            bytes: Vec::new(),
        });
        c.write_all(&vec![7; DIRECT]).await.unwrap();
        assert_eq!(writes(&f).0, 1, "not copied");
        // Small writes past the high-water mark write out what was gathered first.
        for _ in 0..(HIGH_WATER / 1000 + 2) {
            c.write_all(&[1; 1000]).await.unwrap();
        }
        assert!(lock(&f.0).out.len() <= HIGH_WATER + 1000);
        assert_eq!(writes(&f).0, 2);
        // Written out, the burst's buffer is let go.
        std::future::poll_fn(|cx| f.poll_flush(cx)).await.unwrap();
        assert!(lock(&f.0).out.capacity() <= DIRECT);
    }

    #[tokio::test]
    async fn reads_pass_through_and_shutdown_writes_out_first() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let (mut c, _f) = coalesce(a);
        b.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        c.write_all(b"pong").await.unwrap();
        c.shutdown().await.unwrap();
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"pong");
    }
}
