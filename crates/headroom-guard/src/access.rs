//! Access rules: which client addresses may use a route (CIDR allow and deny lists, v4 and
//! v6), and how large a request body it takes.

use headroom_config::guard::{AccessConfig, IpNet};
use std::net::IpAddr;
use std::sync::Arc;

/// A route's access rules, compiled.
pub struct AccessRules {
    allow: Box<[IpNet]>,
    deny: Box<[IpNet]>,
    /// Bytes a request body may have on this route (`None`: the listener's limit).
    pub max_body: Option<u64>,
    trusted: Arc<[IpNet]>,
}

/// What the rules say of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// The client's address is denied (or not allowed): 403.
    Denied(IpAddr),
    /// The declared body is over `max_body`: 413.
    TooLarge(u64),
}

impl AccessRules {
    pub(crate) fn new(cfg: &AccessConfig, trusted: Arc<[IpNet]>) -> AccessRules {
        AccessRules {
            allow: cfg.allow.clone().into(),
            deny: cfg.deny.clone().into(),
            max_body: cfg.max_body,
            trusted,
        }
    }

    /// True when the rules check addresses (an empty allow and deny list checks none).
    pub fn checks_addresses(&self) -> bool {
        !self.allow.is_empty() || !self.deny.is_empty()
    }

    /// Checks the client (`peer`, through the trusted proxies) and the declared body size.
    /// Deny wins over allow; a non-empty allow list admits only what it lists.
    pub fn check(&self, peer: IpAddr, headers: &http::HeaderMap, declared_body: u64) -> Access {
        if self.checks_addresses() {
            let ip = crate::client::client_ip(&self.trusted, peer, headers);
            let listed = |nets: &[IpNet]| nets.iter().any(|n| n.contains(&ip));
            if listed(&self.deny) || (!self.allow.is_empty() && !listed(&self.allow)) {
                return Access::Denied(ip);
            }
        }
        match self.max_body {
            Some(max) if declared_body > max => Access::TooLarge(max),
            _ => Access::Allowed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn rules(allow: &[&str], deny: &[&str], max_body: Option<u64>) -> AccessRules {
        AccessRules::new(
            &AccessConfig {
                allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
                deny: deny.iter().map(|s| s.parse().unwrap()).collect(),
                max_body,
            },
            Arc::from(vec!["127.0.0.1/32".parse::<IpNet>().unwrap()]),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn deny_wins_and_an_allow_list_admits_only_what_it_lists() {
        let r = rules(&["10.0.0.0/8", "2001:db8::/32"], &["10.9.0.0/16"], None);
        let h = HeaderMap::new();
        assert_eq!(r.check(ip("10.1.2.3"), &h, 0), Access::Allowed);
        assert_eq!(
            r.check(ip("10.9.1.1"), &h, 0),
            Access::Denied(ip("10.9.1.1"))
        );
        assert_eq!(
            r.check(ip("192.0.2.1"), &h, 0),
            Access::Denied(ip("192.0.2.1"))
        );
        assert_eq!(r.check(ip("2001:db8::7"), &h, 0), Access::Allowed);
        assert_eq!(
            r.check(ip("::ffff:10.1.2.3"), &h, 0),
            Access::Allowed,
            "mapped v4"
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_forwarded_client_is_checked() {
        let r = rules(&[], &["198.51.100.0/24"], None);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.9".parse().unwrap());
        assert_eq!(
            r.check(ip("127.0.0.1"), &h, 0),
            Access::Denied(ip("198.51.100.9"))
        );
        assert_eq!(
            r.check(ip("203.0.113.1"), &h, 0),
            Access::Allowed,
            "an untrusted peer's X-Forwarded-For is not believed"
        );
    }

    #[test]
    fn a_declared_body_over_the_route_s_limit_is_refused() {
        let r = rules(&[], &[], Some(1024));
        let h = HeaderMap::new();
        assert_eq!(r.check(ip("10.0.0.1"), &h, 1024), Access::Allowed);
        assert_eq!(r.check(ip("10.0.0.1"), &h, 1025), Access::TooLarge(1024));
    }
}
