//! The diff, the discovery loop under paused time, and the resolvers against a real (tiny)
//! DNS server on loopback.

use super::test_responder::{Answer, DnsResponder};
use super::*;
use std::net::IpAddr;
use std::sync::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|s| addr(s)).collect()
}

#[test]
fn diff_adds_what_appeared_and_drains_what_vanished() {
    let change = diff(
        &addrs(&["10.0.0.1:80", "10.0.0.2:80"]),
        &addrs(&["10.0.0.2:80", "10.0.0.3:80", "[fd00::1]:80"]),
    );
    assert_eq!(change.add, addrs(&["10.0.0.3:80", "[fd00::1]:80"]));
    assert_eq!(change.drain, addrs(&["10.0.0.1:80"]));
}

#[test]
fn diff_of_the_same_set_in_another_order_changes_nothing() {
    let change = diff(
        &addrs(&["10.0.0.1:80", "10.0.0.2:80"]),
        &addrs(&["10.0.0.2:80", "10.0.0.1:80", "10.0.0.2:80"]),
    );
    assert!(change.is_empty(), "{change:?}");
}

#[test]
fn diff_from_nothing_adds_everything_once_and_to_nothing_drains_everything() {
    let set = addrs(&["10.0.0.1:80", "10.0.0.1:80", "10.0.0.2:80"]);
    assert_eq!(diff(&[], &set).add, addrs(&["10.0.0.1:80", "10.0.0.2:80"]));
    assert_eq!(
        diff(&set, &[]).drain,
        addrs(&["10.0.0.1:80", "10.0.0.2:80"])
    );
}

#[test]
fn diff_tells_ports_apart() {
    let change = diff(&addrs(&["10.0.0.1:80"]), &addrs(&["10.0.0.1:81"]));
    assert_eq!((change.add.len(), change.drain.len()), (1, 1));
}

// ---- the discovery loop, with a fake replica set and a lookup the test answers ----

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Add(SocketAddr, u32),
    Drain(SocketAddr),
}

/// A replica set of one service that drains at once and records every call.
struct FakeSink {
    service: &'static str,
    replicas: Mutex<BTreeSet<SocketAddr>>,
    calls: Mutex<Vec<Call>>,
    /// Woken on every call (a stored permit, so no wake-up is lost).
    changed: tokio::sync::Notify,
}

impl FakeSink {
    fn new(service: &'static str) -> FakeSink {
        FakeSink {
            service,
            replicas: Mutex::default(),
            calls: Mutex::default(),
            changed: tokio::sync::Notify::new(),
        }
    }
    /// Waits until the replicas are `want`, woken by each change; the limit is a safety net.
    async fn wait_for(&self, want: &[SocketAddr]) {
        while self.replicas() != want {
            let woken = tokio::time::timeout(Duration::from_secs(10), self.changed.notified());
            assert!(
                woken.await.is_ok(),
                "replicas stayed {:?}, want {want:?}",
                self.replicas()
            );
        }
    }
    fn replicas(&self) -> Vec<SocketAddr> {
        self.replicas.lock().unwrap().iter().copied().collect()
    }
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl ReplicaSink for FakeSink {
    fn dns_replicas(&self, service: &str) -> Vec<SocketAddr> {
        assert_eq!(service, self.service);
        self.replicas()
    }
    fn add_dns_replica(&self, service: &str, addr: SocketAddr, weight: u32) {
        assert_eq!(service, self.service);
        self.replicas.lock().unwrap().insert(addr);
        self.calls.lock().unwrap().push(Call::Add(addr, weight));
        self.changed.notify_one();
    }
    fn drain_dns_replica(&self, service: &str, addr: SocketAddr) {
        assert_eq!(service, self.service);
        self.replicas.lock().unwrap().remove(&addr);
        self.calls.lock().unwrap().push(Call::Drain(addr));
        self.changed.notify_one();
    }
}

type LookupResult = Result<Vec<SocketAddr>, String>;

/// One lookup the loop is waiting on: when it was asked, and where its answer goes.
struct Ask {
    at: Instant,
    reply: oneshot::Sender<LookupResult>,
}

/// The loop running on a fake sink. The lookup hands each question to the test, so "the
/// loop asks again" is the signal that the previous answer has been applied.
struct Harness {
    sink: Arc<FakeSink>,
    failures: Arc<Counter>,
    asks: mpsc::UnboundedReceiver<Ask>,
    task: tokio::task::JoinHandle<()>,
}

const INTERVAL: Duration = Duration::from_secs(5);

impl Harness {
    /// `service` names the loop in its log events: one name per test.
    fn start(service: &'static str) -> Harness {
        capture();
        let sink = Arc::new(FakeSink::new(service));
        let failures = Arc::new(Counter::default());
        let (tx, asks) = mpsc::unbounded_channel();
        let lookup = move || {
            let tx = tx.clone();
            async move {
                let (reply, answer) = oneshot::channel();
                let _ = tx.send(Ask {
                    at: Instant::now(),
                    reply,
                });
                answer.await.unwrap_or_else(|_| Err("test ended".into()))
            }
        };
        let spec = DnsDiscovery {
            name: "app.internal".into(),
            port: 8080,
            interval: INTERVAL,
            weight: 3,
        };
        let task = tokio::spawn(discover(
            sink.clone(),
            service.into(),
            spec,
            lookup,
            failures.clone(),
        ));
        Harness {
            sink,
            failures,
            asks,
            task,
        }
    }

    /// Waits for the loop's next lookup.
    async fn ask(&mut self) -> Ask {
        self.asks.recv().await.expect("the discovery loop stopped")
    }

    /// Answers the next lookup and waits until the loop has applied it (asks again).
    async fn answer(&mut self, result: LookupResult) -> Ask {
        let _ = self.ask().await.reply.send(result);
        self.ask().await
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn discovery_resolves_at_once_then_every_interval() {
    let start = Instant::now();
    let mut h = Harness::start("at-once");
    let first = h.ask().await;
    assert_eq!(first.at, start);
    let _ = first.reply.send(Ok(addrs(&["10.0.0.1:8080"])));
    let second = h.ask().await;
    assert_eq!(second.at - start, INTERVAL);
    let _ = second.reply.send(Ok(addrs(&["10.0.0.1:8080"])));
    assert_eq!(h.ask().await.at - start, 2 * INTERVAL);
}

#[tokio::test(start_paused = true)]
async fn records_that_appear_are_added_and_records_that_vanish_are_drained() {
    let (x, y, z) = (
        addr("10.0.0.1:8080"),
        addr("10.0.0.2:8080"),
        addr("[fd00::3]:8080"),
    );
    let mut h = Harness::start("appear-vanish");
    let next = h.answer(Ok(vec![x, y])).await;
    assert_eq!(h.sink.replicas(), vec![x, y]);
    assert_eq!(h.sink.calls(), vec![Call::Add(x, 3), Call::Add(y, 3)]);

    let _ = next.reply.send(Ok(vec![y, z]));
    let next = h.ask().await;
    assert_eq!(h.sink.replicas(), vec![y, z]);
    // The newcomer is added before the vanished one is drained.
    assert_eq!(h.sink.calls()[2..], [Call::Add(z, 3), Call::Drain(x)]);

    let _ = next.reply.send(Ok(vec![z, y]));
    h.ask().await;
    assert_eq!(
        h.sink.calls().len(),
        4,
        "an unchanged answer changes nothing"
    );
    assert_eq!(h.failures.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_or_empty_lookup_keeps_the_last_set_and_is_counted() {
    let (x, y) = (addr("10.0.0.1:8080"), addr("10.0.0.2:8080"));
    let mut h = Harness::start("keep-last");
    let next = h.answer(Ok(vec![x, y])).await;

    let _ = next.reply.send(Err("no answer within 2s".into()));
    let next = h.ask().await;
    assert_eq!(h.sink.replicas(), vec![x, y]);
    assert_eq!(h.failures.get(), 1);

    let _ = next.reply.send(Ok(vec![]));
    let next = h.ask().await;
    assert_eq!(
        h.sink.replicas(),
        vec![x, y],
        "an empty answer drains nothing"
    );
    assert_eq!(h.failures.get(), 2);
    assert!(!h.sink.calls().iter().any(|c| matches!(c, Call::Drain(_))));

    let _ = next.reply.send(Ok(vec![y]));
    h.ask().await;
    assert_eq!(h.sink.replicas(), vec![y]);
    assert_eq!(h.failures.get(), 2);
}

/// Discovery's log events, from every test: (service, level, message).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(String, tracing::Level, String)>>>);

/// The process-wide capture, installed as the global subscriber by the first caller.
/// Global, not `set_default`: with a single dispatcher registered, tracing computes a
/// callsite's interest from the default of whichever thread reaches it first, so a scoped
/// subscriber misses events whose callsite another test reached first.
fn capture() -> &'static Capture {
    static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c = Capture::default();
        let _ = tracing::subscriber::set_global_default(c.clone());
        c
    })
}

impl Capture {
    fn count(&self, service: &str, level: tracing::Level, needle: &str) -> usize {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|(s, l, m)| s == service && *l == level && m.contains(needle))
            .count()
    }
}

#[derive(Default)]
struct Fields {
    service: String,
    message: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "service" => self.service = format!("{value:?}"),
            _ => {}
        }
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        meta.target()
            .starts_with(module_path!().trim_end_matches("::tests"))
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let level = *event.metadata().level();
        self.0.lock().unwrap().push((f.service, level, f.message));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(start_paused = true)]
async fn a_run_of_failures_is_warned_once_and_its_end_is_logged_once() {
    let mut h = Harness::start("logs");
    let capture = capture();
    let mut next = h.answer(Ok(addrs(&["10.0.0.1:8080"]))).await;
    for _ in 0..3 {
        let _ = next.reply.send(Err("SERVFAIL".into()));
        next = h.ask().await;
    }
    assert_eq!(h.failures.get(), 3);
    assert_eq!(
        capture.count("logs", tracing::Level::WARN, "DNS lookup failed"),
        1
    );
    assert_eq!(
        capture.count("logs", tracing::Level::INFO, "succeed again"),
        0
    );

    let _ = next.reply.send(Ok(addrs(&["10.0.0.1:8080"])));
    let next = h.ask().await;
    assert_eq!(
        capture.count("logs", tracing::Level::INFO, "succeed again"),
        1
    );

    // A new run of failures is news again.
    let _ = next.reply.send(Err("SERVFAIL".into()));
    h.ask().await;
    assert_eq!(
        capture.count("logs", tracing::Level::WARN, "DNS lookup failed"),
        2
    );
}

// ---- the resolvers ----

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn the_udp_resolver_returns_a_and_aaaa_records_and_follows_changes() {
    let dns = DnsResponder::start().unwrap();
    // In no order, with a duplicate: the lookup sorts and deduplicates.
    dns.set(
        "app.internal",
        Answer::Records(vec![
            ip("127.0.0.3"),
            ip("::1"),
            ip("127.0.0.2"),
            ip("127.0.0.3"),
        ]),
    );
    let resolver = Resolver::Server(dns.addr());
    assert_eq!(
        resolver.lookup("App.Internal.", 8080).await,
        Ok(addrs(&["127.0.0.2:8080", "127.0.0.3:8080", "[::1]:8080"]))
    );
    dns.set("app.internal", Answer::Records(vec![ip("127.0.0.4")]));
    assert_eq!(
        resolver.lookup("app.internal", 81).await,
        Ok(addrs(&["127.0.0.4:81"]))
    );
    dns.set("app.internal", Answer::Records(vec![]));
    assert_eq!(resolver.lookup("app.internal", 81).await, Ok(vec![]));
}

#[tokio::test]
async fn the_udp_resolver_reports_nxdomain_and_servfail() {
    let dns = DnsResponder::start().unwrap();
    dns.set("broken.internal", Answer::ServerFailure);
    let resolver = Resolver::Server(dns.addr());
    let e = resolver.lookup("nowhere.internal", 80).await.unwrap_err();
    assert!(
        e.contains("NXDOMAIN") && e.contains("nowhere.internal"),
        "{e}"
    );
    let e = resolver.lookup("broken.internal", 80).await.unwrap_err();
    assert!(e.contains("SERVFAIL"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_silent_server_times_out_after_one_retry() {
    let dns = DnsResponder::start().unwrap();
    dns.set("app.internal", Answer::Silent);
    let start = Instant::now();
    let e = Resolver::Server(dns.addr())
        .lookup("app.internal", 80)
        .await
        .unwrap_err();
    assert!(e.contains("no answer within 2s"), "{e}");
    assert_eq!(Instant::now() - start, QUERY_TIMEOUT * ATTEMPTS as u32);
    // Both attempts asked for A and AAAA.
    assert!(dns.wait_for_queries(4, Duration::from_secs(10)));
    assert_eq!(dns.queries(), 4);
}

#[tokio::test]
async fn a_truncated_answer_is_asked_again_over_tcp() {
    let dns = DnsResponder::start().unwrap();
    // 40 A records (670 bytes) do not fit the responder's 512-byte datagrams.
    let many: Vec<IpAddr> = (1..=40).map(|i| IpAddr::from([127, 0, 1, i])).collect();
    dns.set("big.internal", Answer::Records(many));
    let found = Resolver::Server(dns.addr())
        .lookup("big.internal", 80)
        .await
        .unwrap();
    assert_eq!(found.len(), 40);
    assert_eq!(found[39], addr("127.0.1.40:80"));
    assert_eq!(dns.tcp_queries(), 1, "only the A answer was truncated");
}

#[tokio::test]
async fn a_server_that_is_not_listening_is_an_error() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = Resolver::Server(port)
        .lookup("app.internal", 80)
        .await
        .unwrap_err();
    assert!(e.contains("app.internal"), "{e}");
}

#[tokio::test]
async fn the_system_resolver_reads_etc_hosts() {
    let found = Resolver::System.lookup("localhost", 8080).await.unwrap();
    assert!(
        found
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 8080),
        "{found:?}"
    );
    assert!(!found.is_empty());
    let mut sorted = found.clone();
    sorted.dedup();
    assert_eq!(sorted, found, "no duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_a_dns_server_and_keeps_the_set_while_it_fails() {
    let dns = Arc::new(DnsResponder::start().unwrap());
    dns.set(
        "app.internal",
        Answer::Records(vec![ip("127.0.0.2"), ip("127.0.0.3")]),
    );
    let sink = Arc::new(FakeSink::new("run"));
    let failures = Arc::new(Counter::default());
    let spec = DnsDiscovery {
        name: "app.internal".into(),
        port: 9000,
        interval: Duration::from_millis(20),
        weight: 1,
    };
    let task = tokio::spawn(run(
        sink.clone(),
        "run".into(),
        spec,
        Resolver::Server(dns.addr()),
        failures.clone(),
    ));
    sink.wait_for(&addrs(&["127.0.0.2:9000", "127.0.0.3:9000"]))
        .await;
    dns.set(
        "app.internal",
        Answer::Records(vec![ip("127.0.0.3"), ip("127.0.0.4")]),
    );
    sink.wait_for(&addrs(&["127.0.0.3:9000", "127.0.0.4:9000"]))
        .await;

    dns.set("app.internal", Answer::ServerFailure);
    // Two more rounds of queries (A and AAAA each) mean the first failing one is done.
    let seen = dns.queries();
    let d = dns.clone();
    let waited =
        tokio::task::spawn_blocking(move || d.wait_for_queries(seen + 4, Duration::from_secs(10)));
    assert!(waited.await.unwrap());
    assert!(failures.get() >= 1);
    assert_eq!(
        sink.replicas(),
        addrs(&["127.0.0.3:9000", "127.0.0.4:9000"])
    );
    task.abort();
}
