//! The tiers of the history and one series' ring of slots in one tier.
//!
//! A slot is `width` counters (`total`, `errors`, then the buckets) of `u32`: half the
//! memory of `u64`, and 4.29 billion requests per slot is ~7 million requests per second in
//! a 10-minute slot, more than one gateway serves. Additions saturate and are counted.

use super::Sample;

/// One resolution of the history: slots of `slot_secs`, `slots` of them in a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tier {
    /// Seconds per slot.
    pub slot_secs: u64,
    /// Slots kept; the ring spans `slot_secs * slots` seconds.
    pub slots: u64,
}

impl Tier {
    /// Seconds this tier spans.
    pub const fn span_secs(self) -> u64 {
        self.slot_secs * self.slots
    }
}

/// The tiers, finest first: 10 s for 6 h, 1 min for 3 days, 10 min for 35 days. 10 s is the
/// sampler's period; 6 h covers the fast burn-rate windows at full detail, 3 days the slow
/// ones, 35 days a 30-day SLO window with margin.
pub const TIERS: [Tier; 3] = [
    Tier {
        slot_secs: 10,
        slots: 2160,
    },
    Tier {
        slot_secs: 60,
        slots: 4320,
    },
    Tier {
        slot_secs: 600,
        slots: 5040,
    },
];

/// Ring positions per chunk, the unit written to disk: 16 slots of ~30 bytes make a value
/// of ~500 bytes, so the store's per-entry overhead (16 bytes) is 1 byte a slot. Every
/// tier's slot count is a multiple of it.
pub(crate) const CHUNK: u64 = 16;
const CHUNK_MASK: u64 = (1 << CHUNK) - 1;
// Every tier is whole chunks (written without `is_multiple_of`, which rust 1.85 lacks).
const _: () = assert!(
    TIERS[0].slots / CHUNK * CHUNK == TIERS[0].slots
        && TIERS[1].slots / CHUNK * CHUNK == TIERS[1].slots
        && TIERS[2].slots / CHUNK * CHUNK == TIERS[2].slots
);

/// Slots in all tiers together, per series: the bound of the file (2160 + 4320 + 5040).
pub const SLOTS_PER_SERIES: u64 = TIERS[0].slots + TIERS[1].slots + TIERS[2].slots;

/// What adding into a ring did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Added {
    /// Added into the slot.
    Yes { saturated: bool },
    /// The slot is older than the ring's span: nothing added.
    TooOld,
}

/// One series' slots in one tier. `newest` is the newest slot number (unix secs /
/// slot_secs) written; the ring holds slots `newest - slots + 1 ..= newest`, positions
/// `slot % slots`. Slots between are cleared when `newest` moves on.
#[derive(Debug)]
pub(crate) struct Ring {
    newest: Option<u64>,
    cells: Vec<u32>,
    /// One bit per position: changed since the last flush.
    dirty: Vec<u64>,
}

impl Ring {
    pub(crate) fn new(tier: Tier, width: usize) -> Ring {
        let slots = tier.slots as usize;
        Ring {
            newest: None,
            cells: vec![0; slots * width],
            dirty: vec![0; slots.div_ceil(64)],
        }
    }

    pub(crate) fn newest(&self) -> Option<u64> {
        self.newest
    }

    /// Adds `sample` into slot number `slot`, moving the ring on (clearing the slots it
    /// passes) if `slot` is newer than any before. Cost: O(slots passed), at most one ring.
    pub(crate) fn add(&mut self, tier: Tier, width: usize, slot: u64, sample: &Sample) -> Added {
        let newest = *self.newest.get_or_insert(slot);
        if slot > newest {
            let passed = (slot - newest).min(tier.slots);
            for s in slot + 1 - passed..=slot {
                self.clear(tier, width, s);
            }
            self.newest = Some(slot);
        } else if slot + tier.slots <= newest {
            return Added::TooOld;
        }
        let pos = (slot % tier.slots) as usize;
        let cells = &mut self.cells[pos * width..(pos + 1) * width];
        let mut saturated = false;
        let mut add = |cell: &mut u32, value: u64| {
            let sum = u64::from(*cell).saturating_add(value);
            *cell = u32::try_from(sum).unwrap_or_else(|_| {
                saturated = true;
                u32::MAX
            });
        };
        add(&mut cells[0], sample.total);
        add(&mut cells[1], sample.errors);
        for (cell, &count) in cells[2..].iter_mut().zip(&sample.buckets) {
            add(cell, count);
        }
        self.mark(pos);
        Added::Yes { saturated }
    }

    fn clear(&mut self, tier: Tier, width: usize, slot: u64) {
        let pos = (slot % tier.slots) as usize;
        let cells = &mut self.cells[pos * width..(pos + 1) * width];
        if cells.iter().any(|&c| c != 0) {
            cells.fill(0);
            self.mark(pos);
        }
    }

    fn mark(&mut self, pos: usize) {
        self.dirty[pos / 64] |= 1 << (pos % 64);
    }

    /// The counters of slot number `slot` if the ring holds it (and it is not empty).
    pub(crate) fn get(&self, tier: Tier, width: usize, slot: u64) -> Option<&[u32]> {
        let newest = self.newest?;
        if slot > newest || slot + tier.slots <= newest {
            return None;
        }
        let pos = (slot % tier.slots) as usize;
        let cells = &self.cells[pos * width..(pos + 1) * width];
        cells.iter().any(|&c| c != 0).then_some(cells)
    }

    /// The slot number at position `pos` (the one `newest` implies), and its counters when
    /// not empty.
    pub(crate) fn at(&self, tier: Tier, width: usize, pos: u64) -> Option<(u64, &[u32])> {
        let newest = self.newest?;
        // The slot s with s % slots == pos in newest - slots + 1 ..= newest.
        let back = (newest % tier.slots + tier.slots - pos) % tier.slots;
        let slot = newest.checked_sub(back)?;
        let cells = self.get(tier, width, slot)?;
        Some((slot, cells))
    }

    /// The counters at ring position `pos` (zeros when empty).
    pub(crate) fn cells(&self, width: usize, pos: u64) -> &[u32] {
        let pos = pos as usize;
        &self.cells[pos * width..(pos + 1) * width]
    }

    /// Sets the newest slot, as read from the file before its slots (nothing is cleared).
    pub(crate) fn set_newest(&mut self, newest: Option<u64>) {
        self.newest = newest;
    }

    /// Chunks with a position changed since the last flush, in order.
    pub(crate) fn dirty_chunks(&self) -> impl Iterator<Item = u64> + '_ {
        const PER_WORD: u64 = 64 / CHUNK;
        self.dirty.iter().enumerate().flat_map(|(word, &bits)| {
            (0..PER_WORD)
                .filter(move |c| (bits >> (c * CHUNK)) & CHUNK_MASK != 0)
                .map(move |c| word as u64 * PER_WORD + c)
        })
    }

    /// Forgets the changes (they are on disk).
    pub(crate) fn clean(&mut self) {
        self.dirty.fill(0);
    }

    /// Chunks with a non-empty position.
    pub(crate) fn occupied_chunks(&self, width: usize) -> impl Iterator<Item = u64> + '_ {
        self.cells
            .chunks_exact(width * CHUNK as usize)
            .enumerate()
            .filter(|(_, cells)| cells.iter().any(|&c| c != 0))
            .map(|(chunk, _)| chunk as u64)
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.cells.capacity() * 4 + self.dirty.capacity() * 8
    }
}

/// Adds counters (as stored in a ring) into a sample.
pub(crate) fn add_cells(into: &mut Sample, cells: &[u32]) {
    into.total = into.total.saturating_add(u64::from(cells[0]));
    into.errors = into.errors.saturating_add(u64::from(cells[1]));
    for (bucket, &c) in into.buckets.iter_mut().zip(&cells[2..]) {
        *bucket = bucket.saturating_add(u64::from(c));
    }
}
