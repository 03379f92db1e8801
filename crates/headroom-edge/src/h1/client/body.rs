//! A response body read straight from the upstream connection, held to the service's
//! `read_timeout`: an upstream that pauses longer mid-body has the response cut off (the
//! client sees it incomplete) and its connection dropped, never pooled.

use super::Conn;
use crate::body::{BoxError, UpstreamStalled};
use crate::h1::Framing;
use crate::replica::Replica;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// A response body read straight from the upstream connection.
#[derive(Debug)]
pub struct ResponseBody {
    pub(super) conn: Option<Conn>,
    pub(super) framing: Framing,
    pub(super) keep_alive: bool,
    pub(super) pool: Option<(Arc<Replica>, usize)>,
}

impl ResponseBody {
    /// The body has ended: the connection goes back to the pool if it can carry another
    /// request.
    pub(super) fn release(&mut self) {
        self.framing = Framing::Done;
        if let (Some(conn), Some((replica, max_idle))) = (self.conn.take(), self.pool.take()) {
            if self.keep_alive && conn.rb.is_empty() {
                replica.pools.put(crate::pool::Sender::Raw(conn), max_idle);
            }
        }
    }

    /// The upstream paused past `read_timeout`: counted, logged, and the connection dropped.
    fn stalled(&mut self) -> UpstreamStalled {
        let conn = self.conn.take();
        let replica = self.pool.as_ref().map_or("", |(r, _)| &r.label);
        match conn.as_ref().and_then(|c| c.read_timeout.as_ref()) {
            Some(rt) => rt.stalled(replica),
            None => UpstreamStalled(std::time::Duration::ZERO),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let next = match this.framing.poll_data(&mut conn.rb, &mut conn.io, cx) {
            Poll::Ready(next) => {
                conn.pause.progressed();
                next
            }
            Poll::Pending => {
                // `Conn::send` always sets the service's read_timeout; without one the
                // body just waits.
                let Some(limit) = conn.read_timeout.as_ref().map(|r| r.limit) else {
                    return Poll::Pending;
                };
                ready!(conn.pause.poll_expired(limit, cx));
                return Poll::Ready(Some(Err(Box::new(this.stalled()))));
            }
        };
        match next {
            Some(Ok(data)) => {
                if this.framing.is_done() {
                    this.release();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Some(Err(e)) => {
                this.conn = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            None => {
                this.release();
                Poll::Ready(None)
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
