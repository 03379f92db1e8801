//! JWT (RFC 7519) verification for the guard: a compact JWS checked against configured
//! keys ([`KeySource`]), then its claims against the configured rules; the consumer and the
//! forwarded claims come out as strings.
//!
//! The order is the one that keeps a forged token cheap to refuse and never lets it choose
//! how it is checked: size cap, shape, header; the key by `kid`; the token's `alg` must be
//! one the KEY allows (see [`crate::jwks`]); the signature (jsonwebtoken's `crypto::verify`,
//! on `ring`); only then are the claims read. `alg: none` is not an algorithm here at all.
//!
//! Cost per token, beyond the signature check itself: one base64url decode of the claims
//! (on the stack up to 2 KiB), one pass over them, and the returned strings; jsonwebtoken
//! decodes the signature (and, for HMAC, encodes its own) into small buffers.

mod claims;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod url_tests;

use crate::jwks::{self, AlgSet, Fetch, Key, KeySet, KeySource, Miss, Refresher};
use arc_swap::ArcSwap;
use base64::Engine;
use jsonwebtoken::Algorithm;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How tokens are verified. Build with [`JwtSettings::new`], which sets the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The keys tokens are verified with.
    pub keys: KeySource,
    /// Algorithms accepted (`"RS256"`, `"ES256"`, `"EdDSA"`...). Default empty: every
    /// algorithm the keys allow. Never more than the keys allow: an entry no key fits
    /// narrows nothing, and `"none"` is refused when the verifier is built.
    pub algorithms: Vec<String>,
    /// The `iss` a token must carry (exactly). Default `None`: not checked.
    pub issuer: Option<String>,
    /// A token's `aud` (a string or a list) must hold one of these. Default empty: `aud`
    /// is not checked.
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`. Default 60 s.
    pub leeway: Duration,
    /// A token without `exp` is refused. Default `true`: a token that never expires is a
    /// credential that cannot be revoked.
    pub require_exp: bool,
    /// The claim naming the consumer (a non-empty string, or an integer). Default `"sub"`.
    pub consumer_claim: String,
    /// Claims returned in [`Verified::claims`] for forwarding: strings as they are, numbers
    /// and booleans as text, lists of those joined with `,`. Default empty.
    pub forward_claims: Vec<String>,
    /// Longer tokens are refused before any parsing. Default 8 KiB.
    pub max_token_bytes: usize,
    /// A JWKS URL is fetched this often. Default 5 min.
    pub jwks_refresh: Duration,
    /// A token naming an unknown `kid` refetches a JWKS URL early, at most this often.
    /// Default 10 s.
    pub jwks_min_refetch: Duration,
}

impl JwtSettings {
    /// The defaults, with `keys`.
    pub fn new(keys: KeySource) -> JwtSettings {
        JwtSettings {
            keys,
            algorithms: Vec::new(),
            issuer: None,
            audience: Vec::new(),
            leeway: Duration::from_secs(60),
            require_exp: true,
            consumer_claim: "sub".into(),
            forward_claims: Vec::new(),
            max_token_bytes: 8 * 1024,
            jwks_refresh: Duration::from_secs(300),
            jwks_min_refetch: Duration::from_secs(10),
        }
    }
}

/// A verified token: who it names and the claims to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The consumer claim's value.
    pub consumer: String,
    /// `(i, value)` for each of [`JwtSettings::forward_claims`] the token has (`i` its
    /// index there, in that order; a missing or `null` claim is left out). Values hold no
    /// control characters; they may hold UTF-8 (`HeaderValue::from_bytes` takes them).
    pub claims: Vec<(usize, String)>,
    /// When the token stops being valid (`exp` plus the leeway, seconds since the epoch);
    /// `None` without `exp`.
    pub expires: Option<u64>,
}

/// Why a token is refused. Its `Display` is safe to send to the client: it names what was
/// wrong, never a key or the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// No token (empty).
    Missing,
    /// Over [`JwtSettings::max_token_bytes`].
    TooLarge,
    /// Not a compact JWS with a JSON header and JSON claims, or a `crit` header.
    Malformed,
    /// No key has the token's `kid` (after a refetch of a JWKS URL, when one was allowed).
    UnknownKey,
    /// The token's `alg` is not one its key allows (`none`, HS against a public key...).
    BadAlgorithm,
    BadSignature,
    /// `exp` is past, beyond the leeway.
    Expired,
    /// `nbf` is ahead, beyond the leeway.
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    /// A claim of the wrong type, missing (`exp`, the consumer claim), or given twice.
    BadClaim(String),
}

impl JwtError {
    /// A stable short name, for metrics and the access log.
    pub fn kind(&self) -> &'static str {
        match self {
            JwtError::Missing => "missing",
            JwtError::TooLarge => "too_large",
            JwtError::Malformed => "malformed",
            JwtError::UnknownKey => "unknown_key",
            JwtError::BadAlgorithm => "bad_algorithm",
            JwtError::BadSignature => "bad_signature",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::WrongIssuer => "wrong_issuer",
            JwtError::WrongAudience => "wrong_audience",
            JwtError::BadClaim(_) => "bad_claim",
        }
    }
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JwtError::Missing => "no token",
            JwtError::TooLarge => "token too large",
            JwtError::Malformed => "malformed token",
            JwtError::UnknownKey => "token signed with an unknown key",
            JwtError::BadAlgorithm => "token algorithm not accepted for its key",
            JwtError::BadSignature => "bad token signature",
            JwtError::Expired => "token expired",
            JwtError::NotYetValid => "token not yet valid",
            JwtError::WrongIssuer => "token issuer not accepted",
            JwtError::WrongAudience => "token audience not accepted",
            JwtError::BadClaim(why) => why,
        })
    }
}

impl std::error::Error for JwtError {}

/// Verifies tokens against one [`JwtSettings`]. Cheap to clone (one `Arc`); `Send + Sync`.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Arc<ArcSwap<KeySet>>,
    refresher: Option<Arc<Refresher>>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
    rules: claims::Rules,
    max_token_bytes: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A verifier replaced on reload stops fetching its URL.
        if let Some(task) = self.task.get_mut().ok().and_then(|t| t.take()) {
            task.abort();
        }
    }
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.inner.keys.load().keys)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier for `s`: PEM, secret and JWKS file keys are parsed now (once, into the
    /// forms `ring` verifies with), a bad one is a clear error. A JWKS URL is only checked
    /// here (and, for `https://`, the system's roots loaded): its keys arrive once
    /// [`JwtVerifier::start`] runs. A JWKS key that cannot be used (an encryption key, an
    /// unknown type) is skipped with a warning; the set fails only when none is usable.
    pub fn new(s: &JwtSettings) -> Result<JwtVerifier, String> {
        let mut allowed = AlgSet::default();
        for name in &s.algorithms {
            match name.parse::<Algorithm>() {
                Ok(alg) => allowed = allowed.or(AlgSet::one(alg)),
                Err(_) if name.eq_ignore_ascii_case("none") => {
                    return Err("algorithm \"none\" is never accepted".into())
                }
                Err(_) => {
                    return Err(format!(
                        "unknown JWT algorithm {name:?} (expected one of {})",
                        AlgSet::ALL.names()
                    ))
                }
            }
        }
        if allowed.is_empty() {
            allowed = AlgSet::ALL;
        }
        if s.consumer_claim.is_empty() {
            return Err("the consumer claim is empty (default \"sub\")".into());
        }
        if s.max_token_bytes == 0 {
            return Err("the token size cap is 0".into());
        }
        let (keys, refresher) = match &s.keys {
            KeySource::Pem(pem) => (jwks::keys_from_pem(pem, allowed)?, None),
            KeySource::Secret(secret) => (vec![jwks::key_from_secret(secret, allowed)?], None),
            KeySource::JwksFile(path) => {
                let json = std::fs::read(path)
                    .map_err(|e| format!("JWKS file {}: {e}", path.display()))?;
                let (keys, skipped) = jwks::keys_from_jwks(&json, allowed)
                    .map_err(|e| format!("JWKS file {}: {e}", path.display()))?;
                for why in skipped {
                    tracing::warn!(jwks = %path.display(), "JWT key skipped: {why}");
                }
                (keys, None)
            }
            KeySource::JwksUrl(url) => {
                let fetch = Fetch::Http(Box::new(jwks::HttpFetcher::new(url)?));
                let r = Refresher::new(
                    fetch,
                    url.clone(),
                    allowed,
                    s.jwks_refresh.max(Duration::from_secs(1)),
                    s.jwks_min_refetch,
                );
                (Vec::new(), Some(Arc::new(r)))
            }
        };
        Ok(Self::build(s, keys, refresher))
    }

    fn build(s: &JwtSettings, keys: Vec<Key>, refresher: Option<Arc<Refresher>>) -> JwtVerifier {
        let keys = match &refresher {
            Some(r) => r.keys.clone(),
            None => Arc::new(ArcSwap::from_pointee(KeySet { keys })),
        };
        JwtVerifier {
            inner: Arc::new(Inner {
                keys,
                refresher,
                task: Mutex::new(None),
                rules: claims::Rules {
                    issuer: s.issuer.clone(),
                    audience: s.audience.clone(),
                    leeway: s.leeway.as_secs_f64(),
                    require_exp: s.require_exp,
                    consumer: s.consumer_claim.clone(),
                    forward: s.forward_claims.clone(),
                },
                max_token_bytes: s.max_token_bytes,
            }),
        }
    }

    /// Starts fetching a JWKS URL in the background, on the current tokio runtime: at once,
    /// then every [`JwtSettings::jwks_refresh`] (sooner after a failure). Does nothing for
    /// other key sources, outside a runtime, or when already started. The task stops when
    /// the last clone of this verifier is dropped.
    pub fn start(&self) {
        if let Some(r) = &self.inner.refresher {
            if let Some(task) = r.start() {
                *self.inner.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
            }
        }
    }

    /// Fetches a JWKS URL now, whatever the schedule and the rate limit (other sources:
    /// nothing to do). The number of keys in use, or why the fetch failed (the last good
    /// keys are then kept).
    pub async fn refresh(&self) -> Result<usize, String> {
        match &self.inner.refresher {
            Some(r) => r.refresh().await,
            None => Ok(self.inner.keys.load().keys.len()),
        }
    }

    /// Verifies `token` (the part after `Bearer `). Never blocks: a token naming a `kid`
    /// the JWKS URL's set lacks triggers an early refetch (rate-limited by
    /// [`JwtSettings::jwks_min_refetch`]) and waits for it at most 2 s; inside the rate
    /// limit it fails at once with [`JwtError::UnknownKey`].
    pub async fn verify(&self, token: &str) -> Result<Verified, JwtError> {
        let now = unix_now();
        match self.verify_at(token, now) {
            Err(JwtError::UnknownKey) => {}
            done => return done,
        }
        let Some(mut done) = self
            .inner
            .refresher
            .as_ref()
            .and_then(|r| r.refetch_for_unknown_key())
        else {
            return Err(JwtError::UnknownKey);
        };
        let _ = tokio::time::timeout(jwks::KID_MISS_WAIT, done.changed()).await;
        self.verify_at(token, now)
    }

    /// [`JwtVerifier::verify`] at `now` (seconds since the epoch), with the keys in hand.
    pub(crate) fn verify_at(&self, token: &str, now: u64) -> Result<Verified, JwtError> {
        if token.is_empty() {
            return Err(JwtError::Missing);
        }
        if token.len() > self.inner.max_token_bytes {
            return Err(JwtError::TooLarge);
        }
        let (message, signature) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
        let (header, payload) = message.split_once('.').ok_or(JwtError::Malformed)?;
        // base64url without padding (RFC 7515 §2), checked here so that every key type
        // refuses a padded or garbled signature the same way.
        let b64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        if payload.contains('.') || !signature.bytes().all(b64url) {
            return Err(JwtError::Malformed);
        }
        let mut stack = [0u8; 512];
        let mut heap = Vec::new();
        let header = b64(header, &mut stack, &mut heap)?;
        // An object (a derived struct would also take a JSON array, by position).
        if header.trim_ascii_start().first() != Some(&b'{') {
            return Err(JwtError::Malformed);
        }
        let header: Header = serde_json::from_slice(header).map_err(|_| JwtError::Malformed)?;
        // RFC 7515 §4.1.11: extensions marked critical must be understood; we know none.
        if header.crit.is_some() {
            return Err(JwtError::Malformed);
        }
        let alg: Algorithm = header.alg.parse().map_err(|_| JwtError::BadAlgorithm)?;
        let keys = self.inner.keys.load();
        let candidates = keys.pick(header.kid.as_deref(), alg).map_err(|m| match m {
            Miss::UnknownKey => JwtError::UnknownKey,
            Miss::BadAlgorithm => JwtError::BadAlgorithm,
        })?;
        let mut good = false;
        for key in candidates {
            // Only ever with an alg the key allows: jsonwebtoken trusts its caller here.
            debug_assert!(key.algorithms.contains(alg));
            match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key.decoding, alg) {
                Ok(true) => {
                    good = true;
                    break;
                }
                Ok(false) => {}
                Err(_) => return Err(JwtError::Malformed),
            }
        }
        if !good {
            return Err(JwtError::BadSignature);
        }
        let mut stack = [0u8; 2048];
        let mut heap = Vec::new();
        let payload = b64(payload, &mut stack, &mut heap)?;
        claims::check(payload, &self.inner.rules, now)
    }
}

/// The header fields we read; the rest are ignored.
#[derive(serde::Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

/// base64url without padding (RFC 7515 §2), decoded into `stack` when it fits.
fn b64<'b>(s: &str, stack: &'b mut [u8], heap: &'b mut Vec<u8>) -> Result<&'b [u8], JwtError> {
    let engine = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    if base64::decoded_len_estimate(s.len()) <= stack.len() {
        let n = engine
            .decode_slice(s, stack)
            .map_err(|_| JwtError::Malformed)?;
        return Ok(&stack[..n]);
    }
    engine
        .decode_vec(s, heap)
        .map_err(|_| JwtError::Malformed)?;
    Ok(heap)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
