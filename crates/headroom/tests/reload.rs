//! Every setting a reload changes takes effect, or the reload is refused with the reason:
//! one test per kind of setting.

mod common;
use common::*;

fn config(ups: &[&Upstream], service_extra: &str) -> String {
    format!(
        "{}[[route]]\nservice = \"s\"\n\n[service.s]\nreplicas = [{}]\n{service_extra}\n",
        preamble(),
        replicas(ups)
    )
}

fn statuses(h: &Headroom, n: usize) -> Vec<u16> {
    let mut c = h.client();
    (0..n).map(|_| c.get("/").status).collect()
}

#[test]
fn a_reload_applies_a_changed_retry_budget() {
    let bad = Upstream::start_with("bad", &["--error-rate", "1.0"]);
    let good = Upstream::start("good");
    let rest = "balance = \"round-robin\"\noutlier = { consecutive_failures = 0 }";
    let h = Headroom::start(&config(
        &[&bad, &good],
        &format!("{rest}\nretry = {{ attempts = 2, on_status = [500], budget = \"0%\", min_per_second = 0 }}"),
    ));
    // No budget: every first try at "bad" keeps its 500.
    assert!(statuses(&h, 10).contains(&500));
    let outcome = h.reload(&config(
        &[&bad, &good],
        &format!("{rest}\nretry = {{ attempts = 2, on_status = [500], budget = \"100%\", min_per_second = 0 }}"),
    ));
    assert!(outcome.contains("config reloaded"), "{outcome}");
    assert_eq!(statuses(&h, 10), vec![200; 10]);
}

#[test]
fn a_reload_applies_changed_timeouts() {
    let slow = Upstream::start_with("slow", &["--delay-ms", "300"]);
    let h = Headroom::start(&config(&[&slow], "request_timeout = \"5s\""));
    assert_eq!(statuses(&h, 1), vec![200]);
    h.reload(&config(&[&slow], "request_timeout = \"50ms\""));
    assert_eq!(statuses(&h, 1), vec![504]);
}

#[test]
fn a_reload_applies_changed_health_checks() {
    let up = Upstream::start("up");
    let h = Headroom::start(&config(
        &[&up],
        "health = { interval = \"100ms\", rise = 1, fall = 1 }",
    ));
    assert_eq!(statuses(&h, 1), vec![200]);
    // The replica answers 200 to its checks; the new config expects 204.
    h.reload(&config(
        &[&up],
        "health = { interval = \"100ms\", rise = 1, fall = 1, expect_status = 204 }",
    ));
    h.wait_status("the replica unhealthy", |st| {
        st["services"][0]["replicas"][0]["healthy"] == false
    });
    assert_eq!(statuses(&h, 1), vec![503]);
}

#[test]
fn a_reload_applies_a_changed_outlier_policy() {
    let bad = Upstream::start_with("bad", &["--error-rate", "1.0"]);
    let good = Upstream::start("good");
    let rest = "balance = \"round-robin\"\nretry = { attempts = 1 }";
    let h = Headroom::start(&config(
        &[&bad, &good],
        &format!("{rest}\noutlier = {{ consecutive_failures = 0 }}"),
    ));
    statuses(&h, 10);
    assert_no_ejections(&h);
    h.reload(&config(
        &[&bad, &good],
        &format!("{rest}\noutlier = {{ consecutive_failures = 2, base_ejection = \"1m\" }}"),
    ));
    statuses(&h, 10);
    let bad_addr = bad.addr.to_string();
    h.wait_status("bad ejected", |st| {
        st["services"][0]["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["replica"] == bad_addr.as_str() && r["ejected"] == true)
    });
}

#[test]
fn a_reload_applies_changed_weights() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let weighted = |wa: u32| {
        format!(
            "{}[[route]]\nservice = \"s\"\n\n[service.s]\nbalance = \"round-robin\"\nreplicas = [{{ addr = \"{}\", weight = {wa} }}, \"{}\"]\n",
            preamble(),
            a.addr,
            b.addr
        )
    };
    let h = Headroom::start(&weighted(1));
    let count_a = |h: &Headroom| {
        let mut c = h.client();
        (0..40).filter(|_| c.get("/").replica() == "a").count()
    };
    assert_eq!(count_a(&h), 20);
    h.reload(&weighted(3));
    assert_eq!(count_a(&h), 30);
}

#[test]
fn a_reload_that_cannot_take_effect_is_refused_with_the_reason() {
    let up = Upstream::start("up");
    let h = Headroom::start_with_args(&config(&[&up], ""), &[]);
    let with_workers = config(&[&up], "").replacen("[global]\n", "[global]\nworkers = 3\n", 1);
    let outcome = h.reload(&with_workers);
    assert!(
        outcome.contains("config not reloaded") && outcome.contains("workers"),
        "{outcome}"
    );
    let other_admin = config(&[&up], "").replacen(
        "[admin]\nbind = \"127.0.0.1:0\"",
        "[admin]\nenabled = false",
        1,
    );
    let outcome = h.reload(&other_admin);
    assert!(
        outcome.contains("config not reloaded") && outcome.contains("admin"),
        "{outcome}"
    );
    assert_eq!(
        h.metric("headroom_config_reloads_total{result=\"rejected\"}"),
        2.0
    );
    assert_eq!(statuses(&h, 1), vec![200]);
}

#[test]
fn a_reload_applies_a_changed_admin_token() {
    let up = Upstream::start("up");
    let h = Headroom::start(&config(&[&up], ""));
    assert_eq!(h.admin_get("/status").status, 200);
    h.reload(&config(&[&up], "").replacen(
        "[admin]\nbind = \"127.0.0.1:0\"",
        "[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"t0ken\"",
        1,
    ));
    assert_eq!(h.admin_get("/status").status, 401);
}

#[test]
fn a_reload_can_turn_on_watching_the_config_file() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let h = Headroom::start(&config(&[&a], ""));
    let watching = |up: &Upstream| config(&[up], "").replace("watch = false", "watch = true");
    h.reload(&watching(&a));
    std::fs::write(&h.config, watching(&b)).unwrap();
    h.stderr
        .wait_for("file change", std::time::Duration::from_secs(10))
        .expect("reloaded on the file change");
    assert_eq!(h.get("/").replica(), "b");
}

#[test]
fn a_reload_keeps_the_series_of_other_services_and_forgets_removed_routes() {
    let (shared, other) = (Upstream::start("shared"), Upstream::start("other"));
    let two = |a_replicas: &str, with_route_b: bool| {
        format!(
            "{}[[route]]\nname = \"ra\"\nmatch = {{ path_prefix = \"/a\" }}\nservice = \"a\"\n\n{}[service.a]\nreplicas = [{a_replicas}]\n\n[service.b]\nreplicas = [\"{}\"]\n",
            preamble(),
            if with_route_b { "[[route]]\nname = \"rb\"\nmatch = { path_prefix = \"/b\" }\nservice = \"b\"\n\n" } else { "" },
            shared.addr
        )
    };
    let h = Headroom::start(&two(
        &format!("\"{}\", \"{}\"", shared.addr, other.addr),
        true,
    ));
    assert_eq!(h.get("/b").status, 200);
    let series = |service: &str| {
        format!(
            "headroom_replica_healthy{{service=\"{service}\",replica=\"{}\"}}",
            shared.addr
        )
    };
    assert_eq!(h.metric(&series("a")), 1.0);
    assert_eq!(h.metric(&series("b")), 1.0);
    // Service "a" drops the replica it shares with "b", and route "rb" goes.
    h.reload(&two(&format!("\"{}\"", other.addr), false));
    let m = h.metrics();
    assert!(!m.contains(&series("a")), "{m}");
    assert!(m.contains(&series("b")), "b's series stay:\n{m}");
    assert!(
        !m.contains("route=\"rb\""),
        "the removed route's series go:\n{m}"
    );
    assert!(m.contains("route=\"ra\""), "{m}");
}
