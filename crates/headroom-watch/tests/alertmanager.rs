//! The notifier against real receivers on loopback: webhook servers written here (healthy,
//! failing, absent) and a real Alertmanager process (Debian's `prometheus-alertmanager`).
//!
//! These use real sockets and the real clock: conditions are polled every 20 ms for up to
//! 20 s, and the notifier runs with millisecond waits so a test takes well under a second
//! when all is well.

use bytes::Bytes;
use headroom_watch::alert::{
    Alert, Backoff, Fingerprint, Notifier, NotifierHandle, NotifierOptions, Receiver,
};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PATIENCE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

/// Waits until `done` holds, or fails the test saying what was awaited.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "after {PATIENCE:?}, still waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Quick waits and retries, so the tests run in milliseconds.
fn quick() -> NotifierOptions {
    NotifierOptions {
        group_wait: Duration::from_millis(50),
        group_interval: Duration::from_millis(100),
        resend_interval: Duration::from_millis(200),
        request_timeout: Duration::from_secs(2),
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(100),
            jitter: 0.2,
        },
        external_url: "http://headroom.test:9000".into(),
        ..NotifierOptions::default()
    }
}

/// A request a test webhook received.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    content_type: String,
    body: Value,
}

/// A webhook receiver on loopback answering from a script of statuses (then 200).
struct Hook {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Hook {
    async fn start(script: Vec<u16>) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let log = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (log, script) = (log.clone(), script.clone());
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (log, script) = (log.clone(), script.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        let content_type = req
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        let bytes = req.into_body().collect().await?.to_bytes();
                        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                        log.lock().unwrap().push(Received {
                            path,
                            content_type,
                            body,
                        });
                        let status = script.lock().unwrap().pop_front().unwrap_or(200);
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
                        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Hook { addr, received }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn bodies(&self) -> Vec<Value> {
        let received = self.received.lock().unwrap();
        received.iter().map(|r| r.body.clone()).collect()
    }

    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

fn burn(replica: &str) -> Alert {
    let mut alert = Alert::firing("ErrorBudgetBurn", SystemTime::now())
        .label("route", "api")
        .label("replica", replica)
        .label("severity", "page")
        .annotation("summary", "route api burns its error budget 14x")
        .annotation("dashboard", "http://headroom.test:9000/watch/api");
    alert.generator_url = "http://headroom.test:9000/watch/api".into();
    alert
}

/// Sends an alert of its own group and waits until the receiver has it: whatever the
/// notifier had queued for that receiver before it has been delivered by then (one queue
/// per receiver, in order). "Nothing more is sent, ever" is tested in paused time in
/// `alert/dispatch.rs` and `alert/delivery.rs`.
async fn flush_through(handle: &NotifierHandle, hook: &Hook) -> usize {
    send(
        handle,
        vec![Alert::firing("Marker", SystemTime::now()).label("route", "marker")],
    );
    eventually("the marker", || {
        hook.bodies()
            .iter()
            .any(|b| b["groupLabels"]["alertname"] == "Marker")
    })
    .await;
    hook.count()
}

fn send(handle: &NotifierHandle, alerts: Vec<Alert>) {
    handle.send(alerts).expect("the notifier takes the alerts");
}

#[tokio::test]
async fn a_webhook_gets_the_version_4_payload_grouped_firing_then_resolved() {
    let hook = Hook::start(vec![]).await;
    let notifier = Notifier::spawn(vec![Receiver::webhook(&hook.url()).unwrap()], quick());
    let (a, b) = (burn("a"), burn("b"));
    send(&notifier, vec![a.clone()]);
    send(&notifier, vec![b.clone()]);
    eventually("the firing notification", || hook.count() >= 1).await;

    let first = &hook.bodies()[0];
    assert_eq!(first["version"], "4");
    assert_eq!(first["status"], "firing");
    assert_eq!(first["receiver"], "headroom");
    assert_eq!(first["externalURL"], "http://headroom.test:9000");
    assert_eq!(
        first["groupKey"],
        r#"{}:{alertname="ErrorBudgetBurn", route="api"}"#
    );
    assert_eq!(
        first["groupLabels"],
        serde_json::json!({"alertname": "ErrorBudgetBurn", "route": "api"})
    );
    assert_eq!(first["commonLabels"]["severity"], "page");
    assert!(first["commonLabels"].get("replica").is_none());
    let alerts = first["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2, "both alerts in one notification: {first}");
    let mut fingerprints: Vec<String> = [&a, &b]
        .iter()
        .map(|x| x.fingerprint().to_string())
        .collect();
    fingerprints.sort();
    let got: Vec<&str> = alerts
        .iter()
        .map(|x| x["fingerprint"].as_str().unwrap())
        .collect();
    assert_eq!(got, fingerprints);
    assert!(alerts.iter().all(|x| x["endsAt"] == "0001-01-01T00:00:00Z"));
    {
        let received = hook.received.lock().unwrap();
        assert_eq!(received[0].path, "/hook");
        assert_eq!(received[0].content_type, "application/json");
    }

    let now = SystemTime::now();
    send(&notifier, vec![a.resolved(now), b.resolved(now)]);
    eventually("the resolved notification", || hook.count() >= 2).await;
    let second = &hook.bodies()[1];
    assert_eq!(second["status"], "resolved");
    let alerts = second["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2);
    assert!(alerts.iter().all(|x| x["status"] == "resolved"));
    assert!(alerts.iter().all(|x| x["endsAt"] != "0001-01-01T00:00:00Z"));

    // Nothing more to say: the next notification is the marker's.
    assert_eq!(flush_through(&notifier, &hook).await, 3);
    let stats = notifier.stats();
    assert_eq!(
        stats.receivers()[0].sent(),
        3,
        "firing, resolved, the marker"
    );
    assert_eq!(stats.receivers()[0].failed_attempts(), 0);
}

#[tokio::test]
async fn a_receiver_answering_500_twice_gets_the_notification_on_the_third_attempt() {
    let hook = Hook::start(vec![500, 500]).await;
    let notifier = Notifier::spawn(vec![Receiver::webhook(&hook.url()).unwrap()], quick());
    send(&notifier, vec![burn("a")]);
    let stats = notifier.stats();
    eventually("a delivery", || stats.receivers()[0].sent() == 1).await;
    let receiver = &stats.receivers()[0];
    assert_eq!(hook.count(), 3);
    assert_eq!(receiver.failed_attempts(), 2);
    assert_eq!(receiver.dropped(), 0);
    let bodies = hook.bodies();
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "the same payload retried"
    );
}

#[tokio::test]
async fn a_receiver_answering_400_is_not_retried() {
    let hook = Hook::start(vec![400]).await;
    let notifier = Notifier::spawn(vec![Receiver::webhook(&hook.url()).unwrap()], quick());
    send(&notifier, vec![burn("a")]);
    let stats = notifier.stats();
    eventually("the refusal counted", || {
        stats.receivers()[0].dropped() == 1
    })
    .await;
    // A retry (after 20 ms) would reach the receiver before the marker (after 50 ms).
    assert_eq!(
        flush_through(&notifier, &hook).await,
        2,
        "the 400 was not retried"
    );
    assert_eq!(stats.receivers()[0].sent(), 1, "only the marker");
}

#[tokio::test]
async fn an_unreachable_receiver_is_retried_while_the_other_one_is_served() {
    let nobody = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }; // closed: nobody listens there any more
    let hook = Hook::start(vec![]).await;
    let receivers = vec![
        Receiver::webhook(&format!("http://{nobody}/hook")).unwrap(),
        Receiver::webhook(&hook.url()).unwrap(),
    ];
    let notifier = Notifier::spawn(receivers, quick());
    let stats = notifier.stats();
    let a = burn("a");
    send(&notifier, vec![a.clone()]);
    eventually("the reachable receiver served", || hook.count() == 1).await;
    eventually("retries of the unreachable one", || {
        stats.receivers()[0].failed_attempts() >= 3
    })
    .await;
    assert_eq!(stats.receivers()[0].sent(), 0);

    // Still running: the resolution reaches the healthy receiver too.
    send(&notifier, vec![a.resolved(SystemTime::now())]);
    eventually("the resolution served", || hook.count() == 2).await;
    assert_eq!(hook.bodies()[1]["status"], "resolved");
    assert_eq!(stats.receivers()[1].failed_attempts(), 0);
    assert!(stats.receivers()[0].queued() >= 1, "still trying");
}

/// A real Alertmanager on a loopback port, killed (and its directory removed) on drop.
struct Alertmanager {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

impl Alertmanager {
    fn start() -> Alertmanager {
        let bin = std::env::var("ALERTMANAGER_BIN").unwrap_or_else(|_| ALERTMANAGER.into());
        assert!(
            std::path::Path::new(&bin).exists(),
            "{bin} is missing: this test runs a real Alertmanager. Install it with \
             `sudo DEBIAN_FRONTEND=noninteractive apt-get install -y prometheus-alertmanager` \
             (the test starts its own process; the service need not run), or point \
             ALERTMANAGER_BIN at an alertmanager binary"
        );
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let dir = std::env::temp_dir().join(format!(
            "headroom-alertmanager-{}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            // Alertmanager forgets a firing alert not re-sent within resolve_timeout:
            // 1 s here, so the test sees the notifier's re-sends keep it alive.
            "global:\n  resolve_timeout: 1s\n\
             route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        Alertmanager { child, addr, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("alertmanager.log")).unwrap_or_default()
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some((200, _)) = get(self.addr, "/-/ready").await {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Alertmanager exited ({status}):\n{}", self.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Alertmanager not ready after {PATIENCE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn alerts(&self) -> Vec<Value> {
        match get(self.addr, "/api/v2/alerts").await {
            Some((200, body)) => serde_json::from_str(&body).unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP/1.0 GET (so the answer is not chunked): status and body.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

#[tokio::test]
async fn a_real_alertmanager_shows_our_alert_then_forgets_it_once_resolved() {
    let mut am = Alertmanager::start();
    am.wait_ready().await;
    let receiver = Receiver::alertmanager(&format!("http://{}", am.addr)).unwrap();
    let notifier = Notifier::spawn(vec![receiver], quick());
    let alert = burn("a");
    send(&notifier, vec![alert.clone()]);

    let deadline = tokio::time::Instant::now() + PATIENCE;
    let shown = loop {
        let alerts = am.alerts().await;
        if let Some(a) = alerts
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "ErrorBudgetBurn")
        {
            break a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Alertmanager never showed the alert; stats {:?}; log:\n{}",
            notifier.stats(),
            am.log()
        );
        tokio::time::sleep(POLL).await;
    };
    let labels: std::collections::BTreeMap<String, String> =
        serde_json::from_value(shown["labels"].clone()).unwrap();
    assert_eq!(labels, alert.labels);
    assert_eq!(
        shown["annotations"]["summary"],
        "route api burns its error budget 14x"
    );
    assert_eq!(shown["generatorURL"], "http://headroom.test:9000/watch/api");
    assert_eq!(
        shown["fingerprint"].as_str(),
        Some(Fingerprint::of(&alert.labels).to_string().as_str()),
        "our fingerprint is Alertmanager's"
    );
    assert_eq!(shown["status"]["state"], "active");

    // Three resolve_timeouts later it is still shown: the notifier re-sent it.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let alerts = am.alerts().await;
        assert!(
            alerts
                .iter()
                .any(|a| a["labels"]["alertname"] == "ErrorBudgetBurn"),
            "Alertmanager let the firing alert time out: it was not re-sent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    send(&notifier, vec![alert.resolved(SystemTime::now())]);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let alerts = am.alerts().await;
        if !alerts
            .iter()
            .any(|a| a["labels"]["alertname"] == "ErrorBudgetBurn")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Alertmanager still shows the alert as active: {alerts:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    // Alertmanager may answer the resolving push after it already stopped showing it.
    let stats = notifier.stats();
    eventually("both pushes counted", || stats.receivers()[0].sent() >= 2).await;
    assert_eq!(stats.receivers()[0].failed_attempts(), 0);
}
