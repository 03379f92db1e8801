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

#[test]
fn a_service_shedding_at_its_limit_is_named_with_the_limit_to_raise() {
    let up = Upstream::start("busy");
    let h = Headroom::start(&format!(
        "{}[[route]]\nservice = \"s\"\n\n[service.s]\nreplicas = [\"{}\"]\n[service.s.shed]\nmax_inflight = 2\n",
        preamble(),
        up.addr
    ));
    // Both slots held, no queue: the next 6 are shed.
    let addr = h.addr;
    let slow: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || Client::connect(addr).get("/slow?delay=1500").status))
        .collect();
    h.wait_status("both slots taken", |s| {
        s["services"][0]["shed"]["inflight"] == 2
    });
    for _ in 0..6 {
        assert_eq!(h.get("/x").status, 503);
    }
    // A request is counted when it ends.
    for t in slow {
        assert_eq!(t.join().unwrap(), 200);
    }
    let (_, findings) = advise(&h);
    let f = findings
        .iter()
        .find(|f| f["kind"] == "at_concurrency_ceiling")
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert!(
        f["evidence"]
            .as_str()
            .unwrap()
            .starts_with("6 of 8 requests shed (75%) since start (6 queue_full)"),
        "{f:#}"
    );
    assert!(
        f["change"]
            .as_str()
            .unwrap()
            .contains("[service.s.shed]\nmax_inflight = 4"),
        "{f:#}"
    );
}

#[test]
fn a_cache_that_rarely_hits_is_named_with_why() {
    let up = Upstream::start("origin");
    let h = Headroom::start(&format!(
        "{}[[route]]\nname = \"unique\"\nmatch.path_prefix = \"/unique\"\nservice = \"s\"\n[route.cache]\n\n\
         [[route]]\nname = \"unstorable\"\nservice = \"s\"\n[route.cache]\n\n\
         [service.s]\nreplicas = [\"{}\"]\n",
        preamble(),
        up.addr
    ));
    let mut c = h.client();
    for i in 0..50 {
        // Storable (max-age) but never asked again: a new query string each time.
        let r = c.get(&format!("/unique?n={i}&header=Cache-Control:max-age%3D60"));
        assert_eq!(r.status, 200);
        // The same URL each time, but Set-Cookie keeps it out of a shared cache.
        let r = c.get("/same?header=Cache-Control:max-age%3D60&header=Set-Cookie:id%3D1");
        assert_eq!(r.status, 200);
    }
    // A fill is stored as its body ends, which may be just after the client has it.
    h.wait_metric("headroom_cache_stored_total{route=\"unique\"}", 50.0);
    let (_, findings) = advise(&h);
    let of = |route: &str| {
        findings
            .iter()
            .find(|f| {
                f["kind"] == "cache_low_hit_ratio" && f["title"].as_str().unwrap().contains(route)
            })
            .unwrap_or_else(|| panic!("no finding for {route}: {findings:#?}"))
    };
    let unique = of("route unique");
    assert_eq!(
        unique["evidence"],
        "0 hits in 50 lookups (0%) since start; 50 answers stored from 50 misses, 0 bypassed"
    );
    assert!(
        unique["change"]
            .as_str()
            .unwrap()
            .contains("key = { query = \"none\" }"),
        "{unique:#}"
    );
    let unstorable = of("route unstorable");
    assert!(
        unstorable["evidence"]
            .as_str()
            .unwrap()
            .starts_with("0 hits in 50 lookups (0%) since start; 0 answers stored from 50 misses"),
        "{unstorable:#}"
    );
    let change = unstorable["change"].as_str().unwrap();
    assert!(
        change.contains("Set-Cookie") && change.contains("[route.cache]\nttl = "),
        "{change}"
    );
}

#[test]
fn connections_a_replica_never_lets_be_reused_are_named() {
    let up = Upstream::start("closer");
    let h = Headroom::start(&format!(
        "{}[[route]]\nname = \"closing\"\nmatch.path_prefix = \"/closing\"\nservice = \"c\"\n\n\
         [[route]]\nservice = \"k\"\n\n\
         [service.c]\nreplicas = [\"{a}\"]\n\n[service.k]\nreplicas = [\"{a}\"]\n",
        preamble(),
        a = up.addr
    ));
    let mut client = h.client();
    for _ in 0..50 {
        // The upstream answers each with `Connection: close`: nothing to pool.
        assert_eq!(client.get("/closing?header=Connection:close").status, 200);
        assert_eq!(client.get("/kept").status, 200);
    }
    let (_, findings) = advise(&h);
    let churn: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| f["kind"] == "connection_churn")
        .collect();
    assert_eq!(churn.len(), 1, "only service c: {findings:#?}");
    let f = churn[0];
    assert_eq!(f["title"], "connections to service c are not reused");
    assert!(
        f["evidence"]
            .as_str()
            .unwrap()
            .starts_with("50 connections opened for 50 requests forwarded since start (100%)"),
        "{f:#}"
    );
    assert!(
        f["change"]
            .as_str()
            .unwrap()
            .contains("[service.c]\nprotocol = \"h2\""),
        "{f:#}"
    );
}

#[test]
fn a_request_timeout_far_above_the_latency_is_named_with_a_tighter_one() {
    let up = Upstream::start("quick");
    let h = Headroom::start(&format!(
        "{}[[route]]\nname = \"other\"\nmatch.path_prefix = \"/other\"\nservice = \"d\"\n\n[[route]]\nname = \"api\"\nservice = \"s\"\n\n\
         [service.s]\nreplicas = [\"{a}\"]\nrequest_timeout = \"20s\"\n\n[service.d]\nreplicas = [\"{a}\"]\n",
        preamble(),
        a = up.addr
    ));
    let mut c = h.client();
    for _ in 0..100 {
        assert_eq!(c.get("/x").status, 200);
        // The default timeout over the same latency: headroom's choice, not reported.
        assert_eq!(c.get("/other").status, 200);
    }
    let (_, findings) = advise(&h);
    let timeouts: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| f["kind"] == "timeout_far_above_latency")
        .collect();
    assert_eq!(timeouts.len(), 1, "only service s: {findings:#?}");
    let f = timeouts[0];
    let evidence = f["evidence"].as_str().unwrap();
    assert!(
        evidence.starts_with("p99 of 100 upstream answers under ")
            && evidence.contains("request_timeout = 20s"),
        "{f:#}"
    );
    assert_eq!(
        f["change"].as_str().unwrap().lines().last(),
        Some("request_timeout = \"1s\""),
        "{f:#}"
    );
}

#[test]
fn a_route_without_a_cache_whose_answers_a_shared_cache_could_keep_is_named() {
    let up = Upstream::start("origin");
    let h = Headroom::start(&format!(
        "{}[[route]]\nname = \"private\"\nmatch.path_prefix = \"/me\"\nservice = \"s\"\n\n\
         [[route]]\nname = \"cached\"\nmatch.path_prefix = \"/cached\"\nservice = \"s\"\n[route.cache]\n\n\
         [[route]]\nname = \"catalog\"\nservice = \"s\"\n\n\
         [service.s]\nreplicas = [\"{}\"]\n",
        preamble(),
        up.addr
    ));
    let mut c = h.client();
    for i in 0..60 {
        // A lifetime for shared caches, on a route without a cache.
        let r = c.get(&format!(
            "/items/{i}?header=Cache-Control:public,%20max-age%3D60"
        ));
        assert_eq!(r.status, 200);
        // Private: not for a shared cache, whatever its max-age.
        let r = c.get(&format!(
            "/me/{i}?header=Cache-Control:private,%20max-age%3D60"
        ));
        assert_eq!(r.status, 200);
        // Already cached: the route is not counted.
        let r = c.get(&format!("/cached/{i}?header=Cache-Control:max-age%3D60"));
        assert_eq!(r.status, 200);
    }
    // A POST's answer is not counted, whatever it says; it is a 2xx of the route.
    for _ in 0..10 {
        let r = c.request(
            "POST",
            "/items?header=Cache-Control:max-age%3D60",
            &[],
            b"x",
        );
        assert_eq!(r.status, 200);
    }
    h.wait_metric(
        "headroom_requests_total{route=\"catalog\",service=\"s\",class=\"2xx\"}",
        70.0,
    );
    let (code, findings) = advise(&h);
    assert_eq!(code, 1);
    let named: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| f["kind"] == "cacheable_without_cache")
        .collect();
    assert_eq!(named.len(), 1, "only route catalog: {findings:#?}");
    let f = named[0];
    assert!(
        f["title"].as_str().unwrap().contains("route catalog"),
        "{f:#}"
    );
    assert!(
        f["evidence"]
            .as_str()
            .unwrap()
            .starts_with("60 of its 70 2xx answers (86%) since start were GET 200s"),
        "{f:#}"
    );
    assert!(
        f["change"]
            .as_str()
            .unwrap()
            .contains("route \"catalog\"'s [[route]] table:\n[route.cache]"),
        "{f:#}"
    );
}

#[test]
fn a_cache_storing_answers_that_set_a_cookie_and_one_refused_them_for_it_are_named() {
    let up = Upstream::start("origin");
    let h = Headroom::start(&format!(
        "{}[[route]]\nname = \"shop\"\nmatch.path_prefix = \"/shop\"\nservice = \"s\"\n[route.cache]\nallow_set_cookie = true\n\n\
         [[route]]\nname = \"pages\"\nservice = \"s\"\n[route.cache]\n\n\
         [service.s]\nreplicas = [\"{}\"]\n",
        preamble(),
        up.addr
    ));
    let mut c = h.client();
    for i in 0..5 {
        let r = c.get(&format!(
            "/shop/cart?n={i}&header=Cache-Control:max-age%3D60&header=Set-Cookie:sid%3D{i}"
        ));
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("set-cookie"),
            Some(&*format!("sid={i}")),
            "the filler gets it"
        );
    }
    // Stored without a cookie: not counted.
    assert_eq!(
        c.get("/shop/plain?header=Cache-Control:max-age%3D60")
            .status,
        200
    );
    for i in 0..50 {
        let r = c.get(&format!(
            "/page/{i}?header=Cache-Control:max-age%3D60&header=Set-Cookie:id%3D1"
        ));
        assert_eq!(r.status, 200);
        assert!(
            r.header("cache-status")
                .unwrap()
                .contains("detail=set-cookie"),
            "{:?}",
            r.headers
        );
    }
    h.wait_metric("headroom_cache_stored_total{route=\"shop\"}", 6.0);
    h.wait_metric(
        "headroom_cache_not_stored_total{route=\"pages\",reason=\"set-cookie\"}",
        50.0,
    );
    let (_, findings) = advise(&h);
    let of = |route: &str| -> Vec<&serde_json::Value> {
        findings
            .iter()
            .filter(|f| {
                f["kind"] == "cache_stores_set_cookie"
                    && f["title"].as_str().unwrap().contains(route)
            })
            .collect()
    };
    let shop = of("route shop");
    assert_eq!(shop.len(), 1, "{findings:#?}");
    assert!(
        shop[0]["evidence"]
            .as_str()
            .unwrap()
            .starts_with("5 of the 6 answers stored since start came with Set-Cookie"),
        "{:#}",
        shop[0]
    );
    assert!(
        shop[0]["change"]
            .as_str()
            .unwrap()
            .contains("[route.cache]\nallow_set_cookie = false"),
        "{:#}",
        shop[0]
    );
    let pages = of("route pages");
    assert_eq!(pages.len(), 1, "{findings:#?}");
    assert!(
        pages[0]["evidence"]
            .as_str()
            .unwrap()
            .starts_with("50 of 50 misses (100%) since start were not stored because the answer carried Set-Cookie"),
        "{:#}",
        pages[0]
    );
    assert!(
        pages[0]["change"]
            .as_str()
            .unwrap()
            .contains("[route.cache]\nallow_set_cookie = true"),
        "{:#}",
        pages[0]
    );
}

#[test]
fn one_path_making_most_of_a_routes_slow_requests_is_named_with_a_route_of_its_own() {
    let up = Upstream::start("origin");
    let h = Headroom::start(&format!(
        "{}[[route]]\nname = \"api\"\nservice = \"s\"\n\n[service.s]\nreplicas = [\"{}\"]\n",
        preamble(),
        up.addr
    ));
    let mut c = h.client();
    // One request in 41 is slow (60 ms, past the 50 ms bound): ~2.4%, so the route's p99
    // falls among them, in every window the threshold is taken from.
    let mut traffic = |rounds: usize| {
        for i in 0..rounds {
            for j in 0..40 {
                assert_eq!(c.get(&format!("/items/{}", (i * 40 + j) % 7)).status, 200);
            }
            assert_eq!(c.get("/reports/export?delay=60").status, 200);
        }
    };
    traffic(25);
    // 50 ms (the slow ones' bucket's lower bound); a loaded machine may push a window's p99
    // elsewhere, and any threshold under the slow requests' 60 ms counts them all.
    h.wait_status("the route's slow threshold is under 60 ms", |s| {
        s["routes"][0]["slow"]["threshold_ms"]
            .as_f64()
            .is_some_and(|t| t <= 60.0)
    });
    traffic(25);
    h.wait_status("the slow requests are counted", |s| {
        s["routes"][0]["slow"]["slow"].as_u64().unwrap_or(0) >= 25
    });
    let status = h.status();
    let slow = &status["routes"][0]["slow"];
    assert_eq!(slow["top"][0]["request"], "GET /reports/export", "{slow:#}");
    let (_, findings) = advise(&h);
    let f = findings
        .iter()
        .find(|f| f["kind"] == "slow_path_dominates_p99")
        .unwrap_or_else(|| panic!("{slow:#} {findings:#?}"));
    let title = f["title"].as_str().unwrap();
    assert!(
        title.starts_with("GET /reports/export is ")
            && title.contains("% of route api's requests above its p99 (")
            && title.ends_with(" ms)"),
        "{f:#}"
    );
    let evidence = f["evidence"].as_str().unwrap();
    assert!(
        evidence.contains(" since start were GET /reports/export, which is "),
        "{f:#}"
    );
    let change = f["change"].as_str().unwrap();
    assert!(
        change.contains(
            "[[route]]\nname = \"api-reports-export\"\nmatch.path = \"/reports/export\"\nservice = \"s-slow\""
        ) && change.contains("[route.cache]")
            && change.contains("[service.s-slow]"),
        "{change}"
    );
}

/// A service's objective names its service; a route answering by itself (`respond`) has no
/// service to change, and the finding says so rather than inventing `[service.NAME]`.
#[test]
fn a_service_objective_names_its_service_and_a_fixed_route_none() {
    let up = Upstream::start("u");
    let h = Headroom::start(&format!(
        "{}[[route]]\nname = \"fixed\"\nmatch.path = \"/fixed\"\nrespond = {{ status = 500, body = \"no\" }}\n\n\
         [[route]]\nname = \"api\"\nservice = \"s\"\n\n[service.s]\nreplicas = [\"{}\"]\nretry = {{ attempts = 1 }}\n\n\
         [[watch.slo]]\nservice = \"s\"\nobjective = \"99.9%\"\n\n\
         [[watch.slo]]\nroute = \"fixed\"\nobjective = \"99.9%\"\n",
        preamble(),
        up.addr
    ));
    for _ in 0..20 {
        assert_eq!(h.get("/x?status=503").status, 503);
        assert_eq!(h.get("/fixed").status, 500);
    }
    h.wait_watch("both judged", |w| {
        w["slos"][0]["bad"] == 20 && w["slos"][1]["bad"] == 20
    });
    let (_, findings) = advise(&h);
    let of = |title: &str| {
        findings
            .iter()
            .find(|f| f["kind"] == "slo_burning" && f["title"].as_str().unwrap().starts_with(title))
            .unwrap_or_else(|| panic!("{title}: {findings:#?}"))
            .clone()
    };
    let service = of("service s");
    assert!(
        service["change"]
            .as_str()
            .unwrap()
            .contains("[service.s]\nretry = "),
        "{service:#}"
    );
    let fixed = of("route fixed");
    let change = fixed["change"].as_str().unwrap();
    assert!(!change.contains("[service."), "{change}");
    assert!(
        change.contains("answers with its own `respond`"),
        "{change}"
    );
}

/// Requests that queue for `max_conns` connections are named, with the bound to change.
#[test]
fn requests_waiting_for_a_free_connection_are_named() {
    let up = Upstream::start("u");
    let h = Headroom::start_with_args(
        &one_route_config_with(&up, "", "max_conns = 2\nconnect_timeout = \"20s\""),
        &["--workers", "1"],
    );
    let threads: Vec<_> = (0..60)
        .map(|_| {
            let addr = h.addr;
            std::thread::spawn(move || Client::connect(addr).get("/?delay=20").status)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    let (code, findings) = advise(&h);
    assert_eq!(code, 1, "{findings:#?}");
    let f = findings
        .iter()
        .find(|f| f["kind"] == "pool_saturated")
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert!(
        f["evidence"]
            .as_str()
            .unwrap()
            .contains("of 60 requests forwarded"),
        "{f:#}"
    );
    assert!(
        f["change"]
            .as_str()
            .unwrap()
            .ends_with("[service.s]\nmax_conns = 8"),
        "{f:#}"
    );
}
