//! Client-facing sockets: one SO_REUSEPORT socket per listener and worker, so the kernel
//! spreads connections over workers with no shared accept lock. Serves HTTP/1.1, h2c
//! (prior knowledge) and TLS with ALPN; caps open connections; drains on shutdown. h2
//! connections are served in `h2.rs`.

mod coalesce;
mod h2;

use crate::h1::server::{self, ClientReader, ClientWriter};
use crate::pipeline::ConnCtx;
use crate::Shared;
use headroom_config::ListenerConfig;
use headroom_telemetry::{Counter, Gauge};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::debug;

/// A listener bound on every worker's socket, before any worker runs.
pub struct BoundListener {
    pub index: usize,
    pub cfg: ListenerConfig,
    /// The address actually bound (port 0 in the config becomes the OS's pick).
    pub addr: SocketAddr,
    pub sockets: Vec<std::net::TcpListener>,
    pub tls: Option<TlsAcceptor>,
    pub limit: Arc<Semaphore>,
    pub open: Arc<Gauge>,
}

fn socket_for(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// Binds `workers` sockets for the listener (the first picks the port when it is 0).
pub fn bind(
    index: usize,
    cfg: &ListenerConfig,
    workers: usize,
    shared: &Shared,
) -> Result<BoundListener, String> {
    let first = socket_for(cfg.bind)
        .map_err(|e| format!("listener \"{}\": cannot bind {}: {e}", cfg.name, cfg.bind))?;
    let addr = first.local_addr().map_err(|e| e.to_string())?;
    let mut sockets = vec![first];
    for _ in 1..workers {
        sockets.push(
            socket_for(addr)
                .map_err(|e| format!("listener \"{}\": cannot bind {addr}: {e}", cfg.name))?,
        );
    }
    let tls = cfg.tls.as_ref().map(crate::tls::acceptor).transpose()?;
    Ok(BoundListener {
        index,
        cfg: cfg.clone(),
        addr,
        sockets,
        tls,
        limit: Arc::new(Semaphore::new(cfg.max_connections)),
        open: shared.registry.gauge(
            "headroom_open_connections",
            "Client connections open, by listener.",
            &[("listener", cfg.name.as_str())],
        ),
    })
}

/// Everything one worker needs to serve one listener.
pub struct WorkerListener {
    pub index: usize,
    pub cfg: ListenerConfig,
    pub socket: std::net::TcpListener,
    pub tls: Option<TlsAcceptor>,
    pub limit: Arc<Semaphore>,
    pub open: Arc<Gauge>,
}

/// Accepts until `shutdown` turns true. `drain` is cloned into every connection, so the
/// worker knows when the last one has closed.
pub async fn accept_loop(
    l: WorkerListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(l.socket) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(listener = %l.cfg.name, error = %e, "cannot register listener");
            return;
        }
    };
    let cfg = Arc::new(l.cfg);
    let send_timeouts = shared.registry.counter(
        "headroom_client_send_timeouts_total",
        "Client connections closed because the client took no response bytes for send_timeout.",
        &[("listener", cfg.name.as_str())],
    );
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        // The permit is taken after accept, not before: an idle worker must not sit on a
        // permit while another worker's queue waits for one. At the limit, this worker stops
        // accepting until a connection closes, and the kernel backlog holds the rest.
        let permit = match l.limit.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => tokio::select! {
                p = l.limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.changed() => break,
            },
        };
        let _ = tcp.set_nodelay(true);
        let ctx = Arc::new(ConnCtx {
            shared: shared.clone(),
            listener: l.index,
            client: peer,
            client_ip: http::HeaderValue::from_str(&peer.ip().to_string())
                .unwrap_or(http::HeaderValue::from_static("unknown")),
            tls: l.tls.is_some(),
            max_body_bytes: cfg.max_body_bytes,
            denied: {
                let ip = peer.ip().to_canonical();
                cfg.deny.iter().any(|n| n.contains(&ip))
                    || (!cfg.allow.is_empty() && !cfg.allow.iter().any(|n| n.contains(&ip)))
            },
        });
        let (open, tls, cfg, shutdown, drain, send_timeouts) = (
            l.open.clone(),
            l.tls.clone(),
            cfg.clone(),
            shutdown.clone(),
            drain.clone(),
            send_timeouts.clone(),
        );
        let fut = async move {
            open.inc();
            serve_connection(tcp, tls, ctx, &cfg, shutdown, &send_timeouts).await;
            open.dec();
            drop(permit);
            drop(drain);
        };
        tokio::spawn(fut);
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// True when the client opens with the HTTP/2 preface (h2c with prior knowledge).
/// Peeks without consuming; most requests differ from the preface at their first or second
/// byte, so this is one `recv(MSG_PEEK)` per connection.
async fn starts_with_h2_preface(tcp: &tokio::net::TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; 24];
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A prefix of the preface so far: wait for more bytes.
        tcp.readable().await?;
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    ctx: Arc<ConnCtx>,
    cfg: &ListenerConfig,
    shutdown: watch::Receiver<bool>,
    send_timeouts: &Counter,
) {
    // HTTP/1.1 is served by our own codec (h1::server), whose idle connections hold no
    // buffer; h2 by the h2 crate (h2.rs), boxed, as its connection state is larger and
    // rarer.
    match tls {
        None => {
            match tokio::time::timeout(cfg.header_timeout, starts_with_h2_preface(&tcp)).await {
                Ok(Ok(false)) => {
                    let (r, w) = tcp.into_split();
                    server::serve(
                        ClientReader::Plain(r),
                        ClientWriter::Plain(w),
                        ctx,
                        cfg,
                        shutdown,
                        send_timeouts,
                    )
                    .await
                }
                Ok(Ok(true)) => Box::pin(h2::serve(tcp, ctx, cfg, shutdown, send_timeouts)).await,
                Ok(Err(_)) | Err(_) => {}
            }
        }
        Some(acceptor) => {
            Box::pin(serve_tls(tcp, acceptor, ctx, cfg, shutdown, send_timeouts)).await
        }
    }
}

async fn serve_tls(
    tcp: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    ctx: Arc<ConnCtx>,
    cfg: &ListenerConfig,
    shutdown: watch::Receiver<bool>,
    send_timeouts: &Counter,
) {
    let stream = match tokio::time::timeout(cfg.header_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        h2::serve(stream, ctx, cfg, shutdown, send_timeouts).await
    } else {
        let (r, w) = tokio::io::split(stream);
        server::serve(
            ClientReader::Tls(r),
            ClientWriter::Tls(w),
            ctx,
            cfg,
            shutdown,
            send_timeouts,
        )
        .await
    }
}
