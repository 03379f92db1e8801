//! `headroom serve`: start the edge, then reload on SIGHUP or file change, reopen the
//! access log file on SIGUSR1, and shut down gracefully on SIGTERM/SIGINT.

use headroom_config::Config;
use headroom_edge::Edge;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

pub fn run(path: &Path, workers: Option<usize>) -> ExitCode {
    crate::init_logging();
    let mut config = match crate::load_config(path) {
        Ok(c) => c,
        Err((errors, _)) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    if let Some(w) = workers {
        config.global.workers = w.max(1);
    }
    serve_config(config, Some(path), move |c| {
        if let Some(w) = workers {
            c.global.workers = w.max(1);
        }
    })
}

/// Runs `config` until a shutdown signal. With `path`, reloads from it on SIGHUP and on change.
pub fn serve_config(
    config: Config,
    path: Option<&Path>,
    adjust: impl Fn(&mut Config) + Send + 'static,
) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let path = path.map(Path::to_path_buf);
    let edge = rt.block_on(async {
        // Handlers first: a SIGHUP sent as soon as "listening" is logged must reload, not
        // kill the process (its default action).
        let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let mut usr1 = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
        // Before "listening" is logged: a change made once the gateway says it is up must
        // be seen as a change (read after it, the new time would be taken as the start's).
        let mut last_seen = path.as_deref().and_then(modified);
        let postgres = config.postgres.clone();
        let workers = config.global.workers.max(1);
        let edge = Edge::start(config).await?;
        // The SQL plane binds before "listening" is logged, on threads of its own.
        let sql = headroom_sql::SqlPlane::start(&postgres, workers)?;
        for (name, addr) in edge.listener_addrs() {
            info!(listener = %name, %addr, "listening");
        }
        if let Some(addr) = edge.admin_addr() {
            info!(%addr, "admin listening (/metrics, /status)");
        }
        let (stop_watch, stopped) = tokio::sync::watch::channel(false);
        let watch_plane = tokio::spawn(crate::watch::run(edge.shared.clone(), edge.admin_addr(), stopped));
        let (stop_scale, scale_stopped) = tokio::sync::watch::channel(false);
        let autoscaler = tokio::spawn(crate::scale::run(edge.shared.clone(), scale_stopped));
        let mut poll = tokio::time::interval(Duration::from_secs(1));
        loop {
            let reason = tokio::select! {
                _ = hup.recv() => "SIGHUP",
                _ = poll.tick() => {
                    let now = path.as_deref().and_then(modified);
                    // Read from the config in force: a reload may have turned watching on or off.
                    let watch = edge.shared.config.load().global.watch;
                    if !watch || now == last_seen { continue; }
                    last_seen = now;
                    "file change"
                }
                _ = usr1.recv() => {
                    // logrotate renamed the file: lines go to a new one at the path.
                    match edge.shared.access_log.reopen() {
                        Ok(()) => info!(to = %edge.shared.access_log.destination(), "SIGUSR1: access log reopened"),
                        Err(e) => warn!("SIGUSR1: {e}; still writing to the file open before"),
                    }
                    continue;
                }
                _ = term.recv() => { info!("SIGTERM: draining"); break; }
                _ = int.recv() => { info!("SIGINT: draining"); break; }
            };
            let Some(p) = path.as_deref() else { continue };
            match headroom_config::load(p) {
                Ok(mut c) => {
                    adjust(&mut c);
                    match edge.reload(c) {
                        Ok(generation) => info!(reason, generation, "config reloaded"),
                        Err(e) => warn!(reason, "config not reloaded: {e}"),
                    }
                }
                Err(errors) => {
                    edge.reload_rejected();
                    error!(
                        reason,
                        "config not reloaded, the running one stays:\n{errors}"
                    );
                }
            }
        }
        // The history's last minute is written before the process drains and exits.
        let _ = stop_watch.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), watch_plane).await;
        Ok::<_, String>((edge, stop_scale, autoscaler, sql))
    });
    match edge {
        Ok((edge, stop_scale, autoscaler, sql)) => {
            // Workers drain on their own threads; this thread just waits for them. The
            // autoscaler's replicas serve until then, and are stopped after.
            let shared = edge.shared.clone();
            edge.shutdown_and_wait();
            sql.shutdown();
            let _ = stop_scale.send(true);
            let longest = scale_grace(&shared) + Duration::from_secs(5);
            rt.block_on(async {
                if tokio::time::timeout(longest, autoscaler).await.is_err() {
                    warn!("the autoscaler's replicas did not all stop within {longest:?}; their shims end them");
                }
            });
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            eprintln!("headroom: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The longest `grace` of the autoscaled services: how long stopping their replicas takes.
fn scale_grace(shared: &headroom_edge::Shared) -> Duration {
    shared
        .config
        .load()
        .services
        .values()
        .filter_map(|s| Some(s.autoscale.as_ref()?.driver.process()?.grace))
        .max()
        .unwrap_or_default()
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}
