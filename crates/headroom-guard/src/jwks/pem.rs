//! Public keys out of PEM: `PUBLIC KEY` (SubjectPublicKeyInfo), `RSA PUBLIC KEY` (PKCS#1)
//! and `CERTIFICATE` (the key it certifies), as the raw forms `ring` verifies with.
//!
//! Our own small DER walk instead of jsonwebtoken's `use_pem` feature: that feature brings
//! an ASN.1 crate, a bignum and a date crate for what is, for public keys, a few nested
//! SEQUENCEs; and reading the key's OID ourselves is what tells us its algorithms. This
//! reads config files only, never anything a client sends.

use base64::Engine;

/// What a PEM key is, which decides the algorithms it may verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// A PKCS#1 `RSAPublicKey` (what ring takes for RSA).
    Rsa(Vec<u8>),
    /// An uncompressed P-256 point.
    P256(Vec<u8>),
    /// An uncompressed P-384 point.
    P384(Vec<u8>),
    /// 32 bytes.
    Ed25519(Vec<u8>),
}

/// rsaEncryption, 1.2.840.113549.1.1.1.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-ecPublicKey, 1.2.840.10045.2.1.
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// prime256v1, 1.2.840.10045.3.1.7.
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// secp384r1, 1.3.132.0.34.
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// id-Ed25519, 1.3.101.112.
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

const SEQUENCE: u8 = 0x30;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;

/// Every key in `pem` (several may be concatenated), in order. Text outside the
/// `-----BEGIN`/`-----END` lines is ignored, as openssl does.
pub(crate) fn public_keys(pem: &[u8]) -> Result<Vec<PublicKey>, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "PEM: not text".to_string())?;
    let mut keys = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut b64 = String::new();
        let mut ended = false;
        for line in lines.by_ref() {
            if line == end {
                ended = true;
                break;
            }
            b64.push_str(line);
        }
        let n = keys.len() + 1;
        if !ended {
            return Err(format!("PEM: block {n} ({label}) has no `{end}` line"));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| format!("PEM: block {n} ({label}): bad base64: {e}"))?;
        let key = match label {
            "PUBLIC KEY" => spki(&der),
            "RSA PUBLIC KEY" => rsa_public_key(&der).map(|_| PublicKey::Rsa(der.clone())),
            "CERTIFICATE" => certificate_spki(&der).and_then(spki),
            l if l.contains("PRIVATE KEY") => Err(
                "a private key; give the public key (`openssl pkey -in key.pem -pubout`)".into(),
            ),
            _ => Err("not a public key or certificate".into()),
        }
        .map_err(|e| format!("PEM: block {n} ({label}): {e}"))?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("PEM: no `-----BEGIN PUBLIC KEY-----` (or CERTIFICATE) block".into());
    }
    Ok(keys)
}

/// SubjectPublicKeyInfo ::= SEQUENCE { algorithm SEQUENCE { OID, params }, BIT STRING }.
fn spki(der: &[u8]) -> Result<PublicKey, String> {
    let (body, rest) = tlv(der, SEQUENCE)?;
    if !rest.is_empty() {
        return Err("trailing bytes after the key".into());
    }
    let (alg, rest) = tlv(body, SEQUENCE)?;
    let (bits, _) = tlv(rest, BIT_STRING)?;
    // The first byte of a BIT STRING counts its unused bits: 0 for a key.
    let key = match bits.split_first() {
        Some((0, key)) => key.to_vec(),
        _ => return Err("malformed key bits".into()),
    };
    let (oid, params) = tlv(alg, OID)?;
    match oid {
        OID_RSA => {
            rsa_public_key(&key)?;
            Ok(PublicKey::Rsa(key))
        }
        OID_EC => {
            let (curve, _) = tlv(params, OID)?;
            let (public, len) = match curve {
                OID_P256 => (PublicKey::P256 as fn(_) -> _, 65),
                OID_P384 => (PublicKey::P384 as fn(_) -> _, 97),
                _ => {
                    return Err(
                        "an EC key on a curve JWT cannot use here (P-256 and P-384 only)".into(),
                    )
                }
            };
            if key.len() != len || key[0] != 0x04 {
                return Err("EC key: not an uncompressed point".into());
            }
            Ok(public(key))
        }
        OID_ED25519 if key.len() == 32 => Ok(PublicKey::Ed25519(key)),
        OID_ED25519 => Err("Ed25519 key: not 32 bytes".into()),
        _ => Err("unsupported key type (RSA, EC P-256/P-384 and Ed25519 only)".into()),
    }
}

/// Checks a PKCS#1 RSAPublicKey ::= SEQUENCE { n INTEGER, e INTEGER } has its shape.
fn rsa_public_key(der: &[u8]) -> Result<(), String> {
    let (body, _) = tlv(der, SEQUENCE)?;
    let (n, rest) = tlv(body, 0x02)?;
    let (_, _) = tlv(rest, 0x02)?;
    // A leading zero byte keeps the INTEGER positive; what is left is the modulus.
    let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
    if bits < 2048 {
        return Err(format!(
            "RSA key of about {bits} bits; JWT verification takes 2048 bits or more"
        ));
    }
    Ok(())
}

/// The SubjectPublicKeyInfo inside an X.509 certificate: the 7th field of tbsCertificate,
/// or the 6th without the explicit `[0]` version.
fn certificate_spki(der: &[u8]) -> Result<&[u8], String> {
    let (cert, _) = tlv(der, SEQUENCE)?;
    let (mut tbs, _) = tlv(cert, SEQUENCE)?;
    if tbs.first() == Some(&0xa0) {
        tbs = any(tbs)?.1;
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        tbs = any(tbs)?.1;
    }
    let (spki, _) = any(tbs)?;
    Ok(spki)
}

/// One DER element of `tag` at the start of `der`: (its contents, what follows).
fn tlv(der: &[u8], tag: u8) -> Result<(&[u8], &[u8]), String> {
    match der.first() {
        Some(t) if *t == tag => {
            let (whole, rest) = any(der)?;
            Ok((&whole[header_len(whole)?..], rest))
        }
        _ => Err("malformed DER".into()),
    }
}

/// One DER element of any tag: (the whole element, what follows).
fn any(der: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let header = header_len(der)?;
    let len = match header {
        2 => usize::from(der[1]),
        _ => der[2..header]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
    };
    let end = header.checked_add(len).filter(|e| *e <= der.len());
    match end {
        Some(end) => Ok(der.split_at(end)),
        None => Err("malformed DER: truncated".into()),
    }
}

/// The tag and length bytes of the element at the start of `der`.
fn header_len(der: &[u8]) -> Result<usize, String> {
    match der.get(1) {
        Some(&l) if l < 0x80 => Ok(2),
        // Long form with 1 to 4 length bytes: keys and certificates are far below 4 GiB.
        Some(&l) if (0x81..=0x84).contains(&l) && der.len() >= 2 + usize::from(l & 0x7f) => {
            Ok(2 + usize::from(l & 0x7f))
        }
        _ => Err("malformed DER".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/data/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn each_kind_of_public_key_is_read() {
        assert!(matches!(
            public_keys(&data("rsa.pub.pem")).unwrap()[..],
            [PublicKey::Rsa(_)]
        ));
        assert!(
            matches!(public_keys(&data("ec256.pub.pem")).unwrap()[..], [PublicKey::P256(ref p)] if p.len() == 65)
        );
        assert!(
            matches!(public_keys(&data("ec384.pub.pem")).unwrap()[..], [PublicKey::P384(ref p)] if p.len() == 97)
        );
        assert!(
            matches!(public_keys(&data("ed25519.pub.pem")).unwrap()[..], [PublicKey::Ed25519(ref p)] if p.len() == 32)
        );
    }

    #[test]
    fn spki_pkcs1_and_certificate_give_the_same_rsa_key() {
        let spki = public_keys(&data("rsa.pub.pem")).unwrap();
        assert_eq!(public_keys(&data("rsa.pkcs1.pem")).unwrap(), spki);
        assert_eq!(public_keys(&data("rsa.crt.pem")).unwrap(), spki);
    }

    #[test]
    fn concatenated_keys_are_all_read_in_order() {
        let mut pem = data("rsa.pub.pem");
        pem.extend(data("ed25519.pub.pem"));
        let keys = public_keys(&pem).unwrap();
        assert!(matches!(
            keys[..],
            [PublicKey::Rsa(_), PublicKey::Ed25519(_)]
        ));
    }

    #[test]
    fn private_keys_garbage_and_truncation_are_clear_errors() {
        let e = public_keys(&data("rsa.key.pem")).unwrap_err();
        assert!(e.contains("private key") && e.contains("-pubout"), "{e}");
        let e = public_keys(b"hello").unwrap_err();
        assert!(e.contains("no `-----BEGIN PUBLIC KEY-----`"), "{e}");
        let e = public_keys(b"-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n")
            .unwrap_err();
        assert!(e.contains("bad base64"), "{e}");
        let e = public_keys(b"-----BEGIN PUBLIC KEY-----\nMIIBIjAN\n-----END PUBLIC KEY-----\n")
            .unwrap_err();
        assert!(e.contains("malformed DER"), "{e}");
        let text = String::from_utf8(data("rsa.pub.pem")).unwrap();
        let e = public_keys(text.replace("-----END PUBLIC KEY-----", "").as_bytes()).unwrap_err();
        assert!(e.contains("has no `-----END PUBLIC KEY-----` line"), "{e}");
    }

    #[test]
    fn a_compressed_ec_point_is_refused() {
        // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING { 0x02 || x } }.
        let alg = [&[OID, 7][..], OID_EC, &[OID, 8], OID_P256].concat();
        let bits = [&[BIT_STRING, 34, 0, 0x02][..], &[7; 32]].concat();
        let body = [&[SEQUENCE, alg.len() as u8][..], &alg, &bits].concat();
        let der = [&[SEQUENCE, body.len() as u8][..], &body].concat();
        assert_eq!(spki(&der), Err("EC key: not an uncompressed point".into()));
    }

    #[test]
    fn every_truncation_of_a_key_is_an_error_not_a_panic() {
        let text = String::from_utf8(data("rsa.crt.pem")).unwrap();
        let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        for n in 0..der.len() {
            assert!(certificate_spki(&der[..n]).and_then(spki).is_err(), "{n}");
        }
        for n in 0..der.len() {
            let mut bad = der.clone();
            bad[n] ^= 0xff;
            let _ = certificate_spki(&bad).and_then(spki);
        }
    }
}
