//! Serving from storage and what else reaches the cache: HEAD, ranges, conditionals,
//! limits, invalidation and methods.

use super::*;
use tokio::time::Instant;

// ---- HEAD, ranges, conditionals -------------------------------------------------------------

// §4 (RFC 9110 §9.3.2): HEAD is answered from the stored GET, without its body.
#[tokio::test]
async fn head_is_answered_from_a_stored_get_with_an_empty_body() {
    let h = Harness::new();
    h.get("/a", &[], &ok("max-age=60", "0123456789")).await;
    let got = h.send("HEAD", "/a", &[], &ok("", "")).await;
    assert!(!got.asked);
    assert_eq!((got.status, got.body()), (StatusCode::OK, ""));
    assert_eq!(got.header("content-length"), "10");
}

// A HEAD miss is not stored: it has no body to answer a GET with.
#[tokio::test]
async fn a_head_miss_is_not_stored() {
    let h = Harness::new();
    let got = h.send("HEAD", "/a", &[], &ok("max-age=60", "")).await;
    assert!(
        got.cache_status().contains("detail=head"),
        "{}",
        got.cache_status()
    );
    assert!(h.get("/a", &[], &ok("max-age=60", "x")).await.asked);
}

// RFC 9110 §14: one range of a stored response is answered 206 with that slice.
#[tokio::test]
async fn a_single_range_is_answered_206_from_storage() {
    let h = Harness::new();
    h.get("/a", &[], &ok("max-age=60", "0123456789")).await;
    let got = h.get("/a", &[("range", "bytes=2-5")], &ok("", "")).await;
    assert!(!got.asked);
    assert_eq!(
        (got.status, got.body()),
        (StatusCode::PARTIAL_CONTENT, "2345")
    );
    assert_eq!(got.header("content-range"), "bytes 2-5/10");
    assert_eq!(got.header("content-length"), "4");
}

// RFC 9110 §15.5.17: a range starting past the end is 416.
#[tokio::test]
async fn a_range_past_the_end_is_416() {
    let h = Harness::new();
    h.get("/a", &[], &ok("max-age=60", "0123456789")).await;
    let got = h.get("/a", &[("range", "bytes=20-")], &ok("", "")).await;
    assert_eq!(
        (got.status, got.body()),
        (StatusCode::RANGE_NOT_SATISFIABLE, "")
    );
    assert_eq!(got.header("content-range"), "bytes */10");
}

// §4.3.2: the cache answers a client's If-None-Match itself: 304 when it matches.
#[tokio::test]
async fn if_none_match_on_the_stored_etag_is_answered_304() {
    let h = Harness::new();
    let up = origin(
        200,
        &[("cache-control", "max-age=60"), ("etag", "\"v1\"")],
        "x",
    );
    h.get("/a", &[], &up).await;
    h.advance(5);
    let got = h
        .get("/a", &[("if-none-match", "\"v1\"")], &ok("", ""))
        .await;
    assert!(!got.asked);
    assert_eq!((got.status, got.body()), (StatusCode::NOT_MODIFIED, ""));
    assert_eq!((got.header("etag"), got.age()), ("\"v1\"", 5));
    let other = h
        .get("/a", &[("if-none-match", "\"v0\"")], &ok("", ""))
        .await;
    assert_eq!((other.status, other.body()), (StatusCode::OK, "x"));
}

// §4.3.3: a 304 that names another validator does not update the stored response, and a
// client that asked unconditionally never gets a 304.
#[tokio::test]
async fn an_unmatched_304_is_not_passed_to_an_unconditional_client() {
    let h = Harness::new();
    let first = origin(
        200,
        &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
        "body",
    );
    h.get("/a", &[], &first).await;
    h.advance(20);
    let got = h
        .get("/a", &[], &origin(304, &[("etag", "\"v2\"")], ""))
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body(), "body");
    assert!(
        got.cache_status().contains("unmatched-304"),
        "{}",
        got.cache_status()
    );
    assert!(
        h.stored("/a").is_empty(),
        "dropped, so the next request fetches it whole"
    );
}

// ---- Limits ----------------------------------------------------------------------------------

// A body past max_object streams past the cache: not stored, and waiters released at once.
#[tokio::test(start_paused = true)]
async fn a_body_past_max_object_is_not_stored_and_waiters_are_released() {
    let mut cfg = store_config();
    cfg.max_object = 8;
    let h = Harness::with(cfg, route_config());
    let big = ok("max-age=60", "0123456789abcdef"); // no Content-Length: found out streaming
    let first = forwarded(h.lookup("GET", "/a", &[]).await);
    let start = Instant::now();
    let (second, got) = tokio::join!(h.lookup("GET", "/a", &[]), async {
        tokio::task::yield_now().await;
        h.forward(first, &big)
    });
    assert_eq!(got.body(), "0123456789abcdef", "the client gets it all");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(kind(&second), "Forward");
    assert!(h.stored("example.com/a").is_empty());
    let declared = origin(
        200,
        &[("cache-control", "max-age=60"), ("content-length", "16")],
        "0123456789abcdef",
    );
    let got = h.get("/b", &[], &declared).await;
    assert!(
        got.cache_status().contains("detail=too-big"),
        "{}",
        got.cache_status()
    );
}

// A body that did not come whole (Store::end(false)) is not stored; waiters are released.
#[tokio::test(start_paused = true)]
async fn an_incomplete_body_is_not_stored() {
    let h = Harness::new();
    let first = forwarded(h.lookup("GET", "/a", &[]).await);
    let start = Instant::now();
    let (second, _) = tokio::join!(h.lookup("GET", "/a", &[]), async {
        tokio::task::yield_now().await;
        let mut headers = header_map(&[("cache-control", "max-age=60")]);
        let FillResponse::Store(mut store) = first.response(StatusCode::OK, &mut headers) else {
            panic!("storable")
        };
        store.data(b"half");
        store.end(false);
    });
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(kind(&second), "Forward");
    assert!(h.stored("example.com/a").is_empty());
}

// ---- Invalidation (§4.4) -----------------------------------------------------------------

async fn invalidate(h: &Harness, status: u16, location: &str) {
    let Lookup::Invalidate(inv) = h.lookup("POST", "/a", &[]).await else {
        panic!("an unsafe method invalidates")
    };
    inv.response(
        &Method::POST,
        StatusCode::from_u16(status).unwrap(),
        &"/a".parse().unwrap(),
        &header_map(&[("location", location)]),
    );
}

// §4.4: a 2xx to an unsafe method invalidates the target URI and a same-origin Location.
#[tokio::test]
async fn unsafe_method_success_invalidates_the_url_and_same_origin_location() {
    let h = Harness::new();
    let up = ok("max-age=600", "x");
    for p in ["/a", "/b", "/c"] {
        h.get(p, &[], &up).await;
    }
    invalidate(&h, 201, "/b").await;
    assert!(h.get("/a", &[], &up).await.asked, "target invalidated");
    assert!(h.get("/b", &[], &up).await.asked, "Location invalidated");
    assert!(!h.get("/c", &[], &up).await.asked, "others kept");
    invalidate(&h, 200, "http://other.example/c").await;
    assert!(
        !h.get("/c", &[], &up).await.asked,
        "another origin's Location ignored"
    );
}

// §4.4: an error response invalidates nothing.
#[tokio::test]
async fn unsafe_method_server_error_invalidates_nothing() {
    let h = Harness::new();
    let up = ok("max-age=600", "x");
    h.get("/a", &[], &up).await;
    h.get("/b", &[], &up).await;
    invalidate(&h, 503, "/b").await;
    assert!(!h.get("/a", &[], &up).await.asked);
    assert!(!h.get("/b", &[], &up).await.asked);
}

// OPTIONS is not the cache's business; PURGE is only with purge_method.
#[tokio::test]
async fn options_pass_and_purge_needs_purge_method() {
    let h = Harness::new();
    assert_eq!(kind(&h.lookup("OPTIONS", "/a", &[]).await), "Pass");
    assert_eq!(kind(&h.lookup("PURGE", "/a", &[]).await), "Invalidate");
    let mut rc = route_config();
    rc.purge_method = true;
    let p = Harness::with(store_config(), rc);
    let Lookup::Purge(url) = p.lookup("PURGE", "/a?b=1", &[]).await else {
        panic!("PURGE with purge_method")
    };
    assert_eq!(url, "example.com/a?b=1");
}
