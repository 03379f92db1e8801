//! `replicas = { dns = ... }` and `[global] resolver`: what is accepted, and the errors.

use headroom_config::{parse, Config, ConfigErrors, DnsDiscovery};
use std::path::Path;
use std::time::Duration;

fn check(text: &str) -> Result<Config, ConfigErrors> {
    parse("t.toml", text, Path::new("."))
}

fn with_service(service: &str) -> String {
    format!(
        "[[listener]]\nbind = \"127.0.0.1:8080\"\n\n[[route]]\nservice = \"app\"\n\n[service.app]\n{service}\n"
    )
}

#[test]
fn dns_replicas_become_a_discovery_with_defaults() {
    let c = check(&with_service("replicas = { dns = \"App.Internal.:8080\" }")).unwrap();
    let app = &c.services["app"];
    assert!(app.replicas.is_empty());
    assert_eq!(
        app.discovery,
        Some(DnsDiscovery {
            name: "app.internal.".into(),
            port: 8080,
            interval: Duration::from_secs(5),
            weight: 1,
        })
    );
    assert_eq!(c.global.resolver, None);
}

#[test]
fn dns_replicas_take_interval_and_weight_also_as_a_table() {
    let text = with_service(
        "[service.app.replicas]\ndns = \"app.default.svc.cluster.local:80\"\ninterval = \"500ms\"\nweight = 3",
    );
    let d = check(&text).unwrap().services["app"]
        .discovery
        .clone()
        .unwrap();
    assert_eq!(
        (d.port, d.interval, d.weight),
        (80, Duration::from_millis(500), 3)
    );
}

#[test]
fn a_replica_list_has_no_discovery() {
    let c = check(&with_service("replicas = [\"127.0.0.1:9001\"]")).unwrap();
    assert_eq!(c.services["app"].discovery, None);
    assert_eq!(c.services["app"].replicas.len(), 1);
}

#[test]
fn an_empty_replica_list_is_still_refused() {
    let msg = check(&with_service("replicas = []"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("needs at least one replica"), "{msg}");
}

fn one_error(service: &str) -> (usize, String) {
    let e = check(&with_service(service)).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    (e.0[0].line, e.to_string())
}

#[test]
fn a_dns_name_without_a_port_is_an_error_with_its_line() {
    let (line, msg) = one_error("balance = \"round-robin\"\nreplicas = { dns = \"app.internal\" }");
    assert_eq!(line, 9, "{msg}");
    assert!(msg.contains("service \"app\": replicas.dns"), "{msg}");
    assert!(msg.contains("has no port"), "{msg}");
}

#[test]
fn bad_ports_and_names_are_errors() {
    for (dns, expect) in [
        ("app.internal:0", "is not a port"),
        ("app.internal:99999", "is not a port"),
        ("app.internal:http", "is not a port"),
        ("app..internal:80", "is not a DNS name"),
        ("app internal:80", "is not a DNS name"),
        (":80", "is not a DNS name"),
        ("10.0.0.1:80", "is an IP address"),
        ("[::1]:80", "is an IP address"),
    ] {
        let (_, msg) = one_error(&format!("replicas = {{ dns = \"{dns}\" }}"));
        assert!(msg.contains(expect), "{dns}: {msg}");
    }
    let long = format!("{}.internal:80", "a".repeat(64));
    let (_, msg) = one_error(&format!("replicas = {{ dns = \"{long}\" }}"));
    assert!(msg.contains("is not a DNS name"), "{msg}");
}

#[test]
fn a_zero_interval_or_weight_is_an_error() {
    let (line, msg) = one_error("\nreplicas = { dns = \"app.internal:80\", interval = \"0s\" }");
    assert_eq!(line, 9, "{msg}");
    assert!(
        msg.contains("replicas.interval: must be more than 0s"),
        "{msg}"
    );
    let (_, msg) = one_error("replicas = { dns = \"app.internal:80\", weight = 0 }");
    assert!(msg.contains("replicas.weight"), "{msg}");
}

#[test]
fn an_unknown_key_in_dns_replicas_gets_a_suggestion() {
    let e = check(&with_service(
        "replicas = { dns = \"app.internal:80\", intervall = \"1s\" }",
    ))
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("did you mean \"interval\"?"), "{msg}");
    assert_eq!(e.0[0].line, 8, "{msg}");
}

#[test]
fn replicas_of_the_wrong_type_say_both_forms() {
    let e = check(&with_service("replicas = \"127.0.0.1:9001\"")).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("{ dns = "), "{msg}");
    assert_eq!(e.0[0].line, 8, "{msg}");
}

#[test]
fn resolver_is_an_ip_with_an_optional_port() {
    for (text, want) in [
        ("127.0.0.1:5353", "127.0.0.1:5353"),
        ("10.96.0.10", "10.96.0.10:53"),
        ("[::1]:5353", "[::1]:5353"),
        ("::1", "[::1]:53"),
    ] {
        let c = check(&format!(
            "[global]\nresolver = \"{text}\"\n{}",
            with_service("replicas = { dns = \"app.internal:80\" }")
        ))
        .unwrap();
        assert_eq!(c.global.resolver, Some(want.parse().unwrap()), "{text}");
    }
}

#[test]
fn a_resolver_that_is_not_an_ip_is_an_error_with_its_line() {
    let e = check(&format!(
        "[global]\nworkers = 1\nresolver = \"dns.internal:53\"\n{}",
        with_service("replicas = [\"127.0.0.1:9001\"]")
    ))
    .unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.0.len(), 1, "{msg}");
    assert_eq!(e.0[0].line, 3, "{msg}");
    assert!(msg.contains("global.resolver"), "{msg}");
}
