//! headroom's SQL plane: a PostgreSQL proxy in front of a server, pooling server
//! connections per (database, user) in session or transaction mode, as PgBouncer does.
//!
//! It runs beside the edge on threads of its own ([`SqlPlane::start`]): a database's load
//! and an HTTP gateway's are different loads, and neither should queue behind the other.
//! What is here: the wire protocol relay, SCRAM-SHA-256 to clients and to servers, pools
//! with a bounded wait, lifetimes and idle limits, cancel requests, clean errors when a
//! server goes away. Read/write splitting, sharding, TLS and the admin console come next
//! (see the README's "SQL: a PostgreSQL proxy").

pub mod pool;
pub mod prepared;
pub mod scram;
pub mod server;
mod session;
pub mod wire;

use headroom_config::postgres::PostgresConfig;
use pool::{Pool, PoolSettings};
use session::CancelKey;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

/// A user clients may log in as: the SCRAM secret to check them by, the password to log in
/// to servers with.
#[derive(Debug)]
pub(crate) struct User {
    pub secret: scram::Secret,
    pub password: String,
}

/// One `[[postgres]]` listener's state: its config, users, pools and cancel keys.
#[derive(Debug)]
pub struct Listener {
    pub config: PostgresConfig,
    pub(crate) users: HashMap<String, User>,
    pools: Mutex<HashMap<(String, String), Arc<Pool>>>,
    /// Client cancel keys by the pid headroom gave the client.
    pub(crate) cancels: Mutex<HashMap<u32, Arc<CancelKey>>>,
    clients: AtomicUsize,
}

impl Listener {
    fn new(config: PostgresConfig) -> Listener {
        let users = config
            .users
            .iter()
            .map(|u| {
                (
                    u.name.clone(),
                    User {
                        secret: scram::Secret::new(&u.password),
                        password: u.password.clone(),
                    },
                )
            })
            .collect();
        Listener {
            config,
            users,
            pools: Mutex::default(),
            cancels: Mutex::default(),
            clients: AtomicUsize::new(0),
        }
    }

    /// The pool for a (database, user) pair, made on first use.
    pub(crate) fn pool(&self, database: &str, user: &str, password: &str) -> Arc<Pool> {
        let mut pools = self.pools.lock().expect("pools lock");
        let key = (database.to_owned(), user.to_owned());
        pools
            .entry(key)
            .or_insert_with(|| {
                let c = &self.config;
                Arc::new(Pool::new(
                    c.primary,
                    database,
                    user,
                    password,
                    PoolSettings {
                        size: c.pool_size,
                        min_idle: c.min_idle,
                        queue_timeout: c.queue_timeout,
                        connect_timeout: c.connect_timeout,
                        lifetime: c.server_lifetime,
                        idle_timeout: c.server_idle_timeout,
                        reset_query: match c.pool_mode {
                            headroom_config::postgres::PoolMode::Session => {
                                c.server_reset_query.clone()
                            }
                            headroom_config::postgres::PoolMode::Transaction => None,
                        },
                    },
                ))
            })
            .clone()
    }

    /// Every pool now, for status and tests.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.pools
            .lock()
            .expect("pools lock")
            .values()
            .cloned()
            .collect()
    }

    /// A fresh cancel key for a client whose queries run at `addr`.
    pub(crate) fn new_cancel_key(&self, addr: SocketAddr) -> Arc<CancelKey> {
        let mut cancels = self.cancels.lock().expect("cancel lock");
        loop {
            let r = scram::random(8);
            let pid = u32::from_be_bytes([r[0], r[1], r[2], r[3]]) & 0x7fff_ffff;
            if pid == 0 || cancels.contains_key(&pid) {
                continue;
            }
            let key = Arc::new(CancelKey {
                pid,
                secret: u32::from_be_bytes([r[4], r[5], r[6], r[7]]),
                server: Default::default(),
                addr,
            });
            cancels.insert(pid, key.clone());
            return key;
        }
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.load(Relaxed)
    }
}

/// The running SQL plane: its listeners, on a runtime of their own.
pub struct SqlPlane {
    listeners: Vec<(Arc<Listener>, SocketAddr)>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SqlPlane {
    /// Binds every `[[postgres]]` listener (an error names the one that failed) and starts
    /// serving them on `workers` threads. Nothing is started for an empty list.
    pub fn start(configs: &[PostgresConfig], workers: usize) -> Result<SqlPlane, String> {
        let (stop, stopped) = watch::channel(false);
        if configs.is_empty() {
            return Ok(SqlPlane {
                listeners: Vec::new(),
                stop,
                thread: None,
            });
        }
        let mut bound = Vec::new();
        for c in configs {
            let std_listener = std::net::TcpListener::bind(c.bind)
                .map_err(|e| format!("postgres \"{}\": cannot bind {}: {e}", c.name, c.bind))?;
            std_listener
                .set_nonblocking(true)
                .map_err(|e| format!("postgres \"{}\": {e}", c.name))?;
            let addr = std_listener.local_addr().map_err(|e| e.to_string())?;
            bound.push((Arc::new(Listener::new(c.clone())), addr, std_listener));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name("headroom-sql")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the SQL plane's runtime: {e}"))?;
        let listeners: Vec<(Arc<Listener>, SocketAddr)> =
            bound.iter().map(|(l, a, _)| (l.clone(), *a)).collect();
        let thread = std::thread::Builder::new()
            .name("headroom-sql".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut tasks = Vec::new();
                    for (listener, _, std_listener) in bound {
                        let tcp = match tokio::net::TcpListener::from_std(std_listener) {
                            Ok(t) => t,
                            Err(e) => {
                                warn!(postgres = %listener.config.name, "cannot listen: {e}");
                                continue;
                            }
                        };
                        tasks.push(tokio::spawn(reap(listener.clone(), stopped.clone())));
                        tasks.push(tokio::spawn(accept(tcp, listener, stopped.clone())));
                    }
                    let mut stopped = stopped;
                    let _ = stopped.wait_for(|s| *s).await;
                    for t in tasks {
                        t.abort();
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| format!("cannot start the SQL plane's thread: {e}"))?;
        for (l, addr) in &listeners {
            info!(postgres = %l.config.name, %addr, primary = %l.config.primary, mode = ?l.config.pool_mode, "postgres listening");
        }
        Ok(SqlPlane {
            listeners,
            stop,
            thread: Some(thread),
        })
    }

    /// (name, bound address) of each listener.
    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .map(|(l, a)| (l.config.name.clone(), *a))
            .collect()
    }

    pub fn listeners(&self) -> impl Iterator<Item = &Arc<Listener>> {
        self.listeners.iter().map(|(l, _)| l)
    }

    /// Stops accepting and closes every client and server connection.
    pub fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept(
    tcp: tokio::net::TcpListener,
    listener: Arc<Listener>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let conn = tokio::select! {
            c = tcp.accept() => c,
            _ = stopped.wait_for(|s| *s) => return,
        };
        let (stream, _peer) = match conn {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                warn!(postgres = %listener.config.name, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if listener.clients.fetch_add(1, Relaxed) >= listener.config.max_client_conn {
            listener.clients.fetch_sub(1, Relaxed);
            tokio::spawn(refuse_full(stream, listener.config.max_client_conn));
            continue;
        }
        let l = listener.clone();
        tokio::spawn(async move {
            session::serve(stream, l.clone()).await;
            l.clients.fetch_sub(1, Relaxed);
        });
    }
}

/// A client over `max_client_conn`: told so after its startup packet, as PostgreSQL does.
async fn refuse_full(mut stream: tokio::net::TcpStream, max: usize) {
    use tokio::io::AsyncWriteExt;
    let read = tokio::time::timeout(Duration::from_secs(5), wire::read_startup(&mut stream)).await;
    if matches!(read, Ok(Ok(wire::Startup::Params(_)))) {
        let mut out = bytes::BytesMut::new();
        wire::error(
            &mut out,
            b'E',
            "FATAL",
            "53300",
            &format!("headroom: too many clients (max_client_conn = {max})"),
        );
        let _ = stream.write_all(&out).await;
    }
}

/// Every second: idle and old server connections closed, `min_idle` kept open.
async fn reap(listener: Arc<Listener>, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        for pool in listener.pools() {
            let missing = pool.reap(Instant::now());
            if missing > 0 {
                let p = pool.clone();
                tokio::spawn(async move { p.fill(missing).await });
            }
        }
    }
}
