//! Rate limits end to end: a real headroom in front of a real upstream, and for shared
//! limits real redis-server processes. GCRA's arithmetic is unit-tested in headroom-guard on
//! paused time; these check what a client sees: 429 with `Retry-After` and the `RateLimit`
//! fields, keys by address, header and route, trusted proxies, dry runs, reloads, and several
//! instances holding one limit through Redis.
//!
//! Limits here are per hour (or per day), so a test's requests all fall well inside one
//! emission interval: nothing depends on how fast the machine runs them.

mod common;
use common::*;
use headroom_redis::testing::RedisServer;
use std::time::{Duration, Instant};

fn limited(up: &Upstream, limits: &str, guard: &str) -> String {
    format!(
        "{pre}[[route]]\nname = \"api\"\nservice = \"s\"\n{limits}\n\n[service.s]\nreplicas = [\"{addr}\"]\n\n{guard}\n",
        pre = preamble(),
        addr = up.addr
    )
}

fn get_as(h: &Headroom, path: &str, headers: &[(&str, &str)]) -> Response {
    h.client().request("GET", path, headers, b"")
}

const THREE_PER_HOUR: &str = "[[route.limit]]\nrate = \"3/h\"\n";

#[test]
fn requests_over_a_limit_get_429_with_retry_after_and_ratelimit_fields() {
    let up = Upstream::start("u");
    let h = Headroom::start(&limited(&up, THREE_PER_HOUR, ""));
    for remaining in [2, 1, 0] {
        let r = h.get("/x");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"limit-1\";q=3;w=3600"),
            "the policy: 3 per 3600 s"
        );
        let state = r.header("ratelimit").unwrap().to_string();
        assert!(
            state.starts_with(&format!("\"limit-1\";r={remaining};t=")),
            "{state}"
        );
    }
    let r = h.get("/x");
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"], "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1_000..=1_200).contains(&retry),
        "one request comes back every 1200 s: {retry}"
    );
    assert!(r.header("ratelimit").unwrap().contains(";r=0;"));
    assert_eq!(
        up.served(),
        3,
        "the limited request never reached the upstream"
    );
    assert_eq!(
        h.metric("headroom_guard_limit_total{route=\"api\",limit=\"limit-1\",result=\"limited\"}"),
        1.0
    );
    let line = h
        .stdout
        .wait_for("\"status\":429", Duration::from_secs(5))
        .unwrap();
    assert!(line.contains("\"guard\":\"limited\""), "{line}");
}

#[test]
fn each_client_address_has_its_own_limit_behind_trusted_proxies() {
    let up = Upstream::start("u");
    let h = Headroom::start(&limited(
        &up,
        "[[route.limit]]\nrate = \"1/h\"\nkey = \"ip\"\n",
        "[guard]\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
    ));
    let a = [("x-forwarded-for", "198.51.100.1")];
    let b = [("x-forwarded-for", "1.1.1.1, 198.51.100.2")];
    assert_eq!(get_as(&h, "/", &a).status, 200);
    assert_eq!(get_as(&h, "/", &a).status, 429);
    assert_eq!(get_as(&h, "/", &b).status, 200, "another client");
    assert_eq!(
        get_as(&h, "/", &[("x-forwarded-for", "9.9.9.9, 198.51.100.2")]).status,
        429,
        "what the client claims left of the proxy's entry changes nothing"
    );
}

#[test]
fn a_spoofed_x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let up = Upstream::start("u");
    let h = Headroom::start(&limited(&up, "[[route.limit]]\nrate = \"1/h\"\n", ""));
    assert_eq!(
        get_as(&h, "/", &[("x-forwarded-for", "198.51.100.1")]).status,
        200
    );
    assert_eq!(
        get_as(&h, "/", &[("x-forwarded-for", "198.51.100.2")]).status,
        429,
        "no trusted proxies: the peer (127.0.0.1) is the client, whatever it claims"
    );
}

#[test]
fn a_header_keyed_limit_counts_each_value_apart() {
    let up = Upstream::start("u");
    let h = Headroom::start(&limited(
        &up,
        "[[route.limit]]\nname = \"per-user\"\nrate = \"1/h\"\nkey = \"header:X-User\"\n",
        "",
    ));
    assert_eq!(get_as(&h, "/", &[("x-user", "ann")]).status, 200);
    assert_eq!(get_as(&h, "/", &[("x-user", "ann")]).status, 429);
    assert_eq!(get_as(&h, "/", &[("x-user", "bob")]).status, 200);
    assert_eq!(
        h.get("/").status,
        200,
        "no header: one key for all such requests"
    );
    assert_eq!(h.get("/").status, 429);
}

#[test]
fn every_limit_of_a_route_must_pass() {
    let up = Upstream::start("u");
    let h = Headroom::start(&limited(
        &up,
        "[[route.limit]]\nname = \"hourly\"\nrate = \"100/h\"\n\n[[route.limit]]\nname = \"daily\"\nrate = \"2/d\"\n",
        "",
    ));
    let r = h.get("/");
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"hourly\";q=100;w=3600, \"daily\";q=2;w=86400")
    );
    let state = r.header("ratelimit").unwrap();
    assert!(
        state.starts_with("\"hourly\";r=99;") && state.contains(", \"daily\";r=1;"),
        "{state}"
    );
    assert_eq!(h.get("/").status, 200);
    let r = h.get("/");
    assert_eq!(r.status, 429);
    assert!(r.json()["message"].as_str().unwrap().contains("\"daily\""));
}

#[test]
fn a_dry_run_limit_counts_what_it_would_limit_and_rejects_nothing() {
    let up = Upstream::start("u");
    let h = Headroom::start(&limited(
        &up,
        "[[route.limit]]\nrate = \"1/h\"\ndry_run = true\n",
        "",
    ));
    for _ in 0..3 {
        let r = h.get("/");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("ratelimit"),
            None,
            "a dry run tells the client nothing"
        );
    }
    assert_eq!(
        h.metric(
            "headroom_guard_limit_total{route=\"api\",limit=\"limit-1\",result=\"would_limit\"}"
        ),
        2.0
    );
}

#[test]
fn a_reload_keeps_the_counts_of_limits_it_did_not_change() {
    let up = Upstream::start("u");
    let before = limited(&up, "[[route.limit]]\nrate = \"2/h\"\n", "");
    let h = Headroom::start(&before);
    assert_eq!(h.get("/").status, 200);
    assert_eq!(h.get("/").status, 200);
    // Same limit, something else changed: still used up.
    let edited = before.replace("[service.s]", "[service.s]\nconnect_timeout = \"3s\"");
    assert!(h.reload(&edited).contains("config reloaded"));
    assert_eq!(h.get("/").status, 429, "a reload is not a free burst");
    // The limit changed: a new one, whole.
    let raised = edited.replace("2/h", "5/h");
    assert!(h.reload(&raised).contains("config reloaded"));
    assert_eq!(h.get("/").status, 200);
}

#[test]
fn a_bad_limit_is_refused_with_its_line_and_key() {
    let up = Upstream::start("u");
    let (code, err) = check_config(&limited(
        &up,
        "[[route.limit]]\nrate = \"10 per second\"\n",
        "",
    ));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("bad.toml:") && err.contains("limit.rate") && err.contains("10/s"),
        "{err}"
    );
}

fn shared(up: &Upstream, redis: &RedisServer, rate: &str, extra: &str) -> String {
    limited(
        up,
        &format!("[[route.limit]]\nname = \"shared\"\nrate = \"{rate}\"\nkey = \"route\"\n"),
        &format!(
            "[guard.redis]\nurl = \"{}\"\ntimeout = \"200ms\"\n{extra}\n",
            redis.url()
        ),
    )
}

#[test]
fn instances_sharing_redis_enforce_one_limit() {
    let redis = RedisServer::start();
    let up = Upstream::start("u");
    let a = Headroom::start(&shared(&up, &redis, "5/h", ""));
    let b = Headroom::start(&shared(&up, &redis, "5/h", ""));
    let mut passed = 0;
    for i in 0..12 {
        let h = if i % 2 == 0 { &a } else { &b };
        passed += u32::from(h.get("/").status == 200);
    }
    assert_eq!(passed, 5, "5 per hour across both instances, not 5 each");
    assert!(a.metric("headroom_guard_redis_decisions_total{by=\"redis\"}") >= 6.0);
}

#[test]
fn three_instances_admit_within_five_percent_of_a_shared_limit_under_concurrent_load() {
    // 50/s with a burst of 50, hammered from 3 instances by 6 client threads for 10 s:
    // admitted = burst + rate × elapsed, within 5%.
    let redis = RedisServer::start();
    let up = Upstream::start("u");
    let cfg = shared(&up, &redis, "50/s", "");
    let hs: Vec<Headroom> = (0..3).map(|_| Headroom::start(&cfg)).collect();
    let addrs: Vec<_> = hs.iter().map(|h| h.addr).collect();
    let start = Instant::now();
    let run = Duration::from_secs(10);
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let addr = addrs[t % 3];
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let (mut ok, mut limited) = (0u64, 0u64);
                while start.elapsed() < run {
                    match c.get("/").status {
                        200 => ok += 1,
                        429 => limited += 1,
                        s => panic!("status {s}"),
                    }
                }
                (ok, limited)
            })
        })
        .collect();
    let (mut ok, mut limited) = (0, 0);
    for t in threads {
        let (o, l) = t.join().unwrap();
        ok += o;
        limited += l;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let expected = 50.0 + 50.0 * elapsed;
    let ratio = ok as f64 / expected;
    eprintln!("admitted {ok}, limited {limited} in {elapsed:.2} s: {ratio:.3} of {expected:.0}");
    assert!(
        limited > ok,
        "the load was well over the limit: {ok} ok, {limited} limited"
    );
    assert!(
        (0.95..=1.05).contains(&ratio),
        "admitted {ok} of an expected {expected:.0} ({ratio:.3})"
    );
}

#[test]
fn with_redis_down_a_shared_limit_falls_back_to_each_instance_s_share() {
    let mut redis = RedisServer::start();
    let up = Upstream::start("u");
    // Two instances: the fallback enforces 1/2 of 4/h = 2/h in each.
    let h = Headroom::start(&shared(
        &up,
        &redis,
        "4/h",
        "instances = 2\nbreaker_failures = 1\n",
    ));
    assert_eq!(h.get("/").status, 200, "Redis decides");
    redis.kill();
    let statuses: Vec<u16> = (0..4).map(|_| h.get("/").status).collect();
    assert_eq!(
        statuses,
        [200, 200, 429, 429],
        "the local share: 2 per hour"
    );
    assert!(h.metric("headroom_guard_redis_decisions_total{by=\"fallback\"}") >= 4.0);
    let warn = h
        .stderr
        .wait_for("Redis cannot decide", Duration::from_secs(5));
    assert!(warn.is_some(), "the fallback is logged");
    assert_eq!(
        h.stderr.count("Redis cannot decide"),
        1,
        "once, not per request"
    );
}

#[test]
fn with_redis_down_a_fail_closed_limit_answers_503() {
    let mut redis = RedisServer::start();
    let up = Upstream::start("u");
    let h = Headroom::start(&shared(&up, &redis, "100/h", "fallback = \"closed\"\n"));
    assert_eq!(h.get("/").status, 200);
    redis.kill();
    let r = h.get("/");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "rate_limit_unavailable");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(up.served(), 1);
}

#[test]
fn instances_sharing_a_redis_cluster_enforce_one_limit() {
    let cluster = headroom_redis::testing::RedisCluster::start();
    let up = Upstream::start("u");
    let seeds: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let cfg = limited(
        &up,
        "[[route.limit]]\nname = \"shared\"\nrate = \"4/h\"\nkey = \"route\"\n",
        &format!(
            "[guard.redis]\ncluster = [{}]\ntimeout = \"500ms\"\n",
            seeds.join(", ")
        ),
    );
    let a = Headroom::start(&cfg);
    let b = Headroom::start(&cfg);
    let mut passed = 0;
    for i in 0..10 {
        let h = if i % 2 == 0 { &a } else { &b };
        passed += u32::from(h.get("/").status == 200);
    }
    assert_eq!(
        passed, 4,
        "4 per hour across both instances, kept in the cluster"
    );
    assert!(b.metric("headroom_guard_redis_decisions_total{by=\"redis\"}") >= 5.0);
}
