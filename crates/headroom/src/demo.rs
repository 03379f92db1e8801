//! `headroom demo`: a gateway on the embedded default in front of real demo replicas
//! (child processes of this binary), with nothing to install or write.

use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};

/// `println!` that ignores a closed stdout (the demo keeps serving).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Replicas that stop when the demo ends, however it ends: each runs under `headroom
/// replica-shim`, whose stdin is a pipe from the demo. Dropped (the demo returns), the pipes
/// close and the shims stop their replicas; a demo killed with SIGKILL closes them too.
struct Replicas(Vec<Child>);

impl Drop for Replicas {
    fn drop(&mut self) {
        for c in &mut self.0 {
            drop(c.stdin.take());
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// Starts `headroom demo-upstream` under the replica shim on a free port, and returns the
/// shim once the replica accepts connections, with the replica's address.
pub fn spawn_upstream(
    name: &str,
    delay_ms: u64,
    error_rate: f64,
) -> Result<(Child, String), String> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port for a demo replica: {e}"))?;
    let mut child = Command::new(&exe)
        .args(["replica-shim", "--grace", "1s", "--"])
        .arg(&exe)
        .args([
            "demo-upstream",
            "--bind",
            &addr.to_string(),
            "--name",
            name,
            "--delay-ms",
            &delay_ms.to_string(),
            "--error-rate",
            &error_rate.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own group: Ctrl-C in the terminal reaches the demo, whose exit stops it.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start a demo replica: {e}"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok((child, addr.to_string()));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("demo replica {name} exited at start ({status})"));
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            return Err(format!(
                "demo replica {name} did not listen on {addr} within 10 s"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub fn run(port: u16, admin_port: u16, count: usize) -> ExitCode {
    crate::init_logging();
    let mut replicas = Replicas(Vec::new());
    let mut addrs = Vec::new();
    // One replica is slower and one fails now and then, so balancing and retries show.
    for i in 0..count.max(1) {
        let name = format!("replica-{}", i + 1);
        let (delay, errors) = match i {
            1 => (20, 0.0),
            2 => (2, 0.05),
            _ => (2, 0.0),
        };
        match spawn_upstream(&name, delay, errors) {
            Ok((child, addr)) => {
                replicas.0.push(child);
                addrs.push(addr);
            }
            Err(e) => {
                eprintln!("headroom demo: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let replica_list = addrs
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    // The autoscaled service runs this binary's demo-upstream as its replicas.
    let exe = std::env::current_exe()
        .map(|p| {
            p.to_string_lossy()
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
        })
        .unwrap_or_else(|_| "headroom".into());
    let toml = format!(
        r#"
[global]
access_log = "off"

[admin]
bind = "127.0.0.1:{admin_port}"

[[listener]]
name = "public"
bind = "127.0.0.1:{port}"

[[route]]
name = "hello"
match = {{ path = "/hello" }}
respond = {{ status = 200, body = "hello from headroom\n" }}

[[route]]
name = "static"
match = {{ path_prefix = "/static/" }}
service = "demo"
[route.cache]
ttl = "1m"
[route.compress]

[[route]]
name = "api"
match = {{ path_prefix = "/api/" }}
service = "demo"
[[route.limit]]
name = "per-ip"
rate = "5/s"
burst = 10

[[route]]
name = "work"
match = {{ path_prefix = "/work/" }}
service = "scaled"

[[route]]
name = "app"
match = {{ path_prefix = "/" }}
service = "demo"

[service.scaled]
health = {{ path = "/healthz", interval = "1s" }}
[service.scaled.autoscale]
min = 1
max = 5
mode = "requests"
inflight = 4
stable_window = "20s"
[service.scaled.autoscale.process]
command = ["{exe}", "demo-upstream", "--bind", "127.0.0.1:{{port}}", "--name", "scaled-{{index}}", "--delay-ms", "50"]
grace = "5s"

[service.demo]
balance = "p2c-ewma"
replicas = [{replica_list}]
health = {{ path = "/healthz", interval = "1s" }}
retry = {{ attempts = 2, on_status = [500, 502, 503, 504] }}

[[watch.slo]]
route = "app"
objective = "99.9%"

[[watch.slo]]
route = "app"
objective = "99%"
latency = "25ms"
"#
    );
    let config = match headroom_config::parse("demo.toml", &toml, Path::new(".")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("headroom demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    say!(
        "headroom demo: a gateway on http://127.0.0.1:{port} in front of {} replicas ({})",
        addrs.len(),
        addrs.join(", ")
    );
    say!();
    say!("Try:");
    say!("  curl -s http://127.0.0.1:{port}/                     # a replica answers; see \"replica\"");
    say!("  curl -s http://127.0.0.1:{port}/hello                # a fixed response from the gateway");
    say!("  for i in $(seq 20); do curl -s -o /dev/null -w '%{{http_code}} ' http://127.0.0.1:{port}/; done; echo");
    say!("                                                       # all 200: replica-3's errors are retried");
    say!("  curl -si http://127.0.0.1:{port}/static/app.js | grep -i cache   # cached for 1m: MISS, then HIT");
    say!("  for i in $(seq 12); do curl -s -o /dev/null -w '%{{http_code}} ' http://127.0.0.1:{port}/api/; done; echo");
    say!("                                                       # 10 x 200, then 429: /api/ allows 5/s, bursts of 10");
    say!(
        "  {} purge --admin 127.0.0.1:{admin_port} --prefix /static/        # purge it",
        shell_name_of_this_binary().0
    );
    say!("  curl -s http://127.0.0.1:{admin_port}/status          # routes, replicas, health, latency, cache, SLOs");
    say!("  curl -s http://127.0.0.1:{admin_port}/metrics         # Prometheus metrics");
    let (bin, on_path) = shell_name_of_this_binary();
    say!("  {bin} bench --rate 500/s -d 10s http://127.0.0.1:{port}/   # load it, open loop");
    say!("  {bin} bench --find-max --slo 'p99<50ms,errors<1%' --step 3s \\");
    say!("      --against http://127.0.0.1:{admin_port} http://127.0.0.1:{port}/   # how much can it take?");
    if !on_path {
        say!("  (`cargo install --path crates/headroom` puts `headroom` on your PATH)");
    }
    say!();
    say!("  {bin} bench --rate 200/s -d 40s http://127.0.0.1:{port}/work/   # /work/ autoscales 1 to 5 replicas:");
    say!("      watch them come (and go, 20 s after) on http://127.0.0.1:{admin_port}/ or in /status' \"autoscale\"");
    say!();
    say!("replica-2 answers in 20 ms, the others in 2 ms: p2c-ewma sends it less traffic.");
    say!("replica-3 fails 5% of requests: retries hide that from clients.");
    say!("Ctrl-C stops the demo.");
    let code = crate::serve::serve_config(config, None, |_| {});
    drop(replicas);
    code
}

/// How a shell runs this very binary, for the commands the demo prints: `headroom` when that
/// name on PATH is this file (true), else this file's path, quoted for the shell if need be
/// (false): after `cargo run -- demo` no `headroom` is on PATH, and the lines must still run
/// as pasted.
fn shell_name_of_this_binary() -> (String, bool) {
    let Ok(exe) = std::env::current_exe() else {
        return ("headroom".into(), false);
    };
    let exe = exe.canonicalize().unwrap_or(exe);
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .any(|dir| dir.join("headroom").canonicalize().is_ok_and(|p| p == exe))
    });
    if on_path {
        return ("headroom".into(), true);
    }
    (shell_quote(&exe.to_string_lossy()), false)
}

/// `s` as one shell word: as is when it holds only safe characters, else in single quotes.
fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn paths_are_quoted_only_when_a_shell_would_split_them() {
        assert_eq!(
            shell_quote("/work/target/debug/headroom"),
            "/work/target/debug/headroom"
        );
        assert_eq!(
            shell_quote("/home/me/my code/headroom"),
            "'/home/me/my code/headroom'"
        );
        assert_eq!(
            shell_quote("/tmp/it's/headroom"),
            "'/tmp/it'\\''s/headroom'"
        );
    }
}
