//! Name to addresses: the system resolver, or a DNS server asked directly over UDP.

use super::wire::{self, Query, Reply, WireError, TYPE_A, TYPE_AAAA};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one UDP attempt (or the TCP fallback) waits for its answer. 2 s: a server on
/// the same network answers in milliseconds, and two attempts still fit in the default 5 s
/// interval.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// UDP attempts per lookup: the first and one retry, as a lost datagram is the common case.
pub const ATTEMPTS: usize = 2;
/// Longest wait for getaddrinfo. Its own retries (resolv.conf `timeout:5 attempts:2`, per
/// server) can take half a minute; past this the lookup counts as failed (the blocking
/// thread finishes on its own).
pub const SYSTEM_TIMEOUT: Duration = Duration::from_secs(10);

/// Where names are resolved (`[global] resolver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// getaddrinfo on tokio's blocking pool: honours /etc/hosts, resolv.conf and its search
    /// domains, nsswitch. One blocking thread per lookup in flight.
    System,
    /// This DNS server, asked for A and AAAA over UDP ([`QUERY_TIMEOUT`], [`ATTEMPTS`]), and
    /// over TCP when an answer comes back truncated.
    Server(SocketAddr),
}

impl Resolver {
    /// `[global] resolver`: `None` is the system resolver.
    pub fn from_config(server: Option<SocketAddr>) -> Resolver {
        server.map_or(Resolver::System, Resolver::Server)
    }

    /// Every A and AAAA address of `host`, at `port`, sorted and without duplicates. Empty
    /// when the name exists without addresses. Errors say what failed (no such name, a
    /// server error, a timeout); one failed query fails the whole lookup, so a lookup never
    /// returns half of the set.
    pub async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let mut addrs = match self {
            Resolver::System => {
                match tokio::time::timeout(SYSTEM_TIMEOUT, tokio::net::lookup_host((host, port)))
                    .await
                {
                    Ok(Ok(found)) => found.collect::<Vec<_>>(),
                    Ok(Err(e)) => return Err(format!("{host}: {e}")),
                    Err(_) => {
                        return Err(format!(
                            "{host}: the system resolver did not answer within {SYSTEM_TIMEOUT:?}"
                        ))
                    }
                }
            }
            Resolver::Server(server) => ask(*server, host)
                .await
                .map_err(|e| format!("{host} at {server}: {e}"))?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
        };
        addrs.sort_unstable();
        addrs.dedup();
        Ok(addrs)
    }
}

/// Asks `server` for `host`'s A and AAAA records at once.
async fn ask(server: SocketAddr, host: &str) -> Result<Vec<IpAddr>, String> {
    // Random ids (and the OS's random source port): an off-path spoofer must guess both,
    // and the question is checked too. fastrand is not a CSPRNG, but its seed comes from
    // std's per-process random keys and nothing here leaks its output.
    let mut pending = vec![
        wire::query(fastrand::u16(..), host, TYPE_A)?,
        wire::query(fastrand::u16(..), host, TYPE_AAAA)?,
    ];
    let mut replies: Vec<(u16, Reply)> = Vec::new();
    let mut last_error = String::new();
    for _ in 0..ATTEMPTS {
        if pending.is_empty() {
            break;
        }
        match tokio::time::timeout(
            QUERY_TIMEOUT,
            exchange_udp(server, &mut pending, &mut replies),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => last_error = e,
            Err(_) => last_error = format!("no answer within {QUERY_TIMEOUT:?}"),
        }
        // A retry is a fresh question: a late answer to the first is then not ours.
        for q in &mut pending {
            let fresh_id = fastrand::u16(..);
            if let Ok(fresh) = wire::query(fresh_id, host, q.qtype) {
                *q = fresh;
            }
        }
    }
    if !pending.is_empty() {
        return Err(last_error);
    }
    let mut ips = Vec::new();
    for (qtype, reply) in replies {
        let reply = match reply {
            Reply::Truncated => {
                let q = wire::query(fastrand::u16(..), host, qtype)?;
                tokio::time::timeout(QUERY_TIMEOUT, exchange_tcp(server, &q))
                    .await
                    .map_err(|_| format!("no answer over TCP within {QUERY_TIMEOUT:?}"))??
            }
            other => other,
        };
        match reply {
            Reply::Addresses(found) => ips.extend(found),
            Reply::NoSuchName => return Err("no such name (NXDOMAIN)".into()),
            Reply::ServerError(rcode) => {
                return Err(format!("the server answered {}", rcode_name(rcode)))
            }
            Reply::Truncated => return Err("the answer is truncated even over TCP".into()),
        }
    }
    Ok(ips)
}

fn rcode_name(rcode: u8) -> String {
    match rcode {
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("response code {n}"),
    }
}

/// Sends every pending query on one fresh socket and moves each answered one to `replies`.
/// Returns when none is pending; the caller bounds it with a timeout.
async fn exchange_udp(
    server: SocketAddr,
    pending: &mut Vec<Query>,
    replies: &mut Vec<(u16, Reply)>,
) -> Result<(), String> {
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    // Connected: the kernel drops datagrams from other addresses, and an ICMP "port
    // unreachable" fails recv at once instead of waiting for the timeout.
    socket
        .connect(server)
        .await
        .map_err(|e| format!("cannot reach the server: {e}"))?;
    for q in pending.iter() {
        socket
            .send(&q.bytes)
            .await
            .map_err(|e| format!("cannot send a query: {e}"))?;
    }
    // 64 KiB: the largest datagram. We advertise EDNS_PAYLOAD, but a server that sends more
    // should be read whole, not cut and then misparsed.
    let mut buf = vec![0; 65_535];
    while !pending.is_empty() {
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| format!("cannot receive an answer: {e}"))?;
        let msg = &buf[..n];
        let mut answered = None;
        for (i, q) in pending.iter().enumerate() {
            match wire::parse_reply(msg, q) {
                Err(WireError::NotOurs) => continue,
                Err(WireError::Malformed(why)) => return Err(format!("malformed answer: {why}")),
                Ok(reply) => {
                    answered = Some((i, reply));
                    break;
                }
            }
        }
        if let Some((i, reply)) = answered {
            let q = pending.swap_remove(i);
            replies.push((q.qtype, reply));
        }
    }
    Ok(())
}

/// One query over TCP (RFC 1035 §4.2.2: each message prefixed with its 2-byte length).
async fn exchange_tcp(server: SocketAddr, q: &Query) -> Result<Reply, String> {
    let mut stream = TcpStream::connect(server)
        .await
        .map_err(|e| format!("cannot connect over TCP: {e}"))?;
    let mut framed = Vec::with_capacity(q.bytes.len() + 2);
    framed.extend((q.bytes.len() as u16).to_be_bytes());
    framed.extend(&q.bytes);
    stream
        .write_all(&framed)
        .await
        .map_err(|e| format!("cannot send over TCP: {e}"))?;
    let mut len = [0u8; 2];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| format!("cannot read the TCP answer: {e}"))?;
    let mut msg = vec![0; u16::from_be_bytes(len) as usize];
    stream
        .read_exact(&mut msg)
        .await
        .map_err(|e| format!("cannot read the TCP answer: {e}"))?;
    match wire::parse_reply(&msg, q) {
        Ok(reply) => Ok(reply),
        Err(WireError::NotOurs) => Err("the TCP answer is for another question".into()),
        Err(WireError::Malformed(why)) => Err(format!("malformed TCP answer: {why}")),
    }
}
