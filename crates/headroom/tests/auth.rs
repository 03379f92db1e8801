//! Consumers and API keys end to end: a real headroom in front of `demo-upstream`, which
//! answers with the headers it received, so what the upstream sees is asserted directly.

mod common;
use common::*;

/// `headroom key hash`, as a user would make the config's hashes.
fn hash(key: &str) -> String {
    let out = std::process::Command::new(BIN)
        .args(["key", "hash", key])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn config(up: &Upstream, auth: &str, extra: &str) -> String {
    format!(
        "{pre}[[route]]\nname = \"api\"\nservice = \"s\"\n[route.auth]\n{auth}\n\n[service.s]\nreplicas = [\"{addr}\"]\n\n\
         [[consumer]]\nname = \"acme\"\ngroups = [\"partners\"]\nkeys = [\"{acme}\"]\n\n\
         [[consumer]]\nname = \"intern\"\nkeys = [\"{intern}\"]\n\n{extra}\n",
        pre = preamble(),
        addr = up.addr,
        acme = hash("acme-secret"),
        intern = hash("intern-secret"),
    )
}

fn get_as(h: &Headroom, path: &str, headers: &[(&str, &str)]) -> Response {
    h.client().request("GET", path, headers, b"")
}

#[test]
fn requests_without_a_valid_key_get_401_with_a_challenge() {
    let up = Upstream::start("u");
    let h = Headroom::start(&config(&up, "", ""));
    let r = h.get("/");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "unauthorized");
    assert_eq!(
        r.header("www-authenticate"),
        Some("ApiKey realm=\"api\", header=\"x-api-key\"")
    );
    let bad = get_as(&h, "/", &[("x-api-key", "guess")]);
    assert_eq!(bad.status, 401);
    assert_eq!(bad.json()["message"], "the credentials are not valid");
    assert_eq!(
        up.served(),
        0,
        "nothing unauthenticated reached the upstream"
    );
    // Two workers may write their lines in either order: find each by its decision.
    for guard in ["unauthenticated", "bad_credentials"] {
        let line = h
            .stdout
            .wait_for(
                &format!("\"guard\":\"{guard}\""),
                std::time::Duration::from_secs(5),
            )
            .unwrap_or_else(|| panic!("no {guard} line in {:?}", h.stdout.all()));
        assert!(line.contains("\"status\":401"), "{line}");
    }
}

#[test]
fn a_valid_key_forwards_the_consumer_and_never_the_key() {
    let up = Upstream::start("u");
    let h = Headroom::start(&config(&up, "", ""));
    let r = get_as(
        &h,
        "/",
        &[
            ("x-api-key", "acme-secret"),
            ("x-consumer", "admin"),
            ("x-consumer-groups", "root"),
        ],
    );
    assert_eq!(r.status, 200);
    let seen = &r.json()["headers"];
    assert_eq!(
        seen["x-consumer"], "acme",
        "the client's own x-consumer is replaced"
    );
    assert_eq!(seen["x-consumer-groups"], "partners");
    assert!(seen.get("x-api-key").is_none(), "the key is not forwarded");
    let line = h
        .stdout
        .wait_for("\"status\":200", std::time::Duration::from_secs(5))
        .unwrap();
    assert!(line.contains("\"consumer\":\"acme\""), "{line}");
}

#[test]
fn a_key_in_the_query_is_accepted_and_removed_before_forwarding() {
    let up = Upstream::start("u");
    let h = Headroom::start(&config(&up, "key_query = \"api_key\"", ""));
    let r = h.get("/items?page=2&api_key=intern-secret");
    assert_eq!(r.status, 200);
    let seen = r.json();
    assert_eq!(seen["query"], "page=2");
    assert_eq!(seen["headers"]["x-consumer"], "intern");
}

#[test]
fn a_consumer_outside_the_route_s_groups_gets_403() {
    let up = Upstream::start("u");
    let h = Headroom::start(&config(&up, "groups = [\"partners\"]", ""));
    assert_eq!(get_as(&h, "/", &[("x-api-key", "acme-secret")]).status, 200);
    let r = get_as(&h, "/", &[("x-api-key", "intern-secret")]);
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "forbidden");
    assert_eq!(up.served(), 1);
}

#[test]
fn a_consumer_s_own_limit_and_a_per_consumer_route_limit_count_each_consumer_apart() {
    let up = Upstream::start("u");
    let cfg = format!(
        "{pre}[[route]]\nname = \"api\"\nservice = \"s\"\n[route.auth]\n[[route.limit]]\nname = \"per-consumer\"\nrate = \"3/h\"\nkey = \"consumer\"\n\n\
         [service.s]\nreplicas = [\"{addr}\"]\n\n\
         [[consumer]]\nname = \"acme\"\nkeys = [\"{acme}\"]\n[[consumer.limit]]\nname = \"acme-plan\"\nrate = \"1/h\"\n\n\
         [[consumer]]\nname = \"intern\"\nkeys = [\"{intern}\"]\n",
        pre = preamble(),
        addr = up.addr,
        acme = hash("acme-secret"),
        intern = hash("intern-secret"),
    );
    let h = Headroom::start(&cfg);
    let acme = [("x-api-key", "acme-secret")];
    let intern = [("x-api-key", "intern-secret")];
    assert_eq!(get_as(&h, "/", &acme).status, 200);
    let r = get_as(&h, "/", &acme);
    assert_eq!(r.status, 429, "acme's own plan: 1 an hour");
    assert!(r.json()["message"].as_str().unwrap().contains("acme-plan"));
    for _ in 0..3 {
        assert_eq!(get_as(&h, "/", &intern).status, 200);
    }
    assert_eq!(
        get_as(&h, "/", &intern).status,
        429,
        "the route's per-consumer limit: 3 an hour for intern, whatever acme did"
    );
}

#[test]
fn keys_can_live_in_a_key_file_read_again_on_reload() {
    let up = Upstream::start("u");
    let dir = temp_dir();
    let keys = dir.join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[consumer]]\nname = \"late\"\nkeys = [\"{}\"]\n",
            hash("late-secret")
        ),
    )
    .unwrap();
    let cfg = config(
        &up,
        "",
        &format!("[guard]\nkey_file = \"{}\"\n", keys.display()),
    );
    let h = Headroom::start(&cfg);
    assert_eq!(get_as(&h, "/", &[("x-api-key", "late-secret")]).status, 200);
    assert_eq!(
        get_as(&h, "/", &[("x-api-key", "later-secret")]).status,
        401
    );
    std::fs::write(
        &keys,
        format!(
            "[[consumer]]\nname = \"later\"\nkeys = [\"{}\"]\n",
            hash("later-secret")
        ),
    )
    .unwrap();
    assert!(h.reload(&cfg).contains("config reloaded"));
    assert_eq!(
        get_as(&h, "/", &[("x-api-key", "later-secret")]).status,
        200
    );
    assert_eq!(
        get_as(&h, "/", &[("x-api-key", "late-secret")]).status,
        401,
        "a key removed from the file no longer works"
    );
    // A broken key file on reload: refused with its line, the running keys kept.
    std::fs::write(
        &keys,
        "[[consumer]]\nname = \"x\"\nkeys = [\"plaintext-key\"]\n",
    )
    .unwrap();
    let outcome = h.reload(&cfg);
    assert!(outcome.contains("config not reloaded"), "{outcome}");
    // The reasons follow the outcome line: wait for them rather than read once.
    let line = h
        .stderr
        .wait_for("never the key itself", std::time::Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{}", h.stderr.all().join("\n")));
    assert!(line.contains("keys.toml:3"), "{line}");
    assert_eq!(
        get_as(&h, "/", &[("x-api-key", "later-secret")]).status,
        200
    );
}

#[test]
fn a_plaintext_key_or_an_unknown_group_in_the_config_is_refused() {
    let up = Upstream::start("u");
    let cfg = config(&up, "groups = [\"partnrs\"]", "").replacen(
        "keys = [\"sha256:",
        "keys = [\"oops\", \"sha256:",
        1,
    );
    let (code, err) = check_config(&cfg);
    assert_eq!(code, Some(2));
    assert!(err.contains("no consumer is in group \"partnrs\""), "{err}");
    assert!(err.contains("consumer \"acme\": keys"), "{err}");
}
