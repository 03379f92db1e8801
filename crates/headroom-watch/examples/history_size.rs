//! Measures the history at full size: 50 series, every tier full (35 days of 10 s records,
//! 17 latency buckets), then its file size, its memory, one flush's cost in steady state and
//! the time to read the file back.
//!
//! `cargo run --example history_size -p headroom-watch --release [-- DIR]` (default: the
//! system's temp dir; the file is removed at the end).

use std::time::Instant;

use headroom_watch::history::{History, HistoryLimits, Sample, SLOTS_PER_SERIES, TIERS};

const SERIES: usize = 50;
/// Prometheus-style bounds, 16 of them: 17 buckets with +Inf.
const BOUNDS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0,
];
/// Share of requests per bucket for a typical API route (most under 100 ms, a tail).
const SHAPE: [f64; 17] = [
    0.10, 0.18, 0.25, 0.17, 0.09, 0.06, 0.07, 0.035, 0.015, 0.008, 0.006, 0.003, 0.001, 0.0005,
    0.0003, 0.0001, 0.0001,
];
const DAYS: u64 = 35;
const START: u64 = 1_800_000_000;

/// xorshift64*: deterministic jitter without a dependency.
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What route `route` served in the 10 s ending at `at`: 2-200 req/s by route, a day/night
/// swing of ±60 %, ~0.5 % errors, latency spread over the buckets with ±30 % jitter.
fn sample(route: usize, at: u64, jitter: &mut Jitter) -> Sample {
    let rate = 2.0 + 198.0 * (route as f64 / SERIES as f64).powi(2);
    let day = ((at % 86_400) as f64 / 86_400.0 * std::f64::consts::TAU).sin();
    let total = (rate * 10.0 * (1.0 + 0.6 * day) * (0.8 + 0.4 * jitter.next())) as u64;
    let buckets: Vec<u64> = SHAPE
        .iter()
        .map(|share| (total as f64 * share * (0.7 + 0.6 * jitter.next())).round() as u64)
        .collect();
    Sample {
        total: buckets.iter().sum(),
        errors: (total as f64 * 0.005 * 2.0 * jitter.next()).round() as u64,
        buckets,
    }
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("headroom-history-size-{}", std::process::id()));
    let path = dir.join("history.redb");
    let rss_before = rss_kib();
    let (mut history, notice) =
        History::open(&path, BOUNDS.to_vec(), HistoryLimits::default()).expect("bounds");
    println!("file: {} ({notice:?})", path.display());

    let mut jitter = Jitter(0x9e37_79b9_7f4a_7c15);
    let end = START + DAYS * 86_400;
    let filling = Instant::now();
    for at in (START..end).step_by(10) {
        for route in 0..SERIES {
            let s = sample(route, at, &mut jitter);
            history
                .record(&format!("route:r{route:02}"), at, &s)
                .expect("recorded");
        }
    }
    let filled = filling.elapsed();
    let flushing = Instant::now();
    let full = history.flush().expect("flush");
    let flushed = flushing.elapsed();
    let file = full.file_bytes.unwrap_or(0) as f64;
    let memory = history.memory_bytes() as f64;
    let rss_after = rss_kib();
    let slots = SERIES as u64 * SLOTS_PER_SERIES;

    println!(
        "filled {SERIES} series × {DAYS} days ({} records) in {filled:.1?}",
        (end - START) / 10 * SERIES as u64
    );
    println!(
        "first flush: {} slots in {} chunks, {} of values, in {flushed:.1?}",
        full.slots_written,
        full.chunks_written,
        mib(full.value_bytes as f64)
    );
    println!(
        "on disk: {} ({:.1} bytes a slot, {} slots; values {:.1} bytes a slot)",
        mib(file),
        file / slots as f64,
        slots,
        full.value_bytes as f64 / full.slots_written.max(1) as f64
    );
    println!(
        "in memory: {} counted ({} a series); RSS grew {}",
        mib(memory),
        mib(memory / SERIES as f64),
        match (rss_before, rss_after) {
            (Some(b), Some(a)) => mib((a.saturating_sub(b) * 1024) as f64),
            _ => "(no /proc)".into(),
        }
    );

    // Steady state: one 10 s tick for every series, then a flush, as the sampler does.
    let mut times = Vec::new();
    let mut written = 0;
    for tick in 0..30 {
        let at = end + tick * 10;
        for route in 0..SERIES {
            let s = sample(route, at, &mut jitter);
            history
                .record(&format!("route:r{route:02}"), at, &s)
                .expect("recorded");
        }
        let t = Instant::now();
        let stats = history.flush().expect("flush");
        times.push(t.elapsed());
        written = stats.chunks_written + stats.chunks_removed;
    }
    times.sort();
    let file_after = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "steady flush (one 10 s tick, {written} chunks): median {:.1?}, max {:.1?}; file then {}",
        times[times.len() / 2],
        times[times.len() - 1],
        mib(file_after as f64)
    );
    drop(history);

    let reading = Instant::now();
    let (reopened, notice) =
        History::open(&path, BOUNDS.to_vec(), HistoryLimits::default()).expect("bounds");
    println!("reopen: {notice:?} in {:.1?}", reading.elapsed());
    let last_day = reopened.sum("route:r49", end - 86_400, end);
    println!(
        "check: route:r49 last day {} requests, p99 {:.3} s",
        last_day.total,
        headroom_watch::history::quantile(&last_day, &BOUNDS, 0.99).unwrap_or(f64::NAN)
    );
    println!(
        "tiers: {}",
        TIERS
            .iter()
            .map(|t| format!("{} s × {}", t.slot_secs, t.slots))
            .collect::<Vec<_>>()
            .join(", ")
    );
    drop(reopened);
    let _ = std::fs::remove_dir_all(&dir);
}
