//! The keys a JWT is verified with: where they come from ([`KeySource`]), each parsed once
//! into a [`Key`] that carries the algorithms its type allows, and the [`KeySet`] a token
//! picks its key from by `kid`.
//!
//! The algorithm comes from the key, never from the token: an RSA key verifies RS*/PS*
//! only, an EC key the one ES* of its curve, an Ed25519 key EdDSA, a secret HS* only; a JWK
//! that names its `alg` verifies that one alone. A token whose `alg` is not among its key's
//! is refused before any cryptography (so `alg: none` and the RS/HS confusion never get a
//! key to work with).

pub mod fetch;
mod pem;
mod refresh;

pub(crate) use fetch::HttpFetcher;
pub(crate) use refresh::{Fetch, Refresher, KID_MISS_WAIT};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::path::PathBuf;

/// Where a [`crate::JwtVerifier`]'s keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// PEM text: one public key or several concatenated (`PUBLIC KEY`, `RSA PUBLIC KEY` or
    /// `CERTIFICATE` blocks; RSA of 2048 bits or more, EC P-256/P-384, Ed25519). A token is
    /// tried against each key its `alg` fits (its `kid` is not used).
    Pem(Vec<u8>),
    /// An HMAC secret, as bytes (HS256/384/512).
    Secret(Vec<u8>),
    /// A JWKS document (RFC 7517) read once, when the verifier is built.
    JwksFile(PathBuf),
    /// A JWKS document fetched over `http://` or `https://` (the system's root
    /// certificates) in the background: see [`crate::JwtSettings::jwks_refresh`].
    JwksUrl(String),
}

/// A set of algorithms, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct AlgSet(u16);

const ALL: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl AlgSet {
    pub(crate) const HMAC: AlgSet = AlgSet(0b111);
    pub(crate) const RSA: AlgSet = AlgSet(0b111111 << 3);
    pub(crate) const ALL: AlgSet = AlgSet(0xfff);

    pub(crate) fn one(alg: Algorithm) -> AlgSet {
        let i = ALL.iter().position(|a| *a == alg).unwrap_or(0);
        AlgSet(1 << i)
    }

    pub(crate) fn contains(self, alg: Algorithm) -> bool {
        self.0 & AlgSet::one(alg).0 != 0
    }

    pub(crate) fn or(self, other: AlgSet) -> AlgSet {
        AlgSet(self.0 | other.0)
    }

    pub(crate) fn and(self, other: AlgSet) -> AlgSet {
        AlgSet(self.0 & other.0)
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Names, for messages.
    pub(crate) fn names(self) -> String {
        let names: Vec<String> = ALL
            .iter()
            .filter(|a| self.contains(**a))
            .map(|a| format!("{a:?}"))
            .collect();
        names.join(", ")
    }
}

/// One key, parsed once.
pub(crate) struct Key {
    /// From a JWKS; PEM keys and secrets have none.
    pub(crate) kid: Option<String>,
    /// What this key may verify: what its type allows, narrowed by its JWK `alg` and by the
    /// configured algorithms. Never empty.
    pub(crate) algorithms: AlgSet,
    pub(crate) decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms.names())
            .finish()
    }
}

/// The keys a token may be verified with.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    pub(crate) keys: Vec<Key>,
}

/// Why no key may verify a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// No key has the token's `kid` (or the set is empty).
    UnknownKey,
    /// Keys fit the `kid`, but none verifies the token's `alg`.
    BadAlgorithm,
}

impl KeySet {
    /// The keys for a token's `kid` and `alg`: with a `kid`, the keys that have it, else
    /// the keys that have none (PEM keys); without a `kid`, every key. Then only those whose
    /// algorithms include `alg`. Usually one key; the set is small and comes from the
    /// operator or the identity provider, never from the client. No allocation.
    pub(crate) fn pick<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> Result<impl Iterator<Item = &'a Key> + 'a, Miss> {
        let known = kid.is_some_and(|kid| self.keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
        let by_kid = move |k: &&Key| match kid {
            None => true,
            Some(kid) if known => k.kid.as_deref() == Some(kid),
            Some(_) => k.kid.is_none(),
        };
        if !self.keys.iter().any(|k| by_kid(&k)) {
            return Err(Miss::UnknownKey);
        }
        if !self
            .keys
            .iter()
            .filter(by_kid)
            .any(|k| k.algorithms.contains(alg))
        {
            return Err(Miss::BadAlgorithm);
        }
        Ok(self
            .keys
            .iter()
            .filter(by_kid)
            .filter(move |k| k.algorithms.contains(alg)))
    }
}

/// The keys of a PEM text, each allowed what its type allows and `allowed` permits.
pub(crate) fn keys_from_pem(pem: &[u8], allowed: AlgSet) -> Result<Vec<Key>, String> {
    let mut keys = Vec::new();
    for (i, key) in pem::public_keys(pem)?.into_iter().enumerate() {
        let (algorithms, decoding) = match key {
            pem::PublicKey::Rsa(der) => (AlgSet::RSA, DecodingKey::from_rsa_der(&der)),
            pem::PublicKey::P256(point) => (
                AlgSet::one(Algorithm::ES256),
                DecodingKey::from_ec_der(&point),
            ),
            pem::PublicKey::P384(point) => (
                AlgSet::one(Algorithm::ES384),
                DecodingKey::from_ec_der(&point),
            ),
            pem::PublicKey::Ed25519(x) => {
                (AlgSet::one(Algorithm::EdDSA), DecodingKey::from_ed_der(&x))
            }
        };
        let algorithms = algorithms.and(allowed);
        if algorithms.is_empty() {
            return Err(format!(
                "PEM key {}: none of the configured algorithms fits this key",
                i + 1
            ));
        }
        keys.push(Key {
            kid: None,
            algorithms,
            decoding,
        });
    }
    Ok(keys)
}

/// An HMAC secret as a key.
pub(crate) fn key_from_secret(secret: &[u8], allowed: AlgSet) -> Result<Key, String> {
    if secret.is_empty() {
        return Err("the HMAC secret is empty".into());
    }
    let algorithms = AlgSet::HMAC.and(allowed);
    if algorithms.is_empty() {
        return Err("an HMAC secret verifies HS256/HS384/HS512, and none is configured".into());
    }
    Ok(Key {
        kid: None,
        algorithms,
        decoding: DecodingKey::from_secret(secret),
    })
}

/// The usable keys of a JWKS document, and a reason for each key skipped (an encryption
/// key, an unknown type or curve, a key none of `allowed` fits). An error when the document
/// is not a JWKS or no key is usable.
pub(crate) fn keys_from_jwks(
    json: &[u8],
    allowed: AlgSet,
) -> Result<(Vec<Key>, Vec<String>), String> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let doc: Document = serde_json::from_slice(json)
        .map_err(|e| format!("not a JWKS document (`{{\"keys\": [...]}}`): {e}"))?;
    let mut keys = Vec::with_capacity(doc.keys.len());
    let mut skipped = Vec::new();
    for (i, value) in doc.keys.into_iter().enumerate() {
        let kid = value.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
        let name = match &kid {
            Some(kid) => format!("key {kid:?}"),
            None => format!("key {}", i + 1),
        };
        match key_from_jwk(value, allowed) {
            Ok(mut key) => {
                key.kid = kid;
                keys.push(key);
            }
            Err(why) => skipped.push(format!("{name}: {why}")),
        }
    }
    if keys.is_empty() {
        return Err(match skipped.is_empty() {
            true => "the JWKS has no keys".into(),
            false => format!("the JWKS has no usable key ({})", skipped.join("; ")),
        });
    }
    Ok((keys, skipped))
}

fn key_from_jwk(value: serde_json::Value, allowed: AlgSet) -> Result<Key, String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("not a usable JWK: {e}"))?;
    if let Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_)) = jwk.common.public_key_use {
        return Err("not a signing key (`use` is not \"sig\")".into());
    }
    let b64 = |s: &str| -> Result<Vec<u8>, String> {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| "bad base64url".to_string())
    };
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let n = b64(&rsa.n)?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return Err(format!("RSA key of about {bits} bits (2048 or more)"));
            }
            b64(&rsa.e)?;
            AlgSet::RSA
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            let (alg, len) = match ec.curve {
                EllipticCurve::P256 => (Algorithm::ES256, 32),
                EllipticCurve::P384 => (Algorithm::ES384, 48),
                _ => return Err("EC key on a curve other than P-256/P-384".into()),
            };
            if b64(&ec.x)?.len() != len || b64(&ec.y)?.len() != len {
                return Err("EC key: coordinates of the wrong size for its curve".into());
            }
            AlgSet::one(alg)
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            if okp.curve != EllipticCurve::Ed25519 || b64(&okp.x)?.len() != 32 {
                return Err("OKP key that is not Ed25519".into());
            }
            AlgSet::one(Algorithm::EdDSA)
        }
        AlgorithmParameters::OctetKey(oct) => {
            if b64(&oct.value)?.is_empty() {
                return Err("empty secret".into());
            }
            AlgSet::HMAC
        }
    };
    let named = match jwk.common.key_algorithm {
        None => AlgSet::ALL,
        Some(alg) => match key_algorithm(alg) {
            Some(alg) => AlgSet::one(alg),
            None => return Err(format!("`alg` {alg:?} is not a signature algorithm")),
        },
    };
    let algorithms = by_type.and(named).and(allowed);
    if algorithms.is_empty() {
        return Err("its type and `alg` fit none of the configured algorithms".into());
    }
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable: {e}"))?;
    Ok(Key {
        kid: None,
        algorithms,
        decoding,
    })
}

fn key_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/data/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn kid(set: &KeySet, kid: Option<&str>, alg: Algorithm) -> Vec<String> {
        match set.pick(kid, alg) {
            Ok(keys) => keys.map(|k| k.kid.clone().unwrap_or_default()).collect(),
            Err(miss) => vec![format!("{miss:?}")],
        }
    }

    #[test]
    fn a_jwks_file_keeps_its_signing_keys_and_says_why_it_skipped_the_rest() {
        let (keys, skipped) = keys_from_jwks(&data("jwks.json"), AlgSet::ALL).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref().unwrap()).collect();
        assert_eq!(kids, ["rsa-1", "rsa-2", "ec-256", "ec-384", "ed-1"]);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].contains("\"enc-1\"") && skipped[0].contains("not a signing key"));
        assert!(skipped[1].contains("\"weird\""));
        // A JWK `alg` narrows its key to that algorithm; without one, the type decides.
        assert_eq!(keys[0].algorithms, AlgSet::one(Algorithm::RS256));
        assert_eq!(keys[1].algorithms, AlgSet::RSA);
        assert_eq!(keys[2].algorithms, AlgSet::one(Algorithm::ES256));
        assert_eq!(keys[3].algorithms, AlgSet::one(Algorithm::ES384));
        assert_eq!(keys[4].algorithms, AlgSet::one(Algorithm::EdDSA));
    }

    #[test]
    fn a_token_picks_its_key_by_kid_and_alg() {
        let (keys, _) = keys_from_jwks(&data("jwks.json"), AlgSet::ALL).unwrap();
        let set = KeySet { keys };
        assert_eq!(kid(&set, Some("rsa-2"), Algorithm::PS256), ["rsa-2"]);
        assert_eq!(kid(&set, Some("rsa-1"), Algorithm::PS256), ["BadAlgorithm"]);
        assert_eq!(kid(&set, Some("rsa-1"), Algorithm::HS256), ["BadAlgorithm"]);
        assert_eq!(kid(&set, Some("nope"), Algorithm::RS256), ["UnknownKey"]);
        // No kid: every key the alg fits.
        assert_eq!(kid(&set, None, Algorithm::RS256), ["rsa-1", "rsa-2"]);
        assert_eq!(kid(&set, None, Algorithm::HS256), ["BadAlgorithm"]);
        assert_eq!(
            kid(&KeySet::default(), None, Algorithm::HS256),
            ["UnknownKey"]
        );
    }

    #[test]
    fn configured_algorithms_narrow_the_keys() {
        let only_ps = AlgSet::one(Algorithm::PS256);
        let (keys, skipped) = keys_from_jwks(&data("jwks.json"), only_ps).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("rsa-2"));
        assert_eq!(skipped.len(), 6);
        let e = keys_from_pem(&data("ec256.pub.pem"), only_ps).unwrap_err();
        assert!(e.contains("none of the configured algorithms"), "{e}");
        let e = key_from_secret(b"s3cret", only_ps).unwrap_err();
        assert!(e.contains("HS256"), "{e}");
    }

    #[test]
    fn garbage_and_empty_jwks_are_errors() {
        for (doc, want) in [
            (&b"not json"[..], "not a JWKS document"),
            (b"{\"keys\": 3}", "not a JWKS document"),
            (b"{\"keys\": []}", "has no keys"),
            (b"{\"keys\": [{\"kty\": \"RSA\", \"n\": \"AQAB\", \"e\": \"AQAB\"}]}", "bits"),
            (b"{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-256\", \"x\": \"AA\", \"y\": \"AA\"}]}", "wrong size"),
            (b"{\"keys\": [{\"kty\": \"oct\", \"k\": \"\", \"alg\": \"RSA-OAEP\"}]}", "empty secret"),
        ] {
            let e = keys_from_jwks(doc, AlgSet::ALL).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
