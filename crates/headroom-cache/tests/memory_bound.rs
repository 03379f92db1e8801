//! The memory tier's bound is in real bytes: what `[cache] memory` charges for each stored
//! response covers the heap it really holds (the entry, its header map, its body, and the
//! map's own bookkeeping), so a process never holds much more than its configured cache.
//!
//! Measured with a counting global allocator (`cap`): live heap bytes before and after
//! storing N responses the way the edge stores a miss. This file holds one test, so nothing
//! else allocates in the process while it measures.

use bytes::Bytes;
use headroom_cache::compress::Coding;
use headroom_cache::{Cache, CacheRequest, FillResponse, Lookup};
use headroom_config::cache::{CacheConfig, CachePolicy, RouteCacheConfig};
use headroom_telemetry::Registry;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use std::alloc::System;
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static HEAP: cap::Cap<System> = cap::Cap::new(System, usize::MAX);

const OBJECTS: usize = 4_000;

/// A response head as nginx sends it, parsed as the edge's HTTP/1 client parses one: one
/// allocation for the head, header values sliced from it.
fn upstream_head(body_len: usize) -> HeaderMap {
    let text = format!(
        "server: nginx/1.22.1\r\ndate: Wed, 02 Dec 2026 01:20:58 GMT\r\n\
         content-type: text/plain\r\ncontent-length: {body_len}\r\n\
         last-modified: Tue, 01 Dec 2026 10:00:00 GMT\r\netag: \"6763a1b2-64\"\r\n\
         cache-control: public, max-age=3600\r\naccept-ranges: bytes\r\n"
    );
    let head = Bytes::copy_from_slice(text.as_bytes());
    let mut map = HeaderMap::with_capacity(8 + 4);
    let mut at = 0;
    for line in head.split(|&b| b == b'\n') {
        let len = line.len() + 1;
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = HeaderName::from_bytes(&line[..colon]).unwrap();
            let value = head.slice(at + colon + 2..at + line.len() - 1);
            map.append(name, HeaderValue::from_maybe_shared(value).unwrap());
        }
        at += len;
    }
    map
}

/// Stores OBJECTS distinct responses of `body_len` bytes; returns (live heap bytes they
/// hold, bytes the memory tier charged for them), each per object.
fn store(body_len: usize) -> (usize, usize) {
    let cfg = CacheConfig {
        memory: 1 << 30,
        max_object: 8 << 20,
        max_key: 8 << 10,
        max_variants: 16,
        coalesce_wait: Duration::from_secs(10),
        heuristic_cap: Duration::from_secs(86_400),
        x_cache: true,
        redis: None,
    };
    let cache = Cache::new(&cfg, &Arc::new(Registry::new()));
    let route = cache.route(
        "r",
        &RouteCacheConfig {
            policy: CachePolicy::default(),
            rules: vec![],
            purge_method: false,
        },
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let body = vec![b'x'; body_len];
    let mut request = HeaderMap::new();
    request.insert("user-agent", HeaderValue::from_static("wrk/4.1"));
    request.insert("accept", HeaderValue::from_static("*/*"));
    drop(cache.status(&[&route]));

    let before = HEAP.allocated();
    for i in 0..OBJECTS {
        let query = format!("id={i}");
        let lookup = rt.block_on(route.lookup(&CacheRequest {
            method: &Method::GET,
            host: "127.0.0.1:8080",
            path: "/obj",
            query: Some(&query),
            headers: &request,
            coding: Coding::Identity,
            compresses: false,
        }));
        let Lookup::Forward(fill) = lookup else {
            panic!("object {i}: a new URL is a miss")
        };
        let mut headers = upstream_head(body_len);
        let FillResponse::Store(mut store) = fill.response(StatusCode::OK, &mut headers) else {
            panic!("object {i}: a public, max-age=3600 200 is stored")
        };
        for chunk in body.chunks(16 << 10) {
            store.data(chunk);
        }
        store.end(true);
    }
    let status = cache.status(&[&route]);
    let objects = status["memory"]["objects"].as_u64().unwrap() as usize;
    let charged = status["memory"]["bytes"].as_u64().unwrap() as usize;
    drop(status);
    let live = HEAP.allocated() - before;
    assert_eq!(objects, OBJECTS, "every response was stored");
    (live / OBJECTS, charged / OBJECTS)
}

#[test]
fn the_memory_bound_charges_what_each_stored_response_really_holds() {
    for body_len in [100, 1024, 16 << 10] {
        let (live, charged) = store(body_len);
        eprintln!("body {body_len} B: live {live} B per object, charged {charged} B");
        assert!(
            charged >= live,
            "body {body_len} B: each object holds {live} B of heap, the bound charges only \
             {charged} B, so the process outgrows its configured cache"
        );
        // Not overcharged either: what a user configures is what the cache gets.
        assert!(
            charged <= live + live / 4,
            "body {body_len} B: charged {charged} B for {live} B really held"
        );
    }
}
