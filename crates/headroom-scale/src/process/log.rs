//! A replica's log file: size-capped with one rotation (`x.log` → `x.log.1`), and its tail.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// An append-only log that never grows past `max` bytes: a write that would cross the cap
/// is cut after its last newline that fits, the file is renamed to `<path>.1` (replacing
/// the older one) and a new one is started. Lines stay whole unless one is longer than the
/// cap itself.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
}

impl LogFile {
    /// Opens `path` for appending (created if missing); `max` below 1 counts as 1.
    pub fn open(path: &Path, max: u64) -> io::Result<LogFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_owned(),
            file,
            size,
            max: max.max(1),
        })
    }

    /// Appends `buf`, rotating as often as it takes.
    pub fn write(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let room = self.max.saturating_sub(self.size);
            if buf.len() as u64 <= room {
                self.file.write_all(buf)?;
                self.size += buf.len() as u64;
                return Ok(());
            }
            let fits = &buf[..room as usize];
            let cut = match fits.iter().rposition(|b| *b == b'\n') {
                Some(newline) => newline + 1,
                // A line longer than the whole cap: cut it where the cap is.
                None if self.size == 0 => fits.len(),
                // Start the line in a fresh file.
                None => 0,
            };
            self.file.write_all(&buf[..cut])?;
            buf = &buf[cut..];
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        self.file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// The last `lines` lines of the file at `path` (at most its last 8 KiB), empty when it
/// cannot be read.
pub fn tail(path: &Path, lines: usize) -> String {
    const WINDOW: u64 = 8 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(WINDOW);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut all: Vec<&str> = text.lines().collect();
    if start > 0 && !all.is_empty() {
        // The first line was cut by the window.
        all.remove(0);
    }
    let from = all.len().saturating_sub(lines);
    all[from..].join("\n")
}
