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
