//! Redis setups of several servers for tests: a cluster ([`RedisCluster`]) and a master with a
//! replica watched by sentinels ([`RedisSentinels`]), every process started by the harness on
//! free loopback ports and stopped with it.
//!
//! They use `redis-cli` (installed with `redis-server`) to build the cluster and to look at it.
//! Start-up is kept short: a node timeout of 1 s, so a failover takes a few seconds.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::servers::{EXITED, OrSkip, ServerKind, TestServer, Unavailable, free_port};

/// Runs `redis-cli` with `args` and gives its output.
///
/// # Errors
///
/// [`Unavailable`] when `redis-cli` is missing or fails.
pub fn redis_cli(args: &[&str]) -> Result<String, Unavailable> {
    let binary = ["/usr/bin/redis-cli", "/usr/local/bin/redis-cli"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("redis-cli"));
    let output = Command::new(&binary).args(args).output().map_err(|e| {
        Unavailable::Missing(format!(
            "`redis-cli` cannot run ({e}): install it with `sudo apt-get install redis-tools`"
        ))
    })?;
    if !output.status.success() {
        return Err(Unavailable::Failed(format!(
            "redis-cli {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `redis-cli -h host -p port args...` against `address`.
///
/// # Errors
///
/// As [`redis_cli`].
pub fn redis_cli_at(address: &str, args: &[&str]) -> Result<String, Unavailable> {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "6379"));
    let mut all = vec!["-h", host, "-p", port];
    all.extend_from_slice(args);
    redis_cli(&all)
}

/// A Redis Cluster of masters with replicas, on loopback.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<TestServer>,
}

impl RedisCluster {
    /// Starts `masters * (1 + replicas)` nodes and joins them into a cluster with
    /// `redis-cli --cluster create`, waiting until every node reports the cluster ok.
    ///
    /// # Errors
    ///
    /// [`Unavailable`] when a binary is missing or the cluster does not form within 20 s.
    pub fn start(masters: usize, replicas: usize) -> Result<Self, Unavailable> {
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            // The bus port is chosen here: when the node exits at once (the port was taken
            // meanwhile), it is chosen again.
            let mut tries = 0;
            let node = loop {
                let bus = free_port()
                    .map_err(|e| Unavailable::Failed(format!("no free port: {e}")))?
                    .to_string();
                match TestServer::start_owned(
                    ServerKind::Redis,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-port",
                        &bus,
                    ],
                ) {
                    Err(Unavailable::Failed(why)) if why.contains(EXITED) && tries < 4 => {
                        tries += 1;
                    }
                    started => break started?,
                }
            };
            nodes.push(node);
        }
        let addresses: Vec<String> = nodes.iter().map(TestServer::address).collect();
        let replicas = replicas.to_string();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        args.extend(["--cluster-replicas", &replicas, "--cluster-yes"]);
        redis_cli(&args)?;
        let cluster = Self { nodes };
        if !cluster.wait_until_ok(Duration::from_secs(20)) {
            return Err(Unavailable::Failed(
                "the test cluster did not become ok within 20 s".into(),
            ));
        }
        // A replica that has not finished its first sync cannot take over: wait for every one.
        let start = Instant::now();
        loop {
            let synced = cluster.nodes.iter().all(|n| {
                redis_cli_at(&n.address(), &["info", "replication"]).is_ok_and(|info| {
                    info.contains("role:master") || info.contains("master_link_status:up")
                })
            });
            if synced {
                return Ok(cluster);
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(Unavailable::Failed(
                    "the test cluster's replicas did not sync within 20 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A cluster of 3 masters with 1 replica each, shared by every test of this process.
    ///
    /// # Panics
    ///
    /// As [`TestServer::shared`].
    pub fn shared() -> Option<Arc<RedisCluster>> {
        static CLUSTER: OnceLock<Option<Arc<RedisCluster>>> = OnceLock::new();
        CLUSTER
            .get_or_init(|| Self::start(3, 1).map(Arc::new).or_skip())
            .clone()
    }

    /// Every node, masters and replicas.
    pub fn nodes(&self) -> &[TestServer] {
        &self.nodes
    }

    /// `host:port` of every node.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(TestServer::address).collect()
    }

    /// `redis-cluster://host:port,host:port,...` naming every node.
    pub fn url(&self) -> String {
        format!("redis-cluster://{}", self.addresses().join(","))
    }

    /// The node at `address`.
    pub fn node(&self, address: &str) -> Option<&TestServer> {
        self.nodes.iter().find(|n| n.address() == address)
    }

    /// The masters serving slots now, as `(address, node id)`, asked of a live node.
    pub fn masters(&self) -> Vec<(String, String)> {
        self.cluster_nodes()
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (id, address, flags) = (fields.first()?, fields.get(1)?, fields.get(2)?);
                let serving = fields.len() > 8;
                (flags.contains("master") && !flags.contains("fail") && serving).then(|| {
                    let address = address.split('@').next().unwrap_or(address);
                    (address.to_string(), id.to_string())
                })
            })
            .collect()
    }

    /// `CLUSTER NODES` as a live node sees it.
    pub fn cluster_nodes(&self) -> String {
        for node in &self.nodes {
            if node.pid().is_none() {
                continue;
            }
            if let Ok(text) = redis_cli_at(&node.address(), &["cluster", "nodes"]) {
                if !text.is_empty() {
                    return text;
                }
            }
        }
        String::new()
    }

    /// Waits until every running node says `cluster_state:ok` and sees every slot served.
    pub fn wait_until_ok(&self, within: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < within {
            let ok = self.nodes.iter().filter(|n| n.pid().is_some()).all(|n| {
                redis_cli_at(&n.address(), &["cluster", "info"]).is_ok_and(|info| {
                    info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
                })
            });
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Waits until the slots of the master at `failed` are served by another node (its replica
    /// was promoted) and every running node says the cluster is ok.
    pub fn wait_for_failover(&self, failed: &str, within: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < within {
            let masters = self.masters();
            let replaced = masters.len() == 3 && masters.iter().all(|(a, _)| a != failed);
            if replaced && self.wait_until_ok(Duration::from_millis(1)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Moves `slots` slots from the master `from` to the master `to` (node ids) with
    /// `redis-cli --cluster reshard`, keys included.
    ///
    /// # Errors
    ///
    /// [`Unavailable`] when `redis-cli` fails.
    pub fn reshard(&self, from: &str, to: &str, slots: usize) -> Result<String, Unavailable> {
        let entry = self
            .masters()
            .first()
            .map(|(a, _)| a.clone())
            .unwrap_or_default();
        let slots = slots.to_string();
        redis_cli(&[
            "--cluster",
            "reshard",
            &entry,
            "--cluster-from",
            from,
            "--cluster-to",
            to,
            "--cluster-slots",
            &slots,
            "--cluster-yes",
            "--cluster-pipeline",
            "100",
        ])
    }
}

/// A master with one replica, watched by three sentinels under one name.
#[derive(Debug)]
pub struct RedisSentinels {
    name: String,
    servers: Vec<TestServer>,
    sentinels: Vec<TestServer>,
}

impl RedisSentinels {
    /// Starts a master, a replica of it and three sentinels monitoring it as `name`, and waits
    /// until every sentinel knows the replica and the other sentinels.
    ///
    /// # Errors
    ///
    /// [`Unavailable`] when `redis-server` is missing or the setup does not settle in 20 s.
    pub fn start(name: &str) -> Result<Self, Unavailable> {
        let master = TestServer::start_owned(ServerKind::Redis, &[])?;
        let replica = TestServer::start_owned(
            ServerKind::Redis,
            &[
                "--replicaof",
                "127.0.0.1",
                master.address().rsplit(':').next().unwrap_or_default(),
            ],
        )?;
        let sentinels = (0..3)
            .map(|_| TestServer::sentinel(&master.address(), name))
            .collect::<Result<Vec<_>, _>>()?;
        let set = Self {
            name: name.to_string(),
            servers: vec![master, replica],
            sentinels,
        };
        let start = Instant::now();
        loop {
            let settled = set.sentinels.iter().all(|s| {
                redis_cli_at(&s.address(), &["sentinel", "master", name]).is_ok_and(|info| {
                    let fields: Vec<&str> = info.lines().collect();
                    let value = |key: &str| {
                        fields
                            .iter()
                            .position(|f| *f == key)
                            .and_then(|i| fields.get(i + 1))
                            .and_then(|v| v.parse::<u32>().ok())
                    };
                    value("num-slaves") == Some(1) && value("num-other-sentinels") == Some(2)
                })
            });
            if settled {
                return Ok(set);
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(Unavailable::Failed(
                    "the sentinels did not discover each other and the replica within 20 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A set named `cache-tests`, shared by every test of this process.
    ///
    /// # Panics
    ///
    /// As [`TestServer::shared`].
    pub fn shared() -> Option<Arc<RedisSentinels>> {
        static SET: OnceLock<Option<Arc<RedisSentinels>>> = OnceLock::new();
        SET.get_or_init(|| Self::start("cache-tests").map(Arc::new).or_skip())
            .clone()
    }

    /// The master's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `host:port` of every sentinel.
    pub fn sentinel_addresses(&self) -> Vec<String> {
        self.sentinels.iter().map(TestServer::address).collect()
    }

    /// `redis-sentinel://s1,s2,s3/name`.
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://{}/{}",
            self.sentinel_addresses().join(","),
            self.name
        )
    }

    /// The Redis servers (the first master and its replica), whatever their roles now.
    pub fn servers(&self) -> &[TestServer] {
        &self.servers
    }

    /// The master's address as the first sentinel that answers says.
    pub fn master(&self) -> Option<String> {
        self.sentinels.iter().find_map(|s| {
            let text = redis_cli_at(
                &s.address(),
                &["sentinel", "get-master-addr-by-name", &self.name],
            )
            .ok()?;
            let mut lines = text.lines();
            Some(format!("{}:{}", lines.next()?, lines.next()?))
        })
    }

    /// Asks a sentinel to fail the master over to the replica (`SENTINEL FAILOVER`).
    ///
    /// # Errors
    ///
    /// [`Unavailable`] when `redis-cli` fails.
    pub fn failover(&self) -> Result<String, Unavailable> {
        let sentinel = self.sentinel_addresses().remove(0);
        redis_cli_at(&sentinel, &["sentinel", "failover", &self.name])
    }
}
