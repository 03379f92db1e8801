//! `[[postgres]]` (a PostgreSQL listener and the servers behind it) and its
//! `[[postgres.user]]` entries, as serde reads them.

use crate::units::Dur;
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

/// `[[postgres]]`: clients connect here; their queries run on pooled server connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Postgres {
    /// Default "postgres-N" (N: its place in the file).
    pub name: Option<String>,
    /// Where clients connect, like "127.0.0.1:6432".
    pub bind: Spanned<String>,
    /// The server queries run on, "host:port".
    pub primary: Spanned<String>,
    #[serde(default)]
    pub pool_mode: PoolMode,
    /// Server connections per (database, user) pair. Default 20.
    #[serde(default = "defaults::pool_size")]
    pub pool_size: usize,
    /// Server connections kept open even when idle, per pair. Default 0.
    #[serde(default)]
    pub min_idle: usize,
    /// How long a client waits for a server connection before it gets an error. Default 10s.
    #[serde(default = "defaults::queue_timeout")]
    pub queue_timeout: Dur,
    /// Connecting and logging in to a server. Default 5s.
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: Dur,
    /// A server connection older than this is closed when it comes back. Default 1h.
    #[serde(default = "defaults::server_lifetime")]
    pub server_lifetime: Dur,
    /// An idle server connection is closed after this long (down to `min_idle`). Default 10m.
    #[serde(default = "defaults::server_idle_timeout")]
    pub server_idle_timeout: Dur,
    /// Run on a server connection before another client gets it (session mode).
    /// Default "DISCARD ALL"; "" for none.
    #[serde(default = "defaults::server_reset_query")]
    pub server_reset_query: String,
    /// Client connections at once; more are refused with an error. Default 1000.
    #[serde(default = "defaults::max_client_conn")]
    pub max_client_conn: usize,
    /// The largest protocol message taken from a client. Default 64MiB.
    #[serde(default = "defaults::max_message")]
    pub max_message: crate::units::Size,
    /// Databases clients may ask for; empty: any the server has.
    #[serde(default)]
    pub databases: Vec<String>,
    #[serde(default)]
    pub user: Vec<Spanned<User>>,
}

/// When a server connection goes back to the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// At the end of each transaction (PgBouncer's `transaction`).
    #[default]
    Transaction,
    /// When the client disconnects.
    Session,
}

/// `[[postgres.user]]`: who may log in, and how headroom logs in to the servers for them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: Spanned<String>,
    /// The password clients give (checked by SCRAM-SHA-256) and headroom gives the servers.
    pub password: Spanned<String>,
}

mod defaults {
    use super::*;
    pub fn pool_size() -> usize {
        20
    }
    pub fn queue_timeout() -> Dur {
        Dur(Duration::from_secs(10))
    }
    pub fn connect_timeout() -> Dur {
        Dur(Duration::from_secs(5))
    }
    pub fn server_lifetime() -> Dur {
        Dur(Duration::from_secs(3600))
    }
    pub fn server_idle_timeout() -> Dur {
        Dur(Duration::from_secs(600))
    }
    pub fn server_reset_query() -> String {
        "DISCARD ALL".into()
    }
    pub fn max_client_conn() -> usize {
        1000
    }
    pub fn max_message() -> crate::units::Size {
        crate::units::Size(64 << 20)
    }
}
