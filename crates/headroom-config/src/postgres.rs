//! The SQL plane's typed config: `[[postgres]]`.

use std::net::SocketAddr;
use std::time::Duration;

pub use crate::model::postgres::PoolMode;

/// `[[postgres]]`: one listener, its pools and the server behind them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub primary: SocketAddr,
    pub pool_mode: PoolMode,
    /// At least 1.
    pub pool_size: usize,
    /// At most `pool_size`.
    pub min_idle: usize,
    pub queue_timeout: Duration,
    pub connect_timeout: Duration,
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    /// `None`: nothing is run between clients.
    pub server_reset_query: Option<String>,
    pub max_client_conn: usize,
    pub max_message: usize,
    /// Empty: any.
    pub databases: Vec<String>,
    pub users: Vec<PostgresUser>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresUser {
    pub name: String,
    pub password: String,
}
