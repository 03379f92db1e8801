//! Where notifications go: a webhook or an Alertmanager, by URL, checked once.

use http::Uri;
use std::fmt;
use std::str::FromStr;

/// One destination of notifications; every alert goes to every receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Receiver {
    /// POST Alertmanager's webhook payload (version "4") to this URL, one notification per
    /// group, as Alertmanager's `webhook_configs` would.
    Webhook {
        /// The URL posted to, as given.
        url: ReceiverUrl,
    },
    /// POST postable alerts to `<url>/api/v2/alerts` of this Alertmanager, which then
    /// groups, silences and routes them itself.
    Alertmanager {
        /// The Alertmanager's base URL (`/api/v2/alerts` is appended).
        url: ReceiverUrl,
    },
}

impl Receiver {
    /// A webhook receiver; fails on a URL that is not `http://` or `https://` with a host.
    pub fn webhook(url: &str) -> Result<Receiver, ReceiverError> {
        Ok(Receiver::Webhook { url: url.parse()? })
    }

    /// An Alertmanager receiver; fails on a URL that is not `http://` or `https://` with a
    /// host.
    pub fn alertmanager(url: &str) -> Result<Receiver, ReceiverError> {
        Ok(Receiver::Alertmanager { url: url.parse()? })
    }

    /// `"webhook"` or `"alertmanager"`: the kind, as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Receiver::Webhook { .. } => "webhook",
            Receiver::Alertmanager { .. } => "alertmanager",
        }
    }

    /// The URL each notification is posted to.
    pub(crate) fn post_url(&self) -> ReceiverUrl {
        match self {
            Receiver::Webhook { url } => url.clone(),
            Receiver::Alertmanager { url } => url.join("/api/v2/alerts"),
        }
    }

    /// The URL as configured (for stats and logs).
    pub fn url(&self) -> &ReceiverUrl {
        match self {
            Receiver::Webhook { url } | Receiver::Alertmanager { url } => url,
        }
    }
}

/// An `http://` or `https://` URL with a host, parsed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverUrl {
    text: String,
    uri: Uri,
}

impl ReceiverUrl {
    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub(crate) fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Whether the URL is `https://`.
    pub fn is_https(&self) -> bool {
        self.uri.scheme_str() == Some("https")
    }

    /// The host, without IPv6 brackets.
    pub(crate) fn host(&self) -> &str {
        let host = self.uri.host().unwrap_or_default();
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The port, explicit or the scheme's.
    pub(crate) fn port(&self) -> u16 {
        self.uri
            .port_u16()
            .unwrap_or(if self.is_https() { 443 } else { 80 })
    }

    /// This URL with `suffix` appended to its path (one `/` between them); the query, if
    /// any, is dropped.
    fn join(&self, suffix: &str) -> ReceiverUrl {
        let base = self.text.split(['?', '#']).next().unwrap_or_default();
        let text = format!("{}{suffix}", base.trim_end_matches('/'));
        // A valid URL with a path appended stays valid.
        match text.parse() {
            Ok(url) => url,
            Err(_) => self.clone(),
        }
    }
}

impl FromStr for ReceiverUrl {
    type Err = ReceiverError;

    fn from_str(text: &str) -> Result<ReceiverUrl, ReceiverError> {
        let uri: Uri = text
            .parse()
            .map_err(|e: http::uri::InvalidUri| ReceiverError::NotAUrl {
                url: text.to_string(),
                why: e.to_string(),
            })?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(ReceiverError::Scheme(text.to_string())),
        }
        match uri.host() {
            Some(h) if !h.is_empty() => {}
            _ => return Err(ReceiverError::NoHost(text.to_string())),
        }
        Ok(ReceiverUrl {
            text: text.to_string(),
            uri,
        })
    }
}

impl fmt::Display for ReceiverUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a receiver URL was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiverError {
    /// The text does not parse as a URL.
    NotAUrl {
        /// The URL as given.
        url: String,
        /// The parser's complaint.
        why: String,
    },
    /// Neither `http://` nor `https://`.
    Scheme(String),
    /// No host to connect to.
    NoHost(String),
}

impl fmt::Display for ReceiverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiverError::NotAUrl { url, why } => {
                write!(f, "alert receiver {url:?}: not a URL ({why})")
            }
            ReceiverError::Scheme(url) => write!(
                f,
                "alert receiver {url:?}: must start with http:// or https://"
            ),
            ReceiverError::NoHost(url) => write!(f, "alert receiver {url:?}: has no host"),
        }
    }
}

impl std::error::Error for ReceiverError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alertmanager_alerts_are_posted_under_api_v2() {
        let r = Receiver::alertmanager("http://am.example:9093/").unwrap();
        assert_eq!(
            r.post_url().as_str(),
            "http://am.example:9093/api/v2/alerts"
        );
        let r = Receiver::alertmanager("http://am.example/prefix").unwrap();
        assert_eq!(
            r.post_url().as_str(),
            "http://am.example/prefix/api/v2/alerts"
        );
    }

    #[test]
    fn a_webhook_is_posted_to_its_url_as_given() {
        let r = Receiver::webhook("http://hooks.example:8080/alert?token=x").unwrap();
        assert_eq!(
            r.post_url().as_str(),
            "http://hooks.example:8080/alert?token=x"
        );
        assert_eq!(r.post_url().port(), 8080);
    }

    #[test]
    fn urls_without_http_scheme_or_host_are_refused_with_the_url_named() {
        let err = Receiver::webhook("ftp://x/").unwrap_err();
        assert_eq!(
            err.to_string(),
            "alert receiver \"ftp://x/\": must start with http:// or https://"
        );
        assert!(matches!(
            Receiver::webhook("/just/a/path"),
            Err(ReceiverError::Scheme(_))
        ));
        assert!(matches!(
            Receiver::webhook("http:// bad"),
            Err(ReceiverError::NotAUrl { .. })
        ));
    }

    #[test]
    fn ipv6_hosts_lose_their_brackets_and_https_defaults_to_443() {
        let url: ReceiverUrl = "https://[::1]/hook".parse().unwrap();
        assert_eq!((url.host(), url.port(), url.is_https()), ("::1", 443, true));
    }
}
