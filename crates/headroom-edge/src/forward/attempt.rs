//! One attempt at a replica, in two phases: `connect` (reuse a pooled connection of this
//! worker, or open one) and `send` (write the request, read the response head).

use crate::body::{is_body_too_large, is_client_body_error, ClientBody, UpstreamBody};
use crate::error::{ErrorKind, ProxyError};
use crate::pool::{self, Checkout, ConnectError, Handoff, Lease, Sender};
use crate::replica::Replica;
use crate::snapshot::Service;
use headroom_config::UpstreamProtocol;
use http::{Request, Response, Uri, Version};
use hyper::client::conn::http2;
use std::sync::Arc;

/// Counts a request in flight on a replica until dropped, however the request ends
/// (completed, failed, or abandoned by a client that went away).
pub(crate) struct InFlight(Arc<Replica>);

impl InFlight {
    pub(crate) fn new(replica: &Arc<Replica>) -> Self {
        replica.inflight.inc();
        InFlight(replica.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.dec();
    }
}

/// The upstream side of a request whose response is streaming to the client.
pub(crate) struct UpstreamDone {
    pub(super) inflight: InFlight,
    /// An h2 connection goes back to the pool here; an HTTP/1.1 one is given back by its
    /// response body when it ends.
    pub(super) h2: Option<http2::SendRequest<crate::body::H2Upload>>,
    pub(super) max_idle: usize,
}

impl UpstreamDone {
    /// The response ended: a completed exchange leaves a reusable connection for the pool.
    pub(crate) fn finish(self, complete: bool) {
        if let (true, Some(h2)) = (complete, self.h2) {
            self.inflight.0.pools.put(Sender::H2(h2), self.max_idle);
        }
    }
}

/// connect: a live pooled connection of this worker, or a new one; with `max_conns` of
/// them busy, the first to come back (waiting up to `connect_timeout`).
pub(super) async fn connect(replica: &Replica, service: &Service) -> Result<Sender, ProxyError> {
    let cfg = &service.cfg;
    let max_conns = match cfg.protocol {
        UpstreamProtocol::Http1 => cfg.max_conns,
        UpstreamProtocol::H2 => 0,
    };
    let lease = match replica.pools.checkout(cfg.idle_timeout, max_conns) {
        Checkout::Ready(s) => return Ok(s),
        Checkout::Open(lease) => lease,
        // Boxed, as opening is: rare, and its state would otherwise ride in every request's.
        Checkout::Wait(rx) => match Box::pin(wait(rx, service)).await? {
            Handoff::Conn(c) if c.is_reusable() => return Ok(Sender::Raw(c)),
            Handoff::Conn(mut c) => c.lease.take(),
            Handoff::Open(lease) => Some(lease),
        },
    };
    // Boxed: connecting is rare (pools) and its future is large; inline it would be copied
    // with every request's state.
    Box::pin(open(replica, service, lease)).await
}

/// Waits for a connection to come back (or a place to open one), up to `connect_timeout`.
async fn wait(
    rx: tokio::sync::oneshot::Receiver<Handoff>,
    service: &Service,
) -> Result<Handoff, ProxyError> {
    let cfg = &service.cfg;
    service.pool_waits.inc();
    match tokio::time::timeout(cfg.connect_timeout, rx).await {
        Ok(Ok(handoff)) => Ok(handoff),
        Ok(Err(_)) => Err(ProxyError::new(
            ErrorKind::PoolFull,
            "the replica left while the request waited for a connection",
        )),
        Err(_) => Err(ProxyError::new(
            ErrorKind::PoolFull,
            format!(
                "all {} connections (max_conns) stayed busy for {:?} (connect_timeout)",
                cfg.max_conns, cfg.connect_timeout
            ),
        )),
    }
}

/// Opens a connection, under `lease` when `max_conns` bounds the pool.
async fn open(
    replica: &Replica,
    service: &Service,
    lease: Option<Lease>,
) -> Result<Sender, ProxyError> {
    let cfg = &service.cfg;
    pool::connect(replica.addr, cfg.protocol, cfg.connect_timeout)
        .await
        .map(|mut s| {
            service.connections_opened.inc();
            replica.connects.inc();
            if let Sender::Raw(c) = &mut s {
                c.lease = lease;
            }
            s
        })
        .map_err(|e| {
            let kind = match &e {
                ConnectError::Timeout => ErrorKind::ConnectTimeout,
                ConnectError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                    ErrorKind::ConnectRefused
                }
                _ => ErrorKind::ConnectFailed,
            };
            ProxyError::new(kind, e.to_string())
        })
}

/// send: the request over `sender`; the response head, or why there is none. `last`: no
/// retry can follow, so the request's headers may be given away instead of copied.
pub(super) async fn send(
    sender: Sender,
    replica: &Arc<Replica>,
    service: &Service,
    parts: &mut http::request::Parts,
    uri: &Uri,
    body: UpstreamBody,
    last: bool,
) -> Result<
    (
        Response<ClientBody>,
        Option<http2::SendRequest<crate::body::H2Upload>>,
    ),
    ProxyError,
> {
    let cfg = &service.cfg;
    match sender {
        Sender::Raw(conn) => {
            // Our HTTP/1.1 client borrows the head: no copy even if a retry may follow.
            let head = crate::h1::client::RequestHead {
                method: &parts.method,
                uri,
                headers: &parts.headers,
            };
            let to = crate::h1::client::Attempt {
                replica,
                max_idle: cfg.max_idle,
                request_timeout: cfg.request_timeout,
                read_timeout: &service.read_timeout,
            };
            let sent = conn.send(head, body, to).await;
            use crate::h1::client::Error;
            match sent {
                Ok(resp) => Ok((resp.map(ClientBody::raw), None)),
                Err(Error::BodyTooLarge) => Err(ProxyError::bare(ErrorKind::BodyTooLarge)),
                Err(Error::Body(e)) => Err(client_body_error(e)),
                Err(Error::TimedOut) => Err(ProxyError::bare(ErrorKind::UpstreamTimeout)),
                Err(e) => Err(ProxyError::new(ErrorKind::UpstreamBroken, e)),
            }
        }
        Sender::H2(mut s) => {
            let (body, clock) = crate::body::H2Upload::new(body);
            let mut req = Request::new(body);
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = uri.clone();
            // hyper takes the headers by value: a request that cannot be sent again gives
            // its headers away instead of copying them.
            *req.headers_mut() = if last {
                std::mem::take(&mut parts.headers)
            } else {
                parts.headers.clone()
            };
            *req.version_mut() = Version::HTTP_2;
            let send = async {
                s.ready().await?;
                s.send_request(req).await
            };
            // request_timeout counts the upstream's time only (see `UploadClock`).
            let outcome =
                crate::body::within_request_timeout(send, clock.as_deref(), cfg.request_timeout)
                    .await
                    .ok_or(());
            let body = |b| ClientBody::upstream(b, &service.read_timeout, replica);
            match outcome {
                Ok(Ok(resp)) => Ok((resp.map(body), Some(s))),
                Ok(Err(err)) => {
                    let cause = std::error::Error::source(&err);
                    if cause.is_some_and(is_body_too_large) {
                        Err(ProxyError::bare(ErrorKind::BodyTooLarge))
                    } else if cause.is_some_and(is_client_body_error) {
                        Err(client_body_error(Box::new(err)))
                    } else {
                        Err(ProxyError::new(ErrorKind::UpstreamBroken, err))
                    }
                }
                Err(_) => Err(ProxyError::bare(ErrorKind::UpstreamTimeout)),
            }
        }
    }
}

/// The client's body broke off, was malformed, or paused past `body_timeout`.
fn client_body_error(e: crate::body::BoxError) -> ProxyError {
    let kind = if crate::body::is_client_body_timeout(e.as_ref()) {
        ErrorKind::ClientBodyTimeout
    } else {
        ErrorKind::ClientBody
    };
    ProxyError::new(kind, e)
}
