//! What can go wrong on the way to a replica, and what may be done about it. Every failure
//! of `forward` is a [`ProxyError`]: its [`ErrorKind`] says what happened, [`ProxyError::retry`]
//! whether another replica may be tried (read by the retry decision, never re-derived), and
//! [`ProxyError::blames_replica`] whether the replica's passive health hears of it.

use crate::body::BoxError;
use crate::pipeline::Answer;
use http::StatusCode;
use std::time::Duration;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Nothing listens on the replica's address: it is down. Unambiguous, so the replica is
    /// taken out at once.
    ConnectRefused,
    /// No connection within `connect_timeout`.
    ConnectTimeout,
    /// Any other failure to connect (unreachable, reset during an h2 handshake).
    ConnectFailed,
    /// `max_conns` connections to the replica stayed busy for `connect_timeout`: it is
    /// saturated, not failing (its health does not hear of it); another replica may have room.
    PoolFull,
    /// The connection broke before a complete response head.
    UpstreamBroken,
    /// No response head within `request_timeout` of the request's end.
    UpstreamTimeout,
    /// The client's body passed the listener's `max_body_bytes`.
    BodyTooLarge,
    /// The client's body broke off or was malformed.
    ClientBody,
    /// The client paused its body longer than the listener's `body_timeout`.
    ClientBodyTimeout,
}

/// Whether a failed attempt may be repeated on another replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrySafety {
    /// Nothing reached any upstream: any method may go to another replica, and it costs
    /// neither an attempt nor the retry budget (no extra load reached a replica).
    NothingSent,
    /// The replica may have seen (part of) the request: only methods in `retry.methods`
    /// whose body can be replayed.
    IfIdempotent,
    /// Another replica would not help: the client's fault, or a timeout (retrying would
    /// double the client's wait).
    Never,
}

/// A failed attempt: its kind, and the error underneath for the message and the log.
#[derive(Debug)]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub source: Option<BoxError>,
}

impl ProxyError {
    pub fn new(kind: ErrorKind, source: impl Into<BoxError>) -> Self {
        ProxyError {
            kind,
            source: Some(source.into()),
        }
    }

    pub fn bare(kind: ErrorKind) -> Self {
        ProxyError { kind, source: None }
    }

    pub fn retry(&self) -> RetrySafety {
        match self.kind {
            ErrorKind::ConnectRefused
            | ErrorKind::ConnectTimeout
            | ErrorKind::ConnectFailed
            | ErrorKind::PoolFull => RetrySafety::NothingSent,
            ErrorKind::UpstreamBroken => RetrySafety::IfIdempotent,
            ErrorKind::UpstreamTimeout
            | ErrorKind::BodyTooLarge
            | ErrorKind::ClientBody
            | ErrorKind::ClientBodyTimeout => RetrySafety::Never,
        }
    }

    /// False for the client's own faults: a slow or broken upload says nothing of the replica.
    pub fn blames_replica(&self) -> bool {
        !matches!(
            self.kind,
            ErrorKind::BodyTooLarge
                | ErrorKind::ClientBody
                | ErrorKind::ClientBodyTimeout
                | ErrorKind::PoolFull
        )
    }

    pub fn is_connect(&self) -> bool {
        self.retry() == RetrySafety::NothingSent
    }

    /// What the client hears. `replica` names the replica in upstream errors;
    /// `request_timeout` and `max_body_bytes` fill in the messages that cite them.
    pub fn answer(&self, replica: &str, request_timeout: Duration, max_body_bytes: u64) -> Answer {
        let cause = self
            .source
            .as_ref()
            .map_or(String::new(), |e| e.to_string());
        match self.kind {
            ErrorKind::ConnectRefused | ErrorKind::ConnectTimeout | ErrorKind::ConnectFailed => {
                Answer::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_connect_failed",
                    format!("replica {replica}: {cause}"),
                )
            }
            ErrorKind::PoolFull => Answer::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_busy",
                format!("replica {replica}: {cause}"),
            ),
            ErrorKind::UpstreamBroken => Answer::new(
                StatusCode::BAD_GATEWAY,
                "upstream_failed",
                format!("replica {replica}: {cause}"),
            ),
            ErrorKind::UpstreamTimeout => Answer::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("replica {replica} sent no response within {request_timeout:?}"),
            ),
            ErrorKind::BodyTooLarge => Answer::body_too_large(max_body_bytes),
            // The rest of the body cannot be told from a next request: close.
            ErrorKind::ClientBodyTimeout => Answer::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the request body could not be read: {cause}"),
            )
            .close(),
            ErrorKind::ClientBody => Answer::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the request body could not be read: {cause}"),
            )
            .close(),
        }
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(e) => write!(f, "{:?}: {e}", self.kind),
            None => write!(f, "{:?}", self.kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_before_sending_are_safe_for_every_method() {
        for kind in [
            ErrorKind::ConnectRefused,
            ErrorKind::ConnectTimeout,
            ErrorKind::ConnectFailed,
        ] {
            assert_eq!(ProxyError::bare(kind).retry(), RetrySafety::NothingSent);
        }
        assert_eq!(
            ProxyError::bare(ErrorKind::UpstreamBroken).retry(),
            RetrySafety::IfIdempotent
        );
        for kind in [
            ErrorKind::UpstreamTimeout,
            ErrorKind::BodyTooLarge,
            ErrorKind::ClientBody,
            ErrorKind::ClientBodyTimeout,
        ] {
            assert_eq!(
                ProxyError::bare(kind).retry(),
                RetrySafety::Never,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn the_clients_faults_are_not_the_replicas() {
        assert!(!ProxyError::bare(ErrorKind::ClientBodyTimeout).blames_replica());
        assert!(!ProxyError::bare(ErrorKind::BodyTooLarge).blames_replica());
        assert!(ProxyError::bare(ErrorKind::UpstreamTimeout).blames_replica());
        let a = ProxyError::bare(ErrorKind::ClientBodyTimeout).answer("r", Duration::ZERO, 1);
        assert_eq!((a.status, a.close), (StatusCode::REQUEST_TIMEOUT, true));
    }
}
