//! Upstream pools that follow the load (issue 14): a burst larger than the old fixed
//! `max_idle = 64` comes back to the pool whole, so the next bursts reconnect nothing; idle
//! connections close after `idle_timeout` even with no traffic; many h2 streams on one
//! client connection reuse the same upstream connections; `max_conns` bounds the busy
//! connections, the requests past it wait and are handed the connections that come back; a
//! replica that closes its pooled connections costs no request. Counts and statuses, not
//! timings.

mod common;
use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Empty};

const BURST: usize = 100;

fn connects(h: &Headroom, up: &Upstream) -> f64 {
    h.metric(&format!(
        "headroom_upstream_connects_total{{service=\"s\",replica=\"{}\"}}",
        up.addr
    ))
}

/// `n` requests at once, each held `delay_ms` by the replica so that all are in flight
/// together: the pool needs `n` connections.
fn concurrent(h: &Headroom, n: usize, delay_ms: u64) {
    concurrent_path(h, n, &format!("/?delay={delay_ms}"))
}

fn concurrent_path(h: &Headroom, n: usize, path: &str) {
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let addr = h.addr;
            let path = path.to_string();
            std::thread::spawn(move || Client::connect(addr).get(&path).status)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
}

fn burst(h: &Headroom) {
    concurrent(h, BURST, 400);
}

type H2Send = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// `n` streams at once on `send`, each held 300 ms by the replica: how many got a 200.
async fn h2_round(send: &H2Send, n: usize) -> usize {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let mut send = send.clone();
            tokio::spawn(async move {
                let req = Request::get(format!("http://test.local/s/{i}?delay=300"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let resp = send.send_request(req).await.unwrap();
                let status = resp.status();
                resp.into_body().collect().await.unwrap();
                status
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap() == 200);
    }
    ok
}

#[test]
fn a_burst_larger_than_the_old_ceiling_does_not_reconnect_the_next_time() {
    let up = Upstream::start("a");
    let h = Headroom::start_with_args(&one_route_config(&up, ""), &["--workers", "1"]);
    burst(&h);
    let first = connects(&h, &up);
    assert!(
        first > 64.0 && first <= BURST as f64,
        "the burst needed more connections than the old max_idle of 64: {first}"
    );
    h.wait_status("the burst's connections back in the pool", |st| {
        st["services"][0]["replicas"][0]["idle_connections"] == first as u64
    });
    for _ in 0..2 {
        burst(&h);
        assert_eq!(
            connects(&h, &up),
            first,
            "the pool kept every connection of the first burst"
        );
    }
    let st = h.status();
    assert_eq!(st["services"][0]["connects"], first as u64);
    assert_eq!(st["services"][0]["max_idle"], 1024, "the default ceiling");
    let per_1k = st["services"][0]["connects_per_1k_requests"]
        .as_f64()
        .unwrap();
    assert!(
        (per_1k - first * 1000.0 / (3 * BURST) as f64).abs() < 1.0,
        "connects per 1k requests: {per_1k}"
    );
}

#[test]
fn the_ceiling_closes_the_coldest_connections_beyond_it() {
    let up = Upstream::start("a");
    let h = Headroom::start_with_args(
        &one_route_config_with(&up, "", "max_idle = 10"),
        &["--workers", "1"],
    );
    burst(&h);
    h.wait_status("ten idle connections kept", |st| {
        st["services"][0]["replicas"][0]["idle_connections"] == 10
    });
}

#[test]
fn idle_connections_close_after_idle_timeout_without_traffic() {
    let up = Upstream::start("a");
    let h = Headroom::start_with_args(
        &one_route_config_with(&up, "", "idle_timeout = \"1s\""),
        &["--workers", "1"],
    );
    concurrent(&h, 5, 300);
    h.wait_status("five idle connections", |st| {
        st["services"][0]["replicas"][0]["idle_connections"] == 5
    });
    // No request comes: only the sweep can close them.
    h.wait_status("the idle connections closed", |st| {
        st["services"][0]["replicas"][0]["idle_connections"] == 0
    });
    // The next request opens a new connection and is answered.
    assert_eq!(h.get("/").status, 200);
    assert_eq!(connects(&h, &up), 6.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_h2_streams_on_one_connection_reuse_the_upstream_connections() {
    let up = Upstream::start("a");
    let h = Headroom::start_with_args(&one_route_config(&up, ""), &["--workers", "1"]);
    let send = h2c_connect(h.addr).await.0;
    assert_eq!(h2_round(&send, 80).await, 80, "every stream answered");
    let first = connects(&h, &up);
    assert!(first > 0.0 && first <= 80.0, "{first}");
    h.wait_status("the streams' connections back in the pool", |st| {
        st["services"][0]["replicas"][0]["idle_connections"] == first as u64
    });
    assert_eq!(h2_round(&send, 80).await, 80, "every stream answered");
    assert_eq!(
        connects(&h, &up),
        first,
        "the second round of streams reused the first round's upstream connections"
    );
}

#[test]
fn past_max_conns_requests_wait_for_a_connection_and_are_handed_it() {
    let up = Upstream::start("a");
    let h = Headroom::start_with_args(
        &one_route_config_with(&up, "", "max_conns = 4"),
        &["--workers", "1"],
    );
    concurrent(&h, 20, 200);
    assert_eq!(
        connects(&h, &up),
        4.0,
        "twenty concurrent requests went over the four connections max_conns allows"
    );
    let st = h.status();
    let s = &st["services"][0];
    assert_eq!(s["max_conns"], 4);
    assert!(s["pool_waits"].as_u64().unwrap() >= 16, "{s}");
    assert_eq!(s["replicas"][0]["waiting_for_connection"], 0);
    assert!(
        h.metric("headroom_upstream_pool_waits_total{service=\"s\"}") >= 16.0,
        "the waits are counted"
    );
}

#[test]
fn a_connection_closed_instead_of_pooled_gives_its_place_to_a_waiting_request() {
    let up = Upstream::start("a");
    let h = Headroom::start_with_args(
        &one_route_config_with(&up, "", "max_conns = 2"),
        &["--workers", "1"],
    );
    // Every answer says `Connection: close`: no connection goes back to the pool, and each
    // waiting request opens its own under the place the closed one left.
    concurrent_path(&h, 8, "/?delay=100&header=connection%3Aclose");
    assert_eq!(
        connects(&h, &up),
        8.0,
        "one connection per request, none lost"
    );
    assert!(h.status()["services"][0]["pool_waits"].as_u64().unwrap() >= 1);
}

#[test]
fn a_request_that_finds_no_connection_within_connect_timeout_gets_503_and_the_replica_stays_in() {
    let up = Upstream::start("a");
    let h = Headroom::start_with_args(
        &one_route_config_with(&up, "", "max_conns = 1\nconnect_timeout = \"300ms\""),
        &["--workers", "1"],
    );
    let addr = h.addr;
    let slow = std::thread::spawn(move || Client::connect(addr).get("/?delay=3000").status);
    h.wait_status("the slow request holds the one connection", |st| {
        st["services"][0]["replicas"][0]["inflight"] == 1
    });
    let r = h.get("/");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("max_conns"), "{}", r.text());
    assert_eq!(slow.join().unwrap(), 200);
    let st = h.status();
    let replica = &st["services"][0]["replicas"][0];
    assert_eq!(replica["healthy"], true);
    assert_eq!(replica["available"], true, "saturation is not a failure");
    assert_eq!(h.get("/").status, 200);
}

#[test]
fn a_replica_that_closes_its_pooled_connections_costs_no_request() {
    let mut up = Upstream::start("a");
    let h = Headroom::start_with_args(&one_route_config(&up, ""), &["--workers", "1"]);
    concurrent(&h, 5, 200);
    h.wait_status("five idle connections", |st| {
        st["services"][0]["replicas"][0]["idle_connections"] == 5
    });
    // The replica restarts on the same address: every pooled connection is closed by it.
    let addr = up.addr.to_string();
    up.kill();
    let _up = Upstream::start_on(&addr, "a", &[]);
    for i in 0..10 {
        let r = h.get("/");
        assert_eq!(
            r.status,
            200,
            "request {i} after the replica closed the pool: {}",
            r.text()
        );
    }
    h.wait_status("the closed connections left the pool", |st| {
        st["services"][0]["replicas"][0]["idle_connections"] == 1
    });
}

/// 40 h2 streams on one client connection, 4 upstream connections allowed: every stream is
/// answered, and the 36 past the bound are handed the connections the others give back
/// (`h2load -c64 -m100` reopened half a connection per request without the bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_h2_streams_past_max_conns_share_the_bounded_connections() {
    let up = Upstream::start("a");
    let h = Headroom::start_with_args(
        &one_route_config_with(&up, "", "max_conns = 4\nconnect_timeout = \"20s\""),
        &["--workers", "1"],
    );
    let send = h2c_connect(h.addr).await.0;
    assert_eq!(h2_round(&send, 40).await, 40, "every stream answered");
    assert_eq!(connects(&h, &up), 4.0, "no more connections than max_conns");
    assert!(h.status()["services"][0]["pool_waits"].as_u64().unwrap() >= 36);
}
