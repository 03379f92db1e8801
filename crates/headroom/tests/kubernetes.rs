//! The autoscaler's kubernetes driver against a fake API server. No Kubernetes API server
//! can run on this machine; `FakeKube` speaks the parts of its HTTP API the driver uses, in
//! the real JSON shapes and the real watch protocol: bearer auth, the `scale` subresource
//! (GET, and PATCH as a JSON merge patch, refused with 409 when its `resourceVersion` is not
//! the object's), EndpointSlice lists and watches (`resourceVersion`, `allowWatchBookmarks`,
//! `BOOKMARK` events, a `410 Gone` for a version too old), the metrics API's
//! `PodMetricsList`, and `Status` bodies for 401/403/409/410/500. Like a Deployment
//! controller, it makes the first `spec.replicas` of its pods ready endpoints when the scale
//! changes; the pods are real upstream processes on loopback addresses.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "test-token-1";
/// A second instance's.
const TOKEN2: &str = "test-token-2";

#[derive(Default)]
struct State {
    /// The cluster's resourceVersion counter.
    rv: u64,
    spec: u32,
    /// The Deployment's resourceVersion (its scale's).
    scale_rv: u64,
    /// Pod addresses ("127.0.0.2"), in the order the controller makes them ready.
    pods: Vec<String>,
    port: u16,
    /// The slice as it is, and its version.
    slice: Value,
    /// Watch events by resourceVersion.
    events: Vec<(u64, Value)>,
    /// Every request: "METHOD path?query".
    requests: Vec<String>,
    patches: Vec<Value>,
    /// Answers to give the next calls of a kind ("scale_get", "scale_patch", "list", "watch").
    fail: BTreeMap<&'static str, VecDeque<u16>>,
    /// A watch from a version below this is answered 410 Gone.
    gone_below: u64,
    /// Bumped to end every open watch (as the API server's timeout does).
    watch_epoch: u64,
    /// Someone else scales to this just before the next patch (which then gets 409).
    scaled_by_someone: Option<u32>,
    /// The status moves just before the next patch (which then gets 409).
    status_moves: bool,
    /// Cores per pod for the metrics API.
    cpu: BTreeMap<String, String>,
    /// coordination.k8s.io Leases by name.
    leases: BTreeMap<String, Value>,
    /// The token of each scale patch that was taken.
    patch_tokens: Vec<String>,
    /// Gone: every connection is cut, open watches without their last chunk.
    down: bool,
    /// Stalled: calls are read and never answered (watches already open go on).
    stall: bool,
}

impl State {
    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn scale(&self) -> Value {
        json!({
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": self.scale_rv.to_string()},
            "spec": {"replicas": self.spec},
            "status": {"replicas": self.spec, "selector": "app=web"}
        })
    }

    /// The Deployment controller: the first `spec` pods are ready endpoints. `quietly`: no
    /// watch event (as if it happened while the watch was down and the history compacted).
    fn sync_pods(&mut self, quietly: bool) {
        let rv = self.bump();
        let endpoints: Vec<Value> = self
            .pods
            .iter()
            .take(self.spec as usize)
            .enumerate()
            .map(|(i, ip)| {
                json!({
                    "addresses": [ip],
                    "conditions": {"ready": true, "serving": true, "terminating": false},
                    "targetRef": {"kind": "Pod", "namespace": "shop", "name": format!("web-{i}")}
                })
            })
            .collect();
        self.slice = json!({
            "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"name": "web-x1", "namespace": "shop", "resourceVersion": rv.to_string(),
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": self.port, "protocol": "TCP"}],
            "endpoints": endpoints
        });
        if !quietly {
            self.events
                .push((rv, json!({"type": "MODIFIED", "object": self.slice})));
        }
    }
}

struct FakeKube {
    url: String,
    state: Arc<(Mutex<State>, Condvar)>,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn reason(code: u16) -> &'static str {
    match code {
        401 => "Unauthorized",
        403 => "Forbidden",
        409 => "Conflict",
        410 => "Expired",
        _ => "InternalError",
    }
}

impl FakeKube {
    /// A Deployment `web` in namespace `shop` at `spec` replicas, its pods at `pods` on
    /// `port`.
    fn start(spec: u32, pods: &[&str], port: u16) -> FakeKube {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut s = State {
            spec,
            pods: pods.iter().map(|p| p.to_string()).collect(),
            port,
            ..State::default()
        };
        s.scale_rv = s.bump();
        s.sync_pods(false);
        let state = Arc::new((Mutex::new(s), Condvar::new()));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || serve(conn, &st));
            }
        });
        FakeKube { url, state }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let (m, cv) = &*self.state;
        let out = f(&mut m.lock().unwrap());
        cv.notify_all();
        out
    }

    fn requests(&self) -> Vec<String> {
        self.with(|s| s.requests.clone())
    }

    /// Waits until a request matching `pred` has been made (after the first `skip`).
    fn wait_request(&self, what: &str, skip: usize, pred: impl Fn(&str) -> bool) -> String {
        let (m, cv) = &*self.state;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut s = m.lock().unwrap();
        loop {
            if let Some(r) = s.requests.iter().skip(skip).find(|r| pred(r)) {
                return r.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "waiting for {what}: {:#?}", s.requests);
            s = cv.wait_timeout(s, left).unwrap().0;
        }
    }

    /// Waits until `count` requests matching `pred` have been made after the first `skip`.
    fn wait_count(&self, what: &str, skip: usize, count: usize, pred: impl Fn(&str) -> bool) {
        let (m, cv) = &*self.state;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut s = m.lock().unwrap();
        while s.requests.iter().skip(skip).filter(|r| pred(r)).count() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "waiting for {what}: {:#?}", s.requests);
            s = cv.wait_timeout(s, left).unwrap().0;
        }
    }

    /// A kubeconfig for this server with a bearer token.
    fn kubeconfig(&self, dir: &std::path::Path) -> String {
        self.kubeconfig_with(dir, TOKEN)
    }

    fn kubeconfig_with(&self, dir: &std::path::Path, token: &str) -> String {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
                 clusters:\n- name: fake\n  cluster:\n    server: {}\n\
                 users:\n- name: headroom\n  user:\n    token: {token}\n\
                 contexts:\n- name: test\n  context:\n    cluster: fake\n    user: headroom\n    namespace: shop\n",
                self.url
            ),
        )
        .unwrap();
        path.display().to_string()
    }
}

/// One connection: requests in turn (keep-alive), a watch until it ends.
fn serve(conn: TcpStream, st: &Arc<(Mutex<State>, Condvar)>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let (mut len, mut auth, mut ctype) = (0usize, String::new(), String::new());
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((&h, ""));
            let (k, v) = (k.to_ascii_lowercase(), v.trim().to_string());
            match k.as_str() {
                "content-length" => len = v.parse().unwrap_or(0),
                "authorization" => auth = v,
                "content-type" => ctype = v,
                _ => {}
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let q: BTreeMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.replace("%3D", "=").replace("%2F", "/")))
            .collect();
        {
            let (m, cv) = &**st;
            let mut s = m.lock().unwrap();
            if s.down {
                return;
            }
            s.requests.push(format!("{method} {target}"));
            cv.notify_all();
            while s.stall {
                s = cv.wait(s).unwrap();
                if !s.stall {
                    return;
                }
            }
        }
        let reply = |out: &mut TcpStream, code: u16, v: &Value| {
            let b = v.to_string();
            let _ = write!(
                out,
                "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            );
        };
        let Some(token) = auth
            .strip_prefix("Bearer ")
            .filter(|t| [TOKEN, TOKEN2].contains(t))
        else {
            reply(&mut out, 401, &status(401, "Unauthorized", "Unauthorized"));
            continue;
        };
        if let Some(rest) = path.strip_prefix("/apis/coordination.k8s.io/v1/namespaces/shop/leases")
        {
            let (code, v) = leases(st, &method, rest.trim_start_matches('/'), &q, &body);
            reply(&mut out, code, &v);
            continue;
        }
        let kind = match (method.as_str(), path) {
            ("GET", "/apis/apps/v1/namespaces/shop/deployments/web/scale")
            | ("GET", "/apis/apps/v1/namespaces/shop/statefulsets/web/scale") => "scale_get",
            ("PATCH", "/apis/apps/v1/namespaces/shop/deployments/web/scale")
            | ("PATCH", "/apis/apps/v1/namespaces/shop/statefulsets/web/scale") => "scale_patch",
            ("GET", "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices")
                if q.get("watch").is_some_and(|w| w == "true" || w == "1") =>
            {
                "watch"
            }
            ("GET", "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices") => "list",
            ("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods") => "metrics",
            _ => {
                reply(
                    &mut out,
                    404,
                    &status(404, "NotFound", &format!("{path} not found")),
                );
                continue;
            }
        };
        let (m, cv) = &**st;
        let mut s = m.lock().unwrap();
        if let Some(code) = s.fail.get_mut(kind).and_then(|f| f.pop_front()) {
            drop(s);
            reply(
                &mut out,
                code,
                &status(code, reason(code), "injected by the test"),
            );
            continue;
        }
        match kind {
            "scale_get" => {
                let v = s.scale();
                drop(s);
                reply(&mut out, 200, &v);
            }
            "scale_patch" => {
                let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                s.patches
                    .push(json!({"content_type": ctype, "body": patch}));
                if let Some(n) = s.scaled_by_someone.take() {
                    s.spec = n;
                    s.scale_rv = s.bump();
                    s.sync_pods(false);
                } else if std::mem::take(&mut s.status_moves) {
                    s.scale_rv = s.bump();
                }
                let sent_rv = patch["metadata"]["resourceVersion"]
                    .as_str()
                    .map(String::from);
                if sent_rv.is_some_and(|rv| rv != s.scale_rv.to_string()) {
                    drop(s);
                    reply(
                        &mut out,
                        409,
                        &status(409, "Conflict", "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again"),
                    );
                    continue;
                }
                if let Some(n) = patch["spec"]["replicas"].as_u64() {
                    s.patch_tokens.push(token.to_string());
                    s.spec = n as u32;
                    s.scale_rv = s.bump();
                    s.sync_pods(false);
                }
                let v = s.scale();
                cv.notify_all();
                drop(s);
                reply(&mut out, 200, &v);
            }
            "list" => {
                let v = json!({
                    "kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                    "metadata": {"resourceVersion": s.rv.to_string()},
                    "items": if q.get("labelSelector").map(String::as_str) == Some("kubernetes.io/service-name=web") { vec![s.slice.clone()] } else { vec![] }
                });
                drop(s);
                reply(&mut out, 200, &v);
            }
            "metrics" => {
                let items: Vec<Value> = s
                    .cpu
                    .iter()
                    .map(|(pod, cpu)| {
                        json!({
                            "metadata": {"name": pod, "namespace": "shop"},
                            "timestamp": "2026-12-03T14:00:00Z", "window": "15s",
                            "containers": [{"name": "app", "usage": {"cpu": cpu, "memory": "20Mi"}}]
                        })
                    })
                    .collect();
                drop(s);
                reply(
                    &mut out,
                    200,
                    &json!({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}),
                );
            }
            _ => {
                // A watch: chunked JSON lines, until the epoch moves or the client goes.
                let from: u64 = q
                    .get("resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let _ = write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                );
                let chunk = |out: &mut TcpStream, v: &Value| {
                    let line = format!("{v}\n");
                    write!(out, "{:x}\r\n{line}\r\n", line.len()).and_then(|_| out.flush())
                };
                if from < s.gone_below {
                    let gone = json!({"type": "ERROR", "object": status(410, "Expired", &format!("too old resource version: {from} ({})", s.gone_below))});
                    drop(s);
                    let _ = chunk(&mut out, &gone);
                    let _ = write!(out, "0\r\n\r\n");
                    continue;
                }
                let epoch = s.watch_epoch;
                let mut sent = from;
                loop {
                    let next: Vec<(u64, Value)> = s
                        .events
                        .iter()
                        .filter(|(rv, _)| *rv > sent)
                        .cloned()
                        .collect();
                    if !next.is_empty() {
                        drop(s);
                        for (rv, ev) in &next {
                            if chunk(&mut out, ev).is_err() {
                                return;
                            }
                            sent = *rv;
                        }
                        s = m.lock().unwrap();
                        continue;
                    }
                    if s.down {
                        return;
                    }
                    if s.watch_epoch != epoch {
                        break;
                    }
                    s = cv.wait_timeout(s, Duration::from_millis(200)).unwrap().0;
                }
                drop(s);
                if write!(out, "0\r\n\r\n").is_err() {
                    return;
                }
            }
        }
    }
}

/// RFC 7386's JSON merge patch.
fn merge(dst: &mut Value, patch: &Value) {
    match (dst.as_object_mut(), patch.as_object()) {
        (Some(d), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    d.remove(k);
                } else {
                    merge(d.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *dst = patch.clone(),
    }
}

/// The Lease API: list (by label), create, get, replace (409 on a stale resourceVersion),
/// merge patch.
fn leases(
    st: &Arc<(Mutex<State>, Condvar)>,
    method: &str,
    name: &str,
    q: &BTreeMap<String, String>,
    body: &[u8],
) -> (u16, Value) {
    let (m, _) = &**st;
    let mut s = m.lock().unwrap();
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let not_found = || {
        (
            404,
            status(
                404,
                "NotFound",
                &format!("leases.coordination.k8s.io \"{name}\" not found"),
            ),
        )
    };
    match (method, name) {
        ("GET", "") => {
            let (k, v) = q
                .get("labelSelector")
                .and_then(|l| l.split_once('='))
                .map_or((String::new(), String::new()), |(k, v)| {
                    (k.to_string(), v.to_string())
                });
            let items: Vec<Value> = s
                .leases
                .values()
                .filter(|l| k.is_empty() || l["metadata"]["labels"][&k] == v.as_str())
                .cloned()
                .collect();
            (
                200,
                json!({"kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1",
                         "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
            )
        }
        ("POST", "") => {
            let n = body["metadata"]["name"].as_str().unwrap_or("").to_string();
            if s.leases.contains_key(&n) {
                return (
                    409,
                    status(
                        409,
                        "AlreadyExists",
                        &format!("leases.coordination.k8s.io \"{n}\" already exists"),
                    ),
                );
            }
            let mut l = body.clone();
            l["metadata"]["resourceVersion"] = s.bump().to_string().into();
            s.leases.insert(n, l.clone());
            (201, l)
        }
        ("GET", n) => s.leases.get(n).map_or_else(not_found, |l| (200, l.clone())),
        ("PUT", n) => {
            let Some(old) = s.leases.get(n) else {
                return not_found();
            };
            if body["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
                return (409, status(409, "Conflict", "the object has been modified"));
            }
            let mut l = body.clone();
            l["metadata"]["resourceVersion"] = s.bump().to_string().into();
            s.leases.insert(n.to_string(), l.clone());
            (200, l)
        }
        ("PATCH", n) => {
            let rv = s.bump();
            let Some(l) = s.leases.get_mut(n) else {
                return not_found();
            };
            merge(l, &body);
            l["metadata"]["resourceVersion"] = rv.to_string().into();
            (200, l.clone())
        }
        _ => (405, status(405, "MethodNotAllowed", method)),
    }
}

/// A fake cluster: its API server, a Deployment `web` at `spec` replicas and its `pods`.
struct Cluster {
    _ups: Vec<Upstream>,
    kube: FakeKube,
    port: u16,
    dir: std::path::PathBuf,
}

impl Cluster {
    fn start(pods: usize, spec: u32) -> Cluster {
        Cluster::start_with(pods, spec, &[])
    }

    fn start_with(n: usize, spec: u32, extra: &[&str]) -> Cluster {
        let (ups, ips, port) = pods_with(n, extra);
        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        Cluster {
            _ups: ups,
            kube: FakeKube::start(spec, &ips, port),
            port,
            dir: temp_dir(),
        }
    }
}

/// Pods on loopback addresses 127.0.0.2.. at one port, as a Deployment's pods are on their
/// IPs at the container's port.
fn pods_with(n: usize, extra: &[&str]) -> (Vec<Upstream>, Vec<String>, u16) {
    let port = free_port();
    let ups: Vec<Upstream> = (0..n)
        .map(|i| {
            Upstream::start_on(
                &format!("127.0.0.{}:{port}", i + 2),
                &format!("web-{i}"),
                extra,
            )
        })
        .collect();
    let ips = (0..n).map(|i| format!("127.0.0.{}", i + 2)).collect();
    (ups, ips, port)
}

fn config(autoscale: &str, kubeconfig: &str, kube_extra: &str) -> String {
    format!(
        "{pre}[[route]]\nname = \"app\"\nservice = \"app\"\n\n\
         [service.app]\nbalance = \"round-robin\"\n\n\
         [service.app.autoscale]\n{autoscale}\n\n\
         [service.app.autoscale.kubernetes]\n\
         deployment = \"web\"\nkubeconfig = \"{kubeconfig}\"\n{kube_extra}\n",
        pre = preamble()
    )
}

fn app(h: &Headroom) -> Value {
    h.status()["autoscale"]["app"].clone()
}

/// The pods of `app` in the edge's service and taking traffic.
fn in_service(h: &Headroom) -> Vec<String> {
    h.status()["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["service"] == "app"))
        .and_then(|s| s["replicas"].as_array())
        .map_or(Vec::new(), |r| {
            let mut v: Vec<String> = r
                .iter()
                .filter(|r| {
                    r["source"] == "kubernetes" && r["available"] == true && r["draining"] == false
                })
                .filter_map(|r| {
                    r["replica"]
                        .as_str()
                        .or(r["address"].as_str())
                        .map(String::from)
                })
                .collect();
            v.sort();
            v
        })
}

/// Waits until `done` holds, looking again at each log line headroom writes (every
/// decision, add and drain is one) or each second (`/status` is refreshed every second).
fn wait_for(h: &Headroom, limit: Duration, done: impl Fn() -> bool, what: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    loop {
        let seen = h.stderr.all().len();
        if done() {
            return;
        }
        assert!(Instant::now() < deadline, "waiting for {}", what());
        h.stderr.wait_past(seen, Duration::from_secs(1));
    }
}

/// Waits for `n` pods in the service, and for the controller to say it runs `n`.
fn wait_in_service(h: &Headroom, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = h.stderr.all().len();
        let pods = in_service(h);
        if pods.len() == n && app(h)["current"] == n {
            return pods;
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {n} pods in the service, {pods:?}; autoscale {:#}",
            app(h)
        );
        h.stderr.wait_past(seen, Duration::from_secs(1));
    }
}

/// `min = 3` on a Deployment at 1: the first decision patches its scale to 3 (a merge patch
/// carrying the resourceVersion read, with the kubeconfig's token); the pods the
/// Deployment makes ready join the service and all three are answered from; down to
/// `min = 1` by a reload, the two pods that stop being endpoints are drained and leave.
#[test]
fn a_deployment_is_scaled_through_its_scale_subresource_and_its_ready_pods_serve() {
    let c = Cluster::start(3, 1);
    let (kube, port, dir) = (&c.kube, c.port, &c.dir);
    let kubeconfig = kube.kubeconfig(dir);
    let text = config(
        "min = 3\nmax = 5\ninflight = 10\ninterval = \"1s\"\n[service.app.autoscale.scale_down]\nstabilization = \"0s\"",
        &kubeconfig,
        "",
    );
    let h = Headroom::start(&text);
    let pods = wait_in_service(&h, 3);
    assert_eq!(
        pods,
        [
            format!("127.0.0.2:{port}"),
            format!("127.0.0.3:{port}"),
            format!("127.0.0.4:{port}")
        ]
    );
    let patch = kube.with(|s| s.patches[0].clone());
    assert_eq!(patch["content_type"], "application/merge-patch+json");
    assert_eq!(patch["body"]["spec"]["replicas"], 3);
    assert!(
        patch["body"]["metadata"]["resourceVersion"].is_string(),
        "{patch}"
    );
    let a = app(&h);
    assert_eq!(a["driver"], "kubernetes");
    assert_eq!(a["kubernetes"]["workload"], "deployments/web");
    assert_eq!(a["kubernetes"]["scale"]["spec"], 3, "{a:#}");
    assert_eq!(a["current"], 3);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let r = h.get("/");
        assert_eq!(r.status, 200);
        seen.insert(r.replica());
    }
    assert_eq!(seen.len(), 3, "every ready pod answers: {seen:?}");

    let outcome = h.reload(&text.replacen("min = 3", "min = 1", 1));
    assert!(outcome.contains("config reloaded"), "{outcome}");
    let pods = wait_in_service(&h, 1);
    assert_eq!(pods, [format!("127.0.0.2:{port}")]);
    assert_eq!(kube.with(|s| s.spec), 1);
    assert!(h
        .stderr
        .wait_for("pod not ready or gone: draining it", Duration::from_secs(5))
        .is_some());
    for _ in 0..5 {
        assert_eq!(h.get("/").status, 200);
    }
}

/// The watch resumes from the last bookmark's resourceVersion when the server ends it, and
/// after a `410 Gone` lists again: a pod replaced while the watch was down (and the history
/// compacted) is seen all the same.
#[test]
fn the_endpoint_watch_resumes_from_a_bookmark_and_lists_again_after_410() {
    let c = Cluster::start(2, 1);
    let (kube, port, dir) = (&c.kube, c.port, &c.dir);
    let h = Headroom::start(&config(
        "min = 1\nmax = 1\ninflight = 10\ninterval = \"1s\"",
        &kube.kubeconfig(dir),
        "service = \"web\"\nport = \"http\"",
    ));
    wait_in_service(&h, 1);
    let first = kube.wait_request("a watch", 0, |r| r.contains("watch=true"));
    assert!(first.contains("allowWatchBookmarks=true"), "{first}");
    assert!(first.contains("labelSelector=kubernetes.io"), "{first}");

    // A bookmark, then the server ends the watch: the next starts from the bookmark.
    let n = kube.requests().len();
    // The watch sends what is pending before it sees its end.
    let bookmark = kube.with(|s| {
        let rv = s.bump();
        s.events.push((
            rv,
            json!({"type": "BOOKMARK", "object": {
            "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"resourceVersion": rv.to_string()}}}),
        ));
        s.watch_epoch += 1;
        rv
    });
    let next = kube.wait_request("the watch again", n, |r| r.contains("watch=true"));
    assert!(
        next.contains(&format!("resourceVersion={bookmark}&"))
            || next.ends_with(&format!("resourceVersion={bookmark}")),
        "resumed from the bookmark {bookmark}: {next}"
    );

    // The second pod becomes ready while no event says so, and the history is compacted:
    // the next watch is answered 410, the watcher lists again and sees it.
    let lists = kube
        .requests()
        .iter()
        .filter(|r| !r.contains("watch=") && r.contains("endpointslices"))
        .count();
    let n = kube.requests().len();
    kube.with(|s| {
        s.pods.swap(0, 1);
        s.sync_pods(true);
        s.gone_below = s.rv + 1;
        s.watch_epoch += 1;
    });
    kube.wait_request("a list after 410", n, |r| {
        r.contains("endpointslices") && !r.contains("watch=")
    });
    let want = [format!("127.0.0.3:{port}")];
    wait_for(
        &h,
        Duration::from_secs(30),
        || in_service(&h) == want,
        || format!("{want:?}: {:?}", in_service(&h)),
    );
    let after = kube
        .requests()
        .iter()
        .filter(|r| !r.contains("watch=") && r.contains("endpointslices"))
        .count();
    assert_eq!(after, lists + 1, "one list after the 410");
}

/// 403 on the patch: said once with the RBAC it needs, counted, the workload untouched,
/// tried again after a back-off and scaled once allowed. 500 on the read: nothing decided.
/// 409 because someone else scaled it: the patch is not forced through, the next decision
/// judges from their count. 409 because only its status moved: the same patch on the new
/// version.
#[test]
fn api_errors_change_nothing_and_a_conflict_respects_someone_elses_scale() {
    let c = Cluster::start(4, 1);
    let kube = &c.kube;
    kube.with(|s| {
        s.fail.insert("scale_patch", VecDeque::from([403, 403]));
    });
    let text = config(
        "min = 2\nmax = 4\ninflight = 10\ninterval = \"1s\"",
        &kube.kubeconfig(&c.dir),
        "",
    );
    let h = Headroom::start(&text);
    assert!(h
        .stderr
        .wait_for("403 Forbidden", Duration::from_secs(20))
        .is_some());
    let errors = "headroom_kubernetes_errors_total{service=\"app\"}";
    h.wait_metric_at_least(errors, 1.0);
    assert!(
        h.stderr
            .all()
            .iter()
            .any(|l| l.contains("needs get and patch on deployments/scale in namespace shop")),
        "{:?}",
        h.stderr.all()
    );
    // Both refusals happened, and then the back-off let the third through.
    wait_in_service(&h, 2);
    let patches = kube
        .requests()
        .iter()
        .filter(|r| r.starts_with("PATCH"))
        .count();
    assert_eq!((kube.with(|s| s.spec), patches), (2, 3));
    assert_eq!(h.stderr.count("403 Forbidden"), 1, "logged once per streak");
    assert!(
        app(&h)["kubernetes"]["error"].is_null(),
        "cleared once it answers"
    );

    // The read fails: no decision is made on a count it does not know.
    kube.with(|s| {
        s.fail.insert("scale_get", VecDeque::from([500; 3]));
    });
    h.wait_status("a decision without its scale", |st| {
        st["autoscale"]["app"]["last_decision"]["kubernetes"]
            .as_str()
            .is_some_and(|k| k.contains("scale not read") && k.contains("500"))
    });
    assert_eq!(kube.with(|s| s.spec), 2);

    // Someone scales it to 4 just before our patch to 3.
    kube.with(|s| s.scaled_by_someone = Some(4));
    let outcome = h.reload(&text.replacen("min = 2", "min = 3", 1));
    assert!(outcome.contains("config reloaded"), "{outcome}");
    h.wait_metric(
        "headroom_kubernetes_scale_conflicts_total{service=\"app\"}",
        1.0,
    );
    assert_eq!(
        h.stderr
            .count("autoscale: min changed: a reload changed min"),
        1,
        "the reload, not a schedule: {:?}",
        h.stderr.all()
    );
    assert!(h
        .stderr
        .wait_for("was scaled by someone else", Duration::from_secs(10))
        .is_some());
    wait_in_service(&h, 4);
    // Not forced through: the next decision judges from their 4 (and, as Kubernetes' HPA
    // would, brings it to what the load asks, min 3) — a decision, not the old patch again.
    let decided = h.stderr.wait_until(Duration::from_secs(10), |lines| {
        lines
            .iter()
            .find(|l| l.contains("autoscale: ") && l.contains("from=4 to=3"))
            .cloned()
    });
    assert!(decided.is_some(), "{:?}", h.stderr.all());
    wait_in_service(&h, 3);

    // Only the status moves before the patch to 2 (min 2, 4 idle pods, no stabilisation in
    // the way after the reload below): the patch is made again on the new version.
    kube.with(|s| s.status_moves = true);
    let outcome = h.reload(&format!(
        "{text}\n[service.app.autoscale.scale_down]\nstabilization = \"0s\"\n"
    ));
    assert!(outcome.contains("config reloaded"), "{outcome}");
    wait_in_service(&h, 2);
    assert_eq!(kube.with(|s| s.spec), 2);
    // All along (longer than `timeout`), one watch: a quiet one is not cut by the calls'
    // read timeout.
    let watches = kube
        .requests()
        .iter()
        .filter(|r| r.contains("watch=true"))
        .count();
    assert_eq!(watches, 1, "{:#?}", kube.requests());
    h.wait_metric(
        "headroom_kubernetes_scale_conflicts_total{service=\"app\"}",
        2.0,
    );
}

/// `cpu = "50%"` with the kubernetes driver reads the pods' usage from the metrics API:
/// one pod at 900m is 180% of its target, so two.
#[test]
fn cpu_comes_from_the_metrics_api() {
    let c = Cluster::start(2, 1);
    let kube = &c.kube;
    kube.with(|s| {
        s.cpu.insert("web-0".into(), "900m".into());
    });
    let h = Headroom::start(&config(
        "min = 1\nmax = 4\ncpu = \"50%\"\ninterval = \"1s\"",
        &kube.kubeconfig(&c.dir),
        "",
    ));
    wait_in_service(&h, 2);
    assert!(h
        .stderr
        .wait_for("cpu at 180% of its target → 2", Duration::from_secs(5))
        .is_some());
    assert!(
        kube.requests().iter().any(|r| r
            .contains("/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods?labelSelector=app%3Dweb")),
        "{:?}",
        kube.requests()
    );
}

/// A kubeconfig that is not there: said (with the path), retried, nothing scaled; the
/// proxy runs.
#[test]
fn a_missing_kubeconfig_is_said_and_the_proxy_runs() {
    let h = Headroom::start(&config(
        "min = 1\nmax = 2\ninflight = 10\ninterval = \"1s\"",
        "/nonexistent/kubeconfig",
        "",
    ));
    assert!(h
        .stderr
        .wait_for(
            "kubeconfig /nonexistent/kubeconfig",
            Duration::from_secs(10)
        )
        .is_some());
    h.wait_status("the error in status", |st| {
        st["autoscale"]["app"]["kubernetes"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("/nonexistent/kubeconfig"))
    });
    assert_eq!(h.get("/").status, 503);
}

/// `clients` threads sending GETs to `h` in a loop until the flag is set.
fn load(
    h: &Headroom,
    clients: usize,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (stop, addr) = (stop.clone(), h.addr);
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if c.try_request("GET", "/", &[], b"").is_err() {
                        c = Client::connect(addr);
                    }
                }
            })
        })
        .collect()
}

fn election(h: &Headroom) -> Value {
    app(h)["kubernetes"]["election"].clone()
}

/// Two instances with `leader_election = true`: one holds the Lease and scales; the load
/// only the other one carries reaches it through that one's own Lease (8 requests in
/// flight at 2 per pod: 4 pods, though the leader itself has none); the leader killed, the
/// other takes the Lease over once it has seen it unrenewed for `lease`, and scales back
/// down when the load stops. Every scale patch comes from the leader of the moment.
#[test]
fn two_instances_elect_one_leader_that_scales_on_both_loads_and_the_other_takes_over() {
    let c = Cluster::start_with(4, 1, &["--delay-ms", "200"]);
    let kube = &c.kube;
    let autoscale = "min = 1\nmax = 4\ninflight = 2\ninterval = \"1s\"\n[service.app.autoscale.scale_down]\nstabilization = \"0s\"";
    let extra = "leader_election = true\nlease = \"3s\"\ntimeout = \"1s\"";
    let (da, db) = (temp_dir(), temp_dir());
    let mut a = Headroom::start(&config(autoscale, &kube.kubeconfig_with(&da, TOKEN), extra));
    a.wait_status("a leads", |st| {
        st["autoscale"]["app"]["kubernetes"]["election"]["leader"] == true
    });
    let b = Headroom::start(&config(
        autoscale,
        &kube.kubeconfig_with(&db, TOKEN2),
        extra,
    ));
    b.wait_status("b follows a", |st| {
        let e = &st["autoscale"]["app"]["kubernetes"]["election"];
        e["leader"] == false && e["holder"].is_string()
    });
    assert_eq!(election(&b)["holder"], election(&a)["identity"]);
    assert!(app(&b)["last_decision"]["kubernetes"]
        .as_str()
        .is_some_and(|k| k.contains("not the leader")));
    wait_in_service(&b, 1);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = load(&b, 8, &stop);
    wait_in_service(&a, 4);
    let e = election(&a);
    assert_eq!(e["others"]["instances"], 1, "{e:#}");
    assert_eq!(
        kube.with(|s| s.patch_tokens.clone())
            .iter()
            .filter(|t| *t != TOKEN)
            .count(),
        0,
        "only the leader scales"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }

    let before_kill = kube.with(|s| s.patch_tokens.len());
    a.child.kill().unwrap();
    let _ = a.child.wait();
    b.wait_status("b leads", |st| {
        st["autoscale"]["app"]["kubernetes"]["election"]["leader"] == true
    });
    assert!(b
        .stderr
        .wait_for("this instance leads the scaling", Duration::from_secs(5))
        .is_some());
    wait_in_service(&b, 1);
    let tokens = kube.with(|s| s.patch_tokens.clone());
    assert!(
        tokens.len() > before_kill && tokens[before_kill..].iter().all(|t| t == TOKEN2),
        "after the kill only b patches: {tokens:?}"
    );
    let transitions = kube.with(|s| s.leases["headroom-web"]["spec"]["leaseTransitions"].clone());
    assert_eq!(transitions, 1);
}

/// The API server stalls (calls read, never answered), then goes away (the watch cut
/// mid-stream, every call after it cut too): the pods in the service stay and answer, the
/// stalled calls end at `timeout` and, like the cut ones, are counted; back, the watch
/// resumes and a pod replaced since is seen.
#[test]
fn the_api_server_going_away_keeps_the_last_pods_serving() {
    let c = Cluster::start(2, 1);
    let (kube, port, dir) = (&c.kube, c.port, &c.dir);
    let h = Headroom::start(&config(
        "min = 1\nmax = 2\ninflight = 10\ninterval = \"1s\"",
        &kube.kubeconfig(dir),
        "timeout = \"1s\"",
    ));
    wait_in_service(&h, 1);
    kube.with(|s| s.stall = true);
    assert!(
        h.stderr
            .wait_for("GET deployments/web/scale:", Duration::from_secs(10))
            .is_some_and(|l| l.contains("timed out") || l.contains("timeout")),
        "{:?}",
        h.stderr.all()
    );
    for _ in 0..5 {
        assert_eq!(h.get("/").status, 200);
    }
    kube.with(|s| {
        s.stall = false;
        s.down = true;
    });
    let errors = "headroom_kubernetes_errors_total{service=\"app\"}";
    h.wait_metric_at_least(errors, 3.0);
    assert_eq!(in_service(&h), [format!("127.0.0.2:{port}")]);
    for _ in 0..5 {
        assert_eq!(h.get("/").status, 200);
    }
    assert!(h
        .stderr
        .wait_for("the last endpoints stay", Duration::from_secs(10))
        .is_some());
    kube.with(|s| {
        s.down = false;
        s.pods.swap(0, 1);
        s.sync_pods(false);
    });
    let want = [format!("127.0.0.3:{port}")];
    wait_for(
        &h,
        Duration::from_secs(60),
        || in_service(&h) == want,
        || format!("{want:?}: {:?}", in_service(&h)),
    );
    assert_eq!(kube.with(|s| s.spec), 1);
}

/// `min = 0` on a Deployment at 0: the first request is held while the workload is patched
/// to 1 and its pod becomes a ready endpoint, then answered; after `idle` without a request
/// the workload goes back to 0 and the pod leaves the service.
#[test]
fn from_zero_a_request_waits_for_the_first_pod_and_idleness_scales_the_workload_to_zero() {
    let c = Cluster::start(1, 0);
    let (kube, dir) = (&c.kube, &c.dir);
    let h = Headroom::start(&config(
        "min = 0\nmax = 2\ninflight = 10\ninterval = \"1s\"\nidle = \"2s\"\ncold_start_timeout = \"20s\"\n[service.app.autoscale.scale_down]\nstabilization = \"0s\"",
        &kube.kubeconfig(dir),
        "",
    ));
    h.wait_status("the workload read at 0", |st| {
        st["autoscale"]["app"]["kubernetes"]["scale"]["spec"] == 0
    });
    assert!(in_service(&h).is_empty());
    let r = h.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.replica(), "web-0");
    assert_eq!(kube.with(|s| s.spec), 1);
    let cold =
        h.metric("headroom_autoscale_held_requests_total{service=\"app\",result=\"released\"}");
    assert_eq!(cold, 1.0);
    // No request for `idle`: back to zero, the pod drained out.
    wait_for(
        &h,
        Duration::from_secs(30),
        || kube.with(|s| s.spec) == 0 && in_service(&h).is_empty(),
        || format!("zero: {:#}", app(&h)),
    );
}

/// headroom started in front of a workload already at 4, with no load yet: neither the
/// HPA (its window seeded with the running count, as Kubernetes seeds a new HPA's) nor the
/// requests mode (which holds it for a stable window while its windows fill) scales it down
/// on its first readings, and nothing is decided before the pods are listed.
#[test]
fn a_running_workload_is_adopted_not_scaled_down_at_once() {
    let c = Cluster::start(4, 4);
    let (kube, dir) = (&c.kube, &c.dir);
    for mode in [
        "mode = \"hpa\"\ninterval = \"1s\"",
        "mode = \"requests\"\nstable_window = \"30s\"",
    ] {
        let h = Headroom::start(&config(
            &format!("min = 1\nmax = 4\ninflight = 10\n{mode}"),
            &kube.kubeconfig(dir),
            "",
        ));
        wait_in_service(&h, 4);
        let from = kube.requests().len();
        kube.wait_count("three decisions' scale reads", from, 3, |r| {
            r.starts_with("GET") && r.ends_with("/scale")
        });
        let patches = kube
            .requests()
            .iter()
            .filter(|r| r.starts_with("PATCH"))
            .count();
        assert_eq!(
            (kube.with(|s| s.spec), patches),
            (4, 0),
            "{mode}: {:#}",
            app(&h)
        );
        assert_eq!(app(&h)["desired"], 4, "{mode}");
    }
}

/// A StatefulSet is scaled through its own scale subresource (`apps/v1 statefulsets`).
#[test]
fn a_statefulset_is_scaled_through_its_scale_subresource() {
    let c = Cluster::start(2, 1);
    let (kube, dir) = (&c.kube, &c.dir);
    let text = config(
        "min = 2\nmax = 2\ninflight = 10\ninterval = \"1s\"",
        &kube.kubeconfig(dir),
        "",
    )
    .replacen("deployment = \"web\"", "statefulset = \"web\"", 1);
    let h = Headroom::start(&text);
    wait_in_service(&h, 2);
    assert_eq!(app(&h)["kubernetes"]["workload"], "statefulsets/web");
    let patch = kube.wait_request("the patch", 0, |r| r.starts_with("PATCH"));
    assert!(
        patch.contains("/apis/apps/v1/namespaces/shop/statefulsets/web/scale"),
        "{patch}"
    );
    assert!(!kube.requests().iter().any(|r| r.contains("/deployments/")));
}
