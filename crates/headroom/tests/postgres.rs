//! `[[postgres]]` end to end: the real headroom binary in front of a real PostgreSQL 15,
//! clients speaking the wire protocol (tests/common/pg.rs) and pgbench.

mod common;
#[path = "common/pg.rs"]
mod pg;

use common::Headroom;
use pg::{error_code, error_message, msg, rows_of, PgClient, Postgres};
use std::collections::HashSet;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

/// A postgres-only config in front of `pg`, with `extra` TOML lines in its `[[postgres]]`.
fn config(pg: &Postgres, extra: &str) -> String {
    format!(
        "[global]\nwatch = false\nshutdown_timeout = \"5s\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n[[postgres]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nprimary = \"{}\"\n{extra}\n\n[[postgres.user]]\nname = \"app\"\npassword = \"app\"\n",
        pg.addr()
    )
}

fn start(pg: &Postgres, extra: &str) -> Headroom {
    Headroom::start_with_args(&config(pg, extra), &["--workers", "2"])
}

#[test]
fn many_clients_share_a_few_server_connections() {
    let pg = Postgres::start();
    let hr = start(&pg, "pool_size = 2");
    let pids: HashSet<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let addr = hr.addr;
                s.spawn(move || {
                    let mut c = PgClient::app(addr);
                    let mut seen = HashSet::new();
                    for j in 0..20 {
                        assert_eq!(
                            c.one(&format!("SELECT {i} * 100 + {j}")),
                            (i * 100 + j).to_string()
                        );
                        seen.insert(c.one("SELECT pg_backend_pid()"));
                    }
                    seen
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        pids.len() <= 2,
        "8 clients in transaction mode used {} server connections",
        pids.len()
    );
    // The server saw at most the pool (and the superuser's check) connected as app.
    let n: i64 = pg
        .psql_super("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'")
        .parse()
        .unwrap();
    assert!(n <= 2, "{n} server connections as app");
}

#[test]
fn a_transaction_keeps_its_server_connection_until_it_ends() {
    let pg = Postgres::start();
    let hr = start(&pg, "pool_size = 2");
    let mut a = PgClient::app(hr.addr);
    let mut b = PgClient::app(hr.addr);
    assert_eq!(a.status_after("BEGIN"), b'T');
    let pid = a.one("SELECT pg_backend_pid()");
    // b's queries cannot take a's connection while a is in its transaction.
    for _ in 0..5 {
        assert_ne!(b.one("SELECT pg_backend_pid()"), pid);
        assert_eq!(a.one("SELECT pg_backend_pid()"), pid);
    }
    a.query("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .unwrap();
    // Not yet committed: b cannot see the table.
    assert!(b.query("SELECT * FROM t").is_err());
    assert_eq!(a.status_after("COMMIT"), b'I');
    assert_eq!(b.one("SELECT count(*) FROM t"), "1");
}

#[test]
fn wrong_passwords_and_unknown_users_are_refused_alike() {
    let pg = Postgres::start();
    let hr = start(&pg, "");
    let wrong = PgClient::connect(hr.addr, "app", "nope", "app")
        .err()
        .unwrap();
    let unknown = PgClient::connect(hr.addr, "mallory", "app", "app")
        .err()
        .unwrap();
    assert_eq!(wrong, "password authentication failed for user \"app\"");
    assert_eq!(
        unknown,
        "password authentication failed for user \"mallory\""
    );
    // The right one still gets in.
    assert_eq!(PgClient::app(hr.addr).one("SELECT current_user"), "app");
}

#[test]
fn an_unknown_database_gets_the_servers_own_error() {
    let pg = Postgres::start();
    let hr = start(&pg, "");
    let e = PgClient::connect(hr.addr, "app", "app", "nosuchdb")
        .err()
        .unwrap();
    assert_eq!(e, "database \"nosuchdb\" does not exist");
    let hr2 = start(&pg, "databases = [\"app\"]");
    let e = PgClient::connect(hr2.addr, "app", "app", "postgres")
        .err()
        .unwrap();
    assert_eq!(e, "database \"postgres\" does not exist");
}

#[test]
fn a_client_waits_for_a_free_connection_then_gets_a_clear_error() {
    let pg = Postgres::start();
    let hr = start(&pg, "pool_size = 1\nqueue_timeout = \"300ms\"");
    let mut a = PgClient::app(hr.addr);
    let mut b = PgClient::app(hr.addr);
    assert_eq!(a.status_after("BEGIN"), b'T');
    // b waits while a holds the only connection, then is told why, and its connection ends.
    let mut q = b"SELECT 1\0".to_vec();
    b.send(&msg(b'Q', &q));
    let (tag, body) = b.read().unwrap();
    assert_eq!(tag, b'E');
    assert_eq!(error_code(&body), "53300");
    assert!(
        error_message(&body).contains("queue_timeout"),
        "{}",
        error_message(&body)
    );
    assert!(
        b.read().is_err(),
        "the refused client's connection is closed"
    );
    // A client waiting when a's transaction ends gets the connection.
    let mut c = PgClient::app(hr.addr);
    q = b"SELECT 2\0".to_vec();
    c.send(&msg(b'Q', &q));
    assert_eq!(a.status_after("COMMIT"), b'I');
    assert_eq!(
        rows_of(&c.until_ready().unwrap()).unwrap()[0][0].as_deref(),
        Some("2")
    );
}

#[test]
fn a_client_that_leaves_mid_transaction_is_rolled_back_and_the_connection_reused() {
    let pg = Postgres::start();
    let hr = start(&pg, "pool_size = 1");
    let mut setup = PgClient::app(hr.addr);
    setup.query("CREATE TABLE t (x int)").unwrap();
    let pid = setup.one("SELECT pg_backend_pid()");
    drop(setup);
    let mut a = PgClient::app(hr.addr);
    a.query("BEGIN; INSERT INTO t VALUES (1)").unwrap();
    drop(a);
    let mut b = PgClient::app(hr.addr);
    assert_eq!(
        b.one("SELECT count(*) FROM t"),
        "0",
        "the insert was rolled back"
    );
    assert_eq!(
        b.one("SELECT pg_backend_pid()"),
        pid,
        "the rolled-back connection went back to the pool"
    );
    // A failed transaction, left: rolled back too.
    let mut c = PgClient::app(hr.addr);
    c.query("BEGIN").unwrap();
    assert!(c.query("SELECT 1/0").is_err());
    drop(c);
    let mut d = PgClient::app(hr.addr);
    assert_eq!(d.status_after("SELECT 1"), b'I');
}

#[test]
fn a_client_that_leaves_mid_query_does_not_get_its_connection_reused_dirty() {
    let pg = Postgres::start();
    let hr = start(&pg, "pool_size = 1");
    let mut a = PgClient::app(hr.addr);
    let pid = a.one("SELECT pg_backend_pid()");
    a.send(&msg(b'Q', b"SELECT pg_sleep(30)\0"));
    // The query runs on the server (seen in pg_stat_activity) when a leaves.
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND query LIKE 'SELECT pg_sleep%'"
    );
    wait_until(|| pg.psql_super(&sql) == "1");
    drop(a);
    let mut b = PgClient::app(hr.addr);
    assert_eq!(b.one("SELECT 41 + 1"), "42");
    assert_ne!(
        b.one("SELECT pg_backend_pid()"),
        pid,
        "the busy connection was closed, not handed on"
    );
}

#[test]
fn a_server_connection_killed_mid_transaction_gives_a_clean_error_and_the_next_transaction_works() {
    let pg = Postgres::start();
    let hr = start(&pg, "pool_size = 2");
    let mut a = PgClient::app(hr.addr);
    a.query("BEGIN").unwrap();
    let pid = a.one("SELECT pg_backend_pid()");
    pg.psql_super(&format!("SELECT pg_terminate_backend({pid})"));
    let e = a.query("SELECT 1").err().unwrap();
    assert!(e.contains("server connection was lost"), "{e}");
    assert!(
        e.contains("terminating connection"),
        "the server's reason is given: {e}"
    );
    // The same client connection goes on, on another server connection.
    assert_eq!(a.one("SELECT 7"), "7");
    assert_ne!(a.one("SELECT pg_backend_pid()"), pid);
}

#[test]
fn an_idle_pooled_connection_the_server_closed_is_not_handed_out() {
    let pg = Postgres::start();
    let hr = start(&pg, "pool_size = 1");
    let mut a = PgClient::app(hr.addr);
    let pid = a.one("SELECT pg_backend_pid()");
    pg.psql_super(&format!("SELECT pg_terminate_backend({pid})"));
    // The pool checks connections idle over a second before handing them out.
    let gone = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}");
    wait_until(|| pg.psql_super(&gone) == "0");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(a.one("SELECT 5"), "5");
}

#[test]
fn cancel_requests_reach_the_query_they_name() {
    let pg = Postgres::start();
    let hr = start(&pg, "");
    let mut a = PgClient::app(hr.addr);
    let pid = a.one("SELECT pg_backend_pid()");
    a.send(&msg(b'Q', b"SELECT pg_sleep(60)\0"));
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND query LIKE 'SELECT pg_sleep%'"
    );
    wait_until(|| pg.psql_super(&sql) == "1");
    // A wrong secret cancels nothing; the right one cancels.
    cancel(hr.addr, a.pid, a.secret ^ 1);
    cancel(hr.addr, a.pid, a.secret);
    let msgs = a.until_ready().unwrap();
    let (_, body) = msgs.iter().find(|(t, _)| *t == b'E').expect("an error");
    assert_eq!(error_code(body), "57014", "{}", error_message(body));
    assert_eq!(a.one("SELECT 1"), "1");
}

fn cancel(addr: std::net::SocketAddr, pid: u32, secret: u32) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut b = 16u32.to_be_bytes().to_vec();
    b.extend_from_slice(&80_877_102u32.to_be_bytes());
    b.extend_from_slice(&pid.to_be_bytes());
    b.extend_from_slice(&secret.to_be_bytes());
    s.write_all(&b).unwrap();
    // headroom closes it once the cancel went out.
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut sink);
}

#[test]
fn pipelined_queries_and_the_extended_protocol_are_all_answered() {
    let pg = Postgres::start();
    let hr = start(&pg, "pool_size = 1");
    let mut a = PgClient::app(hr.addr);
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.extend(msg(b'Q', format!("SELECT {i}\0").as_bytes()));
    }
    a.send(&batch);
    for i in 0..200 {
        let rows = rows_of(&a.until_ready().unwrap()).unwrap();
        assert_eq!(rows[0][0].as_deref(), Some(i.to_string().as_str()));
    }
    // Parse/Bind/Execute/Sync with the unnamed statement, twice in one write.
    let mut ext = Vec::new();
    for v in ["11", "12"] {
        ext.extend(msg(b'P', b"\0SELECT $1::int + 1\0\0\0"));
        let mut bind = b"\0\0\0\0\0\x01".to_vec();
        bind.extend_from_slice(&(v.len() as u32).to_be_bytes());
        bind.extend_from_slice(v.as_bytes());
        bind.extend_from_slice(b"\0\0");
        ext.extend(msg(b'B', &bind));
        ext.extend(msg(b'E', b"\0\0\0\0\0"));
        ext.extend(msg(b'S', b""));
    }
    a.send(&ext);
    for want in ["12", "13"] {
        let rows = rows_of(&a.until_ready().unwrap()).unwrap();
        assert_eq!(rows[0][0].as_deref(), Some(want));
    }
}

#[test]
fn copy_works_in_both_directions() {
    let pg = Postgres::start();
    let hr = start(&pg, "");
    let mut a = PgClient::app(hr.addr);
    a.query("CREATE TABLE c (x int, y text)").unwrap();
    a.send(&msg(b'Q', b"COPY c FROM STDIN\0"));
    assert_eq!(a.read().unwrap().0, b'G');
    let mut data = Vec::new();
    for i in 0..1000 {
        data.extend(msg(b'd', format!("{i}\trow {i}\n").as_bytes()));
    }
    data.extend(msg(b'c', b""));
    a.send(&data);
    let msgs = a.until_ready().unwrap();
    assert!(msgs
        .iter()
        .any(|(t, b)| *t == b'C' && b.starts_with(b"COPY 1000")));
    a.send(&msg(b'Q', b"COPY (SELECT * FROM c ORDER BY x) TO STDOUT\0"));
    let msgs = a.until_ready().unwrap();
    let rows: Vec<&Vec<u8>> = msgs
        .iter()
        .filter(|(t, _)| *t == b'd')
        .map(|(_, b)| b)
        .collect();
    assert_eq!(rows.len(), 1000);
    assert_eq!(rows[999], b"999\trow 999\n");
}

#[test]
fn session_mode_keeps_state_for_the_session_and_resets_it_after() {
    let pg = Postgres::start();
    let hr = start(&pg, "pool_mode = \"session\"\npool_size = 1");
    let mut a = PgClient::app(hr.addr);
    a.query("CREATE TEMP TABLE mine (x int); SET statement_timeout = '123s'")
        .unwrap();
    let pid = a.one("SELECT pg_backend_pid()");
    assert_eq!(a.one("SHOW statement_timeout"), "123s");
    assert_eq!(a.one("SELECT count(*) FROM mine"), "0");
    drop(a);
    let mut b = PgClient::app(hr.addr);
    assert_eq!(
        b.one("SELECT pg_backend_pid()"),
        pid,
        "the same connection, reset (DISCARD ALL)"
    );
    assert_eq!(b.one("SHOW statement_timeout"), "0");
    assert!(b.query("SELECT * FROM mine").is_err());
}

#[test]
fn hostile_input_is_refused_without_harm() {
    let pg = Postgres::start();
    let hr = start(&pg, "max_message = \"64KiB\"");
    // A startup packet that claims to be huge, and one of a protocol we do not speak.
    for pkt in [
        &[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0][..],
        &[0, 0, 0, 8, 0, 2, 0, 0][..],
    ] {
        let mut s = std::net::TcpStream::connect(hr.addr).unwrap();
        s.write_all(pkt).unwrap();
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut sink);
    }
    // After login: a message over max_message, and one whose length is impossible.
    for bad in [msg(b'Q', &vec![b'x'; 70_000]), vec![b'Q', 0, 0, 0, 2]] {
        let mut a = PgClient::app(hr.addr);
        a.send(&bad);
        let (tag, body) = a.read().unwrap();
        assert_eq!((tag, error_code(&body).as_str()), (b'E', "08P01"));
        assert!(a.read().is_err(), "closed after a protocol violation");
    }
    // SSL is declined ('N'), and the client may go on in the clear.
    let mut s = std::net::TcpStream::connect(hr.addr).unwrap();
    s.write_all(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]).unwrap();
    let mut one = [0u8; 1];
    std::io::Read::read_exact(&mut s, &mut one).unwrap();
    assert_eq!(&one, b"N");
    assert_eq!(
        PgClient::app(hr.addr).one("SELECT 'still fine'"),
        "still fine"
    );
}

#[test]
fn clients_over_max_client_conn_are_refused_with_a_reason() {
    let pg = Postgres::start();
    let hr = start(&pg, "max_client_conn = 2");
    let _a = PgClient::app(hr.addr);
    let _b = PgClient::app(hr.addr);
    let e = PgClient::connect(hr.addr, "app", "app", "app")
        .err()
        .unwrap();
    assert!(e.contains("too many clients"), "{e}");
    drop(_a);
    // The slot frees when a client leaves (headroom sees the close asynchronously).
    wait_until(|| PgClient::connect(hr.addr, "app", "app", "app").is_ok());
}

#[test]
fn pgbench_runs_through_headroom_in_simple_and_extended_protocols() {
    let pg = Postgres::start();
    let hr = start(&pg, "pool_size = 4");
    let port = hr.addr.port().to_string();
    let bench = |args: &[&str]| {
        let out = Command::new("pgbench")
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "app"])
            .args(args)
            .arg("app")
            .env("PGPASSWORD", "app")
            .output()
            .expect("run pgbench");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "pgbench {args:?}:\n{text}");
        text
    };
    bench(&["-i", "-s", "1", "-q"]);
    for mode in ["simple", "extended"] {
        let text = bench(&["-n", "-c", "10", "-j", "2", "-t", "50", "-M", mode]);
        assert!(
            text.contains("number of transactions actually processed: 500/500"),
            "{mode}:\n{text}"
        );
        assert!(
            text.contains("number of failed transactions: 0"),
            "{mode}:\n{text}"
        );
    }
    // Every transaction's writes landed: 500 per run in pgbench_history.
    assert_eq!(
        pg.psql_as("app", "app", "SELECT count(*) FROM pgbench_history"),
        "1000"
    );
}

/// Parse of a named statement, its Bind with one text parameter, Execute, Sync.
fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = format!("{name}\0{sql}\0").into_bytes();
    b.extend_from_slice(&[0, 0]);
    msg(b'P', &b)
}

fn bind_execute_sync(name: &str, param: &str) -> Vec<u8> {
    let mut b = format!("\0{name}\0").into_bytes();
    b.extend_from_slice(&[0, 0, 0, 1]);
    b.extend_from_slice(&(param.len() as u32).to_be_bytes());
    b.extend_from_slice(param.as_bytes());
    b.extend_from_slice(&[0, 0]);
    let mut out = msg(b'B', &b);
    out.extend(msg(b'E', b"\0\0\0\0\0"));
    out.extend(msg(b'S', b""));
    out
}

#[test]
fn prepared_statements_follow_their_client_across_server_connections() {
    let pg = Postgres::start();
    let hr = start(&pg, "pool_size = 2");
    let mut a = PgClient::app(hr.addr);
    let mut b = PgClient::app(hr.addr);
    let mut p = parse("s1", "SELECT $1::int * 2, pg_backend_pid()");
    p.extend(msg(b'S', b""));
    a.send(&p);
    let tags: Vec<u8> = a.until_ready().unwrap().iter().map(|m| m.0).collect();
    assert_eq!(tags, b"1Z");
    let first_pid = a.one("SELECT pg_backend_pid()");
    // b holds that connection in a transaction: a's next statement runs on the other one.
    b.query("BEGIN").unwrap();
    assert_eq!(b.one("SELECT pg_backend_pid()"), first_pid);
    a.send(&bind_execute_sync("s1", "21"));
    let msgs = a.until_ready().unwrap();
    let tags: Vec<u8> = msgs.iter().map(|m| m.0).collect();
    assert_eq!(
        tags, b"2DCZ",
        "the slipped-in Parse's ParseComplete is not seen"
    );
    let row = &rows_of(&msgs).unwrap()[0];
    assert_eq!(row[0].as_deref(), Some("42"));
    assert_ne!(
        row[1].as_deref(),
        Some(first_pid.as_str()),
        "ran on the second connection"
    );
    // The same name in another client is its own statement.
    b.query("COMMIT").unwrap();
    let mut p = parse("s1", "SELECT $1::text || '!'");
    p.extend(bind_execute_sync("s1", "hi"));
    b.send(&p);
    let rows = rows_of(&b.until_ready().unwrap()).unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("hi!"));
    a.send(&bind_execute_sync("s1", "5"));
    assert_eq!(
        rows_of(&a.until_ready().unwrap()).unwrap()[0][0].as_deref(),
        Some("10")
    );
    // Close forgets it (answered by headroom); a Bind after that gets the server's error.
    let mut close = msg(b'C', b"Ss1\0");
    close.extend(msg(b'S', b""));
    a.send(&close);
    let tags: Vec<u8> = a.until_ready().unwrap().iter().map(|m| m.0).collect();
    assert_eq!(tags, b"3Z");
    a.send(&bind_execute_sync("s1", "5"));
    let e = rows_of(&a.until_ready().unwrap()).err().unwrap();
    assert!(e.contains("does not exist"), "{e}");
    assert_eq!(a.one("SELECT 'after'"), "after");
}

#[test]
fn pgbench_prepared_mode_works_in_transaction_mode() {
    let pg = Postgres::start();
    let hr = start(&pg, "pool_size = 3");
    let port = hr.addr.port().to_string();
    let run = |args: &[&str]| {
        let out = Command::new("pgbench")
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "app"])
            .args(args)
            .arg("app")
            .env("PGPASSWORD", "app")
            .output()
            .expect("run pgbench");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "pgbench {args:?}:\n{text}");
        text
    };
    run(&["-i", "-s", "1", "-q"]);
    // Single statements with more clients than connections; then TPC-B transactions with a
    // thread per client (pgbench prepares with a blocking PQprepare: a thread driving several
    // clients would wait on its own clients' transactions for a connection, with any pooler).
    for script in [
        &["-S", "-c", "12", "-j", "2"][..],
        &["-c", "6", "-j", "6", "-t", "40"][..],
    ] {
        let mut args = vec!["-n", "-M", "prepared"];
        if script[0] == "-S" {
            args.extend_from_slice(&["-t", "40"]);
        }
        args.extend_from_slice(script);
        let text = run(&args);
        let want = if script[0] == "-S" {
            "processed: 480/480"
        } else {
            "processed: 240/240"
        };
        assert!(text.contains(want), "{script:?}:\n{text}");
        assert!(
            text.contains("number of failed transactions: 0"),
            "{script:?}:\n{text}"
        );
    }
    assert_eq!(
        pg.psql_as("app", "app", "SELECT count(*) FROM pgbench_history"),
        "240"
    );
}

/// Polls `cond` (a server-side state with no signal to wait on) for up to 20 s.
fn wait_until(cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not reached in 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
