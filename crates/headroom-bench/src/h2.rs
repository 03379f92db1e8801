//! The HTTP/2 client of a run, on hyper: h2c with prior knowledge for http://, ALPN `h2`
//! for https://. Several request loops may share one connection (`--streams`).

use crate::connect::{Connector, ErrorKind, Failure, Stream};
use crate::request::Prepared;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};

pub type Sender = SendRequest<Full<Bytes>>;

/// Opens a connection and starts its HTTP/2 session; the session runs as its own task.
pub async fn connect(connector: &Connector) -> Result<Sender, Failure> {
    let stream = connector.connect().await?;
    if matches!(stream, Stream::Tls(_)) && stream.alpn() != Some(&b"h2"[..]) {
        return Err(Failure::new(
            ErrorKind::Protocol,
            format!(
                "{} did not agree to HTTP/2 (ALPN)",
                connector.target.authority
            ),
        ));
    }
    let builder = http2::Builder::new(TokioExecutor::new());
    let handshake = match stream {
        Stream::Plain(s) => {
            let (send, conn) = builder.handshake(TokioIo::new(s)).await.map_err(failure)?;
            tokio::spawn(conn);
            send
        }
        Stream::Tls(s) => {
            let (send, conn) = builder.handshake(TokioIo::new(s)).await.map_err(failure)?;
            tokio::spawn(conn);
            send
        }
    };
    Ok(handshake)
}

/// Sends one request and reads its whole response; returns the status and body bytes.
pub async fn exchange(sender: &mut Sender, req: &Prepared) -> Result<(u16, u64), Failure> {
    sender.ready().await.map_err(failure)?;
    let mut r = http::Request::new(Full::new(req.body.clone()));
    *r.method_mut() = req.method.clone();
    *r.uri_mut() = req.uri.clone();
    *r.headers_mut() = req.headers.clone();
    let resp = sender.send_request(r).await.map_err(failure)?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(failure)?.into_data() {
            bytes += data.len() as u64;
        }
    }
    Ok((status, bytes))
}

fn failure(e: hyper::Error) -> Failure {
    let kind = if e.is_parse() || e.is_user() {
        ErrorKind::Protocol
    } else if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_closed() || e.is_canceled() || e.is_incomplete_message() {
        ErrorKind::Reset
    } else {
        ErrorKind::Other
    };
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    if detail.contains("reset") || detail.contains("GOAWAY") || detail.contains("broken pipe") {
        return Failure::new(ErrorKind::Reset, detail);
    }
    Failure::new(kind, detail)
}
