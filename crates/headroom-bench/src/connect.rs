//! Opening connections to the target: TCP, then TLS when the URL says https, and the
//! failure kinds a report counts.

use crate::request::Target;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use std::io;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Why a request failed; each kind is a column of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The TCP connection could not be opened (refused, unreachable).
    Connect,
    /// The TLS handshake failed (an untrusted certificate, no common protocol).
    Tls,
    /// No whole response within `--timeout`.
    Timeout,
    /// The server reset or closed the connection before the response was whole.
    Reset,
    /// The response was not valid HTTP.
    Protocol,
    /// Any other I/O error.
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Connect,
        ErrorKind::Tls,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::Protocol,
        ErrorKind::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Other => "other",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A failed request: its kind, and what happened in words (kept for the first errors only).
#[derive(Debug)]
pub struct Failure {
    pub kind: ErrorKind,
    pub detail: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Failure {
        Failure {
            kind,
            detail: detail.into(),
        }
    }

    /// An I/O error while a request was on the wire: resets and early closes are `Reset`.
    pub fn io(e: &io::Error) -> Failure {
        use io::ErrorKind as K;
        let kind = match e.kind() {
            K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::NotConnected => ErrorKind::Reset,
            K::InvalidData => ErrorKind::Protocol,
            K::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Other,
        };
        Failure::new(kind, e.to_string())
    }
}

/// A connection to the target, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
        }
    }

    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(buf).await,
            Stream::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
        }
    }

    /// The protocol the server chose by ALPN (TLS only).
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(s) => s.get_ref().1.alpn_protocol(),
        }
    }
}

/// How to reach the target: the address and, for https, the TLS client.
#[derive(Clone)]
pub struct Connector {
    pub target: Target,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Connector {
    pub fn new(
        target: Target,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Connector, String> {
        let tls = match (target.tls, tls) {
            (true, Some(cfg)) => {
                let name = ServerName::try_from(target.host.clone())
                    .map_err(|e| format!("{}: not a TLS server name: {e}", target.host))?;
                Some((TlsConnector::from(cfg), name))
            }
            _ => None,
        };
        Ok(Connector { target, tls })
    }

    pub async fn connect(&self) -> Result<Stream, Failure> {
        let addr = (self.target.host.as_str(), self.target.port);
        let tcp = TcpStream::connect(addr).await.map_err(|e| {
            Failure::new(
                ErrorKind::Connect,
                format!("cannot connect to {}: {e}", self.target.authority),
            )
        })?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some((c, name)) => match c.connect(name.clone(), tcp).await {
                Ok(s) => Ok(Stream::Tls(Box::new(s))),
                Err(e) => Err(Failure::new(
                    ErrorKind::Tls,
                    format!("TLS handshake with {} failed: {e}", self.target.authority),
                )),
            },
        }
    }
}

/// The TLS client: the system's web roots (webpki-roots), or `--cacert`'s, or none checked
/// with `--insecure`. ALPN offers `h2` or `http/1.1`, whichever the run speaks.
pub fn tls_config(
    insecure: bool,
    cacert: Option<&Path>,
    http2: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut cfg = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match cacert {
            Some(file) => {
                for cert in CertificateDer::pem_file_iter(file)
                    .map_err(|e| format!("{}: cannot read certificates: {e}", file.display()))?
                {
                    let cert = cert
                        .map_err(|e| format!("{}: invalid PEM certificate: {e}", file.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: unusable certificate: {e}", file.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "{}: no certificate found (expected a PEM \"BEGIN CERTIFICATE\" block)",
                        file.display()
                    ));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    cfg.alpn_protocols = vec![if http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(Arc::new(cfg))
}

/// `--insecure`: any certificate is accepted (self-signed test servers), but the handshake's
/// signatures are still checked, so the connection is still TLS.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
