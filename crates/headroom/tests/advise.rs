//! `headroom advise` against a running headroom: each finding's situation is built for real
//! (real upstreams, real traffic), and a healthy gateway gets none.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// `headroom advise --json` against `h`: (exit code, findings).
fn advise(h: &Headroom) -> (i32, Vec<serde_json::Value>) {
    let out = Command::new(BIN)
        .args(["advise", "--json", "--admin"])
        .arg(h.admin.unwrap().to_string())
        .output()
        .unwrap();
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap(), findings)
}

fn kinds(f: &[serde_json::Value]) -> Vec<&str> {
    f.iter().filter_map(|x| x["kind"].as_str()).collect()
}

#[test]
fn a_healthy_gateway_gets_no_findings() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let h = Headroom::start(&format!(
        "{}[[route]]\nname = \"app\"\nservice = \"s\"\n[[route.limit]]\nrate = \"1000/s\"\n\n\
         [service.s]\nreplicas = [\"{}\", \"{}\"]\n\n[[watch.slo]]\nroute = \"app\"\nobjective = \"99%\"\n",
        preamble(),
        a.addr,
        b.addr
    ));
    for _ in 0..40 {
        assert_eq!(h.get("/x").status, 200);
    }
    h.wait_watch("the SLO has judged the traffic", |w| {
        w["slos"][0]["total"] == 40
    });
    let (code, findings) = advise(&h);
    assert!(findings.is_empty(), "{findings:#?}");
    assert_eq!(code, 0);
}

#[test]
fn a_route_burning_its_budget_is_named_with_the_retry_to_add() {
    let up = Upstream::start("u");
    let h = Headroom::start(&format!(
        "{}[[route]]\nname = \"api\"\nservice = \"s\"\n\n[service.s]\nreplicas = [\"{}\"]\nretry = {{ attempts = 1 }}\n\n\
         [[watch.slo]]\nroute = \"api\"\nobjective = \"99.9%\"\n",
        preamble(),
        up.addr
    ));
    for _ in 0..20 {
        assert_eq!(h.get("/x?status=503").status, 503);
    }
    h.wait_watch("the burn is judged", |w| w["slos"][0]["bad"] == 20);
    let (code, findings) = advise(&h);
    assert_eq!(code, 1);
    let f = &findings[0];
    assert_eq!(f["kind"], "slo_burning", "{findings:#?}");
    assert!(
        f["evidence"]
            .as_str()
            .unwrap()
            .starts_with("20 of 20 requests bad"),
        "{f:#}"
    );
    assert!(
        f["change"]
            .as_str()
            .unwrap()
            .contains("[service.s]\nretry = "),
        "{f:#}"
    );
}

#[test]
fn a_replica_much_slower_than_its_peers_is_named() {
    let fast = Upstream::start("fast");
    let slow = Upstream::start_with("slow", &["--delay-ms", "40"]);
    let h = Headroom::start(&format!(
        "{}[[route]]\nservice = \"s\"\n\n[service.s]\nbalance = \"round-robin\"\nreplicas = [\"{}\", \"{}\"]\n",
        preamble(),
        fast.addr,
        slow.addr
    ));
    for _ in 0..30 {
        assert_eq!(h.get("/x").status, 200);
    }
    let (_, findings) = advise(&h);
    let f = findings
        .iter()
        .find(|f| f["kind"] == "slow_replica")
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert!(
        f["title"]
            .as_str()
            .unwrap()
            .contains(&slow.addr.to_string()),
        "{f:#}"
    );
    assert_eq!(kinds(&findings), ["slow_replica"], "only the slow one");
    assert!(f["change"]
        .as_str()
        .unwrap()
        .contains("balance = \"p2c-ewma\""));
}

#[test]
fn a_limit_refusing_most_requests_and_retries_out_of_budget_are_named() {
    let up = Upstream::start("u");
    let other = Upstream::start("v");
    let h = Headroom::start(&format!(
        "{}[[route]]\nname = \"flaky\"\nmatch.path_prefix = \"/flaky\"\nservice = \"f\"\n\n\
         [[route]]\nname = \"api\"\nservice = \"s\"\n[[route.limit]]\nname = \"tight\"\nrate = \"2/h\"\n\n\
         [service.s]\nreplicas = [\"{a}\"]\n\n\
         [service.f]\nreplicas = [\"{a}\", \"{b}\"]\nretry = {{ attempts = 2, on_status = [503], budget = \"0%\", min_per_second = 1 }}\n",
        preamble(),
        a = up.addr,
        b = other.addr
    ));
    for _ in 0..30 {
        h.get("/x");
    }
    for _ in 0..10 {
        h.get("/flaky?status=503");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let findings = loop {
        let (_, f) = advise(&h);
        if kinds(&f).contains(&"retries_refused") || Instant::now() > deadline {
            break f;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let limited = findings
        .iter()
        .find(|f| f["kind"] == "mostly_rate_limited")
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert!(
        limited["evidence"]
            .as_str()
            .unwrap()
            .starts_with("28 of 30 requests limited"),
        "{limited:#}"
    );
    let retries = findings
        .iter()
        .find(|f| f["kind"] == "retries_refused")
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert!(
        retries["title"].as_str().unwrap().contains("service f"),
        "{retries:#}"
    );
    let impacts: Vec<u64> = findings
        .iter()
        .map(|f| f["impact"].as_u64().unwrap())
        .collect();
    let mut sorted = impacts.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(impacts, sorted, "most impact first");
}

#[test]
fn a_slow_route_gets_only_the_changes_its_service_lacks() {
    let up = Upstream::start_with("slow", &["--delay-ms", "30"]);
    let h = Headroom::start(&format!(
        "{}[[route]]\nname = \"api\"\nservice = \"s\"\n\n[service.s]\nbalance = \"p2c-ewma\"\nreplicas = [\"{}\"]\n\n\
         [[watch.slo]]\nroute = \"api\"\nobjective = \"99%\"\nlatency = \"25ms\"\n",
        preamble(),
        up.addr
    ));
    for _ in 0..10 {
        assert_eq!(h.get("/x").status, 200);
    }
    h.wait_watch("the slow answers are judged", |w| w["slos"][0]["bad"] == 10);
    let (_, findings) = advise(&h);
    let f = findings
        .iter()
        .find(|f| f["kind"] == "slo_burning")
        .unwrap_or_else(|| panic!("{findings:#?}"));
    let change = f["change"].as_str().unwrap();
    assert!(!change.contains("balance ="), "already p2c-ewma: {change}");
    assert!(
        change.contains("[service.s.shed]\nadaptive = true"),
        "{change}"
    );
}
