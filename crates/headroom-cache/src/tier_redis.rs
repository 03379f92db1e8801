//! The Redis tier: memory → Redis → upstream, shared by every headroom instance pointed at
//! the same Redis (standalone or cluster).
//!
//! Layout, under the configured prefix (`headroom:` by default), per primary key hash `H`:
//! - `{H}` — a small stub: the variant-selecting `Vary` fields of the URL's responses;
//! - `{H}:V` — one stored response (see [`Entry::encode`]), `V` the hash of its selecting
//!   values (the coding and the `Vary`'d request headers).
//!
//! `{H}` is a hash tag, so a URL's keys share a cluster slot. Both expire with the entry's
//! freshness plus its stale allowance. A lookup costs one GET for the stub and one for the
//! entry. Writes are spawned (at most [`WRITES_IN_FLIGHT`] at once; past that they are
//! dropped and counted), so a slow Redis never holds a response.
//!
//! Purges are appended to a stream (`purges`, capped), which every instance polls: that is
//! how a purge made through one instance reaches the memory tier of all of them.

use crate::entry::Entry;
use crate::purge::Purge;
use crate::route::CacheRequest;
use bytes::Bytes;
use headroom_config::cache::{RedisConfig, RedisTarget};
use headroom_redis::{Metrics, Options, Redis, Target};
use headroom_telemetry::{Counter, Registry};
use http::HeaderName;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Redis writes in flight at most; more are dropped (the entry is still in memory).
const WRITES_IN_FLIGHT: usize = 64;
/// Purges kept in the stream.
const STREAM_LEN: usize = 4096;
/// How often each instance reads the purge stream.
pub const PURGE_POLL: Duration = Duration::from_millis(250);

const STUB_MAGIC: &[u8; 4] = b"HRV1";

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
        })
    }

    pub(crate) fn breaker_open(&self) -> bool {
        !matches!(self.redis.breaker(), headroom_redis::Breaker::Closed)
    }

    fn stub_key(&self, hash: u64) -> String {
        format!("{}{{{hash:016x}}}", self.prefix)
    }

    fn entry_key(&self, hash: u64, variant: &[u8]) -> String {
        let v = xxhash_rust::xxh3::xxh3_64(variant);
        format!("{}{{{hash:016x}}}:{v:016x}", self.prefix)
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
        let stub: Option<Vec<u8>> = self
            .redis
            .query(redis::cmd("GET").arg(self.stub_key(hash)))
            .await
            .ok()?;
        let stub = stub?;
        let Some(vary) = decode_stub(&stub) else {
            self.garbage.inc();
            return None;
        };
        let variant = crate::route::variant_of(&vary, req.headers, req.coding);
        let raw: Option<Vec<u8>> = self
            .redis
            .query(redis::cmd("GET").arg(self.entry_key(hash, &variant)))
            .await
            .ok()?;
        let raw = Bytes::from(raw?);
        match Entry::decode(&raw) {
            Some(e) if *e.variant == *variant => Some(e),
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

    /// The purges other instances made since the last read.
    pub(crate) async fn poll(&self) -> Vec<Purge> {
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
            .arg(512)
            .to_owned();
        let Ok(items) = self
            .redis
            .query::<Vec<(String, Vec<(String, String)>)>>(&cmd)
            .await
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
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
        out
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
}
