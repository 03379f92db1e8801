//! One POST of a JSON body to a receiver: a fresh HTTP/1.1 connection (`http://` over TCP,
//! `https://` through rustls with the system's root certificates), one deadline for all
//! of it, and the outcome sorted into "try again later" or "give up".

use super::ReceiverUrl;
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The most of an error answer's body kept for the log: enough for Alertmanager's
/// one-line JSON error.
const ERROR_BODY: usize = 512;

/// Why a delivery attempt failed, and whether trying again may help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DeliveryError {
    /// No connection (refused, unreachable, DNS, TLS handshake).
    Connect(String),
    /// No whole answer within the request timeout.
    Timeout(Duration),
    /// The connection broke during the exchange.
    Exchange(String),
    /// An answer other than 2xx, with the start of its body.
    Status { status: StatusCode, body: String },
    /// The receiver can never be reached as configured (no root certificates for https).
    Setup(String),
}

impl DeliveryError {
    /// Whether a later attempt may succeed: everything but a 4xx other than 429 (the
    /// receiver refused this body and will refuse it again) and a setup error.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            DeliveryError::Status { status, .. } => {
                !status.is_client_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            DeliveryError::Setup(_) => false,
            _ => true,
        }
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::Connect(why) => write!(f, "cannot connect: {why}"),
            DeliveryError::Timeout(after) => write!(f, "no answer within {after:?}"),
            DeliveryError::Exchange(why) => write!(f, "HTTP exchange failed: {why}"),
            DeliveryError::Status { status, body } if body.is_empty() => {
                write!(f, "answered {status}")
            }
            DeliveryError::Status { status, body } => write!(f, "answered {status}: {body}"),
            DeliveryError::Setup(why) => f.write_str(why),
        }
    }
}

/// Something notifications are posted to: HTTP in production, a script in tests.
pub(crate) trait Endpoint: Send + Sync + 'static {
    /// Posts one JSON body; `Ok` on a 2xx answer.
    fn post(&self, body: Bytes) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

type Tls = (
    tokio_rustls::TlsConnector,
    rustls_pki_types::ServerName<'static>,
);

/// A receiver's URL over HTTP/1.1, with a per-request timeout.
pub(crate) struct HttpEndpoint {
    url: ReceiverUrl,
    tls: Option<Result<Tls, String>>,
    timeout: Duration,
    content_type: &'static str,
    /// Fields sent with every request (an OTLP vendor's API key).
    fields: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl HttpEndpoint {
    /// For `https://`, loads the system's root certificates now (blocking file reads, once,
    /// when the notifier starts).
    pub(crate) fn new(url: ReceiverUrl, timeout: Duration) -> HttpEndpoint {
        let tls = url.is_https().then(|| tls(&url));
        HttpEndpoint {
            url,
            tls,
            timeout,
            content_type: "application/json",
            fields: Vec::new(),
        }
    }

    /// Bodies of another type, with these fields on every request.
    pub(crate) fn with_body_type(
        mut self,
        content_type: &'static str,
        fields: Vec<(http::HeaderName, http::HeaderValue)>,
    ) -> HttpEndpoint {
        self.content_type = content_type;
        self.fields = fields;
        self
    }

    async fn post_unbounded(&self, body: Bytes) -> Result<(), DeliveryError> {
        let tcp = TcpStream::connect((self.url.host(), self.url.port()))
            .await
            .map_err(|e| DeliveryError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.exchange(tcp, body).await,
            Some(Err(why)) => Err(DeliveryError::Setup(why.clone())),
            Some(Ok((connector, name))) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| DeliveryError::Connect(format!("TLS: {e}")))?;
                self.exchange(tls, body).await
            }
        }
    }

    async fn exchange<S>(&self, io: S, body: Bytes) -> Result<(), DeliveryError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let broken = |e: hyper::Error| DeliveryError::Exchange(e.to_string());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(broken)?;
        // The connection lives as long as this exchange: dropped (and closed) with it.
        let conn = tokio::spawn(conn);
        let _abort = AbortOnDrop(conn.abort_handle());
        let uri = self.url.uri();
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut req = Request::post(path)
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, self.content_type)
            .header(
                header::USER_AGENT,
                concat!("headroom/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|e| DeliveryError::Exchange(e.to_string()))?;
        for (k, v) in &self.fields {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        let resp = sender.send_request(req).await.map_err(broken)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = match Limited::new(resp.into_body(), ERROR_BODY).collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_string(),
            Err(_) => String::new(),
        };
        Err(DeliveryError::Status { status, body })
    }
}

impl Endpoint for HttpEndpoint {
    async fn post(&self, body: Bytes) -> Result<(), DeliveryError> {
        match tokio::time::timeout(self.timeout, self.post_unbounded(body)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(DeliveryError::Timeout(self.timeout)),
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn tls(url: &ReceiverUrl) -> Result<Tls, String> {
    let name = rustls_pki_types::ServerName::try_from(url.host().to_string())
        .map_err(|_| format!("{:?} is not a TLS server name", url.host()))?;
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err("no system root certificates to check the receiver with \
                    (install ca-certificates, or set SSL_CERT_FILE)"
            .to_string());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> DeliveryError {
        DeliveryError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            body: String::new(),
        }
    }

    #[test]
    fn server_errors_throttling_and_broken_connections_are_retried() {
        for e in [
            status(500),
            status(503),
            status(429),
            DeliveryError::Connect("refused".into()),
            DeliveryError::Timeout(Duration::from_secs(10)),
            DeliveryError::Exchange("reset".into()),
        ] {
            assert!(e.is_retryable(), "{e}");
        }
    }

    #[test]
    fn a_client_error_other_than_429_is_final() {
        for code in [400, 401, 404, 413] {
            assert!(!status(code).is_retryable(), "{code}");
        }
        assert!(!DeliveryError::Setup("no roots".into()).is_retryable());
    }

    #[test]
    fn a_refusal_says_the_status_and_what_the_receiver_said() {
        let e = DeliveryError::Status {
            status: StatusCode::BAD_REQUEST,
            body: r#"{"code":400,"message":"start time must be before end time"}"#.into(),
        };
        assert_eq!(
            e.to_string(),
            r#"answered 400 Bad Request: {"code":400,"message":"start time must be before end time"}"#
        );
    }
}
