//! One bounded GET of a URL (a JWKS; the autoscaler's Prometheus query): `http://` over a
//! tokio TCP stream, `https://` through tokio-rustls with the system's root certificates;
//! hyper's HTTP/1.1 client on either.
//!
//! Bounded in time (one deadline for resolving, connecting, the TLS handshake and the whole
//! body) and in size (the body is capped): a slow or huge answer is an error, and the
//! caller keeps the keys it had.

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Resolving, connecting, TLS and reading the whole body: a JWKS is one small document.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A JWKS of a few dozen keys is a few tens of KiB.
pub(crate) const MAX_BODY: usize = 1 << 20;

/// A URL, parsed once.
pub struct HttpFetcher {
    host: String,
    /// `Host:`: the URL's authority without its user information.
    authority: String,
    /// `Authorization: Basic`, from the URL's `user:password@` (as curl takes it).
    authorization: Option<http::HeaderValue>,
    port: u16,
    uri: Uri,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    timeout: Duration,
    max_body: usize,
}

impl HttpFetcher {
    /// Checks `url` (`http://` or `https://`, with a host); for `https://` loads the
    /// system's root certificates (once: blocking file reads, at config time).
    pub(crate) fn new(url: &str) -> Result<HttpFetcher, String> {
        HttpFetcher::bounded(url, "JWKS URL", FETCH_TIMEOUT, MAX_BODY)
    }

    /// [`HttpFetcher::new`] for any URL: `what` names it in messages, `timeout` bounds the
    /// whole exchange and `max_body` the answer.
    pub fn bounded(
        url: &str,
        what: &'static str,
        timeout: Duration,
        max_body: usize,
    ) -> Result<HttpFetcher, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{what} {url:?}: not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "{what} {url:?}: must start with http:// or https://"
                ))
            }
        };
        let host = match uri.host() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
            _ => return Err(format!("{what} {url:?}: has no host")),
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let raw_authority = uri.authority().map_or(host.as_str(), |a| a.as_str());
        let (authority, authorization) = match raw_authority.rsplit_once('@') {
            Some((userinfo, rest)) => {
                use base64::Engine as _;
                let token = base64::engine::general_purpose::STANDARD.encode(userinfo);
                let value = http::HeaderValue::from_str(&format!("Basic {token}"))
                    .map_err(|_| format!("{what}: its user and password cannot be sent"))?;
                (rest.to_string(), Some(value))
            }
            None => (raw_authority.to_string(), None),
        };
        let tls = match https {
            false => None,
            true => Some(tls(url, what, &host)?),
        };
        Ok(HttpFetcher {
            host,
            authority,
            authorization,
            port,
            uri,
            tls,
            timeout,
            max_body,
        })
    }

    /// The body of a 200 answer, or why there is none.
    pub async fn get(&self) -> Result<Bytes, String> {
        match tokio::time::timeout(self.timeout, self.get_unbounded()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no whole answer within {:?}", self.timeout)),
        }
    }

    async fn get_unbounded(&self) -> Result<Bytes, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.exchange(tcp).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                self.exchange(tls).await
            }
        }
    }

    async fn exchange<S>(&self, io: S) -> Result<Bytes, String>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        // The connection lives as long as this exchange: dropped (and closed) with it.
        let conn = tokio::spawn(conn);
        let _abort = AbortOnDrop(conn.abort_handle());
        let mut req = Request::get(self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header(header::HOST, self.authority.as_str())
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .header(header::USER_AGENT, "headroom")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("HTTP: {e}"))?;
        if let Some(auth) = &self.authorization {
            let mut auth = auth.clone();
            auth.set_sensitive(true);
            req.headers_mut().insert(header::AUTHORIZATION, auth);
        }
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        if resp.status() != StatusCode::OK {
            return Err(format!("answered {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), self.max_body)
            .collect()
            .await
            .map_err(
                |e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
                    Some(_) => format!("body over {} bytes", self.max_body),
                    None => format!("reading the body: {e}"),
                },
            )?;
        Ok(body.to_bytes())
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn tls(
    url: &str,
    what: &str,
    host: &str,
) -> Result<
    (
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    ),
    String,
> {
    let name = rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| format!("{what} {url:?}: {host:?} is not a TLS server name"))?;
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(format!(
            "{what} {url:?}: no system root certificates found to check it with{why} \
             (install ca-certificates, or set SSL_CERT_FILE)"
        ));
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
impl HttpFetcher {
    pub(crate) fn with_limits(mut self, timeout: Duration, max_body: usize) -> HttpFetcher {
        self.timeout = timeout;
        self.max_body = max_body;
        self
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the test server answers, changed by the test between fetches.
    #[derive(Clone)]
    pub(crate) enum Answer {
        Ok(Vec<u8>),
        Status(u16),
        /// Accepts, then closes without a word.
        Hangup,
        /// Accepts and never answers.
        Stall,
    }

    /// A tiny HTTP/1.1 server on loopback: one answer per connection.
    pub(crate) struct JwksServer {
        pub(crate) url: String,
        pub(crate) answer: Arc<Mutex<Answer>>,
        pub(crate) hits: Arc<std::sync::atomic::AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl JwksServer {
        pub(crate) async fn start(answer: Answer) -> JwksServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!(
                "http://{}/.well-known/jwks.json",
                listener.local_addr().unwrap()
            );
            let answer = Arc::new(Mutex::new(answer));
            let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let (a, h) = (answer.clone(), hits.clone());
            let task = tokio::spawn(async move {
                while let Ok((mut tcp, _)) = listener.accept().await {
                    h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let answer = a.lock().unwrap().clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0; 4096];
                        let mut got = 0;
                        while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                            match tcp.read(&mut buf[got..]).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got += n,
                            }
                        }
                        let (status, body) = match answer {
                            Answer::Ok(body) => (200, body),
                            Answer::Status(s) => (s, b"oops".to_vec()),
                            Answer::Hangup => return,
                            Answer::Stall => {
                                std::future::pending::<()>().await;
                                return;
                            }
                        };
                        let head = format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: application/json\r\n\r\n",
                            body.len()
                        );
                        let _ = tcp.write_all(head.as_bytes()).await;
                        let _ = tcp.write_all(&body).await;
                    });
                }
            });
            JwksServer {
                url,
                answer,
                hits,
                task,
            }
        }

        pub(crate) fn answer(&self, answer: Answer) {
            *self.answer.lock().unwrap() = answer;
        }

        pub(crate) fn hits(&self) -> usize {
            self.hits.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl Drop for JwksServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    #[tokio::test]
    async fn a_200_body_is_returned_and_every_other_answer_is_an_error() {
        let server = JwksServer::start(Answer::Ok(b"{\"keys\":[]}".to_vec())).await;
        let fetcher = HttpFetcher::new(&server.url)
            .unwrap()
            .with_limits(Duration::from_secs(5), 64);
        assert_eq!(&fetcher.get().await.unwrap()[..], b"{\"keys\":[]}");
        server.answer(Answer::Status(503));
        assert_eq!(
            fetcher.get().await.unwrap_err(),
            "answered 503 Service Unavailable"
        );
        server.answer(Answer::Hangup);
        assert!(fetcher.get().await.unwrap_err().starts_with("HTTP: "));
        server.answer(Answer::Ok(vec![b' '; 65]));
        assert_eq!(fetcher.get().await.unwrap_err(), "body over 64 bytes");
        assert_eq!(server.hits(), 4);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let server = JwksServer::start(Answer::Stall).await;
        // Real time (the socket is real); the deadline is what is tested, not a duration.
        let fetcher = HttpFetcher::new(&server.url)
            .unwrap()
            .with_limits(Duration::from_millis(200), 64);
        let e = fetcher.get().await.unwrap_err();
        assert!(e.starts_with("no whole answer within"), "{e}");
    }

    #[tokio::test]
    async fn a_closed_port_is_an_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let fetcher = HttpFetcher::new(&format!("http://127.0.0.1:{port}/jwks")).unwrap();
        let e = fetcher.get().await.unwrap_err();
        assert!(e.starts_with("cannot connect"), "{e}");
    }

    #[test]
    fn urls_are_checked_when_the_verifier_is_built() {
        for (url, want) in [
            ("ftp://idp/jwks", "must start with http:// or https://"),
            ("/jwks", "must start with http"),
            ("http://", "not a URL"),
        ] {
            let e = HttpFetcher::new(url).err().unwrap();
            assert!(e.contains(want), "{url}: {e}");
        }
        let f = HttpFetcher::new("http://[::1]:8080/k?x=1").unwrap();
        assert_eq!((f.host.as_str(), f.port), ("::1", 8080));
        assert_eq!(f.uri.path_and_query().unwrap().as_str(), "/k?x=1");
        assert_eq!(HttpFetcher::new("http://idp/").unwrap().port, 80);
    }
}
