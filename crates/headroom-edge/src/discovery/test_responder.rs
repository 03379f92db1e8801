//! Test support: a tiny DNS server on a loopback port, answering A and AAAA queries from a
//! table the test changes while it runs. Standard library only (two threads, no runtime), so
//! unit tests here and the binary's end-to-end tests (`headroom_edge::discovery::
//! test_responder::DnsResponder`) use the same one. Not a real server: one question per
//! message, answers always name the question by a compression pointer, no EDNS in replies.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What the responder says about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// NOERROR with these addresses (the IPv4 ones to A queries, IPv6 to AAAA); an empty
    /// list is a name without records.
    Records(Vec<IpAddr>),
    /// NXDOMAIN (also the answer for names not in the table).
    NoSuchName,
    /// SERVFAIL.
    ServerFailure,
    /// No answer at all: the query is counted and dropped, so the client times out.
    Silent,
}

#[derive(Default)]
struct State {
    table: HashMap<String, Answer>,
    queries: usize,
    tcp_queries: usize,
}

/// The running responder; dropping it stops both threads.
pub struct DnsResponder {
    addr: SocketAddr,
    state: Arc<(Mutex<State>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl DnsResponder {
    /// Binds UDP and TCP on the same OS-chosen loopback port (TCP serves the answers too
    /// large for a 512-byte datagram, which go out truncated over UDP).
    pub fn start() -> std::io::Result<DnsResponder> {
        let (udp, tcp) = bind_pair()?;
        let addr = udp.local_addr()?;
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        // The read timeout is how the thread notices `stop`; it delays nothing else.
        udp.set_read_timeout(Some(Duration::from_millis(50)))?;
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || serve_udp(udp, s, st));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || serve_tcp(tcp, s, st));
        Ok(DnsResponder { addr, state, stop })
    }

    /// The address to query (`[global] resolver`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets what `name` (case-insensitive, trailing dot ignored) answers from now on.
    pub fn set(&self, name: &str, answer: Answer) {
        self.lock().table.insert(normalise(name), answer);
    }

    /// Queries received so far (UDP and TCP, answered or not).
    pub fn queries(&self) -> usize {
        self.lock().queries
    }

    /// Of those, the ones that came over TCP.
    pub fn tcp_queries(&self) -> usize {
        self.lock().tcp_queries
    }

    /// Waits until at least `n` queries have arrived, woken by each; `limit` is a safety net.
    pub fn wait_for_queries(&self, n: usize, limit: Duration) -> bool {
        let (m, c) = &*self.state;
        let deadline = Instant::now() + limit;
        let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
        while g.queries < n {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            g = c.wait_timeout(g, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for DnsResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the TCP thread from accept().
        let _ = TcpStream::connect(self.addr);
    }
}

fn bind_pair() -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    // The UDP port the OS picks may be taken for TCP: try a few.
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        match TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn serve_udp(socket: UdpSocket, state: Arc<(Mutex<State>, Condvar)>, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if let Some(reply) = respond(&buf[..n], &state, false) {
            let _ = socket.send_to(&reply, from);
        }
    }
}

fn serve_tcp(listener: TcpListener, state: Arc<(Mutex<State>, Condvar)>, stop: Arc<AtomicBool>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            continue;
        }
        let mut msg = vec![0; u16::from_be_bytes(len) as usize];
        if stream.read_exact(&mut msg).is_err() {
            continue;
        }
        if let Some(reply) = respond(&msg, &state, true) {
            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
            framed.extend(reply);
            let _ = stream.write_all(&framed);
        }
    }
}

/// The reply to one query message, or None to stay silent (malformed, or `Answer::Silent`).
fn respond(query: &[u8], state: &(Mutex<State>, Condvar), tcp: bool) -> Option<Vec<u8>> {
    let header = query.get(..12)?;
    // The question: uncompressed labels up to a 0, then type and class.
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(pos)? as usize;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(pos + 1..pos + 1 + len)?).into_owned());
        pos += 1 + len;
    }
    let question = query.get(12..pos + 5)?;
    let qtype = u16::from_be_bytes([query[pos + 1], query[pos + 2]]);

    let answer = {
        let (m, c) = state;
        let mut s = m.lock().unwrap_or_else(|p| p.into_inner());
        s.queries += 1;
        s.tcp_queries += usize::from(tcp);
        c.notify_all();
        s.table
            .get(&normalise(&labels.join(".")))
            .cloned()
            .unwrap_or(Answer::NoSuchName)
    };
    let (rcode, ips) = match answer {
        Answer::Silent => return None,
        Answer::NoSuchName => (3, Vec::new()),
        Answer::ServerFailure => (2, Vec::new()),
        Answer::Records(ips) => (0, ips),
    };
    let mut records = Vec::new();
    for ip in ips {
        let (rtype, data) = match ip {
            IpAddr::V4(v4) if qtype == 1 => (1u16, v4.octets().to_vec()),
            IpAddr::V6(v6) if qtype == 28 => (28u16, v6.octets().to_vec()),
            _ => continue,
        };
        let mut r = vec![0xC0, 12];
        r.extend(rtype.to_be_bytes());
        r.extend(1u16.to_be_bytes());
        r.extend(5u32.to_be_bytes());
        r.extend((data.len() as u16).to_be_bytes());
        r.extend(data);
        records.push(r);
    }
    let size = 12 + question.len() + records.iter().map(Vec::len).sum::<usize>();
    // Plain DNS's 512-byte limit (this responder ignores EDNS): beyond it, TC and no records.
    let truncated = !tcp && size > 512;
    if truncated {
        records.clear();
    }
    // QR, AA, RD copied from the query, RA; TC when cut.
    let flags: u16 =
        0x8480 | (u16::from(header[2] & 0x01) << 8) | if truncated { 0x0200 } else { 0 } | rcode;
    let mut reply = header[..2].to_vec();
    for v in [flags, 1, records.len() as u16, 0, 0] {
        reply.extend(v.to_be_bytes());
    }
    reply.extend(question);
    for r in records {
        reply.extend(r);
    }
    Some(reply)
}
