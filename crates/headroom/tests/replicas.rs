//! Replica sets that change at runtime: the admin API adds and drains replicas, keeping
//! every other replica's state; a reload keeps what was added.

mod common;
use common::*;

fn config(ups: &[&Upstream], service_extra: &str) -> String {
    format!(
        "{}[[route]]\nservice = \"s\"\n\n[service.s]\nreplicas = [{}]\n{service_extra}\n",
        preamble(),
        replicas(ups)
    )
}

fn admin_request(h: &Headroom, method: &str, path: &str, body: &str) -> Response {
    Client::connect(h.admin.unwrap()).request(method, path, &[], body.as_bytes())
}

fn replica<'a>(st: &'a serde_json::Value, addr: &str) -> Option<&'a serde_json::Value> {
    st["services"][0]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["replica"] == addr)
}

#[test]
fn an_added_replica_takes_traffic_and_the_others_keep_their_state() {
    let bad = Upstream::start_with("bad", &["--error-rate", "1.0"]);
    let good = Upstream::start("good");
    let h = Headroom::start(&config(
        &[&bad, &good],
        "balance = \"round-robin\"\nslow_start = \"0s\"\nretry = { attempts = 1 }\noutlier = { consecutive_failures = 2, base_ejection = \"1m\", max_ejected = \"100%\" }",
    ));
    let mut c = h.client();
    for _ in 0..6 {
        c.get("/");
    }
    let bad_addr = bad.addr.to_string();
    assert_eq!(replica(&h.status(), &bad_addr).unwrap()["ejected"], true);
    let good_idle =
        replica(&h.status(), &good.addr.to_string()).unwrap()["idle_connections"].clone();

    let new = Upstream::start("new");
    let r = admin_request(
        &h,
        "POST",
        "/services/s/replicas",
        &format!("{{\"addr\": \"{}\", \"weight\": 1}}", new.addr),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let st = h.status();
    let added = replica(&st, &new.addr.to_string()).expect("listed in /status");
    assert_eq!(added["source"], "admin");
    assert_eq!(
        replica(&st, &good.addr.to_string()).unwrap()["source"],
        "config"
    );
    // The other replicas' state survived the change: "bad" is still ejected, "good" still
    // holds its pooled connections.
    assert_eq!(replica(&st, &bad_addr).unwrap()["ejected"], true);
    assert_eq!(
        replica(&st, &good.addr.to_string()).unwrap()["idle_connections"],
        good_idle
    );
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let r = c.get("/");
        assert_eq!(r.status, 200);
        seen.insert(r.replica());
    }
    assert!(seen.contains("new"), "{seen:?}");
    assert!(h.stderr.count("replica added") >= 1);
}

#[test]
fn an_added_replica_waits_for_its_first_passing_health_check() {
    let good = Upstream::start("good");
    let sick = Upstream::start("sick");
    sick.set_health(503);
    let h = Headroom::start(&config(
        &[&good],
        "health = { interval = \"100ms\", rise = 3, fall = 3 }",
    ));
    let sick_addr = sick.addr.to_string();
    let r = admin_request(
        &h,
        "POST",
        "/services/s/replicas",
        &format!("{{\"addr\": \"{sick_addr}\"}}"),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(replica(&h.status(), &sick_addr).unwrap()["healthy"], false);
    let mut c = h.client();
    for _ in 0..20 {
        assert_eq!(c.get("/").replica(), "good");
    }
    assert_eq!(sick.served(), 0);
    // One passing check is enough for a replica that never failed one (not `rise`).
    sick.set_health(200);
    h.wait_status("the added replica healthy", |st| {
        replica(st, &sick_addr).unwrap()["healthy"] == true
    });
}

#[test]
fn an_added_replica_is_checked_at_once_not_at_the_next_interval() {
    let good = Upstream::start("good");
    let new = Upstream::start("new");
    let h = Headroom::start(&config(&[&good], "health = { interval = \"1h\" }"));
    let new_addr = new.addr.to_string();
    let r = admin_request(
        &h,
        "POST",
        "/services/s/replicas",
        &format!("{{\"addr\": \"{new_addr}\"}}"),
    );
    assert_eq!(r.status, 201);
    h.wait_status("the added replica checked", |st| {
        replica(st, &new_addr).unwrap()["healthy"] == true
    });
}

/// Headroom in front of "slow" (answers after `delay_ms`) and "other", round-robin, with
/// one request in flight on "slow" (the first goes there).
fn one_request_in_flight_on_slow(
    delay_ms: u64,
) -> (Headroom, [Upstream; 2], std::thread::JoinHandle<Response>) {
    let slow = Upstream::start_with("slow", &["--delay-ms", &delay_ms.to_string()]);
    let other = Upstream::start("other");
    let h = Headroom::start(&config(&[&slow, &other], "balance = \"round-robin\""));
    let slow_addr = slow.addr.to_string();
    let addr = h.addr;
    let inflight = std::thread::spawn(move || Client::connect(addr).get("/"));
    h.wait_status("a request in flight on slow", |st| {
        replica(st, &slow_addr).unwrap()["inflight"] == 1
    });
    (h, [slow, other], inflight)
}

#[test]
fn a_drained_replica_finishes_its_requests_then_leaves() {
    let (h, [slow, _other], inflight) = one_request_in_flight_on_slow(800);
    let slow_addr = slow.addr.to_string();
    let r = admin_request(
        &h,
        "DELETE",
        &format!("/services/s/replicas/{slow_addr}?drain=20s"),
        "",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(replica(&h.status(), &slow_addr).unwrap()["draining"], true);
    // No new request goes to it while it drains.
    let mut c = h.client();
    for _ in 0..6 {
        assert_eq!(c.get("/").replica(), "other");
    }
    // Its request in flight completes, and then it is removed.
    let done = inflight.join().unwrap();
    assert_eq!((done.status, done.replica()), (200, "slow".to_string()));
    h.wait_status("slow removed", |st| replica(st, &slow_addr).is_none());
    assert!(h.stderr.count("replica removed") >= 1);
}

#[test]
fn a_drain_ends_at_its_deadline() {
    let (h, [slow, _other], inflight) = one_request_in_flight_on_slow(3000);
    let slow_addr = slow.addr.to_string();
    let r = admin_request(
        &h,
        "DELETE",
        &format!("/services/s/replicas/{slow_addr}?drain=200ms"),
        "",
    );
    assert_eq!(r.status, 202);
    h.wait_status("slow removed", |st| replica(st, &slow_addr).is_none());
    // Removed at the deadline, while its 3 s request is still running; that request
    // still completes.
    assert!(!inflight.is_finished());
    assert_eq!(inflight.join().unwrap().status, 200);
}

#[test]
fn a_zero_drain_removes_the_replica_at_once() {
    let (h, [slow, _other], inflight) = one_request_in_flight_on_slow(1500);
    let slow_addr = slow.addr.to_string();
    let r = admin_request(
        &h,
        "DELETE",
        &format!("/services/s/replicas/{slow_addr}?drain=0s"),
        "",
    );
    assert_eq!(r.status, 202);
    assert!(
        replica(&h.status(), &slow_addr).is_none(),
        "gone when DELETE answers"
    );
    // Its request in flight still completes.
    assert_eq!(inflight.join().unwrap().status, 200);
}

#[test]
fn a_reload_keeps_replicas_added_at_runtime() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let h = Headroom::start(&config(&[&a], ""));
    let r = admin_request(
        &h,
        "POST",
        "/services/s/replicas",
        &format!("{{\"addr\": \"{}\"}}", b.addr),
    );
    assert_eq!(r.status, 201);
    let outcome = h.reload(&config(&[&a], "request_timeout = \"10s\""));
    assert!(outcome.contains("config reloaded"), "{outcome}");
    assert!(h.stderr.count("reload keeps the replicas added at runtime") >= 1);
    let st = h.status();
    assert_eq!(
        replica(&st, &b.addr.to_string()).unwrap()["source"],
        "admin"
    );
}

#[test]
fn the_replica_api_refuses_bad_requests_with_the_reason() {
    let a = Upstream::start("a");
    let h = Headroom::start(&config(&[&a], ""));
    let post = |path: &str, body: &str| admin_request(&h, "POST", path, body);
    let r = post("/services/s/replicas", "{\"addr\": 5}");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("expected"), "{}", r.text());
    assert_eq!(
        post("/services/s/replicas", "{\"addr\": \"nowhere\"}").status,
        400
    );
    assert_eq!(
        post("/services/nope/replicas", "{\"addr\": \"127.0.0.1:1\"}").status,
        404
    );
    let dup = post(
        "/services/s/replicas",
        &format!("{{\"addr\": \"{}\"}}", a.addr),
    );
    assert_eq!(dup.status, 409, "{}", dup.text());
    let heavy = post(
        "/services/s/replicas",
        "{\"addr\": \"127.0.0.1:1\", \"weight\": 100000}",
    );
    assert_eq!(heavy.status, 400);
    assert!(heavy.text().contains("1 to 1000"), "{}", heavy.text());
    assert_eq!(
        admin_request(&h, "DELETE", "/services/s/replicas/127.0.0.1:2", "").status,
        404
    );
    assert_eq!(
        admin_request(
            &h,
            "DELETE",
            &format!("/services/s/replicas/{}?drain=soon", a.addr),
            ""
        )
        .status,
        400
    );
    assert_eq!(
        admin_request(&h, "PUT", "/services/s/replicas", "").status,
        405
    );
    // Nothing changed.
    assert_eq!(
        h.status()["services"][0]["replicas"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn the_replica_api_needs_the_admin_token() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let h = Headroom::start(&config(&[&a], "").replacen(
        "[admin]\nbind = \"127.0.0.1:0\"",
        "[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"s3cret\"",
        1,
    ));
    let body = format!("{{\"addr\": \"{}\"}}", b.addr);
    let mut c = Client::connect(h.admin.unwrap());
    assert_eq!(
        c.request("POST", "/services/s/replicas", &[], body.as_bytes())
            .status,
        401
    );
    let auth = [("authorization", "Bearer s3cret")];
    let mut c = Client::connect(h.admin.unwrap());
    assert_eq!(
        c.request("POST", "/services/s/replicas", &auth, body.as_bytes())
            .status,
        201
    );
}
