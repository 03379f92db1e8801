//! headroom's own CPU, memory and file descriptors, under the names Prometheus' client
//! libraries use (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...), read
//! from `/proc/self` when `/metrics` is scraped: nothing is sampled between scrapes.
//!
//! Off Linux (no `/proc`) the values read 0. Replicas headroom runs as local processes get
//! the same readings through [`ProcStat::of`], by pid.

use crate::registry::Registry;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Clock ticks per second in `/proc/PID/stat`: `USER_HZ`, fixed at 100 by the kernel's
/// user-space ABI on every architecture Linux ships (sysconf(_SC_CLK_TCK) would need libc).
const USER_HZ: f64 = 100.0;

/// One reading of a process's CPU time and memory.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcStat {
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    pub threads: u64,
}

impl ProcStat {
    /// The reading for `pid` (`None`: this process); `None` when it is gone or `/proc` is
    /// not there. Cost: two small file reads.
    pub fn of(pid: Option<u32>) -> Option<ProcStat> {
        let dir = pid.map_or("/proc/self".to_string(), |p| format!("/proc/{p}"));
        let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
        Some(ProcStat::parse(&stat, &status))
    }

    /// From the texts of `/proc/PID/stat` and `/proc/PID/status`.
    fn parse(stat: &str, status: &str) -> ProcStat {
        // The command name (field 2) is in parentheses and may hold spaces: count the
        // fields after its closing one. utime and stime are fields 14 and 15.
        let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let cpu = ticks(11).unwrap_or(0) + ticks(12).unwrap_or(0);
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ProcStat {
            cpu_seconds: cpu as f64 / USER_HZ,
            resident_bytes: kib("VmRSS:") * 1024,
            virtual_bytes: kib("VmSize:") * 1024,
            threads: kib("Threads:"),
        }
    }
}

/// Open file descriptors of this process (entries of `/proc/self/fd`, less the one the
/// listing itself holds).
fn open_fds() -> f64 {
    std::fs::read_dir("/proc/self/fd").map_or(0.0, |d| d.count().saturating_sub(1) as f64)
}

/// The soft limit on open files, from `/proc/self/limits`.
fn max_fds() -> f64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|n| n.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// Registers the process metrics on `registry`; call once at start.
pub fn register(registry: &Registry) {
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64().floor());
    let stat = |f: fn(&ProcStat) -> f64| -> crate::ReadFn {
        Arc::new(move || ProcStat::of(None).as_ref().map_or(0.0, f))
    };
    registry.read_fn(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent, seconds.",
        "counter",
        &[],
        stat(|s| s.cpu_seconds),
    );
    registry.read_fn(
        "process_resident_memory_bytes",
        "Resident memory size, bytes.",
        "gauge",
        &[],
        stat(|s| s.resident_bytes as f64),
    );
    registry.read_fn(
        "process_virtual_memory_bytes",
        "Virtual memory size, bytes.",
        "gauge",
        &[],
        stat(|s| s.virtual_bytes as f64),
    );
    registry.read_fn(
        "process_threads",
        "OS threads of the process.",
        "gauge",
        &[],
        stat(|s| s.threads as f64),
    );
    registry.read_fn(
        "process_open_fds",
        "Open file descriptors.",
        "gauge",
        &[],
        Arc::new(open_fds),
    );
    registry.read_fn(
        "process_max_fds",
        "The limit on open file descriptors.",
        "gauge",
        &[],
        Arc::new(max_fds),
    );
    registry.read_fn(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch, seconds.",
        "gauge",
        &[],
        Arc::new(move || started),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;

    #[test]
    fn stat_fields_are_counted_after_the_command_name_even_with_spaces_in_it() {
        let stat = "4242 (tokio worker (1)) S 1 4242 4242 0 -1 4194560 1205 0 0 0 250 130 0 0 20 0 9 0 123 0 0";
        let status = "Name:\theadroom\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\nThreads:\t9\n";
        let s = ProcStat::parse(stat, status);
        assert_eq!(s.cpu_seconds, 3.8, "250 + 130 ticks at 100 a second");
        assert_eq!(s.resident_bytes, 10240 * 1024);
        assert_eq!(s.virtual_bytes, 204800 * 1024);
        assert_eq!(s.threads, 9);
    }

    #[test]
    fn this_process_reads_real_values() {
        let s = ProcStat::of(None).expect("/proc/self");
        assert!(s.resident_bytes > 0 && s.threads >= 1, "{s:?}");
        let r = Registry::new();
        register(&r);
        let text = r.render();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {text}"))
        };
        assert!(value("process_open_fds") >= 3.0, "stdin, stdout, stderr");
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_resident_memory_bytes") > 0.0);
        let om = r.render_as(Format::OpenMetrics);
        assert!(om.contains("# TYPE process_cpu_seconds counter\n"), "{om}");
        assert!(om.contains("\nprocess_cpu_seconds_total "), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
    }
}
