//! `[watch.tracing]` end to end: spans reach an OTLP/HTTP receiver started here, which
//! decodes the real protobuf (`opentelemetry-proto`'s `ExportTraceServiceRequest`); the
//! client's `traceparent` is continued and sent on to the upstream with the attempt's span
//! as parent; errors and slow requests are exported whatever the sampling ratio; a dead
//! collector costs the proxy nothing but counted drops.

mod common;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// An OTLP/HTTP traces receiver: keeps every span it is sent, answers 200.
struct Collector {
    url: String,
    spans: Arc<(Mutex<Vec<Span>>, Condvar)>,
    content_types: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    fn start() -> Collector {
        Collector::start_failing(0)
    }

    /// A collector that answers its first `fail` export requests with 503 (and drops them).
    fn start_failing(fail: usize) -> Collector {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", l.local_addr().unwrap());
        let spans: Arc<(Mutex<Vec<Span>>, Condvar)> = Arc::default();
        let content_types: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, ct) = (spans.clone(), content_types.clone());
        std::thread::spawn(move || {
            let mut failed = 0;
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let Some((head, body)) = read_request(&conn) else {
                    continue;
                };
                for line in &head {
                    if let Some(v) = line.strip_prefix("content-type:") {
                        ct.lock().unwrap().push(v.trim().to_string());
                    }
                }
                let req = ExportTraceServiceRequest::decode(&body[..]).expect("OTLP protobuf");
                if failed < fail {
                    failed += 1;
                    let _ = conn.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                    continue;
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                let mut got = s.0.lock().unwrap();
                for rs in req.resource_spans {
                    let service = rs.resource.as_ref().unwrap().attributes[0].clone();
                    assert_eq!(service.key, "service.name");
                    for ss in rs.scope_spans {
                        got.extend(ss.spans);
                    }
                }
                s.1.notify_all();
            }
        });
        Collector {
            url,
            spans,
            content_types,
        }
    }

    /// Waits (up to 20 s) until the spans received satisfy `pred`; returns them.
    fn wait(&self, what: &str, pred: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = self.spans.0.lock().unwrap();
        while !pred(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{what}: got {} spans: {got:#?}", got.len());
            got = self.spans.1.wait_timeout(got, left).unwrap().0;
        }
        got.clone()
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn tracing(endpoint: &str, extra: &str) -> String {
    format!("[watch.tracing]\nendpoint = \"{endpoint}\"\ninterval = \"100ms\"\n{extra}\n")
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[test]
fn a_request_gets_a_span_with_children_and_its_trace_goes_upstream() {
    let up = Upstream::start("u");
    let collector = Collector::start();
    let key = std::process::Command::new(BIN)
        .args(["key", "hash", "acme-secret"])
        .output()
        .unwrap();
    let key = String::from_utf8(key.stdout).unwrap();
    let config = format!(
        "{pre}[[route]]\nname = \"api\"\nservice = \"s\"\n[route.auth]\n[route.cache]\n\n\
         [service.s]\nreplicas = [\"{addr}\"]\n\n\
         [[consumer]]\nname = \"acme\"\nkeys = [\"{key}\"]\n\n{tracing}",
        pre = preamble(),
        addr = up.addr,
        key = key.trim(),
        tracing = tracing(&collector.url, "sample = \"100%\"")
    );
    let h = Headroom::start(&config);
    let parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = h.client().request(
        "GET",
        "/items?x=1",
        &[
            ("x-api-key", "acme-secret"),
            ("traceparent", &parent),
            ("tracestate", "vendor=abc"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // The upstream got the same trace, with a span of ours as its parent, and the state.
    let seen = r.json()["headers"].clone();
    let sent = seen["traceparent"].as_str().unwrap().to_string();
    assert!(sent.starts_with(&format!("00-{CLIENT_TRACE}-")), "{sent}");
    assert!(sent.ends_with("-01"), "{sent}");
    let upstream_parent = sent[36..52].to_string();
    assert_ne!(upstream_parent, CLIENT_SPAN);
    assert_eq!(seen["tracestate"], "vendor=abc");

    let spans = collector.wait("a request's four spans", |s| s.len() >= 4);
    let root = spans.iter().find(|s| s.kind == 2).expect("a SERVER span");
    assert_eq!(hex(&root.trace_id), CLIENT_TRACE);
    assert_eq!(hex(&root.parent_span_id), CLIENT_SPAN);
    assert_eq!(root.trace_state, "vendor=abc");
    assert_eq!(root.name, "GET api");
    assert_eq!(
        attr(root, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(root, "url.path").as_deref(), Some("/items"));
    assert_eq!(attr(root, "headroom.consumer").as_deref(), Some("acme"));
    assert!(root.end_time_unix_nano > root.start_time_unix_nano);
    let child = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name:?} span in {spans:#?}"))
    };
    for name in ["guard", "cache lookup", "upstream s"] {
        let c = child(name);
        assert_eq!(c.trace_id, root.trace_id, "{name}");
        assert_eq!(c.parent_span_id, root.span_id, "{name}");
        assert!(
            c.start_time_unix_nano >= root.start_time_unix_nano,
            "{name}"
        );
        assert!(c.end_time_unix_nano <= root.end_time_unix_nano, "{name}");
    }
    assert_eq!(
        attr(child("guard"), "headroom.guard").as_deref(),
        Some("allowed")
    );
    assert_eq!(
        attr(child("cache lookup"), "headroom.cache").as_deref(),
        Some("miss")
    );
    let attempt = child("upstream s");
    assert_eq!(attempt.kind, 3, "CLIENT");
    assert_eq!(hex(&attempt.span_id), upstream_parent);
    assert_eq!(
        attr(attempt, "server.address").as_deref(),
        Some(up.addr.to_string().as_str())
    );
    assert!(collector
        .content_types
        .lock()
        .unwrap()
        .iter()
        .all(|c| c == "application/x-protobuf"));

    // A refused key is traced too: the guard's span says why.
    let r = h.get("/items");
    assert_eq!(r.status, 401);
    let spans = collector.wait("the refused request's spans", |s| {
        s.iter()
            .any(|s| s.name == "guard" && attr(s, "headroom.guard").as_deref() != Some("allowed"))
    });
    let refused = spans
        .iter()
        .find(|s| s.name == "guard" && attr(s, "headroom.guard").as_deref() != Some("allowed"))
        .unwrap();
    assert_eq!(
        attr(refused, "headroom.guard").as_deref(),
        Some("unauthenticated")
    );
    assert_eq!(
        h.metric("headroom_trace_spans_dropped_total{reason=\"queue_full\"}"),
        0.0
    );
}

#[test]
fn at_zero_sampling_only_errors_and_slow_requests_are_exported() {
    let up = Upstream::start("u");
    let collector = Collector::start();
    let config = format!(
        "{}{}",
        one_route_config_with(&up, "", "retry = { attempts = 1 }"),
        tracing(&collector.url, "sample = 0\nslow = \"300ms\"")
    );
    let h = Headroom::start(&config);
    let r = h.get("/fast");
    assert_eq!(r.status, 200);
    // Not sampled, but the upstream still learns the trace (flag 00) for its own logs.
    let sent = r.json()["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(sent.starts_with("00-") && sent.ends_with("-00"), "{sent}");
    assert_eq!(h.get("/failed?status=503").status, 503);
    assert_eq!(h.get("/slow?delay=400").status, 200);
    // The queue is first in, first out: once the later two are in, an exported /fast
    // would be too.
    let spans = collector.wait("the failed and the slow request", |s| {
        let paths: Vec<_> = s.iter().filter_map(|s| attr(s, "url.path")).collect();
        paths.contains(&"/failed".to_string()) && paths.contains(&"/slow".to_string())
    });
    let roots: Vec<_> = spans.iter().filter(|s| s.kind == 2).collect();
    assert_eq!(roots.len(), 2, "{roots:#?}");
    assert!(roots
        .iter()
        .all(|s| attr(s, "url.path").as_deref() != Some("/fast")));
    let failed = roots
        .iter()
        .find(|s| attr(s, "url.path").as_deref() == Some("/failed"))
        .unwrap();
    assert_eq!(failed.status.as_ref().unwrap().code, 2, "ERROR");
}

#[test]
fn a_dead_collector_is_counted_and_the_proxy_keeps_serving() {
    let up = Upstream::start("u");
    let dead = format!("http://127.0.0.1:{}/v1/traces", free_port());
    let config = format!(
        "{}{}",
        one_route_config(&up, ""),
        tracing(&dead, "sample = 1\nqueue = 4\ntimeout = \"500ms\"")
    );
    let h = Headroom::start(&config);
    for _ in 0..40 {
        assert_eq!(h.get("/").status, 200);
    }
    h.wait_metric_at_least("headroom_trace_exports_total{result=\"failed\"}", 1.0);
    h.wait_metric_at_least(
        "headroom_trace_spans_dropped_total{reason=\"queue_full\"}",
        1.0,
    );
    assert_eq!(h.metric("headroom_trace_spans_exported_total"), 0.0);
    assert_eq!(h.get("/").status, 200);
}

#[test]
fn a_batch_the_collector_refused_with_503_is_sent_again() {
    let up = Upstream::start("u");
    let collector = Collector::start_failing(1);
    let config = format!(
        "{}{}",
        one_route_config(&up, ""),
        tracing(&collector.url, "sample = 1")
    );
    let h = Headroom::start(&config);
    assert_eq!(h.get("/once").status, 200);
    let spans = collector.wait("the request's span, on the second try", |s| !s.is_empty());
    assert_eq!(attr(&spans[0], "url.path").as_deref(), Some("/once"));
    assert_eq!(
        h.metric("headroom_trace_exports_total{result=\"failed\"}"),
        1.0
    );
    h.wait_metric("headroom_trace_spans_exported_total", 2.0);
    assert_eq!(
        h.metric("headroom_trace_spans_dropped_total{reason=\"export_failed\"}"),
        0.0
    );
}

#[test]
fn a_reload_turns_tracing_on_and_off() {
    let up = Upstream::start("u");
    let collector = Collector::start();
    let plain = one_route_config(&up, "");
    let h = Headroom::start(&plain);
    assert_eq!(h.get("/before").status, 200);
    let traced = format!("{plain}{}", tracing(&collector.url, "sample = 1"));
    assert!(h.reload(&traced).contains("config reloaded"));
    assert_eq!(h.get("/during").status, 200);
    let spans = collector.wait("the request after the reload", |s| !s.is_empty());
    assert_eq!(attr(&spans[0], "url.path").as_deref(), Some("/during"));
    assert!(h.reload(&plain).contains("config reloaded"));
    let parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = h
        .client()
        .request("GET", "/after", &[("traceparent", &parent)], b"");
    assert_eq!(
        r.json()["headers"]["traceparent"],
        parent.as_str(),
        "off again"
    );
}

#[test]
fn without_tracing_the_clients_traceparent_goes_on_untouched() {
    let up = Upstream::start("u");
    let h = Headroom::start(&one_route_config(&up, ""));
    let parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = h
        .client()
        .request("GET", "/", &[("traceparent", &parent)], b"");
    assert_eq!(r.json()["headers"]["traceparent"], parent.as_str());
    assert_eq!(h.metric("headroom_trace_spans_exported_total"), 0.0);
}

#[test]
fn a_bad_tracing_config_names_the_key() {
    let up = Upstream::start("u");
    let (code, err) = check_config(&format!(
        "{}{}",
        one_route_config(&up, ""),
        tracing("localhost:4318", "")
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("watch.tracing.endpoint"), "{err}");
    assert!(err.contains("bad.toml:"), "{err}");
    let (code, err) = check_config(&format!(
        "{}{}",
        one_route_config(&up, ""),
        tracing("http://127.0.0.1:4318/v1/traces", "sample = 2")
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("sample"), "{err}");
}
