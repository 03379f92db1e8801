//! The access log's writer thread: a bounded queue of batches, drained to stdout or a file
//! by one thread that alone may block on the sink.
//!
//! Why a `std::sync::mpsc::sync_channel` with `try_send`: submitting is a non-blocking,
//! lock-free push for the workers, and the bound is the channel's own. Batches are at most
//! about 33 KiB (one thread buffer), so [`QUEUE_BATCHES`] bounds the memory the log may
//! hold while the sink is stalled.

use crate::Counter;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Batches the queue holds while the sink is slow: 64 batches of up to ~33 KiB, about
/// 2 MiB. A stall longer than the queue absorbs drops lines; it never blocks a worker.
pub const QUEUE_BATCHES: usize = 64;

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    /// A file, opened for appending and created if missing (mode 0666 less the umask).
    File(PathBuf),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Stdout => f.write_str("stdout"),
            Destination::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// An access log file that could not be opened: its path and the OS error.
#[derive(Debug)]
pub struct OpenError {
    pub path: PathBuf,
    pub error: io::Error,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot open access log {}: {}",
            self.path.display(),
            self.error
        )
    }
}

impl std::error::Error for OpenError {}

enum Sink {
    Stdout,
    File(File),
}

impl Sink {
    fn open(d: &Destination) -> Result<Sink, OpenError> {
        match d {
            Destination::Stdout => Ok(Sink::Stdout),
            Destination::File(path) => open_append(path).map(Sink::File),
        }
    }

    fn write_all(&mut self, text: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(text).and_then(|()| out.flush())
            }
            // One write(2) per batch, O_APPEND: no other buffering to flush.
            Sink::File(f) => f.write_all(text),
        }
    }
}

fn open_append(path: &Path) -> Result<File, OpenError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|error| OpenError {
            path: path.to_path_buf(),
            error,
        })
}

enum Message {
    Lines {
        text: String,
        lines: u64,
    },
    /// A new sink is waiting in `State::replacement`: take it now, not at the next batch.
    Wake,
}

/// What the handles and the writer thread share.
struct State {
    destination: Mutex<Destination>,
    /// A sink opened by [`AccessLog::reopen`], taken by the writer before its next write.
    replacement: Mutex<Option<Sink>>,
    dropped: Arc<Counter>,
    /// Batches the queue accepted, and batches the writer finished (written or failed).
    accepted: AtomicU64,
    finished: Mutex<u64>,
    finished_changed: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A handle on one access log: its queue and its writer thread. Clones share them; the
/// writer thread ends when the last handle is dropped, after writing what was queued.
#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<Message>,
    state: Arc<State>,
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog")
            .field("destination", &*lock(&self.state.destination))
            .field("dropped", &self.state.dropped.get())
            .finish()
    }
}

impl AccessLog {
    /// Opens `destination` now (so a bad path is an error at start, not a silent loss) and
    /// starts the writer thread. Lines that are dropped (queue full, or the sink failing)
    /// are added to `dropped`.
    pub fn start(destination: Destination, dropped: Arc<Counter>) -> Result<AccessLog, OpenError> {
        let sink = Sink::open(&destination)?;
        let (log, rx) = AccessLog::queue(QUEUE_BATCHES, destination, dropped);
        let state = log.state.clone();
        std::thread::Builder::new()
            .name("headroom-access-log".into())
            .spawn(move || drain(rx, &state, sink))
            .map_err(|error| OpenError {
                path: PathBuf::from("(access log writer thread)"),
                error,
            })?;
        Ok(log)
    }

    /// The handle and the receiving end of its queue, without a writer thread.
    fn queue(
        capacity: usize,
        destination: Destination,
        dropped: Arc<Counter>,
    ) -> (AccessLog, Receiver<Message>) {
        let (tx, rx) = sync_channel(capacity);
        let state = Arc::new(State {
            destination: Mutex::new(destination),
            replacement: Mutex::new(None),
            dropped,
            accepted: AtomicU64::new(0),
            finished: Mutex::new(0),
            finished_changed: Condvar::new(),
        });
        (AccessLog { tx, state }, rx)
    }

    /// Queues one batch of `lines` whole lines. Never blocks: when the queue is full the
    /// lines are counted as dropped and the batch is given back (to reuse its buffer).
    pub(crate) fn submit(&self, text: String, lines: u64) -> Result<(), String> {
        match self.tx.try_send(Message::Lines { text, lines }) {
            Ok(()) => {
                self.state.accepted.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) => {
                self.state.dropped.add(lines);
                match m {
                    Message::Lines { text, .. } => Err(text),
                    Message::Wake => Err(String::new()),
                }
            }
        }
    }

    /// Reopens the log's file at its path (SIGUSR1, after logrotate renamed it): lines
    /// from the next batch on go to the file now at the path, created if missing. On
    /// error the writer keeps the file it has. Stdout: nothing to do. Opens on the calling
    /// thread (a control thread, not a worker).
    pub fn reopen(&self) -> Result<(), OpenError> {
        let d = lock(&self.state.destination).clone();
        self.switch(Sink::open(&d)?);
        Ok(())
    }

    /// Sends the log to `destination` from the next batch on (a reload that changed
    /// `access_log_path`). On error nothing changes.
    pub fn retarget(&self, destination: Destination) -> Result<(), OpenError> {
        let sink = Sink::open(&destination)?;
        *lock(&self.state.destination) = destination;
        self.switch(sink);
        Ok(())
    }

    fn switch(&self, sink: Sink) {
        *lock(&self.state.replacement) = Some(sink);
        // Wakes an idle writer so the old file is closed now. With the queue full the
        // writer is busy and takes the new sink before its next batch anyway.
        let _ = self.tx.try_send(Message::Wake);
    }

    /// Where the log goes now.
    pub fn destination(&self) -> Destination {
        lock(&self.state.destination).clone()
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.state.dropped.get()
    }

    /// Waits until every batch queued before this call is written, for at most `limit`
    /// (a stalled sink must not hold up shutdown forever). True if all were written.
    /// Batches still in threads' buffers are not queued: [`super::flush_thread`] first.
    pub fn flush(&self, limit: Duration) -> bool {
        let target = self.state.accepted.load(Ordering::SeqCst);
        let finished = lock(&self.state.finished);
        let (_finished, wait) = self
            .state
            .finished_changed
            .wait_timeout_while(finished, limit, |f| *f < target)
            .unwrap_or_else(|p| p.into_inner());
        !wait.timed_out()
    }
}

/// The writer thread: batches in queue order, one write each. A sink that fails (stdout
/// closed, disk full) costs the batch, counted as dropped; the next batch tries again.
fn drain(rx: Receiver<Message>, state: &State, mut sink: Sink) {
    let mut failing = false;
    while let Ok(m) = rx.recv() {
        if let Some(new) = lock(&state.replacement).take() {
            sink = new;
            failing = false;
        }
        let Message::Lines { text, lines } = m else {
            continue;
        };
        match sink.write_all(text.as_bytes()) {
            Ok(()) => failing = false,
            Err(e) => {
                state.dropped.add(lines);
                if !std::mem::replace(&mut failing, true) {
                    let to = lock(&state.destination).clone();
                    tracing::warn!(
                        "access log: cannot write to {to}: {e}; lines are dropped (counted in headroom_access_log_dropped_total) until it works again"
                    );
                }
            }
        }
        drop(text);
        *lock(&state.finished) += 1;
        state.finished_changed.notify_all();
    }
}

#[cfg(test)]
pub(super) fn test_queue(
    capacity: usize,
    dropped: Arc<Counter>,
) -> (AccessLog, impl FnMut() -> Option<(String, u64)>) {
    let (log, rx) = AccessLog::queue(capacity, Destination::Stdout, dropped);
    let next = move || loop {
        match rx.try_recv().ok()? {
            Message::Lines { text, lines } => return Some((text, lines)),
            Message::Wake => continue,
        }
    };
    (log, next)
}
