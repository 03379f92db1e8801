//! The commands' client for a running headroom's admin API (`purge`, `advise`): one
//! HTTP/1.1 request on a fresh connection, the answer read to its end. Written by hand: the
//! admin API is loopback JSON, and a blocking `TcpStream` keeps these commands free of a
//! runtime.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `method path` on the admin listener at `addr`, with the bearer `token` and a JSON body
/// if given: the status and the body.
pub fn request(
    addr: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let body = json.map_or(String::new(), |b| {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        )
    });
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{body}{auth}Connection: close\r\n\r\n{}",
        json.unwrap_or("")
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let text = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, text))
}
