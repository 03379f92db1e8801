//! The history on disk: a redb file with three tables.
//!
//! - `meta`: `format` (one byte, [`FORMAT`]) and `bounds` (the latency bounds, f64
//!   little-endian), so a file is never read with another bucket layout;
//! - `series`: id (`u32`) → name;
//! - `slots`: key (tier, ring position, series id, packed in a `u64`) → the slot number
//!   then `total`, `errors` and the buckets, each a LEB128 varint. Only non-empty slots are
//!   stored, and a ring position has one key, so the file holds at most
//!   `max_series × (2160 + 4320 + 5040)` slots.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use super::ring::TIERS;
use super::series::{slot_key, split_key, SeriesSet};
use super::Sample;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SERIES: TableDefinition<u32, &str> = TableDefinition::new("series");
const SLOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("slots");

/// The layout of the tables above; another value is read as a corrupt file.
const FORMAT: u8 = 1;

/// redb's page cache. Its default is 1 GiB; the history is read once at open and written in
/// small batches, so a few MiB do.
const CACHE_BYTES: usize = 4 << 20;

/// Why the file could not be used.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The file is not a history (garbage, cut short, another format): move it aside.
    Corrupt(String),
    /// The file or its directory cannot be used now (permissions, full disk, locked by
    /// another process): try again later.
    Unavailable(String),
}

impl From<redb::Error> for Failure {
    fn from(e: redb::Error) -> Failure {
        use redb::Error as E;
        match e {
            E::Corrupted(_)
            | E::UpgradeRequired(_)
            | E::RepairAborted
            | E::TableTypeMismatch { .. }
            | E::TableIsMultimap(_)
            | E::TypeDefinitionChanged { .. } => Failure::Corrupt(e.to_string()),
            E::Io(ref io)
                if matches!(io.kind(), ErrorKind::UnexpectedEof | ErrorKind::InvalidData) =>
            {
                Failure::Corrupt(e.to_string())
            }
            _ => Failure::Unavailable(e.to_string()),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Failure {
                Failure::from(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Opens (or creates) the file. A zero-length file is a file cut short, not a new one.
pub(crate) fn open(path: &Path) -> Result<Database, Failure> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)
            .map_err(|e| Failure::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
    }
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() == 0 => {
            return Err(Failure::Corrupt("the file is empty (cut short?)".into()))
        }
        _ => {}
    }
    // redb checks its own structures and may assert on a badly damaged file; a damaged file
    // must not take the gateway down, so a panic in here reads as "corrupt".
    let opened = std::panic::catch_unwind(|| {
        Database::builder()
            .set_cache_size(CACHE_BYTES)
            // v3 files are the ones redb 3 reads, so a later upgrade keeps the history.
            .create_with_file_format_v3(true)
            .set_repair_callback(|_| {})
            .create(path)
    });
    match opened {
        Ok(db) => Ok(db?),
        Err(_) => Err(Failure::Corrupt("the store could not read the file".into())),
    }
}

/// The bounds the file was written with; `None` for a new, empty file.
pub(crate) fn stored_bounds(db: &Database) -> Result<Option<Vec<f64>>, Failure> {
    let read = db.begin_read()?;
    let meta = match read.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            let others = read.list_tables()?.count();
            return if others == 0 {
                Ok(None)
            } else {
                Err(Failure::Corrupt("tables without a `meta` table".into()))
            };
        }
        Err(e) => return Err(e.into()),
    };
    let format = meta.get("format")?.map(|v| v.value().to_vec());
    if format.as_deref() != Some(&[FORMAT]) {
        return Err(Failure::Corrupt(format!(
            "format {format:?}, expected [{FORMAT}]"
        )));
    }
    let bytes = meta
        .get("bounds")?
        .map(|v| v.value().to_vec())
        .ok_or_else(|| Failure::Corrupt("no bounds".into()))?;
    if bytes.len() % 8 != 0 {
        return Err(Failure::Corrupt(
            "bounds of a length not a multiple of 8".into(),
        ));
    }
    Ok(Some(
        bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
    ))
}

/// Writes the format and bounds into a new file.
pub(crate) fn write_meta(db: &Database, bounds: &[f64]) -> Result<(), Failure> {
    let write = db.begin_write()?;
    {
        let mut meta = write.open_table(META)?;
        meta.insert("format", [FORMAT].as_slice())?;
        let bytes: Vec<u8> = bounds.iter().flat_map(|b| b.to_le_bytes()).collect();
        meta.insert("bounds", bytes.as_slice())?;
        write.open_table(SERIES)?;
        write.open_table(SLOTS)?;
    }
    write.commit()?;
    Ok(())
}

/// What [`load`] read.
pub(crate) struct Loaded {
    pub(crate) series: usize,
    pub(crate) slots: usize,
    /// Some series could not keep their id (or their place): the file must be rewritten.
    pub(crate) renumbered: bool,
}

/// Reads every series and slot into `set` (empty or not: slots add up).
pub(crate) fn load(db: &Database, set: &mut SeriesSet) -> Result<Loaded, Failure> {
    let read = db.begin_read()?;
    let names = read.open_table(SERIES)?;
    let mut ids = std::collections::HashMap::new();
    let mut renumbered = false;
    for row in names.iter()? {
        let (id, name) = row?;
        let (id, name) = (id.value(), name.value());
        match set.id_or_insert(name, Some(id)) {
            Some(mine) => {
                renumbered |= mine != id;
                ids.insert(id, mine);
            }
            None => {
                set.refusals.series += 1;
                renumbered = true;
            }
        }
    }
    let slots = read.open_table(SLOTS)?;
    let mut sample = Sample::empty(set.buckets());
    let mut count = 0;
    for row in slots.iter()? {
        let (key, value) = row?;
        let (tier, pos, id) = split_key(key.value());
        let spec = *TIERS
            .get(tier)
            .ok_or_else(|| Failure::Corrupt(format!("slot key {:#x}: tier {tier}", key.value())))?;
        let slot = decode(value.value(), &mut sample)
            .ok_or_else(|| Failure::Corrupt(format!("slot key {:#x}: bad value", key.value())))?;
        if slot % spec.slots != pos {
            return Err(Failure::Corrupt(format!(
                "slot key {:#x}: slot {slot} is not at position {pos}",
                key.value()
            )));
        }
        let Some(&mine) = ids.get(&id) else {
            renumbered = true; // a slot of no (or a refused) series: drop it on rewrite
            continue;
        };
        if set.add(mine, tier, slot, &sample) {
            count += 1;
        }
    }
    Ok(Loaded {
        series: ids.len(),
        slots: count,
        renumbered,
    })
}

/// What [`write`] wrote.
#[derive(Default)]
pub(crate) struct Written {
    pub(crate) slots_written: usize,
    pub(crate) slots_removed: usize,
    pub(crate) value_bytes: usize,
}

/// Writes what changed in `set` in one transaction (or everything, after emptying the
/// tables, when `rewrite` is set). Does not mark anything clean: the caller does once this
/// returned `Ok`.
pub(crate) fn write(db: &Database, set: &SeriesSet, rewrite: bool) -> Result<Written, Failure> {
    let write = db.begin_write()?;
    let mut done = Written::default();
    {
        if rewrite {
            write.delete_table(SERIES)?;
            write.delete_table(SLOTS)?;
        }
        let mut names = write.open_table(SERIES)?;
        let mut slots = write.open_table(SLOTS)?;
        for &key in &set.gone_keys {
            if slots.remove(key)?.is_some() {
                done.slots_removed += 1;
            }
        }
        let ids: Vec<u32> = if rewrite {
            (0..set.by_id.len() as u32).collect()
        } else {
            set.dirty_ids.clone()
        };
        for id in ids {
            match set.by_id.get(id as usize).and_then(Option::as_ref) {
                Some(series) => {
                    names.insert(id, series.name.as_str())?;
                }
                None => {
                    names.remove(id)?;
                }
            }
        }
        let mut keys = Vec::new();
        for (id, series) in set.by_id.iter().enumerate() {
            let Some(series) = series else { continue };
            for (tier, ring) in series.rings.iter().enumerate() {
                let key = |pos| slot_key(tier, pos, id as u32);
                if rewrite {
                    keys.extend(ring.occupied(set.width).map(key));
                } else {
                    keys.extend(ring.dirty_positions().map(key));
                }
            }
        }
        keys.sort_unstable();
        let mut buf = Vec::with_capacity(10 * (set.width + 1));
        for key in keys {
            let (tier, pos, id) = split_key(key);
            let cells = set.by_id[id as usize]
                .as_ref()
                .and_then(|s| s.rings[tier].at(TIERS[tier], set.width, pos));
            match cells {
                Some((slot, cells)) => {
                    buf.clear();
                    encode(slot, cells, &mut buf);
                    slots.insert(key, buf.as_slice())?;
                    done.slots_written += 1;
                    done.value_bytes += buf.len();
                }
                None => {
                    if slots.remove(key)?.is_some() {
                        done.slots_removed += 1;
                    }
                }
            }
        }
    }
    write.commit()?;
    Ok(done)
}

fn encode(slot: u64, cells: &[u32], out: &mut Vec<u8>) {
    put_varint(out, slot);
    for &c in cells {
        put_varint(out, u64::from(c));
    }
}

/// The slot number, with the counters put into `into` (which has the right bucket count).
fn decode(mut bytes: &[u8], into: &mut Sample) -> Option<u64> {
    let slot = take_varint(&mut bytes)?;
    into.total = take_varint(&mut bytes)?;
    into.errors = take_varint(&mut bytes)?;
    for bucket in &mut into.buckets {
        *bucket = take_varint(&mut bytes)?;
    }
    bytes.is_empty().then_some(slot)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Moves `path` to `<path>.<what>-<unix secs>` (a free name), returning where it went.
pub(crate) fn move_aside(path: &Path, what: &str, unix_secs: u64) -> std::io::Result<PathBuf> {
    let base = format!("{}.{what}-{unix_secs}", path.display());
    let mut target = PathBuf::from(&base);
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    fs::rename(path, &target)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_truncation() {
        let mut buf = Vec::new();
        encode(
            u64::from(u32::MAX) * 3,
            &[0, 1, 127, 128, u32::MAX],
            &mut buf,
        );
        let mut sample = Sample::empty(3);
        assert_eq!(decode(&buf, &mut sample), Some(u64::from(u32::MAX) * 3));
        assert_eq!(sample.total, 0);
        assert_eq!(sample.errors, 1);
        assert_eq!(sample.buckets, vec![127, 128, u64::from(u32::MAX)]);
        assert_eq!(decode(&buf[..buf.len() - 1], &mut sample), None);
        buf.push(0);
        assert_eq!(decode(&buf, &mut sample), None, "trailing bytes");
    }
}
