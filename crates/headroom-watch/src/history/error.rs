//! What can go wrong with the history, said so that an operator knows what to do.

use std::fmt;
use std::path::PathBuf;

/// Why the history could not be opened or written.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryError {
    /// The latency bounds are unusable (empty, not finite, not strictly increasing, too
    /// many). A configuration error: retrying will not help.
    InvalidBounds {
        /// What is wrong with them.
        reason: String,
    },
    /// The file or its directory cannot be used now: unwritable, a full disk, a missing
    /// parent that cannot be made, or another process holding the file. The history goes on
    /// in memory and the next flush tries again.
    Unavailable {
        /// The history file.
        path: PathBuf,
        /// What was being done: `open` or `write`.
        during: &'static str,
        /// The underlying error.
        reason: String,
    },
    /// The file does not read as a history. On open it is moved aside; from a flush this
    /// means the store found damage while writing, and the next flush reopens the file.
    Corrupt {
        /// The history file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
}

impl HistoryError {
    /// True when trying again later may succeed (the disk may free up, the file be
    /// repaired or moved aside); false for a configuration error.
    pub fn retry_may_succeed(&self) -> bool {
        !matches!(self, HistoryError::InvalidBounds { .. })
    }
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::InvalidBounds { reason } => {
                write!(f, "history: latency bounds: {reason}")
            }
            HistoryError::Unavailable {
                path,
                during,
                reason,
            } => write!(
                f,
                "history {}: cannot {during}: {reason} (kept in memory; the next flush retries)",
                path.display()
            ),
            HistoryError::Corrupt { path, reason } => {
                write!(f, "history {}: corrupt file: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for HistoryError {}

/// Why one `record` call was not (wholly) kept. Each is also counted in
/// [`Refusals`](super::Refusals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The series is new and `max_series` series are already kept.
    TooManySeries {
        /// The refused series.
        series: String,
        /// The limit.
        max: usize,
    },
    /// The sample's histogram does not have `bounds.len() + 1` buckets.
    BucketCount {
        /// The series recorded into.
        series: String,
        /// `bounds.len() + 1`.
        expected: usize,
        /// `sample.buckets.len()`.
        got: usize,
    },
    /// `at` is later than [`MAX_AT`](super::MAX_AT): a clock or caller bug.
    BadTime {
        /// The series recorded into.
        series: String,
        /// The time given.
        at: u64,
    },
    /// `at` is older than every tier holds (35 days behind the newest record).
    TooOld {
        /// The series recorded into.
        series: String,
        /// The time given.
        at: u64,
    },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::TooManySeries { series, max } => write!(
                f,
                "history: series {series:?} refused: {max} series are kept already (raise max_series)"
            ),
            RecordError::BucketCount {
                series,
                expected,
                got,
            } => write!(
                f,
                "history: series {series:?}: a sample with {got} buckets, expected {expected} (bounds + 1)"
            ),
            RecordError::BadTime { series, at } => write!(
                f,
                "history: series {series:?}: time {at} is past the year 36812 (a clock bug?)"
            ),
            RecordError::TooOld { series, at } => write!(
                f,
                "history: series {series:?}: time {at} is older than the history holds"
            ),
        }
    }
}

impl std::error::Error for RecordError {}
