//! A JWKS URL's keys over time: the refresh schedule and the unknown-`kid` refetch in
//! paused time (a fetch that is a function), then the same through a real HTTP server on
//! loopback (real time: real sockets).

use super::tests::{data, token, FAR};
use super::*;
use crate::jwks::fetch::tests::{Answer, JwksServer};
use bytes::Bytes;
use jsonwebtoken::EncodingKey;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The test JWKS with only the keys named.
fn jwks(kids: &[&str]) -> Vec<u8> {
    let all: Value = serde_json::from_slice(&data("jwks.json")).unwrap();
    let keys: Vec<&Value> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| kids.contains(&k["kid"].as_str().unwrap_or("")))
        .collect();
    json!({ "keys": keys }).to_string().into_bytes()
}

/// A token signed by test key `rsa-1` or `rsa-2`, naming `kid`.
fn signed(key: &str, kid: &str) -> String {
    let file = match key {
        "rsa-1" => "rsa.key.pem",
        _ => "rsa2.key.pem",
    };
    let text = String::from_utf8(data(file)).unwrap();
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let claims = json!({ "sub": "alice", "exp": FAR });
    token(
        Algorithm::RS256,
        Some(kid),
        &claims,
        &EncodingKey::from_rsa_der(&der),
    )
}

/// What the fake fetch returns, and how often it ran.
#[derive(Default)]
struct Fake {
    answer: Mutex<Option<Result<Vec<u8>, String>>>,
    hits: AtomicUsize,
}

impl Fake {
    fn answer(&self, a: Result<Vec<u8>, &str>) {
        *self.answer.lock().unwrap() = Some(a.map_err(str::to_string));
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

const EVERY: Duration = Duration::from_secs(300);
const WINDOW: Duration = Duration::from_secs(10);

fn fake_verifier(fake: &Arc<Fake>) -> JwtVerifier {
    let f = fake.clone();
    let fetch = Fetch::Fn(Box::new(move || {
        let f = f.clone();
        Box::pin(async move {
            f.hits.fetch_add(1, Ordering::SeqCst);
            let a = f.answer.lock().unwrap().clone();
            a.unwrap_or(Err("no answer".into())).map(Bytes::from)
        })
    }));
    let r = Refresher::new(fetch, "fake".into(), AlgSet::ALL, EVERY, WINDOW);
    let s = JwtSettings::new(KeySource::JwksUrl("http://fake/".into()));
    JwtVerifier::build(&s, Vec::new(), Some(Arc::new(r)))
}

/// Waits (on the refresher's signal, not a clock) until `n` fetches have finished.
async fn fetched(v: &JwtVerifier, n: u64) {
    let r = v.inner.refresher.as_ref().unwrap();
    let mut rx = r.finished();
    let _ = rx.wait_for(|done| *done >= n).await;
}

#[tokio::test(start_paused = true)]
async fn the_first_tokens_wait_for_the_first_fetch() {
    let fake = Arc::new(Fake::default());
    fake.answer(Ok(jwks(&["rsa-1"])));
    let v = fake_verifier(&fake);
    // Not started: no keys, and nothing to wait for.
    assert_eq!(
        v.verify(&signed("rsa-1", "rsa-1")).await,
        Err(JwtError::UnknownKey)
    );
    assert_eq!(fake.hits(), 0);
    v.start();
    assert_eq!(
        v.verify(&signed("rsa-1", "rsa-1"))
            .await
            .map(|v| v.consumer),
        Ok("alice".into())
    );
    assert_eq!(fake.hits(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_kid_refetches_early_at_most_once_per_window() {
    let fake = Arc::new(Fake::default());
    fake.answer(Ok(jwks(&["rsa-1"])));
    let v = fake_verifier(&fake);
    v.start();
    fetched(&v, 1).await;
    fake.answer(Ok(jwks(&["rsa-1", "rsa-2"])));
    // Within the window of the last fetch: refused at once, nothing fetched.
    let new = signed("rsa-2", "rsa-2");
    assert_eq!(v.verify(&new).await, Err(JwtError::UnknownKey));
    tokio::time::sleep(WINDOW - Duration::from_millis(1)).await;
    assert_eq!(v.verify(&new).await, Err(JwtError::UnknownKey));
    assert_eq!(fake.hits(), 1);
    // Past it: one early fetch, which this token waits for and passes with.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(v.verify(&new).await.is_ok());
    assert_eq!(fake.hits(), 2);
    // A flood of made-up kids right after costs no fetch.
    for i in 0..100 {
        let t = signed("rsa-2", &format!("made-up-{i}"));
        assert_eq!(v.verify(&t).await, Err(JwtError::UnknownKey));
    }
    assert_eq!(fake.hits(), 2);
}

#[tokio::test(start_paused = true)]
async fn keys_are_refetched_on_schedule_and_a_failing_fetch_keeps_the_last_good() {
    let fake = Arc::new(Fake::default());
    fake.answer(Ok(jwks(&["rsa-1"])));
    let v = fake_verifier(&fake);
    v.start();
    let old = signed("rsa-1", "rsa-1");
    fetched(&v, 1).await;
    for (n, bad) in [
        (2, Err("down")),
        (3, Ok(b"<html>garbage".to_vec())),
        (4, Ok(b"{\"keys\":[]}".to_vec())),
    ] {
        fake.answer(bad);
        fetched(&v, n).await;
        assert!(v.verify(&old).await.is_ok(), "after fetch {n}");
    }
    assert_eq!(fake.hits(), 4);
    // Rotated: the old key is gone at the next fetch, the new one is in.
    fake.answer(Ok(jwks(&["rsa-2"])));
    fetched(&v, 5).await;
    assert!(v.verify(&signed("rsa-2", "rsa-2")).await.is_ok());
    assert_eq!(v.verify(&old).await, Err(JwtError::UnknownKey));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_verifier_stops_fetching() {
    let fake = Arc::new(Fake::default());
    fake.answer(Ok(jwks(&["rsa-1"])));
    let v = fake_verifier(&fake);
    v.start();
    fetched(&v, 1).await;
    let clone = v.clone();
    drop(v);
    tokio::time::sleep(EVERY * 2 + Duration::from_secs(1)).await;
    assert_eq!(fake.hits(), 3, "a clone keeps it going");
    drop(clone);
    tokio::time::sleep(EVERY * 3).await;
    assert_eq!(fake.hits(), 3);
}

fn url_verifier(url: &str, min_refetch: Duration) -> JwtVerifier {
    let mut s = JwtSettings::new(KeySource::JwksUrl(url.into()));
    s.jwks_min_refetch = min_refetch;
    JwtVerifier::new(&s).unwrap()
}

#[tokio::test]
async fn a_jwks_url_that_goes_down_or_serves_garbage_keeps_the_last_good_keys() {
    let server = JwksServer::start(Answer::Ok(jwks(&["rsa-1"]))).await;
    let v = url_verifier(&server.url, Duration::from_secs(3600));
    v.start();
    let old = signed("rsa-1", "rsa-1");
    assert!(v.verify(&old).await.is_ok());
    for (bad, why) in [
        (Answer::Status(500), "answered 500"),
        (Answer::Hangup, "HTTP: "),
        (Answer::Ok(b"<html>".to_vec()), "not a JWKS document"),
        (
            Answer::Ok(b"{\"keys\":[]}".to_vec()),
            "the JWKS has no keys",
        ),
    ] {
        server.answer(bad);
        let e = v.refresh().await.unwrap_err();
        assert!(e.contains(why), "{e}");
        assert!(v.verify(&old).await.is_ok(), "after {why}");
    }
    // A new key, but the last fetch was just now: the window holds, no fetch.
    server.answer(Answer::Ok(jwks(&["rsa-1", "rsa-2"])));
    let hits = server.hits();
    assert_eq!(
        v.verify(&signed("rsa-2", "rsa-2")).await,
        Err(JwtError::UnknownKey)
    );
    assert_eq!(server.hits(), hits);
    assert_eq!(v.refresh().await, Ok(2));
    assert!(v.verify(&signed("rsa-2", "rsa-2")).await.is_ok());
}

#[tokio::test]
async fn a_new_kid_at_a_jwks_url_is_picked_up_by_the_refetch_it_triggers() {
    let server = JwksServer::start(Answer::Ok(jwks(&["rsa-1"]))).await;
    let v = url_verifier(&server.url, Duration::ZERO);
    v.start();
    assert!(v.verify(&signed("rsa-1", "rsa-1")).await.is_ok());
    assert_eq!(server.hits(), 1);
    server.answer(Answer::Ok(jwks(&["rsa-1", "rsa-2"])));
    assert!(v.verify(&signed("rsa-2", "rsa-2")).await.is_ok());
    assert_eq!(server.hits(), 2);
    assert_eq!(
        v.verify(&signed("rsa-2", "rsa-9")).await,
        Err(JwtError::UnknownKey)
    );
    assert_eq!(server.hits(), 3);
}
