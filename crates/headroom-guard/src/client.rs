//! Who the client is: the peer's address, or, when the peer is a trusted proxy, the
//! address that proxy saw, from `X-Forwarded-For`.

use headroom_config::guard::IpNet;
use http::HeaderMap;
use std::net::{IpAddr, SocketAddr};

static X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// The client's address. The peer's, unless the peer is in `trusted`: then the rightmost
/// `X-Forwarded-For` entry that is not itself trusted (each trusted proxy appends the
/// address it saw, so entries left of the first untrusted one are the client's own claims,
/// and are ignored). An entry that is not an address ends the walk at the proxy that
/// appended it; when every entry is trusted, the leftmost is the client.
pub fn client_ip(trusted: &[IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !is_trusted(trusted, peer) {
        return peer;
    }
    let mut client = peer;
    // Field lines in order, entries right to left: the last line holds the nearest hop.
    let lines: Vec<&[u8]> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    for line in lines.iter().rev() {
        for entry in line.rsplit(|&b| b == b',') {
            let Some(ip) = parse_entry(entry) else {
                return client;
            };
            client = ip;
            if !is_trusted(trusted, ip) {
                return ip;
            }
        }
    }
    client
}

fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    trusted.iter().any(|n| n.contains(&ip))
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `2001:db8::1`, and the forms with a port some
/// proxies write (`1.2.3.4:5678`, `[2001:db8::1]:80`).
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    s.parse::<SocketAddr>().ok().map(|a| a.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", HeaderValue::from_str(l).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_spoofed_x_forwarded_for_from_an_untrusted_peer_is_ignored() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = xff(&["1.1.1.1"]);
        assert_eq!(
            client_ip(&trusted, ip("203.0.113.9"), &h),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(&[], ip("10.0.0.1"), &h),
            ip("10.0.0.1"),
            "no proxy trusted"
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_entry_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "192.168.0.0/16"]);
        // The client claims 1.1.1.1; the first proxy saw 198.51.100.7; a second proxy
        // (192.168.1.1) forwarded to the trusted peer 10.0.0.2.
        let h = xff(&["1.1.1.1, 198.51.100.7", "192.168.1.1"]);
        assert_eq!(client_ip(&trusted, ip("10.0.0.2"), &h), ip("198.51.100.7"));
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_read() {
        let trusted = nets(&["::1/128", "127.0.0.0/8"]);
        assert_eq!(
            client_ip(&trusted, ip("::1"), &xff(&["[2001:db8::5]:443"])),
            ip("2001:db8::5")
        );
        assert_eq!(
            client_ip(&trusted, ip("127.0.0.1"), &xff(&["198.51.100.7:5678"])),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(
                &trusted,
                ip("::ffff:127.0.0.1"),
                &xff(&["::ffff:198.51.100.7"])
            ),
            ip("198.51.100.7"),
            "IPv4-mapped addresses count as IPv4"
        );
    }

    #[test]
    fn garbage_ends_the_walk_at_the_proxy_that_passed_it_on() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = xff(&["198.51.100.7, not-an-ip, 10.1.1.1"]);
        assert_eq!(client_ip(&trusted, ip("10.0.0.2"), &h), ip("10.1.1.1"));
        // No header at all: the trusted peer itself.
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn when_every_entry_is_trusted_the_leftmost_is_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = xff(&["10.9.9.9, 10.1.1.1"]);
        assert_eq!(client_ip(&trusted, ip("10.0.0.2"), &h), ip("10.9.9.9"));
    }
}
