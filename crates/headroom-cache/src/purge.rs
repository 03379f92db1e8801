//! Purges: one URL (all its variants), a path prefix, a tag (`Surrogate-Key`/`Cache-Tag`),
//! or everything; hard (deleted) or soft (marked stale, so stale-while-revalidate and
//! stale-if-error still protect the origin).
//!
//! A purge is applied to the memory tier at once, and recorded: the Redis tier's entries
//! are not rewritten (a cluster has no cheap "every key with this tag"); instead each
//! instance keeps the recent purges and checks an entry loaded from Redis against those
//! made after it was stored. Through Redis, the record reaches every instance (a stream
//! each polls), which applies it to its own memory tier.

use crate::entry::{unix_ms, Entry};
use crate::memory::Memory;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "value")]
pub enum PurgeKind {
    /// `host/path?query` or `/path?query` (any host).
    Url(String),
    /// A path prefix, `host/prefix` or `/prefix`.
    Prefix(String),
    Tag(String),
    All,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Purge {
    #[serde(flatten)]
    pub kind: PurgeKind,
    #[serde(default)]
    pub soft: bool,
    /// When it was made (ms since the epoch): entries stored later are not affected.
    #[serde(default)]
    pub at_ms: u64,
}

impl Purge {
    pub fn new(kind: PurgeKind, soft: bool) -> Purge {
        Purge {
            kind: normalise(kind),
            soft,
            at_ms: unix_ms(SystemTime::now()),
        }
    }

    /// Does this purge cover `e`? (Only those stored before it.)
    pub fn matches(&self, e: &Entry) -> bool {
        if e.stored_at_ms() > self.at_ms {
            return false;
        }
        self.covers(e)
    }

    fn covers(&self, e: &Entry) -> bool {
        let url = &*e.url;
        let path = url.find('/').map_or(url, |i| &url[i..]);
        match &self.kind {
            PurgeKind::All => true,
            PurgeKind::Tag(t) => e.tags.iter().any(|x| &**x == t),
            PurgeKind::Url(u) if u.starts_with('/') => path == u,
            PurgeKind::Url(u) => url == u,
            PurgeKind::Prefix(p) if p.starts_with('/') => path.starts_with(p.as_str()),
            PurgeKind::Prefix(p) => url.starts_with(p.as_str()),
        }
    }

    pub fn kind_label(&self) -> &'static str {
        match self.kind {
            PurgeKind::Url(_) => "url",
            PurgeKind::Prefix(_) => "prefix",
            PurgeKind::Tag(_) => "tag",
            PurgeKind::All => "all",
        }
    }
}

/// `http://Host/p?q` → `host/p?q`; `/p` stays; a host without a path gets `/`.
fn normalise(kind: PurgeKind) -> PurgeKind {
    let url = |s: String| {
        let s = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .map(str::to_string)
            .unwrap_or(s);
        if s.starts_with('/') {
            return s;
        }
        match s.find('/') {
            Some(i) => format!("{}{}", s[..i].to_ascii_lowercase(), &s[i..]),
            None => format!("{}/", s.to_ascii_lowercase()),
        }
    };
    match kind {
        PurgeKind::Url(u) => PurgeKind::Url(url(u)),
        PurgeKind::Prefix(p) => PurgeKind::Prefix(url(p)),
        k => k,
    }
}

/// Applies `p` to the memory tier: the number of entries it purged.
pub fn apply(memory: &Memory, p: &Purge) -> u64 {
    let mut n = 0;
    if matches!(p.kind, PurgeKind::All) && !p.soft {
        n = memory
            .map
            .iter()
            .map(|(_, o)| o.variants.len() as u64)
            .sum();
        memory.map.invalidate_all();
        return n;
    }
    for (hash, obj) in memory.map.iter() {
        for v in obj.variants.iter() {
            if p.matches(v) {
                n += 1;
                if p.soft {
                    v.soft_purge();
                } else {
                    memory.remove_variant(*hash, &obj.key, v);
                }
            }
        }
    }
    n
}

/// The recent purges, to check entries that come back from the Redis tier.
#[derive(Default)]
pub struct Log {
    recent: Mutex<VecDeque<Purge>>,
    /// The latest `at_ms` recorded: an entry stored after it is admitted without a look at
    /// the list (the common case: no purge since it was stored).
    newest: std::sync::atomic::AtomicU64,
}

/// Purges kept: past this many, the oldest are forgotten (an entry from Redis stored before
/// a forgotten purge could come back; at this count the window is far longer than a purge
/// storm needs).
const KEPT: usize = 4096;

impl Log {
    pub fn record(&self, p: Purge) {
        self.newest
            .fetch_max(p.at_ms, std::sync::atomic::Ordering::Relaxed);
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() == KEPT {
            r.pop_front();
        }
        r.push_back(p);
    }

    /// Applies the purges made after `e` was stored: `false` when one deletes it (a miss);
    /// a soft one marks it stale.
    pub fn admit(&self, e: &Arc<Entry>) -> bool {
        if e.stored_at_ms() > self.newest.load(std::sync::atomic::Ordering::Relaxed) {
            return true;
        }
        let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        for p in r.iter().rev() {
            if p.at_ms < e.stored_at_ms() {
                // Sorted by time as recorded (roughly): older purges cannot match either,
                // but records from other instances may interleave, so keep looking.
                continue;
            }
            if p.covers(e) {
                if !p.soft {
                    return false;
                }
                e.soft_purge();
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_urls_are_normalised_to_host_and_path() {
        let p = |s: &str| match Purge::new(PurgeKind::Url(s.into()), false).kind {
            PurgeKind::Url(u) => u,
            _ => unreachable!(),
        };
        assert_eq!(p("http://Example.com/a?b=1"), "example.com/a?b=1");
        assert_eq!(p("/a"), "/a");
        assert_eq!(p("example.com"), "example.com/");
    }
}
