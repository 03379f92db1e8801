//! One structured line per request, JSON or combined log format, batched per thread and
//! written by one writer thread, so a slow or stalled log sink never stops a worker.
//!
//! Each worker thread appends to its own buffer (no lock per request). When the buffer
//! passes 32 KiB, or when the worker's 100 ms tick calls [`flush_thread`], the buffer is
//! handed, as one batch of whole lines, to the thread's [`AccessLog`]: a bounded queue that
//! one writer thread drains to stdout or a file. A full queue (the sink stalled: a log
//! shipper that stopped reading a pipe, a full disk) never blocks: the batch is dropped and
//! its lines counted in `headroom_access_log_dropped_total`. One writer and FIFO batches
//! keep each thread's lines in order; a batch holds whole lines only, so lines stay whole.

mod format;
pub use format::civil_from_days;
mod writer;

pub use format::{format_entry, Entry, Format};
pub use writer::{AccessLog, Destination, OpenError, QUEUE_BATCHES};

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

/// A thread's buffer is handed to the writer when it passes this many bytes: one `write`
/// per 32 KiB, at most one allocation per batch.
const FLUSH_AT: usize = 32 << 10;

/// This thread's lines not yet handed to the writer, and where they go.
struct Local {
    buf: String,
    /// Lines in `buf`, for the dropped count (which counts lines, not batches).
    lines: u64,
    log: Option<AccessLog>,
}

impl Local {
    /// Hands the buffered lines to the writer's queue, or drops and counts them when the
    /// queue is full. Never blocks.
    fn hand_off(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let Some(log) = self.log.as_ref().or_else(|| fallback()) else {
            self.buf.clear();
            self.lines = 0;
            return;
        };
        let lines = std::mem::take(&mut self.lines);
        if let Err(mut back) = log.submit(std::mem::take(&mut self.buf), lines) {
            // Dropped (and counted): keep its allocation for the next batch.
            back.clear();
            self.buf = back;
        }
    }
}

impl Drop for Local {
    /// A thread that ends with lines buffered hands them on (the gateway's workers flush
    /// before they end; this covers any other thread).
    fn drop(&mut self) {
        if self.log.is_some() {
            self.hand_off();
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local {
            buf: String::new(),
            lines: 0,
            log: None,
        })
    };
}

/// Where lines of threads that were never [`attach`]ed go: stdout, through a writer thread
/// of their own, started on first use. The gateway attaches every thread that serves
/// requests, so this serves tests and tools. `None` if its thread could not be started.
fn fallback() -> Option<&'static AccessLog> {
    static FALLBACK: OnceLock<Option<AccessLog>> = OnceLock::new();
    FALLBACK
        .get_or_init(|| AccessLog::start(Destination::Stdout, Arc::default()).ok())
        .as_ref()
}

/// Sends the calling thread's lines to `log` from now on (lines already buffered go to
/// the log they were written for). Call once per worker thread at start-up.
pub fn attach(log: &AccessLog) {
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        l.hand_off();
        l.log = Some(log.clone());
    });
}

/// Appends one line for `e` to this thread's buffer; hands the buffer to the writer when
/// it passes 32 KiB. Cost: formatting into a reused buffer; no lock, no syscall, and an
/// allocation only for the first line after a hand-off.
pub fn write(format: Format, e: &Entry) {
    // try_with: a line written from another thread-local's destructor is lost, not a panic.
    let _ = LOCAL.try_with(|l| {
        let mut l = l.borrow_mut();
        if l.buf.capacity() == 0 {
            l.buf.reserve(FLUSH_AT + 1024);
        }
        format_entry(&mut l.buf, format, e);
        l.lines += 1;
        if l.buf.len() >= FLUSH_AT {
            l.hand_off();
        }
    });
}

/// Hands this thread's buffered lines to the writer (the worker's 100 ms tick, and before
/// a worker ends). Never blocks; see [`AccessLog::flush`] to wait until they are written.
pub fn flush_thread() {
    let _ = LOCAL.try_with(|l| l.borrow_mut().hand_off());
}

#[cfg(test)]
mod tests;
