//! The memory tier: moka's size-bounded cache (TinyLFU admission, LRU eviction), one
//! object per primary key holding that URL's variants.

use crate::entry::Entry;
use moka::notification::RemovalCause;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// One URL's stored variants (bounded), under its full primary key (the map's key is its
/// hash; the key itself is compared so that a hash collision is a miss, not a wrong answer).
#[derive(Debug)]
pub struct Object {
    pub key: Box<[u8]>,
    pub variants: Box<[Arc<Entry>]>,
}

/// Heap bytes moka holds per entry beyond the value: its hash table slot, its entry and
/// its node in the eviction order, with the allocator's rounding of each (measured with
/// `tests/memory_bound.rs`).
const MOKA_ENTRY: usize = 448;

impl Object {
    fn weight(&self) -> u32 {
        let w = MOKA_ENTRY
            + std::mem::size_of::<Object>()
            + 16
            + self.key.len()
            + self
                .variants
                .iter()
                .map(|e| e.weight() + std::mem::size_of::<Arc<Entry>>())
                .sum::<usize>();
        u32::try_from(w).unwrap_or(u32::MAX)
    }
}

pub struct Memory {
    pub map: moka::sync::Cache<u64, Arc<Object>, KeyHasher>,
    pub evictions: Arc<AtomicU64>,
}

impl Memory {
    pub fn new(bytes: u64) -> Memory {
        let evictions = Arc::new(AtomicU64::new(0));
        let ev = evictions.clone();
        let map = moka::sync::Cache::builder()
            .max_capacity(bytes)
            .weigher(|_k: &u64, o: &Arc<Object>| o.weight())
            .eviction_listener(move |_k, _v, cause| {
                if cause == RemovalCause::Size {
                    ev.fetch_add(1, Relaxed);
                }
            })
            .build_with_hasher(KeyHasher::new());
        Memory { map, evictions }
    }

    pub fn get(&self, hash: u64, key: &[u8]) -> Option<Arc<Object>> {
        self.map.get(&hash).filter(|o| &*o.key == key)
    }

    /// Stores `entry` as a variant of `key`, replacing the variant it matches (same
    /// selecting values and coding); the oldest variant goes past `max_variants`.
    pub fn insert(&self, hash: u64, key: &[u8], entry: Arc<Entry>, max_variants: usize) {
        let seen = self.get(hash, key);
        self.insert_over(hash, key, entry, max_variants, seen.as_deref());
    }

    /// [`Memory::insert`] over `seen`, the object a lookup just read (`None`: there was
    /// none), without reading the map again. A variant stored by another request in between
    /// may be lost: the last writer wins, as with any concurrent fill.
    pub fn insert_over(
        &self,
        hash: u64,
        key: &[u8],
        entry: Arc<Entry>,
        max_variants: usize,
        seen: Option<&Object>,
    ) {
        let mut variants: Vec<Arc<Entry>> = match seen {
            Some(o) => o
                .variants
                .iter()
                .filter(|v| v.variant != entry.variant || v.vary != entry.vary)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        variants.push(entry);
        if variants.len() > max_variants {
            let drop = variants.len() - max_variants;
            variants.drain(..drop);
        }
        self.map.insert(
            hash,
            Arc::new(Object {
                key: key.into(),
                variants: variants.into(),
            }),
        );
    }

    /// Removes one variant (a revalidation found it replaced, or it is dead).
    pub fn remove_variant(&self, hash: u64, key: &[u8], entry: &Arc<Entry>) {
        let Some(o) = self.get(hash, key) else { return };
        let rest: Vec<Arc<Entry>> = o
            .variants
            .iter()
            .filter(|v| !Arc::ptr_eq(v, entry))
            .cloned()
            .collect();
        if rest.is_empty() {
            self.map.invalidate(&hash);
        } else {
            self.map.insert(
                hash,
                Arc::new(Object {
                    key: o.key.clone(),
                    variants: rest.into(),
                }),
            );
        }
    }

    pub fn bytes(&self) -> u64 {
        self.map.weighted_size()
    }

    pub fn objects(&self) -> u64 {
        self.map.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Coding;
    use crate::policy::Freshness;
    use bytes::Bytes;
    use std::time::{Duration, SystemTime};

    fn entry(body: usize) -> Arc<Entry> {
        Arc::new(Entry::new(
            http::StatusCode::OK,
            http::HeaderMap::new(),
            Bytes::from(vec![b'x'; body]),
            SystemTime::UNIX_EPOCH,
            Duration::ZERO,
            Freshness {
                lifetime: Duration::from_secs(60),
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
                must_revalidate: false,
                no_cache: false,
            },
            "h/".into(),
            Box::new([]),
            Box::new([]),
            vec![0].into(),
            Coding::Identity,
        ))
    }

    #[test]
    fn a_huge_number_of_distinct_urls_keeps_memory_at_its_bound() {
        let m = Memory::new(1 << 20);
        for i in 0..20_000u64 {
            let key = format!("h/{i}");
            m.insert(i, key.as_bytes(), entry(1024), 16);
        }
        m.map.run_pending_tasks();
        assert!(m.bytes() <= 1 << 20, "{} bytes held", m.bytes());
        assert!(
            m.objects() > 100,
            "it still holds what fits: {}",
            m.objects()
        );
        assert!(m.evictions.load(Relaxed) > 0 || m.objects() < 20_000);
    }

    #[test]
    fn variants_per_url_are_bounded_oldest_first() {
        let m = Memory::new(64 << 20);
        for v in 0..300u16 {
            let mut e = entry(10);
            Arc::get_mut(&mut e).unwrap().variant = v.to_be_bytes().to_vec().into();
            m.insert(1, b"k", e, 16);
        }
        let o = m.get(1, b"k").unwrap();
        assert_eq!(o.variants.len(), 16);
        assert_eq!(&*o.variants[15].variant, &299u16.to_be_bytes());
        assert!(
            m.get(1, b"other key, same hash").is_none(),
            "a collision is a miss"
        );
    }
}

/// Hashes a key that is already a hash (XXH3 of the cache key) for the in-memory maps:
/// one multiply-fold with a per-process random seed, instead of SipHash over it (~600
/// instructions per stored miss, callgrind). The seed keeps a client from choosing URLs
/// whose XXH3 values share a bucket (XXH3's seed is fixed: Redis keys must agree between
/// instances).
#[derive(Clone)]
pub struct KeyHasher {
    seed: u64,
}

impl KeyHasher {
    pub fn new() -> KeyHasher {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let here = &t as *const u64 as u64;
        KeyHasher {
            seed: xxhash_rust::xxh3::xxh3_64(&[t.to_le_bytes(), here.to_le_bytes()].concat()) | 1,
        }
    }
}

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher::new()
    }
}

impl std::hash::BuildHasher for KeyHasher {
    type Hasher = Folded;
    fn build_hasher(&self) -> Folded {
        Folded {
            seed: self.seed,
            state: 0,
        }
    }
}

pub struct Folded {
    seed: u64,
    state: u64,
}

impl std::hash::Hasher for Folded {
    fn write(&mut self, bytes: &[u8]) {
        // Not used by u64 keys; correct for anything else all the same.
        self.state = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.seed ^ self.state);
    }

    fn write_u64(&mut self, v: u64) {
        let m = u128::from(v ^ self.seed ^ self.state)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        self.state = (m as u64) ^ ((m >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}
