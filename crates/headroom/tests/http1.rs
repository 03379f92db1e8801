//! The HTTP/1.1 server side: keep-alive, pipelining, HTTP/1.0, 100-continue, HEAD, and what
//! happens to a connection whose request body was never read.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};

fn start() -> (Headroom, Upstream) {
    let up = Upstream::start("a");
    let cfg = format!(
        "{}[[route]]\nname = \"fixed\"\nmatch = {{ path = \"/fixed\" }}\nrespond = {{ status = 200, body = \"fixed body\" }}\n\n\
         [[route]]\nmatch = {{ path_prefix = \"/up\" }}\nservice = \"s\"\n\n[service.s]\nreplicas = [\"{}\"]\n",
        preamble(),
        up.addr
    );
    (Headroom::start(&cfg), up)
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (h, up) = start();
    let mut c = h.client();
    let mut raw = Vec::new();
    for i in 0..5 {
        raw.extend_from_slice(format!("GET /up/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    raw.extend_from_slice(b"POST /up/body HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
    raw.extend_from_slice(b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n");
    c.stream().write_all(&raw).unwrap();
    for i in 0..5 {
        let r = c.read_response().unwrap();
        assert_eq!(r.json()["path"], format!("/up/{i}"));
    }
    let r = c.read_response().unwrap();
    assert_eq!(r.json()["body_bytes"], 3);
    assert_eq!(c.read_response().unwrap().text(), "fixed body");
    assert_eq!(up.served(), 6);
    assert_eq!(
        c.get("/up/again").status,
        200,
        "and the connection stays open"
    );
}

#[test]
fn http10_closes_unless_asked_to_keep_alive() {
    let (h, _up) = start();
    let mut c = h.client();
    let r = c.send_raw(b"GET /up/a HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());

    let mut c = h.client();
    let r = c
        .send_raw(b"GET /up/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    // A body of unknown length cannot be chunked for HTTP/1.0: it ends with the connection.
    let r = c
        .send_raw(b"GET /up/s?chunks=3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("transfer-encoding").is_none());
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.json()["path"], "/up/s");
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let (h, _up) = start();
    let mut c = h.client();
    c.stream()
        .write_all(
            b"PUT /up/upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        )
        .unwrap();
    // Nothing of the body has been sent: the interim response must come first.
    let mut r = BufReader::new(c.stream().try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "\r\n");
    c.stream().write_all(b"hello").unwrap();
    let resp = c.read_response().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["body_bytes"], 5);
    assert!(
        resp.json()["headers"].get("expect").is_none(),
        "the expectation was met here, not forwarded"
    );
}

#[test]
fn a_body_over_the_limit_announced_with_expect_gets_413_without_100() {
    let up = Upstream::start("a");
    let cfg = one_route_config(&up, "max_body_bytes = 100");
    let h = Headroom::start(&cfg);
    let mut c = h.client();
    let r = c
        .send_raw(
            b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
        )
        .unwrap();
    assert_eq!(r.status, 413);
    assert!(c.is_closed());
    assert_eq!(up.served(), 0);
}

#[test]
fn head_responses_carry_the_length_but_no_body() {
    let (h, _up) = start();
    let mut c = h.client();
    let r = c.request("HEAD", "/fixed", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("10"));
    let r = c.request("HEAD", "/up/x?bytes=1234", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.header("content-length").is_some());
    // The connection is still in step: no stray body bytes precede the next response.
    let r = c.get("/fixed");
    assert_eq!(r.text(), "fixed body");
    assert!(r.header("date").is_some(), "a Date header is added");
}

#[test]
fn an_unread_request_body_ends_the_connection_after_the_response() {
    let (h, up) = start();
    let mut c = h.client();
    // No route reads this body: the 404 is sent, then the connection is closed instead of
    // parsing the body as the next request.
    let r = c
        .send_raw(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\nGET /up/smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());
    assert_eq!(up.served(), 0);
    // A body that was read lets the connection carry on.
    let mut c = h.client();
    assert_eq!(c.request("POST", "/up/a", &[], b"xyz").status, 200);
    assert_eq!(c.get("/up/b").status, 200);
}

#[test]
fn a_large_response_streams_through_intact() {
    let (h, _up) = start();
    let mut c = h.client();
    let r = c.get("/up/big?bytes=3000000");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 3_000_000);
    assert!(r.body.iter().all(|&b| b == b'x'));
    // And a large upload, in one piece, beside it.
    let body = vec![b'q'; 2 << 20];
    let r = c.request("POST", "/up/upload", &[], &body);
    assert_eq!(r.json()["body_bytes"], 2 << 20);
}

#[test]
fn a_response_read_in_small_bites_arrives_whole() {
    let (h, _up) = start();
    let mut c = h.client();
    c.stream()
        .write_all(b"GET /up/big?bytes=4000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // 4 MB read 512 bytes at a time: the gateway's writes outrun the reader and back up
    // against full socket buffers, so they complete in parts.
    let mut r = BufReader::with_capacity(512, c.stream().try_clone().unwrap());
    let head = read_head(&mut r);
    assert!(head.contains("content-length: 4000000"), "{head}");
    let mut body = vec![0u8; 4_000_000];
    r.read_exact(&mut body).unwrap();
    assert!(body.iter().all(|&b| b == b'x'));
}

/// Reads a response head (through the blank line) from `r`.
fn read_head(r: &mut impl BufRead) -> String {
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        assert!(
            r.read_line(&mut head).unwrap() > 0,
            "closed in the head: {head}"
        );
    }
    head
}

#[test]
fn an_upgrade_is_tunnelled_both_ways_until_a_side_closes() {
    let (h, up) = start();
    let mut c = h.client();
    // Bytes sent right behind the request, before the 101 arrives, must not be lost.
    c.stream()
        .write_all(
            b"GET /up/ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nearly\n",
        )
        .unwrap();
    let mut r = BufReader::new(c.stream().try_clone().unwrap());
    let head = read_head(&mut r);
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(head.contains("connection: upgrade\r\n"), "{head}");
    assert!(head.contains("upgrade: websocket\r\n"), "{head}");
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "a\n", "the replica's greeting");
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "early\n");
    for msg in ["hello\n", "world\n"] {
        c.stream().write_all(msg.as_bytes()).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, msg);
    }
    assert_eq!(h.metric("headroom_tunnels_open"), 1.0);
    assert_eq!(up.served(), 1);
    // The client closes its side: the replica hears it, closes too, and the tunnel ends.
    c.stream().shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    h.wait_metric("headroom_tunnels_open", 0.0);
}

#[test]
fn an_upgrade_header_without_connection_upgrade_is_a_plain_request() {
    let (h, _up) = start();
    let r = h
        .client()
        .request("GET", "/up/x", &[("Upgrade", "websocket")], b"");
    assert_eq!(r.status, 200);
    assert!(
        r.json()["headers"].get("upgrade").is_none(),
        "hop-by-hop, not forwarded"
    );
}
