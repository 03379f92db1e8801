//! The shared cache tier: several headroom instances in front of one Redis (a real
//! redis-server on loopback, or a six-node Redis Cluster) share hits and purges, and a
//! Redis that dies, stalls or answers garbage costs no request.

mod common;
use common::*;
use headroom_redis::testing::{RedisCluster, RedisServer};
use std::time::{Duration, Instant};

const WRITES: &str = "headroom_cache_redis_writes_total{tier=\"redis\"}";
const P: &str = "/shared?header=cache-control:max-age%3D300";

fn config(up: &Upstream, redis: &str, extra: &str) -> String {
    format!(
        "{pre}[[route]]\nname = \"app\"\nservice = \"s\"\n[route.cache]\n\n[service.s]\nreplicas = [\"{addr}\"]\n\n[cache]\n{extra}\n[cache.redis]\n{redis}\ntimeout = \"200ms\"\n",
        pre = preamble(),
        addr = up.addr,
    )
}

fn standalone(r: &RedisServer) -> String {
    format!("url = \"{}\"", r.url())
}

/// Waits (bounded) until `f` holds: the Redis write behind a miss is in the background.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_instances_share_hits_through_redis() {
    let redis = RedisServer::start();
    let up = Upstream::start("u");
    let a = Headroom::start(&config(&up, &standalone(&redis), ""));
    let b = Headroom::start(&config(&up, &standalone(&redis), ""));
    let first = a.get(P);
    assert_eq!(first.header("x-cache"), Some("MISS"));
    // The write to Redis is in the background: b asks once it has landed.
    a.wait_metric(WRITES, 1.0);
    assert_eq!(b.get(P).header("x-cache"), Some("HIT"));
    assert_eq!(up.served(), 1, "b's hit came from Redis, not the upstream");
    assert!(b.metric("headroom_cache_redis_hits_total{tier=\"redis\"}") >= 1.0);
    let hit = b.get(P);
    assert_eq!(hit.body, first.body);
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!(age < 300, "the Age carried over is the entry's, not reset");
}

#[test]
fn a_purge_through_one_instance_is_seen_by_every_instance() {
    let redis = RedisServer::start();
    let up = Upstream::start("u");
    let a = Headroom::start(&config(&up, &standalone(&redis), ""));
    let b = Headroom::start(&config(&up, &standalone(&redis), ""));
    a.get(P);
    a.wait_metric(WRITES, 1.0);
    assert_eq!(
        b.get(P).header("x-cache"),
        Some("HIT"),
        "b holds it, from Redis"
    );
    let served = up.served();
    let r = a.admin_post(
        "/cache/purge",
        r#"{"url": "/shared?header=cache-control:max-age%3D300"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // b learns of it from the purge stream (polled every 250 ms): within a second.
    let start = Instant::now();
    eventually("b stops answering the purged URL from its memory", || {
        b.get(P).header("x-cache") == Some("MISS")
    });
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(up.served() > served);
}

#[test]
fn a_new_instance_never_serves_from_redis_an_entry_purged_before_it_started() {
    let redis = RedisServer::start();
    let up = Upstream::start("u");
    let a = Headroom::start(&config(&up, &standalone(&redis), ""));
    a.get(P);
    a.wait_metric(WRITES, 1.0);
    // More purges of other URLs than one page of the stream, then the one that matters:
    // it lies past the first page a new instance reads.
    for i in 0..600 {
        let r = a.admin_post("/cache/purge", &format!(r#"{{"url": "/other{i}"}}"#));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = a.admin_post(
        "/cache/purge",
        r#"{"url": "/shared?header=cache-control:max-age%3D300"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let xlen = || {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "XLEN", "headroom:purges"])
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    // Published in the background: b starts once all 601 are in the stream.
    eventually("every purge is in the stream", || xlen() == 601);
    let served = up.served();
    // The entry is still in Redis (purges do not rewrite it); b's memory is empty, and it
    // knows of the purge only from the stream.
    let b = Headroom::start(&config(&up, &standalone(&redis), ""));
    let r = b.get(P);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-cache"),
        Some("MISS"),
        "b served the purged entry from Redis"
    );
    assert_eq!(up.served(), served + 1, "b fetched it from the upstream");
}

#[test]
fn when_redis_dies_the_cache_keeps_working_on_memory_with_no_failed_request() {
    let mut redis = RedisServer::start();
    let up = Upstream::start("u");
    let h = Headroom::start(&config(&up, &standalone(&redis), ""));
    h.get(P);
    redis.kill();
    let mut c = h.client();
    for i in 0..200 {
        // Hits from memory, and misses on new URLs that cannot reach Redis.
        let p = if i % 2 == 0 {
            P.to_string()
        } else {
            format!("/new{i}?header=cache-control:max-age%3D60")
        };
        let r = c.get(&p);
        assert_eq!(r.status, 200, "request {i} failed with Redis down");
    }
    assert_eq!(
        h.metric("headroom_cache_redis_breaker_open{tier=\"redis\"}"),
        1.0
    );
    assert!(
        h.metric("headroom_cache_redis_rejected_total{tier=\"redis\"}") > 0.0,
        "the breaker spared the timeout"
    );
    redis.restart();
    eventually("the breaker closes again", || {
        c.get("/again?header=cache-control:max-age%3D60");
        h.metric("headroom_cache_redis_breaker_open{tier=\"redis\"}") == 0.0
    });
}

#[test]
fn garbage_in_redis_is_a_counted_miss_not_an_error() {
    let redis = RedisServer::start();
    let up = Upstream::start("u");
    let a = Headroom::start(&config(&up, &standalone(&redis), ""));
    a.get(P);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &redis.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    eventually("the entry reached Redis", || {
        cli(&["--scan", "--pattern", "headroom:*:*"])
            .lines()
            .count()
            == 1
    });
    for key in cli(&["--scan", "--pattern", "headroom:*:*"]).lines() {
        // A truncated entry: its first 40 bytes only.
        cli(&[
            "EVAL",
            "return redis.call('SET', KEYS[1], string.sub(redis.call('GET', KEYS[1]), 1, 40))",
            "1",
            key,
        ]);
    }
    let b = Headroom::start(&config(&up, &standalone(&redis), ""));
    let r = b.get(P);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert_eq!(
        b.metric("headroom_cache_redis_garbage_total{tier=\"redis\"}"),
        1.0
    );
}

#[test]
fn a_cluster_tier_shares_hits_and_survives_a_master_failover() {
    let mut cluster = RedisCluster::start();
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let redis = format!("cluster = [{}]", urls.join(", "));
    let up = Upstream::start("u");
    let a = Headroom::start(&config(&up, &redis, ""));
    let b = Headroom::start(&config(&up, &redis, ""));
    for i in 0..20 {
        a.get(&format!("/c{i}?header=cache-control:max-age%3D300"));
    }
    eventually("b shares a's hits through the cluster", || {
        (0..20).all(|i| {
            b.get(&format!("/c{i}?header=cache-control:max-age%3D300"))
                .header("x-cache")
                == Some("HIT")
        })
    });
    cluster.kill_master_of(b"headroom:{0}");
    // During and after the failover: every request answered.
    let mut c = a.client();
    for i in 0..100 {
        let r = c.get(&format!("/f{i}?header=cache-control:max-age%3D300"));
        assert_eq!(r.status, 200, "request {i} failed during the failover");
    }
    // After the failover, writes land again and another instance's first request for the
    // URL is a hit from the cluster.
    let fresh = Headroom::start(&config(&up, &redis, ""));
    let mut n = 0;
    eventually("a write after the failover is shared", || {
        n += 1;
        let p = format!("/g{n}?header=cache-control:max-age%3D300");
        let before = a.metric(WRITES);
        a.get(&p);
        let start = Instant::now();
        while a.metric(WRITES) == before && start.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(20));
        }
        a.metric(WRITES) > before && fresh.get(&p).header("x-cache") == Some("HIT")
    });
}

#[test]
fn an_uncompressed_variant_stored_for_any_coding_is_shared_through_redis() {
    let redis = RedisServer::start();
    let up = Upstream::start("u");
    let cfg = config(&up, &standalone(&redis), "")
        .replace("[service.s]", "[route.compress]\n\n[service.s]");
    let a = Headroom::start(&cfg);
    let b = Headroom::start(&cfg);
    let p = "/tiny?bytes=100&header=content-type:text/plain&header=cache-control:max-age%3D300";
    let mut ca = a.client();
    let first = ca.request("GET", p, &[("accept-encoding", "zstd")], b"");
    assert_eq!(first.header("x-cache"), Some("MISS"));
    a.wait_metric(WRITES, 1.0);
    let mut cb = b.client();
    let r = cb.request("GET", p, &[("accept-encoding", "gzip")], b"");
    assert_eq!(
        r.header("x-cache"),
        Some("HIT"),
        "another coding, from Redis"
    );
    assert_eq!(r.body, first.body);
    assert_eq!(up.served(), 1);
}
