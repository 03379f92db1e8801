//! An in-memory history for the tests: one slot per 10 s from t = 0, every request in a slot
//! answered with the same status class and latency. Sums are prefix sums, so a 30-day window
//! costs the same as a 5-minute one.

use std::time::Duration;

use super::{Counts, Sli, Source};

/// The width of a slot.
pub(crate) const SLOT: u64 = 10;

#[derive(Clone, Copy)]
struct Slot {
    total: u64,
    latency: f64,
}

/// Traffic appended period by period; `end()` is where the next period starts.
#[derive(Default)]
pub(crate) struct FakeHistory {
    slots: Vec<Slot>,
    /// `total_before[i]`: requests in slots `0..i`.
    total_before: Vec<u64>,
    /// `errors_before[i]`: 5xx answers in slots `0..i`.
    errors_before: Vec<u64>,
}

impl FakeHistory {
    pub fn new() -> Self {
        Self {
            slots: Vec::new(),
            total_before: vec![0],
            errors_before: vec![0],
        }
    }

    /// Appends `secs` (whole slots) of `per_slot` requests each 10 s, `errors` of them 5xx,
    /// all answered in `latency`.
    pub fn serve(&mut self, secs: u64, per_slot: u64, errors: u64, latency: Duration) -> &mut Self {
        for _ in 0..secs / SLOT {
            let slot = Slot {
                total: per_slot,
                latency: latency.as_secs_f64(),
            };
            self.slots.push(slot);
            self.total_before
                .push(self.total_before.last().copied().unwrap_or(0) + per_slot);
            self.errors_before
                .push(self.errors_before.last().copied().unwrap_or(0) + errors);
        }
        self
    }

    /// Appends `secs` without a request.
    pub fn idle(&mut self, secs: u64) -> &mut Self {
        self.serve(secs, 0, 0, Duration::ZERO)
    }

    /// The time just after the last slot.
    pub fn end(&self) -> u64 {
        self.slots.len() as u64 * SLOT
    }

    /// The slot indices covering `[from, to)`: slots whose start lies in the window.
    fn range(&self, from: u64, to: u64) -> std::ops::Range<usize> {
        let first = from.div_ceil(SLOT).min(self.slots.len() as u64) as usize;
        let last = to.div_ceil(SLOT).min(self.slots.len() as u64) as usize;
        first..last.max(first)
    }
}

impl Source for FakeHistory {
    fn counts(&self, sli: &Sli, from: u64, to: u64) -> Counts {
        let range = self.range(from, to);
        match sli {
            Sli::Availability => {
                let total = self.total_before[range.end] - self.total_before[range.start];
                let errors = self.errors_before[range.end] - self.errors_before[range.start];
                Counts {
                    good: total - errors,
                    total,
                }
            }
            Sli::Latency { threshold } => {
                let limit = threshold.as_secs_f64();
                self.slots[range]
                    .iter()
                    .fold(Counts::default(), |sum, slot| Counts {
                        good: sum.good + if slot.latency <= limit { slot.total } else { 0 },
                        total: sum.total + slot.total,
                    })
            }
        }
    }

    fn quantile(&self, q: f64, from: u64, to: u64) -> Option<f64> {
        let mut slots: Vec<Slot> = self.slots[self.range(from, to)]
            .iter()
            .copied()
            .filter(|slot| slot.total > 0)
            .collect();
        let total: u64 = slots.iter().map(|slot| slot.total).sum();
        if total == 0 {
            return None;
        }
        slots.sort_by(|a, b| a.latency.total_cmp(&b.latency));
        // The smallest latency at or below which at least q of the requests were answered.
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for slot in &slots {
            seen += slot.total;
            if seen >= rank {
                return Some(slot.latency);
            }
        }
        slots.last().map(|slot| slot.latency)
    }
}
