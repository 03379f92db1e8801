//! `headroom bench`: a load generator that measures honestly and finds how much load a
//! target takes before it breaks its SLO.
//!
//! Closed loop like wrk and oha, or open loop at a constant or ramping arrival rate where a
//! request's wait for a busy connection counts in its latency (coordinated omission
//! corrected, as wrk2 and k6's arrival-rate executors do). Results are HdrHistograms; the capacity search
//! (`--find-max`) steps the arrival rate up, then bisects, until the highest rate that meets
//! the SLO is known within a tolerance.

mod against;
mod baseline;
pub mod cli;
pub mod connect;
mod engine;
pub mod h1;
mod h2;
mod html;
pub mod report;
pub mod request;
pub mod schedule;
pub mod search;
pub mod slo;
pub mod stats;

pub use cli::Args;

use engine::{Outcome, Plan, Progress};
use report::{LoadReport, Report, RunReport};
use schedule::{Load, Rate};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Exit code of an interrupted run (128 + SIGINT), as shells report it.
const INTERRUPTED: u8 = 130;

/// Runs `headroom bench` with `args`; prints the results and returns the exit code.
pub fn run(args: Args) -> ExitCode {
    match execute(&args) {
        Ok(code) => code,
        Err(Fail::Usage(e)) => {
            eprintln!("headroom bench: {e}");
            ExitCode::from(2)
        }
        Err(Fail::Target(e)) => {
            eprintln!("headroom bench: {e}");
            ExitCode::from(1)
        }
    }
}

enum Fail {
    /// Bad options or files: exit 2.
    Usage(String),
    /// The target cannot be loaded (unreachable, TLS refused): exit 1.
    Target(String),
}

fn usage<T>(r: Result<T, String>) -> Result<T, Fail> {
    r.map_err(Fail::Usage)
}

fn execute(args: &Args) -> Result<ExitCode, Fail> {
    let setup = usage(args.setup())?;
    let baseline = usage(args.compare.as_deref().map(baseline::load).transpose())?;
    let threshold = usage(cli::parse_percent("--threshold", &args.threshold))?;
    let admin = usage(
        args.against
            .as_deref()
            .map(against::Admin::parse)
            .transpose(),
    )?;
    // Every option is checked before the target is contacted.
    let search_plan = match (&setup.slo, args.find_max) {
        (Some(slo), true) => Some(usage(search_plan(args, slo.clone()))?),
        _ => None,
    };
    let single_load = usage(args.load())?;
    preflight(&setup.connector, args.timeout, args.http2).map_err(Fail::Target)?;
    let stop = interrupt_on_ctrl_c();
    let protocol = if args.http2 { "HTTP/2" } else { "HTTP/1.1" };
    let mut report = Report {
        schema: report::SCHEMA.into(),
        target: setup.connector.target.origin(),
        protocol: protocol.into(),
        run: None,
        search: None,
    };
    let mut slo_broken = false;
    let interrupted;
    let summary;
    if let Some(plan) = search_plan {
        let warmup = args.warmup.unwrap_or(args.step / 5);
        eprintln!(
            "headroom bench: finding the highest rate {} {} meets {} ({} steps, {} warm-up)",
            report.target,
            protocol,
            plan.slo,
            humantime::format_duration(args.step),
            humantime::format_duration(warmup)
        );
        let found = search::find_max(
            &plan,
            args.step.as_secs_f64(),
            warmup.as_secs_f64(),
            |rate| {
                let load = Load::Open {
                    rate: Rate::constant(rate),
                    max_connections: args.connections.unwrap_or(cli::OPEN_MAX_CONNECTIONS),
                };
                let p = args.plan(&setup, load.clone(), Some(args.step), warmup, true)?;
                let before = admin.as_ref().map(|a| a.scrape()).transpose()?;
                let label = format!("step at {}/s", report::rate(rate));
                let outcome = run_with_progress(p, &stop, args.quiet, &label)?;
                let mut run = RunReport::from_outcome(
                    &outcome,
                    load_report(&load, args.threads),
                    warmup.as_secs_f64(),
                );
                // Judged on the whole histogram, for any percentile an objective names.
                run.slo = Some(plan.slo.check(&outcome.total));
                if let (Some(a), Some(before)) = (&admin, before) {
                    run.headroom = Some(against::during(&before, &a.scrape()?));
                }
                Ok(if outcome.interrupted {
                    search::StepRun::Interrupted
                } else {
                    search::StepRun::Done(Box::new(run))
                })
            },
            |step| eprintln!("  {}", step.line()),
        )
        .map_err(Fail::Target)?;
        interrupted = found.interrupted;
        summary = format!(
            "headroom bench --find-max: {} {}\n{}",
            report.target,
            protocol,
            found.text()
        );
        slo_broken = found.max_rate.is_none();
        report.search = Some(found);
    } else {
        let load = single_load;
        let duration = args.duration(&load);
        let warmup = args.warmup.unwrap_or_default();
        let plan = usage(args.plan(&setup, load.clone(), duration, warmup, false))?;
        eprintln!(
            "headroom bench: {}",
            describe(args, &report.target, protocol, &load, duration)
        );
        let before = admin
            .as_ref()
            .map(|a| a.scrape())
            .transpose()
            .map_err(Fail::Target)?;
        let outcome = run_with_progress(plan, &stop, args.quiet, "").map_err(Fail::Target)?;
        let mut run = RunReport::from_outcome(
            &outcome,
            load_report(&load, args.threads),
            warmup.as_secs_f64(),
        );
        if let (Some(a), Some(before)) = (&admin, before) {
            match a.scrape() {
                Ok(after) => {
                    run.headroom = Some(against::headline(&against::during(&before, &after)))
                }
                Err(e) => run.warnings.push(e),
            }
        }
        run.warnings.extend(shortfall(&run, &load));
        if let Some(slo) = &setup.slo {
            let verdicts = slo.check(&outcome.total);
            slo_broken = verdicts.iter().any(|v| !v.met);
            run.slo = Some(verdicts);
        }
        interrupted = run.interrupted;
        summary = format!(
            "headroom bench: {} {}\n{}",
            report.target,
            protocol,
            run.text()
        );
        report.run = Some(run);
    }

    let json_to_stdout = args.json;
    if !json_to_stdout {
        print!("{summary}");
    }
    let mut regression = false;
    if let Some(base) = &baseline {
        match baseline::compare(base, &report, threshold) {
            Ok(changes) => {
                regression = changes.iter().any(|c| c.regression);
                let table = baseline::text(&changes, threshold);
                if json_to_stdout {
                    eprint!("compared with the baseline:\n{table}");
                } else {
                    print!("compared with the baseline:\n{table}");
                }
            }
            Err(e) => return Err(Fail::Usage(format!("--compare: {e}"))),
        }
    }
    let json = serde_json::to_string_pretty(&report).map_err(|e| Fail::Target(e.to_string()))?;
    if args.json {
        println!("{json}");
    }
    if let Some(file) = &args.json_file {
        write_file(file, &json)?;
    }
    if let Some(file) = &args.csv {
        let csv = match (&report.run, &report.search) {
            (Some(r), _) => r.csv(),
            (_, Some(s)) => s.csv(),
            _ => String::new(),
        };
        write_file(file, &csv)?;
    }
    if let Some(file) = &args.html {
        write_file(file, &html::page(&report, &summary))?;
    }
    if let Some(file) = &args.save {
        usage(baseline::save(file, &report))?;
    }
    let _ = std::io::stdout().flush();
    Ok(if interrupted {
        ExitCode::from(INTERRUPTED)
    } else if slo_broken || regression {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn write_file(path: &std::path::Path, text: &str) -> Result<(), Fail> {
    std::fs::write(path, text)
        .map_err(|e| Fail::Usage(format!("{}: cannot write: {e}", path.display())))
}

fn search_plan(args: &Args, slo: slo::Slo) -> Result<search::Search, String> {
    Ok(search::Search {
        slo,
        start: schedule::parse_rate(&args.start)?,
        max_rate: args
            .max_rate
            .as_deref()
            .map(schedule::parse_rate)
            .transpose()?,
        tolerance: cli::parse_percent("--tolerance", &args.tolerance)?.max(0.001),
        max_steps: args.max_steps.max(1),
    })
}

fn load_report(load: &Load, threads: usize) -> LoadReport {
    match load {
        Load::Closed { connections } => LoadReport {
            model: "closed".into(),
            connections: *connections,
            rate: None,
            ramp_to: None,
            ramp_over_s: None,
            threads,
        },
        Load::Open {
            rate,
            max_connections,
        } => LoadReport {
            model: "open".into(),
            connections: *max_connections,
            rate: Some(rate.from),
            ramp_to: rate.is_ramp().then_some(rate.to),
            ramp_over_s: rate.is_ramp().then_some(rate.over.as_secs_f64()),
            threads,
        },
    }
}

fn describe(
    args: &Args,
    target: &str,
    protocol: &str,
    load: &Load,
    duration: Option<Duration>,
) -> String {
    let length = match (duration, args.requests) {
        (Some(d), Some(n)) => format!("{} or {n} requests", humantime::format_duration(d)),
        (Some(d), None) => humantime::format_duration(d).to_string(),
        (None, Some(n)) => format!("{n} requests"),
        (None, None) => String::new(),
    };
    let model = match load {
        Load::Closed { connections } => format!("closed loop, {connections} connections"),
        Load::Open {
            rate,
            max_connections,
        } if rate.is_ramp() => format!(
            "open loop, {}..{}/s over {}, up to {max_connections} connections",
            report::rate(rate.from),
            report::rate(rate.to),
            humantime::format_duration(rate.over)
        ),
        Load::Open {
            rate,
            max_connections,
        } => format!(
            "open loop, {}/s, up to {max_connections} connections",
            report::rate(rate.to)
        ),
    };
    format!(
        "{target} {protocol} for {length}, {model}, {} thread{}",
        args.threads,
        if args.threads == 1 { "" } else { "s" }
    )
}

/// Open loop: says so when the run did not send the rate asked for, and what held it back.
fn shortfall(run: &RunReport, load: &Load) -> Option<String> {
    let requested = run.requested_rate?;
    if run.sent_rate >= 0.99 * requested || run.duration_s <= 0.0 {
        return None;
    }
    let max = match load {
        Load::Open {
            max_connections, ..
        } => *max_connections as u64,
        Load::Closed { .. } => return None,
    };
    let why = if run.in_flight_at_end + 1 >= max {
        format!("all {max} connections were busy: the target answers slower than this rate asks (raise --connections to let more requests wait)")
    } else {
        "this machine could not generate more (try --threads, or run the generator on another machine)".into()
    };
    Some(format!(
        "could not send {}/s: sent {}/s ({:.1}%); {} requests waited for a free connection, {} never started: {why}",
        report::rate(requested),
        report::rate(run.sent_rate),
        run.sent_rate / requested * 100.0,
        report::thousands(run.late),
        report::thousands(run.unsent),
    ))
}

/// Connects once before the run, so an unreachable target or a refused certificate is one
/// clear error, not a run full of failures.
fn preflight(connector: &connect::Connector, timeout: Duration, http2: bool) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let attempt = async {
            if http2 {
                h2::connect(connector).await.map(drop)
            } else {
                connector.connect().await.map(drop)
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(f)) => Err(f.detail),
            Err(_) => Err(format!(
                "cannot connect to {}: no answer within {}",
                connector.target.authority,
                humantime::format_duration(timeout)
            )),
        }
    })
}

/// Ctrl-C stops the run (the results so far are printed); a second Ctrl-C exits at once.
/// Returns once the handler is installed, so a Ctrl-C right after the run starts is caught.
fn interrupt_on_ctrl_c() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let (installed_tx, installed) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("bench-signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut sigint) = signal(SignalKind::interrupt()) else {
                    return;
                };
                let _ = installed_tx.send(());
                sigint.recv().await;
                let _ = tx.send(true);
                sigint.recv().await;
                std::process::exit(INTERRUPTED.into());
            });
        });
    if spawned.is_ok() {
        // An error here means the handler could not be installed: Ctrl-C then kills at once.
        let _ = installed.recv();
    }
    rx
}

/// Runs one plan with a progress bar on stderr (when it is a terminal and not `--quiet`).
fn run_with_progress(
    plan: Plan,
    stop: &watch::Receiver<bool>,
    quiet: bool,
    label: &str,
) -> Result<Outcome, String> {
    let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = match plan.duration {
            Some(d) => indicatif::ProgressBar::new(d.as_millis() as u64),
            None => indicatif::ProgressBar::new(plan.requests.unwrap_or(0)),
        };
        let template = if plan.duration.is_some() {
            "{prefix}[{bar:30}] {elapsed:>4}/{duration:4} {msg}"
        } else {
            "{prefix}[{bar:30}] {pos}/{len} {msg}"
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        if !label.is_empty() {
            bar.set_prefix(format!("{label} "));
        }
        bar
    });
    let by_time = plan.duration.is_some();
    let outcome = engine::run(Arc::new(plan), stop.clone(), &mut |p: Progress<'_>| {
        if let Some(bar) = &bar {
            if by_time {
                bar.set_position(p.elapsed.as_millis() as u64);
            } else {
                bar.set_position(p.total.responses() + p.total.failures());
            }
            bar.set_message(format!(
                "{} req/s  p99 {}  errors {}",
                report::rate(p.last.rps),
                report::duration_ms(p.last.p99_ms),
                report::thousands(p.total.errors())
            ));
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    outcome
}
