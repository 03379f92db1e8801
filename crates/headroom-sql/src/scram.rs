//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it: headroom checks clients with
//! it ([`ServerExchange`]) and logs in to servers with it ([`client_first`] and friends).
//! Without channel binding ("n,,"): TLS is not yet on either side.
//!
//! Written here because no maintained crate does the server side for PostgreSQL's flavour
//! (the username in the client-first message is ignored; the startup packet's is used):
//! `postgres-protocol` has only the client side, and its dependencies (sha2, hmac) would
//! duplicate what ring already gives us.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use std::num::NonZeroU32;

/// PostgreSQL's default iteration count (`scram_iterations`).
pub const ITERATIONS: u32 = 4096;
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// What a server keeps of a password: never the password itself.
#[derive(Clone)]
pub struct Secret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

fn salted(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0; 32];
    let n = NonZeroU32::new(iterations.max(1)).expect("at least 1");
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, n, salt, password, &mut out);
    out
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&k);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// Equal without an early exit: the time taken does not say where two keys differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, b).as_ref());
    out
}

pub fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    ring::rand::SystemRandom::new()
        .fill(&mut v)
        .expect("the system's random source works");
    v
}

impl Secret {
    /// The secret for `password` with a fresh random salt.
    pub fn new(password: &str) -> Secret {
        Secret::with_salt(password, random(16), ITERATIONS)
    }

    pub fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> Secret {
        let sp = salted(password.as_bytes(), &salt, iterations);
        let client_key = mac(&sp, &[b"Client Key"]);
        Secret {
            iterations,
            stored_key: sha256(&client_key),
            server_key: mac(&sp, &[b"Server Key"]),
            salt,
        }
    }
}

/// The server's side of one exchange. For an unknown user it runs with a made-up secret and
/// fails at the end, the same messages in the same time as a wrong password: no oracle.
pub struct ServerExchange {
    secret: Secret,
    known: bool,
    nonce: String,
    client_first_bare: String,
    server_first: String,
}

/// Why an exchange failed; the client is told only "password authentication failed".
#[derive(Debug, PartialEq, Eq)]
pub enum ScramError {
    Malformed(&'static str),
    WrongProof,
}

impl ServerExchange {
    /// `secret`: `None` for a user headroom does not know.
    pub fn new(secret: Option<&Secret>) -> ServerExchange {
        let (secret, known) = match secret {
            Some(s) => (s.clone(), true),
            None => (
                Secret {
                    iterations: ITERATIONS,
                    salt: random(16),
                    stored_key: [0; 32],
                    server_key: [0; 32],
                },
                false,
            ),
        };
        ServerExchange {
            secret,
            known,
            nonce: B64.encode(random(18)),
            client_first_bare: String::new(),
            server_first: String::new(),
        }
    }

    /// Takes the client-first message; returns the server-first message.
    pub fn first(&mut self, client_first: &[u8]) -> Result<String, ScramError> {
        let m =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2 header: "n,," (no binding) or "y,," (client could bind, thinks we cannot).
        let bare = m
            .strip_prefix("n,,")
            .or_else(|| m.strip_prefix("y,,"))
            .ok_or(ScramError::Malformed("channel binding is not offered"))?;
        let cnonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::Malformed("no client nonce"))?;
        self.client_first_bare = bare.to_owned();
        self.server_first = format!(
            "r={cnonce}{},s={},i={}",
            self.nonce,
            B64.encode(&self.secret.salt),
            self.secret.iterations
        );
        Ok(self.server_first.clone())
    }

    /// Takes the client-final message; returns the server-final message when the proof holds.
    pub fn last(&self, client_final: &[u8]) -> Result<String, ScramError> {
        let m =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = m
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let nonce = without_proof
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        let expected_nonce = self
            .server_first
            .strip_prefix("r=")
            .and_then(|s| s.split(',').next())
            .unwrap_or_default();
        if nonce != expected_nonce {
            return Err(ScramError::Malformed("the nonce changed"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        if proof.len() != 32 {
            return Err(ScramError::Malformed("proof of the wrong length"));
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = mac(&self.secret.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ signature[i];
        }
        // Compared in constant time, and for an unknown user compared all the same.
        let ok = ct_eq(&sha256(&client_key), &self.secret.stored_key);
        if !ok || !self.known {
            return Err(ScramError::WrongProof);
        }
        let server_signature = mac(&self.secret.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

/// The client's side, logging in to a server.
pub struct ClientExchange {
    password: String,
    nonce: String,
    auth_message: String,
    server_key: [u8; 32],
}

impl ClientExchange {
    pub fn new(password: &str) -> ClientExchange {
        ClientExchange {
            password: password.to_owned(),
            nonce: B64.encode(random(18)),
            auth_message: String::new(),
            server_key: [0; 32],
        }
    }

    /// The client-first message.
    pub fn first(&self) -> String {
        format!("n,,n=,r={}", self.nonce)
    }

    /// Takes the server-first message; returns the client-final message.
    pub fn last(&mut self, server_first: &[u8]) -> Result<String, ScramError> {
        let m =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for a in m.split(',') {
            if let Some(v) = a.strip_prefix("r=") {
                nonce = Some(v);
            } else if let Some(v) = a.strip_prefix("s=") {
                salt = B64.decode(v).ok();
            } else if let Some(v) = a.strip_prefix("i=") {
                iterations = v.parse::<u32>().ok();
            }
        }
        let nonce = nonce
            .filter(|n| n.starts_with(&self.nonce) && n.len() > self.nonce.len())
            .ok_or(ScramError::Malformed(
                "the server's nonce does not extend ours",
            ))?;
        let salt = salt.ok_or(ScramError::Malformed("no salt"))?;
        let iterations = iterations
            .filter(|&i| (1..=10_000_000).contains(&i))
            .ok_or(ScramError::Malformed("no iteration count"))?;
        let sp = salted(self.password.as_bytes(), &salt, iterations);
        let client_key = mac(&sp, &[b"Client Key"]);
        self.server_key = mac(&sp, &[b"Server Key"]);
        let without_proof = format!("c=biws,r={nonce}");
        self.auth_message = format!("n=,r={},{m},{without_proof}", self.nonce);
        let signature = mac(&sha256(&client_key), &[self.auth_message.as_bytes()]);
        let mut proof = [0u8; 32];
        for i in 0..32 {
            proof[i] = client_key[i] ^ signature[i];
        }
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final message: the server knew the password too.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let m =
            std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let v = m
            .strip_prefix("v=")
            .and_then(|v| {
                B64.decode(v.trim_end_matches(|c: char| c == ',' || c.is_whitespace()))
                    .ok()
            })
            .ok_or(ScramError::Malformed("no server signature"))?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.server_key);
        hmac::verify(&key, self.auth_message.as_bytes(), &v).map_err(|_| ScramError::WrongProof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3's example exchange, checked on both sides: user "user", password
    /// "pencil" (PostgreSQL's flavour sends "n=" with no name, which changes nothing else).
    #[test]
    fn rfc7677_example_verifies() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let secret = Secret::with_salt("pencil", salt, 4096);
        let mut server = ServerExchange::new(Some(&secret));
        server.nonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        let first = server.first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(
            first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let last = server
            .last(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(last, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn client_and_server_agree_and_a_wrong_password_fails() {
        let secret = Secret::new("s3cret");
        for (password, ok) in [("s3cret", true), ("wrong", false)] {
            let mut client = ClientExchange::new(password);
            let mut server = ServerExchange::new(Some(&secret));
            let sf = server.first(client.first().as_bytes()).unwrap();
            let cf = client.last(sf.as_bytes()).unwrap();
            match server.last(cf.as_bytes()) {
                Ok(fin) => {
                    assert!(ok);
                    client.verify(fin.as_bytes()).unwrap();
                }
                Err(e) => {
                    assert!(!ok);
                    assert_eq!(e, ScramError::WrongProof);
                }
            }
        }
    }

    #[test]
    fn an_unknown_user_fails_like_a_wrong_password() {
        let mut client = ClientExchange::new("anything");
        let mut server = ServerExchange::new(None);
        let sf = server.first(client.first().as_bytes()).unwrap();
        let cf = client.last(sf.as_bytes()).unwrap();
        assert_eq!(server.last(cf.as_bytes()), Err(ScramError::WrongProof));
    }

    #[test]
    fn a_changed_nonce_or_a_forged_server_is_refused() {
        let secret = Secret::new("pw");
        let mut client = ClientExchange::new("pw");
        let mut server = ServerExchange::new(Some(&secret));
        let sf = server.first(client.first().as_bytes()).unwrap();
        let cf = client.last(sf.as_bytes()).unwrap();
        let forged = cf.replacen("r=", "r=x", 1);
        assert!(matches!(
            server.last(forged.as_bytes()),
            Err(ScramError::Malformed(_))
        ));
        assert!(client
            .verify(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .is_err());
    }
}
