//! One connection to a PostgreSQL server: connecting and logging in (trust, password or
//! SCRAM-SHA-256), and what the server said about itself (its parameters, its cancel key).

use crate::scram::ClientExchange;
use crate::wire;
use bytes::{BufMut, BytesMut};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A logged-in server connection, between two uses or in one.
#[derive(Debug)]
pub struct ServerConn {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    /// `ParameterStatus` as the server last reported them (`server_version`, ...).
    pub params: Vec<(String, String)>,
    /// The server's `BackendKeyData`: what a cancel request for this connection carries.
    pub pid: u32,
    pub secret: u32,
    pub born: Instant,
    pub idle_since: Instant,
    /// The statements headroom prepared on it (transaction mode; see `prepared`).
    pub prepared: std::collections::HashSet<u64>,
}

/// Why a login failed.
#[derive(Debug)]
pub enum LoginError {
    /// Connecting, reading or writing; or the server did not answer in time.
    Io(io::Error),
    /// The server refused with an `ErrorResponse` (its fields: code, message...), such as
    /// "database does not exist": passed on to the client as the server said it.
    Server(Vec<(u8, String)>),
    /// Something headroom cannot do or the server did wrong.
    Protocol(String),
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginError::Io(e) => write!(f, "{e}"),
            LoginError::Server(fields) => {
                let m = fields
                    .iter()
                    .find(|(k, _)| *k == b'M')
                    .map_or("", |(_, v)| v.as_str());
                write!(f, "the server refused: {m}")
            }
            LoginError::Protocol(m) => f.write_str(m),
        }
    }
}

impl From<io::Error> for LoginError {
    fn from(e: io::Error) -> Self {
        LoginError::Io(e)
    }
}

/// What to log in as.
#[derive(Debug, Clone)]
pub struct Login<'a> {
    pub addr: SocketAddr,
    pub user: &'a str,
    pub password: &'a str,
    pub database: &'a str,
}

/// The largest message taken from a server during login.
const MAX_LOGIN_MESSAGE: usize = 1 << 20;

/// Connects and logs in, within `timeout`.
pub async fn connect(login: &Login<'_>, timeout: Duration) -> Result<ServerConn, LoginError> {
    match tokio::time::timeout(timeout, connect_inner(login)).await {
        Ok(r) => r,
        Err(_) => Err(LoginError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no login to {} within {timeout:?}", login.addr),
        ))),
    }
}

async fn connect_inner(login: &Login<'_>) -> Result<ServerConn, LoginError> {
    let mut stream = TcpStream::connect(login.addr).await?;
    stream.set_nodelay(true)?;
    let mut out = BytesMut::with_capacity(128);
    out.put_u32(0);
    out.put_u32(wire::PROTOCOL_3);
    for (k, v) in [("user", login.user), ("database", login.database)] {
        wire::put_cstr(&mut out, k);
        wire::put_cstr(&mut out, v);
    }
    out.put_u8(0);
    let len = out.len() as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    stream.write_all(&out).await?;

    let mut buf = Vec::new();
    let mut scram: Option<ClientExchange> = None;
    let mut params = Vec::new();
    let (mut pid, mut secret) = (0, 0);
    loop {
        let tag = wire::read_message(&mut stream, &mut buf, MAX_LOGIN_MESSAGE).await?;
        match tag {
            b'R' => {
                if buf.len() < 4 {
                    return Err(LoginError::Protocol(
                        "a short authentication message".into(),
                    ));
                }
                let code = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                let data = &buf[4..];
                let mut reply = BytesMut::new();
                match code {
                    0 => continue,
                    3 => wire::message(&mut reply, b'p', |o| wire::put_cstr(o, login.password)),
                    10 => {
                        let offered = data
                            .split(|&b| b == 0)
                            .any(|m| m == crate::scram::MECHANISM.as_bytes());
                        if !offered {
                            return Err(LoginError::Protocol(
                                "the server offers no SASL mechanism headroom speaks (SCRAM-SHA-256 without channel binding)".into(),
                            ));
                        }
                        let x = ClientExchange::new(login.password);
                        let first = x.first();
                        wire::message(&mut reply, b'p', |o| {
                            wire::put_cstr(o, crate::scram::MECHANISM);
                            o.put_u32(first.len() as u32);
                            o.put_slice(first.as_bytes());
                        });
                        scram = Some(x);
                    }
                    11 => {
                        let x = scram
                            .as_mut()
                            .ok_or_else(|| LoginError::Protocol("SASL continue before SASL".into()))?;
                        let last = x
                            .last(data)
                            .map_err(|e| LoginError::Protocol(format!("SCRAM: {e:?}")))?;
                        wire::message(&mut reply, b'p', |o| o.put_slice(last.as_bytes()));
                    }
                    12 => {
                        let x = scram
                            .as_ref()
                            .ok_or_else(|| LoginError::Protocol("SASL final before SASL".into()))?;
                        x.verify(data).map_err(|_| {
                            LoginError::Protocol(
                                "the server's SCRAM signature is wrong: it does not know the password".into(),
                            )
                        })?;
                        continue;
                    }
                    5 => {
                        return Err(LoginError::Protocol(
                            "the server asks for md5 authentication, which headroom does not speak to servers yet: use scram-sha-256 in its pg_hba.conf".into(),
                        ))
                    }
                    c => {
                        return Err(LoginError::Protocol(format!(
                            "the server asks for authentication method {c}, which headroom does not speak"
                        )))
                    }
                }
                stream.write_all(&reply).await?;
            }
            b'S' => {
                let mut b = &buf[..];
                let k = wire::cstr(&mut b)?;
                let v = wire::cstr(&mut b)?;
                params.push((k, v));
            }
            b'K' if buf.len() == 8 => {
                pid = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                secret = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
            }
            b'E' => return Err(LoginError::Server(wire::error_fields(&buf))),
            b'N' => {}
            b'Z' => {
                let now = Instant::now();
                return Ok(ServerConn {
                    stream,
                    addr: login.addr,
                    params,
                    pid,
                    secret,
                    born: now,
                    idle_since: now,
                    prepared: Default::default(),
                });
            }
            t => {
                return Err(LoginError::Protocol(format!(
                    "unexpected message '{}' during login",
                    t.escape_ascii()
                )))
            }
        }
    }
}

/// Sends a cancel request for the query running on `pid` at `addr` (a connection of its own,
/// as the protocol has it). Best effort: the server answers nothing either way.
pub async fn cancel(addr: SocketAddr, pid: u32, secret: u32) -> io::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    let mut b = BytesMut::with_capacity(16);
    b.put_u32(16);
    b.put_u32(wire::CANCEL_REQUEST);
    b.put_u32(pid);
    b.put_u32(secret);
    s.write_all(&b).await?;
    // The server closes it when done; waiting for that keeps the order (cancel, then the
    // client's next message) the way a direct client sees it.
    let mut sink = [0u8; 1];
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::io::AsyncReadExt::read(&mut s, &mut sink),
    )
    .await;
    Ok(())
}
