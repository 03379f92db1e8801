//! Access rules and CORS end to end: address allow/deny lists, a route's body limit, and
//! preflights answered at the edge, against a real upstream.

mod common;
use common::*;

fn config(up: &Upstream, route_extra: &str, extra: &str) -> String {
    format!(
        "{pre}[[route]]\nname = \"api\"\nservice = \"s\"\n{route_extra}\n\n[service.s]\nreplicas = [\"{addr}\"]\n\n{extra}\n",
        pre = preamble(),
        addr = up.addr,
    )
}

fn send(h: &Headroom, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    h.client().request(method, path, headers, body)
}

#[test]
fn a_denied_address_gets_403_and_an_allow_list_admits_only_its_own() {
    let up = Upstream::start("u");
    let h = Headroom::start(&config(
        &up,
        "[route.access]\nallow = [\"127.0.0.0/8\", \"2001:db8::/32\"]\ndeny = [\"198.51.100.0/24\"]",
        "[guard]\ntrusted_proxies = [\"127.0.0.1\"]",
    ));
    assert_eq!(h.get("/").status, 200, "127.0.0.1 is allowed");
    let r = send(&h, "GET", "/", &[("x-forwarded-for", "198.51.100.7")], b"");
    assert_eq!(r.status, 403, "a denied client behind the trusted proxy");
    assert_eq!(r.json()["error"], "forbidden");
    assert_eq!(
        send(&h, "GET", "/", &[("x-forwarded-for", "203.0.113.5")], b"").status,
        403,
        "not in the allow list"
    );
    assert_eq!(
        send(&h, "GET", "/", &[("x-forwarded-for", "2001:db8::9")], b"").status,
        200
    );
    assert_eq!(up.served(), 2);
}

#[test]
fn a_body_over_the_route_s_limit_gets_413_declared_or_streamed() {
    let up = Upstream::start("u");
    let h = Headroom::start(&config(&up, "[route.access]\nmax_body = \"1KiB\"", ""));
    assert_eq!(send(&h, "POST", "/", &[], &[b'a'; 1024]).status, 200);
    let r = send(&h, "POST", "/", &[], &[b'a'; 1025]);
    assert_eq!(r.status, 413, "declared by Content-Length");
    assert!(r.json()["message"].as_str().unwrap().contains("1024"));
    // Chunked: the size is known only as it streams.
    let mut c = h.client();
    let raw = format!(
        "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n800\r\n{}\r\n0\r\n\r\n",
        "b".repeat(0x800)
    );
    let r = c.send_raw(raw.as_bytes()).unwrap();
    assert_eq!(r.status, 413, "streamed past the limit");
}

const CORS: &str = "[route.cors]\norigins = [\"https://app.example.com\", \"https://*.example.org\"]\nmethods = [\"GET\", \"PUT\"]\nheaders = [\"content-type\", \"x-api-key\"]\nexpose = [\"x-request-id\"]\ncredentials = true\nmax_age = \"5m\"";

#[test]
fn a_preflight_is_answered_at_the_edge_and_never_reaches_the_upstream() {
    let up = Upstream::start("u");
    let h = Headroom::start(&config(&up, CORS, ""));
    let r = send(
        &h,
        "OPTIONS",
        "/items",
        &[
            ("origin", "https://shop.example.org"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "content-type"),
        ],
        b"",
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://shop.example.org")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type")
    );
    assert_eq!(r.header("access-control-max-age"), Some("300"));
    assert!(r.body.is_empty());
    let refused = send(
        &h,
        "OPTIONS",
        "/items",
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "PUT"),
        ],
        b"",
    );
    assert_eq!(refused.status, 403);
    assert_eq!(refused.header("access-control-allow-origin"), None);
    assert_eq!(up.served(), 0, "preflights are the edge's");
}

#[test]
fn actual_cross_origin_requests_get_the_fields_only_for_allowed_origins() {
    let up = Upstream::start("u");
    let h = Headroom::start(&config(&up, CORS, ""));
    let ok = send(
        &h,
        "GET",
        "/",
        &[("origin", "https://app.example.com")],
        b"",
    );
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        ok.header("access-control-expose-headers"),
        Some("x-request-id")
    );
    assert_eq!(ok.header("vary"), Some("Origin"));
    let other = send(&h, "GET", "/", &[("origin", "https://evil.example")], b"");
    assert_eq!(
        other.status, 200,
        "forwarded; the browser will not let the page read it"
    );
    assert_eq!(other.header("access-control-allow-origin"), None);
}

#[test]
fn credentials_with_a_wildcard_origin_are_refused_by_check() {
    let up = Upstream::start("u");
    let (code, err) = check_config(&config(&up, "[route.cors]\norigins = [\"*\"]\ncredentials = true\n[route.access]\ndeny = [\"10.0.0.0/33\"]", ""));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("cors.credentials: browsers refuse credentials"),
        "{err}"
    );
    assert!(
        err.contains("access.deny: expected an address or a CIDR block"),
        "{err}"
    );
}

#[test]
fn a_listener_s_deny_list_refuses_a_peer_on_every_route_and_before_routing() {
    let up = Upstream::start("u");
    let cfg = config(&up, "", "").replacen(
        "name = \"public\"\nbind = \"127.0.0.1:0\"\n",
        "name = \"public\"\nbind = \"127.0.0.1:0\"\ndeny = [\"127.0.0.0/8\"]\n",
        1,
    );
    let h = Headroom::start(&cfg);
    let r = h.get("/");
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "forbidden");
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(up.served(), 0);
    let allowed = config(&up, "", "").replacen(
        "name = \"public\"\nbind = \"127.0.0.1:0\"\n",
        "name = \"public\"\nbind = \"127.0.0.1:0\"\nallow = [\"127.0.0.1\", \"::1\"]\n",
        1,
    );
    assert_eq!(Headroom::start(&allowed).get("/").status, 200);
}
