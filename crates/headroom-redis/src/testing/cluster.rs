//! [`RedisCluster`]: six `redis-server --cluster-enabled yes` nodes on loopback, joined by
//! `redis-cli --cluster create` into three masters with one replica each.

use super::{connect, RedisServer};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

/// Node timeout: how long a master may be silent before the others call it failed. 1 s keeps a
/// failover to 1–2 s; the default (15 s) would make a failover test crawl.
const NODE_TIMEOUT_MS: &str = "1000";
/// How long the cluster gets to form, and a failover to complete.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);
/// Redis Cluster's bus listens on port + 10000.
const BUS_OFFSET: u16 = 10000;

/// A six-node Redis Cluster (3 masters, 3 replicas) on loopback; every node is killed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster, and waits until every node says
    /// `cluster_state:ok` and every replica's link to its master is up (so that a killed
    /// master has a replica ready to take over). Panics with redis-cli's output if it fails.
    pub fn start() -> Self {
        let ports = cluster_ports(6);
        let nodes: Vec<RedisServer> = ports
            .iter()
            .map(|&port| {
                RedisServer::start_on(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        NODE_TIMEOUT_MS,
                        // A replica takes over however long ago it last heard from its master.
                        "--cluster-replica-validity-factor",
                        "0",
                        // A replica's first sync starts at once, not after the default 5 s
                        // wait for more replicas to share a diskless transfer.
                        "--repl-diskless-sync-delay",
                        "0",
                    ],
                )
            })
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output();
        let out = match out {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("redis-cli not found: install redis-tools (scripts/test.sh does)")
            }
            Err(e) => panic!("cannot run redis-cli: {e}"),
        };
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until("the cluster forms", FORM_TIMEOUT, |c| {
            c.nodes.iter().all(|n| {
                cluster_ok(n.port)
                    && match info(n.port, "replication") {
                        Some(i) => !i.contains("role:slave") || i.contains("master_link_status:up"),
                        None => false,
                    }
            })
        });
        cluster
    }

    /// The urls of every node started (killed ones included: a client must cope with a dead
    /// seed).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Kills the master serving `key`'s slot, then waits until a replica has taken the slot
    /// over and the cluster says `cluster_state:ok` again, as seen from a surviving node.
    /// Returns the killed node's port.
    pub fn kill_master_of(&mut self, key: &[u8]) -> u16 {
        let witness = self.live_port();
        let mut con = connect(witness).expect("connect to a live node");
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut con)
            .expect("CLUSTER KEYSLOT");
        let master = owner_of(witness, slot).expect("the slot has a live master");
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == master)
            .expect("the master is one of ours");
        node.kill();
        let witness = self.live_port();
        self.wait_until("a replica takes the slot over", FAILOVER_TIMEOUT, |_| {
            owner_of(witness, slot).is_some_and(|owner| owner != master) && cluster_ok(witness)
        });
        master
    }

    fn live_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.is_running())
            .map(|n| n.port)
            .expect("a live node")
    }

    fn wait_until(&self, what: &str, timeout: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            if Instant::now() > deadline {
                let live = self.live_port();
                panic!(
                    "redis cluster: waited {timeout:?} for {what}; CLUSTER NODES from {live}:\n{}",
                    cluster_nodes(live).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn cluster_ok(port: u16) -> bool {
    let info: Option<String> = connect(port)
        .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query(&mut c))
        .ok();
    info.is_some_and(|i| i.contains("cluster_state:ok"))
}

fn info(port: u16, section: &str) -> Option<String> {
    connect(port)
        .and_then(|mut c| redis::cmd("INFO").arg(section).query(&mut c))
        .ok()
}

fn cluster_nodes(port: u16) -> Option<String> {
    connect(port)
        .and_then(|mut c| redis::cmd("CLUSTER").arg("NODES").query(&mut c))
        .ok()
}

/// The port of the master that, according to the node on `port`, serves `slot` and is not
/// marked failed. `CLUSTER NODES` lines: `id ip:port@bus flags master ping pong epoch link
/// slot...`, a slot being `n` or `a-b` (or `[...]` while migrating).
fn owner_of(port: u16, slot: u16) -> Option<u16> {
    let nodes = cluster_nodes(port)?;
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (addr, flags) = (fields.get(1)?, fields.get(2)?);
        if !flags.contains("master") || flags.contains("fail") {
            return None;
        }
        let serves = fields.iter().skip(8).any(|range| {
            let mut ends = range.splitn(2, '-').map(|n| n.parse::<u16>());
            match (ends.next(), ends.next()) {
                (Some(Ok(a)), Some(Ok(b))) => (a..=b).contains(&slot),
                (Some(Ok(a)), None) => a == slot,
                _ => false,
            }
        });
        let node_port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
        serves.then_some(node_port)
    })
}

/// `n` distinct free loopback ports below 55535 whose bus port (+10000) is free too.
fn cluster_ports(n: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::with_capacity(n);
    for _ in 0..10_000 {
        if ports.len() == n {
            return ports;
        }
        let port = super::free_port();
        if port >= u16::MAX - BUS_OFFSET {
            continue;
        }
        let bus = port + BUS_OFFSET;
        let clash = ports
            .iter()
            .any(|&p| p == port || p + BUS_OFFSET == port || p == bus || p + BUS_OFFSET == bus);
        if !clash && TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            ports.push(port);
        }
    }
    panic!("could not find {n} free loopback ports with free bus ports (+{BUS_OFFSET})");
}
