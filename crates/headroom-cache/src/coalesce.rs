//! Request coalescing: concurrent misses on one key make one upstream request. The first
//! becomes the fill's leader; the others wait (bounded) for its outcome — the stored entry,
//! or `None` at once when the response turned out uncacheable, failed, or was abandoned —
//! and then go upstream themselves if they must.

use crate::entry::Entry;
use crate::memory::KeyHasher;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// A fill's outcome as its waiters see it: `None` while it runs.
type Outcome = Option<Option<Arc<Entry>>>;

const SHARDS: usize = 16;

/// The fills in flight, by key hash. Sharded mutexes held only to insert or remove (never
/// across an await); only misses touch them.
#[derive(Default)]
pub struct Coalescer {
    shards: [Mutex<HashMap<u64, watch::Receiver<Outcome>, KeyHasher>>; SHARDS],
}

/// What joining a key's fill gave.
pub enum Join {
    /// Nobody was filling it: this request is the leader.
    Leader(FillGuard),
    /// Someone is: wait on this.
    Wait(watch::Receiver<Outcome>),
}

/// Held by a fill's leader: completing it hands the entry to the waiters; dropping it
/// uncompleted releases them with nothing.
pub struct FillGuard {
    coalescer: Arc<Coalescer>,
    hash: u64,
    tx: Option<watch::Sender<Outcome>>,
}

impl Coalescer {
    fn shard(&self, hash: u64) -> &Mutex<HashMap<u64, watch::Receiver<Outcome>, KeyHasher>> {
        &self.shards[(hash as usize) % SHARDS]
    }

    pub fn join(self: &Arc<Self>, hash: u64) -> Join {
        let mut map = self.shard(hash).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = map.get(&hash) {
            return Join::Wait(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(hash, rx);
        Join::Leader(FillGuard {
            coalescer: self.clone(),
            hash,
            tx: Some(tx),
        })
    }

    /// True while a fill of `hash` runs (a background refresh does not start a second one).
    #[cfg(test)]
    pub fn filling(&self, hash: u64) -> bool {
        self.shard(hash)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&hash)
    }

    /// Fills in flight.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

impl FillGuard {
    /// The fill stored `entry` (or, with `None`, decided not to store): waiters wake now.
    pub fn complete(mut self, entry: Option<Arc<Entry>>) {
        self.finish(entry);
    }

    fn finish(&mut self, entry: Option<Arc<Entry>>) {
        let Some(tx) = self.tx.take() else { return };
        self.coalescer
            .shard(self.hash)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.hash);
        // Nobody waits (the common case): nothing to wake.
        if tx.receiver_count() > 0 {
            tx.send_replace(Some(entry));
        }
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        self.finish(None);
    }
}

/// Waits up to `limit` for the fill: its entry, or `None` (not stored, abandoned, or the
/// wait ran out: the waiter goes upstream itself).
pub async fn wait(mut rx: watch::Receiver<Outcome>, limit: Duration) -> Option<Arc<Entry>> {
    let waited = tokio::time::timeout(limit, rx.wait_for(|o| o.is_some())).await;
    match waited {
        Ok(Ok(o)) => o.clone().flatten(),
        // The leader's sender went away without a value: it was dropped; or time ran out.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waiters_get_the_leaders_entry_and_an_abandoned_fill_releases_them_at_once() {
        let c = Arc::new(Coalescer::default());
        let Join::Leader(guard) = c.join(7) else {
            panic!("first is the leader")
        };
        let Join::Wait(rx) = c.join(7) else {
            panic!("second waits")
        };
        assert!(c.filling(7));
        let waiter = tokio::spawn(wait(rx, Duration::from_secs(10)));
        tokio::task::yield_now().await;
        drop(guard);
        let start = tokio::time::Instant::now();
        assert!(waiter.await.unwrap().is_none());
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "released at once, not at the limit"
        );
        assert!(!c.filling(7));
        assert!(matches!(c.join(7), Join::Leader(_)), "a new fill can start");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_after_its_limit() {
        let c = Arc::new(Coalescer::default());
        let Join::Leader(_guard) = c.join(1) else {
            panic!()
        };
        let Join::Wait(rx) = c.join(1) else { panic!() };
        let start = tokio::time::Instant::now();
        assert!(wait(rx, Duration::from_secs(3)).await.is_none());
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }
}
