//! Test support: real processes on loopback. `Upstream` is `headroom demo-upstream`
//! (a real HTTP server, killable), `Headroom` is the real binary with a config file, and
//! `Client` is a blocking HTTP/1.1 client over a plain socket, so tests can also send
//! malformed bytes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_headroom");

/// Lines a child process printed, with a condvar to wait for one (no sleeps).
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<Seen>, Condvar)>);

/// The lines so far, and whether the stream has ended.
type Seen = (Vec<String>, bool);

impl Lines {
    pub fn follow(reader: impl Read + Send + 'static) -> Lines {
        let lines = Lines::default();
        let l = lines.clone();
        std::thread::spawn(move || {
            let (m, c) = &*l.0;
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                m.lock().unwrap().0.push(line);
                c.notify_all();
            }
            // The stream ended: nobody waits for a line that can no longer come.
            m.lock().unwrap().1 = true;
            c.notify_all();
        });
        lines
    }

    /// Waits until `pred` holds over the lines so far, woken by each new line; `limit` is a
    /// safety net, not a sync. Returns what `pred` found, or None at the limit or at EOF.
    pub fn wait_until<T>(
        &self,
        limit: Duration,
        pred: impl Fn(&[String]) -> Option<T>,
    ) -> Option<T> {
        let (m, c) = &*self.0;
        let deadline = Instant::now() + limit;
        let mut guard = m.lock().unwrap();
        loop {
            if let Some(found) = pred(&guard.0) {
                return Some(found);
            }
            if guard.1 {
                return None;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            guard = c.wait_timeout(guard, left).unwrap().0;
        }
    }

    /// Waits for a line containing `needle`, for at most `limit` (a safety net, not a sync).
    pub fn wait_for(&self, needle: &str, limit: Duration) -> Option<String> {
        self.wait_until(limit, |lines| {
            lines.iter().find(|l| l.contains(needle)).cloned()
        })
    }

    /// Waits at most `limit` for a line beyond the first `seen`; true if one came.
    pub fn wait_past(&self, seen: usize, limit: Duration) -> bool {
        self.wait_until(limit, |lines| (lines.len() > seen).then_some(()))
            .is_some()
    }

    pub fn all(&self) -> Vec<String> {
        self.0 .0.lock().unwrap().0.clone()
    }

    pub fn count(&self, needle: &str) -> usize {
        let guard = self.0 .0.lock().unwrap();
        guard.0.iter().filter(|l| l.contains(needle)).count()
    }
}

/// A `headroom demo-upstream` process.
pub struct Upstream {
    pub child: Child,
    pub addr: SocketAddr,
    pub name: String,
}

impl Upstream {
    pub fn start(name: &str) -> Upstream {
        Upstream::start_with(name, &[])
    }

    pub fn start_with(name: &str, extra: &[&str]) -> Upstream {
        Upstream::start_on("127.0.0.1:0", name, extra)
    }

    pub fn start_on(bind: &str, name: &str, extra: &[&str]) -> Upstream {
        let mut child = Command::new(BIN)
            .args(["demo-upstream", "--bind", bind, "--name", name])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start demo-upstream");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .expect("upstream address")
            .parse()
            .unwrap();
        Upstream {
            child,
            addr,
            name: name.into(),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Requests served so far (health checks and control calls excluded).
    pub fn served(&self) -> u64 {
        let r = Client::connect(self.addr).get("/_control/count");
        r.text().trim().parse().unwrap()
    }

    pub fn set_health(&self, status: u16) {
        let r = Client::connect(self.addr).request(
            "POST",
            &format!("/_control/health/{status}"),
            &[],
            b"",
        );
        assert_eq!(r.status, 200);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `headroom serve` with its config file in a temp dir.
pub struct Headroom {
    pub child: Child,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub stderr: Lines,
    pub stdout: Lines,
}

pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "headroom-test-{}-{}",
        std::process::id(),
        fastrand_u64()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

impl Headroom {
    /// Starts headroom with `config` (listener and admin binds may use port 0).
    pub fn start(config: &str) -> Headroom {
        Headroom::start_with_args(config, &["--workers", "2"])
    }

    pub fn start_with_args(config: &str, args: &[&str]) -> Headroom {
        let dir = temp_dir();
        let path = dir.join("headroom.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .args(args)
            .env("HEADROOM_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start headroom");
        let stderr = Lines::follow(child.stderr.take().unwrap());
        let stdout = Lines::follow(child.stdout.take().unwrap());
        let line = stderr
            .wait_for(" listening ", Duration::from_secs(20))
            .unwrap_or_else(|| panic!("headroom did not start:\n{}", stderr.all().join("\n")));
        let addr = field(&line, "addr=").parse().unwrap();
        let admin = stderr
            .wait_for("admin listening", Duration::from_millis(500))
            .map(|l| field(&l, "addr=").parse().unwrap());
        Headroom {
            child,
            dir,
            config: path,
            addr,
            admin,
            stderr,
            stdout,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    pub fn get(&self, path: &str) -> Response {
        self.client().get(path)
    }

    pub fn admin_get(&self, path: &str) -> Response {
        Client::connect(self.admin.expect("admin listener")).get(path)
    }

    pub fn admin_post(&self, path: &str, body: &str) -> Response {
        Client::connect(self.admin.expect("admin listener")).request(
            "POST",
            path,
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_slice(&self.admin_get("/status").body).unwrap()
    }

    pub fn metrics(&self) -> String {
        self.admin_get("/metrics").text()
    }

    /// Value of one metric series line, e.g. `headroom_retries_total{service="a"}`.
    pub fn metric(&self, series: &str) -> f64 {
        let m = self.metrics();
        series_value(&m, series).unwrap_or_else(|| panic!("no series {series} in\n{m}"))
    }

    /// Reads `/status` until its `watch` section satisfies `pred`, for up to 40 s, and
    /// returns that section: the watch plane samples every 10 s, and a sample taken in the
    /// middle of a test's traffic needs the next one.
    pub fn wait_watch(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let w = self.status()["watch"].clone();
            if pred(&w) {
                return w;
            }
            assert!(Instant::now() < deadline, "{what}: /status watch is {w:#}");
            // No signal for a sample taken: the watch plane logs nothing per tick.
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Reads /status until `pred` holds. See [`Headroom::wait_state`].
    pub fn wait_status(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        self.wait_state(what, || self.status(), pred);
    }

    /// Reads one metric series until it has `value`. See [`Headroom::wait_state`].
    /// A series not there yet (registered when a worker starts, or on first use) is waited
    /// for like a value not reached yet.
    pub fn wait_metric(&self, series: &str, value: f64) {
        let read = || series_value(&self.metrics(), series);
        self.wait_state(series, read, |v| *v == Some(value));
    }

    /// Reads one metric series until it is at least `min`.
    pub fn wait_metric_at_least(&self, series: &str, min: f64) {
        let read = || series_value(&self.metrics(), series);
        self.wait_state(series, read, |v| v.is_some_and(|v| v >= min));
    }

    /// Reads a state with `read` until `pred` holds. Health transitions and ejections are
    /// logged, so a new stderr line wakes the next read at once; states that change silently
    /// (an ejection running out, in-flight counts draining, a tunnel closing) are read again
    /// after at most 50 ms. 15 s is a safety net.
    pub fn wait_state<T: std::fmt::Debug>(
        &self,
        what: &str,
        read: impl Fn() -> T,
        pred: impl Fn(&T) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let seen = self.stderr.all().len();
            let s = read();
            if pred(&s) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last read:\n{s:#?}"
            );
            self.stderr.wait_past(seen, Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Rewrites the config file and sends SIGHUP; returns the reload's logged outcome.
    pub fn reload(&self, config: &str) -> String {
        let outcome =
            |l: &String| l.contains("config reloaded") || l.contains("config not reloaded");
        let before = self.stderr.all().iter().filter(|l| outcome(l)).count();
        std::fs::write(&self.config, config).unwrap();
        self.signal("HUP");
        self.stderr
            .wait_until(Duration::from_secs(10), |lines| {
                lines.iter().filter(|l| outcome(l)).nth(before).cloned()
            })
            .unwrap_or_else(|| {
                panic!(
                    "no reload outcome logged:\n{}",
                    self.stderr.all().join("\n")
                )
            })
    }
}

impl Drop for Headroom {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len();
    line[start..].split_whitespace().next().unwrap()
}

/// A response read off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// The upstream replica that answered (from the demo upstream's JSON).
    pub fn replica(&self) -> String {
        self.header("x-replica").unwrap_or("").to_string()
    }
}

/// A blocking HTTP/1.1 client on one keep-alive connection.
pub struct Client {
    reader: BufReader<TcpStream>,
    /// The last request was HEAD: its response has no body, whatever its headers say.
    head: bool,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(s),
            head: false,
        }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        self.head = method == "HEAD";
        let mut raw = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            raw.push_str("Host: test.local\r\n");
        }
        for (k, v) in headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        raw.push_str("\r\n");
        let mut bytes = raw.into_bytes();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes)
    }

    /// Writes `raw` as is and reads one response.
    pub fn send_raw(&mut self, raw: &[u8]) -> std::io::Result<Response> {
        self.reader.get_mut().write_all(raw)?;
        self.read_response()
    }

    pub fn read_response(&mut self) -> std::io::Result<Response> {
        let r = &mut self.reader;
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if self.head {
            // No body follows a HEAD response.
        } else if let Some(len) = get("content-length") {
            body.resize(len.parse().unwrap(), 0);
            r.read_exact(&mut body)?;
        } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            loop {
                line.clear();
                r.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap(), 16)
                    .map_err(std::io::Error::other)?;
                let mut chunk = vec![0; size + 2];
                r.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if status >= 200 && status != 204 && status != 304 {
            r.read_to_end(&mut body)?;
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// True when the peer has closed the connection: a read sees EOF or a reset. False when
    /// more bytes come, or none within 3 s: a read timeout is not a close, so
    /// `assert!(c.is_closed())` fails (and fast) when the gateway keeps the connection open.
    pub fn is_closed(&mut self) -> bool {
        use std::io::ErrorKind::*;
        let before = self.reader.get_ref().read_timeout().unwrap();
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut b = [0u8; 1];
        let read = self.reader.read(&mut b);
        self.reader.get_ref().set_read_timeout(before).unwrap();
        match read {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe),
        }
    }
}

/// Counts answers per replica for `n` sequential GETs of `path` on one connection.
pub fn tally(
    h: &Headroom,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> std::collections::BTreeMap<String, usize> {
    let mut c = h.client();
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let r = c.request("GET", path, headers, b"");
        assert_eq!(r.status, 200, "{}", r.text());
        *counts.entry(r.replica()).or_insert(0) += 1;
    }
    counts
}

/// The config preamble every test uses: port-0 listener and admin, JSON access log.
pub fn preamble() -> String {
    "[global]\nwatch = false\nshutdown_timeout = \"10s\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n[[listener]]\nname = \"public\"\nbind = \"127.0.0.1:0\"\n\n".to_string()
}

/// One route to one service with `up` as its replica, and `listener_extra` (TOML lines) added
/// to the listener.
pub fn one_route_config(up: &Upstream, listener_extra: &str) -> String {
    one_route_config_with(up, listener_extra, "")
}

/// [`one_route_config`] with `service_extra` (TOML lines) added to the service too.
pub fn one_route_config_with(up: &Upstream, listener_extra: &str, service_extra: &str) -> String {
    format!(
        "{}[[route]]\nservice = \"s\"\n\n[service.s]\nreplicas = [\"{}\"]\n{service_extra}\n",
        preamble().replacen(
            "name = \"public\"\nbind = \"127.0.0.1:0\"\n",
            &format!("name = \"public\"\nbind = \"127.0.0.1:0\"\n{listener_extra}\n"),
            1
        ),
        up.addr
    )
}

/// `headroom check` on `config` (written as `bad.toml` in a temp dir): its exit code and
/// what it printed on stderr.
#[allow(dead_code)]
pub fn check_config(config: &str) -> (Option<i32>, String) {
    let path = temp_dir().join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of `series` in a `/metrics` text, if it is there.
pub fn series_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Asserts that no replica has been ejected since the start.
pub fn assert_no_ejections(h: &Headroom) {
    let m = h.metrics();
    let ejections: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("headroom_replica_ejections_total{"))
        .collect();
    assert!(!ejections.is_empty(), "no ejection counter in\n{m}");
    assert!(ejections.iter().all(|l| l.ends_with(" 0")), "{ejections:?}");
}

pub fn replicas(ups: &[&Upstream]) -> String {
    ups.iter()
        .map(|u| format!("\"{}\"", u.addr))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `headroom <command> --config FILE` did with `text` as FILE.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The config file's path as the command printed it.
    pub file: String,
}

pub fn run_with_config(command: &str, text: &str) -> Ran {
    let dir = temp_dir();
    let path = dir.join("headroom.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args([command, "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        file: path.display().to_string(),
    }
}

/// A self-signed certificate for `localhost` (and its key) in `dir`, made by openssl: PEM
/// paths `(cert, key)`. Not a CA, so it can be trusted as itself.
pub fn make_cert(dir: &std::path::Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (the README's test command installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

/// Reads one HTTP/1.1 request a test receiver was sent (a webhook, an OTLP collector): its
/// header lines (lower-cased) and its `Content-Length` body; `None` if it broke off.
#[allow(dead_code)]
pub fn read_request(conn: &TcpStream) -> Option<(Vec<String>, Vec<u8>)> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut len = 0usize;
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let lower = line.trim_end().to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        head.push(lower);
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// A real Prometheus on loopback scraping `admin` every second; killed on drop.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    _dir: std::path::PathBuf,
}

impl Prometheus {
    pub fn start(admin: std::net::SocketAddr) -> Prometheus {
        let dir = temp_dir();
        let port = free_port();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: headroom\n    static_configs:\n      - targets: ['{admin}']\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus; scripts/test.sh installs it)");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// The first sample's value of an instant query, if any.
    pub fn query(&self, q: &str) -> Option<f64> {
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        drop(stream);
        let path = format!("/api/v1/query?query={}", urlencode(q));
        let r = Client::connect(addr).get(&path);
        if r.status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Polls `q` until `pred` holds of its value; panics with the last value after 60 s.
    pub fn wait(&self, q: &str, pred: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = None;
        while Instant::now() < deadline {
            last = self.query(q);
            if let Some(v) = last.filter(|v| pred(*v)) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("prometheus: {q} = {last:?} after 60 s");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// Its base URL, for `[..autoscale.prometheus] url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops it (a dependency that dies): its port refuses from now on.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An h2 (prior knowledge) client connection to `addr`: its sender, and the connection's
/// task (it ends when the connection does).
#[allow(dead_code)]
pub async fn h2c_connect<B>(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<B>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
)
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    (send, tokio::spawn(conn))
}
