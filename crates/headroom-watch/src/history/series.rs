//! The history in memory: every series' rings, the record path and the queries.

use std::collections::HashMap;

use super::ring::{add_cells, Added, Ring, Tier, TIERS};
use super::{RecordError, Refusals, Sample};

/// Most points one `points` call answers: a chart wider than any tier is pointless, and this
/// bounds the allocation whatever `from`, `to` and `step` say.
pub const MAX_POINTS: usize = 12_000;

/// The latest time a record may carry (2^40 s, the year 36812): anything later is a bug,
/// and the bound keeps slot arithmetic far from overflowing.
pub const MAX_AT: u64 = 1 << 40;

/// One series: its name and a ring per tier.
#[derive(Debug)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) rings: [Ring; 3],
}

/// All series, by id (the index in `by_id`, also the id on disk).
#[derive(Debug)]
pub(crate) struct SeriesSet {
    /// Counters per slot: total, errors, then one per bucket.
    pub(crate) width: usize,
    pub(crate) max_series: usize,
    pub(crate) by_id: Vec<Option<Series>>,
    pub(crate) ids: HashMap<String, u32>,
    free: Vec<u32>,
    /// Newest slot written in each tier, over all series: the tier holds slots
    /// `newest - slots + 1 ..= newest` (and the empty future).
    pub(crate) newest: [Option<u64>; 3],
    pub(crate) refusals: Refusals,
    /// Ids whose series changed name (new, or gone) since the last flush.
    pub(crate) dirty_ids: Vec<u32>,
    /// Disk keys of pruned series, to delete at the next flush.
    pub(crate) gone_keys: Vec<u64>,
}

/// The key of a chunk of slots on disk: tier, chunk of ring positions, series id. Ordered
/// by tier then chunk, so one flush's chunks (the same chunk of every series) sit together.
pub(crate) fn slot_key(tier: usize, chunk: u64, id: u32) -> u64 {
    (tier as u64) << 56 | chunk << 32 | u64::from(id)
}

/// The parts of a slot key.
pub(crate) fn split_key(key: u64) -> (usize, u64, u32) {
    ((key >> 56) as usize, (key >> 32) & 0x00ff_ffff, key as u32)
}

impl SeriesSet {
    pub(crate) fn new(buckets: usize, max_series: usize) -> SeriesSet {
        SeriesSet {
            width: 2 + buckets,
            max_series,
            by_id: Vec::new(),
            ids: HashMap::new(),
            free: Vec::new(),
            newest: [None; 3],
            refusals: Refusals::default(),
            dirty_ids: Vec::new(),
            gone_keys: Vec::new(),
        }
    }

    pub(crate) fn buckets(&self) -> usize {
        self.width - 2
    }

    /// The id of `name`, making the series if there is room (and `at` a free id when
    /// given, as on load).
    pub(crate) fn id_or_insert(&mut self, name: &str, at: Option<u32>) -> Option<u32> {
        if let Some(&id) = self.ids.get(name) {
            return Some(id);
        }
        if self.ids.len() >= self.max_series {
            return None;
        }
        let id = match at {
            Some(id) if (id as usize) < self.max_series && self.slot_is_free(id) => {
                self.free.retain(|&f| f != id);
                id
            }
            _ => self.free.pop().unwrap_or(self.by_id.len() as u32),
        };
        while self.by_id.len() <= id as usize {
            let next = self.by_id.len() as u32;
            self.by_id.push(None);
            if next != id {
                self.free.push(next);
            }
        }
        self.by_id[id as usize] = Some(Series {
            name: name.to_owned(),
            rings: TIERS.map(|tier| Ring::new(tier, self.width)),
        });
        self.ids.insert(name.to_owned(), id);
        self.dirty_ids.push(id);
        Some(id)
    }

    fn slot_is_free(&self, id: u32) -> bool {
        self.by_id.get(id as usize).is_none_or(|s| s.is_none())
    }

    pub(crate) fn record(
        &mut self,
        name: &str,
        at: u64,
        sample: &Sample,
    ) -> Result<(), RecordError> {
        if sample.buckets.len() != self.buckets() {
            self.refusals.bad_buckets += 1;
            return Err(RecordError::BucketCount {
                series: name.to_owned(),
                expected: self.buckets(),
                got: sample.buckets.len(),
            });
        }
        if at > MAX_AT {
            self.refusals.bad_time += 1;
            return Err(RecordError::BadTime {
                series: name.to_owned(),
                at,
            });
        }
        // Older than the coarsest tier holds: refused before it can make a series.
        let coarsest = TIERS.len() - 1;
        let span = TIERS[coarsest];
        if self.newest[coarsest].is_some_and(|n| at / span.slot_secs + span.slots <= n) {
            self.refusals.too_old += 1;
            return Err(RecordError::TooOld {
                series: name.to_owned(),
                at,
            });
        }
        let Some(id) = self.id_or_insert(name, None) else {
            self.refusals.series += 1;
            return Err(RecordError::TooManySeries {
                series: name.to_owned(),
                max: self.max_series,
            });
        };
        let mut kept = false;
        for (tier, &spec) in TIERS.iter().enumerate() {
            if self.add(id, tier, at / spec.slot_secs, sample) {
                kept = true;
            }
        }
        if kept {
            Ok(())
        } else {
            self.refusals.too_old += 1;
            Err(RecordError::TooOld {
                series: name.to_owned(),
                at,
            })
        }
    }

    /// Adds into one tier's slot; false when the slot is older than the tier holds.
    pub(crate) fn add(&mut self, id: u32, tier: usize, slot: u64, sample: &Sample) -> bool {
        let spec = TIERS[tier];
        if self.newest[tier].is_some_and(|n| slot + spec.slots <= n) {
            return false;
        }
        let Some(series) = self.by_id.get_mut(id as usize).and_then(Option::as_mut) else {
            return false;
        };
        match series.rings[tier].add(spec, self.width, slot, sample) {
            Added::TooOld => false,
            Added::Yes { saturated } => {
                if saturated {
                    self.refusals.saturated += 1;
                }
                let newest = &mut self.newest[tier];
                *newest = Some(newest.map_or(slot, |n| n.max(slot)));
                true
            }
        }
    }

    fn series(&self, name: &str) -> Option<&Series> {
        let id = *self.ids.get(name)?;
        self.by_id.get(id as usize)?.as_ref()
    }

    /// The first second tier `tier` still holds, if it holds anything.
    fn horizon(&self, tier: usize) -> Option<u64> {
        let spec = TIERS[tier];
        let newest = self.newest[tier]?;
        Some((newest + 1).saturating_sub(spec.slots) * spec.slot_secs)
    }

    /// Where each tier takes over, finest first: tier `i` answers `[start[i], start[i-1])`
    /// (tier 0 up to the future, the last tier down to the beginning). Each start is a
    /// multiple of the next coarser slot, so no slot is counted twice at a boundary.
    fn tier_starts(&self) -> [u64; 3] {
        let mut starts = [0u64; 3];
        let mut above = u64::MAX;
        for tier in 0..TIERS.len() - 1 {
            let coarser = TIERS[tier + 1].slot_secs;
            let start = match self.horizon(tier) {
                Some(h) => h.div_ceil(coarser) * coarser,
                None => above, // holds nothing: leave its part to the coarser tiers
            };
            let start = start.min(above / coarser * coarser);
            starts[tier] = start;
            above = start;
        }
        starts[TIERS.len() - 1] = 0;
        starts
    }

    fn sum_tier(&self, series: &Series, tier: usize, from: u64, to: u64, into: &mut Sample) {
        let spec = TIERS[tier];
        let Some(global_newest) = self.newest[tier] else {
            return;
        };
        let oldest_held = (global_newest + 1).saturating_sub(spec.slots);
        let first = (from / spec.slot_secs).max(oldest_held);
        let last = to.div_ceil(spec.slot_secs).min(global_newest + 1); // exclusive
        for slot in first..last {
            if let Some(cells) = series.rings[tier].get(spec, self.width, slot) {
                add_cells(into, cells);
            }
        }
    }

    pub(crate) fn sum(&self, name: &str, from: u64, to: u64) -> Sample {
        let mut total = Sample::empty(self.buckets());
        let Some(series) = self.series(name) else {
            return total;
        };
        if from >= to {
            return total;
        }
        let starts = self.tier_starts();
        let mut end = to;
        for (tier, &start) in starts.iter().enumerate() {
            let begin = from.max(start);
            if begin < end {
                self.sum_tier(series, tier, begin, end, &mut total);
            }
            end = end.min(start);
            if end <= from {
                break;
            }
        }
        total
    }

    pub(crate) fn points(&self, name: &str, from: u64, to: u64, step: u64) -> Vec<(u64, Sample)> {
        let starts = self.tier_starts();
        let tier = (0..TIERS.len())
            .find(|&t| from >= starts[t])
            .unwrap_or(TIERS.len() - 1);
        let spec: Tier = TIERS[tier];
        let step = step
            .max(1)
            .div_ceil(spec.slot_secs)
            .saturating_mul(spec.slot_secs);
        let mut points = Vec::new();
        let mut at = from / spec.slot_secs * spec.slot_secs;
        let series = self.series(name);
        while at < to && points.len() < MAX_POINTS {
            let mut sample = Sample::empty(self.buckets());
            if let Some(series) = series {
                self.sum_tier(series, tier, at, at.saturating_add(step), &mut sample);
            }
            points.push((at, sample));
            at = at.saturating_add(step);
        }
        points
    }

    /// Adds every slot of `other` into this set.
    pub(crate) fn merge(&mut self, other: &SeriesSet) {
        let width = self.width;
        let mut sample = Sample::empty(self.buckets());
        for series in other.by_id.iter().flatten() {
            let Some(id) = self.id_or_insert(&series.name, None) else {
                self.refusals.series += 1;
                continue;
            };
            for (tier, ring) in series.rings.iter().enumerate() {
                for pos in 0..TIERS[tier].slots {
                    if let Some((slot, cells)) = ring.at(TIERS[tier], width, pos) {
                        sample.total = cells[0].into();
                        sample.errors = cells[1].into();
                        for (b, &c) in sample.buckets.iter_mut().zip(&cells[2..]) {
                            *b = c.into();
                        }
                        self.add(id, tier, slot, &sample);
                    }
                }
            }
        }
    }

    /// Drops the series whose every slot is past the coarsest tier's span; their places
    /// are free for new series, their slots deleted on disk at the next flush.
    pub(crate) fn prune(&mut self) -> usize {
        let last = TIERS.len() - 1;
        let Some(global) = self.newest[last] else {
            return 0;
        };
        let slots = TIERS[last].slots;
        let mut pruned = 0;
        for id in 0..self.by_id.len() {
            let expired = self.by_id[id]
                .as_ref()
                .is_some_and(|s| s.rings[last].newest().is_none_or(|n| n + slots <= global));
            if !expired {
                continue;
            }
            if let Some(series) = self.by_id[id].take() {
                for (tier, ring) in series.rings.iter().enumerate() {
                    self.gone_keys.extend(
                        ring.occupied_chunks(self.width)
                            .map(|chunk| slot_key(tier, chunk, id as u32)),
                    );
                }
                self.ids.remove(&series.name);
                self.free.push(id as u32);
                self.dirty_ids.push(id as u32);
                pruned += 1;
            }
        }
        pruned
    }

    /// Bytes of memory held, counted from the structures' capacities (the hash map's
    /// entries estimated as key + id + one control byte, its strings by their lengths).
    pub(crate) fn heap_bytes(&self) -> usize {
        let series: usize = self
            .by_id
            .iter()
            .flatten()
            .map(|s| s.name.capacity() + s.rings.iter().map(Ring::heap_bytes).sum::<usize>())
            .sum();
        let slots = self.by_id.capacity() * std::mem::size_of::<Option<Series>>();
        let index: usize = self.ids.capacity() * (std::mem::size_of::<(String, u32)>() + 1)
            + self.ids.keys().map(String::capacity).sum::<usize>();
        series + slots + index + self.free.capacity() * 4 + self.gone_keys.capacity() * 8
    }
}
