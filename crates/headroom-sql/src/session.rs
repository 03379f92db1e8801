//! One client connection: its startup and login, then the relay between it and whichever
//! server connection runs its current transaction (transaction mode) or its whole session.
//!
//! The relay forwards bytes as they come and decodes only what it acts on: the client's
//! message tags (a `Query` or `Sync` expects a `ReadyForQuery`; `Terminate` ends the session)
//! and the server's `ReadyForQuery` (its transaction status says when the server connection
//! may go back to the pool). Both sockets are polled for reading and writing at once, so a
//! client that pipelines more than the socket buffers hold cannot deadlock it.

use crate::pool::{AcquireError, Pool};
use crate::prepared;
use crate::scram::{ScramError, ServerExchange, MECHANISM};
use crate::server::{LoginError, ServerConn};
use crate::wire::{self, Scanner, Startup};
use crate::Listener;
use bytes::{Buf, BufMut, BytesMut};
use headroom_config::postgres::PoolMode;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

/// Bytes read at a time, and the most a direction buffers before it stops reading.
const READ_CHUNK: usize = 16 << 10;
const HIGH_WATER: usize = 256 << 10;
/// The longest a login may take (startup and password), as PostgreSQL's
/// `authentication_timeout` (default 1 min).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server gets to roll back or reset after its client left.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one client until it leaves.
pub async fn serve(client: TcpStream, listener: Arc<Listener>) {
    let _ = client.set_nodelay(true);
    let mut client = client;
    let login = tokio::time::timeout(LOGIN_TIMEOUT, login(&mut client, &listener)).await;
    let (pool, cancel) = match login {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            debug!("client login failed: {e}");
            return;
        }
        Err(_) => {
            let mut out = BytesMut::new();
            wire::error(
                &mut out,
                b'E',
                "FATAL",
                "08P01",
                "headroom: login took longer than 60s",
            );
            let _ = client.write_all(&out).await;
            return;
        }
    };
    let mode = listener.config.pool_mode;
    let mut relay = Relay::new(
        client,
        pool,
        mode,
        listener.config.max_message,
        cancel.clone(),
    );
    let server = relay.run().await;
    listener
        .cancels
        .lock()
        .expect("cancel lock")
        .remove(&cancel.pid);
    if let Some(server) = server {
        relay.give_back(server).await;
    }
}

/// The key a client was given for cancel requests, and where its query runs now.
#[derive(Debug)]
pub struct CancelKey {
    pub pid: u32,
    pub secret: u32,
    /// The attached server's (pid << 32 | secret); 0: none.
    pub server: std::sync::atomic::AtomicU64,
    pub addr: std::net::SocketAddr,
}

/// Startup, then SCRAM; `Ok(None)`: the client is done (a cancel request, or refused).
async fn login(
    client: &mut TcpStream,
    l: &Arc<Listener>,
) -> io::Result<Option<(Arc<Pool>, Arc<CancelKey>)>> {
    let params = loop {
        match wire::read_startup(client).await? {
            // No TLS yet: 'N' tells the client to go on in the clear (or give up, with
            // sslmode=require).
            Startup::Ssl | Startup::GssEnc => client.write_all(b"N").await?,
            Startup::Cancel { pid, secret } => {
                let target = l.cancels.lock().expect("cancel lock").get(&pid).cloned();
                if let Some(k) = target.filter(|k| k.secret == secret) {
                    let s = k.server.load(Relaxed);
                    if s != 0 {
                        let _ = crate::server::cancel(k.addr, (s >> 32) as u32, s as u32).await;
                    }
                }
                return Ok(None);
            }
            Startup::Params(p) => break p,
        }
    };
    let mut out = BytesMut::new();
    let Some(user) = Startup::param(&params, "user").map(str::to_owned) else {
        wire::error(
            &mut out,
            b'E',
            "FATAL",
            "28000",
            "no PostgreSQL user name specified in startup packet",
        );
        client.write_all(&out).await?;
        return Ok(None);
    };
    let database = Startup::param(&params, "database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user)
        .to_owned();

    // SCRAM-SHA-256, the same exchange for a user headroom does not know (no oracle).
    let known = l.users.get(&user);
    let mut x = ServerExchange::new(known.map(|u| &u.secret));
    let mut mechanisms = Vec::new();
    mechanisms.extend_from_slice(MECHANISM.as_bytes());
    mechanisms.extend_from_slice(b"\0\0");
    wire::auth(&mut out, 10, &mechanisms);
    client.write_all(&out).await?;
    out.clear();
    let mut buf = Vec::new();
    let refuse = |out: &mut BytesMut| {
        wire::error(
            out,
            b'E',
            "FATAL",
            "28P01",
            &format!("password authentication failed for user \"{user}\""),
        )
    };
    let tag = wire::read_message(client, &mut buf, 8192).await?;
    let first = (tag == b'p')
        .then(|| sasl_initial(&buf))
        .flatten()
        .ok_or(ScramError::Malformed("expected SASLInitialResponse"))
        .and_then(|m| x.first(m));
    let server_first = match first {
        Ok(s) => s,
        Err(_) => {
            refuse(&mut out);
            client.write_all(&out).await?;
            return Ok(None);
        }
    };
    wire::auth(&mut out, 11, server_first.as_bytes());
    client.write_all(&out).await?;
    out.clear();
    let tag = wire::read_message(client, &mut buf, 8192).await?;
    let last = if tag == b'p' {
        x.last(&buf)
    } else {
        Err(ScramError::Malformed("expected SASLResponse"))
    };
    let Ok(server_final) = last else {
        refuse(&mut out);
        client.write_all(&out).await?;
        return Ok(None);
    };
    let Some(u) = known else {
        unreachable!("an unknown user's proof never holds")
    };
    if !l.config.databases.is_empty() && !l.config.databases.contains(&database) {
        wire::error(
            &mut out,
            b'E',
            "FATAL",
            "3D000",
            &format!("database \"{database}\" does not exist"),
        );
        client.write_all(&out).await?;
        return Ok(None);
    }
    wire::auth(&mut out, 12, server_final.as_bytes());
    wire::auth(&mut out, 0, &[]);

    let pool = l.pool(&database, &user, &u.password);
    // Clients are told what the server tells: the first server connection's parameters.
    // Taking one also checks that the database exists before the client is let in.
    let params = match pool.params() {
        Some(p) => p,
        None => match pool.acquire().await {
            Ok(c) => {
                let p = c.params.clone();
                pool.release(c, true);
                p
            }
            Err(e) => {
                out.clear();
                acquire_error(&mut out, &pool, &e);
                client.write_all(&out).await?;
                return Ok(None);
            }
        },
    };
    for (k, v) in &params {
        wire::parameter_status(&mut out, k, v);
    }
    let key = l.new_cancel_key(pool.addr);
    wire::backend_key(&mut out, key.pid, key.secret);
    wire::ready(&mut out, b'I');
    client.write_all(&out).await?;
    Ok(Some((pool, key)))
}

/// A `SASLInitialResponse` body: the mechanism, then the client-first message.
fn sasl_initial(body: &[u8]) -> Option<&[u8]> {
    let mut b = body;
    let mech = wire::cstr(&mut b).ok()?;
    if mech != MECHANISM || b.len() < 4 {
        return None;
    }
    let n = (&b[..4]).get_i32();
    let rest = &b[4..];
    (n >= 0 && n as usize == rest.len()).then_some(rest)
}

/// The error a client gets when no server connection could be had.
fn acquire_error(out: &mut BytesMut, pool: &Pool, e: &AcquireError) {
    match e {
        AcquireError::QueueTimeout { waited } => {
            let (open, _, waiting) = pool.counts();
            wire::error(
                out,
                b'E',
                "FATAL",
                "53300",
                &format!(
                    "headroom: no server connection for \"{}\"/\"{}\" within queue_timeout ({:.1}s): {open} of {} in use, {waiting} clients waiting; raise pool_size or queue_timeout",
                    pool.database,
                    pool.user,
                    waited.as_secs_f64(),
                    pool.settings.size
                ),
            );
        }
        AcquireError::Login(LoginError::Server(fields)) => {
            // As the server said it ("database does not exist", "too many clients"...).
            wire::message(out, b'E', |o| {
                for (k, v) in fields {
                    o.put_u8(*k);
                    wire::put_cstr(o, v);
                }
                o.put_u8(0);
            });
        }
        AcquireError::Login(e) => wire::error(
            out,
            b'E',
            "FATAL",
            "08006",
            &format!("headroom: cannot log in to the server {}: {e}", pool.addr),
        ),
    }
}

/// The relay's state for one client.
struct Relay {
    client: TcpStream,
    pool: Arc<Pool>,
    mode: PoolMode,
    max_message: usize,
    cancel: Arc<CancelKey>,
    /// Client to server: `c_ok` bytes scanned and ready to forward, the rest awaiting more.
    c2s: BytesMut,
    c_ok: usize,
    cscan: Scanner,
    s2c: BytesMut,
    s_ok: usize,
    sscan: Scanner,
    /// Where each `Query`, `Sync` and `FunctionCall` read from the client and not yet
    /// answered by a `ReadyForQuery` starts, as an offset in the client's stream: those
    /// before `c_base` went to the server, the rest wait in `c2s`.
    syncs: std::collections::VecDeque<u64>,
    /// The client stream's offset of `c2s[0]`.
    c_base: u64,
    /// Extended-protocol messages sent since the last `Sync`: the server holds their state.
    unsynced: bool,
    /// The last `ReadyForQuery` status: b'I' idle, b'T' in a transaction, b'E' failed one.
    status: u8,
    /// The client closed (or its socket failed): nothing more can reach it.
    client_done: bool,
    /// The client sent `Terminate`: what it sent before is still run and answered.
    terminated: bool,
    /// Why the server went away, when it said (its FATAL error's message).
    lost_reason: Option<String>,
    /// A transaction lost with its server, whose client has yet to hear of it.
    lost: Option<Lost>,
    /// The client's named prepared statements, and what it is owed by the server in use
    /// (transaction mode).
    stmts: prepared::Statements,
    expects: prepared::Expects,
}

/// A transaction whose server went away while the client was inside it.
struct Lost {
    text: String,
    /// The error was sent; what is left is the `ReadyForQuery` at the next sync point.
    told: bool,
}

enum Step {
    Go,
    /// The session is over (the client left or broke the protocol).
    End,
}

impl Relay {
    fn new(
        client: TcpStream,
        pool: Arc<Pool>,
        mode: PoolMode,
        max_message: usize,
        cancel: Arc<CancelKey>,
    ) -> Relay {
        Relay {
            client,
            pool,
            mode,
            max_message,
            cancel,
            c2s: BytesMut::with_capacity(READ_CHUNK),
            c_ok: 0,
            cscan: Scanner::default(),
            s2c: BytesMut::with_capacity(READ_CHUNK),
            s_ok: 0,
            sscan: Scanner::default(),
            syncs: std::collections::VecDeque::new(),
            c_base: 0,
            unsynced: false,
            status: b'I',
            client_done: false,
            terminated: false,
            lost_reason: None,
            lost: None,
            stmts: Default::default(),
            expects: Default::default(),
        }
    }

    /// Relays until the client is done; returns the server connection still attached.
    async fn run(&mut self) -> Option<ServerConn> {
        let mut server: Option<ServerConn> = None;
        loop {
            if self.lost.is_some() && !self.client_done {
                self.answer_lost_transaction();
            }
            if server.is_none() && !self.c2s.is_empty() && !self.client_done && self.lost.is_none()
            {
                match self.pool.acquire().await {
                    Ok(mut s) => {
                        self.cancel
                            .server
                            .store((u64::from(s.pid) << 32) | u64::from(s.secret), Relaxed);
                        if self.scan_client(&mut s).is_err() {
                            return Some(s);
                        }
                        server = Some(s);
                    }
                    Err(e) => {
                        let mut out = BytesMut::new();
                        acquire_error(&mut out, &self.pool, &e);
                        let _ = self.client.write_all(&out).await;
                        return None;
                    }
                }
            }
            if self.client_done
                || (self.terminated && self.c_ok == 0 && self.syncs.is_empty() && self.s_ok == 0)
            {
                return server;
            }
            let step = match server.as_mut() {
                Some(s) => self.turn_attached(s).await,
                None => self.turn_detached().await,
            };
            match step {
                Ok(Step::Go) => {}
                Ok(Step::End) => return server,
                Err(ServerLost) => {
                    let s = server.take().expect("attached");
                    self.cancel.server.store(0, Relaxed);
                    self.pool.release(s, false);
                    if !self.server_lost() {
                        return None;
                    }
                    continue;
                }
            }
            // Transaction mode: the transaction is over and nothing is in flight.
            if self.mode == PoolMode::Transaction && self.between_transactions() {
                if let Some(s) = server.take() {
                    self.cancel.server.store(0, Relaxed);
                    self.pool.stats.transactions.fetch_add(1, Relaxed);
                    self.pool.release(s, true);
                }
            }
        }
    }

    fn between_transactions(&self) -> bool {
        self.syncs.is_empty()
            && self.expects.is_empty()
            && !self.unsynced
            && self.status == b'I'
            && self.c_ok == 0
            && self.cscan.at_boundary()
            && self.c2s.is_empty()
    }

    /// No server: wait for the client's next message (or its leaving), flushing what is owed.
    async fn turn_detached(&mut self) -> Result<Step, ServerLost> {
        if self.s_ok > 0 {
            if self.write_client().await.is_err() {
                return Ok(Step::End);
            }
            return Ok(Step::Go);
        }
        match self.read_client().await {
            Ok(true) => Ok(Step::Go),
            _ => Ok(Step::End),
        }
    }

    /// A server is attached: move whatever is ready, in both directions.
    async fn turn_attached(&mut self, s: &mut ServerConn) -> Result<Step, ServerLost> {
        let want_c_read = !self.terminated && self.c2s.len() < HIGH_WATER;
        let want_s_read = self.s2c.len() < HIGH_WATER;
        let want_s_write = self.c_ok > 0;
        let want_c_write = self.s_ok > 0;
        tokio::select! {
            biased;
            r = s.stream.readable(), if want_s_read => {
                if r.is_err() { return Err(ServerLost); }
                match s.stream.try_read_buf(&mut self.s2c) {
                    Ok(0) => return Err(ServerLost),
                    Ok(_) => self.scan_server(s).map_err(|_| ServerLost)?,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Go),
                    Err(_) => return Err(ServerLost),
                }
                // Most often the client can take it at once: no second trip through select.
                match self.try_write_client() {
                    Ok(()) => {}
                    Err(_) => return Ok(Step::End),
                }
            }
            r = self.client.readable(), if want_c_read => {
                if r.is_err() { self.client_done = true; return Ok(Step::Go); }
                self.c2s.reserve(READ_CHUNK);
                match self.client.try_read_buf(&mut self.c2s) {
                    Ok(0) => { self.client_done = true; return Ok(Step::Go); }
                    Ok(_) => if self.scan_client(s).is_err() { return Ok(Step::End); },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Go),
                    Err(_) => { self.client_done = true; return Ok(Step::Go); }
                }
                Self::try_write_server(&mut self.c2s, &mut self.c_ok, &mut self.c_base, s)?;
            }
            r = s.stream.writable(), if want_s_write => {
                if r.is_err() { return Err(ServerLost); }
                Self::try_write_server(&mut self.c2s, &mut self.c_ok, &mut self.c_base, s)?;
            }
            r = self.client.writable(), if want_c_write => {
                if r.is_err() || self.try_write_client().is_err() { return Ok(Step::End); }
            }
            else => return Ok(Step::End),
        }
        Ok(Step::Go)
    }

    /// Reads what the client has sent; false when it closed or broke the protocol.
    async fn read_client(&mut self) -> io::Result<bool> {
        self.c2s.reserve(READ_CHUNK);
        let n = tokio::io::AsyncReadExt::read_buf(&mut self.client, &mut self.c2s).await?;
        if n == 0 {
            self.client_done = true;
            return Ok(true);
        }
        // Scanned once a server is attached (what it has prepared decides the rewrite); a
        // Terminate alone needs none.
        if self.c2s.first() == Some(&b'X') {
            self.c2s.clear();
            self.terminated = true;
        }
        Ok(true)
    }

    /// Scans what the client sent, for the server `s` that will get it: finds what each
    /// message is owed, and in transaction mode rewrites what names prepared statements.
    fn scan_client(&mut self, s: &mut ServerConn) -> io::Result<()> {
        let mut terminate_at = None;
        let mut unsynced = self.unsynced;
        let rewrite = self.mode == PoolMode::Transaction;
        let base = self.c_base;
        let (syncs, stmts, expects) = (&mut self.syncs, &mut self.stmts, &mut self.expects);
        let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
        let mut delta: i64 = 0;
        let mut answers = Vec::new();
        let ok = self.cscan.scan(
            &self.c2s,
            self.c_ok,
            self.max_message,
            |t| t == b'X' || (rewrite && matches!(t, b'P' | b'B' | b'D' | b'C')),
            |m, body| {
                if terminate_at.is_some() {
                    return;
                }
                let at = (base as i64 + m.at as i64 + delta) as u64;
                match m.tag {
                    b'Q' | b'F' => syncs.push_back(at),
                    b'S' => {
                        syncs.push_back(at);
                        unsynced = false;
                    }
                    b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => unsynced = true,
                    b'X' => {
                        terminate_at = Some(m.at);
                        return;
                    }
                    _ => {}
                }
                if rewrite {
                    if let Some(with) =
                        prepared::client_message(m.tag, body, stmts, &mut s.prepared, expects)
                    {
                        delta += with.len() as i64 - m.len as i64;
                        edits.push((m.at, m.len, with));
                    }
                    expects.due_answers(&mut answers);
                }
            },
        );
        self.unsynced = unsynced;
        let ok = match ok {
            Ok(n) => n,
            Err(e) => {
                let mut out = BytesMut::new();
                wire::error(
                    &mut out,
                    b'E',
                    "FATAL",
                    "08P01",
                    &format!("headroom: invalid message: {e}"),
                );
                let _ = self.client.try_write(&out);
                return Err(e);
            }
        };
        let mut ok = ok;
        if let Some(at) = terminate_at {
            // Terminate ends the session here; it is not forwarded (the server stays ours).
            self.c2s.truncate(at);
            ok = at;
            self.terminated = true;
        }
        if !edits.is_empty() {
            edits.retain(|e| e.0 < ok);
            splice(&mut self.c2s, &edits);
            ok = (ok as i64 + delta) as usize;
        }
        self.c_ok = ok;
        if !answers.is_empty() {
            // Owed nothing before them by the server: they go after what it sent so far.
            let at = self.s_ok;
            splice(&mut self.s2c, &[(at, 0, answers.clone())]);
            self.s_ok += answers.len();
        }
        Ok(())
    }

    /// Scans what the server sent. `Err` when it broke the protocol or is going away (a
    /// FATAL error, such as `pg_terminate_backend`'s: kept from the client, which gets
    /// headroom's own error instead, with the server's reason in it).
    fn scan_server(&mut self, s: &mut ServerConn) -> io::Result<()> {
        let mut status = self.status;
        let rewrite = self.mode == PoolMode::Transaction;
        let (syncs, expects) = (&mut self.syncs, &mut self.expects);
        let mut fatal: Option<(usize, String)> = None;
        let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
        let ok = self.sscan.scan(
            &self.s2c,
            self.s_ok,
            usize::MAX >> 1,
            |t| {
                t == b'Z'
                    || t == b'E'
                    || (rewrite
                        && matches!(
                            t,
                            b'1' | b'2'
                                | b'3'
                                | b'T'
                                | b'n'
                                | b'C'
                                | b'I'
                                | b's'
                                | b'N'
                                | b'S'
                                | b'A'
                        ))
            },
            |m, body| {
                if fatal.is_some() {
                    return;
                }
                match m.tag {
                    b'Z' => {
                        syncs.pop_front();
                        status = body.first().copied().unwrap_or(b'I');
                    }
                    b'E' => {
                        let fields = wire::error_fields(body);
                        let severe = fields
                            .iter()
                            .any(|(k, v)| *k == b'S' && (v == "FATAL" || v == "PANIC"));
                        if severe {
                            let text = fields.into_iter().find(|(k, _)| *k == b'M').map(|(_, v)| v);
                            fatal = Some((m.at, text.unwrap_or_default()));
                            return;
                        }
                    }
                    _ => {}
                }
                if rewrite {
                    if expects.server_message(m.tag, &mut s.prepared) == prepared::Verdict::Hide {
                        edits.push((m.at, m.len, Vec::new()));
                    }
                    let mut due = Vec::new();
                    expects.due_answers(&mut due);
                    if !due.is_empty() {
                        edits.push((m.at + m.len, 0, due));
                    }
                }
            },
        )?;
        self.status = status;
        let mut ok = ok;
        if let Some((at, text)) = fatal {
            self.s2c.truncate(at);
            edits.retain(|e| e.0 < at);
            splice(&mut self.s2c, &edits);
            let delta: i64 = edits.iter().map(|e| e.2.len() as i64 - e.1 as i64).sum();
            self.s_ok = (at as i64 + delta) as usize;
            self.sscan = Scanner::default();
            self.lost_reason = Some(text);
            return Err(wire::invalid("the server is going away".into()));
        }
        if !edits.is_empty() {
            splice(&mut self.s2c, &edits);
            ok = (ok as i64
                + edits
                    .iter()
                    .map(|e| e.2.len() as i64 - e.1 as i64)
                    .sum::<i64>()) as usize;
        }
        self.s_ok = ok;
        Ok(())
    }

    fn try_write_server(
        c2s: &mut BytesMut,
        c_ok: &mut usize,
        c_base: &mut u64,
        s: &mut ServerConn,
    ) -> Result<(), ServerLost> {
        while *c_ok > 0 {
            match s.stream.try_write(&c2s[..*c_ok]) {
                Ok(n) => {
                    c2s.advance(n);
                    *c_ok -= n;
                    *c_base += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(_) => return Err(ServerLost),
            }
        }
        Ok(())
    }

    fn try_write_client(&mut self) -> io::Result<()> {
        while self.s_ok > 0 {
            match self.client.try_write(&self.s2c[..self.s_ok]) {
                Ok(n) => {
                    self.s2c.advance(n);
                    self.s_ok -= n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn write_client(&mut self) -> io::Result<()> {
        self.client.write_all(&self.s2c[..self.s_ok]).await?;
        self.s2c.advance(self.s_ok);
        self.s_ok = 0;
        Ok(())
    }

    /// The server went away under the client. Between whole messages, the client gets an
    /// error for what it waits on and may go on (its next transaction gets another server);
    /// in the middle of one, its connection can only be closed. False: close the client.
    ///
    /// What the dead server had been sent is answered now: one error, and a `ReadyForQuery`
    /// for each `Query`/`Sync` it owed. If the client was inside a transaction (or in an
    /// extended-protocol batch), what it sends next is answered with the error too, up to
    /// its next `Query` or `Sync` ([`Relay::answer_lost_transaction`]): it must not run
    /// outside the transaction the client believes it is in.
    fn server_lost(&mut self) -> bool {
        // Both streams must be between messages: the server's for the client to be answered,
        // the client's (all it sent scanned went out) for its next message to be found.
        let clean = self.sscan.at_boundary() && self.cscan.at_boundary() && self.c_ok == 0;
        self.sscan = Scanner::default();
        self.expects.clear();
        if !clean {
            return false;
        }
        self.s2c.truncate(self.s_ok);
        let why = self
            .lost_reason
            .take()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let text = format!(
            "headroom: the server connection was lost{why}; the transaction is rolled back, and the next one runs on another connection"
        );
        let mut out = BytesMut::new();
        let mut answered = false;
        while self.syncs.front().is_some_and(|&at| at < self.c_base) {
            self.syncs.pop_front();
            if !answered {
                wire::error(&mut out, b'E', "ERROR", "08006", &text);
                answered = true;
            }
            wire::ready(&mut out, b'I');
        }
        let in_transaction = self.status != b'I' || self.unsynced;
        if !answered && self.unsynced {
            // The client may be waiting on a Flush: it hears of the loss now, then Syncs.
            wire::error(&mut out, b'E', "ERROR", "08006", &text);
            answered = true;
        }
        self.s2c.extend_from_slice(&out);
        self.s_ok = self.s2c.len();
        self.status = b'I';
        // Unless the loss is already told and nothing is left to answer but the next Sync.
        if in_transaction && (!answered || self.unsynced) {
            self.lost = Some(Lost {
                text,
                told: answered,
            });
        }
        true
    }

    /// While a lost transaction is owed an answer: the client's whole messages are taken off
    /// `c2s` and answered (the error once, then `ReadyForQuery` at its `Query` or `Sync`)
    /// instead of going to a server.
    fn answer_lost_transaction(&mut self) {
        let Some(lost) = self.lost.as_mut() else {
            return;
        };
        let mut out = BytesMut::new();
        while self.c2s.len() >= 5 {
            let len =
                u32::from_be_bytes([self.c2s[1], self.c2s[2], self.c2s[3], self.c2s[4]]) as usize;
            let whole = 1 + len;
            if self.c2s.len() < whole {
                break;
            }
            let tag = self.c2s[0];
            self.c2s.advance(whole);
            self.c_ok = self.c_ok.saturating_sub(whole);
            self.c_base += whole as u64;
            if !lost.told {
                wire::error(&mut out, b'E', "ERROR", "25P02", &lost.text);
                lost.told = true;
            }
            if matches!(tag, b'Q' | b'S' | b'F') {
                wire::ready(&mut out, b'I');
                self.unsynced = false;
                self.lost = None;
                break;
            }
        }
        self.s2c.extend_from_slice(&out);
        self.s_ok = self.s2c.len();
    }

    /// The client left with `server` attached: it goes back clean, or is closed.
    async fn give_back(&mut self, mut server: ServerConn) {
        self.cancel.server.store(0, Relaxed);
        let pool = self.pool.clone();
        if !self.syncs.is_empty()
            || !self.expects.is_empty()
            || self.unsynced
            || !self.sscan.at_boundary()
            || !self.cscan.at_boundary() && self.c_ok > 0
        {
            // Mid-query: its state is unknown. Closing it rolls the transaction back.
            pool.release(server, false);
            return;
        }
        let reset = match (self.status, self.mode) {
            (b'I', PoolMode::Transaction) => None,
            (b'I', PoolMode::Session) => pool_reset(&pool),
            // Idle in a transaction, or in a failed one: roll it back, then reset.
            _ => Some(match (self.mode, pool_reset(&pool)) {
                (PoolMode::Session, Some(q)) => format!("ROLLBACK; {q}"),
                _ => "ROLLBACK".to_owned(),
            }),
        };
        let ok = match reset {
            None => true,
            Some(q) => tokio::time::timeout(CLEANUP_TIMEOUT, run_simple(&mut server, &q))
                .await
                .map(|r| r.unwrap_or(false))
                .unwrap_or(false),
        };
        if ok {
            pool.stats.transactions.fetch_add(1, Relaxed);
        }
        pool.release(server, ok);
    }
}

fn pool_reset(pool: &Pool) -> Option<String> {
    pool.settings.reset_query.clone()
}

/// Runs `sql` on a server by the simple protocol; true when it ended idle without error.
async fn run_simple(server: &mut ServerConn, sql: &str) -> io::Result<bool> {
    let mut out = BytesMut::new();
    wire::query(&mut out, sql);
    server.stream.write_all(&out).await?;
    let mut buf = Vec::new();
    let mut failed = false;
    loop {
        match wire::read_message(&mut server.stream, &mut buf, 1 << 20).await? {
            b'E' => failed = true,
            b'Z' => return Ok(!failed && buf.first() == Some(&b'I')),
            _ => {}
        }
    }
}

/// The attached server failed (closed, reset, or sent what is not PostgreSQL).
struct ServerLost;

/// Replaces ranges of `buf` — `(at, len, with)`, in order, not overlapping — in one copy.
fn splice(buf: &mut BytesMut, edits: &[(usize, usize, Vec<u8>)]) {
    let grow: usize = edits.iter().map(|e| e.2.len()).sum();
    let mut out = BytesMut::with_capacity(buf.len() + grow);
    let mut from = 0;
    for (at, len, with) in edits {
        out.extend_from_slice(&buf[from..*at]);
        out.extend_from_slice(with);
        from = at + len;
    }
    out.extend_from_slice(&buf[from..]);
    *buf = out;
}
