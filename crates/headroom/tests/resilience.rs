//! Health checks, outlier ejection, retries and their budget, timeouts, a replica killed under load.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

fn service_config(ups: &[&Upstream], extra: &str) -> String {
    format!(
        "{}[[route]]\nservice = \"s\"\n\n[service.s]\nreplicas = [{}]\n{extra}\n",
        preamble(),
        replicas(ups)
    )
}

fn replica_state(status: &serde_json::Value, addr: &str, key: &str) -> bool {
    status["services"][0]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["replica"] == addr)
        .map(|r| r[key].as_bool().unwrap())
        .unwrap()
}

#[test]
fn active_health_checks_remove_and_restore_a_replica() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let h = Headroom::start(&service_config(
        &[&a, &b],
        "balance = \"round-robin\"\nslow_start = \"0s\"\nhealth = { path = \"/healthz\", interval = \"100ms\", rise = 2, fall = 2 }",
    ));
    let baddr = b.addr.to_string();
    b.set_health(503);
    h.wait_status("b unhealthy", |s| !replica_state(s, &baddr, "healthy"));
    assert_eq!(
        h.metric(&format!(
            "headroom_replica_healthy{{service=\"s\",replica=\"{baddr}\"}}"
        )),
        0.0
    );
    let counts = tally(&h, "/", &[], 40);
    assert_eq!(counts, BTreeMap::from([("a".to_string(), 40)]));
    b.set_health(200);
    h.wait_status("b healthy", |s| replica_state(s, &baddr, "healthy"));
    let counts = tally(&h, "/", &[], 40);
    assert_eq!(counts.get("b"), Some(&20), "{counts:?}");
}

#[test]
fn consecutive_errors_eject_a_replica_passively() {
    let a = Upstream::start("a");
    let bad = Upstream::start_with("bad", &["--error-rate", "1.0"]);
    let h = Headroom::start(&service_config(
        &[&a, &bad],
        "balance = \"round-robin\"\nretry = { attempts = 1 }\noutlier = { consecutive_failures = 3, base_ejection = \"30s\" }",
    ));
    let mut c = h.client();
    let mut errors = 0;
    for _ in 0..6 {
        if c.get("/").status == 500 {
            errors += 1;
        }
    }
    assert_eq!(errors, 3, "three 500s, then ejected");
    let bad_addr = bad.addr.to_string();
    assert!(replica_state(&h.status(), &bad_addr, "ejected"));
    assert_eq!(
        tally(&h, "/", &[], 20),
        BTreeMap::from([("a".to_string(), 20)])
    );
    assert_eq!(
        h.metric(&format!(
            "headroom_replica_ejections_total{{service=\"s\",replica=\"{bad_addr}\"}}"
        )),
        1.0
    );
}

#[test]
fn passive_ejection_never_takes_out_more_than_the_allowed_share() {
    let x = Upstream::start_with("x", &["--error-rate", "1.0"]);
    let y = Upstream::start_with("y", &["--error-rate", "1.0"]);
    let h = Headroom::start(&service_config(
        &[&x, &y],
        "retry = { attempts = 1 }\noutlier = { consecutive_failures = 2, max_ejected = \"50%\" }",
    ));
    let mut c = h.client();
    for _ in 0..20 {
        assert_eq!(c.get("/").status, 500);
    }
    let s = h.status();
    let ejected = s["services"][0]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ejected"] == true)
        .count();
    assert_eq!(ejected, 1, "{s:#}");
}

#[test]
fn no_healthy_replica_is_a_503_naming_the_service() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let h = Headroom::start(&service_config(
        &[&a, &b],
        "health = { interval = \"100ms\", fall = 1 }",
    ));
    a.set_health(500);
    b.set_health(500);
    h.wait_status("all unhealthy", |s| {
        s["services"][0]["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["healthy"] == false)
    });
    let r = h.get("/");
    assert_eq!(r.status, 503);
    let j = r.json();
    assert_eq!(j["error"], "no_healthy_replica");
    assert!(j["message"].as_str().unwrap().contains("\"s\""));
}

#[test]
fn idempotent_requests_are_retried_on_another_replica() {
    let bad = Upstream::start_with("bad", &["--error-rate", "1.0"]);
    let good = Upstream::start("good");
    let h = Headroom::start(&service_config(
        &[&bad, &good],
        "balance = \"round-robin\"\nretry = { attempts = 2, on_status = [500], budget = \"100%\" }\noutlier = { consecutive_failures = 0 }",
    ));
    let mut c = h.client();
    for _ in 0..20 {
        let r = c.request("PUT", "/item", &[], &[b'x'; 1000]);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json()["body_bytes"],
            1000,
            "the body was replayed in full"
        );
    }
    // Round-robin sends every first try to "bad": each PUT was retried once.
    assert_eq!(h.metric("headroom_retries_total{service=\"s\"}"), 20.0);
    // POST is not idempotent: never retried.
    let before = bad.served() + good.served();
    let mut statuses = vec![];
    for _ in 0..4 {
        statuses.push(c.request("POST", "/order", &[], b"{}").status);
    }
    assert_eq!(bad.served() + good.served() - before, 4);
    assert_eq!(statuses.iter().filter(|s| **s == 500).count(), 2);
}

#[test]
fn the_retry_budget_caps_extra_load_during_an_outage() {
    let (x, y) = (Upstream::start("x"), Upstream::start("y"));
    let h = Headroom::start(&service_config(
        &[&x, &y],
        "retry = { attempts = 3, budget = \"20%\", min_per_second = 0 }\noutlier = { consecutive_failures = 0 }",
    ));
    let mut c = h.client();
    for _ in 0..200 {
        assert_eq!(c.get("/?status=503").status, 503);
    }
    let served = x.served() + y.served();
    // 200 originals plus at most 20% retries.
    assert!(
        (200..=240).contains(&served),
        "upstreams saw {served} requests"
    );
    assert_eq!(
        h.metric("headroom_retries_total{service=\"s\"}") as u64,
        served - 200
    );
    assert!(h.metric("headroom_retries_denied_total{service=\"s\"}") > 0.0);
}

#[test]
fn a_slow_upstream_gets_a_504_after_the_request_timeout() {
    let a = Upstream::start("a");
    let h = Headroom::start(&service_config(&[&a], "request_timeout = \"300ms\""));
    let r = h.get("/?delay=5000");
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "upstream_timeout");
}

#[test]
fn a_replica_killed_under_load_fails_no_idempotent_request() {
    let ups: Vec<std::sync::Mutex<Upstream>> = (0..3)
        .map(|i| std::sync::Mutex::new(Upstream::start(&format!("r{i}"))))
        .collect();
    let list = ups
        .iter()
        .map(|u| format!("\"{}\"", u.lock().unwrap().addr))
        .collect::<Vec<_>>()
        .join(", ");
    let cfg = format!(
        "{}[[route]]\nservice = \"s\"\n\n[service.s]\nreplicas = [{list}]\nhealth = {{ interval = \"200ms\", fall = 1 }}\nretry = {{ attempts = 3 }}\n",
        preamble()
    );
    let h = Headroom::start(&cfg);
    let done = AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let mut c = h.client();
                for _ in 0..400 {
                    let r = c.try_request("GET", "/", &[], b"");
                    match r {
                        Ok(r) if r.status == 200 => {}
                        Ok(r) => {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{} {}", r.status, r.text()))
                        }
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        s.spawn(|| {
            while done.load(Ordering::Relaxed) < 400 {
                std::thread::yield_now();
            }
            ups[1].lock().unwrap().kill();
        });
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(done.load(Ordering::Relaxed), 1600);
}

#[test]
fn a_client_that_goes_away_mid_request_leaves_no_request_counted_in_flight() {
    let a = Upstream::start("a");
    let h = Headroom::start(&service_config(&[&a], ""));
    let mut c = h.client();
    use std::io::Write;
    c.stream()
        .write_all(b"GET /?delay=300 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    while a.served() == 0 {
        std::thread::yield_now();
    }
    assert_eq!(h.status()["inflight"], 1);
    drop(c);
    h.wait_status("nothing in flight", |s| {
        s["inflight"] == 0 && s["services"][0]["replicas"][0]["inflight"] == 0
    });
}

#[test]
fn an_ejected_replica_gets_traffic_again_after_its_ejection() {
    let a = Upstream::start("a");
    let mut b = Upstream::start("b");
    let baddr = b.addr.to_string();
    let h = Headroom::start(&service_config(
        &[&a, &b],
        "balance = \"round-robin\"\nslow_start = \"0s\"\noutlier = { consecutive_failures = 2, base_ejection = \"500ms\" }",
    ));
    b.kill();
    // Connect failures are retried on "a", and eject "b" after two.
    let counts = tally(&h, "/", &[], 10);
    assert_eq!(counts, BTreeMap::from([("a".to_string(), 10)]));
    assert!(replica_state(&h.status(), &baddr, "ejected"));
    // "b" comes back on the same address; once its ejection ends it takes its share again.
    let _b2 = Upstream::start_on(&baddr, "b", &[]);
    h.wait_status("ejection over", |s| !replica_state(s, &baddr, "ejected"));
    let counts = tally(&h, "/", &[], 20);
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
}

#[test]
fn a_body_larger_than_the_replay_cap_is_not_retried() {
    let bad = Upstream::start_with("bad", &["--error-rate", "1.0"]);
    let good = Upstream::start("good");
    let h = Headroom::start(&service_config(
        &[&bad, &good],
        "balance = \"round-robin\"\nretry = { attempts = 2, on_status = [500], budget = \"100%\", replay_body_bytes = 1024 }\noutlier = { consecutive_failures = 0 }",
    ));
    let mut c = h.client();
    // Round-robin: the first try goes to "bad". 4 KiB cannot be replayed, so its 500 stands.
    let r = c.request("PUT", "/big", &[], &[b'x'; 4096]);
    assert_eq!(r.status, 500);
    assert_eq!(h.metric("headroom_retries_total{service=\"s\"}"), 0.0);
    // 512 bytes can: retried on "good".
    let r = c.request("PUT", "/small", &[], &[b'x'; 512]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_bytes"], 512);
}

#[test]
fn a_failed_connect_is_retried_for_any_method() {
    let good = Upstream::start("good");
    let mut dead = Upstream::start("dead");
    dead.kill();
    let h = Headroom::start(&service_config(
        &[&dead, &good],
        "balance = \"round-robin\"\nretry = { attempts = 2 }",
    ));
    let mut c = h.client();
    for _ in 0..4 {
        // POST is not idempotent, but nothing was sent to the dead replica.
        let r = c.request("POST", "/orders", &[], b"{\"id\":1}");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["body_bytes"], 8);
    }
    assert!(h.metric("headroom_upstream_errors_total{service=\"s\",kind=\"connect\"}") >= 1.0);
}

#[test]
fn a_refused_connect_does_not_use_up_the_last_attempt() {
    // Round-robin sends the first try to the dead replica, the retry on 500 to "flaky":
    // if the refused connect counted as an attempt, the flaky 500 would be the last word.
    let mut dead = Upstream::start("dead");
    dead.kill();
    let flaky = Upstream::start_with("flaky", &["--error-rate", "1.0"]);
    let good = Upstream::start("good");
    let h = Headroom::start(&service_config(
        &[&dead, &flaky, &good],
        "balance = \"round-robin\"\nretry = { attempts = 2, on_status = [500], budget = \"100%\" }\noutlier = { consecutive_failures = 1000 }",
    ));
    let mut c = h.client();
    for i in 0..30 {
        let r = c.get("/");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.replica(), "good");
    }
}

#[test]
fn a_refused_connect_takes_the_replica_out_at_once() {
    let mut dead = Upstream::start("dead");
    dead.kill();
    let good = Upstream::start("good");
    let dead_addr = dead.addr.to_string();
    // Without health checks: ejected for base_ejection at the first refusal, although
    // consecutive_failures is far from reached.
    let h = Headroom::start(&service_config(
        &[&dead, &good],
        "balance = \"round-robin\"\noutlier = { consecutive_failures = 50, base_ejection = \"1m\" }",
    ));
    let mut c = h.client();
    assert_eq!(c.get("/").status, 200);
    assert!(replica_state(&h.status(), &dead_addr, "ejected"));
    let errors = h.metric("headroom_upstream_errors_total{service=\"s\",kind=\"connect\"}");
    for _ in 0..10 {
        assert_eq!(c.get("/").status, 200);
    }
    assert_eq!(
        h.metric("headroom_upstream_errors_total{service=\"s\",kind=\"connect\"}"),
        errors,
        "no more connects to the ejected replica"
    );
    drop(h);
    // With health checks: out until its checks pass again. `fall = 1000`: the checks
    // themselves never take it out during the test, so only the refused connect can.
    let mut gone = Upstream::start("gone");
    let gone_addr = gone.addr.to_string();
    let h = Headroom::start(&service_config(
        &[&gone, &good],
        "balance = \"round-robin\"\nhealth = { interval = \"200ms\", rise = 1, fall = 1000 }",
    ));
    gone.kill();
    let mut c = h.client();
    for _ in 0..4 {
        assert_eq!(c.get("/").status, 200);
    }
    let st = h.status();
    assert!(!replica_state(&st, &gone_addr, "healthy"), "{st:#}");
    assert_eq!(
        h.metric("headroom_upstream_errors_total{service=\"s\",kind=\"connect\"}"),
        1.0
    );
    // Back on its address: the next passing check brings it back.
    let _back = Upstream::start_on(&gone_addr, "gone", &[]);
    h.wait_status("the replica back", |st| {
        replica_state(st, &gone_addr, "healthy")
    });
}
