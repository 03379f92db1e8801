//! Routing: matches on host, path, method and headers; actions; rewrites; headers.

mod common;
use common::*;

fn setup() -> (Headroom, Upstream, Upstream) {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let cfg = format!(
        r#"{pre}
[[route]]
name = "wildcard-host"
match = {{ host = "*.example.com" }}
service = "b"

[[route]]
name = "exact-host"
match = {{ host = "api.test", path_prefix = "/api" }}
service = "a"
strip_prefix = "/api"
rewrite_prefix = "/v2"

[[route]]
name = "regex"
match = {{ path_regex = "^/items/[0-9]+$" }}
service = "b"

[[route]]
name = "exact-path-post"
match = {{ path = "/submit", methods = ["POST"] }}
service = "b"

[[route]]
name = "canary-header"
match = {{ path_prefix = "/app", headers = {{ "x-canary" = "1" }} }}
service = "b"
request_headers = {{ add = {{ "x-added" = "yes" }}, remove = ["x-secret"] }}
response_headers = {{ add = {{ "x-served-by" = "headroom" }}, remove = ["x-replica"] }}

[[route]]
name = "app"
match = {{ path_prefix = "/app" }}
service = "a"

[[route]]
name = "old"
match = {{ path_prefix = "/old" }}
redirect = {{ to = "https://new.test{{path}}?{{query}}", status = 301 }}

[[route]]
name = "fixed"
match = {{ path = "/ping" }}
respond = {{ status = 201, body = "pong", content_type = "text/plain" }}

[service.a]
replicas = ["{a}"]

[service.b]
replicas = ["{b}"]
"#,
        pre = preamble(),
        a = a.addr,
        b = b.addr
    );
    (Headroom::start(&cfg), a, b)
}

#[test]
fn routes_match_host_path_method_and_headers_in_order() {
    let (h, _a, _b) = setup();
    let mut c = h.client();
    let via = |c: &mut Client, method: &str, path: &str, headers: &[(&str, &str)]| {
        let r = c.request(method, path, headers, b"");
        (r.status, r.header("x-replica").unwrap_or("-").to_string())
    };
    assert_eq!(
        via(&mut c, "GET", "/app/x", &[("Host", "shop.example.com")]),
        (200, "b".into())
    );
    assert_eq!(
        via(&mut c, "GET", "/app/x", &[("Host", "example.com")]),
        (200, "a".into())
    );
    assert_eq!(via(&mut c, "GET", "/items/42", &[]), (200, "b".into()));
    assert_eq!(via(&mut c, "GET", "/items/abc", &[]).0, 404);
    assert_eq!(via(&mut c, "POST", "/submit", &[]), (200, "b".into()));
    assert_eq!(via(&mut c, "GET", "/submit", &[]).0, 404);
    assert_eq!(via(&mut c, "GET", "/app", &[]), (200, "a".into()));
}

#[test]
fn no_route_is_a_404_with_a_json_body() {
    let (h, _a, _b) = setup();
    let r = h.get("/nowhere");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j["error"], "no_route");
    assert_eq!(j["request_id"].as_str(), r.header("x-request-id"));
}

#[test]
fn prefix_is_stripped_and_rewritten() {
    let (h, _a, _b) = setup();
    let r = h
        .client()
        .request("GET", "/api/users?page=2", &[("Host", "api.test")], b"");
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["path"], "/v2/users");
    assert_eq!(j["query"], "page=2");
}

#[test]
fn request_and_response_headers_are_edited() {
    let (h, _a, _b) = setup();
    let r = h
        .client()
        .request("GET", "/app", &[("x-canary", "1"), ("x-secret", "s")], b"");
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["headers"]["x-added"], "yes");
    assert!(j["headers"].get("x-secret").is_none());
    assert_eq!(r.header("x-served-by"), Some("headroom"));
    assert_eq!(r.header("x-replica"), None);
}

#[test]
fn forwarded_headers_and_request_id_are_set_and_propagated() {
    let (h, _a, _b) = setup();
    let r = h.client().request(
        "GET",
        "/app",
        &[("Host", "shop.test:8080"), ("X-Forwarded-For", "10.1.1.1")],
        b"",
    );
    let j = r.json();
    assert_eq!(j["headers"]["x-forwarded-for"], "10.1.1.1, 127.0.0.1");
    assert_eq!(j["headers"]["x-forwarded-proto"], "http");
    assert_eq!(j["headers"]["x-forwarded-host"], "shop.test:8080");
    assert_eq!(j["headers"]["host"], "shop.test:8080");
    let generated = j["headers"]["x-request-id"].as_str().unwrap().to_string();
    assert_eq!(generated.len(), 32);
    assert_eq!(r.header("x-request-id"), Some(generated.as_str()));

    let r = h
        .client()
        .request("GET", "/app", &[("X-Request-Id", "trace-123")], b"");
    assert_eq!(r.json()["headers"]["x-request-id"], "trace-123");
    assert_eq!(r.header("x-request-id"), Some("trace-123"));
}

#[test]
fn redirect_and_fixed_response_need_no_upstream() {
    let (h, _a, _b) = setup();
    let r = h.get("/old/page?x=1");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://new.test/old/page?x=1"));
    let r = h.get("/ping");
    assert_eq!(r.status, 201);
    assert_eq!(r.text(), "pong");
    assert_eq!(r.header("content-type"), Some("text/plain"));
}

#[test]
fn access_log_has_one_json_line_per_request() {
    let (h, _a, _b) = setup();
    let r = h
        .client()
        .request("GET", "/app/logged", &[("X-Request-Id", "log-me-1")], b"");
    assert_eq!(r.status, 200);
    let line = h
        .stdout
        .wait_for("log-me-1", std::time::Duration::from_secs(5))
        .expect("access log line");
    let j: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(j["route"], "app");
    assert_eq!(j["service"], "a");
    assert_eq!(j["status"], 200);
    assert_eq!(j["path"], "/app/logged");
    assert_eq!(j["replica"].as_str().unwrap(), _a.addr.to_string());
    assert!(j["bytes"].as_u64().unwrap() > 0);
    assert!(j["duration_ms"].as_f64().is_some());
}

#[test]
fn metrics_count_requests_by_route_service_and_class() {
    let (h, _a, _b) = setup();
    for _ in 0..3 {
        assert_eq!(h.get("/app").status, 200);
    }
    assert_eq!(h.get("/nowhere").status, 404);
    assert_eq!(
        h.metric("headroom_requests_total{route=\"app\",service=\"a\",class=\"2xx\"}"),
        3.0
    );
    assert_eq!(
        h.metric("headroom_requests_total{route=\"\",service=\"\",class=\"4xx\"}"),
        1.0
    );
    assert!(h.metric("headroom_request_duration_seconds_count{route=\"app\"}") >= 3.0);
    assert!(h.metric("headroom_upstream_duration_seconds_count{service=\"a\"}") >= 3.0);
    let status = h.status();
    assert_eq!(status["services"][0]["service"], "a");
    assert!(status["services"][0]["replicas"][0]["ewma_ms"]
        .as_f64()
        .is_some());
}

#[test]
fn a_chunked_request_body_is_streamed_to_the_upstream() {
    let (h, _a, _b) = setup();
    let mut raw =
        b"POST /app/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        raw.extend_from_slice(b"400\r\n");
        raw.extend_from_slice(&[b'z'; 1024]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = h.client().send_raw(&raw).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_bytes"], 3072);
    assert_eq!(r.json()["headers"]["transfer-encoding"], "chunked");
}

#[test]
fn a_chunked_upstream_response_reaches_the_client_whole() {
    let (h, _a, _b) = setup();
    let r = h.get("/app/stream?chunks=7");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.json()["path"], "/app/stream");
    // HEAD of the same: headers only.
    let r = h.client().request("HEAD", "/app/stream?chunks=7", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}
