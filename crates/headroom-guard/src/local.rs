//! The in-memory limiter: one TAT per key, in sharded maps bounded in keys.
//!
//! A key is stored as a seeded XXH3 of its bytes (16 bytes an entry whatever the key's
//! length; the per-process seed keeps clients from choosing keys that collide). Idle keys
//! cost nothing to forget: a TAT in the past is the same as no entry, so a full shard first
//! drops those, then the keys closest to idle (the smallest TATs), an LRU by what matters
//! here. A forgotten key starts whole again: eviction can only let a key through, never
//! limit one that should pass.

use crate::gcra::{decide, Decision, Quota};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::time::Instant;

/// One shard: key hash → TAT.
type Tats = HashMap<u64, u64, BuildHasherDefault<Prehashed>>;

/// Shards of the key map: enough that two worker threads rarely meet on one lock.
const SHARDS: usize = 16;

/// One limit's state in this process.
pub struct LocalLimiter {
    quota: Quota,
    base: Instant,
    /// The TAT of the route-wide key (`key = "route"`): one atomic, no map.
    whole: AtomicU64,
    shards: Box<[Mutex<Tats>]>,
    per_shard: usize,
    seed: u64,
}

impl LocalLimiter {
    /// `max_keys`: distinct keys kept (spread over the shards); at least one per shard.
    pub fn new(quota: Quota, max_keys: usize) -> LocalLimiter {
        LocalLimiter {
            quota,
            base: Instant::now(),
            whole: AtomicU64::new(0),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            seed: random_seed(),
        }
    }

    /// Nanoseconds since this limiter began (tokio's clock: paused time in tests).
    pub fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Decides one request on `key` (`None`: the route as a whole) at `now`.
    pub fn check(&self, key: Option<&[u8]>, now: u64) -> Decision {
        self.check_with(&self.quota, key, now)
    }

    /// [`LocalLimiter::check`] against another quota on the same state (the Redis
    /// fallback's share of a shared limit).
    pub fn check_with(&self, quota: &Quota, key: Option<&[u8]>, now: u64) -> Decision {
        // A fresh key's TAT is 0, which `decide` reads as "now"; a stored TAT is at least
        // one interval, never 0.
        let Some(key) = key else {
            let mut tat = self.whole.load(Ordering::Relaxed);
            loop {
                let (d, next) = decide(quota, tat, now);
                let Some(next) = next else { return d };
                match self.whole.compare_exchange_weak(
                    tat,
                    next,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return d,
                    Err(seen) => tat = seen,
                }
            }
        };
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(key, self.seed);
        let shard = &self.shards[(h as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let tat = map.get(&h).copied().unwrap_or(0);
        let (d, next) = decide(quota, tat, now);
        if let Some(next) = next {
            if tat == 0 && map.len() >= self.per_shard {
                make_room(&mut map, now, self.per_shard);
            }
            map.insert(h, next);
        }
        d
    }

    /// Keys held now, all shards.
    #[cfg(test)]
    pub fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// A full shard: forget idle keys; if that is not enough, the eighth closest to idle.
fn make_room(map: &mut Tats, now: u64, cap: usize) {
    map.retain(|_, tat| *tat > now);
    if map.len() < cap {
        return;
    }
    let mut tats: Vec<u64> = map.values().copied().collect();
    let cut = (tats.len() / 8).max(1);
    let (_, &mut threshold, _) = tats.select_nth_unstable(cut - 1);
    let mut dropped = 0;
    map.retain(|_, tat| {
        if *tat <= threshold && dropped < cut {
            dropped += 1;
            false
        } else {
            true
        }
    });
}

pub(crate) fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x6865_6164_726f_6f6du64)
}

/// The map's keys are XXH3 values already: hashing them again would be wasted work.
#[derive(Default)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed with this; fold anything else in all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const S: u64 = 1_000_000_000;

    fn passed(l: &LocalLimiter, key: Option<&[u8]>, now: u64, n: u32) -> u32 {
        (0..n).map(|_| u32::from(l.check(key, now).allowed())).sum()
    }

    #[test]
    fn each_key_has_its_own_limit() {
        let l = LocalLimiter::new(Quota::new(3, Duration::from_secs(1), 0), 1000);
        assert_eq!(passed(&l, Some(b"10.0.0.1"), S, 10), 3);
        assert_eq!(passed(&l, Some(b"10.0.0.2"), S, 10), 3);
        assert_eq!(
            passed(&l, None, S, 10),
            3,
            "the route-wide key is a key of its own"
        );
        assert_eq!(passed(&l, Some(b"10.0.0.1"), S, 10), 0);
    }

    #[test]
    fn a_flood_of_distinct_keys_keeps_memory_at_its_bound() {
        let l = LocalLimiter::new(Quota::new(1, Duration::from_secs(60), 0), 1600);
        for i in 0..100_000u32 {
            assert!(l.check(Some(&i.to_be_bytes()), S).allowed());
        }
        assert!(l.keys() <= 1600, "{} keys held", l.keys());
        assert!(l.keys() >= 1400, "it keeps what fits: {}", l.keys());
    }

    #[test]
    fn idle_keys_are_dropped_before_busy_ones() {
        // One shard's worth: cap 16 keys over 16 shards is 1 per shard, so use a big cap
        // and check that a busy key survives a flood of one-off keys later in time.
        let l = LocalLimiter::new(Quota::new(2, Duration::from_secs(100), 0), 16 * 64);
        // The busy key has used its burst at t=1s; its TAT is 100 s ahead.
        assert_eq!(passed(&l, Some(b"busy"), S, 5), 2);
        // One-off keys at t=2s..: each TAT is 50 s ahead of its own request.
        for i in 0..10_000u32 {
            l.check(Some(&i.to_be_bytes()), 2 * S + u64::from(i));
        }
        assert_eq!(
            passed(&l, Some(b"busy"), 3 * S, 5),
            0,
            "the busy key is still limited: it was not evicted"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_is_tokio_s_so_paused_time_drives_it() {
        let l = LocalLimiter::new(Quota::new(1, Duration::from_secs(10), 0), 100);
        assert!(l.check(Some(b"k"), l.now()).allowed());
        assert!(!l.check(Some(b"k"), l.now()).allowed());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(l.check(Some(b"k"), l.now()).allowed());
    }
}
