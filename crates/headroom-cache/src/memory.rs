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

impl Object {
    fn weight(&self) -> u32 {
        let w: usize =
            self.key.len() + 64 + self.variants.iter().map(|e| e.weight()).sum::<usize>();
        u32::try_from(w).unwrap_or(u32::MAX)
    }
}

pub struct Memory {
    pub map: moka::sync::Cache<u64, Arc<Object>>,
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
            .build();
        Memory { map, evictions }
    }

    pub fn get(&self, hash: u64, key: &[u8]) -> Option<Arc<Object>> {
        self.map.get(&hash).filter(|o| &*o.key == key)
    }

    /// Stores `entry` as a variant of `key`, replacing the variant it matches (same
    /// selecting values and coding); the oldest variant goes past `max_variants`.
    pub fn insert(&self, hash: u64, key: &[u8], entry: Arc<Entry>, max_variants: usize) {
        let mut variants: Vec<Arc<Entry>> = match self.get(hash, key) {
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
