//! Load shedding and circuit breaking end to end, asserted by behaviour (counts, statuses,
//! the order answers came in), never by how long anything took. The controllers themselves
//! (the adaptive limit against a simulated upstream, priorities, the breaker's states) are
//! unit-tested in headroom-guard on paused time.

mod common;
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

fn config(up: &Upstream, service_extra: &str, routes: &str) -> String {
    format!(
        "{pre}{routes}\n[service.s]\nreplicas = [\"{addr}\"]\nrequest_timeout = \"30s\"\n{service_extra}\n",
        pre = preamble(),
        addr = up.addr,
    )
}

const ONE_ROUTE: &str = "[[route]]\nname = \"api\"\nservice = \"s\"\n";

/// `n` clients at once, each one request to `path`; (status, the order it was answered in).
fn burst(h: &Headroom, n: usize, path: &str) -> Vec<(u16, usize)> {
    let start = Arc::new(Barrier::new(n));
    let order = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (start, order, addr, path) =
                (start.clone(), order.clone(), h.addr, path.to_string());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                start.wait();
                let status = c.get(&path).status;
                (status, order.fetch_add(1, Ordering::SeqCst))
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn with_shedding_the_excess_gets_503_at_once_and_the_admitted_succeed() {
    let up = Upstream::start("u");
    let h = Headroom::start(&config(
        &up,
        "[service.s.shed]\nmax_inflight = 4",
        ONE_ROUTE,
    ));
    let got = burst(&h, 20, "/slow?delay=1500");
    let ok: Vec<_> = got.iter().filter(|(s, _)| *s == 200).collect();
    let shed: Vec<_> = got.iter().filter(|(s, _)| *s == 503).collect();
    assert_eq!(ok.len(), 4, "the limit's worth admitted: {got:?}");
    assert_eq!(shed.len(), 16, "the rest shed: {got:?}");
    let last_shed = shed.iter().map(|(_, o)| *o).max().unwrap();
    let first_ok = ok.iter().map(|(_, o)| *o).min().unwrap();
    assert!(
        last_shed < first_ok,
        "every 503 came before the first admitted answer: {got:?}"
    );
    assert_eq!(up.served(), 4, "the upstream saw only what was admitted");
    assert_eq!(
        h.metric("headroom_guard_shed_total{service=\"s\",reason=\"queue_full\"}"),
        16.0
    );
    let r = h.get("/fast");
    assert_eq!(r.status, 200, "capacity is back once they are answered");
}

#[test]
fn without_shedding_every_request_piles_up_on_the_upstream() {
    let up = Upstream::start("u");
    let h = Headroom::start(&config(&up, "", ONE_ROUTE));
    let got = burst(&h, 20, "/slow?delay=500");
    assert!(got.iter().all(|(s, _)| *s == 200), "{got:?}");
    assert_eq!(up.served(), 20, "all 20 were in the upstream at once");
}

#[test]
fn shed_answers_carry_retry_after_and_the_reason() {
    let up = Upstream::start("u");
    let h = Headroom::start(&config(
        &up,
        "[service.s.shed]\nmax_inflight = 1\nqueue_timeout = \"2s\"",
        ONE_ROUTE,
    ));
    let slow = {
        let addr = h.addr;
        std::thread::spawn(move || Client::connect(addr).get("/slow?delay=1500").status)
    };
    h.wait_status("one request in flight", |s| {
        s["services"][0]["shed"]["inflight"] == 1
    });
    let r = h.get("/x");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "shed");
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(slow.join().unwrap(), 200);
}

#[test]
fn critical_routes_keep_their_share_while_sheddable_ones_are_shed_first() {
    let up = Upstream::start("u");
    let routes = "[[route]]\nname = \"reports\"\nservice = \"s\"\npriority = \"sheddable\"\nmatch.path_prefix = \"/reports\"\n\n\
                  [[route]]\nname = \"checkout\"\nservice = \"s\"\npriority = \"critical\"\nmatch.path_prefix = \"/checkout\"\n";
    // Limit 4, a quarter reserved: sheddable requests get at most 4 - 2*1 = 2 slots.
    let h = Headroom::start(&config(
        &up,
        "[service.s.shed]\nmax_inflight = 4\ncritical_reserve = 0.25",
        routes,
    ));
    let reports = burst(&h, 4, "/reports?delay=300");
    let ok = reports.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 2, "sheddable: half the limit at most: {reports:?}");
    // Sheddable requests hold their two slots; critical ones still get the other two.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let addr = h.addr;
            std::thread::spawn(move || Client::connect(addr).get("/reports?delay=1500").status)
        })
        .collect();
    h.wait_status("two sheddable in flight", |s| {
        s["services"][0]["shed"]["inflight"] == 2
    });
    assert_eq!(
        h.get("/reports").status,
        503,
        "a third sheddable one is shed"
    );
    let checkout = burst(&h, 2, "/checkout?delay=100");
    assert!(
        checkout.iter().all(|(s, _)| *s == 200),
        "critical: {checkout:?}"
    );
    for t in held {
        assert_eq!(t.join().unwrap(), 200);
    }
}

#[test]
fn a_failing_service_opens_its_circuit_and_fails_fast() {
    let up = Upstream::start("u");
    let h = Headroom::start(&config(
        &up,
        "[service.s.circuit]\nconsecutive_failures = 3\nfailure_rate = 0\nopen_for = \"60s\"\n[service.s.retry]\nattempts = 1",
        ONE_ROUTE,
    ));
    for _ in 0..3 {
        assert_eq!(h.get("/x?status=503").status, 503);
    }
    let r = h.get("/x");
    assert_eq!(
        r.status, 503,
        "open: even a request that would succeed fails fast"
    );
    assert_eq!(r.json()["error"], "circuit_open");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((55..=60).contains(&retry), "{retry}");
    assert_eq!(up.served(), 3, "nothing reached the upstream while open");
    assert_eq!(h.status()["services"][0]["circuit"], "open");
    assert_eq!(h.metric("headroom_guard_circuit_state{service=\"s\"}"), 2.0);
    assert!(h
        .stderr
        .wait_for("circuit open", std::time::Duration::from_secs(5))
        .is_some());
}

#[test]
fn a_4xx_is_not_a_failure_of_the_service() {
    let up = Upstream::start("u");
    let h = Headroom::start(&config(
        &up,
        "[service.s.circuit]\nconsecutive_failures = 2\nfailure_rate = 0",
        ONE_ROUTE,
    ));
    for _ in 0..5 {
        assert_eq!(h.get("/x?status=404").status, 404);
    }
    assert_eq!(h.get("/x").status, 200, "still closed");
    assert_eq!(h.status()["services"][0]["circuit"], "closed");
}
