//! A Redis Cluster for tests: `masters` masters with `replicas` replicas
//! each, `redis-server --cluster-enabled yes` on free loopback ports (each
//! with its bus port, +10000, free too), joined by `redis-cli --cluster
//! create`; every process killed on drop.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis::{Redis, cli};

/// A port free with its cluster bus port (+10000).
fn free_cluster_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A Redis Cluster, its nodes killed and its directory removed on drop.
pub struct RedisCluster {
    /// Masters first (as `--cluster create` assigns them), then replicas.
    pub nodes: Vec<Redis>,
    /// How many of `nodes` are masters.
    pub masters: usize,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// `masters` masters with `replicas` replicas each, once the cluster
    /// says it is ok.
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let total = masters * (1 + replicas);
        let dir_text = dir.path().to_str().unwrap().to_owned();
        let nodes: Vec<Redis> = (0..total)
            .map(|_| {
                let port = free_cluster_port();
                Redis::start_with(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &format!("nodes-{port}.conf"),
                        "--cluster-node-timeout",
                        "1000",
                        "--dir",
                        &dir_text,
                    ],
                )
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let status = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli (Debian package redis-tools) must be installed");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster {
            nodes,
            masters,
            _dir: dir,
        };
        cluster.wait_until_ok(Duration::from_secs(30));
        cluster
    }

    /// Until every node that runs says `cluster_state:ok` and knows a
    /// master for every slot.
    pub fn wait_until_ok(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let ok = self.nodes.iter().all(|node| {
                let info = cli(node.port, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster is not ok within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The URL duplex takes: the masters, as the nodes to learn it from.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes[..self.masters]
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}/", nodes.join(","))
    }

    /// The port of the master that owns `key`'s slot now, asked of a node
    /// that is up.
    pub fn master_port_of(&self, key: &str, ask: u16) -> u16 {
        let slot: u16 = cli(ask, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap();
        for line in cli(ask, &["CLUSTER", "NODES"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            for range in &fields[8..] {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(from), Ok(to)) = (from.parse::<u16>(), to.parse::<u16>())
                    && (from..=to).contains(&slot)
                {
                    let address = fields[1].split('@').next().unwrap();
                    return address.rsplit_once(':').unwrap().1.parse().unwrap();
                }
            }
        }
        panic!("no master owns slot {slot}");
    }
}
