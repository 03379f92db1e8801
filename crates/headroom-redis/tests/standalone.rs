//! headroom-redis against a real standalone redis-server: commands, pipelines and scripts, and
//! what a call does when the server is missing, killed, restarted or stalled.

use headroom_redis::testing::RedisServer;
use headroom_redis::{Breaker, Error, Metrics, Options, Redis, Target};
use headroom_telemetry::Registry;
use std::future::Future;
use std::time::{Duration, Instant};

/// Loose enough for a loaded test machine; the stall test uses its own.
const TIMEOUT: Duration = Duration::from_millis(500);
const COOLDOWN: Duration = Duration::from_millis(200);

fn options() -> Options {
    Options {
        timeout: TIMEOUT,
        breaker_cooldown: COOLDOWN,
        ..Options::default()
    }
}

fn client(server: &RedisServer, opts: Options) -> Redis {
    Redis::new(Target::Standalone(server.url()), opts).expect("a valid url")
}

fn metrics(registry: &Registry) -> Metrics {
    Metrics {
        latency: registry.histogram("redis_seconds", "latency", &[]),
        errors: registry.counter("redis_errors_total", "errors", &[]),
        rejected: registry.counter("redis_rejected_total", "rejected", &[]),
        breaker_open: registry.gauge("redis_breaker_open", "open", &[]),
    }
}

async fn get(redis: &Redis, key: &str) -> Result<Option<String>, Error> {
    redis.query(redis::cmd("GET").arg(key)).await
}

async fn set(redis: &Redis, key: &str, value: &str) -> Result<(), Error> {
    redis.query(redis::cmd("SET").arg(key).arg(value)).await
}

/// Retries `f` every 20 ms until it succeeds or 10 s pass; the last error otherwise.
async fn eventually<T, F, Fut>(mut f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_pipelines_and_scripts_work() {
    let server = RedisServer::start();
    let redis = client(&server, options());

    set(&redis, "greeting", "hello").await.unwrap();
    assert_eq!(
        get(&redis, "greeting").await.unwrap().as_deref(),
        Some("hello")
    );

    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("INCR")
        .arg("n")
        .cmd("INCRBY")
        .arg("n")
        .arg(10);
    let (a, b): (i64, i64) = redis.pipeline(&pipe).await.unwrap();
    assert_eq!((a, b), (1, 11));

    let script = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    let n: i64 = redis.script(&script, &[b"n"], &[b"5"]).await.unwrap();
    assert_eq!(n, 16);
    // Flushed from the server's script cache: EVALSHA says NOSCRIPT, the script is loaded again.
    let _: () = redis
        .query(redis::cmd("SCRIPT").arg("FLUSH"))
        .await
        .unwrap();
    let n: i64 = redis.script(&script, &[b"n"], &[b"1"]).await.unwrap();
    assert_eq!(n, 17);

    // Concurrent calls share the one connection (and the futures are Send).
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let redis = redis.clone();
            tokio::spawn(async move {
                redis
                    .query::<i64>(redis::cmd("INCR").arg(format!("c{}", i % 5)))
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let total: i64 = redis
        .script(
            &redis::Script::new(
                "local t = 0 for i = 0, 4 do t = t + redis.call('GET', 'c' .. i) end return t",
            ),
            &[],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(total, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_errors_do_not_open_the_breaker() {
    let server = RedisServer::start();
    let redis = client(&server, options());
    set(&redis, "s", "a string").await.unwrap();
    let failing = redis::Script::new("return redis.error_reply('boom')");
    for _ in 0..5 {
        let e = redis
            .query::<i64>(redis::cmd("LPUSH").arg("s").arg("x"))
            .await
            .unwrap_err();
        assert!(matches!(&e, Error::Redis(_)) && !e.is_unavailable(), "{e}");
        let e = redis.script::<()>(&failing, &[], &[]).await.unwrap_err();
        assert!(e.to_string().contains("boom") && !e.is_unavailable(), "{e}");
        let e = redis
            .query::<i64>(redis::cmd("GET").arg("s"))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Redis(_)) && !e.is_unavailable(),
            "not an i64: {e}"
        );
    }
    assert_eq!(redis.breaker(), Breaker::Closed);
    assert_eq!(get(&redis, "s").await.unwrap().as_deref(), Some("a string"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_fails_fast_then_works_once_it_is_up() {
    let mut server = RedisServer::start();
    server.kill();
    let redis = client(&server, options());

    let e = get(&redis, "k").await.unwrap_err();
    assert!(
        matches!(&e, Error::Redis(r) if r.is_connection_refusal()),
        "a refused connect is returned as such, not waited on: {e:?}"
    );
    assert!(e.is_unavailable());

    server.restart();
    // The same client: the breaker (open by now, or soon) probes, the probe connects.
    eventually(|| set(&redis, "k", "v"))
        .await
        .expect("works once redis is up");
    assert_eq!(get(&redis, "k").await.unwrap().as_deref(), Some("v"));
    assert_eq!(redis.breaker(), Breaker::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_opens_the_breaker_and_a_probe_closes_it_after_restart() {
    let mut server = RedisServer::start();
    let registry = Registry::new();
    let m = metrics(&registry);
    let redis = client(
        &server,
        Options {
            metrics: Some(m.clone()),
            ..options()
        },
    );
    set(&redis, "k", "v").await.unwrap();

    server.kill();
    let mut tried = 0;
    let refused = loop {
        match get(&redis, "k").await {
            Err(Error::Unavailable) => break true,
            Err(e) => {
                assert!(e.is_unavailable(), "a dead server is an outage: {e}");
                tried += 1;
            }
            Ok(v) => panic!("a killed server answered {v:?}"),
        }
        if tried > 10 {
            break false;
        }
    };
    assert!(refused, "the breaker never opened");
    assert_eq!(tried, 3, "breaker_failures consecutive failures open it");
    assert_eq!(redis.breaker(), Breaker::Open);
    assert_eq!(m.breaker_open.get(), 1);
    assert_eq!(m.errors.get(), 3);
    assert_eq!(m.rejected.get(), 1);

    server.restart();
    eventually(|| get(&redis, "k"))
        .await
        .expect("the probe closes the breaker");
    assert_eq!(redis.breaker(), Breaker::Closed);
    assert_eq!(m.breaker_open.get(), 0);
    set(&redis, "k", "again").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_connection_is_replaced_without_the_breaker() {
    let mut server = RedisServer::start();
    // No breaker: only the dropped link being replaced can make calls work again.
    let redis = client(
        &server,
        Options {
            breaker_failures: 0,
            ..options()
        },
    );
    set(&redis, "k", "v").await.unwrap();
    server.restart();
    eventually(|| set(&redis, "k", "w"))
        .await
        .expect("a new connection to the restarted server");
    assert_eq!(get(&redis, "k").await.unwrap().as_deref(), Some("w"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_is_a_timeout_not_a_hang() {
    let mut server = RedisServer::start();
    let timeout = Duration::from_millis(100);
    let redis = client(
        &server,
        Options {
            timeout,
            ..options()
        },
    );
    set(&redis, "k", "v").await.unwrap();

    server.stall();
    // The outer bound only turns a hang into a failure; the call must end with its own timeout.
    let guard = Duration::from_secs(5);
    for _ in 0..3 {
        let r = tokio::time::timeout(guard, get(&redis, "k"))
            .await
            .expect("the call hung");
        assert!(matches!(r, Err(Error::Timeout(t)) if t == timeout), "{r:?}");
    }
    let r = tokio::time::timeout(guard, get(&redis, "k"))
        .await
        .expect("the call hung");
    assert!(
        matches!(r, Err(Error::Unavailable)),
        "three timeouts open the breaker: {r:?}"
    );

    server.resume();
    eventually(|| get(&redis, "k"))
        .await
        .expect("works again once resumed");
    assert_eq!(redis.breaker(), Breaker::Closed);
}
