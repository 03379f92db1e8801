//! `headroom demo-upstream`: a small real HTTP server that answers with its own name.
//! The demo runs three; the end-to-end tests run many, and kill some.
//!
//! Any path answers JSON describing the request (method, path, headers, body size).
//! Query parameters shape one answer: `status=503`, `delay=50` (ms), `bytes=1000` (body size).
//! `/healthz` answers the health status, which `POST /_control/health/503` changes;
//! `/_control/count` tells how many requests were served (health and control excluded).
//! `chunks=N` sends the answer in N body frames of unknown total length (so chunked).
//! `stall_after=N` sends the head (with the full length) and N body bytes, then nothing
//! more while keeping the connection open: an upstream stalled mid-body.
//! For the cache: `header=NAME:VALUE` (repeatable, percent-encoded) adds a response header,
//! `etag=X` sends `ETag: "X"` and answers a matching `If-None-Match` with 304.
//! `--raw-reply TEXT` answers every request with TEXT as is (`\r`, `\n` and `\\` escapes
//! understood), bypassing the HTTP library: for framing an HTTP library would not send.
//! For `headroom bench`'s tests, two shapes of a struggling server: `--concurrency K` serves
//! at most K requests at once (the rest queue), so with `--delay-ms D` its capacity is K/D;
//! `--stall-for S --stall-every P` holds every request that arrives in the first S of each
//! period P until that stall ends, as a stop-the-world pause would.
//! `--h2-only` refuses HTTP/1.1 and speaks h2 with prior knowledge only (like a gRPC server).

use bytes::Bytes;
use clap::Args as ClapArgs;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Address to bind; port 0 lets the OS pick (the address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: String,
    /// Name to answer with.
    #[arg(long, default_value = "upstream")]
    name: String,
    /// Delay before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// CPU spent on every answer, in milliseconds (a busy loop on the replica's one thread:
    /// a CPU-bound app, for the autoscaler's benchmark).
    #[arg(long, default_value_t = 0)]
    cpu_ms: u64,
    /// Share of requests answered 500 (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Serve at most this many requests at once; the others wait their turn (0: no limit).
    #[arg(long, default_value_t = 0)]
    concurrency: usize,
    /// Length of each stall (with --stall-every), e.g. 500ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    stall_for: Option<Duration>,
    /// Period of the stalls, counted from start, e.g. 2s.
    #[arg(long, value_parser = humantime::parse_duration, requires = "stall_for")]
    stall_every: Option<Duration>,
    /// Speak only h2 with prior knowledge (HTTP/1.1 requests are refused), as a gRPC backend.
    #[arg(long)]
    h2_only: bool,
    /// Answer every request with these bytes, e.g. 'HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello'
    /// (HTTP/1.1 only; the request head is read first, its body is not).
    #[arg(long)]
    raw_reply: Option<String>,
}

/// `\r`, `\n` and `\\` in `text` become CR, LF and a backslash.
fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('r')) => out.push(b'\r'),
            ('\\', Some('n')) => out.push(b'\n'),
            ('\\', Some('\\')) => out.push(b'\\'),
            _ => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
        }
        chars.next();
    }
    out
}

/// `--raw-reply`: reads request heads and answers each with `reply`, until the peer closes.
async fn raw_replies(mut tcp: tokio::net::TcpStream, reply: Arc<Vec<u8>>) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            got.drain(..end + 4);
            if tcp.write_all(&reply).await.is_err() {
                return;
            }
        }
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

struct State {
    name: String,
    delay: Duration,
    cpu: Duration,
    error_rate: f64,
    health: AtomicU16,
    served: AtomicU64,
    /// `--concurrency`: one permit per request being served.
    slots: Option<tokio::sync::Semaphore>,
    /// `--stall-for` and `--stall-every`, with the instant the periods count from.
    stall: Option<(Duration, Duration, tokio::time::Instant)>,
}

impl State {
    /// How long a request arriving now waits for the current stall to end (zero outside one).
    fn stall_left(&self) -> Duration {
        let Some((length, period, since)) = self.stall else {
            return Duration::ZERO;
        };
        let period_ns = period.as_nanos().max(1);
        let into = Duration::from_nanos((since.elapsed().as_nanos() % period_ns) as u64);
        length.saturating_sub(into)
    }
}

pub fn run(args: Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo-upstream: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&args.bind).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("demo-upstream: cannot bind {}: {e}", args.bind);
                return ExitCode::FAILURE;
            }
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        println!("listening on {addr}");
        let _ = std::io::stdout().flush();
        let state = Arc::new(State {
            name: args.name,
            delay: Duration::from_millis(args.delay_ms),
            cpu: Duration::from_millis(args.cpu_ms),
            error_rate: args.error_rate,
            health: AtomicU16::new(200),
            served: AtomicU64::new(0),
            slots: (args.concurrency > 0).then(|| tokio::sync::Semaphore::new(args.concurrency)),
            stall: args.stall_for.map(|s| {
                (
                    s,
                    args.stall_every.unwrap_or(s * 2),
                    tokio::time::Instant::now(),
                )
            }),
        });
        let raw_reply = args.raw_reply.as_deref().map(|t| Arc::new(unescape(t)));
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            if let Some(reply) = &raw_reply {
                tokio::spawn(raw_replies(tcp, reply.clone()));
                continue;
            }
            let state = state.clone();
            let h2_only = args.h2_only;
            tokio::spawn(async move {
                let svc = service_fn(move |req| answer(req, state.clone()));
                let b = auto::Builder::new(TokioExecutor::new());
                let _ = if h2_only {
                    // (http2_only is ignored by serve_connection_with_upgrades.)
                    b.http2_only()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await
                } else {
                    b.serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                        .await
                };
            });
        }
    })
}

/// A response body, whole (with a length) or in pieces (length unknown: sent chunked).
struct Answer {
    /// Frames still to send, last first.
    frames: Vec<Bytes>,
    length: Option<u64>,
    /// After the frames, nothing more, ever (`stall_after`).
    stall: bool,
}

impl Answer {
    fn whole(body: String) -> Answer {
        let length = Some(body.len() as u64);
        Answer {
            frames: vec![Bytes::from(body)],
            length,
            stall: false,
        }
    }

    /// The first `sent` bytes of `body` under its full length, then a stall.
    fn stalled_after(body: String, sent: usize) -> Answer {
        let length = Some(body.len() as u64);
        let mut bytes = Bytes::from(body);
        bytes.truncate(sent);
        Answer {
            frames: vec![bytes],
            length,
            stall: true,
        }
    }

    fn in_pieces(body: String, n: usize) -> Answer {
        let bytes = Bytes::from(body);
        let size = bytes.len().div_ceil(n.max(1)).max(1);
        let mut frames: Vec<Bytes> = (0..bytes.len())
            .step_by(size)
            .map(|i| bytes.slice(i..(i + size).min(bytes.len())))
            .collect();
        frames.reverse();
        Answer {
            frames,
            length: None,
            stall: false,
        }
    }
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.frames.pop() {
            Some(b) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
            // Never woken: the connection stays open with the body unfinished.
            None if self.stall => std::task::Poll::Pending,
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && !self.stall
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.length {
            Some(n) => http_body::SizeHint::with_exact(n),
            None => http_body::SizeHint::default(),
        }
    }
}

fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// Answers an upgrade request with 101, then writes its name and a newline and echoes every
/// byte back until the client closes its side.
fn switch_to_echo(
    req: &mut Request<Incoming>,
    protocol: http::HeaderValue,
    name: String,
) -> Response<Answer> {
    let on = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on.await else { return };
        let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
        if w.write_all(format!("{name}\n").as_bytes()).await.is_ok() {
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
        let _ = w.shutdown().await;
    });
    let mut r = Response::new(Answer::whole(String::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut().insert(http::header::UPGRADE, protocol);
    r.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    r
}

async fn answer(
    mut req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Answer>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let reply = |status: u16, body: String| {
        let mut r = Response::new(Answer::whole(body));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        r.headers_mut().insert(
            "x-replica",
            state
                .name
                .parse()
                .unwrap_or(http::HeaderValue::from_static("?")),
        );
        r
    };
    if path == "/healthz" {
        let code = state.health.load(Relaxed);
        return Ok(reply(
            code,
            format!("{}\n", if code < 400 { "ok" } else { "unhealthy" }),
        ));
    }
    if let Some(code) = path.strip_prefix("/_control/health/") {
        state.health.store(code.parse().unwrap_or(200), Relaxed);
        return Ok(reply(200, "set\n".into()));
    }
    if path == "/_control/count" {
        return Ok(reply(200, format!("{}\n", state.served.load(Relaxed))));
    }
    state.served.fetch_add(1, Relaxed);
    if let Some(protocol) = req.headers().get(http::header::UPGRADE).cloned() {
        return Ok(switch_to_echo(&mut req, protocol, state.name.clone()));
    }
    let query = req.uri().query().map(str::to_owned);
    let q = query.as_deref();
    let delay = query_param(q, "delay")
        .and_then(|d| d.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(state.delay);
    if !state.cpu.is_zero() {
        // Busy on purpose: the thread serves nothing else meanwhile, as a CPU-bound app's.
        let until = std::time::Instant::now() + state.cpu;
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
    let mut status: u16 = query_param(q, "status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    if state.error_rate > 0.0 && fastrand::f64() < state.error_rate {
        status = 500;
    }
    let pad: usize = query_param(q, "bytes")
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    let (parts, body) = req.into_parts();
    let body_bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let stall = state.stall_left();
    if !stall.is_zero() {
        tokio::time::sleep(stall).await;
    }
    let _slot = match &state.slots {
        Some(s) => s.acquire().await.ok(),
        None => None,
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::Value::from(v.to_str().unwrap_or("?")),
            )
        })
        .collect();
    let mut body = serde_json::json!({
        "replica": state.name,
        "method": parts.method.as_str(),
        "path": path,
        "query": q,
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": body_bytes,
    })
    .to_string();
    if pad > 0 {
        body = "x".repeat(pad);
    } else {
        body.push('\n');
    }
    let chunks: usize = query_param(q, "chunks")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let stall_after: Option<usize> = query_param(q, "stall_after").and_then(|n| n.parse().ok());
    let mut r = reply(status, String::new());
    *r.body_mut() = if let Some(n) = stall_after {
        Answer::stalled_after(body, n)
    } else if chunks > 0 {
        Answer::in_pieces(body, chunks)
    } else {
        Answer::whole(body)
    };
    if pad == 0 {
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
    }
    shape_for_caches(q, &parts.headers, &mut r);
    Ok(r)
}

/// For the cache's tests: `header=NAME:VALUE` (repeatable, percent-encoded) adds a response
/// header; `etag=X` sends `ETag: "X"` and answers a matching `If-None-Match` with 304.
fn shape_for_caches(q: Option<&str>, req: &http::HeaderMap, r: &mut Response<Answer>) {
    let Some(q) = q else { return };
    for kv in q.split('&') {
        let Some(v) = kv.strip_prefix("header=") else {
            continue;
        };
        let v = percent_decode(v);
        if let Some((name, value)) = v.split_once(':') {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                http::HeaderValue::from_str(value.trim()),
            ) {
                r.headers_mut().append(n, v);
            }
        }
    }
    if let Some(tag) = query_param(Some(q), "etag") {
        let etag = format!("\"{tag}\"");
        let matches = req
            .get(http::header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().trim_start_matches("W/") == etag)
            });
        if let Ok(v) = http::HeaderValue::from_str(&etag) {
            r.headers_mut().insert(http::header::ETAG, v);
        }
        if matches {
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            *r.body_mut() = Answer::whole(String::new());
            r.headers_mut().remove(http::header::CONTENT_TYPE);
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => match std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(c) => {
                    out.push(c);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
