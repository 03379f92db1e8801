//! Peers that are not Redis, or stop halfway: a call ends in an error, never a hang.

use headroom_redis::{Error, Options, Redis, Target};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server that answers whatever it is sent with `reply` (or nothing), keeping the socket open.
async fn fake_server(reply: Option<&'static [u8]>) -> String {
    counting_fake_server(reply).await.0
}

/// [`fake_server`], and how many connections it has accepted.
async fn counting_fake_server(reply: Option<&'static [u8]>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    if let Some(reply) = reply {
                        if socket.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, accepted)
}

fn options() -> Options {
    Options {
        timeout: Duration::from_millis(300),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_server_is_an_error_not_a_hang() {
    let url = fake_server(Some(b"HTTP/1.1 400 Bad Request\r\n\r\n")).await;
    let redis = Redis::new(Target::Standalone(url), options()).unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        redis.query::<String>(&redis::cmd("PING")),
    )
    .await
    .expect("the call hung");
    match r {
        Err(Error::Redis(e)) => assert_eq!(e.kind(), redis::ErrorKind::Parse, "{e}"),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_is_a_timeout_then_the_breaker_opens() {
    let url = fake_server(None).await;
    let redis = Redis::new(Target::Standalone(url), options()).unwrap();
    for _ in 0..3 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            redis.query::<String>(&redis::cmd("PING")),
        )
        .await
        .expect("the call hung");
        assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    }
    let r = redis.query::<String>(&redis::cmd("PING")).await;
    assert!(matches!(r, Err(Error::Unavailable)), "{r:?}");
}

/// How many complete RESP commands (`*n` arrays of `$len` bulk strings) `buf` starts with, and
/// how many bytes they take.
fn complete_commands(buf: &[u8]) -> (usize, usize) {
    fn line(buf: &[u8], at: usize) -> Option<(i64, usize)> {
        let end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        let n = std::str::from_utf8(buf.get(at + 1..end)?)
            .ok()?
            .parse()
            .ok()?;
        Some((n, end + 2))
    }
    let (mut count, mut used) = (0, 0);
    'commands: while let Some((args, mut at)) = line(buf, used) {
        for _ in 0..args {
            let Some((len, start)) = line(buf, at) else {
                break 'commands;
            };
            at = start + len as usize + 2;
            if at > buf.len() {
                break 'commands;
            }
        }
        count += 1;
        used = at;
    }
    (count, used)
}

/// A server that answers `+OK` to every command, except that its first connection goes silent
/// (stays open, answers nothing) once `silence_first` is set: a peer that vanished without a
/// reset, as after a network partition or a moved IP.
async fn half_dead_server(silence_first: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        for n in 0.. {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let silence = silence_first.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(read) = socket.read(&mut chunk).await {
                    if read == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..read]);
                    let (count, used) = complete_commands(&buf);
                    buf.drain(..used);
                    if n == 0 && silence.load(Ordering::Relaxed) {
                        continue;
                    }
                    if socket.write_all(&b"+OK\r\n".repeat(count)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_goes_silent_is_replaced_when_the_breaker_opens() {
    let silence = Arc::new(AtomicBool::new(false));
    let url = half_dead_server(silence.clone()).await;
    let opts = Options {
        breaker_cooldown: Duration::from_millis(100),
        ..options()
    };
    let redis = Redis::new(Target::Standalone(url), opts).unwrap();
    let ping = || async { redis.query::<String>(&redis::cmd("PING")).await };
    assert_eq!(ping().await.unwrap(), "OK");

    silence.store(true, Ordering::Relaxed);
    for _ in 0..3 {
        assert!(matches!(ping().await, Err(Error::Timeout(_))));
    }
    assert!(matches!(ping().await, Err(Error::Unavailable)));
    // The probe must not reuse the silent connection: a new one answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ping().await.is_err() {
        assert!(Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_one_connect_attempt() {
    // The server accepts but never finishes the handshake: every caller waits for the connect.
    let (url, accepted) = counting_fake_server(None).await;
    let opts = Options {
        connect_timeout: Duration::from_secs(5),
        ..options()
    };
    let redis = Redis::new(Target::Standalone(url), opts).unwrap();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let redis = redis.clone();
            tokio::spawn(async move { redis.query::<String>(&redis::cmd("PING")).await })
        })
        .collect();
    for call in calls {
        let r = call.await.unwrap();
        assert!(
            matches!(r, Err(Error::Timeout(_)) | Err(Error::Unavailable)),
            "{r:?}"
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one connect attempt in flight, not one per call"
    );
}
