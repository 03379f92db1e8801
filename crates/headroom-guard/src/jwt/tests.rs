//! JWT test vectors: each algorithm family, the classic attacks, claims, bad input.
//! Keys were made once with openssl and live in tests/data/jwt/ (see its README).

use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::EncodingKey;
use serde_json::{json, Value};

pub(crate) fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The DER inside a (private key) PEM file.
fn der(name: &str) -> Vec<u8> {
    let text = String::from_utf8(data(name)).unwrap();
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// The key that signs `alg` tokens in these tests, and the PEM that verifies them.
fn signer(alg: Algorithm) -> (EncodingKey, KeySource) {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => (
            EncodingKey::from_secret(SECRET),
            KeySource::Secret(SECRET.to_vec()),
        ),
        Algorithm::ES256 => (
            EncodingKey::from_ec_der(&der("ec256.key.pem")),
            KeySource::Pem(data("ec256.pub.pem")),
        ),
        Algorithm::ES384 => (
            EncodingKey::from_ec_der(&der("ec384.key.pem")),
            KeySource::Pem(data("ec384.pub.pem")),
        ),
        Algorithm::EdDSA => (
            EncodingKey::from_ed_der(&der("ed25519.key.pem")),
            KeySource::Pem(data("ed25519.pub.pem")),
        ),
        _ => (
            EncodingKey::from_rsa_der(&der("rsa.key.pem")),
            KeySource::Pem(data("rsa.pub.pem")),
        ),
    }
}

const SECRET: &[u8] = b"a secret of thirty-two bytes or more, for HS512 too";
/// "Now" in tests that fix the clock.
pub(crate) const NOW: u64 = 1_700_000_000;
/// Far enough ahead for tests that read the real clock.
pub(crate) const FAR: u64 = 4_000_000_000;

/// A token with `header` (JSON, as given) and `claims`, signed by `key` with `alg`.
pub(crate) fn forge(header: &str, claims: &str, key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{sig}")
}

/// A well-formed token: `alg` (and `kid`) in the header, `claims` signed by `key`.
pub(crate) fn token(
    alg: Algorithm,
    kid: Option<&str>,
    claims: &Value,
    key: &EncodingKey,
) -> String {
    let mut header = json!({ "alg": format!("{alg:?}"), "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    forge(&header.to_string(), &claims.to_string(), key, alg)
}

fn alice() -> Value {
    json!({ "sub": "alice", "exp": NOW + 3600 })
}

fn verifier(keys: KeySource) -> JwtVerifier {
    JwtVerifier::new(&JwtSettings::new(keys)).unwrap()
}

fn with(s: JwtSettings) -> JwtVerifier {
    JwtVerifier::new(&s).unwrap()
}

#[test]
fn every_algorithm_family_verifies_with_its_key() {
    use Algorithm::*;
    for alg in [
        HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA,
    ] {
        let (key, source) = signer(alg);
        let v = verifier(source);
        let got = v.verify_at(&token(alg, None, &alice(), &key), NOW);
        assert_eq!(got.map(|v| v.consumer), Ok("alice".to_string()), "{alg:?}");
    }
}

#[test]
fn a_certificate_or_a_pkcs1_key_verifies_like_the_public_key() {
    let (key, _) = signer(Algorithm::RS256);
    let t = token(Algorithm::RS256, None, &alice(), &key);
    for pem in ["rsa.crt.pem", "rsa.pkcs1.pem"] {
        assert!(
            verifier(KeySource::Pem(data(pem)))
                .verify_at(&t, NOW)
                .is_ok(),
            "{pem}"
        );
    }
}

#[test]
fn several_concatenated_pem_keys_each_verify_their_tokens() {
    let mut pem = data("rsa2.pub.pem");
    pem.extend(data("ec256.pub.pem"));
    pem.extend(data("rsa.pub.pem"));
    let v = verifier(KeySource::Pem(pem));
    for alg in [Algorithm::RS256, Algorithm::ES256] {
        let (key, _) = signer(alg);
        assert!(
            v.verify_at(&token(alg, Some("any"), &alice(), &key), NOW)
                .is_ok(),
            "{alg:?}"
        );
    }
}

#[test]
fn alg_none_is_refused_whatever_its_spelling_or_signature() {
    let claims = alice().to_string();
    for alg in ["none", "None", "NONE", "nOnE", ""] {
        let header = format!("{{\"alg\":\"{alg}\",\"typ\":\"JWT\"}}");
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(&header),
            URL_SAFE_NO_PAD.encode(&claims)
        );
        for keys in [
            KeySource::Secret(SECRET.to_vec()),
            KeySource::Pem(data("rsa.pub.pem")),
        ] {
            let v = verifier(keys);
            assert_eq!(
                v.verify_at(&unsigned, NOW),
                Err(JwtError::BadAlgorithm),
                "{alg}"
            );
            let signed = format!("{unsigned}c2lnbmF0dXJl");
            assert_eq!(
                v.verify_at(&signed, NOW),
                Err(JwtError::BadAlgorithm),
                "{alg}"
            );
        }
    }
}

#[test]
fn an_hs_token_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion: a verifier that takes the alg from the token would check this
    // HMAC with the public key's bytes as the secret, and accept it.
    for public in [data("rsa.pub.pem"), der("rsa.pub.pem")] {
        let forged = token(
            Algorithm::HS256,
            None,
            &alice(),
            &EncodingKey::from_secret(&public),
        );
        let v = verifier(KeySource::Pem(data("rsa.pub.pem")));
        assert_eq!(v.verify_at(&forged, NOW), Err(JwtError::BadAlgorithm));
    }
    // Against a JWKS key (held as modulus and exponent, which jsonwebtoken would not even
    // know how to use as an HMAC secret): refused the same, before any cryptography.
    let path = format!("{}/tests/data/jwt/jwks.json", env!("CARGO_MANIFEST_DIR"));
    let v = verifier(KeySource::JwksFile(path.into()));
    let forged = token(
        Algorithm::HS256,
        Some("rsa-2"),
        &alice(),
        &EncodingKey::from_secret(b"x"),
    );
    assert_eq!(v.verify_at(&forged, NOW), Err(JwtError::BadAlgorithm));
}

#[test]
fn a_token_whose_alg_is_not_its_keys_is_refused() {
    // A P-384 token against a P-256 key.
    let (p384, _) = signer(Algorithm::ES384);
    let v = verifier(KeySource::Pem(data("ec256.pub.pem")));
    let t = token(Algorithm::ES384, None, &alice(), &p384);
    assert_eq!(v.verify_at(&t, NOW), Err(JwtError::BadAlgorithm));
    // A JWK that names RS256 does not verify RS512, though it is an RSA key.
    let (rsa, _) = signer(Algorithm::RS512);
    let path = format!("{}/tests/data/jwt/jwks.json", env!("CARGO_MANIFEST_DIR"));
    let v = verifier(KeySource::JwksFile(path.into()));
    assert_eq!(
        v.verify_at(&token(Algorithm::RS512, Some("rsa-1"), &alice(), &rsa), NOW),
        Err(JwtError::BadAlgorithm)
    );
    assert!(v
        .verify_at(&token(Algorithm::RS256, Some("rsa-1"), &alice(), &rsa), NOW)
        .is_ok());
    // Configured algorithms narrow what an RSA key verifies.
    let mut s = JwtSettings::new(KeySource::Pem(data("rsa.pub.pem")));
    s.algorithms = vec!["RS256".into()];
    let v = with(s);
    assert_eq!(
        v.verify_at(&token(Algorithm::PS256, None, &alice(), &rsa), NOW),
        Err(JwtError::BadAlgorithm)
    );
    assert!(v
        .verify_at(&token(Algorithm::RS256, None, &alice(), &rsa), NOW)
        .is_ok());
}

#[test]
fn a_bad_signature_is_refused() {
    let v = verifier(KeySource::Pem(data("rsa.pub.pem")));
    let other = EncodingKey::from_rsa_der(&der("rsa2.key.pem"));
    assert_eq!(
        v.verify_at(&token(Algorithm::RS256, None, &alice(), &other), NOW),
        Err(JwtError::BadSignature)
    );
    // The claims changed after signing.
    let (key, _) = signer(Algorithm::RS256);
    let t = token(Algorithm::RS256, None, &alice(), &key);
    let parts: Vec<&str> = t.split('.').collect();
    let mallory =
        URL_SAFE_NO_PAD.encode(json!({ "sub": "mallory", "exp": NOW + 3600 }).to_string());
    let tampered = format!("{}.{mallory}.{}", parts[0], parts[2]);
    assert_eq!(v.verify_at(&tampered, NOW), Err(JwtError::BadSignature));
    // An HMAC with another secret.
    let v = verifier(KeySource::Secret(SECRET.to_vec()));
    let t = token(
        Algorithm::HS256,
        None,
        &alice(),
        &EncodingKey::from_secret(b"guess"),
    );
    assert_eq!(v.verify_at(&t, NOW), Err(JwtError::BadSignature));
}

#[test]
fn expiry_and_not_before_allow_the_leeway_and_no_more() {
    let (key, keys) = signer(Algorithm::HS256);
    let v = verifier(keys);
    let at = |claims: Value| {
        v.verify_at(&token(Algorithm::HS256, None, &claims, &key), NOW)
            .map(|_| ())
    };
    assert_eq!(at(json!({ "sub": "a", "exp": NOW - 30 })), Ok(()));
    assert_eq!(at(json!({ "sub": "a", "exp": NOW - 59 })), Ok(()));
    assert_eq!(
        at(json!({ "sub": "a", "exp": NOW - 60 })),
        Err(JwtError::Expired)
    );
    assert_eq!(
        at(json!({ "sub": "a", "exp": NOW - 3600 })),
        Err(JwtError::Expired)
    );
    assert_eq!(
        at(json!({ "sub": "a", "exp": (NOW - 61) as f64 + 0.5 })),
        Err(JwtError::Expired)
    );
    assert_eq!(
        at(json!({ "sub": "a", "exp": NOW + 60, "nbf": NOW + 60 })),
        Ok(())
    );
    assert_eq!(
        at(json!({ "sub": "a", "exp": NOW + 90, "nbf": NOW + 61 })),
        Err(JwtError::NotYetValid)
    );
    assert_eq!(
        at(json!({ "sub": "a" })),
        Err(JwtError::BadClaim("claim `exp` is missing".into()))
    );
    let mut s = JwtSettings::new(KeySource::Secret(SECRET.to_vec()));
    s.leeway = Duration::ZERO;
    s.require_exp = false;
    let v = with(s);
    let at = |claims: Value| {
        v.verify_at(&token(Algorithm::HS256, None, &claims, &key), NOW)
            .map(|_| ())
    };
    assert_eq!(at(json!({ "sub": "a" })), Ok(()));
    assert_eq!(
        at(json!({ "sub": "a", "exp": NOW })),
        Err(JwtError::Expired)
    );
    assert_eq!(
        at(json!({ "sub": "a", "exp": NOW + 1, "nbf": NOW + 1 })),
        Err(JwtError::NotYetValid)
    );
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let (key, keys) = signer(Algorithm::HS256);
    let mut s = JwtSettings::new(keys.clone());
    s.issuer = Some("https://idp.example".into());
    s.audience = vec!["api".into(), "admin".into()];
    let v = with(s);
    let at = |claims: Value| {
        v.verify_at(&token(Algorithm::HS256, None, &claims, &key), NOW)
            .map(|_| ())
    };
    let ok = json!({ "sub": "a", "exp": NOW + 60, "iss": "https://idp.example", "aud": "api" });
    assert_eq!(at(ok.clone()), Ok(()));
    let mut list = ok.clone();
    list["aud"] = json!(["web", "admin"]);
    assert_eq!(at(list), Ok(()));
    for (claim, value, want) in [
        ("iss", json!("https://evil.example"), JwtError::WrongIssuer),
        ("iss", Value::Null, JwtError::WrongIssuer),
        ("aud", json!("web"), JwtError::WrongAudience),
        ("aud", json!(["web", "mobile"]), JwtError::WrongAudience),
        ("aud", json!([]), JwtError::WrongAudience),
    ] {
        let mut c = ok.clone();
        match value {
            Value::Null => c.as_object_mut().unwrap().remove(claim),
            v => c.as_object_mut().unwrap().insert(claim.into(), v),
        };
        assert_eq!(at(c.clone()), Err(want), "{c}");
    }
    let mut no_aud = ok.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(at(no_aud), Err(JwtError::WrongAudience));
    // Not configured: not checked.
    let v = verifier(keys);
    let t = token(
        Algorithm::HS256,
        None,
        &json!({ "sub": "a", "exp": NOW + 60, "iss": "x", "aud": "y" }),
        &key,
    );
    assert!(v.verify_at(&t, NOW).is_ok());
}

#[test]
fn claims_of_the_wrong_type_are_clear_rejections() {
    let (key, keys) = signer(Algorithm::HS256);
    let mut s = JwtSettings::new(keys);
    s.issuer = Some("idp".into());
    s.audience = vec!["api".into()];
    s.forward_claims = vec!["groups".into()];
    let v = with(s);
    let base = json!({ "sub": "a", "exp": NOW + 60, "iss": "idp", "aud": "api" });
    for (claim, value, want) in [
        (
            "exp",
            json!("4000000000"),
            "claim `exp` is not a number of seconds",
        ),
        ("exp", json!(null), "claim `exp` is not a number of seconds"),
        ("nbf", json!("0"), "claim `nbf` is not a number of seconds"),
        ("nbf", json!([1]), "claim `nbf` is not a number of seconds"),
        ("iss", json!(["idp"]), "claim `iss` is not a string"),
        (
            "aud",
            json!({ "api": true }),
            "claim `aud` is not a string or a list of strings",
        ),
        (
            "aud",
            json!(["api", 7]),
            "claim `aud` is not a string or a list of strings",
        ),
        ("sub", json!({ "name": "a" }), "claim `sub` is not a string"),
        ("sub", json!(["a"]), "claim `sub` is not a string"),
        ("sub", json!(""), "claim `sub` is not a string"),
        ("sub", json!(1.5), "claim `sub` is not a string"),
        ("sub", json!(null), "claim `sub` is missing"),
        (
            "sub",
            json!("a\r\nx-admin: 1"),
            "claim `sub` holds control characters",
        ),
        (
            "groups",
            json!({ "a": 1 }),
            "claim `groups` is not a string, a number or a list of them",
        ),
        (
            "groups",
            json!([["nested"]]),
            "claim `groups` is not a string, a number or a list of them",
        ),
        (
            "groups",
            json!(["ok", "bad\n"]),
            "claim `groups` holds control characters",
        ),
    ] {
        let mut c = base.clone();
        c[claim] = value;
        let got = v.verify_at(&token(Algorithm::HS256, None, &c, &key), NOW);
        assert_eq!(got, Err(JwtError::BadClaim(want.into())), "{c}");
    }
    let mut c = base.clone();
    c.as_object_mut().unwrap().remove("sub");
    let got = v.verify_at(&token(Algorithm::HS256, None, &c, &key), NOW);
    assert_eq!(
        got,
        Err(JwtError::BadClaim("claim `sub` is missing".into()))
    );
    // A claim given twice (JSON allows it; readers disagree on which one wins).
    let twice = format!(
        "{{\"sub\":\"a\",\"exp\":{},\"iss\":\"idp\",\"aud\":\"api\",\"exp\":{}}}",
        NOW + 60,
        NOW + 9999
    );
    let got = v.verify_at(
        &forge("{\"alg\":\"HS256\"}", &twice, &key, Algorithm::HS256),
        NOW,
    );
    assert_eq!(
        got,
        Err(JwtError::BadClaim("claim `exp` appears twice".into()))
    );
}

#[test]
fn the_consumer_and_forwarded_claims_come_out_as_strings_in_their_order() {
    let (key, keys) = signer(Algorithm::HS256);
    let mut s = JwtSettings::new(keys);
    s.consumer_claim = "client_id".into();
    s.forward_claims = vec![
        "email".into(),
        "groups".into(),
        "absent".into(),
        "admin".into(),
        "client_id".into(),
        "null".into(),
    ];
    let v = with(s);
    let claims = json!({
        "null": null, "admin": false, "groups": ["a", 2, true], "client_id": 42,
        "email": "a\u{e9}@example.org", "exp": NOW + 60, "nested": { "x": [[1]] },
    });
    let got = v
        .verify_at(&token(Algorithm::HS256, None, &claims, &key), NOW)
        .unwrap();
    assert_eq!(got.consumer, "42");
    assert_eq!(
        got.claims,
        [
            (0, "a\u{e9}@example.org".to_string()),
            (1, "a,2,true".into()),
            (3, "false".into()),
            (4, "42".into())
        ]
    );
    // Escapes in names and values are read as JSON means them.
    let escaped = format!("{{\"\\u0073ub\":\"b\\u006fb\",\"exp\":{}}}", NOW + 60);
    let v = verifier(KeySource::Secret(SECRET.to_vec()));
    let got = v.verify_at(
        &forge("{\"alg\":\"HS256\"}", &escaped, &key, Algorithm::HS256),
        NOW,
    );
    assert_eq!(got.map(|v| v.consumer), Ok("bob".into()));
}

#[test]
fn oversized_and_garbage_tokens_are_refused_before_anything_else() {
    let (key, keys) = signer(Algorithm::HS256);
    let mut s = JwtSettings::new(keys);
    s.max_token_bytes = 300;
    let v = with(s);
    let good = token(Algorithm::HS256, None, &alice(), &key);
    assert!(good.len() <= 300);
    assert!(v.verify_at(&good, NOW).is_ok());
    let big = json!({ "sub": "a", "exp": NOW + 60, "pad": "x".repeat(300) });
    assert_eq!(
        v.verify_at(&token(Algorithm::HS256, None, &big, &key), NOW),
        Err(JwtError::TooLarge)
    );
    assert_eq!(v.verify_at(&"!".repeat(301), NOW), Err(JwtError::TooLarge));
    assert_eq!(v.verify_at("", NOW), Err(JwtError::Missing));
    let hs = |h: &str, c: &str| forge(h, c, &key, Algorithm::HS256);
    let claims = alice().to_string();
    for bad in [
        "abc".to_string(),
        "a.b".into(),
        "a.b.c.d".into(),
        "..".into(),
        "!!!.!!!.!!!".into(),
        format!("{}.e30.", URL_SAFE_NO_PAD.encode("not json")),
        format!("{}==", &good),
        hs("{\"alg\":\"HS256\"}", "not json"),
        hs("{\"alg\":\"HS256\"}", "[1,2]"),
        hs("{\"alg\":\"HS256\"}", "{\"sub\":\"a\"} trailing"),
        hs("{\"alg\":\"HS256\",\"crit\":[\"b64\"]}", &claims),
        hs("[\"HS256\"]", &claims),
        hs("{\"alg\":\"HS256\",\"kid\":7}", &claims),
    ] {
        assert_eq!(v.verify_at(&bad, NOW), Err(JwtError::Malformed), "{bad}");
    }
    // No input panics: every byte of a good token changed to every kind of character.
    let mut s = JwtSettings::new(KeySource::Secret(SECRET.to_vec()));
    s.forward_claims = vec!["sub".into()];
    let v = with(s);
    for i in 0..good.len() {
        for c in ['.', 'A', '_', '-', '=', '\u{e9}', '\0'] {
            let mut t = good.clone();
            t.replace_range(i..=i, c.encode_utf8(&mut [0; 4]));
            let _ = v.verify_at(&t, NOW);
        }
        let _ = v.verify_at(&good[..i], NOW);
    }
}

#[test]
fn a_jwks_file_picks_each_tokens_key_by_kid() {
    let path = format!("{}/tests/data/jwt/jwks.json", env!("CARGO_MANIFEST_DIR"));
    let v = verifier(KeySource::JwksFile(path.into()));
    let rsa1 = EncodingKey::from_rsa_der(&der("rsa.key.pem"));
    let rsa2 = EncodingKey::from_rsa_der(&der("rsa2.key.pem"));
    let (ec, _) = signer(Algorithm::ES256);
    let (ed, _) = signer(Algorithm::EdDSA);
    assert!(v
        .verify_at(
            &token(Algorithm::RS256, Some("rsa-1"), &alice(), &rsa1),
            NOW
        )
        .is_ok());
    assert!(v
        .verify_at(
            &token(Algorithm::PS256, Some("rsa-2"), &alice(), &rsa2),
            NOW
        )
        .is_ok());
    assert!(v
        .verify_at(&token(Algorithm::ES256, Some("ec-256"), &alice(), &ec), NOW)
        .is_ok());
    assert!(v
        .verify_at(&token(Algorithm::EdDSA, Some("ed-1"), &alice(), &ed), NOW)
        .is_ok());
    // The kid picks the key: rsa-2's token under rsa-1's kid does not verify.
    let t = token(Algorithm::RS256, Some("rsa-1"), &alice(), &rsa2);
    assert_eq!(v.verify_at(&t, NOW), Err(JwtError::BadSignature));
    // Without a kid, every key the alg fits is tried.
    assert!(v
        .verify_at(&token(Algorithm::RS256, None, &alice(), &rsa2), NOW)
        .is_ok());
}

#[tokio::test]
async fn an_unknown_kid_is_refused() {
    let path = format!("{}/tests/data/jwt/jwks.json", env!("CARGO_MANIFEST_DIR"));
    let v = verifier(KeySource::JwksFile(path.into()));
    let rsa1 = EncodingKey::from_rsa_der(&der("rsa.key.pem"));
    let t = token(
        Algorithm::RS256,
        Some("rsa-9"),
        &json!({ "sub": "a", "exp": FAR }),
        &rsa1,
    );
    assert_eq!(v.verify(&t).await, Err(JwtError::UnknownKey));
    // The encryption key in the file is not a signing key.
    let t = token(
        Algorithm::RS256,
        Some("enc-1"),
        &json!({ "sub": "a", "exp": FAR }),
        &rsa1,
    );
    assert_eq!(v.verify(&t).await, Err(JwtError::UnknownKey));
}

#[test]
fn settings_that_cannot_work_are_clear_errors_when_built() {
    let err = |s: JwtSettings| JwtVerifier::new(&s).err().unwrap();
    let mut s = JwtSettings::new(KeySource::Secret(SECRET.to_vec()));
    s.algorithms = vec!["none".into()];
    assert_eq!(err(s.clone()), "algorithm \"none\" is never accepted");
    s.algorithms = vec!["HS999".into()];
    assert!(err(s.clone()).starts_with("unknown JWT algorithm \"HS999\" (expected one of HS256,"));
    s.algorithms = vec![];
    s.consumer_claim = String::new();
    assert!(err(s).contains("consumer claim is empty"));
    assert!(err(JwtSettings::new(KeySource::Secret(vec![]))).contains("secret is empty"));
    assert!(err(JwtSettings::new(KeySource::Pem(b"nope".to_vec()))).starts_with("PEM: no"));
    let e = err(JwtSettings::new(KeySource::JwksFile(
        "/nonexistent/jwks.json".into(),
    )));
    assert!(e.starts_with("JWKS file /nonexistent/jwks.json: "), "{e}");
    let e = err(JwtSettings::new(KeySource::JwksUrl(
        "ftp://idp/jwks".into(),
    )));
    assert!(e.contains("http:// or https://"), "{e}");
}

#[test]
fn errors_sent_to_clients_name_no_key_or_token() {
    let (key, keys) = signer(Algorithm::HS256);
    let v = verifier(keys);
    let t = token(
        Algorithm::HS256,
        None,
        &json!({ "sub": {"secret": "s3"}, "exp": NOW + 60 }),
        &key,
    );
    let e = v.verify_at(&t, NOW).unwrap_err();
    assert_eq!(e.to_string(), "claim `sub` is not a string");
    assert_eq!(e.kind(), "bad_claim");
    assert_eq!(
        JwtError::BadAlgorithm.to_string(),
        "token algorithm not accepted for its key"
    );
}
