//! The history's behaviour, specified: tiers, rings, queries, limits, and the file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

const BOUNDS: [f64; 3] = [0.1, 0.5, 1.0];
/// A time that is a whole number of every tier's slots (10 min), far from 0.
const T0: u64 = 1_800_000_000;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

fn memory() -> History {
    History::in_memory(BOUNDS.to_vec(), HistoryLimits::default()).unwrap()
}

/// `total` requests, `errors` of them 5xx, all in the first bucket.
fn sample(total: u64, errors: u64) -> Sample {
    Sample {
        total,
        errors,
        buckets: vec![total, 0, 0, 0],
    }
}

/// Records one request every 10 s into `series` over `[from, to)`.
fn steady(history: &mut History, series: &str, from: u64, to: u64) {
    for at in (from..to).step_by(10) {
        history.record(series, at, &sample(1, 0)).unwrap();
    }
}

/// A directory of its own under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "headroom-history-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("history.redb")
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(path: &Path) -> (History, OpenNotice) {
    History::open(path, BOUNDS.to_vec(), HistoryLimits::default()).unwrap()
}

// ---- in memory: recording and summing ----

#[test]
fn records_for_the_same_slot_add_up() {
    let mut h = memory();
    h.record("route:api", T0 + 1, &sample(5, 1)).unwrap();
    h.record("route:api", T0 + 9, &sample(3, 0)).unwrap(); // same 10 s slot, late
    h.record("route:api", T0 + 10, &sample(100, 0)).unwrap(); // the next slot
    assert_eq!(h.sum("route:api", T0, T0 + 10), sample(8, 1));
    assert_eq!(h.sum("route:api", T0, T0 + 20).total, 108);
}

#[test]
fn a_window_is_rounded_out_to_whole_slots() {
    let mut h = memory();
    h.record("route:api", T0, &sample(2, 0)).unwrap();
    h.record("route:api", T0 + 10, &sample(3, 0)).unwrap();
    // [T0+5, T0+12) touches both 10 s slots: both count.
    assert_eq!(h.sum("route:api", T0 + 5, T0 + 12).total, 5);
    // [T0+10, T0+20) is exactly the second slot.
    assert_eq!(h.sum("route:api", T0 + 10, T0 + 20).total, 3);
}

#[test]
fn unknown_series_and_empty_windows_give_empty_samples_with_all_buckets() {
    let mut h = memory();
    h.record("route:api", T0, &sample(2, 0)).unwrap();
    assert_eq!(h.sum("route:nope", T0, T0 + 10), Sample::empty(4));
    assert_eq!(h.sum("route:api", T0 + 10, T0), Sample::empty(4));
    assert_eq!(h.sum("route:api", T0 + 100, T0 + 200), Sample::empty(4));
}

#[test]
fn a_window_across_every_tier_counts_each_record_once() {
    let mut h = memory();
    // One request every 10 s for 4 days: the last 6 h are read from 10 s slots, back to 3
    // days from 1 min slots, the rest from 10 min slots.
    let end = T0 + 4 * DAY;
    steady(&mut h, "route:api", T0, end);
    assert_eq!(h.sum("route:api", T0, end).total, 4 * DAY / 10);
    // A window across the 10 s / 1 min boundary (6 h back), aligned to minutes: exact.
    let (from, to) = (end - 7 * HOUR, end - 5 * HOUR);
    assert_eq!(h.sum("route:api", from, to).total, 2 * HOUR / 10);
    // Across the 1 min / 10 min boundary (3 days back).
    let (from, to) = (end - 3 * DAY - HOUR, end - 3 * DAY + HOUR);
    assert_eq!(h.sum("route:api", from, to).total, 2 * HOUR / 10);
}

#[test]
fn where_tiers_meet_no_slot_is_counted_twice() {
    let mut h = memory();
    // The 10 s tier's oldest slot is half a minute into a minute: the 1 min tier must not
    // answer for that whole minute as well.
    let end = T0 + 4 * DAY + 30;
    steady(&mut h, "route:api", T0, end);
    assert_eq!(h.sum("route:api", T0, end).total, (end - T0) / 10);
}

#[test]
fn beyond_six_hours_a_window_is_rounded_to_minutes() {
    let mut h = memory();
    h.record("route:api", T0 + 20, &sample(7, 0)).unwrap();
    h.record("route:other", T0 + 7 * HOUR, &sample(1, 0))
        .unwrap(); // time moves on
                   // T0+20 is past the 10 s tier's span: the 1 min slot [T0, T0+60) answers for it.
    assert_eq!(h.sum("route:api", T0 + 30, T0 + 40).total, 7);
    assert_eq!(h.sum("route:api", T0 + 60, T0 + 120).total, 0);
}

#[test]
fn a_ring_slot_is_overwritten_when_its_time_comes_round() {
    let mut h = memory();
    h.record("route:api", T0, &sample(5, 5)).unwrap();
    // Exactly 6 h later the same 10 s position comes round: it must hold the new data only.
    h.record("route:api", T0 + 6 * HOUR, &sample(1, 0)).unwrap();
    assert_eq!(
        h.sum("route:api", T0 + 6 * HOUR, T0 + 6 * HOUR + 10),
        sample(1, 0)
    );
    // The old record lives on in the coarser tiers.
    assert_eq!(h.sum("route:api", T0, T0 + 60).errors, 5);
}

#[test]
fn after_thirty_five_days_old_data_is_gone() {
    let mut h = memory();
    h.record("route:api", T0, &sample(5, 0)).unwrap();
    h.record("route:api", T0 + 35 * DAY, &sample(1, 0)).unwrap();
    assert_eq!(h.sum("route:api", T0, T0 + 600).total, 0);
    assert_eq!(h.sum("route:api", T0, T0 + 36 * DAY).total, 1);
    assert_eq!(
        h.record("route:api", T0, &sample(1, 0)),
        Err(RecordError::TooOld {
            series: "route:api".into(),
            at: T0
        })
    );
    // A new series too: the tiers' spans are the history's, not each series'.
    assert!(matches!(
        h.record("route:new", T0, &sample(1, 0)),
        Err(RecordError::TooOld { .. })
    ));
    assert_eq!(h.refusals().too_old, 2);
}

#[test]
fn a_series_silent_for_thirty_five_days_is_pruned_and_frees_its_place() {
    let limits = HistoryLimits { max_series: 2 };
    let mut h = History::in_memory(BOUNDS.to_vec(), limits).unwrap();
    h.record("route:old", T0, &sample(1, 0)).unwrap();
    h.record("route:live", T0 + 36 * DAY, &sample(1, 0))
        .unwrap();
    assert!(h.record("route:new", T0 + 36 * DAY, &sample(1, 0)).is_err());
    let stats = h.flush().unwrap();
    assert_eq!(stats.series_pruned, 1);
    assert_eq!(h.series(), vec!["route:live".to_string()]);
    h.record("route:new", T0 + 36 * DAY, &sample(1, 0)).unwrap();
}

#[test]
fn new_series_beyond_max_series_are_refused_and_counted() {
    let limits = HistoryLimits { max_series: 2 };
    let mut h = History::in_memory(BOUNDS.to_vec(), limits).unwrap();
    h.record("route:a", T0, &sample(1, 0)).unwrap();
    h.record("route:b", T0, &sample(1, 0)).unwrap();
    for _ in 0..3 {
        assert_eq!(
            h.record("route:c", T0, &sample(1, 0)),
            Err(RecordError::TooManySeries {
                series: "route:c".into(),
                max: 2
            })
        );
    }
    h.record("route:a", T0 + 10, &sample(1, 0)).unwrap(); // known series still recorded
    assert_eq!(h.refusals().series, 3);
    assert_eq!(
        h.series(),
        vec!["route:a".to_string(), "route:b".to_string()]
    );
}

#[test]
fn a_histogram_of_the_wrong_length_is_refused() {
    let mut h = memory();
    let bad = Sample {
        total: 1,
        errors: 0,
        buckets: vec![1, 0],
    };
    assert!(matches!(
        h.record("route:api", T0, &bad),
        Err(RecordError::BucketCount {
            expected: 4,
            got: 2,
            ..
        })
    ));
    assert_eq!(h.refusals().bad_buckets, 1);
    assert!(h.series().is_empty());
}

#[test]
fn bounds_must_be_finite_and_strictly_increasing() {
    for bad in [
        vec![],
        vec![0.1, 0.1],
        vec![0.5, 0.1],
        vec![0.1, f64::INFINITY],
    ] {
        let err = History::in_memory(bad.clone(), HistoryLimits::default()).unwrap_err();
        assert!(matches!(err, HistoryError::InvalidBounds { .. }), "{bad:?}");
        assert!(!err.retry_may_succeed());
    }
}

#[test]
fn counters_saturate_instead_of_wrapping() {
    let mut h = memory();
    h.record("route:api", T0, &sample(u64::from(u32::MAX), 0))
        .unwrap();
    h.record("route:api", T0, &sample(10, 0)).unwrap();
    assert_eq!(h.sum("route:api", T0, T0 + 10).total, u64::from(u32::MAX));
    assert!(h.refusals().saturated > 0);
}

// ---- points ----

#[test]
fn points_give_one_sample_per_step() {
    let mut h = memory();
    steady(&mut h, "route:api", T0, T0 + 600);
    let points = h.points("route:api", T0, T0 + 300, 60);
    let starts: Vec<u64> = points.iter().map(|(at, _)| *at).collect();
    assert_eq!(starts, vec![T0, T0 + 60, T0 + 120, T0 + 180, T0 + 240]);
    assert!(points.iter().all(|(_, s)| s.total == 6), "{points:?}");
}

#[test]
fn points_from_beyond_six_hours_come_from_minutes_and_round_the_step() {
    let mut h = memory();
    steady(&mut h, "route:api", T0, T0 + 8 * HOUR);
    // From 7 h back, the 1 min tier is the finest that holds it: a 30 s step becomes 60 s.
    let from = T0 + HOUR;
    let points = h.points("route:api", from + 15, from + 180, 30);
    let starts: Vec<u64> = points.iter().map(|(at, _)| *at).collect();
    assert_eq!(starts, vec![from, from + 60, from + 120]);
    assert!(points.iter().all(|(_, s)| s.total == 6));
}

#[test]
fn points_are_capped() {
    let mut h = memory();
    h.record("route:api", T0, &sample(1, 0)).unwrap();
    assert_eq!(h.points("route:api", 0, u64::MAX, 0).len(), MAX_POINTS);
}

// ---- the file ----

#[test]
fn a_new_file_is_created_with_its_directory() {
    let dir = TempDir::new("create");
    let path = dir.0.join("sub").join("history.redb");
    let (_h, notice) = open(&path);
    assert_eq!(notice, OpenNotice::Created);
    assert!(path.is_file());
}

#[test]
fn reopening_after_a_flush_keeps_the_data() {
    let dir = TempDir::new("reopen");
    {
        let (mut h, _) = open(&dir.file());
        steady(&mut h, "route:api", T0, T0 + HOUR);
        h.record("service:app", T0, &sample(4, 2)).unwrap();
        let stats = h.flush().unwrap();
        assert!(stats.slots_written > 0 && stats.file_bytes.is_some());
    }
    let (h, notice) = open(&dir.file());
    assert_eq!(
        notice,
        OpenNotice::Reopened {
            series: 2,
            slots: 360 + 60 + 6 + 3
        }
    );
    assert_eq!(
        h.series(),
        vec!["route:api".to_string(), "service:app".into()]
    );
    assert_eq!(h.sum("route:api", T0, T0 + HOUR).total, 360);
    assert_eq!(
        h.sum("route:api", T0 + 10, T0 + 20).total,
        1,
        "10 s detail kept"
    );
    assert_eq!(h.sum("service:app", T0, T0 + 10), sample(4, 2));
}

#[test]
fn a_restart_loses_only_what_was_not_flushed() {
    let dir = TempDir::new("unflushed");
    {
        let (mut h, _) = open(&dir.file());
        h.record("route:api", T0, &sample(1, 0)).unwrap();
        h.flush().unwrap();
        h.record("route:api", T0, &sample(10, 0)).unwrap(); // never flushed
    }
    let (h, _) = open(&dir.file());
    assert_eq!(h.sum("route:api", T0, T0 + 10).total, 1);
}

#[test]
fn a_flush_writes_only_what_changed() {
    let dir = TempDir::new("delta");
    let (mut h, _) = open(&dir.file());
    for i in 0..20 {
        steady(&mut h, &format!("route:{i}"), T0, T0 + 600);
    }
    h.flush().unwrap();
    for i in 0..20 {
        h.record(&format!("route:{i}"), T0 + 600, &sample(1, 0))
            .unwrap();
    }
    let stats = h.flush().unwrap();
    assert_eq!(
        stats.chunks_written,
        20 * 3,
        "one chunk per tier per series"
    );
    assert_eq!(h.flush().unwrap().chunks_written, 0);
}

#[test]
fn after_reopening_records_add_to_what_was_read() {
    let dir = TempDir::new("add-after");
    {
        let (mut h, _) = open(&dir.file());
        h.record("route:api", T0, &sample(1, 0)).unwrap();
        h.flush().unwrap();
    }
    {
        let (mut h, _) = open(&dir.file());
        h.record("route:api", T0, &sample(2, 0)).unwrap();
        h.flush().unwrap();
    }
    let (h, _) = open(&dir.file());
    assert_eq!(h.sum("route:api", T0, T0 + 10).total, 3);
}

#[test]
fn the_file_holds_one_slot_per_ring_position() {
    let dir = TempDir::new("bounded");
    {
        let (mut h, _) = open(&dir.file());
        // 7 h at 10 s: the 10 s ring (6 h) turns over; flushing every hour.
        for hour in 0..7 {
            steady(
                &mut h,
                "route:api",
                T0 + hour * HOUR,
                T0 + (hour + 1) * HOUR,
            );
            h.flush().unwrap();
        }
    }
    let (h, notice) = open(&dir.file());
    assert_eq!(
        notice,
        OpenNotice::Reopened {
            series: 1,
            slots: 2160 + 7 * 60 + 7 * 6
        }
    );
    assert_eq!(h.sum("route:api", T0, T0 + 7 * HOUR).total, 7 * 360);
}

#[test]
fn slots_emptied_by_the_ring_moving_on_are_deleted_from_the_file() {
    let dir = TempDir::new("emptied");
    let (mut h, _) = open(&dir.file());
    h.record("route:api", T0, &sample(1, 0)).unwrap();
    h.flush().unwrap();
    // 7 h later the 10 s slot of T0 is past its span (the 1 min and 10 min ones are not).
    h.record("route:api", T0 + 7 * HOUR, &sample(1, 0)).unwrap();
    let stats = h.flush().unwrap();
    assert_eq!((stats.slots_written, stats.chunks_removed), (3, 1));
}

#[test]
fn pruned_series_are_deleted_from_the_file() {
    let dir = TempDir::new("prune-file");
    {
        let (mut h, _) = open(&dir.file());
        h.record("route:old", T0, &sample(1, 0)).unwrap();
        h.flush().unwrap();
        h.record("route:live", T0 + 36 * DAY, &sample(1, 0))
            .unwrap();
        let stats = h.flush().unwrap();
        assert_eq!((stats.series_pruned, stats.chunks_removed), (1, 3));
    }
    let (h, notice) = open(&dir.file());
    assert_eq!(
        notice,
        OpenNotice::Reopened {
            series: 1,
            slots: 3
        }
    );
    assert_eq!(h.series(), vec!["route:live".to_string()]);
}

fn assert_moved_aside(dir: &TempDir, notice: &OpenNotice) {
    let OpenNotice::MovedAside { moved_to, .. } = notice else {
        panic!("expected MovedAside, got {notice:?}");
    };
    let name = moved_to.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("history.redb.corrupt-"), "{name}");
    assert!(moved_to.is_file());
    assert_eq!(dir.entries(), vec!["history.redb".to_string(), name]);
}

#[test]
fn a_garbage_file_is_moved_aside_and_a_new_history_started() {
    let dir = TempDir::new("garbage");
    std::fs::write(dir.file(), vec![0x5a; 10_000]).unwrap();
    let (mut h, notice) = open(&dir.file());
    assert_moved_aside(&dir, &notice);
    h.record("route:api", T0, &sample(1, 0)).unwrap();
    h.flush().unwrap();
    drop(h);
    let (h, notice) = open(&dir.file());
    assert!(matches!(notice, OpenNotice::Reopened { series: 1, .. }));
    assert_eq!(h.sum("route:api", T0, T0 + 10).total, 1);
}

#[test]
fn a_zero_length_file_is_moved_aside() {
    let dir = TempDir::new("empty");
    std::fs::write(dir.file(), b"").unwrap();
    let (_h, notice) = open(&dir.file());
    assert_moved_aside(&dir, &notice);
}

#[test]
fn a_file_cut_in_the_middle_is_moved_aside() {
    let dir = TempDir::new("cut");
    {
        let (mut h, _) = open(&dir.file());
        for i in 0..10 {
            steady(&mut h, &format!("route:{i}"), T0, T0 + 2 * HOUR);
        }
        h.flush().unwrap();
    }
    let len = std::fs::metadata(dir.file()).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.file())
        .unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    let (h, notice) = open(&dir.file());
    assert_moved_aside(&dir, &notice);
    assert!(h.series().is_empty());
}

#[test]
fn other_bounds_start_a_fresh_history_and_keep_the_old_file_aside() {
    let dir = TempDir::new("bounds");
    {
        let (mut h, _) = open(&dir.file());
        h.record("route:api", T0, &sample(1, 0)).unwrap();
        h.flush().unwrap();
    }
    let (h, notice) = History::open(dir.file(), vec![0.1, 0.2], HistoryLimits::default()).unwrap();
    let OpenNotice::BoundsChanged {
        moved_to,
        old_bounds,
    } = notice
    else {
        panic!("expected BoundsChanged, got {notice:?}");
    };
    assert_eq!(old_bounds, BOUNDS.to_vec());
    assert!(moved_to.to_string_lossy().contains("history.redb.bounds-"));
    assert!(h.series().is_empty());
    assert_eq!(h.sum("route:api", T0, T0 + 10), Sample::empty(3));
}

#[test]
fn a_file_already_open_elsewhere_is_unavailable_not_corrupt() {
    let dir = TempDir::new("locked");
    let (_first, _) = open(&dir.file());
    let (_second, notice) = open(&dir.file());
    assert!(
        matches!(
            notice,
            OpenNotice::Unavailable {
                error: HistoryError::Unavailable { .. }
            }
        ),
        "{notice:?}"
    );
    assert_eq!(
        dir.entries(),
        vec!["history.redb".to_string()],
        "nothing moved aside"
    );
}

#[test]
fn a_failing_flush_keeps_the_history_in_memory_and_the_next_one_retries() {
    let dir = TempDir::new("unwritable");
    // The history's directory is a regular file: nothing can be made under it (even by root).
    let blocker = dir.0.join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let path = blocker.join("history.redb");
    let (mut h, notice) = open(&path);
    assert!(
        matches!(notice, OpenNotice::Unavailable { .. }),
        "{notice:?}"
    );
    h.record("route:api", T0, &sample(3, 1)).unwrap();
    let err = h.flush().unwrap_err();
    assert!(
        matches!(err, HistoryError::Unavailable { during: "open", .. }),
        "{err}"
    );
    assert!(err.retry_may_succeed());
    h.record("route:api", T0 + 10, &sample(1, 0)).unwrap();
    assert_eq!(
        h.sum("route:api", T0, T0 + 20).total,
        4,
        "memory kept working"
    );
    // The disk comes back: the next flush writes everything.
    std::fs::remove_file(&blocker).unwrap();
    let stats = h.flush().unwrap();
    assert_eq!(stats.reopened, Some(OpenNotice::Created));
    assert_eq!(stats.slots_written, 2 + 1 + 1);
    drop(h);
    let (h, _) = open(&path);
    assert_eq!(h.sum("route:api", T0, T0 + 20), {
        let mut s = sample(4, 1);
        s.buckets = vec![4, 0, 0, 0];
        s
    });
}

#[test]
fn a_file_found_late_is_added_to_the_memory_not_overwritten() {
    let dir = TempDir::new("late");
    {
        let (mut h, _) = open(&dir.file());
        h.record("route:api", T0, &sample(5, 0)).unwrap();
        h.flush().unwrap();
    }
    // Another holder keeps the file locked while a second history starts.
    let holder = open(&dir.file());
    let (mut h, notice) = open(&dir.file());
    assert!(matches!(notice, OpenNotice::Unavailable { .. }));
    h.record("route:api", T0 + 10, &sample(1, 0)).unwrap();
    drop(holder);
    let stats = h.flush().unwrap();
    assert!(matches!(
        stats.reopened,
        Some(OpenNotice::Reopened { series: 1, .. })
    ));
    assert_eq!(h.sum("route:api", T0, T0 + 20).total, 6);
    drop(h);
    let (h, _) = open(&dir.file());
    assert_eq!(h.sum("route:api", T0, T0 + 20).total, 6);
}

#[test]
fn a_history_can_move_to_a_blocking_thread() {
    fn send<T: Send + 'static>(_: &T) {}
    send(&memory());
}

#[test]
fn a_time_from_a_broken_clock_is_refused_without_harm() {
    let mut h = memory();
    h.record("route:api", T0, &sample(1, 0)).unwrap();
    assert!(matches!(
        h.record("route:api", u64::MAX, &sample(1, 0)),
        Err(RecordError::BadTime { .. })
    ));
    assert_eq!(h.refusals().bad_time, 1);
    assert_eq!(h.sum("route:api", T0, T0 + 10).total, 1, "nothing moved on");
    assert_eq!(h.sum("route:api", 0, u64::MAX).total, 1);
    assert_eq!(
        h.points("route:api", u64::MAX - 5, u64::MAX, u64::MAX)
            .len(),
        1
    );
}

#[test]
fn a_record_older_than_every_tier_makes_no_series() {
    let mut h = memory();
    h.record("route:api", T0 + 40 * DAY, &sample(1, 0)).unwrap();
    assert!(h.record("route:late", T0, &sample(1, 0)).is_err());
    assert_eq!(h.series(), vec!["route:api".to_string()]);
}
