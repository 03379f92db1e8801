//! Picks a replica for a request: weighted round-robin, least-requests (power of two
//! choices), peak-EWMA (power of two choices over latency x load, the default), or
//! consistent hashing. Every algorithm skips unavailable and already-tried replicas,
//! honours slow start, and allocates nothing.

use crate::replica::Replica;
use headroom_config::Balance;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Virtual nodes per unit of weight on the hash ring: enough for an even spread
/// (±10% at 3 replicas) while a ring of 100 replicas stays under 2 MB.
const VNODES: u32 = 160;

/// Replicas already tried by this request (bit i = replica i; replicas past 64 are never excluded).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tried(u64);

impl Tried {
    pub fn add(&mut self, i: usize) {
        if i < 64 {
            self.0 |= 1 << i;
        }
    }
    pub fn has(&self, i: usize) -> bool {
        i < 64 && self.0 & (1 << i) != 0
    }
}

#[derive(Debug)]
pub enum Balancer {
    RoundRobin {
        next: AtomicUsize,
        schedule: Vec<u32>,
    },
    LeastRequests,
    P2cEwma,
    Hash {
        ring: Vec<(u64, u32)>,
    },
}

pub fn hash_of(value: impl Hash) -> u64 {
    // SipHash with fixed keys: stable across processes, so every instance hashes alike.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

impl Balancer {
    pub fn new(kind: Balance, replicas: &[Arc<Replica>]) -> Self {
        let weights: Vec<u32> = replicas
            .iter()
            .map(|r| r.weight.load(Relaxed).max(1))
            .collect();
        match kind {
            Balance::RoundRobin => Balancer::RoundRobin {
                next: AtomicUsize::new(0),
                schedule: smooth_wrr_schedule(&weights),
            },
            Balance::LeastRequests => Balancer::LeastRequests,
            Balance::P2cEwma => Balancer::P2cEwma,
            Balance::Hash => {
                let mut ring = Vec::new();
                for (i, r) in replicas.iter().enumerate() {
                    for v in 0..VNODES * weights[i] {
                        ring.push((hash_of((&*r.label, v)), i as u32));
                    }
                }
                ring.sort_unstable();
                Balancer::Hash { ring }
            }
        }
    }

    /// The index of the replica to use, or None when no replica is available.
    /// `key` is the request's hash key (only read by `Hash`).
    pub fn pick(
        &self,
        replicas: &[Arc<Replica>],
        tried: Tried,
        key: Option<u64>,
        now: u64,
        slow_start: Duration,
    ) -> Option<usize> {
        let usable = |i: usize| !tried.has(i) && replicas[i].is_available(now);
        let n = replicas.len();
        match self {
            Balancer::RoundRobin { next, schedule } => {
                let start = next.fetch_add(1, Relaxed);
                let mut fallback = None;
                for k in 0..schedule.len() {
                    let i = schedule[(start + k) % schedule.len()] as usize;
                    if usable(i) {
                        let f = replicas[i].slow_start_factor(now, slow_start);
                        if f >= 1.0 || fastrand::f64() < f {
                            return Some(i);
                        }
                        fallback.get_or_insert(i);
                    }
                }
                fallback
            }
            Balancer::LeastRequests | Balancer::P2cEwma => {
                let available = (0..n).filter(|&i| usable(i)).count();
                let nth_usable = |k: usize| (0..n).filter(|&i| usable(i)).nth(k);
                match available {
                    0 => None,
                    1 => nth_usable(0),
                    _ => {
                        let a = fastrand::usize(..available);
                        let mut b = fastrand::usize(..available - 1);
                        if b >= a {
                            b += 1;
                        }
                        let (a, b) = (nth_usable(a)?, nth_usable(b)?);
                        let cost = |i: usize| {
                            let r = &replicas[i];
                            let load = (r.inflight.get().max(0) + 1) as f64;
                            let scale = f64::from(r.weight.load(Relaxed).max(1))
                                * r.slow_start_factor(now, slow_start);
                            match self {
                                Balancer::P2cEwma => r.ewma() * load / scale,
                                _ => load / scale,
                            }
                        };
                        Some(if cost(a) <= cost(b) { a } else { b })
                    }
                }
            }
            Balancer::Hash { ring } => {
                if ring.is_empty() {
                    return None;
                }
                let key = key.unwrap_or_else(|| fastrand::u64(..));
                let start = ring.partition_point(|(h, _)| *h < key);
                (0..ring.len())
                    .map(|k| ring[(start + k) % ring.len()].1 as usize)
                    .find(|&i| usable(i))
            }
        }
    }
}

/// Interleaves indices by weight so heavy replicas are spread out (nginx's smooth WRR):
/// weights 5,1,1 give a a b a c a a rather than a a a a a b c.
fn smooth_wrr_schedule(weights: &[u32]) -> Vec<u32> {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(weights) {
            *c += i64::from(*w);
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, -(*i as i64)))
            .unwrap_or((0, &0));
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use headroom_telemetry::Registry;

    fn replicas(weights: &[u32]) -> Vec<Arc<Replica>> {
        let reg = Registry::new();
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let label = format!("127.0.0.1:{}", 9000 + i);
                Arc::new(Replica::new(
                    "s",
                    &label,
                    label.parse().unwrap(),
                    *w,
                    Duration::from_millis(1),
                    1,
                    &reg,
                ))
            })
            .collect()
    }

    fn counts(b: &Balancer, rs: &[Arc<Replica>], n: usize) -> Vec<usize> {
        let mut c = vec![0; rs.len()];
        for i in 0..n {
            let key = Some(hash_of(i));
            c[b.pick(rs, Tried::default(), key, 1, Duration::ZERO)
                .unwrap()] += 1;
        }
        c
    }

    #[test]
    fn smooth_wrr_interleaves() {
        assert_eq!(smooth_wrr_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn round_robin_follows_weights_exactly() {
        let rs = replicas(&[1, 2, 1]);
        let b = Balancer::new(Balance::RoundRobin, &rs);
        assert_eq!(counts(&b, &rs, 400), vec![100, 200, 100]);
    }

    #[test]
    fn least_requests_avoids_the_busy_replica() {
        let rs = replicas(&[1, 1]);
        rs[0].inflight.set(10);
        let b = Balancer::new(Balance::LeastRequests, &rs);
        assert_eq!(counts(&b, &rs, 100), vec![0, 100]);
    }

    #[test]
    fn p2c_ewma_prefers_the_fast_replica() {
        let rs = replicas(&[1, 1, 1]);
        rs[2].observe_latency(Duration::from_millis(100), 2);
        let b = Balancer::new(Balance::P2cEwma, &rs);
        let c = counts(&b, &rs, 3000);
        // The slow one only wins when it is drawn twice, which p2c never does.
        assert_eq!(c[2], 0, "{c:?}");
    }

    #[test]
    fn tried_and_unavailable_replicas_are_skipped() {
        let rs = replicas(&[1, 1, 1]);
        rs[0].record_check(false, 1, 1);
        for kind in [
            Balance::RoundRobin,
            Balance::LeastRequests,
            Balance::P2cEwma,
            Balance::Hash,
        ] {
            let b = Balancer::new(kind, &rs);
            let mut tried = Tried::default();
            tried.add(1);
            for k in 0..50 {
                assert_eq!(
                    b.pick(&rs, tried, Some(k), 1, Duration::ZERO),
                    Some(2),
                    "{kind:?}"
                );
            }
            tried.add(2);
            assert_eq!(
                b.pick(&rs, tried, Some(1), 1, Duration::ZERO),
                None,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn consistent_hash_moves_about_one_nth_of_keys_when_a_replica_leaves() {
        let rs = replicas(&[1, 1, 1, 1]);
        let b = Balancer::new(Balance::Hash, &rs);
        let before: Vec<usize> = (0..10_000u64)
            .map(|k| {
                b.pick(&rs, Tried::default(), Some(hash_of(k)), 1, Duration::ZERO)
                    .unwrap()
            })
            .collect();
        let mut spread = [0usize; 4];
        before.iter().for_each(|i| spread[*i] += 1);
        assert!(
            spread.iter().all(|c| (1500..3500).contains(c)),
            "{spread:?}"
        );
        rs[3].record_check(false, 1, 1);
        let moved = (0..10_000u64)
            .filter(|k| {
                let after = b
                    .pick(&rs, Tried::default(), Some(hash_of(k)), 1, Duration::ZERO)
                    .unwrap();
                after != before[*k as usize]
            })
            .count();
        // Only the keys of the replica that left move: ~1/4.
        assert_eq!(moved, spread[3]);
    }
}
