//! A pool of server connections for one (database, user) pair: at most `size` open, idle
//! ones reused most-recently-used first (so the cold end ages out under `idle_timeout`),
//! and clients beyond `size` waiting in a FIFO queue for at most `queue_timeout`. A returned
//! connection is handed straight to the oldest waiter: one lock per hand-over.

use crate::server::{self, Login, LoginError, ServerConn};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

/// The settings one pool runs by (from its `[[postgres]]`).
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub size: usize,
    pub min_idle: usize,
    pub queue_timeout: Duration,
    pub connect_timeout: Duration,
    pub lifetime: Duration,
    pub idle_timeout: Duration,
    /// Run before a server connection goes to another client (session mode).
    pub reset_query: Option<String>,
}

#[derive(Debug)]
pub struct Pool {
    pub addr: SocketAddr,
    pub database: String,
    pub user: String,
    password: String,
    pub settings: PoolSettings,
    state: Mutex<State>,
    /// The parameters the first server reported: what clients are told at login.
    params: Mutex<Option<Vec<(String, String)>>>,
    pub stats: PoolStats,
}

/// Counters for `SHOW POOLS`, `/metrics` and tests.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub connects: AtomicU64,
    pub connect_errors: AtomicU64,
    pub queue_timeouts: AtomicU64,
    /// Server connections closed rather than returned (dirty, broken, old).
    pub discarded: AtomicU64,
    pub transactions: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Most recently used last.
    idle: Vec<ServerConn>,
    /// Open or being opened, idle or in use.
    open: usize,
    waiters: VecDeque<oneshot::Sender<Grant>>,
}

/// What a waiter is given: a connection, or the right to open one.
#[derive(Debug)]
enum Grant {
    Conn(ServerConn),
    Slot,
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum AcquireError {
    QueueTimeout { waited: Duration },
    Login(LoginError),
}

impl Pool {
    pub fn new(
        addr: SocketAddr,
        database: &str,
        user: &str,
        password: &str,
        settings: PoolSettings,
    ) -> Pool {
        Pool {
            addr,
            database: database.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
            settings,
            state: Mutex::default(),
            params: Mutex::default(),
            stats: PoolStats::default(),
        }
    }

    fn login(&self) -> Login<'_> {
        Login {
            addr: self.addr,
            user: &self.user,
            password: &self.password,
            database: &self.database,
        }
    }

    fn expired(&self, c: &ServerConn, now: Instant) -> bool {
        now.duration_since(c.born) >= self.settings.lifetime
    }

    /// A connection, idle or new, waiting up to `queue_timeout` when all `size` are in use.
    pub async fn acquire(&self) -> Result<ServerConn, AcquireError> {
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + self.settings.queue_timeout;
        loop {
            let mut rx = {
                let mut st = self.state.lock().expect("pool lock");
                let now = Instant::now();
                let mut found = None;
                while let Some(c) = st.idle.pop() {
                    // A connection idle for a while may have been closed by the server
                    // (restart, pg_terminate_backend, idle timeout): one non-blocking read
                    // tells. Under load connections come back within microseconds and skip it.
                    let stale = now.duration_since(c.idle_since) >= CHECK_AFTER && !alive(&c);
                    if stale || self.expired(&c, now) {
                        st.open -= 1;
                        self.stats.discarded.fetch_add(1, Relaxed);
                        close(c);
                        continue;
                    }
                    found = Some(c);
                    break;
                }
                if let Some(c) = found {
                    return Ok(c);
                }
                if st.open < self.settings.size {
                    st.open += 1;
                    None
                } else {
                    let (tx, rx) = oneshot::channel();
                    st.waiters.push_back(tx);
                    Some(rx)
                }
            };
            let Some(rx_ref) = rx.as_mut() else {
                return self.open_one().await;
            };
            match tokio::time::timeout_at(deadline, rx_ref).await {
                Ok(Ok(Grant::Conn(c))) => return Ok(c),
                Ok(Ok(Grant::Slot)) => return self.open_one().await,
                // The pool was dropped with us in its queue: try again.
                Ok(Err(_)) => continue,
                Err(_) => {
                    // A grant may have been sent as the time ran out: take it and give it back.
                    let mut rx = rx.take().expect("waiting");
                    rx.close();
                    match rx.try_recv() {
                        Ok(Grant::Conn(c)) => self.release(c, true),
                        Ok(Grant::Slot) => self.free_slot(),
                        Err(_) => {}
                    }
                    self.stats.queue_timeouts.fetch_add(1, Relaxed);
                    return Err(AcquireError::QueueTimeout {
                        waited: start.elapsed(),
                    });
                }
            }
        }
    }

    /// Opens a connection in a slot already counted in `open`; gives the slot back on failure.
    async fn open_one(&self) -> Result<ServerConn, AcquireError> {
        match server::connect(&self.login(), self.settings.connect_timeout).await {
            Ok(c) => {
                self.stats.connects.fetch_add(1, Relaxed);
                let mut p = self.params.lock().expect("params lock");
                if p.is_none() {
                    *p = Some(c.params.clone());
                }
                Ok(c)
            }
            Err(e) => {
                self.stats.connect_errors.fetch_add(1, Relaxed);
                self.free_slot();
                Err(AcquireError::Login(e))
            }
        }
    }

    /// The parameters to tell a client at login: those of the first server connection.
    pub fn params(&self) -> Option<Vec<(String, String)>> {
        self.params.lock().expect("params lock").clone()
    }

    /// Gives a connection back: to the oldest waiter, else to the idle stack. `reusable`
    /// false (it is broken, or its state unknown) closes it and frees its slot.
    pub fn release(&self, mut c: ServerConn, reusable: bool) {
        let now = Instant::now();
        if !reusable || self.expired(&c, now) {
            self.stats.discarded.fetch_add(1, Relaxed);
            close(c);
            self.free_slot();
            return;
        }
        let mut st = self.state.lock().expect("pool lock");
        while let Some(w) = st.waiters.pop_front() {
            match w.send(Grant::Conn(c)) {
                Ok(()) => return,
                Err(Grant::Conn(back)) => c = back,
                Err(Grant::Slot) => unreachable!("sent a connection"),
            }
        }
        c.idle_since = now;
        st.idle.push(c);
    }

    /// A connection was closed: its slot goes to the oldest waiter, who opens a new one.
    fn free_slot(&self) {
        let mut st = self.state.lock().expect("pool lock");
        while let Some(w) = st.waiters.pop_front() {
            if w.send(Grant::Slot).is_ok() {
                return;
            }
        }
        st.open -= 1;
    }

    /// Closes idle connections past `idle_timeout` (keeping `min_idle`) or past `lifetime`;
    /// returns how many connections should be opened to get back to `min_idle`.
    pub fn reap(&self, now: Instant) -> usize {
        let mut st = self.state.lock().expect("pool lock");
        let mut keep = Vec::with_capacity(st.idle.len());
        let idle = std::mem::take(&mut st.idle);
        let mut left = idle.len();
        // Oldest-used first: they go before the recently used.
        for c in idle {
            let too_idle = now.duration_since(c.idle_since) >= self.settings.idle_timeout
                && left > self.settings.min_idle;
            if too_idle || self.expired(&c, now) {
                st.open -= 1;
                left -= 1;
                self.stats.discarded.fetch_add(1, Relaxed);
                close(c);
            } else {
                keep.push(c);
            }
        }
        st.idle = keep;
        self.settings.min_idle.saturating_sub(st.open)
    }

    /// Opens `n` idle connections (for `min_idle`), as far as the size allows.
    pub async fn fill(&self, n: usize) {
        for _ in 0..n {
            {
                let mut st = self.state.lock().expect("pool lock");
                if st.open >= self.settings.size {
                    return;
                }
                st.open += 1;
            }
            match self.open_one().await {
                Ok(c) => self.release(c, true),
                Err(_) => return,
            }
        }
    }

    /// (open, idle, waiting) now.
    pub fn counts(&self) -> (usize, usize, usize) {
        let st = self.state.lock().expect("pool lock");
        (st.open, st.idle.len(), st.waiters.len())
    }
}

/// How long a connection sits idle before it is checked for life when taken.
const CHECK_AFTER: Duration = Duration::from_secs(1);

/// True when the server has neither closed the connection nor sent anything unasked.
fn alive(c: &ServerConn) -> bool {
    let mut b = [0u8; 1];
    matches!(c.stream.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Closes a server connection politely (`Terminate`), off the caller's path.
pub fn close(mut c: ServerConn) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    tokio::spawn(async move {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            c.stream.write_all(&[b'X', 0, 0, 0, 4]),
        )
        .await;
    });
}
