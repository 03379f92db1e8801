//! The in-process time-series history: per series (`route:api`, `service:app`), requests,
//! 5xx answers and a latency histogram in 10 s slots for 6 h, 1 min slots for 3 days and
//! 10 min slots for 35 days, kept in memory and flushed to a redb file on local disk.
//!
//! The sampler calls [`History::record`] every 10 s with deltas; the SLO judge reads
//! [`History::sum`] and charts read [`History::points`]. A blocking task calls
//! [`History::flush`] every 10-60 s. A corrupt file is moved aside, an unwritable one only
//! makes flushes fail: the history itself keeps working in memory.

mod error;
mod ring;
mod sample;
mod series;
mod store;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::Database;

pub use error::{HistoryError, RecordError};
pub use ring::{Tier, SLOTS_PER_SERIES, TIERS};
pub use sample::{good_within, quantile, Sample};
pub use series::{MAX_AT, MAX_POINTS};

use series::SeriesSet;
use store::Failure;

/// Most latency bounds accepted: 64 buckets per slot is already four times the usual 16.
pub const MAX_BOUNDS: usize = 64;

/// How much the history may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Series kept at most (default 1,000). A new series beyond it is refused and counted
    /// in [`Refusals::series`]. Memory is `11,520 × (2 + buckets) × 4` bytes a series
    /// (855 KiB with 17 buckets); a full file ~670 KiB a series (measured, 17 buckets).
    pub max_series: usize,
}

impl Default for HistoryLimits {
    fn default() -> HistoryLimits {
        HistoryLimits { max_series: 1_000 }
    }
}

/// Records not (wholly) kept since the history was made, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    /// New series refused because `max_series` were kept (also series of the file that did
    /// not fit when it was read).
    pub series: u64,
    /// Samples whose histogram did not have `bounds.len() + 1` buckets.
    pub bad_buckets: u64,
    /// Samples older than every tier holds.
    pub too_old: u64,
    /// Samples with a time past [`MAX_AT`].
    pub bad_time: u64,
    /// Additions that hit a slot counter's ceiling (`u32::MAX`) and stopped there.
    pub saturated: u64,
}

/// What [`History::open`] found, for the caller to log and count.
#[derive(Clone, Debug, PartialEq)]
pub enum OpenNotice {
    /// There was no file (or an empty redb file): a new history was started in it.
    Created,
    /// The file was read back. (In [`FlushStats::reopened`], when a flush only reopened a
    /// file whose content is already in memory, both counts are 0.)
    Reopened {
        /// Series read.
        series: usize,
        /// Non-empty slots read (over all tiers) that are still within their tier's span.
        slots: usize,
    },
    /// The file did not read as a history (garbage, zero-length, cut short): it was moved
    /// to `moved_to` (`<path>.corrupt-<unix secs>`) and a new history started.
    MovedAside {
        /// Where the old file is now.
        moved_to: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The file was written with other latency bounds: it was moved to `moved_to`
    /// (`<path>.bounds-<unix secs>`) and a new history started, rather than mixing layouts.
    BoundsChanged {
        /// Where the old file is now.
        moved_to: PathBuf,
        /// The bounds it was written with.
        old_bounds: Vec<f64>,
    },
    /// The file cannot be used now (see [`HistoryError::Unavailable`]): the history runs in
    /// memory and each flush tries to open the file again. When it finally opens, what it
    /// holds is added to the memory and the whole history is written back.
    Unavailable {
        /// Why.
        error: HistoryError,
    },
}

/// What one [`History::flush`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlushStats {
    /// Chunks (16 ring positions of one series in one tier, the unit on disk) written.
    pub chunks_written: usize,
    /// Non-empty slots in the chunks written.
    pub slots_written: usize,
    /// Chunks deleted (emptied by the ring moving on, or of pruned series).
    pub chunks_removed: usize,
    /// Series dropped because all their data was past 35 days.
    pub series_pruned: usize,
    /// Bytes of slot values written (before the store's own overhead).
    pub value_bytes: usize,
    /// The file's size after the flush; `None` for an in-memory history.
    pub file_bytes: Option<u64>,
    /// Set when this flush had to (re)open the file first: what that found.
    pub reopened: Option<OpenNotice>,
}

/// The file side of a history.
struct Store {
    path: PathBuf,
    /// `None` until opened, and again after a failed write (the next flush reopens it).
    db: Option<Database>,
    /// The file's content has been read into memory once; later reopenings only write.
    loaded: bool,
    /// The file must be emptied and written whole at the next flush.
    rewrite: bool,
}

/// The history: see the [module documentation](self).
///
/// Not `Sync`-shared by itself: own it in one task, or put it behind a mutex and keep
/// `flush` (milliseconds of disk I/O) on a blocking thread.
pub struct History {
    bounds: Vec<f64>,
    set: SeriesSet,
    store: Option<Store>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("path", &self.path())
            .field("bounds", &self.bounds)
            .field("series", &self.set.ids.len())
            .finish()
    }
}

fn check_bounds(bounds: &[f64]) -> Result<(), HistoryError> {
    let fail = |reason: String| Err(HistoryError::InvalidBounds { reason });
    if bounds.is_empty() {
        return fail("none given; at least one upper bound in seconds".into());
    }
    if bounds.len() > MAX_BOUNDS {
        return fail(format!("{} given, at most {MAX_BOUNDS}", bounds.len()));
    }
    if let Some(b) = bounds.iter().find(|b| !b.is_finite()) {
        return fail(format!(
            "{b} is not a finite number of seconds (+Inf is implied)"
        ));
    }
    if let Some(w) = bounds.windows(2).find(|w| w[0] >= w[1]) {
        return fail(format!(
            "{} then {}: they must increase strictly",
            w[0], w[1]
        ));
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A file opened and checked: new, or with our bounds.
enum Opened {
    Fresh(Database),
    Existing(Database),
}

enum Check {
    Failed(Failure),
    OtherBounds(Vec<f64>),
}

impl From<Failure> for Check {
    fn from(f: Failure) -> Check {
        Check::Failed(f)
    }
}

fn open_checked(path: &Path, bounds: &[f64]) -> Result<Opened, Check> {
    let db = store::open(path)?;
    match store::stored_bounds(&db)? {
        None => {
            store::write_meta(&db, bounds)?;
            Ok(Opened::Fresh(db))
        }
        Some(stored) if same_bounds(&stored, bounds) => Ok(Opened::Existing(db)),
        Some(stored) => Err(Check::OtherBounds(stored)),
    }
}

fn same_bounds(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

impl History {
    /// A history kept in memory only: `flush` writes nothing. Errors only for bad bounds.
    /// Cost: nothing until the first record (then 855 KiB per series with 17 buckets).
    pub fn in_memory(bounds: Vec<f64>, limits: HistoryLimits) -> Result<History, HistoryError> {
        check_bounds(&bounds)?;
        Ok(History {
            set: SeriesSet::new(bounds.len() + 1, limits.max_series),
            bounds,
            store: None,
        })
    }

    /// Opens the history in the redb file at `path` (made, with its directory, if missing),
    /// reading it whole into memory.
    ///
    /// Only bad `bounds` are an error. Everything the file can do wrong is in the notice: a
    /// corrupt file or one written with other bounds is moved aside and a new history
    /// started; a file that cannot be opened leaves the history in memory, and each flush
    /// tries again. Cost: reading the file (~90 ms for a full 50-series, 33 MiB file;
    /// see the README, "The history"). Blocking: call it from a blocking thread in async code.
    pub fn open(
        path: impl Into<PathBuf>,
        bounds: Vec<f64>,
        limits: HistoryLimits,
    ) -> Result<(History, OpenNotice), HistoryError> {
        let mut history = History::in_memory(bounds, limits)?;
        history.store = Some(Store {
            path: path.into(),
            db: None,
            loaded: false,
            rewrite: false,
        });
        let notice = history
            .attach()
            .unwrap_or_else(|error| OpenNotice::Unavailable { error });
        Ok((history, notice))
    }

    /// Opens the file (moving a bad one aside) and, the first time, reads it into memory.
    fn attach(&mut self) -> Result<OpenNotice, HistoryError> {
        let Some(store) = self.store.as_mut() else {
            return Ok(OpenNotice::Created);
        };
        let path = store.path.clone();
        let unavailable = |during, reason| HistoryError::Unavailable {
            path: path.clone(),
            during,
            reason,
        };
        let mut notice = None;
        let mut loaded = None;
        let mut attempt = 0;
        let db = loop {
            attempt += 1;
            let result = open_checked(&path, &self.bounds).and_then(|opened| match opened {
                Opened::Existing(db) if !store.loaded => {
                    let mut scratch = SeriesSet::new(self.bounds.len() + 1, self.set.max_series);
                    let read = store::load(&db, &mut scratch)?;
                    loaded = Some((scratch, read));
                    Ok(db)
                }
                Opened::Existing(db) => Ok(db),
                Opened::Fresh(db) => {
                    notice.get_or_insert(OpenNotice::Created);
                    store.rewrite = true;
                    Ok(db)
                }
            });
            let (what, moved) = match result {
                Ok(db) => break db,
                Err(Check::Failed(Failure::Unavailable(reason))) => {
                    return Err(unavailable("open", reason))
                }
                Err(_) if attempt > 1 => {
                    return Err(unavailable("open", "a new file did not read back".into()))
                }
                Err(Check::Failed(Failure::Corrupt(reason))) => {
                    let moved = store::move_aside(&path, "corrupt", unix_now());
                    (
                        "corrupt",
                        moved.map(|moved_to| OpenNotice::MovedAside { moved_to, reason }),
                    )
                }
                Err(Check::OtherBounds(old_bounds)) => {
                    let moved = store::move_aside(&path, "bounds", unix_now());
                    (
                        "bounds",
                        moved.map(|moved_to| OpenNotice::BoundsChanged {
                            moved_to,
                            old_bounds,
                        }),
                    )
                }
            };
            let moved = moved.map_err(|e| {
                unavailable("open", format!("cannot move the {what} file aside: {e}"))
            })?;
            tracing::warn!(path = %path.display(), notice = ?moved, "history file moved aside; a new history starts");
            notice = Some(moved);
        };
        if let Some((scratch, read)) = loaded {
            if self.set.ids.is_empty() && !read.renumbered {
                let mut refusals = self.set.refusals;
                refusals.series += scratch.refusals.series;
                self.set = scratch;
                self.set.refusals = refusals;
                self.set.dirty_ids.clear();
                self.set
                    .by_id
                    .iter_mut()
                    .flatten()
                    .for_each(|s| s.rings.iter_mut().for_each(|r| r.clean()));
            } else {
                self.set.merge(&scratch);
                store.rewrite = true;
            }
            notice.get_or_insert(OpenNotice::Reopened {
                series: read.series,
                slots: read.slots,
            });
        }
        store.loaded = true;
        store.db = Some(db);
        Ok(notice.unwrap_or(OpenNotice::Reopened {
            series: 0,
            slots: 0,
        }))
    }

    /// Adds `sample` (deltas since the last call) into the slot holding `at` (unix secs) in
    /// every tier. Late or repeated calls for the same slot add up; a tier whose span no
    /// longer holds `at` skips it.
    ///
    /// Errors (each also counted in [`History::refusals`]) when nothing was kept: a new
    /// series beyond `max_series`, a histogram of the wrong length, `at` older than 35
    /// days behind the newest record, or `at` past [`MAX_AT`]. Cost: three slot additions, and when time moves on,
    /// clearing the slots passed. Never panics, never blocks.
    pub fn record(&mut self, series: &str, at: u64, sample: &Sample) -> Result<(), RecordError> {
        self.set.record(series, at, sample)
    }

    /// Requests, errors and latency of `series` over `[from, to)` (unix secs).
    ///
    /// Each part of the window is read from the finest tier that still holds it: 10 s
    /// slots for the last 6 h, then 1 min slots back to 3 days, then 10 min slots back to 35
    /// days ("last" counted from the newest record, not the clock). A window is rounded out
    /// to whole slots of the tier used at its edges (`from` down, `to` up); where tiers
    /// meet, the boundary is a whole coarser slot, so nothing is counted twice.
    ///
    /// An unknown series, an empty window or a window past every tier gives an empty sample
    /// with `bounds.len() + 1` buckets. Cost: one addition per slot read, at most the
    /// 11,520 slots of all tiers.
    pub fn sum(&self, series: &str, from: u64, to: u64) -> Sample {
        self.set.sum(series, from, to)
    }

    /// One sample per `step` seconds over `[from, to)`, for charts: `(start, sample)` for
    /// `start = from, from + step, …` (`from` rounded down to a slot), all from one tier,
    /// the finest that holds `from`. `step` is rounded up to a multiple of that tier's slot
    /// (0 means one slot). At most [`MAX_POINTS`] points. Cost: one addition per slot read
    /// plus one sample allocated per point.
    pub fn points(&self, series: &str, from: u64, to: u64, step: u64) -> Vec<(u64, Sample)> {
        self.set.points(series, from, to, step)
    }

    /// The series kept, sorted by name. Cost: one string copy per series.
    pub fn series(&self) -> Vec<String> {
        let mut names: Vec<String> = self.set.ids.keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// The latency bounds (seconds) every sample's buckets follow.
    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    /// The history file; `None` for an in-memory history.
    pub fn path(&self) -> Option<&Path> {
        self.store.as_ref().map(|s| s.path.as_path())
    }

    /// Records refused (or clipped) since the history was made, by reason.
    pub fn refusals(&self) -> Refusals {
        self.set.refusals
    }

    /// Bytes of memory the history's structures hold, counted from their capacities (the
    /// store's page cache, at most 4 MiB, not included). Cost: one pass over the series.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<History>() + self.set.heap_bytes()
    }

    /// Writes what changed since the last successful flush to the file, in one
    /// transaction, and drops series whose data is all past 35 days.
    ///
    /// Cost: one redb commit (two fsyncs) plus one write per changed chunk of 16 slots;
    /// at a 10 s sampler that is 3 chunks (~1.5 KB) per series per flush. Blocking: run it on a
    /// blocking thread every 10-60 s. A restart loses at most what was not flushed.
    ///
    /// Errors ([`HistoryError::Unavailable`], [`HistoryError::Corrupt`]) leave the history
    /// untouched in memory and remember what is unwritten: the next flush reopens the file
    /// and retries. An in-memory history always succeeds.
    pub fn flush(&mut self) -> Result<FlushStats, HistoryError> {
        let mut stats = FlushStats {
            series_pruned: self.set.prune(),
            ..FlushStats::default()
        };
        let Some(store) = self.store.as_ref() else {
            self.mark_clean();
            return Ok(stats);
        };
        if store.db.is_none() {
            stats.reopened = Some(self.attach()?);
        }
        let Some(store) = self.store.as_mut() else {
            return Ok(stats);
        };
        let Some(db) = store.db.as_ref() else {
            return Ok(stats);
        };
        match store::write(db, &self.set, store.rewrite) {
            Ok(written) => {
                stats.chunks_written = written.chunks_written;
                stats.slots_written = written.slots_written;
                stats.chunks_removed = written.chunks_removed;
                stats.value_bytes = written.value_bytes;
                stats.file_bytes = std::fs::metadata(&store.path).ok().map(|m| m.len());
                store.rewrite = false;
                self.mark_clean();
                Ok(stats)
            }
            Err(failure) => {
                // The store may be unusable after a failed write: reopen it next time.
                store.db = None;
                let path = store.path.clone();
                Err(match failure {
                    Failure::Unavailable(reason) => HistoryError::Unavailable {
                        path,
                        during: "write",
                        reason,
                    },
                    Failure::Corrupt(reason) => HistoryError::Corrupt { path, reason },
                })
            }
        }
    }

    fn mark_clean(&mut self) {
        self.set.dirty_ids.clear();
        self.set.gone_keys.clear();
        for series in self.set.by_id.iter_mut().flatten() {
            series.rings.iter_mut().for_each(|r| r.clean());
        }
    }
}
