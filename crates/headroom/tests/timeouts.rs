//! Timeouts that end a request midway, on both sides and both protocols: an upstream that
//! stalls mid-body (`read_timeout`), a client that stops reading (`send_timeout`), a slow
//! upload (`body_timeout`, not `request_timeout`), h2 connections that sit idle.

mod common;
use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::BodyExt;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn config(up: &Upstream, listener_extra: &str, service_extra: &str) -> String {
    one_route_config_with(up, listener_extra, service_extra)
}

/// The settings of the report: every timeout 2 s but the one under test.
const LISTENER: &str = "header_timeout = \"2s\"\nbody_timeout = \"2s\"";
/// A single replica whose first failure ejects it: a blame shows.
const BLAMED_AT_ONCE: &str = "outlier = { consecutive_failures = 1, max_ejected = \"100%\" }";

/// Reads `s` until the peer closes it or 5 s pass without a byte: the response head, the
/// body bytes after it, and whether the connection was closed (false: still open).
fn read_until_closed(s: &mut TcpStream) -> (String, Vec<u8>, bool) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => break true,
            Err(_) => break false,
        }
    };
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(all.len(), |p| p + 4);
    let body = all.split_off(end);
    (String::from_utf8_lossy(&all).into_owned(), body, closed)
}

fn idle_connections(h: &Headroom) -> u64 {
    h.status()["services"][0]["replicas"][0]["idle_connections"]
        .as_u64()
        .unwrap()
}

const READ_TIMEOUTS: &str = "headroom_upstream_errors_total{service=\"s\",kind=\"read_timeout\"}";
const SEND_TIMEOUTS: &str = "headroom_client_send_timeouts_total{listener=\"public\"}";

/// The report's case: head and 10 of 100 body bytes, then nothing, with every other
/// timeout at 2 s. The client gets the 10 bytes and a closed connection after
/// `read_timeout`, not a wait until it gives up.
fn an_upstream_stalled_mid_body_is_cut_off_after_read_timeout(protocol: &str) {
    let up = Upstream::start("a");
    let service =
        format!("protocol = \"{protocol}\"\nrequest_timeout = \"2s\"\nread_timeout = \"1s\"");
    let h = Headroom::start(&config(&up, LISTENER, &service));
    let mut c = h.client();
    let started = Instant::now();
    c.stream()
        .write_all(b"GET /?bytes=100&stall_after=10 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (head, body, closed) = read_until_closed(c.stream());
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(head.contains("content-length: 100\r\n"), "{head}");
    assert_eq!(
        body,
        b"x".repeat(10),
        "what arrived before the stall, no more"
    );
    assert!(closed, "the connection is closed, not left waiting");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    h.wait_metric(READ_TIMEOUTS, 1.0);
    let line = h
        .stderr
        .wait_for("past read_timeout", Duration::from_secs(5))
        .expect("a warning");
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&up.addr.to_string()),
        "names the replica: {line}"
    );
    assert_eq!(
        idle_connections(&h),
        0,
        "the stalled connection is not pooled"
    );
    // The service still works, on another connection.
    assert_eq!(h.get("/").status, 200);
}

#[test]
fn an_http1_upstream_stalled_mid_body_is_cut_off_after_read_timeout() {
    an_upstream_stalled_mid_body_is_cut_off_after_read_timeout("http1");
}

#[test]
fn an_h2_upstream_stalled_mid_body_is_cut_off_after_read_timeout() {
    an_upstream_stalled_mid_body_is_cut_off_after_read_timeout("h2");
}

fn get(path: &str) -> Request<http_body_util::Full<Bytes>> {
    Request::get(format!("http://test.local{path}"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn an_h2_client_has_its_stream_reset_when_the_upstream_stalls_mid_body() {
    let up = Upstream::start("a");
    let h = Headroom::start(&config(&up, LISTENER, "read_timeout = \"1s\""));
    let (mut send, _conn) = h2c_connect::<http_body_util::Full<Bytes>>(h.addr).await;
    let resp = send
        .send_request(get("/?bytes=100&stall_after=10"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let err = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the stream ends, not left waiting")
        .expect_err("the stream is reset, not ended as if complete");
    assert!(format!("{err:?}").contains("INTERNAL_ERROR"), "{err:?}");
    h.wait_metric(READ_TIMEOUTS, 1.0);
    // The connection carries on.
    let resp = send.send_request(get("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[test]
fn a_client_that_reads_nothing_is_disconnected_after_send_timeout() {
    let up = Upstream::start("a");
    let h = Headroom::start(&config(&up, "send_timeout = \"1s\"", ""));
    let mut c = h.client();
    // More than the socket buffers between gateway and client hold.
    c.stream()
        .write_all(b"GET /?bytes=30000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // Nothing is read until the gateway has given up on this client.
    h.wait_metric(SEND_TIMEOUTS, 1.0);
    let (head, body, closed) = read_until_closed(c.stream());
    assert!(head.contains("content-length: 30000000\r\n"), "{head}");
    assert!(body.len() < 30_000_000, "cut off: {} bytes", body.len());
    assert!(closed);
    let line = h
        .stderr
        .wait_for("within send_timeout", Duration::from_secs(5))
        .expect("a warning");
    assert!(
        line.contains("WARN") && line.contains("127.0.0.1"),
        "{line}"
    );
    assert_eq!(
        idle_connections(&h),
        0,
        "the upstream connection is not pooled"
    );
    assert_eq!(h.get("/").status, 200);
}

#[tokio::test]
async fn an_h2_client_that_reads_nothing_is_disconnected_after_send_timeout() {
    let up = Upstream::start("a");
    let h = Headroom::start(&config(&up, "send_timeout = \"1s\"", ""));
    let (mut send, conn) = h2c_connect::<http_body_util::Full<Bytes>>(h.addr).await;
    let resp = send.send_request(get("/?bytes=30000000")).await.unwrap();
    assert_eq!(resp.status(), 200);
    // The body is never read: the client's flow-control window stays shut.
    tokio::task::spawn_blocking(move || h.wait_metric(SEND_TIMEOUTS, 1.0))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the gateway closed the connection")
        .unwrap()
        .ok();
    drop(resp);
}

/// A client that keeps one stream's window shut while it goes on taking other responses:
/// the connection moves, so only that stream is reset (`CANCEL`), counted and logged, and
/// its upstream connection is let go; before, it was held for as long as the client liked.
#[tokio::test]
async fn an_h2_stream_the_client_takes_nothing_of_is_reset_while_the_connection_moves() {
    let up = Upstream::start("a");
    let h = std::sync::Arc::new(Headroom::start(&config(&up, "send_timeout = \"1s\"", "")));
    let (mut send, _conn) = h2c_connect::<http_body_util::Full<Bytes>>(h.addr).await;
    // More than the client's stream window (hyper: 2 MiB), never read.
    let stuck = send.send_request(get("/?bytes=30000000")).await.unwrap();
    assert_eq!(stuck.status(), 200);
    let h2 = h.clone();
    let counted = tokio::task::spawn_blocking(move || h2.wait_metric(SEND_TIMEOUTS, 1.0));
    tokio::pin!(counted);
    let mut answered = 0;
    loop {
        tokio::select! {
            r = &mut counted => break r.unwrap(),
            r = send.send_request(get("/")) => {
                let r = r.expect("the other streams are answered meanwhile");
                assert_eq!(r.status(), 200);
                r.into_body().collect().await.unwrap();
                answered += 1;
            }
        }
    }
    assert!(answered > 0);
    let err = tokio::time::timeout(Duration::from_secs(10), stuck.into_body().collect())
        .await
        .expect("the stuck stream ends")
        .expect_err("reset, not ended as if complete");
    assert!(format!("{err:?}").contains("CANCEL"), "{err:?}");
    let line = h
        .stderr
        .wait_for("while taking others", Duration::from_secs(5))
        .expect("a warning");
    assert!(
        line.contains("WARN") && line.contains("127.0.0.1"),
        "{line}"
    );
    // The connection carries on, and the stuck stream's upstream connection is not pooled
    // (it was cut off mid-body).
    let resp = send.send_request(get("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn an_h2_connection_that_sends_no_request_is_closed_after_header_timeout() {
    let up = Upstream::start("a");
    let h = Headroom::start(&config(&up, "header_timeout = \"500ms\"", ""));
    let (send, conn) = h2c_connect::<http_body_util::Full<Bytes>>(h.addr).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("closed by the gateway, not left open");
    assert!(ended.unwrap().is_ok(), "a GOAWAY, not a broken connection");
    assert!(send.is_closed());
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_with_goaway_after_header_timeout() {
    let up = Upstream::start("a");
    let h = Headroom::start(&config(&up, "header_timeout = \"500ms\"", ""));
    let (mut send, mut conn) = h2c_connect::<http_body_util::Full<Bytes>>(h.addr).await;
    // Requests one after another keep it open past the timeout.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1200) {
        let resp = send.send_request(get("/?delay=100")).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        assert!(!conn.is_finished());
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), &mut conn)
        .await
        .expect("the idle connection is closed");
    assert!(ended.unwrap().is_ok(), "a GOAWAY, not a broken connection");
}

/// A 1 MiB upload in 10 pieces over about 3 s, within `body_timeout` (2 s) but longer
/// than `request_timeout` (1 s): served, and no replica blamed.
fn a_slow_upload_within_body_timeout_is_served(protocol: &str) {
    let up = Upstream::start("a");
    let service = format!("protocol = \"{protocol}\"\nrequest_timeout = \"1s\"\n{BLAMED_AT_ONCE}");
    let h = Headroom::start(&config(&up, LISTENER, &service));
    let mut c = h.client();
    const SIZE: usize = 1 << 20;
    c.stream()
        .write_all(
            format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let piece = vec![b'u'; SIZE / 10];
    let mut sent = 0;
    while sent < SIZE {
        // The client's own pace, the behaviour under test (not a synchronisation).
        std::thread::sleep(Duration::from_millis(300));
        let n = piece.len().min(SIZE - sent);
        c.stream().write_all(&piece[..n]).unwrap();
        sent += n;
    }
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_bytes"], SIZE);
    assert_no_ejections(&h);
}

#[test]
fn a_slow_upload_to_an_http1_upstream_within_body_timeout_is_served() {
    a_slow_upload_within_body_timeout_is_served("http1");
}

#[test]
fn a_slow_upload_to_an_h2_upstream_within_body_timeout_is_served() {
    a_slow_upload_within_body_timeout_is_served("h2");
}

#[test]
fn a_client_pausing_past_body_timeout_gets_408_even_with_a_shorter_request_timeout() {
    let up = Upstream::start("a");
    let service = format!("request_timeout = \"1s\"\n{BLAMED_AT_ONCE}");
    let h = Headroom::start(&config(&up, LISTENER, &service));
    for method in ["POST", "PUT"] {
        let mut c = h.client();
        let r = c
            .send_raw(
                format!("{method} / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
                    .as_bytes(),
            )
            .expect("a response");
        assert_eq!(r.status, 408, "{method}: {}", r.text());
        assert_eq!(r.json()["error"], "request_timeout");
        assert!(c.is_closed(), "{method}");
    }
    assert_no_ejections(&h);
    assert_eq!(h.client().get("/").status, 200);
}

/// An h2 request body fed from a channel, so the test paces it.
struct Paced(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Paced {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[tokio::test]
async fn an_h2_client_pausing_past_body_timeout_gets_408_and_the_replica_is_not_blamed() {
    let up = Upstream::start("a");
    let service = format!("request_timeout = \"1s\"\n{BLAMED_AT_ONCE}");
    let h = Headroom::start(&config(&up, LISTENER, &service));
    let (mut send, _conn) = h2c_connect(h.addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let req = Request::post("http://test.local/upload")
        .body(Paced(rx))
        .unwrap();
    tx.send(Bytes::from_static(b"abc")).await.unwrap();
    // Then nothing more, with the stream left open.
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 408);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("request_timeout"));
    drop(tx);
    let h = tokio::task::spawn_blocking(move || {
        assert_no_ejections(&h);
        h
    })
    .await
    .unwrap();
    // The service still answers; a channel without a sender is an empty body.
    let (_, empty) = tokio::sync::mpsc::channel(1);
    let req = Request::get("http://test.local/")
        .body(Paced(empty))
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
    drop(h);
}
