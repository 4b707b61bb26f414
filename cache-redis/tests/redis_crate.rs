//! The `redis` crate as a transport (feature `redis-crate`): an `AsyncRedisEngine` over the
//! crate's `ConnectionManager` and `MultiplexedConnection` passes the whole conformance kit
//! against a real `redis-server`, and over the crate's cluster connection against a real Redis
//! Cluster (a co-located namespace) and over the crate's sentinel client; the kit's fault
//! checks are run on it, with what each shows stated here.

#![cfg(feature = "redis-crate")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::time::Duration;

use cache_core::{AsyncCacheEngine, CacheError, Ttl};
use cache_redis::{AsyncRedisEngine, RedisEngine};
use cache_tests::TestContext;
use cache_tests::asynchronous::{BlockingFace, runtime};
use cache_tests::servers::{ServerKind, TestServer};
use cache_tests::topologies::{RedisCluster, RedisSentinels, redis_cli_at};

fn server() -> Option<Arc<TestServer>> {
    TestServer::shared(ServerKind::Redis)
}

/// A `ConnectionManager` to `address`, made on the kit's runtime (where its tasks run).
fn manager(address: &str) -> redis::aio::ConnectionManager {
    let client = redis::Client::open(format!("redis://{address}")).unwrap();
    runtime()
        .block_on(redis::aio::ConnectionManager::new(client))
        .unwrap()
}

fn over_manager(ctx: &TestContext) -> AsyncRedisEngine {
    let server = server().expect("checked by `require`");
    RedisEngine::async_builder()
        .redis_connection(manager(&server.address()))
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .max_value_size(1 << 20)
        .build()
        .expect("valid settings")
}

cache_tests::async_conformance_suite!(
    connection_manager_kit,
    over_manager,
    require = server().is_some()
);

fn over_multiplexed(ctx: &TestContext) -> AsyncRedisEngine {
    let server = server().expect("checked by `require`");
    let client = redis::Client::open(server.url()).unwrap();
    let connection = runtime()
        .block_on(client.get_multiplexed_async_connection())
        .unwrap();
    RedisEngine::async_builder()
        .redis_connection(connection)
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .max_value_size(1 << 20)
        .build()
        .expect("valid settings")
}

cache_tests::async_conformance_suite!(
    multiplexed_connection_kit,
    over_multiplexed,
    require = server().is_some()
);

/// The crate's cluster client for the harness's cluster, as a user would build it.
fn cluster_client(cluster: &RedisCluster) -> redis::cluster::ClusterClientBuilder {
    redis::cluster::ClusterClientBuilder::new(
        cluster
            .addresses()
            .iter()
            .map(|address| format!("redis://{address}"))
            .collect::<Vec<_>>(),
    )
}

fn over_cluster(ctx: &TestContext) -> AsyncRedisEngine {
    let cluster = RedisCluster::shared().expect("checked by `require`");
    RedisEngine::async_builder()
        .redis_cluster(cluster_client(&cluster))
        .namespace(ctx.namespace())
        .colocate_namespace(true)
        .default_ttl(ctx.default_ttl())
        .max_value_size(1 << 20)
        .build()
        .expect("valid settings")
}

cache_tests::async_conformance_suite!(
    cluster_connection_kit,
    over_cluster,
    require = RedisCluster::shared().is_some()
);

/// Through the crate's cluster connection, a co-located namespace's keys all live on one
/// master, and its clear removes them there and nothing of another namespace.
#[test]
fn the_cluster_transport_keeps_its_namespace_on_one_master() {
    let Some(cluster) = RedisCluster::shared() else {
        return;
    };
    let namespace = format!("crate-together-{}", std::process::id());
    let engine = BlockingFace(
        RedisEngine::async_builder()
            .redis_cluster(cluster_client(&cluster))
            .namespace(&namespace)
            .colocate_namespace(true)
            .build()
            .unwrap(),
    );
    let other = RedisEngine::builder()
        .url(cluster.url())
        .namespace(format!("crate-other-{}", std::process::id()))
        .build()
        .unwrap();
    use cache_core::CacheEngine;
    for i in 0..100 {
        let key = format!("k{i}");
        engine
            .set(&key, key.clone().into_bytes().into(), Ttl::Default)
            .unwrap();
        other
            .set(&key, key.clone().into_bytes().into(), Ttl::Default)
            .unwrap();
    }
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let found = engine.get_many(&refs).unwrap();
    assert_eq!(found.len(), 100, "get_many reads every key back");
    let per_master = |pattern: &str| -> Vec<usize> {
        let mut counts: Vec<usize> = cluster
            .masters()
            .iter()
            .map(|(address, _)| {
                redis_cli_at(address, &["--scan", "--pattern", pattern])
                    .unwrap()
                    .lines()
                    .count()
            })
            .collect();
        counts.sort_unstable();
        counts
    };
    let pattern = format!("{{{namespace}}}:*");
    assert_eq!(per_master(&pattern), vec![0, 0, 100]);
    engine.clear().unwrap();
    assert_eq!(per_master(&pattern), vec![0, 0, 0]);
    assert_eq!(engine.get("k1").unwrap(), None);
    assert!(
        other.get("k1").unwrap().is_some(),
        "another namespace is untouched"
    );
    other.clear().unwrap();
}

/// The namespace's slot is migrated by hand to another master while the engine runs on the
/// crate's cluster connection (retries off): during the migration the old master answers `ASK`
/// for the keys already moved, after it `MOVED`; the engine follows both and reads every key
/// back, and a clear made before the crate has heard of the move (its `SCAN` has no key to be
/// redirected by) still finds every key on the new master.
#[test]
fn the_cluster_transport_follows_a_migrating_slot() {
    let Some(cluster) = RedisCluster::shared() else {
        return;
    };
    use cache_core::CacheEngine;
    let namespace = format!("crate-moving-{}", std::process::id());
    let engine = BlockingFace(
        RedisEngine::async_builder()
            .redis_cluster(cluster_client(&cluster))
            .namespace(&namespace)
            .colocate_namespace(true)
            .build()
            .unwrap(),
    );
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    for key in &keys {
        engine
            .set(key, key.clone().into_bytes().into(), Ttl::Default)
            .unwrap();
    }
    let stored = |key: &str| format!("{{{namespace}}}:{key}");
    let cli = |address: &str, args: &[&str]| redis_cli_at(address, args).unwrap();
    let masters = cluster.masters();
    let slot = cli(&masters[0].0, &["CLUSTER", "KEYSLOT", &stored("k0")]);
    let slot = slot.trim();
    let owner = masters
        .iter()
        .find(|(address, _)| cli(address, &["CLUSTER", "COUNTKEYSINSLOT", slot]).trim() != "0")
        .cloned()
        .unwrap();
    let target = masters.iter().find(|m| **m != owner).cloned().unwrap();
    let (target_host, target_port) = target.0.rsplit_once(':').unwrap();
    cli(
        &target.0,
        &["CLUSTER", "SETSLOT", slot, "IMPORTING", &owner.1],
    );
    cli(
        &owner.0,
        &["CLUSTER", "SETSLOT", slot, "MIGRATING", &target.1],
    );
    let migrate = |some: &[String]| {
        let names: Vec<String> = some.iter().map(|k| stored(k)).collect();
        let mut args = vec!["MIGRATE", target_host, target_port, "", "0", "5000", "KEYS"];
        args.extend(names.iter().map(String::as_str));
        cli(&owner.0, &args)
    };
    migrate(&keys[..20]);
    // Half moved: reads of moved keys are answered ASK by the old master.
    for key in &keys {
        assert_eq!(
            engine.get(key).unwrap().as_deref(),
            Some(key.as_bytes()),
            "{key} mid-migration"
        );
    }
    assert_eq!(engine.increment("counter", 1).unwrap(), 1);
    migrate(&keys[20..]);
    migrate(&["counter".to_string()]);
    for (address, _) in &masters {
        cli(address, &["CLUSTER", "SETSLOT", slot, "NODE", &target.1]);
    }
    // Moved, and the crate's slot map still names the old master: first a clear, whose SCAN
    // alone the old master would answer with nothing, then reads, answered MOVED.
    engine.clear().unwrap();
    assert_eq!(
        cli(&target.0, &["CLUSTER", "COUNTKEYSINSLOT", slot]).trim(),
        "0",
        "the clear found every key on the new master"
    );
    for key in &keys {
        assert_eq!(engine.get(key).unwrap(), None, "{key} after the clear");
    }
    engine.set("after", "v".into(), Ttl::Default).unwrap();
    assert_eq!(
        cli(&target.0, &["CLUSTER", "COUNTKEYSINSLOT", slot]).trim(),
        "1",
        "a write after the migration lands on the new master"
    );
    assert_eq!(
        engine.increment("counter", 1).unwrap(),
        1,
        "cleared with the rest"
    );
}

/// The master of the namespace's slot is killed (SIGKILL) on a cluster of the test's own: the
/// crate's cluster connection, retries off, fails operations with transient errors (never a
/// wrong value), and within 20 s of the replica's promotion the engine serves again on it.
#[test]
fn the_cluster_transport_survives_a_killed_master() {
    use cache_core::CacheEngine;
    use cache_tests::servers::OrSkip;
    let Some(cluster) = RedisCluster::start(3, 1).or_skip() else {
        return;
    };
    let engine = BlockingFace(
        RedisEngine::async_builder()
            .redis_cluster(cluster_client(&cluster))
            .namespace("crate-killed")
            .colocate_namespace(true)
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap(),
    );
    for i in 0..20 {
        let key = format!("k{i}");
        engine
            .set(&key, key.clone().into_bytes().into(), Ttl::Never)
            .unwrap();
    }
    let masters = cluster.masters();
    let slot = redis_cli_at(&masters[0].0, &["CLUSTER", "KEYSLOT", "{crate-killed}:k0"]).unwrap();
    let victim = masters
        .iter()
        .find(|(address, _)| {
            redis_cli_at(address, &["CLUSTER", "COUNTKEYSINSLOT", slot.trim()])
                .unwrap()
                .trim()
                != "0"
        })
        .map(|(address, _)| address.clone())
        .unwrap();
    // Replicated before the kill (replication is asynchronous).
    std::thread::sleep(Duration::from_millis(500));
    cluster.node(&victim).unwrap().stop();
    assert!(
        cluster.wait_for_failover(&victim, Duration::from_secs(20)),
        "no failover within 20 s"
    );
    let failed_over = std::time::Instant::now();
    let mut errors = 0;
    loop {
        match engine.get("k1") {
            Ok(Some(value)) => {
                assert_eq!(&value[..], b"k1", "never another key's value");
                break;
            }
            Ok(None) => panic!("a key written before the kill is gone"),
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                errors += 1;
                assert!(
                    failed_over.elapsed() < Duration::from_secs(20),
                    "not served 20 s after the failover ({errors} errors, last: {e})"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    for i in 0..20 {
        let key = format!("k{i}");
        assert_eq!(
            engine.get(&key).unwrap().as_deref(),
            Some(key.as_bytes()),
            "{key} after the failover"
        );
    }
    engine.set("after", "v".into(), Ttl::Never).unwrap();
    assert_eq!(engine.increment("n", 1).unwrap(), 1);
}

/// The crate's sentinel client for `sentinels`, as a user would build it.
fn sentinel_client(sentinels: &RedisSentinels) -> redis::sentinel::SentinelClient {
    redis::sentinel::SentinelClient::build(
        sentinels
            .sentinel_addresses()
            .iter()
            .map(|address| format!("redis://{address}"))
            .collect::<Vec<_>>(),
        sentinels.name().to_string(),
        None,
        redis::sentinel::SentinelServerType::Master,
    )
    .unwrap()
}

fn over_sentinels(ctx: &TestContext) -> AsyncRedisEngine {
    let sentinels = RedisSentinels::shared().expect("checked by `require`");
    RedisEngine::async_builder()
        .redis_sentinel(sentinel_client(&sentinels))
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .max_value_size(1 << 20)
        .build()
        .expect("valid settings")
}

cache_tests::async_conformance_suite!(
    sentinel_client_kit,
    over_sentinels,
    require = RedisSentinels::shared().is_some()
);

/// Through the crate's sentinel client, a failover (`SENTINEL FAILOVER`, the old master kept
/// running as a replica) is followed: operations may fail for a while (`READONLY` from the
/// demoted master, a dropped connection), nothing is resent, and within 20 s every write lands
/// on the master the sentinels name.
#[test]
fn the_sentinel_transport_follows_a_failover() {
    use cache_core::CacheEngine;
    let Ok(sentinels) = RedisSentinels::start("crate-failover") else {
        return;
    };
    let engine = BlockingFace(
        RedisEngine::async_builder()
            .redis_sentinel(sentinel_client(&sentinels))
            .namespace("crate-failover")
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap(),
    );
    engine.set("before", "v1".into(), Ttl::Never).unwrap();
    let old = sentinels.master().unwrap();
    // Replicated before the failover (replication is asynchronous).
    let replica = sentinels
        .servers()
        .iter()
        .map(TestServer::address)
        .find(|address| *address != old)
        .unwrap();
    let replicated = std::time::Instant::now();
    while redis_cli_at(&replica, &["GET", "crate-failover:before"])
        .unwrap()
        .trim()
        != "v1"
    {
        assert!(
            replicated.elapsed() < Duration::from_secs(10),
            "not replicated"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sentinels.failover().unwrap();
    let start = std::time::Instant::now();
    // Until the switch, writes may still reach the old master (it is demoted after its
    // replica is promoted, and what it took meanwhile is lost: Redis's own window). Once the
    // sentinels name the new master, within about a second the engine writes there.
    let mut round = 0;
    let new = loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not writing to the new master 20 s after the failover"
        );
        round += 1;
        let value = format!("v{round}");
        let written = engine
            .set("after", value.clone().into(), Ttl::Never)
            .is_ok();
        if let Some(master) = sentinels.master().filter(|m| *m != old) {
            let stored = redis_cli_at(&master, &["GET", "crate-failover:after"]).unwrap();
            if written && stored.trim() == value {
                break master;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for i in 0..20 {
        let value = format!("last{i}");
        engine
            .set("last", value.clone().into(), Ttl::Never)
            .unwrap();
        let stored = redis_cli_at(&new, &["GET", "crate-failover:last"]).unwrap();
        assert_eq!(
            stored.trim(),
            value,
            "write {i} went to the new master {new}"
        );
    }
    assert_eq!(
        engine.get("before").unwrap().as_deref(),
        Some(&b"v1"[..]),
        "replicated before the failover"
    );
}

/// The crate's cluster connection is refused where it cannot keep the engine's promises: built
/// by the user (its retries cannot be turned off), without a co-located namespace, or from a
/// client that cannot be built.
#[test]
fn the_cluster_transport_is_refused_where_it_cannot_keep_the_promises() {
    let Some(cluster) = RedisCluster::shared() else {
        return;
    };
    let spread = RedisEngine::async_builder()
        .redis_cluster(cluster_client(&cluster))
        .namespace("spread")
        .build()
        .unwrap_err();
    assert!(
        matches!(spread, CacheError::InvalidConfig { .. }),
        "{spread}"
    );
    assert!(
        spread.to_string().contains("colocate_namespace"),
        "{spread}"
    );
    let unnamed = RedisEngine::async_builder()
        .redis_cluster(cluster_client(&cluster))
        .colocate_namespace(true)
        .build()
        .unwrap_err();
    assert!(
        matches!(unnamed, CacheError::InvalidConfig { .. }),
        "{unnamed}"
    );
    let broken = RedisEngine::async_builder()
        .redis_cluster(redis::cluster::ClusterClientBuilder::new(vec!["not a url"]))
        .namespace("n")
        .colocate_namespace(true)
        .build()
        .unwrap_err();
    assert!(
        matches!(broken, CacheError::InvalidConfig { .. }),
        "{broken}"
    );
    let connection = runtime()
        .block_on(
            cluster_client(&cluster)
                .build()
                .unwrap()
                .get_async_connection(),
        )
        .unwrap();
    let theirs = RedisEngine::async_builder()
        .redis_connection(connection)
        .namespace("n")
        .build()
        .unwrap_err();
    assert!(
        matches!(theirs, CacheError::InvalidConfig { .. }),
        "{theirs}"
    );
    assert!(theirs.to_string().contains("redis_cluster"), "{theirs}");
}

/// A reply over the engine's reply bound (the value limit, and at least 64 KiB, which keys
/// may need) is refused, though the crate has read it whole (the bound on memory is the
/// crate's, as the docs say).
#[test]
fn a_reply_over_the_value_limit_is_refused() {
    let Some(server) = server() else { return };
    let plain = RedisEngine::async_builder()
        .url(server.url())
        .namespace("crate-limit")
        .build()
        .unwrap();
    let small = RedisEngine::async_builder()
        .redis_connection(manager(&server.address()))
        .namespace("crate-limit")
        .max_value_size(1024)
        .build()
        .unwrap();
    runtime().block_on(async {
        plain
            .set("big", vec![7u8; 128 * 1024].into(), Ttl::Default)
            .await
            .unwrap();
        let err = small
            .get("big")
            .await
            .map(|v| v.map(|v| v.len()))
            .unwrap_err();
        assert!(matches!(err, CacheError::Backend { .. }), "{err}");
        // The connection goes on.
        small.set("ok", "fine".into(), Ttl::Default).await.unwrap();
        assert_eq!(
            small.get("ok").await.unwrap().as_deref(),
            Some(&b"fine"[..])
        );
    });
}

/// The server's error replies keep their meaning: a command refused by an ACL is
/// `PermissionDenied`, as on the engine's own connections, whether the crate hands it over as
/// a reply or as an error.
#[test]
fn server_errors_keep_their_types() {
    let Some(server) = server() else { return };
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "crate-tenant",
                "on",
                ">pw",
                "~crate-tenant:*",
                "+@all",
            ][..],
        )
        .exec(&mut admin)
        .unwrap();
    let client =
        redis::Client::open(format!("redis://crate-tenant:pw@{}", server.address())).unwrap();
    let manager = runtime()
        .block_on(redis::aio::ConnectionManager::new(client))
        .unwrap();
    let outside = RedisEngine::async_builder()
        .redis_connection(manager)
        .namespace("elsewhere")
        .build()
        .unwrap();
    runtime().block_on(async {
        for err in [
            outside.get("k").await.map(drop).unwrap_err(),
            outside
                .set("k", "v".into(), Ttl::Default)
                .await
                .unwrap_err(),
            outside.get_many(&["a", "b"]).await.map(drop).unwrap_err(),
        ] {
            assert!(
                matches!(err, CacheError::PermissionDenied { .. }),
                "{err:?}"
            );
        }
    });
}

/// What the engine's own connections offer and this transport cannot is refused at build.
#[test]
fn feeds_and_replica_reads_need_the_engines_own_connections() {
    let Some(server) = server() else { return };
    let engine = RedisEngine::async_builder()
        .redis_connection(manager(&server.address()))
        .build()
        .unwrap();
    let feed = engine.invalidations();
    let Err(err) = cache_core::invalidation::InvalidationSource::subscribe(&feed, Arc::new(|_| {}))
    else {
        panic!("a feed over a redis crate connection")
    };
    assert!(matches!(err, CacheError::InvalidConfig { .. }), "{err}");
    let err = RedisEngine::async_builder()
        .redis_connection(manager(&server.address()))
        .cluster(["127.0.0.1:1"])
        .read_from(cache_redis::ReadFrom::ReplicaPreferred)
        .build()
        .unwrap_err();
    assert!(matches!(err, CacheError::InvalidConfig { .. }), "{err}");
}

// The kit's fault checks, on the ConnectionManager transport.

#[test]
fn faults_between_engine_and_crate_and_server() {
    let Some(server) = server() else { return };
    // Through the fault proxy: drops, resets, stalls and partial writes between the crate's
    // connection and the server. The ConnectionManager reconnects on its own; every operation
    // either succeeds or fails with a transient error within its deadline.
    cache_tests::proxy::survives_faults(&server.address(), |address| {
        Arc::new(BlockingFace(
            RedisEngine::async_builder()
                .redis_connection(manager(address))
                .namespace("crate-proxy")
                .timeout(Duration::from_millis(500))
                .build()
                .unwrap(),
        ))
    });
}

#[test]
fn an_increment_is_never_applied_twice_by_the_crate() {
    let Some(server) = server() else { return };
    let direct = RedisEngine::async_builder()
        .url(server.url())
        .namespace("crate-once")
        .build()
        .unwrap();
    cache_tests::faults::increment_is_never_applied_twice(
        &server.address(),
        b"INCRBY",
        |address| {
            Arc::new(BlockingFace(
                RedisEngine::async_builder()
                    .redis_connection(manager(address))
                    .namespace("crate-once")
                    .timeout(Duration::from_secs(1))
                    .build()
                    .unwrap(),
            ))
        },
        &BlockingFace(direct),
    );
}

#[test]
fn a_frozen_server_times_out_and_the_crate_recovers() {
    let Some(server) = TestServer::start_owned(ServerKind::Redis, &[]).ok() else {
        return;
    };
    let engine = RedisEngine::async_builder()
        .redis_connection(manager(&server.address()))
        .namespace("crate-frozen")
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    cache_tests::faults::survives_freeze(&server, Arc::new(BlockingFace(engine)));
}
