//! DNS discovery end to end: a tiny DNS responder on a loopback UDP port (the edge's test
//! responder) answers for `app.test`; headroom's replica set follows its answers.

mod common;
use common::*;
use headroom_edge::discovery::test_responder::{Answer, DnsResponder};
use std::net::IpAddr;

fn ips(list: &[&str]) -> Answer {
    Answer::Records(list.iter().map(|s| s.parse::<IpAddr>().unwrap()).collect())
}

fn dns_replicas(st: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = st["services"][0]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["source"] == "dns")
        .map(|r| r["replica"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn replicas_follow_the_dns_answers() {
    // Free on 127.0.0.1, so (very likely) on 127.0.0.2 and .3 as well.
    let port = free_port();
    let a = Upstream::start_on(&format!("127.0.0.2:{port}"), "a", &[]);
    let b = Upstream::start_on(&format!("127.0.0.3:{port}"), "b", &[]);
    let dns = DnsResponder::start().unwrap();
    dns.set("app.test", ips(&["127.0.0.2"]));
    let config = format!(
        "{}[[route]]\nservice = \"s\"\n\n[service.s]\nbalance = \"round-robin\"\nslow_start = \"0s\"\nreplicas = {{ dns = \"app.test:{port}\", interval = \"100ms\" }}\n",
        preamble().replacen("[global]\n", &format!("[global]\nresolver = \"{}\"\n", dns.addr()), 1)
    );
    let h = Headroom::start(&config);
    let (ra, rb) = (a.addr.to_string(), b.addr.to_string());
    h.wait_status("the first answer", |st| {
        dns_replicas(st) == vec![ra.clone()]
    });
    assert_eq!(h.get("/").replica(), "a");

    // A record appears: added.
    dns.set("app.test", ips(&["127.0.0.2", "127.0.0.3"]));
    h.wait_status("both replicas", |st| {
        dns_replicas(st) == vec![ra.clone(), rb.clone()]
    });
    let mut c = h.client();
    let seen: std::collections::BTreeSet<String> = (0..6).map(|_| c.get("/").replica()).collect();
    assert_eq!(seen.len(), 2, "{seen:?}");

    // A record vanishes: drained, then removed.
    dns.set("app.test", ips(&["127.0.0.3"]));
    h.wait_status("a removed", |st| dns_replicas(st) == vec![rb.clone()]);
    for _ in 0..4 {
        assert_eq!(c.get("/").replica(), "b");
    }

    // The resolver fails: the last set stays, the failure is counted and logged once.
    dns.set("app.test", Answer::ServerFailure);
    h.wait_metric_at_least("headroom_dns_lookup_failures_total{service=\"s\"}", 3.0);
    assert_eq!(dns_replicas(&h.status()), vec![rb.clone()]);
    assert_eq!(c.get("/").status, 200);
    assert_eq!(
        h.stderr
            .count("DNS lookup failed; keeping the last replicas"),
        1
    );

    // An empty answer counts as a failure too and keeps the set.
    dns.set("app.test", ips(&[]));
    let before = h.metric("headroom_dns_lookup_failures_total{service=\"s\"}");
    h.wait_metric_at_least(
        "headroom_dns_lookup_failures_total{service=\"s\"}",
        before + 2.0,
    );
    assert_eq!(dns_replicas(&h.status()), vec![rb.clone()]);

    // Answers again: logged once, and the set follows.
    dns.set("app.test", ips(&["127.0.0.2"]));
    h.wait_status("a back", |st| dns_replicas(st) == vec![ra.clone()]);
    assert_eq!(h.stderr.count("DNS lookups succeed again"), 1);
}
