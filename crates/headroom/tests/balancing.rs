//! Load balancing: each algorithm's distribution, stickiness and weighted splits.

mod common;
use common::*;
use std::collections::BTreeMap;

fn config(service: &str, ups: &[&Upstream]) -> String {
    format!(
        "{}[[route]]\nservice = \"s\"\n\n[service.s]\n{service}\nreplicas = [{}]\n",
        preamble(),
        replicas(ups)
    )
}

#[test]
fn weighted_round_robin_follows_weights_exactly() {
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    let cfg = format!(
        "{}[[route]]\nservice = \"s\"\n\n[service.s]\nbalance = \"round-robin\"\nreplicas = [\"{}\", {{ addr = \"{}\", weight = 2 }}, \"{}\"]\n",
        preamble(),
        a.addr,
        b.addr,
        c.addr
    );
    let h = Headroom::start(&cfg);
    let counts = tally(&h, "/", &[], 400);
    assert_eq!(
        counts,
        BTreeMap::from([("a".into(), 100), ("b".into(), 200), ("c".into(), 100)])
    );
}

#[test]
fn least_requests_sends_less_to_the_busy_replica() {
    let fast = Upstream::start("fast");
    let slow = Upstream::start_with("slow", &["--delay-ms", "100"]);
    let h = Headroom::start(&config("balance = \"least-requests\"", &[&fast, &slow]));
    let counts = std::sync::Mutex::new(BTreeMap::<String, usize>::new());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let mut c = h.client();
                for _ in 0..15 {
                    let r = c.get("/");
                    assert_eq!(r.status, 200);
                    *counts.lock().unwrap().entry(r.replica()).or_insert(0) += 1;
                }
            });
        }
    });
    let counts = counts.into_inner().unwrap();
    let (f, s) = (
        counts.get("fast").copied().unwrap_or(0),
        counts.get("slow").copied().unwrap_or(0),
    );
    assert!(f > 3 * s, "fast {f} vs slow {s}");
}

#[test]
fn p2c_ewma_prefers_replicas_that_answer_faster() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let slow = Upstream::start_with("slow", &["--delay-ms", "50"]);
    let h = Headroom::start(&config("balance = \"p2c-ewma\"", &[&a, &b, &slow]));
    let counts = tally(&h, "/", &[], 150);
    let s = counts.get("slow").copied().unwrap_or(0);
    // Uniform would be 50; p2c only picks the slow one when it is not compared with a fast one.
    assert!(s <= 10, "{counts:?}");
    assert!(
        counts.contains_key("a") && counts.contains_key("b"),
        "{counts:?}"
    );
}

#[test]
fn consistent_hashing_on_a_header_is_sticky_and_spreads_keys() {
    let ups: Vec<Upstream> = (0..3).map(|i| Upstream::start(&format!("r{i}"))).collect();
    let refs: Vec<&Upstream> = ups.iter().collect();
    let h = Headroom::start(&config(
        "balance = \"hash\"\nhash_on = \"header:x-user\"",
        &refs,
    ));
    let mut c = h.client();
    let mut owners = BTreeMap::new();
    for user in 0..30 {
        let u = format!("user-{user}");
        let first = c.request("GET", "/", &[("x-user", &u)], b"").replica();
        for _ in 0..3 {
            assert_eq!(
                c.request("GET", "/", &[("x-user", &u)], b"").replica(),
                first,
                "{u} moved"
            );
        }
        *owners.entry(first).or_insert(0) += 1;
    }
    assert_eq!(
        owners.len(),
        3,
        "30 keys should reach all 3 replicas: {owners:?}"
    );
}

#[test]
fn consistent_hashing_on_a_cookie_survives_a_replica_leaving() {
    let ups: Vec<Upstream> = (0..4).map(|i| Upstream::start(&format!("r{i}"))).collect();
    let refs: Vec<&Upstream> = ups.iter().collect();
    let h = Headroom::start(&config(
        "balance = \"hash\"\nhash_on = \"cookie:session\"",
        &refs,
    ));
    let mut c = h.client();
    let owner = |c: &mut Client, k: usize| {
        c.request(
            "GET",
            "/",
            &[("Cookie", &format!("a=b; session=s{k}"))],
            b"",
        )
        .replica()
    };
    let before: Vec<String> = (0..60).map(|k| owner(&mut c, k)).collect();
    // Remove r3 from the config: only its keys move.
    let outcome = h.reload(&config(
        "balance = \"hash\"\nhash_on = \"cookie:session\"",
        &refs[..3],
    ));
    assert!(outcome.contains("config reloaded"), "{outcome}");
    let mut c = h.client();
    for (k, was) in before.iter().enumerate() {
        let now = owner(&mut c, k);
        if was != "r3" {
            assert_eq!(&now, was, "key s{k} moved although its replica stayed");
        } else {
            assert_ne!(now, "r3");
        }
    }
}

#[test]
fn weighted_split_holds_within_statistical_tolerance() {
    let (mono, v2) = (Upstream::start("monolith"), Upstream::start("orders-v2"));
    let cfg = format!(
        "{}[[route]]\nsplit = [ {{ service = \"monolith\", weight = 90 }}, {{ service = \"v2\", weight = 10 }} ]\n\n[service.monolith]\nreplicas = [\"{}\"]\n\n[service.v2]\nreplicas = [\"{}\"]\n",
        preamble(),
        mono.addr,
        v2.addr
    );
    let h = Headroom::start(&cfg);
    let n = 2000;
    let counts = tally(&h, "/", &[], n);
    let got = counts.get("orders-v2").copied().unwrap_or(0) as f64;
    // Binomial(2000, 0.1): mean 200, sd 13.4; 5 sd either side fails once in ~3.5 million runs.
    let (mean, sd) = (n as f64 * 0.1, (n as f64 * 0.1 * 0.9).sqrt());
    assert!(
        (got - mean).abs() < 5.0 * sd,
        "orders-v2 got {got} of {n}: {counts:?}"
    );
}

#[test]
fn a_replica_weight_outside_1_to_1000_is_a_config_error_at_its_line() {
    let text = |w: &str| {
        format!(
            "[[listener]]\nbind = \"127.0.0.1:8080\"\n[[route]]\nservice = \"s\"\n[service.s]\nbalance = \"round-robin\"\nreplicas = [\"127.0.0.1:9001\",\n  {{ addr = \"127.0.0.1:9002\", weight = {w} }}]\n"
        )
    };
    // u32::MAX used to pass and then abort the gateway building a schedule of 4 billion slots.
    for w in ["4294967295", "1001", "0"] {
        let ran = run_with_config("check", &text(w));
        assert_eq!(ran.code, Some(2), "weight {w}: {}", ran.stderr);
        let want = format!(
            "{}:8:3: service \"s\": replicas.weight: {w}: a replica weight must be from 1 to 1000",
            ran.file
        );
        assert!(ran.stderr.contains(&want), "weight {w}:\n{}", ran.stderr);
    }
    let ran = run_with_config("check", &text("1000"));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
}

#[test]
fn an_h2_only_replica_becomes_healthy_through_h2_health_checks_and_serves() {
    // A free port for the replica, taken before it runs: until it does, checks fail.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = format!(
        "{}[[route]]\nservice = \"s\"\n\n[service.s]\nprotocol = \"h2\"\nreplicas = [\"{addr}\"]\nhealth = {{ path = \"/healthz\", interval = \"100ms\", timeout = \"1s\", rise = 1, fall = 1 }}\n",
        preamble()
    );
    let h = Headroom::start(&cfg);
    let healthy = |s: &serde_json::Value| s["services"][0]["replicas"][0]["healthy"].as_bool();
    h.wait_status("the absent replica to fail its check", |s| {
        healthy(s) == Some(false)
    });
    // A replica that refuses HTTP/1.1: an HTTP/1.1 probe would never let it back in.
    let _up = Upstream::start_on(&addr.to_string(), "h2", &["--h2-only"]);
    h.wait_status("the h2 replica to pass its h2 check", |s| {
        healthy(s) == Some(true)
    });
    let r = h.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.replica(), "h2");
    assert_eq!(r.json()["version"], "HTTP/2.0");
}
