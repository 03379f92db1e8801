//! `/watch/events`: the dashboard's live updates, as server-sent events. Every
//! [`EVERY`] a `status` event carries `/status`; a `charts` event carries `/watch/charts`
//! whenever the watch plane has published new ones (every 10 s). At most [`MAX_STREAMS`]
//! streams at once, so dashboards left open cannot take every admin connection: the next
//! one is answered 503 and the page falls back to polling.

use super::status_json;
use crate::Shared;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// How often the status is sent.
pub const EVERY: Duration = Duration::from_secs(2);
/// Streams open at once, over every client.
pub const MAX_STREAMS: usize = 16;

static OPEN: AtomicUsize = AtomicUsize::new(0);

/// The event stream's body: never ends on its own; the client closes it.
pub(super) struct Events {
    shared: Arc<Shared>,
    tick: tokio::time::Interval,
    /// The charts last sent, by address: sent again only when the watch plane replaced them.
    charts_sent: Option<Arc<serde_json::Value>>,
}

impl Drop for Events {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.tick.poll_tick(cx).is_pending() {
            return Poll::Pending;
        }
        let mut out = format!("event: status\ndata: {}\n\n", status_json(&self.shared));
        let charts = self.shared.watch_charts.load_full();
        let fresh = match (&charts, &self.charts_sent) {
            (Some(c), Some(sent)) => !Arc::ptr_eq(c, sent),
            (Some(_), None) => true,
            _ => false,
        };
        if fresh {
            if let Some(c) = &charts {
                out.push_str(&format!("event: charts\ndata: {c}\n\n"));
            }
            self.charts_sent = charts;
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
    }
}

/// The stream, or 503 when [`MAX_STREAMS`] are open.
pub(super) fn answer(shared: &Arc<Shared>) -> Result<Response<Events>, StatusCode> {
    if OPEN.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        OPEN.fetch_sub(1, Ordering::Relaxed);
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    let events = Events {
        shared: shared.clone(),
        tick: tokio::time::interval(EVERY),
        charts_sent: None,
    };
    let mut r = Response::new(events);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
