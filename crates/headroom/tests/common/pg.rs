//! Real PostgreSQL servers for tests (Debian's PostgreSQL 15: `initdb`, `postgres`), each in a
//! temp dir on a free loopback port, run as the `postgres` OS user (initdb refuses root) and
//! stopped on drop; and a small synchronous client that speaks the wire protocol, SCRAM
//! included, so tests can send exactly the messages they mean.
#![allow(dead_code)]

use headroom_sql::scram::ClientExchange;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// One running server, with a role `app` (password `app`) owning a database `app`.
pub struct Postgres {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a command as the `postgres` user (setpriv execs: the pid is the program's own).
fn as_postgres(program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--",
    ])
    .arg(program);
    c
}

impl Postgres {
    /// A fresh primary. Panics (with the server's log) when it cannot start.
    pub fn start() -> Postgres {
        let dir = crate::common::temp_dir().join("pg");
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "postgres\n").unwrap();
        chown_postgres(&dir);
        let out = as_postgres(&format!("{PG_BIN}/initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                "postgres",
                "-N",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pw.display()))
            .output()
            .expect("run initdb (apt-get install postgresql)");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hba = dir.join("data/pg_hba.conf");
        let mut h = std::fs::read_to_string(&hba).unwrap();
        h.push_str("host replication all 127.0.0.1/32 scram-sha-256\n");
        std::fs::write(&hba, h).unwrap();
        let mut pg = Postgres {
            port: free_port(),
            dir,
            child: None,
        };
        pg.run();
        pg.psql_super("CREATE ROLE app LOGIN PASSWORD 'app'");
        pg.psql_super("CREATE DATABASE app OWNER app");
        pg
    }

    fn run(&mut self) {
        let log = std::fs::File::create(self.dir.join("log")).unwrap();
        chown_postgres(&self.dir.join("log"));
        let child = as_postgres(&format!("{PG_BIN}/postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                // Test servers: durability off, for speed.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
                "-c",
                "wal_level=replica",
                "-c",
                "hot_standby=on",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(format!("{PG_BIN}/pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start:\n{}",
                std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
            );
            // pg_isready is the signal; between tries, a short pause.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Runs SQL as the superuser over the unix socket (psql); returns what it printed.
    pub fn psql_super(&self, sql: &str) -> String {
        self.psql_as("postgres", "postgres", sql)
    }

    pub fn psql_as(&self, user: &str, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .arg("-h")
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                user,
                "-d",
                db,
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stops the server at once (SIGKILL to the postmaster: its backends exit when they see
    /// it gone), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            // Fast shutdown (SIGINT): backends are told to end.
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let mut c = c;
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn chown_postgres(p: &std::path::Path) {
    let _ = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(p)
        .status();
}

/// A result row, values as text (`None`: NULL).
pub type Row = Vec<Option<String>>;

/// A minimal client: startup, SCRAM-SHA-256, simple queries, and raw messages.
pub struct PgClient {
    pub stream: TcpStream,
    /// BackendKeyData.
    pub pid: u32,
    pub secret: u32,
    pub params: Vec<(String, String)>,
}

/// One message read: its tag and body.
pub type Msg = (u8, Vec<u8>);

pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// The `M` (message) field of an ErrorResponse body.
pub fn error_message(body: &[u8]) -> String {
    headroom_sql::wire::error_fields(body)
        .into_iter()
        .find(|(k, _)| *k == b'M')
        .map(|(_, v)| v)
        .unwrap_or_default()
}

pub fn error_code(body: &[u8]) -> String {
    headroom_sql::wire::error_fields(body)
        .into_iter()
        .find(|(k, _)| *k == b'C')
        .map(|(_, v)| v)
        .unwrap_or_default()
}

impl PgClient {
    /// Connects and logs in; `Err` carries the server's error message.
    pub fn connect(
        addr: SocketAddr,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<PgClient, String> {
        let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let mut c = PgClient {
            stream,
            pid: 0,
            secret: 0,
            params: Vec::new(),
        };
        let mut body = 196_608u32.to_be_bytes().to_vec();
        for (k, v) in [("user", user), ("database", db)] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut pkt = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        pkt.extend_from_slice(&body);
        c.stream.write_all(&pkt).map_err(|e| e.to_string())?;
        let mut scram: Option<ClientExchange> = None;
        loop {
            let (tag, body) = c.read().map_err(|e| e.to_string())?;
            match tag {
                b'R' => {
                    let code = u32::from_be_bytes(body[..4].try_into().unwrap());
                    let data = &body[4..];
                    match code {
                        0 => {}
                        10 => {
                            let x = ClientExchange::new(password);
                            let first = x.first();
                            let mut b = b"SCRAM-SHA-256\0".to_vec();
                            b.extend_from_slice(&(first.len() as u32).to_be_bytes());
                            b.extend_from_slice(first.as_bytes());
                            c.stream.write_all(&msg(b'p', &b)).unwrap();
                            scram = Some(x);
                        }
                        11 => {
                            let last = scram
                                .as_mut()
                                .unwrap()
                                .last(data)
                                .map_err(|e| format!("{e:?}"))?;
                            c.stream.write_all(&msg(b'p', last.as_bytes())).unwrap();
                        }
                        12 => scram
                            .as_ref()
                            .unwrap()
                            .verify(data)
                            .map_err(|e| format!("{e:?}"))?,
                        c => return Err(format!("auth method {c}")),
                    }
                }
                b'S' => {
                    let parts: Vec<&[u8]> = body.split(|&b| b == 0).collect();
                    c.params.push((
                        String::from_utf8_lossy(parts[0]).into(),
                        String::from_utf8_lossy(parts[1]).into(),
                    ));
                }
                b'K' => {
                    c.pid = u32::from_be_bytes(body[..4].try_into().unwrap());
                    c.secret = u32::from_be_bytes(body[4..8].try_into().unwrap());
                }
                b'E' => return Err(error_message(&body)),
                b'Z' => return Ok(c),
                _ => {}
            }
        }
    }

    pub fn app(addr: SocketAddr) -> PgClient {
        PgClient::connect(addr, "app", "app", "app").expect("log in as app")
    }

    pub fn read(&mut self) -> std::io::Result<Msg> {
        let mut head = [0u8; 5];
        self.stream.read_exact(&mut head)?;
        let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0; len - 4];
        self.stream.read_exact(&mut body)?;
        Ok((head[0], body))
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads messages up to and including ReadyForQuery.
    pub fn until_ready(&mut self) -> std::io::Result<Vec<Msg>> {
        let mut out = Vec::new();
        loop {
            let m = self.read()?;
            let done = m.0 == b'Z';
            out.push(m);
            if done {
                return Ok(out);
            }
        }
    }

    /// A simple query: its rows, or the error's message.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Row>, String> {
        let mut q = sql.as_bytes().to_vec();
        q.push(0);
        self.send(&msg(b'Q', &q));
        let msgs = self.until_ready().map_err(|e| format!("io: {e}"))?;
        rows_of(&msgs)
    }

    pub fn one(&mut self, sql: &str) -> String {
        let rows = self.query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows[0][0].clone().unwrap_or_default()
    }

    /// The transaction status of the last ReadyForQuery, from a fresh `SELECT 1`.
    pub fn status_after(&mut self, sql: &str) -> u8 {
        let mut q = sql.as_bytes().to_vec();
        q.push(0);
        self.send(&msg(b'Q', &q));
        let msgs = self.until_ready().unwrap();
        msgs.last().unwrap().1[0]
    }
}

/// Rows of DataRow messages, or the first ErrorResponse's message.
pub fn rows_of(msgs: &[Msg]) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for (tag, body) in msgs {
        match tag {
            b'E' => return Err(error_message(body)),
            b'D' => {
                let n = u16::from_be_bytes([body[0], body[1]]) as usize;
                let mut at = 2;
                let mut row = Vec::with_capacity(n);
                for _ in 0..n {
                    let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                    at += 4;
                    if len < 0 {
                        row.push(None);
                    } else {
                        let len = len as usize;
                        row.push(Some(
                            String::from_utf8_lossy(&body[at..at + len]).into_owned(),
                        ));
                        at += len;
                    }
                }
                rows.push(row);
            }
            _ => {}
        }
    }
    Ok(rows)
}
