//! How a replica ended, and the one-line form the shim reports it in (`exit code 3`).

use std::fmt;
use std::process::ExitStatus;

/// How a replica's process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// It exited on its own with this code (0: success).
    Code(i32),
    /// It was ended by this signal: `15` after a graceful stop, `9` after the grace or a
    /// `kill -9`, `11` for a segfault.
    Signal(i32),
    /// Its status is unknown: the shim supervising it died without reporting it (it was
    /// killed itself). The driver then SIGKILLs the replica's process group, so nothing of it
    /// is left running; the text says what happened to the shim.
    Lost(String),
}

impl Exit {
    /// The exit of a process as the OS reported it.
    pub fn from_status(status: ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            // Stopped or continued: `wait` does not report those for a child it reaped.
            (None, None) => Exit::Lost(format!("unrecognised wait status {status:?}")),
        }
    }

    /// True for `Code(0)`.
    pub fn success(&self) -> bool {
        *self == Exit::Code(0)
    }

    /// The status a process mirroring this exit returns: the code itself, or `128 + signal`
    /// as shells report a death by signal (a process cannot die of SIGKILL on purpose
    /// without `unsafe`), 1 when unknown.
    pub fn mirrored_code(&self) -> u8 {
        match self {
            Exit::Code(code) => (*code & 0xff) as u8,
            Exit::Signal(signal) => 128u8.wrapping_add((*signal & 0x7f) as u8),
            Exit::Lost(_) => 1,
        }
    }

    /// The shim's report line: `exit code 3`, `exit signal 9`, `exit lost <why>`.
    pub(crate) fn to_line(&self) -> String {
        match self {
            Exit::Code(code) => format!("exit code {code}"),
            Exit::Signal(signal) => format!("exit signal {signal}"),
            Exit::Lost(why) => format!("exit lost {}", why.replace('\n', " ")),
        }
    }

    /// Reads a report line written by [`Exit::to_line`]; `None` for any other line.
    pub(crate) fn parse_line(line: &str) -> Option<Exit> {
        let rest = line.trim_end().strip_prefix("exit ")?;
        if let Some(code) = rest.strip_prefix("code ") {
            return code.parse().ok().map(Exit::Code);
        }
        if let Some(signal) = rest.strip_prefix("signal ") {
            return signal.parse().ok().map(Exit::Signal);
        }
        rest.strip_prefix("lost ")
            .map(|why| Exit::Lost(why.to_owned()))
    }
}

/// Linux's numbers (x86-64 and arm64 agree on these) for the signals a replica meets.
pub(crate) fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return None,
    })
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit code {code}"),
            Exit::Signal(signal) => match signal_name(*signal) {
                Some(name) => write!(f, "killed by {name} (signal {signal})"),
                None => write!(f, "killed by signal {signal}"),
            },
            Exit::Lost(why) => write!(f, "status unknown: {why}"),
        }
    }
}
