//! Protocols: h2c with prior knowledge, TLS with ALPN (h2 and HTTP/1.1), h2 to upstreams.

mod common;
use bytes::Bytes;
use common::*;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::sync::Arc;

fn config(up: &Upstream, listener_extra: &str, service_extra: &str) -> String {
    one_route_config_with(up, listener_extra, service_extra)
}

async fn body_json(resp: http::Response<hyper::body::Incoming>) -> serde_json::Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn h2c_with_prior_knowledge_multiplexes_requests() {
    let up = Upstream::start("a");
    let h = Headroom::start(&config(&up, "", ""));
    let (send, _conn) = h2c_connect(h.addr).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut send = send.clone();
        tasks.push(tokio::spawn(async move {
            let req = Request::get(format!("http://test.local/item/{i}"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            assert_eq!(resp.version(), Version::HTTP_2);
            assert_eq!(resp.status(), 200);
            let j = body_json(resp).await;
            assert_eq!(j["path"], format!("/item/{i}"));
            assert_eq!(
                j["headers"]["host"], "test.local",
                "the :authority becomes Host upstream"
            );
            assert_eq!(j["version"], "HTTP/1.1");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    cert: &str,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn tls_terminates_with_alpn_for_h2_and_http11() {
    let up = Upstream::start("a");
    let dir = temp_dir();
    let (cert, key) = make_cert(&dir);
    let h = Headroom::start(&config(
        &up,
        &format!("tls = {{ cert = \"{cert}\", key = \"{key}\" }}"),
        "",
    ));

    let tls = tls_connect(h.addr, &cert, b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(
            Request::get("https://localhost/secure")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    let j = body_json(resp).await;
    assert_eq!(j["headers"]["x-forwarded-proto"], "https");

    let tls = tls_connect(h.addr, &cert, b"http/1.1").await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(
            Request::get("/secure")
                .header("host", "localhost")
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), Version::HTTP_11);
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await.unwrap();
    // The same TLS connection carries a request body, then a chunked response.
    let resp = send
        .send_request(
            Request::post("/secure/upload")
                .header("host", "localhost")
                .body(http_body_util::Full::new(Bytes::from_static(
                    b"hello over tls",
                )))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(body_json(resp).await["body_bytes"], 14);
    let resp = send
        .send_request(
            Request::get("/secure/stream?chunks=4")
                .header("host", "localhost")
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.headers()["transfer-encoding"], "chunked");
    assert_eq!(body_json(resp).await["path"], "/secure/stream");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_certificate_file_is_a_config_error() {
    let up = Upstream::start("a");
    let ran = run_with_config(
        "check",
        &config(
            &up,
            "tls = { cert = \"missing.pem\", key = \"missing-key.pem\" }",
            "",
        ),
    );
    assert_eq!(ran.code, Some(2));
    assert!(
        ran.stderr.contains("tls.cert: cannot read") && ran.stderr.contains("missing.pem"),
        "{}",
        ran.stderr
    );
}

#[test]
fn upstreams_can_be_reached_over_h2() {
    let up = Upstream::start("a");
    let h = Headroom::start(&config(&up, "", "protocol = \"h2\""));
    let mut c = h.client();
    for _ in 0..5 {
        let r = c.get("/over-h2");
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert_eq!(j["version"], "HTTP/2.0");
        assert_eq!(j["path"], "/over-h2");
    }
}

/// An early answer that closes an HTTP/1.1 connection says `Connection: close`; over h2
/// that field is refused by the protocol, so it is dropped and the answer still arrives
/// (with a `Date`, which the gateway adds where no upstream gave one). The declared
/// `content-length` of an h2 upload is what the body limit is checked against.
#[tokio::test]
async fn an_h2_early_answer_arrives_without_hop_by_hop_fields_and_with_a_date() {
    let up = Upstream::start("a");
    let h = Headroom::start(&config(&up, "max_body_bytes = 1024", ""));
    let mut send = h2c_connect(h.addr).await.0;
    let req = Request::post("http://test.local/upload")
        .header("content-length", "4096")
        .body(http_body_util::Full::new(Bytes::from(vec![b'x'; 4096])))
        .unwrap();
    let resp = send
        .send_request(req)
        .await
        .expect("an answer, not a reset");
    assert_eq!(resp.status(), 413);
    assert!(resp.headers().get("connection").is_none());
    assert!(resp.headers().get("date").is_some(), "{:?}", resp.headers());
    assert_eq!(body_json(resp).await["error"], "body_too_large");
    assert_eq!(up.served(), 0, "refused before the upstream");
    // The connection carries on.
    let req = Request::get("http://test.local/after")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
}

/// A client that resets its stream (h2's way to cancel) while the upstream works has its
/// request dropped at once — counted as 499, nginx's "client closed request" — rather than
/// held until the upstream answers.
#[tokio::test]
async fn an_h2_stream_reset_by_the_client_drops_its_request() {
    let up = Upstream::start("a");
    let h = Arc::new(Headroom::start(&config(&up, "", "")));
    let mut send = h2c_connect(h.addr).await.0;
    let req = Request::get("http://test.local/slow?delay=60000")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let pending = tokio::spawn(send.send_request(req));
    let h1 = h.clone();
    let seen = tokio::task::spawn_blocking(move || {
        h1.wait_state(
            "the upstream to see the request",
            || up.served(),
            |n| *n > 0,
        );
        up
    });
    let _up = seen.await.unwrap();
    // Dropping the response future resets the stream (RST_STREAM CANCEL).
    pending.abort();
    let h2 = h.clone();
    tokio::task::spawn_blocking(move || {
        h2.wait_metric(
            "headroom_requests_total{route=\"route-1\",service=\"s\",class=\"4xx\"}",
            1.0,
        )
    })
    .await
    .unwrap();
    // The connection carries on.
    let req = Request::get("http://test.local/after")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
}
