//! What a Redis call can end in, and which of those mean "Redis is away" (they feed the breaker)
//! as opposed to "Redis answered no" (an application error: Redis is up).

use redis::{ErrorKind, RedisError, ServerErrorKind};
use std::fmt;
use std::time::Duration;

/// Why a call to Redis gave no value.
#[derive(Debug)]
pub enum Error {
    /// The target or options are unusable (a bad url, an empty seed list). Only
    /// [`crate::Redis::new`] returns it; the message names the url and what is wrong.
    Config(String),
    /// No answer within [`crate::Options::timeout`] (connecting included): Redis is stalled,
    /// overloaded, or still being connected to. Counts toward the breaker.
    Timeout(Duration),
    /// The breaker is open: Redis failed repeatedly, and this call was refused without being
    /// tried. Costs nothing; the breaker probes Redis again after its cooldown.
    Unavailable,
    /// Redis, or the connection to it, returned an error. Connection and protocol errors count
    /// toward the breaker; application errors (WRONGTYPE, a failing script, CROSSSLOT, a reply
    /// of the wrong type for `T`) do not: they mean Redis is up. See [`Error::is_unavailable`].
    Redis(RedisError),
}

impl Error {
    /// True when Redis could not be used: the breaker is open, the call timed out, or the
    /// connection failed (refused, reset, garbage on the wire, cluster down). A caller that
    /// treats Redis as optional (a cache tier: a miss; a limiter: its fallback) branches on
    /// this. False for [`Error::Config`] and for application errors, which are bugs or data
    /// problems to report rather than outages to ride out.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Unavailable | Error::Timeout(_) => true,
            Error::Redis(e) => is_outage(e),
            Error::Config(_) => false,
        }
    }

    /// True when the breaker refused the call without trying it.
    pub fn is_rejected(&self) -> bool {
        matches!(self, Error::Unavailable)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(msg) => write!(f, "redis: {msg}"),
            Error::Timeout(d) => write!(f, "redis did not answer within {d:?}"),
            Error::Unavailable => f.write_str(
                "redis unavailable: the breaker is open after consecutive failures; \
                 calls are refused until a probe succeeds",
            ),
            Error::Redis(e) => write!(f, "redis: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Redis(e) => Some(e),
            _ => None,
        }
    }
}

/// Whether `e` says Redis (or the way to it) is unusable, rather than that a command was wrong.
/// Outage: any I/O error (refused, reset, EOF, redis-rs's own timeouts), a reply that does not
/// parse (garbage on the wire), failed authentication, no connection to a cluster node, and the
/// server states that refuse every command for a while (LOADING, CLUSTERDOWN, MASTERDOWN,
/// TRYAGAIN). Everything else is Redis answering.
pub(crate) fn is_outage(e: &RedisError) -> bool {
    match e.kind() {
        ErrorKind::Io
        | ErrorKind::Parse
        | ErrorKind::AuthenticationFailed
        | ErrorKind::ClusterConnectionNotFound => true,
        ErrorKind::Server(kind) => matches!(
            kind,
            ServerErrorKind::BusyLoading
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::TryAgain
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_are_outages_and_answers_are_not() {
        let refused: RedisError =
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert!(Error::Redis(refused).is_unavailable());
        let down: RedisError = (ErrorKind::Server(ServerErrorKind::ClusterDown), "down").into();
        assert!(Error::Redis(down).is_unavailable());
        let wrongtype: RedisError = (
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "WRONGTYPE",
        )
            .into();
        assert!(!Error::Redis(wrongtype).is_unavailable());
        let cross: RedisError = (ErrorKind::Server(ServerErrorKind::CrossSlot), "cross").into();
        assert!(!Error::Redis(cross).is_unavailable());
        let ty: RedisError = (ErrorKind::UnexpectedReturnType, "not an int").into();
        assert!(!Error::Redis(ty).is_unavailable());
        assert!(Error::Timeout(Duration::from_millis(50)).is_unavailable());
        assert!(Error::Unavailable.is_unavailable() && Error::Unavailable.is_rejected());
        assert!(!Error::Config("x".into()).is_unavailable());
    }
}
