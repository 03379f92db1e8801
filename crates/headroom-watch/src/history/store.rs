//! The history on disk: a redb file with three tables.
//!
//! - `meta`: `format` (one byte, [`FORMAT`]) and `bounds` (the latency bounds, f64
//!   little-endian), so a file is never read with another bucket layout;
//! - `series`: id (`u32`) → name, then the newest slot number of each tier (which says
//!   what slot each ring position holds);
//! - `slots`: key (tier, chunk of 16 ring positions, series id, packed in a `u64`) → a
//!   bitmask of the chunk's non-empty positions, then for each of them `total`, `errors`
//!   and the buckets. Every number is a LEB128 varint. Only chunks with data are stored,
//!   and a chunk has one key, so the file holds at most `max_series × (2160 + 4320 + 5040)`
//!   slots.
//!
//! Why chunks: redb's B-tree leaves end up about half full when keys arrive in order (as
//! time makes them), and each entry costs 16 bytes besides its key and value; 16 slots per
//! entry make the file ~2× smaller than one slot per entry (measured, the README, "The history").

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use super::ring::{CHUNK, TIERS};
use super::series::{slot_key, split_key, SeriesSet};
use super::Sample;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SERIES: TableDefinition<u32, &[u8]> = TableDefinition::new("series");
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
        let (id, value) = row?;
        let id = id.value();
        let (name, newest) = decode_series(value.value())
            .ok_or_else(|| Failure::Corrupt(format!("series {id}: bad value")))?;
        let Some(mine) = set.id_or_insert(&name, Some(id)) else {
            set.refusals.series += 1;
            renumbered = true;
            continue;
        };
        renumbered |= mine != id;
        let Some(series) = set.by_id[mine as usize].as_mut() else {
            continue;
        };
        if series.rings.iter().any(|r| r.newest().is_some()) {
            return Err(Failure::Corrupt(format!("series {name:?} twice")));
        }
        if newest.iter().flatten().any(|&n| n > super::series::MAX_AT) {
            return Err(Failure::Corrupt(format!(
                "series {name:?}: a time past the year 36812"
            )));
        }
        for (tier, newest) in newest.into_iter().enumerate() {
            series.rings[tier].set_newest(newest);
            if let Some(n) = newest {
                set.newest[tier] = Some(set.newest[tier].map_or(n, |m| m.max(n)));
            }
        }
        ids.insert(id, mine);
    }
    let chunks = read.open_table(SLOTS)?;
    let mut sample = Sample::empty(set.buckets());
    let mut count = 0;
    for row in chunks.iter()? {
        let (key, value) = row?;
        let key = key.value();
        let (tier, chunk, id) = split_key(key);
        let bad = |what: &str| Failure::Corrupt(format!("slot key {key:#x}: {what}"));
        let spec = *TIERS.get(tier).ok_or_else(|| bad("no such tier"))?;
        if (chunk + 1) * CHUNK > spec.slots {
            return Err(bad("no such chunk"));
        }
        let Some(&mine) = ids.get(&id) else {
            renumbered = true; // a chunk of no (or a refused) series: dropped on rewrite
            continue;
        };
        let newest = set.by_id[mine as usize]
            .as_ref()
            .and_then(|s| s.rings[tier].newest())
            .ok_or_else(|| bad("slots in a ring that has none"))?;
        let mut bytes = value.value();
        let mask = take_varint(&mut bytes).ok_or_else(|| bad("bad value"))?;
        for j in (0..CHUNK).filter(|j| mask & (1 << j) != 0) {
            decode_slot(&mut bytes, &mut sample).ok_or_else(|| bad("bad value"))?;
            let pos = chunk * CHUNK + j;
            // The slot at `pos` is the one in newest - slots + 1 ..= newest.
            let back = (newest % spec.slots + spec.slots - pos) % spec.slots;
            let Some(slot) = newest.checked_sub(back) else {
                return Err(bad("a slot before time began"));
            };
            if set.add(mine, tier, slot, &sample) {
                count += 1;
            }
        }
        if !bytes.is_empty() || mask >> CHUNK != 0 {
            return Err(bad("bad value"));
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
    pub(crate) chunks_written: usize,
    pub(crate) slots_written: usize,
    pub(crate) chunks_removed: usize,
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
        let mut chunks = write.open_table(SLOTS)?;
        for &key in &set.gone_keys {
            if chunks.remove(key)?.is_some() {
                done.chunks_removed += 1;
            }
        }
        let mut keys = Vec::new();
        let mut ids: Vec<u32> = set.dirty_ids.clone();
        for (id, series) in set.by_id.iter().enumerate() {
            let Some(series) = series else { continue };
            let before = keys.len();
            for (tier, ring) in series.rings.iter().enumerate() {
                let key = |chunk| slot_key(tier, chunk, id as u32);
                if rewrite {
                    keys.extend(ring.occupied_chunks(set.width).map(key));
                } else {
                    keys.extend(ring.dirty_chunks().map(key));
                }
            }
            // A changed chunk may mean a ring moved on: its newest slot is in the series row.
            if rewrite || keys.len() > before {
                ids.push(id as u32);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        let mut buf = Vec::new();
        for id in ids {
            match set.by_id.get(id as usize).and_then(Option::as_ref) {
                Some(series) => {
                    buf.clear();
                    encode_series(series, &mut buf);
                    names.insert(id, buf.as_slice())?;
                }
                None => {
                    names.remove(id)?;
                }
            }
        }
        keys.sort_unstable();
        for key in keys {
            let (tier, chunk, id) = split_key(key);
            buf.clear();
            let slots = match set.by_id[id as usize].as_ref() {
                Some(series) => encode_chunk(&series.rings[tier], set.width, chunk, &mut buf),
                None => 0,
            };
            if slots > 0 {
                chunks.insert(key, buf.as_slice())?;
                done.chunks_written += 1;
                done.slots_written += slots;
                done.value_bytes += buf.len();
            } else if chunks.remove(key)?.is_some() {
                done.chunks_removed += 1;
            }
        }
    }
    write.commit()?;
    Ok(done)
}

/// Encodes a series row: its name, then each tier's newest slot number + 1 (0: none).
fn encode_series(series: &super::series::Series, out: &mut Vec<u8>) {
    put_varint(out, series.name.len() as u64);
    out.extend_from_slice(series.name.as_bytes());
    for ring in &series.rings {
        put_varint(out, ring.newest().map_or(0, |n| n + 1));
    }
}

fn decode_series(mut bytes: &[u8]) -> Option<(String, [Option<u64>; 3])> {
    let len = usize::try_from(take_varint(&mut bytes)?).ok()?;
    let name = std::str::from_utf8(bytes.get(..len)?).ok()?.to_owned();
    bytes = &bytes[len..];
    let mut newest = [None; 3];
    for n in &mut newest {
        *n = take_varint(&mut bytes)?.checked_sub(1);
    }
    bytes.is_empty().then_some((name, newest))
}

/// Encodes one chunk of a ring; answers the non-empty slots in it (0: nothing to store).
fn encode_chunk(ring: &super::ring::Ring, width: usize, chunk: u64, out: &mut Vec<u8>) -> usize {
    let positions = chunk * CHUNK..(chunk + 1) * CHUNK;
    let full: Vec<u64> = positions
        .filter(|&pos| ring.cells(width, pos).iter().any(|&c| c != 0))
        .collect();
    let mask = full.iter().fold(0u64, |m, pos| m | 1 << (pos % CHUNK));
    put_varint(out, mask);
    for &pos in &full {
        for &c in ring.cells(width, pos) {
            put_varint(out, u64::from(c));
        }
    }
    full.len()
}

/// Reads one slot's counters into `into` (which has the right bucket count).
fn decode_slot(bytes: &mut &[u8], into: &mut Sample) -> Option<()> {
    into.total = take_varint(bytes)?;
    into.errors = take_varint(bytes)?;
    for bucket in &mut into.buckets {
        *bucket = take_varint(bytes)?;
    }
    Some(())
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
        for v in [0, 1, 127, 128, u64::from(u32::MAX), u64::MAX] {
            put_varint(&mut buf, v);
        }
        let mut bytes = buf.as_slice();
        let mut sample = Sample::empty(4);
        assert_eq!(decode_slot(&mut bytes, &mut sample), Some(()));
        assert_eq!((sample.total, sample.errors), (0, 1));
        assert_eq!(
            sample.buckets,
            vec![127, 128, u64::from(u32::MAX), u64::MAX]
        );
        assert!(bytes.is_empty());
        let mut cut = &buf[..buf.len() - 1];
        assert_eq!(decode_slot(&mut cut, &mut sample), None);
    }

    #[test]
    fn a_series_row_round_trips() {
        let mut buf = Vec::new();
        put_varint(&mut buf, 9);
        buf.extend_from_slice(b"route:api");
        for n in [0, 5, u64::MAX] {
            put_varint(&mut buf, n);
        }
        assert_eq!(
            decode_series(&buf),
            Some(("route:api".to_string(), [None, Some(4), Some(u64::MAX - 1)]))
        );
        assert_eq!(decode_series(&buf[..5]), None);
    }
}
