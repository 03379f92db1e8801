//! The Redis tier: memory → Redis → upstream, shared by every headroom instance pointed at
//! the same Redis (standalone or cluster).
//!
//! Layout, under the configured prefix (`headroom:` by default), per primary key hash `H`:
//! - `{H}` — a small stub: the variant-selecting `Vary` fields of the URL's responses;
//! - `{H}:V` — one stored response (see [`Entry::encode`]), `V` the hash of its selecting
//!   values (the coding and the `Vary`'d request headers).
//!
//! `{H}` is a hash tag, so a URL's keys share a cluster slot. Both expire with the entry's
//! freshness plus its stale allowance. A lookup is one round trip when the URL has no
//! `Vary` (the common case): one pipeline GETs the stub and the variant such a URL stores
//! (`V` of the coding byte alone); when the stub names `Vary` fields, a second GET fetches
//! the variant they select. Writes are spawned (at most [`WRITES_IN_FLIGHT`] at once; past
//! that they are dropped and counted), so a slow Redis never holds a response.
//!
//! Purges are appended to a stream (`purges`, capped), which every instance polls: that is
//! how a purge made through one instance reaches the memory tier of all of them, and the
//! record against which entries read back from Redis are checked. A new instance reads the
//! whole stream on its first poll, and answers no lookup from Redis before that poll's
//! purges are applied (it waits for them, at most the Redis timeout): an entry purged
//! before it started is never served by it.

use crate::entry::Entry;
use crate::purge::Purge;
use crate::route::CacheRequest;
use bytes::Bytes;
use headroom_config::cache::{RedisConfig, RedisTarget};
use headroom_redis::{Metrics, Options, Redis, Target};
use headroom_telemetry::{Counter, Registry};
use http::HeaderName;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
use std::sync::atomic::{AtomicBool, AtomicU8};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// Redis writes in flight at most; more are dropped (the entry is still in memory).
const WRITES_IN_FLIGHT: usize = 64;
/// Purges kept in the stream.
const STREAM_LEN: usize = 4096;
/// How often each instance reads the purge stream.
pub const PURGE_POLL: Duration = Duration::from_millis(250);
/// Purges read per XRANGE.
const PAGE: usize = 512;
/// Pages read per poll at most, while they come back full: 8,192 purges, twice the stream's
/// length, so a new instance's first poll reads the whole backlog (`MAXLEN ~` lets the
/// stream run a little past [`STREAM_LEN`]) and a storm of purges is followed within a poll
/// or two, while one poll stays bounded however fast purges come.
const PAGES_PER_POLL: usize = 2 * STREAM_LEN / PAGE;

/// Where this instance stands with the purge stream (see [`RedisTier::purges_applied`]).
const FIRST_POLL_PENDING: u8 = 0;
const BEHIND: u8 = 1;
const CAUGHT_UP: u8 = 2;

const STUB_MAGIC: &[u8; 4] = b"HRV1";

/// A GET's reply: the value, or nothing stored.
type Value = Option<Vec<u8>>;

pub(crate) struct RedisTier {
    redis: Redis,
    prefix: String,
    writes: Arc<Semaphore>,
    hits: Arc<Counter>,
    misses: Arc<Counter>,
    garbage: Arc<Counter>,
    dropped: Arc<Counter>,
    written: Arc<Counter>,
    /// This instance's id, so it skips its own purges in the stream.
    pub(crate) instance: u64,
    /// The last stream id read.
    cursor: Mutex<String>,
    /// Did the last poll read to the end of the stream? Becomes [`RedisTier::state`] once
    /// the purges it returned are applied.
    read_to_end: AtomicBool,
    /// [`FIRST_POLL_PENDING`], [`BEHIND`] or [`CAUGHT_UP`]: lookups are answered from Redis
    /// only once caught up (and forever after: later lag is the poll interval's).
    state: AtomicU8,
    /// Wakes lookups waiting for the first poll.
    first_poll: Notify,
    /// How long a lookup waits for the first poll: the Redis timeout.
    timeout: Duration,
}

impl RedisTier {
    pub(crate) fn new(cfg: &RedisConfig, registry: &Registry) -> Result<RedisTier, String> {
        let target = match &cfg.target {
            RedisTarget::Standalone(u) => Target::Standalone(u.clone()),
            RedisTarget::Cluster(urls) => Target::Cluster(urls.clone()),
        };
        let tier = [("tier", "redis")];
        let opts = Options {
            timeout: cfg.timeout,
            breaker_failures: cfg.breaker_failures,
            breaker_cooldown: cfg.breaker_cooldown,
            metrics: Some(Metrics {
                latency: registry.histogram(
                    "headroom_cache_redis_seconds",
                    "Time per call to the cache's Redis tier.",
                    &tier,
                ),
                errors: registry.counter(
                    "headroom_cache_redis_errors_total",
                    "Calls to the cache's Redis tier that failed (timeouts included).",
                    &tier,
                ),
                rejected: registry.counter(
                    "headroom_cache_redis_rejected_total",
                    "Calls to the cache's Redis tier skipped because its breaker was open.",
                    &tier,
                ),
                breaker_open: registry.gauge(
                    "headroom_cache_redis_breaker_open",
                    "1 while the breaker in front of the cache's Redis tier is open.",
                    &tier,
                ),
            }),
            ..Options::default()
        };
        let redis = Redis::new(target, opts).map_err(|e| e.to_string())?;
        let c = |name, help| registry.counter(name, help, &tier);
        Ok(RedisTier {
            redis,
            prefix: cfg.prefix.clone(),
            writes: Arc::new(Semaphore::new(WRITES_IN_FLIGHT)),
            hits: c("headroom_cache_redis_hits_total", "Lookups the Redis tier answered."),
            misses: c(
                "headroom_cache_redis_misses_total",
                "Lookups the Redis tier did not answer (nothing stored, or Redis away).",
            ),
            garbage: c(
                "headroom_cache_redis_garbage_total",
                "Values read from the Redis tier that were not a whole entry (truncated, foreign, corrupted): treated as misses.",
            ),
            dropped: c(
                "headroom_cache_redis_writes_dropped_total",
                "Writes to the Redis tier dropped because too many were in flight.",
            ),
            written: c(
                "headroom_cache_redis_writes_total",
                "Responses written to the Redis tier.",
            ),
            instance: fastrand_u64(),
            cursor: Mutex::new("0-0".into()),
            read_to_end: AtomicBool::new(false),
            // Outside a runtime nothing polls the stream (the cache spawns its follower
            // only inside one): there is no first poll to wait for.
            state: AtomicU8::new(if tokio::runtime::Handle::try_current().is_ok() {
                FIRST_POLL_PENDING
            } else {
                CAUGHT_UP
            }),
            first_poll: Notify::new(),
            timeout: cfg.timeout,
        })
    }

    pub(crate) fn breaker_open(&self) -> bool {
        !matches!(self.redis.breaker(), headroom_redis::Breaker::Closed)
    }

    fn stub_key(&self, hash: u64) -> String {
        let mut k = String::with_capacity(self.prefix.len() + 2 + 16 + 1 + 16);
        k.push_str(&self.prefix);
        k.push('{');
        push_hex(&mut k, hash);
        k.push('}');
        k
    }

    fn entry_key(&self, hash: u64, variant: &[u8]) -> String {
        variant_key(self.stub_key(hash), variant)
    }

    fn stream_key(&self) -> String {
        format!("{}purges", self.prefix)
    }

    /// The stored variant `req` selects, if Redis has it (and answers in time).
    pub(crate) async fn get(&self, hash: u64, req: &CacheRequest<'_>) -> Option<Entry> {
        let got = self.fetch(hash, req).await;
        match &got {
            Some(_) => self.hits.inc(),
            None => self.misses.inc(),
        }
        got
    }

    async fn fetch(&self, hash: u64, req: &CacheRequest<'_>) -> Option<Entry> {
        if !self.caught_up().await {
            return None;
        }
        // The stub, and the variant a URL without Vary stores, in one round trip (one slot:
        // the hash tag, so a cluster takes it too).
        let stub_key = self.stub_key(hash);
        // A URL without Vary: its variant in this coding, or the one stored for any coding.
        let plain = [req.coding as u8];
        let any = [crate::route::ANY_CODING];
        let mut pipe = redis::pipe();
        pipe.cmd("GET")
            .arg(&stub_key)
            .cmd("GET")
            .arg(variant_key(stub_key.clone(), &plain))
            .cmd("GET")
            .arg(variant_key(stub_key.clone(), &any));
        let (stub, plain_raw, any_raw): (Value, Value, Value) =
            self.redis.pipeline(&pipe).await.ok()?;
        let Some(vary) = decode_stub(&stub?) else {
            self.garbage.inc();
            return None;
        };
        let mut variant = crate::route::variant_of(&vary, req.headers, req.coding);
        let raw = if vary.is_empty() {
            plain_raw.or(any_raw)?
        } else {
            let first = variant[0];
            variant[0] = crate::route::ANY_CODING;
            let any_key = self.entry_key(hash, &variant);
            variant[0] = first;
            let mut pipe = redis::pipe();
            pipe.cmd("GET")
                .arg(self.entry_key(hash, &variant))
                .cmd("GET")
                .arg(any_key);
            let (own, anyc): (Value, Value) = self.redis.pipeline(&pipe).await.ok()?;
            own.or(anyc)?
        };
        // Vec → Bytes takes the buffer redis-rs read into: the entry's body is a slice of it.
        let raw = Bytes::from(raw);
        match Entry::decode(&raw) {
            Some(e) if crate::route::variant_matches(&e, req) => Some(e),
            Some(_) => None,
            None => {
                self.garbage.inc();
                None
            }
        }
    }

    /// Writes `e` in the background: its stub and itself, expiring with its freshness plus
    /// its stale allowance.
    pub(crate) fn put(self: &Arc<Self>, hash: u64, e: &Arc<Entry>) {
        let Ok(permit) = self.writes.clone().try_acquire_owned() else {
            self.dropped.inc();
            return;
        };
        let ttl = (e.freshness.lifetime + e.stale_allowance())
            .as_secs()
            .max(1);
        let stub = encode_stub(&e.vary);
        let value = e.encode();
        let (sk, ek) = (self.stub_key(hash), self.entry_key(hash, &e.variant));
        let me = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(&sk)
                .arg(stub)
                .arg("EX")
                .arg(ttl)
                .ignore();
            pipe.cmd("SET")
                .arg(&ek)
                .arg(value.as_ref())
                .arg("EX")
                .arg(ttl)
                .ignore();
            // One slot (the hash tag), so a cluster takes this pipeline too.
            if me.redis.pipeline::<()>(&pipe).await.is_ok() {
                me.written.inc();
            }
        });
    }

    /// Appends `p` to the purge stream (in the background).
    pub(crate) fn publish(self: &Arc<Self>, p: &Purge) {
        let Ok(json) = serde_json::to_string(&Published {
            from: self.instance,
            purge: p.clone(),
        }) else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let key = me.stream_key();
            let cmd = redis::cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_LEN)
                .arg("*")
                .arg("p")
                .arg(json)
                .to_owned();
            if let Err(e) = me.redis.query::<String>(&cmd).await {
                tracing::warn!(error = %e, "cache purge not published to Redis: other instances will not see it");
            }
        });
    }

    /// True once lookups may be answered from Redis: the purges of this instance's first
    /// poll are applied (waited for, at most the Redis timeout, while that poll is under way).
    async fn caught_up(&self) -> bool {
        match self.state.load(Acquire) {
            CAUGHT_UP => return true,
            BEHIND => return false,
            _ => {}
        }
        let woken = self.first_poll.notified();
        // Checked again once registered: `notify_waiters` wakes only those registered.
        if self.state.load(Acquire) == FIRST_POLL_PENDING {
            let _ = tokio::time::timeout(self.timeout, woken).await;
        }
        self.state.load(Acquire) == CAUGHT_UP
    }

    /// Called once the purges [`RedisTier::poll`] returned are applied (in the log that
    /// checks entries read from Redis): when that poll read the stream to its end, this
    /// instance has caught up, and lookups may be answered from Redis. Until a poll has
    /// (Redis away at start, or a storm of purges longer than a poll reads), they are misses.
    pub(crate) fn purges_applied(&self) {
        let state = if self.read_to_end.load(Acquire) {
            CAUGHT_UP
        } else {
            BEHIND
        };
        if self.state.fetch_max(state, AcqRel) == FIRST_POLL_PENDING {
            self.first_poll.notify_waiters();
        }
    }

    /// The purges other instances made since the last read: pages of [`PAGE`] while they
    /// come back full, [`PAGES_PER_POLL`] at most.
    pub(crate) async fn poll(&self) -> Vec<Purge> {
        let mut out = Vec::new();
        let mut read_to_end = false;
        for _ in 0..PAGES_PER_POLL {
            match self.poll_page(&mut out).await {
                Some(n) if n == PAGE => continue,
                Some(_) => read_to_end = true,
                None => {}
            }
            break;
        }
        self.read_to_end.store(read_to_end, Release);
        out
    }

    /// One page of the stream past the cursor, its purges pushed to `out`: how many stream
    /// entries it held (`None` when Redis did not answer).
    async fn poll_page(&self, out: &mut Vec<Purge>) -> Option<usize> {
        let cursor = self
            .cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let cmd = redis::cmd("XRANGE")
            .arg(self.stream_key())
            .arg(format!("({cursor}"))
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .to_owned();
        let items = self
            .redis
            .query::<Vec<(String, Vec<(String, String)>)>>(&cmd)
            .await
            .ok()?;
        let n = items.len();
        if let Some((last, _)) = items.last() {
            *self.cursor.lock().unwrap_or_else(|p| p.into_inner()) = last.clone();
        }
        for (_, fields) in items {
            for (k, v) in fields {
                if k != "p" {
                    continue;
                }
                match serde_json::from_str::<Published>(&v) {
                    Ok(p) if p.from != self.instance => out.push(p.purge),
                    Ok(_) => {}
                    Err(_) => self.garbage.inc(),
                }
            }
        }
        Some(n)
    }
}

/// `{prefix}{H}:V`: the stub's key, `:`, and the hash of the selecting values.
fn variant_key(mut stub_key: String, variant: &[u8]) -> String {
    stub_key.push(':');
    push_hex(&mut stub_key, xxhash_rust::xxh3::xxh3_64(variant));
    stub_key
}

/// `v` as 16 lowercase hex digits.
fn push_hex(out: &mut String, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(char::from(DIGITS[(v >> (shift * 4)) as usize & 0xf]));
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Published {
    from: u64,
    purge: Purge,
}

fn encode_stub(vary: &[HeaderName]) -> Vec<u8> {
    let mut out = STUB_MAGIC.to_vec();
    for (i, v) in vary.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(v.as_str().as_bytes());
    }
    out
}

fn decode_stub(raw: &[u8]) -> Option<Vec<HeaderName>> {
    let rest = raw.strip_prefix(STUB_MAGIC)?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    rest.split(|b| *b == b',')
        .map(|n| HeaderName::from_bytes(n).ok())
        .collect()
}

fn fastrand_u64() -> u64 {
    // Unique enough per process: the time and the process id, mixed.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    xxhash_rust::xxh3::xxh3_64(
        &[t.to_le_bytes(), u64::from(std::process::id()).to_le_bytes()].concat(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stub_survives_its_encoding_and_garbage_is_not_a_stub() {
        let v = vec![
            HeaderName::from_static("accept-language"),
            HeaderName::from_static("x-device"),
        ];
        assert_eq!(decode_stub(&encode_stub(&v)), Some(v));
        assert_eq!(decode_stub(&encode_stub(&[])), Some(vec![]));
        assert_eq!(decode_stub(b"garbage"), None);
        assert_eq!(decode_stub(b"HRV1bad header\n"), None);
    }

    #[test]
    fn keys_keep_their_layout() {
        let mut k = String::from("headroom:{");
        push_hex(&mut k, 0x0123_4567_89ab_cdef);
        k.push('}');
        assert_eq!(
            k,
            format!("headroom:{{{:016x}}}", 0x0123_4567_89ab_cdef_u64)
        );
        let v = xxhash_rust::xxh3::xxh3_64(b"\x01");
        assert_eq!(
            variant_key("p{0000000000000001}".into(), b"\x01"),
            format!("p{{0000000000000001}}:{v:016x}")
        );
    }
}
