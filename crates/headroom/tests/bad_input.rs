//! Malformed and hostile HTTP: each gets the right 4xx, and the connection is closed where
//! the protocol says so.

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::Duration;

fn start(listener_extra: &str) -> (Headroom, Upstream) {
    let up = Upstream::start("a");
    (Headroom::start(&one_route_config(&up, listener_extra)), up)
}

fn raw(h: &Headroom, bytes: &[u8]) -> (Response, bool) {
    let mut c = h.client();
    let r = c.send_raw(bytes).expect("a response");
    let closed = c.is_closed();
    (r, closed)
}

#[test]
fn a_malformed_request_line_is_a_400_and_closes() {
    let (h, _up) = start("");
    let (r, closed) = raw(&h, b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 400);
    assert!(closed);
    let (r, closed) = raw(&h, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n");
    assert_eq!(r.status, 400);
    assert!(closed);
}

#[test]
fn a_header_section_over_the_limit_is_a_431() {
    let (h, _up) = start("max_header_bytes = \"8KiB\"");
    let big = "x".repeat(16 << 10);
    let (r, closed) = raw(
        &h,
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 431);
    assert!(closed);
    // Just under the limit is fine.
    let ok = "x".repeat(6 << 10);
    assert_eq!(
        h.client().request("GET", "/", &[("X-Ok", &ok)], b"").status,
        200
    );
}

#[test]
fn a_body_over_the_limit_is_a_413() {
    let (h, up) = start("max_body_bytes = 1024");
    let r = h.client().request("POST", "/", &[], &[b'a'; 2048]);
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "body_too_large");
    assert_eq!(up.served(), 0, "the upstream never saw it");
    // A chunked body has no length up front: it is cut off when it passes the limit.
    let mut body = Vec::new();
    for _ in 0..4 {
        body.extend_from_slice(b"200\r\n");
        body.extend_from_slice(&[b'b'; 512]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut req = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&body);
    let (r, _) = raw(&h, &req);
    assert_eq!(r.status, 413);
    assert_eq!(
        h.client().request("POST", "/", &[], &[b'a'; 1000]).status,
        200
    );
}

#[test]
fn conflicting_content_lengths_are_a_400_and_close() {
    let (h, up) = start("");
    let (r, closed) = raw(
        &h,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    );
    assert_eq!(r.status, 400);
    assert!(closed);
    let (r, closed) = raw(
        &h,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    );
    assert_eq!(r.status, 400);
    assert!(closed);
    let (r, closed) = raw(
        &h,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    );
    assert_eq!(r.status, 400, "a request whose final coding is not chunked");
    assert!(closed);
    let (r, closed) = raw(
        &h,
        b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 400, "Transfer-Encoding in HTTP/1.0");
    assert!(closed);
    assert_eq!(up.served(), 0);
}

#[test]
fn content_length_with_transfer_encoding_is_a_400_and_closes() {
    let (h, up) = start("");
    // The classic CL.TE attack: the chunked body ends at "0", and "GET /smuggled" would be a
    // second request to a proxy that trusted Content-Length (or the other way round).
    let attack = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut c = h.client();
    let r = c.send_raw(attack).expect("a response");
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("Content-Length and Transfer-Encoding"));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed(), "nothing after the head is read as a request");
    assert_eq!(up.served(), 0, "neither request reached the upstream");
}

#[test]
fn obfuscated_transfer_encodings_and_duplicate_hosts_are_refused() {
    let (h, up) = start("");
    let cases: [(&[u8], u16); 8] = [
        (b"Transfer-Encoding: xchunked\r\n", 400),
        (b"Transfer-Encoding: chunked, chunked\r\n", 400),
        (
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            400,
        ),
        (b"Transfer-Encoding: gzip, chunked\r\n", 501),
        (b"Transfer-Encoding : chunked\r\n", 400),
        (b"Content-Length: +5\r\n", 400),
        (b"Content-Length: 5, 5\r\n", 400),
        (b"Host: y\r\n", 400),
    ];
    for (extra, status) in cases {
        let mut req = b"POST / HTTP/1.1\r\nHost: x\r\n".to_vec();
        req.extend_from_slice(extra);
        req.extend_from_slice(b"\r\n0\r\n\r\n");
        let (r, closed) = raw(&h, &req);
        let what = String::from_utf8_lossy(extra);
        assert_eq!(r.status, status, "{what}");
        assert!(closed, "{what}");
    }
    assert_eq!(up.served(), 0);
    // A chunk size the strict parser refuses ("+5" is hex to a lenient one). The body is
    // streamed, so the upstream has its head already; the replica is not blamed for the
    // client's body, even past the 5 consecutive failures that would eject it.
    for _ in 0..6 {
        let (r, closed) = raw(
            &h,
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
        );
        assert_eq!(r.status, 400);
        assert!(r.json()["message"].as_str().unwrap().contains("chunk size"));
        assert!(closed);
    }
    assert_no_ejections(&h);
    assert_eq!(h.client().get("/").status, 200);
}

#[test]
fn other_http_versions_and_expectations_are_refused() {
    let (h, up) = start("");
    let (r, closed) = raw(&h, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 505);
    assert!(closed);
    let (r, closed) = raw(&h, b"GET / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n");
    assert_eq!(r.status, 417);
    assert!(closed);
    let (r, closed) = raw(&h, b"GET nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 400, "a target that is neither a path nor a URL");
    assert!(closed);
    assert_eq!(up.served(), 0);
}

#[test]
fn an_http11_request_without_host_is_a_400() {
    let (h, _up) = start("");
    let (r, closed) = raw(&h, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 400);
    assert!(closed);
}

#[test]
fn a_client_too_slow_to_send_headers_is_disconnected() {
    let (h, _up) = start("header_timeout = \"500ms\"");
    let mut c = h.client();
    c.stream()
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // No more bytes: the gateway must close (the client's 20 s read timeout is only a safety net).
    let mut buf = Vec::new();
    let res = c.stream().read_to_end(&mut buf);
    assert!(res.is_ok(), "closed cleanly: {res:?}");
    let text = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

#[test]
fn the_connection_limit_holds_new_connections_until_one_closes() {
    let (h, _up) = start("max_connections = 2");
    let mut c1 = h.client();
    let mut c2 = h.client();
    assert_eq!(c1.get("/").status, 200);
    assert_eq!(c2.get("/").status, 200);
    assert_eq!(
        h.metric("headroom_open_connections{listener=\"public\"}"),
        2.0
    );
    let mut c3 = h.client();
    c3.stream()
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    c3.stream()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 1];
    let err = c3
        .stream()
        .read(&mut b)
        .expect_err("not served while two are open");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    drop(c1);
    c3.stream()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let r = c3.read_response().unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let (h, _up) = start("header_timeout = \"500ms\"");
    let mut c = h.client();
    assert_eq!(c.get("/").status, 200);
    // Nothing more is sent: the gateway closes the idle connection (20 s read timeout = safety net).
    assert!(c.is_closed());
}

#[test]
fn a_client_that_stalls_mid_body_gets_408_and_the_replica_is_not_blamed() {
    let (h, _up) = start("body_timeout = \"300ms\"");
    // POST streams its body upstream; PUT (idempotent, small) is buffered for replay first.
    // Both stall after 3 of 10 bytes.
    for _ in 0..3 {
        for method in ["POST", "PUT"] {
            let mut c = h.client();
            let r = c
                .send_raw(
                    format!("{method} / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
                        .as_bytes(),
                )
                .expect("a response");
            assert_eq!(r.status, 408, "{method}");
            assert_eq!(r.json()["error"], "request_timeout");
            assert!(c.is_closed(), "{method}");
        }
    }
    assert_no_ejections(&h);
    assert_eq!(h.client().get("/").status, 200);
}

#[test]
fn refused_requests_are_counted_before_routing_and_logged() {
    let (h, _up) = start("");
    for _ in 0..3 {
        let (r, _) = raw(&h, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n");
        assert_eq!(r.status, 400);
        // The access log has a line with the id the client was given.
        let id = r.json()["request_id"].as_str().unwrap().to_string();
        let line = h
            .stdout
            .wait_for(&id, Duration::from_secs(10))
            .expect("an access log line for the refused request");
        let j: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(j["status"], 400);
        assert_eq!(j["route"], "");
    }
    assert_eq!(
        h.metric("headroom_requests_total{route=\"\",service=\"\",class=\"4xx\"}"),
        3.0
    );
}

/// Framing the request parser refuses is refused from an upstream too: the client gets a
/// 502 instead of a body split where the upstream did not mean it, and the replica takes
/// a passive failure (here its first one ejects it).
#[test]
fn a_response_with_malformed_framing_is_a_502_and_a_passive_failure() {
    let cases = [
        "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!",
        "HTTP/1.1 200 OK\r\nContent-Length: 5 5\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    ];
    for reply in cases {
        let up = Upstream::start_with("raw", &["--raw-reply", reply]);
        let cfg = one_route_config(&up, "").replace(
            "[service.s]\n",
            "[service.s]\nretry = { attempts = 1 }\noutlier = { consecutive_failures = 1, max_ejected = \"100%\" }\n",
        );
        let h = Headroom::start(&cfg);
        let r = h.get("/");
        assert_eq!(r.status, 502, "{reply:?}: {}", r.text());
        assert_eq!(r.json()["error"], "upstream_failed", "{reply:?}");
        assert!(r.json()["message"]
            .as_str()
            .unwrap()
            .contains("malformed response"));
        let ejections = format!(
            "headroom_replica_ejections_total{{service=\"s\",replica=\"{}\"}}",
            up.addr
        );
        h.wait_metric(&ejections, 1.0);
        assert_eq!(h.get("/").json()["error"], "no_healthy_replica");
    }
}
