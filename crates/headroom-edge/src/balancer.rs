//! Picks a replica for a request: weighted round-robin, least-requests (power of two
//! choices), peak-EWMA (power of two choices over latency x load, the default), or
//! consistent hashing. Every algorithm skips unavailable and already-tried replicas,
//! honours slow start, and allocates nothing.
//!
//! Weights are clamped to `1..=MAX_WEIGHT` whatever their source (the config refuses others;
//! the admin API may not), so no weight can overflow the ring or blow up the schedule.
//!
//! Consistent hashing is XXH3-64 with seed 0 over specified bytes (see [`hash_bytes`] and
//! [`ring_point`]), not `std`'s `DefaultHasher`, whose algorithm may change between Rust
//! releases: instances built apart must send a key to the same replica.

use crate::replica::Replica;
use headroom_config::{Balance, MAX_WEIGHT};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Virtual nodes per unit of weight on the hash ring: enough for an even spread
/// (±10% at 3 replicas) while a ring of 100 replicas of weight 1 is 16,000 points (256 KiB).
const VNODES: u32 = 160;

/// The most points a hash ring holds: 2^18, 4 MiB at 16 bytes a point, sorted in tens of
/// milliseconds on a snapshot build. Below it a replica has `160 × weight` points; above it
/// every replica's count is scaled down in proportion (at least 1 point each), which keeps
/// the shares and costs a little evenness. Reached from about 1,640 units of weight in all
/// (e.g. 2 replicas of weight 1000).
pub const MAX_RING_POINTS: usize = 1 << 18;

/// The longest weighted round-robin schedule: 2^16 slots (256 KiB). Weights are first divided
/// by their greatest common divisor; a schedule still longer is scaled down in proportion.
/// Building it costs slots × replicas steps.
pub const MAX_SCHEDULE: usize = 1 << 16;

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
        /// (point, replica index), sorted by point.
        ring: Vec<(u64, u32)>,
    },
}

/// The hash of a request's key: XXH3-64, seed 0, over exactly these bytes (a header's or a
/// cookie's value; for the client IP see `headers::hash_key`). Specified, so stable across
/// builds, Rust releases and instances. Costs ~10 ns for a short key.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Point `vnode` of the replica labelled `label` on the hash ring: XXH3-64 (seed 0) of the
/// bytes `label ++ "#" ++ vnode in decimal`, e.g. `127.0.0.1:9001#0`. The label is the
/// replica as written in the config, so every instance with the same config builds the same
/// ring.
pub fn ring_point(label: &str, vnode: u32) -> u64 {
    ring_point_in(&mut Vec::new(), label, vnode)
}

fn ring_point_in(scratch: &mut Vec<u8>, label: &str, vnode: u32) -> u64 {
    scratch.clear();
    scratch.extend_from_slice(label.as_bytes());
    scratch.push(b'#');
    scratch.extend_from_slice(itoa::Buffer::new().format(vnode).as_bytes());
    hash_bytes(scratch)
}

/// A replica's weight as the balancer uses it: clamped to `1..=MAX_WEIGHT`.
fn weight(r: &Replica) -> u32 {
    r.weight.load(Relaxed).clamp(1, MAX_WEIGHT)
}

/// Points each replica gets on the ring: `VNODES × weight`, scaled down to fit
/// `MAX_RING_POINTS`.
fn ring_points(weights: &[u32]) -> Vec<u32> {
    let full = |w: u32| u64::from(w) * u64::from(VNODES);
    let total: u64 = weights.iter().map(|w| full(*w)).sum();
    let cap = MAX_RING_POINTS as u64;
    weights
        .iter()
        .map(|w| {
            if total <= cap {
                full(*w) as u32
            } else {
                // full ≤ 160,000 and cap = 2^18: the product fits in u64 with room to spare.
                (full(*w) * cap / total).max(1) as u32
            }
        })
        .collect()
}

impl Balancer {
    /// Builds the balancer for `replicas` (at snapshot build, not per request). Weights are
    /// clamped to `1..=MAX_WEIGHT`; the round-robin schedule and the hash ring are bounded by
    /// `MAX_SCHEDULE` and `MAX_RING_POINTS`.
    pub fn new(kind: Balance, replicas: &[Arc<Replica>]) -> Self {
        let weights: Vec<u32> = replicas.iter().map(|r| weight(r)).collect();
        match kind {
            Balance::RoundRobin => Balancer::RoundRobin {
                next: AtomicUsize::new(0),
                schedule: smooth_wrr_schedule(&schedule_weights(&weights)),
            },
            Balance::LeastRequests => Balancer::LeastRequests,
            Balance::P2cEwma => Balancer::P2cEwma,
            Balance::Hash => {
                let points = ring_points(&weights);
                let mut ring = Vec::with_capacity(points.iter().map(|p| *p as usize).sum());
                let mut scratch = Vec::new();
                for (i, r) in replicas.iter().enumerate() {
                    for v in 0..points[i] {
                        ring.push((ring_point_in(&mut scratch, &r.label, v), i as u32));
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
                            let scale = f64::from(weight(r)) * r.slow_start_factor(now, slow_start);
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

/// Weights for the round-robin schedule: divided by their greatest common divisor (equal
/// weights give one slot each), then scaled down in proportion if they still add up to more
/// than `MAX_SCHEDULE` slots.
fn schedule_weights(weights: &[u32]) -> Vec<u32> {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = weights.iter().fold(0, |g, w| gcd(g, *w)).max(1);
    let reduced: Vec<u32> = weights.iter().map(|w| w / g).collect();
    let total: u64 = reduced.iter().map(|w| u64::from(*w)).sum();
    let cap = MAX_SCHEDULE as u64;
    if total <= cap {
        return reduced;
    }
    reduced
        .iter()
        .map(|w| (u64::from(*w) * cap / total).max(1) as u32)
        .collect()
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
            let key = Some(hash_bytes(&i.to_le_bytes()));
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
                b.pick(
                    &rs,
                    Tried::default(),
                    Some(hash_bytes(&k.to_le_bytes())),
                    1,
                    Duration::ZERO,
                )
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
                    .pick(
                        &rs,
                        Tried::default(),
                        Some(hash_bytes(&k.to_le_bytes())),
                        1,
                        Duration::ZERO,
                    )
                    .unwrap();
                after != before[*k as usize]
            })
            .count();
        // Only the keys of the replica that left move: ~1/4.
        assert_eq!(moved, spread[3]);
    }

    /// Fixed vectors, computed independently with the reference C library (libxxhash 0.8.1,
    /// `XXH3_64bits`): a change of hash, seed or hashed bytes moves users between replicas
    /// across a fleet, so it must fail here first.
    #[test]
    fn hashing_is_xxh3_over_specified_bytes() {
        assert_eq!(hash_bytes(b""), 0x2d06800538d394c2);
        assert_eq!(hash_bytes(b"user-42"), 0x50fe4b21cf7b09cd);
        assert_eq!(ring_point("127.0.0.1:9000", 0), 0x22d4f2f4c5e834ec);
        assert_eq!(ring_point("127.0.0.1:9001", 159), 0xd646ce385c4c5e42);
        let rs = replicas(&[1, 1, 1]);
        let b = Balancer::new(Balance::Hash, &rs);
        let Balancer::Hash { ring } = &b else {
            unreachable!()
        };
        assert_eq!(ring.len(), 3 * 160);
        // key -> (its hash, the first ring point at or after it, the replica that owns it)
        for (key, hash, point, replica) in [
            ("user-1", 0x7c7615c11438e5c9, 0x7d8daf8d343ddbf3, 2),
            ("user-2", 0x20333bb6481664d4, 0x22a06364c25f213a, 1),
            ("user-3", 0xa67a7f4df31cf255, 0xa6a14c003c31d1e9, 0),
            ("user-42", 0x50fe4b21cf7b09cd, 0x517f3dbc6a75a84d, 2),
            ("bob", 0x1403c0c40f49b8e5, 0x14b3bc4af817870c, 1),
        ] {
            assert_eq!(hash_bytes(key.as_bytes()), hash, "{key}");
            let at = ring.partition_point(|(h, _)| *h < hash);
            assert_eq!(ring[at], (point, replica as u32), "{key}");
            let picked = b.pick(&rs, Tried::default(), Some(hash), 1, Duration::ZERO);
            assert_eq!(picked, Some(replica), "{key}");
        }
    }

    #[test]
    fn any_weight_builds_a_bounded_balancer() {
        // The admin API may hand the balancer any u32: clamped to MAX_WEIGHT, never an
        // overflow or a schedule of 4 billion slots.
        let rs = replicas(&[u32::MAX, 1, 0]);
        let b = Balancer::new(Balance::RoundRobin, &rs);
        let Balancer::RoundRobin { schedule, .. } = &b else {
            unreachable!()
        };
        assert_eq!(schedule.len(), MAX_WEIGHT as usize + 2);
        assert_eq!(counts(&b, &rs, schedule.len()), vec![1000, 1, 1]);

        let b = Balancer::new(Balance::Hash, &rs);
        let Balancer::Hash { ring } = &b else {
            unreachable!()
        };
        assert!(ring.len() <= MAX_RING_POINTS, "{}", ring.len());
        let owned = |i: u32| ring.iter().filter(|(_, r)| *r == i).count();
        assert_eq!(owned(1), owned(2), "weights 0 and 1 both count as 1");
        assert!(owned(1) >= 1);
        assert!(owned(0) >= 999 * owned(1), "{} vs {}", owned(0), owned(1));

        let p = Balancer::new(Balance::P2cEwma, &rs);
        assert!(p
            .pick(&rs, Tried::default(), None, 1, Duration::ZERO)
            .is_some());
    }

    #[test]
    fn a_ring_past_the_cap_keeps_every_replicas_share() {
        let rs = replicas(&[MAX_WEIGHT, MAX_WEIGHT, MAX_WEIGHT / 2]);
        let b = Balancer::new(Balance::Hash, &rs);
        let Balancer::Hash { ring } = &b else {
            unreachable!()
        };
        assert!(ring.len() <= MAX_RING_POINTS);
        assert!(
            ring.len() > MAX_RING_POINTS - 3,
            "the cap is used: {}",
            ring.len()
        );
        let owned = |i: u32| ring.iter().filter(|(_, r)| *r == i).count();
        assert_eq!(owned(0), owned(1));
        // Shares as the weights say, to the rounding of one point.
        assert!(
            owned(0).abs_diff(2 * owned(2)) <= 2,
            "{} vs {}",
            owned(0),
            owned(2)
        );
    }

    #[test]
    fn equal_weights_give_one_slot_each() {
        assert_eq!(schedule_weights(&[1000, 1000, 500]), vec![2, 2, 1]);
        let many = vec![MAX_WEIGHT; 100];
        assert_eq!(schedule_weights(&many), vec![1; 100]);
        let spread: Vec<u32> = (1..=200).map(|w| w * 5 + 1).collect();
        let scaled = schedule_weights(&spread);
        let total: u32 = scaled.iter().sum();
        assert!(total as usize <= MAX_SCHEDULE, "{total}");
    }
}
