//! Per-worker shards: every worker thread bumps its own cache line, readers sum them.
//!
//! A counter that every worker increments on every request is one cache line that moves
//! from core to core at each increment (each `fetch_add` needs the line exclusive). With one
//! shard per worker the line stays in its worker's cache; a scrape, which is rare, pays for
//! reading all of them.

use std::cell::Cell;

thread_local! {
    /// This thread's worker index; `usize::MAX` (the shared last shard) until [`set_worker`].
    static WORKER: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Marks the calling thread as worker `index`: from now on its metric updates go to shard
/// `index` of every sharded metric. Call once per worker thread, before it serves traffic,
/// with indices `0..workers` of a registry made by `Registry::with_shards(workers + 1)`.
/// Threads that never call it, and indices past the registry's workers, share the last
/// shard (still correct, only not contention-free). Cost: one thread-local store.
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// A value alone on its cache line(s), so two shards never share one. 128 bytes where the
/// hardware moves lines in pairs (x86-64's adjacent-line prefetcher) or has 128-byte lines
/// (Apple's arm64 cores), as crossbeam's `CachePadded`; 64 elsewhere.
#[derive(Debug, Default)]
#[cfg_attr(any(target_arch = "x86_64", target_arch = "aarch64"), repr(align(128)))]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    repr(align(64))
)]
struct Padded<T>(T);

/// One `T` per worker and, last, one for every other thread, each on its own cache line.
/// Memory: shards × 128 bytes (x86-64) per counter, × 256 per histogram.
#[derive(Debug)]
pub(crate) struct Shards<T>(Box<[Padded<T>]>);

impl<T: Default> Shards<T> {
    /// `len` shards (at least one): `len - 1` for workers, the last for the others.
    pub(crate) fn new(len: usize) -> Self {
        Shards((0..len.max(1)).map(|_| Padded::default()).collect())
    }
}

impl<T> Shards<T> {
    /// The calling thread's shard. Cost: a thread-local load and one bounds check, about
    /// six instructions more than an unsharded atomic; no cache line shared by workers.
    #[inline]
    pub(crate) fn local(&self) -> &T {
        match self.0.get(WORKER.with(|w| w.get())) {
            Some(shard) => &shard.0,
            None => self.others(),
        }
    }

    /// The last shard: threads that are not workers (index `usize::MAX`), and worker
    /// indices past the registry's workers.
    #[cold]
    fn others(&self) -> &T {
        // `new` makes at least one shard.
        &self.0[self.0.len() - 1].0
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|p| &p.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_writes_its_own_shard_and_others_share_the_last() {
        let shards: Shards<Cell<u32>> = Shards::new(3);
        let bump = |s: &Shards<Cell<u32>>| s.local().set(s.local().get() + 1);
        bump(&shards); // not a worker yet: the last shard
        set_worker(0);
        bump(&shards);
        set_worker(1);
        bump(&shards);
        bump(&shards);
        set_worker(7); // past the workers: the last shard again
        bump(&shards);
        let got: Vec<u32> = shards.iter().map(Cell::get).collect();
        assert_eq!(got, [1, 2, 2]);
    }

    #[test]
    fn shards_do_not_share_cache_lines() {
        let shards: Shards<u64> = Shards::new(3);
        let at: Vec<usize> = shards.iter().map(|s| s as *const u64 as usize).collect();
        for pair in at.windows(2) {
            assert!(pair[1] - pair[0] >= 64, "{at:?}");
        }
        assert!(at.iter().all(|a| a % 64 == 0), "{at:?}");
    }
}
