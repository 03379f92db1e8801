//! The cache end to end: a real headroom in front of a real upstream (`demo-upstream`,
//! whose `header=` and `etag=` query parameters shape its responses). The RFC 9111 rules
//! themselves are unit-tested in headroom-cache (policy, and the route cache with a manual
//! clock); these check that the edge wires them in: what reaches the upstream, what the
//! client gets, and the headers that say so.

mod common;
use common::*;
use std::io::Read;

fn cached(up: &Upstream, route_cache: &str, extra: &str) -> String {
    format!(
        "{pre}[[route]]\nname = \"app\"\nservice = \"s\"\n[route.cache]\n{route_cache}\n\n[service.s]\nreplicas = [\"{addr}\"]\n\n{extra}\n",
        pre = preamble(),
        addr = up.addr
    )
}

const MAX_AGE_60: &str = "header=cache-control:max-age%3D60";

#[test]
fn a_fresh_stored_response_is_served_without_the_upstream() {
    // RFC 9111 §4.2: a fresh stored response satisfies the request.
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "", ""));
    let path = format!("/a?{MAX_AGE_60}");
    let first = h.get(&path);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert!(first.header("cache-status").unwrap().contains("stored"));
    let second = h.get(&path);
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.body, first.body);
    assert!(
        second.header("age").is_some(),
        "a cached answer carries Age (§5.1)"
    );
    assert!(second
        .header("cache-status")
        .unwrap()
        .starts_with("headroom; hit; ttl="));
    assert_eq!(up.served(), 1, "the hit never reached the upstream");
}

#[test]
fn a_response_without_freshness_or_validators_is_not_stored() {
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "", ""));
    h.get("/plain");
    let again = h.get("/plain");
    assert_eq!(again.header("x-cache"), Some("MISS"));
    assert_eq!(up.served(), 2);
}

#[test]
fn no_store_and_private_responses_are_not_stored() {
    // RFC 9111 §3 and §5.2.2.7: a shared cache stores neither.
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "", ""));
    for cc in ["no-store%2C%20max-age%3D60", "private%2C%20max-age%3D60"] {
        let p = format!("/x?header=cache-control:{cc}");
        h.get(&p);
        let r = h.get(&p);
        assert_eq!(r.header("x-cache"), Some("MISS"), "{cc}");
    }
    assert_eq!(up.served(), 4);
}

#[test]
fn a_page_rule_ttl_caches_what_the_origin_did_not_mark() {
    let up = Upstream::start("u");
    let rules = "[[route.cache.rule]]\nmatch = \"*.{css,js}\"\nttl = \"1h\"\n\n[[route.cache.rule]]\nmatch = \"/private/**\"\nbypass = true\n";
    let h = Headroom::start(&cached(&up, rules, ""));
    h.get("/assets/app.1a2b3c.js");
    assert_eq!(
        h.get("/assets/app.1a2b3c.js").header("x-cache"),
        Some("HIT")
    );
    // A new version is a new URL: cache-busting needs nothing else.
    assert_eq!(
        h.get("/assets/app.4d5e6f.js").header("x-cache"),
        Some("MISS")
    );
    let p = format!("/private/x?{MAX_AGE_60}");
    let r = h.get(&p);
    assert_eq!(r.header("x-cache"), Some("BYPASS"));
    assert_eq!(h.get(&p).header("x-cache"), Some("BYPASS"));
    assert_eq!(up.served(), 4);
}

#[test]
fn a_bypass_cookie_keeps_the_request_away_from_the_cache() {
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "bypass_cookies = [\"session_id\"]", ""));
    let p = format!("/page?{MAX_AGE_60}");
    h.get(&p);
    let mut c = h.client();
    let r = c.request("GET", &p, &[("cookie", "theme=dark; session_id=abc")], b"");
    assert_eq!(r.header("x-cache"), Some("BYPASS"));
    assert!(r.header("cache-status").unwrap().contains("detail=cookie"));
    assert_eq!(h.get(&p).header("x-cache"), Some("HIT"));
    assert_eq!(up.served(), 2);
}

#[test]
fn head_is_answered_from_a_stored_get() {
    // RFC 9110 §9.3.2 and RFC 9111 §4: HEAD from the stored GET, same headers, no body.
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "", ""));
    let p = format!("/h?{MAX_AGE_60}");
    let get = h.get(&p);
    let mut c = h.client();
    let head = c.request("HEAD", &p, &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("x-cache"), Some("HIT"));
    assert_eq!(head.header("content-length"), get.header("content-length"));
    assert!(head.body.is_empty());
    assert_eq!(up.served(), 1);
}

#[test]
fn a_clients_conditional_request_gets_304_from_the_cache() {
    // RFC 9111 §4.3.2: the cache evaluates If-None-Match against the stored ETag.
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "", ""));
    let p = format!("/e?etag=v1&{MAX_AGE_60}");
    let first = h.get(&p);
    assert_eq!(first.header("etag"), Some("\"v1\""));
    let mut c = h.client();
    let r = c.request("GET", &p, &[("if-none-match", "\"v1\"")], b"");
    assert_eq!(r.status, 304);
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert!(r.body.is_empty());
    let r = c.request("GET", &p, &[("if-none-match", "\"other\"")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(up.served(), 1);
}

#[test]
fn a_stale_response_is_revalidated_and_a_304_refreshes_it() {
    // RFC 9111 §4.3.1 and §4.3.4: validators sent upstream; the 304 freshens the entry.
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "", ""));
    let p = "/r?etag=v1&header=cache-control:max-age%3D1";
    let first = h.get(p);
    assert_eq!(first.status, 200);
    std::thread::sleep(std::time::Duration::from_millis(2100)); // max-age=1 must pass (wall clock: the upstream's Date)
    let r = h.get(p);
    assert_eq!(
        r.status, 200,
        "the client asked unconditionally: it gets the full body"
    );
    assert_eq!(r.header("x-cache"), Some("REVALIDATED"));
    assert!(r.header("cache-status").unwrap().contains("fwd-status=304"));
    assert_eq!(r.body, first.body);
    assert_eq!(
        h.get(p).header("x-cache"),
        Some("HIT"),
        "refreshed by the 304"
    );
    assert_eq!(up.served(), 2);
}

#[test]
fn a_byte_range_of_a_stored_response_gets_206() {
    // RFC 9110 §14.2 / §15.3.7 from storage.
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "", ""));
    let p = format!("/big?bytes=1000&{MAX_AGE_60}");
    h.get(&p);
    let mut c = h.client();
    let r = c.request("GET", &p, &[("range", "bytes=10-19")], b"");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/1000"));
    assert_eq!(r.body.len(), 10);
    let r = c.request("GET", &p, &[("range", "bytes=5000-")], b"");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */1000"));
    assert_eq!(up.served(), 1);
}

#[test]
fn vary_keeps_variants_apart() {
    // RFC 9111 §4.1: the Vary'd request headers select the stored response.
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "", ""));
    let p = format!("/v?header=vary:accept-language&{MAX_AGE_60}");
    let mut c = h.client();
    let en = c.request("GET", &p, &[("accept-language", "en")], b"");
    let fr = c.request("GET", &p, &[("accept-language", "fr")], b"");
    assert_eq!(fr.header("x-cache"), Some("MISS"));
    let en2 = c.request("GET", &p, &[("accept-language", "en")], b"");
    let fr2 = c.request("GET", &p, &[("accept-language", "fr")], b"");
    assert_eq!(en2.header("x-cache"), Some("HIT"));
    assert_eq!(fr2.header("x-cache"), Some("HIT"));
    assert_eq!(en2.body, en.body);
    assert_eq!(fr2.body, fr.body);
    assert_ne!(en.body, fr.body);
    let star = format!("/star?header=vary:*&{MAX_AGE_60}");
    h.get(&star);
    assert_eq!(
        h.get(&star).header("x-cache"),
        Some("MISS"),
        "Vary: * is never served from cache"
    );
    assert_eq!(up.served(), 4);
}

#[test]
fn a_successful_post_invalidates_the_stored_url() {
    // RFC 9111 §4.4.
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "", ""));
    let p = format!("/item?{MAX_AGE_60}");
    h.get(&p);
    assert_eq!(h.get(&p).header("x-cache"), Some("HIT"));
    let mut c = h.client();
    assert_eq!(c.request("POST", &p, &[], b"x").status, 200);
    assert_eq!(h.get(&p).header("x-cache"), Some("MISS"));
}

#[test]
fn concurrent_misses_on_one_key_make_one_upstream_request() {
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "", ""));
    let p = format!("/slow?delay=400&{MAX_AGE_60}");
    let addr = h.addr;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || Client::connect(addr).get(&p))
        })
        .collect();
    let answers: Vec<Response> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(answers.iter().all(|r| r.status == 200));
    assert_eq!(up.served(), 1, "one fill for eight concurrent misses");
    let collapsed = answers
        .iter()
        .filter(|r| {
            r.header("cache-status")
                .is_some_and(|s| s.contains("collapsed"))
        })
        .count();
    assert_eq!(collapsed, 7);
    assert!(h.metric("headroom_cache_coalesced_total{route=\"app\"}") >= 7.0);
}

#[test]
fn a_miss_that_turns_out_uncacheable_releases_its_waiters_at_once() {
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "", "[cache]\ncoalesce_wait = \"30s\"\n"));
    let p = "/slow?delay=300&header=cache-control:no-store";
    let addr = h.addr;
    let start = std::time::Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || Client::connect(addr).get(p)))
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap().status, 200);
    }
    // Each waiter went upstream as soon as the leader's response said no-store, not after
    // coalesce_wait (30 s).
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(up.served(), 4);
}

#[test]
fn a_body_over_the_object_limit_streams_past_the_cache() {
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "", "[cache]\nmax_object = \"10KiB\"\n"));
    let p = format!("/huge?bytes=50000&{MAX_AGE_60}");
    let r = h.get(&p);
    assert_eq!(r.body.len(), 50000);
    assert!(r.header("cache-status").unwrap().contains("detail=too-big"));
    assert_eq!(h.get(&p).body.len(), 50000);
    assert_eq!(up.served(), 2);
    // Streamed without a length the cache sees too late: still whole to the client, not stored.
    let p = format!("/huge?bytes=50000&chunks=10&{MAX_AGE_60}");
    assert_eq!(h.get(&p).body.len(), 50000);
    assert_eq!(h.get(&p).header("x-cache"), Some("MISS"));
}

#[test]
fn an_upstream_that_stalls_mid_body_is_never_stored() {
    let up = Upstream::start("u");
    let cfg =
        cached(&up, "", "").replace("[service.s]\n", "[service.s]\nread_timeout = \"300ms\"\n");
    let h = Headroom::start(&cfg);
    let p = format!("/cut?bytes=1000&stall_after=100&{MAX_AGE_60}");
    let mut c = h.client();
    let _ = c.try_request("GET", &p, &[], b"");
    let mut c = h.client();
    let r = c.try_request("GET", &p, &[], b"");
    assert!(
        r.map_or(true, |r| r.header("x-cache") != Some("HIT")),
        "a cut-off body must not be served from cache"
    );
    assert_eq!(up.served(), 2);
}

#[test]
fn compressed_variants_are_stored_and_not_compressed_again() {
    let up = Upstream::start("u");
    let cfg = cached(&up, "", "").replace("[service.s]", "[route.compress]\n\n[service.s]");
    let h = Headroom::start(&cfg);
    let p = format!("/text?bytes=20000&header=content-type:text/plain&{MAX_AGE_60}");
    let mut c = h.client();
    let gz = c.request("GET", &p, &[("accept-encoding", "gzip")], b"");
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert!(gz
        .header("vary")
        .unwrap()
        .to_ascii_lowercase()
        .contains("accept-encoding"));
    let gz2 = c.request("GET", &p, &[("accept-encoding", "gzip")], b"");
    assert_eq!(gz2.header("x-cache"), Some("HIT"));
    assert_eq!(gz2.body, gz.body);
    let mut plain = Vec::new();
    flate2_decode(&gz2.body, &mut plain);
    assert_eq!(plain.len(), 20000);
    let br = c.request("GET", &p, &[("accept-encoding", "br;q=1, gzip;q=0.5")], b"");
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert_eq!(
        br.header("x-cache"),
        Some("MISS"),
        "another coding is another variant"
    );
    let id = c.request("GET", &p, &[], b"");
    assert_eq!(id.header("content-encoding"), None);
    assert_eq!(id.body.len(), 20000);
    assert_eq!(up.served(), 3);
}

fn flate2_decode(gz: &[u8], out: &mut Vec<u8>) {
    // Decoded with gunzip, as a client would (no decoder crate in the tests' dependencies).
    let mut child = std::process::Command::new("gzip")
        .args(["-dc"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(gz).unwrap();
    child.stdout.take().unwrap().read_to_end(out).unwrap();
    child.wait().unwrap();
}

#[test]
fn only_if_cached_with_nothing_stored_is_504() {
    // RFC 9111 §5.2.1.7.
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "", ""));
    let mut c = h.client();
    let r = c.request(
        "GET",
        "/nothing",
        &[("cache-control", "only-if-cached")],
        b"",
    );
    assert_eq!(r.status, 504);
    assert_eq!(up.served(), 0);
}

#[test]
fn a_key_over_the_limit_bypasses_the_cache() {
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "", "[cache]\nmax_key = \"64B\"\n"));
    let p = format!("/{}?{MAX_AGE_60}", "k".repeat(100));
    let r = h.get(&p);
    assert_eq!(r.header("x-cache"), Some("BYPASS"));
    assert!(r.header("cache-status").unwrap().contains("key-too-long"));
}

#[test]
fn stale_response_is_served_while_revalidating() {
    // RFC 5861 §3: within stale-while-revalidate the stale response answers at once and one
    // background request refreshes it.
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "", ""));
    let p = "/swr?delay=300&header=cache-control:max-age%3D1%2C%20stale-while-revalidate%3D60";
    h.get(p);
    std::thread::sleep(std::time::Duration::from_millis(2100)); // max-age=1 must pass
    let start = std::time::Instant::now();
    let r = h.get(p);
    assert!(
        start.elapsed() < std::time::Duration::from_millis(250),
        "not held for the 300 ms refresh"
    );
    assert_eq!(r.header("x-cache"), Some("STALE"));
    h.wait_metric("headroom_cache_stored_total{route=\"app\"}", 2.0);
    assert_eq!(
        h.get(p).header("x-cache"),
        Some("HIT"),
        "the background refresh stored a fresh copy"
    );
    assert_eq!(up.served(), 2);
}

#[test]
fn stale_if_error_serves_the_stale_response_when_the_upstream_fails() {
    // RFC 5861 §4, and a page rule's grace when the origin sends none.
    let mut up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "stale_if_error = \"1h\"", ""));
    let p = "/sie?header=cache-control:max-age%3D1";
    let first = h.get(p);
    std::thread::sleep(std::time::Duration::from_millis(2100)); // max-age=1 must pass
    up.kill();
    let r = h.get(p);
    assert_eq!(r.status, 200, "stale instead of the 502");
    assert_eq!(r.header("x-cache"), Some("STALE"));
    assert!(r.header("cache-status").unwrap().contains("stale-if-error"));
    assert_eq!(r.body, first.body);
    // Without stale-if-error, nothing stale: the error goes through.
    let h2 = Headroom::start(&cached(&up, "", ""));
    assert_eq!(h2.get(p).status, 502);
}

#[test]
fn purge_by_url_prefix_tag_and_soft_purge_through_the_admin_api() {
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "", ""));
    let tagged = "/p/a?header=cache-control:max-age%3D60&header=surrogate-key:product-42%20all";
    let other = "/p/b?header=cache-control:max-age%3D60";
    let outside = "/q/c?header=cache-control:max-age%3D60";
    for p in [tagged, other, outside] {
        h.get(p);
        assert_eq!(h.get(p).header("x-cache"), Some("HIT"));
    }
    let r = h.admin_post("/cache/purge", r#"{"tag": "product-42"}"#);
    assert_eq!(r.json()["purged"], 1, "{}", r.text());
    assert_eq!(h.get(tagged).header("x-cache"), Some("MISS"));
    assert_eq!(h.get(other).header("x-cache"), Some("HIT"));
    let r = h.admin_post("/cache/purge", r#"{"prefix": "/p/"}"#);
    assert_eq!(r.json()["purged"], 2);
    assert_eq!(h.get(other).header("x-cache"), Some("MISS"));
    assert_eq!(h.get(outside).header("x-cache"), Some("HIT"));
    // Soft: marked stale, so the next request revalidates instead of being a plain hit.
    let r = h.admin_post(
        "/cache/purge",
        r#"{"url": "/q/c?header=cache-control:max-age%3D60", "soft": true}"#,
    );
    assert_eq!(r.json()["purged"], 1);
    assert_eq!(h.get(outside).header("x-cache"), Some("EXPIRED"));
    let r = h.admin_post("/cache/purge", r#"{"all": true}"#);
    assert_eq!(r.status, 200);
    let bad = h.admin_post("/cache/purge", r#"{"url": "/x", "tag": "y"}"#);
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("expected one of"));
    assert!(h.metric("headroom_cache_purges_total{kind=\"tag\"}") >= 1.0);
}

#[test]
fn headroom_purge_command_purges_through_the_admin_api() {
    let up = Upstream::start("u");
    let cfg = cached(&up, "", "").replace("[admin]\n", "[admin]\ntoken = \"t0ken\"\n");
    let h = Headroom::start(&cfg);
    let mut c = h.client();
    let p = format!("/cli?{MAX_AGE_60}");
    c.get(&p);
    assert_eq!(c.get(&p).header("x-cache"), Some("HIT"));
    let admin = h.admin.unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_headroom"))
        .args(["purge", "--admin", &admin, "--prefix", "/cli"])
        .env("HEADROOM_ADMIN_TOKEN", "t0ken")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("purged 1"));
    assert_eq!(c.get(&p).header("x-cache"), Some("MISS"));
    let denied = std::process::Command::new(env!("CARGO_BIN_EXE_headroom"))
        .args(["purge", "--admin", &admin, "--all"])
        .env_remove("HEADROOM_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("401"));
}

#[test]
fn the_purge_method_needs_the_admin_token() {
    let up = Upstream::start("u");
    let cfg =
        cached(&up, "purge_method = true", "").replace("[admin]\n", "[admin]\ntoken = \"t0ken\"\n");
    let h = Headroom::start(&cfg);
    let mut c = h.client();
    let p = format!("/pm?{MAX_AGE_60}");
    c.get(&p);
    assert_eq!(c.request("PURGE", &p, &[], b"").status, 401);
    assert_eq!(c.get(&p).header("x-cache"), Some("HIT"));
    let r = c.request("PURGE", &p, &[("authorization", "Bearer t0ken")], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.get(&p).header("x-cache"), Some("MISS"));
}

#[test]
fn status_and_the_access_log_show_the_cache() {
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "", ""));
    let p = format!("/st?{MAX_AGE_60}");
    h.get(&p);
    h.get(&p);
    let s = h.status();
    assert_eq!(s["cache"]["routes"]["app"]["hits"], 1);
    assert_eq!(s["cache"]["routes"]["app"]["hit_ratio"], 0.5);
    assert!(s["cache"]["memory"]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(s["cache"]["memory"]["objects"], 1);
    let line = h
        .stdout
        .wait_for("\"cache\":\"HIT\"", std::time::Duration::from_secs(10))
        .expect("an access log line with the cache status");
    assert!(line.contains("\"route\":\"app\""), "{line}");
}

#[test]
fn a_response_from_an_h2_upstream_is_stored_as_it_streams() {
    let up = Upstream::start("u");
    let cfg = cached(&up, "", "").replace("[service.s]\n", "[service.s]\nprotocol = \"h2\"\n");
    let h = Headroom::start(&cfg);
    let p = format!("/h2up?bytes=5000&{MAX_AGE_60}");
    let first = h.get(&p);
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let hit = h.get(&p);
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.body, first.body);
    assert_eq!(up.served(), 1);
}

#[tokio::test]
async fn an_h2_client_is_answered_from_the_cache() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let up = Upstream::start("u");
    let h = Headroom::start(&cached(&up, "", ""));
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut bodies = Vec::new();
    for want in ["MISS", "HIT", "HIT"] {
        let req = http::Request::get(format!("http://test.local/h2c?{MAX_AGE_60}"))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.headers()["x-cache"], want);
        bodies.push(resp.into_body().collect().await.unwrap().to_bytes());
    }
    assert_eq!(bodies[0], bodies[2]);
    let up_count = tokio::task::spawn_blocking(move || up.served())
        .await
        .unwrap();
    assert_eq!(up_count, 1);
}

#[test]
fn an_upstream_that_lies_about_its_length_is_never_stored() {
    // It declares 100 bytes, sends 10 and stops: the client's response is cut (as without
    // a cache) and nothing is stored.
    let reply =
        "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\n\r\n0123456789";
    let up = Upstream::start_with("liar", &["--raw-reply", reply]);
    let cfg = cached(&up, "", "").replace(
        "[service.s]\n",
        "[service.s]\nread_timeout = \"300ms\"\nretry = { attempts = 1 }\n",
    );
    let h = Headroom::start(&cfg);
    for _ in 0..2 {
        let mut c = h.client();
        // Cut off (an error here) is what the client sees; a response, if one came whole
        // enough to read, must not be a hit.
        if let Ok(r) = c.try_request("GET", "/lie", &[], b"") {
            assert_ne!(r.header("x-cache"), Some("HIT"), "a short body was stored");
        }
    }
    assert_eq!(h.metric("headroom_cache_stored_total{route=\"app\"}"), 0.0);
}

#[test]
fn a_response_too_small_to_compress_is_one_variant_for_every_coding() {
    // On a compressing route, a body under min_size goes as it is to every client: one
    // stored copy answers them all, whatever Accept-Encoding they send.
    let up = Upstream::start("u");
    let cfg = cached(&up, "", "").replace("[service.s]", "[route.compress]\n\n[service.s]");
    let h = Headroom::start(&cfg);
    let p = format!("/small?bytes=100&header=content-type:text/plain&{MAX_AGE_60}");
    let mut c = h.client();
    let zstd = c.request("GET", &p, &[("accept-encoding", "gzip, br, zstd")], b"");
    assert_eq!(zstd.header("x-cache"), Some("MISS"));
    assert_eq!(
        zstd.header("content-encoding"),
        None,
        "too small to compress"
    );
    for ae in ["gzip", "br", ""] {
        let h2: Vec<(&str, &str)> = if ae.is_empty() {
            vec![]
        } else {
            vec![("accept-encoding", ae)]
        };
        let r = c.request("GET", &p, &h2, b"");
        assert_eq!(r.header("x-cache"), Some("HIT"), "accept-encoding {ae:?}");
        assert_eq!(r.body, zstd.body);
    }
    assert_eq!(up.served(), 1);
}
