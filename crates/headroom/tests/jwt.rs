//! Bearer tokens end to end: a real headroom verifying JWTs with keys from a PEM file and
//! from a JWKS URL (a tiny HTTP server in the test), in front of `demo-upstream`, which
//! answers with the headers it received. The verifier's own cases (every algorithm, the
//! classic attacks, clock skew, JWKS refresh) are unit-tested in headroom-guard.

mod common;
use base64::Engine;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{SystemTime, UNIX_EPOCH};

fn data(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../headroom-guard/tests/data/jwt")
        .join(name)
}

fn rsa_key() -> EncodingKey {
    let pem = std::fs::read_to_string(data("rsa.key.pem")).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    EncodingKey::from_rsa_der(&der)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(kid: Option<&str>, claims: serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = kid.map(str::to_string);
    encode(&h, &claims, &rsa_key()).unwrap()
}

fn claims(sub: &str, exp_in: i64) -> serde_json::Value {
    serde_json::json!({ "sub": sub, "exp": now() as i64 + exp_in, "iss": "https://id.example", "email": format!("{sub}@example.com") })
}

fn config(up: &Upstream, jwt: &str) -> String {
    format!(
        "{pre}[[route]]\nname = \"api\"\nservice = \"s\"\n[route.auth]\nmethods = [\"jwt\"]\njwt = \"main\"\n\n\
         [service.s]\nreplicas = [\"{addr}\"]\n\n[[consumer]]\nname = \"acme\"\ngroups = [\"partners\"]\n\n\
         [jwt.main]\n{jwt}\nissuer = \"https://id.example\"\nforward_claims = {{ email = \"x-user-email\" }}\n",
        pre = preamble(),
        addr = up.addr,
    )
}

fn bearer(h: &Headroom, token: &str, extra: &[(&str, &str)]) -> Response {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    h.client().request("GET", "/", &headers, b"")
}

#[test]
fn a_valid_rs256_token_names_its_consumer_and_forwards_its_claims() {
    let up = Upstream::start("u");
    let h = Headroom::start(&config(
        &up,
        &format!("pem_file = \"{}\"", data("rsa.pub.pem").display()),
    ));
    let r = bearer(
        &h,
        &token(None, claims("acme", 600)),
        &[("x-user-email", "spoofed")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-consumer"], "acme");
    assert_eq!(
        seen["x-consumer-groups"], "partners",
        "a configured consumer's groups"
    );
    assert_eq!(
        seen["x-user-email"], "acme@example.com",
        "the claim, not the client's copy"
    );
    // A consumer known only by its token: no groups.
    let r = bearer(&h, &token(None, claims("walk-in", 600)), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-consumer"], "walk-in");
}

#[test]
fn expired_forged_unsigned_and_confused_tokens_get_401() {
    let up = Upstream::start("u");
    let h = Headroom::start(&config(
        &up,
        &format!("pem_file = \"{}\"", data("rsa.pub.pem").display()),
    ));
    let expired = token(None, claims("acme", -3600));
    let good = token(None, claims("acme", 600));
    let mut forged = good.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let unsigned = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64(&claims("acme", 600))
    );
    // HS256 signed with the RSA public key as the secret: the classic confusion.
    let public = std::fs::read(data("rsa.pub.pem")).unwrap();
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims("acme", 600),
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    let wrong_issuer = token(
        None,
        serde_json::json!({"sub": "acme", "exp": now() + 600, "iss": "https://evil.example"}),
    );
    for (what, t) in [
        ("expired", expired),
        ("forged", forged),
        ("alg none", unsigned),
        ("HS/RS confusion", confused),
        ("wrong issuer", wrong_issuer),
        ("garbage", "not.a.jwt".to_string()),
        ("oversized", "a".repeat(10_000)),
    ] {
        let r = bearer(&h, &t, &[]);
        assert_eq!(r.status, 401, "{what}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"api\""),
            "{what}"
        );
    }
    assert_eq!(h.get("/").status, 401, "no token");
    assert_eq!(up.served(), 0);
}

/// Serves `body` as application/json to every request until dropped (the thread ends with
/// the process); returns the URL.
fn jwks_server(body: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", l.local_addr().unwrap());
    let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let serving = up.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut line = String::new();
            let mut r = BufReader::new(s.try_clone().unwrap());
            while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            if serving.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = write!(s, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            } else {
                let _ = write!(s, "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        }
    });
    (url, up)
}

#[test]
fn keys_from_a_jwks_url_verify_tokens_and_survive_the_url_going_down() {
    let (url, serving) = jwks_server(std::fs::read_to_string(data("jwks.json")).unwrap());
    let up = Upstream::start("u");
    let h = Headroom::start(&config(&up, &format!("jwks_url = \"{url}\"")));
    let t = token(Some("rsa-1"), claims("acme", 600));
    assert_eq!(
        bearer(&h, &t, &[]).status,
        200,
        "the first token waits for the first fetch"
    );
    serving.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(bearer(&h, &t, &[]).status, 200, "the last good keys stay");
    assert_eq!(
        bearer(&h, &token(Some("no-such-kid"), claims("acme", 600)), &[]).status,
        401
    );
}

#[test]
fn a_pem_file_that_is_not_a_public_key_is_refused_by_check() {
    let up = Upstream::start("u");
    let bad = temp_dir().join("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let (code, err) = check_config(&config(&up, &format!("pem_file = \"{}\"", bad.display())));
    assert_eq!(code, Some(2));
    assert!(err.contains("jwt.main: "), "{err}");
    let (code, err) = check_config(&config(&up, "secret = \"s3cret\"\nalgorithms = [\"none\"]"));
    assert_eq!(code, Some(2));
    assert!(err.contains("\"none\" is never accepted"), "{err}");
}

#[test]
fn a_limit_keyed_by_a_claim_counts_each_claim_value_apart() {
    let up = Upstream::start("u");
    let cfg = config(&up, &format!("pem_file = \"{}\"", data("rsa.pub.pem").display())).replace(
        "jwt = \"main\"\n",
        "jwt = \"main\"\n[[route.limit]]\nname = \"per-tenant\"\nrate = \"1/h\"\nkey = \"claim:tenant\"\n",
    );
    let h = Headroom::start(&cfg);
    let as_tenant = |sub: &str, tenant: &str| {
        let mut c = claims(sub, 600);
        c["tenant"] = serde_json::Value::from(tenant);
        token(None, c)
    };
    assert_eq!(bearer(&h, &as_tenant("ann", "t1"), &[]).status, 200);
    assert_eq!(
        bearer(&h, &as_tenant("bob", "t1"), &[]).status,
        429,
        "another user of the same tenant: the tenant's one request an hour is spent"
    );
    assert_eq!(
        bearer(&h, &as_tenant("ann", "t2"), &[]).status,
        200,
        "another tenant"
    );
}
