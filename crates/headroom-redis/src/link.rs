//! The connection to Redis, made lazily in the background and re-made after it breaks.
//!
//! Why not `redis::aio::ConnectionManager`: its first connection is a shared future that, once
//! failed with anything but an I/O error (a handshake that does not parse, a failed AUTH), is
//! never retried; it cannot be told to drop a connection that only times out; and there is
//! nothing like it for a cluster. [`Connector`] does the same job for both: one connect attempt
//! in flight at a time, run in its own task so that a caller's timeout does not cancel it,
//! callers waiting for it no longer than their own timeout.

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::sync::watch;

/// An established connection: cheap to clone (a channel to a driver task), safe to drop mid-call.
#[derive(Clone)]
pub(crate) enum Link {
    Standalone(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Standalone(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Standalone(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

/// How to make a [`Link`].
pub(crate) enum Dialer {
    Standalone(Client, AsyncConnectionConfig),
    Cluster(ClusterClient),
}

impl Dialer {
    async fn dial(&self) -> Result<Link, RedisError> {
        match self {
            Dialer::Standalone(client, config) => client
                .get_multiplexed_async_connection_with_config(config)
                .await
                .map(Link::Standalone),
            Dialer::Cluster(client) => client.get_async_connection().await.map(Link::Cluster),
        }
    }
}

enum State {
    /// No connection; the next call starts a connect.
    Idle,
    /// A connect is in flight; its task drops the sender when it is done.
    Connecting(watch::Receiver<()>),
    Ready {
        link: Link,
        generation: u64,
    },
}

struct Slot {
    state: State,
    generation: u64,
    /// Why the last connect failed: what the callers that waited for it return.
    last_error: Option<RedisError>,
}

/// Holds the current [`Link`]. Cost per call: a read lock (one atomic, never held across an
/// await) to clone the link; the write lock is taken only to start a connect, finish one, or
/// drop a broken link.
pub(crate) struct Connector {
    dialer: Dialer,
    connect_timeout: Duration,
    slot: RwLock<Slot>,
}

impl Connector {
    pub(crate) fn new(dialer: Dialer, connect_timeout: Duration) -> Self {
        Connector {
            dialer,
            connect_timeout,
            slot: RwLock::new(Slot {
                state: State::Idle,
                generation: 0,
                last_error: None,
            }),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Slot> {
        // A poisoned lock only means a thread panicked while holding it; the slot is still a
        // valid value (each write is one assignment).
        self.slot.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Slot> {
        self.slot.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The current link and its generation (for [`Connector::invalidate`]), connecting first if
    /// there is none. Unbounded by itself: the caller runs it under its timeout. Waits for at
    /// most one connect attempt and returns that attempt's error if it failed.
    pub(crate) async fn link(self: &Arc<Self>) -> Result<(Link, u64), RedisError> {
        if let State::Ready { link, generation } = &self.read().state {
            return Ok((link.clone(), *generation));
        }
        let mut done = {
            let mut slot = self.write();
            match &slot.state {
                State::Ready { link, generation } => return Ok((link.clone(), *generation)),
                State::Connecting(done) => done.clone(),
                State::Idle => {
                    let done = self.start_connect()?;
                    slot.state = State::Connecting(done.clone());
                    done
                }
            }
        };
        // Err only: the sender is dropped when the attempt ends, whatever its outcome.
        let _ = done.changed().await;
        let slot = self.read();
        match &slot.state {
            State::Ready { link, generation } => Ok((link.clone(), *generation)),
            _ => Err(slot.last_error.clone().unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotConnected, "redis: connect failed")
                    .into()
            })),
        }
    }

    /// Spawns the connect task. Called with the write lock held and the state Idle, so at
    /// most one attempt is ever in flight.
    fn start_connect(self: &Arc<Self>) -> Result<watch::Receiver<()>, RedisError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            RedisError::from((
                redis::ErrorKind::Client,
                "headroom-redis must be called from within a tokio runtime",
            ))
        })?;
        let (sender, receiver) = watch::channel(());
        let this = Arc::clone(self);
        runtime.spawn(async move {
            // If this task is dropped before it finishes (runtime shutdown), the guard puts the
            // slot back to Idle so that the next call connects again.
            let attempt = Attempt {
                connector: &this,
                _done: sender,
                finished: false,
            };
            let result = match tokio::time::timeout(this.connect_timeout, this.dialer.dial()).await
            {
                Ok(result) => result,
                Err(_) => Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect timed out after {:?}", this.connect_timeout),
                ))),
            };
            attempt.finish(result);
        });
        Ok(receiver)
    }

    /// Drops the link of `generation` if it is still the current one: it broke, and the next
    /// call connects again.
    pub(crate) fn invalidate(&self, generation: u64) {
        let mut slot = self.write();
        if matches!(slot.state, State::Ready { generation: g, .. } if g == generation) {
            slot.state = State::Idle;
        }
    }

    /// Drops the current link, whatever it is: the breaker opened, so the probe starts afresh
    /// (a connection that only times out, to a peer that vanished, is never reported broken).
    pub(crate) fn invalidate_current(&self) {
        let mut slot = self.write();
        if matches!(slot.state, State::Ready { .. }) {
            slot.state = State::Idle;
        }
    }

    /// Starts connecting now if nobody has yet (from [`crate::Redis::new`], when it runs inside a
    /// runtime), so the first call finds the connection made.
    pub(crate) fn warm_up(self: &Arc<Self>) {
        let mut slot = self.write();
        if matches!(slot.state, State::Idle) {
            if let Ok(done) = self.start_connect() {
                slot.state = State::Connecting(done);
            }
        }
    }
}

/// One connect attempt; updates the slot before its sender is dropped, so that a waiter woken
/// by the drop finds the outcome.
struct Attempt<'a> {
    connector: &'a Connector,
    _done: watch::Sender<()>,
    finished: bool,
}

impl Attempt<'_> {
    fn finish(mut self, result: Result<Link, RedisError>) {
        let mut slot = self.connector.write();
        match result {
            Ok(link) => {
                slot.generation += 1;
                slot.state = State::Ready {
                    link,
                    generation: slot.generation,
                };
                slot.last_error = None;
            }
            Err(e) => {
                tracing::debug!(error = %e, "redis connect failed");
                slot.state = State::Idle;
                slot.last_error = Some(e);
            }
        }
        self.finished = true;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let mut slot = self.connector.write();
            if matches!(slot.state, State::Connecting(_)) {
                slot.state = State::Idle;
            }
        }
        // `_done` is dropped after this body: waiters wake to a settled slot.
    }
}
