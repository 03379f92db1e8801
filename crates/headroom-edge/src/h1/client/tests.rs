//! The client against real sockets on loopback: framing, pooling and timeouts.

use super::*;
use bytes::Bytes;
use headroom_telemetry::{Counter, Registry};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A one-connection server: reads one request head (and `body` more bytes), answers
/// `reply` in pieces of `piece` bytes, then closes if `close`. Returns what it read.
async fn server(
    reply: &'static [u8],
    piece: usize,
    close: bool,
    body: usize,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n")
            || got.len() < got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4 + body
        {
            let n = s.read(&mut b).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&b[..n]);
        }
        for part in reply.chunks(piece) {
            s.write_all(part).await.unwrap();
            s.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
        if !close {
            // Hold the connection open until the client is done with it.
            let _ = s.read(&mut b).await;
        }
        got
    });
    (addr, task)
}

/// A service's read timeout of `limit`, and the counter its stalls go to.
fn read_timeout(limit: Duration) -> (Arc<ReadTimeout>, Arc<Counter>) {
    let stalls = Arc::new(Counter::default());
    let rt = ReadTimeout::new(limit, "s".into(), stalls.clone());
    (Arc::new(rt), stalls)
}

/// Sends a GET for `/` on `conn` with the given timeouts.
async fn get(
    conn: Conn,
    r: &Arc<Replica>,
    request_timeout: Duration,
    rt: &Arc<ReadTimeout>,
) -> Result<Response<ResponseBody>, Error> {
    let head = RequestHead {
        method: &Method::GET,
        uri: &Uri::from_static("/"),
        headers: &HeaderMap::new(),
    };
    conn.send(head, UpstreamBody::Empty, attempt(r, request_timeout, rt))
        .await
}

fn attempt<'a>(
    r: &'a Arc<Replica>,
    request_timeout: Duration,
    rt: &'a Arc<ReadTimeout>,
) -> Attempt<'a> {
    Attempt {
        replica: r,
        max_idle: 8,
        request_timeout,
        read_timeout: rt,
    }
}

fn replica(addr: std::net::SocketAddr) -> Arc<Replica> {
    Arc::new(Replica::new(
        "s",
        "r",
        addr,
        1,
        std::time::Duration::from_millis(1),
        1,
        &Registry::new(),
    ))
}

/// Sends one request through a fresh connection; returns the status and body (or the
/// error) and the bytes the server received.
async fn exchange(
    method: Method,
    body: UpstreamBody,
    reply: &'static [u8],
    piece: usize,
    close: bool,
) -> (Result<(StatusCode, Vec<u8>), String>, Vec<u8>) {
    let body_len = match &body {
        UpstreamBody::Full(Some(b)) => b.len(),
        _ => 0,
    };
    let (addr, srv) = server(reply, piece, close, body_len).await;
    let r = replica(addr);
    let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let uri: Uri = "/x?y=1".parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("up"));
    headers.insert("content-length", HeaderValue::from_static("999"));
    let head = RequestHead {
        method: &method,
        uri: &uri,
        headers: &headers,
    };
    let (rt, _) = read_timeout(Duration::from_secs(10));
    let to = attempt(&r, Duration::from_secs(10), &rt);
    let result = match conn.send(head, body, to).await {
        Ok(resp) => {
            let status = resp.status();
            match resp.into_body().collect().await {
                Ok(b) => Ok((status, b.to_bytes().to_vec())),
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    r.pools.clear();
    (result, srv.await.unwrap())
}

#[tokio::test]
async fn the_request_head_is_written_and_a_content_length_body_read() {
    let (res, got) = exchange(
        Method::GET,
        UpstreamBody::Empty,
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        3,
        false,
    )
    .await;
    assert_eq!(res.unwrap(), (StatusCode::OK, b"hello".to_vec()));
    let req = String::from_utf8(got).unwrap();
    assert!(
        req.starts_with("GET /x?y=1 HTTP/1.1\r\nhost: up\r\n\r\n"),
        "{req:?}"
    );
}

#[tokio::test]
async fn a_chunked_body_arriving_in_pieces_is_decoded() {
    let reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
    for piece in [1, 7, 200] {
        let (res, _) = exchange(Method::GET, UpstreamBody::Empty, reply, piece, false).await;
        assert_eq!(
            res.unwrap(),
            (StatusCode::OK, b"hello world".to_vec()),
            "piece {piece}"
        );
    }
}

#[tokio::test]
async fn random_chunkings_and_read_splits_decode_to_the_same_body() {
    let mut rng = fastrand::Rng::with_seed(7);
    for case in 0..40 {
        let body: Vec<u8> = (0..rng.usize(0..5000))
            .map(|_| rng.alphanumeric() as u8)
            .collect();
        let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let mut at = 0;
        while at < body.len() {
            let n = rng.usize(1..=700).min(body.len() - at);
            let ext = if rng.bool() { ";x=y" } else { "" };
            wire.extend_from_slice(format!("{n:X}{ext}\r\n").as_bytes());
            wire.extend_from_slice(&body[at..at + n]);
            wire.extend_from_slice(b"\r\n");
            at += n;
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        let wire: &'static [u8] = Box::leak(wire.into_boxed_slice());
        let piece = rng.usize(1..300);
        let (res, _) = exchange(Method::GET, UpstreamBody::Empty, wire, piece, false).await;
        assert_eq!(res.unwrap().1, body, "case {case}, piece {piece}");
    }
}

#[tokio::test]
async fn a_body_without_length_is_read_until_close() {
    let (res, _) = exchange(
        Method::GET,
        UpstreamBody::Empty,
        b"HTTP/1.1 200 OK\r\n\r\nuntil close",
        4,
        true,
    )
    .await;
    assert_eq!(res.unwrap(), (StatusCode::OK, b"until close".to_vec()));
}

#[tokio::test]
async fn head_204_and_304_have_no_body() {
    let (res, _) = exchange(
        Method::HEAD,
        UpstreamBody::Empty,
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
        100,
        false,
    )
    .await;
    assert_eq!(res.unwrap(), (StatusCode::OK, vec![]));
    let (res, _) = exchange(
        Method::GET,
        UpstreamBody::Empty,
        b"HTTP/1.1 204 No Content\r\n\r\n",
        100,
        false,
    )
    .await;
    assert_eq!(res.unwrap(), (StatusCode::NO_CONTENT, vec![]));
    let (res, _) = exchange(
        Method::GET,
        UpstreamBody::Empty,
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
        100,
        false,
    )
    .await;
    assert_eq!(res.unwrap(), (StatusCode::NOT_MODIFIED, vec![]));
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
    let (res, _) = exchange(Method::GET, UpstreamBody::Empty, reply, 5, false).await;
    assert_eq!(res.unwrap(), (StatusCode::CREATED, b"ok".to_vec()));
}

#[tokio::test]
async fn request_bodies_are_framed_by_the_client_not_the_caller() {
    let (res, got) = exchange(
        Method::PUT,
        UpstreamBody::Full(Some(Bytes::from_static(b"abc"))),
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        100,
        false,
    )
    .await;
    assert_eq!(res.unwrap(), (StatusCode::OK, vec![]));
    let req = String::from_utf8(got).unwrap();
    assert!(req.contains("content-length: 3\r\n\r\nabc"), "{req:?}");
    assert!(
        !req.contains("999"),
        "the caller's Content-Length is replaced: {req:?}"
    );
    let (_, got) = exchange(
        Method::POST,
        UpstreamBody::Empty,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        100,
        false,
    )
    .await;
    assert!(String::from_utf8(got)
        .unwrap()
        .contains("content-length: 0\r\n"));
}

#[tokio::test]
async fn broken_responses_are_errors() {
    let (res, _) = exchange(Method::GET, UpstreamBody::Empty, b"", 1, true).await;
    assert!(res.unwrap_err().contains("closed before a response"));
    let (res, _) = exchange(
        Method::GET,
        UpstreamBody::Empty,
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        100,
        true,
    )
    .await;
    assert!(res.unwrap_err().contains("closed mid-body"));
    let (res, _) = exchange(
        Method::GET,
        UpstreamBody::Empty,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        100,
        false,
    )
    .await;
    assert!(res.unwrap_err().contains("chunk size"));
    let (res, _) = exchange(
        Method::GET,
        UpstreamBody::Empty,
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        100,
        false,
    )
    .await;
    assert!(res.unwrap_err().contains("conflicting Content-Length"));
}

#[tokio::test]
async fn only_clean_keep_alive_connections_return_to_the_pool() {
    async fn pooled_after(reply: &'static [u8], close: bool) -> usize {
        let (addr, srv) = server(reply, 100, close, 0).await;
        let r = replica(addr);
        let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
        let (rt, _) = read_timeout(Duration::from_secs(10));
        let resp = get(conn, &r, Duration::from_secs(10), &rt).await.unwrap();
        let _ = resp.into_body().collect().await;
        let n = r.pools.idle_count();
        r.pools.clear();
        let _ = srv.await;
        n
    }
    assert_eq!(
        pooled_after(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await,
        1
    );
    assert_eq!(
        pooled_after(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            false
        )
        .await,
        0
    );
    assert_eq!(
        pooled_after(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await,
        0
    );
    assert_eq!(pooled_after(b"HTTP/1.1 200 OK\r\n\r\nok", true).await, 0);
}

#[tokio::test]
async fn a_malformed_response_is_an_error_and_its_connection_is_not_pooled() {
    for reply in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    ] {
        let (addr, srv) = server(reply, 100, true, 0).await;
        let r = replica(addr);
        let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
        let (rt, _) = read_timeout(Duration::from_secs(10));
        let err = get(conn, &r, Duration::from_secs(10), &rt)
            .await
            .expect_err("malformed");
        assert!(matches!(err, Error::Malformed(_)), "{err}");
        assert_eq!(r.pools.idle_count(), 0);
        let _ = srv.await;
    }
}

/// An upstream that sends its head and 10 of 100 body bytes, then nothing more while
/// keeping the connection open.
async fn stalling_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut b = [0u8; 4096];
        let _ = s.read(&mut b).await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        // Hold the connection until the client drops it.
        while s.read(&mut b).await.is_ok_and(|n| n > 0) {}
    });
    (addr, task)
}

#[tokio::test(start_paused = true)]
async fn a_body_that_pauses_past_read_timeout_is_cut_off_counted_and_not_pooled() {
    let (addr, srv) = stalling_server().await;
    let r = replica(addr);
    let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let (rt, stalls) = read_timeout(Duration::from_secs(3));
    let resp = get(conn, &r, Duration::from_secs(30), &rt).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"0123456789");
    // Bounded, so that without a read timeout the test fails instead of waiting forever.
    let err = tokio::time::timeout(Duration::from_secs(600), body.frame())
        .await
        .expect("the body ends within read_timeout")
        .unwrap()
        .expect_err("cut off");
    assert!(err.is::<crate::body::UpstreamStalled>(), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(stalls.get(), 1);
    assert!(body.frame().await.is_none(), "the connection is gone");
    assert_eq!(r.pools.idle_count(), 0);
    srv.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_upstream_that_takes_no_request_bytes_times_out_after_request_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    // Accepts, never reads.
    let srv = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(s);
    });
    let r = replica(addr);
    let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let (rt, _) = read_timeout(Duration::from_secs(60));
    let head = RequestHead {
        method: &Method::PUT,
        uri: &Uri::from_static("/"),
        headers: &HeaderMap::new(),
    };
    // More than any socket buffers hold.
    let body = UpstreamBody::Full(Some(Bytes::from(vec![b'x'; 64 << 20])));
    let started = tokio::time::Instant::now();
    let send = conn.send(head, body, attempt(&r, Duration::from_secs(5), &rt));
    let err = tokio::time::timeout(Duration::from_secs(600), send)
        .await
        .expect("bounded by request_timeout")
        .expect_err("the upstream took nothing");
    assert!(matches!(err, Error::TimedOut), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    srv.abort();
}

#[tokio::test(start_paused = true)]
async fn request_timeout_bounds_each_write_not_the_whole_upload() {
    // The upstream reads 64 KiB a second: a 2 MiB upload takes half a minute, each pause a
    // second, and the response comes 1 s after the last byte: all within a 5 s timeout.
    // Small socket buffers on both sides, so writes wait for the upstream's reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(16 << 10).unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let l = sock.listen(8).unwrap();
    let addr = l.local_addr().unwrap();
    const BODY: usize = 2 << 20;
    let srv = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = 0;
        let mut b = vec![0u8; 64 << 10];
        while got < BODY {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let n = s.read(&mut b).await.unwrap();
            assert!(n > 0);
            got += n;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await
            .unwrap();
        got
    });
    let r = replica(addr);
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_send_buffer_size(16 << 10).unwrap();
    let conn = Conn::new(sock.connect(addr).await.unwrap());
    let (rt, _) = read_timeout(Duration::from_secs(60));
    let head = RequestHead {
        method: &Method::PUT,
        uri: &Uri::from_static("/"),
        headers: &HeaderMap::new(),
    };
    let body = UpstreamBody::Full(Some(Bytes::from(vec![b'x'; BODY])));
    let started = tokio::time::Instant::now();
    let resp = conn
        .send(head, body, attempt(&r, Duration::from_secs(5), &rt))
        .await
        .expect("each pause is within request_timeout");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        started.elapsed() > Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let got = srv.await.unwrap();
    assert!(got >= BODY);
    r.pools.clear();
}

#[tokio::test(start_paused = true)]
async fn request_timeout_runs_from_the_last_request_byte_to_the_response_head() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    // Answers 4 s after the request: within a 5 s timeout, then past a 3 s one.
    let srv = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut b = [0u8; 4096];
        loop {
            let n = s.read(&mut b).await.unwrap();
            if n == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_secs(4)).await;
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let r = replica(addr);
    let (rt, _) = read_timeout(Duration::from_secs(60));
    let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let resp = get(conn, &r, Duration::from_secs(5), &rt).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let Some(crate::pool::Sender::Raw(conn)) = r.pools.take(Duration::from_secs(60)) else {
        panic!("the connection was pooled");
    };
    let started = tokio::time::Instant::now();
    let err = get(conn, &r, Duration::from_secs(3), &rt)
        .await
        .expect_err("too slow");
    assert!(matches!(err, Error::TimedOut), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    srv.abort();
}
